#!/usr/bin/env bash
# Push ek-run, a model and its --input files to an Android device (adb), run it from
# /data/local/tmp, print its JSON, and pull --output-dir back.
#
# Usage: targets/android/ek-run.sh MODEL.ekm [ek-run flags...]
# Env:   EK_RUN (default build/aarch64/ek-run), ANDROID_SERIAL (adb's own: which device)
#        ANDROID_DIR (default /data/local/tmp; must be writable and executable on the device)
# Exit:  ek-run's own code; 2 for bad arguments or no reachable device.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[ $# -ge 1 ] || { echo "usage: $0 MODEL.ekm [ek-run flags...]" >&2; exit 2; }
model="$1"; shift
bin="${EK_RUN:-$root/build/aarch64/ek-run}"
rdir="${ANDROID_DIR:-/data/local/tmp}/edgekit-run"
[ -x "$bin" ] || { echo "error: $bin missing; run targets/android/build.sh first" >&2; exit 2; }
[ -f "$model" ] || { echo "error: $model not found" >&2; exit 2; }
command -v adb >/dev/null 2>&1 || { echo "error: adb not found (Android platform-tools)" >&2; exit 2; }
if [ "$(adb get-state 2>/dev/null | tr -d '\r')" != device ]; then
  echo "error: no Android device reachable over adb (check the cable, authorisation, ANDROID_SERIAL)" >&2
  exit 2
fi

# adb shell hands its command to the device's shell: printf %q keeps every argument one word.
remote() { adb shell "$(printf '%q ' "$@")" | tr -d '\r'; }

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
remote rm -rf "$rdir" >/dev/null
remote mkdir -p "$rdir" >/dev/null
adb push "$bin" "$rdir/ek-run" >/dev/null
adb push "$model" "$rdir/model.ekm" >/dev/null
for i in "${!uploads[@]}"; do adb push "${uploads[$i]}" "$rdir/in$((i + 1)).npy" >/dev/null; done
remote chmod 755 "$rdir/ek-run"
out="$(remote "$rdir/ek-run" "$rdir/model.ekm" "${args[@]}")" || true
echo "$out"
# Old adb versions drop the remote exit status: an "error" key in the JSON is the verdict.
case "$out" in *'"error"'*) exit 2 ;; '') exit 1 ;; esac
if [ -n "$outdir" ]; then
  mkdir -p "$outdir"
  adb pull "$rdir/out/." "$outdir/" >/dev/null
fi
