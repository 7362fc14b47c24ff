//! A/B firmware upgrades on RAUC: the appliance's disk has two system slots (A and B, each
//! a kernel + initramfs); GRUB boots the first slot of `ORDER` in its environment block that
//! is marked good and has a try left. `bulkhead upgrade FILE` (src/cli/upgrade.rs) has RAUC
//! install a signed bundle into the slot that is not running and records the install as
//! *pending* in [`upgrade_dir`]. Once `bulkhead run` is ready on a boot ([`after_ready`]):
//!
//! * on the new slot: the config on the data partition was accepted and applied, so the slot
//!   is marked good (`rauc status mark-good`), the pending record goes and an `upgrade` event
//!   says the upgrade succeeded;
//! * on the old slot while an install is pending: the new slot did not get ready (the init's
//!   watchdog rebooted it until GRUB's tries ran out), so it is marked bad, this slot
//!   primary again, and an `upgrade` event says the new firmware failed;
//! * otherwise the running slot is marked good (GRUB's try counter goes back to 0).
//!
//! The records are `key=value` lines so that the init (busy box sh) can read them too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the upgrade records live (the data partition), unless `BULKHEAD_UPGRADE_DIR` says.
pub const UPGRADE_DIR: &str = "/var/lib/bulkhead/upgrade";
/// RAUC's system config, written by the init at boot.
pub const RAUC_CONF: &str = "/etc/rauc/system.conf";
/// The image's release file (version, variant, ...).
pub const IMAGE_RELEASE: &str = "/etc/bulkhead/image-release";

pub fn upgrade_dir() -> PathBuf {
    std::env::var_os("BULKHEAD_UPGRADE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(UPGRADE_DIR))
}

/// The slot GRUB booted (`rauc.slot=A` on the kernel command line), if any.
pub fn booted_slot_in(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rauc.slot="))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

pub fn booted_slot() -> Option<String> {
    booted_slot_in(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
}

/// The other slot of an A/B pair.
pub fn other_slot(slot: &str) -> &'static str {
    if slot == "A" { "B" } else { "A" }
}

/// `key=value` lines (later keys win; other lines are ignored).
pub fn parse_kv(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn render_kv(m: &BTreeMap<String, String>) -> String {
    // `slot` first: the init greps for the line `slot=X`
    let mut s = String::new();
    if let Some(v) = m.get("slot") {
        s.push_str(&format!("slot={v}\n"));
    }
    for (k, v) in m.iter().filter(|(k, _)| *k != "slot") {
        let v: String = v.chars().filter(|c| *c != '\n' && *c != '\r').collect();
        s.push_str(&format!("{k}={v}\n"));
    }
    s
}

/// The running image's version (`BULKHEAD_IMAGE_VERSION` of its release file).
pub fn image_version() -> Option<String> {
    let text = std::fs::read_to_string(IMAGE_RELEASE).ok()?;
    parse_kv(&text)
        .remove("BULKHEAD_IMAGE_VERSION")
        .filter(|v| !v.is_empty())
}

/// The compatible string of this box (RAUC's system config).
pub fn system_compatible() -> Option<String> {
    let text = std::fs::read_to_string(RAUC_CONF).ok()?;
    parse_kv(&text).remove("compatible")
}

/// An install waiting for the new slot's first healthy boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub slot: String,
    pub version: String,
    pub from_slot: String,
    pub from_version: String,
    pub installed_at: u64,
}

impl Pending {
    pub fn from_kv(text: &str) -> Option<Pending> {
        let m = parse_kv(text);
        Some(Pending {
            slot: m.get("slot").filter(|s| !s.is_empty())?.clone(),
            version: m.get("version").cloned().unwrap_or_default(),
            from_slot: m.get("from_slot").cloned().unwrap_or_default(),
            from_version: m.get("from_version").cloned().unwrap_or_default(),
            installed_at: m
                .get("installed_at")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        })
    }

    pub fn to_kv(&self) -> String {
        let mut m = BTreeMap::new();
        m.insert("slot".to_string(), self.slot.clone());
        m.insert("version".to_string(), self.version.clone());
        m.insert("from_slot".to_string(), self.from_slot.clone());
        m.insert("from_version".to_string(), self.from_version.clone());
        m.insert("installed_at".to_string(), self.installed_at.to_string());
        render_kv(&m)
    }
}

pub fn read_pending(dir: &Path) -> Option<Pending> {
    Pending::from_kv(&std::fs::read_to_string(dir.join("pending")).ok()?)
}

pub fn write_pending(dir: &Path, p: &Pending) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    crate::sys::fs::write_atomic(&dir.join("pending"), p.to_kv().as_bytes(), 0o644)
}

/// The outcome of the last upgrade: `result` (installed, ok, failed) and its details.
pub fn read_last_result(dir: &Path) -> Option<BTreeMap<String, String>> {
    let m = parse_kv(&std::fs::read_to_string(dir.join("last-result")).ok()?);
    (!m.is_empty()).then_some(m)
}

pub fn write_last_result(dir: &Path, fields: &[(&str, &str)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut m: BTreeMap<String, String> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    m.insert("time".into(), crate::dhcp::leases::unix_now().to_string());
    crate::sys::fs::write_atomic(&dir.join("last-result"), render_kv(&m).as_bytes(), 0o644)
}

/// What a ready boot means for the upgrade state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not booted from a slot: nothing to do.
    NoSlots,
    /// A normal boot of a slot: mark it good (resets GRUB's try counter).
    Good,
    /// The pending slot is running and ready: the upgrade succeeded.
    NewSlotGood(Pending),
    /// The other slot is running while an install is pending: the new one failed.
    NewSlotFailed(Pending),
}

pub fn verdict(booted: Option<&str>, pending: Option<Pending>) -> Verdict {
    match (booted, pending) {
        (None, _) => Verdict::NoSlots,
        (Some(_), None) => Verdict::Good,
        (Some(b), Some(p)) if p.slot == b => Verdict::NewSlotGood(p),
        (Some(_), Some(p)) => Verdict::NewSlotFailed(p),
    }
}

/// Run `rauc ARGS`, a few times while the RAUC service is starting; the last error.
fn rauc(args: &[&str]) -> Result<String, String> {
    let mut last = String::new();
    for attempt in 0..15 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
        match Command::new("rauc").args(args).output() {
            Ok(o) if o.status.success() => return Ok(String::from_utf8_lossy(&o.stdout).into()),
            Ok(o) => last = error_line(&String::from_utf8_lossy(&o.stderr)),
            Err(e) => return Err(format!("rauc: {e}")),
        }
    }
    Err(last)
}

