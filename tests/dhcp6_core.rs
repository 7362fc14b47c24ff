//! Timeline tests of the sans-IO DHCPv6 core: time passed in, packets built with
//! dhcproto's v6 types, replies decoded back.

use std::net::{Ipv6Addr, SocketAddrV6};

use bulkhead::dhcp6::leases::LeaseState;
use bulkhead::dhcp6::{Dhcp6Mode, Outcome6, SegmentV6, Server6};
use dhcproto::v6::{
    DhcpOption, DhcpOptions, IAAddr, IANA, Message, MessageType, OptionCode, Status, UnknownOption,
};
use dhcproto::{Decodable, Decoder, Encodable};

const T0: u64 = 1_800_000_000;
const SERVER_DUID: [u8; 6] = [0, 4, 1, 2, 3, 4];

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn src() -> SocketAddrV6 {
    SocketAddrV6::new(a("fe80::2"), 546, 0, 3)
}

fn lan() -> SegmentV6 {
    let mut s = SegmentV6::new(
        "lan",
        "veth-lan",
        Dhcp6Mode::Stateful,
        "2001:db8:1::/64".parse().unwrap(),
    );
    s.pool_start = a("2001:db8:1::100");
    s.pool_end = a("2001:db8:1::102");
    s.dns = vec![a("2001:db8:1::1")];
    s.domains = vec!["lan.example".into()];
    s
}

fn dmz() -> SegmentV6 {
    SegmentV6::new(
        "dmz",
        "veth-dmz",
        Dhcp6Mode::Stateful,
        "2001:db8:2::/64".parse().unwrap(),
    )
}

fn guest() -> SegmentV6 {
    let mut s = SegmentV6::new(
        "guest",
        "veth-g",
        Dhcp6Mode::Stateless,
        "2001:db8:3::/64".parse().unwrap(),
    );
    s.dns = vec![a("2001:db8:3::1"), a("2001:db8:3::2")];
    s.domains = vec!["guest.example".into(), "example".into()];
    s
}

fn server() -> Server6 {
    let mut s = Server6::new(SERVER_DUID.to_vec());
    s.add_segment(lan());
    s.add_segment(dmz());
    s.add_segment(guest());
    s
}

fn duid(n: u8) -> Vec<u8> {
    vec![0, 3, 0, 1, 2, 0, 0, 0, 0, n]
}

fn msg(mt: MessageType, client: u8) -> Message {
    let mut m = Message::new_with_id(mt, [1, 2, client]);
    m.opts_mut().insert(DhcpOption::ClientId(duid(client)));
    m
}

fn ia(id: u32, addrs: &[Ipv6Addr]) -> DhcpOption {
    let mut opts = DhcpOptions::new();
    for ad in addrs {
        opts.insert(DhcpOption::IAAddr(IAAddr {
            addr: *ad,
            preferred_life: 0,
            valid_life: 0,
            opts: DhcpOptions::new(),
        }));
    }
    DhcpOption::IANA(IANA {
        id,
        t1: 0,
        t2: 0,
        opts,
    })
}

fn with(mut m: Message, o: DhcpOption) -> Message {
    m.opts_mut().insert(o);
    m
}

fn to_us(m: Message) -> Message {
    with(m, DhcpOption::ServerId(SERVER_DUID.to_vec()))
}

fn send(s: &mut Server6, now: u64, seg: &str, m: &Message) -> Outcome6 {
    s.handle_packet(now, seg, src(), &m.to_vec().unwrap())
}

fn reply(o: &Outcome6) -> Message {
    let (_, b) = o
        .reply
        .as_ref()
        .unwrap_or_else(|| panic!("no reply: {:?}", o.refused));
    Message::decode(&mut Decoder::new(b)).unwrap()
}

/// The addresses (with preferred and valid lifetimes) of the IA_NAs of a reply.
fn addrs(m: &Message) -> Vec<(u32, Ipv6Addr, u32, u32)> {
    let mut v = Vec::new();
    for o in m.opts().get_all(OptionCode::IANA).unwrap_or_default() {
        let DhcpOption::IANA(ia) = o else { continue };
        for x in ia.opts.get_all(OptionCode::IAAddr).unwrap_or_default() {
            if let DhcpOption::IAAddr(ad) = x {
                v.push((ia.id, ad.addr, ad.preferred_life, ad.valid_life));
            }
        }
    }
    v
}

