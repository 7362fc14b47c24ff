//! The IPv6 side of [segments.NAME]: `subnet6` (a static /64 or `"delegated"` with
//! `prefix_id`), `gateway6`, `[segments.NAME.dhcp6]` and the IPv6 servers of
//! `[segments.NAME.dhcp] dns`.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use super::*;

/// What a segment's IPv6 keys need from the rest of the config.
pub(super) struct Ctx<'a> {
    pub uplink: &'a Uplink,
    /// `[uplink] prefix_delegation` as written (an out-of-range value is reported there).
    pub pd_written: Option<i64>,
}

pub(super) fn check(
    v: &mut V,
    p: &str,
    s: &config::Segment,
    ifname: &str,
    dhcp: Option<&DhcpPool>,
    mtu: Option<u32>,
    cx: &Ctx,
) -> Option<Segment6> {
    let dns_written: Vec<(usize, &String)> = s
        .dhcp
        .iter()
        .flat_map(|d| d.dns.iter().flatten())
        .enumerate()
        .filter(|(_, d)| d.contains(':'))
        .collect();
    let Some(sub) = s.subnet6.as_deref() else {
        for (key, set) in [
            ("gateway6", s.gateway6.is_some()),
            ("prefix_id", s.prefix_id.is_some()),
            ("dhcp6", s.dhcp6.is_some()),
        ] {
            if set {
                v.err(
                    format!("{p}.{key}"),
                    format!("`{key}` needs `subnet6` (this segment is IPv4-only without it)"),
                );
            }
        }
        for (i, d) in dns_written {
            v.err(
                format!("{p}.dhcp.dns[{i}]"),
                format!("IPv6 DNS server {d} on a segment without `subnet6`"),
            );
        }
        return None;
    };
    let mut ok = true;
    let prefix = if sub.trim() == "delegated" {
        delegated(v, p, s, cx)
    } else {
        if s.prefix_id.is_some() {
            v.err(
                format!("{p}.prefix_id"),
                "`prefix_id` numbers a delegated /64; it needs subnet6 = \"delegated\"",
            );
            ok = false;
        }
        static_prefix(v, p, sub).map(Prefix6::Static)
    };
    let gateway_iid = match (&s.gateway6, prefix) {
        (None, _) => Some(1),
        (Some(g), pf) => gateway6(v, p, g, pf),
    };
    let (mode, pool) = dhcp6(v, p, s.dhcp6.as_ref(), prefix, gateway_iid);
    let mut dns6 = Vec::new();
    for (i, d) in dns_written {
        match d.trim().parse::<Ipv6Addr>() {
            Ok(a) if a.is_unspecified() || a.is_loopback() || a.is_multicast() => v.err(
                format!("{p}.dhcp.dns[{i}]"),
                format!("{a} cannot be a DNS server"),
            ),
            Ok(a) => dns6.push(a),
            Err(_) => v.err(
                format!("{p}.dhcp.dns[{i}]"),
                format!("`{d}` is not an IPv6 address"),
            ),
        }
    }
    let (Some(prefix), Some(gateway_iid), Some(mode), true) = (prefix, gateway_iid, mode, ok)
    else {
        return None;
    };
    Some(Segment6 {
        segment: p.strip_prefix("segments.").unwrap_or(p).to_string(),
        ifname: ifname.to_string(),
        prefix,
        gateway_iid,
        mode,
        dns6,
        domain: s.dhcp.as_ref().and_then(|d| d.domain.clone()),
        pool,
        lease_time: dhcp.map_or(3600, |d| d.lease_time),
        mtu,
    })
}

