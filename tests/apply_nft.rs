//! Apply with the nftables backend, in network namespaces (root, real kernel).

mod apply_support;

use apply_support::*;
use bulkhead::apply::{Applier, ApplyError, Recovery, Step};
use bulkhead::model::Backend;
use bulkhead::plan::FirewallText;

#[test]
fn apply_puts_everything_in_place_and_second_apply_changes_nothing() {
    init();
    let gw = gateway("nft");
    let state = TempDir::new("state");
    let plan = plan("apply.toml", Backend::Nftables);
    let (r1, r2, diff) = gw.run(|| {
        let a = Applier::new(state.path(), Backend::Nftables).unwrap();
        let t = std::time::Instant::now();
        let r1 = a.apply(&plan).unwrap();
        eprintln!("first apply: {:?}", t.elapsed());
        let r2 = a.apply(&plan).unwrap();
        let diff = a.diff(&plan).unwrap();
        (r1, r2, diff)
    });
    for c in &r1.changes {
        eprintln!("{c}");
    }
    assert!(r1.firewall_loaded);
    assert_eq!(r1.generation, Some(1));
    // The ports exist and the links step creates none: the full firewall is loaded once, in
    // one transaction, before any link is touched; no fail-closed table first.
    assert!(!r1.changes.iter().any(|c| c.step == Step::FailClosed));
    assert_eq!(
        r1.changes
            .iter()
            .filter(|c| c.step == Step::Firewall)
            .count(),
        1,
        "{:?}",
        r1.changes
    );
    assert_eq!(r1.changes[0].step, Step::Sysctls);
    let fw = r1
        .changes
        .iter()
        .position(|c| c.step == Step::Firewall)
        .unwrap();
    let links = r1
        .changes
        .iter()
        .position(|c| c.step == Step::Links)
        .unwrap();
    assert!(fw < links, "{:?}", r1.changes);
    // Links: addresses, MTU, up, as planned.
    for l in &plan.links {
        let want: Vec<String> = l.addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs(&gw, &l.name), want, "{}", l.name);
        let j = link_json(&gw, &l.name);
        assert!(
            j["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
            "{} up",
            l.name
        );
        if let Some(m) = l.mtu {
            assert_eq!(j["mtu"], m, "{} mtu", l.name);
        }
    }
    let routes = gw.sh("ip -j route show default");
    assert!(
        routes.contains("198.18.3.254") && routes.contains("bhup"),
        "{routes}"
    );
    // Sysctls, read back from /proc/sys in the namespace.
    for s in &plan.sysctls {
        assert_eq!(proc_sys(&gw, &s.key), s.value, "{}", s.key);
    }
    // The ruleset: what nft lists equals what loading the plan's script alone gives.
    let live = nft_table(&gw);
    // (where the kernel has no flowtable, the plan is loaded without it)
    let loaded = match bulkhead::apply::firewall::offload::probe("nft") {
        Ok(()) => plan.clone(),
        Err(_) => plan.without_flow_offload(),
    };
    let FirewallText::Nftables { script } = &loaded.firewall else {
        unreachable!()
    };
    let probe = Ns::new("probe");
    std::fs::write(state.path().join("probe.nft"), script).unwrap();
    probe.sh(&format!(
        "nft -f {}",
        state.path().join("probe.nft").display()
    ));
    assert_eq!(
        live,
        nft_table(&probe),
        "live table differs from the plan's script"
    );
    assert!(live.contains("comment \"rule:allowed-to-srv\""));
    // Idempotent.
    assert!(
        r2.changes.is_empty(),
        "second apply changed: {:?}",
        r2.changes
    );
    assert!(!r2.firewall_loaded);
    assert_eq!(r2.generation, Some(1));
    assert!(diff.changes.is_empty(), "diff: {:?}", diff.changes);
    // State recorded.
    let cur = state.path().join("apply/current");
    assert!(cur.join("plan.json").exists() && cur.join("firewall.nft").exists());
    assert_eq!(
        std::fs::read_to_string(cur.join("firewall.nft")).unwrap(),
        *script
    );
}

