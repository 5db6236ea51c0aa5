/* SPDX-License-Identifier: MIT */
/*
 * test-alloc-threads: many threads of one process in one segment.
 *  - Threads allocate and free (fill patterns checked), and hand blocks to
 *    each other so that frees land in other threads' magazines.
 *  - Waves of threads: an exiting thread's slot returns to the process and
 *    the next wave reuses it (the slot count must not grow).
 *  - More threads than slots: the extra threads take the locked paths.
 *  - A thread that outlives the handle it used: its exit must not touch the
 *    closed handle.
 * Afterwards mseg_check passes and all memory is back.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "test.h"
#include "internal.h"

#define NLIVE 512

struct shared {
        mseg *seg;
        pthread_mutex_t mu;
        void *handoff[256];             /* blocks passed between threads */
        size_t nhand;
        uint64_t ops;
};

static uint8_t pat(const void *p) { return (uint8_t) ((uintptr_t) p >> 4); }

static void check(const uint8_t *p) {
        for (int i = 0; i < 16; i++)
                if (p[i] != pat(p))
                        FAIL("block %p byte %d is 0x%02x", (const void *) p, i, p[i]);
}

static void *worker(void *arg) {
        struct shared *sh = arg;
        void *live[NLIVE] = { 0 };
        uint64_t rng = (uint64_t) (uintptr_t) &live;

        for (uint64_t op = 0; op < sh->ops; op++) {
                size_t i = test_rand(&rng) % NLIVE;
                if (live[i]) {
                        check(live[i]);
                        if (test_rand(&rng) % 4 == 0) {
                                /* give it away: some other thread frees it */
                                pthread_mutex_lock(&sh->mu);
                                if (sh->nhand < 256) {
                                        sh->handoff[sh->nhand++] = live[i];
                                        live[i] = NULL;
                                }
                                pthread_mutex_unlock(&sh->mu);
                        }
                        if (live[i]) {
                                ASSERT_OK(mseg_free(sh->seg, live[i]));
                                live[i] = NULL;
                        }
                } else {
                        size_t n = test_rand(&rng) % 100 < 95 ? 16 + test_rand(&rng) % 1000
                                                               : 8192 + test_rand(&rng) % 30000;
                        uint8_t *p = mseg_alloc(sh->seg, n);
                        if (!p) {
                                ASSERT_EQ(errno, ENOMEM);
                                continue;
                        }
                        memset(p, pat(p), 16);
                        live[i] = p;
                }
                if (op % 64 == 0) {
                        void *q = NULL;
                        pthread_mutex_lock(&sh->mu);
                        if (sh->nhand)
                                q = sh->handoff[--sh->nhand];
                        pthread_mutex_unlock(&sh->mu);
                        if (q) {
                                check(q);
                                ASSERT_OK(mseg_free(sh->seg, q));
                        }
                }
        }
        for (size_t i = 0; i < NLIVE; i++)
                if (live[i])
                        ASSERT_OK(mseg_free(sh->seg, live[i]));
        return NULL;
}

static uint32_t live_slots(mseg *seg) {
        const mseg_header *h = seg->hdr;
        const mseg_slot *s = (const mseg_slot *) ((const uint8_t *) h + h->slots_off);
        uint32_t n = 0;

        for (uint32_t i = 0; i < h->nslots; i++)
                n += MSEG_SLOT_STATE(atomic_load(&((mseg_slot *) &s[i])->state)) == MSEG_SLOT_LIVE;
        return n;
}

static void run_threads(struct shared *sh, int n) {
        pthread_t t[32];

        for (int i = 0; i < n; i++)
                ASSERT_EQ(pthread_create(&t[i], NULL, worker, sh), 0);
        for (int i = 0; i < n; i++)
                ASSERT_EQ(pthread_join(t[i], NULL), 0);
        while (sh->nhand)
                ASSERT_OK(mseg_free(sh->seg, sh->handoff[--sh->nhand]));
}

static void test_waves(size_t size, int nthreads, uint64_t ops) {
        void *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        struct shared sh = { .ops = ops };
        uint32_t slots_after_first;

        ASSERT(buf != MAP_FAILED);
        pthread_mutex_init(&sh.mu, NULL);
        ASSERT_OK(mseg_buffer_create(&sh.seg, buf, size));
        run_threads(&sh, nthreads);
        ASSERT_OK(mseg_check(sh.seg));
        slots_after_first = live_slots(sh.seg);
        ASSERT(slots_after_first <= sh.seg->hdr->nslots);
        for (int wave = 0; wave < 3; wave++) {
                run_threads(&sh, nthreads);
                /* exited threads' slots were reused, not leaked: never more
                 * than one per thread alive at once (+1 for main) */
                ASSERT(live_slots(sh.seg) <= (uint32_t) nthreads + 1);
        }
        ASSERT_OK(mseg_check(sh.seg));
        ASSERT_EQ(mseg_all_memory_deallocated(sh.seg), 1);
        mseg_close(sh.seg);
        ASSERT_EQ(live_slots(&(struct mseg){ .hdr = buf }), 0);        /* close freed them all */
        printf("%zu KiB, %d threads: %u slots in use\n", size >> 10, nthreads, slots_after_first);
        munmap(buf, size);
}

/* A thread that allocated in a handle closed before it exits. */
static pthread_mutex_t late_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t late_cv = PTHREAD_COND_INITIALIZER;
static int late_stage;

static void *late_thread(void *arg) {
        mseg *seg = arg;
        void *p = mseg_alloc(seg, 100);

        ASSERT_NOT_NULL(p);
        ASSERT_OK(mseg_free(seg, p));
        pthread_mutex_lock(&late_mu);
        late_stage = 1;
        pthread_cond_broadcast(&late_cv);
        while (late_stage != 2)
                pthread_cond_wait(&late_cv, &late_mu);
        pthread_mutex_unlock(&late_mu);
        return NULL;                    /* the key destructor runs now */
}

static void test_outlived_handle(void) {
        size_t size = 32 << 20;
        void *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        mseg *seg;
        pthread_t t;

        ASSERT_OK(mseg_buffer_create(&seg, buf, size));
        ASSERT_EQ(pthread_create(&t, NULL, late_thread, seg), 0);
        pthread_mutex_lock(&late_mu);
        while (late_stage != 1)
                pthread_cond_wait(&late_cv, &late_mu);
        pthread_mutex_unlock(&late_mu);
        mseg_close(seg);                /* flushes the thread's magazine too */
        memset(buf, 0xab, size);        /* the memory is gone as far as the handle knows */
        pthread_mutex_lock(&late_mu);
        late_stage = 2;
        pthread_cond_broadcast(&late_cv);
        pthread_mutex_unlock(&late_mu);
        ASSERT_EQ(pthread_join(t, NULL), 0);
        /* and a new segment in the same memory works */
        ASSERT_OK(mseg_buffer_create(&seg, buf, size));
        void *p = mseg_alloc(seg, 100);
        ASSERT_NOT_NULL(p);
        ASSERT_OK(mseg_free(seg, p));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        mseg_close(seg);
        munmap(buf, size);
}

int main(void) {
        test_waves((size_t) 64 << 20, 4, 200000);
        test_waves((size_t) 2 << 20, 12, 30000);       /* 8 slots for 12 threads */
        test_waves((size_t) 512 << 10, 4, 30000);      /* no caches at all */
        test_outlived_handle();
        return 0;
}
