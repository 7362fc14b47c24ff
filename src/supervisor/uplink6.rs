//! The uplink's IPv6 client: one `dhcpcd` per uplink, supervised by `bulkhead run`, for
//! `[uplink] address6 = "dhcpv6"` (IA_NA) and `prefix_delegation = PLEN` (IA_PD), both in the
//! same process (never a second client on the interface). `address6 = "slaac"` is the
//! kernel's SLAAC (accept_ra = 2 on the uplink); dhcpcd runs beside it only to ask for a
//! prefix. dhcpcd never solicits routers itself (`noipv6rs`: it would switch the kernel's RA
//! handling off) and runs only its DHCPv6 side (`ipv6only`: IPv4 is udhcpc's, see
//! [`super::uplink`]). Not run in the lab.
//!
//! dhcpcd reports through its hook script (`-c`): the script writes the event's DHCPv6
//! variables into `uplink6/event.env` in the state directory (write to a temporary file and
//! rename, so a reader sees a whole event), and [`watch`] turns every new event into a
//! [`Delegation`] or its loss. The last delegation is kept in `uplink6/delegated.json`
//! (written with [`crate::sys::fs::write_atomic`]), so after a restart of `bulkhead run` or
//! of the box the segments keep their numbering until the upstream answers again — as long
//! as its valid lifetime has not run out.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use crate::model::{Model, Uplink6Addressing};

/// The hook dhcpcd runs for each event: DHCPv6 outcomes only, written whole.
const HOOK: &str = r#"#!/bin/sh
# bulkhead: hand dhcpcd's DHCPv6 outcome to bulkhead run (it numbers the segments)
case "$reason" in
  BOUND6|RENEW6|REBIND6|REBOOT6|EXPIRE6|RELEASE6|STOP6) ;;
  *) exit 0 ;;
esac
out="@DIR@/event.env"
{
  echo "reason=$reason"
  echo "interface=$interface"
  env | grep -E '^new_dhcp6_ia_(pd|na)[0-9]+_' | sort
} > "$out.tmp" && mv -f "$out.tmp" "$out"
echo "bulkhead: uplink $interface DHCPv6 $reason"
exit 0
"#;

/// Whether the model needs the uplink's DHCPv6 client.
pub fn wanted(m: &Model) -> bool {
    m.uplink.address6 == Uplink6Addressing::Dhcpv6 || m.uplink.prefix_delegation.is_some()
}

/// What the client depends on: a reload that changes it restarts the client.
pub fn key(m: &Model) -> Option<(String, bool, Option<u8>)> {
    wanted(m).then(|| {
        (
            m.uplink.interface.clone(),
            m.uplink.address6 == Uplink6Addressing::Dhcpv6,
            m.uplink.prefix_delegation,
        )
    })
}

/// Where the hook writes and the delegation is kept.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("uplink6")
}

fn event_path(state_dir: &Path) -> PathBuf {
    dir(state_dir).join("event.env")
}

fn persisted_path(state_dir: &Path) -> PathBuf {
    dir(state_dir).join("delegated.json")
}

/// dhcpcd's config for the model.
pub fn config(m: &Model) -> String {
    let mut s = String::from(
        "# written by bulkhead run from [uplink] address6 / prefix_delegation\n\
         ipv6only\n\
         # the kernel takes the upstream's RAs (address6 = \"slaac\"); dhcpcd asks DHCPv6 only\n\
         noipv6rs\n\
         duid\n\
         persistent\n\
         option rapid_commit\n",
    );
    if m.uplink.address6 == Uplink6Addressing::Dhcpv6 {
        s.push_str("ia_na 1\n");
    }
    if let Some(plen) = m.uplink.prefix_delegation {
        // a hint of the length wanted; no downstream interface: bulkhead numbers the segments
        s.push_str(&format!("ia_pd 2/::/{plen}\n"));
    }
    s
}

