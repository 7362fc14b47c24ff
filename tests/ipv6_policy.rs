//! One policy for both families: the dual-stack config (tests/golden/dualstack.toml, the
//! shipped plan with a ULA /64 per segment) rendered and explained for IPv4 and IPv6; then
//! tests/configs/apply6.toml applied for real in namespaces, with real traffic of both
//! families (static IPv6 addresses in the client namespaces).

mod apply_support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apply_support::*;
use bulkhead::apply::Applier;
use bulkhead::model::{self, Backend, Proto};
use bulkhead::plan::{self, explain, ruleset};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

fn dualstack() -> model::Model {
    let p = common::root().join("tests/golden/dualstack.toml");
    model::load(&p).unwrap_or_else(|r| panic!("{r}")).0
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn decide(
    m: &model::Model,
    rs: &ruleset::Ruleset,
    src: &str,
    dst: &str,
    proto: Proto,
    port: Option<u16>,
) -> explain::Decision {
    explain::explain(
        m,
        rs,
        &explain::Flow {
            src: ip(src),
            dst: ip(dst),
            proto,
            port,
        },
    )
}

#[test]
fn group_sets_are_split_per_family() {
    let m = dualstack();
    let rs = ruleset::build(&m);
    let v4 = rs.set("web_nodes").unwrap();
    assert!(!v4.ipv6);
    assert_eq!(v4.elements.len(), 1);
    let v6 = rs.set("web_nodes_v6").unwrap();
    assert!(v6.ipv6);
    assert_eq!(v6.elements6[0].to_string(), "fd00:30::10/124");
    assert!(
        rs.set("quarantine_v6")
            .is_some_and(|s| s.ipv6 && s.timeout.is_some())
    );
    let script = match plan::build(&m, None).firewall {
        plan::FirewallText::Nftables { script } => script,
        _ => unreachable!(),
    };
    assert!(script.contains("set web_nodes_v6 {\n\t\ttype ipv6_addr"));
    assert!(script.contains("ip6 saddr @web_nodes_v6 ip6 daddr @app_nodes_v6 tcp dport 8080"));
    // no NAT66: masquerade stays IPv4
    assert!(script.contains("oifname \"eth1\" meta nfproto ipv4 counter masquerade"));
    assert!(!script.contains("snat ip6") && !script.contains("dnat ip6"));
}

#[test]
fn explain_decides_both_families_alike() {
    let m = dualstack();
    let rs = ruleset::build(&m);
    for (src, dst, proto, port, allowed, by) in [
        // internal -> dmz web: a segment rule, both families
        (
            "192.168.20.50",
            "192.168.10.10",
            Proto::Tcp,
            Some(443),
            true,
            "internal-to-dmz-web",
        ),
        (
            "fd00:20::50",
            "fd00:10::10",
            Proto::Tcp,
            Some(443),
            true,
            "internal-to-dmz-web",
        ),
        // group to group
        (
            "192.168.30.12",
            "192.168.30.22",
            Proto::Tcp,
            Some(8080),
            true,
            "web-to-app",
        ),
        (
            "fd00:30::12",
            "fd00:30::22",
            Proto::Tcp,
            Some(8080),
            true,
            "web-to-app",
        ),
        // guest may not reach the servers
        (
            "192.168.200.7",
            "192.168.30.53",
            Proto::Udp,
            Some(53),
            false,
            "default-drop",
        ),
        (
            "fd00:200::7",
            "fd00:30::53",
            Proto::Udp,
            Some(53),
            false,
            "default-drop",
        ),
        // guest has internet (both families)
        (
            "192.168.200.7",
            "198.51.100.7",
            Proto::Tcp,
            Some(443),
            true,
            "guest",
        ),
        (
            "fd00:200::7",
            "2001:db8:1::7",
            Proto::Tcp,
            Some(443),
            true,
            "guest",
        ),
        // dmz: DNS-only egress profile
        (
            "fd00:10::10",
            "2001:db8:1::7",
            Proto::Tcp,
            Some(443),
            false,
            "default-drop",
        ),
        (
            "fd00:10::10",
            "2001:db8:1::7",
            Proto::Udp,
            Some(53),
            true,
            "dns:dmz",
        ),
        // SSH to the gateway only from mgmt
        (
            "fd00:100::5",
            "fd00:100::1",
            Proto::Tcp,
            Some(22),
            true,
            "mgmt",
        ),
        (
            "fd00:20::5",
            "fd00:20::1",
            Proto::Tcp,
            Some(22),
            false,
            "default-drop",
        ),
        // ping crosses when a rule allows every protocol (mgmt-to-all), ICMPv6 included
        (
            "fd00:100::5",
            "fd00:30::53",
            Proto::Icmp,
            None,
            true,
            "mgmt-to-all",
        ),
        (
            "fd00:200::5",
            "fd00:30::53",
            Proto::Icmp,
            None,
            false,
            "default-drop",
        ),
        // the internet reaches no IPv6 host (no port forwards in IPv6)
        (
            "2001:db8:1::7",
            "fd00:10::10",
            Proto::Tcp,
            Some(443),
            false,
            "default-drop",
        ),
    ] {
        let d = decide(&m, &rs, src, dst, proto, port);
        assert_eq!(
            d.allowed(),
            allowed,
            "{src} -> {dst} {proto:?}/{port:?}: {}",
            d.describe()
        );
        let name = d
            .rule
            .as_ref()
            .map(|r| r.origin.name.clone())
            .unwrap_or_default();
        assert_eq!(name, by, "{src} -> {dst}: {}", d.describe());
    }
}

#[test]
fn host_files_take_icmpv6_per_rfc4890_only() {
    let m = dualstack();
    let shipped = model::load(&common::root().join("overlay/etc/bulkhead/bulkhead.toml"))
        .unwrap()
        .0;
    for (m, role) in [(&m, "web_nodes"), (&shipped, "web_nodes")] {
        let text = plan::hostrules::render(m, role).unwrap();
        let input = &text[text.find("chain input").unwrap()..text.find("chain output").unwrap()];
        // never all ICMPv6: redirects, router renumbering, unsolicited replies are dropped
        assert!(!input.contains("ipv6-icmp"), "{input}");
        assert!(input.contains("icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 counter accept"));
        assert!(input.contains("icmpv6 type echo-request limit rate"));
        assert!(!input.contains("nd-redirect"));
    }
    let text = plan::hostrules::render(&m, "app_nodes").unwrap();
    assert!(
        text.contains("ip6 saddr @web_nodes_v6 tcp dport 8080 counter accept"),
        "{text}"
    );
    assert!(text.contains("set web_nodes_v6 {\n\t\ttype ipv6_addr"));
    assert!(text.contains("ip6 saddr @quarantine_v6 counter drop"));
}

// ---------------------------------------------------------------------------------------------
// In namespaces: client (lan), server (srv) and the upstream "internet" behind the uplink.

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

struct Site {
    gw: Ns,
    cl: Ns,
    sv: Ns,
    up: Ns,
    state: TempDir,
    m: model::Model,
}

fn site() -> Site {
    init();
    let gw = Ns::new("gw6");
    let cl = Ns::new("cl6");
    let sv = Ns::new("sv6");
    let up = Ns::new("up6");
    for (port, peer, ns) in [
        ("bhlan", "c0", &cl),
        ("bhsrv", "s0", &sv),
        ("bhup", "u0", &up),
    ] {
        gw.sh(&format!(
            "ip link add {port} type veth peer name {peer} netns {}",
            ns.name
        ));
        ns.sh(&format!(
            "echo 0 > /proc/sys/net/ipv6/conf/{peer}/accept_dad && ip link set {peer} up"
        ));
    }
    gw.sh("ip link add bhmgmt type veth peer name bhmgmt-p");
    // two clients in one namespace: .10 is in group web_clients, .11 is not
    cl.sh("ip addr add 198.18.1.10/24 dev c0 && ip addr add 198.18.1.11/24 dev c0 && ip route add default via 198.18.1.1");
    cl.sh("ip -6 addr add fd00:db8:1::10/64 dev c0 nodad && ip -6 addr add fd00:db8:1::11/64 dev c0 nodad && ip -6 route add default via fd00:db8:1::1");
    sv.sh("ip addr add 198.18.2.10/24 dev s0 && ip route add default via 198.18.2.1");
    sv.sh("ip -6 addr add fd00:db8:2::10/64 dev s0 nodad && ip -6 route add default via fd00:db8:2::1");
    // the internet side routes the segments' ULA prefixes back to the gateway (no NAT66)
    up.sh("ip addr add 198.18.3.254/24 dev u0");
    up.sh("ip -6 addr add 2001:db8:3::fe/64 dev u0 nodad && ip -6 route add fd00:db8::/32 via 2001:db8:3::1");
    let state = TempDir::new("state6");
    let (m, _) = model::load(&config("apply6.toml")).unwrap();
    let plan = plan::build(&m, Some(Backend::Nftables));
    gw.run(|| {
        Applier::new(state.path(), Backend::Nftables)
            .unwrap()
            .apply(&plan)
            .unwrap()
    });
    Site {
        gw,
        cl,
        sv,
        up,
        state,
        m,
    }
}

/// Accept loop on `addr` in `ns`: records each peer address, answers "ok".
fn serve(
    ns: &Ns,
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<IpAddr>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let l = ns.run(|| TcpListener::bind(addr).unwrap());
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut s, peer)) => {
                    seen.lock().unwrap().push(peer.ip());
                    let _ = s.write_all(b"ok");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    })
}

