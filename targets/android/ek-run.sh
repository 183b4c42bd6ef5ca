#!/usr/bin/env bash
# Push ek-run and a model to an Android device (adb) and run it from /data/local/tmp.
#
# Usage: targets/android/ek-run.sh MODEL.ekm [ek-run flags...]
# Env:   EK_RUN (default build/aarch64/ek-run), ANDROID_SERIAL (adb's own: which device)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[ $# -ge 1 ] || { echo "usage: $0 MODEL.ekm [ek-run flags...]" >&2; exit 2; }
model="$1"; shift
bin="${EK_RUN:-$root/build/aarch64/ek-run}"
[ -x "$bin" ] || { echo "error: $bin missing; run targets/android/build.sh first" >&2; exit 2; }
[ -f "$model" ] || { echo "error: $model not found" >&2; exit 2; }
command -v adb >/dev/null 2>&1 || { echo "error: adb not found (Android platform-tools)" >&2; exit 2; }
adb push "$bin" /data/local/tmp/ek-run >/dev/null
adb push "$model" /data/local/tmp/model.ekm >/dev/null
adb shell chmod 755 /data/local/tmp/ek-run
out="$(adb shell "/data/local/tmp/ek-run /data/local/tmp/model.ekm $*" | tr -d '\r')"
echo "$out"
# Old adb versions drop the remote exit status: an "error" key in the JSON is the verdict.
case "$out" in *'"error"'*) exit 2 ;; esac
