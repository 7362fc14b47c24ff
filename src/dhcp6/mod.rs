//! DHCPv6 server (RFC 8415): stateless (Information-Request) and stateful IA_NA service per
//! segment, with a crash-safe lease journal.
//!
//! * [`config`]: [`SegmentV6`], what one segment serves.
//! * [`core`]: the sans-IO server ([`Server6`]): time and packet in, lease records to make
//!   durable and the reply out.
//! * [`leases`]: [`Lease6`] records (keyed by segment and address, bound to DUID and IAID),
//!   kept in `leases6.journal` by the generic [`crate::dhcp::leases::LeaseStore`].
//! * [`server`]: one UDP socket on port 547 per interface, joined to ff02::1:2; a Reply
//!   leaves only after its lease is on disk. The server DUID (DUID-UUID) is kept in
//!   `dhcp6.duid` in the state directory.

pub mod config;
pub mod core;
pub mod leases;
pub mod server;

pub use self::config::{Dhcp6Mode, SegmentV6};
pub use self::core::{Outcome6, Server6};
pub use self::leases::{JOURNAL_FILE, Lease6};
pub use self::server::{Dhcp6Handle, load_or_create_duid, read_leases6, serve6};

/// Errors of the DHCPv6 server.
#[derive(Debug, thiserror::Error)]
pub enum Dhcp6Error {
    /// Lease store failure.
    #[error(transparent)]
    Store(#[from] crate::dhcp::StoreError),
    /// The server DUID file could not be read or written.
    #[error("DHCPv6 server DUID {path}: {source}")]
    Duid {
        /// The DUID file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A segment's socket could not be opened.
    #[error("DHCPv6 socket for segment {segment} on {interface}: {source}")]
    Socket {
        /// Segment name.
        segment: String,
        /// Interface name.
        interface: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No such segment is served.
    #[error("no DHCPv6 segment named {0:?}")]
    NoSuchSegment(String),
    /// The async runtime failed.
    #[error("runtime: {0}")]
    Runtime(String),
}