/// Start dhcpcd, or None when the model needs no IPv6 client, in the lab, or when it cannot
/// run.
pub fn start(m: &Model, state_dir: &Path, lab: bool) -> Option<Child> {
    if !wanted(m) || lab {
        return None;
    }
    let d = dir(state_dir);
    let (conf, hook) = (d.join("dhcpcd.conf"), d.join("dhcpcd-hook.sh"));
    let written = std::fs::create_dir_all(&d)
        .and_then(|_| std::fs::write(&conf, config(m)))
        .and_then(|_| std::fs::write(&hook, HOOK.replace("@DIR@", &d.to_string_lossy())))
        .and_then(|_| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
        });
    if let Err(e) = written {
        tracing::error!(
            "cannot write the uplink's DHCPv6 client config in {}: {e}",
            d.display()
        );
        return None;
    }
    // -B: foreground; -6: DHCPv6 only; -f/-c: our config and hook, nothing of the system's
    match Command::new("dhcpcd")
        .args(["-B", "-6", "-f"])
        .arg(&conf)
        .arg("-c")
        .arg(&hook)
        .arg(&m.uplink.interface)
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(c) => {
            tracing::info!(interface = %m.uplink.interface, pid = c.id(), prefix_delegation = ?m.uplink.prefix_delegation, "uplink DHCPv6 client (dhcpcd) started");
            Some(c)
        }
        Err(e) => {
            tracing::error!(interface = %m.uplink.interface, "cannot start the uplink's DHCPv6 client (dhcpcd): {e}");
            None
        }
    }
}

/// Stop the client (SIGTERM: dhcpcd keeps its lease for the next start, without releasing).
pub fn stop(child: Option<Child>) {
    if let Some(mut c) = child {
        let _ = crate::sys::proc::terminate(c.id());
        let _ = c.wait();
    }
}

/// A prefix delegated to the uplink, with its lifetimes as the upstream gave them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    pub prefix: Ipv6Net,
    /// Preferred lifetime, seconds from `at`.
    pub preferred: u32,
    /// Valid lifetime, seconds from `at`.
    pub valid: u32,
    /// When it was received (unix seconds).
    pub at: u64,
}

impl Delegation {
    /// Still valid at `now`?
    pub fn valid_at(&self, now: u64) -> bool {
        self.valid == u32::MAX || now < self.at.saturating_add(u64::from(self.valid))
    }
}

/// What one hook event means for the delegation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The upstream delegated (or renewed) this prefix.
    Bound(Delegation),
    /// The delegation is gone (expired, released, or the upstream gave no prefix).
    Lost { reason: String },
    /// Nothing changes (dhcpcd stopping keeps a lease that is still valid).
    Keep,
}

/// Parse the hook's `event.env` written at `now`. Of the delegated prefixes, the one with the
/// longest valid lifetime counts (on renumbering the upstream returns the old one with
/// lifetime 0 next to the new one).
pub fn parse_event(text: &str, now: u64) -> Result<Event, String> {
    let mut reason = None;
    let mut vars = std::collections::BTreeMap::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k == "reason" {
            reason = Some(v.to_string());
        } else {
            vars.insert(k.to_string(), v.to_string());
        }
    }
    let reason = reason.ok_or("no reason= line")?;
    match reason.as_str() {
        "EXPIRE6" | "RELEASE6" => return Ok(Event::Lost { reason }),
        "STOP6" => return Ok(Event::Keep),
        "BOUND6" | "RENEW6" | "REBIND6" | "REBOOT6" => {}
        other => return Err(format!("unexpected reason {other}")),
    }
    let mut best: Option<Delegation> = None;
    for (k, v) in &vars {
        // new_dhcp6_ia_pdI_prefixJ = ADDR, with _length, _pltime, _vltime beside it
        let Some(rest) = k.strip_prefix("new_dhcp6_ia_pd") else {
            continue;
        };
        let Some((_, j)) = rest.split_once("_prefix") else {
            continue;
        };
        if j.is_empty() || !j.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let get = |suffix: &str| vars.get(&format!("{k}_{suffix}"));
        let addr: std::net::Ipv6Addr = v
            .parse()
            .map_err(|e| format!("{k}={v}: not an IPv6 address ({e})"))?;
        let len: u8 = get("length")
            .ok_or(format!("{k} has no {k}_length"))?
            .parse()
            .map_err(|e| format!("{k}_length: {e}"))?;
        let num = |s: &str| -> Result<u32, String> {
            get(s)
                .ok_or(format!("{k} has no {k}_{s}"))?
                .parse()
                .map_err(|e| format!("{k}_{s}: {e}"))
        };
        let (preferred, valid) = (num("pltime")?, num("vltime")?);
        let prefix = Ipv6Net::new(addr, len)
            .map_err(|e| format!("{k}: {addr}/{len}: {e}"))?
            .trunc();
        if valid == 0 || len > 64 {
            continue;
        }
        let d = Delegation {
            prefix,
            preferred,
            valid,
            at: now,
        };
        if best.is_none_or(|b| d.valid > b.valid) {
            best = Some(d);
        }
    }
    Ok(match best {
        Some(d) => Event::Bound(d),
        None => Event::Lost {
            reason: format!("{reason} without a delegated prefix"),
        },
    })
}

