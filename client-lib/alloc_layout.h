/* SPDX-License-Identifier: MIT */
/*
 * alloc_layout.h — the allocator's bytes inside a segment, and what its three
 * source files (pages.c, alloc.c, slot.c) share. Nothing outside them
 * includes this header.
 *
 * The allocator region [hdr->alloc_off, hdr->size) reads, in order:
 *
 *   root        struct a_root, A_ROOT_UNITS units: geometry (a pure function
 *               of size and alloc_off, so attach recomputes and compares it),
 *               the page layer's lock and bins, one pool per size class.
 *   data        data_units units of 4 KiB. Units [0, wild) are tiled by runs;
 *               units [wild, frontier) are the "wilderness", implicitly free
 *               and never touched; the frontier follows hdr->usable.
 *   descs       one descriptor per superblock position (sb_units units),
 *               indexed by unit >> sb_shift: class, counts, and a bitmap with
 *               one bit per block (set = allocated or cached in a magazine).
 *   units       one struct a_unit per data unit: boundary tags at both ends
 *               of every run, bin links at the head of every free run.
 *
 * The tables sit at the end so an offline resize (heap grow, file grow and
 * shrink_to_fit) only moves them, never the data. They are sized for
 * hdr->size but only the entries of units below the frontier are ever
 * written, so a brokered segment reserving 64 GiB costs pages only where
 * used.
 *
 * Every struct here is ABI (MSEG_LAYOUT_VERSION): fixed-width fields only,
 * offsets and unit or descriptor indices (index + 1, 0 = none) instead of
 * pointers, static_asserts on sizes.
 */
#ifndef MSEG_ALLOC_LAYOUT_H
#define MSEG_ALLOC_LAYOUT_H

#include <string.h>

#include "internal.h"

#define A_UNIT_SHIFT    12
#define A_UNIT          (UINT64_C(1) << A_UNIT_SHIFT)
#define A_NCLASSES      32
#define A_MAX_SMALL     8192u           /* largest size class */
#define A_ROOT_UNITS    2u
#define A_NBINS         160u            /* free-run bins (see pages.c bin_of) */
#define A_ROOT_MAGIC    UINT32_C(0x414c4f43)    /* "ALOC" */
#define A_HEAP_MAGIC    UINT32_C(0x48454150)    /* "HEAP" */
#define A_DESC_LIVE     UINT32_C(0x53420000)    /* desc.live = A_DESC_LIVE | class */
#define A_DESC_HDR      64u             /* descriptor bytes before its bitmap */
#define A_HEAP_HDR      320u            /* magazine record bytes before its entries */

/* Run kinds (struct a_unit head / tail). */
enum {
        A_RUN_NONE = 0,
        A_RUN_FREE = 1,
        A_RUN_LARGE = 2,        /* one user block */
        A_RUN_SB = 3,           /* a superblock of small blocks */
        A_RUN_META = 4,         /* a magazine record (struct a_heap) */
        A_RUN_KINDS = 5,
};

/* One per data unit, 16 bytes. A run [u, u+len) has head = kind at u and
 * tail = kind at u+len-1 (the same entry when len == 1), len in both; every
 * other entry is all zero, so a pointer into the middle of a run finds no
 * head. next/prev link the heads of free runs in their bin (unit + 1). */
struct a_unit {
        uint8_t head;
        uint8_t tail;
        uint16_t pad;
        uint32_t len;
        uint32_t next;
        uint32_t prev;
};
static_assert(sizeof(struct a_unit) == 16, "in-segment layout is ABI");

/* Superblock descriptor: A_DESC_HDR bytes, then the bitmap (sb_bytes / 16
 * bits, whatever the class). Authoritative: live and the bitmap; derived
 * (rebuilt by a repair from the bitmaps): nfree, the list links, flags. */
struct a_desc {
        _Atomic uint32_t live;          /* A_DESC_LIVE | class, or 0 */
        uint32_t nblocks;
        uint32_t nfree;
        uint32_t listed;                /* on its class's list */
        uint32_t next;                  /* list of superblocks with free blocks (desc + 1) */
        uint32_t prev;
        uint32_t unit;                  /* first unit (== index << sb_shift) */
        uint32_t hint;                  /* first bitmap word that may have a clear bit */
        uint32_t owner;                 /* slot + 1 whose refills draw from it (advisory) */
        uint32_t pad;
        uint64_t reserved[3];
        uint64_t bits[];
};
static_assert(sizeof(struct a_desc) == A_DESC_HDR, "in-segment layout is ABI");

