/* SPDX-License-Identifier: MIT */
/*
 * persist.c — persistent segments: one state file per segment in the state
 * directory, reloaded when msegd starts.
 *
 * A persistent segment is served like any other, as a sealed memfd: a
 * regular file cannot be sealed, so handing clients a descriptor to the
 * file itself would let any writer truncate it and make every other mapper
 * (and msegd) die of SIGBUS. Instead msegd copies the memfd to its state
 * file: when the segment is created or grown, when its last client
 * detaches, every sync interval while clients are attached, and at a clean
 * shutdown. What a crash of msegd or of the machine can lose is therefore
 * bounded by the sync interval (msegd's own restarts lose nothing once the
 * systemd descriptor store keeps the memfds, issue 5).
 *
 * State file "<segment id in hex>.mseg":
 *   [0, 4096)              a JSON record (name, id, sizes, mode, owner),
 *                          NUL-padded (protocol/message.c encodes it)
 *   [4096, 4096+max_size)  the segment image, sparse where the memfd is
 * Each copy goes to "<id>.mseg.tmp", is fsync'ed, and is renamed over the
 * old file, so a crash leaves either the old or the new copy, never a torn
 * file. A copy is a snapshot taken while clients may be writing; it is as
 * consistent as the segment would be after a crash of all of them at that
 * moment, which the allocator and registry are built to recover from.
 *
 * Copies run on libuv's thread pool with their own read-only descriptor
 * and a reference on the segment, so a large segment never stalls other
 * clients. Loading validates each file (record, sizes, then the image with
 * mseg__validate) and logs and skips a bad one.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "msegd.h"

#define META_SIZE 4096
#define CHUNK (1u << 20)

struct save_work {
        uv_work_t req;
        struct segtable *t;
        struct segment *s;
        int fd;                 /* O_RDONLY reopen of the memfd */
        uint64_t max_size;
        char path[4096], tmp[4096 + 8], dir[4096];
        char meta[META_SIZE];
        int err;
        char what[64];
};

static const struct msegd_config *config;

int persist_init(const struct msegd_config *cfg) {
        config = cfg;
        return 0;
}

static void state_path(const uint8_t id[16], char *buf, size_t cap) {
        char hex[33];

        mseg_proto_id_to_hex(id, hex);
        snprintf(buf, cap, "%s/%s.mseg", config->state_dir, hex);
}

/* Copy the data extents of [from, from + len) of @in to @out at
 * @out_off - @from + offset, skipping holes. 0 or -errno. */
static int copy_extents(int in, uint64_t from, uint64_t len, int out, int64_t shift, char *buf,
                        const char **what) {
        uint64_t off = from, end = from + len;

        while (off < end) {
                off_t data = lseek(in, (off_t) off, SEEK_DATA), hole;
                if (data < 0) {
                        if (errno == ENXIO)
                                return 0;       /* no data after off */
                        *what = "SEEK_DATA";
                        return -errno;
                }
                if ((uint64_t) data >= end)
                        return 0;
                hole = lseek(in, data, SEEK_HOLE);
                if (hole < 0) {
                        *what = "SEEK_HOLE";
                        return -errno;
                }
                if ((uint64_t) hole > end)
                        hole = (off_t) end;
                for (uint64_t p = (uint64_t) data; p < (uint64_t) hole;) {
                        size_t want = (uint64_t) hole - p < CHUNK ? (size_t) ((uint64_t) hole - p) : CHUNK;
                        ssize_t n = pread(in, buf, want, (off_t) p);
                        if (n <= 0) {
                                *what = "read";
                                return n < 0 ? -errno : -EIO;
                        }
                        for (ssize_t w = 0; w < n;) {
                                ssize_t m = pwrite(out, buf + w, (size_t) (n - w), (off_t) ((int64_t) p + shift + w));
                                if (m <= 0) {
                                        *what = "write";
                                        return m < 0 ? -errno : -EIO;
                                }
                                w += m;
                        }
                        p += (uint64_t) n;
                }
                off = (uint64_t) hole;
        }
        return 0;
}

