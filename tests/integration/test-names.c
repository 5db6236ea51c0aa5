/* SPDX-License-Identifier: MIT */
/*
 * test-names — segment names: 1 to 255 bytes of UTF-8 without NUL, no '/',
 * not "." or "..". Every rejected form is refused three ways, each with a
 * clear error:
 *   - by the shared check (mseg_proto_name_ok / _problem), directly;
 *   - by libmseg before anything is sent (mseg_open, mseg_stat,
 *     mseg_remove, mseg_grant: -EINVAL, or -ENAMETOOLONG over 255 bytes);
 *   - by msegd, sent raw over the socket past libmseg, in every request
 *     that carries a name (create, open, open-or-create, stat, remove,
 *     grow, grant, and list's "after"): EINVAL / ENAMETOOLONG with the
 *     request's id, the connection usable after; forms JSON cannot carry
 *     (\u0000, invalid UTF-8, a lone surrogate escape) are not JSON, so they
 *     get "id": null and the connection is closed.
 * Accepted forms at the edges (255 bytes, 255 bytes of 3-byte characters,
 * "...", ".x", 4-byte characters, and control characters, which JSON
 * carries escaped) create, stat, list and remove fine and come back byte
 * for byte; msegctl prints control characters escaped, and refuses a bad
 * name with exit status 1. msegd still serves, with no descriptor leaked,
 * after all of it.
 */
#include "msegd-harness.h"
#include "proto.h"

static struct msegd d;
static char buf[70000];

struct bad {
        const char *name;       /* NUL-terminated form (libmseg sees up to the NUL) */
        const char *json;       /* the JSON string literal, quotes included */
        int code;
        const char *why;        /* in the message */
};

static char long256[257], long255[256], utf8_255[256], utf8_258[259];
static char json256[300];

static const struct bad bads[] = {
        { "", "\"\"", -EINVAL, "empty" },
        { long256, json256, -ENAMETOOLONG, "255" },
        { "a/b", "\"a/b\"", -EINVAL, "'/'" },
        { "/", "\"/\"", -EINVAL, "'/'" },
        { "a/", "\"a\\/\"", -EINVAL, "'/'" },           /* an escaped slash is a slash */
        { ".", "\".\"", -EINVAL, "\".\"" },
        { "..", "\"..\"", -EINVAL, "\"..\"" },
};

/* Not representable in JSON: libmseg refuses them as not UTF-8, and the
 * raw packets are not JSON at all. */
static const struct {
        const char *name;
        const char *packet;     /* whole raw request */
} unsendable[] = {
        { "\xff", "{\"id\":1,\"op\":\"stat\",\"name\":\"\xff\"}" },
        { "over\xc0\xaflong", "{\"id\":1,\"op\":\"stat\",\"name\":\"over\xc0\xaflong\"}" },
        { "sur\xed\xa0\x80", "{\"id\":1,\"op\":\"stat\",\"name\":\"sur\xed\xa0\x80\"}" },
        { "cut\xe6\x97", "{\"id\":1,\"op\":\"stat\",\"name\":\"cut\xe6\x97\"}" },
        { NULL, "{\"id\":1,\"op\":\"stat\",\"name\":\"a\\u0000b\"}" },
        { NULL, "{\"id\":1,\"op\":\"stat\",\"name\":\"lone\\ud800\"}" },
        { NULL, "{\"id\":1,\"op\":\"stat\",\"name\":\"x\"}\0trailing" },
};

static void make_names(void) {
        memset(long256, 'n', 256);
        memset(long255, 'n', 255);
        for (int i = 0; i < 85; i++)
                memcpy(utf8_255 + 3 * i, "\xe6\x97\xa5", 3);    /* 85 x U+65E5 = 255 bytes */
        for (int i = 0; i < 86; i++)
                memcpy(utf8_258 + 3 * i, "\xe6\x97\xa5", 3);    /* 258 bytes */
        snprintf(json256, sizeof(json256), "\"%s\"", long256);
}

