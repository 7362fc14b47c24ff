//! The RA sender on a real interface against real clients in network namespaces: the
//! kernel's own SLAAC (accept_ra=1) forms an address in the advertised prefix and a
//! default route via the gateway's link-local address; dhcpcd reports the RDNSS/DNSSL it
//! received; the final RA (router lifetime 0) takes the default route away again.
//!
//! Needs root, `ip` and dhcpcd. Namespaces are named with the test's pid and removed on
//! drop; only processes started here are killed, by pid. Addresses are from 2001:db8::/32.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bulkhead::ra::{Mode, Prefix, RaConfig};
use common::Netns;

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = bulkhead::sys::proc::kill(self.0.id());
            let _ = self.0.wait();
        }
    }
}

/// A gateway namespace and a client namespace joined by a veth pair (gateway side
/// `gwif`, client side `clif`), DAD off so addresses are usable at once.
fn link(tag: &str, gwif: &str, clif: &str) -> (Netns, Netns) {
    let gw = Netns::new(&format!("{tag}g"));
    let cl = Netns::new(&format!("{tag}c"));
    let st = Command::new("ip")
        .args([
            "link", "add", gwif, "netns", &gw.name, "type", "veth", "peer", "name", clif,
        ])
        .args(["netns", &cl.name])
        .status()
        .unwrap();
    assert!(st.success());
    for (ns, i) in [(&gw, gwif), (&cl, clif)] {
        ns.ok(&["sysctl", "-qw", &format!("net.ipv6.conf.{i}.accept_dad=0")]);
    }
    gw.ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    gw.ok(&[
        "ip",
        "addr",
        "add",
        "2001:db8:1::1/64",
        "dev",
        gwif,
        "nodad",
    ]);
    cl.ok(&[
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{clif}.accept_ra=1"),
    ]);
    cl.ok(&["sysctl", "-qw", &format!("net.ipv6.conf.{clif}.autoconf=1")]);
    gw.ok(&["ip", "link", "set", gwif, "up"]);
    cl.ok(&["ip", "link", "set", clif, "up"]);
    (gw, cl)
}

/// The link-local address of an interface.
fn link_local(ns: &Netns, iface: &str) -> String {
    let out = ns.ok(&[
        "ip", "-6", "-o", "addr", "show", "dev", iface, "scope", "link",
    ]);
    let w: Vec<&str> = out.split_whitespace().collect();
    let i = w
        .iter()
        .position(|x| *x == "inet6")
        .expect("link-local address");
    w[i + 1].split('/').next().unwrap().to_string()
}

/// Run the RA sender for `iface` in namespace `ns` until the returned sender is used (or
/// dropped); the thread then sends the final RA and ends.
fn ra_sender(
    ns: &Netns,
    iface: &str,
    cfg: RaConfig,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let iface = iface.to_string();
    let (ready_tx, ready_rx) = mpsc::channel();
    let t = common::in_netns(&ns.name, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let h = bulkhead::ra::spawn(&iface, cfg).expect("start RA sender");
            ready_tx.send(()).unwrap();
            let _ = tokio::task::spawn_blocking(move || rx.recv()).await;
            h.stop().await;
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("RA sender started");
    (tx, t)
}

fn slaac_config() -> RaConfig {
    let mut c = RaConfig::new(
        Mode::Slaac,
        vec![Prefix::new("2001:db8:1::/64".parse().unwrap())],
    );
    c.dns = vec!["2001:db8:1::1".parse().unwrap()];
    c.domains = vec!["lab.example".into()];
    c.mtu = Some(1400);
    c
}

#[test]
fn kernel_slaac_client_gets_address_and_default_route_then_loses_route_on_stop() {
    common::require_root_and(&["ip", "busybox"]);
    let (gw, cl) = link("ra", "rgw0", "rcl0");
    let gw_ll = link_local(&gw, "rgw0");
    let (stop, thread) = ra_sender(&gw, "rgw0", slaac_config());
    // The gateway itself refuses RAs on the port it advertises on.
    assert_eq!(
        gw.ok(&["sysctl", "-n", "net.ipv6.conf.rgw0.accept_ra"])
            .trim(),
        "0"
    );
    wait_for(
        "a SLAAC address in 2001:db8:1::/64",
        Duration::from_secs(20),
        || {
            cl.ok(&["ip", "-6", "addr", "show", "dev", "rcl0", "scope", "global"])
                .contains("inet6 2001:db8:1:0:")
        },
    );
    let addr = cl.ok(&["ip", "-6", "addr", "show", "dev", "rcl0", "scope", "global"]);
    assert!(
        addr.contains("dynamic"),
        "a SLAAC address has finite lifetimes: {addr}"
    );
    wait_for(
        "a default route via the gateway's link-local",
        Duration::from_secs(10),
        || {
            let r = cl.ok(&["ip", "-6", "route", "show", "default"]);
            r.contains(&format!("via {gw_ll} dev rcl0")) && r.contains("proto ra")
        },
    );
    // The advertised MTU is applied by the kernel.
    wait_for("the advertised MTU", Duration::from_secs(5), || {
        cl.ok(&["sysctl", "-n", "net.ipv6.conf.rcl0.mtu"]).trim() == "1400"
    });
    // The client reaches the gateway over the SLAAC address.
    cl.ok(&[
        "busybox",
        "ping",
        "-6",
        "-c",
        "1",
        "-W",
        "2",
        "2001:db8:1::1",
    ]);

    // Stop: the final RA with router lifetime 0 withdraws the default route at once.
    stop.send(()).unwrap();
    thread.join().unwrap();
    wait_for(
        "the default route withdrawn by the final RA",
        Duration::from_secs(5),
        || {
            !cl.ok(&["ip", "-6", "route", "show", "default"])
                .contains("via")
        },
    );
}

#[test]
fn dhcpcd_sees_rdnss_and_dnssl() {
    common::require_root_and(&["ip", "dhcpcd"]);
    let tmp = tempfile::tempdir().unwrap();
    let (gw, cl) = link("rd", "rdg0", "rdc0");
    let gw_ll = link_local(&gw, "rdg0");
    let (stop, thread) = ra_sender(&gw, "rdg0", slaac_config());
    let log = tmp.path().join("hook.log");
    let hook = tmp.path().join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\n{{ echo \"reason=$reason\"; env | grep '^nd1_'; }} >> {}\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let conf = tmp.path().join("dhcpcd.conf");
    std::fs::write(&conf, "ipv6only\nipv6rs\n").unwrap();
    let kid = Kid(cl
        .cmd(&["dhcpcd", "-6", "-B", "-f"])
        .arg(&conf)
        .arg("-c")
        .arg(&hook)
        .arg("rdc0")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("dhcpcd.out")).unwrap())
        .spawn()
        .expect("spawn dhcpcd"));
    wait_for(
        "dhcpcd reports the RA's RDNSS",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("rdnss1_servers=2001:db8:1::1")
        },
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("reason=ROUTERADVERT"), "{text}");
    assert!(text.contains(&format!("nd1_from={gw_ll}")), "{text}");
    assert!(text.contains("dnssl1_search=lab.example"), "{text}");
    assert!(text.contains("nd1_prefix_information1_length=64"), "{text}");
    drop(kid);
    stop.send(()).unwrap();
    thread.join().unwrap();
}

