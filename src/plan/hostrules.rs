//! `hostrules --role GROUP`: a host-based nftables file for one server of a group, derived from
//! the same policy as the gateway's ruleset.

use std::fmt::Write;

use super::nft;
use super::ruleset::{AddrMatch, L4, Match, QUARANTINE, set6};
use crate::model::{Endpoint, InternetAccess, Model, Proto, Service, addr::merge_ranges};

pub const HOST_TABLE: &str = "bulkhead_host";
const INTERNAL: &str = "internal_nets";
/// ICMPv6 a host takes (RFC 4890 4.4): errors; neighbour discovery and router
/// advertisements only from the link (hop limit 255); MLD (hop limit 1); echo rate-limited.
const HOST_ICMPV6: &[&str] = &[
    "icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } counter accept comment \"builtin:icmpv6-error\"",
    "icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 counter accept comment \"builtin:icmpv6-nd\"",
    "icmpv6 type { mld-listener-query, mld-listener-report, mld-listener-reduction, mld2-listener-report } ip6 hoplimit 1 counter accept comment \"builtin:icmpv6-mld\"",
    "icmpv6 type echo-request limit rate 10/second burst 20 packets counter accept comment \"builtin:icmpv6-echo\"",
];

#[derive(Debug, thiserror::Error)]
pub enum HostRulesError {
    #[error("no group named `{0}` (groups: {1})")]
    NoGroup(String, String),
}

struct Out {
    text: String,
    sets: Vec<String>,
    /// The config has IPv6: render IPv6 variants of rules.
    v6: bool,
}

impl Out {
    fn line(&mut self, m: &Match, tail: &str, comment: &str) {
        let ms = nft::matches(m);
        let sp = if ms.is_empty() { "" } else { " " };
        let _ = writeln!(self.text, "\t\t{ms}{sp}{tail} comment \"{comment}\"");
        for a in [&m.saddr, &m.daddr].into_iter().flatten() {
            if let AddrMatch::Set(s) | AddrMatch::Set6(s) = a {
                self.use_set(s);
            }
        }
    }

    fn use_set(&mut self, s: &str) {
        if !self.sets.iter().any(|x| x == s) {
            self.sets.push(s.to_string());
        }
    }

    fn service(
        &mut self,
        base: &Match,
        svc: &Service,
        negate_internal: Option<bool>,
        comment: &str,
    ) {
        let v6base = [&base.saddr, &base.daddr]
            .into_iter()
            .flatten()
            .any(AddrMatch::is_v6);
        let v4base = !v6base && (base.saddr.is_some() || base.daddr.is_some());
        // An internet end is "not internal" in each family.
        let fams: &[bool] = match (negate_internal, self.v6) {
            (Some(_), true) => &[false, true],
            _ => &[false],
        };
        let mut l4s: Vec<(Option<L4>, bool)> = Vec::new();
        for p in &svc.protos {
            for &six in fams {
                match p {
                    Proto::Tcp => l4s.push((Some(L4::Tcp), six)),
                    Proto::Udp => l4s.push((Some(L4::Udp), six)),
                    Proto::Icmp => {
                        if !v6base && !six {
                            l4s.push((Some(L4::Icmp), six));
                        }
                        if self.v6 && !v4base && (six || negate_internal.is_none()) {
                            l4s.push((Some(L4::Icmpv6), six));
                        }
                    }
                    Proto::Any => l4s.push((None, six)),
                }
            }
        }
        for (l4, six) in l4s {
            let mut m = base.clone();
            m.l4 = l4;
            m.dport = svc.ports.clone();
            let mut ms = nft::matches(&m);
            if let Some(src) = negate_internal {
                let dir = if src { "saddr" } else { "daddr" };
                let e = if six {
                    format!("ip6 {dir} != @{}", set6(INTERNAL))
                } else {
                    format!("ip {dir} != @{INTERNAL}")
                };
                ms = if ms.is_empty() {
                    e
                } else {
                    format!("{e} {ms}")
                };
            }
            let sp = if ms.is_empty() { "" } else { " " };
            let _ = writeln!(
                self.text,
                "\t\t{ms}{sp}counter accept comment \"{comment}\""
            );
            for a in [&m.saddr, &m.daddr].into_iter().flatten() {
                if let AddrMatch::Set(s) | AddrMatch::Set6(s) = a {
                    self.use_set(s);
                }
            }
        }
    }
}

