//! Real DHCPv6 clients (dhcpcd -6 and ISC dhclient -6, stateful and stateless) against the
//! RA sender and DHCPv6 server (examples/v6_serve) in network namespaces; a lease that
//! survives kill -9 of the server; a hostile client sending garbage.
//!
//! Needs root, `ip`, dhcpcd and dhclient. Namespaces are named with the test's pid and
//! removed on drop; only processes started here are killed, by pid. Addresses are from
//! 2001:db8::/32.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead::dhcp6::{Dhcp6Mode, Lease6, SegmentV6, read_leases6};
use common::Netns;

static SERIAL: Mutex<()> = Mutex::new(());

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

/// A process started here, killed by pid on drop.
struct Kid(Child);

impl Kid {
    fn kill9(&mut self) {
        let _ = bulkhead::sys::proc::kill(self.0.id());
        let _ = self.0.wait();
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.kill9();
        }
    }
}

fn server_exe() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    BUILT.call_once(|| {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "--quiet", "--example", "v6_serve"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().unwrap().success(),
            "building examples/v6_serve failed"
        );
    });
    profile_dir.join("examples").join("v6_serve")
}

/// The server (examples/v6_serve) in a namespace; its stderr goes to `log`.
struct ServerProc(Kid);

impl ServerProc {
    fn start(ns: &Netns, segs: &Path, state: &Path, log: &Path) -> ServerProc {
        let mut cmd = ns.cmd(&[]);
        cmd.arg(server_exe())
            .arg(segs)
            .arg(state)
            .env("BULKHEAD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .unwrap(),
            );
        let mut kid = Kid(cmd.spawn().expect("spawn v6_serve"));
        let out = kid.0.stdout.take().unwrap();
        let ready = Arc::new(Mutex::new(false));
        let r2 = ready.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line == "ready" {
                    *r2.lock().unwrap() = true;
                }
            }
        });
        wait_for("v6_serve ready", Duration::from_secs(60), || {
            *ready.lock().unwrap()
        });
        ServerProc(kid)
    }
}

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// The lines of a hook log as `key=value` maps, one per hook run.
fn runs(log: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.split("--\n")
        .map(|run| {
            run.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
                .collect()
        })
        .filter(|m: &std::collections::BTreeMap<String, String>| !m.is_empty())
        .collect()
}

/// Hook script: every run appends its environment, then `--`.
fn hook(dir: &Path, name: &str, log: &Path) -> PathBuf {
    let p = dir.join(name);
    write_script(
        &p,
        &format!(
            "#!/bin/sh\n{{ env; echo --; }} >> {}\nexit 0\n",
            log.display()
        ),
    );
    p
}

struct Topo {
    // Clients before the server namespace: their veths go with them.
    clients: Vec<(Netns, String)>,
    srv: Netns,
}

