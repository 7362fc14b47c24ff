//! Timeline tests of the sans-IO core: the time is passed in, nothing sleeps.

use std::net::{Ipv4Addr, SocketAddrV4};

use bulkhead::dhcp::core::{Destination, Outcome, RxInfo, Server};
use bulkhead::dhcp::{LeaseEventKind, LeaseState, PoolConfig, Reservation};
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Encodable, Encoder};

const T0: u64 = 1_800_000_000;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn lan() -> PoolConfig {
    let mut p = PoolConfig::new(
        "lan",
        "veth-lan",
        ip("198.18.1.1"),
        "198.18.1.0/24".parse().unwrap(),
        vec![(ip("198.18.1.10"), ip("198.18.1.12"))],
    );
    p.dns = vec![ip("198.18.1.1"), ip("198.18.1.2")];
    p.domain = Some("lan.example".into());
    p.mtu = Some(1400);
    p
}

fn dmz() -> PoolConfig {
    PoolConfig::new(
        "dmz",
        "veth-dmz",
        ip("198.18.2.1"),
        "198.18.2.0/24".parse().unwrap(),
        vec![(ip("198.18.2.100"), ip("198.18.2.200"))],
    )
}

fn server() -> Server {
    let mut s = Server::new();
    s.add_pool(lan());
    s.add_pool(dmz());
    s
}

fn rx(seg: &str) -> RxInfo {
    RxInfo::new(seg, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68))
}

fn rx_from(seg: &str, src: Ipv4Addr) -> RxInfo {
    RxInfo::new(seg, SocketAddrV4::new(src, 68))
}

fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

fn msg(mt: MessageType, m: [u8; 6], xid: u32) -> Message {
    let mut msg = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &m,
    );
    msg.opts_mut().insert(DhcpOption::MessageType(mt));
    msg
}

fn with(mut m: Message, o: DhcpOption) -> Message {
    m.opts_mut().insert(o);
    m
}

fn encode(m: &Message) -> Vec<u8> {
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).unwrap();
    buf
}

/// Feed through the byte path, as the socket layer does.
fn feed(s: &mut Server, now: u64, r: &RxInfo, m: &Message) -> Outcome {
    s.handle_packet(now, r, &encode(m))
}

fn only_reply(o: &Outcome) -> (Message, Destination) {
    assert_eq!(o.replies.len(), 1, "expected one reply, got {o:?}");
    let r = &o.replies[0];
    (r.message().expect("reply decodes"), r.dest)
}

fn mt(m: &Message) -> MessageType {
    m.opts().msg_type().unwrap()
}

fn opt(m: &Message, c: OptionCode) -> Option<&DhcpOption> {
    m.opts().get(c)
}

/// DISCOVER + REQUEST(selecting); returns the ACKed address.
fn dora(s: &mut Server, now: u64, seg: &str, m: [u8; 6], cid: Option<&[u8]>) -> Ipv4Addr {
    let mut d = msg(MessageType::Discover, m, 1);
    if let Some(c) = cid {
        d = with(d, DhcpOption::ClientIdentifier(c.to_vec()));
    }
    let o = feed(s, now, &rx(seg), &d);
    let (offer, _) = only_reply(&o);
    assert_eq!(mt(&offer), MessageType::Offer);
    let yi = offer.yiaddr();
    let sid = match opt(&offer, OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(a)) => *a,
        other => panic!("no server id: {other:?}"),
    };
    let mut r = msg(MessageType::Request, m, 2);
    r = with(r, DhcpOption::ServerIdentifier(sid));
    r = with(r, DhcpOption::RequestedIpAddress(yi));
    if let Some(c) = cid {
        r = with(r, DhcpOption::ClientIdentifier(c.to_vec()));
    }
    let o = feed(s, now, &rx(seg), &r);
    let (ack, _) = only_reply(&o);
    assert_eq!(mt(&ack), MessageType::Ack, "{o:?}");
    assert_eq!(ack.yiaddr(), yi);
    yi
}

