//! Lease records, the in-memory lease index and the crash-safe lease store.
//!
//! # Journal format
//!
//! The state directory holds one file, `leases.journal`:
//!
//! ```text
//! header:  b"BHLEASE2"
//! frame:   magic b"\xffBHL" | len: u32 LE | crc32(len LE ++ payload): u32 LE | payload
//!          (payload: JSON of Lease; 0xff never occurs in JSON, so a frame start is findable)
//! ```
//!
//! Records are appended; the latest record for a `(segment, addr)` wins.
//! Every commit is written and `fdatasync`ed before the caller is told it is
//! durable; commits that arrive while a sync is running are written together
//! with one write and one sync (group commit). While commits keep coming (one
//! arrives less than `commit_window`, 2 ms by default, after the last sync
//! ended), the committer waits out that window after the first of them, so a
//! steady stream of leases shares its syncs too; a commit after a quiet spell
//! is written at once. When the journal grows past a
//! threshold it is rewritten as a snapshot of the live leases: temp file,
//! fsync, rename, fsync of the directory.
//!
//! # Damage
//!
//! * A last frame that is incomplete (its length runs past the end of the
//!   file) is a torn write from a crash: it was never acknowledged, and it is
//!   cut off on the next open.
//! * Any other damage (a flipped byte in a record, its length or checksum, a
//!   bad header, a complete last frame whose checksum does not match) loses
//!   only the damaged records: reading resynchronises on the next frame whose
//!   magic, length and checksum are valid and keeps every valid record after
//!   it. On open the damaged file is first kept aside, byte for byte, as
//!   `leases.journal.corrupt-<unix seconds>`, then the journal is rewritten
//!   from the recovered records, a warning is logged and a `lease` event of
//!   severity warning (`action=journal_recovered`, with `lost`, `recovered`
//!   and `corrupt_copy`) is emitted.
//! * A journal of the previous format (`BHLEASE1`: frames without magic) is
//!   read the same way (resynchronising on the start of a JSON record) and
//!   rewritten in the current format.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// File name of the journal inside the state directory.
pub const JOURNAL_FILE: &str = "leases.journal";
/// Lock file: one writer per state directory.
pub const LOCK_FILE: &str = "leases.lock";
/// Prefix of the corrupt copies kept aside (`leases.journal.corrupt-<unix seconds>`).
pub const CORRUPT_PREFIX: &str = "leases.journal.corrupt-";
const HEADER: &[u8; 8] = b"BHLEASE2";
const HEADER_V1: &[u8; 8] = b"BHLEASE1";
/// Start of every frame. 0xff is never part of UTF-8, so never of a JSON payload.
const FRAME_MAGIC: [u8; 4] = [0xff, b'B', b'H', b'L'];
const FRAME_HDR: usize = 12;
const FRAME_HDR_V1: usize = 8;
/// How a version-1 payload starts (the first field of a serialized Lease).
const V1_PAYLOAD_START: &[u8] = b"{\"segment\":";
const MAX_RECORD: usize = 64 * 1024;

/// A record kept in a lease journal: the DHCPv4 [`Lease`] and the DHCPv6
/// lease (`crate::dhcp6::Lease6`) share the framing, group commit, crash
/// recovery and compaction of [`LeaseStore`]; each has its own files.
pub trait JournalRecord: Serialize + DeserializeOwned + Clone + Send + 'static {
    /// Identity of a record: the latest record per key wins.
    type Key: std::hash::Hash + Eq + Ord + Clone + Send + std::fmt::Debug + 'static;
    /// File name of the journal inside the state directory.
    const JOURNAL_FILE: &'static str;
    /// Lock file: one writer per journal.
    const LOCK_FILE: &'static str;
    /// Prefix of the corrupt copies kept aside.
    const CORRUPT_PREFIX: &'static str;
    /// The key of this record.
    fn key(&self) -> Self::Key;
    /// Expiry, Unix seconds: the record is dropped on load and compaction
    /// once this has passed.
    fn expires(&self) -> u64;
}

impl JournalRecord for Lease {
    type Key = (String, Ipv4Addr);
    const JOURNAL_FILE: &'static str = JOURNAL_FILE;
    const LOCK_FILE: &'static str = LOCK_FILE;
    const CORRUPT_PREFIX: &'static str = CORRUPT_PREFIX;
    fn key(&self) -> Self::Key {
        (self.segment.clone(), self.addr)
    }
    fn expires(&self) -> u64 {
        self.expires
    }
}

