/* SPDX-License-Identifier: MIT */
/*
 * segtable.c — msegd's table of segments: name -> memfd, owner, mode, sizes,
 * lifetime, and the limits and quotas that bound what clients can make it
 * hold.
 *
 * A segment lives as long as it has references: its name (while not
 * removed), each connection attachment, and each state-file copy in flight.
 * Removing a name is like shm_unlink: the name is free at once, attached
 * clients keep their mappings, and the memfd is released (and its bytes
 * stop counting against quotas) when the last reference goes. A segment
 * created with remove_on_last_close loses its name when its last attachment
 * ends.
 *
 * Accounting: a segment is charged its usable size (what its allocator may
 * hand out), to its owner's uid and to the total, from creation until it is
 * freed; growing charges the difference first. The reserve beyond the
 * usable size costs no memory until touched and only address space here.
 *
 * msegd maps every segment read-write (it formats new ones and grows them)
 * but never trusts what clients wrote there: it only formats, validates,
 * and calls libmseg's bounds-checked reclaim and growth paths, and since
 * those take a lock in the segment they run on the thread pool, never on
 * the loop.
 *
 * The name hash is SipHash (crypto_shorthash) under a random key, so chosen
 * names cannot pile up in one bucket.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <sodium.h>

#include "internal.h"
#include "msegd.h"

#define PAGE UINT64_C(4096)

static inline uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }


static size_t bucket_of(const struct segtable *t, const char *name) {
        uint8_t h[crypto_shorthash_BYTES];
        uint64_t v;

        crypto_shorthash(h, (const unsigned char *) name, strlen(name), t->hash_key);
        memcpy(&v, h, sizeof(v));
        return (size_t) (v & (t->nbuckets - 1));
}

int segtable_init(struct segtable *t, const struct msegd_config *cfg, uv_loop_t *loop) {
        memset(t, 0, sizeof(*t));
        t->cfg = cfg;
        t->loop = loop;
        t->nbuckets = 1024;
        t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
        if (!t->buckets)
                return -ENOMEM;
        randombytes_buf(t->hash_key, sizeof(t->hash_key));
        return 0;
}

static void rehash(struct segtable *t) {
        size_t n = t->nbuckets * 2;
        struct segment **b = calloc(n, sizeof(*b)), **old = t->buckets;
        size_t oldn = t->nbuckets;

        if (!b)
                return;         /* keep the longer chains; still correct */
        t->buckets = b;
        t->nbuckets = n;
        for (size_t i = 0; i < oldn; i++)
                for (struct segment *s = old[i], *next; s; s = next) {
                        next = s->hnext;
                        size_t k = bucket_of(t, s->name);
                        s->hnext = b[k];
                        b[k] = s;
                }
        free(old);
}

struct segment *segtable_lookup(struct segtable *t, const char *name) {
        for (struct segment *s = t->buckets[bucket_of(t, name)]; s; s = s->hnext)
                if (strcmp(s->name, name) == 0)
                        return s;
        return NULL;
}

struct uid_usage *segtable_uid(struct segtable *t, uint32_t uid, bool create) {
        for (size_t i = 0; i < t->nuids; i++)
                if (t->uids[i].uid == uid)
                        return &t->uids[i];
        if (!create)
                return NULL;
        if (t->nuids == t->uids_cap) {
                size_t cap = t->uids_cap ? t->uids_cap * 2 : 16;
                struct uid_usage *u = realloc(t->uids, cap * sizeof(*u));
                if (!u)
                        return NULL;
                t->uids = u;
                t->uids_cap = cap;
        }
        t->uids[t->nuids] = (struct uid_usage) { .uid = uid };
        return &t->uids[t->nuids++];
}

static void insert_name(struct segtable *t, struct segment *s) {
        size_t k;

        if (t->nnamed + 1 > t->nbuckets)
                rehash(t);
        k = bucket_of(t, s->name);
        s->hnext = t->buckets[k];
        t->buckets[k] = s;
        t->nnamed++;
}

static void insert_live(struct segtable *t, struct segment *s) {
        struct uid_usage *u = segtable_uid(t, s->uid, true);

        s->lnext = t->all;
        if (t->all)
                t->all->lprev = s;
        t->all = s;
        t->segments++;
        t->bytes += s->size;
        if (u) {
                u->segments++;
                u->bytes += s->size;
        }
        s->charged = true;
}

/* A segment stops counting against the limits once it has no name and no
 * attachment, even while work in flight still holds it for a moment. */
