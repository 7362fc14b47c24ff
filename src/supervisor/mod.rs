//! `bulkhead run`: the supervisor. It applies the config, then keeps the system as planned:
//! netlink link/address events and a periodic check repair drift (a deleted link, a removed
//! address, a flushed or deleted table); SIGHUP reloads (validate first: an invalid config is
//! logged and the running state stays untouched); SIGTERM exits leaving the ruleset in place.
//! A control socket in the state directory (`control.rs`: root only, bounded) serves status,
//! apply, confirm, rollback, diff and live set changes.

pub mod control;
pub mod gateway;
pub mod ipv6;
pub mod livesets;
pub mod ntp;
pub mod uplink;
pub mod uplink6;

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::control::{Request, Response};
pub use gateway::{Gateway, GwError};

/// What the engine thread is asked to do.
enum Job {
    /// A request, who asked (for the audit trail) and where to answer.
    Client(Request, Who, oneshot::Sender<Response>),
    Reload,
    Check,
    Lease(crate::dhcp::LeaseEvent),
    /// An alert asks to quarantine a source (the live set; its timeout expires it).
    Quarantine(std::net::IpAddr),
    /// The uplink's DHCPv6 client reports a delegated prefix (or its loss).
    Delegated(Option<uplink6::Delegation>),
    Shutdown,
}

/// Whether a job can change the running config, and so the DHCP pools, the IPv6 services, the
/// API's listener and the uplink's client that follow it (each check builds the plan again).
/// A lease event, a quarantine or a set change changes only live set members, none of which
/// those depend on: under a stream of leases, that rebuild after every lease was most of the
/// engine's CPU.
fn may_change_config(job: &Job) -> bool {
    !matches!(
        job,
        Job::Lease(_)
            | Job::Quarantine(_)
            | Job::Client(Request::SetAdd { .. } | Request::SetDel { .. }, ..)
    )
}

/// Who asked for a request: a name (`token NAME`, `uid 0 (root)`) and the way it came
/// (`api`, `control-socket`).
#[derive(Debug, Clone)]
pub struct Who {
    pub name: String,
    pub via: &'static str,
}

/// Hands a request of someone to the daemon's engine (the path the control socket uses):
/// the answer arrives on the receiver (dropped when the daemon stops).
#[derive(Clone)]
pub struct Submit(std::sync::mpsc::Sender<Job>);

impl Submit {
    pub fn call(&self, req: Request, who: Who) -> oneshot::Receiver<Response> {
        let (tx, rx) = oneshot::channel();
        let _ = self.0.send(Job::Client(req, who, tx));
        rx
    }
}

/// Where the DHCP server keeps its leases.
pub fn dhcp_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("dhcp")
}

/// Leases from the store on disk (safe while the server writes it).
pub fn read_leases(
    state_dir: &Path,
    segment: Option<&str>,
) -> Result<Vec<crate::dhcp::Lease>, crate::dhcp::StoreError> {
    let mut v =
        crate::dhcp::leases::read_leases(&dhcp_dir(state_dir), crate::dhcp::leases::unix_now())?;
    if let Some(s) = segment {
        v.retain(|l| l.segment == s);
    }
    v.sort_by(|a, b| (&a.segment, a.addr).cmp(&(&b.segment, b.addr)));
    Ok(v)
}

type PoolsTx = mpsc::UnboundedSender<Vec<crate::dhcp::PoolConfig>>;
type UplinkTx = mpsc::UnboundedSender<crate::model::Model>;
/// The IPv6 services follow the model and the uplink's delegated prefix.
type V6Tx = mpsc::UnboundedSender<(crate::model::Model, Option<ipnet::Ipv6Net>)>;

/// What the uplink's DHCP client depends on: a reload that changes it restarts the client.
fn uplink_key(m: &crate::model::Model) -> (String, bool, String) {
    (
        m.uplink.interface.clone(),
        m.uplink.addressing == crate::model::UplinkAddressing::Dhcp,
        m.hostname.clone(),
    )
}

