/* SPDX-License-Identifier: MIT */
/*
 * internal.h — what libmseg's modules share and nobody else sees.
 *
 * One module per concept (STYLE.md):
 *   segment.c   header format, validation, attach/detach of any kind
 *   error.c     mseg_strerror(), the thread's last-error detail
 *   lock.c      robust process-shared locks with an owner-died repair path
 *   alloc.c     the allocator (owns [hdr->alloc_off, size)); slot.c its slots
 *   registry.c  the name index and the construction family
 *   file.c heap.c buffer.c broker.c   the four kinds of segment
 *
 * Internal symbols are mseg__*. Offsets read from a segment are untrusted:
 * turn them into pointers only through mseg__at(), which bounds-checks.
 */
#ifndef MSEG_INTERNAL_H
#define MSEG_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "mseg.h"
#include "layout.h"

#ifndef EUCLEAN
#define EUCLEAN 117
#endif

#define MSEG_UNUSED __attribute__((unused))
#define MSEG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define mseg__likely(x) __builtin_expect(!!(x), 1)
#define mseg__unlikely(x) __builtin_expect(!!(x), 0)

enum mseg__kind {
        MSEG__KIND_SHM = 1,     /* brokered memfd */
        MSEG__KIND_FILE = 2,    /* managed mapped file */
        MSEG__KIND_HEAP = 3,    /* malloc'ed, growable, private */
        MSEG__KIND_BUFFER = 4,  /* caller's buffer */
};

struct mseg__alloc_local;       /* alloc.c: per-process allocator state */
struct mseg__registry_local;    /* registry.c: per-process registry state */
struct mseg__broker_local;      /* broker.c: connection to msegd */

struct mseg {
        uint8_t *base;                  /* start of the mapping: the header */
        uint64_t map_size;              /* bytes mapped (== hdr->size) */
        uint64_t data_off;              /* hdr->alloc_off, validated at attach: first object offset */
        mseg_header *hdr;               /* == (mseg_header *) base */
        enum mseg__kind kind;
        int fd;                         /* memfd or file, -1 if none */
        bool read_only;                 /* PROT_READ mapping */
        bool cow;                       /* MAP_PRIVATE mapping */
        bool mapped;                    /* munmap(base, map_size) at close (shm, file, heap) */
        uint64_t uid;                   /* unique per handle in this process (thread caches) */
        pthread_mutex_t priv;           /* process-private lock for the fields below */
        struct mseg__alloc_local *alloc;
        struct mseg__registry_local *reg;
        struct mseg__broker_local *broker;
        char *name;                     /* brokered: segment name; file: path */
};

/* ---- bounds-checked offset -> pointer: the only way into a segment ---- */

static inline void *mseg__at(const struct mseg *seg, uint64_t off, uint64_t len) {
        if (off == 0 || off > seg->map_size || len > seg->map_size - off)
                return NULL;            /* caller reports MSEG_E_CORRUPT */
        return seg->base + off;
}

static inline uint64_t mseg__off(const struct mseg *seg, const void *p) {
        return (uint64_t) ((const uint8_t *) p - seg->base);
}

static inline bool mseg__is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

/* ---- testhook.c: crash tests stop a process at a named point ---- */

#ifdef MSEG_TEST_HOOKS
void mseg__test_hook(const char *point);
#define MSEG_TEST_HOOK(point) mseg__test_hook(point)
#else
#define MSEG_TEST_HOOK(point) ((void) 0)
#endif

/* ---- error.c ---- */

/* Record a detail message for mseg_last_error() and return @code. */
int mseg__error(int code, const char *fmt, ...) MSEG_PRINTF(2, 3);
/* For pointer-returning functions: record, set errno from @code, return NULL. */
void *mseg__error_null(int code, const char *fmt, ...) MSEG_PRINTF(2, 3);
/* Map a negative code to a positive errno value (MSEG_E_CORRUPT -> EUCLEAN, ...). */
int mseg__errno_of(int code);

/* ---- segment.c ---- */

/* Minimum and computed geometry. */
uint32_t mseg__nslots_for(uint64_t size);

/* Format @size bytes at @base as an empty segment whose first @usable bytes
 * may be used (usable == size except for brokered segments with a reserve).
 * Writes header, slots, registry root and allocator region. */
int mseg__format(void *base, uint64_t size, uint64_t usable, uint32_t flags);

/* Cheap validation of an image before anyone trusts it: magic, version,
 * checksum, geometry, and the allocator's and registry's roots. 0 or
 * MSEG_E_CORRUPT / MSEG_E_VERSION with mseg_last_error() saying why. */
int mseg__validate(const void *base, uint64_t size);

/* Recompute the header checksum after changing fixed fields (offline). */
void mseg__header_seal(mseg_header *h);

/* Build a handle around a validated image. On failure nothing is freed or
 * unmapped (the caller still owns base/fd). */
