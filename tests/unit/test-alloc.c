/* SPDX-License-Identifier: MIT */
/*
 * test-alloc: the allocator's API on one thread: every size class and some
 * large sizes, usable sizes, invalid frees, exhaustion and recovery (the
 * same count twice), alloc_many all-or-nothing, alloc_into, free-memory
 * figures, zero_free_memory, growth of the frontier, and segments from the
 * minimum size up.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "alloc_layout.h"

static void *page_buf(size_t size) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        ASSERT(p != MAP_FAILED);
        return p;
}

static void test_basic(size_t size) {
        void *buf = page_buf(size);
        mseg *seg;
        void *p[64];
        uint64_t free0;

        ASSERT_OK(mseg_buffer_create(&seg, buf, size));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        free0 = mseg_free_memory(seg);
        ASSERT(free0 > size / 2);
        ASSERT(free0 <= size);
        ASSERT_EQ(mseg_free(seg, NULL), 0);
        ASSERT_NULL_ERRNO(mseg_alloc(seg, 0), EINVAL);
        ASSERT_NULL_ERRNO(mseg_alloc(NULL, 8), EINVAL);

        for (size_t i = 0; i < 40; i++) {
                size_t sz = i < 34 ? (size_t) 1 << (i % 17) : 20000 + i;
                if (sz > size / 64)
                        sz = 100;
                p[i] = mseg_alloc(seg, sz);
                ASSERT_NOT_NULL(p[i]);
                ASSERT(((uintptr_t) p[i] & 15) == 0);
                ASSERT(mseg_usable_size(seg, p[i]) >= sz);
                ASSERT(mseg_handle_of(seg, p[i]) != MSEG_HANDLE_NULL);
                memset(p[i], (int) i, sz);
        }
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 0);
        ASSERT(mseg_free_memory(seg) < free0);
        ASSERT_OK(mseg_check(seg));
        for (size_t i = 0; i < 40; i++)
                ASSERT_OK(mseg_free(seg, p[i]));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        ASSERT_OK(mseg_check(seg));
        mseg_close(seg);
        munmap(buf, size);
}

static void test_invalid_frees(void) {
        size_t size = 32 << 20;
        void *buf = page_buf(size);
        mseg *seg;
        char local;

        ASSERT_OK(mseg_buffer_create(&seg, buf, size));
        char *a = mseg_alloc(seg, 100), *b = mseg_alloc(seg, 100000), *c = mseg_alloc(seg, 64);
        ASSERT_NOT_NULL(a);
        ASSERT_NOT_NULL(b);
        ASSERT_NOT_NULL(c);
        ASSERT_ERR(mseg_free(seg, &local), -EINVAL);            /* foreign */
        ASSERT_ERR(mseg_free(seg, buf), -EINVAL);               /* the header */
        ASSERT_ERR(mseg_free(seg, a + 16), -EINVAL);            /* interior of a small block */
        ASSERT_ERR(mseg_free(seg, a + 1), -EINVAL);
        ASSERT_ERR(mseg_free(seg, b + 4096), -EINVAL);          /* interior of a large block */
        ASSERT_ERR(mseg_free(seg, b + 8), -EINVAL);
        ASSERT_EQ(mseg_usable_size(seg, a + 16), 0);
        ASSERT_EQ(mseg_usable_size(seg, b + 4096), 0);
        ASSERT_OK(mseg_free(seg, a));
        ASSERT_ERR(mseg_free(seg, a), -EINVAL);                 /* double free, cached */
        ASSERT_OK(mseg_free(seg, b));
        ASSERT_ERR(mseg_free(seg, b), -EINVAL);                 /* double free, large */
        ASSERT_OK(mseg_free(seg, c));
        /* double free after the block went back to its superblock */
        mseg__alloc_detach(seg);
        ASSERT_OK(mseg__alloc_attach(seg));
        ASSERT_ERR(mseg_free(seg, c), -EINVAL);
        ASSERT_OK(mseg_check(seg));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        mseg_close(seg);
        munmap(buf, size);
}

