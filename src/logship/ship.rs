//! One shipper per target: format, frame, send; for TCP and TLS, spool while the receiver is
//! unreachable and replay in order after reconnecting.
//!
//! Delivery over a stream is at least once. TCP accepting bytes says nothing about the
//! receiver having them: a receiver that stops loses what sat in its socket buffer. So a
//! frame stays "unconfirmed" until the peer's TCP acknowledged it (the socket's send queue
//! has drained past it) and [`HOLD`] has passed since with the connection healthy. When the
//! connection breaks, every unconfirmed frame goes back to the front of the spool and is
//! sent again: the receiver may see a few events twice (counted as `resent`), never none.
//!
//! Syslog over TCP and TLS (RFC 6587, RFC 5425) has no acknowledgement from the receiving
//! application, so "acknowledged" here means: written and flushed to the socket, acknowledged
//! by the peer's TCP, and [`HOLD`] passed since with the connection still healthy. A spool
//! chunk taken out for replay keeps its file until every one of its frames is acknowledged
//! that way (see [`super::spool`]); a broken connection, a stop or a crash leave the
//! unacknowledged frames on disk, and they are sent again.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::event::Event;
use super::format;
use super::spool::Spool;
use super::transport::{self, Conn};
use crate::model::{LogFormat, LogTarget, Transport};