/// Send one router advertisement for `prefix` (router lifetime 1800) from the client
/// namespace to ff02::1 on `iface`, hop limit 255: what a rogue router on a segment sends.
fn send_rogue_ra(ns: &Netns, iface: &str, prefix: &str) {
    use bulkhead::ra::{PrefixInfo, RouterAdvert};
    let ra = RouterAdvert {
        cur_hop_limit: 64,
        router_lifetime: 1800,
        prefixes: vec![PrefixInfo {
            prefix: prefix.parse().unwrap(),
            on_link: true,
            autonomous: true,
            valid: 86400,
            preferred: 14400,
        }],
        ..RouterAdvert::default()
    }
    .encode();
    let iface = iface.to_string();
    common::in_netns(&ns.name, move || {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let ifindex = bulkhead::sys::icmp6::if_index(&iface).unwrap();
        let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).unwrap();
        s.set_multicast_hops_v6(255).unwrap();
        s.set_multicast_if_v6(ifindex).unwrap();
        let to = std::net::SocketAddrV6::new("ff02::1".parse().unwrap(), 0, 0, ifindex);
        for _ in 0..3 {
            s.send_to(&ra, &SockAddr::from(to)).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .join()
    .unwrap();
}

#[test]
fn a_rogue_ra_from_the_segment_changes_nothing_on_the_gateway() {
    common::require_root_and(&["ip"]);
    let (gw, cl) = link("rr", "rrg0", "rrc0");
    // A gateway that would take RAs (forwarding off, accept_ra on), as before the sender runs.
    gw.ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=0"]);
    gw.ok(&["sysctl", "-qw", "net.ipv6.conf.rrg0.accept_ra=1"]);
    gw.ok(&["sysctl", "-qw", "net.ipv6.conf.rrg0.autoconf=1"]);
    let cl_ll = link_local(&cl, "rrc0");
    // Control: such a gateway does take the rogue RA (the packet is one a host accepts).
    send_rogue_ra(&cl, "rrc0", "2001:db8:c0::/64");
    wait_for("the control RA taken", Duration::from_secs(10), || {
        gw.ok(&["ip", "-6", "addr", "show", "dev", "rrg0"])
            .contains("2001:db8:c0:0:")
    });
    gw.ok(&["ip", "-6", "route", "flush", "proto", "ra"]);
    // With the RA sender on the port, the next rogue RA changes nothing.
    let (stop, thread) = ra_sender(&gw, "rrg0", slaac_config());
    send_rogue_ra(&cl, "rrc0", "2001:db8:bad::/64");
    std::thread::sleep(Duration::from_secs(2));
    let addrs = gw.ok(&["ip", "-6", "addr", "show", "dev", "rrg0"]);
    assert!(!addrs.contains("2001:db8:bad:"), "{addrs}");
    let routes = gw.ok(&["ip", "-6", "route", "show"]);
    assert!(!routes.contains("2001:db8:bad:"), "{routes}");
    assert!(!routes.contains(&format!("via {cl_ll}")), "{routes}");
    stop.send(()).unwrap();
    thread.join().unwrap();
}
