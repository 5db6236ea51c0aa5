/* SPDX-License-Identifier: MIT */
/*
 * msegd-harness.h — start a real msegd on a temporary socket for a test,
 * talk to it over a raw socket, count its descriptors, stop it.
 *
 * Each test runs msegd from $MSEGD (set by meson) in the foreground, in a
 * fresh directory under /tmp, with its stderr in a log file that is printed
 * when something fails. Stopping sends SIGTERM and requires exit status 0:
 * msegd exits 0 only after a clean shutdown with uv_loop_close() == 0, and
 * under AddressSanitizer a leak makes it fail. msegd_kill() is the crash
 * instead (SIGKILL, no status required); msegd_start() again on the same
 * struct restarts on the same socket and state directory. An alarm bounds
 * every test; msegd dies with the test process however that ends, and never
 * inherits a test hook armed (MSEG_TEST_HOOK) for the test's own workers.
 * The crash tests (crash-harness.h) use this too.
 */
#ifndef MSEGD_HARNESS_H
#define MSEGD_HARNESS_H

#include <dirent.h>
#include <stdbool.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

struct msegd {
        pid_t pid;
        char dir[64];
        char sock[96];
        char state[96];
        char log[96];
};

static inline uint64_t h_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static inline void h_sleep_ms(unsigned ms) {
        struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static inline void h_print_log(const struct msegd *d) {
        char buf[4096];
        ssize_t n;
        int fd = open(d->log, O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                return;
        fprintf(stderr, "---- msegd log (%s) ----\n", d->log);
        while ((n = read(fd, buf, sizeof(buf))) > 0)
                fwrite(buf, 1, (size_t) n, stderr);
        fprintf(stderr, "---- end of msegd log ----\n");
        close(fd);
}

static inline const char *h_msegd_path(void) {
        const char *p = getenv("MSEGD");
        if (!p || !*p) {
                fprintf(stderr, "MSEGD is not set: run through meson test\n");
                exit(TEST_SKIP);
        }
        return p;
}

/* Can something be connected to at @path? */
static inline bool h_can_connect(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0), r;

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        r = connect(fd, (struct sockaddr *) &sa, sizeof(sa));
        close(fd);
        return r == 0;
}

/* If a test fails (exit) while msegd runs, stop it: meson waits for every
 * process holding the test's output. */
static pid_t h_running_msegd, h_msegd_owner;

static inline void h_kill_msegd(void) {
        if (h_running_msegd > 0 && getpid() == h_msegd_owner) {    /* not in forked children */
                kill(h_running_msegd, SIGKILL);
                waitpid(h_running_msegd, NULL, 0);
                h_running_msegd = 0;
        }
}

/* Start msegd in @d (a fresh directory unless @d->dir is already set, which
 * restarts on the same socket and state directory: msegd replaces the
 * socket file a killed msegd left) and wait until it accepts connections.
 * Extra arguments end with NULL; they come last, so they override the
 * defaults here. */
static inline void msegd_start(struct msegd *d, ...) {
        const char *argv[64];
        int argc = 0;
        va_list ap;
        uint64_t t0;

        if (!d->dir[0]) {
                snprintf(d->dir, sizeof(d->dir), "/tmp/mseg-test-XXXXXX");
                if (!mkdtemp(d->dir))
                        FAIL("mkdtemp: %s", strerror(errno));
                snprintf(d->sock, sizeof(d->sock), "%s/socket", d->dir);
                snprintf(d->state, sizeof(d->state), "%s/state", d->dir);
                snprintf(d->log, sizeof(d->log), "%s/msegd.log", d->dir);
                chmod(d->dir, 0755);    /* tests drop to other uids: they must reach the socket */
        }
        argv[argc++] = h_msegd_path();
        argv[argc++] = "--foreground";
        argv[argc++] = "--socket";
        argv[argc++] = d->sock;
        argv[argc++] = "--state-dir";
        argv[argc++] = d->state;
        argv[argc++] = "--log-level";
        argv[argc++] = "debug";
        va_start(ap, d);
        for (const char *a; (a = va_arg(ap, const char *)) && argc < 62;)
                argv[argc++] = a;
        va_end(ap);
        argv[argc] = NULL;

        d->pid = fork();
        if (d->pid < 0)
                FAIL("fork: %s", strerror(errno));
        if (d->pid == 0) {
                int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (fd >= 0) {
                        dup2(fd, STDERR_FILENO);
                        dup2(fd, STDOUT_FILENO);
                }
                unsetenv("MSEG_TEST_HOOK");
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                execv(argv[0], (char *const *) argv);
                fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
                _exit(127);
        }
        if (!h_running_msegd)
                atexit(h_kill_msegd);
        h_running_msegd = d->pid;
        h_msegd_owner = getpid();
        t0 = h_now_ms();
        while (!h_can_connect(d->sock)) {
                int st;
                if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
                        d->pid = 0;
                        h_running_msegd = -1;
                        h_print_log(d);
                        FAIL("msegd exited at start (status 0x%x)", st);
                }
                if (h_now_ms() - t0 > 20000) {
                        h_print_log(d);
                        FAIL("msegd did not listen within 20 s");
                }
                h_sleep_ms(5);
        }
        setenv("MSEG_SOCKET", d->sock, 1);
}

