//! Apply with the iptables backend, in network namespaces (root, real kernel).

mod apply_support;

use apply_support::*;
use bulkhead::apply::{Applier, ApplyError, Recovery, Step};
use bulkhead::model::Backend;
use bulkhead::plan::FirewallText;

/// Bulkhead's chains and the hook jumps, without counters.
fn ipt_state(ns: &Ns) -> String {
    let mut s = String::new();
    for t in ["filter", "nat"] {
        for l in ns.sh(&format!("iptables-save -t {t}")).lines() {
            if l.contains("BH-") {
                s.push_str(l.split(" [").next().unwrap());
                s.push('\n');
            }
        }
    }
    s
}

fn members(ns: &Ns, set: &str) -> Vec<String> {
    let mut v: Vec<String> = ns
        .sh(&format!("ipset list {set} -o save"))
        .lines()
        .filter(|l| l.starts_with("add "))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn iptables_apply_idempotent_hooks_once_and_failure_restores() {
    init();
    let gw = gateway("ipt");
    let state = TempDir::new("state");
    let plan = plan("apply.toml", Backend::Iptables);
    let (r1, r2) = gw.run(|| {
        let a = Applier::new(state.path(), Backend::Iptables).unwrap();
        (a.apply(&plan).unwrap(), a.apply(&plan).unwrap())
    });
    assert!(r1.firewall_loaded);
    assert!(r2.changes.is_empty(), "second apply: {:?}", r2.changes);
    for (t, c, j) in [
        ("filter", "INPUT", "BH-INPUT"),
        ("filter", "FORWARD", "BH-FORWARD"),
        ("filter", "OUTPUT", "BH-OUTPUT"),
        ("nat", "PREROUTING", "BH-DSTNAT"),
        ("nat", "POSTROUTING", "BH-SRCNAT"),
    ] {
        let rules: Vec<String> = gw
            .sh(&format!("iptables -w -t {t} -S {c}"))
            .lines()
            .filter(|l| l.starts_with("-A "))
            .map(str::to_string)
            .collect();
        let want = format!("-A {c} -j {j}");
        assert_eq!(rules.first(), Some(&want), "{t} {c}: {rules:?}");
        assert_eq!(rules.iter().filter(|r| **r == want).count(), 1, "{rules:?}");
    }
    let live = ipt_state(&gw);
    assert!(live.contains("--comment \"rule:allowed-to-srv\""), "{live}");
    assert_eq!(
        members(&gw, "bh-allowed"),
        vec!["add bh-allowed 198.18.1.250"]
    );
    for s in &plan.sysctls {
        assert_eq!(proc_sys(&gw, &s.key), s.value, "{}", s.key);
    }
    assert_eq!(addrs(&gw, "bhlan"), vec!["198.18.1.1/24"]);

    // Someone inserts a rule above our hook: apply puts the hook back on top, once.
    gw.sh("iptables -w -I INPUT 1 -s 198.18.9.9 -j ACCEPT");
    let r3 = gw.run(|| {
        Applier::new(state.path(), Backend::Iptables)
            .unwrap()
            .apply(&plan)
            .unwrap()
    });
    assert!(!r3.changes.is_empty());
    let input = gw.sh("iptables -w -S INPUT");
    let rules: Vec<&str> = input.lines().filter(|l| l.starts_with("-A ")).collect();
    assert_eq!(
        rules,
        vec![
            "-A INPUT -j BH-INPUT",
            "-A INPUT -s 198.18.9.9/32 -j ACCEPT"
        ]
    );
    let before = ipt_state(&gw);
    let sets_before = members(&gw, "bh-allowed");

    // A broken apply: new group contents (ipset restore succeeds and swaps them in), then a
    // rule iptables-restore refuses. The last-known-good firewall comes back.
    let mut bad = plan.clone();
    let FirewallText::Iptables { ipset, rules } = &mut bad.firewall else {
        unreachable!()
    };
    *ipset = ipset.replace(
        "add bh-allowed-n 198.18.1.250/32\n",
        "add bh-allowed-n 198.18.1.250/32\nadd bh-allowed-n 198.18.1.77/32\n",
    );
    assert!(ipset.contains("198.18.1.77"));
    *rules = rules.replacen(
        "COMMIT\n",
        "-A BH-INPUT -p tcp --dport 9 -m comment --comment \"broken\" -j DNAT --to-destination 198.18.9.9\nCOMMIT\n",
        1,
    );
    let err = gw.run(|| {
        Applier::new(state.path(), Backend::Iptables)
            .unwrap()
            .apply(&bad)
            .unwrap_err()
    });
    let msg = err.to_string();
    eprintln!("{msg}");
    assert_eq!(err.step(), Some(Step::Firewall));
    assert!(msg.contains("iptables-restore"), "{msg}");
    let ApplyError::Failed { recovery, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(recovery, Recovery::RestoredLastGood(_)),
        "{recovery:?}"
    );
    assert_eq!(ipt_state(&gw), before);
    assert_eq!(members(&gw, "bh-allowed"), sets_before);
    let input = gw.sh("iptables -w -S INPUT");
    assert_eq!(input.matches("-j BH-INPUT").count(), 1, "{input}");
}

#[test]
fn switching_backends_removes_the_other_ruleset() {
    init();
    let gw = gateway("switch");
    let state = TempDir::new("state");
    let nft = plan("apply.toml", Backend::Nftables);
    let ipt = plan("apply.toml", Backend::Iptables);
    // Something that is not Bulkhead's, in both worlds: must survive.
    gw.sh("nft add table inet other && nft add chain inet other c");
    gw.sh("iptables -w -N OTHER && iptables -w -A INPUT -j OTHER");
    gw.sh("ipset create other hash:ip");
    let r = gw.run(|| {
        Applier::new(state.path(), Backend::Nftables)
            .unwrap()
            .apply(&nft)
            .unwrap();
        Applier::new(state.path(), Backend::Iptables)
            .unwrap()
            .apply(&ipt)
            .unwrap()
    });
    assert!(
        r.changes.iter().any(|c| c.object == "nftables leftovers"),
        "{:?}",
        r.changes
    );
    assert!(!gw.sh("nft list tables").contains("bulkhead"));
    assert!(ipt_state(&gw).contains(":BH-INPUT"));
    let r = gw.run(|| {
        Applier::new(state.path(), Backend::Nftables)
            .unwrap()
            .apply(&nft)
            .unwrap()
    });
    assert!(
        r.changes.iter().any(|c| c.object == "iptables leftovers"),
        "{:?}",
        r.changes
    );
    assert_eq!(ipt_state(&gw), "");
    assert!(!gw.sh("ipset list -n").contains("bh-"));
    assert!(gw.sh("nft list tables").contains("table inet bulkhead"));
    // Not ours: untouched.
    assert!(gw.sh("nft list tables").contains("table inet other"));
    assert!(gw.sh("iptables -w -S INPUT").contains("-A INPUT -j OTHER"));
    assert!(gw.sh("ipset list -n").contains("other"));
}
