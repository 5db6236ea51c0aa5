/* SPDX-License-Identifier: MIT */
/*
 * mseg-bench.c — BENCH.md's workloads W1..W7 on libmseg, through its public
 * API only (mseg.h), printing one `RESULT mseg <workload> <metric> <value>`
 * line per figure and the checksum lines every implementation must agree on.
 *
 * Where segments come from. Every workload uses a fresh segment and removes
 * it afterwards. W4 and W7 measure msegd itself, so they always go through a
 * daemon: the one $MSEG_SOCKET names if it answers, else one this program
 * starts on a temporary socket ($MSEGD, or msegd next to this binary, or
 * ../daemon/msegd in the build tree) and stops at the end. W1, W2, W3, W5 and
 * W6 measure what happens inside a segment, which is the same code for every
 * kind; they use brokered segments (mseg_open) when a daemon answers at
 * $MSEG_SOCKET, and otherwise managed mapped files in /dev/shm
 * (mseg_file_open on tmpfs, the same memory as a memfd). `--kind=file` or
 * `--kind=shm` forces one or the other; a '#' line says which was used.
 *
 * Nothing here is a test: a workload that fails prints why on stderr and the
 * program goes on with the next one, exiting 1 at the end. The numbers are
 * wall-clock times on CLOCK_MONOTONIC; on a shared machine compare two
 * implementations in the same run (compare.sh) rather than across runs.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "mseg.h"
#include "common.h"

#define IMPL "mseg"


enum seg_kind {
        KIND_AUTO,
        KIND_FILE,      /* mseg_file_open on a file in /dev/shm */
        KIND_SHM,       /* mseg_open through msegd */
};

/* A msegd this program started, on a socket in a temporary directory. */
struct daemon {
        pid_t pid;
        char dir[PATH_MAX];
        char sock[PATH_MAX + 16];
        char log[PATH_MAX + 16];
};

static struct {
        enum seg_kind kind;             /* for W1, W2, W3, W5, W6 */
        char dir[PATH_MAX];             /* KIND_FILE: where the files go */
        const char *socket_path;        /* a daemon that answered, or NULL */
        bool tried_socket;
        const char *no_daemon_why;
        struct daemon d;                /* ours, if pid > 0 */
        pid_t pid;                      /* ours, in segment names: children use the parent's */
        int failures;
} B;

/* --------------------------------------------------------------- errors */

static void fail_code(const char *what, int code) {
        fprintf(stderr, "mseg-bench: %s: %s (%s)\n", what, mseg_strerror(code), mseg_last_error());
}

static void fail_errno(const char *what) {
        fail_code(what, -errno);
}

/* ------------------------------------------------------------ the daemon */

static bool socket_answers(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd, r;

        if (strlen(path) >= sizeof sa.sun_path)
                return false;
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return false;
        r = connect(fd, (struct sockaddr *) &sa, sizeof sa);
        close(fd);
        return r == 0;
}

/* $MSEGD, else msegd beside this binary, else ../daemon/msegd (build tree). */
static bool find_msegd(char *buf, size_t len) {
        static const char *const rel[] = { "msegd", "../daemon/msegd", "../sbin/msegd" };
        char self[PATH_MAX];
        const char *env = getenv("MSEGD");
        ssize_t n;
        size_t i;

        if (env && *env) {
                snprintf(buf, len, "%s", env);
                return access(buf, X_OK) == 0;
        }
        n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0)
                return false;
        self[n] = '\0';
        *strrchr(self, '/') = '\0';
        for (i = 0; i < sizeof rel / sizeof rel[0]; i++) {
                if ((size_t) snprintf(buf, len, "%s/%s", self, rel[i]) < len && access(buf, X_OK) == 0)
                        return true;
        }
        return false;
}

static void print_log_tail(const char *log) {
        char line[512];
        FILE *f = fopen(log, "r");

        if (!f)
                return;
        while (fgets(line, sizeof line, f))
                fprintf(stderr, "  msegd: %s", line);
        fclose(f);
}

/* Start msegd in the foreground on a temporary socket; wait until it
 * accepts connections. Extra arguments come from $MSEGD_ARGS (split on
 * spaces), for limits a run needs. */