#[test]
fn dora_full_options_and_durable_change() {
    let mut s = server();
    let d = msg(MessageType::Discover, mac(1), 0x1234);
    let o = feed(&mut s, T0, &rx("lan"), &d);
    assert!(o.changes.is_empty(), "offers are not journaled");
    let (offer, dest) = only_reply(&o);
    assert_eq!(mt(&offer), MessageType::Offer);
    assert_eq!(offer.xid(), 0x1234);
    assert_eq!(offer.yiaddr(), ip("198.18.1.10"));
    assert_eq!(
        dest,
        Destination::UnicastL2 {
            ip: ip("198.18.1.10"),
            mac: mac(1)
        }
    );
    assert_eq!(
        opt(&offer, OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(ip("255.255.255.0")))
    );
    assert_eq!(
        opt(&offer, OptionCode::Router),
        Some(&DhcpOption::Router(vec![ip("198.18.1.1")]))
    );
    assert_eq!(
        opt(&offer, OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![
            ip("198.18.1.1"),
            ip("198.18.1.2")
        ]))
    );
    assert_eq!(
        opt(&offer, OptionCode::DomainName),
        Some(&DhcpOption::DomainName("lan.example".into()))
    );
    assert_eq!(
        opt(&offer, OptionCode::BroadcastAddr),
        Some(&DhcpOption::BroadcastAddr(ip("198.18.1.255")))
    );
    assert_eq!(
        opt(&offer, OptionCode::InterfaceMtu),
        Some(&DhcpOption::InterfaceMtu(1400))
    );
    assert_eq!(
        opt(&offer, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    assert_eq!(
        opt(&offer, OptionCode::Renewal),
        Some(&DhcpOption::Renewal(1800))
    );
    assert_eq!(
        opt(&offer, OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(3150))
    );
    assert!(o.replies[0].payload.len() >= 300);

    // A second client is offered a different address while the offer holds.
    let o2 = feed(
        &mut s,
        T0,
        &rx("lan"),
        &msg(MessageType::Discover, mac(2), 9),
    );
    assert_eq!(only_reply(&o2).0.yiaddr(), ip("198.18.1.11"));

    let r = with(
        with(
            msg(MessageType::Request, mac(1), 0x1235),
            DhcpOption::ServerIdentifier(ip("198.18.1.1")),
        ),
        DhcpOption::RequestedIpAddress(ip("198.18.1.10")),
    );
    let o = feed(&mut s, T0 + 1, &rx("lan"), &r);
    let (ack, _) = only_reply(&o);
    assert_eq!(mt(&ack), MessageType::Ack);
    assert_eq!(o.changes.len(), 1);
    assert_eq!(o.changes[0].state, LeaseState::Bound);
    assert_eq!(o.changes[0].addr, ip("198.18.1.10"));
    assert_eq!(o.changes[0].expires, T0 + 1 + 3600);
    assert_eq!(o.events.len(), 1);
    assert_eq!(o.events[0].kind, LeaseEventKind::Bound);
}

#[test]
fn broadcast_flag_honoured() {
    let mut s = server();
    let mut d = msg(MessageType::Discover, mac(1), 1);
    d.set_flags(Flags::default().set_broadcast());
    let (_, dest) = only_reply(&feed(&mut s, T0, &rx("lan"), &d));
    assert_eq!(dest, Destination::Broadcast);
}

#[test]
fn renewal_at_t1_is_unicast_and_extends() {
    let mut s = server();
    let a = dora(&mut s, T0, "lan", mac(1), None);
    let t1 = T0 + 1800;
    let mut r = msg(MessageType::Request, mac(1), 7);
    r.set_ciaddr(a);
    let o = feed(&mut s, t1, &rx_from("lan", a), &r);
    let (ack, dest) = only_reply(&o);
    assert_eq!(mt(&ack), MessageType::Ack);
    assert_eq!(ack.yiaddr(), a);
    assert_eq!(ack.ciaddr(), a);
    assert_eq!(dest, Destination::Unicast(a));
    assert_eq!(o.changes[0].expires, t1 + 3600);
}

#[test]
fn rebinding_at_t2_acks_broadcast_request() {
    let mut s = server();
    let a = dora(&mut s, T0, "lan", mac(1), None);
    let t2 = T0 + 3150;
    let mut r = msg(MessageType::Request, mac(1), 8);
    r.set_ciaddr(a);
    r.set_flags(Flags::default().set_broadcast());
    let o = feed(&mut s, t2, &rx_from("lan", a), &r);
    let (ack, dest) = only_reply(&o);
    assert_eq!(mt(&ack), MessageType::Ack);
    assert_eq!(dest, Destination::Unicast(a));
    assert_eq!(o.changes[0].expires, t2 + 3600);
    // A rebinding request for an address leased to someone else gets a NAK.
    let b = dora(&mut s, t2, "lan", mac(2), None);
    let mut r = msg(MessageType::Request, mac(3), 9);
    r.set_ciaddr(b);
    let (nak, dest) = only_reply(&feed(&mut s, t2, &rx_from("lan", b), &r));
    assert_eq!(mt(&nak), MessageType::Nak);
    assert_eq!(dest, Destination::Broadcast);
}

#[test]
fn expiry_reclaims_address() {
    let mut s = Server::new();
    let mut p = lan();
    p.ranges = vec![(ip("198.18.1.10"), ip("198.18.1.10"))];
    s.add_pool(p);
    let a = dora(&mut s, T0, "lan", mac(1), None);
    // Still bound: nothing for client 2.
    let o = feed(
        &mut s,
        T0 + 3599,
        &rx("lan"),
        &msg(MessageType::Discover, mac(2), 1),
    );
    assert!(o.replies.is_empty());
    assert!(s.expire(T0 + 3599).is_empty());
    // Expired: reclaimed for client 2.
    let ev = s.expire(T0 + 3600);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].kind, LeaseEventKind::Expired);
    assert!(s.expire(T0 + 3700).is_empty(), "reported once");
    let b = dora(&mut s, T0 + 3601, "lan", mac(2), None);
    assert_eq!(a, b);
    // The old owner now gets a NAK on renewal.
    let mut r = msg(MessageType::Request, mac(1), 3);
    r.set_ciaddr(a);
    let (nak, _) = only_reply(&feed(&mut s, T0 + 3602, &rx_from("lan", a), &r));
    assert_eq!(mt(&nak), MessageType::Nak);
}

