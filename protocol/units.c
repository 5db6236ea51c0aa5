/* SPDX-License-Identifier: MIT */
/*
 * units.c — sizes as people write them ("64M", "1GiB"), read the same way by
 * msegd's options and config file and by msegctl's arguments. Binary
 * multiples (K = 1024); no sign, no fraction, no overflow.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int mseg_proto_parse_size(const char *s, uint64_t *ret) {
        char *end;
        unsigned long long v;
        unsigned shift = 0;

        if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || end == s)
                return -EINVAL;
        switch (*end) {
        case 'k': case 'K': shift = 10; end++; break;
        case 'm': case 'M': shift = 20; end++; break;
        case 'g': case 'G': shift = 30; end++; break;
        case 't': case 'T': shift = 40; end++; break;
        default: break;
        }
        if (shift && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0))
                end += strlen(end);
        if (*end || (shift && v > (UINT64_MAX >> shift)))
                return -EINVAL;
        *ret = (uint64_t) v << shift;
        return 0;
}
