/* SPDX-License-Identifier: MIT */
/*
 * names.c — the registry's hash index: an open-addressing table of 8-byte
 * slots in the segment, keyed by SipHash-2-4 (libsodium crypto_shorthash)
 * of the name under the segment's random key (hdr->sip_key), probed
 * linearly from the slot given by the hash's top bits.
 *
 * Readers never write and never wait. A slot holds the entry's offset and
 * the top 24 bits of its hash, so most probes reject a slot without touching
 * the entry. Writers (holding the registry lock) never move a live entry
 * inside a table: an entry is published by one release store of its slot
 * after the entry and its object are fully written, and removed by setting
 * its generation to 0 and storing a tombstone, before it is freed. A reader
 * reads the entry's generation, compares and copies what it needs, then
 * re-reads its slot and its generation: if both are unchanged, what it read
 * was the live entry, whole. Otherwise it starts over (bounded).
 *
 * The table is replaced, never changed in size in place: a writer builds the
 * new table beside the old one, publishes it with one store of the root's
 * table word (offset and a generation), then frees the old one (both
 * tables are allocated into and freed from the root's rehash record,
 * crash-atomically, so a kill anywhere leaks neither). A reader
 * still walking the old table may read freed memory (still mapped, so it
 * cannot fault; every offset it reads is bounds-checked and every loop is
 * bounded by the table size), and it notices when it re-checks the table
 * word at the end, and starts over on the new table.
 *
 * The table grows (doubles) when it reaches 7/8 (live + tombstones): a
 * dense table is what keeps it in the cache while the entries it points to
 * stream through, and most probes stay inside one 64-byte line of 8 slots
 * anyway. An insert that finds it 7/8 used with few live names rebuilds it
 * at the same size (sweeping the tombstones); it shrinks when 1/8 full,
 * and is freed when the last name goes, so that an empty registry holds no
 * memory (mseg_all_memory_deallocated). For tables up to 2^24 slots a
 * rebuild needs only the slots (the home slot comes from the stored hash
 * bits); larger ones read each entry's full hash.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "registry.h"

#define LOOKUP_ATTEMPTS 4096    /* starts over at most this often under churn */

uint64_t mseg__reg_hash(const uint8_t key[16], uint8_t kind, const char *name, size_t len) {
        uint8_t out[crypto_shorthash_BYTES];
        uint64_t h;

        crypto_shorthash(out, (const unsigned char *) name, len, key);
        memcpy(&h, out, sizeof(h));
        /* Named and unique objects live in one table: the kind is part of
         * the key, so "x" named and "x" unique are two different keys. */
        if (kind == MSEG_KIND_UNIQUE)
                h ^= UINT64_C(0x9e3779b97f4a7c15);
        return h;
}

void mseg__reg_key(const struct mseg *seg, struct reg_key *k, uint8_t kind, const char *name, size_t len,
                   const mseg_type *type, size_t type_len) {
        k->name = name;
        k->len = len;
        k->kind = kind;
        k->hash = mseg__reg_hash(seg->hdr->sip_key, kind, name, len);
        k->type = type;
        k->type_len = type_len;
}

static inline uint64_t home_slot(uint64_t hash, unsigned log2cap) {
        return hash >> (64 - log2cap);
}

REG_READER int mseg__reg_table(struct mseg *seg, uint64_t tword, struct reg_tab *tb) {
        uint64_t off = reg_tword_off(tword);
        reg_table *t;
        uint32_t magic, log2;
        uint64_t cap;

        tb->t = NULL;
        if (!tword)
                return 0;
        if (off < seg->data_off || (off & 15) || !(t = mseg__at(seg, off, sizeof(reg_table))))
                return mseg__error(MSEG_E_CORRUPT, "registry table offset 0x%llx outside the segment",
                                   (unsigned long long) off);
        magic = REG_LOAD(t->magic);
        log2 = REG_LOAD(t->log2cap);
        cap = REG_LOAD(t->cap);
        if (magic != REG_TABLE_MAGIC || log2 < REG_MIN_LOG2 || log2 > REG_MAX_LOG2 ||
            cap != UINT64_C(1) << log2 ||
            !mseg__at(seg, off, sizeof(reg_table) + cap * sizeof(uint64_t)))
                return mseg__error(MSEG_E_CORRUPT, "registry table at 0x%llx is damaged",
                                   (unsigned long long) off);
        tb->t = t;
        tb->off = off;
        tb->log2 = log2;
        tb->mask = cap - 1;
        return 0;
}

