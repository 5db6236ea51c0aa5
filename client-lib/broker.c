/* SPDX-License-Identifier: MIT */
/*
 * broker.c — brokered segments: the client side of the msegd protocol
 * (protocol/PROTOCOL.md), and mapping the descriptor msegd hands over.
 *
 * mseg_open() connects to msegd's SOCK_SEQPACKET socket, sends "hello" and
 * its request back to back (msegd answers them in order, so the handshake
 * costs no extra round trip), and receives a memfd with the reply. Before
 * mapping it checks what it got, since msegd is a different program: a
 * regular file of exactly the announced size, sealed against shrinking and
 * growing (F_GET_SEALS), with the access mode asked for. It then maps the
 * whole reserve once (Reserve big, commit on touch: growth never remaps)
 * and validates the header like any other kind.
 *
 * A process keeps one connection per socket path, opened by its first
 * request and kept until it exits: every request then goes over it in
 * order, and an open after the first costs one round trip. Each open returns an attachment id; closing
 * the handle sends "detach" (no reply, nothing waits), and the connection
 * closing (the process exiting or dying) detaches everything at once: that
 * is how msegd learns a client went away, reclaims its slots, and removes
 * remove_on_last_close segments. After fork() the child opens its own
 * connection; handles it inherited stay attached through the parent's.
 * Nothing else goes over the connection, except mseg_grow(): allocation
 * and the registry work on the mapping alone, with no message to msegd.
 *
 * A capability token (mseg_options.token, from mseg_grant() or `msegctl
 * grant`) goes with an open-only request and decides alone what msegd
 * grants; the handle keeps a copy for mseg_grow() and wipes it on close.
 *
 * Errors say what happened: MSEG_E_NODAEMON when nothing listens at the
 * path (connect: ENOENT or ECONNREFUSED), -EACCES when the socket or the
 * segment is refused, MSEG_E_VERSION on a protocol mismatch, MSEG_E_PROTO
 * for a reply that breaks the protocol, and msegd's own error code and
 * message otherwise; mseg_last_error() names the socket path too.
 *
 * A reply that does not come within MSEG_TIMEOUT_MS (environment; default
 * 30 s) fails with -ETIMEDOUT, so a stopped msegd cannot hang an opener
 * forever.
 */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "internal.h"
#include "proto.h"

#define DEFAULT_SOCKET "/run/msegd/socket"
#define DEFAULT_SIZE (UINT64_C(1) << 20)
#define DEFAULT_TIMEOUT_MS 30000
#define SEALS_NEEDED (F_SEAL_SHRINK | F_SEAL_GROW)
_Static_assert(MSEG_TOKEN_MAX == MSEG_PROTO_TOKEN_MAX && MSEG_TOKEN_TTL_MAX == MSEG_PROTO_TTL_MAX,
               "mseg.h and proto.h agree on tokens");
#define KNOWN_FLAGS (MSEG_READ_ONLY | MSEG_COPY_ON_WRITE | MSEG_PERSISTENT | MSEG_REMOVE_ON_LAST_CLOSE)

/* One connection to msegd. */
struct client {
        int fd;
        uint64_t next_id;
        bool hello_unsent;      /* connected; hello goes out with the first request */
        bool hello_pending;     /* hello sent, its reply not read yet */
        bool broken;            /* a transport error: reconnect before reuse */
        bool send_failed;       /* the last request could not even be sent */
        uid_t euid;             /* who we were at connect(): what msegd sees */
        gid_t egid;
        uint64_t hello_id;
        char path[sizeof(((struct sockaddr_un *) 0)->sun_path)];
};

/* The connection the handles of one process share, per socket path. */
struct conn {
        struct conn *next;
        pthread_mutex_t lock;   /* one request at a time */
        struct client c;
        pid_t pid;              /* the process it belongs to (fork makes copies) */
        uint64_t epoch;         /* bumped by every (re)connect */
        uint64_t *deferred;     /* detaches to send before the next request */
        size_t ndeferred, deferred_cap;
};

static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct conn *conns;

/* getpid() is a system call (glibc stopped caching it): keep it, and renew
 * it in the child of every fork. */
static pid_t cached_pid;
static pthread_once_t pid_once = PTHREAD_ONCE_INIT;

static void pid_renew(void) {
        cached_pid = getpid();
}

static void pid_init(void) {
        pid_renew();
        pthread_atfork(NULL, NULL, pid_renew);
}

static pid_t my_pid(void) {
        pthread_once(&pid_once, pid_init);
        return cached_pid;
}

struct mseg__broker_local {
        struct conn *conn;
        pid_t pid;              /* the process that opened the handle */
        uint64_t epoch;         /* of conn when it attached */
        uint64_t attachment;    /* msegd's id for this attachment */
        bool detach_now;        /* remove_on_last_close: detach at once */
        uint8_t id[16];         /* the segment's id (guards mseg_grow) */
        char *token;            /* the capability token it was opened with (mseg_grow), or NULL */
};

