/* SPDX-License-Identifier: MIT */
/*
 * test-lock: the segment lock (lock.c) against real processes and threads
 * that race, die holding it, and share their robust lists with glibc's own
 * robust mutexes. The locks live in a MAP_SHARED mapping, as in a segment.
 */
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "internal.h"

struct shared {
        mseg_lock l[4];
        pthread_mutex_t app[3];         /* the application's own robust mutexes */
        _Atomic int step;
        uint64_t counter;               /* guarded by l[0], deliberately not atomic */
        _Atomic uint64_t inside;
        _Atomic pid_t inner;            /* a PID namespace's PID 1, as we see it */
};

static struct shared *sh;

/* fork() whose child dies with us: a failed test leaves no holder behind. */
static pid_t fork_child(void) {
        pid_t pid = fork();

        if (pid == 0)
                prctl(PR_SET_PDEATHSIG, SIGKILL);
        return pid;
}

static uint64_t now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static void wait_step(int v) {
        uint64_t t0 = now_ms();

        while (atomic_load(&sh->step) != v) {
                if (now_ms() - t0 > 20000)
                        FAIL("step %d never came", v);
                usleep(200);
        }
}

static void reset(void) {
        pthread_mutexattr_t a;

        memset(sh, 0, sizeof(*sh));
        for (int i = 0; i < 4; i++)
                ASSERT_OK(mseg__lock_init(&sh->l[i]));
        ASSERT_EQ(pthread_mutexattr_init(&a), 0);
        ASSERT_EQ(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED), 0);
        ASSERT_EQ(pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST), 0);
        for (int i = 0; i < 2; i++)
                ASSERT_EQ(pthread_mutex_init(&sh->app[i], &a), 0);
        /* The third is priority-inheriting: glibc marks links to it with the
         * low bit, which ours must carry over untouched. */
        ASSERT_EQ(pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT), 0);
        ASSERT_EQ(pthread_mutex_init(&sh->app[2], &a), 0);
        pthread_mutexattr_destroy(&a);
}

/* The lock's owner died: take it (1), repair nothing, make it consistent. */
static void take_from_dead(mseg_lock *l) {
        ASSERT_EQ(mseg__lock(l), 1);
        ASSERT_OK(mseg__lock_consistent(l));
        mseg__unlock(l);
}

/* Wait until @pid sleeps on a futex (its wchan says so), 5 s at most: a
 * loaded machine may take a while to get a new process that far. */
static void wait_asleep(pid_t pid) {
        char path[64], buf[64];

        snprintf(path, sizeof(path), "/proc/%d/wchan", (int) pid);
        for (uint64_t t0 = now_ms(); now_ms() - t0 < 5000; usleep(1000)) {
                FILE *f = fopen(path, "r");
                size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;

                if (f)
                        fclose(f);
                buf[n] = 0;
                if (!strncmp(buf, "futex", 5))
                        return;
        }
}

