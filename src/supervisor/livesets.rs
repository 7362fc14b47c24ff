//! The durable record of live set changes (`bulkhead set add/del`): a snapshot,
//! `live-sets.json`, and an append-only journal of the changes since, `live-sets.journal`.
//!
//! A change is answered after its journal record is on disk: one `write` and one `fdatasync`
//! of one line (one JSON object a line), instead of rewriting the snapshot (write, fsync,
//! rename, fsync of the directory). The journal is folded into the snapshot (written with
//! [`crate::sys::fs::write_atomic`]) and truncated when the daemon records the changes in the
//! applied state, once per burst of changes, and when it starts. Replaying the journal over
//! the snapshot again (a crash between the two steps of a fold) gives the same sets: each
//! record sets the membership of its addresses.
//!
//! A torn or unreadable line (a crash in the middle of an append, a bad disk) is reported
//! with the file and line and skipped; the records before and after it are kept.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::gateway::LiveSets;

/// The snapshot of the live set changes.
pub const SNAPSHOT: &str = "live-sets.json";
/// The changes since the snapshot, one JSON object a line.
pub const JOURNAL: &str = "live-sets.journal";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Add,
    Del,
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub op: Op,
    pub group: String,
    pub addrs: Vec<IpNet>,
}

impl LiveSets {
    /// Fold one change in: an added address is no longer removed, and the other way round.
    pub fn record(&mut self, op: Op, group: &str, addrs: &[IpNet]) {
        let e = self.groups.entry(group.to_string()).or_default();
        let (to, from) = match op {
            Op::Add => (&mut e.added, &mut e.removed),
            Op::Del => (&mut e.removed, &mut e.added),
        };
        for a in addrs {
            from.retain(|x| x != a);
            if !to.contains(a) {
                to.push(*a);
            }
        }
    }
}

/// What a load found besides the sets.
#[derive(Debug, Default, PartialEq)]
pub struct Loaded {
    pub sets: LiveSets,
    /// Good journal records folded in.
    pub records: usize,
    /// "FILE:LINE: why" of every journal line skipped.
    pub skipped: Vec<String>,
}

/// Replay the journal text over `sets`: every line a record; a torn or unreadable one is
/// skipped and named.
pub fn replay(path: &Path, text: &[u8], sets: &mut LiveSets) -> (usize, Vec<String>) {
    let (mut n, mut skipped) = (0, Vec::new());
    let mut lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    // the text after the last newline: empty, or a record torn before its newline
    let torn_tail = lines.pop().filter(|l| !l.is_empty());
    let count = lines.len();
    for (i, line) in lines.into_iter().chain(torn_tail).enumerate() {
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let why = match serde_json::from_slice::<Record>(line) {
            // (a last record complete but for its newline was never answered, yet what it
            // says is whole and the change is in the kernel: kept too)
            Ok(r) => {
                sets.record(r.op, &r.group, &r.addrs);
                n += 1;
                continue;
            }
            Err(e) if i >= count => format!("torn record (no end of line): {e}"),
            Err(e) => format!("unreadable record: {e}"),
        };
        skipped.push(format!("{}:{}: {why}", path.display(), i + 1));
    }
    (n, skipped)
}

/// The live set changes in `state_dir`: the snapshot with the journal replayed over it. An
/// unreadable snapshot is set aside (see [`super::gateway::Gateway::live_sets`]); skipped
/// journal lines are logged with their file and line.
pub fn load(state_dir: &Path, snapshot: impl FnOnce(&Path) -> LiveSets) -> Loaded {
    let mut sets = snapshot(&state_dir.join(SNAPSHOT));
    let j = state_dir.join(JOURNAL);
    let (records, skipped) = match std::fs::read(&j) {
        Ok(b) => replay(&j, &b, &mut sets),
        Err(_) => (0, Vec::new()),
    };
    for s in &skipped {
        tracing::warn!("{s}; this live set change is ignored, the others are kept");
    }
    Loaded {
        sets,
        records,
        skipped,
    }
}

