//! Sans-IO DHCPv4 server core (RFC 2131 / RFC 2132).
//!
//! No sockets, no clocks, no files: the caller passes the current time
//! (Unix seconds), the segment a packet arrived on with its source address,
//! and the packet. The core answers with an [`Outcome`]: lease changes that
//! must be made durable first, then the replies to send (encoded messages
//! with their destination), and the lease events to report once durable.
//!
//! Every packet that is not answered is logged at debug level with the
//! reason, its xid, chaddr and message type. No input makes the core panic.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use dhcproto::v4::{
    DhcpOption, DhcpOptions, Flags, HType, Message, MessageType, Opcode, OptionCode, UnknownOption,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use super::config::PoolConfig;
use super::leases::{ClientKey, Lease, LeaseDb, LeaseEvent, LeaseEventKind, LeaseState, mac_serde};

/// DHCP server port.
pub const SERVER_PORT: u16 = 67;
/// DHCP client port.
pub const CLIENT_PORT: u16 = 68;
/// Smallest maximum message size a client may announce (RFC 2132 9.10).
pub const MIN_MAX_MESSAGE_SIZE: u16 = 576;
/// IP + UDP header size subtracted from the maximum message size.
const IP_UDP_HEADERS: usize = 28;
/// BOOTP minimum message length; replies are padded to it.
const BOOTP_MIN_LEN: usize = 300;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Minimum interval between two "pool exhausted" log lines of one segment.
pub const EXHAUSTION_LOG_INTERVAL: u64 = 60;

/// Where a packet came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxInfo {
    /// Segment whose socket received the packet.
    pub segment: String,
    /// Source address and port of the datagram.
    pub src: SocketAddrV4,
}

impl RxInfo {
    /// Convenience constructor.
    pub fn new(segment: impl Into<String>, src: SocketAddrV4) -> Self {
        RxInfo {
            segment: segment.into(),
            src,
        }
    }
}

/// Where to send a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:68 on the receiving interface.
    Broadcast,
    /// Unicast to ip:68 (the client has a configured address).
    Unicast(Ipv4Addr),
    /// Unicast to ip:68 for a client that has no address yet: the frame
    /// must go to `mac` at link level (the client cannot answer ARP).
    UnicastL2 {
        /// Address being offered/acknowledged (yiaddr).
        ip: Ipv4Addr,
        /// Client hardware address (chaddr).
        mac: [u8; 6],
    },
    /// To a relay agent at giaddr:67.
    Relay(Ipv4Addr),
}

impl Destination {
    /// UDP destination socket address.
    pub fn socket_addr(&self) -> SocketAddrV4 {
        match *self {
            Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT),
            Destination::Unicast(ip) | Destination::UnicastL2 { ip, .. } => {
                SocketAddrV4::new(ip, CLIENT_PORT)
            }
            Destination::Relay(ip) => SocketAddrV4::new(ip, SERVER_PORT),
        }
    }
}

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Pool (segment) that answered.
    pub segment: String,
    /// Where to send it.
    pub dest: Destination,
    /// Message type (OFFER, ACK, NAK).
    pub msg_type: MessageType,
    /// Transaction id.
    pub xid: u32,
    /// Encoded DHCP message (UDP payload).
    pub payload: Vec<u8>,
}

impl Reply {
    /// Decode the payload again (tests and logging).
    pub fn message(&self) -> Option<Message> {
        Message::decode(&mut Decoder::new(&self.payload)).ok()
    }
}

/// What the core wants done for one received packet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Lease records to write durably BEFORE any reply is sent.
    pub changes: Vec<Lease>,
    /// Replies, to send once `changes` are durable.
    pub replies: Vec<Reply>,
    /// Lease events to report once `changes` are durable.
    pub events: Vec<LeaseEvent>,
    /// Why the packet got no answer, when it did not.
    pub ignored: Option<String>,
    /// The pool was exhausted and this call decided to log it (at most
    /// once per [`EXHAUSTION_LOG_INTERVAL`] per segment).
    pub exhaustion_logged: bool,
    /// The type of the received message, when it was decoded far enough to
    /// have one (answered or not).
    pub received: Option<MessageType>,
}

#[derive(Debug, Clone)]
struct Offer {
    key: ClientKey,
    expires: u64,
}

/// Pending offers, indexed both ways: a client holds at most one, an address is offered to at
/// most one client. Every lookup is O(1), whatever the number of clients in flight.
#[derive(Debug, Clone, Default)]
struct Offers {
    by_addr: HashMap<Ipv4Addr, Offer>,
    by_key: HashMap<ClientKey, Ipv4Addr>,
    last_purge: u64,
}

impl Offers {
    fn get(&self, addr: &Ipv4Addr) -> Option<&Offer> {
        self.by_addr.get(addr)
    }

    /// The address offered to this client, with its offer.
    fn of_client(&self, key: &ClientKey) -> Option<(Ipv4Addr, &Offer)> {
        let a = self.by_key.get(key)?;
        self.by_addr.get(a).map(|o| (*a, o))
    }

    fn remove_addr(&mut self, addr: &Ipv4Addr) {
        if let Some(o) = self.by_addr.remove(addr)
            && self.by_key.get(&o.key) == Some(addr)
        {
            self.by_key.remove(&o.key);
        }
    }

