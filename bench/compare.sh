#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# compare.sh — BENCH.md's side-by-side comparison: runs mseg-bench and
# boost-bench in one run, one workload at a time and alternating (so that
# both see the same machine load), and prints every RESULT line followed by
# the ratios mseg/<other> for each figure both have:
#
#   RATIO W1 ns_per_step mseg/boost 0.12
#
# For times (ns_*, p99_us) a ratio below 1 means mseg is faster; for rates
# and densities (steps_per_s, opens_per_s, count, efficiency) above 1 means
# mseg does better. `RATIO W2 steps_per_s X/X-W1 r` is W2's aggregate rate
# over the same implementation's one-process W1 rate (2-process scaling).
#
# With -r N every workload runs N times (alternating) and each figure is the
# median of its N values: use it on a shared, noisy machine.
#
# usage: compare.sh [-C BUILDDIR] [-r N] [-k file|shm] [-i IMPLS] [W1 ... W7]
#   -C BUILDDIR  where meson built mseg (default: ./build, or the directory
#                of this script if the binaries are there)
#   -r N         repetitions per workload (default 1)
#   -k KIND      passed to mseg-bench as --kind=KIND
#   -i IMPLS     passed to boost-bench as --impl=IMPLS
set -u

here=$(cd "$(dirname "$0")" && pwd)
builddir=""
reps=1
kind=""
impls=""
while getopts "C:r:k:i:h" opt; do
        case $opt in
        C) builddir=$OPTARG ;;
        r) reps=$OPTARG ;;
        k) kind=$OPTARG ;;
        i) impls=$OPTARG ;;
        h) sed -n '3,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) exit 2 ;;
        esac
done
shift $((OPTIND - 1))
case $reps in ''|*[!0-9]*|0) echo "compare.sh: -r needs a positive number" >&2; exit 2 ;; esac

if [ -n "$builddir" ]; then
        bindir=$builddir/bench
elif [ -x "$here/mseg-bench" ]; then
        bindir=$here
else
        bindir=./build/bench
fi
mseg_bench=$bindir/mseg-bench
boost_bench=$bindir/boost-bench
if [ ! -x "$mseg_bench" ]; then
        echo "compare.sh: no mseg-bench in $bindir (build it, or pass -C BUILDDIR)" >&2
        exit 2
fi
if [ ! -x "$boost_bench" ]; then
        echo "# boost-bench not built (no C++ compiler or Boost headers): mseg figures only"
        boost_bench=""
fi

workloads=("$@")
[ ${#workloads[@]} -eq 0 ] && workloads=(W1 W2 W3 W4 W5 W6 W7)

results=$(mktemp)
trap 'rm -f "$results"' EXIT
status=0

# Each distinct comment line passes through once; RESULT lines go to $results.
declare -A seen
run() {
        local line
        while IFS= read -r line; do
                case $line in
                RESULT\ *) echo "$line" >>"$results" ;;
                EXIT\ 0) ;;
                EXIT\ *) echo "# $(basename "$1") $w exited with status ${line#EXIT }"; status=1 ;;
                *) if [ -z "${seen[$line]+x}" ]; then seen[$line]=1; echo "$line"; fi ;;
                esac
        done < <("$@"; echo "EXIT $?")
}

for w in "${workloads[@]}"; do
        for ((rep = 1; rep <= reps; rep++)); do
                run "$mseg_bench" ${kind:+--kind=$kind} "$w"
                [ -n "$boost_bench" ] && run "$boost_bench" ${impls:+--impl=$impls} "$w"
        done
done

awk -v reps="$reps" '
function median(key,    n, i, j, t, v) {
        n = split(vals[key], v, " ")
        for (i = 2; i <= n; i++)            # insertion sort, n is small
                for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
        if (n % 2) return v[(n + 1) / 2]
        return (v[n / 2] + v[n / 2 + 1]) / 2
}
function fmt(x) { return (x == int(x)) ? sprintf("%.0f", x) : sprintf("%.6g", x) }
$1 == "RESULT" {
        key = $2 SUBSEP $3 SUBSEP $4
        if (!(key in vals)) { order[++nkeys] = key; vals[key] = $5 } else vals[key] = vals[key] " " $5
        impl[$2] = 1
}
END {
        for (k = 1; k <= nkeys; k++) {
                split(order[k], f, SUBSEP)
                med[order[k]] = median(order[k])
                printf "RESULT %s %s %s %s\n", f[1], f[2], f[3], fmt(med[order[k]])
        }
        for (k = 1; k <= nkeys; k++) {
                split(order[k], f, SUBSEP)
                if (f[1] != "mseg" || f[3] ~ /^checksum/) continue
                for (k2 = 1; k2 <= nkeys; k2++) {
                        split(order[k2], g, SUBSEP)
                        if (g[1] == "mseg" || g[2] != f[2] || g[3] != f[3] || med[order[k2]] == 0) continue
                        printf "RATIO %s %s mseg/%s %.3g\n", f[2], f[3], g[1], med[order[k]] / med[order[k2]]
                }
        }
        # Two-process scaling: W2 aggregate rate over the one-process W1 rate.
        for (i in impl) {
                w2 = i SUBSEP "W2" SUBSEP "steps_per_s"; w1 = i SUBSEP "W1" SUBSEP "ns_per_step"
                if ((w2 in med) && (w1 in med) && med[w1] > 0)
                        printf "RATIO W2 steps_per_s %s/%s-W1 %.3g\n", i, i, med[w2] / (1e9 / med[w1])
        }
        if (reps > 1) printf "# every figure is the median of %d runs\n", reps
}' "$results"
exit $status
