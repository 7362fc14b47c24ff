//! nftables: Bulkhead owns `table inet bulkhead` and nothing else.

use std::path::Path;

use ipnet::{IpNet, Ipv4Net};
use serde_json::Value;

use super::nfset;
use super::{Firewall, FirewallError, LoadText, RuleCounter, add_counter, net_text};
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
        nfset::list(nfset::FAMILY_INET, TABLE, set)
    }

    fn set_add(&self, set: &str, addrs: &[Ipv4Net]) -> Result<(), FirewallError> {
        self.set_change(nfset::Op::Add, set, addrs)
    }

    fn set_del(&self, set: &str, addrs: &[Ipv4Net]) -> Result<(), FirewallError> {
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
    /// A live set change over netlink (no `nft` run): one transaction, checked per element.
    fn set_change(&self, op: nfset::Op, set: &str, addrs: &[Ipv4Net]) -> Result<(), FirewallError> {
        if addrs.is_empty() {
            return Ok(());
        }
        let nets: Vec<IpNet> = addrs.iter().map(|a| IpNet::V4(*a)).collect();
        let (deleted, added) = nfset::change(nfset::FAMILY_INET, TABLE, set, op, &nets)?;
        let els: Vec<String> = addrs.iter().map(net_text).collect();
        tracing::info!(set = %set, op = ?op, elements = %els.join(", "), deleted, added, "changed live set");
        Ok(())
    }
}

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
