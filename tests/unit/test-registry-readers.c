/* SPDX-License-Identifier: MIT */
/*
 * test-registry-readers: find in a read-only mapping while writers churn.
 *
 * One process maps the segment file read-only (PROT_READ: any write, even
 * to a lock, would kill it with SIGSEGV) and calls mseg_find in a loop on
 * random names while two writers, each with its own read-write mapping,
 * construct and destroy thousands of names, and one of them repeatedly
 * grows the index with a bulk of names and shrinks it again (so tables are
 * replaced and freed under the reader). Every object's elements follow a
 * pattern derived from its name, so the reader can tell a half-built or a
 * wrong object from a right one.
 *
 * An object found may legitimately be destroyed while the reader looks at
 * it. To keep the check exact, writers bump begin[d] before destroying name
 * d and end[d] after (a seqlock in test memory): the reader only judges an
 * object's contents when no destroy of that name overlapped its look. The
 * element count it gets from mseg_find is judged always.
 *
 * "Never blocks": one writer holds the registry lock for 20 ms, twice
 * (mseg_atomic); the reader must complete finds while it does.
 */
#include <stdbool.h>

#include "test-registry-common.h"
#include "internal.h"

#define NNAMES 3000
#define NBULK 2500
#define OPS 60000
#define SEG_SIZE ((uint64_t) 32 << 20)

struct shared {
        _Atomic uint32_t begin[NNAMES], end[NNAMES];
        _Atomic int stop;
        _Atomic int holding;            /* a writer holds the registry lock */
        _Atomic uint64_t judged, skipped, found, absent, while_locked, checks;
};

static const mseg_type obj_type_desc = { "uint64_t", sizeof(uint64_t), _Alignof(uint64_t), NULL };

static const mseg_type *obj_type(void) {
        return &obj_type_desc;
}

static size_t count_of(int d) {
        return 1 + (size_t) d % 13;
}

static uint64_t pattern(int d, size_t i) {
        return mix64((uint64_t) d * 64 + i);
}

static void name_of(char *buf, size_t n, int d) {
        /* slashes, spaces and non-ASCII bytes in every name */
        snprintf(buf, n, "reader/n %d \xc3\xbc", d);
}

static int init_pattern(void *elem, size_t index, void *arg) {
        *(uint64_t *) elem = pattern(*(int *) arg, index);
        return 0;
}

static int hold_lock(mseg *seg, void *arg) {
        struct shared *sh = arg;
        struct timespec ts = { 0, 20 * 1000000 };

        (void) seg;
        atomic_store(&sh->holding, 1);
        nanosleep(&ts, NULL);
        atomic_store(&sh->holding, 0);
        return 0;
}

static void writer(const char *path, struct shared *sh, int id) {
        mseg *seg = open_file_seg(path, MSEG_OPEN_ONLY, 0, 0);
        uint64_t rng = 1234 + (uint64_t) id;
        char name[64];

        for (int op = 0; op < OPS; op++) {
                uint64_t x = test_rand(&rng);
                int d = (int) (x % NNAMES);

                name_of(name, sizeof(name), d);
                switch ((x >> 32) % 4) {
                case 0:
                case 1: {
                        void *p = (x >> 40) & 1 ? mseg_construct(seg, name, obj_type(), count_of(d), init_pattern, &d)
                                                : mseg_find_or_construct(seg, name, obj_type(), count_of(d),
                                                                         init_pattern, &d);
                        if (!p)
                                ASSERT_EQ(errno, EEXIST);
                        break;
                }
                default: {
                        int r;
                        atomic_fetch_add(&sh->begin[d], 1);
                        r = mseg_destroy(seg, name, obj_type());
                        atomic_fetch_add(&sh->end[d], 1);
                        if (r != 0)
                                ASSERT_ERR(r, -ENOENT);
                        break;
                }
                }
                /* Writer 1 moves the index: a bulk of names in, then out. */
                if (id == 1 && op % 7500 == 100) {
                        for (int b = 0; b < NBULK; b++) {
                                snprintf(name, sizeof(name), "bulk%d", b);
                                ASSERT_NOT_NULL(mseg_construct(seg, name, MSEG_TYPE(int), 1, NULL, NULL));
                        }
                        for (int b = 0; b < NBULK; b++) {
                                snprintf(name, sizeof(name), "bulk%d", b);
                                ASSERT_OK(mseg_destroy(seg, name, MSEG_TYPE(int)));
                        }
                }
                if (id == 0 && op % 30000 == 15000)
                        ASSERT_OK(mseg_atomic(seg, hold_lock, sh));
        }
        mseg_close(seg);
        _exit(0);
}

