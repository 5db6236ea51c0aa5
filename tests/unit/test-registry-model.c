/* SPDX-License-Identifier: MIT */
/*
 * test-registry-model: random construct / find / find_or_construct /
 * destroy / destroy_ptr of named, unique and anonymous objects, checked
 * against a model (a hash table in this test) after every operation, with
 * mseg_check and a full iteration compare after every phase.
 *
 * Names are random byte strings of 1..255 bytes (any byte but NUL), drawn
 * from a pool so that the same name comes back often; types differ in
 * name, size and alignment so that mismatches happen; some inits fail at a
 * random element; contents follow a pattern from a per-object seed, and
 * every object the model holds is verified at the end of each phase. The
 * segment is small enough that ENOMEM happens too, and must change nothing.
 */
#include <stdbool.h>

#include "test-registry-common.h"

#define POOL 1500
#define PHASES 40
#define OPS_PER_PHASE 5000
#define SEG_SIZE ((uint64_t) 6 << 20)

typedef struct t_small { uint8_t b[3]; } t_small;
typedef struct t_pair { uint64_t a, b; } t_pair;
typedef struct t_wide { _Alignas(64) uint64_t v[8]; } t_wide;

static const mseg_type types[] = {
        { "int32", 4, 4, NULL },
        { "t_pair", sizeof(t_pair), _Alignof(t_pair), NULL },
        { "t_small", sizeof(t_small), 1, NULL },
        { "t_wide", sizeof(t_wide), _Alignof(t_wide), NULL },
        { "int32_again", 4, 4, NULL },          /* same shape as int32, other name */
};
#define NTYPES ((int) (sizeof(types) / sizeof(types[0])))

/* Unique types: one per name, each of the shape of types[i % NTYPES]. */
#define NUNIQUE 12
static char unique_names[NUNIQUE][16];
static mseg_type unique_types[NUNIQUE];

struct obj {
        bool live;
        int kind;
        int type;               /* index in types[] or unique_types[] */
        size_t count;
        uint64_t seed;
        void *p;
};

/* model: named objects by pool index, unique objects by unique index,
 * anonymous objects in a list. */
static struct obj named[POOL], uniq[NUNIQUE];
#define MAXANON 256
static struct obj anon[MAXANON];
static char *pool[POOL];
static uint64_t rng = 7;
static int fail_at = -1;

static const mseg_type *type_of(const struct obj *o) {
        return o->kind == MSEG_KIND_UNIQUE ? &unique_types[o->type] : &types[o->type];
}

static void fill(uint8_t *p, size_t bytes, uint64_t seed) {
        for (size_t i = 0; i < bytes; i++)
                p[i] = (uint8_t) mix64(seed + i);
}

static void verify(const struct obj *o) {
        const uint8_t *p = o->p;
        size_t bytes = o->count * type_of(o)->size;

        for (size_t i = 0; i < bytes; i++)
                if (p[i] != (uint8_t) mix64(o->seed + i))
                        FAIL("object contents damaged at byte %zu", i);
}

struct init_arg {
        size_t elem_size;
        uint64_t seed;
};

static int init_fill(void *elem, size_t index, void *arg) {
        struct init_arg *a = arg;

        if ((int) index == fail_at)
                return -ECANCELED;
        for (size_t i = 0; i < a->elem_size; i++)
                ((uint8_t *) elem)[i] = (uint8_t) mix64(a->seed + index * a->elem_size + i);
        return 0;
}