/// State of a lease record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Acknowledged to the client; valid until `expires`.
    Bound,
    /// Given back by the client with DHCPRELEASE; the address is free but
    /// remembered for the same client until `expires`.
    Released,
    /// Refused by a client with DHCPDECLINE; quarantined until `expires`.
    Declined,
}

/// One lease record. Also the listing format (`bulkhead leases --format
/// json`): MAC as `aa:bb:cc:dd:ee:ff`, client id as hex, expiry as Unix
/// seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Segment (pool) name.
    pub segment: String,
    /// Leased address.
    pub addr: Ipv4Addr,
    /// Client hardware address (first 6 bytes of chaddr).
    #[serde(with = "mac_serde")]
    pub mac: [u8; 6],
    /// Client identifier (option 61), if the client sent one.
    #[serde(with = "hex_opt", default)]
    pub client_id: Option<Vec<u8>>,
    /// Host name the client sent (option 12) or the reservation's name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Firewall group of the reservation, if the address is reserved.
    #[serde(default)]
    pub group: Option<String>,
    /// Expiry, Unix seconds.
    pub expires: u64,
    /// State of the record.
    pub state: LeaseState,
}

impl Lease {
    /// Identity of the client holding this record: the client identifier
    /// when present, else the hardware address. `None` for declined
    /// addresses, which belong to nobody.
    pub fn client_key(&self) -> Option<ClientKey> {
        if self.state == LeaseState::Declined {
            return None;
        }
        Some(ClientKey::new(self.client_id.as_deref(), &self.mac))
    }

    /// Is this an unexpired binding?
    pub fn is_active(&self, now: u64) -> bool {
        self.state == LeaseState::Bound && self.expires > now
    }
}

/// Identity of a DHCP client: option 61 if present (it takes precedence),
/// else the hardware address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(Vec<u8>);

impl ClientKey {
    /// Build the key from an optional client identifier and a MAC.
    pub fn new(client_id: Option<&[u8]>, mac: &[u8; 6]) -> Self {
        match client_id {
            Some(id) if !id.is_empty() => {
                let mut k = Vec::with_capacity(id.len() + 1);
                k.push(b'i');
                k.extend_from_slice(id);
                ClientKey(k)
            }
            _ => {
                let mut k = Vec::with_capacity(7);
                k.push(b'h');
                k.extend_from_slice(mac);
                ClientKey(k)
            }
        }
    }
}

/// Kind of a lease event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseEventKind {
    /// The address was acknowledged to the client (new or renewed).
    Bound,
    /// The client released the address.
    Released,
    /// A client declined the address; it is quarantined.
    Declined,
    /// The binding ran out without renewal.
    Expired,
}

/// Sent to the product after a lease change is durable. `lease.group`
/// carries the reservation's firewall group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseEvent {
    /// What happened.
    pub kind: LeaseEventKind,
    /// The lease record after the change.
    pub lease: Lease,
}

/// In-memory lease index: per segment, by address and by client identity.
#[derive(Debug, Default, Clone)]
pub struct LeaseDb {
    segs: HashMap<String, SegmentLeases>,
}

#[derive(Debug, Default, Clone)]
struct SegmentLeases {
    by_addr: HashMap<Ipv4Addr, Lease>,
    by_client: HashMap<ClientKey, Ipv4Addr>,
}

impl LeaseDb {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Insert or replace the record for `(lease.segment, lease.addr)`.
    pub fn upsert(&mut self, lease: Lease) {
        let seg = match self.segs.get_mut(&lease.segment) {
            Some(s) => s,
            None => self.segs.entry(lease.segment.clone()).or_default(),
        };
        if let Some(old) = seg.by_addr.get(&lease.addr)
            && let Some(ck) = old.client_key()
            && seg.by_client.get(&ck) == Some(&old.addr)
        {
            seg.by_client.remove(&ck);
        }
        if let Some(ck) = lease.client_key() {
            seg.by_client.insert(ck, lease.addr);
        }
        seg.by_addr.insert(lease.addr, lease);
    }

    /// Remove the record at this address.
    pub fn remove(&mut self, segment: &str, addr: Ipv4Addr) -> Option<Lease> {
        let seg = self.segs.get_mut(segment)?;
        let old = seg.by_addr.remove(&addr)?;
        if let Some(ck) = old.client_key()
            && seg.by_client.get(&ck) == Some(&addr)
        {
            seg.by_client.remove(&ck);
        }
        Some(old)
    }

