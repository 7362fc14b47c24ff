//! Segment isolation and hostile client text, with real packets in network
//! namespaces: a "mgmt" and a "guest" segment served by one in-process
//! server; a real client (busybox udhcpc) on each, and a hostile host on the
//! guest segment sending hand-made DHCP packets from UDP port 68.
//! Needs root and busybox; fails with a message otherwise.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use bulkhead::dhcp::{LeaseState, PoolConfig, serve};
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType};
use dhcproto::{Encodable, Encoder};

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn mac_of(ns: &str, iface: &str) -> [u8; 6] {
    let out = sh(&["ip", "-n", ns, "-o", "link", "show", iface]);
    let i = out.find("link/ether ").unwrap() + 11;
    bulkhead::dhcp::leases::mac_serde::parse(&out[i..i + 17]).unwrap()
}

/// The hostile host's socket: UDP port 68 on its guest interface.
fn hostile_socket(iface: &str) -> UdpSocket {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_broadcast(true).unwrap();
    s.bind_device(Some(iface.as_bytes())).unwrap();
    s.bind(&std::net::SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)).into())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s.into()
}

fn packet(
    mt: MessageType,
    xid: u32,
    chaddr: [u8; 6],
    ciaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
    opts: &[DhcpOption],
) -> Vec<u8> {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, ciaddr, z, z, giaddr, &chaddr);
    m.set_flags(Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(mt));
    for o in opts {
        m.opts_mut().insert(o.clone());
    }
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).unwrap();
    buf
}

