#!/bin/sh
# Buildroot post-image script: make disk.img / disk.qcow2 with the same
# image/mkdisk that image/build uses (BIOS syslinux + UEFI GRUB, blank data partition).
set -eu
BOARD_DIR=$(dirname "$0")
export PATH="$HOST_DIR/bin:$HOST_DIR/sbin:$PATH"
# GRUB built by Buildroot with board/bulkhead/grub.cfg embedded, syslinux's MBR
[ -f "$BINARIES_DIR/efi-part/EFI/BOOT/bootx64.efi" ] && export BOOTX64_EFI="$BINARIES_DIR/efi-part/EFI/BOOT/bootx64.efi"
[ -f "$BINARIES_DIR/syslinux/mbr.bin" ] && export MBR_BIN="$BINARIES_DIR/syslinux/mbr.bin"
# release (default) or test image (BR2_BULKHEAD_TEST_BUILD): a release disk's syslinux
# has no prompt and takes no options (GRUB is locked by board/bulkhead/grub.cfg either way)
VARIANT=release
grep -qx 'BR2_BULKHEAD_TEST_BUILD=y' "${BR2_CONFIG:-/dev/null}" && VARIANT=test
export VARIANT
"${BR2_EXTERNAL_BULKHEAD_PATH:-$BOARD_DIR/../..}/../image/mkdisk" "$BINARIES_DIR/bzImage" "$BINARIES_DIR/rootfs.cpio.gz" \
  "$BINARIES_DIR" "$BUILD_DIR/bulkhead-disk"
ls -l "$BINARIES_DIR/bzImage" "$BINARIES_DIR/rootfs.cpio.gz" "$BINARIES_DIR"/disk.*
