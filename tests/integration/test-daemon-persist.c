/* SPDX-License-Identifier: MIT */
/*
 * test-daemon-persist — persistent segments survive a restart of msegd with
 * their contents, named objects, size, owner and mode; ordinary segments do
 * not. A damaged state file is logged and skipped, and msegd still starts;
 * removing a persistent segment removes its state file.
 */
#include "msegd-harness.h"

static unsigned count_state_files(const struct msegd *d) {
        DIR *dir = opendir(d->state);
        struct dirent *e;
        unsigned n = 0;

        if (!dir)
                return 0;
        while ((e = readdir(dir))) {
                size_t len = strlen(e->d_name);
                if (len > 5 && strcmp(e->d_name + len - 5, ".mseg") == 0)
                        n++;
        }
        closedir(dir);
        return n;
}

static bool log_contains(const struct msegd *d, const char *needle) {
        static char text[1 << 20];
        int fd = open(d->log, O_RDONLY | O_CLOEXEC);
        ssize_t n;

        if (fd < 0)
                return false;
        n = read(fd, text, sizeof(text) - 1);
        close(fd);
        if (n <= 0)
                return false;
        text[n] = '\0';
        return strstr(text, needle) != NULL;
}

int main(void) {
        struct msegd d = { 0 };
        struct mseg_options po = { .size = 1 << 20, .max_size = 8 << 20, .mode = 0640, .flags = MSEG_PERSISTENT };
        struct mseg_options o = { .size = 1 << 20 };
        struct mseg_segment_info info;
        uint8_t id[16], id2[16];
        mseg *p, *t;
        char name[32];

        alarm(120);
        msegd_start(&d, NULL);
        ASSERT_OK(mseg_open(&p, "keep", MSEG_CREATE_ONLY, &po));
        ASSERT_OK(mseg_open(&t, "temp", MSEG_CREATE_ONLY, &o));
        mseg_id(p, id);
        for (unsigned i = 0; i < 100; i++) {
                snprintf(name, sizeof(name), "n%u", i);
                uint32_t *v = mseg_construct(p, name, MSEG_TYPE(uint32_t), i + 1, NULL, NULL);
                ASSERT_NOT_NULL(v);
                for (unsigned k = 0; k <= i; k++)
                        v[k] = i * 1000 + k;
        }
        ASSERT_OK(mseg_grow(p, 4 << 20));
        uint8_t *blob = mseg_construct(p, "blob", MSEG_TYPE(uint8_t), 1500000, NULL, NULL);
        ASSERT_NOT_NULL(blob);          /* needs the growth */
        for (size_t k = 0; k < 1500000; k++)
                blob[k] = (uint8_t) (k ^ (k >> 8));
        ASSERT_NOT_NULL(mseg_construct(t, "x", MSEG_TYPE(int), 1, NULL, NULL));
        mseg_close(p);
        mseg_close(t);
        /* The file exists while msegd runs (written at creation, by a
         * thread of msegd's pool: give it a moment). */
        for (uint64_t t0 = h_now_ms(); count_state_files(&d) != 1 && h_now_ms() - t0 < 5000;)
                h_sleep_ms(10);
        ASSERT_EQ(count_state_files(&d), 1);
        msegd_stop(&d);

        /* A damaged state file and a stray temporary one beside it. */
        {
                char path[256];
                snprintf(path, sizeof(path), "%s/0123456789abcdef0123456789abcdef.mseg", d.state);
                int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                ASSERT(fd >= 0);
                ASSERT_EQ(write(fd, "garbage", 7), 7);
                close(fd);
                snprintf(path, sizeof(path), "%s/fedcba9876543210fedcba9876543210.mseg.tmp", d.state);
                fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                ASSERT(fd >= 0);
                close(fd);
        }

        msegd_start(&d, NULL);
        ASSERT(log_contains(&d, "skipping state file"));
        ASSERT_ERR(mseg_open(&t, "temp", MSEG_OPEN_ONLY, NULL), -ENOENT);
        ASSERT_OK(mseg_stat("keep", NULL, &info));
        ASSERT_EQ(info.size, 4 << 20);
        ASSERT_EQ(info.max_size, 8 << 20);
        ASSERT_EQ(info.mode, 0640);
        ASSERT_EQ(info.uid, getuid());
        ASSERT(info.flags & MSEG_PERSISTENT);
        ASSERT_OK(mseg_open(&p, "keep", MSEG_OPEN_ONLY, NULL));
        mseg_id(p, id2);
        ASSERT(memcmp(id, id2, 16) == 0);
        ASSERT_EQ(mseg_size(p), 4 << 20);
        ASSERT_OK(mseg_check(p));
        for (unsigned i = 0; i < 100; i++) {
                size_t n = 0;
                snprintf(name, sizeof(name), "n%u", i);
                uint32_t *v = mseg_find(p, name, MSEG_TYPE(uint32_t), &n);
                ASSERT_NOT_NULL(v);
                ASSERT_EQ(n, i + 1);
                for (unsigned k = 0; k <= i; k++)
                        ASSERT_EQ(v[k], i * 1000 + k);
        }
        size_t n = 0;
        blob = mseg_find(p, "blob", MSEG_TYPE(uint8_t), &n);
        ASSERT_NOT_NULL(blob);
        ASSERT_EQ(n, 1500000);
        for (size_t k = 0; k < n; k++)
                if (blob[k] != (uint8_t) (k ^ (k >> 8)))
                        FAIL("blob byte %zu differs after the restart", k);
        /* Changes made now survive the next restart too (saved at the last
         * detach and at shutdown). */
        uint64_t *later = mseg_construct(p, "later", MSEG_TYPE(uint64_t), 1, NULL, NULL);
        ASSERT_NOT_NULL(later);
        *later = 0xfeedULL;
        mseg_close(p);
        msegd_stop(&d);

        msegd_start(&d, NULL);
        ASSERT_OK(mseg_open(&p, "keep", MSEG_OPEN_ONLY, NULL));
        later = mseg_find(p, "later", MSEG_TYPE(uint64_t), NULL);
        ASSERT_NOT_NULL(later);
        ASSERT_EQ(*later, 0xfeedULL);
        mseg_close(p);
        /* Removing it removes the file: gone after the next restart. */
        ASSERT_OK(mseg_remove("keep", NULL));
        msegd_stop(&d);
        ASSERT_EQ(count_state_files(&d), 1);    /* only the damaged one, left for a human */
        msegd_start(&d, NULL);
        ASSERT_ERR(mseg_stat("keep", NULL, &info), -ENOENT);
        msegd_stop(&d);

        /* Without a state directory, persistent segments are refused. */
        {
                struct msegd d2 = { 0 };
                msegd_start(&d2, "--state-dir", "", NULL);
                ASSERT_ERR(mseg_open(&p, "keep", MSEG_CREATE_ONLY, &po), -EOPNOTSUPP);
                msegd_stop(&d2);
                msegd_cleanup(&d2);
        }
        msegd_cleanup(&d);
        printf("ok\n");
        return 0;
}
