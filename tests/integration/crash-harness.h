/* SPDX-License-Identifier: MIT */
/*
 * crash-harness.h — the kill-torture shared by test-crash-torture (brokered
 * segments) and test-crash-file (mapped files): workers that run random
 * allocator and registry operations on one segment, a parent that kills
 * them with SIGKILL, at random moments and at armed test hooks inside
 * critical sections, and the checks after each round.
 *
 * Workers are this test program re-executed ("worker" argv), so a test hook
 * can be armed through the environment (testhook.c reads it once). They
 * share with the parent a memfd of `struct ch_shared` (fd CH_SHM_FD), where
 * each worker index keeps what the parent needs to judge a death: the
 * operation in flight and its operands, the model of its names. A worker's
 * state in the segment is reachable only from the segment itself: every
 * block it keeps is linked into the named array "dir" with
 * mseg_alloc_into() (crash-atomic), each in its own range of slots; every
 * named object it makes is filled with a pattern derived from its name.
 *
 * After a round, with every worker dead or finished and their slots
 * reclaimed (by msegd for brokered segments, by a fresh attach for files):
 *   - mseg_check() passes;
 *   - every slot of "dir" is 0 or a live block whose header and pattern are
 *     intact, no two blocks (nor registry blocks) overlap;
 *   - every name a worker made is there and intact, every name it destroyed
 *     is gone, and names whose operation was cut by the kill are either;
 *   - the bytes allocated (mseg_stats) minus the bytes reachable (dir blocks,
 *     registry entries and table) is the leak: what the dead left behind.
 *     Blocks the test itself held when a worker died (a free in flight, an
 *     mseg_alloc_many() batch, an anonymous object between its construct
 *     and its destroy_ptr) are found from the shared records and freed
 *     first, so what remains is the library's own leak; each round's must
 *     stay within CH_LEAK_PER_KILL per killed process.
 */
#ifndef MSEG_CRASH_HARNESS_H
#define MSEG_CRASH_HARNESS_H

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "msegd-harness.h"      /* msegd for the brokered tests */
#include "internal.h"
#include "registry.h"

#define CH_WORKERS_MAX   8
#define CH_SLOTS_PER     64             /* dir slots per worker index */
#define CH_NAMES_PER     24             /* names per worker index */
#define CH_DIR_N         (CH_WORKERS_MAX * CH_SLOTS_PER)
#define CH_MANY_MAX      16
#define CH_SHM_FD        100            /* in workers */
#define CH_HOOK_FD       101            /* in an armed worker */
#define CH_BH_MAGIC      UINT64_C(0x43524153484b4c4b)   /* "CRASHKLK" */
/* Most a killed process may leak: one block of the largest kind the
 * library allocates without a crash-atomic link. Registry entries and
 * tables are allocated into and freed from their intent records, so that
 * is an mseg_alloc_many() element cut between its allocation and its store
 * (2 KiB at most here), rounded up. */
#define CH_LEAK_PER_KILL (UINT64_C(4) << 10)

enum ch_mode { CH_FILE = 1, CH_BROKERED = 2 };

enum ch_op {
        CH_OP_NONE = 0, CH_OP_ALLOC_INTO, CH_OP_FREE, CH_OP_EXPAND, CH_OP_MANY,
        CH_OP_CONSTRUCT, CH_OP_DESTROY, CH_OP_FIND, CH_OP_GROW, CH_OP_ANON, CH_OP_N,
};

enum { CH_NAME_ABSENT = 0, CH_NAME_PRESENT = 1, CH_NAME_UNKNOWN = 2 };

/* One worker index, in shared memory. */
struct ch_worker {
        _Atomic int32_t pid;
        _Atomic uint32_t op;            /* enum ch_op in flight */
        uint32_t slot;                  /* dir slot or name index */
        uint32_t nmany;
        uint64_t h;                     /* block being freed; CH_OP_ANON: the object made */
        uint64_t id;                    /* header id of the block being made */
        uint64_t size;
        uint64_t base;                  /* the worker's mapping address */
        uint64_t next_id;
        uint64_t ops;
        /* A slot a killed worker was allocating into: a repair may still
         * link a block there (a locked path's intent is replayed by the next
         * owner of the lock), so its replacement leaves it alone until the
         * parent settles it after the round. Bit i: slot idx * CH_SLOTS_PER + i. */
        _Atomic uint64_t quarantine;
        void *_Atomic many[CH_MANY_MAX]; /* mseg_alloc_many's array (worker addresses) */
        _Atomic uint8_t name_state[CH_NAMES_PER];
};

struct ch_shared {
        _Atomic int stop;
        _Atomic int failures;
        _Atomic int fail_lock;
        char first_failure[1024];
        struct ch_worker w[CH_WORKERS_MAX];
};

/* Block header, at the start of every block linked into "dir". */
struct ch_bh {
        uint64_t tag;                   /* CH_BH_MAGIC ^ id */
        uint64_t id;
        uint64_t size;                  /* bytes asked for; the pattern covers them */
        uint64_t pad;
};

static const mseg_type ch_dir_type = { "ch_dir", sizeof(mseg_handle), 8, NULL };
static const mseg_type ch_obj_type = { "ch_u64", sizeof(uint64_t), 8, NULL };

/* ------------------------------------------------------------ utilities */

static inline uint64_t ch_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static inline void ch_sleep_us(uint64_t us) {
        struct timespec ts = { (time_t) (us / 1000000), (long) (us % 1000000) * 1000 };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static inline uint64_t ch_mix(uint64_t x) {
        x ^= x >> 33; x *= UINT64_C(0xff51afd7ed558ccd);
        x ^= x >> 33; x *= UINT64_C(0xc4ceb9fe1a85ec53);
        return x ^ (x >> 33);
}

static inline uint64_t ch_name_hash(const char *s) {
        uint64_t h = UINT64_C(1469598103934665603);
        for (; *s; s++)
                h = (h ^ (uint8_t) *s) * UINT64_C(1099511628211);
        return ch_mix(h);
}

static inline void ch_name(char *buf, size_t n, unsigned w, unsigned k) {
        snprintf(buf, n, "crash.n%u.%u", w, k);
}

/* Element count of a name's object: a function of the name alone, so a
 * find_or_construct agrees with the construct it races. Every 8th name is
 * large enough to be a page run. */
static inline size_t ch_name_count(unsigned k, uint64_t hash) {
        return k % 8 == 7 ? 1200 + (size_t) (hash % 1500) : 1 + (size_t) (hash % 300);
}

static inline uint64_t ch_elem(uint64_t hash, size_t i) {
        return hash ^ (i * UINT64_C(0x9e3779b97f4a7c15));
}

static inline uint64_t ch_word(uint64_t id, size_t j) {
        return ch_mix(id + j);
}

/* Record a failure (first message kept) from any process. */
#define CH_FAIL(sh, ...) do { \
        struct ch_shared *sh_ = (sh); \
        atomic_fetch_add(&sh_->failures, 1); \
        if (atomic_exchange(&sh_->fail_lock, 1) == 0) { \
                int n_ = snprintf(sh_->first_failure, sizeof(sh_->first_failure), "%s:%d: pid %d: ", \
                                  __FILE__, __LINE__, (int) getpid()); \
                if (n_ > 0 && (size_t) n_ < sizeof(sh_->first_failure)) \
                        snprintf(sh_->first_failure + n_, sizeof(sh_->first_failure) - (size_t) n_, \
                                 __VA_ARGS__); \
        } \
        fprintf(stderr, "%s:%d: pid %d: ", __FILE__, __LINE__, (int) getpid()); \
        fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); \
} while (0)