/* SIGTERM, and require a clean exit (status 0) within 20 s. */
static inline void msegd_stop(struct msegd *d) {
        uint64_t t0 = h_now_ms();
        int st = 0;

        if (d->pid <= 0)
                return;
        kill(d->pid, SIGCONT);
        kill(d->pid, SIGTERM);
        for (;;) {
                pid_t p = waitpid(d->pid, &st, WNOHANG);
                if (p == d->pid) {
                        h_running_msegd = -1;
                        break;
                }
                if (h_now_ms() - t0 > 20000) {
                        kill(d->pid, SIGKILL);
                        waitpid(d->pid, &st, 0);
                        h_running_msegd = -1;
                        h_print_log(d);
                        FAIL("msegd did not stop within 20 s of SIGTERM");
                }
                h_sleep_ms(5);
        }
        d->pid = 0;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                h_print_log(d);
                FAIL("msegd did not shut down cleanly: status 0x%x", st);
        }
}

/* SIGKILL: msegd crashes, whatever it was doing; no status is required.
 * Also what a test's exit handler calls to leave nothing running. */
static inline void msegd_kill(struct msegd *d) {
        if (d->pid <= 0)
                return;
        kill(d->pid, SIGKILL);
        while (waitpid(d->pid, NULL, 0) < 0 && errno == EINTR)
                ;
        d->pid = 0;
        h_running_msegd = -1;
}

/* Remove the test directory (msegd stopped). */
static inline void msegd_cleanup(struct msegd *d) {
        char cmd[512];

        if (!d->dir[0] || strncmp(d->dir, "/tmp/mseg-test-", 15) != 0)
                return;
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
        if (system(cmd) != 0)
                fprintf(stderr, "could not remove %s\n", d->dir);
        d->dir[0] = '\0';
}

/* Descriptors open in process @pid. */
static inline int h_count_fds(pid_t pid) {
        char path[64];
        struct dirent *e;
        int n = 0;
        DIR *dir;

        snprintf(path, sizeof(path), "/proc/%d/fd", (int) pid);
        dir = opendir(path);
        if (!dir)
                FAIL("opendir %s: %s", path, strerror(errno));
        while ((e = readdir(dir)))
                if (e->d_name[0] != '.')
                        n++;
        closedir(dir);
        return n;
}

/* msegd's descriptor count once it settles (connections that clients
 * closed are closed by msegd a moment later). */
static inline int h_settled_fds(const struct msegd *d) {
        int n = h_count_fds(d->pid), same = 0;

        while (same < 10) {
                h_sleep_ms(20);
                int m = h_count_fds(d->pid);
                same = m == n ? same + 1 : 0;
                n = m;
        }
        return n;
}

/* Wait (up to 5 s) until msegd holds exactly @want descriptors. */
static inline void h_expect_fds(const struct msegd *d, int want, const char *after) {
        uint64_t t0 = h_now_ms();
        int n;

        while ((n = h_count_fds(d->pid)) != want) {
                if (h_now_ms() - t0 > 5000) {
                        h_print_log(d);
                        FAIL("after %s msegd holds %d descriptors, expected %d", after, n, want);
                }
                h_sleep_ms(10);
        }
}

/* ---- raw protocol access ---- */

static inline int h_connect(const struct msegd *d) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

        if (fd < 0)
                FAIL("socket: %s", strerror(errno));
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", d->sock);
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                FAIL("connect %s: %s", d->sock, strerror(errno));
        return fd;
}

static inline int h_send(int fd, const void *buf, size_t len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        return n < 0 ? -errno : 0;
}

static inline int h_send_str(int fd, const char *s) {
        return h_send(fd, s, strlen(s));
}

/* Receive one packet within @ms: its length (NUL-terminated in @buf), 0 at
 * EOF, -ETIMEDOUT, or -errno. */
static inline ssize_t h_recv(int fd, char *buf, size_t cap, int ms) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        ssize_t n;
        int r = poll(&p, 1, ms);

        if (r == 0)
                return -ETIMEDOUT;
        if (r < 0)
                return -errno;
        n = recv(fd, buf, cap - 1, MSG_CMSG_CLOEXEC);
        if (n < 0)
                return -errno;
        buf[n] = '\0';
        return n;
}

/* Connect and complete the handshake. */
static inline int h_connect_hello(const struct msegd *d) {
        char buf[4096];
        int fd = h_connect(d);
        ssize_t n;

        ASSERT_OK(h_send_str(fd, "{\"id\":0,\"op\":\"hello\",\"version\":1}"));
        n = h_recv(fd, buf, sizeof(buf), 5000);
        if (n <= 0 || !strstr(buf, "\"result\""))
                FAIL("no hello reply (%zd): %s", n, n > 0 ? buf : "");
        return fd;
}

/* Raise RLIMIT_NOFILE (root may raise the hard limit too). */
static inline void h_raise_nofile(rlim_t want) {
        struct rlimit rl;

        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_max < want) {
                rl.rlim_max = want;
                rl.rlim_cur = want;
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
                        getrlimit(RLIMIT_NOFILE, &rl);
                        rl.rlim_cur = rl.rlim_max;
                        setrlimit(RLIMIT_NOFILE, &rl);
                }
        } else if (rl.rlim_cur < want) {
                rl.rlim_cur = want;
                setrlimit(RLIMIT_NOFILE, &rl);
        }
}

static inline rlim_t h_nofile(void) {
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        return rl.rlim_cur;
}

/* Wait for a child; returns its status. */
static inline int h_wait(pid_t pid) {
        int st;
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        FAIL("waitpid: %s", strerror(errno));
        return st;
}

#define ASSERT_CHILD_OK(pid) do { int st_ = h_wait(pid); \
        if (!WIFEXITED(st_) || WEXITSTATUS(st_) != 0) FAIL("child %d failed: status 0x%x", (int) (pid), st_); } while (0)

#endif /* MSEGD_HARNESS_H */
