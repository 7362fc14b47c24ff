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
        r#"bad.toml:8:1: segments.lan.gatway: unknown field `gatway`, expected one of `description`, `vlan`, `interface`, `link_name`, `subnet`, `gateway`, `mtu`, `internet`, `egress`, `management`, `dhcp`, `subnet6`, `gateway6`, `prefix_id`, `dhcp6`"#,
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
        r#"bad.toml:10:1: segments.admin.interfac: unknown field `interfac`, expected one of `description`, `vlan`, `interface`, `link_name`, `subnet`, `gateway`, `mtu`, `internet`, `egress`, `management`, `dhcp`, `subnet6`, `gateway6`, `prefix_id`, `dhcp6`"#,
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
    ("v6_subnet_shape", Edit::Append(r#"
[segments.a]
interface = "lan2"
subnet = "198.18.3.0/24"
gateway = "198.18.3.1"
subnet6 = "fd00:db8:3::/56"

[segments.b]
interface = "lan3"
subnet = "198.18.4.0/24"
gateway = "198.18.4.1"
subnet6 = "fd00:db8:4::5/64"

[segments.c]
interface = "lan4"
subnet = "198.18.5.0/24"
gateway = "198.18.5.1"
subnet6 = "198.18.5.0/24"
"#), &[
        r#"bad.toml:19:11: segments.a.subnet6: subnet6 fd00:db8:3::/56 is a /56; a segment's IPv6 subnet must be a /64 (SLAAC needs it)"#,
        r#"bad.toml:25:11: segments.b.subnet6: `fd00:db8:4::5/64` has host bits set; did you mean `fd00:db8:4::/64`?"#,
        r#"bad.toml:31:11: segments.c.subnet6: `198.18.5.0/24` is neither an IPv6 prefix like fd00:10::/64 nor "delegated""#,
    ]),
    ("v6_subnet_link_local_and_multicast", Edit::Append(r#"
[segments.a]
interface = "lan2"
subnet = "198.18.3.0/24"
gateway = "198.18.3.1"
subnet6 = "fe80::/64"

[segments.b]
interface = "lan3"
subnet = "198.18.4.0/24"
gateway = "198.18.4.1"
subnet6 = "ff02::/64"
"#), &[
        r#"bad.toml:19:11: segments.a.subnet6: fe80::/64 is link-local (fe80::/10); subnet6 must be a global or ULA prefix"#,
        r#"bad.toml:25:11: segments.b.subnet6: ff02::/64 is multicast (ff00::/8); subnet6 must be a global or ULA prefix"#,
    ]),
    ("v6_subnets_overlap", Edit::Append(r#"
[segments.a]
interface = "lan2"
subnet = "198.18.3.0/24"
gateway = "198.18.3.1"
subnet6 = "fd00:db8:3::/64"

[segments.b]
interface = "lan3"
subnet = "198.18.4.0/24"
gateway = "198.18.4.1"
subnet6 = "fd00:db8:3::/64"
"#), &[
        r#"bad.toml:25:11: segments.b.subnet6: subnet6 fd00:db8:3::/64 is already segment `a`'s"#,
    ]),
    ("v6_gateway6", Edit::Append(r#"
[segments.a]
interface = "lan2"
subnet = "198.18.3.0/24"
gateway = "198.18.3.1"
subnet6 = "fd00:db8:3::/64"
gateway6 = "fd00:db8:4::1"

[segments.b]
interface = "lan3"
subnet = "198.18.4.0/24"
gateway = "198.18.4.1"
subnet6 = "fd00:db8:4::/64"
gateway6 = "fd00:db8:4::"

[segments.c]
interface = "lan4"
subnet = "198.18.5.0/24"
gateway = "198.18.5.1"
subnet6 = "fd00:db8:5::/64"
gateway6 = "gw"
"#), &[
        r#"bad.toml:20:12: segments.a.gateway6: gateway6 fd00:db8:4::1 is outside the segment's subnet6 fd00:db8:3::/64"#,
        r#"bad.toml:27:12: segments.b.gateway6: gateway6 fd00:db8:4:: is the subnet-router anycast address of fd00:db8:4::/64"#,
        r#"bad.toml:34:12: segments.c.gateway6: `gw` is not an IPv6 address"#,
    ]),
    ("v6_delegated_without_prefix_delegation", Edit::Append(r#"
[segments.a]
interface = "lan2"
subnet = "198.18.3.0/24"
gateway = "198.18.3.1"
subnet6 = "delegated"
prefix_id = 1
"#), &[
        r#"bad.toml:19:11: segments.a.subnet6: subnet6 = "delegated" needs `prefix_delegation = PLEN` in [uplink] to ask the upstream for a prefix"#,
    ]),
    ("v6_delegated_prefix_ids", Edit::Whole(r#"[uplink]
interface = "wan0"
address6 = "dhcpv6"
prefix_delegation = 60

[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"
subnet6 = "delegated"
prefix_id = 16

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true
subnet6 = "delegated"

[segments.a]
interface = "lan2"
subnet = "198.18.3.0/24"
gateway = "198.18.3.1"
subnet6 = "delegated"
prefix_id = 3
gateway6 = "::5"

[segments.b]
interface = "lan3"
subnet = "198.18.4.0/24"
gateway = "198.18.4.1"
subnet6 = "delegated"
prefix_id = 3

[segments.c]
interface = "lan4"
subnet = "198.18.5.0/24"
gateway = "198.18.5.1"
subnet6 = "fd00:db8:5::/64"
prefix_id = 4

[segments.d]
interface = "lan5"
subnet = "198.18.6.0/24"
gateway = "198.18.6.1"
subnet6 = "delegated"
prefix_id = 5
gateway6 = "fd00::1"
"#), &[
        r#"bad.toml:11:13: segments.lan.prefix_id: prefix_id 16 does not fit in a delegated /60: it holds 16 /64s, ids 0-15"#,
        r#"bad.toml:18:11: segments.admin.subnet6: subnet6 = "delegated" needs `prefix_id = N` (which /64 of the delegated prefix)"#,
        r#"bad.toml:33:13: segments.b.prefix_id: prefix_id 3 is already segment `a`'s"#,
        r#"bad.toml:40:13: segments.c.prefix_id: `prefix_id` numbers a delegated /64; it needs subnet6 = "delegated""#,
        r#"bad.toml:48:12: segments.d.gateway6: with subnet6 = "delegated", gateway6 is an interface id like ::1 (the prefix is not known in advance), not fd00::1"#,
    ]),
    ("v6_keys_without_subnet6", Edit::Append(r#"
[segments.a]
interface = "lan2"
subnet = "198.18.3.0/24"
gateway = "198.18.3.1"
gateway6 = "fd00:db8:3::1"
[segments.a.dhcp]
ranges = ["198.18.3.100-198.18.3.200"]
dns = ["198.18.3.53", "fd00:db8:3::53"]
[segments.a.dhcp6]
mode = "stateless"
"#), &[
        r#"bad.toml:19:12: segments.a.gateway6: `gateway6` needs `subnet6` (this segment is IPv4-only without it)"#,
        r#"bad.toml:22:23: segments.a.dhcp.dns[1]: IPv6 DNS server fd00:db8:3::53 on a segment without `subnet6`"#,
        r#"bad.toml:23:1: segments.a.dhcp6: `dhcp6` needs `subnet6` (this segment is IPv4-only without it)"#,
    ]),
    ("v6_dhcp6_mode_and_range6", Edit::Append(r#"
[segments.a]
interface = "lan2"
subnet = "198.18.3.0/24"
gateway = "198.18.3.1"
subnet6 = "fd00:db8:3::/64"
[segments.a.dhcp6]
mode = "stateful-ish"

[segments.b]
interface = "lan3"
subnet = "198.18.4.0/24"
gateway = "198.18.4.1"
subnet6 = "fd00:db8:4::/64"
[segments.b.dhcp6]
mode = "slaac"
range6 = ["fd00:db8:4::100", "fd00:db8:4::1ff"]

[segments.c]
interface = "lan4"
subnet = "198.18.5.0/24"
gateway = "198.18.5.1"
subnet6 = "fd00:db8:5::/64"
[segments.c.dhcp6]
mode = "stateful"
range6 = ["fd00:db8:5::100", "fd00:db8:6::1ff"]

[segments.d]
interface = "lan5"
subnet = "198.18.6.0/24"
gateway = "198.18.6.1"
subnet6 = "fd00:db8:6::/64"
[segments.d.dhcp6]
mode = "stateful"
range6 = ["fd00:db8:6::0:1", "fd00:db8:6::1ff"]

[segments.e]
interface = "lan6"
subnet = "198.18.7.0/24"
gateway = "198.18.7.1"
subnet6 = "fd00:db8:7::/64"
[segments.e.dhcp6]
mode = "stateful"
range6 = ["fd00:db8:7::2ff", "fd00:db8:7::200"]

[segments.f]
interface = "lan7"
subnet = "198.18.8.0/24"
gateway = "198.18.8.1"
subnet6 = "fd00:db8:8::/64"
[segments.f.dhcp6]
mode = "stateful"
range6 = ["fd00:db8:8::100"]
"#), &[
        r#"bad.toml:21:8: segments.a.dhcp6.mode: unknown mode `stateful-ish`, expected "slaac", "stateless" or "stateful""#,
        r#"bad.toml:30:10: segments.b.dhcp6.range6: range6 is an address pool for mode = "stateful"; mode "slaac" hands out no addresses"#,
        r#"bad.toml:39:30: segments.c.dhcp6.range6[1]: fd00:db8:6::1ff is outside the segment's subnet6 fd00:db8:5::/64"#,
        r#"bad.toml:48:10: segments.d.dhcp6.range6: range6 covers the gateway6 address"#,
        r#"bad.toml:57:10: segments.e.dhcp6.range6: range6 ends before it starts"#,
        r#"bad.toml:66:10: segments.f.dhcp6.range6: range6 is ["START", "END"], two addresses; got 1"#,
    ]),
    ("v6_dns_servers", Edit::Append(r#"
[segments.a]
interface = "lan2"
subnet = "198.18.3.0/24"
gateway = "198.18.3.1"
subnet6 = "fd00:db8:3::/64"
[segments.a.dhcp]
ranges = ["198.18.3.100-198.18.3.200"]
dns = ["198.18.3.53", "fd00:db8:3::zz", "ff02::1"]
"#), &[
        r#"bad.toml:22:23: segments.a.dhcp.dns[1]: `fd00:db8:3::zz` is not an IPv6 address"#,
        r#"bad.toml:22:41: segments.a.dhcp.dns[2]: ff02::1 cannot be a DNS server"#,
    ]),
    ("v6_uplink_address6", Edit::Whole(r#"[uplink]
interface = "wan0"
address6 = "2001:db8::2"
prefix_delegation = 40

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
        r#"bad.toml:3:12: uplink.address6: `2001:db8::2` is neither "none", "slaac", "dhcpv6" nor an IPv6 address with prefix like 2001:db8::2/64"#,
        r#"bad.toml:4:21: uplink.prefix_delegation: prefix length 40 is out of range 48-64"#,
    ]),
    ("v6_uplink_static_needs_gateway6", Edit::Whole(r#"[uplink]
interface = "wan0"
address6 = "2001:db8::2/64"

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
        r#"bad.toml:3:12: uplink.address6: a static address6 needs `gateway6` (the upstream router, e.g. fe80::1)"#,
    ]),
    ("v6_subnet6_overlaps_uplink", Edit::Whole(r#"[uplink]
interface = "wan0"
address6 = "2001:db8::2/48"
gateway6 = "fe80::1"

[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"
subnet6 = "2001:db8:0:7::/64"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true
"#), &[
        r#"bad.toml:10:11: segments.lan.subnet6: subnet6 2001:db8:0:7::/64 overlaps the uplink's IPv6 prefix 2001:db8::/48"#,
    ]),
    ("v6_uplink_gateway6", Edit::Whole(r#"[uplink]
interface = "wan0"
address6 = "slaac"
gateway6 = "fe80::1"

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
        r#"bad.toml:4:12: uplink.gateway6: gateway6 is given only with a static address6; the upstream's router advertisements supply it"#,
    ]),
    ("v6_uplink_link_local", Edit::Whole(r#"[uplink]
interface = "wan0"
address6 = "fe80::2/64"
gateway6 = "fe80::1"

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
        r#"bad.toml:3:12: uplink.address6: fe80::2 is link-local (fe80::/10); the uplink needs a global or ULA address"#,
    ]),
    ("v6_uplink_gateway6_outside", Edit::Whole(r#"[uplink]
interface = "wan0"
address6 = "2001:db8::2/64"
gateway6 = "2001:db8:1::1"

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
        r#"bad.toml:4:12: uplink.gateway6: gateway6 2001:db8:1::1 is neither link-local (fe80::/10) nor inside the uplink prefix 2001:db8::/64"#,
    ]),
    ("v6_group_members", Edit::Append(r#"
[groups.mixed]
members = ["198.18.1.10", "fd00:db8:1::10", "fd00:db8:1::/120", "fd00:db8:1::20-fd00:db8:1::2f", "ff02::1", "fe80::1", "fd00:db8:1::5/64", "fd00::x"]
"#), &[
        r#"bad.toml:16:98: groups.mixed.members[4]: `ff02::1` is multicast (ff00::/8); a group member must be a global or ULA address"#,
        r#"bad.toml:16:109: groups.mixed.members[5]: `fe80::1` is link-local (fe80::/10); a group member must be a global or ULA address"#,
        r#"bad.toml:16:120: groups.mixed.members[6]: `fd00:db8:1::5/64` has host bits set; did you mean `fd00:db8:1::/64`?"#,
        r#"bad.toml:16:140: groups.mixed.members[7]: `fd00::x` is not an IPv6 address, CIDR block or range (x::a-x::b)"#,
    ]),
    ("v6_iptables_backend", Edit::Append(r#"
[system]
backend = "iptables"

[segments.a]
interface = "lan2"
subnet = "198.18.3.0/24"
gateway = "198.18.3.1"
subnet6 = "fd00:db8:3::/64"
"#), &[
        r#"bad.toml:22:11: segments.a.subnet6: IPv6 needs the nftables backend: the iptables backend renders IPv4 only; set [system] backend = "nftables" or remove the IPv6 keys"#,
    ]),
    ("v6_group_name_suffix", Edit::Append(r#"
[groups.web_v6]
members = ["198.18.1.10"]
"#), &[
        r#"bad.toml:15:1: groups.web_v6: group name `web_v6` ends in `_v6`, which names the IPv6 set of group `web`; choose another name"#,
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
