/* SPDX-License-Identifier: MIT */
/*
 * slot.c — attachment slots: which thread of which process owns which
 * magazine record in a segment, how a thread finds its own fast, and how the
 * records of dead processes come back.
 *
 * A thread gets a slot on its first allocation in a segment. The claim (and
 * every release and reclaim) happens under the segment's robust slot lock:
 * the claimer writes pid, tid, start time (field 22 of /proc/PID/stat) and
 * pid namespace, then publishes the state LIVE(gen) with one store, so a
 * slot is either free or fully owned whatever instant the claimer dies at.
 * Its magazine record (alloc.c) is a run of the page layer whose offset the
 * page layer itself stores into the slot inside its critical section.
 *
 * Per thread, a small initial-exec TLS array (mseg__tc) maps a handle's uid
 * to the record, so the allocation fast path costs one TLS load and one
 * compare. When a thread exits, its key destructor hands its slots back to
 * the handle as idle (the magazines stay with the process and the next
 * thread that needs a slot takes one of them). A handle whose segment was
 * closed is found no more by uid, so a late destructor never touches it.
 * mseg_close() flushes and frees every slot of the handle.
 *
 * fork(): the child inherits the parent's TLS and handles but owns none of
 * their slots; an atfork handler forgets them in the child, which claims
 * its own. (As mseg.h says, no other thread may be inside libmseg then.)
 *
 * Reclaim: a LIVE slot whose (pid, start time) names no living process of
 * our pid namespace is marked RECLAIMING, its magazines are returned, an
 * interrupted mseg_alloc_into is settled, its record freed and the slot
 * freed with the next generation. Every step is idempotent, so a
 * reclaimer that dies is finished by the next (RECLAIMING under the lock).
 * msegd calls mseg__alloc_reclaim_slot() when a client disconnects; mapped
 * files call mseg__slots_reclaim_dead() at attach.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc_layout.h"

__thread struct a_tc mseg__tc[A_TC_N] __attribute__((tls_model("initial-exec")));

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct mseg__alloc_local *g_locals;      /* every attached handle */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_key;

/* This process's identity, computed lazily (and again after fork). */
static struct {
        bool known;
        uint32_t pid;
        uint64_t start;
        uint64_t pidns;
} g_self;

static void release_entry(struct a_tc *e);

static void thread_exit(void *arg) {
        (void) arg;
        for (int i = 0; i < A_TC_N; i++)
                release_entry(&mseg__tc[i]);
}

static void atfork_prepare(void) {
        pthread_mutex_lock(&g_mu);
}

static void atfork_parent(void) {
        pthread_mutex_unlock(&g_mu);
}

static void atfork_child(void) {
        memset(mseg__tc, 0, sizeof(mseg__tc));
        for (struct mseg__alloc_local *L = g_locals; L; L = L->next) {
                pthread_mutex_init(&L->mu, NULL);
                L->nowned = 0;          /* the parent's slots */
        }
        g_self.known = false;
        pthread_mutex_init(&g_mu, NULL);
}

static void once_init(void) {
        pthread_key_create(&g_key, thread_exit);
        pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* starttime (field 22) of @path (/proc/PID/stat); 0 if it does not exist */
/* The start of a small /proc file, NUL-terminated; false if unreadable. */
static bool read_proc(const char *path, char *buf, size_t cap) {
        ssize_t n;
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                return false;
        n = read(fd, buf, cap - 1);
        close(fd);
        if (n <= 0)
                return false;
        buf[n] = 0;
        return true;
}

static uint64_t stat_start_time(const char *path) {
        char buf[1024], *p;
        unsigned long long v = 0;

        if (!read_proc(path, buf, sizeof(buf)))
                return 0;
        p = strrchr(buf, ')');          /* the command name may hold anything */
        if (!p)
                return 0;
        p++;
        for (int field = 3; field <= 22 && *p; field++) {
                while (*p == ' ')
                        p++;
                if (field == 22) {
                        v = strtoull(p, NULL, 10);
                        break;
                }
                while (*p && *p != ' ')
                        p++;
        }
        return v;
}

static uint64_t proc_start_time(uint32_t pid) {
        char path[64];

        snprintf(path, sizeof(path), "/proc/%u/stat", pid);
        return stat_start_time(path);
}

static void self_identity(void) {
        struct stat st;

        if (g_self.known)
                return;
        g_self.pid = (uint32_t) getpid();
        /* /proc/self, not /proc/PID: in a PID namespace whose /proc was not
         * mounted again, PID names another process there. */
        g_self.start = stat_start_time("/proc/self/stat");
        g_self.pidns = stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t) st.st_ino : 0;
        g_self.known = true;
}

