//! The core never panics: arbitrary bytes and weird-but-well-formed messages.

use std::net::{Ipv4Addr, SocketAddrV4};

use bulkhead::dhcp::PoolConfig;
use bulkhead::dhcp::core::{RxInfo, Server};
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode, UnknownOption};
use dhcproto::{Encodable, Encoder};
use proptest::prelude::*;

fn server() -> Server {
    let mut s = Server::new();
    let mut p = PoolConfig::new(
        "lan",
        "veth0",
        Ipv4Addr::new(198, 18, 1, 1),
        "198.18.1.0/29".parse().unwrap(),
        vec![(Ipv4Addr::new(198, 18, 1, 2), Ipv4Addr::new(198, 18, 1, 4))],
    );
    p.reservations.push(bulkhead::dhcp::Reservation {
        mac: [2, 0, 0, 0, 0, 1],
        addr: Ipv4Addr::new(198, 18, 1, 6),
        hostname: Some("r".into()),
        group: Some("g".into()),
    });
    p.extra_options.push((224, vec![7; 300]));
    s.add_pool(p);
    s
}

fn addr() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        Just(Ipv4Addr::UNSPECIFIED),
        Just(Ipv4Addr::BROADCAST),
        (0u32..8).prop_map(|n| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 1, 0)) + n)),
        any::<u32>().prop_map(Ipv4Addr::from),
    ]
}

fn option() -> impl Strategy<Value = DhcpOption> {
    prop_oneof![
        addr().prop_map(DhcpOption::RequestedIpAddress),
        addr().prop_map(DhcpOption::ServerIdentifier),
        any::<u32>().prop_map(DhcpOption::AddressLeaseTime),
        any::<u16>().prop_map(DhcpOption::MaxMessageSize),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(DhcpOption::ClientIdentifier),
        proptest::collection::vec(any::<u8>(), 0..60).prop_map(|v| {
            DhcpOption::ParameterRequestList(v.into_iter().map(OptionCode::from).collect())
        }),
        "[a-z]{0,70}".prop_map(DhcpOption::Hostname),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(c, d)| DhcpOption::Unknown(UnknownOption::new(OptionCode::from(c), d))),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        any::<u8>(),
        any::<u32>(),
        addr(),
        addr(),
        proptest::collection::vec(any::<u8>(), 0..20),
        any::<bool>(),
        proptest::collection::vec(option(), 0..8),
    )
        .prop_map(|(mt, xid, ciaddr, giaddr, chaddr, bcast, opts)| {
            let mut m = Message::new_with_id(
                xid,
                ciaddr,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                giaddr,
                &[],
            );
            m.set_chaddr(&chaddr);
            if bcast {
                m.set_flags(Flags::default().set_broadcast());
            }
            m.opts_mut()
                .insert(DhcpOption::MessageType(MessageType::from(mt % 10)));
            for o in opts {
                m.opts_mut().insert(o);
            }
            m
        })
}

fn rx(ip: Ipv4Addr) -> RxInfo {
    RxInfo::new("lan", SocketAddrV4::new(ip, 68))
}

proptest! {
    // Failures are printed with their minimal input; no regression file
    // (integration tests have no source-relative place for one).
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700), now in any::<u64>()) {
        let mut s = server();
        let _ = s.handle_packet(now, &rx(Ipv4Addr::UNSPECIFIED), &bytes);
    }

    #[test]
    fn mangled_valid_packets_never_panic(
        m in message(),
        flips in proptest::collection::vec((0usize..600, any::<u8>()), 0..6),
        cut in 0usize..700,
    ) {
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        for (i, b) in flips {
            if let Some(x) = buf.get_mut(i) { *x = b; }
        }
        buf.truncate(cut.max(240));
        let mut s = server();
        let _ = s.handle_packet(1_000, &rx(Ipv4Addr::UNSPECIFIED), &buf);
    }

    #[test]
    fn weird_message_sequences_never_panic(
        msgs in proptest::collection::vec((message(), addr(), 0u64..100_000), 1..25),
        start in prop_oneof![Just(0u64), Just(1_000u64), Just(u64::MAX - 50_000), any::<u64>()],
    ) {
        let mut s = server();
        let mut now = start;
        for (m, src, dt) in msgs {
            now = now.saturating_add(dt);
            let out = s.handle_message(now, &rx(src), &m);
            for r in &out.replies {
                prop_assert!(r.payload.len() >= 300);
                // Replies always respect the client's size limit.
                let limit = match m.opts().get(OptionCode::MaxMessageSize) {
                    Some(DhcpOption::MaxMessageSize(n)) => (*n).max(576),
                    _ => 576,
                } as usize - 28;
                prop_assert!(r.payload.len() <= limit);
            }
            // No address is ever bound to two clients.
            let _ = s.expire(now);
            let mut seen = std::collections::HashSet::new();
            for l in s.leases().iter() {
                prop_assert!(seen.insert((l.segment.clone(), l.addr)));
            }
            // The reserved address is never handed to anybody else.
            if let Some(l) = s.leases().get("lan", Ipv4Addr::new(198, 18, 1, 6))
                && l.state == bulkhead::dhcp::LeaseState::Bound
            {
                prop_assert_eq!(l.mac, [2, 0, 0, 0, 0, 1]);
            }
        }
    }
}
