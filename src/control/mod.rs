//! The control socket's protocol: one JSON request per line, one JSON response per line (a
//! `logs --follow` request is answered by one line per event until the client goes away).
//! The types and the client live here, used by the CLI, the daemon (`supervisor::control`
//! serves the socket) and the event stream (`logship` answers `logs`).
//!
//! Limits every server applies: a request line is at most [`MAX_LINE`] bytes (a longer one is
//! answered with an error and the connection closed, without reading the rest).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub const SOCKET: &str = "control.sock";

/// The longest request line (without its newline) a server reads.
pub const MAX_LINE: usize = 64 * 1024;

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
        addrs: Vec<IpNet>,
    },
    SetDel {
        group: String,
        addrs: Vec<IpNet>,
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
    /// The Prometheus metrics (`crate::metrics::render`): `data` is one string, OpenMetrics
    /// text.
    Metrics,
    /// Record a change made beside the daemon (`bulkhead api-token add`/`del` edit the state
    /// directory themselves) as an audit event of the connection's user; `error` when it
    /// failed. Changes nothing.
    Audit {
        what: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
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

    /// The response as one line of the protocol, newline included.
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("serializes");
        s.push('\n');
        s
    }
}

/// One request line: the JSON of a [`Request`] (surrounding whitespace, a `\r` included, is
/// allowed). The error names what is wrong with it.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))
}

/// What a [`LineReader`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A whole line, without its newline.
    Complete(Vec<u8>),
    /// The line grew past the limit: nothing more of it was kept.
    TooLong,
}

/// Splits a byte stream into request lines of at most `max` bytes, never holding more than
/// `max` bytes however long the input runs without a newline. Sans-IO: the caller feeds it
/// what it read.
#[derive(Debug)]
pub struct LineReader {
    buf: Vec<u8>,
    max: usize,
}

impl LineReader {
    pub fn new(max: usize) -> Self {
        LineReader {
            buf: Vec::new(),
            max,
        }
    }

    /// Take bytes of `input`: returns how many were used and, when a line ended or grew past
    /// the limit, that outcome. Bytes after a finished line are not used (feed them again).
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Line>) {
        match input.iter().position(|&b| b == b'\n') {
            Some(i) => {
                if self.buf.len() + i > self.max {
                    self.buf = Vec::new();
                    return (i + 1, Some(Line::TooLong));
                }
                self.buf.extend_from_slice(&input[..i]);
                (i + 1, Some(Line::Complete(std::mem::take(&mut self.buf))))
            }
            None => {
                if self.buf.len() + input.len() > self.max {
                    self.buf = Vec::new();
                    return (input.len(), Some(Line::TooLong));
                }
                self.buf.extend_from_slice(input);
                (input.len(), None)
            }
        }
    }

    /// The end of the input: what is left is the last line (`None` when nothing is).
    pub fn finish(&mut self) -> Option<Line> {
        if self.buf.is_empty() {
            None
        } else {
            Some(Line::Complete(std::mem::take(&mut self.buf)))
        }
    }

    /// Bytes held of the line being read.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Read the next request line from `r`: `None` at the end of the stream.
pub async fn read_line<R>(r: &mut R, lines: &mut LineReader) -> std::io::Result<Option<Line>>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::AsyncBufReadExt;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(lines.finish());
        }
        let (n, line) = lines.feed(buf);
        r.consume(n);
        if line.is_some() {
            return Ok(line);
        }
    }
}

/// Connect to the daemon's control socket: `None` when no daemon runs (no socket, or nobody
/// listens on it); an error when one runs but cannot be used (permission denied).
pub fn connect(state_dir: &Path) -> std::io::Result<Option<UnixStream>> {
    use std::io::ErrorKind;
    let path = socket_path(state_dir);
    match UnixStream::connect(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(std::io::Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "{}: permission denied (the control socket is for root and the daemon's user)",
                path.display()
            ),
        )),
        Err(_) => Ok(None),
    }
}

