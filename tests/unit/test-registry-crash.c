/* SPDX-License-Identifier: MIT */
/*
 * test-registry-crash: a process killed with SIGKILL inside a registry
 * operation, with the registry lock held, leaves a segment that the next
 * writer repairs (EOWNERDEAD -> repair -> consistent) and that passes
 * mseg_check, with no name half-made and no block lost.
 *
 * A child (this program re-executed, so that its test hook is armed from
 * the environment) stops at a named point inside the operation; the parent
 * kills it there, then carries on:
 *   construct.init       before init ran: the name does not exist, its block is freed
 *   construct.published  after the publish: the name exists, counts are right,
 *                        and a waiter that was asleep on it still wakes
 *   destroy.unpublished  after the unpublish: the name is gone, its block freed
 *   rehash.built         index rebuild not yet published: old index kept, new freed
 *   rehash.published     rebuild published: old index freed
 *   nested               inside an init's own construct: both undone
 *   anon-then-construct  an anonymous object made before the kill stays, whole
 *
 * Then the leak per kill (issue 6): a kill at each point where a registry
 * operation allocates or frees a block (the registry's own windows and the
 * allocator's critical sections it goes through), for a small entry, a
 * large one (a run of the page layer) and the index table, for names and
 * for anonymous objects (a construction killed before it returned is
 * freed; a destroy_ptr killed midway is finished). After the dead process's
 * slot is reclaimed (as the next attach of a file does) and the registry
 * repaired, every name is destroyed: what stays allocated is what the kill
 * leaked, and it must be 0 bytes at every point.
 */
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>

#include "test-registry-common.h"
#include "registry.h"
#include "alloc_layout.h"

#define SEG_SIZE ((uint64_t) 8 << 20)

struct shared {
        _Atomic int made;               /* names the child finished */
        _Atomic int waiter_rc;
        _Atomic uint64_t anon;          /* handle of the parent's anonymous object */
};
static struct shared *shared_page;

static const mseg_type int_type = { "int", sizeof(int), _Alignof(int), NULL };
/* An entry bigger than the largest size class: a run of the page layer. */
static const mseg_type big_type = { "big", 20000, 16, NULL };

static int nested_init(void *elem, size_t index, void *arg) {
        (void) elem;
        (void) index;
        return mseg_construct(arg, "inner", &int_type, 1, NULL, NULL) ? 0 : -errno;
}

static int failing_init(void *elem, size_t index, void *arg) {
        (void) elem;
        (void) index;
        (void) arg;
        return -EIO;
}

/* ---- the child: runs until its hook stops it ---- */

static int child_main(const char *what, const char *path, struct shared *sh) {
        mseg *seg = open_file_seg(path, MSEG_OPEN_ONLY, 0, 0);
        char name[32];

        if (!strcmp(what, "construct.init") || !strcmp(what, "construct.published"))
                (void) !mseg_construct(seg, "victim", &int_type, 4, NULL, NULL);
        else if (!strcmp(what, "destroy.unpublished"))
                (void) mseg_destroy(seg, "victim", &int_type);
        else if (!strcmp(what, "construct") || !strcmp(what, "construct-big"))
                (void) !mseg_construct(seg, "victim", strcmp(what, "construct") ? &big_type : &int_type, 1, NULL,
                                       NULL);
        else if (!strcmp(what, "construct-fail"))
                (void) !mseg_construct(seg, "victim", &int_type, 1, failing_init, NULL);
        else if (!strcmp(what, "destroy") || !strcmp(what, "destroy-big"))
                (void) mseg_destroy(seg, "victim", strcmp(what, "destroy") ? &big_type : &int_type);
        else if (!strcmp(what, "nested"))
                (void) !mseg_construct(seg, "outer", &int_type, 1, nested_init, seg);
        else if (!strcmp(what, "anon") || !strcmp(what, "anon-big"))
                (void) !mseg_construct_anonymous(seg, strcmp(what, "anon") ? &big_type : &int_type, 1, NULL, NULL);
        else if (!strcmp(what, "anon-fail"))
                (void) !mseg_construct_anonymous(seg, &int_type, 1, failing_init, NULL);
        else if (!strcmp(what, "destroy-ptr") || !strcmp(what, "destroy-ptr-big"))
                (void) mseg_destroy_ptr(seg, mseg_ptr(seg, atomic_load(&sh->anon)));
        else if (!strcmp(what, "anon-then-construct")) {
                /* A finished anonymous construction, then a kill elsewhere. */
                int *a = mseg_construct_anonymous(seg, &int_type, 1, NULL, NULL);

                ASSERT_NOT_NULL(a);
                *a = 42;
                atomic_store(&sh->anon, mseg_handle_of(seg, a));
                (void) !mseg_construct(seg, "victim", &int_type, 1, NULL, NULL);
        }
        else if (!strcmp(what, "destroy-ptr-named"))
                (void) mseg_destroy_ptr(seg, mseg_find(seg, "victim", &int_type, NULL));
        else
                for (int i = 0; i < 100000; i++) {      /* until a rebuild stops us */
                        snprintf(name, sizeof(name), "fill%d", i);
                        ASSERT_NOT_NULL(mseg_construct(seg, name, &int_type, 1, NULL, NULL));
                        atomic_store(&sh->made, i + 1);
                }
        return 3;                       /* the hook never fired */
}

