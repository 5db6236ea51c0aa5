/* SPDX-License-Identifier: MIT */
/*
 * registry.c — named, unique and anonymous objects: the registry root, its
 * writer lock and crash repair, and the construction family (construct,
 * find_or_construct, find, destroy, destroy_ptr, the unique and anonymous
 * variants, instance information, mseg_atomic, mseg_wait_name, iteration).
 * The hash index itself is names.c; the layout is registry.h.
 *
 * An object is one allocator block: an entry header, its name and type name,
 * a back link, then the elements. Constructing a name is: lock, check the
 * name is absent, allocate, run init on every element, make room in the
 * index, then publish the entry with one store of its slot, all under the
 * root's robust lock, so two racing creators get exactly one object, and
 * readers (who never lock) see it whole or not at all. Destroying is: lock,
 * mark the entry dead and tombstone its slot, run the destructors, free.
 * Anonymous objects have an entry but no slot; they take the same lock and
 * intent record all the same (init and the destructors run under it, as
 * for names), so that a kill inside one leaks nothing either: an anonymous
 * construction killed before it returned is freed (nobody got its pointer),
 * a destroy_ptr killed after it marked the object dead is finished.
 *
 * Crash repair. Before a step that a SIGKILL could leave half-done, a writer
 * fills an intent record in the root (one per nesting depth, since init and
 * destroy callbacks may construct too, plus one for index rebuilds). The
 * next locker that gets EOWNERDEAD (mseg__lock() returns 1) replays them:
 * a construction not yet published (or, anonymous, not yet returned) is
 * freed, a destruction is completed,
 * a rebuild is finished or undone; then the counters are recounted from the
 * table. Blocks are allocated into and freed from the records with the
 * allocator's crash-atomic steps (mseg__alloc_into_off, mseg__free_from):
 * after a crash a record names an allocated block or holds 0, never a
 * freed block nor an allocated block unnamed, so a kill leaks nothing and
 * frees nothing twice. A writer that died inside such a step left it to the
 * allocator lock's repair, which writes the record: the registry's repair
 * first settles the allocator (mseg__alloc_settle) and only then reads its
 * records, whichever process repairs which lock first.
 *
 * Lock order: the registry lock, then the allocator's locks (mseg__alloc_off
 * is called with the registry lock held). Nesting: a thread that holds the
 * lock (mseg_atomic, or an init or destroy callback) re-enters without
 * locking again; the depth lives in thread-local storage.
 *
 * Waiting: every construction bumps the root's 32-bit `wake` word; waiters
 * sleep on it with FUTEX_WAIT (shared, not FUTEX_PRIVATE_FLAG: the key is the
 * page, so other processes' wakes reach us) for bounded periods and look
 * again. A wake costs a system call (~270 ns here), so writers only make it
 * when the root's `waiters` count says someone registered; a process with a
 * read-only mapping cannot register, so it sleeps in short, growing steps
 * (1 to 64 ms) instead.
 */
#include <limits.h>
#include <stdio.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "registry.h"

/* ------------------------------------------------------- argument checks */

/* NULL with errno set from @code, keeping the detail already recorded. */
static void *fail_null(int code) {
        errno = mseg__errno_of(code);
        return NULL;
}

static int check_name(const char *name, size_t *ret_len) {
        size_t n;

        if (!name)
                return mseg__error(-EINVAL, "object name is NULL");
        n = strnlen(name, MSEG_NAME_MAX + 1);
        if (n == 0)
                return mseg__error(-EINVAL, "object name is empty");
        if (n > MSEG_NAME_MAX)
                return mseg__error(-ENAMETOOLONG, "object name longer than %d bytes", MSEG_NAME_MAX);
        *ret_len = n;
        return 0;
}

static int check_type(const mseg_type *t, size_t *ret_len) {
        size_t n;

        if (!t || !t->name)
                return mseg__error(-EINVAL, "no type descriptor");
        n = strnlen(t->name, MSEG_NAME_MAX + 1);
        if (n == 0 || n > MSEG_NAME_MAX)
                return mseg__error(-EINVAL, "type name must be 1..%d bytes", MSEG_NAME_MAX);
        if (t->size == 0 || !mseg__is_pow2(t->align) || t->align > (UINT64_C(1) << 40))
                return mseg__error(-EINVAL, "type %s: size must be > 0 and alignment a power of two",
                                   t->name);
        *ret_len = n;
        return 0;
}

static unsigned log2_of(uint64_t x) {
        return (unsigned) __builtin_ctzll(x);
}

/* --------------------------------------------------- lock and nesting */

/* Which registry locks this thread holds, and how deeply it has nested. */
struct held {
        const reg_root *root;
        unsigned depth;
};
#define MAX_HELD 4
static __thread struct held held_locks[MAX_HELD];

static struct held *held_find(const reg_root *root) {
        for (unsigned i = 0; i < MAX_HELD; i++)
                if (held_locks[i].root == root)
                        return &held_locks[i];
        return NULL;
}

static int reg_repair(struct mseg *seg);

bool mseg__registry_held_by_me(struct mseg *seg) {
        return held_find(reg_root_of(seg)) != NULL;
}

/* Take the registry lock, or nest inside this thread's hold of it. Returns
 * the nesting depth (>= 1) or a negative error. */