/* An intent record: written before a critical section mutates anything it
 * cannot rebuild, cleared after; the next owner of the lock after a crash
 * replays it (pages.c and alloc.c say how for each op). */
struct a_intent {
        _Atomic uint32_t op;
        uint32_t n;
        uint32_t a, b, c, d;
        uint64_t x, y, dest;
};
static_assert(sizeof(struct a_intent) == 48, "in-segment layout is ABI");

/* One per size class: the class lock and the list of superblocks that have
 * free blocks. Derived counts are rebuilt after a crash. 192 bytes. */
struct a_pool {
        mseg_lock lock;
        uint32_t head;                  /* desc + 1 */
        uint32_t tail;
        uint32_t nsb;                   /* superblocks of the class */
        uint32_t nempty;                /* of which entirely free */
        uint64_t used;                  /* bits set over all its superblocks */
        uint64_t pad0[5];
        struct a_intent intent;
        uint64_t pad1[2];
};
static_assert(sizeof(struct a_pool) == 192, "in-segment layout is ABI");

/* The page layer: one lock over the unit table, the bins and the wilderness. */
struct a_pages {
        mseg_lock lock;
        struct a_intent intent;
        _Atomic uint32_t wild;          /* first unit of the wilderness */
        uint32_t hwm;                   /* highest wild ever (units above were never handed out) */
        uint64_t free_units;            /* in bins (derived) */
        uint64_t nlarge;                /* LARGE runs (derived) */
        uint64_t nruns;                 /* runs in [0, wild) (derived) */
        uint64_t binmask[3];
        uint32_t bins[A_NBINS];         /* head unit + 1 */
};

struct a_root {
        uint32_t magic;
        uint32_t version;
        /* geometry: recomputed from (size, alloc_off) at attach and compared */
        uint64_t size;
        uint64_t data_off;
        uint64_t desc_off;
        uint64_t utab_off;
        uint32_t data_units;
        uint32_t sb_units;
        uint32_t sb_shift;
        uint32_t desc_size;
        uint32_t ndesc;
        uint32_t mag_max;               /* magazine capacity of the smallest classes, 0 = none */
        uint32_t heap_units;            /* size of a magazine record in units */
        uint32_t pad0;
        uint64_t reserved[4];
        mseg_lock slot_lock;            /* slot claim, release and reclaim */
        uint64_t slot_reclaims;         /* dead slots reclaimed (statistics) */
        uint64_t pad1[7];
        struct a_pages pages;
        uint64_t pad2[4];
        struct a_pool pools[A_NCLASSES];
};
static_assert(sizeof(struct a_root) <= A_ROOT_UNITS * 4096, "root fits its units");

/* A magazine record, one per claimed slot that caches: per class a count
 * and an array of block offsets (capacities from geometry). Written only by
 * the slot's owning thread, and by lock holders on its behalf. */
struct a_heap {
        uint32_t magic;
        uint32_t slot;
        uint64_t gen;
        uint64_t reserved[6];
        uint32_t count[A_NCLASSES];
        uint32_t pref[A_NCLASSES];      /* superblock (desc + 1) refills draw from first */
        /* uint64_t ent[] at A_HEAP_HDR */
};
static_assert(sizeof(struct a_heap) == A_HEAP_HDR, "in-segment layout is ABI");

/* Slot fields the allocator uses in mseg_slot.reserved[]. */
#define A_SLOT_INTO_DEST 0      /* mseg_alloc_into in flight: destination offset */
#define A_SLOT_INTO_BLOCK 1     /* ... and the block being linked */
#define A_SLOT_PIDNS 2          /* owner's pid namespace inode (liveness is judged only within it) */