#[test]
fn decline_quarantines_address() {
    let mut s = server();
    let a = dora(&mut s, T0, "lan", mac(1), None);
    let d = with(
        with(
            msg(MessageType::Decline, mac(1), 5),
            DhcpOption::RequestedIpAddress(a),
        ),
        DhcpOption::ServerIdentifier(ip("198.18.1.1")),
    );
    let o = feed(&mut s, T0 + 1, &rx("lan"), &d);
    assert!(o.replies.is_empty());
    assert_eq!(o.changes.len(), 1);
    assert_eq!(o.changes[0].state, LeaseState::Declined);
    assert_eq!(o.changes[0].expires, T0 + 1 + 600);
    // Not offered again during quarantine, even when asked for.
    for (i, t) in [T0 + 2, T0 + 600].into_iter().enumerate() {
        let d = with(
            msg(MessageType::Discover, mac(10 + i as u8), 1),
            DhcpOption::RequestedIpAddress(a),
        );
        let (offer, _) = only_reply(&feed(&mut s, t, &rx("lan"), &d));
        assert_ne!(offer.yiaddr(), a);
    }
    // After quarantine it is usable again.
    let d = with(
        msg(MessageType::Discover, mac(20), 1),
        DhcpOption::RequestedIpAddress(a),
    );
    let (offer, _) = only_reply(&feed(&mut s, T0 + 602, &rx("lan"), &d));
    assert_eq!(offer.yiaddr(), a);
    // A DECLINE from a client that never held the address is ignored.
    let d = with(
        msg(MessageType::Decline, mac(99), 5),
        DhcpOption::RequestedIpAddress(ip("198.18.1.12")),
    );
    let o = feed(&mut s, T0 + 603, &rx("lan"), &d);
    assert!(o.changes.is_empty() && o.ignored.is_some());
}

#[test]
fn exhaustion_no_offer_and_log_rate_limit() {
    let mut s = server();
    for i in 1..=3 {
        dora(&mut s, T0, "lan", mac(i), None);
    }
    let d = msg(MessageType::Discover, mac(4), 1);
    let o = feed(&mut s, T0 + 1, &rx("lan"), &d);
    assert!(o.replies.is_empty());
    assert_eq!(o.ignored.as_deref(), Some("pool exhausted"));
    assert!(o.exhaustion_logged);
    let o = feed(&mut s, T0 + 30, &rx("lan"), &d);
    assert!(o.replies.is_empty() && !o.exhaustion_logged);
    let o = feed(&mut s, T0 + 60, &rx("lan"), &d);
    assert!(!o.exhaustion_logged, "59 s after the last line");
    let o = feed(&mut s, T0 + 61, &rx("lan"), &d);
    assert!(o.exhaustion_logged);
    // The decision is per segment.
    assert!(s.exhaustion_should_log("dmz", T0 + 62));
    assert!(!s.exhaustion_should_log("dmz", T0 + 63));
    assert!(!s.exhaustion_should_log("lan", T0 + 62));
}

#[test]
fn init_reboot() {
    let mut s = server();
    let a = dora(&mut s, T0, "lan", mac(1), None);
    // Wrong subnet -> NAK (broadcast).
    let r = with(
        msg(MessageType::Request, mac(1), 2),
        DhcpOption::RequestedIpAddress(ip("198.19.7.7")),
    );
    let o = feed(&mut s, T0 + 5, &rx("lan"), &r);
    let (nak, dest) = only_reply(&o);
    assert_eq!(mt(&nak), MessageType::Nak);
    assert_eq!(dest, Destination::Broadcast);
    assert!(o.changes.is_empty());
    // Own address -> ACK.
    let r = with(
        msg(MessageType::Request, mac(1), 3),
        DhcpOption::RequestedIpAddress(a),
    );
    let (ack, _) = only_reply(&feed(&mut s, T0 + 6, &rx("lan"), &r));
    assert_eq!(mt(&ack), MessageType::Ack);
    // Another client's address -> NAK.
    let r = with(
        msg(MessageType::Request, mac(2), 4),
        DhcpOption::RequestedIpAddress(a),
    );
    let (nak, _) = only_reply(&feed(&mut s, T0 + 7, &rx("lan"), &r));
    assert_eq!(mt(&nak), MessageType::Nak);
    // Unknown client, right subnet, free address -> silent.
    let r = with(
        msg(MessageType::Request, mac(3), 5),
        DhcpOption::RequestedIpAddress(ip("198.18.1.12")),
    );
    let o = feed(&mut s, T0 + 8, &rx("lan"), &r);
    assert!(o.replies.is_empty());
    assert!(o.ignored.unwrap().contains("staying silent"));
}

#[test]
fn selecting_other_server_is_silent_and_frees_offer() {
    let mut s = Server::new();
    let mut p = lan();
    p.ranges = vec![(ip("198.18.1.10"), ip("198.18.1.10"))];
    s.add_pool(p);
    let (offer, _) = only_reply(&feed(
        &mut s,
        T0,
        &rx("lan"),
        &msg(MessageType::Discover, mac(1), 1),
    ));
    let r = with(
        with(
            msg(MessageType::Request, mac(1), 1),
            DhcpOption::ServerIdentifier(ip("198.18.1.254")),
        ),
        DhcpOption::RequestedIpAddress(offer.yiaddr()),
    );
    let o = feed(&mut s, T0 + 1, &rx("lan"), &r);
    assert!(o.replies.is_empty() && o.changes.is_empty());
    // The only address is free again for somebody else.
    let (offer2, _) = only_reply(&feed(
        &mut s,
        T0 + 2,
        &rx("lan"),
        &msg(MessageType::Discover, mac(2), 1),
    ));
    assert_eq!(offer2.yiaddr(), offer.yiaddr());
}