reg_entry *mseg__reg_entry_at(struct mseg *seg, uint64_t off) {
        if (off < seg->data_off || (off & 15))
                return NULL;
        /* The smallest entry: header, a name and a type name of one byte
         * each with their NULs, the back link. */
        return mseg__at(seg, off, sizeof(reg_entry) + 4 + 8);
}

/* Compare bytes of the segment with the caller's. The segment side may be
 * changing under us (the caller validates afterwards), so read it with
 * relaxed loads rather than memcmp, which the sanitizers would flag. */
REG_READER static bool seg_bytes_equal(const char *seg_side, const char *mine, size_t n) {
        size_t i = 0;

        for (; i + 8 <= n; i += 8) {
                uint64_t a, b;
                memcpy(&b, mine + i, 8);
                a = __atomic_load_n((const uint64_t *) (const void *) (seg_side + i), __ATOMIC_RELAXED);
                if (a != b)
                        return false;
        }
        for (; i < n; i++)
                if (__atomic_load_n(seg_side + i, __ATOMIC_RELAXED) != mine[i])
                        return false;
        return true;
}

enum probe_result { PROBE_MISS, PROBE_HIT, PROBE_RETRY, PROBE_BAD };

/* Examine the entry a slot refers to. HIT fills *hit with a validated
 * snapshot; MISS means "not this one"; RETRY means the slot or the entry
 * changed while we read; BAD means the reference or the entry is invalid. */
REG_READER static enum probe_result probe_entry(struct mseg *seg, const struct reg_key *k, _Atomic uint64_t *slot,
                                                uint64_t ref, struct reg_hit *hit) {
        uint64_t off = reg_ref_off(ref), g1, g2, ref2, count, obj_off, esize, names_end;
        reg_entry *e = mseg__reg_entry_at(seg, off);
        unsigned name_len, type_len, align_log2;

        if (!e)
                return PROBE_BAD;
        g1 = atomic_load_explicit(&e->gen, memory_order_acquire);
        if (REG_LOAD(e->magic) != REG_ENTRY_MAGIC)
                return PROBE_BAD;
        if (g1 == 0)
                return PROBE_MISS;      /* being destroyed */
        if (REG_LOAD(e->kind) != k->kind)
                return PROBE_MISS;
        name_len = REG_LOAD(e->name_len);
        type_len = REG_LOAD(e->type_len);
        align_log2 = REG_LOAD(e->align_log2);
        if (name_len != k->len)
                return PROBE_MISS;
        names_end = off + sizeof(reg_entry) + name_len + 1 + type_len + 1;
        if (!mseg__at(seg, off, names_end - off + 8))
                return PROBE_BAD;
        if (!seg_bytes_equal(e->names, k->name, k->len))
                return PROBE_MISS;
        count = REG_LOAD(e->count);
        esize = REG_LOAD(e->elem_size);
        if (align_log2 > 40)
                return PROBE_BAD;
        obj_off = off + reg_obj_delta(name_len, type_len, UINT64_C(1) << align_log2);
        if (obj_off > seg->map_size || (esize && count > (seg->map_size - obj_off) / esize))
                return PROBE_BAD;
        hit->type_ok = true;
        if (k->type)
                hit->type_ok = k->type_len == type_len && esize == k->type->size &&
                               (UINT64_C(1) << align_log2) == k->type->align &&
                               seg_bytes_equal(e->names + name_len + 1, k->type->name, k->type_len);
        /* Validate: nothing we read may have changed since we loaded g1. */
        atomic_thread_fence(memory_order_acquire);
        ref2 = atomic_load_explicit(slot, memory_order_acquire);
        g2 = atomic_load_explicit(&e->gen, memory_order_acquire);
        if (ref2 != ref || g2 != g1)
                return PROBE_RETRY;
        hit->ref = ref;
        hit->entry_off = off;
        hit->gen = g1;
        hit->count = count;
        hit->elem_size = esize;
        hit->obj_off = obj_off;
        hit->slotp = slot;
        return PROBE_HIT;
}