static int daemon_start(struct daemon *d, const char **ret_why) {
        char bin[PATH_MAX], state[PATH_MAX + 16];
        char *argv[64], *extra = NULL;
        int argc = 0;
        uint64_t deadline;

        if (!find_msegd(bin, sizeof bin)) {
                *ret_why = "no msegd binary (set $MSEGD, or build daemon/msegd)";
                return -1;
        }
        snprintf(d->dir, sizeof d->dir, "%s/mseg-bench.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(d->dir)) {
                *ret_why = "mkdtemp failed";
                return -1;
        }
        snprintf(d->sock, sizeof d->sock, "%s/socket", d->dir);
        snprintf(state, sizeof state, "%s/state", d->dir);
        snprintf(d->log, sizeof d->log, "%s/msegd.log", d->dir);
        if (mkdir(state, 0700) < 0) {
                *ret_why = "mkdir of the state directory failed";
                return -1;
        }
        argv[argc++] = bin;
        argv[argc++] = (char *) "--socket";
        argv[argc++] = d->sock;
        argv[argc++] = (char *) "--state-dir";
        argv[argc++] = state;
        argv[argc++] = (char *) "--foreground";
        if (getenv("MSEGD_ARGS")) {
                extra = strdup(getenv("MSEGD_ARGS"));
                for (char *tok = strtok(extra, " \t"); tok && argc < 62; tok = strtok(NULL, " \t"))
                        argv[argc++] = tok;
        }
        argv[argc] = NULL;

        fflush(stdout);
        fflush(stderr);
        d->pid = fork();
        if (d->pid < 0) {
                free(extra);
                *ret_why = "fork failed";
                return -1;
        }
        if (d->pid == 0) {
                int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                if (fd >= 0) {
                        dup2(fd, STDOUT_FILENO);
                        dup2(fd, STDERR_FILENO);
                }
                execv(bin, argv);
                _exit(127);
        }
        free(extra);

        deadline = bench_now_ns() + UINT64_C(10000000000);
        while (!socket_answers(d->sock)) {
                int status;
                if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
                        d->pid = 0;
                        print_log_tail(d->log);
                        *ret_why = "msegd exited at start (its log is above)";
                        return -1;
                }
                if (bench_now_ns() > deadline) {
                        print_log_tail(d->log);
                        *ret_why = "msegd did not answer on its socket within 10 s";
                        return -1;
                }
                usleep(10000);
        }
        printf("# started %s on a temporary socket\n", bin);
        return 0;
}

static void rm_tree_shallow(const char *dir) {
        char path[PATH_MAX + 300];
        struct dirent *e;
        DIR *dp = opendir(dir);

        if (!dp)
                return;
        while ((e = readdir(dp))) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                        continue;
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                if (unlink(path) < 0 && errno == EISDIR)
                        rm_tree_shallow(path);
        }
        closedir(dp);
        rmdir(dir);
}

static void daemon_stop(struct daemon *d) {
        uint64_t deadline;
        int status;

        if (d->pid > 0) {
                kill(d->pid, SIGTERM);
                deadline = bench_now_ns() + UINT64_C(5000000000);
                while (waitpid(d->pid, &status, WNOHANG) == 0) {
                        if (bench_now_ns() > deadline) {
                                fprintf(stderr, "mseg-bench: msegd ignored SIGTERM for 5 s; killing it\n");
                                kill(d->pid, SIGKILL);
                                waitpid(d->pid, &status, 0);
                                break;
                        }
                        usleep(10000);
                }
                d->pid = 0;
        }
        if (d->dir[0]) {
                rm_tree_shallow(d->dir);
                d->dir[0] = '\0';
        }
}

/* A socket with a daemon behind it: $MSEG_SOCKET if it answers, else our
 * own msegd (started once). NULL when neither is possible. */
static const char *need_socket(void) {
        const char *env = getenv("MSEG_SOCKET");

        if (B.tried_socket)
                return B.socket_path;
        B.tried_socket = true;
        if (env && *env) {
                if (socket_answers(env)) {
                        printf("# using the msegd at MSEG_SOCKET=%s\n", env);
                        B.socket_path = env;
                        return B.socket_path;
                }
                printf("# MSEG_SOCKET=%s does not answer; starting a msegd of our own\n", env);
        }
        if (daemon_start(&B.d, &B.no_daemon_why) < 0) {
                daemon_stop(&B.d);
                return NULL;
        }
        B.socket_path = B.d.sock;
        return B.socket_path;
}

/* ------------------------------------------------------------- segments */

/* The name (brokered) or path (file) of workload @tag's segment. */
static void seg_name(char *buf, size_t len, enum seg_kind kind, const char *tag) {
        if (kind == KIND_FILE)
                snprintf(buf, len, "%s/mseg-bench.%d.%s", B.dir, (int) B.pid, tag);
        else
                snprintf(buf, len, "mseg-bench.%d.%s", (int) B.pid, tag);
}

