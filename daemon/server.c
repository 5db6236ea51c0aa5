/* SPDX-License-Identifier: MIT */
/*
 * server.c — msegd's connections: accept, read one request per packet,
 * answer it, pass descriptors.
 *
 * Sockets are watched with uv_poll_t and read and written with our own
 * accept4/recvmsg/sendmsg (linux-facts.md 1.1-1.2): libuv's pipes cannot
 * send a raw memfd to a peer that is not libuv, and they truncate SEQPACKET
 * packets silently.
 *
 * No client can stall another:
 *   - every socket is non-blocking; a readable event reads at most
 *     BATCH packets, an accept event accepts at most BATCH connections;
 *   - a reply that cannot be sent now (EAGAIN) is queued with a duplicate
 *     of its descriptor, and the connection is not read again until its
 *     queue drains, so a client that does not read its replies only holds
 *     up itself, and its queue holds at most one batch;
 *   - a connection that has not said hello within the handshake timeout is
 *     closed, so silent clients cannot hold connection slots forever;
 *   - the connection limit (max-clients, and per uid) is enforced at
 *     accept with an error packet, and EMFILE is handled with a spare
 *     descriptor, so the listener never spins.
 * Packets longer than max-message-size (MSG_TRUNC), with too many
 * descriptors (MSG_CTRUNC), or empty (indistinguishable from EOF) end the
 * connection; descriptors a client sends are closed (or refused by the
 * kernel with SO_PASSRIGHTS=0 on Linux 6.16+) and the request refused.
 * Anything else malformed gets an error reply with the reason; a packet
 * without a readable id gets an error reply with "id": null and the
 * connection is closed, since the client cannot match further replies.
 *
 * A connection's attachments (segments it opened) end when it closes: that
 * is how msegd learns a client went away, reclaims what it left in the
 * segment, and removes remove_on_last_close segments.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "msegd.h"

#ifndef SO_PASSRIGHTS
#define SO_PASSRIGHTS 83
#endif

#define BATCH 16
#define GROUPS_MAX 64

struct outmsg {
        struct outmsg *next;
        size_t len;
        int fd;                 /* duplicate, closed once sent; -1 */
        char data[];
};

struct conn {
        struct server *srv;
        uv_poll_t poll;
        int fd;
        int events;             /* what poll is started with */
        struct ucred cred;
        gid_t groups[GROUPS_MAX];
        int ngroups;            /* -1 until fetched */
        bool hello_done;
        bool closing;
        bool close_after_send;
        bool busy;              /* a request is on the thread pool: read no more */
        bool handle_closed;     /* uv_close finished: free once pending == 0 */
        unsigned pending;       /* work items that will call back with this conn */
        uint64_t busy_id;       /* the request being worked on */
        uint64_t accepted_ms;
        uint32_t features;
        struct conn *prev, *next;               /* server->conns */
        struct conn *hs_prev, *hs_next;         /* waiting for hello */
        bool in_hs;
        struct outmsg *out_head, *out_tail;
        /* Attachments: id i+1 is att[i]; NULL slots are free and stacked
         * in att_free for reuse, so a detach is O(1). */
        struct segment **att;
        unsigned *att_free;
        unsigned att_len, att_cap, nfree, nlive;
};

static void conn_close(struct conn *c);
static void on_conn(uv_poll_t *p, int status, int events);

/* ------------------------------------------------------------ lifecycle */

static void hs_unlink(struct conn *c) {
        struct server *srv = c->srv;

        if (!c->in_hs)
                return;
        if (c->hs_prev)
                c->hs_prev->hs_next = c->hs_next;
        else
                srv->hs_head = c->hs_next;
        if (c->hs_next)
                c->hs_next->hs_prev = c->hs_prev;
        else
                srv->hs_tail = c->hs_prev;
        c->in_hs = false;
}

static void on_conn_closed(uv_handle_t *h) {
        struct conn *c = h->data;

        c->handle_closed = true;
        if (c->pending == 0)
                free(c);
}

static void conn_close(struct conn *c) {
        struct server *srv = c->srv;
        struct uid_usage *u;

        if (c->closing)
                return;
        c->closing = true;
        uv_poll_stop(&c->poll);
        close(c->fd);
        c->fd = -1;
        hs_unlink(c);
        if (c->prev)
                c->prev->next = c->next;
        else
                srv->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        srv->nconns--;
        u = segtable_uid(srv->tab, c->cred.uid, false);
        if (u && u->clients)
                u->clients--;
        while (c->out_head) {
                struct outmsg *m = c->out_head;
                c->out_head = m->next;
                if (m->fd >= 0)
                        close(m->fd);
                free(m);
        }
        for (unsigned i = 0; i < c->att_len; i++)
                if (c->att[i])
                        segment_detach(srv->tab, c->att[i], true);
        free(c->att);
        free(c->att_free);
        uv_close((uv_handle_t *) &c->poll, on_conn_closed);
}

