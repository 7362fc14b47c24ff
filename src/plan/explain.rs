//! `explain`: which rule decides a flow, evaluated on the same neutral ruleset the renderers use.

use std::net::IpAddr;

use serde::Serialize;

use super::ruleset::{AddrMatch, Chain, Ct, FwRule, L4, Ruleset, Verdict};
use crate::model::{Model, Proto, Segment, Uplink6Addressing, UplinkAddressing};

/// A new connection attempt to classify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flow {
    /// Source and destination: both IPv4 or both IPv6.
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Proto,
    pub port: Option<u16>,
}

/// The packet as the kernel sees it at the filter hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Packet {
    pub chain: &'static str,
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: Option<L4>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub dnat: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub packet: Packet,
    pub verdict: Verdict,
    /// The deciding rule (None: the chain policy decided).
    pub rule: Option<FwRule>,
    /// Rules passed through on the way (jumps that returned).
    pub via: Vec<String>,
    /// The port forward that rewrote the destination, if any.
    pub forward: Option<String>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.verdict == Verdict::Accept
    }

    /// A sentence for the operator: verdict, the rule's config name and its place in the file.
    pub fn describe(&self) -> String {
        let v = if self.allowed() { "ACCEPT" } else { "DROP" };
        let why = match &self.rule {
            Some(r) => {
                let place = r
                    .origin
                    .loc
                    .as_ref()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default();
                match r.origin.kind {
                    "builtin" if r.origin.name == "default-drop" => {
                        format!("default drop of chain {}", self.packet.chain)
                    }
                    "builtin" => format!("built-in rule {}", r.origin.name),
                    kind => format!("{kind} {}{place}", r.origin.name),
                }
            }
            None => format!("policy of chain {}", self.packet.chain),
        };
        let mut s = format!("{v} by {why} [chain {}", self.packet.chain);
        if let Some(i) = &self.packet.iif {
            s.push_str(&format!(", in {i}"));
        }
        if let Some(o) = &self.packet.oif {
            s.push_str(&format!(", out {o}"));
        }
        s.push(']');
        if let Some(f) = &self.forward {
            s.push_str(&format!(" after port forward {f} to {}", self.packet.dst));
            if let Some(p) = self.packet.dport {
                s.push_str(&format!(":{p}"));
            }
        }
        s
    }
}

fn gateway_addrs(m: &Model) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = m.segments.iter().map(|s| s.gateway.into()).collect();
    if let UplinkAddressing::Static { address, .. } = &m.uplink.addressing {
        v.push(address.addr().into());
    }
    v.extend(
        m.segments6()
            .filter_map(|s| s.gateway6(None))
            .map(IpAddr::from),
    );
    if let Uplink6Addressing::Static { address, .. } = &m.uplink.address6 {
        v.push(address.addr().into());
    }
    v
}

/// The segment holding `a` (IPv6: a static subnet6).
fn segment_of(m: &Model, a: IpAddr) -> Option<&Segment> {
    match a {
        IpAddr::V4(a) => m.segment_of(a),
        IpAddr::V6(a) => m.segment_of6(a),
    }
}

/// The interface a packet from `a` arrives on, or None when `a` is the gateway itself.
fn ingress(m: &Model, a: IpAddr) -> Option<String> {
    if gateway_addrs(m).contains(&a) {
        return None;
    }
    Some(
        segment_of(m, a)
            .map(|s| s.ifname.clone())
            .unwrap_or_else(|| m.uplink.interface.clone()),
    )
}

fn egress(m: &Model, a: IpAddr) -> String {
    segment_of(m, a)
        .map(|s| s.ifname.clone())
        .unwrap_or_else(|| m.uplink.interface.clone())
}

/// Where the kernel would send the flow, after destination NAT.
pub fn classify(m: &Model, rs: &Ruleset, f: &Flow) -> (Packet, Option<String>) {
    let l4 = match f.proto {
        Proto::Tcp => Some(L4::Tcp),
        Proto::Udp => Some(L4::Udp),
        Proto::Icmp if f.dst.is_ipv6() => Some(L4::Icmpv6),
        Proto::Icmp => Some(L4::Icmp),
        Proto::Any => None,
    };
    let iif = ingress(m, f.src);
    let mut dst = f.dst;
    let mut dport = f.port;
    let mut forward = None;
    let gws = gateway_addrs(m);
    // Port forwards: packets from the uplink to the gateway's uplink side.
    // From the uplink, any address outside the segments is taken as the gateway's own uplink
    // address (with a DHCP uplink it is not known in advance).
    // IPv6 is routed, never forwarded by port: only a static address6 is known to be the
    // gateway's own uplink side.
    let to_uplink = match (f.dst, &m.uplink.addressing, &m.uplink.address6) {
        (IpAddr::V6(d), _, Uplink6Addressing::Static { address, .. }) => address.addr() == d,
        (IpAddr::V6(_), _, _) => false,
        (IpAddr::V4(d), UplinkAddressing::Static { address, .. }, _) => address.addr() == d,
        (IpAddr::V4(d), UplinkAddressing::Dhcp, _) => {
            m.segment_of(d).is_none() && !gws.contains(&f.dst)
        }
    };
    if iif.as_deref() == Some(m.uplink.interface.as_str()) && to_uplink {
        for d in &rs.dnat {
            let sets_ok = d.saddr.as_ref().is_none_or(|s| addr_in(rs, s, f.src));
            if Some(d.proto) == l4
                && dport.is_some_and(|p| d.port.contains(p))
                && sets_ok
                && f.dst.is_ipv4()
            {
                dst = d.to.into();
                if let Some(tp) = d.to_port {
                    dport = Some(tp);
                }
                forward = Some(d.origin.name.clone());
                break;
            }
        }
    }
    let from_uplink = iif.as_deref() == Some(m.uplink.interface.as_str());
    let (chain, oif) = if iif.is_none() {
        ("output", Some(egress(m, dst)))
    } else if forward.is_none() && (gws.contains(&dst) || (from_uplink && to_uplink)) {
        // Addressed to the gateway: one of its segment addresses, or its uplink side.
        ("input", None)
    } else {
        ("forward", Some(egress(m, dst)))
    };
    (
        Packet {
            chain,
            iif,
            oif,
            src: f.src,
            dst,
            l4,
            sport: None,
            dport,
            dnat: forward.is_some(),
        },
        forward,
    )
}

