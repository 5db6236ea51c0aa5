/* SPDX-License-Identifier: MIT */
/*
 * file.c — managed mapped files (Boost's managed_mapped_file): a segment that
 * is a regular file mapped MAP_SHARED, shared by every process that opens
 * the same path, with no daemon involved.
 *
 * Coordination rests on flock(2) on the file:
 *   - the creator holds LOCK_EX from O_CREAT|O_EXCL until the header is
 *     written, so an opener (LOCK_SH) never reads a half-formatted header;
 *   - every attached process keeps LOCK_SH for as long as it is attached,
 *     which is how the offline operations (grow, shrink_to_fit) know the file
 *     is in use: they need LOCK_EX|LOCK_NB and fail with -EBUSY otherwise;
 *   - so a writable opener that gets LOCK_EX|LOCK_NB is alone: whatever the
 *     file's locks and slots say was left by processes that are gone, maybe
 *     in an earlier boot, whose TIDs mean nothing now. It recovers them
 *     (mseg__recover_unattached) before taking LOCK_SH; a later opener,
 *     blocked on LOCK_SH meanwhile, then reclaims only dead slots.
 * flock locks belong to the open file description and die with the process,
 * so a crashed creator leaves a file that fails validation cleanly
 * (MSEG_E_CORRUPT), never a lock held forever.
 *
 * Read-only opens map PROT_READ from an O_RDONLY descriptor: the kernel
 * enforces it. Copy-on-write opens map MAP_PRIVATE: writes never reach the
 * file or the other processes.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define PAGE UINT64_C(4096)
#define DEFAULT_SIZE (UINT64_C(1) << 20)

static inline uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

static int flock_retry(int fd, int op) {
        int r;

        do
                r = flock(fd, op);
        while (r < 0 && errno == EINTR);
        return r < 0 ? -errno : 0;
}

static int map_and_attach(mseg **ret_seg, int fd, const char *path, uint64_t size, bool ro, bool cow) {
        struct mseg *seg;
        void *p;
        int r;

        p = mmap(NULL, size, ro ? PROT_READ : PROT_READ | PROT_WRITE,
                 cow ? MAP_PRIVATE : MAP_SHARED, fd, 0);
        if (p == MAP_FAILED)
                return mseg__error(-errno, "cannot map %s: %s", path, strerror(errno));
        r = mseg__handle_new(&seg, p, size, MSEG__KIND_FILE, ro, cow);
        if (r < 0) {
                munmap(p, size);
                return r;
        }
        seg->mapped = true;
        seg->fd = fd;
        seg->name = strdup(path);
        *ret_seg = seg;
        return 0;
}

static int file_create(mseg **ret_seg, const char *path, const struct mseg_options *o) {
        uint64_t size = o && o->size ? o->size : DEFAULT_SIZE;
        mode_t mode = o && o->mode ? (mode_t) (o->mode & 07777) : 0644;
        void *p;
        int fd, r;

        if (size < MSEG_MIN_SIZE || size > MSEG_MAX_SIZE)
                return mseg__error(-EINVAL, "segment size %llu outside [%llu, %llu]", (unsigned long long) size,
                                   (unsigned long long) MSEG_MIN_SIZE, (unsigned long long) MSEG_MAX_SIZE);
        size = round_up(size, PAGE);
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (fd < 0) {
                if (errno == EEXIST)
                        return -EEXIST; /* the caller's to interpret */
                return mseg__error(-errno, "cannot create %s: %s", path, strerror(errno));
        }
        r = flock_retry(fd, LOCK_EX);
        if (r < 0)
                goto fail;
        if (ftruncate(fd, (off_t) size) < 0) {
                r = mseg__error(-errno, "cannot size %s: %s", path, strerror(errno));
                goto fail;
        }
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
                r = mseg__error(-errno, "cannot map %s: %s", path, strerror(errno));
                goto fail;
        }
        r = mseg__format(p, size, size, 0);
        munmap(p, size);
        if (r < 0)
                goto fail;
        /* Downgrade to the shared "attached" lock, then attach like anyone. */
        r = flock_retry(fd, LOCK_SH);
        if (r < 0)
                goto fail;
        r = map_and_attach(ret_seg, fd, path, size, false, false);
        if (r < 0)
                goto fail;
        return 0;
fail:
        unlink(path);
        close(fd);
        return r;
}