fn top_status(m: &Message) -> Option<Status> {
    match m.opts().get(OptionCode::StatusCode) {
        Some(DhcpOption::StatusCode(s)) => Some(s.status),
        _ => None,
    }
}

fn ia_status(m: &Message) -> Vec<Status> {
    m.opts()
        .get_all(OptionCode::IANA)
        .unwrap_or_default()
        .iter()
        .filter_map(|o| match o {
            DhcpOption::IANA(ia) => match ia.opts.get(OptionCode::StatusCode) {
                Some(DhcpOption::StatusCode(s)) => Some(s.status),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn solicit_advertise_request_reply_and_only_the_reply_commits() {
    let mut s = server();
    let o = send(
        &mut s,
        T0,
        "lan",
        &with(msg(MessageType::Solicit, 1), ia(7, &[])),
    );
    assert!(o.changes.is_empty(), "an Advertise commits nothing");
    let adv = reply(&o);
    assert_eq!(adv.msg_type(), MessageType::Advertise);
    assert_eq!(adv.xid(), [1, 2, 1]);
    assert_eq!(
        adv.opts().get(OptionCode::ServerId),
        Some(&DhcpOption::ServerId(SERVER_DUID.to_vec()))
    );
    assert_eq!(
        adv.opts().get(OptionCode::ClientId),
        Some(&DhcpOption::ClientId(duid(1)))
    );
    assert_eq!(
        adv.opts().get(OptionCode::Preference),
        Some(&DhcpOption::Preference(255))
    );
    let offered = addrs(&adv);
    assert_eq!(offered.len(), 1);
    let (iaid, addr, pref, valid) = offered[0];
    assert_eq!((iaid, pref, valid), (7, 2700, 5400));
    assert!(lan().in_pool(addr));
    assert_eq!(
        adv.opts().get(OptionCode::DomainNameServers),
        Some(&DhcpOption::DomainNameServers(vec![a("2001:db8:1::1")]))
    );
    assert!(adv.opts().get(OptionCode::DomainSearchList).is_some());

    let o = send(
        &mut s,
        T0 + 1,
        "lan",
        &to_us(with(msg(MessageType::Request, 1), ia(7, &[addr]))),
    );
    let r = reply(&o);
    assert_eq!(r.msg_type(), MessageType::Reply);
    assert_eq!(addrs(&r), vec![(7, addr, 2700, 5400)]);
    assert_eq!(o.changes.len(), 1);
    let l = &o.changes[0];
    assert_eq!(
        (l.segment.as_str(), l.addr, l.iaid, l.state),
        ("lan", addr, 7, LeaseState::Bound)
    );
    assert_eq!(l.duid.as_deref(), Some(&duid(1)[..]));
    assert_eq!(l.expires, T0 + 1 + 5400);
    match r.opts().get(OptionCode::IANA) {
        Some(DhcpOption::IANA(ia)) => assert_eq!((ia.t1, ia.t2), (1350, 2160)),
        o => panic!("{o:?}"),
    }
}

#[test]
fn rapid_commit_solicit_gets_a_committed_reply() {
    let mut s = server();
    let m = with(
        with(msg(MessageType::Solicit, 2), ia(1, &[])),
        DhcpOption::RapidCommit,
    );
    let o = send(&mut s, T0, "lan", &m);
    let r = reply(&o);
    assert_eq!(r.msg_type(), MessageType::Reply);
    assert!(r.opts().get(OptionCode::RapidCommit).is_some());
    assert_eq!(o.changes.len(), 1);
    // Without rapid commit configured, an Advertise.
    let mut seg = lan();
    seg.rapid_commit = false;
    s.add_segment(seg);
    let o = send(&mut s, T0, "lan", &m);
    assert_eq!(reply(&o).msg_type(), MessageType::Advertise);
    assert!(o.changes.is_empty());
}

#[test]
fn same_binding_same_address_other_binding_other_address() {
    let mut s = server();
    let get = |s: &mut Server6, c: u8, iaid: u32, t: u64| {
        let o = send(
            s,
            t,
            "lan",
            &to_us(with(msg(MessageType::Request, c), ia(iaid, &[]))),
        );
        addrs(&reply(&o))[0].1
    };
    let a1 = get(&mut s, 1, 1, T0);
    assert_eq!(get(&mut s, 1, 1, T0 + 10), a1);
    let a2 = get(&mut s, 1, 2, T0 + 10);
    let a3 = get(&mut s, 3, 1, T0 + 10);
    assert!(a1 != a2 && a2 != a3 && a1 != a3);
    // Pool of 3 is full: a fourth binding gets NoAddrsAvail in its IA.
    let o = send(
        &mut s,
        T0 + 10,
        "lan",
        &to_us(with(msg(MessageType::Request, 4), ia(1, &[]))),
    );
    assert_eq!(ia_status(&reply(&o)), vec![Status::NoAddrsAvail]);
    assert!(o.changes.is_empty());
    let o = send(
        &mut s,
        T0 + 10,
        "lan",
        &with(msg(MessageType::Solicit, 4), ia(1, &[])),
    );
    assert_eq!(top_status(&reply(&o)), Some(Status::NoAddrsAvail));
    // After expiry the address is free again.
    s.expire(T0 + 10_000);
    let o = send(
        &mut s,
        T0 + 10_000,
        "lan",
        &to_us(with(msg(MessageType::Request, 4), ia(1, &[]))),
    );
    assert_eq!(addrs(&reply(&o)).len(), 1);
}

#[test]
fn renew_extends_rebind_keeps_and_foreign_addresses_get_lifetime_zero() {
    let mut s = server();
    let o = send(
        &mut s,
        T0,
        "lan",
        &to_us(with(msg(MessageType::Request, 1), ia(1, &[]))),
    );
    let mine = addrs(&reply(&o))[0].1;
    let o = send(
        &mut s,
        T0 + 1000,
        "lan",
        &to_us(with(msg(MessageType::Renew, 1), ia(1, &[mine]))),
    );
    assert_eq!(addrs(&reply(&o)), vec![(1, mine, 2700, 5400)]);
    assert_eq!(o.changes[0].expires, T0 + 1000 + 5400);
    let o = send(
        &mut s,
        T0 + 2000,
        "lan",
        &with(msg(MessageType::Rebind, 1), ia(1, &[mine])),
    );
    assert_eq!(addrs(&reply(&o)), vec![(1, mine, 2700, 5400)]);
    // A renew naming an address of another prefix gets it back with lifetimes 0.
    let other = a("2001:db8:99::5");
    let o = send(
        &mut s,
        T0 + 3000,
        "lan",
        &to_us(with(msg(MessageType::Renew, 1), ia(1, &[other]))),
    );
    let got = addrs(&reply(&o));
    assert!(got.contains(&(1, mine, 2700, 5400)), "{got:?}");
    assert!(got.contains(&(1, other, 0, 0)), "{got:?}");
}

#[test]
fn release_then_same_client_gets_the_same_address_and_decline_quarantines() {
    let mut s = server();
    let o = send(
        &mut s,
        T0,
        "lan",
        &to_us(with(msg(MessageType::Request, 1), ia(1, &[]))),
    );
    let mine = addrs(&reply(&o))[0].1;
    let o = send(
        &mut s,
        T0 + 5,
        "lan",
        &to_us(with(msg(MessageType::Release, 1), ia(1, &[mine]))),
    );
    assert_eq!(top_status(&reply(&o)), Some(Status::Success));
    assert_eq!(o.changes[0].state, LeaseState::Released);
    let o = send(
        &mut s,
        T0 + 6,
        "lan",
        &to_us(with(msg(MessageType::Request, 1), ia(1, &[]))),
    );
    assert_eq!(addrs(&reply(&o))[0].1, mine);
    // Release of a binding it does not hold: NoBinding in the IA.
    let o = send(
        &mut s,
        T0 + 7,
        "lan",
        &to_us(with(msg(MessageType::Release, 9), ia(1, &[mine]))),
    );
    assert_eq!(ia_status(&reply(&o)), vec![Status::NoBinding]);
    assert!(o.changes.is_empty());
    // Decline: quarantined, nobody gets it while it lasts.
    let o = send(
        &mut s,
        T0 + 8,
        "lan",
        &to_us(with(msg(MessageType::Decline, 1), ia(1, &[mine]))),
    );
    assert_eq!(top_status(&reply(&o)), Some(Status::Success));
    assert_eq!(o.changes[0].state, LeaseState::Declined);
    assert_eq!(o.changes[0].duid, None);
    for c in 1..=5 {
        let o = send(
            &mut s,
            T0 + 9,
            "lan",
            &to_us(with(msg(MessageType::Request, c), ia(1, &[mine]))),
        );
        assert!(
            addrs(&reply(&o)).iter().all(|x| x.1 != mine),
            "client {c} got the declined address"
        );
    }
}

#[test]
fn confirm_on_link_or_not() {
    let mut s = server();
    let o = send(
        &mut s,
        T0,
        "lan",
        &with(msg(MessageType::Confirm, 1), ia(1, &[a("2001:db8:1::100")])),
    );
    assert_eq!(top_status(&reply(&o)), Some(Status::Success));
    let o = send(
        &mut s,
        T0,
        "lan",
        &with(msg(MessageType::Confirm, 1), ia(1, &[a("2001:db8:2::100")])),
    );
    assert_eq!(top_status(&reply(&o)), Some(Status::NotOnLink));
    let o = send(
        &mut s,
        T0,
        "lan",
        &with(msg(MessageType::Confirm, 1), ia(1, &[])),
    );
    assert!(o.reply.is_none());
}

#[test]
fn information_request_on_a_stateless_segment_and_stateful_messages_refused_there() {
    let mut s = server();
    let mut m = Message::new_with_id(MessageType::InformationRequest, [9, 9, 9]);
    m.opts_mut().insert(DhcpOption::ORO(dhcproto::v6::ORO {
        opts: vec![OptionCode::DomainNameServers, OptionCode::DomainSearchList],
    }));
    let o = send(&mut s, T0, "guest", &m);
    let r = reply(&o);
    assert_eq!(r.msg_type(), MessageType::Reply);
    assert_eq!(
        r.opts().get(OptionCode::DomainNameServers),
        Some(&DhcpOption::DomainNameServers(vec![
            a("2001:db8:3::1"),
            a("2001:db8:3::2")
        ]))
    );
    match r.opts().get(OptionCode::DomainSearchList) {
        Some(DhcpOption::DomainSearchList(names)) => {
            let n: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            assert_eq!(n, vec!["guest.example.", "example."]);
        }
        o => panic!("{o:?}"),
    }
    assert!(o.changes.is_empty());
    let o = send(
        &mut s,
        T0,
        "guest",
        &with(msg(MessageType::Solicit, 1), ia(1, &[])),
    );
    assert!(o.reply.is_none());
    assert!(o.refused.unwrap().contains("stateless"));
}

#[test]
fn each_segment_serves_only_its_own_pool() {
    let mut s = server();
    let o = send(
        &mut s,
        T0,
        "dmz",
        &to_us(with(
            msg(MessageType::Request, 1),
            ia(1, &[a("2001:db8:1::100")]),
        )),
    );
    let got = addrs(&reply(&o));
    assert_eq!(got.len(), 1);
    assert!(dmz().in_pool(got[0].1), "{got:?}");
    let o = send(
        &mut s,
        T0,
        "nosuch",
        &with(msg(MessageType::Solicit, 1), ia(1, &[])),
    );
    assert!(o.reply.is_none());
    assert!(o.refused.unwrap().contains("segment nosuch"));
}

#[test]
fn messages_for_other_servers_or_without_ids_are_ignored_with_a_reason() {
    let mut s = server();
    let cases: Vec<(Message, &str)> = vec![
        (
            with(msg(MessageType::Request, 1), ia(1, &[])),
            "another server",
        ),
        (
            with(
                with(msg(MessageType::Request, 1), ia(1, &[])),
                DhcpOption::ServerId(vec![0, 4, 9, 9]),
            ),
            "another server",
        ),
        (
            with(
                Message::new_with_id(MessageType::Solicit, [1, 1, 1]),
                ia(1, &[]),
            ),
            "no client identifier",
        ),
        (
            to_us(with(msg(MessageType::Solicit, 1), ia(1, &[]))),
            "server identifier",
        ),
        (msg(MessageType::Advertise, 1), "not a client message"),
        (msg(MessageType::Reply, 1), "not a client message"),
        (
            with(
                Message::new_with_id(MessageType::Solicit, [1, 1, 1]),
                DhcpOption::ClientId(vec![1]),
            ),
            "client DUID of 1 bytes",
        ),
        (
            with(
                Message::new_with_id(MessageType::Solicit, [1, 1, 1]),
                DhcpOption::ClientId(vec![7; 200]),
            ),
            "client DUID of 200 bytes",
        ),
    ];
    for (m, why) in cases {
        let o = send(&mut s, T0, "lan", &m);
        assert!(o.reply.is_none(), "{why}");
        assert!(o.changes.is_empty(), "{why}");
        let r = o.refused.unwrap();
        assert!(
            r.contains(why) && r.contains("fe80::2") && r.contains("lan"),
            "{why}: {r}"
        );
    }
}

#[test]
fn garbage_never_panics_and_is_refused_with_a_reason() {
    let mut s = server();
    let good = to_us(with(msg(MessageType::Request, 1), ia(1, &[])))
        .to_vec()
        .unwrap();
    // Every truncation and every single-byte corruption of a valid Request.
    for cut in 0..good.len() {
        let o = s.handle_packet(T0, "lan", src(), &good[..cut]);
        if o.reply.is_none() {
            assert!(o.refused.is_some(), "cut {cut}");
        }
    }
    for i in 0..good.len() {
        for v in [0u8, 0xff, 0x7f] {
            let mut b = good.clone();
            b[i] = v;
            let _ = s.handle_packet(T0, "lan", src(), &b);
        }
    }
    // An option whose length runs past the end.
    let mut bad = vec![1, 0, 0, 1];
    bad.extend_from_slice(&[0, 1, 0xff, 0xff, 1, 2, 3]);
    let o = s.handle_packet(T0, "lan", src(), &bad);
    assert!(o.reply.is_none());
    let why = o.refused.unwrap();
    assert!(
        why.contains("malformed") && why.contains("fe80::2"),
        "{why}"
    );
    assert!(!why.contains('\n'));
}

#[test]
fn client_fqdn_is_kept_cleaned() {
    let mut s = server();
    // flags 0, then "evil\nname" "lan"
    let mut data = vec![0u8, 9];
    data.extend_from_slice(b"evil\nname");
    data.push(3);
    data.extend_from_slice(b"lan");
    data.push(0);
    let m = to_us(with(
        with(msg(MessageType::Request, 1), ia(1, &[])),
        DhcpOption::Unknown(UnknownOption::new(OptionCode::ClientFqdn, data)),
    ));
    let o = send(&mut s, T0, "lan", &m);
    assert_eq!(o.changes[0].hostname.as_deref(), Some("evil\\x0aname.lan"));
}

#[test]
fn leases_loaded_from_the_journal_give_the_same_address_after_a_restart() {
    let mut s = server();
    let o = send(
        &mut s,
        T0,
        "lan",
        &to_us(with(msg(MessageType::Request, 1), ia(5, &[]))),
    );
    let mine = addrs(&reply(&o))[0].1;
    let mut fresh = server();
    fresh.load_leases(o.changes.clone());
    // Another client first: it must not get the loaded binding's address.
    let o2 = send(
        &mut fresh,
        T0 + 1,
        "lan",
        &to_us(with(msg(MessageType::Request, 2), ia(5, &[mine]))),
    );
    assert_ne!(addrs(&reply(&o2))[0].1, mine);
    let o3 = send(
        &mut fresh,
        T0 + 2,
        "lan",
        &to_us(with(msg(MessageType::Renew, 1), ia(5, &[mine]))),
    );
    assert_eq!(addrs(&reply(&o3))[0].1, mine);
}
