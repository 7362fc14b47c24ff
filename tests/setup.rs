//! `bulkhead setup`: the answers file (config written, the operator's comments and other
//! sections kept, every bad answer named with its line), apply through a running daemon with
//! commit-confirm (rolled back and not saved when unconfirmed, saved and kept when
//! confirmed), and the interactive wizard driven through a pseudo-terminal.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");
static N: AtomicUsize = AtomicUsize::new(0);

fn shipped() -> PathBuf {
    common::root().join("overlay/etc/bulkhead/bulkhead.toml")
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fresh ed25519 public key line.
fn pubkey(dir: &Path) -> String {
    let k = dir.join(format!("id{}", N.fetch_add(1, Ordering::SeqCst)));
    let st = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "admin@setup-test",
            "-f",
        ])
        .arg(&k)
        .stdout(Stdio::null())
        .status();
    match st {
        Ok(s) if s.success() => std::fs::read_to_string(k.with_extension("pub"))
            .unwrap()
            .trim()
            .to_string(),
        Ok(s) => panic!("ssh-keygen failed: {s}"),
        Err(e) => {
            let (pkg, setup) = common::tool_source("ssh-keygen");
            panic!("needs ssh-keygen: install {pkg} ({setup}): {e}")
        }
    }
}

fn answers(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn good_answers(key: &str) -> String {
    format!(
        r#"# site answers
trunk = "eth0"
uplink = "eth1"
uplink_address = "203.0.113.2/24"
uplink_gateway = "203.0.113.1"
mgmt_vlan = 42
mgmt_address = "10.9.42.1/24"
admin_key = "{key}"
syslog = "10.9.42.10:1514"
syslog_transport = "udp"
"#
    )
}

#[test]
fn answers_file_writes_the_config_and_keeps_the_rest() {
    let d = common::TempDir::new("setup-file");
    let cfg = d.path().join("bulkhead.toml");
    std::fs::copy(shipped(), &cfg).unwrap();
    let save = d.path().join("data/bulkhead.toml");
    let key = pubkey(d.path());
    let a = answers(d.path(), "answers.toml", &good_answers(&key));
    let o = Command::new(BIN)
        .arg("-c")
        .arg(&cfg)
        .args(["setup", "--no-apply", "--from"])
        .arg(&a)
        .arg("--save")
        .arg(&save)
        .output()
        .unwrap();
    let text = out(&o);
    // NICs of the answers may be missing on the machine that prepares the config: a warning
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("vlan eth0.42 on eth0 id 42 address 10.9.42.1/24"),
        "{text}"
    );
    assert!(text.contains("management: 10.9.42.1 on eth0.42"), "{text}");
    // the current config is untouched, the new one is saved where asked
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        std::fs::read_to_string(shipped()).unwrap()
    );
    let new = std::fs::read_to_string(&save).unwrap();
    for want in [
        "# Bulkhead — the shipped default configuration.",
        "#   mgmt      VLAN 100  the only place the gateway is managed from",
        "# Server roles (seed: web, app and database tiers), as live sets.",
        "[alerts]",
        "name = \"public-https\"",
        "vlan = 42",
        "subnet = \"10.9.42.0/24\"",
        "gateway = \"10.9.42.1\"",
        "ranges = [\"10.9.42.127-10.9.42.254\"]",
        "address = \"203.0.113.2/24\"",
        "gateway = \"203.0.113.1\"",
        "host = \"10.9.42.10\"",
        "port = 1514",
        "transport = \"udp\"",
        "interface = \"eth0\"",
    ] {
        assert!(new.contains(want), "missing {want:?} in:\n{new}");
    }
    // nothing but the answered keys changed
    let old = std::fs::read_to_string(shipped()).unwrap();
    let changed: Vec<&str> = new
        .lines()
        .filter(|l| !old.lines().any(|o| o == *l))
        .collect();
    assert!(changed.len() <= 10, "changed lines: {changed:#?}");
    let dropped: Vec<&str> = old
        .lines()
        .filter(|l| !new.lines().any(|n| n == *l))
        .collect();
    assert!(dropped.len() <= 8, "dropped lines: {dropped:#?}");
    // it is a valid config
    let o = Command::new(BIN)
        .arg("-c")
        .arg(&save)
        .arg("check")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    // the key beside it, private, once even when setup runs twice
    let keys = d.path().join("data/authorized_keys");
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), format!("{key}\n"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let o = Command::new(BIN)
        .arg("-c")
        .arg(&save)
        .args(["setup", "--no-apply", "--from"])
        .arg(&a)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), format!("{key}\n"));
    // run again on its own output (saved in place): the same file
    assert_eq!(std::fs::read_to_string(&save).unwrap(), new);

    // syslog none removes the targets; a DHCP uplink loses its static gateway
    let a2 = answers(
        d.path(),
        "a2.toml",
        "syslog = \"none\"\nuplink_address = \"dhcp\"\n",
    );
    let o = Command::new(BIN)
        .arg("-c")
        .arg(&save)
        .args(["setup", "--no-apply", "--from"])
        .arg(&a2)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("syslog: no target"), "{}", out(&o));
    let t = std::fs::read_to_string(&save).unwrap();
    assert!(!t.contains("[[logging.targets]]") && !t.contains("203.0.113.1"));
    assert!(
        t.contains("address = \"dhcp\"") && t.contains("[logging]"),
        "{t}"
    );
}

