/* SPDX-License-Identifier: MIT */
/*
 * tokens.c — msegd's token key, and granting and checking capability
 * tokens with it (protocol/token.c holds the format).
 *
 * The key is 32 random bytes (randombytes_buf) with a generation number.
 * It lives in <state-dir>/token.key (KEY_FILE below: a magic, the
 * generation, the key), mode 0600, owned by msegd's user, written to a
 * temporary file, fsync'ed and renamed, so a crash leaves the old key or
 * the new one. It is read once at start and never sent anywhere; in memory
 * it sits in a locked page (sodium_mlock: never swapped) and is wiped at
 * exit. A key file that anyone else could read, or that is damaged, is
 * replaced by a new key: the tokens it signed stop working, which is safe.
 * Without a state directory the key is made at start and lives only in
 * memory, so tokens last until msegd restarts.
 *
 * rotate-key writes a new key with the next generation, and only once it
 * is on disk uses it: a key rotated in memory only would come back at the
 * next start, and with it every token the rotation was meant to void.
 *
 * A token decides alone: presented with an open, it is checked and the
 * caller's uid plays no part, so a bad token is an error, never a silent
 * fallback to the mode bits. The checks, each with its own message: the
 * shape and MAC (token.c), the expiry, the name asked for, that the name
 * still denotes the very segment the token was made for (its 128-bit id,
 * compared with sodium_memcmp), and last the rights (-EACCES: a read token
 * for a read-write open).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "mseg.h"
#include "msegd.h"

#define KEY_FILE "token.key"
#define KEY_TMP "token.key.tmp"
#define KEY_MAGIC "MSEGKEY1"
/* magic(8) | generation(4, LE) | zero(4) | key(32) */
#define KEY_FILE_SIZE (8 + 4 + 4 + MSEG_PROTO_TOKEN_KEYBYTES)

static struct {
        uint8_t key[MSEG_PROTO_TOKEN_KEYBYTES];
        uint32_t generation;
        bool locked;
        bool loaded;
} k;

static const char *state_dir;   /* NULL: the key lives in memory only */

static void file_image(uint8_t *buf, const uint8_t *key, uint32_t generation) {
        memcpy(buf, KEY_MAGIC, 8);
        for (int i = 0; i < 4; i++)
                buf[8 + i] = (uint8_t) (generation >> (8 * i));
        memset(buf + 12, 0, 4);
        memcpy(buf + 16, key, MSEG_PROTO_TOKEN_KEYBYTES);
}

/* Write @key of @generation to the key file, atomically. 0 or -errno. */
static int key_write(const uint8_t *key, uint32_t generation) {
        uint8_t buf[KEY_FILE_SIZE];
        int dfd, fd, r = 0;

        dfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return -errno;
        fd = openat(dfd, KEY_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
                r = -errno;
                goto out;
        }
        file_image(buf, key, generation);
        if (fchmod(fd, 0600) < 0 || write(fd, buf, sizeof(buf)) != (ssize_t) sizeof(buf) || fsync(fd) < 0)
                r = errno ? -errno : -EIO;
        sodium_memzero(buf, sizeof(buf));
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r == 0 && renameat(dfd, KEY_TMP, dfd, KEY_FILE) < 0)
                r = -errno;
        if (r == 0)
                (void) fsync(dfd);
        else
                unlinkat(dfd, KEY_TMP, 0);
out:
        close(dfd);
        return r;
}

/* Read the key file. 0, -ENOENT (none yet), or -EBADMSG / -EPERM with
 * @why saying what is wrong with it (it will be replaced). */
static int key_read(char *why, size_t whylen) {
        uint8_t buf[KEY_FILE_SIZE + 1];
        struct stat st;
        char path[4096];
        ssize_t n;
        int fd, r = 0;

        snprintf(path, sizeof(path), "%s/%s", state_dir, KEY_FILE);
        fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                snprintf(why, whylen, "%s", strerror(errno));
                return errno == ENOENT ? -ENOENT : -EBADMSG;
        }
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                snprintf(why, whylen, "not a regular file");
                r = -EBADMSG;
        } else if ((n = read(fd, buf, sizeof(buf))) != KEY_FILE_SIZE || memcmp(buf, KEY_MAGIC, 8) != 0) {
                snprintf(why, whylen, "not a key file of %d bytes", KEY_FILE_SIZE);
                r = -EBADMSG;
        } else {
                /* The generation is kept even from a key that is replaced
                 * below, so that the next one follows it. */
                k.generation = (uint32_t) buf[8] | (uint32_t) buf[9] << 8 | (uint32_t) buf[10] << 16 |
                               (uint32_t) buf[11] << 24;
                if (st.st_uid != geteuid() || (st.st_mode & 077)) {
                        /* Someone else could read or replace it: it may be known. */
                        snprintf(why, whylen, "owner uid %u mode %04o: others could read it", (unsigned) st.st_uid,
                                 (unsigned) st.st_mode & 07777);
                        r = -EPERM;
                } else {
                        memcpy(k.key, buf + 16, sizeof(k.key));
                }
        }
        sodium_memzero(buf, sizeof(buf));
        close(fd);
        return r;
}