/* Intent ops. */
enum {
        A_OP_NONE = 0,
        /* class pools */
        A_OP_REFILL = 1,        /* heap x, class a: ent[b .. b+n) taken, count := b+n */
        A_OP_FLUSH = 2,         /* heap x, class a: ent[b .. b+n) returned, count := b */
        A_OP_ALLOC_INTO = 3,    /* block x set, *dest := x */
        A_OP_FREE_FROM = 4,     /* *dest named block x: *dest := 0, then x cleared (mseg__free_from) */
        /* page layer */
        A_OP_P_ALLOC = 16,      /* free run [a, a+b) (or wilderness at a) -> run [c, c+d) of kind n;
                                   y = new wild; dest/x: *dest := unit offset (alloc_into, record) */
        A_OP_P_FREE = 17,       /* run [c, c+d) freed -> free run [a, a+b), y = new wild */
        A_OP_P_RESIZE = 18,     /* LARGE run at c: length d -> length n (expand or shrink) */
};

/* ---- private state of one handle (struct mseg__alloc_local) ---- */

struct mseg__alloc_local {
        struct mseg *seg;
        uint8_t *base;
        struct a_root *root;
        struct a_unit *utab;
        uint8_t *descs;
        uint64_t uid;
        uint64_t data_off;              /* of unit 0 */
        uint64_t data_end;              /* data_off + data_units * 4096 */
        uint32_t data_units;
        uint32_t sb_units, sb_shift, desc_size, ndesc;
        uint32_t bitwords;              /* bitmap words per descriptor */
        uint32_t heap_units;
        bool writable;
        bool poison;                    /* ASan poisoning allowed (private kinds) */
        bool caches;                    /* magazines enabled */
        uint64_t cookie;                /* first word of a block freed into a magazine: off ^ cookie */
        _Atomic uint64_t stuck;         /* locks that timed out here (bit: class, 32 pages, 33 slots) */
        uint32_t nblocks[A_NCLASSES];
        uint32_t cap[A_NCLASSES];       /* magazine capacity per class */
        uint32_t start[A_NCLASSES];     /* first entry of each class's magazine */
        /* slots this process owns through this handle (slot.c) */
        uint64_t slots_off;
        uint32_t nslots;
        pthread_mutex_t mu;
        uint32_t *owned;                /* slot indices */
        uint8_t *busy;                  /* owned[i] is in a thread's cache */
        uint32_t nowned, owned_cap;
        struct mseg__alloc_local *next; /* all live handles (slot.c registry) */
};

/* Shared counters and magazine fields: written by one owner (a lock
 * holder, or a magazine's thread) and read as snapshots by anyone. Relaxed
 * atomics cost nothing on x86 and keep such reads well-defined. */
#define A_GET(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define A_SET(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define A_ADD(x, v) A_SET(x, A_GET(x) + (v))
#define A_SUB(x, v) A_SET(x, A_GET(x) - (v))

/* ---- AddressSanitizer: blocks of heap segments are poisoned while free ----
 * Only with -Dexpensive_checks=true: a segment's bytes are legitimately
 * read whole (copied to a file or socket, attached elsewhere), free blocks
 * included, and ASan would report every such copy. Only heap segments:
 * any other memory may be shared with processes whose frees this process's
 * shadow memory never sees. A small block in a magazine keeps its first
 * word (the double-free cookie) readable. */

#if defined(__SANITIZE_ADDRESS__) && defined(MSEG_EXPENSIVE_CHECKS)
#include <sanitizer/asan_interface.h>
#define A_ASAN 1
#else
#define A_ASAN 0
#endif

static inline void a_poison(const struct mseg__alloc_local *L, void *p, uint64_t n) {
#if A_ASAN
        if (L->poison)
                ASAN_POISON_MEMORY_REGION(p, n);
#else
        (void) L; (void) p; (void) n;
#endif
}

static inline void a_unpoison(const struct mseg__alloc_local *L, void *p, uint64_t n) {
#if A_ASAN
        if (L->poison)
                ASAN_UNPOISON_MEMORY_REGION(p, n);
#else
        (void) L; (void) p; (void) n;
#endif
}

/* memset of free memory, which may be poisoned */
static inline void a_zero(const struct mseg__alloc_local *L, void *p, uint64_t n) {
        a_unpoison(L, p, n);
        memset(p, 0, n);
        a_poison(L, p, n);
}

