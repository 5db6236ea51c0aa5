/* SPDX-License-Identifier: MIT */
/*
 * fdstore.c — memory segments that outlive msegd's process, through the
 * service manager's descriptor store (systemd's FDSTORE=1, linux-facts.md
 * 3.3; the transport is shim.h).
 *
 * Every named segment is stored as two descriptors:
 *   "seg-<id>"   its memfd, the segment itself (contents, named objects);
 *   "meta-<id>"  a small sealed memfd holding msegd's record of it: name,
 *                id, sizes, owner, mode, flags, as the JSON of persist.c's
 *                state files (mseg_proto_encode_state).
 * <id> is the segment's random 128-bit id in 32 lowercase hex digits. A
 * segment name can hold bytes an FDNAME cannot (':', control characters,
 * anything beyond ASCII) and up to 255 of them, so the name lives in the
 * record and the FDNAME carries only the id. The record is separate from
 * the segment because clients write the segment: owner and mode read back
 * from it would be whatever a writer put there. The record is sealed
 * against writing before it is stored, only msegd and the manager hold it,
 * and it never changes: of a segment's attributes only its usable size
 * changes (mseg_grow), and that is read back from the segment header,
 * clamped between the size at creation and the reserve, just as a client
 * with write access could set it anyway.
 *
 * Lifetime: stored when created (or loaded from a state file), removed
 * (FDSTOREREMOVE=1, both names) when its name is removed: the store then
 * holds exactly the named segments, so PID 1 pins no removed memory (memfds
 * cannot be polled, so systemd never drops them on its own). A clean
 * shutdown removes nothing: `systemctl restart` passes them back, while
 * `systemctl stop` makes systemd 252 discard the store.
 *
 * Adoption at start: each passed descriptor is trusted only after checks:
 * its name parses; both halves are present; the record is sealed, parses
 * strictly and names the same id; the segment is a memfd of exactly the
 * recorded size, sealed against resizing, open read-write; its header
 * validates (mseg__validate, via segment_map) and carries the same id. A
 * pair that fails is logged, closed, and removed from the store, and the
 * rest are served. Dead clients' slots are reclaimed on the first tick.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "msegd.h"
#include "shim.h"

#define SEG_PREFIX "seg-"
#define META_PREFIX "meta-"
#define META_MAX 4096
#define META_SEALS (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

/* A segment's two stored descriptors, gathered by id at adoption. */
struct pair {
        uint8_t id[16];
        int seg_fd, meta_fd;
        bool drop;                      /* remove its names from the store */
        bool adopted;
};

static void fdname(char *buf, size_t cap, const char *prefix, const uint8_t id[16]) {
        char hex[33];

        mseg_proto_id_to_hex(id, hex);
        snprintf(buf, cap, "%s%s", prefix, hex);
}