static void conn_set_events(struct conn *c, int events) {
        if (c->closing || c->events == events)
                return;
        c->events = events;
        if (uv_poll_start(&c->poll, events, on_conn) < 0)
                conn_close(c);
}

/* ------------------------------------------------------------ sending */

static int queue_packet(struct conn *c, const char *buf, size_t len, int fd) {
        struct outmsg *m = malloc(sizeof(*m) + len);

        if (!m)
                return -ENOMEM;
        memcpy(m->data, buf, len);
        m->len = len;
        m->next = NULL;
        m->fd = -1;
        if (fd >= 0) {
                m->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
                if (m->fd < 0) {
                        free(m);
                        return -errno;
                }
        }
        if (c->out_tail)
                c->out_tail->next = m;
        else
                c->out_head = m;
        c->out_tail = m;
        return 0;
}

/* Send what is queued. Returns 0 when the queue is empty, -EAGAIN when it
 * is not, or another -errno when the connection is broken. */
static int flush_queue(struct conn *c) {
        while (c->out_head) {
                struct outmsg *m = c->out_head;
                int r = mseg_proto_send(c->fd, m->data, m->len, m->fd, MSG_DONTWAIT);
                if (r < 0)
                        return r;
                c->out_head = m->next;
                if (!c->out_head)
                        c->out_tail = NULL;
                if (m->fd >= 0)
                        close(m->fd);
                free(m);
        }
        return 0;
}

static void conn_send_reply(struct conn *c, const struct mseg_proto_reply *rep, int fd) {
        struct server *srv = c->srv;
        ssize_t n;
        int r;

        if (c->closing)
                return;
        n = mseg_proto_encode_reply(rep, srv->wbuf, MSEG_PROTO_MSG_MAX);
        if (n < 0) {
                log_error("cannot encode a reply: %s", strerror((int) -n));
                conn_close(c);
                return;
        }
        srv->served++;
        if (!c->out_head) {
                r = mseg_proto_send(c->fd, srv->wbuf, (size_t) n, fd, MSG_DONTWAIT);
                if (r == 0)
                        return;
                if (r != -EAGAIN) {
                        log_debug("connection from pid %d: send: %s", (int) c->cred.pid, strerror(-r));
                        conn_close(c);
                        return;
                }
        }
        r = queue_packet(c, srv->wbuf, (size_t) n, fd);
        if (r < 0) {
                conn_close(c);
                return;
        }
        /* Stop reading until the client takes its replies. */
        conn_set_events(c, UV_WRITABLE | UV_DISCONNECT);
}

MSEGD_PRINTF(4, 5)
static void reply_error(struct conn *c, const struct mseg_proto_request *req, int code, const char *fmt, ...) {
        struct mseg_proto_reply rep = { .id = req ? req->id : 0, .id_null = !req, .error = code };
        va_list ap;

        if (fmt) {
                va_start(ap, fmt);
                vsnprintf(rep.message, sizeof(rep.message), fmt, ap);
                va_end(ap);
        } else {
                snprintf(rep.message, sizeof(rep.message), "%s", mseg_strerror(code));
        }
        conn_send_reply(c, &rep, -1);
}

/* ------------------------------------------------------------ requests */

static int conn_groups(struct conn *c) {
        socklen_t len = sizeof(c->groups);

        if (c->ngroups >= 0)
                return c->ngroups;
        /* SO_PEERGROUPS (4.13) gives the supplementary groups at connect(). */
        if (getsockopt(c->fd, SOL_SOCKET, SO_PEERGROUPS, c->groups, &len) < 0)
                len = 0;        /* ERANGE (more than GROUPS_MAX) or old kernel: primary gid only */
        c->ngroups = (int) (len / sizeof(gid_t));
        return c->ngroups;
}

static int check_access(struct conn *c, const struct segment *s, unsigned want) {
        int r = segment_access(s, c->cred.uid, c->cred.gid, NULL, 0, want);

        if (r == -EACCES && c->cred.uid != s->uid && c->cred.gid != s->gid && conn_groups(c) > 0)
                r = segment_access(s, c->cred.uid, c->cred.gid, c->groups, c->ngroups, want);
        return r;
}

