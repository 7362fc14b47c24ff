//! Render the neutral ruleset for iptables: `ipset restore` input for the groups and
//! `iptables-restore --noflush` input for Bulkhead's own chains (IPv4).

use std::fmt::Write;

use ipnet::Ipv4Net;

use super::ruleset::{AddrMatch, Ct, FwRule, L4, Match, Ruleset, Verdict};
use crate::model::PortRange;

/// Chain / set name prefix.
pub const PREFIX: &str = "BH";

/// The ipset that holds a group.
pub fn set_name(group: &str) -> String {
    format!("bh-{group}")
}

/// The temporary set a group is loaded into before it is swapped in.
pub fn swap_name(group: &str) -> String {
    format!("bh-{group}-n")
}

pub fn chain_name(c: &str) -> String {
    format!("{PREFIX}-{}", c.to_ascii_uppercase())
}

/// Jumps from the built-in chains into Bulkhead's chains: (table, built-in chain, own chain).
/// `apply` inserts each one at the head of its built-in chain when it is missing.
pub fn hooks(rs: &Ruleset) -> Vec<(&'static str, &'static str, String)> {
    let mut v = Vec::new();
    for c in &rs.chains {
        if let Some(h) = c.hook {
            let b = match h {
                super::ruleset::Hook::Input => "INPUT",
                super::ruleset::Hook::Forward => "FORWARD",
                super::ruleset::Hook::Output => "OUTPUT",
            };
            v.push(("filter", b, chain_name(c.name)));
        }
    }
    v.push(("nat", "PREROUTING", chain_name("dstnat")));
    v.push(("nat", "POSTROUTING", chain_name("srcnat")));
    v
}

/// hash:net cannot hold a /0; split it.
fn set_cidrs(n: Ipv4Net) -> Vec<Ipv4Net> {
    if n.prefix_len() == 0 {
        vec!["0.0.0.0/1".parse().unwrap(), "128.0.0.0/1".parse().unwrap()]
    } else {
        vec![n]
    }
}

/// `ipset restore` input: every group is filled into a fresh set and swapped in atomically;
/// the quarantine set is created once and keeps its entries.
pub fn render_ipset(rs: &Ruleset) -> String {
    let mut out = String::new();
    for s in rs.sets.iter().filter(|s| !s.ipv6) {
        let name = set_name(&s.name);
        if let Some(t) = s.timeout {
            let _ = writeln!(
                out,
                "create {name} hash:ip family inet timeout {t} maxelem 65536 -exist"
            );
            continue;
        }
        let tmp = swap_name(&s.name);
        let _ = writeln!(
            out,
            "create {name} hash:net family inet maxelem 1048576 -exist"
        );
        let _ = writeln!(
            out,
            "create {tmp} hash:net family inet maxelem 1048576 -exist"
        );
        let _ = writeln!(out, "flush {tmp}");
        for r in &s.elements {
            for n in r.to_cidrs().into_iter().flat_map(set_cidrs) {
                let _ = writeln!(out, "add {tmp} {n}");
            }
        }
        let _ = writeln!(out, "swap {tmp} {name}");
        let _ = writeln!(out, "destroy {tmp}");
    }
    out
}

fn quote(s: &str) -> String {
    format!("\"{s}\"")
}

fn port_list(p: &[PortRange]) -> Vec<String> {
    p.iter()
        .map(|r| {
            if r.lo == r.hi {
                r.lo.to_string()
            } else {
                format!("{}:{}", r.lo, r.hi)
            }
        })
        .collect()
}