/// A TCP connection from `src` to `dst` made in `ns`; true when the server answered. The
/// timeout covers one SYN retransmission (1 s).
fn reach(ns: &Ns, src: &str, dst: SocketAddr) -> bool {
    let src: IpAddr = src.parse().unwrap();
    ns.run(|| {
        let s = Socket::new(Domain::for_address(dst), Type::STREAM, None).unwrap();
        s.bind(&SockAddr::from(SocketAddr::new(src, 0))).unwrap();
        if s.connect_timeout(&SockAddr::from(dst), Duration::from_millis(1500))
            .is_err()
        {
            return false;
        }
        let mut t: TcpStream = s.into();
        t.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 2];
        t.read_exact(&mut b).is_ok() && &b == b"ok"
    })
}

/// An allowed flow, tried until it works (at most 4 times): right after an apply the first
/// IPv6 flow through a fresh port can wait on neighbour discovery longer than a connect
/// timeout; the policy checks start once each path has carried one connection.
fn settle(ns: &Ns, src: &str, dst: &str) {
    let d: SocketAddr = dst.parse().unwrap();
    assert!(
        (0..4).any(|_| reach(ns, src, d)),
        "{src} -> {dst} never got through"
    );
}

fn counter(gw: &Ns, state: &Path, chain: &str, comment: &str) -> u64 {
    gw.run(|| {
        Applier::new(state, Backend::Nftables)
            .unwrap()
            .counters()
            .unwrap()
            .into_iter()
            .filter(|c| c.chain == chain && c.comment == comment)
            .map(|c| c.packets)
            .sum()
    })
}

