//! Time: chrony keeps the gateway's clock with the servers of `[system] ntp`. `bulkhead run`
//! writes its config and runs `chronyd` in the foreground as its child (like the uplink's DHCP
//! client); `bulkhead status` shows the sync state from `chronyc tracking`. Without servers
//! (the default) no chronyd runs; in the lab none runs either (it would set the host's clock).
//!
//! A chronyd that exits is started again with an exponential back-off ([`Backoff`]: 1 s
//! doubling to 60 s, back to 1 s once a chronyd has run for 60 s), with one warning per
//! failure streak rather than one per restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::model::Model;

/// chronyd's command socket (chronyc's default place).
pub const SOCKET_DIR: &str = "/run/chrony";

/// The chrony config for the model's servers.
pub fn config(m: &Model, state_dir: &Path) -> String {
    let mut s = String::from("# written by bulkhead run from [system] ntp\n");
    for srv in &m.ntp {
        s.push_str(&format!("server {srv} iburst\n"));
    }
    s.push_str(&format!(
        "driftfile {}\n\
         # no RTC to trust on an appliance: step whenever the clock is more than 1 s off\n\
         makestep 1 -1\n\
         rtcsync\n\
         # no UDP command port; chronyc over the unix socket only\n\
         cmdport 0\n\
         bindcmdaddress {SOCKET_DIR}/chronyd.sock\n\
         pidfile {SOCKET_DIR}/chronyd.pid\n",
        state_dir.join("chrony.drift").display()
    ));
    s
}

fn conf_path(state_dir: &Path) -> PathBuf {
    state_dir.join("chrony.conf")
}

/// Start chronyd, or None without servers, in the lab, or when it cannot run.
pub fn start(m: &Model, state_dir: &Path, lab: bool) -> Option<Child> {
    if m.ntp.is_empty() || lab {
        return None;
    }
    let conf = conf_path(state_dir);
    if let Err(e) = std::fs::write(&conf, config(m, state_dir)) {
        tracing::error!("cannot write {}: {e}", conf.display());
        return None;
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(SOCKET_DIR);
    }
    // -d: foreground, log to stderr (the console); -u root: the image has no _chrony user
    match Command::new("chronyd")
        .args(["-d", "-u", "root", "-f"])
        .arg(&conf)
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(c) => {
            let servers: Vec<String> = m.ntp.iter().map(|s| s.to_string()).collect();
            tracing::info!(servers = ?servers, pid = c.id(), "NTP client (chronyd) started");
            Some(c)
        }
        Err(e) => {
            tracing::error!("cannot start chronyd for [system] ntp: {e}");
            None
        }
    }
}

pub fn stop(child: Option<Child>) {
    if let Some(mut c) = child {
        let _ = crate::sys::proc::terminate(c.id());
        let _ = c.wait();
    }
}

/// When to start a chronyd that exited again: 1 s after the first failure, doubling up to
/// 60 s; a chronyd that ran [`Backoff::HEALTHY`] or longer ends the streak.
#[derive(Debug, Default, Clone)]
pub struct Backoff {
    /// Failures in the current streak.
    failures: u32,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_secs(1);
    pub const MAX: Duration = Duration::from_secs(60);
    /// A chronyd that ran this long was healthy: the next failure starts a new streak.
    pub const HEALTHY: Duration = Duration::from_secs(60);

    /// chronyd exited (or could not be started) after running `ran`: the delay before the
    /// next start, and whether this failure opens a streak (the one that warns).
    pub fn failed(&mut self, ran: Duration) -> (Duration, bool) {
        if ran >= Self::HEALTHY {
            self.failures = 0;
        }
        self.failures += 1;
        let shift = (self.failures - 1).min(16);
        let delay = Self::FIRST.saturating_mul(1 << shift).min(Self::MAX);
        (delay, self.failures == 1)
    }

