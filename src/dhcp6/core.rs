//! The sans-IO DHCPv6 server (RFC 8415) on dhcproto's v6 types: it takes the time, the
//! segment a packet arrived on, its source and its bytes, and returns the lease records to
//! make durable and the reply to send once they are.
//!
//! * Stateless (both modes): Information-Request -> Reply with DNS servers (23), domain
//!   list (24) and an information refresh time.
//! * Stateful segments: Solicit -> Advertise (or a committed Reply with Rapid Commit),
//!   Request / Renew / Rebind -> Reply with IA_NA addresses (bindings keyed by DUID and
//!   IAID, the same address again for the same binding), Release, Decline (the address is
//!   quarantined for a valid lifetime), Confirm (Success or NotOnLink).
//! * A packet is served only from the pool of the segment it arrived on.
//! * Anything malformed or not for this server gets no reply and a reason
//!   ([`Outcome6::refused`]) that names the segment, the source and what was wrong.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddrV6};

use dhcproto::v6::{
    DhcpOption, DhcpOptions, IAAddr, IANA, Message, MessageType, OptionCode, Status, StatusCode,
};
use dhcproto::{Decodable, Decoder, Encodable, Name};

use super::config::{Dhcp6Mode, SegmentV6};
use super::leases::{BindingKey, Lease6, Lease6Db, LeaseState};
use crate::dhcp::text;

/// Longest DUID accepted (RFC 8415 11.1: at most 128 octets after the 2-octet type).
pub const MAX_DUID: usize = 130;
/// At most this many IA_NAs of one message are served.
pub const MAX_IAS: usize = 8;
/// Information refresh time sent with stateless replies, seconds.
pub const INFORMATION_REFRESH: u32 = 86400;
/// How many addresses are tried when looking for a free one.
const PROBES: u128 = 4096;

/// What the server decided for one packet.
#[derive(Debug, Clone, Default)]
pub struct Outcome6 {
    /// Type of the message received (`None`: undecodable).
    pub received: Option<MessageType>,
    /// Lease records to make durable before the reply is sent.
    pub changes: Vec<Lease6>,
    /// The reply, encoded, and its type.
    pub reply: Option<(MessageType, Vec<u8>)>,
    /// Why no reply was sent (for the log), if one was not.
    pub refused: Option<String>,
}

/// The DHCPv6 server core.
#[derive(Debug, Clone)]
pub struct Server6 {
    duid: Vec<u8>,
    segments: HashMap<String, SegmentV6>,
    db: Lease6Db,
}

fn status(s: Status, msg: &str) -> DhcpOption {
    DhcpOption::StatusCode(StatusCode {
        status: s,
        msg: msg.to_string(),
    })
}

/// FNV-1a: a stable hash so that a binding lands on the same address after a restart.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The host name of a Client FQDN option (RFC 4704: flags, then a DNS-encoded name),
/// cleaned of control characters.
fn fqdn_name(data: &[u8]) -> Option<String> {
    let mut labels = Vec::new();
    let mut i = 1;
    while i < data.len() {
        let n = data[i] as usize;
        i += 1;
        if n == 0 {
            break;
        }
        labels.push(data.get(i..i + n)?);
        i += n;
    }
    if labels.is_empty() {
        return None;
    }
    let joined = labels.join(&b'.');
    Some(text::clean_bytes(&joined, text::MAX_HOSTNAME))
}

/// Check the option framing of `b` (which starts at `base` in the packet): every option
/// fits, IA_NA / IA_ADDR contents too. The decoder stops silently at the first bad option,
/// so without this a damaged packet would be served from its first part.
fn check_options(b: &[u8], base: usize, depth: u8) -> Result<(), String> {
    let mut i = 0;
    while i < b.len() {
        let Some(hdr) = b.get(i..i + 4) else {
            return Err(format!("truncated option header at offset {}", base + i));
        };
        let code = u16::from_be_bytes([hdr[0], hdr[1]]);
        let len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
        let Some(body) = b.get(i + 4..i + 4 + len) else {
            return Err(format!(
                "option {code} at offset {} runs past the end ({len} bytes)",
                base + i
            ));
        };
        // IA_NA (3): 12 fixed bytes then options; IA_ADDR (5): 24 then options.
        let inner = match code {
            3 => Some(12),
            5 => Some(24),
            _ => None,
        };
        if let Some(fixed) = inner {
            if len < fixed {
                return Err(format!(
                    "option {code} at offset {} too short ({len} bytes)",
                    base + i
                ));
            }
            if depth < 2 {
                check_options(&body[fixed..], base + i + 4 + fixed, depth + 1)?;
            }
        }
        i += 4 + len;
    }
    Ok(())
}