/* Take a segment lock of this allocator (@id: its bit in L->stuck). Once a
 * lock timed out in this handle (a live process holds it forever, or its
 * bytes were scribbled on), later attempts only try it, so a wedged segment
 * costs one timeout, not one per call. Returns as mseg__lock(). */
static inline int a_lock(struct mseg__alloc_local *L, mseg_lock *l, unsigned id) {
        uint64_t bit = UINT64_C(1) << id;
        int r;

        if (atomic_load_explicit(&L->stuck, memory_order_relaxed) & bit) {
                r = mseg__trylock(l);
                if (r == -EBUSY)
                        return mseg__error(-ETIMEDOUT, "segment lock still held (it timed out before)");
        } else {
                r = mseg__lock(l);
        }
        if (r == -ETIMEDOUT)
                atomic_fetch_or_explicit(&L->stuck, bit, memory_order_relaxed);
        else if (r >= 0 && (atomic_load_explicit(&L->stuck, memory_order_relaxed) & bit))
                atomic_fetch_and_explicit(&L->stuck, ~bit, memory_order_relaxed);
        return r;
}
#define A_LOCK_PAGES 32u
#define A_LOCK_SLOTS 33u

/* ---- size classes (alloc.c) ---- */

extern const uint32_t mseg__class_size[A_NCLASSES];
int mseg__class_of(uint64_t size);      /* -1 when > A_MAX_SMALL */
uint32_t mseg__mag_cap(uint32_t cls, uint32_t mag_max);

/* ---- geometry (alloc.c) ---- */

/* A pure function of (size, alloc_off, sb_units, mag_max): attach
 * recomputes it and compares. sb_units and mag_max are chosen at format
 * (a_format_params) and kept by offline resizes. */
struct a_geom {
        uint64_t data_off, desc_off, utab_off;
        uint32_t data_units, sb_units, sb_shift, desc_size, ndesc, mag_max, heap_units;
};
int mseg__alloc_geometry(uint64_t size, uint64_t alloc_off, uint32_t sb_units, uint32_t mag_max,
                         struct a_geom *g);

static inline struct a_desc *a_desc_at(const struct mseg__alloc_local *L, uint32_t i) {
        return (struct a_desc *) (L->descs + (uint64_t) i * L->desc_size);
}

/* Frontier in units: the wilderness ends here (hdr->usable, untrusted). */
static inline uint32_t a_frontier(const struct mseg__alloc_local *L) {
        uint64_t u = atomic_load_explicit(&L->seg->hdr->usable, memory_order_acquire);
        if (u > L->data_end)
                u = L->data_end;
        if (u < L->data_off)
                return 0;
        return (uint32_t) ((u - L->data_off) >> A_UNIT_SHIFT);
}

/* ---- page layer (pages.c); all take and release the page lock ---- */

void mseg__pages_format(struct mseg__alloc_local *L, uint32_t frontier);
/* Allocate a run of @n units whose first unit u satisfies
 * (u + phase) % align == 0 (align a power of two, in units). SB runs also
 * initialise descriptor u >> sb_shift for class @cls. @record, if set, gets
 * the run's byte offset inside the critical section (crash-consistent with
 * the allocation); @dest, if non-zero, is a segment offset where the offset
 * is stored too (mseg_alloc_into). Returns 0 and *ret_unit, -ENOMEM,
 * MSEG_E_CORRUPT or a lock error. */
int mseg__pages_alloc(struct mseg__alloc_local *L, uint32_t n, uint32_t align, uint32_t phase,
                      int kind, uint32_t cls, uint64_t *record, uint64_t dest, uint32_t *ret_unit);
/* Free the run at @unit, which must be of @kind (SB: its descriptor is
 * cleared). @dest, if non-zero, is a segment offset zeroed inside the
 * critical section (the record that pointed at the run). */
int mseg__pages_free(struct mseg__alloc_local *L, uint32_t unit, int kind, uint64_t dest);
/* The same, but only while *dest still holds the run's offset (checked under
 * the page lock): -ESTALE, and nothing done, once it does not. */
