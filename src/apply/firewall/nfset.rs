//! Live set changes over NETLINK_NETFILTER, without the `nft` binary (which first reads every
//! interval set of the namespace back from the kernel before it adds one element).
//!
//! One change is one nf_tables transaction: NFNL_MSG_BATCH_BEGIN, stamped with the ruleset
//! generation the change was decided on; one NFT_MSG_DELSETELEM or NFT_MSG_NEWSETELEM per
//! element, each with NLM_F_ACK; NFNL_MSG_BATCH_END. The kernel answers every message, so a
//! refusal names its element; any refusal aborts the whole transaction. When another
//! transaction committed in between, the kernel refuses the batch with ERESTART and the change
//! is decided again on the new contents.
//!
//! Interval sets hold a range as two elements: its start, and the address after its end
//! flagged NFT_SET_ELEM_INTERVAL_END (left out when the range reaches the top of the address
//! space), as `nft` sends them. Keys are IPv4 or IPv6 addresses (the set's key length says
//! which). What a change does follows `nft add element` / `nft delete element` (nftables
//! 1.0.6) on the same set:
//! - auto-merge sets: new ranges are merged with the overlapping and adjacent ranges already
//!   in the set, which are deleted in the same transaction as the merged range is added; a
//!   range already inside a larger one that starts lower is left alone; one that equals (or
//!   starts with) a present range replaces it, which restarts its timeout;
//! - interval sets without auto-merge: a range overlapping a present one is refused, an equal
//!   one is accepted;
//! - delete removes exactly a range that is in the set (the given ranges merged first on
//!   auto-merge sets), anything else is refused and nothing is removed.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::time::Duration;

use ipnet::IpNet;

use super::FirewallError;
use crate::sys::{netlink, socket};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_BATCH_GENID: u16 = 1;

const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_GEN_ID: u16 = 1;

const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_CONCAT: u32 = 0x80;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
/// libnftnl's set user data: the `auto-merge` flag nft keeps with the set.
const NFTNL_UDATA_SET_MERGE_ELEMENTS: u8 = 2;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLA_F_NESTED: u16 = 0x8000;

/// NFPROTO_INET: the family of `table inet …`.
pub const FAMILY_INET: u8 = 1;
/// The kernel's ERESTART: the batch was stamped with a generation that is gone.
const ERESTART: i32 = 85;
const RETRIES: usize = 5;

/// What a change does to a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Del,
}

impl Op {
    fn word(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Del => "delete",
        }
    }
}

/// An inclusive range of addresses of one family, as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Range {
    pub lo: u128,
    pub hi: u128,
}

/// The key width of a set: 4 (IPv4) or 16 (IPv6) bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    V4,
    V6,
}

impl Width {
    fn bytes(self) -> usize {
        match self {
            Width::V4 => 4,
            Width::V6 => 16,
        }
    }

    fn max(self) -> u128 {
        match self {
            Width::V4 => u32::MAX as u128,
            Width::V6 => u128::MAX,
        }
    }

    fn key(self, v: u128) -> Vec<u8> {
        match self {
            Width::V4 => (v as u32).to_be_bytes().to_vec(),
            Width::V6 => v.to_be_bytes().to_vec(),
        }
    }

    fn value(self, key: &[u8]) -> Option<u128> {
        match self {
            Width::V4 => Some(u32::from_be_bytes(key.try_into().ok()?) as u128),
            Width::V6 => Some(u128::from_be_bytes(key.try_into().ok()?)),
        }
    }

    fn addr(self, v: u128) -> IpAddr {
        match self {
            Width::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
            Width::V6 => IpAddr::V6(Ipv6Addr::from(v)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Width::V4 => "IPv4",
            Width::V6 => "IPv6",
        }
    }
}

/// The width and range of an address or network as a user gave it.
pub fn range_of(n: &IpNet) -> (Width, Range) {
    match n {
        IpNet::V4(n) => (
            Width::V4,
            Range {
                lo: u32::from(n.network()) as u128,
                hi: u32::from(n.broadcast()) as u128,
            },
        ),
        IpNet::V6(n) => (
            Width::V6,
            Range {
                lo: u128::from(n.network()),
                hi: u128::from(n.broadcast()),
            },
        ),
    }
}

/// A range as `nft` prints it: `a`, `a/n` when it is exactly a prefix, else `a-b`.
pub fn range_text(w: Width, r: Range) -> String {
    if r.lo == r.hi {
        return w.addr(r.lo).to_string();
    }
    let span = r.hi - r.lo;
    if r.lo & span == 0 && span.checked_add(1).is_none_or(|s| s.is_power_of_two()) {
        let host_bits = 128 - span.leading_zeros();
        let bits = (w.bytes() * 8) as u32;
        return format!("{}/{}", w.addr(r.lo), bits - host_bits);
    }
    format!("{}-{}", w.addr(r.lo), w.addr(r.hi))
}

/// What the kernel says about a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetInfo {
    pub flags: u32,
    pub width: Option<Width>,
    pub automerge: bool,
}

impl SetInfo {
    pub fn interval(&self) -> bool {
        self.flags & NFT_SET_INTERVAL != 0
    }
}

/// One element of a set dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawElem {
    pub key: Vec<u8>,
    pub flags: u32,
    pub timeout_ms: Option<u64>,
    pub expires_ms: Option<u64>,
}

