/* SPDX-License-Identifier: MIT */
/*
 * test-scribble: a client that writes garbage over a shared segment's
 * metadata hurts that segment only.
 *
 * For each kind of damage, a fresh brokered segment (the victim) is filled
 * with blocks and names; three worker processes allocate, free, construct,
 * find, destroy and check in it, and in a second segment (the bystander);
 * a scribbler process then writes garbage over one piece of the victim's
 * metadata. Every worker runs under alarm(): it must end by itself, not be
 * killed by a signal (a crash) or by the alarm (a hang). What the workers
 * may see on the victim is an error: MSEG_E_CORRUPT / EUCLEAN, -EINVAL for
 * a block the damage made unknown, -ETIMEDOUT or -ENOTRECOVERABLE for a
 * scribbled lock; a block it hands out still lies inside the segment. The
 * bystander never fails. Afterwards mseg_check() on the victim names the
 * damage (for the pieces it must detect), and msegd, which maps every
 * segment and reclaims dead clients' slots in it, still serves: the
 * bystander grows, new segments are created and removed, stat answers.
 *
 * Last, msegd facing a segment whose locks look held forever: clients ask
 * it to grow that segment, and die in it (so msegd reclaims), again and
 * again; a growth of the bystander must still be answered at once.
 *
 * The robust-list links of held locks: a lock's place in its holder's
 * robust list is kept in the lock (for the kernel), so a writer can rewrite
 * it while another process holds the lock. With glibc's robust mutexes the
 * holder's unlock wrote through those links, where the writer chose (a
 * SIGSEGV here, once). lock.c never reads them back: the case points them,
 * again and again, at a canary in memory every worker maps at the same
 * address, and the canary must stay untouched.
 */
#include "crash-harness.h"
#include "alloc_layout.h"

#define VICTIM_SIZE (UINT64_C(8) << 20)
#define NWORKERS 3

struct sshared {
        _Atomic int stop;
        _Atomic int failures;
        _Atomic int fail_lock;
        char first_failure[512];
        _Atomic uint64_t ok_ops, err_ops;
        _Atomic int codes[8];           /* corrupt, einval, etimedout, enotrecoverable, enomem, other, eexist/enoent, */
        uint64_t canary[16];            /* what rewritten lock links point at: must stay 0 */
};

static struct sshared *sh;
static struct msegd daemon_;
static struct mseg_options opts;

#define SFAIL(...) do { \
        atomic_fetch_add(&sh->failures, 1); \
        if (atomic_exchange(&sh->fail_lock, 1) == 0) \
                snprintf(sh->first_failure, sizeof(sh->first_failure), __VA_ARGS__); \
        fprintf(stderr, "pid %d: ", (int) getpid()); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); \
} while (0)

static const mseg_type u64_type = { "u64", 8, 8, NULL };

/* Count an error the victim may legitimately return. */
static void note(int code, const char *what) {
        int i;

        switch (code) {
        case MSEG_E_CORRUPT: case -EUCLEAN: i = 0; break;
        case -EINVAL: i = 1; break;
        case -ETIMEDOUT: i = 2; break;
        case -ENOTRECOVERABLE: i = 3; break;
        case -ENOMEM: i = 4; break;
        case -EEXIST: case -ENOENT: case -EPROTOTYPE: case -EROFS: i = 6; break;
        default:
                i = 5;
                SFAIL("%s: unexpected %d (%s: %s)", what, code, mseg_strerror(code), mseg_last_error());
                break;
        }
        atomic_fetch_add(&sh->codes[i], 1);
        atomic_fetch_add(&sh->err_ops, 1);
}

static int err_of_errno(void) {
        return errno == EUCLEAN ? MSEG_E_CORRUPT : -errno;
}

/* ---- the workers ---- */

static void bystander_step(mseg *b, uint64_t *rng) {
        void *p = mseg_alloc(b, 16 + (size_t) (test_rand(rng) % 20000));
        int r;

        if (!p) {
                SFAIL("bystander: mseg_alloc: %s (%s)", strerror(errno), mseg_last_error());
                return;
        }
        memset(p, 0x3c, 16);
        r = mseg_free(b, p);
        if (r < 0)
                SFAIL("bystander: mseg_free: %s (%s)", mseg_strerror(r), mseg_last_error());
}

