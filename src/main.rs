use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = bulkhead::cli::Cli::parse();
    match bulkhead::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bulkhead: {:#}", anyhow::Error::from(e));
            ExitCode::from(1)
        }
    }
}
