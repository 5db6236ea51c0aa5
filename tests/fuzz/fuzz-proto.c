/* SPDX-License-Identifier: MIT */
/*
 * fuzz-proto — any bytes as a packet, through every decoder that reads
 * bytes from a peer or from disk:
 *   - as a request, the way msegd decodes it (mseg_proto_decode_request);
 *   - as the reply to each operation, the way libmseg decodes it
 *     (mseg_proto_decode_reply);
 *   - as a persistent segment's state record (mseg_proto_decode_state);
 *   - as a capability token (mseg_proto_token_decode), and as the bytes of
 *     a token that this target signs with a test key, so the fuzzer also
 *     reaches the checks that come after the MAC.
 * Nothing may crash or leak (LeakSanitizer runs with libFuzzer). Whatever a
 * decoder accepts must satisfy the protocol's invariants (valid names,
 * sizes and modes in range, an error reply never reads as success...) and
 * survive a round trip: encoded again and decoded again, it must decode to
 * exactly the same struct; a token must re-encode to the very same string.
 * A violation aborts, so libFuzzer keeps the input.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "mseg.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The seeds in corpus/fuzz-proto/token-* are signed with this key. */
static const uint8_t test_key[MSEG_PROTO_TOKEN_KEYBYTES] = {
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
};
#define TEST_GENERATION 1u

static char buf[MSEG_PROTO_MSG_MAX];

#define INVARIANT(cond) do { if (!(cond)) { \
        fprintf(stderr, "fuzz-proto: invariant broken: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
        abort(); } } while (0)

static bool name_valid(const char *s) {
        size_t len = strnlen(s, MSEG_PROTO_NAME_MAX + 1);
        return len <= MSEG_PROTO_NAME_MAX && mseg_proto_name_ok(s, len);
}

static void err_terminated(const char *err, size_t cap) {
        INVARIANT(strnlen(err, cap) < cap);
}

static bool op_has_name(enum mseg_proto_op op) {
        return op == MSEG_PROTO_OP_CREATE || op == MSEG_PROTO_OP_OPEN || op == MSEG_PROTO_OP_OPEN_OR_CREATE ||
               op == MSEG_PROTO_OP_REMOVE || op == MSEG_PROTO_OP_GROW || op == MSEG_PROTO_OP_STAT ||
               op == MSEG_PROTO_OP_GRANT;
}

static void check_request(const struct mseg_proto_request *q) {
        INVARIANT(q->op > MSEG_PROTO_OP_NONE && q->op < MSEG_PROTO_OP__COUNT);
        INVARIANT(q->id <= INT64_MAX);
        if (op_has_name(q->op))
                INVARIANT(name_valid(q->name));
        else
                INVARIANT(q->name[0] == '\0');
        if (q->has_after)
                INVARIANT(q->op == MSEG_PROTO_OP_LIST && name_valid(q->after));
        INVARIANT(q->size <= MSEG_MAX_SIZE && q->max_size <= MSEG_MAX_SIZE && q->mode <= 0777);
        INVARIANT((q->op == MSEG_PROTO_OP_DETACH) == (q->attachment >= 1));
        if (q->has_token) {
                size_t n = strnlen(q->token, sizeof(q->token));
                INVARIANT(n >= 1 && n <= MSEG_PROTO_TOKEN_MAX);
                INVARIANT(q->op == MSEG_PROTO_OP_OPEN || q->op == MSEG_PROTO_OP_GROW);
        }
        if (q->op == MSEG_PROTO_OP_GRANT)
                INVARIANT((q->rights == MSEG_PROTO_RIGHT_READ ||
                           q->rights == (MSEG_PROTO_RIGHT_READ | MSEG_PROTO_RIGHT_WRITE)) &&
                          q->ttl >= 1 && q->ttl <= MSEG_PROTO_TTL_MAX);
        else
                INVARIANT(q->rights == 0 && q->ttl == 0);
        INVARIANT((q->features & ~MSEG_PROTO_F_ALL) == 0);
        INVARIANT(strnlen(q->client, sizeof(q->client)) < sizeof(q->client));
}

