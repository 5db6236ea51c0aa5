/* SPDX-License-Identifier: MIT */
/*
 * testhook.c — stopping a process at a chosen instruction, for crash tests.
 *
 * A kill-torture test wants its SIGKILL to land *inside* a critical section
 * for sure, not by luck. Code marks the interesting points with
 * MSEG_TEST_HOOK("alloc.refill"); a test arms one point through the
 * environment of a child:
 *
 *   MSEG_TEST_HOOK=alloc.refill:3    stop at the 3rd time the point is reached
 *   MSEG_TEST_HOOK_FD=7              write one byte there when stopped
 *
 * The stopped process blocks in pause() (holding whatever lock it holds)
 * until the test kills it. Hooks exist only in builds with
 * -Dtest_hooks=true (the default for development; off for release
 * packages); unarmed, a hook costs one predictable branch.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#ifdef MSEG_TEST_HOOKS

static char armed_point[64];
static long armed_count;
static int armed_fd = -1;
static _Atomic long hits;
static _Atomic int state;       /* 0 unread, 1 armed, 2 off */

static int hooks_state(void) {
        int s = atomic_load_explicit(&state, memory_order_acquire);
        const char *v, *fd;

        if (s)
                return s;
        v = getenv("MSEG_TEST_HOOK");
        s = 2;
        if (v && *v) {
                const char *colon = strchr(v, ':');
                size_t n = colon ? (size_t) (colon - v) : strlen(v);
                if (n < sizeof(armed_point)) {
                        memcpy(armed_point, v, n);
                        armed_point[n] = 0;
                        armed_count = colon ? strtol(colon + 1, NULL, 10) : 1;
                        if (armed_count < 1)
                                armed_count = 1;
                        fd = getenv("MSEG_TEST_HOOK_FD");
                        armed_fd = fd ? atoi(fd) : -1;
                        s = 1;
                }
        }
        atomic_store_explicit(&state, s, memory_order_release);
        return s;
}

void mseg__test_hook(const char *point) {
        if (hooks_state() != 1 || strcmp(point, armed_point) != 0)
                return;
        if (atomic_fetch_add(&hits, 1) + 1 != armed_count)
                return;
        if (armed_fd >= 0) {
                char c = 'H';
                ssize_t r = write(armed_fd, &c, 1);
                (void) r;
        }
        for (;;)
                pause();        /* wait for the test's SIGKILL */
}

#endif
