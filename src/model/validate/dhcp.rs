//! [segments.NAME.dhcp]: address ranges, lease times, DNS, reservations, options.

use super::*;

/// DHCP options Bulkhead fills in itself; the config may not set them by code.
const MANAGED_OPTIONS: &[(u8, &str)] = &[
    (1, "subnet mask (from segment.subnet)"),
    (3, "router (the segment gateway)"),
    (6, "DNS servers (dhcp.dns)"),
    (15, "domain name (dhcp.domain)"),
    (26, "interface MTU (segment.mtu)"),
    (28, "broadcast address (from segment.subnet)"),
    (50, "requested address"),
    (51, "lease time (dhcp.lease_time)"),
    (53, "message type"),
    (54, "server identifier"),
    (55, "parameter request list"),
    (57, "maximum message size"),
    (58, "renewal time"),
    (59, "rebinding time"),
    (61, "client identifier"),
];

pub(super) fn pool(
    v: &mut V,
    seg_path: &str,
    d: &config::Dhcp,
    net: Ipv4Net,
    gw: Ipv4Addr,
    names: &Names,
) -> Option<DhcpPool> {
    let p = format!("{seg_path}.dhcp");
    let mut ranges: Vec<AddrRange> = Vec::new();
    for (i, r) in d.ranges.iter().enumerate() {
        let rp = format!("{p}.ranges[{i}]");
        let r = match AddrRange::parse(r) {
            Ok(r) => r,
            Err(e) => {
                v.err(rp, e);
                continue;
            }
        };
        if !r.within(&net) {
            v.err(
                rp,
                format!("range {r} is not inside the segment subnet {net}"),
            );
        } else if r.contains(gw) {
            v.err(rp, format!("range {r} covers the gateway address {gw}"));
        } else if r.contains(net.network()) || r.contains(net.broadcast()) {
            v.err(
                rp,
                format!("range {r} covers the network or broadcast address of {net}"),
            );
        } else if let Some(o) = ranges.iter().find(|o| o.overlaps(&r)) {
            v.err(rp, format!("range {r} overlaps range {o}"));
        } else {
            ranges.push(r);
        }
    }
    if d.ranges.is_empty() && d.reservations.is_empty() {
        v.err(
            format!("{p}.ranges"),
            "DHCP needs at least one range or reservation (or set enabled = false)",
        );
    }
    let lease_time = d
        .lease_time
        .as_ref()
        .map_or(Some(3600), |x| v.duration(&format!("{p}.lease_time"), x));
    let max_lease_time = d.max_lease_time.as_ref().map_or(Some(86400), |x| {
        v.duration(&format!("{p}.max_lease_time"), x)
    });
    if let (Some(l), Some(m)) = (lease_time, max_lease_time) {
        if l > m {
            v.err(
                format!("{p}.lease_time"),
                format!("lease_time ({l}s) is longer than max_lease_time ({m}s)"),
            );
        }
        if m > u32::MAX as u64 {
            v.err(format!("{p}.max_lease_time"), "lease time too long");
        }
    }
    let mut dns = Vec::new();
    for (i, s) in d.dns.iter().flatten().enumerate() {
        // IPv6 servers go to RDNSS/DHCPv6 (checked with the segment's subnet6).
        if s.contains(':') {
            continue;
        }
        match config::parse_ipv4(s) {
            Ok(a) => dns.push(a),
            Err(e) => v.err(format!("{p}.dns[{i}]"), e),
        }
    }
    if let Some(dom) = &d.domain
        && !hostname_ok(dom)
    {
        v.err(
            format!("{p}.domain"),
            format!("`{dom}` is not a valid domain name"),
        );
    }
    let mut reservations: Vec<Reservation> = Vec::new();
    for (i, r) in d.reservations.iter().enumerate() {
        let rp = format!("{p}.reservations[{i}]");
        let mac = parse_mac(&r.mac)
            .map_err(|e| v.err(format!("{rp}.mac"), e))
            .ok();
        let address = match config::parse_ipv4(&r.address) {
            Ok(a) if !net.contains(&a) => {
                v.err(
                    format!("{rp}.address"),
                    format!("{a} is not inside the segment subnet {net}"),
                );
                None
            }
            Ok(a) if a == gw => {
                v.err(
                    format!("{rp}.address"),
                    format!("{a} is the gateway address"),
                );
                None
            }
            Ok(a) if a == net.network() || a == net.broadcast() => {
                v.err(
                    format!("{rp}.address"),
                    format!("{a} is the network or broadcast address"),
                );
                None
            }
            Ok(a) => Some(a),
            Err(e) => {
                v.err(format!("{rp}.address"), e);
                None
            }
        };
        if let Some(h) = &r.hostname
            && !hostname_ok(h)
        {
            v.err(
                format!("{rp}.hostname"),
                format!("`{h}` is not a valid hostname"),
            );
        }
        if let Some(g) = &r.group
            && !names.groups.contains(g)
        {
            v.err(format!("{rp}.group"), format!("no group named `{g}`"));
        }
        let (Some(mac), Some(address)) = (mac, address) else {
            continue;
        };
        if let Some(j) = reservations.iter().position(|o| o.mac == mac) {
            v.err(
                format!("{rp}.mac"),
                format!(
                    "MAC {} is already reserved by reservations[{j}]",
                    addr::fmt_mac(&mac)
                ),
            );
            continue;
        }
        if let Some(j) = reservations.iter().position(|o| o.address == address) {
            v.err(
                format!("{rp}.address"),
                format!("{address} is already reserved by reservations[{j}]"),
            );
            continue;
        }
        reservations.push(Reservation {
            mac,
            address,
            hostname: r.hostname.clone(),
            group: r.group.clone(),
        });
    }
    let mut options = Vec::new();
    for (i, o) in d.options.iter().enumerate() {
        let op = format!("{p}.options[{i}]");
        if let Some(opt) = dhcp_option(v, &op, o) {
            if options.iter().any(|x: &DhcpOption| x.code == opt.code) {
                v.err(
                    format!("{op}.code"),
                    format!("option {} is set twice", opt.code),
                );
            } else {
                options.push(opt);
            }
        }
    }
    Some(DhcpPool {
        ranges,
        lease_time: lease_time.unwrap_or(3600).min(u32::MAX as u64) as u32,
        max_lease_time: max_lease_time.unwrap_or(86400).min(u32::MAX as u64) as u32,
        dns,
        domain: d.domain.clone(),
        reservations,
        options,
        relays: dhcp_relays(v, &p, &d.relays),
    })
}