int mseg__handle_new(struct mseg **ret, void *base, uint64_t map_size, enum mseg__kind kind,
                     bool read_only, bool cow);
/* A process-unique id for a handle (thread caches key on it). */
uint64_t mseg__new_uid(void);
/* Free the handle (after the caller released the memory). */
void mseg__handle_free(struct mseg *seg);

/* Usable size now (acquire load; clamped to the mapped size). */
static inline uint64_t mseg__usable(const struct mseg *seg) {
        uint64_t u = atomic_load_explicit(&seg->hdr->usable, memory_order_acquire);
        return u > seg->map_size ? seg->map_size : u;
}

/* ---- lock.c: robust, process-shared, normal-type lock in a segment ---- */

#define MSEG_LOCK_MAGIC UINT32_C(0x6b636f6c)    /* "lock" */

typedef struct mseg_lock {
        _Atomic uint32_t word;          /* robust futex: owner TID | FUTEX_WAITERS | FUTEX_OWNER_DIED */
        _Atomic uint32_t state;         /* consistent, inconsistent (owner died), not recoverable */
        _Atomic uint32_t repairs;       /* times an owner died holding it */
        uint32_t magic;                 /* MSEG_LOCK_MAGIC: a scribbled lock is refused */
        uint64_t reserved0;
        _Atomic uintptr_t prev;         /* robust-list links, where a pthread_mutex_t has them: */
        _Atomic uintptr_t next;         /*   written for the kernel and glibc, never trusted */
        uint64_t reserved[3];
} mseg_lock;
static_assert(sizeof(mseg_lock) == 64, "in-segment layout is ABI");

/* Initialise in a fresh segment (no one else can see it yet). */
int mseg__lock_init(mseg_lock *l);

/* Lock with a bounded wait (a live hostile holder cannot hang us forever).
 * Returns 0, 1 when the previous owner died holding it (the caller must
 * repair what it protects and then call mseg__lock_consistent()), or
 * -ETIMEDOUT / -ENOTRECOVERABLE / MSEG_E_CORRUPT. */
int mseg__lock(mseg_lock *l);
int mseg__lock_consistent(mseg_lock *l);
void mseg__unlock(mseg_lock *l);
/* After mseg__lock() returned 1 and the repair could not finish for a
 * passing reason (another lock it needs timed out): release without making
 * it unrecoverable, so the next taker gets 1 and tries the repair again. */
void mseg__unlock_unrepaired(mseg_lock *l);
/* Non-blocking variant for msegd: 0, 1 (owner died), -EBUSY, ... */
int mseg__trylock(mseg_lock *l);
/* For the calling thread from now on: mseg__lock() of a busy lock fails at
 * once with -EBUSY instead of waiting, unless the thread holds another
 * segment lock already (msegd's workers: a client holding a lock must not
 * hold up msegd's work on other segments). */
void mseg__lock_nowait(bool on);
/* Only in memory nobody else maps (a copy restored from a file): make the
 * lock free and "owner died", so its next taker repairs what it guards. */
void mseg__lock_reset_dead(mseg_lock *l);
/* Does the calling thread hold a lock in [base, base + size)? Such memory
 * must not be unmapped or moved: the kernel finds held locks by address. */
bool mseg__lock_held_in(const void *base, uint64_t size);
/* For tests: entries in the calling thread's robust list as the kernel
 * would walk it, or -1 if it cannot be walked. */
int mseg__lock_list_len(void);

/* ---- alloc.c: the allocator (owns [hdr->alloc_off, hdr->size)) ---- */

/* Format the allocator region of a fresh segment. */
int mseg__alloc_format(mseg_header *h);
/* Cheap check of the allocator root at attach (no walking). */
int mseg__alloc_validate(const mseg_header *h, uint64_t size);
/* Per-process state: set up at attach, torn down at close (flushes this
 * process's caches and frees its slots). */
int mseg__alloc_attach(struct mseg *seg);
void mseg__alloc_detach(struct mseg *seg);
/* Deep check for mseg_check(). */
int mseg__alloc_check(struct mseg *seg);
/* Return a dead slot's cached blocks to the shared pools. */
int mseg__alloc_reclaim_slot(struct mseg *seg, uint32_t slot);
/* Offline resize (heap, file): the image at base now spans new_size bytes
 * (the memory beyond the old size is zero). Fixes the allocator's tables. */
int mseg__alloc_resize(mseg_header *h, uint64_t new_size);
/* Smallest size the image could be shrunk to (offline). */
uint64_t mseg__alloc_min_size(const mseg_header *h);
/* Internal allocation for the registry (same semantics as mseg_alloc_aligned,
 * returns an offset, 0 with errno set on failure). */