static int on_named(const struct mseg_object_info *info, void *arg) {
        (void) arg;
        ASSERT(info->name_len > 0 && info->name_len == strlen(info->name));
        ASSERT(strncmp(info->name, "reader/n ", 9) == 0 || strncmp(info->name, "bulk", 4) == 0);
        return 0;
}

static void reader(const char *path, struct shared *sh) {
        mseg *seg = open_file_seg(path, MSEG_OPEN_ONLY, 0, MSEG_READ_ONLY);
        uint64_t rng = 99, iter = 0;
        char name[64];

        ASSERT_EQ(mseg_is_read_only(seg), 1);
        while (!atomic_load(&sh->stop)) {
                int d = (int) (test_rand(&rng) % NNAMES);
                uint32_t e1, b1, b2;
                int locked_before = atomic_load(&sh->holding);
                size_t count = 0;
                uint64_t *p;
                bool same = true;

                name_of(name, sizeof(name), d);
                e1 = atomic_load(&sh->end[d]);
                b1 = atomic_load(&sh->begin[d]);
                p = mseg_find(seg, name, obj_type(), &count);
                if (!p) {
                        ASSERT_EQ(errno, ENOENT);
                        atomic_fetch_add(&sh->absent, 1);
                } else {
                        atomic_fetch_add(&sh->found, 1);
                        ASSERT_EQ(count, count_of(d));  /* from the find's own snapshot */
                        for (size_t i = 0; i < count; i++)
                                if (__atomic_load_n(&p[i], __ATOMIC_RELAXED) != pattern(d, i))
                                        same = false;
                        /* A read-modify-write (release half) keeps the
                         * content reads above before this read of begin[d]. */
                        b2 = atomic_fetch_add_explicit(&sh->begin[d], 0, memory_order_acq_rel);
                        if (b1 == e1 && b2 == b1) {
                                if (!same)
                                        FAIL("read-only reader saw a half-built or wrong object for %s", name);
                                atomic_fetch_add(&sh->judged, 1);
                        } else {
                                atomic_fetch_add(&sh->skipped, 1);
                        }
                }
                if (locked_before && atomic_load(&sh->holding))
                        atomic_fetch_add(&sh->while_locked, 1);
                /* Absent or present, a type mismatch is always reported as such. */
                if (iter % 64 == 0) {
                        void *q = mseg_find(seg, name, MSEG_TYPE(int), NULL);
                        ASSERT(q == NULL && (errno == ENOENT || errno == EPROTOTYPE));
                }
                if (iter % 4096 == 0) {
                        /* The registry's deep check, which must tolerate
                         * writers at work (the allocator's own check is
                         * only exact on a quiet segment). */
                        ASSERT_OK(mseg__registry_check(seg));
                        ASSERT_OK(mseg_foreach_named(seg, on_named, NULL));
                        atomic_fetch_add(&sh->checks, 1);
                }
                iter++;
        }
        mseg_close(seg);
        _exit(0);
}

static int destroy_all(const struct mseg_object_info *info, void *arg) {
        ASSERT_OK(mseg_destroy(arg, info->name, MSEG_TYPE(uint64_t)));
        return 0;
}

int main(void) {
        char path[128];
        struct shared *sh = shared_area(sizeof(struct shared));
        pid_t rd, wr[2];
        mseg *seg;

        setvbuf(stdout, NULL, _IOLBF, 0);     /* forked children must not repeat it */
        scratch_path(path, sizeof(path), "readers");
        seg = open_file_seg(path, MSEG_CREATE_ONLY, SEG_SIZE, 0);
        rd = fork();
        ASSERT(rd >= 0);
        if (rd == 0)
                reader(path, sh);
        for (int i = 0; i < 2; i++) {
                wr[i] = fork();
                ASSERT(wr[i] >= 0);
                if (wr[i] == 0)
                        writer(path, sh, i);
        }
        wait_children(wr, 2);
        atomic_store(&sh->stop, 1);
        wait_children(&rd, 1);

        printf("reader: %llu found (%llu judged whole, %llu overlapped a destroy), %llu absent, "
               "%llu while a writer held the lock, %llu concurrent checks\n",
               (unsigned long long) sh->found, (unsigned long long) sh->judged, (unsigned long long) sh->skipped,
               (unsigned long long) sh->absent, (unsigned long long) sh->while_locked,
               (unsigned long long) sh->checks);
        ASSERT(sh->judged > 1000);
        ASSERT(sh->absent > 0);
        ASSERT(sh->while_locked > 0);           /* finds went on while the lock was held */

        ASSERT_OK(mseg_check(seg));
        ASSERT_OK(mseg_foreach_named(seg, destroy_all, seg));
        ASSERT_EQ(mseg_named_count(seg), 0);
        ASSERT_OK(mseg_check(seg));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        mseg_close(seg);
        unlink(path);
        printf("test-registry-readers: ok\n");
        return 0;
}