/* ------------------------------------------------------------ connection */

static int socket_path(const struct mseg_options *o, char *buf, size_t cap) {
        const char *p = o && o->socket_path ? o->socket_path : getenv("MSEG_SOCKET");

        if (!p || !*p)
                p = DEFAULT_SOCKET;
        if (strlen(p) >= cap)
                return mseg__error(-ENAMETOOLONG, "socket path longer than %zu bytes: %s", cap - 1, p);
        strcpy(buf, p);
        return 0;
}

static int timeout_ms(void) {
        const char *e = getenv("MSEG_TIMEOUT_MS");
        long v;

        if (!e || !*e)
                return DEFAULT_TIMEOUT_MS;
        v = strtol(e, NULL, 10);
        return v > 0 && v < INT32_MAX ? (int) v : DEFAULT_TIMEOUT_MS;
}

static void client_close(struct client *c) {
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
        c->hello_pending = false;
        c->broken = false;
}

/* The longest request: a grow with a name of 255 escaped control
 * characters (6 bytes each), a segment id and a token of 512 bytes. */
#define REQUEST_MAX 4096

static int client_send(struct client *c, struct mseg_proto_request *req, int flags) {
        char buf[REQUEST_MAX];
        ssize_t n;

        req->id = c->next_id++;
        n = mseg_proto_encode_request(req, buf, sizeof(buf));
        if (n < 0)
                return mseg__error((int) n, "cannot encode a %s request", mseg_proto_op_name(req->op));
        return mseg_proto_send(c->fd, buf, (size_t) n, -1, flags);
}

#define BATCH_MAX 8

/* Send @n requests as consecutive packets with one sendmmsg(), so msegd
 * wakes once and finds them all: the pipelined hello, the detaches that
 * waited, then the request. Ids are assigned here. Returns how many went
 * out (all, normally) or -errno if none did. */
static int client_send_batch(struct client *c, struct mseg_proto_request *const *reqs, size_t n, int flags) {
        char small[BATCH_MAX][1024], big[REQUEST_MAX];
        struct mmsghdr mm[BATCH_MAX];
        struct iovec iov[BATCH_MAX];
        int r;

        if (n == 0)
                return 0;
        if (n > BATCH_MAX)
                return -EINVAL;
        memset(mm, 0, sizeof(mm));
        for (size_t i = 0; i < n; i++) {
                bool last = i == n - 1;
                char *b = last ? big : small[i];
                ssize_t len;

                reqs[i]->id = c->next_id++;
                len = mseg_proto_encode_request(reqs[i], b, last ? sizeof(big) : sizeof(small[i]));
                if (len < 0)
                        return mseg__error((int) len, "cannot encode a %s request", mseg_proto_op_name(reqs[i]->op));
                iov[i] = (struct iovec) { .iov_base = b, .iov_len = (size_t) len };
                mm[i].msg_hdr.msg_iov = &iov[i];
                mm[i].msg_hdr.msg_iovlen = 1;
        }
        do
                r = sendmmsg(c->fd, mm, (unsigned) n, MSG_NOSIGNAL | flags);
        while (r < 0 && errno == EINTR);
        return r < 0 ? -errno : r;
}

