/* SPDX-License-Identifier: MIT */
/*
 * alloc.c — the allocator inside a segment: size classes, superblocks,
 * per-thread magazines, and the public allocation API.
 *
 * Shape (allocator-design.md, shape C). Blocks up to 8 KiB come from 32
 * size classes (16-byte steps to 128, then four per doubling). A class owns
 * superblocks of sb_units units (64 KiB; 16 KiB in segments under 4 MiB and
 * 4 KiB under 1 MiB, where a class bigger than half a superblock is served
 * as a run) taken from the page layer (pages.c); each has an out-of-line
 * descriptor holding one bit per block. A set bit means "held by a client or
 * cached in exactly one magazine"; there is no block header and no link in
 * a free block, so a use-after-free write cannot corrupt the allocator.
 * Larger blocks, and alignments above 4 KiB, are runs of the page layer.
 * Small alignments come from the classes: a size rounded up to a multiple
 * of the alignment falls in a class whose size is a multiple of it too.
 *
 * Each allocating thread owns a magazine record in the segment (through an
 * attachment slot, slot.c): per class an array of cached block offsets. A
 * small allocation pops its magazine and a free pushes it, with no atomic
 * instruction and no lock; only when a magazine is empty (refill) or full
 * (flush) does the thread take its class's robust lock, and then it moves
 * half a magazine at once. Refills prefer the superblock their magazine
 * drew from last, so different threads and processes touch different cache
 * lines. A thread without a slot (slots exhausted, or a segment under 1 MiB)
 * allocates and frees under the class lock.
 *
 * Invalid frees. A free checks that the pointer is a block start of a live
 * superblock (or a large run) with its bit set: foreign and interior
 * pointers and frees of free pooled blocks are -EINVAL. A block freed into
 * a magazine gets a cookie (offset ^ a per-segment key) in its first word;
 * a free that finds the cookie searches the magazine, so freeing twice
 * while the first free is still cached in the same thread is -EINVAL too.
 * The cookie is only a hint (never trusted). Not detected: a second free
 * while the first sits in another thread's magazine.
 *
 * Crash safety. Each class lock guards its descriptors and an intent record.
 * Refill writes the offsets into the magazine, counting progress in the
 * intent, and only then sets their bits; flush records the range it returns
 * before clearing bits. The next owner after a death (EOWNERDEAD) replays
 * the intent idempotently (set-if-clear, clear-if-set, then the magazine
 * count), lets the page layer replay its own intent, recounts every
 * descriptor of the class from its bitmap and relinks the class list. A
 * magazine push or pop outside the lock leaks at most one block if the
 * thread dies in the middle. A dead thread's magazines come back when its
 * slot is reclaimed (slot.c), which takes every class lock first so that
 * no intent naming the record outlives it.
 *
 * mseg_alloc_into() is crash-atomic: on the magazine path the slot records
 * {dest, block} before the block leaves the magazine and clears it after the
 * store to dest; the reclaimer of a dead slot keeps the block when *dest
 * holds it and returns it otherwise. On the locked paths the class or page
 * intent carries dest and the repair completes the store. Until the repair
 * (the next taker of that lock, or the slot's reclaim) a crashed call may
 * show the block allocated and not yet linked; afterwards both or neither.
 *
 * mseg__alloc_into_off() and mseg__free_from() are the same, for records the
 * library keeps in the segment (the registry's intent records), in both
 * directions: a free-from writes the class intent {FREE_FROM, block,
 * record}, clears the record, then the bit, and the repair finishes it. They
 * take only the locked paths, never a magazine: a magazine's interrupted
 * step is settled only by its slot's reclaim, which may come long after the
 * registry's own repair has looked at the record, freed its block, and let
 * a new operation reuse it. A lock's repair instead comes first whenever it
 * matters: the registry's repair calls mseg__alloc_settle() (every lock
 * taken once) before it reads its records.
 *
 * Every offset read from the segment is range-checked before use; corrupt
 * metadata gives MSEG_E_CORRUPT (NULL + EUCLEAN), never a wild access, and
 * every walk is bounded by a count derived from the trusted geometry.
 *
 * Lock order: slot lock, class locks in class order, page lock.
 */
#include <stdlib.h>
#include <string.h>

#include "alloc_layout.h"

const uint32_t mseg__class_size[A_NCLASSES] = {
        16, 32, 48, 64, 80, 96, 112, 128,
        160, 192, 224, 256, 320, 384, 448, 512,
        640, 768, 896, 1024, 1280, 1536, 1792, 2048,
        2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192,
};

/* (size + 15) >> 4 -> class, for sizes up to 1024 */
static uint8_t small_class[65];
/* ceil(2^32 / size): exact division of offsets inside a superblock */
static uint32_t class_inv[A_NCLASSES];

__attribute__((constructor)) static void classes_init(void) {
        for (uint32_t i = 1; i <= 64; i++)
                small_class[i] = (uint8_t) mseg__class_of(i * 16);
        small_class[0] = 0;
        for (uint32_t c = 0; c < A_NCLASSES; c++)
                class_inv[c] = (uint32_t) (((UINT64_C(1) << 32) + mseg__class_size[c] - 1) / mseg__class_size[c]);
}

int mseg__class_of(uint64_t size) {
        uint32_t k;

        if (size > A_MAX_SMALL)
                return -1;
        if (size <= 128)
                return size ? (int) ((size + 15) >> 4) - 1 : 0;
        k = 63u - (uint32_t) __builtin_clzll(size - 1);
        return (int) (8 + (k - 7) * 4 + (((size - 1) >> (k - 2)) & 3));
}

uint32_t mseg__mag_cap(uint32_t cls, uint32_t mag_max) {
        uint32_t c;

        if (!mag_max)
                return 0;
        c = 16384 / mseg__class_size[cls];
        if (c < 2)
                c = 2;
        return c < mag_max ? c : mag_max;
}

/* ---- geometry ---- */

static inline uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

static uint64_t tables_bytes(uint64_t units, uint32_t sb_units, uint32_t desc_size) {
        uint64_t ndesc = (units + sb_units - 1) / sb_units;

        return round_up(round_up(ndesc * desc_size, 64) + units * sizeof(struct a_unit), A_UNIT);
}

int mseg__alloc_geometry(uint64_t size, uint64_t alloc_off, uint32_t sb_units, uint32_t mag_max,
                         struct a_geom *g) {
        uint64_t avail, u, per, entries = 0;

        if ((sb_units != 1 && sb_units != 4 && sb_units != 16) ||
            (mag_max != 0 && mag_max != 16 && mag_max != 32 && mag_max != 64))
                return -EINVAL;
        if (size > MSEG_MAX_SIZE || alloc_off % A_UNIT || alloc_off >= size)
                return -EINVAL;
        memset(g, 0, sizeof(*g));
        g->sb_units = sb_units;
        g->sb_shift = (uint32_t) __builtin_ctz(sb_units);
        g->desc_size = A_DESC_HDR + sb_units * (uint32_t) A_UNIT / 16 / 8;
        g->data_off = alloc_off + A_ROOT_UNITS * A_UNIT;
        if (g->data_off >= size)
                return -EINVAL;
        avail = size - g->data_off;
        per = A_UNIT + sizeof(struct a_unit) + (g->desc_size + sb_units - 1) / sb_units;
        u = avail / per;
        while (A_UNIT * (u + 1) + tables_bytes(u + 1, sb_units, g->desc_size) <= avail)
                u++;
        while (u > 0 && A_UNIT * u + tables_bytes(u, sb_units, g->desc_size) > avail)
                u--;
        if (u == 0 || u > UINT32_MAX - 64)
                return -EINVAL;
        g->data_units = (uint32_t) u;
        g->ndesc = (uint32_t) ((u + sb_units - 1) / sb_units);
        g->desc_off = g->data_off + u * A_UNIT;
        g->utab_off = g->desc_off + round_up((uint64_t) g->ndesc * g->desc_size, 64);
        g->mag_max = mag_max;
        for (uint32_t c = 0; c < A_NCLASSES; c++)
                entries += mseg__mag_cap(c, mag_max);
        g->heap_units = mag_max ? (uint32_t) ((A_HEAP_HDR + entries * 8 + A_UNIT - 1) / A_UNIT) : 0;
        return 0;
}

/* Parameters chosen once, at format, from the size. */
static void format_params(uint64_t size, uint32_t *sb_units, uint32_t *mag_max) {
        /* Superblocks of 64 KiB, smaller in small segments so that each
         * class in use costs little (a 64 KiB segment has 40 KiB of data). */
        *sb_units = size >= (UINT64_C(4) << 20) ? 16 : size >= (UINT64_C(1) << 20) ? 4 : 1;
        /* Magazines: a class lock is taken about once per cap^2 / 2
         * operations of a class; bigger segments afford bigger ones (at
         * most 64 entries or 16 KiB per class, allocator-design.md 4). */
        if (size >= (UINT64_C(64) << 20))
                *mag_max = 64;
        else if (size >= (UINT64_C(16) << 20))
                *mag_max = 32;
        else if (size >= (UINT64_C(1) << 20))
                *mag_max = 16;
        else
                *mag_max = 0;
}

static struct a_root *root_of(const mseg_header *h) {
        return (struct a_root *) ((uint8_t *) h + h->alloc_off);
}

static void root_set_geometry(struct a_root *root, uint64_t size, const struct a_geom *g) {
        root->size = size;
        root->data_off = g->data_off;
        root->desc_off = g->desc_off;
        root->utab_off = g->utab_off;
        root->data_units = g->data_units;
        root->sb_units = g->sb_units;
        root->sb_shift = g->sb_shift;
        root->desc_size = g->desc_size;
        root->ndesc = g->ndesc;
        root->mag_max = g->mag_max;
        root->heap_units = g->heap_units;
}

static bool root_matches(const struct a_root *root, uint64_t size, const struct a_geom *g) {
        return root->size == size && root->data_off == g->data_off && root->desc_off == g->desc_off &&
               root->utab_off == g->utab_off && root->data_units == g->data_units &&
               root->sb_units == g->sb_units && root->sb_shift == g->sb_shift &&
               root->desc_size == g->desc_size && root->ndesc == g->ndesc &&
               root->mag_max == g->mag_max && root->heap_units == g->heap_units;
}

