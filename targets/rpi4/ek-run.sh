#!/usr/bin/env bash
# Copy ek-run, a model and its --input files to a Raspberry Pi 4 over SSH, run it there, print
# its JSON, and copy --output-dir back.
#
# Usage: targets/rpi4/ek-run.sh USER@HOST MODEL.ekm [ek-run flags...]
# Env:   EK_RUN (default build/aarch64/ek-run), REMOTE_DIR (default /tmp)
# Exit:  ek-run's own code; 2 for bad arguments or an unreachable host.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[ $# -ge 2 ] || { echo "usage: $0 USER@HOST MODEL.ekm [ek-run flags...]" >&2; exit 2; }
host="$1"; model="$2"; shift 2
bin="${EK_RUN:-$root/build/aarch64/ek-run}"
rdir="${REMOTE_DIR:-/tmp}/edgekit-run.$$"
[ -x "$bin" ] || { echo "error: $bin missing; run targets/rpi4/build.sh first" >&2; exit 2; }
[ -f "$model" ] || { echo "error: $model not found" >&2; exit 2; }

# Every remote command goes through printf %q so that file names and flag values reach ek-run
# as single arguments and never as shell syntax on the device.
remote() { ssh -o BatchMode=yes "$host" "$(printf '%q ' "$@")"; }
if ! ssh -o BatchMode=yes -o ConnectTimeout=10 "$host" true </dev/null >/dev/null 2>&1; then
  echo "error: cannot reach $host over ssh (check the host name, network and key login)" >&2
  exit 2
fi

args=() uploads=() outdir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --input)
      [ $# -ge 2 ] || { echo "error: --input needs NAME=file.npy" >&2; exit 2; }
      name="${2%%=*}"; file="${2#*=}"
      [ "$name" != "$2" ] && [ -f "$file" ] || { echo "error: --input $2: not NAME=existing file" >&2; exit 2; }
      uploads+=("$file")
      args+=(--input "$name=$rdir/in${#uploads[@]}.npy"); shift 2 ;;
    --output-dir)
      [ $# -ge 2 ] || { echo "error: --output-dir needs a value" >&2; exit 2; }
      outdir="$2"; args+=(--output-dir "$rdir/out"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done

trap 'remote rm -rf "$rdir" >/dev/null 2>&1 || true' EXIT
remote mkdir -p "$rdir"
scp -q "$bin" "$host:$rdir/ek-run"
scp -q "$model" "$host:$rdir/model.ekm"
for i in "${!uploads[@]}"; do scp -q "${uploads[$i]}" "$host:$rdir/in$((i + 1)).npy"; done
rc=0
remote "$rdir/ek-run" "$rdir/model.ekm" "${args[@]}" || rc=$?
if [ "$rc" -eq 0 ] && [ -n "$outdir" ]; then
  mkdir -p "$outdir"
  scp -q -r "$host:$rdir/out/." "$outdir/"
fi
exit "$rc"
