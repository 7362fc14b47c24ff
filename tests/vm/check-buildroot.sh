#!/usr/bin/env bash
# tests/vm/check-buildroot.sh: static consistency checks of the BR2_EXTERNAL tree
# (it cannot be built offline): every path it names exists, the kernel fragment
# enables every module the image loads (overlay/etc/bulkhead/modules), and the
# tree ships the same programs and boot setup as image/build: RAUC, GRUB for BIOS and
# UEFI with the A/B slot selection of image/mkdisk, and a post-image script that, run here
# on stand-in inputs, makes with genimage a disk whose partition table and boot files are
# those of image/mkdisk, and a bundle `rauc info` accepts with the development keyring.
# With BUILDROOT_DIR=/path/to/buildroot (a checkout) every BR2_ symbol of the defconfig is
# also looked up in its Config.in files.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BR=$ROOT/buildroot
FRAG=$BR/board/bulkhead/linux.fragment
DEFCONFIG=$BR/configs/bulkhead_x86_64_defconfig
MODLIST=$ROOT/overlay/etc/bulkhead/modules
PASS=0 FAIL=0
TMPDIR_SC=$(mktemp)
ok() { PASS=$((PASS + 1)); printf 'ok - %s\n' "$*"; }
notok() { FAIL=$((FAIL + 1)); printf 'FAIL - %s\n' "$*"; }
# resolve $(BR2_EXTERNAL_BULKHEAD_PATH) / $BR2_EXTERNAL_BULKHEAD_PATH
brpath() { local p=$1; p=${p//\$(BR2_EXTERNAL_BULKHEAD_PATH)/$BR}; p=${p//\$BR2_EXTERNAL_BULKHEAD_PATH/$BR}; echo "$p"; }

# ---- tree structure --------------------------------------------------------------
for f in external.desc Config.in external.mk package/bulkhead/Config.in package/bulkhead/bulkhead.mk \
         configs/bulkhead_x86_64_defconfig board/bulkhead/linux.fragment \
         board/bulkhead/post-build.sh board/bulkhead/post-image.sh board/bulkhead/grub.cfg \
         board/bulkhead/grub-slots.cfg board/bulkhead/genimage.cfg.in board/bulkhead/keys.sh; do
  [ -f "$BR/$f" ] && ok "buildroot/$f exists" || notok "buildroot/$f missing"
done
grep -qx 'name: BULKHEAD' "$BR/external.desc" && ok "external.desc names BULKHEAD" || notok "external.desc name"
while read -r _ p; do
  p=$(brpath "${p//\"/}")
  [ -f "$p" ] && ok "Config.in sources ${p#"$ROOT"/}" || notok "Config.in sources missing $p"
done < <(grep -h '^[[:space:]]*source' "$BR/Config.in")
compgen -G "$BR/package/*/*.mk" >/dev/null && ok "external.mk finds package/*/*.mk" || notok "no package/*/*.mk"
grep -q '^\$(eval \$(cargo-package))' "$BR/package/bulkhead/bulkhead.mk" && ok "bulkhead.mk uses cargo-package" || notok "bulkhead.mk: no cargo-package"
site=$(sed -n 's/^BULKHEAD_SITE *= *//p' "$BR/package/bulkhead/bulkhead.mk")
site=$(brpath "$site")
[ -f "$site/Cargo.toml" ] && [ -f "$site/Cargo.lock" ] && ok "BULKHEAD_SITE has Cargo.toml and Cargo.lock" || notok "BULKHEAD_SITE $site has no Cargo.toml/Cargo.lock"
grep -q '^config BR2_PACKAGE_BULKHEAD$' "$BR/package/bulkhead/Config.in" && ok "package Config.in defines BR2_PACKAGE_BULKHEAD" || notok "no BR2_PACKAGE_BULKHEAD"

# ---- every path the defconfig names ----------------------------------------------------
while IFS= read -r val; do
  for p in $val; do
    case "$p" in *BR2_EXTERNAL_BULKHEAD_PATH*) ;; *) continue ;; esac
    r=$(brpath "$p")
    [ -e "$r" ] && ok "defconfig path ${p} exists" || notok "defconfig path $p -> $r missing"
  done
