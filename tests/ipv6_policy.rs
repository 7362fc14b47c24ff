//! One policy for both families: the dual-stack config (tests/golden/dualstack.toml, the
//! shipped plan with a ULA /64 per segment) rendered and explained for IPv4 and IPv6.

mod common;

use std::net::IpAddr;

use bulkhead::model::{self, Proto};
use bulkhead::plan::{self, explain, ruleset};

fn dualstack() -> model::Model {
    let p = common::root().join("tests/golden/dualstack.toml");
    model::load(&p).unwrap_or_else(|r| panic!("{r}")).0
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn decide(
    m: &model::Model,
    rs: &ruleset::Ruleset,
    src: &str,
    dst: &str,
    proto: Proto,
    port: Option<u16>,
) -> explain::Decision {
    explain::explain(
        m,
        rs,
        &explain::Flow {
            src: ip(src),
            dst: ip(dst),
            proto,
            port,
        },
    )
}

#[test]
fn group_sets_are_split_per_family() {
    let m = dualstack();
    let rs = ruleset::build(&m);
    let v4 = rs.set("web_nodes").unwrap();
    assert!(!v4.ipv6);
    assert_eq!(v4.elements.len(), 1);
    let v6 = rs.set("web_nodes_v6").unwrap();
    assert!(v6.ipv6);
    assert_eq!(v6.elements6[0].to_string(), "fd00:30::10/124");
    assert!(
        rs.set("quarantine_v6")
            .is_some_and(|s| s.ipv6 && s.timeout.is_some())
    );
    let script = match plan::build(&m, None).firewall {
        plan::FirewallText::Nftables { script } => script,
        _ => unreachable!(),
    };
    assert!(script.contains("set web_nodes_v6 {\n\t\ttype ipv6_addr"));
    assert!(script.contains("ip6 saddr @web_nodes_v6 ip6 daddr @app_nodes_v6 tcp dport 8080"));
    // no NAT66: masquerade stays IPv4
    assert!(script.contains("oifname \"eth1\" meta nfproto ipv4 counter masquerade"));
    assert!(!script.contains("snat ip6") && !script.contains("dnat ip6"));
}

#[test]
fn explain_decides_both_families_alike() {
    let m = dualstack();
    let rs = ruleset::build(&m);
    for (src, dst, proto, port, allowed, by) in [
        // internal -> dmz web: a segment rule, both families
        (
            "192.168.20.50",
            "192.168.10.10",
            Proto::Tcp,
            Some(443),
            true,
            "internal-to-dmz-web",
        ),
        (
            "fd00:20::50",
            "fd00:10::10",
            Proto::Tcp,
            Some(443),
            true,
            "internal-to-dmz-web",
        ),
        // group to group
        (
            "192.168.30.12",
            "192.168.30.22",
            Proto::Tcp,
            Some(8080),
            true,
            "web-to-app",
        ),
        (
            "fd00:30::12",
            "fd00:30::22",
            Proto::Tcp,
            Some(8080),
            true,
            "web-to-app",
        ),
        // guest may not reach the servers
        (
            "192.168.200.7",
            "192.168.30.53",
            Proto::Udp,
            Some(53),
            false,
            "default-drop",
        ),
        (
            "fd00:200::7",
            "fd00:30::53",
            Proto::Udp,
            Some(53),
            false,
            "default-drop",
        ),
        // guest has internet (both families)
        (
            "192.168.200.7",
            "198.51.100.7",
            Proto::Tcp,
            Some(443),
            true,
            "guest",
        ),
        (
            "fd00:200::7",
            "2001:db8:1::7",
            Proto::Tcp,
            Some(443),
            true,
            "guest",
        ),
        // dmz: DNS-only egress profile
        (
            "fd00:10::10",
            "2001:db8:1::7",
            Proto::Tcp,
            Some(443),
            false,
            "default-drop",
        ),
        (
            "fd00:10::10",
            "2001:db8:1::7",
            Proto::Udp,
            Some(53),
            true,
            "dns:dmz",
        ),
        // SSH to the gateway only from mgmt
        (
            "fd00:100::5",
            "fd00:100::1",
            Proto::Tcp,
            Some(22),
            true,
            "mgmt",
        ),
        (
            "fd00:20::5",
            "fd00:20::1",
            Proto::Tcp,
            Some(22),
            false,
            "default-drop",
        ),
        // ping crosses when a rule allows every protocol (mgmt-to-all), ICMPv6 included
        (
            "fd00:100::5",
            "fd00:30::53",
            Proto::Icmp,
            None,
            true,
            "mgmt-to-all",
        ),
        (
            "fd00:200::5",
            "fd00:30::53",
            Proto::Icmp,
            None,
            false,
            "default-drop",
        ),
        // the internet reaches no IPv6 host (no port forwards in IPv6)
        (
            "2001:db8:1::7",
            "fd00:10::10",
            Proto::Tcp,
            Some(443),
            false,
            "default-drop",
        ),
    ] {
        let d = decide(&m, &rs, src, dst, proto, port);
        assert_eq!(
            d.allowed(),
            allowed,
            "{src} -> {dst} {proto:?}/{port:?}: {}",
            d.describe()
        );
        let name = d
            .rule
            .as_ref()
            .map(|r| r.origin.name.clone())
            .unwrap_or_default();
        assert_eq!(name, by, "{src} -> {dst}: {}", d.describe());
    }
}

#[test]
fn host_files_take_icmpv6_per_rfc4890_only() {
    let m = dualstack();
    let shipped = model::load(&common::root().join("overlay/etc/bulkhead/bulkhead.toml"))
        .unwrap()
        .0;
    for (m, role) in [(&m, "web_nodes"), (&shipped, "web_nodes")] {
        let text = plan::hostrules::render(m, role).unwrap();
        let input = &text[text.find("chain input").unwrap()..text.find("chain output").unwrap()];
        // never all ICMPv6: redirects, router renumbering, unsolicited replies are dropped
        assert!(!input.contains("ipv6-icmp"), "{input}");
        assert!(input.contains("icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 counter accept"));
        assert!(input.contains("icmpv6 type echo-request limit rate"));
        assert!(!input.contains("nd-redirect"));
    }
    let text = plan::hostrules::render(&m, "app_nodes").unwrap();
    assert!(
        text.contains("ip6 saddr @web_nodes_v6 tcp dport 8080 counter accept"),
        "{text}"
    );
    assert!(text.contains("set web_nodes_v6 {\n\t\ttype ipv6_addr"));
    assert!(text.contains("ip6 saddr @quarantine_v6 counter drop"));
}
