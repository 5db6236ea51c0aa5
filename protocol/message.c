/* SPDX-License-Identifier: MIT */
/*
 * message.c — the JSON of the msegd protocol: encoding, and strict decoding
 * of what a peer sent. The only file in mseg that includes jansson.
 *
 * Everything a peer sends is untrusted. Decoding therefore:
 *   - parses with JSON_REJECT_DUPLICATES (jansson otherwise keeps the last of
 *     two equal keys) and without JSON_DECODE_ANY / JSON_ALLOW_NUL, so a
 *     packet is exactly one object and strings hold no NUL;
 *   - unpacks each op's schema with JSON_STRICT, so an unknown field is an
 *     error, a wrong type is an error, and a missing required field is an
 *     error, each with jansson's reason ("Expected integer, got string");
 *   - bounds every string and integer itself (names 1..255 bytes without
 *     '/', sizes within MSEG_MAX_SIZE, modes within 0777, ...).
 * Nesting deeper than a schema allows fails the schema; the parser's own
 * depth cap (2048) and the 64 KiB packet cap bound the work per packet
 * (linux-facts.md section 8: about 20x heap amplification, so at most
 * ~1.3 MB transient per packet).
 *
 * Reply decoding (the client side) is just as strict: within a protocol
 * version the fields are fixed; anything new is announced by a feature in
 * the handshake first.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "mseg.h"
#include "proto.h"

static const char *const op_names[MSEG_PROTO_OP__COUNT] = {
        [MSEG_PROTO_OP_HELLO] = "hello",
        [MSEG_PROTO_OP_CREATE] = "create",
        [MSEG_PROTO_OP_OPEN] = "open",
        [MSEG_PROTO_OP_OPEN_OR_CREATE] = "open-or-create",
        [MSEG_PROTO_OP_REMOVE] = "remove",
        [MSEG_PROTO_OP_GROW] = "grow",
        [MSEG_PROTO_OP_LIST] = "list",
        [MSEG_PROTO_OP_STAT] = "stat",
        [MSEG_PROTO_OP_STATUS] = "status",
        [MSEG_PROTO_OP_DETACH] = "detach",
        [MSEG_PROTO_OP_GRANT] = "grant",
        [MSEG_PROTO_OP_ROTATE_KEY] = "rotate-key",
};

const char *mseg_proto_op_name(enum mseg_proto_op op) {
        if (op <= MSEG_PROTO_OP_NONE || op >= MSEG_PROTO_OP__COUNT)
                return NULL;
        return op_names[op];
}

static enum mseg_proto_op op_from_name(const char *s) {
        for (int i = 1; i < MSEG_PROTO_OP__COUNT; i++)
                if (strcmp(op_names[i], s) == 0)
                        return (enum mseg_proto_op) i;
        return MSEG_PROTO_OP_NONE;
}

static const struct feature {
        uint32_t bit;
        const char *name;
} features[] = {
        { MSEG_PROTO_F_RO_FD, "ro-fd" },
        { MSEG_PROTO_F_GROW, "grow" },
        { MSEG_PROTO_F_PERSISTENT, "persistent" },
        { MSEG_PROTO_F_AUTOREMOVE, "remove-on-last-close" },
        { MSEG_PROTO_F_TOKENS, "tokens" },
};
#define N_FEATURES (sizeof(features) / sizeof(features[0]))

/* ------------------------------------------------------------ codes */

static const struct code {
        int code;
        const char *name;
} codes[] = {
        { -EPERM, "EPERM" }, { -ENOENT, "ENOENT" }, { -EIO, "EIO" }, { -E2BIG, "E2BIG" },
        { -EBADF, "EBADF" }, { -EAGAIN, "EAGAIN" }, { -ENOMEM, "ENOMEM" }, { -EACCES, "EACCES" },
        { -EBUSY, "EBUSY" }, { -EEXIST, "EEXIST" }, { -EINVAL, "EINVAL" }, { -ENFILE, "ENFILE" },
        { -EMFILE, "EMFILE" }, { -EFBIG, "EFBIG" }, { -ENOSPC, "ENOSPC" }, { -EROFS, "EROFS" },
        { -ERANGE, "ERANGE" }, { -ENAMETOOLONG, "ENAMETOOLONG" }, { -ENOSYS, "ENOSYS" },
        { -EPROTO, "EPROTO" }, { -EBADMSG, "EBADMSG" }, { -EOVERFLOW, "EOVERFLOW" },
        { -EMSGSIZE, "EMSGSIZE" }, { -EOPNOTSUPP, "EOPNOTSUPP" }, { -ETIMEDOUT, "ETIMEDOUT" },
        { -EDQUOT, "EDQUOT" }, { -ECONNRESET, "ECONNRESET" }, { -ESTALE, "ESTALE" },
        { -ENOTCONN, "ENOTCONN" }, { -EPROTONOSUPPORT, "EPROTONOSUPPORT" },
        { MSEG_E_PROTO, "MSEG_E_PROTO" }, { MSEG_E_CORRUPT, "MSEG_E_CORRUPT" },
        { MSEG_E_VERSION, "MSEG_E_VERSION" }, { MSEG_E_NODAEMON, "MSEG_E_NODAEMON" },
        { MSEG_E_TOKEN, "MSEG_E_TOKEN" }, { MSEG_E_LIMIT, "MSEG_E_LIMIT" },
};

