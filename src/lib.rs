//! Bulkhead: a network-segmentation gateway.