/* Receive and decode the reply to request @id of @op. */
static int client_recv(struct client *c, uint64_t id, enum mseg_proto_op op, struct mseg_proto_reply *rep,
                       int *ret_fd) {
        struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
        char err[256], *buf;
        int fd = -1, r, tmo = timeout_ms();
        ssize_t n;

        do
                r = poll(&pfd, 1, tmo);
        while (r < 0 && errno == EINTR);
        if (r == 0) {
                c->broken = true;
                return mseg__error(-ETIMEDOUT, "msegd at %s did not answer within %d ms", c->path, tmo);
        }
        if (r < 0) {
                c->broken = true;
                return mseg__error(-errno, "poll: %s", strerror(errno));
        }
        buf = malloc(MSEG_PROTO_MSG_MAX);
        if (!buf) {
                c->broken = true;
                return mseg__error(-ENOMEM, "out of memory");
        }
        n = mseg_proto_recv(c->fd, buf, MSEG_PROTO_MSG_MAX, &fd, NULL, 0);
        if (n == -ECONNRESET)
                /* msegd closed with our requests unread (a refusal): the
                 * error is reported first, the packet it sent may follow. */
                n = mseg_proto_recv(c->fd, buf, MSEG_PROTO_MSG_MAX, &fd, NULL, MSG_DONTWAIT);
        if (n == 0 || n == -ECONNRESET || n == -EAGAIN) {
                c->broken = true;
                r = mseg__error(MSEG_E_PROTO, "msegd at %s closed the connection", c->path);
                goto out;
        }
        if (n < 0) {
                c->broken = true;
                r = mseg__error(n == -EMSGSIZE || n == -EBADMSG ? MSEG_E_PROTO : (int) n,
                                "receiving from msegd at %s: %s", c->path, strerror((int) -n));
                goto out;
        }
        r = mseg_proto_decode_reply(buf, (size_t) n, op, rep, err, sizeof(err));
        if (r < 0) {
                c->broken = true;
                r = mseg__error(MSEG_E_PROTO, "bad reply from msegd at %s: %s", c->path, err);
                goto out;
        }
        if (rep->error) {
                /* An error for this request, or a refusal of the whole
                 * connection (id null): max-clients, a bad packet... */
                if (rep->id_null) {
                        c->broken = true;
                } else if (rep->id != id) {
                        c->broken = true;
                        r = mseg__error(MSEG_E_PROTO, "msegd at %s answered request %llu, expected %llu", c->path,
                                        (unsigned long long) rep->id, (unsigned long long) id);
                        goto out;
                }
                r = mseg__error(rep->error, "msegd at %s: %s", c->path, rep->message);
                goto out;
        }
        if (rep->id != id) {
                c->broken = true;
                r = mseg__error(MSEG_E_PROTO, "msegd at %s answered request %llu, expected %llu", c->path,
                                (unsigned long long) rep->id, (unsigned long long) id);
                goto out;
        }
        if (ret_fd) {
                *ret_fd = fd;
                fd = -1;
        }
        r = 0;
out:
        if (fd >= 0)
                close(fd);      /* a descriptor nobody asked for */
        free(buf);
        return r;
}

/* Connect to @c->path. Hello goes out in the same sendmmsg() as the first
 * request, and its reply is read just before that request's (msegd answers
 * in order): the handshake costs no round trip of its own. */
static int client_connect(struct client *c) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int r;

        c->fd = -1;
        c->next_id = 1;
        c->hello_unsent = false;
        c->hello_pending = false;
        c->broken = false;
        memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
        c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
                return mseg__error(-errno, "socket: %s", strerror(errno));
        c->euid = geteuid();
        c->egid = getegid();
        do
                r = connect(c->fd, (struct sockaddr *) &sa, sizeof(sa));
        while (r < 0 && errno == EINTR);
        if (r < 0) {
                int e = errno;
                client_close(c);
                if (e == ENOENT || e == ECONNREFUSED || e == ENOTSOCK)
                        return mseg__error(MSEG_E_NODAEMON, "msegd is not running at %s (connect: %s)", c->path,
                                           strerror(e));
                if (e == EACCES || e == EPERM)
                        return mseg__error(-EACCES, "no permission to connect to msegd at %s", c->path);
                return mseg__error(-e, "cannot connect to msegd at %s: %s", c->path, strerror(e));
        }
        c->hello_unsent = true;
        return 0;
}

/* Send @req, after the hello if this connection has not said it yet and
 * after the @ndetach deferred detaches, and read its reply (after the
 * hello's). */
static int client_call(struct client *c, const uint64_t *detaches, size_t ndetach, struct mseg_proto_request *req,
                       struct mseg_proto_reply *rep, int *ret_fd) {
        struct mseg_proto_request hello = { .op = MSEG_PROTO_OP_HELLO, .version = MSEG_PROTO_VERSION,
                                            .features = MSEG_PROTO_F_ALL };
        struct mseg_proto_request dreq[BATCH_MAX], *batch[BATCH_MAX];
        struct mseg_proto_reply hrep = { 0 };
        size_t n = 0;
        int r, sent = 0;

        if (c->hello_unsent) {
                snprintf(hello.client, sizeof(hello.client), "libmseg %s", mseg_version());
                batch[n++] = &hello;
        }
        while (ndetach > 0 && sent >= 0) {
                /* What does not fit one batch goes ahead in its own. */
                size_t k = 0, room = BATCH_MAX - n - 1;
                for (; k < ndetach && k < room; k++) {
                        dreq[k] = (struct mseg_proto_request) { .op = MSEG_PROTO_OP_DETACH, .attachment = detaches[k] };
                        batch[n + k] = &dreq[k];
                }
                detaches += k;
                ndetach -= k;
                if (ndetach == 0) {
                        n += k;
                        break;
                }
                sent = client_send_batch(c, batch, n + k, 0);
                if (sent >= 0 && n && batch[0] == &hello) {
                        c->hello_unsent = false;
                        c->hello_pending = true;
                        c->hello_id = hello.id;
                }
                n = 0;
        }
        batch[n++] = req;
        if (sent >= 0) {
                sent = client_send_batch(c, batch, n, 0);
                if (sent >= 0 && (size_t) sent < n)
                        sent = -EPIPE;  /* the request itself did not go */
        }
        if (c->hello_unsent) {
                /* Sent or not (EPIPE: msegd refused us at once and its
                 * reason waits in our queue), read what answers it. */
                c->hello_unsent = false;
                c->hello_pending = true;
                c->hello_id = hello.id;
        }
        c->send_failed = sent < 0 && !c->hello_pending;
        if (sent < 0)
                c->broken = true;
        /* Even if sending failed (msegd refused the connection and closed
         * it), a pending hello reply may say why. */
        if (c->hello_pending) {
                c->hello_pending = false;
                r = client_recv(c, c->hello_id, MSEG_PROTO_OP_HELLO, &hrep, NULL);
                if (r == -EPROTONOSUPPORT)
                        r = MSEG_E_VERSION;
                if (r < 0) {
                        c->broken = true;
                        return r;
                }
                if (hrep.version != MSEG_PROTO_VERSION) {
                        c->broken = true;
                        return mseg__error(MSEG_E_VERSION, "msegd at %s speaks protocol %u, this library %u",
                                           c->path, hrep.version, MSEG_PROTO_VERSION);
                }
        }
        if (sent < 0)
                return mseg__error(sent == -EPIPE || sent == -ECONNRESET ? MSEG_E_PROTO : sent,
                                   "sending to msegd at %s: %s", c->path, strerror(-sent));
        return client_recv(c, req->id, req->op, rep, ret_fd);
}

