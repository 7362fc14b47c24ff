//! `bulkhead metrics` against a real `bulkhead run` in a network namespace: an office segment
//! (DHCP) and a print segment, each with a client in a namespace of its own, and the rule
//! `office-print` between them. The text is what `promtool check metrics` accepts, a
//! connection through the rule raises that rule's counter, and a lease taken by a real udhcpc
//! raises the pool's used gauge and the DHCPREQUEST counter.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");

const CONFIG: &str = r#"[uplink]
interface = "up0"
address = "198.18.80.2/24"
gateway = "198.18.80.1"

[segments.office]
interface = "off0"
subnet = "198.18.81.0/24"
gateway = "198.18.81.1"
management = true

[segments.office.dhcp]
ranges = ["198.18.81.100-198.18.81.149"]

[segments.print]
interface = "prn0"
subnet = "198.18.82.0/24"
gateway = "198.18.82.1"

[[rules]]
name = "office-print"
from = "office"
to = "print"
proto = "tcp"
ports = [9100]
"#;

struct Lab {
    gw: common::Netns,
    office: common::Netns,
    printer: common::Netns,
    dir: common::TempDir,
    state: PathBuf,
    daemon: Child,
    /// Processes started in the client namespaces, ended by pid when the lab goes.
    others: Vec<Child>,
}