static int reg_lock(struct mseg *seg, reg_root *root) {
        struct held *h = held_find(root);
        int r;

        if (h) {
                if (h->depth >= REG_MAX_DEPTH)
                        return mseg__error(-ELOOP, "registry operations nested more than %d deep", REG_MAX_DEPTH);
                return (int) ++h->depth;
        }
        h = held_find(NULL);
        if (!h)
                return mseg__error(-EDEADLK, "thread holds the registry locks of %d segments already", MAX_HELD);
        r = mseg__lock(&root->lock);
        if (r < 0)
                return r;
        h->root = root;
        h->depth = 1;
        if (r == 1) {
                /* The previous owner died inside a registry operation. */
                r = reg_repair(seg);
                if (r == -ETIMEDOUT || r == -EBUSY) {
                        /* An allocator lock it must settle first is held
                         * by a live process: leave the repair to the
                         * next taker rather than poison the segment. */
                        h->root = NULL;
                        h->depth = 0;
                        mseg__unlock_unrepaired(&root->lock);
                        return r;
                }
                if (r < 0 || (r = mseg__lock_consistent(&root->lock)) < 0) {
                        char why[256];

                        snprintf(why, sizeof(why), "%s", mseg_last_error());
                        atomic_fetch_or_explicit(&seg->hdr->state, MSEG_STATE_POISONED, memory_order_relaxed);
                        h->root = NULL;
                        h->depth = 0;
                        mseg__unlock(&root->lock);     /* unrecoverable from now on */
                        return mseg__error(r, "registry repair after a crashed writer failed: %s", why);
                }
        }
        return 1;
}

/* A writer's way in: refused on a read-only mapping, else reg_lock(). */
static int writer_lock(struct mseg *seg, reg_root *root) {
        if (seg->read_only)
                return mseg__error(-EROFS, "segment is mapped read-only");
        return reg_lock(seg, root);
}

static void reg_unlock(reg_root *root) {
        struct held *h = held_find(root);

        if (!h)
                return;
        if (--h->depth == 0) {
                h->root = NULL;
                mseg__unlock(&root->lock);
        }
}

/* ----------------------------------------------------------- crash repair */

/* The current table, validated (tb->t NULL: none or damaged). */
static void current_table(struct mseg *seg, struct reg_tab *tb) {
        reg_root *root = reg_root_of(seg);

        if (mseg__reg_table(seg, atomic_load_explicit(&root->table, memory_order_acquire), tb) < 0)
                tb->t = NULL;
}

/* Free the entry block an intent record names, and clear the record, as
 * one crash-atomic step of the allocator (mseg__free_from): after a crash
 * the block is either free and the record 0, or still allocated and named
 * by the record, for the repair to free. The header may be unwritten (a
 * crash right after the allocation): it is only marked dead if it is one. */
static void free_entry(struct mseg *seg, reg_intent *it) {
        uint64_t entry_off = atomic_load_explicit(&it->entry_off, memory_order_acquire);
        reg_entry *e = mseg__reg_entry_at(seg, entry_off);

        if (!entry_off)
                return;
        if (e && REG_LOAD(e->magic) == REG_ENTRY_MAGIC)
                atomic_store_explicit(&e->gen, 0, memory_order_release);
        MSEG_TEST_HOOK("registry.entry.free");
        (void) mseg__free_from(seg, &it->entry_off);   /* -EINVAL: not a block; nothing to free */
}

static void repair_op(struct mseg *seg, reg_intent *it) {
        uint32_t op = atomic_load_explicit(&it->op, memory_order_acquire);
        uint64_t entry_off = atomic_load_explicit(&it->entry_off, memory_order_relaxed);
        uint64_t toff = atomic_load_explicit(&it->table_off, memory_order_relaxed);
        uint64_t slot = atomic_load_explicit(&it->slot, memory_order_relaxed);
        bool published = false;
        struct reg_tab tb;

        if (op == REG_OP_NONE)
                return;
        current_table(seg, &tb);
        if (toff && entry_off && tb.t && toff == tb.off && slot <= tb.mask) {
                uint64_t ref = atomic_load_explicit(&tb.t->slots[slot], memory_order_relaxed);
                published = reg_ref_live(ref) && reg_ref_off(ref) == entry_off;
        }
        if (op == REG_OP_CONSTRUCT) {
                /* Published means complete: init ran before the publish. */
                if (!published && entry_off)
                        free_entry(seg, it);
        } else if (op == REG_OP_DESTROY) {
                /* Finish it; the destructors were the dead process's to run. */
                if (published)
                        atomic_store_explicit(&tb.t->slots[slot], REG_SLOT_TOMB, memory_order_release);
                if (entry_off)
                        free_entry(seg, it);
        }
        atomic_store_explicit(&it->entry_off, 0, memory_order_relaxed);
        atomic_store_explicit(&it->table_off, 0, memory_order_relaxed);
        atomic_store_explicit(&it->op, REG_OP_NONE, memory_order_release);
}

/* Is any intent record in use (a writer died inside an operation)? */
static bool reg_intents_open(reg_root *root) {
        if (atomic_load_explicit(&root->rehash.op, memory_order_acquire) != REG_OP_NONE)
                return true;
        for (int d = 0; d < REG_MAX_DEPTH; d++)
                if (atomic_load_explicit(&root->op[d].op, memory_order_acquire) != REG_OP_NONE)
                        return true;
        return false;
}

static int reg_repair(struct mseg *seg) {
        reg_root *root = reg_root_of(seg);
        int r;

        if (root->magic != REG_ROOT_MAGIC)
                return mseg__error(MSEG_E_CORRUPT, "registry root is damaged");
        /* The dead writer may have died inside the allocator, allocating
         * into or freeing from one of the records: that lock's repair
         * finishes the step and writes the record. It must do so before
         * the records are read here, or it could write a record this
         * repair has already cleared and someone reused. */
        if (reg_intents_open(root)) {
                r = mseg__alloc_settle(seg);
                if (r < 0)
                        return r;
        }
        /* The table word first, so the other records see the final table. */
        mseg__reg_repair_rehash(seg);
        for (int d = REG_MAX_DEPTH - 1; d >= 0; d--)
                repair_op(seg, &root->op[d]);
        r = mseg__reg_scrub(seg);
        if (r < 0)
                return r;
        /* A dead destroyer may have removed the last name without freeing
         * the table; a failure to shrink is harmless. */
        (void) mseg__reg_maybe_shrink(seg);
        return 0;
}

