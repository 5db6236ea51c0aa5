/* SPDX-License-Identifier: MIT */
/*
 * mseg.h — managed memory segments for C on Linux (libmseg).
 *
 * This header is the manual. A managed segment is a region of memory in which
 * programs allocate blocks and create, find and destroy named objects, the way
 * Boost.Interprocess's managed segments do for C++. Four kinds share one
 * segment format:
 *
 *   mseg_open()           a shared segment brokered by msegd (memfd over a socket)
 *   mseg_file_open()      a managed mapped file (no daemon)
 *   mseg_heap_create()    a private, growable heap segment (malloc'ed)
 *   mseg_buffer_create()  a caller-provided buffer (mseg_buffer_attach() to reuse one)
 *
 * Conventions
 *   - Functions that can fail return 0 (or a count) on success and a negative
 *     errno, or one of the MSEG_E_* codes below, on failure. mseg_strerror()
 *     gives the message of any code; mseg_last_error() gives the detail of
 *     the last failure in the calling thread ("header checksum mismatch", ...).
 *   - Functions that return a pointer return NULL and set errno on failure
 *     (ENOMEM when the segment is full; EUCLEAN when its metadata is corrupt).
 *   - Out-parameters are named ret_* and written only on success.
 *   - Nothing in the library prints, aborts or exits.
 *   - A segment handle (mseg *) may be used from many threads at once, except
 *     where a function says otherwise. Blocks and objects are shared with other
 *     processes through handles (offsets from the segment base), never pointers.
 *
 * Caveats
 *   - Everything inside a shared segment can be written by every process that
 *     maps it read-write. libmseg checks every offset it reads from a segment
 *     and reports damage as MSEG_E_CORRUPT instead of crashing, but it cannot
 *     protect the contents of your objects from a hostile writer.
 *   - Do not fork() while another thread of the process is inside an mseg call.
 */
#ifndef MSEG_H
#define MSEG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MSEG_API __attribute__((visibility("default")))
#define MSEG_MUST_CHECK __attribute__((warn_unused_result))

#define MSEG_VERSION_MAJOR 0
#define MSEG_VERSION_MINOR 1
#define MSEG_VERSION_PATCH 0

/* ---------------------------------------------------------------- errors */

/* mseg's own codes sit far from errno values (LMDB precedent). */
#define MSEG_E_FIRST    (-20000)
#define MSEG_E_PROTO    (-20001) /* malformed or unexpected message from msegd */
#define MSEG_E_CORRUPT  (-20002) /* segment metadata failed validation */
#define MSEG_E_VERSION  (-20003) /* segment format or protocol version mismatch */
#define MSEG_E_NODAEMON (-20004) /* msegd is not running at the socket path */
#define MSEG_E_TOKEN    (-20005) /* capability token invalid, expired or forged */
#define MSEG_E_LIMIT    (-20006) /* a msegd limit was reached (segments, clients, ...) */
#define MSEG_E_LAST     (-20006)
/* A named object that exists with another type is reported as EPROTOTYPE
 * (mseg_strerror(-EPROTOTYPE) says so). */

/** Message for any code this library returns (negative errno or MSEG_E_*).
 * Never NULL; the string is static. */
MSEG_API const char *mseg_strerror(int code);

/** Detail of the last failure in the calling thread, e.g. "header checksum
 * mismatch at offset 0". Never NULL; valid until the next mseg call in this
 * thread. */
MSEG_API const char *mseg_last_error(void);

/** Version string of the library, e.g. "0.1.0". */
MSEG_API const char *mseg_version(void);

/* ------------------------------------------------------------- segments */

typedef struct mseg mseg;                   /* opaque: one attached segment in this process */
typedef uint64_t mseg_handle;               /* offset from the segment base; shareable */
#define MSEG_HANDLE_NULL ((mseg_handle) 0)  /* offset 0 is the header: never an object */

/** Open modes (Boost's create_only, open_only, open_or_create). */
enum mseg_how {
        MSEG_CREATE_ONLY = 1,
        MSEG_OPEN_ONLY = 2,
        MSEG_OPEN_OR_CREATE = 3,
};