/// Server namespace with bridges `b6f` (stateful, 2001:db8:5::/64) and `b6s` (stateless,
/// 2001:db8:6::/64); each client namespace gets one interface `TAGiN` on the named bridge
/// (names unique across namespaces: dhcpcd keeps its control socket per interface name in
/// the shared /run).
fn topo(tag: &str, clients: &[&str]) -> Topo {
    let srv = Netns::new(&format!("{tag}s"));
    srv.ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    srv.ok(&["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"]);
    for (br, addr) in [("b6f", "2001:db8:5::1/64"), ("b6s", "2001:db8:6::1/64")] {
        srv.ok(&[
            "ip",
            "link",
            "add",
            br,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        srv.ok(&["ip", "addr", "add", addr, "dev", br, "nodad"]);
        srv.ok(&["ip", "link", "set", br, "up"]);
    }
    let mut v = Vec::new();
    for (i, br) in clients.iter().enumerate() {
        let ns = Netns::new(&format!("{tag}c{i}"));
        ns.ok(&["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"]);
        let peer = format!("{tag}p{i}");
        let iface = format!("{tag}i{i}");
        let st = Command::new("ip")
            .args([
                "link", "add", &peer, "netns", &srv.name, "type", "veth", "peer", "name", &iface,
            ])
            .args(["netns", &ns.name])
            .status()
            .unwrap();
        assert!(st.success());
        srv.ok(&["ip", "link", "set", &peer, "master", br]);
        srv.ok(&["ip", "link", "set", &peer, "up"]);
        ns.ok(&["ip", "link", "set", &iface, "up"]);
        v.push((ns, iface));
    }
    Topo { clients: v, srv }
}

fn segments(dir: &Path) -> PathBuf {
    let mut f = SegmentV6::new(
        "lan",
        "b6f",
        Dhcp6Mode::Stateful,
        "2001:db8:5::/64".parse().unwrap(),
    );
    f.dns = vec!["2001:db8:5::1".parse().unwrap()];
    f.domains = vec!["lan.example".into()];
    let mut s = SegmentV6::new(
        "guest",
        "b6s",
        Dhcp6Mode::Stateless,
        "2001:db8:6::/64".parse().unwrap(),
    );
    s.dns = vec!["2001:db8:6::53".parse().unwrap()];
    s.domains = vec!["guest.example".into()];
    let p = dir.join("segments.json");
    std::fs::write(&p, serde_json::to_vec(&vec![f, s]).unwrap()).unwrap();
    p
}

fn in_lan_pool(a: &str) -> bool {
    let a: Ipv6Addr = a.parse().unwrap();
    let seg = SegmentV6::new(
        "lan",
        "b6f",
        Dhcp6Mode::Stateful,
        "2001:db8:5::/64".parse().unwrap(),
    );
    seg.in_pool(a)
}

fn dhcpcd(client: &(Netns, String), dir: &Path, tag: &str, log: &Path) -> Kid {
    let (ns, iface) = client;
    let conf = dir.join(format!("{tag}.conf"));
    std::fs::write(
        &conf,
        "ipv6only\nipv6rs\noption dhcp6_name_servers, dhcp6_domain_search\n",
    )
    .unwrap();
    let h = hook(dir, &format!("{tag}-hook.sh"), log);
    Kid(ns
        .cmd(&["dhcpcd", "-6", "-B", "-d", "-f"])
        .arg(&conf)
        .arg("-c")
        .arg(&h)
        .arg(iface)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{tag}.out"))).unwrap())
        .spawn()
        .expect("spawn dhcpcd"))
}

fn dhclient(client: &(Netns, String), dir: &Path, tag: &str, log: &Path, stateless: bool) -> Kid {
    let (ns, iface) = client;
    let h = hook(dir, &format!("{tag}-hook.sh"), log);
    let mut cmd = ns.cmd(&["dhclient", "-6", "-d", "-v"]);
    if stateless {
        cmd.arg("-S");
    }
    cmd.arg("-sf")
        .arg(&h)
        .arg("-lf")
        .arg(dir.join(format!("{tag}.leases")))
        .arg("-pf")
        .arg(dir.join(format!("{tag}.pid")))
        .arg(iface)
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{tag}.out")))
                .unwrap(),
        );
    Kid(cmd.spawn().expect("spawn dhclient"))
}

fn find_run(log: &Path, reasons: &[&str]) -> Option<std::collections::BTreeMap<String, String>> {
    runs(log).into_iter().rev().find(|r| {
        r.get("reason")
            .is_some_and(|x| reasons.contains(&x.as_str()))
    })
}

fn dump(dir: &Path) -> String {
    let mut s = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "out" || x == "log") {
            s += &format!(
                "== {}\n{}\n",
                p.display(),
                std::fs::read_to_string(&p).unwrap_or_default()
            );
        }
    }
    s
}