static struct mseg_options seg_opts(uint64_t size) {
        struct mseg_options o = { .size = size, .socket_path = B.socket_path };
        return o;
}

/* Create workload @tag's fresh segment of @size bytes. */
static int seg_create(mseg **ret, enum seg_kind kind, const char *tag, uint64_t size) {
        struct mseg_options o = seg_opts(size);
        char name[PATH_MAX + 64];
        int r;

        seg_name(name, sizeof name, kind, tag);
        if (kind == KIND_FILE) {
                unlink(name);
                r = mseg_file_open(ret, name, MSEG_CREATE_ONLY, &o);
        } else {
                r = mseg_remove(name, &o);      /* a leftover of a killed run */
                (void) r;
                r = mseg_open(ret, name, MSEG_CREATE_ONLY, &o);
        }
        if (r < 0)
                fail_code(kind == KIND_FILE ? "mseg_file_open(create)" : "mseg_open(create)", r);
        return r;
}

/* Open workload @tag's existing segment by name (W2's children, W4, W7). */
static int seg_attach(mseg **ret, enum seg_kind kind, const char *tag) {
        struct mseg_options o = seg_opts(0);
        char name[PATH_MAX + 64];

        seg_name(name, sizeof name, kind, tag);
        if (kind == KIND_FILE)
                return mseg_file_open(ret, name, MSEG_OPEN_ONLY, &o);
        return mseg_open(ret, name, MSEG_OPEN_ONLY, &o);
}

static void seg_remove(enum seg_kind kind, const char *tag) {
        struct mseg_options o = seg_opts(0);
        char name[PATH_MAX + 64];
        int r;

        seg_name(name, sizeof name, kind, tag);
        if (kind == KIND_FILE) {
                if (unlink(name) < 0)
                        fail_errno("unlink");
        } else if ((r = mseg_remove(name, &o)) < 0) {
                fail_code("mseg_remove", r);
        }
}

/* ----------------------------------------------------------- ring churn */

static int ring_fill(mseg *seg, void **ring, const struct bench_ring_params *p, struct bench_rng *rng) {
        for (unsigned k = 0; k < p->ring_len; k++) {
                uint64_t sz = bench_uniform(rng, p->lo, p->hi);
                void *q = mseg_alloc(seg, sz);
                if (!q) {
                        fail_errno("mseg_alloc (fill)");
                        return -1;
                }
                *(volatile uint64_t *) q = k;
                ring[k] = q;
        }
        return 0;
}

/* BENCH.md's timed loop. Returns 0 and the sum of the sizes asked for. */
static int ring_churn(mseg *seg, void **ring, const struct bench_ring_params *p, struct bench_rng *rng,
                      uint64_t *ret_sum) {
        uint64_t sum = 0;
        unsigned i = 0;

        for (uint64_t s = 0; s < p->steps; s++) {
                uint64_t sz;
                void *q;
                int r = mseg_free(seg, ring[i]);
                if (r != 0) {
                        fail_code("mseg_free", r);
                        return -1;
                }
                sz = bench_uniform(rng, p->lo, p->hi);
                sum += sz;
                q = mseg_alloc(seg, sz);
                if (!q) {
                        fail_errno("mseg_alloc");
                        return -1;
                }
                *(volatile uint64_t *) q = s;
                ring[i] = q;
                if (++i == p->ring_len)
                        i = 0;
        }
        *ret_sum = sum;
        return 0;
}

static int ring_free(mseg *seg, void **ring, unsigned len) {
        for (unsigned k = 0; k < len; k++) {
                int r = mseg_free(seg, ring[k]);
                if (r != 0) {
                        fail_code("mseg_free (ring)", r);
                        return -1;
                }
        }
        return 0;
}