/* mseg_options.flags */
#define MSEG_READ_ONLY          0x01u /* map PROT_READ (brokered: a read-only descriptor) */
#define MSEG_COPY_ON_WRITE      0x02u /* MAP_PRIVATE: writes stay in this process */
#define MSEG_PERSISTENT         0x04u /* brokered: a file in msegd's state dir, survives reboot */
#define MSEG_REMOVE_ON_LAST_CLOSE 0x08u /* brokered: removed when the last client detaches */

/** Options for creating and opening segments. Zero-initialise, then set what
 * you need: `struct mseg_options o = { .size = 1 << 20 };`. NULL means all
 * defaults. */
struct mseg_options {
        uint64_t size;            /* create: initial size in bytes (default 1 MiB) */
        uint64_t max_size;        /* create (brokered): reserve for mseg_grow(); 0 = size */
        uint32_t mode;            /* create (brokered): permission bits; 0 = 0600 */
        uint32_t flags;           /* MSEG_READ_ONLY | MSEG_COPY_ON_WRITE | ... */
        const char *socket_path;  /* brokered: NULL = $MSEG_SOCKET, else /run/msegd/socket */
        const char *token;        /* brokered: capability token from `msegctl grant` */
        uint64_t reserved[4];     /* must be zero */
};

#define MSEG_MIN_SIZE   ((uint64_t) 64 * 1024)        /* smallest segment */
#define MSEG_MAX_SIZE   ((uint64_t) 1 << 44)          /* 16 TiB */
#define MSEG_NAME_MAX   255                           /* object and segment names */

/** Open the shared segment @p name through msegd, creating it if @p how says so.
 * Segment names are 1..255 bytes of UTF-8 without '/' (or NUL), and not "."
 * or "..".
 * With @p opts->token (MSEG_OPEN_ONLY only), the token alone decides: it
 * opens the segment it was granted for, with at most its rights, whatever
 * the caller's uid. A read token needs MSEG_READ_ONLY (or
 * MSEG_COPY_ON_WRITE); asking it for more is -EACCES. A token that is
 * garbled, truncated, forged, expired, made before `msegctl rotate-key`, or
 * for another segment (also: a segment removed and created again under the
 * same name) is MSEG_E_TOKEN, mseg_last_error() saying which.
 * @param[out] ret_seg  set only on success; release with mseg_close().
 * @return 0, -EINVAL, -ENAMETOOLONG, -ENOENT, -EEXIST, -EACCES, -ENOMEM,
 *         -EDQUOT, -ENOSPC, MSEG_E_NODAEMON, MSEG_E_LIMIT, MSEG_E_TOKEN,
 *         MSEG_E_PROTO, MSEG_E_CORRUPT or MSEG_E_VERSION.
 * After this returns, allocation and the registry never talk to msegd. */
MSEG_API MSEG_MUST_CHECK int mseg_open(mseg **ret_seg, const char *name,
                                       enum mseg_how how, const struct mseg_options *opts);

/** Remove the brokered segment @p name (like shm_unlink: mappings stay valid).
 * @return 0, -ENOENT, -EACCES, MSEG_E_NODAEMON, MSEG_E_PROTO. */
MSEG_API MSEG_MUST_CHECK int mseg_remove(const char *name, const struct mseg_options *opts);

/** Grow a brokered segment in place to @p new_size (at most its max_size);
 * every attached process sees the new size without remapping.
 * @return 0, -EINVAL, -ENOSPC (beyond max_size), -EACCES, -EDQUOT,
 *         -EBUSY (another process held the segment's page lock throughout:
 *         msegd never waits on a segment; try again), MSEG_E_NODAEMON,
 *         MSEG_E_PROTO. */
MSEG_API MSEG_MUST_CHECK int mseg_grow(mseg *seg, uint64_t new_size);

#define MSEG_TOKEN_MAX          512u     /* longest token, without its NUL */
#define MSEG_TOKEN_TTL_MAX      2592000u /* longest token lifetime: 30 days, in seconds */

