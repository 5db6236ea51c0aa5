/* SPDX-License-Identifier: MIT */
/*
 * lock.c — the one kind of lock that lives in a segment: a robust,
 * process-shared mutex of the "normal" type (no recursion, no owner check),
 * built on the kernel's robust futexes rather than on pthread_mutex_t.
 *
 * Why robust: a holder killed with SIGKILL hands the next locker "owner
 * died" instead of wedging every process. mseg__lock() reports that as 1
 * and leaves the lock held and inconsistent (pthread's EOWNERDEAD): the
 * caller repairs what the dead owner left half-done, then calls
 * mseg__lock_consistent() (pthread_mutex_consistent). A caller that cannot
 * repair simply unlocks, which makes the lock unrecoverable for good
 * (ENOTRECOVERABLE): the segment is then poisoned, loudly, rather than
 * silently corrupt. Why normal: recursive and error-checking mutexes compare
 * the TID in the futex word with the caller's, which collides across PID
 * namespaces (linux-facts.md 5.1).
 *
 * Why not pthread_mutex_t. glibc keeps every robust mutex a thread holds in
 * that thread's robust list, linked through two pointers *inside* the mutex,
 * and pthread_mutex_unlock() writes through them. In a segment, any client
 * can rewrite those pointers while we hold the lock, and so make our unlock
 * write where it chooses, outside the segment (test-scribble's lock-links
 * case did exactly that). glibc's lock path also trusts the mutex's kind
 * word, which a client can flip to a priority-protect kind that makes glibc
 * abort. So the lock is ours, and only the futex word keeps its kernel
 * meaning:
 *
 *   word   owner TID | FUTEX_WAITERS | FUTEX_OWNER_DIED (the robust-futex
 *          ABI: when a thread dies the kernel finds the locks it held through
 *          its robust list, sets FUTEX_OWNER_DIED and wakes a waiter).
 *   next   the robust-list entry, at the same distance from the word as in a
 *          pthread_mutex_t (glibc registers that distance once per thread as
 *          the list's futex_offset), so our locks can share glibc's list.
 *   prev   glibc's back link, which glibc maintains when it links or unlinks
 *          one of its own mutexes next to ours.
 *
 * We link a lock into the calling thread's glibc list when we take it and
 * unlink it when we release it, as glibc does, but every pointer we write
 * through comes from memory the segment cannot reach: the list head (in the
 * thread's TLS), the application's own mutexes, or our thread-local record
 * of the locks we hold. The copies in the segment are written for the
 * kernel, which reads them only when the thread dies (with fault-safe
 * accesses, in the dying thread's address space), and never read back.
 *
 * Waits are bounded: a live process that holds a lock forever (a hostile or
 * stopped client) makes others fail with -ETIMEDOUT instead of hanging.
 * Never unmap a segment while holding one of its locks (the kernel could
 * not then mark it owner-died): every lock is taken and released within one
 * library call, and mseg_close() refuses to unmap from inside a callback.
 */
#include <linux/futex.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define tsan_acquire(p) __tsan_acquire(p)
#define tsan_release(p) __tsan_release(p)
#else
#define tsan_acquire(p) ((void) (p))
#define tsan_release(p) ((void) (p))
#endif

enum {
        LOCK_CONSISTENT = 0,
        LOCK_INCONSISTENT = 1,          /* taken after its owner died, not yet repaired */
        LOCK_NOTRECOVERABLE = 2,        /* a repair was abandoned */
};

static_assert(offsetof(mseg_lock, word) == 0, "futex word first");
static_assert(offsetof(mseg_lock, prev) == 24 && offsetof(mseg_lock, next) == 32,
              "robust-list links where a pthread_mutex_t keeps them");

/* How long a locker waits for a live holder before giving up. Long enough
 * for any critical section, short enough that a stuck peer is reported. */
