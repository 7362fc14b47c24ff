//! The one place where Bulkhead talks to the operating system below the standard library:
//! durable file writes, raw netlink sockets, socket options, ioctls, signals and the other
//! calls that need `unsafe`. Everything else in the crate is `#![deny(unsafe_code)]`: it calls
//! the small safe functions here, each of which checks its arguments and its result.

pub mod fs;
pub mod icmp6;
pub mod netlink;
pub mod proc;
pub mod socket;
pub mod term;
pub mod watchdog;