done < <(sed -n 's/^BR2_[A-Z0-9_]*="\(.*\)"$/\1/p' "$DEFCONFIG")
for s in BR2_ROOTFS_POST_BUILD_SCRIPT BR2_ROOTFS_POST_IMAGE_SCRIPT; do
  p=$(brpath "$(sed -n "s/^$s=\"\(.*\)\"$/\1/p" "$DEFCONFIG")")
  [ -x "$p" ] && sh -n "$p" && ok "$s is an executable, parseable script" || notok "$s ($p) not executable or has syntax errors"
done
sh -n "$BR/board/bulkhead/keys.sh" && ok "board/bulkhead/keys.sh parses" || notok "board/bulkhead/keys.sh has syntax errors"
if command -v shellcheck >/dev/null; then
  shellcheck -s sh -S warning -e SC1091 "$BR"/board/bulkhead/*.sh > "$TMPDIR_SC" 2>&1 && ok "shellcheck: board scripts clean" \
    || { notok "shellcheck findings in board scripts:"; sed 's/^/    /' "$TMPDIR_SC" | head -20; }
  rm -f "$TMPDIR_SC"
else
  echo "# (no shellcheck installed: board scripts only checked with sh -n)"
fi
ov=$(brpath "$(sed -n 's/^BR2_ROOTFS_OVERLAY="\(.*\)"$/\1/p' "$DEFCONFIG")")
[ "$(cd "$ov" 2>/dev/null && pwd)" = "$ROOT/overlay" ] && ok "rootfs overlay is the repository's overlay/" || notok "BR2_ROOTFS_OVERLAY is not overlay/ ($ov)"
for f in init usr/libexec/bulkhead/ctl-agent etc/bulkhead/modules; do
  [ -f "$ov/$f" ] && ok "overlay has /$f" || notok "overlay lacks /$f"
done
grep -q 'genimage.cfg.in' "$BR/board/bulkhead/post-image.sh" && grep -q 'image/bundle' "$BR/board/bulkhead/post-image.sh" \
  && [ -x "$ROOT/image/bundle" ] && ok "post-image uses genimage (genimage.cfg.in) and image/bundle (exists)" \
  || notok "post-image does not use genimage.cfg.in and image/bundle"

# ---- same programs as image/build -------------------------------------------------------
for p in BUSYBOX BULKHEAD NFTABLES IPTABLES IPTABLES_NFTABLES IPSET IPROUTE2 DROPBEAR E2FSPROGS \
         CHRONY RAUC RAUC_DBUS DBUS SQUASHFS HOST_RAUC HOST_GENIMAGE HOST_DOSFSTOOLS HOST_MTOOLS; do
  grep -qx "BR2_PACKAGE_$p=y" "$DEFCONFIG" && ok "defconfig selects $p" || notok "defconfig lacks BR2_PACKAGE_$p=y"
done
for t in GRUB2 GRUB2_I386_PC GRUB2_X86_64_EFI GRUB2_INSTALL_TOOLS; do
  grep -qx "BR2_TARGET_$t=y" "$DEFCONFIG" && ok "defconfig selects $t" || notok "defconfig lacks BR2_TARGET_$t=y"
done
grep -q '^BR2_TARGET_SYSLINUX' "$DEFCONFIG" && notok "defconfig still builds syslinux (GRUB boots BIOS too)" || ok "no syslinux: GRUB boots BIOS and UEFI"
grep -qx 'BR2_INIT_NONE=y' "$DEFCONFIG" && ok "no init system: /init from the overlay is PID 1" || notok "BR2_INIT_NONE missing"
# the GRUB modules of image/mkdisk (+ biosdisk for BIOS, + efi_gop all_video for UEFI)
mods_mkdisk=$(sed -n '/^GRUB_MODS=(/,/)/p' "$ROOT/image/mkdisk" | tr -d '()' | sed 's/GRUB_MODS=//' | tr -s ' \n' ' ' | sed 's/^ //; s/ $//')
mods_pc=$(sed -n 's/^BR2_TARGET_GRUB2_BUILTIN_MODULES_PC="\(.*\)"$/\1/p' "$DEFCONFIG")
mods_efi=$(sed -n 's/^BR2_TARGET_GRUB2_BUILTIN_MODULES_EFI="\(.*\)"$/\1/p' "$DEFCONFIG")
[ -n "$mods_mkdisk" ] && [ "$mods_pc" = "biosdisk $mods_mkdisk" ] && [ "$mods_efi" = "$mods_mkdisk efi_gop all_video" ] \
  && ok "GRUB modules (BIOS and UEFI) are image/mkdisk's" \
  || notok "GRUB modules differ: mkdisk '$mods_mkdisk' / PC '$mods_pc' / EFI '$mods_efi'"
for v in PC EFI; do
  [ "$(sed -n "s/^BR2_TARGET_GRUB2_BUILTIN_CONFIG_$v=\"\(.*\)\"$/\1/p" "$DEFCONFIG")" = '$(BR2_EXTERNAL_BULKHEAD_PATH)/board/bulkhead/grub.cfg' ] \
    && ok "GRUB ($v) embeds board/bulkhead/grub.cfg" || notok "BR2_TARGET_GRUB2_BUILTIN_CONFIG_$v is not board/bulkhead/grub.cfg"
done

# ---- release and test images (image/test-only, BR2_BULKHEAD_TEST_BUILD) -------------------
grep -q '^config BR2_BULKHEAD_TEST_BUILD$' "$BR/Config.in" && ok "Config.in offers BR2_BULKHEAD_TEST_BUILD" \
  || notok "Config.in lacks BR2_BULKHEAD_TEST_BUILD (the test-image option)"
grep -qx 'BR2_BULKHEAD_TEST_BUILD=y' "$DEFCONFIG" && notok "the defconfig builds a test image" \
  || ok "the defconfig builds a release image"
# run post-build.sh on a stand-in target directory, once per variant
postbuild() {  # VARIANT -> $PB/target
  PB=$(mktemp -d); mkdir -p "$PB/target"
  cp -a "$ROOT/overlay/." "$PB/target/"
  for f in /usr/sbin/mke2fs /usr/sbin/dropbear /usr/bin/dropbearkey /usr/sbin/ip /usr/sbin/nft \
           /usr/bin/rauc /usr/bin/dbus-daemon /usr/bin/grub-editenv /usr/bin/grub-mkimage /usr/bin/unsquashfs \
           /usr/sbin/chronyd /usr/bin/chronyc /usr/lib/grub/i386-pc/normal.mod; do
    mkdir -p "$PB/target$(dirname "$f")"; : > "$PB/target$f"
  done
  if [ "$1" = test ]; then echo 'BR2_BULKHEAD_TEST_BUILD=y' > "$PB/config"; else echo '# BR2_BULKHEAD_TEST_BUILD is not set' > "$PB/config"; fi
  BR2_CONFIG=$PB/config BR2_EXTERNAL_BULKHEAD_PATH=$BR sh "$BR/board/bulkhead/post-build.sh" "$PB/target" > "$PB/log" 2>&1
}
testonly=$(grep -v '^[[:space:]]*\(#\|$\)' "$ROOT/image/test-only" | awk '{print $1}')
[ -n "$testonly" ] && ok "image/test-only lists the test-only paths" || notok "image/test-only is empty or missing"
for variant in release test; do
  if postbuild "$variant"; then
    ok "post-build.sh runs ($variant)"
    cmp -s "$PB/target/etc/rauc/keyring.pem" "${RAUC_KEYRING:-$ROOT/image/keys/dev.cert.pem}" \
      && ok "$variant: /etc/rauc/keyring.pem is the keyring image/build uses" || notok "$variant: no or another /etc/rauc/keyring.pem"
    [ -e "$PB/target/usr/bin/grub-editenv" ] && [ ! -e "$PB/target/usr/bin/grub-mkimage" ] && [ ! -e "$PB/target/usr/lib/grub" ] \
      && ok "$variant: of GRUB's tools only grub-editenv stays" || notok "$variant: GRUB's tools and modules not pruned"
    grep -qx "BULKHEAD_IMAGE_VARIANT=$variant" "$PB/target/etc/bulkhead/image-release" \
      && ok "$variant: image-release says BULKHEAD_IMAGE_VARIANT=$variant" || notok "$variant: image-release lacks BULKHEAD_IMAGE_VARIANT=$variant"
    for p in $testonly; do
      if [ "$variant" = release ]; then
        [ -e "$PB/target/$p" ] && notok "release: post-build.sh left /$p" || ok "release: no /$p"
      else
        [ -e "$PB/target/$p" ] && ok "test: /$p kept" || notok "test: post-build.sh removed /$p"
      fi
    done
  else
    notok "post-build.sh failed ($variant):"; sed 's/^/    /' "$PB/log"
  fi
  rm -rf "$PB"
done
grep -qx 'set superusers="[a-z]*"' "$BR/board/bulkhead/grub.cfg" && grep -qx 'export superusers' "$BR/board/bulkhead/grub.cfg" \
  && ok "GRUB config sets superusers (no entry editing, no GRUB shell)" || notok "GRUB config does not lock editing (set superusers)"

# ---- A/B: genimage's disk = image/mkdisk's, the bundle, RAUC's system.conf ---------------------
# Stand-ins for what Buildroot would hand post-image.sh: a kernel and an initramfs (the test
# image's when image/build has run, else placeholders), GRUB's core images made here with the
# defconfig's modules, prefixes and embedded config (as boot/grub2/grub2.mk does), its boot.img.
if [ "$(id -u)" = 0 ] && ! command -v genimage >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends genimage >/dev/null 2>&1 || true
fi
AB=$(mktemp -d)
KIMG=$(ls "$ROOT"/image/out-test/vmlinuz "$ROOT"/image/out/vmlinuz "$ROOT"/image/cache/kroot-*/boot/vmlinuz-* 2>/dev/null | head -1)
[ -n "$KIMG" ] || { KIMG=$AB/vmlinuz; head -c 8M /dev/zero > "$KIMG"; }
IIMG=$(ls "$ROOT"/image/out-test/initramfs.cpio.gz "$ROOT"/image/out/initramfs.cpio.gz 2>/dev/null | head -1)
if [ -z "$IIMG" ]; then
  IIMG=$AB/initramfs.cpio.gz; mkdir -p "$AB/r"; echo placeholder > "$AB/r/init"
  (cd "$AB/r" && echo init | cpio -o -H newc --quiet) | gzip -9n > "$IIMG"
