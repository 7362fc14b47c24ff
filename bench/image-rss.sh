#!/usr/bin/env bash
# bench/image-rss.sh: the supervisor's memory in the appliance image over many `status`
# calls with ~10,000 leases, and which mapping grows.
#
#   sudo image/build --test && sudo bench/image-rss.sh     (LEASES=10000, CALLS=60)
#
# The test image boots (ELF kernel, TCG, 1 vCPU) with its second NIC on a tap in the
# namespace bhb-<id>-vmh; the guest switches (SIGHUP) to one DHCP segment on that NIC with a
# /16 pool and perfdhcp takes LEASES leases from it (relay mode, fresh clients, as
# bench/image.sh does; every round polls `bulkhead status`). Then, for each variant in
# VARIANTS, `bulkhead run` is (re)started in the guest with that environment and CALLS
# `bulkhead status` calls run inside the guest; after every 10 calls the guest records VmRSS,
# /proc/PID/smaps_rollup and every mapping of the process with more than 256 kB resident.
#   init     the daemon as the init started it (no restart)
#   mmapthr  GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072 (fixed threshold: glibc no
#            longer raises it when a large buffer is freed)
#   arena2   MALLOC_ARENA_MAX=2
# Each restart reads the same lease journal (below the store's compaction threshold).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
need qemu-system-x86_64 qemu-system-x86
need perfdhcp kea-admin
OUT=${OUT:-$ROOT/image/out-test}
LEASES=${LEASES:-10000}
CALLS=${CALLS:-60}
VMRATE=${VMRATE:-50}
VARIANTS=${VARIANTS:-init mmapthr arena2}
[ -f "$OUT/vmlinux" ] && [ -f "$OUT/initramfs.cpio.gz" ] || die "missing $OUT/vmlinux: run image/build --test first"

ns_add vmh
TAP="bhb${BHID}t"
CON=$W/vm.console CTL=$W/vm.ctl; : > "$CON"
ip netns exec "$(nsname vmh)" "$ROOT/image/run" --out "$OUT" --mode elf --mem 512 --watchdog none \
  --uplink "tap:$TAP" --serial "file:$CON" --ctl "$CTL" --timeout 3600 --no-reboot > "$W/qemu.log" 2>&1 &
QPID=$!; BH_PIDS+=("$QPID")
g() { python3 "$ROOT/tests/vm/guestctl.py" --timeout "${GT:-120}" "$CTL" "$@"; }
for _ in $(seq 900); do grep -q '^bulkhead: ready' "$CON" && break
  kill -0 "$QPID" 2>/dev/null || { tail -20 "$CON" >&2; die "qemu exited"; }; sleep 0.2; done
grep -q '^bulkhead: ready' "$CON" || die "the guest did not get ready"
python3 "$ROOT/tests/vm/guestctl.py" --wait 120 "$CTL" true >/dev/null

