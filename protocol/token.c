/* SPDX-License-Identifier: MIT */
/*
 * token.c — capability tokens: the bytes of a token, its printable form,
 * and the check of its MAC.
 *
 * A token lets whoever presents it open one segment with the rights it
 * names until it expires, whatever the presenter's uid. msegd makes it
 * (grant) and checks it (open, grow); nobody else can, because the MAC is
 * crypto_auth (HMAC-SHA-512-256) under a key only msegd holds. So a token
 * is a claim msegd wrote earlier and reads back: everything in it is
 * authenticated, and nothing in it needs to be secret.
 *
 * The token names the segment by its random 128-bit id (a segment created
 * again under the same name is another segment, and the token does not
 * open it) and by name (for messages, and so a token cannot be presented
 * for another name); the key generation tells a token made before
 * `rotate-key` from a forged one; the nonce makes two grants of the same
 * rights different strings.
 *
 * Decoding is the check. It reads only within the decoded bytes, whose
 * length it knows before it looks at any field, verifies the MAC with
 * crypto_auth_verify (constant-time) before it trusts a field, and then
 * still bounds every field (rights, name) since a key can leak. The caller
 * checks what needs the clock and the segment table: expiry, and that the
 * segment named is the one asked for.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "mseg.h"
#include "proto.h"

#define VERSION 1u
/* version, generation, id, rights, expires, nonce, name length */
#define FIXED (1 + 4 + 16 + 1 + 8 + 16 + 1)
#define MAC crypto_auth_BYTES
#define PREFIX_LEN (sizeof(MSEG_PROTO_TOKEN_PREFIX) - 1)
#define BIN_MAX (FIXED + MSEG_PROTO_NAME_MAX + MAC)

_Static_assert(crypto_auth_BYTES == 32, "tokens carry a 32-byte MAC");
_Static_assert(crypto_auth_KEYBYTES == MSEG_PROTO_TOKEN_KEYBYTES, "token keys are crypto_auth keys");
_Static_assert(PREFIX_LEN + (BIN_MAX * 4 + 2) / 3 <= MSEG_PROTO_TOKEN_MAX, "the longest token fits");

