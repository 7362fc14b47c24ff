#!/usr/bin/env bash
# tests/vm/ipv6-checks.sh NAME [--vm]: IPv6 end to end on a running `bulkhead lab` whose gateway
# runs the dual-stack shipped config (tests/golden/dualstack.toml: fd00:VID::/64 per segment,
# internal DHCPv6 stateful, the others SLAAC). With --vm the gateway is the appliance image
# (tests/vm/lab.sh loads the config into it); without, the lab's gateway namespace.
#   - kernel SLAAC: the clients of dmz, server, mgmt and guest take an address in their own
#     VLAN's /64 from the gateway's RAs, with the gateway's link-local address as default route;
#   - DHCPv6: on internal (M flag, no A flag) the client has no SLAAC address and dhcpcd -6
#     gets a lease in fd00:20::/64;
#   - the policy holds for IPv6 across the VLANs: internal -> dmz tcp/80 passes and arrives
#     with the client's own source address; guest -> dmz tcp/80 and dmz -> internal tcp/80 drop;
#     `bulkhead explain` of each of these flows (by the addresses seen) gives the same verdict;
#   - RAs stay on their VLAN: no client has an address from another VLAN's prefix, and a rogue
#     RA (prefix fd99::/64) sent on the server VLAN reaches its neighbour on that VLAN (the
#     control) but no client on another VLAN and not the gateway.
# Needs root, python3, dhcpcd. Exits non-zero on the first failure.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NAME=${1:?usage: ipv6-checks.sh NAME [--vm]}
VM=${2:-}
ns() { echo "bhl-$NAME-$1"; }
ROOT=$(cd "$HERE/../.." && pwd)
CONFIG6=$ROOT/tests/golden/dualstack.toml
BH=${BULKHEAD:-$ROOT/target/x86_64-unknown-linux-gnu/image/bulkhead}
[ -x "$BH" ] || BH=$ROOT/target/release/bulkhead
[ -x "$BH" ] || BH=$ROOT/target/debug/bulkhead
[ -x "$BH" ] || { echo "tests/vm/ipv6-checks.sh: build bulkhead first (cargo build)"; exit 1; }
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
gw() {  # run a shell command on the gateway
  if [ "$VM" = --vm ]; then
    python3 "$HERE/guestctl.py" --timeout 60 "/run/bulkhead-lab/$NAME/ctl.sock" "$1"
  else
    ip netns exec "$(ns gw)" sh -c "$1"
  fi
}
global6() {  # NS: the client's global IPv6 addresses on eth0, one a line
  ip -n "$1" -6 -o addr show dev eth0 scope global | awk '{print $4}' | cut -d/ -f1
}
# in the appliance: the dual-stack config replaces the running one (written where `bulkhead run`
# reads it, then SIGHUP), and the gateway's segment VLANs carry their fd00:VID::/64
if [ "$VM" = --vm ]; then
  { echo 'pid=$(cat /run/bulkhead/bulkhead.pid)'
    echo 'cfg=$(tr "\0" "\n" < /proc/$pid/environ | sed -n "s/^BULKHEAD_CONFIG=//p")'
    echo 'cat > "$cfg" <<'"'BULKHEAD_EOF'"
    cat "$CONFIG6"
    echo 'BULKHEAD_EOF'
    echo 'echo "config $cfg replaced"; kill -HUP $pid'
  } | python3 "$HERE/guestctl.py" --timeout 60 "/run/bulkhead-lab/$NAME/ctl.sock" - ||
    fail "could not load the dual-stack config into the appliance"
  for _ in $(seq 60); do
    gw 'ip -6 -o addr show' 2>/dev/null | grep -q 'eth0\.20 .*inet6 fd00:20::' && break
    sleep 1
  done
  gw 'ip -6 -o addr show' | grep -q 'eth0\.20 .*inet6 fd00:20::' ||
    { gw 'ip -6 -o addr show' || true; tail -20 "/run/bulkhead-lab/$NAME/console.log"
      fail "the appliance did not take the dual-stack config (no fd00:20:: on eth0.20)"; }
  echo "ok: the appliance runs the dual-stack config: $(gw 'ip -6 -o addr show dev eth0.20 scope global' | awk '{print $4}')"
fi
declare -A VID=([dmz]=10 [internal]=20 [server]=30 [mgmt]=100 [guest]=200)