/* Attach @s to @c; returns the attachment id (>= 1) or a negative code. */
static int64_t attach(struct conn *c, struct segment *s) {
        unsigned i;

        if (c->nlive >= c->srv->cfg->lim.max_attach_per_client)
                return MSEG_E_LIMIT;
        if (c->nfree) {
                i = c->att_free[--c->nfree];
        } else {
                if (c->att_len == c->att_cap) {
                        unsigned cap = c->att_cap ? c->att_cap * 2 : 4;
                        struct segment **a = realloc(c->att, cap * sizeof(*a));
                        if (!a)
                                return -ENOMEM;
                        c->att = a;
                        unsigned *f = realloc(c->att_free, cap * sizeof(*f));
                        if (!f)
                                return -ENOMEM;
                        c->att_free = f;
                        c->att_cap = cap;
                }
                i = c->att_len++;
        }
        c->att[i] = s;
        c->nlive++;
        segment_ref(s);
        s->attached++;
        return (int64_t) i + 1;
}

static void do_detach(struct conn *c, const struct mseg_proto_request *req) {
        uint64_t i = req->attachment - 1;

        /* No reply, by design (PROTOCOL.md): an unknown id is ignored. */
        if (i >= c->att_len || !c->att[i]) {
                log_client(LOG_DEBUG, "pid %d: detach of unknown attachment %llu", (int) c->cred.pid,
                           (unsigned long long) req->attachment);
                return;
        }
        segment_detach(c->srv->tab, c->att[i], false);
        c->att[i] = NULL;
        c->att_free[c->nfree++] = (unsigned) i;
        c->nlive--;
}

static void do_hello(struct conn *c, const struct mseg_proto_request *req) {
        struct mseg_proto_reply rep = { .id = req->id, .op = MSEG_PROTO_OP_HELLO };

        if (c->hello_done) {
                reply_error(c, req, -EPROTO, "hello was already said");
                return;
        }
        if (req->version != MSEG_PROTO_VERSION) {
                reply_error(c, req, MSEG_E_VERSION, "protocol version %u is not supported; msegd speaks %u",
                            req->version, MSEG_PROTO_VERSION);
                c->close_after_send = true;
                return;
        }
        c->hello_done = true;
        c->features = req->features & MSEG_PROTO_F_ALL;
        hs_unlink(c);
        rep.version = MSEG_PROTO_VERSION;
        rep.features = MSEG_PROTO_F_ALL;
        rep.max_message = (uint32_t) c->srv->cfg->lim.max_message_size;
        snprintf(rep.server, sizeof(rep.server), "msegd %s", mseg_version());
        conn_send_reply(c, &rep, -1);
}

