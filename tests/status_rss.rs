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

/// The image's step (VmRSS 17.9 → 23.8 MiB over ~130 `status` calls while DHCP took leases):
/// every status call reads the whole lease journal into one buffer, which is between 2 and
/// 4 MiB (the compaction threshold) while leases churn, and decodes it into a map. glibc
/// serves the first such buffer (the store's own load at start) with mmap and, when it is
/// freed, raises its mmap threshold and its trim threshold (2×) to that size: from then on
/// the buffer and the map come from the engine thread's arena and stay resident after they
/// are freed. The daemon fixes the mmap threshold at start, so buffers that large go back to
/// the kernel when freed.
#[test]
fn status_calls_with_a_churned_lease_journal_do_not_keep_its_size_resident() {
    common::require_root_and(&["ip"]);
    let bin = std::env::var("BULKHEAD_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_bulkhead").to_string());
    let ns = common::Netns::new("rssj");
    for dev in ["up0", "lan0"] {
        let peer = format!("{dev}p");
        ns.ok(&[
            "ip", "link", "add", dev, "type", "veth", "peer", "name", &peer,
        ]);
    }
    let dir = common::TempDir::new("rssj");
    let cfg = dir.path().join("bulkhead.toml");
    std::fs::write(
        &cfg,
        "[system]\nhostname = \"rss\"\n\
         [uplink]\ninterface = \"up0\"\naddress = \"198.18.0.2/30\"\n\
         [segments.lan]\ninterface = \"lan0\"\nsubnet = \"198.19.0.0/16\"\ngateway = \"198.19.0.1\"\nmanagement = true\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    // 10,000 leases renewed until the journal holds ~3.5 MiB (below the 4 MiB at which the
    // daemon's store would compact it): what a lease test leaves between two compactions
    let journal = state
        .join("dhcp")
        .join(bulkhead::dhcp::leases::JOURNAL_FILE);
    {
        use bulkhead::dhcp::leases::{Lease, LeaseState, LeaseStore, StoreOptions, unix_now};
        let opts = StoreOptions {
            compact_threshold: u64::MAX,
            ..StoreOptions::default()
        };
        let (store, _) = LeaseStore::open(&state.join("dhcp"), opts).unwrap();
        let mut round = 0u64;
        while std::fs::metadata(&journal).map_or(0, |m| m.len()) < 3_500_000 {
            round += 1;
            let leases: Vec<Lease> = (0..1_000u32)
                .map(|j| {
                    let i = (round as u32 * 1_000 + j) % 10_000;
                    Lease {
                        segment: "lan".into(),
                        addr: std::net::Ipv4Addr::from(0xc613_0000 + 2 + i),
                        mac: [2, 0, 0, 0, (i >> 8) as u8, i as u8],
                        client_id: None,
                        hostname: Some(format!("host-{i}")),
                        group: None,
                        expires: unix_now() + 86_400 + round,
                        state: LeaseState::Bound,
                    }
                })
                .collect();
            store.commit(leases).wait_blocking().unwrap();
        }
        store.close();
    }
    let jlen = std::fs::metadata(&journal).unwrap().len();
    assert!(jlen < 4 * 1024 * 1024, "journal {jlen} bytes");
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
    std::thread::sleep(Duration::from_secs(2));
    let before = vm_rss_kib(pid);
    status(&state);
    let first = vm_rss_kib(pid);
    for _ in 1..40 {
        status(&state);
    }
    let after = vm_rss_kib(pid);
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "journal {jlen} bytes; VmRSS before the status calls {before} KiB, after 1 call {first} KiB, after 40 {after} KiB"
    );
    // Before the fix the calls left ~10 MiB resident for good (the journal's buffer and the
    // lease map, in the engine thread's arena, never trimmed); after it ~1.5 MiB.
    assert!(
        after.saturating_sub(before) < 3 * 1024,
        "VmRSS grew from {before} KiB to {after} KiB over 40 status calls (journal {jlen} bytes)"
    );
}
