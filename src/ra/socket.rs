//! The socket layer of the RA sender: one raw ICMPv6 socket per interface, driving a
//! [`RaScheduler`] with the monotonic clock.
//!
//! The socket is bound to the interface, receives only router solicitations (ICMP6_FILTER:
//! router advertisements from the segment are dropped by the kernel and never read), joins
//! ff02::2 (all-routers) to hear them, and sends to ff02::1 with hop limit 255 from the
//! interface's link-local address (the kernel picks it for a link-scope destination). On
//! start the interface's `accept_ra` is set to 0: the gateway never takes RAs on a port it
//! advertises on.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::core::{RaConfig, RaScheduler};
use super::packet::ROUTER_SOLICIT;

/// All-nodes link-local multicast.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// All-routers link-local multicast.
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

enum Ctl {
    Update(RaConfig),
    Stop(oneshot::Sender<()>),
}

/// A running RA sender on one interface.
pub struct RaHandle {
    interface: String,
    ctl: mpsc::UnboundedSender<Ctl>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for RaHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaHandle")
            .field("interface", &self.interface)
            .finish()
    }
}

fn open_socket(interface: &str) -> io::Result<(Socket, u32)> {
    let ifindex = crate::sys::icmp6::if_index(interface)?;
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    s.bind_device(Some(interface.as_bytes()))?;
    crate::sys::icmp6::pass_only_types(&s, &[ROUTER_SOLICIT])?;
    crate::sys::icmp6::recv_hop_limit(&s)?;
    s.set_multicast_hops_v6(255)?;
    s.set_unicast_hops_v6(255)?;
    s.set_multicast_loop_v6(false)?;
    s.set_multicast_if_v6(ifindex)?;
    // With forwarding on the kernel has joined all-routers already: EADDRINUSE is fine.
    if let Err(e) = s.join_multicast_v6(&ALL_ROUTERS, ifindex)
        && e.raw_os_error() != Some(libc::EADDRINUSE)
    {
        return Err(e);
    }
    s.set_nonblocking(true)?;
    Ok((s, ifindex))
}

fn refuse_ras(interface: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{interface}/accept_ra");
    if let Err(e) = std::fs::write(&path, "0") {
        tracing::warn!(interface, error = %e, "could not set accept_ra=0");
    }
}

/// Start advertising `cfg` on `interface` (the first RA goes out at once). When the
/// configuration has no source link-layer address the interface's MAC is used.
pub fn spawn(interface: &str, mut cfg: RaConfig) -> io::Result<RaHandle> {
    let (sock, ifindex) = open_socket(interface)?;
    if cfg.source_lladdr.is_none() {
        cfg.source_lladdr = crate::sys::icmp6::hw_addr(interface).ok();
    }
    refuse_ras(interface);
    let fd = crate::sys::icmp6::async_socket(sock)?;
    let (ctl, rx) = mpsc::unbounded_channel();
    let name = interface.to_string();
    let seed =
        crate::dhcp::leases::unix_now() ^ (u64::from(ifindex) << 32) ^ std::process::id() as u64;
    let task = tokio::spawn(run(name.clone(), fd, ifindex, cfg, rx, seed));
    Ok(RaHandle {
        interface: interface.to_string(),
        ctl,
        task,
    })
}

impl RaHandle {
    /// The interface advertised on.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Advertise a new configuration (prefixes that are gone are deprecated).
    pub fn update(&self, cfg: RaConfig) {
        let _ = self.ctl.send(Ctl::Update(cfg));
    }

    /// Send the final RA (router lifetime 0) and stop.
    pub async fn stop(self) {
        let (tx, rx) = oneshot::channel();
        if self.ctl.send(Ctl::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
        let _ = self.task.await;
    }
}

fn send(fd: &AsyncFd<Socket>, ifindex: u32, interface: &str, pkt: &[u8]) {
    let to = SockAddr::from(SocketAddrV6::new(ALL_NODES, 0, 0, ifindex));
    if let Err(e) = fd.get_ref().send_to(pkt, &to) {
        tracing::warn!(interface, error = %e, "router advertisement not sent");
    } else {
        tracing::debug!(interface, bytes = pkt.len(), "router advertisement sent");
    }
}

async fn run(
    interface: String,
    fd: AsyncFd<Socket>,
    ifindex: u32,
    cfg: RaConfig,
    mut rx: mpsc::UnboundedReceiver<Ctl>,
    seed: u64,
) {
    let start = Instant::now();
    let now = || start.elapsed();
    let mut sched = RaScheduler::new(cfg, now(), seed);
    tracing::info!(interface, "router advertisements started");
    let mut buf = [0u8; 1500];
    loop {
        while let Some(pkt) = sched.poll(now()) {
            send(&fd, ifindex, &interface, &pkt);
        }
        let at = sched.poll_at().unwrap_or(now() + Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep_until(start + at) => {}
            r = fd.readable() => {
                let Ok(mut guard) = r else { continue };
                loop {
                    match crate::sys::icmp6::recv_from_hop_limit(fd.get_ref(), &mut buf) {
                        Ok((n, src, hop)) => {
                            if let Err(e) = sched.on_solicit(now(), &buf[..n], hop.unwrap_or(0), *src.ip()) {
                                tracing::info!(
                                    interface,
                                    src = %src.ip(),
                                    error = %e,
                                    "router solicitation ignored"
                                );
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            guard.clear_ready();
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(interface, error = %e, "router solicitation socket");
                            guard.clear_ready();
                            break;
                        }
                    }
                }
            }
            c = rx.recv() => match c {
                Some(Ctl::Update(cfg)) => sched.update(cfg, now()),
                Some(Ctl::Stop(done)) => {
                    let pkt = sched.stop(now());
                    send(&fd, ifindex, &interface, &pkt);
                    tracing::info!(interface, "router advertisements stopped (final RA, router lifetime 0)");
                    let _ = done.send(());
                    return;
                }
                None => {
                    let pkt = sched.stop(now());
                    send(&fd, ifindex, &interface, &pkt);
                    return;
                }
            },
        }
    }
}
