/* SPDX-License-Identifier: MIT */
/*
 * test-registry-race: creating a name is atomic across processes.
 *
 * 8 processes, each with its own mapping of one managed mapped file, start
 * each round together (a futex barrier) and race:
 *   - mseg_construct of one name: exactly one wins, the other 7 get EEXIST,
 *     and everyone then finds the winner's object, filled by the winner;
 *   - mseg_find_or_construct of one name, and of one unique type: all 8 get
 *     the same object;
 *   - mseg_destroy of the name: exactly one gets 0, the others ENOENT.
 * Then threads of one process race the same way on one handle. At the end
 * the registry is sound and empty and every byte is returned.
 */
#include <pthread.h>
#include <sched.h>

#include "test-registry-common.h"

#define NPROC 8
#define ROUNDS 600
#define NTHREADS 4
#define TROUNDS 1000
#define ELEMS 4

struct shared {
        struct barrier bar;
        int64_t made[ROUNDS][NPROC];    /* handle, or -errno */
        int destroyed[ROUNDS][NPROC];
        int winner[ROUNDS];
};

static int init_with_id(void *elem, size_t index, void *arg) {
        if (index == 0 && (*(int *) arg & 1))
                sched_yield();          /* widen the window for the losers */
        *(int64_t *) elem = *(int *) arg;
        return 0;
}

static void child(const char *path, struct shared *sh, int id) {
        mseg *seg = open_file_seg(path, MSEG_OPEN_ONLY, 0, 0);
        const mseg_type *t = MSEG_TYPE(int64_t);
        char name[64], tname[64];

        for (int r = 0; r < ROUNDS; r++) {
                mseg_type ut = { tname, sizeof(int64_t), _Alignof(int64_t), NULL };
                int64_t *p = NULL;
                size_t count = 0;

                snprintf(name, sizeof(name), "race/round %d", r);
                snprintf(tname, sizeof(tname), "unique_t%d", r);
                barrier_wait(&sh->bar);
                switch (r % 3) {
                case 0:
                        p = mseg_construct(seg, name, t, ELEMS, init_with_id, &id);
                        if (p)
                                sh->winner[r] = id;
                        else
                                ASSERT_EQ(errno, EEXIST);
                        break;
                case 1:
                        p = mseg_find_or_construct(seg, name, t, ELEMS, init_with_id, &id);
                        ASSERT_NOT_NULL(p);
                        break;
                case 2:
                        p = mseg_find_or_construct_unique(seg, &ut, ELEMS, init_with_id, &id);
                        ASSERT_NOT_NULL(p);
                        break;
                }
                sh->made[r][id] = p ? (int64_t) mseg_handle_of(seg, p) : -errno;
                barrier_wait(&sh->bar);

                /* Everyone sees one object, whole: all elements written by one init. */
                p = r % 3 == 2 ? mseg_find_unique(seg, &ut, &count) : mseg_find(seg, name, t, &count);
                ASSERT_NOT_NULL(p);
                ASSERT_EQ(count, ELEMS);
                for (int i = 1; i < ELEMS; i++)
                        ASSERT_EQ(p[i], p[0]);
                ASSERT(p[0] >= 0 && p[0] < NPROC);
                if (r % 3 == 0)
                        ASSERT_EQ(p[0], sh->winner[r]);
                barrier_wait(&sh->bar);

                sh->destroyed[r][id] = r % 3 == 2 ? mseg_destroy_unique(seg, &ut) : mseg_destroy(seg, name, t);
                barrier_wait(&sh->bar);
        }
        mseg_close(seg);
        _exit(0);
}

static void check_rounds(struct shared *sh) {
        int won[NPROC] = { 0 }, winners = 0;

        for (int r = 0; r < ROUNDS; r += 3)
                won[sh->winner[r]]++;
        for (int c = 0; c < NPROC; c++)
                winners += won[c] > 0;
        ASSERT(winners >= 2);                   /* they really raced */
        for (int r = 0; r < ROUNDS; r++) {
                int wins = 0, destroys = 0;
                int64_t h = 0;

                for (int c = 0; c < NPROC; c++) {
                        if (r % 3 == 0) {
                                if (sh->made[r][c] > 0) {
                                        wins++;
                                        ASSERT_EQ(sh->winner[r], c);
                                } else {
                                        ASSERT_EQ(sh->made[r][c], -EEXIST);
                                }
                        } else {
                                ASSERT(sh->made[r][c] > 0);
                                if (c == 0)
                                        h = sh->made[r][c];
                                ASSERT_EQ(sh->made[r][c], h);   /* one object for all */
                        }
                        if (sh->destroyed[r][c] == 0)
                                destroys++;
                        else
                                ASSERT_EQ(sh->destroyed[r][c], -ENOENT);
                }
                if (r % 3 == 0)
                        ASSERT_EQ(wins, 1);
                ASSERT_EQ(destroys, 1);
        }
}

/* ---- threads of one process, one handle ---- */

struct tctx {
        mseg *seg;
        pthread_barrier_t *bar;
        int id;
        _Atomic int *wins;
        _Atomic int *destroys;
        void *got[TROUNDS];
};