int mseg__alloc_format(mseg_header *h) {
        struct a_root *root;
        struct a_geom g;
        uint32_t sb_units, mag_max, frontier;
        uint64_t usable = atomic_load_explicit(&h->usable, memory_order_relaxed);
        int r;

        format_params(h->size, &sb_units, &mag_max);
        r = mseg__alloc_geometry(h->size, h->alloc_off, sb_units, mag_max, &g);
        if (r < 0)
                return mseg__error(-EINVAL, "segment of %llu bytes is too small for the allocator",
                                   (unsigned long long) h->size);
        root = root_of(h);
        memset(root, 0, sizeof(*root));
        root->magic = A_ROOT_MAGIC;
        root->version = MSEG_LAYOUT_VERSION;
        root_set_geometry(root, h->size, &g);
        mseg__lock_init(&root->slot_lock);
        memset(&root->pages, 0, sizeof(root->pages));
        mseg__lock_init(&root->pages.lock);
        for (uint32_t c = 0; c < A_NCLASSES; c++)
                mseg__lock_init(&root->pools[c].lock);
        /* Descriptors of the units that can be used now must read as dead
         * (a caller's buffer may hold garbage); the rest of a reserve is
         * zero already and stays untouched. */
        frontier = usable <= g.data_off ? 0 : (uint32_t) ((usable - g.data_off) >> A_UNIT_SHIFT);
        if (frontier > g.data_units)
                frontier = g.data_units;
        memset((uint8_t *) h + g.desc_off, 0,
               (uint64_t) ((frontier + sb_units - 1) / sb_units) * g.desc_size);
        /* Likewise the unit entries: only run boundaries carry tags. */
        memset((uint8_t *) h + g.utab_off, 0, (uint64_t) frontier * sizeof(struct a_unit));
        return 0;
}

int mseg__alloc_validate(const mseg_header *h, uint64_t size) {
        const struct a_root *root;
        struct a_geom g;

        if (h->alloc_off > size || size - h->alloc_off < A_ROOT_UNITS * A_UNIT)
                return mseg__error(MSEG_E_CORRUPT, "allocator root outside the segment");
        root = root_of(h);
        if (root->magic != A_ROOT_MAGIC)
                return mseg__error(MSEG_E_CORRUPT, "allocator root: bad magic 0x%08x", root->magic);
        if (root->version != MSEG_LAYOUT_VERSION)
                return mseg__error(MSEG_E_VERSION, "allocator root version %u", root->version);
        if (mseg__alloc_geometry(h->size, h->alloc_off, root->sb_units, root->mag_max, &g) < 0 ||
            !root_matches(root, h->size, &g))
                return mseg__error(MSEG_E_CORRUPT, "allocator geometry does not match the segment size");
        if (atomic_load_explicit(&((struct a_root *) root)->pages.wild, memory_order_relaxed) > g.data_units)
                return mseg__error(MSEG_E_CORRUPT, "allocator wilderness beyond the data");
        return 0;
}

/* ---- attach / detach ---- */

int mseg__alloc_attach(struct mseg *seg) {
        struct mseg__alloc_local *L;
        struct a_root *root = root_of(seg->hdr);
        struct a_geom g;
        uint32_t e = 0;
        int r;

        r = mseg__alloc_geometry(seg->hdr->size, seg->hdr->alloc_off, root->sb_units, root->mag_max, &g);
        if (r < 0 || !root_matches(root, seg->hdr->size, &g))
                return mseg__error(MSEG_E_CORRUPT, "allocator geometry does not match the segment size");
        L = calloc(1, sizeof(*L));
        if (!L)
                return mseg__error(-ENOMEM, "out of memory for allocator state");
        L->seg = seg;
        L->base = seg->base;
        L->root = root;
        L->uid = seg->uid;
        L->data_off = g.data_off;
        L->data_units = g.data_units;
        L->data_end = g.data_off + (uint64_t) g.data_units * A_UNIT;
        L->descs = seg->base + g.desc_off;
        L->utab = (struct a_unit *) (seg->base + g.utab_off);
        L->sb_units = g.sb_units;
        L->sb_shift = g.sb_shift;
        L->desc_size = g.desc_size;
        L->ndesc = g.ndesc;
        L->bitwords = g.sb_units * (uint32_t) A_UNIT / 16 / 64;
        L->heap_units = g.heap_units;
        L->slots_off = seg->hdr->slots_off;
        L->nslots = seg->hdr->nslots;
        L->writable = !seg->read_only;
        /* Only heap segments are surely private: a caller's buffer may be
         * shared memory, where other processes' frees and allocations
         * would leave this process's shadow memory wrong. */
        L->poison = A_ASAN && L->writable && seg->kind == MSEG__KIND_HEAP;
        L->caches = L->writable && g.mag_max > 0;
        memcpy(&L->cookie, seg->hdr->id, sizeof(L->cookie));
        L->cookie ^= UINT64_C(0x6d73656746524545);     /* "msegFREE" */
        for (uint32_t c = 0; c < A_NCLASSES; c++) {
                L->nblocks[c] = (g.sb_units * (uint32_t) A_UNIT) / mseg__class_size[c];
                L->cap[c] = mseg__mag_cap(c, g.mag_max);
                L->start[c] = e;
                e += L->cap[c];
        }
        pthread_mutex_init(&L->mu, NULL);
        seg->alloc = L;
        mseg__slots_register(L);
        return 0;
}

void mseg__alloc_detach(struct mseg *seg) {
        struct mseg__alloc_local *L = seg ? seg->alloc : NULL;

        if (!L)
                return;
        mseg__slots_detach(L);
        /* The memory outlives the handle (a caller's buffer): leave no
         * poisoned bytes behind. */
        a_unpoison(L, L->base + L->data_off, L->data_end - L->data_off);
        pthread_mutex_destroy(&L->mu);
        free(L->owned);
        free(L->busy);
        free(L);
        seg->alloc = NULL;
}

/* ---- blocks of superblocks ---- */

struct a_blk {
        struct a_desc *d;
        uint32_t di;
        uint32_t cls;
        uint32_t idx;
};

/* Which small block is @off? 0 and *b; 1 when @off lies in no live
 * superblock (maybe a large block); -EINVAL when it is inside one but not
 * at a block start. Reads one descriptor, no lock. */
static inline int blk_find(const struct mseg__alloc_local *L, uint64_t off, struct a_blk *b) {
        uint64_t rel = off - L->data_off;
        uint32_t u, live, c, r, idx;

        if (rel >= L->data_end - L->data_off)
                return -EINVAL;
        u = (uint32_t) (rel >> A_UNIT_SHIFT);
        b->di = u >> L->sb_shift;
        b->d = a_desc_at(L, b->di);
        live = atomic_load_explicit(&b->d->live, memory_order_acquire);
        if ((live & 0xffff0000u) != A_DESC_LIVE)
                return 1;
        c = live & 0xffffu;
        if (c >= A_NCLASSES)
                return 1;
        r = (uint32_t) (rel - ((uint64_t) b->di << (L->sb_shift + A_UNIT_SHIFT)));
        idx = (uint32_t) (((uint64_t) r * class_inv[c]) >> 32);
        if (idx * mseg__class_size[c] != r || idx >= L->nblocks[c])
                return -EINVAL;
        b->cls = c;
        b->idx = idx;
        return 0;
}

static inline bool blk_bit(const struct a_blk *b) {
        return (__atomic_load_n(&b->d->bits[b->idx >> 6], __ATOMIC_RELAXED) >> (b->idx & 63)) & 1;
}

static inline uint64_t sb_off(const struct mseg__alloc_local *L, uint32_t di) {
        return L->data_off + ((uint64_t) di << (L->sb_shift + A_UNIT_SHIFT));
}

static int pcorrupt(uint32_t c, const char *what) {
        return mseg__error(MSEG_E_CORRUPT, "allocator class %u (%u bytes): %s", c, mseg__class_size[c], what);
}

/* ---- class lists (class lock held) ---- */

static struct a_desc *list_desc(struct mseg__alloc_local *L, uint32_t c, uint32_t v) {
        struct a_desc *d;

        if (v == 0 || v > L->ndesc)
                return NULL;
        d = a_desc_at(L, v - 1);
        if (atomic_load_explicit(&d->live, memory_order_relaxed) != (A_DESC_LIVE | c))
                return NULL;
        return d;
}

static void list_push_tail(struct mseg__alloc_local *L, uint32_t c, uint32_t di) {
        struct a_pool *pl = &L->root->pools[c];
        struct a_desc *d = a_desc_at(L, di), *t = list_desc(L, c, pl->tail);

        d->next = 0;
        d->prev = t ? pl->tail : 0;
        d->listed = 1;
        if (t)
                t->next = di + 1;
        else
                pl->head = di + 1;
        pl->tail = di + 1;
}

static void list_push_head(struct mseg__alloc_local *L, uint32_t c, uint32_t di) {
        struct a_pool *pl = &L->root->pools[c];
        struct a_desc *d = a_desc_at(L, di), *h = list_desc(L, c, pl->head);

        d->prev = 0;
        d->next = h ? pl->head : 0;
        d->listed = 1;
        if (h)
                h->prev = di + 1;
        else
                pl->tail = di + 1;
        pl->head = di + 1;
}

static int list_unlink(struct mseg__alloc_local *L, uint32_t c, uint32_t di) {
        struct a_pool *pl = &L->root->pools[c];
        struct a_desc *d = a_desc_at(L, di), *p = NULL, *n = NULL;

        if (!d->listed)
                return 0;
        if (d->prev && !(p = list_desc(L, c, d->prev)))
                return pcorrupt(c, "bad superblock list link");
        if (d->next && !(n = list_desc(L, c, d->next)))
                return pcorrupt(c, "bad superblock list link");
        if (p)
                p->next = d->next;
        else if (pl->head == di + 1)
                pl->head = d->next;
        else
                return pcorrupt(c, "superblock list head");
        if (n)
                n->prev = d->prev;
        else if (pl->tail == di + 1)
                pl->tail = d->prev;
        else
                return pcorrupt(c, "superblock list tail");
        d->next = d->prev = 0;
        d->listed = 0;
        return 0;
}

