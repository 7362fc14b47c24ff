#!/usr/bin/env bash
# tests/vm/release.sh [elf] [bios] [uefi]: the release image (image/build, the default
# variant, in image/out) has no test back doors. Statically: its initramfs has none of the
# test-only paths (image/test-only: the control agent, the rtest scripts) and says
# BULKHEAD_IMAGE_VARIANT=release; the UEFI GRUB loader's embedded config and grub/grub.cfg
# (which the BIOS and UEFI loaders both run) set superusers (nobody can edit the entry or
# get a GRUB shell) and boot without a menu. Then it
# boots the release image in each mode (default: all three) with `rctl=1 rtest=smoke` on the
# command line (elf) or in the fw_cfg file (bios, uefi), and checks that the init says it
# ignores them and that no control agent answers within 20 s.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MODES=("$@"); [ ${#MODES[@]} -eq 0 ] && MODES=(elf bios uefi)
REL=${RELEASE_OUT:-$ROOT/image/out}
for f in vmlinux initramfs.cpio.gz disk.img manifest.txt; do
  [ -f "$REL/$f" ] || { echo "missing $REL/$f: run image/build (the release image) first" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "VM tests need root" >&2; exit 2; }
check "$REL is a release build (manifest)" grep -qx 'variant release' "$REL/manifest.txt"

# ---- the initramfs -----------------------------------------------------------------------
zcat "$REL/initramfs.cpio.gz" | cpio -it --quiet 2>/dev/null | sed 's|^\./||' > "$TMP/files"
check "the initramfs lists files (cpio)" grep -qx 'init' "$TMP/files"
while read -r p _; do
  case "$p" in ''|'#'*) continue ;; esac
  check_fails "the release initramfs has no /$p" grep -qE "^$p(/|\$)" "$TMP/files"
done < "$ROOT/image/test-only"
mkdir -p "$TMP/root"
(cd "$TMP/root" && zcat "$REL/initramfs.cpio.gz" | cpio -id --quiet init etc/bulkhead/image-release 2>/dev/null)
check "image-release says BULKHEAD_IMAGE_VARIANT=release" grep -qx 'BULKHEAD_IMAGE_VARIANT=release' "$TMP/root/etc/bulkhead/image-release"
check "the init honours the test options only in a test build" grep -q "BULKHEAD_IMAGE_VARIANT=test" "$TMP/root/init"

# ---- the boot loaders --------------------------------------------------------------------
export MTOOLS_SKIP_CHECK=1
# BIOS GRUB's core.img (in the MBR gap) is compressed; the config both loaders run in normal
# mode, grub/grub.cfg on the boot partition, sets the same lock
mtype -i "$REL/disk.img@@1M" ::/grub/grub.cfg > "$TMP/grub.cfg"
check "grub/grub.cfg sets superusers (no entry editing, no GRUB shell)" grep -qx 'set superusers="bulkhead"' "$TMP/grub.cfg"
check "grub/grub.cfg has no timeout" grep -qx 'set timeout=0' "$TMP/grub.cfg"
check "the disk has no syslinux any more" bash -c "! mdir -i '$REL/disk.img@@1M' ::/syslinux.cfg >/dev/null 2>&1"
mcopy -n -i "$REL/disk.img@@1M" ::/EFI/BOOT/BOOTX64.EFI "$TMP/BOOTX64.EFI"
# grub-mkimage stores the embedded config as plain text in the loader
check "GRUB's embedded config sets superusers (no entry editing, no GRUB shell)" grep -qa 'set superusers=' "$TMP/BOOTX64.EFI"
check "GRUB's embedded config has no timeout" grep -qa 'set timeout=0' "$TMP/BOOTX64.EFI"

# ---- boots -------------------------------------------------------------------------------
# no_agent VM: the control channel stays silent (20 s, bounded)
no_agent() { python3 "$VM_DIR/guestctl.py" --timeout 20 "$TMP/$1.ctl" true; }
for mode in "${MODES[@]}"; do
  vm=rel$mode
  case "$mode" in
    elf) start_vm "$vm" --out "$REL" --mode elf --append "rtest=smoke rhold=600" --no-reboot ;;
    bios|uefi)
      start_vm "$vm" --out "$REL" --mode "$mode" --disk "$REL/disk.img" --snapshot \
        --append "rtest=smoke rhold=600" --no-reboot ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  if ! wait_marker "$vm"; then notok "$vm: the release image did not boot"; continue; fi
  ok "$vm: the release image booted ($mode) in ${BOOT_SECS}s"
  case "$mode" in
    elf) check "$vm: the init ignores the test options on the kernel command line" \
           grep -q 'release image: ignoring test options: rtest=smoke rhold=600 rctl=1' "$TMP/$vm.console" ;;
    *)   check "$vm: the init ignores the fw_cfg command line" \
           grep -q 'release image: ignoring the fw_cfg command line' "$TMP/$vm.console" ;;
  esac
  check_fails "$vm: no control agent answers on the virtio-serial port within 20 s" no_agent "$vm"
  # (a test image prints RTEST smoke PASS a few seconds after boot)
  [ "$mode" = elf ] && check_fails "$vm: no rtest runs (15 s)" wait_console "$vm" 'RTEST smoke' 1 15
  # no agent to power it off: stop qemu (by its pid)
  pid=$(vm_pid "$vm"); kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
done
finish
