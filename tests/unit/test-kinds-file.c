/* SPDX-License-Identifier: MIT */
/*
 * test-kinds-file: managed mapped files — open modes, sharing between
 * processes through handles, read-only and copy-on-write semantics (in
 * forked children), offline grow and shrink_to_fit, and refusal while in use.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include <time.h>
#include "alloc_layout.h"
#include "registry.h"

static char dir[] = "/tmp/mseg-file-XXXXXX";
static char path[256];

static int child_status(pid_t pid) {
        int st;
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        return st;
}

static void test_modes(void) {
        struct mseg_options o = { .size = 1 << 20 };
        mseg *a = NULL, *b = NULL;

        ASSERT_ERR(mseg_file_open(&a, path, MSEG_OPEN_ONLY, NULL), -ENOENT);
        ASSERT(a == NULL);
        ASSERT_OK(mseg_file_open(&a, path, MSEG_CREATE_ONLY, &o));
        ASSERT_EQ(mseg_size(a), 1 << 20);
        ASSERT_ERR(mseg_file_open(&b, path, MSEG_CREATE_ONLY, &o), -EEXIST);
        ASSERT_OK(mseg_file_open(&b, path, MSEG_OPEN_OR_CREATE, &o));
        ASSERT_OK(mseg_check(b));
        mseg_close(b);
        ASSERT_OK(mseg_file_open(&b, path, MSEG_OPEN_ONLY, NULL));
        mseg_close(b);
        mseg_close(a);
        ASSERT_EQ(unlink(path), 0);

        struct mseg_options bad = { .size = 100 };
        ASSERT_ERR(mseg_file_open(&a, path, MSEG_CREATE_ONLY, &bad), -EINVAL);
        ASSERT(access(path, F_OK) < 0);         /* a failed create leaves no file */
        ASSERT_ERR(mseg_file_open(&a, path, (enum mseg_how) 9, &o), -EINVAL);
        ASSERT_ERR(mseg_file_open(&a, "", MSEG_OPEN_OR_CREATE, &o), -EINVAL);
        ASSERT_OK(mseg_file_open(&a, path, MSEG_OPEN_OR_CREATE, &o));  /* creates */
        mseg_close(a);

        /* A file that is not a segment. */
        char other[300];
        snprintf(other, sizeof(other), "%s/not-a-segment", dir);
        int fd = open(other, O_CREAT | O_WRONLY, 0644);
        ASSERT(fd >= 0);
        ASSERT_EQ(write(fd, "hello", 5), 5);
        close(fd);
        ASSERT_ERR(mseg_file_open(&a, other, MSEG_OPEN_ONLY, NULL), MSEG_E_CORRUPT);
        ASSERT_ERR(mseg_file_open(&a, other, MSEG_OPEN_OR_CREATE, NULL), MSEG_E_CORRUPT);
        unlink(other);
}

/* Two processes share blocks through handles. */
static void test_sharing(void) {
        mseg *a;
        int pfd[2];
        mseg_handle h;

        ASSERT_OK(mseg_file_open(&a, path, MSEG_OPEN_ONLY, NULL));
        ASSERT_EQ(pipe(pfd), 0);
        pid_t pid = fork();
        if (pid == 0) {
                mseg *c;
                ASSERT_OK(mseg_file_open(&c, path, MSEG_OPEN_ONLY, NULL));
                char *p = mseg_alloc(c, 64);
                ASSERT_NOT_NULL(p);
                strcpy(p, "written by the child");
                h = mseg_handle_of(c, p);
                ASSERT_EQ(write(pfd[1], &h, sizeof(h)), sizeof(h));
                mseg_close(c);
                _exit(0);
        }
        ASSERT_EQ(read(pfd[0], &h, sizeof(h)), sizeof(h));
        int st = child_status(pid);
        ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        char *p = mseg_ptr(a, h);
        ASSERT_NOT_NULL(p);
        ASSERT(strcmp(p, "written by the child") == 0);
        ASSERT_OK(mseg_free(a, p));
        ASSERT_OK(mseg_check(a));
        ASSERT_EQ(mseg_all_memory_deallocated(a), 1);
        close(pfd[0]);
        close(pfd[1]);
        mseg_close(a);
}

