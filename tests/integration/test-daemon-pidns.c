/* SPDX-License-Identifier: MIT */
/*
 * test-daemon-pidns — a client in another PID namespace (a container) dies
 * with an attachment slot and blocks in its caches: msegd, which saw it
 * connect, reclaims them once it is gone, although the pid the slot names
 * means nothing in msegd's namespace. Blocks the client still owned stay
 * allocated (handles may reference them); the cached ones come back.
 * Skipped where PID namespaces cannot be made (no CAP_SYS_ADMIN).
 */
#include <sched.h>
#include <sys/prctl.h>

#include "msegd-harness.h"

#define NBLOCKS 1000
#define BLOCK 64

static void inner_client(int ready_fd) {
        void *p[NBLOCKS];
        mseg *s;

        if (mseg_open(&s, "pidns", MSEG_OPEN_ONLY, NULL) < 0)
                _exit(2);
        for (int i = 0; i < NBLOCKS; i++)
                if (!(p[i] = mseg_alloc(s, BLOCK)))
                        _exit(3);
        for (int i = 0; i < NBLOCKS; i += 2)    /* these go to this thread's cache */
                if (mseg_free(s, p[i]) < 0)
                        _exit(4);
        if (getpid() != 1 || write(ready_fd, "r", 1) != 1)
                _exit(5);
        for (;;)
                pause();
}

int main(void) {
        struct msegd d = { 0 };
        struct mseg_options o = { .size = 8 << 20 };
        struct mseg_stats st0, st;
        int pids[2], ready[2];
        pid_t middle, inner;
        uint64_t t0;
        char b;
        mseg *s;
        int status;

        alarm(60);
        msegd_start(&d, NULL);
        ASSERT_OK(mseg_open(&s, "pidns", MSEG_CREATE_ONLY, &o));
        ASSERT_OK(mseg_stats(s, &st0));
        ASSERT_OK(pipe(pids));
        ASSERT_OK(pipe(ready));
        middle = fork();
        ASSERT(middle >= 0);
        if (middle == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (unshare(CLONE_NEWPID) < 0)
                        _exit(77);
                inner = fork();
                if (inner < 0)
                        _exit(1);
                if (inner == 0)
                        inner_client(ready[1]);         /* PID 1 of the new namespace */
                if (write(pids[1], &inner, sizeof(inner)) != sizeof(inner))
                        _exit(1);
                _exit(waitpid(inner, &status, 0) == inner && WIFSIGNALED(status) ? 0 : 1);
        }
        close(ready[1]);
        if (read(ready[0], &b, 1) != 1) {
                ASSERT_EQ(waitpid(middle, &status, 0), middle);
                if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
                        printf("daemon-pidns: no PID namespaces here (unshare refused): skipped\n");
                        msegd_stop(&d);
                        msegd_cleanup(&d);
                        return TEST_SKIP;
                }
                FAIL("the client in the new namespace failed: status %#x", status);
        }
        ASSERT_EQ(read(pids[0], &inner, sizeof(inner)), (ssize_t) sizeof(inner));
        ASSERT_OK(mseg_stats(s, &st));
        ASSERT_EQ(st.slots_live, st0.slots_live + 1);
        ASSERT(st.cached_bytes > 0);

        kill(inner, SIGKILL);
        ASSERT_EQ(waitpid(middle, &status, 0), middle);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        t0 = h_now_ms();
        for (;;) {
                ASSERT_OK(mseg_stats(s, &st));
                if (st.slots_live == st0.slots_live)
                        break;
                if (h_now_ms() - t0 > 15000)
                        FAIL("msegd never reclaimed the slot of a dead client from another PID namespace "
                             "(%u live, %llu bytes still cached)", st.slots_live,
                             (unsigned long long) st.cached_bytes);
                h_sleep_ms(20);
        }
        ASSERT_EQ(st.slots_reclaimed, st0.slots_reclaimed + 1);
        ASSERT_EQ(st.cached_bytes, 0);
        ASSERT_EQ(st.allocated_blocks - st0.allocated_blocks, NBLOCKS / 2);     /* still owned: kept */
        ASSERT_OK(mseg_check(s));
        printf("daemon-pidns: a client that was PID 1 of its own namespace died; msegd reclaimed its slot "
               "%llu ms later, %d blocks it owned stay allocated, none cached\n",
               (unsigned long long) (h_now_ms() - t0), NBLOCKS / 2);
        mseg_close(s);
        ASSERT_OK(mseg_remove("pidns", NULL));
        msegd_stop(&d);
        msegd_cleanup(&d);
        return 0;
}