/* The connection of this process to msegd at @path, created on first use
 * and kept until the process exits: every request of a process then goes
 * over one connection, in order (a detach before the remove that follows
 * it), and an open costs one round trip. After fork() the child makes its
 * own: pid tells them apart. */
static struct conn *conn_get(const char *path) {
        pid_t pid = my_pid();
        struct conn *cn;

        pthread_mutex_lock(&conns_lock);
        for (cn = conns; cn; cn = cn->next)
                if (cn->pid == pid && strcmp(cn->c.path, path) == 0)
                        break;
        if (!cn) {
                cn = calloc(1, sizeof(*cn));
                if (cn) {
                        pthread_mutex_init(&cn->lock, NULL);
                        cn->c.fd = -1;
                        cn->pid = pid;
                        strcpy(cn->c.path, path);
                        cn->next = conns;
                        conns = cn;
                }
        }
        pthread_mutex_unlock(&conns_lock);
        return cn;
}

/* Send the detaches that waited (cn->lock held), now, without a request. */
static void flush_deferred(struct conn *cn) {
        struct mseg_proto_request dreq[BATCH_MAX], *batch[BATCH_MAX];
        size_t i = 0;

        while (i < cn->ndeferred && cn->c.fd >= 0 && !cn->c.hello_unsent) {
                size_t k = 0;
                for (; k < BATCH_MAX && i + k < cn->ndeferred; k++) {
                        dreq[k] = (struct mseg_proto_request) { .op = MSEG_PROTO_OP_DETACH,
                                                                .attachment = cn->deferred[i + k] };
                        batch[k] = &dreq[k];
                }
                if (client_send_batch(&cn->c, batch, k, MSG_DONTWAIT) < 0)
                        break;
                i += k;
        }
        cn->ndeferred = 0;
}

/* A request on the shared connection @cn, (re)connecting first if needed.
 * A connection that fails at once, before msegd could have seen the
 * request (EPIPE: msegd restarted, or closed it), is replaced and the
 * request sent again, once; a failure after that point is reported, since
 * the request may have been carried out. */
static int conn_call(struct conn *cn, struct mseg_proto_request *req, struct mseg_proto_reply *rep, int *ret_fd,
                     uint64_t *ret_epoch) {
        bool fresh;
        int r;

        pthread_mutex_lock(&cn->lock);
        /* msegd judges a connection by the credentials of its connect():
         * a process that changed its effective uid or gid since then gets
         * a new connection, so its requests are judged as it is now. */
        if (cn->c.fd >= 0 && (cn->c.broken || cn->c.euid != geteuid() || cn->c.egid != getegid()))
                client_close(&cn->c);
        for (int attempt = 0;; attempt++) {
                fresh = cn->c.fd < 0;
                if (fresh) {
                        cn->ndeferred = 0;      /* that connection's attachments are gone with it */
                        r = client_connect(&cn->c);
                        if (r < 0)
                                goto out;
                        cn->epoch++;
                }
                r = client_call(&cn->c, cn->deferred, cn->ndeferred, req, rep, ret_fd);
                cn->ndeferred = 0;
                if (cn->c.broken)
                        client_close(&cn->c);
                if (!(cn->c.send_failed && !fresh && attempt == 0))
                        break;
        }
        if (ret_epoch)
                *ret_epoch = cn->epoch;
out:
        pthread_mutex_unlock(&cn->lock);
        return r;
}

