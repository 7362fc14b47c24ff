//! The firewall behind a small trait, with one real backend per kernel interface:
//! [`Nftables`] (one `nft -f` transaction of `table inet bulkhead`) and [`Iptables`]
//! (`ipset restore`, then `iptables-restore --noflush` of Bulkhead's own chains, then the
//! hook jumps from the built-in chains).

pub mod conntrack;
mod iptables;
pub mod nfset;
mod nft;
pub mod nftgen;
pub mod offload;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

pub use self::iptables::Iptables;
pub use self::nft::Nftables;
use super::cmd::CmdError;
use crate::model::Backend;
use crate::plan::ruleset::{Chain, Hook, Ruleset, Verdict};
use crate::plan::{FirewallText, Plan};

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// A tool rejected its input or could not run; `phase` names what was being done.
    #[error("{phase}: {source}")]
    Command {
        phase: &'static str,
        #[source]
        source: CmdError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not read `{what}` output: {message}")]
    Parse { what: String, message: String },
    #[error("no Bulkhead ruleset is loaded")]
    NotLoaded,
    #[error("no set `{0}` in the loaded ruleset")]
    NoSuchSet(String),
    /// The kernel (or the check before it) refused an element of a live set change; nothing of
    /// the change was applied.
    #[error("set change on `{set}`: {element}: {reason}")]
    SetElement {
        set: String,
        element: String,
        reason: String,
    },
    /// A netlink request to nf_tables failed; `phase` names what was being done.
    #[error("{phase}: {source}")]
    Netlink {
        phase: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("this is the {have} backend; the text to load is for {want}")]
    WrongBackend {
        have: &'static str,
        want: &'static str,
    },
}

/// A hook jump the iptables backend keeps at the head of a built-in chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookJump {
    pub table: String,
    pub chain: String,
    pub target: String,
}

/// Exactly what a backend loads: the rendered text plus what iptables needs beside it.
/// Stored as JSON in the state directory so a last-known-good firewall can be reloaded
/// without recomputing a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "backend")]
pub enum LoadText {
    Nftables {
        script: String,
    },
    Iptables {
        ipset: String,
        rules: String,
        hooks: Vec<HookJump>,
    },
}

impl LoadText {
    /// The text of a rendered firewall, with the hooks its ruleset needs.
    pub fn new(fw: &FirewallText, rs: &Ruleset) -> Self {
        match fw {
            FirewallText::Nftables { script } => LoadText::Nftables {
                script: script.clone(),
            },
            FirewallText::Iptables { ipset, rules } => LoadText::Iptables {
                ipset: ipset.clone(),
                rules: rules.clone(),
                hooks: crate::plan::iptables::hooks(rs)
                    .into_iter()
                    .map(|(t, c, j)| HookJump {
                        table: t.into(),
                        chain: c.into(),
                        target: j,
                    })
                    .collect(),
            },
        }
    }

    pub fn from_plan(plan: &Plan) -> Self {
        Self::new(&plan.firewall, &plan.ruleset)
    }

    pub fn backend(&self) -> Backend {
        match self {
            LoadText::Nftables { .. } => Backend::Nftables,
            LoadText::Iptables { .. } => Backend::Iptables,
        }
    }

    /// The files a person would read: name → content.
    pub fn files(&self) -> Vec<(&'static str, &str)> {
        match self {
            LoadText::Nftables { script } => vec![("firewall.nft", script)],
            LoadText::Iptables { ipset, rules, .. } => {
                vec![("firewall.ipset", ipset), ("firewall.iptables", rules)]
            }
        }
    }
}

/// Packets and bytes that matched the rules carrying one comment in one chain (summed over
/// the rules a neutral rule was expanded into).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleCounter {
    pub chain: String,
    pub comment: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Add one reading to a list keyed by (chain, comment).
pub(crate) fn add_counter(v: &mut Vec<RuleCounter>, chain: &str, comment: &str, p: u64, b: u64) {
    if let Some(c) = v
        .iter_mut()
        .find(|c| c.chain == chain && c.comment == comment)
    {
        c.packets += p;
        c.bytes += b;
    } else {
        v.push(RuleCounter {
            chain: chain.to_string(),
            comment: comment.to_string(),
            packets: p,
            bytes: b,
        });
    }
}

/// The firewall of the running kernel, as far as Bulkhead owns it.
pub trait Firewall {
    fn backend(&self) -> Backend;

    /// Whether Bulkhead's ruleset (table or chains) is present.
    fn is_loaded(&self) -> Result<bool, FirewallError>;