static void do_open(struct conn *c, const struct mseg_proto_request *req) {
        struct server *srv = c->srv;
        struct mseg_proto_reply rep = { .id = req->id, .op = req->op };
        struct segment *s = segtable_lookup(srv->tab, req->name);
        char msg[256] = "", q[600];
        bool created = false;
        int64_t att;
        int r, fd;

        if (req->has_token) {
                /* The token decides alone (tokens.c); only "open" carries one. */
                r = tokens_check(srv->tab, req->token, req->name,
                                 MSEG_PROTO_RIGHT_READ | (req->read_only ? 0 : MSEG_PROTO_RIGHT_WRITE), &s,
                                 msg, sizeof(msg));
                if (r < 0) {
                        log_client(LOG_INFO, "pid %d uid %u: token refused for segment %s: %s", (int) c->cred.pid,
                                   c->cred.uid, log_quote(req->name, q, 200), msg);
                        reply_error(c, req, r, "cannot open %s with this token: %s", log_quote(req->name, q, 200),
                                    msg);
                        return;
                }
        }
        if (req->op == MSEG_PROTO_OP_OPEN && !s) {
                reply_error(c, req, -ENOENT, "no segment named %s", log_quote(req->name, q, 300));
                return;
        }
        if (req->op == MSEG_PROTO_OP_CREATE && s) {
                reply_error(c, req, -EEXIST, "segment %s exists", log_quote(req->name, q, 300));
                return;
        }
        if (s && !req->has_token) {
                r = check_access(c, s, req->read_only ? 4 : 6);
                if (r < 0) {
                        reply_error(c, req, r, "uid %u may not open segment %s %s (mode %04o, owner %u)",
                                    c->cred.uid, log_quote(req->name, q, 200),
                                    req->read_only ? "for reading" : "for reading and writing", s->mode, s->uid);
                        return;
                }
        } else if (!s) {
                r = segtable_create(srv->tab, req, c->cred.uid, c->cred.gid, &s, msg, sizeof(msg));
                if (r < 0) {
                        reply_error(c, req, r, "cannot create %s: %s", log_quote(req->name, q, 200), msg);
                        if (r != -EEXIST && r != MSEG_E_LIMIT && r != -EDQUOT && r != -ENOSPC && r != -EINVAL &&
                            r != -EFBIG)
                                log_client(LOG_WARNING, "cannot create segment %s for uid %u: %s",
                                           log_quote(req->name, q, sizeof(q)), c->cred.uid, msg);
                        return;
                }
                created = true;
                log_info("segment %s created by uid %u pid %d: %llu bytes (max %llu), mode %04o%s%s",
                         log_quote(req->name, q, sizeof(q)), c->cred.uid, (int) c->cred.pid,
                         (unsigned long long) s->size, (unsigned long long) s->max_size, s->mode,
                         s->persistent ? ", persistent" : "", s->remove_on_last_close ? ", remove on last close" : "");
        }
        fd = req->read_only ? segment_ro_fd(s) : s->fd;
        if (fd < 0) {
                reply_error(c, req, fd, "cannot reopen the segment read-only: %s", strerror(-fd));
                goto undo;
        }
        att = attach(c, s);
        if (att < 0) {
                reply_error(c, req, (int) att, "too many segments attached on this connection (max %llu)",
                            (unsigned long long) srv->cfg->lim.max_attach_per_client);
                goto undo;
        }
        rep.attachment = (uint64_t) att;
        segment_info(s, &rep.info);
        rep.read_only = req->read_only;
        rep.created = created;
        conn_send_reply(c, &rep, fd);
        return;
undo:
        if (created)
                segtable_unlink(srv->tab, s);
}

static void do_remove(struct conn *c, const struct mseg_proto_request *req) {
        struct mseg_proto_reply rep = { .id = req->id, .op = req->op };
        struct segment *s = segtable_lookup(c->srv->tab, req->name);
        char q[600];

        if (!s) {
                reply_error(c, req, -ENOENT, "no segment named %s", log_quote(req->name, q, 300));
                return;
        }
        if (c->cred.uid != 0 && c->cred.uid != s->uid) {
                reply_error(c, req, -EACCES, "only the owner (uid %u) or root may remove %s", s->uid,
                            log_quote(req->name, q, 300));
                return;
        }
        log_info("segment %s removed by uid %u pid %d", log_quote(req->name, q, sizeof(q)), c->cred.uid,
                 (int) c->cred.pid);
        segtable_unlink(c->srv->tab, s);
        conn_send_reply(c, &rep, -1);
}

static void grow_done(void *arg, int result, const char *msg, uint64_t size) {
        struct conn *c = arg;
        struct mseg_proto_reply rep = { .id = c->busy_id, .op = MSEG_PROTO_OP_GROW, .size = size };

        c->pending--;
        if (c->closing) {
                if (c->handle_closed && c->pending == 0)
                        free(c);
                return;
        }
        c->busy = false;
        if (result < 0) {
                rep.error = result;
                snprintf(rep.message, sizeof(rep.message), "cannot grow: %s", msg);
        }
        conn_send_reply(c, &rep, -1);
        if (!c->closing && !c->out_head)
                conn_set_events(c, UV_READABLE | UV_DISCONNECT);
}

static void do_grow(struct conn *c, const struct mseg_proto_request *req) {
        struct mseg_proto_reply rep = { .id = req->id, .op = req->op };
        struct segment *s = segtable_lookup(c->srv->tab, req->name);
        char msg[256] = "", q[600];
        int r;

        if (!s || (req->has_segment_id && memcmp(s->id, req->segment_id, 16) != 0)) {
                reply_error(c, req, -ENOENT, "no segment named %s%s", log_quote(req->name, q, 300),
                            s ? " with that id (it was removed and the name reused)" : "");
                return;
        }
        if (req->has_token) {
                r = tokens_check(c->srv->tab, req->token, req->name, MSEG_PROTO_RIGHT_READ | MSEG_PROTO_RIGHT_WRITE,
                                 &s, msg, sizeof(msg));
                if (r < 0) {
                        reply_error(c, req, r, "cannot grow %s with this token: %s", log_quote(req->name, q, 200),
                                    msg);
                        return;
                }
                msg[0] = '\0';
        } else {
                r = check_access(c, s, 6);
                if (r < 0) {
                        reply_error(c, req, r, "uid %u may not write segment %s", c->cred.uid,
                                    log_quote(req->name, q, 300));
                        return;
                }
        }
        r = segtable_grow(c->srv->tab, s, req->size, grow_done, c, msg, sizeof(msg));
        if (r < 0) {
                reply_error(c, req, r, "cannot grow %s: %s", log_quote(req->name, q, 200), msg);
                return;
        }
        if (r == 1) {
                /* Replies go out in request order: read nothing more until
                 * the pool reports back (grow_done). */
                c->pending++;
                c->busy = true;
                c->busy_id = req->id;
                conn_set_events(c, UV_DISCONNECT);
                return;
        }
        rep.size = s->size;
        conn_send_reply(c, &rep, -1);
}

