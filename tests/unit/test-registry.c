/* SPDX-License-Identifier: MIT */
/*
 * test-registry: the construction family in one process — construct, find,
 * find_or_construct, destroy, destroy_ptr; names at the edges of their
 * limits; type mismatches; init failure rolling back; destructors; unique
 * and anonymous instances; instance information; iteration; mseg_atomic and
 * nesting; reservation; read-only mappings; a heap segment that moves.
 * mseg_check runs after every part, and every part ends with the memory
 * all returned.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "test.h"

#define SEG_SIZE ((uint64_t) 8 << 20)

struct point {
        int64_t x, y;
};

typedef struct big_aligned {
        _Alignas(64) uint8_t b[64];
} big_aligned;

typedef struct page_aligned {
        _Alignas(4096) uint8_t b[100];
} page_aligned;

static void *map_shared(size_t size) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        ASSERT(p != MAP_FAILED);
        return p;
}

static mseg *new_seg(void **ret_buf) {
        void *buf = map_shared(SEG_SIZE);
        mseg *seg = NULL;

        ASSERT_OK(mseg_buffer_create(&seg, buf, SEG_SIZE));
        *ret_buf = buf;
        return seg;
}

static void done_seg(mseg *seg, void *buf) {
        ASSERT_OK(mseg_check(seg));
        ASSERT_EQ(mseg_named_count(seg), 0);
        ASSERT_EQ(mseg_unique_count(seg), 0);
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        mseg_close(seg);
        munmap(buf, SEG_SIZE);
}

static int init_point(void *elem, size_t index, void *arg) {
        struct point *p = elem;
        int64_t base = arg ? *(int64_t *) arg : 0;

        p->x = base + (int64_t) index;
        p->y = -(int64_t) index;
        return 0;
}

static void test_basics(void) {
        void *buf;
        mseg *seg = new_seg(&buf);
        const mseg_type *pt = MSEG_TYPE(struct point);
        int64_t base = 1000;
        struct point *p, *q;
        size_t count = 0;

        p = mseg_construct(seg, "points", pt, 10, init_point, &base);
        ASSERT_NOT_NULL(p);
        ASSERT_EQ(((uintptr_t) p) % _Alignof(struct point), 0);
        for (int i = 0; i < 10; i++) {
                ASSERT_EQ(p[i].x, 1000 + i);
                ASSERT_EQ(p[i].y, -i);
        }
        ASSERT_EQ(mseg_named_count(seg), 1);
        ASSERT_OK(mseg_check(seg));

        q = mseg_find(seg, "points", pt, &count);
        ASSERT(q == p);
        ASSERT_EQ(count, 10);
        ASSERT(mseg_find(seg, "points", pt, NULL) == p);

        /* The same name again: EEXIST, and nothing changes. */
        ASSERT_NULL_ERRNO(mseg_construct(seg, "points", pt, 1, NULL, NULL), EEXIST);
        ASSERT_EQ(mseg_named_count(seg), 1);
        ASSERT(mseg_find_or_construct(seg, "points", pt, 3, NULL, NULL) == p);

        /* Another type under that name: EPROTOTYPE, never the pointer. */
        ASSERT_NULL_ERRNO(mseg_find(seg, "points", MSEG_TYPE(int64_t), NULL), EPROTOTYPE);
        ASSERT_NULL_ERRNO(mseg_find_or_construct(seg, "points", MSEG_TYPE(int), 1, NULL, NULL), EPROTOTYPE);
        ASSERT_ERR(mseg_destroy(seg, "points", MSEG_TYPE(double)), -EPROTOTYPE);
        /* Same name and size, different type name: still another type. */
        ASSERT_NULL_ERRNO(mseg_find(seg, "points", (&(const mseg_type){ "pt", sizeof(struct point),
                                                                          _Alignof(struct point), NULL }), NULL),
                          EPROTOTYPE);

        /* Absent names. */
        ASSERT_NULL_ERRNO(mseg_find(seg, "nope", pt, NULL), ENOENT);
        ASSERT_NULL_ERRNO(mseg_find(seg, "point", pt, NULL), ENOENT);
        ASSERT_NULL_ERRNO(mseg_find(seg, "pointsx", pt, NULL), ENOENT);
        ASSERT_ERR(mseg_destroy(seg, "nope", pt), -ENOENT);

        /* find_or_construct creates when absent, zero-filled without init. */
        q = mseg_find_or_construct(seg, "zeros", pt, 4, NULL, NULL);
        ASSERT_NOT_NULL(q);
        for (int i = 0; i < 4; i++)
                ASSERT(q[i].x == 0 && q[i].y == 0);
        ASSERT_EQ(mseg_named_count(seg), 2);
        ASSERT_OK(mseg_check(seg));

        ASSERT_OK(mseg_destroy(seg, "points", pt));
        ASSERT_NULL_ERRNO(mseg_find(seg, "points", pt, NULL), ENOENT);
        ASSERT_ERR(mseg_destroy(seg, "points", pt), -ENOENT);
        ASSERT_OK(mseg_destroy_ptr(seg, q));
        ASSERT_NULL_ERRNO(mseg_find(seg, "zeros", pt, NULL), ENOENT);

        /* A zero-length array is an object too. */
        q = mseg_construct(seg, "empty", pt, 0, NULL, NULL);
        ASSERT_NOT_NULL(q);
        ASSERT(mseg_find(seg, "empty", pt, &count) == q);
        ASSERT_EQ(count, 0);
        ASSERT_EQ(mseg_instance_length(seg, q), 0);
        ASSERT_OK(mseg_destroy(seg, "empty", pt));
        done_seg(seg, buf);
}