REG_READER int mseg__reg_lookup(struct mseg *seg, const struct reg_key *k, struct reg_hit *hit) {
        reg_root *root = reg_root_of(seg);
        uint64_t frag = k->hash >> REG_REF_OFF_BITS;

        for (unsigned attempt = 0; attempt < LOOKUP_ATTEMPTS; attempt++) {
                uint64_t w = atomic_load_explicit(&root->table, memory_order_acquire);
                uint64_t mask, i;
                struct reg_tab tb;
                reg_table *t;
                int err;

                if (!w)
                        return 0;
                err = mseg__reg_table(seg, w, &tb);
                if (err < 0) {
                        if (atomic_load_explicit(&root->table, memory_order_acquire) != w)
                                continue;
                        return err;
                }
                t = tb.t;
                mask = tb.mask;
                i = home_slot(k->hash, tb.log2);
                for (uint64_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
                        uint64_t ref = atomic_load_explicit(&t->slots[i], memory_order_acquire);
                        enum probe_result pr;

                        if (ref == REG_SLOT_EMPTY)
                                break;
                        if (ref == REG_SLOT_TOMB || reg_ref_frag(ref) != frag)
                                continue;
                        pr = probe_entry(seg, k, &t->slots[i], ref, hit);
                        if (pr == PROBE_MISS)
                                continue;
                        if (pr == PROBE_HIT) {
                                if (atomic_load_explicit(&root->table, memory_order_acquire) != w)
                                        goto again;
                                hit->table_off = tb.off;
                                hit->slot = i;
                                return 1;
                        }
                        if (pr == PROBE_RETRY)
                                goto again;
                        /* BAD: a stale read of a moving slot or table, or damage. */
                        if (atomic_load_explicit(&t->slots[i], memory_order_acquire) != ref ||
                            atomic_load_explicit(&root->table, memory_order_acquire) != w)
                                goto again;
                        return mseg__error(MSEG_E_CORRUPT, "registry slot %llu refers to a damaged entry at 0x%llx",
                                           (unsigned long long) i, (unsigned long long) reg_ref_off(ref));
                }
                atomic_thread_fence(memory_order_acquire);
                if (atomic_load_explicit(&root->table, memory_order_acquire) == w)
                        return 0;
again:
                continue;
        }
        return mseg__error(-EAGAIN, "registry lookup kept racing with writers; try again");
}

/* ---------------------------------------------------------------- writers */

int mseg__reg_find_locked(struct mseg *seg, const struct reg_key *k, struct reg_hit *hit, uint64_t *ret_ins) {
        reg_root *root = reg_root_of(seg);
        uint64_t frag = k->hash >> REG_REF_OFF_BITS, mask, i, ins = REG_NO_SLOT;
        struct reg_tab tb;
        int err;

        *ret_ins = REG_NO_SLOT;
        err = mseg__reg_table(seg, atomic_load_explicit(&root->table, memory_order_relaxed), &tb);
        if (err < 0 || !tb.t)
                return err;
        mask = tb.mask;
        i = home_slot(k->hash, tb.log2);
        for (uint64_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
                uint64_t ref = atomic_load_explicit(&tb.t->slots[i], memory_order_relaxed);
                enum probe_result pr;

                if (ref == REG_SLOT_EMPTY) {
                        *ret_ins = ins == REG_NO_SLOT ? i : ins;
                        return 0;
                }
                if (ref == REG_SLOT_TOMB) {
                        if (ins == REG_NO_SLOT)
                                ins = i;
                        continue;
                }
                if (reg_ref_frag(ref) != frag)
                        continue;
                pr = probe_entry(seg, k, &tb.t->slots[i], ref, hit);
                if (pr == PROBE_MISS)
                        continue;
                if (pr != PROBE_HIT)    /* nothing moves under the lock: damage */
                        return mseg__error(MSEG_E_CORRUPT, "registry slot %llu refers to a damaged entry at 0x%llx",
                                           (unsigned long long) i, (unsigned long long) reg_ref_off(ref));
                hit->table_off = tb.off;
                hit->slot = i;
                return 1;
        }
        *ret_ins = ins;
        return 0;
}

int mseg__reg_insert_slot(const struct reg_tab *tb, uint64_t hash, uint64_t *ret_slot) {
        uint64_t mask = tb->mask, i = home_slot(hash, tb->log2);

        for (uint64_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
                uint64_t ref = atomic_load_explicit(&tb->t->slots[i], memory_order_relaxed);
                if (!reg_ref_live(ref)) {
                        *ret_slot = i;
                        return 0;
                }
        }
        return mseg__error(MSEG_E_CORRUPT, "registry table is full");
}

/* Replace the table by one of 2^new_log2 slots holding the same live
 * entries (new_log2 == 0: no table). Lock held. Crash-safe through the
 * root's rehash intent: see mseg__reg_repair_rehash(). */