#[test]
fn bad_answers_are_named_with_their_line() {
    let d = common::TempDir::new("setup-bad");
    let cfg = d.path().join("bulkhead.toml");
    std::fs::copy(shipped(), &cfg).unwrap();
    let a = answers(
        d.path(),
        "bad.toml",
        r#"mgmt_vlan = 5000
admin_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEhv9ZJ8"
trunc = "eth0"
uplink_address = "10.0.0.0/24"
mgmt_address = "10.9.42.1"
syslog = "logs.example.com:514"
syslog_transport = "smoke"
uplink_gateway = 7
"#,
    );
    let o = Command::new(BIN)
        .arg("-c")
        .arg(&cfg)
        .args(["setup", "--no-apply", "--from"])
        .arg(&a)
        .output()
        .unwrap();
    let e = out(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    let f = a.display().to_string();
    for want in [
        format!("{f}:1: mgmt_vlan: VLAN id 5000 is out of range 1-4094"),
        format!("{f}:2: admin_key: "),
        format!("{f}:3: trunc: unknown key"),
        format!("{f}:4: uplink_address: `10.0.0.0/24` is the network address"),
        format!("{f}:5: mgmt_address: `10.9.42.1` is not an address with a prefix"),
        format!("{f}:6: syslog: `logs.example.com` must be an IPv4 address"),
        format!("{f}:7: syslog_transport: unknown transport `smoke`"),
        format!("{f}:8: uplink_gateway: must be a string"),
    ] {
        assert!(e.contains(&want), "missing {want:?} in:\n{e}");
    }
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        std::fs::read_to_string(shipped()).unwrap()
    );

    // keys that are not keys
    for (bad, why) in [
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "not a supported key type"),
        ("ssh-ed25519", "no key data"),
        ("ssh-ed25519 not*base64", "not valid base64"),
        (
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIHn1l8zC2yq4Qw0cVvQxQk0q1m9X2b3c4d5e6f7g8h9i",
            "not a ssh-rsa key",
        ),
    ] {
        let a = answers(d.path(), "key.toml", &format!("admin_key = \"{bad}\"\n"));
        let o = Command::new(BIN)
            .arg("-c")
            .arg(&cfg)
            .args(["setup", "--no-apply", "--from"])
            .arg(&a)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", out(&o));
        assert!(
            out(&o).contains("key.toml:1: admin_key: ") && out(&o).contains(why),
            "{bad}: {}",
            out(&o)
        );
        assert!(!d.path().join("authorized_keys").exists());
    }

    // not TOML
    let a = answers(d.path(), "broken.toml", "trunk = \"eth0\"\nuplink = eth1\n");
    let o = Command::new(BIN)
        .arg("-c")
        .arg(&cfg)
        .args(["setup", "--no-apply", "--from"])
        .arg(&a)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(out(&o).contains("broken.toml:2:"), "{}", out(&o));
}