static void test_names(void) {
        void *buf;
        mseg *seg = new_seg(&buf);
        const mseg_type *it = MSEG_TYPE(int);
        char longest[MSEG_NAME_MAX + 2];
        const char *odd[] = { "a", "/", "with/slash", "with space", " ", "caf\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac",
                              "\x01\x02\xff", "obj1", "obj10", "obj100" };
        int *p;

        ASSERT_NULL_ERRNO(mseg_construct(seg, "", it, 1, NULL, NULL), EINVAL);
        ASSERT_NULL_ERRNO(mseg_construct(seg, NULL, it, 1, NULL, NULL), EINVAL);
        ASSERT_NULL_ERRNO(mseg_find(seg, "", it, NULL), EINVAL);
        ASSERT_ERR(mseg_destroy(seg, "", it), -EINVAL);
        memset(longest, 'n', sizeof(longest));
        longest[MSEG_NAME_MAX + 1] = 0;                  /* 256 bytes */
        ASSERT_NULL_ERRNO(mseg_construct(seg, longest, it, 1, NULL, NULL), ENAMETOOLONG);
        ASSERT_NULL_ERRNO(mseg_find(seg, longest, it, NULL), ENAMETOOLONG);
        ASSERT_ERR(mseg_destroy(seg, longest, it), -ENAMETOOLONG);
        longest[MSEG_NAME_MAX] = 0;                      /* 255 bytes: fine */
        p = mseg_construct(seg, longest, it, 1, NULL, NULL);
        ASSERT_NOT_NULL(p);
        ASSERT(mseg_find(seg, longest, it, NULL) == p);
        ASSERT_EQ(strlen(mseg_instance_name(seg, p)), MSEG_NAME_MAX);
        longest[MSEG_NAME_MAX - 1] = 'x';                /* differs in the last byte */
        ASSERT_NULL_ERRNO(mseg_find(seg, longest, it, NULL), ENOENT);

        for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
                p = mseg_construct(seg, odd[i], it, 1, NULL, NULL);
                ASSERT_NOT_NULL(p);
                *p = (int) i;
        }
        for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
                p = mseg_find(seg, odd[i], it, NULL);
                ASSERT_NOT_NULL(p);
                ASSERT_EQ(*p, (int) i);
                ASSERT(strcmp(mseg_instance_name(seg, p), odd[i]) == 0);
        }
        ASSERT_EQ(mseg_named_count(seg), 1 + sizeof(odd) / sizeof(odd[0]));
        ASSERT_OK(mseg_check(seg));
        for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
                ASSERT_OK(mseg_destroy(seg, odd[i], it));
        longest[MSEG_NAME_MAX - 1] = 'n';
        ASSERT_OK(mseg_destroy(seg, longest, it));

        /* Bad type descriptors. */
        ASSERT_NULL_ERRNO(mseg_construct(seg, "t", NULL, 1, NULL, NULL), EINVAL);
        ASSERT_NULL_ERRNO(mseg_construct(seg, "t", (&(const mseg_type){ NULL, 4, 4, NULL }), 1, NULL, NULL), EINVAL);
        ASSERT_NULL_ERRNO(mseg_construct(seg, "t", (&(const mseg_type){ "", 4, 4, NULL }), 1, NULL, NULL), EINVAL);
        ASSERT_NULL_ERRNO(mseg_construct(seg, "t", (&(const mseg_type){ "x", 0, 4, NULL }), 1, NULL, NULL), EINVAL);
        ASSERT_NULL_ERRNO(mseg_construct(seg, "t", (&(const mseg_type){ "x", 4, 3, NULL }), 1, NULL, NULL), EINVAL);
        ASSERT_NULL_ERRNO(mseg_construct(seg, "t", (&(const mseg_type){ "x", 4, 0, NULL }), 1, NULL, NULL), EINVAL);
        ASSERT_NULL_ERRNO(mseg_construct(NULL, "t", it, 1, NULL, NULL), EINVAL);
        ASSERT_NULL_ERRNO(mseg_find(NULL, "t", it, NULL), EINVAL);
        ASSERT_ERR(mseg_destroy(NULL, "t", it), -EINVAL);
        /* Too large to ever fit. */
        ASSERT_NULL_ERRNO(mseg_construct(seg, "huge", it, SIZE_MAX / 2, NULL, NULL), ENOMEM);
        ASSERT_NULL_ERRNO(mseg_construct(seg, "huge", it, SEG_SIZE / sizeof(int), NULL, NULL), ENOMEM);
        ASSERT_NULL_ERRNO(mseg_find(seg, "huge", it, NULL), ENOENT);
        done_seg(seg, buf);
}

