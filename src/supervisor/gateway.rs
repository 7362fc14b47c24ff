//! The gateway as one object: the config it runs, the applier, the history of applied
//! configs, commit-confirm, live host sets. The CLI uses it directly when no daemon runs; the
//! daemon owns one and serves the same operations on its control socket.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use crate::apply::{Applier, ApplyError, ApplyReport, Change, DiffReport, RuleCounter};
use crate::diag::Report;
use crate::model::{AddrRange, AddrRange6, LabMode, Model, addr};
use crate::plan::{self, Plan};

#[derive(Debug, thiserror::Error)]
pub enum GwError {
    #[error("{}", .0.to_string().trim_end())]
    Config(Report),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("nothing to confirm: no apply is waiting for confirmation")]
    NothingToConfirm,
    #[error("no earlier config to roll back to")]
    NoHistory,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> GwError {
    let what = what.into();
    move |err| GwError::Io { what, err }
}

/// An apply report as it comes back over the control socket.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ApplyView {
    #[serde(default)]
    pub changes: Vec<Change>,
    #[serde(default)]
    pub generation: Option<u64>,
    #[serde(default)]
    pub elapsed: f64,
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An apply waiting for `bulkhead confirm`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pending {
    /// History entry applied with the deadline.
    pub entry: u64,
    /// Unix time after which the previous config is restored.
    pub deadline: u64,
    /// A config file to move into place once the apply is confirmed (`bulkhead setup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<Promote>,
    /// History entry of the last confirmed config: what a rollback restores (also when
    /// several unconfirmed applies followed each other). Absent in a record of an older
    /// version: the entry before the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<u64>,
    /// Admin keys added for this apply (`bulkhead setup`), taken out again by a rollback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyGrant>,
}

/// An `authorized_keys` line added by an apply waiting for its confirmation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyGrant {
    pub file: PathBuf,
    pub key: String,
}

/// What `pending-confirm.json` holds.
enum PendingFile {
    None,
    Some(Pending),
    /// There, but unreadable (a torn write, a bad disk): an apply was waiting, what it said is
    /// lost. It is rolled back.
    Corrupt(String),
}

/// A candidate config applied from `from` that becomes the saved config `to` when confirmed,
/// so that a config that was never confirmed is not the one the next boot runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Promote {
    pub from: PathBuf,
    pub to: PathBuf,
}

/// Addresses added to or removed from groups at run time, kept across applies.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LiveSets {
    pub groups: BTreeMap<String, LiveSet>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LiveSet {
    /// IPv4 and IPv6 members (an IPv6 one lives in the group's `_v6` twin set).
    pub added: Vec<IpNet>,
    pub removed: Vec<IpNet>,
}

/// The result of the last apply attempt, for `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastApply {
    pub at: u64,
    pub ok: bool,
    pub what: String,
    pub generation: Option<u64>,
    pub changes: usize,
    pub error: Option<String>,
    pub elapsed_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkStatus {
    pub name: String,
    pub role: String,
    pub present: bool,
    pub up: bool,
    pub mtu: Option<u32>,
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CounterStatus {
    pub rule: String,
    pub chain: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub config: String,
    pub backend: String,
    pub daemon: bool,
    pub links: Vec<LinkStatus>,
    pub counters: Vec<CounterStatus>,
    pub sets: Vec<(String, usize)>,
    pub last_apply: Option<LastApply>,
    pub pending_confirm: Option<Pending>,
    pub generation: Option<u64>,
    /// Extra sections filled in by the daemon (DHCP, log shipping).
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

pub struct Gateway {
    pub config: PathBuf,
    pub state_dir: PathBuf,
    lab: Option<LabMode>,
    applier: Applier,
    /// The model last applied (with its text), or loaded at open.
    model: Model,
    text: String,
    pub last: Option<LastApply>,
    /// Addresses of bound DHCP reservations that name a group: in the group's set while bound.
    dhcp_members: BTreeMap<String, std::collections::BTreeSet<std::net::Ipv4Addr>>,
    /// Live set changes not yet recorded in the applied state (see [`Gateway::flush_amend`]).
    amend_pending: bool,
    /// The journal of live set changes, open for appending (see [`super::livesets`]).
    journal: Option<super::livesets::Journal>,
    /// The prefix delegated to the uplink (DHCPv6 IA_PD) that the running plan is numbered
    /// from; kept in the state directory across restarts (see [`super::uplink6`]).
    delegated: Option<super::uplink6::Delegation>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.flush_amend();
    }
}

/// Where a config applied to be saved at `save` waits for its confirmation.
pub fn candidate_path(save: &Path) -> PathBuf {
    let mut n = save.file_name().unwrap_or_default().to_os_string();
    n.push(".candidate");
    save.with_file_name(n)
}

/// Where `bulkhead setup` lists the admin keys it added for the candidate beside `save`: the
/// apply that takes the candidate records them in its pending confirmation (and removes this
/// file), so that a rollback takes them out of `authorized_keys` again.
pub fn key_grant_path(save: &Path) -> PathBuf {
    let mut n = candidate_path(save)
        .file_name()
        .unwrap_or_default()
        .to_os_string();
    n.push(".keys");
    save.with_file_name(n)
}

/// The key type and data of an `authorized_keys` line (options and comment aside).
fn key_blob(line: &str) -> String {
    line.split_whitespace()
        .skip_while(|w| !(w.starts_with("ssh-") || w.starts_with("ecdsa-")))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `file` renamed aside with `suffix` and the time, kept for a look.
fn set_aside(file: &Path, suffix: &str) -> std::io::Result<PathBuf> {
    let mut n = file.file_name().unwrap_or_default().to_os_string();
    n.push(format!(".{suffix}-{}", now_unix()));
    let to = file.with_file_name(n);
    crate::sys::fs::rename_durable(file, &to)?;
    Ok(to)
}

/// Take admin keys added by an apply that was rolled back out of their `authorized_keys`.
pub fn revoke_keys(keys: &[KeyGrant]) {
    let mut files: Vec<&Path> = keys.iter().map(|k| k.file.as_path()).collect();
    files.sort();
    files.dedup();
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let gone: Vec<String> = keys
            .iter()
            .filter(|k| k.file == f)
            .map(|k| key_blob(&k.key))
            .collect();
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !gone.contains(&key_blob(l)))
            .collect();
        if kept.len() == text.lines().count() {
            continue;
        }
        let mut body = kept.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        match crate::sys::fs::write_atomic(f, body.as_bytes(), 0o600) {
            Ok(()) => {
                tracing::warn!(file = %f.display(), removed = text.lines().count() - kept.len(), "admin key of the unconfirmed apply removed")
            }
            Err(e) => {
                tracing::error!(file = %f.display(), "removing the admin key of the unconfirmed apply failed: {e}")
            }
        }
    }
}

