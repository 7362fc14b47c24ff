#!/usr/bin/env bash
# tests/vm/boot.sh [elf] [bzimage] [bios] [uefi]: boot the image under TCG in
# each mode (default: all four), time the boot to the init marker and check the
# guest over the control channel.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MODES=("$@"); [ ${#MODES[@]} -eq 0 ] && MODES=(elf bzimage bios uefi)
require vmlinux vmlinuz initramfs.cpio.gz
TIMES=()

guest_checks() {
  local vm=$1 mods
  check "$vm: control channel answers" gwait "$vm"
  # modules without a second word load at boot, `later` ones once bulkhead run is ready,
  # `hw` drivers only for a device present (the VM's virtio ones; no igb or nvme here)
  mods=$(sed -e 's/#.*//' "$ROOT/overlay/etc/bulkhead/modules" | awk 'NF && $2 != "hw" {print $1}' | tr - _ | xargs)
  check "$vm: every module in etc/bulkhead/modules is loaded or built in (later ones once ready)" g "$vm" "
    for i in \$(seq 300); do [ -e /var/lib/bulkhead/ready ] && break; sleep 0.1; done
    for t in \$(seq 50); do
      miss=; for m in $mods; do grep -q \"^\$m \" /proc/modules || grep -q \"/\$m.ko\" /lib/modules/\$(uname -r)/modules.builtin || miss=\"\$miss \$m\"; done
      [ -z \"\$miss\" ] && break; sleep 0.2
    done
    [ -z \"\$miss\" ] || { echo missing:\$miss; exit 1; }"
  check "$vm: drivers load for the devices present only (virtio_net yes, igb and nvme no)" g "$vm" \
    'grep -q "^virtio_net " /proc/modules && ! grep -q "^igb " /proc/modules && ! grep -q "^nvme " /proc/modules'
  check "$vm: eth0 is the trunk NIC, eth1 the uplink NIC" g "$vm" \
    'grep -qx 52:54:00:b4:00:01 /sys/class/net/eth0/address && grep -qx 52:54:00:b4:00:02 /sys/class/net/eth1/address'
  check "$vm: ip link add ... type vlan works" g "$vm" \
    '/sbin/ip link add link eth0 name eth0.4000 type vlan id 4000 && /sbin/ip -d link show eth0.4000 | grep -q "802.1Q id 4000" && /sbin/ip link del eth0.4000'
  check "$vm: bulkhead is ready and created the shipped config's VLAN links" g "$vm" \
    'for i in $(seq 300); do [ -e /var/lib/bulkhead/ready ] && break; sleep 0.1; done; for v in 10 20 30 100 200; do /sbin/ip -d link show eth0.$v | grep -q "802.1Q id $v" || exit 1; done'
  check "$vm: the management address is up and SSH listens there only" g "$vm" \
    'for i in $(seq 300); do netstat -ltn 2>/dev/null | grep -q "192.168.100.1:22 " && break; sleep 0.1; done; netstat -ltn | grep -q "192.168.100.1:22 " && ! netstat -ltn | grep -q "0.0.0.0:22 "'
  check "$vm: nft loads an inet table" g "$vm" '
    nft -f - <<EOF
table inet boottest {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "eth0.10" oifname "eth1" counter accept
  }
  chain postrouting {
    type nat hook postrouting priority 100;
    oifname "eth1" masquerade
  }
}
EOF
    nft list table inet boottest | grep -q masquerade && nft delete table inet boottest'
  check "$vm: iptables-nft and ipset work" g "$vm" \
    'iptables -A INPUT -p tcp --dport 22 -j ACCEPT && iptables -D INPUT -p tcp --dport 22 -j ACCEPT && ipset create t hash:net && ipset destroy t'
  check "$vm: init supervises bulkhead (supervisor running)" g "$vm" 'kill -0 $(cat /run/bulkhead/supervisor.pid)'
  check "$vm: dropbear runs with host keys in the data directory" g "$vm" \
    'for i in $(seq 300); do [ -s /run/dropbear.pid ] && break; sleep 0.1; done; kill -0 $(cat /run/dropbear.pid) && ls /var/lib/bulkhead/ssh/dropbear_ed25519_host_key'
}

for mode in "${MODES[@]}"; do
  vm=$mode
  case "$mode" in
    elf|bzimage) start_vm "$vm" --mode "$mode" --no-reboot ;;
    bios|uefi)
      require disk.img
      start_vm "$vm" --mode "$mode" --disk "$OUT/disk.img" --snapshot --no-reboot ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  if wait_marker "$vm"; then
    ok "$vm: booted to the init marker in ${BOOT_SECS}s"
    TIMES+=("$mode ${BOOT_SECS}s")
    guest_checks "$vm"
    case "$mode" in bios|uefi)
      check "$vm: data partition is ext4 at /var/lib/bulkhead" g "$vm" \
        'grep " /var/lib/bulkhead ext4 " /proc/mounts'
      check "$vm: first boot formatted the blank data partition" grep -q 'formatting blank data partition' "$TMP/$vm.console"
    esac
    stop_vm "$vm"
  else
    notok "$vm: no init marker"
  fi
done
log "boot times to marker (TCG): ${TIMES[*]}"
finish