static void test_alignment(void) {
        void *buf;
        mseg *seg = new_seg(&buf);
        void *a, *b, *c;

        a = mseg_construct(seg, "a64", MSEG_TYPE(big_aligned), 3, NULL, NULL);
        ASSERT_NOT_NULL(a);
        ASSERT_EQ((uintptr_t) a % 64, 0);
        b = mseg_construct(seg, "a4096", MSEG_TYPE(page_aligned), 2, NULL, NULL);
        ASSERT_NOT_NULL(b);
        ASSERT_EQ((uintptr_t) b % 4096, 0);
        c = mseg_construct_anonymous(seg, MSEG_TYPE(page_aligned), 1, NULL, NULL);
        ASSERT_NOT_NULL(c);
        ASSERT_EQ((uintptr_t) c % 4096, 0);
        ASSERT(mseg_find(seg, "a4096", MSEG_TYPE(page_aligned), NULL) == b);
        ASSERT_EQ(mseg_instance_length(seg, b), 2);
        ASSERT_OK(mseg_check(seg));
        ASSERT_OK(mseg_destroy_ptr(seg, a));
        ASSERT_OK(mseg_destroy_ptr(seg, b));
        ASSERT_OK(mseg_destroy_ptr(seg, c));
        done_seg(seg, buf);
}

/* ---- init failure and destructors ---- */

static int built, torn;
static size_t torn_order[64];

static int init_fail_at_5(void *elem, size_t index, void *arg) {
        (void) arg;
        if (index == 5)
                return -EIO;
        *(int *) elem = (int) index;
        built++;
        return 0;
}

static void dtor_count(void *elem, size_t index) {
        ASSERT_EQ(*(int *) elem, (int) index);
        if (torn < 64)
                torn_order[torn] = index;
        torn++;
}

static void test_rollback_and_dtors(void) {
        void *buf;
        mseg *seg = new_seg(&buf);
        const mseg_type *dt = MSEG_TYPE_DTOR(int, dtor_count);
        int *p;

        built = torn = 0;
        ASSERT_NULL_ERRNO(mseg_construct(seg, "fails", dt, 10, init_fail_at_5, NULL), EIO);
        ASSERT_EQ(built, 5);
        ASSERT_EQ(torn, 5);                     /* the built ones, newest first */
        for (int i = 0; i < 5; i++)
                ASSERT_EQ(torn_order[i], 4 - i);
        ASSERT_NULL_ERRNO(mseg_find(seg, "fails", dt, NULL), ENOENT);
        ASSERT_EQ(mseg_named_count(seg), 0);
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        ASSERT_NULL_ERRNO(mseg_find_or_construct(seg, "fails", dt, 10, init_fail_at_5, NULL), EIO);
        ASSERT_NULL_ERRNO(mseg_construct_unique(seg, dt, 10, init_fail_at_5, NULL), EIO);
        ASSERT_NULL_ERRNO(mseg_construct_anonymous(seg, dt, 10, init_fail_at_5, NULL), EIO);
        ASSERT_EQ(mseg_unique_count(seg), 0);
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        ASSERT_OK(mseg_check(seg));

        /* Destructors run on destroy, destroy_unique and destroy_ptr. */
        built = torn = 0;
        p = mseg_construct(seg, "four", dt, 4, init_fail_at_5, NULL);
        ASSERT_NOT_NULL(p);
        ASSERT_OK(mseg_destroy(seg, "four", dt));
        ASSERT_EQ(torn, 4);
        torn = 0;
        p = mseg_construct_unique(seg, dt, 3, init_fail_at_5, NULL);
        ASSERT_NOT_NULL(p);
        ASSERT_OK(mseg_destroy_unique(seg, dt));
        ASSERT_EQ(torn, 3);
        torn = 0;
        p = mseg_construct(seg, "byptr", dt, 2, init_fail_at_5, NULL);
        ASSERT_NOT_NULL(p);
        ASSERT_OK(mseg_destroy_ptr(seg, p));    /* this process knows the type's destructor */
        ASSERT_EQ(torn, 2);
        torn = 0;
        p = mseg_construct_anonymous(seg, dt, 5, init_fail_at_5, NULL);
        ASSERT_NOT_NULL(p);
        ASSERT_OK(mseg_destroy_ptr(seg, p));
        ASSERT_EQ(torn, 5);
        done_seg(seg, buf);
}