static int64_t lock_timeout_ms(void) {
        static _Atomic int64_t cached = -1;
        int64_t v = atomic_load_explicit(&cached, memory_order_relaxed);

        if (v < 0) {
                const char *s = secure_getenv("MSEG_LOCK_TIMEOUT_MS");
                v = s ? strtoll(s, NULL, 10) : 0;
                if (v <= 0)
                        v = 10000;
                atomic_store_explicit(&cached, v, memory_order_relaxed);
        }
        return v;
}

/* ------------------------------------------------ the thread's robust list */

/* The kernel's robust-list ABI (linux/futex.h), spelled with integers: the
 * low bit of a link marks a PI futex, and we never follow a link we did
 * not write or get from trusted memory. */
struct rl_head {
        uintptr_t next;                 /* first entry, or &head->next when empty */
        long futex_offset;              /* word address - entry address */
        uintptr_t pending;              /* entry being locked or unlocked */
};

#define LINK_PTR(v) ((v) & ~(uintptr_t) 1)
#define ENTRY_OFF ((long) offsetof(mseg_lock, next))
#define MAX_HELD 16                     /* locks one thread holds at once */
#define MAX_WALK 4096                   /* list entries above ours we follow */

/* initial-exec: a lock must not pay a __tls_get_addr call per field. */
static __thread __attribute__((tls_model("initial-exec"))) struct {
        bool known;                     /* head and tid found (reset at fork) */
        bool robust;                    /* the list is usable: glibc's, offset -32 */
        struct rl_head *head;
        uint32_t tid;
        unsigned nheld;
        struct held {
                mseg_lock *l;
                uintptr_t next;         /* our copy of l->next */
        } held[MAX_HELD];
} self;

/* Threads that must never wait on a segment (msegd's workers) say so. The
 * promise covers the first lock such a thread takes: one taken inside a
 * critical section waits (boundedly) like any other, since giving up there
 * would leave the section half done. */
static __thread __attribute__((tls_model("initial-exec"))) bool no_wait;

static void forget_self(void) {
        /* In a fork child the one thread has a new TID; glibc registers the
         * same head again. Nothing is held across a fork (mseg.h). */
        self.known = false;
        self.nheld = 0;
}

static void once_atfork(void) {
        pthread_atfork(NULL, NULL, forget_self);
}

/* Find glibc's list head and our TID by taking a private robust mutex:
 * glibc links it first, with its back link naming the head, and writes our
 * TID (glibc's cached one, no system call) into its word. */
static void find_self(void) {
        static pthread_once_t once = PTHREAD_ONCE_INIT;
        pthread_mutexattr_t a;
        pthread_mutex_t m;

        pthread_once(&once, once_atfork);
        self.known = true;
        self.robust = false;
        self.tid = (uint32_t) syscall(SYS_gettid);
#ifdef __GLIBC__
        if (pthread_mutexattr_init(&a))
                return;
        if (pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) == 0 && pthread_mutex_init(&m, &a) == 0) {
                if (pthread_mutex_lock(&m) == 0) {
                        struct rl_head *h = (struct rl_head *) (void *) m.__data.__list.__prev;
                        uintptr_t mine = (uintptr_t) &m.__data.__list.__next;

                        if (h && LINK_PTR(h->next) == mine &&
                            h->futex_offset == -ENTRY_OFF &&
                            (uint32_t) (m.__data.__lock & FUTEX_TID_MASK) == self.tid) {
                                self.head = h;
                                self.robust = true;
                        }
                        pthread_mutex_unlock(&m);
                }
                pthread_mutex_destroy(&m);
        }
        pthread_mutexattr_destroy(&a);
#else
        (void) a;
        (void) m;
#endif
}

static inline void know_self(void) {
        if (mseg__unlikely(!self.known))
                find_self();
}

static inline uintptr_t entry_of(mseg_lock *l) {
        return (uintptr_t) &l->next;
}

static struct held *held_of(uintptr_t entry) {
        for (unsigned i = 0; i < self.nheld; i++)
                if (entry_of(self.held[i].l) == entry)
                        return &self.held[i];
        return NULL;
}

static inline void set_pending(uintptr_t entry) {
        if (self.robust) {
                __atomic_store_n(&self.head->pending, entry, __ATOMIC_RELAXED);
                __atomic_signal_fence(__ATOMIC_SEQ_CST);
        }
}