#[test]
fn rejected_firewall_leaves_previous_ruleset_byte_identical() {
    init();
    let gw = gateway("nftbad");
    let state = TempDir::new("state");
    // without the flowtable: an applier re-renders a plan whose flowtable this kernel cannot
    // hold, which would drop the edit below
    let good = plan("apply.toml", Backend::Nftables).without_flow_offload();
    let mut bad = good.clone();
    let FirewallText::Nftables { script } = &mut bad.firewall else {
        unreachable!()
    };
    // Parses, but the kernel refuses NAT in a filter chain.
    *script = script.replacen(
        "\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n",
        "\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\ttcp dport 9 dnat ip to 198.18.9.9 comment \"broken\"\n",
        1,
    );
    assert!(script.contains("broken"));
    let before = gw.run(|| {
        Applier::new(state.path(), Backend::Nftables)
            .unwrap()
            .apply(&good)
            .unwrap()
    });
    assert_eq!(before.generation, Some(1));
    let listed_before = nft_table(&gw);
    let err = gw.run(|| {
        Applier::new(state.path(), Backend::Nftables)
            .unwrap()
            .apply(&bad)
            .unwrap_err()
    });
    let msg = err.to_string();
    eprintln!("{msg}");
    assert_eq!(err.step(), Some(Step::Firewall));
    let ApplyError::Failed { recovery, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*recovery, Recovery::Unchanged);
    // Which command refused it depends on the nft version: `nft -c` (check) when it asks the
    // kernel, else the load itself, whose transaction the kernel then refuses whole.
    assert!(
        msg.contains("nft check: `nft -c -f") || msg.contains("nft load: `nft -f"),
        "{msg}"
    );
    assert!(
        msg.contains("Operation not supported"),
        "stderr missing: {msg}"
    );
    assert!(msg.contains("broken"), "offending rule not shown: {msg}");
    assert_eq!(nft_table(&gw), listed_before, "ruleset changed");
    // The last-known-good generation is still the good one.
    let cur = std::fs::read_to_string(state.path().join("apply/current/firewall.nft")).unwrap();
    assert!(!cur.contains("broken"));
}

#[test]
fn removing_a_segment_removes_only_what_bulkhead_created() {
    init();
    let gw = gateway("rm");
    let state = TempDir::new("state");
    // Addresses Bulkhead did not create: one it will also plan (kept, not recorded), one extra.
    gw.sh("ip addr add 198.18.2.99/24 dev bhsrv");
    gw.sh("ip addr add 198.18.4.1/24 dev bhmgmt");
    let full = plan("apply.toml", Backend::Nftables);
    let less = plan("apply-less.toml", Backend::Nftables);
    let (r, diff) = gw.run(|| {
        let a = Applier::new(state.path(), Backend::Nftables).unwrap();
        a.apply(&full).unwrap();
        let diff = a.diff(&less).unwrap();
        (a.apply(&less).unwrap(), diff)
    });
    assert!(
        diff.changes
            .iter()
            .any(|c| c.step == Step::Cleanup && c.object == "bhsrv/198.18.2.1/24"),
        "{:?}",
        diff.changes
    );
    let cleanup: Vec<_> = r
        .changes
        .iter()
        .filter(|c| c.step == Step::Cleanup)
        .collect();
    assert_eq!(cleanup.len(), 1, "{cleanup:?}");
    assert_eq!(cleanup[0].object, "bhsrv/198.18.2.1/24");
    assert_eq!(addrs(&gw, "bhsrv"), vec!["198.18.2.99/24"]);
    assert_eq!(addrs(&gw, "bhmgmt"), vec!["198.18.4.1/24"]);
    assert_eq!(addrs(&gw, "bhlan"), vec!["198.18.1.1/24"]);
    let _ = link_json(&gw, "bhsrv"); // the port itself stays
    assert!(!nft_table(&gw).contains("bhsrv"));
    // Now drop mgmt's address from the plan as well: the pre-existing one is never removed.
    let mut no_mgmt = less.clone();
    for l in &mut no_mgmt.links {
        if l.name == "bhmgmt" {
            l.addresses.clear();
        }
    }
    let r = gw.run(|| {
        Applier::new(state.path(), Backend::Nftables)
            .unwrap()
            .apply(&no_mgmt)
            .unwrap()
    });
    assert!(
        r.changes.iter().all(|c| c.step != Step::Cleanup),
        "{:?}",
        r.changes
    );
    assert_eq!(addrs(&gw, "bhmgmt"), vec!["198.18.4.1/24"]);
    // Generations: 1 (full), 2 (less), 3 (no mgmt address); rollback goes to 2.
    let rb = gw.run(|| {
        Applier::new(state.path(), Backend::Nftables)
            .unwrap()
            .rollback()
            .unwrap()
    });
    assert_eq!(rb.generation, Some(2));
}

