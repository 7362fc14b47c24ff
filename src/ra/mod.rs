//! IPv6 router advertisements (RFC 4861, RDNSS/DNSSL of RFC 8106) for the segments.
//!
//! * [`packet`]: router solicitation / advertisement encoding and validation.
//! * [`core`]: the sans-IO scheduler of one interface (time passed in): initial fast RAs,
//!   jittered unsolicited RAs, rate-limited answers to solicitations, deprecation of
//!   prefixes that went away (renumbering), and the final RA with router lifetime 0.
//! * [`socket`]: one raw ICMPv6 socket per interface around the core.

pub mod core;
pub mod packet;
pub mod socket;

pub use self::core::{Mode, Prefix, RaConfig, RaScheduler};
pub use self::packet::{PacketError, PrefixInfo, RouterAdvert};
pub use self::socket::{RaHandle, spawn};