/* In a child: die with the test, whatever ends it (a failed assertion, the
 * alarm), rather than run on. */
static inline void ch_die_with_parent(void) {
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* ------------------------------------------------------- block contents */

static inline void ch_block_fill(void *p, uint64_t id, uint64_t size) {
        struct ch_bh *b = p;
        uint64_t *w = p;

        b->id = id;
        b->size = size;
        b->pad = 0;
        for (size_t j = sizeof(*b) / 8; j < size / 8; j++)
                w[j] = ch_word(id, j);
        atomic_thread_fence(memory_order_release);
        b->tag = CH_BH_MAGIC ^ id;
}

/* NULL when intact, else what is wrong. */
static inline const char *ch_block_bad(mseg *seg, const void *p) {
        const struct ch_bh *b = p;
        const uint64_t *w = p;
        size_t us = mseg_usable_size(seg, p);

        if (us == 0)
                return "not a live block";
        if (us < sizeof(*b))
                return "block smaller than its header";
        if (b->tag != (CH_BH_MAGIC ^ b->id))
                return "header tag damaged";
        if (b->size > us)
                return "header size beyond the usable size";
        for (size_t j = sizeof(*b) / 8; j < b->size / 8; j++)
                if (w[j] != ch_word(b->id, j))
                        return "pattern damaged";
        return NULL;
}

static inline int ch_obj_init(void *elem, size_t index, void *arg) {
        *(uint64_t *) elem = ch_elem(*(const uint64_t *) arg, index);
        return 0;
}

/* NULL when the object @p named @name is intact. */
static inline const char *ch_obj_bad(const uint64_t *p, size_t count, unsigned k, const char *name) {
        uint64_t h = ch_name_hash(name);

        if (count != ch_name_count(k, h))
                return "element count differs";
        for (size_t i = 0; i < count; i++)
                if (p[i] != ch_elem(h, i))
                        return "pattern damaged";
        return NULL;
}

/* ------------------------------------------------------------- opening */

struct ch_target {
        enum ch_mode mode;
        char where[256];                /* file path or segment name */
        char sock[128];                 /* brokered: msegd's socket */
        uint64_t size, max_size;
};

static inline int ch_open(const struct ch_target *t, mseg **ret, enum mseg_how how) {
        struct mseg_options o = { .size = t->size, .max_size = t->max_size };

        if (t->mode == CH_FILE)
                return mseg_file_open(ret, t->where, how, &o);
        o.socket_path = t->sock;
        return mseg_open(ret, t->where, how, &o);
}

/* -------------------------------------------------------------- worker */

struct ch_wctx {
        struct ch_shared *sh;
        struct ch_worker *me;
        const struct ch_target *t;
        mseg *seg;
        _Atomic mseg_handle *dir;
        unsigned idx;
        uint64_t rng;
};

static inline _Atomic mseg_handle *ch_dir_of(mseg *seg) {
        size_t n = 0;
        _Atomic mseg_handle *d = mseg_find(seg, "dir", &ch_dir_type, &n);

        return d && n == CH_DIR_N ? d : NULL;
}

/* A random slot of mine that is empty (@want_full false) or holds a block. */
static inline int ch_pick_slot(struct ch_wctx *c, bool want_full) {
        unsigned start = (unsigned) (test_rand(&c->rng) % CH_SLOTS_PER);

        for (unsigned i = 0; i < CH_SLOTS_PER; i++) {
                unsigned s = c->idx * CH_SLOTS_PER + (start + i) % CH_SLOTS_PER;
                if (atomic_load(&c->me->quarantine) & (UINT64_C(1) << (s % CH_SLOTS_PER)))
                        continue;
                if ((atomic_load(&c->dir[s]) != 0) == want_full)
                        return (int) s;
        }
        return -1;
}

static inline uint64_t ch_rand_size(struct ch_wctx *c) {
        uint64_t r = test_rand(&c->rng) % 100;

        if (r < 70)
                return 32 + test_rand(&c->rng) % 480;
        if (r < 92)
                return 512 + test_rand(&c->rng) % 7680;
        return 8193 + test_rand(&c->rng) % (56 << 10);
}

static inline void ch_op_alloc_into(struct ch_wctx *c) {
        int s = ch_pick_slot(c, false);
        uint64_t size = ch_rand_size(c), id;
        int r;

        if (s < 0)
                return;
        id = ((uint64_t) (c->idx + 1) << 48) | c->me->next_id++;
        c->me->slot = (uint32_t) s;
        c->me->id = id;
        c->me->size = size;
        atomic_store(&c->me->op, CH_OP_ALLOC_INTO);
        r = mseg_alloc_into(c->seg, size, (mseg_handle *) &c->dir[s]);
        if (r == 0) {
                void *p = mseg_ptr(c->seg, atomic_load(&c->dir[s]));
                if (!p || mseg_usable_size(c->seg, p) < size)
                        CH_FAIL(c->sh, "alloc_into: dest holds %llu, not a block of %llu bytes",
                                (unsigned long long) atomic_load(&c->dir[s]), (unsigned long long) size);
                else
                        ch_block_fill(p, id, size);
        } else if (r != -ENOMEM) {
                CH_FAIL(c->sh, "mseg_alloc_into(%llu): %s (%s)", (unsigned long long) size, mseg_strerror(r),
                        mseg_last_error());
        } else if (atomic_load(&c->dir[s]) != 0) {
                CH_FAIL(c->sh, "mseg_alloc_into failed but wrote its destination");
        }
        atomic_store(&c->me->op, CH_OP_NONE);
}

static inline void ch_op_free(struct ch_wctx *c) {
        int s = ch_pick_slot(c, true);
        mseg_handle h;
        const char *bad;
        void *p;
        int r;

        if (s < 0)
                return;
        h = atomic_load(&c->dir[s]);
        p = mseg_ptr(c->seg, h);
        if (!p || (bad = ch_block_bad(c->seg, p))) {
                CH_FAIL(c->sh, "dir[%d] = %llu before free: %s", s, (unsigned long long) h,
                        p ? ch_block_bad(c->seg, p) : "outside the segment");
                atomic_store(&c->dir[s], 0);    /* report once */
                return;
        }
        c->me->slot = (uint32_t) s;
        c->me->h = h;
        atomic_store(&c->me->op, CH_OP_FREE);
        atomic_store(&c->dir[s], 0);
        r = mseg_free(c->seg, p);
        if (r < 0)
                CH_FAIL(c->sh, "mseg_free(%llu): %s (%s)", (unsigned long long) h, mseg_strerror(r),
                        mseg_last_error());
        atomic_store(&c->me->op, CH_OP_NONE);
}

static inline void ch_op_expand(struct ch_wctx *c) {
        int s = ch_pick_slot(c, true);
        size_t us, ns = 0;
        struct ch_bh *b;
        int r;

        if (s < 0)
                return;
        b = mseg_ptr(c->seg, atomic_load(&c->dir[s]));
        us = b ? mseg_usable_size(c->seg, b) : 0;
        if (us < 8192)
                return;
        c->me->slot = (uint32_t) s;
        atomic_store(&c->me->op, CH_OP_EXPAND);
        if (test_rand(&c->rng) & 1) {
                r = mseg_expand(c->seg, b, us + 4096, us + 4096 * (1 + test_rand(&c->rng) % 8), &ns);
                if (r == 0 && ns < us + 4096)
                        CH_FAIL(c->sh, "mseg_expand: %zu < %zu", ns, us + 4096);
        } else {
                r = mseg_shrink(c->seg, b, (size_t) b->size, &ns);
                if (r == 0 && ns < b->size)
                        CH_FAIL(c->sh, "mseg_shrink below the size asked: %zu < %llu", ns,
                                (unsigned long long) b->size);
        }
        if (r < 0 && r != -ENOMEM)
                CH_FAIL(c->sh, "expand/shrink: %s (%s)", mseg_strerror(r), mseg_last_error());
        else if (ch_block_bad(c->seg, b))
                CH_FAIL(c->sh, "block damaged by expand/shrink: %s", ch_block_bad(c->seg, b));
        atomic_store(&c->me->op, CH_OP_NONE);
}

static inline void ch_op_many(struct ch_wctx *c) {
        uint32_t n = 1 + (uint32_t) (test_rand(&c->rng) % CH_MANY_MAX);
        size_t size = 16 + (size_t) (test_rand(&c->rng) % 2032);
        void *ptrs[CH_MANY_MAX];
        int r;

        for (uint32_t i = 0; i < CH_MANY_MAX; i++)
                atomic_store(&c->me->many[i], NULL);
        c->me->nmany = n;
        atomic_store(&c->me->op, CH_OP_MANY);
        /* The library writes the pointers straight into shared memory, so
         * that the parent knows what a killed worker held. */
        r = mseg_alloc_many(c->seg, size, n, (void **) c->me->many);
        if (r == 0) {
                for (uint32_t i = 0; i < n; i++) {
                        ptrs[i] = atomic_load(&c->me->many[i]);
                        if (mseg_usable_size(c->seg, ptrs[i]) < size)
                                CH_FAIL(c->sh, "alloc_many: element %u is not a block", i);
                        else
                                memset(ptrs[i], 0x6b, size);
                }
                r = mseg_free_many(c->seg, ptrs, n);
                if (r < 0)
                        CH_FAIL(c->sh, "mseg_free_many: %s (%s)", mseg_strerror(r), mseg_last_error());
        } else if (r != -ENOMEM) {
                CH_FAIL(c->sh, "mseg_alloc_many: %s (%s)", mseg_strerror(r), mseg_last_error());
        }
        atomic_store(&c->me->op, CH_OP_NONE);
}

static inline void ch_op_construct(struct ch_wctx *c) {
        unsigned k = (unsigned) (test_rand(&c->rng) % CH_NAMES_PER);
        uint8_t prev = atomic_load(&c->me->name_state[k]);
        bool or_find = test_rand(&c->rng) & 1;
        char name[64];
        uint64_t h;
        size_t count;
        uint64_t *p;

        ch_name(name, sizeof(name), c->idx, k);
        h = ch_name_hash(name);
        count = ch_name_count(k, h);
        c->me->slot = k;
        atomic_store(&c->me->op, CH_OP_CONSTRUCT);
        atomic_store(&c->me->name_state[k], CH_NAME_UNKNOWN);
        errno = 0;
        p = or_find ? mseg_find_or_construct(c->seg, name, &ch_obj_type, count, ch_obj_init, &h)
                    : mseg_construct(c->seg, name, &ch_obj_type, count, ch_obj_init, &h);
        if (p) {
                size_t n = mseg_instance_length(c->seg, p);
                const char *bad = ch_obj_bad(p, n, k, name);
                if (bad)
                        CH_FAIL(c->sh, "%s \"%s\": %s", or_find ? "find_or_construct" : "construct", name, bad);
                atomic_store(&c->me->name_state[k], CH_NAME_PRESENT);
        } else if (errno == EEXIST) {
                if (prev == CH_NAME_ABSENT)
                        CH_FAIL(c->sh, "construct \"%s\": EEXIST, but it was destroyed", name);
                atomic_store(&c->me->name_state[k], CH_NAME_PRESENT);
        } else if (errno == ENOMEM) {
                atomic_store(&c->me->name_state[k], prev);
        } else {
                CH_FAIL(c->sh, "construct \"%s\": %s (%s)", name, strerror(errno), mseg_last_error());
        }
        atomic_store(&c->me->op, CH_OP_NONE);
}

static inline void ch_op_destroy(struct ch_wctx *c) {
        unsigned k = (unsigned) (test_rand(&c->rng) % CH_NAMES_PER);
        uint8_t prev = atomic_load(&c->me->name_state[k]);
        char name[64];
        int r;

        ch_name(name, sizeof(name), c->idx, k);
        c->me->slot = k;
        atomic_store(&c->me->op, CH_OP_DESTROY);
        atomic_store(&c->me->name_state[k], CH_NAME_UNKNOWN);
        r = mseg_destroy(c->seg, name, &ch_obj_type);
        if (r == -ENOENT && prev == CH_NAME_PRESENT)
                CH_FAIL(c->sh, "destroy \"%s\": ENOENT, but it was made", name);
        else if (r < 0 && r != -ENOENT)
                CH_FAIL(c->sh, "destroy \"%s\": %s (%s)", name, mseg_strerror(r), mseg_last_error());
        atomic_store(&c->me->name_state[k], CH_NAME_ABSENT);
        atomic_store(&c->me->op, CH_OP_NONE);
}

/* An anonymous object, checked, then destroyed by pointer. Both calls are
 * crash-atomic (registry intent records): a construction cut before it
 * returned is freed by the repair, a destroy_ptr cut midway finished. In
 * between the object is the worker's, recorded in h for the parent. */
static inline void ch_op_anon(struct ch_wctx *c) {
        uint64_t h = test_rand(&c->rng);
        size_t count = 1 + (size_t) (test_rand(&c->rng) % 64);
        uint64_t *p;
        int r;

        c->me->h = 0;
        atomic_store(&c->me->op, CH_OP_ANON);
        errno = 0;
        p = mseg_construct_anonymous(c->seg, &ch_obj_type, count, ch_obj_init, &h);
        if (!p) {
                if (errno != ENOMEM)
                        CH_FAIL(c->sh, "construct_anonymous: %s (%s)", strerror(errno), mseg_last_error());
                atomic_store(&c->me->op, CH_OP_NONE);
                return;
        }
        c->me->h = mseg_handle_of(c->seg, p);
        if (mseg_instance_kind(c->seg, p) != MSEG_KIND_ANONYMOUS || mseg_instance_length(c->seg, p) != count)
                CH_FAIL(c->sh, "anonymous object: kind %d, %zu elements, not %zu", mseg_instance_kind(c->seg, p),
                        mseg_instance_length(c->seg, p), count);
        for (size_t i = 0; i < count; i++)
                if (p[i] != ch_elem(h, i)) {
                        CH_FAIL(c->sh, "anonymous object: element %zu damaged", i);
                        break;
                }
        r = mseg_destroy_ptr(c->seg, p);
        if (r < 0)
                CH_FAIL(c->sh, "destroy_ptr: %s (%s)", mseg_strerror(r), mseg_last_error());
        atomic_store(&c->me->op, CH_OP_NONE);
}

/* Lock-free reads of anybody's names (no content check: its owner may be
 * destroying it meanwhile). Our own names are checked in full. */
static inline void ch_op_find(struct ch_wctx *c) {
        unsigned w = (unsigned) (test_rand(&c->rng) % CH_WORKERS_MAX);
        unsigned k = (unsigned) (test_rand(&c->rng) % CH_NAMES_PER);
        char name[64];
        size_t count = 0;
        uint64_t *p;

        ch_name(name, sizeof(name), w, k);
        errno = 0;
        p = mseg_find(c->seg, name, &ch_obj_type, &count);
        if (!p && errno != ENOENT && errno != EAGAIN) {
                CH_FAIL(c->sh, "find \"%s\": %s (%s)", name, strerror(errno), mseg_last_error());
                return;
        }
        if (p && count != ch_name_count(k, ch_name_hash(name)))
                CH_FAIL(c->sh, "find \"%s\": count %zu", name, count);
        if (w == c->idx) {
                uint8_t st = atomic_load(&c->me->name_state[k]);
                if ((st == CH_NAME_PRESENT && !p) || (st == CH_NAME_ABSENT && p))
                        CH_FAIL(c->sh, "find \"%s\": %s, expected %s", name, p ? "found" : "absent",
                                st == CH_NAME_PRESENT ? "present" : "absent");
                else if (p && ch_obj_bad(p, count, k, name))
                        CH_FAIL(c->sh, "own object \"%s\": %s", name, ch_obj_bad(p, count, k, name));
        }
}

static inline void ch_op_grow(struct ch_wctx *c) {
        uint64_t cur = mseg_size(c->seg), want = cur + (256 << 10);
        int r;

        if (c->t->mode != CH_BROKERED || want > c->t->max_size)
                return;
        r = mseg_grow(c->seg, want);
        if (r < 0 && r != -ENOSPC)
                CH_FAIL(c->sh, "mseg_grow(%llu): %s (%s)", (unsigned long long) want, mseg_strerror(r),
                        mseg_last_error());
}

/* Many names at once, then none: the index grows and shrinks (its
 * rebuilds are critical sections too). Names "crash.r<idx>.<k>" are outside
 * the model; the parent removes what a kill leaves of them. */
static inline void ch_op_bulk(struct ch_wctx *c) {
        char name[64];

        for (unsigned k = 0; k < 300 && !atomic_load(&c->sh->stop); k++) {
                uint64_t h;
                snprintf(name, sizeof(name), "crash.r%u.%u", c->idx, k);
                h = ch_name_hash(name);
                if (!mseg_find_or_construct(c->seg, name, &ch_obj_type, 1, ch_obj_init, &h) && errno != ENOMEM)
                        CH_FAIL(c->sh, "bulk construct \"%s\": %s (%s)", name, strerror(errno), mseg_last_error());
        }
        for (unsigned k = 0; k < 300; k++) {
                int r;
                snprintf(name, sizeof(name), "crash.r%u.%u", c->idx, k);
                r = mseg_destroy(c->seg, name, &ch_obj_type);
                if (r < 0 && r != -ENOENT)
                        CH_FAIL(c->sh, "bulk destroy \"%s\": %s (%s)", name, mseg_strerror(r), mseg_last_error());
        }
}

static inline int ch_worker_main(const struct ch_target *t, unsigned idx, uint64_t seed) {
        struct ch_wctx c = { .idx = idx, .t = t, .rng = seed | 1 };
        int r;

        c.sh = mmap(NULL, sizeof(struct ch_shared), PROT_READ | PROT_WRITE, MAP_SHARED, CH_SHM_FD, 0);
        if (c.sh == MAP_FAILED)
                return 2;
        c.me = &c.sh->w[idx];
        r = ch_open(t, &c.seg, MSEG_OPEN_ONLY);
        if (r < 0) {
                CH_FAIL(c.sh, "worker %u: open: %s (%s)", idx, mseg_strerror(r), mseg_last_error());
                return 1;
        }
        c.me->base = (uint64_t) (uintptr_t) mseg_address(c.seg);
        c.dir = ch_dir_of(c.seg);
        if (!c.dir) {
                CH_FAIL(c.sh, "worker %u: no \"dir\"", idx);
                return 1;
        }
        while (!atomic_load(&c.sh->stop)) {
                uint64_t r100 = test_rand(&c.rng) % 100;
                if (getenv("CH_BULK") && r100 < 20)
                        ch_op_bulk(&c);
                else if (r100 < 30)
                        ch_op_alloc_into(&c);
                else if (r100 < 55)
                        ch_op_free(&c);
                else if (r100 < 62)
                        ch_op_expand(&c);
                else if (r100 < 70)
                        ch_op_many(&c);
                else if (r100 < 80)
                        ch_op_construct(&c);
                else if (r100 < 87)
                        ch_op_destroy(&c);
                else if (r100 < 96)
                        ch_op_find(&c);
                else if (r100 < 99)
                        ch_op_anon(&c);
                else
                        ch_op_grow(&c);
                c.me->ops++;
        }
        mseg_close(c.seg);
        return 0;
}

/* -------------------------------------------------------------- parent */

struct ch_point {
        const char *name;
        unsigned max_n;                 /* arm at the Nth hit, N random in [1, max_n] */
        enum ch_mode modes;             /* where the workload reaches it */
        unsigned armed, hit;            /* statistics */
};

static struct ch_point ch_points[] = {
        { "alloc.refill", 40, CH_FILE | CH_BROKERED, 0, 0 },
        { "alloc.flush", 3, CH_FILE | CH_BROKERED, 0, 0 },
        { "alloc.into", 10, CH_FILE | CH_BROKERED, 0, 0 },
        { "pages.alloc", 6, CH_FILE | CH_BROKERED, 0, 0 },
        { "pages.free", 3, CH_FILE | CH_BROKERED, 0, 0 },
        { "pages.resize", 2, CH_FILE | CH_BROKERED, 0, 0 },
        { "slot.claim", 1, CH_FILE | CH_BROKERED, 0, 0 },
        { "slot.reclaim", 1, CH_FILE, 0, 0 },
        { "registry.construct.init", 4, CH_FILE | CH_BROKERED, 0, 0 },
        { "registry.construct.published", 4, CH_FILE | CH_BROKERED, 0, 0 },
        { "registry.destroy.unpublished", 2, CH_FILE | CH_BROKERED, 0, 0 },
        { "registry.rehash.built", 1, CH_FILE | CH_BROKERED, 0, 0 },
        { "registry.rehash.published", 1, CH_FILE | CH_BROKERED, 0, 0 },
        { "registry.construct.allocated", 4, CH_FILE | CH_BROKERED, 0, 0 },
        { "registry.destroy.free", 2, CH_FILE | CH_BROKERED, 0, 0 },
        { "registry.entry.free", 2, CH_FILE | CH_BROKERED, 0, 0 },
        { "alloc.free_from", 3, CH_FILE | CH_BROKERED, 0, 0 },
        { "alloc.free_from.cleared", 3, CH_FILE | CH_BROKERED, 0, 0 },
        { "lock.woken", 2, CH_FILE | CH_BROKERED, 0, 0 },
        /* ch_op_anon (3% of operations): a construction cut before it
         * returned, a destroy_ptr cut midway. test-registry-crash kills at
         * every anonymous point; here two, so that the default 40 rounds
         * (20 armed) still arm every point at least in the brokered run. */
        { "registry.anon.allocated", 2, CH_FILE | CH_BROKERED, 0, 0 },
        { "registry.destroy_ptr.unpublished", 2, CH_FILE | CH_BROKERED, 0, 0 },
};
#define CH_NPOINTS (sizeof(ch_points) / sizeof(ch_points[0]))

struct ch_proc {
        pid_t pid;
        int hook_fd;                    /* read end, -1 when not armed */
        int point;                      /* index into ch_points, -1 */
};

struct ch_run {
        struct ch_target t;
        const char *self;               /* /proc/self/exe at start */
        struct ch_shared *sh;
        int shm_fd;
        mseg *seg;                      /* the parent's handle */
        _Atomic mseg_handle *dir;
        unsigned nworkers;
        unsigned round_ms;
        uint64_t rng;
        struct ch_proc proc[CH_WORKERS_MAX];
        bool killed[CH_WORKERS_MAX];    /* index's last process was killed */
        struct ch_worker *pending;      /* records of killed workers, settled after the round */
        size_t npending, pending_cap;
        /* figures */
        unsigned rounds, kills, kills_hooked, kills_random, hooks_missed;
        uint64_t leak, leak_max_round, test_freed;
        uint64_t reach_bytes;
};

static inline void ch_run_init(struct ch_run *R, const struct ch_target *t, unsigned nworkers, uint64_t seed) {
        memset(R, 0, sizeof(*R));
        R->t = *t;
        R->nworkers = nworkers;
        R->round_ms = 250;
        R->rng = seed | 1;
        R->shm_fd = memfd_create("crash-shared", MFD_CLOEXEC);
        ASSERT(R->shm_fd >= 0);
        ASSERT_EQ(ftruncate(R->shm_fd, sizeof(struct ch_shared)), 0);
        R->sh = mmap(NULL, sizeof(struct ch_shared), PROT_READ | PROT_WRITE, MAP_SHARED, R->shm_fd, 0);
        ASSERT(R->sh != MAP_FAILED);
        for (unsigned i = 0; i < CH_WORKERS_MAX; i++) {
                R->proc[i].hook_fd = -1;
                R->proc[i].point = -1;
        }
}

/* Create the segment and "dir". */
static inline void ch_run_create(struct ch_run *R) {
        ASSERT_OK(ch_open(&R->t, &R->seg, MSEG_CREATE_ONLY));
        R->dir = mseg_construct(R->seg, "dir", &ch_dir_type, CH_DIR_N, NULL, NULL);
        ASSERT_NOT_NULL(R->dir);
}

/* Start a worker at index @i, armed at point @point (-1: not armed). */
static inline void ch_spawn(struct ch_run *R, unsigned i, int point, const char *argv0_mode) {
        struct ch_proc *p = &R->proc[i];
        int fds[2] = { -1, -1 };
        char idx[16], seed[32], hook[96];
        unsigned n = 1;

        ASSERT(p->pid == 0);
        if (point >= 0) {
                ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
                n = 1 + (unsigned) (test_rand(&R->rng) % ch_points[point].max_n);
                snprintf(hook, sizeof(hook), "%s:%u", ch_points[point].name, n);
                ch_points[point].armed++;
        }
        snprintf(idx, sizeof(idx), "%u", i);
        snprintf(seed, sizeof(seed), "%llu", (unsigned long long) test_rand(&R->rng));
        p->pid = fork();
        ASSERT(p->pid >= 0);
        if (p->pid == 0) {
                char *argv[] = { "crash-worker", "worker", (char *) argv0_mode, R->t.where, R->t.sock, idx, seed,
                                 NULL };
                ch_die_with_parent();
                if (dup2(R->shm_fd, CH_SHM_FD) < 0)
                        _exit(126);
                if (point >= 0) {
                        if (dup2(fds[1], CH_HOOK_FD) < 0)
                                _exit(126);
                        setenv("MSEG_TEST_HOOK", hook, 1);
                        setenv("MSEG_TEST_HOOK_FD", "101", 1);
                        if (!strncmp(ch_points[point].name, "registry.rehash", 15))
                                setenv("CH_BULK", "1", 1);
                } else {
                        unsetenv("MSEG_TEST_HOOK");
                }
                execv(R->self, argv);
                _exit(127);
        }
        atomic_store(&R->sh->w[i].pid, p->pid);
        R->killed[i] = false;
        if (point >= 0) {
                close(fds[1]);
                p->hook_fd = fds[0];
                p->point = point;
        }
}

static inline void ch_reap(struct ch_run *R, unsigned i, bool killed) {
        struct ch_proc *p = &R->proc[i];
        int st;

        ASSERT_EQ(waitpid(p->pid, &st, 0), p->pid);
        if (killed) {
                if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL) {
                        /* It ended by itself before the kill landed. */
                        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                                CH_FAIL(R->sh, "worker %u ended with status 0x%x", i, st);
                        killed = false;
                }
        } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                CH_FAIL(R->sh, "worker %u ended with status 0x%x", i, st);
        }
        if (p->hook_fd >= 0)
                close(p->hook_fd);
        p->hook_fd = -1;
        p->point = -1;
        p->pid = 0;
        atomic_store(&R->sh->w[i].pid, 0);
        R->killed[i] = R->killed[i] || killed;
        if (killed)
                R->kills++;
        if (killed && atomic_load(&R->sh->w[i].op) != CH_OP_NONE) {
                /* Its replacement reuses the record: keep a copy. */
                if (R->npending == R->pending_cap) {
                        R->pending_cap = R->pending_cap ? 2 * R->pending_cap : 16;
                        R->pending = realloc(R->pending, R->pending_cap * sizeof(*R->pending));
                        ASSERT(R->pending);
                }
                memcpy(&R->pending[R->npending++], &R->sh->w[i], sizeof(struct ch_worker));
                if (atomic_load(&R->sh->w[i].op) == CH_OP_ALLOC_INTO)
                        atomic_fetch_or(&R->sh->w[i].quarantine, UINT64_C(1) << (R->sh->w[i].slot % CH_SLOTS_PER));
                atomic_store(&R->sh->w[i].op, CH_OP_NONE);
        }
}

