//! `bulkhead --remote https://ADDR:PORT --token T COMMAND`: the CLI against a gateway's
//! management API. A small HTTP/1.1 client over rustls: the gateway's certificate is trusted
//! by its SHA-256 fingerprint (`--fingerprint`, shown by `bulkhead status` on the gateway);
//! without one the connection stops at the handshake and the error shows the fingerprint to
//! compare.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

use super::{CliError, Command, Format, Global, SetCommand, parse_addrs, print_data};

/// Trusts exactly the certificate with the pinned fingerprint.
#[derive(Debug)]
struct Pin {
    want: Option<String>,
    seen: Arc<Mutex<Option<String>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

fn normalize(fp: &str) -> String {
    fp.trim()
        .trim_start_matches("SHA256:")
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

impl ServerCertVerifier for Pin {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = crate::api::server::fingerprint(end_entity);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(fp.clone());
        match &self.want {
            Some(w) if normalize(w) == normalize(&fp) => Ok(ServerCertVerified::assertion()),
            _ => Err(rustls::Error::General("certificate not trusted".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

struct Remote {
    host: String,
    port: u16,
    token: String,
    fingerprint: Option<String>,
}

type Stream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// An answer: status, and the body to read.
struct Answer {
    status: u16,
    body: Box<dyn BufRead>,
}

impl Answer {
    fn json(mut self) -> Result<(u16, Value), CliError> {
        let mut b = Vec::new();
        self.body
            .read_to_end(&mut b)
            .map_err(|e| CliError::Daemon(format!("reading the answer: {e}")))?;
        let v = serde_json::from_slice(&b).map_err(|e| {
            CliError::Daemon(format!(
                "the answer (HTTP {}) is not JSON: {e}: {}",
                self.status,
                String::from_utf8_lossy(&b[..b.len().min(200)])
            ))
        })?;
        Ok((self.status, v))
    }
}

fn parse_url(url: &str) -> Result<(String, u16), CliError> {
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        CliError::Usage(format!(
            "--remote {url}: give https://ADDR:PORT (the API is HTTPS only)"
        ))
    })?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse::<u16>()
                .map_err(|_| CliError::Usage(format!("--remote {url}: `{p}` is not a port")))?,
        ),
        None => (hostport.to_string(), 443),
    };
    if host.is_empty() {
        return Err(CliError::Usage(format!("--remote {url}: no address")));
    }
    Ok((host, port))
}

impl Remote {
    fn connect(&self, timeout: Option<Duration>) -> Result<Stream, CliError> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| CliError::Usage(format!("{}: no address", self.host)))?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| CliError::Daemon(format!("connecting to {addr}: {e}")))?;
        tcp.set_read_timeout(timeout)?;
        tcp.set_write_timeout(Some(Duration::from_secs(60)))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let seen = Arc::new(Mutex::new(None));
        let pin = Pin {
            want: self.fingerprint.clone(),
            seen: seen.clone(),
            provider: provider.clone(),
        };
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| CliError::Daemon(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(pin))
            .with_no_client_auth();
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| CliError::Usage(format!("{}: {e}", self.host)))?;
        let conn = rustls::ClientConnection::new(Arc::new(cfg), name)
            .map_err(|e| CliError::Daemon(e.to_string()))?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            if let Err(e) = s.conn.complete_io(&mut s.sock) {
                let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
                return Err(CliError::Daemon(match (seen, &self.fingerprint) {
                    (Some(fp), None) => format!(
                        "{addr}: the gateway's API certificate has the SHA-256 fingerprint {fp}; compare it with `bulkhead status` on the gateway's console and pass it as --fingerprint"
                    ),
                    (Some(fp), Some(want)) => format!(
                        "{addr}: the gateway's API certificate has the SHA-256 fingerprint {fp}, not the trusted {want}: refusing it"
                    ),
                    (None, _) => format!("{addr}: TLS handshake: {e}"),
                }));
            }
        }
        Ok(s)
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
        timeout: Option<Duration>,
    ) -> Result<Answer, CliError> {
        let mut s = self.connect(timeout)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nAuthorization: Bearer {}\r\nAccept: application/json\r\nConnection: close\r\n",
            self.host, self.port, self.token
        );
        if let Some((ct, b)) = body {
            head.push_str(&format!(
                "Content-Type: {ct}\r\nContent-Length: {}\r\n",
                b.len()
            ));
        } else if method != "GET" {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        if let Some((_, b)) = body {
            s.write_all(b)?;
        }
        s.flush()?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| CliError::Daemon(format!("a bad answer: `{}`", line.trim())))?;
        let (mut len, mut chunked) = (None, false);
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                break;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    len = v.parse::<u64>().ok();
                } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
            }
        }
        let body: Box<dyn BufRead> = if chunked {
            Box::new(BufReader::new(Chunked {
                r,
                left: 0,
                done: false,
            }))
        } else if let Some(n) = len {
            Box::new(BufReader::new(r.take(n)))
        } else {
            Box::new(r)
        };
        Ok(Answer { status, body })
    }

    fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Value, CliError> {
        let (status, v) = self
            .request(method, path, body, Some(Duration::from_secs(150)))?
            .json()?;
        if status / 100 == 2 {
            return Ok(v);
        }
        Err(CliError::Daemon(format!(
            "HTTP {status}: {}",
            v["error"].as_str().unwrap_or("(no message)")
        )))
    }
}

