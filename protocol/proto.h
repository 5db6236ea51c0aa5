/* SPDX-License-Identifier: MIT */
/*
 * proto.h — the wire protocol between libmseg and msegd, as C structs.
 *
 * PROTOCOL.md is the specification; this header is its C shape. Both sides
 * link protocol/ (message.c encodes and strictly decodes the JSON, the only
 * file that includes jansson; fdpass.c moves packets and descriptors;
 * token.c reads and writes capability tokens), so no json_t ever crosses a
 * module boundary: callers fill and read the structs below.
 *
 * Every limit a peer controls is a constant here: message length, name
 * length, descriptors per packet, list page size.
 */
#ifndef MSEG_PROTO_H
#define MSEG_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MSEG_PROTO_VERSION      1u
#define MSEG_PROTO_MSG_MAX      65536u  /* bytes per packet, hard upper bound */
#define MSEG_PROTO_MSG_MIN      4096u   /* smallest max-message-size msegd accepts */
#define MSEG_PROTO_NAME_MAX     255u    /* segment names: 1..255 bytes of UTF-8, no '/' */
#define MSEG_PROTO_TEXT_MAX     255u    /* error messages, client/server names */
#define MSEG_PROTO_LIST_MAX     128u    /* segments per list reply page */
#define MSEG_PROTO_FDS_MAX      4u      /* descriptors a receiver makes room for */
#define MSEG_PROTO_TOKEN_MAX    512u    /* printable capability token, bytes (tokens are <= 451) */
#define MSEG_PROTO_TTL_MAX      2592000u /* longest token lifetime: 30 days, in seconds */

/* hello features (bits here, strings on the wire) */
#define MSEG_PROTO_F_RO_FD      0x1u    /* read-only opens get an O_RDONLY descriptor */
#define MSEG_PROTO_F_GROW       0x2u    /* "grow" is served */
#define MSEG_PROTO_F_PERSISTENT 0x4u    /* persistent segments (state directory) */
#define MSEG_PROTO_F_AUTOREMOVE 0x8u    /* remove_on_last_close */
#define MSEG_PROTO_F_TOKENS     0x10u   /* capability tokens: grant, rotate-key, "token" */
#define MSEG_PROTO_F_ALL        0x1fu

/* Token rights (write implies read: a write token carries both bits). */
#define MSEG_PROTO_RIGHT_READ   0x1u
#define MSEG_PROTO_RIGHT_WRITE  0x2u

enum mseg_proto_op {
        MSEG_PROTO_OP_NONE = 0,
        MSEG_PROTO_OP_HELLO,
        MSEG_PROTO_OP_CREATE,
        MSEG_PROTO_OP_OPEN,
        MSEG_PROTO_OP_OPEN_OR_CREATE,
        MSEG_PROTO_OP_REMOVE,
        MSEG_PROTO_OP_GROW,
        MSEG_PROTO_OP_LIST,
        MSEG_PROTO_OP_STAT,
        MSEG_PROTO_OP_STATUS,
        MSEG_PROTO_OP_DETACH,           /* the one request without a reply */
        MSEG_PROTO_OP_GRANT,            /* a capability token for a segment */
        MSEG_PROTO_OP_ROTATE_KEY,       /* a new token key: every token so far is void */
        MSEG_PROTO_OP__COUNT,
};

/* Wire name of an op ("open-or-create"), or NULL. */
const char *mseg_proto_op_name(enum mseg_proto_op op);

/* units.c: "64M", "1GiB", "4096" -> bytes (K = 1024); 0 or -EINVAL. Shared
 * by msegd's options and msegctl's arguments. */
int mseg_proto_parse_size(const char *s, uint64_t *ret);

/* One request. Fields an op does not use are zero. */
struct mseg_proto_request {
        uint64_t id;                    /* echoed by the reply */
        enum mseg_proto_op op;
        char name[MSEG_PROTO_NAME_MAX + 1];     /* NUL-terminated */
        /* hello */
        uint32_t version;
        uint32_t features;
        char client[MSEG_PROTO_TEXT_MAX + 1];
        /* create, open-or-create */
        uint64_t size;                  /* grow: the new usable size */
        uint64_t max_size;              /* 0 = size */
        uint32_t mode;                  /* 0 = 0600 */
        bool persistent;
        bool remove_on_last_close;
        /* open, open-or-create */
        bool read_only;
        /* grow: the segment this client has mapped (guards against a name
         * that was removed and reused) */
        bool has_segment_id;
        uint8_t segment_id[16];
        /* detach: the attachment an open returned */
        uint64_t attachment;
        /* list: resume after this name */
        bool has_after;
        char after[MSEG_PROTO_NAME_MAX + 1];
        /* open, grow: a capability token (NUL-terminated; decides alone) */
        bool has_token;
        char token[MSEG_PROTO_TOKEN_MAX + 1];
        /* grant */
        uint32_t rights;                /* MSEG_PROTO_RIGHT_READ, or READ | WRITE */
        uint64_t ttl;                   /* seconds, 1 .. MSEG_PROTO_TTL_MAX */
};

