//! The HTTPS management API of a real `bulkhead run`, in network namespaces: a gateway with a
//! management segment (a client with curl), a client segment and a server segment, and the
//! real nftables ruleset between them.
//!
//! - tokens: 200 with one, 401 without or with a wrong one, 403 for a read token on a change;
//!   the change (`POST sets/{group}`) opens a flow for real; changes are audit events;
//! - the API listens only on the management address: `ss` shows it there, and from the client
//!   segment its port does not answer;
//! - `bulkhead --remote`: an apply with a confirm window that is not confirmed rolls back; an
//!   apply that would lock out management is refused with `check`'s diagnostics;
//! - bad input: malformed JSON 400, a 100 MiB body 413 without the daemon's memory growing,
//!   idle connections and a slow client are dropped, DHCP keeps serving meanwhile.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");
const API: &str = "https://198.18.81.1:8443";

fn config(extra: &str) -> String {
    format!(
        r#"[uplink]
interface = "up0"
address = "198.18.80.2/24"
gateway = "198.18.80.1"

[segments.mgmt]
interface = "mgmt0"
subnet = "198.18.81.0/24"
gateway = "198.18.81.1"
management = true

[segments.lan]
interface = "lan0"
subnet = "198.18.82.0/24"
gateway = "198.18.82.1"
[segments.lan.dhcp]
ranges = ["198.18.82.100-198.18.82.150"]

[segments.srv]
interface = "srv0"
subnet = "198.18.83.0/24"
gateway = "198.18.83.1"

[groups.web]
members = ["198.18.83.10"]

[management]
api_port = 8443
{extra}
[[rules]]
name = "lan-to-web"
from = "lan"
to = "web"
proto = "tcp"
ports = [80]
"#
    )
}

struct Lab {
    gw: common::Netns,
    mgmt: common::Netns,
    lan: common::Netns,
    srv: common::Netns,
    _up: common::Netns,
    dir: common::TempDir,
    cfg: PathBuf,
    state: PathBuf,
    child: Option<Child>,
    pid: u32,
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed()
}

impl Lab {
    fn start(tag: &str) -> Lab {
        Lab::start_with(tag, |_| String::new())
    }

    /// A lab whose config gets `extra(dir)` in its `[management]` section.
    fn start_with(tag: &str, extra: impl FnOnce(&std::path::Path) -> String) -> Lab {
        common::require_root_and(&["ip", "nft", "curl", "ss", "busybox", "python3", "promtool"]);
        let gw = common::Netns::new(&format!("api{tag}"));
        let mk = |dev: &str, client: &common::Netns, addr: Option<&str>, via: Option<&str>| {
            let peer = format!("{dev}p");
            gw.ok(&[
                "ip", "link", "add", dev, "type", "veth", "peer", "name", &peer,
            ]);
            gw.ok(&["ip", "link", "set", &peer, "netns", &client.name]);
            client.ok(&["ip", "link", "set", &peer, "name", "eth0"]);
            client.ok(&["ip", "link", "set", "eth0", "up"]);
            if let Some(a) = addr {
                client.ok(&["ip", "addr", "add", a, "dev", "eth0"]);
            }
            if let Some(v) = via {
                client.ok(&["ip", "route", "add", "default", "via", v]);
            }
        };
        let mgmt = common::Netns::new("apim");
        let lan = common::Netns::new("apil");
        let srv = common::Netns::new("apis");
        let up = common::Netns::new("apiu");
        mk("mgmt0", &mgmt, Some("198.18.81.50/24"), Some("198.18.81.1"));
        mk("lan0", &lan, Some("198.18.82.50/24"), Some("198.18.82.1"));
        mk("srv0", &srv, Some("198.18.83.50/24"), Some("198.18.83.1"));
        mk("up0", &up, Some("198.18.80.1/24"), None);
        let dir = common::TempDir::new(&format!("api-{tag}"));
        let cfg = dir.path().join("bulkhead.toml");
        std::fs::write(&cfg, config(&extra(dir.path()))).unwrap();
        let state = dir.path().join("state");
        let mut l = Lab {
            gw,
            mgmt,
            lan,
            srv,
            _up: up,
            dir,
            cfg,
            state,
            child: None,
            pid: 0,
        };
        l.run_daemon();
        l
    }

