//! Commit-confirm that holds when the daemon does not: a `bulkhead run` killed with SIGKILL
//! during the confirm window and started again (after the kernel state was lost, as in a
//! reboot) still waits for the confirmation and rolls back at the deadline; a SIGHUP keeps
//! the window; a deadline that passed while no daemon ran rolls back at start (also after a
//! simulated reboot: ruleset and addresses gone); a corrupt `pending-confirm.json` means "roll back"; a corrupt `live-sets.json` is set aside
//! with a warning event; a config rolled back is not applied again by the next start; and
//! several unconfirmed applies in a row roll back to the last confirmed config.
//!
//! As root, in network namespaces (`bhcf-*`) with veth ports named like the shipped config's
//! links (`--lab`), with a real `bulkhead run` and real nftables.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");
static N: AtomicUsize = AtomicUsize::new(0);

/// The management address of the shipped config, and the one an operator moves it to.
const OLD: &str = "192.168.100.1/24";
const NEW: &str = "192.168.100.254/24";

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().unwrap();
    assert!(o.status.success(), "ip {args:?}: {}", out(&o));
}

const PORTS: &[&str] = &[
    "eth0", "eth1", "eth0.10", "eth0.20", "eth0.30", "eth0.100", "eth0.200",
];

/// A gateway namespace with veth ports, a private copy of the shipped config and a state
/// directory; the daemon is started (and killed) by the test.
struct Gw {
    ns: String,
    peer: String,
    dir: common::TempDir,
    cfg: PathBuf,
    state: PathBuf,
    daemon: Option<Child>,
    /// Daemon runs so far: each writes its own log.
    runs: usize,
}

