//! Live set changes change forwarding without a reload, and an open TCP connection survives:
//! client ns → gateway ns (Bulkhead's ruleset) → server ns, real TCP.

mod apply_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use apply_support::*;
use bulkhead::apply::{Applier, Firewall};
use bulkhead::model::Backend;

const SERVER: &str = "198.18.2.10:8080";

/// Echo server on a listener made in the server namespace; stops when `stop` is set.
fn echo(listener: TcpListener, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        s.set_read_timeout(Some(Duration::from_millis(100)))
                            .unwrap();
                        let mut b = [0u8; 64];
                        while !stop.load(Ordering::SeqCst) {
                            match s.read(&mut b) {
                                Ok(0) => break,
                                Ok(n) => {
                                    let _ = s.write_all(&b[..n]);
                                }
                                Err(_) => continue,
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    })
}

fn connect(client: &Ns) -> std::io::Result<TcpStream> {
    let addr: SocketAddr = SERVER.parse().unwrap();
    client.run(|| TcpStream::connect_timeout(&addr, Duration::from_millis(700)))
}

fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    if s.write_all(msg).is_err() {
        return false;
    }
    let mut b = vec![0u8; msg.len()];
    s.read_exact(&mut b).is_ok() && b == msg
}

#[test]
fn live_set_change_switches_traffic_and_keeps_open_connections() {
    init();
    let gw = Ns::new("gw");
    let cl = Ns::new("cl");
    let sv = Ns::new("sv");
    gw.sh("ip link add bhup type veth peer name bhup-p");
    gw.sh("ip link add bhmgmt type veth peer name bhmgmt-p");
    gw.sh(&format!(
        "ip link add bhlan type veth peer name c0 netns {}",
        cl.name
    ));
    gw.sh(&format!(
        "ip link add bhsrv type veth peer name s0 netns {}",
        sv.name
    ));
    cl.sh("ip addr add 198.18.1.10/24 dev c0 && ip link set c0 up && ip route add default via 198.18.1.1");
    sv.sh("ip addr add 198.18.2.10/24 dev s0 && ip link set s0 up && ip route add default via 198.18.2.1");
    let state = TempDir::new("state");
    let plan = plan("apply.toml", Backend::Nftables);
    gw.run(|| {
        Applier::new(state.path(), Backend::Nftables)
            .unwrap()
            .apply(&plan)
            .unwrap()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let listener = sv.run(|| TcpListener::bind(SERVER).unwrap());
    let server = echo(listener, stop.clone());
    // The gateway's MTU on bhlan is 1400 and the client's 1500: fine for these small writes.

    assert!(
        connect(&cl).is_err(),
        "client reached the server before being allowed"
    );
    let client: bulkhead::apply::firewall::Nftables = Default::default();
    let t = Instant::now();
    gw.run(|| {
        client
            .set_add("allowed", &["198.18.1.10/32".parse().unwrap()])
            .unwrap()
    });
    let set_add_time = t.elapsed();
    eprintln!("set add (one nft call): {set_add_time:?}");
    let listed = gw.run(|| client.set_list("allowed").unwrap());
    assert!(listed.contains(&"198.18.1.10".to_string()), "{listed:?}");
    let mut open = connect(&cl).expect("allowed client cannot connect");
    assert!(roundtrip(&mut open, b"hello"));
    // The table's handle changes when the table is replaced: it must not.
    let table_handle = || {
        gw.sh("nft -a list table inet bulkhead")
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    let handle_before = table_handle();

    gw.run(|| {
        Applier::new(state.path(), Backend::Nftables)
            .unwrap()
            .set_del("allowed", &["198.18.1.10/32".parse().unwrap()])
            .unwrap()
    });
    assert!(
        connect(&cl).is_err(),
        "new connection allowed after set del"
    );
    assert!(
        roundtrip(&mut open, b"still here"),
        "open connection was cut"
    );
    // Nothing was reloaded.
    assert_eq!(table_handle(), handle_before);
    assert!(!nft_table(&gw).contains("198.18.1.10"));
    let counters = gw.run(|| {
        Applier::new(state.path(), Backend::Nftables)
            .unwrap()
            .counters()
            .unwrap()
    });
    let allowed = counters
        .iter()
        .find(|c| c.chain == "forward" && c.comment == "rule:allowed-to-srv")
        .expect("counter for the rule");
    assert!(allowed.packets >= 1, "{allowed:?}");
    let est = counters
        .iter()
        .find(|c| c.chain == "forward" && c.comment == "builtin:established")
        .unwrap();
    assert!(est.packets >= 2, "{est:?}");
    let dropped = counters
        .iter()
        .find(|c| c.chain == "forward" && c.comment == "builtin:default-drop")
        .unwrap();
    assert!(dropped.packets >= 2, "{dropped:?}");
    drop(open);
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
}
