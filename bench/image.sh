#!/usr/bin/env bash
# bench/image.sh: the appliance image - boot time under TCG, sizes, the supervisor's memory.
#
#   sudo image/build --test && sudo bench/image.sh      (REPS=3 boots; LEASES=10000)
#   (the test image in image/out-test: the measurements go through its control channel)
#
# 1. Sizes of the image: initramfs, disk.img (allocated), disk.qcow2, and disk.img
#    compressed with gzip -9 and xz -9 (goal: disk image <= 32 MiB compressed).
# 2. Boot: REPS boots of the ELF kernel (image/run --mode elf, TCG, 1 vCPU, no disk) with the
#    shipped config. Timed from qemu's start to the console line `bulkhead: ready`, which
#    the supervisor prints once the firewall is loaded and DHCP serves on every segment
#    (goal <= 5 s). The same run also times qemu start -> the init's first line (the kernel's
#    part) and, for reference, one boot of the bzImage.
# 3. Memory: VmRSS of the `bulkhead run` process in the guest (read over the control
#    channel, tests/vm/guestctl.py) after boot, and after LEASES leases: the guest is
#    switched (SIGHUP) to a config whose one segment sits on its second NIC (eth1, a tap in
#    the namespace bhb-<id>-vmh) with a /16 pool, and perfdhcp in that namespace obtains the
#    leases from the guest's own DHCP server (relay mode, fresh clients). Goal <= 20 MiB.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
need qemu-system-x86_64 qemu-system-x86
need perfdhcp kea-admin
OUT=${OUT:-$ROOT/image/out-test}
LEASES=${LEASES:-10000}
# leases/s offered to the guest: a TCG guest serves ~70/s at best; above that it drops and
# the dropped exchanges' outstanding offers slow it down further (see docs/benchmarks.md)
VMRATE=${VMRATE:-50}
for f in vmlinux vmlinuz initramfs.cpio.gz disk.img disk.qcow2; do
  [ -f "$OUT/$f" ] || die "missing $OUT/$f: run image/build first"
done
mib() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1048576}'; }

# BOOT_ONLY=1: only the boots (REPS of them, default 5 here), with the guest's own clock at
# each step of the init: kernel start -> init's first line -> modules loaded -> supervisor
# started (the init's uptime stamps) -> `bulkhead: ready` (qemu start, as above)
BOOT_ONLY=${BOOT_ONLY:-0}
[ "$BOOT_ONLY" = 1 ] && REPS=${BOOT_REPS:-5}

# ---- 1. sizes
if [ "$BOOT_ONLY" != 1 ]; then
log "compressing disk.img (gzip -9, xz -9)"
gz=$(gzip -9 -c "$OUT/disk.img" | wc -c)
xzs=$(xz -9 -T1 -c "$OUT/disk.img" | wc -c)
alloc=$(( $(stat -c %b "$OUT/disk.img") * $(stat -c %B "$OUT/disk.img") ))
fi

# ---- 2. boots
VM=0 QPID=
boot() { # MODE [image/run options] -> sets QPID, CON, T0
  VM=$((VM + 1)); CON=$W/vm$VM.console CTL=$W/vm$VM.ctl; : > "$CON"
  T0=$EPOCHREALTIME
  "$ROOT/image/run" --out "$OUT" --mode "$1" --serial "file:$CON" --ctl "$CTL" --timeout 600 --no-reboot "${@:2}" > "$W/vm$VM.qemu.log" 2>&1 &
  QPID=$!; BH_PIDS+=("$QPID")
}
boot_in_ns() { # NS MODE [options]: the same, qemu inside a namespace (its tap is created there)
  local ns; ns=$(nsname "$1"); shift
  VM=$((VM + 1)); CON=$W/vm$VM.console CTL=$W/vm$VM.ctl; : > "$CON"
  T0=$EPOCHREALTIME
  ip netns exec "$ns" "$ROOT/image/run" --out "$OUT" --mode "$1" --serial "file:$CON" --ctl "$CTL" --timeout 900 --no-reboot "${@:2}" > "$W/vm$VM.qemu.log" 2>&1 &
  QPID=$!; BH_PIDS+=("$QPID")
}
# wait_line REGEX SECS -> seconds since T0 when REGEX first appeared on the console
wait_line() {
  local t=$((SECONDS + $2))
  while [ $SECONDS -lt $t ]; do
    if grep -qE "$1" "$CON"; then awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}'; return 0; fi
    kill -0 "$QPID" 2>/dev/null || { tail -20 "$CON" >&2; die "qemu exited"; }
    sleep 0.02
  done
  tail -20 "$CON" >&2; die "no '$1' on the console within $2 s"
}
g() { python3 "$ROOT/tests/vm/guestctl.py" --timeout "${GT:-60}" "$CTL" "$@"; }
halt() { g poweroff >/dev/null 2>&1 || true
  for _ in $(seq 100); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.1; done
  kill -TERM "$QPID" 2>/dev/null || true; wait "$QPID" 2>/dev/null || true; }
# VmRSS (kB) of bulkhead run; a busy TCG guest can be slow to answer: three tries
rss() { local i v
  for i in 1 2 3; do
    v=$(GT=90 g 'p=$(cat /run/bulkhead/bulkhead.pid); awk "/^VmRSS/{print \$2}" /proc/$p/status' 2>/dev/null | tr -d '\r' | tail -1) || true
    [ -n "$v" ] && { echo "$v"; return 0; }
  done
  echo n/a; }

