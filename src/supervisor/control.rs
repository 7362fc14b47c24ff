//! The daemon's side of the control socket (`STATE_DIR/control.sock`; the protocol is
//! `crate::control`). What it guarantees:
//!
//! - the socket is mode 0600 from the moment its name exists (bound in a private 0700
//!   directory, then renamed into place), whatever the umask;
//! - only uid 0 and the daemon's own uid are served (SO_PEERCRED); anyone else gets one error
//!   line, the connection is closed and a warning event records it;
//! - a request line is at most `MAX_LINE` bytes, and must arrive within [`REQUEST_TIMEOUT`];
//! - at most [`MAX_CONNECTIONS`] connections are served at once (`logs --follow` streams
//!   count). When all are taken, a new connection takes the place of the one that has waited
//!   longest for a request; when none waits (all busy or following), it is answered with an
//!   error and closed;
//! - a failing accept (EMFILE, ENFILE...) backs off from 100 ms to 1 s, logged once per burst.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;

use crate::control::{Line, LineReader, MAX_LINE};
pub use crate::control::{Request, Response, SOCKET, call, socket_path};

use super::Job;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a connection may take to send a request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long writing one response may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Accept errors this far apart are two bursts (each logged).
const QUIET_AFTER_BURST: Duration = Duration::from_secs(10);

/// Open the control socket in `state_dir` and serve it until the runtime stops.
pub(super) fn spawn(state_dir: &Path, jobs: std::sync::mpsc::Sender<Job>) {
    let path = socket_path(state_dir);
    match bind(&path) {
        Ok(l) => {
            tokio::spawn(serve(l, jobs));
        }
        Err(e) => {
            tracing::error!(path = %path.display(), "cannot open the control socket: {e}");
        }
    }
}

/// Bind the socket without a moment at umask permissions: in a fresh 0700 directory beside
/// it, chmod 0600, then rename over `path` (which also replaces a stale socket atomically).
fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(".control.{}", std::process::id()));
    // a leftover of an earlier daemon that had the same pid
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::DirBuilder::new().mode(0o700).create(&tmp)?;
    let r = (|| {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))?;
        let p = tmp.join(SOCKET);
        let l = std::os::unix::net::UnixListener::bind(&p)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&p, path)?;
        l.set_nonblocking(true)?;
        UnixListener::from_std(l)
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    r
}

/// A local user for the audit trail: `uid N (NAME)`, the name from /etc/passwd when it has one.
pub fn local_user(uid: u32) -> String {
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines().find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            (f.nth(1)? == uid.to_string()).then(|| name.to_string())
        })
    });
    match name {
        Some(n) => format!("uid {uid} ({n})"),
        None => format!("uid {uid}"),
    }
}

/// Who may use the socket: root and the daemon's own user.
fn allowed(uid: u32) -> bool {
    uid == 0 || uid == crate::sys::proc::euid()
}

/// At most one warning a second about the same thing; the ones left out are counted in the
/// next.
struct Quiet {
    last: Option<Instant>,
    left_out: u64,
}

impl Quiet {
    fn new() -> Self {
        Quiet {
            last: None,
            left_out: 0,
        }
    }

    /// `Some(left out since the last one)` when a warning may be logged now.
    fn may_log(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now - t < Duration::from_secs(1)) {
            self.left_out += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.left_out))
    }
}

