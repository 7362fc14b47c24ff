//! Live set changes with IPv6 members through a real `bulkhead run` (nftables backend, in
//! network namespaces, tests/configs/apply6.toml): `bulkhead set add GROUP ADDR` with an IPv6
//! address puts it into the group's `GROUP_v6` set and lets that host's IPv6 traffic through
//! the rule that uses the group (real TCP connections), `set list` shows it, it survives a
//! SIGHUP reload of a changed config and a daemon restart, `set del` stops the traffic
//! again; one request may mix both families; a bad address is refused by name.
//!
//! Needs root, `ip` and nft. Only processes started here are killed, by pid; the namespaces
//! are removed on drop. Addresses: 198.18.0.0/15, fd00:db8::/32 and 2001:db8::/32.

mod apply_support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use apply_support::*;
use socket2::{Domain, SockAddr, Socket, Type};

const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");

struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = bulkhead::sys::proc::kill(self.0.id());
            let _ = self.0.wait();
        }
    }
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Site {
    gw: Ns,
    cl: Ns,
    sv: Ns,
    _up: Ns,
    dir: TempDir,
}

impl Site {
    fn new() -> Site {
        init();
        let gw = Ns::new("gws6");
        let cl = Ns::new("cls6");
        let sv = Ns::new("svs6");
        let up = Ns::new("ups6");
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
        cl.sh("ip addr add 198.18.1.10/24 dev c0 && ip addr add 198.18.1.20/24 dev c0 && ip route add default via 198.18.1.1");
        cl.sh("ip -6 addr add fd00:db8:1::10/64 dev c0 nodad && ip -6 addr add fd00:db8:1::20/64 dev c0 nodad && ip -6 route add default via fd00:db8:1::1");
        sv.sh("ip addr add 198.18.2.10/24 dev s0 && ip route add default via 198.18.2.1");
        sv.sh("ip -6 addr add fd00:db8:2::10/64 dev s0 nodad && ip -6 route add default via fd00:db8:2::1");
        let dir = TempDir::new("set6");
        std::fs::copy(config("apply6.toml"), dir.path().join("box.toml")).unwrap();
        Site {
            gw,
            cl,
            sv,
            _up: up,
            dir,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn start(&self) -> Kid {
        let _ = std::fs::remove_file(self.state().join("ready"));
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.gw.name, BIN, "-c"])
            .arg(self.dir.path().join("box.toml"))
            .arg("--state-dir")
            .arg(self.state())
            .arg("run")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let kid = Kid(child);
        let ready = self.state().join("ready");
        let log = self.dir.path().join("daemon.log");
        let end = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&ready).is_ok_and(|s| s.trim().parse::<u32>().is_ok()) {
            assert!(
                Instant::now() < end,
                "the daemon never got ready:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        kid
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.gw.name, BIN, "-c"])
            .arg(self.dir.path().join("box.toml"))
            .arg("--state-dir")
            .arg(self.state())
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "bulkhead {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

/// A TCP connection from `src` to `dst` made in `ns`; true when the server answered.
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

/// Tried up to 4 times: the first IPv6 flow through a fresh port can wait on neighbour
/// discovery longer than a connect timeout.
fn reach_eventually(ns: &Ns, src: &str, dst: SocketAddr) -> bool {
    (0..4).any(|_| reach(ns, src, dst))
}

#[test]
fn ipv6_members_are_added_listed_kept_and_removed_live() {
    let s = Site::new();
    let stop = Arc::new(AtomicBool::new(false));
    let l =
        s.sv.run(|| TcpListener::bind("[fd00:db8:2::10]:8080").unwrap());
    l.set_nonblocking(true).unwrap();
    let st = stop.clone();
    let srv = std::thread::spawn(move || {
        while !st.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut c, _)) => {
                    let _ = c.write_all(b"ok");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    let dst: SocketAddr = "[fd00:db8:2::10]:8080".parse().unwrap();
    let mut run = s.start();
    assert!(
        reach_eventually(&s.cl, "fd00:db8:1::10", dst),
        "the configured IPv6 member never got through"
    );
    assert!(
        !reach(&s.cl, "fd00:db8:1::20", dst),
        "a host outside the group got through before any set change"
    );

    // one request mixing both families: each goes to its own set
    s.ok(&["set", "add", "web_clients", "fd00:db8:1::20", "198.18.1.20"]);
    let list = s.ok(&["set", "list", "web_clients"]);
    assert!(list.contains("fd00:db8:1::20"), "set list: {list}");
    assert!(list.contains("198.18.1.20"), "set list: {list}");
    let table = nft_table(&s.gw);
    let v6 = table.split("set web_clients_v6 {").nth(1).unwrap();
    assert!(
        v6.split('}').next().unwrap().contains("fd00:db8:1::20"),
        "not in web_clients_v6:\n{table}"
    );
    assert!(
        reach_eventually(&s.cl, "fd00:db8:1::20", dst),
        "the live IPv6 member is not let through"
    );

    // a reload of a changed config keeps it
    let cfg = s.dir.path().join("box.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace(
            "members = [\"198.18.2.10\", \"fd00:db8:2::10\"]",
            "members = [\"198.18.2.10\", \"fd00:db8:2::10\", \"fd00:db8:2::99\"]",
        ),
    )
    .unwrap();
    bulkhead::sys::proc::signal(run.0.id(), libc::SIGHUP).unwrap();
    wait_for("the reload", Duration::from_secs(30), || {
        nft_table(&s.gw).contains("fd00:db8:2::99")
    });
    assert!(
        nft_table(&s.gw).contains("fd00:db8:1::20"),
        "the reload dropped the live IPv6 member"
    );
    assert!(reach_eventually(&s.cl, "fd00:db8:1::20", dst));

    // and so does a restart of the daemon
    bulkhead::sys::proc::signal(run.0.id(), libc::SIGTERM).unwrap();
    let _ = run.0.wait();
    drop(run);
    run = s.start();
    let list = s.ok(&["set", "list", "web_clients"]);
    assert!(
        list.contains("fd00:db8:1::20"),
        "the restart dropped the live IPv6 member: {list}"
    );
    assert!(reach_eventually(&s.cl, "fd00:db8:1::20", dst));

    // set del stops it
    s.ok(&["set", "del", "web_clients", "fd00:db8:1::20"]);
    assert!(
        !s.ok(&["set", "list", "web_clients"])
            .contains("fd00:db8:1::20")
    );
    assert!(
        !reach(&s.cl, "fd00:db8:1::20", dst),
        "the removed IPv6 member still gets through"
    );
    assert!(reach_eventually(&s.cl, "fd00:db8:1::10", dst));

    // a bad address is refused by name, and nothing of the request is applied
    let o = s.cli(&["set", "add", "web_clients", "198.18.1.12", "fd00:db8:1::zz"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("fd00:db8:1::zz"), "{err}");
    assert!(
        !s.ok(&["set", "list", "web_clients"])
            .contains("198.18.1.12")
    );

    stop.store(true, Ordering::SeqCst);
    srv.join().unwrap();
    drop(run);
}

/// The API takes IPv6 members too; a group the config gives no IPv6 member refuses one by
/// name (saying how to enable it); a request mixing both families whose IPv6 part is refused
/// leaves the IPv4 set as it was.
#[test]
fn api_takes_ipv6_members_and_refusals_change_nothing() {
    let s = Site::new();
    let cfg = s.dir.path().join("box.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("ssh_port = 22", "ssh_port = 22\napi_port = 8443")
            + "\n[groups.v4only]\nmembers = [\"198.18.1.30\"]\n",
    )
    .unwrap();
    let _run = s.start();
    let token = s.ok(&["api-token", "add", "ops", "--role", "admin"]);
    let token = token.trim();
    let curl = |args: &[&str]| -> (u16, String) {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &s.gw.name,
            "curl",
            "-sk",
            "-m",
            "8",
            "-w",
            "\n%{http_code}",
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(args);
        let o = c.output().unwrap();
        let t = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = t.rsplit_once('\n').unwrap_or(("", &t));
        (code.trim().parse().unwrap_or(0), body.to_string())
    };
    let url = "https://198.18.4.1:8443/api/v1/sets/web_clients";
    wait_for("the API listens", Duration::from_secs(15), || {
        curl(&[url]).0 == 200
    });
    let (code, b) = curl(&[
        "-X",
        "POST",
        "-d",
        "{\"members\": [\"fd00:db8:1::40\"]}",
        url,
    ]);
    assert_eq!(code, 200, "{b}");
    assert!(b.contains("fd00:db8:1::40"), "{b}");
    assert!(
        s.ok(&["set", "list", "web_clients"])
            .contains("fd00:db8:1::40")
    );
    let (code, b) = curl(&[
        "-X",
        "DELETE",
        "-d",
        "{\"members\": [\"fd00:db8:1::40\"]}",
        url,
    ]);
    assert_eq!(code, 200, "{b}");
    assert!(!b.contains("fd00:db8:1::40"), "{b}");
    let (code, b) = curl(&["-X", "POST", "-d", "{\"members\": [\"2001:db8::zz\"]}", url]);
    assert_eq!(code, 400, "{b}");
    assert!(b.contains("2001:db8::zz"), "{b}");

    // a group without an IPv6 set: refused by name, with how to enable it
    let o = s.cli(&["set", "add", "v4only", "2001:db8::5"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("v4only") && err.contains("2001:db8::5") && err.contains("IPv6 member"),
        "{err}"
    );
    s.ok(&["set", "add", "v4only", "198.18.1.31"]);

    // mixed: the IPv4 part is taken out of web_clients, the IPv6 part (not a member) is
    // refused, so the IPv4 member is back
    let o = s.cli(&["set", "del", "web_clients", "198.18.1.10", "fd00:db8:1::99"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("fd00:db8:1::99"), "{err}");
    let list = s.ok(&["set", "list", "web_clients"]);
    assert!(
        list.contains("198.18.1.10"),
        "the IPv4 part stayed done: {list}"
    );
    // and the record was not changed either: a reload keeps the member
    let live = std::fs::read_to_string(s.state().join("live-sets.json")).unwrap_or_default();
    assert!(!live.contains("198.18.1.10"), "{live}");
}

/// The iptables backend has no IPv6: an IPv6 member is refused by name, and the IPv4 one of
/// the same request is not added either.
#[test]
fn iptables_refuses_an_ipv6_member_by_name() {
    init();
    let gw = gateway("ipt6");
    let state = TempDir::new("ipt6");
    let plan = plan("apply.toml", bulkhead::model::Backend::Iptables);
    gw.run(|| {
        let a = bulkhead::apply::Applier::new(state.path(), bulkhead::model::Backend::Iptables)
            .unwrap();
        a.apply(&plan).unwrap();
        let e = a
            .set_add(
                "allowed",
                &[
                    "198.18.1.77/32".parse().unwrap(),
                    "2001:db8::5/128".parse().unwrap(),
                ],
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("2001:db8::5") && e.contains("iptables"), "{e}");
        let l = a.set_list("allowed").unwrap();
        assert!(!l.contains(&"198.18.1.77".to_string()), "{l:?}");
    });
}