static void victim_step(mseg *v, void **live, uint64_t *rng) {
        uint8_t *base = mseg_address(v);
        uint64_t size = mseg_size(v), x = test_rand(rng);
        size_t j = (size_t) (x % 32);
        char name[32];
        int r;

        switch ((x >> 8) % 6) {
        case 0:
        case 1:
                if (live[j]) {
                        r = mseg_free(v, live[j]);
                        if (r < 0)
                                note(r, "free");
                        else
                                atomic_fetch_add(&sh->ok_ops, 1);
                        live[j] = NULL;
                } else {
                        size_t n = (x >> 16) % 4 ? 16 + (size_t) ((x >> 20) % 3000) : 9000 + (size_t) ((x >> 20) % 40000);
                        uint8_t *p = mseg_alloc(v, n);
                        if (!p) {
                                note(err_of_errno(), "alloc");
                        } else if (p < base || p + n > base + size) {
                                SFAIL("victim: a block of %zu bytes at %p outside the segment [%p, +%llu)", n,
                                      (void *) p, (void *) base, (unsigned long long) size);
                        } else {
                                memset(p, 0x5a, n < 64 ? n : 64);
                                live[j] = p;
                                atomic_fetch_add(&sh->ok_ops, 1);
                        }
                }
                break;
        case 2:
                snprintf(name, sizeof(name), "w%d.%u", (int) getpid(), (unsigned) (x >> 16) % 16);
                if (!mseg_find_or_construct(v, name, &u64_type, 8, NULL, NULL))
                        note(err_of_errno(), "construct");
                else
                        atomic_fetch_add(&sh->ok_ops, 1);
                break;
        case 3:
                snprintf(name, sizeof(name), "w%d.%u", (int) getpid(), (unsigned) (x >> 16) % 16);
                r = mseg_destroy(v, name, &u64_type);
                if (r < 0)
                        note(r, "destroy");
                else
                        atomic_fetch_add(&sh->ok_ops, 1);
                break;
        case 4: {
                size_t count = 0;
                uint64_t *p;
                snprintf(name, sizeof(name), "pop.%u", (unsigned) (x >> 16) % 64);
                p = mseg_find(v, name, &u64_type, &count);
                if (!p)
                        note(err_of_errno(), "find");
                else if ((uint8_t *) p < base || (uint8_t *) (p + count) > base + size)
                        SFAIL("victim: find returned an object outside the segment");
                else
                        atomic_fetch_add(&sh->ok_ops, 1);
                break;
        }
        default:
                if ((x >> 16) % 8 == 0) {
                        r = mseg_check(v);
                        if (r < 0)
                                note(r, "check");
                } else {
                        struct mseg_stats st;
                        r = mseg_stats(v, &st);
                        if (r < 0 && r != -EAGAIN)
                                note(r, "stats");
                        (void) mseg_free_memory(v);
                }
                break;
        }
}

#include <execinfo.h>
static void on_crash(int sig) {
        void *bt[32];
        int n = backtrace(bt, 32);
        (void) !write(2, "worker crashed:\n", 16);
        backtrace_symbols_fd(bt, n, 2);
        signal(sig, SIG_DFL);
        raise(sig);
}

static void worker(const char *victim, int k) {
        mseg *v, *b;
        void *live[32] = { 0 };
        uint64_t rng = 77 + (uint64_t) k;
        int r;

        if (getenv("CH_DEBUG"))
                signal(SIGSEGV, on_crash);
        alarm(60);
        r = mseg_open(&v, victim, MSEG_OPEN_ONLY, &opts);
        if (r < 0) {
                SFAIL("worker: open victim: %s", mseg_strerror(r));
                _exit(1);
        }
        r = mseg_open(&b, "bystander", MSEG_OPEN_ONLY, &opts);
        if (r < 0) {
                SFAIL("worker: open bystander: %s", mseg_strerror(r));
                _exit(1);
        }
        while (!atomic_load(&sh->stop)) {
                victim_step(v, live, &rng);
                bystander_step(b, &rng);
        }
        r = mseg_check(b);
        if (r < 0)
                SFAIL("bystander fails mseg_check: %s", mseg_last_error());
        for (int j = 0; j < 32; j++)
                if (live[j])
                        (void) mseg_free(v, live[j]);
        mseg_close(v);
        mseg_close(b);
        _exit(0);
}