const char *mseg_proto_code_name(int code) {
        for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
                if (codes[i].code == code)
                        return codes[i].name;
        return "EIO";
}

int mseg_proto_code_from_name(const char *name) {
        for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
                if (strcmp(codes[i].name, name) == 0)
                        return codes[i].code;
        return MSEG_E_PROTO;
}

/* ------------------------------------------------------------ helpers */

/* Strict UTF-8 (no overlongs, no surrogates, no NUL): what jansson accepts. */
static bool utf8_ok(const char *s, size_t len) {
        const unsigned char *p = (const unsigned char *) s, *end = p + len;

        while (p < end) {
                unsigned c = *p++;
                unsigned n, min, cp;

                if (c == 0)
                        return false;
                if (c < 0x80)
                        continue;
                if ((c & 0xe0) == 0xc0)
                        n = 1, min = 0x80, cp = c & 0x1f;
                else if ((c & 0xf0) == 0xe0)
                        n = 2, min = 0x800, cp = c & 0x0f;
                else if ((c & 0xf8) == 0xf0)
                        n = 3, min = 0x10000, cp = c & 0x07;
                else
                        return false;
                if ((size_t) (end - p) < n)
                        return false;
                for (unsigned i = 0; i < n; i++) {
                        if ((p[i] & 0xc0) != 0x80)
                                return false;
                        cp = (cp << 6) | (p[i] & 0x3f);
                }
                p += n;
                if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
        }
        return true;
}

bool mseg_proto_utf8_ok(const char *s, size_t len) {
        return utf8_ok(s, len);
}

/* Segment names look like file names: no '/', not "." or "..". Names
 * never become paths in msegd (state files are named by segment id), but
 * a client may well make them into paths, and "." and ".." would then name
 * directories. Any other UTF-8 is allowed, control characters included:
 * JSON carries them escaped, and everything that prints a name escapes
 * them (log_quote in msegd, msegctl's output). */
const char *mseg_proto_name_problem(const char *name, size_t len) {
        if (!name || len == 0)
                return "is empty";
        if (len > MSEG_PROTO_NAME_MAX)
                return "is longer than 255 bytes";
        if (!utf8_ok(name, len))
                return memchr(name, 0, len) ? "contains a NUL byte" : "is not valid UTF-8";
        if (memchr(name, '/', len))
                return "contains '/'";
        if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
                return "is \".\" or \"..\"";
        return NULL;
}

bool mseg_proto_name_ok(const char *name, size_t len) {
        return mseg_proto_name_problem(name, len) == NULL;
}

void mseg_proto_id_to_hex(const uint8_t id[16], char hex[33]) {
        static const char digits[] = "0123456789abcdef";

        for (int i = 0; i < 16; i++) {
                hex[2 * i] = digits[id[i] >> 4];
                hex[2 * i + 1] = digits[id[i] & 15];
        }
        hex[32] = '\0';
}