/* ---- unique and anonymous ---- */

typedef struct counter {
        uint64_t n;
} counter;

static void test_unique_anonymous(void) {
        void *buf;
        mseg *seg = new_seg(&buf);
        const mseg_type *ct = MSEG_TYPE(counter);
        counter *u, *n, *a1, *a2;
        size_t count;

        u = mseg_construct_unique(seg, ct, 1, NULL, NULL);
        ASSERT_NOT_NULL(u);
        u->n = 7;
        ASSERT_NULL_ERRNO(mseg_construct_unique(seg, ct, 1, NULL, NULL), EEXIST);
        ASSERT(mseg_find_unique(seg, ct, &count) == u);
        ASSERT_EQ(count, 1);
        ASSERT(mseg_find_or_construct_unique(seg, ct, 1, NULL, NULL) == u);
        ASSERT_EQ(mseg_unique_count(seg), 1);
        ASSERT_EQ(mseg_named_count(seg), 0);
        ASSERT(strcmp(mseg_instance_name(seg, u), "counter") == 0);
        ASSERT_EQ(mseg_instance_kind(seg, u), MSEG_KIND_UNIQUE);
        ASSERT_EQ(mseg_instance_length(seg, u), 1);

        /* A named object called like the type is a different object. */
        ASSERT_NULL_ERRNO(mseg_find(seg, "counter", ct, NULL), ENOENT);
        n = mseg_construct(seg, "counter", ct, 2, NULL, NULL);
        ASSERT_NOT_NULL(n);
        ASSERT(n != u);
        ASSERT(mseg_find_unique(seg, ct, NULL) == u);
        ASSERT_EQ(mseg_instance_kind(seg, n), MSEG_KIND_NAMED);

        /* Anonymous objects: never found, destroyed by pointer. */
        a1 = mseg_construct_anonymous(seg, ct, 3, NULL, NULL);
        a2 = mseg_construct_anonymous(seg, ct, 1, NULL, NULL);
        ASSERT_NOT_NULL(a1);
        ASSERT_NOT_NULL(a2);
        ASSERT(a1 != a2);
        ASSERT_EQ(mseg_instance_kind(seg, a1), MSEG_KIND_ANONYMOUS);
        ASSERT_EQ(mseg_instance_length(seg, a1), 3);
        errno = 1234;
        ASSERT(mseg_instance_name(seg, a1) == NULL);
        ASSERT_EQ(errno, 0);
        ASSERT_EQ(mseg_named_count(seg), 1);
        ASSERT_EQ(mseg_unique_count(seg), 1);
        ASSERT_OK(mseg_check(seg));
        ASSERT_OK(mseg_destroy_ptr(seg, a1));
        ASSERT_ERR(mseg_destroy_ptr(seg, a1), -EINVAL);         /* twice */
        ASSERT_ERR(mseg_instance_kind(seg, a1), -EINVAL);
        ASSERT_OK(mseg_destroy_ptr(seg, a2));

        /* Bad pointers. */
        ASSERT_ERR(mseg_destroy_ptr(seg, NULL), -EINVAL);
        ASSERT_ERR(mseg_destroy_ptr(seg, &count), -EINVAL);
        ASSERT_ERR(mseg_destroy_ptr(seg, (char *) u + 16), -EINVAL);
        ASSERT_ERR(mseg_instance_kind(seg, &count), -EINVAL);
        ASSERT_EQ(mseg_instance_length(seg, (char *) n + 8), 0);
        ASSERT_NULL_ERRNO(mseg_instance_name(seg, mseg_address(seg)), EINVAL);

        ASSERT_OK(mseg_destroy_unique(seg, ct));
        ASSERT_ERR(mseg_destroy_unique(seg, ct), -ENOENT);
        ASSERT_NULL_ERRNO(mseg_find_unique(seg, ct, NULL), ENOENT);
        ASSERT_ERR(mseg_destroy_ptr(seg, u), -EINVAL);
        ASSERT(mseg_find(seg, "counter", ct, NULL) == n);
        ASSERT_OK(mseg_destroy_ptr(seg, n));
        ASSERT_NULL_ERRNO(mseg_find(seg, "counter", ct, NULL), ENOENT);
        done_seg(seg, buf);
}

