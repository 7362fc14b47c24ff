#!/usr/bin/env bash
# bench/ipv6.sh: the dual-stack costs, in one run.
#
#   sudo bench/ipv6.sh                (REPS=3 runs of each; SECS=5 seconds per iperf3 run)
#
# The policy is bench/gen-policy.py --ipv6: the firewall benchmark policy made dual-stack
# (lan 10.1.0.0/24 + 2001:db8:1::/64, srv 10.2.0.0/24 + 2001:db8:2::/64; 100 groups holding
# ELEMENTS=10,000 IPv4 and 10,000 IPv6 set elements; 200 rules, the iperf3 rule last).
#   1. apply time: `bulkhead apply` into a fresh namespace and empty state dir, against
#      `nft -f` of the text `bulkhead plan --only firewall` renders from the same config, into
#      a fresh namespace (cold load); then a replace (one IPv6 member changed, the policies
#      alternate), `bulkhead apply` against `nft -f` of the same text. Ratios of the medians.
#   2. forwarding throughput, IPv6 against IPv4 in the same run:
#        cli (10.1.0.2, 2001:db8:1::2) --lan0-- fwd --srv0-- srv (10.2.0.2, 2001:db8:2::2)
#      the gateway's firewall applied by `bulkhead apply` from the dual-stack policy, offloads
#      off (MTU-sized packets, as bench/throughput.sh); TCP Gbit/s and UDP 64-byte kpps,
#      IPv4 and IPv6 runs interleaved.
# Timings of step 1 are taken inside the namespace (bench/firewall.sh --inner).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
need nft nftables
need iperf3 iperf3
need ethtool ethtool
bulkhead_bin
export BULKHEAD
SECS=${SECS:-5}
ELEMENTS=${ELEMENTS:-10000} RULES=${RULES:-200}

python3 "$BENCH_DIR/gen-policy.py" --ipv6 --elements "$ELEMENTS" --rules "$RULES" > "$W/a.toml"
# policy B: the same with one IPv6 member of g000 changed
sed '0,/"2001:db8:4000::"/s//"2001:db8:7fff::1"/' "$W/a.toml" > "$W/b.toml"
cmp -s "$W/a.toml" "$W/b.toml" && die "policy B is not different"
"$BULKHEAD" -c "$W/a.toml" check >&2
"$BULKHEAD" -c "$W/a.toml" plan --only firewall > "$W/a.nft"
"$BULKHEAD" -c "$W/b.toml" plan --only firewall > "$W/b.nft"
log "rendered firewall: $(wc -l < "$W/a.nft") lines, $(wc -c < "$W/a.nft") bytes"

gw_ns() { # fresh gateway namespace with the links the policy names
  ip netns del "$(nsname gw)" 2>/dev/null || true
  ns_add gw
  for l in lan0 srv0 up0; do ip -n "$(nsname gw)" link add "$l" type veth peer name "${l}p"; ip -n "$(nsname gw)" link set "$l" up; ip -n "$(nsname gw)" link set "${l}p" up; done
}
inner() { inns gw "$BASH" "$BENCH_DIR/firewall.sh" --inner "$@"; }
# the peer loads the text `bulkhead apply` loads (without the flowtable where the kernel has none)
gw_ns
peer_text_as_applied gw "$W/a.nft" "$W/b.nft"
inns gw nft -f "$W/a.nft" || die "nft -f of the rendered text failed"
elements() { # the set elements the loaded table holds, IPv4 and IPv6
  inns gw nft -j list table inet bulkhead | python3 -c '
import json, sys
v4 = v6 = 0
for o in json.load(sys.stdin)["nftables"]:
    s = o.get("set")
    if s:
        for e in s.get("elem", []):
            a = e if isinstance(e, str) else json.dumps(e)
            if ":" in a: v6 += 1
            else: v4 += 1
print(v4, v6)'
}

declare -A R
add() { R[$1]+="$2 "; }
for rep in $(seq "$REPS"); do
  log "apply run $rep/$REPS"
  gw_ns; add cold_nft "$(inner nft-f "$W/a.nft")"
  gw_ns; rm -rf "$W/st"; add cold_apply "$(inner apply "$W/a.toml" "$W/st")"
  if [ "$rep" = 1 ]; then
    read -r n4 n6 < <(elements)
    log "loaded: $n4 IPv4 and $n6 IPv6 set elements"
    [ "$n4" -ge "$ELEMENTS" ] && [ "$n6" -ge "$ELEMENTS" ] || die "the table holds $n4 + $n6 elements, not $ELEMENTS + $ELEMENTS"
  fi
  add repl_apply "$(inner apply "$W/b.toml" "$W/st")"
  add repl_apply "$(inner apply "$W/a.toml" "$W/st")"
  add repl_nft "$(inner nft-f "$W/b.nft")"
  add repl_nft "$(inner nft-f "$W/a.nft")"
done
ip netns del "$(nsname gw)"