/* Has the armed worker @i stopped at its hook? */
static inline bool ch_hooked(struct ch_proc *p, int timeout_ms) {
        struct pollfd pfd = { .fd = p->hook_fd, .events = POLLIN };
        char c;

        if (p->hook_fd < 0)
                return false;
        if (poll(&pfd, 1, timeout_ms) != 1 || !(pfd.revents & POLLIN))
                return false;
        return read(p->hook_fd, &c, 1) == 1;
}

/* ---- after a round ---- */

static inline bool ch_pid_dead(pid_t pid) {
        return pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH);
}

/* Wait for the dead workers' slots to be reclaimed: by msegd (brokered), or
 * by a fresh attach (files). */
static inline void ch_wait_reclaimed(struct ch_run *R) {
        struct mseg_stats st;
        uint64_t t0 = ch_now_ms();

        if (R->t.mode == CH_FILE) {
                mseg *s2;
                ASSERT_OK(ch_open(&R->t, &s2, MSEG_OPEN_ONLY));
                mseg_close(s2);
        }
        for (;;) {
                ASSERT_OK(mseg_stats(R->seg, &st));
                if (st.slots_dead == 0)
                        break;
                if (ch_now_ms() - t0 > 20000)
                        FAIL("%u dead slot(s) still not reclaimed after 20 s", st.slots_dead);
                ch_sleep_us(5000);
        }
}