    /// The record at this address.
    pub fn get(&self, segment: &str, addr: Ipv4Addr) -> Option<&Lease> {
        self.segs.get(segment)?.by_addr.get(&addr)
    }

    /// The latest record of this client on this segment.
    pub fn by_client(&self, segment: &str, key: &ClientKey) -> Option<&Lease> {
        let seg = self.segs.get(segment)?;
        seg.by_addr.get(seg.by_client.get(key)?)
    }

    /// All records, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.segs.values().flat_map(|s| s.by_addr.values())
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.segs.values().map(|s| s.by_addr.len()).sum()
    }

    /// No records?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All records sorted by segment then address (for listing).
    pub fn sorted(&self) -> Vec<Lease> {
        let mut v: Vec<Lease> = self.iter().cloned().collect();
        v.sort_by(|a, b| (&a.segment, a.addr).cmp(&(&b.segment, b.addr)));
        v
    }
}

/// Errors of the lease store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File-system error, with what was being done.
    #[error("lease store: {what}: {source}")]
    Io {
        /// What the store was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The committer thread is gone (store shut down).
    #[error("lease store is closed")]
    Closed,
    /// A commit failed; the error text is shared by the whole group.
    #[error("lease commit failed: {0}")]
    CommitFailed(String),
    /// Another process (or store) holds the state directory.
    #[error("lease state directory {0} is in use by another DHCP server")]
    Locked(PathBuf),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let what = what.into();
    move |source| StoreError::Io { what, source }
}

/// Tunables of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Compact when the journal grows past this many bytes.
    pub compact_threshold: u64,
    /// Clock used to drop expired leases on load and compaction (Unix
    /// seconds).
    pub clock: fn() -> u64,
    /// Group commit window: when a commit arrives while the journal is busy (the previous
    /// group's sync ended less than this long ago), the committer waits until this long after
    /// that commit's arrival for more, and writes them all with one write and one fdatasync.
    /// A commit after a quiet spell is written at once. Zero: never wait.
    pub commit_window: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            compact_threshold: 4 * 1024 * 1024,
            clock: unix_now,
            commit_window: std::time::Duration::from_millis(2),
        }
    }
}

/// Wall-clock time in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Counters of the store, for tests and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Commit requests received.
    pub commits: u64,
    /// Records written.
    pub records: u64,
    /// `write` calls to the journal (one per group).
    pub writes: u64,
    /// fsync/fdatasync calls on the journal (one per group).
    pub fsyncs: u64,
    /// Compactions done.
    pub compactions: u64,
    /// Groups that waited for the commit window (the journal was busy).
    pub windowed: u64,
}

#[derive(Default)]
struct AtomicStats {
    commits: AtomicU64,
    records: AtomicU64,
    writes: AtomicU64,
    fsyncs: AtomicU64,
    compactions: AtomicU64,
    windowed: AtomicU64,
}

impl AtomicStats {
    fn snapshot(&self) -> StoreStats {
        StoreStats {
            commits: self.commits.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            compactions: self.compactions.load(Ordering::Relaxed),
            windowed: self.windowed.load(Ordering::Relaxed),
        }
    }
}

type Done = tokio::sync::oneshot::Sender<Result<(), String>>;

enum Cmd<R> {
    Commit(Vec<R>, Done),
    Shutdown,
}

/// Waits for one commit to become durable.
#[must_use = "a commit is durable only once its ticket resolves Ok"]
pub struct CommitTicket(tokio::sync::oneshot::Receiver<Result<(), String>>);

impl CommitTicket {
    /// Wait (async) until the records are on disk.
    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::CommitFailed(e)),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// Poll for durability without consuming the ticket (so that a loop can keep its pending
    /// tickets in a queue and select on the oldest one).
    pub fn poll_done(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), StoreError>> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::CommitFailed(e)),
            Err(_) => Err(StoreError::Closed),
        })
    }

    /// Wait (blocking the thread) until the records are on disk.
    pub fn wait_blocking(self) -> Result<(), StoreError> {
        match self.0.blocking_recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::CommitFailed(e)),
            Err(_) => Err(StoreError::Closed),
        }
    }
}

