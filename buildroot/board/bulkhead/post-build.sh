#!/bin/sh
# Buildroot post-build script: $1 = TARGET_DIR. Same rootfs conventions as image/build.
set -eu
TARGET_DIR=$1
chmod 755 "$TARGET_DIR/init" "$TARGET_DIR/usr/libexec/bulkhead/ctl-agent"
chmod 755 "$TARGET_DIR"/etc/tests/*.sh 2>/dev/null || true
mkdir -p "$TARGET_DIR/var/lib/bulkhead" "$TARGET_DIR/run" "$TARGET_DIR/root"
chmod 700 "$TARGET_DIR/root"
# /init calls /usr/sbin/mke2fs, /usr/sbin/dropbear, /usr/bin/dropbearkey and /sbin/ip by path.
for f in /usr/sbin/mke2fs /usr/sbin/dropbear /usr/bin/dropbearkey /usr/sbin/ip /usr/sbin/nft; do
  [ -e "$TARGET_DIR$f" ] || { echo "post-build: $f missing from the target" >&2; exit 1; }
done
# Buildroot's SysV scripts are not used: /init starts everything itself.
rm -f "$TARGET_DIR/etc/init.d/S50dropbear"
{
  echo "BULKHEAD_IMAGE_KERNEL=$(ls "$TARGET_DIR/lib/modules" 2>/dev/null | head -1)"
  echo "BULKHEAD_IMAGE_SOURCE=$(git -C "$BR2_EXTERNAL_BULKHEAD_PATH/.." describe --always --dirty 2>/dev/null || echo unknown)"
  echo "BULKHEAD_IMAGE_DATE=${SOURCE_DATE_EPOCH:-0}"
  echo "BULKHEAD_IMAGE_BUILDER=buildroot"
} > "$TARGET_DIR/etc/bulkhead/image-release"
