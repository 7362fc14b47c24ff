//! The uplink's DHCP client, when the config says `uplink.address = "dhcp"`: busybox udhcpc
//! in the foreground, supervised by `bulkhead run`, with a hook script that puts the lease on
//! the uplink (address and default route) and nothing else.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::model::{Model, UplinkAddressing};

const SCRIPT: &str = r#"#!/bin/sh
# bulkhead: apply the uplink lease (no resolv.conf, no other hooks)
case "$1" in
  deconfig) ip -4 addr flush dev "$interface" ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip -4 addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip -4 route replace default via "${router%% *}" dev "$interface"
    echo "bulkhead: uplink $interface has $ip/${mask:-24} via ${router%% *} (lease ${lease}s)"
    ;;
esac
exit 0
"#;

/// Start the client, or None when the uplink is static (or no client can be run).
pub fn start(m: &Model, state_dir: &Path) -> Option<Child> {
    if m.uplink.addressing != UplinkAddressing::Dhcp {
        return None;
    }
    let script = state_dir.join("uplink-dhcp.sh");
    if let Err(e) = std::fs::write(&script, SCRIPT) {
        tracing::error!("cannot write the uplink DHCP hook: {e}");
        return None;
    }
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755));
    }
    let hostname = format!("hostname:{}", m.hostname);
    match Command::new("busybox")
        .args(["udhcpc", "-f", "-R", "-i", &m.uplink.interface, "-s"])
        .arg(&script)
        .args(["-x", &hostname])
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(c) => {
            tracing::info!(interface = %m.uplink.interface, pid = c.id(), "uplink DHCP client started");
            Some(c)
        }
        Err(e) => {
            tracing::error!(interface = %m.uplink.interface, "cannot start the uplink DHCP client (busybox udhcpc): {e}");
            None
        }
    }
}

/// Stop the client; `-R` makes it release the lease.
pub fn stop(child: Option<Child>) {
    if let Some(mut c) = child {
        // SIGTERM to the child this process started
        let _ = crate::sys::proc::terminate(c.id());
        let _ = c.wait();
    }
}
