//! Many `status` calls on a `bulkhead run` that holds the 10,000-element benchmark policy
//! (bench/gen-policy.py) and 10,000 bound leases leave its memory bounded: each call reads the live firewall (counters,
//! set sizes) and the leases, and what a call allocated must be given back, not kept per
//! thread. Root, a network namespace, the real kernel and nft.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bulkhead::control::{self, Request};

fn vm_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn status(state: &Path) {
    let r = control::call(state, &Request::Status, Duration::from_secs(120))
        .expect("the daemon answers")
        .expect("the call works");
    assert!(r.ok, "{:?}", r.error);
}

#[test]
fn five_hundred_status_calls_keep_the_daemon_rss_bounded() {
    common::require_root_and(&["nft", "python3"]);
    // another build of the binary can be measured with the same test
    let bin = std::env::var("BULKHEAD_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_bulkhead").to_string());
    let ns = common::Netns::new("rss");
    for dev in ["up0", "lan0", "srv0"] {
        let peer = format!("{dev}p");
        ns.ok(&[
            "ip", "link", "add", dev, "type", "veth", "peer", "name", &peer,
        ]);
    }
    let dir = common::TempDir::new("rss");
    let cfg = dir.path().join("bulkhead.toml");
    let policy = Command::new("python3")
        .arg(common::root().join("bench/gen-policy.py"))
        .args(["--elements", "10000", "--rules", "200"])
        .output()
        .unwrap();
    assert!(policy.status.success());
    std::fs::write(&cfg, &policy.stdout).unwrap();
    let state = dir.path().join("state");
    // 10,000 bound leases in the lease store, which every status call reads
    {
        use bulkhead::dhcp::leases::{Lease, LeaseState, LeaseStore, StoreOptions, unix_now};
        let (store, _) = LeaseStore::open(&state.join("dhcp"), StoreOptions::default()).unwrap();
        let leases: Vec<Lease> = (0..10_000u32)
            .map(|i| Lease {
                segment: "lan".into(),
                addr: std::net::Ipv4Addr::from(0x0a01_0000 + 2 + i),
                mac: [2, 0, 0, 0, (i >> 8) as u8, i as u8],
                client_id: None,
                hostname: Some(format!("host-{i}")),
                group: None,
                expires: unix_now() + 86_400,
                state: LeaseState::Bound,
            })
            .collect();
        store.commit(leases).wait_blocking().unwrap();
        store.close();
    }
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, &bin, "-c"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(&state)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let ready = state.join("ready");
    let t = Instant::now();
    let pid: u32 = loop {
        if let Some(p) = std::fs::read_to_string(&ready)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120) && child.try_wait().unwrap().is_none(),
            "the daemon did not get ready: {}",
            std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // settled after start (the first drift check lists the table once)
    std::thread::sleep(Duration::from_secs(3));
    let before = vm_rss_kib(pid);
    let mut peak = before;
    for i in 0..500 {
        status(&state);
        if i % 50 == 49 || i < 3 {
            let r = vm_rss_kib(pid);
            peak = peak.max(r);
            eprintln!("after {} status calls: VmRSS {r} KiB", i + 1);
        }
    }
    let after = vm_rss_kib(pid);
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "VmRSS before the status calls {before} KiB, after 500 {after} KiB (peak {peak} KiB): grew {} KiB",
        after as i64 - before as i64
    );
    // Generous: a few MiB of allocator slack, not the ~20 MiB the first calls used to keep.
    assert!(
        after.saturating_sub(before) < 6 * 1024,
        "VmRSS grew from {before} KiB to {after} KiB over 500 status calls"
    );
}