static uint64_t fill(mseg *seg, size_t sz, void ***ret, size_t *cap) {
        size_t n = 0;
        void *q;

        while ((q = mseg_alloc(seg, sz)) != NULL) {
                if (n == *cap) {
                        *cap = *cap ? *cap * 2 : 1024;
                        *ret = realloc(*ret, *cap * sizeof(void *));
                        ASSERT(*ret);
                }
                memcpy(q, &n, sizeof(n));
                (*ret)[n++] = q;
        }
        ASSERT_EQ(errno, ENOMEM);
        return n;
}

static void test_exhaustion(size_t size, size_t sz) {
        void *buf = page_buf(size);
        mseg *seg;
        void **v = NULL;
        size_t cap = 0;
        uint64_t n1, n2;

        ASSERT_OK(mseg_buffer_create(&seg, buf, size));
        n1 = fill(seg, sz, &v, &cap);
        ASSERT(n1 > 0);
        ASSERT_OK(mseg_check(seg));
        ASSERT_NULL_ERRNO(mseg_alloc(seg, sz), ENOMEM);
        for (size_t i = 0; i < n1; i++) {
                ASSERT_EQ(*(size_t *) v[i], i);
                ASSERT_OK(mseg_free(seg, v[i]));
        }
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        ASSERT_OK(mseg_check(seg));
        n2 = fill(seg, sz, &v, &cap);
        ASSERT_EQ(n2, n1);
        for (size_t i = 0; i < n2; i++)
                ASSERT_OK(mseg_free(seg, v[i]));
        /* memory of one size class serves another after all was freed */
        n2 = fill(seg, sz > 4096 ? 48 : size / 8, &v, &cap);
        ASSERT(n2 > 0);
        for (size_t i = 0; i < n2; i++)
                ASSERT_OK(mseg_free(seg, v[i]));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        ASSERT_OK(mseg_check(seg));
        if (sz == 64 && size >= (64 << 20))
                printf("64-byte blocks in %zu MiB: %llu, efficiency %.3f\n", size >> 20,
                       (unsigned long long) n1, (double) n1 * 64 / (double) size);
        free(v);
        mseg_close(seg);
        munmap(buf, size);
}

static void test_many(void) {
        size_t size = 4 << 20;
        void *buf = page_buf(size);
        mseg *seg;
        void *v[4096];

        ASSERT_OK(mseg_buffer_create(&seg, buf, size));
        ASSERT_ERR(mseg_alloc_many(seg, 0, 4, v), -EINVAL);
        ASSERT_OK(mseg_alloc_many(seg, 100, 1000, v));
        for (int i = 0; i < 1000; i++) {
                ASSERT_NOT_NULL(v[i]);
                memset(v[i], 1, 100);
        }
        ASSERT_OK(mseg_free_many(seg, v, 1000));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        /* all or nothing: 4096 x 4 KiB does not fit in 4 MiB */
        uint64_t f = mseg_free_memory(seg);
        ASSERT_ERR(mseg_alloc_many(seg, 4000, 4096, v), -ENOMEM);
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        ASSERT(mseg_free_memory(seg) >= f - 64 * 1024);
        v[0] = NULL;
        ASSERT_OK(mseg_free_many(seg, v, 1));           /* NULL entries are skipped */
        ASSERT_OK(mseg_check(seg));
        mseg_close(seg);
        munmap(buf, size);
}

static void test_alloc_into(void) {
        size_t size = 32 << 20;
        void *buf = page_buf(size);
        mseg *seg;
        mseg_handle *slots, local = 0;

        ASSERT_OK(mseg_buffer_create(&seg, buf, size));
        slots = mseg_alloc(seg, 8 * 100);
        ASSERT_NOT_NULL(slots);
        memset(slots, 0, 8 * 100);
        ASSERT_ERR(mseg_alloc_into(seg, 10, &local), -EINVAL);
        ASSERT_ERR(mseg_alloc_into(seg, 10, (mseg_handle *) ((char *) slots + 4)), -EINVAL);
        for (int i = 0; i < 100; i++) {
                ASSERT_OK(mseg_alloc_into(seg, i < 90 ? 24 + (size_t) i * 8 : 50000, &slots[i]));
                ASSERT(slots[i] != 0);
                ASSERT_NOT_NULL(mseg_ptr(seg, slots[i]));
                memset(mseg_ptr(seg, slots[i]), 0x33, 24);
        }
        ASSERT_OK(mseg_check(seg));
        for (int i = 0; i < 100; i++)
                ASSERT_OK(mseg_free(seg, mseg_ptr(seg, slots[i])));
        ASSERT_OK(mseg_free(seg, slots));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        mseg_close(seg);
        munmap(buf, size);
}