async fn serve(listener: UnixListener, jobs: std::sync::mpsc::Sender<Job>) {
    let slots = Slots::new(MAX_CONNECTIONS);
    let mut backoff = BACKOFF_MIN;
    // a burst of accept failures: how many, and when the last one was
    let (mut failures, mut last_failure) = (0u64, Instant::now());
    let mut refused = Quiet::new();
    let mut full = Quiet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => {
                backoff = BACKOFF_MIN;
                // the burst is over once accepting has worked for a while
                if failures > 0 && last_failure.elapsed() >= BACKOFF_MAX {
                    tracing::info!(failures, "control socket: accepting connections again");
                    failures = 0;
                }
                s
            }
            Err(e) => {
                // EMFILE/ENFILE leave the connection queued: retrying at once would spin
                if failures > 0 && last_failure.elapsed() >= QUIET_AFTER_BURST {
                    failures = 0;
                }
                if failures == 0 {
                    tracing::warn!(
                        "control socket: accepting a connection failed: {e}; retrying in {} ms, backing off up to {} ms",
                        backoff.as_millis(),
                        BACKOFF_MAX.as_millis()
                    );
                }
                failures += 1;
                tokio::time::sleep(backoff).await;
                last_failure = Instant::now();
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("control socket: refused a connection: its peer is unknown: {e}");
                refuse(stream, "refused: the peer's credentials are unknown");
                continue;
            }
        };
        if !allowed(cred.uid()) {
            if let Some(left_out) = refused.may_log() {
                tracing::warn!(
                    uid = cred.uid(),
                    gid = cred.gid(),
                    pid = cred.pid().unwrap_or(0),
                    refused_before_unlogged = left_out,
                    "control socket: refused a connection from uid {}: only root and the daemon's user may use it",
                    cred.uid()
                );
            }
            refuse(
                stream,
                &format!(
                    "refused: uid {} may not use the control socket (root and the daemon's user only)",
                    cred.uid()
                ),
            );
            continue;
        }
        let Some((slot, waiting)) = slots.take() else {
            if let Some(left_out) = full.may_log() {
                tracing::warn!(
                    refused_before_unlogged = left_out,
                    "control socket: {MAX_CONNECTIONS} connections busy: refused one"
                );
            }
            refuse(
                stream,
                &format!(
                    "too many connections: {MAX_CONNECTIONS} are being served; try again later"
                ),
            );
            continue;
        };
        let who = super::Who {
            name: local_user(cred.uid()),
            via: "control-socket",
        };
        tokio::spawn(connection(stream, slot, waiting, jobs.clone(), who));
    }
}

/// Answer a connection that is not served with one error line, without waiting for it.
fn refuse(stream: tokio::net::UnixStream, why: &str) {
    use std::io::Write;
    // a fresh socket's send buffer is empty: this write does not block
    if let Ok(s) = stream.into_std() {
        let _ = (&s).write(Response::err(why).line().as_bytes());
    }
}

/// The connections being served; those waiting for a request can be made to give up their
/// place.
struct Slots {
    cap: usize,
    inner: Mutex<SlotsInner>,
}

struct SlotsInner {
    used: usize,
    next: u64,
    /// Connections waiting for a request, the longest waiting first.
    waiting: BTreeMap<u64, oneshot::Sender<()>>,
}

struct Slot(Arc<Slots>);