/* ------------------------------------------------- per-process destructors */

/* mseg_destroy_ptr() has no type descriptor, and a function pointer cannot
 * live in the segment (every process maps its code elsewhere). So each
 * process remembers the destructors of the types it has used, by type name,
 * size and alignment, and destroy_ptr runs the one this process knows. */
struct dtor_rec {
        struct dtor_rec *next;
        size_t size, align, name_len;
        void (*fn)(void *elem, size_t index);
        char name[];
};
static struct dtor_rec *dtor_list;
static pthread_mutex_t dtor_mu = PTHREAD_MUTEX_INITIALIZER;

static struct dtor_rec *dtor_find(const char *name, size_t len, size_t size, size_t align) {
        for (struct dtor_rec *d = dtor_list; d; d = d->next)
                if (d->name_len == len && d->size == size && d->align == align && !memcmp(d->name, name, len))
                        return d;
        return NULL;
}

static void dtor_remember(const mseg_type *t, size_t tlen) {
        struct dtor_rec *d;

        if (!t->destroy)
                return;
        pthread_mutex_lock(&dtor_mu);
        d = dtor_find(t->name, tlen, t->size, t->align);
        if (d) {
                d->fn = t->destroy;
        } else if ((d = malloc(sizeof(*d) + tlen + 1))) {
                d->size = t->size;
                d->align = t->align;
                d->name_len = tlen;
                d->fn = t->destroy;
                memcpy(d->name, t->name, tlen + 1);
                d->next = dtor_list;
                dtor_list = d;
        }
        pthread_mutex_unlock(&dtor_mu);
}

typedef void (*dtor_fn)(void *elem, size_t index);

static dtor_fn dtor_lookup(const struct reg_view *v) {
        struct dtor_rec *d;
        dtor_fn fn = NULL;

        pthread_mutex_lock(&dtor_mu);
        d = dtor_find(v->type_name, v->type_len, (size_t) v->elem_size, (size_t) 1 << v->align_log2);
        if (d)
                fn = d->fn;
        pthread_mutex_unlock(&dtor_mu);
        return fn;
}

static void run_dtors(dtor_fn fn, uint8_t *obj, size_t size, uint64_t count) {
        if (fn)
                for (uint64_t i = 0; i < count; i++)
                        fn(obj + i * size, (size_t) i);
}

/* -------------------------------------------------------------- wakeups */

