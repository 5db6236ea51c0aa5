/* SPDX-License-Identifier: MIT */
/*
 * test-daemon-basic — the requests of the protocol through libmseg against a
 * real msegd: create / open / open-or-create, read-only and copy-on-write
 * opens, remove (like shm_unlink), grow, stat, list, remove_on_last_close,
 * and the errors a caller sees (no daemon, no segment, exists, bad names).
 */
#include <sys/mman.h>

#include "internal.h"
#include "msegd-harness.h"

static struct msegd d;

struct counter {
        unsigned n;
        bool saw_a, saw_b;
};

static int count_one(const struct mseg_segment_info *i, void *arg) {
        struct counter *c = arg;
        c->n++;
        if (strcmp(i->name, "basic-a") == 0)
                c->saw_a = true;
        if (strcmp(i->name, "basic-b") == 0)
                c->saw_b = true;
        return 0;
}

static void test_errors(void) {
        struct mseg_options o = { .socket_path = "/tmp/mseg-test-nonexistent/socket" };
        char longname[400];
        mseg *s;

        ASSERT_ERR(mseg_open(&s, "x", MSEG_OPEN_ONLY, &o), MSEG_E_NODAEMON);
        ASSERT(strstr(mseg_last_error(), "/tmp/mseg-test-nonexistent/socket") != NULL);
        ASSERT_ERR(mseg_open(&s, "does-not-exist", MSEG_OPEN_ONLY, NULL), -ENOENT);
        ASSERT_ERR(mseg_open(&s, "", MSEG_CREATE_ONLY, NULL), -EINVAL);
        ASSERT_ERR(mseg_open(&s, "a/b", MSEG_CREATE_ONLY, NULL), -EINVAL);
        memset(longname, 'n', sizeof(longname) - 1);
        longname[sizeof(longname) - 1] = '\0';
        ASSERT_ERR(mseg_open(&s, longname, MSEG_CREATE_ONLY, NULL), -ENAMETOOLONG);
        longname[MSEG_NAME_MAX] = '\0';         /* exactly 255 bytes is fine */
        ASSERT_OK(mseg_open(&s, longname, MSEG_CREATE_ONLY, NULL));
        mseg_close(s);
        ASSERT_OK(mseg_remove(longname, NULL));
        ASSERT_ERR(mseg_open(&s, "\xff\xfe", MSEG_CREATE_ONLY, NULL), -EINVAL);    /* not UTF-8 */
        struct mseg_options small = { .size = 4096 };
        ASSERT_ERR(mseg_open(&s, "small", MSEG_CREATE_ONLY, &small), -EINVAL);
        struct mseg_options bad = { .size = 1 << 20, .max_size = 1 << 19 };
        ASSERT_ERR(mseg_open(&s, "bad", MSEG_CREATE_ONLY, &bad), -EINVAL);
        struct mseg_options flags = { .flags = 0x100 };
        ASSERT_ERR(mseg_open(&s, "flags", MSEG_CREATE_ONLY, &flags), -EINVAL);
        ASSERT_ERR(mseg_remove("does-not-exist", NULL), -ENOENT);
        ASSERT_ERR(mseg_open(&s, "x", (enum mseg_how) 9, NULL), -EINVAL);
}