#[test]
fn client_id_takes_precedence_over_chaddr() {
    let mut s = server();
    let a = dora(&mut s, T0, "lan", mac(1), Some(b"\x01host-a"));
    // Same client id, other NIC: same address.
    let b = dora(&mut s, T0 + 10, "lan", mac(2), Some(b"\x01host-a"));
    assert_eq!(a, b);
    // Same MAC, other client id: a different client.
    let c = dora(&mut s, T0 + 20, "lan", mac(2), Some(b"\x01host-c"));
    assert_ne!(a, c);
    let l = s.leases().get("lan", a).unwrap();
    assert_eq!(l.client_id.as_deref(), Some(&b"\x01host-a"[..]));
    assert_eq!(l.mac, mac(2));
}

#[test]
fn requested_address_and_previous_binding() {
    let mut s = server();
    let d = with(
        msg(MessageType::Discover, mac(1), 1),
        DhcpOption::RequestedIpAddress(ip("198.18.2.150")),
    );
    let (offer, _) = only_reply(&feed(&mut s, T0, &rx("dmz"), &d));
    assert_eq!(offer.yiaddr(), ip("198.18.2.150"));
    // Out of range requests are not honoured.
    let d = with(
        msg(MessageType::Discover, mac(2), 1),
        DhcpOption::RequestedIpAddress(ip("198.18.2.50")),
    );
    let (offer, _) = only_reply(&feed(&mut s, T0, &rx("dmz"), &d));
    assert_eq!(offer.yiaddr(), ip("198.18.2.100"));
    // Previous binding reused after release.
    let a = dora(&mut s, T0, "dmz", mac(3), None);
    let mut rel = with(
        msg(MessageType::Release, mac(3), 1),
        DhcpOption::ServerIdentifier(ip("198.18.2.1")),
    );
    rel.set_ciaddr(a);
    let o = feed(&mut s, T0 + 5, &rx_from("dmz", a), &rel);
    assert_eq!(o.changes[0].state, LeaseState::Released);
    assert_eq!(o.events[0].kind, LeaseEventKind::Released);
    let b = dora(&mut s, T0 + 100, "dmz", mac(3), None);
    assert_eq!(a, b);
}

#[test]
fn lease_time_capped() {
    let mut s = server();
    let d = with(
        msg(MessageType::Discover, mac(1), 1),
        DhcpOption::AddressLeaseTime(10_000_000),
    );
    let (offer, _) = only_reply(&feed(&mut s, T0, &rx("lan"), &d));
    assert_eq!(
        opt(&offer, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(86400))
    );
    assert_eq!(
        opt(&offer, OptionCode::Renewal),
        Some(&DhcpOption::Renewal(43200))
    );
    assert_eq!(
        opt(&offer, OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(75600))
    );
}

#[test]
fn reservation_wins_and_is_never_given_away() {
    let mut s = Server::new();
    let mut p = lan();
    p.reservations.push(Reservation {
        mac: mac(7),
        addr: ip("198.18.1.50"),
        hostname: Some("printer".into()),
        group: Some("printers".into()),
    });
    // Also reserve an address inside the dynamic range.
    p.reservations.push(Reservation {
        mac: mac(8),
        addr: ip("198.18.1.11"),
        hostname: None,
        group: None,
    });
    s.add_pool(p);
    // Others asking for reserved addresses do not get them.
    for (i, want) in [ip("198.18.1.50"), ip("198.18.1.11")]
        .into_iter()
        .enumerate()
    {
        let d = with(
            msg(MessageType::Discover, mac(1 + i as u8), 1),
            DhcpOption::RequestedIpAddress(want),
        );
        let (offer, _) = only_reply(&feed(&mut s, T0, &rx("lan"), &d));
        assert_ne!(offer.yiaddr(), want);
        assert_ne!(offer.yiaddr(), ip("198.18.1.11"));
    }
    let r = with(
        msg(MessageType::Request, mac(3), 1),
        DhcpOption::RequestedIpAddress(ip("198.18.1.50")),
    );
    let (nak, _) = only_reply(&feed(&mut s, T0, &rx("lan"), &r));
    assert_eq!(mt(&nak), MessageType::Nak);
    // The reserved client gets its address, with host name and group.
    let d = msg(MessageType::Discover, mac(7), 1);
    let (offer, _) = only_reply(&feed(&mut s, T0, &rx("lan"), &d));
    assert_eq!(offer.yiaddr(), ip("198.18.1.50"));
    assert_eq!(
        opt(&offer, OptionCode::Hostname),
        Some(&DhcpOption::Hostname("printer".into()))
    );
    let r = with(
        with(
            msg(MessageType::Request, mac(7), 2),
            DhcpOption::ServerIdentifier(ip("198.18.1.1")),
        ),
        DhcpOption::RequestedIpAddress(ip("198.18.1.50")),
    );
    let o = feed(&mut s, T0, &rx("lan"), &r);
    assert_eq!(mt(&only_reply(&o).0), MessageType::Ack);
    assert_eq!(o.events[0].lease.group.as_deref(), Some("printers"));
    // The reserved client asking for another address is NAKed.
    let r = with(
        msg(MessageType::Request, mac(7), 3),
        DhcpOption::RequestedIpAddress(ip("198.18.1.10")),
    );
    assert_eq!(
        mt(&only_reply(&feed(&mut s, T0, &rx("lan"), &r)).0),
        MessageType::Nak
    );
}