/* ---- iteration ---- */

struct seen {
        int n;
        unsigned char hits[600];
        int kind;
};

static int on_object(const struct mseg_object_info *info, void *arg) {
        struct seen *s = arg;
        int i;

        ASSERT_EQ(info->kind, s->kind);
        if (info->kind == MSEG_KIND_NAMED) {
                ASSERT(sscanf(info->name, "it%d", &i) == 1);
                ASSERT(i >= 0 && i < 600);
                ASSERT_EQ(info->name_len, strlen(info->name));
                ASSERT(strcmp(info->type_name, "int") == 0);
                ASSERT_EQ(info->elem_size, sizeof(int));
                ASSERT_EQ(info->align, _Alignof(int));
                ASSERT_EQ(info->count, (size_t) i % 3 + 1);
                s->hits[i]++;
        }
        s->n++;
        return 0;
}

static int stop_at_3(const struct mseg_object_info *info, void *arg) {
        (void) info;
        return ++*(int *) arg == 3 ? 42 : 0;
}

static int destroy_each(const struct mseg_object_info *info, void *arg) {
        mseg *seg = arg;
        ASSERT_OK(mseg_destroy(seg, info->name, MSEG_TYPE(int)));
        return 0;
}

static void test_iteration(void) {
        void *buf;
        mseg *seg = new_seg(&buf);
        struct seen s = { .kind = MSEG_KIND_NAMED };
        char name[32];
        int stops = 0;
        void *anon;

        ASSERT_OK(mseg_foreach_named(seg, on_object, &s));
        ASSERT_EQ(s.n, 0);
        for (int i = 0; i < 600; i++) {
                snprintf(name, sizeof(name), "it%d", i);
                ASSERT_NOT_NULL(mseg_construct(seg, name, MSEG_TYPE(int), (size_t) i % 3 + 1, NULL, NULL));
        }
        for (int i = 0; i < 600; i += 2) {     /* leave tombstones behind */
                snprintf(name, sizeof(name), "it%d", i);
                ASSERT_OK(mseg_destroy(seg, name, MSEG_TYPE(int)));
        }
        ASSERT_NOT_NULL(mseg_construct_unique(seg, MSEG_TYPE(counter), 1, NULL, NULL));
        anon = mseg_construct_anonymous(seg, MSEG_TYPE(counter), 1, NULL, NULL);
        ASSERT_NOT_NULL(anon);
        ASSERT_OK(mseg_foreach_named(seg, on_object, &s));
        ASSERT_EQ(s.n, 300);
        for (int i = 0; i < 600; i++)
                ASSERT_EQ(s.hits[i], i % 2);
        memset(&s, 0, sizeof(s));
        s.kind = MSEG_KIND_UNIQUE;
        ASSERT_OK(mseg_foreach_unique(seg, on_object, &s));
        ASSERT_EQ(s.n, 1);
        ASSERT_EQ(mseg_foreach_named(seg, stop_at_3, &stops), 42);
        ASSERT_EQ(stops, 3);
        ASSERT_ERR(mseg_foreach_named(seg, NULL, NULL), -EINVAL);

        /* Callbacks may destroy what they are shown. */
        ASSERT_OK(mseg_foreach_named(seg, destroy_each, seg));
        ASSERT_EQ(mseg_named_count(seg), 0);
        ASSERT_OK(mseg_destroy_unique(seg, MSEG_TYPE(counter)));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 0);        /* the anonymous one */
        ASSERT_OK(mseg_destroy_ptr(seg, anon));
        done_seg(seg, buf);
}

