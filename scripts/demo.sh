#!/usr/bin/env bash
# mseg's main job in one command: build, start msegd in the foreground on a
# private socket (no root needed once built), and show two client processes
# sharing a segment through it: one constructs named objects, the other
# finds and changes them, the first sees the change. Then msegctl lists it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
[ -d build ] || meson setup build --buildtype=debugoptimized >/dev/null
ninja -C build >/dev/null

run=$(mktemp -d /tmp/mseg-demo.XXXXXX)
export MSEG_SOCKET=$run/socket
./build/daemon/msegd --foreground --socket "$MSEG_SOCKET" --state-dir "$run/state" &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$run"' EXIT
for _ in $(seq 100); do [ -S "$MSEG_SOCKET" ] && break; sleep 0.05; done

./build/tools/mseg-demo producer &
producer=$!
sleep 0.3
./build/tools/msegctl list
./build/tools/msegctl objects demo
./build/tools/mseg-demo consumer
wait $producer
echo "demo finished: msegd served both clients on $MSEG_SOCKET"
