#!/usr/bin/env bash
# tests/vm/lab.sh: VLANs end to end. The appliance image boots under qemu (TCG) with its
# shipped config; a tagging switch hands VLANs 10, 20, 30, 100 and 200 of its trunk to client
# namespaces, each of which takes its address by DHCP from Bulkhead on its VLAN; the uplink
# takes its address by DHCP from the lab's internet router. Then the lab's policy matrix is
# opened for real across the VLANs: every allowed flow, a sample of denied ones, SSH to the
# gateway (it answers only from the management VLAN) and internet flows, which must arrive
# masqueraded as the uplink address. After a reboot on the same disk: SSH and the HTTPS
# management API (8443) answer from the management VLAN only, and the guest listens for the API
# on the management address only (netstat over the test image's control socket). Then IPv6 on the
# same boot: the dual-stack config loaded into the appliance, SLAAC, DHCPv6, the policy over IPv6
# and RAs confined to their VLAN (tests/vm/ipv6-checks.sh). A forwarded TCP flow (iperf3) must be
# offloaded to the flowtable. Needs root, dhcpcd, iperf3 and a built test image
# (image/build --test).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
# the binary the image was built with, unless told otherwise
BH=${BULKHEAD:-$ROOT/target/x86_64-unknown-linux-gnu/image/bulkhead}
[ -x "$BH" ] || BH=$ROOT/target/release/bulkhead
[ -x "$BH" ] || { echo "tests/vm/lab.sh: build bulkhead first (cargo build)"; exit 1; }
# the test image, like every VM test (image/build --test)
IMG=${OUT:-$ROOT/image/out-test}
[ -e "$IMG/vmlinux" ] || { echo "tests/vm/lab.sh: no image in $IMG (run image/build --test)"; exit 1; }
NAME=vm$$
TMP=$(mktemp -d)
trap '"$BH" lab --name "$NAME" down >/dev/null 2>&1 || true; rm -rf "$TMP"' EXIT
# a fresh copy of the disk image: its data partition keeps leases and state across boots
cp --sparse=always "$IMG/disk.img" "$TMP/disk.img"
t0=$(date +%s.%N)
"$BH" -c overlay/etc/bulkhead/bulkhead.toml lab --name "$NAME" up --vm --image-out "$IMG" --disk "$TMP/disk.img"
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" 'BEGIN { printf "appliance up and every VLAN client leased in %.1f s\n", b - a }'
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
grep -qE "^mgmt +gateway@mgmt +tcp/22 +allow +allow" <<<"$out" || { echo "FAIL: SSH from mgmt"; exit 1; }
grep -qE "^guest +internet +tcp/443 +allow +allow .*seen as 203.0.113.2" <<<"$out" || { echo "FAIL: guest NAT"; exit 1; }
echo "PASS: VLANs end to end"
# flow offload: the image's kernel has nf_flow_table, so the policy matrix above ran with the
# flowtable loaded over the trunk, its VLANs and the uplink, and status says so
ft=$(python3 "$HERE/guestctl.py" --timeout 60 "/run/bulkhead-lab/$NAME/ctl.sock" \
  'nft list flowtables; nft list chain inet bulkhead forward | grep "flow add"; bulkhead status | grep "^flow offload"') || true
