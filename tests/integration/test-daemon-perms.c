/* SPDX-License-Identifier: MIT */
/*
 * test-daemon-perms — who may do what, decided by msegd from SO_PEERCRED and
 * the segment's owner and mode bits, and enforced by the kernel:
 *   - a child that drops to uid 65534 is refused a 0600 segment, read or
 *     write, and a 0644 one for writing, but gets the 0644 one read-only;
 *   - that read-only descriptor is O_RDONLY: a write through the mapping
 *     faults (SIGSEGV, in a grandchild), mprotect(PROT_WRITE) fails, and
 *     reopening /proc/self/fd/N for writing fails, because the memfd inode
 *     is msegd's with mode 0600;
 *   - group bits apply to the creator's gid; only the owner or root
 *     removes; root may do anything; another uid's segments are its own;
 *   - a process that connected as root and then dropped to another uid is
 *     judged as the new uid.
 */
#include <grp.h>
#include <sys/mman.h>

#include "internal.h"
#include "msegd-harness.h"

#define NOBODY 65534

static void drop_to(uid_t uid, gid_t gid) {
        if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
                fprintf(stderr, "cannot drop privileges: %s\n", strerror(errno));
                _exit(77);
        }
}

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "child: %s:%d: %s (%s)\n", __FILE__, __LINE__, #cond, \
        mseg_last_error()); _exit(1); } } while (0)

static void child_nobody(void) {
        struct mseg_options ro = { .flags = MSEG_READ_ONLY };
        struct mseg_options mine = { .size = 1 << 20, .mode = 0600 };
        mseg *s;
        char path[64];
        int fd, st;

        /* Connected as root first: after dropping privileges, requests
         * must be judged as the new uid (libmseg reconnects). */
        mseg *as_root;
        CHECK(mseg_open(&as_root, "priv", MSEG_OPEN_ONLY, NULL) == 0);
        drop_to(NOBODY, NOBODY);
        CHECK(mseg_open(&s, "priv", MSEG_OPEN_ONLY, NULL) == -EACCES);
        CHECK(strstr(mseg_last_error(), "uid 65534") != NULL);
        CHECK(mseg_open(&s, "priv", MSEG_OPEN_ONLY, &ro) == -EACCES);
        CHECK(mseg_open(&s, "pub", MSEG_OPEN_ONLY, NULL) == -EACCES);
        CHECK(mseg_open(&s, "pub", MSEG_OPEN_OR_CREATE, NULL) == -EACCES);
        CHECK(mseg_open(&s, "pub", MSEG_OPEN_ONLY, &ro) == 0);
        CHECK(mseg_is_read_only(s) == 1);
        uint64_t *v = mseg_find(s, "value", MSEG_TYPE(uint64_t), NULL);
        CHECK(v && *v == 0x1234);
        CHECK(mseg_alloc(s, 16) == NULL && errno == EROFS);
        CHECK(mseg_grow(s, 2 << 20) == -EACCES);

        /* The descriptor itself is read-only, and cannot be upgraded. */
        fd = s->fd;
        CHECK(fd >= 0);
        CHECK((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY);
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        CHECK(open(path, O_RDWR | O_CLOEXEC) < 0 && errno == EACCES);
        CHECK(mprotect(mseg_address(s), 4096, PROT_READ | PROT_WRITE) < 0 && errno == EACCES);
        void *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        CHECK(w == MAP_FAILED && errno == EACCES);

        /* A write through the mapping faults. */
        pid_t pid = fork();
        if (pid == 0) {
                signal(SIGSEGV, SIG_DFL);
                *(volatile uint64_t *) v = 7;
                _exit(0);
        }
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
        CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
        CHECK(*v == 0x1234);
        mseg_close(s);

        /* Only the owner or root removes. */
        CHECK(mseg_remove("pub", NULL) == -EACCES);
        /* 0666: anyone may write. */
        CHECK(mseg_open(&s, "open", MSEG_OPEN_ONLY, NULL) == 0);
        CHECK(mseg_alloc(s, 64) != NULL);
        mseg_close(s);
        /* Its own segment: owner 65534. */
        CHECK(mseg_open(&s, "nobodys", MSEG_CREATE_ONLY, &mine) == 0);
        struct mseg_segment_info info;
        CHECK(mseg_stat("nobodys", NULL, &info) == 0 && info.uid == NOBODY && info.gid == NOBODY);
        mseg_close(s);
        _exit(0);
}

static void child_group(void) {
        struct mseg_options ro = { .flags = MSEG_READ_ONLY };
        mseg *s;

        drop_to(NOBODY, 0);     /* another uid, in the creator's group */
        CHECK(mseg_open(&s, "grp", MSEG_OPEN_ONLY, NULL) == -EACCES);
        CHECK(mseg_open(&s, "grp", MSEG_OPEN_ONLY, &ro) == 0);
        mseg_close(s);
        CHECK(mseg_open(&s, "priv", MSEG_OPEN_ONLY, &ro) == -EACCES);
        _exit(0);
}

static void run_child(void (*fn)(void)) {
        pid_t pid = fork();
        int st;

        if (pid == 0)
                fn();
        st = h_wait(pid);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
                printf("skipped: cannot change uid\n");
                exit(TEST_SKIP);
        }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                FAIL("child failed: status 0x%x", st);
}

int main(void) {
        struct msegd d = { 0 };
        struct mseg_options o = { .size = 1 << 20 };
        mseg *priv, *pub, *open_, *grp;

        if (geteuid() != 0) {
                printf("skipped: needs root to change uid\n");
                return TEST_SKIP;
        }
        alarm(120);
        msegd_start(&d, NULL);
        o.mode = 0600;
        ASSERT_OK(mseg_open(&priv, "priv", MSEG_CREATE_ONLY, &o));
        o.mode = 0644;
        ASSERT_OK(mseg_open(&pub, "pub", MSEG_CREATE_ONLY, &o));
        o.mode = 0666;
        ASSERT_OK(mseg_open(&open_, "open", MSEG_CREATE_ONLY, &o));
        o.mode = 0640;
        ASSERT_OK(mseg_open(&grp, "grp", MSEG_CREATE_ONLY, &o));
        uint64_t *v = mseg_construct(pub, "value", MSEG_TYPE(uint64_t), 1, NULL, NULL);
        ASSERT_NOT_NULL(v);
        *v = 0x1234;

        run_child(child_nobody);
        run_child(child_group);
        ASSERT_EQ(*v, 0x1234);

        /* Root may open and remove another uid's segment. */
        mseg *n;
        ASSERT_OK(mseg_open(&n, "nobodys", MSEG_OPEN_ONLY, NULL));
        mseg_close(n);
        ASSERT_OK(mseg_remove("nobodys", NULL));

        mseg_close(priv);
        mseg_close(pub);
        mseg_close(open_);
        mseg_close(grp);
        msegd_stop(&d);
        msegd_cleanup(&d);
        printf("ok\n");
        return 0;
}
