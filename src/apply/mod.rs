//! Apply a plan to the running system: sysctls, a fail-closed firewall when none is loaded,
//! links and addresses, then the full firewall in one transaction. Every side effect sits
//! behind a small trait ([`Netlink`], [`Sysctl`], [`Firewall`]) with a real implementation,
//! and is logged once (tracing) with the object it changed.
//!
//! Applied state lives under `STATE_DIR/apply/` (see [`state`]): the last-known-good plan and
//! firewall text, the previous generations, and the record of what Bulkhead created.

pub mod actions;
pub mod cmd;
pub mod firewall;
pub mod netlink;
pub mod state;
pub mod sysctl;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::Serialize;

use self::actions::Action;
pub use self::firewall::{Firewall, FirewallError, LoadText, RuleCounter};
pub use self::netlink::{Netlink, NetlinkError, RtNetlink};
use self::state::{CreatedAddress, CreatedLink, StateError, Store};
pub use self::sysctl::{ProcSys, Sysctl, SysctlError};
use crate::model::Backend;
use crate::plan::Plan;

/// How many previous generations are kept beside the last-known-good one.
pub const KEEP_GENERATIONS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Sysctls,
    FailClosed,
    Links,
    Routes,
    Firewall,
    Cleanup,
    State,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Sysctls => "sysctls",
            Step::FailClosed => "fail-closed firewall",
            Step::Links => "links",
            Step::Routes => "routes",
            Step::Firewall => "firewall",
            Step::Cleanup => "cleanup",
            Step::State => "state",
        })
    }
}

/// One change made (apply) or to be made (diff).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Change {
    pub step: Step,
    /// The object: a sysctl key, an interface, `dev/address`, `table inet bulkhead`, ….
    pub object: String,
    pub detail: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.step, self.object, self.detail)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub changes: Vec<Change>,
    /// The generation now current, when one was recorded.
    pub generation: Option<u64>,
    /// Whether a firewall was loaded (the fail-closed one or the full one).
    pub firewall_loaded: bool,
    #[serde(serialize_with = "ser_ms")]
    pub elapsed: Duration,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// What `diff` found: the changes an apply would make.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub changes: Vec<Change>,
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// What happened to the firewall after a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome", content = "detail")]
pub enum Recovery {
    /// The failure changed nothing in the firewall (e.g. nft's transaction was refused whole).
    Unchanged,
    /// The firewall had been partly changed and the last-known-good one was reloaded.
    RestoredLastGood(u64),
    /// There was no last-known-good firewall; the fail-closed one was loaded instead.
    FailClosed,
    /// Restoring failed too: what the firewall holds is unknown. Says why.
    RestoreFailed(String),
    /// The failure came before the firewall step.
    NotAttempted,
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recovery::Unchanged => f.write_str("the loaded firewall was not changed"),
            Recovery::RestoredLastGood(g) => {
                write!(
                    f,
                    "the last-known-good firewall (generation {g}) was restored"
                )
            }
            Recovery::FailClosed => f.write_str(
                "no last-known-good firewall exists; the fail-closed firewall is loaded",
            ),
            Recovery::RestoreFailed(e) => write!(f, "restoring the firewall FAILED too: {e}"),
            Recovery::NotAttempted => f.write_str("the firewall was not touched"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A step failed. `changes` lists what had been changed before it.
    #[error("apply failed at step `{step}`: {cause} ({recovery})")]
    Failed {
        step: Step,
        #[source]
        cause: Box<StepError>,
        changes: Vec<Change>,
        recovery: Recovery,
    },
    #[error("the plan is for the {plan} backend but this applier drives {applier}")]
    BackendMismatch {
        plan: &'static str,
        applier: &'static str,
    },
    #[error("no previous generation to roll back to")]
    NothingToRollBack,
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
}

impl ApplyError {
    /// The failing step, for a failed apply.
    pub fn step(&self) -> Option<Step> {
        match self {
            ApplyError::Failed { step, .. } => Some(*step),
            _ => None,
        }
    }
}

/// Drives the side effects. Build with [`Applier::new`] for the real system, or
/// [`Applier::with_parts`] to swap any layer out.
/// What is known of the live firewall before a load.
enum Before {
    /// The kernel stamp (see [`Applier::kernel_stamp`]), when the table was not listed.
    Stamp(Option<String>),
    /// The normalised listing (None: no table).
    Listing(Option<String>),
}

pub struct Applier {
    store: Store,
    net: Box<dyn Netlink>,
    sys: Box<dyn Sysctl>,
    fw: Box<dyn Firewall>,
    /// The other backend, whose leftovers are removed once this one is loaded.
    other: Option<Box<dyn Firewall>>,
    /// The kernel's flowtable support, probed once (see [`Applier::flow_offload`]).
    flowtable: std::sync::OnceLock<Result<(), String>>,
}

fn fail(
    step: Step,
    changes: &[Change],
    recovery: Recovery,
) -> impl FnOnce(StepError) -> ApplyError {
    let changes = changes.to_vec();
    move |cause| ApplyError::Failed {
        step,
        cause: Box::new(cause),
        changes,
        recovery,
    }
}

impl Applier {
    /// The real system: rtnetlink in the calling thread's network namespace, `/proc/sys`, and
    /// the firewall backend `backend`. State goes to `STATE_DIR/apply/`.
    ///
    /// Blocking: the netlink layer runs its own single-threaded tokio runtime, so call this
    /// (and the Applier's methods) from a plain thread, or from async code via
    /// `tokio::task::spawn_blocking`, never directly inside a runtime.
    pub fn new(state_dir: impl Into<PathBuf>, backend: Backend) -> Result<Self, ApplyError> {
        let other = match backend {
            Backend::Nftables => Backend::Iptables,
            Backend::Iptables => Backend::Nftables,
        };
        Ok(Self::with_parts(
            state_dir,
            Box::new(RtNetlink::new()?),
            Box::new(ProcSys::default()),
            firewall::backend(backend),
        )
        .with_other_backend(firewall::backend(other)))
    }

