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

/// An install waiting for the new slot's first healthy boot (and, with `bulkhead upgrade
/// --confirm-within`, for an operator's `bulkhead confirm`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pending {
    pub slot: String,
    pub version: String,
    pub from_slot: String,
    pub from_version: String,
    pub installed_at: u64,
    /// `--confirm-within`: seconds an operator has, from the new slot's first `bulkhead:
    /// ready`, to run `bulkhead confirm`.
    pub confirm_within: Option<u64>,
    /// When that window closes (unix seconds), set at the new slot's first ready. It stays
    /// across reboots of the new slot: a reboot in the window does not extend it.
    pub confirm_deadline: Option<u64>,
    /// When `bulkhead confirm` confirmed the new slot (it is marked good then).
    pub confirmed_at: Option<u64>,
    /// The window closed without a confirmation: the new slot was marked bad and the box
    /// rebooted into the old one (which reports it).
    pub unconfirmed: bool,
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
            confirm_within: m.get("confirm_within").and_then(|v| v.parse().ok()),
            confirm_deadline: m.get("confirm_deadline").and_then(|v| v.parse().ok()),
            confirmed_at: m.get("confirmed_at").and_then(|v| v.parse().ok()),
            unconfirmed: m.get("unconfirmed").is_some_and(|v| v == "1"),
        })
    }

    /// Ready on its slot and waiting for `bulkhead confirm`.
    pub fn awaiting_confirmation(&self) -> bool {
        self.confirm_within.is_some() && self.confirmed_at.is_none() && !self.unconfirmed
    }

    pub fn to_kv(&self) -> String {
        let mut m = BTreeMap::new();
        m.insert("slot".to_string(), self.slot.clone());
        m.insert("version".to_string(), self.version.clone());
        m.insert("from_slot".to_string(), self.from_slot.clone());
        m.insert("from_version".to_string(), self.from_version.clone());
        m.insert("installed_at".to_string(), self.installed_at.to_string());
        let opt = |v: Option<u64>| v.map(|x| x.to_string());
        for (k, v) in [
            ("confirm_within", opt(self.confirm_within)),
            ("confirm_deadline", opt(self.confirm_deadline)),
            ("confirmed_at", opt(self.confirmed_at)),
            ("unconfirmed", self.unconfirmed.then(|| "1".to_string())),
        ] {
            if let Some(v) = v {
                m.insert(k.to_string(), v);
            }
        }
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

/// The hardware watchdog for `bulkhead run`, when the init asks for it with
/// `BULKHEAD_WATCHDOG=SECONDS` (the appliance sets it when it has `/dev/watchdog`; `0` or
/// unset: none, so the daemon never arms a watchdog of a host it runs on in the lab or a
/// test). The daemon pets it from its main loop; a frozen daemon or a hung kernel resets the
/// box, and on a new slot GRUB's try counter then returns to the old one.
pub fn watchdog_from_env() -> Option<crate::sys::watchdog::Watchdog> {
    let v = std::env::var("BULKHEAD_WATCHDOG").ok()?;
    let secs: u32 = match v.trim().parse() {
        Ok(0) => return None,
        Ok(n) => n,
        Err(_) => {
            tracing::error!("BULKHEAD_WATCHDOG={v}: not a number of seconds; no watchdog");
            return None;
        }
    };
    let dev = std::env::var_os("BULKHEAD_WATCHDOG_DEVICE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/watchdog"));
    match crate::sys::watchdog::Watchdog::open(&dev, secs) {
        Ok(w) => {
            tracing::info!(
                device = %dev.display(),
                timeout_s = w.timeout(),
                "hardware watchdog armed: the box resets if this daemon stops petting it"
            );
            Some(w)
        }
        Err(e) => {
            tracing::error!("cannot open the watchdog {}: {e}", dev.display());
            None
        }
    }
}

/// Pet the watchdog, if there is one.
pub fn pet(w: &mut Option<crate::sys::watchdog::Watchdog>) {
    if let Some(d) = w.as_mut()
        && let Err(e) = d.pet()
    {
        tracing::error!("petting the watchdog failed: {e}");
    }
}

/// Written (tmpfs) once this boot of a newly installed slot got ready: the init's ready
/// watchdog stands down even while the slot still waits for `bulkhead confirm`.
pub const SLOT_READY_FLAG: &str = "/run/bulkhead/slot-ready";

/// What a slot waiting for `bulkhead confirm` does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmStep {
    /// `bulkhead confirm` ran: finish the upgrade.
    Confirmed,
    /// The window closed: mark the slot bad and reboot into the old one.
    Expired,
    /// Keep waiting (seconds left).
    Wait(u64),
}

/// The confirmation window of `p` at `now`: opened at the first ready (the deadline, kept
/// from an earlier boot of the same slot, is not moved by a reboot).
pub fn open_window(p: &Pending, now: u64) -> Pending {
    let mut p = p.clone();
    if p.confirm_deadline.is_none() {
        p.confirm_deadline = Some(now.saturating_add(p.confirm_within.unwrap_or(0)));
    }
    p
}