/* Link @l first in the thread's list, as glibc's ENQUEUE_MUTEX does. */
static void link_held(mseg_lock *l) {
        uintptr_t first = 0;

        if (self.robust) {
                uintptr_t e = entry_of(l);

                first = __atomic_load_n(&self.head->next, __ATOMIC_RELAXED);
                /* The old first entry's back link: glibc's head sentinel, an
                 * application mutex or one of ours; all trusted addresses. */
                *(uintptr_t *) (LINK_PTR(first) - sizeof(uintptr_t)) = e;
                atomic_store_explicit(&l->next, first, memory_order_relaxed);
                /* glibc would store its head here; nobody reads it, and
                 * it would tell every mapper where our TLS is. */
                atomic_store_explicit(&l->prev, 0, memory_order_relaxed);
                __atomic_signal_fence(__ATOMIC_SEQ_CST);
                __atomic_store_n(&self.head->next, e, __ATOMIC_RELAXED);
        }
        if (self.nheld < MAX_HELD)
                self.held[self.nheld++] = (struct held) { l, first };
}

/* Is @succ still linked right after our entry @e? An application mutex
 * that is still linked after us names us in its back link and holds our
 * TID; glibc clears both links of one it unlinks. */
static bool succ_valid(uintptr_t e, uintptr_t succ) {
        uintptr_t s = LINK_PTR(succ);

        if (s == (uintptr_t) self.head || held_of(s))
                return true;
        return s != 0 && *(uintptr_t *) (s - sizeof(uintptr_t)) == e &&
               (*(uint32_t *) (s - ENTRY_OFF) & FUTEX_TID_MASK) == self.tid;
}

/* The entry after our lock @h. Our copy goes stale only if application
 * code unlocked, out of order, a robust mutex it had locked just before
 * ours: glibc then rewrote our link in the segment. Take that one, checked
 * the same way. 0 when neither holds (then the list below us is lost to
 * the kernel, but nothing is written outside trusted memory). */
static uintptr_t our_next(struct held *h) {
        uintptr_t e = entry_of(h->l), succ = h->next;

        if (succ_valid(e, succ))
                return succ;
        succ = atomic_load_explicit(&h->l->next, memory_order_relaxed);
        if (!succ_valid(e, succ))
                return 0;
        h->next = succ;
        return succ;
}

/* The entry after @e, reading only trusted memory: the head, our own
 * record of our locks, or an application mutex. */
static uintptr_t next_of(uintptr_t e) {
        struct held *h;

        if (e == (uintptr_t) self.head)
                return __atomic_load_n(&self.head->next, __ATOMIC_RELAXED);
        if ((h = held_of(e)))
                return our_next(h);
        return *(uintptr_t *) e;
}

/* Unlink @l, as glibc's DEQUEUE_MUTEX does, without reading its links. */
static void unlink_held(mseg_lock *l) {
        uintptr_t e = entry_of(l), head = (uintptr_t) self.head, pred, succ;
        struct held *h = held_of(e), *p;
        unsigned n = 0;

        if (!h)
                return;
        if (!self.robust)
                goto forget;
        succ = our_next(h);
        if (!succ)
                succ = head;
        pred = head;
        if (LINK_PTR(__atomic_load_n(&self.head->next, __ATOMIC_RELAXED)) != e) {
                for (;;) {      /* something was taken after it */
                        uintptr_t nx = LINK_PTR(next_of(pred));

                        if (nx == e)
                                break;
                        if (nx == 0 || nx == head || ++n > MAX_WALK)
                                goto forget;    /* not in the list: nothing to unlink */
                        pred = nx;
                }
        }
        *(uintptr_t *) pred = succ;
        if (pred != head && (p = held_of(pred)))
                p->next = succ;
        *(uintptr_t *) (LINK_PTR(succ) - sizeof(uintptr_t)) = pred;
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        atomic_store_explicit(&l->next, 0, memory_order_relaxed);
        atomic_store_explicit(&l->prev, 0, memory_order_relaxed);
forget:
        *h = self.held[--self.nheld];
}

