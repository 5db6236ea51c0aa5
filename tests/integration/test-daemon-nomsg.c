/* SPDX-License-Identifier: MIT */
/*
 * test-daemon-nomsg — after mseg_open() returns, allocation and the whole
 * registry work without msegd: with msegd stopped (SIGSTOP), processes that
 * opened a segment allocate, free, construct, find and destroy named
 * objects, and close their handles; none of it waits for msegd. Then msegd
 * continues and still serves.
 */
#include "msegd-harness.h"

#define WORKERS 3
#define ROUNDS 2000

static int worker(int id, int go_fd, int done_fd) {
        mseg *s;
        char name[64], b;
        int r;

        r = mseg_open(&s, "nomsg", MSEG_OPEN_ONLY, NULL);
        if (r < 0)
                return 2;
        if (write(done_fd, "r", 1) != 1)        /* ready: opened */
                return 3;
        if (read(go_fd, &b, 1) != 1)            /* msegd is stopped now */
                return 4;
        for (int i = 0; i < ROUNDS; i++) {
                void *p = mseg_alloc(s, 16 + (size_t) (i % 500));
                if (!p)
                        return 5;
                memset(p, id, 16);
                snprintf(name, sizeof(name), "w%d-%d", id, i);
                uint64_t *o = mseg_construct(s, name, MSEG_TYPE(uint64_t), 2, NULL, NULL);
                if (!o)
                        return 6;
                o[0] = (uint64_t) i;
                if (mseg_find(s, name, MSEG_TYPE(uint64_t), NULL) != o)
                        return 7;
                if (i % 2 && mseg_destroy(s, name, MSEG_TYPE(uint64_t)) < 0)
                        return 8;
                if (mseg_free(s, p) < 0)
                        return 9;
        }
        if (mseg_check(s) < 0)
                return 10;
        mseg_close(s);
        return 0;
}

int main(void) {
        struct msegd d = { 0 };
        struct mseg_options o = { .size = 16 << 20 };
        pid_t pids[WORKERS];
        int go[2], done[2];
        char b;
        mseg *s;

        alarm(120);
        msegd_start(&d, NULL);
        ASSERT_OK(mseg_open(&s, "nomsg", MSEG_CREATE_ONLY, &o));
        ASSERT_OK(pipe(go));
        ASSERT_OK(pipe(done));
        for (int i = 0; i < WORKERS; i++) {
                pids[i] = fork();
                if (pids[i] == 0) {
                        alarm(60);      /* a worker stuck waiting for msegd dies of SIGALRM */
                        _exit(worker(i + 1, go[0], done[1]));
                }
        }
        for (int i = 0; i < WORKERS; i++)
                ASSERT_EQ(read(done[0], &b, 1), 1);
        ASSERT_OK(kill(d.pid, SIGSTOP));
        uint64_t t0 = h_now_ms();
        for (int i = 0; i < WORKERS; i++)
                ASSERT_EQ(write(go[1], "g", 1), 1);
        /* The parent works too, and closes its handle, msegd stopped. */
        for (int i = 0; i < ROUNDS; i++) {
                char name[32];
                snprintf(name, sizeof(name), "p-%d", i);
                ASSERT_NOT_NULL(mseg_find_or_construct(s, name, MSEG_TYPE(int), 1, NULL, NULL));
        }
        for (int i = 0; i < WORKERS; i++) {
                int st = h_wait(pids[i]);
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                        FAIL("worker %d: status 0x%x (SIGALRM means it waited for the stopped msegd)", i, st);
        }
        ASSERT_EQ(mseg_named_count(s), ROUNDS + WORKERS * (ROUNDS / 2));
        ASSERT_OK(mseg_check(s));
        mseg_close(s);
        printf("%d processes, %d rounds each, with msegd stopped: %llu ms\n", WORKERS + 1, ROUNDS,
               (unsigned long long) (h_now_ms() - t0));
        /* msegd was stopped all along. */
        char path[64], stat[512];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int) d.pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ASSERT(fd >= 0);
        ssize_t n = read(fd, stat, sizeof(stat) - 1);
        close(fd);
        ASSERT(n > 0);
        stat[n] = '\0';
        ASSERT(strstr(stat, ") T ") != NULL);
        ASSERT_OK(kill(d.pid, SIGCONT));
        ASSERT_OK(mseg_open(&s, "nomsg", MSEG_OPEN_ONLY, NULL));
        ASSERT_EQ(mseg_named_count(s), ROUNDS + WORKERS * (ROUNDS / 2));
        mseg_close(s);
        ASSERT_OK(mseg_remove("nomsg", NULL));
        msegd_stop(&d);
        msegd_cleanup(&d);
        printf("ok\n");
        return 0;
}
