/* SPDX-License-Identifier: MIT */
/*
 * test-corrupt: attaching bytes that are not a valid segment fails with a
 * clear error, and a segment whose metadata was scribbled on never crashes
 * or hangs the caller: every case runs in a child with an alarm, which must
 * exit normally (0) — a signal (SIGSEGV, SIGBUS, SIGALRM for a hang) fails.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "internal.h"

#define SIZE (1u << 20)

static void *page_buf(size_t size) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        ASSERT(p != MAP_FAILED);
        return p;
}

/* A realistic image: live blocks of many sizes, some freed again. */
static void make_image(void *buf) {
        mseg *seg;
        void *keep[200];
        uint64_t s = 7;

        ASSERT_OK(mseg_buffer_create(&seg, buf, SIZE));
        for (int i = 0; i < 200; i++) {
                keep[i] = mseg_alloc(seg, 16 + test_rand(&s) % (i % 10 == 0 ? 20000 : 600));
                ASSERT_NOT_NULL(keep[i]);
                memset(keep[i], 0x5a, 16);
        }
        for (int i = 0; i < 200; i += 3)
                ASSERT_OK(mseg_free(seg, keep[i]));
        ASSERT_OK(mseg_check(seg));
        mseg_close(seg);
}

/* Exercise a possibly damaged image: attach, check, allocate, free. */
static int exercise(void *buf, size_t size) {
        mseg *seg;
        int r = mseg_buffer_attach(&seg, buf, size);

        if (r < 0)
                return r;
        r = mseg_check(seg);
        for (int i = 0; i < 50; i++) {
                void *p = mseg_alloc(seg, 8 + (size_t) i * 97);
                if (p) {
                        memset(p, 0, 8);
                        (void) mseg_free(seg, p);
                }
        }
        (void) mseg_free_memory(seg);
        (void) mseg_all_memory_deallocated(seg);
        if (mseg_check(seg) < 0) { /* expected for damaged images */ }
        mseg_close(seg);
        return r;
}