static void test_create_open(void) {
        struct mseg_options o = { .size = 1 << 20, .mode = 0640 };
        struct mseg_segment_info info;
        uint8_t id1[16], id2[16];
        mseg *a, *b, *c;
        char *p;

        ASSERT_OK(mseg_open(&a, "basic-a", MSEG_CREATE_ONLY, &o));
        ASSERT_EQ(mseg_size(a), 1 << 20);
        ASSERT_EQ(mseg_is_read_only(a), 0);
        ASSERT_OK(mseg_check(a));
        ASSERT_ERR(mseg_open(&b, "basic-a", MSEG_CREATE_ONLY, &o), -EEXIST);
        ASSERT_OK(mseg_open(&b, "basic-a", MSEG_OPEN_ONLY, NULL));
        ASSERT_OK(mseg_open(&c, "basic-a", MSEG_OPEN_OR_CREATE, &o));
        mseg_id(a, id1);
        mseg_id(b, id2);
        ASSERT(memcmp(id1, id2, 16) == 0);

        /* The same bytes, through two mappings. */
        p = mseg_alloc(a, 1000);
        ASSERT_NOT_NULL(p);
        memset(p, 0x5a, 1000);
        char *q = mseg_ptr(b, mseg_handle_of(a, p));
        ASSERT_NOT_NULL(q);
        for (int i = 0; i < 1000; i++)
                ASSERT_EQ(q[i], 0x5a);

        ASSERT_OK(mseg_stat("basic-a", NULL, &info));
        ASSERT_EQ(info.size, 1 << 20);
        ASSERT_EQ(info.max_size, 1 << 20);
        ASSERT_EQ(info.mode, 0640);
        ASSERT_EQ(info.uid, getuid());
        ASSERT_EQ(info.clients, 3);
        ASSERT(memcmp(info.id, id1, 16) == 0);
        mseg_close(c);
        ASSERT_OK(mseg_stat("basic-a", NULL, &info));
        ASSERT_EQ(info.clients, 2);

        /* open-or-create of a new name creates it. */
        ASSERT_OK(mseg_open(&c, "basic-b", MSEG_OPEN_OR_CREATE, &o));
        struct counter cnt = { 0 };
        ASSERT_OK(mseg_list(NULL, count_one, &cnt));
        ASSERT(cnt.saw_a && cnt.saw_b);
        ASSERT_EQ(cnt.n, 2);
        mseg_close(c);
        ASSERT_OK(mseg_remove("basic-b", NULL));

        /* Read-only: PROT_READ mapping, the allocator refuses. */
        struct mseg_options ro = { .flags = MSEG_READ_ONLY };
        ASSERT_OK(mseg_open(&c, "basic-a", MSEG_OPEN_ONLY, &ro));
        ASSERT_EQ(mseg_is_read_only(c), 1);
        ASSERT_NULL_ERRNO(mseg_alloc(c, 16), EROFS);
        q = mseg_ptr(c, mseg_handle_of(a, p));
        ASSERT_EQ(q[999], 0x5a);
        mseg_close(c);

        /* Copy-on-write: private writes, invisible to the others. */
        struct mseg_options cow = { .flags = MSEG_COPY_ON_WRITE };
        ASSERT_OK(mseg_open(&c, "basic-a", MSEG_OPEN_ONLY, &cow));
        q = mseg_ptr(c, mseg_handle_of(a, p));
        q[0] = 0x11;
        ASSERT_EQ(p[0], 0x5a);
        ASSERT_EQ(q[0], 0x11);
        mseg_close(c);

        /* Remove works like shm_unlink: the mappings stay valid, the name is
         * free at once, and a new segment of that name is another one. */
        ASSERT_OK(mseg_remove("basic-a", NULL));
        ASSERT_ERR(mseg_open(&c, "basic-a", MSEG_OPEN_ONLY, NULL), -ENOENT);
        p[1] = 0x33;
        ASSERT_EQ(q == NULL, 0);
        ASSERT_EQ(((char *) mseg_ptr(b, mseg_handle_of(a, p)))[1], 0x33);
        ASSERT_OK(mseg_open(&c, "basic-a", MSEG_CREATE_ONLY, &o));
        mseg_id(c, id2);
        ASSERT(memcmp(id1, id2, 16) != 0);
        ASSERT_OK(mseg_free(a, p));
        mseg_close(a);
        mseg_close(b);
        mseg_close(c);
        ASSERT_OK(mseg_remove("basic-a", NULL));
}

static void test_grow(void) {
        struct mseg_options o = { .size = 1 << 20, .max_size = 8 << 20 };
        struct mseg_segment_info info;
        mseg *a, *b;
        void *big;

        ASSERT_OK(mseg_open(&a, "grow", MSEG_CREATE_ONLY, &o));
        ASSERT_OK(mseg_open(&b, "grow", MSEG_OPEN_ONLY, NULL));
        ASSERT_EQ(mseg_size(a), 1 << 20);
        /* 2 MiB cannot fit yet. */
        ASSERT_NULL_ERRNO(mseg_alloc(a, 2 << 20), ENOMEM);
        ASSERT_OK(mseg_grow(a, 4 << 20));
        ASSERT_EQ(mseg_size(a), 4 << 20);
        ASSERT_EQ(mseg_size(b), 4 << 20);      /* seen without remapping */
        big = mseg_alloc(b, 2 << 20);
        ASSERT_NOT_NULL(big);
        memset(big, 1, 2 << 20);
        ASSERT_OK(mseg_stat("grow", NULL, &info));
        ASSERT_EQ(info.size, 4 << 20);
        ASSERT_EQ(info.max_size, 8 << 20);
        ASSERT_OK(mseg_grow(a, 2 << 20));       /* smaller: nothing to do */
        ASSERT_EQ(mseg_size(a), 4 << 20);
        ASSERT_ERR(mseg_grow(a, 16 << 20), -ENOSPC);
        ASSERT_OK(mseg_grow(b, 8 << 20));
        ASSERT_EQ(mseg_size(a), 8 << 20);
        ASSERT_OK(mseg_check(a));
        ASSERT_OK(mseg_free(b, big));

        /* A read-only handle cannot grow. */
        struct mseg_options ro = { .flags = MSEG_READ_ONLY };
        mseg *c;
        ASSERT_OK(mseg_open(&c, "grow", MSEG_OPEN_ONLY, &ro));
        ASSERT_ERR(mseg_grow(c, 8 << 20), -EACCES);
        mseg_close(c);

        /* Growing a removed segment through its old handle: its name is
         * gone, and a new segment of that name is not it. */
        ASSERT_OK(mseg_remove("grow", NULL));
        ASSERT_ERR(mseg_grow(a, 8 << 20), 0);   /* already that size: no request */
        struct mseg_options o2 = { .size = 1 << 20, .max_size = 16 << 20 };
        mseg *old, *young;
        ASSERT_OK(mseg_open(&old, "grow2", MSEG_CREATE_ONLY, &o2));
        ASSERT_OK(mseg_remove("grow2", NULL));
        ASSERT_ERR(mseg_grow(old, 2 << 20), -ENOENT);
        ASSERT_OK(mseg_open(&young, "grow2", MSEG_CREATE_ONLY, &o2));
        ASSERT_ERR(mseg_grow(old, 2 << 20), -ENOENT);
        ASSERT_EQ(mseg_size(young), 1 << 20);
        mseg_close(old);
        mseg_close(young);
        ASSERT_OK(mseg_remove("grow2", NULL));
        mseg_close(a);
        mseg_close(b);
}

