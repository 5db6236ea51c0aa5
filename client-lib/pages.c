/* SPDX-License-Identifier: MIT */
/*
 * pages.c — the allocator's page layer: runs of 4 KiB units.
 *
 * Everything bigger than a size class (large blocks), every superblock of
 * small blocks and every magazine record is a run of units taken here. The
 * unit table (alloc_layout.h) holds a boundary tag at both ends of each run,
 * so freeing coalesces with both neighbours in O(1); free runs sit in bins
 * by length (exact up to 32 units, then four bins per doubling) and
 * allocation is first fit over the bins, which makes it best fit to within
 * a quarter. Above the last run lies the wilderness, free without any tag:
 * a run freed next to it sinks into it, so the unit table, like the memory,
 * is only ever touched up to a high-water mark, and growing a segment (the
 * frontier follows hdr->usable) costs nothing here.
 *
 * One robust lock (root->pages.lock) covers all of it. Each operation first
 * computes its final state, writes it to the intent record, then applies it
 * with absolute writes (apply_*), and clears the intent. If the holder dies
 * at any instruction, the next locker gets EOWNERDEAD, re-applies the intent
 * (the writes are idempotent) and rebuilds the bins and counters from a
 * linear walk of the runs, bounded by the wilderness. The tags are the
 * truth; bins and counters are derived. An allocation or free may carry a
 * record (intent.dest) that gets the run's offset or 0 inside the critical
 * section, so the replay writes it too (mseg_alloc_into, mseg__free_from);
 * a free from a record first checks, under the lock, that the record still
 * names the run (a repair may have finished that free already).
 *
 * Lock order: slot lock, then class locks (in class order), then this one.
 * Superblock descriptors are made live and dead under this lock (and the
 * class lock the caller holds), so live descriptors and SB runs agree.
 */
#include <string.h>

#include "alloc_layout.h"

#define BIN_SCAN 16u    /* runs looked at per bin before moving to a bigger bin */

static inline struct a_pages *P(struct mseg__alloc_local *L) { return &L->root->pages; }

static uint32_t bin_of(uint32_t len) {
        uint32_t k;

        if (len <= 32)
                return len - 1;
        k = 31u - (uint32_t) __builtin_clz(len);
        return 32u + (k - 5u) * 4u + ((len >> (k - 2u)) & 3u);
}

static int corrupt(const char *what, uint32_t unit) {
        return mseg__error(MSEG_E_CORRUPT, "allocator page table: %s (unit %u)", what, unit);
}

/* ---- tags ---- */

static void set_head(struct mseg__alloc_local *L, uint32_t u, int kind, uint32_t len) {
        struct a_unit *e = &L->utab[u];

        e->head = (uint8_t) kind;
        e->len = len;
        e->next = e->prev = 0;
}

static void set_tail(struct mseg__alloc_local *L, uint32_t u, int kind, uint32_t len) {
        struct a_unit *e = &L->utab[u];

        e->tail = (uint8_t) kind;
        e->len = len;
}

static void clear_head(struct mseg__alloc_local *L, uint32_t u) {
        struct a_unit *e = &L->utab[u];

        e->head = 0;
        e->next = e->prev = 0;
        if (!e->tail)
                e->len = 0;
}

static void clear_tail(struct mseg__alloc_local *L, uint32_t u) {
        struct a_unit *e = &L->utab[u];

        e->tail = 0;
        if (!e->head)
                e->len = 0;
}

static void set_run(struct mseg__alloc_local *L, uint32_t u, uint32_t len, int kind) {
        set_head(L, u, kind, len);
        set_tail(L, u + len - 1, kind, len);
}

/* A valid run of @kind (any kind if 0) starts at @u below the wilderness. */
static bool run_ok(struct mseg__alloc_local *L, uint32_t u, uint32_t wild, int kind) {
        const struct a_unit *h, *t;
        uint32_t len;

        if (u >= wild)
                return false;
        h = &L->utab[u];
        len = h->len;
        if (h->head == A_RUN_NONE || h->head >= A_RUN_KINDS || (kind && h->head != kind))
                return false;
        if (len == 0 || len > wild - u)
                return false;
        t = &L->utab[u + len - 1];
        return t->tail == h->head && t->len == len;
}

