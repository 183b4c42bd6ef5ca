#!/usr/bin/env bash
# Build the Android (arm64-v8a) binaries. A fully static aarch64 Linux binary needs no
# dynamic loader, so the glibc cross build runs on Android as is; no NDK is needed for the
# kernel tests and benchmarks.  Usage: targets/android/build.sh [BUILD_DIR]
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/../qemu/build.sh" "$@"