/* W1 and W5: one process, one ring. */
static int run_ring(const char *w, const struct bench_ring_params *p, uint64_t want) {
        enum seg_kind kind = B.kind;
        struct bench_rng rng;
        uint64_t t0, t1, sum = 0;
        void **ring;
        mseg *seg;
        int r = -1;

        ring = calloc(p->ring_len, sizeof *ring);
        if (!ring || seg_create(&seg, kind, w, p->seg_size) < 0) {
                free(ring);
                return -1;
        }
        bench_rng_init(&rng, BENCH_SEED);
        if (ring_fill(seg, ring, p, &rng) < 0)
                goto out;
        t0 = bench_now_ns();
        if (ring_churn(seg, ring, p, &rng, &sum) < 0)
                goto out;
        t1 = bench_now_ns();
        if (ring_free(seg, ring, p->ring_len) < 0)
                goto out;
        bench_result(IMPL, w, "ns_per_step", 1, (double) (t1 - t0) / (double) p->steps);
        r = bench_checksum(IMPL, w, "checksum_req_bytes", sum, want);
out:
        mseg_close(seg);
        seg_remove(kind, w);
        free(ring);
        return r;
}

static int run_w1(void) {
        return run_ring("W1", &BENCH_W1, BENCH_W1_CHECKSUM);
}

static int run_w5(void) {
        return run_ring("W5", &BENCH_W5, BENCH_W5_CHECKSUM);
}

/* W2's child @idx: open by name, fill, ready, wait for go, churn, report. */
static void w2_child(enum seg_kind kind, unsigned idx, int ready_w, int go_r, int done_w) {
        const struct bench_ring_params *p = &BENCH_W2;
        struct bench_rng rng;
        uint64_t msg[2];
        void **ring = calloc(p->ring_len, sizeof *ring);
        mseg *seg;
        char c = 'r';
        int r;

        if (!ring)
                _exit(1);
        r = seg_attach(&seg, kind, "W2");
        if (r < 0) {
                fail_code("W2 child: open", r);
                _exit(1);
        }
        bench_rng_init(&rng, BENCH_SEED + idx);
        if (ring_fill(seg, ring, p, &rng) < 0)
                _exit(1);
        if (bench_write_full(ready_w, &c, 1) < 0)
                _exit(1);
        close(ready_w);
        if (bench_read_full(go_r, &c, 1) < 0)
                _exit(1);
        if (ring_churn(seg, ring, p, &rng, &msg[1]) < 0)
                _exit(1);
        msg[0] = idx;
        if (bench_write_full(done_w, msg, sizeof msg) < 0)
                _exit(1);
        close(done_w);
        if (ring_free(seg, ring, p->ring_len) < 0)
                _exit(1);
        mseg_close(seg);
        _exit(0);
}

static int run_w2(void) {
        enum seg_kind kind = B.kind;
        int ready[2], go[2], done[2];
        pid_t pids[BENCH_W2_PROCS] = { 0 };
        uint64_t sums[BENCH_W2_PROCS] = { 0 };
        uint64_t t0, t1, total = BENCH_W2.steps * BENCH_W2_PROCS;
        const uint64_t want[BENCH_W2_PROCS] = { BENCH_W2_CHECKSUM_SEED42, BENCH_W2_CHECKSUM_SEED43 };
        char goes[BENCH_W2_PROCS];
        mseg *seg;
        unsigned i;
        int r = -1, status;

        if (seg_create(&seg, kind, "W2", BENCH_W2.seg_size) < 0)
                return -1;
        if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0 || pipe2(done, O_CLOEXEC) < 0) {
                fail_errno("pipe");
                goto out;
        }
        fflush(stdout);
        for (i = 0; i < BENCH_W2_PROCS; i++) {
                pids[i] = fork();
                if (pids[i] < 0) {
                        fail_errno("fork");
                        goto out_kill;
                }
                if (pids[i] == 0) {
                        close(ready[0]);
                        close(go[1]);
                        close(done[0]);
                        w2_child(kind, i, ready[1], go[0], done[1]);
                }
        }
        close(ready[1]);
        close(go[0]);
        close(done[1]);
        for (i = 0; i < BENCH_W2_PROCS; i++) {
                char c;
                if (bench_read_full(ready[0], &c, 1) < 0) {
                        fprintf(stderr, "mseg-bench: W2: a child died before it was ready\n");
                        goto out_kill;
                }
        }
        memset(goes, 'g', sizeof goes);
        t0 = bench_now_ns();
        if (bench_write_full(go[1], goes, sizeof goes) < 0)
                goto out_kill;
        for (i = 0; i < BENCH_W2_PROCS; i++) {
                uint64_t msg[2];
                if (bench_read_full(done[0], msg, sizeof msg) < 0 || msg[0] >= BENCH_W2_PROCS) {
                        fprintf(stderr, "mseg-bench: W2: a child died during the churn\n");
                        goto out_kill;
                }
                sums[msg[0]] = msg[1];
        }
        t1 = bench_now_ns();
        r = 0;
        for (i = 0; i < BENCH_W2_PROCS; i++) {
                waitpid(pids[i], &status, 0);
                pids[i] = 0;
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                        fprintf(stderr, "mseg-bench: W2: child %u failed after its churn\n", i);
                        r = -1;
                }
        }
        bench_result(IMPL, "W2", "steps_per_s", 0, (double) total * 1e9 / (double) (t1 - t0));
        bench_result(IMPL, "W2", "ns_per_step", 1, (double) (t1 - t0) / (double) total);
        for (i = 0; i < BENCH_W2_PROCS; i++) {
                char metric[64];
                snprintf(metric, sizeof metric, "checksum_req_bytes_seed%u", BENCH_SEED + i);
                if (bench_checksum(IMPL, "W2", metric, sums[i], want[i]) < 0)
                        r = -1;
        }
        goto out;
