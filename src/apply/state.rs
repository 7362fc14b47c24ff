//! What apply keeps under `STATE_DIR/apply/`:
//!
//! ```text
//! created.json            links and addresses Bulkhead created (the only ones it may remove)
//! current/                the last-known-good generation
//!   meta.json             {"generation": N, "applied_at": unix seconds}
//!   plan.json             the plan that was applied
//!   firewall.json         exactly what the backend loaded (LoadText)
//!   firewall.nft | firewall.ipset + firewall.iptables   the same, for people
//!   snapshot.txt          the normalised live listing right after the load
//! generations/NNNNNN/     the previous generations, newest last, at most `keep`
//! work/                   files handed to nft / ipset / iptables-restore
//! lock                    held (flock) while an apply, restore or rollback runs
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::firewall::LoadText;

#[derive(Debug, thiserror::Error)]
#[error("state {path}: {message}")]
pub struct StateError {
    pub path: PathBuf,
    pub message: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |e| StateError {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedLink {
    pub name: String,
    pub parent: String,
    pub id: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedAddress {
    pub dev: String,
    /// IPv4 or IPv6 (stored as text: records of earlier versions read unchanged).
    pub address: ipnet::IpNet,
}

/// Everything Bulkhead created, so it never removes what it did not create.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    pub links: Vec<CreatedLink>,
    pub addresses: Vec<CreatedAddress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub generation: u64,
    pub applied_at: u64,
}

/// One applied generation as stored.
#[derive(Debug, Clone)]
pub struct Generation {
    pub dir: PathBuf,
    pub meta: Meta,
    pub text: LoadText,
    pub plan_json: String,
    pub snapshot: Option<String>,
    /// The live set contents changed since the snapshot was taken (a `set add`, a DHCP
    /// reservation): the next check adopts the live listing instead of calling it drift.
    pub snapshot_stale: bool,
    /// Where and when the live firewall was last known to be exactly this generation:
    /// "BOOT_ID NETNS_INODE NFT_GENERATION". While the kernel's stamp is the same, nothing in
    /// nftables changed since, and a check needs no listing.
    pub kernel_stamp: Option<String>,
}

/// Marks a current generation whose snapshot predates a live set change.
const STALE: &str = "snapshot.stale";
/// The kernel stamp of the current generation (see [`Generation::kernel_stamp`]).
const STAMP: &str = "kernel-stamp";

#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
    pub keep: usize,
}

/// Replace a file durably (see [`crate::sys::fs::write_atomic`]).
fn write_atomic(path: &Path, body: &[u8]) -> Result<(), StateError> {
    crate::sys::fs::write_atomic(path, body, 0o644).map_err(io(path))
}

/// Write a file of a generation being built (made durable as a whole by `syncfs` before the
/// generation is renamed into place).
fn write_plain(path: &Path, body: &[u8]) -> Result<(), StateError> {
    std::fs::write(path, body).map_err(io(path))
}

/// Flush the filesystem holding `dir` (one call for all files of a new generation).
fn syncfs(dir: &Path) -> Result<(), StateError> {
    let f = std::fs::File::open(dir).map_err(io(dir))?;
    crate::sys::fs::syncfs(&f).map_err(io(dir))
}

/// Move an unreadable generation aside (kept for inspection) so that it does not stop the
/// gateway from applying its config: a power cut can leave a half-written state behind.
fn quarantine_corrupt(dir: &Path, e: &StateError) {
    let aside = dir.with_file_name(format!(
        "corrupt-{}-{}",
        dir.file_name()
            .map_or("gen".into(), |n| n.to_string_lossy()),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    ));
    match crate::sys::fs::rename_durable(dir, &aside) {
        Ok(()) => tracing::warn!(
            from = %dir.display(),
            to = %aside.display(),
            "unreadable applied-state generation moved aside ({e}); it is not used"
        ),
        Err(re) => tracing::error!(
            dir = %dir.display(),
            "unreadable applied-state generation ({e}) could not be moved aside: {re}"
        ),
    }
}

impl Store {
    pub fn new(state_dir: &Path, keep: usize) -> Self {
        Store {
            root: state_dir.join("apply"),
            keep,
        }
    }

    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }

    fn ensure(&self) -> Result<(), StateError> {
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))
    }

    /// Take the exclusive apply lock (`apply/lock`), waiting for another holder; released
    /// when the returned file is dropped. Keeps a CLI apply and the supervisor apart.
    pub fn lock(&self) -> Result<std::fs::File, StateError> {
        self.ensure()?;
        let p = self.root.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io(&p))?;
        f.lock().map_err(io(&p))?;
        Ok(f)
    }

    pub fn created(&self) -> Result<Created, StateError> {
        let p = self.root.join("created.json");
        match std::fs::read_to_string(&p) {
            Ok(s) => match serde_json::from_str(&s) {
                Ok(c) => Ok(c),
                Err(e) => {
                    // Forgetting what we created only means we will not remove it later.
                    tracing::warn!(path = %p.display(), "unreadable record of created links ({e}); starting a new one");
                    let _ = crate::sys::fs::rename_durable(&p, &p.with_extension("json.corrupt"));
                    Ok(Created::default())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Created::default()),
            Err(e) => Err(io(&p)(e)),
        }
    }

    pub fn save_created(&self, c: &Created) -> Result<(), StateError> {
        self.ensure()?;
        let p = self.root.join("created.json");
        let body = serde_json::to_vec_pretty(c).expect("serializes");
        write_atomic(&p, &body)
    }

    fn read_gen(dir: &Path) -> Result<Option<Generation>, StateError> {
        let m = dir.join("meta.json");
        let meta = match std::fs::read_to_string(&m) {
            Ok(s) => serde_json::from_str::<Meta>(&s).map_err(|e| StateError {
                path: m.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&m)(e)),
        };
        let f = dir.join("firewall.json");
        let text = std::fs::read_to_string(&f).map_err(io(&f))?;
        let text: LoadText = serde_json::from_str(&text).map_err(|e| StateError {
            path: f.clone(),
            message: e.to_string(),
        })?;
        let p = dir.join("plan.json");
        let plan_json = std::fs::read_to_string(&p).map_err(io(&p))?;
        let snapshot = std::fs::read_to_string(dir.join("snapshot.txt")).ok();
        Ok(Some(Generation {
            dir: dir.to_path_buf(),
            meta,
            text,
            plan_json,
            snapshot,
            snapshot_stale: dir.join(STALE).exists(),
            kernel_stamp: std::fs::read_to_string(dir.join(STAMP))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
        }))
    }

    /// The last-known-good generation.
    pub fn current(&self) -> Result<Option<Generation>, StateError> {
        let d = self.root.join("current");
        match Self::read_gen(&d) {
            Err(e) if d.exists() => {
                quarantine_corrupt(&d, &e);
                Ok(None)
            }
            r => r,
        }
    }

    /// Previous generations, oldest first.
    pub fn previous(&self) -> Result<Vec<Generation>, StateError> {
        let d = self.root.join("generations");
        let mut names: Vec<String> = match std::fs::read_dir(&d) {
            Ok(it) => it
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&d)(e)),
        };
        names.sort();
        let mut v = Vec::new();
        for n in names {
            match Self::read_gen(&d.join(&n)) {
                Ok(Some(g)) => v.push(g),
                Ok(None) => {}
                Err(e) => quarantine_corrupt(&d.join(&n), &e),
            }
        }
        Ok(v)
    }

    fn write_gen(
        dir: &Path,
        meta: Meta,
        text: &LoadText,
        plan_json: &str,
        snapshot: Option<&str>,
    ) -> Result<(), StateError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let put = |name: &str, body: &[u8]| write_plain(&dir.join(name), body);
        put(
            "firewall.json",
            &serde_json::to_vec_pretty(text).expect("serializes"),
        )?;
        for (name, body) in text.files() {
            put(name, body.as_bytes())?;
        }
        put("plan.json", plan_json.as_bytes())?;
        if let Some(s) = snapshot {
            put("snapshot.txt", s.as_bytes())?;
        }
        // meta.json last: a generation without it is incomplete and ignored.
        put("meta.json", &serde_json::to_vec(&meta).expect("serializes"))
    }

    /// Make a new current generation; the old current becomes the newest previous one and only
    /// the newest `keep` previous generations are kept. Returns the new generation number.
    pub fn commit(
        &self,
        text: &LoadText,
        plan_json: &str,
        snapshot: Option<&str>,
    ) -> Result<u64, StateError> {
        self.ensure()?;
        let cur = self.current()?;
        // after a torn current generation was set aside, number on from the previous ones
        let newest = cur
            .as_ref()
            .map(|g| g.meta.generation)
            .max(self.previous()?.last().map(|g| g.meta.generation));
        let generation = newest.map_or(1, |n| n + 1);
        let applied_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let next = self.root.join("next");
        let _ = std::fs::remove_dir_all(&next);
        Self::write_gen(
            &next,
            Meta {
                generation,
                applied_at,
            },
            text,
            plan_json,
            snapshot,
        )?;
        // the new generation's files reach the disk before it is renamed into place
        syncfs(&next)?;
        let gens = self.root.join("generations");
        std::fs::create_dir_all(&gens).map_err(io(&gens))?;
        if let Some(c) = cur {
            let to = gens.join(format!("{:06}", c.meta.generation));
            let _ = std::fs::remove_dir_all(&to);
            crate::sys::fs::rename_durable(&c.dir, &to).map_err(io(&to))?;
        }
        let cur_dir = self.root.join("current");
        crate::sys::fs::rename_durable(&next, &cur_dir).map_err(io(&cur_dir))?;
        let prev = self.previous()?;
        if prev.len() > self.keep {
            for g in &prev[..prev.len() - self.keep] {
                let _ = std::fs::remove_dir_all(&g.dir);
            }
        }
        Ok(generation)
    }

    /// Replace the snapshot of the current generation (after a restore).
    pub fn set_snapshot(&self, snapshot: &str) -> Result<(), StateError> {
        let cur = self.root.join("current");
        write_atomic(&cur.join("snapshot.txt"), snapshot.as_bytes())?;
        match std::fs::remove_file(cur.join(STALE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&cur.join(STALE))(e)),
            _ => Ok(()),
        }
    }

    /// Record (or forget) the kernel stamp at which the live firewall is exactly the current
    /// generation. A cache: losing it costs one listing.
    pub fn set_kernel_stamp(&self, stamp: Option<&str>) -> Result<(), StateError> {
        let p = self.root.join("current").join(STAMP);
        match stamp {
            Some(s) => write_atomic(&p, s.as_bytes()),
            None => match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&p)(e)),
                _ => Ok(()),
            },
        }
    }

    /// Record live set changes in the current generation, without making a new one: its
    /// firewall text and plan become those of the plan with the new members, and its snapshot
    /// is marked stale until the next check takes a new one.
    pub fn amend(
        &self,
        text: &LoadText,
        plan_json: &str,
        stamp: Option<&str>,
    ) -> Result<(), StateError> {
        let cur = self.root.join("current");
        if !cur.join("meta.json").exists() {
            return Ok(());
        }
        write_atomic(&cur.join(STALE), b"")?;
        self.set_kernel_stamp(stamp)?;
        write_atomic(
            &cur.join("firewall.json"),
            &serde_json::to_vec_pretty(text).expect("serializes"),
        )?;
        for (name, body) in text.files() {
            write_atomic(&cur.join(name), body.as_bytes())?;
        }
        write_atomic(&cur.join("plan.json"), plan_json.as_bytes())
    }

    /// Drop the current generation and make the newest previous one current.
    pub fn pop(&self) -> Result<Option<Generation>, StateError> {
        let prev = self.previous()?;
        let Some(g) = prev.last() else {
            return Ok(None);
        };
        let cur_dir = self.root.join("current");
        let _ = std::fs::remove_dir_all(&cur_dir);
        crate::sys::fs::rename_durable(&g.dir, &cur_dir).map_err(io(&cur_dir))?;
        // its stamp is from when it was current before: no longer true
        self.set_kernel_stamp(None)?;
        self.current()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: u32) -> LoadText {
        LoadText::Nftables {
            script: format!("table inet bulkhead {{}} # {n}\n"),
        }
    }

    /// A power cut can leave a generation half written (an empty meta.json was seen after a
    /// VM was killed): the store sets it aside and goes on instead of refusing every apply.
    #[test]
    fn a_torn_generation_is_set_aside_not_fatal() {
        let d = tempfile::tempdir().unwrap();
        let st = Store::new(d.path(), 3);
        assert_eq!(st.commit(&text(1), "{}", Some("snap")).unwrap(), 1);
        assert_eq!(st.commit(&text(2), "{}", Some("snap")).unwrap(), 2);
        // the previous generation and the current one both torn
        std::fs::write(st.root.join("generations/000001/meta.json"), "").unwrap();
        std::fs::write(st.root.join("current/meta.json"), "").unwrap();
        std::fs::write(st.root.join("created.json"), "{").unwrap();
        assert!(st.current().unwrap().is_none());
        assert!(st.previous().unwrap().is_empty());
        assert_eq!(st.created().unwrap(), Created::default());
        let aside = std::fs::read_dir(&st.root)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("corrupt-"))
            .count();
        assert_eq!(aside, 1, "the torn current generation is kept aside");
        // and the next apply records a fresh generation
        assert_eq!(st.commit(&text(3), "{}", Some("snap")).unwrap(), 1);
        assert_eq!(st.current().unwrap().unwrap().text, text(3));
    }

    #[test]
    fn amend_marks_the_snapshot_stale_until_a_new_one_is_set() {
        let d = tempfile::tempdir().unwrap();
        let st = Store::new(d.path(), 3);
        st.commit(&text(1), "{}", Some("snap")).unwrap();
        st.amend(&text(2), "{\"x\":1}", Some("b 1 7")).unwrap();
        let g = st.current().unwrap().unwrap();
        assert_eq!(
            (g.meta.generation, g.text, g.snapshot_stale),
            (1, text(2), true)
        );
        assert_eq!(g.kernel_stamp.as_deref(), Some("b 1 7"));
        st.set_snapshot("snap2").unwrap();
        let g = st.current().unwrap().unwrap();
        assert_eq!(
            (g.snapshot.as_deref(), g.snapshot_stale),
            (Some("snap2"), false)
        );
    }
}