/** Ask msegd for a capability token to the brokered segment @p name: whoever
 * presents it (mseg_options.token with MSEG_OPEN_ONLY) may open that
 * segment, whatever its uid, for @p ttl_seconds (1..MSEG_TOKEN_TTL_MAX) or
 * until `msegctl rotate-key`. @p flags: MSEG_READ_ONLY for a read token, 0
 * for a read-write one. The caller must itself have the rights it grants
 * (write implies read). The token is printable (URL-safe base64): pass it
 * on through argv, the environment or a file. @p opts: only socket_path is
 * used.
 * @param[out] ret_token    @p cap bytes (MSEG_TOKEN_MAX + 1 always suffice):
 *                          the NUL-terminated token, written only on success.
 * @param[out] ret_expires  may be NULL: when it expires, in seconds since the epoch.
 * @return 0, -EINVAL, -ENAMETOOLONG, -ERANGE (@p cap too small), -ENOENT,
 *         -EACCES, MSEG_E_NODAEMON, MSEG_E_PROTO, MSEG_E_VERSION. */
MSEG_API MSEG_MUST_CHECK int mseg_grant(const char *name, uint32_t flags, uint64_t ttl_seconds,
                                        const struct mseg_options *opts, char *ret_token, size_t cap,
                                        uint64_t *ret_expires);

/** A brokered segment as msegd describes it (mseg_stat(), mseg_list()). */
struct mseg_segment_info {
        char name[MSEG_NAME_MAX + 1];   /* NUL-terminated */
        uint8_t id[16];                 /* the segment's random id */
        uint64_t size;                  /* usable bytes */
        uint64_t max_size;              /* reserved bytes (the most mseg_grow() reaches) */
        uint32_t mode;                  /* permission bits */
        uint32_t uid, gid;              /* owner */
        uint32_t flags;                 /* MSEG_PERSISTENT | MSEG_REMOVE_ON_LAST_CLOSE */
        uint32_t clients;               /* attachments (open handles) msegd knows of */
        uint32_t reserved0;
        uint64_t reserved[4];
};

/** Describe the brokered segment @p name (no permission needed, like stat(2)
 * in a readable directory). @p opts: only socket_path is used (NULL: default).
 * @param[out] ret_info set only on success.
 * @return 0, -EINVAL, -ENAMETOOLONG, -ENOENT, MSEG_E_NODAEMON, MSEG_E_PROTO,
 *         MSEG_E_VERSION. */
MSEG_API MSEG_MUST_CHECK int mseg_stat(const char *name, const struct mseg_options *opts,
                                       struct mseg_segment_info *ret_info);

/** Call @p fn for each brokered segment, in name order, until it returns
 * non-zero. @p opts: only socket_path is used.
 * @return 0, fn's non-zero value, MSEG_E_NODAEMON, MSEG_E_PROTO, MSEG_E_VERSION. */
MSEG_API MSEG_MUST_CHECK int mseg_list(const struct mseg_options *opts,
                                       int (*fn)(const struct mseg_segment_info *info, void *arg), void *arg);

/** Open or create a managed mapped file (MAP_SHARED; MSEG_READ_ONLY maps
 * PROT_READ, MSEG_COPY_ON_WRITE maps MAP_PRIVATE).
 * @return 0, -errno of open/mmap, -EEXIST, -ENOENT, -EINVAL, MSEG_E_CORRUPT,
 *         MSEG_E_VERSION. */
MSEG_API MSEG_MUST_CHECK int mseg_file_open(mseg **ret_seg, const char *path,
                                            enum mseg_how how, const struct mseg_options *opts);

/** Grow a managed mapped file that nobody has open by @p extra bytes
 * (Boost's managed_mapped_file::grow). @return 0, -EBUSY while in use, -errno,
 * MSEG_E_CORRUPT. */
MSEG_API MSEG_MUST_CHECK int mseg_file_grow(const char *path, uint64_t extra);

/** Shrink a managed mapped file nobody has open to the smallest size that
 * holds its live blocks (Boost's shrink_to_fit). @return 0, -EBUSY, -errno,
 * MSEG_E_CORRUPT. */
MSEG_API MSEG_MUST_CHECK int mseg_file_shrink_to_fit(const char *path);

/** Flush a file-backed segment's dirty pages to disk (msync). @return 0 or -errno. */
MSEG_API MSEG_MUST_CHECK int mseg_flush(mseg *seg);

