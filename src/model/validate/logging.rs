//! [logging]: the daemon's log level, NFLOG group, drop-log rate, spool and syslog targets.

use super::*;

pub(super) fn check(v: &mut V, l: &config::Logging) -> Logging {
    let level = l.level.clone().unwrap_or_else(|| "info".into());
    if !["trace", "debug", "info", "warn", "error"].contains(&level.as_str()) {
        v.err(
            "logging.level",
            format!("unknown level `{level}`, expected trace, debug, info, warn or error"),
        );
    }
    let nflog_group = match l.nflog_group {
        None => 1,
        Some(g) if (0..=65535).contains(&g) => g as u16,
        Some(g) => {
            v.err(
                "logging.nflog_group",
                format!("NFLOG group {g} is out of range 0-65535"),
            );
            1
        }
    };
    let drop_log_rate = match l.drop_log_rate.as_deref() {
        None => Rate {
            count: 10,
            per: "second",
        },
        Some(s) => match parse_rate(s) {
            Ok(r) => r,
            Err(e) => {
                v.err("logging.drop_log_rate", e);
                Rate {
                    count: 10,
                    per: "second",
                }
            }
        },
    };
    let drop_log_burst = match l.drop_log_burst {
        None => 20,
        Some(b) if (1..=10000).contains(&b) => b as u32,
        Some(b) => {
            v.err(
                "logging.drop_log_burst",
                format!("burst {b} is out of range 1-10000"),
            );
            20
        }
    };
    let spool_limit = match l.spool_limit {
        None => 64 << 20,
        Some(b) if b >= 65536 => b as u64,
        Some(b) => {
            v.err(
                "logging.spool_limit",
                format!("spool limit {b} bytes is below the minimum of 65536"),
            );
            64 << 20
        }
    };
    let mut targets = Vec::new();
    for (i, t) in l.targets.iter().enumerate() {
        let p = format!("logging.targets[{i}]");
        let host = match config::parse_ipv4(&t.host) {
            Ok(h) => Some(h),
            Err(_) => {
                v.err(format!("{p}.host"), format!("`{}` must be an IPv4 address: the gateway does not depend on DNS to ship its logs", t.host));
                None
            }
        };
        let transport = match t.transport.as_deref() {
            None | Some("udp") => Transport::Udp,
            Some("tcp") => Transport::Tcp,
            Some("tls") => Transport::Tls,
            Some(o) => {
                v.err(
                    format!("{p}.transport"),
                    format!("unknown transport `{o}`, expected udp, tcp or tls"),
                );
                Transport::Udp
            }
        };
        let format = match t.format.as_deref() {
            None | Some("rfc5424") => LogFormat::Rfc5424,
            Some("rfc3164") => LogFormat::Rfc3164,
            Some(o) => {
                v.err(
                    format!("{p}.format"),
                    format!("unknown format `{o}`, expected rfc5424 or rfc3164"),
                );
                LogFormat::Rfc5424
            }
        };
        let port = match t.port {
            None => {
                if transport == Transport::Tls {
                    6514
                } else {
                    514
                }
            }
            Some(n) => PortRange::check_number(n).unwrap_or_else(|e| {
                v.err(format!("{p}.port"), e);
                514
            }),
        };
        if transport == Transport::Tls && t.ca_file.is_none() {
            v.err(
                format!("{p}.ca_file"),
                "a tls target needs ca_file to verify the receiver",
            );
        }
        if transport != Transport::Tls
            && (t.ca_file.is_some() || t.cert_file.is_some() || t.key_file.is_some())
        {
            v.err(
                p.clone(),
                "ca_file, cert_file and key_file apply only to transport = \"tls\"",
            );
        }
        if t.cert_file.is_some() != t.key_file.is_some() {
            v.err(
                p.clone(),
                "a client certificate needs both cert_file and key_file",
            );
        }
        let name = t.name.clone().unwrap_or_else(|| format!("target{i}"));
        if name.is_empty()
            || name.len() > 32
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            v.err(
                format!("{p}.name"),
                format!("target name `{name}` must be 1-32 characters of a-z, A-Z, 0-9, - _ ."),
            );
        }
        if let Some(host) = host {
            targets.push(LogTarget {
                name,
                host,
                port,
                transport,
                format,
                ca_file: t.ca_file.as_ref().map(PathBuf::from),
                cert_file: t.cert_file.as_ref().map(PathBuf::from),
                key_file: t.key_file.as_ref().map(PathBuf::from),
            });
        }
    }
    Logging {
        level,
        json: l.json.unwrap_or(false),
        nflog_group,
        drop_log_rate,
        drop_log_burst,
        spool_limit,
        targets,
    }
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    let bad = || format!("`{s}` is not a rate like \"10/second\" (second, minute or hour)");
    let (n, per) = s.split_once('/').ok_or_else(bad)?;
    let count: u32 = n.trim().parse().map_err(|_| bad())?;
    let per = match per.trim() {
        "second" | "s" => "second",
        "minute" | "m" => "minute",
        "hour" | "h" => "hour",
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err("a rate of 0 would log nothing; remove logging instead".into());
    }
    Ok(Rate { count, per })
}
