//! Logs and alerts to the SIEM: every event of the daemon (its own log records, firewall
//! drops from NFLOG, apply/rollback/confirm results, link and lease changes, alerts) goes
//! into one ordered stream. The stream is kept in a small ring for `bulkhead logs`, and
//! shipped to every `[[logging.targets]]` receiver as RFC 5424 (or RFC 3164) syslog over
//! UDP, TCP (RFC 6587 octet counting) or TLS (RFC 5425). TCP and TLS targets never lose
//! events while the daemon runs: undeliverable events wait in a bounded spool on disk
//! (see [`spool`]) and are replayed in order after reconnection.

pub mod alerts;
pub mod event;
pub mod format;
pub mod layer;
pub mod nflog;
pub mod ship;
pub mod spool;
pub mod transport;
mod watch;

use std::collections::VecDeque;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

pub use event::{Event, Kind, Severity};

/// Events kept for `bulkhead logs`.
pub const RING: usize = 1000;
/// Events kept before the shippers start (the first apply happens before).
const EARLY: usize = 100_000;

struct Inner {
    seq: u64,
    ring: VecDeque<Arc<Event>>,
    targets: Vec<mpsc::UnboundedSender<Arc<Event>>>,
    started: bool,
    early: Vec<Arc<Event>>,
}

/// The event stream of this process.
pub struct Hub {
    active: AtomicBool,
    inner: Mutex<Inner>,
    bcast: broadcast::Sender<Arc<Event>>,
    stats: Mutex<Vec<Arc<ship::TargetStats>>>,
    pub nflog: NflogStats,
}

/// Counters of the NFLOG reader.
#[derive(Debug, Default, Serialize)]
pub struct NflogStats {
    pub group: AtomicU64,
    pub bound: AtomicBool,
    pub records: AtomicU64,
    /// Records the kernel could not queue to us (the socket buffer was full).
    pub lost: AtomicU64,
    pub alerts: AtomicU64,
    pub quarantined: AtomicU64,
}

static HUB: OnceLock<Hub> = OnceLock::new();

pub fn hub() -> &'static Hub {
    HUB.get_or_init(|| Hub {
        active: AtomicBool::new(false),
        inner: Mutex::new(Inner {
            seq: 0,
            ring: VecDeque::with_capacity(RING),
            targets: Vec::new(),
            started: false,
            early: Vec::new(),
        }),
        bcast: broadcast::channel(4096).0,
        stats: Mutex::new(Vec::new()),
        nflog: NflogStats::default(),
    })
}

/// Start collecting events (the daemon calls this first; other commands never do).
pub fn activate() {
    hub().active.store(true, Ordering::SeqCst);
}

pub fn is_active() -> bool {
    HUB.get().is_some_and(|h| h.active.load(Ordering::Relaxed))
}

/// Put an event into the stream: numbered, kept in the ring, shipped to every target.
pub fn emit(mut ev: Event) {
    if !is_active() {
        return;
    }
    let h = hub();
    let ev = {
        let mut g = h.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.seq += 1;
        ev.seq = g.seq;
        let ev = Arc::new(ev);
        if g.ring.len() >= RING {
            g.ring.pop_front();
        }
        g.ring.push_back(ev.clone());
        if g.started {
            for t in &g.targets {
                let _ = t.send(ev.clone());
            }
        } else if g.early.len() < EARLY {
            g.early.push(ev.clone());
        }
        ev
    };
    let _ = h.bcast.send(ev);
}

/// The recent events (oldest first) and a receiver of the ones after them.
pub fn subscribe() -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
    let h = hub();
    let g = h.inner.lock().unwrap_or_else(|e| e.into_inner());
    let rx = h.bcast.subscribe();
    (g.ring.iter().cloned().collect(), rx)
}

/// What the shippers need from the running config.
#[derive(Clone)]
pub struct Setup {
    pub model: crate::model::Model,
    pub state_dir: std::path::PathBuf,
    /// Alerts may quarantine their source (`alerts.quarantine`). Off in the lab, whose
    /// `verify` probes look like a scan and must not lock its clients out.
    pub quarantine: bool,
}

/// Where the spools live.
pub fn spool_dir(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("spool")
}

