/* SPDX-License-Identifier: MIT */
/* test-kinds-buffer: a caller's buffer is formatted, used, closed (not freed)
 * and attached again with its contents. */
#include <stdlib.h>
#include <string.h>

#include "test.h"

int main(void) {
        size_t size = 512 * 1024;
        void *buf = aligned_alloc(4096, size);
        mseg *s;

        ASSERT_NOT_NULL(buf);
        ASSERT_OK(mseg_buffer_create(&s, buf, size));
        char *p = mseg_alloc(s, 50);
        ASSERT_NOT_NULL(p);
        strcpy(p, "kept across attach");
        mseg_handle h = mseg_handle_of(s, p);
        ASSERT(mseg_close(s) == NULL);
        ((char *) buf)[size - 1] = 1;            /* still the caller's: ASan flags it if close freed it */
        ((char *) buf)[size - 1] = 0;
        ASSERT_OK(mseg_buffer_attach(&s, buf, size));
        ASSERT(strcmp(mseg_ptr(s, h), "kept across attach") == 0);
        ASSERT_OK(mseg_free(s, mseg_ptr(s, h)));
        ASSERT_EQ(mseg_all_memory_deallocated(s), 1);
        ASSERT_OK(mseg_check(s));
        /* attaching a larger buffer than the image is fine; a smaller is not */
        mseg_close(s);
        ASSERT(mseg_buffer_attach(&s, buf, size - 4096) < 0);
        free(buf);
        return 0;
}
