//! Live set changes over NETLINK_NETFILTER against the real kernel, in network namespaces
//! (root): every change is compared with what `nft add element` / `nft delete element` does to
//! an identical set in the same namespace.

mod common;

use bulkhead::apply::Firewall;
use bulkhead::apply::firewall::nfset::{self, FAMILY_INET, Op};
use bulkhead::apply::firewall::{FirewallError, Nftables};
use common::{Netns, in_netns, require_root_and};
use serde_json::Value;

/// The same sets in two tables: `bulkhead` is changed over netlink, `ref` by `nft`.
fn tables() -> String {
    let mut s = String::new();
    for t in ["bulkhead", "ref"] {
        s.push_str(&format!(
            "table inet {t} {{
	set g {{ type ipv4_addr; flags interval; auto-merge; elements = {{ 198.18.1.1, 198.18.1.10-198.18.1.20, 198.18.2.0/24 }} }}
	set plain {{ type ipv4_addr; flags interval; elements = {{ 198.18.1.1, 198.18.1.8/31 }} }}
	set q {{ type ipv4_addr; flags interval,timeout; timeout 600s; auto-merge; }}
	set g6 {{ type ipv6_addr; flags interval; auto-merge; elements = {{ 2001:db8::1, 2001:db8:1::/64 }} }}
	set hash {{ type ipv4_addr; elements = {{ 198.18.3.3 }} }}
	set top {{ type ipv4_addr; flags interval; auto-merge; }}
}}
"
        ));
    }
    s
}

fn setup(tag: &str) -> Netns {
    require_root_and(&["nft"]);
    let ns = Netns::new(tag);
    let f = std::env::temp_dir().join(format!(
        "bulkhead-nfset-{}-{}.nft",
        std::process::id(),
        ns.name
    ));
    std::fs::write(&f, tables()).unwrap();
    ns.ok(&["nft", "-f", f.to_str().unwrap()]);
    let _ = std::fs::remove_file(&f);
    ns
}

/// The elements `nft -j list set` shows, without expiry times (they tick).
fn listing(ns: &Netns, table: &str, set: &str) -> Vec<String> {
    let out = ns.ok(&["nft", "-j", "list", "set", "inet", table, set]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let mut els = Vec::new();
    for it in v["nftables"].as_array().unwrap() {
        let Some(s) = it.get("set") else { continue };
        for e in s
            .get("elem")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let e = e.get("elem").map_or(e.clone(), |x| x["val"].clone());
            els.push(e.to_string());
        }
    }
    els
}

