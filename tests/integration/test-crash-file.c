/* SPDX-License-Identifier: MIT */
/*
 * test-crash-file: processes killed with SIGKILL while they work on a
 * managed mapped file, with no msegd: the next attach finds their slots
 * dead and reclaims them, the next owner of a lock they held repairs what
 * they left half-done, and nothing but the blocks they still owned is lost.
 *
 *   1. mseg_alloc_into() killed inside, on every path (magazine pop
 *      "alloc.into", magazine refill "alloc.refill", a page run
 *      "pages.alloc", and the class lock of a segment without caches
 *      "alloc.into_locked"): each destination is 0 or a live block, and
 *      after freeing the linked ones the free memory is exactly what it was.
 *   2. A process killed while holding cached blocks and a slot: its slot is
 *      seen dead (mseg_stats), the next attach reclaims it, its cached
 *      blocks come back, the blocks it linked stay allocated.
 *   3. The kill-torture of crash-harness.h on a mapped file: rounds of
 *      workers killed at random and at armed hooks (torture_rounds rounds,
 *      --rounds=N).
 */
#include "crash-harness.h"

static struct ch_target small_t;
static void test_repair_order(const char *self);

static void reclaim_by_attach(void *arg) {
        const struct ch_target *t = arg;
        mseg *s2;

        ASSERT_OK(ch_open(t, &s2, MSEG_OPEN_ONLY));
        mseg_close(s2);
}

static void test_into(const char *self, const struct ch_target *t, mseg *seg) {
        static const struct { const char *point; unsigned n; uint64_t size; } cases[] = {
                { "alloc.into", 1, 64 }, { "alloc.into", 2, 64 }, { "alloc.into", 9, 64 },
                { "alloc.into", 40, 64 }, { "alloc.refill", 1, 64 }, { "alloc.refill", 13, 64 },
                { "alloc.refill", 70, 64 }, { "pages.alloc", 2, 20000 }, { "pages.alloc", 4, 20000 },
                { "pages.alloc", 1, 20000 },
        };
        mseg *small;

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
                if (!ch_into_kill(t, self, seg, cases[i].point, cases[i].n, cases[i].size, 256, reclaim_by_attach,
                                  (void *) t))
                        FAIL("alloc_into never reached %s:%u", cases[i].point, cases[i].n);
        /* Without caches (a segment under 1 MiB): the locked path. */
        ASSERT_OK(ch_open(&small_t, &small, MSEG_CREATE_ONLY));
        for (unsigned n = 1; n <= 7; n += 3)
                if (!ch_into_kill(&small_t, self, small, "alloc.into_locked", n, 64, 64, reclaim_by_attach,
                                  (void *) &small_t))
                        FAIL("alloc_into never reached alloc.into_locked:%u", n);
        ASSERT_OK(mseg_check(small));
        mseg_close(small);
        unlink(small_t.where);
        printf("crash-file: alloc_into killed at %zu points of its paths: every destination whole or empty, "
               "no byte lost\n", sizeof(cases) / sizeof(cases[0]) + 3);
}