mseg_slot *mseg__slot_at(struct mseg__alloc_local *L, uint32_t i) {
        return (mseg_slot *) (L->base + L->slots_off + (uint64_t) i * MSEG_SLOT_SIZE);
}

static uint64_t slot_field_off(struct mseg__alloc_local *L, const void *field) {
        return (uint64_t) ((const uint8_t *) field - L->base);
}

void mseg__slots_register(struct mseg__alloc_local *L) {
        pthread_once(&g_once, once_init);
        pthread_mutex_lock(&g_mu);
        L->next = g_locals;
        g_locals = L;
        pthread_mutex_unlock(&g_mu);
}

static int slot_lock(struct mseg__alloc_local *L) {
        int r = a_lock(L, &L->root->slot_lock, A_LOCK_SLOTS);

        if (r == 1) {
                /* Nothing to replay: a claim publishes with its last store,
                 * and RECLAIMING slots are finished by the next reclaim. */
                mseg__lock_consistent(&L->root->slot_lock);
                r = 0;
        }
        return r;
}

static void slot_unlock(struct mseg__alloc_local *L) {
        mseg__unlock(&L->root->slot_lock);
}

/* Claim a free slot and give it a magazine record. Slot lock NOT held. */
static int slot_claim(struct mseg__alloc_local *L, uint32_t *ret) {
        int r;

        self_identity();
        r = slot_lock(L);
        if (r < 0)
                return r;
        r = -EAGAIN;
        for (uint32_t i = 0; i < L->nslots; i++) {
                mseg_slot *s = mseg__slot_at(L, i);
                uint64_t st = atomic_load_explicit(&s->state, memory_order_acquire);
                uint64_t gen = MSEG_SLOT_GEN(st);
                uint32_t u;
                if (MSEG_SLOT_STATE(st) != MSEG_SLOT_FREE)
                        continue;
                s->pid = g_self.pid;
                s->tid = (uint32_t) gettid();
                s->start_time = g_self.start;
                s->heap_off = 0;
                s->reserved[A_SLOT_INTO_DEST] = 0;
                s->reserved[A_SLOT_INTO_BLOCK] = 0;
                s->reserved[A_SLOT_PIDNS] = g_self.pidns;
                atomic_store_explicit(&s->state, MSEG_SLOT_MAKE(MSEG_SLOT_LIVE, gen), memory_order_release);
                atomic_fetch_add_explicit(&L->seg->hdr->attach_gen, 1, memory_order_relaxed);
                MSEG_TEST_HOOK("slot.claim");
                r = mseg__pages_alloc(L, L->heap_units, 1, 0, A_RUN_META, 0, NULL,
                                      slot_field_off(L, &s->heap_off), &u);
                if (r < 0) {
                        s->pid = 0;
                        atomic_store_explicit(&s->state, MSEG_SLOT_MAKE(MSEG_SLOT_FREE, gen + 1),
                                              memory_order_release);
                        break;
                }
                mseg__heap_init(L, (struct a_heap *) (L->base + L->data_off + ((uint64_t) u << A_UNIT_SHIFT)),
                                i, gen);
                *ret = i;
                r = 0;
                break;
        }
        slot_unlock(L);
        return r;
}

/* Give a slot's blocks and record back and free it. Slot lock held.
 * Returns 0, or -EBUSY / -ETIMEDOUT when a lock could not be had now: the
 * slot then stays RECLAIMING, its record in place (freeing it before every
 * class has taken its blocks back would let a later replay of a class's
 * intent write into reused memory), and the next reclaim finishes. */