ip -n "$(nsname vmh)" link set "$TAP" up
ip -n "$(nsname vmh)" addr add 10.0.0.2/16 dev "$TAP"
GT=300 g - <<'SCRIPT'
cat > /etc/bulkhead/bulkhead.toml <<'TOML'
# bench/image-rss.sh: one DHCP segment on the second NIC, large enough for the lease test
[system]
hostname = "bench"
state_dir = "/var/lib/bulkhead"
[uplink]
interface = "eth0"
address = "198.18.0.2/30"
[segments.lan]
interface = "eth1"
subnet = "10.0.0.0/16"
gateway = "10.0.0.1"
management = true
[segments.lan.dhcp]
ranges = ["10.0.1.0-10.0.255.254"]
lease_time = "12h"
relays = ["10.0.0.2"]
TOML
bulkhead -c /etc/bulkhead/bulkhead.toml check
SCRIPT
g 'kill -HUP $(cat /run/bulkhead/bulkhead.pid)' >/dev/null
for _ in $(seq 600); do grep -q 'DHCP serving segment segment=lan interface=eth1' "$CON" && break; sleep 0.2; done
rss() { GT=90 g 'p=$(cat /run/bulkhead/bulkhead.pid); awk "/^VmRSS/{print \$2}" /proc/$p/status' 2>/dev/null | tr -d '\r' | tail -1; }
log "guest serves on eth1; obtaining $LEASES leases with perfdhcp; VmRSS after boot $(rss) kB"
got=0 t0=$SECONDS round=0
while [ "$got" -lt "$LEASES" ] && [ $((SECONDS - t0)) -lt 1200 ]; do
  round=$((round + 1)); left=$((LEASES - got + 20))
  ip netns exec "$(nsname vmh)" perfdhcp -4 -l "$TAP" -r "$VMRATE" -R 100000000 -n "$left" -p 600 \
    -b "mac=02:42:$(printf %02x "$round"):00:00:00" 10.0.0.1 > "$W/perf-vm.out" 2>&1 || true
  sleep 2
  got=$(GT=300 g 'bulkhead status --format json' | python3 -c '
import json, sys
def find(v):
    if isinstance(v, dict):
        if isinstance(v.get("dhcp"), dict) and "leases" in v["dhcp"]: return v["dhcp"]["leases"]
        for x in v.values():
            r = find(x)
            if r is not None: return r
print(find(json.load(sys.stdin)) or 0)' 2>/dev/null || echo 0)
  log "round $round: leases bound in the guest: $got; VmRSS $(rss) kB; journal $(g 'wc -c < /var/lib/bulkhead/dhcp/leases.journal' | tr -d '\r') bytes"
done

# the status loop, inside the guest: VmRSS, smaps_rollup and the mappings > 256 kB resident
# after every 10 calls
cat > "$W/loop.sh" <<EOF2
p=\$(cat /run/bulkhead/bulkhead.pid)
snap() {
  echo "== after \$1 calls: \$(awk '/^VmRSS/{print \$2" kB"}' /proc/\$p/status) threads \$(ls /proc/\$p/task | wc -l)"
  grep -E '^(Rss|Anonymous|Private_Dirty)' /proc/\$p/smaps_rollup | tr '\n' ' '; echo
  awk '/^[0-9a-f]+-[0-9a-f]+ /{m=\$1" "\$6} /^Rss:/{if (\$2>256) print "  map " m " Rss " \$2 " kB"}' /proc/\$p/smaps
}
snap 0
i=0
while [ \$i -lt $CALLS ]; do
  i=\$((i + 1))
  bulkhead status >/dev/null 2>&1 || echo "status \$i failed"
  [ \$((i % 10)) = 0 ] && snap \$i
done
echo "journal \$(wc -c < /var/lib/bulkhead/dhcp/leases.journal) bytes"
EOF2
# restart VAR=VALUE...: bulkhead run without the init's supervise loop, with that environment
restart() {
  GT=300 g - >/dev/null <<EOF3
p=\$(cat /run/bulkhead/bulkhead.pid)
pp=\$(awk '/^PPid/{print \$2}' /proc/\$p/status)
if [ "\$(cat /run/rssbench 2>/dev/null)" != own ]; then kill -TERM \$pp; else kill -TERM \$p; fi
while kill -0 \$p 2>/dev/null; do sleep 0.2; done
rm -f /var/lib/bulkhead/ready
echo own > /run/rssbench
env $* BULKHEAD_CONFIG=/etc/bulkhead/bulkhead.toml bulkhead run --config /etc/bulkhead/bulkhead.toml > /tmp/run.log 2>&1 &
echo \$! > /run/bulkhead/bulkhead.pid
for i in \$(seq 600); do [ -f /var/lib/bulkhead/ready ] && break; sleep 0.5; done
sleep 3
EOF3
}
for v in $VARIANTS; do
  case $v in
    init) ;;
    mmapthr) restart GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072 ;;
    arena2) restart MALLOC_ARENA_MAX=2 ;;
    plain) restart ;;
    *) die "unknown variant $v" ;;
  esac
  log "variant $v: $CALLS status calls in the guest"
  GT=3000 g - < "$W/loop.sh" | tr -d '\r' > "$W/loop-$v.txt" || true
  echo "=== variant $v ($got leases bound)"
  cat "$W/loop-$v.txt"
done
g poweroff >/dev/null 2>&1 || true
for _ in $(seq 100); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.1; done
