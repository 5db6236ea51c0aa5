/* SPDX-License-Identifier: MIT */
/*
 * registry.h — the registry's private layout, shared by registry.c (the root,
 * its lock and the construction family) and names.c (the hash index).
 *
 * Three kinds of in-segment structure, all reached by offsets:
 *
 *   root   [hdr->registry_off, +4096): magic, the robust writer lock, the
 *          word naming the current index table, counters, the crash-repair
 *          intent records and the futex word mseg_wait_name() sleeps on.
 *   table  one allocator block: a 64-byte header and 2^k slots of 8 bytes.
 *          A slot is 0 (empty), 1 (tombstone) or a reference to an entry:
 *          (entry_off >> 4) | (top 24 bits of the name's hash) << 40.
 *   entry  one allocator block per object: a 32-byte header, the name and
 *          the type name (each NUL-terminated), an 8-byte back link, then the
 *          object itself, aligned as its type asks.
 *
 * Readers never write: they load the table word, probe slots with acquire
 * loads, and accept an entry only if its generation and its slot are
 * unchanged after they read it (names.c explains the protocol). Writers hold
 * the root's robust lock; every step that a crash could leave half-done is
 * described by an intent record first, so the next lock owner can finish or
 * undo it (registry.c: reg_repair).
 */
#ifndef MSEG_REGISTRY_H
#define MSEG_REGISTRY_H

#include "internal.h"

#define REG_ROOT_MAGIC   UINT32_C(0x4d524731)   /* "MRG1" */
#define REG_TABLE_MAGIC  UINT32_C(0x4d525431)   /* "MRT1" */
#define REG_ENTRY_MAGIC  UINT32_C(0x4d524531)   /* "MRE1" */
#define REG_ROOT_VERSION UINT32_C(1)

/* Slot values. An entry offset is a multiple of 16 and at least data_off
 * (> 16), so a live reference never equals REG_SLOT_TOMB. */
#define REG_SLOT_EMPTY   UINT64_C(0)
#define REG_SLOT_TOMB    UINT64_C(1)
#define REG_REF_OFF_BITS 40                     /* offsets < 2^44 = MSEG_MAX_SIZE */
#define REG_REF_OFF_MASK ((UINT64_C(1) << REG_REF_OFF_BITS) - 1)
#define REG_FRAG_BITS    24

static inline uint64_t reg_ref_make(uint64_t entry_off, uint64_t hash) {
        return (entry_off >> 4) | ((hash >> REG_REF_OFF_BITS) << REG_REF_OFF_BITS);
}
static inline uint64_t reg_ref_off(uint64_t ref) { return (ref & REG_REF_OFF_MASK) << 4; }
static inline uint64_t reg_ref_frag(uint64_t ref) { return ref >> REG_REF_OFF_BITS; }
static inline bool reg_ref_live(uint64_t ref) { return ref > REG_SLOT_TOMB; }

/* The table word: the table's offset >> 4 and a 24-bit generation bumped on
 * every replacement, so one load tells a reader whether the table it walked
 * is still the current one. 0 = no table (no names). */
static inline uint64_t reg_tword_make(uint64_t table_off, uint64_t tgen) {
        return table_off ? (table_off >> 4) | ((tgen & 0xffffff) << REG_REF_OFF_BITS) : 0;
}
static inline uint64_t reg_tword_off(uint64_t w) { return (w & REG_REF_OFF_MASK) << 4; }

#define REG_MIN_LOG2     6                      /* 64 slots */
#define REG_MAX_LOG2     36                     /* 2^36 slots: far beyond any segment */
#define REG_MAX_DEPTH    8                      /* construction nested in init callbacks */

typedef struct reg_table {
        uint32_t magic;                 /* REG_TABLE_MAGIC */
        uint32_t log2cap;
        uint64_t cap;                   /* 1 << log2cap */
        uint64_t reserved[6];
        _Atomic uint64_t slots[];
} reg_table;
static_assert(sizeof(reg_table) == 64, "in-segment layout is ABI");

/* The object starts reg_obj_delta() bytes after its entry, and the 8 bytes
 * before it hold that distance (the back link from an object pointer to its
 * entry). The entry keeps no hash: 32 bytes of header leave the name and
 * the type name in the same cache line for short names, and a rebuild
 * needs only the hash bits the slot keeps (up to 2^24 slots). */
typedef struct reg_entry {
        uint32_t magic;                 /* REG_ENTRY_MAGIC */
        uint8_t kind;                   /* enum mseg_kind */
        uint8_t name_len;               /* 1..255; 0 for anonymous */
        uint8_t type_len;               /* 1..255 */
        uint8_t align_log2;             /* element alignment */
        _Atomic uint64_t gen;           /* unique per construction; 0 once destroyed */
        uint64_t count;                 /* elements */
        uint64_t elem_size;
        char names[];                   /* name NUL type-name NUL */
} reg_entry;
static_assert(sizeof(reg_entry) == 32, "in-segment layout is ABI");
static_assert(offsetof(reg_entry, gen) == 8, "in-segment layout is ABI");

