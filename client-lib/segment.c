/* SPDX-License-Identifier: MIT */
/*
 * segment.c — the segment header: formatting an empty segment, validating an
 * image before anyone trusts it, and the handle every kind shares.
 *
 * The header (layout.h) is the first page. Its fixed fields carry a BLAKE2b
 * checksum (crypto_generichash): not a security control, since any writer
 * can recompute it, but it turns a wrong descriptor, a torn initialisation
 * or a stray write into a clear MSEG_E_CORRUPT at attach time instead of a
 * wild offset later. Validation checks, in order: length, magic (and the
 * byte-swapped magic, to say "other endianness"), version, checksum, then
 * geometry — every region inside the image, in order, aligned — and hands
 * the allocator's and registry's roots to their own cheap validators.
 *
 * Geometry: header page, then the slot table (rounded to a page), then the
 * registry root page, then the allocator region up to the end. The slot
 * count scales with the size so a 64 KiB segment spends little on slots.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <sodium.h>

#include "internal.h"

#define PAGE UINT64_C(4096)

static inline uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

static int sodium_ready(void) {
        static _Atomic int done;

        if (atomic_load_explicit(&done, memory_order_acquire))
                return 0;
        if (sodium_init() < 0)
                return mseg__error(-EIO, "libsodium failed to initialise");
        atomic_store_explicit(&done, 1, memory_order_release);
        return 0;
}

uint32_t mseg__nslots_for(uint64_t size) {
        uint64_t n = size / (256 * 1024);

        if (n < 8)
                n = 8;
        if (n > 256)
                n = 256;
        return (uint32_t) n;
}

static void header_checksum(const mseg_header *h, uint8_t out[16]) {
        crypto_generichash(out, 16, (const unsigned char *) h, MSEG_HEADER_FIXED_BYTES, NULL, 0);
}

void mseg__header_seal(mseg_header *h) {
        header_checksum(h, h->checksum);
}

int mseg__format(void *base, uint64_t size, uint64_t usable, uint32_t flags) {
        mseg_header *h = base;
        uint32_t nslots = mseg__nslots_for(size);
        uint64_t slots_bytes = round_up((uint64_t) nslots * MSEG_SLOT_SIZE, PAGE);
        int r;

        if (!base || ((uintptr_t) base & 15))
                return mseg__error(-EINVAL, "segment memory must be 16-byte aligned");
        if (size < MSEG_MIN_SIZE || size > MSEG_MAX_SIZE)
                return mseg__error(-EINVAL, "segment size %llu outside [%llu, %llu]",
                                   (unsigned long long) size, (unsigned long long) MSEG_MIN_SIZE,
                                   (unsigned long long) MSEG_MAX_SIZE);
        if (usable < MSEG_MIN_SIZE || usable > size)
                return mseg__error(-EINVAL, "usable size %llu outside [%llu, %llu]",
                                   (unsigned long long) usable, (unsigned long long) MSEG_MIN_SIZE,
                                   (unsigned long long) size);
        r = sodium_ready();
        if (r < 0)
                return r;

        /* Only the fixed regions are zeroed: a fresh memfd or file is zero
         * already and a reserve of gigabytes must stay untouched. */
        memset(base, 0, MSEG_HEADER_SIZE + slots_bytes + MSEG_REGISTRY_SIZE);
        h->magic = MSEG_MAGIC;
        h->layout_version = MSEG_LAYOUT_VERSION;
        h->header_size = (uint32_t) MSEG_HEADER_SIZE;
        h->flags = flags;
        randombytes_buf(h->id, sizeof(h->id));
        h->size = size;
        h->slots_off = MSEG_HEADER_SIZE;
        h->nslots = nslots;
        h->slot_size = (uint32_t) MSEG_SLOT_SIZE;
        h->registry_off = h->slots_off + slots_bytes;
        h->registry_size = MSEG_REGISTRY_SIZE;
        h->alloc_off = h->registry_off + h->registry_size;
        randombytes_buf(h->sip_key, sizeof(h->sip_key));
        atomic_store_explicit(&h->usable, usable, memory_order_relaxed);
        atomic_store_explicit(&h->state, 0, memory_order_relaxed);

        r = mseg__registry_format(h);
        if (r < 0)
                return r;
        r = mseg__alloc_format(h);
        if (r < 0)
                return r;
        mseg__header_seal(h);
        atomic_thread_fence(memory_order_release);
        return 0;
}

