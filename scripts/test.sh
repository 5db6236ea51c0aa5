#!/usr/bin/env bash
# The whole test suite: a normal build (warnings as errors under CI) and an
# AddressSanitizer + UBSan build, each running every meson test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
werror=false; [ "${CI:-}" = true ] || [ "${WERROR:-}" = 1 ] && werror=true
jobs=$(nproc)

rm -rf build-test build-asan
meson setup build-test --buildtype=debugoptimized -Dwerror=$werror >/dev/null
ninja -C build-test
meson test -C build-test --print-errorlogs --num-processes "$jobs" | tee build-test/summary.txt
bash scripts/check-install.sh build-test

meson setup build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false \
  -Dwerror=$werror >/dev/null
ninja -C build-asan
meson test -C build-asan --print-errorlogs --num-processes "$jobs" --timeout-multiplier 3 | tee build-asan/summary.txt

if [ -x scripts/fuzz.sh ]; then bash scripts/fuzz.sh; fi
passed=$(awk '/^Ok:/ { n += $2 } END { print n + 0 }' build-test/summary.txt build-asan/summary.txt)
skipped=$(awk '/^Skipped:/ { n += $2 } END { print n + 0 }' build-test/summary.txt build-asan/summary.txt)
echo "all test builds passed"
echo "$passed passed, 0 failed, $skipped skipped"