/// The crash-safe lease store: an append-only journal written by one
/// committer thread with
/// group commit. Generic over the record kind (DHCPv4 leases by default).
pub struct LeaseStore<R: JournalRecord = Lease> {
    // Held (flock) for the store's lifetime; the kernel drops it when the
    // process dies, so kill -9 never leaves a stale lock.
    _lock: File,
    tx: mpsc::Sender<Cmd<R>>,
    stats: Arc<AtomicStats>,
    thread: Option<JoinHandle<()>>,
    recovery: Option<Recovery>,
}

/// What opening a damaged journal recovered (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The journal that was damaged.
    pub journal: PathBuf,
    /// Records lost to the damage.
    pub lost: usize,
    /// Valid records read (the latest per address is kept).
    pub recovered: usize,
    /// Bytes skipped as damage.
    pub damaged_bytes: u64,
    /// Where the damaged file was kept, byte for byte.
    pub corrupt_copy: PathBuf,
}

impl Recovery {
    /// The warning event of the product's event stream.
    fn emit(&self) {
        use crate::logship::event::{Event, Kind, Severity};
        crate::logship::emit(
            Event::new(
                Kind::Lease,
                Severity::Warning,
                format!(
                    "lease journal damaged: {} record(s) lost, {} recovered, copy kept as {}",
                    self.lost,
                    self.recovered,
                    self.corrupt_copy.display()
                ),
            )
            .with("action", "journal_recovered")
            .with("journal", self.journal.display())
            .with("lost", self.lost)
            .with("recovered", self.recovered)
            .with("damaged_bytes", self.damaged_bytes)
            .with("corrupt_copy", self.corrupt_copy.display()),
        );
    }
}

impl<R: JournalRecord> std::fmt::Debug for LeaseStore<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseStore")
            .field("stats", &self.stats.snapshot())
            .finish()
    }
}

impl LeaseStore<Lease> {
    /// Open (or create) the store in `dir` and return it with the live
    /// leases found there (expired ones dropped, torn tail cut off).
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<(LeaseStore, Vec<Lease>), StoreError> {
        Self::open_journal(dir, opts)
    }
}

impl<R: JournalRecord> LeaseStore<R> {
    /// Open (or create) the journal of record kind `R` in `dir` and return
    /// it with the live records found there (expired ones dropped, torn
    /// tail cut off), sorted by key.
    pub fn open_journal(dir: &Path, opts: StoreOptions) -> Result<(Self, Vec<R>), StoreError> {
        fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        let lock = lock_dir(dir, R::LOCK_FILE)?;
        let path = dir.join(R::JOURNAL_FILE);
        let now = (opts.clock)();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(format!("read {}", path.display()))(e)),
        };
        let file_len = bytes.len() as u64;
        let scan = scan_journal_of::<R>(&bytes);
        let damaged = scan.damaged() || (file_len > 0 && scan.version.is_none());
        let mut recovery = None;
        if damaged {
            // Keep the evidence before anything is rewritten.
            let copy = keep_corrupt_copy(dir, R::CORRUPT_PREFIX, &bytes)?;
            tracing::warn!(
                path = %path.display(),
                lost = scan.lost,
                recovered = scan.records,
                damaged_bytes = scan.damaged_bytes,
                corrupt_copy = %copy.display(),
                "lease journal damaged: kept a copy, recovered every valid record"
            );
            let r = Recovery {
                journal: path.clone(),
                lost: scan.lost,
                recovered: scan.records,
                damaged_bytes: scan.damaged_bytes,
                corrupt_copy: copy,
            };
            r.emit();
            recovery = Some(r);
        }
        let mut live: HashMap<R::Key, R> = scan
            .leases
            .into_iter()
            .filter(|(_, l)| l.expires() > now)
            .collect();

        let stats = Arc::new(AtomicStats::default());
        let mut base = HEADER.len() as u64;
        let mut size = scan.end.max(base);
        let file = if file_len == 0
            || damaged
            || scan.version != Some(2)
            || file_len > opts.compact_threshold
        {
            // New, damaged, of the previous format, or big: start from a
            // fresh snapshot of what was read.
            base = write_snapshot(dir, R::JOURNAL_FILE, &live)?;
            size = base;
            if file_len > 0 {
                stats.compactions.fetch_add(1, Ordering::Relaxed);
            }
            open_append(&path)?
        } else {
            let f = open_append(&path)?;
            if scan.end < file_len {
                tracing::warn!(
                    path = %path.display(),
                    valid_len = scan.end,
                    file_len,
                    "lease journal ends in a torn record; cutting it off"
                );
                f.set_len(scan.end)
                    .map_err(io_err("truncate torn journal tail"))?;
                f.sync_all().map_err(io_err("fsync journal"))?;
            }
            f
        };
        let mut leases: Vec<R> = live.values().cloned().collect();
        leases.sort_by_key(|l| l.key());

        let (tx, rx) = mpsc::channel();
        let mut committer = Committer {
            dir: dir.to_path_buf(),
            file,
            size,
            base,
            live: std::mem::take(&mut live),
            opts,
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("dhcp-lease-commit".into())
            .spawn(move || committer.run(rx))
            .map_err(io_err("spawn committer thread"))?;
        Ok((
            LeaseStore {
                _lock: lock,
                tx,
                stats,
                thread: Some(thread),
                recovery,
            },
            leases,
        ))
    }

    /// Queue records for writing. They are durable when the ticket
    /// resolves `Ok`. Records are written in the order of `commit` calls.
    pub fn commit(&self, records: Vec<R>) -> CommitTicket {
        let (done, rx) = tokio::sync::oneshot::channel();
        if let Err(mpsc::SendError(Cmd::Commit(_, done))) = self.tx.send(Cmd::Commit(records, done))
        {
            let _ = done.send(Err("lease store is closed".into()));
        }
        CommitTicket(rx)
    }

    /// Counters so far.
    pub fn stats(&self) -> StoreStats {
        self.stats.snapshot()
    }

    /// What was recovered from a damaged journal when the store was opened
    /// (`None`: the journal was whole, or only a torn tail was cut off).
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// Finish pending commits and stop the committer thread.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.tx.send(Cmd::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<R: JournalRecord> Drop for LeaseStore<R> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Read the leases in a state directory without opening it for writing
/// (safe while a server runs). Expired leases are left out.
pub fn read_leases(dir: &Path, now: u64) -> Result<Vec<Lease>, StoreError> {
    read_journal::<Lease>(dir, now)
}