declare -A R
ns_add vmh
TAP="bhb${BHID}t"
# the guest's uptime in the init's line matching REGEX ("... at 1.23s")
stamp() { sed -n "s/^bulkhead-init: $1.* at \([0-9.]*\)s\r\{0,1\}\$/\1/p" "$CON" | head -1; }
for rep in $(seq "$REPS"); do
  if [ "$rep" -lt "$REPS" ] || [ "$BOOT_ONLY" = 1 ]; then boot elf; else boot_in_ns vmh elf --uplink "tap:$TAP"; fi
  # the init's first line: where the kernel hands over
  k=$(wait_line 'bulkhead-init:' 120); r=$(wait_line '^bulkhead: ready' 120)
  R[kernel]+="$k "; R[ready]+="$r "
  s1=$(stamp starting) s2=$(stamp loaded) s3=$(stamp 'supervisor started')
  R[g_init]+="${s1:-nan} "; R[g_mods]+="${s2:-nan} "; R[g_sup]+="${s3:-nan} "
  log "boot $rep: init's first line after $k s, bulkhead: ready after $r s; guest clock: init $s1 s, modules loaded $s2 s, supervisor started $s3 s"
  if [ "$BOOT_ONLY" = 1 ]; then halt; continue; fi
  python3 "$ROOT/tests/vm/guestctl.py" --wait 120 "$CTL" true || log "boot $rep: control channel slow to answer"
  R[rss_boot]+="$(rss) "
  [ "$rep" -lt "$REPS" ] && halt
done

if [ "$BOOT_ONLY" = 1 ]; then
  echo "image boots ($OUT): $REPS boots of the ELF kernel under TCG"
  for x in "kernel:qemu start -> init's first line (s)" "ready:qemu start -> bulkhead: ready (s)" \
    "g_init:guest clock at the init's first line (s)" "g_mods:guest clock, modules loaded (s)" \
    "g_sup:guest clock, supervisor started (s)"; do
    printf '%-48s %s\n' "${x#*:}" "$(printf '%s\n' ${R[${x%%:*}]} | range)"
  done
  exit 0
fi

# ---- 3. memory with LEASES leases (the last boot, still running)
ip -n "$(nsname vmh)" link set "$TAP" up
ip -n "$(nsname vmh)" addr add 10.0.0.2/16 dev "$TAP"
GT=120 g - <<'SCRIPT'
cat > /etc/bulkhead/bulkhead.toml <<'TOML'
# bench/image.sh: one DHCP segment on the second NIC, large enough for the lease test
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
wait_line 'DHCP serving segment segment=lan interface=eth1' 120 >/dev/null
log "guest serves on eth1; obtaining $LEASES leases with perfdhcp"
got=0 t0=$SECONDS round=0
while [ "$got" -lt "$LEASES" ] && [ $((SECONDS - t0)) -lt 900 ]; do
  # perfdhcp draws the same MAC sequence in every run: a new base MAC per round, or a
  # second round only renews the first round's clients
  round=$((round + 1)); left=$((LEASES - got + 20))
  ip netns exec "$(nsname vmh)" perfdhcp -4 -l "$TAP" -r "$VMRATE" -R 100000000 -n "$left" -p 600 \
    -b "mac=02:42:$(printf %02x "$round"):00:00:00" 10.0.0.1 > "$W/perf-vm.out" 2>&1 || true
  sleep 2
  got=$(g 'bulkhead status --format json' | python3 -c '
import json, sys
def find(v):
    if isinstance(v, dict):
        if isinstance(v.get("dhcp"), dict) and "leases" in v["dhcp"]: return v["dhcp"]["leases"]
        for x in v.values():
            r = find(x)
            if r is not None: return r
print(find(json.load(sys.stdin)) or 0)' 2>/dev/null || echo 0)
  log "leases bound in the guest: $got"
done
R[rss_leases]=$(rss)
halt

echo "image benchmark ($OUT)"
printf '%-48s %s\n' \
  "initramfs.cpio.gz" "$(mib "$(stat -c %s "$OUT/initramfs.cpio.gz")") MiB" \
  "vmlinux (ELF, test boots) / vmlinuz" "$(mib "$(stat -c %s "$OUT/vmlinux")") / $(mib "$(stat -c %s "$OUT/vmlinuz")") MiB" \
  "disk.img: size / allocated" "$(mib "$(stat -c %s "$OUT/disk.img")") / $(mib "$alloc") MiB" \
  "disk.qcow2 (compressed qcow2)" "$(mib "$(stat -c %s "$OUT/disk.qcow2")") MiB  (goal <= 32 MiB)" \
  "disk.img | gzip -9" "$(mib "$gz") MiB  (goal <= 32 MiB)" \
  "disk.img | xz -9" "$(mib "$xzs") MiB  (goal <= 32 MiB)" \
  "boot, qemu start -> init's first line (s)" "$(printf '%s\n' ${R[kernel]} | range)" \
  "boot, qemu start -> bulkhead: ready (s)" "$(printf '%s\n' ${R[ready]} | range)  (goal <= 5 s)" \
  "bulkhead run VmRSS after boot (MiB)" "$(printf '%s\n' ${R[rss_boot]} | awk '{printf "%.1f\n", $1/1024}' | range)  (goal <= 20 MiB)" \
  "bulkhead run VmRSS with $got leases (MiB)" "$(awk -v k="${R[rss_leases]}" 'BEGIN{printf "%.1f", k/1024}')  (goal <= 20 MiB)"