/* ---- class repair ---- */

static uint32_t desc_limit(struct mseg__alloc_local *L) {
        uint32_t wild = atomic_load_explicit(&L->root->pages.wild, memory_order_acquire);

        if (wild > L->data_units)
                wild = L->data_units;
        return (wild + L->sb_units - 1) >> L->sb_shift;
}

static inline uint64_t last_mask(uint32_t nb) {
        return (nb & 63) ? (UINT64_C(1) << (nb & 63)) - 1 : ~UINT64_C(0);
}

/* Recount every descriptor of class @c from its bitmap and relink them. */
static void pool_rebuild(struct mseg__alloc_local *L, uint32_t c) {
        struct a_pool *pl = &L->root->pools[c];
        uint32_t nb = L->nblocks[c], words = (nb + 63) / 64, lim = desc_limit(L);

        pl->head = pl->tail = 0;
        A_SET(pl->nsb, 0);
        A_SET(pl->nempty, 0);
        A_SET(pl->used, 0);
        for (uint32_t di = 0; di < lim; di++) {
                struct a_desc *d = a_desc_at(L, di);
                uint32_t pop = 0;
                if (atomic_load_explicit(&d->live, memory_order_relaxed) != (A_DESC_LIVE | c))
                        continue;
                d->bits[words - 1] &= last_mask(nb);
                for (uint32_t w = words; w < L->bitwords; w++)
                        d->bits[w] = 0;
                for (uint32_t w = 0; w < words; w++)
                        pop += (uint32_t) __builtin_popcountll(d->bits[w]);
                d->nblocks = nb;
                d->nfree = nb - pop;
                d->hint = 0;
                d->owner = 0;
                d->listed = 0;
                d->next = d->prev = 0;
                d->unit = di << L->sb_shift;
                A_ADD(pl->nsb, 1);
                A_ADD(pl->used, pop);
                if (d->nfree) {
                        list_push_tail(L, c, di);
                        if (d->nfree == nb)
                                A_ADD(pl->nempty, 1);
                }
        }
}

static bool heap_ok(struct mseg__alloc_local *L, uint64_t off) {
        return off >= L->data_off && off < L->data_end && !((off - L->data_off) & (A_UNIT - 1)) &&
               L->heap_units && L->data_end - off >= (uint64_t) L->heap_units * A_UNIT;
}

struct a_heap *mseg__heap_at(struct mseg__alloc_local *L, uint64_t heap_off) {
        struct a_heap *h;

        if (!heap_ok(L, heap_off))
                return NULL;
        h = (struct a_heap *) (L->base + heap_off);
        return h->magic == A_HEAP_MAGIC ? h : NULL;
}

static inline uint64_t *heap_ent(struct a_heap *h) {
        return (uint64_t *) ((uint8_t *) h + A_HEAP_HDR);
}

static void bit_set_if_clear(struct mseg__alloc_local *L, uint32_t c, uint64_t off) {
        struct a_blk b;

        if (blk_find(L, off, &b) == 0 && b.cls == c)
                A_SET(b.d->bits[b.idx >> 6], A_GET(b.d->bits[b.idx >> 6]) | (UINT64_C(1) << (b.idx & 63)));
}

static void bit_clear_if_set(struct mseg__alloc_local *L, uint32_t c, uint64_t off) {
        struct a_blk b;

        if (blk_find(L, off, &b) == 0 && b.cls == c)
                A_SET(b.d->bits[b.idx >> 6], A_GET(b.d->bits[b.idx >> 6]) & ~(UINT64_C(1) << (b.idx & 63)));
}

static bool dest_ok(struct mseg__alloc_local *L, uint64_t dest) {
        const mseg_header *h = L->seg->hdr;

        if (dest & 7)
                return false;
        if (dest >= h->registry_off && dest + 8 <= h->registry_off + MSEG_REGISTRY_SIZE &&
            h->registry_off + MSEG_REGISTRY_SIZE <= h->alloc_off)
                return true;
        return dest >= L->data_off && dest + 8 <= L->data_end;
}

static void pool_repair(struct mseg__alloc_local *L, uint32_t c) {
        struct a_pool *pl = &L->root->pools[c];
        struct a_intent it = pl->intent;
        uint32_t cap = L->cap[c];
        struct a_heap *h;

        switch ((uint32_t) it.op) {
        case A_OP_REFILL:
        case A_OP_FLUSH:
                h = mseg__heap_at(L, it.x);
                if (!h || it.a != c || it.b > cap || it.n > cap - it.b)
                        break;
                for (uint32_t i = 0; i < it.n; i++) {
                        uint64_t off = heap_ent(h)[L->start[c] + it.b + i];
                        if (it.op == A_OP_REFILL)
                                bit_set_if_clear(L, c, off);
                        else
                                bit_clear_if_set(L, c, off);
                }
                A_SET(h->count[c], it.op == A_OP_REFILL ? it.b + it.n : it.b);
                break;
        case A_OP_ALLOC_INTO:
                bit_set_if_clear(L, c, it.x);
                if (dest_ok(L, it.dest))
                        atomic_store_explicit((_Atomic uint64_t *) (L->base + it.dest), it.x, memory_order_release);
                break;
        case A_OP_FREE_FROM:
                /* Finish the free. Clearing is safe even if the block's
                 * superblock went back to the page layer and was made
                 * again: only for another class (this class's lock was
                 * not to be had without this repair), which the class
                 * check in bit_clear_if_set() leaves alone. */
                if (dest_ok(L, it.dest)) {
                        _Atomic uint64_t *ref = (_Atomic uint64_t *) (L->base + it.dest);
                        if (atomic_load_explicit(ref, memory_order_acquire) == it.x)
                                atomic_store_explicit(ref, 0, memory_order_release);
                }
                bit_clear_if_set(L, c, it.x);
                break;
        default:
                break;
        }
        /* The dead owner may have died inside the page layer making or
         * dropping one of this class's superblocks: settle that first, so
         * the rebuild sees the descriptors as they end up. */
        (void) mseg__pages_settle(L);
        pool_rebuild(L, c);
        atomic_store_explicit(&pl->intent.op, A_OP_NONE, memory_order_release);
}

static int pool_lock(struct mseg__alloc_local *L, uint32_t c) {
        struct a_pool *pl = &L->root->pools[c];
        int r = a_lock(L, &pl->lock, c);

        if (r < 0)
                return r;
        if (r == 1 || atomic_load_explicit(&pl->intent.op, memory_order_relaxed) != A_OP_NONE) {
                pool_repair(L, c);
                mseg__lock_consistent(&pl->lock);
        }
        return 0;
}

static void pool_unlock(struct mseg__alloc_local *L, uint32_t c) {
        mseg__unlock(&L->root->pools[c].lock);
}

/* ---- taking and returning blocks (class lock held) ---- */

/* A new, empty superblock for class @c, at the head of its list. */
static int sb_new(struct mseg__alloc_local *L, uint32_t c, uint32_t *ret_di) {
        struct a_pool *pl = &L->root->pools[c];
        uint32_t u;
        int r;

        r = mseg__pages_alloc(L, L->sb_units, L->sb_units, 0, A_RUN_SB, c, NULL, 0, &u);
        if (r < 0)
                return r;
        a_poison(L, L->base + L->data_off + ((uint64_t) u << A_UNIT_SHIFT), (uint64_t) L->sb_units << A_UNIT_SHIFT);
        *ret_di = u >> L->sb_shift;
        list_push_head(L, c, *ret_di);
        A_ADD(pl->nsb, 1);
        A_ADD(pl->nempty, 1);
        return 0;
}

static int sb_release(struct mseg__alloc_local *L, uint32_t c, uint32_t di) {
        struct a_pool *pl = &L->root->pools[c];
        int r = list_unlink(L, c, di);

        if (r < 0)
                return r;
        r = mseg__pages_free(L, di << L->sb_shift, A_RUN_SB, 0);
        if (r < 0) {
                /* The page layer cannot take it now (its lock is busy for
                 * a thread that does not wait, timed out, or is poisoned):
                 * the superblock stays the class's, listed, as it was. */
                list_push_tail(L, c, di);
                return r;
        }
        A_SUB(pl->nsb, 1);
        return 0;
}

/* Which superblock a refill for @h draws from. Affinity keeps the blocks
 * of different threads (and processes) in different superblocks, so they
 * share no cache lines (bitmap words, descriptors, the blocks' own lines):
 * first the superblock this magazine used last, else a listed one nobody
 * else draws from (looking at a few), else a fresh one, else the head. */
#define AFFINITY_SCAN 8u

static int pick_sb(struct mseg__alloc_local *L, uint32_t c, struct a_heap *h, uint32_t *ret_v) {
        struct a_pool *pl = &L->root->pools[c];
        uint32_t owner = h ? h->slot + 1 : 0, v = 0, n;
        struct a_desc *d;
        int r;

        if (!owner)
                goto head;
        v = h->pref[c];
        d = list_desc(L, c, v);
        if (d && d->listed && d->nfree && d->owner == owner) {
                *ret_v = v;
                return 0;
        }
        for (v = pl->head, n = 0; v && n < AFFINITY_SCAN; n++) {
                d = list_desc(L, c, v);
                if (!d)
                        break;
                if (d->owner == 0 || d->owner == owner)
                        goto take;
                v = d->next;
        }
        if (sb_new(L, c, &v) == 0) {
                v++;
                d = list_desc(L, c, v);
                goto take;
        }
head:
        if (!pl->head) {
                r = sb_new(L, c, &v);
                if (r < 0)
                        return r;
        }
        *ret_v = pl->head;
        return 0;
take:
        if (!d)
                return pcorrupt(c, "bad superblock list link");
        d->owner = owner;
        h->pref[c] = v;
        *ret_v = v;
        return 0;
}