/* ---- bins (derived) ---- */

static void bin_insert(struct mseg__alloc_local *L, uint32_t u, uint32_t len) {
        struct a_pages *p = P(L);
        uint32_t b = bin_of(len), old = p->bins[b];

        L->utab[u].prev = 0;
        L->utab[u].next = old;
        if (old && old - 1 < L->data_units)
                L->utab[old - 1].prev = u + 1;
        p->bins[b] = u + 1;
        p->binmask[b >> 6] |= UINT64_C(1) << (b & 63);
        A_ADD(p->free_units, len);
}

static int bin_remove(struct mseg__alloc_local *L, uint32_t u, uint32_t wild) {
        struct a_pages *p = P(L);
        struct a_unit *e = &L->utab[u];
        uint32_t b = bin_of(e->len), nx = e->next, pv = e->prev;

        if (nx && !run_ok(L, nx - 1, wild, A_RUN_FREE))
                return corrupt("bad free-run link", u);
        if (pv && !run_ok(L, pv - 1, wild, A_RUN_FREE))
                return corrupt("bad free-run link", u);
        if (pv) {
                if (L->utab[pv - 1].next != u + 1)
                        return corrupt("free-run links disagree", u);
                L->utab[pv - 1].next = nx;
        } else {
                if (p->bins[b] != u + 1)
                        return corrupt("free run missing from its bin", u);
                p->bins[b] = nx;
                if (!nx)
                        p->binmask[b >> 6] &= ~(UINT64_C(1) << (b & 63));
        }
        if (nx)
                L->utab[nx - 1].prev = pv;
        e->next = e->prev = 0;
        A_SUB(p->free_units, e->len);
        return 0;
}

/* ---- applying an intent: absolute writes only, so a replay is harmless ---- */

/* A destination for an offset store: past the header, inside the map. The
 * callers check more (alloc.c); this only keeps replays in bounds. */
static bool dest_ok(struct mseg__alloc_local *L, uint64_t dest) {
        return dest >= MSEG_HEADER_SIZE && dest <= L->seg->map_size - 8 && !(dest & 7);
}

static void store_dest(struct mseg__alloc_local *L, uint64_t dest, uint64_t v) {
        if (dest && dest_ok(L, dest))
                atomic_store_explicit((_Atomic uint64_t *) (L->base + dest), v, memory_order_release);
}

static void desc_init(struct mseg__alloc_local *L, uint32_t unit, uint32_t cls) {
        struct a_desc *d = a_desc_at(L, unit >> L->sb_shift);

        memset(d, 0, L->desc_size);
        d->nblocks = L->nblocks[cls];
        d->nfree = d->nblocks;
        d->unit = unit;
        atomic_store_explicit(&d->live, A_DESC_LIVE | cls, memory_order_release);
}

/* intent: free run [a, a+b) (b == 0: the wilderness at a) -> run [c, c+d)
 * of kind n (class x for SB), wild := y, *dest := offset of c. */
static void apply_alloc(struct mseg__alloc_local *L, const struct a_intent *it) {
        uint32_t a = it->a, b = it->b, c = it->c, d = it->d;

        if (b) {
                clear_head(L, a);
                clear_tail(L, a + b - 1);
        }
        if (c > a)
                set_run(L, a, c - a, A_RUN_FREE);
        set_run(L, c, d, (int) it->n);
        if (b && a + b > c + d)
                set_run(L, c + d, a + b - (c + d), A_RUN_FREE);
        if (it->n == A_RUN_SB)
                desc_init(L, c, (uint32_t) it->x);
        if (!b) {
                atomic_store_explicit(&P(L)->wild, (uint32_t) it->y, memory_order_release);
                if (it->y > P(L)->hwm)
                        P(L)->hwm = (uint32_t) it->y;
        }
        store_dest(L, it->dest, L->data_off + ((uint64_t) c << A_UNIT_SHIFT));
}

/* intent: run [c, c+d) of kind n freed; merged with its free neighbours
 * into [a, a+b); into the wilderness when y == a (wild := a). *dest := 0. */
