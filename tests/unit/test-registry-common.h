/* SPDX-License-Identifier: MIT */
/*
 * test-registry-common.h — what the multi-process registry tests share: a
 * scratch file segment, a futex barrier in a shared anonymous mapping, and
 * forking children whose failure fails the test.
 */
#ifndef MSEG_TEST_REGISTRY_COMMON_H
#define MSEG_TEST_REGISTRY_COMMON_H

#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

static inline void *shared_area(size_t size) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        ASSERT(p != MAP_FAILED);
        return p;
}

/* A fresh path for a segment file, removed by the caller. */
static inline void scratch_path(char *buf, size_t n, const char *tag) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(buf, n, "%s/mseg-%s-%d", dir, tag, (int) getpid());
        unlink(buf);
}

static inline mseg *open_file_seg(const char *path, enum mseg_how how, uint64_t size, uint32_t flags) {
        struct mseg_options o = { .size = size, .flags = flags };
        mseg *seg = NULL;

        ASSERT_OK(mseg_file_open(&seg, path, how, &o));
        return seg;
}

static inline long futex(_Atomic uint32_t *w, int op, uint32_t val, const struct timespec *ts) {
        return syscall(SYS_futex, w, op, val, ts, NULL, 0);
}

/* A reusable barrier for n processes. */
struct barrier {
        _Atomic uint32_t count;
        _Atomic uint32_t phase;
        uint32_t n;
};

static inline void barrier_init(struct barrier *b, uint32_t n) {
        atomic_store(&b->count, 0);
        atomic_store(&b->phase, 0);
        b->n = n;
}

static inline void barrier_wait(struct barrier *b) {
        uint32_t phase = atomic_load(&b->phase);

        if (atomic_fetch_add(&b->count, 1) + 1 == b->n) {
                atomic_store(&b->count, 0);
                atomic_fetch_add(&b->phase, 1);
                futex(&b->phase, FUTEX_WAKE, INT_MAX, NULL);
                return;
        }
        while (atomic_load(&b->phase) == phase) {
                struct timespec ts = { 1, 0 };
                futex(&b->phase, FUTEX_WAIT, phase, &ts);
        }
}

static inline uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/* Wait for every child; each must exit 0. */
static inline void wait_children(pid_t *pids, int n) {
        for (int i = 0; i < n; i++) {
                int st;
                ASSERT_EQ(waitpid(pids[i], &st, 0), pids[i]);
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                        FAIL("child %d (pid %d) failed: %s %d", i, (int) pids[i],
                             WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        }
}

/* splitmix64: the content pattern of test objects. */
static inline uint64_t mix64(uint64_t x) {
        x += UINT64_C(0x9e3779b97f4a7c15);
        x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
        return x ^ (x >> 31);
}

#endif
