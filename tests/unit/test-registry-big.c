/* SPDX-License-Identifier: MIT */
/*
 * test-registry-big: the index from 0 to 1,000,000 names and back to 0.
 *
 * Every name is found (in a shuffled order) with its own value, iteration
 * sees each exactly once, mseg_check walks the full index, and when the
 * last name is destroyed the segment holds no block at all (the index
 * table is freed with the last name). The time per operation near 1,000
 * names and near 1,000,000 is printed, to show the index stays O(1); it is
 * a report, not a pass/fail criterion (timed assertions are flaky on a
 * shared machine).
 */
#include "test-registry-common.h"

#define N 1000000
#define SEG_SIZE ((uint64_t) 256 << 20)

static const mseg_type int_type = { "int", sizeof(int), _Alignof(int), NULL };

static void name_of(char *buf, size_t n, uint32_t i) {
        snprintf(buf, n, "big/%u", i);
}

static int on_name(const struct mseg_object_info *info, void *arg) {
        uint8_t *seen = arg;
        unsigned i;

        ASSERT(sscanf(info->name, "big/%u", &i) == 1 && i < N);
        ASSERT_EQ(seen[i], 0);
        seen[i] = 1;
        return 0;
}

int main(void) {
        void *buf = shared_area(SEG_SIZE);
        uint32_t *perm = malloc(N * sizeof(*perm));
        uint8_t *seen = calloc(N, 1);
        uint64_t rng = 42, t0 = 0, t_small = 0, t_big = 0;
        char name[32];
        mseg *seg;

        ASSERT(perm && seen);
        ASSERT_OK(mseg_buffer_create(&seg, buf, SEG_SIZE));
        for (uint32_t i = 0; i < N; i++)
                perm[i] = i;
        for (uint32_t i = N - 1; i > 0; i--) {
                uint32_t j = (uint32_t) (test_rand(&rng) % (i + 1)), t = perm[i];
                perm[i] = perm[j];
                perm[j] = t;
        }

        for (uint32_t i = 0; i < N; i++) {
                int *p;

                if (i == 0 || i == N - 100000)
                        t0 = now_ns();
                name_of(name, sizeof(name), i);
                p = mseg_construct(seg, name, &int_type, 1, NULL, NULL);
                ASSERT_NOT_NULL(p);
                *p = (int) i;
                if (i == 999)
                        t_small = (now_ns() - t0) / 1000;
        }
        t_big = (now_ns() - t0) / 100000;
        printf("construct: %llu ns/op for the first 1,000 names, %llu ns/op for the last 100,000\n",
               (unsigned long long) t_small, (unsigned long long) t_big);
        ASSERT_EQ(mseg_named_count(seg), N);
        ASSERT_OK(mseg_check(seg));

        t0 = now_ns();
        for (uint32_t k = 0; k < N; k++) {
                uint32_t i = perm[k];
                size_t count = 0;
                int *p;

                name_of(name, sizeof(name), i);
                p = mseg_find(seg, name, &int_type, &count);
                ASSERT_NOT_NULL(p);
                ASSERT_EQ(count, 1);
                ASSERT_EQ(*p, (int) i);
        }
        printf("find at 1,000,000 names: %llu ns/op (shuffled order)\n",
               (unsigned long long) (now_ns() - t0) / N);
        name_of(name, sizeof(name), N);
        ASSERT(mseg_find(seg, name, &int_type, NULL) == NULL && errno == ENOENT);

        ASSERT_OK(mseg_foreach_named(seg, on_name, seen));
        for (uint32_t i = 0; i < N; i++)
                ASSERT_EQ(seen[i], 1);

        t0 = now_ns();
        for (uint32_t k = 0; k < N; k++) {
                name_of(name, sizeof(name), perm[k]);
                ASSERT_OK(mseg_destroy(seg, name, &int_type));
                if (k == N / 2 || k == N - 10)
                        ASSERT_OK(mseg_check(seg));
        }
        printf("destroy down from 1,000,000 names: %llu ns/op\n", (unsigned long long) (now_ns() - t0) / N);
        ASSERT_EQ(mseg_named_count(seg), 0);
        ASSERT_OK(mseg_check(seg));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        mseg_close(seg);
        free(perm);
        free(seen);
        printf("test-registry-big: ok\n");
        return 0;
}