static int reg_rehash(struct mseg *seg, unsigned new_log2) {
        reg_root *root = reg_root_of(seg);
        reg_intent *ri = &root->rehash;
        uint64_t w = atomic_load_explicit(&root->table, memory_order_relaxed);
        uint64_t old_off = 0, new_off = 0, live = 0, tgen;
        reg_table *old, *nt = NULL;
        struct reg_tab ot;
        int err;

        err = mseg__reg_table(seg, w, &ot);
        if (err < 0)
                return err;
        old = ot.t;
        if (old)
                old_off = ot.off;
        atomic_store_explicit(&ri->table_off, 0, memory_order_relaxed);
        atomic_store_explicit(&ri->old_off, old_off, memory_order_relaxed);
        atomic_store_explicit(&ri->op, REG_OP_REHASH, memory_order_release);

        if (new_log2) {
                uint64_t cap = UINT64_C(1) << new_log2, mask = cap - 1;

                /* Allocated into the record (crash-atomic): a kill leaves
                 * the new table recorded for the repair, or not allocated. */
                err = mseg__alloc_into_off(seg, sizeof(reg_table) + cap * sizeof(uint64_t), 64, &ri->table_off);
                if (err < 0) {
                        atomic_store_explicit(&ri->op, REG_OP_NONE, memory_order_release);
                        return mseg__error(err, "no memory for a registry table of %llu slots",
                                           (unsigned long long) cap);
                }
                new_off = atomic_load_explicit(&ri->table_off, memory_order_relaxed);
                MSEG_TEST_HOOK("registry.rehash.allocated");
                nt = (reg_table *) (seg->base + new_off);
                memset(nt, 0, sizeof(reg_table) + cap * sizeof(uint64_t));
                nt->magic = REG_TABLE_MAGIC;
                nt->log2cap = new_log2;
                nt->cap = cap;
                for (uint64_t j = 0; old && j <= ot.mask; j++) {
                        uint64_t ref = atomic_load_explicit(&old->slots[j], memory_order_relaxed), i, hash;

                        if (!reg_ref_live(ref))
                                continue;
                        if (new_log2 <= REG_FRAG_BITS) {
                                i = reg_ref_frag(ref) >> (REG_FRAG_BITS - new_log2);
                        } else {
                                /* The home slot needs more hash bits than
                                 * the slot keeps: hash the entry's name. A
                                 * damaged one is not carried over (its
                                 * block leaks; the index stays sound). */
                                if (mseg__reg_view_hash(seg, reg_ref_off(ref), &hash) < 0 ||
                                    (hash >> REG_REF_OFF_BITS) != reg_ref_frag(ref))
                                        continue;
                                i = home_slot(hash, new_log2);
                        }
                        if (++live * 8 > cap * 7) {
                                /* The counters said fewer names than the
                                 * table holds: never drop names, give up. */
                                (void) mseg__free_from(seg, &ri->table_off);
                                atomic_store_explicit(&ri->op, REG_OP_NONE, memory_order_release);
                                return mseg__error(MSEG_E_CORRUPT, "registry counters disagree with its table");
                        }
                        for (uint64_t n = 0; n <= mask; n++, i = (i + 1) & mask)
                                if (atomic_load_explicit(&nt->slots[i], memory_order_relaxed) == REG_SLOT_EMPTY)
                                        break;
                        atomic_store_explicit(&nt->slots[i], ref, memory_order_relaxed);
                }
        }

        MSEG_TEST_HOOK("registry.rehash.built");
        /* Publish: one store makes the new table (or none) current. */
        tgen = atomic_load_explicit(&root->tgen, memory_order_relaxed) + 1;
        atomic_store_explicit(&root->tgen, tgen, memory_order_relaxed);
        atomic_store_explicit(&root->table, reg_tword_make(new_off, tgen), memory_order_release);
        atomic_store_explicit(&root->used, live, memory_order_relaxed);
        reg_bump_epoch(root);

        MSEG_TEST_HOOK("registry.rehash.published");
        /* Freed from the record (crash-atomic): a kill leaves it freed and
         * forgotten, or allocated and recorded for the repair to free. */
        if (old_off)
                (void) mseg__free_from(seg, &ri->old_off);
        atomic_store_explicit(&ri->op, REG_OP_NONE, memory_order_release);
        return 0;
}

