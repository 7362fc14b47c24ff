#!/usr/bin/env bash
# bench/dhcp.sh: DHCP lease rate and CPU per lease - Bulkhead against Kea and dnsmasq.
#
#   sudo bench/dhcp.sh                       everything below, once
#   SERVERS="bulkhead kea" STORES=tmpfs DUR=10 RATES="1000 2000 4000" bench/dhcp.sh
#
# Recipe (docs: ISC's method): perfdhcp (kea-admin) always acts as a relay - it sends from
# 10.0.0.2:67 with giaddr 10.0.0.2 to the server at 10.0.0.1:67 and wants the replies back at
# giaddr:67 - so server and client each get their own namespace (bhb-<id>-dsrv, -dcli) joined
# by one veth pair; the server is pinned to CPU 1 and perfdhcp to CPU 0. Every server serves
# 10.0.0.0/8 (pool 10.1.0.0-10.254.255.254) on veth-srv:
#   bulkhead - `bulkhead run` with one segment on veth-srv (its own DHCP server, leases
#              fsync'd before the ACK), state dir on disk (ext4) or tmpfs;
#   kea      - kea-dhcp4 2.2, memfile (no fsync), multi-threading on (2 threads);
#   dnsmasq  - dnsmasq --no-ping --dhcp-lease-max=10000000 --quiet-dhcp.
# Sweep: each rate step gets a freshly started server with an empty lease store and one
# DUR-second perfdhcp run with fresh clients (-R 1000000); the sweep stops at the first step
# above 2.5 % drops. Reported: the best rate (4-way exchanges/s = leases/s) of a step with
# <= 2.5 % drops. Then, at FIXED leases/s for DUR s: the server's CPU time (utime+stime from
# /proc/PID/stat, with its waited-for children) per 1,000 leases, and its VmRSS right after (FIXED x DUR leases: 10,000 by
# default). STORES: disk tmpfs (where the lease file lives).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
need perfdhcp kea-admin
need kea-dhcp4 kea-dhcp4-server
need dnsmasq dnsmasq-base
bulkhead_bin

SERVERS=${SERVERS:-bulkhead kea dnsmasq}
STORES=${STORES:-disk tmpfs}
DUR=${DUR:-10}
RATES=${RATES:-250 500 1000 1500 2000 2500 3000 4000 5000 6000 8000 10000 12000}
DNSMASQ_RATES=${DNSMASQ_RATES:-50 100 150 200 250 300 400 500}
FIXED=${FIXED:-1000}
MAXDROP=${MAXDROP:-2.5}
HZ=$(getconf CLK_TCK)
SHM=$(mktemp -d "/dev/shm/bhb-$BHID.XXXX")
trap 'rm -rf "$SHM"; bh_cleanup' EXIT

dhcp_rig

SRVPID=
start_server() { # SERVER STORE -> SRVPID; empty lease store, waits until it serves
  local s=$1 dir
  case $2 in disk) dir=$W/$s ;; tmpfs) dir=$SHM/$s ;; esac
  rm -rf "$dir"; mkdir -p "$dir"
  case $s in
    bulkhead)
      cat > "$dir.toml" <<TOML
[system]
hostname = "bench-dhcp"
[uplink]
interface = "up0"
address = "198.18.0.2/30"
[segments.lan]
interface = "veth-srv"
subnet = "10.0.0.0/8"
gateway = "10.0.0.1"
management = true
[segments.lan.dhcp]
ranges = ["10.1.0.0-10.254.255.254"]
lease_time = 4000
relays = ["10.0.0.2"]
TOML
      bg_in dsrv taskset -c 1 "$BULKHEAD" -c "$dir.toml" --state-dir "$dir" run > "$dir.log" 2>&1
      SRVPID=$BGPID
      for _ in $(seq 300); do [ -e "$dir/ready" ] && break; sleep 0.1; done
      [ -e "$dir/ready" ] || { tail "$dir.log" >&2; die "bulkhead run did not get ready"; } ;;
    kea)
      kea_start "$dir"
      SRVPID=$BGPID
      for _ in $(seq 100); do inns dsrv ss -lun | grep -q '10.0.0.1:67' && break; sleep 0.1; done ;;
    dnsmasq)
      bg_in dsrv taskset -c 1 dnsmasq --no-daemon --conf-file=/dev/null --port=0 \
        --interface=veth-srv --user=root --no-ping --quiet-dhcp \
        --dhcp-range=10.1.0.0,10.254.255.254,255.0.0.0,12h --dhcp-lease-max=10000000 \
        --dhcp-leasefile="$dir/dnsmasq.leases" --pid-file="$dir/dnsmasq.pid" \
        --log-facility="$dir/dnsmasq.log" > "$dir.log" 2>&1
      SRVPID=$BGPID
      for _ in $(seq 100); do inns dsrv ss -lun | grep -q ':67 ' && break; sleep 0.1; done ;;
  esac
  sleep 0.3
  kill -0 "$SRVPID" 2>/dev/null || { tail "$dir.log" >&2; die "$s did not start"; }
}
stop_server() { kill -TERM "$SRVPID" 2>/dev/null || true; wait "$SRVPID" 2>/dev/null || true; SRVPID=; }
# utime+stime of the server and of the children it waited for (Bulkhead runs nft)
cpu_ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }

# perf RATE -> "leases_per_s drop_pct" from one DUR-second perfdhcp run
perf() {
  inns dcli taskset -c 0 perfdhcp -4 -l veth-cli -r "$1" -R 1000000 -p "$DUR" 10.0.0.1 > "$W/perf.out" 2>&1 || true
  awk '
    /Statistics for: DISCOVER-OFFER/ {x=1}
    /Statistics for: REQUEST-ACK/ {x=2}
    /^sent packets:/ {sent[x]=$3+0}
    /^received packets:/ {recv[x]=$3+0}
    /^Rate:/ {rate=$2+0}
    END { # exchanges that did not complete: DISCOVERs sent without an ACK back
          d = sent[1] > 0 ? 100 * (sent[1] - recv[2]) / sent[1] : 100;
          if (d < 0) d = 0; printf "%.0f %.2f\n", rate, d }' "$W/perf.out"
}

declare -A BEST CPU FIXRATE RSS
for store in $STORES; do
  for s in $SERVERS; do
    best=0
    rates=$RATES; [ "$s" = dnsmasq ] && rates=$DNSMASQ_RATES
    for r in $rates; do
      start_server "$s" "$store"
      read -r got drop < <(perf "$r")
      stop_server
      log "$s/$store: offered $r/s -> $got leases/s, $drop % dropped"
      if awk -v d="$drop" -v m="$MAXDROP" 'BEGIN{exit !(d > m)}'; then break; fi
      [ "$got" -gt "$best" ] && best=$got
    done
    BEST[$s/$store]=$best
    start_server "$s" "$store"
    c0=$(cpu_ticks "$SRVPID")
    read -r got drop < <(perf "$FIXED")
    c1=$(cpu_ticks "$SRVPID")
    RSS[$s/$store]=$(awk '/^VmRSS/{printf "%.1f", $2/1024}' "/proc/$SRVPID/status")
    stop_server
    leases=$(awk -v r="$got" -v t="$DUR" 'BEGIN{print r*t}')
    CPU[$s/$store]=$(awk -v c=$((c1 - c0)) -v hz="$HZ" -v n="$leases" 'BEGIN{ if (n>0) printf "%.0f", c*1000/hz/(n/1000); else print "n/a" }')
    FIXRATE[$s/$store]="$got/s, $drop % dropped"
    log "$s/$store: best ${BEST[$s/$store]} leases/s; at $FIXED/s: ${CPU[$s/$store]} CPU ms per 1,000 leases (${FIXRATE[$s/$store]})"
  done
done

echo "DHCP benchmark: perfdhcp relay mode, fresh clients, ${DUR}s per step, max drops $MAXDROP %"
printf '%-10s %-6s %-22s %-22s %-12s %s\n' server store "leases/s (<=$MAXDROP%)" "CPU ms/1,000 leases" "RSS MiB" "(fixed run: $FIXED/s offered for ${DUR}s; got)"
for store in $STORES; do for s in $SERVERS; do
  printf '%-10s %-6s %-22s %-22s %-12s %s\n' "$s" "$store" "${BEST[$s/$store]}" "${CPU[$s/$store]}" "${RSS[$s/$store]}" "${FIXRATE[$s/$store]}"
done; done
for store in $STORES; do
  if [ -n "${BEST[bulkhead/$store]:-}" ] && [ "${BEST[kea/$store]:-0}" -gt 0 ]; then
    awk -v b="${BEST[bulkhead/$store]}" -v k="${BEST[kea/$store]}" -v cb="${CPU[bulkhead/$store]}" -v ck="${CPU[kea/$store]}" -v st="$store" \
      'BEGIN{printf "bulkhead/kea (%s): lease rate %.2fx, CPU per lease %.2fx (goal <= 0.8x on disk)\n", st, b/k, cb/ck}'
  fi
  if [ -n "${BEST[bulkhead/$store]:-}" ] && [ -n "${BEST[dnsmasq/$store]:-}" ] && [ "${BEST[dnsmasq/$store]}" -gt 0 ]; then
    awk -v b="${BEST[bulkhead/$store]}" -v d="${BEST[dnsmasq/$store]}" -v st="$store" 'BEGIN{printf "bulkhead/dnsmasq (%s): lease rate %.2fx\n", st, b/d}'
  fi
done