#[test]
fn policy_matrix_holds_for_both_families_and_ipv6_is_routed() {
    let s = site();
    let rs = ruleset::build(&s.m);
    let stop = Arc::new(AtomicBool::new(false));
    let web_seen = Arc::new(Mutex::new(Vec::new()));
    let net_seen = Arc::new(Mutex::new(Vec::new()));
    let mut servers = Vec::new();
    for a in ["198.18.2.10:8080", "[fd00:db8:2::10]:8080"] {
        servers.push(serve(
            &s.sv,
            a.parse().unwrap(),
            web_seen.clone(),
            stop.clone(),
        ));
    }
    for a in ["198.18.3.254:8081", "[2001:db8:3::fe]:8081"] {
        servers.push(serve(
            &s.up,
            a.parse().unwrap(),
            net_seen.clone(),
            stop.clone(),
        ));
    }
    settle(&s.cl, "fd00:db8:1::10", "[fd00:db8:2::10]:8080");
    settle(&s.cl, "fd00:db8:1::11", "[2001:db8:3::fe]:8081");
    settle(&s.cl, "198.18.1.10", "198.18.2.10:8080");
    web_seen.lock().unwrap().clear();
    net_seen.lock().unwrap().clear();
    // (namespace, source, destination, allowed)
    let matrix: &[(&Ns, &str, &str, bool)] = &[
        (&s.cl, "198.18.1.10", "198.18.2.10:8080", true),
        (&s.cl, "fd00:db8:1::10", "[fd00:db8:2::10]:8080", true),
        (&s.cl, "198.18.1.11", "198.18.2.10:8080", false),
        (&s.cl, "fd00:db8:1::11", "[fd00:db8:2::10]:8080", false),
        (&s.cl, "198.18.1.11", "198.18.3.254:8081", true),
        (&s.cl, "fd00:db8:1::11", "[2001:db8:3::fe]:8081", true),
        (&s.sv, "198.18.2.10", "198.18.3.254:8081", false),
        (&s.sv, "fd00:db8:2::10", "[2001:db8:3::fe]:8081", false),
        (&s.sv, "fd00:db8:2::10", "[fd00:db8:1::10]:8080", false),
        (&s.up, "2001:db8:3::fe", "[fd00:db8:2::10]:8080", false),
    ];
    let mut bad = Vec::new();
    for (ns, src, dst, want) in matrix {
        let d: SocketAddr = dst.parse().unwrap();
        let got = reach(ns, src, d);
        let e = explain::explain(
            &s.m,
            &rs,
            &explain::Flow {
                src: src.parse().unwrap(),
                dst: d.ip(),
                proto: Proto::Tcp,
                port: Some(d.port()),
            },
        );
        if got != *want || e.allowed() != *want {
            bad.push(format!(
                "{src} -> {dst}: traffic {got}, explain {} ({}), want {want}",
                e.allowed(),
                e.describe()
            ));
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in servers {
        t.join().unwrap();
    }
    if !bad.is_empty() {
        eprintln!(
            "{}",
            s.gw.sh("nft list table inet bulkhead | grep -v \"packets 0 \"")
        );
        eprintln!(
            "{}",
            s.gw.sh("ip -6 neigh; ip -6 route; sysctl -a 2>/dev/null | grep forwarding")
        );
        eprintln!("{}", s.sv.sh("ip -6 neigh; ip -6 route; ip -6 addr"));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // IPv6 is routed: the server and the internet see the client's own address; IPv4 to the
    // internet is masqueraded.
    let web = web_seen.lock().unwrap().clone();
    assert!(web.contains(&ip("fd00:db8:1::10")), "{web:?}");
    assert!(web.contains(&ip("198.18.1.10")), "{web:?}");
    let net = net_seen.lock().unwrap().clone();
    assert!(net.contains(&ip("fd00:db8:1::11")), "{net:?}");
    assert!(net.contains(&ip("198.18.3.1")), "{net:?}");
    assert!(!net.contains(&ip("198.18.1.11")), "{net:?}");
    // applied state: gateway6 addresses, IPv6 forwarding, IPv6 default route
    assert!(
        s.gw.sh("ip -6 addr show dev bhlan")
            .contains("fd00:db8:1::1/64")
    );
    assert_eq!(proc_sys(&s.gw, "net.ipv6.conf.all.forwarding"), "1");
    assert_eq!(proc_sys(&s.gw, "net.ipv6.conf.bhlan.accept_ra"), "0");
    assert!(
        s.gw.sh("ip -6 route show default")
            .contains("via 2001:db8:3::fe dev bhup")
    );
    // and the drift check sees it in place: nothing to do (before, the IPv6 default route
    // was "to add" on every check, and `bulkhead run` re-applied every second)
    let plan = plan::build(&s.m, Some(Backend::Nftables));
    let diff = s.gw.run(|| {
        Applier::new(s.state.path(), Backend::Nftables)
            .unwrap()
            .diff(&plan)
            .unwrap()
    });
    let routes: Vec<_> = diff
        .changes
        .iter()
        .filter(|c| c.object.contains("default"))
        .collect();
    assert!(routes.is_empty(), "drift in routes: {routes:?}");
}

#[test]
fn spoofed_ipv6_sources_are_dropped_and_counted() {
    let s = site();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let srv = serve(
        &s.up,
        "[2001:db8:3::fe]:8081".parse().unwrap(),
        seen.clone(),
        stop.clone(),
    );
    let dst: SocketAddr = "[2001:db8:3::fe]:8081".parse().unwrap();
    // the control: the client's own address goes out
    settle(&s.cl, "fd00:db8:1::11", "[2001:db8:3::fe]:8081");
    let before = counter(&s.gw, s.state.path(), "antispoof", "antispoof:lan");
    // the drops are logged: read the NFLOG group in the gateway's namespace
    let group = s.m.logging.nflog_group;
    let sock =
        s.gw.run(|| bulkhead::logship::nflog::NflogSocket::bind(group).unwrap());
    let (ltx, lrx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = sock.recv(&mut buf) {
            for r in bulkhead::logship::nflog::decode_datagram(&buf[..n])
                .into_iter()
                .flatten()
            {
                if ltx.send(r).is_err() {
                    return;
                }
            }
        }
    });
    // a lan host claims an address of the server segment, then one from nowhere
    s.cl.sh("ip -6 addr add fd00:db8:2::99/128 dev c0 nodad && ip -6 addr add 2001:db8:77::1/128 dev c0 nodad");
    assert!(
        !reach(&s.cl, "fd00:db8:2::99", dst),
        "spoofed srv source passed"
    );
    assert!(
        !reach(&s.cl, "2001:db8:77::1", dst),
        "spoofed foreign source passed"
    );
    let after = counter(&s.gw, s.state.path(), "antispoof", "antispoof:lan");
    assert!(
        after > before,
        "spoofed packets not dropped by antispoof:lan ({before} -> {after})"
    );
    let logged: Vec<_> = lrx.try_iter().collect();
    assert!(
        logged
            .iter()
            .any(|r| r.prefix == "bh:antispoof:antispoof:lan"
                && r.packet
                    .as_ref()
                    .is_some_and(|p| p.src == ip("fd00:db8:2::99")
                        && p.dst == ip("2001:db8:3::fe")
                        && p.dport() == Some(8081))),
        "the spoofed IPv6 packet was not logged: {logged:?}"
    );
    // from the uplink, no segment prefix may arrive
    let before = counter(&s.gw, s.state.path(), "antispoof", "antispoof:uplink");
    s.up.sh("ip -6 addr add fd00:db8:1::77/128 dev u0 nodad");
    let stop2 = Arc::new(AtomicBool::new(false));
    let seen2 = Arc::new(Mutex::new(Vec::new()));
    let web = serve(
        &s.sv,
        "[fd00:db8:2::10]:8080".parse().unwrap(),
        seen2.clone(),
        stop2.clone(),
    );
    assert!(!reach(
        &s.up,
        "fd00:db8:1::77",
        "[fd00:db8:2::10]:8080".parse().unwrap()
    ));
    let after = counter(&s.gw, s.state.path(), "antispoof", "antispoof:uplink");
    assert!(
        after > before,
        "segment prefix from the uplink not dropped ({before} -> {after})"
    );
    stop.store(true, Ordering::SeqCst);
    stop2.store(true, Ordering::SeqCst);
    srv.join().unwrap();
    web.join().unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen.is_empty() && seen.iter().all(|a| *a == ip("fd00:db8:1::11")),
        "only the genuine source arrived: {seen:?}"
    );
    assert!(seen2.lock().unwrap().is_empty());
}

fn mac(ns: &Ns, dev: &str) -> [u8; 6] {
    let s = link_json(ns, dev)["address"].as_str().unwrap().to_string();
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn ifindex(ns: &Ns, dev: &str) -> u32 {
    link_json(ns, dev)["ifindex"].as_u64().unwrap() as u32
}

/// A raw ICMPv6 socket on `dev` (made on a thread inside the device's namespace).
fn icmp6(dev: &str, hops: u32) -> Socket {
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).unwrap();
    s.bind_device(Some(dev.as_bytes())).unwrap();
    s.set_multicast_hops_v6(hops).unwrap();
    s.set_unicast_hops_v6(hops).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s
}

/// A router advertisement (RFC 4861 4.2): default router for 1800 s, one prefix for SLAAC.
fn router_advert(lladdr: [u8; 6], prefix: Ipv6Addr) -> Vec<u8> {
    let mut m = vec![134, 0, 0, 0, 64, 0];
    m.extend_from_slice(&1800u16.to_be_bytes());
    m.extend_from_slice(&[0; 8]);
    m.extend_from_slice(&[1, 1]);
    m.extend_from_slice(&lladdr);
    m.extend_from_slice(&[3, 4, 64, 0xc0]);
    m.extend_from_slice(&86400u32.to_be_bytes());
    m.extend_from_slice(&14400u32.to_be_bytes());
    m.extend_from_slice(&[0; 4]);
    m.extend_from_slice(&prefix.octets());
    m
}

#[test]
fn rogue_ra_changes_nothing_and_stays_on_its_segment() {
    let s = site();
    // link-local routes and addresses come and go with the links; the rogue offers a global
    // prefix and a default route
    let routes = || s.gw.sh("ip -6 route show | grep -v ^fe80 || true");
    let addrs = || s.gw.sh("ip -6 addr show scope global");
    std::thread::sleep(Duration::from_millis(300));
    let (routes0, addrs0) = (routes(), addrs());
    let drops = || counter(&s.gw, s.state.path(), "input", "builtin:default-drop");
    let before = drops();
    // the server segment listens for router advertisements while a lan client sends some
    let (c_mac, c_idx) = (mac(&s.cl, "c0"), ifindex(&s.cl, "c0"));
    let listening = Arc::new(AtomicBool::new(false));
    let heard = std::thread::scope(|sc| {
        let l = listening.clone();
        let sv = &s.sv;
        let h = sc.spawn(move || {
            sv.run(|| {
                let r = icmp6("s0", 255);
                l.store(true, Ordering::SeqCst);
                let t0 = Instant::now();
                let mut b = [0u8; 1500];
                let mut rr: &Socket = &r;
                while t0.elapsed() < Duration::from_secs(2) {
                    if let Ok(n) = rr.read(&mut b)
                        && n > 0
                        && b[0] == 134
                    {
                        return true;
                    }
                }
                false
            })
        });
        while !listening.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        s.cl.run(|| {
            let so = icmp6("c0", 255);
            for _ in 0..3 {
                let a = SockAddr::from(SocketAddrV6::new(ALL_NODES, 0, 0, c_idx));
                so.send_to(&router_advert(c_mac, "2001:db8:66::".parse().unwrap()), &a)
                    .unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        h.join().unwrap()
    });
    assert!(
        !heard,
        "a router advertisement from lan reached the srv segment"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        routes(),
        routes0,
        "the rogue RA changed the gateway's IPv6 routes"
    );
    assert_eq!(
        addrs(),
        addrs0,
        "the rogue RA changed the gateway's IPv6 addresses"
    );
    assert!(
        drops() > before,
        "the rogue RA was not dropped by the firewall"
    );
}

#[test]
fn a_quarantined_ipv6_source_is_cut_off() {
    let s = site();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let srv = serve(
        &s.up,
        "[2001:db8:3::fe]:8081".parse().unwrap(),
        seen,
        stop.clone(),
    );
    let dst: SocketAddr = "[2001:db8:3::fe]:8081".parse().unwrap();
    settle(&s.cl, "fd00:db8:1::11", "[2001:db8:3::fe]:8081");
    s.gw.run(|| {
        Applier::new(s.state.path(), Backend::Nftables)
            .unwrap()
            .quarantine6("fd00:db8:1::11".parse().unwrap())
            .unwrap()
    });
    assert!(nft_table(&s.gw).contains("fd00:db8:1::11"));
    assert!(
        !reach(&s.cl, "fd00:db8:1::11", dst),
        "quarantined source still forwarded"
    );
    assert!(
        reach(&s.cl, "fd00:db8:1::10", dst),
        "its neighbour was cut off too"
    );
    // a reload (a changed config replaces the whole table) keeps the IPv6 quarantine
    let mut m = s.m.clone();
    m.groups[0]
        .members6
        .push(model::AddrRange6::parse("fd00:db8:1::99").unwrap());
    let plan = plan::build(&m, Some(Backend::Nftables));
    s.gw.run(|| {
        Applier::new(s.state.path(), Backend::Nftables)
            .unwrap()
            .apply(&plan)
            .unwrap()
    });
    let table = nft_table(&s.gw);
    assert!(
        table.contains("fd00:db8:1::99"),
        "the reload did not happen"
    );
    assert!(
        table.contains("fd00:db8:1::11"),
        "the reload released the quarantined IPv6 source:\n{table}"
    );
    assert!(!reach(&s.cl, "fd00:db8:1::11", dst));
    stop.store(true, Ordering::SeqCst);
    srv.join().unwrap();
}

#[test]
fn explain_command_takes_ipv6() {
    let bin = env!("CARGO_BIN_EXE_bulkhead");
    let cfg = common::root().join("tests/golden/dualstack.toml");
    let run = |args: &[&str]| {
        std::process::Command::new(bin)
            .arg("explain")
            .arg("-c")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&[
        "--from",
        "fd00:20::50",
        "--to",
        "fd00:10::10",
        "--proto",
        "tcp",
        "--port",
        "443",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.starts_with("ACCEPT by rule internal-to-dmz-web"),
        "{out}"
    );
    let o = run(&[
        "--from",
        "fd00:200::7",
        "--to",
        "fd00:30::53",
        "--proto",
        "udp",
        "--port",
        "53",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let o = run(&[
        "--from",
        "192.168.20.50",
        "--to",
        "fd00:10::10",
        "--proto",
        "tcp",
        "--port",
        "443",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--from and --to must both be IPv4 or both IPv6"),
        "{err}"
    );
    assert_ne!(o.status.code(), Some(0));
}

/// Echo loop on `addr` in `ns`: every connection gets back what it sends, until `stop`.
fn echo(ns: &Ns, addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let l = ns.run(|| TcpListener::bind(addr).unwrap());
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut conns: Vec<TcpStream> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            if let Ok((c, _)) = l.accept() {
                c.set_nonblocking(true).unwrap();
                conns.push(c);
            }
            for c in &mut conns {
                let mut b = [0u8; 64];
                if let Ok(n) = c.read(&mut b)
                    && n > 0
                {
                    let _ = c.write_all(&b[..n]);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// A connection from `src` in `ns` to `dst`, kept open.
fn open(ns: &Ns, src: &str, dst: SocketAddr) -> TcpStream {
    let src: IpAddr = src.parse().unwrap();
    ns.run(|| {
        let s = Socket::new(Domain::for_address(dst), Type::STREAM, None).unwrap();
        s.bind(&SockAddr::from(SocketAddr::new(src, 0))).unwrap();
        s.connect_timeout(&SockAddr::from(dst), Duration::from_secs(3))
            .unwrap();
        let t: TcpStream = s.into();
        t.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        t
    })
}

/// Whether `c` still carries data both ways: one byte out, the same byte back.
fn carries(c: &mut TcpStream, byte: u8) -> bool {
    let mut b = [0u8; 1];
    c.write_all(&[byte]).is_ok() && c.read_exact(&mut b).is_ok() && b[0] == byte
}

/// Quarantine cuts what a source already has, not only its new connections: the rulesets
/// accept established traffic before the quarantine drop, so an open connection of a scanner
/// kept working (and with flow offload it would not even pass the forward chain). Its tracked
/// connections are deleted; the next packet is new and meets the drop. Its neighbour's open
/// connection is untouched.
#[test]
fn quarantine_cuts_the_open_connections_of_the_source() {
    let s = site();
    let stop = Arc::new(AtomicBool::new(false));
    let mut servers = Vec::new();
    for a in ["198.18.3.254:8082", "[2001:db8:3::fe]:8082"] {
        servers.push(echo(&s.up, a.parse().unwrap(), stop.clone()));
    }
    settle_echo(&s.cl, "fd00:db8:1::11", "[2001:db8:3::fe]:8082");
    settle_echo(&s.cl, "198.18.1.11", "198.18.3.254:8082");
    let v4: SocketAddr = "198.18.3.254:8082".parse().unwrap();
    let v6: SocketAddr = "[2001:db8:3::fe]:8082".parse().unwrap();
    let mut bad4 = open(&s.cl, "198.18.1.11", v4);
    let mut bad6 = open(&s.cl, "fd00:db8:1::11", v6);
    let mut good4 = open(&s.cl, "198.18.1.10", v4);
    let mut good6 = open(&s.cl, "fd00:db8:1::10", v6);
    for c in [&mut bad4, &mut bad6, &mut good4, &mut good6] {
        assert!(
            carries(c, b'a'),
            "the open connection carries nothing before"
        );
    }
    s.gw.run(|| {
        let a = Applier::new(s.state.path(), Backend::Nftables).unwrap();
        a.set_add(ruleset::QUARANTINE, &["198.18.1.11/32".parse().unwrap()])
            .unwrap();
        a.quarantine6("fd00:db8:1::11".parse().unwrap()).unwrap();
    });
    assert!(
        !carries(&mut bad4, b'b'),
        "the quarantined IPv4 source's open connection still carries data"
    );
    assert!(
        !carries(&mut bad6, b'b'),
        "the quarantined IPv6 source's open connection still carries data"
    );
    assert!(
        carries(&mut good4, b'c'),
        "the neighbour's IPv4 connection was cut"
    );
    assert!(
        carries(&mut good6, b'c'),
        "the neighbour's IPv6 connection was cut"
    );
    stop.store(true, Ordering::SeqCst);
    for t in servers {
        t.join().unwrap();
    }
}

/// `settle` for the echo servers: one connection per path before the checks.
fn settle_echo(ns: &Ns, src: &str, dst: &str) {
    let d: SocketAddr = dst.parse().unwrap();
    let src_ip: IpAddr = src.parse().unwrap();
    let ok = (0..4).any(|_| {
        ns.run(|| {
            let s = Socket::new(Domain::for_address(d), Type::STREAM, None).unwrap();
            s.bind(&SockAddr::from(SocketAddr::new(src_ip, 0))).unwrap();
            s.connect_timeout(&SockAddr::from(d), Duration::from_millis(1500))
                .is_ok()
        })
    });
    assert!(ok, "{src} -> {dst} never got through");
}
