#!/usr/bin/env bash
# bench/dhcp-profile.sh: where Bulkhead's DHCP server spends its CPU (perf, no peer).
#
#   sudo bench/dhcp-profile.sh [disk|tmpfs]     (RATE=1000 leases/s for 10 s)
#   OVER=6000 sudo bench/dhcp-profile.sh tmpfs  (the same after 5 s at OVER leases/s)
#   STRACE=1 sudo bench/dhcp-profile.sh disk    (strace -c -f instead of perf: syscalls per lease)
#
# The rig of bench/dhcp.sh with `bulkhead run` only; `perf record` samples the server for
# 8 s of the run; prints the top of `perf report` by DSO and by symbol.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
need perfdhcp kea-admin
need perf linux-perf
bulkhead_bin
RATE=${RATE:-1000} STORE=${1:-disk}
SHM=$(mktemp -d "/dev/shm/bhb-$BHID.XXXX")
trap 'rm -rf "$SHM"; bh_cleanup' EXIT
dhcp_rig
dir=$W/bulkhead; [ "$STORE" = tmpfs ] && dir=$SHM/bulkhead
mkdir -p "$dir"
printf '%s\n' '[uplink]' 'interface = "up0"' 'address = "198.18.0.2/30"' '[segments.lan]' \
  'interface = "veth-srv"' 'subnet = "10.0.0.0/8"' 'gateway = "10.0.0.1"' 'management = true' \
  '[segments.lan.dhcp]' 'ranges = ["10.1.0.0-10.254.255.254"]' 'lease_time = 4000' \
  'relays = ["10.0.0.2"]' > "$W/bh.toml"
bg_in dsrv taskset -c 1 "$BULKHEAD" -c "$W/bh.toml" --state-dir "$dir" run > "$W/bh.log" 2>&1
SRV=$BGPID
for _ in $(seq 300); do [ -e "$dir/ready" ] && break; sleep 0.1; done
if [ -n "${OVER:-}" ]; then # first OVER leases/s for 5 s, as bench/dhcp-overload.sh does
  ip netns exec "$(nsname dcli)" taskset -c 0 perfdhcp -4 -l veth-cli -r "$OVER" -R 1000000 -p 5 10.0.0.1 > "$W/over.out" 2>&1 || true
fi
bg_in dcli taskset -c 0 perfdhcp -4 -l veth-cli -r "$RATE" -R 1000000 -p 10 10.0.0.1 > "$W/perf.out" 2>&1
sleep 1
if [ "${STRACE:-0}" = 1 ]; then
  need strace strace
  # 8 s at RATE leases/s; strace slows every syscall, so perfdhcp may get fewer of them
  timeout -s INT 8 strace ${STRACE_OPTS:--c} -f -o "$W/strace.out" -p "$SRV" 2>/dev/null || true
  wait "$BGPID" 2>/dev/null || true
  grep -E '^Rate|^num of (sent|received)' "$W/perf.out"
  echo "--- syscalls in 8 s (about $((RATE * 8)) leases offered)"
  head -25 "$W/strace.out"
  exit 0
fi
perf record -q -F 999 -g -p "$SRV" -o "$W/perf.data" -- sleep 8 2>/dev/null
wait "$BGPID" 2>/dev/null || true
grep -E '^Rate' "$W/perf.out"
echo "--- by DSO"
perf report -i "$W/perf.data" --stdio --no-children --sort dso 2>/dev/null | grep -E '^ +[0-9]' | head -8
echo "--- by symbol"
perf report -i "$W/perf.data" --stdio --no-children --sort sym 2>/dev/null | grep -E '^ +[0-9]' | head -25
