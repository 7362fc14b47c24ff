//! Real DHCP clients (ISC dhclient, dhcpcd, busybox udhcpc) against the
//! server in network namespaces, and a kill -9 durability test.
//!
//! Needs root, `ip`, and the three clients. Without root (or without the
//! tools) each test fails, naming what is missing. Every namespace is named with
//! the test's pid, and removed in `Drop`; only processes started here are
//! killed, by pid. Addresses come from 198.18.0.0/15.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead::dhcp::leases::read_leases;
use bulkhead::dhcp::{LeaseState, PoolConfig};
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

/// The namespace tests use CPU-sensitive timings; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        run(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }
    fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.0];
        v.extend_from_slice(args);
        run(&v)
    }
    fn mac(&self, iface: &str) -> String {
        let out = self.ip(&["-o", "link", "show", iface]);
        let i = out.find("link/ether ").expect("ether address") + 11;
        out[i..i + 17].to_string()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process started by the test, killed (by pid) on drop.
struct Kid {
    child: Child,
    what: String,
}

impl Kid {
    fn spawn(what: &str, cmd: &mut Command) -> Kid {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        Kid {
            child,
            what: what.to_string(),
        }
    }
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    fn signal(&self, sig: i32) {
        // SAFETY: kill on a pid we spawned and have not reaped yet.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }
    /// SIGTERM, then up to 5 s for a clean exit; Drop kills it otherwise.
    fn terminate(mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn stop(mut self, sig: i32) {
        self.signal(sig);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} did not exit after signal {sig}", self.what);
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Path of the `dhcp_serve` example, (re)built for the profile of this
/// test binary: `cargo test --test dhcp_clients` alone does not rebuild
/// examples, and a stale server would be tested otherwise.
fn server_exe() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    BUILT.call_once(|| {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "--quiet", "--example", "dhcp_serve"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let st = cmd.status().unwrap();
        assert!(st.success(), "building the dhcp_serve example failed");
    });
    profile_dir.join("examples").join("dhcp_serve")
}

/// The server process (examples/dhcp_serve) in a namespace.
struct ServerProc {
    kid: Kid,
    lines: Arc<Mutex<Vec<String>>>,
}

impl ServerProc {
    fn start(ns: &Netns, pools: &Path, state: &Path, log: &Path) -> ServerProc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.0])
            .arg(server_exe())
            .arg(pools)
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
        let mut kid = Kid::spawn("dhcp_serve", &mut cmd);
        let out = kid.child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                l2.lock().unwrap().push(line);
            }
        });
        let s = ServerProc { kid, lines };
        wait_for("server ready", Duration::from_secs(20), || {
            s.lines.lock().unwrap().iter().any(|l| l == "ready")
        });
        s
    }

    /// Lease events printed so far: (kind, segment, addr, mac).
    fn events(&self) -> Vec<(String, String, String, String)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                let s = |x: &serde_json::Value| x.as_str().unwrap_or_default().to_string();
                (
                    s(&v["kind"]),
                    s(&v["lease"]["segment"]),
                    s(&v["lease"]["addr"]),
                    s(&v["lease"]["mac"]),
                )
            })
            .collect()
    }
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn pool(seg: &str, iface: &str, third: u8, mtu: u16) -> PoolConfig {
    let mut p = PoolConfig::new(
        seg,
        iface,
        Ipv4Addr::new(198, 18, third, 1),
        format!("198.18.{third}.0/24").parse().unwrap(),
        vec![(
            Ipv4Addr::new(198, 18, third, 100),
            Ipv4Addr::new(198, 18, third, 150),
        )],
    );
    p.lease_time = 30;
    p.max_lease_time = 60;
    p.dns = vec![Ipv4Addr::new(198, 18, third, 53)];
    p.domain = Some(format!("{seg}.test"));
    p.mtu = Some(mtu);
    p
}