/* One request on this process's connection for @o's socket path. */
static int shared_call(const struct mseg_options *o, struct mseg_proto_request *req, struct mseg_proto_reply *rep) {
        char path[sizeof(((struct sockaddr_un *) 0)->sun_path)];
        struct conn *cn;
        int r;

        r = socket_path(o, path, sizeof(path));
        if (r < 0)
                return r;
        cn = conn_get(path);
        if (!cn)
                return mseg__error(-ENOMEM, "out of memory");
        return conn_call(cn, req, rep, NULL, NULL);
}

/* ------------------------------------------------------------ arguments */

static int check_name(const char *name) {
        const char *why;
        size_t len;

        if (!name)
                return mseg__error(-EINVAL, "no segment name");
        len = strlen(name);
        if (len > MSEG_NAME_MAX)
                return mseg__error(-ENAMETOOLONG, "segment name of %zu bytes (at most %d)", len, MSEG_NAME_MAX);
        why = mseg_proto_name_problem(name, len);
        if (why)
                return mseg__error(-EINVAL, "segment name %s (names are 1..255 bytes of UTF-8 without '/', "
                                            "not \".\" or \"..\")", why);
        return 0;
}

static int check_options(const struct mseg_options *o) {
        if (!o)
                return 0;
        if (o->flags & ~KNOWN_FLAGS)
                return mseg__error(-EINVAL, "unknown flags 0x%x", o->flags & ~KNOWN_FLAGS);
        for (size_t i = 0; i < sizeof(o->reserved) / sizeof(o->reserved[0]); i++)
                if (o->reserved[i])
                        return mseg__error(-EINVAL, "mseg_options.reserved must be zero");
        if (o->token && (!*o->token || strlen(o->token) > MSEG_PROTO_TOKEN_MAX))
                return mseg__error(MSEG_E_TOKEN, "token garbled: %zu characters, expected 1..%u", strlen(o->token),
                                   MSEG_PROTO_TOKEN_MAX);
        if (o->mode & ~0777u)
                return mseg__error(-EINVAL, "mode 0%o has bits outside 0777", o->mode);
        if ((o->flags & MSEG_PERSISTENT) && (o->flags & MSEG_REMOVE_ON_LAST_CLOSE))
                return mseg__error(-EINVAL, "MSEG_PERSISTENT and MSEG_REMOVE_ON_LAST_CLOSE exclude each other");
        return 0;
}

/* ------------------------------------------------------------ open */

static void detach(struct mseg__broker_local *bl);

/* Check the descriptor msegd sent before trusting it with a mapping. */
static int check_fd(int fd, uint64_t size, bool ro, const char *path) {
        struct stat st;
        int seals, fl;

        if (fstat(fd, &st) < 0)
                return mseg__error(-errno, "fstat of the segment descriptor: %s", strerror(errno));
        if (!S_ISREG(st.st_mode) || (uint64_t) st.st_size != size)
                return mseg__error(MSEG_E_PROTO, "msegd at %s sent a descriptor of %lld bytes, announced %llu",
                                   path, (long long) st.st_size, (unsigned long long) size);
        seals = fcntl(fd, F_GET_SEALS);
        if (seals < 0 || (seals & SEALS_NEEDED) != SEALS_NEEDED)
                return mseg__error(MSEG_E_PROTO, "msegd at %s sent a descriptor not sealed against resizing", path);
        fl = fcntl(fd, F_GETFL);
        if (fl < 0)
                return mseg__error(-errno, "fcntl: %s", strerror(errno));
        if (!ro && (fl & O_ACCMODE) != O_RDWR)
                return mseg__error(MSEG_E_PROTO, "msegd at %s sent a read-only descriptor for a read-write open",
                                   path);
        return 0;
}

