/* SPDX-License-Identifier: MIT */
/*
 * test-systemd-fdstore.c — memory segments survive msegd's death through
 * the descriptor store (issue 5), with sd-harness.h playing systemd.
 *
 *   1. msegd stores every segment as it is created (two descriptors each,
 *      "seg-<id>" and "meta-<id>") and takes removed ones out again
 *      (FDSTOREREMOVE=1).
 *   2. After SIGKILL and a start with the store passed back, every segment
 *      is there with its name (including ':' , spaces, control characters,
 *      255 bytes), id, owner, mode, sizes, flags and contents (named
 *      objects, and writes a client made while msegd was dead); the removed
 *      one is not. A client attached across the restart keeps its mapping
 *      and can grow, open, create and remove again.
 *   3. With corrupted descriptors in the store (a segment whose header was
 *      overwritten, an unsealed memfd, garbage, a record without its
 *      segment, a foreign name), each is logged and dropped, taken out of
 *      the store, and the rest are served.
 *   4. A clean shutdown (SIGTERM) says STOPPING=1 and leaves the store as it
 *      was.
 */
#include <sys/mman.h>

#include "sd-harness.h"

#define NOBODY 65534

struct expect {
        const char *name;
        uint32_t mode, uid;
        uint64_t size, max_size;
        uint32_t flags;
        uint8_t id[16];
        uint64_t value;         /* in the named object "v" */
};

static struct sd_mgr mgr;
static struct mseg_options opts;
static char long_name[MSEG_NAME_MAX + 1];

static void make(struct expect *e, bool as_nobody) {
        struct mseg_options o = opts;
        mseg *seg;
        uint64_t *v;
        pid_t pid;
        int st;

        o.size = e->size;
        o.max_size = e->max_size;
        o.mode = e->mode;
        o.flags = e->flags;
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                if (as_nobody && (setgid(NOBODY) < 0 || setuid(NOBODY) < 0))
                        _exit(3);
                ASSERT_OK(mseg_open(&seg, e->name, MSEG_CREATE_ONLY, &o));
                v = mseg_construct(seg, "v", MSEG_TYPE(uint64_t), 1, NULL, NULL);
                ASSERT_NOT_NULL(v);
                *v = e->value;
                ASSERT_NOT_NULL(mseg_construct(seg, "text", MSEG_TYPE(char), 32, NULL, NULL));
                mseg_close(seg);
                _exit(0);
        }
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void check(const struct expect *e) {
        struct mseg_segment_info info;
        mseg *seg;
        uint64_t *v;
        size_t count = 0;

        ASSERT_OK(mseg_stat(e->name, &opts, &info));
        ASSERT(strcmp(info.name, e->name) == 0);
        ASSERT(memcmp(info.id, e->id, 16) == 0);
        ASSERT_EQ(info.mode, e->mode);
        ASSERT_EQ(info.uid, e->uid);
        ASSERT_EQ(info.size, e->size);
        ASSERT_EQ(info.max_size, e->max_size);
        ASSERT_EQ(info.flags, e->flags);
        ASSERT_OK(mseg_open(&seg, e->name, MSEG_OPEN_ONLY, &opts));
        v = mseg_find(seg, "v", MSEG_TYPE(uint64_t), &count);
        ASSERT_NOT_NULL(v);
        ASSERT_EQ(count, 1);
        ASSERT_EQ(*v, e->value);
        ASSERT_NOT_NULL(mseg_find(seg, "text", MSEG_TYPE(char), &count));
        ASSERT_EQ(count, 32);
        ASSERT_OK(mseg_check(seg));
        mseg_close(seg);
}

static int count_cb(const struct mseg_segment_info *info, void *arg) {
        (void) info;
        (*(unsigned *) arg)++;
        return 0;
}

static unsigned count_segments(void) {
        unsigned n = 0;
        ASSERT_OK(mseg_list(&opts, count_cb, &n));
        return n;
}

static void names_of(const uint8_t id[16], char seg[64], char meta[64]) {
        char hex[33];
        sd_hex(id, hex);
        snprintf(seg, 64, "seg-%s", hex);
        snprintf(meta, 64, "meta-%s", hex);
}

/* A memfd of @size bytes holding @data, with @seals. */
static int memfd_of(uint64_t size, int seals, const void *data, size_t len) {
        int fd = memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        ASSERT(fd >= 0);
        ASSERT_OK(ftruncate(fd, (off_t) size) < 0 ? -errno : 0);
        if (len)
                ASSERT_EQ(pwrite(fd, data, len, 0), (ssize_t) len);
        if (seals)
                ASSERT_OK(fcntl(fd, F_ADD_SEALS, seals) < 0 ? -errno : 0);
        return fd;
}