/* ---- mseg_atomic and nesting ---- */

static int nested_init(void *elem, size_t index, void *arg) {
        mseg *seg = arg;
        char name[32];
        int *inner;

        snprintf(name, sizeof(name), "inner%zu", index);
        inner = mseg_construct(seg, name, MSEG_TYPE(int), 1, NULL, NULL);
        ASSERT_NOT_NULL(inner);
        *inner = (int) index;
        *(int *) elem = (int) index * 10;
        return 0;
}

static int atomic_body(mseg *seg, void *arg) {
        int *p;

        (void) arg;
        p = mseg_find_or_construct(seg, "atomic-a", MSEG_TYPE(int), 1, NULL, NULL);
        ASSERT_NOT_NULL(p);
        *p += 1;
        p = mseg_construct(seg, "nested", MSEG_TYPE(int), 3, nested_init, seg);
        ASSERT_NOT_NULL(p);
        ASSERT_OK(mseg_destroy(seg, "inner1", MSEG_TYPE(int)));
        ASSERT_OK(mseg_check(seg));
        return 17;
}

static int nested_fail(void *elem, size_t index, void *arg) {
        (void) elem;
        ASSERT_NOT_NULL(mseg_find_or_construct(arg, "made-by-failing-init", MSEG_TYPE(int), 1, NULL, NULL));
        return index == 1 ? -ENOSPC : 0;
}

static int self_init(void *elem, size_t index, void *arg) {
        (void) elem;
        (void) index;
        /* construct the name the outer construct is building */
        ASSERT_NOT_NULL(mseg_construct(arg, "self", MSEG_TYPE(int), 1, NULL, NULL));
        return 0;
}

static int deep_init(void *elem, size_t index, void *arg) {
        mseg *seg = arg;
        int *depth = elem;
        char name[32];
        static int level;
        void *p;

        (void) index;
        *depth = ++level;
        snprintf(name, sizeof(name), "deep%d", level);
        p = mseg_construct(seg, name, MSEG_TYPE(int), 1, deep_init, seg);
        level--;
        if (!p)
                return -errno;
        return 0;
}

static void test_atomic_nesting(void) {
        void *buf;
        mseg *seg = new_seg(&buf);
        int *p;
        char name[32];

        ASSERT_EQ(mseg_atomic(seg, atomic_body, NULL), 17);
        p = mseg_find(seg, "atomic-a", MSEG_TYPE(int), NULL);
        ASSERT_NOT_NULL(p);
        ASSERT_EQ(*p, 1);
        ASSERT_NOT_NULL(mseg_find(seg, "inner0", MSEG_TYPE(int), NULL));
        ASSERT_NULL_ERRNO(mseg_find(seg, "inner1", MSEG_TYPE(int), NULL), ENOENT);
        ASSERT_NOT_NULL(mseg_find(seg, "inner2", MSEG_TYPE(int), NULL));
        p = mseg_find(seg, "nested", MSEG_TYPE(int), NULL);
        ASSERT_EQ(p[2], 20);
        ASSERT_ERR(mseg_atomic(seg, NULL, NULL), -EINVAL);
        ASSERT_ERR(mseg_atomic(NULL, atomic_body, NULL), -EINVAL);

        /* A failing init rolls back its own object only. */
        ASSERT_NULL_ERRNO(mseg_construct(seg, "outer-fails", MSEG_TYPE(int), 3, nested_fail, seg), ENOSPC);
        ASSERT_NULL_ERRNO(mseg_find(seg, "outer-fails", MSEG_TYPE(int), NULL), ENOENT);
        ASSERT_NOT_NULL(mseg_find(seg, "made-by-failing-init", MSEG_TYPE(int), NULL));

        /* init creating the very name being constructed: the outer one loses. */
        ASSERT_NULL_ERRNO(mseg_construct(seg, "self", MSEG_TYPE(int), 1, self_init, seg), EEXIST);
        ASSERT_NOT_NULL(mseg_find(seg, "self", MSEG_TYPE(int), NULL));

        /* Nesting has a limit and reports it. */
        ASSERT_NULL_ERRNO(mseg_construct(seg, "deep0", MSEG_TYPE(int), 1, deep_init, seg), ELOOP);
        ASSERT_NULL_ERRNO(mseg_find(seg, "deep0", MSEG_TYPE(int), NULL), ENOENT);
        ASSERT_OK(mseg_check(seg));

        const char *names[] = { "atomic-a", "inner0", "inner2", "nested", "made-by-failing-init", "self" };
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                ASSERT_OK(mseg_destroy(seg, names[i], MSEG_TYPE(int)));
        for (int i = 0; i < 10; i++) {
                snprintf(name, sizeof(name), "deep%d", i);
                ASSERT_NULL_ERRNO(mseg_find(seg, name, MSEG_TYPE(int), NULL), ENOENT);
        }
        done_seg(seg, buf);
}