/* ---- the damage ---- */

enum target {
        T_PAGE_LOCK_HELD, T_CLASS_LOCK_GARBAGE, T_REG_LOCK_HELD, T_PAGE_INTENT, T_BINS, T_UNIT_TABLE,
        T_DESCRIPTORS, T_SLOTS, T_MAGAZINE, T_REG_TABLE_WORD, T_REG_TABLE, T_REG_ENTRY, T_HEADER, T_USABLE,
        T_LOCK_LINKS, T_N
};

static const struct {
        const char *name;
        bool check_detects;             /* mseg_check must report it */
} targets[T_N] = {
        [T_PAGE_LOCK_HELD] = { "page lock looks held", true },
        [T_CLASS_LOCK_GARBAGE] = { "class lock of garbage", true },
        [T_REG_LOCK_HELD] = { "registry lock looks held", true },
        [T_PAGE_INTENT] = { "page intent of garbage", true },
        [T_BINS] = { "free-run bins of garbage", true },
        [T_UNIT_TABLE] = { "unit table of garbage", true },
        [T_DESCRIPTORS] = { "superblock descriptors of garbage", true },
        [T_SLOTS] = { "attachment slots of garbage", true },
        [T_MAGAZINE] = { "a magazine of garbage", true },
        [T_REG_TABLE_WORD] = { "registry table word of garbage", true },
        [T_REG_TABLE] = { "registry table of garbage", true },
        [T_REG_ENTRY] = { "registry entries of garbage", true },
        [T_HEADER] = { "header checksum field", true },
        [T_USABLE] = { "usable size beyond the segment", false },
        [T_LOCK_LINKS] = { "robust-list links of held locks", false },
};

static void fill_random(void *p, size_t n, uint64_t *rng) {
        uint8_t *b = p;

        for (size_t i = 0; i < n; i++)
                b[i] = (uint8_t) test_rand(rng);
}

struct entry_ctx {
        uint64_t off[8];
        int n;
};

static int entry_cb(const struct mseg_object_info *info, void *arg) {
        struct entry_ctx *x = arg;

        if (x->n < 8 && !strncmp(info->name, "pop.", 4))
                x->off[x->n++] = info->handle;
        return 0;
}

