/* SPDX-License-Identifier: MIT */
/*
 * test.h — assertion helpers shared by every test. A failed assertion prints
 * the expression, both values and, for codes, mseg_strerror() and
 * mseg_last_error(), then exits 1. Exit 77 tells meson the test was skipped.
 */
#ifndef MSEG_TEST_H
#define MSEG_TEST_H

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mseg.h"

#define TEST_SKIP 77

#define FAIL(...) do { \
        fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

#define ASSERT(cond) do { if (!(cond)) FAIL("%s", #cond); } while (0)

#define ASSERT_OK(expr) do { long long r_ = (long long) (expr); if (r_ < 0) \
        FAIL("%s = %lld (%s; %s)", #expr, r_, mseg_strerror((int) r_), mseg_last_error()); } while (0)

#define ASSERT_ERR(expr, code) do { long long r_ = (long long) (expr); if (r_ != (long long) (code)) \
        FAIL("%s = %lld (%s), expected %s = %lld", #expr, r_, r_ < 0 ? mseg_strerror((int) r_) : "ok", \
             #code, (long long) (code)); } while (0)

#define ASSERT_EQ(a, b) do { long long a_ = (long long) (a), b_ = (long long) (b); if (a_ != b_) \
        FAIL("%s == %s: %lld != %lld", #a, #b, a_, b_); } while (0)

#define ASSERT_NE(a, b) do { long long a_ = (long long) (a), b_ = (long long) (b); if (a_ == b_) \
        FAIL("%s != %s: both %lld", #a, #b, a_); } while (0)

#define ASSERT_NOT_NULL(p) do { if ((p) == NULL) \
        FAIL("%s is NULL (errno %d: %s; %s)", #p, errno, strerror(errno), mseg_last_error()); } while (0)

#define ASSERT_NULL_ERRNO(p, e) do { errno = 0; void *p_ = (void *) (p); if (p_ != NULL || errno != (e)) \
        FAIL("%s = %p errno %d (%s), expected NULL errno %s", #p, p_, errno, strerror(errno), #e); } while (0)

/* xorshift64* (BENCH.md), for randomized tests. */
static inline uint64_t test_rand(uint64_t *s) {
        *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
        return *s * UINT64_C(0x2545F4914F6CDD1D);
}

#endif