/** Create a private heap segment of @p size bytes (Boost's managed_heap_memory).
 * @return 0, -EINVAL, -ENOMEM. */
MSEG_API MSEG_MUST_CHECK int mseg_heap_create(mseg **ret_seg, uint64_t size);

/** Grow a heap segment by @p extra bytes. The memory may move: pointers into
 * it become invalid, handles stay valid. Not thread-safe against any other
 * use of @p seg. @return 0, -EINVAL, -ENOMEM. */
MSEG_API MSEG_MUST_CHECK int mseg_heap_grow(mseg *seg, uint64_t extra);

/** Format @p size bytes at @p buf (aligned to 16 bytes at least) as a new
 * segment. The buffer stays the caller's; mseg_close() does not free it.
 * @return 0, -EINVAL. */
MSEG_API MSEG_MUST_CHECK int mseg_buffer_create(mseg **ret_seg, void *buf, uint64_t size);

/** Attach an existing segment image at @p buf (for instance bytes copied
 * from mseg_address() of another segment). The image is validated first.
 * @return 0, -EINVAL, MSEG_E_CORRUPT, MSEG_E_VERSION. */
MSEG_API MSEG_MUST_CHECK int mseg_buffer_attach(mseg **ret_seg, void *buf, uint64_t size);

/** Detach: unmap (or forget) the memory and free the handle, never the shared
 * contents. NULL-safe; returns NULL. Called from inside an init or destroy
 * callback or mseg_atomic() on the same segment, it does nothing (the handle
 * stays open and mseg_last_error() says so): unmapping while the segment's
 * lock is held would lose the lock. */
MSEG_API mseg *mseg_close(mseg *seg);

/** Base address of the mapping, and its total size in bytes (for brokered
 * segments the reserved maximum is mapped; mseg_size() is the usable size). */
MSEG_API void *mseg_address(const mseg *seg);
MSEG_API uint64_t mseg_size(const mseg *seg);

/** 1 if @p seg is mapped read-only, 0 if not. */
MSEG_API int mseg_is_read_only(const mseg *seg);

/** Address <-> handle. mseg_handle_of() returns MSEG_HANDLE_NULL for NULL or
 * a pointer outside the segment; mseg_ptr() returns NULL for 0 or an offset
 * outside the segment. */
MSEG_API mseg_handle mseg_handle_of(const mseg *seg, const void *p);
MSEG_API void *mseg_ptr(const mseg *seg, mseg_handle h);

/** The segment's random 128-bit id (16 bytes). */
MSEG_API void mseg_id(const mseg *seg, uint8_t ret_id[16]);

/* ------------------------------------------------------------ allocator */

/** Allocate @p size bytes (16-byte aligned). NULL with errno ENOMEM when the
 * segment is full (the segment stays usable), EINVAL for size 0 or a bad
 * handle, EROFS for a read-only mapping, EUCLEAN for corrupt metadata. */
MSEG_API MSEG_MUST_CHECK void *mseg_alloc(mseg *seg, size_t size);

/** Allocate with @p alignment, a power of two (any up to the segment size). */
MSEG_API MSEG_MUST_CHECK void *mseg_alloc_aligned(mseg *seg, size_t size, size_t alignment);

/** Free a block. NULL is a no-op returning 0. Returns -EINVAL for a pointer
 * that is not a live block of this segment (double free, interior pointer,
 * foreign pointer) where that can be detected, MSEG_E_CORRUPT for damaged
 * metadata. */
MSEG_API int mseg_free(mseg *seg, void *p);

/** Usable size of a live block (>= the size asked for); 0 for a bad pointer. */
MSEG_API size_t mseg_usable_size(mseg *seg, const void *p);

/** Expand a block in place to at least @p min_size, as close to
 * @p preferred_size as possible (Boost's allocation_command with expand_fwd).
 * @param[out] ret_size the new usable size. @return 0, -ENOMEM (cannot grow
 * in place to min_size; the block is unchanged), -EINVAL. */
MSEG_API MSEG_MUST_CHECK int mseg_expand(mseg *seg, void *p, size_t min_size,
                                         size_t preferred_size, size_t *ret_size);

