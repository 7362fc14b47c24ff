//! [system]: hostname, firewall backend, state directory. `gateway_egress` names an
//! egress profile and is checked with them (egress.rs).

use super::*;

pub(super) fn check(v: &mut V, sys: &config::System) -> (String, Backend, PathBuf) {
    let hostname = sys.hostname.clone().unwrap_or_else(|| "bulkhead".into());
    if !hostname_ok(&hostname) {
        v.err(
            "system.hostname",
            format!("`{hostname}` is not a valid hostname"),
        );
    }
    let backend = match sys.backend.as_deref() {
        None | Some("nftables") => Backend::Nftables,
        Some("iptables") => Backend::Iptables,
        Some(o) => {
            v.err(
                "system.backend",
                format!("unknown firewall backend `{o}`, expected nftables or iptables"),
            );
            Backend::Nftables
        }
    };
    let state_dir = PathBuf::from(sys.state_dir.as_deref().unwrap_or("/var/lib/bulkhead"));
    if !state_dir.is_absolute() {
        v.err("system.state_dir", "state_dir must be an absolute path");
    }
    (hostname, backend, state_dir)
}
