//! DHCPv6 lease records and their in-memory index. They are kept in their own journal
//! (`leases6.journal`, same framing, group commit and recovery as the DHCPv4 journal: see
//! [`crate::dhcp::leases`]) beside the DHCPv4 one.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};

pub use crate::dhcp::leases::LeaseState;
use crate::dhcp::leases::{JournalRecord, hex_opt};

/// File name of the DHCPv6 journal inside the state directory.
pub const JOURNAL_FILE: &str = "leases6.journal";
/// Lock file of the DHCPv6 journal.
pub const LOCK_FILE: &str = "leases6.lock";
/// Prefix of the corrupt copies kept aside.
pub const CORRUPT_PREFIX: &str = "leases6.journal.corrupt-";

/// One DHCPv6 lease (IA_NA address). Also the listing format: DUID as hex, expiry as Unix
/// seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease6 {
    /// Segment name.
    pub segment: String,
    /// Leased address.
    pub addr: Ipv6Addr,
    /// Client DUID (hex); absent for declined addresses.
    #[serde(with = "hex_opt", default)]
    pub duid: Option<Vec<u8>>,
    /// IAID of the client's IA_NA.
    pub iaid: u32,
    /// Host name from the client's FQDN option, cleaned.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Expiry, Unix seconds.
    pub expires: u64,
    /// State of the record.
    pub state: LeaseState,
}

impl JournalRecord for Lease6 {
    type Key = (String, Ipv6Addr);
    const JOURNAL_FILE: &'static str = JOURNAL_FILE;
    const LOCK_FILE: &'static str = LOCK_FILE;
    const CORRUPT_PREFIX: &'static str = CORRUPT_PREFIX;
    fn key(&self) -> Self::Key {
        (self.segment.clone(), self.addr)
    }
    fn expires(&self) -> u64 {
        self.expires
    }
}

/// Identity of a binding: DUID and IAID.
pub type BindingKey = (Vec<u8>, u32);

impl Lease6 {
    /// The (DUID, IAID) holding this record; `None` for declined addresses.
    pub fn binding(&self) -> Option<BindingKey> {
        if self.state == LeaseState::Declined {
            return None;
        }
        Some((self.duid.clone()?, self.iaid))
    }

    /// An unexpired binding?
    pub fn is_active(&self, now: u64) -> bool {
        self.state == LeaseState::Bound && self.expires > now
    }
}

#[derive(Debug, Default, Clone)]
struct Seg {
    by_addr: HashMap<Ipv6Addr, Lease6>,
    by_binding: HashMap<BindingKey, Ipv6Addr>,
}

/// In-memory index: per segment, by address and by (DUID, IAID).
#[derive(Debug, Default, Clone)]
pub struct Lease6Db {
    segs: HashMap<String, Seg>,
}

impl Lease6Db {
    /// Insert or replace the record at `(segment, addr)`.
    pub fn upsert(&mut self, l: Lease6) {
        let seg = self.segs.entry(l.segment.clone()).or_default();
        if let Some(old) = seg.by_addr.get(&l.addr)
            && let Some(b) = old.binding()
            && seg.by_binding.get(&b) == Some(&old.addr)
        {
            seg.by_binding.remove(&b);
        }
        if let Some(b) = l.binding() {
            seg.by_binding.insert(b, l.addr);
        }
        seg.by_addr.insert(l.addr, l);
    }

    /// The record at an address.
    pub fn get(&self, segment: &str, addr: Ipv6Addr) -> Option<&Lease6> {
        self.segs.get(segment)?.by_addr.get(&addr)
    }

    /// The latest record of a binding.
    pub fn by_binding(&self, segment: &str, key: &BindingKey) -> Option<&Lease6> {
        let s = self.segs.get(segment)?;
        s.by_addr.get(s.by_binding.get(key)?)
    }

    /// Drop records that expired before `now`; returns them.
    pub fn expire(&mut self, now: u64) -> Vec<Lease6> {
        let mut gone = Vec::new();
        for seg in self.segs.values_mut() {
            let dead: Vec<Ipv6Addr> = seg
                .by_addr
                .iter()
                .filter(|(_, l)| l.expires <= now)
                .map(|(a, _)| *a)
                .collect();
            for a in dead {
                if let Some(l) = seg.by_addr.remove(&a) {
                    if let Some(b) = l.binding()
                        && seg.by_binding.get(&b) == Some(&a)
                    {
                        seg.by_binding.remove(&b);
                    }
                    gone.push(l);
                }
            }
        }
        gone
    }

    /// All records sorted by segment then address.
    pub fn sorted(&self) -> Vec<Lease6> {
        let mut v: Vec<Lease6> = self
            .segs
            .values()
            .flat_map(|s| s.by_addr.values().cloned())
            .collect();
        v.sort_by(|a, b| (&a.segment, a.addr).cmp(&(&b.segment, b.addr)));
        v
    }
}