static void apply_free(struct mseg__alloc_local *L, const struct a_intent *it) {
        uint32_t a = it->a, b = it->b, c = it->c, d = it->d;

        if (it->n == A_RUN_SB) {
                struct a_desc *dsc = a_desc_at(L, c >> L->sb_shift);
                atomic_store_explicit(&dsc->live, 0, memory_order_release);
        }
        clear_head(L, c);
        clear_tail(L, c + d - 1);
        if (a < c) {
                clear_tail(L, c - 1);
                clear_head(L, a);
        }
        if (a + b > c + d) {
                clear_head(L, c + d);
                clear_tail(L, a + b - 1);
        }
        if (it->y == a)
                atomic_store_explicit(&P(L)->wild, a, memory_order_release);
        else
                set_run(L, a, b, A_RUN_FREE);
        store_dest(L, it->dest, 0);
}

/* intent: LARGE run at c of length d becomes length n; the free run right
 * of it [a, a+b) (b == 0: none) is consumed or extended; afterwards the
 * free remainder is [x, x+y_len) with y_len in it->y >> 32, and the wild
 * is it->y & 0xffffffff. */
static void apply_resize(struct mseg__alloc_local *L, const struct a_intent *it) {
        uint32_t a = it->a, b = it->b, c = it->c, d = it->d, n = it->n;
        uint32_t rs = (uint32_t) it->x, rl = (uint32_t) (it->x >> 32);
        uint32_t wild = (uint32_t) it->y;

        clear_tail(L, c + d - 1);
        if (b) {
                clear_head(L, a);
                clear_tail(L, a + b - 1);
        }
        set_run(L, c, n, A_RUN_LARGE);
        if (rl)
                set_run(L, rs, rl, A_RUN_FREE);
        atomic_store_explicit(&P(L)->wild, wild, memory_order_release);
        if (wild > P(L)->hwm)
                P(L)->hwm = wild;
}

/* ---- repair ---- */

/* Walk the runs of [0, wild) and rebuild every derived field. */
static int rebuild(struct mseg__alloc_local *L) {
        struct a_pages *p = P(L);
        uint32_t wild = atomic_load_explicit(&p->wild, memory_order_relaxed);
        uint32_t u = 0;

        if (wild > L->data_units)
                return corrupt("wilderness beyond the data", wild);
        memset(p->bins, 0, sizeof(p->bins));
        memset(p->binmask, 0, sizeof(p->binmask));
        A_SET(p->free_units, 0);
        A_SET(p->nlarge, 0);
        p->nruns = 0;
        while (u < wild) {              /* each step advances by >= 1 unit */
                uint32_t len;
                if (!run_ok(L, u, wild, 0))
                        return corrupt("runs do not tile the used units", u);
                len = L->utab[u].len;
                if (L->utab[u].head == A_RUN_FREE)
                        bin_insert(L, u, len);
                else if (L->utab[u].head == A_RUN_LARGE)
                        A_ADD(p->nlarge, 1);
                p->nruns++;
                u += len;
        }
        if (p->hwm < wild)
                p->hwm = wild;
        return 0;
}

static bool intent_sane(struct mseg__alloc_local *L, const struct a_intent *it) {
        uint64_t n = L->data_units;

        if ((uint64_t) it->a + it->b > n || (uint64_t) it->c + it->d > n || it->d == 0)
                return false;
        switch ((uint32_t) it->op) {
        case A_OP_P_ALLOC:
                return it->n > A_RUN_FREE && it->n < A_RUN_KINDS && it->c >= it->a &&
                       (it->n != A_RUN_SB || it->x < A_NCLASSES) && it->y <= n &&
                       (it->b ? (uint64_t) it->c + it->d <= (uint64_t) it->a + it->b
                              : it->y == it->c + it->d);
        case A_OP_P_FREE:
                return it->n > A_RUN_FREE && it->n < A_RUN_KINDS && it->a <= it->c &&
                       (uint64_t) it->a + it->b >= (uint64_t) it->c + it->d && it->b;
        case A_OP_P_RESIZE:
                return it->n > 0 && (uint64_t) it->c + it->n <= n &&
                       (uint64_t) (uint32_t) it->x + (it->x >> 32) <= n && (uint32_t) it->y <= n;
        default:
                return false;
        }
}

