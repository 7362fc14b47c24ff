//! iptables + ipset: Bulkhead owns the chains `BH-*` in the filter and nat tables, the ipsets
//! `bh-*`, and one jump per hooked chain at the head of the built-in chain. Nothing else is
//! touched: rules are loaded with `iptables-restore --noflush`, which replaces only the chains
//! the input declares.

use std::path::Path;

use ipnet::{IpNet, Ipv4Net};

use super::{Firewall, FirewallError, HookJump, LoadText, RuleCounter, add_counter, net_text};
use crate::apply::cmd::{CmdError, run};
use crate::model::Backend;
use crate::plan::iptables::{PREFIX, set_name};

/// The iptables backend: runs `iptables`, `iptables-save`, `iptables-restore` and `ipset`.
#[derive(Debug, Clone)]
pub struct Iptables {
    pub iptables: String,
    pub save: String,
    pub restore: String,
    pub ipset: String,
}

impl Default for Iptables {
    fn default() -> Self {
        Self::new()
    }
}

fn cmd(phase: &'static str) -> impl FnOnce(CmdError) -> FirewallError {
    move |source| FirewallError::Command { phase, source }
}

fn own_chain(name: &str) -> bool {
    name.starts_with(&format!("{PREFIX}-"))
}

/// Names of the sets an `ipset restore` input creates (swap sets excluded).
fn created_sets(ipset: &str) -> Vec<String> {
    let swapped: Vec<&str> = ipset
        .lines()
        .filter_map(|l| l.strip_prefix("swap "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    ipset
        .lines()
        .filter_map(|l| l.strip_prefix("create "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| !swapped.contains(n))
        .map(str::to_string)
        .collect()
}

/// Unquote an iptables-save comment argument.
fn unquote(s: &str) -> String {
    s.trim_matches('"').replace("\\\"", "\"")
}

/// `--comment X` of an iptables-save rule line.
fn comment_of(line: &str) -> Option<String> {
    let i = line.find("--comment ")?;
    let rest = &line[i + "--comment ".len()..];
    if let Some(r) = rest.strip_prefix('"') {
        let end = r.find('"')?;
        Some(r[..end].to_string())
    } else {
        Some(unquote(rest.split_whitespace().next()?))
    }
}

/// Counters from `iptables-save -c` lines of Bulkhead's chains, by (chain, comment).
fn parse_counters(lines: &[String]) -> Vec<RuleCounter> {
    let mut v = Vec::new();
    for l in lines {
        let Some(rest) = l.strip_prefix('[') else {
            continue;
        };
        let Some((pb, rule)) = rest.split_once("] ") else {
            continue;
        };
        let Some(rule) = rule.strip_prefix("-A ") else {
            continue;
        };
        let chain = rule.split_whitespace().next().unwrap_or("");
        let Some(comment) = comment_of(rule) else {
            continue;
        };
        // The rate-limited NFLOG rule before a logged verdict sees the same packets; count
        // the verdict only, as nftables does (its log statement has no counter).
        if rule.contains(" -j NFLOG") {
            continue;
        }
        let (p, b) = pb.split_once(':').unwrap_or(("0", "0"));
        add_counter(
            &mut v,
            chain,
            &comment,
            p.parse().unwrap_or(0),
            b.parse().unwrap_or(0),
        );
    }
    v
}

impl Iptables {
    pub fn new() -> Self {
        Iptables {
            iptables: "iptables".into(),
            save: "iptables-save".into(),
            restore: "iptables-restore".into(),
            ipset: "ipset".into(),
        }
    }

    fn ipt(&self, args: &[&str]) -> Result<String, CmdError> {
        let mut a = vec!["-w"];
        a.extend_from_slice(args);
        run(&self.iptables, &a, None)
    }

    /// `iptables-save` of one table, the lines that concern Bulkhead's chains.
    fn own_lines(&self, table: &str, counters: bool) -> Result<Vec<String>, FirewallError> {
        let mut args = vec!["-t", table];
        if counters {
            args.insert(0, "-c");
        }
        let out = run(&self.save, &args, None).map_err(cmd("iptables-save"))?;
        Ok(out
            .lines()
            .filter(|l| {
                let l = l
                    .strip_prefix('[')
                    .map_or(*l, |x| x.split_once("] ").map_or(x, |y| y.1));
                l.starts_with(&format!(":{PREFIX}-")) || l.starts_with(&format!("-A {PREFIX}-"))
            })
            .map(str::to_string)
            .collect())
    }

    /// Names of all ipsets.
    fn sets(&self) -> Result<Vec<String>, FirewallError> {
        let out = run(&self.ipset, &["list", "-n"], None).map_err(cmd("ipset list"))?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// Sorted `add` lines of a set (`ipset save` lists in hash order and with a random
    /// initval in its header).
    fn set_members(&self, set: &str) -> Result<Vec<String>, FirewallError> {
        let out = run(&self.ipset, &["list", set, "-o", "save"], None).map_err(|e| {
            if e.stderr.contains("does not exist") {
                FirewallError::NoSuchSet(set.into())
            } else {
                cmd("ipset list")(e)
            }
        })?;
        let mut v: Vec<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("add "))
            .filter_map(|l| l.split_once(' ').map(|x| x.1.to_string()))
            .collect();
        v.sort();
        Ok(v)
    }

    fn set_has_timeout(&self, set: &str) -> bool {
        run(&self.ipset, &["list", "-t", set], None).is_ok_and(|o| o.contains(" timeout "))
    }

    /// Put each jump at the head of its built-in chain exactly once.
    fn ensure_hooks(&self, hooks: &[HookJump]) -> Result<Vec<String>, FirewallError> {
        let mut changes = Vec::new();
        for h in hooks {
            let out = self
                .ipt(&["-t", &h.table, "-S", &h.chain])
                .map_err(cmd("hooks"))?;
            let want = format!("-A {} -j {}", h.chain, h.target);
            // Rule numbers (1-based) of the jump in the chain.
            let rules: Vec<&str> = out.lines().filter(|l| l.starts_with("-A ")).collect();
            let at: Vec<usize> = rules
                .iter()
                .enumerate()
                .filter(|(_, l)| l.trim() == want)
                .map(|(i, _)| i + 1)
                .collect();
            if at == [1] {
                continue;
            }
            let mut stale = at.clone();
            if at.first() != Some(&1) {
                self.ipt(&["-t", &h.table, "-I", &h.chain, "1", "-j", &h.target])
                    .map_err(cmd("hooks"))?;
                tracing::info!(table = %h.table, chain = %h.chain, target = %h.target, "inserted hook jump at head");
                changes.push(format!(
                    "inserted -t {} -I {} 1 -j {}",
                    h.table, h.chain, h.target
                ));
                // Everything shifted down by one.
                stale = at.iter().map(|n| n + 1).collect();
            } else {
                stale.remove(0);
            }
            for n in stale.iter().rev() {
                self.ipt(&["-t", &h.table, "-D", &h.chain, &n.to_string()])
                    .map_err(cmd("hooks"))?;
                tracing::info!(table = %h.table, chain = %h.chain, rule = n, target = %h.target, "removed duplicate hook jump");
                changes.push(format!(
                    "removed duplicate jump to {} at {} {} #{n}",
                    h.target, h.table, h.chain
                ));
            }
        }
        Ok(changes)
    }
}

impl Firewall for Iptables {
    fn backend(&self) -> Backend {
        Backend::Iptables
    }

    fn is_loaded(&self) -> Result<bool, FirewallError> {
        Ok(self
            .own_lines("filter", false)?
            .iter()
            .any(|l| l.starts_with(&format!(":{PREFIX}-INPUT "))))
    }

    fn snapshot(&self) -> Result<Option<String>, FirewallError> {
        if !self.is_loaded()? {
            return Ok(None);
        }
        let mut s = String::new();
        for t in ["filter", "nat"] {
            s.push_str(&format!("*{t}\n"));
            for l in self.own_lines(t, false)? {
                // Chain lines carry counters even without -c.
                let l = l.split(" [").next().unwrap_or(&l).to_string();
                s.push_str(&l);
                s.push('\n');
            }
            // Hook jumps in the built-in chains, with their positions (they belong at the head).
            let all = run(&self.save, &["-t", t], None).map_err(cmd("iptables-save"))?;
            let mut pos: Vec<(String, usize)> = Vec::new();
            for l in all.lines() {
                let Some(rule) = l.strip_prefix("-A ") else {
                    continue;
                };
                let chain = rule.split_whitespace().next().unwrap_or("").to_string();
                let n = match pos.iter_mut().find(|(c, _)| *c == chain) {
                    Some((_, n)) => {
                        *n += 1;
                        *n
                    }
                    None => {
                        pos.push((chain.clone(), 1));
                        1
                    }
                };
                if let Some((_, target)) = rule
                    .split_once(" -j ")
                    .filter(|(c, t)| !own_chain(c) && own_chain(t.trim()))
                {
                    s.push_str(&format!("# hook {chain} #{n} -> {target}\n"));
                }
            }
        }
        for set in self.sets()? {
            if !set.starts_with("bh-") || self.set_has_timeout(&set) {
                continue;
            }
            s.push_str(&format!("# set {set}\n"));
            for m in self.set_members(&set)? {
                s.push_str(&format!("add {set} {m}\n"));
            }
        }
        Ok(Some(s))
    }

    fn load(&self, text: &LoadText, work: &Path) -> Result<Vec<String>, FirewallError> {
        let LoadText::Iptables {
            ipset,
            rules,
            hooks,
        } = text
        else {
            return Err(FirewallError::WrongBackend {
                have: "iptables",
                want: text.backend().name(),
            });
        };
        std::fs::create_dir_all(work).map_err(|source| FirewallError::Io {
            path: work.to_path_buf(),
            source,
        })?;
        for (name, body) in [("load.ipset", ipset), ("load.iptables", rules)] {
            let p = work.join(name);
            std::fs::write(&p, body).map_err(|source| FirewallError::Io { path: p, source })?;
        }
        let mut changes = Vec::new();
        changes.extend(self.rebuild_changed_timeout_sets(ipset)?);
        run(&self.ipset, &["restore"], Some(ipset)).map_err(cmd("ipset restore"))?;
        tracing::info!(sets = %created_sets(ipset).join(" "), "ipset restore: swapped fresh sets in");
        changes.push("ipset restore".to_string());
        run(&self.restore, &["-w", "--test", "--noflush"], Some(rules))
            .map_err(cmd("iptables-restore --test"))?;
        run(&self.restore, &["-w", "--noflush"], Some(rules)).map_err(cmd("iptables-restore"))?;
        tracing::info!(
            chains = "BH-*",
            "iptables-restore --noflush: loaded Bulkhead's chains"
        );
        changes.push("iptables-restore --noflush".to_string());
        changes.extend(self.ensure_hooks(hooks)?);
        // Sets Bulkhead created earlier that this ruleset no longer uses.
        let keep = created_sets(ipset);
        for set in self.sets()? {
            if set.starts_with("bh-") && !keep.contains(&set) {
                match run(&self.ipset, &["destroy", &set], None) {
                    Ok(_) => {
                        tracing::info!(set = %set, "destroyed unreferenced ipset");
                        changes.push(format!("destroyed ipset {set}"));
                    }
                    Err(e) => {
                        tracing::warn!(set = %set, error = %e, "could not destroy unused ipset")
                    }
                }
            }
        }
        Ok(changes)
    }

    fn counters(&self) -> Result<Vec<RuleCounter>, FirewallError> {
        let mut lines = Vec::new();
        for t in ["filter", "nat"] {
            lines.extend(self.own_lines(t, true)?);
        }
        Ok(parse_counters(&lines))
    }

    fn set_list(&self, set: &str) -> Result<Vec<String>, FirewallError> {
        Ok(self
            .set_members(&set_name(set))?
            .into_iter()
            .map(|m| m.split_whitespace().next().unwrap_or("").to_string())
            .collect())
    }

    fn set_add(&self, set: &str, addrs: &[IpNet]) -> Result<(), FirewallError> {
        self.set_change("add", set, addrs)
    }

    fn set_del(&self, set: &str, addrs: &[IpNet]) -> Result<(), FirewallError> {
        self.set_change("del", set, addrs)
    }

    fn set_sizes(&self) -> Result<Vec<(String, usize)>, FirewallError> {
        let mut out = Vec::new();
        for s in self.sets()? {
            if let Some(g) = s.strip_prefix("bh-") {
                out.push((g.to_string(), self.set_members(&s)?.len()));
            }
        }
        Ok(out)
    }

    fn remove_all(&self) -> Result<Vec<String>, FirewallError> {
        let mut done = Vec::new();
        for t in ["filter", "nat"] {
            // Jumps into our chains from any chain we do not own.
            let all = run(&self.save, &["-t", t], None).map_err(cmd("iptables-save"))?;
            for l in all.lines() {
                let Some(rule) = l.strip_prefix("-A ") else {
                    continue;
                };
                let chain = rule.split_whitespace().next().unwrap_or("");
                if let Some((_, target)) = rule.split_once(" -j ")
                    && !own_chain(chain)
                    && own_chain(target.trim())
                {
                    let args: Vec<&str> = rule.split_whitespace().skip(1).collect();
                    let mut a = vec!["-t", t, "-D", chain];
                    a.extend(args);
                    self.ipt(&a).map_err(cmd("remove"))?;
                    tracing::info!(
                        table = t,
                        chain,
                        target = target.trim(),
                        "removed hook jump"
                    );
                    done.push(format!("removed -t {t} {rule}"));
                }
            }
            let chains: Vec<String> = self
                .own_lines(t, false)?
                .iter()
                .filter_map(|l| l.strip_prefix(':'))
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_string)
                .collect();
            for c in &chains {
                self.ipt(&["-t", t, "-F", c]).map_err(cmd("remove"))?;
            }
            for c in &chains {
                self.ipt(&["-t", t, "-X", c]).map_err(cmd("remove"))?;
                tracing::info!(table = t, chain = %c, "deleted chain");
                done.push(format!("deleted chain -t {t} {c}"));
            }
        }
        for set in self.sets()? {
            if set.starts_with("bh-") {
                run(&self.ipset, &["destroy", &set], None).map_err(cmd("remove"))?;
                tracing::info!(set = %set, "destroyed ipset");
                done.push(format!("destroyed ipset {set}"));
            }
        }
        Ok(done)
    }
}

/// `create NAME TYPE … timeout T …` lines: (name, the whole create line, T).
fn timeout_creates(ipset: &str) -> Vec<(String, String, u64)> {
    ipset
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("create ")?;
            let mut w = rest.split_whitespace();
            let name = w.next()?.to_string();
            let words: Vec<&str> = rest.split_whitespace().collect();
            let i = words.iter().position(|x| *x == "timeout")?;
            let t = words.get(i + 1)?.parse().ok()?;
            Some((name, l.to_string(), t))
        })
        .collect()
}