static int hexval(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

int mseg_proto_id_from_hex(const char *hex, uint8_t id[16]) {
        if (!hex || strlen(hex) != 32)
                return -EINVAL;
        for (int i = 0; i < 16; i++) {
                int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
                if (hi < 0 || lo < 0)
                        return -EINVAL;
                id[i] = (uint8_t) (hi << 4 | lo);
        }
        return 0;
}

__attribute__((format(printf, 3, 4)))
static int fail(char *err, size_t errlen, const char *fmt, ...) {
        va_list ap;

        if (err && errlen) {
                va_start(ap, fmt);
                vsnprintf(err, errlen, fmt, ap);
                va_end(ap);
        }
        return -EBADMSG;
}

/* Copy a bounded, valid text into a fixed buffer; texts longer than the
 * buffer are cut at a character boundary (messages are for humans). */
static void copy_text(char *dst, size_t cap, const char *src, size_t len) {
        if (len >= cap) {
                len = cap - 1;
                while (len > 0 && ((unsigned char) src[len] & 0xc0) == 0x80)
                        len--;
        }
        memcpy(dst, src, len);
        dst[len] = '\0';
}

/* json_string of a text that may not be valid UTF-8 (a message built from
 * strerror and names): anything invalid becomes '?'. */
static json_t *text_json(const char *s) {
        char buf[MSEG_PROTO_TEXT_MAX + 1];
        size_t len = strnlen(s, MSEG_PROTO_TEXT_MAX);

        if (utf8_ok(s, len))
                return json_stringn(s, len);
        for (size_t i = 0; i < len; i++)
                buf[i] = (unsigned char) s[i] < 0x80 && s[i] ? s[i] : '?';
        return json_stringn(buf, len);
}

static ssize_t dump(json_t *root, char *buf, size_t cap) {
        size_t n;

        if (!root)
                return -EINVAL;
        n = json_dumpb(root, buf, cap, JSON_COMPACT);
        json_decref(root);
        if (n == 0)
                return -EINVAL;
        if (n > cap)
                return -EMSGSIZE;
        return (ssize_t) n;
}

/* A non-negative integer within @max. */
static bool int_ok(json_int_t v, uint64_t max) {
        return v >= 0 && (uint64_t) v <= max;
}

/* ------------------------------------------------------------ requests */

ssize_t mseg_proto_encode_request(const struct mseg_proto_request *req, char *buf, size_t cap) {
        const char *op = mseg_proto_op_name(req->op);
        json_t *root, *v;

        if (!op)
                return -EINVAL;
        root = json_pack("{s:I, s:s}", "id", (json_int_t) req->id, "op", op);
        if (!root)
                return -ENOMEM;
#define SET(key, val) do { v = (val); if (!v || json_object_set_new(root, key, v) < 0) goto fail; } while (0)
        switch (req->op) {
        case MSEG_PROTO_OP_HELLO: {
                json_t *fa = json_array();
                if (!fa)
                        goto fail;
                for (size_t i = 0; i < N_FEATURES; i++)
                        if (req->features & features[i].bit)
                                json_array_append_new(fa, json_string(features[i].name));
                SET("version", json_integer(req->version));
                SET("features", fa);
                if (req->client[0])
                        SET("client", text_json(req->client));
                break;
        }
        case MSEG_PROTO_OP_CREATE:
        case MSEG_PROTO_OP_OPEN_OR_CREATE:
                SET("name", json_string(req->name));
                SET("size", json_integer((json_int_t) req->size));
                if (req->max_size)
                        SET("max_size", json_integer((json_int_t) req->max_size));
                if (req->mode)
                        SET("mode", json_integer(req->mode));
                if (req->persistent)
                        SET("persistent", json_true());
                if (req->remove_on_last_close)
                        SET("remove_on_last_close", json_true());
                if (req->read_only)
                        SET("read_only", json_true());
                break;
        case MSEG_PROTO_OP_OPEN:
                SET("name", json_string(req->name));
                if (req->read_only)
                        SET("read_only", json_true());
                if (req->has_token)
                        SET("token", json_string(req->token));
                break;
        case MSEG_PROTO_OP_REMOVE:
        case MSEG_PROTO_OP_STAT:
                SET("name", json_string(req->name));
                break;
        case MSEG_PROTO_OP_GROW:
                SET("name", json_string(req->name));
                SET("size", json_integer((json_int_t) req->size));
                if (req->has_segment_id) {
                        char hex[33];
                        mseg_proto_id_to_hex(req->segment_id, hex);
                        SET("segment_id", json_string(hex));
                }
                if (req->has_token)
                        SET("token", json_string(req->token));
                break;
        case MSEG_PROTO_OP_GRANT:
                SET("name", json_string(req->name));
                SET("rights", json_string(req->rights & MSEG_PROTO_RIGHT_WRITE ? "write" : "read"));
                SET("ttl", json_integer((json_int_t) req->ttl));
                break;
        case MSEG_PROTO_OP_LIST:
                if (req->has_after)
                        SET("after", json_string(req->after));
                break;
        case MSEG_PROTO_OP_DETACH:
                SET("attachment", json_integer((json_int_t) req->attachment));
                break;
        case MSEG_PROTO_OP_STATUS:
        case MSEG_PROTO_OP_ROTATE_KEY:
        default:
                break;
        }
#undef SET
        return dump(root, buf, cap);
fail:
        json_decref(root);
        return -EINVAL;
}

/* Copy a name field, checking it. */
static int take_name(char *dst, const char *s, size_t len, const char *field, char *err, size_t errlen) {
        const char *why;

        if (len > MSEG_PROTO_NAME_MAX)
                return fail(err, errlen, "%s is %zu bytes, at most %u allowed", field, len,
                            MSEG_PROTO_NAME_MAX), -ENAMETOOLONG;
        why = mseg_proto_name_problem(s, len);
        if (why)
                return fail(err, errlen, "%s %s", field, why), -EINVAL;
        memcpy(dst, s, len);
        dst[len] = '\0';
        return 0;
}

static int decode_features(json_t *fa, uint32_t *ret, char *err, size_t errlen) {
        size_t i;
        json_t *f;
        uint32_t bits = 0;

        if (!fa)
                return *ret = 0, 0;
        if (!json_is_array(fa))
                return fail(err, errlen, "features: expected array");
        if (json_array_size(fa) > 64)
                return fail(err, errlen, "features: more than 64 entries");
        json_array_foreach(fa, i, f) {
                if (!json_is_string(f) || json_string_length(f) > 64)
                        return fail(err, errlen, "features: expected strings of at most 64 bytes");
                for (size_t k = 0; k < N_FEATURES; k++)
                        if (strcmp(features[k].name, json_string_value(f)) == 0)
                                bits |= features[k].bit;
                /* Unknown features are ignored: that is what they are for. */
        }
        *ret = bits;
        return 0;
}

int mseg_proto_decode_request(const void *buf, size_t len, struct mseg_proto_request *req,
                              bool *ret_has_id, char *err, size_t errlen) {
        json_error_t je;
        json_t *root, *jid, *jop, *features_json = NULL;
        const char *op = NULL, *name = NULL, *client = NULL, *after = NULL, *sid = NULL, *token = NULL;
        const char *rights = NULL;
        size_t name_len = 0, client_len = 0, after_len = 0, token_len = 0;
        json_int_t id = 0, version = 0, size = 0, max_size = 0, mode = 0, attachment = 0, ttl = 0;
        int persistent = 0, autoremove = 0, read_only = 0;
        int r, u;

        memset(req, 0, sizeof(*req));
        *ret_has_id = false;
        if (len == 0 || len > MSEG_PROTO_MSG_MAX)
                return fail(err, errlen, "packet of %zu bytes", len);
        root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
        if (!root)
                return fail(err, errlen, "not JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        if (!json_is_object(root)) {
                r = fail(err, errlen, "expected a JSON object");
                goto out;
        }
        jid = json_object_get(root, "id");
        if (jid && json_is_integer(jid) && json_integer_value(jid) >= 0) {
                req->id = (uint64_t) json_integer_value(jid);
                *ret_has_id = true;
        } else {
                r = fail(err, errlen, "missing or invalid \"id\" (a non-negative integer)");
                goto out;
        }
        jop = json_object_get(root, "op");
        if (!jop || !json_is_string(jop)) {
                r = fail(err, errlen, "missing or invalid \"op\" (a string)");
                goto out;
        }
        req->op = op_from_name(json_string_value(jop));
        if (req->op == MSEG_PROTO_OP_NONE) {
                fail(err, errlen, "unknown op");
                r = -EOPNOTSUPP;
                goto out;
        }

        switch (req->op) {
        case MSEG_PROTO_OP_HELLO:
                u = json_unpack_ex(root, &je, JSON_STRICT, "{s:I, s:s, s:I, s?o, s?s%}",
                                   "id", &id, "op", &op, "version", &version,
                                   "features", &features_json, "client", &client, &client_len);
                break;
        case MSEG_PROTO_OP_CREATE:
        case MSEG_PROTO_OP_OPEN_OR_CREATE:
                u = json_unpack_ex(root, &je, JSON_STRICT, "{s:I, s:s, s:s%, s:I, s?I, s?I, s?b, s?b, s?b}",
                                   "id", &id, "op", &op, "name", &name, &name_len, "size", &size,
                                   "max_size", &max_size, "mode", &mode, "persistent", &persistent,
                                   "remove_on_last_close", &autoremove, "read_only", &read_only);
                break;
        case MSEG_PROTO_OP_OPEN:
                u = json_unpack_ex(root, &je, JSON_STRICT, "{s:I, s:s, s:s%, s?b, s?s%}",
                                   "id", &id, "op", &op, "name", &name, &name_len, "read_only", &read_only,
                                   "token", &token, &token_len);
                break;
        case MSEG_PROTO_OP_REMOVE:
        case MSEG_PROTO_OP_STAT:
                u = json_unpack_ex(root, &je, JSON_STRICT, "{s:I, s:s, s:s%}",
                                   "id", &id, "op", &op, "name", &name, &name_len);
                break;
        case MSEG_PROTO_OP_GROW:
                u = json_unpack_ex(root, &je, JSON_STRICT, "{s:I, s:s, s:s%, s:I, s?s, s?s%}",
                                   "id", &id, "op", &op, "name", &name, &name_len, "size", &size,
                                   "segment_id", &sid, "token", &token, &token_len);
                break;
        case MSEG_PROTO_OP_GRANT:
                u = json_unpack_ex(root, &je, JSON_STRICT, "{s:I, s:s, s:s%, s:s, s:I}",
                                   "id", &id, "op", &op, "name", &name, &name_len, "rights", &rights,
                                   "ttl", &ttl);
                break;
        case MSEG_PROTO_OP_LIST:
                u = json_unpack_ex(root, &je, JSON_STRICT, "{s:I, s:s, s?s%}",
                                   "id", &id, "op", &op, "after", &after, &after_len);
                break;
        case MSEG_PROTO_OP_STATUS:
        case MSEG_PROTO_OP_ROTATE_KEY:
                u = json_unpack_ex(root, &je, JSON_STRICT, "{s:I, s:s}", "id", &id, "op", &op);
                break;
        case MSEG_PROTO_OP_DETACH:
                u = json_unpack_ex(root, &je, JSON_STRICT, "{s:I, s:s, s:I}", "id", &id, "op", &op,
                                   "attachment", &attachment);
                break;
        default:
                u = -1;
                snprintf(je.text, sizeof(je.text), "unhandled op");
                break;
        }
        if (u < 0) {
                r = fail(err, errlen, "%s: %s", op_names[req->op], je.text);
                goto out;
        }

        r = -EINVAL;
        if (name && (r = take_name(req->name, name, name_len, "name", err, errlen)) < 0)
                goto out;
        if (after) {
                if ((r = take_name(req->after, after, after_len, "after", err, errlen)) < 0)
                        goto out;
                req->has_after = true;
        }
        r = -EINVAL;
        if (req->op == MSEG_PROTO_OP_HELLO) {
                if (!int_ok(version, UINT32_MAX)) {
                        fail(err, errlen, "version out of range");
                        goto out;
                }
                req->version = (uint32_t) version;
                if ((r = decode_features(features_json, &req->features, err, errlen)) < 0)
                        goto out;
                if (client)
                        copy_text(req->client, sizeof(req->client), client, client_len);
        }
        if (!int_ok(size, MSEG_MAX_SIZE) || !int_ok(max_size, MSEG_MAX_SIZE)) {
                fail(err, errlen, "size out of range (0..%llu)", (unsigned long long) MSEG_MAX_SIZE);
                goto out;
        }
        if (!int_ok(mode, 0777)) {
                fail(err, errlen, "mode out of range (0..0777)");
                goto out;
        }
        if (req->op == MSEG_PROTO_OP_DETACH && attachment < 1) {
                fail(err, errlen, "attachment out of range (>= 1)");
                goto out;
        }
        req->attachment = (uint64_t) attachment;
        req->size = (uint64_t) size;
        req->max_size = (uint64_t) max_size;
        req->mode = (uint32_t) mode;
        req->persistent = persistent;
        req->remove_on_last_close = autoremove;
        req->read_only = read_only;
        if (sid) {
                if (mseg_proto_id_from_hex(sid, req->segment_id) < 0) {
                        fail(err, errlen, "segment_id: expected 32 lowercase hex digits");
                        goto out;
                }
                req->has_segment_id = true;
        }
        r = -EINVAL;
        if (token) {
                /* Its shape is checked with its MAC (token.c); here only
                 * that it fits. */
                if (token_len == 0 || token_len > MSEG_PROTO_TOKEN_MAX) {
                        fail(err, errlen, "token: %zu bytes, expected 1..%u", token_len, MSEG_PROTO_TOKEN_MAX);
                        goto out;
                }
                memcpy(req->token, token, token_len);
                req->token[token_len] = '\0';
                req->has_token = true;
        }
        if (req->op == MSEG_PROTO_OP_GRANT) {
                if (strcmp(rights, "read") == 0)
                        req->rights = MSEG_PROTO_RIGHT_READ;
                else if (strcmp(rights, "write") == 0)
                        req->rights = MSEG_PROTO_RIGHT_READ | MSEG_PROTO_RIGHT_WRITE;
                else {
                        fail(err, errlen, "rights: expected \"read\" or \"write\"");
                        goto out;
                }
                if (ttl < 1 || ttl > MSEG_PROTO_TTL_MAX) {
                        fail(err, errlen, "ttl out of range (1..%u seconds)", MSEG_PROTO_TTL_MAX);
                        goto out;
                }
                req->ttl = (uint64_t) ttl;
        }
        r = 0;
out:
        json_decref(root);
        return r;
}

/* ------------------------------------------------------------ replies */

static json_t *seginfo_json(const struct mseg_proto_seginfo *s, bool with_clients) {
        char hex[33];
        json_t *o;

        mseg_proto_id_to_hex(s->id, hex);
        o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:b, s:b}",
                      "name", s->name, "id", hex, "size", (json_int_t) s->size,
                      "max_size", (json_int_t) s->max_size, "mode", (json_int_t) s->mode,
                      "uid", (json_int_t) s->uid, "gid", (json_int_t) s->gid,
                      "persistent", s->persistent, "remove_on_last_close", s->remove_on_last_close);
        if (o && with_clients && json_object_set_new(o, "clients", json_integer(s->clients)) < 0) {
                json_decref(o);
                return NULL;
        }
        return o;
}