/// Read the live records of kind `R` in a state directory without opening
/// it for writing (safe while a server runs), sorted by key.
pub fn read_journal<R: JournalRecord>(dir: &Path, now: u64) -> Result<Vec<R>, StoreError> {
    let path = dir.join(R::JOURNAL_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("read {}", path.display()))(e)),
    };
    let mut v: Vec<R> = scan_journal_of::<R>(&bytes)
        .leases
        .into_values()
        .filter(|l| l.expires() > now)
        .collect();
    v.sort_by_key(|l| l.key());
    Ok(v)
}

/// What reading a journal image found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalScan<R: JournalRecord = Lease> {
    /// The latest record per key (`(segment, addr)`), expired ones included.
    pub leases: HashMap<R::Key, R>,
    /// Format version of the header (1 or 2); `None` when the header is
    /// missing or damaged.
    pub version: Option<u8>,
    /// Valid records read.
    pub records: usize,
    /// Records lost to damage (frames in damaged regions, at least one per
    /// region where a frame was expected, plus records whose checksum
    /// matched but whose payload did not decode).
    pub lost: usize,
    /// Bytes skipped as damage, a bad header included (not a torn tail).
    pub damaged_bytes: u64,
    /// Bytes of an incomplete last frame (a torn write).
    pub torn_tail: u64,
    /// End of the last valid frame (or of the header): where appending may
    /// continue once a torn tail is cut off.
    pub end: u64,
}

impl<R: JournalRecord> Default for JournalScan<R> {
    fn default() -> Self {
        JournalScan {
            leases: HashMap::new(),
            version: None,
            records: 0,
            lost: 0,
            damaged_bytes: 0,
            torn_tail: 0,
            end: 0,
        }
    }
}

