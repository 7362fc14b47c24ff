//! [management]: SSH and API ports, and the groups allowed to manage the gateway.

use super::*;

pub(super) fn check(
    v: &mut V,
    cm: &config::Management,
    segments: &[Segment],
    groups: &[Group],
    names: &Names,
) -> Management {
    let mgmt: Vec<&Segment> = segments.iter().filter(|s| s.management).collect();
    let mut ssh_port = 22;
    if let Some(p) = cm.ssh_port {
        match PortRange::check_number(p) {
            Ok(p) => ssh_port = p,
            Err(e) => v.err("management.ssh_port", e),
        }
    }
    let api_port = cm.api_port.and_then(|p| {
        PortRange::check_number(p)
            .map_err(|e| v.err("management.api_port", e))
            .ok()
    });
    if api_port == Some(ssh_port) {
        v.err(
            "management.api_port",
            "api_port and ssh_port are the same port",
        );
    }
    let tls_file = |key: &str, v: &mut V, f: &Option<String>| {
        let f = f.as_ref()?;
        let p = std::path::PathBuf::from(f);
        if !p.is_absolute() {
            v.err(format!("management.{key}"), "must be an absolute path");
            return None;
        }
        Some(p)
    };
    let api_cert = tls_file("api_cert", v, &cm.api_cert);
    let api_key = tls_file("api_key", v, &cm.api_key);
    match (&cm.api_cert, &cm.api_key) {
        (Some(_), None) => v.err(
            "management.api_cert",
            "api_cert needs api_key (the certificate's private key)",
        ),
        (None, Some(_)) => v.err(
            "management.api_key",
            "api_key needs api_cert (the certificate it belongs to)",
        ),
        _ => {}
    }
    let mut sources = Vec::new();
    let mut whole_segment = false;
    for (i, s) in cm.sources.iter().flatten().enumerate() {
        let p = format!("management.sources[{i}]");
        if names.groups.contains(s) {
            sources.push(s.clone());
            if let (Some(m), Some(g)) = (mgmt.first(), groups.iter().find(|g| &g.name == s))
                && g.members.iter().any(|r| !r.within(&m.subnet))
            {
                v.warn(
                        p,
                        format!(
                            "group `{s}` has members outside the management segment `{}` ({}); only those inside it can manage the gateway",
                            m.name, m.subnet
                        ),
                    );
            }
        } else if mgmt.first().is_some_and(|m| &m.name == s) {
            // the whole management segment: no restriction, whatever else is listed
            whole_segment = true;
        } else {
            v.err(
                p,
                format!("`{s}` is not a group (sources are groups inside the management segment)"),
            );
        }
    }
    if cm.sources.as_ref().is_some_and(|s| s.is_empty()) {
        v.err(
            "management.sources",
            "an empty source list would lock every administrator out of the gateway",
        );
    }
    if whole_segment {
        sources.clear();
    }
    Management {
        ssh_port,
        api_port,
        api_cert,
        api_key,
        sources,
    }
}
