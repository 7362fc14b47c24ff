//! `[system] ntp`: the servers reach the model in config order, and with
//! `system.gateway_egress` the gateway's output chain lets NTP out (UDP 123) to each server
//! given by address, and out of the uplink for servers given by name; the gateway never
//! serves NTP to its segments. `bulkhead run` restarts a chronyd that cannot start with an
//! exponential back-off and one warning per failure streak.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulkhead::plan::{self, Part};

const CONFIG: &str = r#"[system]
gateway_egress = "dns_only"
ntp = ["192.0.2.123", "ntp.example.net", "pool.example.org"]

[uplink]
interface = "wan0"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true

[egress.dns_only]
allow = [{ proto = "udp", ports = [53] }]
"#;

#[test]
fn ntp_servers_are_in_the_model_in_order() {
    let (m, _) = plan::load_str("ntp.toml", CONFIG).unwrap();
    let s: Vec<String> = m.ntp.iter().map(|s| s.to_string()).collect();
    assert_eq!(s, ["192.0.2.123", "ntp.example.net", "pool.example.org"]);
}

#[test]
fn gateway_egress_lets_ntp_out() {
    let (m, _) = plan::load_str("ntp.toml", CONFIG).unwrap();
    let fw = plan::build(&m, None).text(Some(Part::Firewall));
    let ntp: Vec<&str> = fw.lines().filter(|l| l.contains("dport 123")).collect();
    assert_eq!(
        ntp.len(),
        2,
        "one rule per address, one for all names:\n{fw}"
    );
    assert!(
        ntp.iter()
            .any(|l| l.contains("ip daddr 192.0.2.123") && l.contains("udp dport 123")),
        "{fw}"
    );
    assert!(
        ntp.iter()
            .any(|l| l.contains("oifname \"wan0\"") && l.contains("udp dport 123")),
        "{fw}"
    );
}

#[test]
fn without_ntp_nothing_changes() {
    let text = CONFIG.replace(
        "ntp = [\"192.0.2.123\", \"ntp.example.net\", \"pool.example.org\"]\n",
        "",
    );
    let (m, _) = plan::load_str("ntp.toml", &text).unwrap();
    assert!(m.ntp.is_empty());
    let fw = plan::build(&m, None).text(Some(Part::Firewall));
    assert!(!fw.contains("dport 123"), "{fw}");
}

#[test]
fn segments_cannot_use_the_gateway_as_an_ntp_server() {
    // chronyd serves nobody (no `allow`, so no NTP server socket) and the input chain has
    // no rule for UDP 123: a segment's NTP query to the gateway meets the drop policy
    let (m, _) = plan::load_str("ntp.toml", CONFIG).unwrap();
    let conf = bulkhead::supervisor::ntp::config(&m, Path::new("/var/lib/bulkhead"));
    assert!(
        !conf
            .lines()
            .any(|l| l.starts_with("allow") || l.starts_with("port ")),
        "{conf}"
    );
    let fw = plan::build(&m, None).text(Some(Part::Firewall));
    let input = fw
        .split("chain input")
        .nth(1)
        .and_then(|c| c.split("chain ").next())
        .unwrap_or_else(|| panic!("no input chain:\n{fw}"));
    assert!(input.contains("policy drop"), "{input}");
    assert!(!input.contains("123"), "{input}");
}

