//! Lease store: crash reload, torn tails, compaction, group commit.

use std::fs;
use std::net::Ipv4Addr;
use std::sync::Arc;

use bulkhead::dhcp::leases::{JOURNAL_FILE, LeaseStore, StoreOptions, read_leases};
use bulkhead::dhcp::{Lease, LeaseState};

const FAR: u64 = 4_000_000_000;

fn lease(seg: &str, n: u32, state: LeaseState, expires: u64) -> Lease {
    Lease {
        segment: seg.to_string(),
        addr: Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + n),
        mac: [2, 0, 0, 0, (n >> 8) as u8, n as u8],
        client_id: if n.is_multiple_of(2) {
            Some(vec![1, 2, n as u8])
        } else {
            None
        },
        hostname: Some(format!("host-{n}")),
        group: n.is_multiple_of(3).then(|| "g".to_string()),
        expires,
        state,
    }
}

fn fixed_clock() -> u64 {
    1_000
}

fn opts() -> StoreOptions {
    StoreOptions {
        compact_threshold: u64::MAX,
        clock: fixed_clock,
        ..StoreOptions::default()
    }
}

#[test]
fn reload_keeps_latest_and_drops_expired() {
    let dir = tempfile::tempdir().unwrap();
    let (store, loaded) = LeaseStore::open(dir.path(), opts()).unwrap();
    assert!(loaded.is_empty());
    store
        .commit(vec![
            lease("lan", 1, LeaseState::Bound, FAR),
            lease("lan", 2, LeaseState::Bound, 500),
        ])
        .wait_blocking()
        .unwrap();
    store
        .commit(vec![
            lease("lan", 1, LeaseState::Released, FAR),
            lease("dmz", 1, LeaseState::Bound, FAR),
        ])
        .wait_blocking()
        .unwrap();
    store.close();
    let (_store, loaded) = LeaseStore::open(dir.path(), opts()).unwrap();
    assert_eq!(loaded.len(), 2, "{loaded:?}");
    assert_eq!(loaded[0], lease("dmz", 1, LeaseState::Bound, FAR));
    assert_eq!(loaded[1], lease("lan", 1, LeaseState::Released, FAR));
    assert_eq!(read_leases(dir.path(), 1_000).unwrap(), loaded);
}

#[test]
fn torn_last_record_at_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = LeaseStore::open(dir.path(), opts()).unwrap();
    for n in 0..5 {
        store
            .commit(vec![lease("lan", n, LeaseState::Bound, FAR)])
            .wait_blocking()
            .unwrap();
    }
    let before_last = fs::metadata(dir.path().join(JOURNAL_FILE)).unwrap().len();
    store
        .commit(vec![lease("lan", 99, LeaseState::Bound, FAR)])
        .wait_blocking()
        .unwrap();
    store.close();
    let full = fs::read(dir.path().join(JOURNAL_FILE)).unwrap();
    let mut checked = 0;
    for cut in before_last as usize..=full.len() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(JOURNAL_FILE), &full[..cut]).unwrap();
        let (store, loaded) = LeaseStore::open(d.path(), opts()).unwrap();
        let want = if cut == full.len() { 6 } else { 5 };
        assert_eq!(loaded.len(), want, "cut at {cut}");
        // A torn tail is a crash, not damage: no copy, no recovery report.
        assert!(store.recovery().is_none(), "cut at {cut}");
        assert!(corrupt_copies(d.path()).is_empty(), "cut at {cut}");
        for n in 0..5 {
            assert!(loaded.contains(&lease("lan", n, LeaseState::Bound, FAR)));
        }
        // Appending after a cut-off tail must survive the next reload.
        store
            .commit(vec![lease("lan", 200, LeaseState::Bound, FAR)])
            .wait_blocking()
            .unwrap();
        store.close();
        let (_s, again) = LeaseStore::open(d.path(), opts()).unwrap();
        assert_eq!(again.len(), want + 1, "append after cut at {cut}");
        checked += 1;
    }
    assert!(checked > 50);
    // Garbage in the middle of the last record (bit flip) is also caught.
    let mut flipped = full.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x40;
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join(JOURNAL_FILE), &flipped).unwrap();
    let (_s, loaded) = LeaseStore::open(d.path(), opts()).unwrap();
    assert_eq!(loaded.len(), 5);
    // A file with a torn header is started afresh.
    for cut in 0..8 {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(JOURNAL_FILE), &full[..cut]).unwrap();
        let (_s, loaded) = LeaseStore::open(d.path(), opts()).unwrap();
        assert!(loaded.is_empty());
    }
}