static void reap(pid_t pid, int want_sig) {
        int st;

        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        if (want_sig ? !(WIFSIGNALED(st) && WTERMSIG(st) == want_sig) : !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
                FAIL("child %d: status %#x", (int) pid, st);
}

/* Four processes increment a plain counter under the lock. */
static void test_exclusion(void) {
        enum { NPROC = 4, ITERS = 20000 };
        pid_t pids[NPROC];

        reset();
        for (int p = 0; p < NPROC; p++) {
                pids[p] = fork_child();
                ASSERT(pids[p] >= 0);
                if (pids[p] == 0) {
                        for (int i = 0; i < ITERS; i++) {
                                if (mseg__lock(&sh->l[0]) != 0)
                                        _exit(1);
                                if (atomic_fetch_add(&sh->inside, 1) != 0)
                                        _exit(2);
                                sh->counter++;
                                atomic_fetch_sub(&sh->inside, 1);
                                mseg__unlock(&sh->l[0]);
                        }
                        _exit(0);
                }
        }
        for (int p = 0; p < NPROC; p++)
                reap(pids[p], 0);
        ASSERT_EQ(sh->counter, (uint64_t) NPROC * ITERS);
        ASSERT_EQ(atomic_load(&sh->l[0].word), 0);
        ASSERT_EQ(atomic_load(&sh->l[0].repairs), 0);
}

/* A child that takes l[idx] (getting @want: 0, or 1 from a dead owner) and
 * holds it until killed. */
static pid_t hold_until_killed(int idx, int want) {
        pid_t pid;

        atomic_store(&sh->step, 0);
        pid = fork_child();
        ASSERT(pid >= 0);
        if (pid == 0) {
                if (mseg__lock(&sh->l[idx]) != want)
                        _exit(1);
                atomic_store(&sh->step, 1);
                for (;;)
                        pause();
        }
        wait_step(1);
        return pid;
}

static pid_t hold_and_die(int idx) {
        return hold_until_killed(idx, 0);
}

/* Owner killed: the next locker gets 1 (EOWNERDEAD), repairs, makes it
 * consistent; an unrepaired release makes it unrecoverable for everyone. */
static void test_owner_died(void) {
        pid_t pid;

        reset();
        pid = hold_and_die(0);
        ASSERT_ERR(mseg__trylock(&sh->l[0]), -EBUSY);
        kill(pid, SIGKILL);
        reap(pid, SIGKILL);
        ASSERT_EQ(atomic_load(&sh->l[0].word), FUTEX_OWNER_DIED);
        ASSERT_EQ(mseg__lock(&sh->l[0]), 1);
        ASSERT_EQ(atomic_load(&sh->l[0].repairs), 1);
        ASSERT_OK(mseg__lock_consistent(&sh->l[0]));
        ASSERT_ERR(mseg__lock_consistent(&sh->l[0]), -EINVAL);
        mseg__unlock(&sh->l[0]);
        ASSERT_EQ(mseg__lock(&sh->l[0]), 0);
        mseg__unlock(&sh->l[0]);

        /* unrepaired: unrecoverable, in other processes too */
        pid = hold_and_die(1);
        kill(pid, SIGKILL);
        reap(pid, SIGKILL);
        ASSERT_EQ(mseg__lock(&sh->l[1]), 1);
        mseg__unlock(&sh->l[1]);
        ASSERT_ERR(mseg__lock(&sh->l[1]), -ENOTRECOVERABLE);
        ASSERT_ERR(mseg__trylock(&sh->l[1]), -ENOTRECOVERABLE);
        pid = fork_child();
        if (pid == 0)
                _exit(mseg__lock(&sh->l[1]) == -ENOTRECOVERABLE ? 0 : 1);
        reap(pid, 0);
        ASSERT_EQ(atomic_load(&sh->l[1].word), 0);      /* refused, not left taken */

        /* a repairer that dies is repaired after in turn */
        pid = hold_and_die(2);
        kill(pid, SIGKILL);
        reap(pid, SIGKILL);
        pid = hold_until_killed(2, 1);         /* the repairer dies too */
        kill(pid, SIGKILL);
        reap(pid, SIGKILL);
        ASSERT_EQ(mseg__lock(&sh->l[2]), 1);
        ASSERT_EQ(atomic_load(&sh->l[2].repairs), 2);
        /* a repair that cannot finish now is left for the next taker */
        mseg__unlock_unrepaired(&sh->l[2]);
        ASSERT_EQ(atomic_load(&sh->l[2].word), 0);
        ASSERT_EQ(mseg__lock(&sh->l[2]), 1);
        ASSERT_EQ(atomic_load(&sh->l[2].repairs), 3);
        ASSERT_OK(mseg__lock_consistent(&sh->l[2]));
        mseg__unlock(&sh->l[2]);
        ASSERT_EQ(mseg__lock(&sh->l[2]), 0);
        mseg__unlock(&sh->l[2]);
        printf("lock: owner death gives 1, consistent restores it, an abandoned repair is unrecoverable\n");
}

/* A waiter asleep on the lock wakes as soon as the holder dies, long
 * before its timeout. */
static void test_waiter_wakes(void) {
        pid_t holder, waiter;
        uint64_t t0;
        int st;

        reset();
        holder = hold_and_die(0);
        waiter = fork_child();
        ASSERT(waiter >= 0);
        if (waiter == 0) {
                uint64_t w0 = now_ms();
                int r = mseg__lock(&sh->l[0]);
                if (r != 1)
                        _exit(10 + (r < 0 ? -r % 100 : r));
                if (now_ms() - w0 > 5000)
                        _exit(3);
                _exit(mseg__lock_consistent(&sh->l[0]) == 0 ? 0 : 4);
        }
        wait_asleep(waiter);
        ASSERT(atomic_load(&sh->l[0].word) & FUTEX_WAITERS);
        t0 = now_ms();
        kill(holder, SIGKILL);
        reap(holder, SIGKILL);
        ASSERT_EQ(waitpid(waiter, &st, 0), waiter);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                FAIL("waiter: status %#x", st);
        printf("lock: a sleeping waiter took over %llu ms after its holder was killed\n",
               (unsigned long long) (now_ms() - t0));
        ASSERT(now_ms() - t0 < 3000);
        /* the waiter died holding it, consistent: the next taker repairs */
        take_from_dead(&sh->l[0]);
}

/* A waiter woken by an unlock and killed before it takes the lock must not
 * swallow the wake-up: the kernel passes it on, because the lock is the
 * dying thread's pending robust-list operation while it sleeps. The first
 * waiter stops right after its wake-up (test hook "lock.woken") and is
 * killed there; the second must get the lock at once, not time out. */
static void test_wake_passed_on(void) {
        pid_t w[2];
        int pfd[2], st;
        uint64_t t0;
        char c;

        reset();
        ASSERT_OK(pipe(pfd));
        ASSERT_EQ(mseg__lock(&sh->l[0]), 0);
        for (int i = 0; i < 2; i++) {
                w[i] = fork_child();
                ASSERT(w[i] >= 0);
                if (w[i] == 0) {
                        char fd[16];
                        int r;

                        if (i == 0) {
                                snprintf(fd, sizeof(fd), "%d", pfd[1]);
                                setenv("MSEG_TEST_HOOK", "lock.woken", 1);
                                setenv("MSEG_TEST_HOOK_FD", fd, 1);
                        }
                        r = mseg__lock(&sh->l[0]);
                        if (r < 0)
                                _exit(1);
                        if (r == 1)
                                mseg__lock_consistent(&sh->l[0]);
                        mseg__unlock(&sh->l[0]);
                        _exit(0);
                }
                wait_asleep(w[i]);      /* asleep in this order: the first gets the wake */
        }
        mseg__unlock(&sh->l[0]);
        ASSERT_EQ(read(pfd[0], &c, 1), 1);      /* the first is woken, stopped before taking */
        t0 = now_ms();
        kill(w[0], SIGKILL);
        ASSERT_EQ(waitpid(w[0], &st, 0), w[0]);
        ASSERT_EQ(waitpid(w[1], &st, 0), w[1]);
        printf("lock: a woken waiter killed before taking the lock; the other took it %llu ms later\n",
               (unsigned long long) (now_ms() - t0));
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                FAIL("the second waiter did not get the lock (status %#x): the wake-up was lost", st);
        ASSERT(now_ms() - t0 < 900);
        close(pfd[0]);
        close(pfd[1]);
}

/* A live holder: lockers give up after MSEG_LOCK_TIMEOUT_MS (1 s here);
 * a thread in no-wait mode fails at once. */
static void test_timeout(void) {
        pid_t pid;
        uint64_t t0, dt;

        reset();
        pid = hold_and_die(0);
        t0 = now_ms();
        ASSERT_ERR(mseg__lock(&sh->l[0]), -ETIMEDOUT);
        dt = now_ms() - t0;
        ASSERT(dt >= 990 && dt < 6000);
        mseg__lock_nowait(true);
        t0 = now_ms();
        ASSERT_ERR(mseg__lock(&sh->l[0]), -EBUSY);
        ASSERT(now_ms() - t0 < 100);
        mseg__lock_nowait(false);
        kill(pid, SIGKILL);
        reap(pid, SIGKILL);
        take_from_dead(&sh->l[0]);
}

/* Garbage over a lock is reported, never waited on or trusted. */
static void test_damage(void) {
        reset();
        sh->l[0].magic = 0xdeadbeef;
        ASSERT_ERR(mseg__lock(&sh->l[0]), MSEG_E_CORRUPT);
        ASSERT_ERR(mseg__trylock(&sh->l[0]), MSEG_E_CORRUPT);
        atomic_store(&sh->l[1].state, 77);
        ASSERT_ERR(mseg__lock(&sh->l[1]), MSEG_E_CORRUPT);
        memset(&sh->l[2], 0xa5, sizeof(sh->l[2]));
        ASSERT_ERR(mseg__lock(&sh->l[2]), MSEG_E_CORRUPT);
        /* links of garbage are ignored: they are the kernel's, not ours */
        atomic_store(&sh->l[3].next, (uintptr_t) 0x5a5a5a5a5a5a5a58);
        atomic_store(&sh->l[3].prev, (uintptr_t) 0x5a5a5a5a5a5a5a58);
        ASSERT_EQ(mseg__lock(&sh->l[3]), 0);
        atomic_store(&sh->l[3].next, (uintptr_t) 8);
        mseg__unlock(&sh->l[3]);
        ASSERT_EQ(mseg__lock(&sh->l[3]), 0);
        mseg__unlock(&sh->l[3]);
}

static int app_lock(int i) {
        int r = pthread_mutex_lock(&sh->app[i]);

        if (r == EOWNERDEAD)
                pthread_mutex_consistent(&sh->app[i]);
        return r;
}

/* Our locks share the thread's robust list with the application's robust
 * mutexes, in every order: each still comes back when the thread dies. */
static void test_shared_list(void) {
        pid_t pid;

        /* interleaved, released out of order, then killed holding a mix */
        reset();
        pid = fork_child();
        ASSERT(pid >= 0);
        if (pid == 0) {
#define LIST(n) do { if (mseg__lock_list_len() != (n)) _exit(100 + __LINE__ % 100); } while (0)
                LIST(0);
                for (int round = 0; round < 1000; round++) {
                        if (app_lock(0) || mseg__lock(&sh->l[0]) || app_lock(1) || mseg__lock(&sh->l[1]))
                                _exit(1);
                        LIST(4);
                        pthread_mutex_unlock(&sh->app[1]);     /* out of order: below l[1] */
                        LIST(3);
                        mseg__unlock(&sh->l[0]);               /* under l[1], whose link glibc rewrote */
                        LIST(2);
                        if (mseg__lock(&sh->l[2]))
                                _exit(2);
                        LIST(3);
                        pthread_mutex_unlock(&sh->app[0]);     /* under two of ours */
                        LIST(2);
                        mseg__unlock(&sh->l[1]);
                        LIST(1);
                        mseg__unlock(&sh->l[2]);
                        LIST(0);
                        if (app_lock(2) || mseg__lock(&sh->l[3]))
                                _exit(5);
                        LIST(2);
                        pthread_mutex_unlock(&sh->app[2]);     /* a PI mutex, out of order, under l[3] */
                        LIST(1);
                        if (app_lock(2))                        /* now above l[3] */
                                _exit(6);
                        LIST(2);
                        mseg__unlock(&sh->l[3]);               /* from under a PI mutex */
                        LIST(1);
                        pthread_mutex_unlock(&sh->app[2]);
                        LIST(0);
                }
                /* now die holding app[0], l[0], app[1], l[1], app[2] */
                if (app_lock(0) || mseg__lock(&sh->l[0]) || app_lock(1) || mseg__lock(&sh->l[1]) || app_lock(2))
                        _exit(3);
                mseg__unlock(&sh->l[1]);       /* from the middle: app[2] is above it */
                if (mseg__lock(&sh->l[1]))
                        _exit(4);
                LIST(5);
                atomic_store(&sh->step, 1);
                for (;;)
                        pause();
        }
        wait_step(1);
        kill(pid, SIGKILL);
        reap(pid, SIGKILL);
        for (int i = 0; i < 3; i++)
                ASSERT_EQ(pthread_mutex_lock(&sh->app[i]), EOWNERDEAD);
        for (int i = 0; i < 3; i++) {
                pthread_mutex_consistent(&sh->app[i]);
                pthread_mutex_unlock(&sh->app[i]);
        }
        ASSERT_EQ(mseg__lock(&sh->l[0]), 1);
        ASSERT_EQ(mseg__lock(&sh->l[1]), 1);
        ASSERT_EQ(mseg__lock(&sh->l[2]), 0);
        ASSERT_EQ(mseg__lock(&sh->l[3]), 0);
        for (int i = 0; i < 4; i++) {
                if (i < 2)
                        ASSERT_OK(mseg__lock_consistent(&sh->l[i]));
                mseg__unlock(&sh->l[i]);
        }
        /* and this process's list is still sound for glibc */
        for (int i = 0; i < 3; i++) {
                ASSERT_EQ(pthread_mutex_lock(&sh->app[i]), 0);
                ASSERT_EQ(mseg__lock(&sh->l[i]), 0);
        }
        ASSERT_EQ(mseg__lock_list_len(), 6);
        for (int i = 2; i >= 0; i--) {
                pthread_mutex_unlock(&sh->app[i]);
                mseg__unlock(&sh->l[i]);
        }
        ASSERT_EQ(mseg__lock_list_len(), 0);
        printf("lock: shares the robust list with glibc's mutexes in any order; all return after a kill\n");
}

static void *thread_dies_holding(void *arg) {
        (void) arg;
        if (mseg__lock(&sh->l[0]) != 0)
                return (void *) 1;
        pthread_exit(NULL);             /* the kernel walks this thread's list */
}

static void *thread_counts(void *arg) {
        for (int i = 0; i < 20000; i++) {
                if (mseg__lock(&sh->l[1]) != 0)
                        return (void *) 1;
                sh->counter++;
                mseg__unlock(&sh->l[1]);
        }
        return arg;
}

static void *thread_holds(void *arg) {
        int i = (int) (intptr_t) arg;

        if (mseg__lock(&sh->l[i]) != 0 || (i < 3 && app_lock(i) != 0))
                return (void *) 1;
        atomic_fetch_add(&sh->step, 1);
        for (;;)
                pause();
}

/* A process whose four threads each hold one of our locks (three also an
 * application robust mutex) is killed: every one of them comes back. */
static void test_threads_killed(void) {
        pid_t pid;

        reset();
        pid = fork_child();
        ASSERT(pid >= 0);
        if (pid == 0) {
                pthread_t t;

                for (int i = 0; i < 4; i++)
                        if (pthread_create(&t, NULL, thread_holds, (void *) (intptr_t) i))
                                _exit(1);
                for (;;)
                        pause();
        }
        wait_step(4);
        kill(pid, SIGKILL);
        reap(pid, SIGKILL);
        for (int i = 0; i < 4; i++)
                take_from_dead(&sh->l[i]);
        for (int i = 0; i < 3; i++) {
                ASSERT_EQ(pthread_mutex_lock(&sh->app[i]), EOWNERDEAD);
                pthread_mutex_consistent(&sh->app[i]);
                pthread_mutex_unlock(&sh->app[i]);
        }
        printf("lock: a process killed while four of its threads held locks: all four came back\n");
}

static void test_threads(void) {
        pthread_t t[4];
        void *ret;

        reset();
        ASSERT_EQ(pthread_create(&t[0], NULL, thread_dies_holding, NULL), 0);
        ASSERT_EQ(pthread_join(t[0], &ret), 0);
        ASSERT(ret == NULL);
        take_from_dead(&sh->l[0]);
        for (int i = 0; i < 4; i++)
                ASSERT_EQ(pthread_create(&t[i], NULL, thread_counts, NULL), 0);
        for (int i = 0; i < 4; i++) {
                ASSERT_EQ(pthread_join(t[i], &ret), 0);
                ASSERT(ret == NULL);
        }
        ASSERT_EQ(sh->counter, 80000);
}

/* A holder in another PID namespace (its TID there may equal ours): its
 * death still hands the lock over, and it excludes us while alive. */
static void test_pid_namespace(void) {
        pid_t pid;
        int st;

        reset();
        pid = fork_child();
        ASSERT(pid >= 0);
        if (pid == 0) {
                pid_t inner;

                if (unshare(CLONE_NEWPID) < 0)
                        _exit(77);
                inner = fork_child();
                if (inner < 0)
                        _exit(1);
                if (inner == 0) {       /* PID 1 of the new namespace */
                        if (mseg__lock(&sh->l[0]) != 0)
                                _exit(1);
                        atomic_store(&sh->step, 1);
                        for (;;)
                                pause();        /* a namespace's init ignores its own SIGKILL */
                }
                atomic_store(&sh->inner, inner);
                _exit(waitpid(inner, &st, 0) == inner && WIFSIGNALED(st) ? 0 : 1);
        }
        for (uint64_t t0 = now_ms(); atomic_load(&sh->step) != 1;) {
                if (waitpid(pid, &st, WNOHANG) == pid) {
                        if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
                                printf("lock: no PID namespaces here (unshare refused), skipped that case\n");
                                return;
                        }
                        FAIL("namespace child: status %#x", st);
                }
                if (now_ms() - t0 > 20000)
                        FAIL("namespace holder never took the lock");
                usleep(1000);
        }
        ASSERT_EQ(atomic_load(&sh->l[0].word) & FUTEX_TID_MASK, 1);
        ASSERT_ERR(mseg__trylock(&sh->l[0]), -EBUSY);
        while (!atomic_load(&sh->inner))
                usleep(1000);
        kill(atomic_load(&sh->inner), SIGKILL);
        reap(pid, 0);
        take_from_dead(&sh->l[0]);
        printf("lock: a holder that was PID 1 of its own namespace died and the lock came back\n");
}