/// A `Transfer-Encoding: chunked` body.
struct Chunked<R> {
    r: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut l = String::new();
            if self.r.read_line(&mut l)? == 0 {
                self.done = true;
                return Ok(0);
            }
            if l.trim().is_empty() {
                // the end of the previous chunk
                l.clear();
                if self.r.read_line(&mut l)? == 0 {
                    self.done = true;
                    return Ok(0);
                }
            }
            let size = l.trim().split(';').next().unwrap_or("0");
            self.left = usize::from_str_radix(size, 16).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "a bad chunk size")
            })?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let n = buf.len().min(self.left);
        let got = self.r.read(&mut buf[..n])?;
        if got == 0 {
            self.done = true;
        }
        self.left -= got;
        Ok(got)
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Print a check's findings as `bulkhead check` does: true when there were errors.
fn print_diagnostics(v: &Value) -> bool {
    let mut errors = false;
    for d in v["diagnostics"].as_array().into_iter().flatten() {
        eprintln!("{}", d["text"].as_str().unwrap_or_default());
        errors |= d["severity"] == "error";
    }
    errors
}

pub fn run(g: &Global, url: &str, command: Command) -> Result<ExitCode, CliError> {
    let (host, port) = parse_url(url)?;
    let token = g.token.clone().ok_or_else(|| {
        CliError::Usage("--remote needs --token (or BULKHEAD_TOKEN): `bulkhead api-token add NAME` on the gateway makes one".into())
    })?;
    let r = Remote {
        host,
        port,
        token,
        fingerprint: g.fingerprint.clone(),
    };
    let config_text = || {
        std::fs::read(&g.config)
            .map_err(|e| CliError::Usage(format!("{}: {e}", g.config.display())))
    };
    let data =
        match &command {
            Command::Status { .. } => r.json("GET", "/api/v1/status", None)?,
            Command::Leases { segment, .. } => {
                let q = segment
                    .as_ref()
                    .map_or(String::new(), |s| format!("?segment={}", enc(s)));
                r.json("GET", &format!("/api/v1/leases{q}"), None)?
            }
            Command::Diff => r.json("GET", "/api/v1/diff", None)?,
            Command::Confirm => r.json("POST", "/api/v1/confirm", None)?,
            Command::Rollback => r.json("POST", "/api/v1/rollback", None)?,
            Command::Set { command } => {
                let (method, group, addrs) = match command {
                    SetCommand::Add { group, addrs } => ("POST", group, Some(addrs)),
                    SetCommand::Del { group, addrs } => ("DELETE", group, Some(addrs)),
                    SetCommand::List { group } => ("GET", group, None),
                };
                let path = format!("/api/v1/sets/{}", enc(group));
                let body =
                    match addrs {
                        Some(a) => {
                            let nets = parse_addrs(a)?;
                            Some(serde_json::to_vec(&serde_json::json!({
                        "members": nets.iter().map(|n| n.to_string()).collect::<Vec<_>>()
                    })).expect("serializes"))
                        }
                        None => None,
                    };
                let v = r.json(
                    method,
                    &path,
                    body.as_deref().map(|b| ("application/json", b)),
                )?;
                v["members"].clone()
            }
            Command::Check => {
                let text = config_text()?;
                let v = r.json(
                    "POST",
                    "/api/v1/config/check",
                    Some(("application/toml", &text)),
                )?;
                let errors = print_diagnostics(&v);
                if errors || v["ok"] != true {
                    eprintln!("{}", v["error"].as_str().unwrap_or("errors"));
                    return Ok(ExitCode::from(2));
                }
                println!(
                    "{}: {}",
                    g.config.display(),
                    v["summary"].as_str().unwrap_or("ok")
                );
                return Ok(ExitCode::SUCCESS);
            }
            Command::Apply { confirm_within, .. } => {
                let text = config_text()?;
                let q = match confirm_within {
                    Some(s) => {
                        let secs = crate::model::addr::parse_duration(s)
                            .map_err(|e| CliError::Usage(format!("--confirm-within: {e}")))?;
                        format!("?confirm_within={secs}")
                    }
                    None => String::new(),
                };
                let (status, v) = r
                    .request(
                        "POST",
                        &format!("/api/v1/apply{q}"),
                        Some(("application/toml", &text)),
                        Some(Duration::from_secs(150)),
                    )?
                    .json()?;
                if status / 100 != 2 {
                    if print_diagnostics(&v) {
                        eprintln!("{}", v["error"].as_str().unwrap_or_default());
                        return Ok(ExitCode::from(2));
                    }
                    return Err(CliError::Daemon(format!(
                        "HTTP {status}: {}",
                        v["error"].as_str().unwrap_or("(no message)")
                    )));
                }
                v
            }
            Command::Logs { follow, format } => return logs(&r, *follow, *format),
            _ => {
                return Err(CliError::Usage(
                "with --remote: status, leases, logs, check, apply, confirm, rollback, diff or set"
                    .into(),
            ));
            }
        };
    let confirm = match &command {
        Command::Apply {
            confirm_within: Some(s),
            ..
        } => crate::model::addr::parse_duration(s).ok(),
        _ => None,
    };
    print_data(command, data, confirm)
}

