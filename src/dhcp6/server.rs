//! Thin tokio socket layer around [`Server6`]: one UDP socket per segment, bound to
//! `[::]:547` on the segment's interface (SO_BINDTODEVICE) and joined to
//! All_DHCP_Relay_Agents_and_Servers (ff02::1:2) there, so a packet is always served from
//! the pool of the segment it arrived on. Lease changes go to the journal first; the reply
//! is sent only once they are durable.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::Dhcp6Error;
use super::config::SegmentV6;
use super::core::Server6;
use super::leases::Lease6;
use crate::dhcp::leases::{LeaseStore, StoreOptions, read_journal, unix_now};

/// All_DHCP_Relay_Agents_and_Servers.
pub const ALL_DHCP_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
/// File of the server DUID in the state directory (hex).
pub const DUID_FILE: &str = "dhcp6.duid";
const EXPIRE_INTERVAL: Duration = Duration::from_secs(5);

struct Segment {
    interface: String,
    stop: Arc<Notify>,
    task: JoinHandle<()>,
}

struct Shared {
    core: Mutex<Server6>,
    store: LeaseStore<Lease6>,
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, Server6> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle of a running DHCPv6 server.
pub struct Dhcp6Handle {
    shared: Arc<Shared>,
    segments: Mutex<HashMap<String, Segment>>,
    expirer: JoinHandle<()>,
}

/// The server DUID kept in `state_dir` (DUID-UUID, RFC 6355, from random bytes), created
/// and written durably on first use so that clients keep talking to the same server.
pub fn load_or_create_duid(state_dir: &Path) -> Result<Vec<u8>, Dhcp6Error> {
    let path = state_dir.join(DUID_FILE);
    let err = |source| Dhcp6Error::Duid {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let s = s.trim();
            let bytes: Option<Vec<u8>> = (s.len() % 2 == 0)
                .then(|| {
                    (0..s.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                        .collect()
                })
                .flatten();
            match bytes {
                Some(b) if (3..=super::core::MAX_DUID).contains(&b.len()) => return Ok(b),
                _ => {
                    tracing::warn!(path = %path.display(), "server DUID file unreadable; making a new DUID")
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut uuid = [0u8; 16];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut uuid))
        .map_err(err)?;
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    let mut duid = vec![0, 4];
    duid.extend_from_slice(&uuid);
    std::fs::create_dir_all(state_dir).map_err(err)?;
    let hex: String = duid.iter().map(|b| format!("{b:02x}")).collect();
    crate::sys::fs::write_atomic(&path, format!("{hex}\n").as_bytes(), 0o644).map_err(err)?;
    Ok(duid)
}

/// The live DHCPv6 leases of a state directory, without opening it for writing.
pub fn read_leases6(state_dir: &Path, now: u64) -> Result<Vec<Lease6>, Dhcp6Error> {
    Ok(read_journal::<Lease6>(state_dir, now)?)
}

/// Open the DHCPv6 journal and DUID in `state_dir` and serve `segments`. Must be called
/// inside a tokio runtime.
pub async fn serve6(
    segments: Vec<SegmentV6>,
    state_dir: &Path,
    store_opts: StoreOptions,
) -> Result<Dhcp6Handle, Dhcp6Error> {
    let dir = state_dir.to_path_buf();
    let (store, leases, duid) = tokio::task::spawn_blocking(move || {
        let duid = load_or_create_duid(&dir)?;
        let (s, l) = LeaseStore::<Lease6>::open_journal(&dir, store_opts)?;
        Ok::<_, Dhcp6Error>((s, l, duid))
    })
    .await
    .map_err(|e| Dhcp6Error::Runtime(e.to_string()))??;
    tracing::info!(leases = leases.len(), dir = %state_dir.display(), "DHCPv6 lease store loaded");
    let mut core = Server6::new(duid);
    core.load_leases(leases);
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        store,
    });
    let expirer = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRE_INTERVAL);
            loop {
                tick.tick().await;
                for l in shared.core().expire(unix_now()) {
                    tracing::info!(segment = %l.segment, addr = %l.addr, "DHCPv6 lease expired");
                }
            }
        })
    };
    let h = Dhcp6Handle {
        shared,
        segments: Mutex::new(HashMap::new()),
        expirer,
    };
    for s in segments {
        h.add_segment(s)?;
    }
    Ok(h)
}

fn open_socket(iface: &str) -> io::Result<UdpSocket> {
    let ifindex = crate::sys::icmp6::if_index(iface)?;
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(true)?;
    s.set_reuse_address(true)?;
    let _ = s.set_recv_buffer_size(1 << 20);
    s.bind_device(Some(iface.as_bytes()))?;
    s.set_multicast_loop_v6(false)?;
    s.set_multicast_if_v6(ifindex)?;
    s.join_multicast_v6(&ALL_DHCP_SERVERS, ifindex)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 547, 0, 0)).into())?;
    UdpSocket::from_std(s.into())
}