static void save_run(uv_work_t *req) {
        struct save_work *w = req->data;
        const char *what = "open";
        char *buf = NULL;
        int out, dfd, r;

        out = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (out < 0) {
                w->err = -errno;
                snprintf(w->what, sizeof(w->what), "open %s", "temporary file");
                return;
        }
        buf = malloc(CHUNK);
        r = buf ? 0 : -ENOMEM;
        if (r == 0 && pwrite(out, w->meta, META_SIZE, 0) != META_SIZE)
                r = -errno ? -errno : -EIO, what = "write";
        if (r == 0 && ftruncate(out, (off_t) (META_SIZE + w->max_size)) < 0)
                r = -errno, what = "ftruncate";
        if (r == 0) {
                /* The page layer holds still while we copy (restore.c);
                 * what else changes meanwhile is repaired when the copy is
                 * loaded. A segment whose page lock cannot be had is
                 * copied as it is. */
                int held = -EINVAL;
                mseg__lock_nowait(true);        /* msegd never waits on a segment */
                for (int tries = 0; w->s->handle && tries < 200; tries++) {
                        held = mseg__snapshot_hold(w->s->handle);
                        if (held != -EBUSY)
                                break;
                        usleep(1000);
                }
                r = copy_extents(w->fd, 0, w->max_size, out, META_SIZE, buf, &what);
                if (held >= 0)
                        mseg__snapshot_release(w->s->handle);
        }
        if (r == 0 && fsync(out) < 0)
                r = -errno, what = "fsync";
        if (close(out) < 0 && r == 0)
                r = -errno, what = "close";
        if (r == 0 && rename(w->tmp, w->path) < 0)
                r = -errno, what = "rename";
        if (r == 0) {
                dfd = open(w->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dfd >= 0) {
                        fsync(dfd);
                        close(dfd);
                }
        } else {
                unlink(w->tmp);
        }
        free(buf);
        w->err = r;
        snprintf(w->what, sizeof(w->what), "%s", what);
}

static void save_done(uv_work_t *req, int status) {
        struct save_work *w = req->data;
        struct segment *s = w->s;
        char q[600];

        close(w->fd);
        s->saving = false;
        if (status < 0)
                w->err = status == UV_ECANCELED ? -ECANCELED : -EIO;
        if (w->err < 0)
                log_error("cannot save persistent segment %s to %s: %s: %s",
                          log_quote(s->name ? s->name : "(removed)", q, sizeof(q)), w->path, w->what,
                          strerror(-w->err));
        if (!s->name) {
                /* Removed while we were copying: the rename may have brought
                 * the file back. */
                unlink(w->path);
        } else if (s->save_again) {
                s->save_again = false;
                persist_save(w->t, s);
        }
        segment_unref(w->t, s);
        free(w);
}

void persist_save(struct segtable *t, struct segment *s) {
        struct mseg_proto_seginfo info;
        struct save_work *w;
        char q[600];
        ssize_t n;
        int r;

        if (!s->persistent || !s->name || !config->state_dir)
                return;
        if (s->saving) {
                s->save_again = true;
                return;
        }
        s->dirty = false;
        w = calloc(1, sizeof(*w));
        if (!w)
                goto fail;
        w->req.data = w;
        w->t = t;
        w->s = s;
        w->max_size = s->max_size;
        state_path(s->id, w->path, sizeof(w->path));
        snprintf(w->tmp, sizeof(w->tmp), "%s.tmp", w->path);
        snprintf(w->dir, sizeof(w->dir), "%s", config->state_dir);
        segment_info(s, &info);
        n = mseg_proto_encode_state(&info, w->meta, META_SIZE - 1);
        if (n < 0) {
                free(w);
                goto fail;
        }
        w->fd = memfd_reopen_ro(s->fd);
        if (w->fd < 0) {
                free(w);
                goto fail;
        }
        segment_ref(s);
        s->saving = true;
        r = uv_queue_work(t->loop, &w->req, save_run, save_done);
        if (r < 0) {
                s->saving = false;
                close(w->fd);
                free(w);
                segment_unref(t, s);
                goto fail;
        }
        return;
fail:
        s->dirty = true;        /* the next tick tries again */
        log_error("cannot start saving persistent segment %s", log_quote(s->name, q, sizeof(q)));
}

void persist_remove(struct segtable *t, struct segment *s) {
        char path[4096 + 8];

        (void) t;
        if (!config->state_dir)
                return;
        s->save_again = false;
        state_path(s->id, path, sizeof(path));
        if (unlink(path) < 0 && errno != ENOENT)
                log_warning("cannot remove state file %s: %s", path, strerror(errno));
}

void persist_tick(struct segtable *t) {
        for (struct segment *s = t->all; s; s = s->lnext)
                if (s->persistent && s->name && (s->dirty || s->attached > 0))
                        persist_save(t, s);
}

/* ------------------------------------------------------------ loading */

