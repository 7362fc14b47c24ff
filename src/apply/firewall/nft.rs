//! nftables: Bulkhead owns `table inet bulkhead` and nothing else.

use std::path::Path;

use ipnet::Ipv4Net;
use serde_json::Value;

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

    /// Live quarantine entries as `add element` statements keeping their remaining time, so a
    /// reload (which replaces the whole table) does not release quarantined hosts early.
    fn quarantine_carry(&self, set: &str) -> Vec<String> {
        let Ok(items) = self.json(&["-j", "list", "set", "inet", TABLE, set]) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for it in items {
            let Some(set) = it.get("set") else { continue };
            let default_timeout = set.get("timeout").and_then(Value::as_u64);
            for e in set
                .get("elem")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(el) = e.get("elem") else { continue };
                let Some(val) = el.get("val").and_then(elem_text) else {
                    continue;
                };
                let timeout = el
                    .get("timeout")
                    .and_then(Value::as_u64)
                    .or(default_timeout);
                let expires = el.get("expires").and_then(Value::as_u64);
                let mut s = val;
                if let (Some(t), Some(x)) = (timeout, expires) {
                    s.push_str(&format!(" timeout {t}s expires {}s", x.max(1)));
                }
                out.push(s);
            }
        }
        out
    }
}

/// An element of a set as text: `a.b.c.d`, `a.b.c.d/n` or `a-b`.
fn elem_text(v: &Value) -> Option<String> {
    if let Some(s) = v.as_str() {
        return Some(s.to_string());
    }
    if let Some(p) = v.get("prefix") {
        return Some(format!(
            "{}/{}",
            p.get("addr")?.as_str()?,
            p.get("len")?.as_u64()?
        ));
    }
    if let Some(r) = v.get("range").and_then(Value::as_array) {
        return Some(format!("{}-{}", r.first()?.as_str()?, r.get(1)?.as_str()?));
    }
    if let Some(e) = v.get("elem") {
        return elem_text(e.get("val")?);
    }
    None
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
        // the list of tables, not the table itself (which lists every set element)
        let out = self
            .nft(&["list", "tables", "inet"])
            .map_err(cmd("list tables"))?;
        Ok(out
            .lines()
            .any(|l| l.trim() == format!("table inet {TABLE}")))
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
        self.nft(&["-c", "-f", &p]).map_err(cmd("nft check"))?;
        self.nft(&["-f", &p]).map_err(cmd("nft load"))?;
        tracing::info!(table = %format!("inet {TABLE}"), file = %p, quarantined = carried, "loaded nftables table in one transaction");
        Ok(vec![format!(
            "loaded table inet {TABLE} ({} quarantine entries carried over)",
            carried
        )])
    }

    fn counters(&self) -> Result<Vec<RuleCounter>, FirewallError> {
        let items = self.json(&["-j", "list", "table", "inet", TABLE])?;
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
        let items = match self.json(&["-j", "list", "set", "inet", TABLE, set]) {
            Err(FirewallError::NotLoaded) => return Err(FirewallError::NoSuchSet(set.into())),
            x => x?,
        };
        let mut out = Vec::new();
        for it in items {
            let Some(s) = it.get("set") else { continue };
            for e in s
                .get("elem")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(t) = elem_text(e) {
                    out.push(t);
                }
            }
        }
        Ok(out)
    }

    fn set_add(&self, set: &str, addrs: &[Ipv4Net]) -> Result<(), FirewallError> {
        self.set_change("add", set, addrs)
    }

    fn set_del(&self, set: &str, addrs: &[Ipv4Net]) -> Result<(), FirewallError> {
        self.set_change("delete", set, addrs)
    }

    fn set_sizes(&self) -> Result<Vec<(String, usize)>, FirewallError> {
        let items = self.json(&["-j", "list", "sets", "inet"])?;
        let mut out = Vec::new();
        for it in items {
            let Some(s) = it.get("set") else { continue };
            if s.get("table").and_then(Value::as_str) != Some(TABLE) {
                continue;
            }
            let name = s.get("name").and_then(Value::as_str).unwrap_or("");
            let n = s.get("elem").and_then(Value::as_array).map_or(0, Vec::len);
            out.push((name.to_string(), n));
        }
        Ok(out)
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
}

impl Nftables {
    fn set_change(&self, op: &str, set: &str, addrs: &[Ipv4Net]) -> Result<(), FirewallError> {
        if addrs.is_empty() {
            return Ok(());
        }
        let els: Vec<String> = addrs.iter().map(net_text).collect();
        let body = format!("{{ {} }}", els.join(", "));
        // One nft call; a missing set (or table) is reported as ENOENT.
        self.nft(&[op, "element", "inet", TABLE, set, &body])
            .map_err(|e| {
                if no_table(&e) && !self.set_exists(set).unwrap_or(false) {
                    FirewallError::NoSuchSet(set.into())
                } else {
                    cmd("set change")(e)
                }
            })?;
        tracing::info!(set = %set, op = %op, elements = %els.join(", "), "changed live set");
        Ok(())
    }

    fn set_exists(&self, set: &str) -> Result<bool, FirewallError> {
        match self.nft(&["list", "set", "inet", TABLE, set]) {
            Ok(_) => Ok(true),
            Err(e) if no_table(&e) => Ok(false),
            Err(e) => Err(cmd("list")(e)),
        }
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
