/* SPDX-License-Identifier: MIT */
/*
 * layout.h — the bytes of a segment that every module agrees on.
 *
 * A segment is position independent: every reference inside it is a 64-bit
 * offset from its base, 0 meaning "none" (the header lives at 0, so no object
 * ever has offset 0). The layout is ABI: only fixed-width integers and
 * _Atomic fields, no pointers, explicit padding, static_asserts on sizes and
 * offsets. Bump MSEG_LAYOUT_VERSION on any change here or in the private
 * layouts of alloc.c and registry.c.
 *
 *   [0, 4096)                         mseg_header (one page)
 *   [slots_off, +nslots*64)           attachment slots (one per allocating thread)
 *   [registry_off, +registry_size)    registry root (registry.c owns the bytes)
 *   [alloc_off, size)                 the allocator's region (alloc.c owns it all:
 *                                     its root, the data units, its unit table)
 *
 * The fixed fields (up to `checksum`) never change while a segment is
 * attached, and carry a BLAKE2b checksum; the dynamic fields after it do.
 */
#ifndef MSEG_LAYOUT_H
#define MSEG_LAYOUT_H

#include <assert.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define MSEG_MAGIC          UINT32_C(0x4d534731)  /* "MSG1"; byte-swapped reads fail the check */
#define MSEG_LAYOUT_VERSION UINT32_C(2)
#define MSEG_HEADER_SIZE    UINT64_C(4096)
#define MSEG_SLOT_SIZE      UINT64_C(64)
#define MSEG_REGISTRY_SIZE  UINT64_C(4096)

/* All segment atomics must be lock-free, or they would silently use
 * process-private locks in libatomic (linux-facts.md 5.2). */
static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");

typedef struct mseg_header {
        /* --- fixed fields: written once at format (or offline grow), checksummed --- */
        uint32_t magic;                 /* MSEG_MAGIC */
        uint32_t layout_version;        /* MSEG_LAYOUT_VERSION */
        uint32_t header_size;           /* MSEG_HEADER_SIZE */
        uint32_t flags;                 /* MSEG_HDR_* */
        uint8_t id[16];                 /* random, from randombytes_buf */
        uint64_t size;                  /* bytes the image spans (a brokered segment's maximum) */
        uint64_t slots_off;             /* attachment slot table */
        uint32_t nslots;
        uint32_t slot_size;             /* MSEG_SLOT_SIZE */
        uint64_t registry_off;          /* registry root */
        uint64_t registry_size;
        uint64_t alloc_off;             /* allocator region: [alloc_off, size) */
        uint8_t sip_key[16];            /* registry SipHash key (crypto_shorthash) */
        uint64_t reserved[4];           /* zero */
        uint8_t checksum[16];           /* crypto_generichash of the bytes above */

        /* --- dynamic fields --- */
        _Atomic uint64_t usable;        /* current usable size, <= size; only grows */
        _Atomic uint32_t state;         /* MSEG_STATE_* */
        uint32_t pad0;
        _Atomic uint64_t attach_gen;    /* bumped on every slot claim (debugging, liveness) */
} mseg_header;

#define MSEG_HEADER_FIXED_BYTES offsetof(mseg_header, checksum)

static_assert(offsetof(mseg_header, size) == 32, "in-segment layout is ABI");
static_assert(offsetof(mseg_header, checksum) == 128, "in-segment layout is ABI");
static_assert(sizeof(mseg_header) <= MSEG_HEADER_SIZE, "header fits its page");

/* header.flags */
#define MSEG_HDR_BROKERED  0x1u  /* created by msegd (memfd) */

/* header.state bits */
#define MSEG_STATE_POISONED 0x1u /* repair failed: refuse further writes */

/* An attachment slot: claimed by one thread of one process for its
 * allocator caches. Liveness is (pid, start time): a slot whose process is
 * gone is reclaimed by msegd or the next attach. */
typedef struct mseg_slot {
        _Atomic uint64_t state;         /* MSEG_SLOT_FREE/LIVE/RECLAIMING | gen << 8 */
        uint32_t pid;                   /* owner process (in msegd's/attacher's namespace) */
        uint32_t tid;
        uint64_t start_time;            /* owner's /proc/PID/stat starttime */
        uint64_t heap_off;              /* allocator's per-slot cache record, 0 = none */
        uint64_t reserved[4];
} mseg_slot;

static_assert(sizeof(mseg_slot) == MSEG_SLOT_SIZE, "in-segment layout is ABI");

#define MSEG_SLOT_FREE       0u
#define MSEG_SLOT_LIVE       1u
#define MSEG_SLOT_RECLAIMING 2u
#define MSEG_SLOT_STATE(v)   ((uint32_t) ((v) & 0xff))
#define MSEG_SLOT_GEN(v)     ((v) >> 8)
#define MSEG_SLOT_MAKE(st, gen) (((uint64_t) (gen) << 8) | (st))

#endif /* MSEG_LAYOUT_H */
