// SPDX-License-Identifier: MIT
/*
 * boost-bench.cpp — BENCH.md's workloads on Boost.Interprocess and glibc
 * malloc: the yardstick mseg-bench is compared with. It does exactly the
 * same work as mseg-bench.c (the generator, parameters, procedures and
 * checksums come from common.h) and prints the same RESULT lines with
 * another <impl>:
 *
 *   boost            managed_shared_memory (rbtree_best_fit, default index)
 *   boost-iset       the same with iset_index named explicitly
 *   boost-unordered  the same with iunordered_set_index (Boost's hash index)
 *   boost-flatmap    flat_map_index (sorted vector), W3 only, on request
 *   boost-map        map_index, W3 only, on request
 *   malloc           glibc malloc/free, for W1, W5 and W6
 *
 * The index only matters to named objects, so the index variants run W3;
 * `boost` runs W1-W6. In Boost 1.74 managed_shared_memory's default index
 * *is* iset_index, so `boost` and `boost-iset` are the same type: their W3
 * figures differ only by noise, which is worth seeing on a shared machine.
 * W7 has no Boost counterpart (there is no broker). Boost's W4 is open_only
 * on an existing managed_shared_memory, read get_size, close.
 *
 * glibc malloc has no segment that can fill up, so its W6 counts the 64-byte
 * blocks malloc serves until the heap has grown by the segment size (64 MiB
 * of sbrk): the same question, how many blocks fit in that much memory.
 *
 * Boost segments live in /dev/shm (shm_open) under names that carry the pid,
 * and are removed afterwards.
 */
#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/interprocess/indexes/flat_map_index.hpp>
#include <boost/interprocess/indexes/iset_index.hpp>
#include <boost/interprocess/indexes/iunordered_set_index.hpp>
#include <boost/interprocess/indexes/map_index.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <array>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "common.h"

namespace bi = boost::interprocess;

typedef bi::managed_shared_memory ShmDefault;
typedef bi::basic_managed_shared_memory<char, bi::rbtree_best_fit<bi::mutex_family>, bi::iset_index> ShmIset;
typedef bi::basic_managed_shared_memory<char, bi::rbtree_best_fit<bi::mutex_family>, bi::iunordered_set_index>
        ShmUnordered;
typedef bi::basic_managed_shared_memory<char, bi::rbtree_best_fit<bi::mutex_family>, bi::flat_map_index> ShmFlat;
typedef bi::basic_managed_shared_memory<char, bi::rbtree_best_fit<bi::mutex_family>, bi::map_index> ShmMap;

