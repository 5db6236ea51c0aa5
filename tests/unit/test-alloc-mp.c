/* SPDX-License-Identifier: MIT */
/*
 * test-alloc-mp: several processes allocating in one segment at once, and
 * processes killed in the middle of it.
 *
 *  - 2 and 4 forked processes hammer one MAP_SHARED segment (created before
 *    the fork, so the children also exercise the atfork path), each with its
 *    own live set checked by fill patterns and blocks passed between them;
 *    afterwards mseg_check passes and every byte is accounted for.
 *  - A worker is SIGKILLed at a random moment; the survivors' view: the
 *    segment checks clean, mseg__slots_reclaim_dead() returns its slot, and
 *    after freeing the blocks its table still names (it allocates only with
 *    mseg_alloc_into, so nothing it held is unreachable), no block is left:
 *    the leak per killed process is zero here.
 *  - The same with the kill landing inside each critical section for sure
 *    (MSEG_TEST_HOOK stops the worker there), on a mapped file, including a
 *    reclaimer killed in the middle of reclaiming.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "internal.h"

#define TABLE_N 2000
#define FREEING (UINT64_C(1) << 63)
#define TABLE_BYTES ((TABLE_N + 1) * sizeof(mseg_handle))  /* + the in-flight entry */

static uint8_t pat(uint64_t h) { return (uint8_t) (h * 0x9e3779b97f4a7c15u >> 56); }

/* The first 64 bytes (16 at least: every block has that many). */
static void fill_block(mseg *seg, uint64_t h) {
        size_t n = mseg_usable_size(seg, mseg_ptr(seg, h));

        ASSERT(n >= 16);
        memset(mseg_ptr(seg, h), pat(h), n > 64 ? 64 : n);
}

static void check_block(mseg *seg, uint64_t h) {
        const uint8_t *p = mseg_ptr(seg, h);
        size_t n = mseg_usable_size(seg, p);

        for (size_t i = 0; i < (n > 64 ? 64 : n); i++)
                if (p[i] != pat(h))
                        FAIL("pid %d: block %llu byte %zu is 0x%02x", getpid(), (unsigned long long) h, i, p[i]);
}

static size_t size_of(uint64_t *rng) {
        uint64_t r = test_rand(rng) % 100;

        if (r < 80)
                return 1 + test_rand(rng) % 512;
        if (r < 97)
                return 1 + test_rand(rng) % 8192;
        return 8193 + test_rand(rng) % 100000;
}

/* The worker: random allocations recorded in @table (a handle array in the
 * segment, TABLE_N entries); allocation only by mseg_alloc_into, and a
 * free clears the entry after the block is freed, so after a kill the table
 * names every block the worker still held (plus at most one it had just
 * freed, which mseg_free then rejects). */
static void work(mseg *seg, mseg_handle *table, uint64_t seed, uint64_t ops, volatile uint64_t *progress) {
        _Atomic uint64_t *inflight = (_Atomic uint64_t *) &table[TABLE_N];
        uint64_t rng = seed, f;

        /* A block linked by a killed worker before it could fill it: its
         * contents are unspecified (like any fresh block). Fill it now.
         * (Workers run one at a time when they may be killed.) */
        if ((f = atomic_load(inflight)) != 0) {
                size_t i = (f & ~FREEING) - 1;
                /* the link may still be in a lock's intent: repair first */
                ASSERT_OK(mseg_check(seg));
                if (f & FREEING) {
                        /* killed while freeing it: maybe freed, maybe not */
                        if (table[i]) {
                                int r = mseg_free(seg, mseg_ptr(seg, table[i]));
                                if (r != 0 && r != -EINVAL)
                                        FAIL("freeing an interrupted free: %d", r);
                        }
                        table[i] = 0;
                } else if (table[i]) {
                        fill_block(seg, table[i]);
                }
                atomic_store(inflight, 0);
        }

        for (uint64_t op = 0; op < ops; op++) {
                size_t i = test_rand(&rng) % TABLE_N;
                uint64_t h = atomic_load((_Atomic uint64_t *) &table[i]);
                if (h) {
                        check_block(seg, h);
                        atomic_store(inflight, (i + 1) | FREEING);
                        ASSERT_OK(mseg_free(seg, mseg_ptr(seg, h)));
                        atomic_store((_Atomic uint64_t *) &table[i], 0);
                        atomic_store(inflight, 0);
                } else {
                        size_t n = size_of(&rng);
                        int r;
                        atomic_store(inflight, i + 1);
                        r = mseg_alloc_into(seg, n, &table[i]);
                        if (r == -ENOMEM) {
                                atomic_store(inflight, 0);
                                continue;
                        }
                        ASSERT_OK(r);
                        fill_block(seg, table[i]);
                        atomic_store(inflight, 0);
                }
                if (progress)
                        *progress = op;
        }
}

