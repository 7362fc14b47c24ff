//! The durable record of live set changes through a real `bulkhead run` (nftables in a
//! network namespace, tests/configs/apply6.toml): a `set add`/`set del` that was answered
//! survives kill -9 of the daemon and a lost kernel ruleset, and is loaded again at the
//! restart; a journal whose last line was torn by a crash still starts, keeps the changes
//! before it and names the file and line; a set change makes the daemon run no `nft`
//! listing of the table, and its journal is folded into `live-sets.json` once the burst of
//! changes is over.
//!
//! `BULKHEAD_TEST_BIN` picks the binary under test. Needs root, `ip` and nft. Only processes started here are killed, by pid; the namespace
//! is removed on drop. Addresses: 198.18.0.0/15.

mod apply_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use apply_support::*;

/// The binary under test (`BULKHEAD_TEST_BIN` picks another, e.g. an older build).
fn bin() -> String {
    std::env::var("BULKHEAD_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_bulkhead").into())
}

struct Kid(Child);

impl Kid {
    /// SIGKILL, as a crash: nothing of the daemon's shutdown runs.
    fn kill9(mut self) {
        bulkhead::sys::proc::kill(self.0.id()).unwrap();
        let _ = self.0.wait();
    }
}

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
    dir: TempDir,
    /// A directory put first on the daemon's PATH (for an `nft` that logs its calls).
    path_first: Option<PathBuf>,
}