static void scribble(const char *victim, enum target t) {
        struct mseg__alloc_local *L;
        uint64_t rng = 0xbad + (uint64_t) t;
        reg_root *rr;
        mseg *v;

        if (mseg_open(&v, victim, MSEG_OPEN_ONLY, &opts) < 0)
                _exit(1);
        L = v->alloc;
        rr = reg_root_of(v);
        switch (t) {
        case T_PAGE_LOCK_HELD:
                /* a TID no thread has, without the owner-died bit */
                __atomic_store_n(&L->root->pages.lock.word, 0x3ffffff0, __ATOMIC_RELEASE);
                break;
        case T_CLASS_LOCK_GARBAGE:
                for (int c = 0; c < 8; c++)
                        memset(&L->root->pools[c].lock, 0xa5, sizeof(mseg_lock));
                break;
        case T_LOCK_LINKS: {
                /* Over and over for a while, so that most land on locks
                 * that workers hold. The canary sits where a glibc-style
                 * unlink would write: the back link of the "next" entry. */
                uintptr_t bait = (uintptr_t) &sh->canary[8];
                uint64_t n = 0;

                for (uint64_t t0 = ch_now_ms(); ch_now_ms() - t0 < 300; n++) {
                        for (int c = 0; c < A_NCLASSES; c++) {
                                atomic_store(&L->root->pools[c].lock.next, bait);
                                atomic_store(&L->root->pools[c].lock.prev, bait);
                        }
                        atomic_store(&L->root->pages.lock.next, bait);
                        atomic_store(&L->root->pages.lock.prev, bait);
                        atomic_store(&L->root->slot_lock.next, bait);
                        atomic_store(&rr->lock.next, bait);
                        atomic_store(&rr->lock.prev, bait);
                }
                if (n < 100)
                        _exit(4);
                break;
        }
        case T_REG_LOCK_HELD:
                __atomic_store_n(&rr->lock.word, 0x3ffffff0, __ATOMIC_RELEASE);
                break;
        case T_PAGE_INTENT:
                fill_random((uint8_t *) &L->root->pages.intent + 4, sizeof(struct a_intent) - 4, &rng);
                atomic_store(&L->root->pages.intent.op, (uint32_t) A_OP_P_FREE);
                break;
        case T_BINS:
                fill_random(L->root->pages.bins, sizeof(L->root->pages.bins), &rng);
                memset(L->root->pages.binmask, 0xff, sizeof(L->root->pages.binmask));
                break;
        case T_UNIT_TABLE:
                fill_random(L->utab, (size_t) atomic_load(&L->root->pages.wild) * sizeof(struct a_unit), &rng);
                break;
        case T_DESCRIPTORS:
                for (uint32_t d = 0; d < 8 && d < L->ndesc; d++)
                        fill_random(a_desc_at(L, d), A_DESC_HDR, &rng);
                break;
        case T_SLOTS:
                fill_random(L->base + L->slots_off, (size_t) L->nslots * MSEG_SLOT_SIZE, &rng);
                break;
        case T_MAGAZINE:
                for (uint32_t i = 0; i < L->nslots; i++) {
                        struct a_heap *h = mseg__heap_at(L, mseg__slot_at(L, i)->heap_off);
                        if (h)
                                fill_random((uint8_t *) h + offsetof(struct a_heap, count),
                                            ((size_t) L->heap_units << A_UNIT_SHIFT) - offsetof(struct a_heap, count),
                                            &rng);
                }
                break;
        case T_REG_TABLE_WORD:
                atomic_store(&rr->table, test_rand(&rng));
                break;
        case T_REG_TABLE: {
                reg_table *tb = mseg_ptr(v, reg_tword_off(atomic_load(&rr->table)));
                if (tb)
                        fill_random(tb, 64 + 8 * 64, &rng);
                break;
        }
        case T_REG_ENTRY: {
                struct entry_ctx x = { .n = 0 };
                (void) mseg_foreach_named(v, entry_cb, &x);
                for (int i = 0; i < x.n; i++) {
                        uint8_t *obj = mseg_ptr(v, x.off[i]);
                        uint64_t delta;
                        memcpy(&delta, obj - 8, 8);
                        fill_random(obj - delta, sizeof(reg_entry), &rng);
                }
                break;
        }
        case T_HEADER:
                v->hdr->alloc_off ^= 0x1000;    /* a fixed field: the checksum no longer matches */
                break;
        case T_USABLE:
                atomic_store(&v->hdr->usable, UINT64_MAX - 4095);
                break;
        default:
                break;
        }
        /* Dies without detaching anything: msegd reclaims in the damage. */
        _exit(0);
}

/* ---- one case ---- */

static void populate(mseg *v) {
        void *keep[64];
        char name[32];

        for (int i = 0; i < 64; i++) {
                uint64_t *p;
                snprintf(name, sizeof(name), "pop.%d", i);
                p = mseg_construct(v, name, &u64_type, 4 + (size_t) i, NULL, NULL);
                ASSERT_NOT_NULL(p);
                keep[i] = mseg_alloc(v, 16 + (size_t) i * 300);
                ASSERT_NOT_NULL(keep[i]);
        }
        for (int i = 0; i < 64; i += 2)
                ASSERT_OK(mseg_free(v, keep[i]));
}

static pid_t spawn(void (*fn)(const char *, int), const char *victim, int k) {
        pid_t pid = fork();

        ASSERT(pid >= 0);
        if (pid == 0) {
                ch_die_with_parent();
                fn(victim, k);
        }
        return pid;
}