fn static_prefix(v: &mut V, p: &str, sub: &str) -> Option<Ipv6Net> {
    let path = format!("{p}.subnet6");
    let Ok(net) = sub.trim().parse::<Ipv6Net>() else {
        v.err(
            path,
            format!("`{sub}` is neither an IPv6 prefix like fd00:10::/64 nor \"delegated\""),
        );
        return None;
    };
    if let Some(why) = addr::v6_special(net.network()) {
        v.err(
            path,
            format!(
                "{} is {why}; subnet6 must be a global or ULA prefix",
                net.trunc()
            ),
        );
        None
    } else if net.prefix_len() != 64 {
        v.err(
            path,
            format!(
                "subnet6 {sub} is a /{}; a segment's IPv6 subnet must be a /64 (SLAAC needs it)",
                net.prefix_len()
            ),
        );
        None
    } else if net.addr() != net.network() {
        v.err(
            path,
            format!("`{sub}` has host bits set; did you mean `{}`?", net.trunc()),
        );
        None
    } else {
        Some(net)
    }
}

fn delegated(v: &mut V, p: &str, s: &config::Segment, cx: &Ctx) -> Option<Prefix6> {
    let Some(id) = s.prefix_id else {
        v.err(
            format!("{p}.subnet6"),
            "subnet6 = \"delegated\" needs `prefix_id = N` (which /64 of the delegated prefix)",
        );
        return None;
    };
    if cx.pd_written.is_none() {
        v.err(
            format!("{p}.subnet6"),
            "subnet6 = \"delegated\" needs `prefix_delegation = PLEN` in [uplink] to ask the upstream for a prefix",
        );
        return None;
    }
    let plen = cx.uplink.prefix_delegation?;
    let count: u64 = 1u64 << (64 - u32::from(plen));
    if id < 0 || id as u64 >= count {
        v.err(
            format!("{p}.prefix_id"),
            format!(
                "prefix_id {id} does not fit in a delegated /{plen}: it holds {count} /64s, ids 0-{}",
                count - 1
            ),
        );
        return None;
    }
    Some(Prefix6::Delegated {
        prefix_id: id as u32,
    })
}

/// The gateway's interface identifier from `gateway6`.
fn gateway6(v: &mut V, p: &str, g: &str, prefix: Option<Prefix6>) -> Option<u64> {
    let path = format!("{p}.gateway6");
    let Ok(a) = g.trim().parse::<Ipv6Addr>() else {
        v.err(path, format!("`{g}` is not an IPv6 address"));
        return None;
    };
    match prefix {
        None => None,
        Some(Prefix6::Static(net)) => {
            if !net.contains(&a) {
                v.err(
                    path,
                    format!("gateway6 {a} is outside the segment's subnet6 {net}"),
                );
                None
            } else if a == net.network() {
                v.err(
                    path,
                    format!("gateway6 {a} is the subnet-router anycast address of {net}"),
                );
                None
            } else {
                Some(addr::iid_of(a))
            }
        }
        Some(Prefix6::Delegated { .. }) => {
            if u128::from(a) >> 64 != 0 || addr::iid_of(a) == 0 {
                v.err(
                    path,
                    format!("with subnet6 = \"delegated\", gateway6 is an interface id like ::1 (the prefix is not known in advance), not {a}"),
                );
                None
            } else {
                Some(addr::iid_of(a))
            }
        }
    }
}

fn dhcp6(
    v: &mut V,
    p: &str,
    d: Option<&config::Dhcp6>,
    prefix: Option<Prefix6>,
    gateway_iid: Option<u64>,
) -> (Option<Dhcp6Mode>, Option<Pool6>) {
    let Some(d) = d else {
        return (Some(Dhcp6Mode::Slaac), None);
    };
    let mode = match d.mode.as_deref().map(str::trim) {
        None | Some("slaac") => Some(Dhcp6Mode::Slaac),
        Some("stateless") => Some(Dhcp6Mode::Stateless),
        Some("stateful") => Some(Dhcp6Mode::Stateful),
        Some(m) => {
            v.err(
                format!("{p}.dhcp6.mode"),
                format!("unknown mode `{m}`, expected \"slaac\", \"stateless\" or \"stateful\""),
            );
            None
        }
    };
    let rp = format!("{p}.dhcp6.range6");
    match (mode, &d.range6) {
        (Some(Dhcp6Mode::Stateful), None) => (mode, Some(DEFAULT_POOL6)),
        (Some(Dhcp6Mode::Stateful), Some(r)) => {
            let pool = range6(v, &rp, r, prefix, gateway_iid);
            (pool.map(|_| Dhcp6Mode::Stateful), pool)
        }
        (Some(m), Some(_)) => {
            v.err(
                rp,
                format!(
                    "range6 is an address pool for mode = \"stateful\"; mode \"{}\" hands out no addresses",
                    m.name()
                ),
            );
            (None, None)
        }
        (m, _) => (m, None),
    }
}

