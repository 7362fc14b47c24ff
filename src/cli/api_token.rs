//! `bulkhead api-token add NAME --role admin|read`, `list`, `del NAME`: the management API's
//! tokens, kept hashed in the state directory (`crate::api::auth`).

use std::io::Write;
use std::process::ExitCode;

use clap::Subcommand;

use super::{CliError, Global, state_dir_of};
use crate::api::auth::{self, Role};

#[derive(Debug, Subcommand)]
pub enum ApiTokenCommand {
    /// Make a token and print it (once: only its hash is kept).
    Add {
        name: String,
        #[arg(long, value_enum, default_value = "read")]
        role: Role,
    },
    /// The tokens: name, role, when made.
    List,
    /// Delete a token: requests carrying it are refused from now on.
    Del { name: String },
}

pub fn run(g: &Global, command: ApiTokenCommand) -> Result<ExitCode, CliError> {
    let state_dir = match state_dir_of(g) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let mut out = std::io::stdout().lock();
    match command {
        ApiTokenCommand::Add { name, role } => {
            let t = auth::add(&state_dir, &name, role).map_err(CliError::Usage)?;
            writeln!(out, "{t}")?;
            eprintln!(
                "token `{name}` ({}) made: it is shown this once; send it as `Authorization: Bearer TOKEN`",
                role.name()
            );
        }
        ApiTokenCommand::List => {
            let v = auth::load(&state_dir).map_err(CliError::Usage)?;
            writeln!(out, "{:<24} {:<6} created", "name", "role")?;
            for t in &v {
                writeln!(
                    out,
                    "{:<24} {:<6} {}",
                    t.name,
                    t.role.name(),
                    crate::logship::event::rfc3339(t.created * 1_000_000)
                )?;
            }
            writeln!(out, "{} tokens", v.len())?;
        }
        ApiTokenCommand::Del { name } => {
            auth::del(&state_dir, &name).map_err(CliError::Usage)?;
            writeln!(out, "deleted token `{name}`")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