fi
missing=
for t in genimage rauc grub-mkimage grub-editenv mkfs.vfat mcopy sfdisk xz; do command -v "$t" >/dev/null || missing="$missing $t"; done
if [ -n "$missing" ]; then
  echo "# not checked here (missing:$missing): the post-image run, the disk layout, the bundle"
else
  # image/mkdisk's disk from the same kernel and initramfs (a release disk, like the defconfig)
  if VARIANT=release "$ROOT/image/mkdisk" "$KIMG" "$IIMG" "$AB/mk" "$AB/mkwork" > "$AB/mkdisk.log" 2>&1; then
    ok "image/mkdisk made its disk from the same kernel and initramfs"
  else
    notok "image/mkdisk failed:"; sed 's/^/    /' "$AB/mkdisk.log" | tail -5
  fi
  cmp -s "$BR/board/bulkhead/grub.cfg" "$AB/mkwork/embed.cfg" && ok "board/bulkhead/grub.cfg is image/mkdisk's embedded GRUB config" \
    || { notok "board/bulkhead/grub.cfg differs from image/mkdisk's embedded config:"; diff "$AB/mkwork/embed.cfg" "$BR/board/bulkhead/grub.cfg" | sed 's/^/    /'; }
  cmp -s "$BR/board/bulkhead/grub-slots.cfg" "$AB/mkwork/esp/grub/grub.cfg" && ok "board/bulkhead/grub-slots.cfg is image/mkdisk's slot selection (grub/grub.cfg)" \
    || { notok "board/bulkhead/grub-slots.cfg differs from image/mkdisk's grub/grub.cfg:"; diff "$AB/mkwork/esp/grub/grub.cfg" "$BR/board/bulkhead/grub-slots.cfg" | sed 's/^/    /' | head -20; }
  # what Buildroot would hand over
  B=$AB/images; mkdir -p "$B/efi-part/EFI/BOOT" "$AB/build/grub2-x/build-i386-pc/grub-core" "$AB/host"
  cp "$KIMG" "$B/bzImage"; cp "$IIMG" "$B/rootfs.cpio.gz"
  cp /usr/lib/grub/i386-pc/boot.img "$AB/build/grub2-x/build-i386-pc/grub-core/boot.img"
  bp=$(sed -n 's/^BR2_TARGET_GRUB2_BOOT_PARTITION="\(.*\)"$/\1/p' "$DEFCONFIG")
  # shellcheck disable=SC2086  # the module lists are word lists
  if grub-mkimage -O i386-pc -o "$B/grub.img" -p "($bp)/boot/grub" -c "$BR/board/bulkhead/grub.cfg" $mods_pc &&
     grub-mkimage -O x86_64-efi -o "$B/efi-part/EFI/BOOT/bootx64.efi" -p /EFI/BOOT -c "$BR/board/bulkhead/grub.cfg" $mods_efi; then
    ok "GRUB core images build with the defconfig's modules and embedded config"
  else
    notok "grub-mkimage with the defconfig's modules failed"
  fi
  if BINARIES_DIR=$B BUILD_DIR=$AB/build HOST_DIR=$AB/host BR2_EXTERNAL_BULKHEAD_PATH=$BR VERSION=br-check \
       sh "$BR/board/bulkhead/post-image.sh" > "$AB/post-image.log" 2>&1; then
    ok "post-image.sh runs (genimage, image/bundle)"
  else
    notok "post-image.sh failed:"; tail -15 "$AB/post-image.log" | sed 's/^/    /'
  fi
  ptable() { sfdisk -d "$1" 2>/dev/null | grep -v '^device:' | sed 's|^[^ ]*\(img[0-9]\) :|\1 :|'; }
  ptable "$AB/mk/disk.img" > "$AB/pt.mkdisk"; ptable "$B/disk.img" > "$AB/pt.genimage"
  [ -s "$AB/pt.mkdisk" ] && cmp -s "$AB/pt.mkdisk" "$AB/pt.genimage" \
    && ok "genimage's partition table is image/mkdisk's (label-id, p1 boot ef bootable, p2/p3 slots, p4 data)" \
    || { notok "partition tables differ (mkdisk < > genimage):"; diff "$AB/pt.mkdisk" "$AB/pt.genimage" | sed 's/^/    /'; }
  [ "$(stat -c %s "$B/disk.img" 2>/dev/null)" = "$(stat -c %s "$AB/mk/disk.img" 2>/dev/null)" ] \
    && ok "the disk file reaches the end of the data partition (same size as image/mkdisk's)" || notok "disk.img sizes differ"
  cmp -s <(dd if="$B/disk.img" bs=440 count=1 status=none) <(dd if="$AB/mk/disk.img" bs=440 count=1 status=none) \
    && ok "the MBR boot code is image/mkdisk's (GRUB's boot.img)" || notok "the MBR boot code differs from image/mkdisk's"
  cmp -s <(dd if="$B/disk.img" bs=512 skip=1 count="$(( ($(stat -c %s "$B/grub.img") + 511) / 512 ))" status=none | head -c "$(stat -c %s "$B/grub.img")") "$B/grub.img" \
    && ok "GRUB's BIOS core image sits right after the MBR (as image/mkdisk puts it)" || notok "no GRUB core image at sector 1"
  for f in grub.cfg grubenv; do
    MTOOLS_SKIP_CHECK=1 mcopy -n -i "$B/disk.img@@1M" "::grub/$f" "$AB/esp.$f" 2>/dev/null
    MTOOLS_SKIP_CHECK=1 mcopy -n -i "$AB/mk/disk.img@@1M" "::grub/$f" "$AB/mkesp.$f" 2>/dev/null
    [ -s "$AB/esp.$f" ] && cmp -s "$AB/esp.$f" "$AB/mkesp.$f" && ok "boot partition: grub/$f is image/mkdisk's" || notok "boot partition: grub/$f differs or is missing"
  done
  MTOOLS_SKIP_CHECK=1 mcopy -n -i "$B/disk.img@@1M" ::EFI/BOOT/BOOTX64.EFI "$AB/bootx64" 2>/dev/null
  cmp -s "$AB/bootx64" "$B/efi-part/EFI/BOOT/bootx64.efi" && ok "boot partition: EFI/BOOT/BOOTX64.EFI is Buildroot's GRUB" || notok "boot partition: no BOOTX64.EFI"
  p2=$(sfdisk -d "$B/disk.img" 2>/dev/null | sed -n 's/.*img2 : start= *\([0-9]*\),.*/\1/p')
  MTOOLS_SKIP_CHECK=1 mdir -b -i "$B/disk.img@@$((p2 * 512))" :: > "$AB/slot.ls" 2>/dev/null
  MTOOLS_SKIP_CHECK=1 mcopy -n -i "$B/disk.img@@$((p2 * 512))" ::initrd.img "$AB/initrd.img" 2>/dev/null
  grep -q vmlinuz "$AB/slot.ls" && grep -q initrd.img "$AB/slot.ls" && xz --robot --list "$AB/initrd.img" 2>/dev/null | grep -q CRC32 \
    && ok "slot A holds vmlinuz and initrd.img (xz, CRC32 for the kernel's unpacker)" || notok "slot A: no vmlinuz/initrd.img, or not xz with CRC32"
  # RAUC: the system.conf /init writes (this disk's devices filled in) parses, and the bundle is
  # accepted with the keyring the image gets
  sed -n '/cat > \/etc\/rauc\/system.conf <<EOF/,/^EOF$/p' "$ROOT/overlay/init" | sed '1d;$d' |
    sed -e 's|\$DATA|/var/lib/bulkhead|g' -e 's|\$a|/dev/vda2|' -e 's|\$b|/dev/vda3|' > "$AB/system.conf"
  grep -q '^\[slot.system.1\]' "$AB/system.conf" && grep -qx 'bootloader=grub' "$AB/system.conf" \
    && ok "overlay/init writes a RAUC system.conf for GRUB with two system slots" || notok "no system.conf in overlay/init"
  keyring=${RAUC_KEYRING:-$ROOT/image/keys/dev.cert.pem}
  sed -i "s|^path=/etc/rauc/keyring.pem$|path=$keyring|" "$AB/system.conf"
  bundle=$(ls "$B"/bulkhead-*.raucb 2>/dev/null | head -1)
  if [ -n "$bundle" ] && rauc --conf="$AB/system.conf" info "$bundle" > "$AB/info" 2>&1; then
    grep -qE "Compatible:[[:space:]]*'bulkhead-x86_64'" "$AB/info" && grep -qE "Version:[[:space:]]*'br-check'" "$AB/info" \
      && ok "rauc info (with that system.conf and the image's keyring) accepts the signed bundle: bulkhead-x86_64, br-check" \
      || { notok "rauc info: wrong compatible or version"; sed 's/^/    /' "$AB/info"; }
  else
    notok "rauc info refused the system.conf or the bundle:"; sed 's/^/    /' "$AB/info" 2>/dev/null | tail -5
  fi
