#!/usr/bin/env bash
# tests/vm/vlan.sh: VLAN + NAT smoke test through the guest.
#
#   netns c10  --veth--+
#   netns c10b --veth--+ br10 (netns s10) --tap--+
#                                     netns c20 --tap--+ vlanswitch.py --dgram-- guest eth0 (trunk)
#       eth0.10 198.18.10.1/24, eth0.20 198.18.20.1/24
#   (two clients share VLAN 10 through a plain bridge behind the VLAN's tap)
#   netns wan --tap (qemu uplink, moved into wan)-- guest eth1   198.18.100.1/24
#
# The guest is configured over the control channel with a small nft forward
# policy: VLAN 10 may reach the uplink (masqueraded); everything else that is
# forwarded is dropped. The wan namespace has no route back to 198.18.10.0/24,
# so a reply there proves masquerade.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MODE=${1:-elf}
require vmlinux initramfs.cpio.gz
ping_() { ip netns exec "$1" busybox ping -c 2 -W 2 "$2"; }

C10=bh$BHID-c10 C10B=bh$BHID-c10b S10=bh$BHID-s10 C20=bh$BHID-c20 WAN=bh$BHID-wan
T10=bh${BHID}v10 T20=bh${BHID}v20 TWAN=bh${BHID}wan
netns_add "$C10"; netns_add "$C10B"; netns_add "$S10"; netns_add "$C20"; netns_add "$WAN"
LINKS+=("$T10" "$T20" "$TWAN")

python3 "$VM_DIR/vlanswitch.py" --sock "$TMP/sw.sock" --peer "$TMP/qemu.sock" \
  --port "10:$T10:$S10" --port "20:$T20:$C20" --ready "$TMP/sw.ready" 2> "$TMP/switch.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -e "$TMP/sw.ready" ] && break; sleep 0.1; done
[ -e "$TMP/sw.ready" ] || { cat "$TMP/switch.log"; notok "switch did not start"; finish; }
# VLAN 10 has two clients: a plain bridge in s10 joins the VLAN's tap and a veth per client
ip -n "$S10" link add br10 type bridge
ip -n "$S10" link set "$T10" master br10
ip -n "$S10" link set br10 up
for ns in "$C10" "$C10B"; do
  p=${ns##*-}p
  ip -n "$S10" link add "$p" type veth peer name eth0 netns "$ns"
  ip -n "$S10" link set "$p" master br10 up
  ip -n "$ns" link set eth0 up
done
ip -n "$C10" addr add 198.18.10.2/24 dev eth0; ip -n "$C10" route add default via 198.18.10.1
ip -n "$C10B" addr add 198.18.10.3/24 dev eth0; ip -n "$C10B" route add default via 198.18.10.1
ip -n "$C20" addr add 198.18.20.2/24 dev "$T20"; ip -n "$C20" route add default via 198.18.20.1

NICS=(--trunk "dgram:$TMP/qemu.sock:$TMP/sw.sock" --uplink "tap:$TWAN")
case "$MODE" in
  elf|bzimage) start_vm vm --mode "$MODE" --no-reboot "${NICS[@]}" ;;
  *) start_vm vm --mode "$MODE" --disk "$OUT/disk.img" --snapshot --no-reboot "${NICS[@]}" ;;
esac
# qemu creates the uplink tap in our namespace; move it into wan (qemu's fd keeps working)
for _ in $(seq 100); do ip link show "$TWAN" >/dev/null 2>&1 && break; sleep 0.1; done
ip link set "$TWAN" netns "$WAN"
ip -n "$WAN" addr add 198.18.100.2/24 dev "$TWAN"
ip -n "$WAN" link set "$TWAN" up

wait_marker vm || { notok "guest did not boot"; finish; }
ok "guest booted to the init marker in ${BOOT_SECS}s"
check "control channel answers" gwait vm

check "guest: VLAN interfaces, addresses and nft forward policy" g vm '
set -e
ip=/sbin/ip
$ip link set eth0 up
$ip link add link eth0 name eth0.10 type vlan id 10
$ip link add link eth0 name eth0.20 type vlan id 20
$ip addr add 198.18.10.1/24 dev eth0.10
$ip addr add 198.18.20.1/24 dev eth0.20
$ip link set eth0.10 up
$ip link set eth0.20 up
$ip addr add 198.18.100.1/24 dev eth1
$ip link set eth1 up
sysctl -q -w net.ipv4.ip_forward=1
nft -f - <<EOF
table inet vlantest {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "eth0.10" oifname "eth1" counter accept
    iifname "eth0.10" oifname "eth0.20" counter drop comment "c10_to_c20"
    iifname "eth0.20" oifname "eth1" counter drop comment "c20_to_wan"
  }
  chain postrouting {
    type nat hook postrouting priority 100;
    oifname "eth1" masquerade
  }
}
EOF'

check "c10 pings the guest on VLAN 10 (198.18.10.1)" ping_ "$C10" 198.18.10.1
check "c10b, the second client on VLAN 10 (behind the bridge), pings the guest" ping_ "$C10B" 198.18.10.1
check "c10 and c10b reach each other on VLAN 10" ping_ "$C10" 198.18.10.3
check "c20 pings the guest on VLAN 20 (198.18.20.1)" ping_ "$C20" 198.18.20.1
check "guest pings c20 over eth0.20" g vm 'ping -c 2 -W 2 198.18.20.2'
check_fails "c10 -> c20 is dropped by the forward policy" ping_ "$C10" 198.18.20.2
check "guest counted the dropped c10 -> c20 packets" g vm   'nft list chain inet vlantest forward | grep c10_to_c20 | grep -v "packets 0 "'
check "c10 reaches wan (198.18.100.2) through masquerade" ping_ "$C10" 198.18.100.2
check "guest counted the forwarded VLAN 10 -> uplink packets" g vm \
  'nft list chain inet vlantest forward | grep "oifname \"eth1\" counter" | grep -v "packets 0 "'
check_fails "c20 -> wan is dropped" ping_ "$C20" 198.18.100.2
check "wan has no route back to VLAN 10 (so the replies were NATed)"   bash -c "! ip -n $WAN route get 198.18.10.2 >/dev/null 2>&1"
dropbearkey -t ed25519 -f "$TMP/id_ed25519" 2>/dev/null | grep '^ssh-ed25519' > "$TMP/id.pub"
check "install a test key as root's authorized key" g vm "mkdir -p /root/.ssh && echo '$(cat "$TMP/id.pub")' > /root/.ssh/authorized_keys"
check "ssh (dropbear, key only) from c10 to the guest" bash -c \
  "ip netns exec $C10 env HOME=$TMP timeout 90 dbclient -y -y -i $TMP/id_ed25519 root@198.18.10.1 'echo ssh-ok' | grep -q ssh-ok"
check "ssh without a key is refused (no password logins)" bash -c \
  "ip netns exec $C10 env HOME=$TMP timeout 60 dbclient -y -y root@198.18.10.1 true </dev/null 2>&1 | tee /dev/stderr | grep -q 'No auth methods could be used'"
stop_vm vm
kill -TERM "${PIDS[0]}" 2>/dev/null; wait "${PIDS[0]}" 2>/dev/null || true
log "$(tail -1 "$TMP/switch.log")"
finish