static void fuzz_request(const uint8_t *data, size_t size) {
        static struct mseg_proto_request q, q2;
        char err[256];
        bool has_id;
        ssize_t n;
        int r;

        memset(&q, 0, sizeof(q));      /* no bytes of an earlier input */
        memset(&q2, 0, sizeof(q2));
        r = mseg_proto_decode_request(data, size, &q, &has_id, err, sizeof(err));
        if (r < 0) {
                err_terminated(err, sizeof(err));
                INVARIANT(r == -EBADMSG || r == -EOPNOTSUPP || r == -EINVAL || r == -ENAMETOOLONG);
                return;
        }
        INVARIANT(has_id);
        check_request(&q);
        n = mseg_proto_encode_request(&q, buf, sizeof(buf));
        INVARIANT(n > 0);
        r = mseg_proto_decode_request(buf, (size_t) n, &q2, &has_id, err, sizeof(err));
        if (r < 0)
                fprintf(stderr, "fuzz-proto: re-encoded request refused: %s\n%.*s\n", err, (int) n, buf);
        INVARIANT(r == 0);
        INVARIANT(memcmp(&q, &q2, sizeof(q)) == 0);
}

static void check_seginfo(const struct mseg_proto_seginfo *s) {
        INVARIANT(name_valid(s->name));
        INVARIANT(s->size <= s->max_size && s->max_size <= MSEG_MAX_SIZE && s->mode <= 0777);
}

static void check_reply(const struct mseg_proto_reply *p, enum mseg_proto_op op) {
        INVARIANT(p->op == op);
        INVARIANT(strnlen(p->message, sizeof(p->message)) < sizeof(p->message));
        if (p->error) {
                /* Every code a reply can carry is one we can name again. */
                INVARIANT(mseg_proto_code_from_name(mseg_proto_code_name(p->error)) == p->error);
                return;
        }
        INVARIANT(!p->id_null);
        switch (op) {
        case MSEG_PROTO_OP_HELLO:
                INVARIANT(p->max_message <= MSEG_PROTO_MSG_MAX && (p->features & ~MSEG_PROTO_F_ALL) == 0);
                break;
        case MSEG_PROTO_OP_CREATE:
        case MSEG_PROTO_OP_OPEN:
        case MSEG_PROTO_OP_OPEN_OR_CREATE:
                INVARIANT(p->attachment >= 1);
                check_seginfo(&p->info);
                break;
        case MSEG_PROTO_OP_STAT:
                check_seginfo(&p->info);
                break;
        case MSEG_PROTO_OP_LIST:
                INVARIANT(p->nsegs <= MSEG_PROTO_LIST_MAX);
                for (size_t i = 0; i < p->nsegs; i++)
                        check_seginfo(&p->segs[i]);
                break;
        case MSEG_PROTO_OP_GROW:
                INVARIANT(p->size <= MSEG_MAX_SIZE);
                break;
        case MSEG_PROTO_OP_GRANT: {
                size_t n = strnlen(p->token, sizeof(p->token));
                INVARIANT(n >= 1 && n <= MSEG_PROTO_TOKEN_MAX && p->expires <= INT64_MAX);
                break;
        }
        default:
                break;
        }
}

static void fuzz_reply(const uint8_t *data, size_t size, enum mseg_proto_op op) {
        static struct mseg_proto_seginfo segs[MSEG_PROTO_LIST_MAX], segs2[MSEG_PROTO_LIST_MAX];
        static struct mseg_proto_reply p, p2;
        char err[256];
        ssize_t n;
        int r;

        /* Fresh state for every input: the statics would otherwise carry
         * bytes of an earlier input that a decode leaves alone into the
         * comparisons below (a false alarm libFuzzer found). */
        memset(&p, 0, sizeof(p));
        memset(&p2, 0, sizeof(p2));
        memset(segs, 0, sizeof(segs));
        memset(segs2, 0, sizeof(segs2));
        p.segs = segs;
        r = mseg_proto_decode_reply(data, size, op, &p, err, sizeof(err));
        if (r < 0) {
                err_terminated(err, sizeof(err));
                INVARIANT(r == -EBADMSG);
                return;
        }
        INVARIANT(p.segs == segs);
        check_reply(&p, op);
        n = mseg_proto_encode_reply(&p, buf, sizeof(buf));
        if (n < 0)
                fprintf(stderr, "fuzz-proto: cannot re-encode a %s reply: %zd\n", mseg_proto_op_name(op), n);
        INVARIANT(n > 0);
        p2.segs = segs2;
        r = mseg_proto_decode_reply(buf, (size_t) n, op, &p2, err, sizeof(err));
        if (r < 0)
                fprintf(stderr, "fuzz-proto: re-encoded %s reply refused: %s\n%.*s\n", mseg_proto_op_name(op), err,
                        (int) n, buf);
        INVARIANT(r == 0);
        INVARIANT(p2.nsegs == p.nsegs);
        INVARIANT(memcmp(segs, segs2, p.nsegs * sizeof(segs[0])) == 0);
        p2.segs = segs;
        INVARIANT(memcmp(&p, &p2, sizeof(p)) == 0);
}

