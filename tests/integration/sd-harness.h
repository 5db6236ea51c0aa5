/* SPDX-License-Identifier: MIT */
/*
 * sd-harness.h — systemd's side of msegd's service-manager protocols, for
 * the test-systemd-* tests: what PID 1 does for a Type=notify service with
 * a socket unit and a descriptor store, in a few hundred lines.
 *
 *   - It owns the listening socket (as msegd.socket does), so clients that
 *     connect while msegd is down wait in the backlog.
 *   - It listens on a SOCK_DGRAM $NOTIFY_SOCKET with SO_PASSCRED (libsystemd
 *     may attach credentials; systemd checks the sender is the main pid)
 *     and records READY=1, STOPPING=1, STATUS=, WATCHDOG=1, every FDSTORE=1
 *     descriptor by its FDNAME (one entry per file, as systemd dedups), and
 *     honours FDSTOREREMOVE=1 by closing every entry of that name.
 *   - It starts msegd as systemd does: passed descriptors from fd 3, the
 *     listening socket first, then the store's; LISTEN_FDS, LISTEN_FDNAMES,
 *     and LISTEN_PID set in the child after fork (it is the child's pid).
 *
 * Every test using it is bounded by alarm(): on expiry, or at exit, the
 * msegd it started is killed and its temporary directory removed.
 */
#ifndef MSEG_SD_HARNESS_H
#define MSEG_SD_HARNESS_H

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#define SD_STORE_MAX 512
#define SD_FDS_PER_MSG 253      /* SCM_MAX_FD */

struct sd_entry {
        char name[256];
        int fd;
};

struct sd_mgr {
        pthread_mutex_t lock;           /* the reader thread vs the test */
        pthread_t reader;
        char dir[128];
        char sock_path[192], notify_path[192], log_path[192], state_dir[192];
        int listen_fd;
        int notify_fd;
        pid_t pid;                      /* msegd, 0 when not running */
        int exit_status;                /* of the last msegd that ended */
        uint64_t watchdog_usec;         /* WATCHDOG_USEC passed when nonzero */
        bool pass_socket;               /* pass listen_fd (else msegd binds sock_path) */
        bool foreground;                /* pass --foreground */
        /* what msegd said */
        unsigned nready, nstopping, nstatus, nwatchdog, nremoves, nforeign, ndatagrams;
        char status[256];
        struct timespec stopping_at;    /* kernel receive time (SO_TIMESTAMPNS) */
        struct sd_entry store[SD_STORE_MAX];
        unsigned nstore;
};

static struct sd_mgr *sd_current;
static pid_t sd_owner;                  /* forked children must not clean up */

static inline void sd_rmtree(const char *dir) {
        char cmd[300];

        if (!dir[0] || strncmp(dir, "/tmp/mseg-sd-", 13) != 0)
                return;
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
                fprintf(stderr, "cannot remove %s\n", dir);
}

static inline void sd_cleanup(void) {
        struct sd_mgr *m = sd_current;

        if (!m || getpid() != sd_owner)
                return;
        if (m->pid > 0) {
                kill(m->pid, SIGKILL);
                waitpid(m->pid, NULL, 0);
                m->pid = 0;
        }
        if (!getenv("MSEG_SD_KEEP"))
                sd_rmtree(m->dir);
}

static inline void sd_on_alarm(int sig) {
        static const char msg[] = "FAIL: test timed out\n";

        (void) sig;
        if (getpid() != sd_owner)
                _exit(1);
        if (sd_current && sd_current->pid > 0)
                kill(sd_current->pid, SIGKILL);
        (void) !write(2, msg, sizeof(msg) - 1);
        _exit(1);       /* the temporary directory stays for inspection */
}

static inline uint64_t sd_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static inline void *sd_reader(void *arg);

/* Was $MSEGD built with libsystemd (-Dsystemd)? Without it, msegd has no
 * socket activation, notify or store, and these tests skip. */
static inline bool sd_msegd_has_systemd(void) {
        const char *path = getenv("MSEGD");
        static char buf[1 << 16];
        static const char sym[] = "sd_pid_notify_with_fds";
        const size_t len = sizeof(sym) - 1;
        bool found = false;
        size_t have = 0;
        ssize_t n;
        int fd;

        if (!path || (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
                return false;
        while (!found && (n = read(fd, buf + have, sizeof(buf) - have)) > 0) {
                have += (size_t) n;
                found = memmem(buf, have, sym, len) != NULL;
                if (have > len) {
                        /* keep the tail: the name may straddle two reads */
                        memmove(buf, buf + have - len, len);
                        have = len;
                }
        }
        close(fd);
        return found;
}

#define SD_REQUIRE_SYSTEMD() do { if (!sd_msegd_has_systemd()) { \
        fprintf(stderr, "skip: msegd was built without libsystemd (-Dsystemd=disabled)\n"); \
        return TEST_SKIP; } } while (0)