static int slot_reclaim_locked(struct mseg__alloc_local *L, uint32_t i) {
        mseg_slot *s = mseg__slot_at(L, i);
        uint64_t st = atomic_load_explicit(&s->state, memory_order_acquire);
        uint64_t gen = MSEG_SLOT_GEN(st), heap_off;
        int r;

        if (MSEG_SLOT_STATE(st) == MSEG_SLOT_FREE)
                return 0;
        atomic_store_explicit(&s->state, MSEG_SLOT_MAKE(MSEG_SLOT_RECLAIMING, gen), memory_order_release);
        /* A claim cut inside the page layer's allocation of the record:
         * that lock's repair stores the record's offset into the slot. It
         * runs first, so that heap_off is final before it is read (else
         * the record would land in a slot already freed, and leak). */
        r = mseg__pages_settle(L);
        if (r == -EBUSY || r == -ETIMEDOUT)
                return r;
        heap_off = s->heap_off;
        r = mseg__heap_flush_all(L, mseg__heap_at(L, heap_off), s);
        if (r == -EBUSY || r == -ETIMEDOUT)
                return r;
        MSEG_TEST_HOOK("slot.reclaim");
        if (heap_off) {
                uint64_t rel = heap_off - L->data_off;
                if (heap_off < L->data_off || heap_off >= L->data_end || (rel & (A_UNIT - 1)))
                        s->heap_off = 0;        /* not a record: nothing to give back */
                else {
                        r = mseg__pages_free(L, (uint32_t) (rel >> A_UNIT_SHIFT), A_RUN_META,
                                             slot_field_off(L, &s->heap_off));
                        if (r == -EBUSY || r == -ETIMEDOUT)
                                return r;
                        if (r < 0)
                                s->heap_off = 0;
                }
        }
        s->pid = 0;
        s->tid = 0;
        s->start_time = 0;
        atomic_store_explicit(&s->state, MSEG_SLOT_MAKE(MSEG_SLOT_FREE, gen + 1), memory_order_release);
        return 0;
}

static void slot_release(struct mseg__alloc_local *L, uint32_t i) {
        if (slot_lock(L) < 0)
                return;                 /* left LIVE: reclaimed once we are gone */
        (void) slot_reclaim_locked(L, i);       /* or left RECLAIMING: finished by the next reclaim */
        slot_unlock(L);
}

/* ---- the thread cache ---- */

static struct mseg__alloc_local *local_by_uid(uint64_t uid) {
        for (struct mseg__alloc_local *L = g_locals; L; L = L->next)
                if (L->uid == uid)
                        return L;
        return NULL;
}

/* Hand a thread's slot back to its handle (which may be gone). */
static void release_entry(struct a_tc *e) {
        if (e->uid && e->slot) {
                pthread_mutex_lock(&g_mu);
                struct mseg__alloc_local *L = local_by_uid(e->uid);
                if (L) {
                        uint32_t idx = (uint32_t) (((uint8_t *) e->slot - (L->base + L->slots_off)) / MSEG_SLOT_SIZE);
                        pthread_mutex_lock(&L->mu);
                        for (uint32_t i = 0; i < L->nowned; i++)
                                if (L->owned[i] == idx)
                                        L->busy[i] = 0;
                        pthread_mutex_unlock(&L->mu);
                }
                pthread_mutex_unlock(&g_mu);
        }
        memset(e, 0, sizeof(*e));
}

static int owned_add(struct mseg__alloc_local *L, uint32_t idx) {
        if (L->nowned == L->owned_cap) {
                uint32_t ncap = L->owned_cap ? L->owned_cap * 2 : 8;
                uint32_t *o = realloc(L->owned, ncap * sizeof(*o));
                uint8_t *b;
                if (!o)
                        return -ENOMEM;
                L->owned = o;
                b = realloc(L->busy, ncap);
                if (!b)
                        return -ENOMEM;
                L->busy = b;
                L->owned_cap = ncap;
        }
        L->owned[L->nowned] = idx;
        L->busy[L->nowned] = 1;
        L->nowned++;
        return 0;
}

static struct a_heap *entry_install(struct mseg__alloc_local *L, mseg_slot *s, struct a_heap *h) {
        struct a_tc e = { .uid = L->uid, .heap = h, .slot = h ? s : NULL };

