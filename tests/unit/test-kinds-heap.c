/* SPDX-License-Identifier: MIT */
/*
 * test-kinds-heap: heap segments grow (and may move) while handles stay
 * valid, and their bytes, copied elsewhere, attach as a buffer segment.
 */
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "internal.h"

/* Inside mseg_atomic() this thread holds the segment's registry lock; a
 * growth that moved the mapping would leave that lock behind in the
 * thread's robust list, so it is refused. */
static int grow_inside(mseg *seg, void *arg) {
        *(int *) arg = mseg_heap_grow(seg, 1 << 20);
        return 0;
}

static void test_grow_in_callback(void) {
        static const mseg_type u = { "u64", 8, 8, NULL };
        mseg *h;
        int r = 0;

        ASSERT_OK(mseg_heap_create(&h, 1 << 20));
        ASSERT_NOT_NULL(mseg_construct(h, "x", &u, 1, NULL, NULL));
        ASSERT_OK(mseg_atomic(h, grow_inside, &r));
        ASSERT_EQ(r, -EBUSY);
        ASSERT_EQ(mseg_size(h), 1 << 20);
        ASSERT_EQ(mseg__lock_list_len(), 0);
        ASSERT_OK(mseg_heap_grow(h, 1 << 20));          /* outside: fine */
        ASSERT_NOT_NULL(mseg_find(h, "x", &u, NULL));
        ASSERT_OK(mseg_check(h));
        ASSERT_EQ(mseg__lock_list_len(), 0);
        mseg_close(h);
}

int main(void) {
        mseg *h = NULL;
        mseg_handle hs[100];

        ASSERT_ERR(mseg_heap_create(&h, 1000), -EINVAL);
        ASSERT_ERR(mseg_heap_create(NULL, 1 << 20), -EINVAL);
        ASSERT(h == NULL);
        ASSERT_OK(mseg_heap_create(&h, 256 * 1024));
        ASSERT_EQ(mseg_size(h), 256 * 1024);
        for (int i = 0; i < 100; i++) {
                char *p = mseg_alloc(h, 200);
                ASSERT_NOT_NULL(p);
                snprintf(p, 200, "heap block %d", i);
                hs[i] = mseg_handle_of(h, p);
        }
        while (mseg_alloc(h, 3000))
                ;
        ASSERT_EQ(errno, ENOMEM);
        ASSERT_ERR(mseg_heap_grow(NULL, 1), -EINVAL);
        for (int round = 0; round < 4; round++) {
                ASSERT_OK(mseg_heap_grow(h, 1 << 20));
                ASSERT_OK(mseg_check(h));
                for (int i = 0; i < 100; i++) {
                        char want[32];
                        snprintf(want, sizeof(want), "heap block %d", i);
                        ASSERT(strcmp(mseg_ptr(h, hs[i]), want) == 0);
                }
                void *big = mseg_alloc(h, 512 * 1024);    /* the new space is usable */
                ASSERT_NOT_NULL(big);
                memset(big, round, 512 * 1024);
        }
        ASSERT_EQ(mseg_size(h), 256 * 1024 + 4 * (1 << 20));

        /* Export the bytes, attach them elsewhere. */
        uint64_t n = mseg_size(h);
        void *copy = aligned_alloc(4096, n);
        ASSERT_NOT_NULL(copy);
        memcpy(copy, mseg_address(h), n);
        mseg *b;
        ASSERT_OK(mseg_buffer_attach(&b, copy, n));
        ASSERT_OK(mseg_check(b));
        for (int i = 0; i < 100; i++) {
                char want[32];
                snprintf(want, sizeof(want), "heap block %d", i);
                ASSERT(strcmp(mseg_ptr(b, hs[i]), want) == 0);
        }
        mseg_close(b);
        free(copy);
        mseg_close(h);
        test_grow_in_callback();
        return 0;
}
