//! The IPv6 side of the model: what `[segments.NAME] subnet6`, `gateway6`, `prefix_id`,
//! `[segments.NAME.dhcp6]`, IPv6 `dns`, `[uplink] address6` / `prefix_delegation` and IPv6
//! group members resolve to. (Bad inputs and their messages are in invalid_configs.rs.)

use std::net::Ipv6Addr;

use bulkhead::model::{
    self, AddrRange6, DEFAULT_POOL6, Dhcp6Mode, Pool6, Prefix6, Uplink6Addressing,
};

const DUAL: &str = r#"[uplink]
interface = "wan0"
address6 = "2001:db8:ffff::2/64"
gateway6 = "fe80::1"
prefix_delegation = 56

[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"
subnet6 = "fd00:db8:1::/64"
[segments.lan.dhcp]
ranges = ["198.18.1.100-198.18.1.200"]
lease_time = "10m"
dns = ["198.18.1.53", "fd00:db8:1::53"]
domain = "lan.example"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true
subnet6 = "delegated"
prefix_id = 2
gateway6 = "::fe"
[segments.admin.dhcp6]
mode = "stateful"
range6 = ["::100", "::1ff"]

[segments.srv]
interface = "lan2"
subnet = "198.18.3.0/24"
gateway = "198.18.3.1"
subnet6 = "fd00:db8:3::/64"
gateway6 = "fd00:db8:3::a"
[segments.srv.dhcp6]
mode = "stateful"

[segments.guest]
interface = "lan3"
subnet = "198.18.4.0/24"
gateway = "198.18.4.1"
subnet6 = "fd00:db8:4::/64"
[segments.guest.dhcp6]
mode = "stateless"

[segments.legacy]
interface = "lan4"
subnet = "198.18.5.0/24"
gateway = "198.18.5.1"

[groups.mixed]
members = ["198.18.1.10", "fd00:db8:1::10", "fd00:db8:3::/120", "fd00:db8:1::20-fd00:db8:1::2f"]
"#;

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

#[test]
fn dual_stack_config_resolves_segment6() {
    let (m, warnings) = model::load_str("dual.toml", DUAL).unwrap_or_else(|r| panic!("{r}"));
    assert!(!warnings.has_errors());
    assert!(m.has_ipv6());

    assert_eq!(
        m.uplink.address6,
        Uplink6Addressing::Static {
            address: "2001:db8:ffff::2/64".parse().unwrap(),
            gateway: a6("fe80::1"),
        }
    );
    assert_eq!(m.uplink.prefix_delegation, Some(56));

    let lan = m.segment("lan").unwrap().ipv6.as_ref().unwrap();
    assert_eq!(lan.segment, "lan");
    assert_eq!(lan.ifname, "lan0");
    assert_eq!(
        lan.prefix,
        Prefix6::Static("fd00:db8:1::/64".parse().unwrap())
    );
    assert_eq!(lan.gateway6(None), Some(a6("fd00:db8:1::1")));
    assert_eq!(lan.mode, Dhcp6Mode::Slaac);
    assert_eq!(lan.pool, None);
    // v6 DNS goes to RDNSS/DHCPv6, v4 to DHCPv4 only.
    assert_eq!(lan.dns6, [a6("fd00:db8:1::53")]);
    assert_eq!(
        m.segment("lan").unwrap().dhcp.as_ref().unwrap().dns,
        ["198.18.1.53".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    assert_eq!(lan.domain.as_deref(), Some("lan.example"));
    assert_eq!(lan.lease_time, 600);

    // A delegated segment: the prefix_id-th /64 of whatever the uplink gets.
    let admin = m.segment("admin").unwrap().ipv6.as_ref().unwrap();
    assert_eq!(admin.prefix, Prefix6::Delegated { prefix_id: 2 });
    assert_eq!(admin.subnet6(None), None);
    let pd = "2001:db8:aa00::/56".parse().unwrap();
    assert_eq!(
        admin.subnet6(Some(pd)),
        Some("2001:db8:aa00:2::/64".parse().unwrap())
    );
    assert_eq!(admin.gateway6(Some(pd)), Some(a6("2001:db8:aa00:2::fe")));
    assert_eq!(admin.mode, Dhcp6Mode::Stateful);
    assert_eq!(
        admin.pool,
        Some(Pool6 {
            first: 0x100,
            last: 0x1ff
        })
    );
    assert_eq!(
        admin.pool_in(Some(pd)),
        Some(AddrRange6 {
            lo: a6("2001:db8:aa00:2::100"),
            hi: a6("2001:db8:aa00:2::1ff"),
        })
    );
    // A renumbered (smaller) delegation that cannot hold the id leaves the segment without.
    assert_eq!(
        admin.subnet6(Some("2001:db8:bb00::/63".parse().unwrap())),
        None
    );

    let srv = m.segment("srv").unwrap().ipv6.as_ref().unwrap();
    assert_eq!(srv.gateway_iid, 0xa);
    assert_eq!(srv.pool, Some(DEFAULT_POOL6));
    assert_eq!(
        srv.pool_in(None).unwrap().to_string(),
        "fd00:db8:3::1000/116"
    );
    assert_eq!(
        m.segment("guest").unwrap().ipv6.as_ref().unwrap().mode,
        Dhcp6Mode::Stateless
    );
    assert!(m.segment("legacy").unwrap().ipv6.is_none());
    assert_eq!(m.segments6().count(), 4);

    let g = m.group("mixed").unwrap();
    assert_eq!(g.members.len(), 1);
    let six: Vec<String> = g.members6.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        six,
        ["fd00:db8:1::10", "fd00:db8:3::/120", "fd00:db8:1::20/124"]
    );
    assert_eq!(m.segment_of6(a6("fd00:db8:3::5")).unwrap().name, "srv");
}

#[test]
fn ipv4_only_config_has_no_ipv6() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("overlay/etc/bulkhead/bulkhead.toml"),
    )
    .unwrap();
    let (m, _) = model::load_str("shipped.toml", &text).unwrap();
    assert!(!m.has_ipv6());
    assert_eq!(m.uplink.address6, Uplink6Addressing::None);
    assert!(m.segments.iter().all(|s| s.ipv6.is_none()));
}