impl Gw {
    fn new(tag: &str) -> Gw {
        let id = format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let ns = format!("bhcf-{tag}-{id}");
        let peer = format!("bhcf-{tag}-{id}-p");
        let dir = common::TempDir::new(&format!("confirm-{tag}"));
        let cfg = dir.path().join("bulkhead.toml");
        std::fs::copy(
            common::root().join("overlay/etc/bulkhead/bulkhead.toml"),
            &cfg,
        )
        .unwrap();
        let g = Gw {
            state: dir.path().join("state"),
            ns,
            peer,
            dir,
            cfg,
            daemon: None,
            runs: 0,
        };
        ip(&["netns", "add", &g.ns]);
        ip(&["netns", "add", &g.peer]);
        ip(&["-n", &g.ns, "link", "set", "lo", "up"]);
        for (i, p) in PORTS.iter().enumerate() {
            let pn = format!("p{i}");
            ip(&[
                "-n", &g.ns, "link", "add", p, "type", "veth", "peer", "name", &pn, "netns",
                &g.peer,
            ]);
            ip(&["-n", &g.peer, "link", "set", &pn, "up"]);
        }
        g
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, BIN, "-c"])
            .arg(&self.cfg)
            .args(["--lab", "--state-dir"])
            .arg(&self.state)
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "{args:?}: {}\n{}", out(&o), self.log());
        out(&o)
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("daemon-{n}.log"))
    }

    /// Start `bulkhead run` and wait until it is ready.
    fn start(&mut self) {
        assert!(self.daemon.is_none());
        let _ = std::fs::remove_file(self.state.join("ready"));
        self.runs += 1;
        let log = std::fs::File::create(self.log_path(self.runs)).unwrap();
        let child = self
            .cmd(&["run"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let ready = self.state.join("ready");
        let t0 = Instant::now();
        while !ready.exists() {
            if let Some(c) = self.daemon.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("the daemon exited ({st}):\n{}", self.log());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as a crash or a power cut would stop it: nothing runs on the way out.
    fn kill9(&mut self) {
        let mut c = self.daemon.take().expect("a daemon runs");
        // SAFETY: kill(2) on the pid of the daemon this test started.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGKILL);
        }
        c.wait().unwrap();
        let _ = std::fs::remove_file(self.state.join("ready"));
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of the daemon this test started.
        unsafe {
            libc::kill(self.daemon.as_ref().unwrap().id() as i32, sig);
        }
    }

    /// The log of the current (or last) daemon run.
    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path(self.runs)).unwrap_or_default()
    }

    fn addrs(&self, dev: &str) -> String {
        let o = Command::new("ip")
            .args(["-n", &self.ns, "-4", "-o", "addr", "show", "dev", dev])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn mgmt_is(&self, a: &str) -> bool {
        let s = self.addrs("eth0.100");
        let other = if a == OLD { NEW } else { OLD };
        s.contains(a) && !s.contains(other)
    }

    /// Write a config that moves the management address (the change under test).
    fn edit(&self) -> String {
        let orig = std::fs::read_to_string(&self.cfg).unwrap();
        let moved = orig.replace(
            "gateway = \"192.168.100.1\"",
            "gateway = \"192.168.100.254\"",
        );
        assert_ne!(orig, moved);
        std::fs::write(&self.cfg, &moved).unwrap();
        orig
    }

    fn pending(&self) -> bool {
        self.ok(&["status"]).contains("PENDING CONFIRMATION")
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            // SAFETY: kill(2) on the pid of the daemon this test started.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.peer])
            .status();
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

/// A reboot loses what the kernel held: the ruleset and the addresses (`--lab` makes the
/// segments plain ports, which stay).
fn forget_kernel_state(g: &Gw) {
    let _ = Command::new("ip")
        .args([
            "netns", "exec", &g.ns, "nft", "delete", "table", "inet", "bulkhead",
        ])
        .status();
    for l in PORTS {
        ip(&["-n", &g.ns, "addr", "flush", "dev", l]);
    }
}

#[test]
fn sigkill_during_the_window_keeps_the_pending_confirmation_and_rolls_back_at_the_deadline() {
    require_root!();
    let mut g = Gw::new("kill");
    g.start();
    assert!(g.mgmt_is(OLD));
    let orig = g.edit();
    g.ok(&["apply", "--confirm-within", "12s"]);
    let applied = Instant::now();
    assert!(g.mgmt_is(NEW));
    g.kill9();
    // as after a reboot: the kernel lost the ruleset and the addresses
    forget_kernel_state(&g);
    g.start();
    // the restarted daemon still waits for the confirmation, running the unconfirmed config
    assert!(g.pending(), "the restart forgot the pending confirmation");
    assert!(g.mgmt_is(NEW), "{}", g.addrs("eth0.100"));
    // and nobody confirms: the previous config comes back at the deadline
    wait_for("the rollback", Duration::from_secs(25), || g.mgmt_is(OLD));
    assert!(
        applied.elapsed() >= Duration::from_secs(11),
        "rolled back before the deadline"
    );
    assert!(!g.pending());
    // the rolled-back config is not the config file any more; the rejected one is kept
    assert_eq!(std::fs::read_to_string(&g.cfg).unwrap(), orig);
    assert!(
        std::fs::read_to_string(g.dir.path().join("bulkhead.toml.rejected"))
            .unwrap()
            .contains("192.168.100.254")
    );
    // and the same again, confirmed after the restart: it stays
    g.edit();
    g.ok(&["apply", "--confirm-within", "8s"]);
    g.kill9();
    g.start();
    assert!(g.pending());
    g.ok(&["confirm"]);
    std::thread::sleep(Duration::from_secs(10));
    assert!(g.mgmt_is(NEW), "{}", g.log());
}

#[test]
fn sighup_during_the_window_keeps_the_pending_confirmation() {
    require_root!();
    let mut g = Gw::new("hup");
    g.start();
    g.edit();
    g.ok(&["apply", "--confirm-within", "8s"]);
    assert!(g.mgmt_is(NEW));
    g.signal(libc::SIGHUP);
    wait_for("the reload", Duration::from_secs(5), || {
        g.log().contains("reloaded")
    });
    assert!(g.pending(), "the reload forgot the pending confirmation");
    assert!(g.mgmt_is(NEW));
    wait_for("the rollback", Duration::from_secs(20), || g.mgmt_is(OLD));
    assert!(!g.pending());
    // a SIGHUP now reads the restored file: the rolled-back config stays away
    g.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_secs(2));
    assert!(g.mgmt_is(OLD), "{}", g.log());
}

#[test]
fn a_deadline_that_passed_while_no_daemon_ran_rolls_back_at_start() {
    require_root!();
    let mut g = Gw::new("down");
    g.start();
    let orig = g.edit();
    g.ok(&["apply", "--confirm-within", "2s"]);
    assert!(g.mgmt_is(NEW));
    g.kill9();
    std::thread::sleep(Duration::from_secs(3));
    // a reboot: nothing of the kernel state is left
    forget_kernel_state(&g);
    g.start();
    // ready means rolled back: the unconfirmed config was never applied again
    assert!(g.mgmt_is(OLD), "{}\n{}", g.addrs("eth0.100"), g.log());
    assert!(!g.pending());
    assert!(
        g.log().contains("apply not confirmed in time"),
        "{}",
        g.log()
    );
    assert_eq!(std::fs::read_to_string(&g.cfg).unwrap(), orig);
    // the next restart (or reboot) does not bring it back either
    g.kill9();
    forget_kernel_state(&g);
    g.start();
    assert!(g.mgmt_is(OLD), "{}", g.log());
}

#[test]
fn after_an_automatic_rollback_a_restart_does_not_apply_the_rejected_config() {
    require_root!();
    let mut g = Gw::new("again");
    g.start();
    let orig = g.edit();
    g.ok(&["apply", "--confirm-within", "2s"]);
    wait_for("the rollback", Duration::from_secs(10), || g.mgmt_is(OLD));
    // a clean stop and start, as the init does after a crash or at boot
    g.signal(libc::SIGTERM);
    g.daemon.take().unwrap().wait().unwrap();
    g.start();
    assert!(
        g.mgmt_is(OLD),
        "the rejected config came back:\n{}",
        g.log()
    );
    assert_eq!(std::fs::read_to_string(&g.cfg).unwrap(), orig);
    assert!(!g.pending());
}

#[test]
fn a_corrupt_pending_confirmation_means_roll_back() {
    require_root!();
    let mut g = Gw::new("corrupt");
    g.start();
    g.edit();
    g.ok(&["apply", "--confirm-within", "300s"]);
    assert!(g.mgmt_is(NEW));
    g.kill9();
    // a torn write: what it said is lost
    let p = g.state.join("pending-confirm.json");
    assert!(p.exists());
    std::fs::write(&p, "{\"entry\": 2, \"dead").unwrap();
    g.start();
    assert!(g.mgmt_is(OLD), "{}\n{}", g.addrs("eth0.100"), g.log());
    assert!(!g.pending());
    assert!(
        g.log().contains("unreadable pending confirmation"),
        "{}",
        g.log()
    );
    // kept for a look, out of the way
    let aside: Vec<String> = std::fs::read_dir(&g.state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pending-confirm.json.corrupt"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(!p.exists());
}

#[test]
fn a_corrupt_live_sets_file_is_set_aside_with_a_warning_event() {
    require_root!();
    let mut g = Gw::new("sets");
    g.start();
    g.ok(&["set", "add", "web_nodes", "192.168.30.50"]);
    let p = g.state.join("live-sets.json");
    // a change is recorded in the journal first, folded into live-sets.json after the burst
    let journal = g.state.join("live-sets.journal");
    let recorded = || {
        std::fs::read_to_string(&p).unwrap_or_default()
            + &std::fs::read_to_string(&journal).unwrap_or_default()
    };
    assert!(recorded().contains("192.168.30.50"));
    // once the burst is over the journal is folded in: the change is in live-sets.json alone
    let t0 = Instant::now();
    while std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the journal was never folded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        std::fs::read_to_string(&p)
            .unwrap()
            .contains("192.168.30.50")
    );
    g.kill9();
    std::fs::write(&p, "{\"groups\": {\"web_nodes\": {\"added\": [\"192.168.3").unwrap();
    g.start();
    let aside: Vec<PathBuf> = std::fs::read_dir(&g.state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|n| {
            n.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("live-sets.json.corrupt")
        })
        .collect();
    assert_eq!(aside.len(), 1, "not set aside:\n{}", g.log());
    assert!(
        std::fs::read_to_string(&aside[0])
            .unwrap()
            .contains("192.168.3")
    );
    // a warning event, in the daemon's event stream
    let ev = g.ok(&["logs"]);
    assert!(
        ev.lines()
            .any(|l| l.contains("warning") && l.contains("live set")),
        "{ev}"
    );
    // the daemon goes on: set changes work and are kept again
    g.ok(&["set", "add", "web_nodes", "192.168.30.51"]);
    let l = recorded();
    assert!(l.contains("192.168.30.51"), "{l}");
    assert!(
        g.ok(&["set", "list", "web_nodes"])
            .contains("192.168.30.51"),
        "{}",
        g.log()
    );
}

#[test]
fn unconfirmed_applies_in_a_row_roll_back_to_the_last_confirmed_config() {
    require_root!();
    let mut g = Gw::new("row");
    g.start();
    let orig = g.edit();
    // a first unconfirmed apply (.254), then a second one on top of it (.253)
    g.ok(&["apply", "--confirm-within", "60s"]);
    assert!(g.mgmt_is(NEW));
    std::fs::write(
        &g.cfg,
        orig.replace(
            "gateway = \"192.168.100.1\"",
            "gateway = \"192.168.100.253\"",
        ),
    )
    .unwrap();
    g.ok(&["apply", "--confirm-within", "2s"]);
    assert!(g.addrs("eth0.100").contains("192.168.100.253/24"));
    // neither was confirmed: back to the config the daemon started with, not to the first
    wait_for("the rollback", Duration::from_secs(10), || {
        g.addrs("eth0.100").contains(OLD)
    });
    assert!(!g.pending());
    assert!(g.mgmt_is(OLD), "{}", g.addrs("eth0.100"));
    assert_eq!(std::fs::read_to_string(&g.cfg).unwrap(), orig);
}