static void scribble_entry(const char *victim, int t) {
        alarm(30);
        scribble(victim, (enum target) t);
}

static void msegd_serves(const char *when) {
        struct mseg_segment_info info;
        mseg *b, *n;
        void *p;
        int r;

        if (kill(daemon_.pid, 0) < 0)
                FAIL("msegd died %s", when);
        ASSERT_OK(mseg_open(&b, "bystander", MSEG_OPEN_ONLY, &opts));
        ASSERT_NOT_NULL(p = mseg_alloc(b, 3000));
        ASSERT_OK(mseg_free(b, p));
        r = mseg_grow(b, mseg_size(b) + 4096);
        if (r < 0 && r != -ENOSPC)
                FAIL("bystander cannot grow %s: %s (%s)", when, mseg_strerror(r), mseg_last_error());
        ASSERT_OK(mseg_check(b));
        mseg_close(b);
        ASSERT_OK(mseg_stat("bystander", &opts, &info));
        {
                struct mseg_options o = opts;
                o.size = 1 << 20;
                ASSERT_OK(mseg_open(&n, "fresh", MSEG_CREATE_ONLY, &o));
                ASSERT_NOT_NULL(mseg_construct(n, "x", &u64_type, 1, NULL, NULL));
                mseg_close(n);
                ASSERT_OK(mseg_remove("fresh", &opts));
        }
}

static void run_case(enum target t) {
        struct mseg_options o = opts;
        char victim[64];
        pid_t pids[NWORKERS], sp;
        mseg *v;
        int st, r;

        snprintf(victim, sizeof(victim), "victim-%d", (int) t);
        o.size = VICTIM_SIZE;
        o.max_size = 2 * VICTIM_SIZE;
        ASSERT_OK(mseg_open(&v, victim, MSEG_CREATE_ONLY, &o));
        populate(v);
        ASSERT_OK(mseg_check(v));
        memset(sh, 0, sizeof(*sh));
        for (int k = 0; k < NWORKERS; k++)
                pids[k] = spawn(worker, victim, k);
        ch_sleep_us(100 * 1000);
        sp = spawn(scribble_entry, victim, (int) t);
        ASSERT_EQ(waitpid(sp, &st, 0), sp);
        ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ch_sleep_us(700 * 1000);
        atomic_store(&sh->stop, 1);
        for (int k = 0; k < NWORKERS; k++) {
                ASSERT_EQ(waitpid(pids[k], &st, 0), pids[k]);
                if (!WIFEXITED(st))
                        FAIL("%s: a worker was killed by signal %d (%s)", targets[t].name, WTERMSIG(st),
                             WTERMSIG(st) == SIGALRM ? "it hung" : "it crashed");
                if (WEXITSTATUS(st) != 0)
                        FAIL("%s: a worker failed: %s", targets[t].name, sh->first_failure);
        }
        if (atomic_load(&sh->failures))
                FAIL("%s: %s", targets[t].name, sh->first_failure);
        /* A worker that held the lock when its word was rewritten releases
         * it for real (its unlock clears the word whatever it holds), undoing a
         * "looks held" scribble: make it look held again, now that the
         * workers are gone, so the check sees what it must find. */
        if (t == T_PAGE_LOCK_HELD)
                __atomic_store_n(&v->alloc->root->pages.lock.word, 0x3ffffff0, __ATOMIC_RELEASE);
        if (t == T_REG_LOCK_HELD)
                __atomic_store_n(&reg_root_of(v)->lock.word, 0x3ffffff0, __ATOMIC_RELEASE);
        for (unsigned i = 0; i < sizeof(sh->canary) / sizeof(sh->canary[0]); i++)
                if (sh->canary[i])
                        FAIL("%s: a worker wrote %#llx outside the segment, where a rewritten lock link "
                             "pointed", targets[t].name, (unsigned long long) sh->canary[i]);
        r = mseg_check(v);
        if (targets[t].check_detects && r >= 0)
                FAIL("%s: mseg_check did not notice", targets[t].name);
        printf("scribble: %-34s workers: %6llu ok, %5llu errors (corrupt %d, einval %d, timeout %d, "
               "unrecoverable %d, enomem %d); mseg_check: %s\n", targets[t].name,
               (unsigned long long) atomic_load(&sh->ok_ops), (unsigned long long) atomic_load(&sh->err_ops),
               sh->codes[0], sh->codes[1], sh->codes[2], sh->codes[3], sh->codes[4],
               r < 0 ? mseg_last_error() : "passes");
        fflush(stdout);
        mseg_close(v);
        ASSERT_OK(mseg_remove(victim, &opts));
        msegd_serves(targets[t].name);
}

