//! Every golden rendering is loaded for real into a fresh network namespace: nftables with
//! `nft -c -f` then `nft -f` (twice: replacing works), iptables with `ipset restore` +
//! `iptables-restore --test` then a real load, and every host-rules file with `nft -c -f`.

mod common;

use bulkhead::model::{self, Backend};
use bulkhead::plan::{self, FirewallText};
use common::{Netns, TempDir};

fn write(dir: &TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn assert_ok(o: std::process::Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn nftables_renderings_load() {
    require_root!();
    let dir = TempDir::new("nftload");
    for (name, path) in common::golden_configs() {
        let (m, _) = model::load(&path).unwrap();
        let ns = Netns::new("nft");
        // With flow offload: where the kernel has flowtables, its devices must exist; where it
        // has none, the apply loads the plan without the flowtable, and so does this test.
        let mut p = plan::build(&m, Some(Backend::Nftables));
        if let Some(ft) = p.ruleset.flowtable.clone() {
            if ns.run(&["nft", "-c", "add table inet probe; add flowtable inet probe ft { hook ingress priority filter; devices = { lo }; }"]).status.success() {
                for d in &ft.devices {
                    ns.ok(&["ip", "link", "add", d, "type", "dummy"]);
                }
            } else {
                p = p.without_flow_offload();
            }
        }
        let FirewallText::Nftables { script } = p.firewall else {
            unreachable!()
        };
        let f = write(&dir, &format!("{name}.nft"), &script);
        // a table we do not own must survive our loads untouched
        ns.ok(&[
            "nft",
            "add table inet other; add chain inet other c; add rule inet other c counter",
        ]);
        let before = ns.ok(&["nft", "list", "table", "inet", "other"]);
        assert_ok(
            ns.run(&["nft", "-c", "-f", f.to_str().unwrap()]),
            &format!("{name}: nft -c"),
        );
        assert_ok(
            ns.run(&["nft", "-f", f.to_str().unwrap()]),
            &format!("{name}: nft -f"),
        );
        assert_ok(
            ns.run(&["nft", "-f", f.to_str().unwrap()]),
            &format!("{name}: nft -f again"),
        );
        let listed = ns.ok(&["nft", "list", "table", "inet", "bulkhead"]);
        for r in &m.rules {
            assert!(
                listed.contains(&format!("rule:{}", r.name)),
                "{name}: {} missing from kernel",
                r.name
            );
        }
        for g in &m.groups {
            assert!(
                listed.contains(&format!("set {} {{", g.name)),
                "{name}: set {} missing",
                g.name
            );
        }
        assert_eq!(
            before,
            ns.ok(&["nft", "list", "table", "inet", "other"]),
            "{name}: foreign table changed"
        );
    }
}

#[test]
fn iptables_renderings_load() {
    require_root!();
    let dir = TempDir::new("iptload");
    for (name, path) in common::golden_configs() {
        let (m, _) = model::load(&path).unwrap();
        // IPv6 configs are refused with the iptables backend: nothing to load.
        if m.has_ipv6() {
            continue;
        }
        let FirewallText::Iptables { ipset, rules } =
            plan::build(&m, Some(Backend::Iptables)).firewall
        else {
            unreachable!()
        };
        let s = write(&dir, &format!("{name}.ipset"), &ipset);
        let r = write(&dir, &format!("{name}.rules"), &rules);
        let ns = Netns::new("ipt");
        ns.ok(&["iptables", "-N", "OTHER"]);
        ns.ok(&["iptables", "-A", "OTHER", "-j", "RETURN"]);
        for round in 0..2 {
            assert_ok(
                ns.run_file(&["ipset", "restore"], &s),
                &format!("{name}: ipset restore #{round}"),
            );
            assert_ok(
                ns.run_file(&["iptables-restore", "--test", "--noflush"], &r),
                &format!("{name}: iptables-restore --test #{round}"),
            );
            assert_ok(
                ns.run_file(&["iptables-restore", "--noflush"], &r),
                &format!("{name}: iptables-restore #{round}"),
            );
        }
        let saved = ns.ok(&["iptables-save"]);
        for rule in &m.rules {
            assert!(
                saved.contains(&format!("rule:{}", rule.name)),
                "{name}: {} missing",
                rule.name
            );
        }
        // a reload replaces our chains, it does not append to them
        let drops = saved.matches("\"builtin:default-drop\" -j DROP").count();
        assert_eq!(
            drops,
            2 + usize::from(m.gateway_egress.is_some()),
            "{name}: {saved}"
        );
        assert!(
            saved.contains("-A OTHER -j RETURN"),
            "{name}: foreign chain lost"
        );
        let sets = ns.ok(&["ipset", "list", "-n"]);
        for g in &m.groups {
            assert!(
                sets.lines().any(|l| l == format!("bh-{}", g.name)),
                "{name}: ipset {} missing",
                g.name
            );
        }
        assert!(
            !sets.contains("-n\n"),
            "{name}: a swap set was left behind: {sets}"
        );
    }
}

#[test]
fn hostrules_load() {
    require_root!();
    let dir = TempDir::new("hostload");
    for (name, path) in common::golden_configs() {
        let (m, _) = model::load(&path).unwrap();
        let ns = Netns::new("host");
        for g in &m.groups {
            let text = plan::hostrules::render(&m, &g.name).unwrap();
            let f = write(&dir, &format!("{name}-{}.nft", g.name), &text);
            assert_ok(
                ns.run(&["nft", "-c", "-f", f.to_str().unwrap()]),
                &format!("{name}: hostrules {}", g.name),
            );
        }
    }
}
