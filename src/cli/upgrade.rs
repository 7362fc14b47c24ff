//! `bulkhead upgrade FILE [--reboot]` and `bulkhead upgrade status`: A/B firmware upgrades
//! through RAUC (see src/upgrade.rs and docs/upgrade.md).
//!
//! An install first has RAUC check the bundle (`rauc info`: the signature against the
//! keyring of this image, the compatible string against this box's); a bundle that fails is
//! refused with one line on stderr and exit status 2, before anything is written. Then
//! `rauc install` writes the slot that is not running (progress on stdout), makes it the
//! one GRUB tries next, and the install is recorded as pending until the new slot is ready.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use clap::Args;

use super::Format;
use crate::upgrade as up;

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The bundle to install (bulkhead-VERSION.raucb), or `status` to show the slots.
    #[arg(value_name = "FILE|status")]
    pub target: PathBuf,
    /// Reboot into the new slot once it is installed.
    #[arg(long)]
    pub reboot: bool,
    /// The new slot is marked good only if `bulkhead confirm` also runs within this time
    /// after it got ready (e.g. 60s, 10m); else the box goes back to the old slot by itself.
    #[arg(long, value_name = "DURATION")]
    pub confirm_within: Option<String>,
    /// With `status`: text or json.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

fn refuse(file: &Path, why: &str) -> ExitCode {
    eprintln!(
        "bulkhead upgrade: {}: refused: {why}; nothing was installed",
        file.display()
    );
    ExitCode::from(2)
}

pub fn run(args: UpgradeArgs) -> ExitCode {
    if args.target.as_os_str() == "status" {
        return status(args.format);
    }
    let confirm_within = match args.confirm_within.as_deref().map(parse_confirm_within) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            eprintln!("bulkhead upgrade: --confirm-within: {e}");
            return ExitCode::from(2);
        }
    };
    install(&args.target, args.reboot, confirm_within)
}

/// `--confirm-within`: a duration like `bulkhead apply --confirm-within` takes, not zero.
pub fn parse_confirm_within(s: &str) -> Result<u64, String> {
    match crate::model::addr::parse_duration(s)? {
        0 => Err(format!(
            "`{s}` is no time to confirm in (give e.g. 60s or 10m)"
        )),
        n => Ok(n),
    }
}

fn install(file: &Path, reboot: bool, confirm_within: Option<u64>) -> ExitCode {
    let Some(booted) = up::booted_slot() else {
        eprintln!(
            "bulkhead upgrade: this system was not booted from an A/B slot (no rauc.slot= on the kernel command line): upgrades need the appliance's disk image"
        );
        return ExitCode::from(1);
    };
    if !file.is_file() {
        eprintln!("bulkhead upgrade: {}: no such bundle file", file.display());
        return ExitCode::from(2);
    }
    // 1. the signature and the manifest, before anything is written
    let info = match Command::new("rauc")
        .args(["info", "--output-format=json"])
        .arg(file)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bulkhead upgrade: cannot run rauc: {e}");
            return ExitCode::from(1);
        }
    };
    if !info.status.success() {
        return refuse(
            file,
            &up::error_line(&String::from_utf8_lossy(&info.stderr)),
        );
    }
    let manifest: serde_json::Value = match serde_json::from_slice(&info.stdout) {
        Ok(v) => v,
        Err(e) => return refuse(file, &format!("unreadable bundle manifest: {e}")),
    };
    let compatible = manifest["compatible"].as_str().unwrap_or("");
    let version = manifest["version"]
        .as_str()
        .unwrap_or("unknown")
        .to_string();
    let ours = up::system_compatible().unwrap_or_default();
    if compatible != ours {
        return refuse(
            file,
            &format!("the bundle is for '{compatible}', this box is '{ours}' (compatible string)"),
        );
    }
    let target = up::other_slot(&booted);
    let from_version = up::image_version().unwrap_or_else(|| "unknown".into());
    println!(
        "bulkhead upgrade: installing {version} into slot {target} (running {from_version} on slot {booted})"
    );
    let _ = std::io::stdout().flush();
    // 2. RAUC writes the inactive slot and makes it the one GRUB tries next
    let st = Command::new("rauc")
        .args(["install", "--progress"])
        .arg(file)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|c| c.wait_with_output());
    match st {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let err = up::error_line(&String::from_utf8_lossy(&o.stderr));
            let lower = err.to_ascii_lowercase();
            if lower.contains("signature") || lower.contains("compatible") {
                return refuse(file, &err);
            }
            eprintln!(
                "bulkhead upgrade: {}: install failed: {err}",
                file.display()
            );
            let dir = up::upgrade_dir();
            let _ = up::write_last_result(
                &dir,
                &[
                    ("result", "install-failed"),
                    ("slot", target),
                    ("version", &version),
                    ("message", &err),
                ],
            );
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("bulkhead upgrade: cannot run rauc install: {e}");
            return ExitCode::from(1);
        }
    }
    // 3. pending until the new slot is ready (then `bulkhead run` marks it good)
    let dir = up::upgrade_dir();
    let p = up::Pending {
        slot: target.to_string(),
        version: version.clone(),
        from_slot: booted.clone(),
        from_version: from_version.clone(),
        installed_at: crate::dhcp::leases::unix_now(),
        confirm_within,
        ..Default::default()
    };
    if let Err(e) = up::write_pending(&dir, &p) {
        eprintln!(
            "bulkhead upgrade: installed, but recording it in {} failed: {e}",
            dir.display()
        );
        return ExitCode::from(1);
    }
    let msg = format!("{version} installed into slot {target}; waiting for its first boot");
    let _ = up::write_last_result(
        &dir,
        &[
            ("result", "installed"),
            ("slot", target),
            ("version", &version),
            ("message", &msg),
        ],
    );
    println!(
        "bulkhead upgrade: {version} is in slot {target}. On the next boot it gets a bounded time to become ready, else the box returns to slot {booted} ({from_version}) by itself."
    );
    if let Some(s) = confirm_within {
        println!(
            "bulkhead upgrade: once it is ready, run `bulkhead confirm` within {s} s, else slot {target} is marked bad and the box reboots into slot {booted}"
        );
    }
    if reboot {
        println!("bulkhead upgrade: rebooting");
        let _ = std::io::stdout().flush();
        if let Err(e) = Command::new("/sbin/reboot").status() {
            eprintln!("bulkhead upgrade: reboot failed: {e}");
            return ExitCode::from(1);
        }
    } else {
        println!("bulkhead upgrade: reboot to run it (`reboot`)");
    }
    ExitCode::SUCCESS
}

