//! The socket layer in-process: add and remove segments while another keeps
//! running, lease events with the reservation's group, lease listing.
//! Needs root and busybox (udhcpc); fails with a message otherwise.

mod common;

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;

use bulkhead::dhcp::{LeaseEventKind, LeaseState, PoolConfig, Reservation, serve};

struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        sh(&["ip", "netns", "add", &name]);
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mac_of(ns: &str, iface: &str) -> [u8; 6] {
    let out = sh(&["ip", "-n", ns, "-o", "link", "show", iface]);
    let i = out.find("link/ether ").unwrap() + 11;
    bulkhead::dhcp::leases::mac_serde::parse(&out[i..i + 17]).unwrap()
}

#[test]
fn segments_start_and_stop_independently() {
    common::require_root_and(&["ip", "busybox"]);
    let tmp = tempfile::tempdir().unwrap();
    let pid = std::process::id();
    let srv = Netns::new(format!("bhd-ssrv-{pid}"));
    let cli = Netns::new(format!("bhd-scli-{pid}"));
    for (s, c, addr) in [
        ("sa", "ca", "198.18.30.1/24"),
        ("sb", "cb", "198.18.31.1/24"),
    ] {
        sh(&[
            "ip", "link", "add", s, "netns", &srv.0, "type", "veth", "peer", "name", c, "netns",
            &cli.0,
        ]);
        sh(&["ip", "-n", &srv.0, "addr", "add", addr, "dev", s]);
        sh(&["ip", "-n", &srv.0, "link", "set", s, "up"]);
        sh(&["ip", "-n", &cli.0, "link", "set", c, "up"]);
    }
    let mut a = PoolConfig::new(
        "a",
        "sa",
        Ipv4Addr::new(198, 18, 30, 1),
        "198.18.30.0/24".parse().unwrap(),
        vec![(
            Ipv4Addr::new(198, 18, 30, 100),
            Ipv4Addr::new(198, 18, 30, 110),
        )],
    );
    a.reservations.push(Reservation {
        mac: mac_of(&cli.0, "ca"),
        addr: Ipv4Addr::new(198, 18, 30, 7),
        hostname: Some("cam".into()),
        group: Some("cameras".into()),
    });
    let b = PoolConfig::new(
        "b",
        "sb",
        Ipv4Addr::new(198, 18, 31, 1),
        "198.18.31.0/24".parse().unwrap(),
        vec![(
            Ipv4Addr::new(198, 18, 31, 100),
            Ipv4Addr::new(198, 18, 31, 110),
        )],
    );
    let state = tmp.path().join("state");
    let dir = tmp.path().to_path_buf();
    let ns_path = format!("/var/run/netns/{}", srv.0);
    let cli_ns = cli.0.clone();
    // The server runs on a thread inside the server namespace (sockets
    // belong to the namespace of the thread that creates them).
    std::thread::spawn(move || {
        let f = std::fs::File::open(&ns_path).unwrap();
        // SAFETY: setns on a valid namespace fd; affects only this thread.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let h = serve(vec![a, b.clone()], &state, Some(tx)).await.unwrap();
            assert_eq!(h.served_segments(), ["a", "b"]);
            let run = |iface: &'static str| {
                let (ns, dir) = (cli_ns.clone(), dir.clone());
                tokio::task::spawn_blocking(move || common::udhcpc(&ns, iface, &dir, &[]))
            };
            // Both segments serve; the reserved client gets its address.
            assert_eq!(run("ca").await.unwrap().as_deref(), Some("198.18.30.7"));
            let ev = rx.recv().await.unwrap();
            assert_eq!(ev.kind, LeaseEventKind::Bound);
            assert_eq!(ev.lease.group.as_deref(), Some("cameras"));
            assert_eq!(ev.lease.hostname.as_deref(), Some("cam"));
            assert!(run("cb").await.unwrap().is_some());
            let ev = rx.recv().await.unwrap();
            assert_eq!(
                (ev.lease.segment.as_str(), ev.lease.group.as_deref()),
                ("b", None)
            );
            // Stop b: b gets nothing, a keeps working.
            h.remove_pool("b").await.unwrap();
            assert_eq!(h.served_segments(), ["a"]);
            assert_eq!(run("cb").await.unwrap(), None);
            assert_eq!(run("ca").await.unwrap().as_deref(), Some("198.18.30.7"));
            // Start b again: its lease was kept.
            h.add_pool(b).unwrap();
            let again = run("cb").await.unwrap();
            assert!(again.is_some());
            let leases = h.leases();
            assert_eq!(leases.len(), 2, "{leases:?}");
            assert!(leases.iter().all(|l| l.state == LeaseState::Bound));
            assert_eq!(leases[1].addr.to_string(), again.unwrap());
            let json = serde_json::to_string(&leases).unwrap();
            assert!(json.contains("\"group\":\"cameras\""));
            assert!(h.store_stats().fsyncs >= 4);
            h.shutdown().await.unwrap();
        });
    })
    .join()
    .unwrap();
}