namespace {

int failures;

std::string shm_name(const char *impl, const char *w) {
        return std::string("boost-bench.") + std::to_string(getpid()) + "." + impl + "." + w;
}

/* Removes the shared memory object when the workload ends, however it ends. */
struct ShmRemover {
        std::string name;
        explicit ShmRemover(const std::string &n) : name(n) { bi::shared_memory_object::remove(name.c_str()); }
        ~ShmRemover() { bi::shared_memory_object::remove(name.c_str()); }
};

struct Fatal : std::exception {
        std::string what_;
        explicit Fatal(const std::string &w) : what_(w) {}
        const char *what() const noexcept override { return what_.c_str(); }
};

/* --------------------------------------------------------------- allocators */

template <class Seg> struct SegAlloc {
        Seg &seg;
        void *alloc(size_t n) { return seg.allocate(n, std::nothrow); }
        void release(void *p) { seg.deallocate(p); }
};

struct MallocAlloc {
        void *alloc(size_t n) { return malloc(n); }
        void release(void *p) { free(p); }
};

/* --------------------------------------------------------------- ring churn */

template <class A> void ring_fill(A &a, void **ring, const bench_ring_params &p, bench_rng &rng) {
        for (unsigned k = 0; k < p.ring_len; k++) {
                uint64_t sz = bench_uniform(&rng, p.lo, p.hi);
                void *q = a.alloc(sz);
                if (!q)
                        throw Fatal("allocation failed while filling the ring");
                *(volatile uint64_t *) q = k;
                ring[k] = q;
        }
}

template <class A> uint64_t ring_churn(A &a, void **ring, const bench_ring_params &p, bench_rng &rng) {
        uint64_t sum = 0;
        unsigned i = 0;

        for (uint64_t s = 0; s < p.steps; s++) {
                a.release(ring[i]);
                uint64_t sz = bench_uniform(&rng, p.lo, p.hi);
                sum += sz;
                void *q = a.alloc(sz);
                if (!q)
                        throw Fatal("allocation failed in the churn");
                *(volatile uint64_t *) q = s;
                ring[i] = q;
                if (++i == p.ring_len)
                        i = 0;
        }
        return sum;
}

template <class A> void ring_free(A &a, void **ring, unsigned len) {
        for (unsigned k = 0; k < len; k++)
                a.release(ring[k]);
}

/* W1 and W5 on any allocator. */
template <class A> void ring_run(const char *impl, const char *w, A &a, const bench_ring_params &p, uint64_t want) {
        std::vector<void *> ring(p.ring_len);
        bench_rng rng;

        bench_rng_init(&rng, BENCH_SEED);
        ring_fill(a, ring.data(), p, rng);
        uint64_t t0 = bench_now_ns();
        uint64_t sum = ring_churn(a, ring.data(), p, rng);
        uint64_t t1 = bench_now_ns();
        ring_free(a, ring.data(), p.ring_len);
        bench_result(impl, w, "ns_per_step", 1, (double) (t1 - t0) / (double) p.steps);
        if (bench_checksum(impl, w, "checksum_req_bytes", sum, want) < 0)
                failures++;
}

template <class Seg> void seg_ring(const char *impl, const char *w, const bench_ring_params &p, uint64_t want) {
        ShmRemover rm(shm_name(impl, w));
        Seg seg(bi::create_only, rm.name.c_str(), p.seg_size);
        SegAlloc<Seg> a{ seg };
        ring_run(impl, w, a, p, want);
}

void malloc_ring(const char *w, const bench_ring_params &p, uint64_t want) {
        MallocAlloc a;
        ring_run("malloc", w, a, p, want);
}

/* W2's child: open by name, fill, ready, wait for go, churn, report. */
template <class Seg> void w2_child(const std::string &name, unsigned idx, int ready_w, int go_r, int done_w) {
        const bench_ring_params &p = BENCH_W2;
        std::vector<void *> ring(p.ring_len);
        bench_rng rng;
        uint64_t msg[2];
        char c = 'r';

        Seg seg(bi::open_only, name.c_str());
        SegAlloc<Seg> a{ seg };
        bench_rng_init(&rng, BENCH_SEED + idx);
        ring_fill(a, ring.data(), p, rng);
        if (bench_write_full(ready_w, &c, 1) < 0)
                throw Fatal("W2 child: write");
        close(ready_w);
        if (bench_read_full(go_r, &c, 1) < 0)
                throw Fatal("W2 child: no go");
        msg[1] = ring_churn(a, ring.data(), p, rng);
        msg[0] = idx;
        if (bench_write_full(done_w, msg, sizeof msg) < 0)
                throw Fatal("W2 child: write");
        close(done_w);
        ring_free(a, ring.data(), p.ring_len);
}

template <class Seg> void seg_w2(const char *impl) {
        ShmRemover rm(shm_name(impl, "W2"));
        Seg seg(bi::create_only, rm.name.c_str(), BENCH_W2.seg_size);
        const uint64_t want[BENCH_W2_PROCS] = { BENCH_W2_CHECKSUM_SEED42, BENCH_W2_CHECKSUM_SEED43 };
        uint64_t sums[BENCH_W2_PROCS] = { 0 };
        pid_t pids[BENCH_W2_PROCS] = { 0 };
        int ready[2], go[2], done[2], status;
        uint64_t total = BENCH_W2.steps * BENCH_W2_PROCS;
        char goes[BENCH_W2_PROCS];
        bool ok = true;

        if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0 || pipe2(done, O_CLOEXEC) < 0)
                throw Fatal("pipe");
        fflush(stdout);
        for (unsigned i = 0; i < BENCH_W2_PROCS; i++) {
                pids[i] = fork();
                if (pids[i] < 0)
                        throw Fatal("fork");
                if (pids[i] == 0) {
                        int rc = 0;
                        close(ready[0]);
                        close(go[1]);
                        close(done[0]);
                        try {
                                w2_child<Seg>(rm.name, i, ready[1], go[0], done[1]);
                        } catch (const std::exception &e) {
                                fprintf(stderr, "boost-bench: %s W2 child %u: %s\n", impl, i, e.what());
                                rc = 1;
                        }
                        _exit(rc);
                }
        }
        close(ready[1]);
        close(go[0]);
        close(done[1]);
        for (unsigned i = 0; i < BENCH_W2_PROCS && ok; i++) {
                char c;
                ok = bench_read_full(ready[0], &c, 1) == 0;
        }
        memset(goes, 'g', sizeof goes);
        uint64_t t0 = bench_now_ns();
        if (ok)
                ok = bench_write_full(go[1], goes, sizeof goes) == 0;
        for (unsigned i = 0; i < BENCH_W2_PROCS && ok; i++) {
                uint64_t msg[2];
                ok = bench_read_full(done[0], msg, sizeof msg) == 0 && msg[0] < BENCH_W2_PROCS;
                if (ok)
                        sums[msg[0]] = msg[1];
        }
        uint64_t t1 = bench_now_ns();
        close(ready[0]);
        close(go[1]);
        close(done[0]);
        for (unsigned i = 0; i < BENCH_W2_PROCS; i++) {
                if (!ok)
                        kill(pids[i], SIGKILL);
                waitpid(pids[i], &status, 0);
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                        ok = false;
        }
        if (!ok)
                throw Fatal("a W2 child failed");
        bench_result(impl, "W2", "steps_per_s", 0, (double) total * 1e9 / (double) (t1 - t0));
        bench_result(impl, "W2", "ns_per_step", 1, (double) (t1 - t0) / (double) total);
        for (unsigned i = 0; i < BENCH_W2_PROCS; i++) {
                char metric[64];
                snprintf(metric, sizeof metric, "checksum_req_bytes_seed%u", BENCH_SEED + i);
                if (bench_checksum(impl, "W2", metric, sums[i], want[i]) < 0)
                        failures++;
        }
}