int mseg__validate(const void *base, uint64_t size) {
        const mseg_header *h = base;
        uint8_t sum[16];
        uint64_t slots_end, usable;
        int r;

        if (!base)
                return mseg__error(-EINVAL, "no segment memory");
        if (size < MSEG_HEADER_SIZE)
                return mseg__error(MSEG_E_CORRUPT, "image of %llu bytes is too small for a segment header",
                                   (unsigned long long) size);
        if (h->magic != MSEG_MAGIC) {
                if (h->magic == __builtin_bswap32(MSEG_MAGIC))
                        return mseg__error(MSEG_E_VERSION, "segment was written on a machine of the other byte order");
                return mseg__error(MSEG_E_CORRUPT, "not a segment: bad magic 0x%08x", h->magic);
        }
        if (h->layout_version != MSEG_LAYOUT_VERSION)
                return mseg__error(MSEG_E_VERSION, "segment layout version %u, this library reads %u",
                                   h->layout_version, MSEG_LAYOUT_VERSION);
        r = sodium_ready();
        if (r < 0)
                return r;
        header_checksum(h, sum);
        if (sodium_memcmp(sum, h->checksum, sizeof(sum)) != 0)
                return mseg__error(MSEG_E_CORRUPT, "segment header checksum mismatch");
        if (h->header_size != MSEG_HEADER_SIZE)
                return mseg__error(MSEG_E_CORRUPT, "header size %u, expected %llu", h->header_size,
                                   (unsigned long long) MSEG_HEADER_SIZE);
        if (h->size < MSEG_MIN_SIZE || h->size > MSEG_MAX_SIZE)
                return mseg__error(MSEG_E_CORRUPT, "segment size %llu out of range", (unsigned long long) h->size);
        if (h->size > size)
                return mseg__error(MSEG_E_CORRUPT, "truncated image: %llu bytes, the header says %llu",
                                   (unsigned long long) size, (unsigned long long) h->size);
        if (h->slots_off != MSEG_HEADER_SIZE || h->slot_size != MSEG_SLOT_SIZE ||
            h->nslots == 0 || h->nslots > 4096)
                return mseg__error(MSEG_E_CORRUPT, "bad slot table geometry");
        slots_end = h->slots_off + (uint64_t) h->nslots * MSEG_SLOT_SIZE;
        if (h->registry_off < slots_end || h->registry_off % PAGE ||
            h->registry_size != MSEG_REGISTRY_SIZE || h->registry_off > h->size - h->registry_size)
                return mseg__error(MSEG_E_CORRUPT, "bad registry geometry");
        if (h->alloc_off < h->registry_off + h->registry_size || h->alloc_off % PAGE ||
            h->alloc_off >= h->size)
                return mseg__error(MSEG_E_CORRUPT, "bad allocator region offset");
        for (size_t i = 0; i < sizeof(h->reserved) / sizeof(h->reserved[0]); i++)
                if (h->reserved[i])
                        return mseg__error(MSEG_E_CORRUPT, "reserved header field %zu is not zero", i);
        usable = atomic_load_explicit(&((mseg_header *) h)->usable, memory_order_acquire);
        if (usable < h->alloc_off || usable > h->size)
                return mseg__error(MSEG_E_CORRUPT, "usable size %llu outside the segment",
                                   (unsigned long long) usable);
        r = mseg__registry_validate(h, h->size);
        if (r < 0)
                return r;
        return mseg__alloc_validate(h, h->size);
}

uint64_t mseg__new_uid(void) {
        static _Atomic uint64_t next_uid = 1;

        return atomic_fetch_add(&next_uid, 1);
}

