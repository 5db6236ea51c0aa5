/* SPDX-License-Identifier: MIT */
/*
 * lock.c — the one kind of lock that lives in a segment: a process-shared,
 * robust pthread mutex of the NORMAL type.
 *
 * Why NORMAL: recursive and error-checking robust mutexes compare the TID
 * in the futex word with the caller's, which collides across PID namespaces
 * (linux-facts.md 5.1: RECURSIVE lost mutual exclusion there). Why robust:
 * a holder killed with SIGKILL hands the next locker EOWNERDEAD instead of
 * wedging every process. mseg__lock() reports that as 1 and leaves the lock
 * held and inconsistent: the caller repairs what the dead owner left
 * half-done, then calls mseg__lock_consistent(). A caller that cannot repair
 * simply unlocks, which makes the lock ENOTRECOVERABLE for good: the segment
 * is then poisoned, loudly, rather than silently corrupt.
 *
 * Waits are bounded: a live process that holds a lock forever (a hostile or
 * stopped client) makes others fail with -ETIMEDOUT instead of hanging.
 * Never unmap a segment while holding one of its locks (the kernel could
 * not then mark it owner-died): every lock is taken and released within one
 * library call.
 */
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

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

/* The kind word glibc stores in a mutex made with our attributes. A client
 * that scribbles it (to a priority-protect kind, say) would make glibc
 * assert and abort the process inside pthread_mutex_lock, so every lock
 * first checks it and reports MSEG_E_CORRUPT instead. */
static int expected_kind(void) {
        static _Atomic int cached = -1;
        int k = atomic_load_explicit(&cached, memory_order_relaxed);

        if (k < 0) {
                mseg_lock probe;
                if (mseg__lock_init(&probe) < 0)
                        return -1;
                k = probe.m.__data.__kind;
                pthread_mutex_destroy(&probe.m);
                atomic_store_explicit(&cached, k, memory_order_relaxed);
        }
        return k;
}

static bool kind_ok(mseg_lock *l) {
        int k = __atomic_load_n(&l->m.__data.__kind, __ATOMIC_RELAXED);

        return k == expected_kind();
}

int mseg__lock_init(mseg_lock *l) {
        pthread_mutexattr_t a;
        int r;

        memset(l, 0, sizeof(*l));
        r = pthread_mutexattr_init(&a);
        if (r)
                return -r;
        r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
        if (!r)
                r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
        if (!r)
                r = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_NORMAL);
        if (!r)
                r = pthread_mutex_init(&l->m, &a);
        pthread_mutexattr_destroy(&a);
        return -r;
}

static int lock_result(mseg_lock *l, int r) {
        switch (r) {
        case 0:
                return 0;
        case EOWNERDEAD:
                atomic_fetch_add_explicit(&l->repairs, 1, memory_order_relaxed);
                return 1;
        case ETIMEDOUT:
                return mseg__error(-ETIMEDOUT, "segment lock still held by another process after %lld ms",
                                   (long long) lock_timeout_ms());
        case ENOTRECOVERABLE:
                return mseg__error(-ENOTRECOVERABLE, "segment lock is unrecoverable (a repair failed)");
        case EBUSY:
                return -EBUSY;
        default:
                /* EINVAL and friends: the mutex bytes were scribbled on. */
                return mseg__error(MSEG_E_CORRUPT, "segment lock is damaged (pthread error %d)", r);
        }
}

static int kind_corrupt(mseg_lock *l) {
        return mseg__error(MSEG_E_CORRUPT, "segment lock is damaged (mutex kind %d, expected %d)",
                           l->m.__data.__kind, expected_kind());
}

/* pthread_mutex_trylock() without its bug: on a robust mutex made
 * unrecoverable, glibc's trylock (2.36) takes the futex word, sees the
 * owner field say NOTRECOVERABLE and returns ENOTRECOVERABLE *with the word
 * still holding the caller's TID*, so every later attempt, by anyone, finds
 * it held (EBUSY, or ETIMEDOUT after the full wait) instead of
 * ENOTRECOVERABLE. timedlock releases the word on that path; with a
 * deadline in the past it is a trylock (ETIMEDOUT meaning EBUSY). */
static int try_once(mseg_lock *l) {
        static const struct timespec past = { 0, 0 };
        int r = pthread_mutex_timedlock(&l->m, &past);

        return r == ETIMEDOUT ? EBUSY : r;
}

/* Threads that must never wait on a segment (msegd's workers) say so. The
 * promise covers the first lock such a thread takes: one taken inside a
 * critical section waits (boundedly) like any other, since giving up there
 * would leave the section half done. */
static __thread bool no_wait;
static __thread unsigned held;          /* segment locks this thread holds */

/* glibc keeps each held robust mutex in the thread's robust list through
 * two pointers inside the mutex (__list.__prev/__next), and unlock writes
 * through them. Those bytes sit in the segment, where any client can
 * rewrite them while we hold the lock, which would turn our unlock into a
 * write wherever they point. So the holder keeps its own copy of the links
 * of every segment lock it holds, taken right after each of its own lock
 * and unlock calls (the only times they change legitimately), and puts the
 * copy back before glibc reads them. */
#ifdef __GLIBC__
#define MAX_LINKS 8
static __thread struct saved_links {
        mseg_lock *l;
        struct __pthread_internal_list *prev, *next;
        int owner;                      /* what glibc stored when we took it */
        unsigned nusers;
        uint32_t tid;                   /* the TID bits of the lock word */
} links[MAX_LINKS];
static __thread unsigned nlinks;

