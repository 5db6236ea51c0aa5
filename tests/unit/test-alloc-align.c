/* SPDX-License-Identifier: MIT */
/*
 * test-alloc-align: every power-of-two alignment from 1 to 4096 with sizes
 * around every size class, and larger alignments (8 KiB .. 1 MiB) for small
 * and large sizes; the blocks are aligned, usable for their size, distinct,
 * and all memory comes back. Non-powers of two are refused.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "test.h"
#include "internal.h"

#define SEG_SIZE ((size_t) 64 << 20)

int main(void) {
        size_t slack = 2 << 20;
        uint8_t *map = mmap(NULL, SEG_SIZE + slack, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        uint8_t *buf = (uint8_t *) (((uintptr_t) map + slack - 1) & ~(uintptr_t) (slack - 1));
        static void *v[20000];
        size_t n = 0;
        mseg *seg;

        ASSERT(map != MAP_FAILED);
        ASSERT_OK(mseg_buffer_create(&seg, buf, SEG_SIZE));
        ASSERT_NULL_ERRNO(mseg_alloc_aligned(seg, 10, 3), EINVAL);
        ASSERT_NULL_ERRNO(mseg_alloc_aligned(seg, 10, 0), EINVAL);
        ASSERT_NULL_ERRNO(mseg_alloc_aligned(seg, 10, 48), EINVAL);
        for (size_t align = 1; align <= 4096; align <<= 1) {
                for (size_t size = 1; size <= 9000; size += size < 256 ? 7 : size / 5) {
                        for (int rep = 0; rep < 3; rep++) {
                                uint8_t *p = mseg_alloc_aligned(seg, size, align);
                                ASSERT_NOT_NULL(p);
                                if ((uintptr_t) p % align || mseg_handle_of(seg, p) % align)
                                        FAIL("size %zu align %zu: %p", size, align, (void *) p);
                                if (mseg_usable_size(seg, p) < size)
                                        FAIL("size %zu align %zu: usable %zu", size, align, mseg_usable_size(seg, p));
                                memset(p, (int) (n & 0xff), size);
                                ASSERT(n < sizeof(v) / sizeof(v[0]));
                                v[n++] = p;
                        }
                }
        }
        for (size_t align = 8192; align <= (1 << 20); align <<= 1) {
                size_t sizes[] = { 1, 100, 4096, 5000, align, align + 1, 3 * align };
                for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
                        uint8_t *p = mseg_alloc_aligned(seg, sizes[k], align);
                        ASSERT_NOT_NULL(p);
                        if ((uintptr_t) p % align)
                                FAIL("size %zu align %zu: %p", sizes[k], align, (void *) p);
                        ASSERT(mseg_usable_size(seg, p) >= sizes[k]);
                        memset(p, 0x77, sizes[k]);
                        v[n++] = p;
                }
        }
        /* bigger than the segment: ENOMEM, not a crash */
        ASSERT_NULL_ERRNO(mseg_alloc_aligned(seg, 16, (size_t) 1 << 40), ENOMEM);
        ASSERT_OK(mseg_check(seg));
        /* each block still holds its fill: no two overlap */
        for (size_t i = 0; i < n; i++)
                if (((uint8_t *) v[i])[0] != (uint8_t) (i & 0xff) && ((uint8_t *) v[i])[0] != 0x77)
                        FAIL("block %zu was overwritten", i);
        for (size_t i = 0; i < n; i++)
                ASSERT_OK(mseg_free(seg, v[i]));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        ASSERT_OK(mseg_check(seg));
        printf("%zu aligned blocks\n", n);
        mseg_close(seg);
        munmap(map, SEG_SIZE + slack);
        return 0;
}
