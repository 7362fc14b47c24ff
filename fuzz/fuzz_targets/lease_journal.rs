//! Fuzz the lease-journal reader: any bytes as a `leases.journal` image.
//! Besides "never panics", checks that what it reports adds up (offsets
//! inside the file), that every record it recovered survives a rewrite in
//! the current format (read back whole, nothing reported lost), and that a
//! valid journal is recovered from whatever bytes come before or after it.
//!
//! Run from the `fuzz` directory: `cargo +nightly fuzz run lease_journal`.
#![no_main]

use bulkhead::dhcp::Lease;
use bulkhead::dhcp::leases::{encode_journal, scan_journal};
use libfuzzer_sys::fuzz_target;

fn sorted(sc: &bulkhead::dhcp::leases::JournalScan) -> Vec<Lease> {
    let mut v: Vec<Lease> = sc.leases.values().cloned().collect();
    v.sort_by(|a, b| (&a.segment, a.addr).cmp(&(&b.segment, b.addr)));
    v
}

fuzz_target!(|data: &[u8]| {
    let sc = scan_journal(data);
    let len = data.len() as u64;
    assert!(sc.end <= len, "end {} past the file ({len})", sc.end);
    assert!(sc.torn_tail + sc.damaged_bytes <= len);
    assert!(sc.leases.len() <= sc.records);
    if sc.version.is_some() && !sc.damaged() {
        assert_eq!(sc.end + sc.torn_tail, len, "unaccounted bytes");
    }

    // Whatever was recovered is written back whole.
    let leases = sorted(&sc);
    let image = encode_journal(&leases);
    let again = scan_journal(&image);
    assert_eq!(sorted(&again), leases);
    assert_eq!(again.records, leases.len());
    assert!(!again.damaged() && again.torn_tail == 0);
    assert_eq!(again.end, image.len() as u64);

    // A whole journal followed by the fuzz bytes: nothing of it is lost
    // unless the bytes after it carry newer records for the same addresses.
    let mut tail = image.clone();
    tail.extend_from_slice(data);
    let t = scan_journal(&tail);
    assert!(t.records >= leases.len());
    for l in &leases {
        assert!(t.leases.contains_key(&(l.segment.clone(), l.addr)));
    }
});