impl<R: JournalRecord> JournalScan<R> {
    /// Was anything lost to damage (as opposed to a torn tail)?
    pub fn damaged(&self) -> bool {
        self.damaged_bytes > 0 || self.lost > 0
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fmt {
    V1,
    V2,
}

enum Frame<'a> {
    /// A valid frame: its payload and where the next frame starts.
    Ok(&'a [u8], usize),
    /// Incomplete at the end of the file.
    Torn,
    /// Not a valid frame.
    Bad,
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn frame_at(fmt: Fmt, bytes: &[u8], pos: usize) -> Frame<'_> {
    let rest = &bytes[pos.min(bytes.len())..];
    match fmt {
        Fmt::V2 => {
            let m = rest.len().min(FRAME_MAGIC.len());
            if rest[..m] != FRAME_MAGIC[..m] {
                return Frame::Bad;
            }
            if rest.len() < FRAME_HDR {
                return Frame::Torn;
            }
            let len = le32(&rest[4..8]) as usize;
            if len > MAX_RECORD {
                return Frame::Bad;
            }
            let Some(payload) = rest.get(FRAME_HDR..FRAME_HDR + len) else {
                return Frame::Torn;
            };
            let mut h = crc32fast::Hasher::new();
            h.update(&rest[4..8]);
            h.update(payload);
            if h.finalize() != le32(&rest[8..12]) {
                return Frame::Bad;
            }
            Frame::Ok(payload, pos + FRAME_HDR + len)
        }
        Fmt::V1 => {
            if rest.len() < FRAME_HDR_V1 {
                return Frame::Torn;
            }
            let len = le32(&rest[0..4]) as usize;
            if len > MAX_RECORD {
                return Frame::Bad;
            }
            let Some(payload) = rest.get(FRAME_HDR_V1..FRAME_HDR_V1 + len) else {
                return Frame::Torn;
            };
            if crc32fast::hash(payload) != le32(&rest[4..8]) {
                return Frame::Bad;
            }
            Frame::Ok(payload, pos + FRAME_HDR_V1 + len)
        }
    }
}

/// Offsets (from `from` on) where a frame might start.
fn candidates(fmt: Fmt, bytes: &[u8], from: usize) -> impl Iterator<Item = usize> + '_ {
    let (pat, back): (&[u8], usize) = match fmt {
        Fmt::V2 => (&FRAME_MAGIC, 0),
        Fmt::V1 => (V1_PAYLOAD_START, FRAME_HDR_V1),
    };
    let start = from + back;
    bytes
        .get(start..)
        .unwrap_or_default()
        .windows(pat.len())
        .enumerate()
        .filter(move |(_, w)| *w == pat)
        .map(move |(i, _)| start + i - back)
}

/// Scan `bytes` from `pos` as format `fmt`, resynchronising after damage.
fn scan_from<R: JournalRecord>(
    fmt: Fmt,
    bytes: &[u8],
    mut pos: usize,
    header_damaged: bool,
) -> JournalScan<R> {
    let mut sc = JournalScan {
        end: pos as u64,
        ..JournalScan::default()
    };
    // Frames in [from, to): for counting what a damaged region held.
    let count = |from: usize, to: usize| candidates(fmt, &bytes[..to], from).count();
    let mut in_header = header_damaged;
    while pos < bytes.len() {
        match frame_at(fmt, bytes, pos) {
            Frame::Ok(payload, next) => {
                in_header = false;
                match serde_json::from_slice::<R>(payload) {
                    Ok(lease) => {
                        sc.records += 1;
                        sc.leases.insert(lease.key(), lease);
                    }
                    Err(e) => {
                        // The checksum matched: not damage in transit, a record
                        // this version cannot read. Skipped, and counted.
                        tracing::warn!(offset = pos, error = %e, "skipping unreadable lease record");
                        sc.lost += 1;
                    }
                }
                pos = next;
                sc.end = next as u64;
            }
            bad => {
                let next = candidates(fmt, bytes, pos + 1)
                    .find(|&c| matches!(frame_at(fmt, bytes, c), Frame::Ok(..)));
                match next {
                    Some(c) => {
                        let n = count(pos, c);
                        sc.lost += if in_header { n } else { n.max(1) };
                        sc.damaged_bytes += (c - pos) as u64;
                        pos = c;
                    }
                    None => {
                        let rest = &bytes[pos..];
                        if !in_header
                            && (matches!(bad, Frame::Torn) || rest.iter().all(|b| *b == 0))
                        {
                            sc.torn_tail = rest.len() as u64;
                        } else {
                            let n = count(pos, bytes.len());
                            sc.lost += if in_header { n } else { n.max(1) };
                            sc.damaged_bytes += rest.len() as u64;
                        }
                        break;
                    }
                }
            }
        }
    }
    sc
}

/// Read a journal image: every valid record, resynchronising after damage
/// (see the module documentation). Never panics, whatever the bytes.
pub fn scan_journal(bytes: &[u8]) -> JournalScan {
    scan_journal_of::<Lease>(bytes)
}

/// [`scan_journal`] for records of kind `R`.
pub fn scan_journal_of<R: JournalRecord>(bytes: &[u8]) -> JournalScan<R> {
    let head = bytes.get(..HEADER.len());
    if head == Some(&HEADER[..]) {
        let mut sc = scan_from::<R>(Fmt::V2, bytes, HEADER.len(), false);
        sc.version = Some(2);
        return sc;
    }
    if head == Some(&HEADER_V1[..]) {
        let mut sc = scan_from::<R>(Fmt::V1, bytes, HEADER_V1.len(), false);
        sc.version = Some(1);
        return sc;
    }
    if bytes.is_empty() {
        return JournalScan::default();
    }
    // Damaged header: the records may still be there, in either format.
    let v2 = scan_from::<R>(Fmt::V2, bytes, 0, true);
    let v1 = scan_from::<R>(Fmt::V1, bytes, 0, true);
    let mut sc = if v1.records > v2.records { v1 } else { v2 };
    sc.damaged_bytes = sc.damaged_bytes.max(bytes.len().min(HEADER.len()) as u64);
    sc.version = None;
    sc
}

fn encode_record<R: JournalRecord>(lease: &R, out: &mut Vec<u8>) {
    // Serializing a plain struct of strings and numbers cannot fail.
    let payload = serde_json::to_vec(lease).unwrap_or_default();
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(&payload);
    out.extend_from_slice(&FRAME_MAGIC);
    out.extend_from_slice(&len);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(&payload);
}

/// A whole journal image (header and one frame per lease, in the given
/// order), as a snapshot is written.
pub fn encode_journal<'a, R: JournalRecord>(leases: impl IntoIterator<Item = &'a R>) -> Vec<u8> {
    let mut buf = HEADER.to_vec();
    for l in leases {
        encode_record(l, &mut buf);
    }
    buf
}

