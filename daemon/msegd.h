/* SPDX-License-Identifier: MIT */
/*
 * msegd.h — what msegd's files share.
 *
 *   main.c      arguments, config file, the listening socket, signals, the loop
 *   shim.h      the thin seam where systemd integration plugs in (issue 5)
 *   server.c    connections: accept, read, decode, dispatch, reply (uv_poll_t)
 *   segtable.c  name -> segment, owners and modes, limits and quotas
 *   memfd.c     creating, sealing and reopening the memfds
 *   persist.c   persistent segments: state files in the state directory
 *   fdstore.c   segments kept by the service manager across restarts (issue 5)
 *   tokens.c    the token key; granting and checking capability tokens
 *   notify.c    STATUS= and watchdog pings to the service manager (issue 5)
 *   log.c       stderr logging with journald priorities
 *
 * msegd is single-threaded except for persist.c's copies, which run on
 * libuv's thread pool with their own descriptor and a reference on the
 * segment.
 */
#ifndef MSEGD_H
#define MSEGD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <syslog.h>

#include <uv.h>

#include "proto.h"

#define MSEGD_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ---- configuration (main.c) ---- */

struct msegd_limits {
        uint64_t max_segments;
        uint64_t max_segments_per_uid;
        uint64_t max_bytes;
        uint64_t max_bytes_per_uid;
        uint64_t max_clients;
        uint64_t max_clients_per_uid;
        uint64_t max_message_size;
        uint64_t max_segment_size;
        uint64_t max_attach_per_client;
};

struct msegd_config {
        char *socket_path;
        char *state_dir;                /* NULL: no persistent segments */
        bool state_dir_given;
        bool foreground;
        int log_level;
        unsigned socket_mode;
        uint64_t handshake_timeout_ms;
        uint64_t sync_interval_ms;
        struct msegd_limits lim;
};

/* ---- log.c ---- */

void log_init(int level);
void log_set_level(int level);
int log_level_from_name(const char *s);
void log_msg(int level, const char *fmt, ...) MSEGD_PRINTF(2, 3);
/* For messages a client can trigger: rate-limited. */
void log_client(int level, const char *fmt, ...) MSEGD_PRINTF(2, 3);
/* Quote @s for a log line, escaping control characters. */
const char *log_quote(const char *s, char *buf, size_t cap);
uint64_t now_ms(void);

#define log_error(...)   log_msg(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...)  log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...)    log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)   log_msg(LOG_DEBUG, __VA_ARGS__)

/* ---- memfd.c ---- */

/* A new memfd of @max_size bytes (sparse), sealed against shrinking and
 * growing, mode 0600. Returns the descriptor or -errno. */
int memfd_segment_new(const char *name, uint64_t max_size);
/* Check an adopted descriptor: a memfd of exactly @size bytes with the
 * seals above. 0 or -errno. */
int memfd_segment_check(int fd, uint64_t size);
/* A second descriptor for the same memfd, opened O_RDONLY through
 * /proc/self/fd. Returns it or -errno. */
int memfd_reopen_ro(int fd);

/* ---- segtable.c ---- */

struct mseg;                    /* libmseg's handle (client-lib/internal.h) */

struct segment {
        char *name;                     /* NULL once removed */
        uint8_t id[16];
        int fd;                         /* read-write memfd */
        int ro_fd;                      /* O_RDONLY reopen, made on first use; -1 */
        uint8_t *base;                  /* msegd's own mapping of max_size bytes */
        struct mseg *handle;            /* libmseg handle on that mapping */
        uint64_t size;                  /* usable bytes (charged to the owner) */
        uint64_t max_size;
        uint32_t uid, gid, mode;
        bool persistent;
        bool remove_on_last_close;
        bool charged;                   /* counts against the limits (named or attached) */
        unsigned refs;                  /* name + attachments + work in flight */
        unsigned attached;              /* connection attachments */
        bool saving, save_again, dirty; /* persist.c */
        bool reclaim_pending;           /* a reclaim could not run: retry */
        bool reclaiming, reclaim_again; /* a reclaim is on the thread pool */
        uint64_t reclaim_until_ms;      /* retry reclaims until then (a client died) */
        bool in_fdstore;                /* fdstore.c: held by the service manager */
        struct segment *hnext;          /* hash chain */
        struct segment *lprev, *lnext;  /* every live segment */
};

struct uid_usage {
        uint32_t uid;
        uint64_t segments, bytes, clients;
};

struct segtable {
        struct segment **buckets;
        size_t nbuckets;
        size_t nnamed;
        uint8_t hash_key[16];
        struct segment *all;            /* every live segment, named or not */
        uint64_t segments, bytes;       /* totals over live segments */
        struct uid_usage *uids;
        size_t nuids, uids_cap;
        const struct msegd_config *cfg;
        uv_loop_t *loop;
};

int segtable_init(struct segtable *t, const struct msegd_config *cfg, uv_loop_t *loop);
void segtable_done(struct segtable *t);
struct segment *segtable_lookup(struct segtable *t, const char *name);
struct uid_usage *segtable_uid(struct segtable *t, uint32_t uid, bool create);

