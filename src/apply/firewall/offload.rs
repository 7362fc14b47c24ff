//! Does this kernel have nftables flowtables (nf_flow_table)? Asked once per applier with a
//! check-only transaction (`nft -c`): the kernel validates a scratch table holding a flowtable
//! and aborts it, so nothing is created and the ruleset generation does not move.

use crate::apply::cmd::run;

/// The scratch table of the probe (never committed).
const PROBE: &str = "add table inet bulkhead_probe\n\
add flowtable inet bulkhead_probe ft { hook ingress priority filter; devices = { lo }; }\n";

/// Why flow offload is not used although the config asks for it.
pub const NO_FLOW_TABLE: &str = "kernel has no nf_flow_table";

/// `Ok` when a flowtable can be created in this network namespace, else the reason.
pub fn probe(nft: &str) -> Result<(), String> {
    match run(nft, &["-c", "-f", "-"], Some(PROBE)) {
        Ok(_) => Ok(()),
        Err(e) if e.stderr.contains("No such file or directory") => Err(NO_FLOW_TABLE.into()),
        Err(e) if e.stderr.contains("Operation not supported") => Err(NO_FLOW_TABLE.into()),
        Err(e) => Err(format!("flowtable probe failed: {e}")),
    }
}