/* A copy of the record of @from with @to's id, sealed as msegd seals it. */
static int forged_record(const uint8_t from[16], const uint8_t to[16]) {
        char seg[64], meta[64], hex_from[33], hex_to[33], buf[4096], *p;
        struct sd_entry *e;
        ssize_t n;

        names_of(from, seg, meta);
        e = sd_store_find(&mgr, meta);
        ASSERT_NOT_NULL(e);
        n = pread(e->fd, buf, sizeof(buf) - 1, 0);
        ASSERT(n > 0);
        buf[n] = '\0';
        sd_hex(from, hex_from);
        sd_hex(to, hex_to);
        p = strstr(buf, hex_from);
        ASSERT_NOT_NULL(p);
        memcpy(p, hex_to, 32);
        return memfd_of(0, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL, buf, (size_t) n);
}

int main(void) {
        bool root = geteuid() == 0;
        struct expect segs[] = {
                { .name = "alpha", .mode = 0640, .size = 1 << 20, .max_size = 4 << 20, .value = 1 },
                { .name = "we:ird name \xc3\xbc\n\x01 end", .mode = 0604, .size = 128 << 10, .max_size = 128 << 10,
                  .value = 2 },
                { .name = long_name, .mode = 0666, .size = 64 << 10, .max_size = 256 << 10, .value = 3 },
                { .name = "grown", .mode = 0600, .size = 256 << 10, .max_size = 1 << 20, .value = 4 },
                { .name = "kept-on-disk", .mode = 0644, .size = 64 << 10, .max_size = 64 << 10,
                  .flags = MSEG_PERSISTENT, .value = 5 },
                { .name = "nobody's", .mode = 0600, .size = 64 << 10, .max_size = 64 << 10, .value = 6 },
        };
        size_t nsegs = sizeof(segs) / sizeof(segs[0]);
        struct expect doomed = { .name = "doomed", .mode = 0600, .size = 64 << 10, .max_size = 64 << 10, .value = 7 };
        char seg_name[64], meta_name[64];
        uint8_t fake1[16], fake2[16], fake3[16];
        struct mseg_segment_info info;
        mseg *alpha, *fresh;
        uint64_t *av;
        unsigned stored;
        int st;

        for (int i = 0; i < MSEG_NAME_MAX; i++)
                long_name[i] = i % 17 == 16 ? ':' : (char) ('a' + i % 26);
        if (!root)
                nsegs--;        /* no second uid to create "nobody's" as */

        SD_REQUIRE_SYSTEMD();
        sd_setup(&mgr, 100);
        opts.socket_path = mgr.sock_path;
        sd_start(&mgr, false, NULL);
        sd_wait_ready(&mgr);

        /* 1. Everything created is stored; what is removed leaves. */
        for (size_t i = 0; i < nsegs; i++) {
                segs[i].uid = i == 5 ? NOBODY : geteuid();
                make(&segs[i], i == 5);
                ASSERT_OK(mseg_stat(segs[i].name, &opts, &info));
                memcpy(segs[i].id, info.id, 16);
        }
        doomed.uid = geteuid();
        make(&doomed, false);
        ASSERT_OK(mseg_stat("doomed", &opts, &info));
        memcpy(doomed.id, info.id, 16);
        ASSERT(SD_WAIT(&mgr, mgr.nstore == 2 * (nsegs + 1), 5000));
        for (size_t i = 0; i < nsegs; i++) {
                names_of(segs[i].id, seg_name, meta_name);
                ASSERT_NOT_NULL(sd_store_find(&mgr, seg_name));
                ASSERT_NOT_NULL(sd_store_find(&mgr, meta_name));
        }
        ASSERT_OK(mseg_remove("doomed", &opts));
        names_of(doomed.id, seg_name, meta_name);
        ASSERT(SD_WAIT(&mgr, !sd_store_find(&mgr, seg_name) && !sd_store_find(&mgr, meta_name), 5000));
        ASSERT_EQ(mgr.nstore, 2 * nsegs);

        /* A client stays attached to alpha; "grown" grows. */
        ASSERT_OK(mseg_open(&alpha, "alpha", MSEG_OPEN_ONLY, &opts));
        av = mseg_find(alpha, "v", MSEG_TYPE(uint64_t), NULL);
        ASSERT_NOT_NULL(av);
        {
                mseg *g;
                ASSERT_OK(mseg_open(&g, "grown", MSEG_OPEN_ONLY, &opts));
                ASSERT_OK(mseg_grow(g, 512 << 10));
                segs[3].size = 512 << 10;
                mseg_close(g);
        }

        /* 2. SIGKILL; the client works on; msegd comes back with everything. */
        st = sd_kill(&mgr, SIGKILL);
        ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        *av = segs[0].value = 100;      /* written while msegd is dead */
        sd_start(&mgr, true, NULL);
        sd_wait_ready(&mgr);
        ASSERT(sd_log_has(&mgr, "descriptor store: adopted 6 segment(s), dropped 0") ||
               sd_log_has(&mgr, "descriptor store: adopted 5 segment(s), dropped 0"));
        ASSERT(!sd_log_has(&mgr, "skipping state file"));
        ASSERT(!sd_log_has(&mgr, "loaded 1 persistent"));      /* the stored copy was taken */
        ASSERT_EQ(count_segments(), nsegs);
        for (size_t i = 0; i < nsegs; i++)
                check(&segs[i]);
        ASSERT_ERR(mseg_stat("doomed", &opts, &info), -ENOENT);
        ASSERT_EQ(mgr.nstore, 2 * nsegs);       /* adopting stores nothing twice */

        /* The attached client: its mapping, then requests on a new connection. */
        ASSERT_EQ(*av, 100);
        ASSERT_OK(mseg_grow(alpha, 2 << 20));
        ASSERT_OK(mseg_stat("alpha", &opts, &info));
        ASSERT_EQ(info.size, 2 << 20);
        segs[0].size = 2 << 20;
        ASSERT_OK(mseg_open(&fresh, "fresh", MSEG_CREATE_ONLY, &opts));
        mseg_close(fresh);
        ASSERT(SD_WAIT(&mgr, mgr.nstore == 2 * (nsegs + 1), 5000));
        ASSERT_OK(mseg_remove("fresh", &opts));
        ASSERT(SD_WAIT(&mgr, mgr.nstore == 2 * nsegs, 5000));

        /* 3. Corrupt the store: overwrite grown's header; add an unsealed
         * memfd, a garbage one, a lone record and a foreign name. */
        st = sd_kill(&mgr, SIGKILL);
        ASSERT(WIFSIGNALED(st));
        names_of(segs[3].id, seg_name, meta_name);
        {
                static const char junk[256] = "this is not a segment header";
                struct sd_entry *e = sd_store_find(&mgr, seg_name);
                ASSERT_NOT_NULL(e);
                ASSERT_EQ(pwrite(e->fd, junk, sizeof(junk), 0), (ssize_t) sizeof(junk));
        }
        memset(fake1, 0x11, 16);
        memset(fake2, 0x22, 16);
        memset(fake3, 0x33, 16);
        {
                /* fake1: a faithful copy of alpha's bytes, but unsealed */
                int fd = memfd_of(4 << 20, 0, NULL, 0);
                void *src = mseg_address(alpha);
                ASSERT_EQ(pwrite(fd, src, 1 << 20, 0), 1 << 20);
                names_of(fake1, seg_name, meta_name);
                sd_store_add(&mgr, seg_name, fd);
                sd_store_add(&mgr, meta_name, forged_record(segs[0].id, fake1));
        }
        {
                /* fake2: sealed garbage */
                char garbage[4096];
                for (size_t i = 0; i < sizeof(garbage); i++)
                        garbage[i] = (char) (i * 7 + 3);
                names_of(fake2, seg_name, meta_name);
                sd_store_add(&mgr, seg_name, memfd_of(4 << 20, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, garbage,
                                                      sizeof(garbage)));
                sd_store_add(&mgr, meta_name, forged_record(segs[0].id, fake2));
        }
        names_of(fake3, seg_name, meta_name);
        sd_store_add(&mgr, meta_name, forged_record(segs[0].id, fake3));
        sd_store_add(&mgr, "bogus", memfd_of(4096, 0, NULL, 0));
        stored = mgr.nstore;
        ASSERT_EQ(stored, 2 * nsegs + 6);

        sd_start(&mgr, true, NULL);
        sd_wait_ready(&mgr);
        sd_pump(&mgr, 100);
        ASSERT(sd_log_has(&mgr, "dropping stored segment \"grown\""));
        ASSERT(sd_log_has(&mgr, "not sealed against resizing"));
        ASSERT(sd_log_has(&mgr, "dropping stored descriptor \"bogus\""));
        ASSERT(sd_log_has(&mgr, "(id 22222222222222222222222222222222): segment fails validation"));
        ASSERT(sd_log_has(&mgr, "its memfd is missing"));
        ASSERT(sd_log_has(&mgr, "dropped 5"));
        ASSERT_ERR(mseg_stat("grown", &opts, &info), -ENOENT);
        for (size_t i = 0; i < nsegs; i++)
                if (i != 3)
                        check(&segs[i]);
        ASSERT_EQ(count_segments(), nsegs - 1);
        /* What was dropped left the store; the rest stayed. */
        ASSERT_EQ(mgr.nstore, 2 * (nsegs - 1));
        ASSERT_EQ(sd_store_count_prefix(&mgr, "seg-"), nsegs - 1);
        ASSERT(!sd_store_find(&mgr, "bogus"));

        /* 4. A clean stop says STOPPING=1 and keeps the store. */
        st = sd_kill(&mgr, SIGTERM);
        ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ASSERT(mgr.nstopping == 1);
        ASSERT_EQ(mgr.nstore, 2 * (nsegs - 1));
        ASSERT_EQ(mgr.nforeign, 0);
        ASSERT(sd_log_has(&mgr, "clean shutdown"));
        mseg_close(alpha);
        printf("ok: %zu segments survived SIGKILL twice; 5 bad descriptors dropped\n", nsegs - 1);
        return 0;
}