# 1. SLAAC from the gateway's RAs. Restart IPv6 on each client (disable_ipv6 1 -> 0: the kernel
# sends a router solicitation at once) so it does not depend on when the config arrived;
# IPv4 (its DHCP lease and routes) is left as it is.
for seg in dmz internal server mgmt guest; do
  ip netns exec "$(ns c-$seg)" sh -c 'sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1 &&
    sysctl -qw net.ipv6.conf.eth0.accept_ra=2 net.ipv6.conf.eth0.autoconf=1 &&
    sysctl -qw net.ipv6.conf.eth0.disable_ipv6=0'
done
declare -A ADDR
for seg in dmz server mgmt guest; do
  want="fd00:${VID[$seg]}:"
  a=
  for _ in $(seq 90); do
    a=$(global6 "$(ns c-$seg)" | grep "^$want" | head -1) || true
    [ -n "$a" ] && break
    sleep 1
  done
  [ -n "$a" ] || { ip -n "$(ns c-$seg)" -6 addr; fail "the $seg client got no SLAAC address in ${want}:/64"; }
  ip -n "$(ns c-$seg)" -6 route show default | grep -q "via fe80::" ||
    fail "the $seg client has no default route to the gateway's link-local address"
  ADDR[$seg]=$a
  echo "ok: $seg client SLAAC address $a, default route $(ip -n "$(ns c-$seg)" -6 route show default | awk '{print $3}')"
done
echo "PASS: kernel SLAAC from the gateway's RAs on VLANs 10, 30, 100 and 200"

# 2. DHCPv6 on internal (stateful: the RA has M set and no autonomous prefix)
sleep 2
if global6 "$(ns c-internal)" | grep -q .; then
  fail "the internal client has a SLAAC address on a stateful segment: $(global6 "$(ns c-internal)")"
fi
cat > "$TMP/hook.sh" <<EOF
#!/bin/sh
{ env; echo --; } >> "$TMP/hook.log"
EOF
chmod 755 "$TMP/hook.sh"
printf 'ipv6only\nipv6rs\noption dhcp6_name_servers, dhcp6_domain_search\n' > "$TMP/dhcpcd.conf"
# dhcpcd keeps its pid file, control socket and DUID under /run and /var/lib, shared with the
# host: give this one private ones (ip netns exec already runs it in its own mount namespace)
ip netns exec "$(ns c-internal)" sh -c "mkdir -p /run/dhcpcd /var/lib/dhcpcd &&
  mount -t tmpfs none /run/dhcpcd && mount -t tmpfs none /var/lib/dhcpcd &&
  exec dhcpcd -6 -B -d -f $TMP/dhcpcd.conf -c $TMP/hook.sh eth0" >/dev/null 2>"$TMP/dhcpcd.log" &
PIDS+=($!)
lease=
for _ in $(seq 90); do
  lease=$(awk -v RS='--\n' '/reason=BOUND6/' "$TMP/hook.log" 2>/dev/null |
    sed -n 's/^new_dhcp6_ia_na1_ia_addr1=//p' | head -1) || true
  [ -n "$lease" ] && break
  sleep 1
done
[ -n "$lease" ] || { tail -30 "$TMP/dhcpcd.log"; fail "dhcpcd -6 on the internal VLAN got no lease"; }
case "$lease" in fd00:20:*) ;; *) fail "the DHCPv6 lease $lease is not in fd00:20::/64" ;; esac
for _ in $(seq 20); do global6 "$(ns c-internal)" | grep -qx "$lease" && break; sleep 0.5; done
global6 "$(ns c-internal)" | grep -qx "$lease" || fail "the lease $lease is not on the internal client's eth0"
ADDR[internal]=$lease
echo "PASS: dhcpcd -6 on the internal VLAN leased $lease from the gateway"