fn lock_dir(dir: &Path, lock_file: &str) -> Result<File, StoreError> {
    let path = dir.join(lock_file);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(format!("open {}", path.display())))?;
    if let Err(e) = crate::sys::fs::try_lock_exclusive(&f) {
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(StoreError::Locked(dir.to_path_buf()));
        }
        return Err(io_err(format!("lock {}", path.display()))(e));
    }
    Ok(f)
}

fn open_append(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(format!("open {}", path.display())))
}

/// Write header + all live records to a temp file, fsync it, rename it over
/// the journal and fsync the directory. Returns the new journal size.
fn write_snapshot<R: JournalRecord>(
    dir: &Path,
    journal_file: &str,
    live: &HashMap<R::Key, R>,
) -> Result<u64, StoreError> {
    let path = dir.join(journal_file);
    let mut leases: Vec<&R> = live.values().collect();
    leases.sort_by_key(|l| l.key());
    let buf = encode_journal(leases);
    crate::sys::fs::write_atomic(&path, &buf, 0o644)
        .map_err(io_err(format!("write snapshot {}", path.display())))?;
    Ok(buf.len() as u64)
}

/// Keep a damaged journal aside, byte for byte and durably, before it is
/// rewritten. Returns the copy's path.
fn keep_corrupt_copy(dir: &Path, prefix: &str, bytes: &[u8]) -> Result<PathBuf, StoreError> {
    let stamp = unix_now();
    let mut path = dir.join(format!("{prefix}{stamp}"));
    let mut n = 0;
    while path.exists() {
        n += 1;
        path = dir.join(format!("{prefix}{stamp}-{n}"));
    }
    crate::sys::fs::write_atomic(&path, bytes, 0o600).map_err(io_err(format!(
        "keep corrupt journal as {}",
        path.display()
    )))?;
    Ok(path)
}

struct Committer<R: JournalRecord> {
    dir: PathBuf,
    file: File,
    size: u64,
    /// The journal's size right after the last snapshot: the next compaction waits until as
    /// much again has been appended, so a store whose live leases alone pass the threshold
    /// does not rewrite itself after every commit.
    base: u64,
    live: HashMap<R::Key, R>,
    opts: StoreOptions,
    stats: Arc<AtomicStats>,
}