static void free_table(mseg *seg, mseg_handle *table, int *rejected) {
        for (size_t i = 0; i < TABLE_N; i++) {
                if (!table[i])
                        continue;
                int r = mseg_free(seg, mseg_ptr(seg, table[i]));
                if (r == -EINVAL)
                        (*rejected)++;
                else
                        ASSERT_OK(r);
                table[i] = 0;
        }
        table[TABLE_N] = 0;
}

/* ---- many processes ---- */

static void hammer(int nproc) {
        size_t size = 64 << 20;
        void *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        mseg_handle *tables[8];
        pid_t pids[8];
        mseg *seg;
        uint64_t free0;
        int rejected = 0;

        ASSERT(buf != MAP_FAILED);
        ASSERT_OK(mseg_buffer_create(&seg, buf, size));
        /* the parent allocates first: its slot must not leak into the children */
        void *mine = mseg_alloc(seg, 100);
        ASSERT_NOT_NULL(mine);
        free0 = mseg_free_memory(seg);
        for (int i = 0; i < nproc; i++) {
                tables[i] = mseg_alloc(seg, TABLE_BYTES);
                ASSERT_NOT_NULL(tables[i]);
                memset(tables[i], 0, TABLE_BYTES);
        }
        for (int i = 0; i < nproc; i++) {
                pids[i] = fork();
                ASSERT(pids[i] >= 0);
                if (pids[i] == 0) {
                        work(seg, tables[i], 100 + (uint64_t) i, 300000, NULL);
                        mseg_close(seg);
                        _exit(0);
                }
        }
        for (int i = 0; i < nproc; i++) {
                int st;
                ASSERT_EQ(waitpid(pids[i], &st, 0), pids[i]);
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                        FAIL("worker %d ended with status 0x%x", i, st);
        }
        ASSERT_OK(mseg_check(seg));
        ASSERT_EQ(mseg__slots_reclaim_dead(seg), 0);    /* every worker closed cleanly */
        /* the parent frees what the workers left, from another process */
        for (int i = 0; i < nproc; i++) {
                free_table(seg, tables[i], &rejected);
                ASSERT_OK(mseg_free(seg, tables[i]));
        }
        ASSERT_EQ(rejected, 0);
        ASSERT_OK(mseg_check(seg));
        /* all back, but for the tails of superblocks whose blocks sit in
         * the parent's magazines */
        ASSERT(mseg_free_memory(seg) + (256 << 10) >= free0);
        ASSERT_OK(mseg_free(seg, mine));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        mseg_close(seg);
        munmap(buf, size);
        printf("%d processes: ok\n", nproc);
}

/* ---- random kills ---- */

