//! The `bulkhead` binary as an operator runs it: exit codes, output, help.

mod common;

use std::process::{Command, Output};

fn bh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(args)
        .output()
        .expect("run bulkhead")
}

fn shipped() -> String {
    common::root()
        .join("overlay/etc/bulkhead/bulkhead.toml")
        .to_string_lossy()
        .into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn every_subcommand_has_help() {
    let o = bh(&["--help"]);
    assert!(o.status.success());
    let top = stdout(&o);
    let subs: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .filter(|s| s != "help")
        .collect();
    assert!(subs.len() >= 4, "{top}");
    for s in subs {
        let o = bh(&[&s, "--help"]);
        assert!(o.status.success(), "{s} --help");
        assert!(stdout(&o).contains("--config"), "{s} --help lacks --config");
    }
}

#[test]
fn check_reports_summary_or_every_error() {
    let o = bh(&["-c", &shipped(), "check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("ok: 5 segments, 4 groups, 9 rules, 2 port forwards"),
        "{}",
        stdout(&o)
    );

    let dir = common::TempDir::new("cli");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[uplink]\ninterface = \"wan0\"\n\n[segments.a]\ninterface = \"lan0\"\nsubnet = \"198.18.1.0/24\"\ngateway = \"198.18.2.1\"\nvlan = 5000\n",
    )
    .unwrap();
    let o = bh(&["-c", bad.to_str().unwrap(), "check"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    let file = bad.to_str().unwrap();
    assert!(
        e.contains(&format!(
            "{file}:7:11: segments.a.gateway: gateway 198.18.2.1 is outside"
        )),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "{file}:5:13: segments.a.interface: a segment is either a VLAN"
        )),
        "{e}"
    );
    assert!(e.contains(&format!("{file}: 2 errors")), "{e}");

    let o = bh(&["-c", "/nonexistent/bulkhead.toml", "check"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read the file"));
}

#[test]
fn plan_is_deterministic_and_only_firewall_is_the_script() {
    let a = bh(&["-c", &shipped(), "plan"]);
    let b = bh(&["-c", &shipped(), "plan"]);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    let fw = stdout(&bh(&["-c", &shipped(), "plan", "--only", "firewall"]));
    assert!(fw.starts_with("#!/usr/sbin/nft -f\n"), "{fw}");
    assert!(!fw.contains("# links"));
    let golden =
        std::fs::read_to_string(common::root().join("tests/golden/out/shipped.nft")).unwrap();
    assert_eq!(fw, golden);
    let ipt = stdout(&bh(&[
        "-c",
        &shipped(),
        "plan",
        "--only",
        "firewall",
        "--backend",
        "iptables",
    ]));
    assert!(ipt.contains("*filter") && ipt.contains("create bh-web_nodes hash:net"));
    let json = stdout(&bh(&["-c", &shipped(), "plan", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["links"].as_array().unwrap().len(), 7);
    assert_eq!(v["dhcp"].as_array().unwrap().len(), 5);
    let links = stdout(&bh(&["-c", &shipped(), "plan", "--only", "links"]));
    assert!(
        links.contains("vlan eth0.100 on eth0 id 100 address 192.168.100.1/24 up  # segment:mgmt"),
        "{links}"
    );
}

#[test]
fn explain_names_the_rule_and_its_line() {
    let cfg = shipped();
    let e = |from: &str, to: &str, proto: &str, port: Option<&str>| {
        let mut args = vec![
            "-c",
            cfg.as_str(),
            "explain",
            "--from",
            from,
            "--to",
            to,
            "--proto",
            proto,
        ];
        if let Some(p) = port {
            args.extend(["--port", p]);
        }
        bh(&args)
    };
    let o = e("192.168.20.50", "192.168.10.10", "tcp", Some("443"));
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(
        text.starts_with("ACCEPT by rule internal-to-dmz-web ("),
        "{text}"
    );
    assert!(text.contains("bulkhead.toml:123)"), "{text}");

    let o = e("192.168.200.77", "192.168.20.50", "tcp", Some("22"));
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).starts_with("DROP by default drop of chain forward"));

    let o = e("192.168.20.50", "192.168.100.1", "tcp", Some("22"));
    assert_eq!(
        o.status.code(),
        Some(1),
        "SSH from internal must be dropped"
    );

    let o = e("192.168.100.20", "192.168.100.1", "tcp", Some("22"));
    assert!(o.status.success(), "SSH from mgmt must be accepted");

    let o = e("192.168.30.50", "198.51.100.7", "udp", Some("123"));
    assert!(
        stdout(&o).contains("egress dns") || stdout(&o).contains("egress minimal_os:server"),
        "{}",
        stdout(&o)
    );

    let o = e("192.168.30.50", "198.51.100.7", "tcp", None);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--port is needed"));

    let o = bh(&[
        "-c",
        &cfg,
        "explain",
        "--from",
        "192.168.20.5",
        "--to",
        "192.168.10.10",
        "--proto",
        "icmp",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["verdict"], "drop");
}

#[test]
fn hostrules_for_a_group_and_unknown_group() {
    let o = bh(&["-c", &shipped(), "hostrules", "--role", "db_nodes"]);
    assert!(o.status.success());
    let t = stdout(&o);
    assert!(
        t.contains(
            "ip saddr @app_nodes tcp dport { 3306, 5432 } counter accept comment \"rule:app-to-db\""
        ),
        "{t}"
    );
    let o = bh(&["-c", &shipped(), "hostrules", "--role", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no group named `nope`"));
}

#[test]
fn leases_output_escapes_client_text() {
    use bulkhead::dhcp::leases::{LeaseStore, StoreOptions};
    use bulkhead::dhcp::{Lease, LeaseState};
    let state = tempfile::tempdir().unwrap();
    // A record written before host names were cleaned on input.
    let (store, _) = LeaseStore::open(&state.path().join("dhcp"), StoreOptions::default()).unwrap();
    store
        .commit(vec![Lease {
            segment: "guest".into(),
            addr: "198.18.9.10".parse().unwrap(),
            mac: [2, 0, 0, 0, 0, 9],
            client_id: None,
            hostname: Some("pc\n<13>forged\u{1b}[2J\u{1b}]0;x\u{7}".into()),
            group: None,
            expires: 4_000_000_000,
            state: LeaseState::Bound,
        }])
        .wait_blocking()
        .unwrap();
    store.close();
    let dir = state.path().to_str().unwrap();
    let o = bh(&["-c", &shipped(), "--state-dir", dir, "leases"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = stdout(&o);
    assert!(!t.contains('\u{1b}') && !t.contains('\u{7}'), "{t:?}");
    assert_eq!(t.lines().count(), 3, "{t:?}");
    assert!(
        t.lines()
            .nth(1)
            .unwrap()
            .ends_with(r"pc\x0a<13>forged\x1b[2J\x1b]0;x\x07"),
        "{t:?}"
    );
    // JSON keeps the text as JSON escapes.
    let o = bh(&[
        "-c",
        &shipped(),
        "--state-dir",
        dir,
        "leases",
        "--format",
        "json",
    ]);
    let t = stdout(&o);
    assert!(!t.contains('\u{1b}') && !t.contains('\u{7}'), "{t:?}");
    assert!(
        t.contains(r#""pc\n<13>forged\u001b[2J\u001b]0;x\u0007""#),
        "{t}"
    );
}

#[test]
fn management_address_with_ssh_port_is_where_dropbear_listens() {
    // the init starts dropbear on exactly this ADDR:PORT
    let o = bh(&["-c", &shipped(), "management-address"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let addr = stdout(&o).trim().to_string();
    assert!(addr.parse::<std::net::Ipv4Addr>().is_ok(), "{addr}");
    let o = bh(&["-c", &shipped(), "management-address", "--ssh"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{addr}:22\n"));

    let dir = common::TempDir::new("cli-ssh");
    let cfg = dir.path().join("ssh.toml");
    let text = std::fs::read_to_string(shipped()).unwrap();
    assert!(text.contains("\nssh_port = 22\n"));
    std::fs::write(
        &cfg,
        text.replace("\nssh_port = 22\n", "\nssh_port = 2222\n"),
    )
    .unwrap();
    let o = bh(&["-c", cfg.to_str().unwrap(), "management-address", "--ssh"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{addr}:2222\n"));

    // a bad port is named with its place, and nothing is printed
    std::fs::write(
        &cfg,
        text.replace("\nssh_port = 22\n", "\nssh_port = 70000\n"),
    )
    .unwrap();
    let o = bh(&["-c", cfg.to_str().unwrap(), "management-address", "--ssh"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stdout(&o), "");
    assert!(stderr(&o).contains("management.ssh_port"), "{}", stderr(&o));
}

#[test]
fn upgrade_off_an_ab_disk_says_so() {
    // this host was not booted by the image's GRUB (no rauc.slot= on its command line)
    let o = bh(&["upgrade", "/nonexistent/bulkhead-9.raucb"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not booted from an A/B slot"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn backup_then_restore_refuses_a_broken_config_with_nothing_changed() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("bulkhead.toml");
    std::fs::copy(shipped(), &cfg).unwrap();
    let state = d.path().join("state");
    std::fs::create_dir_all(state.join("ssh")).unwrap();
    std::fs::write(state.join("ssh/dropbear_ed25519_host_key"), "host key").unwrap();
    let arch = d.path().join("b.tgz");
    let c = cfg.to_str().unwrap();
    let s = state.to_str().unwrap();
    let o = bh(&[
        "-c",
        c,
        "--state-dir",
        s,
        "backup",
        "-o",
        arch.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&arch).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // the archive's config broken: refused before anything is touched
    let x = d.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    let ok = Command::new("tar")
        .args(["-xzf", arch.to_str().unwrap(), "-C", x.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(ok.success());
    let inner = x.join("bulkhead-backup/bulkhead.toml");
    let text = std::fs::read_to_string(&inner).unwrap();
    std::fs::write(
        &inner,
        text.replacen("backend = \"nftables\"", "backend = \"pf\"", 1),
    )
    .unwrap();
    let bad = d.path().join("bad.tgz");
    let ok = Command::new("tar")
        .args([
            "-czf",
            bad.to_str().unwrap(),
            "-C",
            x.to_str().unwrap(),
            "bulkhead-backup",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let target = d.path().join("target.toml");
    std::fs::copy(shipped(), &target).unwrap();
    let before = std::fs::read(&target).unwrap();
    let s2 = d.path().join("state2");
    let o = bh(&[
        "-c",
        target.to_str().unwrap(),
        "--state-dir",
        s2.to_str().unwrap(),
        "restore",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("bad.tgz:bulkhead-backup/bulkhead.toml:") && e.contains("system.backend"),
        "{e}"
    );
    assert!(e.contains("nothing was changed"), "{e}");
    assert_eq!(std::fs::read(&target).unwrap(), before);
    assert!(!s2.exists(), "the state directory was created");
}

#[test]
fn upgrade_confirm_within_takes_a_duration() {
    // a bad duration is refused with the option named, before anything else
    let o = bh(&[
        "upgrade",
        "/nonexistent/bulkhead-9.raucb",
        "--confirm-within",
        "soon",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("bulkhead upgrade: --confirm-within: `soon` is not a duration"),
        "{}",
        stderr(&o)
    );
    let o = bh(&[
        "upgrade",
        "/nonexistent/bulkhead-9.raucb",
        "--confirm-within",
        "0s",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // a good one is accepted; this host is no A/B system, which is said next
    let o = bh(&[
        "upgrade",
        "/nonexistent/bulkhead-9.raucb",
        "--confirm-within",
        "1m30s",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not booted from an A/B slot"),
        "{}",
        stderr(&o)
    );
}