#[test]
fn compaction_keeps_every_live_lease() {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        compact_threshold: 16 * 1024,
        clock: fixed_clock,
        ..StoreOptions::default()
    };
    let (store, _) = LeaseStore::open(dir.path(), o.clone()).unwrap();
    let mut expect = std::collections::BTreeMap::new();
    for round in 0..40u32 {
        let mut batch = Vec::new();
        for n in 0..50u32 {
            let state = if (n + round) % 7 == 0 {
                LeaseState::Released
            } else {
                LeaseState::Bound
            };
            // Some leases already expired by the store's clock.
            let exp = if n % 11 == 0 {
                999
            } else {
                FAR + u64::from(round)
            };
            let l = lease(
                if n.is_multiple_of(2) { "lan" } else { "dmz" },
                n,
                state,
                exp,
            );
            batch.push(l.clone());
            expect.insert((l.segment.clone(), l.addr), l);
        }
        store.commit(batch).wait_blocking().unwrap();
    }
    let stats = store.stats();
    assert!(stats.compactions >= 3, "{stats:?}");
    let size = fs::metadata(dir.path().join(JOURNAL_FILE)).unwrap().len();
    assert!(size < 2 * 16 * 1024, "journal stays small: {size}");
    store.close();
    let (_s, loaded) = LeaseStore::open(dir.path(), o).unwrap();
    let live: Vec<Lease> = expect.into_values().filter(|l| l.expires > 1_000).collect();
    let mut loaded_sorted = loaded.clone();
    loaded_sorted.sort_by(|a, b| (&a.segment, a.addr).cmp(&(&b.segment, b.addr)));
    assert_eq!(loaded_sorted, live);
    assert!(!dir.path().join("leases.journal.tmp").exists());
}

#[test]
fn group_commit_uses_fewer_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = LeaseStore::open(dir.path(), opts()).unwrap();
    let store = Arc::new(store);
    const N: u32 = 200;
    let threads: Vec<_> = (0..N)
        .map(|n| {
            let s = store.clone();
            std::thread::spawn(move || {
                s.commit(vec![lease("lan", n, LeaseState::Bound, FAR)])
                    .wait_blocking()
                    .unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = store.stats();
    println!(
        "group commit: {N} commits -> {} writes, {} fsyncs",
        stats.writes, stats.fsyncs
    );
    assert_eq!(stats.commits, u64::from(N));
    assert_eq!(stats.records, u64::from(N));
    assert!(stats.fsyncs < u64::from(N), "{stats:?}");
    assert_eq!(stats.fsyncs, stats.writes);
    drop(store);
    let (_s, loaded) = LeaseStore::open(dir.path(), opts()).unwrap();
    assert_eq!(loaded.len(), N as usize);
}

#[test]
fn listing_json_format() {
    let l = lease("lan", 2, LeaseState::Bound, FAR);
    let v = serde_json::to_value(&l).unwrap();
    assert_eq!(v["mac"], "02:00:00:00:00:02");
    assert_eq!(v["client_id"], "010202");
    assert_eq!(v["addr"], "198.18.0.2");
    assert_eq!(v["state"], "bound");
    assert_eq!(v["expires"], FAR);
}

#[test]
fn one_writer_per_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = LeaseStore::open(dir.path(), opts()).unwrap();
    let err = LeaseStore::open(dir.path(), opts()).unwrap_err();
    assert!(
        matches!(err, bulkhead::dhcp::StoreError::Locked(_)),
        "{err}"
    );
    // Reading is always allowed.
    assert!(read_leases(dir.path(), 0).unwrap().is_empty());
    store.close();
    let (_again, _) = LeaseStore::open(dir.path(), opts()).unwrap();
}

/// When the live leases alone are bigger than the compaction threshold, a compaction cannot
/// bring the journal under it: the store must not rewrite itself after every commit (seen at
/// ~25,000 leases with the default 4 MiB threshold), only once as much again was appended.
#[test]
fn a_store_bigger_than_the_threshold_does_not_compact_on_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        compact_threshold: 4 * 1024,
        clock: fixed_clock,
        ..StoreOptions::default()
    };
    let (store, _) = LeaseStore::open(dir.path(), o).unwrap();
    // ~40 KiB of live leases: ten times the threshold
    let all: Vec<Lease> = (0..400u32)
        .map(|n| lease("lan", n, LeaseState::Bound, FAR))
        .collect();
    store.commit(all).wait_blocking().unwrap();
    let after_fill = store.stats().compactions;
    // then 400 single renewals, one commit each
    for n in 0..400u32 {
        store
            .commit(vec![lease("lan", n, LeaseState::Bound, FAR + 1)])
            .wait_blocking()
            .unwrap();
    }
    let st = store.stats();
    assert!(
        st.compactions - after_fill <= 2,
        "compactions after the fill: {} ({st:?})",
        st.compactions - after_fill
    );
}