/// The address matches of an endpoint in the host file: the IPv4 one, and with IPv6 the
/// segment's static subnet6 or the group's IPv6 set.
fn host_addrs(m: &Model, e: &Endpoint) -> Vec<AddrMatch> {
    let mut v = Vec::new();
    match e {
        Endpoint::Segment(s) => {
            let seg = m.segment(s).unwrap();
            v.push(AddrMatch::Nets(vec![seg.subnet]));
            if let Some(crate::model::Prefix6::Static(n)) = seg.ipv6.as_ref().map(|x| x.prefix) {
                v.push(AddrMatch::Nets6(vec![n]));
            }
        }
        Endpoint::Group(x) => {
            v.push(AddrMatch::Set(x.clone()));
            if m.group(x).is_some_and(|g| !g.members6.is_empty()) {
                v.push(AddrMatch::Set6(set6(x)));
            }
        }
        _ => {}
    }
    v
}

/// Render the host file for a member of `role`.
pub fn render(m: &Model, role: &str) -> Result<String, HostRulesError> {
    let g = m.group(role).ok_or_else(|| {
        HostRulesError::NoGroup(
            role.to_string(),
            m.groups
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )
    })?;
    let seg = m.segment_of_group(g);
    let mg = m.management_segment();
    let covers = |e: &Endpoint| match e {
        Endpoint::Group(x) => x == role,
        Endpoint::Segment(s) => seg.is_some_and(|seg| &seg.name == s),
        Endpoint::Any => true,
        _ => false,
    };
    let log = format!(
        "limit rate {}/{} burst {} packets log prefix \"bh-host:{role}:",
        m.logging.drop_log_rate.count, m.logging.drop_log_rate.per, m.logging.drop_log_burst
    );

    let v6 = m.has_ipv6();
    let mut o = Out {
        text: String::new(),
        sets: Vec::new(),
        v6,
    };
    // input
    let _ = writeln!(o.text, "\tchain input {{");
    let _ = writeln!(
        o.text,
        "\t\ttype filter hook input priority filter; policy drop;"
    );
    let _ = writeln!(
        o.text,
        "\t\tct state established,related counter accept comment \"builtin:established\""
    );
    let _ = writeln!(
        o.text,
        "\t\tct state invalid counter drop comment \"builtin:invalid\""
    );
    let _ = writeln!(
        o.text,
        "\t\tiifname \"lo\" counter accept comment \"builtin:loopback\""
    );
    let _ = writeln!(
        o.text,
        "\t\tip saddr @{QUARANTINE} counter drop comment \"builtin:quarantine\""
    );
    if v6 {
        let _ = writeln!(
            o.text,
            "\t\tip6 saddr @{} counter drop comment \"builtin:quarantine\"",
            set6(QUARANTINE)
        );
    }
    let _ = writeln!(
        o.text,
        "\t\tmeta l4proto icmp counter accept comment \"builtin:icmp\""
    );
    for l in HOST_ICMPV6 {
        let _ = writeln!(o.text, "\t\t{l}");
    }
    let _ = writeln!(
        o.text,
        "\t\tudp sport 67 udp dport 68 counter accept comment \"builtin:dhcp-client\""
    );
    if v6 {
        let _ = writeln!(
            o.text,
            "\t\tip6 saddr fe80::/10 udp sport 547 udp dport 546 counter accept comment \"builtin:dhcp6-client\""
        );
    }
    let admin = if m.management.sources.is_empty() {
        host_addrs(m, &Endpoint::Segment(mg.name.clone()))
    } else {
        m.management
            .sources
            .iter()
            .flat_map(|s| host_addrs(m, &Endpoint::Group(s.clone())))
            .collect()
    };
    for a in admin {
        o.line(
            &Match {
                saddr: Some(a),
                l4: Some(L4::Tcp),
                dport: vec![crate::model::PortRange::single(22)],
                ..Match::default()
            },
            "counter accept",
            &format!("management:{}", mg.name),
        );
    }
    for r in m.rules.iter().filter(|r| covers(&r.to)) {
        let comment = format!("rule:{}", r.name);
        match &r.from {
            e @ (Endpoint::Segment(_) | Endpoint::Group(_)) => {
                for a in host_addrs(m, e) {
                    let base = Match {
                        saddr: Some(a),
                        ..Match::default()
                    };
                    o.service(&base, &r.service, None, &comment);
                }
            }
            Endpoint::Internet => o.service(&Match::default(), &r.service, Some(true), &comment),
            _ => o.service(&Match::default(), &r.service, None, &comment),
        }
    }
    for f in m
        .forwards
        .iter()
        .filter(|f| g.members.iter().any(|r| r.contains(f.to)))
    {
        let port = f.to_port.map_or(f.port, crate::model::PortRange::single);
        let svc = Service {
            protos: vec![f.proto],
            ports: vec![port],
        };
        // A port forward is IPv4 (destination NAT): its group matches IPv4 sources only.
        let (base, neg) = match &f.from {
            Endpoint::Group(x) => (
                Match {
                    saddr: Some(AddrMatch::Set(x.clone())),
                    ..Match::default()
                },
                None,
            ),
            Endpoint::Internet => (Match::default(), Some(true)),
            _ => (Match::default(), None),
        };
        o.service(&base, &svc, neg, &format!("forward:{}", f.name));
    }
    let _ = writeln!(
        o.text,
        "\t\t{log}in:drop\" group {} comment \"builtin:default-drop\"",
        m.logging.nflog_group
    );
    let _ = writeln!(o.text, "\t\tcounter drop comment \"builtin:default-drop\"");
    let _ = writeln!(o.text, "\t}}");

    // output
    let _ = writeln!(o.text, "\tchain output {{");
    let _ = writeln!(
        o.text,
        "\t\ttype filter hook output priority filter; policy drop;"
    );
    let _ = writeln!(
        o.text,
        "\t\tct state established,related counter accept comment \"builtin:established\""
    );
    let _ = writeln!(
        o.text,
        "\t\tct state invalid counter drop comment \"builtin:invalid\""
    );
    let _ = writeln!(
        o.text,
        "\t\toifname \"lo\" counter accept comment \"builtin:loopback\""
    );
    let _ = writeln!(
        o.text,
        "\t\tmeta l4proto {{ icmp, ipv6-icmp }} counter accept comment \"builtin:icmp\""
    );
    let _ = writeln!(
        o.text,
        "\t\tudp sport 68 udp dport 67 counter accept comment \"builtin:dhcp-client\""
    );
    if v6 {
        let _ = writeln!(
            o.text,
            "\t\tudp sport 546 udp dport 547 counter accept comment \"builtin:dhcp6-client\""
        );
    }
    for r in m.rules.iter().filter(|r| covers(&r.from)) {
        let comment = format!("rule:{}", r.name);
        let mut dsts: Vec<AddrMatch> = Vec::new();
        let mut neg = None;
        match &r.to {
            e @ (Endpoint::Segment(_) | Endpoint::Group(_)) => dsts = host_addrs(m, e),
            Endpoint::Gateway => {
                dsts.push(AddrMatch::Nets(
                    m.segments
                        .iter()
                        .map(|s| ipnet::Ipv4Net::new(s.gateway, 32).unwrap())
                        .collect(),
                ));
                let gw6: Vec<ipnet::Ipv6Net> = m
                    .segments6()
                    .filter_map(|s| s.gateway6(None))
                    .map(|a| ipnet::Ipv6Net::new(a, 128).unwrap())
                    .collect();
                if !gw6.is_empty() {
                    dsts.push(AddrMatch::Nets6(gw6));
                }
            }
            Endpoint::Internet => neg = Some(false),
            Endpoint::Any => {}
        }
        if dsts.is_empty() {
            o.service(&Match::default(), &r.service, neg, &comment);
        }
        for d in dsts {
            let base = Match {
                daddr: Some(d),
                ..Match::default()
            };
            o.service(&base, &r.service, None, &comment);
        }
    }
    if let Some(seg) = seg {
        match &seg.internet {
            InternetAccess::None => {}
            InternetAccess::Full => {
                let _ = writeln!(
                    o.text,
                    "\t\tip daddr != @{INTERNAL} counter accept comment \"internet:{}\"",
                    seg.name
                );
                if v6 {
                    let _ = writeln!(
                        o.text,
                        "\t\tip6 daddr != @{} counter accept comment \"internet:{}\"",
                        set6(INTERNAL),
                        seg.name
                    );
                }
            }
            InternetAccess::Profile(p) => {
                for svc in &m.egress_profile(p).unwrap().allow {
                    o.service(
                        &Match::default(),
                        svc,
                        Some(false),
                        &format!("egress:{p}:{}", seg.name),
                    );
                }
            }
        }
    }
    let _ = writeln!(
        o.text,
        "\t\t{log}out:drop\" group {} comment \"builtin:default-drop\"",
        m.logging.nflog_group
    );
    let _ = writeln!(o.text, "\t\tcounter drop comment \"builtin:default-drop\"");
    let _ = writeln!(o.text, "\t}}");
    let _ = writeln!(o.text, "\tchain forward {{");
    let _ = writeln!(
        o.text,
        "\t\ttype filter hook forward priority filter; policy drop;"
    );
    let _ = writeln!(o.text, "\t}}");

    // header and sets
    let mut out = String::new();
    let _ = writeln!(out, "#!/usr/sbin/nft -f");
    let place = seg
        .map(|s| format!(" in segment {} ({})", s.name, s.subnet))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "# Host firewall for a member of group {role}{place}, generated by bulkhead from {}.",
        m.source_name()
    );
    let _ = writeln!(
        out,
        "# Load with `nft -f`; replaces table inet {HOST_TABLE} only."
    );
    let _ = writeln!(out, "table inet {HOST_TABLE}");
    let _ = writeln!(out, "delete table inet {HOST_TABLE}");
    let _ = writeln!(out, "table inet {HOST_TABLE} {{");
    let mut internal: Vec<crate::model::AddrRange> = m
        .segments
        .iter()
        .map(|s| crate::model::AddrRange::from_net(s.subnet))
        .collect();
    if let crate::model::UplinkAddressing::Static { address, .. } = &m.uplink.addressing {
        internal.push(crate::model::AddrRange::from_net(address.trunc()));
    }
    let mut sets: Vec<(String, Vec<crate::model::AddrRange>, Option<u64>)> = vec![
        (INTERNAL.to_string(), merge_ranges(internal), None),
        (
            QUARANTINE.to_string(),
            Vec::new(),
            Some(m.alerts.quarantine.unwrap_or(600)),
        ),
    ];
    for s in &o.sets {
        if let Some(gr) = m.group(s) {
            sets.push((s.clone(), merge_ranges(gr.members.clone()), None));
        }
    }
    // IPv6 sets: (name, elements as text, timeout)
    let mut sets6: Vec<(String, Vec<String>, Option<u64>)> = Vec::new();
    if v6 {
        let mut internal6: Vec<crate::model::AddrRange6> = m
            .segments6()
            .filter_map(|s| s.subnet6(None))
            .map(crate::model::AddrRange6::from_net)
            .collect();
        if let crate::model::Uplink6Addressing::Static { address, .. } = &m.uplink.address6 {
            internal6.push(crate::model::AddrRange6::from_net(address.trunc()));
        }
        let text = |v: Vec<crate::model::AddrRange6>| {
            crate::model::addr::merge_ranges6(v)
                .iter()
                .map(|r| r.to_string())
                .collect()
        };
        sets6.push((set6(INTERNAL), text(internal6), None));
        sets6.push((
            set6(QUARANTINE),
            Vec::new(),
            Some(m.alerts.quarantine.unwrap_or(600)),
        ));
        for s in &o.sets {
            if let Some(gr) = s
                .strip_suffix(super::ruleset::V6_SUFFIX)
                .and_then(|g| m.group(g))
            {
                sets6.push((s.clone(), text(gr.members6.clone()), None));
            }
        }
    }
    let sets = sets
        .into_iter()
        .map(|(n, els, t)| {
            let els: Vec<String> = els.iter().map(|r| r.to_string()).collect();
            (n, "ipv4_addr", els, t)
        })
        .chain(
            sets6
                .into_iter()
                .map(|(n, els, t)| (n, "ipv6_addr", els, t)),
        );
    for (name, ty, els, timeout) in sets {
        let _ = writeln!(out, "\tset {name} {{");
        let _ = writeln!(out, "\t\ttype {ty}");
        match timeout {
            Some(t) => {
                let _ = writeln!(out, "\t\tflags interval,timeout\n\t\ttimeout {t}s");
            }
            None => {
                let _ = writeln!(out, "\t\tflags interval");
            }
        }
        let _ = writeln!(out, "\t\tauto-merge");
        if !els.is_empty() {
            let _ = writeln!(out, "\t\telements = {{ {} }}", els.join(", "));
        }
        let _ = writeln!(out, "\t}}");
    }
    out.push_str(&o.text);
    let _ = writeln!(out, "}}");
    Ok(out)
}

