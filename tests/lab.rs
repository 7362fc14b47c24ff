//! The lab proves the policy on a live kernel: for the shipped config and two others, with
//! both firewall backends, every allowed flow connects and every sampled denied flow does not.

mod common;

use std::process::Command;

fn bh(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(args)
        .output()
        .expect("run bulkhead")
}

struct LabGuard(String);

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = bh(&["lab", "--name", &self.0, "down"]);
    }
}

fn lab_passes(config: &str, backend: &str, n: usize) {
    let name = format!("t{}x{n}", std::process::id());
    let guard = LabGuard(name.clone());
    let cfg = common::root().join(config);
    let up = bh(&[
        "-c",
        cfg.to_str().unwrap(),
        "lab",
        "--name",
        &name,
        "up",
        "--backend",
        backend,
    ]);
    assert!(
        up.status.success(),
        "{config} {backend}: lab up failed:\n{}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let v = bh(&["lab", "--name", &name, "verify"]);
    let out = String::from_utf8_lossy(&v.stdout);
    assert!(
        v.status.success(),
        "{config} {backend}: lab verify failed:\n{out}{}",
        String::from_utf8_lossy(&v.stderr)
    );
    let summary = out.lines().last().unwrap_or_default().to_string();
    assert!(summary.ends_with(" 0 mismatches"), "{summary}");
    eprintln!("{config} ({backend}): {summary}");
    // the gateway runs the backend asked for
    let gw = format!("bhl-{name}-gw");
    let list = Command::new("ip")
        .args(["netns", "exec", &gw, "nft", "list", "ruleset"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&list.stdout);
    match backend {
        "nftables" => assert!(rules.contains("table inet bulkhead")),
        _ => assert!(rules.contains("BH-FORWARD") && !rules.contains("table inet bulkhead")),
    }
    let down = bh(&["lab", "--name", &name, "down"]);
    assert!(down.status.success());
    std::mem::forget(guard);
    // nothing of the lab is left
    let ns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        !ns.contains(&format!("bhl-{name}-")),
        "namespaces left behind:\n{ns}"
    );
}

#[test]
fn lab_verify_shipped_config() {
    require_root!();
    lab_passes("overlay/etc/bulkhead/bulkhead.toml", "nftables", 0);
    lab_passes("overlay/etc/bulkhead/bulkhead.toml", "iptables", 1);
}

#[test]
fn lab_verify_multinic_config() {
    require_root!();
    lab_passes("tests/golden/multinic.toml", "nftables", 2);
    lab_passes("tests/golden/multinic.toml", "iptables", 3);
}

#[test]
fn lab_verify_iptables_config() {
    require_root!();
    lab_passes("tests/golden/iptables.toml", "iptables", 4);
    lab_passes("tests/golden/iptables.toml", "nftables", 5);
}

#[test]
fn lab_verify_many_groups_and_forwards() {
    require_root!();
    lab_passes("tests/golden/manygroups.toml", "nftables", 6);
}
