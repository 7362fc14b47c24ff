//! Kernel settings through `/proc/sys`, read before write.
//!
//! Plain file reads and writes rather than the `sysctl` crate: on Linux that crate is itself a
//! wrapper over the same `/proc/sys` files, and going direct keeps the lookup in the network
//! namespace of the calling thread, which is what the tests (and a namespaced gateway) need.

use std::path::PathBuf;

use crate::plan::SysctlPlan;

#[derive(Debug, thiserror::Error)]
#[error("sysctl {key} ({path}): {source}")]
pub struct SysctlError {
    pub key: String,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// One kernel setting that was changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SysctlChange {
    pub key: String,
    pub from: String,
    pub to: String,
}

pub trait Sysctl {
    fn read(&self, key: &str) -> Result<String, SysctlError>;
    fn write(&self, key: &str, value: &str) -> Result<(), SysctlError>;
}

/// The real kernel, under a root that is `/proc/sys` unless set (tests may point it elsewhere).
#[derive(Debug, Clone)]
pub struct ProcSys {
    pub root: PathBuf,
}

impl Default for ProcSys {
    fn default() -> Self {
        ProcSys {
            root: PathBuf::from("/proc/sys"),
        }
    }
}

/// `net.ipv4.conf.eth0/10.rp_filter` → `net/ipv4/conf/eth0.10/rp_filter` (sysctl(8)'s rule:
/// dots separate, a slash stands for a dot inside a name).
pub fn key_path(key: &str) -> PathBuf {
    key.chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect::<String>()
        .into()
}

/// Values compare by their whitespace-separated words (`/proc` uses tabs between words).
pub fn normalise(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Sysctl for ProcSys {
    fn read(&self, key: &str) -> Result<String, SysctlError> {
        let path = self.root.join(key_path(key));
        std::fs::read_to_string(&path)
            .map(|s| normalise(&s))
            .map_err(|source| SysctlError {
                key: key.into(),
                path,
                source,
            })
    }

    fn write(&self, key: &str, value: &str) -> Result<(), SysctlError> {
        let path = self.root.join(key_path(key));
        std::fs::write(&path, format!("{value}\n")).map_err(|source| SysctlError {
            key: key.into(),
            path,
            source,
        })
    }
}

/// What differs between the kernel and the plan.
pub fn diff(s: &dyn Sysctl, plan: &[SysctlPlan]) -> Result<Vec<SysctlChange>, SysctlError> {
    let mut v = Vec::new();
    for p in plan {
        let cur = s.read(&p.key)?;
        let want = normalise(&p.value);
        if cur != want {
            v.push(SysctlChange {
                key: p.key.clone(),
                from: cur,
                to: want,
            });
        }
    }
    Ok(v)
}

/// Keys whose write resets others: writing `net.ipv4.ip_forward` (or `conf.all.forwarding`)
/// sets `net.ipv4.conf.all.accept_redirects` to its opposite, and IPv6 forwarding changes the
/// per-interface router defaults. They are written first so the plan's explicit values win.
fn resets_others(key: &str) -> bool {
    matches!(
        key,
        "net.ipv4.ip_forward" | "net.ipv4.conf.all.forwarding" | "net.ipv6.conf.all.forwarding"
    )
}

/// Read each key, write only those that differ — forwarding switches first, then the rest in
/// plan order — and re-check at the end, rewriting any key a later write reset. Returns what
/// changed.
pub fn apply(s: &dyn Sysctl, plan: &[SysctlPlan]) -> Result<Vec<SysctlChange>, SysctlError> {
    let ordered: Vec<&SysctlPlan> = plan
        .iter()
        .filter(|p| resets_others(&p.key))
        .chain(plan.iter().filter(|p| !resets_others(&p.key)))
        .collect();
    let mut v = write_differing(s, &ordered)?;
    for c in write_differing(s, &ordered)? {
        tracing::warn!(key = %c.key, "sysctl was reset by a later write; set again");
        if let Some(x) = v.iter_mut().find(|x| x.key == c.key) {
            x.to = c.to;
        } else {
            v.push(c);
        }
    }
    Ok(v)
}

fn write_differing(s: &dyn Sysctl, plan: &[&SysctlPlan]) -> Result<Vec<SysctlChange>, SysctlError> {
    let mut v = Vec::new();
    for p in plan {
        let cur = s.read(&p.key)?;
        let want = normalise(&p.value);
        if cur == want {
            continue;
        }
        s.write(&p.key, &want)?;
        tracing::info!(key = %p.key, from = %cur, to = %want, "sysctl set");
        v.push(SysctlChange {
            key: p.key.clone(),
            from: cur,
            to: want,
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            key_path("net.ipv4.conf.eth0/10.rp_filter"),
            PathBuf::from("net/ipv4/conf/eth0.10/rp_filter")
        );
        assert_eq!(normalise("4096\t87380  6291456\n"), "4096 87380 6291456");
    }

    #[test]
    fn writes_only_what_differs() {
        let dir = std::env::temp_dir().join(format!("bh-sysctl-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("net/ipv4")).unwrap();
        std::fs::write(dir.join("net/ipv4/ip_forward"), "0\n").unwrap();
        std::fs::write(dir.join("net/ipv4/tcp_syncookies"), "1\n").unwrap();
        let s = ProcSys { root: dir.clone() };
        let plan = vec![
            SysctlPlan {
                key: "net.ipv4.ip_forward".into(),
                value: "1".into(),
            },
            SysctlPlan {
                key: "net.ipv4.tcp_syncookies".into(),
                value: "1".into(),
            },
        ];
        let c = apply(&s, &plan).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].key, "net.ipv4.ip_forward");
        assert!(apply(&s, &plan).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