static void make_pool(void) {
        for (int i = 0; i < POOL; i++) {
                bool dup;
                char *s;

                do {
                        uint64_t x = test_rand(&rng);
                        size_t len = x % 8 == 0 ? 1 + (x >> 8) % 255 : 1 + (x >> 8) % 24;

                        s = malloc(len + 1);
                        ASSERT(s);
                        for (size_t j = 0; j < len; j++)
                                s[j] = (char) (1 + test_rand(&rng) % 255);
                        s[len] = 0;
                        /* a duplicate would alias two model slots: draw again */
                        dup = false;
                        for (int k = 0; k < i && !dup; k++)
                                dup = strcmp(pool[k], s) == 0;
                        if (dup)
                                free(s);
                } while (dup);
                pool[i] = s;
        }
        for (int i = 0; i < NUNIQUE; i++) {
                snprintf(unique_names[i], sizeof(unique_names[i]), "U%d", i);
                unique_types[i] = types[i % NTYPES];
                unique_types[i].name = unique_names[i];
        }
}

/* Construct something in *o (named or unique): expected outcomes follow
 * the model. or_find: find_or_construct. */
static void do_construct(mseg *seg, struct obj *o, int kind, const char *name, int type, bool or_find) {
        const mseg_type *t = kind == MSEG_KIND_UNIQUE ? &unique_types[type] : &types[type];
        uint64_t c = test_rand(&rng);
        size_t count = c % 64 == 0 ? 1000 + (c >> 8) % 12000 : c % 9;     /* sometimes big */
        struct init_arg a = { t->size, test_rand(&rng) };
        bool with_init = test_rand(&rng) % 4 != 0;
        void *p;

        fail_at = test_rand(&rng) % 16 == 0 && count ? (int) (test_rand(&rng) % count) : -1;
        if (!with_init)
                a.seed = 0;
        errno = 0;
        if (kind == MSEG_KIND_UNIQUE)
                p = or_find ? mseg_find_or_construct_unique(seg, t, count, with_init ? init_fill : NULL, &a)
                            : mseg_construct_unique(seg, t, count, with_init ? init_fill : NULL, &a);
        else
                p = or_find ? mseg_find_or_construct(seg, name, t, count, with_init ? init_fill : NULL, &a)
                            : mseg_construct(seg, name, t, count, with_init ? init_fill : NULL, &a);
        if (o->live) {
                bool same_type = kind == MSEG_KIND_UNIQUE || o->type == type;
                if (!or_find) {
                        if (p || errno != EEXIST)
                                FAIL("construct of a live name: %p errno %d", p, errno);
                } else if (same_type) {
                        ASSERT(p == o->p);
                } else {
                        ASSERT(p == NULL && errno == EPROTOTYPE);
                }
                return;
        }
        if (!p) {
                if (errno == ENOMEM)
                        return;         /* the segment is full: nothing changed */
                if (with_init && fail_at >= 0 && errno == ECANCELED)
                        return;
                FAIL("construct failed: errno %d (%s)", errno, mseg_last_error());
        }
        ASSERT(!(with_init && fail_at >= 0));
        ASSERT_EQ((uintptr_t) p % t->align, 0);
        *o = (struct obj){ .live = true, .kind = kind, .type = type, .count = count, .seed = a.seed, .p = p };
        if (!with_init) {
                for (size_t i = 0; i < count * t->size; i++)
                        ASSERT_EQ(((uint8_t *) p)[i], 0);
                o->seed = test_rand(&rng);
                fill(p, count * t->size, o->seed);
        }
        ASSERT_EQ(mseg_instance_kind(seg, p), kind);
        ASSERT_EQ(mseg_instance_length(seg, p), count);
}

static void do_find(mseg *seg, struct obj *o, int kind, const char *name, int type) {
        const mseg_type *t = kind == MSEG_KIND_UNIQUE ? &unique_types[type] : &types[type];
        size_t count = 12345;
        void *p;
        int e;

        errno = 0;
        p = kind == MSEG_KIND_UNIQUE ? mseg_find_unique(seg, t, &count) : mseg_find(seg, name, t, &count);
        e = errno;
        if (!o->live) {
                ASSERT(p == NULL && e == ENOENT);
                ASSERT_EQ(count, 12345);        /* untouched on failure */
        } else if (kind == MSEG_KIND_NAMED && o->type != type) {
                ASSERT(p == NULL && e == EPROTOTYPE);
        } else {
                ASSERT(p == o->p);
                ASSERT_EQ(count, o->count);
        }
}