static int seginfo_from_json(json_t *o, struct mseg_proto_seginfo *s, bool with_clients,
                             json_error_t *je, char *err, size_t errlen) {
        const char *name, *hex;
        size_t name_len;
        json_int_t size, max_size, mode, uid, gid, clients = 0;
        int persistent, autoremove, u;

        if (with_clients)
                u = json_unpack_ex(o, je, JSON_STRICT, "{s:s%, s:s, s:I, s:I, s:I, s:I, s:I, s:b, s:b, s:I}",
                                   "name", &name, &name_len, "id", &hex, "size", &size, "max_size", &max_size,
                                   "mode", &mode, "uid", &uid, "gid", &gid, "persistent", &persistent,
                                   "remove_on_last_close", &autoremove, "clients", &clients);
        else
                u = json_unpack_ex(o, je, JSON_STRICT, "{s:s%, s:s, s:I, s:I, s:I, s:I, s:I, s:b, s:b}",
                                   "name", &name, &name_len, "id", &hex, "size", &size, "max_size", &max_size,
                                   "mode", &mode, "uid", &uid, "gid", &gid, "persistent", &persistent,
                                   "remove_on_last_close", &autoremove);
        if (u < 0)
                return fail(err, errlen, "segment: %s", je->text);
        if (!mseg_proto_name_ok(name, name_len))
                return fail(err, errlen, "segment: bad name");
        if (mseg_proto_id_from_hex(hex, s->id) < 0)
                return fail(err, errlen, "segment: bad id");
        if (!int_ok(size, MSEG_MAX_SIZE) || !int_ok(max_size, MSEG_MAX_SIZE) || size > max_size ||
            !int_ok(mode, 0777) || !int_ok(uid, UINT32_MAX) || !int_ok(gid, UINT32_MAX) ||
            !int_ok(clients, UINT32_MAX))
                return fail(err, errlen, "segment: field out of range");
        memcpy(s->name, name, name_len);
        s->name[name_len] = '\0';
        s->size = (uint64_t) size;
        s->max_size = (uint64_t) max_size;
        s->mode = (uint32_t) mode;
        s->uid = (uint32_t) uid;
        s->gid = (uint32_t) gid;
        s->persistent = persistent;
        s->remove_on_last_close = autoremove;
        s->clients = (uint32_t) clients;
        return 0;
}

