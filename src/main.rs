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
    let b = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        );
    if std::env::var("BULKHEAD_LOG_FORMAT").as_deref() == Ok("json") {
        b.json().init();
    } else {
        b.init();
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