static void random_kills(int rounds) {
        size_t size = 32 << 20;
        void *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        volatile uint64_t *progress = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        mseg_handle *table;
        uint64_t rng = 77;
        mseg *seg;
        int total_reclaimed = 0, total_rejected = 0;

        ASSERT(buf != MAP_FAILED && progress != MAP_FAILED);
        ASSERT_OK(mseg_buffer_create(&seg, buf, size));
        table = mseg_alloc(seg, TABLE_BYTES);
        ASSERT_NOT_NULL(table);
        memset(table, 0, TABLE_BYTES);
        for (int round = 0; round < rounds; round++) {
                int st, rejected = 0;
                *progress = 0;
                pid_t pid = fork();
                ASSERT(pid >= 0);
                if (pid == 0) {
                        work(seg, table, 1000 + (uint64_t) round, UINT64_MAX, progress);
                        _exit(0);
                }
                /* let it run a random while, then kill it mid-flight */
                while (*progress < 2000)
                        usleep(100);
                usleep((useconds_t) (test_rand(&rng) % 20000));
                kill(pid, SIGKILL);
                ASSERT_EQ(waitpid(pid, &st, 0), pid);
                ASSERT(WIFSIGNALED(st));
                ASSERT_OK(mseg_check(seg));             /* repairs whatever lock it held */
                int n = mseg__slots_reclaim_dead(seg);
                ASSERT_EQ(n, 1);
                total_reclaimed += n;
                ASSERT_OK(mseg_check(seg));
                free_table(seg, table, &rejected);
                ASSERT(rejected <= 1);
                total_rejected += rejected;
                /* everything but the table itself is free again */
                if (mseg__alloc_live_blocks(seg) != 1)
                        FAIL("round %d: %llu blocks live after reclaim (expected 1: the table)", round,
                             (unsigned long long) mseg__alloc_live_blocks(seg));
        }
        ASSERT_OK(mseg_free(seg, table));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        ASSERT_OK(mseg_check(seg));
        printf("random kills: %d rounds, %d slots reclaimed, %d dangling entries, 0 blocks leaked\n", rounds,
               total_reclaimed, total_rejected);
        mseg_close(seg);
        munmap(buf, size);
        munmap((void *) progress, 4096);
}

/* ---- kills inside critical sections (test hooks, mapped file) ---- */

struct point {
        const char *name;
        uint64_t seg_size;      /* < 1 MiB: no magazines, every allocation locked */
        int nth;
};

static char self_path[4096];

static mseg_handle g_table;   /* the table's handle, passed to exec'd workers */

static pid_t spawn(const char *path, const char *hook, int hook_fd, uint64_t seed) {
        pid_t pid = fork();

        ASSERT(pid >= 0);
        if (pid == 0) {
                char seedbuf[32], fdbuf[16], tbuf[32];
                char *argv[] = { self_path, "child", (char *) path, seedbuf, tbuf, NULL };
                snprintf(seedbuf, sizeof(seedbuf), "%llu", (unsigned long long) seed);
                snprintf(tbuf, sizeof(tbuf), "%llu", (unsigned long long) g_table);
                snprintf(fdbuf, sizeof(fdbuf), "%d", hook_fd);
                if (hook) {
                        setenv("MSEG_TEST_HOOK", hook, 1);
                        setenv("MSEG_TEST_HOOK_FD", fdbuf, 1);
                }
                execv(self_path, argv);
                _exit(127);
        }
        return pid;
}

/* Run a child that stops at @hook; return once it is stopped there, or
 * -1 if it finished without reaching it. */
static int stop_at(const char *path, const char *hook, uint64_t seed, pid_t *ret_pid) {
        int fds[2];
        struct pollfd pfd;
        char c;
        int r;

        ASSERT_EQ(pipe(fds), 0);
        *ret_pid = spawn(path, hook, fds[1], seed);
        close(fds[1]);
        pfd = (struct pollfd){ .fd = fds[0], .events = POLLIN };
        r = poll(&pfd, 1, 30000);
        r = r == 1 && read(fds[0], &c, 1) == 1 ? 0 : -1;
        close(fds[0]);
        return r;
}

