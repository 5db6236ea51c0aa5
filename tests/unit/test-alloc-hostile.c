/* SPDX-License-Identifier: MIT */
/*
 * test-alloc-hostile: images whose allocator metadata was written by an
 * enemy. Each case damages one structure of a realistic image on purpose:
 * cycles in the free-run bins and in a class's superblock list, links and
 * offsets pointing outside, counts out of range, garbage intent records and
 * tags. In a child with an alarm (a hang fails), the image is attached,
 * checked, allocated from and freed into: nothing may crash or hang, and
 * for structural damage mseg_check must name it (MSEG_E_CORRUPT).
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "alloc_layout.h"

#define SIZE ((size_t) 8 << 20)

static uint8_t *orig, *img;
static uint64_t keep[300];      /* offsets of live blocks in the image */
static int nkeep;

static struct a_root *root_in(uint8_t *base) {
        return (struct a_root *) (base + ((mseg_header *) base)->alloc_off);
}

static struct a_unit *utab_in(uint8_t *base) {
        return (struct a_unit *) (base + root_in(base)->utab_off);
}

static struct a_desc *desc_in(uint8_t *base, uint32_t i) {
        return (struct a_desc *) (base + root_in(base)->desc_off + (uint64_t) i * root_in(base)->desc_size);
}

static void make_image(void) {
        uint8_t *work = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        mseg *seg;
        uint64_t s = 11;

        ASSERT(work != MAP_FAILED);
        ASSERT_OK(mseg_buffer_create(&seg, work, SIZE));
        for (int i = 0; i < 300; i++) {
                size_t n = i % 10 == 0 ? 5000 + test_rand(&s) % 60000 : 16 + test_rand(&s) % 2000;
                void *p = mseg_alloc(seg, n);
                ASSERT_NOT_NULL(p);
                memset(p, 0x5a, 16);
                keep[i] = mseg_handle_of(seg, p);
        }
        /* free some, so there are free runs in bins and partial superblocks */
        for (int i = 0; i < 300; i++) {
                if (i % 3 == 0)
                        ASSERT_OK(mseg_free(seg, mseg_ptr(seg, keep[i])));
                else
                        keep[nkeep++] = keep[i];
        }
        ASSERT_OK(mseg_check(seg));
        /* The image as a live process leaves it: its slot, its magazines. */
        memcpy(orig, work, SIZE);
        mseg_close(seg);
        munmap(work, SIZE);
}

/* Exercise a damaged copy; the exit code says whether check saw it. */
static int exercise(void) {
        mseg *seg;
        int r, detected;

        r = mseg_buffer_attach(&seg, img, SIZE);
        if (r < 0)
                return r == MSEG_E_CORRUPT || r == MSEG_E_VERSION ? 0 : 3;
        r = mseg_check(seg);
        detected = r == MSEG_E_CORRUPT;
        for (int i = 0; i < 200; i++) {
                void *p = mseg_alloc(seg, i % 20 == 0 ? 70000 : 8 + (size_t) i * 37);
                if (p) {
                        memset(p, 0, 16);
                        (void) mseg_free(seg, p);
                } else if (errno != ENOMEM && errno != EUCLEAN && errno != ETIMEDOUT &&
                           errno != ENOTRECOVERABLE) {
                        return 4;
                }
        }
        for (int i = 0; i < nkeep; i++)
                (void) mseg_free(seg, img + keep[i]);
        (void) mseg_free(seg, img + 4096);
        (void) mseg_usable_size(seg, img + keep[0] + 16);
        (void) mseg_free_memory(seg);
        (void) mseg_all_memory_deallocated(seg);
        (void) mseg_zero_free_memory(seg);
        r = mseg_check(seg);
        (void) r;
        mseg_close(seg);
        return detected ? 0 : 2;
}

static void run_case(const char *what, void (*damage)(uint8_t *), bool must_detect) {
        pid_t pid;
        int st;

        memcpy(img, orig, SIZE);
        damage(img);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                alarm(30);
                _exit(exercise());
        }
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        if (WIFSIGNALED(st))
                FAIL("%s: child killed by signal %d%s", what, WTERMSIG(st),
                     WTERMSIG(st) == SIGALRM ? " (a hang)" : "");
        if (WEXITSTATUS(st) == 2 && must_detect)
                FAIL("%s: mseg_check did not report the damage", what);
        if (WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 2)
                FAIL("%s: child exited with %d", what, WEXITSTATUS(st));
        printf("%-44s %s\n", what, WEXITSTATUS(st) == 0 ? "detected" : "survived");
}