/* Intent records: what a writer is in the middle of (reg_repair). */
enum reg_op {
        REG_OP_NONE = 0,
        REG_OP_CONSTRUCT = 1,           /* entry_off allocated; maybe published at (table_off, slot);
                                         * table_off 0: not published (anonymous: not returned) */
        REG_OP_DESTROY = 2,             /* entry_off being removed from (table_off, slot) and freed;
                                         * table_off 0: no slot (anonymous) */
        REG_OP_REHASH = 3,              /* table word moving from old_off to new_off */
};

typedef struct reg_intent {
        _Atomic uint32_t op;
        uint32_t pad;
        _Atomic uint64_t entry_off;     /* CONSTRUCT/DESTROY: the entry (0 once freed) */
        _Atomic uint64_t table_off;     /* the table holding slot; REHASH: the new table */
        _Atomic uint64_t slot;          /* CONSTRUCT/DESTROY: slot index */
        _Atomic uint64_t old_off;       /* REHASH: the old table (0 once freed) */
        uint64_t reserved[3];
} reg_intent;
static_assert(sizeof(reg_intent) == 64, "in-segment layout is ABI");

typedef struct reg_root {
        /* line 0: read by every find, written only when the table moves */
        uint32_t magic;                 /* REG_ROOT_MAGIC */
        uint32_t version;               /* REG_ROOT_VERSION */
        uint64_t size;                  /* MSEG_REGISTRY_SIZE */
        _Atomic uint64_t table;         /* reg_tword_make(table_off, tgen) */
        uint64_t reserved0[5];

        /* line 1: the writers' lock */
        mseg_lock lock;

        /* line 2: written by writers under the lock; counts are read freely */
        _Atomic uint64_t named_count;
        _Atomic uint64_t unique_count;
        _Atomic uint64_t used;          /* live + tombstone slots in the table */
        _Atomic uint64_t next_gen;      /* last entry generation handed out */
        _Atomic uint64_t tgen;          /* table replacements */
        _Atomic uint64_t min_log2;      /* mseg_reserve_named(): never shrink below */
        _Atomic uint64_t epoch;         /* bumped by every change to the table */
        uint64_t reserved2[1];

        /* line 3: mseg_wait_name() */
        _Atomic uint32_t wake;          /* futex word: bumped on every construct */
        _Atomic uint32_t waiters;       /* writable waiters asleep or about to be */
        uint64_t reserved3[7];

        /* lines 4..: crash repair */
        reg_intent rehash;              /* REG_OP_REHASH only */
        reg_intent op[REG_MAX_DEPTH];   /* CONSTRUCT/DESTROY, one per nesting depth */
} reg_root;
static_assert(offsetof(reg_root, lock) == 64, "in-segment layout is ABI");
static_assert(offsetof(reg_root, named_count) == 128, "in-segment layout is ABI");
static_assert(offsetof(reg_root, wake) == 192, "in-segment layout is ABI");
static_assert(offsetof(reg_root, rehash) == 256, "in-segment layout is ABI");
static_assert(sizeof(reg_root) <= MSEG_REGISTRY_SIZE, "registry root fits its page");

/* A lookup key: everything a probe compares, computed once per call. */
struct reg_key {
        const char *name;
        size_t len;
        uint8_t kind;
        uint64_t hash;
        const mseg_type *type;          /* NULL: any type matches */
        size_t type_len;
};

/* A consistent snapshot of one live entry, as a lookup saw it. */
struct reg_hit {
        uint64_t table_off;
        uint64_t slot;
        uint64_t ref;
        uint64_t entry_off;
        uint64_t gen;
        uint64_t count;
        uint64_t elem_size;
        uint64_t obj_off;
        _Atomic uint64_t *slotp;        /* &table->slots[slot] */
        bool type_ok;                   /* the caller's type matched (or none given) */
};

/* Where the object starts, relative to its entry: after the header, both
 * names and the back link, rounded up to the element alignment (the entry
 * block itself is allocated with that alignment). */
static inline uint64_t reg_obj_delta(unsigned name_len, unsigned type_len, uint64_t align) {
        uint64_t a = align < 16 ? 16 : align;
        uint64_t h = sizeof(reg_entry) + name_len + 1 + type_len + 1 + 8;

        return (h + a - 1) & ~(a - 1);
}

/* A racy read of a plain field of shared memory: read once, never torn for
 * naturally aligned sizes, and no data race for the sanitizers. */
#define REG_LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* Readers may read an entry or a table that a thread of this very process
 * has just freed (and the allocator has poisoned for AddressSanitizer), or
 * that a writer is filling for a new owner; that is by design (a seqlock):
 * the read is validated afterwards and discarded. The functions that do it
 * are exempt from AddressSanitizer and from ThreadSanitizer's access checks
 * (their atomics still order), and use no intercepted libc calls (memcmp,
 * memchr, memcpy) on segment memory. */