/// How long a frame acknowledged by the peer's TCP is kept for a resend.
pub const HOLD: Duration = Duration::from_millis(1000);
/// Unconfirmed frames kept at most (beyond, the oldest count as delivered).
const MAX_UNCONFIRMED: usize = 200_000;
/// Events waiting in memory behind a replay before they are spilled to the spool.
const MAX_QUEUE_BYTES: usize = 4 << 20;
/// Frames per write.
const BATCH: usize = 512;
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Under load (an event right after a write), wait this long for more before writing: one
/// write and one receiver wake-up per many events instead of per event.
const LINGER: Duration = Duration::from_millis(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct TargetStats {
    pub name: String,
    pub addr: String,
    pub transport: Transport,
    pub connected: AtomicBool,
    /// Frames written to the receiver (resends included).
    pub sent: AtomicU64,
    /// Frames written to the spool.
    pub spooled: AtomicU64,
    /// Frames dropped because the spool was full (the oldest).
    pub dropped: AtomicU64,
    /// Damaged spool frames (bad checksum, broken or torn) skipped on replay.
    pub discarded: AtomicU64,
    /// Frames sent again after a broken connection (the receiver may have them twice).
    pub resent: AtomicU64,
    /// Frames in the spool now, and its size.
    pub spool_frames: AtomicU64,
    pub spool_bytes: AtomicU64,
    /// Failed connects, broken connections and send errors.
    pub errors: AtomicU64,
    /// Frames in memory: queued, being replayed, or sent and not yet confirmed.
    pub in_flight: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TargetStatus {
    pub name: String,
    pub addr: String,
    pub transport: String,
    pub connected: bool,
    pub sent: u64,
    pub spooled: u64,
    pub dropped: u64,
    #[serde(default)]
    pub discarded: u64,
    pub resent: u64,
    pub spool_frames: u64,
    pub spool_bytes: u64,
    pub errors: u64,
    #[serde(default)]
    pub in_flight: u64,
    pub last_error: Option<String>,
}

impl TargetStats {
    pub fn new(t: &LogTarget) -> Self {
        TargetStats {
            name: t.name.clone(),
            addr: format!("{}:{}", t.host, t.port),
            transport: t.transport,
            connected: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            spooled: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            resent: AtomicU64::new(0),
            spool_frames: AtomicU64::new(0),
            spool_bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub fn snapshot(&self) -> TargetStatus {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TargetStatus {
            name: self.name.clone(),
            addr: self.addr.clone(),
            transport: format!("{:?}", self.transport).to_lowercase(),
            connected: self.connected.load(Ordering::Relaxed),
            sent: l(&self.sent),
            spooled: l(&self.spooled),
            dropped: l(&self.dropped),
            discarded: l(&self.discarded),
            resent: l(&self.resent),
            spool_frames: l(&self.spool_frames),
            spool_bytes: l(&self.spool_bytes),
            errors: l(&self.errors),
            in_flight: l(&self.in_flight),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn error(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
    }

    fn note_spool(&self, s: &Spool) {
        self.spooled.store(s.spooled, Ordering::Relaxed);
        self.dropped.store(s.dropped, Ordering::Relaxed);
        self.spool_frames.store(s.len(), Ordering::Relaxed);
        self.spool_bytes.store(s.bytes(), Ordering::Relaxed);
    }
}

struct Fmt {
    format: LogFormat,
    host: String,
    pid: u32,
}

impl Fmt {
    fn frame(&self, ev: &Event) -> Vec<u8> {
        match self.format {
            LogFormat::Rfc5424 => format::rfc5424(ev, &self.host, self.pid),
            LogFormat::Rfc3164 => format::rfc3164(ev, &self.host, self.pid),
        }
        .into_bytes()
    }
}

/// Ship one target's events until the channel closes.
pub async fn run_target(
    t: LogTarget,
    st: Arc<TargetStats>,
    rx: mpsc::UnboundedReceiver<Arc<Event>>,
    spool_dir: PathBuf,
    limit: u64,
    hostname: String,
) {
    let f = Fmt {
        format: t.format,
        host: hostname,
        pid: std::process::id(),
    };
    if t.transport == Transport::Udp {
        udp(t, st, rx, f).await;
        return;
    }
    let spool = match Spool::open(&spool_dir, limit) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(target = t.name, dir = %spool_dir.display(), "cannot open the spool: {e}; events for this target are kept in memory only");
            st.error(format!("spool: {e}"));
            // a spool under the temp dir rather than none at all
            match Spool::open(
                &std::env::temp_dir()
                    .join(format!("bulkhead-spool-{}", std::process::id()))
                    .join(&t.name),
                limit,
            ) {
                Ok(s) => s,
                Err(_) => return,
            }
        }
    };
    let tls = if t.transport == Transport::Tls {
        match transport::tls_config(&t) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(target = t.name, "TLS setup failed: {e}; events are spooled");
                st.error(format!("tls: {e}"));
                None
            }
        }
    } else {
        None
    };
    let mut s = StreamShipper {
        t,
        st,
        rx,
        f,
        spool,
        queue: VecDeque::new(),
        queue_bytes: 0,
        tls,
    };
    // what an earlier run left counts as undelivered from the start
    s.st.note_spool(&s.spool);
    s.run().await;
}

async fn udp(
    t: LogTarget,
    st: Arc<TargetStats>,
    mut rx: mpsc::UnboundedReceiver<Arc<Event>>,
    f: Fmt,
) {
    let sock = loop {
        match transport::connect(&t, None).await {
            Ok(Conn::Udp(s)) => break s,
            Ok(_) => unreachable!("udp target"),
            Err(e) => {
                st.error(&e);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    st.connected.store(true, Ordering::Relaxed);
    while let Some(ev) = rx.recv().await {
        let mut m = f.frame(&ev);
        // one datagram per message; keep it within what every receiver accepts
        m.truncate(8192);
        match sock.send(&m).await {
            Ok(_) => {
                st.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                st.dropped.fetch_add(1, Ordering::Relaxed);
                st.error(e);
            }
        }
    }
}

/// How often the spool's fsync bound is checked while events are spooled.
const SYNC_TICK: Duration = Duration::from_millis(100);

struct StreamShipper {
    t: LogTarget,
    st: Arc<TargetStats>,
    rx: mpsc::UnboundedReceiver<Arc<Event>>,
    f: Fmt,
    spool: Spool,
    /// Newest events, not yet sent, in memory (behind the spool).
    queue: VecDeque<Vec<u8>>,
    queue_bytes: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
}

enum Lost {
    /// The channel closed: the daemon stops.
    Closed,
    Broken(String),
}

impl StreamShipper {
    async fn run(&mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            // not connected: events go to the spool while we try
            if self.t.transport == Transport::Tls && self.tls.is_none() {
                // the CA or client files may have been fixed since
                match transport::tls_config(&self.t) {
                    Ok(c) => self.tls = Some(c),
                    Err(e) => self.st.error(format!("tls: {e}")),
                }
            }
            let conn = {
                let tls = self.tls.clone();
                let t = self.t.clone();
                let fut = async move {
                    if t.transport == Transport::Tls && tls.is_none() {
                        return Err(std::io::Error::other("no usable TLS configuration"));
                    }
                    tokio::time::timeout(CONNECT_TIMEOUT, transport::connect(&t, tls.as_ref()))
                        .await
                        .unwrap_or_else(|_| Err(std::io::Error::other("connect timed out")))
                };
                tokio::pin!(fut);
                let mut tick = tokio::time::interval(SYNC_TICK);
                loop {
                    tokio::select! {
                        r = &mut fut => break r,
                        ev = self.rx.recv() => match ev {
                            Some(ev) => self.spool_event(&ev),
                            None => { self.persist(VecDeque::new()); return; }
                        },
                        _ = tick.tick() => self.sync_spool(),
                    }
                }
            };
            let _ = self.spool.flush();
            match conn {
                Ok(Conn::Stream(c)) => {
                    backoff = Duration::from_millis(100);
                    self.st.connected.store(true, Ordering::Relaxed);
                    tracing::info!(target = self.t.name, addr = %self.st.addr, "syslog target connected");
                    let lost = self.connected(c).await;
                    self.st.connected.store(false, Ordering::Relaxed);
                    match lost {
                        Lost::Closed => return,
                        Lost::Broken(e) => {
                            tracing::warn!(target = self.t.name, addr = %self.st.addr, "syslog target lost: {e}; spooling");
                            self.st.error(e);
                        }
                    }
                }
                Ok(Conn::Udp(_)) => unreachable!("stream target"),
                Err(e) => {
                    self.st.error(&e);
                    tracing::debug!(target = self.t.name, "connect failed: {e}");
                    // wait, still spooling what arrives
                    let sleep = tokio::time::sleep(backoff);
                    tokio::pin!(sleep);
                    let mut tick = tokio::time::interval(SYNC_TICK);
                    loop {
                        tokio::select! {
                            _ = &mut sleep => break,
                            ev = self.rx.recv() => match ev {
                                Some(ev) => self.spool_event(&ev),
                                None => { self.persist(VecDeque::new()); return; }
                            },
                            _ = tick.tick() => self.sync_spool(),
                        }
                    }
                    let _ = self.spool.flush();
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// fsync the spool when its bound is due (see [`super::spool`]).
    fn sync_spool(&mut self) {
        if let Err(e) = self.spool.maybe_sync() {
            self.st.error(format!("spool: {e}"));
        }
    }

    /// Take the oldest spool chunk for sending; damaged frames in it are counted and
    /// reported as a warning event.
    fn pop_chunk(&mut self) -> Option<(u64, VecDeque<Vec<u8>>)> {
        let r = self.spool.pop_chunk();
        if let Ok(p) = &r {
            // in flight before they leave the spool's count: never "drained" in between
            self.st
                .in_flight
                .fetch_add(p.frames.len() as u64, Ordering::Relaxed);
        }
        self.st.note_spool(&self.spool);
        let p = match r {
            Ok(p) => p,
            Err(e) => {
                self.st.error(format!("spool: {e}"));
                return None;
            }
        };
        if p.damaged > 0 {
            self.st.discarded.fetch_add(p.damaged, Ordering::Relaxed);
            let msg = match &p.error {
                None => format!(
                    "spool of log target {}: {} damaged frame(s) discarded from {} (checksum or framing broken); the frames after them are sent",
                    self.t.name, p.damaged, p.file
                ),
                Some(e) => format!(
                    "spool of log target {}: {} frame(s) lost: cannot read {}: {e}; the chunks after it are sent",
                    self.t.name, p.damaged, p.file
                ),
            };
            tracing::warn!(target: "bulkhead::logship", "{msg}");
            self.st.error(&msg);
            super::emit(
                Event::new(super::Kind::Log, super::Severity::Warning, msg)
                    .with("module", "bulkhead::logship::spool")
                    .with("target", &self.t.name)
                    .with("discarded", p.damaged)
                    .with("chunk", &p.file),
            );
        }
        Some((p.num, p.frames.into()))
    }

    fn spool_event(&mut self, ev: &Event) {
        let fr = self.f.frame(ev);
        if let Err(e) = self.spool.append([fr.as_slice()]) {
            // counted as dropped by the spool
            self.st.error(format!("spool: {e}"));
        }
        self.st.note_spool(&self.spool);
    }

    fn enqueue(&mut self, ev: &Event) {
        let fr = self.f.frame(ev);
        self.queue_bytes += fr.len();
        self.queue.push_back(fr);
        if self.queue_bytes > MAX_QUEUE_BYTES {
            self.spill_queue();
        }
    }

    fn spill_queue(&mut self) {
        let q = std::mem::take(&mut self.queue);
        self.queue_bytes = 0;
        if let Err(e) = self.spool.append(q.iter().map(|x| x.as_slice())) {
            self.st.error(format!("spool: {e}"));
        }
        self.st.note_spool(&self.spool);
    }

    /// The daemon stops, or the connection broke: what was not confirmed goes back to the
    /// front of the spool (durably, before the chunks it came from are deleted), the memory
    /// queue to its end.
    fn persist(&mut self, unsent: VecDeque<Vec<u8>>) {
        let r = self
            .spool
            .prepend(unsent.iter().map(|x| x.as_slice()))
            .and_then(|()| self.spool.release_reading());
        if let Err(e) = r {
            self.st.error(format!("spool: {e}"));
            // the chunks being sent stay on disk: send them again, whole
            if let Err(e) = self.spool.unread() {
                self.st.error(format!("spool: {e}"));
            }
        }
        self.spill_queue();
        let _ = self.spool.flush();
        self.st.note_spool(&self.spool);
        self.st.in_flight.store(0, Ordering::Relaxed);
    }

    /// A frame of spool chunk `chunk` (if it came from the spool) was delivered.
    fn confirm(&mut self, chunk: Option<u64>) {
        if let Some(n) = chunk
            && let Err(e) = self.spool.confirm(n, 1)
        {
            self.st.error(format!("spool: {e}"));
        }
    }

    async fn connected(&mut self, c: transport::StreamConn) -> Lost {
        let probe = c.probe.clone();
        let (mut rd, mut wr) = tokio::io::split(c.io);
        // (end offset in socket bytes, spool chunk it came from, frame)
        let mut unconfirmed: VecDeque<(u64, Option<u64>, Vec<u8>)> = VecDeque::new();
        // (time, acked bytes) samples
        let mut samples: VecDeque<(Instant, u64)> = VecDeque::new();
        // frames taken out of the spool (of chunk `current_chunk`), not yet sent
        let mut current: VecDeque<Vec<u8>> = VecDeque::new();
        let mut current_chunk: Option<u64> = None;
        let mut buf = Vec::with_capacity(256 << 10);
        let mut rbuf = [0u8; 512];
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut last_write = Instant::now();
        let give_back = |unconfirmed: VecDeque<(u64, Option<u64>, Vec<u8>)>,
                         current: VecDeque<Vec<u8>>| {
            let n = unconfirmed.len() as u64;
            let mut v: VecDeque<Vec<u8>> = unconfirmed.into_iter().map(|(_, _, f)| f).collect();
            v.extend(current);
            (n, v)
        };
        loop {
            self.sync_spool();
            // confirm what the peer has had for long enough
            let now = Instant::now();
            if samples
                .back()
                .is_none_or(|(t, _)| now.duration_since(*t) >= Duration::from_millis(20))
            {
                samples.push_back((now, probe.acked()));
            }
            // the newest sample at least HOLD old says what is safe
            while samples.len() >= 2 && now.duration_since(samples[1].0) >= HOLD {
                samples.pop_front();
            }
            if let Some(&(t, a)) = samples.front()
                && now.duration_since(t) >= HOLD
            {
                while unconfirmed.front().is_some_and(|(end, _, _)| *end <= a) {
                    let (_, chunk, _) = unconfirmed.pop_front().expect("front");
                    self.confirm(chunk);
                }
            }
            while unconfirmed.len() > MAX_UNCONFIRMED {
                let (_, chunk, _) = unconfirmed.pop_front().expect("front");
                self.confirm(chunk);
            }
            self.st.in_flight.store(
                (unconfirmed.len() + current.len() + self.queue.len()) as u64,
                Ordering::Relaxed,
            );
            // take new events without waiting
            loop {
                match self.rx.try_recv() {
                    Ok(ev) => self.enqueue(&ev),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        let (_, v) = give_back(unconfirmed, current);
                        self.persist(v);
                        return Lost::Closed;
                    }
                }
            }
            // the next batch: the spool's frames first, then the memory queue
            if current.is_empty()
                && !self.spool.is_empty()
                && let Some((num, frames)) = self.pop_chunk()
            {
                current = frames;
                current_chunk = Some(num);
            }
            let mut batch: Vec<Vec<u8>> = Vec::new();
            buf.clear();
            let from_spool = !current.is_empty();
            let chunk = if from_spool { current_chunk } else { None };
            while batch.len() < BATCH && buf.len() < (256 << 10) {
                let next = if from_spool {
                    current.pop_front()
                } else {
                    self.queue
                        .pop_front()
                        .inspect(|f| self.queue_bytes -= f.len())
                };
                let Some(fr) = next else { break };
                format::octet_counted_bytes(&fr, &mut buf);
                batch.push(fr);
            }
            if batch.is_empty() {
                tokio::select! {
                    ev = self.rx.recv() => match ev {
                        Some(ev) => {
                            self.enqueue(&ev);
                            if last_write.elapsed() < 2 * LINGER {
                                tokio::time::sleep(LINGER).await;
                            }
                        }
                        None => {
                            let (_, v) = give_back(unconfirmed, current);
                            self.persist(v);
                            return Lost::Closed;
                        }
                    },
                    r = rd.read(&mut rbuf) => {
                        let e = match r {
                            Ok(0) => "closed by the receiver".to_string(),
                            Ok(_) => continue,
                            Err(e) => e.to_string(),
                        };
                        let (n, v) = give_back(unconfirmed, current);
                        self.st.resent.fetch_add(n, Ordering::Relaxed);
                        self.persist(v);
                        return Lost::Broken(e);
                    }
                    _ = tick.tick() => {}
                }
                continue;
            }
            let w = async {
                wr.write_all(&buf).await?;
                wr.flush().await
            };
            let r = tokio::time::timeout(WRITE_TIMEOUT, w)
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("write timed out")));
            last_write = Instant::now();
            let end = probe.written.load(Ordering::Relaxed);
            let n = batch.len() as u64;
            for fr in batch {
                unconfirmed.push_back((end, chunk, fr));
            }
            if let Err(e) = r {
                let (n, v) = give_back(unconfirmed, current);
                self.st.resent.fetch_add(n, Ordering::Relaxed);
                self.persist(v);
                return Lost::Broken(e.to_string());
            }
            self.st.sent.fetch_add(n, Ordering::Relaxed);
        }
    }
}