static void test_shared_check(void) {
        for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
                const char *why = mseg_proto_name_problem(bads[i].name, strlen(bads[i].name));
                if (!why || mseg_proto_name_ok(bads[i].name, strlen(bads[i].name)))
                        FAIL("name_ok accepts bad form %zu", i);
                if (!strstr(why, bads[i].why) && !(bads[i].code == -ENAMETOOLONG && strstr(why, "longer")))
                        FAIL("form %zu: reason \"%s\" does not say %s", i, why, bads[i].why);
        }
        for (size_t i = 0; i < sizeof(unsendable) / sizeof(unsendable[0]); i++)
                if (unsendable[i].name && mseg_proto_name_ok(unsendable[i].name, strlen(unsendable[i].name)))
                        FAIL("name_ok accepts invalid UTF-8 form %zu", i);
        ASSERT(!mseg_proto_name_ok("a\0b", 3));                 /* an embedded NUL */
        ASSERT(strstr(mseg_proto_name_problem("a\0b", 3), "NUL"));
        ASSERT(!mseg_proto_name_ok(utf8_258, 258));
        ASSERT(mseg_proto_name_ok(long255, 255));
        ASSERT(mseg_proto_name_ok(utf8_255, 255));
        ASSERT(mseg_proto_name_ok("...", 3));
        ASSERT(mseg_proto_name_ok(".x", 2));
        ASSERT(mseg_proto_name_ok("x.", 2));
        ASSERT(mseg_proto_name_ok("caf\xc3\xa9", 5));
        ASSERT(mseg_proto_name_ok("\xc2\xa0nbsp", 6));          /* U+00A0: the first after C1 */
        ASSERT(mseg_proto_name_ok("\xf0\x9f\x90\xa7", 4));      /* U+1F427 */
        ASSERT(mseg_proto_name_ok("sp ace", 6));
        ASSERT(mseg_proto_name_ok("new\nline\x01\x7f", 10));    /* control characters are allowed */
        ASSERT(mseg_proto_name_ok("c1\xc2\x85", 4));
}

static const char *const goods[] = { long255, utf8_255, "...", ".x", "x..", "caf\xc3\xa9", "\xf0\x9f\x90\xa7",
                                     "sp ace", "\xc2\xa0", "new\nline", "tab\t\x01\x1b[2J\x7f", "c1\xc2\x85\xc2\x9b" };

struct find {
        const char *name;
        bool found;
};

static int find_one(const struct mseg_segment_info *i, void *arg) {
        struct find *f = arg;

        if (strcmp(i->name, f->name) == 0)
                f->found = true;
        return 0;
}