#[test]
fn missing_port_is_named_and_vlan_path_is_exercised() {
    init();
    let gw = Ns::new("vlan");
    gw.sh("ip link add bhtrunk type veth peer name bhtrunk-p");
    let state = TempDir::new("state");
    let mut p = plan("apply.toml", Backend::Nftables);
    // A missing port: the error names it.
    let err = gw.run(|| {
        Applier::new(state.path(), Backend::Nftables)
            .unwrap()
            .apply(&p)
            .unwrap_err()
    });
    assert_eq!(err.step(), Some(Step::Links));
    assert!(
        err.to_string().contains("interface bhup does not exist"),
        "{err}"
    );
    // A VLAN segment on a trunk: created where the kernel has 802.1Q, a clear error where not.
    p.links = vec![bulkhead::plan::LinkPlan {
        name: "bhtrunk.10".into(),
        kind: bulkhead::plan::LinkKind::Vlan {
            parent: "bhtrunk".into(),
            id: 10,
        },
        role: "segment:lan".into(),
        mtu: None,
        addresses: vec!["198.18.10.1/24".parse().unwrap()],
        dhcp_client: false,
        up: true,
    }];
    p.routes.clear();
    // the keys of the config's own ports go with them
    p.sysctls.retain(|s| !s.key.contains(".conf.bh"));
    let r = gw.run(|| {
        Applier::new(state.path(), Backend::Nftables)
            .unwrap()
            .apply(&p)
    });
    match r {
        Ok(rep) => {
            let j = link_json(&gw, "bhtrunk.10");
            assert_eq!(j["linkinfo"]["info_kind"], "vlan");
            assert_eq!(j["linkinfo"]["info_data"]["id"], 10);
            assert!(rep.changes.iter().any(|c| c.object == "bhtrunk.10"));
        }
        Err(e) => {
            let m = e.to_string();
            assert!(m.contains("802.1Q") && m.contains("bhtrunk.10"), "{m}");
            eprintln!("no 802.1Q here: {m}");
        }
    }
}

/// The shipped config's firewall, loaded for real by both backends (the kernel accepts the
/// renderings), with timings. Links are not applied: the shipped config uses VLANs.
#[test]
fn shipped_config_firewall_loads_in_both_backends() {
    init();
    use bulkhead::apply::Firewall;
    use bulkhead::apply::firewall::{Iptables, LoadText, Nftables};
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("overlay/etc/bulkhead/bulkhead.toml");
    let (m, _) = bulkhead::model::load(&p).unwrap();
    let ns = Ns::new("shipped");
    let work = TempDir::new("work");
    for b in [Backend::Nftables, Backend::Iptables] {
        // the flowtable's devices (eth0.10, ...) do not exist here (kernel_load covers it)
        let plan = bulkhead::plan::build(&m, Some(b)).without_flow_offload();
        let text = LoadText::from_plan(&plan);
        let fw: Box<dyn Firewall + Send + Sync> = match b {
            Backend::Nftables => Box::new(Nftables::new()),
            Backend::Iptables => Box::new(Iptables::new()),
        };
        let (load, reload, add) = ns.run(|| {
            let t = std::time::Instant::now();
            fw.load(&text, work.path()).unwrap();
            let load = t.elapsed();
            let t = std::time::Instant::now();
            fw.load(&text, work.path()).unwrap();
            let reload = t.elapsed();
            let t = std::time::Instant::now();
            fw.set_add("web_nodes", &["192.168.30.50/32".parse().unwrap()])
                .unwrap();
            let add = t.elapsed();
            assert!(
                fw.set_list("web_nodes")
                    .unwrap()
                    .iter()
                    .any(|e| e.contains("192.168.30.50"))
            );
            (load, reload, add)
        });
        eprintln!(
            "shipped firewall ({}): {} rules; load {load:?}, reload {reload:?}, set add {add:?}",
            b.name(),
            plan.ruleset.rule_count()
        );
        let c = ns.run(|| fw.counters().unwrap());
        assert!(c.iter().any(|c| c.comment == "rule:mgmt-to-all"), "{c:?}");
    }
}