impl Slots {
    fn new(cap: usize) -> Arc<Self> {
        Arc::new(Slots {
            cap,
            inner: Mutex::new(SlotsInner {
                used: 0,
                next: 0,
                waiting: BTreeMap::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotsInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection: a free one, or the one of the connection that has waited
    /// longest for a request (told to close). `None` when every connection is busy. The new
    /// connection starts out waiting for its request.
    fn take(self: &Arc<Self>) -> Option<(Slot, Waiting)> {
        let mut g = self.lock();
        if g.used >= self.cap {
            loop {
                let (_, evict) = g.waiting.pop_first()?;
                if evict.send(()).is_ok() {
                    break;
                }
            }
        }
        g.used += 1;
        let w = Self::wait(&mut g);
        Some((Slot(self.clone()), w))
    }

    fn wait(g: &mut SlotsInner) -> Waiting {
        let (tx, rx) = oneshot::channel();
        let id = g.next;
        g.next += 1;
        g.waiting.insert(id, tx);
        (id, rx)
    }
}

/// A connection waiting for a request: its id, and what fires when it must give its place.
type Waiting = (u64, oneshot::Receiver<()>);

impl Slot {
    /// This connection waits for a request (again).
    fn waiting(&self) -> Waiting {
        Slots::wait(&mut self.0.lock())
    }

    fn busy(&self, id: u64) {
        self.0.lock().waiting.remove(&id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.lock().used -= 1;
    }
}

async fn reply(w: &mut OwnedWriteHalf, resp: &Response) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, w.write_all(resp.line().as_bytes())).await,
        Ok(Ok(()))
    )
}

/// Serve one connection: request lines until it closes, errs, idles or must give its place.
async fn connection(
    stream: tokio::net::UnixStream,
    slot: Slot,
    waiting: Waiting,
    jobs: std::sync::mpsc::Sender<Job>,
    who: super::Who,
) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut lines = LineReader::new(MAX_LINE);
    let mut next = Some(waiting);
    loop {
        let (id, evicted) = next.take().unwrap_or_else(|| slot.waiting());
        let got = tokio::select! {
            got = tokio::time::timeout(REQUEST_TIMEOUT, crate::control::read_line(&mut r, &mut lines)) => got,
            Ok(()) = evicted => {
                let why = format!("closed: {MAX_CONNECTIONS} connections are open and this one was idle");
                reply(&mut w, &Response::err(why)).await;
                return;
            }
        };
        slot.busy(id);
        let line = match got {
            Err(_) => {
                let why = format!(
                    "closed: no request line within {} s",
                    REQUEST_TIMEOUT.as_secs()
                );
                reply(&mut w, &Response::err(why)).await;
                return;
            }
            Ok(Err(_) | Ok(None)) => return,
            Ok(Ok(Some(Line::TooLong))) => {
                let why =
                    format!("request line longer than {MAX_LINE} bytes: closing the connection");
                reply(&mut w, &Response::err(why)).await;
                return;
            }
            Ok(Ok(Some(Line::Complete(l)))) => l,
        };
        let req = match crate::control::parse_request(&line) {
            Ok(req) => req,
            Err(e) => {
                if !reply(&mut w, &Response::err(e)).await {
                    return;
                }
                continue;
            }
        };
        if let Request::Logs { follow } = req {
            // a follower stays until it goes away: watch its side too, or a closed one would
            // keep its place until the next event
            let done = if follow {
                tokio::select! {
                    _ = crate::logship::serve_logs(&mut w, true) => true,
                    () = closed(&mut r) => true,
                }
            } else {
                // the recent events, written within the time any response has
                let sent =
                    tokio::time::timeout(WRITE_TIMEOUT, crate::logship::serve_logs(&mut w, false));
                !matches!(sent.await, Ok(Ok(())))
            };
            if done {
                return;
            }
            continue;
        }
        let (otx, orx) = oneshot::channel();
        let resp = if jobs.send(Job::Client(req, who.clone(), otx)).is_err() {
            Response::err("the daemon is stopping")
        } else {
            orx.await
                .unwrap_or_else(|_| Response::err("the daemon is stopping"))
        };
        if !reply(&mut w, &resp).await {
            return;
        }
    }
}

/// Returns when the client closes its side (what it sends meanwhile is ignored).
async fn closed(r: &mut BufReader<OwnedReadHalf>) {
    loop {
        match r.fill_buf().await {
            Ok([]) | Err(_) => return,
            Ok(b) => {
                let n = b.len();
                r.consume(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_takes_the_place_of_the_longest_waiting() {
        let s = Slots::new(2);
        let (a, (_, mut a_evicted)) = s.take().unwrap();
        let (b, (bid, mut b_evicted)) = s.take().unwrap();
        b.busy(bid);
        let (c, (cid, _)) = s.take().expect("a waits: it gives its place");
        assert!(a_evicted.try_recv().is_ok());
        assert!(b_evicted.try_recv().is_err());
        drop(a);
        // b and c are busy: no place
        c.busy(cid);
        assert!(s.take().is_none());
        drop(c);
        assert!(s.take().is_some());
        drop(b);
        assert_eq!(s.lock().used, 0);
    }
}
