/* SPDX-License-Identifier: MIT */
/*
 * test-alloc-record: the allocator's crash-atomic steps for records the
 * library keeps in a segment, mseg__alloc_into_off() and mseg__free_from()
 * (the registry's entries and tables go through them).
 *
 *  - Their contract without crashes: the record gets the block's offset or
 *    0, small blocks and runs alike; a record holding 0 frees nothing; a
 *    record naming no allocated block, or lying outside the segment or
 *    unaligned, is -EINVAL and left as it was; a record freed twice (its
 *    block reallocated meanwhile) does not free the new block.
 *  - Killed at each point inside them (MSEG_TEST_HOOK), with the class or
 *    page lock held: after the next taker of that lock repairs it, the
 *    record names a live block or holds 0, never a freed block, and no
 *    byte is lost.
 */
#include <fcntl.h>
#include <poll.h>

#include "test-registry-common.h"
#include "internal.h"

#define SEG_SIZE ((uint64_t) 8 << 20)

static const mseg_type rec_type = { "records", sizeof(uint64_t), 8, NULL };

/* The records: a named array of offsets inside the segment. */
static _Atomic uint64_t *records(mseg *seg) {
        _Atomic uint64_t *r = mseg_find_or_construct(seg, "records", &rec_type, 8, NULL, NULL);

        ASSERT_NOT_NULL(r);
        return r;
}

static void contract(mseg *seg) {
        _Atomic uint64_t *rec = records(seg);
        uint64_t local = 0, before = mseg_free_memory(seg);
        static const uint64_t sizes[] = { 16, 100, 2000, 8192, 20000, 300000 };

        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
                uint64_t off;
                ASSERT_OK(mseg__alloc_into_off(seg, sizes[i], 16, &rec[0]));
                off = atomic_load(&rec[0]);
                ASSERT(off != 0);
                ASSERT(mseg_usable_size(seg, mseg_ptr(seg, off)) >= sizes[i]);
                memset(mseg_ptr(seg, off), 0x5a, sizes[i]);
                ASSERT_OK(mseg__free_from(seg, &rec[0]));
                ASSERT_EQ(atomic_load(&rec[0]), 0);
                ASSERT_EQ(mseg_usable_size(seg, mseg_ptr(seg, off)), 0);
                ASSERT_OK(mseg__free_from(seg, &rec[0]));      /* 0: nothing to free */
        }
        /* Freed twice: the second time the record is 0, even though the
         * block is someone else's by then. */
        ASSERT_OK(mseg__alloc_into_off(seg, 64, 16, &rec[1]));
        atomic_store(&rec[2], atomic_load(&rec[1]));
        ASSERT_OK(mseg__free_from(seg, &rec[1]));
        ASSERT_OK(mseg__alloc_into_off(seg, 64, 16, &rec[3]));
        ASSERT_EQ(mseg__free_from(seg, &rec[1]), 0);
        if (atomic_load(&rec[3]) == atomic_load(&rec[2]))
                ASSERT(mseg_usable_size(seg, mseg_ptr(seg, atomic_load(&rec[3]))) >= 64);
        ASSERT_OK(mseg__free_from(seg, &rec[3]));
        /* A record naming no block: refused, left alone. */
        atomic_store(&rec[4], atomic_load(&rec[2]) + 16);
        ASSERT_EQ(mseg__free_from(seg, &rec[4]), -EINVAL);
        ASSERT_EQ(mseg__free_from(seg, &rec[2]), -EINVAL);     /* a free block */
        ASSERT(atomic_load(&rec[2]) != 0 && atomic_load(&rec[4]) != 0);
        atomic_store(&rec[2], 0);
        atomic_store(&rec[4], 0);
        /* Records outside the segment or unaligned. */
        ASSERT_EQ(mseg__alloc_into_off(seg, 64, 16, (_Atomic uint64_t *) &local), -EINVAL);
        ASSERT_EQ(mseg__free_from(seg, (_Atomic uint64_t *) &local), -EINVAL);
        ASSERT_EQ(mseg__alloc_into_off(seg, 64, 16, (_Atomic uint64_t *) ((char *) &rec[5] + 4)), -EINVAL);
        ASSERT_EQ(atomic_load(&rec[5]), 0);
        ASSERT_OK(mseg_check(seg));
        ASSERT_EQ(mseg_free_memory(seg), before);
}

/* ---- killed inside them ---- */