/// Ten records, one commit each; returns the journal size after each commit (index 0: before
/// the first).
fn ten_records(dir: &std::path::Path) -> Vec<u64> {
    let (store, _) = LeaseStore::open(dir, opts()).unwrap();
    let size = || fs::metadata(dir.join(JOURNAL_FILE)).unwrap().len();
    let mut sizes = vec![size()];
    for n in 0..10 {
        store
            .commit(vec![lease("lan", n, LeaseState::Bound, FAR)])
            .wait_blocking()
            .unwrap();
        sizes.push(size());
    }
    store.close();
    sizes
}

/// The corrupt copies kept in a state directory.
fn corrupt_copies(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("leases.journal.corrupt-")
        })
        .collect();
    v.sort();
    v
}

/// The warning event the store emitted for `dir`, if any.
fn recovery_event(dir: &std::path::Path) -> Option<bulkhead::logship::event::Event> {
    let (backlog, _) = bulkhead::logship::subscribe();
    let want = dir.join(JOURNAL_FILE).display().to_string();
    backlog
        .iter()
        .rev()
        .find(|e| e.field("journal") == Some(want.as_str()))
        .map(|e| (**e).clone())
}

#[test]
fn flipped_byte_in_the_middle_keeps_every_other_record() {
    bulkhead::logship::activate();
    let dir = tempfile::tempdir().unwrap();
    let sizes = ten_records(dir.path());
    let path = dir.path().join(JOURNAL_FILE);
    let orig = fs::read(&path).unwrap();
    // One flipped byte inside the payload of the fifth record (n = 4).
    let mut bad = orig.clone();
    bad[sizes[4] as usize + 20] ^= 0x04;
    fs::write(&path, &bad).unwrap();

    let (store, loaded) = LeaseStore::open(dir.path(), opts()).unwrap();
    let want: Vec<Lease> = (0..10)
        .filter(|n| *n != 4)
        .map(|n| lease("lan", n, LeaseState::Bound, FAR))
        .collect();
    assert_eq!(loaded, want, "every record after the damaged one is kept");
    // The damaged file is kept aside, byte for byte.
    let copies = corrupt_copies(dir.path());
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(fs::read(&copies[0]).unwrap(), bad);
    // A warning event says how many records were lost and where the copy is.
    let ev = recovery_event(dir.path()).expect("a journal recovery event");
    assert_eq!(ev.severity, bulkhead::logship::event::Severity::Warning);
    assert_eq!(ev.field("lost"), Some("1"));
    assert_eq!(ev.field("recovered"), Some("9"));
    assert_eq!(
        ev.field("corrupt_copy"),
        Some(copies[0].display().to_string().as_str())
    );
    // The journal is whole again: appends survive, no second copy on the next open.
    store
        .commit(vec![lease("lan", 50, LeaseState::Bound, FAR)])
        .wait_blocking()
        .unwrap();
    store.close();
    let (_s, again) = LeaseStore::open(dir.path(), opts()).unwrap();
    assert_eq!(again.len(), 10);
    assert_eq!(corrupt_copies(dir.path()).len(), 1);
    // The read-only listing recovers the same way from a damaged file.
    let d2 = tempfile::tempdir().unwrap();
    fs::write(d2.path().join(JOURNAL_FILE), &bad).unwrap();
    assert_eq!(read_leases(d2.path(), 1_000).unwrap(), want);
    // Damage to a record's length or checksum field is recovered from too.
    for off in [0usize, 2, 5, 9] {
        let d = tempfile::tempdir().unwrap();
        let mut bad = orig.clone();
        bad[sizes[4] as usize + off] ^= 0x80;
        fs::write(d.path().join(JOURNAL_FILE), &bad).unwrap();
        let (_s, loaded) = LeaseStore::open(d.path(), opts()).unwrap();
        assert_eq!(loaded, want, "flip at frame offset {off}");
        assert_eq!(corrupt_copies(d.path()).len(), 1);
    }
}