    /// After a successful load, remove what `other` (the backend not in use) still holds, so
    /// a config that switches backends does not leave two rulesets filtering. [`Applier::new`]
    /// sets this; a backend whose tools are missing counts as holding nothing.
    pub fn with_other_backend(mut self, other: Box<dyn Firewall>) -> Self {
        self.other = Some(other);
        self
    }

    pub fn with_parts(
        state_dir: impl Into<PathBuf>,
        net: Box<dyn Netlink>,
        sys: Box<dyn Sysctl>,
        fw: Box<dyn Firewall>,
    ) -> Self {
        Applier {
            store: Store::new(&state_dir.into(), KEEP_GENERATIONS),
            net,
            sys,
            fw,
            other: None,
            flowtable: std::sync::OnceLock::new(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn netlink(&self) -> &dyn Netlink {
        self.net.as_ref()
    }

    pub fn firewall(&self) -> &dyn Firewall {
        self.fw.as_ref()
    }

    /// "BOOT_ID NETNS_INODE GENERATION" of the backend's rules, when it has a generation: equal
    /// stamps mean nothing in nftables changed in between (a number alone could repeat after a
    /// reboot or in another namespace).
    fn kernel_stamp(&self) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let g = self.fw.generation()?;
        let boot = boot_id()?;
        let ns = std::fs::metadata("/proc/self/ns/net").ok()?.ino();
        Some(format!("{boot} {ns} {g}"))
    }

    /// Apply the plan: sysctls → fail-closed firewall (only when no Bulkhead ruleset is
    /// loaded) → links, addresses, routes → the full firewall in one transaction → removal of
    /// what Bulkhead created that the plan no longer lists → a new generation.
    pub fn apply(&self, plan: &Plan) -> Result<ApplyReport, ApplyError> {
        let t0 = Instant::now();
        let plan = &*self.effective(plan);
        if plan.backend != self.fw.backend() {
            return Err(ApplyError::BackendMismatch {
                plan: plan.backend.name(),
                applier: self.fw.backend().name(),
            });
        }
        let _lock = self.store.lock()?;
        let mut changes = Vec::new();
        let mut loaded = false;
        let work = self.store.work();
        // What to do to links, addresses and routes, and what to remove: computed once, from
        // the system as it is now (the steps before the links change neither).
        let acts = self
            .actions(plan)
            .map_err(|(s, e)| fail(s, &changes, Recovery::NotAttempted)(e))?;

        // 1. Kernel settings first: default.* keys are inherited by links created below.
        //    Keys of a planned interface that does not exist yet wait until after the links.
        let (early, late) = self.split_sysctls(plan);
        let sc = sysctl::apply(self.sys.as_ref(), &early)
            .map_err(|e| fail(Step::Sysctls, &changes, Recovery::NotAttempted)(e.into()))?;
        changes.extend(sc.into_iter().map(|c| Change {
            step: Step::Sysctls,
            object: c.key,
            detail: format!("{} -> {}", c.from, c.to),
        }));

        // 2. Nothing of ours loaded yet: close the gateway before any interface comes up.
        //    When the links step creates no interface and every planned interface's own
        //    settings are written already, the full firewall closes it as well: one
        //    transaction instead of the fail-closed table and then the full one. Where the
        //    kernel refuses the full one before the links (e.g. it names a device to come),
        //    the fail-closed table goes first as before.
        let is_loaded = self
            .fw
            .is_loaded()
            .map_err(|e| fail(Step::FailClosed, &changes, Recovery::NotAttempted)(e.into()))?;
        let text = LoadText::from_plan(plan);
        let mut early = false;
        if !is_loaded && late.is_empty() && !acts.links.iter().any(Action::creates) {
            match self.fw.load(&text, &work) {
                Ok(_) => {
                    early = true;
                    loaded = true;
                    tracing::info!(
                        backend = plan.backend.name(),
                        "loaded the full firewall before the links: no fail-closed table needed"
                    );
                    changes.push(Change {
                        step: Step::Firewall,
                        object: self.fw_object(),
                        detail: "loaded in one transaction before any interface was touched (no fail-closed table needed)".into(),
                    });
                }
                Err(e) => tracing::info!(
                    error = %e,
                    "the full firewall was refused before the links: the fail-closed one goes first"
                ),
            }
        }
        if !is_loaded && !early {
            let text = self.fail_closed_text(plan);
            self.fw
                .load(&text, &work)
                .map_err(|e| fail(Step::FailClosed, &changes, Recovery::Unchanged)(e.into()))?;
            tracing::info!(backend = plan.backend.name(), "loaded fail-closed firewall");
            loaded = true;
            changes.push(Change {
                step: Step::FailClosed,
                object: self.fw_object(),
                detail: "loaded the fail-closed firewall (no Bulkhead ruleset was loaded)".into(),
            });
        }

        // 3. Links, addresses, routes. A failure from here to the firewall step leaves the
        //    firewall as it was: the previous ruleset, or the fail-closed one just loaded.
        let untouched = || {
            if early {
                // the full firewall went in first: a failed cold apply ends fail-closed
                self.close(plan, &work)
            } else if loaded {
                Recovery::FailClosed
            } else {
                Recovery::NotAttempted
            }
        };
        self.links(&acts.links, &mut changes)
            .map_err(|(s, e)| fail(s, &changes, untouched())(e))?;

        let sc = sysctl::apply(self.sys.as_ref(), &late)
            .map_err(|e| fail(Step::Sysctls, &changes, untouched())(e.into()))?;
        changes.extend(sc.into_iter().map(|c| Change {
            step: Step::Sysctls,
            object: c.key,
            detail: format!("{} -> {}", c.from, c.to),
        }));

        // 4. The full firewall, unless the live one is already exactly the last applied one.
        let cur = self
            .store
            .current()
            .map_err(|e| fail(Step::State, &changes, untouched())(e.into()))?;
        let (snapshot, stamp) = if early {
            // loaded in step 2, and nothing in nftables changed since but by us
            let stamp = self.kernel_stamp();
            let snapshot = if stamp.is_some() {
                None
            } else {
                self.fw
                    .snapshot()
                    .map_err(|e| fail(Step::Firewall, &changes, Recovery::NotAttempted)(e.into()))?
            };
            (snapshot, stamp)
        } else {
            // Is the live firewall exactly the last applied one? The kernel's stamp answers
            // without listing the table; else the listing is compared with the recorded one.
            let stamp_before = self.kernel_stamp();
            let same_text = cur.as_ref().is_some_and(|g| g.text == text);
            let by_stamp = same_text
                && stamp_before.is_some()
                && cur.as_ref().and_then(|g| g.kernel_stamp.as_ref()) == stamp_before.as_ref();
            let before = if by_stamp || (!same_text && stamp_before.is_some()) {
                // not needed: unchanged by the stamp, or to be replaced (a failed load is then
                // recognised by the stamp)
                Before::Stamp(stamp_before.clone())
            } else {
                Before::Listing(
                    self.fw
                        .snapshot()
                        .map_err(|e| fail(Step::Firewall, &changes, untouched())(e.into()))?,
                )
            };
            let same = by_stamp
                || matches!(&before, Before::Listing(b) if same_text && b.is_some()
                    && cur.as_ref().is_some_and(|g| &g.snapshot == b));
            let mut snapshot = match &before {
                Before::Listing(b) => b.clone(),
                Before::Stamp(_) => cur.as_ref().and_then(|g| g.snapshot.clone()),
            };
            let mut stamp = if same { stamp_before.clone() } else { None };
            if !same {
                match self.fw.load(&text, &work) {
                    Ok(_) => {
                        loaded = true;
                        changes.push(Change {
                            step: Step::Firewall,
                            object: self.fw_object(),
                            detail: if is_loaded {
                                "replaced in one transaction".into()
                            } else {
                                "loaded".into()
                            },
                        });
                        // With a stamp, the listing is left to the next check (it lists once,
                        // while the stamp still says nothing changed since this load).
                        stamp = self.kernel_stamp();
                        snapshot = if stamp.is_some() {
                            None
                        } else {
                            self.fw.snapshot().map_err(|e| {
                                fail(Step::Firewall, &changes, Recovery::NotAttempted)(e.into())
                            })?
                        };
                    }
                    Err(e) => {
                        let recovery = self.recover(plan, &before, cur.as_ref());
                        return Err(fail(Step::Firewall, &changes, recovery)(e.into()));
                    }
                }
            }
            (snapshot, stamp)
        };

        // The other backend's ruleset, left over from a config that used it: looked for when
        // the last applied generation was the other backend's or is not known (the first
        // apply, a lost state); an apply on top of one of this backend's found none already.
        let other_may_linger = cur
            .as_ref()
            .is_none_or(|g| g.text.backend() != self.fw.backend());
        if let Some(o) = &self.other
            && o.backend() != self.fw.backend()
            && other_may_linger
        {
            match o.is_loaded() {
                Ok(true) => {
                    let removed = o.remove_all().map_err(|e| {
                        fail(Step::Firewall, &changes, Recovery::Unchanged)(e.into())
                    })?;
                    changes.push(Change {
                        step: Step::Firewall,
                        object: format!("{} leftovers", o.backend().name()),
                        detail: format!("removed: {}", removed.join("; ")),
                    });
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(backend = o.backend().name(), error = %e, "other backend not checked")
                }
            }
        }

        // 5. What Bulkhead created and the plan no longer lists.
        self.cleanup(plan, &acts.cleanup, &mut changes)
            .map_err(|e| fail(Step::Cleanup, &changes, Recovery::Unchanged)(e))?;

        // 6. Record the generation when anything differs from the last one.
        let plan_json = plan.json(None);
        let mut generation = cur.as_ref().map(|g| g.meta.generation);
        let snap_changed = cur.as_ref().is_some_and(|g| g.snapshot != snapshot);
        if cur
            .as_ref()
            .is_none_or(|g| g.plan_json != plan_json || g.text != text)
            || loaded
        {
            generation = Some(
                self.store
                    .commit(&text, &plan_json, snapshot.as_deref())
                    .map_err(|e| fail(Step::State, &changes, Recovery::Unchanged)(e.into()))?,
            );
            let _ = self.store.set_kernel_stamp(stamp.as_deref());
        } else {
            if snap_changed && let Some(s) = &snapshot {
                let _ = self.store.set_snapshot(s);
            }
            if stamp.is_some()
                && cur.as_ref().and_then(|g| g.kernel_stamp.as_ref()) != stamp.as_ref()
            {
                let _ = self.store.set_kernel_stamp(stamp.as_deref());
            }
        }
        let report = ApplyReport {
            changes,
            generation,
            firewall_loaded: loaded,
            elapsed: t0.elapsed(),
        };
        tracing::info!(
            changes = report.changes.len(),
            generation = ?report.generation,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "apply done"
        );
        Ok(report)
    }

    /// Sysctls to write before the links, and those of planned interfaces that do not exist
    /// yet (`net.ipv4.conf.IF.*`, `net.ipv6.conf.IF.*`, `net.ipv4.neigh.IF.*`, with `/` for a
    /// dot in IF), written after the links are created.
    fn split_sysctls(
        &self,
        plan: &Plan,
    ) -> (Vec<crate::plan::SysctlPlan>, Vec<crate::plan::SysctlPlan>) {
        let mut early = Vec::new();
        let mut late = Vec::new();
        for s in &plan.sysctls {
            let parts: Vec<&str> = s.key.split('.').collect();
            let iface = match parts.as_slice() {
                ["net", "ipv4" | "ipv6", "conf" | "neigh", i, _, ..] => Some(i.replace('/', ".")),
                _ => None,
            };
            let pending = iface.is_some_and(|i| {
                plan.links.iter().any(|l| l.name == i) && self.net.link(&i).ok().flatten().is_none()
            });
            if pending {
                late.push(s.clone());
            } else {
                early.push(s.clone());
            }
        }
        (early, late)
    }

    /// A cold apply that loaded the full firewall first failed before finishing: load the
    /// fail-closed one, as an apply that had loaded it first would have left.
    fn close(&self, plan: &Plan, work: &std::path::Path) -> Recovery {
        match self.fw.load(&self.fail_closed_text(plan), work) {
            Ok(_) => {
                tracing::warn!(
                    "apply failed after the full firewall was loaded: the fail-closed one replaces it"
                );
                Recovery::FailClosed
            }
            Err(e) => Recovery::RestoreFailed(format!("loading the fail-closed firewall: {e}")),
        }
    }

    fn fw_object(&self) -> String {
        match self.fw.backend() {
            Backend::Nftables => "table inet bulkhead".into(),
            Backend::Iptables => "iptables BH-* chains and bh-* ipsets".into(),
        }
    }

    fn fail_closed_text(&self, plan: &Plan) -> LoadText {
        let rs = firewall::fail_closed(&plan.ruleset);
        let fw = crate::plan::render_firewall(&rs, plan.backend, &plan.source);
        LoadText::new(&fw, &rs)
    }

    /// After a failed load: if the live firewall no longer equals what it was before, put the
    /// last-known-good one back (or the fail-closed one when there is none).
    fn recover(&self, plan: &Plan, before: &Before, lkg: Option<&state::Generation>) -> Recovery {
        let work = self.store.work();
        match before {
            // a failed transaction commits nothing: the stamp stands still
            Before::Stamp(Some(s)) if self.kernel_stamp().as_ref() == Some(s) => {
                return Recovery::Unchanged;
            }
            Before::Stamp(_) => {}
            Before::Listing(b) => match self.fw.snapshot() {
                Ok(now) if &now == b => return Recovery::Unchanged,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the firewall after a failed load")
                }
            },
        }
        let r = match lkg {
            Some(g) => self
                .fw
                .load(&g.text, &work)
                .map(|_| Recovery::RestoredLastGood(g.meta.generation)),
            None => self
                .fw
                .load(&self.fail_closed_text(plan), &work)
                .map(|_| Recovery::FailClosed),
        };
        match r {
            Ok(r) => {
                tracing::warn!(recovery = %r, "firewall restored after a failed load");
                r
            }
            Err(e) => {
                tracing::error!(error = %e, "restoring the firewall failed");
                Recovery::RestoreFailed(e.to_string())
            }
        }
    }

    /// The link, address, route and cleanup actions of `plan` (see [`actions`]).
    fn actions(&self, plan: &Plan) -> Result<actions::Actions, (Step, StepError)> {
        let rec = self
            .store
            .created()
            .map_err(|e| (Step::State, StepError::from(e)))?;
        actions::compute(self.net.as_ref(), plan, &rec)
            .map_err(|e| (Step::Links, StepError::from(e)))
    }

    /// Carry out the link, address and route actions, in order; the first that fails stops.
    fn links(&self, acts: &[Action], changes: &mut Vec<Change>) -> Result<(), (Step, StepError)> {
        let l = |e: NetlinkError| (Step::Links, StepError::from(e));
        let st = |e: StateError| (Step::State, StepError::from(e));
        let mut rec = self.store.created().map_err(st)?;
        let index = |name: &str, role: &str| -> Result<netlink::LinkState, NetlinkError> {
            self.net
                .link(name)?
                .ok_or_else(|| NetlinkError::MissingInterface {
                    name: name.to_string(),
                    role: role.to_string(),
                })
        };
        let res = (|| {
            for act in acts {
                match act {
                    Action::Missing { step, name, role } => {
                        return Err((
                            *step,
                            StepError::from(NetlinkError::MissingInterface {
                                name: name.clone(),
                                role: role.clone(),
                            }),
                        ));
                    }
                    Action::Conflict { name, want } => {
                        return Err(l(NetlinkError::Conflict {
                            name: name.clone(),
                            want: want.clone(),
                        }));
                    }
                    Action::Recreate {
                        name,
                        parent,
                        id,
                        mtu,
                        up,
                        ..
                    }
                    | Action::Create {
                        name,
                        parent,
                        id,
                        mtu,
                        up,
                    } => {
                        if matches!(act, Action::Recreate { .. }) {
                            if let Some(s) = self.net.link(name).map_err(l)?
                                && netlink::is_vlan(&s)
                            {
                                self.net.del_link(s.index).map_err(l)?;
                            }
                            rec.links.retain(|c| &c.name != name);
                            rec.addresses.retain(|a| &a.dev != name);
                            self.store.save_created(&rec).map_err(st)?;
                        }
                        let p = index(parent, &format!("trunk of {name}")).map_err(l)?;
                        let created = self.net.add_vlan(name, p.index, *id).map_err(l)?;
                        if created {
                            rec.links.push(CreatedLink {
                                name: name.clone(),
                                parent: parent.clone(),
                                id: *id,
                            });
                            self.store.save_created(&rec).map_err(st)?;
                            changes.push(act.done());
                        }
                        let link = index(name, "a vlan just created").map_err(l)?;
                        if let Some(m) = mtu
                            && link.mtu != *m
                        {
                            self.net.set_mtu(link.index, *m).map_err(l)?;
                        }
                        if *up && !link.up {
                            self.net.set_up(link.index).map_err(l)?;
                        }
                    }
                    Action::SetMtu { name, to, .. } => {
                        let link = index(name, "a planned link").map_err(l)?;
                        self.net.set_mtu(link.index, *to).map_err(l)?;
                        changes.push(act.done());
                    }
                    Action::AddAddress { dev, address } => {
                        let link = index(dev, "a planned link").map_err(l)?;
                        if self.net.add_address(link.index, *address).map_err(l)? {
                            rec.addresses.push(CreatedAddress {
                                dev: dev.clone(),
                                address: *address,
                            });
                            self.store.save_created(&rec).map_err(st)?;
                            changes.push(act.done());
                        }
                    }
                    Action::SetUp { name } => {
                        let link = index(name, "a planned link").map_err(l)?;
                        self.net.set_up(link.index).map_err(l)?;
                        changes.push(act.done());
                    }
                    Action::AddRoute { via, dev } => {
                        let r = |e: NetlinkError| (Step::Routes, StepError::from(e));
                        let link = index(dev, "route device").map_err(r)?;
                        let added = match via {
                            std::net::IpAddr::V4(v) => self.net.add_default_route(*v, link.index),
                            std::net::IpAddr::V6(v) => self.net.add_default_route6(*v, link.index),
                        };
                        if added.map_err(r)? {
                            changes.push(act.done());
                        } else {
                            tracing::warn!(via = %via, dev = %dev, "another default route exists; left alone");
                        }
                    }
                    Action::OtherRoute { via, dev } => {
                        tracing::warn!(via = %via, dev = %dev, "another default route exists; left alone");
                    }
                    Action::RemoveAddress { .. } | Action::RemoveLink { .. } => {}
                }
            }
            Ok(())
        })();
        self.store.save_created(&rec).map_err(st)?;
        res
    }

    /// Remove what Bulkhead created and the plan no longer lists (the cleanup actions), and
    /// forget every record the plan no longer wants.
    fn cleanup(
        &self,
        plan: &Plan,
        acts: &[Action],
        changes: &mut Vec<Change>,
    ) -> Result<(), StepError> {
        let mut rec = self.store.created()?;
        let res = (|| {
            for act in acts {
                match act {
                    Action::RemoveAddress { dev, address } => {
                        if let Some(link) = self.net.link(dev)?
                            && self.net.del_address(link.index, *address)?
                        {
                            changes.push(act.done());
                        }
                        rec.addresses
                            .retain(|c| !(&c.dev == dev && &c.address == address));
                    }
                    Action::RemoveLink { name, id } => {
                        if let Some(link) = self.net.link(name)?
                            && netlink::is_vlan(&link)
                            && link.vlan_id == Some(*id)
                            && self.net.del_link(link.index)?
                        {
                            changes.push(act.done());
                        }
                        rec.addresses.retain(|a| &a.dev != name);
                        rec.links.retain(|c| &c.name != name);
                    }
                    _ => {}
                }
            }
            rec.addresses.retain(|c| actions::wanted_address(plan, c));
            rec.links.retain(|c| actions::wanted_link(plan, c));
            Ok::<_, NetlinkError>(())
        })();
        self.store.save_created(&rec)?;
        res.map_err(StepError::from)
    }

    /// What an apply of `plan` would change, read from the live system (changes nothing).
    pub fn diff(&self, plan: &Plan) -> Result<DiffReport, ApplyError> {
        let plan = &*self.effective(plan);
        let mut v = Vec::new();
        let (early, late) = self.split_sysctls(plan);
        for c in sysctl::diff(self.sys.as_ref(), &early)? {
            v.push(Change {
                step: Step::Sysctls,
                object: c.key,
                detail: format!("{} -> {}", c.from, c.to),
            });
        }
        for s in late {
            v.push(Change {
                step: Step::Sysctls,
                object: s.key,
                detail: format!("-> {} once its interface is created", s.value),
            });
        }
        v.extend(
            self.actions(plan)
                .map_err(|(_, cause)| match cause {
                    StepError::Netlink(e) => ApplyError::Netlink(e),
                    StepError::State(e) => ApplyError::State(e),
                    StepError::Sysctl(e) => ApplyError::Sysctl(e),
                    StepError::Firewall(e) => ApplyError::Firewall(e),
                })?
                .planned(),
        );
        let mut push = |step, object: String, detail: String| {
            v.push(Change {
                step,
                object,
                detail,
            })
        };
        let obj = self.fw_object();
        let text = LoadText::from_plan(plan);
        let cur = self.store.current()?;
        let differs = cur.as_ref().filter(|g| g.text != text).map(|g| {
            format!(
                "planned firewall differs from the last applied (generation {})",
                g.meta.generation
            )
        });
        let stamp = self.kernel_stamp();
        if let Some(g) = &cur
            && stamp.is_some()
            && g.kernel_stamp == stamp
        {
            // nothing in nftables changed since the live firewall was exactly this generation
            if let Some(d) = &differs {
                push(Step::Firewall, obj.clone(), d.clone());
            }
            // A snapshot made stale by live set changes is not listed again here: the stamp
            // recorded with those changes says that nothing else changed since, and the
            // listing of a large table would hold up the next set change. It is renewed by
            // the next load (a stale one and a moved stamp count as drift).
            if g.snapshot.is_none() {
                // the listing after an apply, taken once, here
                if let Some(live) = self.fw.snapshot()?
                    && self.kernel_stamp() == stamp
                {
                    self.store.set_snapshot(&live)?;
                }
            }
            return Ok(DiffReport { changes: v });
        }
        match (self.fw.snapshot()?, cur) {
            (None, _) => push(Step::Firewall, obj, "not loaded".into()),
            (Some(_), None) => push(
                Step::Firewall,
                obj,
                "loaded, but never applied by this state directory".into(),
            ),
            (Some(live), Some(g)) => {
                if let Some(d) = &differs {
                    push(Step::Firewall, obj.clone(), d.clone());
                }
                if g.snapshot_stale && g.text == text && stamp.is_none() {
                    // live set members changed through Bulkhead since the last snapshot (a
                    // backend without a stamp)
                    self.store.set_snapshot(&live)?;
                } else if g.snapshot_stale || g.snapshot.as_deref() != Some(live.as_str()) {
                    push(
                        Step::Firewall,
                        obj,
                        "live firewall differs from what was last applied (changed outside apply)"
                            .into(),
                    );
                } else if stamp.is_some() && g.text == text {
                    // something else in nftables changed, not our table: checks are cheap again
                    self.store.set_kernel_stamp(stamp.as_deref())?;
                }
            }
        }
        Ok(DiffReport { changes: v })
    }

    /// Reload the last-known-good firewall (e.g. after it was changed by hand).
    pub fn restore(&self) -> Result<ApplyReport, ApplyError> {
        let t0 = Instant::now();
        let _lock = self.store.lock()?;
        let g = self.store.current()?.ok_or(ApplyError::NothingToRollBack)?;
        self.fw.load(&g.text, &self.store.work())?;
        if let Some(s) = self.fw.snapshot()? {
            self.store.set_snapshot(&s)?;
        }
        self.store
            .set_kernel_stamp(self.kernel_stamp().as_deref())?;
        Ok(ApplyReport {
            changes: vec![Change {
                step: Step::Firewall,
                object: self.fw_object(),
                detail: format!("restored generation {}", g.meta.generation),
            }],
            generation: Some(g.meta.generation),
            firewall_loaded: true,
            elapsed: t0.elapsed(),
        })
    }

    /// Go back one generation: load the previous generation's firewall and make it the
    /// last-known-good one (the current one is dropped). Links, addresses and sysctls are not
    /// rolled back: re-apply the older config for those.
    pub fn rollback(&self) -> Result<ApplyReport, ApplyError> {
        let t0 = Instant::now();
        let _lock = self.store.lock()?;
        let prev = self.store.previous()?;
        let g = prev.last().ok_or(ApplyError::NothingToRollBack)?;
        self.fw.load(&g.text, &self.store.work())?;
        let from = self.store.current()?.map(|c| c.meta.generation);
        let now = self.store.pop()?.ok_or(ApplyError::NothingToRollBack)?;
        if let Some(s) = self.fw.snapshot()? {
            self.store.set_snapshot(&s)?;
        }
        self.store
            .set_kernel_stamp(self.kernel_stamp().as_deref())?;
        tracing::info!(from = ?from, to = now.meta.generation, "rolled back the firewall");
        Ok(ApplyReport {
            changes: vec![Change {
                step: Step::Firewall,
                object: self.fw_object(),
                detail: format!(
                    "rolled back from generation {} to {}",
                    from.map_or("?".into(), |g| g.to_string()),
                    now.meta.generation
                ),
            }],
            generation: Some(now.meta.generation),
            firewall_loaded: true,
            elapsed: t0.elapsed(),
        })
    }

    /// Add addresses to a group's live set (no reload; the next apply resets groups to the
    /// config, the quarantine set keeps its entries). Addresses put in quarantine also lose
    /// the connections they already have (their conntrack entries are deleted).
    pub fn set_add(&self, group: &str, addrs: &[IpNet]) -> Result<(), ApplyError> {
        self.fw.set_add(group, addrs)?;
        if group == crate::plan::ruleset::QUARANTINE {
            cut_connections(addrs);
        }
        Ok(())
    }

    pub fn set_del(&self, group: &str, addrs: &[IpNet]) -> Result<(), ApplyError> {
        Ok(self.fw.set_del(group, addrs)?)
    }

    /// Put an IPv6 source into the IPv6 quarantine set (`quarantine_v6`, nftables only: the
    /// model refuses IPv6 with the iptables backend). It times out like the IPv4 set.
    pub fn quarantine6(&self, addr: std::net::Ipv6Addr) -> Result<(), ApplyError> {
        let net = IpNet::V6(ipnet::Ipv6Net::new(addr, 128).expect("/128"));
        self.set_add(crate::plan::ruleset::QUARANTINE, &[net])
    }

    /// After live set changes: the plan with the new members becomes the current generation's
    /// record (no new generation, no reload), so that the next check does not see drift.
    pub fn amend(&self, plan: &Plan) -> Result<(), ApplyError> {
        let plan = &*self.effective(plan);
        let _lock = self.store.lock()?;
        Ok(self.store.amend(
            &LoadText::from_plan(plan),
            &plan.json(None),
            self.kernel_stamp().as_deref(),
        )?)
    }

    pub fn set_list(&self, group: &str) -> Result<Vec<String>, ApplyError> {
        Ok(self.fw.set_list(group)?)
    }

    pub fn set_sizes(&self) -> Result<Vec<(String, usize)>, ApplyError> {
        Ok(self.fw.set_sizes()?)
    }

    /// Packet/byte counters per (chain, rule comment).
    pub fn counters(&self) -> Result<Vec<RuleCounter>, ApplyError> {
        Ok(self.fw.counters()?)
    }

    /// Flow offload as this applier loads `plan`: on, off by config, or unavailable (the
    /// kernel has no flowtable; the plan is then loaded without it).
    pub fn flow_offload(&self, plan: &Plan) -> FlowOffload {
        if plan.ruleset.flowtable.is_none() {
            return FlowOffload::Off;
        }
        if plan.backend != Backend::Nftables {
            return FlowOffload::Unavailable(format!("{} backend", plan.backend.name()));
        }
        match self.flowtable_support() {
            Ok(()) => FlowOffload::On,
            Err(why) => FlowOffload::Unavailable(why.clone()),
        }
    }

    /// The kernel's answer, asked once; a kernel without flowtables is logged and reported as
    /// an event the first time.
    fn flowtable_support(&self) -> &Result<(), String> {
        self.flowtable.get_or_init(|| {
            let cache = self.store.root.join("flowtable-probe");
            let boot = boot_id().unwrap_or_default();
            if let Some(r) = probe_cached(&cache, &boot) {
                return r;
            }
            let r = self.fw.flowtable_support();
            probe_keep(&cache, &boot, &r);
            if let Err(why) = &r {
                tracing::warn!(reason = %why, "flow offload unavailable: the firewall is loaded without the flowtable");
                crate::logship::emit(
                    crate::logship::event::Event::new(
                        crate::logship::event::Kind::Apply,
                        crate::logship::event::Severity::Warning,
                        format!("flow offload unavailable ({why}): the firewall is loaded without the flowtable"),
                    )
                    .with("flow_offload", "unavailable"),
                );
            }
            r
        })
    }

    /// The plan as it is loaded here: without the flowtable where the kernel has none, so the
    /// apply never fails for it.
    fn effective<'p>(&self, plan: &'p Plan) -> std::borrow::Cow<'p, Plan> {
        if plan.backend == Backend::Nftables
            && plan.ruleset.flowtable.is_some()
            && self.flowtable_support().is_err()
        {
            std::borrow::Cow::Owned(plan.without_flow_offload())
        } else {
            std::borrow::Cow::Borrowed(plan)
        }
    }
}

