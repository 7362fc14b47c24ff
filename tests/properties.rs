//! Property tests on random valid configs: the nftables rendering is accepted by the kernel
//! (`nft -c -f` in a namespace), and `explain` agrees with the first matching rule of the
//! *rendered* script, evaluated by an independent reader of that script.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use bulkhead::model::{Backend, Proto};
use bulkhead::plan::{self, FirewallText, explain};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[derive(Debug, Clone)]
struct GenRule {
    from: usize,
    to: usize,
    proto: usize,
    ports: Vec<u16>,
    log: bool,
}

#[derive(Debug, Clone)]
struct Gen {
    segments: usize,
    internet: Vec<u8>,
    groups: Vec<(usize, u8, u8)>,
    rules: Vec<GenRule>,
    forwards: Vec<(usize, u16, u8, bool)>,
    ssh: u16,
}

fn configs() -> impl Strategy<Value = Gen> {
    (2usize..=5)
        .prop_flat_map(|n| {
            (
                Just(n),
                prop::collection::vec(0u8..3, n),
                prop::collection::vec((0..n, 2u8..100, 0u8..20), 0..5),
                prop::collection::vec(
                    (
                        0usize..20,
                        0usize..20,
                        0usize..5,
                        prop::collection::vec(
                            prop_oneof![Just(22u16), Just(80), Just(443), Just(5432), 1u16..2000],
                            0..4,
                        ),
                        any::<bool>(),
                    )
                        .prop_map(|(from, to, proto, ports, log)| GenRule {
                            from,
                            to,
                            proto,
                            ports,
                            log,
                        }),
                    0..10,
                ),
                prop::collection::vec((0..n, 1000u16..1100, 2u8..200, any::<bool>()), 0..3),
                prop_oneof![Just(22u16), Just(2222)],
            )
        })
        .prop_map(|(segments, internet, groups, rules, forwards, ssh)| Gen {
            segments,
            internet,
            groups,
            rules,
            forwards,
            ssh,
        })
}

fn toml(g: &Gen) -> String {
    let mut t = String::from(
        "[uplink]\ninterface = \"up0\"\naddress = \"203.0.113.2/24\"\ngateway = \"203.0.113.1\"\n\n",
    );
    for i in 0..g.segments {
        t += &format!(
            "[segments.s{i}]\ninterface = \"p{i}\"\nsubnet = \"198.18.{i}.0/24\"\ngateway = \"198.18.{i}.1\"\n"
        );
        if i == 0 {
            t += "management = true\n";
        }
        match g.internet[i] {
            1 => t += "internet = true\n",
            2 => t += "egress = \"web\"\n",
            _ => {}
        }
        t += &format!("[segments.s{i}.dhcp]\nranges = [\"198.18.{i}.100-198.18.{i}.150\"]\n\n");
    }
    t += "[egress.web]\nallow = [{ proto = \"tcp\", ports = [80, 443] }, { proto = \"udp\", ports = [53] }]\n\n";
    for (k, (seg, lo, len)) in g.groups.iter().enumerate() {
        let hi = (*lo as u16 + *len as u16).min(254);
        t += &format!(
            "[groups.g{k}]\nmembers = [\"198.18.{seg}.{lo}-198.18.{seg}.{hi}\", \"192.0.2.{k}\"]\n\n"
        );
    }
    t += &format!("[management]\nssh_port = {}\n\n", g.ssh);
    let names = |i: usize, to: bool| -> String {
        let ng = g.groups.len();
        let total = g.segments + ng + 2 + usize::from(to);
        let i = i % total;
        if i < g.segments {
            format!("s{i}")
        } else if i < g.segments + ng {
            format!("g{}", i - g.segments)
        } else if i == g.segments + ng {
            "internet".into()
        } else if i == g.segments + ng + 1 {
            "any".into()
        } else {
            "gateway".into()
        }
    };
    for (k, r) in g.rules.iter().enumerate() {
        let from = names(r.from, false);
        let to = names(r.to, true);
        if from == to {
            continue;
        }
        let mut proto = ["tcp", "udp", "icmp", "any", "tcp+udp"][r.proto];
        let mut ports = r.ports.clone();
        // never open the management ports of the gateway to anyone but the management segment
        if to == "gateway" || to == "any" {
            ports.retain(|p| *p != g.ssh);
            if from != "s0" {
                if proto == "any" {
                    proto = "icmp";
                }
                if matches!(proto, "tcp" | "tcp+udp") && ports.is_empty() {
                    ports = vec![8081];
                }
            }
        }
        t += &format!("[[rules]]\nname = \"r{k}\"\nfrom = \"{from}\"\nto = \"{to}\"\n");
        match proto {
            "tcp+udp" => t += "proto = [\"tcp\", \"udp\"]\n",
            p => t += &format!("proto = \"{p}\"\n"),
        }
        let proto_has_ports = matches!(proto, "tcp" | "udp" | "tcp+udp");
        if proto_has_ports && !ports.is_empty() {
            let ps: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
            t += &format!("ports = [{}]\n", ps.join(", "));
        }
        if r.log {
            t += "log = true\n";
        }
        t += "\n";
    }
    for (k, (seg, port, host, grp)) in g.forwards.iter().enumerate() {
        let host = if *host == 1 { 2 } else { *host };
        t += &format!(
            "[[forwards]]\nname = \"f{k}\"\nproto = \"tcp\"\nport = {}\nto = \"198.18.{seg}.{host}\"\nto_port = 80\n",
            1000 + k as u16 * 200 + (port % 2)
        );
        if *grp && !g.groups.is_empty() {
            t += "from = \"g0\"\n";
        }
        t += "\n";
    }
    t
}