grep -q "flowtable ft" <<<"$ft" && grep -qE 'devices = \{.*eth0\.10' <<<"$ft" &&
  grep -q "flow add @ft" <<<"$ft" && grep -q "^flow offload: on" <<<"$ft" || {
  echo "$ft"; echo "FAIL: flow offload is not on in the appliance"; exit 1
}
echo "PASS: flowtable ft loaded in the appliance (status: flow offload: on) and the policy matrix holds with it"
# and a forwarded TCP flow is really offloaded: a 10 s iperf3 transfer from the internal VLAN's
# client to the internet host (internal has internet = true); half-way through, the guest's
# conntrack entry of it carries [OFFLOAD] (read by a background job in the guest, so the
# control channel is free during the transfer), and the forward chain's established counter
# sees only the packets before the flow was added to the flowtable, not the transfer's
ctl=/run/bulkhead-lab/$NAME/ctl.sock
g() { python3 "$HERE/guestctl.py" --timeout 60 "$ctl" "$@"; }
estab() { g 'nft list chain inet bulkhead forward | sed -n "s/.*counter packets \([0-9]*\) .*builtin:established.*/\1/p"' | tr -d '\r' | head -1; }
# the shipped config quarantines on alerts, and the denied probes of `lab verify` look like a
# scan: every client (and the internet host, by its answers) is in the quarantine set now
g 'q=$(bulkhead set list quarantine 2>/dev/null); [ -z "$q" ] || bulkhead set del quarantine $q' >/dev/null
ip netns exec "bhl-$NAME-inet" iperf3 -s -1 -p 5201 -D -I "$TMP/iperf3.pid" --logfile "$TMP/iperf3.log"
sleep 0.5
e0=$(estab)
g "rm -f /tmp/ct.txt; (sleep 5; grep 'dport=5201' /proc/net/nf_conntrack > /tmp/ct.txt 2>&1) </dev/null >/dev/null 2>&1 &" >/dev/null
ip netns exec "bhl-$NAME-c-internal" iperf3 -c 198.51.100.80 -p 5201 -t 10 -J > "$TMP/iperf3.json" || {
  kill "$(cat "$TMP/iperf3.pid" 2>/dev/null)" 2>/dev/null || true
  cat "$TMP/iperf3.log"; echo "FAIL: iperf3 from the internal VLAN to the internet host"; exit 1
}
e1=$(estab)
kill "$(cat "$TMP/iperf3.pid" 2>/dev/null)" 2>/dev/null || true
ct=$(g 'cat /tmp/ct.txt' | tr -d '\r') || true
segs=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["end"]["sum_sent"]["bytes"] / 1448))' "$TMP/iperf3.json")
seen=$(( ${e1:-0} - ${e0:-0} ))
echo "$ct"
echo "forward chain, established packets during the transfer: $seen (iperf3 data segments: ~$segs)"
grep -q '\[OFFLOAD\]' <<<"$ct" && [ "$seen" -lt $(( segs / 20 )) ] || {
  echo "FAIL: the forwarded TCP flow is not offloaded (no [OFFLOAD] in its conntrack entry, or the forward chain saw its packets)"; exit 1
}
echo "PASS: a forwarded TCP flow is offloaded ([OFFLOAD] in conntrack; the forward chain saw $seen of its ~$segs segments)"