        if (h)
                e.ent = (uint64_t *) ((uint8_t *) h + A_HEAP_HDR);
        if (mseg__tc[A_TC_N - 1].uid)
                release_entry(&mseg__tc[A_TC_N - 1]);
        memmove(&mseg__tc[1], &mseg__tc[0], (A_TC_N - 1) * sizeof(mseg__tc[0]));
        mseg__tc[0] = e;
        pthread_setspecific(g_key, (void *) 1);
        return h;
}

struct a_heap *mseg__slot_heap(struct mseg__alloc_local *L, mseg_slot **ret_slot) {
        struct a_heap *h = NULL;
        mseg_slot *s = NULL;
        uint32_t idx = 0;
        bool have = false;

        for (int i = 0; i < A_TC_N; i++) {
                if (mseg__tc[i].uid == L->uid) {
                        struct a_tc e = mseg__tc[i];
                        memmove(&mseg__tc[1], &mseg__tc[0], (size_t) i * sizeof(mseg__tc[0]));
                        mseg__tc[0] = e;
                        *ret_slot = e.slot;
                        return e.heap;
                }
        }
        *ret_slot = NULL;
        if (!L->caches)
                return entry_install(L, NULL, NULL);
        pthread_mutex_lock(&L->mu);
        for (uint32_t i = 0; i < L->nowned; i++) {
                if (!L->busy[i]) {
                        L->busy[i] = 1;
                        idx = L->owned[i];
                        have = true;
                        break;
                }
        }
        pthread_mutex_unlock(&L->mu);
        if (!have) {
                if (slot_claim(L, &idx) < 0)
                        return entry_install(L, NULL, NULL);
                pthread_mutex_lock(&L->mu);
                if (owned_add(L, idx) < 0) {
                        pthread_mutex_unlock(&L->mu);
                        slot_release(L, idx);
                        return entry_install(L, NULL, NULL);
                }
                pthread_mutex_unlock(&L->mu);
        }
        s = mseg__slot_at(L, idx);
        h = mseg__heap_at(L, s->heap_off);
        if (!h)
                s = NULL;
        *ret_slot = s;
        return entry_install(L, s, h);
}

void mseg__slot_flush_own(struct mseg__alloc_local *L) {
        for (int i = 0; i < A_TC_N; i++)
                if (mseg__tc[i].uid == L->uid && mseg__tc[i].heap)
                        (void) mseg__heap_flush_all(L, mseg__tc[i].heap, NULL);
}

void mseg__slots_detach(struct mseg__alloc_local *L) {
        pthread_mutex_lock(&g_mu);
        for (struct mseg__alloc_local **pp = &g_locals; *pp; pp = &(*pp)->next) {
                if (*pp == L) {
                        *pp = L->next;
                        break;
                }
        }
        pthread_mutex_unlock(&g_mu);
        for (int i = 0; i < A_TC_N; i++)
                if (mseg__tc[i].uid == L->uid)
                        memset(&mseg__tc[i], 0, sizeof(mseg__tc[i]));
        if (L->writable)
                for (uint32_t i = 0; i < L->nowned; i++)
                        slot_release(L, L->owned[i]);
        L->nowned = 0;
}

/* ---- reclaiming the slots of dead processes ---- */

/* Processes of other PID namespaces that msegd has seen connect: a slot
 * names its owner by the pid it has in its own namespace, which means
 * nothing here, but msegd knows that process by its pid in msegd's
 * namespace too, and can tell when it is gone. */
#define FOREIGN_MAX 4096
static struct foreign {
        uint32_t ns_pid;                /* the pid it sees for itself (NSpid, last) */
        uint32_t local_pid;             /* the pid we see */
        uint64_t start;                 /* field 22 of /proc/PID/stat, the same in both */
} g_foreign[FOREIGN_MAX];
static unsigned g_nforeign;
static pthread_mutex_t g_foreign_mu = PTHREAD_MUTEX_INITIALIZER;

