//! Pool description handed to the DHCP server by the rest of the product.
//!
//! The product validates its own configuration model and turns each segment
//! that runs DHCP into one [`PoolConfig`]. The checks listed on the fields
//! (ranges inside the subnet, not covering the server address, no overlap)
//! are done by the caller; the server only relies on them for correctness of
//! the addresses it hands out, never for memory safety.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// A static reservation: the client with this MAC always gets `addr`, and
/// nobody else ever does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Hardware address of the client (chaddr of Ethernet clients).
    #[serde(with = "crate::dhcp::leases::mac_serde")]
    pub mac: [u8; 6],
    /// Address reserved for this client. Must be inside the pool subnet; it
    /// may lie outside the dynamic ranges.
    pub addr: Ipv4Addr,
    /// Host name sent to the client in option 12, if any.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Firewall group the address belongs to; reported in lease events.
    #[serde(default)]
    pub group: Option<String>,
}

/// One DHCP pool, served on one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    /// Segment name, e.g. "dmz". Unique across pools.
    pub segment: String,
    /// Network interface the segment lives on, e.g. "eth0.10".
    pub interface: String,
    /// Gateway address on the segment: server identifier and router option.
    pub server_addr: Ipv4Addr,
    /// Subnet of the segment, e.g. 192.168.10.0/24.
    pub subnet: ipnet::Ipv4Net,
    /// Inclusive dynamic ranges (validated elsewhere).
    pub ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Default lease time in seconds.
    pub lease_time: u32,
    /// Upper bound for lease times a client asks for, in seconds.
    pub max_lease_time: u32,
    /// DNS servers (option 6).
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// Domain name (option 15).
    #[serde(default)]
    pub domain: Option<String>,
    /// Static reservations by MAC.
    #[serde(default)]
    pub reservations: Vec<Reservation>,
    /// Option code -> already-encoded payload bytes.
    #[serde(default)]
    pub extra_options: Vec<(u8, Vec<u8>)>,
    /// Interface MTU (option 26).
    #[serde(default)]
    pub mtu: Option<u16>,
    /// How long an address refused with DHCPDECLINE stays out of the pool,
    /// in seconds. Defaults to [`DEFAULT_DECLINE_QUARANTINE`].
    #[serde(default = "default_quarantine")]
    pub decline_quarantine: u32,
    /// How long an offered address stays reserved for the client it was
    /// offered to, in seconds. Defaults to [`DEFAULT_OFFER_HOLD`].
    #[serde(default = "default_offer_hold")]
    pub offer_hold: u32,
    /// Relay agents whose relayed packets this segment answers: a packet
    /// with a giaddr is served (from this segment's pool, the one it
    /// arrived on) only when the giaddr is listed here; otherwise it is
    /// ignored. Empty: relayed packets are never answered.
    #[serde(default)]
    pub relays: Vec<Ipv4Addr>,
}

/// Default quarantine of a declined address (seconds).
pub const DEFAULT_DECLINE_QUARANTINE: u32 = 600;
/// Default time an offer holds its address (seconds).
pub const DEFAULT_OFFER_HOLD: u32 = 60;

fn default_quarantine() -> u32 {
    DEFAULT_DECLINE_QUARANTINE
}
fn default_offer_hold() -> u32 {
    DEFAULT_OFFER_HOLD
}

impl PoolConfig {
    /// A pool with the given essentials and defaults for everything else
    /// (no DNS, no domain, no reservations, 1 h lease, 24 h maximum).
    pub fn new(
        segment: impl Into<String>,
        interface: impl Into<String>,
        server_addr: Ipv4Addr,
        subnet: ipnet::Ipv4Net,
        ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    ) -> Self {
        PoolConfig {
            segment: segment.into(),
            interface: interface.into(),
            server_addr,
            subnet,
            ranges,
            lease_time: 3600,
            max_lease_time: 86400,
            dns: Vec::new(),
            domain: None,
            reservations: Vec::new(),
            extra_options: Vec::new(),
            mtu: None,
            decline_quarantine: DEFAULT_DECLINE_QUARANTINE,
            offer_hold: DEFAULT_OFFER_HOLD,
            relays: Vec::new(),
        }
    }

    /// Is `addr` inside one of the dynamic ranges?
    pub fn in_ranges(&self, addr: Ipv4Addr) -> bool {
        let a = u32::from(addr);
        self.ranges
            .iter()
            .any(|(lo, hi)| u32::from(*lo) <= a && a <= u32::from(*hi))
    }

    /// Is `addr` a usable host address of the subnet (not network, not
    /// broadcast, not the server itself)?
    pub fn is_host_addr(&self, addr: Ipv4Addr) -> bool {
        self.subnet.contains(&addr)
            && addr != self.server_addr
            && (self.subnet.prefix_len() >= 31
                || (addr != self.subnet.network() && addr != self.subnet.broadcast()))
    }

    /// The reservation for this MAC, if any.
    pub fn reservation_for_mac(&self, mac: &[u8; 6]) -> Option<&Reservation> {
        self.reservations.iter().find(|r| &r.mac == mac)
    }

    /// The reservation holding this address, if any.
    pub fn reservation_for_addr(&self, addr: Ipv4Addr) -> Option<&Reservation> {
        self.reservations.iter().find(|r| r.addr == addr)
    }

    /// Number of addresses in the dynamic ranges.
    pub fn range_len(&self) -> usize {
        self.ranges
            .iter()
            .map(|(lo, hi)| (u32::from(*hi).saturating_sub(u32::from(*lo)) as usize) + 1)
            .sum()
    }

    /// The `idx`-th address of the dynamic ranges (in range order).
    pub fn range_addr(&self, mut idx: usize) -> Option<Ipv4Addr> {
        for (lo, hi) in &self.ranges {
            let (lo, hi) = (u32::from(*lo), u32::from(*hi));
            let n = (hi.saturating_sub(lo) as usize) + 1;
            if idx < n {
                return Some(Ipv4Addr::from(lo + idx as u32));
            }
            idx -= n;
        }
        None
    }

    /// Every address of the dynamic ranges, in order.
    pub fn range_addrs(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.ranges.iter().flat_map(|(lo, hi)| {
            let (lo, hi) = (u32::from(*lo), u32::from(*hi));
            (lo..=hi).map(Ipv4Addr::from)
        })
    }
}
