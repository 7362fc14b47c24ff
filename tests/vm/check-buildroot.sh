#!/usr/bin/env bash
# tests/vm/check-buildroot.sh: static consistency checks of the BR2_EXTERNAL tree
# (it cannot be built offline): every path it names exists, the kernel fragment
# enables every module the image loads (overlay/etc/bulkhead/modules), and the
# tree ships the same programs and boot setup as image/build.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BR=$ROOT/buildroot
FRAG=$BR/board/bulkhead/linux.fragment
DEFCONFIG=$BR/configs/bulkhead_x86_64_defconfig
MODLIST=$ROOT/overlay/etc/bulkhead/modules
PASS=0 FAIL=0
ok() { PASS=$((PASS + 1)); printf 'ok - %s\n' "$*"; }
notok() { FAIL=$((FAIL + 1)); printf 'FAIL - %s\n' "$*"; }
# resolve $(BR2_EXTERNAL_BULKHEAD_PATH) / $BR2_EXTERNAL_BULKHEAD_PATH
brpath() { local p=$1; p=${p//\$(BR2_EXTERNAL_BULKHEAD_PATH)/$BR}; p=${p//\$BR2_EXTERNAL_BULKHEAD_PATH/$BR}; echo "$p"; }

# ---- tree structure --------------------------------------------------------------
for f in external.desc Config.in external.mk package/bulkhead/Config.in package/bulkhead/bulkhead.mk \
         configs/bulkhead_x86_64_defconfig board/bulkhead/linux.fragment \
         board/bulkhead/post-build.sh board/bulkhead/post-image.sh board/bulkhead/grub.cfg; do
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
ov=$(brpath "$(sed -n 's/^BR2_ROOTFS_OVERLAY="\(.*\)"$/\1/p' "$DEFCONFIG")")
[ "$(cd "$ov" 2>/dev/null && pwd)" = "$ROOT/overlay" ] && ok "rootfs overlay is the repository's overlay/" || notok "BR2_ROOTFS_OVERLAY is not overlay/ ($ov)"
for f in init usr/libexec/bulkhead/ctl-agent etc/bulkhead/modules; do
  [ -f "$ov/$f" ] && ok "overlay has /$f" || notok "overlay lacks /$f"
done
grep -q 'image/mkdisk' "$BR/board/bulkhead/post-image.sh" && [ -x "$ROOT/image/mkdisk" ] \
  && ok "post-image uses image/mkdisk (exists)" || notok "post-image / image/mkdisk"

# ---- same programs as image/build -------------------------------------------------------
for p in BUSYBOX BULKHEAD NFTABLES IPTABLES IPTABLES_NFTABLES IPSET IPROUTE2 DROPBEAR E2FSPROGS; do
  grep -qx "BR2_PACKAGE_$p=y" "$DEFCONFIG" && ok "defconfig selects $p" || notok "defconfig lacks BR2_PACKAGE_$p=y"
done
grep -qx 'BR2_INIT_NONE=y' "$DEFCONFIG" && ok "no init system: /init from the overlay is PID 1" || notok "BR2_INIT_NONE missing"
cmd_mkdisk=$(sed -n 's/^CMDLINE=\${CMDLINE:-\(.*\)}$/\1/p' "$ROOT/image/mkdisk")
cmd_grub=$(sed -n 's|^linux /vmlinuz ||p' "$BR/board/bulkhead/grub.cfg")
[ -n "$cmd_mkdisk" ] && [ "$cmd_mkdisk" = "$cmd_grub" ] && ok "GRUB config has the same kernel command line as image/mkdisk" \
  || notok "kernel command line differs: mkdisk '$cmd_mkdisk' grub.cfg '$cmd_grub'"

# ---- release and test images (image/test-only, BR2_BULKHEAD_TEST_BUILD) -------------------
grep -q '^config BR2_BULKHEAD_TEST_BUILD$' "$BR/Config.in" && ok "Config.in offers BR2_BULKHEAD_TEST_BUILD" \
  || notok "Config.in lacks BR2_BULKHEAD_TEST_BUILD (the test-image option)"
grep -qx 'BR2_BULKHEAD_TEST_BUILD=y' "$DEFCONFIG" && notok "the defconfig builds a test image" \
  || ok "the defconfig builds a release image"
# run post-build.sh on a stand-in target directory, once per variant
postbuild() {  # VARIANT -> $PB/target
  PB=$(mktemp -d); mkdir -p "$PB/target"
  cp -a "$ROOT/overlay/." "$PB/target/"
  for f in /usr/sbin/mke2fs /usr/sbin/dropbear /usr/bin/dropbearkey /usr/sbin/ip /usr/sbin/nft; do
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
grep -q 'BR2_BULKHEAD_TEST_BUILD' "$BR/board/bulkhead/post-image.sh" && grep -q 'export VARIANT' "$BR/board/bulkhead/post-image.sh" \
  && ok "post-image.sh passes the variant to image/mkdisk" || notok "post-image.sh does not pass VARIANT to image/mkdisk"
grep -qx 'set superusers="[a-z]*"' "$BR/board/bulkhead/grub.cfg" && grep -qx 'export superusers' "$BR/board/bulkhead/grub.cfg" \
  && ok "GRUB config sets superusers (no entry editing, no GRUB shell)" || notok "GRUB config does not lock editing (set superusers)"

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
  [nfnetlink_log]=NETFILTER_NETLINK_LOG [nf_log_syslog]=NF_LOG_SYSLOG [nft_compat]=NFT_COMPAT
  [x_tables]=NETFILTER_XTABLES [xt_tcpudp]=NETFILTER_XTABLES
  [xt_conntrack]=NETFILTER_XT_MATCH_CONNTRACK [xt_state]=NETFILTER_XT_MATCH_STATE
  [xt_MASQUERADE]=NETFILTER_XT_TARGET_MASQUERADE [xt_LOG]=NETFILTER_XT_TARGET_LOG
  [xt_NFLOG]=NETFILTER_XT_TARGET_NFLOG [xt_comment]=NETFILTER_XT_MATCH_COMMENT
  [xt_multiport]=NETFILTER_XT_MATCH_MULTIPORT [xt_limit]=NETFILTER_XT_MATCH_LIMIT
  [xt_mark]=NETFILTER_XT_MARK [xt_addrtype]=NETFILTER_XT_MATCH_ADDRTYPE [xt_set]=NETFILTER_XT_SET
  [ip_set]=IP_SET [ip_set_hash_ip]=IP_SET_HASH_IP [ip_set_hash_net]=IP_SET_HASH_NET
  [nf_flow_table]=NF_FLOW_TABLE [nf_flow_table_inet]=NF_FLOW_TABLE_INET [nft_flow_offload]=NFT_FLOW_OFFLOAD
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
done < "$MODLIST"
[ "$nmods" -gt 0 ] && ok "$nmods modules in overlay/etc/bulkhead/modules checked" || notok "empty module list"
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
