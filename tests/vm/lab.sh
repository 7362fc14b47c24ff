#!/usr/bin/env bash
# tests/vm/lab.sh: VLANs end to end. The appliance image boots under qemu (TCG) with its
# shipped config; a tagging switch hands VLANs 10, 20, 30, 100 and 200 of its trunk to client
# namespaces, each of which takes its address by DHCP from Bulkhead on its VLAN; the uplink
# takes its address by DHCP from the lab's internet router. Then the lab's policy matrix is
# opened for real across the VLANs: every allowed flow, a sample of denied ones, SSH to the
# gateway (it answers only from the management VLAN) and internet flows, which must arrive
# masqueraded as the uplink address. Needs root and a built image (image/build).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
# the binary the image was built with, unless told otherwise
BH=${BULKHEAD:-$ROOT/target/x86_64-unknown-linux-gnu/release/bulkhead}
[ -x "$BH" ] || BH=$ROOT/target/release/bulkhead
[ -x "$BH" ] || { echo "tests/vm/lab.sh: build bulkhead first (cargo build)"; exit 1; }
[ -e image/out/vmlinux ] || { echo "tests/vm/lab.sh: no image (run image/build)"; exit 1; }
NAME=vm$$
TMP=$(mktemp -d)
trap '"$BH" lab --name "$NAME" down >/dev/null 2>&1 || true; rm -rf "$TMP"' EXIT
# a fresh copy of the disk image: its data partition keeps leases and state across boots
cp --sparse=always image/out/disk.img "$TMP/disk.img"
t0=$(date +%s.%N)
"$BH" -c overlay/etc/bulkhead/bulkhead.toml lab --name "$NAME" up --vm --disk "$TMP/disk.img"
t1=$(date +%s.%N)
printf 'appliance up and every VLAN client leased in %.1f s\n' "$(echo "$t1 - $t0" | bc)"
grep -q "created vlan link" "/run/bulkhead-lab/$NAME/console.log"
out=$("$BH" lab --name "$NAME" verify) || { echo "$out"; echo "FAIL: policy matrix across the VLANs"; exit 1; }
echo "$out" | tail -1
# the checks this test is about, shown explicitly
echo "$out" | grep -E "gateway@mgmt +tcp/22" || true
echo "$out" | grep -E "^guest +internet +tcp/443" || true
for seg in dmz internal server mgmt guest; do
  grep -q "udhcpc: lease of .* obtained from" "/run/bulkhead-lab/$NAME/dhcp-$seg.log" ||
    { echo "FAIL: $seg client got no DHCP lease"; exit 1; }
done
echo "$out" | grep -qE "^mgmt +gateway@mgmt +tcp/22 +allow +allow" || { echo "FAIL: SSH from mgmt"; exit 1; }
echo "$out" | grep -qE "^guest +internet +tcp/443 +allow +allow .*seen as 203.0.113.2" || { echo "FAIL: guest NAT"; exit 1; }
echo "PASS: VLANs end to end"

# the appliance goes down and comes back on the same disk: its leases and applied state are there
addrs1=$(grep -h "obtained from" /run/bulkhead-lab/$NAME/dhcp-*.log | awk '{print $4}' | sort | tr '\n' ' ')
"$BH" lab --name "$NAME" down
"$BH" -c overlay/etc/bulkhead/bulkhead.toml lab --name "$NAME" up --vm --disk "$TMP/disk.img" >/dev/null
con=/run/bulkhead-lab/$NAME/console.log
grep -q "data partition .* mounted" "$con" || { echo "FAIL: data partition not mounted"; exit 1; }
loaded=$(sed -n 's/.*lease store loaded leases=\([0-9]*\).*/\1/p' "$con" | head -1)
[ "${loaded:-0}" -ge 5 ] || { echo "FAIL: the lease store came back with ${loaded:-no} leases"; exit 1; }
grep -q "generation=Some(2)" "$con" || { echo "FAIL: the applied generations did not survive"; exit 1; }
addrs2=$(grep -h "obtained from" /run/bulkhead-lab/$NAME/dhcp-*.log | awk '{print $4}' | sort | tr '\n' ' ')
[ "$addrs1" = "$addrs2" ] || { echo "FAIL: clients got other addresses after the reboot: $addrs1 / $addrs2"; exit 1; }
echo "PASS: after a reboot on the same disk: $loaded leases reloaded, generation 2, same addresses ($addrs2)"