/* Create a named segment for @uid/@gid; on success it holds one reference
 * (its name). Errors: -EEXIST, -EINVAL, -EFBIG, -EDQUOT, -ENOSPC,
 * MSEG_E_LIMIT, -ENOMEM, -errno; @msg says why. */
int segtable_create(struct segtable *t, const struct mseg_proto_request *req, uint32_t uid,
                    uint32_t gid, struct segment **ret, char *msg, size_t msglen);
/* Insert a segment rebuilt from a state file (persist.c); takes ownership. */
int segtable_adopt(struct segtable *t, struct segment *s);
/* Drop the name (like shm_unlink). */
void segtable_unlink(struct segtable *t, struct segment *s);
void segment_ref(struct segment *s);
void segment_unref(struct segtable *t, struct segment *s);
/* An attachment ends: reclaim what dead clients held; maybe remove. */
void segment_detach(struct segtable *t, struct segment *s, bool disconnect);
/* Grow @s to @new_size (charged to its owner first). Returns 0 when nothing
 * was to do, 1 when the work was queued (@done runs on the loop later, with
 * 0 or a negative code, a message and the usable size), or a negative code
 * with @msg saying why. */
typedef void (*segtable_grow_cb)(void *arg, int result, const char *msg, uint64_t size);
int segtable_grow(struct segtable *t, struct segment *s, uint64_t new_size, segtable_grow_cb done, void *arg,
                  char *msg, size_t msglen);
/* Access: 4 = read, 2 = write, as mode bits. 0 or -EACCES. */
int segment_access(const struct segment *s, uint32_t uid, uint32_t gid, const gid_t *groups,
                   int ngroups, unsigned want);
void segment_info(const struct segment *s, struct mseg_proto_seginfo *info);
int segment_ro_fd(struct segment *s);
/* Sorted page of names after @after (NULL: from the start). Returns how
 * many were written to @out (at most @cap); *ret_more tells if more follow. */
size_t segtable_list(struct segtable *t, const char *after, struct segment **out, size_t cap, bool *ret_more);
/* Periodic work: retry reclaims that could not run. Reclaims and grows run
 * on the thread pool: msegd's loop never waits on a lock in a segment. */
void segtable_tick(struct segtable *t);
/* Map a fresh memfd, format it (or validate it), and build the handle. */
int segment_map(struct segment *s, bool format, char *msg, size_t msglen);
void segment_free_raw(struct segment *s);

/* ---- persist.c ---- */

int persist_init(const struct msegd_config *cfg);
int persist_load_all(struct segtable *t);
/* Start writing @s to its state file (thread pool); coalesces repeats. */
void persist_save(struct segtable *t, struct segment *s);
void persist_remove(struct segtable *t, struct segment *s);
/* Every sync interval: save the dirty ones. */
void persist_tick(struct segtable *t);

/* ---- fdstore.c ---- */

/* Take the segments the service manager passed back (validated; bad ones
 * logged, closed and removed from the store). Returns how many, or -errno. */
int fdstore_adopt(struct segtable *t);
/* A named segment appeared (created, loaded): store it. No-op if stored. */
void fdstore_segment_added(struct segment *s);
/* Its name was removed: take it out of the store. */
void fdstore_segment_removed(struct segment *s);

/* ---- tokens.c: capability tokens (protocol/token.c has the format) ---- */

/* Load the token key from the state directory, or make one (in memory
 * only without a state directory). 0 or -errno. */
int tokens_init(const struct msegd_config *cfg);
void tokens_done(void);
/* A token for @s with @rights (MSEG_PROTO_RIGHT_*) for @ttl seconds. */
int tokens_grant(const struct segment *s, uint32_t rights, uint64_t ttl, char *buf, size_t cap,
                 uint64_t *ret_expires, char *msg, size_t msglen);
/* Check @token for the segment named @name and rights @want. Returns 0
 * with *ret set, MSEG_E_TOKEN (invalid, expired, rotated, another
 * segment), -ENOENT or -EACCES (fewer rights), with @msg saying why. */
int tokens_check(struct segtable *t, const char *token, const char *name, uint32_t want,
                 struct segment **ret, char *msg, size_t msglen);
/* A new key of the next generation, on disk before it is used. */
int tokens_rotate(uint32_t *ret_generation, char *msg, size_t msglen);

/* ---- server.c ---- */

struct conn;

struct server {
        uv_loop_t *loop;
        const struct msegd_config *cfg;
        struct segtable *tab;
        int listen_fd;
        uv_poll_t listen_poll;
        bool listening;
        int reserve_fd;                 /* spare descriptor for EMFILE */
        struct conn *conns;             /* every connection */
        struct conn *hs_head, *hs_tail; /* waiting for hello, oldest first */
        uint64_t nconns;
        uv_timer_t timer;
        uint64_t last_sync_ms;
        char *rbuf, *wbuf;
        bool passrights_unsupported;
        bool stopping;
        uint64_t served;                /* requests answered */
};

int server_start(struct server *srv, uv_loop_t *loop, const struct msegd_config *cfg,
                 struct segtable *tab, int listen_fd);
void server_stop(struct server *srv);

/* ---- notify.c ---- */

/* Start STATUS= updates and watchdog pings (when a manager listens). */
void notify_start(uv_loop_t *loop, const struct segtable *t, const struct server *s);
void notify_stop(void);

#endif /* MSEGD_H */