#[test]
fn real_clients_stateful_and_stateless_and_a_garbage_sender() {
    common::require_root_and(&["ip", "dhcpcd", "dhclient"]);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = topo("d6", &["b6f", "b6f", "b6s", "b6s", "b6f"]);
    let state = dir.join("state");
    let srv_log = dir.join("server.log");
    let _server = ServerProc::start(&t.srv, &segments(dir), &state, &srv_log);

    // A hostile client first: garbage to ff02::1:2 port 547. The server logs it and goes on.
    let (ns, iface) = (t.clients[4].0.name.clone(), t.clients[4].1.clone());
    common::in_netns(&ns, move || {
        let s = std::net::UdpSocket::bind("[::]:0").unwrap();
        let ifindex = bulkhead::sys::icmp6::if_index(&iface).unwrap();
        let to = SocketAddrV6::new("ff02::1:2".parse().unwrap(), 547, 0, ifindex);
        // A Solicit whose option runs past the end, then one with a newline in it.
        s.send_to(&[1, 0, 0, 1, 0, 1, 0xff, 0xff, 1, 2, 3], to)
            .unwrap();
        s.send_to(
            &[
                1, 0, 0, 2, 0, 1, 0, 4, b'\n', b'x', 0x1b, b'[', 0, 0x27, 0, 1,
            ],
            to,
        )
        .unwrap();
        s.send_to(&[0xff; 3], to).unwrap();
    })
    .join()
    .unwrap();
    wait_for(
        "the server's log line about the garbage",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&srv_log)
                .unwrap_or_default()
                .contains("option 1 at offset 4 runs past the end")
        },
    );

    let logs: Vec<PathBuf> = (0..4).map(|i| dir.join(format!("client{i}.log"))).collect();
    let _k0 = dhcpcd(&t.clients[0], dir, "dhcpcd-f", &logs[0]);
    let _k1 = dhclient(&t.clients[1], dir, "dhclient-f", &logs[1], false);
    let _k2 = dhcpcd(&t.clients[2], dir, "dhcpcd-s", &logs[2]);
    let _k3 = dhclient(&t.clients[3], dir, "dhclient-s", &logs[3], true);

    let deadline = Duration::from_secs(60);
    let mut failed = None;
    let check = |what: &str, cond: &mut dyn FnMut() -> bool| {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("timed out: {what}");
        false
    };
    // dhcpcd, stateful (RA with M=1): an IA_NA address from the pool and the DNS options.
    let ok0 = check("dhcpcd -6 stateful BOUND6", &mut || {
        find_run(&logs[0], &["BOUND6", "REBOOT6", "RENEW6"]).is_some()
    });
    let ok1 = check("dhclient -6 BOUND6", &mut || {
        find_run(&logs[1], &["BOUND6"]).is_some()
    });
    let ok2 = check("dhcpcd -6 stateless INFORM6", &mut || {
        find_run(&logs[2], &["INFORM6"]).is_some()
    });
    // ISC dhclient -S runs its script with RENEW6 for the stateless Reply.
    let ok3 = check("dhclient -6 -S information", &mut || {
        find_run(&logs[3], &["INFORM6", "RENEW6"])
            .is_some_and(|r| r.contains_key("new_dhcp6_name_servers"))
    });
    if !(ok0 && ok1 && ok2 && ok3) {
        failed = Some(dump(dir));
    }
    assert!(failed.is_none(), "{}", failed.unwrap());

    let r0 = find_run(&logs[0], &["BOUND6", "REBOOT6", "RENEW6"]).unwrap();
    let a0 = r0
        .get("new_dhcp6_ia_na1_ia_addr1")
        .cloned()
        .unwrap_or_default();
    assert!(in_lan_pool(&a0), "dhcpcd address {a0:?}: {r0:?}");
    assert_eq!(
        r0.get("new_dhcp6_name_servers").map(String::as_str),
        Some("2001:db8:5::1"),
        "{r0:?}"
    );
    assert_eq!(
        r0.get("new_dhcp6_domain_search").map(String::as_str),
        Some("lan.example"),
        "{r0:?}"
    );
    // dhcpcd put the address on the interface.
    wait_for("dhcpcd's address on c0", Duration::from_secs(10), || {
        t.clients[0]
            .0
            .ok(&["ip", "-6", "addr", "show", "dev", &t.clients[0].1])
            .contains(&a0)
    });

    let r1 = find_run(&logs[1], &["BOUND6"]).unwrap();
    let a1 = r1.get("new_ip6_address").cloned().unwrap_or_default();
    assert!(in_lan_pool(&a1), "dhclient address {a1:?}: {r1:?}");
    assert_ne!(a0, a1);
    assert_eq!(
        r1.get("new_dhcp6_name_servers").map(String::as_str),
        Some("2001:db8:5::1"),
        "{r1:?}"
    );

    let r2 = find_run(&logs[2], &["INFORM6"]).unwrap();
    assert_eq!(
        r2.get("new_dhcp6_name_servers").map(String::as_str),
        Some("2001:db8:6::53"),
        "{r2:?}"
    );
    assert_eq!(
        r2.get("new_dhcp6_domain_search").map(String::as_str),
        Some("guest.example"),
        "{r2:?}"
    );
    // The stateless client configured its address by SLAAC from the RA (A=1).
    wait_for(
        "dhcpcd's SLAAC address in 2001:db8:6::/64",
        Duration::from_secs(10),
        || {
            t.clients[2]
                .0
                .ok(&["ip", "-6", "addr", "show", "dev", &t.clients[2].1])
                .contains("2001:db8:6:0:")
        },
    );
    let r3 = find_run(&logs[3], &["INFORM6", "RENEW6"]).unwrap();
    assert!(
        !r3.contains_key("new_ip6_address"),
        "stateless: no address: {r3:?}"
    );
    assert_eq!(
        r3.get("new_dhcp6_name_servers").map(String::as_str),
        Some("2001:db8:6::53"),
        "{r3:?}"
    );
    assert_eq!(
        r3.get("new_dhcp6_domain_search").map(String::as_str),
        Some("guest.example."),
        "{r3:?}"
    );

    // The journal holds both stateful leases, bound, on segment lan.
    let leases: Vec<Lease6> = read_leases6(&state, 0).unwrap();
    for a in [&a0, &a1] {
        let l = leases
            .iter()
            .find(|l| &l.addr.to_string() == a)
            .unwrap_or_else(|| panic!("{a} in {leases:?}"));
        assert_eq!(l.segment, "lan");
        assert!(l.duid.is_some());
    }
    assert_eq!(leases.len(), 2, "{leases:?}");
    let log = std::fs::read_to_string(&srv_log).unwrap();
    assert!(log.contains("malformed"), "{log}");
    assert!(!log.contains("x\n["), "client text reached the log raw");
}