/// Send a request to a running daemon. `None` when no daemon answers on the socket.
pub fn call(
    state_dir: &Path,
    req: &Request,
    timeout: Duration,
) -> Option<std::io::Result<Response>> {
    let mut s = match connect(state_dir) {
        Ok(Some(s)) => s,
        Ok(None) => return None,
        Err(e) => return Some(Err(e)),
    };
    let r = (|| {
        s.set_read_timeout(Some(timeout))?;
        let mut line = serde_json::to_string(req).expect("serializes");
        line.push('\n');
        // a daemon that does not serve this connection answers with one error line and
        // closes: that answer is read even when sending the request failed
        let sent = s.write_all(line.as_bytes());
        let mut out = String::new();
        let read = BufReader::new(&s).read_line(&mut out);
        if out.is_empty() {
            sent?;
            read?;
            return Err(std::io::Error::other(
                "the daemon closed the connection without an answer",
            ));
        }
        serde_json::from_str(&out)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })();
    // not a broken pipe of this process's output: say where it happened
    Some(r.map_err(|e| std::io::Error::other(format!("the daemon's control socket: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_capped() {
        let mut r = LineReader::new(8);
        assert_eq!(r.feed(b"abc"), (3, None));
        assert_eq!(
            r.feed(b"de\nxy"),
            (3, Some(Line::Complete(b"abcde".to_vec())))
        );
        assert_eq!(r.feed(b"xy"), (2, None));
        assert_eq!(r.finish(), Some(Line::Complete(b"xy".to_vec())));
        assert_eq!(r.finish(), None);
        // exactly the limit is fine, one more is not, with or without a newline
        assert_eq!(
            r.feed(b"12345678\n"),
            (9, Some(Line::Complete(b"12345678".to_vec())))
        );
        assert_eq!(r.feed(b"123456789\n"), (10, Some(Line::TooLong)));
        assert_eq!(r.feed(b"12345"), (5, None));
        assert_eq!(r.feed(b"6789"), (4, Some(Line::TooLong)));
        assert_eq!(r.pending(), 0);
    }

    proptest::proptest! {
        /// Whatever the input and however it is cut into reads: never more than the cap held,
        /// lines without newlines within the cap, and the input back when no line was too long.
        #[test]
        fn a_reader_holds_at_most_its_cap(
            input in proptest::collection::vec(
                proptest::prop_oneof![proptest::strategy::Just(b'\n'), proptest::num::u8::ANY], 0..600),
            read in 1usize..40,
            max in 1usize..64,
        ) {
            use proptest::prelude::*;
            let mut r = LineReader::new(max);
            let mut back = Vec::new();
            let mut too_long = false;
            'reads: for chunk in input.chunks(read) {
                let mut rest = chunk;
                while !rest.is_empty() {
                    let (n, line) = r.feed(rest);
                    prop_assert!(n > 0 && n <= rest.len());
                    prop_assert!(r.pending() <= max);
                    rest = &rest[n..];
                    match line {
                        Some(Line::TooLong) => {
                            too_long = true;
                            break 'reads;
                        }
                        Some(Line::Complete(l)) => {
                            prop_assert!(l.len() <= max && !l.contains(&b'\n'));
                            back.extend_from_slice(&l);
                            back.push(b'\n');
                        }
                        None => {}
                    }
                }
            }
            if !too_long {
                if let Some(Line::Complete(l)) = r.finish() {
                    back.extend_from_slice(&l);
                }
                prop_assert_eq!(back, input);
            }
        }
    }

    #[test]
    fn requests_parse_and_errors_say_why() {
        assert_eq!(
            parse_request(b"{\"cmd\":\"status\"}\r"),
            Ok(Request::Status)
        );
        let e = parse_request(b"{\"cmd\":\"nope\"}").unwrap_err();
        assert!(e.starts_with("bad request: unknown variant `nope`"), "{e}");
    }
}