/* A process that dies holding a slot, cached blocks and linked blocks. */
static void test_reclaim_at_attach(const struct ch_target *t, mseg *seg) {
        struct mseg_stats before, dead, after;
        mseg_handle *d;
        size_t n = 0;
        int fds[2], st;
        char c;
        pid_t pid;

        d = mseg_find(seg, "into", &ch_dir_type, &n);
        ASSERT_NOT_NULL(d);
        ASSERT_OK(mseg_stats(seg, &before));
        ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                mseg *s;
                void *tmp[40];
                ch_die_with_parent();
                ASSERT_OK(ch_open(t, &s, MSEG_OPEN_ONLY));
                d = mseg_find(s, "into", &ch_dir_type, &n);
                for (int i = 0; i < 10; i++)            /* linked: stay allocated */
                        ASSERT_OK(mseg_alloc_into(s, 100, &d[i]));
                for (int i = 0; i < 40; i++)            /* freed: cached in our magazines */
                        ASSERT_NOT_NULL(tmp[i] = mseg_alloc(s, 16 + 40 * (size_t) i));
                for (int i = 0; i < 40; i++)
                        ASSERT_OK(mseg_free(s, tmp[i]));
                ASSERT_EQ(write(fds[1], "r", 1), 1);
                pause();
                _exit(0);
        }
        close(fds[1]);
        ASSERT_EQ(read(fds[0], &c, 1), 1);
        close(fds[0]);
        kill(pid, SIGKILL);
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        ASSERT_OK(mseg_stats(seg, &dead));
        ASSERT_EQ(dead.slots_dead, 1);
        ASSERT(dead.cached_bytes > before.cached_bytes);
        reclaim_by_attach((void *) t);
        ASSERT_OK(mseg_stats(seg, &after));
        ASSERT_EQ(after.slots_dead, 0);
        ASSERT_EQ(after.slots_live, before.slots_live);
        ASSERT_EQ(after.slots_reclaimed, before.slots_reclaimed + 1);
        ASSERT_EQ(after.cached_bytes, before.cached_bytes);
        ASSERT_EQ(after.allocated_blocks, before.allocated_blocks + 10);
        ASSERT_EQ(after.allocated_bytes, before.allocated_bytes + 10 * mseg_usable_size(seg, mseg_ptr(seg, d[0])));
        ASSERT_OK(mseg_check(seg));
        for (int i = 0; i < 10; i++) {
                ASSERT_OK(mseg_free(seg, mseg_ptr(seg, d[i])));
                d[i] = 0;
        }
        /* Superblocks the child made stay (empty), so compare free bytes
         * plus the allocator's overhead (their tails). */
        ASSERT_OK(mseg_stats(seg, &after));
        if (getenv("CH_DEBUG")) {
                const struct mseg_stats *v[] = { &before, &dead, &after };
                for (int i = 0; i < 3; i++)
                        fprintf(stderr, "free %llu alloc %llu/%llu cached %llu overhead %llu live %u dead %u\n",
                                (unsigned long long) v[i]->free_bytes, (unsigned long long) v[i]->allocated_bytes,
                                (unsigned long long) v[i]->allocated_blocks, (unsigned long long) v[i]->cached_bytes,
                                (unsigned long long) v[i]->overhead_bytes, v[i]->slots_live, v[i]->slots_dead);
        }
        ASSERT_EQ(after.free_bytes + after.overhead_bytes, before.free_bytes + before.overhead_bytes);
        ASSERT_EQ(after.allocated_bytes, before.allocated_bytes);
        printf("crash-file: a killed process's slot is reclaimed by the next attach; its %llu cached bytes came "
               "back, its 10 linked blocks stayed allocated\n",
               (unsigned long long) (dead.cached_bytes - before.cached_bytes));
}

/* ---- a class lock and the page lock both held by the dead ----
 *
 * Making or releasing a superblock takes the page lock inside the class
 * lock. A process killed there leaves both owner-dead; whichever the next
 * process takes first, the repairs must agree: the class's list and counts
 * must describe the superblocks the page layer says exist. */

static void script_child(const struct ch_target *t, const char *what) {
        mseg *seg;
        void *p[8];

        ASSERT_OK(ch_open(t, &seg, MSEG_OPEN_ONLY));
        if (!strcmp(what, "sb-new")) {
                (void) !mseg_alloc(seg, 1000);          /* the class's first superblock */
        } else if (!strcmp(what, "sb-release")) {
                for (int i = 0; i < 8; i++)             /* two superblocks of four blocks */
                        ASSERT_NOT_NULL(p[i] = mseg_alloc(seg, 1000));
                for (int i = 0; i < 8; i++)             /* the second empty one is released */
                        ASSERT_OK(mseg_free(seg, p[i]));
        }
        _exit(3);
}

static void kill_script(const char *self, const struct ch_target *t, const char *what, const char *hook) {
        int fds[2], st;
        char c;
        struct pollfd pfd;
        pid_t pid;

        ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                char *argv[] = { "crash-script", "script", (char *) what, (char *) t->where, NULL };
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
        if (poll(&pfd, 1, 20000) != 1 || read(fds[0], &c, 1) != 1)
                FAIL("%s never reached %s", what, hook);
        kill(pid, SIGKILL);
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        close(fds[0]);
}