/* A segment as msegd describes it. */
struct mseg_proto_seginfo {
        char name[MSEG_PROTO_NAME_MAX + 1];
        uint8_t id[16];
        uint64_t size;                  /* usable bytes */
        uint64_t max_size;              /* reserved (the descriptor's length) */
        uint32_t mode;
        uint32_t uid, gid;
        bool persistent;
        bool remove_on_last_close;
        uint32_t clients;               /* connections attached */
};

struct mseg_proto_status {
        uint64_t segments, bytes, clients;              /* daemon-wide use */
        uint64_t uid_segments, uid_bytes;               /* the caller's uid */
        uint64_t max_segments, max_segments_per_uid;
        uint64_t max_bytes, max_bytes_per_uid;
        uint64_t max_clients, max_message_size, max_segment_size;
        char server[MSEG_PROTO_TEXT_MAX + 1];
};

/* One reply. error == 0: the result fields of op are valid. */
struct mseg_proto_reply {
        uint64_t id;
        bool id_null;                   /* the request's id was unreadable */
        enum mseg_proto_op op;          /* which result schema (not on the wire) */
        int error;                      /* 0, -errno or MSEG_E_* */
        char message[MSEG_PROTO_TEXT_MAX + 1];
        /* hello */
        uint32_t version;
        uint32_t features;
        uint32_t max_message;
        char server[MSEG_PROTO_TEXT_MAX + 1];
        /* create, open, open-or-create, stat */
        struct mseg_proto_seginfo info;
        bool read_only;                 /* the descriptor's access mode */
        bool created;
        uint64_t attachment;            /* detach with this (>= 1) */
        /* grow */
        uint64_t size;
        /* list: segs points at MSEG_PROTO_LIST_MAX entries (encode: the
         * caller's array; decode: the caller provides the array too) */
        struct mseg_proto_seginfo *segs;
        size_t nsegs;
        bool more;
        /* status */
        struct mseg_proto_status status;
        /* grant */
        char token[MSEG_PROTO_TOKEN_MAX + 1];
        uint64_t expires;               /* seconds since the epoch */
        /* rotate-key */
        uint32_t generation;            /* the new key's */
};

/* ---- message.c: JSON encoding and strict decoding ---- */

/* Encode into @buf (at most @cap bytes, no NUL). Returns the length, or
 * -EMSGSIZE if it does not fit, -EINVAL for unencodable input (bad UTF-8). */
ssize_t mseg_proto_encode_request(const struct mseg_proto_request *req, char *buf, size_t cap);
ssize_t mseg_proto_encode_reply(const struct mseg_proto_reply *rep, char *buf, size_t cap);

/* Decode one packet. On failure returns -EBADMSG (not JSON, wrong shape),
 * -EOPNOTSUPP (unknown op) or -ENAMETOOLONG / -EINVAL (field out of range),
 * and writes a reason into @err (NUL-terminated, at most @errlen bytes).
 * Whenever the packet held a readable "id", *ret_has_id is set and req->id
 * holds it, so the error reply can echo it. */
int mseg_proto_decode_request(const void *buf, size_t len, struct mseg_proto_request *req,
                              bool *ret_has_id, char *err, size_t errlen);

/* Decode a reply to a request of @op with id @id; rep->segs must point at
 * MSEG_PROTO_LIST_MAX entries for list. An error reply decodes fine (0,
 * rep->error set). Returns 0, or -EBADMSG with @err saying why. */
int mseg_proto_decode_reply(const void *buf, size_t len, enum mseg_proto_op op,
                            struct mseg_proto_reply *rep, char *err, size_t errlen);

/* Symbolic names of codes ("ENOENT", "MSEG_E_LIMIT") and back. Unknown
 * codes encode as "EIO"; unknown names decode as MSEG_E_PROTO. */