/// Start the shippers (one task per target), the NFLOG reader with the alert detector, and
/// the link watcher; then release the events collected so far. Call inside the runtime.
/// `quarantine` puts a source into the quarantine set (through the engine).
pub fn start(
    setup: Setup,
    quarantine: impl Fn(std::net::IpAddr) + Send + Sync + 'static,
) -> Vec<tokio::task::JoinHandle<()>> {
    let handles = start_shippers(&setup);
    watch::start_nflog(setup.model.clone(), setup.quarantine, Arc::new(quarantine));
    tokio::spawn(watch::links(setup.model.clone()));
    handles
}

/// Start one shipper per target and release the events collected so far.
pub fn start_shippers(setup: &Setup) -> Vec<tokio::task::JoinHandle<()>> {
    let h = hub();
    let m = &setup.model;
    let mut handles = Vec::new();
    let mut txs = Vec::new();
    let mut stats = Vec::new();
    for t in &m.logging.targets {
        let (tx, rx) = mpsc::unbounded_channel();
        let st = Arc::new(ship::TargetStats::new(t));
        // target names are validated to letters, digits, `-`, `_` and `.`: keep `.`/`..` out
        let leaf = if t.name.chars().all(|c| c == '.') {
            format!("target-{}", txs.len())
        } else {
            t.name.clone()
        };
        let dir = spool_dir(&setup.state_dir).join(leaf);
        handles.push(tokio::spawn(ship::run_target(
            t.clone(),
            st.clone(),
            rx,
            dir,
            m.logging.spool_limit,
            m.hostname.clone(),
        )));
        txs.push(tx);
        stats.push(st);
    }
    *h.stats.lock().unwrap_or_else(|e| e.into_inner()) = stats;
    {
        let mut g = h.inner.lock().unwrap_or_else(|e| e.into_inner());
        for ev in std::mem::take(&mut g.early) {
            for t in &txs {
                let _ = t.send(ev.clone());
            }
        }
        g.targets = txs;
        g.started = true;
    }
    handles
}

/// Stop shipping: the targets' queues close, each shipper writes what it could not deliver
/// to its spool (for the next start) and ends. Waits at most `grace`.
pub async fn stop(handles: Vec<tokio::task::JoinHandle<()>>, grace: std::time::Duration) {
    {
        let mut g = hub().inner.lock().unwrap_or_else(|e| e.into_inner());
        g.targets.clear();
        g.started = false;
    }
    let _ = tokio::time::timeout(grace, async {
        for h in handles {
            let _ = h.await;
        }
    })
    .await;
}

/// The counters of every log target.
pub fn target_status() -> Vec<ship::TargetStatus> {
    hub()
        .stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|s| s.snapshot())
        .collect()
}

/// Events put into the stream since this process started.
pub fn events_total() -> u64 {
    hub().inner.lock().unwrap_or_else(|e| e.into_inner()).seq
}

/// Shipping counters for `bulkhead status`.
pub fn status() -> serde_json::Value {
    serde_json::json!({
        "targets": target_status(),
        "nflog": &hub().nflog,
        "events": events_total(),
    })
}

/// The event of an apply, rollback or confirm answered through the control socket (or done
/// by the engine itself: `what` says which).
pub fn outcome(kind: Kind, what: &str, ok: Result<&serde_json::Value, &str>) {
    let ev = match ok {
        Ok(data) => {
            let mut e =
                Event::new(kind, Severity::Notice, format!("{what}: ok")).with("result", "ok");
            if let Some(n) = data.get("changes").and_then(|c| c.as_array()) {
                e = e.with("changes", n.len());
            }
            if let Some(g) = data.get("generation").and_then(|g| g.as_u64()) {
                e = e.with("generation", g);
            }
            if let Some(g) = data.get("entry").and_then(|g| g.as_u64()) {
                e = e.with("entry", g);
            }
            e
        }
        Err(err) => Event::new(kind, Severity::Error, format!("{what} failed: {err}"))
            .with("result", "failed")
            .with("error", err),
    };
    emit(ev.with("what", what));
}