static void *thread_main(void *arg) {
        struct tctx *c = arg;
        char name[32];

        for (int r = 0; r < TROUNDS; r++) {
                snprintf(name, sizeof(name), "t%d", r);
                pthread_barrier_wait(c->bar);
                if (r % 2) {
                        c->got[r] = mseg_find_or_construct(c->seg, name, MSEG_TYPE(int64_t), 2, init_with_id, &c->id);
                        ASSERT_NOT_NULL(c->got[r]);
                } else {
                        c->got[r] = mseg_construct(c->seg, name, MSEG_TYPE(int64_t), 2, init_with_id, &c->id);
                        if (c->got[r])
                                atomic_fetch_add(&c->wins[r], 1);
                        else
                                ASSERT_EQ(errno, EEXIST);
                }
                pthread_barrier_wait(c->bar);
                if (mseg_destroy(c->seg, name, MSEG_TYPE(int64_t)) == 0)
                        atomic_fetch_add(&c->destroys[r], 1);
        }
        return NULL;
}

static void test_threads(mseg *seg) {
        static _Atomic int wins[TROUNDS], destroys[TROUNDS];
        pthread_barrier_t bar;
        pthread_t th[NTHREADS];
        struct tctx *c = calloc(NTHREADS, sizeof(*c));

        ASSERT(c);
        pthread_barrier_init(&bar, NULL, NTHREADS);
        for (int i = 0; i < NTHREADS; i++) {
                c[i] = (struct tctx){ .seg = seg, .bar = &bar, .id = i, .wins = wins, .destroys = destroys };
                ASSERT_EQ(pthread_create(&th[i], NULL, thread_main, &c[i]), 0);
        }
        for (int i = 0; i < NTHREADS; i++)
                pthread_join(th[i], NULL);
        for (int r = 0; r < TROUNDS; r++) {
                ASSERT_EQ(destroys[r], 1);
                if (r % 2 == 0) {
                        ASSERT_EQ(wins[r], 1);
                } else {
                        for (int i = 1; i < NTHREADS; i++)
                                ASSERT(c[i].got[r] == c[0].got[r]);
                }
        }
        pthread_barrier_destroy(&bar);
        free(c);
}

/* ---- threads reading while another thread destroys (one process) ----
 *
 * In a buffer or heap segment under AddressSanitizer the allocator poisons
 * freed blocks; a reader that meets an entry freed under it must still
 * neither crash nor be reported (names.c reads such memory on purpose and
 * throws the read away). */

struct rctx {
        mseg *seg;
        _Atomic int *stop;
        uint64_t found;
};

static void *reader_thread(void *arg) {
        struct rctx *c = arg;
        uint64_t rng = (uint64_t) (uintptr_t) c;
        char name[32];

        while (!atomic_load(c->stop)) {
                int d = (int) (test_rand(&rng) % 500);
                size_t count = 0;
                int64_t *p;

                snprintf(name, sizeof(name), "churn%d", d);
                p = mseg_find(c->seg, name, MSEG_TYPE(int64_t), &count);
                if (p) {
                        ASSERT_EQ(count, (size_t) d % 7 + 1);
                        c->found++;
                } else {
                        ASSERT_EQ(errno, ENOENT);
                }
        }
        return NULL;
}

static void test_thread_readers(void) {
        const uint64_t size = 8 << 20;
        void *buf = shared_area(size);
        _Atomic int stop = 0;
        struct rctx rc[2];
        pthread_t th[2];
        uint64_t rng = 5;
        char name[32];
        mseg *seg;

        ASSERT_OK(mseg_buffer_create(&seg, buf, size));
        for (int i = 0; i < 2; i++) {
                rc[i] = (struct rctx){ .seg = seg, .stop = &stop };
                ASSERT_EQ(pthread_create(&th[i], NULL, reader_thread, &rc[i]), 0);
        }
        for (int op = 0; op < 60000; op++) {
                int d = (int) (test_rand(&rng) % 500);

                snprintf(name, sizeof(name), "churn%d", d);
                if (op & 1)
                        (void) mseg_destroy(seg, name, MSEG_TYPE(int64_t));
                else if (!mseg_construct(seg, name, MSEG_TYPE(int64_t), (size_t) d % 7 + 1, NULL, NULL))
                        ASSERT_EQ(errno, EEXIST);
        }
        atomic_store(&stop, 1);
        for (int i = 0; i < 2; i++)
                pthread_join(th[i], NULL);
        ASSERT(rc[0].found + rc[1].found > 0);
        ASSERT_OK(mseg_check(seg));
        for (int d = 0; d < 500; d++) {
                snprintf(name, sizeof(name), "churn%d", d);
                (void) mseg_destroy(seg, name, MSEG_TYPE(int64_t));
        }
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        mseg_close(seg);
        munmap(buf, size);
}

int main(void) {
        char path[128];
        struct shared *sh = shared_area(sizeof(struct shared));
        pid_t pids[NPROC];
        mseg *seg;

        setvbuf(stdout, NULL, _IOLBF, 0);     /* forked children must not repeat it */
        scratch_path(path, sizeof(path), "race");
        seg = open_file_seg(path, MSEG_CREATE_ONLY, 4 << 20, 0);
        barrier_init(&sh->bar, NPROC);
        for (int i = 0; i < NPROC; i++) {
                pids[i] = fork();
                ASSERT(pids[i] >= 0);
                if (pids[i] == 0)
                        child(path, sh, i);
        }
        wait_children(pids, NPROC);
        check_rounds(sh);
        ASSERT_OK(mseg_check(seg));
        ASSERT_EQ(mseg_named_count(seg), 0);
        ASSERT_EQ(mseg_unique_count(seg), 0);
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);

        test_threads(seg);
        ASSERT_OK(mseg_check(seg));
        ASSERT_EQ(mseg_named_count(seg), 0);
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        mseg_close(seg);
        unlink(path);
        test_thread_readers();
        printf("test-registry-race: ok (%d rounds x %d processes, %d rounds x %d threads)\n", ROUNDS, NPROC,
               TROUNDS, NTHREADS);
        return 0;
}