static void test_read_only(void) {
        struct mseg_options ro = { .flags = MSEG_READ_ONLY };
        mseg *w, *r;
        char *p;

        ASSERT_OK(mseg_file_open(&w, path, MSEG_OPEN_ONLY, NULL));
        p = mseg_alloc(w, 32);
        ASSERT_NOT_NULL(p);
        strcpy(p, "shared text");
        mseg_handle h = mseg_handle_of(w, p);

        ASSERT_OK(mseg_file_open(&r, path, MSEG_OPEN_ONLY, &ro));
        ASSERT_EQ(mseg_is_read_only(r), 1);
        ASSERT(strcmp(mseg_ptr(r, h), "shared text") == 0);
        ASSERT_NULL_ERRNO(mseg_alloc(r, 16), EROFS);
        ASSERT_OK(mseg_check(r));
        ASSERT_ERR(mseg_file_open(&r, path, MSEG_CREATE_ONLY, &ro), -EINVAL);

        pid_t pid = fork();
        if (pid == 0) {
                signal(SIGSEGV, SIG_DFL);
                ((char *) mseg_ptr(r, h))[0] = 'X';     /* must fault */
                _exit(0);
        }
        int st = child_status(pid);
        ASSERT(WIFSIGNALED(st) && (WTERMSIG(st) == SIGSEGV || WTERMSIG(st) == SIGBUS));
        ASSERT(p[0] == 's');
        mseg_close(r);
        ASSERT_OK(mseg_free(w, p));
        mseg_close(w);
}

static void test_copy_on_write(void) {
        struct mseg_options cow = { .flags = MSEG_COPY_ON_WRITE };
        mseg *w, *c;
        char *p;

        ASSERT_OK(mseg_file_open(&w, path, MSEG_OPEN_ONLY, NULL));
        p = mseg_alloc(w, 32);
        ASSERT_NOT_NULL(p);
        strcpy(p, "original");
        mseg_handle h = mseg_handle_of(w, p);
        ASSERT_OK(mseg_file_open(&c, path, MSEG_OPEN_ONLY, &cow));
        char *q = mseg_ptr(c, h);
        ASSERT(strcmp(q, "original") == 0);
        strcpy(q, "private!");
        void *extra = mseg_alloc(c, 1000);      /* allocating in a private copy works */
        ASSERT_NOT_NULL(extra);
        ASSERT(strcmp(p, "original") == 0);     /* the writer and the file never see it */
        mseg_close(c);
        mseg *again;
        ASSERT_OK(mseg_file_open(&again, path, MSEG_OPEN_ONLY, NULL));
        ASSERT(strcmp(mseg_ptr(again, h), "original") == 0);
        ASSERT_OK(mseg_check(again));
        mseg_close(again);
        ASSERT_OK(mseg_free(w, p));
        ASSERT_EQ(mseg_all_memory_deallocated(w), 1);
        mseg_close(w);
}

static void test_grow_shrink(void) {
        mseg *a;
        struct stat st;
        mseg_handle hs[64];

        ASSERT_OK(mseg_file_open(&a, path, MSEG_OPEN_ONLY, NULL));
        ASSERT_ERR(mseg_file_grow(path, 1 << 20), -EBUSY);
        ASSERT_ERR(mseg_file_shrink_to_fit(path), -EBUSY);
        for (int i = 0; i < 64; i++) {
                char *p = mseg_alloc(a, 1000);
                ASSERT_NOT_NULL(p);
                snprintf(p, 1000, "block %d", i);
                hs[i] = mseg_handle_of(a, p);
        }
        /* fill until full */
        size_t n = 0;
        while (mseg_alloc(a, 4000))
                n++;
        ASSERT_EQ(errno, ENOMEM);
        mseg_close(a);

        ASSERT_OK(mseg_file_grow(path, 3 << 20));
        ASSERT_EQ(stat(path, &st), 0);
        ASSERT_EQ(st.st_size, 4 << 20);
        ASSERT_OK(mseg_file_open(&a, path, MSEG_OPEN_ONLY, NULL));
        ASSERT_EQ(mseg_size(a), 4 << 20);
        ASSERT_OK(mseg_check(a));
        for (int i = 0; i < 64; i++) {
                char want[32];
                snprintf(want, sizeof(want), "block %d", i);
                ASSERT(strcmp(mseg_ptr(a, hs[i]), want) == 0);
        }
        size_t m = 0;
        while (mseg_alloc(a, 4000))
                m++;
        if (m < 700)                            /* the new 3 MiB is usable: 768 units */
                FAIL("after growing by 3 MiB only %zu more 4000-byte blocks fit (%zu before)", m, n);
        mseg_close(a);
        ASSERT_ERR(mseg_file_grow("/nonexistent/x", 1), -ENOENT);

        /* shrink_to_fit after freeing most: keeps the named blocks intact */
        unlink(path);
        struct mseg_options o = { .size = 8 << 20 };
        ASSERT_OK(mseg_file_open(&a, path, MSEG_CREATE_ONLY, &o));
        for (int i = 0; i < 64; i++) {
                char *p = mseg_alloc(a, 100);
                ASSERT_NOT_NULL(p);
                snprintf(p, 100, "small %d", i);
                hs[i] = mseg_handle_of(a, p);
        }
        mseg_close(a);
        ASSERT_OK(mseg_file_shrink_to_fit(path));
        ASSERT_EQ(stat(path, &st), 0);
        ASSERT(st.st_size < (8 << 20));
        ASSERT_OK(mseg_file_open(&a, path, MSEG_OPEN_ONLY, NULL));
        ASSERT_EQ((off_t) mseg_size(a), st.st_size);
        ASSERT_OK(mseg_check(a));
        for (int i = 0; i < 64; i++) {
                char want[32];
                snprintf(want, sizeof(want), "small %d", i);
                ASSERT(strcmp(mseg_ptr(a, hs[i]), want) == 0);
                ASSERT_OK(mseg_free(a, mseg_ptr(a, hs[i])));
        }
        ASSERT_EQ(mseg_all_memory_deallocated(a), 1);
        mseg_close(a);
}