/* Run exercise() in a child; it must exit, not die or hang. */
static void survive(void *buf, size_t size, const char *what) {
        pid_t pid = fork();
        int st;

        ASSERT(pid >= 0);
        if (pid == 0) {
                alarm(20);
                (void) exercise(buf, size);
                _exit(0);
        }
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                FAIL("%s: child %s %d", what, WIFSIGNALED(st) ? "killed by signal" : "exited with",
                     WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
}

static void test_not_segments(void) {
        void *buf = page_buf(SIZE);
        mseg *seg = NULL;
        uint64_t s = 99;

        ASSERT(mseg_buffer_attach(&seg, buf, 0) < 0);                   /* empty */
        ASSERT_ERR(mseg_buffer_attach(&seg, buf, SIZE), MSEG_E_CORRUPT); /* all zero */
        ASSERT(strstr(mseg_last_error(), "magic") != NULL);
        for (size_t i = 0; i < SIZE / 8; i++)                            /* random */
                ((uint64_t *) buf)[i] = test_rand(&s);
        ASSERT_ERR(mseg_buffer_attach(&seg, buf, SIZE), MSEG_E_CORRUPT);
        ASSERT(seg == NULL);

        make_image(buf);
        ASSERT_ERR(mseg_buffer_attach(&seg, buf, 100), MSEG_E_CORRUPT);         /* truncated */
        ASSERT_ERR(mseg_buffer_attach(&seg, buf, SIZE / 2), MSEG_E_CORRUPT);
        ASSERT(strstr(mseg_last_error(), "truncated") != NULL);
        ASSERT(seg == NULL);

        mseg_header *h = buf;
        h->magic = __builtin_bswap32(MSEG_MAGIC);                               /* other endianness */
        ASSERT_ERR(mseg_buffer_attach(&seg, buf, SIZE), MSEG_E_VERSION);
        h->magic = MSEG_MAGIC;
        h->layout_version = MSEG_LAYOUT_VERSION + 1;                            /* future version */
        mseg__header_seal(h);
        ASSERT_ERR(mseg_buffer_attach(&seg, buf, SIZE), MSEG_E_VERSION);
        h->layout_version = MSEG_LAYOUT_VERSION;
        mseg__header_seal(h);
        ASSERT_OK(exercise(buf, SIZE));
        munmap(buf, SIZE);
}

/* Every single-bit flip of the checksummed header is caught at attach. */
static void test_header_bitflips(void) {
        void *buf = page_buf(SIZE);
        mseg *seg = NULL;

        make_image(buf);
        for (size_t byte = 0; byte < MSEG_HEADER_FIXED_BYTES + 16; byte++)
                for (int bit = 0; bit < 8; bit++) {
                        ((uint8_t *) buf)[byte] ^= (uint8_t) (1u << bit);
                        int r = mseg_buffer_attach(&seg, buf, SIZE);
                        if (r != MSEG_E_CORRUPT && r != MSEG_E_VERSION)
                                FAIL("flip of byte %zu bit %d: attach returned %d", byte, bit, r);
                        ((uint8_t *) buf)[byte] ^= (uint8_t) (1u << bit);
                }
        ASSERT_OK(exercise(buf, SIZE));
        munmap(buf, SIZE);
}

/* Hostile geometry with a valid checksum: the attacker recomputes it. */
static void test_hostile_geometry(void) {
        void *buf = page_buf(SIZE), *orig = page_buf(SIZE);
        mseg_header *h = buf;
        mseg *seg = NULL;

        make_image(orig);
        struct { size_t off; uint64_t val; int width; } cases[] = {
                { offsetof(mseg_header, size), (uint64_t) SIZE * 4, 8 },
                { offsetof(mseg_header, size), 4096, 8 },
                { offsetof(mseg_header, slots_off), SIZE - 64, 8 },
                { offsetof(mseg_header, nslots), 0xffffffffu, 4 },
                { offsetof(mseg_header, registry_off), UINT64_MAX - 100, 8 },
                { offsetof(mseg_header, registry_off), 8192 + 8, 8 },
                { offsetof(mseg_header, alloc_off), SIZE, 8 },
                { offsetof(mseg_header, alloc_off), 0, 8 },
                { offsetof(mseg_header, alloc_off), UINT64_MAX, 8 },
                { offsetof(mseg_header, header_size), 1, 4 },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                memcpy(buf, orig, SIZE);
                memcpy((uint8_t *) buf + cases[i].off, &cases[i].val, (size_t) cases[i].width);
                mseg__header_seal(h);
                int r = mseg_buffer_attach(&seg, buf, SIZE);
                if (r >= 0)
                        FAIL("hostile geometry case %zu was accepted", i);
                ASSERT(seg == NULL);
        }
        /* usable beyond the end is a dynamic field: caught without a checksum */
        memcpy(buf, orig, SIZE);
        atomic_store(&h->usable, (uint64_t) SIZE * 2);
        ASSERT_ERR(mseg_buffer_attach(&seg, buf, SIZE), MSEG_E_CORRUPT);
        munmap(buf, SIZE);
        munmap(orig, SIZE);
}

/* Scribbling on the allocator's and registry's metadata: never a crash or a
 * hang; filling their roots with 0xff is always detected. */
static void test_scribbled_metadata(void) {
        void *buf = page_buf(SIZE), *orig = page_buf(SIZE);
        mseg_header *h = orig;
        uint64_t s = 1234;

        make_image(orig);
        uint64_t meta_end = h->alloc_off + 64 * 1024;   /* roots and the first units */

        memcpy(buf, orig, SIZE);
        memset((uint8_t *) buf + h->alloc_off, 0xff, 4096);
        ASSERT(exercise(buf, SIZE) < 0);
        survive(buf, SIZE, "allocator root of 0xff");

        memcpy(buf, orig, SIZE);
        memset((uint8_t *) buf + h->registry_off, 0xff, h->registry_size);
        ASSERT(exercise(buf, SIZE) < 0);
        survive(buf, SIZE, "registry root of 0xff");

        memcpy(buf, orig, SIZE);
        memset((uint8_t *) buf + h->slots_off, 0xff, (size_t) h->nslots * 64);
        survive(buf, SIZE, "slots of 0xff");

        /* The allocator's unit table lives at the end of its region. */
        memcpy(buf, orig, SIZE);
        memset((uint8_t *) buf + SIZE - 16384, 0xff, 16384);
        survive(buf, SIZE, "end of the segment of 0xff");

        /* Random 64-bit words over the metadata: plausible-looking offsets. */
        for (int round = 0; round < 300; round++) {
                memcpy(buf, orig, SIZE);
                int n = 1 + (int) (test_rand(&s) % 8);
                for (int k = 0; k < n; k++) {
                        uint64_t at = h->slots_off + test_rand(&s) % (meta_end - h->slots_off - 8);
                        uint64_t v;
                        switch (test_rand(&s) % 4) {
                        case 0: v = test_rand(&s); break;
                        case 1: v = test_rand(&s) % SIZE; break;               /* inside */
                        case 2: v = SIZE + test_rand(&s) % SIZE; break;         /* just outside */
                        default: v = at & ~UINT64_C(7); break;                  /* self-pointing: cycles */
                        }
                        memcpy((uint8_t *) buf + (at & ~UINT64_C(7)), &v, 8);
                }
                char what[64];
                snprintf(what, sizeof(what), "random words round %d", round);
                survive(buf, SIZE, what);
        }
        /* Random bit flips anywhere in the image. */
        for (int round = 0; round < 200; round++) {
                memcpy(buf, orig, SIZE);
                for (int k = 0; k < 16; k++) {
                        uint64_t at = MSEG_HEADER_SIZE + test_rand(&s) % (SIZE - MSEG_HEADER_SIZE);
                        ((uint8_t *) buf)[at] ^= (uint8_t) (1u << (test_rand(&s) % 8));
                }
                char what[64];
                snprintf(what, sizeof(what), "bit flips round %d", round);
                survive(buf, SIZE, what);
        }
        munmap(buf, SIZE);
        munmap(orig, SIZE);
}

int main(void) {
        /* A scribbled lock word can look held by a live thread: lockers then
         * give up after the lock timeout. Keep it short here. */
        setenv("MSEG_LOCK_TIMEOUT_MS", "200", 1);
        test_not_segments();
        test_header_bitflips();
        test_hostile_geometry();
        test_scribbled_metadata();
        return 0;
}
