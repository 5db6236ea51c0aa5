/* SPDX-License-Identifier: MIT */
/*
 * test-crash-daemon: msegd killed with SIGKILL while its clients work.
 *
 *   1. A memory segment, kept across msegd's death by the service manager's
 *      descriptor store (sd-harness.h plays systemd): 100 client processes
 *      open it and allocate, free, grow and construct in it. msegd is
 *      killed; every client keeps working on its mapping (nothing there
 *      talks to msegd), and a mseg_grow() in flight fails or waits instead
 *      of hanging. Ten clients die while no msegd runs. A new msegd adopts
 *      the stored memfd; the surviving clients open the segment again and
 *      find the very same memory (a write through one handle is read
 *      through the other); the new msegd reclaims the slots of the ten that
 *      died in between; the segment passes mseg_check.
 *   2. A persistent segment without a descriptor store: msegd copies it to
 *      its state file every second while 30 clients hammer it (small blocks
 *      and runs of pages, constructions), then is killed. The new msegd
 *      serves the last copy, taken in the middle of all that: clients open
 *      it and work in it at once (no lock in it stays held by a process
 *      that never mapped it, client-lib/restore.c), and it passes
 *      mseg_check. Before the copy was taken under the page lock and
 *      repaired at load, such copies came back wedged (a lock held by a
 *      client of the lost memfd: 10 s timeouts) or torn (runs beyond the
 *      wilderness, superblocks without live descriptors).
 *   3. msegd itself killed inside a segment's critical sections (test hooks
 *      armed in msegd): holding the slot lock in the middle of reclaiming a
 *      dead client, and the page lock in the middle of a growth. A client
 *      repairs the page layer at its next large allocation; the next msegd
 *      finishes the reclaim; mseg_check passes.
 *
 * Every client runs under alarm(); a hang fails the test.
 */
#include "sd-harness.h"
#include "crash-harness.h"

#define NCLIENTS_MEM     100
#define NCLIENTS_PERSIST 30
#define NKILLED          10

struct dshared {
        _Atomic int phase;              /* 0 start, 1 work, 2 msegd dead, 3 msegd back, 4 finish */
        _Atomic int ready, reopened, failures;
        _Atomic uint64_t ops[NCLIENTS_MEM];
        _Atomic int grow_errors, grow_ok;
        char first_failure[512];
        _Atomic int fail_lock;
};

static struct dshared *sh;
static pid_t *live_pids;        /* killed at exit, so a failure leaves none behind */
static int nlive_pids;
static pid_t parent_pid;

static struct msegd pd;        /* msegd of the persistent part */

static void kill_clients(void) {
        if (getpid() != parent_pid)
                return;
        for (int i = 0; i < nlive_pids; i++)
                if (live_pids[i] > 0)
                        kill(live_pids[i], SIGKILL);
        msegd_kill(&pd);
}

#define DFAIL(...) do { \
        atomic_fetch_add(&sh->failures, 1); \
        if (atomic_exchange(&sh->fail_lock, 1) == 0) \
                snprintf(sh->first_failure, sizeof(sh->first_failure), __VA_ARGS__); \
        fprintf(stderr, "client %d: ", (int) getpid()); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); \
} while (0)

static const mseg_type u64_type = { "u64", 8, 8, NULL };

static void wait_phase(int p) {
        while (atomic_load(&sh->phase) < p)
                ch_sleep_us(1000);
}

/* Some allocator and registry work on @seg; returns how many steps. */
static uint64_t work(mseg *seg, void **live, size_t nlive, uint64_t *rng, int i) {
        uint64_t n = 0;

        for (int k = 0; k < 32; k++, n++) {
                size_t j = (size_t) (test_rand(rng) % nlive);
                if (live[j]) {
                        if (*(uint64_t *) live[j] != (uint64_t) i * 1000 + j)
                                DFAIL("block %zu of client %d damaged", j, i);
                        int r = mseg_free(seg, live[j]);
                        if (r < 0)
                                DFAIL("mseg_free: %s (%s)", mseg_strerror(r), mseg_last_error());
                        live[j] = NULL;
                } else {
                        uint64_t r = test_rand(rng);
                        /* small blocks, and runs of pages */
                        live[j] = mseg_alloc(seg, r % 10 ? 16 + (size_t) (r % 3000) : 8200 + (size_t) (r % 30000));
                        if (live[j])
                                *(uint64_t *) live[j] = (uint64_t) i * 1000 + j;
                        else if (errno != ENOMEM)
                                DFAIL("mseg_alloc: %s (%s)", strerror(errno), mseg_last_error());
                }
        }
        return n;
}