pub fn confirm_step(p: &Pending, now: u64) -> ConfirmStep {
    if p.confirmed_at.is_some() {
        return ConfirmStep::Confirmed;
    }
    match p.confirm_deadline {
        Some(d) if now >= d => ConfirmStep::Expired,
        Some(d) => ConfirmStep::Wait(d - now),
        None => ConfirmStep::Wait(p.confirm_within.unwrap_or(0)),
    }
}

/// The message of the `upgrade` event the old slot sends about a new one that is gone.
pub fn failed_message(p: &Pending, booted: &str, running: &str) -> String {
    if p.unconfirmed {
        format!(
            "upgrade to {} failed: slot {} was not confirmed (`bulkhead confirm`) within {} s of getting ready; it was marked bad and the box is back on slot {booted} ({running})",
            p.version,
            p.slot,
            p.confirm_within.unwrap_or(0)
        )
    } else if p.confirm_deadline.is_some() {
        format!(
            "upgrade to {} failed: slot {} got ready but was not confirmed (`bulkhead confirm`) before it stopped and its tries ran out; back on slot {booted} ({running})",
            p.version, p.slot
        )
    } else {
        format!(
            "upgrade to {} failed: slot {} did not get ready; back on slot {booted} ({running})",
            p.version, p.slot
        )
    }
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
        Verdict::NewSlotGood(p) => {
            let _ = std::fs::write(SLOT_READY_FLAG, format!("{}\n", p.slot));
            if p.confirm_within.is_some() && p.confirmed_at.is_none() {
                wait_for_confirmation(dir, p);
            } else {
                finish_ok(dir, &p);
            }
        }
        Verdict::NewSlotFailed(p) => {
            let b = booted.unwrap_or("?");
            let msg = failed_message(&p, b, &running);
            tracing::error!("{msg}");
            if let Err(e) = rauc(&["status", "mark-bad", "other"]) {
                tracing::error!("marking slot {} bad failed: {e}", p.slot);
            }
            if let Err(e) = rauc(&["status", "mark-active", "booted"]) {
                tracing::error!("making slot {b} primary again failed: {e}");
            }
            let result = if p.unconfirmed {
                "not-confirmed"
            } else {
                "failed"
            };
            emit(
                Event::new(Kind::Upgrade, Severity::Error, msg.clone())
                    .with("result", result)
                    .with("slot", &p.slot)
                    .with("version", &p.version)
                    .with("running_slot", b)
                    .with("running_version", &running),
            );
            let _ = write_last_result(
                dir,
                &[
                    ("result", result),
                    ("slot", &p.slot),
                    ("version", &p.version),
                    ("message", &msg),
                ],
            );
            let _ = std::fs::remove_file(dir.join("pending"));
        }
    }
}

