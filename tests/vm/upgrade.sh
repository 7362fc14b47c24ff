#!/usr/bin/env bash
# tests/vm/upgrade.sh: A/B firmware upgrades on RAUC, end to end, on one disk (BIOS boot,
# GRUB picks the slot). From the factory disk of the test image (v1, slot A):
#   1. v1 runs a non-default config (hostname) and hands out a DHCP lease on the management
#      VLAN; an admin key is installed; SSH from the management VLAN works.
#   2. Refusals, each with one line on stderr and exit status 2, slot B byte-identical after
#      them: a bundle with one flipped byte, one signed by another key, one for another
#      compatible string.
#   3. v2 (the same image with another version string) goes over `scp -O` from the management
#      VLAN and `bulkhead upgrade /tmp/v2.raucb --reboot` over SSH: the box comes back on
#      slot B running v2, with the config, the lease, the applied generation and the SSH
#      host key unchanged; `bulkhead upgrade status` shows both slots; an `upgrade` event ok.
#   4. Power cut (qemu killed) in the middle of installing v3 into slot A: the box boots the
#      old slot (B, v2) again.
#   5. A broken v3 (its `bulkhead` exits at once) installed with --reboot: the init's watchdog
#      reboots it twice (bulkhead.readytimeout), GRUB's tries run out and the box is back on
#      v2, `bulkhead: ready`, by itself; an `upgrade` event says v3 failed.
#   6. v4 with `--confirm-within` and no confirmation: ready on slot A, `upgrade status` shows
#      the pending confirmation and its deadline; then the supervisor is frozen (kill -STOP):
#      the hardware watchdog (qemu i6300esb) resets the box, GRUB's second try boots v4 again
#      with the same deadline (the reboot neither skips nor extends the window), and when it
#      passes slot A is marked bad and the box reboots into v2 by itself; an `upgrade` event
#      on v2 says v4 was not confirmed.
#   7. v4 with `--confirm-within 60s` and `bulkhead confirm` over SSH: slot A is marked good
#      and still runs v4 after another reboot.
# v2 and v3 are made from the test image's slot image by appending a small cpio archive to
# its initramfs (the kernel unpacks it over the first), so no second image build is needed.
# (before lib.sh, which otherwise sets its own shorter defaults: one qemu runs many boots here)
VM_TIMEOUT=${VM_TIMEOUT:-2400}
MARKER_TIMEOUT=${MARKER_TIMEOUT:-240}
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require disk.img slot.img
READY_TIMEOUT=${READY_TIMEOUT:-45}   # the init's bound for a new slot (bulkhead.readytimeout)
WATCHDOG_TIMEOUT=${WATCHDOG_TIMEOUT:-30}   # the hardware watchdog's timeout (bulkhead.watchdog)
# step 6's window: long enough for a watchdog reset and a second boot inside it
CONFIRM_WINDOW=${CONFIRM_WINDOW:-180}
# UPGRADE_ONLY=confirm: only steps 1, 3, 6 and 7 (v1 -> v2, then --confirm-within and the
# watchdog), for working on those; tools/test runs everything
FULL=1; [ "${UPGRADE_ONLY:-}" = confirm ] && FULL=0
CFG=$ROOT/overlay/etc/bulkhead/bulkhead.toml
export MTOOLS_SKIP_CHECK=1
for t in ssh scp ssh-keygen openssl mcopy cpio rauc; do
  command -v "$t" >/dev/null || { echo "upgrade.sh needs $t on the host" >&2; exit 2; }
done
T0=$SECONDS

# ---- the management VLAN from the shipped config ------------------------------------------
read -r MG_VLAN MG_GW MG_CL MG_LEN < <(python3 - "$CFG" <<'PY'
import ipaddress, sys, tomllib
segs = tomllib.load(open(sys.argv[1], "rb"))["segments"]
s = next(s for s in segs.values() if s.get("management"))
net = ipaddress.ip_network(s["subnet"])
host = net.broadcast_address - 1
if str(host) == s["gateway"]:
    host -= 1
print(s["vlan"], s["gateway"], host, net.prefixlen)
PY
)
[ -n "$MG_LEN" ] || { echo "no management segment in $CFG" >&2; exit 2; }
# the non-default config: the shipped one with another hostname
python3 - "$CFG" "$TMP/custom.toml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
new, n = re.subn(r'(?m)^hostname\s*=.*$', 'hostname = "bh-upgrade-test"', text, count=1)
if n != 1:
    sys.exit("no hostname line in the shipped config")