static void client(int i, const char *sock, const char *name, bool same_memory) {
        struct mseg_options o = { .socket_path = sock };
        void *live[16] = { 0 };
        uint64_t rng = 0x1234 + (uint64_t) i, *mine, *ctr;
        char own[32];
        mseg *seg, *again;
        int r;

        alarm(200);
        setenv("MSEG_TIMEOUT_MS", "5000", 1);
        r = mseg_open(&seg, name, MSEG_OPEN_ONLY, &o);
        if (r < 0) {
                DFAIL("client %d: open: %s (%s)", i, mseg_strerror(r), mseg_last_error());
                _exit(1);
        }
        ctr = mseg_find(seg, "ctr", &u64_type, NULL);
        snprintf(own, sizeof(own), "client.%d", i);
        mine = mseg_construct(seg, own, &u64_type, 16, NULL, NULL);
        if (!ctr || !mine) {
                DFAIL("client %d: no ctr or own object: %s", i, mseg_last_error());
                _exit(1);
        }
        for (int k = 0; k < 16; k++)
                mine[k] = (uint64_t) i * 100 + (uint64_t) k;
        atomic_fetch_add(&sh->ready, 1);
        wait_phase(1);
        while (atomic_load(&sh->phase) < 3) {
                atomic_fetch_add(&sh->ops[i], work(seg, live, 16, &rng, i));
                atomic_fetch_add((_Atomic uint64_t *) &ctr[i], 1);
                if (i % 25 == 0 && test_rand(&rng) % 8 == 0) {
                        /* A growth through msegd, maybe while it is dead:
                         * an answer or an error, never a hang. */
                        uint64_t want = mseg_size(seg) + (64 << 10);
                        r = mseg_grow(seg, want);
                        if (r < 0 && r != -ENOSPC)
                                atomic_fetch_add(&sh->grow_errors, 1);
                        else
                                atomic_fetch_add(&sh->grow_ok, 1);
                }
                for (int k = 0; k < 16; k++)
                        if (mine[k] != (uint64_t) i * 100 + (uint64_t) k)
                                DFAIL("client %d: own object damaged", i);
                ch_sleep_us(200);
        }
        /* msegd is back: open the segment again. */
        r = mseg_open(&again, name, MSEG_OPEN_ONLY, &o);
        if (r < 0) {
                DFAIL("client %d: open after the restart: %s (%s)", i, mseg_strerror(r), mseg_last_error());
                _exit(1);
        }
        {
                uint64_t *mine2 = mseg_find(again, own, &u64_type, NULL);
                void *live2[16] = { 0 };
                if (same_memory) {
                        /* The same memfd: one memory through two mappings. */
                        uint64_t *ctr2 = mseg_find(again, "ctr", &u64_type, NULL);
                        if (!mine2 || !ctr2)
                                DFAIL("client %d: objects missing after the restart", i);
                        else {
                                ctr2[i] = 4242 + (uint64_t) i;
                                if (atomic_load((_Atomic uint64_t *) &ctr[i]) != 4242 + (uint64_t) i)
                                        DFAIL("client %d: the reopened segment is not the same memory", i);
                        }
                } else if (!mine2 && errno != ENOENT) {
                        DFAIL("client %d: find in the restored copy: %s (%s)", i, strerror(errno),
                              mseg_last_error());
                }
                /* Whatever copy it is, it must work: no lock in it is held. */
                for (int k = 0; k < 4; k++)
                        work(again, live2, 16, &rng, i);
                snprintf(own, sizeof(own), "again.%d", i);
                if (!mseg_construct(again, own, &u64_type, 4, NULL, NULL))
                        DFAIL("client %d: construct after the restart: %s (%s)", i, strerror(errno),
                              mseg_last_error());
                for (int k = 0; k < 16; k++)
                        if (live2[k])
                                (void) mseg_free(again, live2[k]);
        }
        mseg_close(again);
        atomic_fetch_add(&sh->reopened, 1);
        wait_phase(4);
        for (int k = 0; k < 16; k++)
                if (live[k])
                        (void) mseg_free(seg, live[k]);
        mseg_close(seg);
        _exit(atomic_load(&sh->failures) ? 1 : 0);
}

static void wait_count(_Atomic int *v, int n, const char *what) {
        uint64_t t0 = ch_now_ms();

        while (atomic_load(v) < n) {
                if (ch_now_ms() - t0 > 120000)
                        FAIL("only %d of %d clients %s within 120 s (first failure: %s)", atomic_load(v), n, what,
                             sh->first_failure);
                ch_sleep_us(5000);
        }
}

