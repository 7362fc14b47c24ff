//! DHCPv4 server: pool configuration, sans-IO protocol core, crash-safe
//! lease store and the tokio socket layer.
//!
//! * [`config`]: [`PoolConfig`] / [`Reservation`], filled in by the product
//!   from its validated configuration.
//! * [`core`]: the RFC 2131/2132 state machine, driven with the time passed
//!   in; returns lease changes to make durable, then replies to send.
//! * [`leases`]: lease records, the in-memory index and the journaled,
//!   group-committed, crash-safe [`LeaseStore`].
//! * [`server`]: one UDP socket per segment; ACKs leave only after their
//!   lease record is on disk.
//! * [`text`]: client-chosen text (host names) with control characters
//!   escaped, as it is stored and printed.
//!
//! # Use
//!
//! ```no_run
//! # async fn run(pools: Vec<bulkhead::dhcp::PoolConfig>, more: bulkhead::dhcp::PoolConfig)
//! #     -> Result<(), bulkhead::dhcp::DhcpError> {
//! use std::path::Path;
//! use bulkhead::dhcp::{serve, LeaseEventKind};
//!
//! let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
//! let dhcp = serve(pools, Path::new("/var/lib/bulkhead/dhcp"), Some(tx)).await?;
//! tokio::spawn(async move {
//!     while let Some(ev) = events.recv().await {
//!         // Bound is sent for every ACK (new lease and each renewal).
//!         if ev.kind == LeaseEventKind::Bound {
//!             if let Some(group) = &ev.lease.group {
//!                 println!("add {} to firewall set {group}", ev.lease.addr);
//!             }
//!         }
//!     }
//! });
//! dhcp.add_pool(more)?;            // start (or update) one segment
//! dhcp.remove_pool("dmz").await?;  // stop one segment, others keep running
//! let _json = serde_json::to_string(&dhcp.leases()).unwrap();
//! dhcp.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Without a running server in the process, list the leases of a state
//! directory with [`leases::read_leases`] (safe while a server writes it).

pub mod config;
pub mod core;
pub mod leases;
pub mod server;
pub mod text;

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