/* Find a free block of class @c (making a superblock if needed), without
 * taking it; for magazine @h (NULL: the locked path). */
static int find_free(struct mseg__alloc_local *L, uint32_t c, struct a_heap *h, struct a_blk *b) {
        uint32_t nb = L->nblocks[c], words = (nb + 63) / 64, v = 0;
        struct a_desc *d;
        int r;

        for (uint32_t tries = 0; tries < 2; tries++) {
                r = pick_sb(L, c, h, &v);
                if (r < 0)
                        return r;
                d = list_desc(L, c, v);
                if (!d)
                        return pcorrupt(c, "bad superblock list head");
                b->d = d;
                b->di = v - 1;
                b->cls = c;
                for (uint32_t w = d->hint < words ? d->hint : 0; w < words; w++) {
                        uint64_t m = ~d->bits[w] & (w == words - 1 ? last_mask(nb) : ~UINT64_C(0));
                        if (m) {
                                b->idx = w * 64 + (uint32_t) __builtin_ctzll(m);
                                d->hint = w;
                                return 0;
                        }
                }
                /* the hint may be stale: one full pass */
                for (uint32_t w = 0; w < words; w++) {
                        uint64_t m = ~d->bits[w] & (w == words - 1 ? last_mask(nb) : ~UINT64_C(0));
                        if (m) {
                                b->idx = w * 64 + (uint32_t) __builtin_ctzll(m);
                                d->hint = w;
                                return 0;
                        }
                }
                return pcorrupt(c, "listed superblock has no free block");
        }
        return pcorrupt(c, "superblock list");
}

static int mark_used(struct mseg__alloc_local *L, uint32_t c, const struct a_blk *b) {
        struct a_pool *pl = &L->root->pools[c];
        struct a_desc *d = b->d;
        uint32_t nb = L->nblocks[c];

        /* Bits change only under the class lock: no locked instruction;
         * the release store orders it after the intent's progress. */
        __atomic_store_n(&d->bits[b->idx >> 6], A_GET(d->bits[b->idx >> 6]) | (UINT64_C(1) << (b->idx & 63)),
                         __ATOMIC_RELEASE);
        if (d->nfree == nb && pl->nempty)
                A_SUB(pl->nempty, 1);
        if (d->nfree)
                d->nfree--;
        A_ADD(pl->used, 1);
        if (d->nfree == 0) {
                d->owner = 0;           /* when blocks come back, anyone may draw */
                return list_unlink(L, c, b->di);
        }
        return 0;
}

/* Return a block (validated: class @c, bit set) to its superblock. */
static int put_block(struct mseg__alloc_local *L, uint32_t c, uint64_t off) {
        struct a_pool *pl = &L->root->pools[c];
        uint32_t nb = L->nblocks[c];
        struct a_blk b;
        int r = blk_find(L, off, &b);

        if (r != 0 || b.cls != c)
                return -EINVAL;
        if (!blk_bit(&b))
                return -EINVAL;                 /* already free */
        __atomic_store_n(&b.d->bits[b.idx >> 6], A_GET(b.d->bits[b.idx >> 6]) & ~(UINT64_C(1) << (b.idx & 63)),
                         __ATOMIC_RELEASE);
        if (b.idx / 64 < b.d->hint)
                b.d->hint = b.idx / 64;
        if (b.d->nfree < nb)
                b.d->nfree++;
        if (pl->used)
                A_SUB(pl->used, 1);
        if (!b.d->listed) {
                list_push_tail(L, c, b.di);
        }
        if (b.d->nfree == nb) {
                /* Keep one empty superblock per class against thrashing;
                 * give the others back to the page layer. */
                if (pl->nempty >= 1 && sb_release(L, c, b.di) == 0)
                        return 0;
                A_ADD(pl->nempty, 1);   /* kept (or could not be given back now) */
        }
        return 0;
}

/* Move up to @want blocks into magazine entries e[count ..] of @h. */
static int refill(struct mseg__alloc_local *L, struct a_heap *h, uint64_t *e, uint32_t c, uint32_t want) {
        struct a_pool *pl = &L->root->pools[c];
        uint32_t old, k = 0;
        int r;

        r = pool_lock(L, c);
        if (r < 0)
                return r;
        old = h->count[c];
        if (old > L->cap[c]) {
                r = pcorrupt(c, "magazine count out of range");
                goto out;
        }
        if (want > L->cap[c] - old)
                want = L->cap[c] - old;
        pl->intent.x = (uint64_t) ((uint8_t *) h - L->base);
        pl->intent.a = c;
        pl->intent.b = old;
        pl->intent.n = 0;
        atomic_store_explicit(&pl->intent.op, A_OP_REFILL, memory_order_release);
        r = 0;
        while (k < want) {
                struct a_blk b;
                r = find_free(L, c, h, &b);
                if (r < 0)
                        break;
                A_SET(e[old + k], sb_off(L, b.di) + (uint64_t) b.idx * mseg__class_size[c]);
                __atomic_store_n(&pl->intent.n, k + 1, __ATOMIC_RELEASE);
                MSEG_TEST_HOOK("alloc.refill");
                k++;
                r = mark_used(L, c, &b);
                if (r < 0)
                        break;
        }
        A_SET(h->count[c], old + k);
        atomic_store_explicit(&pl->intent.op, A_OP_NONE, memory_order_release);
        if (k && r == -ENOMEM)
                r = 0;
out:
        pool_unlock(L, c);
        return r;
}

/* Return the top @n entries of @h's class-@c magazine. Entries that are
 * not cached blocks of the class (damage, or a double free) are dropped.
 * @disown: the record is being retired (its superblock preference too). */
static int flush(struct mseg__alloc_local *L, struct a_heap *h, uint32_t c, uint32_t n, bool disown) {
        struct a_pool *pl = &L->root->pools[c];
        uint64_t *e = heap_ent(h) + L->start[c];
        uint32_t old, nc;
        int r, bad = 0;

        r = pool_lock(L, c);
        if (r < 0)
                return r;
        if (disown) {
                /* The record goes away: its superblock is anyone's again. */
                struct a_desc *d = list_desc(L, c, h->pref[c]);
                if (d && d->owner == h->slot + 1)
                        d->owner = 0;
                h->pref[c] = 0;
        }
        old = h->count[c];
        if (old > L->cap[c])
                old = L->cap[c];        /* a damaged count: flush what can be there */
        if (n > old)
                n = old;
        if (n == 0)
                goto out;
        nc = old - n;
        pl->intent.x = (uint64_t) ((uint8_t *) h - L->base);
        pl->intent.a = c;
        pl->intent.b = nc;
        pl->intent.n = n;
        atomic_store_explicit(&pl->intent.op, A_OP_FLUSH, memory_order_release);
        MSEG_TEST_HOOK("alloc.flush");
        for (uint32_t i = nc; i < old; i++) {
                int q = put_block(L, c, e[i]);
                if (q == -EINVAL)
                        bad++;
                else if (q < 0)
                        r = q;
        }
        A_SET(h->count[c], nc);
        atomic_store_explicit(&pl->intent.op, A_OP_NONE, memory_order_release);
out:
        pool_unlock(L, c);
        if (r == 0 && bad)
                r = mseg__error(MSEG_E_CORRUPT, "%d cached block(s) of class %u were not allocated", bad, c);
        return r;
}

/* Allocate one block under the class lock. With @dest, store its offset
 * there, crash-atomically (intent ALLOC_INTO). */
static int direct_alloc(struct mseg__alloc_local *L, uint32_t c, uint64_t dest, uint64_t *ret_off) {
        struct a_pool *pl = &L->root->pools[c];
        struct a_blk b;
        uint64_t off;
        int r;

        r = pool_lock(L, c);
        if (r < 0)
                return r;
        r = find_free(L, c, NULL, &b);
        if (r < 0)
                goto out;
        off = sb_off(L, b.di) + (uint64_t) b.idx * mseg__class_size[c];
        if (dest) {
                pl->intent.x = off;
                pl->intent.dest = dest;
                atomic_store_explicit(&pl->intent.op, A_OP_ALLOC_INTO, memory_order_release);
                MSEG_TEST_HOOK("alloc.into_locked");
        }
        r = mark_used(L, c, &b);
        if (dest) {
                atomic_store_explicit((_Atomic uint64_t *) (L->base + dest), off, memory_order_release);
                atomic_store_explicit(&pl->intent.op, A_OP_NONE, memory_order_release);
        }
        if (r == 0)
                *ret_off = off;
out:
        pool_unlock(L, c);
        return r;
}

static int direct_free(struct mseg__alloc_local *L, uint32_t c, uint64_t off) {
        int r = pool_lock(L, c);

        if (r < 0)
                return r;
        r = put_block(L, c, off);
        pool_unlock(L, c);
        if (r == -EINVAL)
                return mseg__error(-EINVAL, "mseg_free: block at offset %llu is not allocated",
                                   (unsigned long long) off);
        return r;
}

/* Give every class's spare empty superblocks back (before ENOMEM). */
static void release_empties(struct mseg__alloc_local *L) {
        for (uint32_t c = 0; c < A_NCLASSES; c++) {
                struct a_pool *pl = &L->root->pools[c];
                uint32_t lim;
                if (!A_GET(pl->nempty))
                        continue;
                if (pool_lock(L, c) < 0)
                        continue;
                lim = desc_limit(L);
                for (uint32_t v = pl->head, n = 0; v && n < lim && pl->nempty; n++) {
                        struct a_desc *d = list_desc(L, c, v);
                        uint32_t next;
                        if (!d)
                                break;
                        next = d->next;
                        if (d->nfree == L->nblocks[c] && sb_release(L, c, v - 1) == 0)
                                A_SUB(pl->nempty, 1);
                        v = next;
                }
                pool_unlock(L, c);
        }
}

static void recover_memory(struct mseg__alloc_local *L) {
        mseg__slot_flush_own(L);
        release_empties(L);
}

/* ---- magazine records (for slot.c) ---- */

