//! Shipping to a real rsyslog in a "SIEM" namespace: every kind of event arrives over UDP,
//! TCP and TLS and parses as RFC 5424 with its structured data; and 10,000 events with
//! rsyslog stopped for 30 s in the middle all arrive, in order.

mod logship_support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bulkhead::logship::format::{Parsed, SD_ID, parse_rfc5424};
use logship_support::{Netns, Pki, Rsyslog, TempDir, link, pki, wait_for};

const SIEM: &str = "198.18.100.10";

/// A gateway namespace and a SIEM namespace on one link (the management subnet).
struct Setup {
    gw: Netns,
    siem: Netns,
    dir: TempDir,
    pki: Pki,
    rsyslog: Rsyslog,
}

fn setup(tag: &str) -> Setup {
    let gw = Netns::new(&format!("{tag}-gw"));
    let siem = Netns::new(&format!("{tag}-siem"));
    link(
        &gw,
        "mgmt0",
        "198.18.100.1/24",
        &siem,
        "eth0",
        &format!("{SIEM}/24"),
    );
    let dir = TempDir::new(tag);
    let rs_dir = dir.path().join("siem");
    std::fs::create_dir_all(&rs_dir).unwrap();
    let pki = pki(dir.path(), SIEM);
    let rsyslog = Rsyslog::new(&siem, &rs_dir, SIEM, &pki);
    Setup {
        gw,
        siem,
        dir,
        pki,
        rsyslog,
    }
}

