//! The API's listener: HTTPS only, bound to the management segment's gateway address (never
//! 0.0.0.0), moved when that address or `api_port` changes.
//!
//! Bounds, so a flood or a slow client costs a fixed amount of memory and the rest of the
//! daemon (DHCP, the engine) keeps working:
//! - at most [`MAX_CONNECTIONS`] connections at once; more are closed at once;
//! - the TLS handshake within [`HANDSHAKE_TIMEOUT`], each request's head within
//!   [`HEADER_TIMEOUT`] (also between requests of a kept-alive connection), a body within
//!   [`BODY_TIMEOUT`]: a slow client is dropped;
//! - request heads up to 16 KiB, bodies up to [`MAX_BODY`] (larger: 413).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::routes::AppState;
use super::{Conf, ModelRx};

pub const MAX_CONNECTIONS: usize = 64;
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_BODY: usize = 1024 * 1024;
const MAX_HEAD: usize = 16 * 1024;
/// How long a listener that could not start waits before trying again.
pub const RETRY: Duration = Duration::from_secs(5);

/// The generated certificate and key, in the state directory.
pub fn cert_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    let d = state_dir.join("api");
    (d.join("cert.pem"), d.join("key.pem"))
}

/// SHA-256 of a certificate, as `AB:CD:...`.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The certificate chain and key: the operator's files, or the generated ones (made now when
/// missing). Errors name the file.
fn load_or_make(
    conf: &Conf,
    state_dir: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, bool), String> {
    let (cert, key, own) = match (&conf.cert, &conf.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), true),
        _ => {
            let (c, k) = cert_paths(state_dir);
            (c, k, false)
        }
    };
    let mut made = false;
    let have = cert.exists() && key.exists();
    if !own && !have {
        let names = vec![conf.addr.to_string(), conf.hostname.clone()];
        let ck = rcgen::generate_simple_self_signed(names)
            .map_err(|e| format!("generating the API certificate: {e}"))?;
        crate::sys::fs::write_atomic(&key, ck.signing_key.serialize_pem().as_bytes(), 0o600)
            .map_err(|e| format!("{}: {e}", key.display()))?;
        crate::sys::fs::write_atomic(&cert, ck.cert.pem().as_bytes(), 0o644)
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        made = true;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let k = PrivateKeyDer::from_pem_file(&key).map_err(|e| format!("{}: {e}", key.display()))?;
    Ok((certs, k, made))
}

fn tls_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the API certificate and key: {e}"))?;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(c)
}

/// Follow the model: listen where it says, stop when `api_port` goes away. A listener that
/// cannot start (the address not there yet, an unreadable certificate) is tried again every
/// [`RETRY`], its error logged once until it changes.
pub async fn run(mut rx: ModelRx, st: Arc<AppState>) {
    let mut last_error: Option<String> = None;
    loop {
        let conf = rx.borrow_and_update().clone();
        let mut retry = false;
        match conf {
            None => super::set_status(None),
            Some(conf) => match start(&conf, &st).await {
                Ok(listener) => {
                    last_error = None;
                    tokio::select! {
                        () = serve(listener, st.clone()) => {}
                        r = rx.changed() => if r.is_err() { return },
                    }
                    continue;
                }
                Err(e) => {
                    if last_error.as_ref() != Some(&e) {
                        tracing::error!(
                            "the management API does not run: {e}; trying again every {} s",
                            RETRY.as_secs()
                        );
                        last_error = Some(e.clone());
                    }
                    super::set_status(Some(serde_json::json!({"error": e})));
                    retry = true;
                }
            },
        }
        if retry {
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                () = tokio::time::sleep(RETRY) => {}
            }
        } else if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn start(
    conf: &Conf,
    st: &Arc<AppState>,
) -> Result<(TcpListener, tokio_rustls::TlsAcceptor), String> {
    let (certs, key, made) = load_or_make(conf, &st.state_dir)?;
    let fp = fingerprint(&certs[0]);
    let tls = tls_config(certs, key)?;
    let addr = SocketAddr::from((conf.addr, conf.port));
    let l = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("listening on {addr}: {e}"))?;
    let url = format!("https://{addr}");
    // stderr: the daemon's main thread holds stdout's lock while it runs
    eprintln!(
        "bulkhead: management API on {url}, certificate SHA-256 {fp}{}",
        if made { " (generated now)" } else { "" }
    );
    tracing::info!(url, fingerprint = fp, "management API listening");
    super::set_status(Some(serde_json::json!({
        "url": url,
        "fingerprint_sha256": fp,
        "certificate": match &conf.cert { Some(c) => c.display().to_string(), None => cert_paths(&st.state_dir).0.display().to_string() },
    })));
    Ok((l, tokio_rustls::TlsAcceptor::from(Arc::new(tls))))
}

async fn serve((listener, acceptor): (TcpListener, tokio_rustls::TlsAcceptor), st: Arc<AppState>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let router = super::routes::router(st.clone());
    let mut backoff = Duration::from_millis(100);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => {
                backoff = Duration::from_millis(100);
                x
            }
            Err(e) => {
                tracing::warn!("management API: accepting a connection failed: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // full: closed at once, nothing kept for it
            st.refused_full();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(Ok(tls)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
            else {
                return;
            };
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    let mut r = router.clone();
                    async move { tower::Service::call(&mut r, req).await }
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD.max(8192))
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}