MSEG_API int mseg_open(mseg **ret_seg, const char *name, enum mseg_how how, const struct mseg_options *opts) {
        struct mseg_proto_request req = { 0 };
        struct mseg_proto_reply rep = { 0 };
        struct mseg__broker_local *bl = NULL;
        uint32_t flags = opts ? opts->flags : 0;
        bool ro = flags & MSEG_READ_ONLY, cow = flags & MSEG_COPY_ON_WRITE;
        struct mseg *seg = NULL;
        void *base = MAP_FAILED;
        char path[sizeof(((struct sockaddr_un *) 0)->sun_path)];
        uint64_t max_size;
        int fd = -1, r;

        if (!ret_seg)
                return mseg__error(-EINVAL, "ret_seg is NULL");
        r = check_name(name);
        if (r < 0)
                return r;
        r = check_options(opts);
        if (r < 0)
                return r;
        switch (how) {
        case MSEG_CREATE_ONLY: req.op = MSEG_PROTO_OP_CREATE; break;
        case MSEG_OPEN_ONLY: req.op = MSEG_PROTO_OP_OPEN; break;
        case MSEG_OPEN_OR_CREATE: req.op = MSEG_PROTO_OP_OPEN_OR_CREATE; break;
        default: return mseg__error(-EINVAL, "bad open mode %d", (int) how);
        }
        memcpy(req.name, name, strlen(name) + 1);
        if (opts && opts->token) {
                /* A token names an existing segment: it never creates one. */
                if (how != MSEG_OPEN_ONLY)
                        return mseg__error(-EINVAL, "a token opens an existing segment: use MSEG_OPEN_ONLY");
                req.has_token = true;
                memcpy(req.token, opts->token, strlen(opts->token) + 1);
        }
        /* A copy-on-write mapping needs only read access: MAP_PRIVATE with
         * PROT_WRITE works on an O_RDONLY descriptor. */
        req.read_only = ro || cow;
        if (how != MSEG_OPEN_ONLY) {
                req.size = opts && opts->size ? opts->size : DEFAULT_SIZE;
                req.max_size = opts && opts->max_size ? opts->max_size : req.size;
                if (req.size < MSEG_MIN_SIZE || req.size > MSEG_MAX_SIZE || req.max_size < req.size ||
                    req.max_size > MSEG_MAX_SIZE)
                        return mseg__error(-EINVAL, "size %llu / max_size %llu: need %llu <= size <= max_size <= %llu",
                                           (unsigned long long) req.size, (unsigned long long) req.max_size,
                                           (unsigned long long) MSEG_MIN_SIZE, (unsigned long long) MSEG_MAX_SIZE);
                req.mode = opts ? opts->mode : 0;
                req.persistent = flags & MSEG_PERSISTENT;
                req.remove_on_last_close = flags & MSEG_REMOVE_ON_LAST_CLOSE;
        }

        r = socket_path(opts, path, sizeof(path));
        if (r < 0)
                return r;
        bl = calloc(1, sizeof(*bl));
        if (!bl)
                return mseg__error(-ENOMEM, "out of memory");
        bl->conn = conn_get(path);
        if (!bl->conn || (req.has_token && !(bl->token = strdup(req.token)))) {
                free(bl);
                return mseg__error(-ENOMEM, "out of memory");
        }
        r = conn_call(bl->conn, &req, &rep, &fd, &bl->epoch);
        if (r < 0)
                goto fail;
        bl->attachment = rep.attachment;
        bl->detach_now = rep.info.remove_on_last_close;
        bl->pid = my_pid();
        if (fd < 0) {
                r = mseg__error(MSEG_E_PROTO, "msegd at %s sent no descriptor with the segment", path);
                goto fail;
        }
        max_size = rep.info.max_size;
        if (max_size < MSEG_MIN_SIZE || max_size > MSEG_MAX_SIZE || max_size > SIZE_MAX) {
                r = mseg__error(MSEG_E_PROTO, "msegd at %s announced a segment of %llu bytes", path,
                                (unsigned long long) max_size);
                goto fail;
        }
        r = check_fd(fd, max_size, req.read_only, path);
        if (r < 0)
                goto fail;
        base = mmap(NULL, (size_t) max_size, ro ? PROT_READ : PROT_READ | PROT_WRITE,
                    cow ? MAP_PRIVATE : MAP_SHARED, fd, 0);
        if (base == MAP_FAILED) {
                r = mseg__error(-errno, "cannot map segment %s (%llu bytes): %s", name,
                                (unsigned long long) max_size, strerror(errno));
                goto fail;
        }
        r = mseg__handle_new(&seg, base, max_size, MSEG__KIND_SHM, ro, cow);
        if (r < 0)
                goto fail;
        if (seg->map_size != max_size) {
                r = mseg__error(MSEG_E_CORRUPT, "segment %s: header says %llu bytes, descriptor has %llu", name,
                                (unsigned long long) seg->map_size, (unsigned long long) max_size);
                goto fail;
        }
        seg->name = strdup(name);
        if (!seg->name) {
                r = mseg__error(-ENOMEM, "out of memory");
                goto fail;
        }
        memcpy(bl->id, rep.info.id, sizeof(bl->id));
        seg->mapped = true;
        seg->fd = fd;
        seg->broker = bl;
        *ret_seg = seg;
        return 0;
fail:
        if (seg) {
                /* Not yet ours to close through mseg_close: undo by hand. */
                seg->mapped = false;
                seg->fd = -1;
                seg->kind = MSEG__KIND_BUFFER;
                mseg_close(seg);
        }
        if (base != MAP_FAILED)
                munmap(base, (size_t) rep.info.max_size);
        if (fd >= 0)
                close(fd);
        if (bl) {
                if (bl->attachment)
                        detach(bl);
                if (bl->token)
                        sodium_memzero(bl->token, strlen(bl->token));
                free(bl->token);
                free(bl);
        }
        return r;
}

