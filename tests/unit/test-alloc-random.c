/* SPDX-License-Identifier: MIT */
/*
 * test-alloc-random: the allocator against a simple model, for millions of
 * operations. The model is the set of live blocks; each is filled with a
 * pattern derived from its id (all of a small block, the head, middle and
 * tail of a large one), checked before it is freed, so two live blocks that
 * overlap, or a block the allocator scribbled on, fail the test. Sizes mix
 * every class, large runs and alignments; expand and shrink run in between;
 * a small segment is driven into exhaustion again and again (every failure
 * must be ENOMEM, and the segment must keep working). mseg_check runs
 * periodically and the accounting must come back to zero at the end.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "test.h"
#include "internal.h"

struct blk {
        uint8_t *p;
        size_t size;            /* bytes the pattern covers */
        uint64_t id;
};

static uint64_t rng;

static uint8_t pat(uint64_t id, size_t i) {
        return (uint8_t) ((id * 0x9e3779b97f4a7c15u >> 56) + i * 7);
}

/* Pattern positions: everything below 1 KiB, else 3 windows of 256 bytes. */
static void pattern(struct blk *b, bool check) {
        size_t win = 256, n = b->size;
        size_t starts[3] = { 0, n / 2 - (n / 2) % 16, n - win };
        int nw = n <= 1024 ? 1 : 3;

        for (int w = 0; w < nw; w++) {
                size_t s = n <= 1024 ? 0 : starts[w], e = n <= 1024 ? n : s + win;
                for (size_t i = s; i < e; i++) {
                        if (!check)
                                b->p[i] = pat(b->id, i);
                        else if (b->p[i] != pat(b->id, i))
                                FAIL("block id %llu (%zu bytes at %p): byte %zu is 0x%02x, expected 0x%02x",
                                     (unsigned long long) b->id, b->size, (void *) b->p, i, b->p[i],
                                     pat(b->id, i));
                }
        }
}

static size_t pick_size(void) {
        uint64_t r = test_rand(&rng) % 1000;

        if (r < 700)
                return 1 + test_rand(&rng) % 512;
        if (r < 900)
                return 1 + test_rand(&rng) % 8192;
        if (r < 990)
                return 8193 + test_rand(&rng) % (256 << 10);
        return 1 + test_rand(&rng) % (2 << 20);
}

static void run(size_t seg_size, size_t max_live, uint64_t ops, uint64_t seed) {
        /* Alignments are of offsets; the buffer is aligned to the largest
         * one asked so addresses are aligned too. */
        size_t slack = 64 << 10;
        uint8_t *map = mmap(NULL, seg_size + slack, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        uint8_t *buf = (uint8_t *) (((uintptr_t) map + slack - 1) & ~(uintptr_t) (slack - 1));
        struct blk *live = calloc(max_live, sizeof(*live));
        size_t nlive = 0;
        uint64_t next_id = 1, enomem = 0, allocs = 0;
        mseg *seg;

        ASSERT(map != MAP_FAILED && live);
        rng = seed;
        ASSERT_OK(mseg_buffer_create(&seg, buf, seg_size));
        for (uint64_t op = 0; op < ops; op++) {
                uint64_t r = test_rand(&rng) % 100;
                if (nlive < max_live && (r < 55 || nlive == 0)) {
                        size_t size = pick_size(), align = 16;
                        uint8_t *p;
                        if (test_rand(&rng) % 10 == 0)
                                align = (size_t) 1 << (test_rand(&rng) % 14);
                        p = align == 16 ? mseg_alloc(seg, size) : mseg_alloc_aligned(seg, size, align);
                        if (!p) {
                                if (errno != ENOMEM)
                                        FAIL("allocation of %zu (align %zu) failed with errno %d: %s", size, align,
                                             errno, mseg_last_error());
                                enomem++;
                                /* free a few to make room */
                                for (int k = 0; k < 8 && nlive; k++) {
                                        size_t i = test_rand(&rng) % nlive;
                                        pattern(&live[i], true);
                                        ASSERT_OK(mseg_free(seg, live[i].p));
                                        live[i] = live[--nlive];
                                }
                                continue;
                        }
                        if ((uintptr_t) p % align)
                                FAIL("block %p not aligned to %zu", (void *) p, align);
                        if (mseg_usable_size(seg, p) < size)
                                FAIL("usable size %zu < %zu", mseg_usable_size(seg, p), size);
                        live[nlive] = (struct blk){ p, size, next_id++ };
                        pattern(&live[nlive], false);
                        nlive++;
                        allocs++;
                } else if (r < 95 && nlive) {
                        size_t i = test_rand(&rng) % nlive;
                        pattern(&live[i], true);
                        ASSERT_OK(mseg_free(seg, live[i].p));
                        live[i] = live[--nlive];
                } else if (nlive) {
                        /* expand or shrink in place, keeping the pattern valid */
                        size_t i = test_rand(&rng) % nlive, got = 0;
                        struct blk *b = &live[i];
                        pattern(b, true);
                        if (test_rand(&rng) % 2) {
                                size_t want = b->size + 1 + test_rand(&rng) % (64 << 10);
                                int e = mseg_expand(seg, b->p, b->size + 1, want, &got);
                                if (e == 0) {
                                        ASSERT(got > b->size);
                                        ASSERT(mseg_usable_size(seg, b->p) == got);
                                        b->size = got < want ? got : want;
                                } else if (e != -ENOMEM)
                                        FAIL("mseg_expand = %d", e);
                        } else if (b->size > 16) {
                                size_t want = b->size / 2;
                                ASSERT_OK(mseg_shrink(seg, b->p, want, &got));
                                ASSERT(got >= want);
                                ASSERT(mseg_usable_size(seg, b->p) == got);
                                b->size = want;
                        }
                        pattern(b, false);
                }
                if (op % 200000 == 0)
                        ASSERT_OK(mseg_check(seg));
        }
        ASSERT_OK(mseg_check(seg));
        while (nlive) {
                pattern(&live[nlive - 1], true);
                ASSERT_OK(mseg_free(seg, live[--nlive].p));
        }
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        ASSERT_OK(mseg_check(seg));
        printf("segment %zu KiB: %llu ops, %llu allocations, %llu ENOMEM\n", seg_size >> 10,
               (unsigned long long) ops, (unsigned long long) allocs, (unsigned long long) enomem);
        mseg_close(seg);
        free(live);
        munmap(map, seg_size + slack);
}

int main(int argc, char **argv) {
        uint64_t scale = argc > 1 ? strtoull(argv[1], NULL, 10) : 1;

        run((size_t) 256 << 20, 4000, 3000000 * scale, 1);     /* roomy: mostly the fast paths */
        run((size_t) 8 << 20, 3000, 1000000 * scale, 2);       /* tight: exhaustion all the time */
        run((size_t) 1 << 20, 500, 200000 * scale, 3);         /* small segment, 16 KiB superblocks */
        run(MSEG_MIN_SIZE, 100, 100000 * scale, 4);            /* no caches, 4 KiB superblocks */
        return 0;
}