out_kill:
        for (i = 0; i < BENCH_W2_PROCS; i++) {
                if (pids[i] > 0) {
                        kill(pids[i], SIGKILL);
                        waitpid(pids[i], &status, 0);
                }
        }
out:
        close(ready[0]);
        close(go[1]);
        close(done[0]);
        mseg_close(seg);
        seg_remove(kind, "W2");
        return r;
}

/* ---------------------------------------------------------------- named */

static int run_w3(void) {
        enum seg_kind kind = B.kind;
        const mseg_type *type = MSEG_TYPE(bench_obj);
        char (*names)[16] = malloc((size_t) BENCH_W3_N * sizeof *names);
        uint32_t *perm = malloc((size_t) BENCH_W3_N * sizeof *perm);
        void **objs = malloc((size_t) BENCH_W3_N * sizeof *objs);
        uint64_t t0, t1, t2, t3;
        mseg *seg;
        uint32_t i;
        int r = -1;

        if (!names || !perm || !objs || seg_create(&seg, kind, "W3", BENCH_W3_SEG) < 0) {
                free(names);
                free(perm);
                free(objs);
                return -1;
        }
        for (i = 0; i < BENCH_W3_N; i++)
                snprintf(names[i], sizeof names[i], "obj%" PRIu32, i);
        bench_perm(perm, BENCH_W3_N);

        t0 = bench_now_ns();
        for (i = 0; i < BENCH_W3_N; i++) {
                objs[i] = mseg_construct(seg, names[i], type, 1, NULL, NULL);
                if (!objs[i]) {
                        fail_errno("mseg_construct");
                        goto out;
                }
        }
        t1 = bench_now_ns();
        for (i = 0; i < BENCH_W3_N; i++) {
                size_t count = 0;
                uint32_t k = perm[i];
                void *p = mseg_find(seg, names[k], type, &count);
                if (p != objs[k] || count != 1) {
                        fprintf(stderr, "mseg-bench: W3: mseg_find(%s) = %p (count %zu), constructed at %p: %s\n",
                                names[k], p, count, objs[k], mseg_last_error());
                        goto out;
                }
        }
        t2 = bench_now_ns();
        for (i = 0; i < BENCH_W3_N; i++) {
                int e = mseg_destroy(seg, names[perm[i]], type);
                if (e != 0) {
                        fail_code("mseg_destroy", e);
                        goto out;
                }
        }
        t3 = bench_now_ns();
        bench_result(IMPL, "W3", "ns_per_construct", 1, (double) (t1 - t0) / BENCH_W3_N);
        bench_result(IMPL, "W3", "ns_per_find", 1, (double) (t2 - t1) / BENCH_W3_N);
        bench_result(IMPL, "W3", "ns_per_destroy", 1, (double) (t3 - t2) / BENCH_W3_N);
        r = 0;
out:
        mseg_close(seg);
        seg_remove(kind, "W3");
        free(names);
        free(perm);
        free(objs);
        return r;
}

/* --------------------------------------------------------------- attach */

static int run_w4(void) {
        volatile uint64_t sink = 0;
        uint64_t t0, t1;
        mseg *creator, *seg;
        int r;

        if (!need_socket()) {
                printf("# W4 skipped: %s\n", B.no_daemon_why);
                return 0;
        }
        if (seg_create(&creator, KIND_SHM, "W4", BENCH_W4_SEG) < 0)
                return -1;
        t0 = bench_now_ns();
        for (int i = 0; i < BENCH_W4_ROUNDS; i++) {
                r = seg_attach(&seg, KIND_SHM, "W4");
                if (r < 0) {
                        fail_code("W4: mseg_open", r);
                        goto fail;
                }
                sink += mseg_size(seg);
                mseg_close(seg);
        }
        t1 = bench_now_ns();
        (void) sink;
        bench_result(IMPL, "W4", "ns_per_attach", 0, (double) (t1 - t0) / BENCH_W4_ROUNDS);
        mseg_close(creator);
        seg_remove(KIND_SHM, "W4");
        return 0;
fail:
        mseg_close(creator);
        seg_remove(KIND_SHM, "W4");
        return -1;
}

