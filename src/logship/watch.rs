//! The event sources that watch the kernel: the NFLOG group (drops, logged accepts, and the
//! alerts they raise) and link changes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::alerts::{Detector, DropSeen, QuarantineVerdict, quarantine_verdict};
use super::nflog::{self, L4, NflogSocket, Record};
use super::{Event, Kind, Severity, emit, hub};
use crate::model::Model;

pub type Quarantine = Arc<dyn Fn(IpAddr) + Send + Sync>;

/// What a prefix and interfaces mean in the running config.
pub struct Resolver {
    /// kernel interface → segment name (`internet` for the uplink)
    segments: HashMap<String, String>,
    rules: Vec<String>,
    forwards: Vec<String>,
}

impl Resolver {
    pub fn new(m: &Model) -> Self {
        let mut segments: HashMap<String, String> = m
            .segments
            .iter()
            .map(|s| (s.ifname.clone(), s.name.clone()))
            .collect();
        segments.insert(m.uplink.interface.clone(), "internet".into());
        Resolver {
            segments,
            rules: m.rules.iter().map(|r| r.name.clone()).collect(),
            forwards: m.forwards.iter().map(|f| f.name.clone()).collect(),
        }
    }

    pub fn segment(&self, ifname: &str) -> Option<&str> {
        self.segments.get(ifname).map(|s| s.as_str())
    }

    /// The config name behind a (possibly truncated) prefix name.
    fn name(&self, kind: &str, name: &str) -> String {
        let list = match kind {
            "rule" => &self.rules,
            "forward" => &self.forwards,
            _ => return name.to_string(),
        };
        if list.iter().any(|n| n == name) {
            return name.to_string();
        }
        list.iter()
            .find(|n| n.starts_with(name))
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }

    /// The event of one NFLOG record, and what the alert detector needs when it is a drop.
    /// `ifname` maps an interface index to its name.
    pub fn event(
        &self,
        r: &Record,
        ifname: impl Fn(u32) -> Option<String>,
    ) -> (Event, Option<DropSeen>) {
        let (chain, rkind, name) = nflog::split_prefix(&r.prefix).unwrap_or(("", "", &r.prefix));
        // rules and forwards with `log = true` log what they accept; everything else that
        // logs (default drops, anti-spoofing) drops
        let accept = matches!(rkind, "rule" | "forward");
        let rule = self.name(rkind, name);
        let in_if = r.indev.and_then(&ifname);
        let out_if = r.outdev.and_then(&ifname);
        let in_seg = in_if
            .as_deref()
            .and_then(|i| self.segment(i))
            .map(str::to_string);
        let out_seg = out_if
            .as_deref()
            .and_then(|i| self.segment(i))
            .map(str::to_string);
        let (kind, sev, action) = if accept {
            (Kind::Accept, Severity::Info, "accept")
        } else {
            (Kind::Drop, Severity::Warning, "drop")
        };
        let mut ev = Event::new(kind, sev, String::new())
            .with("action", action)
            .with("chain", chain)
            .with("rule_kind", rkind)
            .with("rule", &rule)
            .with_opt("in", in_seg.as_ref())
            .with_opt("out", out_seg.as_ref())
            .with_opt("in_if", in_if.as_ref())
            .with_opt("out_if", out_if.as_ref());
        if let Some(t) = r.time_us {
            ev.time_us = t;
        }
        let mut seen = None;
        let mut what = String::from("packet");
        if let Some(p) = &r.packet {
            let proto = p.proto_name();
            ev = ev
                .with("src", p.src)
                .with("dst", p.dst)
                .with("proto", &proto)
                .with_opt("sport", p.sport())
                .with_opt("dport", p.dport())
                .with("len", p.len);
            match p.l4 {
                L4::Tcp { flags, .. } => ev = ev.with("tcp_flags", nflog::tcp_flags(flags)),
                L4::Icmp { typ, code } => ev = ev.with("icmp_type", typ).with("icmp_code", code),
                _ => {}
            }
            what = match (p.sport(), p.dport()) {
                (Some(s), Some(d)) => format!("{proto} {}:{s} -> {}:{d}", p.src, p.dst),
                _ => format!("{proto} {} -> {}", p.src, p.dst),
            };
            if !accept && super::alerts::counts_toward_alerts(chain, rkind) {
                seen = Some(DropSeen {
                    src: p.src,
                    dst: p.dst,
                    dport: p.dport(),
                    in_segment: in_seg.clone(),
                });
            }
        }
        if let Some(mac) = r.mac {
            ev = ev.with("mac", crate::model::addr::fmt_mac(&mac));
        }
        ev.msg = format!(
            "{action} {what} by {chain} {rkind} {rule} ({} -> {})",
            in_seg.as_deref().or(in_if.as_deref()).unwrap_or("gateway"),
            out_seg
                .as_deref()
                .or(out_if.as_deref())
                .unwrap_or("gateway"),
        );
        (ev, seen)
    }
}

