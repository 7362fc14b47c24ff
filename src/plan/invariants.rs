//! Checked invariants of a model, computed on its real ruleset: no policy may lock the
//! management segment out of the gateway, and nothing else may reach its management ports.

use std::net::Ipv4Addr;

use super::explain::{Flow, explain};
use super::ruleset;
use crate::diag::{Diagnostic, Report};
use crate::model::{Model, Proto, Segment};

/// Load, validate and check a config file: the one entry point every command uses. The
/// config's own checks ([`crate::model::load`]), then, when they found no error, the
/// invariants of [`check`]. On success returns the model and the warnings; on failure,
/// every problem found.
pub fn load(path: &std::path::Path) -> Result<(Model, Report), Report> {
    checked(crate::model::load(path))
}

/// Like [`load`], from text (tests, `setup`).
pub fn load_str(file: &str, text: &str) -> Result<(Model, Report), Report> {
    checked(crate::model::load_str(file, text))
}

/// Add the invariants' findings, located in the config file, to a valid model's report.
pub fn checked(r: Result<(Model, Report), Report>) -> Result<(Model, Report), Report> {
    let (model, mut report) = r?;
    for mut d in check(&model) {
        report.locator.resolve(&mut d);
        report.diagnostics.push(d);
    }
    if report.has_errors() {
        Err(report)
    } else {
        Ok((model, report))
    }
}

/// The first usable host address of a segment that is not the gateway.
pub fn sample_host(s: &Segment) -> Option<Ipv4Addr> {
    s.subnet.hosts().find(|a| *a != s.gateway)
}

fn rule_path(m: &Model, kind: &str, name: &str) -> String {
    match kind {
        "rule" => m
            .rules
            .iter()
            .position(|r| r.name == name)
            .map_or("rules".into(), |i| format!("rules[{i}]")),
        "forward" => m
            .forwards
            .iter()
            .position(|f| f.name == name)
            .map_or("forwards".into(), |i| format!("forwards[{i}]")),
        _ => "management".into(),
    }
}

pub fn check(m: &Model) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let Some(mg) = m.segments.iter().find(|s| s.management) else {
        return out;
    };
    let rs = ruleset::build(m);
    let mut ports = vec![("SSH", m.management.ssh_port)];
    if let Some(a) = m.management.api_port {
        ports.push(("the management API", a));
    }

    // 1. Someone in the management segment can reach SSH (and the API) on the gateway.
    let mut admins: Vec<Ipv4Addr> = Vec::new();
    if m.management.sources.is_empty() {
        admins.extend(sample_host(mg));
    } else {
        for g in &m.management.sources {
            if let Some(g) = m.group(g) {
                admins.extend(
                    g.members
                        .iter()
                        .filter(|r| r.within(&mg.subnet))
                        .map(|r| r.lo)
                        .filter(|a| *a != mg.gateway),
                );
            }
        }
    }
    if admins.is_empty() {
        out.push(Diagnostic::error(
            "management.sources",
            format!(
                "no address of the management segment `{}` ({}) is left to manage the gateway: this would lock every administrator out",
                mg.name, mg.subnet
            ),
        ));
    }
    for (what, port) in &ports {
        for a in admins.iter().take(1) {
            let d = explain(
                m,
                &rs,
                &Flow {
                    src: (*a).into(),
                    dst: mg.gateway.into(),
                    proto: Proto::Tcp,
                    port: Some(*port),
                },
            );
            if !d.allowed() {
                out.push(Diagnostic::error(
                    format!("segments.{}.management", mg.name),
                    format!(
                        "{what} (tcp/{port}) from {a} to the gateway {} would be dropped ({}): the management segment would be locked out",
                        mg.gateway,
                        d.describe()
                    ),
                ));
            }
        }
    }

    // 2. Nobody outside the management segment reaches the management ports of the gateway.
    let mut outsiders: Vec<(String, Ipv4Addr)> = Vec::new();
    for s in m.segments.iter().filter(|s| !s.management) {
        if let Some(h) = sample_host(s) {
            outsiders.push((format!("segment `{}`", s.name), h));
        }
    }
    for g in &m.groups {
        for r in &g.members {
            if !r.within(&mg.subnet) {
                outsiders.push((format!("group `{}`", g.name), r.lo));
                break;
            }
        }
    }
    outsiders.push(("the internet".into(), Ipv4Addr::new(198, 51, 100, 77)));
    let mut targets: Vec<Ipv4Addr> = m.segments.iter().map(|s| s.gateway).collect();
    if let crate::model::UplinkAddressing::Static { address, .. } = &m.uplink.addressing {
        targets.push(address.addr());
    }
    // Every config rule of the input chain that would accept such a packet is reported, not
    // only the first one that matches.
    if !m.management.sources.is_empty() {
        // with restricted sources, the rest of the management segment is an outsider too
        let allowed = |a: Ipv4Addr| {
            m.management.sources.iter().any(|g| {
                m.group(g)
                    .is_some_and(|g| g.members.iter().any(|r| r.contains(a)))
            })
        };
        if let Some(h) = mg.subnet.hosts().find(|a| *a != mg.gateway && !allowed(*a)) {
            outsiders.push((
                format!("{h} (management segment, outside management.sources)"),
                h,
            ));
        }
    }
    let input = rs.chain("input").expect("input chain");
    let mut reported = std::collections::BTreeSet::new();
    for (who, src) in &outsiders {
        for (what, port) in &ports {
            for dst in &targets {
                let (packet, _) = super::explain::classify(
                    m,
                    &rs,
                    &Flow {
                        src: (*src).into(),
                        dst: (*dst).into(),
                        proto: Proto::Tcp,
                        port: Some(*port),
                    },
                );
                if packet.chain != "input" {
                    continue;
                }
                for r in &input.rules {
                    let config_rule = matches!(r.origin.kind, "rule" | "forward");
                    if !config_rule
                        || r.verdict != super::ruleset::Verdict::Accept
                        || !super::explain::rule_matches(&rs, r, &packet)
                    {
                        continue;
                    }
                    let path = rule_path(m, r.origin.kind, &r.origin.name);
                    if reported.insert((path.clone(), *port)) {
                        out.push(Diagnostic::error(
                            path,
                            format!(
                                "rule `{}` lets {who} reach {what} (tcp/{port}) on the gateway; it is allowed only from the management segment `{}`{}",
                                r.origin.name,
                                mg.name,
                                if m.management.sources.is_empty() { "" } else { " (management.sources)" }
                            ),
                        ));
                    }
                }
            }
        }
    }

    // 3. Rules between groups of one segment never cross the gateway.
    for (i, r) in m.rules.iter().enumerate() {
        let seg_of = |e: &crate::model::Endpoint| match e {
            crate::model::Endpoint::Group(g) => m
                .group(g)
                .and_then(|g| m.segment_of_group(g))
                .map(|s| s.name.clone()),
            crate::model::Endpoint::Segment(s) => Some(s.clone()),
            _ => None,
        };
        if let (Some(a), Some(b)) = (seg_of(&r.from), seg_of(&r.to))
            && a == b
            && !matches!(
                (&r.from, &r.to),
                (
                    crate::model::Endpoint::Segment(_),
                    crate::model::Endpoint::Segment(_)
                )
            )
        {
            out.push(Diagnostic::warning(
                    format!("rules[{i}]"),
                    format!(
                        "both ends of `{}` are in segment `{a}`: the gateway never sees this traffic; it is enforced by the host firewalls from `bulkhead hostrules`",
                        r.name
                    ),
                ));
        }
    }
    out
}
