//! `bulkhead run` on a live kernel, driven through the lab's gateway namespace: drift is
//! repaired, a broken reload changes nothing, an unconfirmed apply is undone (also when it
//! moved the management address), live set changes need no reload, and a second apply
//! changes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn bh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(args)
        .output()
        .expect("run bulkhead")
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A lab running a private copy of a config, removed on drop.
struct Site {
    name: String,
    dir: common::TempDir,
    config: PathBuf,
}

impl Site {
    fn up(tag: &str, config: &str) -> Site {
        let name = format!("s{}{tag}", std::process::id());
        let dir = common::TempDir::new(tag);
        let cfg = dir.path().join("bulkhead.toml");
        std::fs::copy(common::root().join(config), &cfg).unwrap();
        let s = Site {
            name,
            dir,
            config: cfg,
        };
        ok(
            bh(&["-c", s.cfg(), "lab", "--name", &s.name, "up"]),
            "lab up",
        );
        s
    }

    fn cfg(&self) -> &str {
        self.config.to_str().unwrap()
    }

    fn gw(&self) -> String {
        format!("bhl-{}-gw", self.name)
    }

    fn state(&self) -> String {
        format!("/run/bulkhead-lab/{}/gateway", self.name)
    }

    fn in_gw(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.gw()])
            .args(args)
            .output()
            .unwrap()
    }

    /// bulkhead in the gateway namespace, on the running gateway's state.
    fn ctl(&self, args: &[&str]) -> Output {
        let st = self.state();
        let mut a = vec![
            env!("CARGO_BIN_EXE_bulkhead"),
            "-c",
            self.cfg(),
            "--lab",
            "--state-dir",
            &st,
        ];
        a.extend_from_slice(args);
        self.in_gw(&a)
    }

    fn table(&self) -> String {
        let o = self.in_gw(&["nft", "list", "table", "inet", "bulkhead"]);
        // counters move with traffic; the structure is what must not change
        let t = String::from_utf8_lossy(&o.stdout).into_owned();
        t.lines()
            .map(|l| match l.find("counter packets") {
                Some(i) => {
                    let rest = &l[i..];
                    let end = rest.find(" bytes ").map(|j| j + 7).unwrap_or(rest.len());
                    let tail = &rest[end..];
                    let tail = tail.split_once(' ').map_or("", |(_, t)| t);
                    format!("{}counter {tail}", &l[..i])
                }
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn addrs(&self, dev: &str) -> String {
        String::from_utf8_lossy(
            &self
                .in_gw(&["ip", "-4", "-o", "addr", "show", "dev", dev])
                .stdout,
        )
        .into_owned()
    }

    fn gateway_pid(&self) -> i32 {
        std::fs::read_to_string(Path::new(&self.state()).join("ready"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(format!("/run/bulkhead-lab/{}/gateway.log", self.name))
            .unwrap_or_default()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = bh(&["lab", "--name", &self.name, "down"]);
        let _ = &self.dir;
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

#[test]
fn drift_is_repaired_within_a_second() {
    require_root!();
    // The check runs every second; the limits leave room for a loaded machine (the test
    // proves the repair, not its speed).
    let limit = Duration::from_secs(10);
    let s = Site::up("drift", "overlay/etc/bulkhead/bulkhead.toml");
    let table = s.table();
    // a removed address
    ok(
        s.in_gw(&["ip", "addr", "del", "192.168.20.1/24", "dev", "eth0.20"]),
        "ip addr del",
    );
    let t = wait_for("address restored", limit, || {
        s.addrs("eth0.20").contains("192.168.20.1/24")
    });
    eprintln!("address restored after {t:?}");
    // a link set down
    ok(
        s.in_gw(&["ip", "link", "set", "eth0.30", "down"]),
        "ip link set down",
    );
    wait_for("link up again", limit, || {
        String::from_utf8_lossy(&s.in_gw(&["ip", "-o", "link", "show", "eth0.30"]).stdout)
            .contains(",UP")
    });
    // a deleted table
    ok(
        s.in_gw(&["nft", "delete", "table", "inet", "bulkhead"]),
        "nft delete table",
    );
    let t = wait_for("table restored", limit, || s.table() == table);
    eprintln!("table restored after {t:?}");
    // a flushed chain
    ok(
        s.in_gw(&["nft", "flush", "chain", "inet", "bulkhead", "forward"]),
        "nft flush chain",
    );
    wait_for("chain restored", limit, || s.table() == table);
    assert!(s.log().contains("drift repaired"), "{}", s.log());
}

#[test]
fn sighup_with_a_broken_config_changes_nothing_and_a_good_one_reloads() {
    require_root!();
    let s = Site::up("hup", "overlay/etc/bulkhead/bulkhead.toml");
    let before = s.table();
    let good = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, good.replace("vlan = 10\n", "vlan = 5000\n")).unwrap();
    let pid = s.gateway_pid();
    unsafe {
        libc_kill(pid, 1);
    }
    wait_for("reload refused in the log", Duration::from_secs(5), || {
        s.log().contains("reload refused")
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        before,
        s.table(),
        "the ruleset changed after a broken reload"
    );
    assert!(
        s.log().contains("VLAN id 5000 is out of range 1-4094"),
        "{}",
        s.log()
    );
    // a good change is picked up
    std::fs::write(
        &s.config,
        good.replace(
            "ports = [80, 443]\n\n[[rules]]\nname = \"internal-to-server-db\"",
            "ports = [80, 443, 8443]\n\n[[rules]]\nname = \"internal-to-server-db\"",
        ),
    )
    .unwrap();
    unsafe {
        libc_kill(pid, 1);
    }
    wait_for("reloaded", Duration::from_secs(5), || {
        s.table().contains("tcp dport { 80, 443, 8443 }")
    });
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn an_unconfirmed_apply_is_undone_even_when_it_moved_the_management_address() {
    require_root!();
    let s = Site::up("confirm", "overlay/etc/bulkhead/bulkhead.toml");
    let before = s.table();
    let orig = std::fs::read_to_string(&s.config).unwrap();
    // move the management gateway address
    let moved = orig.replace(
        "gateway = \"192.168.100.1\"",
        "gateway = \"192.168.100.254\"",
    );
    std::fs::write(&s.config, &moved).unwrap();
    let out = ok(
        s.ctl(&["apply", "--confirm-within", "3s"]),
        "apply --confirm-within",
    );
    assert!(out.contains("bulkhead confirm"), "{out}");
    assert!(s.addrs("eth0.100").contains("192.168.100.254/24"));
    assert!(!s.addrs("eth0.100").contains("192.168.100.1/24"));
    let st = ok(s.ctl(&["status"]), "status");
    assert!(st.contains("PENDING CONFIRMATION"), "{st}");
    // nobody confirms: the previous config comes back
    let t = wait_for(
        "management address restored",
        Duration::from_secs(6),
        || {
            let a = s.addrs("eth0.100");
            a.contains("192.168.100.1/24") && !a.contains("192.168.100.254/24")
        },
    );
    eprintln!("restored {t:?} after the apply returned (window 3 s)");
    wait_for("table restored", Duration::from_secs(2), || {
        s.table() == before
    });
    // the config file is the restored one again (a restart must not bring the rejected one
    // back); the rejected one is kept beside it. (The status answers once the rollback is
    // done.)
    let st = ok(s.ctl(&["status"]), "status");
    assert!(!st.contains("PENDING CONFIRMATION"), "{st}");
    assert_eq!(std::fs::read_to_string(&s.config).unwrap(), orig);
    let rejected = s.dir.path().join("bulkhead.toml.rejected");
    assert_eq!(std::fs::read_to_string(&rejected).unwrap(), moved);
    // confirmed within the window: it stays
    std::fs::write(&s.config, &moved).unwrap();
    ok(s.ctl(&["apply", "--confirm-within", "3s"]), "apply again");
    ok(s.ctl(&["confirm"]), "confirm");
    std::thread::sleep(Duration::from_secs(4));
    assert!(s.addrs("eth0.100").contains("192.168.100.254/24"));
    // and rollback on demand goes back, the file too
    ok(s.ctl(&["rollback"]), "rollback");
    assert!(s.addrs("eth0.100").contains("192.168.100.1/24"));
    assert_eq!(std::fs::read_to_string(&s.config).unwrap(), orig);
}

#[test]
fn a_second_apply_changes_nothing_and_sets_change_without_reload() {
    require_root!();
    let s = Site::up("idem", "overlay/etc/bulkhead/bulkhead.toml");
    let out = ok(s.ctl(&["apply"]), "apply");
    assert!(out.contains("apply: no changes"), "{out}");
    let diff = ok(s.ctl(&["diff"]), "diff");
    assert!(diff.contains("diff: no changes"), "{diff}");
    // internal client -> db host: denied by the gateway until the client joins web_nodes?
    // Use the dmz_web group: dmz_web -> app_nodes:8080 is allowed; add the dmz client to it.
    let probe = |from_ns: &str, bind: &str, dst: &str| {
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                from_ns,
                env!("CARGO_BIN_EXE_bulkhead"),
                "lab",
                "probe",
                "--bind",
                bind,
                dst,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).contains(" ok")
    };
    let client = format!("bhl-{}-c-dmz", s.name);
    assert!(
        !probe(&client, "192.168.10.100", "tcp:192.168.30.20:8080"),
        "denied before set add"
    );
    let before_gen = ok(s.ctl(&["status", "--format", "json"]), "status");
    ok(
        s.ctl(&["set", "add", "dmz_web", "192.168.10.100"]),
        "set add",
    );
    let listed = ok(s.ctl(&["set", "list", "dmz_web"]), "set list");
    assert!(listed.contains("192.168.10.100"), "{listed}");
    // the app host's own firewall must let the new member in too
    let app = format!("bhl-{}-g-app_nodes", s.name);
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            &app,
            "nft",
            "add",
            "element",
            "inet",
            "bulkhead_host",
            "dmz_web",
            "{ 192.168.10.100 }",
        ])
        .output();
    assert!(
        probe(&client, "192.168.10.100", "tcp:192.168.30.20:8080"),
        "allowed after set add"
    );
    // let a few drift checks pass: a live set change is not drift and causes no reload
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let after_gen = ok(s.ctl(&["status", "--format", "json"]), "status");
    let g = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap()["generation"].clone();
    assert_eq!(g(&before_gen), g(&after_gen), "set add must not reload");
    let last = |t: &str| {
        serde_json::from_str::<serde_json::Value>(t).unwrap()["last_apply"]["what"].clone()
    };
    assert_eq!(
        last(&before_gen),
        last(&after_gen),
        "set add must not cause a repair"
    );
    // kept by the next apply
    ok(s.ctl(&["apply"]), "apply");
    assert!(ok(s.ctl(&["set", "list", "dmz_web"]), "set list").contains("192.168.10.100"));
    ok(
        s.ctl(&["set", "del", "dmz_web", "192.168.10.100"]),
        "set del",
    );
    assert!(
        !probe(&client, "192.168.10.100", "tcp:192.168.30.20:8080"),
        "denied after set del"
    );
}

/// A box plugged into an existing network: the uplink takes its address by DHCP from an
/// upstream router (here another Bulkhead serving DHCP on its segment).
#[test]
fn the_uplink_takes_its_address_by_dhcp() {
    require_root!();
    let up = common::Netns::new("upstream");
    let gw = common::Netns::new("gwdhcp");
    let dir = common::TempDir::new("uplink");
    // wiring: upstream down0 <-> gateway eth1; spare ports for the other ends
    let tag = std::process::id() % 100000;
    let (a, b) = (format!("bu{tag}a"), format!("bu{tag}b"));
    for (cmd, what) in [
        (
            vec!["ip", "link", "add", &a, "type", "veth", "peer", "name", &b],
            "veth",
        ),
        (vec!["ip", "link", "set", &a, "netns", &up.name], "move a"),
        (vec!["ip", "link", "set", &b, "netns", &gw.name], "move b"),
    ] {
        let st = Command::new(cmd[0]).args(&cmd[1..]).status().unwrap();
        assert!(st.success(), "{what}");
    }
    up.ok(&["ip", "link", "set", &a, "name", "down0"]);
    gw.ok(&["ip", "link", "set", &b, "name", "eth1"]);
    up.ok(&[
        "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "wan0p",
    ]);
    gw.ok(&[
        "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p",
    ]);
    gw.ok(&[
        "ip", "link", "add", "adm0", "type", "veth", "peer", "name", "adm0p",
    ]);
    let upstream = dir.path().join("upstream.toml");
    std::fs::write(
        &upstream,
        "[uplink]\ninterface = \"wan0\"\naddress = \"198.19.0.2/30\"\n\n[segments.office]\ninterface = \"down0\"\nsubnet = \"198.18.50.0/24\"\ngateway = \"198.18.50.1\"\nmanagement = true\n[segments.office.dhcp]\nranges = [\"198.18.50.100-198.18.50.150\"]\n",
    )
    .unwrap();
    let box_cfg = dir.path().join("box.toml");
    std::fs::write(
        &box_cfg,
        "[uplink]\ninterface = \"eth1\"\naddress = \"dhcp\"\n\n[segments.lan]\ninterface = \"lan0\"\nsubnet = \"198.18.60.0/24\"\ngateway = \"198.18.60.1\"\ninternet = true\n\n[segments.adm]\ninterface = \"adm0\"\nsubnet = \"198.18.61.0/24\"\ngateway = \"198.18.61.1\"\nmanagement = true\n",
    )
    .unwrap();
    let spawn = |ns: &common::Netns, cfg: &Path, state: &str| {
        let sd = dir.path().join(state);
        let log = std::fs::File::create(dir.path().join(format!("{state}.log"))).unwrap();
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                env!("CARGO_BIN_EXE_bulkhead"),
                "-c",
                cfg.to_str().unwrap(),
                "--state-dir",
                sd.to_str().unwrap(),
                "run",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            unsafe {
                libc_kill(self.0.id() as i32, 15);
            }
            let _ = self.0.wait();
        }
    }
    let _upstream = Kill(spawn(&up, &upstream, "upstream"));
    wait_for("upstream ready", Duration::from_secs(10), || {
        dir.path().join("upstream/ready").exists()
    });
    let _gw = Kill(spawn(&gw, &box_cfg, "box"));
    let t = wait_for("uplink leased", Duration::from_secs(15), || {
        String::from_utf8_lossy(
            &gw.run(&["ip", "-4", "-o", "addr", "show", "dev", "eth1"])
                .stdout,
        )
        .contains("198.18.50.100/24")
    });
    eprintln!("uplink leased after {t:?}");
    // the client's script sets the address first, the default route right after it
    wait_for("the uplink's default route", Duration::from_secs(5), || {
        gw.ok(&["ip", "-4", "route", "show", "default"])
            .contains("via 198.18.50.1 dev eth1")
    });
    let leases = String::from_utf8_lossy(
        &Command::new(env!("CARGO_BIN_EXE_bulkhead"))
            .args([
                "-c",
                upstream.to_str().unwrap(),
                "--state-dir",
                dir.path().join("upstream").to_str().unwrap(),
                "leases",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(leases.contains("198.18.50.100"), "{leases}");

    // A reload that makes the uplink static stops the DHCP client (it would otherwise keep
    // putting leases on the interface)
    let udhcpc_children = |pid: u32| -> usize {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                let p = e.path();
                let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1))
                    .and_then(|x| x.parse::<u32>().ok());
                ppid == Some(pid)
                    && std::fs::read(p.join("cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).contains("udhcpc"))
                        .unwrap_or(false)
            })
            .count()
    };
    let daemon = _gw.0.id();
    assert_eq!(udhcpc_children(daemon), 1, "the uplink DHCP client runs");
    std::fs::write(
        &box_cfg,
        "[uplink]\ninterface = \"eth1\"\naddress = \"198.18.50.9/24\"\ngateway = \"198.18.50.1\"\n\n[segments.lan]\ninterface = \"lan0\"\nsubnet = \"198.18.60.0/24\"\ngateway = \"198.18.60.1\"\ninternet = true\n\n[segments.adm]\ninterface = \"adm0\"\nsubnet = \"198.18.61.0/24\"\ngateway = \"198.18.61.1\"\nmanagement = true\n",
    )
    .unwrap();
    unsafe {
        libc_kill(daemon as i32, 1);
    }
    wait_for(
        "the uplink DHCP client stopped after the reload",
        Duration::from_secs(10),
        || udhcpc_children(daemon) == 0,
    );
}
