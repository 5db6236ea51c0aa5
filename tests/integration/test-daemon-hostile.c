/* SPDX-License-Identifier: MIT */
/*
 * test-daemon-hostile — what a hostile or broken client can send msegd over
 * a raw socket. After each case msegd must still serve a normal client, and
 * hold exactly as many descriptors as before (counted in /proc/PID/fd): no
 * crash, no stall of others, no leak.
 *
 * Cases: not JSON; truncated JSON; a 1 MiB packet; deep nesting; wrong
 * types; unknown fields; an unknown op; duplicate keys; overlong and empty
 * names; a request before hello; a wrong protocol version; an empty packet;
 * descriptors sent by the client (few, and more than fit); a client that
 * connects and never speaks (closed after the handshake timeout, while
 * others are served); a client that never reads its replies; 1,000
 * connections at once.
 */
#include <sys/mman.h>

#include "msegd-harness.h"

static struct msegd d;
static int baseline;
static char buf[70000];

/* A normal client still works: create, allocate, find, remove. */
static void normal_client(const char *after) {
        struct mseg_options o = { .size = 1 << 20 };
        mseg *s;
        uint64_t t0 = h_now_ms();
        int r;

        r = mseg_open(&s, "normal", MSEG_CREATE_ONLY, &o);
        if (r < 0) {
                h_print_log(&d);
                FAIL("after %s: normal open: %s (%s)", after, mseg_strerror(r), mseg_last_error());
        }
        uint64_t *v = mseg_construct(s, "v", MSEG_TYPE(uint64_t), 1, NULL, NULL);
        ASSERT_NOT_NULL(v);
        mseg_close(s);
        ASSERT_OK(mseg_remove("normal", NULL));
        if (h_now_ms() - t0 > 3000)
                FAIL("after %s: a normal client waited %llu ms", after, (unsigned long long) (h_now_ms() - t0));
}

static void check_alive(const char *after) {
        normal_client(after);
        h_expect_fds(&d, baseline, after);
}

/* Send @msg on a fresh connection (after hello if @hello) and return the
 * reply, or "" if the connection was closed without one. */
static const char *exchange(const char *msg, size_t len, bool hello) {
        int fd = hello ? h_connect_hello(&d) : h_connect(&d);
        ssize_t n;

        if (h_send(fd, msg, len) < 0) {
                close(fd);
                return "";
        }
        n = h_recv(fd, buf, sizeof(buf), 5000);
        if (n == -ETIMEDOUT)
                FAIL("no reply to %.60s", msg);
        close(fd);
        return n > 0 ? buf : "";
}

static void expect_error(const char *msg, bool hello, const char *code, const char *what) {
        const char *rep = exchange(msg, strlen(msg), hello);
        char want[64];

        snprintf(want, sizeof(want), "\"code\":\"%s\"", code);
        if (!strstr(rep, want))
                FAIL("%s: expected %s, got: %s", what, code, rep);
        check_alive(what);
}

/* The connection survives an error with an id: a valid request works after. */
static void expect_error_then_ok_len(const char *msg, size_t len, const char *code, const char *what) {
        int fd = h_connect_hello(&d);
        char want[64];
        ssize_t n;

        ASSERT_OK(h_send(fd, msg, len));
        n = h_recv(fd, buf, sizeof(buf), 5000);
        snprintf(want, sizeof(want), "\"code\":\"%s\"", code);
        if (n <= 0 || !strstr(buf, want))
                FAIL("%s: expected %s, got (%zd) %s", what, code, n, n > 0 ? buf : "");
        ASSERT_OK(h_send_str(fd, "{\"id\":77,\"op\":\"status\"}"));
        n = h_recv(fd, buf, sizeof(buf), 5000);
        if (n <= 0 || !strstr(buf, "\"id\":77") || !strstr(buf, "\"result\""))
                FAIL("%s: connection unusable after the error: %s", what, n > 0 ? buf : "");
        close(fd);
        check_alive(what);
}

static void expect_error_then_ok(const char *msg, const char *code, const char *what) {
        expect_error_then_ok_len(msg, strlen(msg), code, what);
}