/* ---- the damage ---- */

static uint32_t first_free_run(uint8_t *b) {
        struct a_root *r = root_in(b);
        for (uint32_t i = 0; i < A_NBINS; i++)
                if (r->pages.bins[i])
                        return r->pages.bins[i] - 1;
        FAIL("image has no free run");
}

static void bin_cycle(uint8_t *b) {
        uint32_t u = first_free_run(b);
        utab_in(b)[u].next = u + 1;             /* points to itself */
}

static void bin_outside(uint8_t *b) {
        root_in(b)->pages.bins[5] = 0x7fffffff;
        root_in(b)->pages.binmask[0] |= 1u << 5;
}

static void bin_to_allocated(uint8_t *b) {
        uint32_t u = first_free_run(b);
        utab_in(b)[u].next = 1;                 /* unit 0: a superblock or a record */
}

static void tag_len_huge(uint8_t *b) {
        utab_in(b)[0].len = 0xfffffff0u;
}

static void tag_len_zero(uint8_t *b) {
        utab_in(b)[0].len = 0;
}

static void wild_beyond(uint8_t *b) {
        root_in(b)->pages.wild = 0xffffff00u;
}

static void tags_garbage(uint8_t *b) {
        struct a_unit *u = utab_in(b);
        uint64_t s = 3;
        for (int i = 0; i < 64; i++)
                ((uint64_t *) u)[test_rand(&s) % 256] = test_rand(&s);
}

static struct a_pool *busy_pool(uint8_t *b) {
        for (uint32_t c = 0; c < A_NCLASSES; c++)
                if (root_in(b)->pools[c].head)
                        return &root_in(b)->pools[c];
        FAIL("image has no listed superblock");
}

static void sb_list_cycle(uint8_t *b) {
        struct a_pool *pl = busy_pool(b);
        desc_in(b, pl->head - 1)->next = pl->head;
}

static void sb_list_outside(uint8_t *b) {
        busy_pool(b)->head = 0x7ffffff0u;
}

static void desc_class_garbage(uint8_t *b) {
        struct a_pool *pl = busy_pool(b);
        atomic_store(&desc_in(b, pl->head - 1)->live, A_DESC_LIVE | 0x7777);
}

static void desc_bits_full(uint8_t *b) {
        struct a_pool *pl = busy_pool(b);
        struct a_desc *d = desc_in(b, pl->head - 1);
        memset(d->bits, 0xff, root_in(b)->desc_size - A_DESC_HDR);
}

static void desc_live_on_large(uint8_t *b) {
        /* the superblock position of a large block's unit claims a class */
        struct a_root *r = root_in(b);
        for (int i = 0; i < nkeep; i++) {
                uint64_t rel = keep[i] - r->data_off;
                uint32_t u = (uint32_t) (rel >> 12);
                if (!(rel & 4095) && utab_in(b)[u].head == A_RUN_LARGE) {
                        atomic_store(&desc_in(b, u >> r->sb_shift)->live, A_DESC_LIVE | 3);
                        return;
                }
        }
}

static mseg_slot *live_slot(uint8_t *b) {
        mseg_header *h = (mseg_header *) b;
        mseg_slot *s = (mseg_slot *) (b + h->slots_off);
        for (uint32_t i = 0; i < h->nslots; i++)
                if (s[i].heap_off)
                        return &s[i];
        FAIL("image has no magazine record");
}

static void mag_count_huge(uint8_t *b) {
        struct a_heap *h = (struct a_heap *) (b + live_slot(b)->heap_off);
        for (int c = 0; c < A_NCLASSES; c++)
                h->count[c] = 0xffffffffu;
}

static void mag_entries_outside(uint8_t *b) {
        struct a_heap *h = (struct a_heap *) (b + live_slot(b)->heap_off);
        uint64_t *e = (uint64_t *) ((uint8_t *) h + A_HEAP_HDR);
        for (int i = 0; i < 400; i++)
                e[i] = i % 2 ? UINT64_MAX - (uint64_t) i : SIZE + (uint64_t) i * 16;
        for (int c = 0; c < A_NCLASSES; c++)
                h->count[c] = 8;
}