/* ---- the parent ---- */

static void repair_waits_for_live_holder(mseg *seg, const char *path);

/* Kill a child at @point; 0 when it got there, -1 when it finished first
 * (the point is not on that path in this build). */
static int try_kill_at(const char *path, const char *point, const char *what) {
        int fds[2];
        char hook[64], fdbuf[16], c;
        struct pollfd pfd;
        pid_t pid;
        int st;

        ASSERT_EQ(pipe(fds), 0);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                char *argv[] = { "test-registry-crash", "child", (char *) what, (char *) path, NULL };

                close(fds[0]);
                snprintf(hook, sizeof(hook), "%s", point);
                snprintf(fdbuf, sizeof(fdbuf), "%d", fds[1]);
                setenv("MSEG_TEST_HOOK", hook, 1);
                setenv("MSEG_TEST_HOOK_FD", fdbuf, 1);
                execv("/proc/self/exe", argv);
                _exit(127);
        }
        close(fds[1]);
        pfd = (struct pollfd){ .fd = fds[0], .events = POLLIN };
        if (poll(&pfd, 1, 20000) != 1 || read(fds[0], &c, 1) != 1) {
                kill(pid, SIGKILL);
                ASSERT_EQ(waitpid(pid, &st, 0), pid);
                close(fds[0]);
                return -1;
        }
        kill(pid, SIGKILL);
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        close(fds[0]);
        return 0;
}

static void kill_at(const char *path, const char *point, const char *what) {
        if (try_kill_at(path, point, what) < 0)
                FAIL("child never reached %s", point);
}

static uint32_t repairs(mseg *seg) {
        return atomic_load(&reg_root_of(seg)->lock.repairs);
}

static void waiter(const char *path, struct shared *sh) {
        mseg *seg = open_file_seg(path, MSEG_OPEN_ONLY, 0, 0);

        sh->waiter_rc = mseg_wait_name(seg, "victim", &int_type, 20000);
        _exit(0);
}

/* ---- the leak per kill ---- */

struct names {
        char (*v)[MSEG_NAME_MAX + 1];
        size_t n;
};

static int collect_name(const struct mseg_object_info *info, void *arg) {
        struct names *x = arg;

        x->v = realloc(x->v, (x->n + 1) * sizeof(*x->v));
        ASSERT_NOT_NULL(x->v);
        snprintf(x->v[x->n++], sizeof(x->v[0]), "%s", info->name);
        return 0;
}

/* Destroy every name (whatever its type): the segment then holds nothing. */
static void destroy_all(mseg *seg) {
        struct names x = { 0 };

        ASSERT_OK(mseg_foreach_named(seg, collect_name, &x));
        for (size_t i = 0; i < x.n; i++) {
                int r = mseg_destroy(seg, x.v[i], &int_type);
                if (r == -EPROTOTYPE)
                        r = mseg_destroy(seg, x.v[i], &big_type);
                ASSERT_OK(r);
        }
        free(x.v);
}

struct leak_case {
        const char *point;              /* hook point, with ":n" for the n-th time */
        const char *what;               /* the child's operation */
        const char *setup;              /* "small"/"big": the parent makes "victim" first;
                                         * "anon"/"anon-big": an anonymous object */
};

static int nothing(mseg *seg, void *arg) {
        (void) seg;
        (void) arg;
        return 0;
}

/* Kill a child at lc->point; reclaim its slot, repair, remove every name.
 * @registry_first: the registry's repair runs before anything else takes
 * an allocator lock (it must settle the allocator itself), else the slot
 * reclaim repairs the allocator's locks first. Returns the bytes left
 * allocated (the leak), or -1 if the child finished without reaching the
 * point. */
