#!/usr/bin/env bash
# Run the cross-built ek-test under qemu-user, once per CPU model, checking that dispatch
# picks the ISA that CPU must get. For correctness only: qemu timings mean nothing.
#
# Usage: targets/qemu/run.sh [CPU ...]          (default: cortex-a72 cortex-a76)
# Env:   EK_TEST (default build/aarch64/ek-test), extra ek-test flags in EK_TEST_ARGS
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${EK_TEST:-$root/build/aarch64/ek-test}"
if ! command -v qemu-aarch64 >/dev/null 2>&1; then
  echo "error: qemu-aarch64 not found (Debian/Ubuntu: apt-get install qemu-user)" >&2
  exit 2
fi
[ -x "$bin" ] || { echo "error: $bin missing; run targets/qemu/build.sh first" >&2; exit 2; }

cpus=("$@")
[ ${#cpus[@]} -gt 0 ] || cpus=(cortex-a72 cortex-a76)
status=0
for cpu in "${cpus[@]}"; do
  # Always an explicit -cpu: qemu's default "max" has every extension and hides bugs.
  case "$cpu" in
    cortex-a53|cortex-a57|cortex-a72) expect=(--expect-isa neon) ;;      # ARMv8.0, no sdot
    cortex-a55|cortex-a76|neoverse-n1) expect=(--expect-isa neondot) ;;  # ARMv8.2 + dotprod
    *) expect=() ;;
  esac
  echo "== qemu-aarch64 -cpu $cpu ${expect[*]}"
  # shellcheck disable=SC2086  # EK_TEST_ARGS is a list of flags
  qemu-aarch64 -cpu "$cpu" "$bin" "${expect[@]}" ${EK_TEST_ARGS:-} || status=1
done
exit $status
