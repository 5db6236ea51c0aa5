/* SPDX-License-Identifier: MIT */
/*
 * common.h — what every benchmark program shares, so that each implementation
 * does exactly the same work (BENCH.md): the xorshift64* generator and its
 * reference values, the workload parameters, the clock, the RESULT line, and
 * the small process plumbing (pipes, percentiles) used by W2, W4 and W7.
 *
 * It is included by mseg-bench.c (C) and boost-bench.cpp (C++), so it keeps
 * to the common subset of both languages: static inline functions, no
 * designated initialisers, explicit casts from void *.
 */
#ifndef MSEG_BENCH_COMMON_H
#define MSEG_BENCH_COMMON_H

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------- workloads */

#define BENCH_MIB ((uint64_t) 1 << 20)
#define BENCH_SEED 42u

/* Ring churn parameters (W1, W2, W5). */
struct bench_ring_params {
        uint64_t seg_size;
        unsigned ring_len;
        uint64_t lo, hi;
        uint64_t steps;
};

static const struct bench_ring_params BENCH_W1 = { 256 * BENCH_MIB, 10000, 16, 512, 5000000 };
static const struct bench_ring_params BENCH_W2 = { 256 * BENCH_MIB, 10000, 16, 512, 2500000 };
static const struct bench_ring_params BENCH_W5 = { 1024 * BENCH_MIB, 100, 4096, 1048576, 200000 };

#define BENCH_W2_PROCS 2
#define BENCH_W3_N 100000
#define BENCH_W3_SEG (256 * BENCH_MIB)
#define BENCH_W4_SEG (64 * BENCH_MIB)
#define BENCH_W4_ROUNDS 10000
#define BENCH_W6_SEG (64 * BENCH_MIB)
#define BENCH_W7_SEG (64 * BENCH_MIB)
#define BENCH_W7_CLIENTS 1000
#define BENCH_W7_OPS 100000

/* The checksums BENCH.md fixes: the sum of the sizes asked for in the timed
 * steps. Every implementation must print these. */
#define BENCH_W1_CHECKSUM UINT64_C(1320409816)
#define BENCH_W5_CHECKSUM UINT64_C(105311147938)
#define BENCH_W2_CHECKSUM_SEED42 UINT64_C(660360801)
#define BENCH_W2_CHECKSUM_SEED43 UINT64_C(659780687)

/* W3's object: 64 bytes, zero-initialised at construction. */
typedef struct bench_obj {
        uint64_t v[8];
} bench_obj;

/* ------------------------------------------------------------- generator */

/* xorshift64* with a 64-bit state (BENCH.md "Random numbers"). */
struct bench_rng {
        uint64_t state;
};

static inline void bench_rng_init(struct bench_rng *r, uint64_t seed) {
        r->state = seed;
}

static inline uint64_t bench_rng_next(struct bench_rng *r) {
        r->state ^= r->state >> 12;
        r->state ^= r->state << 25;
        r->state ^= r->state >> 27;
        return r->state * UINT64_C(0x2545F4914F6CDD1D);
}

/* Inclusive on both ends. */
static inline uint64_t bench_uniform(struct bench_rng *r, uint64_t lo, uint64_t hi) {
        return lo + bench_rng_next(r) % (hi - lo + 1);
}

/* W3's order of find and destroy: a Fisher-Yates permutation from a fresh
 * generator seeded with 42. */
static inline void bench_perm(uint32_t *perm, uint32_t n) {
        struct bench_rng r;
        uint32_t i;

        bench_rng_init(&r, BENCH_SEED);
        for (i = 0; i < n; i++)
                perm[i] = i;
        for (i = n - 1; i >= 1; i--) {
                uint32_t j = (uint32_t) (bench_rng_next(&r) % ((uint64_t) i + 1));
                uint32_t t = perm[i];
                perm[i] = perm[j];
                perm[j] = t;
        }
}

/* Check the generator against BENCH.md's reference values. Returns 0, or
 * prints what differs and returns -1: a benchmark with a wrong generator
 * would compare different work. */