/// A burst of requests that is waiting in the socket when the server wakes up is read in one
/// go (recvmmsg) and its leases go to the journal as one commit with one fdatasync; every ACK
/// still comes only after that commit is on disk. 20 DISCOVERs, then 20 REQUESTs, each burst
/// sent while the server's runtime cannot run (same thread), through a relay address as
/// perfdhcp does.
#[test]
fn a_burst_of_requests_is_one_commit_and_one_fsync() {
    use dhcproto::v4::{DhcpOption, Message, MessageType};
    use dhcproto::{Decodable, Decoder, Encodable, Encoder};
    common::require_root_and(&["ip"]);
    const N: u8 = 20;
    let tmp = tempfile::tempdir().unwrap();
    let pid = std::process::id();
    let srv = Netns::new(format!("bhd-bsrv-{pid}"));
    let cli = Netns::new(format!("bhd-bcli-{pid}"));
    sh(&[
        "ip", "link", "add", "bs", "netns", &srv.0, "type", "veth", "peer", "name", "bc", "netns",
        &cli.0,
    ]);
    sh(&[
        "ip",
        "-n",
        &srv.0,
        "addr",
        "add",
        "198.18.32.1/24",
        "dev",
        "bs",
    ]);
    sh(&["ip", "-n", &srv.0, "link", "set", "bs", "up"]);
    sh(&[
        "ip",
        "-n",
        &cli.0,
        "addr",
        "add",
        "198.18.32.2/24",
        "dev",
        "bc",
    ]);
    sh(&["ip", "-n", &cli.0, "link", "set", "bc", "up"]);
    let server = std::net::SocketAddr::from(([198, 18, 32, 1], 67));
    let relay = Ipv4Addr::new(198, 18, 32, 2);
    // the relay's socket (port 67, where the replies come back)
    let client = common::in_netns(&cli.0, move || {
        std::net::UdpSocket::bind(std::net::SocketAddr::from((relay, 67))).unwrap()
    })
    .join()
    .unwrap();
    client.set_nonblocking(true).unwrap();
    let mut pool = PoolConfig::new(
        "burst",
        "bs",
        Ipv4Addr::new(198, 18, 32, 1),
        "198.18.32.0/24".parse().unwrap(),
        vec![(
            Ipv4Addr::new(198, 18, 32, 100),
            Ipv4Addr::new(198, 18, 32, 199),
        )],
    );
    pool.relays = vec![relay];
    let state = tmp.path().join("state");
    let msg = move |mt: MessageType, n: u8, req: Option<Ipv4Addr>| {
        let mac = [0x02, 0, 0, 0, 0x32, n];
        let mut m = Message::new_with_id(
            0x3200 + u32::from(n),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            relay,
            &mac,
        );
        m.opts_mut().insert(DhcpOption::MessageType(mt));
        if let Some(a) = req {
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(a));
            m.opts_mut()
                .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(198, 18, 32, 1)));
        }
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        buf
    };
    // replies waiting at the relay: (xid, type, yiaddr), up to `want` of them or 20 s
    async fn replies(s: &std::net::UdpSocket, want: usize) -> Vec<(u32, MessageType, Ipv4Addr)> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1500];
        for _ in 0..400 {
            while let Ok((n, _)) = s.recv_from(&mut buf) {
                let m = Message::decode(&mut Decoder::new(&buf[..n])).unwrap();
                out.push((m.xid(), m.opts().msg_type().unwrap(), m.yiaddr()));
            }
            if out.len() >= want {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        out
    }
    let (offers, acks, stats, leases) = common::in_netns(&srv.0, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let h = serve(vec![pool], &state, None).await.unwrap();
            // the segment's task starts and waits for its socket
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            for n in 0..N {
                client
                    .send_to(&msg(MessageType::Discover, n, None), server)
                    .unwrap();
            }
            let offers = replies(&client, N.into()).await;
            let before = h.store_stats();
            for &(xid, _, yiaddr) in &offers {
                let n = (xid - 0x3200) as u8;
                client
                    .send_to(&msg(MessageType::Request, n, Some(yiaddr)), server)
                    .unwrap();
            }
            let acks = replies(&client, N.into()).await;
            let after = h.store_stats();
            let leases = h.leases();
            h.shutdown().await.unwrap();
            (offers, acks, (before, after), leases)
        })
    })
    .join()
    .unwrap();
    assert_eq!(offers.len(), usize::from(N), "{offers:?}");
    assert!(offers.iter().all(|o| o.1 == MessageType::Offer));
    assert_eq!(acks.len(), usize::from(N), "{acks:?}");
    assert!(acks.iter().all(|a| a.1 == MessageType::Ack), "{acks:?}");
    let bound = leases
        .iter()
        .filter(|l| l.state == LeaseState::Bound)
        .count();
    assert_eq!(bound, usize::from(N));
    let (before, after) = stats;
    let commits = after.commits - before.commits;
    let fsyncs = after.fsyncs - before.fsyncs;
    eprintln!("{N} REQUESTs in one burst: {commits} commits, {fsyncs} fdatasyncs");
    assert_eq!(after.records - before.records, u64::from(N));
    assert!(commits <= 2, "{N} REQUESTs took {commits} commits");
    assert!(fsyncs <= 2, "{N} REQUESTs took {fsyncs} fdatasyncs");
}

