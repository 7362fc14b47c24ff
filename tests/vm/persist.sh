#!/usr/bin/env bash
# tests/vm/persist.sh [bios|uefi]: state on the data partition survives a reboot.
# Boots a private copy of disk.img (first boot formats the data partition),
# writes a file through the control channel, reboots the guest from inside
# (the same qemu, no -no-reboot), and reads the file back after the second boot.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MODE=${1:-bios}
require disk.img
cp --sparse=always "$OUT/disk.img" "$TMP/disk.img"
TOKEN=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')

start_vm vm --mode "$MODE" --disk "$TMP/disk.img"
wait_marker vm 1 || { notok "first boot"; finish; }
ok "first boot ($MODE) reached the init marker in ${BOOT_SECS}s"
check "first boot formatted the data partition" grep -q 'formatting blank data partition' "$TMP/vm.console"
check "data partition mounted" g vm 'grep " /var/lib/bulkhead ext4 " /proc/mounts'
check "write state to /var/lib/bulkhead" g vm "echo $TOKEN > /var/lib/bulkhead/persist-test && sync"
g vm 'for i in $(seq 100); do [ -s /var/lib/bulkhead/ssh/dropbear_ed25519_host_key ] && break; sleep 0.1; done; sha256sum /var/lib/bulkhead/ssh/dropbear_ed25519_host_key' > "$TMP/key1" || true

# the first boot may have printed both markers (supervisor started, bulkhead: ready): the
# second boot's is the next one
seen=$(grep -c -E 'bulkhead-init: supervisor started|bulkhead: ready' "$TMP/vm.console" || true)
rebooted_at=$(date +%s.%N)
g vm 'reboot' >/dev/null 2>&1 || true
eval "VMSTART_vm=$rebooted_at"
wait_marker vm $((seen + 1)) || { notok "second boot after reboot"; finish; }
ok "guest rebooted and reached the init marker again in ${BOOT_SECS}s"
check "control channel answers after the reboot" gwait vm
check "the file written before the reboot is still there" g vm "grep -qx $TOKEN /var/lib/bulkhead/persist-test"
check "the data partition was not formatted again" \
  bash -c "[ \$(grep -c 'formatting blank data partition' '$TMP/vm.console') = 1 ]"
check "the init unmounted the data partition cleanly (shutdown message)" grep -q 'shutting down (reboot)' "$TMP/vm.console"
g vm 'sha256sum /var/lib/bulkhead/ssh/dropbear_ed25519_host_key' > "$TMP/key2" || true
check "ssh host key is the same after the reboot" cmp "$TMP/key1" "$TMP/key2"
stop_vm vm
finish