/// Parse `key=value` words of a client script log line.
fn fields(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn read_log(p: &Path) -> Vec<HashMap<String, String>> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(fields)
        .collect()
}

const TOOLS: [&str; 3] = ["dhclient", "dhcpcd", "udhcpc"];

struct ClientNs {
    tool: &'static str,
    // Fields drop in order: the clients are killed before their namespace
    // is deleted.
    kids: Vec<Kid>,
    ns: Netns,
    log: PathBuf,
}

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    run(&["chmod", "+x", path.to_str().unwrap()]);
}

#[test]
fn real_clients_on_two_segments() {
    common::require_root_and(&["ip", "dhclient", "dhcpcd", "busybox"]);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pid = std::process::id();
    let srv = Netns::new(format!("bhd-srv-{pid}"));
    for (br, addr) in [("br-a", "198.18.10.1/24"), ("br-b", "198.18.20.1/24")] {
        srv.ip(&["link", "add", br, "type", "bridge"]);
        srv.ip(&["addr", "add", addr, "dev", br]);
        srv.ip(&["link", "set", br, "up"]);
    }
    let mut clients = Vec::new();
    for tool in TOOLS {
        let ns = Netns::new(format!("bhd-{tool}-{pid}"));
        for seg in ["a", "b"] {
            let peer = format!("{}{seg}", &tool[..4]);
            run(&[
                "ip",
                "link",
                "add",
                &peer,
                "netns",
                &srv.0,
                "type",
                "veth",
                "peer",
                "name",
                &format!("{seg}0"),
                "netns",
                &ns.0,
            ]);
            srv.ip(&["link", "set", &peer, "master", &format!("br-{seg}")]);
            srv.ip(&["link", "set", &peer, "up"]);
            ns.ip(&["link", "set", &format!("{seg}0"), "up"]);
        }
        clients.push(ClientNs {
            tool,
            log: dir.join(format!("{tool}.log")),
            ns,
            kids: Vec::new(),
        });
    }
    let pools = vec![pool("a", "br-a", 10, 1400), pool("b", "br-b", 20, 1300)];
    let pools_path = dir.join("pools.json");
    std::fs::write(&pools_path, serde_json::to_vec(&pools).unwrap()).unwrap();
    let state = dir.join("state");
    let srv_log = dir.join("server.log");
    let mut server = ServerProc::start(&srv, &pools_path, &state, &srv_log);

    // Start the clients.
    for c in &mut clients {
        let log = c.log.display().to_string();
        let ns = c.ns.0.clone();
        match c.tool {
            "dhclient" => {
                let script = dir.join("dhclient-script.sh");
                write_script(
                    &script,
                    &format!(
                        "#!/bin/sh\necho \"reason=$reason iface=$interface ip=$new_ip_address mask=$new_subnet_mask routers=$new_routers dns=$new_domain_name_servers domain=$new_domain_name mtu=$new_interface_mtu\" >> {log}\n\
                         case \"$reason\" in BOUND|RENEW|REBIND|REBOOT) ip addr replace $new_ip_address/$new_subnet_mask dev $interface;; esac\nexit 0\n"
                    ),
                );
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &ns, "dhclient", "-4", "-d", "-v", "-sf"])
                    .arg(&script)
                    .arg("-lf")
                    .arg(dir.join("dhclient.leases"))
                    .arg("-pf")
                    .arg(dir.join("dhclient.pid"))
                    .args(["a0", "b0"])
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.join("dhclient.out")).unwrap());
                c.kids.push(Kid::spawn("dhclient", &mut cmd));
            }
            "dhcpcd" => {
                let hook = dir.join("dhcpcd-hook.sh");
                write_script(
                    &hook,
                    &format!(
                        "#!/bin/sh\necho \"reason=$reason iface=$interface ip=$new_ip_address mask=$new_subnet_mask routers=$new_routers dns=$new_domain_name_servers domain=$new_domain_name mtu=$new_interface_mtu\" >> {log}\n"
                    ),
                );
                let conf = dir.join("dhcpcd.conf");
                std::fs::write(
                    &conf,
                    "option subnet_mask, routers, domain_name_servers, domain_name, interface_mtu\nnoipv6rs\nnoarp\nnoipv4ll\n",
                )
                .unwrap();
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &ns, "dhcpcd", "-4", "-B", "-f"])
                    .arg(&conf)
                    .arg("-c")
                    .arg(&hook)
                    .args(["a0", "b0"])
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.join("dhcpcd.out")).unwrap());
                c.kids.push(Kid::spawn("dhcpcd", &mut cmd));
            }
            _ => {
                let script = dir.join("udhcpc-script.sh");
                write_script(
                    &script,
                    &format!(
                        "#!/bin/sh\necho \"reason=$1 iface=$interface ip=$ip mask=$subnet routers=$router dns=$dns domain=$domain mtu=$mtu\" >> {log}\n\
                         case \"$1\" in bound|renew) ip addr replace $ip/$subnet dev $interface;; deconfig) ip addr flush dev $interface;; esac\nexit 0\n"
                    ),
                );
                for iface in ["a0", "b0"] {
                    let mut cmd = Command::new("ip");
                    cmd.args([
                        "netns", "exec", &ns, "busybox", "udhcpc", "-f", "-i", iface, "-s",
                    ])
                    .arg(&script)
                    .args(["-O", "mtu", "-t", "10", "-T", "1"])
                    .stdout(Stdio::null())
                    .stderr(
                        std::fs::File::create(dir.join(format!("udhcpc-{iface}.out"))).unwrap(),
                    );
                    c.kids.push(Kid::spawn("udhcpc", &mut cmd));
                }
            }
        }
    }

    // Each client gets a lease with the right options on both segments.
    let t0 = Instant::now();
    let is = |r: &HashMap<String, String>, reasons: &[&str]| {
        reasons.contains(
            &r.get("reason")
                .map(|s| s.to_lowercase())
                .unwrap_or_default()
                .as_str(),
        )
    };
    let mut bound: BTreeMap<(&str, &str), String> = BTreeMap::new();
    wait_for(
        "every client bound on both segments",
        Duration::from_secs(60),
        || {
            for c in &clients {
                for r in read_log(&c.log) {
                    if is(&r, &["bound", "reboot"]) && !r["ip"].is_empty() {
                        let iface = if r["iface"] == "a0" { "a0" } else { "b0" };
                        bound.insert((c.tool, iface), r["ip"].clone());
                    }
                }
            }
            bound.len() == 6
        },
    );
    println!("all 6 leases bound after {:?}: {bound:?}", t0.elapsed());
    for c in &clients {
        let rows: Vec<_> = read_log(&c.log)
            .into_iter()
            .filter(|r| is(r, &["bound", "reboot"]) && !r["ip"].is_empty())
            .collect();
        for r in rows {
            let (third, mtu, seg) = if r["iface"] == "a0" {
                (10, "1400", "a")
            } else {
                (20, "1300", "b")
            };
            let a: Ipv4Addr = r["ip"].parse().unwrap();
            let o = a.octets();
            assert!(
                o[..3] == [198, 18, third] && (100..=150).contains(&o[3]),
                "{} {r:?}",
                c.tool
            );
            assert_eq!(r["mask"], "255.255.255.0", "{} {r:?}", c.tool);
            assert_eq!(
                r["routers"],
                format!("198.18.{third}.1"),
                "{} {r:?}",
                c.tool
            );
            assert_eq!(r["dns"], format!("198.18.{third}.53"), "{} {r:?}", c.tool);
            assert_eq!(r["domain"], format!("{seg}.test"), "{} {r:?}", c.tool);
            assert_eq!(r["mtu"], mtu, "{} {r:?}", c.tool);
        }
    }
    // Distinct addresses across clients on each segment.
    let addrs: HashSet<&String> = bound.values().collect();
    assert_eq!(addrs.len(), 6);

    // Renewal at T1 (15 s) with the same address.
    let renewed = |clients: &[ClientNs], from: &HashMap<&str, usize>| {
        let mut n = 0;
        for c in clients {
            let log = read_log(&c.log);
            for iface in ["a0", "b0"] {
                if log[from[c.tool]..].iter().any(|r| {
                    is(r, &["renew", "rebind"])
                        && r["iface"] == iface
                        && r["ip"] == bound[&(c.tool, iface)]
                }) {
                    n += 1;
                }
            }
        }
        n
    };
    let start: HashMap<&str, usize> = clients.iter().map(|c| (c.tool, 0)).collect();
    wait_for(
        "every client renewed on both segments",
        Duration::from_secs(60),
        || renewed(&clients, &start) == 6,
    );
    println!("all 6 leases renewed after {:?}", t0.elapsed());

    // Restart the server: clients keep their addresses.
    server.kid.stop(libc::SIGTERM);
    let mark: HashMap<&str, usize> = clients
        .iter()
        .map(|c| (c.tool, read_log(&c.log).len()))
        .collect();
    server = ServerProc::start(&srv, &pools_path, &state, &srv_log);
    wait_for(
        "every client renewed after the server restart",
        Duration::from_secs(60),
        || renewed(&clients, &mark) == 6,
    );
    for c in &clients {
        for r in &read_log(&c.log)[mark[c.tool]..] {
            assert!(
                !is(r, &["nak", "expire", "fail", "leasefail"]),
                "{} after restart: {r:?}",
                c.tool
            );
            if !r["ip"].is_empty() && (r["iface"] == "a0" || r["iface"] == "b0") {
                let iface = if r["iface"] == "a0" { "a0" } else { "b0" };
                assert_eq!(
                    r["ip"],
                    bound[&(c.tool, iface)],
                    "{} changed address after restart",
                    c.tool
                );
            }
        }
    }
    println!("all 6 leases renewed after the restart, {:?}", t0.elapsed());

    // Release.
    let macs: Vec<(String, String)> = clients
        .iter()
        .flat_map(|c| [("a", "a0"), ("b", "b0")].map(|(seg, i)| (seg.to_string(), c.ns.mac(i))))
        .collect();
    for c in &clients {
        match c.tool {
            "dhclient" => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &c.ns.0, "dhclient", "-4", "-r", "-sf"])
                    .arg(dir.join("dhclient-script.sh"))
                    .arg("-lf")
                    .arg(dir.join("dhclient.leases"))
                    .arg("-pf")
                    .arg(dir.join("dhclient.pid"))
                    .args(["a0", "b0"]);
                let st = cmd.status().unwrap();
                assert!(st.success(), "dhclient -r");
            }
            "dhcpcd" => {
                run(&["ip", "netns", "exec", &c.ns.0, "dhcpcd", "-4", "-k"]);
            }
            _ => {
                for k in &c.kids {
                    k.signal(libc::SIGUSR2);
                }
            }
        }
    }
    wait_for("server saw every release", Duration::from_secs(30), || {
        let ev = server.events();
        macs.iter().all(|(seg, mac)| {
            ev.iter()
                .any(|(k, s, _, m)| k == "released" && s == seg && m == mac)
        })
    });
    let leases = read_leases(&state, 0).unwrap();
    for (seg, mac) in &macs {
        let mine: Vec<_> = leases
            .iter()
            .filter(|l| {
                &l.segment == seg && &bulkhead::dhcp::leases::mac_serde::format(&l.mac) == mac
            })
            .collect();
        assert!(!mine.is_empty(), "{seg} {mac}");
        assert!(
            mine.iter().all(|l| l.state == LeaseState::Released),
            "{seg} {mac}: {mine:?}"
        );
    }
    println!("all 6 leases released after {:?}", t0.elapsed());
    // Let the clients exit cleanly (pid files, control sockets); Drop
    // kills whatever is left.
    for c in clients {
        for k in c.kids {
            k.terminate();
        }
    }
    server.kid.stop(libc::SIGTERM);
}