/// Read and validate a config (text and model).
pub fn load(config: &Path, lab: Option<LabMode>) -> Result<(Model, String, Report), GwError> {
    let text =
        std::fs::read_to_string(config).map_err(io(format!("reading {}", config.display())))?;
    let (m, warnings) =
        crate::plan::load_str(&config.display().to_string(), &text).map_err(GwError::Config)?;
    Ok((
        lab.map_or_else(|| m.clone(), |l| m.for_lab(l)),
        text,
        warnings,
    ))
}

impl Gateway {
    /// Open the gateway for a config; `state_dir` overrides the config's.
    pub fn open(
        config: &Path,
        state_dir: Option<PathBuf>,
        lab: Option<LabMode>,
    ) -> Result<Self, GwError> {
        let (model, text, _) = load(config, lab)?;
        Self::open_loaded(config, state_dir, lab, model, text)
    }

    /// [`Gateway::open`] with the config already read and validated (`text` and its model).
    pub fn open_loaded(
        config: &Path,
        state_dir: Option<PathBuf>,
        lab: Option<LabMode>,
        model: Model,
        text: String,
    ) -> Result<Self, GwError> {
        let state_dir = state_dir.unwrap_or_else(|| model.state_dir.clone());
        std::fs::create_dir_all(&state_dir)
            .map_err(io(format!("creating {}", state_dir.display())))?;
        let applier = Applier::new(&state_dir, model.backend)?;
        let last = std::fs::read_to_string(state_dir.join("last-apply.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        Ok(Gateway {
            config: config.to_path_buf(),
            lab,
            applier,
            model,
            text,
            last,
            dhcp_members: BTreeMap::new(),
            amend_pending: false,
            journal: None,
            delegated: super::uplink6::load(&state_dir, now_unix()),
            state_dir,
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn applier(&self) -> &Applier {
        &self.applier
    }

    fn history_dir(&self) -> PathBuf {
        self.state_dir.join("configs")
    }

    /// Applied configs, oldest first: (entry number, path).
    pub fn history(&self) -> Vec<(u64, PathBuf)> {
        let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(self.history_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                let n = p.file_stem()?.to_str()?.parse().ok()?;
                (p.extension()? == "toml").then_some((n, p))
            })
            .collect();
        v.sort();
        v
    }

    fn record_history(&self, text: &str) -> Result<u64, GwError> {
        let h = self.history();
        if let Some((n, p)) = h.last()
            && std::fs::read_to_string(p).ok().as_deref() == Some(text)
        {
            return Ok(*n);
        }
        let n = h.last().map_or(1, |(n, _)| n + 1);
        std::fs::create_dir_all(self.history_dir()).map_err(io("creating the config history"))?;
        let p = self.history_dir().join(format!("{n:06}.toml"));
        crate::sys::fs::write_atomic(&p, text.as_bytes(), 0o644)
            .map_err(io(format!("writing {}", p.display())))?;
        // keep the last 10, and the one a pending confirmation returns to
        let keep = self.pending().and_then(|p| p.restore);
        for (n, old) in h.iter().rev().skip(9) {
            if Some(*n) != keep {
                let _ = std::fs::remove_file(old);
            }
        }
        Ok(n)
    }

    fn pending_path(&self) -> PathBuf {
        self.state_dir.join("pending-confirm.json")
    }

    fn pending_file(&self) -> PendingFile {
        match std::fs::read(self.pending_path()) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PendingFile::None,
            Err(e) => PendingFile::Corrupt(e.to_string()),
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(p) => PendingFile::Some(p),
                Err(e) => PendingFile::Corrupt(e.to_string()),
            },
        }
    }