/// The event of a control-socket request's result, for the requests that change the system.
pub fn client_result(req: &crate::control::Request, resp: &crate::control::Response) {
    use crate::control::Request;
    let (kind, what) = match req {
        Request::Apply { .. } => (Kind::Apply, "apply"),
        Request::Rollback => (Kind::Rollback, "rollback"),
        Request::Confirm => (Kind::Confirm, "confirm"),
        _ => return,
    };
    let err = resp.error.clone().unwrap_or_default();
    outcome(
        kind,
        what,
        if resp.ok {
            Ok(&resp.data)
        } else {
            Err(err.as_str())
        },
    );
}

/// The audit event of a change asked for by `who` (`token NAME` of the API, `uid N (user)` of
/// the control socket): what was asked, and the result. Requests that change nothing (status,
/// diff, listings) are not audited.
pub fn audit(who: &str, via: &str, req: &crate::control::Request, resp: &crate::control::Response) {
    use crate::control::Request;
    let what = match req {
        Request::Apply { confirm_within, .. } => match confirm_within {
            Some(s) => format!("apply (confirm within {s} s)"),
            None => "apply".to_string(),
        },
        Request::Confirm => "confirm".into(),
        Request::Rollback => "rollback".into(),
        Request::SetAdd { group, addrs } => format!("set add {group} {}", join_nets(addrs)),
        Request::SetDel { group, addrs } => format!("set del {group} {}", join_nets(addrs)),
        Request::Audit { what, error } => return audit_event(who, via, what, error.as_deref()),
        _ => return,
    };
    audit_event(who, via, &what, resp.error.as_deref());
}

/// An audit event: `who` asked for `what` through `via`; `error` when it failed.
pub fn audit_event(who: &str, via: &str, what: &str, error: Option<&str>) {
    let ev = match error {
        None => Event::new(Kind::Audit, Severity::Notice, format!("{who}: {what}: ok"))
            .with("result", "ok"),
        Some(e) => Event::new(
            Kind::Audit,
            Severity::Warning,
            format!("{who}: {what}: failed: {e}"),
        )
        .with("result", "failed")
        .with("error", e),
    };
    emit(ev.with("who", who).with("via", via).with("what", what));
}

