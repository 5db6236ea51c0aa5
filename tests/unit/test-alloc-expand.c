/* SPDX-License-Identifier: MIT */
/*
 * test-alloc-expand: in-place expand and shrink (Boost's allocation_command).
 * A large block grows into the free run after it or into the wilderness,
 * and not past an allocated neighbour; it reports what it got between the
 * minimum and the preferred size; shrinking releases the tail for others;
 * contents never move. A small block grows only within its size class.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "test.h"
#include "internal.h"

#define SEG_SIZE ((size_t) 16 << 20)

static void fill(uint8_t *p, size_t n, uint8_t v) { memset(p, v, n); }

static void same(const uint8_t *p, size_t n, uint8_t v) {
        for (size_t i = 0; i < n; i++)
                if (p[i] != v)
                        FAIL("byte %zu changed to 0x%02x", i, p[i]);
}

int main(void) {
        uint8_t *buf = mmap(NULL, SEG_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        size_t got = 0;
        mseg *seg;

        ASSERT(buf != MAP_FAILED);
        ASSERT_OK(mseg_buffer_create(&seg, buf, SEG_SIZE));

        /* Large blocks first, in a fresh segment, so their places are known:
         * a large block at the top grows into the wilderness. */
        uint8_t *a = mseg_alloc(seg, 20000);                    /* 5 units */
        ASSERT_NOT_NULL(a);
        ASSERT_EQ(mseg_usable_size(seg, a), 20480);
        fill(a, 20480, 0xa1);
        ASSERT_OK(mseg_expand(seg, a, 30000, 50000, &got));
        ASSERT_EQ(got, 53248);                                  /* 13 units: the preferred size */
        ASSERT_EQ(mseg_usable_size(seg, a), 53248);
        same(a, 20480, 0xa1);
        fill(a, got, 0xa2);

        /* blocked by an allocated neighbour */
        uint8_t *b = mseg_alloc(seg, 8192 + 1);
        ASSERT_NOT_NULL(b);
        ASSERT(b == a + 53248);
        ASSERT_ERR(mseg_expand(seg, a, 60000, 60000, &got), -ENOMEM);
        ASSERT_EQ(mseg_usable_size(seg, a), 53248);
        /* already big enough: no change */
        ASSERT_OK(mseg_expand(seg, a, 1000, 40000, &got));
        ASSERT_EQ(got, 53248);

        /* shrink releases the tail: the next run fits right there */
        ASSERT_OK(mseg_shrink(seg, a, 10000, &got));
        ASSERT_EQ(got, 12288);
        same(a, 12288, 0xa2);
        uint8_t *c = mseg_alloc(seg, 40000);                    /* 10 units: the freed 10 */
        ASSERT_NOT_NULL(c);
        ASSERT(c == a + 12288);
        ASSERT_ERR(mseg_expand(seg, a, 12289, 12289, &got), -ENOMEM);
        ASSERT_OK(mseg_free(seg, c));

        /* grows into the free run after it, partly or wholly */
        ASSERT_OK(mseg_expand(seg, a, 16384, 20000, &got));
        ASSERT_EQ(got, 20480);
        ASSERT_OK(mseg_expand(seg, a, 1, 1 << 20, &got));
        ASSERT_EQ(got, 53248);                                  /* up to b */
        ASSERT_ERR(mseg_expand(seg, a, 53249, 53249, &got), -ENOMEM);
        same(a, 12288, 0xa2);
        ASSERT_OK(mseg_check(seg));

        /* b at the top: shrink it, free a; everything merges back */
        ASSERT_OK(mseg_shrink(seg, b, 1, &got));
        ASSERT_EQ(got, 4096);
        ASSERT_OK(mseg_expand(seg, b, 1 << 20, 2 << 20, &got));
        ASSERT_EQ(got, 2 << 20);
        ASSERT_OK(mseg_check(seg));
        /* the whole segment: the minimum cannot be met */
        ASSERT_ERR(mseg_expand(seg, b, SEG_SIZE, SEG_SIZE, &got), -ENOMEM);
        ASSERT_OK(mseg_free(seg, a));
        ASSERT_OK(mseg_free(seg, b));
        /* small blocks: within the class only */
        uint8_t *s;
        s = mseg_alloc(seg, 100);                      /* class 112 */
        ASSERT_NOT_NULL(s);
        ASSERT_OK(mseg_expand(seg, s, 110, 200, &got));
        ASSERT_EQ(got, 112);
        ASSERT_ERR(mseg_expand(seg, s, 113, 200, &got), -ENOMEM);
        ASSERT_OK(mseg_shrink(seg, s, 10, &got));
        ASSERT_EQ(got, 112);
        ASSERT_ERR(mseg_expand(seg, s + 16, 110, 200, &got), -EINVAL);
        ASSERT_ERR(mseg_expand(seg, NULL, 1, 2, &got), -EINVAL);

        ASSERT_OK(mseg_free(seg, s));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        ASSERT_OK(mseg_check(seg));

        /* a random walk of one block's size against a neighbour that comes and goes */
        uint64_t rng = 5;
        uint8_t *x = mseg_alloc(seg, 100000), *y = NULL;
        size_t xs = 100000;
        ASSERT_NOT_NULL(x);
        fill(x, xs, 0x5c);
        for (int i = 0; i < 20000; i++) {
                size_t want = 1 + test_rand(&rng) % (1 << 20);
                int op = (int) (test_rand(&rng) % 4);
                if (op == 0) {
                        int e = mseg_expand(seg, x, want, want + 4096, &got);
                        if (e == 0) {
                                ASSERT(got >= want);
                                same(x, xs < want ? xs : want, 0x5c);
                                fill(x, got, 0x5c);
                                xs = got;
                        } else
                                ASSERT_EQ(e, -ENOMEM);
                } else if (op == 1) {
                        ASSERT_OK(mseg_shrink(seg, x, want, &got));
                        ASSERT(got >= (want < xs ? want : xs) || got >= 4096);
                        xs = got < xs ? got : xs;
                        same(x, xs, 0x5c);
                } else if (op == 2 && !y) {
                        y = mseg_alloc(seg, want);
                        if (y)
                                fill(y, want, 0x11);
                } else if (y) {
                        ASSERT_OK(mseg_free(seg, y));
                        y = NULL;
                }
                ASSERT_EQ(mseg_usable_size(seg, x) >= xs, 1);
                if (i % 2000 == 0)
                        ASSERT_OK(mseg_check(seg));
        }
        ASSERT_OK(mseg_free(seg, x));
        if (y)
                ASSERT_OK(mseg_free(seg, y));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        ASSERT_OK(mseg_check(seg));
        mseg_close(seg);
        munmap(buf, SEG_SIZE);
        return 0;
}
