/* SPDX-License-Identifier: MIT */
/*
 * error.c — messages for every code libmseg returns, and the calling
 * thread's last-error detail.
 *
 * Codes are negative errno values or MSEG_E_* (a reserved range far from
 * errno, as LMDB does). mseg_strerror() never allocates and is thread-safe;
 * the detail text ("header checksum mismatch", "offset 0x... outside the
 * segment") lives in a thread-local buffer, so one thread's failure never
 * garbles another's message. The library never prints these itself.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static __thread char last_error[512];

const char *mseg_version(void) {
        return "0.1.0";
}

const char *mseg_strerror(int code) {
        switch (code) {
        case 0:                 return "success";
        case MSEG_E_PROTO:      return "malformed or unexpected message from msegd";
        case MSEG_E_CORRUPT:    return "segment metadata is corrupt";
        case MSEG_E_VERSION:    return "segment format or protocol version mismatch";
        case MSEG_E_NODAEMON:   return "msegd is not running at the socket path";
        case MSEG_E_TOKEN:      return "capability token is invalid, expired or for another segment";
        case MSEG_E_LIMIT:      return "a msegd limit was reached";
        case -EPROTOTYPE:       return "object exists with another type";
        case -EUCLEAN:          return "segment metadata is corrupt";
        default:                break;
        }
        if (code < 0 && code > -4096) {
                const char *s = strerrordesc_np(-code);
                if (s)
                        return s;
        }
        return "unknown error";
}

const char *mseg_last_error(void) {
        return last_error[0] ? last_error : "no error";
}

static void record(int code, const char *fmt, va_list ap) {
        int n = vsnprintf(last_error, sizeof(last_error), fmt, ap);
        if (n < 0)
                snprintf(last_error, sizeof(last_error), "%s", mseg_strerror(code));
}

int mseg__error(int code, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        record(code, fmt, ap);
        va_end(ap);
        return code;
}

int mseg__errno_of(int code) {
        switch (code) {
        case MSEG_E_CORRUPT:    return EUCLEAN;
        case MSEG_E_PROTO:      return EPROTO;
        case MSEG_E_VERSION:    return EPROTONOSUPPORT;
        case MSEG_E_NODAEMON:   return ECONNREFUSED;
        case MSEG_E_TOKEN:      return EACCES;
        case MSEG_E_LIMIT:      return EDQUOT;
        default:                return code < 0 ? -code : EINVAL;
        }
}

void *mseg__error_null(int code, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        record(code, fmt, ap);
        va_end(ap);
        errno = mseg__errno_of(code);
        return NULL;
}