/* ---------------------------------------------------------------- named */

template <class Seg> void seg_w3(const char *impl) {
        ShmRemover rm(shm_name(impl, "W3"));
        Seg seg(bi::create_only, rm.name.c_str(), BENCH_W3_SEG);
        std::vector<std::array<char, 16>> names(BENCH_W3_N);
        std::vector<uint32_t> perm(BENCH_W3_N);
        std::vector<bench_obj *> objs(BENCH_W3_N);

        for (uint32_t i = 0; i < BENCH_W3_N; i++)
                snprintf(names[i].data(), 16, "obj%" PRIu32, i);
        bench_perm(perm.data(), BENCH_W3_N);

        uint64_t t0 = bench_now_ns();
        for (uint32_t i = 0; i < BENCH_W3_N; i++)
                objs[i] = seg.template construct<bench_obj>(names[i].data())();
        uint64_t t1 = bench_now_ns();
        for (uint32_t i = 0; i < BENCH_W3_N; i++) {
                uint32_t k = perm[i];
                std::pair<bench_obj *, typename Seg::size_type> r = seg.template find<bench_obj>(names[k].data());
                if (r.first != objs[k] || r.second != 1)
                        throw Fatal(std::string("find did not return ") + names[k].data());
        }
        uint64_t t2 = bench_now_ns();
        for (uint32_t i = 0; i < BENCH_W3_N; i++) {
                if (!seg.template destroy<bench_obj>(names[perm[i]].data()))
                        throw Fatal(std::string("destroy did not find ") + names[perm[i]].data());
        }
        uint64_t t3 = bench_now_ns();
        bench_result(impl, "W3", "ns_per_construct", 1, (double) (t1 - t0) / BENCH_W3_N);
        bench_result(impl, "W3", "ns_per_find", 1, (double) (t2 - t1) / BENCH_W3_N);
        bench_result(impl, "W3", "ns_per_destroy", 1, (double) (t3 - t2) / BENCH_W3_N);
}

