//! Thin tokio socket layer around the sans-IO core.
//!
//! One UDP socket per segment (bound to 0.0.0.0:67 with SO_BINDTODEVICE and
//! SO_BROADCAST). Each wake-up reads every queued datagram with one recvmmsg
//! (up to 32); the core decides each of them, and the lease changes of the
//! whole batch go to the lease store as one commit (one write and one
//! fdatasync, shared with the other segments' commits by group commit). Only
//! once they are durable are the replies of that batch sent (sendmmsg) and
//! the lease events reported; replies that change no lease (OFFER, NAK) go
//! out at once.
//!
//! Clients without an address that did not ask for a broadcast reply get a
//! unicast frame to their chaddr: the server adds a (non-permanent) ARP
//! entry yiaddr -> chaddr on the segment interface with SIOCSARP and sends a
//! normal UDP datagram to yiaddr:68. If that fails the reply is broadcast.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::DhcpError;
use super::config::PoolConfig;
use super::core::{Destination, Outcome, Reply, RxInfo, Server};
use super::leases::{
    CommitTicket, Lease, LeaseEvent, LeaseStore, StoreError, StoreOptions, StoreStats, unix_now,
};
use dhcproto::v4::MessageType;

/// Where lease events go (bound, released, declined, expired).
pub type EventSender = mpsc::UnboundedSender<LeaseEvent>;

/// How often bindings that ran out are looked for.
const EXPIRE_INTERVAL: Duration = Duration::from_secs(5);

struct Segment {
    interface: String,
    stop: Arc<Notify>,
    task: JoinHandle<()>,
}

struct Shared {
    core: Mutex<Server>,
    store: LeaseStore,
    events: Option<EventSender>,
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, Server> {
        // A panic while holding the lock cannot leave the core half-updated
        // in a way that matters more than stopping service would.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, events: Vec<LeaseEvent>) {
        if let Some(tx) = &self.events {
            for e in events {
                let _ = tx.send(e);
            }
        }
    }
}

/// Which way a counted DHCP message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Received,
    Sent,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Received => "received",
            Direction::Sent => "sent",
        }
    }
}

/// Messages counted since this process started, by segment, direction and type: the
/// lower-case DHCP message type (`discover`, `request`, `offer`, `ack`, ...), or `malformed`
/// for a received packet without one (too short, not DHCP, undecodable). A message is counted
/// as sent once its datagram left the socket. Process-wide (every server of the process adds
/// to it), so that the metrics can be read from any thread.
#[derive(Debug, Default)]
pub struct MessageCounts {
    counts: Mutex<BTreeMap<(String, Direction, &'static str), u64>>,
}

impl MessageCounts {
    fn add(&self, segment: &str, dir: Direction, kind: &'static str) {
        let mut g = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match g.get_mut(&(segment.to_string(), dir, kind)) {
            Some(n) => *n += 1,
            None => {
                g.insert((segment.to_string(), dir, kind), 1);
            }
        }
    }

    /// Every count: (segment, direction, type, messages), sorted.
    pub fn snapshot(&self) -> Vec<(String, Direction, &'static str, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((s, d, k), n)| (s.clone(), *d, *k, *n))
            .collect()
    }
}

/// The DHCP message counters of this process.
pub fn message_counts() -> &'static MessageCounts {
    static COUNTS: OnceLock<MessageCounts> = OnceLock::new();
    COUNTS.get_or_init(MessageCounts::default)
}

/// The name a message type is counted under.
pub fn type_name(mt: MessageType) -> &'static str {
    match mt {
        MessageType::Discover => "discover",
        MessageType::Offer => "offer",
        MessageType::Request => "request",
        MessageType::Decline => "decline",
        MessageType::Ack => "ack",
        MessageType::Nak => "nak",
        MessageType::Release => "release",
        MessageType::Inform => "inform",
        _ => "other",
    }
}

/// Handle of a running DHCP server.
pub struct DhcpHandle {
    shared: Arc<Shared>,
    segments: Mutex<HashMap<String, Segment>>,
    expirer: JoinHandle<()>,
}