#[test]
fn set_change_on_a_missing_set_is_named() {
    init();
    let gw = gateway("noset");
    let state = TempDir::new("state");
    let plan = plan("apply.toml", Backend::Nftables);
    gw.run(|| {
        let a = Applier::new(state.path(), Backend::Nftables).unwrap();
        a.apply(&plan).unwrap();
        let e = a
            .set_add("nosuch", &["198.18.1.1/32".parse().unwrap()])
            .unwrap_err();
        assert!(e.to_string().contains("no set `nosuch`"), "{e}");
        // Deleting an element that is not there is refused, naming the set and the element.
        let e = a
            .set_del("allowed", &["198.18.1.2/32".parse().unwrap()])
            .unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("set change on `allowed`: 198.18.1.2: not an element"),
            "{m}"
        );
        assert_eq!(a.set_list("allowed").unwrap(), vec!["198.18.1.250"]);
        let sizes = a.set_sizes().unwrap();
        assert!(sizes.contains(&("allowed".to_string(), 1)), "{sizes:?}");
    });
}

/// Writing net.ipv4.ip_forward resets net.ipv4.conf.all.accept_redirects: whatever the order
/// of the plan, apply must end with the planned value, in one apply.
#[test]
fn forwarding_write_does_not_undo_accept_redirects() {
    init();
    let gw = gateway("fwd");
    let state = TempDir::new("state");
    let mut plan = plan("apply.toml", Backend::Nftables);
    for s in &mut plan.sysctls {
        if s.key == "net.ipv4.conf.all.accept_redirects" {
            s.value = "1".into();
        }
    }
    // The plan writes ip_forward first; put it last here, the worst order, to check that
    // apply still ends with the planned values.
    let i = plan
        .sysctls
        .iter()
        .position(|s| s.key == "net.ipv4.ip_forward")
        .unwrap();
    let fwd = plan.sysctls.remove(i);
    plan.sysctls.push(fwd);
    let r2 = gw.run(|| {
        let a = Applier::new(state.path(), Backend::Nftables).unwrap();
        a.apply(&plan).unwrap();
        a.apply(&plan).unwrap()
    });
    assert_eq!(proc_sys(&gw, "net.ipv4.conf.all.accept_redirects"), "1");
    assert_eq!(proc_sys(&gw, "net.ipv4.ip_forward"), "1");
    assert!(r2.changes.is_empty(), "{:?}", r2.changes);
}