/// Whether established forwarded flows are offloaded to the flowtable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowOffload {
    On,
    /// `[system] flow_offload = false`.
    Off,
    /// Asked for, but not possible here (the reason).
    Unavailable(String),
}

impl std::fmt::Display for FlowOffload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlowOffload::On => f.write_str("on"),
            FlowOffload::Off => f.write_str("off ([system] flow_offload = false)"),
            FlowOffload::Unavailable(why) => write!(f, "unavailable ({why})"),
        }
    }
}

/// This boot's id (the kernel's random one): what is kept per boot is keyed by it.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|b| b.trim().to_string())
}

/// The flowtable probe's answer kept for this boot (`STATE/apply/flowtable-probe`: boot id,
/// then `ok` or the reason): what the kernel can do does not change until it reboots, and
/// the probe is an `nft` process (~20 ms) that every CLI apply would otherwise run again.
fn probe_cached(path: &std::path::Path, boot: &str) -> Option<Result<(), String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let (b, answer) = text.split_once('\n')?;
    if boot.is_empty() || b != boot {
        return None;
    }
    Some(match answer.trim_end() {
        "ok" => Ok(()),
        why if why == firewall::offload::NO_FLOW_TABLE => Err(why.to_string()),
        _ => return None,
    })
}

/// Keep a definite answer of the probe (not a failure of the probe itself) for this boot.
fn probe_keep(path: &std::path::Path, boot: &str, r: &Result<(), String>) {
    let answer = match r {
        Ok(()) => "ok",
        Err(why) if why == firewall::offload::NO_FLOW_TABLE => why.as_str(),
        Err(_) => return,
    };
    if boot.is_empty() {
        return;
    }
    if let Some(d) = path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let tmp = path.with_extension("tmp");
    // a cache: no fsync (a lost file only means one more probe)
    if std::fs::write(&tmp, format!("{boot}\n{answer}\n")).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// Delete the tracked connections of addresses just put in quarantine: the rulesets accept
/// established traffic before the quarantine drop, and offloaded flows skip the forward chain,
/// so without this a quarantined host keeps the connections it has. A failure is logged: the
/// quarantine itself is in place.
fn cut_connections(addrs: &[IpNet]) {
    for a in addrs {
        match firewall::conntrack::cut(a) {
            Ok(n) => {
                tracing::info!(source = %a, connections = n, "quarantine: cut the source's tracked connections")
            }
            Err(e) => {
                tracing::warn!(source = %a, "quarantine: cannot cut the source's tracked connections: {e}")
            }
        }
    }
}