# 2. throughput (the gateway namespace is bhb-<id>-fwd)
ns_add cli; ns_add fwd; ns_add srv
veth cli eth0 fwd lan0
veth fwd srv0 srv eth0
ip -n "$(nsname fwd)" link add up0 type veth peer name up0p  # the uplink: unused here
ip -n "$(nsname fwd)" link set up0 up; ip -n "$(nsname fwd)" link set up0p up
ip -n "$(nsname cli)" addr add 10.1.0.2/24 dev eth0
ip -n "$(nsname cli)" route add default via 10.1.0.1
ip -n "$(nsname cli)" addr add 2001:db8:1::2/64 dev eth0 nodad
ip -n "$(nsname cli)" -6 route add default via 2001:db8:1::1
ip -n "$(nsname srv)" addr add 10.2.0.2/24 dev eth0
ip -n "$(nsname srv)" route add default via 10.2.0.1
ip -n "$(nsname srv)" addr add 2001:db8:2::2/64 dev eth0 nodad
ip -n "$(nsname srv)" -6 route add default via 2001:db8:2::1
for x in "cli eth0" "fwd lan0" "fwd srv0" "srv eth0"; do
  set -- $x
  inns "$1" ethtool -K "$2" tso off gso off gro off >/dev/null 2>&1 || true
done
# addresses (gateway6 2001:db8:N::1), forwarding sysctls and the firewall from bulkhead apply
inns fwd "$BULKHEAD" -c "$W/a.toml" --state-dir "$W/st2" apply >&2
inns fwd sysctl -qn net.ipv4.ip_forward | grep -qx 1 || die "apply did not enable IPv4 forwarding"
inns fwd sysctl -qn net.ipv6.conf.all.forwarding | grep -qx 1 || die "apply did not enable IPv6 forwarding"
for _ in $(seq 50); do
  inns cli ip -6 addr show dev eth0 tentative | grep -q inet6 || inns fwd ip -6 addr show tentative | grep -q inet6 || break
  sleep 0.1
done

inns srv iperf3 -s -D -I "$W/iperf3.pid" --logfile "$W/iperf3.log"
sleep 0.5; BH_PIDS+=("$(cat "$W/iperf3.pid")")

tcp() { inns cli iperf3 -c "$1" -t "$SECS" -J > "$W/tcp.json"
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.3f" % (j["end"]["sum_received"]["bits_per_second"]/1e9))' "$W/tcp.json"; }
udp() { inns cli iperf3 -c "$1" -u -b 0 -l 64 -t "$SECS" -J > "$W/udp.json"
  python3 -c '
import json,sys
j=json.load(open(sys.argv[1])); s=j["end"]["sum"]
print("%.1f" % ((s["packets"]-s["lost_packets"])/s["seconds"]/1e3))' "$W/udp.json"; }

declare -A DST=([v4]=10.2.0.2 [v6]=2001:db8:2::2)
for rep in $(seq "$REPS"); do
  for f in v4 v6; do
    add "tcp_$f" "$(tcp "${DST[$f]}")"; add "udp_$f" "$(udp "${DST[$f]}")"
    log "throughput run $rep $f: tcp ${R[tcp_$f]}/ udp ${R[udp_$f]}"
  done
done
# the IPv6 flows crossed the gateway with the dual-stack table loaded (its IPv6 sets there)
inns fwd nft list table inet bulkhead > "$W/table.nft"
grep -q 'type ipv6_addr' "$W/table.nft" || die "the loaded table has no IPv6 sets"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
med() { printf '%s\n' ${R[$1]} | median; }
rng() { printf '%s\n' ${R[$1]} | range; }
pct() { awk -v a="$(med "$1")" -v b="$(med "$2")" 'BEGIN{printf "%.0f %%", 100*a/b}'; }
echo "dual-stack benchmark: $ELEMENTS IPv4 + $ELEMENTS IPv6 group elements, $RULES rules, $(wc -c < "$W/a.nft") bytes of nft text; $REPS runs"
printf '%-44s %s\n' \
  "cold load: nft -f (ms)" "$(rng cold_nft)" \
  "cold load: bulkhead apply (ms)" "$(rng cold_apply)" \
  "  ratio apply / nft -f (medians)" "$(ratio "$(med cold_apply)" "$(med cold_nft)")x" \
  "replace: nft -f (ms)" "$(rng repl_nft)" \
  "replace: bulkhead apply (ms)" "$(rng repl_apply)" \
  "  ratio apply / nft -f (medians)" "$(ratio "$(med repl_apply)" "$(med repl_nft)")x"
echo "forwarding through the gateway with this policy, ${SECS}s per iperf3 run, offloads off"
printf '%-44s %-34s %s\n' "family" "TCP Gbit/s" "UDP 64 B kpps delivered"
printf '%-44s %-34s %s\n' "IPv4" "$(rng tcp_v4)" "$(rng udp_v4)"
printf '%-44s %-34s %s\n' "IPv6" "$(rng tcp_v6)" "$(rng udp_v6)"
printf '%-44s %-34s %s\n' "IPv6 / IPv4 (medians)" "$(pct tcp_v6 tcp_v4)" "$(pct udp_v6 udp_v4)"