/** Shrink a block in place to about @p new_size, releasing the tail.
 * @param[out] ret_size the new usable size. @return 0, -EINVAL. */
MSEG_API MSEG_MUST_CHECK int mseg_shrink(mseg *seg, void *p, size_t new_size, size_t *ret_size);

/** Allocate @p n blocks of @p elem_size each into @p ret_ptrs: all or none.
 * @return 0, -ENOMEM (nothing allocated), -EINVAL. */
MSEG_API MSEG_MUST_CHECK int mseg_alloc_many(mseg *seg, size_t elem_size, size_t n, void **ret_ptrs);

/** Free @p n blocks (NULL entries are skipped). @return 0 or the first error. */
MSEG_API int mseg_free_many(mseg *seg, void **ptrs, size_t n);

/** Crash-atomic allocate-and-link: allocates @p size bytes and stores the
 * block's handle at @p dest (a mseg_handle-sized, 8-aligned slot inside the
 * segment). After a crash at any point either both happened or neither did:
 * the block is never leaked unreachable. A call interrupted by a crash is
 * settled by the next process that takes the lock it held, or when its
 * attachment slot is reclaimed (msegd on disconnect, the next attach of a
 * mapped file); until then the block may show as allocated but not linked.
 * @return 0, -ENOMEM, -EINVAL (dest outside the segment), MSEG_E_CORRUPT. */
MSEG_API MSEG_MUST_CHECK int mseg_alloc_into(mseg *seg, size_t size, mseg_handle *dest);

/** Bytes not allocated to any block (a snapshot). */
MSEG_API uint64_t mseg_free_memory(mseg *seg);

/** 1 if no block (and no named object) is allocated, 0 if some is, or a
 * negative error. */
MSEG_API int mseg_all_memory_deallocated(mseg *seg);

/** Zero every free byte (Boost's zero_free_memory). @return 0 or an error. */
MSEG_API int mseg_zero_free_memory(mseg *seg);

/** Walk every structure of the segment (the seed's check_sanity). @return 0
 * when sound, MSEG_E_CORRUPT with mseg_last_error() naming the damage. */
MSEG_API MSEG_MUST_CHECK int mseg_check(mseg *seg);

/** Where a segment's memory is (mseg_stats()). The allocator cannot tell a
 * leaked block from a live one; a program that knows the blocks it holds
 * subtracts them from allocated_bytes to get what dead processes leaked. */
struct mseg_stats {
        uint64_t size;                  /* usable bytes now */
        uint64_t free_bytes;            /* as mseg_free_memory() (includes cached_bytes) */
        uint64_t allocated_bytes;       /* usable bytes of allocated blocks (clients' and the registry's) */
        uint64_t allocated_blocks;
        uint64_t cached_bytes;          /* free blocks held in attachments' caches */
        uint64_t overhead_bytes;        /* the allocator's records and superblock tails in the data area */
        uint64_t lock_repairs;          /* times a process died holding one of the segment's locks */
        uint64_t slots_reclaimed;       /* attachments of dead processes reclaimed so far */
        uint32_t slots_live;            /* attachment slots in use (live or being reclaimed) */
        uint32_t slots_dead;            /* of which the owner is gone: awaiting reclaim */
        uint32_t poisoned;              /* 1 when a repair failed and the segment refuses writes */
        uint32_t reserved0;
        uint64_t reserved[4];
};

/** Snapshot of the segment's memory figures, without taking a lock (exact
 * while no other process allocates).
 * @param[out] ret_stats set only on success.
 * @return 0, -EINVAL, -EAGAIN (the allocator's tables kept changing or are
 *         damaged; mseg_check() says which). */
MSEG_API MSEG_MUST_CHECK int mseg_stats(mseg *seg, struct mseg_stats *ret_stats);

/* ------------------------------------------------------ named objects */

/** Describes an object type. Build with MSEG_TYPE(T); @c destroy, if set,
 * runs on each element before the memory is freed. */
typedef struct mseg_type {
        const char *name;                       /* type name, 1..255 bytes */
        size_t size;                            /* element size */
        size_t align;                           /* element alignment, power of two */
        void (*destroy)(void *elem, size_t index);
} mseg_type;

