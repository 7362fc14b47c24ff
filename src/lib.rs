//! Bulkhead: a network-segmentation gateway.

pub mod dhcp;