fi
rm -rf "$AB"

# ---- symbols in a Buildroot checkout (BUILDROOT_DIR) ------------------------------------------
if [ -n "${BUILDROOT_DIR:-}" ] && [ -f "$BUILDROOT_DIR/Config.in" ]; then
  bad=
  for sym in $(sed -n 's/^\(BR2_[A-Z0-9_]*\)=.*/\1/p' "$DEFCONFIG"); do
    grep -rqs --include='Config.in*' -E "^(menu)?config $sym\$" "$BUILDROOT_DIR" "$BR" || bad="$bad $sym"
  done
  [ -z "$bad" ] && ok "every defconfig symbol exists in $BUILDROOT_DIR ($(git -C "$BUILDROOT_DIR" describe 2>/dev/null || echo 'version unknown'))" \
    || notok "defconfig symbols unknown to $BUILDROOT_DIR:$bad"
else
  echo "# (no BUILDROOT_DIR: defconfig symbols not looked up in a Buildroot checkout)"
fi

# ---- kernel fragment vs. the module list ----------------------------------------------------
# module name -> Kconfig symbol that builds it
declare -A SYM=(
  [virtio_pci]=VIRTIO_PCI [virtio_console]=VIRTIO_CONSOLE [qemu_fw_cfg]=FW_CFG_SYSFS
  [virtio_net]=VIRTIO_NET [e1000]=E1000 [e1000e]=E1000E [igb]=IGB
  [virtio_blk]=VIRTIO_BLK [virtio_scsi]=SCSI_VIRTIO [ahci]=SATA_AHCI [sd_mod]=BLK_DEV_SD
  [nvme]=BLK_DEV_NVME [usb_storage]=USB_STORAGE
  [crc32c_generic]=CRYPTO_CRC32C [ext4]=EXT4_FS [vfat]=VFAT_FS [nls_cp437]=NLS_CODEPAGE_437
  [nls_ascii]=NLS_ASCII [nls_utf8]=NLS_UTF8 [nls_iso8859_1]=NLS_ISO8859_1
  [8021q]=VLAN_8021Q [loop]=BLK_DEV_LOOP [squashfs]=SQUASHFS
  [nf_tables]=NF_TABLES [nf_conntrack]=NF_CONNTRACK [nf_nat]=NF_NAT [nft_ct]=NFT_CT
  [nft_nat]=NFT_NAT [nft_chain_nat]=NFT_NAT [nft_masq]=NFT_MASQ [nft_redir]=NFT_REDIR
  [nft_log]=NFT_LOG [nft_limit]=NFT_LIMIT [nft_quota]=NFT_QUOTA [nft_reject]=NFT_REJECT
  [nft_reject_inet]=NFT_REJECT_INET [nft_reject_ipv4]=NFT_REJECT_IPV4 [nft_reject_ipv6]=NFT_REJECT_IPV6
  [nft_fib_inet]=NFT_FIB_INET [nft_fib_ipv4]=NFT_FIB_IPV4 [nft_fib_ipv6]=NFT_FIB_IPV6
  [nfnetlink_log]=NETFILTER_NETLINK_LOG [nf_log_syslog]=NF_LOG_SYSLOG [nf_conntrack_netlink]=NF_CT_NETLINK [nft_compat]=NFT_COMPAT
  [x_tables]=NETFILTER_XTABLES [xt_tcpudp]=NETFILTER_XTABLES
  [xt_conntrack]=NETFILTER_XT_MATCH_CONNTRACK [xt_state]=NETFILTER_XT_MATCH_STATE
  [xt_MASQUERADE]=NETFILTER_XT_TARGET_MASQUERADE [xt_LOG]=NETFILTER_XT_TARGET_LOG
  [xt_NFLOG]=NETFILTER_XT_TARGET_NFLOG [xt_comment]=NETFILTER_XT_MATCH_COMMENT
  [xt_multiport]=NETFILTER_XT_MATCH_MULTIPORT [xt_limit]=NETFILTER_XT_MATCH_LIMIT
  [xt_mark]=NETFILTER_XT_MARK [xt_addrtype]=NETFILTER_XT_MATCH_ADDRTYPE [xt_set]=NETFILTER_XT_SET
  [ip_set]=IP_SET [ip_set_hash_ip]=IP_SET_HASH_IP [ip_set_hash_net]=IP_SET_HASH_NET
  [nf_flow_table]=NF_FLOW_TABLE [nf_flow_table_inet]=NF_FLOW_TABLE_INET [nft_flow_offload]=NFT_FLOW_OFFLOAD
  [i6300esb]=I6300ESB_WDT [softdog]=SOFT_WATCHDOG
)
frag_has() { grep -qE "^CONFIG_$1=[ym]$" "$FRAG"; }
DEBCFG=$(ls "$ROOT"/image/cache/kroot-*/boot/config-* 2>/dev/null | head -1)
deb_has() { grep -qE "^CONFIG_$1=[ym]$" "$DEBCFG"; }
nmods=0
while read -r m _; do
  case "$m" in ''|'#'*) continue ;; esac
  nmods=$((nmods + 1))
  key=${m//-/_}
  s=${SYM[$key]:-}
  if [ -z "$s" ]; then notok "module $m has no Kconfig mapping in check-buildroot.sh"; continue; fi
  if frag_has "$s"; then ok "module $m: CONFIG_$s in linux.fragment"; else notok "module $m: CONFIG_$s not =m/=y in linux.fragment"; fi
  if [ -n "$DEBCFG" ]; then deb_has "$s" || notok "module $m: CONFIG_$s is not set in the Debian kernel config (wrong mapping?)"; fi
done < <(cat "$MODLIST" "$(dirname "$MODLIST")/modules.watchdog")
[ "$nmods" -gt 0 ] && ok "$nmods modules in overlay/etc/bulkhead/modules and modules.watchdog checked" || notok "empty module list"
if [ -n "$DEBCFG" ]; then
  bad=
  for s in $(sed -n 's/^CONFIG_\([A-Z0-9_]*\)=[ym]$/\1/p' "$FRAG"); do deb_has "$s" || bad="$bad $s"; done
  [ -z "$bad" ] && ok "every fragment symbol is set in the pinned Debian kernel config (no typos)" \
    || notok "fragment symbols unknown or unset in the Debian config:$bad"
else
  echo "# (no unpacked Debian kernel in image/cache: run image/build to also check symbol names)"
fi
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