static void hook_kills(const char *dir) {
        static const struct point points[] = {
                { "alloc.refill", 16 << 20, 3 },
                { "alloc.flush", 16 << 20, 2 },
                { "alloc.into", 16 << 20, 50 },
                { "alloc.into_locked", 512 << 10, 20 },
                { "pages.alloc", 16 << 20, 7 },
                { "pages.free", 16 << 20, 3 },
                { "pages.alloc", 512 << 10, 2 },
                { "slot.claim", 16 << 20, 1 },
        };
        char path[4200];
        int kills = 0;

        for (size_t k = 0; k < sizeof(points) / sizeof(points[0]); k++) {
                const struct point *pt = &points[k];
                struct mseg_options o = { .size = pt->seg_size };
                char hook[96];
                mseg *seg;
                pid_t pid;
                int st, rejected = 0;

                snprintf(path, sizeof(path), "%s/alloc-mp-%zu.seg", dir, k);
                unlink(path);
                ASSERT_OK(mseg_file_open(&seg, path, MSEG_CREATE_ONLY, &o));
                mseg_handle *table = mseg_alloc(seg, TABLE_BYTES);
                ASSERT_NOT_NULL(table);
                memset(table, 0, TABLE_BYTES);
                g_table = mseg_handle_of(seg, table);

                snprintf(hook, sizeof(hook), "%s:%d", pt->name, pt->nth);
                if (stop_at(path, hook, 500 + k, &pid) < 0)
                        FAIL("%s: the worker never reached the hook", hook);
                kill(pid, SIGKILL);
                ASSERT_EQ(waitpid(pid, &st, 0), pid);
                ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
                kills++;
                /* Another worker runs to completion on the damaged segment
                 * (attaching reclaims the dead slot), then we check. */
                pid = spawn(path, NULL, -1, 900 + k);
                ASSERT_EQ(waitpid(pid, &st, 0), pid);
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                        FAIL("%s: the next worker failed with status 0x%x", hook, st);
                ASSERT_OK(mseg_check(seg));
                ASSERT(mseg__slots_reclaim_dead(seg) >= 0);
                free_table(seg, table, &rejected);
                ASSERT(rejected <= 1);
                if (mseg__alloc_live_blocks(seg) != 1)
                        FAIL("%s: %llu blocks live after reclaim (expected 1)", hook,
                             (unsigned long long) mseg__alloc_live_blocks(seg));
                ASSERT_OK(mseg_check(seg));

                /* a reclaimer killed in the middle of reclaiming: kill a
                 * worker anywhere, then one whose attach reclaims it */
                if (k == 0) {
                        ASSERT_EQ(stop_at(path, "alloc.refill:5", 700, &pid), 0);
                        kill(pid, SIGKILL);
                        waitpid(pid, &st, 0);
                        ASSERT_EQ(stop_at(path, "slot.reclaim:1", 701, &pid), 0);
                        kill(pid, SIGKILL);
                        waitpid(pid, &st, 0);
                        kills += 2;
                        ASSERT(mseg__slots_reclaim_dead(seg) >= 1);
                        ASSERT_OK(mseg_check(seg));
                        free_table(seg, table, &rejected);
                        ASSERT(rejected <= 2);
                        ASSERT_EQ(mseg__alloc_live_blocks(seg), 1);
                }
                ASSERT_OK(mseg_free(seg, table));
                ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
                ASSERT_OK(mseg_check(seg));
                mseg_close(seg);
                unlink(path);
        }
        printf("kills inside critical sections: %d, failures 0, leaked blocks 0\n", kills);
}

int main(int argc, char **argv) {
        if (argc == 5 && !strcmp(argv[1], "child")) {
                mseg *seg;
                mseg_handle *table;
                ASSERT_OK(mseg_file_open(&seg, argv[2], MSEG_OPEN_ONLY, NULL));
                table = mseg_ptr(seg, strtoull(argv[4], NULL, 10));
                ASSERT_NOT_NULL(table);
                work(seg, table, strtoull(argv[3], NULL, 10), 20000, NULL);
                mseg_close(seg);
                return 0;
        }
        ASSERT(readlink("/proc/self/exe", self_path, sizeof(self_path) - 1) > 0);
        hammer(2);
        hammer(4);
        random_kills(100);
#ifdef MSEG_TEST_HOOKS
        {
                const char *tmp = getenv("TMPDIR");
                hook_kills(tmp && *tmp ? tmp : "/tmp");
        }
#else
        printf("hook kills skipped (built without -Dtest_hooks=true)\n");
#endif
        return 0;
}