void mseg__heap_init(struct mseg__alloc_local *L, struct a_heap *heap, uint32_t slot, uint64_t gen) {
        a_unpoison(L, heap, (uint64_t) L->heap_units << A_UNIT_SHIFT);
        memset(heap, 0, A_HEAP_HDR);
        heap->slot = slot;
        heap->gen = gen;
        atomic_thread_fence(memory_order_release);
        heap->magic = A_HEAP_MAGIC;
}

/* A lock that could not be had now (msegd does not wait; a live holder):
 * the work is left for a later try, not given up. */
static bool lock_transient(int r) {
        return r == -EBUSY || r == -ETIMEDOUT;
}

int mseg__heap_flush_all(struct mseg__alloc_local *L, struct a_heap *heap, mseg_slot *slot) {
        uint64_t dest = slot ? slot->reserved[A_SLOT_INTO_DEST] : 0;
        int r = 0;

        /* An mseg_alloc_into interrupted on the magazine path. */
        if (dest) {
                uint64_t block = slot->reserved[A_SLOT_INTO_BLOCK];
                struct a_blk b;
                if (dest_ok(L, dest) &&
                    atomic_load_explicit((_Atomic uint64_t *) (L->base + dest), memory_order_acquire) != block &&
                    blk_find(L, block, &b) == 0 && heap) {
                        uint32_t n = heap->count[b.cls];
                        uint64_t *e = heap_ent(heap) + L->start[b.cls];
                        bool cached = n > 0 && n <= L->cap[b.cls] && e[n - 1] == block;
                        if (!cached && blk_bit(&b)) {
                                int q = direct_free(L, b.cls, block);
                                if (lock_transient(q))
                                        return q;       /* keep the record: settled next time */
                        }
                }
                atomic_store_explicit((_Atomic uint64_t *) &slot->reserved[A_SLOT_INTO_DEST], 0,
                                      memory_order_release);
        }
        if (!heap) {
                /* A dead slot without a record: its owner may still have
                 * died inside a locked path (mseg__free_from, the locked
                 * mseg_alloc_into): every lock is taken once, so its
                 * reclaim settles those too, as with a record below. */
                if (!slot)
                        return 0;
                for (uint32_t c = 0; c < A_NCLASSES; c++) {
                        int q = pool_lock(L, c);
                        if (q < 0) {
                                if (lock_transient(q))
                                        return q;
                                r = q;
                                continue;
                        }
                        pool_unlock(L, c);
                }
                {
                        int q = mseg__pages_settle(L);
                        if (q < 0 && (r == 0 || lock_transient(q)))
                                r = q;
                }
                return r;
        }
        /* Every class lock, even for an empty magazine: a refill the owner
         * died in may not have published its count yet, and its intent
         * must be replayed (by taking the lock) before the record goes. */
        for (uint32_t c = 0; c < A_NCLASSES; c++) {
                int q = flush(L, heap, c, L->cap[c], slot != NULL);
                if (q < 0 && (r == 0 || lock_transient(q)))
                        r = q;          /* a lock not had now wins: the caller tries again */
        }
        return r;
}

/* ---- the public API ---- */

static inline struct mseg__alloc_local *local_of(mseg *seg) {
        return seg ? seg->alloc : NULL;
}

static void fill_freed(void *p, uint64_t n) {
#ifdef MSEG_EXPENSIVE_CHECKS
        memset(p, 0xdf, n);
#else
        (void) p;
        (void) n;
#endif
}

/* Thread cache lookup: the calling thread's magazine record in L. */
static inline struct a_heap *tc_heap(struct mseg__alloc_local *L, uint64_t **ret_ent, mseg_slot **ret_slot) {
        struct a_tc *t = &mseg__tc[0];

        if (mseg__likely(t->uid == L->uid)) {
                *ret_ent = t->ent;
                if (ret_slot)
                        *ret_slot = t->slot;
                return t->heap;
        }
        {
                mseg_slot *s = NULL;
                struct a_heap *h = mseg__slot_heap(L, &s);
                *ret_ent = h ? heap_ent(h) : NULL;
                if (ret_slot)
                        *ret_slot = s;
                return h;
        }
}

/* Small allocation, slow path (the magazine is empty or there is none). */
static int alloc_small(struct mseg__alloc_local *L, uint32_t c, uint64_t dest, bool locked, uint64_t *ret_off) {
        uint64_t *ent = NULL;
        mseg_slot *slot = NULL;
        struct a_heap *h = locked ? NULL : tc_heap(L, &ent, &slot);
        int r;

        if (!h) {
                r = direct_alloc(L, c, dest, ret_off);
                if (r == -ENOMEM) {
                        recover_memory(L);
                        r = direct_alloc(L, c, dest, ret_off);
                }
                return r;
        }
        for (int attempt = 0;; attempt++) {
                uint32_t n = h->count[c];
                uint64_t *e = ent + L->start[c], off;
                if (n > L->cap[c])
                        return pcorrupt(c, "magazine count out of range");
                if (n == 0) {
                        r = refill(L, h, e, c, L->cap[c] / 2 ? L->cap[c] / 2 : 1);
                        if (r == -ENOMEM && attempt == 0) {
                                recover_memory(L);
                                continue;
                        }
                        if (r < 0)
                                return r;
                        n = h->count[c];
                        if (n == 0 || n > L->cap[c])
                                return pcorrupt(c, "magazine empty after a refill");
                }
                off = e[n - 1];
                if (off - L->data_off > L->data_end - L->data_off - mseg__class_size[c])
                        return pcorrupt(c, "cached offset outside the data");
                if (dest) {
                        slot->reserved[A_SLOT_INTO_BLOCK] = off;
                        atomic_store_explicit((_Atomic uint64_t *) &slot->reserved[A_SLOT_INTO_DEST], dest,
                                              memory_order_release);
                        A_SET(h->count[c], n - 1);
                        MSEG_TEST_HOOK("alloc.into");
                        atomic_store_explicit((_Atomic uint64_t *) (L->base + dest), off, memory_order_release);
                        atomic_store_explicit((_Atomic uint64_t *) &slot->reserved[A_SLOT_INTO_DEST], 0,
                                              memory_order_release);
                } else {
                        A_SET(h->count[c], n - 1);
                }
                *ret_off = off;
                return 0;
        }
}

static int alloc_large(struct mseg__alloc_local *L, uint64_t size, uint64_t align, uint64_t dest,
                       uint64_t *ret_off) {
        uint64_t n = (size + A_UNIT - 1) >> A_UNIT_SHIFT, au = align > A_UNIT ? align >> A_UNIT_SHIFT : 1;
        uint32_t u;
        int r;

        if (n > L->data_units || au > (UINT64_C(1) << 31))
                return -ENOMEM;
        for (int attempt = 0;; attempt++) {
                r = mseg__pages_alloc(L, (uint32_t) n, (uint32_t) au,
                                      (uint32_t) ((L->data_off >> A_UNIT_SHIFT) & (au - 1)),
                                      A_RUN_LARGE, 0, ret_off, dest, &u);
                if (r == -ENOMEM && attempt == 0) {
                        recover_memory(L);
                        continue;
                }
                break;
        }
        if (r == 0)
                a_unpoison(L, L->base + *ret_off, n << A_UNIT_SHIFT);
        return r;
}

/* The common allocation: 0 and *ret_off, or a negative code (message set).
 * @locked: never through the magazine, whose interrupted alloc_into only
 * the slot's reclaim settles (see mseg__alloc_into_off). */
static int alloc_common(mseg *seg, uint64_t size, uint64_t align, uint64_t dest, bool locked,
                        uint64_t *ret_off) {
        struct mseg__alloc_local *L = local_of(seg);
        int c, r;

        if (!L)
                return mseg__error(-EINVAL, "no segment");
        if (size == 0)
                return mseg__error(-EINVAL, "allocation of 0 bytes");
        if (!mseg__is_pow2(align))
                return mseg__error(-EINVAL, "alignment %llu is not a power of two", (unsigned long long) align);
        if (!L->writable)
                return mseg__error(-EROFS, "segment is mapped read-only");
        if (size > L->data_end - L->data_off)
                return mseg__error(-ENOMEM, "segment is full");
        if (align < 16)
                align = 16;
        c = align <= A_UNIT ? mseg__class_of(round_up(size, align)) : -1;
        if (c >= 0 && L->nblocks[c] < 2)
                c = -1;                 /* bigger than half a superblock here: a run */
        if (c >= 0) {
                r = alloc_small(L, (uint32_t) c, dest, locked, ret_off);
                if (r == 0)
                        a_unpoison(L, L->base + *ret_off, mseg__class_size[c]);
        } else {
                r = alloc_large(L, size, align, dest, ret_off);
        }
        if (r == -ENOMEM)
                return mseg__error(-ENOMEM, "segment is full (%llu bytes asked)", (unsigned long long) size);
        return r;
}

static void *alloc_ptr(mseg *seg, uint64_t size, uint64_t align) {
        uint64_t off;
        int r = alloc_common(seg, size, align, 0, false, &off);

        if (r < 0) {
                errno = mseg__errno_of(r);
                return NULL;
        }
        return seg->base + off;
}

void *mseg_alloc(mseg *seg, size_t size) {
        struct mseg__alloc_local *L = local_of(seg);

        /* Fast path: a hit in the calling thread's magazine. */
        if (mseg__likely(L && size - 1 < 1024)) {
                struct a_tc *t = &mseg__tc[0];
                if (mseg__likely(t->uid == L->uid && t->heap)) {
                        uint32_t c = small_class[(size + 15) >> 4];
                        uint32_t n = t->heap->count[c];
                        if (mseg__likely(n - 1 < L->cap[c])) {
                                uint64_t off = t->ent[L->start[c] + n - 1];
                                if (mseg__likely(off - L->data_off <= L->data_end - L->data_off - 1024)) {
                                        A_SET(t->heap->count[c], n - 1);
                                        a_unpoison(L, L->base + off, mseg__class_size[c]);
                                        return L->base + off;
                                }
                        }
                }
        }
        return alloc_ptr(seg, size, 16);
}