/// A valid config with the given log targets (TOML) and its state directory.
fn config(dir: &Path, targets: &str) -> std::path::PathBuf {
    let state = dir.join("state");
    let text = format!(
        r#"[system]
hostname = "bhls-gw"
state_dir = "{state}"

[uplink]
interface = "wan0"
address = "203.0.113.2/24"
gateway = "203.0.113.1"

[segments.admin]
interface = "mgmt0"
subnet = "198.18.100.0/24"
gateway = "198.18.100.1"
management = true

[logging]
{targets}
"#,
        state = state.display()
    );
    let p = dir.join("bulkhead.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn targets(s: &Setup, which: &[&str]) -> String {
    let mut t = String::new();
    for w in which {
        match *w {
            "udp" => {
                t += &format!(
                    "[[logging.targets]]\nname = \"udp\"\nhost = \"{SIEM}\"\ntransport = \"udp\"\n"
                )
            }
            "tcp" => {
                t += &format!(
                    "[[logging.targets]]\nname = \"tcp\"\nhost = \"{SIEM}\"\ntransport = \"tcp\"\n"
                )
            }
            "tls" => {
                t += &format!(
                    "[[logging.targets]]\nname = \"tls\"\nhost = \"{SIEM}\"\ntransport = \"tls\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                    s.pki.ca.display(),
                    s.pki.client_cert.display(),
                    s.pki.client_key.display()
                )
            }
            _ => unreachable!(),
        }
    }
    t
}

fn ship_test(s: &Setup, cfg: &Path, args: &[&str]) -> Command {
    let mut c = s.gw.cmd(&[
        env!("CARGO_BIN_EXE_bulkhead"),
        "-c",
        cfg.to_str().unwrap(),
        "ship-test",
    ]);
    c.args(args);
    c
}

/// The messages of one test run (by the `test` SD param) rsyslog wrote for a transport.
fn received(r: &Rsyslog, transport: &str, tag: &str) -> Vec<Parsed> {
    r.lines(transport)
        .iter()
        .filter_map(|l| parse_rfc5424(l))
        .filter(|p| p.param("test") == Some(tag))
        .collect()
}

#[test]
fn every_kind_of_event_arrives_as_rfc5424_over_udp_tcp_and_tls() {
    require_siem!();
    let s = setup("kinds");
    let cfg = config(s.dir.path(), &targets(&s, &["udp", "tcp", "tls"]));
    let o = ship_test(
        &s,
        &cfg,
        &["--count", "9", "--tag", "kinds", "--wait", "30"],
    )
    .output()
    .unwrap();
    assert!(
        o.status.success(),
        "ship-test: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let want = [
        "drop", "accept", "alert", "apply", "rollback", "confirm", "link", "lease", "log",
    ];
    for transport in ["udp", "tcp", "tls"] {
        wait_for(
            &format!("9 events over {transport}"),
            Duration::from_secs(10),
            || received(&s.rsyslog, transport, "kinds").len() >= 9,
        );
        let got = received(&s.rsyslog, transport, "kinds");
        assert_eq!(got.len(), 9, "{transport}: {got:#?}");
        let kinds: Vec<&str> = got.iter().map(|p| p.msgid.as_str()).collect();
        assert_eq!(kinds, want, "{transport}");
        for p in &got {
            assert_eq!(p.sd_id, SD_ID, "{transport}: {p:?}");
            assert_eq!(p.app, "bulkhead");
            assert_eq!(p.host, "bhls-gw");
            assert_eq!(p.param("kind"), Some(p.msgid.as_str()));
            assert!(p.param("seq").is_some_and(|s| s.parse::<u64>().is_ok()));
            let need: &[&str] = match p.msgid.as_str() {
                "drop" | "accept" => &[
                    "rule", "chain", "in", "out", "src", "dst", "proto", "sport", "dport",
                ],
                "alert" => &["alert", "src", "in", "count", "window", "quarantine"],
                "apply" | "rollback" | "confirm" => &["result", "what"],
                "link" => &["link", "state", "segment"],
                "lease" => &["segment", "addr", "mac", "hostname"],
                _ => &["module"],
            };
            for n in need {
                assert!(
                    p.param(n).is_some(),
                    "{transport}: {} lacks {n}: {p:?}",
                    p.msgid
                );
            }
        }
        // escaping survives the trip: the client-chosen hostname `pc "7" [x]`, a newline
        // with a forged syslog header and an ESC sequence arrives on one line, its control
        // characters as visible escapes (ours, not rsyslog's `#012`/`#033`)
        let lease = got.iter().find(|p| p.msgid == "lease").unwrap();
        assert_eq!(
            lease.param("hostname"),
            Some(r#"pc "7" [x]\n<13>forged\x1b[31m"#),
            "{transport}"
        );
        let raw = s.rsyslog.lines(transport);
        assert!(
            raw.iter().all(|l| !l.starts_with("<13>forged")
                && !l.contains('\x1b')
                && !l.contains("#012")
                && !l.contains("#033")),
            "{transport}: {raw:#?}"
        );
        let drop = got.iter().find(|p| p.msgid == "drop").unwrap();
        assert_eq!(drop.param("rule"), Some("default-drop"));
        assert!(drop.msg.starts_with("drop tcp "), "{:?}", drop.msg);
        // severities: alert is 1, drop is warning (4), facility daemon (3)
        let alert = got.iter().find(|p| p.msgid == "alert").unwrap();
        assert_eq!(alert.pri, 3 * 8 + 1);
        assert_eq!(drop.pri, 3 * 8 + 4);
    }
}

#[test]
fn ten_thousand_events_survive_a_30s_receiver_outage_in_order() {
    require_siem!();
    let mut s = setup("outage");
    let cfg = config(s.dir.path(), &targets(&s, &["tcp", "tls"]));
    // 10,000 events at 250/s: 40 s; rsyslog is down from 5 s to 35 s
    let mut child = ship_test(
        &s,
        &cfg,
        &[
            "--count", "10000", "--rate", "250", "--tag", "outage", "--wait", "120",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let before: HashMap<&str, usize> = ["tcp", "tls"]
        .iter()
        .map(|t| (*t, received(&s.rsyslog, t, "outage").len()))
        .collect();
    s.rsyslog.stop();
    eprintln!("rsyslog stopped after {before:?} events");
    std::thread::sleep(Duration::from_secs(30));
    // while it is down, the spool holds the events
    let st = std::fs::read_dir(s.dir.path().join("state/spool/tcp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(st > 0, "nothing spooled for tcp during the outage");
    s.rsyslog.start(SIEM);
    eprintln!("rsyslog started again");
    let out = wait_child(&mut child, Duration::from_secs(150));
    assert!(
        out.0,
        "ship-test did not deliver everything: {}\n{}",
        out.1, out.2
    );
    let report: serde_json::Value = serde_json::from_str(out.1.trim()).unwrap();
    eprintln!("ship-test report: {report}");
    for t in ["tcp", "tls"] {
        let got = received(&s.rsyslog, t, "outage");
        let ns: Vec<u64> = got
            .iter()
            .map(|p| p.param("n").unwrap().parse().unwrap())
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        let mut first: Vec<u64> = Vec::new();
        for n in &ns {
            if seen.insert(*n) {
                first.push(*n);
            }
        }
        let dups = ns.len() - first.len();
        let missing: Vec<u64> = (1..=10_000).filter(|n| !seen.contains(n)).collect();
        eprintln!(
            "{t}: {} lines, {} distinct events, {} duplicates, {} missing; stopped after {}",
            ns.len(),
            first.len(),
            dups,
            missing.len(),
            before[t]
        );
        assert!(
            missing.is_empty(),
            "{t}: missing {} events: {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
        assert!(
            first.windows(2).all(|w| w[0] < w[1]),
            "{t}: events out of order"
        );
        let tr = report["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == t)
            .unwrap();
        assert!(tr["spooled"].as_u64().unwrap() > 0, "{t}: {tr}");
        assert_eq!(tr["dropped"].as_u64(), Some(0), "{t}: {tr}");
        // every duplicate is one the shipper resent and counted
        assert!(
            dups as u64 <= tr["resent"].as_u64().unwrap(),
            "{t}: {dups} duplicates but only {} counted as resent",
            tr["resent"]
        );
    }
}

/// Wait for a child; (success, stdout, stderr). Kills it (by pid) after `limit`.
fn wait_child(c: &mut std::process::Child, limit: Duration) -> (bool, String, String) {
    use std::io::Read;
    let t0 = std::time::Instant::now();
    let ok = loop {
        if let Some(st) = c.try_wait().unwrap() {
            break st.success();
        }
        if t0.elapsed() > limit {
            let _ = c.kill();
            let _ = c.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (mut o, mut e) = (String::new(), String::new());
    if let Some(mut s) = c.stdout.take() {
        let _ = s.read_to_string(&mut o);
    }
    if let Some(mut s) = c.stderr.take() {
        let _ = s.read_to_string(&mut e);
    }
    (ok, o, e)
}

#[test]
fn a_full_spool_drops_the_oldest_and_counts_them() {
    require_siem!();
    let mut s = setup("full");
    // the receiver is down from the start; the spool may hold 64 KiB (about 200 events)
    s.rsyslog.stop();
    let cfg = config(s.dir.path(), &targets(&s, &["tcp"]));
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[logging]\n", "[logging]\nspool_limit = 65536\n");
    std::fs::write(&cfg, text).unwrap();
    let mut child = ship_test(
        &s,
        &cfg,
        &["--count", "3000", "--tag", "full", "--wait", "60"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let spool: u64 = std::fs::read_dir(s.dir.path().join("state/spool/tcp"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(spool <= 65536, "spool of {spool} bytes over its limit");
    s.rsyslog.start(SIEM);
    let out = wait_child(&mut child, Duration::from_secs(60));
    assert!(out.0, "ship-test: {}\n{}", out.1, out.2);
    let report: serde_json::Value = serde_json::from_str(out.1.trim()).unwrap();
    let t = &report["targets"][0];
    let dropped = t["dropped"].as_u64().unwrap();
    assert!(dropped > 2000, "{t}");
    wait_for("the kept events", Duration::from_secs(10), || {
        received(&s.rsyslog, "tcp", "full").len() as u64 + dropped >= 3000
    });
    let ns: Vec<u64> = received(&s.rsyslog, "tcp", "full")
        .iter()
        .map(|p| p.param("n").unwrap().parse().unwrap())
        .collect();
    eprintln!(
        "spool full: {dropped} oldest dropped, {} newest delivered",
        ns.len()
    );
    // exactly the newest, in order, none twice
    assert_eq!(ns, (dropped + 1..=3000).collect::<Vec<_>>());
}

/// The frames of every chunk file in a target's spool directory: (files, frames).
fn spool_on_disk(s: &Setup, target: &str) -> (usize, usize) {
    let dir = s.dir.path().join("state/spool").join(target);
    let mut files = 0;
    let mut frames = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "chunk") {
            files += 1;
            frames += bulkhead::logship::spool::read_frames(&std::fs::read(p).unwrap())
                .frames
                .len();
        }
    }
    (files, frames)
}

/// The `n` params of one test run at the receiver, first occurrences, in arrival order.
fn distinct_ns(r: &Rsyslog, transport: &str, tag: &str) -> Vec<u64> {
    let mut seen = std::collections::BTreeSet::new();
    received(r, transport, tag)
        .iter()
        .map(|p| p.param("n").unwrap().parse::<u64>().unwrap())
        .filter(|n| seen.insert(*n))
        .collect()
}

/// Kill -9 (by pid) a child we started, and reap it.
fn kill9(c: &mut std::process::Child) {
    // SAFETY: signalling the pid of a child we started and have not reaped.
    unsafe {
        libc::kill(c.id() as i32, libc::SIGKILL);
    }
    let _ = c.wait();
}

/// A shipper run with `--count 0`: it only replays what the spool holds, and must succeed.
fn replay(s: &Setup, cfg: &Path, tag: &str) -> serde_json::Value {
    let o = ship_test(s, cfg, &["--count", "0", "--tag", tag, "--wait", "60"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "replay: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_shipper_killed_with_events_spooled_delivers_them_all_after_restart() {
    require_siem!();
    let mut s = setup("kill");
    s.rsyslog.stop();
    let cfg = config(s.dir.path(), &targets(&s, &["tcp"]));
    // 2,000 events in 2 s while the receiver is down, then kill -9 right after
    let mut child = ship_test(
        &s,
        &cfg,
        &[
            "--count", "2000", "--rate", "1000", "--tag", "kill", "--wait", "120",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(2300));
    kill9(&mut child);
    let (files, frames) = spool_on_disk(&s, "tcp");
    eprintln!("killed with {frames} frames in {files} spool chunks");
    s.rsyslog.start(SIEM);
    let report = replay(&s, &cfg, "kill-replay");
    eprintln!("replay report: {report}");
    wait_for("2,000 events", Duration::from_secs(10), || {
        distinct_ns(&s.rsyslog, "tcp", "kill").len() >= 2000
    });
    let ns = distinct_ns(&s.rsyslog, "tcp", "kill");
    let missing: Vec<u64> = (1..=2000).filter(|n| !ns.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "{} events lost to kill -9: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert_eq!(ns, (1..=2000).collect::<Vec<_>>(), "out of order");
}

#[test]
fn a_flipped_byte_in_the_spool_costs_one_event_and_is_reported() {
    require_siem!();
    let mut s = setup("flip");
    s.rsyslog.stop();
    let cfg = config(s.dir.path(), &targets(&s, &["tcp"]));
    // 200 events into the spool: the run gives up after 3 s and keeps them for the next one
    let o = ship_test(
        &s,
        &cfg,
        &["--count", "200", "--tag", "flip", "--wait", "3"],
    )
    .output()
    .unwrap();
    assert!(!o.status.success(), "nothing can be delivered");
    assert_eq!(spool_on_disk(&s, "tcp").0, 1, "one spool chunk");
    // one bit flipped in the middle of the chunk
    let chunk = std::fs::read_dir(s.dir.path().join("state/spool/tcp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "chunk"))
        .unwrap();
    let mut data = std::fs::read(&chunk).unwrap();
    let at = data.len() / 2;
    data[at] ^= 0x10;
    std::fs::write(&chunk, &data).unwrap();
    s.rsyslog.start(SIEM);
    let report = replay(&s, &cfg, "flip-replay");
    let t = &report["targets"][0];
    assert_eq!(t["discarded"].as_u64(), Some(1), "{t}");
    // the 199 others arrive, in order
    wait_for("199 events", Duration::from_secs(10), || {
        distinct_ns(&s.rsyslog, "tcp", "flip").len() >= 199
    });
    let ns = distinct_ns(&s.rsyslog, "tcp", "flip");
    assert_eq!(ns.len(), 199, "{ns:?}");
    assert!(ns.windows(2).all(|w| w[0] < w[1]), "out of order: {ns:?}");
    // and the loss is reported as a warning event, at the SIEM too
    let warn = s
        .rsyslog
        .lines("tcp")
        .iter()
        .filter_map(|l| parse_rfc5424(l))
        .find(|p| p.msgid == "log" && p.param("discarded").is_some())
        .unwrap_or_else(|| panic!("no discard warning: {:#?}", s.rsyslog.lines("tcp")));
    assert_eq!(warn.param("discarded"), Some("1"));
    assert_eq!(warn.param("target"), Some("tcp"));
    assert_eq!(warn.pri, 3 * 8 + 4);
    eprintln!("reported: {}", warn.msg);
}

#[test]
fn a_spool_chunk_stays_on_disk_until_the_receiver_has_its_events() {
    require_siem!();
    let mut s = setup("ack");
    s.rsyslog.stop();
    let cfg = config(s.dir.path(), &targets(&s, &["tcp"]));
    let o = ship_test(&s, &cfg, &["--count", "300", "--tag", "ack", "--wait", "3"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "nothing can be delivered");
    assert_eq!(spool_on_disk(&s, "tcp").0, 1, "one spool chunk");
    // the receiver comes back but nothing after the handshake reaches it: the shipper is
    // connected, takes the chunk out and sends it, and no byte is ever acknowledged
    s.rsyslog.start(SIEM);
    for cmd in [
        "add table inet bhlsack",
        "add chain inet bhlsack in { type filter hook input priority -10 ; }",
        "add rule inet bhlsack in tcp dport 514 ct state established drop",
    ] {
        s.siem.ok(&["sh", "-c", &format!("nft '{cmd}'")]);
    }
    let mut child = ship_test(
        &s,
        &cfg,
        &["--count", "0", "--tag", "ack-1", "--wait", "60"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let connected =
        s.gw.ok(&["ss", "-tnH", "state", "established"])
            .contains(&format!("{SIEM}:514"));
    let on_disk = spool_on_disk(&s, "tcp");
    // the shipper dies before anything was acknowledged
    kill9(&mut child);
    s.siem.ok(&["nft", "delete", "table", "inet", "bhlsack"]);
    assert!(connected, "the shipper did not connect");
    assert_eq!(
        on_disk,
        (1, 300),
        "the chunk must stay on disk while its events are unacknowledged"
    );
    replay(&s, &cfg, "ack-2");
    wait_for("300 events", Duration::from_secs(10), || {
        distinct_ns(&s.rsyslog, "tcp", "ack").len() >= 300
    });
    assert_eq!(
        distinct_ns(&s.rsyslog, "tcp", "ack"),
        (1..=300).collect::<Vec<_>>()
    );
    assert_eq!(spool_on_disk(&s, "tcp"), (0, 0));
}