static void test_repair_order(const char *self) {
        static const struct { const char *what, *hook; bool class_first; } cases[] = {
                { "sb-new", "pages.alloc:1", true }, { "sb-new", "pages.alloc:1", false },
                { "sb-release", "pages.free:1", true }, { "sb-release", "pages.free:1", false },
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                mseg *seg;
                void *p;
                int r;

                unlink(small_t.where);
                ASSERT_OK(ch_open(&small_t, &seg, MSEG_CREATE_ONLY));
                kill_script(self, &small_t, cases[i].what, cases[i].hook);
                if (!cases[i].class_first) {
                        /* the page lock first: a large block */
                        p = mseg_alloc(seg, 9000);
                        ASSERT_NOT_NULL(p);
                        ASSERT_OK(mseg_free(seg, p));
                }
                p = mseg_alloc(seg, 1000);               /* the class lock */
                ASSERT_NOT_NULL(p);
                r = mseg_check(seg);
                if (r < 0)
                        FAIL("killed in %s at %s, then the %s lock first: mseg_check: %s", cases[i].what,
                             cases[i].hook, cases[i].class_first ? "class" : "page", mseg_last_error());
                ASSERT_OK(mseg_free(seg, p));
                for (int k = 0; k < 20; k++) {          /* and the class works on */
                        void *q[12];
                        for (int j = 0; j < 12; j++)
                                ASSERT_NOT_NULL(q[j] = mseg_alloc(seg, 1000));
                        for (int j = 0; j < 12; j++)
                                ASSERT_OK(mseg_free(seg, q[j]));
                }
                ASSERT_OK(mseg_check(seg));
                mseg_close(seg);
        }
        unlink(small_t.where);
        printf("crash-file: killed holding a class lock and the page lock: repaired whichever is taken first\n");
}

static unsigned parse_rounds(int argc, char **argv) {
        for (int i = 1; i < argc; i++)
                if (!strncmp(argv[i], "--rounds=", 9))
                        return (unsigned) strtoul(argv[i] + 9, NULL, 10);
        return ch_rounds(40);
}

int main(int argc, char **argv) {
        struct ch_target t = { .mode = CH_FILE, .size = 16 << 20 };
        struct ch_run R;
        char self[4096];
        unsigned rounds;
        ssize_t n;

        if (argc >= 7 && !strcmp(argv[1], "worker")) {
                struct ch_target wt = { .mode = CH_FILE };
                snprintf(wt.where, sizeof(wt.where), "%s", argv[3]);
                return ch_worker_main(&wt, (unsigned) atoi(argv[5]), strtoull(argv[6], NULL, 10));
        }
        if (argc >= 4 && !strcmp(argv[1], "script")) {
                struct ch_target wt = { .mode = CH_FILE };
                snprintf(wt.where, sizeof(wt.where), "%s", argv[3]);
                script_child(&wt, argv[2]);
        }
        if (argc >= 6 && !strcmp(argv[1], "into")) {
                struct ch_target wt = { .mode = CH_FILE };
                snprintf(wt.where, sizeof(wt.where), "%s", argv[3]);
                ch_into_child(&wt, strtoull(argv[5], NULL, 10));
        }
#ifndef MSEG_TEST_HOOKS
        printf("test-crash-file: skipped (built without -Dtest_hooks=true)\n");
        return TEST_SKIP;
#endif
        rounds = parse_rounds(argc, argv);
        alarm(540);
        n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        ASSERT(n > 0);
        self[n] = 0;
        setenv("MSEG_LOCK_TIMEOUT_MS", "5000", 1);
        snprintf(t.where, sizeof(t.where), "%s/mseg-crash-file-%d", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp",
                 (int) getpid());
        unlink(t.where);
        small_t = t;
        small_t.size = 512 << 10;
        snprintf(small_t.where, sizeof(small_t.where), "%.200s.small", t.where);
        unlink(small_t.where);

        ch_run_init(&R, &t, 4, 0x5eed0001u + (uint64_t) getpid());
        R.self = self;
        ch_run_create(&R);
        test_repair_order(self);
        test_into(self, &t, R.seg);
        test_reclaim_at_attach(&t, R.seg);

        ch_torture(&R, rounds, "file");
        ch_summary(&R, "crash-file");
        if (atomic_load(&R.sh->failures))
                FAIL("%d failure(s); first: %s", atomic_load(&R.sh->failures), R.sh->first_failure);
        ch_run_done(&R);
        unlink(t.where);
        return 0;
}