/// One slot as `upgrade status` shows it.
#[derive(Debug, serde::Serialize, PartialEq, Eq)]
pub struct SlotView {
    pub name: String,
    pub bootname: String,
    pub device: String,
    pub state: String,
    pub boot_status: String,
    pub version: Option<String>,
    pub installed: Option<String>,
}

/// The slots of `rauc status --detailed --output-format=json`.
pub fn slots_of(v: &serde_json::Value, booted_version: Option<&str>) -> Vec<SlotView> {
    let mut out = Vec::new();
    for entry in v["slots"].as_array().into_iter().flatten() {
        let Some(obj) = entry.as_object() else {
            continue;
        };
        for (name, s) in obj {
            let st = &s["slot_status"];
            let state = s["state"].as_str().unwrap_or("?").to_string();
            let mut version = st["bundle"]["version"].as_str().map(str::to_string);
            if version.is_none() && state == "booted" {
                version = booted_version.map(str::to_string);
            }
            out.push(SlotView {
                name: name.clone(),
                bootname: s["bootname"].as_str().unwrap_or("?").to_string(),
                device: s["device"].as_str().unwrap_or("?").to_string(),
                state,
                boot_status: s["boot_status"].as_str().unwrap_or("?").to_string(),
                version,
                installed: st["installed"]["timestamp"].as_str().map(str::to_string),
            });
        }
    }
    out.sort_by(|a, b| a.bootname.cmp(&b.bootname));
    out
}