static void do_stat(struct conn *c, const struct mseg_proto_request *req) {
        struct mseg_proto_reply rep = { .id = req->id, .op = req->op };
        struct segment *s = segtable_lookup(c->srv->tab, req->name);
        char q[600];

        if (!s) {
                reply_error(c, req, -ENOENT, "no segment named %s", log_quote(req->name, q, 300));
                return;
        }
        segment_info(s, &rep.info);
        conn_send_reply(c, &rep, -1);
}

static void do_list(struct conn *c, const struct mseg_proto_request *req) {
        struct server *srv = c->srv;
        struct segment *page[MSEG_PROTO_LIST_MAX];
        struct mseg_proto_seginfo *infos;
        struct mseg_proto_reply rep = { .id = req->id, .op = req->op };
        size_t cap = MSEG_PROTO_LIST_MAX, n;
        bool more;

        infos = malloc(sizeof(*infos) * MSEG_PROTO_LIST_MAX);
        if (!infos) {
                reply_error(c, req, -ENOMEM, NULL);
                return;
        }
        /* Names can be long and escape to six bytes a character: shrink the
         * page until its reply fits one packet. */
        for (;;) {
                n = segtable_list(srv->tab, req->has_after ? req->after : NULL, page, cap, &more);
                for (size_t i = 0; i < n; i++)
                        segment_info(page[i], &infos[i]);
                rep.segs = infos;
                rep.nsegs = n;
                rep.more = more;
                if (mseg_proto_encode_reply(&rep, srv->wbuf, MSEG_PROTO_MSG_MAX) >= 0 || cap == 1)
                        break;
                cap /= 2;
        }
        conn_send_reply(c, &rep, -1);
        free(infos);
}

static void do_status(struct conn *c, const struct mseg_proto_request *req) {
        struct server *srv = c->srv;
        const struct msegd_limits *lim = &srv->cfg->lim;
        struct mseg_proto_reply rep = { .id = req->id, .op = req->op };
        struct mseg_proto_status *st = &rep.status;
        struct uid_usage *u = segtable_uid(srv->tab, c->cred.uid, false);

        st->segments = srv->tab->segments;
        st->bytes = srv->tab->bytes;
        st->clients = srv->nconns;
        st->uid_segments = u ? u->segments : 0;
        st->uid_bytes = u ? u->bytes : 0;
        st->max_segments = lim->max_segments;
        st->max_segments_per_uid = lim->max_segments_per_uid;
        st->max_bytes = lim->max_bytes;
        st->max_bytes_per_uid = lim->max_bytes_per_uid;
        st->max_clients = lim->max_clients;
        st->max_message_size = lim->max_message_size;
        st->max_segment_size = lim->max_segment_size;
        snprintf(st->server, sizeof(st->server), "msegd %s", mseg_version());
        conn_send_reply(c, &rep, -1);
}

/* A token for a segment, to whoever may access it with those rights
 * (write implies read). Tokens do not make tokens: a token holder asks the
 * one who granted it. */
static void do_grant(struct conn *c, const struct mseg_proto_request *req) {
        struct mseg_proto_reply rep = { .id = req->id, .op = req->op };
        struct segment *s = segtable_lookup(c->srv->tab, req->name);
        bool write = req->rights & MSEG_PROTO_RIGHT_WRITE;
        char msg[256] = "", q[600];
        int r;

        if (!s) {
                reply_error(c, req, -ENOENT, "no segment named %s", log_quote(req->name, q, 300));
                return;
        }
        r = check_access(c, s, write ? 6 : 4);
        if (r < 0) {
                reply_error(c, req, r, "uid %u may not %s segment %s (mode %04o, owner %u), so cannot grant it",
                            c->cred.uid, write ? "write" : "read", log_quote(req->name, q, 200), s->mode, s->uid);
                return;
        }
        r = tokens_grant(s, req->rights, req->ttl, rep.token, sizeof(rep.token), &rep.expires, msg, sizeof(msg));
        if (r < 0) {
                reply_error(c, req, r, "cannot grant %s: %s", log_quote(req->name, q, 200), msg);
                return;
        }
        log_info("uid %u pid %d was granted a %s token for segment %s, for %llu s", c->cred.uid, (int) c->cred.pid,
                 write ? "write" : "read", log_quote(req->name, q, sizeof(q)), (unsigned long long) req->ttl);
        conn_send_reply(c, &rep, -1);
}

