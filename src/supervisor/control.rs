//! The control socket: one JSON request per line, one JSON response per line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub const SOCKET: &str = "control.sock";

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Status,
    /// Apply the config file the daemon runs (re-read), or `config` when given; with `save`,
    /// what was applied is saved there once confirmed and becomes the daemon's config file.
    Apply {
        confirm_within: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config: Option<PathBuf>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        save: Option<PathBuf>,
    },
    Confirm,
    Rollback,
    Diff,
    SetAdd {
        group: String,
        addrs: Vec<Ipv4Net>,
    },
    SetDel {
        group: String,
        addrs: Vec<Ipv4Net>,
    },
    SetList {
        group: String,
    },
    Leases {
        segment: Option<String>,
    },
    /// The recent events; with `follow`, then every new one (one response line each).
    Logs {
        #[serde(default)]
        follow: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Response {
    pub fn ok(data: impl Serialize) -> Self {
        Response {
            ok: true,
            error: None,
            data: serde_json::to_value(data).unwrap_or(serde_json::Value::Null),
        }
    }

    pub fn err(e: impl std::fmt::Display) -> Self {
        Response {
            ok: false,
            error: Some(e.to_string()),
            data: serde_json::Value::Null,
        }
    }
}

/// Send a request to a running daemon. `None` when no daemon answers on the socket.
pub fn call(
    state_dir: &Path,
    req: &Request,
    timeout: Duration,
) -> Option<std::io::Result<Response>> {
    let mut s = UnixStream::connect(socket_path(state_dir)).ok()?;
    let r = (|| {
        s.set_read_timeout(Some(timeout))?;
        let mut line = serde_json::to_string(req).expect("serializes");
        line.push('\n');
        s.write_all(line.as_bytes())?;
        let mut out = String::new();
        BufReader::new(&s).read_line(&mut out)?;
        serde_json::from_str(&out)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })();
    Some(r)
}