/* A sealed memfd holding @s's record. Returns it or -errno. */
static int meta_new(const struct segment *s) {
        struct mseg_proto_seginfo info;
        char buf[META_MAX];
        ssize_t n;
        int fd, r;

        segment_info(s, &info);
        info.clients = 0;
        n = mseg_proto_encode_state(&info, buf, sizeof(buf));
        if (n < 0)
                return (int) n;
        fd = memfd_create("msegd-meta", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return -errno;
        if (pwrite(fd, buf, (size_t) n, 0) != n) {
                r = errno ? -errno : -EIO;
                goto fail;
        }
        if (fcntl(fd, F_ADD_SEALS, META_SEALS) < 0 || fchmod(fd, 0600) < 0) {
                r = -errno;
                goto fail;
        }
        return fd;
fail:
        close(fd);
        return r;
}

void fdstore_segment_added(struct segment *s) {
        char seg_name[64], meta_name[64], q[600];
        int mfd, r;

        if (s->in_fdstore || !s->name || !shim_notify_enabled())
                return;
        fdname(seg_name, sizeof(seg_name), SEG_PREFIX, s->id);
        fdname(meta_name, sizeof(meta_name), META_PREFIX, s->id);
        mfd = meta_new(s);
        if (mfd < 0) {
                r = mfd;
                goto fail;
        }
        /* Record first: a crash between the two leaves a record without a
         * segment, which the next start drops, never a segment without
         * its owner and mode. */
        r = shim_fdstore_add(meta_name, mfd);
        close(mfd);
        if (r < 0)
                goto fail;
        r = shim_fdstore_add(seg_name, s->fd);
        if (r < 0) {
                (void) shim_fdstore_remove(meta_name);
                goto fail;
        }
        s->in_fdstore = true;
        return;
fail:
        log_client(LOG_WARNING, "cannot store segment %s with the service manager (it will not survive "
                   "a restart of msegd): %s", log_quote(s->name, q, sizeof(q)), strerror(-r));
}

void fdstore_segment_removed(struct segment *s) {
        char name[64];

        if (!s->in_fdstore)
                return;
        s->in_fdstore = false;
        fdname(name, sizeof(name), SEG_PREFIX, s->id);
        (void) shim_fdstore_remove(name);
        fdname(name, sizeof(name), META_PREFIX, s->id);
        (void) shim_fdstore_remove(name);
}

/* ------------------------------------------------------------ adoption */

static int read_meta(int fd, struct mseg_proto_seginfo *info, char *why, size_t whylen) {
        char buf[META_MAX + 1], err[256];
        struct stat st;
        int seals;
        ssize_t n;

        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > META_MAX) {
                snprintf(why, whylen, "its record is not a small regular file");
                return -EINVAL;
        }
        seals = fcntl(fd, F_GET_SEALS);
        if (seals < 0 || (seals & META_SEALS) != META_SEALS) {
                snprintf(why, whylen, "its record is not sealed (seals 0x%x)", seals < 0 ? 0 : seals);
                return -EPERM;
        }
        n = pread(fd, buf, (size_t) st.st_size, 0);
        if (n != st.st_size) {
                snprintf(why, whylen, "cannot read its record");
                return -EIO;
        }
        buf[n] = '\0';
        if (memchr(buf, '\0', (size_t) n)) {
                snprintf(why, whylen, "its record holds a NUL byte");
                return -EINVAL;
        }
        if (mseg_proto_decode_state(buf, (size_t) n, info, err, sizeof(err)) < 0) {
                snprintf(why, whylen, "bad record: %s", err);
                return -EINVAL;
        }
        if (info->max_size < MSEG_MIN_SIZE || info->max_size > MSEG_MAX_SIZE || info->max_size % 4096 ||
            info->size > info->max_size || info->size < MSEG_MIN_SIZE || info->mode > 0777) {
                snprintf(why, whylen, "record out of range (size %llu, max %llu, mode %o)",
                         (unsigned long long) info->size, (unsigned long long) info->max_size, info->mode);
                return -EINVAL;
        }
        return 0;
}

/* Validate @p and insert it into @t. On failure @p->seg_fd may have been
 * closed (set to -1); @why says what failed. */
static int adopt_one(struct segtable *t, struct pair *p, char *why, size_t whylen, char *name, size_t namelen) {
        struct mseg_proto_seginfo info;
        struct segment *s;
        uint64_t usable;
        int r, fl;

        if (p->meta_fd < 0) {
                snprintf(why, whylen, "its record is missing");
                return -ENOENT;
        }
        r = read_meta(p->meta_fd, &info, why, whylen);
        if (r < 0)
                return r;
        snprintf(name, namelen, "%s", info.name);
        if (p->seg_fd < 0) {
                snprintf(why, whylen, "its memfd is missing");
                return -ENOENT;
        }
        if (memcmp(info.id, p->id, 16) != 0) {
                snprintf(why, whylen, "its record names another segment id");
                return -EINVAL;
        }
        r = memfd_segment_check(p->seg_fd, info.max_size);
        if (r < 0) {
                snprintf(why, whylen, r == -EPERM ? "the memfd is not sealed against resizing"
                                                  : "the descriptor is not a memfd of the recorded %llu bytes",
                         (unsigned long long) info.max_size);
                return r;
        }
        fl = fcntl(p->seg_fd, F_GETFL);
        if (fl < 0 || (fl & O_ACCMODE) != O_RDWR) {
                snprintf(why, whylen, "the memfd is not open for reading and writing");
                return -EBADF;
        }
        s = calloc(1, sizeof(*s));
        if (!s || !(s->name = strdup(info.name))) {
                free(s);
                snprintf(why, whylen, "out of memory");
                return -ENOMEM;
        }
        s->fd = p->seg_fd;
        p->seg_fd = -1;                 /* s owns it now */
        s->ro_fd = -1;
        s->max_size = info.max_size;
        s->uid = info.uid;
        s->gid = info.gid;
        s->mode = info.mode;
        s->persistent = info.persistent;
        s->remove_on_last_close = info.remove_on_last_close;
        r = segment_map(s, false, why, whylen);
        if (r < 0)
                goto fail;
        if (memcmp(s->id, p->id, 16) != 0) {
                r = MSEG_E_CORRUPT;
                snprintf(why, whylen, "the segment header carries another id");
                goto fail;
        }
        usable = mseg__usable(s->handle);
        s->size = usable < info.size ? info.size : usable;
        s->in_fdstore = true;           /* it is in the store already */
        s->reclaim_pending = true;      /* clients may have died meanwhile */
        r = segtable_adopt(t, s);
        if (r < 0) {
                snprintf(why, whylen, "another stored segment has the same name");
                goto fail;
        }
        return 0;
fail:
        segment_free_raw(s);
        return r;
}