const char *mseg_proto_code_name(int code);
int mseg_proto_code_from_name(const char *name);

/* Valid segment name: 1..255 bytes of UTF-8 without NUL, no '/', not "."
 * or "..". */
bool mseg_proto_name_ok(const char *name, size_t len);
/* Why @name is not valid ("contains '/'"), or NULL if it is. */
const char *mseg_proto_name_problem(const char *name, size_t len);
/* Strict UTF-8 without NUL (what a JSON string can carry). */
bool mseg_proto_utf8_ok(const char *s, size_t len);

/* 16 bytes <-> 32 lowercase hex digits (+ NUL). */
void mseg_proto_id_to_hex(const uint8_t id[16], char hex[33]);
int mseg_proto_id_from_hex(const char *hex, uint8_t id[16]);

/* The metadata record at the start of a persistent segment's state file
 * (msegd only). Encoded as one JSON object. */
ssize_t mseg_proto_encode_state(const struct mseg_proto_seginfo *info, char *buf, size_t cap);
int mseg_proto_decode_state(const void *buf, size_t len, struct mseg_proto_seginfo *info,
                            char *err, size_t errlen);

/* ---- token.c: capability tokens (libsodium crypto_auth) ----
 *
 * A token is "mst1." followed by the URL-safe base64 (no padding) of
 *
 *   version(1) = 1 | generation(4, LE) | segment id(16) | rights(1) |
 *   expires(8, LE, seconds since the epoch) | nonce(16) | name length(1) |
 *   name(1..255) | MAC(32)
 *
 * where MAC = crypto_auth (HMAC-SHA-512-256) of everything before it under
 * msegd's key of that generation. Only msegd holds the key; PROTOCOL.md
 * section 9 describes the format for other implementers. */

#define MSEG_PROTO_TOKEN_KEYBYTES 32u
#define MSEG_PROTO_TOKEN_PREFIX "mst1."

struct mseg_proto_token {
        uint32_t generation;
        uint8_t segment_id[16];
        uint32_t rights;                /* READ, or READ | WRITE */
        uint64_t expires;
        uint8_t nonce[16];
        char name[MSEG_PROTO_NAME_MAX + 1];
};

/* Write the printable token for @t under @key into @buf (@cap bytes, NUL
 * included). Returns its length, -EINVAL for fields out of range, or
 * -EMSGSIZE. */
ssize_t mseg_proto_token_encode(const struct mseg_proto_token *t, const uint8_t key[MSEG_PROTO_TOKEN_KEYBYTES],
                                char *buf, size_t cap);

/* Check the printable token @s (@len bytes) and decode it into @t. Checks,
 * in order: the shape (prefix, base64, lengths, version), the generation
 * against @generation, the MAC under @key (constant-time), then the fields
 * (rights, name). Expiry and the segment are the caller's to check.
 * Returns 0, or MSEG_E_TOKEN with @err saying which check failed; @t is
 * written only on success. */
int mseg_proto_token_decode(const char *s, size_t len, const uint8_t key[MSEG_PROTO_TOKEN_KEYBYTES],
                            uint32_t generation, struct mseg_proto_token *t, char *err, size_t errlen);

/* ---- fdpass.c: one packet per call, descriptors as SCM_RIGHTS ---- */

/* Send one packet with @fd attached (-1: none). @flags are added to
 * MSG_NOSIGNAL. Returns 0, -EAGAIN, -EMSGSIZE or another -errno. A short
 * send cannot happen on SOCK_SEQPACKET. */
int mseg_proto_send(int sock, const void *buf, size_t len, int fd, int flags);

/* Receive one packet into @buf (@cap bytes) with MSG_CMSG_CLOEXEC.
 * Returns the packet length, 0 at end of stream, or -errno: -EAGAIN,
 * -EMSGSIZE (the packet was longer than @cap: MSG_TRUNC), -EBADMSG (too
 * many descriptors: MSG_CTRUNC). On every path, descriptors the caller does
 * not take are closed. If @ret_fd is non-NULL it receives the first
 * descriptor of the packet (or -1); @ret_nfds (may be NULL) counts every
 * descriptor that arrived, taken or closed. */
ssize_t mseg_proto_recv(int sock, void *buf, size_t cap, int *ret_fd, unsigned *ret_nfds, int flags);

#endif /* MSEG_PROTO_H */