    fn remove_client(&mut self, key: &ClientKey) {
        if let Some(a) = self.by_key.remove(key)
            && self.by_addr.get(&a).is_some_and(|o| &o.key == key)
        {
            self.by_addr.remove(&a);
        }
    }

    /// Offer `addr` to `key`, replacing the client's earlier offer and any offer of the address.
    fn insert(&mut self, addr: Ipv4Addr, key: ClientKey, expires: u64) {
        self.remove_client(&key);
        self.remove_addr(&addr);
        self.by_key.insert(key.clone(), addr);
        self.by_addr.insert(addr, Offer { key, expires });
    }

    /// Forget offers that ran out (at most once a second; lookups check expiry themselves).
    fn purge(&mut self, now: u64) {
        if now == self.last_purge {
            return;
        }
        self.last_purge = now;
        self.by_addr.retain(|_, o| o.expires > now);
        let by_addr = &self.by_addr;
        self.by_key.retain(|_, a| by_addr.contains_key(a));
    }
}

#[derive(Debug, Clone)]
struct Pool {
    cfg: Arc<PoolConfig>,
    offers: Offers,
    last_exhaustion_log: Option<u64>,
    /// Where the next scan for a never-used address starts (index into
    /// the dynamic ranges), so that allocation does not rescan every bound
    /// address each time.
    cursor: usize,
}

/// The DHCPv4 server state machine for all pools.
#[derive(Debug, Default)]
pub struct Server {
    pools: HashMap<String, Pool>,
    leases: LeaseDb,
    expired_reported: HashSet<(String, Ipv4Addr)>,
}

/// Facts about the request used for logging and replies.
struct Ctx<'a> {
    msg: &'a Message,
    mt: MessageType,
    mac: [u8; 6],
    client_id: Option<Vec<u8>>,
    key: ClientKey,
    rx: &'a RxInfo,
    /// Relay agent information (option 82) to echo in relayed replies.
    relay_info: Option<DhcpOption>,
}

impl Ctx<'_> {
    fn ignore(&self, reason: impl Into<String>) -> Outcome {
        let reason = reason.into();
        tracing::debug!(
            xid = format_args!("{:#010x}", self.msg.xid()),
            chaddr = %mac_serde::format(&self.mac),
            msg_type = ?self.mt,
            segment = %self.rx.segment,
            src = %self.rx.src,
            reason = %reason,
            "DHCP packet not answered"
        );
        Outcome {
            ignored: Some(reason),
            ..Outcome::default()
        }
    }
}

/// Drop a packet before it is decoded far enough to have a context.
fn ignore_raw(rx: &RxInfo, xid: Option<u32>, reason: impl Into<String>) -> Outcome {
    ignore_raw_chaddr(rx, xid, None, reason)
}

/// Like [`ignore_raw`], naming the packet's raw chaddr when it has one.
fn ignore_raw_chaddr(
    rx: &RxInfo,
    xid: Option<u32>,
    chaddr: Option<&[u8]>,
    reason: impl Into<String>,
) -> Outcome {
    let reason = reason.into();
    let chaddr = chaddr
        .map(|c| {
            c.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        })
        .unwrap_or_default();
    tracing::debug!(
        xid = ?xid,
        chaddr = %chaddr,
        segment = %rx.segment,
        src = %rx.src,
        reason = %reason,
        "DHCP packet dropped"
    );
    Outcome {
        ignored: Some(reason),
        ..Outcome::default()
    }
}

impl Server {
    /// A server with no pools and no leases.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a pool, or replace the pool of the same segment (its pending
    /// offers are dropped; leases are kept).
    pub fn add_pool(&mut self, cfg: PoolConfig) {
        self.pools.insert(
            cfg.segment.clone(),
            Pool {
                cfg: Arc::new(cfg),
                offers: Offers::default(),
                last_exhaustion_log: None,
                cursor: 0,
            },
        );
    }

    /// Stop serving a segment. Its leases stay in the lease index.
    pub fn remove_pool(&mut self, segment: &str) -> Option<PoolConfig> {
        self.pools
            .remove(segment)
            .map(|p| Arc::unwrap_or_clone(p.cfg))
    }

    /// The pool of a segment.
    pub fn pool(&self, segment: &str) -> Option<&PoolConfig> {
        self.pools.get(segment).map(|p| &*p.cfg)
    }

    /// Names of the served segments.
    pub fn segments(&self) -> Vec<String> {
        let mut v: Vec<String> = self.pools.keys().cloned().collect();
        v.sort();
        v
    }

    /// Load leases (from the lease store at start).
    pub fn load_leases(&mut self, leases: impl IntoIterator<Item = Lease>) {
        for l in leases {
            self.leases.upsert(l);
        }
    }

    /// The lease index.
    pub fn leases(&self) -> &LeaseDb {
        &self.leases
    }

    /// Should the exhaustion of `segment` be logged at `now`? Returns true
    /// at most once per [`EXHAUSTION_LOG_INTERVAL`] seconds per segment and
    /// records the decision.
    pub fn exhaustion_should_log(&mut self, segment: &str, now: u64) -> bool {
        let Some(pool) = self.pools.get_mut(segment) else {
            return false;
        };
        should_log(&mut pool.last_exhaustion_log, now)
    }