open(sys.argv[2], "w").write(new)
PY

# ---- bundles -------------------------------------------------------------------------------
# mkslot NAME VERSION [broken]: the test image's slot image with VERSION in image-release
# (and, broken, a bulkhead that exits at once), packed into $TMP/NAME.raucb
mkslot() {
  local name=$1 version=$2 broken=${3:-} d=$TMP/ov-$1
  mkdir -p "$d/etc/bulkhead" "$d/usr/bin"
  zcat "$OUT/initramfs.cpio.gz" | (cd "$d" && cpio -id --quiet etc/bulkhead/image-release)
  sed -i "s/^BULKHEAD_IMAGE_VERSION=.*/BULKHEAD_IMAGE_VERSION=$version/" "$d/etc/bulkhead/image-release"
  if [ -n "$broken" ]; then
    printf '#!/bin/sh\necho "bulkhead %s: broken on purpose" >&2\nexit 1\n' "$version" > "$d/usr/bin/bulkhead"
    chmod 755 "$d/usr/bin/bulkhead"
  fi
  cp --sparse=always "$OUT/slot.img" "$TMP/$name.img"
  mcopy -n -i "$TMP/$name.img" ::/initrd.img "$TMP/$name.initrd"
  (cd "$d" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet --owner=0:0) | gzip -9n >> "$TMP/$name.initrd"
  mcopy -o -i "$TMP/$name.img" "$TMP/$name.initrd" ::/initrd.img
  "$ROOT/image/bundle" "$TMP/$name.img" "$version" "$TMP/$name.raucb"
}
V1=$(sed -n 's/^version //p' "$OUT/manifest.txt")
# the sizes against their budgets (docs/upgrade.md: compressed factory disk <= 48 MiB, bundle
# <= 24 MiB) are measured and judged by bench/upgrade.sh; here they are only reported
log "sizes: disk.qcow2 $(stat -c %s "$OUT/disk.qcow2") bytes, bulkhead-$V1.raucb $(stat -c %s "$OUT/bulkhead-$V1.raucb") bytes"
log "v1 (factory) is $V1; building the v2 and broken v3 bundles"
mkslot v2 2.0.0-upgradetest || { notok "building the v2 bundle"; finish; }
mkslot v3 3.0.0-broken broken || { notok "building the v3 bundle"; finish; }
mkslot v4 4.0.0-confirmtest || { notok "building the v4 bundle"; finish; }
# small bundles for the refusals: another key, another compatible string
mkdir -p "$TMP/tiny"; head -c 65536 /dev/zero > "$TMP/tiny.img"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=not the bulkhead key" \
  -keyout "$TMP/other.key" -out "$TMP/other.cert" 2>/dev/null
