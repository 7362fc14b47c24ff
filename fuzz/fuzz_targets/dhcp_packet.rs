//! Fuzz the DHCP packet handler: the input is a sequence of packets, each
//! `[segment: u8][time step: u8][len: u16 BE][bytes]`, fed to one server
//! (so state carries over between packets). Besides "never panics", checks
//! that no address is ever held by two lease records and that replies
//! decode.
//!
//! Run from the `fuzz` directory: `cargo +nightly fuzz run dhcp_packet`.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};

use bulkhead::dhcp::PoolConfig;
use bulkhead::dhcp::core::{RxInfo, Server};
use libfuzzer_sys::fuzz_target;

fn server() -> Server {
    let mut s = Server::new();
    for (i, seg) in ["a", "b"].into_iter().enumerate() {
        let third = 10 + i as u8;
        let mut p = PoolConfig::new(
            seg,
            seg,
            Ipv4Addr::new(198, 18, third, 1),
            format!("198.18.{third}.0/29").parse().unwrap(),
            vec![(
                Ipv4Addr::new(198, 18, third, 2),
                Ipv4Addr::new(198, 18, third, 5),
            )],
        );
        p.lease_time = 60;
        p.max_lease_time = 120;
        p.dns = vec![Ipv4Addr::new(198, 18, third, 1)];
        p.domain = Some(format!("{seg}.test"));
        p.extra_options = vec![(42, vec![198, 18, third, 1]), (224, vec![0x55; 250])];
        p.reservations.push(bulkhead::dhcp::Reservation {
            mac: [2, 0, 0, 0, 0, 1],
            addr: Ipv4Addr::new(198, 18, third, 6),
            hostname: Some("res".into()),
            group: Some("g".into()),
        });
        s.add_pool(p);
    }
    s
}

fuzz_target!(|data: &[u8]| {
    let mut s = server();
    let mut now = 1_800_000_000u64;
    let mut rest = data;
    while rest.len() >= 4 {
        let seg = if rest[0] & 1 == 0 { "a" } else { "b" };
        now += u64::from(rest[1]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]])).min(rest.len() - 4);
        let pkt = &rest[4..4 + len];
        rest = &rest[4 + len..];
        let src = SocketAddrV4::new(Ipv4Addr::new(198, 18, 10, rest.len() as u8), 68);
        let out = s.handle_packet(now, &RxInfo::new(seg, src), pkt);
        for r in &out.replies {
            assert!(r.message().is_some(), "reply does not decode");
            assert!(r.payload.len() <= 1500);
        }
        let _ = s.expire(now);
    }
    let mut seen = std::collections::HashSet::new();
    for l in s.leases().iter() {
        assert!(seen.insert((l.segment.clone(), l.addr)));
    }
});
