/* SPDX-License-Identifier: MIT */
/*
 * test-crash-torture: the kill-torture on a segment brokered by msegd.
 *
 * Rounds of worker processes (crash-harness.h) run random allocations,
 * frees, expansions, batches, constructions, destructions, lookups and
 * growths on one memfd segment; the parent kills them with SIGKILL at
 * random moments and, every other round, at an armed test hook inside a
 * critical section (cycling through every point the workload reaches).
 * msegd, which learns of each death when the worker's connection closes,
 * reclaims the dead worker's slot and caches while the others carry on.
 * After each round the segment must pass mseg_check, every name and every
 * linked block must be intact, and the bytes left allocated but reachable
 * from nothing must stay within a bound per killed process.
 *
 * Before the torture, mseg_alloc_into() is killed at its magazine and
 * refill hooks and msegd's reclaim must settle each cut allocation: the
 * destination holds a live block or nothing, and no byte is lost.
 *
 * Rounds: -Dtorture_rounds (meson passes --rounds=N).
 */
#include "crash-harness.h"

static struct msegd daemon_;
static mseg *parent_seg;

/* msegd reclaims a dead client's slot when its connection closes. */
static void reclaim_by_msegd(void *arg) {
        struct mseg_stats st;
        uint64_t t0 = ch_now_ms();

        (void) arg;
        for (;;) {
                ASSERT_OK(mseg_stats(parent_seg, &st));
                if (st.slots_dead == 0)
                        return;
                if (ch_now_ms() - t0 > 20000) {
                        h_print_log(&daemon_);
                        FAIL("msegd did not reclaim a dead client's slot within 20 s");
                }
                ch_sleep_us(5000);
        }
}

static unsigned parse_rounds(int argc, char **argv) {
        for (int i = 1; i < argc; i++)
                if (!strncmp(argv[i], "--rounds=", 9))
                        return (unsigned) strtoul(argv[i] + 9, NULL, 10);
        return ch_rounds(40);
}

static void on_exit_cleanup(void) {
        msegd_kill(&daemon_);
        msegd_cleanup(&daemon_);
}

int main(int argc, char **argv) {
        struct ch_target t = { .mode = CH_BROKERED, .size = 16 << 20, .max_size = 24 << 20 };
        static const struct { const char *point; unsigned n; uint64_t size; } into[] = {
                { "alloc.into", 1, 64 }, { "alloc.into", 5, 64 }, { "alloc.refill", 3, 64 },
                { "pages.alloc", 3, 20000 },
        };
        struct mseg_stats st;
        struct ch_run R;
        char self[4096];
        unsigned rounds;
        ssize_t n;
        pid_t me = getpid();

        if (argc >= 7 && !strcmp(argv[1], "worker")) {
                struct ch_target wt = t;
                snprintf(wt.where, sizeof(wt.where), "%s", argv[3]);
                snprintf(wt.sock, sizeof(wt.sock), "%s", argv[4]);
                return ch_worker_main(&wt, (unsigned) atoi(argv[5]), strtoull(argv[6], NULL, 10));
        }
        if (argc >= 6 && !strcmp(argv[1], "into")) {
                struct ch_target wt = t;
                snprintf(wt.where, sizeof(wt.where), "%s", argv[3]);
                snprintf(wt.sock, sizeof(wt.sock), "%s", argv[4]);
                ch_into_child(&wt, strtoull(argv[5], NULL, 10));
        }
#ifndef MSEG_TEST_HOOKS
        printf("test-crash-torture: skipped (built without -Dtest_hooks=true)\n");
        return TEST_SKIP;
#endif
        rounds = parse_rounds(argc, argv);
        alarm(540);
        n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        ASSERT(n > 0);
        self[n] = 0;
        setenv("MSEG_LOCK_TIMEOUT_MS", "5000", 1);
        msegd_start(&daemon_, "--log-level", "info", NULL);
        atexit(on_exit_cleanup);
        snprintf(t.where, sizeof(t.where), "crash-torture-%d", (int) me);
        snprintf(t.sock, sizeof(t.sock), "%s", daemon_.sock);

        ch_run_init(&R, &t, 4, 0x70e7u + (uint64_t) me);
        R.self = self;
        ch_run_create(&R);
        parent_seg = R.seg;

        for (size_t i = 0; i < sizeof(into) / sizeof(into[0]); i++)
                if (!ch_into_kill(&t, self, R.seg, into[i].point, into[i].n, into[i].size, 256, reclaim_by_msegd, NULL))
                        FAIL("alloc_into never reached %s:%u", into[i].point, into[i].n);
        printf("crash-torture: alloc_into killed at %zu points, settled by msegd's reclaim: every destination whole "
               "or empty, no byte lost\n", sizeof(into) / sizeof(into[0]));

        ch_torture(&R, rounds, "brokered");
        ch_summary(&R, "crash-torture");
        if (atomic_load(&R.sh->failures)) {
                h_print_log(&daemon_);
                FAIL("%d failure(s); first: %s", atomic_load(&R.sh->failures), R.sh->first_failure);
        }
        /* msegd is still well and serving. */
        ASSERT_OK(mseg_stats(R.seg, &st));
        ASSERT_EQ(st.slots_dead, 0);
        ch_run_done(&R);
        ASSERT_OK(mseg_remove(t.where, &(struct mseg_options){ .socket_path = t.sock }));
        msegd_stop(&daemon_);
        return 0;
}