static int file_open_existing(mseg **ret_seg, const char *path, bool ro, bool cow) {
        bool alone = false;
        struct stat st;
        int fd, r;

        fd = open(path, (ro || cow ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        if (fd < 0)
                return mseg__error(-errno, "cannot open %s: %s", path, strerror(errno));
        if (!ro && !cow)
                alone = flock_retry(fd, LOCK_EX | LOCK_NB) == 0;
        r = alone ? 0 : flock_retry(fd, LOCK_SH);       /* waits while a creator formats */
        if (r < 0)
                goto fail;
        if (fstat(fd, &st) < 0) {
                r = -errno;
                goto fail;
        }
        if (!S_ISREG(st.st_mode)) {
                r = mseg__error(-EINVAL, "%s is not a regular file", path);
                goto fail;
        }
        if ((uint64_t) st.st_size < MSEG_HEADER_SIZE) {
                r = mseg__error(MSEG_E_CORRUPT, "%s is not a segment: %lld bytes", path, (long long) st.st_size);
                goto fail;
        }
        r = map_and_attach(ret_seg, fd, path, (uint64_t) st.st_size, ro, cow);
        if (r < 0)
                goto fail;
        if (alone) {
                (void) mseg__recover_unattached(*ret_seg);      /* what fails stays for the checks */
                r = flock_retry(fd, LOCK_SH);
                if (r < 0) {
                        mseg_close(*ret_seg);
                        return mseg__error(r, "cannot lock %s shared: %s", path, strerror(-r));
                }
        } else if (!ro && !cow) {
                (void) mseg__slots_reclaim_dead(*ret_seg);
        }
        return 0;
fail:
        close(fd);
        return r;
}

int mseg_file_open(mseg **ret_seg, const char *path, enum mseg_how how, const struct mseg_options *opts) {
        bool ro = opts && (opts->flags & MSEG_READ_ONLY);
        bool cow = opts && (opts->flags & MSEG_COPY_ON_WRITE);
        int r;

        if (!ret_seg || !path || !*path)
                return mseg__error(-EINVAL, "mseg_file_open: no path");
        if (ro && cow)
                return mseg__error(-EINVAL, "read-only and copy-on-write exclude each other");
        if (opts && (opts->flags & ~(MSEG_READ_ONLY | MSEG_COPY_ON_WRITE)))
                return mseg__error(-EINVAL, "flags 0x%x do not apply to mapped files", opts->flags);
        switch (how) {
        case MSEG_CREATE_ONLY:
                if (ro || cow)
                        return mseg__error(-EINVAL, "cannot create a segment read-only or copy-on-write");
                r = file_create(ret_seg, path, opts);
                if (r == -EEXIST)
                        return mseg__error(-EEXIST, "%s exists", path);
                return r;
        case MSEG_OPEN_ONLY:
                return file_open_existing(ret_seg, path, ro, cow);
        case MSEG_OPEN_OR_CREATE:
                for (int tries = 0; tries < 8; tries++) {
                        if (!ro && !cow) {
                                r = file_create(ret_seg, path, opts);
                                if (r != -EEXIST)
                                        return r;
                        }
                        r = file_open_existing(ret_seg, path, ro, cow);
                        if (r != -ENOENT)
                                return r;       /* ENOENT: removed in between; try again */
                }
                return r;
        default:
                return mseg__error(-EINVAL, "bad open mode %d", (int) how);
        }
}

int mseg_flush(mseg *seg) {
        if (!seg)
                return -EINVAL;
        if (seg->kind != MSEG__KIND_FILE || seg->cow || seg->read_only)
                return 0;
        if (msync(seg->base, seg->map_size, MS_SYNC) < 0)
                return mseg__error(-errno, "msync: %s", strerror(errno));
        return 0;
}

/* Offline resize: the caller holds LOCK_EX, so nobody has the file mapped. */
static int file_resize(const char *path, uint64_t extra, bool to_fit) {
        struct stat st;
        uint64_t old_size, new_size, map_len = 0;
        mseg_header *h;
        void *p;
        int fd, r;

        if (!path || !*path)
                return mseg__error(-EINVAL, "no path");
        fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return mseg__error(-errno, "cannot open %s: %s", path, strerror(errno));
        r = flock_retry(fd, LOCK_EX | LOCK_NB);
        if (r == -EWOULDBLOCK) {
                r = mseg__error(-EBUSY, "%s is in use", path);
                goto out;
        }
        if (r < 0 || fstat(fd, &st) < 0) {
                r = r < 0 ? r : -errno;
                goto out;
        }
        old_size = (uint64_t) st.st_size;
        if (old_size < MSEG_HEADER_SIZE) {
                r = mseg__error(MSEG_E_CORRUPT, "%s is not a segment", path);
                goto out;
        }
        if (to_fit)
                new_size = old_size;
        else if (extra > MSEG_MAX_SIZE || old_size + extra > MSEG_MAX_SIZE) {
                r = mseg__error(-EINVAL, "segment would exceed %llu bytes", (unsigned long long) MSEG_MAX_SIZE);
                goto out;
        } else
                new_size = round_up(old_size + extra, PAGE);
        if (new_size > old_size && ftruncate(fd, (off_t) new_size) < 0) {
                r = mseg__error(-errno, "cannot grow %s: %s", path, strerror(errno));
                goto out;
        }
        map_len = new_size;
        p = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
                r = mseg__error(-errno, "cannot map %s: %s", path, strerror(errno));
                goto undo;
        }
        h = p;
        r = mseg__validate(p, old_size);
        if (r < 0)
                goto unmap;
        if (to_fit) {
                new_size = round_up(mseg__alloc_min_size(h), PAGE);
                if (new_size < MSEG_MIN_SIZE)
                        new_size = MSEG_MIN_SIZE;
                if (new_size >= old_size) {
                        new_size = old_size;
                        goto unmap;     /* already as small as it gets */
                }
        }
        r = mseg__alloc_resize(h, new_size);
        if (r < 0)
                goto unmap;
        h->size = new_size;
        atomic_store_explicit(&h->usable, new_size, memory_order_release);
        mseg__header_seal(h);
        if (msync(p, new_size < old_size ? new_size : old_size, MS_SYNC) < 0)
                r = -errno;
unmap:
        munmap(p, map_len);
        if (r >= 0 && new_size < old_size && ftruncate(fd, (off_t) new_size) < 0)
                r = mseg__error(-errno, "cannot shrink %s: %s", path, strerror(errno));
undo:
        if (r < 0 && new_size > old_size && ftruncate(fd, (off_t) old_size) < 0)
                r = mseg__error(-errno, "cannot restore the size of %s", path);
out:
        close(fd);
        return r;
}

int mseg_file_grow(const char *path, uint64_t extra) {
        return file_resize(path, extra, false);
}

int mseg_file_shrink_to_fit(const char *path) {
        return file_resize(path, 0, true);
}
