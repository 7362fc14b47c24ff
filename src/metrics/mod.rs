//! Prometheus metrics of the running gateway, in the text format of the `prometheus-client`
//! crate (OpenMetrics text, which Prometheus scrapes and `promtool check metrics` reads).
//! Every metric is listed in docs/metrics.md.
//!
//! # Interface
//!
//! [`render`] takes the daemon's [`Gateway`], which lives on the engine thread (its netlink
//! handle is not `Send`). From the daemon's async side, ask the engine exactly as the control
//! socket does for `status`: send `Job::Client(Request::Metrics, reply)` on the engine's job
//! channel; the answer is a [`Response`](crate::control::Response) whose `data` is one JSON
//! string holding the whole text (see [`from_response`]). Serve it with [`CONTENT_TYPE`].
//!
//! What it reads, each time it is called (nothing is cached, nothing is kept between calls):
//! the firewall's rule counters and set sizes (like `bulkhead status`), the lease store on
//! disk, the DHCP message counters of this process ([`crate::dhcp::server::message_counts`]),
//! the log shipping and NFLOG counters of this process ([`crate::logship`]), the conntrack
//! count and limit (`/proc/sys/net/netfilter`) and each planned interface's counters
//! (`/sys/class/net/IF/statistics`). A source that cannot be read (no conntrack module, an
//! interface that is gone) leaves its metrics out; it never fails the whole text.

use std::fmt::Write as _;
use std::path::Path;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::supervisor::gateway::{Gateway, Status};

/// The `Content-Type` of [`render`]'s text (OpenMetrics).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The `Content-Type` of [`classic`]'s text (the Prometheus text format 0.0.4).
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// [`render`]'s OpenMetrics text in the older Prometheus text format (0.0.4), the one
/// `promtool check metrics`, node_exporter's textfile collector and scrapers that do not ask
/// for OpenMetrics read: a counter's `HELP` and `TYPE` lines name it with its `_total` suffix
/// (as its samples do) and the `# EOF` line goes. Samples are unchanged.
pub fn classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len() + 256);
    // a HELP line waits for its TYPE line, which says whether the name takes `_total`
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = if kind == "counter" && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            if let Some((_, text)) = help.take() {
                let _ = writeln!(out, "# HELP {name} {text}");
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
            continue;
        }
        if let Some((name, text)) = help.take() {
            let _ = writeln!(out, "# HELP {name} {text}");
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some((name, text)) = help {
        let _ = writeln!(out, "# HELP {name} {text}");
    }
    out
}

/// Interface statistics read for each planned link.
const IF_STATS: &[&str] = &[
    "rx_bytes",
    "tx_bytes",
    "rx_packets",
    "tx_packets",
    "rx_errors",
    "tx_errors",
    "rx_dropped",
    "tx_dropped",
];

/// One DHCP pool: its segment, how many addresses it can lease, how many are leased now.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolUse {
    pub segment: String,
    pub size: u64,
    pub used: u64,
}

/// Counters of one interface, read from `/sys/class/net/IF/statistics`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkCounters {
    pub interface: String,
    /// `segment`, `uplink` or `trunk`.
    pub role: String,
    /// The segment's name (empty for the uplink and trunk).
    pub segment: String,
    /// (statistic, value), e.g. `("rx_bytes", 1234)`.
    pub stats: Vec<(&'static str, u64)>,
}

/// Everything the text is made of, read at one moment: [`gather`] fills it from the daemon,
/// [`encode_snapshot`] turns it into text (pure, for tests).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub status: Status,
    pub pools: Vec<PoolUse>,
    /// (segment, direction, type, messages).
    pub dhcp_messages: Vec<(String, &'static str, &'static str, u64)>,
    pub log_targets: Vec<crate::logship::ship::TargetStatus>,
    pub nflog_bound: bool,
    pub nflog_records: u64,
    pub nflog_lost: u64,
    pub alerts: u64,
    pub quarantines: u64,
    pub events: u64,
    /// (entries, limit) when the kernel tracks connections.
    pub conntrack: Option<(u64, Option<u64>)>,
    pub links: Vec<LinkCounters>,
}