/* ---- growth, reservation, counts ---- */

static void test_growth_reserve(void) {
        void *buf;
        mseg *seg = new_seg(&buf);
        char name[32];
        const int n = 5000;

        ASSERT_OK(mseg_reserve_named(seg, 3000));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 0);         /* the reserved index */
        for (int round = 0; round < 3; round++) {
                for (int i = 0; i < n; i++) {
                        snprintf(name, sizeof(name), "g%d", i);
                        int *p = mseg_construct(seg, name, MSEG_TYPE(int), 1, NULL, NULL);
                        ASSERT_NOT_NULL(p);
                        *p = i;
                }
                ASSERT_EQ(mseg_named_count(seg), n);
                ASSERT_OK(mseg_check(seg));
                for (int i = 0; i < n; i++) {
                        snprintf(name, sizeof(name), "g%d", i);
                        int *p = mseg_find(seg, name, MSEG_TYPE(int), NULL);
                        ASSERT_NOT_NULL(p);
                        ASSERT_EQ(*p, i);
                }
                for (int i = 0; i < n; i++) {
                        snprintf(name, sizeof(name), "g%d", (i * 7919) % n);
                        ASSERT_OK(mseg_destroy(seg, name, MSEG_TYPE(int)));
                        if (i % 1000 == 0)
                                ASSERT_OK(mseg_check(seg));
                }
                ASSERT_EQ(mseg_named_count(seg), 0);
                ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        }
        ASSERT_ERR(mseg_reserve_named(NULL, 1), -EINVAL);
        /* A reservation that cannot be met fails and leaves no floor behind. */
        ASSERT_ERR(mseg_reserve_named(seg, (size_t) 1 << 30), -ENOMEM);
        ASSERT_NOT_NULL(mseg_construct(seg, "after-big-reserve", MSEG_TYPE(int), 1, NULL, NULL));
        ASSERT_OK(mseg_destroy(seg, "after-big-reserve", MSEG_TYPE(int)));
        done_seg(seg, buf);
}

/* ---- read-only mappings ---- */

static void test_read_only(void) {
        char path[] = "/tmp/mseg-test-registry-XXXXXX";
        struct mseg_options o = { .size = 1 << 20 };
        mseg *rw, *ro;
        int fd = mkstemp(path), *p;
        struct seen s = { .kind = MSEG_KIND_NAMED };
        size_t count;

        ASSERT(fd >= 0);
        close(fd);
        unlink(path);
        ASSERT_OK(mseg_file_open(&rw, path, MSEG_CREATE_ONLY, &o));
        p = mseg_construct(rw, "it1", MSEG_TYPE(int), 2, NULL, NULL);
        ASSERT_NOT_NULL(p);
        p[1] = 99;
        o.flags = MSEG_READ_ONLY;
        ASSERT_OK(mseg_file_open(&ro, path, MSEG_OPEN_ONLY, &o));
        ASSERT_EQ(mseg_is_read_only(ro), 1);
        p = mseg_find(ro, "it1", MSEG_TYPE(int), &count);
        ASSERT_NOT_NULL(p);
        ASSERT_EQ(count, 2);
        ASSERT_EQ(p[1], 99);
        ASSERT_NULL_ERRNO(mseg_find(ro, "it1", MSEG_TYPE(long), NULL), EPROTOTYPE);
        ASSERT_NULL_ERRNO(mseg_find(ro, "it2", MSEG_TYPE(int), NULL), ENOENT);
        ASSERT(mseg_find_or_construct(ro, "it1", MSEG_TYPE(int), 1, NULL, NULL) == p);
        ASSERT_NULL_ERRNO(mseg_find_or_construct(ro, "it2", MSEG_TYPE(int), 1, NULL, NULL), EROFS);
        ASSERT_NULL_ERRNO(mseg_construct(ro, "it2", MSEG_TYPE(int), 1, NULL, NULL), EROFS);
        ASSERT_NULL_ERRNO(mseg_construct_anonymous(ro, MSEG_TYPE(int), 1, NULL, NULL), EROFS);
        ASSERT_ERR(mseg_destroy(ro, "it1", MSEG_TYPE(int)), -EROFS);
        ASSERT_ERR(mseg_destroy_ptr(ro, p), -EROFS);
        ASSERT_ERR(mseg_atomic(ro, atomic_body, NULL), -EROFS);
        ASSERT_ERR(mseg_reserve_named(ro, 10), -EROFS);
        ASSERT_EQ(mseg_instance_kind(ro, p), MSEG_KIND_NAMED);
        ASSERT(strcmp(mseg_instance_name(ro, p), "it1") == 0);
        ASSERT_EQ(mseg_named_count(ro), 1);
        s.hits[1] = 0;
        ASSERT_OK(mseg_foreach_named(ro, on_object, &s));
        ASSERT_EQ(s.n, 1);
        ASSERT_OK(mseg_check(ro));
        ASSERT_OK(mseg_wait_name(ro, "it1", MSEG_TYPE(int), 0));
        ASSERT_ERR(mseg_wait_name(ro, "it2", MSEG_TYPE(int), 20), -ETIMEDOUT);
        mseg_close(ro);
        ASSERT_OK(mseg_destroy(rw, "it1", MSEG_TYPE(int)));
        ASSERT_EQ(mseg_all_memory_deallocated(rw), 1);
        mseg_close(rw);
        unlink(path);
}