static void send_fds(int nfds, const char *what) {
        int fd = h_connect_hello(&d), fds[16];
        union {
                struct cmsghdr h;
                char space[CMSG_SPACE(sizeof(int) * 16)];
        } ctl;
        const char *msg = "{\"id\":5,\"op\":\"status\"}";
        struct iovec iov = { .iov_base = (void *) msg, .iov_len = strlen(msg) };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space,
                            .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t) nfds) };
        struct cmsghdr *c;
        ssize_t n;

        for (int i = 0; i < nfds; i++)
                fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        memset(&ctl, 0, sizeof(ctl));
        c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t) nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t) nfds);
        n = sendmsg(fd, &m, MSG_NOSIGNAL);
        for (int i = 0; i < nfds; i++)
                close(fds[i]);
        if (n < 0) {
                /* Linux 6.16+: msegd set SO_PASSRIGHTS=0, the kernel refuses. */
                if (errno != EPERM)
                        FAIL("%s: sendmsg: %s", what, strerror(errno));
        } else {
                n = h_recv(fd, buf, sizeof(buf), 5000);
                if (n > 0 && !strstr(buf, "\"error\""))
                        FAIL("%s: descriptors were accepted: %s", what, buf);
        }
        close(fd);
        check_alive(what);
}

static void test_silent_client(void) {
        int silent = h_connect(&d);
        uint64_t t0 = h_now_ms();
        ssize_t n;

        /* Others are served while it sits there. */
        normal_client("a silent client connected");
        /* msegd closes it after the handshake timeout (1 s in this test). */
        n = h_recv(silent, buf, sizeof(buf), 10000);
        if (n != 0)
                FAIL("silent client: expected EOF from msegd, got %zd", n);
        if (h_now_ms() - t0 < 500)
                FAIL("silent client closed too early (%llu ms)", (unsigned long long) (h_now_ms() - t0));
        close(silent);
        check_alive("a silent client");
}

