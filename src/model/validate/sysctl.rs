//! [sysctl]: kernel settings of the gateway, and the extra keys an operator sets.

use super::*;

pub(super) fn check(v: &mut V, s: &config::Sysctl) -> Sysctl {
    let rp_filter = match s.rp_filter {
        None => 1,
        Some(n) if (0..=2).contains(&n) => n as u8,
        Some(n) => {
            v.err(
                "sysctl.rp_filter",
                format!("rp_filter {n} must be 0 (off), 1 (strict) or 2 (loose)"),
            );
            1
        }
    };
    let mut extra = BTreeMap::new();
    for (k, val) in s.extra.iter().flatten() {
        let ok = k.split('.').count() >= 2
            && k.split('.').all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-/".contains(c))
            });
        let managed = [
            ("net.ipv4.ip_forward", "forwarding"),
            ("net.ipv4.conf.all.rp_filter", "rp_filter"),
            ("net.ipv4.conf.default.rp_filter", "rp_filter"),
            ("net.ipv4.conf.all.accept_redirects", "accept_redirects"),
            ("net.ipv4.conf.default.accept_redirects", "accept_redirects"),
            ("net.ipv6.conf.all.accept_redirects", "accept_redirects"),
            ("net.ipv6.conf.default.accept_redirects", "accept_redirects"),
            ("net.ipv4.conf.all.send_redirects", "send_redirects"),
            ("net.ipv4.conf.default.send_redirects", "send_redirects"),
            (
                "net.ipv4.conf.all.accept_source_route",
                "accept_source_route",
            ),
            (
                "net.ipv4.conf.default.accept_source_route",
                "accept_source_route",
            ),
            ("net.ipv4.tcp_syncookies", "syncookies"),
            ("net.ipv4.conf.all.log_martians", "log_martians"),
            ("net.ipv4.conf.default.log_martians", "log_martians"),
            (
                "net.ipv4.icmp_echo_ignore_broadcasts",
                "ignore_broadcast_ping",
            ),
        ];
        if let Some((_, key)) = managed.iter().find(|(m, _)| m == k) {
            v.err(
                format!("sysctl.extra.{k}"),
                format!("`{k}` is set by sysctl.{key}; set that key instead"),
            );
            continue;
        }
        if !ok {
            v.err(
                format!("sysctl.extra.{k}"),
                format!("`{k}` is not a sysctl key like net.ipv4.tcp_timestamps"),
            );
        } else if val.trim().is_empty() || val.contains('\n') {
            v.err(
                format!("sysctl.extra.{k}"),
                "value must be one non-empty line",
            );
        } else {
            extra.insert(k.clone(), val.clone());
        }
    }
    let sysctl = Sysctl {
        forwarding: s.forwarding.unwrap_or(true),
        rp_filter,
        accept_redirects: s.accept_redirects.unwrap_or(false),
        send_redirects: s.send_redirects.unwrap_or(false),
        accept_source_route: s.accept_source_route.unwrap_or(false),
        syncookies: s.syncookies.unwrap_or(true),
        log_martians: s.log_martians.unwrap_or(true),
        ignore_broadcast_ping: s.ignore_broadcast_ping.unwrap_or(true),
        extra,
    };
    if !sysctl.forwarding {
        v.warn(
            "sysctl.forwarding",
            "forwarding is off: no segment can reach another or the internet",
        );
    }
    sysctl
}