static int repair(struct mseg__alloc_local *L) {
        struct a_pages *p = P(L);
        struct a_intent it = p->intent;         /* one read of untrusted bytes */
        int r;

        if (it.op != A_OP_NONE) {
                if (!intent_sane(L, &it))
                        return corrupt("unreadable intent record", it.c);
                if (it.op == A_OP_P_ALLOC)
                        apply_alloc(L, &it);
                else if (it.op == A_OP_P_FREE)
                        apply_free(L, &it);
                else
                        apply_resize(L, &it);
        }
        r = rebuild(L);
        if (r < 0)
                return r;
        atomic_store_explicit(&p->intent.op, A_OP_NONE, memory_order_release);
        return 0;
}

static int plock(struct mseg__alloc_local *L) {
        struct a_pages *p = P(L);
        int r = a_lock(L, &p->lock, A_LOCK_PAGES);

        if (r < 0)
                return r;
        if (r == 1 || atomic_load_explicit(&p->intent.op, memory_order_relaxed) != A_OP_NONE) {
                r = repair(L);
                if (r < 0) {
                        /* Leave the lock unrecoverable: the segment is
                         * poisoned rather than silently corrupt. */
                        atomic_fetch_or(&L->seg->hdr->state, MSEG_STATE_POISONED);
                        mseg__unlock(&p->lock);
                        return r;
                }
                mseg__lock_consistent(&p->lock);
        }
        return 0;
}

static void punlock(struct mseg__alloc_local *L) {
        mseg__unlock(&P(L)->lock);
}

static void intent_commit(struct mseg__alloc_local *L, const struct a_intent *it) {
        struct a_intent *dst = &P(L)->intent;

        dst->n = it->n;
        dst->a = it->a;
        dst->b = it->b;
        dst->c = it->c;
        dst->d = it->d;
        dst->x = it->x;
        dst->y = it->y;
        dst->dest = it->dest;
        atomic_store_explicit(&dst->op, atomic_load_explicit(&it->op, memory_order_relaxed),
                              memory_order_release);
}

static void intent_clear(struct mseg__alloc_local *L) {
        atomic_store_explicit(&P(L)->intent.op, A_OP_NONE, memory_order_release);
}

/* ---- public to the allocator ---- */

void mseg__pages_format(struct mseg__alloc_local *L, uint32_t frontier) {
        struct a_pages *p = P(L);

        (void) frontier;
        memset(p, 0, sizeof(*p));
        mseg__lock_init(&p->lock);
}

uint32_t mseg__pages_wild_offline(const struct a_root *root) {
        return atomic_load_explicit(&((struct a_root *) root)->pages.wild, memory_order_relaxed);
}

static inline uint32_t align_start(uint32_t u, uint32_t align, uint32_t phase) {
        uint32_t m = (u + phase) & (align - 1);
        return m ? u + (align - m) : u;
}

/* First fit over the bins, bounded. Returns the run head, or UINT32_MAX. */
static uint32_t find_fit(struct mseg__alloc_local *L, uint32_t n, uint32_t align, uint32_t phase,
                         uint32_t wild, uint32_t *ret_start, int *err) {
        struct a_pages *p = P(L);

        for (uint32_t b = bin_of(n); b < A_NBINS; b++) {
                uint32_t v, seen = 0;

                if (!(p->binmask[b >> 6] & (UINT64_C(1) << (b & 63)))) {
                        /* skip to the next non-empty bin */
                        uint64_t m = p->binmask[b >> 6] & ~((UINT64_C(2) << (b & 63)) - 1);
                        if (!m) {
                                b = (b | 63);
                                continue;
                        }
                        b = (b & ~63u) + (uint32_t) __builtin_ctzll(m);
                }
                v = p->bins[b];
                while (v && seen++ < BIN_SCAN) {
                        uint32_t u = v - 1, len, s;
                        if (!run_ok(L, u, wild, A_RUN_FREE)) {
                                *err = corrupt("bin holds a run that is not free", u);
                                return UINT32_MAX;
                        }
                        len = L->utab[u].len;
                        s = align_start(u, align, phase);
                        if (s >= u && (uint64_t) s + n <= (uint64_t) u + len) {
                                *ret_start = s;
                                return u;
                        }
                        v = L->utab[u].next;
                }
        }
        return UINT32_MAX;
}