/// The event of an alert.
pub fn alert_event(a: &super::alerts::Alert, quarantine: Option<u64>) -> Event {
    let mut msg = format!(
        "ALERT {} from {}{}: {}",
        a.kind.name(),
        a.src,
        a.in_segment
            .as_deref()
            .map_or(String::new(), |s| format!(" ({s})")),
        a.detail
    );
    if let Some(q) = quarantine {
        msg.push_str(&format!("; quarantined for {q} s"));
    }
    Event::new(Kind::Alert, Severity::Alert, msg)
        .with("alert", a.kind.name())
        .with("src", a.src)
        .with_opt("in", a.in_segment.as_ref())
        .with("count", a.count)
        .with("window", a.window_s)
        .with(
            "quarantine",
            quarantine.map_or("no".to_string(), |q| format!("{q}")),
        )
}

/// Read the NFLOG group on a thread of its own until the process ends.
pub fn start_nflog(m: Model, may_quarantine: bool, quarantine: Quarantine) {
    let r = std::thread::Builder::new()
        .name("nflog".into())
        .spawn(move || nflog_loop(m, may_quarantine, quarantine));
    if let Err(e) = r {
        tracing::error!("cannot start the NFLOG reader: {e}");
    }
}

fn nflog_loop(m: Model, may_quarantine: bool, quarantine: Quarantine) {
    let group = m.logging.nflog_group;
    let st = &hub().nflog;
    st.group.store(u64::from(group), Ordering::Relaxed);
    let sock = match NflogSocket::bind(group) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(
                group,
                "cannot bind NFLOG group {group}: {e}; firewall drops are not shipped"
            );
            return;
        }
    };
    st.bound.store(true, Ordering::Relaxed);
    tracing::info!(target: "bulkhead::logship", group, "reading firewall logs from NFLOG");
    let res = Resolver::new(&m);
    let mgmt = m.management_segment().name.clone();
    let mut own: Vec<IpAddr> = m.segments.iter().map(|s| s.gateway.into()).collect();
    own.extend(
        m.segments6()
            .filter_map(|s| s.gateway6(None))
            .map(IpAddr::from),
    );
    let mut det = Detector::new(&m.alerts, &mgmt);
    let t0 = Instant::now();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                st.lost.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!(target: "bulkhead::logship", "reading NFLOG failed: {e}");
                std::thread::sleep(std::time::Duration::from_secs(1));
                continue;
            }
        };
        for r in nflog::decode_datagram(&buf[..n]) {
            let Ok(r) = r else { continue };
            st.records.fetch_add(1, Ordering::Relaxed);
            let (ev, seen) = res.event(&r, nflog::ifname);
            emit(ev);
            let Some(seen) = seen else { continue };
            let now_ms = t0.elapsed().as_millis() as u64;
            for a in det.observe(now_ms, &seen) {
                st.alerts.fetch_add(1, Ordering::Relaxed);
                let v = quarantine_verdict(&m.alerts, &a, may_quarantine, &mgmt, &own);
                let t = match v {
                    QuarantineVerdict::Quarantine { timeout, .. } => Some(timeout),
                    _ => None,
                };
                let mut ev = alert_event(&a, t);
                if v == QuarantineVerdict::Exempt {
                    ev = ev.with("exempt", "never_quarantine");
                    ev.msg.push_str("; not quarantined (never_quarantine)");
                }
                emit(ev);
                if let QuarantineVerdict::Quarantine { addr, .. } = v {
                    st.quarantined.fetch_add(1, Ordering::Relaxed);
                    quarantine(addr);
                }
            }
        }
    }
}

