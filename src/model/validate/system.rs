//! [system]: hostname, firewall backend, state directory, NTP servers. `gateway_egress`
//! names an egress profile and is checked with them (egress.rs).

use super::*;

pub(super) fn check(v: &mut V, sys: &config::System) -> (String, Backend, PathBuf) {
    let hostname = sys.hostname.clone().unwrap_or_else(|| "bulkhead".into());
    if !hostname_ok(&hostname) {
        v.err(
            "system.hostname",
            format!("`{hostname}` is not a valid hostname"),
        );
    }
    let backend = match sys.backend.as_deref() {
        None | Some("nftables") => Backend::Nftables,
        Some("iptables") => Backend::Iptables,
        Some(o) => {
            v.err(
                "system.backend",
                format!("unknown firewall backend `{o}`, expected nftables or iptables"),
            );
            Backend::Nftables
        }
    };
    let state_dir = PathBuf::from(sys.state_dir.as_deref().unwrap_or("/var/lib/bulkhead"));
    if !state_dir.is_absolute() {
        v.err("system.state_dir", "state_dir must be an absolute path");
    }
    (hostname, backend, state_dir)
}

/// Most NTP servers `[system] ntp` may list (chrony uses a handful; more is a mistake).
pub const NTP_MAX: usize = 8;

/// `[system] ntp = ["192.0.2.123", "ntp.example.net"]`: IPv4 addresses or host names, no
/// duplicates, at most [`NTP_MAX`].
pub(super) fn check_ntp(v: &mut V, sys: &config::System) -> Vec<NtpServer> {
    let mut out: Vec<NtpServer> = Vec::new();
    let list = sys.ntp.as_deref().unwrap_or_default();
    if list.len() > NTP_MAX {
        v.err(
            "system.ntp",
            format!("{} NTP servers; at most {NTP_MAX}", list.len()),
        );
    }
    for (i, s) in list.iter().enumerate() {
        let p = format!("system.ntp[{i}]");
        let t = s.trim();
        let srv = if let Ok(a) = t.parse::<Ipv4Addr>() {
            if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
                v.err(&p, format!("`{t}` cannot be an NTP server"));
                continue;
            }
            NtpServer::Addr(a)
        } else if t.chars().all(|c| c.is_ascii_digit() || c == '.') {
            v.err(&p, format!("`{t}` is not an IPv4 address"));
            continue;
        } else if hostname_ok(t) {
            NtpServer::Name(t.to_ascii_lowercase())
        } else {
            v.err(
                &p,
                format!("`{t}` is neither an IPv4 address nor a host name"),
            );
            continue;
        };
        if out.contains(&srv) {
            v.err(&p, format!("`{t}` is listed twice"));
            continue;
        }
        out.push(srv);
    }
    out
}
