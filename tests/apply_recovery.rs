//! Fail-closed, drift, restore, quarantine carry-over, generations; iptables live sets.

mod apply_support;

use apply_support::*;
use bulkhead::apply::{Applier, Step};
use bulkhead::model::Backend;
use bulkhead::plan::FirewallText;

#[test]
fn failed_first_apply_leaves_the_fail_closed_ruleset() {
    init();
    // No uplink port: the links step fails after the fail-closed firewall was loaded.
    let gw = Ns::new("fc");
    for p in ["bhlan", "bhsrv", "bhmgmt"] {
        gw.sh(&format!("ip link add {p} type veth peer name {p}-p"));
    }
    let state = TempDir::new("state");
    let plan = plan("apply.toml", Backend::Nftables);
    let err = gw.run(|| {
        Applier::new(state.path(), Backend::Nftables)
            .unwrap()
            .apply(&plan)
            .unwrap_err()
    });
    assert_eq!(err.step(), Some(Step::Links));
    assert!(err.to_string().contains("bhup"), "{err}");
    assert!(
        err.to_string()
            .contains("the fail-closed firewall is loaded"),
        "{err}"
    );
    let t = gw.sh("nft -s list table inet bulkhead");
    // Forward: policy drop, nothing accepted.
    let fwd = t
        .split("chain forward {")
        .nth(1)
        .unwrap()
        .split("\t}")
        .next()
        .unwrap();
    assert!(fwd.contains("policy drop"), "{fwd}");
    assert!(!fwd.contains("accept"), "{fwd}");
    let input = t
        .split("chain input {")
        .nth(1)
        .unwrap()
        .split("\t}")
        .next()
        .unwrap();
    for want in [
        "ct state established,related counter accept",
        "iifname \"lo\" counter accept",
        "meta l4proto icmp counter accept",
        "iifname \"bhlan\" udp dport 67 counter accept",
        "iifname \"bhmgmt\" tcp dport 22 counter accept",
        "policy drop",
    ] {
        assert!(input.contains(want), "missing `{want}` in\n{input}");
    }
    assert!(!input.contains("rule:"), "{input}");
    assert!(!t.contains("masquerade"), "{t}");
    assert!(!t.contains("dnat"), "{t}");
    // Nothing recorded as last-known-good.
    assert!(!state.path().join("apply/current").exists());
}

#[test]
fn drift_is_seen_by_diff_and_undone_by_apply_and_restore() {
    init();
    let gw = gateway("drift");
    let state = TempDir::new("state");
    let plan = plan("apply.toml", Backend::Nftables);
    gw.run(|| {
        Applier::new(state.path(), Backend::Nftables)
            .unwrap()
            .apply(&plan)
            .unwrap()
    });
    let good = nft_table(&gw);
    gw.sh("nft insert rule inet bulkhead forward accept");
    let (diff, r, diff2) = gw.run(|| {
        let a = Applier::new(state.path(), Backend::Nftables).unwrap();
        (
            a.diff(&plan).unwrap(),
            a.apply(&plan).unwrap(),
            a.diff(&plan).unwrap(),
        )
    });
    assert!(
        diff.changes
            .iter()
            .any(|c| c.step == Step::Firewall && c.detail.contains("changed outside apply")),
        "{:?}",
        diff.changes
    );
    assert_eq!(r.changes.len(), 1, "{:?}", r.changes);
    assert_eq!(r.generation, Some(2));
    assert_eq!(nft_table(&gw), good);
    assert!(diff2.changes.is_empty(), "{:?}", diff2.changes);
    gw.sh("nft flush chain inet bulkhead forward");
    let r = gw.run(|| {
        Applier::new(state.path(), Backend::Nftables)
            .unwrap()
            .restore()
            .unwrap()
    });
    assert_eq!(r.generation, Some(2));
    assert_eq!(nft_table(&gw), good);
}

