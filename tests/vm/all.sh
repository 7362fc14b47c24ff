#!/usr/bin/env bash
# tests/vm/all.sh: build the test image (image/out-test) and the release image (image/out)
# unless --no-build, and run every VM test (all on the test image; release.sh checks the
# release image).
# Exits non-zero if any test fails. Needs root (netns, tap), runs qemu under TCG.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
if [ "${1:-}" != --no-build ]; then
  "$ROOT/image/build" --test || { echo "image/build --test failed"; exit 1; }
  "$ROOT/image/build" --no-deps --no-cargo || { echo "image/build (release) failed"; exit 1; }
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
run "$HERE/ssh.sh"
run "$HERE/lab.sh"
run "$HERE/setup.sh"
run "$HERE/release.sh"
run "$HERE/upgrade.sh"
run "$HERE/backup.sh"
run "$HERE/ntp.sh"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all VM tests passed"