fn print_event(
    out: &mut impl Write,
    ev: &crate::logship::Event,
    format: Format,
) -> std::io::Result<()> {
    match format {
        Format::Json => writeln!(out, "{}", crate::logship::json_line(ev)),
        Format::Text => writeln!(out, "{}", crate::logship::text_line(ev)),
    }
}

fn logs(r: &Remote, follow: bool, format: Format) -> Result<ExitCode, CliError> {
    let mut out = std::io::stdout().lock();
    if !follow {
        let v = r.json("GET", "/api/v1/events", None)?;
        let evs: Vec<crate::logship::Event> =
            serde_json::from_value(v).map_err(|e| CliError::Daemon(e.to_string()))?;
        for ev in &evs {
            print_event(&mut out, ev, format)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let a = r.request("GET", "/api/v1/events?follow=1", None, None)?;
    if a.status / 100 != 2 {
        let (status, v) = a.json()?;
        return Err(CliError::Daemon(format!(
            "HTTP {status}: {}",
            v["error"].as_str().unwrap_or("(no message)")
        )));
    }
    // server-sent events: the JSON of each event on its `data:` line
    for line in a.body.lines() {
        let line = line.map_err(|e| CliError::Daemon(format!("the event stream: {e}")))?;
        if let Some(d) = line.strip_prefix("data:") {
            let ev: crate::logship::Event = serde_json::from_str(d.trim())
                .map_err(|e| CliError::Daemon(format!("a bad event: {e}")))?;
            print_event(&mut out, &ev, format)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
