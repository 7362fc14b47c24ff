//! Serve DHCP on the pools of a JSON file until SIGTERM or Ctrl-C.
//!
//! ```text
//! dhcp_serve POOLS.json STATE_DIR
//! ```
//!
//! POOLS.json is a JSON list of `PoolConfig`, for example
//!
//! ```json
//! [{"segment": "dmz", "interface": "veth-dmz", "server_addr": "198.18.10.1",
//!   "subnet": "198.18.10.0/24", "ranges": [["198.18.10.100", "198.18.10.150"]],
//!   "lease_time": 3600, "max_lease_time": 86400, "dns": ["198.18.10.1"],
//!   "domain": "dmz.example", "mtu": 1400, "extra_options": [[42, [198, 18, 10, 1]]],
//!   "reservations": [{"mac": "02:00:00:00:00:07", "addr": "198.18.10.7",
//!                     "hostname": "cam", "group": "cameras"}]}]
//! ```
//!
//! Prints one line `ready` once
//! all sockets are open, then one JSON line per lease event. Log level from
//! `BULKHEAD_LOG` (error, warn, info, debug, trace; default info), logs go
//! to stderr.

use std::io::Write;
use std::path::PathBuf;

use bulkhead::dhcp::{PoolConfig, serve};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let level = std::env::var("BULKHEAD_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args_os().skip(1);
    let (Some(pools), Some(state)) = (args.next(), args.next()) else {
        eprintln!("usage: dhcp_serve POOLS.json STATE_DIR");
        std::process::exit(2);
    };
    let pools: Vec<PoolConfig> = serde_json::from_slice(&std::fs::read(PathBuf::from(pools))?)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handle = serve(pools, &PathBuf::from(state), Some(tx)).await?;
    println!("ready");
    std::io::stdout().flush()?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            Some(ev) = rx.recv() => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", serde_json::to_string(&ev)?)?;
                out.flush()?;
            }
        }
    }
    let stats = handle.store_stats();
    handle.shutdown().await?;
    eprintln!(
        "dhcp_serve: stopped; {} commits, {} fsyncs",
        stats.commits, stats.fsyncs
    );
    Ok(())
}