/// The open journal of a state directory.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
}

impl Journal {
    /// Open (or create, durably) the journal for appending. A last line torn by a crash is
    /// ended first, so that the next record starts on a line of its own.
    pub fn open(state_dir: &Path) -> std::io::Result<Journal> {
        let path = state_dir.join(JOURNAL);
        let existed = path.exists();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        if !existed {
            file.sync_all()?;
            crate::sys::fs::sync_dir(state_dir)?;
        }
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                file.sync_data()?;
            }
        }
        Ok(Journal { path, file })
    }

    /// Append one record and make it durable (one write, one fdatasync).
    pub fn append(&mut self, r: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(r).expect("serializes");
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()
    }

    /// Whether the journal holds any record.
    pub fn is_empty(&self) -> std::io::Result<bool> {
        Ok(self.file.metadata()?.len() == 0)
    }

    /// Empty the journal (after its records went into the snapshot), durably.
    pub fn truncate(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn rec(op: Op, a: &str) -> Record {
        Record {
            op,
            group: "g".into(),
            addrs: vec![net(a)],
        }
    }

    #[test]
    fn appended_records_replay_over_the_snapshot() {
        let d = tempfile::tempdir().unwrap();
        let mut j = Journal::open(d.path()).unwrap();
        assert!(j.is_empty().unwrap());
        j.append(&rec(Op::Add, "198.18.0.1/32")).unwrap();
        j.append(&rec(Op::Add, "198.18.0.2/32")).unwrap();
        j.append(&rec(Op::Del, "198.18.0.1/32")).unwrap();
        let l = load(d.path(), |_| LiveSets::default());
        assert_eq!(l.records, 3);
        assert!(l.skipped.is_empty());
        let g = &l.sets.groups["g"];
        assert_eq!(g.added, vec![net("198.18.0.2/32")]);
        assert_eq!(g.removed, vec![net("198.18.0.1/32")]);
        // replaying again over the folded result changes nothing
        let mut again = l.sets.clone();
        let text = std::fs::read(d.path().join(JOURNAL)).unwrap();
        replay(&d.path().join(JOURNAL), &text, &mut again);
        assert_eq!(again, l.sets);
        j.truncate().unwrap();
        assert!(j.is_empty().unwrap());
    }

    /// A crash in the middle of an append leaves a torn last line: it is named with its file
    /// and line and skipped, the records before it are kept, and the next append starts a
    /// line of its own.
    #[test]
    fn a_torn_or_corrupt_line_is_named_and_skipped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(JOURNAL);
        std::fs::write(
            &p,
            "{\"op\":\"add\",\"group\":\"g\",\"addrs\":[\"198.18.0.1/32\"]}\n\
             not json\n\
             {\"op\":\"add\",\"group\":\"g\",\"addrs\":[\"198.18.0.2/32\"]}\n\
             {\"op\":\"add\",\"group\":\"g\",\"addr",
        )
        .unwrap();
        let l = load(d.path(), |_| LiveSets::default());
        assert_eq!(l.records, 2);
        assert_eq!(l.skipped.len(), 2, "{:?}", l.skipped);
        assert!(
            l.skipped[0].starts_with(&format!("{}:2: unreadable", p.display())),
            "{:?}",
            l.skipped
        );
        assert!(
            l.skipped[1].starts_with(&format!("{}:4: torn", p.display())),
            "{:?}",
            l.skipped
        );
        let mut j = Journal::open(d.path()).unwrap();
        j.append(&rec(Op::Add, "198.18.0.3/32")).unwrap();
        let l = load(d.path(), |_| LiveSets::default());
        assert_eq!(l.records, 3);
        assert_eq!(l.sets.groups["g"].added.len(), 3);
        assert_eq!(l.skipped.len(), 2);
    }
}