/// Kills a process by pid when dropped (and reaps it when it is our child).
struct KillOnDrop {
    pid: u32,
    child: Option<Child>,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = bulkhead::sys::proc::terminate(self.pid);
        if let Some(c) = self.child.as_mut() {
            let _ = c.wait();
        } else {
            for _ in 0..50 {
                if !Path::new(&format!("/proc/{}", self.pid)).exists() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = bulkhead::sys::proc::kill(self.pid);
        }
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed()
}

/// A chronyd that cannot start (another chronyd holds its pid file: chronyd's own check,
/// "Another chronyd may already be running") is started again 1 s, 2 s, 4 s, 8 s ... after
/// each failure, not every second, with one warning for the whole streak; when the cause
/// goes away, chronyd comes up and answers `bulkhead status`.
#[test]
fn a_chronyd_that_cannot_start_is_retried_with_back_off() {
    require_root!();
    assert!(
        common::have_tool("chronyd") && common::have_tool("chronyc"),
        "needs chronyd and chronyc (apt-get install chrony)"
    );
    let ns = common::Netns::new("ntpbo");
    let dir = common::TempDir::new("ntpbo");
    for l in ["wan0", "lan0"] {
        ns.ok(&[
            "ip",
            "link",
            "add",
            l,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{l}p"),
        ]);
    }
    let state = dir.path().join("state");
    let cfg = dir.path().join("bulkhead.toml");
    // the server is unreachable (TEST-NET, no route): this chronyd never touches the clock
    std::fs::write(
        &cfg,
        "[system]\nntp = [\"192.0.2.123\"]\n\n[uplink]\ninterface = \"wan0\"\naddress = \"198.18.70.2/24\"\ngateway = \"198.18.70.1\"\n\n[segments.adm]\ninterface = \"lan0\"\nsubnet = \"198.18.71.0/24\"\ngateway = \"198.18.71.1\"\nmanagement = true\n",
    )
    .unwrap();
    // the other chronyd: -x (never touches the clock), a server it cannot reach (or it has
    // "nothing to do"), no NTP port, no command socket, only
    // the pid file every chronyd checks at start
    let block = dir.path().join("blocker.conf");
    std::fs::write(
        &block,
        "server 192.0.2.1\npidfile /run/chrony/chronyd.pid\nport 0\ncmdport 0\nbindcmdaddress /\n",
    )
    .unwrap();
    let blocker_pid = dir.path().join("blocker.pid");
    let log_path = dir.path().join("run.log");
    // a private /run/chrony (a tmpfs in the mount namespace `ip netns exec` makes), the
    // other chronyd detached from the daemon (a subshell), then the daemon
    let script = format!(
        "set -e\nmkdir -p /run/chrony\nmount -t tmpfs -o mode=0750 bhtest-chrony /run/chrony\n\
         (chronyd -x -d -f {block} >{dir}/blocker.log 2>&1 & echo $! > {pid})\n\
         i=0; while [ ! -s /run/chrony/chronyd.pid ]; do i=$((i+1)); [ $i -lt 100 ] || exit 3; sleep 0.1; done\n\
         exec {bin} -c {cfg} --state-dir {state} run\n",
        block = block.display(),
        dir = dir.path().display(),
        pid = blocker_pid.display(),
        bin = env!("CARGO_BIN_EXE_bulkhead"),
        cfg = cfg.display(),
        state = state.display(),
    );
    let log = std::fs::File::create(&log_path).unwrap();
    let child = ns
        .cmd(&["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let daemon = KillOnDrop {
        pid: child.id(),
        child: Some(child),
    };
    wait_for("the other chronyd", Duration::from_secs(15), || {
        std::fs::read_to_string(&blocker_pid).is_ok_and(|s| !s.trim().is_empty())
    });
    let blocker = KillOnDrop {
        pid: std::fs::read_to_string(&blocker_pid)
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
        child: None,
    };
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_for("bulkhead: ready", Duration::from_secs(30), || {
        read_log().contains("bulkhead: ready")
    });
    // 16 s of a chronyd that cannot start
    let window = Duration::from_secs(16);
    std::thread::sleep(window);
    let text = read_log();
    let refusals = text
        .matches("Another chronyd may already be running")
        .count();
    let warnings = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("chronyd"))
        .count();
    eprintln!("{refusals} starts refused in {window:?}, {warnings} warning(s)");
    // every second: 16 or so; 1, 2, 4, 8 s apart: starts at about 0, 1, 3, 7 and 15 s
    assert!(
        (3..=6).contains(&refusals),
        "{refusals} chronyd starts in {window:?}, want 3..=6 (back-off 1 s doubling):\n{text}"
    );
    assert_eq!(warnings, 1, "one warning for the streak:\n{text}");
    // the cause goes away: the next start (at most 16 s away) succeeds and chronyd answers
    drop(blocker);
    let status = || {
        let o = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
            .args([
                "-c",
                cfg.to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
                "status",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let t = wait_for(
        "chronyd answering after the other one stopped",
        Duration::from_secs(40),
        || {
            status()
                .lines()
                .any(|l| l.starts_with("time:") && l.contains("unsynchronised"))
        },
    );
    eprintln!("chronyd up {t:?} after the other one stopped");
    let st = status();
    let time = st.lines().find(|l| l.starts_with("time:")).unwrap();
    assert!(time.contains("192.0.2.123"), "{time}");
    drop(daemon);
    let text = read_log();
    assert!(
        text.contains("stopping; the ruleset stays in place"),
        "{text}"
    );
}
