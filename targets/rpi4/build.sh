#!/usr/bin/env bash
# Build the Raspberry Pi 4 (Cortex-A72, ARMv8.0: neon, no sdot) binaries: a static aarch64
# cross build, identical to the qemu CI one.  Usage: targets/rpi4/build.sh [BUILD_DIR]
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/../qemu/build.sh" "$@"