/* Every live client made progress over @ms milliseconds. */
static void check_progress(const pid_t *pids, int n, unsigned ms, const char *when) {
        static uint64_t before[NCLIENTS_MEM];

        for (int i = 0; i < n; i++)
                before[i] = atomic_load(&sh->ops[i]);
        ch_sleep_us((uint64_t) ms * 1000);
        for (int i = 0; i < n; i++)
                if (pids[i] > 0 && i % 25 != 0 && atomic_load(&sh->ops[i]) == before[i])
                        FAIL("client %d made no progress in %u ms %s", i, ms, when);
        /* (Clients 0, 25, ... may wait in mseg_grow() for a reply from a dead
         * msegd, up to MSEG_TIMEOUT_MS.) */
}

static void reap_all(pid_t *pids, int n) {
        for (int i = 0; i < n; i++) {
                int st;
                if (pids[i] <= 0)
                        continue;
                ASSERT_EQ(waitpid(pids[i], &st, 0), pids[i]);
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                        FAIL("client %d ended with status 0x%x (first failure: %s)", i, st, sh->first_failure);
                pids[i] = 0;
        }
}

static void wait_no_dead_slots(mseg *seg, const char *when) {
        struct mseg_stats st;
        uint64_t t0 = ch_now_ms();

        for (;;) {
                ASSERT_OK(mseg_stats(seg, &st));
                if (st.slots_dead == 0)
                        return;
                if (ch_now_ms() - t0 > 20000)
                        FAIL("%u dead slot(s) not reclaimed %s", st.slots_dead, when);
                ch_sleep_us(10000);
        }
}

static void reset_shared(void) {
        memset(sh, 0, sizeof(*sh));
}

/* ---- 1. memory segment, descriptor store ---- */

static struct sd_mgr mgr;

/* Restart msegd (the store passed back), armed to stop at @hook; returns
 * the read end of its hook pipe. */
static int restart_armed(const char *hook) {
        int fds[2], st;

        ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
        ASSERT_EQ(dup2(fds[1], 200), 200);      /* inherited: no close-on-exec */
        close(fds[1]);
        if (mgr.pid > 0) {
                st = sd_kill(&mgr, SIGKILL);
                ASSERT(WIFSIGNALED(st));
        }
        setenv("MSEG_TEST_HOOK", hook, 1);
        setenv("MSEG_TEST_HOOK_FD", "200", 1);
        sd_start(&mgr, true, NULL);
        unsetenv("MSEG_TEST_HOOK");
        unsetenv("MSEG_TEST_HOOK_FD");
        close(200);
        sd_wait_ready(&mgr);
        return fds[0];
}

static void wait_hook(int fd, const char *what) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        char c;

        if (poll(&pfd, 1, 20000) != 1 || read(fd, &c, 1) != 1)
                FAIL("msegd never reached %s", what);
        close(fd);
}

/* A client that claims a slot, caches blocks, and dies. */
static void client_dies(const struct mseg_options *o) {
        pid_t pid = fork();
        int st;

        ASSERT(pid >= 0);
        if (pid == 0) {
                mseg *s;
                void *p[20];
                ch_die_with_parent();
                alarm(30);
                if (mseg_open(&s, "crashd-mem", MSEG_OPEN_ONLY, o) < 0)
                        _exit(1);
                for (int i = 0; i < 20; i++)
                        p[i] = mseg_alloc(s, 48 + 16 * (size_t) i);
                for (int i = 0; i < 20; i++)
                        (void) mseg_free(s, p[i]);
                kill(getpid(), SIGKILL);
        }
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
}

/* msegd killed inside its own critical sections: holding a segment's slot
 * lock in the middle of reclaiming a dead client, and holding its page lock
 * in the middle of a growth. The next locker (a client, or the next msegd)
 * repairs; nothing is lost. */