/// Where a host sits, for evaluating its host firewall.
pub struct HostView<'a> {
    pub group: &'a str,
    pub segment: Option<&'a crate::model::Segment>,
}

fn internal(m: &Model, a: std::net::Ipv4Addr) -> bool {
    m.segments.iter().any(|s| s.subnet.contains(&a))
        || matches!(&m.uplink.addressing, crate::model::UplinkAddressing::Static { address, .. } if address.trunc().contains(&a))
}

fn host_in(m: &Model, e: &Endpoint, a: std::net::Ipv4Addr) -> bool {
    match e {
        Endpoint::Segment(s) => m.segment(s).is_some_and(|s| s.subnet.contains(&a)),
        Endpoint::Group(g) => m
            .group(g)
            .is_some_and(|g| g.members.iter().any(|r| r.contains(a))),
        Endpoint::Internet => !internal(m, a),
        Endpoint::Any => true,
        Endpoint::Gateway => m.segments.iter().any(|s| s.gateway == a),
    }
}

fn covers_view(e: &Endpoint, h: &HostView) -> bool {
    match e {
        Endpoint::Group(x) => x == h.group,
        Endpoint::Segment(s) => h.segment.is_some_and(|seg| &seg.name == s),
        Endpoint::Any => true,
        _ => false,
    }
}