/// The delegation kept in the state directory, if it is still valid at `now`.
pub fn load(state_dir: &Path, now: u64) -> Option<Delegation> {
    let text = std::fs::read_to_string(persisted_path(state_dir)).ok()?;
    match serde_json::from_str::<Delegation>(&text) {
        Ok(d) if d.valid_at(now) => Some(d),
        Ok(d) => {
            tracing::info!(prefix = %d.prefix, "the kept delegated prefix has expired");
            None
        }
        Err(e) => {
            tracing::warn!("{}: {e}", persisted_path(state_dir).display());
            None
        }
    }
}

/// Keep the delegation (or its loss) in the state directory.
pub fn persist(state_dir: &Path, d: Option<&Delegation>) -> std::io::Result<()> {
    let p = persisted_path(state_dir);
    match d {
        Some(d) => crate::sys::fs::write_atomic(
            &p,
            serde_json::to_string_pretty(d)
                .expect("serializes")
                .as_bytes(),
            0o644,
        ),
        None => match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

/// Follow the hook's events: every new `event.env` is parsed and, when it changes the
/// delegation, handed to `send` (`None`: lost). The delegation in force (the kept one at the
/// start, then each new one) is also dropped here when its valid lifetime runs out without a
/// renewal, whatever dhcpcd reports: a prefix is never served past its valid lifetime. Runs
/// until the task is dropped.
pub async fn watch(state_dir: PathBuf, send: impl Fn(Option<Delegation>) + Send + 'static) {
    let path = event_path(&state_dir);
    let mut seen = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let mut current = load(&state_dir, crate::supervisor::gateway::now_unix());
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let now = crate::supervisor::gateway::now_unix();
        if let Some(d) = current
            && !d.valid_at(now)
        {
            tracing::warn!(prefix = %d.prefix, valid = d.valid, "the uplink lost its delegated prefix: its valid lifetime ran out without a renewal");
            current = None;
            send(None);
        }
        let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified()) else {
            continue;
        };
        if seen == Some(modified) {
            continue;
        }
        seen = Some(modified);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        match parse_event(&text, now) {
            Ok(Event::Bound(d)) => {
                current = Some(d);
                send(Some(d))
            }
            Ok(Event::Lost { reason }) => {
                tracing::warn!("the uplink lost its delegated prefix: {reason}");
                current = None;
                send(None)
            }
            Ok(Event::Keep) => {}
            Err(e) => tracing::error!("{}: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renumbering_picks_the_valid_prefix() {
        let t = "reason=RENEW6\ninterface=wan0\n\
                 new_dhcp6_ia_pd2_prefix1=2001:db8:100::\nnew_dhcp6_ia_pd2_prefix1_length=56\n\
                 new_dhcp6_ia_pd2_prefix1_pltime=0\nnew_dhcp6_ia_pd2_prefix1_vltime=0\n\
                 new_dhcp6_ia_pd2_prefix2=2001:db8:200::\nnew_dhcp6_ia_pd2_prefix2_length=56\n\
                 new_dhcp6_ia_pd2_prefix2_pltime=300\nnew_dhcp6_ia_pd2_prefix2_vltime=400\n";
        let Event::Bound(d) = parse_event(t, 1000).unwrap() else {
            panic!()
        };
        assert_eq!(d.prefix.to_string(), "2001:db8:200::/56");
        assert_eq!((d.preferred, d.valid, d.at), (300, 400, 1000));
        assert!(d.valid_at(1399) && !d.valid_at(1400));
    }

    #[test]
    fn expiry_and_stop() {
        assert!(matches!(
            parse_event("reason=EXPIRE6\n", 1).unwrap(),
            Event::Lost { .. }
        ));
        assert_eq!(parse_event("reason=STOP6\n", 1).unwrap(), Event::Keep);
        assert!(matches!(
            parse_event("reason=BOUND6\n", 1).unwrap(),
            Event::Lost { .. }
        ));
        let bad =
            "reason=BOUND6\nnew_dhcp6_ia_pd2_prefix1=zz\nnew_dhcp6_ia_pd2_prefix1_length=56\n";
        assert!(parse_event(bad, 1).unwrap_err().contains("zz"));
    }

    #[test]
    fn no_client_without_dhcpv6_or_prefix_delegation() {
        let model = |uplink: &str| {
            let text = format!(
                "{uplink}\n[segments.a]\ninterface = \"lan0\"\nsubnet = \"198.18.2.0/24\"\ngateway = \"198.18.2.1\"\nmanagement = true\n"
            );
            crate::plan::load_str("t.toml", &text).unwrap().0
        };
        // the kernel alone does SLAAC; no IPv6 at all needs nothing either
        assert!(!wanted(&model(
            "[uplink]\ninterface = \"wan0\"\naddress6 = \"slaac\""
        )));
        assert!(!wanted(&model("[uplink]\ninterface = \"wan0\"")));
        let m =
            model("[uplink]\ninterface = \"wan0\"\naddress6 = \"slaac\"\nprefix_delegation = 60");
        let c = config(&m);
        assert!(c.contains("ia_pd 2/::/60\n") && !c.contains("ia_na"), "{c}");
        assert!(
            start(&m, Path::new("/nonexistent"), true).is_none(),
            "run in the lab"
        );
    }

    #[test]
    fn config_asks_for_the_prefix_length() {
        let (m, _) = crate::plan::load_str(
            "t.toml",
            "[uplink]\ninterface = \"wan0\"\naddress6 = \"dhcpv6\"\nprefix_delegation = 56\n[segments.a]\ninterface = \"lan0\"\nsubnet = \"198.18.2.0/24\"\ngateway = \"198.18.2.1\"\nmanagement = true\nsubnet6 = \"delegated\"\nprefix_id = 1\n",
        )
        .unwrap();
        let c = config(&m);
        assert!(
            c.contains("ia_na 1\n") && c.contains("ia_pd 2/::/56\n"),
            "{c}"
        );
        assert!(c.contains("noipv6rs\n") && c.contains("ipv6only\n"), "{c}");
    }

    /// A delegation whose valid lifetime runs out with no renewal (dhcpcd silent: it keeps
    /// soliciting after a release, with no hook event) is dropped by the watcher itself.
    #[tokio::test(flavor = "current_thread")]
    async fn a_delegation_is_dropped_when_its_valid_lifetime_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(super::dir(dir.path())).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(watch(dir.path().to_path_buf(), move |d| {
            let _ = tx.send(d);
        }));
        let ev = "reason=BOUND6\ninterface=wan0\n\
                  new_dhcp6_ia_pd2_prefix1=2001:db8:100::\nnew_dhcp6_ia_pd2_prefix1_length=56\n\
                  new_dhcp6_ia_pd2_prefix1_pltime=1\nnew_dhcp6_ia_pd2_prefix1_vltime=2\n";
        // the watcher takes the file as it finds it at its start as seen: write after
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(event_path(dir.path()), ev).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.unwrap().prefix.to_string(), "2001:db8:100::/56");
        let t = std::time::Instant::now();
        let lost = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("not dropped within 10 s")
            .unwrap();
        assert_eq!(lost, None);
        assert!(t.elapsed() >= Duration::from_secs(1), "dropped early");
        task.abort();
    }

    /// A kept delegation found expired at the start is not used, and a kept one still valid is
    /// dropped by the watcher when it runs out.
    #[tokio::test(flavor = "current_thread")]
    async fn a_kept_delegation_runs_out_too() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::supervisor::gateway::now_unix();
        let d = Delegation {
            prefix: "2001:db8:100::/56".parse().unwrap(),
            preferred: 1,
            valid: 2,
            at: now,
        };
        std::fs::create_dir_all(super::dir(dir.path())).unwrap();
        persist(dir.path(), Some(&d)).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(watch(dir.path().to_path_buf(), move |d| {
            let _ = tx.send(d);
        }));
        let lost = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the kept delegation was not dropped within 10 s")
            .unwrap();
        assert_eq!(lost, None);
        task.abort();
        let old = Delegation { at: now - 10, ..d };
        persist(dir.path(), Some(&old)).unwrap();
        assert_eq!(load(dir.path(), now), None);
    }
}
