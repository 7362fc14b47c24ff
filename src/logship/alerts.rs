//! Alert detection: a pure state machine fed (time, drop) in order; time is passed in.
//!
//! - drop burst: at least N drops from one source within W seconds;
//! - port scan: at least K distinct destination ports, or hosts, from one source within W;
//! - sensitive port: a drop to one of the sensitive ports from a segment other than the
//!   management segment (or from the internet).
//!
//! Each alert fires once per source and kind per window (sensitive ports: per
//! [`SENSITIVE_WINDOW_MS`]).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;

use crate::model::{Alerts, PortRange};

/// Whether a drop may count toward alerts, by its NFLOG prefix parts (`bh:CHAIN:KIND:NAME`).
///
/// Drops by the anti-spoofing chain (`bh:antispoof:antispoof:SEGMENT`, rendered by
/// `plan::ruleset`) never do: their source address is the one the packet claims, which is
/// exactly what was forged. Counting them would let anyone aim the quarantine at an innocent
/// host by sending packets with its address.
pub fn counts_toward_alerts(chain: &str, rule_kind: &str) -> bool {
    chain != "antispoof" && rule_kind != "antispoof"
}

/// What an alert does to its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineVerdict {
    /// Put the source into the quarantine set for `timeout` seconds.
    Quarantine { addr: IpAddr, timeout: u64 },
    /// The source is in `alerts.never_quarantine`: the alert is raised, the host keeps access.
    Exempt,
    /// Quarantine is off, or the source is the management segment or the gateway.
    No,
}

/// Whether alert `a` quarantines its source. `may`: quarantine is allowed in this process;
/// `management`: the management segment's name; `own`: the gateway's addresses.
pub fn quarantine_verdict(
    cfg: &Alerts,
    a: &Alert,
    may: bool,
    management: &str,
    own: &[IpAddr],
) -> QuarantineVerdict {
    let (Some(timeout), addr) = (cfg.quarantine, a.src) else {
        return QuarantineVerdict::No;
    };
    if !may || a.in_segment.as_deref() == Some(management) || own.contains(&addr) {
        return QuarantineVerdict::No;
    }
    let exempt = match addr {
        IpAddr::V4(x) => cfg.never_quarantine.iter().any(|r| r.contains(x)),
        IpAddr::V6(x) => cfg.never_quarantine6.iter().any(|r| r.contains(x)),
    };
    if exempt {
        return QuarantineVerdict::Exempt;
    }
    QuarantineVerdict::Quarantine { addr, timeout }
}

/// How long a sensitive-port alert for one source is not repeated.
pub const SENSITIVE_WINDOW_MS: u64 = 60_000;
/// Sources tracked at once; beyond this the least recently seen are forgotten.
const MAX_SOURCES: usize = 65_536;

/// What the detector needs to know about one dropped packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropSeen {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub dport: Option<u16>,
    /// Segment the packet came in on (`internet` for the uplink), when known.
    pub in_segment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    DropBurst,
    PortScan,
    SensitivePort,
}

impl AlertKind {
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::DropBurst => "drop_burst",
            AlertKind::PortScan => "port_scan",
            AlertKind::SensitivePort => "sensitive_port",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub kind: AlertKind,
    pub src: IpAddr,
    pub in_segment: Option<String>,
    /// Drops (burst), distinct ports or hosts (scan), the port (sensitive).
    pub count: u32,
    pub window_s: u64,
    pub detail: String,
}

#[derive(Debug, Default)]
struct Source {
    /// (time ms, dst, dport) of recent drops, oldest first.
    recent: VecDeque<(u64, IpAddr, Option<u16>)>,
    last_seen: u64,
    /// Time until which an alert of a kind is not repeated.
    quiet_until: HashMap<AlertKind, u64>,
}

#[derive(Debug)]
pub struct Detector {
    cfg: Alerts,
    management: String,
    sources: HashMap<IpAddr, Source>,
    /// The longest window: how long drops are remembered.
    keep_ms: u64,
}

impl Detector {
    /// `management`: the name of the management segment (its sources never raise
    /// sensitive-port alerts).
    pub fn new(cfg: &Alerts, management: &str) -> Self {
        let keep_s = cfg
            .drop_burst
            .map(|(_, w)| w)
            .into_iter()
            .chain(cfg.port_scan.as_ref().map(|p| p.window))
            .max()
            .unwrap_or(0);
        Detector {
            cfg: cfg.clone(),
            management: management.to_string(),
            sources: HashMap::new(),
            keep_ms: keep_s * 1000,
        }
    }