static void test_msegd_hooked(mseg *seg, const struct mseg_options *o) {
        struct mseg_stats st;
        uint64_t before;
        void *p;
        int fd, r;

        ASSERT_OK(mseg_stats(seg, &st));
        before = st.lock_repairs;
        fd = restart_armed("slot.reclaim:1");
        client_dies(o);                         /* msegd reclaims its slot ... */
        wait_hook(fd, "slot.reclaim");          /* ... and stops inside */
        ASSERT_OK(mseg_stats(seg, &st));
        ASSERT_EQ(st.slots_dead, 1);            /* RECLAIMING, slot lock held */
        sd_kill(&mgr, SIGKILL);
        sd_start(&mgr, true, NULL);
        sd_wait_ready(&mgr);
        wait_no_dead_slots(seg, "after msegd died reclaiming it");

        fd = restart_armed("pages.grow:1");
        r = 0;
        {
                pid_t pid = fork();
                ASSERT(pid >= 0);
                if (pid == 0) {
                        mseg *s;
                        alarm(30);
                        setenv("MSEG_TIMEOUT_MS", "3000", 1);
                        ch_die_with_parent();
                        if (mseg_open(&s, "crashd-mem", MSEG_OPEN_ONLY, o) < 0)
                                _exit(1);
                        (void) !mseg_grow(s, mseg_size(s) + (1 << 20));   /* msegd dies under it */
                        _exit(0);
                }
                wait_hook(fd, "pages.grow");    /* msegd holds the page lock */
                sd_kill(&mgr, SIGKILL);
                ASSERT_EQ(waitpid(pid, &r, 0), pid);
                ASSERT(WIFEXITED(r));
        }
        p = mseg_alloc(seg, 50000);             /* the page lock: owner died, repaired */
        ASSERT_NOT_NULL(p);
        ASSERT_OK(mseg_free(seg, p));
        sd_start(&mgr, true, NULL);
        sd_wait_ready(&mgr);
        ASSERT_OK(mseg_grow(seg, mseg_size(seg) + (1 << 20)));
        ASSERT_OK(mseg_check(seg));
        ASSERT_OK(mseg_stats(seg, &st));
        ASSERT(st.lock_repairs >= before + 2);
        printf("crash-daemon: msegd killed holding a segment's slot lock mid-reclaim and its page lock mid-growth: "
               "repaired (%llu lock repairs), the dead client's slot reclaimed by the next msegd\n",
               (unsigned long long) (st.lock_repairs - before));
}