/// multiport takes at most 15 ports (a range counts two): split into groups.
fn port_groups(p: &[PortRange]) -> Vec<Vec<PortRange>> {
    let mut out: Vec<Vec<PortRange>> = Vec::new();
    let mut cur = Vec::new();
    let mut weight = 0;
    for r in p {
        let w = if r.lo == r.hi { 1 } else { 2 };
        if weight + w > 15 {
            out.push(std::mem::take(&mut cur));
            weight = 0;
        }
        cur.push(*r);
        weight += w;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn addr_args(flag: &str, dir: &str, m: &AddrMatch) -> Vec<String> {
    match m {
        AddrMatch::Set(s) => vec![format!("-m set --match-set {} {dir}", set_name(s))],
        AddrMatch::Nets(ns) => ns.iter().map(|n| format!("{flag} {n}")).collect(),
        // Not reached: `emit` skips IPv6 rules (the model refuses IPv6 with this backend).
        AddrMatch::Set6(_) | AddrMatch::Nets6(_) => Vec::new(),
    }
}

/// Every iptables match string for one neutral match (more than one when it must be split).
pub fn match_variants(m: &Match) -> Vec<String> {
    let mut base: Vec<String> = Vec::new();
    if let Some(i) = &m.iif {
        base.push(format!("-i {i}"));
    }
    if let Some(o) = &m.oif {
        base.push(format!("-o {o}"));
    }
    let mut variants = vec![base.join(" ")];
    let mut cross = |opts: Vec<String>| {
        if opts.is_empty() {
            return;
        }
        variants = variants
            .iter()
            .flat_map(|v| {
                opts.iter().map(move |o| {
                    if v.is_empty() {
                        o.clone()
                    } else {
                        format!("{v} {o}")
                    }
                })
            })
            .collect();
    };
    if let Some(s) = &m.saddr {
        cross(addr_args("-s", "src", s));
    }
    if let Some(d) = &m.daddr {
        cross(addr_args("-d", "dst", d));
    }
    if m.daddr_local {
        cross(vec!["-m addrtype --dst-type LOCAL".into()]);
    }
    match m.l4 {
        Some(l @ (L4::Tcp | L4::Udp)) => {
            let p = if l == L4::Tcp { "tcp" } else { "udp" };
            let mut opts = vec![format!("-p {p} -m {p}")];
            if !m.sport.is_empty() {
                let s = port_list(&m.sport);
                opts = vec![format!("{} --sport {}", opts[0], s.join(","))];
            }
            cross(opts);
            if !m.dport.is_empty() {
                let groups = port_groups(&m.dport);
                if groups.len() == 1 && groups[0].len() == 1 {
                    cross(vec![format!("--dport {}", port_list(&groups[0])[0])]);
                } else {
                    cross(
                        groups
                            .iter()
                            .map(|g| format!("-m multiport --dports {}", port_list(g).join(",")))
                            .collect(),
                    );
                }
            }
        }
        Some(L4::Icmp) if !m.icmp_types.is_empty() => cross(
            m.icmp_types
                .iter()
                .map(|t| format!("-p icmp -m icmp --icmp-type {t}"))
                .collect(),
        ),
        Some(L4::Icmp) => cross(vec!["-p icmp".into()]),
        Some(L4::Icmpv6) | None => {}
    }
    if let Some(l) = m.limit {
        cross(vec![format!(
            "-m limit --limit {}/{} --limit-burst {}",
            l.rate.count, l.rate.per, l.burst
        )]);
    }
    match m.ct {
        Some(Ct::EstablishedRelated) => {
            cross(vec!["-m conntrack --ctstate RELATED,ESTABLISHED".into()])
        }
        Some(Ct::Invalid) => cross(vec!["-m conntrack --ctstate INVALID".into()]),
        Some(Ct::Dnat) => cross(vec!["-m conntrack --ctstate DNAT".into()]),
        None => {}
    }
    variants
}

fn target(v: &Verdict) -> String {
    match v {
        Verdict::Accept => "ACCEPT".into(),
        Verdict::Drop => "DROP".into(),
        Verdict::Return => "RETURN".into(),
        Verdict::Jump(c) => chain_name(c),
    }
}

fn emit(out: &mut String, rs: &Ruleset, chain: &str, r: &FwRule) {
    // IPv6-only rules have no IPv4 rendering: with this backend IPv6 is switched off
    // (`disable_ipv6` in the plan's sysctls), so there is no IPv6 traffic to filter.
    let v6addr = |a: &Option<AddrMatch>| a.as_ref().is_some_and(AddrMatch::is_v6);
    if r.m.ipv6 || r.m.l4 == Some(L4::Icmpv6) || v6addr(&r.m.saddr) || v6addr(&r.m.daddr) {
        return;
    }
    let c = chain_name(chain);
    let comment = format!("-m comment --comment {}", quote(&r.origin.comment()));
    for v in match_variants(&r.m) {
        let sp = if v.is_empty() { "" } else { " " };
        if r.log {
            let _ = writeln!(
                out,
                "-A {c}{sp}{v} {comment} -m limit --limit {}/{} --limit-burst {} -j NFLOG --nflog-group {} --nflog-prefix {}",
                rs.log_rate.count,
                rs.log_rate.per,
                rs.log_burst,
                rs.nflog_group,
                quote(&r.log_prefix(chain))
            );
        }
        let _ = writeln!(out, "-A {c}{sp}{v} {comment} -j {}", target(&r.verdict));
    }
}

/// `iptables-restore --noflush` input for the filter and nat tables.
pub fn render(rs: &Ruleset, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated by bulkhead from {source}; load with `iptables-restore --noflush` after the ipsets."
    );
    for (t, b, c) in hooks(rs) {
        let _ = writeln!(
            out,
            "# hook ({t}): -I {b} 1 -j {c}  (inserted by apply when missing)"
        );
    }
    let _ = writeln!(out, "*filter");
    for c in &rs.chains {
        let _ = writeln!(out, ":{} - [0:0]", chain_name(c.name));
    }
    for c in &rs.chains {
        for r in &c.rules {
            emit(&mut out, rs, c.name, r);
        }
        // A hooked chain with an accept policy needs no terminal rule: falling off returns to
        // the built-in chain. Policies of drop end in an explicit drop rule (the default-drop).
    }
    let _ = writeln!(out, "COMMIT");
    let _ = writeln!(out, "*nat");
    let _ = writeln!(out, ":{} - [0:0]", chain_name("dstnat"));
    let _ = writeln!(out, ":{} - [0:0]", chain_name("srcnat"));
    for d in &rs.dnat {
        let m = Match {
            iif: Some(d.iif.clone()),
            saddr: d.saddr.clone(),
            daddr_local: true,
            l4: Some(d.proto),
            dport: vec![d.port],
            ..Match::default()
        };
        let to = match d.to_port {
            Some(p) => format!("{}:{p}", d.to),
            None => d.to.to_string(),
        };
        for v in match_variants(&m) {
            let _ = writeln!(
                out,
                "-A {} {v} -m comment --comment {} -j DNAT --to-destination {to}",
                chain_name("dstnat"),
                quote(&d.origin.comment())
            );
        }
    }
    if let Some(o) = &rs.masquerade {
        let _ = writeln!(
            out,
            "-A {} -o {o} -m comment --comment \"builtin:masquerade\" -j MASQUERADE",
            chain_name("srcnat")
        );
    }
    let _ = writeln!(out, "COMMIT");
    out
}