static void do_destroy(mseg *seg, struct obj *o, int kind, const char *name, int type, bool by_ptr) {
        const mseg_type *t = kind == MSEG_KIND_UNIQUE ? &unique_types[type] : &types[type];
        int r;

        if (by_ptr) {
                if (!o->live)
                        return;
                verify(o);
                ASSERT_OK(mseg_destroy_ptr(seg, o->p));
                o->live = false;
                return;
        }
        r = kind == MSEG_KIND_UNIQUE ? mseg_destroy_unique(seg, t) : mseg_destroy(seg, name, t);
        if (!o->live) {
                ASSERT_ERR(r, -ENOENT);
        } else if (kind == MSEG_KIND_NAMED && o->type != type) {
                ASSERT_ERR(r, -EPROTOTYPE);
        } else {
                ASSERT_OK(r);
                o->live = false;
        }
}

/* ---- iteration against the model ---- */

struct walk {
        mseg *seg;
        int kind;
        int seen;
        unsigned char *hit;
};

static int on_obj(const struct mseg_object_info *info, void *arg) {
        struct walk *w = arg;
        struct obj *o = NULL;
        int idx = -1;

        ASSERT_EQ(info->kind, w->kind);
        if (w->kind == MSEG_KIND_NAMED) {
                for (int i = 0; i < POOL && idx < 0; i++)
                        if (named[i].live && strcmp(pool[i], info->name) == 0)
                                idx = i;
                ASSERT(idx >= 0);
                o = &named[idx];
        } else {
                ASSERT(sscanf(info->name, "U%d", &idx) == 1 && idx >= 0 && idx < NUNIQUE);
                o = &uniq[idx];
                ASSERT(o->live);
        }
        ASSERT_EQ(info->name_len, strlen(info->name));
        ASSERT(strcmp(info->type_name, type_of(o)->name) == 0);
        ASSERT_EQ(info->elem_size, type_of(o)->size);
        ASSERT_EQ(info->align, type_of(o)->align);
        ASSERT_EQ(info->count, o->count);
        ASSERT(mseg_ptr(w->seg, info->handle) == o->p);
        ASSERT_EQ(w->hit[idx], 0);              /* exactly once */
        w->hit[idx] = 1;
        w->seen++;
        return 0;
}

static void check_phase(mseg *seg) {
        unsigned char hit_named[POOL] = { 0 }, hit_unique[NUNIQUE] = { 0 };
        struct walk wn = { seg, MSEG_KIND_NAMED, 0, hit_named }, wu = { seg, MSEG_KIND_UNIQUE, 0, hit_unique };
        int live_named = 0, live_unique = 0;

        ASSERT_OK(mseg_check(seg));
        for (int i = 0; i < POOL; i++)
                if (named[i].live) {
                        live_named++;
                        verify(&named[i]);
                        ASSERT(strcmp(mseg_instance_name(seg, named[i].p), pool[i]) == 0);
                        ASSERT(mseg_ptr(seg, mseg_handle_of(seg, named[i].p)) == named[i].p);
                }
        for (int i = 0; i < NUNIQUE; i++)
                if (uniq[i].live) {
                        live_unique++;
                        verify(&uniq[i]);
                        ASSERT(strcmp(mseg_instance_name(seg, uniq[i].p), unique_names[i]) == 0);
                }
        for (int i = 0; i < MAXANON; i++)
                if (anon[i].live)
                        verify(&anon[i]);
        ASSERT_EQ(mseg_named_count(seg), live_named);
        ASSERT_EQ(mseg_unique_count(seg), live_unique);
        ASSERT_OK(mseg_foreach_named(seg, on_obj, &wn));
        ASSERT_OK(mseg_foreach_unique(seg, on_obj, &wu));
        ASSERT_EQ(wn.seen, live_named);
        ASSERT_EQ(wu.seen, live_unique);
}