uint64_t mseg__alloc_off(struct mseg *seg, uint64_t size, uint64_t align);
int mseg__free_off(struct mseg *seg, uint64_t off);
/* Crash-atomic allocate-and-record and free-and-forget, for records inside
 * the segment (@dest / @ref: an aligned 8-byte slot of the registry root or
 * of the data). After a SIGKILL at any instruction, once the allocator's
 * lock that was held is repaired (by its next taker, a slot reclaim, or
 * mseg__alloc_settle()): either the block is allocated and the record
 * holds its offset, or the block is free and the record holds 0 (for
 * mseg__alloc_into_off, the record's previous value). Neither ever goes
 * through a magazine, so no slot reclaim is needed to settle them.
 * mseg__alloc_into_off: 0 or a negative code (the record untouched).
 * mseg__free_from: 0 (also when the record holds 0), -EINVAL when it names
 * no allocated block, or a lock error. */
int mseg__alloc_into_off(struct mseg *seg, uint64_t size, uint64_t align, _Atomic uint64_t *dest);
int mseg__free_from(struct mseg *seg, _Atomic uint64_t *ref);
/* Take and release every allocator lock (class locks, then the page lock),
 * so every operation a dead process left in one is finished: a caller's
 * repair runs it before it trusts a record that an interrupted
 * mseg__alloc_into_off() or mseg__free_from() may still write. */
int mseg__alloc_settle(struct mseg *seg);
/* Blocks currently allocated (for all_memory_deallocated). */
uint64_t mseg__alloc_live_blocks(struct mseg *seg);
/* Online growth (brokered segments): raise hdr->usable to @new_usable
 * (<= hdr->size); the allocator's frontier follows it. 0 or -EINVAL. */
int mseg__alloc_set_usable(struct mseg *seg, uint64_t new_usable);
/* slot.c: reclaim every slot whose owner process is gone (pid and start
 * time from /proc no longer match; only slots claimed in our own pid
 * namespace are judged). Returns the number reclaimed or a negative code. */
int mseg__slots_reclaim_dead(struct mseg *seg);
/* msegd, for each client that connects: if @local_pid (as msegd sees it)
 * lives in another PID namespace, remember which pid it has there, so that
 * mseg__slots_reclaim_dead() can tell when its slots' owner is gone. 1 if
 * noted, 0 if it shares our namespace, -ESRCH if it is gone already. */
int mseg__slots_note_peer(uint32_t local_pid);
/* slot.c: does slot @i await reclaim (RECLAIMING, or LIVE with its owner
 * gone, judged as mseg__slots_reclaim_dead() does)? For mseg_stats(). */
bool mseg__slot_owner_gone(struct mseg *seg, uint32_t i);

/* ---- restore.c: a copy of a segment that nobody else maps ---- */

/* A segment image restored from a copy (msegd's state files) was copied
 * while its clients worked: locks may read as held by processes that never
 * mapped this copy, derived structures may be mid-change, and every slot
 * names a process attached to the original. Marks every lock owner-dead,
 * reclaims every slot, and runs mseg_check() (which takes every lock, so
 * every module repairs). Returns what mseg_check() returns. Only call it
 * while no other process can map @seg. */
int mseg__restore_offline(struct mseg *seg);
/* While msegd copies a live segment: hold its page layer still (the page
 * lock, with its bounded wait: call it off the event loop). 0 or a lock
 * error; release with mseg__snapshot_release() after the copy. */
int mseg__snapshot_hold(struct mseg *seg);
/* A mapped file that no other process has attached (the caller holds its
 * flock LOCK_EX): locks that look held become owner-dead and every slot is
 * reclaimed, since their owners are gone (maybe in an earlier boot).
 * Returns the slots reclaimed or a negative code. */
int mseg__recover_unattached(struct mseg *seg);
void mseg__snapshot_release(struct mseg *seg);

/* ---- registry.c ---- */

int mseg__registry_format(mseg_header *h);
int mseg__registry_validate(const mseg_header *h, uint64_t size);
int mseg__registry_attach(struct mseg *seg);
void mseg__registry_detach(struct mseg *seg);
int mseg__registry_check(struct mseg *seg);
/* True while the calling thread holds @seg's registry lock (inside an init
 * or destroy callback, or mseg_atomic()). */
bool mseg__registry_held_by_me(struct mseg *seg);

/* ---- broker.c: brokered segments ---- */

void mseg__broker_detach(struct mseg *seg);
/* msegd's counters and limits (msegctl status); protocol/proto.h. */
struct mseg_proto_status;
int mseg__broker_status(const struct mseg_options *opts, struct mseg_proto_status *ret);
/* A new token key in msegd (root or msegd's user): every token so far is
 * void. *ret_generation: the new key's generation. */
int mseg__broker_rotate_key(const struct mseg_options *opts, uint32_t *ret_generation);

#endif /* MSEG_INTERNAL_H */
