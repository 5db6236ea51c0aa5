#!/usr/bin/env bash
# meson install into a staging tree, then build an out-of-tree program with
# `#include <mseg.h>` and `pkg-config --cflags --libs mseg` against it, and run it.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-test}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
DESTDIR=$stage meson install -C "$build" --quiet >/dev/null
pcdir=$(dirname "$(find "$stage" -name mseg.pc | head -1)")
export PKG_CONFIG_PATH=$pcdir PKG_CONFIG_SYSROOT_DIR=$stage
libdir=$(pkg-config --variable=libdir mseg)
cc -Wall -Wextra -Werror tests/install/client.c $(pkg-config --cflags --libs mseg) -o "$stage/client"
LD_LIBRARY_PATH=$libdir "$stage/client"   # pkg-config already put the sysroot in front
