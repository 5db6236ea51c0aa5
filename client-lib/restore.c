/* SPDX-License-Identifier: MIT */
/*
 * restore.c — bringing back a segment image that was copied while its
 * clients worked (msegd's state files of MSEG_PERSISTENT segments).
 *
 * A copy is read page by page while other processes write, so it is not
 * even the state of one instant: a lock may read as held by a thread that
 * will never release it in this copy (its robust list points into the
 * original mapping, so its death would not be noticed here either), a
 * class list may be half relinked, and every attachment slot names a
 * process that maps the original, not this copy. What each module treats
 * as authoritative (boundary tags, superblock bitmaps, registry entries and
 * table) is what a crash would leave, within the few pages that changed
 * while the copy ran; everything derived is rebuilt by the repairs.
 *
 * So, while nobody else can map the copy: every lock is made free and
 * owner-dead (mseg__lock_reset_dead), which makes its next taker repair
 * what it guards exactly as after a SIGKILL; every slot is reclaimed (its
 * magazine comes back; its process never attached this copy); and
 * mseg_check() then takes every lock in turn, so every repair has run
 * before the first client arrives, and reports whatever could not be
 * repaired.
 *
 * That covers a copy's locks and everything derived. The page layer's
 * truth, though (the runs' boundary tags, the wilderness, which superblock
 * descriptors are live), sits in three places far apart; a copy that reads
 * them at different moments of a change cannot be repaired. So the copy is
 * taken while the page lock is held (mseg__snapshot_hold): the page layer
 * holds still for the few milliseconds of the copy, and what still changes
 * (class bitmaps, magazines, the registry) is rebuilt or validated here.
 *
 * A mapped file that its opener finds unattached (file.c gets LOCK_EX) is
 * the same story, cheaper: its last users are gone, perhaps in an earlier
 * boot (a power cut, a kernel crash), so a lock may read as held by a TID
 * that means nothing now. mseg__recover_unattached() makes such locks
 * owner-dead and reclaims every slot; the usual repairs do the rest.
 */
#include "alloc_layout.h"
#include "registry.h"

int mseg__restore_offline(struct mseg *seg) {
        struct mseg__alloc_local *L = seg ? seg->alloc : NULL;
        reg_root *rr;

        if (!L)
                return mseg__error(-EINVAL, "no segment");
        if (!L->writable)
                return mseg__error(-EROFS, "segment is mapped read-only");
        mseg__lock_reset_dead(&L->root->slot_lock);
        mseg__lock_reset_dead(&L->root->pages.lock);
        for (uint32_t c = 0; c < A_NCLASSES; c++)
                mseg__lock_reset_dead(&L->root->pools[c].lock);
        rr = reg_root_of(seg);
        if (rr->magic == REG_ROOT_MAGIC)
                mseg__lock_reset_dead(&rr->lock);
        for (uint32_t i = 0; i < L->nslots; i++) {
                mseg_slot *s = mseg__slot_at(L, i);
                if (MSEG_SLOT_STATE(atomic_load_explicit(&s->state, memory_order_acquire)) != MSEG_SLOT_FREE)
                        (void) mseg__alloc_reclaim_slot(seg, i);
        }
        return mseg_check(seg);
}

/* A lock that looks held in a segment nobody maps names a thread that is
 * gone, whose death these pages never heard of: make it owner-dead, so its
 * next taker repairs. A lock of garbage is left for the checks to report. */
static void reset_if_held(mseg_lock *l) {
        if (l->magic == MSEG_LOCK_MAGIC && atomic_load_explicit(&l->word, memory_order_acquire) != 0)
                mseg__lock_reset_dead(l);
}

int mseg__recover_unattached(struct mseg *seg) {
        struct mseg__alloc_local *L = seg ? seg->alloc : NULL;
        reg_root *rr;
        int n = 0;

        if (!L)
                return mseg__error(-EINVAL, "no segment");
        if (!L->writable)
                return mseg__error(-EROFS, "segment is mapped read-only");
        reset_if_held(&L->root->slot_lock);
        reset_if_held(&L->root->pages.lock);
        for (uint32_t c = 0; c < A_NCLASSES; c++)
                reset_if_held(&L->root->pools[c].lock);
        rr = reg_root_of(seg);
        if (rr->magic == REG_ROOT_MAGIC)
                reset_if_held(&rr->lock);
        for (uint32_t i = 0; i < L->nslots; i++) {
                mseg_slot *s = mseg__slot_at(L, i);
                if (MSEG_SLOT_STATE(atomic_load_explicit(&s->state, memory_order_acquire)) != MSEG_SLOT_FREE &&
                    mseg__alloc_reclaim_slot(seg, i) == 0)
                        n++;
        }
        return n;
}

int mseg__snapshot_hold(struct mseg *seg) {
        struct mseg__alloc_local *L = seg ? seg->alloc : NULL;

        if (!L)
                return mseg__error(-EINVAL, "no segment");
        if (!L->writable)
                return mseg__error(-EROFS, "segment is mapped read-only");
        return mseg__pages_hold(L);
}

void mseg__snapshot_release(struct mseg *seg) {
        if (seg && seg->alloc)
                mseg__pages_release(seg->alloc);
}
