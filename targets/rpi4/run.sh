#!/usr/bin/env bash
# Copy ek-test to a Raspberry Pi 4 over SSH and run it there; dispatch must pick neon.
#
# Usage: targets/rpi4/run.sh USER@HOST [ek-test flags...]
# Env:   EK_TEST (default build/aarch64/ek-test), REMOTE_DIR (default /tmp)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[ $# -ge 1 ] || { echo "usage: $0 USER@HOST [ek-test flags...]" >&2; exit 2; }
host="$1"; shift
bin="${EK_TEST:-$root/build/aarch64/ek-test}"
dir="${REMOTE_DIR:-/tmp}"
[ -x "$bin" ] || { echo "error: $bin missing; run targets/rpi4/build.sh first" >&2; exit 2; }
scp -q "$bin" "$host:$dir/ek-test"
# --no-golden: the source tree (tests/golden) is not on the device.
ssh "$host" "$dir/ek-test --expect-isa neon --no-golden $*"
