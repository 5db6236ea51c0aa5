/* SPDX-License-Identifier: MIT */
/* test-segment: the header format, handles and the generic accessors. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "test.h"
#include "internal.h"

static void *page_buf(size_t size) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        ASSERT(p != MAP_FAILED);
        return p;
}

static void test_sizes(void) {
        void *buf = page_buf(1 << 20);
        mseg *seg = NULL;

        ASSERT_ERR(mseg_buffer_create(&seg, buf, 0), -EINVAL);
        ASSERT_ERR(mseg_buffer_create(&seg, buf, MSEG_MIN_SIZE - 1), -EINVAL);
        ASSERT_ERR(mseg_buffer_create(&seg, NULL, 1 << 20), -EINVAL);
        ASSERT_ERR(mseg_buffer_create(NULL, buf, 1 << 20), -EINVAL);
        ASSERT_ERR(mseg_buffer_create(&seg, (char *) buf + 1, 1 << 19), -EINVAL);
        ASSERT(seg == NULL);            /* out-param untouched on failure */
        ASSERT_OK(mseg_buffer_create(&seg, buf, MSEG_MIN_SIZE));
        ASSERT_EQ(mseg_size(seg), MSEG_MIN_SIZE);
        ASSERT(mseg_address(seg) == buf);
        ASSERT_OK(mseg_check(seg));
        ASSERT(mseg_close(seg) == NULL);
        ASSERT(mseg_close(NULL) == NULL);
        munmap(buf, 1 << 20);
}

static void test_handles(void) {
        size_t size = 1 << 20;
        void *buf = page_buf(size);
        mseg *seg;
        uint8_t id1[16], id2[16];
        void *p;
        mseg_handle h;

        ASSERT_OK(mseg_buffer_create(&seg, buf, size));
        p = mseg_alloc(seg, 100);
        ASSERT_NOT_NULL(p);
        h = mseg_handle_of(seg, p);
        ASSERT_NE(h, MSEG_HANDLE_NULL);
        ASSERT(mseg_ptr(seg, h) == p);
        ASSERT_EQ(mseg_handle_of(seg, NULL), MSEG_HANDLE_NULL);
        ASSERT_EQ(mseg_handle_of(seg, &h), MSEG_HANDLE_NULL);          /* not in the segment */
        ASSERT_EQ(mseg_handle_of(seg, buf), MSEG_HANDLE_NULL);         /* the header is no object */
        ASSERT(mseg_ptr(seg, MSEG_HANDLE_NULL) == NULL);
        ASSERT(mseg_ptr(seg, size) == NULL);
        ASSERT(mseg_ptr(seg, UINT64_MAX) == NULL);
        ASSERT(mseg_ptr(seg, 8) == NULL);

        /* Position independence: copy the bytes elsewhere, attach, follow the handle. */
        memcpy(p, "position independent", 21);
        mseg_id(seg, id1);
        void *copy = page_buf(size);
        memcpy(copy, buf, size);
        mseg *seg2;
        ASSERT_OK(mseg_buffer_attach(&seg2, copy, size));
        mseg_id(seg2, id2);
        ASSERT(memcmp(id1, id2, 16) == 0);
        ASSERT(strcmp(mseg_ptr(seg2, h), "position independent") == 0);
        ASSERT_OK(mseg_free(seg2, mseg_ptr(seg2, h)));
        ASSERT_OK(mseg_check(seg2));
        ASSERT_EQ(mseg_all_memory_deallocated(seg2), 1);
        mseg_close(seg2);
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 0);
        ASSERT_OK(mseg_free(seg, p));
        mseg_close(seg);
        munmap(copy, size);
        munmap(buf, size);
}

static void test_strerror(void) {
        for (int c = MSEG_E_LAST; c <= MSEG_E_FIRST; c++)
                ASSERT(strcmp(mseg_strerror(c), "unknown error") != 0 || c == MSEG_E_FIRST);
        ASSERT(strstr(mseg_strerror(-ENOENT), "No such file") != NULL);
        ASSERT(strstr(mseg_strerror(-EPROTOTYPE), "type") != NULL);
        ASSERT(mseg_strerror(12345678) != NULL);
        ASSERT(mseg_last_error() != NULL);
        ASSERT(strcmp(mseg_version(), "0.1.0") == 0);
}

static void test_ids_differ(void) {
        size_t size = 1 << 17;
        void *a = page_buf(size), *b = page_buf(size);
        mseg *sa, *sb;
        uint8_t ia[16], ib[16];

        ASSERT_OK(mseg_buffer_create(&sa, a, size));
        ASSERT_OK(mseg_buffer_create(&sb, b, size));
        mseg_id(sa, ia);
        mseg_id(sb, ib);
        ASSERT(memcmp(ia, ib, 16) != 0);
        mseg_close(sa);
        mseg_close(sb);
        munmap(a, size);
        munmap(b, size);
}

int main(void) {
        test_sizes();
        test_handles();
        test_strerror();
        test_ids_differ();
        return 0;
}