int mseg__pages_free_from(struct mseg__alloc_local *L, uint32_t unit, int kind, uint64_t dest);
/* Grow (in place, from the free run or wilderness after it) or shrink a
 * LARGE run to @n units. -ENOMEM when it cannot grow to @min units. */
int mseg__pages_resize(struct mseg__alloc_local *L, uint32_t unit, uint32_t min, uint32_t n,
                       uint32_t *ret_len);
/* Length of the LARGE run starting at @unit, 0 if there is none (no lock). */
uint32_t mseg__pages_large_len(struct mseg__alloc_local *L, uint32_t unit);
/* Take and release the page lock: replays an interrupted page operation. */
int mseg__pages_settle(struct mseg__alloc_local *L);
/* Take and keep the page lock (repairing as plock does), and give it back:
 * msegd's copies of a segment (restore.c) run while the page layer holds
 * still, so a copy's runs, wilderness and superblock descriptors agree. */
int mseg__pages_hold(struct mseg__alloc_local *L);
void mseg__pages_release(struct mseg__alloc_local *L);
bool mseg__pages_is_run(struct mseg__alloc_local *L, uint32_t unit, int kind);
/* Snapshot figures: free units (bins + wilderness to the frontier), LARGE runs. */
void mseg__pages_stats(struct mseg__alloc_local *L, uint64_t *free_units, uint64_t *nlarge);
int mseg__pages_check(struct mseg__alloc_local *L, bool locked);
int mseg__pages_zero_free(struct mseg__alloc_local *L, bool zero_untouched);
/* Raise the frontier (online growth of brokered segments). */
int mseg__pages_grow(struct mseg__alloc_local *L, uint64_t new_usable);
/* Offline (no lock, nobody attached): the highest unit in use + 1. */
uint32_t mseg__pages_wild_offline(const struct a_root *root);

/* ---- pools and magazines (alloc.c), for slot.c ---- */

/* Return every block of @heap's magazines to the pools (validated; entries
 * that are not cached blocks are dropped) and settle an interrupted
 * mseg_alloc_into recorded in @slot. */
int mseg__heap_flush_all(struct mseg__alloc_local *L, struct a_heap *heap, mseg_slot *slot);
struct a_heap *mseg__heap_at(struct mseg__alloc_local *L, uint64_t heap_off);
void mseg__heap_init(struct mseg__alloc_local *L, struct a_heap *heap, uint32_t slot, uint64_t gen);

/* ---- slots (slot.c), for alloc.c ---- */

/* The calling thread's caches, most recently used first: which magazine
 * record it uses in which handle (heap NULL: this thread has no cache
 * there and takes the locked paths). Initial-exec TLS: one load, no call. */
struct a_tc {
        uint64_t uid;                   /* seg->uid; 0 = empty */
        struct a_heap *heap;
        uint64_t *ent;                  /* first magazine entry */
        mseg_slot *slot;
};
#define A_TC_N 4
extern __thread struct a_tc mseg__tc[A_TC_N] __attribute__((tls_model("initial-exec")));

/* The calling thread's magazine record in @seg, claiming a slot on first
 * use; NULL when no slot or no caches (callers take the locked path).
 * *ret_slot gets the slot (NULL too when none). */
struct a_heap *mseg__slot_heap(struct mseg__alloc_local *L, mseg_slot **ret_slot);
mseg_slot *mseg__slot_at(struct mseg__alloc_local *L, uint32_t i);
void mseg__slots_detach(struct mseg__alloc_local *L);
void mseg__slots_register(struct mseg__alloc_local *L);
/* Sum of magazine counts per class over every live slot (racy snapshot). */
void mseg__slots_cached(struct mseg__alloc_local *L, uint64_t cached[A_NCLASSES]);
/* Flush the calling thread's own magazines (before reporting ENOMEM). */
void mseg__slot_flush_own(struct mseg__alloc_local *L);
/* mseg_check's part: slot states, magazine records and their contents. */
int mseg__slots_check(struct mseg__alloc_local *L);
/* Validate one magazine record's entries (alloc.c); @dups: also look for a
 * block cached twice (only meaningful when the owner holds still). */
int mseg__alloc_check_heap(struct mseg__alloc_local *L, struct a_heap *h, bool dups);

#endif /* MSEG_ALLOC_LAYOUT_H */