    /// chronyd is running and has run `ran`: once that is [`Backoff::HEALTHY`], the streak
    /// ends; returns how many failures it had (when there were any).
    pub fn running(&mut self, ran: Duration) -> Option<u32> {
        if ran >= Self::HEALTHY && self.failures > 0 {
            return Some(std::mem::take(&mut self.failures));
        }
        None
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// chronyd as a child of `bulkhead run`, started again with [`Backoff`] when it exits.
pub struct Chrony {
    child: Option<Child>,
    started: Instant,
    /// Waiting out the back-off: when to start the next one.
    next_start: Option<Instant>,
    backoff: Backoff,
    state_dir: PathBuf,
    lab: bool,
    /// The last unsynchronised check ([`Chrony::nudge`]), and whether one is still running.
    last_nudge: Instant,
    nudging: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How often an unsynchronised chronyd is asked for a burst of polls.
pub const NUDGE_EVERY: Duration = Duration::from_secs(30);

impl Chrony {
    /// Start chronyd for the model's servers (nothing without servers or in the lab).
    pub fn start(m: &Model, state_dir: &Path, lab: bool) -> Self {
        let mut c = Chrony {
            child: None,
            started: Instant::now(),
            next_start: None,
            backoff: Backoff::default(),
            state_dir: state_dir.to_path_buf(),
            lab,
            last_nudge: Instant::now(),
            nudging: Default::default(),
        };
        c.launch(m, Instant::now());
        c
    }

    fn wanted(&self, m: &Model) -> bool {
        !m.ntp.is_empty() && !self.lab
    }

    fn launch(&mut self, m: &Model, now: Instant) {
        self.next_start = None;
        self.started = now;
        if !self.wanted(m) {
            return;
        }
        self.child = start(m, &self.state_dir, self.lab);
        if self.child.is_none() {
            // not even spawned (no binary, the config not writable): retried like an exit
            self.failed(now, "could not be started".into());
        }
    }

    fn failed(&mut self, now: Instant, why: String) {
        let (delay, first) = self
            .backoff
            .failed(now.saturating_duration_since(self.started));
        if first {
            tracing::warn!(
                status = %why,
                retry_in_s = delay.as_secs(),
                "chronyd exited; starting it again with a back-off (1 s doubling to 60 s; one warning per failure streak)"
            );
        } else {
            tracing::debug!(status = %why, failures = self.backoff.failures(), retry_in_s = delay.as_secs(), "chronyd exited again");
        }
        self.next_start = Some(now + delay);
    }

    /// Called on every tick: notices an exited chronyd, starts one when its back-off is over.
    pub fn poll(&mut self, m: &Model) {
        let now = Instant::now();
        if let Some(c) = self.child.as_mut() {
            match c.try_wait() {
                Ok(Some(st)) => {
                    self.child = None;
                    self.failed(now, st.to_string());
                }
                Ok(None) => {
                    if now.saturating_duration_since(self.last_nudge) >= NUDGE_EVERY {
                        self.last_nudge = now;
                        self.nudge();
                    }
                    if let Some(n) = self
                        .backoff
                        .running(now.saturating_duration_since(self.started))
                    {
                        tracing::info!(
                            failures = n,
                            "chronyd has been running for {} s after failing: back-off reset",
                            Backoff::HEALTHY.as_secs()
                        );
                    }
                }
                Err(_) => {}
            }
        } else if self.next_start.is_some_and(|t| now >= t) {
            self.launch(m, now);
        }
    }

    /// chronyd spends its `iburst` at start; a server that becomes reachable later (the uplink
    /// came up late, the server was down) would then be polled only every 64 s or more, and a
    /// first sync takes minutes. While the clock is unsynchronised, ask for a burst of polls
    /// (`chronyc burst 2/4`) every [`NUDGE_EVERY`]; once synced, chronyd's own polling rules.
    /// Runs in a thread of its own so a chronyd that does not answer cannot stall the tick.
    fn nudge(&self) {
        use std::sync::atomic::Ordering;
        if self.nudging.swap(true, Ordering::SeqCst) {
            return;
        }
        let flag = self.nudging.clone();
        std::thread::spawn(move || {
            let synced = Command::new("chronyc")
                .args(["-c", "-n", "tracking"])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| parse_tracking(&String::from_utf8_lossy(&o.stdout)))
                .is_some_and(|v| v["synced"] == true);
            if !synced {
                tracing::debug!("clock not synchronised yet: asking chronyd for a burst of polls");
                let _ = Command::new("chronyc")
                    .args(["burst", "2/4"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            flag.store(false, Ordering::SeqCst);
        });
    }

    /// The servers changed: stop chronyd and start it at once for the new ones, with a fresh
    /// back-off.
    pub fn restart(&mut self, m: &Model) {
        stop(self.child.take());
        self.backoff = Backoff::default();
        self.launch(m, Instant::now());
    }

    pub fn stop(mut self) {
        stop(self.child.take());
    }
}

/// Parse `chronyc -c tracking` (CSV): the reference, stratum, offset and leap status.
pub fn parse_tracking(csv: &str) -> Option<serde_json::Value> {
    let f: Vec<&str> = csv.trim().split(',').collect();
    if f.len() < 14 {
        return None;
    }
    let leap = f[13];
    let synced = leap != "Not synchronised" && f[2] != "0";
    Some(serde_json::json!({
        "state": if synced { "synced" } else { "unsynchronised" },
        "synced": synced,
        "reference": f[1],
        "stratum": f[2].parse::<u32>().ok(),
        "offset_s": f[4].parse::<f64>().ok(),
        "leap": leap,
    }))
}

/// The `time` section of `bulkhead status`.
pub fn status(m: &Model) -> serde_json::Value {
    let servers: Vec<String> = m.ntp.iter().map(|s| s.to_string()).collect();
    let mut v = if m.ntp.is_empty() {
        serde_json::json!({"state": "off (no [system] ntp servers)", "synced": false})
    } else {
        Command::new("chronyc")
            .args(["-c", "-n", "tracking"])
            .stdin(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| parse_tracking(&String::from_utf8_lossy(&o.stdout)))
            .unwrap_or_else(
                || serde_json::json!({"state": "no answer from chronyd", "synced": false}),
            )
    };
    v["ntp"] = serde_json::json!(servers);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute_and_resets_after_a_healthy_run() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(10);
        let delays: Vec<(u64, bool)> = (0..9)
            .map(|_| {
                let (d, warn) = b.failed(quick);
                (d.as_secs(), warn)
            })
            .collect();
        assert_eq!(
            delays,
            [
                (1, true),
                (2, false),
                (4, false),
                (8, false),
                (16, false),
                (32, false),
                (60, false),
                (60, false),
                (60, false)
            ]
        );
        // running, but not long enough yet: the streak goes on
        assert_eq!(b.running(Duration::from_secs(59)), None);
        assert_eq!(b.failed(Duration::from_secs(59)), (Backoff::MAX, false));
        // a healthy run ends the streak: reported once, and the next failure warns again at 1 s
        assert_eq!(b.running(Duration::from_secs(60)), Some(10));
        assert_eq!(b.running(Duration::from_secs(120)), None);
        assert_eq!(b.failed(Duration::from_secs(3600)), (Backoff::FIRST, true));
        // a chronyd that ran long and then failed (no poll in between) also starts afresh
        b.failed(quick);
        assert_eq!(b.failed(Backoff::HEALTHY), (Backoff::FIRST, true));
    }

    #[test]
    fn tracking_synced_and_not() {
        let ok = "C0000201,192.0.2.1,3,1733468000.123,-0.000012345,0.000001,0.00002,-1.2,0.001,0.05,0.01,0.002,64.2,Normal\n";
        let v = parse_tracking(ok).unwrap();
        assert_eq!(v["state"], "synced");
        assert_eq!(v["stratum"], 3);
        let no = "00000000,,0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,1.0,0.0,Not synchronised\n";
        assert_eq!(parse_tracking(no).unwrap()["synced"], false);
        assert!(parse_tracking("garbage").is_none());
    }

    #[test]
    fn config_lists_the_servers() {
        let (m, _) = crate::plan::load_str(
            "t.toml",
            "[system]\nntp = [\"192.0.2.123\", \"ntp.example.net\"]\n[uplink]\ninterface = \"wan0\"\n[segments.a]\ninterface = \"lan0\"\nsubnet = \"198.18.2.0/24\"\ngateway = \"198.18.2.1\"\nmanagement = true\n",
        )
        .unwrap();
        let c = config(&m, Path::new("/var/lib/bulkhead"));
        assert!(
            c.contains("server 192.0.2.123 iburst\nserver ntp.example.net iburst\n"),
            "{c}"
        );
        assert!(
            c.contains("driftfile /var/lib/bulkhead/chrony.drift"),
            "{c}"
        );
        assert!(c.contains("cmdport 0"), "{c}");
    }
}
