//! Running the firewall tools: every invocation is logged, and a failure keeps the exact
//! command line and its stderr so the operator sees what the kernel (or the tool) rejected.

use std::io::Write;
use std::process::{Command, Stdio};

/// A command that could not be run or exited non-zero.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{command}` failed ({status}): {stderr}")]
pub struct CmdError {
    /// The command line, as a shell would show it.
    pub command: String,
    /// `exit N`, `killed by a signal` or `could not start: …`.
    pub status: String,
    /// What the command wrote to stderr (trimmed).
    pub stderr: String,
}

/// The command line as text, for logs and errors.
pub(crate) fn show(prog: &str, args: &[&str]) -> String {
    let mut s = prog.to_string();
    for a in args {
        s.push(' ');
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "{}\"'$;".contains(c)) {
            s.push('\'');
            s.push_str(a);
            s.push('\'');
        } else {
            s.push_str(a);
        }
    }
    s
}

/// Run `prog args…`, feeding `stdin` when given; returns stdout on exit 0.
pub(crate) fn run(prog: &str, args: &[&str], stdin: Option<&str>) -> Result<String, CmdError> {
    let command = show(prog, args);
    tracing::debug!(command = %command, "run");
    let mut c = Command::new(prog);
    c.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| CmdError {
        command: command.clone(),
        status: format!("could not start: {e}"),
        stderr: String::new(),
    })?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        // A tool that exits early closes its stdin; its exit status tells the story.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| CmdError {
        command: command.clone(),
        status: format!("could not wait: {e}"),
        stderr: String::new(),
    })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let status = match out.status.code() {
        Some(c) => format!("exit {c}"),
        None => "killed by a signal".into(),
    };
    let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if stderr.is_empty() {
        stderr = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    Err(CmdError {
        command,
        status,
        stderr,
    })
}