impl Server6 {
    /// A server with this DUID and no segments.
    pub fn new(duid: Vec<u8>) -> Self {
        Server6 {
            duid,
            segments: HashMap::new(),
            db: Lease6Db::default(),
        }
    }

    /// The server's DUID.
    pub fn duid(&self) -> &[u8] {
        &self.duid
    }

    /// Serve (or update) a segment.
    pub fn add_segment(&mut self, s: SegmentV6) {
        self.segments.insert(s.segment.clone(), s);
    }

    /// Stop serving a segment (its leases are kept).
    pub fn remove_segment(&mut self, name: &str) -> Option<SegmentV6> {
        self.segments.remove(name)
    }

    /// Load records read from the journal.
    pub fn load_leases(&mut self, leases: impl IntoIterator<Item = Lease6>) {
        for l in leases {
            self.db.upsert(l);
        }
    }

    /// The lease index.
    pub fn leases(&self) -> &Lease6Db {
        &self.db
    }

    /// Forget records that expired before `now`; returns them.
    pub fn expire(&mut self, now: u64) -> Vec<Lease6> {
        self.db.expire(now)
    }

    /// Decide on one packet that arrived on `segment` from `src`.
    pub fn handle_packet(
        &mut self,
        now: u64,
        segment: &str,
        src: SocketAddrV6,
        bytes: &[u8],
    ) -> Outcome6 {
        let refuse = |received, why: String| Outcome6 {
            received,
            refused: Some(format!(
                "DHCPv6 packet from {} on segment {segment} ignored: {why}",
                src.ip()
            )),
            ..Outcome6::default()
        };
        if bytes.len() < 4 {
            return refuse(None, format!("too short ({} bytes)", bytes.len()));
        }
        if let Err(why) = check_options(&bytes[4..], 4, 0) {
            return refuse(
                None,
                format!(
                    "malformed (type {}, {} bytes): {why}",
                    bytes[0],
                    bytes.len()
                ),
            );
        }
        let msg = match Message::decode(&mut Decoder::new(bytes)) {
            Ok(m) => m,
            Err(e) => {
                return refuse(
                    None,
                    format!(
                        "malformed (type {}, {} bytes): {}",
                        bytes[0],
                        bytes.len(),
                        text::clean_bytes(e.to_string().as_bytes(), 200)
                    ),
                );
            }
        };
        let mt = msg.msg_type();
        let Some(seg) = self.segments.get(segment).cloned() else {
            return refuse(Some(mt), "segment not served".into());
        };
        match self.decide(now, &seg, &msg) {
            Ok((changes, reply)) => {
                for c in &changes {
                    self.db.upsert(c.clone());
                }
                Outcome6 {
                    received: Some(mt),
                    changes,
                    reply: reply.map(|r| {
                        let t = r.msg_type();
                        // Encoding our own message into a Vec cannot fail.
                        (t, r.to_vec().unwrap_or_default())
                    }),
                    refused: None,
                }
            }
            Err(why) => refuse(Some(mt), format!("{mt:?}: {why}")),
        }
    }