bool mseg__lock_held_in(const void *base, uint64_t size) {
        uintptr_t b = (uintptr_t) base;

        know_self();
        for (unsigned i = 0; i < self.nheld; i++)
                if ((uintptr_t) self.held[i].l - b < size)
                        return true;
        return false;
}

int mseg__lock_list_len(void) {
        uintptr_t e;
        int n = 0;

        know_self();
        if (!self.robust)
                return -1;
        /* The list as the kernel would walk it, through the real links. */
        for (e = LINK_PTR(self.head->next); e != (uintptr_t) self.head; e = LINK_PTR(*(uintptr_t *) e))
                if (e == 0 || ++n > 1000)
                        return -1;
        return n;
}

/* ------------------------------------------------------------ the lock */

static long futex(_Atomic uint32_t *w, int op, uint32_t val, const struct timespec *ts) {
        return syscall(SYS_futex, w, op, val, ts, NULL, 0);
}

int mseg__lock_init(mseg_lock *l) {
        memset(l, 0, sizeof(*l));
        l->magic = MSEG_LOCK_MAGIC;
        return 0;
}

static int damaged(mseg_lock *l) {
        return mseg__error(MSEG_E_CORRUPT, "segment lock is damaged (magic %#x, state %u)",
                           (unsigned) l->magic, (unsigned) atomic_load_explicit(&l->state, memory_order_relaxed));
}

static bool lock_ok(mseg_lock *l) {
        return l->magic == MSEG_LOCK_MAGIC &&
               atomic_load_explicit(&l->state, memory_order_relaxed) <= LOCK_NOTRECOVERABLE;
}

/* One attempt. 0 taken, 1 taken from a dead owner, -EBUSY held. @extra is
 * FUTEX_WAITERS once we have slept: others may sleep too and must be woken
 * at our unlock. The caller has named @l the thread's pending robust-list
 * operation for the whole attempt, sleeps included: a waiter woken and then
 * killed before it takes the lock would swallow the wake-up, and the kernel
 * passes it on only for the pending entry of the dying thread. */
static int try_take(mseg_lock *l, uint32_t extra) {
        uint32_t me = self.tid | extra;
        uint32_t w = 0;

        if (atomic_compare_exchange_strong_explicit(&l->word, &w, me, memory_order_acquire,
                                                    memory_order_relaxed))
                return 0;
        /* The kernel's mark for a dead owner (linux-facts.md 5.1 F): take it
         * over, keeping the waiters bit for those still asleep. */
        if ((w & ~FUTEX_WAITERS) == FUTEX_OWNER_DIED &&
            atomic_compare_exchange_strong_explicit(&l->word, &w, me | (w & FUTEX_WAITERS),
                                                    memory_order_acquire, memory_order_relaxed))
                return 1;
        return -EBUSY;
}

static void release_word(mseg_lock *l) {
        uint32_t old = atomic_exchange_explicit(&l->word, 0, memory_order_release);

        if (old & FUTEX_WAITERS)
                futex(&l->word, FUTEX_WAKE, 1, NULL);
}

/* We hold @l (taken as @how): link it, then settle its consistency. */
static int took(mseg_lock *l, int how) {
        uint32_t st;

        link_held(l);
        set_pending(0);
        tsan_acquire(l);
        st = atomic_load_explicit(&l->state, memory_order_relaxed);
        if (st == LOCK_NOTRECOVERABLE) {
                mseg__unlock(l);
                return mseg__error(-ENOTRECOVERABLE, "segment lock is unrecoverable (a repair failed)");
        }
        /* Inconsistent with a free word: a repairer's record that someone
         * rewrote; repairing again is always safe. */
        if (how == 1 || st == LOCK_INCONSISTENT) {
                atomic_store_explicit(&l->state, LOCK_INCONSISTENT, memory_order_relaxed);
                atomic_fetch_add_explicit(&l->repairs, 1, memory_order_relaxed);
                return 1;
        }
        return 0;
}