/// dmz with the relay 198.18.2.254 listed in `relays`.
fn dmz_relayed() -> PoolConfig {
    let mut p = dmz();
    p.relays = vec![ip("198.18.2.254")];
    p
}

#[test]
fn relay_listed_for_the_arrival_segment_is_served_from_it() {
    let mut s = Server::new();
    s.add_pool(lan());
    s.add_pool(dmz_relayed());
    let mut d = msg(MessageType::Discover, mac(1), 1);
    d.set_giaddr(ip("198.18.2.254"));
    let o = feed(&mut s, T0, &rx_from("dmz", ip("198.18.2.254")), &d);
    let (offer, dest) = only_reply(&o);
    assert_eq!(offer.yiaddr(), ip("198.18.2.100"));
    assert_eq!(offer.giaddr(), ip("198.18.2.254"));
    assert_eq!(dest, Destination::Relay(ip("198.18.2.254")));
    assert_eq!(dest.socket_addr().port(), 67);
    assert_eq!(o.replies[0].segment, "dmz");
    // A relay that is not listed: ignored.
    let mut d = msg(MessageType::Discover, mac(1), 1);
    d.set_giaddr(ip("198.18.2.253"));
    let o = feed(&mut s, T0, &rx("dmz"), &d);
    assert!(o.replies.is_empty(), "{o:?}");
    assert!(o.ignored.unwrap().contains("relay"));
    // NAK through a relay goes to the relay with the broadcast bit.
    let mut r = with(
        msg(MessageType::Request, mac(5), 1),
        DhcpOption::RequestedIpAddress(ip("198.19.0.5")),
    );
    r.set_giaddr(ip("198.18.2.254"));
    let (nak, dest) = only_reply(&feed(&mut s, T0, &rx("dmz"), &r));
    assert_eq!(mt(&nak), MessageType::Nak);
    assert!(nak.flags().broadcast());
    assert_eq!(dest, Destination::Relay(ip("198.18.2.254")));
}

#[test]
fn giaddr_never_selects_another_segments_pool() {
    // guest (198.18.9.0/24) and mgmt (198.18.1.0/24): a guest host forges
    // giaddr = the mgmt gateway, or a relay listed for mgmt.
    let mut s = Server::new();
    let mut mgmt = lan();
    mgmt.segment = "mgmt".into();
    mgmt.relays = vec![ip("198.18.1.254")];
    s.add_pool(mgmt);
    s.add_pool(PoolConfig::new(
        "guest",
        "veth-guest",
        ip("198.18.9.1"),
        "198.18.9.0/24".parse().unwrap(),
        vec![(ip("198.18.9.10"), ip("198.18.9.200"))],
    ));
    for (n, giaddr) in ["198.18.1.1", "198.18.1.254", "198.18.1.77"]
        .into_iter()
        .enumerate()
    {
        let mut d = msg(MessageType::Discover, mac(10 + n as u8), 1);
        d.set_giaddr(ip(giaddr));
        let o = feed(&mut s, T0, &rx("guest"), &d);
        assert!(o.replies.is_empty(), "giaddr {giaddr}: {o:?}");
        assert!(o.changes.is_empty());
        // REQUEST for a mgmt address with a forged giaddr: no ACK, no lease.
        let mut r = with(
            with(
                msg(MessageType::Request, mac(10 + n as u8), 2),
                DhcpOption::ServerIdentifier(ip("198.18.1.1")),
            ),
            DhcpOption::RequestedIpAddress(ip("198.18.1.10")),
        );
        r.set_giaddr(ip(giaddr));
        let o = feed(&mut s, T0, &rx("guest"), &r);
        assert!(o.replies.is_empty() && o.changes.is_empty(), "{o:?}");
    }
    assert!(s.leases().is_empty());
    // The mgmt pool still has all its addresses for mgmt clients.
    assert_eq!(dora(&mut s, T0, "mgmt", mac(1), None), ip("198.18.1.10"));
    // Without giaddr a guest client gets a guest address.
    assert_eq!(dora(&mut s, T0, "guest", mac(2), None), ip("198.18.9.10"));
}

#[test]
fn release_and_decline_only_touch_the_arrival_segment() {
    let mut s = Server::new();
    let mut mgmt = lan();
    mgmt.segment = "mgmt".into();
    s.add_pool(mgmt);
    s.add_pool(PoolConfig::new(
        "guest",
        "veth-guest",
        ip("198.18.9.1"),
        "198.18.9.0/24".parse().unwrap(),
        vec![(ip("198.18.9.10"), ip("198.18.9.200"))],
    ));
    let victim = dora(&mut s, T0, "mgmt", mac(1), None);
    // The guest host copies the victim's chaddr, with and without a forged giaddr.
    for giaddr in [None, Some("198.18.1.1")] {
        let mut rel = with(
            msg(MessageType::Release, mac(1), 3),
            DhcpOption::ServerIdentifier(ip("198.18.1.1")),
        );
        rel.set_ciaddr(victim);
        if let Some(g) = giaddr {
            rel.set_giaddr(ip(g));
        }
        let o = feed(&mut s, T0 + 1, &rx_from("guest", victim), &rel);
        assert!(o.changes.is_empty() && o.events.is_empty(), "{o:?}");
        let mut dec = with(
            with(
                msg(MessageType::Decline, mac(1), 4),
                DhcpOption::ServerIdentifier(ip("198.18.1.1")),
            ),
            DhcpOption::RequestedIpAddress(victim),
        );
        if let Some(g) = giaddr {
            dec.set_giaddr(ip(g));
        }
        let o = feed(&mut s, T0 + 1, &rx("guest"), &dec);
        assert!(o.changes.is_empty() && o.events.is_empty(), "{o:?}");
    }
    let l = s.leases().get("mgmt", victim).unwrap();
    assert_eq!(l.state, LeaseState::Bound);
    assert!(l.is_active(T0 + 1));
    // From its own segment the client may release it.
    let mut rel = msg(MessageType::Release, mac(1), 5);
    rel.set_ciaddr(victim);
    let o = feed(&mut s, T0 + 2, &rx_from("mgmt", victim), &rel);
    assert_eq!(o.events.len(), 1);
    assert_eq!(
        s.leases().get("mgmt", victim).unwrap().state,
        LeaseState::Released
    );
}

