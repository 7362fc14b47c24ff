#!/usr/bin/env bash
# tests/vm/all.sh: build the image (unless --no-build) and run every VM test.
# Exits non-zero if any test fails. Needs root (netns, tap), runs qemu under TCG.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
if [ "${1:-}" != --no-build ]; then
  "$ROOT/image/build" || { echo "image/build failed"; exit 1; }
fi
failed=()
run() {
  echo "=== $*"
  "$@" || failed+=("$*")
}
run "$HERE/check-buildroot.sh"
run "$HERE/boot.sh"
run "$HERE/persist.sh" bios
run "$HERE/supervise.sh"
run "$HERE/lab.sh"
run "$HERE/setup.sh"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all VM tests passed"
