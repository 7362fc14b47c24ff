//! Serve router advertisements and DHCPv6 on the segments of a JSON file until SIGTERM or
//! Ctrl-C.
//!
//! ```text
//! v6_serve SEGMENTS.json STATE_DIR
//! ```
//!
//! SEGMENTS.json is a JSON list of `SegmentV6`, for example
//!
//! ```json
//! [{"segment": "lan", "interface": "br-lan", "mode": "stateful",
//!   "subnet": "2001:db8:1::/64", "pool_start": "2001:db8:1::1000",
//!   "pool_end": "2001:db8:1::1fff", "dns": ["2001:db8:1::1"], "domains": ["lan.example"]}]
//! ```
//!
//! Each segment gets RAs for its subnet (M/O/A flags from the mode, RDNSS/DNSSL from dns and
//! domains) and the DHCPv6 server. Prints `ready` once every socket is open. Log level from
//! `BULKHEAD_LOG`; logs go to stderr.

use std::io::Write;
use std::path::PathBuf;

use bulkhead::dhcp::leases::StoreOptions;
use bulkhead::dhcp6::{Dhcp6Mode, SegmentV6, serve6};
use bulkhead::ra::{Mode, Prefix, RaConfig};
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
        .with_ansi(false)
        .init();
    let mut args = std::env::args_os().skip(1);
    let (Some(segs), Some(state)) = (args.next(), args.next()) else {
        eprintln!("usage: v6_serve SEGMENTS.json STATE_DIR");
        std::process::exit(2);
    };
    let segs: Vec<SegmentV6> = serde_json::from_slice(&std::fs::read(PathBuf::from(segs))?)?;
    let mut ras = Vec::new();
    for s in &segs {
        let mode = match s.mode {
            Dhcp6Mode::Stateless => Mode::Stateless,
            Dhcp6Mode::Stateful => Mode::Stateful,
        };
        let mut cfg = RaConfig::new(mode, vec![Prefix::new(s.subnet)]);
        cfg.dns = s.dns.clone();
        cfg.domains = s.domains.clone();
        ras.push(bulkhead::ra::spawn(&s.interface, cfg)?);
    }
    let handle = serve6(segs, &PathBuf::from(state), StoreOptions::default()).await?;
    println!("ready");
    std::io::stdout().flush()?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    for r in ras {
        r.stop().await;
    }
    handle.shutdown().await;
    eprintln!("v6_serve: stopped");
    Ok(())
}