/// A REQUEST whose lease is on its way to disk holds back its ACK without a task of its own:
/// the segment's loop waits for the commit itself (no spawn and hand-over per lease). The
/// journal is made slow on purpose with a long commit window: the second REQUEST comes right
/// after the first one's sync, so its commit waits out the window (500 ms) and the ACK with it.
/// Meanwhile the runtime holds no more tasks than while idle, and the ACK still comes only once
/// the lease is on disk.
#[test]
fn a_pending_ack_is_no_extra_task() {
    use bulkhead::dhcp::leases::StoreOptions;
    use dhcproto::v4::{DhcpOption, Message, MessageType};
    use dhcproto::{Decodable, Decoder, Encodable, Encoder};
    common::require_root_and(&["ip"]);
    let tmp = tempfile::tempdir().unwrap();
    let pid = std::process::id();
    let srv = Netns::new(format!("bhd-tsrv-{pid}"));
    let cli = Netns::new(format!("bhd-tcli-{pid}"));
    sh(&[
        "ip", "link", "add", "ts", "netns", &srv.0, "type", "veth", "peer", "name", "tc", "netns",
        &cli.0,
    ]);
    sh(&[
        "ip",
        "-n",
        &srv.0,
        "addr",
        "add",
        "198.18.33.1/24",
        "dev",
        "ts",
    ]);
    sh(&["ip", "-n", &srv.0, "link", "set", "ts", "up"]);
    sh(&[
        "ip",
        "-n",
        &cli.0,
        "addr",
        "add",
        "198.18.33.2/24",
        "dev",
        "tc",
    ]);
    sh(&["ip", "-n", &cli.0, "link", "set", "tc", "up"]);
    let server = std::net::SocketAddr::from(([198, 18, 33, 1], 67));
    let relay = Ipv4Addr::new(198, 18, 33, 2);
    let client = common::in_netns(&cli.0, move || {
        std::net::UdpSocket::bind(std::net::SocketAddr::from((relay, 67))).unwrap()
    })
    .join()
    .unwrap();
    client.set_nonblocking(true).unwrap();
    let mut pool = PoolConfig::new(
        "slow",
        "ts",
        Ipv4Addr::new(198, 18, 33, 1),
        "198.18.33.0/24".parse().unwrap(),
        vec![(
            Ipv4Addr::new(198, 18, 33, 100),
            Ipv4Addr::new(198, 18, 33, 199),
        )],
    );
    pool.relays = vec![relay];
    let state = tmp.path().join("state");
    let msg = move |mt: MessageType, n: u8, req: Option<Ipv4Addr>| {
        let mut m = Message::new_with_id(
            0x3300 + u32::from(n),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            relay,
            &[0x02, 0, 0, 0, 0x33, n],
        );
        m.opts_mut().insert(DhcpOption::MessageType(mt));
        if let Some(a) = req {
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(a));
            m.opts_mut()
                .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(198, 18, 33, 1)));
        }
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        buf
    };
    // the next reply at the relay (xid, type, yiaddr), waiting up to 10 s; the most tasks
    // alive in the runtime seen meanwhile
    async fn reply(s: &std::net::UdpSocket) -> (Option<(u32, MessageType, Ipv4Addr)>, usize) {
        let mut buf = [0u8; 1500];
        let mut most = 0;
        for _ in 0..1000 {
            most = most.max(
                tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks(),
            );
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                let m = Message::decode(&mut Decoder::new(&buf[..n])).unwrap();
                return (
                    Some((m.xid(), m.opts().msg_type().unwrap(), m.yiaddr())),
                    most,
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        (None, most)
    }
    let opts = StoreOptions {
        commit_window: std::time::Duration::from_millis(500),
        ..StoreOptions::default()
    };
    let (idle, most, ack, stats) = common::in_netns(&srv.0, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let h = bulkhead::dhcp::serve_with(vec![pool], &state, None, opts)
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let mut offers = Vec::new();
            for n in 0..2 {
                client
                    .send_to(&msg(MessageType::Discover, n, None), server)
                    .unwrap();
                offers.push(reply(&client).await.0.unwrap());
            }
            client
                .send_to(&msg(MessageType::Request, 0, Some(offers[0].2)), server)
                .unwrap();
            let first = reply(&client).await.0.unwrap();
            assert_eq!(first.1, MessageType::Ack);
            let idle = tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks();
            // right after the first sync: this commit waits out the window
            client
                .send_to(&msg(MessageType::Request, 1, Some(offers[1].2)), server)
                .unwrap();
            let (ack, most) = reply(&client).await;
            let stats = h.store_stats();
            h.shutdown().await.unwrap();
            (idle, most, ack, stats)
        })
    })
    .join()
    .unwrap();
    let ack = ack.expect("no ACK for the second REQUEST");
    assert_eq!(ack.1, MessageType::Ack, "{ack:?}");
    assert_eq!(stats.windowed, 1, "{stats:?}");
    assert_eq!(stats.records, 2, "{stats:?}");
    eprintln!("tasks alive: {idle} idle, at most {most} while an ACK waited for its commit");
    assert!(
        most <= idle,
        "a pending ACK took a task of its own: {most} tasks alive, {idle} when idle"
    );
}
