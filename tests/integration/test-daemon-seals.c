/* SPDX-License-Identifier: MIT */
/*
 * test-daemon-seals — the descriptor a client receives is a memfd sealed
 * against shrinking, growing and further sealing: ftruncate fails (both
 * ways), fallocate beyond the end fails, new seals cannot be added. So no
 * client can make another SIGBUS: after every attempt, another process
 * touches every page of the segment.
 */
#include <sys/mman.h>

#include "internal.h"
#include "msegd-harness.h"

int main(void) {
        struct msegd d = { 0 };
        struct mseg_options o = { .size = 1 << 20, .max_size = 4 << 20, .mode = 0644 };
        struct mseg_options ro = { .flags = MSEG_READ_ONLY };
        mseg *a, *b, *r;
        struct stat st;
        int fd, seals;

        alarm(120);
        msegd_start(&d, NULL);
        ASSERT_OK(mseg_open(&a, "sealed", MSEG_CREATE_ONLY, &o));
        ASSERT_OK(mseg_open(&b, "sealed", MSEG_OPEN_ONLY, NULL));
        fd = b->fd;
        ASSERT(fd >= 0);
        ASSERT_OK(fstat(fd, &st));
        ASSERT_EQ(st.st_size, 4 << 20);        /* the whole reserve, up front */
        ASSERT_EQ(st.st_mode & 0777, 0600);     /* msegd's inode */
        seals = fcntl(fd, F_GET_SEALS);
        ASSERT(seals >= 0);
        ASSERT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
        ASSERT_EQ(seals & F_SEAL_WRITE, 0);

        ASSERT(ftruncate(fd, 4096) < 0 && errno == EPERM);
        ASSERT(ftruncate(fd, 0) < 0 && errno == EPERM);
        ASSERT(ftruncate(fd, 8 << 20) < 0 && errno == EPERM);
        ASSERT(fallocate(fd, 0, 4 << 20, 4096) < 0 && errno == EPERM);
        ASSERT(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) < 0 && errno == EPERM);
        ASSERT(fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE) < 0 && errno == EPERM);
        ASSERT_OK(fstat(fd, &st));
        ASSERT_EQ(st.st_size, 4 << 20);

        /* Read-only holders cannot truncate either. */
        ASSERT_OK(mseg_open(&r, "sealed", MSEG_OPEN_ONLY, &ro));
        ASSERT(ftruncate(r->fd, 4096) < 0);

        /* Another process touches every page of the reserve: no SIGBUS. */
        pid_t pid = fork();
        if (pid == 0) {
                volatile uint8_t *p = mseg_address(a);
                for (size_t off = 0; off < (4u << 20); off += 4096)
                        (void) p[off];
                p[(4u << 20) - 1] = 1;
                _exit(0);
        }
        ASSERT_CHILD_OK(pid);
        ASSERT_OK(mseg_check(a));
        mseg_close(r);
        mseg_close(b);
        mseg_close(a);
        ASSERT_OK(mseg_remove("sealed", NULL));
        msegd_stop(&d);
        msegd_cleanup(&d);
        printf("ok\n");
        return 0;
}