#[test]
fn inform_acks_options_without_lease() {
    let mut s = server();
    let mut m = msg(MessageType::Inform, mac(1), 1);
    m.set_ciaddr(ip("198.18.1.77"));
    let o = feed(&mut s, T0, &rx_from("lan", ip("198.18.1.77")), &m);
    assert!(o.changes.is_empty());
    let (ack, dest) = only_reply(&o);
    assert_eq!(mt(&ack), MessageType::Ack);
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(dest, Destination::Unicast(ip("198.18.1.77")));
    assert!(opt(&ack, OptionCode::AddressLeaseTime).is_none());
    assert!(opt(&ack, OptionCode::Renewal).is_none());
    assert!(opt(&ack, OptionCode::DomainNameServer).is_some());
}

#[test]
fn parameter_request_list_filters_options() {
    let mut s = server();
    let d = with(
        msg(MessageType::Discover, mac(1), 1),
        DhcpOption::ParameterRequestList(vec![OptionCode::SubnetMask, OptionCode::Router]),
    );
    let (offer, _) = only_reply(&feed(&mut s, T0, &rx("lan"), &d));
    assert!(opt(&offer, OptionCode::Router).is_some());
    assert!(opt(&offer, OptionCode::SubnetMask).is_some());
    assert!(opt(&offer, OptionCode::AddressLeaseTime).is_some());
    assert!(opt(&offer, OptionCode::ServerIdentifier).is_some());
    assert!(opt(&offer, OptionCode::DomainNameServer).is_none());
    assert!(opt(&offer, OptionCode::DomainName).is_none());
    assert!(opt(&offer, OptionCode::InterfaceMtu).is_none());
    assert!(opt(&offer, OptionCode::BroadcastAddr).is_none());
}

#[test]
fn extra_options_and_max_message_size() {
    let mut s = Server::new();
    let mut p = lan();
    // NTP servers (42) and three big site-specific options.
    p.extra_options = vec![
        (42, vec![198, 18, 1, 1]),
        (224, vec![0xaa; 200]),
        (225, vec![0xbb; 200]),
        (226, vec![0xcc; 200]),
    ];
    s.add_pool(p);
    let big = with(
        msg(MessageType::Discover, mac(1), 1),
        DhcpOption::MaxMessageSize(1500),
    );
    let o = feed(&mut s, T0, &rx("lan"), &big);
    let (offer, _) = only_reply(&o);
    assert!(o.replies[0].payload.len() > 548);
    assert!(o.replies[0].payload.len() <= 1500 - 28);
    for c in [42u8, 224, 225, 226] {
        assert!(
            offer.opts().get(OptionCode::from(c)).is_some(),
            "option {c}"
        );
    }
    // Default limit (576) and a client announcing less than the minimum.
    for m in [None, Some(300u16)] {
        let mut d = msg(MessageType::Discover, mac(2), 2);
        if let Some(v) = m {
            d = with(d, DhcpOption::MaxMessageSize(v));
        }
        let o = feed(&mut s, T0, &rx("lan"), &d);
        let (offer, _) = only_reply(&o);
        assert!(
            o.replies[0].payload.len() <= 576 - 28,
            "{}",
            o.replies[0].payload.len()
        );
        // Essentials survive; the last extras were dropped first.
        assert!(opt(&offer, OptionCode::SubnetMask).is_some());
        assert!(opt(&offer, OptionCode::AddressLeaseTime).is_some());
        assert!(opt(&offer, OptionCode::Router).is_some());
        assert!(offer.opts().get(OptionCode::from(226)).is_none());
        assert!(offer.opts().get(OptionCode::from(42)).is_some());
    }
    // PRL filtering also applies to extra options.
    let d = with(
        msg(MessageType::Discover, mac(3), 3),
        DhcpOption::ParameterRequestList(vec![OptionCode::from(42)]),
    );
    let (offer, _) = only_reply(&feed(&mut s, T0, &rx("lan"), &d));
    assert!(offer.opts().get(OptionCode::from(42)).is_some());
    assert!(offer.opts().get(OptionCode::from(224)).is_none());
}

#[test]
fn moving_client_releases_old_binding_and_removed_pool_is_silent() {
    let mut s = server();
    let a = dora(&mut s, T0, "lan", mac(1), None);
    // The client asks for another free address in SELECTING.
    let d = with(
        msg(MessageType::Discover, mac(1), 1),
        DhcpOption::RequestedIpAddress(ip("198.18.1.12")),
    );
    let (offer, _) = only_reply(&feed(&mut s, T0 + 1, &rx("lan"), &d));
    assert_eq!(offer.yiaddr(), a, "previous binding wins over option 50");
    s.remove_pool("lan");
    let o = feed(
        &mut s,
        T0 + 2,
        &rx("lan"),
        &msg(MessageType::Discover, mac(1), 1),
    );
    assert!(o.replies.is_empty());
    assert!(
        s.leases().get("lan", a).is_some(),
        "leases survive pool removal"
    );
}