static void put32(uint8_t *p, uint32_t v) {
        for (int i = 0; i < 4; i++)
                p[i] = (uint8_t) (v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v) {
        for (int i = 0; i < 8; i++)
                p[i] = (uint8_t) (v >> (8 * i));
}

static uint32_t get32(const uint8_t *p) {
        uint32_t v = 0;
        for (int i = 3; i >= 0; i--)
                v = v << 8 | p[i];
        return v;
}

static uint64_t get64(const uint8_t *p) {
        uint64_t v = 0;
        for (int i = 7; i >= 0; i--)
                v = v << 8 | p[i];
        return v;
}

static bool rights_ok(uint32_t r) {
        return r == MSEG_PROTO_RIGHT_READ || r == (MSEG_PROTO_RIGHT_READ | MSEG_PROTO_RIGHT_WRITE);
}

ssize_t mseg_proto_token_encode(const struct mseg_proto_token *t, const uint8_t key[MSEG_PROTO_TOKEN_KEYBYTES],
                                char *buf, size_t cap) {
        uint8_t bin[BIN_MAX];
        size_t name_len = strnlen(t->name, sizeof(t->name)), n, out;

        if (!mseg_proto_name_ok(t->name, name_len) || !rights_ok(t->rights))
                return -EINVAL;
        bin[0] = VERSION;
        put32(bin + 1, t->generation);
        memcpy(bin + 5, t->segment_id, 16);
        bin[21] = (uint8_t) t->rights;
        put64(bin + 22, t->expires);
        memcpy(bin + 30, t->nonce, 16);
        bin[46] = (uint8_t) name_len;
        memcpy(bin + FIXED, t->name, name_len);
        n = FIXED + name_len;
        crypto_auth(bin + n, bin, n, key);
        n += MAC;
        out = PREFIX_LEN + sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        if (out > cap)          /* ENCODED_LEN counts the NUL */
                return -EMSGSIZE;
        memcpy(buf, MSEG_PROTO_TOKEN_PREFIX, PREFIX_LEN);
        sodium_bin2base64(buf + PREFIX_LEN, cap - PREFIX_LEN, bin, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        return (ssize_t) strlen(buf);
}

__attribute__((format(printf, 3, 4)))
static int refuse(char *err, size_t errlen, const char *fmt, ...) {
        va_list ap;

        if (err && errlen) {
                va_start(ap, fmt);
                vsnprintf(err, errlen, fmt, ap);
                va_end(ap);
        }
        return MSEG_E_TOKEN;
}

int mseg_proto_token_decode(const char *s, size_t len, const uint8_t key[MSEG_PROTO_TOKEN_KEYBYTES],
                            uint32_t generation, struct mseg_proto_token *t, char *err, size_t errlen) {
        uint8_t bin[BIN_MAX];
        size_t n, name_len;
        const char *end = NULL;
        uint32_t gen, rights;

        if (!s || len < PREFIX_LEN || memcmp(s, MSEG_PROTO_TOKEN_PREFIX, PREFIX_LEN) != 0)
                return refuse(err, errlen, "not a capability token (they start with \"%s\")",
                              MSEG_PROTO_TOKEN_PREFIX);
        if (len > MSEG_PROTO_TOKEN_MAX)
                return refuse(err, errlen, "token garbled: %zu characters, at most %u", len, MSEG_PROTO_TOKEN_MAX);
        s += PREFIX_LEN;
        len -= PREFIX_LEN;
        /* libsodium 1.0.18 reads a byte above 0x7f as a base64 digit (its
         * constant-time comparisons see a negative char): a token with
         * such bytes in place of '-' or '_' would decode to the same bytes
         * and pass. Only the alphabet itself is a token (found by
         * fuzz-proto; corpus/fuzz-proto/regress-token-highbit). */
        for (size_t i = 0; i < len; i++) {
                char c = s[i];
                if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                      c == '_'))
                        return refuse(err, errlen, "token garbled: not URL-safe base64 (character %zu)",
                                      i + PREFIX_LEN);
        }
        if (sodium_base642bin(bin, sizeof(bin), s, len, NULL, &n, &end,
                              sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 || end != s + len)
                return refuse(err, errlen, "token garbled: not canonical URL-safe base64 (its length or "
                              "last character)");
        if (n < FIXED + 1 + MAC)
                return refuse(err, errlen, "token truncated: %zu bytes, at least %d", n, FIXED + 1 + MAC);
        if (bin[0] != VERSION)
                return refuse(err, errlen, "token garbled: format version %u, expected %u", bin[0], VERSION);
        name_len = bin[46];
        if (n != FIXED + name_len + MAC)
                return refuse(err, errlen, "token %s: %zu bytes, its name length says %zu",
                              n < FIXED + name_len + MAC ? "truncated" : "garbled", n, FIXED + name_len + MAC);
        /* The generation is read before the MAC is checked, only to say
         * why a token made before a key rotation no longer works; the
         * token is refused either way. */
        gen = get32(bin + 1);
        if (gen != generation)
                return refuse(err, errlen, "token made with key generation %u, which was rotated away "
                              "(the key is at generation %u now)", gen, generation);
        if (crypto_auth_verify(bin + FIXED + name_len, bin, FIXED + name_len, key) != 0)
                return refuse(err, errlen, "token forged or damaged: its MAC does not verify");
        rights = bin[21];
        if (!rights_ok(rights))
                return refuse(err, errlen, "token garbled: rights 0x%x", rights);
        if (!mseg_proto_name_ok((const char *) bin + FIXED, name_len))
                return refuse(err, errlen, "token garbled: bad segment name");
        memset(t, 0, sizeof(*t));
        t->generation = gen;
        memcpy(t->segment_id, bin + 5, 16);
        t->rights = rights;
        t->expires = get64(bin + 22);
        memcpy(t->nonce, bin + 30, 16);
        memcpy(t->name, bin + FIXED, name_len);
        t->name[name_len] = '\0';
        return 0;
}