/// Send packets to 255.255.255.255:67 from the guest interface; returns how
/// many datagrams came back to port 68.
fn send_hostile(ns: &str, iface: &'static str, packets: Vec<Vec<u8>>) -> usize {
    common::in_netns(ns, move || {
        let s = hostile_socket(iface);
        let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
        for p in &packets {
            s.send_to(p, to).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut got = 0;
        let mut buf = [0u8; 1500];
        while s.recv_from(&mut buf).is_ok() {
            got += 1;
        }
        got
    })
    .join()
    .unwrap()
}

#[test]
fn guest_host_cannot_reach_the_mgmt_pool_or_its_leases() {
    common::require_root_and(&["busybox"]);
    let tmp = tempfile::tempdir().unwrap();
    let srv = common::Netns::new("isrv");
    let cli = common::Netns::new("icli");
    for (s, c, addr) in [
        ("smgmt", "cmgmt", "198.18.40.1/24"),
        ("sguest", "cguest", "198.18.41.1/24"),
    ] {
        sh(&[
            "ip", "link", "add", s, "netns", &srv.name, "type", "veth", "peer", "name", c, "netns",
            &cli.name,
        ]);
        sh(&["ip", "-n", &srv.name, "addr", "add", addr, "dev", s]);
        sh(&["ip", "-n", &srv.name, "link", "set", s, "up"]);
        sh(&["ip", "-n", &cli.name, "link", "set", c, "up"]);
    }
    // A small mgmt pool: three addresses, easy to drain.
    let mgmt = PoolConfig::new(
        "mgmt",
        "smgmt",
        ip("198.18.40.1"),
        "198.18.40.0/24".parse().unwrap(),
        vec![(ip("198.18.40.100"), ip("198.18.40.102"))],
    );
    let guest = PoolConfig::new(
        "guest",
        "sguest",
        ip("198.18.41.1"),
        "198.18.41.0/24".parse().unwrap(),
        vec![(ip("198.18.41.100"), ip("198.18.41.150"))],
    );
    let state = tmp.path().join("state");
    let dhcp_dir = state.join("dhcp");
    let dir = tmp.path().to_path_buf();
    let ns_path = format!("/var/run/netns/{}", srv.name);
    let cli_ns = cli.name.clone();
    let mgmt_mac = mac_of(&cli.name, "cmgmt");
    let guest_mac = mac_of(&cli.name, "cguest");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&ns_path).unwrap();
        // SAFETY: setns on a valid namespace fd; affects only this thread.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
            let h = serve(vec![mgmt, guest], &dhcp_dir, Some(tx)).await.unwrap();
            let hostile = |packets: Vec<Vec<u8>>| {
                let ns = cli_ns.clone();
                tokio::task::spawn_blocking(move || send_hostile(&ns, "cguest", packets))
            };
            let run = |iface: &'static str, extra: Vec<String>| {
                let (ns, dir) = (cli_ns.clone(), dir.clone());
                tokio::task::spawn_blocking(move || {
                    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                    common::udhcpc(&ns, iface, &dir, &extra)
                })
            };

            // 1. The guest host tries to drain the mgmt pool: DISCOVER and
            // REQUEST for every mgmt address, giaddr = the mgmt gateway.
            let mut pkts = Vec::new();
            for (n, last) in (100u8..=102).enumerate() {
                let m = [0x02, 0xee, 0, 0, 0, n as u8];
                let want = Ipv4Addr::new(198, 18, 40, last);
                let g = ip("198.18.40.1");
                let z = Ipv4Addr::UNSPECIFIED;
                pkts.push(packet(MessageType::Discover, 10 + n as u32, m, z, g, &[]));
                pkts.push(packet(
                    MessageType::Request,
                    20 + n as u32,
                    m,
                    z,
                    g,
                    &[
                        DhcpOption::ServerIdentifier(g),
                        DhcpOption::RequestedIpAddress(want),
                    ],
                ));
            }
            let answers = hostile(pkts).await.unwrap();
            assert_eq!(answers, 0, "the hostile host got replies");
            tokio::time::sleep(Duration::from_millis(200)).await;
            let leases = h.leases();
            assert!(
                leases.iter().all(|l| l.mac[1] != 0xee),
                "the guest host holds leases: {leases:?}"
            );
            // The real mgmt client still gets an address from its pool.
            let got = run("cmgmt", vec![])
                .await
                .unwrap()
                .expect("mgmt client leased");
            assert!(got.starts_with("198.18.40.10"), "{got}");
            let victim: Ipv4Addr = got.parse().unwrap();
            let ev = events.recv().await.unwrap();
            assert_eq!(
                (ev.lease.segment.as_str(), ev.lease.mac),
                ("mgmt", mgmt_mac)
            );

            // 2. RELEASE and DECLINE of the mgmt client's lease, with its
            // chaddr, sent from the guest segment (with and without giaddr).
            let mut pkts = Vec::new();
            for g in [ip("198.18.40.1"), Ipv4Addr::UNSPECIFIED] {
                pkts.push(packet(
                    MessageType::Release,
                    30,
                    mgmt_mac,
                    victim,
                    g,
                    &[DhcpOption::ServerIdentifier(ip("198.18.40.1"))],
                ));
                pkts.push(packet(
                    MessageType::Decline,
                    31,
                    mgmt_mac,
                    Ipv4Addr::UNSPECIFIED,
                    g,
                    &[
                        DhcpOption::ServerIdentifier(ip("198.18.40.1")),
                        DhcpOption::RequestedIpAddress(victim),
                    ],
                ));
            }
            hostile(pkts).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let l = h
                .leases()
                .into_iter()
                .find(|l| l.segment == "mgmt" && l.addr == victim)
                .unwrap();
            assert_eq!(l.state, LeaseState::Bound, "{l:?}");
            assert!(
                events.try_recv().is_err(),
                "no lease event for the forged packets"
            );

            // 3. A real client on the guest segment with a host name that
            // carries a newline, a forged syslog header and escape sequences.
            let name = b"pc\n<13>Dec  1 10:00:00 gw1 sshd: root login\x1b[2J\x1b]0;pwned\x07";
            let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
            let got = run("cguest", vec!["-x".into(), format!("0x0c:{hex}")])
                .await
                .unwrap()
                .expect("guest client leased");
            let want = r"pc\x0a<13>Dec  1 10:00:00 gw1 sshd: root login\x1b[2J\x1b]0;pwned\x07";
            let ev = events.recv().await.unwrap();
            assert_eq!(ev.lease.mac, guest_mac);
            assert_eq!(ev.lease.addr.to_string(), got);
            assert_eq!(ev.lease.hostname.as_deref(), Some(want));
            let stored = h.leases().into_iter().find(|l| l.mac == guest_mac).unwrap();
            assert_eq!(stored.hostname.as_deref(), Some(want));
            h.shutdown().await.unwrap();
        });
    })
    .join()
    .unwrap();

    // What the operator sees: the journal on disk and `bulkhead leases`.
    let on_disk = bulkhead::dhcp::leases::read_leases(
        &state.join("dhcp"),
        bulkhead::dhcp::leases::unix_now(),
    )
    .unwrap();
    assert!(on_disk.iter().all(|l| {
        l.hostname
            .as_deref()
            .is_none_or(|h| !h.chars().any(char::is_control))
    }));
    let shipped = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/overlay/etc/bulkhead/bulkhead.toml"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args([
            "-c",
            shipped,
            "--state-dir",
            state.to_str().unwrap(),
            "leases",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 4, "header, two leases, count: {text}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with("guest") && r.contains(r"pc\x0a<13>Dec  1")),
        "{text}"
    );
}