/* The innermost pid of NSpid in /proc/PID/status; 0 when unreadable. */
static uint32_t proc_ns_pid(uint32_t pid) {
        char path[64], buf[2048], *p;
        unsigned long v = 0;

        snprintf(path, sizeof(path), "/proc/%u/status", pid);
        if (!read_proc(path, buf, sizeof(buf)))
                return 0;
        p = strstr(buf, "\nNSpid:");
        if (!p)
                return 0;
        for (p += 7; *p && *p != '\n';) {
                char *end;
                unsigned long x = strtoul(p, &end, 10);
                if (end == p)
                        break;
                v = x;
                p = end;
        }
        return (uint32_t) v;
}

int mseg__slots_note_peer(uint32_t local_pid) {
        uint32_t ns_pid = proc_ns_pid(local_pid);
        uint64_t start = proc_start_time(local_pid);
        unsigned i;

        if (!ns_pid || !start)
                return -ESRCH;
        if (ns_pid == local_pid)
                return 0;               /* our namespace: judged directly */
        pthread_mutex_lock(&g_foreign_mu);
        for (i = 0; i < g_nforeign; i++)
                if (g_foreign[i].local_pid == local_pid && g_foreign[i].start == start)
                        break;          /* known already */
        if (i == g_nforeign) {
                if (g_nforeign < FOREIGN_MAX) {
                        g_nforeign++;
                } else {        /* full: replace one that is gone, else the first */
                        for (i = 0; i < FOREIGN_MAX; i++)
                                if (proc_start_time(g_foreign[i].local_pid) != g_foreign[i].start)
                                        break;
                        if (i == FOREIGN_MAX)
                                i = 0;
                }
                g_foreign[i] = (struct foreign) { ns_pid, local_pid, start };
        }
        pthread_mutex_unlock(&g_foreign_mu);
        return 1;
}

/* A slot of another namespace: dead if it is a process we were told of and
 * that process is gone; otherwise not ours to judge. */
static bool foreign_dead(uint32_t pid, uint64_t start) {
        bool dead = false;

        pthread_mutex_lock(&g_foreign_mu);
        for (unsigned i = 0; i < g_nforeign; i++)
                if (g_foreign[i].ns_pid == pid && g_foreign[i].start == start) {
                        dead = proc_start_time(g_foreign[i].local_pid) != start;
                        break;
                }
        pthread_mutex_unlock(&g_foreign_mu);
        return dead;
}

static bool owner_dead(struct mseg__alloc_local *L, const mseg_slot *s) {
        uint32_t pid = s->pid;
        uint64_t start = s->start_time;

        (void) L;
        if (pid == 0)
                return true;
        if (s->reserved[A_SLOT_PIDNS] != g_self.pidns)
                return foreign_dead(pid, start);
        if (pid == g_self.pid)
                return start != g_self.start;
        return proc_start_time(pid) != start;
}

bool mseg__slot_owner_gone(struct mseg *seg, uint32_t i) {
        struct mseg__alloc_local *L = seg ? seg->alloc : NULL;
        mseg_slot *s;
        uint32_t st;

        if (!L || i >= L->nslots)
                return false;
        self_identity();
        s = mseg__slot_at(L, i);
        st = MSEG_SLOT_STATE(atomic_load_explicit(&s->state, memory_order_acquire));
        return st == MSEG_SLOT_RECLAIMING || (st == MSEG_SLOT_LIVE && owner_dead(L, s));
}

int mseg__slots_reclaim_dead(struct mseg *seg) {
        struct mseg__alloc_local *L = seg ? seg->alloc : NULL;
        int r, n = 0, busy = 0;

        if (!L)
                return mseg__error(-EINVAL, "no segment");
        if (!L->writable)
                return mseg__error(-EROFS, "segment is mapped read-only");
        self_identity();
        r = slot_lock(L);
        if (r < 0)
                return r;
        for (uint32_t i = 0; i < L->nslots; i++) {
                mseg_slot *s = mseg__slot_at(L, i);
                uint32_t st = MSEG_SLOT_STATE(atomic_load_explicit(&s->state, memory_order_acquire));
                if (st == MSEG_SLOT_RECLAIMING || (st == MSEG_SLOT_LIVE && owner_dead(L, s))) {
                        int q = slot_reclaim_locked(L, i);
                        if (q < 0) {
                                busy = q;       /* left RECLAIMING: the caller tries again */
                                continue;
                        }
                        L->root->slot_reclaims++;
                        n++;
                }
        }
        slot_unlock(L);
        return busy ? mseg__error(busy, "a dead slot's reclaim waits for a busy lock") : n;
}