    /// A number that changes whenever the backend's rules may have changed (nf_tables'
    /// ruleset generation), when the backend has one: while it stands still the live rules are
    /// what they were at the last listing.
    fn generation(&self) -> Option<u32> {
        None
    }

    /// A normalised listing of what Bulkhead owns (no counters, no live quarantine entries),
    /// or `None` when nothing is loaded. Two equal snapshots mean the same ruleset.
    fn snapshot(&self) -> Result<Option<String>, FirewallError>;

    /// Check then load `text` atomically as far as the backend allows. `work` is a directory
    /// for the files handed to the tools. Never touches what Bulkhead does not own.
    fn load(&self, text: &LoadText, work: &Path) -> Result<Vec<String>, FirewallError>;

    /// Per-rule counters keyed by chain and rule comment.
    fn counters(&self) -> Result<Vec<RuleCounter>, FirewallError>;

    /// Elements of a live set, as the kernel lists them.
    fn set_list(&self, set: &str) -> Result<Vec<String>, FirewallError>;

    /// Add addresses to a live set without reloading anything. IPv4 members go to `set`,
    /// IPv6 ones to its twin `set_v6` (a backend without IPv6 refuses them).
    fn set_add(&self, set: &str, addrs: &[IpNet]) -> Result<(), FirewallError>;

    /// Remove addresses from a live set without reloading anything (both families, as
    /// [`Firewall::set_add`]).
    fn set_del(&self, set: &str, addrs: &[IpNet]) -> Result<(), FirewallError>;

    /// Names of the sets Bulkhead owns with their element counts.
    fn set_sizes(&self) -> Result<Vec<(String, usize)>, FirewallError>;

    /// Remove everything this backend owns (used when the config switches to the other
    /// backend, or to tear Bulkhead down). Returns what was removed.
    fn remove_all(&self) -> Result<Vec<String>, FirewallError>;

    /// Whether the kernel can hold an nftables flowtable (`Err`: why not). Backends without
    /// flowtables never get one to load, so the default is yes.
    fn flowtable_support(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A real backend for `b`.
pub fn backend(b: Backend) -> Box<dyn Firewall> {
    match b {
        Backend::Nftables => Box::new(Nftables::new()),
        Backend::Iptables => Box::new(Iptables::new()),
    }
}

pub(crate) fn net_text(n: &Ipv4Net) -> String {
    if n.prefix_len() == 32 {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

/// The fail-closed ruleset loaded before any interface is touched when no Bulkhead ruleset is
/// loaded yet: forwarding dropped; the gateway reachable only for established traffic,
/// loopback, ICMP and ICMPv6 as the full ruleset admits them, DHCP from the segments (and the
/// uplink's own DHCP client), and SSH/API from the management segment. Derived from the plan's own ruleset, so it names the same
/// interfaces and sets and is rendered by the same backend code.
pub fn fail_closed(rs: &Ruleset) -> Ruleset {
    let keep = |kind: &str, name: &str| match kind {
        "builtin" => {
            matches!(
                name,
                "established" | "invalid" | "loopback" | "uplink-dhcp-client" | "default-drop"
            ) || name.starts_with("icmp")
        }
        "dhcp" | "management" => true,
        _ => false,
    };
    let mut chains = Vec::new();
    for c in &rs.chains {
        match c.hook {
            Some(Hook::Input) => chains.push(Chain {
                rules: c
                    .rules
                    .iter()
                    .filter(|r| keep(r.origin.kind, &r.origin.name))
                    .cloned()
                    .collect(),
                ..c.clone()
            }),
            Some(Hook::Forward) => chains.push(Chain {
                rules: c
                    .rules
                    .iter()
                    .filter(|r| r.origin.kind == "builtin" && r.origin.name == "default-drop")
                    .cloned()
                    .collect(),
                policy: Verdict::Drop,
                ..c.clone()
            }),
            // The gateway's own traffic is left alone until the full ruleset is loaded.
            Some(Hook::Output) => chains.push(Chain {
                rules: Vec::new(),
                policy: Verdict::Accept,
                ..c.clone()
            }),
            // Unhooked chains are only reached by jumps, none of which are kept.
            None => {}
        }
    }
    Ruleset {
        sets: rs.sets.clone(),
        chains,
        dnat: Vec::new(),
        masquerade: None,
        // loaded before the links exist, and nothing is forwarded
        flowtable: None,
        ..rs.clone()
    }
}

/// Parse an IPv4 address or network as a user writes it.
pub fn parse_addr(s: &str) -> Option<Ipv4Net> {
    if let Ok(n) = s.parse::<Ipv4Net>() {
        return Some(n);
    }
    s.parse::<Ipv4Addr>()
        .ok()
        .map(|a| Ipv4Net::new(a, 32).unwrap())
}
