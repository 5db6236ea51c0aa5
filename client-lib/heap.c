/* SPDX-License-Identifier: MIT */
/*
 * heap.c — heap segments (Boost's managed_heap_memory): private memory of
 * this process that can grow. The memory is an anonymous private mapping
 * rather than malloc() so it is page-aligned (every alignment the allocator
 * offers holds for addresses too) and zero-filled, and so mremap() can grow
 * it without copying when the kernel finds room. Growing may move it: the
 * caller's pointers go stale, its handles (offsets) do not.
 */
#include <sys/mman.h>

#include "internal.h"

#define PAGE UINT64_C(4096)

static inline uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

int mseg_heap_create(mseg **ret_seg, uint64_t size) {
        void *p;
        int r;

        if (!ret_seg)
                return mseg__error(-EINVAL, "mseg_heap_create: NULL argument");
        if (size < MSEG_MIN_SIZE || size > MSEG_MAX_SIZE)
                return mseg__error(-EINVAL, "heap size %llu outside [%llu, %llu]", (unsigned long long) size,
                                   (unsigned long long) MSEG_MIN_SIZE, (unsigned long long) MSEG_MAX_SIZE);
        size = round_up(size, PAGE);
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
                return mseg__error(-ENOMEM, "cannot map %llu bytes for a heap segment", (unsigned long long) size);
        r = mseg__format(p, size, size, 0);
        if (r >= 0)
                r = mseg__handle_new(ret_seg, p, size, MSEG__KIND_HEAP, false, false);
        if (r < 0) {
                munmap(p, size);
                return r;
        }
        (*ret_seg)->mapped = true;
        return 0;
}

int mseg_heap_grow(mseg *seg, uint64_t extra) {
        uint64_t old_size, new_size;
        void *p;
        int r;

        if (!seg || seg->kind != MSEG__KIND_HEAP)
                return mseg__error(-EINVAL, "mseg_heap_grow: not a heap segment");
        if (extra == 0)
                return 0;
        /* Inside mseg_atomic() or an init callback this thread holds a lock
         * in the segment, which a move would leave behind in its robust
         * list (at an address that then means something else). */
        if (mseg__registry_held_by_me(seg) || mseg__lock_held_in(seg->base, seg->map_size))
                return mseg__error(-EBUSY, "mseg_heap_grow inside a callback that holds the segment's lock");
        old_size = seg->map_size;
        if (extra > MSEG_MAX_SIZE - old_size)
                return mseg__error(-EINVAL, "heap would exceed %llu bytes", (unsigned long long) MSEG_MAX_SIZE);
        new_size = round_up(old_size + extra, PAGE);
        /* Per-process allocator and registry state may hold addresses:
         * detach both (flushing caches) and attach again after the move. */
        mseg__registry_detach(seg);
        mseg__alloc_detach(seg);
        p = mremap(seg->base, old_size, new_size, MREMAP_MAYMOVE);
        if (p == MAP_FAILED) {
                r = mseg__error(-ENOMEM, "cannot grow the heap segment to %llu bytes",
                                (unsigned long long) new_size);
                goto reattach;
        }
        seg->base = p;
        seg->hdr = p;
        /* The allocator moves its tables while the header still names the
         * old size; then the header takes the new one. */
        r = mseg__alloc_resize(seg->hdr, new_size);
        if (r < 0)
                goto reattach;          /* the mapping is larger; the segment is not */
        seg->hdr->size = new_size;
        atomic_store_explicit(&seg->hdr->usable, new_size, memory_order_release);
        mseg__header_seal(seg->hdr);
        seg->map_size = new_size;
reattach:
        seg->uid = mseg__new_uid();
        if (mseg__alloc_attach(seg) < 0 || mseg__registry_attach(seg) < 0)
                return mseg__error(MSEG_E_CORRUPT, "heap segment failed to re-attach after growing");
        return r;
}