/* Temporary directory, listening socket, notify socket, the reader thread;
 * alarm(@secs). */
static inline void sd_setup(struct sd_mgr *m, unsigned secs) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int one = 1;

        memset(m, 0, sizeof(*m));
        m->listen_fd = m->notify_fd = -1;
        m->pass_socket = true;
        m->foreground = true;
        snprintf(m->dir, sizeof(m->dir), "/tmp/mseg-sd-XXXXXX");
        ASSERT_NOT_NULL(mkdtemp(m->dir));
        chmod(m->dir, 0755);
        snprintf(m->sock_path, sizeof(m->sock_path), "%s/socket", m->dir);
        snprintf(m->notify_path, sizeof(m->notify_path), "%s/notify", m->dir);
        snprintf(m->log_path, sizeof(m->log_path), "%s/msegd.log", m->dir);
        snprintf(m->state_dir, sizeof(m->state_dir), "%s/state", m->dir);
        sd_current = m;
        sd_owner = getpid();
        atexit(sd_cleanup);
        signal(SIGALRM, sd_on_alarm);
        signal(SIGPIPE, SIG_IGN);
        alarm(secs);

        m->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        ASSERT(m->listen_fd >= 0);
        strcpy(sa.sun_path, m->sock_path);
        ASSERT_OK(bind(m->listen_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 ? -errno : 0);
        chmod(m->sock_path, 0666);
        ASSERT_OK(listen(m->listen_fd, 4096) < 0 ? -errno : 0);

        m->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ASSERT(m->notify_fd >= 0);
        strcpy(sa.sun_path, m->notify_path);
        ASSERT_OK(bind(m->notify_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 ? -errno : 0);
        ASSERT_OK(setsockopt(m->notify_fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0 ? -errno : 0);
        ASSERT_OK(setsockopt(m->notify_fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) < 0 ? -errno : 0);
        pthread_mutex_init(&m->lock, NULL);
        ASSERT_OK(-pthread_create(&m->reader, NULL, sd_reader, m));
}

static inline bool sd_same_file(int a, int b) {
        struct stat sa, sb;
        return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static inline void sd_store_add(struct sd_mgr *m, const char *name, int fd) {
        for (unsigned i = 0; i < m->nstore; i++)
                if (sd_same_file(m->store[i].fd, fd)) {
                        close(fd);      /* systemd: "Suppressing duplicate fd in fd store" */
                        return;
                }
        if (m->nstore == SD_STORE_MAX)
                FAIL("descriptor store full (%d)", SD_STORE_MAX);
        snprintf(m->store[m->nstore].name, sizeof(m->store[0].name), "%s", name);
        m->store[m->nstore++].fd = fd;
}

static inline unsigned sd_store_remove(struct sd_mgr *m, const char *name) {
        unsigned n = 0;

        for (unsigned i = 0; i < m->nstore;) {
                if (strcmp(m->store[i].name, name) == 0) {
                        close(m->store[i].fd);
                        m->store[i] = m->store[--m->nstore];
                        n++;
                } else {
                        i++;
                }
        }
        return n;
}

/* The store entry named @name, or NULL. */
static inline struct sd_entry *sd_store_find(struct sd_mgr *m, const char *name) {
        for (unsigned i = 0; i < m->nstore; i++)
                if (strcmp(m->store[i].name, name) == 0)
                        return &m->store[i];
        return NULL;
}

static inline void sd_datagram(struct sd_mgr *m, char *buf, size_t len, int *fds, unsigned nfds,
                               const struct ucred *cred, const struct timespec *ts) {
        char fdname[256] = "stored";
        bool fdstore = false, remove = false;

        m->ndatagrams++;
        /* NotifyAccess=main: systemd ignores anyone else. */
        if (!cred || cred->pid != m->pid) {
                m->nforeign++;
                for (unsigned i = 0; i < nfds; i++)
                        close(fds[i]);
                return;
        }
        buf[len] = '\0';
        for (char *line = buf, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                if (strcmp(line, "READY=1") == 0)
                        m->nready++;
                else if (strcmp(line, "STOPPING=1") == 0) {
                        m->nstopping++;
                        if (ts)
                                m->stopping_at = *ts;
                } else if (strcmp(line, "WATCHDOG=1") == 0)
                        m->nwatchdog++;
                else if (strncmp(line, "STATUS=", 7) == 0) {
                        m->nstatus++;
                        snprintf(m->status, sizeof(m->status), "%s", line + 7);
                } else if (strcmp(line, "FDSTORE=1") == 0)
                        fdstore = true;
                else if (strcmp(line, "FDSTOREREMOVE=1") == 0)
                        remove = true;
                else if (strncmp(line, "FDNAME=", 7) == 0)
                        snprintf(fdname, sizeof(fdname), "%s", line + 7);
        }
        if (remove) {
                sd_store_remove(m, fdname);
                m->nremoves++;
        }
        for (unsigned i = 0; i < nfds; i++) {
                if (fdstore)
                        sd_store_add(m, fdname, fds[i]);
                else
                        close(fds[i]);  /* systemd closes descriptors sent without FDSTORE=1 */
        }
}

/* Receive and process every queued datagram; the caller holds m->lock. */
static inline void sd_drain(struct sd_mgr *m) {
        for (;;) {
                char buf[4096];
                union {
                        struct cmsghdr align;
                        char space[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * SD_FDS_PER_MSG) +
                                   CMSG_SPACE(sizeof(struct timespec))];
                } ctl;
                struct iovec iov = { buf, sizeof(buf) - 1 };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space,
                                     .msg_controllen = sizeof(ctl.space) };
                struct ucred cred, *credp = NULL;
                struct timespec ts, *tsp = NULL;
                int fds[SD_FDS_PER_MSG];
                unsigned nfds = 0;
                ssize_t n = recvmsg(m->notify_fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);

                if (n < 0) {
                        if (errno != EAGAIN)
                                FAIL("recvmsg on the notify socket: %s", strerror(errno));
                        return;
                }
                for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                        if (c->cmsg_level != SOL_SOCKET)
                                continue;
                        if (c->cmsg_type == SCM_RIGHTS) {
                                unsigned k = (unsigned) ((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                                memcpy(fds + nfds, CMSG_DATA(c), k * sizeof(int));
                                nfds += k;
                        } else if (c->cmsg_type == SCM_CREDENTIALS) {
                                memcpy(&cred, CMSG_DATA(c), sizeof(cred));
                                credp = &cred;
                        } else if (c->cmsg_type == SCM_TIMESTAMPNS) {
                                memcpy(&ts, CMSG_DATA(c), sizeof(ts));
                                tsp = &ts;
                        }
                }
                if (mh.msg_flags & (MSG_CTRUNC | MSG_TRUNC))
                        FAIL("notify datagram truncated (flags 0x%x)", mh.msg_flags);
                sd_datagram(m, buf, (size_t) n, fds, nfds, credp, tsp);
        }
}

/* Like PID 1, read notifications as they come: a unix datagram socket
 * queues only net.unix.max_dgram_qlen (10) messages, and a sender blocks
 * beyond that. */
static inline void *sd_reader(void *arg) {
        struct sd_mgr *m = arg;

        for (;;) {
                struct pollfd p = { m->notify_fd, POLLIN, 0 };
                poll(&p, 1, 20);
                pthread_mutex_lock(&m->lock);
                sd_drain(m);
                pthread_mutex_unlock(&m->lock);
        }
        return NULL;
}

/* Process what has arrived, then wait @ms more (0: just process). */
static inline void sd_pump(struct sd_mgr *m, int ms) {
        uint64_t end = sd_now_ms() + (uint64_t) (ms > 0 ? ms : 0);

        for (;;) {
                pthread_mutex_lock(&m->lock);
                sd_drain(m);
                pthread_mutex_unlock(&m->lock);
                if (sd_now_ms() >= end)
                        return;
                usleep(5000);
        }
}

/* Pump until @cond holds (checked under the lock) or @ms pass. */
#define SD_WAIT(m, cond, ms) ({ \
        uint64_t end_ = sd_now_ms() + (ms); \
        bool ok_; \
        for (;;) { \
                pthread_mutex_lock(&(m)->lock); \
                ok_ = (cond); \
                pthread_mutex_unlock(&(m)->lock); \
                if (ok_ || sd_now_ms() >= end_) \
                        break; \
                sd_pump((m), 10); \
        } \
        ok_; })