static void test_remove_on_last_close(void) {
        struct mseg_options o = { .size = 1 << 20, .flags = MSEG_REMOVE_ON_LAST_CLOSE };
        struct mseg_segment_info info;
        mseg *a, *b;

        ASSERT_OK(mseg_open(&a, "autoremove", MSEG_CREATE_ONLY, &o));
        ASSERT_OK(mseg_open(&b, "autoremove", MSEG_OPEN_ONLY, NULL));
        ASSERT_OK(mseg_stat("autoremove", NULL, &info));
        ASSERT(info.flags & MSEG_REMOVE_ON_LAST_CLOSE);
        mseg_close(a);
        ASSERT_OK(mseg_stat("autoremove", NULL, &info));
        mseg_close(b);
        /* The detach travels at once for these; msegd handles it before the
         * stat on another connection only if it read it first: allow a moment. */
        uint64_t t0 = h_now_ms();
        int r;
        while ((r = mseg_stat("autoremove", NULL, &info)) == 0 && h_now_ms() - t0 < 5000)
                h_sleep_ms(10);
        ASSERT_ERR(r, -ENOENT);

        /* A process that dies detaches too. */
        ASSERT_OK(mseg_open(&a, "autoremove2", MSEG_CREATE_ONLY, &o));
        pid_t pid = fork();
        if (pid == 0) {
                mseg *c;
                if (mseg_open(&c, "autoremove2", MSEG_OPEN_ONLY, NULL) < 0)
                        _exit(1);
                _exit(0);       /* no close: the connection closes with the process */
        }
        ASSERT_CHILD_OK(pid);
        ASSERT_OK(mseg_stat("autoremove2", NULL, &info));
        mseg_close(a);
        t0 = h_now_ms();
        while ((r = mseg_stat("autoremove2", NULL, &info)) == 0 && h_now_ms() - t0 < 5000)
                h_sleep_ms(10);
        ASSERT_ERR(r, -ENOENT);

        /* Persistent and remove-on-last-close exclude each other. */
        struct mseg_options both = { .flags = MSEG_PERSISTENT | MSEG_REMOVE_ON_LAST_CLOSE };
        ASSERT_ERR(mseg_open(&a, "both", MSEG_CREATE_ONLY, &both), -EINVAL);
}

static void test_fork_child_own_connection(void) {
        struct mseg_options o = { .size = 1 << 20 };
        mseg *a;

        ASSERT_OK(mseg_open(&a, "forky", MSEG_CREATE_ONLY, &o));
        pid_t pid = fork();
        if (pid == 0) {
                mseg *b;
                struct mseg_segment_info info;
                /* The child opens on its own connection, and may close the
                 * handle it inherited without detaching the parent's. */
                if (mseg_open(&b, "forky", MSEG_OPEN_ONLY, NULL) < 0)
                        _exit(2);
                mseg_close(a);
                if (mseg_stat("forky", NULL, &info) < 0 || info.clients != 2)
                        _exit(3);
                mseg_close(b);
                _exit(0);
        }
        ASSERT_CHILD_OK(pid);
        ASSERT(mseg_alloc(a, 64) != NULL);
        mseg_close(a);
        ASSERT_OK(mseg_remove("forky", NULL));
}

int main(void) {
        alarm(120);
        msegd_start(&d, NULL);
        test_errors();
        test_create_open();
        test_grow();
        test_remove_on_last_close();
        test_fork_child_own_connection();
        msegd_stop(&d);
        /* And with msegd gone, a clear error. */
        mseg *s;
        ASSERT_ERR(mseg_open(&s, "x", MSEG_OPEN_ONLY, NULL), MSEG_E_NODAEMON);
        msegd_cleanup(&d);
        printf("ok\n");
        return 0;
}