static void test_libmseg(void) {
        struct mseg_options o = { .size = 1 << 20 };
        struct mseg_segment_info info;
        char tok[MSEG_TOKEN_MAX + 1];
        mseg *s;

        for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
                const char *n = bads[i].name;
                int r = mseg_open(&s, n, MSEG_CREATE_ONLY, &o);
                if (r != bads[i].code)
                        FAIL("mseg_open of bad form %zu: %d (%s), expected %d", i, r, mseg_last_error(), bads[i].code);
                if (bads[i].code == -EINVAL && !strstr(mseg_last_error(), bads[i].why))
                        FAIL("form %zu: \"%s\" does not say %s", i, mseg_last_error(), bads[i].why);
                ASSERT_ERR(mseg_open(&s, n, MSEG_OPEN_ONLY, NULL), bads[i].code);
                ASSERT_ERR(mseg_open(&s, n, MSEG_OPEN_OR_CREATE, &o), bads[i].code);
                ASSERT_ERR(mseg_stat(n, NULL, &info), bads[i].code);
                ASSERT_ERR(mseg_remove(n, NULL), bads[i].code);
                ASSERT_ERR(mseg_grant(n, MSEG_READ_ONLY, 60, NULL, tok, sizeof(tok), NULL), bads[i].code);
        }
        for (size_t i = 0; i < sizeof(unsendable) / sizeof(unsendable[0]); i++) {
                if (!unsendable[i].name)
                        continue;
                ASSERT_ERR(mseg_open(&s, unsendable[i].name, MSEG_CREATE_ONLY, &o), -EINVAL);
                ASSERT(strstr(mseg_last_error(), "UTF-8"));
                ASSERT_ERR(mseg_stat(unsendable[i].name, NULL, &info), -EINVAL);
        }
        ASSERT_ERR(mseg_open(&s, utf8_258, MSEG_CREATE_ONLY, &o), -ENAMETOOLONG);
        ASSERT_ERR(mseg_open(&s, NULL, MSEG_CREATE_ONLY, &o), -EINVAL);

        /* The accepted edges work end to end. */
        for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
                ASSERT_OK(mseg_open(&s, goods[i], MSEG_CREATE_ONLY, &o));
                mseg_close(s);
                ASSERT_OK(mseg_stat(goods[i], NULL, &info));
                ASSERT(strcmp(info.name, goods[i]) == 0);
                struct find f = { goods[i], false };
                ASSERT_OK(mseg_list(NULL, find_one, &f));
                ASSERT(f.found);
                ASSERT_OK(mseg_grant(goods[i], MSEG_READ_ONLY, 60, NULL, tok, sizeof(tok), NULL));
                ASSERT_OK(mseg_remove(goods[i], NULL));
        }
}

/* A raw request over a connection that said hello; returns the reply. */
static const char *raw(int fd, const char *msg, size_t len) {
        ssize_t n;

        ASSERT_OK(h_send(fd, msg, len));
        n = h_recv(fd, buf, sizeof(buf), 5000);
        if (n == -ETIMEDOUT)
                FAIL("no reply to %.80s", msg);
        return n > 0 ? buf : "";
}

static void expect_code(int fd, const char *req, int code, const char *what) {
        const char *rep = raw(fd, req, strlen(req));
        char want[64];

        snprintf(want, sizeof(want), "\"code\":\"%s\"", mseg_proto_code_name(code));
        if (!strstr(rep, want) || !strstr(rep, "\"id\":5"))
                FAIL("%s: %.100s: expected %s with id 5, got: %s", what, req, want, rep);
}

static void test_raw(void) {
        /* Each request around the name: what comes before, what after. */
        static const char *const templates[][2] = {
                { "{\"id\":5,\"op\":\"create\",\"name\":", ",\"size\":1048576}" },
                { "{\"id\":5,\"op\":\"open\",\"name\":", "}" },
                { "{\"id\":5,\"op\":\"open-or-create\",\"name\":", ",\"size\":1048576}" },
                { "{\"id\":5,\"op\":\"stat\",\"name\":", "}" },
                { "{\"id\":5,\"op\":\"remove\",\"name\":", "}" },
                { "{\"id\":5,\"op\":\"grow\",\"name\":", ",\"size\":2097152}" },
                { "{\"id\":5,\"op\":\"grant\",\"name\":", ",\"rights\":\"read\",\"ttl\":60}" },
                { "{\"id\":5,\"op\":\"list\",\"after\":", "}" },
        };
        int before = h_settled_fds(&d);
        char req[1024];
        int fd = h_connect_hello(&d);

        for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++)
                for (size_t k = 0; k < sizeof(templates) / sizeof(templates[0]); k++) {
                        snprintf(req, sizeof(req), "%s%s%s", templates[k][0], bads[i].json, templates[k][1]);
                        expect_code(fd, req, bads[i].code, bads[i].why);
                        /* The reason is in the message (quotes are escaped in JSON). */
                        if (bads[i].code == -EINVAL && bads[i].why[0] != '"' && !strstr(buf, bads[i].why))
                                FAIL("%s: message does not say %s: %s", req, bads[i].why, buf);
                }
        /* Still usable after all those errors. */
        expect_code(fd, "{\"id\":5,\"op\":\"stat\",\"name\":\"nonexistent\"}", -ENOENT, "a good name");
        close(fd);

        /* What JSON cannot carry: not JSON, "id": null, connection closed. */
        for (size_t i = 0; i < sizeof(unsendable) / sizeof(unsendable[0]); i++) {
                const char *p = unsendable[i].packet;
                size_t len = strlen(p);
                ssize_t n;
                if (i == sizeof(unsendable) / sizeof(unsendable[0]) - 1)
                        len += 1 + strlen("trailing");          /* a NUL and bytes after the object */
                fd = h_connect_hello(&d);
                const char *rep = raw(fd, p, len);
                if (!strstr(rep, "\"id\":null") || !strstr(rep, "\"code\":\"EBADMSG\""))
                        FAIL("unsendable form %zu: expected id null and EBADMSG, got: %s", i, rep);
                n = h_recv(fd, buf, sizeof(buf), 5000);
                if (n != 0)
                        FAIL("unsendable form %zu: connection not closed (%zd)", i, n);
                close(fd);
        }
        h_expect_fds(&d, before, "the raw names");
}