/* Tell msegd this handle is gone. No reply comes, so nothing waits. The
 * message itself waits for the connection's next request (or its close,
 * which detaches everything): sent alone it would wake msegd once more per
 * open/close pair, the largest cost of a reopen on a VM. A segment that is
 * removed on last close is told at once, so the removal is not delayed. A
 * detach that cannot be sent is dropped, and the attachment ends with the
 * connection instead. */
static void detach(struct mseg__broker_local *bl) {
        struct mseg_proto_request req = { .op = MSEG_PROTO_OP_DETACH, .attachment = bl->attachment };
        struct conn *cn = bl->conn;

        pthread_mutex_lock(&cn->lock);
        if (cn->c.fd >= 0 && cn->epoch == bl->epoch && !cn->c.broken) {
                if (bl->detach_now) {
                        flush_deferred(cn);
                        (void) client_send(&cn->c, &req, MSG_DONTWAIT);
                } else if (cn->ndeferred < cn->deferred_cap) {
                        cn->deferred[cn->ndeferred++] = bl->attachment;
                } else {
                        size_t cap = cn->deferred_cap ? cn->deferred_cap * 2 : 16;
                        uint64_t *d = realloc(cn->deferred, cap * sizeof(*d));
                        if (d) {
                                cn->deferred = d;
                                cn->deferred_cap = cap;
                                cn->deferred[cn->ndeferred++] = bl->attachment;
                        } else {
                                (void) client_send(&cn->c, &req, MSG_DONTWAIT);
                        }
                }
        }
        pthread_mutex_unlock(&cn->lock);
}

void mseg__broker_detach(struct mseg *seg) {
        struct mseg__broker_local *bl = seg->broker;

        if (!bl)
                return;
        seg->broker = NULL;
        /* A handle inherited through fork() belongs to the parent's
         * connection: the parent still holds its attachment. */
        if (bl->pid == my_pid() && bl->conn->pid == bl->pid)
                detach(bl);
        if (bl->token)
                sodium_memzero(bl->token, strlen(bl->token));
        free(bl->token);
        free(bl);
}

/* ------------------------------------------------------------ grow, remove */

MSEG_API int mseg_grow(mseg *seg, uint64_t new_size) {
        struct mseg__broker_local *bl;
        struct mseg_proto_request req = { .op = MSEG_PROTO_OP_GROW };
        struct mseg_proto_reply rep = { 0 };
        struct mseg_options o = { 0 };
        int r;

        if (!seg)
                return mseg__error(-EINVAL, "no segment");
        if (seg->kind != MSEG__KIND_SHM || !seg->broker)
                return mseg__error(-EINVAL, "only brokered segments grow with mseg_grow() "
                                            "(see mseg_file_grow(), mseg_heap_grow())");
        if (seg->read_only || seg->cow)
                return mseg__error(-EACCES, "segment %s is mapped %s", seg->name,
                                   seg->read_only ? "read-only" : "copy-on-write");
        if (new_size > seg->map_size)
                return mseg__error(-ENOSPC, "size %llu beyond the segment's reserve of %llu bytes",
                                   (unsigned long long) new_size, (unsigned long long) seg->map_size);
        if (new_size <= mseg__usable(seg))
                return 0;
        bl = seg->broker;
        snprintf(req.name, sizeof(req.name), "%s", seg->name);
        req.size = new_size;
        req.has_segment_id = true;
        memcpy(req.segment_id, bl->id, sizeof(req.segment_id));
        if (bl->token) {
                req.has_token = true;
                snprintf(req.token, sizeof(req.token), "%s", bl->token);
        }

        if (bl->pid == my_pid()) {
                r = conn_call(bl->conn, &req, &rep, NULL, NULL);
        } else {
                o.socket_path = bl->conn->c.path;
                r = shared_call(&o, &req, &rep);
        }
        if (r < 0)
                return r;
        if (mseg__usable(seg) < new_size && mseg__usable(seg) < seg->map_size)
                return mseg__error(MSEG_E_PROTO, "msegd reported growth to %llu bytes, the header says %llu",
                                   (unsigned long long) rep.size, (unsigned long long) mseg__usable(seg));
        return 0;
}

MSEG_API int mseg_remove(const char *name, const struct mseg_options *opts) {
        struct mseg_proto_request req = { .op = MSEG_PROTO_OP_REMOVE };
        struct mseg_proto_reply rep = { 0 };
        int r;

        r = check_name(name);
        if (r < 0)
                return r;
        memcpy(req.name, name, strlen(name) + 1);
        return shared_call(opts, &req, &rep);
}

/* ------------------------------------------------------------ stat, list */

