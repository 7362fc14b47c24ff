#!/bin/sh
# rtest=smoke: the kernel features the gateway relies on work in this image.
set -e
fail() { echo "smoke: FAIL: $*"; exit 1; }
# loaded at boot (the iptables/ipset ones are `later` in /etc/bulkhead/modules: loaded once
# bulkhead run is ready, or by the kernel on first use, checked after their use below)
for m in 8021q nf_tables nft_ct nft_nat nft_masq nft_chain_nat nft_log nft_limit \
         nft_reject_inet nfnetlink_log nf_conntrack nf_nat nf_flow_table_inet \
         nft_flow_offload virtio_net; do
  grep -q "^$m " /proc/modules || fail "module $m not loaded"
done
/sbin/ip link add link eth0 name eth0.99 type vlan id 99 || fail "vlan"
/sbin/ip -d link show eth0.99 | grep -q 'vlan protocol 802.1Q id 99' || fail "vlan details"
/sbin/ip link del eth0.99
nft -f - <<'NFT' || fail "nft"
table inet smoke {
  set nets {
    type ipv4_addr
    flags interval
    elements = { 198.18.0.0/15 }
  }
  chain filter_fwd {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    ip saddr @nets counter log prefix "smoke " limit rate 1/second accept
    meta l4proto tcp reject with tcp reset
  }
  chain nat_post {
    type nat hook postrouting priority 100;
    oifname "eth1" masquerade
  }
}
NFT
nft delete table inet smoke
iptables -t filter -A INPUT -p tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT || fail "iptables-nft"
iptables -D INPUT -p tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT
ipset create smoke hash:net && ipset add smoke 198.18.0.0/15 && ipset destroy smoke || fail "ipset"
ipset create smoke1 hash:ip && ipset add smoke1 198.18.0.1 && ipset destroy smoke1 || fail "ipset hash:ip"
for m in ip_set ip_set_hash_net ip_set_hash_ip xt_tcpudp xt_conntrack nft_compat; do
  grep -q "^$m " /proc/modules || fail "module $m not loaded after its use"
done
echo "smoke: ok"