    fn decide(
        &self,
        now: u64,
        seg: &SegmentV6,
        msg: &Message,
    ) -> Result<(Vec<Lease6>, Option<Message>), String> {
        let opts = msg.opts();
        let client_id = match opts.get(OptionCode::ClientId) {
            Some(DhcpOption::ClientId(id)) => Some(id.clone()),
            _ => None,
        };
        if let Some(id) = &client_id
            && (id.len() < 3 || id.len() > MAX_DUID)
        {
            return Err(format!(
                "client DUID of {} bytes (3 to {MAX_DUID})",
                id.len()
            ));
        }
        let server_id = match opts.get(OptionCode::ServerId) {
            Some(DhcpOption::ServerId(id)) => Some(id.clone()),
            _ => None,
        };
        let for_us = server_id.as_deref() == Some(&self.duid[..]);
        let mt = msg.msg_type();
        // RFC 8415 16: which messages must and must not carry which identifiers.
        match mt {
            MessageType::Solicit | MessageType::Rebind | MessageType::Confirm => {
                if client_id.is_none() {
                    return Err("no client identifier".into());
                }
                if server_id.is_some() {
                    return Err("carries a server identifier".into());
                }
            }
            MessageType::Request
            | MessageType::Renew
            | MessageType::Release
            | MessageType::Decline => {
                if client_id.is_none() {
                    return Err("no client identifier".into());
                }
                if !for_us {
                    return Err("for another server".into());
                }
            }
            MessageType::InformationRequest => {
                if server_id.is_some() && !for_us {
                    return Err("for another server".into());
                }
                if opts.get(OptionCode::IANA).is_some() {
                    return Err("Information-Request with an IA_NA".into());
                }
            }
            other => return Err(format!("{other:?} is not a client message")),
        }
        if mt != MessageType::InformationRequest && seg.mode == Dhcp6Mode::Stateless {
            return Err("stateless segment: only Information-Request is answered".into());
        }
        let hostname = match opts.get(OptionCode::ClientFqdn) {
            Some(DhcpOption::Unknown(u)) => fqdn_name(u.data()),
            _ => None,
        };
        let ias: Vec<&IANA> = opts
            .get_all(OptionCode::IANA)
            .unwrap_or_default()
            .iter()
            .filter_map(|o| match o {
                DhcpOption::IANA(ia) => Some(ia),
                _ => None,
            })
            .take(MAX_IAS)
            .collect();
        let duid = client_id.clone().unwrap_or_default();
        let rapid = mt == MessageType::Solicit
            && seg.rapid_commit
            && opts.get(OptionCode::RapidCommit).is_some();
        let reply_type = match mt {
            MessageType::Solicit if !rapid => MessageType::Advertise,
            _ => MessageType::Reply,
        };
        let mut reply = Message::new_with_id(reply_type, msg.xid());
        let ro = reply.opts_mut();
        ro.insert(DhcpOption::ServerId(self.duid.clone()));
        if let Some(id) = &client_id {
            ro.insert(DhcpOption::ClientId(id.clone()));
        }
        let mut changes = Vec::new();
        match mt {
            MessageType::InformationRequest => {
                self.add_info(seg, ro);
                ro.insert(DhcpOption::InformationRefreshTime(INFORMATION_REFRESH));
            }
            MessageType::Solicit
            | MessageType::Request
            | MessageType::Renew
            | MessageType::Rebind => {
                if ias.is_empty() {
                    return Err("no IA_NA (only IA_NA is served)".into());
                }
                let commit = mt != MessageType::Solicit || rapid;
                let mut taken: Vec<Ipv6Addr> = Vec::new();
                let mut any = false;
                for ia in &ias {
                    let key: BindingKey = (duid.clone(), ia.id);
                    let hints: Vec<IAAddr> = ia
                        .opts
                        .get_all(OptionCode::IAAddr)
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|o| match o {
                            DhcpOption::IAAddr(a) => Some(a.clone()),
                            _ => None,
                        })
                        .collect();
                    let mut ia_opts = DhcpOptions::new();
                    match self.pick(now, seg, &key, &hints, &taken) {
                        Some(addr) => {
                            any = true;
                            taken.push(addr);
                            ia_opts.insert(DhcpOption::IAAddr(IAAddr {
                                addr,
                                preferred_life: seg.preferred_lifetime,
                                valid_life: seg.valid_lifetime,
                                opts: DhcpOptions::new(),
                            }));
                            if commit {
                                changes.push(Lease6 {
                                    segment: seg.segment.clone(),
                                    addr,
                                    duid: Some(duid.clone()),
                                    iaid: ia.id,
                                    hostname: hostname.clone(),
                                    expires: now + u64::from(seg.valid_lifetime),
                                    state: LeaseState::Bound,
                                });
                            }
                        }
                        None => {
                            ia_opts.insert(status(Status::NoAddrsAvail, "no address available"));
                        }
                    }
                    // Addresses the client holds that are no longer its own: lifetimes 0.
                    if matches!(mt, MessageType::Renew | MessageType::Rebind) {
                        for h in &hints {
                            if !taken.contains(&h.addr) {
                                ia_opts.insert(DhcpOption::IAAddr(IAAddr {
                                    addr: h.addr,
                                    preferred_life: 0,
                                    valid_life: 0,
                                    opts: DhcpOptions::new(),
                                }));
                            }
                        }
                    }
                    ro.insert(DhcpOption::IANA(IANA {
                        id: ia.id,
                        t1: seg.preferred_lifetime / 2,
                        t2: seg.preferred_lifetime / 5 * 4,
                        opts: ia_opts,
                    }));
                }
                if !any && mt == MessageType::Solicit {
                    ro.insert(status(Status::NoAddrsAvail, "no address available"));
                }
                if rapid {
                    ro.insert(DhcpOption::RapidCommit);
                }
                if mt == MessageType::Solicit && !rapid {
                    ro.insert(DhcpOption::Preference(255));
                }
                self.add_info(seg, ro);
            }
            MessageType::Release | MessageType::Decline => {
                let release = mt == MessageType::Release;
                for ia in &ias {
                    let key: BindingKey = (duid.clone(), ia.id);
                    let mut found = false;
                    for o in ia.opts.get_all(OptionCode::IAAddr).unwrap_or_default() {
                        let DhcpOption::IAAddr(a) = o else { continue };
                        let Some(l) = self.db.get(&seg.segment, a.addr) else {
                            continue;
                        };
                        if l.binding().as_ref() != Some(&key) {
                            continue;
                        }
                        found = true;
                        let mut l = l.clone();
                        if release {
                            l.state = LeaseState::Released;
                        } else {
                            l.state = LeaseState::Declined;
                            l.duid = None;
                            l.expires = now + u64::from(seg.valid_lifetime);
                        }
                        changes.push(l);
                    }
                    if !found {
                        let mut ia_opts = DhcpOptions::new();
                        ia_opts.insert(status(Status::NoBinding, "no binding for this IA"));
                        ro.insert(DhcpOption::IANA(IANA {
                            id: ia.id,
                            t1: 0,
                            t2: 0,
                            opts: ia_opts,
                        }));
                    }
                }
                ro.insert(status(
                    Status::Success,
                    if release { "released" } else { "declined" },
                ));
            }
            MessageType::Confirm => {
                let addrs: Vec<Ipv6Addr> = ias
                    .iter()
                    .flat_map(|ia| ia.opts.get_all(OptionCode::IAAddr).unwrap_or_default())
                    .filter_map(|o| match o {
                        DhcpOption::IAAddr(a) => Some(a.addr),
                        _ => None,
                    })
                    .collect();
                if addrs.is_empty() {
                    return Err("Confirm without addresses".into());
                }
                if addrs.iter().all(|a| seg.subnet.contains(a)) {
                    ro.insert(status(Status::Success, "all addresses on link"));
                } else {
                    ro.insert(status(Status::NotOnLink, "not on this link"));
                }
            }
            _ => unreachable!("refused above"),
        }
        Ok((changes, Some(reply)))
    }

    fn add_info(&self, seg: &SegmentV6, ro: &mut DhcpOptions) {
        if !seg.dns.is_empty() {
            ro.insert(DhcpOption::DomainNameServers(seg.dns.clone()));
        }
        let names: Vec<Name> = seg
            .domains
            .iter()
            .filter_map(|d| d.parse::<Name>().ok())
            .collect();
        if !names.is_empty() {
            ro.insert(DhcpOption::DomainSearchList(names));
        }
    }

    /// Is `a` free for binding `key` (not bound to another, not quarantined)?
    fn free_for(&self, now: u64, seg: &SegmentV6, key: &BindingKey, a: Ipv6Addr) -> bool {
        match self.db.get(&seg.segment, a) {
            None => true,
            Some(l) if l.expires <= now => true,
            Some(l) => match l.state {
                LeaseState::Declined => false,
                LeaseState::Bound => l.binding().as_ref() == Some(key),
                // A released address is remembered for its client, but free for others.
                LeaseState::Released => true,
            },
        }
    }

    /// The address for a binding: its current one, else a free hint in the pool, else
    /// one derived from a hash of DUID and IAID, probing onwards for a free one.
    fn pick(
        &self,
        now: u64,
        seg: &SegmentV6,
        key: &BindingKey,
        hints: &[IAAddr],
        taken: &[Ipv6Addr],
    ) -> Option<Ipv6Addr> {
        let usable =
            |a: Ipv6Addr| seg.in_pool(a) && !taken.contains(&a) && self.free_for(now, seg, key, a);
        if let Some(l) = self.db.by_binding(&seg.segment, key)
            && l.expires > now
            && usable(l.addr)
        {
            return Some(l.addr);
        }
        if let Some(h) = hints.iter().find(|h| usable(h.addr)) {
            return Some(h.addr);
        }
        let start = u128::from(seg.pool_start);
        let end = u128::from(seg.pool_end);
        if end < start {
            return None;
        }
        let size = end - start + 1;
        let mut seed = key.0.clone();
        seed.extend_from_slice(&key.1.to_be_bytes());
        let first = u128::from(fnv(&seed)) % size;
        (0..size.min(PROBES))
            .map(|i| Ipv6Addr::from(start + (first + i) % size))
            .find(|a| usable(*a))
    }
}