#if defined(__SANITIZE_ADDRESS__)
#define REG_READER __attribute__((no_sanitize_address))
#elif defined(__SANITIZE_THREAD__)
#define REG_READER __attribute__((no_sanitize_thread))
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define REG_READER __attribute__((no_sanitize_address))
#elif __has_feature(thread_sanitizer)
#define REG_READER __attribute__((no_sanitize_thread))
#endif
#endif
#ifndef REG_READER
#define REG_READER
#endif

/* Copy @n bytes out of the segment (see REG_READER). */
REG_READER static inline void reg_copy_out(char *dst, const char *seg_src, size_t n) {
        for (size_t i = 0; i < n; i++)
                dst[i] = __atomic_load_n(seg_src + i, __ATOMIC_RELAXED);
}

static inline reg_root *reg_root_of(const struct mseg *seg) {
        return (reg_root *) (seg->base + seg->hdr->registry_off);
}

/* ---- names.c ---- */

void mseg__reg_key(const struct mseg *seg, struct reg_key *k, uint8_t kind, const char *name, size_t len,
                   const mseg_type *type, size_t type_len);
uint64_t mseg__reg_hash(const uint8_t key[16], uint8_t kind, const char *name, size_t len);

/* Lock-free lookup (readers). 1 found (*hit filled; hit->type_ok says
 * whether k->type matched), 0 absent, -EAGAIN after too many concurrent
 * changes, MSEG_E_CORRUPT. Writes nothing. */
int mseg__reg_lookup(struct mseg *seg, const struct reg_key *k, struct reg_hit *hit);

/* Lookup with the lock held: as mseg__reg_lookup, and when absent,
 * *ret_ins is the slot an insert would take in the current table
 * (REG_NO_SLOT when there is no table or no room). */
#define REG_NO_SLOT UINT64_MAX
int mseg__reg_find_locked(struct mseg *seg, const struct reg_key *k, struct reg_hit *hit, uint64_t *ret_ins);

static inline void reg_bump_epoch(reg_root *root) {
        atomic_store_explicit(&root->epoch, atomic_load_explicit(&root->epoch, memory_order_relaxed) + 1,
                              memory_order_relaxed);
}

/* Check an entry reference: bounds, magic, sizes. NULL if bad. */
reg_entry *mseg__reg_entry_at(struct mseg *seg, uint64_t entry_off);

/* A table as validated once: its geometry is read a single time, so that a
 * table freed and reused under a reader cannot make it index out of bounds. */
struct reg_tab {
        reg_table *t;                   /* NULL: no table */
        uint64_t off;
        unsigned log2;
        uint64_t mask;                  /* cap - 1 */
};

/* Validate the table the table word @tword names. 0 (tb->t NULL when the
 * word says "no table") or MSEG_E_CORRUPT. */
int mseg__reg_table(struct mseg *seg, uint64_t tword, struct reg_tab *tb);

/* Writers (lock held). Find the slot a new entry goes in; requires room. */
int mseg__reg_insert_slot(const struct reg_tab *tb, uint64_t hash, uint64_t *ret_slot);
/* Make room for one more name (grow or sweep tombstones): 0 when the table
 * stays, 1 when it was replaced (slot indices changed), or an error. */
int mseg__reg_make_room(struct mseg *seg);
/* After a removal: shrink or free the table when it is mostly empty. */
int mseg__reg_maybe_shrink(struct mseg *seg);
/* Size for at least n names. */
int mseg__reg_reserve(struct mseg *seg, uint64_t n);
/* Finish or undo an interrupted rehash (repair). */
void mseg__reg_repair_rehash(struct mseg *seg);
/* Drop references to dead or invalid entries; recount. (repair) */
int mseg__reg_scrub(struct mseg *seg);
/* Deep check of the table and every entry. */
int mseg__reg_check_table(struct mseg *seg, bool quiescent);

/* A validated copy of an entry's header, read once: later changes by other
 * processes cannot make the caller read out of bounds. */
struct reg_view {
        reg_entry *e;
        uint8_t kind, name_len, type_len, align_log2;
        uint64_t gen, count, elem_size, obj_off;
        const char *name;               /* into the segment, NUL-terminated */
        const char *type_name;
};

/* Read and validate the entry at @entry_off fully (bounds, magic, fields,
 * names, object placement, back link): 0 with *v filled, or MSEG_E_CORRUPT.
 * The generation is reported as read (v->gen, 0 once destroyed); whether a
 * destroyed entry is an error is the caller's call. */
int mseg__reg_entry_check(struct mseg *seg, uint64_t entry_off, struct reg_view *v);
/* The name hash of the (named or unique) entry at @entry_off. */
int mseg__reg_view_hash(struct mseg *seg, uint64_t entry_off, uint64_t *ret_hash);

/* Iteration snapshot: (entry_off, gen) pairs of live entries of @kind. */
struct reg_snap {
        uint64_t off, gen;
};
int mseg__reg_snapshot(struct mseg *seg, uint8_t kind, struct reg_snap **ret, size_t *ret_n);

#endif /* MSEG_REGISTRY_H */
