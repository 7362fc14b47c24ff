//! The control socket of a real `bulkhead run` (in a network namespace, started with umask
//! 000) under abuse: it is 0600 and refuses other users, an endless request line costs no
//! memory, idle and excess connections cannot lock out a legitimate `bulkhead status`, and
//! running out of file descriptors does not make the daemon spin.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");

struct Daemon {
    ns: common::Netns,
    dir: common::TempDir,
    state: PathBuf,
    child: Child,
    pid: u32,
}

impl Daemon {
    fn start(tag: &str) -> Daemon {
        let ns = common::Netns::new(tag);
        for dev in ["up0", "lan0"] {
            let peer = format!("{dev}p");
            ns.ok(&[
                "ip", "link", "add", dev, "type", "veth", "peer", "name", &peer,
            ]);
        }
        let dir = common::TempDir::new(tag);
        let cfg = dir.path().join("bulkhead.toml");
        std::fs::write(
            &cfg,
            "[uplink]\ninterface = \"up0\"\naddress = \"198.18.70.2/24\"\ngateway = \"198.18.70.1\"\n\n[segments.lan]\ninterface = \"lan0\"\nsubnet = \"198.18.71.0/24\"\ngateway = \"198.18.71.1\"\nmanagement = true\n",
        )
        .unwrap();
        let state = dir.path().join("state");
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        // umask 000: whatever the socket's mode is, it does not come from the umask
        let child = Command::new("sh")
            .args(["-c", "umask 000; exec \"$@\"", "sh", "ip", "netns", "exec"])
            .arg(&ns.name)
            .args([BIN, "-c", cfg.to_str().unwrap(), "--state-dir"])
            .arg(&state)
            .arg("run")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            ns,
            dir,
            state,
            child,
            pid: 0,
        };
        let ready = d.state.join("ready");
        wait_for("the daemon is ready", Duration::from_secs(30), || {
            std::fs::read_to_string(&ready).is_ok_and(|s| s.trim().parse::<u32>().is_ok())
        });
        d.pid = std::fs::read_to_string(&ready)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        d
    }

    fn sock(&self) -> PathBuf {
        self.state.join("control.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// The CLI in the daemon's namespace, as root or (with `user`) as that uid/gid.
    fn cli(&self, user: Option<u32>, args: &[&str]) -> Output {
        let mut c = self.ns.cmd(&[]);
        if let Some(u) = user {
            c.args([
                "setpriv",
                &format!("--reuid={u}"),
                &format!("--regid={u}"),
                "--clear-groups",
            ]);
        }
        c.args([BIN, "--state-dir", self.state.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    }

    fn status_ok(&self) -> bool {
        let o = self.cli(None, &["status"]);
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("generation")
    }

    fn proc_field(&self, key: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} in /proc/{}/status", self.pid))
    }

    /// utime + stime in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        let rest = s.rsplit_once(')').unwrap().1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // after the command: state is field 3, utime 14, stime 15
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .unwrap()
            .count()
    }

    fn connect(&self) -> UnixStream {
        UnixStream::connect(self.sock()).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

/// One response line (with a timeout), parsed.
fn read_response(s: &UnixStream, timeout: Duration) -> Option<serde_json::Value> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut line = String::new();
    match BufReader::new(s).read_line(&mut line) {
        Ok(n) if n > 0 => Some(serde_json::from_str(&line).expect("a JSON response line")),
        _ => None,
    }
}

fn error_of(v: &Option<serde_json::Value>) -> String {
    v.as_ref()
        .and_then(|v| v["error"].as_str())
        .unwrap_or("")
        .to_string()
}

#[test]
fn the_socket_is_0600_and_other_users_are_refused() {
    require_root!();
    let d = Daemon::start("ctlperm");
    let mode = std::fs::metadata(d.sock()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "control.sock mode {mode:o} (daemon umask 000)");
    let leftovers: Vec<String> = std::fs::read_dir(&d.state)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".control"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(d.status_ok(), "root is served");
    // nothing the daemon wrote is open to other users, though it was started with umask 000
    let mut open_to_others = Vec::new();
    let mut stack = vec![d.state.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()) {
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            if md.file_type().is_symlink() {
                continue;
            }
            if md.is_dir() {
                stack.push(e.path());
            }
            if md.permissions().mode() & 0o022 != 0 {
                open_to_others.push(format!(
                    "{} {:o}",
                    e.path().display(),
                    md.permissions().mode()
                ));
            }
        }
    }
    assert!(
        open_to_others.is_empty(),
        "writable by group or others: {open_to_others:?}"
    );

    // nobody cannot even connect, and is told why
    let o = d.cli(Some(65534), &["status"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "nobody was served: {}{err}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(err.contains("permission denied"), "{err}");

    // with the file opened up by hand, the peer check still refuses: one error line
    std::fs::set_permissions(&d.state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(d.sock(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = d.cli(Some(65534), &["status"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "nobody was served: {}{err}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        err.contains("refused: uid 65534 may not use the control socket"),
        "{err}"
    );
    // and a warning event records it
    let o = d.cli(None, &["logs", "--format", "json"]);
    let events = String::from_utf8_lossy(&o.stdout);
    let warned = events.lines().any(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["severity"] == "warning"
            && v["msg"]
                .as_str()
                .unwrap_or("")
                .contains("refused a connection from uid 65534")
    });
    assert!(warned, "no warning event:\n{events}");
    assert!(d.status_ok(), "root is still served");
}

#[test]
fn an_endless_line_costs_no_memory_and_an_idle_client_is_dropped() {
    require_root!();
    let d = Daemon::start("ctlline");
    let (rss0, hwm0) = (d.proc_field("VmRSS:"), d.proc_field("VmHWM:"));
    let s = d.connect();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'a'; 1 << 20];
        let mut sent = 0usize;
        while sent < 100 << 20 {
            match w.write(&chunk) {
                Ok(n) if n > 0 => sent += n,
                _ => break,
            }
        }
        let _ = w.shutdown(std::net::Shutdown::Write);
        sent
    });
    let resp = read_response(&s, Duration::from_secs(60));
    let sent = writer.join().unwrap();
    let (rss1, hwm1) = (d.proc_field("VmRSS:"), d.proc_field("VmHWM:"));
    eprintln!(
        "100 MiB line: {sent} bytes written before the daemon closed; VmRSS {rss0} -> {rss1} kB, VmHWM {hwm0} -> {hwm1} kB"
    );
    let err = error_of(&resp);
    assert!(
        err.contains("request line longer than 65536 bytes"),
        "answer: {resp:?}"
    );
    assert!(
        hwm1 < hwm0 + 8 * 1024,
        "the daemon's peak RSS grew from {hwm0} to {hwm1} kB"
    );
    assert!(sent < 100 << 20, "the daemon read the whole line");
    // closed after the answer
    let mut rest = Vec::new();
    let _ = (&s).read_to_end(&mut rest);

    // a client that connects and says nothing is answered and closed
    let idle = d.connect();
    let t0 = Instant::now();
    let resp = read_response(&idle, Duration::from_secs(30));
    eprintln!("idle client closed after {:?}", t0.elapsed());
    assert!(
        error_of(&resp).contains("no request line within 10 s"),
        "answer: {resp:?}"
    );
    assert!(d.status_ok());
}

#[test]
fn a_flood_of_connections_leaves_the_daemon_answering() {
    require_root!();
    let d = Daemon::start("ctlflood");
    let flood: Vec<UnixStream> = (0..200).map(|_| d.connect()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let o = d.cli(None, &["status"]);
    assert!(
        o.status.success(),
        "status during a flood of 200 idle connections: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("status answered in {:?} during the flood", t0.elapsed());
    // all but the newest ones were answered and closed, oldest first
    std::thread::sleep(Duration::from_millis(300));
    let mut closed = 0;
    for s in &flood {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 512];
        match (&*s).read(&mut b) {
            Ok(n) => {
                if n > 0 {
                    assert!(
                        String::from_utf8_lossy(&b[..n]).contains("connections are open"),
                        "{}",
                        String::from_utf8_lossy(&b[..n])
                    );
                }
                closed += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => closed += 1,
        }
    }
    eprintln!("{closed} of 200 flood connections closed by the daemon");
    assert!(closed >= 200 - 32, "only {closed} of 200 were closed");
    drop(flood);

    // `logs --follow` streams stay and count: with 32 of them, one more is refused
    let followers: Vec<UnixStream> = (0..32)
        .map(|i| {
            let mut s = d.connect();
            s.write_all(b"{\"cmd\":\"logs\",\"follow\":true}\n")
                .unwrap();
            let r = read_response(&s, Duration::from_secs(10));
            assert_eq!(
                r.as_ref().map(|v| v["ok"].clone()),
                Some(serde_json::Value::Bool(true)),
                "follower {i}: {r:?}"
            );
            s
        })
        .collect();
    let extra = d.connect();
    let r = read_response(&extra, Duration::from_secs(5));
    assert!(
        error_of(&r).contains("too many connections"),
        "the 33rd connection: {r:?}"
    );
    let o = d.cli(None, &["status"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("too many connections"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // a follower that goes away frees its place at once
    drop(followers);
    wait_for(
        "status once the followers left",
        Duration::from_secs(5),
        || d.status_ok(),
    );
}

#[test]
fn running_out_of_descriptors_does_not_make_it_spin() {
    require_root!();
    let d = Daemon::start("ctlfd");
    let base = d.fds();
    let limit = base + 6;
    let st = Command::new("prlimit")
        .args(["--pid", &d.pid.to_string(), &format!("--nofile={limit}:")])
        .status()
        .unwrap();
    assert!(st.success(), "prlimit");
    let conns: Vec<UnixStream> = (0..40).map(|_| d.connect()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let tck: u64 = String::from_utf8_lossy(
        &Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .parse()
    .unwrap();
    let (c0, t0) = (d.cpu_ticks(), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (c1, t1) = (d.cpu_ticks(), t0.elapsed());
    let cpu = (c1 - c0) as f64 / tck as f64 / t1.as_secs_f64();
    eprintln!(
        "{} descriptors open (limit {limit}, base {base}); daemon CPU over {t1:?}: {:.1} %",
        d.fds(),
        cpu * 100.0
    );
    assert!(
        cpu < 0.2,
        "the daemon used {:.0} % CPU at EMFILE",
        cpu * 100.0
    );
    drop(conns);
    let t = wait_for(
        "status once the connections closed",
        Duration::from_secs(20),
        || d.status_ok(),
    );
    eprintln!("answering again {t:?} after the connections closed");
    let log = d.log();
    let n = log.matches("accepting a connection failed").count();
    assert!((1..=3).contains(&n), "{n} accept failures logged:\n{log}");
}

/// `bulkhead status` names the flow offload state; on a kernel without flowtables the daemon
/// applied without one, says `unavailable (kernel has no nf_flow_table)` and put a warning
/// event into its stream.
#[test]
fn status_names_the_flow_offload_state() {
    require_root!();
    let d = Daemon::start("ctlflow");
    assert!(d.status_ok());
    let o = d.cli(None, &["status"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = out
        .lines()
        .find(|l| l.starts_with("flow offload: "))
        .unwrap_or_else(|| panic!("no flow offload line:\n{out}"));
    let probe = d.ns.run(&[
        "nft",
        "-c",
        "add table inet p; add flowtable inet p ft { hook ingress priority filter; devices = { lo }; }",
    ]);
    if probe.status.success() {
        assert_eq!(line, "flow offload: on");
    } else {
        assert_eq!(
            line,
            "flow offload: unavailable (kernel has no nf_flow_table)"
        );
        let logs = d.cli(None, &["logs"]);
        let logs = String::from_utf8_lossy(&logs.stdout).into_owned();
        assert!(
            logs.contains("flow offload unavailable (kernel has no nf_flow_table)"),
            "{logs}"
        );
    }
}