RAUC_CERT=$TMP/other.cert RAUC_KEY=$TMP/other.key "$ROOT/image/bundle" "$TMP/tiny.img" 9.9-otherkey "$TMP/otherkey.raucb"
COMPATIBLE=someone-elses-box "$ROOT/image/bundle" "$TMP/tiny.img" 9.9-othercompat "$TMP/othercompat.raucb"
ls -l "$TMP"/*.raucb | sed 's/^/# /'
ok "bundles built: v2, broken v3, v4, another key, another compatible ($((SECONDS - T0)) s)"

# ---- the management VLAN: a client namespace behind the tagging switch ---------------------
NS=bhu$BHID
netns_add "$NS"
python3 "$VM_DIR/vlanswitch.py" --sock "$TMP/sw.sock" --peer "$TMP/qemu.sock" \
  --port "$MG_VLAN:bhu${BHID}m:$NS" --ready "$TMP/sw.ready" 2> "$TMP/switch.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -e "$TMP/sw.ready" ] && break; sleep 0.1; done
[ -e "$TMP/sw.ready" ] || { cat "$TMP/switch.log"; notok "the tagging switch did not start"; finish; }
ssh-keygen -q -t ed25519 -N '' -f "$TMP/admin" -C upgrade-test
SSHO=(-i "$TMP/admin" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
      -o ConnectTimeout=20 -o BatchMode=yes)
gssh() { ip netns exec "$NS" ssh "${SSHO[@]}" "root@$MG_GW" "$@"; }
gscp() { ip netns exec "$NS" scp -O -q "${SSHO[@]}" "$1" "root@$MG_GW:$2"; }
ssh_up() { for _ in $(seq 30); do gssh true && return 0; sleep 2; done; return 1; }

cp --sparse=always "$OUT/disk.img" "$TMP/disk.img"
boot_vm() {
  start_vm vm --mode bios --disk "$TMP/disk.img" --mem 384 --trunk "dgram:$TMP/qemu.sock:$TMP/sw.sock" \
    --append "bulkhead.readytimeout=$READY_TIMEOUT bulkhead.watchdog=$WATCHDOG_TIMEOUT"
}
# ready N: bulkhead printed `bulkhead: ready` N times on this console
ready() { wait_console vm '^bulkhead: ready' "$1" "${2:-$MARKER_TIMEOUT}"; }
boot_vm
check "v1 (factory disk, slot A) boots with GRUB (BIOS) and gets ready" ready 1
check "GRUB booted slot A" grep -q 'bulkhead-grub: booting slot A' "$TMP/vm.console"
check "control channel answers" gwait vm

# ---- 1. state on v1: a non-default config, a lease, an admin key ----------------------------
b64=$(base64 -w0 "$TMP/custom.toml")
check "the non-default config is saved and bulkhead restarted on it" g vm "
  echo $b64 | base64 -d > /var/lib/bulkhead/bulkhead.toml.new &&
  bulkhead -c /var/lib/bulkhead/bulkhead.toml.new check &&
  mv /var/lib/bulkhead/bulkhead.toml.new /var/lib/bulkhead/bulkhead.toml &&
  rm -f /var/lib/bulkhead/ready && kill \$(cat /run/bulkhead/bulkhead.pid)"
check "bulkhead is ready on the saved config" ready 2
cat > "$TMP/udhcpc.sh" <<'EOF'
#!/bin/sh
case "$1" in bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface" ;; esac
EOF
chmod 755 "$TMP/udhcpc.sh"
check "a client on the management VLAN gets a DHCP lease" \
  ip netns exec "$NS" busybox udhcpc -i "bhu${BHID}m" -n -q -t 10 -T 2 -s "$TMP/udhcpc.sh"
CL=$(ip -n "$NS" -4 -o addr show dev "bhu${BHID}m" | awk '{print $4}' | cut -d/ -f1)
log "the client leased $CL"
pub=$(cat "$TMP/admin.pub")
check "the admin key is installed (data partition)" g vm "echo '$pub' > /var/lib/bulkhead/authorized_keys"
check "SSH from the management VLAN works" ssh_up

# what must survive: config, lease, the applied generation's plan and firewall, SSH host key.
# (Each boot loads the firewall again, which numbers a new generation: its plan and
# firewall must be byte-identical to v1's.)
snapshot() {
  g vm 'cd /var/lib/bulkhead && sha256sum bulkhead.toml ssh/dropbear_ed25519_host_key apply/current/plan.json apply/current/firewall.json
        bulkhead leases | grep -o "'"$CL"'.*" | awk "{print \$1, \$2}"' > "$1" || true
  g vm 'bulkhead status --format json | grep -o "\"generation\": *[0-9]*" | head -1' | sed 's/^/# /' || true
}
snapshot "$TMP/state.v1"
sed 's/^/# v1 state: /' "$TMP/state.v1"
check "v1 state recorded (the lease of $CL is in it)" grep -q "$CL" "$TMP/state.v1"
check "v1 runs the non-default config" grep -q "^$(sha256sum "$TMP/custom.toml" | cut -c1-64) " "$TMP/state.v1"

if [ "$FULL" = 1 ]; then
# ---- 2. refusals: slot B untouched ------------------------------------------------------------
# slot B's device is the one of [slot.system.1] in RAUC's system.conf
SLOTB_CMD=$(cat <<'EOF'
dev=$(sed -n '/^\[slot.system.1\]/,/^$/s/^device=//p' /etc/rauc/system.conf)
[ -b "$dev" ] && dd if="$dev" bs=1M count=48 2>/dev/null | sha256sum | cut -d' ' -f1
EOF
)
slotb() { g vm "$SLOTB_CMD"; }
slotb > "$TMP/slotb.before" || true
check "slot B's hash was read" grep -qE '^[0-9a-f]{64}$' "$TMP/slotb.before"
check "v2 bundle copied with scp -O from the management VLAN" gscp "$TMP/v2.raucb" /tmp/v2.raucb
check "the other-key bundle copied" gscp "$TMP/otherkey.raucb" /tmp/otherkey.raucb
check "the other-compatible bundle copied" gscp "$TMP/othercompat.raucb" /tmp/othercompat.raucb
check "a copy of v2 with one byte flipped (in the guest)" gssh '
  cp /tmp/v2.raucb /tmp/flipped.raucb &&
  b=$(dd if=/tmp/flipped.raucb bs=1 skip=4000000 count=1 2>/dev/null | od -An -tu1 | tr -d " ") &&
  printf "$(printf "\\\\%03o" $((b ^ 255)))" | dd of=/tmp/flipped.raucb bs=1 seek=4000000 conv=notrunc 2>/dev/null &&
  ! cmp -s /tmp/v2.raucb /tmp/flipped.raucb'
refused() {  # NAME: exit 2, one line on stderr naming the problem
  local rc=0
  gssh "bulkhead upgrade /tmp/$1.raucb" > "$TMP/$1.out" 2> "$TMP/$1.err" || rc=$?
  echo "exit $rc; stderr: $(cat "$TMP/$1.err")"
  [ "$rc" = 2 ] && [ "$(wc -l < "$TMP/$1.err")" = 1 ] && grep -q "refused: $2" "$TMP/$1.err"
}
check "a bundle with one flipped byte is refused (exit 2, one line)" refused flipped 'signature verification failed'
check "a bundle signed by another key is refused (exit 2, one line)" refused otherkey 'signature verification failed'
check "a bundle for another compatible string is refused (exit 2, one line)" refused othercompat "the bundle is for 'someone-elses-box'"
for n in flipped otherkey othercompat; do sed "s/^/# $n: /" "$TMP/$n.err"; done
slotb > "$TMP/slotb.after" || true
check "slot B is byte-identical after the refusals" cmp "$TMP/slotb.before" "$TMP/slotb.after"

fi  # FULL (step 2)

# ---- 3. v1 -> v2 over SSH ---------------------------------------------------------------------
[ "$FULL" = 1 ] || check "v2 bundle copied with scp -O from the management VLAN" gscp "$TMP/v2.raucb" /tmp/v2.raucb
t=$SECONDS
gssh "bulkhead upgrade /tmp/v2.raucb --reboot" > "$TMP/install.v2" 2>&1 || true
INSTALL_SECS=$((SECONDS - t))
sed 's/^/# /' "$TMP/install.v2" | tr '\r' '\n' | grep -v '^# *$' | tail -8
check "bulkhead upgrade v2 --reboot installed into slot B" grep -q 'is in slot B' "$TMP/install.v2"
t=$SECONDS
check "the box reboots into slot B" wait_console vm 'bulkhead-grub: booting slot B' 1 "$MARKER_TIMEOUT"
check "v2 gets ready" ready 3
log "install took ${INSTALL_SECS} s, reboot to ready $((SECONDS - t)) s"
check "control channel answers" gwait vm
check "v2 runs on slot B" g vm 'grep -q "rauc.slot=B" /proc/cmdline && grep -qx BULKHEAD_IMAGE_VERSION=2.0.0-upgradetest /etc/bulkhead/image-release'
for _ in $(seq 30); do g vm 'test ! -e /var/lib/bulkhead/upgrade/pending' >/dev/null 2>&1 && break; sleep 2; done
snapshot "$TMP/state.v2"
check "config, lease, applied plan and firewall, SSH host key unchanged on v2" diff "$TMP/state.v1" "$TMP/state.v2"
g vm 'bulkhead upgrade status' > "$TMP/status.v2" 2>&1 || true
sed 's/^/# /' "$TMP/status.v2"
check "upgrade status: booted slot B (2.0.0-upgradetest)" grep -q '^booted:  slot B (2.0.0-upgradetest)' "$TMP/status.v2"
check "upgrade status lists slot A and slot B, both good" bash -c "grep -q '^slot A .* good ' '$TMP/status.v2' && grep -q '^slot B .* good .*2.0.0-upgradetest' '$TMP/status.v2'"
check "upgrade status: last result ok" grep -q '^last result: ok: upgrade to 2.0.0-upgradetest ok' "$TMP/status.v2"
# event EXPECTED: an event of kind upgrade with that text is in the daemon's event stream
event() { g vm "for i in \$(seq 30); do bulkhead logs --format json | grep -E '\"kind\": ?\"upgrade\"' | grep -q '$1' && exit 0; sleep 1; done; exit 1"; }
check "an upgrade event says v2 is ok" event "upgrade to 2.0.0-upgradetest ok"

if [ "$FULL" = 1 ]; then
# ---- 4. power cut in the middle of an install ----------------------------------------------------
check "v3 bundle copied" gscp "$TMP/v3.raucb" /tmp/v3.raucb
G_TIMEOUT=10 g vm '(bulkhead upgrade /tmp/v3.raucb > /dev/console 2>&1 &)' || true
check "the install into slot A has started (RAUC marked it bad before writing)" g vm '
  for i in $(seq 600); do grep -q "A_OK=0" /boot/grub/grubenv && break; sleep 0.1; done
  grub-editenv /boot/grub/grubenv list | grep -qx A_OK=0'
# image/run runs qemu under timeout(1): kill qemu itself (the child of that pid)
pid=$(vm_pid vm); qpid=$(pgrep -P "$pid" -f qemu-system | head -1)
kill -KILL "${qpid:-$pid}" 2>/dev/null; wait "$pid" 2>/dev/null || true
ok "power cut: qemu killed (pid ${qpid:-$pid}) during the install"
mv "$TMP/vm.console" "$TMP/vm.console.1"
boot_vm
check "after the power cut GRUB boots the old slot B" wait_console vm 'bulkhead-grub: booting slot B' 1 "$MARKER_TIMEOUT"
check "v2 gets ready after the power cut" ready 1
check "control channel answers" gwait vm
check "v2 runs" g vm 'grep -qx BULKHEAD_IMAGE_VERSION=2.0.0-upgradetest /etc/bulkhead/image-release'

# ---- 5. a broken v3 falls back by itself ---------------------------------------------------------
check "SSH works after the power cut" ssh_up
check "v3 bundle copied again" gscp "$TMP/v3.raucb" /tmp/v3.raucb
t=$SECONDS
gssh "bulkhead upgrade /tmp/v3.raucb --reboot" > "$TMP/install.v3" 2>&1 || true
check "the broken v3 installs into slot A" grep -q 'is in slot A' "$TMP/install.v3"
check "the box boots the broken v3 (slot A)" wait_console vm 'bulkhead-grub: booting slot A' 1 "$MARKER_TIMEOUT"
check "v3's bulkhead fails" wait_console vm 'bulkhead 3.0.0-broken: broken on purpose' 1 "$MARKER_TIMEOUT"
check "the init's watchdog reboots it" wait_console vm "slot A \(new firmware\) did not get ready within ${READY_TIMEOUT}s" 1 $((READY_TIMEOUT + MARKER_TIMEOUT))
check "GRUB gives slot A a second try, then boots slot B again" wait_console vm 'bulkhead-grub: booting slot B' 2 $((2 * READY_TIMEOUT + 2 * MARKER_TIMEOUT))
check "v2 is ready again, without console input" ready 2
log "broken v3: from install to v2 ready again $((SECONDS - t)) s"
check "control channel answers" gwait vm
check "v2 runs on slot B" g vm 'grep -q "rauc.slot=B" /proc/cmdline && grep -qx BULKHEAD_IMAGE_VERSION=2.0.0-upgradetest /etc/bulkhead/image-release'
check "an upgrade event says v3 failed" event "upgrade to 3.0.0-broken failed"
check "the failed upgrade is settled (no pending install)" g vm 'for i in $(seq 60); do test -e /var/lib/bulkhead/upgrade/pending || exit 0; sleep 1; done; exit 1'
g vm 'bulkhead upgrade status' > "$TMP/status.v3" 2>&1 || true
sed 's/^/# /' "$TMP/status.v3"
check "upgrade status: last result failed, slot A bad, next boot slot B" bash -c "
  grep -q '^last result: failed: upgrade to 3.0.0-broken failed' '$TMP/status.v3' &&
  grep -q '^slot A .* bad ' '$TMP/status.v3' && grep -q '^next boot: slot B' '$TMP/status.v3'"
snapshot "$TMP/state.v3"
check "config, lease, generation, host key still unchanged after the fallback" diff "$TMP/state.v1" "$TMP/state.v3"

fi  # FULL (steps 4 and 5)

# ---- 6. --confirm-within without a confirmation; a frozen supervisor -----------------------------
# seen N REGEX: how many console lines match so far
seen() { grep -c -E "$1" "$TMP/vm.console" 2>/dev/null || true; }
check "the init armed the hardware watchdog (i6300esb, ${WATCHDOG_TIMEOUT}s)" \
  grep -qiE "bulkhead-init: watchdog: i6300esb.*, ${WATCHDOG_TIMEOUT}s" "$TMP/vm.console"
# waiting: the pending install has its confirmation deadline (the slot got ready)
deadline() { g vm 'for i in $(seq 60); do sed -n "s/^confirm_deadline=//p" /var/lib/bulkhead/upgrade/pending 2>/dev/null | grep . && exit 0; sleep 1; done; exit 1'; }
check "v4 bundle copied" gscp "$TMP/v4.raucb" /tmp/v4.raucb
nA=$(seen 'bulkhead-grub: booting slot A') nB=$(seen 'bulkhead-grub: booting slot B') nR=$(seen '^bulkhead: ready')
t=$SECONDS
gssh "bulkhead upgrade /tmp/v4.raucb --confirm-within ${CONFIRM_WINDOW}s --reboot" > "$TMP/install.v4a" 2>&1 || true
sed 's/^/# /' "$TMP/install.v4a" | tr '\r' '\n' | grep -v '^# *$' | tail -3
check "v4 installs into slot A with --confirm-within ${CONFIRM_WINDOW}s" grep -q "run \`bulkhead confirm\` within ${CONFIRM_WINDOW} s" "$TMP/install.v4a"
check "the box boots v4 (slot A)" wait_console vm 'bulkhead-grub: booting slot A' $((nA + 1)) "$MARKER_TIMEOUT"
check "v4 gets ready" ready $((nR + 1))
deadline > "$TMP/deadline.1" || true
check "the confirmation deadline is recorded on the data partition" grep -qE '^[0-9]+$' "$TMP/deadline.1"
g vm 'bulkhead upgrade status' > "$TMP/status.v4a" 2>&1 || true
sed 's/^/# /' "$TMP/status.v4a"
check "upgrade status shows the pending confirmation and its deadline" \
  grep -qE '^pending: 4.0.0-confirmtest in slot A .*PENDING CONFIRMATION: run `bulkhead confirm` by [0-9T:-]+Z \([0-9]+ s left\), else back to slot B' "$TMP/status.v4a"
nS=$(seen 'bulkhead-init: shutting down')
check "the supervisor is frozen (kill -STOP)" g vm 'kill -STOP $(cat /run/bulkhead/bulkhead.pid)'
tf=$SECONDS
check "the hardware watchdog resets the box (slot A's second try)" wait_console vm 'bulkhead-grub: booting slot A' $((nA + 2)) $((WATCHDOG_TIMEOUT + 60))
log "watchdog reset $((SECONDS - tf)) s after the freeze (timeout ${WATCHDOG_TIMEOUT} s)"
check "it was a reset, not an orderly reboot (no 'shutting down' from the init)" test "$(seen 'bulkhead-init: shutting down')" = "$nS"
check "v4 gets ready again" ready $((nR + 2))
check "control channel answers" gwait vm
deadline > "$TMP/deadline.2" || true
check "after the reboot the same confirmation deadline holds" cmp "$TMP/deadline.1" "$TMP/deadline.2"
check "the window passes: slot A is marked bad and the box reboots into slot B by itself" \
  wait_console vm 'bulkhead-grub: booting slot B' $((nB + 1)) $((CONFIRM_WINDOW + MARKER_TIMEOUT))
check "v2 is ready again, without console input" ready $((nR + 3))
log "unconfirmed v4: from install to v2 ready again $((SECONDS - t)) s (window ${CONFIRM_WINDOW} s, one watchdog reset)"
check "control channel answers" gwait vm
check "v2 runs on slot B" g vm 'grep -q "rauc.slot=B" /proc/cmdline && grep -qx BULKHEAD_IMAGE_VERSION=2.0.0-upgradetest /etc/bulkhead/image-release'
check "an upgrade event on v2 says v4 was not confirmed" event "upgrade to 4.0.0-confirmtest failed: slot A was not confirmed"
g vm 'for i in $(seq 60); do test -e /var/lib/bulkhead/upgrade/pending || break; sleep 1; done; bulkhead upgrade status' > "$TMP/status.v4b" 2>&1 || true
sed 's/^/# /' "$TMP/status.v4b"
check "upgrade status: last result not-confirmed, slot A bad, next boot slot B" bash -c "
  grep -q '^last result: not-confirmed: upgrade to 4.0.0-confirmtest failed: slot A was not confirmed' '$TMP/status.v4b' &&
  grep -q '^slot A .* bad ' '$TMP/status.v4b' && grep -q '^next boot: slot B' '$TMP/status.v4b'"

# ---- 7. --confirm-within 60s and `bulkhead confirm` over SSH ---------------------------------------
check "SSH works on v2" ssh_up
check "v4 bundle copied again" gscp "$TMP/v4.raucb" /tmp/v4.raucb
nA=$(seen 'bulkhead-grub: booting slot A') nR=$(seen '^bulkhead: ready')
gssh "bulkhead upgrade /tmp/v4.raucb --confirm-within 60s --reboot" > "$TMP/install.v4c" 2>&1 || true
check "v4 installs into slot A with --confirm-within 60s" grep -q 'run `bulkhead confirm` within 60 s' "$TMP/install.v4c"
check "the box boots v4 (slot A)" wait_console vm 'bulkhead-grub: booting slot A' $((nA + 1)) "$MARKER_TIMEOUT"
check "v4 gets ready" ready $((nR + 1))
check "the slot waits for its confirmation" deadline
check "SSH works on v4" ssh_up
gssh 'bulkhead confirm' > "$TMP/confirm.out" 2>&1 || true
sed 's/^/# /' "$TMP/confirm.out"
check "bulkhead confirm over SSH confirms the upgrade and says so" \
  grep -q '^confirmed the upgrade: slot A (4.0.0-confirmtest) is marked good' "$TMP/confirm.out"
check "and says no config apply was waiting" grep -q '^config: no apply was waiting for confirmation' "$TMP/confirm.out"
check "an upgrade event says v4 is ok and confirmed" event "upgrade to 4.0.0-confirmtest ok: slot A is ready and confirmed"
g vm 'for i in $(seq 60); do test -e /var/lib/bulkhead/upgrade/pending || break; sleep 1; done; bulkhead upgrade status' > "$TMP/status.v4c" 2>&1 || true
sed 's/^/# /' "$TMP/status.v4c"
check "upgrade status: slot A good, no pending install, last result ok" bash -c "
  grep -q '^slot A .* good ' '$TMP/status.v4c' && ! grep -q '^pending:' '$TMP/status.v4c' &&
  grep -q '^last result: ok: upgrade to 4.0.0-confirmtest ok' '$TMP/status.v4c'"
check "reboot" g vm '(sleep 1; reboot) >/dev/null 2>&1 &'
check "after another reboot GRUB boots slot A" wait_console vm 'bulkhead-grub: booting slot A' $((nA + 2)) "$MARKER_TIMEOUT"
check "v4 gets ready" ready $((nR + 2))
check "control channel answers" gwait vm
check "v4 still runs on slot A, marked good" g vm 'grep -q "rauc.slot=A" /proc/cmdline && grep -qx BULKHEAD_IMAGE_VERSION=4.0.0-confirmtest /etc/bulkhead/image-release &&
  for i in $(seq 30); do bulkhead upgrade status | grep -q "^slot A .* good " && exit 0; sleep 1; done; exit 1'
stop_vm vm
log "upgrade.sh took $((SECONDS - T0)) s"
finish