/// One Solicit (own DUID, IA_NA hinting `hint`) from the client namespace; the address of
/// the Advertise.
fn raw_solicit(client: &(Netns, String), hint: Ipv6Addr) -> Option<Ipv6Addr> {
    use dhcproto::v6::{DhcpOption, DhcpOptions, IAAddr, IANA, Message, MessageType, OptionCode};
    use dhcproto::{Decodable, Decoder, Encodable};
    let (ns, iface) = (client.0.name.clone(), client.1.clone());
    common::in_netns(&ns, move || {
        let ifindex = bulkhead::sys::icmp6::if_index(&iface).unwrap();
        let s =
            std::net::UdpSocket::bind(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 546, 0, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut m = Message::new_with_id(MessageType::Solicit, [7, 7, 7]);
        m.opts_mut().insert(DhcpOption::ClientId(vec![
            0, 4, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
        ]));
        let mut ia = DhcpOptions::new();
        ia.insert(DhcpOption::IAAddr(IAAddr {
            addr: hint,
            preferred_life: 0,
            valid_life: 0,
            opts: DhcpOptions::new(),
        }));
        m.opts_mut().insert(DhcpOption::IANA(IANA {
            id: 1,
            t1: 0,
            t2: 0,
            opts: ia,
        }));
        let to = SocketAddrV6::new("ff02::1:2".parse().unwrap(), 547, 0, ifindex);
        let mut buf = [0u8; 1500];
        for _ in 0..5 {
            s.send_to(&m.to_vec().unwrap(), to).unwrap();
            let Ok(n) = s.recv(&mut buf) else { continue };
            let r = Message::decode(&mut Decoder::new(&buf[..n])).ok()?;
            if let Some(DhcpOption::IANA(ia)) = r.opts().get(OptionCode::IANA)
                && let Some(DhcpOption::IAAddr(a)) = ia.opts.get(OptionCode::IAAddr)
            {
                return Some(a.addr);
            }
        }
        None
    })
    .join()
    .unwrap()
}

#[test]
fn lease_survives_kill_9_of_the_server() {
    common::require_root_and(&["ip", "dhclient"]);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = topo("k6", &["b6f", "b6f"]);
    let state = dir.join("state");
    let srv_log = dir.join("server.log");
    let segs = segments(dir);
    let mut server = ServerProc::start(&t.srv, &segs, &state, &srv_log);
    let log = dir.join("client.log");
    let mut k = dhclient(&t.clients[0], dir, "dhclient", &log, false);
    wait_for("dhclient -6 BOUND6", Duration::from_secs(60), || {
        find_run(&log, &["BOUND6"]).is_some()
    });
    let first = find_run(&log, &["BOUND6"]).unwrap()["new_ip6_address"].clone();
    assert!(in_lan_pool(&first));
    // kill -9 both; the client keeps its lease file (and so its DUID), the server its
    // journal.
    k.kill9();
    server.0.kill9();
    let duid_before = std::fs::read_to_string(state.join("dhcp6.duid")).unwrap();
    std::fs::remove_file(&log).unwrap();
    let _server = ServerProc::start(&t.srv, &segs, &state, &srv_log);
    assert_eq!(
        std::fs::read_to_string(state.join("dhcp6.duid")).unwrap(),
        duid_before
    );
    // Another client (its own DUID) asks for exactly that address first: the restarted
    // server knows the binding from its journal and offers something else.
    let other = raw_solicit(&t.clients[1], first.parse().unwrap()).expect("an Advertise");
    assert_ne!(
        other.to_string(),
        first,
        "the binding was lost with the server"
    );
    assert!(in_lan_pool(&other.to_string()));
    let _k = dhclient(&t.clients[0], dir, "dhclient", &log, false);
    wait_for("dhclient -6 bound again", Duration::from_secs(60), || {
        find_run(&log, &["BOUND6", "REBOOT6", "RENEW6"]).is_some()
    });
    let r = find_run(&log, &["BOUND6", "REBOOT6", "RENEW6"]).unwrap();
    assert_eq!(r["new_ip6_address"], first, "{r:?}\n{}", dump(dir));
    let leases = read_leases6(&state, 0).unwrap();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0].addr.to_string(), first);
}
