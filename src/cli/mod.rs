//! The `bulkhead` command line.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::diag::Report;
use crate::model::{self, Backend, Model, Proto};
use crate::plan::{self, Part};

#[derive(Debug, Parser)]
#[command(
    name = "bulkhead",
    version,
    about = "Network-segmentation gateway: one declarative file → links, sysctls, firewall, DHCP",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The config file.
    #[arg(short, long, global = true, default_value = crate::config::DEFAULT_PATH, env = "BULKHEAD_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BackendArg {
    Nftables,
    Iptables,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnlyArg {
    Links,
    Sysctl,
    Firewall,
    Dhcp,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config: report every problem as FILE:LINE:COL: key: message (exit 2).
    Check,
    /// Print the complete desired state (deterministic).
    Plan {
        /// Render the firewall for this backend instead of the configured one.
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        /// Print only this part; `--only firewall` is exactly what apply loads.
        #[arg(long, value_enum)]
        only: Option<OnlyArg>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Name the rule that decides a flow (or the default drop).
    Explain {
        /// Source address (a host in a segment, on the internet, or the gateway).
        #[arg(long)]
        from: Ipv4Addr,
        /// Destination address.
        #[arg(long)]
        to: Ipv4Addr,
        /// tcp, udp or icmp.
        #[arg(long, default_value = "tcp")]
        proto: String,
        /// Destination port (tcp and udp).
        #[arg(long)]
        port: Option<u16>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Print a host-based nftables file for one server of a group.
    Hostrules {
        /// The group (role) the server belongs to.
        #[arg(long)]
        role: String,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// Errors of the command line that are not config findings.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    HostRules(#[from] plan::hostrules::HostRulesError),
}

fn load(cfg: &std::path::Path) -> Result<(Model, Report), ExitCode> {
    match model::load(cfg) {
        Ok(x) => Ok(x),
        Err(report) => {
            eprint!("{report}");
            let n = report.errors().count();
            eprintln!(
                "{}: {n} error{}",
                cfg.display(),
                if n == 1 { "" } else { "s" }
            );
            Err(ExitCode::from(2))
        }
    }
}

fn print_warnings(r: &Report) {
    if !r.diagnostics.is_empty() {
        eprint!("{r}");
    }
}

pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let cfg = &cli.global.config;
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Check => {
            let (m, warnings) = match load(cfg) {
                Ok(x) => x,
                Err(code) => return Ok(code),
            };
            print_warnings(&warnings);
            let rs = plan::ruleset::build(&m);
            writeln!(
                stdout,
                "{}: ok: {} segments, {} groups, {} rules, {} port forwards; {} firewall rules, {} set elements ({})",
                cfg.display(),
                m.segments.len(),
                m.groups.len(),
                m.rules.len(),
                m.forwards.len(),
                rs.rule_count(),
                rs.element_count(),
                m.backend.name()
            )?;
        }
        Command::Plan {
            backend,
            only,
            format,
        } => {
            let (m, _) = match load(cfg) {
                Ok(x) => x,
                Err(code) => return Ok(code),
            };
            let backend = backend.map(|b| match b {
                BackendArg::Nftables => Backend::Nftables,
                BackendArg::Iptables => Backend::Iptables,
            });
            let only = only.map(|o| match o {
                OnlyArg::Links => Part::Links,
                OnlyArg::Sysctl => Part::Sysctl,
                OnlyArg::Firewall => Part::Firewall,
                OnlyArg::Dhcp => Part::Dhcp,
            });
            let p = plan::build(&m, backend);
            let text = match format {
                Format::Text => p.text(only),
                Format::Json => p.json(only),
            };
            stdout.write_all(text.as_bytes())?;
        }
        Command::Explain {
            from,
            to,
            proto,
            port,
            format,
        } => {
            let proto = Proto::parse(&proto).map_err(CliError::Usage)?;
            if proto == Proto::Any {
                return Err(CliError::Usage("--proto must be tcp, udp or icmp".into()));
            }
            if matches!(proto, Proto::Tcp | Proto::Udp) && port.is_none() {
                return Err(CliError::Usage(format!(
                    "--port is needed with --proto {}",
                    proto.name()
                )));
            }
            let (m, _) = match load(cfg) {
                Ok(x) => x,
                Err(code) => return Ok(code),
            };
            let rs = plan::ruleset::build(&m);
            let flow = plan::explain::Flow {
                src: from,
                dst: to,
                proto,
                port: if proto == Proto::Icmp { None } else { port },
            };
            let d = plan::explain::explain(&m, &rs, &flow);
            match format {
                Format::Text => writeln!(stdout, "{}", d.describe())?,
                Format::Json => writeln!(
                    stdout,
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "flow": flow,
                        "verdict": if d.allowed() { "accept" } else { "drop" },
                        "decision": d,
                        "text": d.describe(),
                    }))
                    .expect("serializes")
                )?,
            }
            return Ok(if d.allowed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Command::Hostrules { role, output } => {
            let (m, _) = match load(cfg) {
                Ok(x) => x,
                Err(code) => return Ok(code),
            };
            let text = plan::hostrules::render(&m, &role)?;
            match output {
                Some(p) => std::fs::write(p, text)?,
                None => stdout.write_all(text.as_bytes())?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