fn addr_in(rs: &Ruleset, m: &AddrMatch, a: IpAddr) -> bool {
    match (m, a) {
        (AddrMatch::Set(s), IpAddr::V4(a)) => rs
            .set(s)
            .is_some_and(|set| set.elements.iter().any(|r| r.contains(a))),
        (AddrMatch::Nets(ns), IpAddr::V4(a)) => ns.iter().any(|n| n.contains(&a)),
        (AddrMatch::Set6(s), IpAddr::V6(a)) => rs
            .set(s)
            .is_some_and(|set| set.elements6.iter().any(|r| r.contains(a))),
        (AddrMatch::Nets6(ns), IpAddr::V6(a)) => ns.iter().any(|n| n.contains(&a)),
        // `ip saddr` never matches an IPv6 packet, nor `ip6 saddr` an IPv4 one.
        _ => false,
    }
}

/// Does a neutral rule match the packet (a new connection)?
pub fn rule_matches(rs: &Ruleset, r: &FwRule, p: &Packet) -> bool {
    let m = &r.m;
    if m.ipv6 && !p.src.is_ipv6() {
        return false;
    }
    // Flows are new connections, never neighbour discovery or MLD (sent with hop limit 255
    // or 1 on the link); an ICMP flow is an echo request.
    if m.hoplimit.is_some() {
        return false;
    }
    if !m.icmp_types.is_empty() {
        let echo = match p.l4 {
            Some(L4::Icmp) => 8,
            Some(L4::Icmpv6) => 128,
            _ => return false,
        };
        if !m.icmp_types.contains(&echo) {
            return false;
        }
    }
    if m.iif.as_ref().is_some_and(|i| p.iif.as_ref() != Some(i)) {
        return false;
    }
    if m.oif.as_ref().is_some_and(|o| p.oif.as_ref() != Some(o)) {
        return false;
    }
    if m.saddr.as_ref().is_some_and(|s| !addr_in(rs, s, p.src)) {
        return false;
    }
    if m.daddr.as_ref().is_some_and(|d| !addr_in(rs, d, p.dst)) {
        return false;
    }
    if m.daddr_local && p.chain != "input" {
        return false;
    }
    if let Some(l) = m.l4
        && p.l4 != Some(l)
    {
        return false;
    }
    if !m.sport.is_empty()
        && !p
            .sport
            .is_some_and(|x| m.sport.iter().any(|r| r.contains(x)))
    {
        return false;
    }
    if !m.dport.is_empty()
        && !p
            .dport
            .is_some_and(|x| m.dport.iter().any(|r| r.contains(x)))
    {
        return false;
    }
    match m.ct {
        Some(Ct::EstablishedRelated) | Some(Ct::Invalid) => false,
        Some(Ct::Dnat) => p.dnat,
        None => true,
    }
}

fn run_chain(
    rs: &Ruleset,
    c: &Chain,
    p: &Packet,
    via: &mut Vec<String>,
) -> Option<(Verdict, Option<FwRule>)> {
    for r in &c.rules {
        if !rule_matches(rs, r, p) {
            continue;
        }
        match &r.verdict {
            Verdict::Jump(name) => {
                via.push(r.origin.comment());
                if let Some(sub) = rs.chain(name)
                    && let Some(v) = run_chain(rs, sub, p, via)
                {
                    return Some(v);
                }
            }
            Verdict::Return => return None,
            v => return Some((v.clone(), Some(r.clone()))),
        }
    }
    None
}

/// Decide a flow: the first matching rule of the chain it traverses, or the chain policy.
pub fn explain(m: &Model, rs: &Ruleset, f: &Flow) -> Decision {
    let (packet, forward) = classify(m, rs, f);
    let chain = rs
        .chain(packet.chain)
        .expect("ruleset has the filter chains");
    let mut via = Vec::new();
    let (verdict, rule) =
        run_chain(rs, chain, &packet, &mut via).unwrap_or((chain.policy.clone(), None));
    Decision {
        packet,
        verdict,
        rule,
        via,
        forward,
    }
}
