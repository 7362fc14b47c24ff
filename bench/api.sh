#!/usr/bin/env bash
# bench/api.sh: the management API under load, and what it costs DHCP.
#
#   sudo bench/api.sh                 DUR=10 FIXED=500 CONC=50
#
# One `bulkhead run` (release build) in namespace bhb-<id>-gw serves one segment on veth-srv
# (198.19.0.1/16, the management segment, DHCP for relayed clients, api_port 8443); the
# client namespace bhb-<id>-cli (198.19.0.2) runs the load:
#   1. wrk, CONC connections (kept alive) for DUR s on GET /api/v1/status, then on
#      GET /metrics: requests/s and p99 latency;
#   2. perfdhcp (relay mode, fresh clients) at FIXED DISCOVERs/s for DUR s: leases/s without
#      a scrape, then the same with a scrape of /metrics every second (as Prometheus would),
#      in the same run;
#   3. the daemon's VmRSS and VmHWM (peak) after all of it.
# The gateway is pinned to CPU 1, the load to CPU 0.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
need wrk wrk
need perfdhcp kea-admin
need curl curl
bulkhead_bin

DUR=${DUR:-10}
FIXED=${FIXED:-500}
CONC=${CONC:-50}
API=https://198.19.0.1:8443

ns_add gw; ns_add cli
veth gw veth-srv cli veth-cli
ip -n "$(nsname cli)" addr add 198.19.0.2/16 dev veth-cli
ip -n "$(nsname gw)" link add up0 type veth peer name up0p
ip -n "$(nsname gw)" link set up0 up; ip -n "$(nsname gw)" link set up0p up

dir=$W/gw
mkdir -p "$dir"
cat > "$dir.toml" <<TOML
[system]
hostname = "bench-api"
[uplink]
interface = "up0"
address = "198.18.0.2/30"
[segments.mgmt]
interface = "veth-srv"
subnet = "198.19.0.0/16"
gateway = "198.19.0.1"
management = true
[segments.mgmt.dhcp]
ranges = ["198.19.1.0-198.19.255.254"]
lease_time = 4000
relays = ["198.19.0.2"]
[management]
api_port = 8443
TOML
bg_in gw taskset -c 1 "$BULKHEAD" -c "$dir.toml" --state-dir "$dir" run > "$dir.log" 2>&1
SRVPID=$BGPID
for _ in $(seq 300); do grep -q "management API on" "$dir.log" 2>/dev/null && break; sleep 0.1; done
grep -q "management API on" "$dir.log" || { tail "$dir.log" >&2; die "the API did not start"; }
TOKEN=$(inns gw "$BULKHEAD" -c "$dir.toml" --state-dir "$dir" api-token add bench --role read)
log "$(grep 'management API on' "$dir.log")"

# wrk PATH -> "requests/s p99"
load() {
  inns cli taskset -c 0 wrk -t2 -c"$CONC" -d"${DUR}s" --latency \
    -H "Authorization: Bearer $TOKEN" "$API$1" > "$W/wrk.out" 2>&1 || true
  awk '/^Requests\/sec:/ {r=$2} /^ +99%/ {p=$2} /Non-2xx/ {bad=$NF}
       END { printf "%s %s%s\n", r, p, (bad ? " (non-2xx: " bad ")" : "") }' "$W/wrk.out"
}

# perfdhcp at FIXED/s for DUR s -> "leases/s drops%"
perf() {
  inns cli taskset -c 0 perfdhcp -4 -l veth-cli -r "$FIXED" -R 1000000 -p "$DUR" 198.19.0.1 \
    > "$W/perf.out" 2>&1 || true
  awk -v dur="$DUR" '
    /Statistics for: DISCOVER-OFFER/ {x=1}
    /Statistics for: REQUEST-ACK/ {x=2}
    /^sent packets:/ {sent[x]=$3+0}
    /^received packets:/ {recv[x]=$3+0}
    END { d = sent[1] > 0 ? 100 * (sent[1] - recv[2]) / sent[1] : 100;
          printf "%.0f %.1f\n", recv[2] / dur, d }' "$W/perf.out"
}

echo "management API benchmark: ${CONC} connections, ${DUR}s per run; DHCP at ${FIXED}/s offered"
read -r st_rps st_p99 st_rest <<<"$(load /api/v1/status)"
printf '%-34s %12s req/s   p99 %s %s\n' "GET /api/v1/status" "$st_rps" "$st_p99" "${st_rest:-}"
read -r m_rps m_p99 m_rest <<<"$(load /metrics)"
printf '%-34s %12s req/s   p99 %s %s\n' "GET /metrics" "$m_rps" "$m_p99" "${m_rest:-}"

read -r l0 d0 <<<"$(perf)"
printf '%-34s %12s leases/s (%s %% not completed)\n' "DHCP, no scrape" "$l0" "$d0"
# a scrape of /metrics every second, as Prometheus would, during the same DHCP load
(
  while :; do
    inns cli curl -sk -o /dev/null -H "Authorization: Bearer $TOKEN" "$API/metrics" || true
    sleep 1
  done
) &
SCRAPER=$!
BH_PIDS+=("$SCRAPER")
read -r l1 d1 <<<"$(perf)"
kill "$SCRAPER" 2>/dev/null || true
printf '%-34s %12s leases/s (%s %% not completed)\n' "DHCP, /metrics scraped every 1 s" "$l1" "$d1"

rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$SRVPID/status")
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$SRVPID/status")
printf '%-34s %12s MiB (peak %s MiB)\n' "supervisor RSS, API on" \
  "$(awk -v k="$rss" 'BEGIN{printf "%.1f", k/1024}')" "$(awk -v k="$hwm" 'BEGIN{printf "%.1f", k/1024}')"
if [ "$hwm" -gt $((20 * 1024)) ]; then
  echo "FAIL: the supervisor's peak RSS is above 20 MiB"
  exit 1
fi
