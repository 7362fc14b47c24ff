//! The `bulkhead` command line.

pub mod api_token;
pub mod backup;
pub mod remote;
pub mod setup;
pub mod upgrade;

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::diag::Report;
use crate::model::{Backend, LabMode, Model, Proto};
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
    /// With --lab: run this firewall backend instead of the configured one.
    #[arg(long, global = true, hide = true, value_enum)]
    pub lab_backend: Option<BackendArg>,
    /// State directory (applied generations, leases, control socket); default from the config.
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    /// Run the command on a remote gateway through its management API
    /// (https://ADDR:PORT): status, leases, logs, check, apply, confirm, rollback, diff, set.
    #[arg(long, global = true, env = "BULKHEAD_REMOTE")]
    pub remote: Option<String>,
    /// The API token for --remote (`bulkhead api-token add` on the gateway).
    #[arg(long, global = true, env = "BULKHEAD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The SHA-256 fingerprint of the gateway's API certificate (`bulkhead status` on its
    /// console shows it) that --remote trusts.
    #[arg(long, global = true, env = "BULKHEAD_FINGERPRINT")]
    pub fingerprint: Option<String>,
}

impl Global {
    /// How to load the config: as written, or as the lab runs it.
    pub fn lab_mode(&self) -> Option<LabMode> {
        self.lab.then(|| LabMode {
            backend: self.lab_backend.map(Backend::from),
        })
    }
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Nftables => Backend::Nftables,
            BackendArg::Iptables => Backend::Iptables,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum SetCommand {
    /// Add IPv4 or IPv6 addresses or CIDR blocks to a group's live set (IPv6 ones to NAME_v6).
    Add { group: String, addrs: Vec<String> },
    /// Remove IPv4 or IPv6 addresses or CIDR blocks from a group's live set.
    Del { group: String, addrs: Vec<String> },
    /// List a group's live set.
    List { group: String },
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Create the namespaces and start the gateway with the config.
    Up {
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        /// Run the gateway as the appliance image in qemu (from a checkout, after
        /// `image/build`): real VLANs on its trunk, its uplink by DHCP.
        #[arg(long)]
        vm: bool,
        /// With --vm: the image build's output directory.
        #[arg(long, default_value = "image/out")]
        image_out: PathBuf,
        /// With --vm: attach this disk image for the appliance's data partition (state and
        /// leases survive from one lab run to the next).
        #[arg(long)]
        disk: Option<PathBuf>,
        /// Also start a SIEM host: rsyslogd at the config's UDP/TCP log targets; `lab verify`
        /// shows the drops and alerts that reach it.
        #[arg(long)]
        siem: bool,
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
        #[arg(long, value_delimiter = ',')]
        addrs: Vec<Ipv4Addr>,
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
        /// Source address (a host in a segment, on the internet, or the gateway), IPv4 or IPv6.
        #[arg(long)]
        from: std::net::IpAddr,
        /// Destination address, of the same family as --from.
        #[arg(long)]
        to: std::net::IpAddr,
        /// tcp, udp or icmp.
        #[arg(long, default_value = "tcp")]
        proto: String,
        /// Destination port (tcp and udp).
        #[arg(long)]
        port: Option<u16>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Apply the config to this machine: sysctls, links, addresses, the firewall.
    Apply {
        /// Restore the previous config unless `bulkhead confirm` arrives within this time
        /// (e.g. 60s, 5m).
        #[arg(long)]
        confirm_within: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Keep the applied config (ends an `apply --confirm-within` window) and/or the new
    /// firmware slot (ends an `upgrade --confirm-within` window), whichever waits.
    Confirm,
    /// Go back to the config applied before the current one.
    Rollback,
    /// Show what an apply would change on this machine.
    Diff,
    /// Links, addresses, per-rule counters, set sizes, the last apply, a pending confirmation.
    Status {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Change a host group in the live firewall without reloading (kept by the next apply).
    Set {
        #[command(subcommand)]
        command: SetCommand,
    },
    /// The supervisor daemon, in the foreground: apply, repair drift, reload on SIGHUP.
    Run,
    /// Prometheus metrics of the gateway (the text `GET /metrics` serves), in the Prometheus
    /// text format; from the daemon when it runs, else read here without its DHCP and log
    /// counters.
    Metrics {
        /// OpenMetrics text instead (`application/openmetrics-text`).
        #[arg(long)]
        openmetrics: bool,
    },
    /// DHCP leases (from the daemon when it runs, else from the lease store).
    Leases {
        #[arg(long)]
        segment: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// (internal) restore the previous config if an apply is not confirmed in time
    #[command(hide = true)]
    ConfirmWatchdog,
    /// First-boot setup: NICs, uplink, management VLAN and address, admin SSH key, syslog;
    /// shows the plan and applies it with commit-confirm (`--from FILE`: answers from a file).
    Setup(setup::SetupArgs),
    /// (internal) ship synthetic events of every kind to the config's log targets, through
    /// the daemon's shipping path (spool included), and wait until they are delivered.
    #[command(hide = true)]
    ShipTest {
        #[arg(long, default_value_t = 9)]
        count: u64,
        /// Events per second (default: as fast as possible).
        #[arg(long)]
        rate: Option<u64>,
        /// A value for the `test` field of every event.
        #[arg(long, default_value = "ship-test")]
        tag: String,
        /// Seconds to wait for delivery.
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// The daemon's event stream: drops, alerts, applies, links, leases, its own log.
    Logs {
        /// Keep printing new events as they happen.
        #[arg(long, short)]
        follow: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Print the gateway's address on the management segment (for the SSH server).
    ManagementAddress {
        /// Print ADDR:PORT with the SSH port (`management.ssh_port`): where SSH must listen.
        #[arg(long)]
        ssh: bool,
    },
    /// The lab: the whole site in network namespaces, and proof that the policy holds.
    Lab {
        /// Name of the lab (several can run side by side).
        #[arg(long, default_value = "lab")]
        name: String,
        #[command(subcommand)]
        command: LabCommand,
    },
    /// A/B firmware upgrade: `upgrade FILE [--reboot]` installs a signed bundle into the
    /// inactive slot (a bad signature or compatible string: refused, exit 2); `upgrade
    /// status` shows the slots, their versions, which one booted and the last result.
    Upgrade(upgrade::UpgradeArgs),
    /// One archive of the config, the admin and SSH host keys and the leases (private TLS
    /// keys only with --with-secrets).
    Backup(backup::BackupArgs),
    /// Restore a backup: the config is validated with this firmware before anything is
    /// touched, then keys and leases are put back and the config applied with commit-confirm.
    Restore(backup::RestoreArgs),
    /// Tokens of the management API: `add NAME --role admin|read` prints a new one once.
    ApiToken {
        #[command(subcommand)]
        command: api_token::ApiTokenCommand,
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
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    HostRules(#[from] plan::hostrules::HostRulesError),
    #[error(transparent)]
    Lab(#[from] crate::lab::LabError),
    #[error(transparent)]
    Gateway(#[from] crate::supervisor::GwError),
    #[error(transparent)]
    Run(#[from] crate::supervisor::RunError),
    #[error("the daemon answered: {0}")]
    Daemon(String),
}

fn load_as(cfg: &std::path::Path, lab: Option<LabMode>) -> Result<(Model, Report), ExitCode> {
    match crate::plan::load(cfg) {
        Ok((m, r)) if lab.is_some() => Ok((m.for_lab(lab.unwrap_or_default()), r)),
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

/// [`load_as`] of a config's text already read.
fn load_text_as(
    cfg: &std::path::Path,
    text: &str,
    lab: Option<LabMode>,
) -> Result<Model, ExitCode> {
    match crate::plan::load_str(&cfg.display().to_string(), text) {
        Ok((m, _)) => Ok(lab.map_or_else(|| m.clone(), |l| m.for_lab(l))),
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
    let lab_mode = cli.global.lab_mode();
    let load = |cfg: &std::path::Path| load_as(cfg, lab_mode);
    if let Some(url) = cli.global.remote.clone() {
        return remote::run(&cli.global, &url, cli.command);
    }
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::ApiToken { command } => return api_token::run(&cli.global, command),
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
            if from.is_ipv4() != to.is_ipv4() {
                return Err(CliError::Usage(
                    "--from and --to must both be IPv4 or both IPv6".into(),
                ));
            }
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
        Command::Setup(args) => return setup::run(&cli.global, args),
        Command::Upgrade(args) => return Ok(upgrade::run(args)),
        Command::Backup(args) => return backup::backup(&cli.global, args),
        Command::Restore(args) => return backup::restore(&cli.global, args),
        Command::Logs { follow, format } => return logs(&cli.global, follow, format),
        Command::ShipTest {
            count,
            rate,
            tag,
            wait,
        } => {
            let (m, _) = match load(cfg) {
                Ok(x) => x,
                Err(code) => return Ok(code),
            };
            let state_dir = cli.global.state_dir.clone().unwrap_or(m.state_dir.clone());
            let (done, targets, elapsed) = crate::logship::ship_test(
                &m,
                &state_dir,
                count,
                rate,
                &tag,
                std::time::Duration::from_secs(wait),
            )?;
            writeln!(
                stdout,
                "{}",
                serde_json::json!({
                    "delivered": done,
                    "count": count,
                    "elapsed_s": elapsed.as_secs_f64(),
                    "targets": targets,
                })
            )?;
            return Ok(if done {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Command::ManagementAddress { ssh } => {
            let (m, _) = match load(cfg) {
                Ok(x) => x,
                Err(code) => return Ok(code),
            };
            let addr = m.management_segment().gateway;
            if ssh {
                writeln!(stdout, "{addr}:{}", m.management.ssh_port)?;
            } else {
                writeln!(stdout, "{addr}")?;
            }
        }
        Command::Run => {
            // the daemon's threads print too: stdout must not stay locked by this one
            drop(stdout);
            crate::supervisor::run(crate::supervisor::RunOptions {
                config: cfg.clone(),
                state_dir: cli.global.state_dir.clone(),
                lab: lab_mode,
                check_every: std::time::Duration::from_secs(1),
            })?;
        }
        Command::Confirm => return confirm(&cli.global),
        Command::Apply { .. }
        | Command::Rollback
        | Command::Diff
        | Command::Status { .. }
        | Command::Set { .. }
        | Command::Leases { .. }
        | Command::Metrics { .. }
        | Command::ConfirmWatchdog => return ops(&cli.global, cli.command),
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
        LabCommand::Serve { tcp, udp, addrs } => {
            lab::net::serve(&tcp, &udp, &addrs)?;
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
            for (p, o) in ps.iter().zip(r) {
                match (o.through, o.seen_as) {
                    (true, Some(a)) => writeln!(out, "{p} ok {a}")?,
                    (true, None) => writeln!(out, "{p} ok")?,
                    (false, _) => writeln!(out, "{p} blocked")?,
                }
            }
        }
        LabCommand::Up {
            backend,
            vm,
            image_out,
            disk,
            siem,
        } => {
            let mut l = l;
            l.siem = siem;
            if vm {
                let runner = PathBuf::from("image/run");
                let switch = PathBuf::from("tests/vm/vlanswitch.py");
                for p in [&runner, &switch] {
                    if !p.exists() {
                        return Err(CliError::Usage(format!(
                            "--vm runs from a checkout: {} not found",
                            p.display()
                        )));
                    }
                }
                if !image_out.join("vmlinux").exists() {
                    return Err(CliError::Usage(format!(
                        "--vm: no image in {} (run image/build)",
                        image_out.display()
                    )));
                }
                l.vm = Some(lab::Vm {
                    image_out: std::fs::canonicalize(&image_out)?,
                    runner: std::fs::canonicalize(&runner)?,
                    switch: std::fs::canonicalize(&switch)?,
                    disk: disk.map(|d| std::fs::canonicalize(&d)).transpose()?,
                });
            }
            let (m, _) = match load_as(cfg, None) {
                Ok(x) => x,
                Err(code) => return Ok(code),
            };
            let backend = match backend {
                Some(BackendArg::Iptables) => "iptables",
                Some(BackendArg::Nftables) => "nftables",
                None => m.backend.name(),
            };
            let st = l.up(cfg, &m, backend)?;
            let gw = match &st.console {
                Some(c) => format!("the appliance image in qemu (console {})", c.display()),
                None => format!("namespace {}", st.gateway_ns),
            };
            writeln!(
                out,
                "lab `{}` is up: gateway {gw} ({backend}), config {}",
                st.name,
                st.config.display()
            )?;
            for h in &st.hosts {
                let place = match (&h.segment, &h.group) {
                    (Some(s), Some(g)) => format!("group {g} in segment {s}"),
                    (Some(s), None) if h.dhcp => format!("client in segment {s}, by DHCP"),
                    (Some(s), None) => format!("client in segment {s}"),
                    (None, Some(g)) => format!("group {g} on the internet"),
                    (None, None) => "internet host".to_string(),
                };
                writeln!(out, "  {:<15} {:<28} namespace {}", h.addr, place, h.ns)?;
            }
            if let Some(s) = &st.siem {
                writeln!(
                    out,
                    "  SIEM rsyslogd on {} in namespace {}, writing {}",
                    s.listens.join(" "),
                    s.ns,
                    s.log.display()
                )?;
            }
            writeln!(out, "next: bulkhead lab verify; bulkhead lab down")?;
        }
        LabCommand::Verify { format } => {
            let st = l.state()?;
            let backend = match st.backend.as_str() {
                "iptables" => Backend::Iptables,
                _ => Backend::Nftables,
            };
            let (m, _) = match load_as(
                &st.config,
                Some(LabMode {
                    backend: Some(backend),
                }),
            ) {
                Ok(x) => x,
                Err(code) => return Ok(code),
            };
            let mut checks = lab::probes(&m, &st.hosts, Vec::new());
            let drops_before = st.siem.as_ref().map(|s| {
                lab::siem::report(s)
                    .by_kind
                    .get("drop")
                    .copied()
                    .unwrap_or(0)
            });
            lab::verify(&l, &st, &mut checks)?;
            let mut bad = checks.iter().filter(|c| !c.ok()).count();
            let siem = st
                .siem
                .as_ref()
                .map(|s| lab::siem::report_after_probes(s, drops_before.unwrap_or(0)));
            let denied = checks.iter().any(|c| !c.expected);
            let siem_ok = siem.as_ref().is_none_or(|r| {
                !denied || r.by_kind.get("drop").copied().unwrap_or(0) > drops_before.unwrap_or(0)
            });
            if !siem_ok {
                bad += 1;
            }
            if format == Format::Json {
                let v = match &siem {
                    Some(r) => serde_json::json!({ "checks": checks, "siem": r }),
                    None => serde_json::to_value(&checks).expect("serializes"),
                };
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&v).expect("serializes")
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
                    let ok = c.ok();
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
                        match (c.nat_as, c.observed) {
                            (Some(_), Some(true)) => format!(
                                "{}; seen as {}",
                                c.decided_by,
                                c.seen_as.map_or("?".into(), |a| a.to_string())
                            ),
                            _ => c.decided_by.clone(),
                        },
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
                if let Some(r) = &siem {
                    let kinds: Vec<String> =
                        r.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
                    writeln!(
                        out,
                        "SIEM: {} events ({}){}",
                        r.events,
                        kinds.join(", "),
                        if siem_ok {
                            ""
                        } else {
                            "; MISMATCH: no drop of the denied probes arrived"
                        }
                    )?;
                    for d in &r.drops {
                        writeln!(out, "  drop:  {d}")?;
                    }
                    for a in &r.alerts {
                        writeln!(out, "  alert: {a}")?;
                    }
                }
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

/// The state directory a command works on: `--state-dir`, else the config's.
fn state_dir_of(g: &Global) -> Result<PathBuf, ExitCode> {
    if let Some(d) = &g.state_dir {
        return Ok(d.clone());
    }
    // only the one key is needed to reach a running daemon: the whole config (thousands of
    // group members) is parsed and validated only where it is used
    if let Some(d) = std::fs::read_to_string(&g.config)
        .ok()
        .and_then(|t| quick_state_dir(&t))
    {
        return Ok(d);
    }
    load_as(&g.config, g.lab_mode()).map(|(m, _)| m.state_dir)
}

/// `[system] state_dir` of a config's text without parsing the rest, when that is certain:
/// the key is written once, as `state_dir = "..."` in the `[system]` table, with an absolute
/// path (or not at all: the default). Anything else (`None`) takes the full parse.
fn quick_state_dir(text: &str) -> Option<PathBuf> {
    match text.matches("state_dir").count() {
        0 if !text.lines().any(|l| l.trim_start().starts_with("system")) => {
            return Some(PathBuf::from("/var/lib/bulkhead"));
        }
        1 => {}
        _ => return None,
    }
    let mut table = "";
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            table = t;
        } else if t.starts_with("state_dir") {
            #[derive(serde::Deserialize)]
            struct Key {
                state_dir: String,
            }
            let k: Key = toml::from_str(t).ok()?;
            let p = PathBuf::from(k.state_dir);
            return (table == "[system]" && p.is_absolute()).then_some(p);
        }
    }
    None
}

fn parse_addrs(v: &[String]) -> Result<Vec<ipnet::IpNet>, CliError> {
    if v.is_empty() {
        return Err(CliError::Usage("give at least one address".into()));
    }
    v.iter()
        .map(|a| {
            a.parse::<ipnet::IpNet>()
                .or_else(|_| a.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    CliError::Usage(format!(
                        "`{a}` is not an IPv4 or IPv6 address or CIDR block"
                    ))
                })
        })
        .collect()
}

fn print_changes(
    out: &mut impl Write,
    what: &str,
    changes: &[crate::apply::Change],
) -> std::io::Result<()> {
    if changes.is_empty() {
        writeln!(out, "{what}: no changes")?;
    }
    for c in changes {
        writeln!(out, "{c}")?;
    }
    Ok(())
}

/// `bulkhead confirm`: the new firmware slot of an `upgrade --confirm-within`, when one
/// waits for it, and the config of an `apply --confirm-within`, when one waits; says which.
fn confirm(g: &Global) -> Result<ExitCode, CliError> {
    let upgraded = match crate::upgrade::confirm_upgrade() {
        Ok(Some(p)) => {
            println!(
                "confirmed the upgrade: slot {} ({}) is marked good and stays (slot {}, {}, is kept as the fallback)",
                p.slot, p.version, p.from_slot, p.from_version
            );
            true
        }
        Ok(None) => false,
        Err(e) => {
            eprintln!("bulkhead confirm: upgrade: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    match ops(g, Command::Confirm) {
        Err(CliError::Gateway(crate::supervisor::GwError::NothingToConfirm)) if upgraded => {
            println!("config: no apply was waiting for confirmation");
            Ok(ExitCode::SUCCESS)
        }
        Err(CliError::Daemon(e)) if upgraded && e.contains("nothing to confirm") => {
            println!("config: no apply was waiting for confirmation");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if upgraded => {
            eprintln!("bulkhead confirm: config: {e}");
            Ok(ExitCode::from(1))
        }
        r => r,
    }
}

/// Operations on the running gateway: through the daemon's control socket when it runs,
/// in this process otherwise.
fn ops(g: &Global, command: Command) -> Result<ExitCode, CliError> {
    use crate::control::{self, Request};
    use crate::supervisor::Gateway;
    let state_dir = match state_dir_of(g) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    if matches!(command, Command::ConfirmWatchdog) {
        return watchdog(g, &state_dir);
    }
    let confirm = match &command {
        Command::Apply {
            confirm_within: Some(s),
            ..
        } => Some(
            crate::model::addr::parse_duration(s)
                .map_err(|e| CliError::Usage(format!("--confirm-within: {e}")))?,
        ),
        _ => None,
    };
    let req = match &command {
        Command::Apply { .. } => Request::Apply {
            confirm_within: confirm,
            config: None,
            save: None,
        },
        Command::Confirm => Request::Confirm,
        Command::Rollback => Request::Rollback,
        Command::Diff => Request::Diff,
        Command::Status { .. } => Request::Status,
        Command::Set {
            command: SetCommand::Add { group, addrs },
        } => Request::SetAdd {
            group: group.clone(),
            addrs: parse_addrs(addrs)?,
        },
        Command::Set {
            command: SetCommand::Del { group, addrs },
        } => Request::SetDel {
            group: group.clone(),
            addrs: parse_addrs(addrs)?,
        },
        Command::Set {
            command: SetCommand::List { group },
        } => Request::SetList {
            group: group.clone(),
        },
        Command::Leases { segment, .. } => Request::Leases {
            segment: segment.clone(),
        },
        Command::Metrics { .. } => Request::Metrics,
        _ => unreachable!("ops handles these commands only"),
    };
    let mut validated = None;
    if matches!(command, Command::Apply { .. }) {
        // validate before touching anything, with every problem reported; without a daemon
        // the apply below goes on with this model (the config is parsed once)
        match std::fs::read_to_string(&g.config) {
            Ok(text) => match load_text_as(&g.config, &text, g.lab_mode()) {
                Ok(m) => validated = Some((m, text)),
                Err(code) => return Ok(code),
            },
            Err(_) => {
                if let Err(code) = load_as(&g.config, g.lab_mode()) {
                    return Ok(code);
                }
            }
        }
    }
    // 1. the daemon, when it runs
    let data = match control::call(&state_dir, &req, std::time::Duration::from_secs(120)) {
        Some(Ok(resp)) if resp.ok => resp.data,
        Some(Ok(resp)) => return Err(CliError::Daemon(resp.error.unwrap_or_default())),
        Some(Err(e)) => return Err(CliError::Io(e)),
        None if matches!(req, Request::Leases { .. }) => {
            let Request::Leases { segment } = &req else {
                unreachable!()
            };
            serde_json::to_value(
                crate::supervisor::read_leases(&state_dir, segment.as_deref())
                    .map_err(|e| CliError::Daemon(e.to_string()))?,
            )
            .expect("serializes")
        }
        None => {
            // 2. no daemon: do it here
            let mut gw = match validated {
                Some((m, text)) => {
                    Gateway::open_loaded(&g.config, Some(state_dir.clone()), g.lab_mode(), m, text)?
                }
                None => Gateway::open(&g.config, Some(state_dir.clone()), g.lab_mode())?,
            };
            match &req {
                Request::Apply { confirm_within, .. } => {
                    let r = gw.apply_file(confirm_within.map(std::time::Duration::from_secs))?;
                    if confirm_within.is_some() && gw.pending().is_some() {
                        spawn_watchdog(g, &state_dir)?;
                    }
                    serde_json::to_value(r)
                }
                Request::Confirm => serde_json::to_value(gw.confirm()?),
                Request::Rollback => serde_json::to_value(gw.rollback()?),
                Request::Diff => serde_json::to_value(gw.diff()?),
                Request::Status => serde_json::to_value(gw.status(false)),
                Request::SetAdd { group, addrs } => serde_json::to_value(gw.set_add(group, addrs)?),
                Request::SetDel { group, addrs } => serde_json::to_value(gw.set_del(group, addrs)?),
                Request::SetList { group } => serde_json::to_value(gw.set_list(group)?),
                Request::Metrics => serde_json::to_value(crate::metrics::render(&gw)),
                Request::Leases { .. } => unreachable!("handled above"),
                Request::Logs { .. } => unreachable!("`bulkhead logs` reads the socket itself"),
                Request::Audit { .. } => unreachable!("`bulkhead api-token` sends it itself"),
            }
            .expect("serializes")
        }
    };
    // DHCPv6 leases are read from their journal (safe while the daemon writes it)
    let leases6 = match &command {
        Command::Leases {
            segment,
            format: Format::Text,
        } => Some(crate::supervisor::ipv6::read_leases6(
            &state_dir,
            segment.as_deref(),
        )),
        _ => None,
    };
    let code = print_data(command, data, confirm)?;
    if let Some(v) = leases6.filter(|v| !v.is_empty()) {
        print_leases6(&v)?;
    }
    Ok(code)
}

/// The DHCPv6 lease table of `bulkhead leases`.
fn print_leases6(leases: &[crate::dhcp6::Lease6]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    let now = crate::supervisor::gateway::now_unix();
    writeln!(
        out,
        "\n{:<10} {:<39} {:<10} {:<9} {:>8} duid / hostname",
        "segment", "address (DHCPv6)", "iaid", "state", "expires"
    )?;
    for l in leases {
        let duid: String = l
            .duid
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        writeln!(
            out,
            "{:<10} {:<39} {:<10} {:<9} {:>7}s {} {}",
            l.segment,
            l.addr,
            l.iaid,
            format!("{:?}", l.state).to_lowercase(),
            l.expires.saturating_sub(now),
            duid,
            // client-chosen text: no control character reaches the terminal
            crate::dhcp::text::escape(l.hostname.as_deref().unwrap_or(""))
        )?;
    }
    writeln!(out, "{} DHCPv6 leases", leases.len())?;
    Ok(())
}

/// Print what the daemon (or a remote gateway) answered to `command`.
fn print_data(
    command: Command,
    data: serde_json::Value,
    confirm: Option<u64>,
) -> Result<ExitCode, CliError> {
    let mut out = std::io::stdout().lock();
    let json = matches!(
        command,
        Command::Apply {
            format: Format::Json,
            ..
        } | Command::Status {
            format: Format::Json
        } | Command::Leases {
            format: Format::Json,
            ..
        }
    );
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&data).expect("serializes")
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    match command {
        Command::Apply { .. } | Command::Rollback => {
            let r: crate::supervisor::gateway::ApplyView =
                serde_json::from_value(data).unwrap_or_default();
            let what = if matches!(command, Command::Rollback) {
                "rollback"
            } else {
                "apply"
            };
            print_changes(&mut out, what, &r.changes)?;
            writeln!(
                out,
                "{what}: {} change{}, generation {}, {:.0} ms{}",
                r.changes.len(),
                if r.changes.len() == 1 { "" } else { "s" },
                r.generation.map_or("-".into(), |g| g.to_string()),
                r.elapsed,
                confirm.map_or(String::new(), |s| format!(
                    "; run `bulkhead confirm` within {s} s or the previous config comes back"
                ))
            )?;
        }
        Command::Diff => {
            let r: crate::supervisor::gateway::ApplyView =
                serde_json::from_value(data).unwrap_or_default();
            print_changes(&mut out, "diff", &r.changes)?;
        }
        Command::Confirm => {
            let p: Option<crate::supervisor::gateway::Pending> = serde_json::from_value(data).ok();
            match p.and_then(|p| p.promote) {
                Some(pr) => writeln!(out, "confirmed; saved {}", pr.to.display())?,
                None => writeln!(out, "confirmed")?,
            }
        }
        Command::Set {
            command: SetCommand::List { .. },
        } => {
            for e in data.as_array().into_iter().flatten() {
                writeln!(out, "{}", e.as_str().unwrap_or_default())?;
            }
        }
        Command::Set { .. } => writeln!(out, "ok")?,
        Command::Leases { .. } => {
            let leases: Vec<crate::dhcp::Lease> =
                serde_json::from_value(data).map_err(|e| CliError::Daemon(e.to_string()))?;
            let now = crate::supervisor::gateway::now_unix();
            writeln!(
                out,
                "{:<10} {:<15} {:<17} {:<9} {:>8} hostname",
                "segment", "address", "mac", "state", "expires"
            )?;
            for l in &leases {
                writeln!(
                    out,
                    "{:<10} {:<15} {:<17} {:<9} {:>7}s {}",
                    l.segment,
                    l.addr,
                    crate::model::addr::fmt_mac(&l.mac),
                    format!("{:?}", l.state).to_lowercase(),
                    l.expires.saturating_sub(now),
                    // client-chosen text: no control character reaches the terminal
                    crate::dhcp::text::escape(l.hostname.as_deref().unwrap_or(""))
                )?;
            }
            writeln!(out, "{} leases", leases.len())?;
        }
        Command::Status { .. } => {
            let s: crate::supervisor::gateway::Status =
                serde_json::from_value(data).map_err(|e| CliError::Daemon(e.to_string()))?;
            print_status(&mut out, &s)?;
        }
        Command::Metrics { openmetrics } => {
            let text = data
                .as_str()
                .ok_or_else(|| CliError::Daemon("the answer holds no metrics text".into()))?;
            if openmetrics {
                out.write_all(text.as_bytes())?;
            } else {
                out.write_all(crate::metrics::classic(text).as_bytes())?;
            }
        }
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(
    out: &mut impl Write,
    s: &crate::supervisor::gateway::Status,
) -> std::io::Result<()> {
    writeln!(
        out,
        "config {} ({}), daemon {}",
        s.config,
        s.backend,
        if s.daemon { "running" } else { "not running" }
    )?;
    match &s.last_apply {
        Some(l) => writeln!(
            out,
            "last {}: {} at {} (generation {}, {} changes, {:.0} ms){}",
            l.what,
            if l.ok { "ok" } else { "FAILED" },
            l.at,
            l.generation.map_or("-".into(), |g| g.to_string()),
            l.changes,
            l.elapsed_ms,
            l.error.as_ref().map_or(String::new(), |e| format!(": {e}"))
        )?,
        None => writeln!(out, "never applied")?,
    }
    if let Some(p) = &s.pending_confirm {
        let left = p
            .deadline
            .saturating_sub(crate::supervisor::gateway::now_unix());
        writeln!(
            out,
            "PENDING CONFIRMATION: the previous config returns in {left} s unless `bulkhead confirm`"
        )?;
    }
    writeln!(out, "links:")?;
    for l in &s.links {
        writeln!(
            out,
            "  {:<12} {:<18} {:<7} mtu {:<5} {}",
            l.name,
            l.role,
            if !l.present {
                "MISSING"
            } else if l.up {
                "up"
            } else {
                "down"
            },
            l.mtu.map_or("-".into(), |m| m.to_string()),
            l.addresses.join(" ")
        )?;
    }
    writeln!(out, "sets:")?;
    for (n, c) in &s.sets {
        writeln!(out, "  {n:<16} {c} elements")?;
    }
    writeln!(out, "rules (packets / bytes):")?;
    for c in &s.counters {
        writeln!(
            out,
            "  {:<10} {:<40} {:>10} {:>14}",
            c.chain, c.rule, c.packets, c.bytes
        )?;
    }
    for (k, v) in &s.extra {
        if k == "logship" {
            print_logship(out, v)?;
        } else if k == "api" {
            match (v["url"].as_str(), v["fingerprint_sha256"].as_str()) {
                (Some(url), Some(fp)) => writeln!(out, "api: {url}, certificate SHA-256 {fp}")?,
                _ => writeln!(
                    out,
                    "api: NOT RUNNING: {}",
                    v["error"].as_str().unwrap_or("unknown")
                )?,
            }
        } else if let Some(text) = v.as_str() {
            writeln!(out, "{k}: {text}")?;
        } else {
            writeln!(out, "{k}: {v}")?;
        }
    }
    Ok(())
}

/// `bulkhead logs`: read the event stream from the daemon's control socket.
fn logs(g: &Global, follow: bool, format: Format) -> Result<ExitCode, CliError> {
    use crate::control::{self, Request, Response};
    use std::io::BufRead;
    let state_dir = match state_dir_of(g) {
        Ok(d) => d,
        Err(code) => return Ok(code),
    };
    let mut s = control::connect(&state_dir)?.ok_or_else(|| {
        CliError::Daemon("no daemon runs (`bulkhead run`): no events to show".into())
    })?;
    let mut req = serde_json::to_string(&Request::Logs { follow }).expect("serializes");
    req.push('\n');
    // a daemon that refuses the connection answers with one error line: read it even when
    // sending the request failed
    let sent = s.write_all(req.as_bytes());
    let mut out = std::io::stdout().lock();
    let mut answered = false;
    for line in std::io::BufReader::new(&s).lines() {
        let line = line.map_err(|e| CliError::Daemon(format!("the control socket: {e}")))?;
        answered = true;
        let resp: Response = serde_json::from_str(&line)
            .map_err(|e| CliError::Daemon(format!("bad answer: {e}")))?;
        if !resp.ok {
            return Err(CliError::Daemon(resp.error.unwrap_or_default()));
        }
        let evs: Vec<crate::logship::Event> =
            serde_json::from_value(resp.data).map_err(|e| CliError::Daemon(e.to_string()))?;
        for ev in &evs {
            match format {
                Format::Json => writeln!(out, "{}", crate::logship::json_line(ev))?,
                Format::Text => writeln!(out, "{}", crate::logship::text_line(ev))?,
            }
        }
        out.flush()?;
        if !follow {
            break;
        }
    }
    if !answered {
        let why = match sent {
            Err(e) => e.to_string(),
            Ok(()) => "closed without an answer".into(),
        };
        return Err(CliError::Daemon(format!("the control socket: {why}")));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_logship(out: &mut impl Write, v: &serde_json::Value) -> std::io::Result<()> {
    let targets: Vec<crate::logship::ship::TargetStatus> =
        serde_json::from_value(v["targets"].clone()).unwrap_or_default();
    writeln!(out, "log targets (events: {}):", v["events"])?;
    for t in &targets {
        writeln!(
            out,
            "  {:<10} {:<4} {:<21} {:<12} sent {} spooled {} dropped-when-full {} resent {} in-spool {} ({} bytes){}",
            t.name,
            t.transport,
            t.addr,
            if t.connected {
                "connected"
            } else {
                "DISCONNECTED"
            },
            t.sent,
            t.spooled,
            t.dropped,
            t.resent,
            t.spool_frames,
            t.spool_bytes,
            t.last_error
                .as_ref()
                .map_or(String::new(), |e| format!("; last error: {e}"))
        )?;
    }
    let n = &v["nflog"];
    writeln!(
        out,
        "nflog group {}: {}, {} records, {} lost, {} alerts, {} quarantined",
        n["group"],
        if n["bound"].as_bool() == Some(true) {
            "bound"
        } else {
            "NOT BOUND"
        },
        n["records"],
        n["lost"],
        n["alerts"],
        n["quarantined"]
    )
}

fn spawn_watchdog(g: &Global, state_dir: &std::path::Path) -> Result<(), CliError> {
    let exe = std::env::current_exe()?;
    let mut c = std::process::Command::new(exe);
    c.arg("-c").arg(&g.config).arg("--state-dir").arg(state_dir);
    if g.lab {
        c.arg("--lab");
    }
    if let Some(b) = g.lab_backend {
        c.arg("--lab-backend").arg(Backend::from(b).name());
    }
    c.arg("confirm-watchdog")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // a session of its own, so the watchdog outlives this terminal session
    crate::sys::proc::new_session_on_spawn(&mut c);
    c.spawn()?;
    Ok(())
}

fn watchdog(g: &Global, state_dir: &std::path::Path) -> Result<ExitCode, CliError> {
    use crate::control::{self, Request};
    use crate::supervisor::Gateway;
    loop {
        let gw = Gateway::open(&g.config, Some(state_dir.to_path_buf()), g.lab_mode())?;
        let Some(p) = gw.pending() else {
            return Ok(ExitCode::SUCCESS);
        };
        drop(gw);
        let now = crate::supervisor::gateway::now_unix();
        if now >= p.deadline {
            // the daemon, when it runs, does it itself
            if control::call(
                state_dir,
                &Request::Status,
                std::time::Duration::from_secs(5),
            )
            .is_some()
            {
                return Ok(ExitCode::SUCCESS);
            }
            let mut gw = Gateway::open(&g.config, Some(state_dir.to_path_buf()), g.lab_mode())?;
            gw.check_deadline()?;
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(std::time::Duration::from_millis(
            ((p.deadline - now) * 1000).min(500),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state directory comes from the one key when it is certain, else from a full parse.
    #[test]
    fn quick_state_dir_reads_the_one_key_or_gives_up() {
        let q = |t: &str| quick_state_dir(t);
        assert_eq!(
            q(
                "[system]\nhostname = \"a\"\nstate_dir = \"/srv/bh\" # here\n[groups.g]\nmembers = []\n"
            ),
            Some(PathBuf::from("/srv/bh"))
        );
        assert_eq!(
            q("[system]\nhostname = \"a\"\n"),
            Some(PathBuf::from("/var/lib/bulkhead"))
        );
        // anything less certain: the full parse decides (and reports errors)
        for t in [
            "[segments.x]\nstate_dir = \"/srv/bh\"\n",
            "[system]\nstate_dir = \"relative\"\n",
            "[system]\nstate_dir = \"/a\"\n# state_dir = \"/b\"\n",
            "system = { state_dir = \"/srv/bh\" }\n",
            "system.hostname = \"a\"\n",
            "[system]\nstate_dir = '''/srv\n'''\n",
        ] {
            assert_eq!(q(t), None, "{t}");
        }
    }
}
