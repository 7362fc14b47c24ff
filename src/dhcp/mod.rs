//! DHCPv4 server: pool configuration, sans-IO protocol core, crash-safe
//! lease store and the tokio socket layer.

pub mod config;
pub mod core;
pub mod leases;

pub use self::config::{PoolConfig, Reservation};
pub use self::leases::{Lease, LeaseEvent, LeaseEventKind, LeaseState, LeaseStore};