static int child_main(const char *path, const char *what, uint64_t size) {
        mseg *seg = open_file_seg(path, MSEG_OPEN_ONLY, 0, 0);
        _Atomic uint64_t *rec = records(seg);

        if (!strcmp(what, "free"))
                (void) mseg__free_from(seg, &rec[0]);
        else
                (void) mseg__alloc_into_off(seg, size, 16, &rec[0]);
        return 3;                       /* the hook never fired */
}

static void kill_at(const char *path, const char *point, const char *what, uint64_t size) {
        char fdbuf[16], sz[32], c;
        struct pollfd pfd;
        int fds[2], st;
        pid_t pid;

        ASSERT_EQ(pipe(fds), 0);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                char *argv[] = { "test-alloc-record", "child", (char *) path, (char *) what, sz, NULL };
                close(fds[0]);
                snprintf(fdbuf, sizeof(fdbuf), "%d", fds[1]);
                snprintf(sz, sizeof(sz), "%llu", (unsigned long long) size);
                setenv("MSEG_TEST_HOOK", point, 1);
                setenv("MSEG_TEST_HOOK_FD", fdbuf, 1);
                execv("/proc/self/exe", argv);
                _exit(127);
        }
        close(fds[1]);
        pfd = (struct pollfd){ .fd = fds[0], .events = POLLIN };
        if (poll(&pfd, 1, 20000) != 1 || read(fds[0], &c, 1) != 1)
                FAIL("child never reached %s (%s of %llu bytes)", point, what, (unsigned long long) size);
        kill(pid, SIGKILL);
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        close(fds[0]);
}

static void killed(mseg *seg, const char *path) {
        static const struct {
                const char *point, *what;
                uint64_t size;
        } cases[] = {
                /* each past its point of no return: the repair rolls it forward */
                { "alloc.into_locked", "alloc", 100 },
                { "pages.alloc:2", "alloc", 20000 },    /* :1 is the child's magazine record */
                { "alloc.free_from", "free", 100 },
                { "alloc.free_from.cleared", "free", 100 },
                { "pages.free", "free", 20000 },
        };
        _Atomic uint64_t *rec = records(seg);
        uint64_t before = mseg_free_memory(seg);

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                uint64_t off = 0, want_free;
                if (!strcmp(cases[i].what, "free")) {
                        ASSERT_OK(mseg__alloc_into_off(seg, cases[i].size, 16, &rec[0]));
                        off = atomic_load(&rec[0]);
                }
                want_free = mseg_free_memory(seg);
                kill_at(path, cases[i].point, cases[i].what, cases[i].size);
                ASSERT(mseg__slots_reclaim_dead(seg) >= 0);
                ASSERT_OK(mseg_check(seg));     /* takes every lock: the repairs */
                if (!strcmp(cases[i].what, "free")) {
                        /* rolled forward: freed, and the record let go of it */
                        ASSERT_EQ(atomic_load(&rec[0]), 0);
                        ASSERT_EQ(mseg_usable_size(seg, mseg_ptr(seg, off)), 0);
                        ASSERT_EQ(mseg_free_memory(seg), before);
                } else {
                        /* rolled forward: allocated, and the record names it */
                        off = atomic_load(&rec[0]);
                        ASSERT(off != 0);
                        ASSERT(mseg_usable_size(seg, mseg_ptr(seg, off)) >= cases[i].size);
                        ASSERT(mseg_free_memory(seg) < want_free);
                        ASSERT_OK(mseg__free_from(seg, &rec[0]));
                        ASSERT_EQ(mseg_free_memory(seg), before);
                }
                printf("test-alloc-record: killed at %-24s (%s of %llu bytes): settled, 0 bytes lost\n",
                       cases[i].point, cases[i].what, (unsigned long long) cases[i].size);
        }
}

int main(int argc, char **argv) {
        char path[128];
        mseg *seg;

        setvbuf(stdout, NULL, _IOLBF, 0);
        if (argc == 5 && !strcmp(argv[1], "child"))
                return child_main(argv[2], argv[3], strtoull(argv[4], NULL, 10));
        scratch_path(path, sizeof(path), "alloc-record");
        seg = open_file_seg(path, MSEG_CREATE_ONLY, SEG_SIZE, 0);
        contract(seg);
        printf("test-alloc-record: contract holds for small blocks and runs\n");
#ifdef MSEG_TEST_HOOKS
        killed(seg, path);
#endif
        ASSERT_OK(mseg_destroy(seg, "records", &rec_type));
        ASSERT_OK(mseg_check(seg));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        mseg_close(seg);
        unlink(path);
        printf("test-alloc-record: ok\n");
        return 0;
}
