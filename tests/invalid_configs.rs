//! Broken configs and the exact lines `check` reports for them: every problem at once, each as
//! FILE:LINE:COL: key.path: message.

use bulkhead::plan;

/// A valid config each case starts from (appending to it or replacing a piece of it).
const BASE: &str = r#"[uplink]
interface = "wan0"

[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true
"#;

enum Edit {
    Append(&'static str),
    Whole(&'static str),
}

fn text(e: &Edit) -> String {
    match e {
        Edit::Append(s) => format!("{BASE}{s}"),
        Edit::Whole(s) => s.to_string(),
    }
}

#[test]
fn base_is_valid() {
    plan::load_str("bad.toml", BASE).unwrap();
}

#[rustfmt::skip]
const CASES: &[(&str, Edit, &[&str])] = &[
    ("toml_syntax", Edit::Whole(r#"[uplink]
interface = "wan0"

[segments.lan]
interface = "lan0
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true
"#), &[
        r#"bad.toml:5:18: syntax: invalid basic string, expected `"`"#,
    ]),
    ("unknown_key", Edit::Whole(r#"[uplink]
interface = "wan0"

[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"
gatway = "x"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true
"#), &[
        r#"bad.toml:8:1: segments.lan.gatway: unknown field `gatway`, expected one of `description`, `vlan`, `interface`, `link_name`, `subnet`, `gateway`, `mtu`, `internet`, `egress`, `management`, `dhcp`"#,
    ]),
    ("unknown_section", Edit::Append(r#"
[firewall]
x = 1
"#), &[
        r#"bad.toml:15:2: firewall: unknown section `firewall`, expected one of: system, uplink, trunk, segments, groups, rules, forwards, egress, management, logging, alerts, sysctl"#,
    ]),
    ("wrong_type", Edit::Whole(r#"[uplink]
interface = "wan0"

[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = "yes"
"#), &[
        r#"bad.toml:13:14: segments.admin.management: wrong type: string "yes", expected a boolean"#,
    ]),
    ("two_errors_at_once", Edit::Whole(r#"[uplink]
interface = "wan0"

[segments.lan]
interface = 7
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"

[segments.admin]
interfac = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true
"#), &[
        r#"bad.toml:5:13: segments.lan.interface: wrong type: integer `7`, expected a string"#,
        r#"bad.toml:10:1: segments.admin.interfac: unknown field `interfac`, expected one of `description`, `vlan`, `interface`, `link_name`, `subnet`, `gateway`, `mtu`, `internet`, `egress`, `management`, `dhcp`"#,
    ]),
    ("missing_uplink", Edit::Whole(r#"
[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true
"#), &[
        r#"bad.toml:1:1: uplink: missing [uplink] section: the gateway needs an uplink interface"#,
    ]),
    ("overlapping_subnets", Edit::Whole(r#"[uplink]
interface = "wan0"

[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"

[segments.admin]
interface = "lan1"
subnet = "198.18.0.0/16"
gateway = "198.18.200.1"
management = true
"#), &[
        r#"bad.toml:11:10: segments.admin.subnet: subnet 198.18.0.0/16 overlaps segment `lan` (198.18.1.0/24)"#,
    ]),
    ("subnet_host_bits", Edit::Whole(r#"[uplink]
interface = "wan0"

[segments.lan]
interface = "lan0"
subnet = "198.18.1.5/24"
gateway = "198.18.1.1"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true
"#), &[
        r#"bad.toml:6:10: segments.lan.subnet: `198.18.1.5/24` has host bits set; did you mean `198.18.1.0/24`?"#,
    ]),
    ("gateway_outside", Edit::Whole(r#"[uplink]
interface = "wan0"

[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.9.1"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true
"#), &[
        r#"bad.toml:7:11: segments.lan.gateway: gateway 198.18.9.1 is outside the segment subnet 198.18.1.0/24"#,
    ]),
    ("gateway_is_broadcast", Edit::Whole(r#"[uplink]
interface = "wan0"

[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.255"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true
"#), &[
        r#"bad.toml:7:11: segments.lan.gateway: gateway 198.18.1.255 is the network or broadcast address of 198.18.1.0/24"#,
    ]),
    ("vlan_out_of_range", Edit::Append(r#"
[trunk]
interface = "eth0"

[segments.dmz]
vlan = 4095
subnet = "198.18.10.0/24"
gateway = "198.18.10.1"
"#), &[
        r#"bad.toml:19:8: segments.dmz.vlan: VLAN id 4095 is out of range 1-4094"#,
    ]),
    ("duplicate_vlan", Edit::Append(r#"
[trunk]
interface = "eth0"

[segments.dmz]
vlan = 10
subnet = "198.18.10.0/24"
gateway = "198.18.10.1"

[segments.web]
vlan = 10
subnet = "198.18.11.0/24"
gateway = "198.18.11.1"
"#), &[
        r#"bad.toml:24:8: segments.web.vlan: VLAN id 10 is already used by segment `dmz`"#,
    ]),
    ("vlan_without_trunk", Edit::Append(r#"
[segments.dmz]
vlan = 10
subnet = "198.18.10.0/24"
gateway = "198.18.10.1"
"#), &[
        r#"bad.toml:16:8: segments.dmz.vlan: a VLAN segment needs a [trunk] interface"#,
    ]),
    ("vlan_and_interface", Edit::Append(r#"
[trunk]
interface = "eth0"

[segments.dmz]
vlan = 10
interface = "lan5"
subnet = "198.18.10.0/24"
gateway = "198.18.10.1"
"#), &[
        r#"bad.toml:20:13: segments.dmz.interface: a segment is either a VLAN (`vlan`) or a plain port (`interface`), not both"#,
    ]),
    ("ifname_too_long", Edit::Whole(r#"[uplink]
interface = "wan0"

[segments.lan]
interface = "enp0s31f6-segment"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true
"#), &[
        r#"bad.toml:5:13: segments.lan.interface: interface name `enp0s31f6-segment` is 17 bytes; Linux allows at most 15"#,
    ]),
    ("vlan_ifname_too_long", Edit::Append(r#"
[trunk]
interface = "enx00e04c680abc"

[segments.dmz]
vlan = 200
subnet = "198.18.10.0/24"
gateway = "198.18.10.1"
"#), &[
        r#"bad.toml:19:8: segments.dmz.vlan: interface name `enx00e04c680abc.200` is 19 bytes; Linux allows at most 15"#,
    ]),
    ("duplicate_interface", Edit::Whole(r#"[uplink]
interface = "wan0"

[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"

[segments.admin]
interface = "lan0"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true
"#), &[
        r#"bad.toml:10:13: segments.admin.interface: interface `lan0` is already used by segment `lan`"#,
    ]),
    ("segment_on_uplink", Edit::Whole(r#"[uplink]
interface = "wan0"

[segments.lan]
interface = "wan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true
"#), &[
        r#"bad.toml:5:13: segments.lan.interface: `wan0` is the uplink interface"#,
    ]),
    ("bad_segment_name", Edit::Append(r#"
[segments.Guest-Net]
interface = "lan9"
subnet = "198.18.9.0/24"
gateway = "198.18.9.1"
"#), &[
        r#"bad.toml:15:1: segments.Guest-Net: segment name `Guest-Net` must start with a-z and use only a-z, 0-9 and _ (at most 24)"#,
    ]),
    ("no_management", Edit::Whole(r#"[uplink]
interface = "wan0"

[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"

"#), &[
        r#"bad.toml:4:2: segments: no management segment: mark exactly one segment with `management = true`, or nobody can manage the gateway"#,
    ]),
    ("two_management", Edit::Whole(r#"[uplink]
interface = "wan0"

[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"
management = true

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true
"#), &[
        r#"bad.toml:14:14: segments.admin.management: segment `lan` is already the management segment; there can be only one"#,
    ]),
    ("dhcp_range_outside", Edit::Append(r#"
[segments.lan.dhcp]
ranges = ["198.18.5.10-198.18.5.20"]
"#), &[
        r#"bad.toml:16:11: segments.lan.dhcp.ranges[0]: range 198.18.5.10-198.18.5.20 is not inside the segment subnet 198.18.1.0/24"#,
    ]),
    ("dhcp_range_covers_gateway", Edit::Append(r#"
[segments.lan.dhcp]
ranges = ["198.18.1.1-198.18.1.50"]
"#), &[
        r#"bad.toml:16:11: segments.lan.dhcp.ranges[0]: range 198.18.1.1-198.18.1.50 covers the gateway address 198.18.1.1"#,
    ]),
    ("dhcp_ranges_overlap", Edit::Append(r#"
[segments.lan.dhcp]
ranges = ["198.18.1.10-198.18.1.50", "198.18.1.40-198.18.1.90"]
"#), &[
        r#"bad.toml:16:38: segments.lan.dhcp.ranges[1]: range 198.18.1.40-198.18.1.90 overlaps range 198.18.1.10-198.18.1.50"#,
    ]),
    ("dhcp_range_backwards", Edit::Append(r#"
[segments.lan.dhcp]
ranges = ["198.18.1.90-198.18.1.10"]
"#), &[
        r#"bad.toml:16:11: segments.lan.dhcp.ranges[0]: range `198.18.1.90-198.18.1.10` ends before it starts"#,
    ]),
    ("lease_longer_than_max", Edit::Append(r#"
[segments.lan.dhcp]
ranges = ["198.18.1.10-198.18.1.50"]
lease_time = "2d"
max_lease_time = "1d"
"#), &[
        r#"bad.toml:17:14: segments.lan.dhcp.lease_time: lease_time (172800s) is longer than max_lease_time (86400s)"#,
    ]),
    ("bad_duration", Edit::Append(r#"
[segments.lan.dhcp]
ranges = ["198.18.1.10-198.18.1.50"]
lease_time = "10 minutes"
"#), &[
        r#"bad.toml:17:14: segments.lan.dhcp.lease_time: `10 minutes` is not a duration (use s, m, h, d: "1h30m")"#,
    ]),
    ("dhcp_relays_not_addresses", Edit::Append(r#"
[segments.lan.dhcp]
ranges = ["198.18.1.10-198.18.1.50"]
relays = ["198.18.7.1", "relay.example", "198.18.7.1", "0.0.0.0"]
"#), &[
        r#"bad.toml:17:25: segments.lan.dhcp.relays[1]: `relay.example` is not an IPv4 address"#,
        r#"bad.toml:17:42: segments.lan.dhcp.relays[2]: relay 198.18.7.1 is listed twice"#,
        r#"bad.toml:17:56: segments.lan.dhcp.relays[3]: 0.0.0.0 cannot be a relay agent address (giaddr)"#,
    ]),
    ("reservation_outside", Edit::Append(r#"
[segments.lan.dhcp]
ranges = ["198.18.1.10-198.18.1.50"]
[[segments.lan.dhcp.reservations]]
mac = "52:54:00:00:00:01"
address = "198.18.2.20"
"#), &[
        r#"bad.toml:19:11: segments.lan.dhcp.reservations[0].address: 198.18.2.20 is not inside the segment subnet 198.18.1.0/24"#,
    ]),
    ("reservation_duplicate_mac", Edit::Append(r#"
[segments.lan.dhcp]
ranges = ["198.18.1.10-198.18.1.50"]
[[segments.lan.dhcp.reservations]]
mac = "52:54:00:00:00:01"
address = "198.18.1.60"
[[segments.lan.dhcp.reservations]]
mac = "52:54:00:00:00:01"
address = "198.18.1.61"
"#), &[
        r#"bad.toml:21:7: segments.lan.dhcp.reservations[1].mac: MAC 52:54:00:00:00:01 is already reserved by reservations[0]"#,
    ]),
    ("reservation_duplicate_address", Edit::Append(r#"
[segments.lan.dhcp]
ranges = ["198.18.1.10-198.18.1.50"]
[[segments.lan.dhcp.reservations]]
mac = "52:54:00:00:00:01"
address = "198.18.1.60"
[[segments.lan.dhcp.reservations]]
mac = "52:54:00:00:00:02"
address = "198.18.1.60"
"#), &[
        r#"bad.toml:22:11: segments.lan.dhcp.reservations[1].address: 198.18.1.60 is already reserved by reservations[0]"#,
    ]),
    ("reservation_bad_mac", Edit::Append(r#"
[segments.lan.dhcp]
ranges = ["198.18.1.10-198.18.1.50"]
[[segments.lan.dhcp.reservations]]
mac = "52:54:00:00:01"
address = "198.18.1.60"
"#), &[
        r#"bad.toml:18:7: segments.lan.dhcp.reservations[0].mac: `52:54:00:00:01` is not a MAC address like aa:bb:cc:dd:ee:ff"#,
    ]),
    ("reservation_unknown_group", Edit::Append(r#"
[segments.lan.dhcp]
ranges = ["198.18.1.10-198.18.1.50"]
[[segments.lan.dhcp.reservations]]
mac = "52:54:00:00:00:01"
address = "198.18.1.60"
group = "printers"
"#), &[
        r#"bad.toml:20:9: segments.lan.dhcp.reservations[0].group: no group named `printers`"#,
    ]),
    ("dhcp_managed_option", Edit::Append(r#"
[segments.lan.dhcp]
ranges = ["198.18.1.10-198.18.1.50"]
[[segments.lan.dhcp.options]]
code = 3
ips = ["198.18.1.1"]
"#), &[
        r#"bad.toml:18:8: segments.lan.dhcp.options[0].code: option 3 is set by bulkhead itself: router (the segment gateway)"#,
    ]),
    ("rule_undefined_refs", Edit::Append(r#"
[[rules]]
name = "a"
from = "lan"
to = "databases"
proto = "tcp"
ports = [5432]

[[rules]]
name = "b"
from = "dmz"
to = "lan"
"#), &[
        r#"bad.toml:18:6: rules[0].to: `databases` is not a segment, a group, `internet`, `gateway` or `any`"#,
        r#"bad.toml:24:8: rules[1].from: `dmz` is not a segment, a group, `internet` or `any`"#,
    ]),
    ("rule_port_out_of_range", Edit::Append(r#"
[[rules]]
name = "a"
from = "lan"
to = "admin"
proto = "tcp"
ports = [70000, "9000-8000"]
"#), &[
        r#"bad.toml:20:10: rules[0].ports[0]: port 70000 is out of range 1-65535"#,
        r#"bad.toml:20:17: rules[0].ports[1]: port range `9000-8000` ends before it starts"#,
    ]),
    ("rule_ports_without_proto", Edit::Append(r#"
[[rules]]
name = "a"
from = "lan"
to = "admin"
ports = [22]
"#), &[
        r#"bad.toml:19:9: rules[0].ports: ports need a protocol: add proto = "tcp", "udp" or ["tcp", "udp"]"#,
    ]),
    ("rule_icmp_with_ports", Edit::Append(r#"
[[rules]]
name = "a"
from = "lan"
to = "admin"
proto = "icmp"
ports = [22]
"#), &[
        r#"bad.toml:20:9: rules[0].ports: ports apply only to tcp and udp, not to icmp or any"#,
    ]),
    ("rule_bad_proto", Edit::Append(r#"
[[rules]]
name = "a"
from = "lan"
to = "admin"
proto = "sctp"
"#), &[
        r#"bad.toml:19:9: rules[0].proto: unknown protocol `sctp`, expected tcp, udp, icmp or any"#,
    ]),
    ("rule_duplicate_name", Edit::Append(r#"
[[rules]]
name = "a"
from = "lan"
to = "admin"

[[rules]]
name = "a"
from = "admin"
to = "lan"
"#), &[
        r#"bad.toml:21:8: rules[1].name: rule name `a` is already used by rules[0]"#,
    ]),
    ("rule_from_gateway", Edit::Append(r#"
[[rules]]
name = "a"
from = "gateway"
to = "lan"
"#), &[
        r#"bad.toml:17:8: rules[0].from: `gateway` can only be a destination; the gateway's own egress is set by system.gateway_egress"#,
    ]),
    ("lockout_ssh_from_lan", Edit::Append(r#"
[[rules]]
name = "lan-ssh"
from = "lan"
to = "gateway"
proto = "tcp"
ports = [22]
"#), &[
        r#"bad.toml:15:1: rules[0]: rule `lan-ssh` lets segment `lan` reach SSH (tcp/22) on the gateway; it is allowed only from the management segment `admin`"#,
    ]),
    ("lockout_ssh_from_any", Edit::Append(r#"
[[rules]]
name = "open-gw"
from = "any"
to = "gateway"
"#), &[
        r#"bad.toml:15:1: rules[0]: rule `open-gw` lets segment `lan` reach SSH (tcp/22) on the gateway; it is allowed only from the management segment `admin`"#,
    ]),
    ("lockout_sources_outside_mgmt", Edit::Append(r#"
[groups.admins]
members = ["198.18.1.10"]

[management]
sources = ["admins"]
"#), &[
        r#"bad.toml:19:11: management.sources: no address of the management segment `admin` (198.18.2.0/24) is left to manage the gateway: this would lock every administrator out"#,
        r#"bad.toml:19:12: warning: management.sources[0]: group `admins` has members outside the management segment `admin` (198.18.2.0/24); only those inside it can manage the gateway"#,
    ]),
    ("lockout_empty_sources", Edit::Append(r#"
[management]
sources = []
"#), &[
        r#"bad.toml:16:11: management.sources: an empty source list would lock every administrator out of the gateway"#,
    ]),
    ("group_bad_member", Edit::Append(r#"
[groups.web]
members = ["198.18.1.10-198.18.1.5", "10.0.0.1/33", "db01"]
"#), &[
        r#"bad.toml:16:12: groups.web.members[0]: range `198.18.1.10-198.18.1.5` ends before it starts"#,
        r#"bad.toml:16:38: groups.web.members[1]: `10.0.0.1/33` is not an IPv4 CIDR block"#,
        r#"bad.toml:16:53: groups.web.members[2]: `db01` is not an IPv4 address, CIDR block or range (a.b.c.d-e.f.g.h)"#,
    ]),
    ("group_named_like_segment", Edit::Append(r#"
[groups.lan]
members = ["198.18.1.10"]
"#), &[
        r#"bad.toml:15:1: groups.lan: `lan` names a segment already; a group needs a name of its own"#,
    ]),
    ("forward_outside_segments", Edit::Append(r#"
[[forwards]]
name = "web"
proto = "tcp"
port = 443
to = "192.0.2.10"
"#), &[
        r#"bad.toml:19:6: forwards[0].to: 192.0.2.10 is not inside any segment"#,
    ]),
    ("forward_duplicate_port", Edit::Append(r#"
[[forwards]]
name = "web"
proto = "tcp"
port = 443
to = "198.18.1.10"

[[forwards]]
name = "web2"
proto = "tcp"
port = "400-500"
to = "198.18.1.11"
"#), &[
        r#"bad.toml:24:8: forwards[1].port: tcp port 400-500 is already forwarded by `web`"#,
    ]),
    ("egress_unknown_profile", Edit::Whole(r#"[uplink]
interface = "wan0"

[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"
egress = "updates"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true
"#), &[
        r#"bad.toml:8:10: segments.lan.egress: no egress profile named `updates`"#,
    ]),
    ("internet_and_egress", Edit::Whole(r#"[uplink]
interface = "wan0"

[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"
internet = true
egress = "dns"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true

[egress.dns]
allow = [{ proto = "udp", ports = [53] }]
"#), &[
        r#"bad.toml:9:10: segments.lan.egress: `internet = true` allows all egress; `egress` limits it to a profile: choose one"#,
    ]),
    ("log_target_hostname_and_tls", Edit::Append(r#"
[[logging.targets]]
host = "siem.example"
transport = "tls"
"#), &[
        r#"bad.toml:15:1: logging.targets[0].ca_file: a tls target needs ca_file to verify the receiver"#,
        r#"bad.toml:16:8: logging.targets[0].host: `siem.example` must be an IPv4 address: the gateway does not depend on DNS to ship its logs"#,
    ]),
    ("bad_backend_and_uplink", Edit::Whole(r#"[uplink]
interface = "wan0"
address = "203.0.113.5"

[system]
backend = "pf"

[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true
"#), &[
        r#"bad.toml:3:11: uplink.address: `203.0.113.5` is neither "dhcp" nor an address with prefix like 203.0.113.2/24"#,
        r#"bad.toml:6:11: system.backend: unknown firewall backend `pf`, expected nftables or iptables"#,
    ]),
    ("mtu_out_of_range", Edit::Whole(r#"[uplink]
interface = "wan0"

[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"
mtu = 20000

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true
"#), &[
        r#"bad.toml:8:7: segments.lan.mtu: MTU 20000 is out of range 576-9216"#,
    ]),
    ("sysctl_bad", Edit::Append(r#"
[sysctl]
rp_filter = 3
extra = { "rm -rf" = "1" }
"#), &[
        r#"bad.toml:16:13: sysctl.rp_filter: rp_filter 3 must be 0 (off), 1 (strict) or 2 (loose)"#,
        r#"bad.toml:17:22: sysctl.extra.rm -rf: `rm -rf` is not a sysctl key like net.ipv4.tcp_timestamps"#,
    ]),
    ("target_name_quote", Edit::Append(r#"
[[logging.targets]]
name = "si\"em"
host = "198.18.2.9"
"#), &[
        r#"bad.toml:16:8: logging.targets[0].name: target name `si"em` must be 1-32 characters of a-z, A-Z, 0-9, - _ ."#,
    ]),
    ("sysctl_extra_managed_key", Edit::Append(r#"
[sysctl]
extra = { "net.ipv4.ip_forward" = "0" }
"#), &[
        r#"bad.toml:16:35: sysctl.extra.net.ipv4.ip_forward: `net.ipv4.ip_forward` is set by sysctl.forwarding; set that key instead"#,
    ]),
    ("disabled_dhcp_still_checked", Edit::Append(r#"
[segments.lan.dhcp]
enabled = false
ranges = ["198.18.9.10-198.18.9.20"]
"#), &[
        r#"bad.toml:17:11: segments.lan.dhcp.ranges[0]: range 198.18.9.10-198.18.9.20 is not inside the segment subnet 198.18.1.0/24"#,
    ]),
    ("every_rule_opening_ssh_is_reported", Edit::Append(r#"
[[rules]]
name = "first"
from = "lan"
to = "gateway"
proto = "tcp"
ports = [22]

[[rules]]
name = "second"
from = "internet"
to = "gateway"
proto = "tcp"
ports = ["20-30"]
"#), &[
        r#"bad.toml:15:1: rules[0]: rule `first` lets segment `lan` reach SSH (tcp/22) on the gateway; it is allowed only from the management segment `admin`"#,
        r#"bad.toml:22:1: rules[1]: rule `second` lets the internet reach SSH (tcp/22) on the gateway; it is allowed only from the management segment `admin`"#,
    ]),
    ("mgmt_rule_bypasses_sources", Edit::Append(r#"
[groups.admins]
members = ["198.18.2.10"]

[management]
sources = ["admins"]

[[rules]]
name = "mgmt-ssh"
from = "admin"
to = "gateway"
proto = "tcp"
ports = [22]
"#), &[
        r#"bad.toml:21:1: rules[0]: rule `mgmt-ssh` lets 198.18.2.2 (management segment, outside management.sources) reach SSH (tcp/22) on the gateway; it is allowed only from the management segment `admin` (management.sources)"#,
    ]),
    ("never_quarantine_unknown_group_and_bad_range", Edit::Append(r#"
[groups.trusted]
members = ["198.18.1.10"]

[alerts]
never_quarantine = ["trusted", "printers", "198.18.1.0/33", "198.18.1.5"]
"#), &[
        r#"bad.toml:19:32: alerts.never_quarantine[1]: `printers` is not a group defined in [groups] (nor an IPv4 address or CIDR block)"#,
        r#"bad.toml:19:44: alerts.never_quarantine[2]: `198.18.1.0/33` is not an IPv4 CIDR block"#,
    ]),
    ("ntp_servers", Edit::Append(r#"
[system]
ntp = ["192.0.2.123", "ntp..example", "0.0.0.0", "192.0.2.123", "300.1.2.3", "ntp.example.net"]
"#), &[
        r#"bad.toml:16:23: system.ntp[1]: `ntp..example` is neither an IPv4 address nor a host name"#,
        r#"bad.toml:16:39: system.ntp[2]: `0.0.0.0` cannot be an NTP server"#,
        r#"bad.toml:16:50: system.ntp[3]: `192.0.2.123` is listed twice"#,
        r#"bad.toml:16:65: system.ntp[4]: `300.1.2.3` is not an IPv4 address"#,
    ]),
];

#[test]
fn every_broken_config_reports_exact_lines() {
    assert!(CASES.len() >= 30);
    let mut failures = Vec::new();
    for (name, edit, want) in CASES {
        let got = match plan::load_str("bad.toml", &text(edit)) {
            Ok(_) => vec!["(accepted)".to_string()],
            Err(r) => r.lines(),
        };
        let got: Vec<&str> = got.iter().map(|s| s.as_str()).collect();
        if got != *want {
            failures.push(format!("{name}:\n  want: {want:#?}\n  got:  {got:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