static void wake_waiters(reg_root *root) {
        atomic_fetch_add_explicit(&root->wake, 1, memory_order_seq_cst);
        if (atomic_load_explicit(&root->waiters, memory_order_seq_cst))
                syscall(SYS_futex, &root->wake, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* ------------------------------------------------------ the construction */

static void *obj_of(struct mseg *seg, uint64_t obj_off) {
        return seg->base + obj_off;
}

/* Found an existing object on a find_or_construct path. */
static void *existing(struct mseg *seg, const struct reg_hit *hit, const mseg_type *type) {
        if (!hit->type_ok)
                return mseg__error_null(-EPROTOTYPE, "object exists with another type than %s", type->name);
        return obj_of(seg, hit->obj_off);
}

static void *reg_construct(struct mseg *seg, uint8_t kind, const char *name, size_t len,
                           const mseg_type *type, size_t tlen, size_t count,
                           mseg_init_fn init, void *arg, bool or_find) {
        reg_root *root = reg_root_of(seg);
        uint64_t bytes, delta, total, off, ins = REG_NO_SLOT, epoch = 0;
        uint64_t align = type->align < 16 ? 16 : type->align;
        struct reg_key k;
        struct reg_hit hit;
        reg_intent *it = NULL;
        reg_entry *e;
        uint8_t *obj;
        void *ret;
        int r, depth = 0;

        dtor_remember(type, tlen);
        if (kind != MSEG_KIND_ANONYMOUS) {
                mseg__reg_key(seg, &k, kind, name, len, type, tlen);
                if (or_find) {
                        r = mseg__reg_lookup(seg, &k, &hit);
                        if (r < 0)
                                return fail_null(r);
                        if (r > 0)
                                return existing(seg, &hit, type);
                }
        }
        if (seg->read_only)
                return mseg__error_null(-EROFS, "segment is mapped read-only");
        if (count && type->size > (UINT64_MAX >> 1) / count)
                return mseg__error_null(-ENOMEM, "array of %zu elements of %zu bytes is too large",
                                        count, type->size);
        bytes = (uint64_t) type->size * count;
        delta = reg_obj_delta((unsigned) len, (unsigned) tlen, align);
        total = delta + bytes;
        if (total < bytes || total > seg->map_size)
                return mseg__error_null(-ENOMEM, "object of %llu bytes does not fit the segment",
                                        (unsigned long long) bytes);

        /* Every kind takes the lock and an intent record: an anonymous
         * object has no slot to publish, but its block must not outlive a
         * construction killed before it returned. */
        depth = reg_lock(seg, root);
        if (depth < 0)
                return fail_null(depth);
        if (kind != MSEG_KIND_ANONYMOUS) {
                r = mseg__reg_find_locked(seg, &k, &hit, &ins);
                if (r != 0) {
                        reg_unlock(root);
                        if (r < 0)
                                return fail_null(r);
                        if (or_find)
                                return existing(seg, &hit, type);
                        return mseg__error_null(-EEXIST, "an object named \"%.*s\" exists", (int) len, name);
                }
                epoch = atomic_load_explicit(&root->epoch, memory_order_relaxed);
        }
        it = &root->op[depth - 1];
        atomic_store_explicit(&it->entry_off, 0, memory_order_relaxed);
        atomic_store_explicit(&it->table_off, 0, memory_order_relaxed);     /* 0: not published */
        atomic_store_explicit(&it->op, REG_OP_CONSTRUCT, memory_order_release);

        /* The block is allocated into the intent record (crash-atomic: a
         * kill leaves it recorded or not allocated). */
        r = mseg__alloc_into_off(seg, total, align, &it->entry_off);
        off = r < 0 ? 0 : atomic_load_explicit(&it->entry_off, memory_order_relaxed);
        if (!off) {
                /* Other errors (a lock, damage) keep the allocator's detail. */
                if (r == -ENOMEM)
                        mseg__error(r, "no memory for an object of %llu bytes", (unsigned long long) total);
                goto fail;
        }
        if (kind == MSEG_KIND_ANONYMOUS)
                MSEG_TEST_HOOK("registry.anon.allocated");
        else
                MSEG_TEST_HOOK("registry.construct.allocated");

        /* The entry: written in full before anyone can reach it. */
        e = (reg_entry *) (seg->base + off);
        e->magic = REG_ENTRY_MAGIC;
        e->kind = kind;
        e->name_len = (uint8_t) len;
        e->type_len = (uint8_t) tlen;
        e->align_log2 = (uint8_t) log2_of(type->align);
        atomic_store_explicit(&e->gen, 0, memory_order_relaxed);
        e->count = count;
        e->elem_size = type->size;
        if (len)
                memcpy(e->names, name, len);
        e->names[len] = 0;
        memcpy(e->names + len + 1, type->name, tlen + 1);
        memcpy(seg->base + off + delta - 8, &delta, 8);
        obj = seg->base + off + delta;
        if (kind != MSEG_KIND_ANONYMOUS)
                MSEG_TEST_HOOK("registry.construct.init");

        if (!init) {
                memset(obj, 0, bytes);
        } else {
                for (size_t i = 0; i < count; i++) {
                        r = init(obj + i * type->size, i, arg);
                        if (r < 0) {
                                /* Undo the elements already built, newest first. */
                                if (type->destroy)
                                        while (i-- > 0)
                                                type->destroy(obj + i * type->size, i);
                                mseg__error(r, "init of element %zu of \"%.*s\" failed: %s", i, (int) len,
                                            len ? name : type->name, mseg_strerror(r));
                                goto fail_free;
                        }
                }
        }

        if (kind == MSEG_KIND_ANONYMOUS) {
                uint64_t gen = atomic_fetch_add_explicit(&root->next_gen, 1, memory_order_relaxed) + 1;
                atomic_store_explicit(&e->gen, gen, memory_order_release);
                MSEG_TEST_HOOK("registry.anon.constructed");
                /* The hand-over: from this store on the block is the
                 * caller's, as a block mseg_alloc() returned is; before
                 * it, a repair frees it (no one has its address). */
                atomic_store_explicit(&it->op, REG_OP_NONE, memory_order_release);
                reg_unlock(root);
                return obj;
        }

        /* Find the slot to publish in. The first probe found one, unless
         * init changed the table (a nested construct or destroy: look
         * again, the name may even exist now) or it must grow. */
        {
                struct reg_tab tb;
                uint64_t slot, old, gen;

                if (atomic_load_explicit(&root->epoch, memory_order_relaxed) != epoch) {
                        r = mseg__reg_find_locked(seg, &k, &hit, &ins);
                        if (r > 0 && or_find) {
                                ret = existing(seg, &hit, type);
                                free_entry(seg, it);
                                atomic_store_explicit(&it->op, REG_OP_NONE, memory_order_release);
                                reg_unlock(root);
                                return ret;
                        }
                        if (r > 0)
                                r = mseg__error(-EEXIST, "an object named \"%.*s\" exists", (int) len, name);
                        if (r != 0)
                                goto fail_free;
                }
                r = mseg__reg_make_room(seg);
                if (r < 0)
                        goto fail_free;
                current_table(seg, &tb);
                if (!tb.t) {
                        r = mseg__error(MSEG_E_CORRUPT, "registry table vanished");
                        goto fail_free;
                }
                if (r > 0 || ins == REG_NO_SLOT || ins > tb.mask) {
                        r = mseg__reg_insert_slot(&tb, k.hash, &ins);
                        if (r < 0)
                                goto fail_free;
                }
                slot = ins;
                atomic_store_explicit(&it->table_off, tb.off, memory_order_relaxed);
                atomic_store_explicit(&it->slot, slot, memory_order_release);

                gen = atomic_fetch_add_explicit(&root->next_gen, 1, memory_order_relaxed) + 1;
                atomic_store_explicit(&e->gen, gen, memory_order_relaxed);
                old = atomic_load_explicit(&tb.t->slots[slot], memory_order_relaxed);
                /* The publish: everything above becomes visible at once. */
                atomic_store_explicit(&tb.t->slots[slot], reg_ref_make(off, k.hash), memory_order_release);
                if (old == REG_SLOT_EMPTY)
                        atomic_store_explicit(&root->used, atomic_load_explicit(&root->used, memory_order_relaxed) + 1,
                                              memory_order_relaxed);
                reg_bump_epoch(root);
                MSEG_TEST_HOOK("registry.construct.published");
                if (kind == MSEG_KIND_NAMED)
                        atomic_store_explicit(&root->named_count,
                                              atomic_load_explicit(&root->named_count, memory_order_relaxed) + 1,
                                              memory_order_relaxed);
                else
                        atomic_store_explicit(&root->unique_count,
                                              atomic_load_explicit(&root->unique_count, memory_order_relaxed) + 1,
                                              memory_order_relaxed);
                atomic_store_explicit(&it->op, REG_OP_NONE, memory_order_release);
                reg_unlock(root);
                wake_waiters(root);
                return obj;
        }

fail_free:
        free_entry(seg, it);
fail:
        atomic_store_explicit(&it->op, REG_OP_NONE, memory_order_release);
        reg_unlock(root);
        errno = mseg__errno_of(r);
        return NULL;
}

/* Destroy the indexed object @k (lock taken here). @expect_entry, if not 0,
 * must be the entry found (destroy_ptr). @type NULL: any type; destructors
 * then come from this process's memory of the type. */
static int reg_destroy(struct mseg *seg, const struct reg_key *k, uint64_t expect_entry, const struct reg_view *pv) {
        const mseg_type *type = k->type;
        reg_root *root = reg_root_of(seg);
        uint64_t ins;
        struct reg_hit hit;
        reg_intent *it;
        reg_entry *e;
        dtor_fn fn;
        int r, depth;

        depth = writer_lock(seg, root);
        if (depth < 0)
                return depth;
        r = mseg__reg_find_locked(seg, k, &hit, &ins);
        if (r <= 0) {
                reg_unlock(root);
                return r < 0 ? r : mseg__error(-ENOENT, "no object named \"%.*s\"", (int) k->len, k->name);
        }
        if (!hit.type_ok) {
                reg_unlock(root);
                return mseg__error(-EPROTOTYPE, "\"%.*s\" exists with another type than %s", (int) k->len,
                                   k->name, type->name);
        }
        if (expect_entry && hit.entry_off != expect_entry) {
                reg_unlock(root);
                return mseg__error(-EINVAL, "pointer is not the object named \"%.*s\"", (int) k->len, k->name);
        }
        /* The lookup validated the entry and its slot, and with the lock
         * held nothing else moves them. */
        e = (reg_entry *) (seg->base + hit.entry_off);
        fn = type ? type->destroy : pv ? dtor_lookup(pv) : NULL;

        it = &root->op[depth - 1];
        atomic_store_explicit(&it->entry_off, hit.entry_off, memory_order_relaxed);
        atomic_store_explicit(&it->table_off, hit.table_off, memory_order_relaxed);
        atomic_store_explicit(&it->slot, hit.slot, memory_order_relaxed);
        atomic_store_explicit(&it->op, REG_OP_DESTROY, memory_order_release);

        /* Unpublish first: readers stop finding it before it is torn down. */
        atomic_store_explicit(&e->gen, 0, memory_order_release);
        atomic_store_explicit(hit.slotp, REG_SLOT_TOMB, memory_order_release);
        reg_bump_epoch(root);
        if (k->kind == MSEG_KIND_NAMED)
                atomic_store_explicit(&root->named_count,
                                      atomic_load_explicit(&root->named_count, memory_order_relaxed) - 1,
                                      memory_order_relaxed);
        else
                atomic_store_explicit(&root->unique_count,
                                      atomic_load_explicit(&root->unique_count, memory_order_relaxed) - 1,
                                      memory_order_relaxed);

        MSEG_TEST_HOOK("registry.destroy.unpublished");
        run_dtors(fn, obj_of(seg, hit.obj_off), (size_t) hit.elem_size, hit.count);

        MSEG_TEST_HOOK("registry.destroy.free");
        (void) mseg__free_from(seg, &it->entry_off);
        atomic_store_explicit(&it->op, REG_OP_NONE, memory_order_release);
        r = mseg__reg_maybe_shrink(seg);
        reg_unlock(root);
        return r < 0 && r != -ENOMEM ? r : 0;   /* a failed shrink is harmless */
}

/* The entry of an object pointer the construction family returned, checked. */
REG_READER static int view_of_ptr(struct mseg *seg, const void *p, struct reg_view *v, uint64_t *ret_off) {
        uint64_t obj_off, delta, off;

        if (!seg || !p)
                return mseg__error(-EINVAL, "NULL segment or pointer");
        obj_off = mseg_handle_of(seg, p);
        if (obj_off < seg->data_off + sizeof(reg_entry) + 12 || (obj_off & 15))
                return mseg__error(-EINVAL, "pointer is not an object of this segment");
        delta = REG_LOAD(*(uint64_t *) (void *) (seg->base + obj_off - 8));
        off = obj_off - delta;
        if (delta > obj_off || delta < sizeof(reg_entry) + 12 || mseg__reg_entry_check(seg, off, v) < 0 ||
            v->obj_off != obj_off)
                return mseg__error(-EINVAL, "pointer is not an object of this segment");
        *ret_off = off;
        return 0;
}

/* ------------------------------------------------------------ public API */

#define CHECK_SEG_NULL(seg) do { if (!(seg)) return mseg__error_null(-EINVAL, "no segment"); } while (0)

void *mseg_construct(mseg *seg, const char *name, const mseg_type *type, size_t count,
                     mseg_init_fn init, void *arg) {
        size_t len, tlen;
        int r;

        CHECK_SEG_NULL(seg);
        if ((r = check_name(name, &len)) < 0 || (r = check_type(type, &tlen)) < 0)
                return fail_null(r);
        return reg_construct(seg, MSEG_KIND_NAMED, name, len, type, tlen, count, init, arg, false);
}

void *mseg_find_or_construct(mseg *seg, const char *name, const mseg_type *type, size_t count,
                             mseg_init_fn init, void *arg) {
        size_t len, tlen;
        int r;

        CHECK_SEG_NULL(seg);
        if ((r = check_name(name, &len)) < 0 || (r = check_type(type, &tlen)) < 0)
                return fail_null(r);
        return reg_construct(seg, MSEG_KIND_NAMED, name, len, type, tlen, count, init, arg, true);
}

static void *reg_find(mseg *seg, uint8_t kind, const char *name, size_t len, const mseg_type *type,
                      size_t tlen, size_t *ret_count) {
        struct reg_key k;
        struct reg_hit hit;
        int r;

        mseg__reg_key(seg, &k, kind, name, len, type, tlen);
        r = mseg__reg_lookup(seg, &k, &hit);
        if (r < 0)
                return fail_null(r);
        if (r == 0) {
                errno = ENOENT;
                return NULL;
        }
        if (!hit.type_ok)
                return mseg__error_null(-EPROTOTYPE, "\"%.*s\" exists with another type than %s", (int) len,
                                        name, type->name);
        if (ret_count)
                *ret_count = (size_t) hit.count;
        return obj_of(seg, hit.obj_off);
}

void *mseg_find(mseg *seg, const char *name, const mseg_type *type, size_t *ret_count) {
        size_t len, tlen;
        int r;

        CHECK_SEG_NULL(seg);
        if ((r = check_name(name, &len)) < 0 || (r = check_type(type, &tlen)) < 0)
                return fail_null(r);
        if (type->destroy)
                dtor_remember(type, tlen);
        return reg_find(seg, MSEG_KIND_NAMED, name, len, type, tlen, ret_count);
}

int mseg_destroy(mseg *seg, const char *name, const mseg_type *type) {
        struct reg_key k;
        size_t len, tlen;
        int r;

        if (!seg)
                return mseg__error(-EINVAL, "no segment");
        if ((r = check_name(name, &len)) < 0 || (r = check_type(type, &tlen)) < 0)
                return r;
        mseg__reg_key(seg, &k, MSEG_KIND_NAMED, name, len, type, tlen);
        return reg_destroy(seg, &k, 0, NULL);
}

/* Destroy the anonymous object whose entry @off was seen as @pv. No index,
 * but the lock and an intent record as for a name: the record names the
 * entry before it is marked dead, so a kill anywhere after that is
 * finished by the repair (the destructors were the dead process's to run),
 * and one before it leaves the object alive and whole. */
static int destroy_anonymous(struct mseg *seg, uint64_t off, const struct reg_view *pv) {
        reg_root *root = reg_root_of(seg);
        struct reg_view v;
        reg_intent *it;
        dtor_fn fn;
        int depth;

        fn = dtor_lookup(pv);
        depth = reg_lock(seg, root);
        if (depth < 0)
                return depth;
        /* Under the lock, the same object still (generations are unique
         * per construction): a racing destroyer may have won, and its
         * block may hold something else by now. */
        if (mseg__reg_entry_check(seg, off, &v) < 0 || v.kind != MSEG_KIND_ANONYMOUS || v.gen != pv->gen ||
            v.obj_off != pv->obj_off) {
                reg_unlock(root);
                return mseg__error(-EINVAL, "object was destroyed already");
        }
        it = &root->op[depth - 1];
        atomic_store_explicit(&it->entry_off, off, memory_order_relaxed);
        atomic_store_explicit(&it->table_off, 0, memory_order_relaxed);     /* no slot */
        atomic_store_explicit(&it->slot, 0, memory_order_relaxed);
        atomic_store_explicit(&it->op, REG_OP_DESTROY, memory_order_release);

        atomic_store_explicit(&v.e->gen, 0, memory_order_release);
        MSEG_TEST_HOOK("registry.destroy_ptr.unpublished");
        run_dtors(fn, obj_of(seg, v.obj_off), (size_t) v.elem_size, v.count);

        MSEG_TEST_HOOK("registry.destroy_ptr.free");
        (void) mseg__free_from(seg, &it->entry_off);
        atomic_store_explicit(&it->op, REG_OP_NONE, memory_order_release);
        reg_unlock(root);
        return 0;
}

int mseg_destroy_ptr(mseg *seg, void *p) {
        char name[MSEG_NAME_MAX + 1];
        struct reg_key k;
        struct reg_view v;
        uint64_t off;
        int r;

        r = view_of_ptr(seg, p, &v, &off);
        if (r < 0)
                return r;
        if (v.gen == 0)
                return mseg__error(-EINVAL, "object was destroyed already");
        if (seg->read_only)
                return mseg__error(-EROFS, "segment is mapped read-only");
        if (v.kind != MSEG_KIND_ANONYMOUS) {
                /* Copy the name out: the entry is freed while we use the key. */
                reg_copy_out(name, v.name, v.name_len);
                mseg__reg_key(seg, &k, v.kind, name, v.name_len, NULL, 0);
                return reg_destroy(seg, &k, off, &v);
        }
        return destroy_anonymous(seg, off, &v);
}

void *mseg_construct_unique(mseg *seg, const mseg_type *type, size_t count, mseg_init_fn init, void *arg) {
        size_t tlen;
        int r;

        CHECK_SEG_NULL(seg);
        if ((r = check_type(type, &tlen)) < 0)
                return fail_null(r);
        return reg_construct(seg, MSEG_KIND_UNIQUE, type->name, tlen, type, tlen, count, init, arg, false);
}

void *mseg_find_or_construct_unique(mseg *seg, const mseg_type *type, size_t count, mseg_init_fn init,
                                    void *arg) {
        size_t tlen;
        int r;

        CHECK_SEG_NULL(seg);
        if ((r = check_type(type, &tlen)) < 0)
                return fail_null(r);
        return reg_construct(seg, MSEG_KIND_UNIQUE, type->name, tlen, type, tlen, count, init, arg, true);
}

void *mseg_find_unique(mseg *seg, const mseg_type *type, size_t *ret_count) {
        size_t tlen;
        int r;

        CHECK_SEG_NULL(seg);
        if ((r = check_type(type, &tlen)) < 0)
                return fail_null(r);
        if (type->destroy)
                dtor_remember(type, tlen);
        return reg_find(seg, MSEG_KIND_UNIQUE, type->name, tlen, type, tlen, ret_count);
}

int mseg_destroy_unique(mseg *seg, const mseg_type *type) {
        struct reg_key k;
        size_t tlen;
        int r;

        if (!seg)
                return mseg__error(-EINVAL, "no segment");
        if ((r = check_type(type, &tlen)) < 0)
                return r;
        mseg__reg_key(seg, &k, MSEG_KIND_UNIQUE, type->name, tlen, type, tlen);
        return reg_destroy(seg, &k, 0, NULL);
}

void *mseg_construct_anonymous(mseg *seg, const mseg_type *type, size_t count, mseg_init_fn init, void *arg) {
        size_t tlen;
        int r;

        CHECK_SEG_NULL(seg);
        if ((r = check_type(type, &tlen)) < 0)
                return fail_null(r);
        return reg_construct(seg, MSEG_KIND_ANONYMOUS, NULL, 0, type, tlen, count, init, arg, false);
}

/* A live object's entry (generation not 0), for instance information. */
static int live_view_of_ptr(mseg *seg, const void *p, struct reg_view *v) {
        uint64_t off;
        int r = view_of_ptr(seg, p, v, &off);

        if (r == 0 && v->gen == 0)
                r = mseg__error(-EINVAL, "object was destroyed");
        return r;
}

const char *mseg_instance_name(mseg *seg, const void *p) {
        struct reg_view v;
        int r = live_view_of_ptr(seg, p, &v);

        if (r < 0) {
                errno = mseg__errno_of(r);
                return NULL;
        }
        if (v.kind == MSEG_KIND_ANONYMOUS) {
                errno = 0;
                return NULL;
        }
        return v.name;
}

size_t mseg_instance_length(mseg *seg, const void *p) {
        struct reg_view v;

        return live_view_of_ptr(seg, p, &v) < 0 ? 0 : (size_t) v.count;
}

int mseg_instance_kind(mseg *seg, const void *p) {
        struct reg_view v;
        int r = live_view_of_ptr(seg, p, &v);

        return r < 0 ? r : v.kind;
}

int mseg_atomic(mseg *seg, int (*fn)(mseg *seg, void *arg), void *arg) {
        reg_root *root;
        int r, depth;

        if (!seg || !fn)
                return mseg__error(-EINVAL, "mseg_atomic: NULL argument");
        root = reg_root_of(seg);
        depth = writer_lock(seg, root);
        if (depth < 0)
                return depth;
        r = fn(seg, arg);
        reg_unlock(root);
        return r;
}

static int64_t now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int mseg_wait_name(mseg *seg, const char *name, const mseg_type *type, int64_t timeout_ms) {
        reg_root *root;
        struct reg_key k;
        struct reg_hit hit;
        size_t len, tlen;
        int64_t deadline = 0, step = 1;
        bool registered = false;
        int r;

        if (!seg)
                return mseg__error(-EINVAL, "no segment");
        if ((r = check_name(name, &len)) < 0 || (r = check_type(type, &tlen)) < 0)
                return r;
        root = reg_root_of(seg);
        mseg__reg_key(seg, &k, MSEG_KIND_NAMED, name, len, type, tlen);
        if (timeout_ms >= 0)
                deadline = now_ms() + timeout_ms;
        if (!seg->read_only) {
                atomic_fetch_add_explicit(&root->waiters, 1, memory_order_seq_cst);
                registered = true;
        }
        for (;;) {
                uint32_t w = atomic_load_explicit(&root->wake, memory_order_seq_cst);
                int64_t sleep_ms;
                struct timespec ts;

                r = mseg__reg_lookup(seg, &k, &hit);
                if (r > 0) {
                        r = hit.type_ok ? 0 : mseg__error(-EPROTOTYPE, "\"%s\" exists with another type than %s",
                                                         name, type->name);
                        break;
                }
                if (r < 0 && r != -EAGAIN)
                        break;
                /* Bounded sleeps: a waker may die between its publish and
                 * its wake, and a read-only waiter cannot ask to be woken. */
                sleep_ms = registered ? 250 : step;
                if (step < 64)
                        step *= 2;
                if (timeout_ms >= 0) {
                        int64_t left = deadline - now_ms();
                        if (left <= 0) {
                                r = mseg__error(-ETIMEDOUT, "\"%s\" did not appear within %lld ms", name,
                                                (long long) timeout_ms);
                                break;
                        }
                        if (left < sleep_ms)
                                sleep_ms = left;
                }
                ts.tv_sec = sleep_ms / 1000;
                ts.tv_nsec = (sleep_ms % 1000) * 1000000;
                syscall(SYS_futex, &root->wake, FUTEX_WAIT, w, &ts, NULL, 0);
        }
        if (registered)
                atomic_fetch_sub_explicit(&root->waiters, 1, memory_order_seq_cst);
        return r;
}

static int reg_foreach(mseg *seg, uint8_t kind, int (*fn)(const struct mseg_object_info *info, void *arg),
                       void *arg) {
        reg_root *root;
        struct reg_snap *v = NULL;
        size_t n = 0;
        int r, depth = 0;

        if (!seg || !fn)
                return mseg__error(-EINVAL, "NULL argument");
        root = reg_root_of(seg);
        /* Writable: snapshot under the lock (exact); read-only: without it,
         * checked against the table word. Callbacks run after, unlocked, on
         * entries still alive, so they may construct and destroy freely. */
        if (!seg->read_only) {
                depth = reg_lock(seg, root);
                if (depth < 0)
                        return depth;
        }
        r = mseg__reg_snapshot(seg, kind, &v, &n);
        if (depth > 0)
                reg_unlock(root);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n && r == 0; i++) {
                char name[MSEG_NAME_MAX + 1], type_name[MSEG_NAME_MAX + 1];
                struct mseg_object_info info;
                struct reg_view ev;

                if (mseg__reg_entry_check(seg, v[i].off, &ev) < 0 || ev.gen != v[i].gen)
                        continue;       /* destroyed since the snapshot */
                /* Copies: another process may destroy the object while the
                 * callback runs; the copies, checked below, stay whole. */
                reg_copy_out(name, ev.name, ev.name_len);
                name[ev.name_len] = 0;
                reg_copy_out(type_name, ev.type_name, ev.type_len);
                type_name[ev.type_len] = 0;
                atomic_thread_fence(memory_order_acquire);
                if (atomic_load_explicit(&ev.e->gen, memory_order_acquire) != v[i].gen)
                        continue;
                info.name = name;
                info.name_len = ev.name_len;
                info.type_name = type_name;
                info.elem_size = (size_t) ev.elem_size;
                info.align = (size_t) 1 << ev.align_log2;
                info.count = (size_t) ev.count;
                info.handle = ev.obj_off;
                info.kind = ev.kind;
                r = fn(&info, arg);
        }
        free(v);
        return r;
}

int mseg_foreach_named(mseg *seg, int (*fn)(const struct mseg_object_info *info, void *arg), void *arg) {
        return reg_foreach(seg, MSEG_KIND_NAMED, fn, arg);
}

int mseg_foreach_unique(mseg *seg, int (*fn)(const struct mseg_object_info *info, void *arg), void *arg) {
        return reg_foreach(seg, MSEG_KIND_UNIQUE, fn, arg);
}

size_t mseg_named_count(mseg *seg) {
        return seg ? (size_t) atomic_load_explicit(&reg_root_of(seg)->named_count, memory_order_relaxed) : 0;
}

size_t mseg_unique_count(mseg *seg) {
        return seg ? (size_t) atomic_load_explicit(&reg_root_of(seg)->unique_count, memory_order_relaxed) : 0;
}

int mseg_reserve_named(mseg *seg, size_t n) {
        reg_root *root;
        int r, depth;

        if (!seg)
                return mseg__error(-EINVAL, "no segment");
        root = reg_root_of(seg);
        depth = writer_lock(seg, root);
        if (depth < 0)
                return depth;
        r = mseg__reg_reserve(seg, n);
        reg_unlock(root);
        return r;
}

/* ------------------------------------------------------ module contract */

int mseg__registry_format(mseg_header *h) {
        reg_root *root = (reg_root *) ((uint8_t *) h + h->registry_off);

        if (h->registry_size < sizeof(reg_root))
                return mseg__error(-EINVAL, "registry root does not fit %llu bytes",
                                   (unsigned long long) h->registry_size);
        memset(root, 0, sizeof(*root));
        root->magic = REG_ROOT_MAGIC;
        root->version = REG_ROOT_VERSION;
        root->size = h->registry_size;
        return mseg__lock_init(&root->lock);
}

int mseg__registry_validate(const mseg_header *h, uint64_t size) {
        const reg_root *root;
        uint64_t toff;

        if (h->registry_off < MSEG_HEADER_SIZE || h->registry_size < sizeof(reg_root) ||
            h->registry_off > size || h->registry_size > size - h->registry_off)
                return mseg__error(MSEG_E_CORRUPT, "registry root outside the segment");
        root = (const reg_root *) ((const uint8_t *) h + h->registry_off);
        if (root->magic != REG_ROOT_MAGIC)
                return mseg__error(MSEG_E_CORRUPT, "registry root has a bad magic 0x%08x", root->magic);
        if (root->version != REG_ROOT_VERSION || root->size != h->registry_size)
                return mseg__error(MSEG_E_VERSION, "registry root version %u, this library reads %u",
                                   root->version, REG_ROOT_VERSION);
        toff = reg_tword_off(atomic_load_explicit(&((reg_root *) root)->table, memory_order_acquire));
        if (toff && (toff < h->alloc_off || toff > size - sizeof(reg_table)))
                return mseg__error(MSEG_E_CORRUPT, "registry table offset 0x%llx outside the segment",
                                   (unsigned long long) toff);
        return 0;
}

int mseg__registry_attach(struct mseg *seg) {
        /* Nothing per process: everything is in the segment or thread-local. */
        seg->reg = NULL;
        return 0;
}

void mseg__registry_detach(struct mseg *seg) {
        (void) seg;
}

int mseg__registry_check(struct mseg *seg) {
        reg_root *root = reg_root_of(seg);
        int r, depth;

        if (root->magic != REG_ROOT_MAGIC)
                return mseg__error(MSEG_E_CORRUPT, "registry root has a bad magic");
        if (seg->read_only) {
                /* No lock: check, then make sure the table did not move. */
                for (int attempt = 0; attempt < 16; attempt++) {
                        uint64_t w = atomic_load_explicit(&root->table, memory_order_acquire);
                        r = mseg__reg_check_table(seg, false);
                        if (atomic_load_explicit(&root->table, memory_order_acquire) == w)
                                return r;
                }
                return 0;       /* the table kept moving: nothing to report */
        }
        depth = reg_lock(seg, root);
        if (depth < 0)
                return depth;
        r = 0;
        if (depth == 1) {
                if (atomic_load_explicit(&root->rehash.op, memory_order_relaxed) != REG_OP_NONE)
                        r = mseg__error(MSEG_E_CORRUPT, "registry rebuild record left behind");
                for (int d = 0; d < REG_MAX_DEPTH && r == 0; d++)
                        if (atomic_load_explicit(&root->op[d].op, memory_order_relaxed) != REG_OP_NONE)
                                r = mseg__error(MSEG_E_CORRUPT, "registry intent record %d left behind", d);
        }
        if (r == 0)
                r = mseg__reg_check_table(seg, true);
        reg_unlock(root);
        return r;
}