static int64_t leak_of(mseg *seg, const char *path, const struct leak_case *lc, bool registry_first) {
        struct mseg_stats st;
        uint64_t before;
        int r;

        ASSERT_EQ(mseg_named_count(seg), 0);
        ASSERT_OK(mseg_stats(seg, &st));
        before = st.allocated_bytes;    /* 0, unless an earlier case leaked */
        if (lc->setup && !strncmp(lc->setup, "anon", 4)) {
                /* The child destroys it by pointer: a destroy killed
                 * midway is finished, so it must be gone too. */
                void *p = mseg_construct_anonymous(seg, strcmp(lc->setup, "anon") ? &big_type : &int_type, 1,
                                                   NULL, NULL);
                ASSERT_NOT_NULL(p);
                atomic_store(&shared_page->anon, mseg_handle_of(seg, p));
        } else if (lc->setup) {
                ASSERT_NOT_NULL(mseg_construct(seg, "victim", strcmp(lc->setup, "big") ? &int_type : &big_type,
                                               1, NULL, NULL));
        }
        r = try_kill_at(path, lc->point, lc->what);
        if (registry_first)
                ASSERT_OK(mseg_atomic(seg, nothing, NULL));
        /* The dead process's slot, as the next attach of the file would. */
        ASSERT(mseg__slots_reclaim_dead(seg) >= 0);
        ASSERT_OK(mseg_check(seg));     /* every lock taken: every repair done */
        destroy_all(seg);
        ASSERT_OK(mseg_check(seg));
        ASSERT_EQ(mseg_named_count(seg), 0);
        ASSERT_OK(mseg_stats(seg, &st));
        ASSERT_EQ(st.slots_dead, 0);
        if (r < 0)
                return -1;
        ASSERT(st.allocated_bytes >= before);
        return (int64_t) (st.allocated_bytes - before);
}

static void leak_per_kill(mseg *seg, const char *path) {
        static const struct leak_case cases[] = {
                /* the registry's own steps around its allocations and frees */
                { "registry.construct.allocated", "construct", NULL },
                { "registry.construct.allocated", "construct-big", NULL },
                { "registry.entry.free", "construct-fail", NULL },
                { "registry.destroy.free", "destroy", "small" },
                { "registry.destroy.free", "destroy-big", "big" },
                { "registry.rehash.allocated:2", "fill", NULL },
                { "registry.rehash.published:2", "fill", NULL },
                /* anonymous objects: a construction killed before it
                 * returned is freed, a destroy_ptr killed midway finished */
                { "registry.anon.allocated", "anon", NULL },
                { "registry.anon.allocated", "anon-big", NULL },
                { "registry.anon.constructed", "anon", NULL },
                { "registry.entry.free", "anon-fail", NULL },
                { "registry.destroy_ptr.unpublished", "destroy-ptr", "anon" },
                { "registry.destroy_ptr.free", "destroy-ptr", "anon" },
                { "registry.destroy_ptr.free", "destroy-ptr-big", "anon-big" },
                { "registry.destroy.unpublished", "destroy-ptr-named", "small" },
                { "registry.destroy.free", "destroy-ptr-named", "small" },
                /* inside the allocator's critical sections, on the registry's behalf */
                { "alloc.into_locked:1", "construct", NULL },           /* the entry */
                { "alloc.into_locked:2", "construct", NULL },           /* the first table */
                { "pages.alloc:1", "construct-big", NULL },             /* the slot's magazine record */
                { "pages.alloc:2", "construct-big", NULL },             /* the entry */
                { "alloc.free_from:1", "construct-fail", NULL },
                { "alloc.free_from.cleared:1", "construct-fail", NULL },
                { "alloc.free_from:1", "destroy", "small" },
                { "alloc.free_from.cleared:1", "destroy", "small" },
                { "pages.free:1", "destroy-big", "big" },
                { "alloc.free_from:1", "fill", NULL },                  /* the old table */
                { "alloc.free_from.cleared:1", "fill", NULL },
                { "alloc.into_locked:1", "anon", NULL },
                { "pages.alloc:2", "anon-big", NULL },
                { "alloc.free_from:1", "anon-fail", NULL },
                { "alloc.free_from.cleared:1", "anon-fail", NULL },
                { "alloc.free_from:1", "destroy-ptr", "anon" },
                { "alloc.free_from.cleared:1", "destroy-ptr", "anon" },
                { "pages.free:1", "destroy-ptr-big", "anon-big" },
        };
        int64_t worst = 0;
        unsigned reached = 0;

        for (size_t i = 0; i < 2 * sizeof(cases) / sizeof(cases[0]); i++) {
                const struct leak_case *lc = &cases[i / 2];
                int64_t leak = leak_of(seg, path, lc, i % 2);
                if (leak < 0)
                        FAIL("the child never reached %s in %s", lc->point, lc->what);
                printf("test-registry-crash: kill at %-32s in %-17s (%s repaired first) leaked %lld bytes\n",
                       lc->point, lc->what, i % 2 ? "registry" : "allocator", (long long) leak);
                reached++;
                if (leak > worst)
                        worst = leak;
        }
        printf("test-registry-crash: leak per kill: at most %lld bytes over %u points\n", (long long) worst,
               reached);
        ASSERT_EQ(worst, 0);
}