    /// The apply waiting for `bulkhead confirm`. An unreadable record counts as one whose
    /// deadline has passed (entry: the newest in the history): it is rolled back, never
    /// taken for "nothing pending".
    pub fn pending(&self) -> Option<Pending> {
        match self.pending_file() {
            PendingFile::None => None,
            PendingFile::Some(p) => Some(p),
            PendingFile::Corrupt(_) => Some(Pending {
                entry: self.history().last().map_or(0, |(n, _)| *n),
                deadline: 0,
                promote: None,
                restore: None,
                keys: Vec::new(),
            }),
        }
    }

    fn set_pending(&self, p: Option<&Pending>) -> Result<(), GwError> {
        let f = self.pending_path();
        match p {
            Some(p) => crate::sys::fs::write_atomic(
                &f,
                serde_json::to_string(p).expect("serializes").as_bytes(),
                0o644,
            )
            .map_err(io("writing the pending confirmation")),
            None => {
                if let PendingFile::Corrupt(_) = self.pending_file() {
                    // done with it: kept for a look, out of the way
                    return set_aside(&f, "corrupt")
                        .map(|_| ())
                        .map_err(io("setting the unreadable pending confirmation aside"));
                }
                match std::fs::remove_file(&f) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(io("removing the pending confirmation")(e))
                    }
                    _ => crate::sys::fs::sync_dir(&self.state_dir)
                        .map_err(io("removing the pending confirmation")),
                }
            }
        }
    }

    /// The live set changes: `live-sets.json` with the journal of the changes since replayed
    /// over it. An unreadable `live-sets.json` is set aside (with a warning: the groups are as
    /// configured but for the journal's changes); a torn or unreadable journal line is named
    /// with its file and line and skipped.
    pub fn live_sets(&self) -> LiveSets {
        super::livesets::load(&self.state_dir, read_snapshot).sets
    }

    /// Append a live set change to the journal, durably, before it is answered.
    fn journal(
        &mut self,
        op: super::livesets::Op,
        group: &str,
        addrs: &[IpNet],
    ) -> Result<(), GwError> {
        if self.journal.is_none() {
            self.journal = Some(
                super::livesets::Journal::open(&self.state_dir)
                    .map_err(io("opening the journal of live set changes"))?,
            );
        }
        let j = self.journal.as_mut().expect("opened above");
        j.append(&super::livesets::Record {
            op,
            group: group.to_string(),
            addrs: addrs.to_vec(),
        })
        .map_err(io(format!("writing {}", j.path().display())))
    }

    /// Fold the journal into `live-sets.json` and empty it (a no-op when it is empty).
    pub fn fold_live_sets(&mut self) -> Result<(), GwError> {
        let j = self.state_dir.join(super::livesets::JOURNAL);
        if std::fs::metadata(&j).map_or(true, |m| m.len() == 0) {
            return Ok(());
        }
        let l = self.live_sets();
        self.save_live_sets(&l)?;
        if self.journal.is_none() {
            self.journal = Some(
                super::livesets::Journal::open(&self.state_dir)
                    .map_err(io("opening the journal of live set changes"))?,
            );
        }
        self.journal
            .as_mut()
            .expect("opened above")
            .truncate()
            .map_err(io(format!("emptying {}", j.display())))
    }
}

/// `live-sets.json`; an unreadable one is set aside with a warning.
fn read_snapshot(f: &Path) -> LiveSets {
    let Ok(b) = std::fs::read(f) else {
        return LiveSets::default();
    };
    match serde_json::from_slice(&b) {
        Ok(l) => l,
        Err(e) => {
            match set_aside(f, "corrupt") {
                Ok(to) => tracing::warn!(
                    file = %f.display(),
                    aside = %to.display(),
                    "unreadable live set changes ({e}) set aside; the groups are as configured"
                ),
                Err(re) => tracing::error!(
                    file = %f.display(),
                    "unreadable live set changes ({e}) could not be set aside: {re}"
                ),
            }
            LiveSets::default()
        }
    }
}

impl Gateway {
    fn save_live_sets(&self, l: &LiveSets) -> Result<(), GwError> {
        crate::sys::fs::write_atomic(
            &self.state_dir.join("live-sets.json"),
            serde_json::to_string_pretty(l)
                .expect("serializes")
                .as_bytes(),
            0o644,
        )
        .map_err(io("writing the live sets"))
    }