void mseg__reg_repair_rehash(struct mseg *seg) {
        reg_root *root = reg_root_of(seg);
        reg_intent *ri = &root->rehash;
        uint64_t cur, new_off, old_off;

        if (atomic_load_explicit(&ri->op, memory_order_acquire) != REG_OP_REHASH)
                return;
        cur = reg_tword_off(atomic_load_explicit(&root->table, memory_order_acquire));
        new_off = atomic_load_explicit(&ri->table_off, memory_order_relaxed);
        old_off = atomic_load_explicit(&ri->old_off, memory_order_relaxed);
        if (cur == new_off && cur != old_off) {
                /* Published: only the old table may be left to free. */
                if (old_off)
                        (void) mseg__free_from(seg, &ri->old_off);
        } else if (new_off) {
                /* Never published: the new table is garbage. */
                (void) mseg__free_from(seg, &ri->table_off);
        }
        atomic_store_explicit(&ri->op, REG_OP_NONE, memory_order_release);
}

static unsigned log2_for(uint64_t names, unsigned load_shift) {
        /* smallest power of two >= names << load_shift */
        uint64_t want = names << load_shift;
        unsigned l = REG_MIN_LOG2;

        while (l < REG_MAX_LOG2 && (UINT64_C(1) << l) < want)
                l++;
        return l;
}

static uint64_t live_names(reg_root *root) {
        return atomic_load_explicit(&root->named_count, memory_order_relaxed) +
               atomic_load_explicit(&root->unique_count, memory_order_relaxed);
}

int mseg__reg_make_room(struct mseg *seg) {
        reg_root *root = reg_root_of(seg);
        uint64_t w = atomic_load_explicit(&root->table, memory_order_relaxed);
        uint64_t live = live_names(root), used, cap;
        unsigned min_log2 = (unsigned) atomic_load_explicit(&root->min_log2, memory_order_relaxed);
        unsigned l;
        struct reg_tab tb;
        int err;

        if (min_log2 > REG_MAX_LOG2)
                min_log2 = REG_MAX_LOG2;
        if (!w) {
                l = log2_for(live + 1, 1);
                err = reg_rehash(seg, l > min_log2 ? l : min_log2);
                return err < 0 ? err : 1;
        }
        err = mseg__reg_table(seg, w, &tb);
        if (err < 0)
                return err;
        cap = tb.mask + 1;
        used = atomic_load_explicit(&root->used, memory_order_relaxed);
        if ((used + 1) * 8 <= cap * 7)
                return 0;
        /* Grow to half full; if that is the size we have, this rebuild just
         * sweeps the tombstones. */
        l = log2_for(live + 1, 1);
        if (l < min_log2)
                l = min_log2;
        if (l < tb.log2 && (live + 1) * 4 > cap)
                l = tb.log2;
        if (l >= REG_MAX_LOG2 && (live + 1) * 8 > (UINT64_C(1) << REG_MAX_LOG2) * 7)
                return mseg__error(-ENOSPC, "registry index is at its maximum size");
        err = reg_rehash(seg, l);
        return err < 0 ? err : 1;
}

int mseg__reg_maybe_shrink(struct mseg *seg) {
        reg_root *root = reg_root_of(seg);
        uint64_t w = atomic_load_explicit(&root->table, memory_order_relaxed);
        uint64_t live = live_names(root);
        unsigned min_log2 = (unsigned) atomic_load_explicit(&root->min_log2, memory_order_relaxed);
        unsigned l;
        struct reg_tab tb;
        int err;

        if (!w)
                return 0;
        if (live == 0)
                return reg_rehash(seg, 0);
        err = mseg__reg_table(seg, w, &tb);
        if (err < 0)
                return err;
        if (tb.log2 > REG_MIN_LOG2 && tb.log2 > min_log2 && live * 8 < tb.mask + 1) {
                l = log2_for(live, 2);
                if (l < min_log2)
                        l = min_log2;
                if (l < tb.log2)
                        return reg_rehash(seg, l);
        }
        /* Tombstones are swept by the next insert that finds the table
         * 7/8 used (mseg__reg_make_room), not here: a run of destroys then
         * pays for no rebuild it does not need. */
        return 0;
}

int mseg__reg_reserve(struct mseg *seg, uint64_t n) {
        reg_root *root = reg_root_of(seg);
        uint64_t w = atomic_load_explicit(&root->table, memory_order_relaxed);
        unsigned l = log2_for(n ? n : 1, 1);
        struct reg_tab tb;
        int err;

        if (n > (UINT64_C(1) << (REG_MAX_LOG2 - 1)))
                return mseg__error(-ENOMEM, "cannot reserve room for %llu names", (unsigned long long) n);
        err = mseg__reg_table(seg, w, &tb);
        if (err < 0)
                return err;
        if (!tb.t || tb.log2 < l) {
                err = reg_rehash(seg, l);
                if (err < 0)
                        return err;     /* and no floor that every growth would fail to reach */
        }
        atomic_store_explicit(&root->min_log2, l, memory_order_relaxed);
        return 0;
}