/// The ranges an interval set holds, from its elements (any order): each start element up to
/// the next interval-end element; nft's leading end element at 0 opens nothing.
pub fn ranges_of(w: Width, elems: &[RawElem]) -> Vec<Range> {
    let mut keys: Vec<(u128, bool)> = elems
        .iter()
        .filter_map(|e| {
            let v = w.value(&e.key)?;
            Some((v, e.flags & NFT_SET_ELEM_INTERVAL_END == 0))
        })
        .collect();
    // an end and a start at the same key: the end closes the range before
    keys.sort();
    let mut out = Vec::new();
    let mut open: Option<u128> = None;
    for (v, start) in keys {
        match (start, open) {
            (true, None) => open = Some(v),
            (true, Some(lo)) => {
                // two starts in a row: the first one was a range of its own up to here
                out.push(Range {
                    lo,
                    hi: v.saturating_sub(1).max(lo),
                });
                open = Some(v);
            }
            (false, Some(lo)) if v > lo => {
                out.push(Range { lo, hi: v - 1 });
                open = None;
            }
            (false, _) => {}
        }
    }
    if let Some(lo) = open {
        out.push(Range { lo, hi: w.max() });
    }
    out
}

/// The elements a plain (non-interval) set holds, one address each.
fn keys_of(w: Width, elems: &[RawElem]) -> Vec<Range> {
    let mut v: Vec<Range> = elems
        .iter()
        .filter_map(|e| w.value(&e.key))
        .map(|v| Range { lo: v, hi: v })
        .collect();
    v.sort();
    v
}

/// What to send for one change: ranges to delete, then ranges to add.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub delete: Vec<Range>,
    pub add: Vec<Range>,
}

/// A change refused before anything is sent: the element (index into the input) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub index: usize,
    pub reason: String,
}

/// nft's merge of new ranges into an auto-merge set: `(purged present ranges, ranges to add)`.
/// Sorted by start, a new range before a present one with the same start.
pub fn automerge(present: &[Range], new: &[Range]) -> (Vec<Range>, Vec<Range>) {
    let mut items: Vec<(Range, bool)> = new
        .iter()
        .map(|r| (*r, false))
        .chain(present.iter().map(|r| (*r, true)))
        .collect();
    items.sort_by_key(|(r, kernel)| (r.lo, *kernel));
    let mut out: Vec<(Range, bool)> = Vec::new();
    let mut purge = Vec::new();
    for (r, kernel) in items {
        let Some(prev) = out.last_mut() else {
            out.push((r, kernel));
            continue;
        };
        if prev.0.lo <= r.lo && prev.0.hi >= r.hi {
            // inside the previous one: a present range goes, a new one is not needed
            if kernel {
                purge.push(r);
            }
            continue;
        }
        if r.lo <= prev.0.hi || r.lo == prev.0.hi + 1 {
            // overlapping or adjacent: one range from prev's start to r's end, sent anew
            if prev.1 {
                purge.push(prev.0);
            }
            if kernel {
                purge.push(r);
            }
            *prev = (
                Range {
                    lo: prev.0.lo,
                    hi: r.hi,
                },
                false,
            );
            continue;
        }
        out.push((r, kernel));
    }
    purge.sort();
    let add = out
        .into_iter()
        .filter(|(_, k)| !k)
        .map(|(r, _)| r)
        .collect();
    (purge, add)
}

/// Merge the given ranges among themselves (overlapping and adjacent), as nft does with the
/// elements of one `delete element` on an auto-merge set.
fn merge_own(new: &[Range]) -> Vec<Range> {
    automerge(&[], new).1
}

/// Decide one change on a set with `present` contents. Indices in refusals are into `new`.
pub fn plan(info: &SetInfo, op: Op, present: &[Range], new: &[Range]) -> Result<Plan, Refusal> {
    if !info.interval() {
        if let Some(i) = new.iter().position(|r| r.lo != r.hi) {
            return Err(Refusal {
                index: i,
                reason: "the set holds single addresses (no `flags interval`), not networks".into(),
            });
        }
        return Ok(match op {
            Op::Add => Plan {
                delete: Vec::new(),
                add: new.to_vec(),
            },
            Op::Del => Plan {
                delete: new.to_vec(),
                add: Vec::new(),
            },
        });
    }
    match op {
        Op::Add if info.automerge => {
            let (delete, add) = automerge(present, new);
            Ok(Plan { delete, add })
        }
        Op::Add => {
            // without auto-merge: no overlaps, among the new ones or with present ones
            let mut idx: Vec<usize> = (0..new.len()).collect();
            idx.sort_by_key(|&i| new[i]);
            for w in idx.windows(2) {
                let (a, b) = (new[w[0]], new[w[1]]);
                if a != b && b.lo <= a.hi {
                    return Err(Refusal {
                        index: w[1],
                        reason: "conflicting intervals specified".into(),
                    });
                }
            }
            for (i, r) in new.iter().enumerate() {
                if present
                    .iter()
                    .any(|p| p != r && p.lo <= r.hi && r.lo <= p.hi)
                {
                    return Err(Refusal {
                        index: i,
                        reason: "interval overlaps with an existing one".into(),
                    });
                }
            }
            let mut add: Vec<Range> = new.to_vec();
            add.sort();
            add.dedup();
            Ok(Plan {
                delete: Vec::new(),
                add,
            })
        }
        Op::Del => {
            let wanted = if info.automerge {
                merge_own(new)
            } else {
                let mut v = new.to_vec();
                v.sort();
                v.dedup();
                v
            };
            for w in &wanted {
                if !present.contains(w) {
                    let index = new
                        .iter()
                        .position(|r| r.lo <= w.hi && w.lo <= r.hi)
                        .unwrap_or(0);
                    let inside = present.iter().find(|p| p.lo <= w.hi && w.lo <= p.hi);
                    return Err(Refusal {
                        index,
                        reason: match inside {
                            Some(_) => "not an element of the set on its own (it is part of a larger range: delete that range)".into(),
                            None => "not an element of the set".into(),
                        },
                    });
                }
            }
            Ok(Plan {
                delete: wanted,
                add: Vec::new(),
            })
        }
    }
}

// ---- message building ----

pub(super) fn put_attr(b: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    b.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(payload);
    while !b.len().is_multiple_of(4) {
        b.push(0);
    }
}

fn put_str(b: &mut Vec<u8>, ty: u16, s: &str) {
    let mut p = s.as_bytes().to_vec();
    p.push(0);
    put_attr(b, ty, &p);
}