// ---- durability under kill -9 ---------------------------------------------

fn client_socket(iface: &str) -> UdpSocket {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_broadcast(true).unwrap();
    s.bind_device(Some(iface.as_bytes())).unwrap();
    s.bind(&std::net::SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)).into())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    s.into()
}

fn load_mac(n: u32) -> [u8; 6] {
    [
        0x02,
        0xbd,
        (n >> 24) as u8,
        (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8,
    ]
}

fn client_msg(mt: MessageType, xid: u32, mac: [u8; 6], opts: &[DhcpOption]) -> Vec<u8> {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, z, z, z, z, &mac);
    m.set_flags(Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(mt));
    for o in opts {
        m.opts_mut().insert(o.clone());
    }
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).unwrap();
    buf
}

#[derive(Clone, Copy)]
enum Step {
    Discover,
    Request(Ipv4Addr),
    Done,
}

/// Many DORAs in parallel (window of 48), one fake MAC each, numbered from
/// `first`. Runs until all `count` are done or `stop` is set; returns every
/// ACK seen as (mac, address).
fn load(
    iface: &str,
    first: u32,
    count: u32,
    stop: Arc<std::sync::atomic::AtomicBool>,
    acked: Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<([u8; 6], Ipv4Addr)> {
    use std::sync::atomic::Ordering;
    let sock = client_socket(iface);
    let dst = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let mut state: Vec<(Step, Instant, u32)> = Vec::new(); // step, last send, tries
    let mut acks = Vec::new();
    let mut next = 0u32;
    let mut buf = [0u8; 1500];
    let send = |i: u32, step: Step| {
        let mac = load_mac(first + i);
        let xid = first + i;
        let b = match step {
            Step::Discover => client_msg(MessageType::Discover, xid, mac, &[]),
            Step::Request(a) => client_msg(
                MessageType::Request,
                xid,
                mac,
                &[
                    DhcpOption::ServerIdentifier(Ipv4Addr::new(198, 18, 64, 1)),
                    DhcpOption::RequestedIpAddress(a),
                ],
            ),
            Step::Done => return,
        };
        let _ = sock.send_to(&b, dst);
    };
    let mut drain_until: Option<Instant> = None;
    loop {
        if drain_until.is_none() && stop.load(Ordering::SeqCst) {
            drain_until = Some(Instant::now() + Duration::from_millis(300));
        }
        if let Some(d) = drain_until
            && Instant::now() > d
        {
            break;
        }
        if drain_until.is_none() {
            let in_flight = state.iter().filter(|s| !matches!(s.0, Step::Done)).count();
            while in_flight + (next as usize - state.len()) < 48 && next < count {
                state.push((Step::Discover, Instant::now(), 1));
                send(next, Step::Discover);
                next += 1;
            }
            for (i, s) in state.iter_mut().enumerate() {
                if !matches!(s.0, Step::Done) && s.1.elapsed() > Duration::from_millis(700) {
                    if s.2 >= 6 {
                        s.0 = Step::Done;
                        continue;
                    }
                    s.1 = Instant::now();
                    s.2 += 1;
                    send(i as u32, s.0);
                }
            }
            if next == count && state.iter().all(|s| matches!(s.0, Step::Done)) {
                break;
            }
        }
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n])) else {
            continue;
        };
        let i = m.xid().wrapping_sub(first);
        if i as usize >= state.len() || m.chaddr() != load_mac(m.xid()) {
            continue;
        }
        let mt = match m.opts().get(OptionCode::MessageType) {
            Some(DhcpOption::MessageType(t)) => *t,
            _ => continue,
        };
        match (state[i as usize].0, mt) {
            (Step::Discover, MessageType::Offer) => {
                let a = m.yiaddr();
                state[i as usize] = (Step::Request(a), Instant::now(), 1);
                if drain_until.is_none() {
                    send(i, Step::Request(a));
                }
            }
            (Step::Request(a), MessageType::Ack) => {
                assert_eq!(m.yiaddr(), a);
                acks.push((load_mac(m.xid()), a));
                acked.fetch_add(1, Ordering::SeqCst);
                state[i as usize].0 = Step::Done;
            }
            (Step::Request(_), MessageType::Nak) => state[i as usize].0 = Step::Done,
            _ => {}
        }
    }
    acks
}