static void test_zero_free(void) {
        size_t size = 8 << 20;
        uint8_t *buf = page_buf(size);
        mseg *seg;
        void *v[200];

        ASSERT_OK(mseg_buffer_create(&seg, buf, size));
        for (int i = 0; i < 200; i++) {
                v[i] = mseg_alloc(seg, i % 7 == 0 ? 30000 : 100);
                ASSERT_NOT_NULL(v[i]);
                memset(v[i], 0xee, mseg_usable_size(seg, v[i]));
        }
        for (int i = 0; i < 200; i += 2)
                ASSERT_OK(mseg_free(seg, v[i]));
        ASSERT_OK(mseg_zero_free_memory(seg));
        for (int i = 1; i < 200; i += 2)
                ASSERT_EQ(((uint8_t *) v[i])[0], 0xee);       /* live blocks untouched */
        /* every byte that comes back from an allocation now reads zero */
        for (int i = 0; i < 200; i += 2) {
                uint8_t *q = mseg_alloc(seg, i % 7 == 0 ? 30000 : 100);
                ASSERT_NOT_NULL(q);
                for (size_t k = 0; k < (i % 7 == 0 ? 30000u : 100u); k++)
                        if (q[k])
                                FAIL("byte %zu of a fresh block is %u", k, q[k]);
                v[i] = q;
        }
        for (int i = 0; i < 200; i++)
                ASSERT_OK(mseg_free(seg, v[i]));
        ASSERT_OK(mseg_check(seg));
        mseg_close(seg);
        munmap(buf, size);
}

/* A brokered-style segment: 1 GiB reserved, 1 MiB usable; growth moves the
 * frontier and only touched pages cost memory. */
static void test_frontier(void) {
        size_t size = (size_t) 1 << 30;
        void *buf = page_buf(size);
        mseg *seg;
        void **v = NULL;
        size_t cap = 0;

        ASSERT_OK(mseg__format(buf, size, 1 << 20, MSEG_HDR_BROKERED));
        ASSERT_OK(mseg__handle_new(&seg, buf, size, MSEG__KIND_BUFFER, false, false));
        ASSERT_NULL_ERRNO(mseg_alloc(seg, 2 << 20), ENOMEM);
        uint64_t n1 = fill(seg, 1000, &v, &cap);
        ASSERT(n1 > 500 && n1 < 1100);
        ASSERT_ERR(mseg__alloc_set_usable(seg, size + 1), -EINVAL);
        ASSERT_OK(mseg__alloc_set_usable(seg, 8 << 20));
        ASSERT_EQ(mseg_size(seg), 8 << 20);
        void *big = mseg_alloc(seg, 4 << 20);
        ASSERT_NOT_NULL(big);
        memset(big, 1, 4 << 20);
        ASSERT_OK(mseg_check(seg));
        ASSERT_OK(mseg_free(seg, big));
        for (size_t i = 0; i < n1; i++)
                ASSERT_OK(mseg_free(seg, v[i]));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        ASSERT_OK(mseg_check(seg));
        free(v);
        mseg_close(seg);
        munmap(buf, size);
}

/* A 64 GiB reserve with 1 MiB usable costs pages only where used: format
 * and allocation touch no metadata proportional to the reserve. */