void *mseg_alloc_aligned(mseg *seg, size_t size, size_t alignment) {
        return alloc_ptr(seg, size, alignment);
}

uint64_t mseg__alloc_off(struct mseg *seg, uint64_t size, uint64_t align) {
        uint64_t off;
        int r = alloc_common(seg, size, align ? align : 16, 0, false, &off);

        if (r < 0) {
                errno = mseg__errno_of(r);
                return 0;
        }
        return off;
}

int mseg_alloc_into(mseg *seg, size_t size, mseg_handle *dest) {
        struct mseg__alloc_local *L = local_of(seg);
        uint64_t off, d;

        if (!L || !dest)
                return mseg__error(-EINVAL, "mseg_alloc_into: NULL argument");
        d = (uint64_t) ((uint8_t *) dest - L->base);
        if ((uint8_t *) dest < L->base || !dest_ok(L, d))
                return mseg__error(-EINVAL, "mseg_alloc_into: destination is not an aligned slot in the segment");
        return alloc_common(seg, size, 16, d, false, &off);
}

/* ---- crash-atomic allocate-into and free-from (for the registry) ----
 *
 * Both take the locked paths only: the class lock for a small block, the
 * page lock for a run, each with its intent record naming the block and the
 * record (@dest / @ref), so the next owner of that lock after a crash rolls
 * the operation forward. The magazine path of mseg_alloc_into is settled
 * only by the slot's reclaim, which may come after the caller's own repair
 * has looked at, freed or reused the record; the lock's repair is what
 * mseg__alloc_settle() makes sure of before such a repair. */

static int ref_off(struct mseg__alloc_local *L, const _Atomic uint64_t *ref, uint64_t *ret) {
        const uint8_t *p = (const uint8_t *) ref;

        if (p < L->base || !dest_ok(L, (uint64_t) (p - L->base)))
                return mseg__error(-EINVAL, "record is not an aligned slot of the segment's registry or data");
        *ret = (uint64_t) (p - L->base);
        return 0;
}

int mseg__alloc_into_off(struct mseg *seg, uint64_t size, uint64_t align, _Atomic uint64_t *dest) {
        struct mseg__alloc_local *L = local_of(seg);
        uint64_t d = 0, off;
        int r;

        if (!L || !dest)
                return mseg__error(-EINVAL, "mseg__alloc_into_off: NULL argument");
        r = ref_off(L, dest, &d);
        if (r < 0)
                return r;
        /* The block does not come from the thread's magazine, but the
         * thread still gets its slot at its first allocation here, as with
         * any other: the segment's figures (mseg_free_memory) then do not
         * move when its first plain allocation or free claims it later. */
        if (L->writable) {
                uint64_t *ent;
                (void) tc_heap(L, &ent, NULL);
        }
        return alloc_common(seg, size, align ? align : 16, d, true, &off);
}

int mseg__free_from(struct mseg *seg, _Atomic uint64_t *ref) {
        struct mseg__alloc_local *L = local_of(seg);
        uint64_t d = 0, off;
        int r;

        if (!L || !ref)
                return mseg__error(-EINVAL, "mseg__free_from: NULL argument");
        if (!L->writable)
                return mseg__error(-EROFS, "segment is mapped read-only");
        r = ref_off(L, ref, &d);
        if (r < 0)
                return r;
        /* Only a repair running under another lock (an interrupted free of
         * the same record, finished by its lock's next owner) changes *ref
         * under us, and only to 0: each pass either sees that or frees. */
        for (int pass = 0; pass < 4; pass++) {
                struct a_blk b;
                uint32_t c;

                off = atomic_load_explicit(ref, memory_order_acquire);
                if (!off)
                        return 0;
                r = blk_find(L, off, &b);
                if (r == 1 && !((off - L->data_off) & (A_UNIT - 1))) {
                        uint32_t u = (uint32_t) ((off - L->data_off) >> A_UNIT_SHIFT);
                        uint32_t len = mseg__pages_large_len(L, u);
                        /* Poisoned first (as free_large does), unpoisoned
                         * if the free turns out not to be ours to make. */
                        if (len)
                                a_poison(L, L->base + off, (uint64_t) len << A_UNIT_SHIFT);
                        r = mseg__pages_free_from(L, u, A_RUN_LARGE, d);
                        if (r == -ESTALE || r == -EINVAL) {
                                if (len)
                                        a_unpoison(L, L->base + off, (uint64_t) len << A_UNIT_SHIFT);
                                if (atomic_load_explicit(ref, memory_order_acquire) != off)
                                        continue;
                        }
                        if (r == -EINVAL)
                                return mseg__error(-EINVAL, "record names offset %llu, not an allocated block",
                                                   (unsigned long long) off);
                        return r;
                }
                if (r != 0) {
                        if (atomic_load_explicit(ref, memory_order_acquire) != off)
                                continue;
                        return mseg__error(-EINVAL, "record names offset %llu, not a block", (unsigned long long) off);
                }
                c = b.cls;
                r = pool_lock(L, c);
                if (r < 0)
                        return r;
                if (atomic_load_explicit(ref, memory_order_acquire) != off) {
                        pool_unlock(L, c);
                        continue;       /* the repair finished it */
                }
                if (blk_find(L, off, &b) != 0 || b.cls != c || !blk_bit(&b)) {
                        pool_unlock(L, c);
                        return mseg__error(-EINVAL, "record names offset %llu, not an allocated block",
                                           (unsigned long long) off);
                }
                fill_freed(L->base + off, mseg__class_size[c]);
                a_poison(L, L->base + off, mseg__class_size[c]);
                {
                        struct a_pool *pl = &L->root->pools[c];
                        pl->intent.x = off;
                        pl->intent.dest = d;
                        atomic_store_explicit(&pl->intent.op, A_OP_FREE_FROM, memory_order_release);
                        MSEG_TEST_HOOK("alloc.free_from");
                        /* The record lets go first: from here on nobody
                         * may find the block through it, and the repair
                         * finishes the rest from the intent. */
                        atomic_store_explicit(ref, 0, memory_order_release);
                        MSEG_TEST_HOOK("alloc.free_from.cleared");
                        r = put_block(L, c, off);
                        atomic_store_explicit(&pl->intent.op, A_OP_NONE, memory_order_release);
                }
                pool_unlock(L, c);
                return r;
        }
        return mseg__error(-EAGAIN, "record kept changing while its block was freed");
}

int mseg__alloc_settle(struct mseg *seg) {
        struct mseg__alloc_local *L = local_of(seg);
        int r;

        if (!L)
                return mseg__error(-EINVAL, "no segment");
        if (!L->writable)
                return 0;
        /* Lock order: classes in order, then pages. Each lock's taker
         * replays what a dead owner left in its intent record. */
        for (uint32_t c = 0; c < A_NCLASSES; c++) {
                r = pool_lock(L, c);
                if (r < 0)
                        return r;
                pool_unlock(L, c);
        }
        return mseg__pages_settle(L);
}

static int free_large(struct mseg__alloc_local *L, uint64_t off) {
        uint64_t rel = off - L->data_off;
        uint32_t u = (uint32_t) (rel >> A_UNIT_SHIFT), len;

        if (rel & (A_UNIT - 1))
                return mseg__error(-EINVAL, "mseg_free: offset %llu is not a block", (unsigned long long) off);
        len = mseg__pages_large_len(L, u);
        if (!len)
                return mseg__error(-EINVAL, "mseg_free: offset %llu is not an allocated block",
                                   (unsigned long long) off);
        fill_freed(L->base + off, (uint64_t) len << A_UNIT_SHIFT);
        a_poison(L, L->base + off, (uint64_t) len << A_UNIT_SHIFT);
        return mseg__pages_free(L, u, A_RUN_LARGE, 0);
}

/* Free a small block known valid (bit set): magazine or class lock. */
static int free_small(struct mseg__alloc_local *L, uint32_t c, uint64_t off) {
        uint64_t *ent;
        struct a_heap *h = tc_heap(L, &ent, NULL);
        uint64_t *e;
        uint32_t n, cap = L->cap[c];

        fill_freed(L->base + off, mseg__class_size[c]);
        if (!h) {
                a_poison(L, L->base + off, mseg__class_size[c]);
                return direct_free(L, c, off);
        }
        e = ent + L->start[c];
        n = h->count[c];
        if (n > cap)
                return pcorrupt(c, "magazine count out of range");
        for (uint32_t i = 0; i < n; i++)
                if (e[i] == off)
                        return mseg__error(-EINVAL, "mseg_free: double free of offset %llu",
                                           (unsigned long long) off);
        if (n == cap) {
                int r = flush(L, h, c, cap - cap / 2, false);
                if (r < 0 && r != MSEG_E_CORRUPT)
                        return r;
                n = h->count[c];
        }
        *(uint64_t *) (L->base + off) = off ^ L->cookie;
        a_poison(L, L->base + off + 8, mseg__class_size[c] - 8);       /* all but the cookie */
        A_SET(e[n], off);
        A_SET(h->count[c], n + 1);
        return 0;
}

int mseg__free_off(struct mseg *seg, uint64_t off) {
        struct mseg__alloc_local *L = local_of(seg);
        struct a_blk b;
        int r;

        if (!L)
                return mseg__error(-EINVAL, "no segment");
        if (!L->writable)
                return mseg__error(-EROFS, "segment is mapped read-only");
        r = blk_find(L, off, &b);
        if (r == 1)
                return free_large(L, off);
        if (r < 0)
                return mseg__error(-EINVAL, "mseg_free: offset %llu is not a block", (unsigned long long) off);
        if (!blk_bit(&b))
                return mseg__error(-EINVAL, "mseg_free: block at offset %llu is not allocated (double free?)",
                                   (unsigned long long) off);
        return free_small(L, b.cls, off);
}