static struct pair *pair_of(struct pair *pairs, size_t *npairs, const uint8_t id[16]) {
        for (size_t i = 0; i < *npairs; i++)
                if (memcmp(pairs[i].id, id, 16) == 0)
                        return &pairs[i];
        pairs[*npairs] = (struct pair) { .seg_fd = -1, .meta_fd = -1 };
        memcpy(pairs[*npairs].id, id, 16);
        return &pairs[(*npairs)++];
}

int fdstore_adopt(struct segtable *t) {
        struct shim_fd *fds = NULL;
        struct pair *pairs = NULL;
        size_t npairs = 0;
        unsigned adopted = 0, dropped = 0;
        char why[512], name[MSEG_PROTO_NAME_MAX + 1], q[1600];
        int n;

        n = shim_stored_fds(&fds);
        if (n <= 0)
                return n;
        pairs = calloc((size_t) n, sizeof(*pairs));
        if (!pairs) {
                for (int i = 0; i < n; i++)
                        close(fds[i].fd);
                free(fds);
                return -ENOMEM;
        }
        for (int i = 0; i < n; i++) {
                const char *nm = fds[i].name, *hex = NULL;
                bool is_seg = false;
                uint8_t id[16];
                struct pair *p;
                int *slot;

                if (strncmp(nm, SEG_PREFIX, strlen(SEG_PREFIX)) == 0) {
                        hex = nm + strlen(SEG_PREFIX);
                        is_seg = true;
                } else if (strncmp(nm, META_PREFIX, strlen(META_PREFIX)) == 0) {
                        hex = nm + strlen(META_PREFIX);
                }
                if (!hex || strlen(hex) != 32 || mseg_proto_id_from_hex(hex, id) < 0) {
                        log_error("dropping stored descriptor %s: not a name msegd stores",
                                  log_quote(nm, q, sizeof(q)));
                        close(fds[i].fd);
                        (void) shim_fdstore_remove(nm);
                        dropped++;
                        continue;
                }
                p = pair_of(pairs, &npairs, id);
                slot = is_seg ? &p->seg_fd : &p->meta_fd;
                if (*slot >= 0) {
                        /* systemd keeps one entry per open file; two files
                         * under one name are not ours to choose between. */
                        log_error("dropping stored descriptor %s: its name is stored twice",
                                  log_quote(nm, q, sizeof(q)));
                        close(fds[i].fd);
                        p->drop = true;
                        continue;
                }
                *slot = fds[i].fd;
        }
        free(fds);

        for (size_t i = 0; i < npairs; i++) {
                struct pair *p = &pairs[i];
                char hex[33];

                why[0] = name[0] = '\0';
                if (!p->drop && adopt_one(t, p, why, sizeof(why), name, sizeof(name)) == 0) {
                        p->adopted = true;
                        adopted++;
                } else {
                        mseg_proto_id_to_hex(p->id, hex);
                        log_error("dropping stored segment %s (id %s): %s",
                                  name[0] ? log_quote(name, q, sizeof(q)) : "(no record)", hex,
                                  p->drop ? "duplicate descriptors in the store" : why);
                        p->drop = true;
                        dropped++;
                }
                if (p->seg_fd >= 0)
                        close(p->seg_fd);
                if (p->meta_fd >= 0)
                        close(p->meta_fd);
                p->seg_fd = p->meta_fd = -1;
        }
        /* Take what failed out of the store, so it is not passed back again
         * and PID 1 stops pinning its memory. */
        for (size_t i = 0; i < npairs; i++) {
                if (!pairs[i].drop)
                        continue;
                fdname(name, sizeof(name), SEG_PREFIX, pairs[i].id);
                (void) shim_fdstore_remove(name);
                fdname(name, sizeof(name), META_PREFIX, pairs[i].id);
                (void) shim_fdstore_remove(name);
        }
        if (adopted || dropped)
                log_notice("descriptor store: adopted %u segment(s), dropped %u", adopted, dropped);
        if (t->segments > t->cfg->lim.max_segments || t->bytes > t->cfg->lim.max_bytes)
                log_warning("stored segments exceed the configured limits (%llu segments, %llu bytes)",
                            (unsigned long long) t->segments, (unsigned long long) t->bytes);
        free(pairs);
        return (int) adopted;
}