/// The expiry (ms) of each element of the timeout set in `table`.
fn expiries(ns: &Netns, table: &str) -> Vec<u64> {
    let out = ns.ok(&["nft", "-j", "list", "set", "inet", table, "q"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let mut x = Vec::new();
    for it in v["nftables"].as_array().unwrap() {
        let Some(s) = it.get("set") else { continue };
        for e in s
            .get("elem")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            x.push(e["elem"]["expires"].as_u64().unwrap_or(0));
        }
    }
    x
}

fn netlink(ns: &Netns, table: &str, set: &str, op: Op, els: &[&str]) -> Result<(), String> {
    let given: Vec<_> = els
        .iter()
        .map(|s| {
            let (w, r) = nfset::parse_range(s).unwrap();
            (w, r, s.to_string())
        })
        .collect();
    let (table, set) = (table.to_string(), set.to_string());
    in_netns(&ns.name, move || {
        nfset::change_ranges(FAMILY_INET, &table, &set, op, &given)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .join()
    .unwrap()
}

fn nft(ns: &Netns, table: &str, set: &str, op: Op, els: &[&str]) -> Result<(), String> {
    let verb = if op == Op::Add { "add" } else { "delete" };
    let body = format!("{{ {} }}", els.join(", "));
    let o = ns.run(&["nft", verb, "element", "inet", table, set, &body]);
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// Apply one change both ways; both succeed or both fail, and the sets list the same.
fn both(ns: &Netns, set: &str, op: Op, els: &[&str]) -> Result<(), String> {
    let a = netlink(ns, "bulkhead", set, op, els);
    let b = nft(ns, "ref", set, op, els);
    assert_eq!(
        a.is_ok(),
        b.is_ok(),
        "{op:?} {els:?} on {set}: netlink {a:?}, nft {b:?}"
    );
    assert_eq!(
        listing(ns, "bulkhead", set),
        listing(ns, "ref", set),
        "after {op:?} {els:?} on {set} (netlink {a:?})"
    );
    a
}

#[test]
fn set_changes_match_nft_on_every_kind_of_set() {
    let ns = setup("nfset");
    // auto-merge: adjacent, covered, overlapping, spanning, then deletes
    both(&ns, "g", Op::Add, &["198.18.1.2"]).unwrap();
    both(&ns, "g", Op::Add, &["198.18.1.15"]).unwrap();
    both(&ns, "g", Op::Add, &["198.18.1.18-198.18.1.30"]).unwrap();
    both(
        &ns,
        "g",
        Op::Add,
        &["198.18.1.5-198.18.1.9", "198.18.1.7-198.18.1.12"],
    )
    .unwrap();
    both(
        &ns,
        "g",
        Op::Add,
        &["198.18.4.4", "198.18.4.6", "198.18.4.0/30"],
    )
    .unwrap();
    both(&ns, "g", Op::Add, &["198.18.1.0/24"]).unwrap();
    let e = both(&ns, "g", Op::Del, &["198.18.1.5"]).unwrap_err();
    assert!(e.contains("198.18.1.5") && e.contains("`g`"), "{e}");
    both(&ns, "g", Op::Del, &["198.18.9.9"]).unwrap_err();
    both(&ns, "g", Op::Del, &["198.18.1.0-198.18.2.255"]).unwrap();
    both(
        &ns,
        "g",
        Op::Add,
        &["198.18.7.1", "198.18.7.2", "198.18.7.4"],
    )
    .unwrap();
    both(
        &ns,
        "g",
        Op::Del,
        &["198.18.7.1", "198.18.7.2", "198.18.7.4"],
    )
    .unwrap();
    // one bad element: nothing of the change happens
    both(&ns, "g", Op::Del, &["198.18.4.4", "198.18.99.1"]).unwrap_err();
    // without auto-merge: equal is fine, overlaps are refused
    both(&ns, "plain", Op::Add, &["198.18.1.1"]).unwrap();
    both(&ns, "plain", Op::Add, &["198.18.1.2"]).unwrap();
    let e = both(&ns, "plain", Op::Add, &["198.18.1.9"]).unwrap_err();
    assert!(e.contains("overlaps"), "{e}");
    both(&ns, "plain", Op::Add, &["198.18.1.0/24"]).unwrap_err();
    both(&ns, "plain", Op::Del, &["198.18.1.1"]).unwrap();
    both(&ns, "plain", Op::Del, &["198.18.1.8-198.18.1.9"]).unwrap();
    // timeouts
    both(&ns, "q", Op::Add, &["198.18.5.20", "198.18.6.0/24"]).unwrap();
    both(&ns, "q", Op::Add, &["198.18.5.21"]).unwrap();
    both(&ns, "q", Op::Del, &["198.18.5.20-198.18.5.21"]).unwrap();
    // IPv6
    both(&ns, "g6", Op::Add, &["2001:db8::2", "2001:db8:1:0:1::/80"]).unwrap();
    both(
        &ns,
        "g6",
        Op::Add,
        &["2001:db8:2::/64", "2001:db8:1:1::/64"],
    )
    .unwrap();
    both(&ns, "g6", Op::Del, &["2001:db8::1-2001:db8::2"]).unwrap();
    both(&ns, "g6", Op::Del, &["2001:db8:9::1"]).unwrap_err();
    // a plain hash set
    both(&ns, "hash", Op::Add, &["198.18.3.4", "198.18.3.3"]).unwrap();
    both(&ns, "hash", Op::Del, &["198.18.3.3"]).unwrap();
    both(&ns, "hash", Op::Del, &["198.18.3.3"]).unwrap_err();
    // up to the top of the address space (no end element)
    both(&ns, "top", Op::Add, &["255.255.255.0/24"]).unwrap();
    both(&ns, "top", Op::Add, &["255.255.254.255"]).unwrap();
    both(&ns, "top", Op::Add, &["0.0.0.0/8"]).unwrap();
    both(&ns, "top", Op::Del, &["255.255.254.255-255.255.255.255"]).unwrap();
    // wrong family: refused before anything is sent, naming the element
    let e = netlink(&ns, "bulkhead", "g6", Op::Add, &["198.18.1.1"]).unwrap_err();
    assert!(e.contains("198.18.1.1") && e.contains("IPv6"), "{e}");
}

/// Random changes on a small address space (so that ranges merge, overlap and split often),
/// both ways, compared after every step.
#[test]
fn random_changes_match_nft() {
    let ns = setup("nfrand");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut refused = 0;
    for _ in 0..120 {
        let set = ["g", "q", "plain"][next(3) as usize];
        let op = if next(3) == 0 { Op::Del } else { Op::Add };
        let k = 1 + next(3) as usize;
        let els: Vec<String> = (0..k)
            .map(|_| {
                let a = next(40);
                match next(3) {
                    0 => format!("198.18.1.{a}"),
                    1 => format!("198.18.1.{a}-198.18.1.{}", a + next(6)),
                    _ => format!("198.18.1.{}/30", a & !3),
                }
            })
            .collect();
        let refs: Vec<&str> = els.iter().map(String::as_str).collect();
        if both(&ns, set, op, &refs).is_err() {
            refused += 1;
        }
    }
    eprintln!("120 random changes, {refused} refused by both");
}

/// Re-adding a quarantined address restarts its timeout, as with nft.
#[test]
fn re_adding_restarts_a_timeout() {
    let ns = setup("nftmo");
    both(&ns, "q", Op::Add, &["198.18.5.20"]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let before = expiries(&ns, "bulkhead");
    both(&ns, "q", Op::Add, &["198.18.5.20"]).unwrap();
    let after = expiries(&ns, "bulkhead");
    assert!(after[0] > before[0], "{before:?} -> {after:?}");
    assert!(expiries(&ns, "ref")[0] > before[0]);
}

/// The nftables backend changes sets without running `nft`, checks the kernel's answer and
/// names the set and the element in a refusal.
#[test]
fn backend_set_changes_need_no_nft_binary() {
    let ns = setup("nfbin");
    let r = in_netns(&ns.name, || {
        let fw = Nftables {
            nft: "/nonexistent/nft".into(),
        };
        fw.set_add("g", &["198.18.8.1/32".parse().unwrap()])?;
        fw.set_del("g", &["198.18.1.1/32".parse().unwrap()])?;
        let missing = fw
            .set_del("g", &["198.18.8.99/32".parse().unwrap()])
            .unwrap_err();
        let noset = fw
            .set_add("nosuch", &["198.18.8.1/32".parse().unwrap()])
            .unwrap_err();
        let sizes = fw.set_sizes()?;
        Ok::<_, FirewallError>((fw.set_list("g")?, missing, noset, sizes))
    })
    .join()
    .unwrap();
    let (list, missing, noset, sizes) = r.unwrap();
    // set sizes over netlink equal the element counts nft lists (named sets only)
    let out = ns.ok(&["nft", "-j", "list", "sets", "inet"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let mut want: Vec<(String, usize)> = v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|it| it.get("set"))
        .filter(|s| s["table"] == "bulkhead")
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s.get("elem").and_then(Value::as_array).map_or(0, Vec::len),
            )
        })
        .collect();
    let mut got = sizes;
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert!(list.contains(&"198.18.8.1".to_string()), "{list:?}");
    assert!(!list.contains(&"198.18.1.1".to_string()), "{list:?}");
    let m = missing.to_string();
    assert!(
        m.contains("`g`") && m.contains("198.18.8.99") && m.contains("not an element"),
        "{m}"
    );
    assert!(matches!(noset, FirewallError::NoSuchSet(_)), "{noset}");
    // the listing through netlink equals nft's
    let nft: Vec<String> = listing(&ns, "bulkhead", "g")
        .into_iter()
        .map(|s| {
            let v: Value = serde_json::from_str(&s).unwrap();
            if let Some(x) = v.as_str() {
                x.to_string()
            } else if let Some(p) = v.get("prefix") {
                format!("{}/{}", p["addr"].as_str().unwrap(), p["len"])
            } else {
                let r = v["range"].as_array().unwrap();
                format!("{}-{}", r[0].as_str().unwrap(), r[1].as_str().unwrap())
            }
        })
        .collect();
    assert_eq!(list, nft);
}