#[test]
fn malformed_packets_are_dropped_with_reason() {
    let mut s = server();
    let r = rx("lan");
    assert!(s.handle_packet(T0, &r, &[]).ignored.is_some());
    assert!(s.handle_packet(T0, &r, &[1; 239]).ignored.is_some());
    let mut b = encode(&msg(MessageType::Discover, mac(1), 1));
    b[2] = 200; // hlen
    assert!(
        s.handle_packet(T0, &r, &b)
            .ignored
            .unwrap()
            .contains("hlen")
    );
    let mut b = encode(&msg(MessageType::Discover, mac(1), 1));
    b[236] = 0; // magic
    assert!(
        s.handle_packet(T0, &r, &b)
            .ignored
            .unwrap()
            .contains("magic")
    );
    let mut b = encode(&msg(MessageType::Offer, mac(1), 1));
    b[0] = 2;
    assert!(s.handle_packet(T0, &r, &b).ignored.is_some());
    let b = encode(&msg(MessageType::Offer, mac(1), 1));
    assert!(s.handle_packet(T0, &r, &b).ignored.is_some());
}

#[test]
fn relay_agent_information_is_echoed() {
    let mut s = Server::new();
    s.add_pool(lan());
    s.add_pool(dmz_relayed());
    let mut d = msg(MessageType::Discover, mac(1), 1);
    d.set_giaddr(ip("198.18.2.254"));
    let mut b = encode(&d);
    // Insert option 82 (circuit id "eth7") before END.
    let end = b.iter().rposition(|x| *x == 255).unwrap();
    b.splice(end..end, [82, 6, 1, 4, b'e', b't', b'h', b'7']);
    let o = s.handle_packet(T0, &rx_from("dmz", ip("198.18.2.254")), &b);
    assert_eq!(o.replies.len(), 1);
    let p = &o.replies[0].payload;
    assert!(
        p.windows(8)
            .any(|w| w == [82, 6, 1, 4, b'e', b't', b'h', b'7']),
        "option 82 echoed verbatim"
    );
    // Not echoed for a packet that was not relayed.
    let mut b = encode(&msg(MessageType::Discover, mac(2), 2));
    let end = b.iter().rposition(|x| *x == 255).unwrap();
    b.splice(end..end, [82, 6, 1, 4, b'e', b't', b'h', b'7']);
    let o = s.handle_packet(T0, &rx("lan"), &b);
    assert!(!o.replies[0].payload.windows(2).any(|w| w == [82, 6]));
}

#[test]
fn offer_hold_expires() {
    let mut s = Server::new();
    let mut p = lan();
    p.ranges = vec![(ip("198.18.1.10"), ip("198.18.1.10"))];
    p.offer_hold = 30;
    s.add_pool(p);
    let (offer, _) = only_reply(&feed(
        &mut s,
        T0,
        &rx("lan"),
        &msg(MessageType::Discover, mac(1), 1),
    ));
    assert_eq!(offer.yiaddr(), ip("198.18.1.10"));
    // Held for client 1 ...
    let o = feed(
        &mut s,
        T0 + 29,
        &rx("lan"),
        &msg(MessageType::Discover, mac(2), 2),
    );
    assert!(o.replies.is_empty());
    // ... until the hold runs out.
    let (offer, _) = only_reply(&feed(
        &mut s,
        T0 + 30,
        &rx("lan"),
        &msg(MessageType::Discover, mac(2), 3),
    ));
    assert_eq!(offer.yiaddr(), ip("198.18.1.10"));
    // Client 1's late REQUEST is now refused.
    let r = with(
        with(
            msg(MessageType::Request, mac(1), 1),
            DhcpOption::ServerIdentifier(ip("198.18.1.1")),
        ),
        DhcpOption::RequestedIpAddress(ip("198.18.1.10")),
    );
    let (nak, _) = only_reply(&feed(&mut s, T0 + 31, &rx("lan"), &r));
    assert_eq!(mt(&nak), MessageType::Nak);
}

#[test]
fn pool_config_json_as_documented() {
    // Same text as in examples/dhcp_serve.rs.
    let text = r#"[{"segment": "dmz", "interface": "veth-dmz", "server_addr": "198.18.10.1",
  "subnet": "198.18.10.0/24", "ranges": [["198.18.10.100", "198.18.10.150"]],
  "lease_time": 3600, "max_lease_time": 86400, "dns": ["198.18.10.1"],
  "domain": "dmz.example", "mtu": 1400, "extra_options": [[42, [198, 18, 10, 1]]],
  "reservations": [{"mac": "02:00:00:00:00:07", "addr": "198.18.10.7",
                    "hostname": "cam", "group": "cameras"}]}]"#;
    let pools: Vec<PoolConfig> = serde_json::from_str(text).unwrap();
    assert_eq!(pools[0].reservations[0].mac, [2, 0, 0, 0, 0, 7]);
    assert_eq!(pools[0].extra_options, vec![(42, vec![198, 18, 10, 1])]);
    assert_eq!(pools[0].decline_quarantine, 600);
    assert_eq!(pools[0].range_len(), 51);
    let back: Vec<PoolConfig> =
        serde_json::from_str(&serde_json::to_string(&pools).unwrap()).unwrap();
    assert_eq!(back, pools);
}