/* -------------------------------------------------------------- density */

static int run_w6(void) {
        enum seg_kind kind = B.kind;
        uint64_t count = 0;
        mseg *seg;
        void *p;
        int r = 0;

        if (seg_create(&seg, kind, "W6", BENCH_W6_SEG) < 0)
                return -1;
        while ((p = mseg_alloc(seg, 64)) != NULL) {
                *(volatile uint64_t *) p = count;
                count++;
        }
        if (errno != ENOMEM) {
                fail_errno("W6: mseg_alloc ended without ENOMEM");
                r = -1;
        }
        bench_result_u64(IMPL, "W6", "count", count);
        bench_result(IMPL, "W6", "efficiency", 4, (double) count * 64.0 / (double) BENCH_W6_SEG);
        mseg_close(seg);
        seg_remove(kind, "W6");
        return r;
}

/* ---------------------------------------------------------- daemon load */

/* Sockets msegd holds open: how many clients it really sees connected. */
static int count_sockets(pid_t pid) {
        char dir[64], path[PATH_MAX], target[128];
        struct dirent *e;
        DIR *dp;
        int n = 0;

        snprintf(dir, sizeof dir, "/proc/%d/fd", (int) pid);
        dp = opendir(dir);
        if (!dp)
                return -1;
        while ((e = readdir(dp))) {
                ssize_t len;
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                len = readlink(path, target, sizeof target - 1);
                if (len > 0 && (target[len] = '\0', strncmp(target, "socket:", 7) == 0))
                        n++;
        }
        closedir(dp);
        return n;
}

/* One W7 client: a process of its own, since libmseg shares one connection
 * per process. It stays connected through a handle it keeps open from before
 * "go" until the parent says the run is over (EOF on @end_r), so all 1,000
 * connections stay up for the whole measurement; in between it opens and
 * closes the segment @nops times, timing each open + close. */
static void w7_client(unsigned nops, uint64_t *lat, int ready_w, int go_r, int done_w, int end_r) {
        mseg *keep, *h;
        char c = 'r';
        int r;

        r = seg_attach(&keep, KIND_SHM, "W7");
        if (r < 0) {
                fail_code("W7 client: mseg_open", r);
                _exit(1);
        }
        if (bench_write_full(ready_w, &c, 1) < 0)
                _exit(1);
        close(ready_w);
        if (bench_read_full(go_r, &c, 1) < 0)
                _exit(1);
        for (unsigned j = 0; j < nops; j++) {
                uint64_t t = bench_now_ns();
                r = seg_attach(&h, KIND_SHM, "W7");
                if (r < 0) {
                        fail_code("W7 client: mseg_open", r);
                        _exit(1);
                }
                mseg_close(h);
                lat[j] = bench_now_ns() - t;
        }
        if (bench_write_full(done_w, &c, 1) < 0)
                _exit(1);
        close(done_w);
        (void) read(end_r, &c, 1);      /* returns at EOF: the parent closed it */
        mseg_close(keep);
        _exit(0);
}

/* W7: BENCH_W7_CLIENTS client processes connect and stay connected; the
 * first @nactive of them ($MSEG_BENCH_W7_ACTIVE, default all) share the
 * BENCH_W7_OPS opens and closes, all at once from "go". */