int mseg__pages_alloc(struct mseg__alloc_local *L, uint32_t n, uint32_t align, uint32_t phase,
                      int kind, uint32_t cls, uint64_t *record, uint64_t dest, uint32_t *ret_unit) {
        struct a_pages *p = P(L);
        struct a_intent it = { 0 };
        uint32_t wild, frontier, u, s;
        int err = 0, r;

        if (n == 0 || n > L->data_units)
                return -ENOMEM;
        r = plock(L);
        if (r < 0)
                return r;
        wild = atomic_load_explicit(&p->wild, memory_order_relaxed);
        frontier = a_frontier(L);
        if (wild > L->data_units) {
                r = corrupt("wilderness beyond the data", wild);
                goto out;
        }
        u = find_fit(L, n, align, phase, wild, &s, &err);
        if (err) {
                r = err;
                goto out;
        }
        if (u != UINT32_MAX) {
                it.a = u;
                it.b = L->utab[u].len;
                r = bin_remove(L, u, wild);
                if (r < 0)
                        goto out;
        } else {
                s = align_start(wild, align, phase);
                if (s < wild || (uint64_t) s + n > frontier) {
                        r = -ENOMEM;
                        goto out;
                }
                it.a = wild;
                it.b = 0;
                it.y = s + n;
        }
        it.op = A_OP_P_ALLOC;
        it.c = s;
        it.d = n;
        it.n = (uint32_t) kind;
        it.x = cls;
        it.dest = dest;
        intent_commit(L, &it);
        MSEG_TEST_HOOK("pages.alloc");
        apply_alloc(L, &it);
        if (record)
                *record = L->data_off + ((uint64_t) s << A_UNIT_SHIFT);
        /* derived fields */
        if (s > it.a)
                bin_insert(L, it.a, s - it.a);
        if (it.b && it.a + it.b > s + n)
                bin_insert(L, s + n, it.a + it.b - (s + n));
        p->nruns += 1 + (s > it.a) + (it.b && it.a + it.b > s + n) - (it.b != 0);
        if (kind == A_RUN_LARGE)
                A_ADD(p->nlarge, 1);
        intent_clear(L);
        *ret_unit = s;
        r = 0;
out:
        punlock(L);
        return r;
}

static int pages_free(struct mseg__alloc_local *L, uint32_t unit, int kind, uint64_t dest, bool expect) {
        struct a_pages *p = P(L);
        struct a_intent it = { 0 };
        uint32_t wild, len, a, b;
        int r;

        r = plock(L);
        if (r < 0)
                return r;
        /* The repair plock ran may have finished an interrupted free from
         * the same record: then it holds 0 now, and the run may be anyone's. */
        if (expect && (!dest_ok(L, dest) ||
                       atomic_load_explicit((_Atomic uint64_t *) (L->base + dest), memory_order_acquire) !=
                               L->data_off + ((uint64_t) unit << A_UNIT_SHIFT))) {
                r = -ESTALE;
                goto out;
        }
        wild = atomic_load_explicit(&p->wild, memory_order_relaxed);
        if (wild > L->data_units) {
                r = corrupt("wilderness beyond the data", wild);
                goto out;
        }
        if (!run_ok(L, unit, wild, kind)) {
                r = mseg__error(-EINVAL, "not the start of an allocated run (unit %u)", unit);
                goto out;
        }
        len = L->utab[unit].len;
        a = unit;
        b = len;
        /* left neighbour: its tail sits just below us */
        if (unit > 0 && L->utab[unit - 1].tail == A_RUN_FREE) {
                uint32_t ll = L->utab[unit - 1].len;
                if (ll == 0 || ll > unit || !run_ok(L, unit - ll, wild, A_RUN_FREE)) {
                        r = corrupt("bad left neighbour", unit);
                        goto out;
                }
                r = bin_remove(L, unit - ll, wild);
                if (r < 0)
                        goto out;
                a = unit - ll;
                b += ll;
                p->nruns--;
        }
        if (unit + len < wild && L->utab[unit + len].head == A_RUN_FREE) {
                if (!run_ok(L, unit + len, wild, A_RUN_FREE)) {
                        r = corrupt("bad right neighbour", unit + len);
                        goto out;
                }
                r = bin_remove(L, unit + len, wild);
                if (r < 0)
                        goto out;
                b += L->utab[unit + len].len;
                p->nruns--;
        }
        it.op = A_OP_P_FREE;
        it.a = a;
        it.b = b;
        it.c = unit;
        it.d = len;
        it.n = (uint32_t) kind;
        it.y = (a + b == wild) ? a : UINT32_MAX;
        it.dest = dest;
        intent_commit(L, &it);
        MSEG_TEST_HOOK("pages.free");
        apply_free(L, &it);
        if (it.y != a)
                bin_insert(L, a, b);
        else
                p->nruns--;
        if (kind == A_RUN_LARGE && p->nlarge)
                A_SUB(p->nlarge, 1);
        intent_clear(L);
        r = 0;
out:
        punlock(L);
        return r;
}