static void links_snapshot(void) {
        for (unsigned i = 0; i < nlinks; i++) {
                links[i].prev = links[i].l->m.__data.__list.__prev;
                links[i].next = links[i].l->m.__data.__list.__next;
        }
}

static void links_held(mseg_lock *l) {
        if (nlinks < MAX_LINKS) {
                links[nlinks].l = l;
                links[nlinks].owner = l->m.__data.__owner;
                links[nlinks].nusers = l->m.__data.__nusers;
                links[nlinks].tid = __atomic_load_n(&l->m.__data.__lock, __ATOMIC_RELAXED) & FUTEX_TID_MASK;
                nlinks++;
        }
        links_snapshot();
}

/* Put back everything glibc's unlock reads, as it was when we took the
 * lock, so a rewrite made while we held it cannot steer the unlock. */
static void links_restore(mseg_lock *l) {
        for (unsigned i = 0; i < nlinks; i++)
                if (links[i].l == l) {
                        uint32_t w = __atomic_load_n(&l->m.__data.__lock, __ATOMIC_RELAXED);

                        l->m.__data.__kind = expected_kind();
                        l->m.__data.__owner = links[i].owner;
                        l->m.__data.__nusers = links[i].nusers;
                        l->m.__data.__count = 0;
                        if ((w & FUTEX_TID_MASK) != links[i].tid)
                                __atomic_store_n(&l->m.__data.__lock, links[i].tid | (w & FUTEX_WAITERS),
                                                 __ATOMIC_RELAXED);
                        l->m.__data.__list.__prev = links[i].prev;
                        l->m.__data.__list.__next = links[i].next;
                }
}

static void links_consistent(mseg_lock *l) {
        for (unsigned i = 0; i < nlinks; i++)
                if (links[i].l == l)
                        links[i].owner = l->m.__data.__owner;
}

static void links_released(mseg_lock *l) {
        for (unsigned i = 0; i < nlinks; i++)
                if (links[i].l == l) {
                        links[i] = links[--nlinks];
                        break;
                }
        links_snapshot();
}
#else
static void links_held(mseg_lock *l) { (void) l; }
static void links_restore(mseg_lock *l) { (void) l; }
static void links_released(mseg_lock *l) { (void) l; }
static void links_consistent(mseg_lock *l) { (void) l; }
#endif

static int took(mseg_lock *l, int r) {
        if (r >= 0) {
                held++;
                links_held(l);
        }
        return r;
}

void mseg__lock_nowait(bool on) {
        no_wait = on;
}

int mseg__lock(mseg_lock *l) {
        struct timespec ts;
        int64_t ms = lock_timeout_ms();
        int r;

        if (!kind_ok(l))
                return kind_corrupt(l);
        r = try_once(l);
        if (r != EBUSY)
                return took(l, lock_result(l, r));
        if (no_wait && held == 0)
                return mseg__error(-EBUSY, "segment lock busy (this thread does not wait on segments)");
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += ms / 1000;
        ts.tv_nsec += (ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
        }
        return took(l, lock_result(l, pthread_mutex_timedlock(&l->m, &ts)));
}

int mseg__trylock(mseg_lock *l) {
        if (!kind_ok(l))
                return kind_corrupt(l);
        return took(l, lock_result(l, try_once(l)));
}

void mseg__lock_reset_dead(mseg_lock *l) {
        uint32_t repairs = atomic_load_explicit(&l->repairs, memory_order_relaxed);

        mseg__lock_init(l);
        atomic_store_explicit(&l->repairs, repairs, memory_order_relaxed);
#ifdef __GLIBC__
        /* The word the kernel leaves when a robust owner dies (linux-facts.md
         * 5.1 F): glibc's next lock or trylock takes it with EOWNERDEAD. */
        __atomic_store_n(&l->m.__data.__lock, FUTEX_OWNER_DIED, __ATOMIC_RELEASE);
#endif
}

int mseg__lock_consistent(mseg_lock *l) {
        int r = -pthread_mutex_consistent(&l->m);

        links_consistent(l);    /* glibc now names us the owner, no longer "inconsistent" */
        return r;
}

void mseg__unlock(mseg_lock *l) {
        int r;

        if (held)
                held--;
        links_restore(l);
        r = pthread_mutex_unlock(&l->m);
#ifdef __GLIBC__
        if (r != 0) {
                /* Someone rewrote the mutex while we held it: its word no
                 * longer names us (EPERM) or its kind is garbage (EINVAL).
                 * glibc then leaves it in this thread's robust list, whose
                 * next lock would write through it, into memory that may be
                 * unmapped by then (SIGSEGV), and nobody could ever take it
                 * again. We do hold it: put back what glibc checks, and let
                 * it unlock (and unlink) for real. The robust-list links
                 * themselves must not have been rewritten (test-scribble's
                 * known gap). */
                uint32_t tid = (uint32_t) gettid();
                uint32_t w = __atomic_load_n(&l->m.__data.__lock, __ATOMIC_RELAXED);

                l->m.__data.__kind = expected_kind();
                l->m.__data.__owner = (int) tid;
                l->m.__data.__nusers = 1;
                l->m.__data.__count = 0;
                __atomic_store_n(&l->m.__data.__lock, tid | (w & FUTEX_WAITERS), __ATOMIC_RELEASE);
                links_restore(l);
                (void) pthread_mutex_unlock(&l->m);
        }
#else
        (void) r;
#endif
        links_released(l);
}
