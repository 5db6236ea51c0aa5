/* SPDX-License-Identifier: MIT */
/*
 * buffer.c — managed external buffers (Boost's managed_external_buffer): a
 * segment formatted in, or attached from, memory the caller owns. This is
 * also how a segment's bytes travel: copy them anywhere (a file, a socket,
 * another host) and mseg_buffer_attach() them there, since nothing inside a
 * segment is an address.
 *
 * The buffer stays the caller's: mseg_close() forgets it. Its address must
 * be 16-byte aligned, and aligned to any larger alignment asked of the
 * allocator (Boost has the same rule); a page-aligned buffer satisfies all.
 */
#include "internal.h"

int mseg_buffer_create(mseg **ret_seg, void *buf, uint64_t size) {
        int r;

        if (!ret_seg || !buf)
                return mseg__error(-EINVAL, "mseg_buffer_create: NULL argument");
        r = mseg__format(buf, size, size, 0);
        if (r < 0)
                return r;
        return mseg__handle_new(ret_seg, buf, size, MSEG__KIND_BUFFER, false, false);
}

int mseg_buffer_attach(mseg **ret_seg, void *buf, uint64_t size) {
        if (!ret_seg || !buf)
                return mseg__error(-EINVAL, "mseg_buffer_attach: NULL argument");
        if ((uintptr_t) buf & 15)
                return mseg__error(-EINVAL, "segment memory must be 16-byte aligned");
        return mseg__handle_new(ret_seg, buf, size, MSEG__KIND_BUFFER, false, false);
}