impl Iptables {
    /// `create … -exist` fails when a set of that name exists with other parameters, which
    /// happens to the quarantine set when its timeout is changed in the config. Such a set is
    /// rebuilt under a temporary name with its live entries (and their remaining time), then
    /// swapped in, before the rendered input is restored.
    fn rebuild_changed_timeout_sets(&self, ipset: &str) -> Result<Vec<String>, FirewallError> {
        let mut changes = Vec::new();
        let live = self.sets()?;
        for (name, create, timeout) in timeout_creates(ipset) {
            if !live.contains(&name) {
                continue;
            }
            let header =
                run(&self.ipset, &["list", "-t", &name], None).map_err(cmd("ipset list"))?;
            let cur = header
                .lines()
                .find_map(|l| l.strip_prefix("Header: "))
                .and_then(|h| {
                    let w: Vec<&str> = h.split_whitespace().collect();
                    let i = w.iter().position(|x| *x == "timeout")?;
                    w.get(i + 1)?.parse::<u64>().ok()
                });
            if cur == Some(timeout) {
                continue;
            }
            let tmp = format!("{name}-n");
            let entries = run(&self.ipset, &["list", &name, "-o", "save"], None)
                .map_err(cmd("ipset list"))?;
            let mut batch = String::new();
            batch.push_str(
                &create
                    .replacen(&format!("create {name} "), &format!("create {tmp} "), 1)
                    .replace(" -exist", ""),
            );
            batch.push('\n');
            for l in entries.lines() {
                if let Some(rest) = l.strip_prefix(&format!("add {name} ")) {
                    batch.push_str(&format!("add {tmp} {rest} -exist\n"));
                }
            }
            batch.push_str(&format!("swap {tmp} {name}\ndestroy {tmp}\n"));
            let _ = run(&self.ipset, &["destroy", &tmp], None);
            run(&self.ipset, &["restore"], Some(&batch)).map_err(cmd("ipset rebuild"))?;
            tracing::info!(set = %name, from = ?cur, to = timeout, "rebuilt ipset with a new timeout, entries kept");
            changes.push(format!("rebuilt ipset {name} with timeout {timeout}"));
        }
        Ok(changes)
    }

