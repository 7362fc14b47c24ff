//! The one place where Bulkhead talks to the operating system below the standard library:
//! durable file writes, and (moved here over time) raw netlink sockets, ioctls and the other
//! calls that need `unsafe`. Everything else in the crate is `#![deny(unsafe_code)]`.

pub mod fs;
pub mod process;