/// The new slot is healthy (and confirmed, when that was asked for): mark it good.
fn finish_ok(dir: &Path, p: &Pending) {
    use crate::logship::{Event, Kind, Severity, emit};
    match rauc(&["status", "mark-good"]) {
        Ok(_) => {
            let how = if p.confirmed_at.is_some() {
                " and confirmed"
            } else {
                ""
            };
            let msg = format!(
                "upgrade to {} ok: slot {} is ready{how} and marked good (was {} on slot {})",
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
    }
}

/// `--confirm-within`: the slot is ready; wait for `bulkhead confirm` (which marks it good
/// and records `confirmed_at`) until the deadline, else mark it bad and reboot into the old
/// slot. The deadline is on the data partition, so a reboot in the window does not skip it.
fn wait_for_confirmation(dir: &Path, p: Pending) {
    use crate::logship::{Event, Kind, Severity, emit};
    let now = crate::dhcp::leases::unix_now();
    let fresh = p.confirm_deadline.is_none();
    let p = open_window(&p, now);
    let deadline = p.confirm_deadline.unwrap_or(now);
    if fresh {
        if let Err(e) = write_pending(dir, &p) {
            tracing::error!("recording the confirmation deadline failed: {e}");
        }
        let msg = format!(
            "upgrade to {}: slot {} is ready; run `bulkhead confirm` within {} s, else the box goes back to slot {} ({})",
            p.version,
            p.slot,
            deadline.saturating_sub(now),
            p.from_slot,
            p.from_version
        );
        tracing::warn!("{msg}");
        emit(
            Event::new(Kind::Upgrade, Severity::Warning, msg)
                .with("result", "awaiting-confirmation")
                .with("slot", &p.slot)
                .with("version", &p.version)
                .with("deadline", deadline.to_string()),
        );
    } else {
        tracing::warn!(
            "slot {} is ready again; `bulkhead confirm` is still awaited ({} s left)",
            p.slot,
            deadline.saturating_sub(now)
        );
    }
    loop {
        let cur = match read_pending(dir) {
            Some(c) if c.slot == p.slot => c,
            _ => return, // settled elsewhere
        };
        match confirm_step(&cur, crate::dhcp::leases::unix_now()) {
            ConfirmStep::Confirmed => return finish_ok(dir, &cur),
            ConfirmStep::Wait(_) => std::thread::sleep(std::time::Duration::from_secs(1)),
            ConfirmStep::Expired => return not_confirmed(dir, cur),
        }
    }
}

fn not_confirmed(dir: &Path, mut p: Pending) {
    use crate::logship::{Event, Kind, Severity, emit};
    p.unconfirmed = true;
    if let Err(e) = write_pending(dir, &p) {
        tracing::error!("recording the missed confirmation failed: {e}");
    }
    let msg = format!(
        "upgrade to {}: slot {} was not confirmed within {} s: marking it bad and rebooting into slot {} ({})",
        p.version,
        p.slot,
        p.confirm_within.unwrap_or(0),
        p.from_slot,
        p.from_version
    );
    tracing::error!("{msg}");
    emit(
        Event::new(Kind::Upgrade, Severity::Error, msg)
            .with("result", "not-confirmed")
            .with("slot", &p.slot)
            .with("version", &p.version),
    );
    if let Err(e) = rauc(&["status", "mark-bad", "booted"]) {
        // rebooting anyway: the deadline has passed, so every further boot of this slot
        // ends here at once, until GRUB's tries for it run out
        tracing::error!("marking slot {} bad failed: {e}", p.slot);
    }
    if let Err(e) = Command::new("/sbin/reboot").status() {
        tracing::error!("reboot failed: {e}");
    }
}

/// `bulkhead confirm` on a new slot that waits for it: mark the slot good and record the
/// confirmation (the daemon then reports it and clears the pending install). Ok(None): no
/// upgrade waits for a confirmation on this boot.
pub fn confirm_upgrade() -> Result<Option<Pending>, String> {
    let Some(booted) = booted_slot() else {
        return Ok(None);
    };
    let dir = upgrade_dir();
    let Some(mut p) = read_pending(&dir) else {
        return Ok(None);
    };
    if p.slot != booted || p.confirm_within.is_none() || p.confirmed_at.is_some() {
        return Ok(None);
    }
    if p.unconfirmed {
        return Err(format!(
            "too late: slot {} was not confirmed in time and the box is going back to slot {}",
            p.slot, p.from_slot
        ));
    }
    if !Path::new(SLOT_READY_FLAG).exists() || p.confirm_deadline.is_none() {
        return Err(format!(
            "slot {} ({}) is not ready yet: confirm it once `bulkhead: ready` (`bulkhead upgrade status`)",
            p.slot, p.version
        ));
    }
    let now = crate::dhcp::leases::unix_now();
    if confirm_step(&p, now) == ConfirmStep::Expired {
        return Err(format!(
            "too late: the confirmation window of slot {} closed; the box is going back to slot {}",
            p.slot, p.from_slot
        ));
    }
    rauc(&["status", "mark-good"])
        .map_err(|e| format!("marking slot {} good failed: {e}", p.slot))?;
    p.confirmed_at = Some(now);
    write_pending(&dir, &p).map_err(|e| {
        format!(
            "slot {} is marked good, but recording it failed: {e}",
            p.slot
        )
    })?;
    Ok(Some(p))
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
            ..Default::default()
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
    fn confirm_fields_round_trip() {
        let mut p = pending("B");
        p.confirm_within = Some(60);
        p.confirm_deadline = Some(1_700_000_100);
        p.unconfirmed = true;
        let text = p.to_kv();
        assert!(text.lines().any(|l| l == "slot=B"), "{text}");
        assert!(text.contains("confirm_within=60\n"), "{text}");
        assert_eq!(Pending::from_kv(&text), Some(p.clone()));
        // without --confirm-within the record is as before
        assert!(!pending("B").to_kv().contains("confirm"));
    }

    #[test]
    fn the_confirmation_window_opens_at_ready_and_a_reboot_does_not_move_it() {
        let mut p = pending("B");
        p.confirm_within = Some(60);
        assert!(p.awaiting_confirmation());
        let first = open_window(&p, 1000);
        assert_eq!(first.confirm_deadline, Some(1060));
        assert_eq!(confirm_step(&first, 1010), ConfirmStep::Wait(50));
        // the slot rebooted in the window: the same deadline
        let again = open_window(&first, 1040);
        assert_eq!(again.confirm_deadline, Some(1060));
        assert_eq!(confirm_step(&again, 1060), ConfirmStep::Expired);
        let mut ok = again.clone();
        ok.confirmed_at = Some(1050);
        assert_eq!(confirm_step(&ok, 2000), ConfirmStep::Confirmed);
        assert!(!ok.awaiting_confirmation());
    }

    #[test]
    fn the_old_slot_says_why_the_new_one_failed() {
        let mut p = pending("B");
        assert!(failed_message(&p, "A", "v1").contains("did not get ready"));
        p.confirm_within = Some(60);
        p.confirm_deadline = Some(1);
        p.unconfirmed = true;
        let m = failed_message(&p, "A", "v1");
        assert!(m.contains("was not confirmed"), "{m}");
        assert!(m.contains("within 60 s"), "{m}");
        assert!(m.contains("back on slot A (v1)"), "{m}");
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