/* After fork the child is a new thread with a new TID: its locks say so. */
static void test_fork(void) {
        pid_t pid;

        reset();
        ASSERT_EQ(mseg__lock(&sh->l[0]), 0);
        mseg__unlock(&sh->l[0]);
        pid = fork_child();
        ASSERT(pid >= 0);
        if (pid == 0) {
                if (mseg__lock(&sh->l[0]) != 0)
                        _exit(1);
                if ((atomic_load(&sh->l[0].word) & FUTEX_TID_MASK) != (uint32_t) gettid())
                        _exit(2);
                atomic_store(&sh->step, 1);
                for (;;)
                        pause();
        }
        wait_step(1);
        kill(pid, SIGKILL);
        reap(pid, SIGKILL);
        take_from_dead(&sh->l[0]);
}

int main(void) {
        setenv("MSEG_LOCK_TIMEOUT_MS", "1000", 1);
        sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        ASSERT(sh != MAP_FAILED);
        alarm(120);
        test_exclusion();
        test_owner_died();
        test_waiter_wakes();
        test_wake_passed_on();
        test_timeout();
        test_damage();
        test_shared_list();
        test_threads();
        test_threads_killed();
        test_pid_namespace();
        test_fork();
        printf("lock: all cases pass\n");
        return 0;
}