fn join_nets(v: &[ipnet::IpNet]) -> String {
    v.iter()
        .map(|n| {
            if n.prefix_len() == n.max_prefix_len() {
                n.addr().to_string()
            } else {
                n.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The event of a DHCP lease change.
pub fn lease(ev: &crate::dhcp::LeaseEvent) {
    use crate::dhcp::LeaseEventKind as K;
    let what = match ev.kind {
        K::Bound => "bound",
        K::Released => "released",
        K::Declined => "declined",
        K::Expired => "expired",
    };
    let l = &ev.lease;
    emit(
        Event::new(
            Kind::Lease,
            Severity::Info,
            format!("lease {what}: {} on {}", l.addr, l.segment),
        )
        .with("action", what)
        .with("segment", &l.segment)
        .with("addr", l.addr)
        .with("mac", crate::model::addr::fmt_mac(&l.mac))
        .with_opt("hostname", l.hostname.as_ref())
        .with_opt("group", l.group.as_ref()),
    );
}

/// Answer `Request::Logs` on a control connection: one response line with the recent events,
/// then (with `follow`) one line per new event until the client goes away.
pub async fn serve_logs<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    follow: bool,
) -> std::io::Result<()> {
    use crate::control::Response;
    use tokio::io::AsyncWriteExt;
    let (backlog, mut rx) = subscribe();
    let mut last = backlog.last().map_or(0, |e| e.seq);
    let line = |v: &[Arc<Event>]| {
        let v: Vec<&Event> = v.iter().map(|e| e.as_ref()).collect();
        let mut s = serde_json::to_string(&Response::ok(v)).expect("serializes");
        s.push('\n');
        s
    };
    w.write_all(line(&backlog).as_bytes()).await?;
    if !follow {
        return Ok(());
    }
    loop {
        match rx.recv().await {
            Ok(ev) if ev.seq > last => {
                last = ev.seq;
                w.write_all(line(&[ev]).as_bytes()).await?;
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let mut ev = Event::new(
                    Kind::Log,
                    Severity::Warning,
                    format!("{n} events not shown: this reader was too slow"),
                );
                ev.seq = last;
                w.write_all(line(&[Arc::new(ev)]).as_bytes()).await?;
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

/// One line of `bulkhead logs`: `TIME SEVERITY KIND message name=value...`. Text from
/// clients (a DHCP hostname, say) may hold newlines and terminal escape sequences: every
/// control character is printed as a visible escape (`\n`, `\x1b`), never as itself.
pub fn text_line(ev: &Event) -> String {
    let mut s = format!(
        "{} {:<7} {:<8} ",
        event::rfc3339(ev.time_us),
        ev.severity.name(),
        ev.kind.name(),
    );
    format::escape_text(&ev.msg, &mut s);
    for (k, v) in &ev.fields {
        s.push(' ');
        format::escape_text(k, &mut s);
        s.push('=');
        if v.is_empty() || v.contains([' ', '"', '\\']) || v.contains(format::needs_escape) {
            s.push('"');
            for c in v.chars() {
                if matches!(c, '"' | '\\') {
                    s.push('\\');
                    s.push(c);
                } else if format::needs_escape(c) {
                    format::push_escaped(c, &mut s);
                } else {
                    s.push(c);
                }
            }
            s.push('"');
        } else {
            s.push_str(v);
        }
    }
    s
}

/// One line of `bulkhead logs --format json`: the event as JSON, with the characters a
/// terminal would act on written as `\uXXXX` escapes. serde_json escapes C0 controls
/// already; DEL, C1 controls (U+009B is a CSI) and the bidi overrides would go out raw.
pub fn json_line(ev: &Event) -> String {
    let raw = serde_json::to_string(ev).expect("serializes");
    if !raw.contains(format::needs_escape) {
        return raw;
    }
    let mut s = String::with_capacity(raw.len() + 16);
    for c in raw.chars() {
        if format::needs_escape(c) {
            // only inside JSON strings (the structure is ASCII), and always in the BMP
            s.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            s.push(c);
        }
    }
    s
}

/// Every target has delivered everything: nothing spooled, nothing in memory.
pub fn drained() -> bool {
    hub()
        .stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .all(|s| {
            s.spool_frames.load(Ordering::Relaxed) == 0
                && s.in_flight.load(Ordering::Relaxed) == 0
                && (s.transport == crate::model::Transport::Udp
                    || s.connected.load(Ordering::Relaxed))
        })
}

/// The DHCP hostname of the synthetic lease event: text a client chose, with the characters
/// the formats must escape (quotes, brackets, a newline that would forge a syslog line, a
/// terminal escape sequence).
pub const SYNTHETIC_HOSTNAME: &str = "pc \"7\" [x]\n<13>forged\x1b[31m";

/// A synthetic event of each kind in turn (`i` picks the kind), with the fields a real one
/// has: for tests and benchmarks of the shipping path (`bulkhead ship-test`).
pub fn synthetic(i: u64, tag: &str) -> Event {
    let n = i + 1;
    let host = (n % 200) as u8 + 10;
    let e = match i % 9 {
        0 => Event::new(Kind::Drop, Severity::Warning, format!("drop tcp 198.18.20.{host}:40000 -> 198.18.30.5:22 by forward builtin default-drop (internal -> server)"))
            .with("action", "drop").with("chain", "forward").with("rule_kind", "builtin").with("rule", "default-drop")
            .with("in", "internal").with("out", "server").with("src", format!("198.18.20.{host}")).with("dst", "198.18.30.5")
            .with("proto", "tcp").with("sport", 40000).with("dport", 22).with("mac", "02:00:00:00:00:14"),
        1 => Event::new(Kind::Accept, Severity::Info, "accept tcp 198.18.10.10:5000 -> 198.18.30.20:8080 by forward rule dmz-web-to-app (dmz -> server)")
            .with("action", "accept").with("chain", "forward").with("rule_kind", "rule").with("rule", "dmz-web-to-app")
            .with("in", "dmz").with("out", "server").with("src", "198.18.10.10").with("dst", "198.18.30.20")
            .with("proto", "tcp").with("sport", 5000).with("dport", 8080),
        2 => Event::new(Kind::Alert, Severity::Alert, format!("ALERT port_scan from 198.18.200.{host} (guest): 10 distinct destination ports within 30 s"))
            .with("alert", "port_scan").with("src", format!("198.18.200.{host}")).with("in", "guest").with("count", 10).with("window", 30).with("quarantine", 600),
        3 => Event::new(Kind::Apply, Severity::Notice, "apply: ok").with("result", "ok").with("changes", 3).with("generation", n).with("what", "apply"),
        4 => Event::new(Kind::Rollback, Severity::Notice, "rollback: ok").with("result", "ok").with("changes", 1).with("what", "rollback"),
        5 => Event::new(Kind::Confirm, Severity::Notice, "confirm: ok").with("result", "ok").with("entry", n).with("what", "confirm"),
        6 => Event::new(Kind::Link, Severity::Warning, "link eth0.30 (server) down").with("link", "eth0.30").with("state", "down").with("segment", "server"),
        7 => Event::new(Kind::Lease, Severity::Info, format!("lease bound: 198.18.20.{host} on internal"))
            .with("action", "bound").with("segment", "internal").with("addr", format!("198.18.20.{host}")).with("mac", "02:00:00:00:00:14").with("hostname", SYNTHETIC_HOSTNAME),
        _ => Event::new(Kind::Log, Severity::Info, "drift repaired").with("changes", 1).with("module", "bulkhead::supervisor"),
    };
    e.with("test", tag).with("n", n)
}

/// `bulkhead ship-test`: ship `count` synthetic events (at `rate` per second, or as fast
/// as they can be made) to the config's targets, wait up to `wait` for every target to
/// have delivered them, and return each target's counters.
pub fn ship_test(
    model: &crate::model::Model,
    state_dir: &Path,
    count: u64,
    rate: Option<u64>,
    tag: &str,
    wait: std::time::Duration,
) -> std::io::Result<(bool, Vec<ship::TargetStatus>, std::time::Duration)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    activate();
    rt.block_on(async {
        let handles = start_shippers(&Setup {
            model: model.clone(),
            state_dir: state_dir.to_path_buf(),
            quarantine: false,
        });
        let t0 = std::time::Instant::now();
        for i in 0..count {
            if let Some(r) = rate {
                let due = t0 + std::time::Duration::from_secs_f64(i as f64 / r.max(1) as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            emit(synthetic(i, tag));
        }
        let deadline = std::time::Instant::now() + wait;
        // the shippers must have taken every event from their queues first
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut done = false;
        while std::time::Instant::now() < deadline {
            if drained() {
                done = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let elapsed = t0.elapsed();
        let st = status();
        stop(handles, std::time::Duration::from_secs(3)).await;
        let targets: Vec<ship::TargetStatus> =
            serde_json::from_value(st["targets"].clone()).unwrap_or_default();
        Ok((done, targets, elapsed))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_text_line_shows_control_characters_as_escapes() {
        let mut e = Event::new(
            Kind::Lease,
            Severity::Info,
            "lease bound: pc\n<13>forged\x1b]0;owned\x07",
        )
        .with("hostname", "a\x1b[2Jb")
        .with("vendor", "x\ny")
        .with("plain", "ok");
        e.time_us = 0;
        let l = text_line(&e);
        assert!(!l.chars().any(|c| c.is_control()), "{l:?}");
        assert!(
            l.ends_with(r#"lease bound: pc\n<13>forged\x1b]0;owned\x07 hostname="a\x1b[2Jb" vendor="x\ny" plain=ok"#),
            "{l}"
        );
    }

    #[test]
    fn logs_json_line_escapes_what_a_terminal_would_act_on() {
        let e = Event::new(
            Kind::Lease,
            Severity::Info,
            "a\x1b[2J\u{9b}31m\u{7f}\u{202e}b",
        )
        .with("hostname", "x\ny\u{9b}");
        let l = json_line(&e);
        assert!(!l.chars().any(format::needs_escape), "{l:?}");
        assert!(l.contains(r"a\u001b[2J\u009b31m\u007f\u202eb"), "{l}");
        let back: Event = serde_json::from_str(&l).unwrap();
        assert_eq!(back, e);
    }
}