# 3. the policy across VLANs for IPv6
listen() {  # NS ADDR PORT LOG: accept connections, log each peer address
  ip netns exec "$1" python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
while True:
    c, peer = s.accept()
    with open(sys.argv[3], "a") as f: f.write(peer[0] + "\n")
    c.sendall(b"hello\n"); c.close()
' "$2" "$3" "$4" &
  PIDS+=($!)
}
connect() {  # NS ADDR PORT: 0 when the server answered
  ip netns exec "$1" python3 -c '
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=4)
sys.exit(0 if c.recv(16).startswith(b"hello") else 1)
' "$2" "$3" 2>/dev/null
}
listen "$(ns c-dmz)" "${ADDR[dmz]}" 80 "$TMP/dmz80.log"
listen "$(ns c-internal)" "${ADDR[internal]}" 80 "$TMP/int80.log"
sleep 1
ok=
for _ in 1 2 3; do connect "$(ns c-internal)" "${ADDR[dmz]}" 80 && { ok=1; break; }; sleep 1; done
[ -n "$ok" ] || fail "internal [${ADDR[internal]}] -> dmz [${ADDR[dmz]}]:80 (allowed) did not connect"
grep -qx "${ADDR[internal]}" "$TMP/dmz80.log" ||
  fail "internal -> dmz arrived from $(cat "$TMP/dmz80.log"), not the client's own ${ADDR[internal]}"
echo "PASS: internal -> dmz tcp/80 over IPv6 allowed, seen from the client's own address ${ADDR[internal]}"
connect "$(ns c-guest)" "${ADDR[dmz]}" 80 && fail "guest -> dmz tcp/80 over IPv6 (denied) connected"
connect "$(ns c-dmz)" "${ADDR[internal]}" 80 && fail "dmz -> internal tcp/80 over IPv6 (denied) connected"
[ "$(grep -c . "$TMP/dmz80.log")" = "$(grep -c "${ADDR[internal]}" "$TMP/dmz80.log")" ] ||
  fail "a denied flow reached the dmz listener: $(cat "$TMP/dmz80.log")"
[ ! -s "$TMP/int80.log" ] || fail "a denied flow reached the internal listener: $(cat "$TMP/int80.log")"
echo "PASS: guest -> dmz and dmz -> internal tcp/80 over IPv6 dropped"
explain() {  # FROM TO: the verdict `bulkhead explain` gives for tcp/80 (it exits 1 on a drop)
  { "$BH" -c "$CONFIG6" explain --from "$1" --to "$2" --proto tcp --port 80 --format json || true; } |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["verdict"])'
}
for f in "internal dmz accept" "guest dmz drop" "dmz internal drop"; do
  set -- $f
  v=$(explain "${ADDR[$1]}" "${ADDR[$2]}") || fail "bulkhead explain of $1 -> $2 failed"
  [ "$v" = "$3" ] || fail "bulkhead explain says $v for $1 [${ADDR[$1]}] -> $2 [${ADDR[$2]}] tcp/80, the network said $3"
done
echo "PASS: bulkhead explain agrees for the three IPv6 flows (accept, drop, drop)"

# 4. RAs stay on their VLAN
for seg in dmz internal server mgmt guest; do
  other=$(global6 "$(ns c-$seg)" | grep -v "^fd00:${VID[$seg]}:" || true)
  [ -z "$other" ] || fail "the $seg client has addresses from another VLAN's prefix: $other"
done
rogue_ra() {  # NS: send an RA for fd99::/64 (router lifetime 0) to all nodes on eth0
  ip netns exec "$1" python3 -c '
import socket, struct
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 0, 0, 0)
pio = struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 3600, 1800, 0) + socket.inet_pton(socket.AF_INET6, "fd99::")
idx = socket.if_nametoindex("eth0")
for _ in range(3):
    s.sendto(ra + pio, ("ff02::1", 0, 0, idx))
'
}
ip netns exec "$(ns g-web_nodes)" sysctl -qw net.ipv6.conf.eth0.accept_ra=2
rogue_ra "$(ns c-server)"
seen=
for _ in $(seq 20); do
  global6 "$(ns g-web_nodes)" | grep -q '^fd99:' && { seen=1; break; }
  sleep 0.5
done
[ -n "$seen" ] || fail "the rogue RA did not reach the neighbour on its own VLAN (the control)"
sleep 2
for seg in dmz internal mgmt guest; do
  ! global6 "$(ns c-$seg)" | grep -q '^fd99:' || fail "the rogue RA from VLAN 30 reached the $seg client"
done
g6=$(gw 'ip -6 addr show; ip -6 route show') || fail "could not list the gateway's IPv6 state"
! grep -q 'fd99:' <<<"$g6" || fail "the rogue RA changed the gateway: $(grep fd99: <<<"$g6")"
echo "PASS: a rogue RA on VLAN 30 reached its VLAN neighbour only: no other VLAN's client, not the gateway"
echo "PASS: IPv6 end to end over the VLANs"