#[test]
fn quarantine_entries_survive_a_reload_and_generations_are_bounded() {
    init();
    let gw = gateway("quar");
    let state = TempDir::new("state");
    // without the flowtable: an applier re-renders a plan whose flowtable this kernel cannot
    // hold, which would drop the comments added below
    let mut plan = plan("apply.toml", Backend::Nftables).without_flow_offload();
    let a = |p: &bulkhead::plan::Plan| {
        gw.run(|| {
            Applier::new(state.path(), Backend::Nftables)
                .unwrap()
                .apply(p)
                .unwrap()
        })
    };
    a(&plan);
    gw.sh("nft add element inet bulkhead quarantine { 198.18.1.66 }");
    for i in 2..=8 {
        let FirewallText::Nftables { script } = &mut plan.firewall else {
            unreachable!()
        };
        script.push_str(&format!("# generation {i}\n"));
        let r = a(&plan);
        assert_eq!(r.generation, Some(i));
        assert!(r.firewall_loaded);
    }
    let q = gw.sh("nft list set inet bulkhead quarantine");
    assert!(q.contains("198.18.1.66"), "{q}");
    let gens: Vec<_> = std::fs::read_dir(state.path().join("apply/generations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(gens.len(), 5, "{gens:?}");
    assert!(gens.contains(&"000007".to_string()) && !gens.contains(&"000002".to_string()));
}

#[test]
fn iptables_live_sets_counters_and_quarantine_timeout_change() {
    init();
    let gw = gateway("iptset");
    let state = TempDir::new("state");
    let mut plan = plan("apply.toml", Backend::Iptables);
    gw.run(|| {
        let a = Applier::new(state.path(), Backend::Iptables).unwrap();
        a.apply(&plan).unwrap();
        a.set_add(
            "allowed",
            &[
                "198.18.1.10/32".parse().unwrap(),
                "198.18.1.64/28".parse().unwrap(),
            ],
        )
        .unwrap();
        let l = a.set_list("allowed").unwrap();
        assert!(l.contains(&"198.18.1.10".to_string()), "{l:?}");
        assert!(l.contains(&"198.18.1.64/28".to_string()), "{l:?}");
        a.set_del("allowed", &["198.18.1.10/32".parse().unwrap()])
            .unwrap();
        assert!(
            !a.set_list("allowed")
                .unwrap()
                .contains(&"198.18.1.10".to_string())
        );
        assert!(
            a.set_add("nosuch", &["198.18.1.1/32".parse().unwrap()])
                .is_err()
        );
        let sizes = a.set_sizes().unwrap();
        assert!(sizes.contains(&("allowed".to_string(), 2)), "{sizes:?}");
        a.set_add("quarantine", &["198.18.1.66/32".parse().unwrap()])
            .unwrap();
        let c = a.counters().unwrap();
        assert!(
            c.iter()
                .any(|c| c.chain == "BH-FORWARD" && c.comment == "rule:allowed-to-srv"),
            "{c:?}"
        );
        // Loopback traffic counts on the input rule.
        let lo = c
            .iter()
            .find(|c| c.chain == "BH-INPUT" && c.comment == "builtin:loopback")
            .unwrap();
        assert_eq!(lo.packets, 0);
    });
    // Loopback traffic: a connection attempt to a closed port (SYN in, RST back).
    gw.run(|| {
        let _ = std::net::TcpStream::connect("127.0.0.1:9");
    });
    let c = gw.run(|| {
        Applier::new(state.path(), Backend::Iptables)
            .unwrap()
            .counters()
            .unwrap()
    });
    let lo = c
        .iter()
        .find(|c| c.chain == "BH-INPUT" && c.comment == "builtin:loopback")
        .unwrap();
    assert!(lo.packets >= 1, "{lo:?}");
    // Changing the quarantine timeout: `create -exist` alone would fail; entries are kept.
    let FirewallText::Iptables { ipset, .. } = &mut plan.firewall else {
        unreachable!()
    };
    assert!(ipset.contains("create bh-quarantine hash:ip family inet timeout 600 "));
    *ipset = ipset.replace("timeout 600 ", "timeout 300 ");
    let r = gw.run(|| {
        Applier::new(state.path(), Backend::Iptables)
            .unwrap()
            .apply(&plan)
            .unwrap()
    });
    assert!(r.firewall_loaded);
    let q = gw.sh("ipset list bh-quarantine");
    assert!(q.contains("timeout 300"), "{q}");
    assert!(q.contains("198.18.1.66"), "{q}");
    // The group is back to its configured contents after the apply.
    let g = gw.sh("ipset list bh-allowed -o save");
    assert!(!g.contains("198.18.1.64"), "{g}");
}