#define MSEG_TYPE(T) (&(const mseg_type){ #T, sizeof(T), _Alignof(T), NULL })
#define MSEG_TYPE_DTOR(T, fn) (&(const mseg_type){ #T, sizeof(T), _Alignof(T), (fn) })

/** Initialise element @p index of a new array; return 0, or a negative errno
 * to fail (and undo) the whole construction. NULL init zero-fills. */
typedef int (*mseg_init_fn)(void *elem, size_t index, void *arg);

enum mseg_kind {
        MSEG_KIND_NAMED = 1,
        MSEG_KIND_UNIQUE = 2,
        MSEG_KIND_ANONYMOUS = 3,
};

/** Construct an array of @p count elements named @p name (1..255 bytes, any
 * bytes but NUL). Atomic across processes: of racing creators exactly one
 * succeeds. @p init runs on each element with the registry lock held (it may
 * itself use the construction family, up to 8 levels deep); if it fails,
 * the elements already built get type->destroy, newest first, and the name
 * and the memory are gone. Other processes find the object only once it is
 * whole.
 * NULL with errno EEXIST if the name exists, EINVAL, ENAMETOOLONG, ENOMEM,
 * EROFS, EUCLEAN, ETIMEDOUT (another process held the registry lock too
 * long), ELOOP (nested too deep), or the negated error an init returned. */
MSEG_API MSEG_MUST_CHECK void *mseg_construct(mseg *seg, const char *name, const mseg_type *type,
                                              size_t count, mseg_init_fn init, void *arg);

/** Return the existing object @p name, or construct it; atomic across
 * processes: racing callers all get the same object. NULL with errno as for
 * mseg_construct, or EPROTOTYPE when it exists with another type. */
MSEG_API MSEG_MUST_CHECK void *mseg_find_or_construct(mseg *seg, const char *name, const mseg_type *type,
                                                      size_t count, mseg_init_fn init, void *arg);

/** Find a named object. @param[out] ret_count element count (may be NULL).
 * NULL with errno ENOENT, EPROTOTYPE when it exists with another type (type
 * name, size or alignment differ), EINVAL, ENAMETOOLONG, EUCLEAN, or EAGAIN
 * (writers kept changing the index under it thousands of times in a row).
 * Never waits for a writer and writes nothing: works on read-only mappings. */
MSEG_API void *mseg_find(mseg *seg, const char *name, const mseg_type *type, size_t *ret_count);

/** Destroy a named object: the name goes first (finds stop seeing it), then
 * type->destroy runs on each element, then the memory is freed.
 * @return 0, -ENOENT, -EPROTOTYPE, -EROFS, -EINVAL, -ENAMETOOLONG,
 *         -ETIMEDOUT, -ELOOP, MSEG_E_CORRUPT. */
MSEG_API int mseg_destroy(mseg *seg, const char *name, const mseg_type *type);

/** Destroy an object (named, unique or anonymous) by the pointer the
 * construction family returned. A function address cannot be kept in the
 * segment (each process maps code elsewhere), so the destructor that runs is
 * the one of the type this process last used with that type name, size and
 * alignment, if any. Crash-atomic: a process killed inside it leaves the
 * object whole or destroyed, never leaked. @return 0, -EINVAL (not a live
 * object of @p seg, or destroyed already), -EROFS, -ETIMEDOUT, -ELOOP
 * (nested more than 8 levels inside destructors or init callbacks),
 * MSEG_E_CORRUPT. */
MSEG_API int mseg_destroy_ptr(mseg *seg, void *p);

/** Unique instances: one per type, keyed by the type's name. */
MSEG_API MSEG_MUST_CHECK void *mseg_construct_unique(mseg *seg, const mseg_type *type, size_t count,
                                                     mseg_init_fn init, void *arg);
MSEG_API MSEG_MUST_CHECK void *mseg_find_or_construct_unique(mseg *seg, const mseg_type *type, size_t count,
                                                             mseg_init_fn init, void *arg);