/* A file whose locks were held when its users vanished without the kernel
 * noticing on these pages (a power cut, a kernel crash, a copied file):
 * lock words name TIDs that mean nothing now. The next opener that finds
 * nobody attached makes them owner-dead and repairs, instead of timing out
 * on every call. While another process is attached, it must not. */
static uint64_t ms_now(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static void stale_locks(mseg *seg) {
        struct mseg__alloc_local *L = seg->alloc;

        atomic_store(&reg_root_of(seg)->lock.word, 0x3ffffff0);
        atomic_store(&L->root->pages.lock.word, 0x3ffffff0);
        atomic_store(&L->root->slot_lock.word, 0x3ffffff0);
        for (int c = 0; c < A_NCLASSES; c++)
                atomic_store(&L->root->pools[c].lock.word, 0x3ffffff0 | 0x80000000u);
}

static void test_stale_locks(void) {
        static const mseg_type u64 = { "u64", 8, 8, NULL };
        struct mseg_stats st;
        mseg *seg, *a;
        uint64_t t0;
        pid_t pid;
        int pfd[2];
        char c;

        unlink(path);
        ASSERT_OK(mseg_file_open(&seg, path, MSEG_CREATE_ONLY, &(struct mseg_options) { .size = 1 << 20 }));
        ASSERT_NOT_NULL(mseg_construct(seg, "before", &u64, 1, NULL, NULL));
        mseg_close(seg);

        /* Another process attached: the opener is not alone and must not
         * take the locks from it (they look held by it, for all we know). */
        ASSERT_OK(pipe(pfd));
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);       /* never outlive a failed test */
                if (mseg_file_open(&a, path, MSEG_OPEN_ONLY, NULL) < 0)
                        _exit(1);
                (void) !write(pfd[1], "a", 1);
                pause();
                _exit(0);
        }
        ASSERT_EQ(read(pfd[0], &c, 1), 1);
        ASSERT_OK(mseg_file_open(&seg, path, MSEG_OPEN_ONLY, NULL));
        stale_locks(seg);               /* as if the attached process held them */
        mseg_close(seg);
        pid_t probe = fork();
        ASSERT(probe >= 0);
        if (probe == 0) {
                mseg *b;
                setenv("MSEG_LOCK_TIMEOUT_MS", "300", 1);
                if (mseg_file_open(&b, path, MSEG_OPEN_ONLY, NULL) < 0)
                        _exit(2);
                if (mseg_construct(b, "while-attached", &u64, 1, NULL, NULL))
                        _exit(3);       /* it took a lock that looks held */
                _exit(errno == ETIMEDOUT ? 0 : 4);
        }
        ASSERT_EQ(child_status(probe), 0);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);

        /* Alone now: recovered at open, and quickly (the default timeout
         * is 10 s). */
        t0 = ms_now();
        ASSERT_OK(mseg_file_open(&seg, path, MSEG_OPEN_ONLY, NULL));
        ASSERT_NOT_NULL(mseg_find(seg, "before", &u64, NULL));
        ASSERT_NOT_NULL(mseg_construct(seg, "after", &u64, 1, NULL, NULL));
        void *p = mseg_alloc(seg, 100);
        ASSERT_NOT_NULL(p);
        ASSERT_OK(mseg_free(seg, p));
        ASSERT(ms_now() - t0 < 2000);
        ASSERT_OK(mseg_check(seg));
        ASSERT_OK(mseg_stats(seg, &st));
        ASSERT(st.lock_repairs >= 3);
        mseg_close(seg);
        close(pfd[0]);
        close(pfd[1]);
        printf("kinds-file: stale locks from vanished users recovered by a lone opener in %llu ms "
               "(%llu repairs); left alone while another process was attached\n",
               (unsigned long long) (ms_now() - t0), (unsigned long long) st.lock_repairs);
}

int main(void) {
        ASSERT(mkdtemp(dir) != NULL);
        snprintf(path, sizeof(path), "%s/seg", dir);
        test_modes();
        test_sharing();
        test_read_only();
        test_copy_on_write();
        test_grow_shrink();
        test_stale_locks();
        unlink(path);
        rmdir(dir);
        return 0;
}