/// The metrics text of the running daemon. Call it on the engine thread (where the
/// [`Gateway`] is); see the module documentation for how the daemon's async side gets it.
/// Never fails: what cannot be read is left out.
pub fn render(gw: &Gateway) -> String {
    encode_snapshot(&gather(gw))
}

/// The metrics text out of a control-socket (or engine) answer to `Request::Metrics`.
pub fn from_response(resp: &crate::control::Response) -> Result<String, String> {
    if !resp.ok {
        return Err(resp
            .error
            .clone()
            .unwrap_or_else(|| "the daemon refused".into()));
    }
    resp.data
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "the daemon's answer holds no metrics text".into())
}

/// Read everything [`render`] reports.
pub fn gather(gw: &Gateway) -> Snapshot {
    let status = gw.status(true);
    let now = crate::dhcp::leases::unix_now();
    let leases = crate::dhcp::leases::read_leases(&crate::supervisor::dhcp_dir(&gw.state_dir), now)
        .unwrap_or_default();
    let pools = gw
        .pools()
        .iter()
        .map(|p| {
            let outside = p
                .reservations
                .iter()
                .filter(|r| !p.in_ranges(r.addr))
                .count();
            let used = leases
                .iter()
                .filter(|l| l.segment == p.segment && l.state == crate::dhcp::LeaseState::Bound)
                .count();
            PoolUse {
                segment: p.segment.clone(),
                size: (p.range_len() + outside) as u64,
                used: used as u64,
            }
        })
        .collect();
    let dhcp_messages = crate::dhcp::server::message_counts()
        .snapshot()
        .into_iter()
        .map(|(s, d, k, n)| (s, d.name(), k, n))
        .collect();
    let nf = &crate::logship::hub().nflog;
    let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let links = status
        .links
        .iter()
        .filter(|l| l.present)
        .map(|link| {
            let (role, segment) = match link.role.split_once(':') {
                Some((r, s)) => (r.to_string(), s.to_string()),
                None => (link.role.clone(), String::new()),
            };
            let dir = Path::new("/sys/class/net")
                .join(&link.name)
                .join("statistics");
            LinkCounters {
                interface: link.name.clone(),
                role,
                segment,
                stats: IF_STATS
                    .iter()
                    .filter_map(|s| read_u64(&dir.join(s)).map(|v| (*s, v)))
                    .collect(),
            }
        })
        .collect();
    let ct = Path::new("/proc/sys/net/netfilter");
    Snapshot {
        pools,
        dhcp_messages,
        log_targets: crate::logship::target_status(),
        nflog_bound: nf.bound.load(std::sync::atomic::Ordering::Relaxed),
        nflog_records: l(&nf.records),
        nflog_lost: l(&nf.lost),
        alerts: l(&nf.alerts),
        quarantines: l(&nf.quarantined),
        events: crate::logship::events_total(),
        conntrack: read_u64(&ct.join("nf_conntrack_count"))
            .map(|n| (n, read_u64(&ct.join("nf_conntrack_max")))),
        links,
        status,
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

type Labels = Vec<(String, String)>;

fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Counter and gauge families registered under `bulkhead_`.
struct Builder {
    reg: Registry,
}

impl Builder {
    fn counter(&mut self, name: &str, help: &str) -> Family<Labels, Counter> {
        let f = Family::<Labels, Counter>::default();
        self.reg.register(name, help, f.clone());
        f
    }

    fn gauge(&mut self, name: &str, help: &str) -> Family<Labels, Gauge> {
        let f = Family::<Labels, Gauge>::default();
        self.reg.register(name, help, f.clone());
        f
    }

    fn gauge_f(
        &mut self,
        name: &str,
        help: &str,
    ) -> Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>> {
        let f = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        self.reg.register(name, help, f.clone());
        f
    }
}

fn set(g: &Family<Labels, Gauge>, l: &[(&str, &str)], v: u64) {
    g.get_or_create(&labels(l))
        .set(i64::try_from(v).unwrap_or(i64::MAX));
}

fn count(c: &Family<Labels, Counter>, l: &[(&str, &str)], v: u64) {
    c.get_or_create(&labels(l)).inc_by(v);
}

/// A rule counter's comment (`KIND:NAME`, see `plan::ruleset::Origin::comment`) as
/// (kind, name).
fn split_comment(c: &str) -> (&str, &str) {
    c.split_once(':').unwrap_or(("builtin", c))
}

/// The text of a snapshot (OpenMetrics, ending with `# EOF`).
pub fn encode_snapshot(s: &Snapshot) -> String {
    let mut b = Builder {
        reg: Registry::with_prefix("bulkhead"),
    };
    let st = &s.status;

    // firewall rules
    let rule_packets = b.counter(
        "rule_packets",
        "Packets that matched a firewall rule, by the config entry it was rendered from (rule: its name; kind: rule, forward, internet, egress, management, dhcp, antispoof or builtin) and chain",
    );
    let rule_bytes = b.counter(
        "rule_bytes",
        "Bytes that matched a firewall rule, labelled like bulkhead_rule_packets_total",
    );
    let drop_packets = b.counter(
        "default_drop_packets",
        "Packets dropped by a chain's final default drop, by chain",
    );
    let drop_bytes = b.counter(
        "default_drop_bytes",
        "Bytes dropped by a chain's final default drop, by chain",
    );
    for c in &st.counters {
        let (kind, name) = split_comment(&c.rule);
        let l = [("rule", name), ("chain", c.chain.as_str()), ("kind", kind)];
        count(&rule_packets, &l, c.packets);
        count(&rule_bytes, &l, c.bytes);
        if kind == "builtin" && name == "default-drop" {
            count(&drop_packets, &[("chain", &c.chain)], c.packets);
            count(&drop_bytes, &[("chain", &c.chain)], c.bytes);
        }
    }
    let sets = b.gauge(
        "set_entries",
        "Entries in a firewall set (a group's addresses, live additions and DHCP reservations included; set quarantine: quarantined sources)",
    );
    for (name, n) in &st.sets {
        set(&sets, &[("set", name)], *n as u64);
    }

    // DHCP
    let size = b.gauge(
        "dhcp_pool_size",
        "Addresses a segment's DHCP server can lease (its ranges and reservations outside them)",
    );
    let used = b.gauge(
        "dhcp_pool_used",
        "Addresses of a segment leased now (bound leases)",
    );
    for p in &s.pools {
        set(&size, &[("segment", &p.segment)], p.size);
        set(&used, &[("segment", &p.segment)], p.used);
    }
    let msgs = b.counter(
        "dhcp_messages",
        "DHCP messages by segment, direction (received, sent) and type (discover, request, decline, release, inform, offer, ack, nak, other; malformed: a received packet without a DHCP message type)",
    );
    for (seg, dir, kind, n) in &s.dhcp_messages {
        count(
            &msgs,
            &[("segment", seg), ("direction", dir), ("type", kind)],
            *n,
        );
    }

    // log shipping, NFLOG, alerts
    let t_sent = b.counter(
        "log_target_sent",
        "Log frames written to a target's receiver (resends included)",
    );
    let t_spooled = b.counter(
        "log_target_spooled",
        "Log frames written to a target's disk spool",
    );
    let t_resent = b.counter(
        "log_target_resent",
        "Log frames sent again to a target after a broken connection",
    );
    let t_dropped = b.counter(
        "log_target_dropped",
        "Log frames dropped because a target's spool was full",
    );
    let t_errors = b.counter(
        "log_target_errors",
        "Failed connects, broken connections and send errors of a target",
    );
    let t_connected = b.gauge(
        "log_target_connected",
        "1 while a log target's connection is up, else 0",
    );
    let t_spool_frames = b.gauge(
        "log_target_spool_frames",
        "Log frames in a target's spool now",
    );
    let t_spool_bytes = b.gauge(
        "log_target_spool_bytes",
        "Size of a target's spool now, in bytes",
    );
    for t in &s.log_targets {
        let l = [
            ("target", t.name.as_str()),
            ("transport", t.transport.as_str()),
        ];
        count(&t_sent, &l, t.sent);
        count(&t_spooled, &l, t.spooled);
        count(&t_resent, &l, t.resent);
        count(&t_dropped, &l, t.dropped);
        count(&t_errors, &l, t.errors);
        set(&t_connected, &l, u64::from(t.connected));
        set(&t_spool_frames, &l, t.spool_frames);
        set(&t_spool_bytes, &l, t.spool_bytes);
    }
    let events = b.counter("events", "Events put into the event stream");
    count(&events, &[], s.events);
    let nf_bound = b.gauge(
        "nflog_bound",
        "1 while the NFLOG reader is bound to its group, else 0",
    );
    set(&nf_bound, &[], u64::from(s.nflog_bound));
    let nf_records = b.counter("nflog_records", "NFLOG records read (logged drops)");
    count(&nf_records, &[], s.nflog_records);
    let nf_lost = b.counter(
        "nflog_lost",
        "NFLOG records the kernel could not queue (the socket buffer was full)",
    );
    count(&nf_lost, &[], s.nflog_lost);
    let alerts = b.counter("alerts", "Alerts raised (scans, floods) from logged drops");
    count(&alerts, &[], s.alerts);
    let q = b.counter(
        "quarantines",
        "Sources put into the quarantine set by an alert",
    );
    count(&q, &[], s.quarantines);
    let q_now = b.gauge("quarantined_sources", "Sources in the quarantine set now");
    let in_q = st
        .sets
        .iter()
        .find(|(n, _)| n == crate::plan::ruleset::QUARANTINE)
        .map_or(0, |(_, n)| *n as u64);
    set(&q_now, &[], in_q);

    // kernel
    if let Some((n, max)) = s.conntrack {
        let e = b.gauge("conntrack_entries", "Connections the kernel tracks now");
        set(&e, &[], n);
        if let Some(max) = max {
            let m = b.gauge(
                "conntrack_limit",
                "The most connections the kernel tracks (nf_conntrack_max)",
            );
            set(&m, &[], max);
        }
    }
    let link_bytes = b.counter(
        "interface_bytes",
        "Bytes through a planned interface, by direction (rx, tx)",
    );
    let link_packets = b.counter(
        "interface_packets",
        "Packets through a planned interface, by direction (rx, tx)",
    );
    let link_errors = b.counter(
        "interface_errors",
        "Receive and transmit errors of a planned interface, by direction",
    );
    let link_dropped = b.counter(
        "interface_dropped",
        "Packets a planned interface dropped, by direction",
    );
    let link_up = b.gauge(
        "interface_up",
        "1 while a planned interface is present and up, else 0",
    );
    for link in &st.links {
        let (role, segment) = match link.role.split_once(':') {
            Some((r, s)) => (r, s),
            None => (link.role.as_str(), ""),
        };
        set(
            &link_up,
            &[
                ("interface", &link.name),
                ("role", role),
                ("segment", segment),
            ],
            u64::from(link.present && link.up),
        );
    }
    for lc in &s.links {
        for (stat, v) in &lc.stats {
            let (dir, what) = stat.split_once('_').unwrap_or(("rx", stat));
            let fam = match what {
                "bytes" => &link_bytes,
                "packets" => &link_packets,
                "errors" => &link_errors,
                _ => &link_dropped,
            };
            count(
                fam,
                &[
                    ("interface", &lc.interface),
                    ("role", &lc.role),
                    ("segment", &lc.segment),
                    ("direction", dir),
                ],
                *v,
            );
        }
    }

    // apply
    let generation = b.gauge(
        "config_generation",
        "The generation of the applied config (counts up with every apply that changed it)",
    );
    if let Some(g) = st.generation {
        set(&generation, &[], g);
    }
    let pending = b.gauge(
        "confirm_pending",
        "1 while an apply waits for its confirmation (it rolls back at its deadline), else 0",
    );
    set(&pending, &[], u64::from(st.pending_confirm.is_some()));
    if let Some(pc) = &st.pending_confirm {
        let d = b.gauge(
            "confirm_deadline_timestamp_seconds",
            "Unix time at which an unconfirmed apply rolls back",
        );
        set(&d, &[], pc.deadline);
    }
    if let Some(la) = &st.last_apply {
        let at = b.gauge(
            "last_apply_timestamp_seconds",
            "Unix time of the last apply attempt (apply, reload, rollback or repair of drift)",
        );
        set(&at, &[], la.at);
        let ok = b.gauge(
            "last_apply_success",
            "1 when the last apply attempt succeeded, 0 when it failed; label what: apply, reload, rollback or repair",
        );
        set(&ok, &[("what", &la.what)], u64::from(la.ok));
        let ch = b.gauge(
            "last_apply_changes",
            "Changes made by the last apply attempt",
        );
        set(&ch, &[], la.changes as u64);
        let el = b.gauge_f(
            "last_apply_duration_seconds",
            "How long the last apply attempt took",
        );
        el.get_or_create(&labels(&[])).set(la.elapsed_ms / 1000.0);
    }

    let mut out = String::new();
    if encode(&mut out, &b.reg).is_err() {
        // writing to a String does not fail; keep the text valid if it ever did
        out.clear();
        let _ = writeln!(out, "# EOF");
    }
    sort_samples(&out)
}

/// The samples of each metric in label order (the registry keeps them in no order), so
/// that two texts compare line by line.
fn sort_samples(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run: Vec<&str> = Vec::new();
    let flush = |run: &mut Vec<&str>, out: &mut String| {
        run.sort_unstable();
        for l in run.drain(..) {
            out.push_str(l);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut run, &mut out);
            out.push_str(line);
            out.push('\n');
        } else {
            run.push(line);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::gateway::{CounterStatus, LastApply, LinkStatus};

    fn snapshot() -> Snapshot {
        Snapshot {
            status: Status {
                config: "/etc/bulkhead/bulkhead.toml".into(),
                backend: "nftables".into(),
                daemon: true,
                links: vec![LinkStatus {
                    name: "eth1.10".into(),
                    role: "segment:office".into(),
                    present: true,
                    up: true,
                    mtu: Some(1500),
                    addresses: vec![],
                }],
                counters: vec![
                    CounterStatus {
                        rule: "rule:office-print".into(),
                        chain: "forward".into(),
                        packets: 7,
                        bytes: 700,
                    },
                    CounterStatus {
                        rule: "builtin:default-drop".into(),
                        chain: "input".into(),
                        packets: 3,
                        bytes: 180,
                    },
                ],
                sets: vec![("printers".into(), 2), ("quarantine".into(), 1)],
                last_apply: Some(LastApply {
                    at: 1_700_000_000,
                    ok: true,
                    what: "start".into(),
                    generation: Some(4),
                    changes: 12,
                    error: None,
                    elapsed_ms: 25.0,
                }),
                pending_confirm: None,
                generation: Some(4),
                extra: Default::default(),
            },
            pools: vec![PoolUse {
                segment: "office".into(),
                size: 100,
                used: 1,
            }],
            dhcp_messages: vec![("office".into(), "received", "request", 2)],
            log_targets: vec![],
            nflog_bound: true,
            nflog_records: 5,
            nflog_lost: 0,
            alerts: 1,
            quarantines: 1,
            events: 9,
            conntrack: Some((3, Some(65536))),
            links: vec![LinkCounters {
                interface: "eth1.10".into(),
                role: "segment".into(),
                segment: "office".into(),
                stats: vec![
                    ("rx_bytes", 1000),
                    ("tx_packets", 4),
                    ("rx_errors", 0),
                    ("tx_dropped", 0),
                ],
            }],
        }
    }

    #[test]
    fn the_text_names_rules_by_their_config_entry() {
        let t = encode_snapshot(&snapshot());
        for line in [
            "bulkhead_rule_packets_total{rule=\"office-print\",chain=\"forward\",kind=\"rule\"} 7",
            "bulkhead_rule_bytes_total{rule=\"office-print\",chain=\"forward\",kind=\"rule\"} 700",
            "bulkhead_default_drop_packets_total{chain=\"input\"} 3",
            "bulkhead_set_entries{set=\"printers\"} 2",
            "bulkhead_quarantined_sources 1",
            "bulkhead_dhcp_pool_size{segment=\"office\"} 100",
            "bulkhead_dhcp_pool_used{segment=\"office\"} 1",
            "bulkhead_dhcp_messages_total{segment=\"office\",direction=\"received\",type=\"request\"} 2",
            "bulkhead_conntrack_entries 3",
            "bulkhead_conntrack_limit 65536",
            "bulkhead_interface_bytes_total{interface=\"eth1.10\",role=\"segment\",segment=\"office\",direction=\"rx\"} 1000",
            "bulkhead_config_generation 4",
            "bulkhead_last_apply_success{what=\"start\"} 1",
            "bulkhead_last_apply_timestamp_seconds 1700000000",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} missing from:\n{t}");
        }
        assert!(t.ends_with("# EOF\n"), "{t}");
    }

    /// The metric names of a text, with a counter's `_total`.
    fn names(classic_text: &str) -> std::collections::BTreeSet<String> {
        classic_text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    }

    /// The metric names in backticks in `text` (docs, dashboard expressions).
    fn mentioned(text: &str) -> std::collections::BTreeSet<String> {
        let mut v = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(i) = rest.find("bulkhead_") {
            let n: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + n.len()..];
            v.insert(n);
        }
        v
    }

    #[test]
    fn docs_and_dashboard_name_exactly_the_metrics_written() {
        let mut s = snapshot();
        s.log_targets = vec![crate::logship::ship::TargetStatus {
            name: "siem".into(),
            addr: "198.18.0.9:514".into(),
            transport: "tcp".into(),
            connected: true,
            sent: 10,
            spooled: 2,
            dropped: 0,
            discarded: 0,
            resent: 1,
            spool_frames: 0,
            spool_bytes: 0,
            errors: 1,
            in_flight: 0,
            last_error: None,
        }];
        s.status.pending_confirm = Some(crate::supervisor::gateway::Pending {
            entry: 5,
            deadline: 1_700_000_060,
            promote: None,
            restore: None,
            keys: vec![],
        });
        let written = names(&classic(&encode_snapshot(&s)));
        let root = env!("CARGO_MANIFEST_DIR");
        let docs = std::fs::read_to_string(format!("{root}/docs/metrics.md")).unwrap();
        // `bulkhead_rule_*` and the like name groups, not metrics
        let documented: std::collections::BTreeSet<String> = mentioned(&docs)
            .into_iter()
            .filter(|n| !n.ends_with('_'))
            .collect();
        assert_eq!(documented, written, "docs/metrics.md vs the text");
        let dash = std::fs::read_to_string(format!("{root}/docs/grafana-dashboard.json")).unwrap();
        let _: serde_json::Value = serde_json::from_str(&dash).expect("the dashboard is JSON");
        let used: std::collections::BTreeSet<String> = mentioned(&dash)
            .into_iter()
            .filter(|n| !n.ends_with('_'))
            .collect();
        let unknown: Vec<_> = used.difference(&written).collect();
        assert!(
            unknown.is_empty(),
            "the dashboard uses unknown metrics: {unknown:?}"
        );
    }

    #[test]
    fn the_classic_text_names_counters_with_their_suffix() {
        let t = classic(&encode_snapshot(&snapshot()));
        assert!(
            t.contains("# TYPE bulkhead_rule_packets_total counter\n"),
            "{t}"
        );
        assert!(
            t.contains("# HELP bulkhead_rule_packets_total Packets"),
            "{t}"
        );
        assert!(t.contains("# TYPE bulkhead_set_entries gauge\n"), "{t}");
        assert!(!t.contains("# EOF"), "{t}");
        let samples = |s: &str| {
            s.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let om = encode_snapshot(&snapshot());
        let (mut a, mut b) = (samples(&om), samples(&t));
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }
}