/// What the uplink's DHCP client and chronyd depend on: a reload that changes it sends the
/// new model to the runtime, which restarts what changed.
#[allow(clippy::type_complexity)]
fn runtime_key(
    m: &crate::model::Model,
) -> (
    (String, bool, String),
    Vec<crate::model::NtpServer>,
    Option<(String, bool, Option<u8>)>,
) {
    (uplink_key(m), m.ntp.clone(), uplink6::key(m))
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Gateway(#[from] GwError),
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
}

/// Options of `bulkhead run`.
pub struct RunOptions {
    pub config: PathBuf,
    pub state_dir: Option<PathBuf>,
    pub lab: Option<crate::model::LabMode>,
    /// Seconds between two drift checks.
    pub check_every: Duration,
}

/// The engine: owns the gateway, handles one job at a time.
fn engine(
    mut gw: Gateway,
    jobs: std::sync::mpsc::Receiver<Job>,
    pools_tx: PoolsTx,
    uplink_tx: UplinkTx,
    api: crate::api::ModelTx,
    v6_tx: V6Tx,
) {
    let mut pools = gw.pools();
    let mut v6 = ipv6::key(gw.model(), gw.delegated_now());
    let mut uplink = runtime_key(gw.model());
    api.update(gw.model());
    // Live set changes are recorded in the applied state once per burst (they are durable in
    // their journal before each answer): before any other request looks at that state, and by
    // the first drift check after a quiet moment; until then the checks wait.
    const QUIET: Duration = Duration::from_millis(500);
    const DEFER_AT_MOST: Duration = Duration::from_secs(10);
    let mut burst: Option<(std::time::Instant, std::time::Instant)> = None; // (first, last)
    while let Ok(job) = jobs.recv() {
        let set_change = !may_change_config(&job);
        let defer_check = matches!(job, Job::Check)
            && gw.amend_pending()
            && burst.is_some_and(|(first, last)| {
                last.elapsed() < QUIET && first.elapsed() < DEFER_AT_MOST
            });
        if !set_change && !defer_check {
            gw.flush_amend();
            burst = None;
        }
        match job {
            Job::Shutdown => break,
            Job::Quarantine(std::net::IpAddr::V4(addr)) => {
                let net = ipnet::IpNet::V4(ipnet::Ipv4Net::new(addr, 32).expect("/32"));
                if let Err(e) = gw.set_add(crate::plan::ruleset::QUARANTINE, &[net]) {
                    tracing::error!(%addr, "quarantine failed: {e}");
                }
            }
            Job::Quarantine(std::net::IpAddr::V6(addr)) => {
                if let Err(e) = gw.quarantine6(addr) {
                    tracing::error!(%addr, "quarantine failed: {e}");
                }
            }
            Job::Delegated(d) => match gw.set_delegated(d) {
                Ok(Some(r)) => {
                    tracing::info!(prefix = ?d.map(|d| d.prefix.to_string()), changes = r.changes.len(), generation = ?r.generation, "delegated prefix applied: segments renumbered")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(prefix = ?d.map(|d| d.prefix.to_string()), "renumbering for the delegated prefix failed, the running state is kept: {e}")
                }
            },
            Job::Lease(ev) => {
                crate::logship::lease(&ev);
                use crate::dhcp::LeaseEventKind;
                if let Some(g) = ev.lease.group.clone() {
                    let bound = ev.kind == LeaseEventKind::Bound;
                    if let Err(e) = gw.dhcp_lease(&g, ev.lease.addr, bound) {
                        tracing::error!(group = g, addr = %ev.lease.addr, "updating the group set failed: {e}");
                    }
                }
            }
            Job::Reload => match gateway::load(&gw.reload_path(), None) {
                Err(e) => {
                    tracing::error!(config = %gw.reload_path().display(), "reload refused, the running state is kept:\n{e}")
                }
                Ok(_) => match gw.reload() {
                    Ok(r) => {
                        crate::logship::outcome(
                            crate::logship::Kind::Apply,
                            "reload",
                            Ok(&serde_json::to_value(&r).unwrap_or_default()),
                        );
                        tracing::info!(changes = r.changes.len(), generation = ?r.generation, "reloaded")
                    }
                    Err(e) => {
                        crate::logship::outcome(
                            crate::logship::Kind::Apply,
                            "reload",
                            Err(&e.to_string()),
                        );
                        tracing::error!("reload failed: {e}")
                    }
                },
            },
            Job::Check => {
                match gw.check_deadline() {
                    Err(e) => tracing::error!("restoring the previous config failed: {e}"),
                    Ok(Some(r)) => crate::logship::outcome(
                        crate::logship::Kind::Rollback,
                        "unconfirmed apply",
                        Ok(&serde_json::to_value(&r).unwrap_or_default()),
                    ),
                    Ok(None) => {}
                }
                match if defer_check {
                    Ok(Vec::new())
                } else {
                    gw.drift()
                } {
                    Ok(ch) if ch.is_empty() => {}
                    Ok(ch) => {
                        for c in &ch {
                            tracing::warn!(object = %c.object, "drift: {}", c.detail);
                        }
                        match gw.repair() {
                            Ok(r) => tracing::info!(changes = r.changes.len(), "drift repaired"),
                            Err(e) => tracing::error!("repairing drift failed: {e}"),
                        }
                    }
                    Err(e) => tracing::error!("checking for drift failed: {e}"),
                }
            }
            Job::Client(req, who, reply) => {
                let resp = handle(&mut gw, req.clone());
                crate::logship::client_result(&req, &resp);
                crate::logship::audit(&who.name, who.via, &req, &resp);
                let _ = reply.send(resp);
            }
        }
        if set_change {
            if gw.amend_pending() {
                let now = std::time::Instant::now();
                burst = Some((burst.map_or(now, |b| b.0), now));
            }
            // a set change changes no segment, pool, uplink or API address: nothing below
            // follows it (each of them plans the whole config)
            continue;
        }
        // the config may have changed the segments: the DHCP server follows
        let now = gw.pools();
        if now != pools {
            pools = now;
            let _ = pools_tx.send(pools.clone());
        }
        // and so do the RAs and the DHCPv6 server
        let now = ipv6::key(gw.model(), gw.delegated_now());
        if now != v6 {
            v6 = now;
            let _ = v6_tx.send((gw.model().clone(), gw.delegated_now()));
        }
        // and the API's listener (on the management address)
        api.update(gw.model());
        // and so does the uplink's DHCP client
        let now = runtime_key(gw.model());
        if now != uplink {
            uplink = now;
            let _ = uplink_tx.send(gw.model().clone());
        }
    }
}

fn handle(gw: &mut Gateway, req: Request) -> Response {
    match req {
        Request::Status => {
            let mut st = gw.status(true);
            let leases = read_leases(&gw.state_dir, None).unwrap_or_default();
            let pools: Vec<String> = gw
                .pools()
                .iter()
                .map(|p| format!("{} on {}", p.segment, p.interface))
                .collect();
            st.extra.insert(
                "dhcp".into(),
                serde_json::json!({"serving": pools, "leases": leases.iter().filter(|l| l.state == crate::dhcp::LeaseState::Bound).count()}),
            );
            st.extra.insert("logship".into(), crate::logship::status());
            st.extra.insert("time".into(), ntp::status(gw.model()));
            if gw.model().uplink.prefix_delegation.is_some() {
                st.extra.insert(
                    "uplink6".into(),
                    serde_json::json!({"delegated": gw.delegated()}),
                );
            }
            if let Some(api) = crate::api::status() {
                st.extra.insert("api".into(), api);
            }
            Response::ok(st)
        }
        Request::Apply {
            confirm_within,
            config,
            save,
        } => {
            match gw.apply_config(
                confirm_within.map(Duration::from_secs),
                config.as_deref(),
                save.as_deref(),
            ) {
                Ok(r) => Response::ok(r),
                Err(e) => Response::err(e),
            }
        }
        Request::Confirm => gw.confirm().map_or_else(Response::err, Response::ok),
        Request::Rollback => gw.rollback().map_or_else(Response::err, Response::ok),
        Request::Diff => gw.diff().map_or_else(Response::err, Response::ok),
        Request::SetAdd { group, addrs } => gw
            .set_add(&group, &addrs)
            .map_or_else(Response::err, Response::ok),
        Request::SetDel { group, addrs } => gw
            .set_del(&group, &addrs)
            .map_or_else(Response::err, Response::ok),
        Request::SetList { group } => gw.set_list(&group).map_or_else(Response::err, Response::ok),
        Request::Leases { segment } => {
            read_leases(&gw.state_dir, segment.as_deref()).map_or_else(Response::err, Response::ok)
        }
        Request::Logs { .. } => Response::err("logs are answered by the control socket"),
        Request::Metrics => Response::ok(crate::metrics::render(gw)),
        // recorded by `logship::audit` like every change
        Request::Audit { .. } => Response::ok(()),
    }
}

/// Link and address events from the kernel: each one asks for a drift check.
async fn watch_netlink(tx: mpsc::UnboundedSender<()>) {
    use rtnetlink::constants::{RTMGRP_IPV4_IFADDR, RTMGRP_LINK};
    use rtnetlink::sys::AsyncSocket;
    let Ok((mut conn, _handle, mut messages)) = rtnetlink::new_connection() else {
        tracing::error!("cannot open a netlink socket for link events; relying on periodic checks");
        return;
    };
    let addr = rtnetlink::sys::SocketAddr::new(0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR);
    if let Err(e) = conn.socket_mut().socket_mut().bind(&addr) {
        tracing::error!("cannot subscribe to link events: {e}; relying on periodic checks");
        return;
    }
    tokio::spawn(conn);
    while messages.next().await.is_some() {
        if tx.send(()).is_err() {
            break;
        }
    }
}

fn mark_ready(state_dir: &Path) {
    let _ = crate::sys::fs::write_atomic(
        &state_dir.join("ready"),
        format!("{}\n", std::process::id()).as_bytes(),
        0o644,
    );
}

/// Run the supervisor until SIGTERM/SIGINT.
pub fn run(opts: RunOptions) -> Result<(), RunError> {
    // large buffers (lease journal reads) go back to the kernel when freed (issue 13)
    crate::sys::proc::bound_malloc();
    // The gateway lives on the engine thread (its netlink handle is not Send); the first
    // apply happens there and its outcome comes back before anything else starts.
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    crate::logship::activate();
    let (first_tx, first_rx) = std::sync::mpsc::channel::<
        Result<(PathBuf, Vec<crate::dhcp::PoolConfig>, crate::model::Model), RunError>,
    >();
    let (pools_tx, mut pools_rx) = mpsc::unbounded_channel::<Vec<crate::dhcp::PoolConfig>>();
    let (uplink_tx, mut uplink_rx) = mpsc::unbounded_channel::<crate::model::Model>();
    let (v6_tx, mut v6_rx) =
        mpsc::unbounded_channel::<(crate::model::Model, Option<ipnet::Ipv6Net>)>();
    let (config, state_override, lab) = (opts.config.clone(), opts.state_dir.clone(), opts.lab);
    let (api_tx, api_rx) = crate::api::channel();
    let engine_thread = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            let start = || -> Result<Gateway, RunError> {
                let mut gw = Gateway::open(&config, state_override, lab)?;
                let _ = std::fs::remove_file(gw.state_dir.join("ready"));
                // the live set changes journaled before a crash: into live-sets.json, once
                if let Err(e) = gw.fold_live_sets() {
                    tracing::warn!("folding the journal of live set changes failed (it is kept): {e}");
                }
                // an apply left unconfirmed: rolled back when overdue, else still waiting
                let r = gw.resume().inspect_err(|e| {
                    crate::logship::outcome(crate::logship::Kind::Apply, "start", Err(&e.to_string()))
                })?;
                crate::logship::outcome(crate::logship::Kind::Apply, "start", Ok(&serde_json::to_value(&r).unwrap_or_default()));
                tracing::info!(changes = r.changes.len(), generation = ?r.generation, elapsed_ms = r.elapsed.as_secs_f64() * 1000.0, "applied");
                Ok(gw)
            };
            match start() {
                Ok(gw) => {
                    let _ = first_tx.send(Ok((gw.state_dir.clone(), gw.pools(), gw.model().clone())));
                    engine(gw, rx, pools_tx, uplink_tx, api_tx, v6_tx);
                }
                Err(e) => {
                    let _ = first_tx.send(Err(e));
                }
            }
        })
        .map_err(|err| RunError::Io { what: "starting the engine".into(), err })?;
    let (state_dir, first_pools, uplink_model) = match first_rx.recv() {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            let _ = engine_thread.join();
            return Err(e);
        }
        Err(_) => {
            let _ = engine_thread.join();
            return Err(RunError::Io {
                what: "the engine".into(),
                err: std::io::Error::other("stopped before the first apply"),
            });
        }
    };

    // the appliance's hardware watchdog (BULKHEAD_WATCHDOG from the init), armed once the
    // first apply is done (a first apply that hangs is the init's ready watchdog's matter on a
    // new slot): petted on every tick below, disarmed when this daemon exits (drop)
    let mut watchdog = crate::upgrade::watchdog_from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|err| RunError::Io {
            what: "starting the runtime".into(),
            err,
        })?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup()).expect("signal handler");
        let mut term = signal(SignalKind::terminate()).expect("signal handler");
        let mut int = signal(SignalKind::interrupt()).expect("signal handler");
        control::spawn(&state_dir, tx.clone());
        crate::api::spawn(api_rx, &state_dir, &opts.config, Submit(tx.clone()), opts.lab);
        let qtx = tx.clone();
        let shippers = crate::logship::start(
            crate::logship::Setup {
                model: uplink_model.clone(),
                state_dir: state_dir.clone(),
                quarantine: opts.lab.is_none(),
            },
            move |a| {
                let _ = qtx.send(Job::Quarantine(a));
            },
        );
        let (ntx, mut nrx) = mpsc::unbounded_channel();
        tokio::spawn(watch_netlink(ntx));
        let mut uplink_model = uplink_model;
        let mut uplink_client = uplink::start(&uplink_model, &state_dir);
        let mut ntp_client = ntp::Chrony::start(&uplink_model, &state_dir, opts.lab.is_some());
        // the uplink's DHCPv6 client (address and prefix delegation) and its events
        let mut uplink6_client = uplink6::start(&uplink_model, &state_dir, opts.lab.is_some());
        let dtx = tx.clone();
        tokio::spawn(uplink6::watch(state_dir.clone(), move |d| {
            let _ = dtx.send(Job::Delegated(d));
        }));
        // DHCP on every segment, leases in the state directory
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let dhcp = match crate::dhcp::serve(first_pools.clone(), &dhcp_dir(&state_dir), Some(ev_tx)).await {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!("the DHCP server could not start: {e}");
                None
            }
        };
        if dhcp.is_some() && !first_pools.is_empty() {
            let names: Vec<&str> = first_pools.iter().map(|p| p.segment.as_str()).collect();
            tracing::info!(segments = ?names, "DHCP serving");
        }
        // RAs and DHCPv6 on every segment with subnet6, leases beside the DHCPv4 ones
        // (numbered from the kept delegated prefix until the engine reports the upstream's)
        let kept = uplink_model
            .uplink
            .prefix_delegation
            .and(uplink6::load(&state_dir, gateway::now_unix()).map(|d| d.prefix));
        let mut v6 = ipv6::Ipv6Service::start(&uplink_model, kept, &dhcp_dir(&state_dir)).await;
        mark_ready(&state_dir);
        println!("bulkhead: ready");
        // a slot of an A/B disk is marked good only now (and a pending upgrade settled)
        crate::upgrade::after_ready();
        let mut tick = tokio::time::interval(opts.check_every);
        loop {
            tokio::select! {
                _ = hup.recv() => { tracing::info!("SIGHUP: reloading"); let _ = tx.send(Job::Reload); }
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = tick.tick() => {
                    crate::upgrade::pet(&mut watchdog);
                    let _ = tx.send(Job::Check);
                    // a DHCP client that died is started again
                    if let Some(c) = uplink_client.as_mut()
                        && let Ok(Some(st)) = c.try_wait()
                    {
                        tracing::warn!(status = %st, "the uplink DHCP client exited; starting it again");
                        uplink_client = uplink::start(&uplink_model, &state_dir);
                    }
                    // and so is chronyd, with a back-off (ntp::Backoff)
                    ntp_client.poll(&uplink_model);
                    if let Some(c) = uplink6_client.as_mut()
                        && let Ok(Some(st)) = c.try_wait()
                    {
                        tracing::warn!(status = %st, "the uplink's DHCPv6 client exited; starting it again");
                        uplink6_client = uplink6::start(&uplink_model, &state_dir, opts.lab.is_some());
                    }
                }
                Some(m) = uplink_rx.recv() => {
                    if m.ntp != uplink_model.ntp {
                        tracing::info!("[system] ntp changed: restarting chronyd");
                        ntp_client.restart(&m);
                    }
                    if uplink6::key(&m) != uplink6::key(&uplink_model) {
                        tracing::info!(interface = %m.uplink.interface, "the uplink's IPv6 settings changed: restarting its DHCPv6 client");
                        uplink6::stop(uplink6_client.take());
                        uplink6_client = uplink6::start(&m, &state_dir, opts.lab.is_some());
                    }
                    if uplink_key(&m) != uplink_key(&uplink_model) {
                        tracing::info!(interface = %m.uplink.interface, "the uplink changed: restarting its DHCP client");
                        uplink::stop(uplink_client.take());
                        uplink_model = m;
                        uplink_client = uplink::start(&uplink_model, &state_dir);
                    } else {
                        uplink_model = m;
                    }
                }
                Some(ev) = ev_rx.recv() => { let _ = tx.send(Job::Lease(ev)); }
                Some((m, d)) = v6_rx.recv() => v6.update(&m, d).await,
                Some(pools) = pools_rx.recv() => {
                    if let Some(d) = &dhcp {
                        let keep: Vec<String> = pools.iter().map(|p| p.segment.clone()).collect();
                        for seg in d.served_segments() {
                            if !keep.contains(&seg) {
                                if let Err(e) = d.remove_pool(&seg).await {
                                    tracing::error!(segment = seg, "stopping DHCP failed: {e}");
                                } else {
                                    tracing::info!(segment = seg, "DHCP stopped");
                                }
                            }
                        }
                        for p in pools {
                            let seg = p.segment.clone();
                            if let Err(e) = d.add_pool(p) {
                                tracing::error!(segment = seg, "serving DHCP failed: {e}");
                            }
                        }
                    }
                }
                Some(()) = nrx.recv() => {
                    // let a burst of events settle, then check once
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while nrx.try_recv().is_ok() {}
                    let _ = tx.send(Job::Check);
                }
            }
        }
        if let Some(d) = dhcp {
            let _ = d.shutdown().await;
        }
        v6.stop().await;
        uplink::stop(uplink_client);
        ntp_client.stop();
        uplink6::stop(uplink6_client);
        tracing::info!("stopping; the ruleset stays in place");
        crate::logship::stop(shippers, Duration::from_secs(3)).await;
    });
    let _ = tx.send(Job::Shutdown);
    let _ = engine_thread.join();
    let _ = std::fs::remove_file(crate::control::socket_path(&state_dir));
    let _ = std::fs::remove_file(state_dir.join("ready"));
    Ok(())
}

#[cfg(test)]
mod follow_tests {
    use super::*;

    /// A lease event (the stream a busy DHCP server sends) is handled without building the
    /// plan again for the followers; jobs that can change the config still are followed.
    #[test]
    fn lease_events_are_not_followed_by_a_plan_rebuild() {
        let lease = crate::dhcp::Lease {
            segment: "lan".into(),
            addr: std::net::Ipv4Addr::new(198, 18, 0, 10),
            mac: [2, 0, 0, 0, 0, 1],
            client_id: None,
            hostname: None,
            group: None,
            expires: 4_000_000_000,
            state: crate::dhcp::LeaseState::Bound,
        };
        let ev = crate::dhcp::LeaseEvent {
            kind: crate::dhcp::LeaseEventKind::Bound,
            lease,
        };
        assert!(!may_change_config(&Job::Lease(ev)));
        assert!(!may_change_config(&Job::Quarantine(
            std::net::Ipv4Addr::new(198, 18, 0, 11).into()
        )));
        assert!(may_change_config(&Job::Reload));
        assert!(may_change_config(&Job::Check));
        assert!(may_change_config(&Job::Delegated(None)));
    }
}
