/* SPDX-License-Identifier: MIT */
/*
 * test-daemon-share — two processes share a segment through msegd. The
 * first constructs named objects and fills them with a pattern; a second,
 * separately started process (fork + exec of this program, so it shares no
 * memory and no libmseg state with the first) opens the segment by name,
 * finds every object and checks every byte, then changes them; the first
 * sees the change.
 */
#include "msegd-harness.h"

#define NOBJ 200

struct rec {
        uint64_t index;
        uint64_t words[31];
};

static uint8_t pattern(unsigned obj, size_t byte) {
        return (uint8_t) (obj * 131u + byte * 7u + 1u);
}

static int child_main(void) {
        mseg *s;
        char name[32];
        int r;

        r = mseg_open(&s, "share", MSEG_OPEN_ONLY, NULL);
        if (r < 0) {
                fprintf(stderr, "child: open: %s (%s)\n", mseg_strerror(r), mseg_last_error());
                return 2;
        }
        if (mseg_named_count(s) != NOBJ + 1) {
                fprintf(stderr, "child: %zu named objects, expected %d\n", mseg_named_count(s), NOBJ + 1);
                return 3;
        }
        for (unsigned i = 0; i < NOBJ; i++) {
                size_t count = 0;
                snprintf(name, sizeof(name), "obj%u", i);
                struct rec *p = mseg_find(s, name, MSEG_TYPE(struct rec), &count);
                if (!p || count != i % 7 + 1) {
                        fprintf(stderr, "child: %s not found or count %zu\n", name, count);
                        return 4;
                }
                const uint8_t *b = (const uint8_t *) p;
                for (size_t k = 0; k < count * sizeof(struct rec); k++)
                        if (b[k] != pattern(i, k)) {
                                fprintf(stderr, "child: %s byte %zu is %u, expected %u\n", name, k, b[k],
                                        pattern(i, k));
                                return 5;
                        }
        }
        /* A raw byte array, too. */
        size_t n = 0;
        uint8_t *blob = mseg_find(s, "blob", MSEG_TYPE(uint8_t), &n);
        if (!blob || n != 100000)
                return 6;
        for (size_t k = 0; k < n; k++)
                if (blob[k] != (uint8_t) (k * 31))
                        return 7;
        /* Change them; the parent checks. */
        for (unsigned i = 0; i < NOBJ; i++) {
                snprintf(name, sizeof(name), "obj%u", i);
                struct rec *p = mseg_find(s, name, MSEG_TYPE(struct rec), NULL);
                p->index = 1000000 + i;
        }
        uint64_t *answer = mseg_construct(s, "from-child", MSEG_TYPE(uint64_t), 1, NULL, NULL);
        if (!answer)
                return 8;
        *answer = 42;
        mseg_close(s);
        return 0;
}

static int fill(void *elem, size_t index, void *arg) {
        unsigned obj = *(unsigned *) arg;
        uint8_t *b = elem;
        for (size_t k = 0; k < sizeof(struct rec); k++)
                b[k] = pattern(obj, index * sizeof(struct rec) + k);
        return 0;
}

int main(int argc, char **argv) {
        struct msegd d = { 0 };
        struct mseg_options o = { .size = 8 << 20 };
        char name[32];
        mseg *s;

        if (argc > 1 && strcmp(argv[1], "--child") == 0)
                return child_main();
        alarm(120);
        msegd_start(&d, NULL);
        ASSERT_OK(mseg_open(&s, "share", MSEG_CREATE_ONLY, &o));
        for (unsigned i = 0; i < NOBJ; i++) {
                snprintf(name, sizeof(name), "obj%u", i);
                ASSERT_NOT_NULL(mseg_construct(s, name, MSEG_TYPE(struct rec), i % 7 + 1, fill, &i));
        }
        uint8_t *blob = mseg_construct(s, "blob", MSEG_TYPE(uint8_t), 100000, NULL, NULL);
        ASSERT_NOT_NULL(blob);
        for (size_t k = 0; k < 100000; k++)
                blob[k] = (uint8_t) (k * 31);

        pid_t pid = fork();
        if (pid == 0) {
                execl("/proc/self/exe", argv[0], "--child", (char *) NULL);
                _exit(127);
        }
        ASSERT_CHILD_OK(pid);

        for (unsigned i = 0; i < NOBJ; i++) {
                snprintf(name, sizeof(name), "obj%u", i);
                struct rec *p = mseg_find(s, name, MSEG_TYPE(struct rec), NULL);
                ASSERT_NOT_NULL(p);
                ASSERT_EQ(p->index, 1000000 + i);
        }
        uint64_t *answer = mseg_find(s, "from-child", MSEG_TYPE(uint64_t), NULL);
        ASSERT_NOT_NULL(answer);
        ASSERT_EQ(*answer, 42);
        ASSERT_OK(mseg_check(s));
        mseg_close(s);
        ASSERT_OK(mseg_remove("share", NULL));
        msegd_stop(&d);
        msegd_cleanup(&d);
        printf("ok\n");
        return 0;
}