static json_t *result_json(const struct mseg_proto_reply *rep) {
        json_t *res = NULL, *a;

        switch (rep->op) {
        case MSEG_PROTO_OP_HELLO:
                a = json_array();
                for (size_t i = 0; a && i < N_FEATURES; i++)
                        if (rep->features & features[i].bit)
                                json_array_append_new(a, json_string(features[i].name));
                res = json_pack("{s:I, s:o, s:o, s:I}", "version", (json_int_t) rep->version,
                                "features", a, "server", text_json(rep->server),
                                "max_message", (json_int_t) rep->max_message);
                break;
        case MSEG_PROTO_OP_CREATE:
        case MSEG_PROTO_OP_OPEN:
        case MSEG_PROTO_OP_OPEN_OR_CREATE:
                res = json_pack("{s:o, s:b, s:b, s:I}", "segment", seginfo_json(&rep->info, true),
                                "read_only", rep->read_only, "created", rep->created,
                                "attachment", (json_int_t) rep->attachment);
                break;
        case MSEG_PROTO_OP_STAT:
                res = json_pack("{s:o}", "segment", seginfo_json(&rep->info, true));
                break;
        case MSEG_PROTO_OP_REMOVE:
                res = json_object();
                break;
        case MSEG_PROTO_OP_GROW:
                res = json_pack("{s:I}", "size", (json_int_t) rep->size);
                break;
        case MSEG_PROTO_OP_LIST:
                a = json_array();
                for (size_t i = 0; a && i < rep->nsegs; i++)
                        if (json_array_append_new(a, seginfo_json(&rep->segs[i], true)) < 0) {
                                json_decref(a);
                                a = NULL;
                        }
                res = json_pack("{s:o, s:b}", "segments", a, "more", rep->more);
                break;
        case MSEG_PROTO_OP_STATUS: {
                const struct mseg_proto_status *s = &rep->status;
                res = json_pack("{s:I, s:I, s:I, s:I, s:I, s:o, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I}}",
                                "segments", (json_int_t) s->segments, "bytes", (json_int_t) s->bytes,
                                "clients", (json_int_t) s->clients,
                                "uid_segments", (json_int_t) s->uid_segments,
                                "uid_bytes", (json_int_t) s->uid_bytes,
                                "server", text_json(s->server),
                                "limits",
                                "max_segments", (json_int_t) s->max_segments,
                                "max_segments_per_uid", (json_int_t) s->max_segments_per_uid,
                                "max_bytes", (json_int_t) s->max_bytes,
                                "max_bytes_per_uid", (json_int_t) s->max_bytes_per_uid,
                                "max_clients", (json_int_t) s->max_clients,
                                "max_message_size", (json_int_t) s->max_message_size,
                                "max_segment_size", (json_int_t) s->max_segment_size);
                break;
        }
        case MSEG_PROTO_OP_GRANT:
                res = json_pack("{s:s, s:I}", "token", rep->token, "expires", (json_int_t) rep->expires);
                break;
        case MSEG_PROTO_OP_ROTATE_KEY:
                res = json_pack("{s:I}", "generation", (json_int_t) rep->generation);
                break;
        default:
                break;
        }
        return res;
}

