#!/usr/bin/env bash
# Run the cross-built static ek-run under qemu-user with an explicit CPU model (correctness
# only: qemu timings mean nothing). Prints ek-run's JSON.
#
# Usage: targets/qemu/ek-run.sh CPU MODEL.ekm [ek-run flags...]   (CPU: cortex-a72, cortex-a76)
# Env:   EK_RUN (default build/aarch64/ek-run)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[ $# -ge 2 ] || { echo "usage: $0 CPU MODEL.ekm [ek-run flags...]" >&2; exit 2; }
cpu="$1"; shift
bin="${EK_RUN:-$root/build/aarch64/ek-run}"
command -v qemu-aarch64 >/dev/null 2>&1 || { echo "error: qemu-aarch64 not found (apt-get install qemu-user)" >&2; exit 2; }
[ -x "$bin" ] || { echo "error: $bin missing; run targets/qemu/build.sh first" >&2; exit 2; }
exec qemu-aarch64 -cpu "$cpu" "$bin" "$@"