    pub fn enabled(&self) -> bool {
        self.cfg.drop_burst.is_some()
            || self.cfg.port_scan.is_some()
            || !self.cfg.sensitive_ports.is_empty()
    }

    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    /// Feed one drop at `now_ms` (non-decreasing); returns the alerts it raises.
    pub fn observe(&mut self, now_ms: u64, d: &DropSeen) -> Vec<Alert> {
        let mut out = Vec::new();
        if !self.enabled() {
            return out;
        }
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&d.src) {
            self.forget_stale(now_ms);
        }
        let keep = self.keep_ms;
        let s = self.sources.entry(d.src).or_default();
        s.last_seen = now_ms;
        s.recent.push_back((now_ms, d.dst, d.dport));
        while s
            .recent
            .front()
            .is_some_and(|(t, _, _)| now_ms.saturating_sub(*t) >= keep.max(1))
        {
            s.recent.pop_front();
        }
        let mut fire =
            |s: &mut Source, kind: AlertKind, window_ms: u64, count: u32, detail: String| {
                let q = s.quiet_until.entry(kind).or_insert(0);
                if now_ms >= *q {
                    *q = now_ms + window_ms;
                    out.push(Alert {
                        kind,
                        src: d.src,
                        in_segment: d.in_segment.clone(),
                        count,
                        window_s: window_ms / 1000,
                        detail,
                    });
                }
            };
        if let Some((n, w)) = self.cfg.drop_burst {
            let wm = w * 1000;
            let c = s.recent.iter().filter(|(t, _, _)| now_ms - t < wm).count() as u32;
            if c >= n {
                fire(
                    s,
                    AlertKind::DropBurst,
                    wm,
                    c,
                    format!("{c} drops within {w} s"),
                );
            }
        }
        if let Some(p) = &self.cfg.port_scan {
            let wm = p.window * 1000;
            let win = s.recent.iter().filter(|(t, _, _)| now_ms - t < wm);
            let ports: BTreeSet<u16> = win.clone().filter_map(|(_, _, p)| *p).collect();
            let hosts: BTreeSet<IpAddr> = win.map(|(_, h, _)| *h).collect();
            let (np, nh) = (ports.len() as u32, hosts.len() as u32);
            if p.ports.is_some_and(|k| np >= k) {
                fire(
                    s,
                    AlertKind::PortScan,
                    wm,
                    np,
                    format!("{np} distinct destination ports within {} s", p.window),
                );
            } else if p.hosts.is_some_and(|k| nh >= k) {
                fire(
                    s,
                    AlertKind::PortScan,
                    wm,
                    nh,
                    format!("{nh} distinct destination hosts within {} s", p.window),
                );
            }
        }
        if let Some(port) = d.dport
            && self
                .cfg
                .sensitive_ports
                .iter()
                .any(|r: &PortRange| r.contains(port))
            && d.in_segment.as_deref() != Some(self.management.as_str())
        {
            fire(
                s,
                AlertKind::SensitivePort,
                SENSITIVE_WINDOW_MS,
                u32::from(port),
                format!(
                    "sensitive port {port} from {}",
                    d.in_segment.as_deref().unwrap_or("an unknown segment")
                ),
            );
        }
        out
    }

    /// Forget sources with nothing recent and no alert pending quiet time.
    fn forget_stale(&mut self, now_ms: u64) {
        let keep = self.keep_ms.max(SENSITIVE_WINDOW_MS);
        self.sources
            .retain(|_, s| now_ms.saturating_sub(s.last_seen) < keep);
        if self.sources.len() >= MAX_SOURCES {
            // still full: drop the least recently seen half
            let mut seen: Vec<u64> = self.sources.values().map(|s| s.last_seen).collect();
            seen.sort_unstable();
            let cut = seen[seen.len() / 2];
            self.sources.retain(|_, s| s.last_seen > cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PortScan;
    use std::net::Ipv4Addr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn d(src: &str, dst: &str, port: u16, seg: &str) -> DropSeen {
        DropSeen {
            src: ip(src),
            dst: ip(dst),
            dport: Some(port),
            in_segment: Some(seg.into()),
        }
    }

    fn cfg() -> Alerts {
        Alerts {
            drop_burst: Some((5, 10)),
            port_scan: Some(PortScan {
                ports: Some(4),
                hosts: Some(3),
                window: 30,
            }),
            sensitive_ports: vec![PortRange::single(22), PortRange { lo: 3389, hi: 3389 }],
            quarantine: Some(5),
            never_quarantine: vec![],
            never_quarantine6: vec![],
        }
    }

    #[test]
    fn drop_burst_fires_once_per_window() {
        let mut det = Detector::new(
            &Alerts {
                port_scan: None,
                sensitive_ports: vec![],
                ..cfg()
            },
            "mgmt",
        );
        let x = d("198.18.20.10", "198.18.30.5", 80, "internal");
        for i in 0..4 {
            assert!(det.observe(i * 1000, &x).is_empty(), "drop {i}");
        }
        let a = det.observe(4000, &x);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, AlertKind::DropBurst);
        assert_eq!(a[0].count, 5);
        // the same burst continuing: quiet within the window
        for i in 5..14 {
            assert!(det.observe(i * 1000, &x).is_empty(), "drop {i}");
        }
        // a new window: it fires again
        assert_eq!(det.observe(14_000, &x).len(), 1);
        // another source is counted on its own
        let y = d("198.18.20.11", "198.18.30.5", 80, "internal");
        assert!(det.observe(14_000, &y).is_empty());
    }

    #[test]
    fn drops_spread_out_do_not_make_a_burst() {
        let mut det = Detector::new(
            &Alerts {
                port_scan: None,
                sensitive_ports: vec![],
                ..cfg()
            },
            "mgmt",
        );
        let x = d("198.18.20.10", "198.18.30.5", 80, "internal");
        for i in 0..50 {
            assert!(det.observe(i * 2500, &x).is_empty());
        }
    }

    #[test]
    fn port_scan_by_ports_and_by_hosts() {
        let c = Alerts {
            drop_burst: None,
            sensitive_ports: vec![],
            ..cfg()
        };
        let mut det = Detector::new(&c, "mgmt");
        // the same port 3 times is no scan
        for t in 0..3 {
            assert!(
                det.observe(t, &d("10.0.0.1", "10.0.1.1", 80, "guest"))
                    .is_empty()
            );
        }
        assert!(
            det.observe(10, &d("10.0.0.1", "10.0.1.1", 81, "guest"))
                .is_empty()
        );
        assert!(
            det.observe(20, &d("10.0.0.1", "10.0.1.1", 82, "guest"))
                .is_empty()
        );
        let a = det.observe(30, &d("10.0.0.1", "10.0.1.1", 83, "guest"));
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, AlertKind::PortScan);
        assert_eq!(a[0].count, 4);
        assert!(a[0].detail.contains("ports"), "{}", a[0].detail);
        assert!(
            det.observe(40, &d("10.0.0.1", "10.0.1.1", 84, "guest"))
                .is_empty()
        );
        // hosts: one port on three hosts
        let mut det = Detector::new(&c, "mgmt");
        assert!(
            det.observe(0, &d("10.0.0.2", "10.0.1.1", 445, "guest"))
                .is_empty()
        );
        assert!(
            det.observe(1, &d("10.0.0.2", "10.0.1.2", 445, "guest"))
                .is_empty()
        );
        let a = det.observe(2, &d("10.0.0.2", "10.0.1.3", 445, "guest"));
        assert_eq!(a.len(), 1);
        assert!(a[0].detail.contains("hosts"), "{}", a[0].detail);
        // a slow scan, one port every 11 s, never has 4 within 30 s
        let mut det = Detector::new(&c, "mgmt");
        for i in 0..20u16 {
            let dd = d("10.0.0.3", "10.0.1.1", 1000 + i, "guest");
            assert!(det.observe(u64::from(i) * 11_000, &dd).is_empty());
        }
    }

    #[test]
    fn sensitive_ports_not_from_management() {
        let c = Alerts {
            drop_burst: None,
            port_scan: None,
            ..cfg()
        };
        let mut det = Detector::new(&c, "mgmt");
        assert!(
            det.observe(0, &d("198.18.100.5", "198.18.30.5", 22, "mgmt"))
                .is_empty()
        );
        assert!(
            det.observe(0, &d("198.18.20.5", "198.18.30.5", 80, "internal"))
                .is_empty()
        );
        let a = det.observe(0, &d("198.18.20.5", "198.18.30.5", 22, "internal"));
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, AlertKind::SensitivePort);
        assert_eq!(a[0].count, 22);
        assert!(
            det.observe(59_999, &d("198.18.20.5", "198.18.30.6", 3389, "internal"))
                .is_empty()
        );
        assert_eq!(
            det.observe(60_000, &d("198.18.20.5", "198.18.30.6", 3389, "internal"))
                .len(),
            1
        );
        // from the internet
        let x = DropSeen {
            src: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)),
            dst: ip("203.0.113.2"),
            dport: Some(22),
            in_segment: Some("internet".into()),
        };
        assert_eq!(det.observe(1, &x).len(), 1);
    }

    #[test]
    fn one_drop_can_raise_several_kinds() {
        let mut det = Detector::new(
            &Alerts {
                drop_burst: Some((1, 10)),
                ..cfg()
            },
            "mgmt",
        );
        let a = det.observe(0, &d("198.18.20.5", "198.18.30.5", 22, "internal"));
        let kinds: Vec<_> = a.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, vec![AlertKind::DropBurst, AlertKind::SensitivePort]);
    }

    #[test]
    fn nothing_configured_nothing_tracked() {
        let mut det = Detector::new(
            &Alerts {
                drop_burst: None,
                port_scan: None,
                sensitive_ports: vec![],
                quarantine: None,
                never_quarantine: vec![],
                never_quarantine6: vec![],
            },
            "mgmt",
        );
        assert!(!det.enabled());
        assert!(det.observe(0, &d("1.2.3.4", "5.6.7.8", 22, "x")).is_empty());
        assert_eq!(det.tracked_sources(), 0);
    }

    #[test]
    fn never_quarantine_hosts_alert_but_keep_access() {
        use crate::model::AddrRange;
        let c = Alerts {
            never_quarantine: vec![
                AddrRange::parse("198.18.20.10").unwrap(),
                AddrRange::parse("198.18.40.0/24").unwrap(),
            ],
            ..cfg()
        };
        let mut det = Detector::new(&c, "mgmt");
        let own = [IpAddr::V4(Ipv4Addr::new(198, 18, 20, 1))];
        let scan = |det: &mut Detector, src: &str| {
            (0..4)
                .flat_map(|p| det.observe(p, &d(src, "198.18.30.5", 1000 + p as u16, "internal")))
                .collect::<Vec<_>>()
        };
        // the exempt host still raises the alert
        let a = scan(&mut det, "198.18.20.10");
        assert_eq!(a.len(), 1);
        assert_eq!(
            quarantine_verdict(&c, &a[0], true, "mgmt", &own),
            QuarantineVerdict::Exempt
        );
        let a = scan(&mut det, "198.18.40.77");
        assert_eq!(
            quarantine_verdict(&c, &a[0], true, "mgmt", &own),
            QuarantineVerdict::Exempt
        );
        // its neighbour does not
        let a = scan(&mut det, "198.18.20.11");
        assert_eq!(
            quarantine_verdict(&c, &a[0], true, "mgmt", &own),
            QuarantineVerdict::Quarantine {
                addr: IpAddr::V4(Ipv4Addr::new(198, 18, 20, 11)),
                timeout: 5
            }
        );
        assert_eq!(
            quarantine_verdict(&c, &a[0], false, "mgmt", &own),
            QuarantineVerdict::No
        );
    }

    #[test]
    fn ipv6_sources_are_quarantined_unless_exempt() {
        use crate::model::AddrRange6;
        let c = Alerts {
            never_quarantine6: vec![AddrRange6::parse("fd00:20::10").unwrap()],
            ..cfg()
        };
        let mut det = Detector::new(&c, "mgmt");
        let own = [IpAddr::V6("fd00:20::1".parse().unwrap())];
        let scan = |det: &mut Detector, src: &str| {
            (0..4)
                .flat_map(|p| det.observe(p, &d(src, "fd00:30::5", 1000 + p as u16, "internal")))
                .collect::<Vec<_>>()
        };
        let a = scan(&mut det, "fd00:20::11");
        assert_eq!(a.len(), 1);
        assert_eq!(
            quarantine_verdict(&c, &a[0], true, "mgmt", &own),
            QuarantineVerdict::Quarantine {
                addr: "fd00:20::11".parse().unwrap(),
                timeout: 5
            }
        );
        let a = scan(&mut det, "fd00:20::10");
        assert_eq!(
            quarantine_verdict(&c, &a[0], true, "mgmt", &own),
            QuarantineVerdict::Exempt
        );
        let a = scan(&mut det, "fd00:20::1");
        assert_eq!(
            quarantine_verdict(&c, &a[0], true, "mgmt", &own),
            QuarantineVerdict::No
        );
    }

    #[test]
    fn antispoof_drops_do_not_count() {
        assert!(!counts_toward_alerts("antispoof", "antispoof"));
        assert!(counts_toward_alerts("forward", "builtin"));
        assert!(counts_toward_alerts("input", "builtin"));
    }
}
