//! What a segment may send to the gateway itself, on a live kernel: a rogue IPv6 router
//! advertisement from a client configures nothing (no global address, no default route) while
//! the uplink still learns from its router; neighbour solicitations are answered only with hop
//! limit 255; echo requests are answered; and a DHCP exchange (broadcast and unicast replies)
//! leaves no drop in the firewall's counters and no drop event in the daemon's stream.
//!
//! ICMPv6 is sent and received by raw sockets opened inside the client namespaces (the kernel
//! fills in the checksum), so every field under test — type, hop limit, options — is chosen
//! by the test.

mod apply_support;

use std::io::Read;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apply_support::*;
use bulkhead::apply::Applier;
use bulkhead::model::Backend;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// IPv6 addresses of a device in a scope (`link`, `global`), with their flags.
fn addrs6(ns: &Ns, dev: &str, scope: &str) -> Vec<(Ipv6Addr, bool)> {
    let out = ns.sh(&format!("ip -j -6 addr show dev {dev} scope {scope}"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut r = Vec::new();
    for l in v.as_array().unwrap() {
        for a in l["addr_info"].as_array().unwrap() {
            // `ip -j` lists the addresses the scope filter leaves out as empty objects
            let Some(local) = a["local"].as_str() else {
                continue;
            };
            let tentative = a["tentative"].as_bool().unwrap_or(false);
            r.push((local.parse().unwrap(), tentative));
        }
    }
    r
}

/// The device's link-local address once duplicate address detection is done.
fn link_local(ns: &Ns, dev: &str) -> Ipv6Addr {
    let mut got = None;
    wait_for(
        &format!("a link-local address on {dev}"),
        Duration::from_secs(10),
        || {
            got = addrs6(ns, dev, "link")
                .into_iter()
                .find(|(_, t)| !t)
                .map(|(a, _)| a);
            got.is_some()
        },
    );
    got.unwrap()
}

/// A raw ICMPv6 socket on `dev` (to be made on a thread inside the device's namespace).
fn icmp6(dev: &str, hops: u32) -> Socket {
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).unwrap();
    s.bind_device(Some(dev.as_bytes())).unwrap();
    s.set_multicast_hops_v6(hops).unwrap();
    s.set_unicast_hops_v6(hops).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s
}

fn send(s: &Socket, to: Ipv6Addr, ifindex: u32, msg: &[u8]) {
    let a = SockAddr::from(SocketAddrV6::new(to, 0, 0, ifindex));
    let n = s.send_to(msg, &a).unwrap();
    assert_eq!(n, msg.len());
}

/// Read ICMPv6 messages for up to `wait`; the first one `want` accepts.
fn recv_until(s: &Socket, wait: Duration, want: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let t0 = Instant::now();
    let mut b = [0u8; 1500];
    let mut r: &Socket = s;
    while t0.elapsed() < wait {
        if let Ok(n) = r.read(&mut b)
            && want(&b[..n])
        {
            return Some(b[..n].to_vec());
        }
    }
    None
}

/// A router advertisement (RFC 4861 4.2): default router for 1800 s, one prefix for SLAAC.
fn router_advert(lladdr: [u8; 6], prefix: Ipv6Addr) -> Vec<u8> {
    let mut m = vec![134, 0, 0, 0, 64, 0];
    m.extend_from_slice(&1800u16.to_be_bytes()); // router lifetime
    m.extend_from_slice(&[0; 8]); // reachable time, retrans timer
    m.extend_from_slice(&[1, 1]); // source link-layer address
    m.extend_from_slice(&lladdr);
    m.extend_from_slice(&[3, 4, 64, 0xc0]); // prefix information: /64, on-link + autonomous
    m.extend_from_slice(&86400u32.to_be_bytes());
    m.extend_from_slice(&14400u32.to_be_bytes());
    m.extend_from_slice(&[0; 4]);
    m.extend_from_slice(&prefix.octets());
    m
}

/// A neighbour solicitation for `target` (RFC 4861 4.3) with the sender's link-layer address.
fn neighbor_solicit(target: Ipv6Addr, lladdr: [u8; 6]) -> Vec<u8> {
    let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(&[1, 1]);
    m.extend_from_slice(&lladdr);
    m
}

fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

fn is_advert_for(m: &[u8], target: Ipv6Addr) -> bool {
    m.len() >= 24 && m[0] == 136 && m[8..24] == target.octets()
}

fn counter(gw: &Ns, state: &Path, backend: Backend, chain: &str, comment: &str) -> u64 {
    gw.run(|| {
        Applier::new(state, backend)
            .unwrap()
            .counters()
            .unwrap()
            .into_iter()
            .filter(|c| c.chain == chain && c.comment == comment)
            .map(|c| c.packets)
            .sum()
    })
}

fn default_routes6(ns: &Ns) -> String {
    ns.sh("ip -6 route show default")
}

/// Gateway with the apply test config's ports: bhlan's peer is `c0` in a client namespace,
/// bhup's is `u0` in an upstream router's namespace; both peers without DAD, up.
fn site(backend: Backend) -> (Ns, Ns, Ns, TempDir) {
    let gw = Ns::new("gw");
    let cl = Ns::new("cl");
    let up = Ns::new("up");
    gw.sh(&format!(
        "ip link add bhlan type veth peer name c0 netns {}",
        cl.name
    ));
    gw.sh(&format!(
        "ip link add bhup type veth peer name u0 netns {}",
        up.name
    ));
    gw.sh("ip link add bhsrv type veth peer name bhsrv-p");
    gw.sh("ip link add bhmgmt type veth peer name bhmgmt-p");
    for (ns, dev) in [(&cl, "c0"), (&up, "u0")] {
        ns.sh(&format!(
            "echo 0 > /proc/sys/net/ipv6/conf/{dev}/accept_dad && ip link set {dev} up"
        ));
    }
    let state = TempDir::new("state");
    let plan = plan("apply.toml", backend);
    gw.run(|| {
        Applier::new(state.path(), backend)
            .unwrap()
            .apply(&plan)
            .unwrap()
    });
    (gw, cl, up, state)
}

#[test]
fn rogue_router_advertisement_from_a_segment_configures_nothing() {
    init();
    let (gw, cl, up, state) = site(Backend::Nftables);
    let nft = Backend::Nftables;
    let gw_ll = link_local(&gw, "bhlan");
    link_local(&gw, "bhup");
    for dev in ["bhlan", "bhsrv", "bhmgmt"] {
        assert_eq!(
            proc_sys(&gw, &format!("net.ipv6.conf.{dev}.accept_ra")),
            "0",
            "{dev}"
        );
        assert_eq!(
            proc_sys(&gw, &format!("net.ipv6.conf.{dev}.autoconf")),
            "0",
            "{dev}"
        );
    }
    assert_eq!(proc_sys(&gw, "net.ipv6.conf.default.accept_ra"), "0");
    let drops = || counter(&gw, state.path(), nft, "input", "builtin:default-drop");
    let before = drops();

    // The rogue: a client on the segment advertises itself as the default router.
    let (c_mac, c_idx) = (mac(&cl, "c0"), ifindex(&cl, "c0"));
    link_local(&cl, "c0");
    cl.run(|| {
        let s = icmp6("c0", 255);
        send(
            &s,
            ALL_NODES,
            c_idx,
            &router_advert(c_mac, "2001:db8:1::".parse().unwrap()),
        );
    });
    // The control: the uplink's router does the same and is listened to (the uplink keeps
    // the kernel's accept_ra), which also proves the advertisement is well formed.
    let (u_mac, u_idx) = (mac(&up, "u0"), ifindex(&up, "u0"));
    link_local(&up, "u0");
    up.run(|| {
        let s = icmp6("u0", 255);
        send(
            &s,
            ALL_NODES,
            u_idx,
            &router_advert(u_mac, "2001:db8:2::".parse().unwrap()),
        );
    });
    wait_for(
        "the uplink's router advertisement to configure bhup",
        Duration::from_secs(5),
        || !addrs6(&gw, "bhup", "global").is_empty() && default_routes6(&gw).contains("dev bhup"),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        addrs6(&gw, "bhlan", "global"),
        vec![],
        "the rogue advertisement gave the segment port an address"
    );
    let routes = default_routes6(&gw);
    assert!(
        !routes.contains("dev bhlan"),
        "default route through the attacker:\n{routes}"
    );
    assert!(
        drops() > before,
        "the rogue advertisement was not dropped by the firewall"
    );

    // Neighbour discovery: hop limit 64 is dropped by the firewall, 255 is answered.
    let before = drops();
    let answered = |hops: u32| {
        cl.run(|| {
            let s = icmp6("c0", hops);
            send(
                &s,
                solicited_node(gw_ll),
                c_idx,
                &neighbor_solicit(gw_ll, c_mac),
            );
            recv_until(&s, Duration::from_secs(2), |m| is_advert_for(m, gw_ll)).is_some()
        })
    };
    assert!(
        !answered(64),
        "a solicitation with hop limit 64 was answered"
    );
    assert!(
        drops() > before,
        "the solicitation with hop limit 64 did not reach the firewall's drop"
    );
    assert!(
        answered(255),
        "no advertisement for a solicitation with hop limit 255"
    );

    // Echo requests are still answered.
    let echoed = cl.run(|| {
        let s = icmp6("c0", 64);
        send(
            &s,
            gw_ll,
            c_idx,
            &[128, 0, 0, 0, 0x12, 0x34, 0, 1, b'b', b'h'],
        );
        recv_until(&s, Duration::from_secs(2), |m| {
            m.len() >= 8 && m[0] == 129 && m[4..6] == [0x12, 0x34]
        })
        .is_some()
    });
    assert!(echoed, "echo request to the gateway not answered");
}

/// The iptables backend filters IPv4 only and switches IPv6 off: a rogue advertisement finds
/// nothing to configure either.
#[test]
fn rogue_router_advertisement_with_the_iptables_backend_configures_nothing() {
    init();
    let (gw, cl, _up, _state) = site(Backend::Iptables);
    assert_eq!(proc_sys(&gw, "net.ipv6.conf.bhlan.accept_ra"), "0");
    let (c_mac, c_idx) = (mac(&cl, "c0"), ifindex(&cl, "c0"));
    link_local(&cl, "c0");
    cl.run(|| {
        let s = icmp6("c0", 255);
        for _ in 0..3 {
            send(
                &s,
                ALL_NODES,
                c_idx,
                &router_advert(c_mac, "2001:db8:1::".parse().unwrap()),
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(addrs6(&gw, "bhlan", "global"), vec![]);
    assert!(!default_routes6(&gw).contains("dev bhlan"));
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling a child this test started and has not reaped.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let t0 = Instant::now();
        while self.0.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const UDHCPC_SCRIPT: &str = "#!/bin/sh\ncase \"$1\" in\n  deconfig) ip -4 addr flush dev \"$interface\" ;;\n  bound|renew) ip -4 addr flush dev \"$interface\"; ip -4 addr add \"$ip/${mask:-24}\" dev \"$interface\"; echo \"lease $ip\" ;;\nesac\nexit 0\n";

#[test]
fn dhcp_exchange_leaves_no_drop() {
    init();
    apply_support::common::require_root_and(&["busybox"]);
    let gw = Ns::new("gw");
    let cl = Ns::new("cl");
    gw.sh("ip link add bhup type veth peer name bhup-p");
    gw.sh(&format!(
        "ip link add bhlan type veth peer name c0 netns {}",
        cl.name
    ));
    cl.sh("ip link set c0 up");
    let dir = TempDir::new("dhcp");
    let state = dir.path().join("state");
    let cfg = dir.path().join("bulkhead.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[system]
hostname = "bh-dhcp"
state_dir = "{}"
gateway_egress = "dns"

[uplink]
interface = "bhup"
address = "198.18.3.1/24"

[segments.lan]
interface = "bhlan"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"
management = true
[segments.lan.dhcp]
ranges = ["198.18.1.100-198.18.1.200"]

[egress.dns]
allow = [{{ proto = "udp", ports = [53] }}]
"#,
            state.display()
        ),
    )
    .unwrap();
    let script = dir.path().join("udhcpc.sh");
    std::fs::write(&script, UDHCPC_SCRIPT).unwrap();
    sh(&format!("chmod +x {}", script.display()));
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let _daemon = Daemon(
        Command::new("ip")
            .args(["netns", "exec", &gw.name, env!("CARGO_BIN_EXE_bulkhead")])
            .arg("-c")
            .arg(&cfg)
            .arg("run")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_for("the daemon is ready", Duration::from_secs(30), || {
        state.join("ready").exists()
    });
    // -B asks for broadcast replies (as clients that cannot take unicast before they are
    // configured do); without it the server sends unicast frames.
    for flags in [&["-B"][..], &[][..]] {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &cl.name, "busybox", "udhcpc", "-n", "-q", "-f",
            ])
            .args(flags)
            .args(["-t", "5", "-T", "1", "-i", "c0", "-s"])
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("lease 198.18.1."),
            "udhcpc {flags:?}: no lease:\n{text}\ndaemon log:\n{}",
            std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let table = nft_table(&gw);
    for line in table.lines().filter(|l| l.contains("counter packets")) {
        if line.contains("drop comment \"builtin:default-drop\"") {
            assert!(
                line.contains("counter packets 0 "),
                "the DHCP exchange hit a logging drop:\n{table}"
            );
        }
    }
    let logs = Command::new("ip")
        .args(["netns", "exec", &gw.name, env!("CARGO_BIN_EXE_bulkhead")])
        .arg("-c")
        .arg(&cfg)
        .arg("logs")
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&logs.stdout);
    let drops: Vec<&str> = logs.lines().filter(|l| l.contains(" drop ")).collect();
    assert!(drops.is_empty(), "drop events:\n{}", drops.join("\n"));
}
