/* SPDX-License-Identifier: MIT */
/*
 * mseg-demo — two processes sharing a segment through msegd.
 *
 *   mseg-demo producer   creates segment "demo", constructs named objects,
 *                        then waits until a consumer changes them
 *   mseg-demo consumer   opens "demo", finds the objects, changes them
 *
 * The socket comes from $MSEG_SOCKET (scripts/demo.sh starts msegd on a
 * private one). After mseg_open() nothing here talks to msegd: allocation,
 * construction and lookup are function calls on the shared mapping.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mseg.h>

struct point { double x, y; };
struct counter { _Atomic long value; };

static int fail(const char *what, int r) {
        fprintf(stderr, "mseg-demo: %s: %s (%s)\n", what, mseg_strerror(r), mseg_last_error());
        return 1;
}

static int init_point(void *elem, size_t i, void *arg) {
        (void) arg;
        *(struct point *) elem = (struct point) { .x = (double) i, .y = (double) i * i };
        return 0;
}

static int producer(void) {
        struct mseg_options o = { .size = 4 << 20, .mode = 0600, .flags = MSEG_REMOVE_ON_LAST_CLOSE };
        mseg *seg;
        int r;

        if (mseg_remove("demo", NULL) == 0)     /* a leftover from an earlier run */
                printf("[producer %d] removed a leftover segment \"demo\"\n", (int) getpid());
        r = mseg_open(&seg, "demo", MSEG_CREATE_ONLY, &o);
        if (r < 0)
                return fail("create segment \"demo\"", r);
        char *greeting = mseg_construct(seg, "greeting", MSEG_TYPE(char), 64, NULL, NULL);
        struct point *pts = mseg_construct(seg, "points", MSEG_TYPE(struct point), 4, init_point, NULL);
        struct counter *c = mseg_construct(seg, "counter", MSEG_TYPE(struct counter), 1, NULL, NULL);
        if (!greeting || !pts || !c)
                return fail("construct", -errno);
        snprintf(greeting, 64, "hello from pid %d", (int) getpid());
        printf("[producer %d] created segment \"demo\" (%llu bytes) with \"greeting\", \"points\"[4], \"counter\" = %ld\n",
               (int) getpid(), (unsigned long long) mseg_size(seg), c->value);
        fflush(stdout);
        /* Block (futex, no polling) until the consumer says it is done. */
        r = mseg_wait_name(seg, "done", MSEG_TYPE(int), 10000);
        if (r < 0)
                return fail("wait for the consumer", r);
        printf("[producer %d] sees the consumer's changes: counter = %ld, greeting = \"%s\", points[3] = (%g, %g)\n",
               (int) getpid(), c->value, greeting, pts[3].x, pts[3].y);
        r = mseg_check(seg);
        printf("[producer %d] mseg_check: %s\n", (int) getpid(), r == 0 ? "ok" : mseg_strerror(r));
        mseg_close(seg);
        return r < 0;
}

static int consumer(void) {
        mseg *seg;
        size_t n;
        int r;

        r = mseg_open(&seg, "demo", MSEG_OPEN_ONLY, NULL);
        if (r < 0)
                return fail("open segment \"demo\"", r);
        char *greeting = mseg_find(seg, "greeting", MSEG_TYPE(char), NULL);
        struct point *pts = mseg_find(seg, "points", MSEG_TYPE(struct point), &n);
        struct counter *c = mseg_find(seg, "counter", MSEG_TYPE(struct counter), NULL);
        if (!greeting || !pts || !c)
                return fail("find", -errno);
        printf("[consumer %d] found \"greeting\" = \"%s\", %zu points, points[3] = (%g, %g)\n",
               (int) getpid(), greeting, n, pts[3].x, pts[3].y);
        c->value += 42;
        pts[3].x = -1;
        snprintf(greeting, 64, "changed by pid %d", (int) getpid());
        if (!mseg_construct(seg, "done", MSEG_TYPE(int), 1, NULL, NULL))
                return fail("construct \"done\"", -errno);
        printf("[consumer %d] added 42 to \"counter\", changed \"greeting\" and points[3], constructed \"done\"\n",
               (int) getpid());
        mseg_close(seg);
        return 0;
}

int main(int argc, char **argv) {
        if (argc == 2 && strcmp(argv[1], "producer") == 0)
                return producer();
        if (argc == 2 && strcmp(argv[1], "consumer") == 0)
                return consumer();
        fprintf(stderr, "usage: mseg-demo producer|consumer   (socket: $MSEG_SOCKET)\n");
        return 2;
}
