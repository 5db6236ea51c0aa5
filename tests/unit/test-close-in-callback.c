/* SPDX-License-Identifier: MIT */
/* test-close-in-callback: mseg_close() from inside mseg_atomic() or an init
 * callback leaves the handle open (it would otherwise unmap the segment
 * while its lock is held); the segment stays usable and can be closed after. */
#include <stdlib.h>
#include <string.h>

#include "test.h"

static int close_inside(mseg *seg, void *arg) {
        (void) arg;
        ASSERT(mseg_close(seg) == NULL);
        ASSERT(strstr(mseg_last_error(), "handle left open") != NULL);
        return 7;
}

static int init_closes(void *elem, size_t i, void *arg) {
        (void) i;
        mseg_close(arg);
        memset(elem, 0x11, sizeof(int));
        return 0;
}

int main(void) {
        size_t size = 1 << 20;
        void *buf = aligned_alloc(4096, size);
        mseg *seg;

        ASSERT_OK(mseg_buffer_create(&seg, buf, size));
        ASSERT_EQ(mseg_atomic(seg, close_inside, NULL), 7);
        /* still attached and usable: the lock was released normally */
        int *x = mseg_construct(seg, "x", MSEG_TYPE(int), 4, init_closes, seg);
        ASSERT_NOT_NULL(x);
        ASSERT_EQ(x[3], 0x11111111);
        ASSERT(mseg_find(seg, "x", MSEG_TYPE(int), NULL) == x);
        ASSERT_OK(mseg_destroy(seg, "x", MSEG_TYPE(int)));
        ASSERT_OK(mseg_check(seg));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        mseg_close(seg);
        free(buf);
        return 0;
}