/// INIT-REBOOT for every (mac, addr): returns the ones not ACKed with the
/// same address.
fn verify_by_protocol(
    iface: &str,
    bindings: Vec<([u8; 6], Ipv4Addr)>,
) -> Vec<([u8; 6], Ipv4Addr, String)> {
    let sock = client_socket(iface);
    let dst = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let mut pending: HashMap<u32, ([u8; 6], Ipv4Addr, Option<String>)> = HashMap::new();
    let mut buf = [0u8; 1500];
    let mut bad = Vec::new();
    for chunk in bindings.chunks(48) {
        for (mac, a) in chunk {
            let xid = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ 0x8000_0000;
            pending.insert(xid, (*mac, *a, None));
        }
        for attempt in 0..5 {
            for (xid, (mac, a, got)) in &pending {
                if got.is_none() {
                    let b = client_msg(
                        MessageType::Request,
                        *xid,
                        *mac,
                        &[DhcpOption::RequestedIpAddress(*a)],
                    );
                    let _ = sock.send_to(&b, dst);
                }
            }
            let until = Instant::now() + Duration::from_millis(400 * (attempt + 1));
            while Instant::now() < until && pending.values().any(|p| p.2.is_none()) {
                let Ok((n, _)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n])) else {
                    continue;
                };
                if let Some(p) = pending.get_mut(&m.xid()) {
                    let mt = match m.opts().get(OptionCode::MessageType) {
                        Some(DhcpOption::MessageType(t)) => *t,
                        _ => continue,
                    };
                    p.2 = Some(if mt == MessageType::Ack && m.yiaddr() == p.1 {
                        "ok".into()
                    } else {
                        format!("{mt:?} {}", m.yiaddr())
                    });
                }
            }
            if pending.values().all(|p| p.2.is_some()) {
                break;
            }
        }
        for (_, (mac, a, got)) in pending.drain() {
            match got.as_deref() {
                Some("ok") => {}
                other => bad.push((mac, a, other.unwrap_or("no answer").to_string())),
            }
        }
    }
    bad
}