int mseg__pages_free(struct mseg__alloc_local *L, uint32_t unit, int kind, uint64_t dest) {
        return pages_free(L, unit, kind, dest, false);
}

int mseg__pages_free_from(struct mseg__alloc_local *L, uint32_t unit, int kind, uint64_t dest) {
        return pages_free(L, unit, kind, dest, true);
}

int mseg__pages_resize(struct mseg__alloc_local *L, uint32_t unit, uint32_t min, uint32_t n,
                       uint32_t *ret_len) {
        struct a_pages *p = P(L);
        struct a_intent it = { 0 };
        uint32_t wild, frontier, len, right, rlen = 0, avail, newlen, rs = 0, rl = 0, newwild;
        bool rfree = false;
        int r;

        r = plock(L);
        if (r < 0)
                return r;
        wild = atomic_load_explicit(&p->wild, memory_order_relaxed);
        frontier = a_frontier(L);
        if (wild > L->data_units) {
                r = corrupt("wilderness beyond the data", wild);
                goto out;
        }
        if (!run_ok(L, unit, wild, A_RUN_LARGE)) {
                r = mseg__error(-EINVAL, "not a large block (unit %u)", unit);
                goto out;
        }
        len = L->utab[unit].len;
        right = unit + len;
        if (right < wild && L->utab[right].head == A_RUN_FREE) {
                if (!run_ok(L, right, wild, A_RUN_FREE)) {
                        r = corrupt("bad right neighbour", right);
                        goto out;
                }
                rfree = true;
                rlen = L->utab[right].len;
        }
        /* units available right of us: a free run, the wilderness, or both
         * when the free run reaches the wilderness (it never does: a run
         * freed next to the wilderness sinks into it). */
        if (right == wild)
                avail = frontier > wild ? frontier - wild : 0;
        else
                avail = rlen;
        if (n > len) {
                newlen = (uint64_t) n - len > avail ? len + avail : n;
                if (newlen < min) {
                        r = -ENOMEM;
                        goto out;
                }
        } else {
                newlen = n < min ? min : n;
                if (newlen == 0)
                        newlen = 1;
        }
        if (newlen == len) {
                *ret_len = len;
                r = 0;
                goto out;
        }
        /* final state */
        newwild = wild;
        if (newlen > len) {
                if (right == wild)
                        newwild = unit + newlen;
                else if (newlen < len + rlen) {
                        rs = unit + newlen;
                        rl = len + rlen - newlen;
                }
        } else {
                uint32_t freed_end = rfree ? right + rlen : right;
                if (freed_end == wild)
                        newwild = unit + newlen;
                else {
                        rs = unit + newlen;
                        rl = freed_end - rs;
                }
        }
        if (rfree) {
                r = bin_remove(L, right, wild);
                if (r < 0)
                        goto out;
        }
        it.op = A_OP_P_RESIZE;
        it.a = rfree ? right : 0;
        it.b = rfree ? rlen : 0;
        it.c = unit;
        it.d = len;
        it.n = newlen;
        it.x = (uint64_t) rs | ((uint64_t) rl << 32);
        it.y = newwild;
        intent_commit(L, &it);
        MSEG_TEST_HOOK("pages.resize");
        apply_resize(L, &it);
        if (rl)
                bin_insert(L, rs, rl);
        p->nruns += (rl != 0) - rfree;
        intent_clear(L);
        *ret_len = newlen;
        r = 0;
out:
        punlock(L);
        return r;
}