static void info_from_proto(const struct mseg_proto_seginfo *p, struct mseg_segment_info *i) {
        memset(i, 0, sizeof(*i));
        memcpy(i->name, p->name, sizeof(i->name));
        memcpy(i->id, p->id, sizeof(i->id));
        i->size = p->size;
        i->max_size = p->max_size;
        i->mode = p->mode;
        i->uid = p->uid;
        i->gid = p->gid;
        i->flags = (p->persistent ? MSEG_PERSISTENT : 0) | (p->remove_on_last_close ? MSEG_REMOVE_ON_LAST_CLOSE : 0);
        i->clients = p->clients;
}

MSEG_API int mseg_stat(const char *name, const struct mseg_options *opts, struct mseg_segment_info *ret_info) {
        struct mseg_proto_request req = { .op = MSEG_PROTO_OP_STAT };
        struct mseg_proto_reply rep = { 0 };
        int r;

        if (!ret_info)
                return mseg__error(-EINVAL, "ret_info is NULL");
        r = check_name(name);
        if (r < 0)
                return r;
        memcpy(req.name, name, strlen(name) + 1);
        r = shared_call(opts, &req, &rep);
        if (r < 0)
                return r;
        info_from_proto(&rep.info, ret_info);
        return 0;
}

MSEG_API int mseg_list(const struct mseg_options *opts, int (*fn)(const struct mseg_segment_info *info, void *arg),
                       void *arg) {
        struct mseg_proto_request req = { .op = MSEG_PROTO_OP_LIST };
        struct mseg_proto_reply rep = { 0 };
        struct mseg_proto_seginfo *page;
        struct mseg_segment_info info;
        int r;

        if (!fn)
                return mseg__error(-EINVAL, "no callback");
        page = malloc(sizeof(*page) * MSEG_PROTO_LIST_MAX);
        if (!page)
                return mseg__error(-ENOMEM, "out of memory");
        for (;;) {
                rep.segs = page;
                r = shared_call(opts, &req, &rep);
                if (r < 0)
                        break;
                for (size_t i = 0; i < rep.nsegs; i++) {
                        info_from_proto(&page[i], &info);
                        r = fn(&info, arg);
                        if (r != 0)
                                goto done;
                }
                if (!rep.more || rep.nsegs == 0)
                        break;
                /* Resume after the last name of this page. */
                req.has_after = true;
                memcpy(req.after, page[rep.nsegs - 1].name, sizeof(req.after));
        }
done:
        free(page);
        return r;
}

/* ------------------------------------------------------------ tokens */

MSEG_API int mseg_grant(const char *name, uint32_t flags, uint64_t ttl_seconds, const struct mseg_options *opts,
                        char *ret_token, size_t cap, uint64_t *ret_expires) {
        struct mseg_proto_request req = { .op = MSEG_PROTO_OP_GRANT };
        struct mseg_proto_reply rep = { 0 };
        size_t len;
        int r;

        r = check_name(name);
        if (r < 0)
                return r;
        if (flags & ~MSEG_READ_ONLY)
                return mseg__error(-EINVAL, "mseg_grant() takes MSEG_READ_ONLY or 0, not 0x%x", flags);
        if (ttl_seconds < 1 || ttl_seconds > MSEG_TOKEN_TTL_MAX)
                return mseg__error(-EINVAL, "token lifetime of %llu s: expected 1..%u",
                                   (unsigned long long) ttl_seconds, MSEG_TOKEN_TTL_MAX);
        if (!ret_token)
                return mseg__error(-EINVAL, "ret_token is NULL");
        memcpy(req.name, name, strlen(name) + 1);
        req.rights = MSEG_PROTO_RIGHT_READ | (flags & MSEG_READ_ONLY ? 0 : MSEG_PROTO_RIGHT_WRITE);
        req.ttl = ttl_seconds;
        r = shared_call(opts, &req, &rep);
        if (r < 0)
                return r;
        len = strlen(rep.token);
        if (len >= cap)
                r = mseg__error(-ERANGE, "the token has %zu characters, the buffer room for %zu", len,
                                cap ? cap - 1 : 0);
        else
                memcpy(ret_token, rep.token, len + 1);
        if (r == 0 && ret_expires)
                *ret_expires = rep.expires;
        sodium_memzero(rep.token, sizeof(rep.token));
        return r;
}

int mseg__broker_rotate_key(const struct mseg_options *opts, uint32_t *ret_generation) {
        struct mseg_proto_request req = { .op = MSEG_PROTO_OP_ROTATE_KEY };
        struct mseg_proto_reply rep = { 0 };
        int r;

        r = shared_call(opts, &req, &rep);
        if (r < 0)
                return r;
        *ret_generation = rep.generation;
        return 0;
}

int mseg__broker_status(const struct mseg_options *opts, struct mseg_proto_status *ret) {
        struct mseg_proto_request req = { .op = MSEG_PROTO_OP_STATUS };
        struct mseg_proto_reply rep = { 0 };
        int r;

        r = shared_call(opts, &req, &rep);
        if (r < 0)
                return r;
        *ret = rep.status;
        return 0;
}