int mseg_free(mseg *seg, void *p) {
        struct mseg__alloc_local *L = local_of(seg);

        if (!p)
                return 0;
        if (!L)
                return mseg__error(-EINVAL, "no segment");
        /* Fast path: a valid small block and room in this thread's magazine. */
        {
                uint64_t off = (uint64_t) ((uint8_t *) p - L->base);
                struct a_tc *t = &mseg__tc[0];
                struct a_blk b;
                if (mseg__likely(t->uid == L->uid && t->heap && blk_find(L, off, &b) == 0 && blk_bit(&b))) {
                        uint32_t c = b.cls, n = t->heap->count[c];
                        uint64_t *e = t->ent + L->start[c];
                        if (mseg__likely(n < L->cap[c])) {
                                uint64_t *w = p;
                                /* A block freed into a magazine carries a cookie
                                 * in its first word: only a block that still
                                 * has one can be a repeated free, so only then
                                 * is the magazine searched. */
                                if (mseg__unlikely(*w == (off ^ L->cookie)))
                                        for (uint32_t i = 0; i < n; i++)
                                                if (e[i] == off)
                                                        return mseg__error(-EINVAL, "mseg_free: double free of offset %llu",
                                                                           (unsigned long long) off);
                                fill_freed(p, mseg__class_size[c]);
                                *w = off ^ L->cookie;
                                a_poison(L, (uint8_t *) p + 8, mseg__class_size[c] - 8);
                                A_SET(e[n], off);
                                A_SET(t->heap->count[c], n + 1);
                                return 0;
                        }
                }
        }
        if ((uint8_t *) p < L->base || (uint8_t *) p >= L->base + L->data_end)
                return mseg__error(-EINVAL, "mseg_free: pointer outside the segment");
        return mseg__free_off(seg, (uint64_t) ((uint8_t *) p - L->base));
}

/* Usable size of a live block at @off, 0 if it is none. */
static uint64_t block_size(struct mseg__alloc_local *L, uint64_t off, int *ret_cls) {
        struct a_blk b;
        int r = blk_find(L, off, &b);

        if (r == 0) {
                *ret_cls = (int) b.cls;
                return blk_bit(&b) ? mseg__class_size[b.cls] : 0;
        }
        *ret_cls = -1;
        if (r < 0 || ((off - L->data_off) & (A_UNIT - 1)))
                return 0;
        return (uint64_t) mseg__pages_large_len(L, (uint32_t) ((off - L->data_off) >> A_UNIT_SHIFT))
               << A_UNIT_SHIFT;
}

static bool ptr_in(struct mseg__alloc_local *L, const void *p) {
        return L && p && (const uint8_t *) p >= L->base + L->data_off && (const uint8_t *) p < L->base + L->data_end;
}

size_t mseg_usable_size(mseg *seg, const void *p) {
        struct mseg__alloc_local *L = local_of(seg);
        int c;

        if (!ptr_in(L, p))
                return 0;
        return (size_t) block_size(L, (uint64_t) ((const uint8_t *) p - L->base), &c);
}

int mseg_expand(mseg *seg, void *p, size_t min_size, size_t preferred_size, size_t *ret_size) {
        struct mseg__alloc_local *L = local_of(seg);
        uint64_t off, cur, nmin, npref;
        uint32_t len;
        int c, r;

        if (!ptr_in(L, p))
                return mseg__error(-EINVAL, "mseg_expand: not a block of this segment");
        if (!L->writable)
                return mseg__error(-EROFS, "segment is mapped read-only");
        off = (uint64_t) ((uint8_t *) p - L->base);
        cur = block_size(L, off, &c);
        if (!cur)
                return mseg__error(-EINVAL, "mseg_expand: not a live block");
        if (preferred_size < min_size)
                preferred_size = min_size;
        if (c >= 0 || cur >= preferred_size) {
                if (min_size > cur)
                        return -ENOMEM;         /* a small block only grows within its class */
                if (ret_size)
                        *ret_size = (size_t) cur;
                return 0;
        }
        if (min_size > L->data_end - L->data_off)
                return -ENOMEM;
        if (preferred_size > L->data_end - L->data_off)
                preferred_size = (size_t) (L->data_end - L->data_off);
        nmin = (min_size + A_UNIT - 1) >> A_UNIT_SHIFT;
        npref = (preferred_size + A_UNIT - 1) >> A_UNIT_SHIFT;
        if (nmin < (cur >> A_UNIT_SHIFT))
                nmin = cur >> A_UNIT_SHIFT;
        r = mseg__pages_resize(L, (uint32_t) ((off - L->data_off) >> A_UNIT_SHIFT), (uint32_t) nmin,
                               (uint32_t) npref, &len);
        if (r < 0)
                return r;
        a_unpoison(L, (uint8_t *) p + cur, ((uint64_t) len << A_UNIT_SHIFT) - cur);
        if (ret_size)
                *ret_size = (size_t) len << A_UNIT_SHIFT;
        return 0;
}

int mseg_shrink(mseg *seg, void *p, size_t new_size, size_t *ret_size) {
        struct mseg__alloc_local *L = local_of(seg);
        uint64_t off, cur, n;
        uint32_t len;
        int c, r;

        if (!ptr_in(L, p))
                return mseg__error(-EINVAL, "mseg_shrink: not a block of this segment");
        if (!L->writable)
                return mseg__error(-EROFS, "segment is mapped read-only");
        off = (uint64_t) ((uint8_t *) p - L->base);
        cur = block_size(L, off, &c);
        if (!cur)
                return mseg__error(-EINVAL, "mseg_shrink: not a live block");
        n = (new_size + A_UNIT - 1) >> A_UNIT_SHIFT;
        if (n == 0)
                n = 1;
        if (c >= 0 || n >= (cur >> A_UNIT_SHIFT)) {
                if (ret_size)
                        *ret_size = (size_t) cur;
                return 0;
        }
        a_poison(L, (uint8_t *) p + (n << A_UNIT_SHIFT), cur - (n << A_UNIT_SHIFT));
        r = mseg__pages_resize(L, (uint32_t) ((off - L->data_off) >> A_UNIT_SHIFT), (uint32_t) n,
                               (uint32_t) n, &len);
        if (r < 0)
                return r;
        if (ret_size)
                *ret_size = (size_t) len << A_UNIT_SHIFT;
        return 0;
}

int mseg_alloc_many(mseg *seg, size_t elem_size, size_t n, void **ret_ptrs) {
        if (!seg || !ret_ptrs)
                return mseg__error(-EINVAL, "mseg_alloc_many: NULL argument");
        if (elem_size == 0)
                return mseg__error(-EINVAL, "mseg_alloc_many: element size 0");
        for (size_t i = 0; i < n; i++) {
                uint64_t off;
                int r = alloc_common(seg, elem_size, 16, 0, false, &off);
                if (r < 0) {
                        for (size_t j = 0; j < i; j++)
                                (void) mseg_free(seg, ret_ptrs[j]);
                        return r;
                }
                ret_ptrs[i] = seg->base + off;
        }
        return 0;
}

int mseg_free_many(mseg *seg, void **ptrs, size_t n) {
        int first = 0;

        if (!seg || (!ptrs && n))
                return mseg__error(-EINVAL, "mseg_free_many: NULL argument");
        for (size_t i = 0; i < n; i++) {
                int r = mseg_free(seg, ptrs[i]);
                if (r < 0 && first == 0)
                        first = r;
        }
        return first;
}

/* ---- figures ---- */

uint64_t mseg__alloc_live_blocks(struct mseg *seg) {
        struct mseg__alloc_local *L = local_of(seg);
        uint64_t cached[A_NCLASSES], used = 0, ncached = 0, free_units, nlarge;

        if (!L)
                return 0;
        mseg__slots_cached(L, cached);
        for (uint32_t c = 0; c < A_NCLASSES; c++) {
                used += __atomic_load_n(&L->root->pools[c].used, __ATOMIC_RELAXED);
                ncached += cached[c];
        }
        mseg__pages_stats(L, &free_units, &nlarge);
        return (used > ncached ? used - ncached : 0) + nlarge;
}

uint64_t mseg_free_memory(mseg *seg) {
        struct mseg__alloc_local *L = local_of(seg);
        uint64_t cached[A_NCLASSES], bytes, free_units, nlarge;

        if (!L)
                return 0;
        mseg__slots_cached(L, cached);
        mseg__pages_stats(L, &free_units, &nlarge);
        bytes = free_units << A_UNIT_SHIFT;
        /* An empty superblock is free whole (the page layer takes it back
         * when memory runs short); of the others, the free blocks. */
        for (uint32_t c = 0; c < A_NCLASSES; c++) {
                struct a_pool *pl = &L->root->pools[c];
                uint64_t nsb = __atomic_load_n(&pl->nsb, __ATOMIC_RELAXED);
                uint64_t nempty = __atomic_load_n(&pl->nempty, __ATOMIC_RELAXED);
                uint64_t used = __atomic_load_n(&pl->used, __ATOMIC_RELAXED);
                uint64_t total;
                if (nempty > nsb)
                        nempty = nsb;
                total = (nsb - nempty) * L->nblocks[c];
                bytes += nempty * ((uint64_t) L->sb_units << A_UNIT_SHIFT);
                bytes += ((total > used ? total - used : 0) + cached[c]) * mseg__class_size[c];
        }
        return bytes;
}

int mseg_all_memory_deallocated(mseg *seg) {
        if (!local_of(seg))
                return mseg__error(-EINVAL, "no segment");
        return mseg__alloc_live_blocks(seg) == 0;
}

