//! The HTTPS management API (`[management] api_port`): JSON endpoints under `/api/v1/` that
//! run the same operations as the control socket (through the daemon's engine, so
//! commit-confirm and the anti-lockout checks hold the same way), `GET /metrics`, and the
//! tokens that guard them (`auth`).
//!
//! - `server`: TLS (rustls) on the management segment's gateway address only, the certificate
//!   (generated in the state directory on first start, or the operator's `api_cert`/`api_key`),
//!   and the bounds: connections, handshake/header/body timeouts, body size.
//! - `routes`: the endpoints; `openapi.json` describes them.

pub mod auth;
pub mod routes;
pub mod server;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::watch;

/// Where and how the API listens, from the running model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conf {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub hostname: String,
}

impl Conf {
    pub fn of(m: &crate::model::Model) -> Option<Conf> {
        let port = m.management.api_port?;
        let mg = m.segments.iter().find(|s| s.management)?;
        Some(Conf {
            addr: mg.gateway,
            port,
            cert: m.management.api_cert.clone(),
            key: m.management.api_key.clone(),
            hostname: m.hostname.clone(),
        })
    }
}

/// The engine's side: it tells the API the model after each job (the listener moves when the
/// management address or the port changes).
pub struct ModelTx(watch::Sender<Option<Conf>>);

impl ModelTx {
    pub fn update(&self, m: &crate::model::Model) {
        let c = Conf::of(m);
        self.0.send_if_modified(|old| {
            if *old != c {
                *old = c;
                true
            } else {
                false
            }
        });
    }
}

pub type ModelRx = watch::Receiver<Option<Conf>>;

pub fn channel() -> (ModelTx, ModelRx) {
    let (tx, rx) = watch::channel(None);
    (ModelTx(tx), rx)
}

/// What `bulkhead status` shows of the API: where it listens and the certificate's
/// fingerprint (or why it does not run).
static STATUS: Mutex<Option<serde_json::Value>> = Mutex::new(None);

pub fn status() -> Option<serde_json::Value> {
    STATUS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn set_status(v: Option<serde_json::Value>) {
    *STATUS.lock().unwrap_or_else(|e| e.into_inner()) = v;
}

/// Serve the API while the model asks for it (inside the daemon's runtime).
pub fn spawn(
    rx: ModelRx,
    state_dir: &Path,
    config: &Path,
    submit: crate::supervisor::Submit,
    lab: Option<crate::model::LabMode>,
) {
    let st = routes::AppState::new(state_dir.to_path_buf(), config.to_path_buf(), submit, lab);
    tokio::spawn(server::run(rx, st));
}