int mseg__alloc_reclaim_slot(struct mseg *seg, uint32_t slot) {
        struct mseg__alloc_local *L = seg ? seg->alloc : NULL;
        mseg_slot *s;
        int r;

        if (!L || slot >= L->nslots)
                return mseg__error(-EINVAL, "no such slot");
        if (!L->writable)
                return mseg__error(-EROFS, "segment is mapped read-only");
        self_identity();
        s = mseg__slot_at(L, slot);
        r = slot_lock(L);
        if (r < 0)
                return r;
        if (s->pid == g_self.pid && s->start_time == g_self.start &&
            MSEG_SLOT_STATE(atomic_load_explicit(&s->state, memory_order_acquire)) == MSEG_SLOT_LIVE)
                r = mseg__error(-EBUSY, "slot %u belongs to this process", slot);
        else if ((r = slot_reclaim_locked(L, slot)) == 0)
                L->root->slot_reclaims++;
        slot_unlock(L);
        return r;
}

/* ---- figures and checks ---- */

void mseg__slots_cached(struct mseg__alloc_local *L, uint64_t cached[A_NCLASSES]) {
        memset(cached, 0, A_NCLASSES * sizeof(cached[0]));
        if (!L->heap_units)
                return;
        for (uint32_t i = 0; i < L->nslots; i++) {
                mseg_slot *s = mseg__slot_at(L, i);
                uint32_t st = MSEG_SLOT_STATE(atomic_load_explicit(&s->state, memory_order_acquire));
                struct a_heap *h;
                if (st == MSEG_SLOT_FREE)
                        continue;
                h = mseg__heap_at(L, __atomic_load_n(&s->heap_off, __ATOMIC_RELAXED));
                if (!h)
                        continue;
                for (uint32_t c = 0; c < A_NCLASSES; c++) {
                        uint32_t n = __atomic_load_n(&h->count[c], __ATOMIC_RELAXED);
                        cached[c] += n <= L->cap[c] ? n : L->cap[c];
                }
        }
}

static int slots_check_locked(struct mseg__alloc_local *L);

int mseg__slots_check(struct mseg__alloc_local *L) {
        int r = 0;

        self_identity();
        /* Claims and releases happen under the slot lock: a slot between
         * its state and its record is not damage. */
        if (L->writable && (r = slot_lock(L)) < 0)
                return r;
        r = slots_check_locked(L);
        if (L->writable)
                slot_unlock(L);
        return r;
}

static int slots_check_locked(struct mseg__alloc_local *L) {
        for (uint32_t i = 0; i < L->nslots; i++) {
                mseg_slot *s = mseg__slot_at(L, i);
                uint64_t v = atomic_load_explicit(&s->state, memory_order_acquire);
                uint32_t st = MSEG_SLOT_STATE(v);
                uint64_t heap_off = s->heap_off;
                struct a_heap *h;
                int r;
                if (st > MSEG_SLOT_RECLAIMING)
                        return mseg__error(MSEG_E_CORRUPT, "slot %u: bad state %u", i, st);
                if (st == MSEG_SLOT_FREE) {
                        if (heap_off)
                                return mseg__error(MSEG_E_CORRUPT, "free slot %u still holds a magazine record", i);
                        continue;
                }
                if (!heap_off)
                        continue;
                h = mseg__heap_at(L, heap_off);
                if (!h || !mseg__pages_is_run(L, (uint32_t) ((heap_off - L->data_off) >> A_UNIT_SHIFT), A_RUN_META))
                        return mseg__error(MSEG_E_CORRUPT, "slot %u: bad magazine record offset %llu", i,
                                           (unsigned long long) heap_off);
                /* entries and duplicates only where the magazine holds
                 * still: our own thread's, or a dead owner's (a reclaimer
                 * holds the slot lock, as we do) */
                r = mseg__alloc_check_heap(L, h, (mseg__tc[0].uid == L->uid && mseg__tc[0].heap == h) ||
                                                         st == MSEG_SLOT_RECLAIMING || owner_dead(L, s));
                if (r < 0)
                        return r;
        }
        return 0;
}