impl Site {
    fn new(tag: &str) -> Site {
        init();
        let gw = Ns::new(tag);
        for port in ["bhlan", "bhsrv", "bhup", "bhmgmt"] {
            gw.sh(&format!(
                "ip link add {port} type veth peer name {port}-p && ip link set {port}-p up"
            ));
        }
        let dir = TempDir::new(tag);
        std::fs::copy(config("apply6.toml"), dir.path().join("box.toml")).unwrap();
        Site {
            gw,
            dir,
            path_first: None,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn start(&self) -> Kid {
        let _ = std::fs::remove_file(self.state().join("ready"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.gw.name, &bin(), "-c"])
            .arg(self.dir.path().join("box.toml"))
            .arg("--state-dir")
            .arg(self.state())
            .arg("run")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(p) = &self.path_first {
            c.env(
                "PATH",
                format!("{}:{}", p.display(), std::env::var("PATH").unwrap()),
            );
        }
        let kid = Kid(c.spawn().unwrap());
        let ready = self.state().join("ready");
        let end = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&ready).is_ok_and(|s| s.trim().parse::<u32>().is_ok()) {
            assert!(
                Instant::now() < end,
                "the daemon never got ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        kid
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.gw.name, &bin(), "-c"])
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

    /// The elements of a set as the kernel has them.
    fn kernel_set(&self, set: &str) -> String {
        self.gw
            .sh(&format!("nft list set inet bulkhead {set}"))
            .replace(['\n', '\t'], " ")
    }
}

fn journal(st: &Path) -> PathBuf {
    st.join("live-sets.journal")
}

#[test]
fn an_answered_set_change_survives_kill_9_and_a_lost_ruleset() {
    let s = Site::new("sjk9");
    let run = s.start();
    s.ok(&["set", "add", "web_clients", "198.18.1.20", "198.18.1.22"]);
    s.ok(&["set", "del", "web_clients", "198.18.1.10"]);
    // answered: the daemon dies at once, and the kernel's ruleset is lost (a power cut)
    run.kill9();
    s.gw.sh("nft delete table inet bulkhead");
    let _run = s.start();
    let k = s.kernel_set("web_clients");
    for a in ["198.18.1.20", "198.18.1.22"] {
        assert!(
            k.contains(a),
            "{a} is not in the kernel set after the restart: {k}"
        );
    }
    assert!(
        !k.contains("198.18.1.10 ") && !k.contains("198.18.1.10,") && !k.contains("198.18.1.10}"),
        "the deleted member is back after the restart: {k}"
    );
    let l = s.ok(&["set", "list", "web_clients"]);
    assert!(
        l.contains("198.18.1.20") && l.contains("198.18.1.22"),
        "{l}"
    );
    assert!(!l.contains("198.18.1.10\n"), "{l}");
}

#[test]
fn a_torn_journal_line_is_named_and_the_changes_before_it_are_kept() {
    let s = Site::new("sjtorn");
    let run = s.start();
    s.ok(&["set", "add", "web_clients", "198.18.1.30"]);
    run.kill9();
    // a crash in the middle of the next append: half a record, no end of line
    let j = journal(&s.state());
    let mut text = std::fs::read_to_string(&j).unwrap_or_default();
    assert_eq!(
        text.lines().count(),
        1,
        "one record in the journal after one answered change: {text:?}"
    );
    text.push_str("{\"op\":\"add\",\"group\":\"web_clients\",\"addrs\":[\"198.18.1.3");
    std::fs::write(&j, text).unwrap();
    s.gw.sh("nft delete table inet bulkhead");
    let _run = s.start();
    let log = s.log();
    assert!(
        log.contains(&format!("{}:2: torn record", j.display())),
        "the torn line is not named with its file and line:\n{log}"
    );
    let k = s.kernel_set("web_clients");
    assert!(
        k.contains("198.18.1.30"),
        "the change before the torn line is lost: {k}"
    );
    assert!(
        !k.contains("198.18.1.3 ") && !k.contains("198.18.1.3,") && !k.contains("198.18.1.3}"),
        "{k}"
    );
    // and the journal works on: the next change is recorded and kept
    s.ok(&["set", "add", "web_clients", "198.18.1.34"]);
    let l = s.ok(&["set", "list", "web_clients"]);
    assert!(
        l.contains("198.18.1.30") && l.contains("198.18.1.34"),
        "{l}"
    );
}

/// After a set change the daemon neither lists the table with `nft` (the kernel's ruleset
/// generation says nothing else changed) nor delays the record: once the changes stop, the
/// applied state has the new members and the journal is folded into `live-sets.json`.
#[test]
fn a_set_change_needs_no_nft_listing_and_is_folded_after_the_burst() {
    let mut s = Site::new("sjnft");
    let shim = s.dir.path().join("bin");
    std::fs::create_dir_all(&shim).unwrap();
    let calls = s.dir.path().join("nft-calls");
    let real = sh("command -v nft").trim().to_string();
    std::fs::write(
        shim.join("nft"),
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec {real} \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    sh(&format!("chmod 755 {}", shim.join("nft").display()));
    s.path_first = Some(shim);
    let _run = s.start();
    let listed = || {
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("list table"))
            .count()
    };
    // the first check after the apply lists the table once (the shim sees the daemon's nft)
    wait_for(
        "the first listing after the apply",
        Duration::from_secs(20),
        || listed() >= 1,
    );
    std::thread::sleep(Duration::from_millis(1500));
    let before = listed();
    // (every other address: adjacent ones would merge into a range)
    for i in (40..=50).step_by(2) {
        s.ok(&["set", "add", "web_clients", &format!("198.18.1.{i}")]);
    }
    s.ok(&["set", "del", "web_clients", "198.18.1.50"]);
    // the burst is over: a few drift checks (one a second), and the record of the changes
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(
        listed(),
        before,
        "the daemon listed the table after set changes: {}",
        std::fs::read_to_string(&calls).unwrap_or_default()
    );
    let st = s.state();
    wait_for(
        "the journal folded after the burst",
        Duration::from_secs(20),
        || std::fs::metadata(journal(&st)).is_ok_and(|m| m.len() == 0),
    );
    let snap = std::fs::read_to_string(st.join("live-sets.json")).unwrap();
    for i in (40..=48).step_by(2) {
        assert!(snap.contains(&format!("198.18.1.{i}/32")), "{snap}");
    }
    let applied = std::fs::read_to_string(st.join("apply/current/firewall.json")).unwrap();
    assert!(
        applied.contains("198.18.1.48"),
        "the applied state lacks the members"
    );
    assert!(
        !applied.contains("198.18.1.50"),
        "the applied state kept a deleted member"
    );
    let log = s.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("drift:") && l.contains("table inet bulkhead")),
        "a set change counted as drift of the firewall:\n{log}"
    );
    // nothing was missed: the kernel agrees
    let k = s.kernel_set("web_clients");
    assert!(
        k.contains("198.18.1.48") && !k.contains("198.18.1.50"),
        "{k}"
    );
}