    fn set_change(&self, op: &str, set: &str, addrs: &[IpNet]) -> Result<(), FirewallError> {
        let addrs: Vec<Ipv4Net> = addrs
            .iter()
            .map(|a| match a {
                IpNet::V4(n) => Ok(*n),
                IpNet::V6(_) => Err(FirewallError::SetElement {
                    set: set.into(),
                    element: if a.prefix_len() == a.max_prefix_len() {
                        a.addr().to_string()
                    } else {
                        a.to_string()
                    },
                    reason: "an IPv6 address; the iptables backend has no IPv6 (use backend = \"nftables\")".into(),
                }),
            })
            .collect::<Result<_, _>>()?;
        let name = set_name(set);
        if !self.sets()?.contains(&name) {
            return Err(FirewallError::NoSuchSet(set.into()));
        }
        // One `ipset restore` batch: all or nothing.
        let batch: String = addrs
            .iter()
            .map(|a| format!("{op} {name} {} -exist\n", net_text(a)))
            .collect();
        run(&self.ipset, &["restore"], Some(&batch)).map_err(cmd("set change"))?;
        let els: Vec<String> = addrs.iter().map(net_text).collect();
        tracing::info!(set = %name, op = %op, elements = %els.join(", "), "changed live ipset");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_sets() {
        assert_eq!(
            comment_of("-A BH-INPUT -i lo -m comment --comment \"builtin:loopback\" -j ACCEPT"),
            Some("builtin:loopback".into())
        );
        assert_eq!(
            comment_of("-A BH-INPUT -m comment --comment rule:x -j ACCEPT"),
            Some("rule:x".into())
        );
        let s = "create bh-a hash:net -exist\ncreate bh-a-n hash:net -exist\nswap bh-a-n bh-a\ncreate bh-quarantine hash:ip timeout 600 -exist\n";
        assert_eq!(created_sets(s), vec!["bh-a", "bh-quarantine"]);
    }

    #[test]
    fn counters_sum_expansions_and_skip_the_log_rule() {
        let lines: Vec<String> = [
            "[3:180] -A BH-FORWARD -i a -p tcp -m tcp --dport 1 -m comment --comment \"rule:x\" -j ACCEPT",
            "[2:120] -A BH-FORWARD -i a -p udp -m udp --dport 1 -m comment --comment \"rule:x\" -j ACCEPT",
            "[5:300] -A BH-FORWARD -m comment --comment \"builtin:default-drop\" -m limit --limit 10/second --limit-burst 20 -j NFLOG --nflog-group 1 --nflog-prefix \"bh:forward:builtin:default-drop\"",
            "[7:420] -A BH-FORWARD -m comment --comment \"builtin:default-drop\" -j DROP",
            ":BH-INPUT - [0:0]",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = parse_counters(&lines);
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].comment.as_str(), c[0].packets, c[0].bytes),
            ("rule:x", 5, 300)
        );
        assert_eq!(
            (c[1].comment.as_str(), c[1].packets, c[1].bytes),
            ("builtin:default-drop", 7, 420)
        );
    }
}