static void test_no_reader(void) {
        int fd = h_connect_hello(&d);
        const char *msg = "{\"id\":1,\"op\":\"status\"}";
        int sent = 0;

        /* Fill both directions: msegd must stop reading this client, not
         * block, and serve the others. */
        for (int i = 0; i < 100000; i++) {
                if (send(fd, msg, strlen(msg), MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
                        break;
                sent++;
        }
        ASSERT(sent > 10);
        normal_client("a client that never reads");
        close(fd);
        check_alive("a client that never reads");
}

static void test_many_connections(void) {
        enum { N = 1000 };
        static int fds[N];

        h_raise_nofile(N + 200);
        if (h_nofile() < N + 100) {
                printf("(1,000 connections skipped: RLIMIT_NOFILE %llu)\n", (unsigned long long) h_nofile());
                return;
        }
        for (int i = 0; i < N; i++) {
                fds[i] = h_connect(&d);
                ASSERT_OK(h_send_str(fds[i], "{\"id\":1,\"op\":\"hello\",\"version\":1}"));
        }
        /* Every one is answered, and a normal client meanwhile too. */
        normal_client("1,000 connections");
        for (int i = 0; i < N; i++) {
                ssize_t n = h_recv(fds[i], buf, sizeof(buf), 10000);
                if (n <= 0 || !strstr(buf, "\"result\""))
                        FAIL("connection %d of %d: no hello reply (%zd)", i, N, n);
        }
        ASSERT_EQ(h_count_fds(d.pid), baseline + N);
        for (int i = 0; i < N; i++)
                close(fds[i]);
        check_alive("1,000 connections");
}

int main(void) {
        char *big;

        alarm(300);
        h_raise_nofile(4096);   /* before msegd starts: it inherits the limit */
        msegd_start(&d, "--handshake-timeout", "1", NULL);
        normal_client("start");
        baseline = h_settled_fds(&d);

        expect_error("hello world", false, "EBADMSG", "not JSON");
        expect_error("{\"id\":1,\"op\":\"hel", false, "EBADMSG", "truncated JSON");
        expect_error("[1,2,3]", false, "EBADMSG", "an array");
        expect_error("{\"op\":\"hello\",\"version\":1}", false, "EBADMSG", "no id");
        expect_error("{\"id\":-5,\"op\":\"hello\",\"version\":1}", false, "EBADMSG", "negative id");
        expect_error("{\"id\":1,\"op\":\"status\"}", false, "EPROTO", "a request before hello");
        expect_error("{\"id\":1,\"op\":\"hello\",\"version\":99}", false, "MSEG_E_VERSION", "a wrong version");
        expect_error_then_ok("{\"id\":1,\"op\":\"hello\",\"version\":\"1\"}", "EBADMSG", "a string version");
        expect_error_then_ok("{\"id\":1,\"op\":\"create\",\"name\":5,\"size\":1048576}", "EBADMSG", "a number name");
        expect_error_then_ok("{\"id\":1,\"op\":\"create\",\"name\":\"x\",\"size\":\"big\"}", "EBADMSG",
                             "a string size");
        expect_error_then_ok("{\"id\":1,\"op\":\"create\",\"name\":\"x\",\"size\":-1}", "EINVAL", "a negative size");
        expect_error_then_ok("{\"id\":1,\"op\":\"create\",\"name\":\"x\",\"size\":1e6}", "EBADMSG", "a real size");
        expect_error_then_ok("{\"id\":1,\"op\":\"open\",\"name\":\"x\",\"read_only\":1}", "EBADMSG",
                             "an integer bool");
        expect_error_then_ok("{\"id\":1,\"op\":\"open\",\"name\":\"x\",\"color\":\"red\"}", "EBADMSG",
                             "an unknown field");
        /* Errors the parser finds before any id can be read: an error
         * reply with "id": null, and the connection is closed. */
        expect_error("{\"id\":1,\"op\":\"open\",\"name\":\"x\",\"name\":\"y\"}", true, "EBADMSG",
                     "duplicate keys");
        expect_error_then_ok("{\"id\":1,\"op\":\"format-disk\"}", "EOPNOTSUPP", "an unknown op");
        expect_error_then_ok("{\"id\":1,\"op\":\"open\",\"name\":\"\"}", "EINVAL", "an empty name");
        expect_error_then_ok("{\"id\":1,\"op\":\"open\",\"name\":\"a/b\"}", "EINVAL", "a name with /");
        expect_error("{\"id\":1,\"op\":\"open\",\"name\":\"a\\u0000b\"}", true, "EBADMSG", "a NUL in a name");
        expect_error_then_ok("{\"id\":1,\"op\":\"create\",\"name\":\"m\",\"size\":1048576,\"mode\":4095}", "EINVAL",
                             "a mode beyond 0777");
        expect_error("{\"id\":1,\"op\":\"create\",\"name\":\"m\",\"size\":99999999999999999999}", true,
                     "EBADMSG", "an integer overflow");
        expect_error_then_ok("{\"id\":1,\"op\":\"detach\",\"attachment\":0}", "EINVAL", "attachment 0");
        {
                char name[400], msg[600];
                memset(name, 'x', 300);
                name[300] = '\0';
                snprintf(msg, sizeof(msg), "{\"id\":1,\"op\":\"open\",\"name\":\"%s\"}", name);
                expect_error_then_ok(msg, "ENAMETOOLONG", "a 300-byte name");
        }
        /* A NUL after the document. */
        {
                static const char msg[] = "{\"id\":1,\"op\":\"status\"}";
                int fd = h_connect_hello(&d);
                ASSERT_OK(h_send(fd, msg, sizeof(msg)));
                ssize_t n = h_recv(fd, buf, sizeof(buf), 5000);
                if (n <= 0 || !strstr(buf, "EBADMSG"))
                        FAIL("trailing NUL: %s", n > 0 ? buf : "");
                close(fd);
                check_alive("a trailing NUL");
        }
        /* A detach of an unknown attachment is ignored, without a reply. */
        {
                int fd = h_connect_hello(&d);
                ASSERT_OK(h_send_str(fd, "{\"id\":1,\"op\":\"detach\",\"attachment\":12345}"));
                ASSERT_OK(h_send_str(fd, "{\"id\":2,\"op\":\"status\"}"));
                ssize_t n = h_recv(fd, buf, sizeof(buf), 5000);
                if (n <= 0 || !strstr(buf, "\"id\":2"))
                        FAIL("unknown detach: expected only the status reply, got %s", n > 0 ? buf : "");
                close(fd);
                check_alive("an unknown detach");
        }

        /* Deep nesting, as the whole packet and inside a field. */
        big = malloc(1 << 20);
        ASSERT_NOT_NULL(big);
        memset(big, '[', 60000);
        big[60000] = '\0';
        expect_error(big, false, "EBADMSG", "60,000 nested arrays");
        for (int depth = 100; depth <= 3000; depth += 2900) {
                /* 100 levels parse and fail the schema (the id is echoed);
                 * 3,000 exceed the parser's depth cap (id null, closed). */
                size_t n = 0;
                n += (size_t) sprintf(big, "{\"id\":3,\"op\":\"hello\",\"version\":1,\"features\":");
                for (int i = 0; i < depth; i++)
                        big[n++] = '[';
                for (int i = 0; i < depth; i++)
                        big[n++] = ']';
                big[n++] = '}';
                big[n] = '\0';
                const char *rep = exchange(big, n, false);
                if (!strstr(rep, depth < 2048 ? "\"id\":3" : "\"id\":null") || !strstr(rep, "\"error\""))
                        FAIL("features nested %d deep: %s", depth, rep);
                check_alive("nested features");
        }
        /* A 1 MiB packet: the kernel refuses it (EMSGSIZE), or msegd sees
         * MSG_TRUNC and closes the connection. */
        {
                int fd = h_connect_hello(&d), sz = 4 << 20;
                setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz));
                memset(big, ' ', 1 << 20);
                memcpy(big, "{\"id\":1,\"op\":\"status\"}", 22);
                if (h_send(fd, big, 1 << 20) == 0) {
                        ssize_t n = h_recv(fd, buf, sizeof(buf), 5000);
                        if (n != 0)
                                FAIL("1 MiB packet: expected the connection closed, got %zd", n);
                }
                close(fd);
                check_alive("a 1 MiB packet");
        }
        /* Just over the limit: 64 KiB + 1. */
        {
                int fd = h_connect_hello(&d);
                memset(big, ' ', 65537);
                memcpy(big, "{\"id\":1,\"op\":\"status\"}", 22);
                ASSERT_OK(h_send(fd, big, 65537));
                ssize_t n = h_recv(fd, buf, sizeof(buf), 5000);
                if (n != 0)
                        FAIL("65537-byte packet: expected the connection closed, got %zd", n);
                close(fd);
                check_alive("a 65537-byte packet");
        }
        /* Exactly 64 KiB of valid JSON (padded with spaces) is served. */
        {
                int fd = h_connect_hello(&d);
                memset(big, ' ', 65536);
                memcpy(big, "{\"id\":9,\"op\":\"status\"}", 22);
                ASSERT_OK(h_send(fd, big, 65536));
                ssize_t n = h_recv(fd, buf, sizeof(buf), 5000);
                if (n <= 0 || !strstr(buf, "\"id\":9"))
                        FAIL("65536-byte packet not served: %s", n > 0 ? buf : "");
                close(fd);
        }
        free(big);
        /* An empty packet reads as end of stream: msegd closes. */
        {
                int fd = h_connect_hello(&d);
                ASSERT(send(fd, "", 0, MSG_NOSIGNAL) == 0);
                ssize_t n = h_recv(fd, buf, sizeof(buf), 5000);
                if (n != 0)
                        FAIL("empty packet: expected the connection closed, got %zd: %s", n, n > 0 ? buf : "");
                close(fd);
                check_alive("an empty packet");
        }
        send_fds(3, "3 descriptors");
        send_fds(12, "12 descriptors (more than msegd makes room for)");
        test_silent_client();
        test_no_reader();
        test_many_connections();

        msegd_stop(&d);
        msegd_cleanup(&d);
        printf("ok\n");
        return 0;
}
