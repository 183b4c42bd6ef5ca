#!/usr/bin/env bash
# Copy ek-run and a model to a Raspberry Pi 4 over SSH, run it there, print its JSON.
#
# Usage: targets/rpi4/ek-run.sh USER@HOST MODEL.ekm [ek-run flags...]
# Env:   EK_RUN (default build/aarch64/ek-run), REMOTE_DIR (default /tmp)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[ $# -ge 2 ] || { echo "usage: $0 USER@HOST MODEL.ekm [ek-run flags...]" >&2; exit 2; }
host="$1"; model="$2"; shift 2
bin="${EK_RUN:-$root/build/aarch64/ek-run}"
dir="${REMOTE_DIR:-/tmp}"
[ -x "$bin" ] || { echo "error: $bin missing; run targets/rpi4/build.sh first" >&2; exit 2; }
[ -f "$model" ] || { echo "error: $model not found" >&2; exit 2; }
scp -q "$bin" "$host:$dir/ek-run"
scp -q "$model" "$host:$dir/model.ekm"
ssh "$host" "$dir/ek-run $dir/model.ekm $*"
