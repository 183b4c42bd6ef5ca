#!/usr/bin/env bash
# Push ek-test to an Android device (adb) and run it from /data/local/tmp, the one place
# a non-root shell may write and execute.
#
# Usage: targets/android/run.sh [ek-test flags...]
# Env:   EK_TEST (default build/aarch64/ek-test), ANDROID_SERIAL (adb's own: which device),
#        EXPECT_ISA (default neondot: Cortex-A55/A76-class phones have sdot)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${EK_TEST:-$root/build/aarch64/ek-test}"
[ -x "$bin" ] || { echo "error: $bin missing; run targets/android/build.sh first" >&2; exit 2; }
command -v adb >/dev/null 2>&1 || { echo "error: adb not found (Android platform-tools)" >&2; exit 2; }
adb push "$bin" /data/local/tmp/ek-test >/dev/null
adb shell chmod 755 /data/local/tmp/ek-test
out="$(adb shell "/data/local/tmp/ek-test --expect-isa ${EXPECT_ISA:-neondot} --no-golden $*" | tr -d '\r')"
echo "$out"
# Old adb versions drop the remote exit status; the summary line is the verdict.
echo "$out" | tail -n 1 | grep -Eq '^[0-9]+ passed, 0 failed$'