static void test_sparse_reserve(void) {
        uint64_t size = (uint64_t) 64 << 30;
        int fd = memfd_create("test-alloc", MFD_CLOEXEC);
        struct stat st;
        mseg *seg;
        void *buf, *v[100];

        ASSERT(fd >= 0);
        ASSERT_EQ(ftruncate(fd, (off_t) size), 0);
        buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
        ASSERT(buf != MAP_FAILED);
        ASSERT_OK(mseg__format(buf, size, 1 << 20, MSEG_HDR_BROKERED));
        ASSERT_OK(mseg__handle_new(&seg, buf, size, MSEG__KIND_SHM, false, false));
        for (int i = 0; i < 100; i++)
                ASSERT_NOT_NULL(v[i] = mseg_alloc(seg, i % 10 ? 100 : 5000));
        ASSERT_OK(mseg_check(seg));
        ASSERT_OK(mseg__alloc_set_usable(seg, (uint64_t) 1 << 30));
        void *big = mseg_alloc(seg, 100 << 20);
        ASSERT_NOT_NULL(big);
        ASSERT_OK(mseg_free(seg, big));
        for (int i = 0; i < 100; i++)
                ASSERT_OK(mseg_free(seg, v[i]));
        ASSERT_OK(mseg_check(seg));
        ASSERT_EQ(fstat(fd, &st), 0);
#ifndef MSEG_EXPENSIVE_CHECKS   /* which fills freed blocks, touching them */
        if ((uint64_t) st.st_blocks * 512 > (8 << 20))
                FAIL("a 64 GiB reserve costs %llu KiB", (unsigned long long) st.st_blocks / 2);
#endif
        printf("64 GiB reserve: %llu KiB in use\n", (unsigned long long) st.st_blocks / 2);
        mseg_close(seg);
        munmap(buf, size);
        close(fd);
}

static void test_read_only_handle(void) {
        size_t size = 2 << 20;
        void *buf = page_buf(size);
        mseg *seg, *ro;
        void *p;

        ASSERT_OK(mseg_buffer_create(&seg, buf, size));
        p = mseg_alloc(seg, 100);
        ASSERT_NOT_NULL(p);
        ASSERT_OK(mseg__handle_new(&ro, buf, size, MSEG__KIND_BUFFER, true, false));
        ASSERT_NULL_ERRNO(mseg_alloc(ro, 10), EROFS);
        ASSERT_ERR(mseg_free(ro, p), -EROFS);
        ASSERT_EQ(mseg_usable_size(ro, p), 112);
        ASSERT_OK(mseg_check(ro));
        ASSERT_EQ(mseg_all_memory_deallocated(ro), 0);
        mseg_close(ro);
        ASSERT_OK(mseg_free(seg, p));
        mseg_close(seg);
        munmap(buf, size);
}

/* Offline resizing moves the allocator's tables: blocks stay where they
 * are and keep their contents; the new room is usable; shrink_to_fit keeps
 * everything that is allocated. */