#ifndef MSEG_TEST_HOOKS
int main(void) {
        printf("test-registry-crash: skipped (built without -Dtest_hooks=true)\n");
        return TEST_SKIP;
}
#else
int main(int argc, char **argv) {
        static struct shared *sh;
        char path[128];
        uint32_t rep;
        pid_t wpid;
        mseg *seg;
        int *p;

        setvbuf(stdout, NULL, _IOLBF, 0);     /* forked children must not repeat it */
        setenv("MSEG_LOCK_TIMEOUT_MS", "1500", 1);      /* a live holder is given up on sooner */
        if (argc == 4 && !strcmp(argv[1], "child")) {
                /* The shared counters live in a file next to the segment. */
                char shpath[160];
                int fd;

                snprintf(shpath, sizeof(shpath), "%s.sh", argv[3]);
                fd = open(shpath, O_RDWR);
                ASSERT(fd >= 0);
                sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                ASSERT(sh != MAP_FAILED);
                return child_main(argv[2], argv[3], sh);
        }

        scratch_path(path, sizeof(path), "crash");
        {
                char shpath[160];
                int fd;

                snprintf(shpath, sizeof(shpath), "%s.sh", path);
                fd = open(shpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
                ASSERT(fd >= 0 && ftruncate(fd, 4096) == 0);
                sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                ASSERT(sh != MAP_FAILED);
                close(fd);
        }
        shared_page = sh;
        seg = open_file_seg(path, MSEG_CREATE_ONLY, SEG_SIZE, 0);

        /* Killed before init: nothing of "victim" remains. */
        rep = repairs(seg);
        kill_at(path, "registry.construct.init", "construct.init");
        ASSERT_NULL_ERRNO(mseg_find(seg, "victim", &int_type, NULL), ENOENT);  /* readers need no repair */
        ASSERT_OK(mseg_check(seg));                                             /* takes the lock: repairs */
        ASSERT_EQ(repairs(seg), rep + 1);
        ASSERT_EQ(mseg_named_count(seg), 0);
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);

        /* Killed after the publish, before counting and waking: "victim"
         * exists, whole, and a waiter asleep on it still returns. */
        wpid = fork();
        ASSERT(wpid >= 0);
        if (wpid == 0)
                waiter(path, sh);
        {
                struct timespec settle = { 0, 100 * 1000000 };
                nanosleep(&settle, NULL);
        }
        kill_at(path, "registry.construct.published", "construct.published");
        wait_children(&wpid, 1);
        ASSERT_EQ(sh->waiter_rc, 0);
        p = mseg_find(seg, "victim", &int_type, NULL);
        ASSERT_NOT_NULL(p);
        ASSERT(p[0] == 0 && p[3] == 0);
        ASSERT_OK(mseg_check(seg));
        ASSERT_EQ(mseg_named_count(seg), 1);

        /* Killed inside a destroy, after the unpublish. */
        kill_at(path, "registry.destroy.unpublished", "destroy.unpublished");
        ASSERT_NULL_ERRNO(mseg_find(seg, "victim", &int_type, NULL), ENOENT);
        ASSERT_OK(mseg_check(seg));
        ASSERT_EQ(mseg_named_count(seg), 0);
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);

        /* Killed inside index rebuilds, before and after their publish. */
        for (int pass = 0; pass < 2; pass++) {
                char name[32];
                int made;

                atomic_store(&sh->made, 0);
                /* the 2nd rebuild: the first creates the table */
                kill_at(path, pass ? "registry.rehash.published:2" : "registry.rehash.built:2", "fill");
                ASSERT_OK(mseg_check(seg));
                made = atomic_load(&sh->made);
                ASSERT(made > 0);
                /* Every name finished before the kill is there; the one being
                 * made when it died is there only if it was published. */
                for (int i = 0; i < made; i++) {
                        snprintf(name, sizeof(name), "fill%d", i);
                        ASSERT_NOT_NULL(mseg_find(seg, name, &int_type, NULL));
                }
                ASSERT(mseg_named_count(seg) == (size_t) made);
                for (int i = 0; i < made; i++) {
                        snprintf(name, sizeof(name), "fill%d", i);
                        ASSERT_OK(mseg_destroy(seg, name, &int_type));
                }
                ASSERT_OK(mseg_check(seg));
                ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        }

        /* Killed in a construct nested inside another's init. */
        kill_at(path, "registry.construct.init:2", "nested");
        ASSERT_OK(mseg_check(seg));
        ASSERT_NULL_ERRNO(mseg_find(seg, "outer", &int_type, NULL), ENOENT);
        ASSERT_NULL_ERRNO(mseg_find(seg, "inner", &int_type, NULL), ENOENT);
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);

        /* An anonymous object whose construction returned is its maker's
         * to keep: a kill in its next operation leaves it alive and whole
         * (the repair frees only constructions that never returned). */
        atomic_store(&sh->anon, 0);
        kill_at(path, "registry.construct.init", "anon-then-construct");
        ASSERT_OK(mseg_check(seg));
        ASSERT_NULL_ERRNO(mseg_find(seg, "victim", &int_type, NULL), ENOENT);
        p = mseg_ptr(seg, atomic_load(&sh->anon));
        ASSERT_NOT_NULL(p);
        ASSERT_EQ(mseg_instance_kind(seg, p), MSEG_KIND_ANONYMOUS);
        ASSERT_EQ(p[0], 42);
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 0);
        ASSERT_OK(mseg_destroy_ptr(seg, p));
        ASSERT_ERR(mseg_destroy_ptr(seg, p), -EINVAL);
        ASSERT_OK(mseg_check(seg));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);

        leak_per_kill(seg, path);
        repair_waits_for_live_holder(seg, path);

        /* And the registry works as before. */
        ASSERT_NOT_NULL(mseg_construct(seg, "after", &int_type, 1, NULL, NULL));
        ASSERT_OK(mseg_destroy(seg, "after", &int_type));
        ASSERT_OK(mseg_check(seg));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        rep = repairs(seg) - rep;
        mseg_close(seg);
        unlink(path);
        {
                char shpath[160];
                snprintf(shpath, sizeof(shpath), "%s.sh", path);
                unlink(shpath);
        }
        printf("test-registry-crash: ok (%u repairs)\n", rep);
        return 0;
}