/// Open the lease store in `state_dir`, load its leases, and start serving
/// `pools`. Must be called inside a tokio runtime.
pub async fn serve(
    pools: Vec<PoolConfig>,
    state_dir: &Path,
    events: Option<EventSender>,
) -> Result<DhcpHandle, DhcpError> {
    serve_with(pools, state_dir, events, StoreOptions::default()).await
}

/// [`serve`] with explicit lease store options.
pub async fn serve_with(
    pools: Vec<PoolConfig>,
    state_dir: &Path,
    events: Option<EventSender>,
    store_opts: StoreOptions,
) -> Result<DhcpHandle, DhcpError> {
    let dir = state_dir.to_path_buf();
    let (store, leases) = tokio::task::spawn_blocking(move || LeaseStore::open(&dir, store_opts))
        .await
        .map_err(|e| DhcpError::Runtime(e.to_string()))??;
    tracing::info!(leases = leases.len(), dir = %state_dir.display(), "lease store loaded");
    let mut core = Server::new();
    core.load_leases(leases);
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        store,
        events,
    });
    let expirer = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRE_INTERVAL);
            loop {
                tick.tick().await;
                let ev = shared.core().expire(unix_now());
                shared.emit(ev);
            }
        })
    };
    let handle = DhcpHandle {
        shared,
        segments: Mutex::new(HashMap::new()),
        expirer,
    };
    for p in pools {
        handle.add_pool(p)?;
    }
    Ok(handle)
}

impl DhcpHandle {
    fn segments(&self) -> MutexGuard<'_, HashMap<String, Segment>> {
        self.segments.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start serving a pool, or update the pool of an already served
    /// segment (the socket is reopened only if the interface changed).
    /// Other segments keep running.
    pub fn add_pool(&self, pool: PoolConfig) -> Result<(), DhcpError> {
        let seg = pool.segment.clone();
        let iface = pool.interface.clone();
        let mut segs = self.segments();
        if let Some(s) = segs.get(&seg)
            && s.interface == iface
            && !s.task.is_finished()
        {
            self.shared.core().add_pool(pool);
            tracing::info!(segment = %seg, "DHCP pool updated");
            return Ok(());
        }
        // Open the new socket before stopping the old one, so a failure
        // leaves the segment served as before.
        let socket = open_socket(&iface).map_err(|source| DhcpError::Socket {
            segment: seg.clone(),
            interface: iface.clone(),
            source,
        })?;
        if let Some(old) = segs.remove(&seg) {
            old.stop.notify_one();
            old.task.abort();
        }
        self.shared.core().add_pool(pool);
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(run_segment(
            self.shared.clone(),
            seg.clone(),
            iface.clone(),
            Arc::new(socket),
            stop.clone(),
        ));
        tracing::info!(segment = %seg, interface = %iface, "DHCP serving segment");
        segs.insert(
            seg,
            Segment {
                interface: iface,
                stop,
                task,
            },
        );
        Ok(())
    }

    /// Stop serving a segment; the others keep running. Its leases are
    /// kept.
    pub async fn remove_pool(&self, segment: &str) -> Result<(), DhcpError> {
        let seg = self
            .segments()
            .remove(segment)
            .ok_or_else(|| DhcpError::NoSuchSegment(segment.to_string()))?;
        seg.stop.notify_one();
        let _ = seg.task.await;
        self.shared.core().remove_pool(segment);
        tracing::info!(segment, "DHCP segment stopped");
        Ok(())
    }

    /// Names of the served segments.
    pub fn served_segments(&self) -> Vec<String> {
        let mut v: Vec<String> = self.segments().keys().cloned().collect();
        v.sort();
        v
    }

    /// All lease records known to the server (segment, address, MAC,
    /// client id, hostname, expiry, state), sorted.
    pub fn leases(&self) -> Vec<Lease> {
        self.shared.core().leases().sorted()
    }