impl<R: JournalRecord> Committer<R> {
    fn run(&mut self, rx: mpsc::Receiver<Cmd<R>>) {
        let mut shutdown = false;
        // When the last group's sync ended: a commit arriving within the window after it
        // finds the journal busy.
        let mut last_sync: Option<std::time::Instant> = None;
        while !shutdown {
            let Ok(first) = rx.recv() else { break };
            let arrived = std::time::Instant::now();
            let mut batch: Vec<(Vec<R>, Done)> = Vec::new();
            match first {
                Cmd::Commit(r, d) => batch.push((r, d)),
                Cmd::Shutdown => shutdown = true,
            }
            // Busy (a steady stream of commits): sleep out the window once, so that the
            // commits arriving meanwhile share this group's write and fdatasync. The senders
            // do not wake this thread while it sleeps; one wake-up per group.
            let window = self.opts.commit_window;
            if !shutdown
                && !window.is_zero()
                && last_sync.is_some_and(|t| arrived.duration_since(t) < window)
            {
                std::thread::sleep(window);
                self.stats.windowed.fetch_add(1, Ordering::Relaxed);
            }
            // Everything that queued up while the last sync ran goes into
            // this group.
            while let Ok(cmd) = rx.try_recv() {
                match cmd {
                    Cmd::Commit(r, d) => batch.push((r, d)),
                    Cmd::Shutdown => shutdown = true,
                }
            }
            if batch.is_empty() {
                continue;
            }
            let t = std::time::Instant::now();
            let result = self.write_group(&batch);
            last_sync = Some(std::time::Instant::now());
            tracing::trace!(
                commits = batch.len(),
                micros = t.elapsed().as_micros() as u64,
                "lease journal group written"
            );
            let err = result.as_ref().err().map(|e| e.to_string());
            if let Some(e) = &err {
                tracing::error!(error = %e, "lease journal write failed; ACKs held back");
            }
            for (records, done) in batch {
                if err.is_none() {
                    for l in records {
                        self.live.insert(l.key(), l);
                    }
                }
                let _ = done.send(match &err {
                    None => Ok(()),
                    Some(e) => Err(e.clone()),
                });
            }
            if err.is_none()
                && self.size > self.opts.compact_threshold.max(2 * self.base)
                && let Err(e) = self.compact()
            {
                tracing::error!(error = %e, "lease journal compaction failed");
            }
        }
    }

    fn write_group(&mut self, batch: &[(Vec<R>, Done)]) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        let mut n = 0u64;
        for (records, _) in batch {
            for l in records {
                encode_record(l, &mut buf);
                n += 1;
            }
        }
        self.stats
            .commits
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if buf.is_empty() {
            return Ok(());
        }
        let res = self
            .file
            .write_all(&buf)
            .map_err(io_err("append to journal"));
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = res {
            // Cut off whatever part of the group reached the file so that
            // later records are not stranded behind a torn one.
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.file.sync_data().map_err(io_err("fsync journal"))?;
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.stats.records.fetch_add(n, Ordering::Relaxed);
        self.size += buf.len() as u64;
        Ok(())
    }

    fn compact(&mut self) -> Result<(), StoreError> {
        let now = (self.opts.clock)();
        self.live.retain(|_, l| l.expires() > now);
        let size = write_snapshot(&self.dir, R::JOURNAL_FILE, &self.live)?;
        self.file = open_append(&self.dir.join(R::JOURNAL_FILE))?;
        self.size = size;
        self.base = size;
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            live = self.live.len(),
            bytes = size,
            "lease journal compacted"
        );
        Ok(())
    }
}

/// Serde helpers: MAC as `aa:bb:cc:dd:ee:ff`.
pub mod mac_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Format a MAC as `aa:bb:cc:dd:ee:ff`.
    pub fn format(mac: &[u8; 6]) -> String {
        mac.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Parse `aa:bb:cc:dd:ee:ff` (or `-` separated).
    pub fn parse(s: &str) -> Option<[u8; 6]> {
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split([':', '-']) {
            if n >= 6 || part.len() != 2 {
                return None;
            }
            out[n] = u8::from_str_radix(part, 16).ok()?;
            n += 1;
        }
        (n == 6).then_some(out)
    }

    /// Serialize.
    pub fn serialize<S: Serializer>(mac: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(mac))
    }

    /// Deserialize.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 6], D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad MAC address {s:?}")))
    }
}

/// Serde helpers: optional bytes as a hex string.
pub mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize.
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&b.iter().map(|b| format!("{b:02x}")).collect::<String>()),
            None => s.serialize_none(),
        }
    }

    /// Deserialize.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        let Some(s) = s else { return Ok(None) };
        if s.len() % 2 != 0 || !s.is_ascii() {
            return Err(serde::de::Error::custom("odd-length hex string"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}
