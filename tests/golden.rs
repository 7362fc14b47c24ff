//! Golden renderings: every config under tests/golden (and the shipped one) against its
//! expected plan, nftables script, iptables/ipset inputs and host rules.
//!
//! Re-bless after an intended change with: `BULKHEAD_BLESS=1 cargo test --test golden`

mod common;

use bulkhead::model::{self, Backend};
use bulkhead::plan::{self, FirewallText, Part};

fn outputs(name: &str, path: &std::path::Path) -> Vec<(String, String)> {
    let (m, _) = model::load(path).unwrap_or_else(|r| panic!("{name} must be valid:\n{r}"));
    let mut v = Vec::new();
    let own = plan::build(&m, None);
    v.push((format!("{name}.plan.txt"), own.text(None)));
    let p = plan::build(&m, Some(Backend::Nftables));
    if let FirewallText::Nftables { script } = &p.firewall {
        v.push((format!("{name}.nft"), script.clone()));
    }
    let p = plan::build(&m, Some(Backend::Iptables));
    // IPv6 configs are refused with the iptables backend: no iptables rendering.
    if let FirewallText::Iptables { ipset, rules } = &p.firewall
        && !m.has_ipv6()
    {
        v.push((format!("{name}.ipset"), ipset.clone()));
        v.push((format!("{name}.iptables"), rules.clone()));
    }
    for g in &m.groups {
        if name == "shipped" || name == "iptables" || name == "dualstack" {
            v.push((
                format!("{name}.hostrules.{}.nft", g.name),
                plan::hostrules::render(&m, &g.name).unwrap(),
            ));
        }
    }
    v
}

#[test]
fn renderings_match_golden_files() {
    let dir = common::root().join("tests/golden/out");
    let bless = std::env::var_os("BULKHEAD_BLESS").is_some();
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    for (name, path) in common::golden_configs() {
        for (file, text) in outputs(&name, &path) {
            let golden = dir.join(&file);
            if bless {
                std::fs::write(&golden, &text).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&golden).unwrap_or_default();
            if want != text {
                let line = want
                    .lines()
                    .zip(text.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or(want.lines().count().min(text.lines().count()));
                failures.push(format!(
                    "{file}: differs from line {}:\n  golden: {:?}\n  now:    {:?}",
                    line + 1,
                    want.lines().nth(line),
                    text.lines().nth(line)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\nre-bless with BULKHEAD_BLESS=1 cargo test --test golden",
        failures.join("\n")
    );
}

#[test]
fn plans_are_deterministic() {
    for (name, path) in common::golden_configs() {
        let (a, _) = model::load(&path).unwrap();
        let (b, _) = model::load(&path).unwrap();
        for part in [None, Some(Part::Firewall), Some(Part::Dhcp)] {
            assert_eq!(
                plan::build(&a, None).text(part),
                plan::build(&b, None).text(part),
                "{name}"
            );
            assert_eq!(
                plan::build(&a, None).json(part),
                plan::build(&b, None).json(part),
                "{name}"
            );
        }
        let v: serde_json::Value = serde_json::from_str(&plan::build(&a, None).json(None)).unwrap();
        assert!(v["ruleset"]["chains"].is_array(), "{name}");
    }
}

#[test]
fn every_rendered_rule_names_its_origin() {
    for (name, path) in common::golden_configs() {
        let (m, _) = model::load(&path).unwrap();
        let p = plan::build(&m, Some(Backend::Nftables));
        let FirewallText::Nftables { script } = &p.firewall else {
            unreachable!()
        };
        for l in script.lines() {
            let t = l.trim();
            let is_rule = t.contains(" accept")
                || t.contains(" drop")
                || t.contains(" return")
                || t.contains(" jump ")
                || t.contains(" log ")
                || t.contains(" dnat ")
                || t.contains(" masquerade");
            if is_rule && !t.starts_with("type ") {
                assert!(
                    t.contains("comment \""),
                    "{name}: rule without comment: {t}"
                );
            }
        }
        for r in &m.rules {
            assert!(
                script.contains(&format!("comment \"rule:{}\"", r.name)),
                "{name}: rule {} not rendered",
                r.name
            );
        }
    }
}

#[test]
fn groups_are_sets_not_rule_per_host() {
    let (_, path) = common::golden_configs()
        .into_iter()
        .find(|(n, _)| n == "manygroups")
        .unwrap();
    let (m, _) = model::load(&path).unwrap();
    let rs = plan::ruleset::build(&m);
    let p = plan::build(&m, Some(Backend::Nftables));
    let FirewallText::Nftables { script } = &p.firewall else {
        unreachable!()
    };
    // one rule line per config rule (tcp only), whatever the number of members
    for r in m.rules.iter().filter(|r| r.name.starts_with("svc")) {
        let n = script
            .lines()
            .filter(|l| l.contains(&format!("comment \"rule:{}\"", r.name)))
            .count();
        assert_eq!(n, 1, "{}", r.name);
    }
    assert!(rs.element_count() >= 49);
    assert!(script.contains("ip saddr @svc00 ip daddr @svc01"));
}

/// The shipped default carries the address plan of the deployment Bulkhead replaces: DMZ
/// 192.168.10.0/24 on VLAN 10, internal .20 on 20, server .30 on 30, mgmt .100 on 100, guest
/// .200 on 200, the gateway at .1 of each. 198.18.0.0/15 is reserved for benchmarking and is
/// left to the test configs.
#[test]
fn shipped_config_uses_the_seeds_address_plan() {
    use bulkhead::model::SegmentLink;
    let path = common::root().join("overlay/etc/bulkhead/bulkhead.toml");
    let (m, _) = model::load(&path).unwrap();
    let want = [
        ("dmz", 10u16, "192.168.10.0/24", "192.168.10.1"),
        ("internal", 20, "192.168.20.0/24", "192.168.20.1"),
        ("server", 30, "192.168.30.0/24", "192.168.30.1"),
        ("mgmt", 100, "192.168.100.0/24", "192.168.100.1"),
        ("guest", 200, "192.168.200.0/24", "192.168.200.1"),
    ];
    assert_eq!(m.segments.len(), want.len());
    for (name, vlan, subnet, gateway) in want {
        let s = m
            .segment(name)
            .unwrap_or_else(|| panic!("no segment {name}"));
        assert!(
            matches!(&s.link, SegmentLink::Vlan { id, .. } if *id == vlan),
            "{name}: {:?}",
            s.link
        );
        assert_eq!(s.subnet.to_string(), subnet, "{name}");
        assert_eq!(s.gateway.to_string(), gateway, "{name}");
        let d = s.dhcp.as_ref().unwrap();
        for r in &d.ranges {
            assert!(
                s.subnet.contains(&r.lo) && s.subnet.contains(&r.hi),
                "{name}"
            );
        }
    }
    // no address of the benchmarking range is left anywhere in the file
    let bench: ipnet::Ipv4Net = "198.18.0.0/15".parse().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    for word in text.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
        if let Ok(a) = word.parse::<std::net::Ipv4Addr>() {
            assert!(!bench.contains(&a), "shipped config still uses {a}");
        }
    }
}