int main(void) {
        void *buf = shared_area(SEG_SIZE);
        mseg *seg;
        int enomem = 0;

        make_pool();
        ASSERT_OK(mseg_buffer_create(&seg, buf, SEG_SIZE));
        for (int phase = 0; phase < PHASES; phase++) {
                /* Phases alternate a bias toward growing and shrinking. */
                int grow = phase % 4 < 2 ? 3 : 1;

                for (int op = 0; op < OPS_PER_PHASE; op++) {
                        uint64_t x = test_rand(&rng);
                        int i = (int) (x % POOL), u = (int) ((x >> 16) % NUNIQUE);
                        int type = (int) ((x >> 24) % NTYPES), what = (int) ((x >> 32) % (8 + grow * 2));

                        switch (what) {
                        case 0:
                                do_find(seg, &named[i], MSEG_KIND_NAMED, pool[i], type);
                                break;
                        case 1:
                                do_find(seg, &named[i], MSEG_KIND_NAMED, pool[i], named[i].live ? named[i].type : type);
                                break;
                        case 2:
                                do_destroy(seg, &named[i], MSEG_KIND_NAMED, pool[i], named[i].live && x & 1 ? named[i].type : type, false);
                                break;
                        case 3:
                                do_destroy(seg, &named[i], MSEG_KIND_NAMED, pool[i], type, true);
                                break;
                        case 4:
                                if (x >> 40 & 1)
                                        do_find(seg, &uniq[u], MSEG_KIND_UNIQUE, NULL, u);
                                else if (x >> 41 & 1)
                                        do_destroy(seg, &uniq[u], MSEG_KIND_UNIQUE, NULL, u, x >> 42 & 1);
                                else
                                        do_construct(seg, &uniq[u], MSEG_KIND_UNIQUE, NULL, u, x >> 43 & 1);
                                break;
                        case 5: {
                                struct obj *a = &anon[(x >> 16) % MAXANON];
                                if (a->live) {
                                        do_destroy(seg, a, MSEG_KIND_ANONYMOUS, NULL, a->type, true);
                                } else {
                                        size_t count = 1 + (x >> 48) % 5;
                                        a->p = mseg_construct_anonymous(seg, &types[type], count, NULL, NULL);
                                        if (!a->p) {
                                                ASSERT_EQ(errno, ENOMEM);
                                                break;
                                        }
                                        *a = (struct obj){ .live = true, .kind = MSEG_KIND_ANONYMOUS, .type = type,
                                                           .count = count, .seed = x, .p = a->p };
                                        fill(a->p, count * types[type].size, a->seed);
                                        errno = 0;
                                        ASSERT(mseg_instance_name(seg, a->p) == NULL && errno == 0);
                                }
                                break;
                        }
                        default: {
                                size_t before = mseg_named_count(seg);
                                do_construct(seg, &named[i], MSEG_KIND_NAMED, pool[i], type, what & 1);
                                if (!named[i].live && mseg_named_count(seg) == before && errno == ENOMEM)
                                        enomem++;
                                break;
                        }
                        }
                }
                check_phase(seg);
        }
        /* Everything goes; every byte comes back. */
        for (int i = 0; i < POOL; i++)
                do_destroy(seg, &named[i], MSEG_KIND_NAMED, pool[i], named[i].type, i & 1);
        for (int u = 0; u < NUNIQUE; u++)
                do_destroy(seg, &uniq[u], MSEG_KIND_UNIQUE, NULL, u, u & 1);
        for (int i = 0; i < MAXANON; i++)
                do_destroy(seg, &anon[i], MSEG_KIND_ANONYMOUS, NULL, 0, true);
        check_phase(seg);
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        mseg_close(seg);
        printf("test-registry-model: ok (%d phases of %d operations; %d constructions hit ENOMEM)\n", PHASES,
               OPS_PER_PHASE, enomem);
        for (int i = 0; i < POOL; i++)
                free(pool[i]);
        return 0;
}