#[test]
fn an_invalid_result_is_reported_with_its_key_path_and_not_written() {
    let d = common::TempDir::new("setup-invalid");
    let cfg = d.path().join("bulkhead.toml");
    std::fs::copy(shipped(), &cfg).unwrap();
    let a = answers(d.path(), "a.toml", "mgmt_vlan = 10\n");
    let o = Command::new(BIN)
        .arg("-c")
        .arg(&cfg)
        .args(["setup", "--no-apply", "--from"])
        .arg(&a)
        .output()
        .unwrap();
    let e = out(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("segments.mgmt.vlan: VLAN id 10 is already used by segment `dmz`"),
        "{e}"
    );
    assert!(e.contains("nothing was written"), "{e}");
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        std::fs::read_to_string(shipped()).unwrap()
    );

    // one NIC cannot be both trunk and uplink; a missing NIC is an error when applying
    let a = answers(d.path(), "b.toml", "trunk = \"eth1\"\n");
    let o = Command::new(BIN)
        .arg("-c")
        .arg(&cfg)
        .args(["setup", "--yes", "--from"])
        .arg(&a)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(
        out(&o).contains("uplink: `eth1` is the trunk NIC too"),
        "{}",
        out(&o)
    );
    let a = answers(d.path(), "c.toml", "uplink = \"bhsu-nonic9\"\n");
    let o = Command::new(BIN)
        .arg("-c")
        .arg(&cfg)
        .args(["setup", "--yes", "--from"])
        .arg(&a)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(
        out(&o).contains("uplink: no NIC named `bhsu-nonic9` on this machine"),
        "{}",
        out(&o)
    );
}

#[test]
fn applying_without_a_terminal_needs_yes() {
    let d = common::TempDir::new("setup-yes");
    let cfg = d.path().join("bulkhead.toml");
    std::fs::copy(shipped(), &cfg).unwrap();
    let a = answers(d.path(), "a.toml", "syslog = \"none\"\n");
    let o = Command::new(BIN)
        .arg("-c")
        .arg(&cfg)
        .args(["setup", "--from"])
        .arg(&a)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(out(&o).contains("pass --yes"), "{}", out(&o));
    assert!(!d.path().join("bulkhead.toml.candidate").exists());
    // and the wizard needs a terminal
    let o = Command::new(BIN)
        .arg("-c")
        .arg(&cfg)
        .arg("setup")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(out(&o).contains("--from FILE"), "{}", out(&o));
}

// ---- a gateway in a network namespace ------------------------------------------------

/// Plain veth ports named like the shipped config's links (the kernel here has no 802.1Q;
/// `--lab` runs VLAN segments as ports of the same name), peers in a second namespace.
struct Gw {
    ns: String,
    peer: String,
    dir: common::TempDir,
    cfg: PathBuf,
    save: PathBuf,
    state: PathBuf,
    daemon: Option<Child>,
}

const PORTS: &[&str] = &[
    "eth0", "eth1", "eth0.10", "eth0.20", "eth0.30", "eth0.100", "eth0.200", "eth0.42",
];

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().unwrap();
    assert!(o.status.success(), "ip {args:?}: {}", out(&o));
}

