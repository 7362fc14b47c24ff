#!/usr/bin/env bash
# tests/vm/setup.sh [elf|bios]: first-boot setup on the appliance.
#
# Boots a private copy of disk.img with the serial console on a socket, runs the
# `bulkhead setup` wizard on it like an operator (tests/vm/serial.py: expect/send over
# the serial line) and confirms; checks the new management VLAN and address are applied,
# the config and the admin key are saved on the data partition. Then `setup --from` over
# the control channel: an apply nobody confirms rolls back and leaves the saved config
# alone, a confirmed one is saved. Finally reboots on the same disk and checks the saved
# config is the one the gateway runs.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MODE=${1:-elf}
require vmlinux initramfs.cpio.gz disk.img
cp --sparse=always "$OUT/disk.img" "$TMP/disk.img"
if command -v ssh-keygen >/dev/null; then
  ssh-keygen -q -t ed25519 -N '' -C admin@vm-setup -f "$TMP/admin" >/dev/null
  KEY=$(cat "$TMP/admin.pub")
elif command -v dropbearkey >/dev/null; then
  KEY="$(dropbearkey -t ed25519 -f "$TMP/admin" 2>/dev/null | grep '^ssh-ed25519' | cut -d' ' -f1,2) admin@vm-setup"
else
  echo "ssh-keygen or dropbearkey is needed for the admin key (apt-get install openssh-client)" >&2; exit 2
fi

# the console on a socket to type on, its output in $TMP/vm.console as usual
: > "$TMP/vm.console"
"$ROOT/image/run" --out "$OUT" --mode "$MODE" --disk "$TMP/disk.img" \
  --serial "unix:$TMP/vm.serial" --serial-log "$TMP/vm.console" \
  --ctl "$TMP/vm.ctl" --timeout "$VM_TIMEOUT" > "$TMP/vm.qemu.log" 2>&1 &
PIDS+=($!)
VMPID_vm=$!
VMSTART_vm=$(date +%s.%N)
wait_marker vm 1 || { notok "boot"; finish; }
ok "booted ($MODE) in ${BOOT_SECS}s"
check "control channel answers" gwait vm
check "the console offers setup and a shell" grep -q "run 'bulkhead setup' to configure this gateway; press Enter for a shell" "$TMP/vm.console"
check "bulkhead is ready on the shipped config" g vm \
  'for i in $(seq 600); do [ -e /var/lib/bulkhead/ready ] && break; sleep 0.1; done; [ -e /var/lib/bulkhead/ready ] && /sbin/ip -4 addr show dev eth0.100 | grep -q 192.168.100.1/24'

# ---- the wizard on the serial console -------------------------------------------------
cat > "$TMP/wizard.dialogue" <<EOF
# the console offered a shell at boot, before anyone was connected: press Enter
send \r
expect :[^ ]*# 
send bulkhead setup\r
expect NICs on this machine:
expect eth0 +52:54:00:b4:00:01
expect eth1 +52:54:00:b4:00:02
expect Trunk NIC
# eth0, the current trunk, is at the cursor
send \r
expect Uplink NIC
send \r
expect Uplink addressing
send \r
expect Management VLAN id
send 4095\r
expect out of range
send \x7f\x7f\x7f\x7f42\r
expect Gateway address/prefix on the management VLAN
send 198.18.42.1/24\r
expect Admin SSH public key
send $KEY\r
expect Syslog target
send 198.18.42.10:514\r
expect Syslog transport
send \r
expect The new configuration
expect vlan eth0.42 on eth0 id 42 address 198.18.42.1/24
expect Show the full plan
send n\r
expect Apply it now
send y\r
expect run .bulkhead confirm. within 120 s
expect :[^ ]*# 
send bulkhead confirm\r
expect confirmed
expect :[^ ]*# 
EOF
if python3 "$VM_DIR/serial.py" --timeout 90 "$TMP/vm.serial" "$TMP/wizard.dialogue" > "$TMP/wizard.out" 2> "$TMP/wizard.err"; then
  ok "the wizard on the serial console: answered, applied, confirmed"
else
  notok "the wizard on the serial console"; sed 's/^/    /' "$TMP/wizard.err" | tail -30
fi
check "the management VLAN 42 is a real 802.1Q link with the new address" g vm \
  '/sbin/ip -d link show eth0.42 | grep -q "802.1Q id 42" && /sbin/ip -4 addr show dev eth0.42 | grep -q 198.18.42.1/24'