struct ch_iv {
        uint64_t start, len;
        const char *what;
};

static int ch_iv_cmp(const void *a, const void *b) {
        const struct ch_iv *x = a, *y = b;
        return x->start < y->start ? -1 : x->start > y->start;
}

static int ch_u64_cmp(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

struct ch_reach {
        struct ch_iv *iv;
        size_t n, cap;
};

static inline void ch_reach_add(struct ch_reach *rc, uint64_t start, uint64_t len, const char *what) {
        if (rc->n == rc->cap) {
                rc->cap = rc->cap ? rc->cap * 2 : 1024;
                rc->iv = realloc(rc->iv, rc->cap * sizeof(*rc->iv));
                ASSERT(rc->iv);
        }
        rc->iv[rc->n++] = (struct ch_iv){ start, len, what };
}

static inline bool ch_reach_has(const struct ch_reach *rc, uint64_t start) {
        size_t lo = 0, hi = rc->n;

        while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (rc->iv[mid].start < start)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo < rc->n && rc->iv[lo].start == start;
}

struct ch_named_ctx {
        struct ch_run *R;
        struct ch_reach *rc;
        size_t n;
};

static inline int ch_named_cb(const struct mseg_object_info *info, void *arg) {
        struct ch_named_ctx *x = arg;
        mseg *seg = x->R->seg;
        uint8_t *obj = mseg_ptr(seg, info->handle);
        uint64_t delta, entry;
        size_t us;

        if (!strncmp(info->name, "crash.n", 7))
                x->n++;         /* the workers' names (others: "dir", "into") */
        if (!obj) {
                CH_FAIL(x->R->sh, "named object \"%s\" outside the segment", info->name);
                return 0;
        }
        memcpy(&delta, obj - 8, 8);            /* the entry's back link (registry.c) */
        entry = info->handle - delta;
        us = delta < 4096 ? mseg_usable_size(seg, mseg_ptr(seg, entry)) : 0;
        if (us < delta + info->count * info->elem_size)
                CH_FAIL(x->R->sh, "named object \"%s\": its entry block (%zu bytes) is not live", info->name, us);
        else
                ch_reach_add(x->rc, entry, us, "registry entry");
        return 0;
}

/* Everything the segment reaches: dir blocks, registry entries and table. */
static inline void ch_collect(struct ch_run *R, struct ch_reach *rc, size_t *ret_named) {
        struct ch_named_ctx x = { R, rc, 0 };
        reg_root *root = reg_root_of(R->seg);
        uint64_t toff = reg_tword_off(atomic_load(&root->table));

        rc->n = 0;
        for (unsigned s = 0; s < CH_DIR_N; s++) {
                mseg_handle h = atomic_load(&R->dir[s]);
                void *p;
                size_t us;
                if (!h)
                        continue;
                p = mseg_ptr(R->seg, h);
                us = p ? mseg_usable_size(R->seg, p) : 0;
                if (!us) {
                        CH_FAIL(R->sh, "dir[%u] = %llu is not a live block", s, (unsigned long long) h);
                        atomic_store(&R->dir[s], 0);
                        continue;
                }
                ch_reach_add(rc, h, us, "dir block");
        }
        ASSERT_OK(mseg_foreach_named(R->seg, ch_named_cb, &x));
        if (toff)
                ch_reach_add(rc, toff, mseg_usable_size(R->seg, mseg_ptr(R->seg, toff)), "registry table");
        if (rc->n)
                qsort(rc->iv, rc->n, sizeof(*rc->iv), ch_iv_cmp);
        *ret_named = x.n;
}

struct ch_bulk_ctx {
        char (*names)[64];
        size_t n, cap;
};

static inline int ch_bulk_cb(const struct mseg_object_info *info, void *arg) {
        struct ch_bulk_ctx *x = arg;

        if (strncmp(info->name, "crash.r", 7) != 0)
                return 0;
        if (x->n == x->cap) {
                x->cap = x->cap ? 2 * x->cap : 64;
                x->names = realloc(x->names, x->cap * sizeof(*x->names));
                ASSERT(x->names);
        }
        snprintf(x->names[x->n++], 64, "%s", info->name);
        return 0;
}

/* Remove what killed bulk workers left (intact, or it is a failure). */
static inline void ch_drop_bulk(struct ch_run *R) {
        struct ch_bulk_ctx x = { 0 };

        ASSERT_OK(mseg_foreach_named(R->seg, ch_bulk_cb, &x));
        for (size_t i = 0; i < x.n; i++) {
                size_t count = 0;
                uint64_t *p = mseg_find(R->seg, x.names[i], &ch_obj_type, &count);
                if (!p || count != 1 || p[0] != ch_elem(ch_name_hash(x.names[i]), 0))
                        CH_FAIL(R->sh, "bulk name \"%s\" is not intact", x.names[i]);
                ASSERT_OK(mseg_destroy(R->seg, x.names[i], &ch_obj_type));
        }
        free(x.names);
}

/* Resolve what killed workers held, check everything, measure the leak. */
static inline void ch_verify(struct ch_run *R, unsigned round_kills) {
        struct ch_reach rc = { 0 };
        uint64_t *cand = NULL, reach = 0, leak;
        size_t ncand_max = 0;
        size_t ncand = 0, named = 0, expect_named = 0;
        struct mseg_stats st;
        int r;

        ch_wait_reclaimed(R);
        r = mseg_check(R->seg);
        if (r < 0)
                CH_FAIL(R->sh, "mseg_check after round %u: %s (%s)", R->rounds, mseg_strerror(r), mseg_last_error());

        /* Workers that stopped by themselves finished their operation. */
        for (unsigned i = 0; i < CH_WORKERS_MAX; i++) {
                atomic_store(&R->sh->w[i].quarantine, 0);
                if (atomic_load(&R->sh->w[i].op) != CH_OP_NONE)
                        CH_FAIL(R->sh, "worker %u ended inside operation %u", i, atomic_load(&R->sh->w[i].op));
        }
        /* What the killed workers were doing. */
        if (ncand_max < R->npending * (CH_MANY_MAX + 1)) {
                ncand_max = R->npending * (CH_MANY_MAX + 1);
                cand = realloc(cand, ncand_max * sizeof(*cand));
                ASSERT(cand || !ncand_max);
        }
        char ops_seen[128] = "";
        for (size_t pi = 0; pi < R->npending; pi++) {
                struct ch_worker *w = &R->pending[pi];
                uint32_t op = atomic_load(&w->op);
                size_t len = strlen(ops_seen);

                snprintf(ops_seen + len, sizeof(ops_seen) - len, " %u", op);

                switch (op) {
                case CH_OP_ALLOC_INTO: {
                        /* Either it is linked (then it is ours now: finish its
                         * contents) or it is not allocated at all. */
                        mseg_handle h = atomic_load(&R->dir[w->slot]);
                        void *p = h ? mseg_ptr(R->seg, h) : NULL;
                        if (h && (!p || mseg_usable_size(R->seg, p) < w->size))
                                CH_FAIL(R->sh, "alloc_into cut by a kill: dest holds %llu, not a live block",
                                        (unsigned long long) h);
                        else if (p)
                                ch_block_fill(p, w->id, w->size);
                        break;
                }
                case CH_OP_FREE:
                        if (atomic_load(&R->dir[w->slot]) != w->h)
                                cand[ncand++] = w->h;
                        break;
                case CH_OP_MANY:
                        for (unsigned j = 0; j < CH_MANY_MAX; j++) {
                                void *p = atomic_load(&w->many[j]);
                                if (p)
                                        cand[ncand++] = (uint64_t) ((uintptr_t) p - w->base);
                        }
                        break;
                case CH_OP_ANON: {
                        /* Made and not yet destroyed (a construction or a
                         * destroy cut inside the library is the repair's,
                         * and it is gone): the worker's, freed here. Nobody
                         * else runs, so a live anonymous object at that
                         * address is one a killed worker held. */
                        void *p = w->h ? mseg_ptr(R->seg, w->h) : NULL;
                        if (p && mseg_instance_kind(R->seg, p) == MSEG_KIND_ANONYMOUS) {
                                size_t us = mseg_instance_length(R->seg, p) * sizeof(uint64_t);
                                if (mseg_destroy_ptr(R->seg, p) == 0)
                                        R->test_freed += us;
                        }
                        break;
                }
                default:
                        break;
                }
        }
        R->npending = 0;

        ch_drop_bulk(R);
        ch_collect(R, &rc, &named);
        /* Free the test's own in-flight blocks: allocated, reachable from
         * nothing (nobody else is running). */
        if (ncand)
                qsort(cand, ncand, sizeof(cand[0]), ch_u64_cmp);
        for (size_t j = 0; j < ncand; j++) {
                void *p;
                size_t us;
                if ((j && cand[j] == cand[j - 1]) || ch_reach_has(&rc, cand[j]))
                        continue;
                p = mseg_ptr(R->seg, cand[j]);
                us = p ? mseg_usable_size(R->seg, p) : 0;
                if (us && mseg_free(R->seg, p) == 0)
                        R->test_freed += us;
        }

        /* Contents: dir blocks, no overlaps. */
        for (size_t j = 0; j < rc.n; j++) {
                const struct ch_iv *v = &rc.iv[j];
                if (!strcmp(v->what, "dir block")) {
                        const char *bad = ch_block_bad(R->seg, mseg_ptr(R->seg, v->start));
                        if (bad)
                                CH_FAIL(R->sh, "dir block at %llu: %s", (unsigned long long) v->start, bad);
                }
                if (j && rc.iv[j - 1].start + rc.iv[j - 1].len > v->start)
                        CH_FAIL(R->sh, "%s at %llu (+%llu) overlaps %s at %llu", rc.iv[j - 1].what,
                                (unsigned long long) rc.iv[j - 1].start, (unsigned long long) rc.iv[j - 1].len,
                                v->what, (unsigned long long) v->start);
                reach += v->len;
        }
        /* Names: made ones intact, destroyed ones gone. */
        for (unsigned i = 0; i < CH_WORKERS_MAX; i++) {
                for (unsigned k = 0; k < CH_NAMES_PER; k++) {
                        uint8_t want = atomic_load(&R->sh->w[i].name_state[k]);
                        char name[64];
                        size_t count = 0;
                        uint64_t *p;
                        ch_name(name, sizeof(name), i, k);
                        p = mseg_find(R->seg, name, &ch_obj_type, &count);
                        if (p) {
                                const char *bad = ch_obj_bad(p, count, k, name);
                                expect_named++;
                                if (bad)
                                        CH_FAIL(R->sh, "\"%s\": %s", name, bad);
                                if (want == CH_NAME_ABSENT)
                                        CH_FAIL(R->sh, "\"%s\" exists, but it was destroyed", name);
                                atomic_store(&R->sh->w[i].name_state[k], CH_NAME_PRESENT);
                        } else {
                                if (want == CH_NAME_PRESENT)
                                        CH_FAIL(R->sh, "\"%s\" is gone (%s), but it was made", name, strerror(errno));
                                atomic_store(&R->sh->w[i].name_state[k], CH_NAME_ABSENT);
                        }
                }
        }
        if (named != expect_named)
                CH_FAIL(R->sh, "%zu workers' names iterated, %zu expected", named, expect_named);

        /* The leak: allocated but reachable from nothing. */
        ASSERT_OK(mseg_stats(R->seg, &st));
        leak = st.allocated_bytes > reach ? st.allocated_bytes - reach : 0;
        if (st.allocated_bytes < reach)
                CH_FAIL(R->sh, "allocated bytes %llu < reachable bytes %llu", (unsigned long long) st.allocated_bytes,
                        (unsigned long long) reach);
        if (leak > R->leak && leak - R->leak > R->leak_max_round)
                R->leak_max_round = leak - R->leak;
        if (leak > R->leak && getenv("CH_DEBUG"))
                fprintf(stderr, "round %u: %llu bytes leaked, %u kill(s), cut operations:%s\n", R->rounds,
                        (unsigned long long) (leak - R->leak), round_kills, ops_seen);
        if (leak > R->leak + (uint64_t) round_kills * CH_LEAK_PER_KILL)
                CH_FAIL(R->sh, "round %u leaked %llu bytes with %u kill(s) (bound %llu per kill)", R->rounds,
                        (unsigned long long) (leak - R->leak), round_kills, (unsigned long long) CH_LEAK_PER_KILL);
        if (st.poisoned)
                CH_FAIL(R->sh, "segment poisoned after round %u", R->rounds);
        R->leak = leak;
        R->reach_bytes = reach;
        free(rc.iv);
        free(cand);
        for (unsigned i = 0; i < CH_WORKERS_MAX; i++)
                R->killed[i] = false;
}

/* One round: workers, kills, then the checks. @hook_point: index into
 * ch_points or -1. */
static inline void ch_round(struct ch_run *R, int hook_point, const char *mode_arg) {
        uint64_t t_end;
        unsigned kills_before = R->kills, armed = 0;
        bool hook_done = hook_point < 0, reclaim_hook = false;

        atomic_store(&R->sh->stop, 0);
        /* slot.reclaim is reached by an attach that finds a dead slot: the
         * armed worker replaces the first one killed. */
        if (hook_point >= 0 && !strcmp(ch_points[hook_point].name, "slot.reclaim"))
                reclaim_hook = true;
        if (hook_point >= 0 && !reclaim_hook)
                armed = (unsigned) (test_rand(&R->rng) % R->nworkers);
        for (unsigned i = 0; i < R->nworkers; i++)
                ch_spawn(R, i, (hook_point >= 0 && !reclaim_hook && i == armed) ? hook_point : -1, mode_arg);
        t_end = ch_now_ms() + R->round_ms;
        while (ch_now_ms() < t_end) {
                unsigned v;
                ch_sleep_us(1000 + test_rand(&R->rng) % 20000);
                for (unsigned i = 0; i < R->nworkers; i++) {
                        struct ch_proc *p = &R->proc[i];
                        if (p->pid && p->hook_fd >= 0 && ch_hooked(p, 0)) {
                                int pt = p->point;
                                kill(p->pid, SIGKILL);
                                ch_reap(R, i, true);
                                R->kills_hooked++;
                                ch_points[pt].hit++;
                                hook_done = true;
                                ch_spawn(R, i, -1, mode_arg);
                        }
                }
                if (test_rand(&R->rng) % 4 == 0) {
                        v = (unsigned) (test_rand(&R->rng) % R->nworkers);
                        if (R->proc[v].pid && R->proc[v].hook_fd < 0) {
                                unsigned before = R->kills;
                                kill(R->proc[v].pid, SIGKILL);
                                ch_reap(R, v, true);
                                R->kills_random += R->kills - before;
                                if (reclaim_hook && !hook_done && armed == 0) {
                                        /* give the kill's slot a moment to be found dead */
                                        ch_spawn(R, v, hook_point, mode_arg);
                                        armed = 1;
                                } else {
                                        ch_spawn(R, v, -1, mode_arg);
                                }
                        }
                }
        }
        /* The armed worker, if still running, gets a last chance. */
        for (unsigned i = 0; i < R->nworkers; i++) {
                struct ch_proc *p = &R->proc[i];
                if (p->pid && p->hook_fd >= 0) {
                        int pt = p->point;
                        if (ch_hooked(p, 1000)) {
                                R->kills_hooked++;
                                ch_points[pt].hit++;
                                hook_done = true;
                        } else {
                                R->hooks_missed++;
                        }
                        kill(p->pid, SIGKILL);
                        ch_reap(R, i, true);
                }
        }
        atomic_store(&R->sh->stop, 1);
        for (unsigned i = 0; i < R->nworkers; i++) {
                uint64_t t0 = ch_now_ms();
                struct ch_proc *p = &R->proc[i];
                int st;
                if (!p->pid)
                        continue;
                while (waitpid(p->pid, &st, WNOHANG) == 0) {
                        if (ch_now_ms() - t0 > 30000) {
                                kill(p->pid, SIGKILL);
                                CH_FAIL(R->sh, "worker %u did not stop within 30 s (hung)", i);
                                break;
                        }
                        ch_sleep_us(2000);
                }
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                        CH_FAIL(R->sh, "worker %u ended with status 0x%x", i, st);
                if (p->hook_fd >= 0)
                        close(p->hook_fd);
                p->hook_fd = -1;
                p->pid = 0;
                atomic_store(&R->sh->w[i].pid, 0);
        }
        R->rounds++;
        ch_verify(R, R->kills - kills_before);
}

/* Run @rounds rounds; every other one arms a hook, cycling through the
 * points this mode reaches. */
static inline void ch_torture(struct ch_run *R, unsigned rounds, const char *mode_arg) {
        unsigned next_point = 0;

        for (unsigned r = 0; r < rounds; r++) {
                int point = -1;
                if (r % 2 == 0) {
                        for (unsigned tries = 0; tries < CH_NPOINTS; tries++) {
                                unsigned p = next_point++ % CH_NPOINTS;
                                if (ch_points[p].modes & R->t.mode) {
                                        point = (int) p;
                                        break;
                                }
                        }
                }
                ch_round(R, point, mode_arg);
                if (atomic_load(&R->sh->failures)) {
                        fprintf(stderr, "round %u (hook %s): %d failure(s); first: %s\n", r,
                                point >= 0 ? ch_points[point].name : "none", atomic_load(&R->sh->failures),
                                R->sh->first_failure);
                        break;
                }
        }
}

static inline void ch_summary(struct ch_run *R, const char *test) {
        struct mseg_stats st;

        ASSERT_OK(mseg_stats(R->seg, &st));
        printf("%s: rounds %u, kills %u (inside critical sections %u, at random %u), failures %d, "
               "leaked %llu bytes (%.0f per killed process, at most %llu in a round), "
               "lock repairs %llu, slots reclaimed %llu, test blocks recovered %llu bytes\n",
               test, R->rounds, R->kills, R->kills_hooked, R->kills - R->kills_hooked,
               atomic_load(&R->sh->failures), (unsigned long long) R->leak,
               R->kills ? (double) R->leak / R->kills : 0.0, (unsigned long long) R->leak_max_round,
               (unsigned long long) st.lock_repairs, (unsigned long long) st.slots_reclaimed,
               (unsigned long long) R->test_freed);
        printf("%s: hook points (armed/hit):", test);
        for (unsigned p = 0; p < CH_NPOINTS; p++)
                if (ch_points[p].armed)
                        printf(" %s %u/%u", ch_points[p].name, ch_points[p].armed, ch_points[p].hit);
        printf("\n");
        fflush(stdout);
}

static inline void ch_run_done(struct ch_run *R) {
        free(R->pending);
        R->pending = NULL;
        munmap(R->sh, sizeof(struct ch_shared));
        close(R->shm_fd);
        mseg_close(R->seg);
        R->seg = NULL;
}

/* Rounds from the environment (meson's torture_rounds), else @dflt. */
static inline unsigned ch_rounds(unsigned dflt) {
        const char *s = getenv("MSEG_TORTURE_ROUNDS");
        long v = s ? strtol(s, NULL, 10) : 0;

        return v > 0 ? (unsigned) v : dflt;
}

/* ------------------------------------------------- alloc_into, killed */

/* A process killed inside mseg_alloc_into() at @point (its @n-th hit): each
 * destination is 0 or holds a live block; after freeing all non-zero ones
 * the free memory is exactly what it was. The child loops over @ndest
 * slots of the named array "into", allocating @size bytes into each. */
static inline void ch_into_child(const struct ch_target *t, uint64_t size) {
        mseg *seg;
        mseg_handle *d;
        size_t n = 0;

        ASSERT_OK(ch_open(t, &seg, MSEG_OPEN_ONLY));
        d = mseg_find(seg, "into", &ch_dir_type, &n);
        ASSERT_NOT_NULL(d);
        for (size_t i = 0; i < n; i++) {
                int r = mseg_alloc_into(seg, size, &d[i]);
                if (r == -ENOMEM)
                        break;
                ASSERT_OK(r);
        }
        _exit(3);                       /* the hook never fired */
}

/* Kill a child inside mseg_alloc_into at @point:@n; check and free what it
 * left. @reclaim: how its slot comes back (called after the kill). Returns
 * 1 when the hook was reached, 0 when the child ended first (a failure for
 * the callers, who pick points the child reaches). */
static inline int ch_into_kill(const struct ch_target *t, const char *self, mseg *seg, const char *point,
                               unsigned n, uint64_t size, size_t ndest, void (*reclaim)(void *), void *arg) {
        mseg_handle *d;
        size_t cnt = 0, live = 0;
        uint64_t base_free;
        int fds[2], st, hit;
        char hook[96], sz[32], c;
        struct pollfd pfd;
        pid_t pid;

        d = mseg_find(seg, "into", &ch_dir_type, &cnt);
        if (!d) {
                d = mseg_construct(seg, "into", &ch_dir_type, ndest, NULL, NULL);
                ASSERT_NOT_NULL(d);
                cnt = ndest;
        }
        ASSERT_EQ(cnt, ndest);
        ASSERT_OK(mseg_check(seg));
        base_free = mseg_free_memory(seg);
        ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
        snprintf(hook, sizeof(hook), "%s:%u", point, n);
        snprintf(sz, sizeof(sz), "%llu", (unsigned long long) size);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                char *argv[] = { "crash-into", "into", t->mode == CH_FILE ? "file" : "brokered", (char *) t->where,
                                 (char *) t->sock, sz, NULL };
                ch_die_with_parent();
                if (dup2(fds[1], CH_HOOK_FD) < 0)
                        _exit(126);
                setenv("MSEG_TEST_HOOK", hook, 1);
                setenv("MSEG_TEST_HOOK_FD", "101", 1);
                execv(self, argv);
                _exit(127);
        }
        close(fds[1]);
        pfd = (struct pollfd){ .fd = fds[0], .events = POLLIN };
        hit = poll(&pfd, 1, 20000) == 1 && read(fds[0], &c, 1) == 1;
        kill(pid, SIGKILL);
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        close(fds[0]);
        if (!hit)
                return 0;
        reclaim(arg);
        /* Every destination: a live block, or nothing. */
        for (size_t i = 0; i < ndest; i++) {
                void *p;
                if (!d[i])
                        continue;
                p = mseg_ptr(seg, d[i]);
                if (!p || mseg_usable_size(seg, p) < size)
                        FAIL("%s:%u: into[%zu] = %llu is not a live block", point, n, i, (unsigned long long) d[i]);
                live++;
        }
        ASSERT_OK(mseg_check(seg));
        for (size_t i = 0; i < ndest; i++) {
                if (d[i])
                        ASSERT_OK(mseg_free(seg, mseg_ptr(seg, d[i])));
                d[i] = 0;
        }
        ASSERT_OK(mseg_check(seg));
        if (mseg_free_memory(seg) != base_free)
                FAIL("%s:%u: free memory %llu after freeing the %zu linked blocks, %llu before: %lld bytes lost",
                     point, n, (unsigned long long) mseg_free_memory(seg), live, (unsigned long long) base_free,
                     (long long) (base_free - mseg_free_memory(seg)));
        return 1;
}

#endif /* MSEG_CRASH_HARNESS_H */