/// An independent reader of the rendered nftables script: sets and chains as text.
struct Script {
    sets: BTreeMap<String, Vec<(Ipv4Addr, Ipv4Addr)>>,
    chains: BTreeMap<String, Vec<String>>,
}

fn parse_addr_range(s: &str) -> (Ipv4Addr, Ipv4Addr) {
    let s = s.trim().trim_end_matches(',');
    if let Some((a, b)) = s.split_once('-') {
        return (a.parse().unwrap(), b.parse().unwrap());
    }
    if s.contains('/') {
        let n: ipnet::Ipv4Net = s.parse().unwrap();
        return (n.network(), n.broadcast());
    }
    let a: Ipv4Addr = s.parse().unwrap();
    (a, a)
}

fn read_script(text: &str) -> Script {
    let mut sets = BTreeMap::new();
    let mut chains = BTreeMap::new();
    let mut cur_set: Option<String> = None;
    let mut cur_chain: Option<String> = None;
    let mut in_elements = false;
    for line in text.lines() {
        let t = line.trim();
        if let Some(n) = t.strip_prefix("set ").and_then(|r| r.strip_suffix(" {")) {
            cur_set = Some(n.to_string());
            sets.insert(n.to_string(), Vec::new());
            continue;
        }
        if let Some(n) = t.strip_prefix("chain ").and_then(|r| r.strip_suffix(" {")) {
            cur_chain = Some(n.to_string());
            chains.insert(n.to_string(), Vec::new());
            continue;
        }
        if t == "}" {
            if in_elements {
                in_elements = false;
            } else {
                cur_set = None;
                cur_chain = None;
            }
            continue;
        }
        if let Some(s) = &cur_set {
            if t.starts_with("elements = {") {
                in_elements = true;
                continue;
            }
            if in_elements {
                for e in t.split(", ") {
                    if !e.trim().trim_end_matches(',').is_empty() {
                        sets.get_mut(s).unwrap().push(parse_addr_range(e));
                    }
                }
            }
            continue;
        }
        if let Some(c) = &cur_chain
            && !t.starts_with("type ")
        {
            chains.get_mut(c).unwrap().push(t.to_string());
        }
    }
    Script { sets, chains }
}

fn take<'a>(toks: &mut &'a str, prefix: &str) -> Option<&'a str> {
    let rest = toks.strip_prefix(prefix)?;
    let (val, after) = if let Some(r) = rest.strip_prefix('{') {
        let end = r.find('}').unwrap();
        (&r[..end], r[end + 1..].trim_start())
    } else if let Some(r) = rest.strip_prefix('"') {
        let end = r.find('"').unwrap();
        (&r[..end], r[end + 1..].trim_start())
    } else {
        let end = rest.find(' ').unwrap_or(rest.len());
        (&rest[..end], rest[end..].trim_start())
    };
    *toks = after;
    Some(val.trim())
}