static void test_fdstore(void) {
        struct mseg_options o = { .size = 160 << 20, .max_size = 192 << 20 };
        static pid_t pids[NCLIENTS_MEM];
        struct mseg_stats st;
        mseg *seg;
        void *p;
        int status;

        sd_setup(&mgr, 420);
        o.socket_path = mgr.sock_path;
        sd_start(&mgr, false, NULL);
        sd_wait_ready(&mgr);
        ASSERT_OK(mseg_open(&seg, "crashd-mem", MSEG_CREATE_ONLY, &o));
        ASSERT_NOT_NULL(mseg_construct(seg, "ctr", &u64_type, NCLIENTS_MEM, NULL, NULL));
        reset_shared();
        live_pids = pids;
        nlive_pids = NCLIENTS_MEM;
        for (int i = 0; i < NCLIENTS_MEM; i++) {
                pids[i] = fork();
                ASSERT(pids[i] >= 0);
                if (pids[i] == 0) {
                        ch_die_with_parent();
                        client(i, mgr.sock_path, "crashd-mem", true);
                }
        }
        wait_count(&sh->ready, NCLIENTS_MEM, "opened the segment");
        atomic_store(&sh->phase, 1);
        check_progress(pids, NCLIENTS_MEM, 300, "with msegd running");

        status = sd_kill(&mgr, SIGKILL);
        ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        atomic_store(&sh->phase, 2);
        check_progress(pids, NCLIENTS_MEM, 500, "after msegd was killed");
        ASSERT_NOT_NULL(p = mseg_alloc(seg, 5000));     /* so does the parent */
        ASSERT_OK(mseg_free(seg, p));
        /* Clients die while nobody could hear it. */
        for (int i = NCLIENTS_MEM - NKILLED; i < NCLIENTS_MEM; i++) {
                kill(pids[i], SIGKILL);
                ASSERT_EQ(waitpid(pids[i], &status, 0), pids[i]);
                pids[i] = 0;
        }
        ASSERT_OK(mseg_stats(seg, &st));
        ASSERT(st.slots_dead >= 1);

        sd_start(&mgr, true, NULL);
        sd_wait_ready(&mgr);
        ASSERT(sd_log_has(&mgr, "descriptor store: adopted 1 segment(s), dropped 0"));
        atomic_store(&sh->phase, 3);
        wait_count(&sh->reopened, NCLIENTS_MEM - NKILLED, "opened the segment again");
        wait_no_dead_slots(seg, "by the new msegd");
        atomic_store(&sh->phase, 4);
        reap_all(pids, NCLIENTS_MEM);
        if (atomic_load(&sh->failures))
                FAIL("%d client failure(s); first: %s", atomic_load(&sh->failures), sh->first_failure);
        wait_no_dead_slots(seg, "after the clients exited");
        ASSERT_OK(mseg_check(seg));
        ASSERT_OK(mseg_stats(seg, &st));
        printf("crash-daemon: msegd killed under %d clients, which kept working; %d died meanwhile; the new msegd "
               "adopted the memfd, reclaimed their slots (%llu in all), every survivor reopened the same memory; "
               "%d grows answered, %d failed while msegd was down; lock repairs %llu\n",
               NCLIENTS_MEM, NKILLED, (unsigned long long) st.slots_reclaimed, atomic_load(&sh->grow_ok),
               atomic_load(&sh->grow_errors), (unsigned long long) st.lock_repairs);
        test_msegd_hooked(seg, &o);
        mseg_close(seg);
        ASSERT_OK(mseg_remove("crashd-mem", &o));
        status = sd_kill(&mgr, SIGTERM);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* ---- 2. persistent segment, state file ---- */

static void test_persistent(void) {
        struct msegd *d = &pd;
        struct mseg_options o = { .size = 16 << 20, .max_size = 16 << 20, .flags = MSEG_PERSISTENT };
        static pid_t pids[NCLIENTS_PERSIST];
        struct mseg_stats st;
        mseg *seg, *copy;
        int r;

        msegd_start(d, "--sync-interval", "1", "--log-level", "info", NULL);
        o.socket_path = d->sock;
        ASSERT_OK(mseg_open(&seg, "crashd-persist", MSEG_CREATE_ONLY, &o));
        ASSERT_NOT_NULL(mseg_construct(seg, "ctr", &u64_type, NCLIENTS_MEM, NULL, NULL));
        reset_shared();
        live_pids = pids;
        nlive_pids = NCLIENTS_PERSIST;
        for (int i = 0; i < NCLIENTS_PERSIST; i++) {
                pids[i] = fork();
                ASSERT(pids[i] >= 0);
                if (pids[i] == 0) {
                        ch_die_with_parent();
                        client(i, d->sock, "crashd-persist", false);
                }
        }
        wait_count(&sh->ready, NCLIENTS_PERSIST, "opened the segment");
        atomic_store(&sh->phase, 1);
        /* Several copies are taken while the clients work. */
        check_progress(pids, NCLIENTS_PERSIST, 2500, "with msegd running");
        msegd_kill(d);
        atomic_store(&sh->phase, 2);
        check_progress(pids, NCLIENTS_PERSIST, 300, "after msegd was killed");
        msegd_start(d, "--sync-interval", "1", "--log-level", "info", NULL);
        atomic_store(&sh->phase, 3);
        wait_count(&sh->reopened, NCLIENTS_PERSIST, "worked in the restored copy");
        /* The copy is sound (once repaired). */
        ASSERT_OK(mseg_open(&copy, "crashd-persist", MSEG_OPEN_ONLY, &o));
        r = mseg_check(copy);
        if (r < 0)
                FAIL("the restored copy fails mseg_check: %s", mseg_last_error());
        atomic_store(&sh->phase, 4);
        reap_all(pids, NCLIENTS_PERSIST);
        if (atomic_load(&sh->failures))
                FAIL("%d client failure(s); first: %s", atomic_load(&sh->failures), sh->first_failure);
        /* The copy's slots name the clients of the lost memfd: reclaimed
         * once they are gone (at the next detach). */
        mseg_close(copy);
        ASSERT_OK(mseg_open(&copy, "crashd-persist", MSEG_OPEN_ONLY, &o));
        wait_no_dead_slots(copy, "in the restored copy");
        ASSERT_OK(mseg_check(copy));
        ASSERT_OK(mseg_stats(copy, &st));
        printf("crash-daemon: persistent segment restored from a copy taken under %d working clients: sound, "
               "%llu lock repair(s), %llu slot(s) reclaimed\n", NCLIENTS_PERSIST,
               (unsigned long long) st.lock_repairs, (unsigned long long) st.slots_reclaimed);
        mseg_close(copy);
        mseg_close(seg);
        ASSERT_OK(mseg_remove("crashd-persist", &o));
        msegd_stop(d);
        msegd_cleanup(d);
}

int main(void) {
        sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        ASSERT(sh != MAP_FAILED);
        signal(SIGPIPE, SIG_IGN);
        parent_pid = getpid();
        atexit(kill_clients);
        alarm(400);
        test_persistent();
        if (sd_msegd_has_systemd())
                test_fdstore();
        else
                printf("crash-daemon: descriptor-store part skipped (msegd built without libsystemd)\n");
        return 0;
}
