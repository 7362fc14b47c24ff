//! DHCPv4 server: pool configuration, sans-IO protocol core, crash-safe
//! lease store and the tokio socket layer.
//!
//! Start with [`serve`]; add or remove segments on the returned
//! [`DhcpHandle`]; list leases with [`DhcpHandle::leases`] (or
//! [`leases::read_leases`] from the state directory when the server is not
//! running in this process); receive [`LeaseEvent`]s on the channel given
//! to [`serve`].

pub mod config;
pub mod core;
pub mod leases;
pub mod server;

pub use self::config::{PoolConfig, Reservation};
pub use self::leases::{Lease, LeaseEvent, LeaseEventKind, LeaseState, LeaseStore, StoreError};
pub use self::server::{DhcpHandle, EventSender, serve, serve_with};

/// Errors of the DHCP server.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// Lease store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A segment's socket could not be opened.
    #[error("DHCP socket for segment {segment} on {interface}: {source}")]
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
    #[error("no DHCP segment named {0:?}")]
    NoSuchSegment(String),
    /// The async runtime failed (task panicked or was cancelled).
    #[error("runtime: {0}")]
    Runtime(String),
}