#[test]
fn bad_header_does_not_wipe_the_journal() {
    bulkhead::logship::activate();
    let dir = tempfile::tempdir().unwrap();
    ten_records(dir.path());
    let path = dir.path().join(JOURNAL_FILE);
    let mut bad = fs::read(&path).unwrap();
    bad[0] ^= 0xff;
    bad[5] = b'?';
    fs::write(&path, &bad).unwrap();
    let (store, loaded) = LeaseStore::open(dir.path(), opts()).unwrap();
    assert_eq!(loaded.len(), 10, "{loaded:?}");
    let copies = corrupt_copies(dir.path());
    assert_eq!(copies.len(), 1);
    assert_eq!(fs::read(&copies[0]).unwrap(), bad);
    let ev = recovery_event(dir.path()).expect("a journal recovery event");
    assert_eq!(ev.field("lost"), Some("0"));
    assert_eq!(ev.field("recovered"), Some("10"));
    store.close();
    let (_s, again) = LeaseStore::open(dir.path(), opts()).unwrap();
    assert_eq!(again.len(), 10);
    assert_eq!(corrupt_copies(dir.path()).len(), 1);
}

/// A journal of the previous format (header BHLEASE1, frames `len | crc32(payload) | payload`).
fn v1_journal(leases: &[Lease]) -> Vec<u8> {
    let mut b = b"BHLEASE1".to_vec();
    for l in leases {
        let p = serde_json::to_vec(l).unwrap();
        b.extend_from_slice(&(p.len() as u32).to_le_bytes());
        b.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
        b.extend_from_slice(&p);
    }
    b
}

#[test]
fn previous_format_is_read_and_rewritten() {
    let all: Vec<Lease> = (0..6)
        .map(|n| lease("lan", n, LeaseState::Bound, FAR))
        .collect();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join(JOURNAL_FILE);
    fs::write(&path, v1_journal(&all)).unwrap();
    let (store, loaded) = LeaseStore::open(d.path(), opts()).unwrap();
    assert_eq!(loaded, all);
    assert!(store.recovery().is_none());
    assert!(corrupt_copies(d.path()).is_empty());
    assert!(fs::read(&path).unwrap().starts_with(b"BHLEASE2"));
    store.close();
    // Damage in the middle of an old journal is recovered from as well.
    let d = tempfile::tempdir().unwrap();
    let mut bad = v1_journal(&all);
    let third = 8 + 2 * (8 + serde_json::to_vec(&all[0]).unwrap().len()) + 30;
    bad[third] ^= 0x01;
    fs::write(d.path().join(JOURNAL_FILE), &bad).unwrap();
    let (store, loaded) = LeaseStore::open(d.path(), opts()).unwrap();
    assert_eq!(loaded.len(), 5, "{loaded:?}");
    assert!(!loaded.contains(&all[2]));
    assert_eq!(store.recovery().unwrap().lost, 1);
    assert_eq!(corrupt_copies(d.path()).len(), 1);
}

mod damage {
    use super::*;
    use bulkhead::dhcp::leases::{encode_journal, scan_journal};
    use proptest::prelude::*;