static void test_msegctl(void) {
        const char *ctl = getenv("MSEGCTL");
        char cmd[1024];
        int st;

        if (!ctl || !*ctl) {
                printf("(msegctl checks skipped: MSEGCTL not set)\n");
                return;
        }
        snprintf(cmd, sizeof(cmd), "'%s' create 'a/b' --size 1M 2>%s/err >/dev/null", ctl, d.dir);
        st = system(cmd);
        ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        snprintf(cmd, sizeof(cmd), "grep -q \"contains '/'\" %s/err", d.dir);
        ASSERT_EQ(system(cmd), 0);
        snprintf(cmd, sizeof(cmd), "'%s' --json create '..' --size 1M 2>/dev/null | grep -q '\"code\":\"EINVAL\"'",
                 ctl);
        ASSERT_EQ(system(cmd), 0);
        snprintf(cmd, sizeof(cmd), "'%s' create '.' --size 1M >/dev/null 2>&1", ctl);
        st = system(cmd);
        ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        /* Control characters come out escaped, on the terminal and in JSON. */
        struct mseg_options o = { .size = 1 << 20 };
        mseg *s;
        ASSERT_OK(mseg_open(&s, "esc\x1b[2J\nx", MSEG_CREATE_ONLY, &o));
        mseg_close(s);
        snprintf(cmd, sizeof(cmd), "'%s' list | grep -q 'esc\\\\x1b\\[2J\\\\x0ax'", ctl);
        ASSERT_EQ(system(cmd), 0);
        snprintf(cmd, sizeof(cmd), "'%s' --json list | grep -q 'esc\\\\u001b\\[2J\\\\u000ax'", ctl);
        ASSERT_EQ(system(cmd), 0);
        snprintf(cmd, sizeof(cmd), "'%s' list | grep -c . | grep -qx 2", ctl);      /* header + one line */
        ASSERT_EQ(system(cmd), 0);
        ASSERT_OK(mseg_remove("esc\x1b[2J\nx", NULL));
}

int main(void) {
        alarm(300);
        make_names();
        test_shared_check();
        msegd_start(&d, NULL);
        test_libmseg();
        test_raw();
        test_msegctl();
        /* msegd serves a normal client still. */
        struct mseg_options o = { .size = 1 << 20 };
        mseg *s;
        ASSERT_OK(mseg_open(&s, "after-all", MSEG_CREATE_ONLY, &o));
        mseg_close(s);
        ASSERT_OK(mseg_remove("after-all", NULL));
        msegd_stop(&d);
        msegd_cleanup(&d);
        printf("ok\n");
        return 0;
}