    /// Report bindings that ran out since the last call (each once). The
    /// records stay so that a returning client gets its address back if it
    /// is still free; the address itself is free for others.
    pub fn expire(&mut self, now: u64) -> Vec<LeaseEvent> {
        let mut out = Vec::new();
        for l in self.leases.iter() {
            if l.state == LeaseState::Bound && l.expires <= now {
                let k = (l.segment.clone(), l.addr);
                if self.expired_reported.insert(k) {
                    out.push(LeaseEvent {
                        kind: LeaseEventKind::Expired,
                        lease: l.clone(),
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.lease.segment, a.lease.addr).cmp(&(&b.lease.segment, b.lease.addr)));
        out
    }

    /// Handle one received UDP payload.
    pub fn handle_packet(&mut self, now: u64, rx: &RxInfo, bytes: &[u8]) -> Outcome {
        let xid = bytes
            .get(4..8)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        if bytes.len() < 240 {
            return ignore_raw(
                rx,
                xid,
                format!("too short for DHCP ({} bytes)", bytes.len()),
            );
        }
        let chaddr = Some(&bytes[28..28 + usize::from(bytes[2].min(16))]);
        if bytes[0] != 1 {
            return ignore_raw_chaddr(
                rx,
                xid,
                chaddr,
                format!("op {} is not BOOTREQUEST", bytes[0]),
            );
        }
        if bytes[236..240] != MAGIC {
            return ignore_raw_chaddr(
                rx,
                xid,
                chaddr,
                "no DHCP magic cookie (plain BOOTP is not served)",
            );
        }
        if bytes[2] > 16 {
            return ignore_raw_chaddr(rx, xid, chaddr, format!("hlen {} > 16", bytes[2]));
        }
        let (clean, relay_info) = sanitize(rx, bytes);
        match Message::decode(&mut Decoder::new(&clean)) {
            Ok(msg) => {
                // Option 82 is echoed verbatim, never parsed.
                let relay_info = relay_info.map(|d| {
                    DhcpOption::Unknown(UnknownOption::new(OptionCode::RelayAgentInformation, d))
                });
                self.handle(now, rx, &msg, relay_info)
            }
            Err(e) => ignore_raw(rx, xid, format!("undecodable: {e}")),
        }
    }

    /// Handle one decoded message.
    pub fn handle_message(&mut self, now: u64, rx: &RxInfo, msg: &Message) -> Outcome {
        let relay_info = msg.opts().get(OptionCode::RelayAgentInformation).cloned();
        self.handle(now, rx, msg, relay_info)
    }

    fn handle(
        &mut self,
        now: u64,
        rx: &RxInfo,
        msg: &Message,
        relay_info: Option<DhcpOption>,
    ) -> Outcome {
        let mut o = self.handle_typed(now, rx, msg, relay_info);
        if let Some(DhcpOption::MessageType(mt)) = msg.opts().get(OptionCode::MessageType) {
            o.received = Some(*mt);
        }
        o
    }

    fn handle_typed(
        &mut self,
        now: u64,
        rx: &RxInfo,
        msg: &Message,
        relay_info: Option<DhcpOption>,
    ) -> Outcome {
        if msg.opcode() != Opcode::BootRequest {
            return ignore_raw(rx, Some(msg.xid()), "not a BOOTREQUEST");
        }
        if msg.hlen() > 16 {
            return ignore_raw(rx, Some(msg.xid()), format!("hlen {} > 16", msg.hlen()));
        }
        // Not `DhcpOptions::msg_type()`: it panics when a caller-built
        // message carries option 53 as an unknown option.
        let Some(DhcpOption::MessageType(mt)) = msg.opts().get(OptionCode::MessageType).cloned()
        else {
            return ignore_raw(rx, Some(msg.xid()), "no DHCP message type option");
        };
        let chaddr = msg.chaddr();
        let mut mac = [0u8; 6];
        let n = chaddr.len().min(6);
        mac[..n].copy_from_slice(&chaddr[..n]);
        let client_id = match msg.opts().get(OptionCode::ClientIdentifier) {
            Some(DhcpOption::ClientIdentifier(id)) if !id.is_empty() => Some(id.clone()),
            _ => None,
        };
        let key = ClientKey::new(client_id.as_deref(), &mac);
        let ctx = Ctx {
            msg,
            mt,
            mac,
            client_id,
            key,
            rx,
            relay_info: relay_info.filter(|_| !msg.giaddr().is_unspecified()),
        };
        if client_id_missing_identity(&ctx) {
            return ctx.ignore("no client identifier and empty chaddr");
        }

        // A packet is served only from the pool of the segment whose socket
        // received it. A giaddr never selects another pool: it is accepted
        // (replies go to the relay) only from the relays listed for this
        // segment, so a host cannot reach another segment's pool or leases
        // by forging one.
        let Some(pool) = self.pools.get(&rx.segment) else {
            return ctx.ignore(format!("no pool on segment {:?}", rx.segment));
        };
        let giaddr = msg.giaddr();
        if !giaddr.is_unspecified() && !pool.cfg.relays.contains(&giaddr) {
            return ctx.ignore(format!(
                "giaddr {giaddr} is not a relay listed for segment {:?}",
                rx.segment
            ));
        }
        let segment = rx.segment.clone();

        match mt {
            MessageType::Discover => self.discover(now, &segment, &ctx),
            MessageType::Request => self.request(now, &segment, &ctx),
            MessageType::Decline => self.decline(now, &segment, &ctx),
            MessageType::Release => self.release(now, &segment, &ctx),
            MessageType::Inform => self.inform(&segment, &ctx),
            other => ctx.ignore(format!("{other:?} is not a client-to-server message")),
        }
    }

    // ---- message handlers -------------------------------------------------

    fn discover(&mut self, now: u64, seg: &str, ctx: &Ctx) -> Outcome {
        let requested = requested_ip(ctx.msg);
        let Some((addr, scanned)) = self.allocate(now, seg, ctx, requested) else {
            let logged = self.exhaustion_should_log(seg, now);
            if logged {
                tracing::warn!(segment = seg, "DHCP pool exhausted: no address to offer");
            }
            let mut o = ctx.ignore("pool exhausted");
            o.exhaustion_logged = logged;
            return o;
        };
        let Some(pool) = self.pools.get_mut(seg) else {
            return ctx.ignore("pool vanished");
        };
        let hold = u64::from(pool.cfg.offer_hold);
        if scanned && let Some(idx) = range_index(&pool.cfg, addr) {
            pool.cursor = idx + 1;
        }
        pool.offers.purge(now);
        pool.offers
            .insert(addr, ctx.key.clone(), now.saturating_add(hold));
        let cfg = pool.cfg.clone();
        let secs = lease_secs(&cfg, ctx.msg);
        let hostname = cfg
            .reservation_for_mac(&ctx.mac)
            .and_then(|r| r.hostname.clone());
        match self.reply(
            &cfg,
            ctx,
            MessageType::Offer,
            addr,
            Some(secs),
            hostname.as_deref(),
        ) {
            Some(r) => Outcome {
                replies: vec![r],
                ..Outcome::default()
            },
            None => ctx.ignore("OFFER does not fit the client's maximum message size"),
        }
    }

    fn request(&mut self, now: u64, seg: &str, ctx: &Ctx) -> Outcome {
        let Some(pool) = self.pools.get(seg) else {
            return ctx.ignore("pool vanished");
        };
        let cfg = pool.cfg.clone();
        let sid = server_id(ctx.msg);
        let requested = requested_ip(ctx.msg);
        let ciaddr = ctx.msg.ciaddr();

        if let Some(sid) = sid {
            // SELECTING
            if sid != cfg.server_addr {
                if let Some(p) = self.pools.get_mut(seg) {
                    p.offers.remove_client(&ctx.key);
                }
                return ctx.ignore(format!("client selected server {sid}, not us"));
            }
            let addr = match requested {
                Some(a) => a,
                None if !ciaddr.is_unspecified() => ciaddr,
                None => return ctx.ignore("SELECTING request without requested address"),
            };
            if !self.may_bind(now, &cfg, ctx, addr) {
                return self.nak(
                    &cfg,
                    ctx,
                    format!("address {addr} is not available to this client"),
                );
            }
            return self.ack(now, &cfg, ctx, addr);
        }

        // INIT-REBOOT (requested address, no ciaddr) or RENEWING/REBINDING
        // (ciaddr, no requested address).
        let (addr, state) = match (requested, ciaddr.is_unspecified()) {
            (Some(a), true) => (a, "INIT-REBOOT"),
            (_, false) => (
                ciaddr,
                if ctx.rx.src.ip().is_unspecified() {
                    "REBINDING"
                } else {
                    "RENEWING/REBINDING"
                },
            ),
            (None, true) => {
                return ctx.ignore("REQUEST without server id, requested address or ciaddr");
            }
        };
        if !cfg.subnet.contains(&addr) {
            return self.nak(
                &cfg,
                ctx,
                format!("{state}: {addr} is not on subnet {}", cfg.subnet),
            );
        }
        if let Some(r) = cfg.reservation_for_mac(&ctx.mac) {
            if r.addr == addr {
                return self.ack(now, &cfg, ctx, addr);
            }
            return self.nak(
                &cfg,
                ctx,
                format!("{state}: client is reserved {}, asked for {addr}", r.addr),
            );
        }
        let record = self.leases.get(seg, addr);
        let mine = record.is_some_and(|l| l.client_key().as_ref() == Some(&ctx.key));
        if mine {
            if self.may_bind(now, &cfg, ctx, addr) {
                return self.ack(now, &cfg, ctx, addr);
            }
            return self.nak(&cfg, ctx, format!("{state}: {addr} is no longer available"));
        }
        if let Some(l) = record
            && (l.is_active(now) || (l.state == LeaseState::Declined && l.expires > now))
        {
            return self.nak(
                &cfg,
                ctx,
                format!("{state}: {addr} is leased to another client"),
            );
        }
        if cfg.reservation_for_addr(addr).is_some() {
            return self.nak(
                &cfg,
                ctx,
                format!("{state}: {addr} is reserved for another client"),
            );
        }
        if !cfg.is_host_addr(addr) {
            return self.nak(
                &cfg,
                ctx,
                format!("{state}: {addr} is not a host address of the pool"),
            );
        }
        if let Some(other) = self.leases.by_client(seg, &ctx.key)
            && other.addr != addr
            && other.is_active(now)
        {
            return self.nak(
                &cfg,
                ctx,
                format!("{state}: client holds {}, asked for {addr}", other.addr),
            );
        }
        ctx.ignore(format!(
            "{state}: no record of this client for {addr}; staying silent"
        ))
    }

    fn decline(&mut self, now: u64, seg: &str, ctx: &Ctx) -> Outcome {
        let Some(cfg) = self.pools.get(seg).map(|p| p.cfg.clone()) else {
            return ctx.ignore("pool vanished");
        };
        if let Some(sid) = server_id(ctx.msg)
            && sid != cfg.server_addr
        {
            return ctx.ignore(format!("DECLINE for server {sid}, not us"));
        }
        let Some(addr) = requested_ip(ctx.msg) else {
            return ctx.ignore("DECLINE without requested address");
        };
        let known = self
            .leases
            .get(seg, addr)
            .is_some_and(|l| l.client_key().as_ref() == Some(&ctx.key))
            || self
                .pools
                .get(seg)
                .and_then(|p| p.offers.get(&addr))
                .is_some_and(|o| o.key == ctx.key);
        if !known {
            return ctx.ignore(format!(
                "DECLINE of {addr}, which this client does not hold"
            ));
        }
        let lease = Lease {
            segment: seg.to_string(),
            addr,
            mac: ctx.mac,
            client_id: None,
            hostname: None,
            group: cfg.reservation_for_addr(addr).and_then(|r| r.group.clone()),
            expires: now.saturating_add(u64::from(cfg.decline_quarantine)),
            state: LeaseState::Declined,
        };
        tracing::info!(segment = seg, %addr, chaddr = %mac_serde::format(&ctx.mac), "address declined by client; quarantined");
        if let Some(p) = self.pools.get_mut(seg) {
            p.offers.remove_addr(&addr);
        }
        self.leases.upsert(lease.clone());
        self.expired_reported.remove(&(seg.to_string(), addr));
        Outcome {
            changes: vec![lease.clone()],
            events: vec![LeaseEvent {
                kind: LeaseEventKind::Declined,
                lease,
            }],
            ..Outcome::default()
        }
    }

    fn release(&mut self, now: u64, seg: &str, ctx: &Ctx) -> Outcome {
        let Some(cfg) = self.pools.get(seg).map(|p| p.cfg.clone()) else {
            return ctx.ignore("pool vanished");
        };
        if let Some(sid) = server_id(ctx.msg)
            && sid != cfg.server_addr
        {
            return ctx.ignore(format!("RELEASE for server {sid}, not us"));
        }
        let addr = ctx.msg.ciaddr();
        let Some(l) = self.leases.get(seg, addr) else {
            return ctx.ignore(format!("RELEASE of {addr}, which has no lease"));
        };
        if l.client_key().as_ref() != Some(&ctx.key) || !l.is_active(now) {
            return ctx.ignore(format!(
                "RELEASE of {addr}, which this client does not hold"
            ));
        }
        let mut lease = l.clone();
        lease.state = LeaseState::Released;
        self.leases.upsert(lease.clone());
        Outcome {
            changes: vec![lease.clone()],
            events: vec![LeaseEvent {
                kind: LeaseEventKind::Released,
                lease,
            }],
            ..Outcome::default()
        }
    }

    fn inform(&mut self, seg: &str, ctx: &Ctx) -> Outcome {
        let Some(cfg) = self.pools.get(seg).map(|p| p.cfg.clone()) else {
            return ctx.ignore("pool vanished");
        };
        match self.reply(
            &cfg,
            ctx,
            MessageType::Ack,
            Ipv4Addr::UNSPECIFIED,
            None,
            None,
        ) {
            Some(r) => Outcome {
                replies: vec![r],
                ..Outcome::default()
            },
            None => ctx.ignore("ACK does not fit the client's maximum message size"),
        }
    }

    // ---- allocation -------------------------------------------------------

    /// May this client hold `addr` now (ignoring its own records)?
    fn available_to(&self, now: u64, cfg: &PoolConfig, ctx: &Ctx, addr: Ipv4Addr) -> bool {
        if !cfg.is_host_addr(addr) {
            return false;
        }
        if let Some(r) = cfg.reservation_for_addr(addr)
            && r.mac != ctx.mac
        {
            return false;
        }
        if let Some(l) = self.leases.get(&cfg.segment, addr) {
            match l.state {
                LeaseState::Declined if l.expires > now => return false,
                LeaseState::Bound
                    if l.expires > now && l.client_key().as_ref() != Some(&ctx.key) =>
                {
                    return false;
                }
                _ => {}
            }
        }
        if let Some(o) = self
            .pools
            .get(&cfg.segment)
            .and_then(|p| p.offers.get(&addr))
            && o.expires > now
            && o.key != ctx.key
        {
            return false;
        }
        true
    }

    /// May the client be ACKed `addr` in this pool?
    fn may_bind(&self, now: u64, cfg: &PoolConfig, ctx: &Ctx, addr: Ipv4Addr) -> bool {
        if let Some(r) = cfg.reservation_for_mac(&ctx.mac) {
            return r.addr == addr;
        }
        cfg.in_ranges(addr) && self.available_to(now, cfg, ctx, addr)
    }

    fn allocate(
        &self,
        now: u64,
        seg: &str,
        ctx: &Ctx,
        requested: Option<Ipv4Addr>,
    ) -> Option<(Ipv4Addr, bool)> {
        let pool = self.pools.get(seg)?;
        let cfg = &pool.cfg;
        if let Some(r) = cfg.reservation_for_mac(&ctx.mac) {
            return Some((r.addr, false));
        }
        let ok = |a: Ipv4Addr| cfg.in_ranges(a) && self.available_to(now, cfg, ctx, a);
        if let Some(l) = self.leases.by_client(seg, &ctx.key)
            && l.state != LeaseState::Declined
            && ok(l.addr)
        {
            return Some((l.addr, false));
        }
        if let Some((a, o)) = pool.offers.of_client(&ctx.key)
            && o.expires > now
            && ok(a)
        {
            return Some((a, false));
        }
        if let Some(a) = requested
            && ok(a)
        {
            return Some((a, false));
        }
        // Never-used addresses first, scanning on from where the last scan
        // stopped; else the free address whose old record ran out longest
        // ago (keeps recent clients' addresses for them).
        let total = cfg.range_len();
        let start = if total == 0 { 0 } else { pool.cursor % total };
        let mut fallback: Option<(u64, Ipv4Addr)> = None;
        for k in 0..total {
            let Some(a) = cfg.range_addr((start + k) % total) else {
                break;
            };
            if !ok(a) {
                continue;
            }
            match self.leases.get(seg, a) {
                None => return Some((a, true)),
                Some(l) => {
                    if fallback.is_none_or(|(e, _)| l.expires < e) {
                        fallback = Some((l.expires, a));
                    }
                }
            }
        }
        fallback.map(|(_, a)| (a, false))
    }

    fn ack(&mut self, now: u64, cfg: &PoolConfig, ctx: &Ctx, addr: Ipv4Addr) -> Outcome {
        let seg = cfg.segment.as_str();
        let secs = lease_secs(cfg, ctx.msg);
        let reservation = cfg.reservation_for_addr(addr).filter(|r| r.mac == ctx.mac);
        // Cleaned again: messages handed in decoded did not pass sanitize.
        let hostname = match ctx.msg.opts().get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(h)) if !h.is_empty() => Some(super::text::clean_bytes(
                h.as_bytes(),
                super::text::MAX_HOSTNAME,
            )),
            _ => reservation.and_then(|r| r.hostname.clone()),
        };
        let lease = Lease {
            segment: seg.to_string(),
            addr,
            mac: ctx.mac,
            client_id: ctx.client_id.clone(),
            hostname,
            group: reservation.and_then(|r| r.group.clone()),
            expires: now.saturating_add(u64::from(secs)),
            state: LeaseState::Bound,
        };
        let mut changes = Vec::new();
        // A client holds one binding per segment: give back the old one.
        if let Some(old) = self.leases.by_client(seg, &ctx.key)
            && old.addr != addr
            && old.state == LeaseState::Bound
        {
            let mut old = old.clone();
            old.state = LeaseState::Released;
            changes.push(old.clone());
            self.leases.upsert(old);
        }
        changes.push(lease.clone());
        self.leases.upsert(lease.clone());
        self.expired_reported.remove(&(seg.to_string(), addr));
        if let Some(p) = self.pools.get_mut(seg) {
            p.offers.remove_addr(&addr);
            p.offers.remove_client(&ctx.key);
        }
        let res_host = reservation.and_then(|r| r.hostname.clone());
        match self.reply(
            cfg,
            ctx,
            MessageType::Ack,
            addr,
            Some(secs),
            res_host.as_deref(),
        ) {
            Some(r) => Outcome {
                changes,
                replies: vec![r],
                events: vec![LeaseEvent {
                    kind: LeaseEventKind::Bound,
                    lease,
                }],
                ..Outcome::default()
            },
            None => {
                let mut o = ctx.ignore("ACK does not fit the client's maximum message size");
                o.changes = changes;
                o
            }
        }
    }

    fn nak(&self, cfg: &PoolConfig, ctx: &Ctx, reason: String) -> Outcome {
        tracing::debug!(
            xid = format_args!("{:#010x}", ctx.msg.xid()),
            chaddr = %mac_serde::format(&ctx.mac),
            segment = %cfg.segment,
            reason = %reason,
            "sending DHCPNAK"
        );
        let req = ctx.msg;
        let mut m = base_reply(req);
        m.set_yiaddr(Ipv4Addr::UNSPECIFIED);
        m.set_ciaddr(Ipv4Addr::UNSPECIFIED);
        let mut opts = DhcpOptions::new();
        opts.insert(DhcpOption::MessageType(MessageType::Nak));
        opts.insert(DhcpOption::ServerIdentifier(cfg.server_addr));
        let mut text = reason.clone();
        text.truncate(200);
        opts.insert(DhcpOption::Message(text));
        if let Some(DhcpOption::ClientIdentifier(id)) = req.opts().get(OptionCode::ClientIdentifier)
        {
            opts.insert(DhcpOption::ClientIdentifier(id.clone()));
        }
        m.set_opts(opts);
        let dest = if !req.giaddr().is_unspecified() {
            m.set_flags(Flags::default().set_broadcast());
            Destination::Relay(req.giaddr())
        } else {
            Destination::Broadcast
        };
        let drop = [OptionCode::Message];
        match encode_bounded(&mut m, max_payload(req), &drop) {
            Some(payload) => Outcome {
                replies: vec![Reply {
                    segment: cfg.segment.clone(),
                    dest,
                    msg_type: MessageType::Nak,
                    xid: req.xid(),
                    payload,
                }],
                ignored: None,
                ..Outcome::default()
            },
            None => ctx.ignore("NAK does not fit"),
        }
    }

    /// Build an OFFER or ACK (INFORM-ACK when `lease` is None).
    fn reply(
        &self,
        cfg: &PoolConfig,
        ctx: &Ctx,
        mt: MessageType,
        yiaddr: Ipv4Addr,
        lease: Option<u32>,
        hostname: Option<&str>,
    ) -> Option<Reply> {
        let req = ctx.msg;
        let mut m = base_reply(req);
        m.set_yiaddr(yiaddr);
        if mt == MessageType::Offer {
            m.set_ciaddr(Ipv4Addr::UNSPECIFIED);
        }
        let prl: Option<Vec<u8>> = match req.opts().get(OptionCode::ParameterRequestList) {
            Some(DhcpOption::ParameterRequestList(v)) => {
                Some(v.iter().map(|c| u8::from(*c)).collect())
            }
            _ => None,
        };
        let wanted = |c: OptionCode| prl.as_ref().is_none_or(|p| p.contains(&u8::from(c)));
        let mut opts = DhcpOptions::new();
        opts.insert(DhcpOption::MessageType(mt));
        opts.insert(DhcpOption::ServerIdentifier(cfg.server_addr));
        if let Some(secs) = lease {
            opts.insert(DhcpOption::AddressLeaseTime(secs));
            opts.insert(DhcpOption::Renewal(secs / 2));
            opts.insert(DhcpOption::Rebinding((u64::from(secs) * 7 / 8) as u32));
        }
        // Subnet mask is always sent: clients cannot configure without it.
        opts.insert(DhcpOption::SubnetMask(cfg.subnet.netmask()));
        let mut droppable = Vec::new();
        if wanted(OptionCode::Router) {
            opts.insert(DhcpOption::Router(vec![cfg.server_addr]));
            droppable.push(OptionCode::Router);
        }
        if wanted(OptionCode::BroadcastAddr) {
            opts.insert(DhcpOption::BroadcastAddr(cfg.subnet.broadcast()));
            droppable.push(OptionCode::BroadcastAddr);
        }
        if let Some(mtu) = cfg.mtu
            && wanted(OptionCode::InterfaceMtu)
        {
            opts.insert(DhcpOption::InterfaceMtu(mtu));
            droppable.push(OptionCode::InterfaceMtu);
        }
        if !cfg.dns.is_empty() && wanted(OptionCode::DomainNameServer) {
            opts.insert(DhcpOption::DomainNameServer(cfg.dns.clone()));
            droppable.push(OptionCode::DomainNameServer);
        }
        if let Some(d) = &cfg.domain
            && wanted(OptionCode::DomainName)
        {
            opts.insert(DhcpOption::DomainName(d.clone()));
            droppable.push(OptionCode::DomainName);
        }
        if let Some(h) = hostname
            && wanted(OptionCode::Hostname)
        {
            opts.insert(DhcpOption::Hostname(h.to_string()));
            droppable.push(OptionCode::Hostname);
        }
        for (code, data) in &cfg.extra_options {
            let oc = OptionCode::from(*code);
            if matches!(*code, 0 | 255 | 1 | 51 | 53 | 54 | 58 | 59) || !wanted(oc) {
                continue;
            }
            opts.insert(DhcpOption::Unknown(UnknownOption::new(oc, data.clone())));
            droppable.push(oc);
        }
        // RFC 3046: echo the relay agent information in relayed replies.
        if let Some(ri) = &ctx.relay_info {
            opts.insert(ri.clone());
        }
        m.set_opts(opts);
        droppable.reverse();
        let payload = encode_bounded(&mut m, max_payload(req), &droppable)?;

        let dest = if !req.giaddr().is_unspecified() {
            Destination::Relay(req.giaddr())
        } else if !req.ciaddr().is_unspecified() {
            Destination::Unicast(req.ciaddr())
        } else if mt == MessageType::Ack && yiaddr.is_unspecified() {
            // INFORM without ciaddr: answer the source, else broadcast.
            match ctx.rx.src.ip() {
                ip if !ip.is_unspecified() && !ip.is_broadcast() => Destination::Unicast(*ip),
                _ => Destination::Broadcast,
            }
        } else if req.flags().broadcast()
            || req.htype() != HType::Eth
            || req.hlen() != 6
            || yiaddr.is_unspecified()
        {
            Destination::Broadcast
        } else {
            Destination::UnicastL2 {
                ip: yiaddr,
                mac: ctx.mac,
            }
        };
        Some(Reply {
            segment: cfg.segment.clone(),
            dest,
            msg_type: mt,
            xid: req.xid(),
            payload,
        })
    }
}

/// Options the server reads, with their allowed payload lengths.
fn option_len_ok(code: u8, len: usize) -> Option<bool> {
    Some(match code {
        12 => len >= 1,           // host name
        50 | 51 | 54 => len == 4, // requested ip, lease time, server id
        53 => len == 1,           // message type
        55 => true,               // parameter request list
        57 => len == 2,           // max message size
        61 => len >= 1,           // client identifier
        _ => return None,
    })
}

/// Rebuild the packet with only the options the server reads, each checked
/// for a sane length (split options are joined, RFC 3396). The option
/// decoder of the DHCP library trusts lengths of options it knows and stops
/// at the first option it cannot decode, dropping every option after it, so
/// nothing is handed to it that it could fail on: an option with a bad
/// length or that does not decode is dropped alone (and logged), the host
/// name is cleaned of control characters and non-UTF-8 bytes
/// ([`super::text`]), and a truncated option ends the option list.
fn sanitize(rx: &RxInfo, bytes: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    let xid = format!(
        "{:#010x}",
        u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]])
    );
    let dropped = |code: u8, why: &str| {
        tracing::debug!(
            xid = %xid,
            segment = %rx.segment,
            src = %rx.src,
            option = code,
            "DHCP option {why}"
        );
    };
    let mut kept: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut relay: Option<Vec<u8>> = None;
    let mut pos = 240;
    while let Some(&code) = bytes.get(pos) {
        match code {
            0 => {
                pos += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let Some(&len) = bytes.get(pos + 1) else {
            dropped(code, "truncated; options end here");
            break;
        };
        let Some(data) = bytes.get(pos + 2..pos + 2 + usize::from(len)) else {
            dropped(code, "runs past the end of the packet; options end here");
            break;
        };
        pos += 2 + usize::from(len);
        if code == 82 {
            relay.get_or_insert_with(Vec::new).extend_from_slice(data);
            continue;
        }
        if option_len_ok(code, 0).is_none() {
            continue;
        }
        match kept.iter_mut().find(|(c, _)| *c == code) {
            Some((_, d)) => d.extend_from_slice(data),
            None => kept.push((code, data.to_vec())),
        }
    }
    let mut out = bytes[..240].to_vec();
    for (code, mut data) in kept {
        if code == 12 {
            data = super::text::clean_bytes(&data, super::text::MAX_HOSTNAME).into_bytes();
        }
        if option_len_ok(code, data.len()) != Some(true) {
            dropped(code, &format!("has a bad length ({}); ignored", data.len()));
            continue;
        }
        let mut enc = Vec::with_capacity(data.len() + 2 * data.len().div_ceil(255) + 1);
        for chunk in data.chunks(255) {
            enc.push(code);
            enc.push(chunk.len() as u8);
            enc.extend_from_slice(chunk);
        }
        enc.push(255);
        if let Err(e) = DhcpOption::decode(&mut Decoder::new(&enc)) {
            dropped(code, &format!("cannot be decoded ({e}); ignored"));
            continue;
        }
        out.extend_from_slice(&enc[..enc.len() - 1]);
    }
    out.push(255);
    (out, relay)
}

fn client_id_missing_identity(ctx: &Ctx) -> bool {
    ctx.client_id.is_none() && ctx.msg.chaddr().iter().all(|b| *b == 0)
}

/// Index of `addr` in the dynamic ranges.
fn range_index(cfg: &PoolConfig, addr: Ipv4Addr) -> Option<usize> {
    let a = u32::from(addr);
    let mut base = 0usize;
    for (lo, hi) in &cfg.ranges {
        let (lo, hi) = (u32::from(*lo), u32::from(*hi));
        if lo <= a && a <= hi {
            return Some(base + (a - lo) as usize);
        }
        base += (hi.saturating_sub(lo) as usize) + 1;
    }
    None
}

fn should_log(last: &mut Option<u64>, now: u64) -> bool {
    match *last {
        Some(t) if now.saturating_sub(t) < EXHAUSTION_LOG_INTERVAL && now >= t => false,
        _ => {
            *last = Some(now);
            true
        }
    }
}

fn requested_ip(m: &Message) -> Option<Ipv4Addr> {
    match m.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(a)) if !a.is_unspecified() => Some(*a),
        _ => None,
    }
}