static void do_rotate_key(struct conn *c, const struct mseg_proto_request *req) {
        struct mseg_proto_reply rep = { .id = req->id, .op = req->op };
        char msg[256] = "";
        int r;

        if (c->cred.uid != 0 && c->cred.uid != geteuid()) {
                reply_error(c, req, -EPERM, "only root or msegd's user (uid %u) may rotate the token key",
                            (unsigned) geteuid());
                return;
        }
        r = tokens_rotate(&rep.generation, msg, sizeof(msg));
        if (r < 0) {
                log_error("token key rotation failed: %s", msg);
                reply_error(c, req, r, "%s", msg);
                return;
        }
        log_notice("token key rotated by uid %u pid %d: generation %u; every earlier token is void", c->cred.uid,
                   (int) c->cred.pid, rep.generation);
        conn_send_reply(c, &rep, -1);
}

static void handle_packet(struct conn *c, const char *buf, size_t len, unsigned nfds) {
        struct mseg_proto_request req;
        char err[256];
        bool has_id;
        int r;

        r = mseg_proto_decode_request(buf, len, &req, &has_id, err, sizeof(err));
        if (r < 0 && !has_id) {
                log_client(LOG_INFO, "pid %d uid %u: bad packet, closing: %s", (int) c->cred.pid, c->cred.uid, err);
                reply_error(c, NULL, -EBADMSG, "%s", err);
                c->close_after_send = true;
                return;
        }
        if (nfds) {
                reply_error(c, &req, -EBADMSG, "clients may not send descriptors (%u closed)", nfds);
                return;
        }
        if (r < 0) {
                log_client(LOG_DEBUG, "pid %d uid %u: bad request: %s", (int) c->cred.pid, c->cred.uid, err);
                reply_error(c, &req, r, "%s", err);
                return;
        }
        if (!c->hello_done && req.op != MSEG_PROTO_OP_HELLO) {
                reply_error(c, &req, -EPROTO, "the first request must be hello");
                c->close_after_send = true;
                return;
        }
        switch (req.op) {
        case MSEG_PROTO_OP_HELLO:
                do_hello(c, &req);
                break;
        case MSEG_PROTO_OP_CREATE:
        case MSEG_PROTO_OP_OPEN:
        case MSEG_PROTO_OP_OPEN_OR_CREATE:
                do_open(c, &req);
                break;
        case MSEG_PROTO_OP_REMOVE:
                do_remove(c, &req);
                break;
        case MSEG_PROTO_OP_GROW:
                do_grow(c, &req);
                break;
        case MSEG_PROTO_OP_LIST:
                do_list(c, &req);
                break;
        case MSEG_PROTO_OP_STAT:
                do_stat(c, &req);
                break;
        case MSEG_PROTO_OP_STATUS:
                do_status(c, &req);
                break;
        case MSEG_PROTO_OP_DETACH:
                do_detach(c, &req);
                break;
        case MSEG_PROTO_OP_GRANT:
                do_grant(c, &req);
                break;
        case MSEG_PROTO_OP_ROTATE_KEY:
                do_rotate_key(c, &req);
                break;
        default:
                reply_error(c, &req, -EOPNOTSUPP, "unknown op");
                break;
        }
}

/* ------------------------------------------------------------ events */