    fn run_daemon(&mut self) {
        let _ = std::fs::remove_file(self.state.join("ready"));
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).unwrap();
        let child = self
            .gw
            .cmd(&[BIN, "-c", self.cfg.to_str().unwrap(), "--state-dir"])
            .arg(&self.state)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let ready = self.state.join("ready");
        wait_for("the daemon is ready", Duration::from_secs(30), || {
            std::fs::read_to_string(&ready).is_ok_and(|s| s.trim().parse::<u32>().is_ok())
        });
        self.pid = std::fs::read_to_string(&ready)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // the listener comes up right after the first apply
        wait_for("the API listens", Duration::from_secs(10), || {
            self.log().contains("management API on")
        });
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.gw
            .cmd(&[BIN, "-c", self.cfg.to_str().unwrap(), "--state-dir"])
            .arg(&self.state)
            .args(args)
            .output()
            .unwrap()
    }

    fn token(&self, name: &str, role: &str) -> String {
        let o = self.cli(&["api-token", "add", name, "--role", role]);
        assert!(o.status.success(), "{}", out(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// curl from a namespace: (HTTP status, body); status 0 when nothing answered.
    fn curl(&self, ns: &common::Netns, token: Option<&str>, args: &[&str]) -> (u16, String) {
        let mut a: Vec<String> = vec![
            "curl".into(),
            "-sk".into(),
            "-m".into(),
            "8".into(),
            "-w".into(),
            "\n%{http_code}".into(),
        ];
        if let Some(t) = token {
            a.push("-H".into());
            a.push(format!("Authorization: Bearer {t}"));
        }
        a.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        let o = ns.run(&refs);
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = s.rsplit_once('\n').unwrap_or(("", &s));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn rss_kb(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    }

    /// A TCP connection from the lan client to the web server's port 80.
    fn lan_reaches_web(&self) -> bool {
        self.lan
            .run(&[
                "timeout",
                "2",
                "bash",
                "-c",
                "exec 3<>/dev/tcp/198.18.83.10/80",
            ])
            .status
            .success()
    }

    /// A DHCP lease for the lan client (busybox udhcpc, nothing configured).
    fn dhcp_lease(&self) -> bool {
        let o = self.lan.run(&[
            "busybox",
            "udhcpc",
            "-i",
            "eth0",
            "-n",
            "-q",
            "-f",
            "-t",
            "3",
            "-T",
            "2",
            "-s",
            "/bin/true",
        ]);
        out(&o).contains("obtained")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

fn api(path: &str) -> String {
    format!("{API}{path}")
}

#[test]
fn tokens_guard_the_api_a_set_change_opens_a_flow_and_is_audited() {
    require_root!();
    let l = Lab::start("tok");
    let admin = l.token("ops", "admin");
    let read = l.token("grafana", "read");

    // 200 and JSON with a token, read or admin
    for t in [&admin, &read] {
        let (code, body) = l.curl(&l.mgmt, Some(t), &[&api("/api/v1/status")]);
        assert_eq!(code, 200, "{body}\n{}", l.log());
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["links"].is_array(), "{body}");
        assert!(
            v["extra"]["api"]["fingerprint_sha256"].is_string(),
            "status shows the certificate's fingerprint: {body}"
        );
    }
    // 401 without a token or with a wrong one, as JSON with a message
    let (code, body) = l.curl(&l.mgmt, None, &[&api("/api/v1/status")]);
    assert_eq!(code, 401, "{body}");
    assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string());
    let (code, _) = l.curl(&l.mgmt, Some("bh_wrong"), &[&api("/api/v1/leases")]);
    assert_eq!(code, 401);

    // the web server is not in the group yet: the lan client cannot reach it
    let web = "198.18.83.10";
    l.srv
        .ok(&["ip", "addr", "add", "198.18.83.10/24", "dev", "eth0"]);
    let listen = format!(
        "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('{web}', 80))\ns.listen(64)\nwhile True:\n    s.accept()[0].close()\n"
    );
    let mut server = l
        .srv
        .cmd(&["python3", "-c", &listen])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // the group's one member is .10: take it out, then the API puts it back
    let body = r#"{"members": ["198.18.83.10"]}"#;
    let (code, b) = l.curl(
        &l.mgmt,
        Some(&admin),
        &[
            "-X",
            "DELETE",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            &api("/api/v1/sets/web"),
        ],
    );
    assert_eq!(code, 200, "{b}");
    assert!(
        !l.lan_reaches_web(),
        "the flow is closed without the member"
    );

    // a read token may not change the set: 403
    let (code, b) = l.curl(
        &l.mgmt,
        Some(&read),
        &["-X", "POST", "-d", body, &api("/api/v1/sets/web")],
    );
    assert_eq!(code, 403, "{b}");
    assert!(!l.lan_reaches_web());

    // malformed JSON: 400 with a message
    let (code, b) = l.curl(
        &l.mgmt,
        Some(&admin),
        &[
            "-X",
            "POST",
            "-d",
            "{\"members\": [",
            &api("/api/v1/sets/web"),
        ],
    );
    assert_eq!(code, 400, "{b}");
    assert!(b.contains("members"), "{b}");

    // the admin token opens the flow for real
    let (code, b) = l.curl(
        &l.mgmt,
        Some(&admin),
        &["-X", "POST", "-d", body, &api("/api/v1/sets/web")],
    );
    assert_eq!(code, 200, "{b}");
    assert!(b.contains("198.18.83.10"), "{b}");
    assert!(l.lan_reaches_web(), "POST sets/web opened the flow");
    let _ = server.kill();
    let _ = server.wait();

    // every change is an audit event: who, what, the result; the refused one too
    let (code, b) = l.curl(&l.mgmt, Some(&read), &[&api("/api/v1/events")]);
    assert_eq!(code, 200);
    let evs: Vec<serde_json::Value> = serde_json::from_str(&b).unwrap();
    let audit: Vec<&serde_json::Value> = evs.iter().filter(|e| e["kind"] == "audit").collect();
    let has = |who: &str, what: &str, result: &str| {
        audit.iter().any(|e| {
            let f = |k: &str| {
                e["fields"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p[0] == k)
                    .map(|p| p[1].as_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            f("who") == who && f("what") == what && f("result") == result && f("via") == "api"
        })
    };
    assert!(
        has("token ops", "set add web 198.18.83.10", "ok"),
        "{audit:#?}"
    );
    assert!(
        has("token ops", "set del web 198.18.83.10", "ok"),
        "{audit:#?}"
    );
    assert!(has("token grafana", "set add web", "failed"), "{audit:#?}");

    // a change through the control socket is audited with the local user
    let o = l.cli(&["set", "add", "web", "198.18.83.11"]);
    assert!(o.status.success(), "{}", out(&o));
    let (_, b) = l.curl(&l.mgmt, Some(&read), &[&api("/api/v1/events")]);
    assert!(
        b.contains("uid 0") && b.contains("set add web 198.18.83.11"),
        "{b}"
    );

    // the events as they happen, as server-sent events
    let (_, b) = l.curl(
        &l.mgmt,
        Some(&read),
        &["-N", "-m", "2", &api("/api/v1/events?follow=1")],
    );
    assert!(b.contains("event: audit") && b.contains("data: {"), "{b}");

    // explain names the rule the set change opened
    let (code, b) = l.curl(
        &l.mgmt,
        Some(&read),
        &[&api(
            "/api/v1/explain?from=198.18.82.50&to=198.18.83.10&proto=tcp&port=80",
        )],
    );
    assert_eq!(code, 200, "{b}");
    assert!(
        b.contains("\"verdict\":\"accept\"") && b.contains("lan-to-web"),
        "{b}"
    );
    let (code, b) = l.curl(&l.mgmt, Some(&read), &[&api("/api/v1/explain?from=x")]);
    assert_eq!(code, 400, "{b}");

    // the OpenAPI document and the metrics need a token too
    let (code, b) = l.curl(&l.mgmt, Some(&read), &[&api("/api/v1/openapi.json")]);
    assert_eq!(code, 200);
    assert!(b.contains("/sets/{group}"), "{b}");
    assert_eq!(l.curl(&l.mgmt, None, &[&api("/metrics")]).0, 401);
    let (code, b) = l.curl(&l.mgmt, Some(&read), &[&api("/metrics")]);
    assert_eq!(code, 200, "{b}");
    assert!(b.contains("bulkhead_rule_packets_total{"), "{b}");
    assert!(b.contains("rule=\"lan-to-web\""), "{b}");
    // promtool reads it as Prometheus does
    let m = l.dir.path().join("metrics.txt");
    std::fs::write(&m, &b).unwrap();
    let o = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&m).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
}

#[test]
fn the_api_listens_on_the_management_address_only() {
    require_root!();
    let l = Lab::start("addr");
    let t = l.token("ops", "read");
    let ss = l.gw.ok(&["ss", "-Htln"]);
    let on: Vec<&str> = ss.lines().filter(|s| s.contains(":8443")).collect();
    assert_eq!(on.len(), 1, "{ss}");
    assert!(on[0].contains("198.18.81.1:8443"), "{ss}");
    // from the management client: it answers
    assert_eq!(l.curl(&l.mgmt, Some(&t), &[&api("/api/v1/status")]).0, 200);
    // from the client segment, to either address of the gateway: nothing answers
    for url in [
        api("/api/v1/status"),
        "https://198.18.82.1:8443/api/v1/status".into(),
    ] {
        let (code, b) = l.curl(&l.lan, Some(&t), &["-m", "3", &url]);
        assert_eq!(code, 0, "{url} answered from the client segment: {b}");
    }
    // failed attempts are limited per source: after 10 wrong tokens even the right one waits
    for i in 0..10 {
        let (code, _) = l.curl(
            &l.mgmt,
            Some(&format!("bh_guess{i}")),
            &[&api("/api/v1/status")],
        );
        assert_eq!(code, 401);
    }
    let (code, b) = l.curl(&l.mgmt, Some(&t), &[&api("/api/v1/status")]);
    assert_eq!(code, 429, "{b}");
    assert!(
        b.contains("too many failed attempts from 198.18.81.50"),
        "{b}"
    );
}

/// A remote apply through `bulkhead --remote` with its confirm window left to expire, and
/// one refused for locking out management.
#[test]
fn remote_apply_unconfirmed_rolls_back_and_a_lockout_is_refused_with_checks_diagnostics() {
    require_root!();
    let l = Lab::start("remote");
    let admin = l.token("ops", "admin");
    // the fingerprint from `bulkhead status` on the console
    let st = l.cli(&["status"]);
    let st = out(&st);
    let fp = st
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("api: https://198.18.81.1:8443, certificate SHA-256 ")?;
            Some(rest.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no fingerprint in status:\n{st}"));
    assert!(l.log().contains(&fp), "the console shows it too");
    let remote = |cfg: &std::path::Path, args: &[&str]| -> Output {
        l.mgmt
            .cmd(&[
                BIN,
                "-c",
                cfg.to_str().unwrap(),
                "--remote",
                API,
                "--token",
                &admin,
                "--fingerprint",
                &fp,
            ])
            .args(args)
            .output()
            .unwrap()
    };
    // without the fingerprint: refused, naming the one to compare
    let o = l
        .mgmt
        .run(&[BIN, "--remote", API, "--token", &admin, "status"]);
    assert!(!o.status.success());
    assert!(out(&o).contains(&fp), "{}", out(&o));
    let o = remote(&l.cfg, &["status"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("mgmt0"), "{}", out(&o));

    // a new config: one more rule; applied with a 3 s window and never confirmed
    let new = l.dir.path().join("new.toml");
    std::fs::write(
        &new,
        config("\n[[rules]]\nname = \"lan-to-srv-ssh\"\nfrom = \"lan\"\nto = \"srv\"\nproto = \"tcp\"\nports = [22]\n"),
    )
    .unwrap();
    let o = remote(&new, &["check"]);
    assert!(o.status.success(), "{}", out(&o));
    let o = remote(&new, &["apply", "--confirm-within", "3s"]);
    assert!(o.status.success(), "{}", out(&o));
    let ruleset = || l.gw.ok(&["nft", "list", "ruleset"]);
    assert!(ruleset().contains("lan-to-srv-ssh"), "applied");
    let o = remote(&l.cfg, &["status"]);
    assert!(out(&o).contains("PENDING CONFIRMATION"), "{}", out(&o));
    wait_for(
        "the unconfirmed apply rolls back",
        Duration::from_secs(15),
        || !ruleset().contains("lan-to-srv-ssh"),
    );
    assert!(
        !std::fs::read_to_string(&l.cfg)
            .unwrap()
            .contains("lan-to-srv-ssh"),
        "the config file keeps the confirmed config"
    );

    // the other commands, and the event stream with the audit trail of the above
    for args in [
        &["diff"][..],
        &["leases"],
        &["set", "list", "web"],
        &["logs"],
    ] {
        let o = remote(&l.cfg, args);
        assert!(o.status.success(), "{args:?}: {}", out(&o));
    }
    assert!(out(&remote(&l.cfg, &["set", "list", "web"])).contains("198.18.83.10"));
    let o = l
        .mgmt
        .cmd(&[
            "timeout",
            "3",
            BIN,
            "--remote",
            API,
            "--token",
            &admin,
            "--fingerprint",
            &fp,
        ])
        .args(["logs", "--follow", "--format", "json"])
        .output()
        .unwrap();
    let s = out(&o);
    assert!(
        s.contains("\"audit\"")
            && s.contains("token ops")
            && s.contains("apply (confirm within 3 s)"),
        "{s}"
    );

    // an apply that would lock every administrator out: refused, with check's diagnostics
    let bad = l.dir.path().join("bad.toml");
    std::fs::write(&bad, config("sources = []\n")).unwrap();
    let local =
        l.gw.cmd(&[BIN, "-c", bad.to_str().unwrap(), "check"])
            .output()
            .unwrap();
    assert_eq!(local.status.code(), Some(2));
    let o = remote(&bad, &["apply"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    // the same findings: LINE:COL: path: message after the file name
    let tail = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.contains("management.sources"))
            .map(|l| l.split_once(".toml:").map_or(l, |x| x.1).to_string())
            .collect()
    };
    let (want, got) = (tail(&out(&local)), tail(&out(&o)));
    assert!(!want.is_empty(), "{}", out(&local));
    assert_eq!(want, got, "{}", out(&o));
    // and over plain curl: 422 with file, line, column, key path, message
    let (code, b) = l.curl(
        &l.mgmt,
        Some(&admin),
        &[
            "-X",
            "POST",
            "--data-binary",
            &format!("@{}", bad.display()),
            &api("/api/v1/apply"),
        ],
    );
    assert_eq!(code, 422, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    let d = &v["diagnostics"][0];
    assert_eq!(d["path"], "management.sources", "{b}");
    assert!(
        d["line"].as_u64().unwrap() > 1 && d["column"].is_u64() && d["file"].is_string(),
        "{b}"
    );
    assert!(!ruleset().contains("lan-to-srv-ssh"));
    let (code, b) = l.curl(&l.mgmt, Some(&admin), &[&api("/api/v1/status")]);
    assert_eq!(code, 200, "management still works: {b}");
}

#[test]
fn big_bodies_idle_and_slow_clients_are_bounded_and_dhcp_keeps_serving() {
    require_root!();
    let l = Lab::start("bound");
    let admin = l.token("ops", "admin");
    assert!(l.dhcp_lease(), "DHCP serves before:\n{}", l.log());

    // 100 MiB body: 413, and the daemon does not grow by it
    let big = l.dir.path().join("big.bin");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(100 * 1024 * 1024).unwrap();
    let rss0 = l.rss_kb();
    let (code, b) = l.curl(
        &l.mgmt,
        Some(&admin),
        &[
            "-m",
            "30",
            "-X",
            "POST",
            "--data-binary",
            &format!("@{}", big.display()),
            &api("/api/v1/config/check"),
        ],
    );
    assert_eq!(code, 413, "{b}");
    let rss1 = l.rss_kb();
    assert!(rss1 < rss0 + 8 * 1024, "RSS grew from {rss0} to {rss1} kB");

    // many idle connections and a slow client (one header byte a second)
    let holder = r#"
import socket, sys, time
n = int(sys.argv[1])
idle = []
for i in range(n):
    try:
        idle.append(socket.create_connection(("198.18.81.1", 8443), timeout=5))
    except OSError:
        pass
print("open", len(idle), flush=True)
time.sleep(float(sys.argv[2]))
"#;
    let slow = r#"
import socket, ssl, time
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = ctx.wrap_socket(socket.create_connection(("198.18.81.1", 8443), timeout=60))
print("handshake done", flush=True)
t0 = time.time()
try:
    for c in b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n" * 100:
        s.send(bytes([c]))
        time.sleep(1)
        if time.time() - t0 > 40:
            break
    print("not dropped", flush=True)
except OSError as e:
    print("dropped after %.0f s" % (time.time() - t0), flush=True)
"#;
    let py = |code: &str, args: &[&str]| -> Child {
        let mut c = l.mgmt.cmd(&[
            "bash",
            "-c",
            "ulimit -n 20000; exec python3 -c \"$0\" \"$@\"",
            code,
        ]);
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let mut slow_client = py(slow, &[]);
    // it holds its connection before the flood starts
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(slow_client.stdout.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    assert_eq!(first.trim(), "handshake done");
    let idle = py(holder, &["10000", "25"]);
    // meanwhile DHCP serves and the daemon stays small
    std::thread::sleep(Duration::from_secs(3));
    assert!(l.dhcp_lease(), "DHCP serves during the flood:\n{}", l.log());
    let fds = std::fs::read_dir(format!("/proc/{}/fd", l.pid))
        .unwrap()
        .count();
    assert!(fds < 200, "{fds} descriptors open");
    // the idle ones are dropped after the handshake timeout: the API answers again
    let t = wait_for(
        "the API answers during the flood",
        Duration::from_secs(25),
        || {
            l.curl(&l.mgmt, Some(&admin), &["-m", "3", &api("/api/v1/status")])
                .0
                == 200
        },
    );
    eprintln!("the API answered again {t:?} into the flood");
    let o = slow_client.wait_with_output().unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains("dropped after"),
        "{s}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = idle.wait_with_output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
    // a kept-alive connection idle after its request is dropped too
    let keepalive = format!(
        r#"
import socket, ssl, time
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = ctx.wrap_socket(socket.create_connection(("198.18.81.1", 8443), timeout=60))
s.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\r\n")
print(s.recv(100)[:12].decode(), flush=True)
t0 = time.time()
while True:
    b = s.recv(65536)
    if not b:
        break
print("closed after %.0f s" % (time.time() - t0), flush=True)
"#
    );
    let o = l.mgmt.run(&["timeout", "40", "python3", "-c", &keepalive]);
    let s = out(&o);
    assert!(
        s.starts_with("HTTP/1.1 200") && s.contains("closed after"),
        "{s}"
    );
    eprintln!(
        "kept-alive idle connection: {}",
        s.lines().last().unwrap_or_default()
    );
    let rss2 = l.rss_kb();
    eprintln!("RSS: {rss0} kB before, {rss1} kB after 100 MiB, {rss2} kB after the flood");
    assert!(rss2 < rss0 + 16 * 1024, "RSS grew from {rss0} to {rss2} kB");
    assert!(l.dhcp_lease(), "DHCP serves after");
}

/// `api_cert` and `api_key` come together, as absolute paths; `bulkhead check` names the key.
#[test]
fn api_cert_and_key_are_checked_with_their_place() {
    let dir = common::TempDir::new("api-keys");
    let check = |extra: &str| -> (Option<i32>, String) {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, config(extra)).unwrap();
        let o = Command::new(BIN)
            .arg("-c")
            .arg(&p)
            .arg("check")
            .output()
            .unwrap();
        (o.status.code(), out(&o))
    };
    let (code, s) = check("api_cert = \"/etc/bulkhead/api.pem\"\n");
    assert_eq!(code, Some(2), "{s}");
    assert!(
        s.contains("c.toml:29:12: management.api_cert: api_cert needs api_key"),
        "{s}"
    );
    let (code, s) = check("api_cert = \"api.pem\"\napi_key = \"/k.pem\"\n");
    assert_eq!(code, Some(2), "{s}");
    assert!(
        s.contains("management.api_cert: must be an absolute path"),
        "{s}"
    );
    let (code, s) = check("api_cert = \"/c.pem\"\napi_key = \"/k.pem\"\n");
    assert_eq!(code, Some(0), "{s}");
}

/// The operator's own certificate (`api_cert`, `api_key`) is the one served, and its
/// fingerprint the one `bulkhead status` shows.
#[test]
fn the_operators_certificate_is_served() {
    require_root!();
    common::require_root_and(&["openssl"]);
    let l = Lab::start_with("own", |d| {
        let o = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-subj", "/CN=gw.example", "-days", "2", "-keyout"])
            .arg(d.join("k.pem"))
            .arg("-out")
            .arg(d.join("c.pem"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", out(&o));
        format!(
            "api_cert = \"{}\"\napi_key = \"{}\"\n",
            d.join("c.pem").display(),
            d.join("k.pem").display()
        )
    });
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(l.dir.path().join("c.pem"))
        .output()
        .unwrap();
    let want = out(&o).trim().rsplit('=').next().unwrap().to_string();
    let st = out(&l.cli(&["status"]));
    assert!(
        st.contains(&format!("certificate SHA-256 {want}")),
        "{want}\n{st}"
    );
    assert!(!l.state.join("api/cert.pem").exists(), "nothing generated");
    // and a client sees that certificate
    let o = l.mgmt.run(&[
        "bash",
        "-c",
        "openssl s_client -connect 198.18.81.1:8443 </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
    ]);
    assert!(out(&o).contains(&want), "{}", out(&o));
}