/// The line of RAUC's stderr that says what went wrong (not its progress messages).
pub fn error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("rauc-Message:") && !l.contains("-DEBUG:"))
        .collect();
    let pick = lines
        .iter()
        .rev()
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("fail") || l.contains("error") || l.contains("invalid")
        })
        .or(lines.last())
        .copied()
        .unwrap_or("rauc failed without a message");
    pick.strip_prefix("rauc-WARNING **:")
        .map(str::trim)
        .unwrap_or(pick)
        .to_string()
}

/// After `bulkhead: ready`: settle the upgrade state of this boot (marks the slot good, and
/// emits the `upgrade` event of a pending install). Runs on its own thread: RAUC may need a
/// moment to come up.
pub fn after_ready() {
    let booted = booted_slot();
    if booted.is_none() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("upgrade".into())
        .spawn(move || settle(booted.as_deref(), &upgrade_dir()));
}

fn settle(booted: Option<&str>, dir: &Path) {
    use crate::logship::{Event, Kind, Severity, emit};
    let running = image_version().unwrap_or_else(|| "unknown".into());
    match verdict(booted, read_pending(dir)) {
        Verdict::NoSlots => {}
        Verdict::Good => {
            if let Err(e) = rauc(&["status", "mark-good"]) {
                tracing::error!("marking the running slot good failed: {e}");
            }
        }
        Verdict::NewSlotGood(p) => match rauc(&["status", "mark-good"]) {
            Ok(_) => {
                let msg = format!(
                    "upgrade to {} ok: slot {} is ready and marked good (was {} on slot {})",
                    p.version, p.slot, p.from_version, p.from_slot
                );
                tracing::info!("{msg}");
                emit(
                    Event::new(Kind::Upgrade, Severity::Notice, msg.clone())
                        .with("result", "ok")
                        .with("slot", &p.slot)
                        .with("version", &p.version)
                        .with("from_version", &p.from_version),
                );
                let _ = write_last_result(
                    dir,
                    &[
                        ("result", "ok"),
                        ("slot", &p.slot),
                        ("version", &p.version),
                        ("message", &msg),
                    ],
                );
                let _ = std::fs::remove_file(dir.join("pending"));
            }
            Err(e) => tracing::error!(
                "slot {} is ready but marking it good failed: {e}; it stays on trial",
                p.slot
            ),
        },
        Verdict::NewSlotFailed(p) => {
            let b = booted.unwrap_or("?");
            let msg = format!(
                "upgrade to {} failed: slot {} did not get ready; back on slot {} ({running})",
                p.version, p.slot, b
            );
            tracing::error!("{msg}");
            if let Err(e) = rauc(&["status", "mark-bad", "other"]) {
                tracing::error!("marking slot {} bad failed: {e}", p.slot);
            }
            if let Err(e) = rauc(&["status", "mark-active", "booted"]) {
                tracing::error!("making slot {b} primary again failed: {e}");
            }
            emit(
                Event::new(Kind::Upgrade, Severity::Error, msg.clone())
                    .with("result", "failed")
                    .with("slot", &p.slot)
                    .with("version", &p.version)
                    .with("running_slot", b)
                    .with("running_version", &running),
            );
            let _ = write_last_result(
                dir,
                &[
                    ("result", "failed"),
                    ("slot", &p.slot),
                    ("version", &p.version),
                    ("message", &msg),
                ],
            );
            let _ = std::fs::remove_file(dir.join("pending"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(slot: &str) -> Pending {
        Pending {
            slot: slot.into(),
            version: "v2".into(),
            from_slot: other_slot(slot).into(),
            from_version: "v1".into(),
            installed_at: 1_700_000_000,
        }
    }

    #[test]
    fn booted_slot_comes_from_grub() {
        assert_eq!(
            booted_slot_in("console=ttyS0 quiet rauc.slot=B panic=10").as_deref(),
            Some("B")
        );
        assert_eq!(booted_slot_in("console=ttyS0 quiet"), None);
        assert_eq!(booted_slot_in("rauc.slot="), None);
    }

    #[test]
    fn pending_round_trips_and_the_init_finds_its_slot_line() {
        let p = pending("B");
        let text = p.to_kv();
        assert!(text.lines().any(|l| l == "slot=B"), "{text}");
        assert_eq!(Pending::from_kv(&text), Some(p));
        assert_eq!(Pending::from_kv("version=v2\n"), None);
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(None, Some(pending("B"))), Verdict::NoSlots);
        assert_eq!(verdict(Some("A"), None), Verdict::Good);
        assert_eq!(
            verdict(Some("B"), Some(pending("B"))),
            Verdict::NewSlotGood(pending("B"))
        );
        assert_eq!(
            verdict(Some("A"), Some(pending("B"))),
            Verdict::NewSlotFailed(pending("B"))
        );
    }

    #[test]
    fn rauc_errors_become_one_line() {
        let e = "rauc-Message: 05:52:30.460: Reading bundle: /tmp/other.raucb\n\
                 rauc-Message: 05:52:30.462: Verifying bundle signature... \n\
                 signature verification failed: Verify error: self-signed certificate\n";
        assert_eq!(
            error_line(e),
            "signature verification failed: Verify error: self-signed certificate"
        );
        assert_eq!(error_line(""), "rauc failed without a message");
    }

    #[test]
    fn last_result_is_written_and_read() {
        let d = tempfile::tempdir().unwrap();
        write_last_result(d.path(), &[("result", "failed"), ("message", "a\nb")]).unwrap();
        let m = read_last_result(d.path()).unwrap();
        assert_eq!(m["result"], "failed");
        assert_eq!(m["message"], "ab");
        assert!(m.contains_key("time"));
    }
}