/* --------------------------------------------------------------- attach */

template <class Seg> void seg_w4(const char *impl) {
        ShmRemover rm(shm_name(impl, "W4"));
        Seg creator(bi::create_only, rm.name.c_str(), BENCH_W4_SEG);
        volatile uint64_t sink = 0;

        uint64_t t0 = bench_now_ns();
        for (int i = 0; i < BENCH_W4_ROUNDS; i++) {
                Seg seg(bi::open_only, rm.name.c_str());
                sink = sink + seg.get_size();
        }
        uint64_t t1 = bench_now_ns();
        bench_result(impl, "W4", "ns_per_attach", 0, (double) (t1 - t0) / BENCH_W4_ROUNDS);
}

/* -------------------------------------------------------------- density */

template <class Seg> void seg_w6(const char *impl) {
        ShmRemover rm(shm_name(impl, "W6"));
        Seg seg(bi::create_only, rm.name.c_str(), BENCH_W6_SEG);
        uint64_t count = 0;
        void *p;

        while ((p = seg.allocate(64, std::nothrow)) != nullptr) {
                *(volatile uint64_t *) p = count;
                count++;
        }
        bench_result_u64(impl, "W6", "count", count);
        bench_result(impl, "W6", "efficiency", 4, (double) count * 64.0 / (double) BENCH_W6_SEG);
}

void malloc_w6() {
        /* The block list is mmap'ed so that it takes nothing from the heap
         * being measured. */
        size_t cap = BENCH_W6_SEG / 64 + 1;
        void **blocks = (void **) mmap(nullptr, cap * sizeof(void *), PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (blocks == MAP_FAILED)
                throw Fatal("mmap");
        char *end = (char *) sbrk(0) + BENCH_W6_SEG;
        uint64_t count = 0;

        for (;;) {
                char *p = (char *) malloc(64);
                if (!p)
                        break;
                blocks[count] = p;
                if (p + 64 > end || count + 1 >= cap) {
                        free(p);
                        break;
                }
                *(volatile uint64_t *) p = count;
                count++;
        }
        for (uint64_t i = 0; i < count; i++)
                free(blocks[i]);
        munmap(blocks, cap * sizeof(void *));
        if (count == 0) {
                /* A sanitizer's malloc, for instance, does not use the sbrk heap. */
                printf("# malloc W6 skipped: this malloc does not allocate from the sbrk heap\n");
                return;
        }
        bench_result_u64("malloc", "W6", "count", count);
        bench_result("malloc", "W6", "efficiency", 4, (double) count * 64.0 / (double) BENCH_W6_SEG);
}

/* ----------------------------------------------------------------- main */

struct Impl {
        const char *name;
        bool on_by_default;
        void (*w1)();
        void (*w2)();
        void (*w3)();
        void (*w4)();
        void (*w5)();
        void (*w6)();
};

template <class Seg, const char *N> struct SegImpl {
        static void w1() { seg_ring<Seg>(N, "W1", BENCH_W1, BENCH_W1_CHECKSUM); }
        static void w2() { seg_w2<Seg>(N); }
        static void w3() { seg_w3<Seg>(N); }
        static void w4() { seg_w4<Seg>(N); }
        static void w5() { seg_ring<Seg>(N, "W5", BENCH_W5, BENCH_W5_CHECKSUM); }
        static void w6() { seg_w6<Seg>(N); }
};

extern const char n_boost[] = "boost";
extern const char n_iset[] = "boost-iset";
extern const char n_unordered[] = "boost-unordered";
extern const char n_flat[] = "boost-flatmap";
extern const char n_map[] = "boost-map";

void malloc_w1() { malloc_ring("W1", BENCH_W1, BENCH_W1_CHECKSUM); }
void malloc_w5() { malloc_ring("W5", BENCH_W5, BENCH_W5_CHECKSUM); }

typedef SegImpl<ShmDefault, n_boost> B0;
typedef SegImpl<ShmIset, n_iset> B1;
typedef SegImpl<ShmUnordered, n_unordered> B2;
typedef SegImpl<ShmFlat, n_flat> B3;
typedef SegImpl<ShmMap, n_map> B4;

/* Which implementation runs which workload (nullptr: not this one). */
const Impl impls[] = {
        { n_boost, true, B0::w1, B0::w2, B0::w3, B0::w4, B0::w5, B0::w6 },
        { n_iset, true, nullptr, nullptr, B1::w3, nullptr, nullptr, nullptr },
        { n_unordered, true, nullptr, nullptr, B2::w3, nullptr, nullptr, nullptr },
        { n_flat, false, nullptr, nullptr, B3::w3, nullptr, nullptr, nullptr },
        { n_map, false, nullptr, nullptr, B4::w3, nullptr, nullptr, nullptr },
        { "malloc", true, malloc_w1, nullptr, nullptr, nullptr, malloc_w5, malloc_w6 },
};

void usage(FILE *f) {
        fprintf(f,
                "usage: boost-bench [--impl=NAME[,NAME...]] [W1 ... W7]\n"
                "Runs BENCH.md's workloads on Boost.Interprocess and glibc malloc (all of them\n"
                "when none is named) and prints RESULT <impl> <workload> <metric> <value> lines.\n"
                "Implementations: boost, boost-iset, boost-unordered, malloc (default), and\n"
                "boost-flatmap, boost-map (W3 only; flat_map_index destroys take seconds).\n");
}

bool impl_selected(const std::vector<std::string> &sel, const Impl &im) {
        if (sel.empty())
                return im.on_by_default;
        for (const std::string &s : sel)
                if (s == im.name)
                        return true;
        return false;
}

} // namespace