static inline int bench_rng_selftest(void) {
        static const uint64_t outs[3] = { UINT64_C(6255019084209693600), UINT64_C(14430073426741505498),
                                          UINT64_C(14575455857230217846) };
        static const uint64_t small[5] = { 371, 142, 290, 232, 260 };
        static const uint64_t large[5] = { 747253, 683834, 60744, 730500, 129442 };
        static const uint32_t perm5[5] = { 77803, 87264, 46469, 78918, 37063 };
        struct bench_rng r;
        uint32_t *perm;
        int i, bad = 0;

        bench_rng_init(&r, BENCH_SEED);
        for (i = 0; i < 3; i++)
                bad |= bench_rng_next(&r) != outs[i];
        bench_rng_init(&r, BENCH_SEED);
        for (i = 0; i < 5; i++)
                bad |= bench_uniform(&r, 16, 512) != small[i];
        bench_rng_init(&r, BENCH_SEED);
        for (i = 0; i < 5; i++)
                bad |= bench_uniform(&r, 4096, 1048576) != large[i];
        perm = (uint32_t *) malloc(BENCH_W3_N * sizeof *perm);
        if (!perm)
                return -1;
        bench_perm(perm, BENCH_W3_N);
        for (i = 0; i < 5; i++)
                bad |= perm[i] != perm5[i];
        free(perm);
        if (bad) {
                fprintf(stderr, "bench: the generator does not reproduce BENCH.md's reference values\n");
                return -1;
        }
        return 0;
}

/* ---------------------------------------------------------------- clock */

static inline uint64_t bench_now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * UINT64_C(1000000000) + (uint64_t) ts.tv_nsec;
}

/* --------------------------------------------------------------- output */

/* One figure with @decimals digits after the point. */
static inline void bench_result(const char *impl, const char *workload, const char *metric,
                                int decimals, double value) {
        printf("RESULT %s %s %s %.*f\n", impl, workload, metric, decimals, value);
        fflush(stdout);
}

static inline void bench_result_u64(const char *impl, const char *workload, const char *metric,
                                    uint64_t value) {
        printf("RESULT %s %s %s %" PRIu64 "\n", impl, workload, metric, value);
        fflush(stdout);
}

/* Print a checksum line and compare it with the expected value; a mismatch
 * means this implementation did different work. Returns 0 or -1. */
static inline int bench_checksum(const char *impl, const char *workload, const char *metric,
                                 uint64_t got, uint64_t want) {
        bench_result_u64(impl, workload, metric, got);
        if (got != want) {
                fprintf(stderr, "%s %s: %s is %" PRIu64 ", BENCH.md says %" PRIu64 "\n",
                        impl, workload, metric, got, want);
                return -1;
        }
        return 0;
}

/* ------------------------------------------------------- process plumbing */

static inline int bench_write_full(int fd, const void *buf, size_t len) {
        const char *p = (const char *) buf;

        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return -1;
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

/* Returns 0, or -1 on error or end of file (a peer that died). */
static inline int bench_read_full(int fd, void *buf, size_t len) {
        char *p = (char *) buf;

        while (len > 0) {
                ssize_t n = read(fd, p, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return -1;
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

static inline int bench_cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

        return x < y ? -1 : x > y;
}

/* The p-th percentile (0 < p <= 100) by the nearest-rank method; sorts @v. */
static inline uint64_t bench_percentile(uint64_t *v, size_t n, double p) {
        size_t rank;

        if (n == 0)
                return 0;
        qsort(v, n, sizeof *v, bench_cmp_u64);
        rank = (size_t) ((p / 100.0) * (double) n + 0.999999);
        if (rank < 1)
                rank = 1;
        if (rank > n)
                rank = n;
        return v[rank - 1];
}

/* Is @name among the workloads asked for on the command line (none = all)? */
static inline int bench_wanted(int argc, char **argv, int first, const char *name) {
        int i, any = 0;

        for (i = first; i < argc; i++) {
                if (argv[i][0] == '-')
                        continue;
                any = 1;
                if (strcasecmp(argv[i], name) == 0)
                        return 1;
        }
        return !any;
}

#endif /* MSEG_BENCH_COMMON_H */