/// Insert raw option bytes right after the magic cookie (before every other option).
fn with_raw_first(m: &Message, raw: &[u8]) -> Vec<u8> {
    let mut b = encode(m);
    b.splice(240..240, raw.iter().copied());
    b
}

/// DISCOVER then REQUEST(selecting), both with `raw` options placed first; the ACK's outcome.
fn dora_raw(s: &mut Server, m: [u8; 6], raw: &[u8]) -> Outcome {
    let d = msg(MessageType::Discover, m, 1);
    let o = s.handle_packet(T0, &rx("lan"), &with_raw_first(&d, raw));
    let (offer, _) = only_reply(&o);
    let r = with(
        with(
            msg(MessageType::Request, m, 2),
            DhcpOption::ServerIdentifier(ip("198.18.1.1")),
        ),
        DhcpOption::RequestedIpAddress(offer.yiaddr()),
    );
    let o = s.handle_packet(T0, &rx("lan"), &with_raw_first(&r, raw));
    assert_eq!(mt(&only_reply(&o).0), MessageType::Ack, "{o:?}");
    o
}

#[test]
fn hostile_hostname_is_stored_without_control_characters() {
    let mut s = server();
    let mut raw = vec![12u8];
    let name = b"pc\n<13>forged: root login\x1b[2J\x1b]0;pwned\x07\x7f\xc2\x9b";
    raw.push(name.len() as u8);
    raw.extend_from_slice(name);
    let o = dora_raw(&mut s, mac(1), &raw);
    let want = r"pc\x0a<13>forged: root login\x1b[2J\x1b]0;pwned\x07\x7f\u{9b}";
    assert_eq!(o.changes[0].hostname.as_deref(), Some(want));
    assert_eq!(o.events[0].lease.hostname.as_deref(), Some(want));
    let stored = s.leases().get("lan", o.changes[0].addr).unwrap();
    assert_eq!(stored.hostname.as_deref(), Some(want));
    assert!(
        !stored
            .hostname
            .as_ref()
            .unwrap()
            .chars()
            .any(char::is_control)
    );
    // The same through the decoded-message entry point.
    let mut s = server();
    let d = with(
        msg(MessageType::Discover, mac(2), 1),
        DhcpOption::Hostname("a\r\nb\u{1b}[0m\u{202e}c".into()),
    );
    let offer = only_reply(&s.handle_message(T0, &rx("lan"), &d)).0;
    let r = with(
        with(
            with(
                msg(MessageType::Request, mac(2), 2),
                DhcpOption::ServerIdentifier(ip("198.18.1.1")),
            ),
            DhcpOption::RequestedIpAddress(offer.yiaddr()),
        ),
        DhcpOption::Hostname("a\r\nb\u{1b}[0m\u{202e}c".into()),
    );
    let o = s.handle_message(T0, &rx("lan"), &r);
    assert_eq!(
        o.changes[0].hostname.as_deref(),
        Some(r"a\x0d\x0ab\x1b[0m\u{202e}c")
    );
}

#[test]
fn undecodable_option_does_not_hide_the_options_after_it() {
    // A host name that is not UTF-8, first in the packet: the message type,
    // client id and lease time after it must still be read.
    let mut s = server();
    let mut raw = vec![12, 3, b'x', 0xff, 0xfe];
    raw.extend_from_slice(&[61, 3, 0xaa, 0xbb, 0xcc]);
    let o = dora_raw(&mut s, mac(3), &raw);
    let l = &o.changes[0];
    assert_eq!(l.hostname.as_deref(), Some(r"x\xff\xfe"));
    assert_eq!(l.client_id.as_deref(), Some(&[0xaa, 0xbb, 0xcc][..]));
    // An option with an impossible length (lease time of 3 bytes) is
    // dropped alone; the rest of the packet is served.
    let mut s = server();
    let o = dora_raw(&mut s, mac(4), &[51, 3, 1, 2, 3, 12, 2, b'o', b'k']);
    assert_eq!(o.changes[0].hostname.as_deref(), Some("ok"));
    assert_eq!(o.changes[0].expires, T0 + 3600);
}

#[test]
fn relays_key_reaches_the_pool() {
    let text = r#"[uplink]
interface = "wan0"

[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"
management = true

[segments.lan.dhcp]
ranges = ["198.18.1.10-198.18.1.50"]
relays = ["198.18.7.1", "198.18.8.1"]

[segments.guest]
interface = "lan1"
subnet = "198.18.9.0/24"
gateway = "198.18.9.1"

[segments.guest.dhcp]
ranges = ["198.18.9.10-198.18.9.50"]
"#;
    let (m, _) = bulkhead::model::load_str("relays.toml", text).unwrap();
    let plan = bulkhead::plan::build(&m, None);
    let pools = bulkhead::supervisor::gateway::pools(&plan);
    let lan = pools.iter().find(|p| p.segment == "lan").unwrap();
    assert_eq!(lan.relays, vec![ip("198.18.7.1"), ip("198.18.8.1")]);
    let guest = pools.iter().find(|p| p.segment == "guest").unwrap();
    assert!(guest.relays.is_empty());
    assert!(plan.text(None).contains("  relays 198.18.7.1, 198.18.8.1"));
}