fn status(format: Format) -> ExitCode {
    let booted = up::booted_slot();
    let o = match Command::new("rauc")
        .args(["status", "--detailed", "--output-format=json"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!(
                "bulkhead upgrade status: {}",
                up::error_line(&String::from_utf8_lossy(&o.stderr))
            );
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("bulkhead upgrade status: cannot run rauc: {e}");
            return ExitCode::from(1);
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let running = up::image_version();
    let slots = slots_of(&v, running.as_deref());
    let primary = v["boot_primary"].as_str().map(str::to_string);
    let primary_boot = slots
        .iter()
        .find(|s| Some(&s.name) == primary.as_ref())
        .map(|s| s.bootname.clone());
    let dir = up::upgrade_dir();
    let pending = up::read_pending(&dir);
    let last = up::read_last_result(&dir);
    let mut out = std::io::stdout().lock();
    if format == Format::Json {
        let j = serde_json::json!({
            "booted": booted,
            "running_version": running,
            "primary": primary_boot,
            "slots": slots,
            "pending": pending.as_ref().map(|p| serde_json::json!({
                "slot": p.slot, "version": p.version, "from_slot": p.from_slot,
                "from_version": p.from_version, "installed_at": p.installed_at,
                "confirm_within": p.confirm_within, "confirm_deadline": p.confirm_deadline,
                "confirmed_at": p.confirmed_at, "unconfirmed": p.unconfirmed})),
            "last_result": last,
        });
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&j).expect("json"));
        return ExitCode::SUCCESS;
    }
    let _ = writeln!(
        out,
        "booted:  slot {} ({})",
        booted.as_deref().unwrap_or("?"),
        running.as_deref().unwrap_or("unknown version")
    );
    let _ = writeln!(
        out,
        "next boot: slot {}",
        primary_boot
            .as_deref()
            .unwrap_or("? (no slot is marked good)")
    );
    for s in &slots {
        let _ = writeln!(
            out,
            "slot {}  {:<10} {:<9} {:<5} version {}{}",
            s.bootname,
            s.device,
            s.state,
            s.boot_status,
            s.version.as_deref().unwrap_or("(empty or unknown)"),
            s.installed
                .as_deref()
                .map(|t| format!("  installed {t}"))
                .unwrap_or_default()
        );
    }
    if let Some(p) = pending {
        let _ = writeln!(out, "{}", pending_line(&p, crate::dhcp::leases::unix_now()));
    }
    match last {
        Some(m) => {
            let _ = writeln!(
                out,
                "last result: {}: {}",
                m.get("result").map(String::as_str).unwrap_or("?"),
                m.get("message").map(String::as_str).unwrap_or("")
            );
        }
        None => {
            let _ = writeln!(out, "last result: none (no upgrade yet)");
        }
    }
    ExitCode::SUCCESS
}

/// The `pending:` line of `upgrade status`.
pub fn pending_line(p: &up::Pending, now: u64) -> String {
    let head = format!(
        "pending: {} in slot {} (from {} on slot {})",
        p.version, p.slot, p.from_version, p.from_slot
    );
    match (p.confirm_within, p.confirm_deadline) {
        (None, _) => format!("{head}, waiting for its first healthy boot"),
        _ if p.unconfirmed => format!(
            "{head}, NOT CONFIRMED in time: going back to slot {}",
            p.from_slot
        ),
        _ if p.confirmed_at.is_some() => format!("{head}, confirmed; being marked good"),
        (Some(w), None) => format!(
            "{head}, waiting for its first healthy boot, then for `bulkhead confirm` within {w} s"
        ),
        (Some(_), Some(d)) => format!(
            "{head}, PENDING CONFIRMATION: run `bulkhead confirm` by {} ({} s left), else back to slot {}",
            rfc3339(d),
            d.saturating_sub(now),
            p.from_slot
        ),
    }
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(t: u64) -> String {
    let days = (t / 86400) as i64;
    let s = t % 86400;
    // civil from days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_the_pending_confirmation_and_its_deadline() {
        let mut p = up::Pending {
            slot: "B".into(),
            version: "v2".into(),
            from_slot: "A".into(),
            from_version: "v1".into(),
            installed_at: 1,
            confirm_within: Some(60),
            ..Default::default()
        };
        assert!(pending_line(&p, 0).contains("then for `bulkhead confirm` within 60 s"));
        p.confirm_deadline = Some(1_796_540_460);
        let l = pending_line(&p, 1_796_540_420);
        assert!(
            l.contains("PENDING CONFIRMATION: run `bulkhead confirm` by 2026-12-06T"),
            "{l}"
        );
        assert!(l.contains("(40 s left), else back to slot A"), "{l}");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn confirm_within_parses_like_commit_confirm() {
        assert_eq!(parse_confirm_within("60s"), Ok(60));
        assert_eq!(parse_confirm_within("1m30s"), Ok(90));
        assert!(parse_confirm_within("0s").is_err());
        assert!(
            parse_confirm_within("soon")
                .unwrap_err()
                .contains("not a duration")
        );
    }

    #[test]
    fn slots_from_rauc_status_json() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"compatible":"bulkhead-x86_64","booted":"A","boot_primary":"system.1",
            "slots":[{"system.1":{"class":"system","device":"/dev/vda3","type":"raw","bootname":"B",
              "state":"inactive","boot_status":"good","slot_status":{"bundle":{"compatible":"bulkhead-x86_64","version":"v2"},
              "installed":{"timestamp":"2026-12-06T06:00:00Z","count":1}}}},
             {"system.0":{"class":"system","device":"/dev/vda2","type":"raw","bootname":"A",
              "state":"booted","boot_status":"good","slot_status":{}}}]}"#,
        )
        .unwrap();
        let s = slots_of(&v, Some("v1"));
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].bootname, "A");
        assert_eq!(s[0].version.as_deref(), Some("v1"));
        assert_eq!(s[1].bootname, "B");
        assert_eq!(s[1].version.as_deref(), Some("v2"));
        assert_eq!(s[1].installed.as_deref(), Some("2026-12-06T06:00:00Z"));
    }
}