uint32_t mseg__pages_large_len(struct mseg__alloc_local *L, uint32_t unit) {
        uint32_t wild = atomic_load_explicit(&P(L)->wild, memory_order_acquire);

        if (wild > L->data_units)
                return 0;
        if (!run_ok(L, unit, wild, A_RUN_LARGE))
                return 0;
        return L->utab[unit].len;
}

int mseg__pages_hold(struct mseg__alloc_local *L) {
        return plock(L);
}

void mseg__pages_release(struct mseg__alloc_local *L) {
        punlock(L);
}

int mseg__pages_settle(struct mseg__alloc_local *L) {
        int r = plock(L);

        if (r < 0)
                return r;
        punlock(L);
        return 0;
}

bool mseg__pages_is_run(struct mseg__alloc_local *L, uint32_t unit, int kind) {
        uint32_t wild = atomic_load_explicit(&P(L)->wild, memory_order_acquire);

        return wild <= L->data_units && run_ok(L, unit, wild, kind);
}

void mseg__pages_stats(struct mseg__alloc_local *L, uint64_t *free_units, uint64_t *nlarge) {
        struct a_pages *p = P(L);
        uint32_t wild = atomic_load_explicit(&p->wild, memory_order_acquire);
        uint32_t frontier = a_frontier(L);
        uint64_t f = __atomic_load_n(&p->free_units, __ATOMIC_RELAXED);

        if (f > L->data_units)
                f = L->data_units;
        *free_units = f + (frontier > wild ? frontier - wild : 0);
        *nlarge = __atomic_load_n(&p->nlarge, __ATOMIC_RELAXED);
}

int mseg__pages_grow(struct mseg__alloc_local *L, uint64_t new_usable) {
        mseg_header *h = L->seg->hdr;
        uint64_t cur;
        int r;

        if (new_usable > h->size)
                return mseg__error(-EINVAL, "usable size beyond the segment");
        r = plock(L);
        if (r < 0)
                return r;
        cur = atomic_load_explicit(&h->usable, memory_order_acquire);
        /* Units past the old frontier were never written (the wilderness is
         * tagless and descriptors are only made live under this lock), so
         * publishing the new size is all there is to do. */
        if (new_usable > cur)
                atomic_store_explicit(&h->usable, new_usable, memory_order_release);
        MSEG_TEST_HOOK("pages.grow");
        punlock(L);
        return 0;
}

/* The deep check: the runs tile [0, wild), every free run is in the right
 * bin exactly once, counters match, SB runs and live descriptors agree. */
