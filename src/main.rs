#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// The daemon's own log follows `[logging] level` and `json` of its config;
/// `BULKHEAD_LOG` and `BULKHEAD_LOG_FORMAT` override them (and set it for other commands).
fn init_logging(cli: &bulkhead::cli::Cli) {
    let cfg = matches!(cli.command, bulkhead::cli::Command::Run)
        .then(|| bulkhead::plan::load(&cli.global.config).ok())
        .flatten()
        .map(|(m, _)| (m.logging.level, m.logging.json));
    let level_name = std::env::var("BULKHEAD_LOG")
        .ok()
        .or_else(|| cfg.as_ref().map(|c| c.0.clone()));
    let level = match level_name.as_deref() {
        Some("trace") => tracing::Level::TRACE,
        Some("debug") => tracing::Level::DEBUG,
        Some("warn") => tracing::Level::WARN,
        Some("error") => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    let json = match std::env::var("BULKHEAD_LOG_FORMAT").as_deref() {
        Ok(f) => f == "json",
        Err(_) => cfg.is_some_and(|c| c.1),
    };
    use tracing_subscriber::prelude::*;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let filter = tracing_subscriber::filter::LevelFilter::from_level(level);
    // the console, and the event stream the daemon ships (inactive in other commands)
    let reg = tracing_subscriber::registry()
        .with(filter)
        .with(bulkhead::logship::layer::ShipLayer);
    if json {
        reg.with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .init();
    } else {
        reg.with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(ansi),
        )
        .init();
    }
}

fn main() -> ExitCode {
    let cli = bulkhead::cli::Cli::parse();
    // What Bulkhead writes is never writable by other users, whatever umask it was started
    // with; the daemon's state (leases name clients) is not even readable by them.
    let deny = if matches!(cli.command, bulkhead::cli::Command::Run) {
        0o077
    } else {
        0o022
    };
    bulkhead::sys::proc::restrict_umask(deny);
    init_logging(&cli);
    match bulkhead::cli::run(cli) {
        Ok(code) => code,
        Err(bulkhead::cli::CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bulkhead: {:#}", anyhow::Error::from(e));
            ExitCode::from(1)
        }
    }
}