    /// The plan for a model, with the live set changes folded into its groups.
    pub fn plan_for(&self, m: &Model) -> Plan {
        let live = self.live_sets();
        let mut m = m.clone();
        for g in &mut m.groups {
            if let Some(a) = self.dhcp_members.get(&g.name) {
                g.members.extend(a.iter().map(|x| AddrRange::single(*x)));
            }
            if let Some(l) = live.groups.get(&g.name) {
                let v4 = |v: &[IpNet]| -> Vec<AddrRange> {
                    v.iter()
                        .filter_map(|n| match n {
                            IpNet::V4(n) => Some(AddrRange::from_net(*n)),
                            IpNet::V6(_) => None,
                        })
                        .collect()
                };
                let v6 = |v: &[IpNet]| -> Vec<AddrRange6> {
                    v.iter()
                        .filter_map(|n| match n {
                            IpNet::V6(n) => Some(AddrRange6::from_net(*n)),
                            IpNet::V4(_) => None,
                        })
                        .collect()
                };
                let mut members = g.members.clone();
                members.extend(v4(&l.added));
                g.members = addr::subtract_ranges(&members, &v4(&l.removed));
                let mut members6 = g.members6.clone();
                members6.extend(v6(&l.added));
                g.members6 = addr::subtract_ranges6(&members6, &v6(&l.removed));
            }
        }
        plan::delegated::build(&m, None, self.delegated_prefix(&m))
    }

    /// The delegated prefix the running config is numbered from.
    pub fn delegated_now(&self) -> Option<ipnet::Ipv6Net> {
        self.delegated_prefix(&self.model)
    }

    /// The delegated prefix the plan of `m` is numbered from (only when `m` asks for one).
    fn delegated_prefix(&self, m: &Model) -> Option<ipnet::Ipv6Net> {
        m.uplink.prefix_delegation?;
        self.delegated.map(|d| d.prefix)
    }

    /// The prefix delegated to the uplink, as last received (or kept from before a restart).
    pub fn delegated(&self) -> Option<super::uplink6::Delegation> {
        self.delegated
    }

    /// The uplink's delegated prefix changed (`None`: lost): renumber the delegated segments
    /// in one apply of the running config. A new prefix is kept (persisted) only once it is
    /// applied; a failed apply leaves the running state and the kept prefix as they were.
    /// Returns the apply's report, or None when only the lifetimes changed.
    pub fn set_delegated(
        &mut self,
        d: Option<super::uplink6::Delegation>,
    ) -> Result<Option<ApplyReport>, GwError> {
        let old = self.delegated;
        let keep = |gw: &Self| {
            super::uplink6::persist(&gw.state_dir, gw.delegated.as_ref())
                .map_err(io("keeping the delegated prefix"))
        };
        if old.map(|x| x.prefix) == d.map(|x| x.prefix) {
            self.delegated = d;
            keep(self)?;
            return Ok(None);
        }
        self.delegated = d;
        let (m, t) = (self.model.clone(), self.text.clone());
        match self.apply_model(m, t, "delegated prefix") {
            Ok(r) => {
                keep(self)?;
                Ok(Some(r))
            }
            Err(e) => {
                self.delegated = old;
                Err(e)
            }
        }
    }

    fn note(&mut self, what: &str, r: &Result<ApplyReport, ApplyError>) {
        let last = match r {
            Ok(rep) => LastApply {
                at: now_unix(),
                ok: true,
                what: what.to_string(),
                generation: rep.generation,
                changes: rep.changes.len(),
                error: None,
                elapsed_ms: rep.elapsed.as_secs_f64() * 1000.0,
            },
            Err(e) => LastApply {
                at: now_unix(),
                ok: false,
                what: what.to_string(),
                generation: None,
                changes: 0,
                error: Some(e.to_string()),
                elapsed_ms: 0.0,
            },
        };
        let _ = crate::sys::fs::write_atomic(
            &self.state_dir.join("last-apply.json"),
            serde_json::to_string(&last).expect("serializes").as_bytes(),
            0o644,
        );
        self.last = Some(last);
    }

    fn apply_model(&mut self, m: Model, text: String, what: &str) -> Result<ApplyReport, GwError> {
        let plan = self.plan_for(&m);
        let r = self.applier.apply(&plan);
        self.note(what, &r);
        let rep = r?;
        self.model = m;
        self.text = text;
        Ok(rep)
    }

    /// Read the config file and apply it. With `confirm_within`, the previous config comes
    /// back unless `confirm` arrives in time.
    pub fn apply_file(&mut self, confirm_within: Option<Duration>) -> Result<ApplyReport, GwError> {
        self.apply_config(confirm_within, None, None)
    }

