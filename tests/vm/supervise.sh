#!/usr/bin/env bash
# tests/vm/supervise.sh: the init's contract with the bulkhead binary, using a
# stand-in /usr/bin/bulkhead (a shell script) in a separately built initramfs:
# `bulkhead run --config CONFIG` + BULKHEAD_CONFIG, restart with back-off when it
# exits, the product's own "bulkhead: ready" marker, the saved configuration in
# /var/lib/bulkhead taking precedence on the next start, SIGTERM at poweroff.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require vmlinux
cat > "$TMP/fake-bulkhead" <<'FAKE'
#!/bin/sh
# stand-in for the real binary: fails twice, then reports ready and stays up
echo "fake-bulkhead: argv: $* | BULKHEAD_CONFIG=$BULKHEAD_CONFIG"
[ "$1" = run ] || exit 2
n=$(($(cat /run/fake-bulkhead.count 2>/dev/null || echo 0) + 1)); echo $n > /run/fake-bulkhead.count
[ $n -le 2 ] && { echo "fake-bulkhead: failing on purpose ($n)"; exit 3; }
trap 'echo "fake-bulkhead: got SIGTERM"; exit 0' TERM
echo "bulkhead: ready"
while :; do sleep 1; done
FAKE
chmod 755 "$TMP/fake-bulkhead"
log "building an initramfs with the stand-in binary"
OUT="$TMP/out" BULKHEAD_BIN="$TMP/fake-bulkhead" "$ROOT/image/build" --test --no-deps --no-cargo --no-disk > "$TMP/build.log" 2>&1 \
  || { tail -20 "$TMP/build.log"; notok "image/build with the stand-in"; finish; }
OUT="$TMP/out"

start_vm vm --out "$OUT" --mode elf --no-reboot
check "the product's 'bulkhead: ready' appears after two failed starts" wait_console vm '^bulkhead: ready' 1 120
check "started as 'bulkhead run --config /etc/bulkhead/bulkhead.toml' with BULKHEAD_CONFIG" \
  grep -q 'fake-bulkhead: argv: run --config /etc/bulkhead/bulkhead.toml | BULKHEAD_CONFIG=/etc/bulkhead/bulkhead.toml' "$TMP/vm.console"
check "restarted with back-off 1 s then 2 s" bash -c "
  grep -q 'exited with status 3 after [0-9]*s; restarting in 1s' '$TMP/vm.console' &&
  grep -q 'exited with status 3 after [0-9]*s; restarting in 2s' '$TMP/vm.console'"
check "console offers bulkhead setup" grep -q "run 'bulkhead setup' to configure" "$TMP/vm.console"
check "control channel answers" gwait vm
check "a configuration saved in /var/lib/bulkhead is used after a restart" g vm '
  echo "# saved by setup" > /var/lib/bulkhead/bulkhead.toml
  kill $(cat /run/bulkhead/bulkhead.pid)'
check "restart uses /var/lib/bulkhead/bulkhead.toml" wait_console vm \
  'fake-bulkhead: argv: run --config /var/lib/bulkhead/bulkhead.toml \| BULKHEAD_CONFIG=/var/lib/bulkhead/bulkhead.toml' 1 60
# the third run was killed above: after a short run the delay keeps doubling (4 s), after a
# run of 60 s or more it starts again at 1 s
backoff_after_kill() {
  local l ran delay
  l=$(grep 'exited with status 0 after' "$TMP/vm.console" | head -1)
  ran=$(sed -n 's/.* after \([0-9]*\)s;.*/\1/p' <<<"$l")
  delay=$(sed -n 's/.*restarting in \([0-9]*\)s.*/\1/p' <<<"$l")
  echo "# third run lasted ${ran:-?} s, next delay ${delay:-?} s"
  [ -n "$ran" ] && { { [ "$ran" -lt 60 ] && [ "$delay" = 4 ]; } || { [ "$ran" -ge 60 ] && [ "$delay" = 1 ]; }; }
}
check "the back-off doubles after short runs and starts again after a long one" backoff_after_kill
wait_console vm '^bulkhead: ready' 2 60 >/dev/null || true
stop_vm vm
# the first SIGTERM came from the kill above, the second from the shutdown
check "poweroff sends SIGTERM to bulkhead" bash -c "[ \$(grep -c 'fake-bulkhead: got SIGTERM' '$TMP/vm.console') -ge 2 ]"
finish