impl Dhcp6Handle {
    fn segments(&self) -> MutexGuard<'_, HashMap<String, Segment>> {
        self.segments.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The server DUID.
    pub fn duid(&self) -> Vec<u8> {
        self.shared.core().duid().to_vec()
    }

    /// Serve a segment, or update it (the socket is reopened only when the interface
    /// changed; a failure leaves the segment as it was).
    pub fn add_segment(&self, seg: SegmentV6) -> Result<(), Dhcp6Error> {
        let name = seg.segment.clone();
        let iface = seg.interface.clone();
        let mut segs = self.segments();
        if let Some(s) = segs.get(&name)
            && s.interface == iface
            && !s.task.is_finished()
        {
            self.shared.core().add_segment(seg);
            tracing::info!(segment = %name, "DHCPv6 segment updated");
            return Ok(());
        }
        let sock = open_socket(&iface).map_err(|source| Dhcp6Error::Socket {
            segment: name.clone(),
            interface: iface.clone(),
            source,
        })?;
        if let Some(old) = segs.remove(&name) {
            old.stop.notify_one();
            old.task.abort();
        }
        self.shared.core().add_segment(seg);
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(run_segment(
            self.shared.clone(),
            name.clone(),
            Arc::new(sock),
            stop.clone(),
        ));
        tracing::info!(segment = %name, interface = %iface, "DHCPv6 serving segment");
        segs.insert(
            name,
            Segment {
                interface: iface,
                stop,
                task,
            },
        );
        Ok(())
    }

    /// Stop serving a segment; its leases are kept.
    pub async fn remove_segment(&self, name: &str) -> Result<(), Dhcp6Error> {
        let seg = self
            .segments()
            .remove(name)
            .ok_or_else(|| Dhcp6Error::NoSuchSegment(name.to_string()))?;
        seg.stop.notify_one();
        let _ = seg.task.await;
        self.shared.core().remove_segment(name);
        Ok(())
    }

    /// Names of the served segments, sorted.
    pub fn served_segments(&self) -> Vec<String> {
        let mut v: Vec<String> = self.segments().keys().cloned().collect();
        v.sort();
        v
    }

    /// Every lease record, sorted by segment and address.
    pub fn leases(&self) -> Vec<Lease6> {
        self.shared.core().leases().sorted()
    }

    /// Stop every segment.
    pub async fn shutdown(self) {
        let segs: Vec<Segment> = self.segments().drain().map(|(_, s)| s).collect();
        for s in &segs {
            s.stop.notify_one();
        }
        for s in segs {
            let _ = s.task.await;
        }
        self.expirer.abort();
    }
}

impl Drop for Dhcp6Handle {
    fn drop(&mut self) {
        for s in self.segments().values() {
            s.task.abort();
        }
        self.expirer.abort();
    }
}

async fn run_segment(shared: Arc<Shared>, seg: String, sock: Arc<UdpSocket>, stop: Arc<Notify>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, src) = tokio::select! {
            _ = stop.notified() => break,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(segment = %seg, error = %e, "DHCPv6 recv failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let SocketAddr::V6(src) = src else { continue };
        let (outcome, ticket) = {
            let mut core = shared.core();
            let mut o = core.handle_packet(unix_now(), &seg, src, &buf[..n]);
            let t = (!o.changes.is_empty())
                .then(|| shared.store.commit(std::mem::take(&mut o.changes)));
            (o, t)
        };
        if let Some(why) = &outcome.refused {
            tracing::warn!(segment = %seg, src = %src.ip(), "{why}");
        }
        let Some((mt, payload)) = outcome.reply else {
            continue;
        };
        let sock = sock.clone();
        let seg = seg.clone();
        let send = async move {
            match sock.send_to(&payload, SocketAddr::V6(src)).await {
                Ok(_) => tracing::debug!(segment = %seg, to = %src, msg_type = ?mt, "DHCPv6 sent"),
                Err(e) => {
                    tracing::warn!(segment = %seg, to = %src, error = %e, "DHCPv6 send failed")
                }
            }
        };
        match ticket {
            None => send.await,
            Some(ticket) => {
                tokio::spawn(async move {
                    match ticket.wait().await {
                        Ok(()) => send.await,
                        Err(e) => {
                            tracing::error!(error = %e, "DHCPv6 lease not durable; reply withheld")
                        }
                    }
                });
            }
        }
    }
}