fn nest_begin(b: &mut Vec<u8>, ty: u16) -> usize {
    let at = b.len();
    b.extend_from_slice(&0u16.to_ne_bytes());
    b.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    at
}

fn nest_end(b: &mut [u8], at: usize) {
    let len = (b.len() - at) as u16;
    b[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

/// nlmsghdr + nfgenmsg; returns where the message starts (its length is set by `msg_end`).
pub(super) fn msg_begin(
    b: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
) -> usize {
    let at = b.len();
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.push(family);
    b.push(0); // NFNETLINK_V0
    b.extend_from_slice(&res_id.to_be_bytes());
    at
}

pub(super) fn msg_end(b: &mut [u8], at: usize) {
    let len = (b.len() - at) as u32;
    b[at..at + 4].copy_from_slice(&len.to_ne_bytes());
}

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// The elements `nft` sends for one range of an interval set (start, and the end flagged
/// unless the range reaches the top), or the one key of a plain set.
pub fn range_elements(w: Width, interval: bool, r: Range) -> Vec<(Vec<u8>, u32)> {
    let mut v = vec![(w.key(r.lo), 0)];
    if interval && r.hi < w.max() {
        v.push((w.key(r.hi + 1), NFT_SET_ELEM_INTERVAL_END));
    }
    v
}

/// One NEWSETELEM (create, no exclusive: a present equal element is no error) or DELSETELEM
/// message with the elements of one range, asking for an ACK.
#[allow(clippy::too_many_arguments)]
pub fn elem_msg(
    b: &mut Vec<u8>,
    op: Op,
    seq: u32,
    family: u8,
    table: &str,
    set: &str,
    elems: &[(Vec<u8>, u32)],
) {
    let (ty, flags) = match op {
        Op::Add => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK),
        Op::Del => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
    };
    let at = msg_begin(b, nft_type(ty), flags, seq, family, 0);
    put_str(b, NFTA_SET_ELEM_LIST_TABLE, table);
    put_str(b, NFTA_SET_ELEM_LIST_SET, set);
    let list = nest_begin(b, NFTA_SET_ELEM_LIST_ELEMENTS);
    for (key, fl) in elems {
        let e = nest_begin(b, NFTA_LIST_ELEM);
        let k = nest_begin(b, NFTA_SET_ELEM_KEY);
        put_attr(b, NFTA_DATA_VALUE, key);
        nest_end(b, k);
        if *fl != 0 {
            put_attr(b, NFTA_SET_ELEM_FLAGS, &fl.to_be_bytes());
        }
        nest_end(b, e);
    }
    nest_end(b, list);
    msg_end(b, at);
}

fn batch_begin(b: &mut Vec<u8>, seq: u32, genid: Option<u32>) {
    let at = msg_begin(
        b,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    if let Some(g) = genid {
        put_attr(b, NFNL_BATCH_GENID, &g.to_be_bytes());
    }
    msg_end(b, at);
}

fn batch_end(b: &mut Vec<u8>, seq: u32) {
    let at = msg_begin(
        b,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    msg_end(b, at);
}

// ---- parsing ----

/// One netlink message of a datagram.
#[derive(Debug)]
pub struct NlMsg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

pub fn messages(mut b: &[u8]) -> Vec<NlMsg<'_>> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
        if len < 16 || len > b.len() {
            break;
        }
        out.push(NlMsg {
            ty: u16::from_ne_bytes(b[4..6].try_into().unwrap()),
            flags: u16::from_ne_bytes(b[6..8].try_into().unwrap()),
            seq: u32::from_ne_bytes(b[8..12].try_into().unwrap()),
            payload: &b[16..len],
        });
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

/// Attributes as (type without flags, payload).
pub fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes(b[0..2].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(b[2..4].try_into().unwrap()) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, &b[4..len]));
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

fn be64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

/// A NEWSET reply (after nfgenmsg).
pub fn parse_set(payload: &[u8]) -> SetInfo {
    let mut info = SetInfo {
        flags: 0,
        width: None,
        automerge: false,
    };
    let mut key_len = 0;
    for (ty, p) in attrs(payload.get(4..).unwrap_or_default()) {
        match ty {
            NFTA_SET_FLAGS => info.flags = be32(p).unwrap_or(0),
            NFTA_SET_KEY_LEN => key_len = be32(p).unwrap_or(0),
            NFTA_SET_USERDATA => info.automerge = udata_automerge(p),
            _ => {}
        }
    }
    if info.flags & (NFT_SET_MAP | NFT_SET_CONCAT) == 0 {
        info.width = match key_len {
            4 => Some(Width::V4),
            16 => Some(Width::V6),
            _ => None,
        };
    }
    info
}

/// The name of the set in a NEWSET message (after nfgenmsg).
fn set_name(payload: &[u8]) -> Option<String> {
    let (_, v) = attrs(payload.get(4..)?)
        .into_iter()
        .find(|(t, _)| *t == NFTA_SET_NAME)?;
    Some(String::from_utf8_lossy(v.split(|&b| b == 0).next()?).into_owned())
}

/// libnftnl user data: records of type (u8), length (u8), value.
fn udata_automerge(mut b: &[u8]) -> bool {
    while b.len() >= 2 {
        let (ty, len) = (b[0], b[1] as usize);
        let Some(v) = b.get(2..2 + len) else { break };
        if ty == NFTNL_UDATA_SET_MERGE_ELEMENTS {
            return v.iter().any(|&x| x != 0);
        }
        b = &b[2 + len..];
    }
    false
}

/// The elements of one NEWSETELEM message of a dump (after nfgenmsg).
pub fn parse_elems(payload: &[u8], out: &mut Vec<RawElem>) {
    for (ty, list) in attrs(payload.get(4..).unwrap_or_default()) {
        if ty != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for (ty, el) in attrs(list) {
            if ty != NFTA_LIST_ELEM {
                continue;
            }
            let mut e = RawElem {
                key: Vec::new(),
                flags: 0,
                timeout_ms: None,
                expires_ms: None,
            };
            for (ty, p) in attrs(el) {
                match ty {
                    NFTA_SET_ELEM_KEY => {
                        if let Some((_, v)) =
                            attrs(p).into_iter().find(|(t, _)| *t == NFTA_DATA_VALUE)
                        {
                            e.key = v.to_vec();
                        }
                    }
                    NFTA_SET_ELEM_FLAGS => e.flags = be32(p).unwrap_or(0),
                    NFTA_SET_ELEM_TIMEOUT => e.timeout_ms = be64(p),
                    NFTA_SET_ELEM_EXPIRATION => e.expires_ms = be64(p),
                    _ => {}
                }
            }
            out.push(e);
        }
    }
}

pub(super) fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()))
}