/* ---- msegd and a segment whose locks are held forever ---- */

static void grower(const char *victim, int k) {
        mseg *v;

        (void) k;
        alarm(60);
        if (mseg_open(&v, victim, MSEG_OPEN_ONLY, &opts) < 0)
                _exit(1);
        /* msegd takes this segment's page lock to grow it; odd ones just
         * leave, and msegd's reclaim takes its slot lock */
        if (k % 2 == 0)
                (void) !mseg_grow(v, mseg_size(v) + (64 << 10) * (uint64_t) (k + 1));
        _exit(0);
}

static void test_wedged(void) {
        struct mseg_options o = opts;
        const char *victim = "wedged";
        pid_t pids[12];
        uint64_t t0, dt;
        mseg *v, *b;
        int st, r;

        o.size = VICTIM_SIZE;
        o.max_size = 4 * VICTIM_SIZE;
        ASSERT_OK(mseg_open(&v, victim, MSEG_CREATE_ONLY, &o));
        populate(v);
        /* every lock of the segment looks held by a thread that never ends */
        __atomic_store_n(&v->alloc->root->pages.lock.word, 0x3ffffff0, __ATOMIC_RELEASE);
        __atomic_store_n(&v->alloc->root->slot_lock.word, 0x3ffffff0, __ATOMIC_RELEASE);
        for (int c = 0; c < A_NCLASSES; c++)
                __atomic_store_n(&v->alloc->root->pools[c].lock.word, 0x3ffffff0, __ATOMIC_RELEASE);
        for (int k = 0; k < 12; k++)
                pids[k] = spawn(grower, victim, k);
        ch_sleep_us(1000 * 1000);      /* their grows and their deaths reach msegd */
        ASSERT_OK(mseg_open(&b, "bystander", MSEG_OPEN_ONLY, &opts));
        t0 = ch_now_ms();
        r = mseg_grow(b, mseg_size(b) + 4096);
        dt = ch_now_ms() - t0;
        if (r < 0 && r != -ENOSPC)
                FAIL("bystander grow while msegd faces a wedged segment: %s (%s)", mseg_strerror(r),
                     mseg_last_error());
        if (dt > 2000)
                FAIL("msegd took %llu ms to grow the bystander while another segment's locks were held: "
                     "its workers wait on that segment", (unsigned long long) dt);
        mseg_close(b);
        for (int k = 0; k < 12; k++) {
                ASSERT_EQ(waitpid(pids[k], &st, 0), pids[k]);
                if (!WIFEXITED(st))
                        FAIL("a grower of the wedged segment was killed by signal %d", WTERMSIG(st));
        }
        printf("scribble: msegd answered a growth of another segment in %llu ms while 12 clients grew and left "
               "a segment whose locks are all held\n", (unsigned long long) dt);
        mseg_close(v);
        ASSERT_OK(mseg_remove(victim, &opts));
        msegd_serves("after the wedged segment");
}

static pid_t parent_pid;

/* ---- a lock rewritten while its holder holds it ----
 *
 * A holder whose lock was rewritten under it (its word names another
 * thread, its kind is garbage) must still release it and take it off its
 * robust list: else the next lock it takes anywhere writes through the
 * stale entry, into a segment it has unmapped meanwhile (SIGSEGV), and
 * nobody can ever take that lock again. */

struct held_ctx {
        _Atomic int *step;
};