    fn journal() -> (Vec<Lease>, Vec<u8>) {
        let all: Vec<Lease> = (0..12)
            .map(|n| lease("lan", n, LeaseState::Bound, FAR))
            .collect();
        let image = encode_journal(&all);
        (all, image)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any number of flipped bytes in one record loses that record only;
        /// the file's other records all come back, and the loss is reported.
        #[test]
        fn damage_in_one_record_loses_only_it(victim in 0usize..11, flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..6)) {
            let (all, image) = journal();
            let start = encode_journal(&all[..victim]).len();
            let frame = encode_journal(&all[..=victim]).len() - start;
            let mut bad = image.clone();
            for (at, x) in &flips {
                bad[start + at % frame] ^= x;
            }
            let sc = scan_journal(&bad);
            prop_assert!(sc.damaged());
            prop_assert!(sc.lost >= 1);
            for (n, l) in all.iter().enumerate() {
                if n != victim {
                    prop_assert_eq!(sc.leases.get(&(l.segment.clone(), l.addr)), Some(l));
                }
            }
        }

        /// Arbitrary bytes never panic the reader, what it reports adds up,
        /// and what it recovered reads back whole once rewritten.
        #[test]
        fn arbitrary_bytes(prefix in 0usize..200, noise in proptest::collection::vec(any::<u8>(), 0..300), at in any::<usize>()) {
            let (_, image) = journal();
            let mut b = image[..prefix.min(image.len())].to_vec();
            let at = at % (b.len() + 1);
            b.splice(at..at, noise);
            let sc = scan_journal(&b);
            prop_assert!(sc.end <= b.len() as u64);
            prop_assert!(sc.torn_tail + sc.damaged_bytes <= b.len() as u64);
            let mut leases: Vec<Lease> = sc.leases.values().cloned().collect();
            leases.sort_by(|a, b| (&a.segment, a.addr).cmp(&(&b.segment, b.addr)));
            let again = scan_journal(&encode_journal(&leases));
            prop_assert!(!again.damaged());
            prop_assert_eq!(again.leases, sc.leases);
        }
    }
}

/// Commits that follow each other closely (here one every 0.3 ms, as a steady stream of
/// REQUESTs does) while the journal is busy share one write and one fdatasync: the committer
/// waits a short window (`commit_window`) after the first of them for more, instead of syncing
/// each one as it arrives. A commit after a quiet spell is written at once (it does not count
/// as a windowed group).
#[test]
fn commits_arriving_within_the_window_share_one_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        commit_window: std::time::Duration::from_millis(20),
        ..opts()
    };
    let (store, _) = LeaseStore::open(dir.path(), o).unwrap();
    // after a quiet spell: written at once, no window
    store
        .commit(vec![lease("lan", 1000, LeaseState::Bound, FAR)])
        .wait_blocking()
        .unwrap();
    let idle = store.stats();
    assert_eq!((idle.fsyncs, idle.windowed), (1, 0), "{idle:?}");
    // the store is busy now (a sync just ended): five commits 0.3 ms apart, well inside the
    // window, are one group
    const N: u32 = 5;
    let mut tickets = Vec::new();
    for n in 0..N {
        tickets.push(store.commit(vec![lease("lan", n, LeaseState::Bound, FAR)]));
        std::thread::sleep(std::time::Duration::from_micros(300));
    }
    for t in tickets {
        t.wait_blocking().unwrap();
    }
    let s = store.stats();
    println!(
        "{N} commits 0.3 ms apart: {} fsyncs",
        s.fsyncs - idle.fsyncs
    );
    assert_eq!(s.commits - idle.commits, u64::from(N));
    assert_eq!(s.records - idle.records, u64::from(N));
    assert_eq!(s.fsyncs - idle.fsyncs, 1, "{s:?}");
    assert_eq!(s.writes - idle.writes, 1, "{s:?}");
    assert_eq!(s.windowed, 1, "{s:?}");
    drop(store);
    let (_s, loaded) = LeaseStore::open(dir.path(), opts()).unwrap();
    assert_eq!(loaded.len(), N as usize + 1);
}
