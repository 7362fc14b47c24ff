//! The uplink's IPv6 client: with `[uplink] address6 = "dhcpv6"` or `prefix_delegation`,
//! `bulkhead run` writes a dhcpcd config and runs `dhcpcd` (IPv6 only, in the foreground) as
//! its child, like chronyd; it is started again when it exits and restarted when a reload
//! changes what it depends on. With `address6 = "slaac"` alone the kernel numbers the uplink
//! (accept_ra = 2 on the uplink only) and no dhcpcd runs. Not run in the lab.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::model::{Model, Uplink6Addressing};

/// What dhcpcd is for, by the model: (IA_NA address, prefix length asked for).
fn wants(m: &Model) -> (bool, Option<u8>) {
    (
        m.uplink.address6 == Uplink6Addressing::Dhcpv6,
        m.uplink.prefix_delegation,
    )
}

/// Whether the model needs dhcpcd on the uplink.
pub fn needed(m: &Model) -> bool {
    let (na, pd) = wants(m);
    na || pd.is_some()
}

/// What a running dhcpcd depends on: a reload that changes it restarts dhcpcd.
pub fn key(m: &Model) -> (String, bool, Option<u8>, bool) {
    let (na, pd) = wants(m);
    (
        m.uplink.interface.clone(),
        na,
        pd,
        m.uplink.address6 == Uplink6Addressing::Slaac,
    )
}

/// The dhcpcd config for the model's uplink.
pub fn config(m: &Model) -> String {
    let (na, pd) = wants(m);
    let mut s = String::from(
        "# written by bulkhead run from [uplink] address6 / prefix_delegation\n\
         ipv6only\n\
         # the gateway's own resolver config and hooks are not dhcpcd's business\n\
         nohook resolv.conf, ntp.conf, timesyncd.conf, hostname\n\
         duid\n\
         persistent\n\
         noipv4ll\n",
    );
    if m.uplink.address6 == Uplink6Addressing::Slaac {
        // the kernel takes the upstream's RAs (accept_ra = 2): dhcpcd only asks for a prefix
        s.push_str("noipv6rs\n");
    }
    s.push_str(&format!("interface {}\n", m.uplink.interface));
    if na {
        s.push_str("  ia_na 1\n");
    }
    if let Some(p) = pd {
        // the prefix is asked for, not assigned to any interface by dhcpcd: Bulkhead numbers
        // the segments from it (subnet6 = "delegated")
        s.push_str(&format!("  ia_pd 2/::/{p}\n"));
    }
    s
}

fn conf_path(state_dir: &Path) -> PathBuf {
    state_dir.join("dhcpcd6.conf")
}

/// Start dhcpcd, or None when not needed, in the lab, or when it cannot run.
pub fn start(m: &Model, state_dir: &Path, lab: bool) -> Option<Child> {
    if !needed(m) || lab {
        return None;
    }
    let conf = conf_path(state_dir);
    if let Err(e) = std::fs::write(&conf, config(m)) {
        tracing::error!("cannot write {}: {e}", conf.display());
        return None;
    }
    // -B: foreground; -6: IPv6 only; -f: our config
    match Command::new("dhcpcd")
        .args(["-B", "-6", "-f"])
        .arg(&conf)
        .arg(&m.uplink.interface)
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(c) => {
            tracing::info!(interface = %m.uplink.interface, pid = c.id(), "uplink IPv6 client (dhcpcd) started");
            Some(c)
        }
        Err(e) => {
            tracing::error!("cannot start dhcpcd for [uplink] address6/prefix_delegation: {e}");
            None
        }
    }
}

pub fn stop(child: Option<Child>) {
    if let Some(mut c) = child {
        let _ = crate::sys::proc::terminate(c.id());
        let _ = c.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(uplink: &str) -> Model {
        let text = format!(
            "{uplink}\n[segments.a]\ninterface = \"lan0\"\nsubnet = \"198.18.2.0/24\"\ngateway = \"198.18.2.1\"\nmanagement = true\n"
        );
        crate::plan::load_str("t.toml", &text).unwrap().0
    }

    #[test]
    fn dhcpcd_asks_for_what_the_uplink_needs() {
        let m =
            model("[uplink]\ninterface = \"wan0\"\naddress6 = \"dhcpv6\"\nprefix_delegation = 56");
        assert!(needed(&m));
        let c = config(&m);
        assert!(c.contains("ipv6only\n"), "{c}");
        assert!(
            c.contains("interface wan0\n  ia_na 1\n  ia_pd 2/::/56\n"),
            "{c}"
        );
        assert!(!c.contains("noipv6rs"), "{c}");

        let m =
            model("[uplink]\ninterface = \"wan0\"\naddress6 = \"slaac\"\nprefix_delegation = 60");
        let c = config(&m);
        assert!(c.contains("noipv6rs\n"), "{c}");
        assert!(c.contains("interface wan0\n  ia_pd 2/::/60\n"), "{c}");
        assert!(!c.contains("ia_na"), "{c}");

        // the kernel alone does SLAAC; no IPv6 at all needs nothing either
        assert!(!needed(&model(
            "[uplink]\ninterface = \"wan0\"\naddress6 = \"slaac\""
        )));
        assert!(!needed(&model("[uplink]\ninterface = \"wan0\"")));
        assert!(
            start(
                &model("[uplink]\ninterface = \"wan0\""),
                Path::new("/nonexistent"),
                false
            )
            .is_none()
        );
    }
}