static void mag_entries_duplicate(uint8_t *b) {
        struct a_heap *h = (struct a_heap *) (b + live_slot(b)->heap_off);
        live_slot(b)->pid = 0x7ffffff0;         /* a dead owner's magazine holds still */
        uint64_t *e = (uint64_t *) ((uint8_t *) h + A_HEAP_HDR);
        uint32_t start = 0;
        for (uint32_t c = 0; c < A_NCLASSES; c++) {
                if (h->count[c] >= 2) {
                        e[start + 1] = e[start];
                        return;
                }
                start += mseg__mag_cap(c, root_in(b)->mag_max);
        }
        FAIL("no magazine holds two blocks");
}

static void heap_off_outside(uint8_t *b) {
        live_slot(b)->heap_off = SIZE - 8;
}

static void slot_state_garbage(uint8_t *b) {
        atomic_store(&live_slot(b)->state, 0xdeadbeefdeadbeefu);
}

static void page_intent_garbage(uint8_t *b) {
        struct a_intent *it = &root_in(b)->pages.intent;
        it->a = 0xfffffff0u;
        it->b = 100;
        it->c = 5;
        it->d = 0x7fffffff;
        atomic_store(&it->op, A_OP_P_FREE);
}

static void page_intent_plausible(uint8_t *b) {
        /* a "free" of unit 0 .. 3 that never happened */
        struct a_intent *it = &root_in(b)->pages.intent;
        it->a = 0;
        it->b = 4;
        it->c = 0;
        it->d = 4;
        it->n = A_RUN_LARGE;
        it->y = UINT32_MAX;
        atomic_store(&it->op, A_OP_P_FREE);
}

static void pool_intent_garbage(uint8_t *b) {
        struct a_pool *pl = busy_pool(b);
        pl->intent.x = live_slot(b)->heap_off;
        pl->intent.a = (uint32_t) (pl - root_in(b)->pools);
        pl->intent.b = 3;
        pl->intent.n = 0xffffff;
        atomic_store(&pl->intent.op, A_OP_REFILL);
}

static void lock_bytes_garbage(uint8_t *b) {
        memset(&root_in(b)->pages.lock, 0x41, sizeof(mseg_lock));
}

static void root_geometry(uint8_t *b) {
        root_in(b)->data_units += 1000;
}

int main(void) {
        orig = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        img = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        ASSERT(orig != MAP_FAILED && img != MAP_FAILED);
        make_image();
        setenv("MSEG_LOCK_TIMEOUT_MS", "500", 1);

        run_case("free-run bin: cycle", bin_cycle, true);
        run_case("free-run bin: head outside the data", bin_outside, true);
        run_case("free-run bin: link to an allocated run", bin_to_allocated, true);
        run_case("unit tag: huge length", tag_len_huge, true);
        run_case("unit tag: zero length", tag_len_zero, true);
        run_case("wilderness beyond the data", wild_beyond, true);
        run_case("unit table: random words", tags_garbage, false);
        run_case("superblock list: cycle", sb_list_cycle, true);
        run_case("superblock list: head outside", sb_list_outside, true);
        run_case("descriptor: class out of range", desc_class_garbage, true);
        run_case("descriptor: bitmap all set", desc_bits_full, true);
        run_case("descriptor: live over a large block", desc_live_on_large, true);
        run_case("magazine: counts out of range", mag_count_huge, true);
        run_case("magazine: entries outside the segment", mag_entries_outside, true);
        run_case("magazine: a block cached twice", mag_entries_duplicate, true);
        run_case("slot: record offset outside", heap_off_outside, true);
        run_case("slot: state garbage", slot_state_garbage, true);
        run_case("page intent: garbage", page_intent_garbage, true);
        run_case("page intent: plausible but false", page_intent_plausible, false);
        run_case("class intent: garbage", pool_intent_garbage, false);
        run_case("page lock: garbage bytes", lock_bytes_garbage, true);
        run_case("root geometry", root_geometry, true);
        munmap(orig, SIZE);
        munmap(img, SIZE);
        return 0;
}