/* ---- a heap segment moves when it grows; names follow ---- */

static void test_heap_moves(void) {
        mseg *seg;
        char name[32];
        int *p;

        ASSERT_OK(mseg_heap_create(&seg, 1 << 20));
        for (int i = 0; i < 200; i++) {
                snprintf(name, sizeof(name), "h%d", i);
                p = mseg_construct(seg, name, MSEG_TYPE(int), 1, NULL, NULL);
                ASSERT_NOT_NULL(p);
                *p = i;
        }
        ASSERT_OK(mseg_heap_grow(seg, 16 << 20));
        for (int i = 0; i < 200; i++) {
                snprintf(name, sizeof(name), "h%d", i);
                p = mseg_find(seg, name, MSEG_TYPE(int), NULL);
                ASSERT_NOT_NULL(p);
                ASSERT_EQ(*p, i);
        }
        ASSERT_OK(mseg_check(seg));
        for (int i = 0; i < 200; i++) {
                snprintf(name, sizeof(name), "h%d", i);
                ASSERT_OK(mseg_destroy(seg, name, MSEG_TYPE(int)));
        }
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        mseg_close(seg);
}

/* ---- bytes copied elsewhere keep their names ---- */

/* A segment image includes free blocks, which an allocator built with
 * expensive checks poisons for AddressSanitizer: copy it unchecked. */
#if defined(__SANITIZE_ADDRESS__)
__attribute__((no_sanitize_address))
#endif
static void copy_image(void *dst, const void *src, size_t n) {
        const volatile uint8_t *s = src;
        uint8_t *d = dst;

        for (size_t i = 0; i < n; i++)
                d[i] = s[i];
}

static void test_copy(void) {
        void *buf, *copy = map_shared(SEG_SIZE);
        mseg *seg = new_seg(&buf), *c;
        int *p;

        p = mseg_construct(seg, "travels", MSEG_TYPE(int), 1, NULL, NULL);
        ASSERT_NOT_NULL(p);
        *p = 4242;
        copy_image(copy, buf, SEG_SIZE);
        ASSERT_OK(mseg_buffer_attach(&c, copy, SEG_SIZE));
        p = mseg_find(c, "travels", MSEG_TYPE(int), NULL);
        ASSERT_NOT_NULL(p);
        ASSERT(p != mseg_find(seg, "travels", MSEG_TYPE(int), NULL));
        ASSERT_EQ(*p, 4242);
        ASSERT_OK(mseg_check(c));
        ASSERT_OK(mseg_destroy(c, "travels", MSEG_TYPE(int)));
        ASSERT_EQ(mseg_all_memory_deallocated(c), 1);
        mseg_close(c);
        munmap(copy, SEG_SIZE);
        ASSERT_OK(mseg_destroy(seg, "travels", MSEG_TYPE(int)));
        done_seg(seg, buf);
}

int main(void) {
        test_basics();
        test_names();
        test_alignment();
        test_rollback_and_dtors();
        test_unique_anonymous();
        test_iteration();
        test_atomic_nesting();
        test_growth_reserve();
        test_read_only();
        test_heap_moves();
        test_copy();
        printf("test-registry: ok\n");
        return 0;
}
