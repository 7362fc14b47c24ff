//! Render the neutral ruleset as one nftables script that owns `table inet bulkhead`.

use std::fmt::Write;

use super::ruleset::{
    AddrMatch, Chain, Ct, FLOWTABLE, FwRule, Hook, L4, Match, Ruleset, TABLE, Verdict,
};
use crate::model::PortRange;

fn ports(p: &[PortRange]) -> String {
    if p.len() == 1 {
        p[0].to_string()
    } else {
        format!(
            "{{ {} }}",
            p.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn addr(m: &AddrMatch) -> String {
    match m {
        AddrMatch::Set(s) => format!("@{s}"),
        AddrMatch::Nets(n) if n.len() == 1 => net(&n[0]),
        AddrMatch::Nets(n) => format!("{{ {} }}", n.iter().map(net).collect::<Vec<_>>().join(", ")),
        AddrMatch::Set6(s) => format!("@{s}"),
        AddrMatch::Nets6(n) if n.len() == 1 => net6(&n[0]),
        AddrMatch::Nets6(n) => format!(
            "{{ {} }}",
            n.iter().map(net6).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn net6(n: &ipnet::Ipv6Net) -> String {
    if n.prefix_len() == 128 {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

/// `ip` or `ip6`, by the family of the address match.
fn fam(a: &AddrMatch) -> &'static str {
    if a.is_v6() { "ip6" } else { "ip" }
}

fn net(n: &ipnet::Ipv4Net) -> String {
    if n.prefix_len() == 32 {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

fn l4name(l: L4) -> &'static str {
    match l {
        L4::Tcp => "tcp",
        L4::Udp => "udp",
        L4::Icmp => "icmp",
        L4::Icmpv6 => "ipv6-icmp",
    }
}

/// nft's name of an ICMP type (the number when it has none).
fn icmp_type(t: u8) -> String {
    match t {
        0 => "echo-reply".into(),
        3 => "destination-unreachable".into(),
        8 => "echo-request".into(),
        11 => "time-exceeded".into(),
        12 => "parameter-problem".into(),
        t => t.to_string(),
    }
}

/// nft's name of an ICMPv6 type (the number when it has none).
fn icmpv6_type(t: u8) -> String {
    match t {
        1 => "destination-unreachable".into(),
        2 => "packet-too-big".into(),
        3 => "time-exceeded".into(),
        4 => "parameter-problem".into(),
        128 => "echo-request".into(),
        129 => "echo-reply".into(),
        130 => "mld-listener-query".into(),
        131 => "mld-listener-report".into(),
        132 => "mld-listener-reduction".into(),
        133 => "nd-router-solicit".into(),
        134 => "nd-router-advert".into(),
        135 => "nd-neighbor-solicit".into(),
        136 => "nd-neighbor-advert".into(),
        137 => "nd-redirect".into(),
        143 => "mld2-listener-report".into(),
        t => t.to_string(),
    }
}

fn types(t: &[u8], name: fn(u8) -> String) -> String {
    if t.len() == 1 {
        name(t[0])
    } else {
        format!(
            "{{ {} }}",
            t.iter().map(|&x| name(x)).collect::<Vec<_>>().join(", ")
        )
    }
}

/// The match part of a rule, as nft expressions.
pub fn matches(m: &Match) -> String {
    let mut e: Vec<String> = Vec::new();
    if m.ipv6 {
        e.push("meta nfproto ipv6".into());
    }
    if let Some(i) = &m.iif {
        e.push(format!("iifname \"{i}\""));
    }
    if let Some(o) = &m.oif {
        e.push(format!("oifname \"{o}\""));
    }
    if let Some(s) = &m.saddr {
        e.push(format!("{} saddr {}", fam(s), addr(s)));
    }
    if let Some(d) = &m.daddr {
        e.push(format!("{} daddr {}", fam(d), addr(d)));
    }
    if m.daddr_local {
        e.push("fib daddr type local".into());
    }
    match m.l4 {
        Some(l @ (L4::Tcp | L4::Udp)) if !m.sport.is_empty() || !m.dport.is_empty() => {
            if !m.sport.is_empty() {
                e.push(format!("{} sport {}", l4name(l), ports(&m.sport)));
            }
            if !m.dport.is_empty() {
                e.push(format!("{} dport {}", l4name(l), ports(&m.dport)));
            }
        }
        Some(L4::Icmp) if !m.icmp_types.is_empty() => {
            e.push(format!("icmp type {}", types(&m.icmp_types, icmp_type)))
        }
        Some(L4::Icmpv6) if !m.icmp_types.is_empty() => {
            e.push(format!("icmpv6 type {}", types(&m.icmp_types, icmpv6_type)))
        }
        Some(l) => e.push(format!("meta l4proto {}", l4name(l))),
        None => {}
    }
    if let Some(h) = m.hoplimit {
        e.push(format!("ip6 hoplimit {h}"));
    }
    if let Some(l) = m.limit {
        e.push(format!(
            "limit rate {}/{} burst {} packets",
            l.rate.count, l.rate.per, l.burst
        ));
    }
    match m.ct {
        Some(Ct::EstablishedRelated) => e.push("ct state established,related".into()),
        Some(Ct::Invalid) => e.push("ct state invalid".into()),
        Some(Ct::Dnat) => e.push("ct status dnat".into()),
        None => {}
    }
    e.join(" ")
}

fn verdict(v: &Verdict) -> String {
    match v {
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Return => "return".into(),
        Verdict::Jump(c) => format!("jump {c}"),
    }
}

fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

fn rule(out: &mut String, rs: &Ruleset, chain: &str, r: &FwRule) {
    let m = matches(&r.m);
    let comment = format!("comment \"{}\"", r.origin.comment());
    if r.log {
        let log = format!(
            "limit rate {}/{} burst {} packets log prefix \"{}\" group {}",
            rs.log_rate.count,
            rs.log_rate.per,
            rs.log_burst,
            r.log_prefix(chain),
            rs.nflog_group
        );
        let _ = writeln!(out, "\t\t{}", join(&[&m, &log, &comment]));
    }
    let _ = writeln!(
        out,
        "\t\t{}",
        join(&[&m, "counter", &verdict(&r.verdict), &comment])
    );
}

fn chain(out: &mut String, rs: &Ruleset, c: &Chain) {
    let _ = writeln!(out, "\tchain {} {{", c.name);
    if let Some(h) = c.hook {
        let hook = match h {
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
        };
        let _ = writeln!(
            out,
            "\t\ttype filter hook {hook} priority filter; policy {};",
            verdict(&c.policy)
        );
    }
    if c.hook == Some(Hook::Forward) {
        offload_rule(out, rs);
    }
    for r in &c.rules {
        rule(out, rs, c.name, r);
    }
    let _ = writeln!(out, "\t}}");
}

/// The whole script: re-declares and replaces only Bulkhead's table, in one transaction.
pub fn render(rs: &Ruleset, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "#!/usr/sbin/nft -f");
    let _ = writeln!(
        out,
        "# Generated by bulkhead from {source}; load with `nft -f`. Replaces table inet {TABLE} only."
    );
    let _ = writeln!(out, "table inet {TABLE}");
    let _ = writeln!(out, "delete table inet {TABLE}");
    let _ = writeln!(out, "table inet {TABLE} {{");
    for s in &rs.sets {
        let _ = writeln!(out, "\tset {} {{", s.name);
        let ty = if s.ipv6 { "ipv6_addr" } else { "ipv4_addr" };
        let _ = writeln!(out, "\t\ttype {ty}");
        match s.timeout {
            Some(t) => {
                let _ = writeln!(out, "\t\tflags interval,timeout");
                let _ = writeln!(out, "\t\ttimeout {t}s");
            }
            None => {
                let _ = writeln!(out, "\t\tflags interval");
            }
        }
        let _ = writeln!(out, "\t\tauto-merge");
        let _ = writeln!(out, "\t\tcomment \"{}\"", s.comment);
        if !s.elements.is_empty() || !s.elements6.is_empty() {
            let mut els: Vec<String> = s
                .elements
                .iter()
                .map(|r| {
                    if r.lo == r.hi {
                        r.lo.to_string()
                    } else {
                        let c = r.to_cidrs();
                        if c.len() == 1 {
                            c[0].to_string()
                        } else {
                            format!("{}-{}", r.lo, r.hi)
                        }
                    }
                })
                .collect();
            els.extend(s.elements6.iter().map(|r| r.to_string()));
            let _ = writeln!(out, "\t\telements = {{");
            for chunk in els.chunks(8) {
                let _ = writeln!(out, "\t\t\t{},", chunk.join(", "));
            }
            let _ = writeln!(out, "\t\t}}");
        }
        let _ = writeln!(out, "\t}}");
    }
    flowtable(&mut out, rs);
    for c in &rs.chains {
        chain(&mut out, rs, c);
    }
    let _ = writeln!(out, "\tchain dstnat {{");
    let _ = writeln!(
        out,
        "\t\ttype nat hook prerouting priority dstnat; policy accept;"
    );
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
        let _ = writeln!(
            out,
            "\t\t{} counter dnat ip to {to} comment \"{}\"",
            matches(&m),
            d.origin.comment()
        );
    }
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tchain srcnat {{");
    let _ = writeln!(
        out,
        "\t\ttype nat hook postrouting priority srcnat; policy accept;"
    );
    if let Some(o) = &rs.masquerade {
        let _ = writeln!(
            out,
            "\t\toifname \"{o}\" meta nfproto ipv4 counter masquerade comment \"builtin:masquerade\""
        );
    }
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "}}");
    out
}

/// The flowtable block (with `[system] flow_offload` on): the software fast path for
/// established forwarded flows.
fn flowtable(out: &mut String, rs: &Ruleset) {
    let Some(ft) = &rs.flowtable else { return };
    let devs: Vec<String> = ft.devices.iter().map(|d| format!("\"{d}\"")).collect();
    let _ = writeln!(out, "\tflowtable {FLOWTABLE} {{");
    let _ = writeln!(out, "\t\thook ingress priority filter;");
    let _ = writeln!(out, "\t\tdevices = {{ {} }};", devs.join(", "));
    let _ = writeln!(out, "\t}}");
}

/// First in the forward chain: a TCP/UDP flow the policy accepted when it was new, and that is
/// established now, is offloaded (the next rule accepts it); new flows are never offloaded.
fn offload_rule(out: &mut String, rs: &Ruleset) {
    if rs.flowtable.is_some() {
        let _ = writeln!(
            out,
            "\t\tmeta l4proto {{ tcp, udp }} ct state established flow add @{FLOWTABLE} comment \"builtin:offload\""
        );
    }
}