fn service_has(svc: &Service, proto: Proto, port: Option<u16>) -> bool {
    svc.protos.iter().any(|p| *p == Proto::Any || *p == proto)
        && (svc.ports.is_empty() || port.is_some_and(|x| svc.ports.iter().any(|r| r.contains(x))))
}

/// Would the host file of `h` accept a new connection from `src` (input chain)?
/// Mirrors [`render`]: management SSH, rules towards the host, port forwards to it.
pub fn input_allows(
    m: &Model,
    h: &HostView,
    src: std::net::Ipv4Addr,
    proto: Proto,
    port: Option<u16>,
) -> bool {
    let mg = m.management_segment();
    let admin = if m.management.sources.is_empty() {
        mg.subnet.contains(&src)
    } else {
        m.management
            .sources
            .iter()
            .any(|g| host_in(m, &Endpoint::Group(g.clone()), src))
    };
    if admin && proto == Proto::Tcp && port == Some(22) || proto == Proto::Icmp {
        return true;
    }
    let rules = m
        .rules
        .iter()
        .filter(|r| {
            covers_view(&r.to, h) && host_in(m, &r.from, src) && r.from != Endpoint::Gateway
        })
        .any(|r| service_has(&r.service, proto, port));
    let g = m.group(h.group);
    let forwards = m.forwards.iter().any(|f| {
        g.is_some_and(|g| g.members.iter().any(|r| r.contains(f.to)))
            && f.proto == proto
            && match f.to_port {
                Some(tp) => port == Some(tp),
                None => port.is_some_and(|p| f.port.contains(p)),
            }
            && match &f.from {
                Endpoint::Group(x) => host_in(m, &Endpoint::Group(x.clone()), src),
                Endpoint::Internet => !internal(m, src),
                _ => true,
            }
    });
    rules || forwards
}

/// Would the host file of `h` let it open a connection to `dst` (output chain)?
pub fn output_allows(
    m: &Model,
    h: &HostView,
    dst: std::net::Ipv4Addr,
    proto: Proto,
    port: Option<u16>,
) -> bool {
    if proto == Proto::Icmp {
        return true;
    }
    let rules = m
        .rules
        .iter()
        .filter(|r| covers_view(&r.from, h) && host_in(m, &r.to, dst))
        .any(|r| service_has(&r.service, proto, port));
    let egress = h.segment.is_some_and(|seg| match &seg.internet {
        InternetAccess::None => false,
        InternetAccess::Full => !internal(m, dst),
        InternetAccess::Profile(p) => {
            !internal(m, dst)
                && m.egress_profile(p)
                    .is_some_and(|pr| pr.allow.iter().any(|s| service_has(s, proto, port)))
        }
    });
    rules || egress
}