fn addr_ok(s: &Script, val: &str, a: Ipv4Addr) -> bool {
    if let Some(set) = val.strip_prefix('@') {
        return s.sets[set].iter().any(|(lo, hi)| *lo <= a && a <= *hi);
    }
    val.split(", ").any(|v| {
        let (lo, hi) = parse_addr_range(v);
        lo <= a && a <= hi
    })
}

fn ports_ok(val: &str, p: Option<u16>) -> bool {
    let Some(p) = p else { return false };
    val.split(", ").any(|v| match v.split_once('-') {
        Some((a, b)) => a.parse::<u16>().unwrap() <= p && p <= b.parse::<u16>().unwrap(),
        None => v.parse::<u16>().unwrap() == p,
    })
}

/// Evaluate one rendered rule line; Some(verdict, comment) when it matches with a verdict.
fn eval_line(s: &Script, line: &str, p: &explain::Packet) -> Option<Option<(String, String)>> {
    let mut t = line;
    let l4 = |x: &str| match p.l4 {
        Some(plan::ruleset::L4::Tcp) => x == "tcp",
        Some(plan::ruleset::L4::Udp) => x == "udp",
        Some(plan::ruleset::L4::Icmp) => x == "icmp",
        _ => false,
    };
    loop {
        if t.starts_with("meta nfproto ipv6") {
            return None;
        } else if let Some(v) = take(&mut t, "iifname ") {
            if p.iif.as_deref() != Some(v) {
                return None;
            }
        } else if let Some(v) = take(&mut t, "oifname ") {
            if p.oif.as_deref() != Some(v) {
                return None;
            }
        } else if let Some(v) = take(&mut t, "ip saddr ") {
            let std::net::IpAddr::V4(a) = p.src else {
                return None;
            };
            if !addr_ok(s, v, a) {
                return None;
            }
        } else if let Some(v) = take(&mut t, "ip daddr ") {
            let std::net::IpAddr::V4(a) = p.dst else {
                return None;
            };
            if !addr_ok(s, v, a) {
                return None;
            }
        } else if take(&mut t, "fib daddr type ").is_some() {
            if p.chain != "input" {
                return None;
            }
        } else if let Some(v) = take(&mut t, "meta l4proto ") {
            if !l4(v) {
                return None;
            }
        } else if let Some(v) = take(&mut t, "tcp dport ") {
            if !l4("tcp") || !ports_ok(v, p.dport) {
                return None;
            }
        } else if let Some(v) = take(&mut t, "udp dport ") {
            if !l4("udp") || !ports_ok(v, p.dport) {
                return None;
            }
        } else if let Some(v) = take(&mut t, "udp sport ") {
            if !l4("udp") || !ports_ok(v, p.sport) {
                return None;
            }
        } else if let Some(v) = take(&mut t, "ct state ") {
            let _ = v;
            return None; // a new connection is neither established nor invalid
        } else if take(&mut t, "ct status ").is_some() {
            if !p.dnat {
                return None;
            }
        } else if t.starts_with("limit ") {
            return Some(None); // the log rule: matches, no verdict
        } else if let Some(r) = t.strip_prefix("counter ") {
            t = r;
        } else {
            break;
        }
    }
    let (verdict, rest) = t.split_once(' ').unwrap_or((t, ""));
    let verdict = if verdict == "jump" {
        format!("jump {}", rest.split(' ').next().unwrap())
    } else {
        verdict.to_string()
    };
    let comment = rest
        .split("comment \"")
        .nth(1)
        .unwrap_or("")
        .trim_end_matches('"')
        .to_string();
    Some(Some((verdict, comment)))
}

fn eval_chain(s: &Script, chain: &str, p: &explain::Packet) -> Option<(String, String)> {
    for line in &s.chains[chain] {
        match eval_line(s, line, p) {
            None | Some(None) => continue,
            Some(Some((v, c))) => {
                if let Some(sub) = v.strip_prefix("jump ") {
                    if let Some(r) = eval_chain(s, sub, p) {
                        return Some(r);
                    }
                    continue;
                }
                if v == "return" {
                    return None;
                }
                return Some((v, c));
            }
        }
    }
    None
}

static ACCEPTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static DROPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static FORWARDED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[test]
fn random_configs_load_and_explain_matches_rendering() {
    use std::sync::atomic::Ordering::Relaxed;
    // every rendering is also checked by the kernel's nft parser: root, never skipped
    common::require_root_and(&["ip", "nft"]);
    let ns = Some(common::Netns::new("prop"));
    let dir = common::TempDir::new("prop");
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let flows = prop::collection::vec(
        (
            0usize..64,
            0usize..64,
            0usize..3,
            prop_oneof![
                Just(22u16),
                Just(80),
                Just(443),
                Just(5432),
                Just(1000),
                Just(1001),
                Just(1200),
                Just(8081),
                1u16..2000
            ],
        ),
        24,
    );
    runner
        .run(&(configs(), flows), |(g, flows)| {
            let text = toml(&g);
            let (m, _) = match plan::load_str("prop.toml", &text) {
                Ok(x) => x,
                Err(r) => {
                    return Err(TestCaseError::fail(format!(
                        "generated config rejected:\n{r}\n{text}"
                    )));
                }
            };
            let rs = plan::ruleset::build(&m);
            // the flowtable changes no verdict, and its devices do not exist here
            let FirewallText::Nftables { script } = plan::build(&m, Some(Backend::Nftables))
                .without_flow_offload()
                .firewall
            else {
                unreachable!()
            };
            if let Some(ns) = &ns {
                let f = dir.path().join("prop.nft");
                std::fs::write(&f, &script).unwrap();
                let o = ns.run(&["nft", "-c", "-f", f.to_str().unwrap()]);
                prop_assert!(
                    o.status.success(),
                    "kernel rejected:\n{}\n{script}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            let reader = read_script(&script);
            // candidate addresses: hosts of segments, group members, gateways, the internet
            let mut addrs: Vec<Ipv4Addr> = Vec::new();
            for s in &m.segments {
                addrs.push(s.gateway);
                addrs.push(Ipv4Addr::from(u32::from(s.subnet.network()) + 120));
            }
            for gr in &m.groups {
                for r in &gr.members {
                    addrs.push(r.lo);
                }
            }
            addrs.extend(
                ["203.0.113.2", "198.51.100.9", "192.0.2.1"]
                    .map(|a| a.parse::<Ipv4Addr>().unwrap()),
            );
            for (a, b, proto, port) in flows {
                let f = explain::Flow {
                    src: addrs[a % addrs.len()].into(),
                    dst: addrs[b % addrs.len()].into(),
                    proto: [Proto::Tcp, Proto::Udp, Proto::Icmp][proto],
                    port: (proto < 2).then_some(port),
                };
                if f.src == f.dst {
                    continue;
                }
                let d = explain::explain(&m, &rs, &f);
                if d.allowed() {
                    ACCEPTED.fetch_add(1, Relaxed);
                } else {
                    DROPPED.fetch_add(1, Relaxed);
                }
                if d.forward.is_some() {
                    FORWARDED.fetch_add(1, Relaxed);
                }
                let (verdict, comment) = eval_chain(&reader, d.packet.chain, &d.packet)
                    .unwrap_or_else(|| ("policy".into(), String::new()));
                let want_verdict = match d.verdict {
                    plan::ruleset::Verdict::Accept => "accept",
                    plan::ruleset::Verdict::Drop => "drop",
                    _ => "other",
                };
                let chain_policy_accept = d.packet.chain == "output" && m.gateway_egress.is_none();
                if verdict == "policy" {
                    prop_assert!(
                        d.rule.is_none(),
                        "{f:?}: rendered script falls to the policy, explain says {}",
                        d.describe()
                    );
                    prop_assert_eq!(
                        want_verdict,
                        if chain_policy_accept {
                            "accept"
                        } else {
                            "drop"
                        }
                    );
                } else {
                    prop_assert_eq!(&verdict, want_verdict, "{:?}: {}", f, d.describe());
                    prop_assert_eq!(
                        Some(comment),
                        d.rule.as_ref().map(|r| r.origin.comment()),
                        "{:?}",
                        f
                    );
                }
            }
            Ok(())
        })
        .unwrap();
    let (a, d, f) = (
        ACCEPTED.load(Relaxed),
        DROPPED.load(Relaxed),
        FORWARDED.load(Relaxed),
    );
    eprintln!("flows compared: {a} accepted, {d} dropped, {f} through port forwards");
    assert!(
        a > 0 && d > 0,
        "the generator must produce both accepted and dropped flows"
    );
}