impl Lab {
    fn start(tag: &str) -> Lab {
        common::require_root_and(&["ip", "nft", "busybox", "nc", "promtool"]);
        let gw = common::Netns::new(&format!("{tag}gw"));
        let office = common::Netns::new(&format!("{tag}of"));
        let printer = common::Netns::new(&format!("{tag}pr"));
        gw.ok(&[
            "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0p",
        ]);
        for (dev, ns) in [("off0", &office), ("prn0", &printer)] {
            gw.ok(&[
                "ip", "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
            ]);
            ns.ok(&["ip", "link", "set", "eth0", "up"]);
        }
        printer.ok(&["ip", "addr", "add", "198.18.82.10/24", "dev", "eth0"]);
        printer.ok(&["ip", "route", "add", "default", "via", "198.18.82.1"]);
        let dir = common::TempDir::new(tag);
        let cfg = dir.path().join("bulkhead.toml");
        std::fs::write(&cfg, CONFIG).unwrap();
        let state = dir.path().join("state");
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let daemon = gw
            .cmd(&[BIN, "-c", cfg.to_str().unwrap(), "--state-dir"])
            .arg(&state)
            .arg("run")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let lab = Lab {
            gw,
            office,
            printer,
            dir,
            state,
            daemon,
            others: Vec::new(),
        };
        let ready = lab.state.join("ready");
        wait_for(
            "the daemon is ready",
            Duration::from_secs(60),
            || std::fs::read_to_string(&ready).is_ok_and(|s| s.trim().parse::<u32>().is_ok()),
            || lab.log(),
        );
        lab
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.gw
            .cmd(&[BIN, "--state-dir", self.state.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    }

    /// `bulkhead metrics` (Prometheus text) from the running daemon.
    fn metrics(&self) -> String {
        let o = self.cli(&["metrics"]);
        assert!(
            o.status.success(),
            "bulkhead metrics failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8(o.stdout).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.others {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.daemon.id().to_string()])
            .status();
        let _ = self.daemon.wait();
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool, log: impl Fn() -> String) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < limit,
            "{what}: not within {limit:?}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the sample `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = match series.split_once('{') {
            Some((n, r)) => (n, r.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            return None;
        }
        let have: Vec<&str> = rest.split(',').collect();
        labels
            .iter()
            .all(|(k, v)| have.contains(&format!("{k}=\"{v}\"").as_str()))
            .then(|| value.parse().ok())?
    })
}

#[test]
fn promtool_finds_the_metrics_clean() {
    let lab = Lab::start("mtp");
    let text = lab.metrics();
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = p.wait_with_output().unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // what the gateway runs is there, named by the config
    for (name, labels) in [
        (
            "bulkhead_rule_packets_total",
            &[("rule", "office-print"), ("chain", "forward")][..],
        ),
        ("bulkhead_default_drop_packets_total", &[("chain", "input")]),
        ("bulkhead_dhcp_pool_size", &[("segment", "office")]),
        ("bulkhead_config_generation", &[]),
        ("bulkhead_last_apply_success", &[]),
        ("bulkhead_last_apply_timestamp_seconds", &[]),
        ("bulkhead_conntrack_limit", &[]),
        (
            "bulkhead_interface_packets_total",
            &[
                ("interface", "prn0"),
                ("segment", "print"),
                ("direction", "rx"),
            ],
        ),
        (
            "bulkhead_interface_up",
            &[("interface", "off0"), ("role", "segment")],
        ),
        ("bulkhead_nflog_records_total", &[]),
    ] {
        assert!(
            sample(&text, name, labels).is_some(),
            "{name} {labels:?} missing:\n{text}"
        );
    }
    assert_eq!(
        sample(&text, "bulkhead_dhcp_pool_size", &[("segment", "office")]),
        Some(50.0)
    );
    assert_eq!(
        sample(&text, "bulkhead_last_apply_success", &[]),
        Some(1.0),
        "{text}"
    );
    // the OpenMetrics form carries the same samples and its end marker
    let o = lab.cli(&["metrics", "--openmetrics"]);
    let om = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE bulkhead_rule_packets counter"), "{om}");
}

#[test]
fn traffic_through_a_rule_raises_its_counter() {
    let mut lab = Lab::start("mtr");
    lab.office
        .ok(&["ip", "addr", "add", "198.18.81.10/24", "dev", "eth0"]);
    lab.office
        .ok(&["ip", "route", "add", "default", "via", "198.18.81.1"]);
    let listener = lab
        .printer
        .cmd(&["nc", "-lk", "198.18.82.10", "9100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    lab.others.push(listener);
    let rule = [("rule", "office-print"), ("chain", "forward")];
    let before = lab.metrics();
    let p0 = sample(&before, "bulkhead_rule_packets_total", &rule).expect("the rule's counter");
    let b0 = sample(&before, "bulkhead_rule_bytes_total", &rule).unwrap();
    // the listener may need a moment: try until a connection gets through
    let mut connected = false;
    for _ in 0..50 {
        let o = lab
            .office
            .run(&["nc", "-z", "-w", "2", "198.18.82.10", "9100"]);
        if o.status.success() {
            connected = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(connected, "office could not reach the printer on 9100");
    let after = lab.metrics();
    let p1 = sample(&after, "bulkhead_rule_packets_total", &rule).unwrap();
    let b1 = sample(&after, "bulkhead_rule_bytes_total", &rule).unwrap();
    assert!(p1 > p0, "packets {p0} -> {p1}\n{after}");
    assert!(b1 > b0, "bytes {b0} -> {b1}\n{after}");
    // a connection the rules do not allow (to another port) meets the forward default drop
    let drops = |t: &str| {
        sample(
            t,
            "bulkhead_default_drop_packets_total",
            &[("chain", "forward")],
        )
        .unwrap_or(0.0)
    };
    let d0 = drops(&after);
    let o = lab
        .office
        .run(&["nc", "-z", "-w", "1", "198.18.82.10", "9101"]);
    assert!(!o.status.success(), "port 9101 must not be reachable");
    let d1 = drops(&lab.metrics());
    assert!(d1 > d0, "forward default drops {d0} -> {d1}");
    assert_eq!(
        sample(&lab.metrics(), "bulkhead_rule_packets_total", &rule),
        Some(p1),
        "the refused connection is not counted by office-print"
    );
    let _ = &lab.printer;
}

#[test]
fn a_lease_raises_pool_used_and_the_request_counter() {
    let lab = Lab::start("mtd");
    let seg = [("segment", "office")];
    let req = [
        ("segment", "office"),
        ("direction", "received"),
        ("type", "request"),
    ];
    let before = lab.metrics();
    assert_eq!(
        sample(&before, "bulkhead_dhcp_pool_used", &seg),
        Some(0.0),
        "{before}"
    );
    let r0 = sample(&before, "bulkhead_dhcp_messages_total", &req).unwrap_or(0.0);
    let script = lab.dir.path().join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] && echo \"LEASE $ip\"\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = lab
        .office
        .cmd(&["busybox", "udhcpc", "-f", "-q", "-n", "-i", "eth0"])
        .args(["-t", "5", "-T", "1", "-s"])
        .arg(&script)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("LEASE 198.18.81."),
        "udhcpc got no lease: {out}{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        lab.log()
    );
    // the lease store is written before the ACK leaves: it is there now
    let after = lab.metrics();
    assert_eq!(
        sample(&after, "bulkhead_dhcp_pool_used", &seg),
        Some(1.0),
        "{after}"
    );
    let r1 = sample(&after, "bulkhead_dhcp_messages_total", &req).unwrap_or(0.0);
    assert!(r1 >= r0 + 1.0, "DHCPREQUEST {r0} -> {r1}\n{after}");
    for (dir, kind) in [("received", "discover"), ("sent", "offer"), ("sent", "ack")] {
        let n = sample(
            &after,
            "bulkhead_dhcp_messages_total",
            &[("segment", "office"), ("direction", dir), ("type", kind)],
        );
        assert!(n.is_some_and(|n| n >= 1.0), "{dir} {kind}: {n:?}\n{after}");
    }
}

/// A PromQL query against the Prometheus server at `addr` in the gateway's namespace (with
/// busybox wget there): the values of the result vector.
fn promql(lab: &Lab, addr: &str, query: &str) -> Result<Vec<f64>, String> {
    let enc: String = query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let o = lab
        .gw
        .cmd(&["busybox", "wget", "-q", "-O", "-"])
        .arg(format!("http://{addr}/api/v1/query?query={enc}"))
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!(
            "query failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| e.to_string())?;
    let res = v["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("no result: {v}"))?;
    Ok(res
        .iter()
        .filter_map(|r| r["value"][1].as_str()?.parse().ok())
        .collect())
}

/// A real Prometheus server scrapes the daemon's metrics (served live by `bulkhead metrics`
/// behind busybox httpd's CGI; the HTTPS `/metrics` of the API serves the same text) and a
/// PromQL query of a rule's counter rises after traffic through that rule.
#[test]
fn prometheus_scrapes_the_metrics_and_sees_a_rule_counter_rise() {
    common::require_root_and(&["prometheus"]);
    let mut lab = Lab::start("mts");
    lab.office
        .ok(&["ip", "addr", "add", "198.18.81.10/24", "dev", "eth0"]);
    lab.office
        .ok(&["ip", "route", "add", "default", "via", "198.18.81.1"]);
    let listener = lab
        .printer
        .cmd(&["nc", "-lk", "198.18.82.10", "9100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    lab.others.push(listener);

    // the exporter: every scrape runs `bulkhead metrics` against the daemon
    let www = lab.dir.path().join("www");
    std::fs::create_dir_all(www.join("cgi-bin")).unwrap();
    let cgi = www.join("cgi-bin/metrics");
    std::fs::write(
        &cgi,
        format!(
            "#!/bin/sh\nprintf 'Content-Type: text/plain; version=0.0.4\\r\\n\\r\\n'\nexec {BIN} --state-dir {} metrics\n",
            lab.state.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cgi, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let httpd = lab
        .gw
        .cmd(&["busybox", "httpd", "-f", "-p", "127.0.0.1:9199", "-h"])
        .arg(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    lab.others.push(httpd);

    let prom_cfg = lab.dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: bulkhead\n    metrics_path: /cgi-bin/metrics\n    static_configs:\n      - targets: ['127.0.0.1:9199']\n",
    )
    .unwrap();
    let prom_log = std::fs::File::create(lab.dir.path().join("prometheus.log")).unwrap();
    let prom = lab
        .gw
        .cmd(&["prometheus"])
        .arg(format!("--config.file={}", prom_cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            lab.dir.path().join("tsdb").display()
        ))
        .arg("--web.listen-address=127.0.0.1:9190")
        .stdout(prom_log.try_clone().unwrap())
        .stderr(prom_log)
        .spawn()
        .unwrap();
    lab.others.push(prom);
    let prom_said = || {
        std::fs::read_to_string(lab.dir.path().join("prometheus.log"))
            .unwrap_or_default()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let addr = "127.0.0.1:9190";
    wait_for(
        "Prometheus scrapes the gateway",
        Duration::from_secs(60),
        || promql(&lab, addr, "up{job=\"bulkhead\"}").is_ok_and(|v| v == [1.0]),
        prom_said,
    );
    let q = "bulkhead_rule_packets_total{rule=\"office-print\",chain=\"forward\"}";
    let mut v0 = Vec::new();
    wait_for(
        "the rule's counter is in Prometheus",
        Duration::from_secs(30),
        || {
            v0 = promql(&lab, addr, q).unwrap_or_default();
            v0.len() == 1
        },
        prom_said,
    );
    let mut connected = false;
    for _ in 0..50 {
        if lab
            .office
            .run(&["nc", "-z", "-w", "2", "198.18.82.10", "9100"])
            .status
            .success()
        {
            connected = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(connected, "office could not reach the printer on 9100");
    wait_for(
        "the rule's counter rises in Prometheus",
        Duration::from_secs(30),
        || promql(&lab, addr, q).is_ok_and(|v| v.len() == 1 && v[0] > v0[0]),
        prom_said,
    );
    // the whole text was taken in
    let up = promql(&lab, addr, "scrape_samples_scraped{job=\"bulkhead\"}").unwrap();
    assert!(up.first().is_some_and(|n| *n > 50.0), "{up:?}");
}

/// Every query of docs/grafana-dashboard.json is PromQL that promtool accepts (as recording
/// rules, with the dashboard's variables filled in).
#[test]
fn the_dashboard_queries_parse() {
    assert!(
        common::have_tool("promtool"),
        "needs promtool: install prometheus (tools/setup)"
    );
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join("docs/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(
                t["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$gateway", ".*")
                    .replace("$__rate_interval", "1m"),
            );
        }
    }
    assert!(exprs.len() > 20, "{exprs:?}");
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"record": format!("dashboard:query{i}"), "expr": e}))
        .collect();
    let dir = common::TempDir::new("mtq");
    // JSON is YAML
    let file = dir.path().join("rules.yml");
    std::fs::write(
        &file,
        serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    let o = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
