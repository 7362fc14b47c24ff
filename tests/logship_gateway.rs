//! `bulkhead run` on a live kernel with a SIEM on the management segment: real blocked
//! connections from a client namespace arrive at rsyslog as drop events naming the config
//! rule and the segments; a port scan raises an alert and quarantines the scanner (its next
//! connection to an allowed service is refused) until the quarantine timeout; applies,
//! confirms, rollbacks and link changes arrive too; `bulkhead logs` and `bulkhead status`
//! show the stream and the shipping counters.

mod logship_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bulkhead::logship::format::{Parsed, parse_rfc5424};
use logship_support::{Netns, Rsyslog, TempDir, link, pki, wait_for};

const SIEM: &str = "198.18.100.10";
const CLIENT: &str = "198.18.20.10";
const SERVER: &str = "198.18.30.5";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bulkhead")
}

struct Site {
    gw: Netns,
    client: Netns,
    server: Netns,
    _siem: Netns,
    _inet: Netns,
    dir: TempDir,
    cfg: PathBuf,
    rsyslog: Rsyslog,
    daemon: Option<Child>,
    web: Option<Child>,
}

impl Site {
    fn up() -> Site {
        Site::up_with(config)
    }

    /// The site with the config `config(state_dir)` makes.
    fn up_with(config: fn(&Path) -> String) -> Site {
        let gw = Netns::new("gw");
        let client = Netns::new("client");
        let server = Netns::new("server");
        let siem = Netns::new("siem");
        link(&gw, "lan0", "", &client, "eth0", &format!("{CLIENT}/24"));
        link(&gw, "lan1", "", &server, "eth0", &format!("{SERVER}/24"));
        link(&gw, "mgmt0", "", &siem, "eth0", &format!("{SIEM}/24"));
        let inet = Netns::new("inet");
        link(&gw, "wan0", "", &inet, "eth0", "203.0.113.1/24");
        client.ok(&["ip", "route", "add", "default", "via", "198.18.20.1"]);
        server.ok(&["ip", "route", "add", "default", "via", "198.18.30.1"]);
        siem.ok(&["ip", "route", "add", "default", "via", "198.18.100.1"]);
        let dir = TempDir::new("gateway");
        let rs_dir = dir.path().join("siem");
        std::fs::create_dir_all(&rs_dir).unwrap();
        let p = pki(dir.path(), SIEM);
        let rsyslog = Rsyslog::new(&siem, &rs_dir, SIEM, &p);
        let cfg = dir.path().join("bulkhead.toml");
        std::fs::write(&cfg, config(&dir.path().join("state"))).unwrap();
        // a web server (and an SSH port) behind the gateway
        let web = server
            .cmd(&[bin(), "lab", "serve", "--tcp", "80,22"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let daemon = gw
            .cmd(&[bin(), "-c", cfg.to_str().unwrap(), "run"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let s = Site {
            gw,
            client,
            server,
            _siem: siem,
            _inet: inet,
            dir,
            cfg,
            rsyslog,
            daemon: Some(daemon),
            web: Some(web),
        };
        let ready = s.dir.path().join("state/ready");
        wait_for("the daemon is ready", Duration::from_secs(30), || {
            ready.exists()
        });
        s
    }

    fn ctl(&self, args: &[&str]) -> Output {
        let mut a = vec![bin(), "-c", self.cfg.to_str().unwrap()];
        a.extend_from_slice(args);
        self.gw.run(&a)
    }

    /// One TCP connection attempt from the client: true when it got through.
    fn probe(&self, dst: &str, port: u16) -> bool {
        let o = self.client.ok(&[
            bin(),
            "lab",
            "probe",
            "--timeout-ms",
            "400",
            &format!("tcp:{dst}:{port}"),
        ]);
        o.contains(" ok")
    }

    /// The quarantine set holds `addr`.
    fn quarantined(&self, addr: &str) -> bool {
        String::from_utf8_lossy(
            &self
                .gw
                .run(&["nft", "list", "set", "inet", "bulkhead", "quarantine"])
                .stdout,
        )
        .contains(addr)
    }

    /// A port scan from the client: 12 closed ports on the server within a moment.
    fn scan(&self) {
        let probes: Vec<String> = (1000..1012).map(|p| format!("tcp:{SERVER}:{p}")).collect();
        let mut a = vec![bin(), "lab", "probe", "--timeout-ms", "300"];
        a.extend(probes.iter().map(String::as_str));
        self.client.ok(&a);
    }

    fn siem(&self) -> Vec<Parsed> {
        self.rsyslog
            .lines("tcp")
            .iter()
            .filter_map(|l| parse_rfc5424(l))
            .collect()
    }

    fn wait_event(&self, what: &str, f: impl Fn(&Parsed) -> bool) -> Parsed {
        let t0 = Instant::now();
        loop {
            if let Some(p) = self.siem().into_iter().find(|p| f(p)) {
                return p;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{what}: not at the SIEM; it has:\n{}\ndaemon log:\n{}",
                self.rsyslog.lines("tcp").join("\n"),
                std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        for c in [self.daemon.take(), self.web.take()].into_iter().flatten() {
            let mut c = c;
            // SAFETY: signalling a child we started and have not reaped.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let t0 = Instant::now();
            while c.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = (&self.server, &self.client);
    }
}

fn config(state: &Path) -> String {
    format!(
        r#"[system]
hostname = "bhls-gw"
state_dir = "{}"

[uplink]
interface = "wan0"
address = "203.0.113.2/24"
gateway = "203.0.113.1"

[segments.internal]
interface = "lan0"
subnet = "198.18.20.0/24"
gateway = "198.18.20.1"

[segments.server]
interface = "lan1"
subnet = "198.18.30.0/24"
gateway = "198.18.30.1"

[segments.mgmt]
interface = "mgmt0"
subnet = "198.18.100.0/24"
gateway = "198.18.100.1"
management = true

[[rules]]
name = "internal-to-web"
from = "internal"
to = "server"
proto = "tcp"
ports = [80]
log = true

[logging]
drop_log_rate = "50/second"
drop_log_burst = 50

[[logging.targets]]
name = "siem"
host = "{SIEM}"
transport = "tcp"

[alerts]
port_scan = {{ ports = 8, window = "30s" }}
quarantine = {{ enabled = true, timeout = "5s" }}
"#,
        state.display()
    )
}

#[test]
fn drops_alerts_and_quarantine_reach_the_siem() {
    require_siem!();
    let s = Site::up();

    // the first apply
    let p = s.wait_event("the start apply", |p| {
        p.msgid == "apply" && p.param("what") == Some("start")
    });
    assert_eq!(p.param("result"), Some("ok"));

    // allowed, and logged by its rule
    assert!(s.probe(SERVER, 80), "web must be allowed");
    let p = s.wait_event("the logged accept", |p| {
        p.msgid == "accept" && p.param("dport") == Some("80")
    });
    assert_eq!(p.param("rule"), Some("internal-to-web"));
    assert_eq!(p.param("rule_kind"), Some("rule"));

    // blocked: SSH on the server (forward) and a port on the gateway itself (input)
    assert!(!s.probe(SERVER, 22), "ssh to the server must be blocked");
    let p = s.wait_event("the forward drop", |p| {
        p.msgid == "drop" && p.param("dport") == Some("22") && p.param("dst") == Some(SERVER)
    });
    assert_eq!(p.param("rule"), Some("default-drop"));
    assert_eq!(p.param("chain"), Some("forward"));
    assert_eq!(p.param("in"), Some("internal"));
    assert_eq!(p.param("out"), Some("server"));
    assert_eq!(p.param("src"), Some(CLIENT));
    assert_eq!(p.param("proto"), Some("tcp"));
    assert_eq!(p.param("tcp_flags"), Some("S"));
    assert!(p.param("mac").is_some(), "{p:?}");
    assert_eq!(p.pri, 3 * 8 + 4);
    assert!(!s.probe("198.18.20.1", 8080));
    let p = s.wait_event("the input drop", |p| {
        p.msgid == "drop" && p.param("dport") == Some("8080")
    });
    assert_eq!(p.param("chain"), Some("input"));
    assert_eq!(p.param("in"), Some("internal"));
    assert_eq!(p.param("out"), None);

    // `bulkhead logs` shows the same stream
    let o = s.ctl(&["logs"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.lines().any(|l| l.contains(" drop ")
            && l.contains("dport=22")
            && l.contains("rule=default-drop")),
        "{text}"
    );

    // `bulkhead logs --follow` streams new events as they happen
    let mut follow =
        s.gw.cmd(&[
            bin(),
            "-c",
            s.cfg.to_str().unwrap(),
            "logs",
            "--follow",
            "--format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!s.probe(SERVER, 23));
    let t0 = Instant::now();
    let streamed = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(10).saturating_sub(t0.elapsed()))
            .expect("logs --follow printed no drop of port 23");
        let ev: serde_json::Value = serde_json::from_str(&l).unwrap();
        let port = ev["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f[0] == "dport" && f[1] == "23");
        if ev["kind"] == "drop" && port {
            break ev;
        }
    };
    assert_eq!(streamed["severity"], "warning");
    // SAFETY: signalling a child we started and have not reaped.
    unsafe {
        libc::kill(follow.id() as i32, libc::SIGTERM);
    }
    let _ = follow.wait();

    // a port scan: 12 closed ports on the server within a moment
    s.scan();
    let alert = s.wait_event("the port scan alert", |p| p.msgid == "alert");
    let t_alert = Instant::now();
    assert_eq!(alert.param("alert"), Some("port_scan"));
    assert_eq!(alert.param("src"), Some(CLIENT));
    assert_eq!(alert.param("in"), Some("internal"));
    assert_eq!(alert.param("quarantine"), Some("5"));
    assert_eq!(alert.pri, 3 * 8 + 1);
    // quarantined: the allowed web server is refused now
    wait_for(
        "the scanner in the quarantine set",
        Duration::from_secs(3),
        || s.quarantined(CLIENT),
    );
    assert!(!s.probe(SERVER, 80), "a quarantined source must be refused");
    // ... until the timeout
    let t0 = Instant::now();
    while !s.probe(SERVER, 80) {
        assert!(
            t0.elapsed() < Duration::from_secs(12),
            "still quarantined long after the 5 s timeout"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let freed = t_alert.elapsed();
    eprintln!("quarantine lifted {freed:?} after the alert reached the SIEM");
    assert!(
        freed >= Duration::from_secs(3),
        "lifted too early: {freed:?}"
    );

    // apply a changed config with a confirmation window, confirm, then roll back
    let text = std::fs::read_to_string(&s.cfg).unwrap();
    std::fs::write(
        &s.cfg,
        text.replace("drop_log_burst = 50", "drop_log_burst = 40"),
    )
    .unwrap();
    let o = s.ctl(&["apply", "--confirm-within", "60s"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    s.wait_event("the apply", |p| {
        p.msgid == "apply" && p.param("what") == Some("apply")
    });
    assert!(s.ctl(&["confirm"]).status.success());
    s.wait_event("the confirm", |p| {
        p.msgid == "confirm" && p.param("result") == Some("ok")
    });
    let o = s.ctl(&["rollback"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    s.wait_event("the rollback", |p| {
        p.msgid == "rollback" && p.param("result") == Some("ok")
    });

    // a link goes down (the daemon repairs it)
    s.gw.ok(&["ip", "link", "set", "lan1", "down"]);
    let p = s.wait_event("the link down", |p| {
        p.msgid == "link" && p.param("link") == Some("lan1") && p.param("state") == Some("down")
    });
    assert_eq!(p.param("segment"), Some("server"));
    s.wait_event("the link up again", |p| {
        p.msgid == "link" && p.param("link") == Some("lan1") && p.param("state") == Some("up")
    });
    // the daemon's own log records arrive too
    s.wait_event("the drift repair record", |p| {
        p.msgid == "log" && p.msg.contains("drift repaired")
    });

    // status: the target's counters
    let o = s.ctl(&["status", "--format", "json"]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let t = &st["extra"]["logship"]["targets"][0];
    assert_eq!(t["name"], "siem");
    assert_eq!(t["connected"], true, "{t}");
    assert!(t["sent"].as_u64().unwrap() >= 10, "{t}");
    assert_eq!(t["dropped"], 0);
    let n = &st["extra"]["logship"]["nflog"];
    assert_eq!(n["bound"], true);
    assert!(n["alerts"].as_u64().unwrap() >= 1);
    assert!(n["quarantined"].as_u64().unwrap() >= 1);
    let text = String::from_utf8_lossy(&s.ctl(&["status"]).stdout).into_owned();
    assert!(
        text.contains("log targets") && text.contains("connected"),
        "{text}"
    );
    // every line at the SIEM is RFC 5424 that parses
    let lines = s.rsyslog.lines("tcp");
    assert!(
        lines.iter().all(|l| parse_rfc5424(l).is_some()),
        "{lines:#?}"
    );
    eprintln!("{} events at the SIEM", lines.len());
}

/// The lab with a SIEM host: `lab up --siem` starts rsyslogd at the shipped config's target
/// in the management segment, and `lab verify` shows the drops and alerts that reached it.
#[test]
fn lab_with_a_siem_shows_drops_and_alerts() {
    require_siem!();
    let name = format!("bhls{}", std::process::id() % 100_000);
    struct Down(String);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = Command::new(bin())
                .args(["lab", "--name", &self.0, "down"])
                .output();
        }
    }
    let cfg = format!(
        "{}/overlay/etc/bulkhead/bulkhead.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let up = Command::new(bin())
        .args(["-c", &cfg, "lab", "--name", &name, "up", "--siem"])
        .output()
        .unwrap();
    let _down = Down(name.clone());
    let out = String::from_utf8_lossy(&up.stdout);
    assert!(
        up.status.success(),
        "lab up --siem: {out}{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(
        out.contains("SIEM rsyslogd on tcp:192.168.100.10:514"),
        "{out}"
    );
    let v = Command::new(bin())
        .args(["lab", "--name", &name, "verify"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&v.stdout);
    assert!(v.status.success(), "lab verify: {out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("SIEM: "))
        .unwrap_or_else(|| panic!("no SIEM line: {out}"));
    eprintln!("{line}");
    let count = |k: &str| -> usize {
        line.split([',', '('])
            .map(str::trim)
            .find_map(|p| p.strip_prefix(&format!("{k} ")))
            .and_then(|n| n.trim_end_matches(')').parse().ok())
            .unwrap_or(0)
    };
    assert!(count("drop") > 0, "{line}");
    assert!(count("alert") > 0, "{line}");
    assert!(count("apply") >= 1, "{line}");
    assert!(out.contains("  drop:  drop tcp "), "{out}");
    assert!(out.contains("  alert: ALERT "), "{out}");
}

/// The gateway config of the quarantine tests: quarantine for a minute, reverse-path filtering
/// loose (a spoofed source that is routable elsewhere gets as far as the anti-spoofing
/// chain), and `extra` appended to `[alerts]`.
fn config_quarantine(state: &Path, extra: &str) -> String {
    config(state).replace(
        "timeout = \"5s\" }",
        &format!("timeout = \"60s\" }}\n{extra}"),
    ) + "\n[sysctl]\nrp_filter = 2\n"
}

/// An address of the server segment, never used by the server: the innocent one a client
/// claims.
const INNOCENT: &str = "198.18.30.77";

#[test]
fn spoofed_source_drops_never_quarantine_the_host_they_name() {
    require_siem!();
    let s = Site::up_with(|st| config_quarantine(st, ""));
    // the client sends a port scan claiming a server-segment address as its source
    s.client.ok(&[
        "ip",
        "addr",
        "add",
        &format!("{INNOCENT}/32"),
        "dev",
        "eth0",
    ]);
    s.client.ok(&[
        "sh",
        "-c",
        &format!(
            "for p in $(seq 1000 1011); do nc -z -w 1 -s {INNOCENT} {SERVER} $p & done; wait; true"
        ),
    ]);
    // the anti-spoofing chain dropped (and logged) every one of them
    let mut ports = std::collections::BTreeSet::new();
    let t0 = Instant::now();
    while ports.len() < 8 {
        ports = s
            .siem()
            .iter()
            .filter(|p| {
                p.msgid == "drop"
                    && p.param("src") == Some(INNOCENT)
                    && p.param("rule_kind") == Some("antispoof")
            })
            .filter_map(|p| p.param("dport").map(str::to_string))
            .collect();
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "anti-spoofing drops of {INNOCENT}: only {ports:?} at the SIEM:\n{}",
            s.rsyslog.lines("tcp").join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // the same scan from the client's own address does alert: the detector is alive
    s.scan();
    let alert = s.wait_event("the client's port scan alert", |p| {
        p.msgid == "alert" && p.param("src") == Some(CLIENT)
    });
    assert_eq!(alert.param("quarantine"), Some("60"));
    // but nothing was raised against, or done to, the address the spoofed packets named
    let against: Vec<Parsed> = s
        .siem()
        .into_iter()
        .filter(|p| p.msgid == "alert" && p.param("src") == Some(INNOCENT))
        .collect();
    assert!(
        against.is_empty(),
        "alerts against {INNOCENT}: {against:#?}"
    );
    assert!(
        !s.quarantined(INNOCENT),
        "{INNOCENT} was quarantined by spoofed packets"
    );
    assert!(s.quarantined(CLIENT));
}

#[test]
fn a_never_quarantine_host_that_scans_raises_an_alert_and_keeps_access() {
    require_siem!();
    let s = Site::up_with(|st| {
        config_quarantine(st, "never_quarantine = [\"trusted\", \"198.18.40.0/24\"]").replace(
            "[[rules]]",
            &format!("[groups.trusted]\nmembers = [\"{CLIENT}\"]\n\n[[rules]]"),
        )
    });
    assert!(s.probe(SERVER, 80), "web must be allowed");
    s.scan();
    let alert = s.wait_event("the port scan alert", |p| p.msgid == "alert");
    assert_eq!(alert.param("alert"), Some("port_scan"));
    assert_eq!(alert.param("src"), Some(CLIENT));
    assert_eq!(alert.param("quarantine"), Some("no"));
    assert_eq!(alert.param("exempt"), Some("never_quarantine"));
    assert_eq!(alert.pri, 3 * 8 + 1);
    // still allowed where the policy allows it, and not in the set
    assert!(
        s.probe(SERVER, 80),
        "a never_quarantine host must keep access"
    );
    assert!(!s.quarantined(CLIENT));
    let o = s.ctl(&["status", "--format", "json"]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let n = &st["extra"]["logship"]["nflog"];
    assert!(n["alerts"].as_u64().unwrap() >= 1, "{n}");
    assert_eq!(n["quarantined"], 0, "{n}");
}
