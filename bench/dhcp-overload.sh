#!/usr/bin/env bash
# bench/dhcp-overload.sh: does Bulkhead's DHCP server recover after an overload?
#
#   sudo bench/dhcp-overload.sh        (OVER=6000 leases/s offered for 5 s; then 1000/s)
#
# Same rig as bench/dhcp.sh (bulkhead run, lease journal on tmpfs, perfdhcp relay mode).
# Two fresh servers:
#   A: 1,000/s for 10 s, then 1,000/s for 10 s again (10,000 leases already bound);
#   B: OVER/s for 5 s (drops: offers left without a REQUEST), then 1,000/s for 10 s.
# For each second phase: leases/s, % not completed, server CPU ms per 1,000 leases.
# Kea runs the same two sequences as the peer.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
need perfdhcp kea-admin
need kea-dhcp4 kea-dhcp4-server
bulkhead_bin
OVER=${OVER:-6000}
HZ=$(getconf CLK_TCK)
SHM=$(mktemp -d "/dev/shm/bhb-$BHID.XXXX")
trap 'rm -rf "$SHM"; bh_cleanup' EXIT
dhcp_rig

start() { # bulkhead|kea
  local dir=$SHM/$1; rm -rf "$dir"; mkdir -p "$dir"
  if [ "$1" = bulkhead ]; then
    printf '%s\n' '[uplink]' 'interface = "up0"' 'address = "198.18.0.2/30"' '[segments.lan]' \
      'interface = "veth-srv"' 'subnet = "10.0.0.0/8"' 'gateway = "10.0.0.1"' 'management = true' \
      '[segments.lan.dhcp]' 'ranges = ["10.1.0.0-10.254.255.254"]' 'lease_time = 4000' \
      'relays = ["10.0.0.2"]' > "$dir.toml"
    bg_in dsrv taskset -c 1 "$BULKHEAD" -c "$dir.toml" --state-dir "$dir" run > "$dir.log" 2>&1
    for _ in $(seq 300); do [ -e "$dir/ready" ] && break; sleep 0.1; done
  else
    kea_start "$dir"
    for _ in $(seq 100); do inns dsrv ss -lun | grep -q '10.0.0.1:67' && break; sleep 0.1; done
  fi
  SRV=$BGPID; sleep 0.3
}
stop() { kill -TERM "$SRV"; wait "$SRV" 2>/dev/null || true; }
ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$SRV/stat"; }
perf() { # RATE SECS -> "rate drop%"
  inns dcli taskset -c 0 perfdhcp -4 -l veth-cli -r "$1" -R 1000000 -p "$2" 10.0.0.1 > "$W/perf.out" 2>&1 || true
  awk '/Statistics for: DISCOVER-OFFER/{x=1} /Statistics for: REQUEST-ACK/{x=2}
       /^sent packets:/{s[x]=$3} /^received packets:/{r[x]=$3} /^Rate:/{rate=$2}
       END{printf "%.0f %.2f\n", rate, (s[1] > 0 ? 100*(s[1]-r[2])/s[1] : 100)}' "$W/perf.out"
}
phase2() { # label: 1000/s for 10 s with CPU accounting
  local c0 c1 got drop
  c0=$(ticks); read -r got drop < <(perf 1000 10); c1=$(ticks)
  printf '%-10s %-44s %8s/s %7s %% %10s\n' "$s" "$1" "$got" "$drop" \
    "$(awk -v c=$((c1 - c0)) -v hz="$HZ" -v n="$got" 'BEGIN{printf "%.0f", c*1000/hz/(n*10/1000)}')"
}
printf '%-10s %-44s %10s %9s %10s\n' server "second phase (1,000/s offered, 10 s)" leases "dropped" "CPU ms/1k"
for s in bulkhead kea; do
  start "$s"; read -r g1 d1 < <(perf 1000 10); phase2 "after 1,000/s x 10 s ($g1/s, $d1 % dropped)"; stop
  start "$s"; read -r g1 d1 < <(perf "$OVER" 5); phase2 "after $OVER/s x 5 s ($g1/s, $d1 % dropped)"; stop
done