static int run_w7(void) {
        const char *env_active = getenv("MSEG_BENCH_W7_ACTIVE");
        unsigned nactive = env_active ? (unsigned) strtoul(env_active, NULL, 10) : BENCH_W7_CLIENTS;
        int ready[2] = { -1, -1 }, go[2] = { -1, -1 }, done[2] = { -1, -1 }, end[2] = { -1, -1 };
        pid_t *pids = NULL;
        char *goes = NULL;
        uint64_t *lat, t0, t1;
        size_t first_op = 0;
        mseg *creator;
        int r = -1, status, socks = -1;
        unsigned i, nforked = 0;

        if (nactive < 1 || nactive > BENCH_W7_CLIENTS) {
                fprintf(stderr, "mseg-bench: MSEG_BENCH_W7_ACTIVE must be 1..%d\n", BENCH_W7_CLIENTS);
                return -1;
        }
        if (!need_socket()) {
                printf("# W7 skipped: %s\n", B.no_daemon_why);
                return 0;
        }
        lat = mmap(NULL, BENCH_W7_OPS * sizeof *lat, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (lat == MAP_FAILED) {
                fail_errno("mmap");
                return -1;
        }
        pids = calloc(BENCH_W7_CLIENTS, sizeof *pids);
        goes = malloc(BENCH_W7_CLIENTS);
        if (!pids || !goes) {
                fail_errno("malloc");
                goto out_early;
        }
        if (seg_create(&creator, KIND_SHM, "W7", BENCH_W7_SEG) < 0)
                goto out_early;
        if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0 || pipe2(done, O_CLOEXEC) < 0 ||
            pipe2(end, O_CLOEXEC) < 0) {
                fail_errno("pipe");
                goto out;
        }
        fflush(stdout);
        fflush(stderr);
        for (i = 0; i < BENCH_W7_CLIENTS; i++) {
                /* Spread the operations evenly over the active clients. */
                unsigned nops = i >= nactive ? 0 : BENCH_W7_OPS / nactive + (i < BENCH_W7_OPS % nactive);
                pids[i] = fork();
                if (pids[i] < 0) {
                        fail_errno("fork");
                        goto out_kill;
                }
                if (pids[i] == 0) {
                        close(ready[0]);
                        close(go[1]);
                        close(done[0]);
                        close(end[1]);
                        w7_client(nops, lat + first_op, ready[1], go[0], done[1], end[0]);
                }
                nforked++;
                first_op += nops;
        }
        close(ready[1]);
        close(go[0]);
        close(done[1]);
        close(end[0]);
        ready[1] = go[0] = done[1] = end[0] = -1;
        for (i = 0; i < BENCH_W7_CLIENTS; i++) {
                char c;
                if (bench_read_full(ready[0], &c, 1) < 0) {
                        fprintf(stderr, "mseg-bench: W7: a client died while connecting\n");
                        goto out_kill;
                }
        }
        if (B.d.pid > 0)
                socks = count_sockets(B.d.pid);
        memset(goes, 'g', BENCH_W7_CLIENTS);
        t0 = bench_now_ns();
        if (bench_write_full(go[1], goes, BENCH_W7_CLIENTS) < 0)
                goto out_kill;
        for (i = 0; i < BENCH_W7_CLIENTS; i++) {
                char c;
                if (bench_read_full(done[0], &c, 1) < 0) {
                        fprintf(stderr, "mseg-bench: W7: a client died during the run\n");
                        goto out_kill;
                }
        }
        t1 = bench_now_ns();
        close(end[1]);                  /* every client disconnects now */
        end[1] = -1;
        r = 0;
        for (i = 0; i < nforked; i++) {
                waitpid(pids[i], &status, 0);
                pids[i] = 0;
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                        r = -1;
        }
        if (socks >= 0)
                printf("# W7: %d client processes, %u of them opening; msegd held %d sockets when all were "
                       "connected\n", BENCH_W7_CLIENTS, nactive, socks);
        bench_result(IMPL, "W7", "opens_per_s", 0, (double) BENCH_W7_OPS * 1e9 / (double) (t1 - t0));
        bench_result(IMPL, "W7", "p99_us", 1, (double) bench_percentile(lat, BENCH_W7_OPS, 99.0) / 1000.0);
        goto out;
out_kill:
        for (i = 0; i < nforked; i++) {
                if (pids[i] > 0)
                        kill(pids[i], SIGKILL);
        }
        for (i = 0; i < nforked; i++) {
                if (pids[i] > 0)
                        waitpid(pids[i], &status, 0);
        }
out:
        for (i = 0; i < 2; i++) {
                if (ready[i] >= 0)
                        close(ready[i]);
                if (go[i] >= 0)
                        close(go[i]);
                if (done[i] >= 0)
                        close(done[i]);
                if (end[i] >= 0)
                        close(end[i]);
        }
        mseg_close(creator);
        seg_remove(KIND_SHM, "W7");
out_early:
        free(pids);
        free(goes);
        munmap(lat, BENCH_W7_OPS * sizeof *lat);
        return r;
}

/* ----------------------------------------------------------------- main */