MSEG_API void *mseg_find_unique(mseg *seg, const mseg_type *type, size_t *ret_count);
MSEG_API int mseg_destroy_unique(mseg *seg, const mseg_type *type);

/** Anonymous instances: no name; destroy with mseg_destroy_ptr(). Made
 * under the registry lock like named ones, so a process killed before the
 * call returns leaves nothing allocated. NULL with errno as for
 * mseg_construct (but never EEXIST). */
MSEG_API MSEG_MUST_CHECK void *mseg_construct_anonymous(mseg *seg, const mseg_type *type, size_t count,
                                                        mseg_init_fn init, void *arg);

/** Information about an object from a pointer the construction family
 * returned. Name: the object's name (a unique object's is its type name);
 * NULL with errno 0 for an anonymous object, NULL with errno EINVAL for a
 * pointer that is not a live object. The name lives in the segment. */
MSEG_API const char *mseg_instance_name(mseg *seg, const void *p);
MSEG_API size_t mseg_instance_length(mseg *seg, const void *p);   /* element count; 0 on error */
MSEG_API int mseg_instance_kind(mseg *seg, const void *p);        /* enum mseg_kind or -errno */

/** Run @p fn while no other process or thread can create or destroy a name in
 * @p seg (Boost's atomic_func). @p fn may call the construction family.
 * Finds are never blocked; other writers wait (and give up with ETIMEDOUT
 * after MSEG_LOCK_TIMEOUT_MS, 10 s by default), so keep @p fn short.
 * @return what @p fn returned, or -EINVAL, -EROFS, -ETIMEDOUT, -ELOOP,
 *         -EDEADLK (this thread holds the registry locks of 4 segments),
 *         MSEG_E_CORRUPT. */
MSEG_API int mseg_atomic(mseg *seg, int (*fn)(mseg *seg, void *arg), void *arg);

/** Block until @p name exists (with @p type), at most @p timeout_ms
 * milliseconds (negative: no limit). Futex-based: every construct wakes the
 * registered waiters, and a waiter re-checks at least every 250 ms in case
 * its waker died. A read-only mapping cannot register (it cannot write), so
 * there the wait re-checks at intervals growing from 1 to 64 ms. Unique
 * objects are not names. @return 0, -ETIMEDOUT, -EPROTOTYPE, -EINVAL,
 *         -ENAMETOOLONG, MSEG_E_CORRUPT. */
MSEG_API MSEG_MUST_CHECK int mseg_wait_name(mseg *seg, const char *name, const mseg_type *type,
                                            int64_t timeout_ms);

/** One object, as iteration reports it. The strings are copies, valid
 * during the callback (another process may destroy the object meanwhile). */
struct mseg_object_info {
        const char *name;         /* NUL-terminated; NULL for anonymous */
        size_t name_len;
        const char *type_name;
        size_t elem_size;
        size_t align;
        size_t count;
        mseg_handle handle;       /* of the first element */
        int kind;                 /* enum mseg_kind */
};

/** Call @p fn for each named (resp. unique) object until it returns
 * non-zero. Iterates a snapshot of the objects alive at the call (taken
 * under the registry lock on a writable mapping): each is reported once,
 * unless it was destroyed since. @p fn runs without the lock and may
 * construct and destroy. @return 0, fn's non-zero value, -EINVAL, -ENOMEM,
 *         -EAGAIN, -ETIMEDOUT, or MSEG_E_CORRUPT. */
MSEG_API int mseg_foreach_named(mseg *seg, int (*fn)(const struct mseg_object_info *info, void *arg), void *arg);
MSEG_API int mseg_foreach_unique(mseg *seg, int (*fn)(const struct mseg_object_info *info, void *arg), void *arg);

MSEG_API size_t mseg_named_count(mseg *seg);
MSEG_API size_t mseg_unique_count(mseg *seg);

/** Size the name index for @p n names ahead (Boost's reserve_named_objects).
 * The index is freed with the last name (so that an empty segment holds no
 * memory); the reservation stays a floor for its next growth.
 * @return 0, -ENOMEM, -EROFS, -EINVAL, -ETIMEDOUT. */
MSEG_API int mseg_reserve_named(mseg *seg, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* MSEG_H */