    /// Lease store counters (commits, writes, fsyncs, compactions).
    pub fn store_stats(&self) -> StoreStats {
        self.shared.store.stats()
    }

    /// Stop all segments. Commits already queued are still written.
    pub async fn shutdown(self) -> Result<(), DhcpError> {
        let segs: Vec<Segment> = self.segments().drain().map(|(_, s)| s).collect();
        for s in &segs {
            s.stop.notify_one();
        }
        for s in segs {
            let _ = s.task.await;
        }
        self.expirer.abort();
        Ok(())
    }
}

impl Drop for DhcpHandle {
    fn drop(&mut self) {
        for s in self.segments().values() {
            s.task.abort();
        }
        self.expirer.abort();
    }
}

fn open_socket(iface: &str) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    // Room for bursts (many clients at once after a power cut); the kernel
    // caps it at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(1 << 20);
    s.bind_device(Some(iface.as_bytes()))?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 67)).into())?;
    UdpSocket::from_std(s.into())
}

/// Datagrams read per wake-up (recvmmsg) and replies sent per call (sendmmsg).
const BATCH: usize = 32;

async fn run_segment(
    shared: Arc<Shared>,
    seg: String,
    iface: String,
    sock: Arc<UdpSocket>,
    stop: Arc<Notify>,
) {
    let mut bufs = vec![vec![0u8; 4096]; BATCH];
    let mut got: Vec<(usize, SocketAddrV4)> = Vec::with_capacity(BATCH);
    // Commits on their way to disk, oldest first (the store makes them durable in order), with
    // the replies and events each one holds back. Waited for here rather than by a task per
    // batch: no spawn and no hand-over to another worker per lease.
    let mut pending: VecDeque<Pending> = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.notified() => break,
            r = std::future::poll_fn(|cx| pending.front_mut().map_or(
                std::task::Poll::Pending,
                |p| p.ticket.poll_done(cx),
            )), if !pending.is_empty() => {
                if let Some(p) = pending.pop_front() {
                    p.finish(r, &shared, &sock, &iface).await;
                }
                continue;
            }
            r = sock.readable() => if let Err(e) = r {
                tracing::warn!(segment = %seg, error = %e, "recv failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            },
        }
        // Everything queued, in one call. A batch that did not fill the buffers drained the
        // socket: it reports WouldBlock to tokio so that readiness is cleared now rather than
        // by one more empty recvmmsg (tokio clears it only if no new readiness event came in
        // meanwhile, so a datagram that arrives after the call still wakes this loop).
        let mut drained = false;
        let r = sock.try_io(Interest::READABLE, || {
            let n = crate::sys::socket::recv_batch(&*sock, &mut bufs, &mut got)?;
            if n < BATCH {
                drained = true;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match r {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && drained => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::warn!(segment = %seg, error = %e, "recv failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let now = unix_now();
        // Decide every packet of the batch and queue their journal records as one commit,
        // under the core lock, so that records reach the journal in decision order. Replies
        // of packets that changed no lease go out at once; the others once the commit is
        // on disk.
        let mut now_replies: Vec<Reply> = Vec::new();
        let mut now_events: Vec<LeaseEvent> = Vec::new();
        let mut durable_replies: Vec<Reply> = Vec::new();
        let mut durable_events: Vec<LeaseEvent> = Vec::new();
        let ticket = {
            let mut core = shared.core();
            let mut changes: Vec<Lease> = Vec::new();
            for (i, &(n, src)) in got.iter().enumerate() {
                let rx = RxInfo::new(seg.clone(), src);
                let mut o: Outcome = core.handle_packet(now, &rx, &bufs[i][..n]);
                message_counts().add(
                    &seg,
                    Direction::Received,
                    o.received.map_or("malformed", type_name),
                );
                if o.changes.is_empty() {
                    now_replies.append(&mut o.replies);
                    now_events.append(&mut o.events);
                } else {
                    changes.append(&mut o.changes);
                    durable_replies.append(&mut o.replies);
                    durable_events.append(&mut o.events);
                }
            }
            (!changes.is_empty()).then(|| shared.store.commit(changes))
        };
        if !now_replies.is_empty() {
            send_all(&sock, &iface, &now_replies).await;
        }
        shared.emit(now_events);
        if let Some(ticket) = ticket {
            // Durability is waited for by this loop's select, so that other requests keep
            // coming in meanwhile and share the next fsync.
            pending.push_back(Pending {
                ticket,
                replies: durable_replies,
                events: durable_events,
            });
        }
    }
    // Stopping: what was already decided is still answered once it is on disk.
    for mut p in pending {
        let r = std::future::poll_fn(|cx| p.ticket.poll_done(cx)).await;
        p.finish(r, &shared, &sock, &iface).await;
    }
}

/// A commit on its way to disk and what waits for it.
struct Pending {
    ticket: CommitTicket,
    replies: Vec<Reply>,
    events: Vec<LeaseEvent>,
}

impl Pending {
    /// The commit is done: send its replies and report its events once it is durable.
    async fn finish(
        self,
        r: Result<(), StoreError>,
        shared: &Shared,
        sock: &UdpSocket,
        iface: &str,
    ) {
        match r {
            Ok(()) => {
                send_all(sock, iface, &self.replies).await;
                shared.emit(self.events);
            }
            Err(e) => tracing::error!(error = %e, "lease not durable; reply withheld"),
        }
    }
}

/// Send replies in order: the ARP entries for unicast-to-chaddr replies first, then the
/// datagrams in batches (sendmmsg); a full send buffer is waited out one datagram at a time.
async fn send_all(sock: &UdpSocket, iface: &str, replies: &[Reply]) {
    let dests: Vec<SocketAddrV4> = replies
        .iter()
        .map(|r| {
            let mut dest = r.dest;
            if let Destination::UnicastL2 { ip, mac } = dest
                && let Err(e) = set_arp(sock, iface, ip, mac)
            {
                tracing::debug!(%ip, error = %e, "cannot add ARP entry; broadcasting instead");
                dest = Destination::Broadcast;
            }
            dest.socket_addr()
        })
        .collect();
    let sent = |r: &Reply, to: SocketAddrV4| {
        message_counts().add(&r.segment, Direction::Sent, type_name(r.msg_type));
        tracing::debug!(
            xid = format_args!("{:#010x}", r.xid),
            msg_type = ?r.msg_type,
            to = %to,
            segment = %r.segment,
            "sent"
        )
    };
    let mut i = 0;
    while i < replies.len() {
        let msgs: Vec<(&[u8], SocketAddrV4)> = replies[i..]
            .iter()
            .zip(&dests[i..])
            .map(|(r, d)| (r.payload.as_slice(), *d))
            .collect();
        match sock.try_io(Interest::WRITABLE, || {
            crate::sys::socket::send_batch(sock, &msgs)
        }) {
            Ok(n) if n > 0 => {
                for k in i..i + n {
                    sent(&replies[k], dests[k]);
                }
                i += n;
            }
            Ok(_) => i += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let (r, to) = (&replies[i], dests[i]);
                match sock.send_to(&r.payload, to).await {
                    Ok(_) => sent(r, to),
                    Err(e) => tracing::warn!(xid = r.xid, to = %to, error = %e, "send failed"),
                }
                i += 1;
            }
            Err(e) => {
                let r = &replies[i];
                tracing::warn!(xid = r.xid, to = %dests[i], error = %e, "send failed");
                i += 1;
            }
        }
    }
}

/// Add a completed, non-permanent ARP entry ip -> mac on `iface`
/// (SIOCSARP), so that a unicast datagram reaches a client that has no
/// address yet and cannot answer ARP.
fn set_arp(sock: &UdpSocket, iface: &str, ip: Ipv4Addr, mac: [u8; 6]) -> io::Result<()> {
    crate::sys::socket::set_arp(sock, iface, ip, mac)
}
