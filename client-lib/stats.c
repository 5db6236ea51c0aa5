/* SPDX-License-Identifier: MIT */
/*
 * stats.c — mseg_stats(): what a segment's memory is doing, in figures a
 * person (msegctl check) or a crash test can compare.
 *
 * The allocator cannot tell a leaked block from a live one: a block is
 * reachable through handles that may sit anywhere, even in a process's
 * private memory. What it can tell, and what this file reports, is where
 * every byte of the data area is: in allocated blocks (clients' and the
 * registry's), in free blocks and runs, in the magazine caches of
 * attachment slots, or in the allocator's own records. A program that knows
 * which blocks it holds (the crash tests do) subtracts them from
 * allocated_bytes and gets the leak: what processes that died left behind.
 * The crash-repair figures come from the segment too: how often a process
 * died holding one of its locks, how many dead attachments were reclaimed,
 * and how many are waiting to be.
 *
 * Nothing here takes a lock: the walk reads the page layer's boundary tags
 * and the superblock bitmaps as they are, bounded by the trusted geometry,
 * so it is exact while the segment is quiet and a consistent-looking
 * snapshot otherwise. A walk that meets tags that do not tile (a writer in
 * the middle of a change, or damage) is retried a few times, then reported
 * as -EAGAIN; mseg_check() is the judge of damage.
 */
#include <string.h>

#include "alloc_layout.h"
#include "registry.h"

/* One pass over the runs of [0, wild). 0, or -EAGAIN when they do not tile. */
static int walk(struct mseg__alloc_local *L, struct mseg_stats *st) {
        uint32_t wild = atomic_load_explicit(&L->root->pages.wild, memory_order_acquire);
        uint32_t u = 0;

        if (wild > L->data_units)
                return -EAGAIN;
        while (u < wild) {
                struct a_unit h = L->utab[u];   /* one copy: other processes write it */
                uint32_t len = h.len;

                if (h.head == A_RUN_NONE || h.head >= A_RUN_KINDS || len == 0 || len > wild - u)
                        return -EAGAIN;
                switch (h.head) {
                case A_RUN_LARGE:
                        st->allocated_blocks++;
                        st->allocated_bytes += (uint64_t) len << A_UNIT_SHIFT;
                        break;
                case A_RUN_META:
                        st->overhead_bytes += (uint64_t) len << A_UNIT_SHIFT;
                        break;
                case A_RUN_SB: {
                        struct a_desc *d = a_desc_at(L, u >> L->sb_shift);
                        uint32_t live = atomic_load_explicit(&d->live, memory_order_acquire);
                        uint32_t c = live & 0xffffu, nb, words, pop = 0;

                        if ((live & 0xffff0000u) != A_DESC_LIVE || c >= A_NCLASSES)
                                return -EAGAIN;
                        nb = L->nblocks[c];
                        words = (nb + 63) / 64;
                        for (uint32_t w = 0; w < words && w < L->bitwords; w++) {
                                uint64_t bits = __atomic_load_n(&d->bits[w], __ATOMIC_RELAXED);
                                if (w == words - 1 && (nb & 63))
                                        bits &= (UINT64_C(1) << (nb & 63)) - 1;
                                pop += (uint32_t) __builtin_popcountll(bits);
                        }
                        st->allocated_blocks += pop;
                        st->allocated_bytes += (uint64_t) pop * mseg__class_size[c];
                        /* The tail a superblock cannot use for its class;
                         * an empty one is free whole (mseg_free_memory). */
                        if (pop)
                                st->overhead_bytes += ((uint64_t) len << A_UNIT_SHIFT) -
                                                      (uint64_t) nb * mseg__class_size[c];
                        break;
                }
                default:
                        break;
                }
                u += len;
        }
        return 0;
}

int mseg_stats(mseg *seg, struct mseg_stats *ret) {
        struct mseg__alloc_local *L = seg ? seg->alloc : NULL;
        struct mseg_stats st;
        uint64_t cached_blocks = 0, cached_bytes = 0, repairs;
        reg_root *rr;
        int r = -EAGAIN;

        if (!L || !ret)
                return mseg__error(-EINVAL, "mseg_stats: NULL argument");
        for (int attempt = 0; attempt < 8 && r == -EAGAIN; attempt++) {
                memset(&st, 0, sizeof(st));
                r = walk(L, &st);
        }
        if (r < 0)
                return mseg__error(r, "the allocator's runs kept changing (or are damaged): no snapshot");

        for (uint32_t i = 0; i < L->nslots; i++) {
                mseg_slot *s = mseg__slot_at(L, i);
                uint32_t state = MSEG_SLOT_STATE(atomic_load_explicit(&s->state, memory_order_acquire));
                struct a_heap *h;

                if (state == MSEG_SLOT_FREE)
                        continue;
                st.slots_live++;
                if (mseg__slot_owner_gone(seg, i))
                        st.slots_dead++;
                h = mseg__heap_at(L, __atomic_load_n(&s->heap_off, __ATOMIC_RELAXED));
                if (!h)
                        continue;
                for (uint32_t c = 0; c < A_NCLASSES; c++) {
                        uint32_t n = __atomic_load_n(&h->count[c], __ATOMIC_RELAXED);
                        if (n > L->cap[c])
                                n = L->cap[c];
                        cached_blocks += n;
                        cached_bytes += (uint64_t) n * mseg__class_size[c];
                }
        }
        /* Cached blocks have their bits set, but they are free. */
        st.allocated_blocks = st.allocated_blocks > cached_blocks ? st.allocated_blocks - cached_blocks : 0;
        st.allocated_bytes = st.allocated_bytes > cached_bytes ? st.allocated_bytes - cached_bytes : 0;
        st.cached_bytes = cached_bytes;

        repairs = atomic_load_explicit(&L->root->slot_lock.repairs, memory_order_relaxed) +
                  atomic_load_explicit(&L->root->pages.lock.repairs, memory_order_relaxed);
        for (uint32_t c = 0; c < A_NCLASSES; c++)
                repairs += atomic_load_explicit(&L->root->pools[c].lock.repairs, memory_order_relaxed);
        rr = reg_root_of(seg);
        if (REG_LOAD(rr->magic) == REG_ROOT_MAGIC)
                repairs += atomic_load_explicit(&rr->lock.repairs, memory_order_relaxed);
        st.lock_repairs = repairs;
        st.slots_reclaimed = REG_LOAD(L->root->slot_reclaims);
        st.size = mseg__usable(seg);
        st.free_bytes = mseg_free_memory(seg);
        st.poisoned = (atomic_load_explicit(&seg->hdr->state, memory_order_relaxed) & MSEG_STATE_POISONED) != 0;
        *ret = st;
        return 0;
}