int mseg__handle_new(struct mseg **ret, void *base, uint64_t map_size, enum mseg__kind kind,
                     bool read_only, bool cow) {
        struct mseg *seg;
        int r;

        r = mseg__validate(base, map_size);
        if (r < 0)
                return r;
        seg = calloc(1, sizeof(*seg));
        if (!seg)
                return mseg__error(-ENOMEM, "out of memory for a segment handle");
        seg->base = base;
        seg->hdr = base;
        seg->map_size = seg->hdr->size;
        seg->data_off = seg->hdr->alloc_off;
        seg->kind = kind;
        seg->fd = -1;
        seg->read_only = read_only;
        seg->cow = cow;
        seg->uid = mseg__new_uid();
        pthread_mutex_init(&seg->priv, NULL);
        r = mseg__alloc_attach(seg);
        if (r < 0)
                goto fail;
        r = mseg__registry_attach(seg);
        if (r < 0) {
                mseg__alloc_detach(seg);
                goto fail;
        }
        *ret = seg;
        return 0;
fail:
        pthread_mutex_destroy(&seg->priv);
        free(seg);
        return r;
}

void mseg__handle_free(struct mseg *seg) {
        pthread_mutex_destroy(&seg->priv);
        free(seg->name);
        free(seg);
}

mseg *mseg_close(mseg *seg) {
        if (!seg)
                return NULL;
        /* Unmapping a segment while this thread holds one of its locks would
         * lose the lock for good (the kernel could not mark it owner-died)
         * and free memory the caller's caller still uses. Closing from inside
         * an init or destroy callback or mseg_atomic() is therefore refused:
         * the handle stays open, a leak rather than a wedged segment. */
        if (mseg__registry_held_by_me(seg) || mseg__lock_held_in(seg->base, seg->map_size)) {
                mseg__error(-EBUSY, "mseg_close inside a callback that holds the segment's lock: handle left open");
                return NULL;
        }
        mseg__registry_detach(seg);
        mseg__alloc_detach(seg);
        if (seg->kind == MSEG__KIND_SHM)
                mseg__broker_detach(seg);
        if (seg->mapped)
                munmap(seg->base, seg->map_size);
        if (seg->fd >= 0)
                close(seg->fd);
        mseg__handle_free(seg);
        return NULL;
}

void *mseg_address(const mseg *seg) {
        return seg ? seg->base : NULL;
}

uint64_t mseg_size(const mseg *seg) {
        return seg ? mseg__usable(seg) : 0;
}

int mseg_is_read_only(const mseg *seg) {
        if (!seg)
                return -EINVAL;
        return seg->read_only;
}

void mseg_id(const mseg *seg, uint8_t ret_id[16]) {
        if (seg && ret_id)
                memcpy(ret_id, seg->hdr->id, 16);
}

mseg_handle mseg_handle_of(const mseg *seg, const void *p) {
        uintptr_t a = (uintptr_t) p, b;

        if (!seg || !p)
                return MSEG_HANDLE_NULL;
        b = (uintptr_t) seg->base;
        if (a < b + seg->data_off || a - b >= seg->map_size)
                return MSEG_HANDLE_NULL;
        return (mseg_handle) (a - b);
}

void *mseg_ptr(const mseg *seg, mseg_handle h) {
        if (!seg || h < seg->data_off || h >= seg->map_size)
                return NULL;
        return seg->base + h;
}

int mseg_check(mseg *seg) {
        int r;

        if (!seg)
                return mseg__error(-EINVAL, "no segment");
        r = mseg__validate(seg->base, seg->map_size);
        if (r < 0)
                return r;
        if (seg->hdr->alloc_off != seg->data_off || seg->hdr->size != seg->map_size)
                return mseg__error(MSEG_E_CORRUPT, "segment geometry changed while attached");
        r = mseg__alloc_check(seg);
        if (r < 0)
                return r;
        return mseg__registry_check(seg);
}
