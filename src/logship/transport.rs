//! Connections to a syslog receiver: UDP (one message per datagram), TCP with RFC 6587
//! octet counting, and TLS (RFC 5425: octet counting over TLS) with rustls.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UdpSocket};

use crate::model::{LogTarget, Transport};

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("reading {path}: {err}")]
    Read { path: String, err: String },
    #[error("{path}: no certificate found")]
    NoCert { path: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

fn read_err(p: &Path, e: impl std::fmt::Display) -> TlsSetupError {
    TlsSetupError::Read {
        path: p.display().to_string(),
        err: e.to_string(),
    }
}

/// The rustls client config of a TLS target: its CA file, and the client certificate when
/// the target has one.
pub fn tls_config(t: &LogTarget) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &t.ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .map_err(|e| read_err(ca, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| read_err(ca, e))?;
        if certs.is_empty() {
            return Err(TlsSetupError::NoCert {
                path: ca.display().to_string(),
            });
        }
        for c in certs {
            roots.add(c)?;
        }
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let cfg = match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| read_err(cert, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| read_err(cert, e))?;
            let k = PrivateKeyDer::from_pem_file(key).map_err(|e| read_err(key, e))?;
            b.with_client_auth_cert(chain, k)?
        }
        _ => b.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// A stream that counts the bytes written to the socket under it.
pub struct Counted<S> {
    inner: S,
    written: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A stream connection (TCP or TLS) and what is needed to know what the peer received.
pub struct StreamConn {
    pub io: Box<dyn Stream>,
    pub probe: Probe,
}

/// Reads how far the peer's TCP has acknowledged a connection.
#[derive(Clone)]
pub struct Probe {
    /// Bytes handed to the kernel's socket so far.
    pub written: Arc<AtomicU64>,
    fd: RawFd,
}

impl Probe {
    /// Bytes the peer's TCP has acknowledged so far (written minus the send queue).
    pub fn acked(&self) -> u64 {
        // the fd lives as long as self.io
        let outq = crate::sys::socket::send_queue_len(self.fd);
        let w = self.written.load(Ordering::Relaxed);
        let Ok(outq) = outq else {
            return 0;
        };
        w.saturating_sub(outq)
    }
}

pub enum Conn {
    Udp(UdpSocket),
    Stream(StreamConn),
}

/// Connect to a target (for UDP: a connected socket).
pub async fn connect(t: &LogTarget, tls: Option<&Arc<rustls::ClientConfig>>) -> io::Result<Conn> {
    let addr = SocketAddr::from((t.host, t.port));
    match t.transport {
        Transport::Udp => {
            let s = UdpSocket::bind(("0.0.0.0", 0)).await?;
            s.connect(addr).await?;
            Ok(Conn::Udp(s))
        }
        Transport::Tcp | Transport::Tls => {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let fd = tcp.as_raw_fd();
            let written = Arc::new(AtomicU64::new(0));
            let counted = Counted {
                inner: tcp,
                written: written.clone(),
            };
            let io: Box<dyn Stream> = if t.transport == Transport::Tls {
                let cfg = tls.ok_or_else(|| io::Error::other("no TLS configuration"))?;
                let name =
                    rustls_pki_types::ServerName::IpAddress(std::net::IpAddr::V4(t.host).into());
                let c = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, counted)
                    .await?;
                Box::new(c)
            } else {
                Box::new(counted)
            };
            Ok(Conn::Stream(StreamConn {
                io,
                probe: Probe { written, fd },
            }))
        }
    }
}
