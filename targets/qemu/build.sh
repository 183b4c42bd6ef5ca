#!/usr/bin/env bash
# Cross-build the static aarch64 binaries (ek-test, ek-run, ek-test-ekm) with Debian's aarch64-linux-gnu-g++.
# The same binary serves qemu-user CI, the Raspberry Pi 4 and Android (static: no loader).
#
# Usage: targets/qemu/build.sh [BUILD_DIR]      (default build/aarch64)
# Env:   JOBS (default 2), CMAKE (default cmake), EDGEKIT_CROSS_PREFIX (aarch64-linux-gnu-)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${1:-$root/build/aarch64}"
cmake="${CMAKE:-cmake}"
prefix="${EDGEKIT_CROSS_PREFIX:-aarch64-linux-gnu-}"

if ! command -v "${prefix}g++" >/dev/null 2>&1; then
  echo "error: ${prefix}g++ not found (Debian/Ubuntu: apt-get install g++-aarch64-linux-gnu)" >&2
  exit 2
fi
if ! command -v "$cmake" >/dev/null 2>&1; then
  echo "error: cmake not found (pip install cmake, or set CMAKE=/path/to/cmake)" >&2
  exit 2
fi

mkdir -p "$build"
# pytest and a developer may build at the same time: one build per directory at a time.
exec 9>"$build/.build.lock"
flock 9

gen=()
if [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null 2>&1; then
  gen=(-G Ninja)  # only on first configure: CMake refuses to switch generators later
fi
"$cmake" -S "$root" -B "$build" "${gen[@]}" \
  -DCMAKE_TOOLCHAIN_FILE="$root/targets/qemu/aarch64-toolchain.cmake" \
  -DEDGEKIT_CROSS_PREFIX="$prefix" \
  -DCMAKE_BUILD_TYPE=Release \
  -DEDGEKIT_PYTHON=OFF -DEDGEKIT_TESTS=ON -DEDGEKIT_STATIC=ON >"$build/configure.log" 2>&1 \
  || { cat "$build/configure.log" >&2; exit 1; }
"$cmake" --build "$build" -j "${JOBS:-2}"
echo "built: $build/ek-test $build/ek-run $build/ek-test-ekm"