fn range6(
    v: &mut V,
    rp: &str,
    r: &[String],
    prefix: Option<Prefix6>,
    gateway_iid: Option<u64>,
) -> Option<Pool6> {
    if r.len() != 2 {
        v.err(
            rp,
            format!(
                "range6 is [\"START\", \"END\"], two addresses; got {}",
                r.len()
            ),
        );
        return None;
    }
    let mut iids = [0u64; 2];
    for (i, a) in r.iter().enumerate() {
        let ip = format!("{rp}[{i}]");
        let Ok(x) = a.trim().parse::<Ipv6Addr>() else {
            v.err(ip, format!("`{a}` is not an IPv6 address"));
            return None;
        };
        match prefix? {
            Prefix6::Static(net) if !net.contains(&x) => {
                v.err(ip, format!("{x} is outside the segment's subnet6 {net}"));
                return None;
            }
            Prefix6::Delegated { .. } if u128::from(x) >> 64 != 0 => {
                v.err(
                    ip,
                    format!("with subnet6 = \"delegated\", range6 holds interface ids like ::1000, not {x}"),
                );
                return None;
            }
            _ => iids[i] = addr::iid_of(x),
        }
    }
    let [first, last] = iids;
    if first > last {
        v.err(rp, "range6 ends before it starts");
        return None;
    }
    if first == 0 {
        v.err(
            format!("{rp}[0]"),
            "range6 covers the subnet-router anycast address (interface id 0)",
        );
        return None;
    }
    if let Some(g) = gateway_iid
        && (first..=last).contains(&g)
    {
        v.err(rp, "range6 covers the gateway6 address");
        return None;
    }
    Some(Pool6 { first, last })
}

/// Checks across segments: two segments on one /64 (or one prefix_id), a static subnet6 that
/// overlaps the uplink's own IPv6 prefix.
pub(super) fn across(v: &mut V, segments: &[Segment]) {
    for i in 0..segments.len() {
        let Some(b) = &segments[i].ipv6 else { continue };
        for a in segments[..i].iter().filter_map(|s| s.ipv6.as_ref()) {
            match (a.prefix, b.prefix) {
                (Prefix6::Static(x), Prefix6::Static(y)) if x == y => v.err(
                    format!("segments.{}.subnet6", b.segment),
                    format!("subnet6 {y} is already segment `{}`'s", a.segment),
                ),
                (Prefix6::Delegated { prefix_id: x }, Prefix6::Delegated { prefix_id: y })
                    if x == y =>
                {
                    v.err(
                        format!("segments.{}.prefix_id", b.segment),
                        format!("prefix_id {y} is already segment `{}`'s", a.segment),
                    )
                }
                _ => {}
            }
        }
    }
}

/// A static subnet6 that overlaps the uplink's static IPv6 prefix.
pub(super) fn against_uplink(v: &mut V, segments: &[Segment], uplink: &Uplink) {
    let Uplink6Addressing::Static { address, .. } = &uplink.address6 else {
        return;
    };
    let up = address.trunc();
    for s in segments.iter().filter_map(|s| s.ipv6.as_ref()) {
        if let Prefix6::Static(n) = s.prefix
            && (up.contains(&n.network()) || n.contains(&up.network()))
        {
            v.err(
                format!("segments.{}.subnet6", s.segment),
                format!("subnet6 {n} overlaps the uplink's IPv6 prefix {up}"),
            );
        }
    }
}
