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
    /// Run the config as the lab does: VLAN segments as plain ports of the same name, a DHCP
    /// uplink on the lab's static address.
    #[arg(long, global = true, hide = true)]
    pub lab: bool,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Create the namespaces and start the gateway with the config.
    Up {
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
    },
    /// Open real connections for every allowed flow and a sample of denied ones; print the
    /// matrix; exit 1 on any mismatch.
    Verify {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Stop what the lab started and remove what it created.
    Down,
    /// (internal) answer on ports inside a lab namespace
    #[command(hide = true)]
    Serve {
        #[arg(long, value_delimiter = ',')]
        tcp: Vec<u16>,
        #[arg(long, value_delimiter = ',')]
        udp: Vec<u16>,
    },
    /// (internal) probe from inside a lab namespace
    #[command(hide = true)]
    Probe {
        #[arg(long)]
        bind: Option<Ipv4Addr>,
        #[arg(long, default_value = "600")]
        timeout_ms: u64,
        probes: Vec<String>,
    },
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
    /// The lab: the whole site in network namespaces, and proof that the policy holds.
    Lab {
        /// Name of the lab (several can run side by side).
        #[arg(long, default_value = "lab")]
        name: String,
        #[command(subcommand)]
        command: LabCommand,
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
    #[error(transparent)]
    Lab(#[from] crate::lab::LabError),
}

fn load_as(cfg: &std::path::Path, lab: bool) -> Result<(Model, Report), ExitCode> {
    match model::load(cfg) {
        Ok((m, r)) if lab => Ok((m.for_lab(), r)),
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
    let lab_mode = cli.global.lab;
    let load = |cfg: &std::path::Path| load_as(cfg, lab_mode);
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
        Command::Lab { name, command } => return lab(cfg, &name, command),
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

fn lab(cfg: &std::path::Path, name: &str, command: LabCommand) -> Result<ExitCode, CliError> {
    use crate::lab::{self, Lab};
    use std::io::IsTerminal;
    let l = Lab::new(name);
    let mut out = std::io::stdout().lock();
    match command {
        LabCommand::Serve { tcp, udp } => {
            lab::net::serve(&tcp, &udp)?;
        }
        LabCommand::Probe {
            bind,
            timeout_ms,
            probes,
        } => {
            let ps: Vec<lab::net::Probe> = probes
                .iter()
                .map(|p| p.parse())
                .collect::<Result<_, String>>()
                .map_err(CliError::Usage)?;
            let r = lab::net::probe_all(bind, &ps, std::time::Duration::from_millis(timeout_ms));
            for (p, ok) in ps.iter().zip(r) {
                writeln!(out, "{p} {}", if ok { "ok" } else { "blocked" })?;
            }
        }
        LabCommand::Up { backend } => {
            let (m, _) = match load_as(cfg, false) {
                Ok(x) => x,
                Err(code) => return Ok(code),
            };
            let backend = match backend {
                Some(BackendArg::Iptables) => "iptables",
                Some(BackendArg::Nftables) => "nftables",
                None => m.backend.name(),
            };
            let st = l.up(cfg, &m, backend)?;
            writeln!(
                out,
                "lab `{}` is up: gateway in namespace {} ({backend}), config {}",
                st.name,
                st.gateway_ns,
                st.config.display()
            )?;
            for h in &st.hosts {
                let place = match (&h.segment, &h.group) {
                    (Some(s), Some(g)) => format!("group {g} in segment {s}"),
                    (Some(s), None) => format!("client in segment {s}"),
                    (None, Some(g)) => format!("group {g} on the internet"),
                    (None, None) => "internet host".to_string(),
                };
                writeln!(out, "  {:<15} {:<28} namespace {}", h.addr, place, h.ns)?;
            }
            writeln!(out, "next: bulkhead lab verify; bulkhead lab down")?;
        }
        LabCommand::Verify { format } => {
            let st = l.state()?;
            let (m, _) = match load_as(&st.config, true) {
                Ok(x) => x,
                Err(code) => return Ok(code),
            };
            let mut checks = lab::probes(&m, &st.hosts, Vec::new());
            lab::verify(&l, &st, &mut checks)?;
            let bad = checks
                .iter()
                .filter(|c| c.observed != Some(c.expected))
                .count();
            if format == Format::Json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&checks).expect("serializes")
                )?;
            } else {
                let color = std::io::stdout().is_terminal();
                let (g, r, z) = if color {
                    ("\x1b[32m", "\x1b[31m", "\x1b[0m")
                } else {
                    ("", "", "")
                };
                writeln!(
                    out,
                    "{:<14} {:<16} {:<10} {:<8} {:<8} decided by",
                    "from", "to", "flow", "expect", "observed"
                )?;
                let word = |b: bool| if b { "allow" } else { "deny" };
                for c in &checks {
                    let ok = c.observed == Some(c.expected);
                    let obs = c.observed.map_or("?", word);
                    writeln!(
                        out,
                        "{}{:<14} {:<16} {:<10} {:<8} {:<8} {}{}",
                        if ok { g } else { r },
                        c.from,
                        c.to,
                        format!("{}/{}", c.proto.name(), c.port),
                        word(c.expected),
                        obs,
                        c.decided_by,
                        z
                    )?;
                }
                let allowed = checks.iter().filter(|c| c.expected).count();
                writeln!(
                    out,
                    "{} checks: {allowed} allowed, {} denied, {bad} mismatch{}",
                    checks.len(),
                    checks.len() - allowed,
                    if bad == 1 { "" } else { "es" }
                )?;
            }
            if bad > 0 {
                return Ok(ExitCode::from(1));
            }
        }
        LabCommand::Down => {
            let st = l.down()?;
            writeln!(
                out,
                "lab `{}` is down: {} processes stopped, {} namespaces removed",
                st.name,
                st.pids.len(),
                st.namespaces.len()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