# the appliance goes down and comes back on the same disk: its leases and applied state are there
addrs1=$(grep -h "obtained from" /run/bulkhead-lab/$NAME/dhcp-*.log | awk '{print $4}' | sort | tr '\n' ' ')
"$BH" lab --name "$NAME" down
# the admin's SSH key onto the data partition (where `bulkhead setup` puts it), written into the
# ext4 filesystem (the disk's last partition) with debugfs: no mounts, no loop devices
dropbearkey -t ed25519 -f "$TMP/id_ed25519" 2>/dev/null | grep '^ssh-ed25519' > "$TMP/id.pub"
start=$(sfdisk -J "$TMP/disk.img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][-1]["start"])')
dd if="$TMP/disk.img" of="$TMP/data.ext4" bs=512 skip="$start" status=none
# `lab down` cuts the power: replay the journal first, or the guest's replay at mount would
# undo what debugfs writes
e2fsck -fy "$TMP/data.ext4" >/dev/null 2>&1 || [ $? -le 1 ] || { echo "FAIL: e2fsck of the data partition"; exit 1; }
debugfs -w -R "write $TMP/id.pub authorized_keys" "$TMP/data.ext4" >/dev/null 2>&1
debugfs -R "stat authorized_keys" "$TMP/data.ext4" >/dev/null 2>&1 || { echo "FAIL: debugfs could not write the key"; exit 1; }
dd if="$TMP/data.ext4" of="$TMP/disk.img" bs=512 seek="$start" conv=notrunc status=none
rm -f "$TMP/data.ext4"
"$BH" -c overlay/etc/bulkhead/bulkhead.toml lab --name "$NAME" up --vm --image-out "$IMG" --disk "$TMP/disk.img" >/dev/null
con=/run/bulkhead-lab/$NAME/console.log
grep -q "data partition .* mounted" "$con" || { echo "FAIL: data partition not mounted"; exit 1; }
loaded=$(sed -n 's/.*lease store loaded leases=\([0-9]*\).*/\1/p' "$con" | head -1)
[ "${loaded:-0}" -ge 5 ] || { echo "FAIL: the lease store came back with ${loaded:-no} leases"; exit 1; }
grep -q "generation=Some(2)" "$con" || { echo "FAIL: the applied generations did not survive"; exit 1; }
addrs2=$(grep -h "obtained from" /run/bulkhead-lab/$NAME/dhcp-*.log | awk '{print $4}' | sort | tr '\n' ' ')
[ "$addrs1" = "$addrs2" ] || { echo "FAIL: clients got other addresses after the reboot: $addrs1 / $addrs2"; exit 1; }
echo "PASS: after a reboot on the same disk: $loaded leases reloaded, generation 2, same addresses ($addrs2)"

# remote management from the management VLAN only: an SSH login with the key works from there,
# and from any other VLAN the gateway does not answer
ssh_from() {  # NS ADDR
  ip netns exec "$1" env HOME="$TMP" timeout 120 dbclient -y -y -i "$TMP/id_ed25519" "root@$2" 'echo ssh-ok' 2>&1
}
for i in $(seq 60); do
  grep -q "dropbear listening on 192.168.100.1:22" "$con" && break; sleep 1
done
out=$(ssh_from "bhl-$NAME-c-mgmt" 192.168.100.1) || true
grep -q ssh-ok <<<"$out" || {
  echo "$out"; grep -iE "dropbear|ssh|authorized" "$con" | tail -20
  echo "FAIL: SSH login from the management VLAN"; exit 1
}
echo "PASS: SSH with the admin key from the management VLAN"
if ip netns exec "bhl-$NAME-c-internal" env HOME="$TMP" timeout 10 dbclient -y -y -i "$TMP/id_ed25519" root@192.168.20.1 true >/dev/null 2>&1; then
  echo "FAIL: SSH answered on the internal VLAN"; exit 1
fi
if ip netns exec "bhl-$NAME-c-internal" env HOME="$TMP" timeout 10 dbclient -y -y -i "$TMP/id_ed25519" root@192.168.100.1 true >/dev/null 2>&1; then
  echo "FAIL: SSH to the management address answered from the internal VLAN"; exit 1
fi
echo "PASS: no SSH from the internal VLAN (neither its gateway address nor the management one)"

# the HTTPS management API (api_port = 8443 in the shipped config) answers on the management
# VLAN only, and the guest listens on the management address only
for i in $(seq 60); do
  grep -q "management API on https://192.168.100.1:8443" "$con" && break; sleep 1
done
api_code() {  # NS URL [CURL ARGS]: the HTTP status, 000 when nothing answered
  local ns=$1 url=$2; shift 2
  ip netns exec "$ns" curl -sk -o /dev/null -w '%{http_code}' -m 5 "$@" "$url" || true
}
code=$(api_code "bhl-$NAME-c-mgmt" https://192.168.100.1:8443/api/v1/status)
[ "$code" = 401 ] || {
  grep -iE "api|8443" "$con" | tail -20
  echo "FAIL: the API from the management VLAN without a token gave $code, not 401"; exit 1
}
ctl=/run/bulkhead-lab/$NAME/ctl.sock
tok=$(python3 "$HERE/guestctl.py" --timeout 60 "$ctl" 'bulkhead api-token add lab --role read 2>/dev/null' |
  grep -o 'bh_[A-Za-z0-9_-]*' | head -1) || true
[ -n "$tok" ] || { echo "FAIL: bulkhead api-token add in the guest gave no token"; exit 1; }
code=$(api_code "bhl-$NAME-c-mgmt" https://192.168.100.1:8443/api/v1/status -H "Authorization: Bearer $tok")
[ "$code" = 200 ] || { echo "FAIL: the API from the management VLAN with a token gave $code, not 200"; exit 1; }
echo "PASS: the API answers on the management VLAN (401 without a token, 200 with one)"
for seg in internal:192.168.20.1 guest:192.168.200.1; do
  ns=bhl-$NAME-c-${seg%%:*}
  for addr in "${seg#*:}" 192.168.100.1; do
    code=$(api_code "$ns" "https://$addr:8443/api/v1/status" -H "Authorization: Bearer $tok")
    [ "$code" = 000 ] || { echo "FAIL: the API at $addr:8443 answered $code on the ${seg%%:*} VLAN"; exit 1; }
  done
done
echo "PASS: from the internal and guest VLANs the API port answers at neither the segment's gateway address nor the management one"
listen=$(python3 "$HERE/guestctl.py" --timeout 60 "$ctl" 'netstat -ltn' | grep ':8443 ') || true
[ "$(grep -c . <<<"$listen")" = 1 ] && grep -qE ' 192\.168\.100\.1:8443 ' <<<"$listen" || {
  echo "$listen"; echo "FAIL: the guest's listener on 8443 is not the management address alone"; exit 1
}
echo "PASS: in the guest, netstat shows the API listening on 192.168.100.1:8443 only"

# IPv6 end to end over the VLANs, on this same boot: the dual-stack variant of the shipped config
# (tests/golden/dualstack.toml) replaces the running one (SIGHUP); clients take SLAAC addresses
# from the appliance's RAs, internal's client a DHCPv6 lease (dhcpcd -6), the policy holds for
# IPv6 across the VLANs, and RAs stay on their VLAN (tests/vm/ipv6-checks.sh)
"$HERE/ipv6-checks.sh" "$NAME" --vm || { echo "FAIL: IPv6 over the VLANs"; exit 1; }