static const struct {
        const char *name;
        int (*run)(void);
} workloads[] = {
        { "W1", run_w1 }, { "W2", run_w2 }, { "W3", run_w3 }, { "W4", run_w4 },
        { "W5", run_w5 }, { "W6", run_w6 }, { "W7", run_w7 },
};
#define NWORKLOADS (sizeof workloads / sizeof workloads[0])

static void usage(FILE *f) {
        fprintf(f,
                "usage: mseg-bench [--kind=auto|file|shm] [W1 ... W7]\n"
                "Runs BENCH.md's workloads on libmseg (all of them when none is named) and prints\n"
                "RESULT mseg <workload> <metric> <value> lines.\n"
                "  --kind=file  W1 W2 W3 W5 W6 on managed mapped files in $MSEG_BENCH_DIR or /dev/shm\n"
                "  --kind=shm   W1 W2 W3 W5 W6 on brokered segments (mseg_open through msegd)\n"
                "  --kind=auto  shm when $MSEG_SOCKET names a running msegd, else file (default)\n"
                "W4 and W7 always go through msegd: $MSEG_SOCKET if it answers, else a msegd started\n"
                "on a temporary socket ($MSEGD, or msegd beside this binary or in ../daemon/).\n");
}

/* W7 keeps 1,000 connections and their descriptors open; msegd inherits
 * our limit, so raise the soft limit to the hard one. */
static void raise_fd_limit(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
}

int main(int argc, char **argv) {
        const char *env_sock = getenv("MSEG_SOCKET");
        const char *dir = getenv("MSEG_BENCH_DIR");
        struct stat st;
        char data_names[32] = "";
        bool data = false;
        size_t w;
        int i;

        B.kind = KIND_AUTO;
        B.pid = getpid();
        for (i = 1; i < argc; i++) {
                bool known = false;
                if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
                        usage(stdout);
                        return 0;
                }
                if (strncmp(argv[i], "--kind=", 7) == 0) {
                        const char *k = argv[i] + 7;
                        if (strcmp(k, "file") == 0) {
                                B.kind = KIND_FILE;
                        } else if (strcmp(k, "shm") == 0) {
                                B.kind = KIND_SHM;
                        } else if (strcmp(k, "auto") == 0) {
                                B.kind = KIND_AUTO;
                        } else {
                                usage(stderr);
                                return 2;
                        }
                        continue;
                }
                for (w = 0; w < NWORKLOADS; w++)
                        known |= strcasecmp(argv[i], workloads[w].name) == 0;
                if (!known) {
                        fprintf(stderr, "mseg-bench: unknown workload or option '%s'\n", argv[i]);
                        usage(stderr);
                        return 2;
                }
        }
        if (bench_rng_selftest() < 0)
                return 1;
        raise_fd_limit();
        signal(SIGPIPE, SIG_IGN);

        if (!dir || !*dir)
                dir = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
        snprintf(B.dir, sizeof B.dir, "%s", dir);

        for (w = 0; w < NWORKLOADS; w++) {
                if (!bench_wanted(argc, argv, 1, workloads[w].name))
                        continue;
                if (strcmp(workloads[w].name, "W4") != 0 && strcmp(workloads[w].name, "W7") != 0) {
                        data = true;
                        strcat(data_names, data_names[0] ? " " : "");
                        strcat(data_names, workloads[w].name);
                }
        }
        printf("# mseg-bench: libmseg %s\n", mseg_version());
        if (B.kind == KIND_AUTO)
                B.kind = env_sock && *env_sock && socket_answers(env_sock) ? KIND_SHM : KIND_FILE;
        if (data && B.kind == KIND_SHM) {
                if (!need_socket()) {
                        fprintf(stderr, "mseg-bench: --kind=shm needs msegd: %s\n", B.no_daemon_why);
                        return 1;
                }
                printf("# %s: brokered segments (mseg_open through msegd at %s)\n", data_names, B.socket_path);
        } else if (data) {
                printf("# %s: managed mapped files in %s (mseg_file_open; %s)\n", data_names, B.dir,
                       env_sock && *env_sock ? "MSEG_SOCKET does not answer" : "MSEG_SOCKET unset");
        }

        for (w = 0; w < NWORKLOADS; w++) {
                if (!bench_wanted(argc, argv, 1, workloads[w].name))
                        continue;
                if (workloads[w].run() < 0) {
                        fprintf(stderr, "mseg-bench: %s failed\n", workloads[w].name);
                        B.failures++;
                }
        }
        daemon_stop(&B.d);
        return B.failures ? 1 : 0;
}
