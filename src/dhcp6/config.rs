//! What the DHCPv6 server serves on one segment, filled in by the product from its
//! validated configuration (or by a test).

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

/// Default preferred lifetime of a leased address, seconds (RFC 9096's 45 minutes).
pub const DEFAULT_PREFERRED: u32 = 2700;
/// Default valid lifetime of a leased address, seconds (RFC 9096's 90 minutes).
pub const DEFAULT_VALID: u32 = 5400;

/// How the segment uses DHCPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dhcp6Mode {
    /// Information-Request only (DNS servers and domains); addresses by SLAAC.
    Stateless,
    /// Addresses (IA_NA) from the pool, and the information above.
    Stateful,
}

/// One served segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentV6 {
    /// Segment name (leases are per segment).
    pub segment: String,
    /// Interface the segment's socket is bound to.
    pub interface: String,
    /// Stateless or stateful.
    pub mode: Dhcp6Mode,
    /// The segment's prefix: Confirm answers NotOnLink for addresses outside it.
    pub subnet: Ipv6Net,
    /// First address of the pool (inclusive).
    pub pool_start: Ipv6Addr,
    /// Last address of the pool (inclusive).
    pub pool_end: Ipv6Addr,
    /// DNS servers (option 23).
    #[serde(default)]
    pub dns: Vec<Ipv6Addr>,
    /// Domain search list (option 24).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Preferred lifetime of leased addresses, seconds.
    #[serde(default = "default_preferred")]
    pub preferred_lifetime: u32,
    /// Valid lifetime of leased addresses, seconds (the lease's length).
    #[serde(default = "default_valid")]
    pub valid_lifetime: u32,
    /// Answer a Solicit carrying Rapid Commit with a committed Reply.
    #[serde(default = "yes")]
    pub rapid_commit: bool,
}

fn default_preferred() -> u32 {
    DEFAULT_PREFERRED
}
fn default_valid() -> u32 {
    DEFAULT_VALID
}
fn yes() -> bool {
    true
}

impl SegmentV6 {
    /// A segment with the default pool `PREFIX::1000`-`PREFIX::1fff` and lifetimes.
    pub fn new(segment: &str, interface: &str, mode: Dhcp6Mode, subnet: Ipv6Net) -> Self {
        let base = u128::from(subnet.network());
        SegmentV6 {
            segment: segment.to_string(),
            interface: interface.to_string(),
            mode,
            subnet,
            pool_start: Ipv6Addr::from(base | 0x1000),
            pool_end: Ipv6Addr::from(base | 0x1fff),
            dns: Vec::new(),
            domains: Vec::new(),
            preferred_lifetime: DEFAULT_PREFERRED,
            valid_lifetime: DEFAULT_VALID,
            rapid_commit: true,
        }
    }

    /// Is the address inside the pool?
    pub fn in_pool(&self, a: Ipv6Addr) -> bool {
        let a = u128::from(a);
        a >= u128::from(self.pool_start) && a <= u128::from(self.pool_end)
    }
}
