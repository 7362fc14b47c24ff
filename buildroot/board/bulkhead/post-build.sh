#!/bin/sh
# Buildroot post-build script: $1 = TARGET_DIR. Same rootfs conventions as image/build.
set -eu
TARGET_DIR=$1
# release (default) or test image: BR2_BULKHEAD_TEST_BUILD, like image/build --test
VARIANT=release
grep -qx 'BR2_BULKHEAD_TEST_BUILD=y' "${BR2_CONFIG:-/dev/null}" && VARIANT=test
chmod 755 "$TARGET_DIR/init"
if [ "$VARIANT" = test ]; then
  chmod 755 "$TARGET_DIR/usr/libexec/bulkhead/ctl-agent"
  chmod 755 "$TARGET_DIR"/etc/tests/*.sh 2>/dev/null || true
else
  # no test back doors in a release image: the paths image/build leaves out too
  list=$BR2_EXTERNAL_BULKHEAD_PATH/../image/test-only
  [ -f "$list" ] || { echo "post-build: $list missing" >&2; exit 1; }
  grep -v '^[[:space:]]*\(#\|$\)' "$list" | while read -r p _; do rm -rf "${TARGET_DIR:?}/$p"; done
fi
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
  echo "BULKHEAD_IMAGE_VARIANT=$VARIANT"
  echo "BULKHEAD_IMAGE_BUILDER=buildroot"
} > "$TARGET_DIR/etc/bulkhead/image-release"