static int load_one(struct segtable *t, int dfd, const char *file, char *why, size_t whylen) {
        struct mseg_proto_seginfo info;
        char meta[META_SIZE], err[256], *buf = NULL;
        const char *what = "copy";
        struct segment *s = NULL, *old;
        struct stat st;
        int fd, r;
        ssize_t n;

        fd = openat(dfd, file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return snprintf(why, whylen, "open: %s", strerror(errno)), -errno;
        r = -EINVAL;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                snprintf(why, whylen, "not a regular file");
                goto out;
        }
        n = pread(fd, meta, META_SIZE, 0);
        if (n != META_SIZE) {
                snprintf(why, whylen, "shorter than its %d-byte record", META_SIZE);
                goto out;
        }
        if (memchr(meta, '\0', META_SIZE) == NULL) {
                snprintf(why, whylen, "record is not NUL-terminated");
                goto out;
        }
        r = mseg_proto_decode_state(meta, strlen(meta), &info, err, sizeof(err));
        if (r < 0) {
                snprintf(why, whylen, "%s", err);
                goto out;
        }
        r = -EINVAL;
        if (info.max_size < MSEG_MIN_SIZE || info.max_size > MSEG_MAX_SIZE || info.max_size % 4096 ||
            info.size > info.max_size) {
                snprintf(why, whylen, "sizes out of range");
                goto out;
        }
        if ((uint64_t) st.st_size != META_SIZE + info.max_size) {
                snprintf(why, whylen, "file has %lld bytes, the record says %llu", (long long) st.st_size,
                         (unsigned long long) (META_SIZE + info.max_size));
                goto out;
        }
        old = segtable_lookup(t, info.name);
        if (old && memcmp(old->id, info.id, 16) == 0) {
                r = 1;          /* adopted from the descriptor store: that copy is newer */
                goto out;
        }
        if (old) {
                r = -EEXIST;
                snprintf(why, whylen, "another state file has the same name");
                goto out;
        }
        s = calloc(1, sizeof(*s));
        buf = malloc(CHUNK);
        if (!s || !buf || !(s->name = strdup(info.name))) {
                r = -ENOMEM;
                snprintf(why, whylen, "out of memory");
                goto out;
        }
        s->fd = s->ro_fd = -1;
        s->max_size = info.max_size;
        s->size = info.size;
        s->uid = info.uid;
        s->gid = info.gid;
        s->mode = info.mode;
        s->persistent = true;
        r = memfd_segment_new(info.name, info.max_size);
        if (r < 0) {
                snprintf(why, whylen, "memfd: %s", strerror(-r));
                goto out;
        }
        s->fd = r;
        r = copy_extents(fd, META_SIZE, info.max_size, s->fd, -META_SIZE, buf, &what);
        if (r < 0) {
                snprintf(why, whylen, "%s: %s", what, strerror(-r));
                goto out;
        }
        r = segment_map(s, false, why, whylen);
        if (r < 0)
                goto out;
        if (memcmp(s->id, info.id, 16) != 0) {
                r = MSEG_E_CORRUPT;
                snprintf(why, whylen, "segment id differs from the record's");
                goto out;
        }
        /* The copy was taken while clients worked: before anyone maps it,
         * free its locks, reclaim its slots and let every module repair
         * (client-lib/restore.c). What cannot be repaired is reported to
         * clients as MSEG_E_CORRUPT; the copy is served all the same. */
        if (mseg__restore_offline(s->handle) < 0)
                log_warning("state file %s: restored copy is damaged: %s", file, mseg_last_error());
        /* The header's usable size is what clients see; it was validated. */
        s->size = mseg__usable(s->handle);
        r = segtable_adopt(t, s);
        if (r < 0) {
                snprintf(why, whylen, "name taken");
                goto out;
        }
        s = NULL;
        r = 0;
out:
        if (s)
                segment_free_raw(s);
        free(buf);
        close(fd);
        return r;
}

int persist_load_all(struct segtable *t) {
        DIR *d;
        struct dirent *e;
        unsigned loaded = 0, skipped = 0;
        char why[512];
        int r;

        if (!config->state_dir)
                return 0;
        d = opendir(config->state_dir);
        if (!d)
                return -errno;
        while ((e = readdir(d))) {
                size_t len = strlen(e->d_name);
                if (len > 9 && strcmp(e->d_name + len - 9, ".mseg.tmp") == 0) {
                        unlinkat(dirfd(d), e->d_name, 0);       /* a copy cut short */
                        continue;
                }
                if (len <= 5 || strcmp(e->d_name + len - 5, ".mseg") != 0)
                        continue;
                why[0] = '\0';
                r = load_one(t, dirfd(d), e->d_name, why, sizeof(why));
                if (r < 0) {
                        log_error("skipping state file %s/%s: %s", config->state_dir, e->d_name, why);
                        skipped++;
                } else if (r == 0) {
                        loaded++;       /* 1: already adopted from the descriptor store */
                }
        }
        closedir(d);
        if (loaded || skipped)
                log_notice("loaded %u persistent segment(s) from %s, skipped %u", loaded, config->state_dir,
                           skipped);
        if (t->segments > t->cfg->lim.max_segments || t->bytes > t->cfg->lim.max_bytes)
                log_warning("persistent segments exceed the configured limits (%llu segments, %llu bytes)",
                            (unsigned long long) t->segments, (unsigned long long) t->bytes);
        return 0;
}