static void conn_read(struct conn *c) {
        struct server *srv = c->srv;

        for (int i = 0; i < BATCH && !c->closing && !c->out_head && !c->close_after_send && !c->busy; i++) {
                unsigned nfds = 0;
                ssize_t n = mseg_proto_recv(c->fd, srv->rbuf, srv->cfg->lim.max_message_size, NULL, &nfds,
                                            MSG_DONTWAIT);
                if (n == -EAGAIN)
                        return;
                if (n == 0) {
                        conn_close(c);          /* EOF (or an empty packet, which the protocol forbids) */
                        return;
                }
                if (n < 0) {
                        if (n == -EMSGSIZE)
                                log_client(LOG_INFO, "pid %d uid %u: packet over %llu bytes, closing",
                                           (int) c->cred.pid, c->cred.uid,
                                           (unsigned long long) srv->cfg->lim.max_message_size);
                        else if (n == -EBADMSG)
                                log_client(LOG_INFO, "pid %d uid %u: too many descriptors, closing",
                                           (int) c->cred.pid, c->cred.uid);
                        conn_close(c);
                        return;
                }
                handle_packet(c, srv->rbuf, (size_t) n, nfds);
        }
}

static void on_conn(uv_poll_t *p, int status, int events) {
        struct conn *c = p->data;
        int r;

        if (c->closing)
                return;
        if (status < 0) {
                conn_close(c);
                return;
        }
        if (events & UV_WRITABLE) {
                r = flush_queue(c);
                if (r < 0 && r != -EAGAIN) {
                        conn_close(c);
                        return;
                }
                if (r == 0)
                        conn_set_events(c, c->busy ? UV_DISCONNECT : UV_READABLE | UV_DISCONNECT);
        }
        if ((events & UV_READABLE) && !c->out_head && !c->busy)
                conn_read(c);
        if (c->closing)
                return;
        if (c->close_after_send && !c->out_head) {
                conn_close(c);
                return;
        }
        if ((events & UV_DISCONNECT) && !(events & UV_READABLE))
                conn_close(c);
}

/* Refuse a connection with one error packet. */
static void refuse(int fd, int code, const char *msg) {
        struct mseg_proto_reply rep = { .id_null = true, .error = code };
        char buf[512];
        ssize_t n;

        snprintf(rep.message, sizeof(rep.message), "%s", msg);
        n = mseg_proto_encode_reply(&rep, buf, sizeof(buf));
        if (n > 0)
                (void) mseg_proto_send(fd, buf, (size_t) n, -1, MSG_DONTWAIT);
        /* Closing with the client's packets unread would hit it with
         * ECONNRESET ahead of our reason: read them off first (a few). */
        for (int i = 0; i < 8 && recv(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC) >= 0; i++)
                ;
        close(fd);
}

static void accept_one(struct server *srv, int fd) {
        const struct msegd_limits *lim = &srv->cfg->lim;
        struct conn *c;
        struct ucred cred;
        socklen_t len = sizeof(cred);
        struct uid_usage *u;
        char msg[128];
        int zero = 0;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
                close(fd);
                return;
        }
        if (srv->nconns >= lim->max_clients) {
                snprintf(msg, sizeof(msg), "max-clients (%llu) reached", (unsigned long long) lim->max_clients);
                log_client(LOG_WARNING, "refusing pid %d uid %u: %s", (int) cred.pid, cred.uid, msg);
                refuse(fd, MSEG_E_LIMIT, msg);
                return;
        }
        u = segtable_uid(srv->tab, cred.uid, true);
        if (!u) {
                refuse(fd, -ENOMEM, "out of memory");
                return;
        }
        if (u->clients >= lim->max_clients_per_uid) {
                snprintf(msg, sizeof(msg), "max-clients-per-uid (%llu) reached for uid %u",
                         (unsigned long long) lim->max_clients_per_uid, cred.uid);
                log_client(LOG_WARNING, "refusing pid %d: %s", (int) cred.pid, msg);
                refuse(fd, MSEG_E_LIMIT, msg);
                return;
        }
        c = calloc(1, sizeof(*c));
        if (!c) {
                refuse(fd, -ENOMEM, "out of memory");
                return;
        }
        /* Linux 6.16: refuse descriptors at the sender (EPERM) instead of
         * receiving and closing them. */
        if (!srv->passrights_unsupported &&
            setsockopt(fd, SOL_SOCKET, SO_PASSRIGHTS, &zero, sizeof(zero)) < 0)
                srv->passrights_unsupported = true;
        c->srv = srv;
        c->fd = fd;
        c->cred = cred;
        c->ngroups = -1;
        c->accepted_ms = now_ms();
        /* A client in another PID namespace names itself in its slots by a
         * pid we cannot check: note which one, while it is surely alive, so
         * its slots can be reclaimed once it is gone. */
        (void) mseg__slots_note_peer((uint32_t) cred.pid);
        c->poll.data = c;
        if (uv_poll_init(srv->loop, &c->poll, fd) < 0) {
                free(c);
                close(fd);
                return;
        }
        c->next = srv->conns;
        if (srv->conns)
                srv->conns->prev = c;
        srv->conns = c;
        srv->nconns++;
        u->clients++;
        c->hs_prev = srv->hs_tail;
        if (srv->hs_tail)
                srv->hs_tail->hs_next = c;
        else
                srv->hs_head = c;
        srv->hs_tail = c;
        c->in_hs = true;
        c->events = 0;
        conn_set_events(c, UV_READABLE | UV_DISCONNECT);
}

