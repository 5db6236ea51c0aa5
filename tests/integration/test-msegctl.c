/* SPDX-License-Identifier: MIT */
/*
 * test-msegctl — msegctl against a real msegd: each command's output (human
 * and --json) and its exit status: 0 success, 1 the operation failed (no
 * such segment, exists, msegd not running, damage found), 2 usage error.
 */
#include "msegd-harness.h"

static char out[1 << 16];
static const char *sock;

/* Run msegctl with @argv (NULL-terminated, without the program name);
 * stdout goes to out[]; returns the exit status. */
static int ctl(const char *const *args) {
        const char *argv[32];
        int p[2], st, argc = 0;
        ssize_t n, total = 0;
        pid_t pid;
        const char *exe = getenv("MSEGCTL");

        if (!exe) {
                printf("MSEGCTL not set\n");
                exit(TEST_SKIP);
        }
        argv[argc++] = exe;
        argv[argc++] = "--socket";
        argv[argc++] = sock;
        for (int i = 0; args[i]; i++)
                argv[argc++] = args[i];
        argv[argc] = NULL;
        ASSERT_OK(pipe(p));
        pid = fork();
        if (pid == 0) {
                dup2(p[1], STDOUT_FILENO);
                close(p[0]);
                close(p[1]);
                execv(exe, (char *const *) argv);
                _exit(127);
        }
        close(p[1]);
        while ((n = read(p[0], out + total, sizeof(out) - 1 - (size_t) total)) > 0)
                total += n;
        out[total] = '\0';
        close(p[0]);
        st = h_wait(pid);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

#define CTL(want, ...) do { const char *a_[] = { __VA_ARGS__, NULL }; int r_ = ctl(a_); \
        if (r_ != (want)) FAIL("msegctl %s: exit %d, expected %d; output:\n%s", a_[0], r_, want, out); } while (0)
#define OUT_HAS(s) do { if (!strstr(out, s)) FAIL("output lacks \"%s\":\n%s", s, out); } while (0)
#define OUT_LACKS(s) do { if (strstr(out, s)) FAIL("output has \"%s\":\n%s", s, out); } while (0)

struct point {
        double x, y;
};

int main(void) {
        struct msegd d = { 0 };
        mseg *s;

        alarm(120);
        msegd_start(&d, NULL);
        sock = d.sock;

        /* Usage errors: 2. */
        CTL(2, "frobnicate");
        CTL(2, "stat");
        CTL(2, "create", "x");                          /* no --size */
        CTL(2, "create", "x", "--size", "lots");
        CTL(2, "list", "extra");
        CTL(2, "stat", "x", "--size", "1M");            /* create's options elsewhere */
        CTL(2, "--bogus", "list");
        CTL(0, "--help");
        OUT_HAS("Exit status");

        CTL(0, "list");
        OUT_HAS("no segments");
        CTL(0, "--json", "list");
        OUT_HAS("{\"segments\":[]}");

        CTL(0, "create", "alpha", "--size", "1M", "--max-size", "4M", "--mode", "640");
        OUT_HAS("created alpha");
        CTL(1, "create", "alpha", "--size", "1M");      /* exists */
        CTL(0, "--json", "create", "beta", "--size", "2M", "--persistent");
        OUT_HAS("\"created\":{\"name\":\"beta\"");
        OUT_HAS("\"persistent\":true");

        CTL(0, "list");
        OUT_HAS("alpha");
        OUT_HAS("beta");
        OUT_HAS("persistent");
        CTL(0, "--json", "list");
        OUT_HAS("\"name\":\"alpha\"");
        OUT_HAS("\"max_size\":4194304");
        OUT_HAS("\"mode\":416");

        CTL(0, "stat", "alpha");
        OUT_HAS("max size: 4194304");
        OUT_HAS("mode:     0640");
        CTL(0, "--json", "stat", "alpha");
        OUT_HAS("\"size\":1048576");
        CTL(1, "stat", "nope");
        CTL(1, "--json", "stat", "nope");
        OUT_HAS("\"code\":\"ENOENT\"");

        /* Objects made through libmseg show up in `objects`. */
        ASSERT_OK(mseg_open(&s, "alpha", MSEG_OPEN_ONLY, NULL));
        ASSERT_NOT_NULL(mseg_construct(s, "origin", MSEG_TYPE(struct point), 1, NULL, NULL));
        ASSERT_NOT_NULL(mseg_construct(s, "path", MSEG_TYPE(struct point), 100, NULL, NULL));
        ASSERT_NOT_NULL(mseg_construct_unique(s, MSEG_TYPE(int), 1, NULL, NULL));
        ASSERT_NOT_NULL(mseg_construct(s, "odd\nname", MSEG_TYPE(char), 3, NULL, NULL));
        CTL(0, "objects", "alpha");
        OUT_HAS("origin");
        OUT_HAS("struct point");
        OUT_HAS("unique");
        OUT_HAS("odd\\x0aname");                         /* escaped for the terminal */
        CTL(0, "--json", "objects", "alpha");
        OUT_HAS("\"name\":\"path\",\"kind\":\"named\",\"type\":\"struct point\",\"elem_size\":16");
        OUT_HAS("\"count\":100");
        OUT_HAS("\"odd\\u000aname\"");
        CTL(0, "stat", "alpha");
        OUT_HAS("clients:  1");

        CTL(0, "check", "alpha");
        OUT_HAS("ok");
        OUT_HAS("3 named");
        OUT_HAS("lock repairs");                /* the leak/repair figures of issue 6 */
        CTL(0, "--json", "check", "alpha");
        OUT_HAS("\"ok\":true");
        OUT_HAS("\"allocated_blocks\":");
        OUT_HAS("\"slots_dead\":0");
        /* Damage the header: check reports it and fails. */
        ((uint8_t *) mseg_address(s))[40] ^= 0xff;
        CTL(1, "check", "alpha");
        CTL(1, "--json", "check", "alpha");
        OUT_HAS("\"code\":\"MSEG_E_CORRUPT\"");
        ((uint8_t *) mseg_address(s))[40] ^= 0xff;
        CTL(0, "check", "alpha");
        mseg_close(s);

        CTL(0, "status");
        OUT_HAS("segments:  2 of");
        CTL(0, "--json", "status");
        OUT_HAS("\"limits\":{\"max_segments\":");

        CTL(0, "remove", "alpha");
        OUT_HAS("removed alpha");
        CTL(1, "remove", "alpha");
        CTL(0, "--json", "remove", "beta");
        OUT_HAS("{\"removed\":\"beta\"}");
        CTL(0, "list");
        OUT_HAS("no segments");

        msegd_stop(&d);
        /* msegd gone: 1, with a message naming the socket. */
        CTL(1, "list");
        CTL(1, "--json", "stat", "x");
        OUT_HAS("MSEG_E_NODAEMON");
        msegd_cleanup(&d);
        printf("ok\n");
        return 0;
}
