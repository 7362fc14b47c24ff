#!/usr/bin/env bash
# bench/upgrade.sh: A/B firmware upgrades under TCG - install time, install + reboot to
# `bulkhead: ready` on the new slot, and the size budgets.
#
#   sudo image/build --test && sudo bench/upgrade.sh      (REPS=3 upgrades)
#   (the test image in image/out-test: the measurements go through its control channel)
#
# 1. Sizes: disk.qcow2 (the compressed factory disk, budget 48 MiB) and the upgrade bundle
#    bulkhead-VERSION.raucb (budget 24 MiB).
# 2. One BIOS boot of a private copy of disk.img (GRUB, slot A). The bundle reaches the guest
#    behind the end of the disk image (outside every partition) and is copied to /tmp (before each install, /tmp being in RAM; the copy is not timed: scp
#    over the VLAN switch is a test matter, tests/vm/upgrade.sh). Then REPS times:
#    `bulkhead upgrade /tmp/b.raucb` timed in the guest (rauc info + rauc install: signature
#    check, writing the 26 MiB slot image, grubenv), then `reboot`, timed on the host from
#    the reboot to the console's next `bulkhead: ready` on the other slot (the new slot's
#    first boot: GRUB, kernel, init, the policy, DHCP, then mark-good).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
need qemu-system-x86_64 qemu-system-x86
OUT=${OUT:-$ROOT/image/out-test}
BUNDLE=$(ls "$OUT"/bulkhead-*.raucb 2>/dev/null | head -1)
for f in disk.img disk.qcow2 manifest.txt; do
  [ -f "$OUT/$f" ] || die "missing $OUT/$f: run image/build --test first"
done
[ -n "$BUNDLE" ] || die "no bundle in $OUT: run image/build --test first"
grep -qx 'variant test' "$OUT/manifest.txt" || die "$OUT is not a test image (image/build --test)"
mib() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1048576}'; }
qsize=$(stat -c %s "$OUT/disk.qcow2"); bsize=$(stat -c %s "$BUNDLE")

# ---- 2. upgrades ---------------------------------------------------------------------------
cp --sparse=always "$OUT/disk.img" "$W/disk.img"
# the bundle rides behind the end of the disk image (outside every partition)
dsize=$(stat -c %s "$W/disk.img")
dd if="$BUNDLE" of="$W/disk.img" bs=1M seek=$((dsize / 1048576)) conv=notrunc status=none
: > "$W/console"
"$ROOT/image/run" --out "$OUT" --mode bios --disk "$W/disk.img" --mem 384 --serial "file:$W/console" \
  --ctl "$W/ctl" --timeout 3000 > "$W/qemu.log" 2>&1 &
BH_PIDS+=($!)
G() { python3 "$ROOT/tests/vm/guestctl.py" --timeout 300 "$W/ctl" "$*"; }
readies() { grep -c '^bulkhead: ready' "$W/console" || true; }
wait_ready() {  # N: until the console has N `bulkhead: ready` lines (600 s at most)
  local d=$((SECONDS + 300))
  while [ "$(readies)" -lt "$1" ]; do [ $SECONDS -lt $d ] || die "no ready #$1 within 300 s (see $W/console)"; sleep 0.2; done
}
wait_ready 1
python3 "$ROOT/tests/vm/guestctl.py" --wait 60 "$W/ctl" true >/dev/null
inst=() boot=()
for r in $(seq "$REPS"); do
  n=$(readies)
  # the bundle: read from behind the end of the disk image
  G "b=\$(findfs LABEL=BHBOOT); d=\${b%1}; dd if=\$d bs=1M skip=$((dsize / 1048576)) 2>/dev/null | head -c $bsize > /tmp/b.raucb && [ \$(stat -c %s /tmp/b.raucb) = $bsize ]" \
    || die "copying the bundle in the guest failed"
  t=$(G 't0=$(cut -d" " -f1 /proc/uptime); bulkhead upgrade /tmp/b.raucb > /tmp/up.log 2>&1 || { cat /tmp/up.log; exit 1; }; t1=$(cut -d" " -f1 /proc/uptime); awk -v a=$t0 -v b=$t1 "BEGIN{printf \"%.1f\", b-a}"') \
    || die "upgrade $r failed: $t"
  slot=$(G 'sed -n "s/^slot=//p" /var/lib/bulkhead/upgrade/pending')
  t0=$(date +%s.%N)
  G '(sleep 0.5; reboot) >/dev/null 2>&1 &' || true
  wait_ready $((n + 1))
  b=$(awk -v s="$t0" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e - s}')
  python3 "$ROOT/tests/vm/guestctl.py" --wait 120 "$W/ctl" true >/dev/null
  G "for i in \$(seq 60); do test -e /var/lib/bulkhead/upgrade/pending || exit 0; sleep 1; done; exit 1" \
    || die "upgrade $r: slot $slot was not marked good"
  G "grep -q rauc.slot=$slot /proc/cmdline" || die "upgrade $r: not running slot $slot"
  log "upgrade $r: install ${t} s (guest clock) into slot $slot, reboot to ready ${b} s"
  inst+=("$t") boot+=("$b")
done
G 'poweroff' >/dev/null 2>&1 || true

stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{printf "median %.1f s (min %.1f, max %.1f, n=%d)", a[int((NR+1)/2)], a[1], a[NR], NR}'; }
echo "== bench/upgrade.sh ($(nproc) cores, TCG, load $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-44s %s\n' "disk.qcow2 (compressed factory disk)" "$(mib "$qsize") MiB (budget 48 MiB)"
printf '%-44s %s\n' "$(basename "$BUNDLE")" "$(mib "$bsize") MiB (budget 24 MiB)"
printf '%-44s %s\n' "bulkhead upgrade (install)" "$(stats "${inst[@]}")"
printf '%-44s %s\n' "reboot to bulkhead: ready on the new slot" "$(stats "${boot[@]}")"
[ "$qsize" -le $((48 * 1048576)) ] && [ "$bsize" -le $((24 * 1048576)) ] || die "a size budget is exceeded"
