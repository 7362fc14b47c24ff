use std::process::ExitCode;

use clap::Parser;

fn init_logging() {
    let level = match std::env::var("BULKHEAD_LOG").as_deref() {
        Ok("trace") => tracing::Level::TRACE,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("warn") => tracing::Level::WARN,
        Ok("error") => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    use tracing_subscriber::prelude::*;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let filter = tracing_subscriber::filter::LevelFilter::from_level(level);
    // the console, and the event stream the daemon ships (inactive in other commands)
    let reg = tracing_subscriber::registry()
        .with(filter)
        .with(bulkhead::logship::layer::ShipLayer);
    if std::env::var("BULKHEAD_LOG_FORMAT").as_deref() == Ok("json") {
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
    init_logging();
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
