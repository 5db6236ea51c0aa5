/* SPDX-License-Identifier: MIT */
/*
 * memfd.c — the descriptors behind shared segments (linux-facts.md 4).
 *
 * A segment is a memfd sized to its maximum up front (sparse: a page costs
 * memory only once touched) and sealed with F_SEAL_SHRINK | F_SEAL_GROW |
 * F_SEAL_SEAL, so no holder of a descriptor can change its size: nobody can
 * make another process SIGBUS by truncating, and growth is a header update
 * inside the reserve. The inode is msegd's, mode 0600, so a client that was
 * handed an O_RDONLY descriptor cannot reopen /proc/self/fd/N for writing
 * unless it is msegd's own user or root.
 *
 * MFD_NOEXEC_SEAL (Linux 6.3) makes the memory non-executable for good;
 * older kernels reject the flag with EINVAL, and we retry without it, so
 * everything works on Debian 12's 6.1.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "msegd.h"

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif

#define SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

static bool noexec_unsupported;

int memfd_segment_new(const char *name, uint64_t max_size) {
        char label[64];
        int fd, r;

        /* The label shows in /proc/PID/maps and fdinfo; debugging only. */
        snprintf(label, sizeof(label), "mseg:%.50s", name);
        for (char *p = label; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == '/')
                        *p = '_';
        fd = -1;
        if (!noexec_unsupported) {
                fd = memfd_create(label, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL);
                if (fd < 0 && errno == EINVAL)
                        noexec_unsupported = true;
                else if (fd < 0)
                        return -errno;
        }
        if (fd < 0) {
                fd = memfd_create(label, MFD_CLOEXEC | MFD_ALLOW_SEALING);
                if (fd < 0)
                        return -errno;
        }
        if (ftruncate(fd, (off_t) max_size) < 0 ||
            fcntl(fd, F_ADD_SEALS, SEALS) < 0 ||
            fchmod(fd, 0600) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

int memfd_segment_check(int fd, uint64_t size) {
        struct stat st;
        int seals;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || (uint64_t) st.st_size != size)
                return -EINVAL;
        seals = fcntl(fd, F_GET_SEALS);
        if (seals < 0)
                return -errno;
        if ((seals & SEALS) != SEALS)
                return -EPERM;
        return 0;
}

int memfd_reopen_ro(int fd) {
        char path[64];
        int r;

        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        r = open(path, O_RDONLY | O_CLOEXEC);
        return r < 0 ? -errno : r;
}