/* ------------------------------------------------------------- checking */

REG_READER static bool names_ok(const char *n, unsigned name_len, unsigned type_len) {
        for (unsigned i = 0; i < name_len; i++)
                if (REG_LOAD(n[i]) == 0)
                        return false;
        if (REG_LOAD(n[name_len]) != 0)
                return false;
        n += name_len + 1;
        for (unsigned i = 0; i < type_len; i++)
                if (REG_LOAD(n[i]) == 0)
                        return false;
        return type_len && REG_LOAD(n[type_len]) == 0;
}

REG_READER int mseg__reg_entry_check(struct mseg *seg, uint64_t off, struct reg_view *v) {
        reg_entry *e = mseg__reg_entry_at(seg, off);
        uint64_t delta, back;

        if (!e)
                return mseg__error(MSEG_E_CORRUPT, "registry entry offset 0x%llx out of range",
                                   (unsigned long long) off);
        v->e = e;
        v->gen = atomic_load_explicit(&e->gen, memory_order_acquire);
        if (REG_LOAD(e->magic) != REG_ENTRY_MAGIC)
                return mseg__error(MSEG_E_CORRUPT, "registry entry at 0x%llx has a bad magic",
                                   (unsigned long long) off);
        v->kind = REG_LOAD(e->kind);
        v->name_len = REG_LOAD(e->name_len);
        v->type_len = REG_LOAD(e->type_len);
        v->align_log2 = REG_LOAD(e->align_log2);
        v->count = REG_LOAD(e->count);
        v->elem_size = REG_LOAD(e->elem_size);
        v->name = e->names;
        v->type_name = e->names + v->name_len + 1;
        if (v->kind < MSEG_KIND_NAMED || v->kind > MSEG_KIND_ANONYMOUS ||
            (v->kind == MSEG_KIND_ANONYMOUS) != (v->name_len == 0) || v->type_len == 0 ||
            v->align_log2 > 40 || v->elem_size == 0)
                return mseg__error(MSEG_E_CORRUPT, "registry entry at 0x%llx has bad fields",
                                   (unsigned long long) off);
        if (!mseg__at(seg, off, sizeof(reg_entry) + v->name_len + 1 + v->type_len + 1 + 8) ||
            !names_ok(e->names, v->name_len, v->type_len))
                return mseg__error(MSEG_E_CORRUPT, "registry entry at 0x%llx has damaged names",
                                   (unsigned long long) off);
        delta = reg_obj_delta(v->name_len, v->type_len, UINT64_C(1) << v->align_log2);
        v->obj_off = off + delta;
        if (v->obj_off > seg->map_size || v->count > (seg->map_size - v->obj_off) / v->elem_size)
                return mseg__error(MSEG_E_CORRUPT, "registry entry at 0x%llx: object outside the segment",
                                   (unsigned long long) off);
        back = REG_LOAD(*(uint64_t *) (void *) (seg->base + v->obj_off - 8));
        if (back != delta)
                return mseg__error(MSEG_E_CORRUPT, "registry entry at 0x%llx: damaged back link",
                                   (unsigned long long) off);
        return 0;
}

REG_READER int mseg__reg_view_hash(struct mseg *seg, uint64_t off, uint64_t *ret_hash) {
        char name[MSEG_NAME_MAX + 1];
        struct reg_view v;
        int r = mseg__reg_entry_check(seg, off, &v);

        if (r < 0)
                return r;
        if (v.kind == MSEG_KIND_ANONYMOUS)
                return mseg__error(MSEG_E_CORRUPT, "registry entry at 0x%llx is anonymous", (unsigned long long) off);
        reg_copy_out(name, v.name, v.name_len);
        *ret_hash = mseg__reg_hash(seg->hdr->sip_key, v.kind, name, v.name_len);
        return 0;
}