/// The ruleset Bulkhead leaves after an apply and live set changes over netlink equals what
/// `nft` lists for the text rendering of the same config with those members in the group.
#[test]
fn netlink_changed_ruleset_equals_the_text_rendering() {
    init();
    let gw = gateway("nlrend");
    let state = TempDir::new("state");
    let plan = plan("apply.toml", Backend::Nftables);
    gw.run(|| {
        let a = Applier::new(state.path(), Backend::Nftables).unwrap();
        a.apply(&plan).unwrap();
        let add: Vec<ipnet::IpNet> = ["198.18.1.7/32", "198.18.1.8/32", "198.18.9.0/24"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        a.set_add("allowed", &add).unwrap();
        a.set_del("allowed", &["198.18.1.250/32".parse().unwrap()])
            .unwrap();
    });
    let live = nft_table(&gw);
    // the same config, the group's members as they now are, rendered as text and loaded by nft
    let text = std::fs::read_to_string(config("apply.toml"))
        .unwrap()
        .replace(
            "members = [\"198.18.1.250\"]",
            "members = [\"198.18.1.7\", \"198.18.1.8\", \"198.18.9.0/24\"]",
        );
    let (m, _) = bulkhead::plan::load_str("apply.toml", &text).unwrap();
    let mut want = bulkhead::plan::build(&m, Some(Backend::Nftables));
    let probe = Ns::new("nlprobe");
    // the apply loaded the rendering without the flowtable where the kernel has none
    if probe.run(|| bulkhead::apply::firewall::offload::probe("nft").is_err()) {
        want = want.without_flow_offload();
    }
    let FirewallText::Nftables { script } = &want.firewall else {
        unreachable!()
    };
    let f = state.path().join("want.nft");
    std::fs::write(&f, script).unwrap();
    probe.sh(&format!("nft -f {}", f.display()));
    let rendered = nft_table(&probe);
    assert!(live.contains("198.18.1.7-198.18.1.8"), "{live}");
    assert_eq!(live, rendered, "live table differs from the text rendering");
}

/// `[system] flow_offload` (default on) renders a flowtable; where the kernel has none (this
/// host's), the apply still succeeds, loads the policy without it, says so, and the next apply
/// and check see no drift. Where the kernel has one, the live table holds it.
#[test]
fn flow_offload_is_loaded_or_degrades_without_failing() {
    use bulkhead::apply::FlowOffload;
    init();
    let gw = gateway("nftoff");
    let state = TempDir::new("state");
    let plan = plan("apply.toml", Backend::Nftables);
    let FirewallText::Nftables { script } = &plan.firewall else {
        unreachable!()
    };
    assert!(
        script.contains("flowtable ft {")
            && script.contains("devices = { \"bhup\", \"bhlan\", \"bhsrv\", \"bhmgmt\" };"),
        "{script}"
    );
    let (r1, r2, diff, state_of) = gw.run(|| {
        let a = Applier::new(state.path(), Backend::Nftables).unwrap();
        let r1 = a.apply(&plan).unwrap();
        let r2 = a.apply(&plan).unwrap();
        let diff = a.diff(&plan).unwrap();
        (r1, r2, diff, a.flow_offload(&plan))
    });
    assert!(r1.firewall_loaded);
    assert!(r2.changes.is_empty(), "second apply: {:?}", r2.changes);
    assert!(diff.changes.is_empty(), "diff: {:?}", diff.changes);
    let live = nft_table(&gw);
    let kernel_has_it = gw.run(|| bulkhead::apply::firewall::offload::probe("nft").is_ok());
    if kernel_has_it {
        assert_eq!(state_of, FlowOffload::On);
        assert!(live.contains("flowtable ft"), "{live}");
        assert!(live.contains("flow add @ft"), "{live}");
    } else {
        assert_eq!(
            state_of,
            FlowOffload::Unavailable("kernel has no nf_flow_table".into())
        );
        assert_eq!(
            state_of.to_string(),
            "unavailable (kernel has no nf_flow_table)"
        );
        assert!(!live.contains("flowtable"), "{live}");
        assert!(!live.contains("flow add"), "{live}");
    }
    // the policy itself is whole either way
    assert!(live.contains("comment \"rule:allowed-to-srv\""), "{live}");
    assert!(
        live.contains("ct state established,related counter packets"),
        "{live}"
    );

    // `[system] flow_offload = false`: no flowtable in the rendering at all
    let text = std::fs::read_to_string(config("apply.toml"))
        .unwrap()
        .replacen("[system]\n", "[system]\nflow_offload = false\n", 1);
    let f = state.path().join("off.toml");
    std::fs::write(&f, text).unwrap();
    let (m, _) = bulkhead::model::load(&f).unwrap();
    assert!(!m.flow_offload);
    let off = bulkhead::plan::build(&m, Some(Backend::Nftables));
    let FirewallText::Nftables { script } = &off.firewall else {
        unreachable!()
    };
    assert!(!script.contains("flowtable") && !script.contains("flow add"));
    let a = Applier::new(state.path(), Backend::Nftables).unwrap();
    assert_eq!(a.flow_offload(&off), FlowOffload::Off);
}