int main(int argc, char **argv) {
        static const char *const wnames[] = { "W1", "W2", "W3", "W4", "W5", "W6", "W7" };
        std::vector<std::string> sel;

        for (int i = 1; i < argc; i++) {
                std::string a = argv[i];
                if (a == "-h" || a == "--help") {
                        usage(stdout);
                        return 0;
                }
                if (a.compare(0, 7, "--impl=") == 0) {
                        std::string list = a.substr(7);
                        size_t pos;
                        while ((pos = list.find(',')) != std::string::npos) {
                                sel.push_back(list.substr(0, pos));
                                list.erase(0, pos + 1);
                        }
                        if (!list.empty())
                                sel.push_back(list);
                        for (const std::string &s : sel) {
                                bool known = false;
                                for (const Impl &im : impls)
                                        known |= s == im.name;
                                if (!known) {
                                        fprintf(stderr, "boost-bench: unknown implementation '%s'\n", s.c_str());
                                        return 2;
                                }
                        }
                        continue;
                }
                bool known = false;
                for (const char *w : wnames)
                        known |= strcasecmp(argv[i], w) == 0;
                if (!known) {
                        fprintf(stderr, "boost-bench: unknown workload or option '%s'\n", argv[i]);
                        usage(stderr);
                        return 2;
                }
        }
        if (bench_rng_selftest() < 0)
                return 1;
        signal(SIGPIPE, SIG_IGN);
        printf("# boost-bench: Boost %d.%d.%d; managed_shared_memory's default index is iset_index\n",
               BOOST_VERSION / 100000, BOOST_VERSION / 100 % 1000, BOOST_VERSION % 100);

        for (int w = 0; w < 7; w++) {
                if (!bench_wanted(argc, argv, 1, wnames[w]))
                        continue;
                if (w == 6) {
                        printf("# W7: no Boost counterpart (Boost has no broker)\n");
                        continue;
                }
                for (const Impl &im : impls) {
                        void (*fn)() = w == 0 ? im.w1 : w == 1 ? im.w2 : w == 2 ? im.w3
                                     : w == 3 ? im.w4 : w == 4 ? im.w5 : im.w6;
                        if (!fn || !impl_selected(sel, im))
                                continue;
                        try {
                                fn();
                        } catch (const std::exception &e) {
                                fprintf(stderr, "boost-bench: %s %s failed: %s\n", im.name, wnames[w], e.what());
                                failures++;
                        }
                }
        }
        return failures ? 1 : 0;
}