/* A writer died with an allocation recorded in its intent, and a live
 * process holds an allocator lock that the repair must settle first: the
 * next registry call fails with a timeout and leaves the repair for later,
 * rather than poisoning the segment; once the holder is gone it succeeds. */
static void repair_waits_for_live_holder(mseg *seg, const char *path) {
        uint32_t before = repairs(seg);
        int fds[2];
        pid_t holder;
        char c;

        kill_at(path, "registry.construct.allocated", "construct");
        ASSERT_EQ(pipe(fds), 0);
        holder = fork();
        ASSERT(holder >= 0);
        if (holder == 0) {
                mseg *h;

                prctl(PR_SET_PDEATHSIG, SIGKILL);       /* never outlive a failed test */
                h = open_file_seg(path, MSEG_OPEN_ONLY, 0, 0);

                if (mseg__lock(&h->alloc->root->pools[0].lock) < 0)
                        _exit(1);
                (void) !write(fds[1], "h", 1);
                pause();
                _exit(0);
        }
        ASSERT_EQ(read(fds[0], &c, 1), 1);
        ASSERT_NULL_ERRNO(mseg_construct(seg, "blocked", &int_type, 1, NULL, NULL), ETIMEDOUT);
        ASSERT_EQ(atomic_load(&seg->hdr->state) & MSEG_STATE_POISONED, 0);
        ASSERT_EQ(atomic_load(&reg_root_of(seg)->lock.word), 0);        /* released, repair pending */
        kill(holder, SIGKILL);
        ASSERT_EQ(waitpid(holder, NULL, 0), holder);
        ASSERT_NOT_NULL(mseg_construct(seg, "unblocked", &int_type, 1, NULL, NULL));
        ASSERT_EQ(repairs(seg), before + 2);    /* tried, left, done */
        ASSERT_NULL_ERRNO(mseg_find(seg, "victim", &int_type, NULL), ENOENT);
        ASSERT_OK(mseg_destroy(seg, "unblocked", &int_type));
        ASSERT_OK(mseg_check(seg));
        ASSERT_EQ(mseg_all_memory_deallocated(seg), 1);
        close(fds[0]);
        close(fds[1]);
        printf("test-registry-crash: a repair blocked by a live lock holder is left for later, not poisoned\n");
}
#endif
