#!/bin/sh
# Buildroot post-image script: the A/B disk and the signed upgrade bundle, with the layout
# of image/mkdisk made by genimage (board/bulkhead/genimage.cfg.in):
#   disk.img, disk.qcow2       GRUB for BIOS (boot.img + grub.img in the MBR gap) and UEFI
#                              (bootx64.efi), p1 boot (grub.cfg = board/bulkhead/grub-slots.cfg,
#                              grubenv: ORDER="A B" A_OK=1), p2 slot A, p3 slot B, p4 data
#   slot.img                   the slot image (vmlinuz + the initramfs as xz)
#   bulkhead-VERSION.raucb     the RAUC bundle of slot.img (image/bundle), signed with
#                              RAUC_CERT/RAUC_KEY (default: the development pair, keys.sh)
# Env (besides Buildroot's): DISK_MB, ESP_MB, SLOT_MB (as image/build), VERSION.
set -eu
BOARD_DIR=$(cd "$(dirname "$0")" && pwd)
BR2_EXTERNAL_BULKHEAD_PATH=${BR2_EXTERNAL_BULKHEAD_PATH:-$(cd "$BOARD_DIR/../.." && pwd)}
ROOT=$BR2_EXTERNAL_BULKHEAD_PATH/..
export PATH="$HOST_DIR/bin:$HOST_DIR/sbin:$PATH"
. "$BOARD_DIR/keys.sh"
DISK_MB=${DISK_MB:-352} ESP_MB=${ESP_MB:-64} SLOT_MB=${SLOT_MB:-48}
VERSION=${VERSION:-$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)}
B=$BINARIES_DIR
# GRUB: Buildroot installs the core images; the BIOS boot sector stays in its build tree
if [ ! -s "$B/boot.img" ]; then
  for f in "$BUILD_DIR"/grub2-*/build-i386-pc/grub-core/boot.img; do [ -s "$f" ] && cp "$f" "$B/boot.img"; done
fi
for f in boot.img grub.img efi-part/EFI/BOOT/bootx64.efi bzImage rootfs.cpio.gz; do
  [ -s "$B/$f" ] || { echo "post-image: $B/$f missing (BR2_TARGET_GRUB2_I386_PC, _X86_64_EFI, BR2_TARGET_ROOTFS_CPIO_GZIP)" >&2; exit 1; }
done
# the boot partition's files: the slot selection and its environment, as image/mkdisk
rm -rf "$B/bulkhead-esp" "$B/bulkhead-slot"; mkdir -p "$B/bulkhead-esp" "$B/bulkhead-slot"
cp "$BOARD_DIR/grub-slots.cfg" "$B/bulkhead-esp/grub.cfg"
grub-editenv "$B/bulkhead-esp/grubenv" create
grub-editenv "$B/bulkhead-esp/grubenv" set ORDER="A B" A_OK=1 A_TRY=0 B_OK=0 B_TRY=0
# the slot: the initramfs as xz (crc32: the kernel's unpacker), sized like image/mkdisk
zcat "$B/rootfs.cpio.gz" | xz -9 --check=crc32 -T1 > "$B/bulkhead-slot/initrd.img"
need=$(( ( $(stat -c %s "$B/bzImage") + $(stat -c %s "$B/bulkhead-slot/initrd.img") ) / 1048576 + 3 ))
[ "$need" -le "$SLOT_MB" ] || { echo "post-image: kernel + initramfs need ${need} MiB, a slot has ${SLOT_MB} MiB" >&2; exit 1; }
cfg=$B/bulkhead-genimage.cfg
sed -e "s/@DISK_MB@/$DISK_MB/g" -e "s/@ESP_MB@/$ESP_MB/g" -e "s/@SLOT_MB@/$SLOT_MB/g" -e "s/@SLOT_IMG_MB@/$need/g" \
  "$BOARD_DIR/genimage.cfg.in" > "$cfg"
tmp=${BUILD_DIR:-$B}/bulkhead-genimage.tmp
rm -rf "$tmp"; mkdir -p "$tmp/root"
rm -f "$B/disk.img" "$B/boot.vfat" "$B/slot.img"
genimage --rootpath "$tmp/root" --tmppath "$tmp/work" --inputpath "$B" --outputpath "$B" --config "$cfg"
rm -rf "$tmp"
rm -f "$B/disk.qcow2"
if command -v qemu-img >/dev/null; then qemu-img convert -c -O qcow2 "$B/disk.img" "$B/disk.qcow2"; fi
rm -f "$B"/bulkhead-*.raucb
RAUC_CERT=$RAUC_CERT RAUC_KEY=$RAUC_KEY "$ROOT/image/bundle" "$B/slot.img" "$VERSION" "$B/bulkhead-$VERSION.raucb"
ls -l "$B/bzImage" "$B/rootfs.cpio.gz" "$B/slot.img" "$B"/disk.* "$B/bulkhead-$VERSION.raucb"
