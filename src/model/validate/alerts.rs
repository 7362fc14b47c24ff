//! [alerts]: drop bursts, port scans, sensitive ports, quarantine.

use super::*;

pub(super) fn check(v: &mut V, a: &config::Alerts, groups: &[Group]) -> Alerts {
    let drop_burst = a.drop_burst.as_ref().and_then(|d| {
        let w = v.duration("alerts.drop_burst.window", &d.window);
        if d.count < 1 {
            v.err("alerts.drop_burst.count", "count must be at least 1");
            return None;
        }
        w.map(|w| (d.count.min(u32::MAX as i64) as u32, w))
    });
    let port_scan = a.port_scan.as_ref().and_then(|s| {
        let w = v.duration("alerts.port_scan.window", &s.window);
        let pos = |v: &mut V, path: &str, x: Option<i64>| match x {
            Some(n) if n >= 2 => Some(n as u32),
            Some(n) => {
                v.err(path, format!("{n} is too small: a scan means at least 2 distinct targets"));
                None
            }
            None => None,
        };
        let ports = pos(v, "alerts.port_scan.ports", s.ports);
        let hosts = pos(v, "alerts.port_scan.hosts", s.hosts);
        if s.ports.is_none() && s.hosts.is_none() {
            v.err("alerts.port_scan", "set `ports` (distinct destination ports) and/or `hosts` (distinct destination hosts)");
        }
        w.map(|window| PortScan { ports, hosts, window })
    });
    let mut sensitive_ports = Vec::new();
    if let Some(sp) = &a.sensitive_ports {
        for (i, p) in sp.ports.iter().enumerate() {
            if let Some(r) = v.port(&format!("alerts.sensitive_ports.ports[{i}]"), p) {
                sensitive_ports.push(r);
            }
        }
    }
    let quarantine = a.quarantine.as_ref().and_then(|q| {
        if !q.enabled.unwrap_or(true) {
            return None;
        }
        match &q.timeout {
            Some(t) => v.duration("alerts.quarantine.timeout", t),
            None => Some(600),
        }
    });
    let (never_quarantine, never_quarantine6) =
        never_quarantine(v, a.never_quarantine.as_deref(), groups);
    Alerts {
        drop_burst,
        port_scan,
        sensitive_ports: merge_ports(sensitive_ports),
        quarantine,
        never_quarantine,
        never_quarantine6,
    }
}

/// `alerts.never_quarantine`: each entry a host group of `[groups]` (its members) or an IPv4
/// or IPv6 address, CIDR block or range.
fn never_quarantine(
    v: &mut V,
    entries: Option<&[String]>,
    groups: &[Group],
) -> (Vec<AddrRange>, Vec<AddrRange6>) {
    let mut out = Vec::new();
    let mut out6 = Vec::new();
    for (i, e) in entries.unwrap_or_default().iter().enumerate() {
        if let Some(g) = groups.iter().find(|g| g.name == *e) {
            out.extend(g.members.iter().copied());
            out6.extend(g.members6.iter().copied());
            continue;
        }
        if e.contains(':') {
            match AddrRange6::parse(e) {
                Ok(r) => out6.push(r),
                Err(err) => v.err(format!("alerts.never_quarantine[{i}]"), err),
            }
            continue;
        }
        match AddrRange::parse(e) {
            Ok(r) => out.push(r),
            // a name-like entry is a group that does not exist; else a broken address
            Err(_) if !e.is_empty() && !e.starts_with(|c: char| c.is_ascii_digit()) => v.err(
                format!("alerts.never_quarantine[{i}]"),
                format!(
                    "`{e}` is not a group defined in [groups] (nor an IPv4 address or CIDR block)"
                ),
            ),
            Err(err) => v.err(format!("alerts.never_quarantine[{i}]"), err),
        }
    }
    (addr::merge_ranges(out), addr::merge_ranges6(out6))
}