static void on_listen(uv_poll_t *p, int status, int events) {
        struct server *srv = p->data;

        (void) events;
        if (status < 0) {
                log_error("listening socket: %s", uv_strerror(status));
                return;
        }
        for (int i = 0; i < BATCH; i++) {
                int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd >= 0) {
                        accept_one(srv, fd);
                        continue;
                }
                if (errno == EINTR || errno == ECONNABORTED)
                        continue;
                if ((errno == EMFILE || errno == ENFILE) && srv->reserve_fd >= 0) {
                        /* Out of descriptors: use the spare one to take the
                         * connection off the queue and tell the client why. */
                        close(srv->reserve_fd);
                        srv->reserve_fd = -1;
                        fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                        if (fd >= 0)
                                refuse(fd, MSEG_E_LIMIT, "msegd is out of file descriptors");
                        srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                        log_client(LOG_WARNING, "out of file descriptors: refusing a connection");
                        continue;
                }
                if (errno != EAGAIN)
                        log_client(LOG_WARNING, "accept: %s", strerror(errno));
                return;
        }
}

static void on_timer(uv_timer_t *tm) {
        struct server *srv = tm->data;
        uint64_t now = now_ms();

        while (srv->hs_head && now - srv->hs_head->accepted_ms >= srv->cfg->handshake_timeout_ms) {
                struct conn *c = srv->hs_head;
                log_client(LOG_INFO, "pid %d uid %u said no hello within %llu ms, closing", (int) c->cred.pid,
                           c->cred.uid, (unsigned long long) srv->cfg->handshake_timeout_ms);
                conn_close(c);
        }
        segtable_tick(srv->tab);
        if (srv->cfg->sync_interval_ms && now - srv->last_sync_ms >= srv->cfg->sync_interval_ms) {
                srv->last_sync_ms = now;
                persist_tick(srv->tab);
        }
}

int server_start(struct server *srv, uv_loop_t *loop, const struct msegd_config *cfg,
                 struct segtable *tab, int listen_fd) {
        uint64_t tick;
        int r;

        memset(srv, 0, sizeof(*srv));
        srv->loop = loop;
        srv->cfg = cfg;
        srv->tab = tab;
        srv->listen_fd = listen_fd;
        srv->last_sync_ms = now_ms();
        srv->rbuf = malloc(MSEG_PROTO_MSG_MAX);
        srv->wbuf = malloc(MSEG_PROTO_MSG_MAX);
        srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (!srv->rbuf || !srv->wbuf)
                return -ENOMEM;
        /* Our own socket starts listening only now, when everything is
         * loaded; a passed one listens already, and this only sets the
         * backlog (somaxconn caps it). */
        if (listen(listen_fd, 4096) < 0)
                return -errno;
        r = uv_poll_init(loop, &srv->listen_poll, listen_fd);
        if (r < 0)
                return r;
        srv->listen_poll.data = srv;
        r = uv_poll_start(&srv->listen_poll, UV_READABLE, on_listen);
        if (r < 0)
                return r;
        srv->listening = true;
        uv_timer_init(loop, &srv->timer);
        srv->timer.data = srv;
        tick = cfg->handshake_timeout_ms < 1000 ? cfg->handshake_timeout_ms / 2 + 1 : 500;
        uv_timer_start(&srv->timer, on_timer, tick, tick);
        return 0;
}

void server_stop(struct server *srv) {
        if (srv->stopping)
                return;
        srv->stopping = true;
        if (srv->listening) {
                uv_poll_stop(&srv->listen_poll);
                uv_close((uv_handle_t *) &srv->listen_poll, NULL);
                srv->listening = false;
        }
        uv_timer_stop(&srv->timer);
        uv_close((uv_handle_t *) &srv->timer, NULL);
        while (srv->conns)
                conn_close(srv->conns);
        if (srv->reserve_fd >= 0)
                close(srv->reserve_fd);
        srv->reserve_fd = -1;
        free(srv->rbuf);
        free(srv->wbuf);
        srv->rbuf = srv->wbuf = NULL;
}