void mseg__lock_nowait(bool on) {
        no_wait = on;
}

static int64_t now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int mseg__lock(mseg_lock *l) {
        int64_t deadline = 0;
        uint32_t extra = 0;
        int r;

        know_self();
        if (!lock_ok(l))
                return damaged(l);
        if (self.nheld >= MAX_HELD)
                return mseg__error(-EDEADLK, "too many segment locks held by one thread");
        set_pending(entry_of(l));
        for (;;) {
                uint32_t w;
                int64_t left;
                struct timespec ts;

                r = try_take(l, extra);
                if (r >= 0)
                        return took(l, r);
                if (no_wait && self.nheld == 0) {
                        set_pending(0);
                        return mseg__error(-EBUSY, "segment lock busy (this thread does not wait on segments)");
                }
                if (!deadline)
                        deadline = now_ms() + lock_timeout_ms();
                left = deadline - now_ms();
                if (left <= 0) {
                        set_pending(0);
                        return mseg__error(-ETIMEDOUT, "segment lock still held by another process after %lld ms",
                                           (long long) lock_timeout_ms());
                }
                /* Ask the holder to wake us, then sleep unless it let go. */
                w = atomic_load_explicit(&l->word, memory_order_relaxed);
                if (w == 0 || (w & ~FUTEX_WAITERS) == FUTEX_OWNER_DIED)
                        continue;
                if (!(w & FUTEX_WAITERS) &&
                    !atomic_compare_exchange_strong_explicit(&l->word, &w, w | FUTEX_WAITERS,
                                                             memory_order_relaxed, memory_order_relaxed))
                        continue;
                extra = FUTEX_WAITERS;
                ts.tv_sec = left / 1000;
                ts.tv_nsec = (left % 1000) * 1000000;
                futex(&l->word, FUTEX_WAIT, w | FUTEX_WAITERS, &ts);
                MSEG_TEST_HOOK("lock.woken");
                if (!lock_ok(l)) {
                        set_pending(0);
                        return damaged(l);
                }
        }
}

int mseg__trylock(mseg_lock *l) {
        int r;

        know_self();
        if (!lock_ok(l))
                return damaged(l);
        if (self.nheld >= MAX_HELD)
                return mseg__error(-EDEADLK, "too many segment locks held by one thread");
        set_pending(entry_of(l));
        r = try_take(l, 0);
        if (r < 0)
                set_pending(0);
        return r < 0 ? r : took(l, r);
}

int mseg__lock_consistent(mseg_lock *l) {
        uint32_t st = LOCK_INCONSISTENT;

        if (!atomic_compare_exchange_strong_explicit(&l->state, &st, LOCK_CONSISTENT, memory_order_relaxed,
                                                     memory_order_relaxed))
                return -EINVAL;
        return 0;
}

/* Unlink and release a lock we hold, leaving its state as it is. */
static void release(mseg_lock *l) {
        know_self();
        tsan_release(l);
        set_pending(entry_of(l));
        unlink_held(l);
        release_word(l);
        set_pending(0);
}

void mseg__unlock(mseg_lock *l) {
        /* An owner-died lock released without mseg__lock_consistent(): its
         * data could not be repaired, so nobody may take it again. (We hold
         * it: nobody else writes the state now.) */
        if (atomic_load_explicit(&l->state, memory_order_relaxed) == LOCK_INCONSISTENT)
                atomic_store_explicit(&l->state, LOCK_NOTRECOVERABLE, memory_order_relaxed);
        release(l);
}

void mseg__unlock_unrepaired(mseg_lock *l) {
        release(l);             /* still inconsistent: the next taker gets 1 */
}

void mseg__lock_reset_dead(mseg_lock *l) {
        uint32_t repairs = atomic_load_explicit(&l->repairs, memory_order_relaxed);

        mseg__lock_init(l);
        atomic_store_explicit(&l->repairs, repairs, memory_order_relaxed);
        /* What the kernel leaves when an owner dies: the next taker repairs. */
        atomic_store_explicit(&l->word, FUTEX_OWNER_DIED, memory_order_release);
}
