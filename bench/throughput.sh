#!/usr/bin/env bash
# bench/throughput.sh: forwarding throughput through the gateway with the benchmark policy.
#
#   sudo bench/throughput.sh          (REPS=3, SECS=5 seconds per iperf3 run)
#
# The lab's shape, built here so that every namespace is the script's own (bhb-<id>-*):
#   cli (10.1.0.2) --lan0-- gw (bulkhead, ip_forward) --srv0-- srv (10.2.0.2, iperf3 -s)
# The gateway's firewall is applied with `bulkhead apply` from the bench/gen-policy.py policy
# (10,000 group elements, 200 rules; the iperf3 flow is allowed by the last rule). Offloads
# (TSO/GSO/GRO) are off on every veth so that packets are MTU-sized and each one crosses the
# firewall, as in the recipe. Each run measures, interleaved:
#   none     - the same topology and sysctls, no ruleset at all;
#   minimal  - a minimal stateful ruleset (ct state established accept; the one allow rule;
#              drop) - the conntrack cost that any stateful firewall pays;
#   minimal-nat - minimal plus two empty NAT chains (prerouting, postrouting), which
#              Bulkhead's table always carries: registering NAT hooks costs per packet;
#   bulkhead - the policy as `bulkhead apply` loaded it.
# TCP: iperf3 -t SECS, Gbit/s received. UDP: 64-byte datagrams unthrottled, kpps delivered.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
need nft nftables
need iperf3 iperf3
need ethtool ethtool
bulkhead_bin
SECS=${SECS:-5}
FWS=${FWS:-none minimal minimal-nat bulkhead}

python3 "$BENCH_DIR/gen-policy.py" > "$W/policy.toml"
"$BULKHEAD" -c "$W/policy.toml" check >&2

ns_add cli; ns_add gw; ns_add srv
veth cli eth0 gw lan0
veth gw srv0 srv eth0
ip -n "$(nsname gw)" link add up0 type veth peer name up0p  # the uplink: unused here
ip -n "$(nsname gw)" link set up0 up; ip -n "$(nsname gw)" link set up0p up
ip -n "$(nsname cli)" addr add 10.1.0.2/24 dev eth0
ip -n "$(nsname cli)" route add default via 10.1.0.1
ip -n "$(nsname srv)" addr add 10.2.0.2/24 dev eth0
ip -n "$(nsname srv)" route add default via 10.2.0.1
for x in "cli eth0" "gw lan0" "gw srv0" "srv eth0"; do
  set -- $x
  inns "$1" ethtool -K "$2" tso off gso off gro off >/dev/null 2>&1 || true
done
# the policy's addresses and sysctls (ip_forward) come from bulkhead apply
inns gw "$BULKHEAD" -c "$W/policy.toml" --state-dir "$W/st" apply >&2
inns gw sysctl -qn net.ipv4.ip_forward | grep -qx 1 || die "apply did not enable forwarding"

cat > "$W/minimal.nft" <<'NFT'
table inet bhbmin {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan0" oifname "srv0" meta l4proto { tcp, udp } th dport 5201 accept
  }
}
NFT
# the same plus two empty NAT chains, as Bulkhead's table always has (dstnat, srcnat)
sed 's/^}$//' "$W/minimal.nft" > "$W/minimal-nat.nft"
cat >> "$W/minimal-nat.nft" <<'NFT'
  chain dstnat { type nat hook prerouting priority dstnat; policy accept; }
  chain srcnat { type nat hook postrouting priority srcnat; policy accept; }
}
NFT

inns srv iperf3 -s -D -I "$W/iperf3.pid" --logfile "$W/iperf3.log"
sleep 0.5; BH_PIDS+=("$(cat "$W/iperf3.pid")")

tcp() { inns cli iperf3 -c 10.2.0.2 -t "$SECS" -J > "$W/tcp.json"
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.3f" % (j["end"]["sum_received"]["bits_per_second"]/1e9))' "$W/tcp.json"; }
udp() { inns cli iperf3 -c 10.2.0.2 -u -b 0 -l 64 -t "$SECS" -J > "$W/udp.json"
  python3 -c '
import json,sys
j=json.load(open(sys.argv[1])); s=j["end"]["sum"]
print("%.1f" % ((s["packets"]-s["lost_packets"])/s["seconds"]/1e3))' "$W/udp.json"; }

setfw() { # none | minimal | bulkhead
  inns gw nft delete table inet bhbmin 2>/dev/null || true
  case $1 in
    none) inns gw nft delete table inet bulkhead 2>/dev/null || true ;;
    minimal|minimal-nat) inns gw nft delete table inet bulkhead 2>/dev/null || true; inns gw nft -f "$W/$1.nft" ;;
    bulkhead) inns gw "$BULKHEAD" -c "$W/policy.toml" --state-dir "$W/st" apply >/dev/null
              inns gw nft list table inet bulkhead >/dev/null ;;
  esac
  [ "$(inns gw nft list ruleset | grep -c '^table' || true)" = "$([ "$1" = none ] && echo 0 || echo 1)" ] || die "ruleset state is not $1"
}

declare -A R
for rep in $(seq "$REPS"); do
  for fw in $FWS; do
    setfw "$fw"
    R[tcp_$fw]+="$(tcp) "; R[udp_$fw]+="$(udp) "
    log "run $rep $fw: tcp ${R[tcp_$fw]}/ udp ${R[udp_$fw]}"
  done
done

med() { printf '%s\n' ${R[$1]} | median; }
rng() { printf '%s\n' ${R[$1]} | range; }
pct() { awk -v a="$(med "$1")" -v b="$(med "$2")" 'BEGIN{printf "%.0f %%", 100*a/b}'; }
echo "forwarding throughput through the gateway: $REPS runs of ${SECS}s each, offloads off"
printf '%-34s %-34s %s\n' "ruleset in the gateway" "TCP Gbit/s" "UDP 64 B kpps delivered"
for fw in $FWS; do
  printf '%-34s %-34s %s\n' "$fw" "$(rng tcp_$fw)" "$(rng udp_$fw)"
done
cmp() { # A B [NOTE]: A / B, TCP and UDP medians, when both ran
  [ -n "${R[tcp_$1]:-}" ] && [ -n "${R[tcp_$2]:-}" ] || return 0
  printf '%-34s %-34s %s\n' "$1 / $2 (medians)" "$(pct "tcp_$1" "tcp_$2")${3:+ $3}" "$(pct "udp_$1" "udp_$2")"
}
cmp bulkhead none "(goal >= 95 %)"
cmp bulkhead minimal
cmp minimal none
cmp minimal-nat minimal