int mseg__pages_check(struct mseg__alloc_local *L, bool locked) {
        struct a_pages *p = P(L);
        uint32_t wild, u = 0;
        uint64_t nfree_runs = 0, free_units = 0, nlarge = 0, nruns = 0, binned = 0;
        int r = 0;

        if (locked) {
                r = plock(L);
                if (r < 0)
                        return r;
        }
        wild = atomic_load_explicit(&p->wild, memory_order_acquire);
        if (wild > L->data_units) {
                r = corrupt("wilderness beyond the data", wild);
                goto out;
        }
        if (locked && atomic_load_explicit(&p->intent.op, memory_order_relaxed) != A_OP_NONE) {
                r = corrupt("intent record left set", 0);
                goto out;
        }
        while (u < wild) {
                uint32_t len;
                int kind;
                if (!run_ok(L, u, wild, 0)) {
                        r = corrupt("runs do not tile the used units", u);
                        goto out;
                }
                len = L->utab[u].len;
                kind = L->utab[u].head;
                for (uint32_t i = u + 1; i + 1 < u + len; i++) {
                        if (L->utab[i].head || L->utab[i].tail) {
                                r = corrupt("stray boundary tag inside a run", i);
                                goto out;
                        }
                }
                if (kind == A_RUN_FREE) {
                        nfree_runs++;
                        free_units += len;
                        if (u + len == wild) {
                                r = corrupt("free run not merged into the wilderness", u);
                                goto out;
                        }
                } else if (kind == A_RUN_LARGE) {
                        nlarge++;
                }
                /* superblock positions */
                for (uint32_t di = u >> L->sb_shift; di <= (u + len - 1) >> L->sb_shift && di < L->ndesc; di++) {
                        struct a_desc *d = a_desc_at(L, di);
                        uint32_t live = atomic_load_explicit(&d->live, memory_order_relaxed);
                        bool is_sb = kind == A_RUN_SB;
                        if (is_sb && (len != L->sb_units || (u & (L->sb_units - 1)))) {
                                r = corrupt("misplaced superblock", u);
                                goto out;
                        }
                        if (is_sb != (live != 0)) {
                                r = corrupt(is_sb ? "superblock without a live descriptor"
                                                  : "live descriptor outside a superblock", u);
                                goto out;
                        }
                        if (live && ((live & 0xffff0000u) != A_DESC_LIVE || (live & 0xffff) >= A_NCLASSES ||
                                     d->unit != u)) {
                                r = corrupt("bad superblock descriptor", u);
                                goto out;
                        }
                }
                nruns++;
                u += len;
        }
        if (!locked)
                goto out;
        for (uint32_t b = 0; b < A_NBINS; b++) {
                uint32_t v = p->bins[b], prev = 0;
                bool bit = p->binmask[b >> 6] & (UINT64_C(1) << (b & 63));
                if (bit != (v != 0)) {
                        r = corrupt("bin mask disagrees with the bins", b);
                        goto out;
                }
                while (v) {
                        uint32_t x = v - 1;
                        if (++binned > nfree_runs) {
                                r = corrupt("bins hold more runs than exist (a cycle?)", x);
                                goto out;
                        }
                        if (!run_ok(L, x, wild, A_RUN_FREE) || bin_of(L->utab[x].len) != b) {
                                r = corrupt("bin holds a wrong run", x);
                                goto out;
                        }
                        if (L->utab[x].prev != prev) {
                                r = corrupt("free-run back link", x);
                                goto out;
                        }
                        prev = v;
                        v = L->utab[x].next;
                }
        }
        if (binned != nfree_runs) {
                r = corrupt("a free run is missing from the bins", 0);
                goto out;
        }
        if (free_units != p->free_units || nlarge != p->nlarge || nruns != p->nruns) {
                r = corrupt("page counters disagree with the runs", 0);
                goto out;
        }
out:
        if (locked)
                punlock(L);
        return r;
}

int mseg__pages_zero_free(struct mseg__alloc_local *L, bool zero_untouched) {
        struct a_pages *p = P(L);
        uint32_t wild, u = 0, end;
        int r = plock(L);

        if (r < 0)
                return r;
        wild = atomic_load_explicit(&p->wild, memory_order_relaxed);
        if (wild > L->data_units) {
                r = corrupt("wilderness beyond the data", wild);
                goto out;
        }
        while (u < wild) {
                uint32_t len;
                if (!run_ok(L, u, wild, 0)) {
                        r = corrupt("runs do not tile the used units", u);
                        goto out;
                }
                len = L->utab[u].len;
                if (L->utab[u].head == A_RUN_FREE)
                        a_zero(L, L->base + L->data_off + ((uint64_t) u << A_UNIT_SHIFT),
                               (uint64_t) len << A_UNIT_SHIFT);
                u += len;
        }
        end = zero_untouched ? a_frontier(L) : p->hwm;
        if (end > L->data_units)
                end = L->data_units;
        if (end > wild)
                a_zero(L, L->base + L->data_off + ((uint64_t) wild << A_UNIT_SHIFT),
                       (uint64_t) (end - wild) << A_UNIT_SHIFT);
out:
        punlock(L);
        return r;
}
