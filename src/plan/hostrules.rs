//! `hostrules --role GROUP`: a host-based nftables file for one server of a group, derived from
//! the same policy as the gateway's ruleset.

use std::fmt::Write;

use super::nft;
use super::ruleset::{AddrMatch, L4, Match, QUARANTINE};
use crate::model::{Endpoint, InternetAccess, Model, Proto, Service, addr::merge_ranges};

pub const HOST_TABLE: &str = "bulkhead_host";
const INTERNAL: &str = "internal_nets";

#[derive(Debug, thiserror::Error)]
pub enum HostRulesError {
    #[error("no group named `{0}` (groups: {1})")]
    NoGroup(String, String),
}

struct Out {
    text: String,
    sets: Vec<String>,
}

impl Out {
    fn line(&mut self, m: &Match, tail: &str, comment: &str) {
        let ms = nft::matches(m);
        let sp = if ms.is_empty() { "" } else { " " };
        let _ = writeln!(self.text, "\t\t{ms}{sp}{tail} comment \"{comment}\"");
        if let Some(AddrMatch::Set(s)) = &m.saddr {
            self.use_set(s);
        }
        if let Some(AddrMatch::Set(s)) = &m.daddr {
            self.use_set(s);
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
        for p in &svc.protos {
            let mut m = base.clone();
            m.l4 = match p {
                Proto::Tcp => Some(L4::Tcp),
                Proto::Udp => Some(L4::Udp),
                Proto::Icmp => Some(L4::Icmp),
                Proto::Any => None,
            };
            m.dport = svc.ports.clone();
            let mut ms = nft::matches(&m);
            if let Some(src) = negate_internal {
                let dir = if src { "saddr" } else { "daddr" };
                let e = format!("ip {dir} != @{INTERNAL}");
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
            if let Some(AddrMatch::Set(s)) = &m.saddr {
                self.use_set(s);
            }
            if let Some(AddrMatch::Set(s)) = &m.daddr {
                self.use_set(s);
            }
        }
    }
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

    let mut o = Out {
        text: String::new(),
        sets: Vec::new(),
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
    let _ = writeln!(
        o.text,
        "\t\tmeta l4proto {{ icmp, ipv6-icmp }} counter accept comment \"builtin:icmp\""
    );
    let _ = writeln!(
        o.text,
        "\t\tudp sport 67 udp dport 68 counter accept comment \"builtin:dhcp-client\""
    );
    let admin = if m.management.sources.is_empty() {
        vec![AddrMatch::Nets(vec![mg.subnet])]
    } else {
        m.management
            .sources
            .iter()
            .map(|s| AddrMatch::Set(s.clone()))
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
        let (base, neg) = match &r.from {
            Endpoint::Segment(s) => (
                Match {
                    saddr: Some(AddrMatch::Nets(vec![m.segment(s).unwrap().subnet])),
                    ..Match::default()
                },
                None,
            ),
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
        o.service(&base, &r.service, neg, &comment);
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
    for r in m.rules.iter().filter(|r| covers(&r.from)) {
        let comment = format!("rule:{}", r.name);
        let (base, neg) = match &r.to {
            Endpoint::Segment(s) => (
                Match {
                    daddr: Some(AddrMatch::Nets(vec![m.segment(s).unwrap().subnet])),
                    ..Match::default()
                },
                None,
            ),
            Endpoint::Group(x) => (
                Match {
                    daddr: Some(AddrMatch::Set(x.clone())),
                    ..Match::default()
                },
                None,
            ),
            Endpoint::Gateway => (
                Match {
                    daddr: Some(AddrMatch::Nets(
                        m.segments
                            .iter()
                            .map(|s| ipnet::Ipv4Net::new(s.gateway, 32).unwrap())
                            .collect(),
                    )),
                    ..Match::default()
                },
                None,
            ),
            Endpoint::Internet => (Match::default(), Some(false)),
            Endpoint::Any => (Match::default(), None),
        };
        o.service(&base, &r.service, neg, &comment);
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
    for (name, els, timeout) in sets {
        let _ = writeln!(out, "\tset {name} {{");
        let _ = writeln!(out, "\t\ttype ipv4_addr");
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
            let list: Vec<String> = els.iter().map(|r| r.to_string()).collect();
            let _ = writeln!(out, "\t\telements = {{ {} }}", list.join(", "));
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