check "the old management VLAN 100 is gone" g vm '! /sbin/ip link show eth0.100 2>/dev/null'
check "the config is saved on the data partition, with the operator's comments" g vm \
  'grep -q "^vlan = 42" /var/lib/bulkhead/bulkhead.toml && grep -q "host = \"198.18.42.10\"" /var/lib/bulkhead/bulkhead.toml && grep -q "^# Bulkhead — the shipped default configuration" /var/lib/bulkhead/bulkhead.toml && [ ! -e /var/lib/bulkhead/bulkhead.toml.candidate ]'
check "the admin key is saved beside it and given to the SSH server" g vm \
  "grep -qF '$KEY' /var/lib/bulkhead/authorized_keys && for i in \$(seq 50); do grep -qF '$KEY' /root/.ssh/authorized_keys && break; sleep 0.2; done; grep -qF '$KEY' /root/.ssh/authorized_keys"
check "SSH follows the management address" g vm \
  'for i in $(seq 100); do netstat -ltn | grep -q "198.18.42.1:22 " && break; sleep 0.2; done; netstat -ltn | grep -q "198.18.42.1:22 "'

# ---- setup --from: unconfirmed, then confirmed ------------------------------------------
check "setup --from, applied with a 10 s window" g vm '
  printf "mgmt_vlan = 43\nmgmt_address = \"198.18.43.1/24\"\nsyslog = \"none\"\n" > /tmp/a43.toml
  . /etc/profile; bulkhead setup --from /tmp/a43.toml --yes --confirm-within 10s'
check "... running: VLAN 43 up, the saved config still the confirmed one" g vm \
  '/sbin/ip -4 addr show dev eth0.43 | grep -q 198.18.43.1/24 && grep -q "^vlan = 42" /var/lib/bulkhead/bulkhead.toml && [ -e /var/lib/bulkhead/bulkhead.toml.candidate ]'
check "... not confirmed: rolled back to VLAN 42, the saved config untouched" g vm \
  'back() { /sbin/ip -4 addr show dev eth0.42 2>/dev/null | grep -q 198.18.42.1/24 && ! /sbin/ip link show eth0.43 2>/dev/null && [ ! -e /var/lib/bulkhead/bulkhead.toml.candidate ]; }
   for i in $(seq 200); do back && break; sleep 0.2; done
   back && grep -q "^vlan = 42" /var/lib/bulkhead/bulkhead.toml'
# without /etc/profile (as `ssh gateway COMMAND` runs it): setup still saves on the data partition
check "setup --from, applied and confirmed" g vm '
  printf "mgmt_vlan = 44\nmgmt_address = \"198.18.44.1/24\"\n" > /tmp/a44.toml
  /usr/bin/bulkhead setup --from /tmp/a44.toml --yes && /usr/bin/bulkhead confirm &&
  /sbin/ip -4 addr show dev eth0.44 | grep -q 198.18.44.1/24 && grep -q "^vlan = 44" /var/lib/bulkhead/bulkhead.toml'
check "a bad answers file is refused, naming the field and line" g vm '
  printf "trunk = \"eth0\"\nmgmt_vlan = 9999\n" > /tmp/bad.toml
  . /etc/profile; out=$(bulkhead setup --from /tmp/bad.toml --yes 2>&1); rc=$?
  echo "$out"; [ $rc = 2 ] && echo "$out" | grep -q "/tmp/bad.toml:2: mgmt_vlan: VLAN id 9999 is out of range"'

# ---- reboot on the same disk ----------------------------------------------------------------
rebooted_at=$(date +%s.%N)
g vm 'sync; reboot' >/dev/null 2>&1 || true
if wait_console vm 'bulkhead-init: supervisor started' 2 "$MARKER_TIMEOUT"; then
  ok "rebooted in $(awk -v s="$rebooted_at" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')s"
else
  notok "second boot"; finish
fi
check "control channel answers after the reboot" gwait vm
check "init runs the saved config" wait_console vm 'starting: bulkhead run --config /var/lib/bulkhead/bulkhead.toml' 1 60
check "after the reboot: VLAN 44 with 198.18.44.1, no VLAN 100" g vm \
  'for i in $(seq 600); do [ -e /var/lib/bulkhead/ready ] && break; sleep 0.1; done
   /sbin/ip -d link show eth0.44 | grep -q "802.1Q id 44" && /sbin/ip -4 addr show dev eth0.44 | grep -q 198.18.44.1/24 && ! /sbin/ip link show eth0.100 2>/dev/null'
check "after the reboot: SSH on the saved management address" g vm \
  'for i in $(seq 100); do netstat -ltn | grep -q "198.18.44.1:22 " && break; sleep 0.2; done; netstat -ltn | grep -q "198.18.44.1:22 "'
stop_vm vm
finish