#[test]
fn acked_leases_survive_kill_9() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    common::require_root_and(&["ip"]);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pid = std::process::id();
    let srv = Netns::new(format!("bhd-dsrv-{pid}"));
    let cli = Netns::new(format!("bhd-dcli-{pid}"));
    run(&[
        "ip", "link", "add", "s0", "netns", &srv.0, "type", "veth", "peer", "name", "c0", "netns",
        &cli.0,
    ]);
    srv.ip(&["addr", "add", "198.18.64.1/18", "dev", "s0"]);
    srv.ip(&["link", "set", "s0", "up"]);
    cli.ip(&["link", "set", "c0", "up"]);
    let mut p = PoolConfig::new(
        "load",
        "s0",
        ip("198.18.64.1"),
        "198.18.64.0/18".parse().unwrap(),
        vec![(ip("198.18.64.10"), ip("198.18.127.250"))],
    );
    p.lease_time = 3600;
    let pools_path = dir.join("pools.json");
    std::fs::write(&pools_path, serde_json::to_vec(&vec![p]).unwrap()).unwrap();
    let state = dir.join("state");
    let log = dir.join("server.log");

    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut all: BTreeMap<[u8; 6], Ipv4Addr> = BTreeMap::new();
    let mut server = ServerProc::start(&srv, &pools_path, &state, &log);
    const ROUNDS: u32 = 5;
    const PER_ROUND: u32 = 800;
    let mut total_acks = 0;
    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let first = 1 + round * PER_ROUND;
        let acked = Arc::new(AtomicUsize::new(0));
        let a2 = acked.clone();
        let loader = common::in_netns(&cli.0, move || load("c0", first, PER_ROUND, s2, a2));
        // Kill at a random moment once ACKs are flowing (fsync latency on a
        // busy disk varies too much for a fixed delay from the start).
        let t = Instant::now();
        while acked.load(Ordering::SeqCst) == 0 && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let first_ack = t.elapsed();
        let delay = Duration::from_millis(rand() % 600);
        std::thread::sleep(delay);
        server.kid.stop(libc::SIGKILL);
        stop.store(true, Ordering::SeqCst);
        let acks = loader.join().unwrap();
        println!(
            "round {round}: first ACK after {first_ack:?}, killed {delay:?} later; {} ACKs received in this round",
            acks.len()
        );
        total_acks += acks.len();
        for (mac, a) in acks {
            all.insert(mac, a);
        }
        // No address acknowledged to two clients.
        let mut seen = HashMap::new();
        for (mac, a) in &all {
            if let Some(other) = seen.insert(*a, *mac) {
                panic!("{a} acknowledged to {other:?} and {mac:?}");
            }
        }
        // The journal holds every ACKed binding.
        let leases = read_leases(&state, 0).unwrap();
        let by_addr: HashMap<Ipv4Addr, &bulkhead::dhcp::Lease> =
            leases.iter().map(|l| (l.addr, l)).collect();
        let mut per_mac: HashMap<[u8; 6], usize> = HashMap::new();
        for l in &leases {
            if l.state == LeaseState::Bound {
                *per_mac.entry(l.mac).or_default() += 1;
            }
        }
        assert!(
            per_mac.values().all(|n| *n == 1),
            "a client holds two bindings"
        );
        for (mac, a) in &all {
            let l = by_addr
                .get(a)
                .unwrap_or_else(|| panic!("ACKed {a} lost after kill -9"));
            assert_eq!(&l.mac, mac, "{a} bound to another client after kill -9");
            assert_eq!(l.state, LeaseState::Bound);
        }
        // And the restarted server answers every ACKed client with its address.
        server = ServerProc::start(&srv, &pools_path, &state, &log);
        let list: Vec<_> = all.iter().map(|(m, a)| (*m, *a)).collect();
        let n = list.len();
        let bad = common::in_netns(&cli.0, move || verify_by_protocol("c0", list))
            .join()
            .unwrap();
        assert!(
            bad.is_empty(),
            "after restart: {} of {n} not confirmed: {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
        println!("round {round}: all {n} ACKed bindings confirmed after restart");
    }
    assert!(total_acks > 0, "the load never got an ACK");
    // Throughput without a kill; the server reports its commit/fsync counts
    // on a clean stop.
    let stop = Arc::new(AtomicBool::new(false));
    let t = Instant::now();
    let first = 1 + ROUNDS * PER_ROUND;
    let acked = Arc::new(AtomicUsize::new(0));
    let acks = common::in_netns(&cli.0, move || load("c0", first, 1000, stop, acked))
        .join()
        .unwrap();
    let el = t.elapsed();
    server.kid.stop(libc::SIGTERM);
    let log_text = std::fs::read_to_string(&log).unwrap();
    let stats = log_text
        .lines()
        .rev()
        .find(|l| l.contains("dhcp_serve: stopped"))
        .unwrap_or("");
    println!(
        "load: {} DORAs acknowledged in {el:?} ({:.0}/s, 48 in flight); server: {stats}",
        acks.len(),
        acks.len() as f64 / el.as_secs_f64()
    );
    assert_eq!(acks.len(), 1000);
}