impl Gw {
    fn new(tag: &str) -> Gw {
        let id = format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let ns = format!("bhsu-{tag}-{id}");
        let peer = format!("bhsu-{tag}-{id}-p");
        let dir = common::TempDir::new(&format!("setup-{tag}"));
        let cfg = dir.path().join("etc/bulkhead.toml");
        std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
        std::fs::copy(shipped(), &cfg).unwrap();
        let g = Gw {
            save: dir.path().join("data/bulkhead.toml"),
            state: dir.path().join("state"),
            ns,
            peer,
            dir,
            cfg,
            daemon: None,
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
        std::fs::create_dir_all(g.save.parent().unwrap()).unwrap();
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

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).unwrap();
        let child = self
            .cmd(&["run"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let ready = self.state.join("ready");
        wait_for("the daemon to be ready", Duration::from_secs(30), || {
            ready.exists()
        });
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn addrs(&self, dev: &str) -> String {
        let o = Command::new("ip")
            .args(["-n", &self.ns, "-4", "-o", "addr", "show", "dev", dev])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn candidate(&self) -> PathBuf {
        self.dir.path().join("data/bulkhead.toml.candidate")
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

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn unconfirmed_setup_rolls_back_and_saves_nothing() {
    require_root!();
    let mut g = Gw::new("rb");
    g.start();
    assert!(g.addrs("eth0.100").contains("192.168.100.1/24"));
    // a key that was there before the setup stays whatever happens to the setup
    let kept = pubkey(g.dir.path());
    std::fs::write(
        g.dir.path().join("data/authorized_keys"),
        format!("{kept}\n"),
    )
    .unwrap();
    let key = pubkey(g.dir.path());
    let a = answers(g.dir.path(), "a.toml", &good_answers(&key));
    let o = g.run(&[
        "setup",
        "--yes",
        "--confirm-within",
        "3s",
        "--from",
        a.to_str().unwrap(),
        "--save",
        g.save.to_str().unwrap(),
    ]);
    let t = out(&o);
    assert!(o.status.success(), "{t}\n{}", g.log());
    assert!(t.contains("run `bulkhead confirm` within 3 s"), "{t}");
    // applied, through the daemon, and waiting
    assert!(g.addrs("eth0.42").contains("10.9.42.1/24"), "{t}");
    assert!(!g.addrs("eth0.100").contains("192.168.100.1"));
    assert!(
        !g.save.exists(),
        "the saved config must wait for the confirmation"
    );
    assert!(g.candidate().exists());
    let st = out(&g.run(&["status"]));
    assert!(st.contains("PENDING CONFIRMATION"), "{st}");
    // the key is there at once, to log in at the new address and confirm
    assert!(
        std::fs::read_to_string(g.dir.path().join("data/authorized_keys"))
            .unwrap()
            .contains(&key)
    );
    // nobody confirms: the previous config comes back and nothing is saved
    wait_for("the rollback", Duration::from_secs(15), || {
        g.addrs("eth0.100").contains("192.168.100.1/24")
    });
    // (eth0.42 is a plain port here, not a VLAN link the rollback would delete)
    wait_for("the candidate to go", Duration::from_secs(5), || {
        !g.candidate().exists()
    });
    assert!(!g.save.exists());
    assert_eq!(
        std::fs::read_to_string(&g.cfg).unwrap(),
        std::fs::read_to_string(shipped()).unwrap()
    );
    let c = g.run(&["confirm"]);
    assert!(!c.status.success(), "nothing is left to confirm");
    // the admin key the setup added goes with it; the one that was there stays
    let keys = std::fs::read_to_string(g.dir.path().join("data/authorized_keys")).unwrap();
    assert!(
        !keys.contains(&key),
        "the rolled-back setup's key is still there:\n{keys}"
    );
    assert!(keys.contains(&kept), "{keys}");
    assert!(
        g.log().contains("unconfirmed config discarded"),
        "{}",
        g.log()
    );
}

#[test]
fn confirmed_setup_is_saved_and_kept() {
    require_root!();
    let mut g = Gw::new("ok");
    g.start();
    let key = pubkey(g.dir.path());
    let a = answers(g.dir.path(), "a.toml", &good_answers(&key));
    let o = g.run(&[
        "setup",
        "--yes",
        "--confirm-within",
        "4s",
        "--from",
        a.to_str().unwrap(),
        "--save",
        g.save.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}\n{}", out(&o), g.log());
    assert!(g.addrs("eth0.42").contains("10.9.42.1/24"));
    // a second setup while the first waits (it starts again from the saved config): it
    // replaces the first one's candidate
    let b = answers(
        g.dir.path(),
        "b.toml",
        "mgmt_vlan = 42\nmgmt_address = \"10.9.42.2/24\"\n",
    );
    let o = g.run(&[
        "setup",
        "--yes",
        "--confirm-within",
        "4s",
        "--from",
        b.to_str().unwrap(),
        "--save",
        g.save.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}\n{}", out(&o), g.log());
    assert!(g.addrs("eth0.42").contains("10.9.42.2/24"));
    assert!(
        std::fs::read_to_string(g.candidate())
            .unwrap()
            .contains("gateway = \"10.9.42.2\"")
    );
    let c = g.run(&["confirm"]);
    assert!(c.status.success(), "{}", out(&c));
    assert!(
        out(&c).contains(&format!("confirmed; saved {}", g.save.display())),
        "{}",
        out(&c)
    );
    // saved where asked, the candidate gone, the running config follows
    let saved = std::fs::read_to_string(&g.save).unwrap();
    assert!(
        saved.contains("vlan = 42") && saved.contains("gateway = \"10.9.42.2\""),
        "{saved}"
    );
    assert!(!g.candidate().exists());
    let mut left: Vec<String> = std::fs::read_dir(g.save.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["authorized_keys", "bulkhead.toml"]);
    std::thread::sleep(Duration::from_secs(6));
    assert!(g.addrs("eth0.42").contains("10.9.42.2/24"), "{}", g.log());
    assert!(!g.addrs("eth0.100").contains("192.168.100.1"));
    let st = out(&g.run(&["status"]));
    assert!(!st.contains("PENDING"), "{st}");
    assert!(
        st.contains(&format!("config {}", g.save.display())),
        "the daemon runs the saved config now: {st}"
    );
    // a reload reads the saved config, not the one the daemon started with
    // SAFETY: kill(2) on the pid of the daemon this test started.
    unsafe {
        libc::kill(g.daemon.as_ref().unwrap().id() as i32, libc::SIGHUP);
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(g.addrs("eth0.42").contains("10.9.42.2/24"), "{}", g.log());
    assert!(g.log().contains("reloaded"), "{}", g.log());
}

// ---- the wizard, through a pseudo-terminal ---------------------------------------------

#[test]
fn wizard_over_a_terminal() {
    use expectrl::{Expect, Session};
    require_root!();
    let mut g = Gw::new("wiz");
    g.start();
    let key = pubkey(g.dir.path());
    let mut cmd = g.cmd(&[
        "setup",
        "--save",
        g.save.to_str().unwrap(),
        "--confirm-within",
        "60s",
    ]);
    cmd.env("TERM", "vt100");
    let mut p = Session::spawn(cmd).expect("spawn under a pty");
    p.set_expect_timeout(Some(Duration::from_secs(20)));
    let enter = "\r";
    let down = "\x1b[B";
    // the NICs it sees: ports, not lo, not the links the config makes
    p.expect("NICs on this machine:").unwrap();
    let cap = p.expect("Trunk NIC").unwrap();
    let listed = String::from_utf8_lossy(cap.before()).into_owned();
    assert!(
        listed.contains("eth0 ") && listed.contains("eth1 "),
        "{listed}"
    );
    assert!(
        !listed.contains("eth0.10") && !listed.contains(" lo "),
        "{listed}"
    );
    // trunk: eth0 is the current one, at the cursor
    p.send(enter).unwrap();
    p.expect("Uplink NIC").unwrap();
    // uplink: type to filter, then choose
    p.send("eth0.42").unwrap();
    p.send(enter).unwrap();
    p.expect("Uplink addressing").unwrap();
    // static
    p.send(down).unwrap();
    p.send(enter).unwrap();
    p.expect("Uplink address/prefix").unwrap();
    // a wrong answer is refused with the reason, then corrected
    p.send("203.0.113.0/24").unwrap();
    p.send(enter).unwrap();
    p.expect("network address").unwrap();
    for _ in 0..14 {
        p.send("\x7f").unwrap();
    }
    p.send("203.0.113.2/24").unwrap();
    p.send(enter).unwrap();
    p.expect("Uplink default gateway").unwrap();
    p.send("203.0.113.1").unwrap();
    p.send(enter).unwrap();
    p.expect("Management VLAN id").unwrap();
    p.send("5000").unwrap();
    p.send(enter).unwrap();
    p.expect("out of range").unwrap();
    for _ in 0..4 {
        p.send("\x7f").unwrap();
    }
    p.send("100").unwrap();
    p.send(enter).unwrap();
    p.expect("Gateway address/prefix on the management VLAN")
        .unwrap();
    p.send("10.9.100.1/24").unwrap();
    p.send(enter).unwrap();
    p.expect("Admin SSH public key").unwrap();
    p.send("ssh-dss AAAA").unwrap();
    p.send(enter).unwrap();
    p.expect("not a supported key type").unwrap();
    for _ in 0.."ssh-dss AAAA".len() {
        p.send("\x7f").unwrap();
    }
    p.send(&key).unwrap();
    p.send(enter).unwrap();
    p.expect("Syslog target").unwrap();
    p.send("10.9.100.10").unwrap();
    p.send(enter).unwrap();
    p.expect("Syslog transport").unwrap();
    p.send(enter).unwrap(); // the current one (tcp)
    p.expect("The new configuration").unwrap();
    p.expect("management: 10.9.100.1 on eth0.100").unwrap();
    p.expect("Show the full plan?").unwrap();
    p.send("y").unwrap();
    p.send(enter).unwrap();
    p.expect("# dhcp").unwrap();
    p.expect("Apply it now?").unwrap();
    p.send("y").unwrap();
    p.send(enter).unwrap();
    p.expect("run `bulkhead confirm` within 60 s").unwrap();
    p.expect(expectrl::Eof).unwrap();

    assert!(g.addrs("eth0.100").contains("10.9.100.1/24"), "{}", g.log());
    assert!(!g.save.exists());
    let c = g.run(&["confirm"]);
    assert!(c.status.success(), "{}", out(&c));
    let saved = std::fs::read_to_string(&g.save).unwrap();
    for want in [
        "interface = \"eth0.42\"",
        "address = \"203.0.113.2/24\"",
        "gateway = \"10.9.100.1\"",
        "host = \"10.9.100.10\"",
        "transport = \"tcp\"",
        "# Bulkhead — the shipped default configuration.",
    ] {
        assert!(saved.contains(want), "missing {want:?} in\n{saved}");
    }
    assert!(
        std::fs::read_to_string(g.dir.path().join("data/authorized_keys"))
            .unwrap()
            .contains(&key)
    );
}

#[test]
fn without_a_daemon_setup_applies_itself_and_a_watchdog_keeps_the_deadline() {
    require_root!();
    let g = Gw::new("nod");
    // a first apply, so that there is a config to return to
    let o = g.run(&["apply"]);
    assert!(o.status.success(), "{}", out(&o));
    let key = pubkey(g.dir.path());
    let a = answers(g.dir.path(), "a.toml", &good_answers(&key));
    let o = g.run(&[
        "setup",
        "--yes",
        "--confirm-within",
        "2s",
        "--from",
        a.to_str().unwrap(),
        "--save",
        g.save.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("within 2 s"), "{}", out(&o));
    assert!(g.addrs("eth0.42").contains("10.9.42.1/24"));
    assert!(g.candidate().exists() && !g.save.exists());
    wait_for("the watchdog's rollback", Duration::from_secs(15), || {
        g.addrs("eth0.100").contains("192.168.100.1/24") && !g.candidate().exists()
    });
    assert!(!g.save.exists());
    let keys = g.dir.path().join("data/authorized_keys");
    wait_for(
        "the key to go with the rollback",
        Duration::from_secs(5),
        || {
            !std::fs::read_to_string(&keys)
                .unwrap_or_default()
                .contains(&key)
        },
    );

    // again, confirmed this time; --confirm-within 0 would save at once
    let o = g.run(&[
        "setup",
        "--yes",
        "--from",
        a.to_str().unwrap(),
        "--save",
        g.save.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let c = g.run(&["confirm"]);
    assert!(c.status.success(), "{}", out(&c));
    assert!(
        std::fs::read_to_string(&g.save)
            .unwrap()
            .contains("vlan = 42")
    );
    assert!(!g.candidate().exists());
    assert!(g.addrs("eth0.42").contains("10.9.42.1/24"));
    // confirmed: its key stays
    assert!(std::fs::read_to_string(&keys).unwrap().contains(&key));
}

#[test]
fn wizard_asks_again_when_the_config_is_invalid_and_esc_changes_nothing() {
    use expectrl::{Expect, Session};
    require_root!();
    let g = Gw::new("wiz2");
    let key = pubkey(g.dir.path());
    let spawn = || {
        let mut cmd = g.cmd(&["setup", "--no-apply", "--save", g.save.to_str().unwrap()]);
        cmd.env("TERM", "vt100");
        let mut p = Session::spawn(cmd).expect("spawn under a pty");
        p.set_expect_timeout(Some(Duration::from_secs(20)));
        p
    };
    let mut p = spawn();
    let step = |p: &mut expectrl::session::OsSession, want: &str, answer: &str| {
        p.expect(want)
            .unwrap_or_else(|e| panic!("waiting for {want:?}: {e}"));
        p.send(answer).unwrap();
        p.send("\r").unwrap();
    };
    // first round: management on VLAN 10, which the DMZ has
    step(&mut p, "Trunk NIC", "");
    step(&mut p, "Uplink NIC", "");
    step(&mut p, "Uplink addressing", "");
    step(&mut p, "Management VLAN id", "10");
    step(&mut p, "Gateway address/prefix on the management VLAN", "");
    step(&mut p, "Admin SSH public key", &key);
    step(&mut p, "Syslog target", "");
    step(&mut p, "Syslog transport", "");
    p.expect("segments.mgmt.vlan: VLAN id 10 is already used by segment `dmz`")
        .unwrap();
    p.expect("go through the answers again").unwrap();
    // second round: the previous answers are the defaults; only the VLAN changes
    step(&mut p, "Trunk NIC", "");
    step(&mut p, "Uplink NIC", "");
    step(&mut p, "Uplink addressing", "");
    step(&mut p, "Management VLAN id (1-4094): (10)", "42");
    step(&mut p, "Gateway address/prefix on the management VLAN", "");
    step(&mut p, "Admin SSH public key", "");
    step(&mut p, "Syslog target", "");
    step(&mut p, "Syslog transport", "");
    step(&mut p, "Show the full plan?", "n");
    p.expect("setup: saved").unwrap();
    p.expect(expectrl::Eof).unwrap();
    let saved = std::fs::read_to_string(&g.save).unwrap();
    assert!(saved.contains("vlan = 42"), "{saved}");
    assert!(
        std::fs::read_to_string(g.dir.path().join("data/authorized_keys"))
            .unwrap()
            .contains(&key)
    );

    // Esc cancels: nothing is written
    let before = std::fs::read_to_string(&g.save).unwrap();
    let mut p = spawn();
    p.expect("Trunk NIC").unwrap();
    p.send("\x1b").unwrap();
    p.expect("cancelled; nothing was changed").unwrap();
    p.expect(expectrl::Eof).unwrap();
    assert_eq!(std::fs::read_to_string(&g.save).unwrap(), before);
}

#[test]
fn the_example_answers_file_makes_a_valid_config() {
    let d = common::TempDir::new("setup-example");
    let cfg = d.path().join("bulkhead.toml");
    std::fs::copy(shipped(), &cfg).unwrap();
    let o = Command::new(BIN)
        .arg("-c")
        .arg(&cfg)
        .args(["setup", "--no-apply", "--from"])
        .arg(common::root().join("examples/setup-answers.toml"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let o = Command::new(BIN)
        .arg("-c")
        .arg(&cfg)
        .arg("check")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let t = std::fs::read_to_string(&cfg).unwrap();
    assert!(t.contains("subnet = \"10.0.100.0/24\"") && t.contains("host = \"10.0.100.10\""));
}