// ---- the socket ----

/// A NETLINK_NETFILTER socket for one change (it lives in the caller's network namespace).
pub struct Conn {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open() -> io::Result<Conn> {
        let fd = netlink::netfilter_socket()?;
        netlink::bind_auto(&fd)?;
        socket::set_recv_timeout(&fd, Duration::from_secs(5))?;
        Ok(Conn {
            fd,
            seq: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.subsec_nanos()),
            buf: vec![0; 128 * 1024],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        let n = netlink::send_to_kernel(&self.fd, msg)?;
        if n != msg.len() {
            return Err(io::Error::other("short netlink send"));
        }
        Ok(())
    }

    /// Send one request and collect the payloads of its answer (several for a dump) until the
    /// kernel is done with it.
    fn request(
        &mut self,
        ty: u16,
        flags: u16,
        family: u8,
        attrs: &[u8],
    ) -> io::Result<Vec<Vec<u8>>> {
        self.request_typed(nft_type(ty), flags, family, attrs)
    }

    /// [`Conn::request`] with the whole nfnetlink message type (subsystem and message), for
    /// the other nfnetlink subsystems (conntrack).
    pub(super) fn request_typed(
        &mut self,
        ty: u16,
        flags: u16,
        family: u8,
        attrs: &[u8],
    ) -> io::Result<Vec<Vec<u8>>> {
        let seq = self.next_seq();
        let mut m = Vec::with_capacity(20 + attrs.len());
        let at = msg_begin(&mut m, ty, NLM_F_REQUEST | flags, seq, family, 0);
        m.extend_from_slice(attrs);
        msg_end(&mut m, at);
        self.send(&m)?;
        let mut out = Vec::new();
        loop {
            let n = socket::recv(&self.fd, &mut self.buf)?;
            if n == 0 {
                return Err(io::Error::other("netlink socket closed"));
            }
            for msg in messages(&self.buf[..n]) {
                if msg.seq != seq {
                    continue;
                }
                match msg.ty {
                    NLMSG_ERROR => {
                        let e = error_code(msg.payload);
                        if e == 0 {
                            return Ok(out);
                        }
                        return Err(io::Error::from_raw_os_error(-e));
                    }
                    NLMSG_DONE => {
                        let e = error_code(msg.payload);
                        if e < 0 {
                            return Err(io::Error::from_raw_os_error(-e));
                        }
                        return Ok(out);
                    }
                    _ => {
                        out.push(msg.payload.to_vec());
                        if msg.flags & NLM_F_MULTI == 0 {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }

    /// The ruleset generation now.
    pub fn generation(&mut self) -> io::Result<u32> {
        let r = self.request(NFT_MSG_GETGEN, 0, 0, &[])?;
        r.iter()
            .find_map(|p| {
                attrs(p.get(4..)?)
                    .into_iter()
                    .find(|(t, _)| *t == NFTA_GEN_ID)
                    .and_then(|(_, v)| be32(v))
            })
            .ok_or_else(|| io::Error::other("no generation in NFT_MSG_NEWGEN"))
    }

    pub fn table_exists(&mut self, family: u8, table: &str) -> io::Result<bool> {
        let mut a = Vec::new();
        put_str(&mut a, NFTA_TABLE_NAME, table);
        match self.request(NFT_MSG_GETTABLE, 0, family, &a) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The set's flags and key; `None` when there is no such set (or table).
    pub fn set_info(&mut self, family: u8, table: &str, set: &str) -> io::Result<Option<SetInfo>> {
        let mut a = Vec::new();
        put_str(&mut a, NFTA_SET_TABLE, table);
        put_str(&mut a, NFTA_SET_NAME, set);
        match self.request(NFT_MSG_GETSET, 0, family, &a) {
            Ok(r) => Ok(r.first().map(|p| parse_set(p))),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The named sets of a table (anonymous ones left out): name and what they are.
    pub fn sets(&mut self, family: u8, table: &str) -> io::Result<Vec<(String, SetInfo)>> {
        let mut a = Vec::new();
        put_str(&mut a, NFTA_SET_TABLE, table);
        let r = self.request(NFT_MSG_GETSET, NLM_F_DUMP, family, &a)?;
        Ok(r.iter()
            .filter_map(|p| Some((set_name(p)?, parse_set(p))))
            .filter(|(_, i)| i.flags & NFT_SET_ANONYMOUS == 0)
            .collect())
    }

    /// Every element of a set, as the kernel holds them.
    pub fn elements(&mut self, family: u8, table: &str, set: &str) -> io::Result<Vec<RawElem>> {
        let mut a = Vec::new();
        put_str(&mut a, NFTA_SET_ELEM_LIST_TABLE, table);
        put_str(&mut a, NFTA_SET_ELEM_LIST_SET, set);
        let r = self.request(NFT_MSG_GETSETELEM, NLM_F_DUMP, family, &a)?;
        let mut out = Vec::new();
        for p in r {
            parse_elems(&p, &mut out);
        }
        Ok(out)
    }

    /// Send one transaction of element messages and collect the kernel's answer to each:
    /// `Ok(())` when it committed, else the errno of the batch (`None`) or of the message at
    /// an index.
    pub fn batch(&mut self, genid: Option<u32>, msgs: &[Vec<u8>]) -> io::Result<BatchAnswer> {
        // room for the batch itself and for one answer per message
        let size: usize = msgs.iter().map(Vec::len).sum::<usize>() + 64;
        if size > 160 * 1024 {
            socket::set_send_buffer_force(&self.fd, (size * 2) as u32)?;
        }
        if msgs.len() > 1000 {
            socket::set_recv_buffer_force(&self.fd, (msgs.len() * 128 + (256 << 10)) as u32)?;
        }
        let begin = self.next_seq();
        let mut b = Vec::with_capacity(size + 40);
        batch_begin(&mut b, begin, genid);
        let mut seqs = Vec::with_capacity(msgs.len());
        for m in msgs {
            let seq = self.next_seq();
            let at = b.len();
            b.extend_from_slice(m);
            b[at + 8..at + 12].copy_from_slice(&seq.to_ne_bytes());
            seqs.push(seq);
        }
        let end = self.next_seq();
        batch_end(&mut b, end);
        self.send(&b)?;
        // The batch is processed within the send: every answer to it is queued before the
        // answer to a request sent after it, which marks the end.
        let mark = self.next_seq();
        let mut g = Vec::new();
        let at = msg_begin(&mut g, nft_type(NFT_MSG_GETGEN), NLM_F_REQUEST, mark, 0, 0);
        msg_end(&mut g, at);
        self.send(&g)?;
        let mut answer = BatchAnswer::default();
        let mut acked = 0usize;
        loop {
            let n = socket::recv(&self.fd, &mut self.buf)?;
            if n == 0 {
                return Err(io::Error::other("netlink socket closed"));
            }
            let mut done = false;
            for msg in messages(&self.buf[..n]) {
                if msg.seq == mark {
                    if msg.ty == nft_type(NFT_MSG_NEWGEN) || msg.ty == NLMSG_ERROR {
                        done = true;
                    }
                    continue;
                }
                if msg.ty != NLMSG_ERROR {
                    continue;
                }
                let e = -error_code(msg.payload);
                if msg.seq == begin || msg.seq == end {
                    if e != 0 {
                        answer.batch = Some(e);
                    }
                } else if let Some(i) = seqs.iter().position(|&s| s == msg.seq) {
                    acked += 1;
                    if e != 0 {
                        answer.refused.push((i, e));
                    }
                }
            }
            if done {
                break;
            }
        }
        if answer.batch.is_none() && answer.refused.is_empty() && acked < msgs.len() {
            return Err(io::Error::other(format!(
                "the kernel answered {acked} of {} messages",
                msgs.len()
            )));
        }
        Ok(answer)
    }
}

/// The kernel's answer to a batch: nothing refused means it committed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchAnswer {
    /// An errno for the batch as a whole (ERESTART: the generation moved).
    pub batch: Option<i32>,
    /// (message index, errno) of each refused message.
    pub refused: Vec<(usize, i32)>,
}

impl BatchAnswer {
    pub fn ok(&self) -> bool {
        self.batch.is_none() && self.refused.is_empty()
    }
}

/// What an errno from NEWSETELEM/DELSETELEM means for the element.
pub fn errno_text(op: Op, errno: i32) -> String {
    let what = match (op, errno) {
        (Op::Del, libc::ENOENT) => "not an element of the set",
        (Op::Add, libc::ENOENT) => "the set (or its table) is gone",
        (_, libc::EEXIST) => "it overlaps an element of the set",
        (_, libc::ENOTEMPTY) => "it overlaps an interval of the set",
        (_, libc::ENFILE) | (_, libc::ENOSPC) => "the set is full",
        (_, libc::EPERM) => "not permitted (needs CAP_NET_ADMIN)",
        (_, libc::EINVAL) => "the kernel refused it as invalid for this set",
        (_, libc::EOPNOTSUPP) => "the kernel does not support this on this set",
        _ => "refused by the kernel",
    };
    format!("{what} ({})", io::Error::from_raw_os_error(errno))
}

fn nl(phase: &'static str) -> impl FnOnce(io::Error) -> FirewallError {
    move |source| FirewallError::Netlink { phase, source }
}

/// Add or delete addresses and networks of a live set in one transaction, checked element
/// by element. Returns how many ranges were deleted and added.
pub fn change(
    family: u8,
    table: &str,
    set: &str,
    op: Op,
    nets: &[IpNet],
) -> Result<(usize, usize), FirewallError> {
    let given: Vec<(Width, Range, String)> = nets
        .iter()
        .map(|n| {
            let (w, r) = range_of(n);
            let text = if n.prefix_len() == n.max_prefix_len() {
                n.addr().to_string()
            } else {
                n.to_string()
            };
            (w, r, text)
        })
        .collect();
    change_ranges(family, table, set, op, &given)
}

/// Parse `a`, `a/n` or `a-b` (IPv4 or IPv6) into a range.
pub fn parse_range(s: &str) -> Option<(Width, Range)> {
    if let Some((a, b)) = s.split_once('-') {
        let (wa, ra) = parse_range(a.trim())?;
        let (wb, rb) = parse_range(b.trim())?;
        return (wa == wb && ra.lo == ra.hi && rb.lo == rb.hi && ra.lo <= rb.lo).then_some((
            wa,
            Range {
                lo: ra.lo,
                hi: rb.hi,
            },
        ));
    }
    if let Ok(n) = s.parse::<IpNet>() {
        return Some(range_of(&n));
    }
    s.parse::<IpAddr>().ok().map(|a| range_of(&IpNet::from(a)))
}

/// [`change`] for ranges as well: each given element is (width, range, its text for errors).
pub fn change_ranges(
    family: u8,
    table: &str,
    set: &str,
    op: Op,
    given: &[(Width, Range, String)],
) -> Result<(usize, usize), FirewallError> {
    if given.is_empty() {
        return Ok((0, 0));
    }
    let mut c = Conn::open().map_err(nl("opening the nf_tables socket"))?;
    for _ in 0..RETRIES {
        let genid = c
            .generation()
            .map_err(nl("reading the ruleset generation"))?;
        let Some(info) = c
            .set_info(family, table, set)
            .map_err(nl("reading the set"))?
        else {
            if !c
                .table_exists(family, table)
                .map_err(nl("reading the table"))?
            {
                return Err(FirewallError::NotLoaded);
            }
            return Err(FirewallError::NoSuchSet(set.into()));
        };
        let Some(width) = info.width else {
            return Err(FirewallError::SetElement {
                set: set.into(),
                element: given[0].2.clone(),
                reason: "the set does not hold addresses".into(),
            });
        };
        let mut new = Vec::with_capacity(given.len());
        for (w, r, text) in given {
            if *w != width {
                return Err(FirewallError::SetElement {
                    set: set.into(),
                    element: text.clone(),
                    reason: format!(
                        "an {} address; the set holds {} addresses",
                        w.name(),
                        width.name()
                    ),
                });
            }
            new.push(*r);
        }
        let present = if info.interval() {
            ranges_of(
                width,
                &c.elements(family, table, set)
                    .map_err(nl("reading the set's elements"))?,
            )
        } else if op == Op::Del {
            keys_of(
                width,
                &c.elements(family, table, set)
                    .map_err(nl("reading the set's elements"))?,
            )
        } else {
            Vec::new()
        };
        let p = plan(&info, op, &present, &new).map_err(|r| FirewallError::SetElement {
            set: set.into(),
            element: given[r.index].2.clone(),
            reason: r.reason,
        })?;
        let mut msgs = Vec::with_capacity(p.delete.len() + p.add.len());
        let mut what: Vec<(Op, Range)> = Vec::new();
        for (o, ranges) in [(Op::Del, &p.delete), (Op::Add, &p.add)] {
            for r in ranges.iter() {
                let mut m = Vec::new();
                let els = range_elements(width, info.interval(), *r);
                elem_msg(&mut m, o, 0, family, table, set, &els);
                msgs.push(m);
                what.push((o, *r));
            }
        }
        if msgs.is_empty() {
            return Ok((0, 0));
        }
        let a = c
            .batch(Some(genid), &msgs)
            .map_err(nl("sending the set change"))?;
        if a.ok() {
            return Ok((p.delete.len(), p.add.len()));
        }
        if a.batch == Some(ERESTART) {
            tracing::debug!(set, "ruleset changed while deciding a set change: again");
            continue;
        }
        if let Some(&(i, e)) = a.refused.first() {
            let (o, r) = what[i];
            // name what the user gave: the given element this range came from
            let element = given
                .iter()
                .find(|(_, q, _)| q.lo <= r.hi && r.lo <= q.hi)
                .map_or_else(|| range_text(width, r), |g| g.2.clone());
            let reason = if o != op {
                format!(
                    "merging it, {} `{}` failed: {}",
                    o.word(),
                    range_text(width, r),
                    errno_text(o, e)
                )
            } else {
                errno_text(o, e)
            };
            return Err(FirewallError::SetElement {
                set: set.into(),
                element,
                reason,
            });
        }
        let e = a.batch.unwrap_or(libc::EIO);
        return Err(FirewallError::Netlink {
            phase: "committing the set change",
            source: io::Error::from_raw_os_error(e),
        });
    }
    Err(FirewallError::Netlink {
        phase: "the set change",
        source: io::Error::other(format!(
            "the ruleset kept changing underneath ({RETRIES} tries)"
        )),
    })
}

/// A range as text, with its timeout and the time it has left (ms).
pub type Timed = (String, Option<u64>, Option<u64>);

/// The ranges of a live interval set with the timeout and the time left of each (ms), for
/// carrying timed entries over a reload. Empty when there is no such set.
pub fn timed(family: u8, table: &str, set: &str) -> Result<Vec<Timed>, FirewallError> {
    let mut c = Conn::open().map_err(nl("opening the nf_tables socket"))?;
    let Some(info) = c
        .set_info(family, table, set)
        .map_err(nl("reading the set"))?
    else {
        return Ok(Vec::new());
    };
    let Some(width) = info.width else {
        return Ok(Vec::new());
    };
    let els = c
        .elements(family, table, set)
        .map_err(nl("reading the set's elements"))?;
    let ranges = if info.interval() {
        ranges_of(width, &els)
    } else {
        keys_of(width, &els)
    };
    Ok(ranges
        .into_iter()
        .map(|r| {
            let start = els.iter().find(|e| {
                e.flags & NFT_SET_ELEM_INTERVAL_END == 0 && width.value(&e.key) == Some(r.lo)
            });
            (
                range_text(width, r),
                start.and_then(|e| e.timeout_ms),
                start.and_then(|e| e.expires_ms),
            )
        })
        .collect())
}

/// The named sets of a table with their element counts as `nft list` shows them (a range of
/// an interval set is one element). A missing table is [`FirewallError::NotLoaded`].
pub fn set_sizes(family: u8, table: &str) -> Result<Vec<(String, usize)>, FirewallError> {
    let mut c = Conn::open().map_err(nl("opening the nf_tables socket"))?;
    let sets = match c.sets(family, table) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(FirewallError::NotLoaded),
        r => r.map_err(nl("reading the sets"))?,
    };
    let mut out = Vec::with_capacity(sets.len());
    for (name, info) in sets {
        let els = c
            .elements(family, table, &name)
            .map_err(nl("reading the set's elements"))?;
        let n = match info.width {
            Some(w) if info.interval() => ranges_of(w, &els).len(),
            _ => els
                .iter()
                .filter(|e| e.flags & NFT_SET_ELEM_INTERVAL_END == 0)
                .count(),
        };
        out.push((name, n));
    }
    Ok(out)
}

/// Whether `table` exists (one netlink request, no listing).
pub fn table_exists(family: u8, table: &str) -> Result<bool, FirewallError> {
    Conn::open()
        .and_then(|mut c| c.table_exists(family, table))
        .map_err(nl("reading the table"))
}

/// The elements of a live set as `nft -j` names them: `a`, `a/n` or `a-b`.
pub fn list(family: u8, table: &str, set: &str) -> Result<Vec<String>, FirewallError> {
    let mut c = Conn::open().map_err(nl("opening the nf_tables socket"))?;
    let Some(info) = c
        .set_info(family, table, set)
        .map_err(nl("reading the set"))?
    else {
        return Err(FirewallError::NoSuchSet(set.into()));
    };
    let Some(width) = info.width else {
        return Err(FirewallError::SetElement {
            set: set.into(),
            element: String::new(),
            reason: "the set does not hold addresses".into(),
        });
    };
    let els = c
        .elements(family, table, set)
        .map_err(nl("reading the set's elements"))?;
    let ranges = if info.interval() {
        ranges_of(width, &els)
    } else {
        keys_of(width, &els)
    };
    Ok(ranges.into_iter().map(|r| range_text(width, r)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(lo: u128, hi: u128) -> Range {
        Range { lo, hi }
    }

    fn v4(s: &str) -> u128 {
        u32::from(s.parse::<Ipv4Addr>().unwrap()) as u128
    }

    fn merge_info() -> SetInfo {
        SetInfo {
            flags: NFT_SET_INTERVAL,
            width: Some(Width::V4),
            automerge: true,
        }
    }

    #[test]
    fn ranges_of_user_input() {
        let (w, x) = range_of(&"198.18.1.0/24".parse().unwrap());
        assert_eq!(w, Width::V4);
        assert_eq!(x, r(v4("198.18.1.0"), v4("198.18.1.255")));
        let (w, x) = range_of(&"2001:db8::1/128".parse().unwrap());
        assert_eq!(w, Width::V6);
        assert_eq!(x.lo, x.hi);
        assert_eq!(
            range_text(Width::V4, x_v4("198.18.1.8", "198.18.1.9")),
            "198.18.1.8/31"
        );
        assert_eq!(
            range_text(Width::V4, x_v4("198.18.1.1", "198.18.1.2")),
            "198.18.1.1-198.18.1.2"
        );
        assert_eq!(
            range_text(Width::V4, x_v4("198.18.1.1", "198.18.1.1")),
            "198.18.1.1"
        );
        assert_eq!(range_text(Width::V4, r(0, u32::MAX as u128)), "0.0.0.0/0");
        assert_eq!(range_text(Width::V6, r(0, u128::MAX)), "::/0");
        let (_, x) = range_of(&"2001:db8:1::/64".parse().unwrap());
        assert_eq!(range_text(Width::V6, x), "2001:db8:1::/64");
    }

    fn x_v4(a: &str, b: &str) -> Range {
        r(v4(a), v4(b))
    }

    #[test]
    fn interval_elements_are_start_and_flagged_end() {
        let els = range_elements(Width::V4, true, x_v4("198.18.1.0", "198.18.1.255"));
        assert_eq!(
            els,
            vec![
                (vec![198, 18, 1, 0], 0),
                (vec![198, 18, 2, 0], NFT_SET_ELEM_INTERVAL_END)
            ]
        );
        // reaching the top: no end element
        let els = range_elements(Width::V4, true, x_v4("255.255.255.0", "255.255.255.255"));
        assert_eq!(els, vec![(vec![255, 255, 255, 0], 0)]);
        // plain set: the key alone
        assert_eq!(
            range_elements(Width::V4, false, x_v4("1.2.3.4", "1.2.3.4")).len(),
            1
        );
        let els = range_elements(
            Width::V6,
            true,
            range_of(&"2001:db8::/127".parse().unwrap()).1,
        );
        assert_eq!(els[1].0.len(), 16);
        assert_eq!(els[1].0[15], 2);
    }

    #[test]
    fn dump_to_ranges() {
        let e = |k: [u8; 4], f: u32| RawElem {
            key: k.to_vec(),
            flags: f,
            timeout_ms: None,
            expires_ms: None,
        };
        // as the kernel dumps them (descending, nft's end element at 0, adjacent ranges)
        let els = vec![
            e([198, 18, 1, 10], 1),
            e([198, 18, 1, 8], 0),
            e([198, 18, 1, 4], 1),
            e([198, 18, 1, 3], 0),
            e([198, 18, 1, 3], 1),
            e([198, 18, 1, 2], 0),
            e([0, 0, 0, 0], 1),
            e([255, 0, 0, 0], 0),
        ];
        assert_eq!(
            ranges_of(Width::V4, &els),
            vec![
                x_v4("198.18.1.2", "198.18.1.2"),
                x_v4("198.18.1.3", "198.18.1.3"),
                x_v4("198.18.1.8", "198.18.1.9"),
                x_v4("255.0.0.0", "255.255.255.255"),
            ]
        );
    }

    #[test]
    fn automerge_like_nft() {
        let p = [
            x_v4("198.18.1.1", "198.18.1.1"),
            x_v4("198.18.1.10", "198.18.1.20"),
        ];
        // adjacent: merged, the present one replaced
        let (d, a) = automerge(&p, &[x_v4("198.18.1.2", "198.18.1.2")]);
        assert_eq!(d, vec![p[0]]);
        assert_eq!(a, vec![x_v4("198.18.1.1", "198.18.1.2")]);
        // covered by a range starting lower: nothing to do
        assert_eq!(
            automerge(&p, &[x_v4("198.18.1.15", "198.18.1.20")]),
            (vec![], vec![])
        );
        // equal: replaced (restarts a timeout)
        assert_eq!(automerge(&p, &[p[0]]), (vec![p[0]], vec![p[0]]));
        // same start, shorter: replaced by the present range anew
        assert_eq!(
            automerge(&p, &[x_v4("198.18.1.10", "198.18.1.11")]),
            (vec![p[1]], vec![p[1]])
        );
        // overlapping both: one range
        let (d, a) = automerge(&p, &[x_v4("198.18.1.0", "198.18.1.12")]);
        assert_eq!(d, p.to_vec());
        assert_eq!(a, vec![x_v4("198.18.1.0", "198.18.1.20")]);
        // the new ones among themselves
        let (d, a) = automerge(
            &[],
            &[
                x_v4("198.18.1.7", "198.18.1.12"),
                x_v4("198.18.1.5", "198.18.1.9"),
            ],
        );
        assert!(d.is_empty());
        assert_eq!(a, vec![x_v4("198.18.1.5", "198.18.1.12")]);
        // apart: added as they are
        let (d, a) = automerge(&p, &[x_v4("198.18.1.5", "198.18.1.5")]);
        assert!(d.is_empty());
        assert_eq!(a, vec![x_v4("198.18.1.5", "198.18.1.5")]);
    }

    #[test]
    fn plans_without_automerge_and_deletes() {
        let p = [
            x_v4("198.18.1.2", "198.18.1.2"),
            x_v4("198.18.1.8", "198.18.1.9"),
        ];
        let plain = SetInfo {
            automerge: false,
            ..merge_info()
        };
        let e = plan(&plain, Op::Add, &p, &[x_v4("198.18.1.9", "198.18.1.9")]).unwrap_err();
        assert!(e.reason.contains("overlaps"), "{e:?}");
        let ok = plan(
            &plain,
            Op::Add,
            &p,
            &[x_v4("198.18.1.3", "198.18.1.3"), p[0]],
        )
        .unwrap();
        assert_eq!(ok.add, vec![p[0], x_v4("198.18.1.3", "198.18.1.3")]);
        let e = plan(
            &plain,
            Op::Add,
            &[],
            &[x_v4("1.0.0.0", "1.0.0.9"), x_v4("1.0.0.5", "1.0.0.5")],
        )
        .unwrap_err();
        assert_eq!(e.index, 1);
        // delete: exact ranges only, merged first on auto-merge sets
        let m = merge_info();
        let merged = [x_v4("198.18.1.1", "198.18.1.2")];
        let ok = plan(
            &m,
            Op::Del,
            &merged,
            &[
                x_v4("198.18.1.1", "198.18.1.1"),
                x_v4("198.18.1.2", "198.18.1.2"),
            ],
        )
        .unwrap();
        assert_eq!(ok.delete, merged.to_vec());
        let e = plan(&m, Op::Del, &merged, &[x_v4("198.18.1.1", "198.18.1.1")]).unwrap_err();
        assert!(e.reason.contains("larger range"), "{e:?}");
        let e = plan(&m, Op::Del, &merged, &[x_v4("198.18.9.9", "198.18.9.9")]).unwrap_err();
        assert_eq!(e.reason, "not an element of the set");
        // a plain set holds no networks
        let hash = SetInfo {
            flags: 0,
            width: Some(Width::V4),
            automerge: false,
        };
        assert!(plan(&hash, Op::Add, &[], &[x_v4("1.0.0.0", "1.0.0.255")]).is_err());
    }

    #[test]
    fn message_layout() {
        let mut b = Vec::new();
        elem_msg(
            &mut b,
            Op::Add,
            7,
            FAMILY_INET,
            "bulkhead",
            "g",
            &range_elements(Width::V4, true, x_v4("198.18.1.1", "198.18.1.1")),
        );
        let ms = messages(&b);
        assert_eq!(ms.len(), 1);
        assert_eq!(ms[0].ty, (10 << 8) | NFT_MSG_NEWSETELEM);
        assert_eq!(ms[0].flags, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK);
        assert_eq!(ms[0].seq, 7);
        assert_eq!(&ms[0].payload[..4], &[FAMILY_INET, 0, 0, 0]);
        // the payload parses back as a dump message would
        let mut els = Vec::new();
        parse_elems(ms[0].payload, &mut els);
        assert_eq!(els.len(), 2);
        assert_eq!(els[0].key, vec![198, 18, 1, 1]);
        assert_eq!(els[1].key, vec![198, 18, 1, 2]);
        assert_eq!(els[1].flags, NFT_SET_ELEM_INTERVAL_END);
        let a = attrs(&ms[0].payload[4..]);
        assert_eq!(a[0], (NFTA_SET_ELEM_LIST_TABLE, &b"bulkhead\0"[..]));
        assert_eq!(a[1].0, NFTA_SET_ELEM_LIST_SET);
        // batch framing
        let mut bb = Vec::new();
        batch_begin(&mut bb, 1, Some(0x0102_0304));
        batch_end(&mut bb, 2);
        let ms = messages(&bb);
        assert_eq!(ms[0].ty, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(&ms[0].payload[2..4], &10u16.to_be_bytes());
        assert_eq!(
            attrs(&ms[0].payload[4..]),
            vec![(NFNL_BATCH_GENID, &[1u8, 2, 3, 4][..])]
        );
        assert_eq!(ms[1].ty, NFNL_MSG_BATCH_END);
    }

    #[test]
    fn set_user_data() {
        // flags interval, key length 4, user data with key byte order and auto-merge
        let mut p = vec![FAMILY_INET, 0, 0, 0];
        put_attr(&mut p, NFTA_SET_FLAGS, &NFT_SET_INTERVAL.to_be_bytes());
        put_attr(&mut p, NFTA_SET_KEY_LEN, &4u32.to_be_bytes());
        put_attr(
            &mut p,
            NFTA_SET_USERDATA,
            &[0, 4, 2, 0, 0, 0, 2, 4, 1, 0, 0, 0],
        );
        assert_eq!(parse_set(&p), merge_info());
    }
}