int mseg__reg_scrub(struct mseg *seg) {
        reg_root *root = reg_root_of(seg);
        uint64_t w = atomic_load_explicit(&root->table, memory_order_relaxed);
        uint64_t named = 0, unique = 0, tombs = 0;
        struct reg_tab tb;
        reg_table *t;
        int err;

        err = mseg__reg_table(seg, w, &tb);
        if (err < 0)
                return err;
        t = tb.t;
        if (t) {
                for (uint64_t i = 0; i <= tb.mask; i++) {
                        uint64_t ref = atomic_load_explicit(&t->slots[i], memory_order_relaxed), off, hash;
                        struct reg_view v;

                        if (ref == REG_SLOT_EMPTY)
                                continue;
                        if (ref == REG_SLOT_TOMB) {
                                tombs++;
                                continue;
                        }
                        off = reg_ref_off(ref);
                        if (mseg__reg_entry_check(seg, off, &v) < 0 || v.gen == 0 ||
                            mseg__reg_view_hash(seg, off, &hash) < 0 ||
                            (hash >> REG_REF_OFF_BITS) != reg_ref_frag(ref)) {
                                atomic_store_explicit(&t->slots[i], REG_SLOT_TOMB, memory_order_release);
                                tombs++;
                                continue;
                        }
                        if (v.kind == MSEG_KIND_NAMED)
                                named++;
                        else
                                unique++;
                }
        }
        atomic_store_explicit(&root->named_count, named, memory_order_relaxed);
        atomic_store_explicit(&root->unique_count, unique, memory_order_relaxed);
        atomic_store_explicit(&root->used, named + unique + tombs, memory_order_relaxed);
        return 0;
}

/* Deep check (mseg_check): every live slot refers to a sound entry whose
 * name hashes to it, is reachable from its home slot, and is the only
 * entry with its key on that path; the counters match.
 *
 * @quiescent: the caller holds the lock, so nothing moves. Otherwise (a
 * read-only mapping, writers busy elsewhere) a finding counts only if the
 * slots involved still hold what we read, and the counters, which writers
 * change one step apart from the slots, are not compared. An EMPTY slot
 * never reappears inside a table, so reachability needs no such care. */
REG_READER static bool moved(_Atomic uint64_t *slot, uint64_t ref) {
        atomic_thread_fence(memory_order_acquire);
        return atomic_load_explicit(slot, memory_order_acquire) != ref;
}

REG_READER int mseg__reg_check_table(struct mseg *seg, bool quiescent) {
        reg_root *root = reg_root_of(seg);
        uint64_t w = atomic_load_explicit(&root->table, memory_order_acquire);
        uint64_t named = 0, unique = 0, tombs = 0, mask;
        struct reg_tab tb;
        reg_table *t;
        int err;

        if (!w) {
                if (quiescent && live_names(root))
                        return mseg__error(MSEG_E_CORRUPT, "registry counts names but has no table");
                return 0;
        }
        err = mseg__reg_table(seg, w, &tb);
        if (err < 0)
                return err;
        t = tb.t;
        mask = tb.mask;
        for (uint64_t i = 0; i <= mask; i++) {
                uint64_t ref = atomic_load_explicit(&t->slots[i], memory_order_acquire), off, j, hash = 0;
                char name[MSEG_NAME_MAX + 1];
                struct reg_view v;
                int r;

                if (ref == REG_SLOT_EMPTY)
                        continue;
                if (ref == REG_SLOT_TOMB) {
                        tombs++;
                        continue;
                }
                off = reg_ref_off(ref);
                r = mseg__reg_entry_check(seg, off, &v);
                if (r == 0 && v.gen == 0) {
                        if (!quiescent)
                                continue;       /* being destroyed right now */
                        r = mseg__error(MSEG_E_CORRUPT, "registry entry at 0x%llx is indexed but destroyed",
                                        (unsigned long long) off);
                }
                if (r == 0 && v.kind == MSEG_KIND_ANONYMOUS)
                        r = mseg__error(MSEG_E_CORRUPT, "registry slot %llu: anonymous entry indexed",
                                        (unsigned long long) i);
                if (r == 0) {
                        reg_copy_out(name, v.name, v.name_len);
                        hash = mseg__reg_hash(seg->hdr->sip_key, v.kind, name, v.name_len);
                        if ((hash >> REG_REF_OFF_BITS) != reg_ref_frag(ref))
                                r = mseg__error(MSEG_E_CORRUPT, "registry slot %llu: hash of \"%.*s\" does not match",
                                                (unsigned long long) i, (int) v.name_len, name);
                }
                if (r < 0) {
                        if (!quiescent && moved(&t->slots[i], ref))
                                continue;
                        return r;
                }
                /* Reachable from home, and no duplicate key on the way. */
                for (j = home_slot(hash, tb.log2); j != i; j = (j + 1) & mask) {
                        uint64_t r2 = atomic_load_explicit(&t->slots[j], memory_order_acquire);
                        struct reg_view v2;

                        if (r2 == REG_SLOT_EMPTY)
                                return mseg__error(MSEG_E_CORRUPT, "registry slot %llu: \"%.*s\" is unreachable",
                                                   (unsigned long long) i, (int) v.name_len, name);
                        if (r2 == ref) {
                                if (!quiescent && (moved(&t->slots[i], ref) || moved(&t->slots[j], r2)))
                                        continue;
                                return mseg__error(MSEG_E_CORRUPT, "registry: entry 0x%llx indexed twice",
                                                   (unsigned long long) off);
                        }
                        if (!reg_ref_live(r2) || reg_ref_frag(r2) != reg_ref_frag(ref))
                                continue;
                        if (mseg__reg_entry_check(seg, reg_ref_off(r2), &v2) == 0 && v2.gen &&
                            v2.kind == v.kind && v2.name_len == v.name_len &&
                            seg_bytes_equal(v2.name, name, v.name_len)) {
                                if (!quiescent && (moved(&t->slots[i], ref) || moved(&t->slots[j], r2)))
                                        continue;
                                return mseg__error(MSEG_E_CORRUPT, "registry: name \"%.*s\" indexed twice",
                                                   (int) v.name_len, name);
                        }
                }
                if (v.kind == MSEG_KIND_NAMED)
                        named++;
                else
                        unique++;
        }
        if (!quiescent)
                return 0;
        if (named + unique + tombs > mask)
                return mseg__error(MSEG_E_CORRUPT, "registry table has no empty slot");
        if (named != atomic_load_explicit(&root->named_count, memory_order_relaxed) ||
            unique != atomic_load_explicit(&root->unique_count, memory_order_relaxed))
                return mseg__error(MSEG_E_CORRUPT, "registry counts %llu named and %llu unique, the table holds %llu and %llu",
                                   (unsigned long long) atomic_load_explicit(&root->named_count, memory_order_relaxed),
                                   (unsigned long long) atomic_load_explicit(&root->unique_count, memory_order_relaxed),
                                   (unsigned long long) named, (unsigned long long) unique);
        if (named + unique + tombs != atomic_load_explicit(&root->used, memory_order_relaxed))
                return mseg__error(MSEG_E_CORRUPT, "registry slot usage count is wrong");
        return 0;
}