/// `[segments.NAME.dhcp] relays`: each a relay agent's IPv4 address (its giaddr), once.
fn dhcp_relays(v: &mut V, p: &str, relays: &[String]) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for (i, s) in relays.iter().enumerate() {
        let rp = format!("{p}.relays[{i}]");
        match config::parse_ipv4(s) {
            Ok(a) if a.is_unspecified() || a.is_broadcast() || a.is_multicast() => {
                v.err(rp, format!("{a} cannot be a relay agent address (giaddr)"))
            }
            Ok(a) if out.contains(&a) => v.err(rp, format!("relay {a} is listed twice")),
            Ok(a) => out.push(a),
            Err(e) => v.err(rp, e),
        }
    }
    out
}

fn dhcp_option(v: &mut V, p: &str, o: &config::DhcpOption) -> Option<DhcpOption> {
    if !(1..=254).contains(&o.code) {
        v.err(
            format!("{p}.code"),
            format!("option code {} is out of range 1-254", o.code),
        );
        return None;
    }
    let code = o.code as u8;
    if let Some((_, what)) = MANAGED_OPTIONS.iter().find(|(c, _)| *c == code) {
        v.err(
            format!("{p}.code"),
            format!("option {code} is set by bulkhead itself: {what}"),
        );
        return None;
    }
    let given = [
        o.ips.is_some(),
        o.text.is_some(),
        o.hex.is_some(),
        o.u8.is_some(),
        o.u16.is_some(),
        o.u32.is_some(),
        o.bool.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if given != 1 {
        v.err(
            p.to_string(),
            "give exactly one value: ips, text, hex, u8, u16, u32 or bool",
        );
        return None;
    }
    let int = |v: &mut V, n: i64, max: i64, key: &str| -> Option<i64> {
        if (0..=max).contains(&n) {
            Some(n)
        } else {
            v.err(format!("{p}.{key}"), format!("{n} does not fit in {key}"));
            None
        }
    };
    let (data, shown) = if let Some(ips) = &o.ips {
        let mut data = Vec::new();
        for (i, s) in ips.iter().enumerate() {
            match config::parse_ipv4(s) {
                Ok(a) => data.extend(a.octets()),
                Err(e) => {
                    v.err(format!("{p}.ips[{i}]"), e);
                    return None;
                }
            }
        }
        (data, ips.join(", "))
    } else if let Some(t) = &o.text {
        (t.as_bytes().to_vec(), format!("\"{t}\""))
    } else if let Some(h) = &o.hex {
        let clean: String = h
            .chars()
            .filter(|c| *c != ':' && !c.is_whitespace())
            .collect();
        if !clean.len().is_multiple_of(2) || !clean.chars().all(|c| c.is_ascii_hexdigit()) {
            v.err(
                format!("{p}.hex"),
                format!("`{h}` is not hex bytes like \"0a:0b:0c\""),
            );
            return None;
        }
        let data = (0..clean.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap())
            .collect();
        (data, format!("0x{clean}"))
    } else if let Some(n) = o.u8 {
        (vec![int(v, n, 255, "u8")? as u8], n.to_string())
    } else if let Some(n) = o.u16 {
        (
            (int(v, n, 65535, "u16")? as u16).to_be_bytes().to_vec(),
            n.to_string(),
        )
    } else if let Some(n) = o.u32 {
        (
            (int(v, n, u32::MAX as i64, "u32")? as u32)
                .to_be_bytes()
                .to_vec(),
            n.to_string(),
        )
    } else {
        let b = o.bool.unwrap_or(false);
        (vec![b as u8], b.to_string())
    };
    if data.is_empty() || data.len() > 255 {
        v.err(
            p.to_string(),
            format!("option payload must be 1-255 bytes, got {}", data.len()),
        );
        return None;
    }
    Some(DhcpOption { code, data, shown })
}
