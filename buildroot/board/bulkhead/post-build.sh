#!/bin/sh
# Buildroot post-build script: $1 = TARGET_DIR. Same rootfs conventions as image/build.
set -eu
TARGET_DIR=$1
# release (default) or test image: BR2_BULKHEAD_TEST_BUILD, like image/build --test
VARIANT=release
grep -qx 'BR2_BULKHEAD_TEST_BUILD=y' "${BR2_CONFIG:-/dev/null}" && VARIANT="test"
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
# GRUB's tools are installed for grub-editenv alone (RAUC's GRUB backend): drop the rest
# (modules, the other programs) from the initramfs
if [ -d "$TARGET_DIR/lib/grub" ] || [ -d "$TARGET_DIR/usr/lib/grub" ]; then
  rm -rf "$TARGET_DIR/lib/grub" "$TARGET_DIR/usr/lib/grub" "$TARGET_DIR/usr/share/grub" "$TARGET_DIR/share/grub" \
    "$TARGET_DIR/etc/grub.d" "$TARGET_DIR/boot/grub"
  for f in "$TARGET_DIR"/usr/bin/grub-* "$TARGET_DIR"/usr/sbin/grub-* "$TARGET_DIR"/bin/grub-* "$TARGET_DIR"/sbin/grub-*; do
    [ -e "$f" ] || [ -L "$f" ] || continue
    case "${f##*/}" in grub-editenv) ;; *) rm -f "$f" ;; esac
  done
fi
# /init and `bulkhead` call these by path: mke2fs, dropbear, ip, nft; rauc, dbus-daemon,
# grub-editenv and unsquashfs (A/B upgrades); chronyd and chronyc (time)
for f in /usr/sbin/mke2fs /usr/sbin/dropbear /usr/bin/dropbearkey /usr/sbin/ip /usr/sbin/nft \
         /usr/bin/rauc /usr/bin/dbus-daemon /usr/bin/grub-editenv /usr/bin/unsquashfs \
         /usr/sbin/chronyd /usr/bin/chronyc; do
  [ -e "$TARGET_DIR$f" ] || { echo "post-build: $f missing from the target" >&2; exit 1; }
done
# Buildroot's SysV scripts are not used: /init starts everything itself.
rm -f "$TARGET_DIR/etc/init.d/S50dropbear" "$TARGET_DIR/etc/init.d/S49chrony" "$TARGET_DIR/etc/init.d/S30dbus"
# the CA that upgrade bundles must be signed by (keys.sh: as image/build)
. "$(dirname "$0")/keys.sh"
mkdir -p "$TARGET_DIR/etc/rauc"
install -m 644 "$RAUC_KEYRING" "$TARGET_DIR/etc/rauc/keyring.pem"
{
  echo "BULKHEAD_IMAGE_KERNEL=$(ls "$TARGET_DIR/lib/modules" 2>/dev/null | head -1)"
  echo "BULKHEAD_IMAGE_SOURCE=$(git -C "$BR2_EXTERNAL_BULKHEAD_PATH/.." describe --always --dirty 2>/dev/null || echo unknown)"
  echo "BULKHEAD_IMAGE_DATE=${SOURCE_DATE_EPOCH:-0}"
  echo "BULKHEAD_IMAGE_VARIANT=$VARIANT"
  echo "BULKHEAD_IMAGE_BUILDER=buildroot"
} > "$TARGET_DIR/etc/bulkhead/image-release"