REG_READER int mseg__reg_snapshot(struct mseg *seg, uint8_t kind, struct reg_snap **ret, size_t *ret_n) {
        reg_root *root = reg_root_of(seg);

        for (unsigned attempt = 0; attempt < 64; attempt++) {
                uint64_t w = atomic_load_explicit(&root->table, memory_order_acquire);
                struct reg_snap *v = NULL;
                size_t n = 0, cap = 0;
                struct reg_tab tb;
                reg_table *t;
                int err;

                if (!w) {
                        *ret = NULL;
                        *ret_n = 0;
                        return 0;
                }
                err = mseg__reg_table(seg, w, &tb);
                if (err < 0) {
                        if (atomic_load_explicit(&root->table, memory_order_acquire) != w)
                                continue;
                        return err;
                }
                t = tb.t;
                for (uint64_t i = 0; i <= tb.mask; i++) {
                        uint64_t ref = atomic_load_explicit(&t->slots[i], memory_order_acquire), off, g;
                        reg_entry *e;

                        if (!reg_ref_live(ref))
                                continue;
                        off = reg_ref_off(ref);
                        e = mseg__reg_entry_at(seg, off);
                        if (!e)
                                continue;
                        g = atomic_load_explicit(&e->gen, memory_order_acquire);
                        if (!g || REG_LOAD(e->magic) != REG_ENTRY_MAGIC || REG_LOAD(e->kind) != kind)
                                continue;
                        if (atomic_load_explicit(&t->slots[i], memory_order_acquire) != ref)
                                continue;
                        if (n == cap) {
                                size_t nc = cap ? cap * 2 : 64;
                                struct reg_snap *nv = realloc(v, nc * sizeof(*v));
                                if (!nv) {
                                        free(v);
                                        return mseg__error(-ENOMEM, "out of memory for the iteration snapshot");
                                }
                                v = nv;
                                cap = nc;
                        }
                        v[n].off = off;
                        v[n].gen = g;
                        n++;
                }
                atomic_thread_fence(memory_order_acquire);
                if (atomic_load_explicit(&root->table, memory_order_acquire) != w) {
                        free(v);
                        continue;
                }
                *ret = v;
                *ret_n = n;
                return 0;
        }
        return mseg__error(-EAGAIN, "registry iteration kept racing with writers; try again");
}
