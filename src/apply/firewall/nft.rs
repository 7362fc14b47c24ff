//! nftables: Bulkhead owns `table inet bulkhead` and nothing else.

use std::path::Path;

use ipnet::IpNet;
use serde_json::Value;

use super::nfset;
use super::{Firewall, FirewallError, LoadText, RuleCounter, add_counter};
use crate::apply::cmd::{CmdError, run};
use crate::model::Backend;
use crate::plan::ruleset::{QUARANTINE, TABLE};

/// The nftables backend: runs the `nft` binary (found on PATH unless set).
#[derive(Debug, Clone)]
pub struct Nftables {
    pub nft: String,
}

impl Default for Nftables {
    fn default() -> Self {
        Self::new()
    }
}

fn no_table(e: &CmdError) -> bool {
    e.stderr.contains("No such file or directory")
}

fn cmd(phase: &'static str) -> impl FnOnce(CmdError) -> FirewallError {
    move |source| FirewallError::Command { phase, source }
}

impl Nftables {
    pub fn new() -> Self {
        Nftables { nft: "nft".into() }
    }

    fn nft(&self, args: &[&str]) -> Result<String, CmdError> {
        run(&self.nft, args, None)
    }

    fn json(&self, args: &[&str]) -> Result<Vec<Value>, FirewallError> {
        let out = self.nft(args).map_err(|e| {
            if no_table(&e) {
                FirewallError::NotLoaded
            } else {
                FirewallError::Command {
                    phase: "list",
                    source: e,
                }
            }
        })?;
        let v: Value = serde_json::from_str(&out).map_err(|e| FirewallError::Parse {
            what: args.join(" "),
            message: e.to_string(),
        })?;
        Ok(v.get("nftables")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// Live quarantine entries of `set` as `add element` statements keeping their timeout and
    /// the time they have left, so a reload (which replaces the whole table) does not release
    /// quarantined hosts early. Read over netlink: `nft` would first read every interval set.
    fn quarantine_carry(&self, set: &str) -> Vec<String> {
        let Ok(items) = nfset::timed(nfset::FAMILY_INET, TABLE, set) else {
            return Vec::new();
        };
        items
            .into_iter()
            .map(|(val, timeout, expires)| match (timeout, expires) {
                (Some(t), Some(x)) => {
                    format!("{val} timeout {t}ms expires {}ms", x.clamp(1, t.max(1)))
                }
                _ => val,
            })
            .collect()
    }
}

/// Strip what changes while the ruleset stays the same: counter values and the entries of
/// sets with timeouts (filled at run time by alerts).
pub(crate) fn normalise(listing: &str) -> String {
    let mut out = String::new();
    let mut in_timeout_set = false;
    let mut set_lines: Vec<String> = Vec::new();
    let mut skipping_elements = false;
    for line in listing.lines() {
        let t = line.trim();
        if t.starts_with("set ") && t.ends_with('{') {
            set_lines.clear();
            in_timeout_set = false;
            set_lines.push(line.to_string());
            continue;
        }
        if !set_lines.is_empty() {
            if t.starts_with("flags ") && t.contains("timeout") {
                in_timeout_set = true;
            }
            if in_timeout_set && t.starts_with("elements = {") {
                skipping_elements = !t.ends_with('}');
                continue;
            }
            if skipping_elements {
                if t.ends_with('}') {
                    skipping_elements = false;
                }
                continue;
            }
            set_lines.push(line.to_string());
            if t == "}" {
                for l in set_lines.drain(..) {
                    out.push_str(&l);
                    out.push('\n');
                }
            }
            continue;
        }
        out.push_str(&strip_counter(line));
        out.push('\n');
    }
    out
}

fn strip_counter(line: &str) -> String {
    let Some(i) = line.find("counter packets ") else {
        return line.to_string();
    };
    let rest = &line[i + "counter packets ".len()..];
    // "N bytes M" follows.
    let mut words = rest.splitn(4, ' ');
    let _n = words.next();
    let _bytes = words.next();
    let _m = words.next();
    let tail = words.next().unwrap_or("");
    let sep = if tail.is_empty() { "" } else { " " };
    format!("{}counter{sep}{tail}", &line[..i])
}

impl Firewall for Nftables {
    fn backend(&self) -> Backend {
        Backend::Nftables
    }

    fn is_loaded(&self) -> Result<bool, FirewallError> {
        // one netlink request for the table, not the table itself (which lists every element)
        nfset::table_exists(nfset::FAMILY_INET, TABLE)
    }

    fn generation(&self) -> Option<u32> {
        super::nftgen::generation()
    }

    fn snapshot(&self) -> Result<Option<String>, FirewallError> {
        match self.nft(&["list", "table", "inet", TABLE]) {
            Ok(s) => Ok(Some(normalise(&s))),
            Err(e) if no_table(&e) => Ok(None),
            Err(e) => Err(cmd("list")(e)),
        }
    }

    fn load(&self, text: &LoadText, work: &Path) -> Result<Vec<String>, FirewallError> {
        let LoadText::Nftables { script } = text else {
            return Err(FirewallError::WrongBackend {
                have: "nftables",
                want: text.backend().name(),
            });
        };
        let mut script = script.clone();
        // the IPv4 quarantine and its IPv6 twin
        let mut carried = 0;
        for set in [
            QUARANTINE.to_string(),
            crate::plan::ruleset::set6(QUARANTINE),
        ] {
            let carry = if script.contains(&format!("\tset {set} {{")) {
                self.quarantine_carry(&set)
            } else {
                Vec::new()
            };
            if !carry.is_empty() {
                script.push_str("# live quarantine entries carried over by apply\n");
                script.push_str(&format!(
                    "add element inet {TABLE} {set} {{ {} }}\n",
                    carry.join(", ")
                ));
            }
            carried += carry.len();
        }
        std::fs::create_dir_all(work).map_err(|source| FirewallError::Io {
            path: work.to_path_buf(),
            source,
        })?;
        let path = work.join("load.nft");
        std::fs::write(&path, &script).map_err(|source| FirewallError::Io {
            path: path.clone(),
            source,
        })?;
        let p = path.to_string_lossy();
        // One `nft -f` is one transaction: a script nft or the kernel refuses changes nothing,
        // so a separate `nft -c -f` check would only double the cost.
        self.nft(&["-f", &p]).map_err(cmd("nft load"))?;
        tracing::info!(table = %format!("inet {TABLE}"), file = %p, quarantined = carried, "loaded nftables table in one transaction");
        Ok(vec![format!(
            "loaded table inet {TABLE} ({} quarantine entries carried over)",
            carried
        )])
    }

    fn counters(&self) -> Result<Vec<RuleCounter>, FirewallError> {
        // terse: the rules without the set elements, which counters do not need
        let items = self.json(&["-t", "-j", "list", "table", "inet", TABLE])?;
        let mut v = Vec::new();
        for it in &items {
            let Some(r) = it.get("rule") else { continue };
            let chain = r.get("chain").and_then(Value::as_str).unwrap_or("");
            let Some(comment) = r.get("comment").and_then(Value::as_str) else {
                continue;
            };
            let Some(expr) = r.get("expr").and_then(Value::as_array) else {
                continue;
            };
            for e in expr {
                if let Some(c) = e.get("counter") {
                    let p = c.get("packets").and_then(Value::as_u64).unwrap_or(0);
                    let b = c.get("bytes").and_then(Value::as_u64).unwrap_or(0);
                    add_counter(&mut v, chain, comment, p, b);
                }
            }
        }
        Ok(v)
    }

    fn set_list(&self, set: &str) -> Result<Vec<String>, FirewallError> {
        let mut v = nfset::list(nfset::FAMILY_INET, TABLE, set)?;
        // and the IPv6 members, where the set has an IPv6 twin
        match nfset::list(nfset::FAMILY_INET, TABLE, &crate::plan::ruleset::set6(set)) {
            Ok(v6) => v.extend(v6),
            Err(FirewallError::NoSuchSet(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(v)
    }

    fn set_add(&self, set: &str, addrs: &[IpNet]) -> Result<(), FirewallError> {
        self.set_change(nfset::Op::Add, set, addrs)
    }

    fn set_del(&self, set: &str, addrs: &[IpNet]) -> Result<(), FirewallError> {
        self.set_change(nfset::Op::Del, set, addrs)
    }

    fn set_sizes(&self) -> Result<Vec<(String, usize)>, FirewallError> {
        // over netlink: `nft -j list sets` prints (and this would parse) every element
        nfset::set_sizes(nfset::FAMILY_INET, TABLE)
    }

    fn remove_all(&self) -> Result<Vec<String>, FirewallError> {
        if !self.is_loaded()? {
            return Ok(Vec::new());
        }
        self.nft(&["delete", "table", "inet", TABLE])
            .map_err(cmd("remove"))?;
        tracing::info!(table = %format!("inet {TABLE}"), "deleted nftables table");
        Ok(vec![format!("deleted table inet {TABLE}")])
    }

    fn flowtable_support(&self) -> Result<(), String> {
        super::offload::probe(&self.nft)
    }
}

impl Nftables {
    /// A live set change over netlink (no `nft` run): IPv4 members in `set`, IPv6 ones in
    /// its twin `set_v6`; one transaction per set, checked per element. When the second set
    /// refuses, the first one's change is undone: all or nothing.
    fn set_change(&self, op: nfset::Op, set: &str, addrs: &[IpNet]) -> Result<(), FirewallError> {
        let (v4, v6): (Vec<IpNet>, Vec<IpNet>) =
            addrs.iter().partition(|a| matches!(a, IpNet::V4(_)));
        let set6 = crate::plan::ruleset::set6(set);
        let mut done: Option<(Vec<IpNet>, Vec<String>)> = None;
        for (name, nets) in [(set, &v4), (set6.as_str(), &v6)] {
            if nets.is_empty() {
                continue;
            }
            // what was there before, so that an undo takes out only what this change put in
            let before = if done.is_none() && !v4.is_empty() && !v6.is_empty() {
                nfset::list(nfset::FAMILY_INET, TABLE, name).unwrap_or_default()
            } else {
                Vec::new()
            };
            match nfset::change(nfset::FAMILY_INET, TABLE, name, op, nets) {
                Ok((deleted, added)) => {
                    let els: Vec<String> = nets.iter().map(ip_text).collect();
                    tracing::info!(set = %name, op = ?op, elements = %els.join(", "), deleted, added, "changed live set");
                    done = Some((nets.clone(), before));
                }
                Err(e) => {
                    if let Some((nets, before)) = done {
                        undo(op, set, &nets, &before);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// `a` for a single address, `a/n` for a network.
fn ip_text(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

/// Take back a change of `set` whose twin refused its part: a deletion is added back, an
/// addition deleted except where the set held the element before (`before`, as listed).
fn undo(op: nfset::Op, set: &str, nets: &[IpNet], before: &[String]) {
    let had: Vec<nfset::Range> = before
        .iter()
        .filter_map(|t| nfset::parse_range(t).map(|(_, r)| r))
        .collect();
    let (back, nets): (nfset::Op, Vec<IpNet>) = match op {
        nfset::Op::Del => (nfset::Op::Add, nets.to_vec()),
        nfset::Op::Add => (
            nfset::Op::Del,
            nets.iter()
                .filter(|n| {
                    let (_, r) = nfset::range_of(n);
                    !had.iter().any(|h| h.lo <= r.lo && r.hi <= h.hi)
                })
                .copied()
                .collect(),
        ),
    };
    if nets.is_empty() {
        return;
    }
    match nfset::change(nfset::FAMILY_INET, TABLE, set, back, &nets) {
        Ok(_) => tracing::info!(set, "the other family's part was refused: change undone"),
        Err(e) => tracing::error!(set, "undoing a half-done set change failed: {e}"),
    }
}

impl Nftables {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_strips_counters_and_timeout_elements() {
        let l = "table inet bulkhead {\n\tset q {\n\t\ttype ipv4_addr\n\t\tflags interval,timeout\n\t\telements = { 198.18.9.9 expires 4m59s,\n\t\t\t     198.18.9.10 expires 1s }\n\t}\n\tset g {\n\t\tflags interval\n\t\telements = { 198.18.1.1 }\n\t}\n\tchain input {\n\t\tct state established counter packets 12 bytes 3400 accept comment \"builtin:established\"\n\t}\n}\n";
        let n = normalise(l);
        assert!(!n.contains("198.18.9.9"), "{n}");
        assert!(n.contains("198.18.1.1"), "{n}");
        assert!(
            n.contains("ct state established counter accept comment \"builtin:established\""),
            "{n}"
        );
        assert!(n.contains("flags interval,timeout"));
    }
}