/* Start msegd; with @pass_store the stored descriptors follow the socket.
 * @extra: more arguments, NULL-terminated (may be NULL). */
static inline void sd_start(struct sd_mgr *m, bool pass_store, const char *const *extra) {
        const char *msegd = getenv("MSEGD");
        int src[1 + SD_STORE_MAX];
        char names[1 + SD_STORE_MAX][256];
        unsigned n = 0;

        if (!msegd)
                FAIL("$MSEGD is not set (run through meson test)");
        m->nready = m->nstopping = 0;
        if (m->pass_socket) {
                src[n] = m->listen_fd;
                snprintf(names[n++], sizeof(names[0]), "msegd");
        }
        if (pass_store)
                for (unsigned i = 0; i < m->nstore; i++) {
                        src[n] = m->store[i].fd;
                        snprintf(names[n++], sizeof(names[0]), "%s", m->store[i].name);
                }
        pthread_mutex_lock(&m->lock);  /* the reader checks senders against m->pid */
        m->pid = fork();
        if (m->pid != 0)
                pthread_mutex_unlock(&m->lock);
        ASSERT(m->pid >= 0);
        if (m->pid == 0) {
                const char *argv[32];
                char buf[32], *fdnames;
                size_t len = 1;
                int hi[1 + SD_STORE_MAX], a = 0, log;

                /* Move everything out of the way, then into place from 3. */
                for (unsigned i = 0; i < n; i++) {
                        hi[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 3 + (int) n + 16);
                        if (hi[i] < 0)
                                _exit(127);
                }
                for (unsigned i = 0; i < n; i++)
                        if (dup2(hi[i], 3 + (int) i) < 0)
                                _exit(127);
                for (unsigned i = 0; i < n; i++)
                        len += strlen(names[i]) + 1;
                fdnames = calloc(1, len);
                for (unsigned i = 0; i < n; i++) {
                        if (i)
                                strcat(fdnames, ":");
                        strcat(fdnames, names[i]);
                }
                if (n) {
                        snprintf(buf, sizeof(buf), "%u", n);
                        setenv("LISTEN_FDS", buf, 1);
                        snprintf(buf, sizeof(buf), "%d", (int) getpid());
                        setenv("LISTEN_PID", buf, 1);
                        setenv("LISTEN_FDNAMES", fdnames, 1);
                } else {
                        unsetenv("LISTEN_FDS");
                        unsetenv("LISTEN_PID");
                        unsetenv("LISTEN_FDNAMES");
                }
                setenv("NOTIFY_SOCKET", m->notify_path, 1);
                if (m->watchdog_usec) {
                        snprintf(buf, sizeof(buf), "%llu", (unsigned long long) m->watchdog_usec);
                        setenv("WATCHDOG_USEC", buf, 1);
                }
                log = open(m->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (log >= 0) {
                        dup2(log, 1);
                        dup2(log, 2);
                }
                argv[a++] = msegd;
                if (m->foreground)
                        argv[a++] = "--foreground";
                argv[a++] = "--socket";
                argv[a++] = m->sock_path;
                argv[a++] = "--state-dir";
                argv[a++] = m->state_dir;
                for (int i = 0; extra && extra[i] && a < 30; i++)
                        argv[a++] = extra[i];
                argv[a] = NULL;
                execv(msegd, (char *const *) argv);
                _exit(127);
        }
}

static inline void sd_wait_ready(struct sd_mgr *m) {
        if (!SD_WAIT(m, m->nready > 0, 20000))
                FAIL("msegd sent no READY=1 within 20 s (log: %s)", m->log_path);
}

/* Signal msegd and reap it; returns its wait status. */
static inline int sd_kill(struct sd_mgr *m, int sig) {
        int st = 0;
        uint64_t end = sd_now_ms() + 20000;

        ASSERT(m->pid > 0);
        kill(m->pid, sig);
        for (;;) {
                pid_t r = waitpid(m->pid, &st, WNOHANG);
                if (r == m->pid)
                        break;
                if (sd_now_ms() > end)
                        FAIL("msegd did not exit within 20 s of signal %d", sig);
                sd_pump(m, 10);
        }
        sd_pump(m, 0);
        m->pid = 0;
        m->exit_status = st;
        return st;
}

/* Does msegd's log contain @s? */
static inline bool sd_log_has(const struct sd_mgr *m, const char *s) {
        static char buf[1 << 20];
        int fd = open(m->log_path, O_RDONLY | O_CLOEXEC);
        ssize_t n;

        if (fd < 0)
                return false;
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
                return false;
        buf[n] = '\0';
        return strstr(buf, s) != NULL;
}

static inline unsigned sd_store_count_prefix(const struct sd_mgr *m, const char *prefix) {
        unsigned n = 0;
        for (unsigned i = 0; i < m->nstore; i++)
                n += strncmp(m->store[i].name, prefix, strlen(prefix)) == 0;
        return n;
}

static inline void sd_hex(const uint8_t id[16], char out[33]) {
        for (int i = 0; i < 16; i++)
                snprintf(out + 2 * i, 3, "%02x", id[i]);
}

#endif /* MSEG_SD_HARNESS_H */