static void test_offline_resize(void) {
        const char *tmp = getenv("TMPDIR");
        char path[4096];
        struct mseg_options o = { .size = 2 << 20 };
        mseg_handle hs[300];
        mseg *seg;
        struct stat st;

        snprintf(path, sizeof(path), "%s/test-alloc-%d.seg", tmp && *tmp ? tmp : "/tmp", getpid());
        unlink(path);
        ASSERT_OK(mseg_file_open(&seg, path, MSEG_CREATE_ONLY, &o));
        for (int i = 0; i < 300; i++) {
                size_t n = i % 30 == 0 ? 20000 : 24 + (size_t) i * 3;
                char *p = mseg_alloc(seg, n);
                ASSERT_NOT_NULL(p);
                snprintf(p, 24, "block %d", i);
                hs[i] = mseg_handle_of(seg, p);
        }
        for (int i = 0; i < 300; i += 2)
                ASSERT_OK(mseg_free(seg, mseg_ptr(seg, hs[i])));
        mseg_close(seg);
        for (int round = 0; round < 3; round++) {
                ASSERT_OK(mseg_file_grow(path, (uint64_t) (round + 1) << 20));
                ASSERT_OK(mseg_file_open(&seg, path, MSEG_OPEN_ONLY, NULL));
                ASSERT_OK(mseg_check(seg));
                for (int i = 1; i < 300; i += 2) {
                        char want[24];
                        snprintf(want, sizeof(want), "block %d", i);
                        ASSERT(strcmp(mseg_ptr(seg, hs[i]), want) == 0);
                }
                void *big = mseg_alloc(seg, (size_t) (round + 1) << 19);        /* needs the new room */
                ASSERT_NOT_NULL(big);
                ASSERT_OK(mseg_free(seg, big));
                mseg_close(seg);
                ASSERT_OK(mseg_file_shrink_to_fit(path));
                ASSERT_EQ(stat(path, &st), 0);
                ASSERT_OK(mseg_file_open(&seg, path, MSEG_OPEN_ONLY, NULL));
                ASSERT_EQ((uint64_t) st.st_size, mseg_size(seg));
                ASSERT_OK(mseg_check(seg));
                for (int i = 1; i < 300; i += 2) {
                        char want[24];
                        snprintf(want, sizeof(want), "block %d", i);
                        ASSERT(strcmp(mseg_ptr(seg, hs[i]), want) == 0);
                }
                mseg_close(seg);
        }
        ASSERT(st.st_size < (2 << 20));
        ASSERT_OK(mseg_file_open(&seg, path, MSEG_OPEN_ONLY, NULL));
        for (int i = 1; i < 300; i += 2)
                ASSERT_OK(mseg_free(seg, mseg_ptr(seg, hs[i])));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        ASSERT_OK(mseg_check(seg));
        mseg_close(seg);
        unlink(path);

        /* a heap segment grows with live blocks and cached ones */
        ASSERT_OK(mseg_heap_create(&seg, 256 << 10));
        for (int i = 0; i < 100; i++) {
                char *p = mseg_alloc(seg, 100);
                ASSERT_NOT_NULL(p);
                snprintf(p, 24, "heap %d", i);
                hs[i] = mseg_handle_of(seg, p);
        }
        for (int g = 0; g < 5; g++) {
                ASSERT_OK(mseg_heap_grow(seg, (uint64_t) 1 << (20 + g)));
                ASSERT_OK(mseg_check(seg));
                for (int i = 0; i < 100; i++) {
                        char want[24];
                        snprintf(want, sizeof(want), "heap %d", i);
                        ASSERT(strcmp(mseg_ptr(seg, hs[i]), want) == 0);
                }
                void *big = mseg_alloc(seg, (size_t) 1 << (19 + g));
                ASSERT_NOT_NULL(big);
                ASSERT_OK(mseg_free(seg, big));
        }
        for (int i = 0; i < 100; i++)
                ASSERT_OK(mseg_free(seg, mseg_ptr(seg, hs[i])));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        mseg_close(seg);
}

/* With ASan and -Dexpensive_checks=true, a freed block of a heap segment
 * is poisoned: reading it is reported (the child dies). */
static void test_poison(void) {
#if A_ASAN
        pid_t pid = fork();
        int st;

        ASSERT(pid >= 0);
        if (pid == 0) {
                mseg *seg;
                volatile char *p, *big;
                int null = open("/dev/null", O_WRONLY);
                if (null >= 0)
                        dup2(null, 2);          /* the expected report is noise in the log */
                ASSERT_OK(mseg_heap_create(&seg, 8 << 20));
                p = mseg_alloc(seg, 100);
                big = mseg_alloc(seg, 100000);
                ASSERT(p && big);
                p[50] = 1;
                ASSERT_OK(mseg_free(seg, (void *) big));
                ASSERT_OK(mseg_free(seg, (void *) p));
                ASSERT_ERR(mseg_free(seg, (void *) p), -EINVAL);   /* the cookie stays readable */
                (void) p[50];                                      /* use after free */
                _exit(0);
        }
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        ASSERT(WIFSIGNALED(st));
        printf("use after free in a heap segment reported by ASan\n");
#endif
}

int main(void) {
        test_basic(MSEG_MIN_SIZE);
        test_basic(256 << 10);
        test_basic(2 << 20);
        test_basic(64 << 20);
        test_invalid_frees();
        test_exhaustion(MSEG_MIN_SIZE, 16);
        test_exhaustion(1 << 20, 100);
        test_exhaustion(4 << 20, 5000);
        test_exhaustion(8 << 20, 40000);
        test_exhaustion(64 << 20, 64);
        test_many();
        test_alloc_into();
        test_zero_free();
        test_frontier();
        test_sparse_reserve();
        test_read_only_handle();
        test_offline_resize();
        test_poison();
        return 0;
}