int tokens_init(const struct msegd_config *cfg) {
        char why[256];
        int r;

        memset(&k, 0, sizeof(k));
        k.locked = sodium_mlock(k.key, sizeof(k.key)) == 0;
        state_dir = cfg->state_dir;
        if (!state_dir) {
                randombytes_buf(k.key, sizeof(k.key));
                k.generation = 1;
                k.loaded = true;
                log_notice("no state directory: the token key lives in memory, tokens end when msegd stops");
                return 0;
        }
        {
                char tmp[4096];
                snprintf(tmp, sizeof(tmp), "%s/%s", state_dir, KEY_TMP);
                (void) unlink(tmp);     /* a rotation cut short */
        }
        r = key_read(why, sizeof(why));
        if (r == 0) {
                k.loaded = true;
                log_info("token key generation %u loaded from %s/%s", k.generation, state_dir, KEY_FILE);
                return 0;
        }
        if (r != -ENOENT)
                log_warning("token key %s/%s: %s: making a new key (tokens made so far stop working)",
                            state_dir, KEY_FILE, why);
        randombytes_buf(k.key, sizeof(k.key));
        k.generation = k.generation + 1;      /* 1 for a new or unreadable file */
        if (k.generation == 0)
                k.generation = 1;
        r = key_write(k.key, k.generation);
        if (r < 0) {
                log_error("cannot write the token key to %s/%s: %s", state_dir, KEY_FILE, strerror(-r));
                sodium_memzero(k.key, sizeof(k.key));
                return r;
        }
        k.loaded = true;
        log_notice("new token key (generation %u) in %s/%s", k.generation, state_dir, KEY_FILE);
        return 0;
}

void tokens_done(void) {
        if (k.locked)
                sodium_munlock(k.key, sizeof(k.key));  /* wipes it too */
        sodium_memzero(&k, sizeof(k));
}

int tokens_rotate(uint32_t *ret_generation, char *msg, size_t msglen) {
        uint8_t key[MSEG_PROTO_TOKEN_KEYBYTES];
        uint32_t generation = k.generation + 1;
        int r;

        if (!k.loaded) {
                snprintf(msg, msglen, "no token key");
                return -EIO;
        }
        if (generation == 0)
                generation = 1;
        randombytes_buf(key, sizeof(key));
        if (state_dir) {
                r = key_write(key, generation);
                if (r < 0) {
                        sodium_memzero(key, sizeof(key));
                        snprintf(msg, msglen, "cannot write the new key to %s/%s (the old one stays): %s",
                                 state_dir, KEY_FILE, strerror(-r));
                        return r;
                }
        }
        memcpy(k.key, key, sizeof(k.key));
        sodium_memzero(key, sizeof(key));
        k.generation = generation;
        *ret_generation = generation;
        return 0;
}

int tokens_grant(const struct segment *s, uint32_t rights, uint64_t ttl, char *buf, size_t cap,
                 uint64_t *ret_expires, char *msg, size_t msglen) {
        struct mseg_proto_token t = { .generation = k.generation, .rights = rights };
        ssize_t n;

        if (!k.loaded || !s->name) {
                snprintf(msg, msglen, "no token key");
                return -EIO;
        }
        memcpy(t.segment_id, s->id, sizeof(t.segment_id));
        t.expires = (uint64_t) time(NULL) + ttl;
        randombytes_buf(t.nonce, sizeof(t.nonce));
        snprintf(t.name, sizeof(t.name), "%s", s->name);
        n = mseg_proto_token_encode(&t, k.key, buf, cap);
        if (n < 0) {
                snprintf(msg, msglen, "cannot encode the token: %s", strerror((int) -n));
                return (int) n;
        }
        *ret_expires = t.expires;
        return 0;
}

int tokens_check(struct segtable *tab, const char *token, const char *name, uint32_t want,
                 struct segment **ret, char *msg, size_t msglen) {
        struct mseg_proto_token t;
        struct segment *s;
        uint64_t now = (uint64_t) time(NULL);
        char q[300], hex[33];
        int r;

        if (!k.loaded) {
                snprintf(msg, msglen, "no token key");
                return -EIO;
        }
        r = mseg_proto_token_decode(token, strlen(token), k.key, k.generation, &t, msg, msglen);
        if (r < 0)
                return r;
        if (now >= t.expires) {
                snprintf(msg, msglen, "token expired %llu s ago", (unsigned long long) (now - t.expires));
                return MSEG_E_TOKEN;
        }
        if (strcmp(t.name, name) != 0) {
                snprintf(msg, msglen, "token is for segment %s, not this one", log_quote(t.name, q, sizeof(q)));
                return MSEG_E_TOKEN;
        }
        s = segtable_lookup(tab, name);
        if (!s) {
                snprintf(msg, msglen, "no segment named %s (the token's segment was removed)",
                         log_quote(name, q, sizeof(q)));
                return -ENOENT;
        }
        if (sodium_memcmp(s->id, t.segment_id, sizeof(t.segment_id)) != 0) {
                mseg_proto_id_to_hex(t.segment_id, hex);
                snprintf(msg, msglen, "token is for an earlier segment named %s (id %s), removed since",
                         log_quote(name, q, sizeof(q)), hex);
                return MSEG_E_TOKEN;
        }
        if ((want & t.rights) != want) {
                snprintf(msg, msglen, "token grants %s only", t.rights & MSEG_PROTO_RIGHT_WRITE ? "write" : "read");
                return -EACCES;
        }
        *ret = s;
        return 0;
}