int mseg_zero_free_memory(mseg *seg) {
        struct mseg__alloc_local *L = local_of(seg);
        int r;

        if (!L)
                return mseg__error(-EINVAL, "no segment");
        if (!L->writable)
                return mseg__error(-EROFS, "segment is mapped read-only");
        /* Blocks in this thread's magazines are free too: return them
         * first. Other threads' magazines are theirs to hand out at any
         * moment, so their blocks are left as they are. */
        mseg__slot_flush_own(L);
        for (uint32_t c = 0; c < A_NCLASSES; c++) {
                uint32_t nb = L->nblocks[c], words = (nb + 63) / 64, lim;
                r = pool_lock(L, c);
                if (r < 0)
                        return r;
                lim = desc_limit(L);
                for (uint32_t di = 0; di < lim; di++) {
                        struct a_desc *d = a_desc_at(L, di);
                        if (atomic_load_explicit(&d->live, memory_order_relaxed) != (A_DESC_LIVE | c))
                                continue;
                        for (uint32_t w = 0; w < words; w++) {
                                uint64_t m = ~d->bits[w] & (w == words - 1 ? last_mask(nb) : ~UINT64_C(0));
                                while (m) {
                                        uint32_t idx = w * 64 + (uint32_t) __builtin_ctzll(m);
                                        m &= m - 1;
                                        a_zero(L, L->base + sb_off(L, di) + (uint64_t) idx * mseg__class_size[c],
                                               mseg__class_size[c]);
                                }
                        }
                }
                pool_unlock(L, c);
        }
        return mseg__pages_zero_free(L, L->seg->kind == MSEG__KIND_BUFFER);
}

/* ---- check ---- */

static int check_class(struct mseg__alloc_local *L, uint32_t c) {
        struct a_pool *pl = &L->root->pools[c];
        uint32_t nb = L->nblocks[c], words = (nb + 63) / 64, lim = desc_limit(L);
        uint64_t used = 0, nsb = 0, nempty = 0, listed = 0;

        if (atomic_load_explicit(&pl->intent.op, memory_order_relaxed) != A_OP_NONE)
                return pcorrupt(c, "intent record left set");
        for (uint32_t di = 0; di < lim; di++) {
                struct a_desc *d = a_desc_at(L, di);
                uint32_t pop = 0;
                if (atomic_load_explicit(&d->live, memory_order_relaxed) != (A_DESC_LIVE | c))
                        continue;
                if (d->bits[words - 1] & ~last_mask(nb))
                        return pcorrupt(c, "bits set past the last block");
                for (uint32_t w = 0; w < words; w++)
                        pop += (uint32_t) __builtin_popcountll(d->bits[w]);
                if (d->nblocks != nb || d->nfree != nb - pop)
                        return pcorrupt(c, "superblock free count disagrees with its bitmap");
                if ((d->nfree != 0) != (d->listed != 0))
                        return pcorrupt(c, "superblock with free blocks missing from the list");
                nsb++;
                used += pop;
                nempty += d->nfree == nb;
                listed += d->listed != 0;
        }
        if (nsb != pl->nsb || used != pl->used || nempty != pl->nempty)
                return pcorrupt(c, "class counters disagree with the superblocks");
        {
                uint32_t v = pl->head, prev = 0;
                uint64_t n = 0;
                while (v) {
                        struct a_desc *d = list_desc(L, c, v);
                        if (!d)
                                return pcorrupt(c, "superblock list link");
                        if (++n > listed)
                                return pcorrupt(c, "superblock list is longer than the listed superblocks (a cycle?)");
                        if (d->prev != prev || !d->listed)
                                return pcorrupt(c, "superblock list back link");
                        prev = v;
                        v = d->next;
                }
                if (n != listed || pl->tail != prev)
                        return pcorrupt(c, "superblock list misses a listed superblock");
        }
        return 0;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

/* Every cached offset is a block of its class with its bit set; a block is
 * in at most one magazine (checked where the magazines hold still: ours
 * and dead ones, see slot.c). */
static int check_magazine(struct mseg__alloc_local *L, struct a_heap *h, bool dups) {
        uint64_t *all = NULL;
        size_t nall = 0;
        int r = 0;

        for (uint32_t c = 0; c < A_NCLASSES && r == 0; c++) {
                uint32_t n = __atomic_load_n(&h->count[c], __ATOMIC_RELAXED);
                uint64_t *e = heap_ent(h) + L->start[c];
                if (n > L->cap[c]) {
                        r = pcorrupt(c, "magazine count out of range");
                        break;
                }
                /* A live owner pushes and pops without a lock: what lies
                 * past a count read a moment ago may already be anyone's
                 * block. Its entries are judged only where they hold still. */
                if (!n || !dups)
                        continue;
                if (L->writable && (r = pool_lock(L, c)) < 0)
                        break;
                for (uint32_t i = 0; i < n; i++) {
                        struct a_blk b;
                        uint64_t off = __atomic_load_n(&e[i], __ATOMIC_RELAXED);
                        if (blk_find(L, off, &b) != 0 || b.cls != c || !blk_bit(&b)) {
                                r = pcorrupt(c, "magazine holds an offset that is not a cached block");
                                break;
                        }
                }
                if (L->writable)
                        pool_unlock(L, c);
                if (dups && r == 0) {
                        uint64_t *na = realloc(all, (nall + n) * sizeof(*all));
                        if (!na) {
                                r = -ENOMEM;
                                break;
                        }
                        all = na;
                        memcpy(all + nall, e, n * sizeof(*all));
                        nall += n;
                }
        }
        if (r == 0 && nall > 1) {
                qsort(all, nall, sizeof(*all), cmp_u64);
                for (size_t i = 1; i < nall; i++)
                        if (all[i] == all[i - 1]) {
                                r = mseg__error(MSEG_E_CORRUPT, "block at offset %llu is cached twice",
                                                (unsigned long long) all[i]);
                                break;
                        }
        }
        free(all);
        return r;
}

int mseg__alloc_check_heap(struct mseg__alloc_local *L, struct a_heap *h, bool dups) {
        return check_magazine(L, h, dups);
}

int mseg__alloc_check(struct mseg *seg) {
        struct mseg__alloc_local *L = local_of(seg);
        int r;

        if (!L)
                return mseg__error(-EINVAL, "no segment");
        r = mseg__pages_check(L, L->writable);
        if (r < 0)
                return r;
        for (uint32_t c = 0; c < A_NCLASSES; c++) {
                if (L->writable) {
                        r = pool_lock(L, c);
                        if (r < 0)
                                return r;
                }
                r = check_class(L, c);
                if (L->writable)
                        pool_unlock(L, c);
                if (r < 0)
                        return r;
        }
        return mseg__slots_check(L);
}

/* ---- growth and offline resizing ---- */

int mseg__alloc_set_usable(struct mseg *seg, uint64_t new_usable) {
        struct mseg__alloc_local *L = local_of(seg);

        if (!L)
                return mseg__error(-EINVAL, "no segment");
        if (!L->writable)
                return mseg__error(-EROFS, "segment is mapped read-only");
        return mseg__pages_grow(L, new_usable);
}

uint64_t mseg__alloc_min_size(const mseg_header *h) {
        const struct a_root *root = root_of(h);
        uint32_t wild = mseg__pages_wild_offline(root);
        uint64_t data_off = h->alloc_off + A_ROOT_UNITS * A_UNIT;

        if (wild == 0)
                wild = 1;
        return data_off + (uint64_t) wild * A_UNIT + tables_bytes(wild, root->sb_units, root->desc_size);
}

static bool slots_hold_records(const mseg_header *h) {
        const mseg_slot *s = (const mseg_slot *) ((const uint8_t *) h + h->slots_off);

        for (uint32_t i = 0; i < h->nslots; i++)
                if (s[i].heap_off)
                        return true;
        return false;
}

int mseg__alloc_resize(mseg_header *h, uint64_t new_size) {
        struct a_root *root = root_of(h);
        struct a_geom og, ng;
        uint32_t wild, mag_max, sb_units, old_ndesc_used;
        uint8_t *base = (uint8_t *) h;
        uint64_t old_utab_bytes, old_desc_bytes;
        int r;

        r = mseg__alloc_geometry(h->size, h->alloc_off, root->sb_units, root->mag_max, &og);
        if (r < 0 || !root_matches(root, h->size, &og))
                return mseg__error(MSEG_E_CORRUPT, "allocator geometry does not match the segment size");
        /* Caches may take the new size's capacity only if no slot holds a
         * magazine record laid out for the old one. */
        format_params(new_size, &sb_units, &mag_max);
        if (slots_hold_records(h))
                mag_max = root->mag_max;
        r = mseg__alloc_geometry(new_size, h->alloc_off, root->sb_units, mag_max, &ng);
        if (r < 0)
                return mseg__error(-EINVAL, "segment of %llu bytes is too small for the allocator",
                                   (unsigned long long) new_size);
        wild = mseg__pages_wild_offline(root);
        if (wild > og.data_units)
                return mseg__error(MSEG_E_CORRUPT, "allocator wilderness beyond the data");
        if (wild > ng.data_units)
                return mseg__error(-EBUSY, "blocks in use beyond %llu bytes", (unsigned long long) new_size);
        /* Only the entries below the wilderness carry information. */
        old_ndesc_used = (wild + og.sb_units - 1) >> og.sb_shift;
        old_utab_bytes = (uint64_t) wild * sizeof(struct a_unit);
        old_desc_bytes = (uint64_t) old_ndesc_used * og.desc_size;
        if (ng.desc_off >= og.desc_off) {
                /* growing: the tables move up; the unit table is the higher */
                memmove(base + ng.utab_off, base + og.utab_off, old_utab_bytes);
                memmove(base + ng.desc_off, base + og.desc_off, old_desc_bytes);
        } else {
                memmove(base + ng.desc_off, base + og.desc_off, old_desc_bytes);
                memmove(base + ng.utab_off, base + og.utab_off, old_utab_bytes);
        }
        /* Descriptors and unit entries of units that may now be used must
         * read as dead and untagged. */
        memset(base + ng.desc_off + old_desc_bytes, 0, (uint64_t) ng.ndesc * ng.desc_size - old_desc_bytes);
        memset(base + ng.utab_off + old_utab_bytes, 0,
               (uint64_t) ng.data_units * sizeof(struct a_unit) - old_utab_bytes);
        /* The old tables' bytes that are now data: free memory reads as zero. */
        if (ng.desc_off > og.desc_off) {
                uint64_t end = og.utab_off + (uint64_t) og.data_units * sizeof(struct a_unit);
                if (end > ng.desc_off)
                        end = ng.desc_off;
                memset(base + og.desc_off, 0, end - og.desc_off);
        }
        root_set_geometry(root, new_size, &ng);
        return 0;
}