ssize_t mseg_proto_encode_reply(const struct mseg_proto_reply *rep, char *buf, size_t cap) {
        json_t *root, *id;

        id = rep->id_null ? json_null() : json_integer((json_int_t) rep->id);
        if (rep->error)
                root = json_pack("{s:o, s:{s:s, s:o}}", "id", id, "error",
                                 "code", mseg_proto_code_name(rep->error),
                                 "message", text_json(rep->message));
        else
                root = json_pack("{s:o, s:o}", "id", id, "result", result_json(rep));
        return dump(root, buf, cap);
}

static int decode_result(json_t *res, struct mseg_proto_reply *rep, char *err, size_t errlen) {
        json_error_t je;
        json_t *seg = NULL, *fa = NULL, *arr = NULL;
        json_int_t version, max_message, size, attachment;
        const char *server;
        size_t server_len, i;
        int ro = 0, created = 0, more = 0, r;

        switch (rep->op) {
        case MSEG_PROTO_OP_HELLO:
                if (json_unpack_ex(res, &je, JSON_STRICT, "{s:I, s:o, s:s%, s:I}", "version", &version,
                                   "features", &fa, "server", &server, &server_len,
                                   "max_message", &max_message) < 0)
                        return fail(err, errlen, "hello: %s", je.text);
                if (!int_ok(version, UINT32_MAX) || !int_ok(max_message, MSEG_PROTO_MSG_MAX))
                        return fail(err, errlen, "hello: field out of range");
                rep->version = (uint32_t) version;
                rep->max_message = (uint32_t) max_message;
                copy_text(rep->server, sizeof(rep->server), server, server_len);
                return decode_features(fa, &rep->features, err, errlen);
        case MSEG_PROTO_OP_CREATE:
        case MSEG_PROTO_OP_OPEN:
        case MSEG_PROTO_OP_OPEN_OR_CREATE:
                if (json_unpack_ex(res, &je, JSON_STRICT, "{s:o, s:b, s:b, s:I}", "segment", &seg,
                                   "read_only", &ro, "created", &created, "attachment", &attachment) < 0)
                        return fail(err, errlen, "%s: %s", op_names[rep->op], je.text);
                if (attachment < 1)
                        return fail(err, errlen, "%s: attachment out of range", op_names[rep->op]);
                rep->attachment = (uint64_t) attachment;
                rep->read_only = ro;
                rep->created = created;
                return seginfo_from_json(seg, &rep->info, true, &je, err, errlen);
        case MSEG_PROTO_OP_STAT:
                if (json_unpack_ex(res, &je, JSON_STRICT, "{s:o}", "segment", &seg) < 0)
                        return fail(err, errlen, "stat: %s", je.text);
                return seginfo_from_json(seg, &rep->info, true, &je, err, errlen);
        case MSEG_PROTO_OP_REMOVE:
                if (json_unpack_ex(res, &je, JSON_STRICT, "{}") < 0)
                        return fail(err, errlen, "remove: %s", je.text);
                return 0;
        case MSEG_PROTO_OP_GROW:
                if (json_unpack_ex(res, &je, JSON_STRICT, "{s:I}", "size", &size) < 0)
                        return fail(err, errlen, "grow: %s", je.text);
                if (!int_ok(size, MSEG_MAX_SIZE))
                        return fail(err, errlen, "grow: size out of range");
                rep->size = (uint64_t) size;
                return 0;
        case MSEG_PROTO_OP_LIST:
                if (json_unpack_ex(res, &je, JSON_STRICT, "{s:o, s:b}", "segments", &arr, "more", &more) < 0)
                        return fail(err, errlen, "list: %s", je.text);
                if (!json_is_array(arr) || json_array_size(arr) > MSEG_PROTO_LIST_MAX || !rep->segs)
                        return fail(err, errlen, "list: expected an array of at most %u segments",
                                    MSEG_PROTO_LIST_MAX);
                json_array_foreach(arr, i, seg) {
                        r = seginfo_from_json(seg, &rep->segs[i], true, &je, err, errlen);
                        if (r < 0)
                                return r;
                }
                rep->nsegs = json_array_size(arr);
                rep->more = more;
                return 0;
        case MSEG_PROTO_OP_STATUS: {
                struct mseg_proto_status *s = &rep->status;
                json_int_t v[12];
                if (json_unpack_ex(res, &je, JSON_STRICT,
                                   "{s:I, s:I, s:I, s:I, s:I, s:s%, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I}}",
                                   "segments", &v[0], "bytes", &v[1], "clients", &v[2],
                                   "uid_segments", &v[3], "uid_bytes", &v[4], "server", &server, &server_len,
                                   "limits", "max_segments", &v[5], "max_segments_per_uid", &v[6],
                                   "max_bytes", &v[7], "max_bytes_per_uid", &v[8], "max_clients", &v[9],
                                   "max_message_size", &v[10], "max_segment_size", &v[11]) < 0)
                        return fail(err, errlen, "status: %s", je.text);
                for (int k = 0; k < 12; k++)
                        if (v[k] < 0)
                                return fail(err, errlen, "status: negative figure");
                s->segments = (uint64_t) v[0];
                s->bytes = (uint64_t) v[1];
                s->clients = (uint64_t) v[2];
                s->uid_segments = (uint64_t) v[3];
                s->uid_bytes = (uint64_t) v[4];
                s->max_segments = (uint64_t) v[5];
                s->max_segments_per_uid = (uint64_t) v[6];
                s->max_bytes = (uint64_t) v[7];
                s->max_bytes_per_uid = (uint64_t) v[8];
                s->max_clients = (uint64_t) v[9];
                s->max_message_size = (uint64_t) v[10];
                s->max_segment_size = (uint64_t) v[11];
                copy_text(s->server, sizeof(s->server), server, server_len);
                return 0;
        }
        case MSEG_PROTO_OP_GRANT: {
                const char *token;
                size_t token_len;
                json_int_t expires;
                if (json_unpack_ex(res, &je, JSON_STRICT, "{s:s%, s:I}", "token", &token, &token_len,
                                   "expires", &expires) < 0)
                        return fail(err, errlen, "grant: %s", je.text);
                if (token_len == 0 || token_len > MSEG_PROTO_TOKEN_MAX || expires < 0)
                        return fail(err, errlen, "grant: field out of range");
                memcpy(rep->token, token, token_len);
                rep->token[token_len] = '\0';
                rep->expires = (uint64_t) expires;
                return 0;
        }
        case MSEG_PROTO_OP_ROTATE_KEY:
                if (json_unpack_ex(res, &je, JSON_STRICT, "{s:I}", "generation", &version) < 0)
                        return fail(err, errlen, "rotate-key: %s", je.text);
                if (!int_ok(version, UINT32_MAX))
                        return fail(err, errlen, "rotate-key: generation out of range");
                rep->generation = (uint32_t) version;
                return 0;
        default:
                return fail(err, errlen, "no reply schema for this op");
        }
}