static void uncharge(struct segtable *t, struct segment *s) {
        struct uid_usage *u;

        if (!s->charged)
                return;
        s->charged = false;
        t->segments--;
        t->bytes -= s->size;
        u = segtable_uid(t, s->uid, false);
        if (u) {
                u->segments--;
                u->bytes -= s->size;
        }
}

void segment_free_raw(struct segment *s) {
        if (s->handle)
                mseg_close(s->handle);  /* not mapped/fd-owning: only the handle goes */
        if (s->base)
                munmap(s->base, s->max_size);
        if (s->fd >= 0)
                close(s->fd);
        if (s->ro_fd >= 0)
                close(s->ro_fd);
        free(s->name);
        free(s);
}

int segment_map(struct segment *s, bool format, char *msg, size_t msglen) {
        struct mseg *h;
        void *p;
        int r;

        p = mmap(NULL, s->max_size, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
        if (p == MAP_FAILED) {
                r = -errno;
                snprintf(msg, msglen, "cannot map %llu bytes: %s", (unsigned long long) s->max_size,
                         strerror(errno));
                return r;
        }
        s->base = p;
        if (format) {
                r = mseg__format(p, s->max_size, s->size, MSEG_HDR_BROKERED);
                if (r < 0) {
                        snprintf(msg, msglen, "cannot format the segment: %s", mseg_last_error());
                        return r;
                }
        }
        r = mseg__handle_new(&h, p, s->max_size, MSEG__KIND_SHM, false, false);
        if (r < 0) {
                snprintf(msg, msglen, "segment fails validation: %s", mseg_last_error());
                return r;
        }
        if (h->map_size != s->max_size) {
                mseg_close(h);
                snprintf(msg, msglen, "segment header says %llu bytes, the descriptor has %llu",
                         (unsigned long long) h->map_size, (unsigned long long) s->max_size);
                return MSEG_E_CORRUPT;
        }
        s->handle = h;
        memcpy(s->id, h->hdr->id, sizeof(s->id));
        return 0;
}

int segtable_create(struct segtable *t, const struct mseg_proto_request *req, uint32_t uid,
                    uint32_t gid, struct segment **ret, char *msg, size_t msglen) {
        const struct msegd_limits *lim = &t->cfg->lim;
        struct uid_usage *u = segtable_uid(t, uid, true);
        uint64_t size = req->size, max_size = req->max_size ? req->max_size : req->size;
        struct segment *s;
        int r;

        if (!u)
                return -ENOMEM;
        if (segtable_lookup(t, req->name)) {
                snprintf(msg, msglen, "segment exists");
                return -EEXIST;
        }
        if (size < MSEG_MIN_SIZE || max_size < size) {
                snprintf(msg, msglen, "size %llu: need %llu <= size <= max_size (%llu)",
                         (unsigned long long) size, (unsigned long long) MSEG_MIN_SIZE,
                         (unsigned long long) max_size);
                return -EINVAL;
        }
        size = round_up(size, PAGE);
        max_size = round_up(max_size, PAGE);
        if (max_size > lim->max_segment_size || max_size > MSEG_MAX_SIZE) {
                snprintf(msg, msglen, "max_size %llu exceeds max-segment-size %llu",
                         (unsigned long long) max_size, (unsigned long long) lim->max_segment_size);
                return -EFBIG;
        }
        if (req->persistent && req->remove_on_last_close) {
                snprintf(msg, msglen, "persistent and remove_on_last_close exclude each other");
                return -EINVAL;
        }
        if (req->persistent && !t->cfg->state_dir) {
                snprintf(msg, msglen, "msegd has no state directory: no persistent segments");
                return -EOPNOTSUPP;
        }
        if (t->segments >= lim->max_segments) {
                snprintf(msg, msglen, "max-segments (%llu) reached", (unsigned long long) lim->max_segments);
                return MSEG_E_LIMIT;
        }
        if (u->segments >= lim->max_segments_per_uid) {
                snprintf(msg, msglen, "max-segments-per-uid (%llu) reached for uid %u",
                         (unsigned long long) lim->max_segments_per_uid, uid);
                return -EDQUOT;
        }
        if (size > lim->max_bytes_per_uid - (u->bytes < lim->max_bytes_per_uid ? u->bytes : lim->max_bytes_per_uid)) {
                snprintf(msg, msglen, "max-bytes-per-uid: uid %u uses %llu of %llu bytes, asked %llu more", uid,
                         (unsigned long long) u->bytes, (unsigned long long) lim->max_bytes_per_uid,
                         (unsigned long long) size);
                return -EDQUOT;
        }
        if (size > lim->max_bytes - (t->bytes < lim->max_bytes ? t->bytes : lim->max_bytes)) {
                snprintf(msg, msglen, "max-bytes: %llu of %llu bytes in use, asked %llu more",
                         (unsigned long long) t->bytes, (unsigned long long) lim->max_bytes,
                         (unsigned long long) size);
                return -ENOSPC;
        }

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->fd = s->ro_fd = -1;
        s->name = strdup(req->name);
        if (!s->name) {
                free(s);
                return -ENOMEM;
        }
        s->size = size;
        s->max_size = max_size;
        s->uid = uid;
        s->gid = gid;
        s->mode = req->mode ? req->mode & 0777 : 0600;
        s->persistent = req->persistent;
        s->remove_on_last_close = req->remove_on_last_close;
        r = memfd_segment_new(req->name, max_size);
        if (r < 0) {
                snprintf(msg, msglen, "memfd: %s", strerror(-r));
                goto fail;
        }
        s->fd = r;
        r = segment_map(s, true, msg, msglen);
        if (r < 0)
                goto fail;
        s->refs = 1;
        insert_name(t, s);
        insert_live(t, s);
        if (s->persistent)
                persist_save(t, s);
        fdstore_segment_added(s);
        *ret = s;
        return 0;
fail:
        segment_free_raw(s);
        return r;
}

int segtable_adopt(struct segtable *t, struct segment *s) {
        if (segtable_lookup(t, s->name))
                return -EEXIST;
        s->refs = 1;
        insert_name(t, s);
        insert_live(t, s);
        fdstore_segment_added(s);
        return 0;
}

void segtable_unlink(struct segtable *t, struct segment *s) {
        struct segment **pp;

        if (!s->name)
                return;
        for (pp = &t->buckets[bucket_of(t, s->name)]; *pp; pp = &(*pp)->hnext)
                if (*pp == s) {
                        *pp = s->hnext;
                        break;
                }
        s->hnext = NULL;
        t->nnamed--;
        if (s->persistent)
                persist_remove(t, s);
        fdstore_segment_removed(s);
        free(s->name);
        s->name = NULL;
        if (s->attached == 0)
                uncharge(t, s);
        segment_unref(t, s);
}

void segment_ref(struct segment *s) {
        s->refs++;
}

void segment_unref(struct segtable *t, struct segment *s) {
        if (--s->refs > 0)
                return;
        if (s->lprev)
                s->lprev->lnext = s->lnext;
        else
                t->all = s->lnext;
        if (s->lnext)
                s->lnext->lprev = s->lprev;
        uncharge(t, s);
        segment_free_raw(s);
}

/* ---- work on the thread pool ----
 *
 * Reclaiming a dead client's slots and raising the allocator's frontier
 * take a lock in the segment. Those are robust locks with a bounded wait,
 * but a client can hold one for the whole bound, and msegd's loop must never
 * wait on a segment: so both run on libuv's thread pool, holding a
 * reference on the segment, and report back to the loop. */

struct seg_work {
        uv_work_t req;
        struct segtable *t;
        struct segment *s;
        bool grow;
        uint64_t new_size, old_size;
        int result;
        char msg[256];
        segtable_grow_cb done;
        void *arg;
};

static void work_run(uv_work_t *req) {
        struct seg_work *w = req->data;

        /* Never wait on a segment's lock here: a client holding one
         * would hold up this worker, and with it msegd's work on other
         * segments. A busy lock fails at once: a reclaim is retried on the
         * next tick; a growth tries again for a moment (holders of the page
         * lock keep it for microseconds), then reports EBUSY. */
        mseg__lock_nowait(true);
        if (w->grow) {
                for (int tries = 0; tries < 200; tries++) {
                        w->result = mseg__alloc_set_usable(w->s->handle, w->new_size);
                        if (w->result != -EBUSY)
                                break;
                        usleep(1000);
                }
        } else {
                w->result = mseg__slots_reclaim_dead(w->s->handle);
        }
        if (w->result < 0)      /* mseg_last_error() is this thread's */
                snprintf(w->msg, sizeof(w->msg), "%s", mseg_last_error());
}

static void reclaim_start(struct segtable *t, struct segment *s);

static void work_done(uv_work_t *req, int status) {
        struct seg_work *w = req->data;
        struct segtable *t = w->t;
        struct segment *s = w->s;
        char q[600];

        if (status < 0 && w->result >= 0) {
                w->result = -ECANCELED;
                snprintf(w->msg, sizeof(w->msg), "cancelled");
        }
        if (w->grow) {
                struct uid_usage *u = segtable_uid(t, s->uid, false);
                if (w->result < 0 && s->size == w->new_size && s->charged) {
                        /* Give back what was charged for it. */
                        uint64_t delta = w->new_size - w->old_size;
                        s->size = w->old_size;
                        t->bytes -= delta;
                        if (u)
                                u->bytes -= delta;
                }
                if (w->result >= 0 && s->persistent)
                        persist_save(t, s);
                w->done(w->arg, w->result < 0 ? w->result : 0, w->msg, s->size);
        } else {
                s->reclaiming = false;
                if (w->result == -ETIMEDOUT || w->result == -EBUSY || w->result == -EAGAIN)
                        s->reclaim_pending = true;      /* a lock stayed held: the timer retries */
                else if (w->result < 0)
                        log_client(LOG_WARNING, "segment %s: reclaiming dead clients' slots failed: %s",
                                   log_quote(s->name ? s->name : "(removed)", q, sizeof(q)), w->msg);
                else if (w->result > 0)
                        log_debug("segment %s: reclaimed %d slot(s) of dead clients",
                                  log_quote(s->name ? s->name : "(removed)", q, sizeof(q)), w->result);
                if (s->reclaim_again) {
                        s->reclaim_again = false;
                        reclaim_start(t, s);
                }
        }
        segment_unref(t, s);
        free(w);
}

static int work_queue(struct segtable *t, struct seg_work *w) {
        int r;

        w->req.data = w;
        w->t = t;
        segment_ref(w->s);
        r = uv_queue_work(t->loop, &w->req, work_run, work_done);
        if (r < 0)
                segment_unref(t, w->s);
        return r;
}

static void reclaim_start(struct segtable *t, struct segment *s) {
        struct seg_work *w;

        s->reclaim_pending = false;
        if (!s->handle)
                return;
        if (s->reclaiming) {
                s->reclaim_again = true;
                return;
        }
        w = calloc(1, sizeof(*w));
        if (!w) {
                s->reclaim_pending = true;
                return;
        }
        w->s = s;
        s->reclaiming = true;
        if (work_queue(t, w) < 0) {
                s->reclaiming = false;
                s->reclaim_pending = true;
                free(w);
        }
}

void segment_detach(struct segtable *t, struct segment *s, bool disconnect) {
        s->attached--;
        if (s->attached == 0 && !s->name) {
                /* Removed, and the last attachment gone: nothing to reclaim
                 * for anyone msegd knows of, and nothing to charge. */
                uncharge(t, s);
                segment_unref(t, s);
                return;
        }
        /* A detach message comes from a live process that gave its slots
         * back itself when it closed the handle: only a connection that
         * closed (an exit, maybe a crash) calls for a reclaim. A client's
         * socket closes while it is still exiting, and a zombie still has
         * its /proc entry: its slots look alive for a moment, so a
         * disconnect is followed by a few more tries. */
        if (disconnect) {
                reclaim_start(t, s);
                s->reclaim_until_ms = now_ms() + 5000;
        }
        if (s->persistent)
                s->dirty = true;
        if (s->attached == 0 && s->remove_on_last_close && s->name)
                segtable_unlink(t, s);
        else if (s->attached == 0 && s->persistent && s->name)
                persist_save(t, s);
        segment_unref(t, s);
}

void segtable_tick(struct segtable *t) {
        uint64_t now = now_ms();

        for (struct segment *s = t->all; s; s = s->lnext)
                if (s->reclaim_pending || (s->reclaim_until_ms && now <= s->reclaim_until_ms))
                        reclaim_start(t, s);
                else
                        s->reclaim_until_ms = 0;
}

int segtable_grow(struct segtable *t, struct segment *s, uint64_t new_size, segtable_grow_cb done, void *arg,
                  char *msg, size_t msglen) {
        const struct msegd_limits *lim = &t->cfg->lim;
        struct uid_usage *u = segtable_uid(t, s->uid, true);
        struct seg_work *w;
        uint64_t delta;

        new_size = round_up(new_size, PAGE);
        if (new_size > s->max_size) {
                snprintf(msg, msglen, "size %llu beyond the segment's max_size %llu",
                         (unsigned long long) new_size, (unsigned long long) s->max_size);
                return -ENOSPC;
        }
        if (new_size <= s->size && new_size <= mseg__usable(s->handle))
                return 0;       /* never shrinks; growing to less is a no-op */
        if (new_size <= s->size) {
                /* Charged already by a grow still in flight, which may not
                 * have reached the header yet: raise it too (idempotent),
                 * so that no reply runs ahead of the header. */
                w = calloc(1, sizeof(*w));
                if (!w)
                        return -ENOMEM;
                w->s = s;
                w->grow = true;
                w->old_size = w->new_size = new_size;   /* nothing to charge or give back */
                w->done = done;
                w->arg = arg;
                if (work_queue(t, w) < 0) {
                        free(w);
                        snprintf(msg, msglen, "cannot queue the work");
                        return -ENOMEM;
                }
                return 1;
        }
        if (!u)
                return -ENOMEM;
        delta = new_size - s->size;
        if (u->bytes > lim->max_bytes_per_uid || delta > lim->max_bytes_per_uid - u->bytes) {
                snprintf(msg, msglen, "max-bytes-per-uid: owner uid %u uses %llu of %llu bytes", s->uid,
                         (unsigned long long) u->bytes, (unsigned long long) lim->max_bytes_per_uid);
                return -EDQUOT;
        }
        if (t->bytes > lim->max_bytes || delta > lim->max_bytes - t->bytes) {
                snprintf(msg, msglen, "max-bytes: %llu of %llu bytes in use",
                         (unsigned long long) t->bytes, (unsigned long long) lim->max_bytes);
                return -ENOSPC;
        }
        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->s = s;
        w->grow = true;
        w->old_size = s->size;
        w->new_size = new_size;
        w->done = done;
        w->arg = arg;
        if (work_queue(t, w) < 0) {
                free(w);
                snprintf(msg, msglen, "cannot queue the work");
                return -ENOMEM;
        }
        /* Charge now, so a second grow in flight sees it; undone on failure. */
        s->size = new_size;
        t->bytes += delta;
        u->bytes += delta;
        return 1;
}

int segment_access(const struct segment *s, uint32_t uid, uint32_t gid, const gid_t *groups,
                   int ngroups, unsigned want) {
        unsigned bits;
        bool in_group = gid == s->gid;

        if (uid == 0)
                return 0;
        for (int i = 0; !in_group && i < ngroups; i++)
                in_group = groups[i] == s->gid;
        if (uid == s->uid)
                bits = (s->mode >> 6) & 7;
        else if (in_group)
                bits = (s->mode >> 3) & 7;
        else
                bits = s->mode & 7;
        return (bits & want) == want ? 0 : -EACCES;
}

void segment_info(const struct segment *s, struct mseg_proto_seginfo *info) {
        memset(info, 0, sizeof(*info));
        if (s->name)
                snprintf(info->name, sizeof(info->name), "%s", s->name);
        memcpy(info->id, s->id, sizeof(info->id));
        info->size = s->size;
        info->max_size = s->max_size;
        info->mode = s->mode;
        info->uid = s->uid;
        info->gid = s->gid;
        info->persistent = s->persistent;
        info->remove_on_last_close = s->remove_on_last_close;
        info->clients = s->attached;
}

int segment_ro_fd(struct segment *s) {
        if (s->ro_fd < 0) {
                int r = memfd_reopen_ro(s->fd);
                if (r < 0)
                        return r;
                s->ro_fd = r;
        }
        return s->ro_fd;
}

static int cmp_name(const void *a, const void *b) {
        const struct segment *x = *(struct segment *const *) a, *y = *(struct segment *const *) b;
        return strcmp(x->name, y->name);
}

size_t segtable_list(struct segtable *t, const char *after, struct segment **out, size_t cap, bool *ret_more) {
        struct segment **all;
        size_t n = 0, first = 0, k = 0;

        *ret_more = false;
        if (t->nnamed == 0)
                return 0;
        all = malloc(t->nnamed * sizeof(*all));
        if (!all)
                return 0;
        for (size_t i = 0; i < t->nbuckets; i++)
                for (struct segment *s = t->buckets[i]; s; s = s->hnext)
                        all[n++] = s;
        qsort(all, n, sizeof(*all), cmp_name);
        if (after)
                while (first < n && strcmp(all[first]->name, after) <= 0)
                        first++;
        for (size_t i = first; i < n && k < cap; i++)
                out[k++] = all[i];
        *ret_more = first + k < n;
        free(all);
        return k;
}

void segtable_done(struct segtable *t) {
        /* Drop every name; what remains attached is gone with the connections
         * already (server_stop runs first), so this frees everything. */
        for (size_t i = 0; i < t->nbuckets; i++)
                while (t->buckets[i]) {
                        struct segment *s = t->buckets[i];
                        t->buckets[i] = s->hnext;
                        s->hnext = NULL;
                        free(s->name);
                        s->name = NULL;
                        t->nnamed--;
                        segment_unref(t, s);
                }
        while (t->all) {
                struct segment *s = t->all;
                log_warning("segment still referenced at exit (%u refs); freeing", s->refs);
                s->refs = 1;
                segment_unref(t, s);
        }
        free(t->buckets);
        free(t->uids);
        memset(t, 0, sizeof(*t));
}
