# tests/vm/lib.sh: shared helpers for the VM tests (source it; needs bash and root).
#
# Every qemu, switch, namespace and link a test creates is recorded here and
# removed by the EXIT trap, also on failure. Processes are killed by pid only.
# Names carry a per-run id (BHID) so parallel runs do not collide.
set -euo pipefail

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$VM_DIR/../.." && pwd)
# the test image (image/build --test): the control agent, rctl=1, the fw_cfg command line
OUT=${OUT:-$ROOT/image/out-test}
VM_TIMEOUT=${VM_TIMEOUT:-300}         # hard limit for each qemu
MARKER_TIMEOUT=${MARKER_TIMEOUT:-120}  # boot to init marker
BHID=$(printf '%04x' $((RANDOM)))
TMP=$(mktemp -d "/tmp/bulkhead-vm.$BHID.XXXX")
PIDS=() NETNS=() LINKS=()
PASS=0 FAIL=0

log() { printf '# %s\n' "$*"; }
ok() { PASS=$((PASS + 1)); printf 'ok - %s\n' "$*"; }
notok() { FAIL=$((FAIL + 1)); printf 'FAIL - %s\n' "$*"; }
# check DESC CMD...: run CMD, record the result, show its output on failure
check() {
  local desc=$1; shift
  if "$@" > "$TMP/check.out" 2>&1; then ok "$desc"
  else notok "$desc (exit $?)"; sed 's/^/    /' "$TMP/check.out" | tail -20; fi
}
# check_fails DESC CMD...: CMD must fail
check_fails() {
  local desc=$1; shift
  if "$@" > "$TMP/check.out" 2>&1; then notok "$desc (unexpectedly succeeded)"; sed 's/^/    /' "$TMP/check.out" | tail -5
  else ok "$desc"; fi
}

cleanup() {
  local rc=$? p ns l i
  trap - EXIT INT TERM
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    p=${PIDS[i]}
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  for ns in "${NETNS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  for l in "${LINKS[@]}"; do ip link del "$l" 2>/dev/null || true; done
  if [ "${KEEP_TMP:-0}" = 1 ] || [ "$FAIL" -gt 0 ] || [ "$rc" -ne 0 ]; then
    log "logs kept in $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

require() {
  [ "$(id -u)" = 0 ] || { echo "VM tests need root (netns, tap)" >&2; exit 2; }
  local f
  for f in "$@"; do [ -f "$OUT/$f" ] || { echo "missing $OUT/$f: run image/build --test first" >&2; exit 2; }; done
  grep -qx 'variant test' "$OUT/manifest.txt" 2>/dev/null ||
    { echo "$OUT is not a test image (no 'variant test' in its manifest.txt): run image/build --test" >&2; exit 2; }
  command -v qemu-system-x86_64 >/dev/null || "$ROOT/image/run" --dry-run >/dev/null
  command -v busybox >/dev/null || { echo "busybox is needed on the host (apt-get install busybox-static)" >&2; exit 2; }
}

netns_add() { ip netns add "$1"; NETNS+=("$1"); ip -n "$1" link set lo up; }

# start_vm NAME [image/run options...]: boot a guest in the background with the
# console in $TMP/NAME.console and the control socket $TMP/NAME.ctl
start_vm() {
  local name=$1; shift
  : > "$TMP/$name.console"
  "$ROOT/image/run" --out "$OUT" --serial "file:$TMP/$name.console" --ctl "$TMP/$name.ctl" \
    --timeout "$VM_TIMEOUT" "$@" > "$TMP/$name.qemu.log" 2>&1 &
  PIDS+=($!)
  eval "VMPID_$name=\$!"
  eval "VMSTART_$name=\$(date +%s.%N)"
}
vm_pid() { eval "echo \$VMPID_$1"; }

# wait_marker NAME [COUNT]: wait until the init marker (or the product's own
# "bulkhead: ready") has appeared COUNT times (default 1); sets BOOT_SECS
wait_marker() {
  local name=$1 count=${2:-1} start n pid
  start=$(eval "echo \$VMSTART_$name"); pid=$(vm_pid "$name")
  local deadline=$((SECONDS + MARKER_TIMEOUT))
  while :; do
    n=$(grep -c -E 'bulkhead-init: supervisor started|bulkhead: ready' "$TMP/$name.console" 2>/dev/null || true)
    if [ "${n:-0}" -ge "$count" ]; then
      BOOT_SECS=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then log "qemu $name exited early"; tail -30 "$TMP/$name.console"; cat "$TMP/$name.qemu.log"; return 1; fi
    if [ $SECONDS -ge $deadline ]; then log "no marker from $name after ${MARKER_TIMEOUT}s"; tail -30 "$TMP/$name.console"; return 1; fi
    sleep 0.1
  done
}

# wait_console NAME REGEX [COUNT] [SECS]: wait until REGEX matched COUNT lines of the console
wait_console() {
  local name=$1 re=$2 count=${3:-1} secs=${4:-60} n
  local deadline=$((SECONDS + secs))
  while [ $SECONDS -lt $deadline ]; do
    n=$(grep -c -E "$re" "$TMP/$name.console" 2>/dev/null || true)
    [ "${n:-0}" -ge "$count" ] && return 0
    sleep 0.2
  done
  echo "console of $name: no ${count}x '$re' within ${secs}s"; tail -15 "$TMP/$name.console"; return 1
}

# g NAME CMD...: run a command in guest NAME, return its exit status
g() { local name=$1; shift; python3 "$VM_DIR/guestctl.py" --timeout "${G_TIMEOUT:-60}" "$TMP/$name.ctl" "$*"; }
gwait() { python3 "$VM_DIR/guestctl.py" --wait 60 "$TMP/$1.ctl" true; }

# stop_vm NAME: clean poweroff through the init (unmounts the data partition), then wait
stop_vm() {
  local name=$1 pid
  pid=$(vm_pid "$name")
  g "$name" 'poweroff' >/dev/null 2>&1 || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then log "$name did not power off; killing pid $pid"; kill -TERM "$pid"; fi
  wait "$pid" 2>/dev/null || true
}

finish() {
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" -eq 0 ]
}