/// Link changes from the kernel as events (created, removed, up, down, carrier).
pub async fn links(m: Model) {
    use futures_util::StreamExt;
    use rtnetlink::constants::RTMGRP_LINK;
    use rtnetlink::packet_core::NetlinkPayload;
    use rtnetlink::packet_route::RouteNetlinkMessage;
    use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
    use rtnetlink::sys::AsyncSocket;
    let res = Resolver::new(&m);
    let Ok((mut conn, _h, mut messages)) = rtnetlink::new_connection() else {
        tracing::error!("cannot open a netlink socket: link changes are not shipped");
        return;
    };
    let addr = rtnetlink::sys::SocketAddr::new(0, RTMGRP_LINK);
    if let Err(e) = conn.socket_mut().socket_mut().bind(&addr) {
        tracing::error!("cannot subscribe to link changes: {e}; they are not shipped");
        return;
    }
    tokio::spawn(conn);
    let name_of = |l: &LinkMessage| {
        l.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
    };
    let mut last: HashMap<String, (bool, bool)> = HashMap::new();
    while let Some((msg, _)) = messages.next().await {
        let (l, removed) = match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => (l, false),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => (l, true),
            _ => continue,
        };
        let Some(name) = name_of(&l) else { continue };
        let up = l.header.flags.contains(LinkFlags::Up);
        let carrier = l.header.flags.contains(LinkFlags::LowerUp);
        let state = if removed {
            last.remove(&name);
            "removed"
        } else {
            if last.insert(name.clone(), (up, carrier)) == Some((up, carrier)) {
                continue;
            }
            match (up, carrier) {
                (true, true) => "up",
                (true, false) => "no-carrier",
                _ => "down",
            }
        };
        let seg = res.segment(&name).map(str::to_string);
        let sev = if state == "up" {
            Severity::Notice
        } else {
            Severity::Warning
        };
        emit(
            Event::new(
                Kind::Link,
                sev,
                format!(
                    "link {name}{} {state}",
                    seg.as_deref().map_or(String::new(), |s| format!(" ({s})"))
                ),
            )
            .with("link", &name)
            .with("state", state)
            .with_opt("segment", seg.as_ref()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_event_names_rule_and_segments() {
        let (m, _) = crate::model::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("overlay/etc/bulkhead/bulkhead.toml"),
        )
        .expect("shipped config");
        let res = Resolver::new(&m);
        let pkt = nflog::Packet {
            src: "192.168.200.10".parse().unwrap(),
            dst: "192.168.30.5".parse().unwrap(),
            proto: 6,
            len: 60,
            l4: L4::Tcp {
                sport: 40000,
                dport: 22,
                flags: 2,
            },
        };
        let r = Record {
            prefix: "bh:forward:builtin:default-drop".into(),
            indev: Some(7),
            outdev: Some(8),
            packet: Some(pkt),
            mac: Some([2, 0, 0, 0, 0, 1]),
            ..Record::default()
        };
        let names = |i: u32| Some(if i == 7 { "eth0.200" } else { "eth0.30" }.to_string());
        let (ev, seen) = res.event(&r, names);
        assert_eq!(ev.kind, Kind::Drop);
        assert_eq!(ev.field("rule"), Some("default-drop"));
        assert_eq!(ev.field("in"), Some("guest"));
        assert_eq!(ev.field("out"), Some("server"));
        assert_eq!(ev.field("dport"), Some("22"));
        assert_eq!(ev.field("tcp_flags"), Some("S"));
        assert_eq!(ev.field("mac"), Some("02:00:00:00:00:01"));
        assert_eq!(
            ev.msg,
            "drop tcp 192.168.200.10:40000 -> 192.168.30.5:22 by forward builtin default-drop (guest -> server)"
        );
        assert_eq!(seen.unwrap().in_segment.as_deref(), Some("guest"));
        // a logged accept of a config rule, prefix truncated by the kernel's limit
        let r = Record {
            prefix: "bh:forward:rule:dmz-web-to".into(),
            ..Record::default()
        };
        let (ev, seen) = res.event(&r, |_| None);
        assert_eq!(ev.kind, Kind::Accept);
        assert_eq!(ev.field("rule"), Some("dmz-web-to-app"));
        assert!(seen.is_none());
    }

    #[test]
    fn antispoof_drops_are_shipped_but_never_feed_the_alerts() {
        let (m, _) = crate::model::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("overlay/etc/bulkhead/bulkhead.toml"),
        )
        .expect("shipped config");
        let res = Resolver::new(&m);
        // a packet on the guest segment claiming a server's address
        let r = Record {
            prefix: "bh:antispoof:antispoof:guest".into(),
            indev: Some(7),
            packet: Some(nflog::Packet {
                src: "198.18.30.77".parse().unwrap(),
                dst: "198.18.30.5".parse().unwrap(),
                proto: 6,
                len: 60,
                l4: L4::Tcp {
                    sport: 40000,
                    dport: 1000,
                    flags: 2,
                },
            }),
            ..Record::default()
        };
        let (ev, seen) = res.event(&r, |_| Some("eth0.200".to_string()));
        assert_eq!(ev.kind, Kind::Drop);
        assert_eq!(ev.field("rule_kind"), Some("antispoof"));
        assert_eq!(ev.field("src"), Some("198.18.30.77"));
        assert!(
            seen.is_none(),
            "a spoofed source must not feed the detector"
        );
    }
}