static int hold_and_wait(mseg *seg, void *arg) {
        struct held_ctx *x = arg;

        (void) seg;
        atomic_store(x->step, 1);               /* holding the registry lock */
        while (atomic_load(x->step) != 2)
                ch_sleep_us(1000);
        return 0;
}

static void test_rewritten_while_held(void) {
        struct mseg_options o = opts;
        _Atomic int *step = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        reg_root *rr;
        mseg *v;
        pid_t pid;
        int st;

        ASSERT(step != MAP_FAILED);
        o.size = 1 << 20;
        ASSERT_OK(mseg_open(&v, "rewritten", MSEG_CREATE_ONLY, &o));
        rr = reg_root_of(v);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                struct held_ctx x = { step };
                mseg *a, *b;
                void *p;
                ch_die_with_parent();
                alarm(30);
                if (mseg_open(&a, "rewritten", MSEG_OPEN_ONLY, &opts) < 0 ||
                    mseg_open(&b, "bystander", MSEG_OPEN_ONLY, &opts) < 0)
                        _exit(1);
                if (mseg_atomic(a, hold_and_wait, &x) < 0)
                        _exit(2);
                mseg_close(a);                  /* unmapped: nothing of it may stay in our robust list */
                for (int i = 0; i < 200; i++) { /* locks elsewhere */
                        p = mseg_alloc(b, 20000);
                        if (!p || mseg_free(b, p) < 0)
                                _exit(3);
                        if (!mseg_find_or_construct(b, "held-test", &u64_type, 1, NULL, NULL))
                                _exit(4);
                }
                mseg_close(b);
                _exit(0);
        }
        while (atomic_load(step) != 1)
                ch_sleep_us(1000);
        /* another thread's TID in the word, garbage in the robust-list links */
        __atomic_store_n(&rr->lock.word, 0x3ffffff0, __ATOMIC_RELEASE);
        atomic_store(&rr->lock.next, (uintptr_t) 0x5a5a5a5a5a5a5a58);
        atomic_store(&rr->lock.prev, (uintptr_t) 0x5a5a5a5a5a5a5a58);
        atomic_store(step, 2);
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                FAIL("the holder of a rewritten lock %s %d after unmapping its segment",
                     WIFSIGNALED(st) ? "was killed by signal" : "exited with", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        /* it released the lock: others take it */
        ASSERT_NOT_NULL(mseg_construct(v, "after", &u64_type, 1, NULL, NULL));
        ASSERT_OK(mseg_check(v));
        mseg_close(v);
        ASSERT_OK(mseg_remove("rewritten", &opts));
        munmap(step, 4096);
        printf("scribble: a lock rewritten while held is still released and unlinked by its holder, which "
               "then unmaps the segment and locks on elsewhere\n");
}

static void cleanup(void) {
        if (getpid() != parent_pid)
                return;
        msegd_kill(&daemon_);
        msegd_cleanup(&daemon_);
}

int main(void) {
        struct mseg_options o;
        pid_t me = getpid();
        mseg *b;

        sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        ASSERT(sh != MAP_FAILED);
        alarm(400);
        msegd_start(&daemon_, "--log-level", "info", NULL);  /* with the default lock timeout */
        /* A lock that looks held makes callers wait this long, then fail. */
        setenv("MSEG_LOCK_TIMEOUT_MS", "200", 1);
        parent_pid = me;
        atexit(cleanup);
        opts.socket_path = daemon_.sock;
        o = opts;
        o.size = 4 << 20;
        o.max_size = 64 << 20;
        ASSERT_OK(mseg_open(&b, "bystander", MSEG_CREATE_ONLY, &o));
        for (int t = 0; t < T_N; t++)
                if (!getenv("CH_ONLY") || atoi(getenv("CH_ONLY")) == t)
                        run_case((enum target) t);
        if (!getenv("CH_ONLY")) {
                test_wedged();
                test_rewritten_while_held();
        }
        ASSERT_OK(mseg_check(b));
        mseg_close(b);
        ASSERT_OK(mseg_remove("bystander", &opts));
        msegd_stop(&daemon_);
        return 0;
}