    /// Apply `config` (default: the gateway's config file). With `save`, the applied text is
    /// kept as a candidate beside `save` ([`candidate_path`]) and moved to `save` — which then
    /// becomes the gateway's config file — once the apply is confirmed (at once without
    /// `confirm_within`); a rollback deletes it. An apply without `confirm_within` while
    /// another waits for its confirmation ends the wait (the new config is kept).
    pub fn apply_config(
        &mut self,
        confirm_within: Option<Duration>,
        config: Option<&Path>,
        save: Option<&Path>,
    ) -> Result<ApplyReport, GwError> {
        let file = config.unwrap_or(&self.config).to_path_buf();
        // the config file as it was read last: its model is at hand (parse once)
        let (m, text) = match std::fs::read_to_string(&file) {
            Ok(t) if config.is_none() && t == self.text => (self.model.clone(), t),
            _ => {
                let (m, text, _) = load(&file, self.lab)?;
                (m, text)
            }
        };
        if m.backend != self.model.backend {
            self.applier = Applier::new(&self.state_dir, m.backend)?;
        }
        let before = self.history().last().map(|(n, _)| *n);
        let old = self.pending();
        let rep = self.apply_model(m, text.clone(), "apply")?;
        let entry = self.record_history(&text)?;
        // this apply replaces one still waiting: that one's candidate will never be saved
        if let Some(pr) = old.as_ref().and_then(|p| p.promote.as_ref()) {
            let _ = std::fs::remove_file(&pr.from);
        }
        // the keys added for the waiting one stay waiting with this one
        let mut keys = old.as_ref().map(|p| p.keys.clone()).unwrap_or_default();
        let grants = save.map(key_grant_path);
        if let Some(g) = &grants
            && let Ok(b) = std::fs::read(g)
        {
            match serde_json::from_slice::<Vec<KeyGrant>>(&b) {
                Ok(v) => {
                    for k in v {
                        if !keys.contains(&k) {
                            keys.push(k);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(file = %g.display(), "unreadable list of added keys ({e}); a rollback leaves them in place")
                }
            }
        }
        let promote = match save {
            Some(to) => {
                let from = candidate_path(to);
                crate::sys::fs::write_atomic(&from, text.as_bytes(), 0o644)
                    .map_err(io(format!("writing {}", from.display())))?;
                Some(Promote {
                    from,
                    to: to.to_path_buf(),
                })
            }
            None => None,
        };
        match confirm_within {
            Some(d) if before.is_some() => self.set_pending(Some(&Pending {
                entry,
                deadline: now_unix() + d.as_secs().max(1),
                promote,
                // several unconfirmed applies in a row: a rollback returns to the last
                // confirmed config, not to one of them
                restore: old.as_ref().and_then(|p| p.restore).or(before),
                keys,
            }))?,
            _ => {
                if confirm_within.is_some() {
                    tracing::warn!(
                        "no earlier config to return to: --confirm-within has nothing to restore"
                    );
                }
                self.set_pending(None)?;
                if let Some(p) = &promote {
                    self.promote(p)?;
                }
            }
        }
        if let Some(g) = &grants {
            let _ = std::fs::remove_file(g);
        }
        Ok(rep)
    }

    /// The file a reload reads: the gateway's config, or while a `bulkhead setup` apply waits
    /// for its confirmation, its candidate.
    pub fn reload_path(&self) -> PathBuf {
        self.pending()
            .and_then(|p| p.promote)
            .map_or_else(|| self.config.clone(), |pr| pr.from)
    }

    /// Apply the config file again (SIGHUP, daemon start). An apply waiting for its
    /// confirmation keeps waiting, with its deadline and the config a rollback returns to.
    pub fn reload(&mut self) -> Result<ApplyReport, GwError> {
        let p = match self.pending_file() {
            PendingFile::None => return self.apply_config(None, None, None),
            // left for the deadline check to roll back, untouched
            PendingFile::Corrupt(_) => None,
            PendingFile::Some(p) => Some(p),
        };
        let (m, text, _) = load(&self.reload_path(), self.lab)?;
        if m.backend != self.model.backend {
            self.applier = Applier::new(&self.state_dir, m.backend)?;
        }
        let rep = self.apply_model(m, text.clone(), "reload")?;
        let entry = self.record_history(&text)?;
        if let Some(p) = p {
            let restore = p.restore.or_else(|| {
                self.history()
                    .iter()
                    .map(|(n, _)| *n)
                    .rfind(|n| *n < p.entry)
            });
            if entry != p.entry || restore != p.restore {
                self.set_pending(Some(&Pending {
                    entry,
                    restore,
                    ..p.clone()
                }))?;
            }
            tracing::info!(
                entry,
                left_s = p.deadline.saturating_sub(now_unix()),
                "still waiting for the confirmation"
            );
        }
        Ok(rep)
    }

    /// The daemon's first apply: an apply left unconfirmed whose deadline passed (or whose
    /// record is unreadable) is rolled back; one still in its window is applied again and keeps
    /// waiting; otherwise the config file is applied.
    pub fn resume(&mut self) -> Result<ApplyReport, GwError> {
        if let Err(e) = self.check_deadline() {
            tracing::error!("restoring the previous config failed: {e}");
        }
        match self.reload() {
            Err(e) if self.pending().is_some() => {
                tracing::error!(
                    "the config waiting for its confirmation cannot be applied again ({e}): restoring the previous config"
                );
                self.rollback()?;
                self.apply_config(None, None, None)
            }
            r => r,
        }
    }

    /// Move a confirmed candidate into place; it is the gateway's config from now on.
    fn promote(&mut self, p: &Promote) -> Result<(), GwError> {
        if p.from != p.to {
            crate::sys::fs::rename_durable(&p.from, &p.to).map_err(io(format!(
                "moving {} to {}",
                p.from.display(),
                p.to.display()
            )))?;
        }
        tracing::info!(config = %p.to.display(), "config saved");
        self.config = p.to.clone();
        Ok(())
    }

    /// Re-apply what is running (repair drift) without reading the file.
    pub fn repair(&mut self) -> Result<ApplyReport, GwError> {
        let (m, t) = (self.model.clone(), self.text.clone());
        self.apply_model(m, t, "repair")
    }

    pub fn diff(&self) -> Result<DiffReport, GwError> {
        let (m, _, _) = load(&self.config, self.lab)?;
        Ok(self.applier.diff(&self.plan_for(&m))?)
    }

    /// Has the running state drifted from the running config?
    pub fn drift(&self) -> Result<Vec<Change>, GwError> {
        Ok(self.applier.diff(&self.plan_for(&self.model))?.changes)
    }

    pub fn confirm(&mut self) -> Result<Pending, GwError> {
        let p = match self.pending_file() {
            PendingFile::None => return Err(GwError::NothingToConfirm),
            PendingFile::Corrupt(e) => {
                return Err(GwError::Invalid(format!(
                    "the pending confirmation is unreadable ({e}): that apply is rolled back, it cannot be confirmed"
                )));
            }
            PendingFile::Some(p) => p,
        };
        if let Some(pr) = &p.promote {
            self.promote(pr)?;
        }
        self.set_pending(None)?;
        tracing::info!(entry = p.entry, "apply confirmed");
        Ok(p)
    }

    /// Go back to the config applied before the current one — while an apply waits for its
    /// confirmation, to the last confirmed one — (links, addresses, sysctls and firewall), and
    /// forget the newer ones. The config file becomes the restored config (the file it
    /// replaces is kept as `FILE.rejected`), so that no restart or reboot applies the
    /// rolled-back config again; admin keys added by the unconfirmed apply are removed.
    pub fn rollback(&mut self) -> Result<ApplyReport, GwError> {
        let h = self.history();
        let pending = self.pending();
        let i = match pending
            .as_ref()
            .and_then(|p| p.restore)
            .and_then(|r| h.iter().position(|(n, _)| *n == r))
        {
            Some(i) => i,
            None if h.len() >= 2 => h.len() - 2,
            None => return Err(GwError::NoHistory),
        };
        let prev = &h[i].1;
        let text =
            std::fs::read_to_string(prev).map_err(io(format!("reading {}", prev.display())))?;
        let (m, warnings) = crate::plan::load_str(&self.config.display().to_string(), &text)
            .map_err(GwError::Config)?;
        let _ = warnings;
        let m = self.lab.map_or_else(|| m.clone(), |l| m.for_lab(l));
        if m.backend != self.model.backend {
            self.applier = Applier::new(&self.state_dir, m.backend)?;
        }
        let rep = self.apply_model(m, text.clone(), "rollback")?;
        for (_, newer) in &h[i + 1..] {
            let _ = std::fs::remove_file(newer);
        }
        if let Some(p) = &pending {
            if let Some(pr) = &p.promote {
                // the candidate was never confirmed: it must not become the saved config
                let _ = std::fs::remove_file(&pr.from);
                tracing::info!(candidate = %pr.from.display(), saved = %pr.to.display(), "unconfirmed config discarded; the saved config is unchanged");
            }
            revoke_keys(&p.keys);
        }
        self.restore_file(&text);
        self.set_pending(None)?;
        Ok(rep)
    }

    /// Make the config file hold `text` (the config a rollback restored), keeping what it held
    /// as `FILE.rejected`. A failure is logged: the rollback itself stands.
    fn restore_file(&self, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        let cur = std::fs::read_to_string(&self.config).ok();
        if cur.as_deref() == Some(text) {
            return;
        }
        let mode =
            std::fs::metadata(&self.config).map_or(0o644, |m| m.permissions().mode() & 0o7777);
        let mut n = self.config.file_name().unwrap_or_default().to_os_string();
        n.push(".rejected");
        let rejected = self.config.with_file_name(n);
        if let Some(c) = &cur
            && let Err(e) = crate::sys::fs::write_atomic(&rejected, c.as_bytes(), mode)
        {
            tracing::error!(file = %rejected.display(), "keeping the rejected config failed: {e}");
        }
        match crate::sys::fs::write_atomic(&self.config, text.as_bytes(), mode) {
            Ok(()) => tracing::warn!(
                config = %self.config.display(),
                rejected = %rejected.display(),
                "the config file now holds the restored config; the rolled-back one is kept beside it"
            ),
            Err(e) => tracing::error!(
                config = %self.config.display(),
                "writing the restored config failed ({e}): the next start applies the rolled-back config again"
            ),
        }
    }

    /// Roll back if a confirmation is overdue, or its record is unreadable. Returns the report
    /// when it did.
    pub fn check_deadline(&mut self) -> Result<Option<ApplyReport>, GwError> {
        match self.pending_file() {
            PendingFile::None => Ok(None),
            PendingFile::Some(p) if now_unix() < p.deadline => Ok(None),
            PendingFile::Some(p) => {
                tracing::warn!(
                    entry = p.entry,
                    "apply not confirmed in time: restoring the previous config"
                );
                self.rollback().map(Some)
            }
            PendingFile::Corrupt(e) => {
                tracing::warn!(
                    file = %self.pending_path().display(),
                    "unreadable pending confirmation ({e}): an apply was waiting for its confirmation; restoring the previous config"
                );
                match self.rollback() {
                    Err(GwError::NoHistory) => {
                        tracing::warn!(
                            "no earlier config to return to: the unreadable pending confirmation is set aside"
                        );
                        self.set_pending(None)?;
                        Ok(None)
                    }
                    r => r.map(Some),
                }
            }
        }
    }

    /// IPv6 members go to the group's `_v6` twin set, which the plan renders only for a group
    /// the config gives an IPv6 member (its rules match IPv6 only then): refuse the others by
    /// name, saying how to enable them.
    fn check_family(&self, group: &str, addrs: &[IpNet]) -> Result<(), GwError> {
        let Some(a) = addrs.iter().find(|a| matches!(a, IpNet::V6(_))) else {
            return Ok(());
        };
        if group == crate::plan::ruleset::QUARANTINE {
            return Ok(());
        }
        let live = self.live_sets();
        let has6 = self
            .model
            .group(group)
            .is_some_and(|g| !g.members6.is_empty())
            || live
                .groups
                .get(group)
                .is_some_and(|l| l.added.iter().any(|n| matches!(n, IpNet::V6(_))));
        if has6 {
            return Ok(());
        }
        Err(GwError::Invalid(format!(
            "group `{group}` has no IPv6 set ({}): `{}` is an IPv6 member, but the config gives \
             the group no IPv6 member, so its rules match IPv4 only; add an IPv6 member to \
             [groups.{group}] members in the config (and apply it) to add IPv6 members live",
            crate::plan::ruleset::set6(group),
            if a.prefix_len() == a.max_prefix_len() {
                a.addr().to_string()
            } else {
                a.to_string()
            }
        )))
    }

    fn check_group(&self, group: &str) -> Result<(), GwError> {
        if group == crate::plan::ruleset::QUARANTINE || self.model.group(group).is_some() {
            Ok(())
        } else {
            Err(GwError::Invalid(format!(
                "no group named `{group}` (groups: {})",
                self.model
                    .groups
                    .iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }

    /// Quarantine an IPv6 source (set `quarantine_v6`).
    pub fn quarantine6(&mut self, addr: std::net::Ipv6Addr) -> Result<(), GwError> {
        self.applier.quarantine6(addr)?;
        // the kernel stamp moved: recorded with the next amend (no listing needed)
        self.amend();
        Ok(())
    }

    /// Add addresses to a group's live set, and remember them for the next apply.
    pub fn set_add(&mut self, group: &str, addrs: &[IpNet]) -> Result<(), GwError> {
        self.check_group(group)?;
        self.check_family(group, addrs)?;
        self.applier.set_add(group, addrs)?;
        if group != crate::plan::ruleset::QUARANTINE {
            self.journal(super::livesets::Op::Add, group, addrs)?;
        }
        // the applied state (and the kernel stamp, which the change moved) follows once the
        // burst of changes is over (see `flush_amend`)
        self.amend();
        tracing::info!(group, addrs = ?addrs, "added to live set");
        Ok(())
    }

    pub fn set_del(&mut self, group: &str, addrs: &[IpNet]) -> Result<(), GwError> {
        self.check_group(group)?;
        self.check_family(group, addrs)?;
        self.applier.set_del(group, addrs)?;
        if group != crate::plan::ruleset::QUARANTINE {
            self.journal(super::livesets::Op::Del, group, addrs)?;
        }
        self.amend();
        tracing::info!(group, addrs = ?addrs, "removed from live set");
        Ok(())
    }

    /// A DHCP lease of a reservation that names a group was bound (or ended): put its address
    /// into (or take it out of) the group's live set. Repeats are harmless.
    pub fn dhcp_lease(
        &mut self,
        group: &str,
        addr: std::net::Ipv4Addr,
        bound: bool,
    ) -> Result<(), GwError> {
        if self.model.group(group).is_none() {
            return Ok(());
        }
        let set = self.dhcp_members.entry(group.to_string()).or_default();
        let net = IpNet::V4(Ipv4Net::new(addr, 32).expect("/32"));
        if bound && set.insert(addr) {
            self.applier.set_add(group, &[net])?;
            self.amend();
            tracing::info!(group, %addr, "DHCP reservation bound: address added to its group");
        } else if !bound && set.remove(&addr) {
            self.applier.set_del(group, &[net])?;
            self.amend();
            tracing::info!(group, %addr, "DHCP reservation ended: address removed from its group");
        }
        Ok(())
    }

    /// Live set members changed: they are recorded in the applied state before anything looks
    /// at it again (the daemon flushes before every job but set changes, so a burst of them
    /// costs one record and each answers at once).
    fn amend(&mut self) {
        self.amend_pending = true;
    }

    /// Record live set members in the applied state, so that a check does not call them drift
    /// (and reload). Failing that, the next check reloads the same members: log and go on.
    /// The journal of live set changes is folded into `live-sets.json` then (it is replayed
    /// on every read until then, so nothing depends on when this runs).
    pub fn flush_amend(&mut self) {
        if !std::mem::take(&mut self.amend_pending) {
            return;
        }
        if let Err(e) = self.applier.amend(&self.plan_for(&self.model)) {
            tracing::warn!("recording the live set change failed (the next check reloads): {e}");
        }
        if let Err(e) = self.fold_live_sets() {
            tracing::warn!("folding the journal of live set changes failed (it is kept): {e}");
        }
    }

    /// Whether live set changes wait to be recorded in the applied state.
    pub fn amend_pending(&self) -> bool {
        self.amend_pending
    }

    /// The DHCP pools of the running config.
    pub fn pools(&self) -> Vec<crate::dhcp::PoolConfig> {
        pools(&self.plan_for(&self.model))
    }

    pub fn set_list(&self, group: &str) -> Result<Vec<String>, GwError> {
        self.check_group(group)?;
        Ok(self.applier.set_list(group)?)
    }

    pub fn status(&self, daemon: bool) -> Status {
        let plan = self.plan_for(&self.model);
        let net = self.applier.netlink();
        let links = plan
            .links
            .iter()
            .map(|l| {
                let st = net.link(&l.name).ok().flatten();
                let addresses = st
                    .as_ref()
                    .and_then(|s| net.addresses(s.index).ok())
                    .unwrap_or_default()
                    .iter()
                    .map(|a| a.to_string())
                    .collect();
                LinkStatus {
                    name: l.name.clone(),
                    role: l.role.clone(),
                    present: st.is_some(),
                    up: st.as_ref().is_some_and(|s| s.up),
                    mtu: st.as_ref().map(|s| s.mtu),
                    addresses,
                }
            })
            .collect();
        let counters = self
            .applier
            .counters()
            .unwrap_or_default()
            .into_iter()
            .map(|c: RuleCounter| CounterStatus {
                rule: c.comment,
                chain: c.chain,
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect();
        Status {
            config: self.config.display().to_string(),
            backend: self.model.backend.name().into(),
            daemon,
            links,
            counters,
            sets: self.applier.set_sizes().unwrap_or_default(),
            last_apply: self.last.clone(),
            pending_confirm: self.pending(),
            generation: self
                .applier
                .store()
                .current()
                .ok()
                .flatten()
                .map(|g| g.meta.generation),
            extra: BTreeMap::from([(
                "flow offload".to_string(),
                serde_json::Value::String(self.applier.flow_offload(&plan).to_string()),
            )]),
        }
    }
}

/// The DHCP server's pools for a plan.
pub fn pools(plan: &Plan) -> Vec<crate::dhcp::PoolConfig> {
    plan.dhcp
        .iter()
        .map(|p| {
            let mut c = crate::dhcp::PoolConfig::new(
                p.segment.clone(),
                p.interface.clone(),
                p.server,
                p.subnet,
                p.ranges.iter().map(|r| (r.lo, r.hi)).collect(),
            );
            c.lease_time = p.lease_time;
            c.max_lease_time = p.max_lease_time;
            c.dns = p.dns.clone();
            c.domain = p.domain.clone();
            c.mtu = p.mtu.and_then(|m| u16::try_from(m).ok());
            c.reservations = p
                .reservations
                .iter()
                .map(|r| crate::dhcp::config::Reservation {
                    mac: r.mac,
                    addr: r.address,
                    hostname: r.hostname.clone(),
                    group: r.group.clone(),
                })
                .collect();
            c.extra_options = p.options.iter().map(|o| (o.code, o.data.clone())).collect();
            c.relays = p.relays.clone();
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `live-sets.json` written before IPv6 members existed (IPv4 networks only) still
    /// reads, and IPv6 members are written and read back alike.
    #[test]
    fn live_sets_read_ipv4_records_and_keep_ipv6_members() {
        let old = r#"{"groups":{"web":{"added":["198.18.1.5/32"],"removed":["198.18.1.0/30"]}}}"#;
        let l: LiveSets = serde_json::from_str(old).unwrap();
        assert_eq!(
            l.groups["web"].added,
            vec!["198.18.1.5/32".parse::<IpNet>().unwrap()]
        );
        let mut l = l;
        l.groups
            .get_mut("web")
            .unwrap()
            .added
            .push("2001:db8::5/128".parse().unwrap());
        let back: LiveSets = serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
        assert!(
            serde_json::to_string(&l)
                .unwrap()
                .contains("\"2001:db8::5/128\"")
        );
    }
}