static void fuzz_state(const uint8_t *data, size_t size) {
        struct mseg_proto_seginfo info, info2;
        char err[256];
        ssize_t n;

        if (mseg_proto_decode_state(data, size, &info, err, sizeof(err)) < 0) {
                err_terminated(err, sizeof(err));
                return;
        }
        check_seginfo(&info);
        INVARIANT(info.clients == 0);
        n = mseg_proto_encode_state(&info, buf, sizeof(buf));
        INVARIANT(n > 0);
        INVARIANT(mseg_proto_decode_state(buf, (size_t) n, &info2, err, sizeof(err)) == 0);
        INVARIANT(memcmp(&info, &info2, sizeof(info)) == 0);
}

static void check_token(const struct mseg_proto_token *t) {
        INVARIANT(t->generation == TEST_GENERATION);
        INVARIANT(t->rights == MSEG_PROTO_RIGHT_READ || t->rights == (MSEG_PROTO_RIGHT_READ | MSEG_PROTO_RIGHT_WRITE));
        INVARIANT(name_valid(t->name));
}

/* The bytes as a printable token. */
static void fuzz_token(const uint8_t *data, size_t size) {
        struct mseg_proto_token t;
        char err[256], again[MSEG_PROTO_TOKEN_MAX + 1];
        ssize_t n;
        int r;

        r = mseg_proto_token_decode((const char *) data, size, test_key, TEST_GENERATION, &t, err, sizeof(err));
        if (r < 0) {
                INVARIANT(r == MSEG_E_TOKEN);
                err_terminated(err, sizeof(err));
                return;
        }
        check_token(&t);
        /* Base64 without padding, with unused bits zero, is canonical: the
         * token re-encodes to the very same string. */
        n = mseg_proto_token_encode(&t, test_key, again, sizeof(again));
        INVARIANT(n > 0 && (size_t) n == size && memcmp(again, data, size) == 0);
}

/* The bytes as the inside of a token, signed here: past the MAC check. */
static void fuzz_token_body(const uint8_t *data, size_t size) {
        uint8_t bin[47 + MSEG_PROTO_NAME_MAX + crypto_auth_BYTES];
        char tok[MSEG_PROTO_TOKEN_MAX + 1], err[256];
        struct mseg_proto_token t;
        int r;

        if (size + crypto_auth_BYTES > sizeof(bin))
                return;
        memcpy(bin, data, size);
        crypto_auth(bin + size, bin, size, test_key);
        memcpy(tok, MSEG_PROTO_TOKEN_PREFIX, 5);
        sodium_bin2base64(tok + 5, sizeof(tok) - 5, bin, size + crypto_auth_BYTES,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        r = mseg_proto_token_decode(tok, strlen(tok), test_key, TEST_GENERATION, &t, err, sizeof(err));
        if (r < 0) {
                INVARIANT(r == MSEG_E_TOKEN);
                err_terminated(err, sizeof(err));
                return;
        }
        check_token(&t);
        /* What was accepted is what the bytes say. */
        INVARIANT(size >= 48 && data[0] == 1 && data[46] == size - 47);
        INVARIANT(memcmp(t.segment_id, data + 5, 16) == 0 && t.rights == data[21]);
        INVARIANT(strlen(t.name) == data[46] && memcmp(t.name, data + 47, data[46]) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool init;

        if (!init) {
                if (sodium_init() < 0)
                        abort();
                init = true;
        }
        fuzz_request(data, size);
        for (int op = MSEG_PROTO_OP_HELLO; op < MSEG_PROTO_OP__COUNT; op++)
                if (op != MSEG_PROTO_OP_DETACH)
                        fuzz_reply(data, size, (enum mseg_proto_op) op);
        fuzz_state(data, size);
        fuzz_token(data, size);
        fuzz_token_body(data, size);
        /* The name check on raw bytes (embedded NULs, any length). */
        if (mseg_proto_name_ok((const char *) data, size))
                INVARIANT(size >= 1 && size <= MSEG_PROTO_NAME_MAX && !memchr(data, '/', size) &&
                          !memchr(data, 0, size) && mseg_proto_utf8_ok((const char *) data, size));
        return 0;
}
