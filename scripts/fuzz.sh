#!/usr/bin/env bash
# libFuzzer runs of every target in tests/fuzz (clang, -fsanitize=fuzzer,
# address,undefined), FUZZ_SECONDS each (default 60). A crash fails the run;
# the input is left in build-fuzz/ — add it to tests/fuzz/corpus/<target>/
# as a regression case (every build replays the corpus).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang >/dev/null || { echo "fuzz: clang not found, skipped"; exit 0; }
secs=${FUZZ_SECONDS:-60}
out=build-fuzz
mkdir -p "$out"
deps=$(pkg-config --cflags --libs libsodium jansson)
srcs=(client-lib/*.c protocol/*.c)
for src in tests/fuzz/fuzz-*.c; do
  t=$(basename "$src" .c)
  clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -D_GNU_SOURCE -Iclient-lib -Iclient-lib/include -Iprotocol -Itests/helpers \
    "$src" "${srcs[@]}" $deps -lpthread -o "$out/$t"
  work=$(mktemp -d)
  cp -r "tests/fuzz/corpus/$t/." "$work/" 2>/dev/null || true
  echo "fuzz: $t for ${secs}s"
  if ! (cd "$out" && ASAN_OPTIONS=detect_leaks=1 "./$t" -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 "$work" 2>"$t.log"); then
    tail -50 "$out/$t.log"
    echo "fuzz: $t FAILED; crash input in $out/ (add it to tests/fuzz/corpus/$t/)"
    exit 1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$out/$t.log" | sed "s/^/fuzz: $t /"
  rm -rf "$work"
done