fn server_id(m: &Message) -> Option<Ipv4Addr> {
    match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(a)) => Some(*a),
        _ => None,
    }
}

/// Lease time granted: what the client asked for (option 51), else the
/// pool default, capped at the pool maximum; at least 1 s.
fn lease_secs(cfg: &PoolConfig, m: &Message) -> u32 {
    let asked = match m.opts().get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(s)) => *s,
        _ => cfg.lease_time,
    };
    asked.min(cfg.max_lease_time).max(1)
}

/// Largest UDP payload the client accepts (option 57, at least 576).
fn max_payload(m: &Message) -> usize {
    let max = match m.opts().get(OptionCode::MaxMessageSize) {
        Some(DhcpOption::MaxMessageSize(n)) => (*n).max(MIN_MAX_MESSAGE_SIZE),
        _ => MIN_MAX_MESSAGE_SIZE,
    };
    usize::from(max) - IP_UDP_HEADERS
}

fn base_reply(req: &Message) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_htype(req.htype())
        .set_chaddr(req.chaddr())
        .set_xid(req.xid())
        .set_flags(req.flags())
        .set_giaddr(req.giaddr())
        .set_ciaddr(req.ciaddr())
        .set_hops(0)
        .set_secs(0);
    m
}

/// Encode, dropping optional options (in `droppable` order) until the
/// message fits `limit`; pad to the BOOTP minimum length.
fn encode_bounded(m: &mut Message, limit: usize, droppable: &[OptionCode]) -> Option<Vec<u8>> {
    let mut next = droppable.iter();
    loop {
        let mut buf = Vec::with_capacity(BOOTP_MIN_LEN);
        let mut e = Encoder::new(&mut buf);
        if let Err(err) = m.encode(&mut e) {
            tracing::debug!(error = %err, xid = m.xid(), "failed to encode reply");
            return None;
        }
        if buf.len() <= limit {
            if buf.len() < BOOTP_MIN_LEN {
                buf.resize(BOOTP_MIN_LEN, 0);
            }
            return Some(buf);
        }
        let code = next.next()?;
        m.opts_mut().remove(*code);
    }
}