int mseg_proto_decode_reply(const void *buf, size_t len, enum mseg_proto_op op,
                            struct mseg_proto_reply *rep, char *err, size_t errlen) {
        struct mseg_proto_seginfo *segs = rep->segs;
        json_error_t je;
        json_t *root, *jid = NULL, *res = NULL, *jerr = NULL;
        const char *code, *msg;
        size_t msg_len;
        int r;

        memset(rep, 0, sizeof(*rep));
        rep->segs = segs;
        rep->op = op;
        if (len == 0 || len > MSEG_PROTO_MSG_MAX)
                return fail(err, errlen, "reply of %zu bytes", len);
        root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
        if (!root)
                return fail(err, errlen, "reply is not JSON: %s", je.text);
        if (json_unpack_ex(root, &je, JSON_STRICT, "{s:o, s?o, s?o}", "id", &jid, "result", &res,
                           "error", &jerr) < 0) {
                r = fail(err, errlen, "reply: %s", je.text);
                goto out;
        }
        if (json_is_null(jid))
                rep->id_null = true;
        else if (json_is_integer(jid) && json_integer_value(jid) >= 0)
                rep->id = (uint64_t) json_integer_value(jid);
        else {
                r = fail(err, errlen, "reply: bad id");
                goto out;
        }
        if (!res == !jerr) {
                r = fail(err, errlen, "reply: needs exactly one of \"result\" and \"error\"");
                goto out;
        }
        if (jerr) {
                if (json_unpack_ex(jerr, &je, JSON_STRICT, "{s:s, s:s%}", "code", &code,
                                   "message", &msg, &msg_len) < 0) {
                        r = fail(err, errlen, "error reply: %s", je.text);
                        goto out;
                }
                rep->error = mseg_proto_code_from_name(code);
                copy_text(rep->message, sizeof(rep->message), msg, msg_len);
                r = 0;
                goto out;
        }
        if (rep->id_null) {
                r = fail(err, errlen, "reply: a result needs an id");
                goto out;
        }
        r = decode_result(res, rep, err, errlen);
out:
        json_decref(root);
        return r;
}

/* ------------------------------------------------------------ state file */

#define STATE_FORMAT "msegd-state-1"

ssize_t mseg_proto_encode_state(const struct mseg_proto_seginfo *info, char *buf, size_t cap) {
        json_t *o = seginfo_json(info, false);

        if (!o)
                return -EINVAL;
        if (json_object_set_new(o, "format", json_string(STATE_FORMAT)) < 0) {
                json_decref(o);
                return -ENOMEM;
        }
        return dump(o, buf, cap);
}

int mseg_proto_decode_state(const void *buf, size_t len, struct mseg_proto_seginfo *info,
                            char *err, size_t errlen) {
        json_error_t je;
        json_t *root, *fmt;
        int r;

        memset(info, 0, sizeof(*info));
        root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
        if (!root)
                return fail(err, errlen, "state record is not JSON: %s", je.text);
        fmt = json_object_get(root, "format");
        if (!json_is_string(fmt) || strcmp(json_string_value(fmt), STATE_FORMAT) != 0) {
                r = fail(err, errlen, "state record: format is not \"%s\"", STATE_FORMAT);
                goto out;
        }
        json_object_del(root, "format");
        r = seginfo_from_json(root, info, false, &je, err, errlen);
out:
        json_decref(root);
        return r;
}
