#!/usr/bin/env bash
# Install the Debian 12 packages mseg builds, tests and benchmarks with.
set -euo pipefail
pkgs=(meson ninja-build pkg-config gcc g++ clang libclang-rt-14-dev
      libuv1-dev libjansson-dev libsodium-dev libsystemd-dev systemd libboost-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]} (run as root, or install them)" >&2; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
