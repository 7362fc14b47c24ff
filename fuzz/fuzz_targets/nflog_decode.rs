//! Fuzz the NFLOG decoder: arbitrary bytes as a datagram read from the netlink socket, as
//! the attributes of one packet record, and as the IP packet it carries. Never panics; a
//! decoded packet's ports are there exactly when its transport header was.
//!
//! Run from the `fuzz` directory: `cargo +nightly fuzz run nflog_decode`.
#![no_main]

use bulkhead::logship::nflog::{L4, decode_attrs, decode_datagram, decode_packet, split_prefix};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for r in decode_datagram(data).into_iter().flatten() {
        let _ = split_prefix(&r.prefix);
        if let Some(p) = &r.packet {
            let _ = (p.proto_name(), p.sport(), p.dport());
        }
    }
    let r = decode_attrs(data);
    let _ = split_prefix(&r.prefix);
    if let Some(p) = decode_packet(data) {
        match p.l4 {
            L4::Tcp { .. } | L4::Udp { .. } => assert!(p.dport().is_some()),
            _ => assert!(p.dport().is_none()),
        }
    }
});
