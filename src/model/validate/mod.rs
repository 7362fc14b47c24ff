//! config (wire) → model, collecting every problem with its place. One validator per section
//! of the config, in the order they depend on each other: names first, then the sections that
//! refer to them.

mod alerts;
mod dhcp;
mod egress;
mod forwards;
mod groups;
mod logging;
mod management;
mod rules;
mod segments;
mod segments6;
mod sysctl;
mod system;
mod trunk;
mod uplink;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use super::addr::{self, AddrRange, PortRange, merge_ports, parse_duration, parse_mac};
use super::*;
use crate::config::{self, Source};
use crate::diag::{Diagnostic, Report};

const KEYWORDS: &[&str] = &["internet", "any", "gateway", "quarantine", "segments"];

struct V<'a> {
    src: &'a Source,
    diags: Vec<Diagnostic>,
}

impl V<'_> {
    fn err(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(path, msg));
    }

    fn warn(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.diags.push(Diagnostic::warning(path, msg));
    }

    fn loc(&self, path: &str) -> Loc {
        let line = self
            .src
            .locator
            .key_span_of(path)
            .map_or(0, |s| self.src.locator.line_col(s.start).0);
        Loc {
            file: self.src.locator.file.clone(),
            line,
        }
    }

    fn ifname(&mut self, path: &str, name: &str) -> bool {
        let problem = if name.is_empty() {
            Some("interface name is empty".to_string())
        } else if name.len() > 15 {
            Some(format!(
                "interface name `{name}` is {} bytes; Linux allows at most 15",
                name.len()
            ))
        } else if name == "." || name == ".." {
            Some(format!("`{name}` is not a valid interface name"))
        } else if name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '"' || c.is_whitespace() || !c.is_ascii_graphic())
        {
            Some(format!(
                "interface name `{name}` contains a character Linux or the firewall cannot take"
            ))
        } else {
            None
        };
        match problem {
            Some(p) => {
                self.err(path, p);
                false
            }
            None => true,
        }
    }

    fn name(&mut self, path: &str, kind: &str, n: &str) -> bool {
        let ok = !n.is_empty()
            && n.len() <= 24
            && n.starts_with(|c: char| c.is_ascii_lowercase())
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            self.err(
                path,
                format!(
                    "{kind} name `{n}` must start with a-z and use only a-z, 0-9 and _ (at most 24)"
                ),
            );
        } else if KEYWORDS.contains(&n) {
            self.err(
                path,
                format!("`{n}` is a reserved word and cannot name a {kind}"),
            );
            return false;
        }
        ok
    }

    fn port(&mut self, path: &str, p: &config::Port) -> Option<PortRange> {
        let r = match p {
            config::Port::Number(n) => PortRange::check_number(*n).map(PortRange::single),
            config::Port::Text(s) => PortRange::parse_text(s),
        };
        r.map_err(|e| self.err(path, e)).ok()
    }

    fn duration(&mut self, path: &str, d: &config::Duration) -> Option<u64> {
        let r = match d {
            config::Duration::Seconds(n) if *n > 0 => Ok(*n as u64),
            config::Duration::Seconds(n) => Err(format!("duration must be positive, got {n}")),
            config::Duration::Text(s) => parse_duration(s).and_then(|v| {
                if v == 0 {
                    Err("duration must be positive".into())
                } else {
                    Ok(v)
                }
            }),
        };
        r.map_err(|e| self.err(path, e)).ok()
    }

    fn mtu(&mut self, path: &str, m: Option<i64>) -> Option<u32> {
        match m {
            Some(v) if (576..=9216).contains(&v) => Some(v as u32),
            Some(v) => {
                self.err(path, format!("MTU {v} is out of range 576-9216"));
                None
            }
            None => None,
        }
    }

    fn service(
        &mut self,
        path: &str,
        proto: Option<&config::Protos>,
        ports: Option<&Vec<config::Port>>,
    ) -> Option<Service> {
        let names: Vec<String> = match proto {
            None => vec!["any".into()],
            Some(config::Protos::One(s)) => vec![s.clone()],
            Some(config::Protos::Many(v)) => v.clone(),
        };
        let mut protos = BTreeSet::new();
        let mut ok = true;
        for (i, n) in names.iter().enumerate() {
            let p = if matches!(proto, Some(config::Protos::Many(_))) {
                format!("{path}.proto[{i}]")
            } else {
                format!("{path}.proto")
            };
            match Proto::parse(n) {
                Ok(x) => {
                    protos.insert(x);
                }
                Err(e) => {
                    self.err(p, e);
                    ok = false;
                }
            }
        }
        if protos.is_empty() && ok {
            self.err(format!("{path}.proto"), "empty protocol list");
            return None;
        }
        if protos.contains(&Proto::Any) && protos.len() > 1 {
            self.err(
                format!("{path}.proto"),
                "`any` already covers every protocol; list it alone",
            );
            ok = false;
        }
        let mut prs = Vec::new();
        if let Some(ps) = ports {
            if ps.is_empty() {
                self.err(
                    format!("{path}.ports"),
                    "empty port list; leave `ports` out to allow every port",
                );
                ok = false;
            }
            for (i, p) in ps.iter().enumerate() {
                match self.port(&format!("{path}.ports[{i}]"), p) {
                    Some(r) => prs.push(r),
                    None => ok = false,
                }
            }
            if proto.is_none() {
                self.err(
                    format!("{path}.ports"),
                    "ports need a protocol: add proto = \"tcp\", \"udp\" or [\"tcp\", \"udp\"]",
                );
                ok = false;
            } else if protos.iter().any(|p| matches!(p, Proto::Icmp | Proto::Any)) {
                self.err(
                    format!("{path}.ports"),
                    "ports apply only to tcp and udp, not to icmp or any",
                );
                ok = false;
            }
        }
        ok.then(|| Service {
            protos: protos.into_iter().collect(),
            ports: merge_ports(prs),
        })
    }
}

struct Names {
    segments: BTreeMap<String, usize>,
    groups: BTreeSet<String>,
}

impl Names {
    fn endpoint(&self, s: &str) -> Option<Endpoint> {
        match s {
            "internet" => Some(Endpoint::Internet),
            "any" => Some(Endpoint::Any),
            "gateway" => Some(Endpoint::Gateway),
            _ if self.segments.contains_key(s) => Some(Endpoint::Segment(s.to_string())),
            _ if self.groups.contains(s) => Some(Endpoint::Group(s.to_string())),
            _ => None,
        }
    }
}

/// A hostname or domain name: dot-separated labels of a-z, A-Z, 0-9 and -.
fn hostname_ok(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// The names of segments, groups and egress profiles, each checked once.
fn names(v: &mut V, c: &config::Config) -> (Names, BTreeSet<String>) {
    let mut names = Names {
        segments: BTreeMap::new(),
        groups: BTreeSet::new(),
    };
    for (i, (n, _)) in c.segments.iter().enumerate() {
        if v.name(&format!("segments.{n}"), "segment", n) {
            names.segments.insert(n.clone(), i);
        }
    }
    for (n, _) in &c.groups {
        let p = format!("groups.{n}");
        if v.name(&p, "group", n) {
            if n.ends_with("_v6") {
                v.err(
                    p,
                    format!("group name `{n}` ends in `_v6`, which names the IPv6 set of group `{}`; choose another name", n.trim_end_matches("_v6")),
                );
            } else if names.segments.contains_key(n) {
                v.err(
                    p,
                    format!("`{n}` names a segment already; a group needs a name of its own"),
                );
            } else {
                names.groups.insert(n.clone());
            }
        }
    }
    let mut egress_names = BTreeSet::new();
    for (n, _) in &c.egress {
        if v.name(&format!("egress.{n}"), "egress profile", n) {
            egress_names.insert(n.clone());
        }
    }
    (names, egress_names)
}

/// Validate a parsed config into a model. Returns the model with its warnings, or every error.
pub fn build(src: &Source) -> Result<(Model, Report), Report> {
    let mut v = V {
        src,
        diags: Vec::new(),
    };
    let c = &src.config;

    let (hostname, backend, state_dir) = system::check(&mut v, &c.system);
    let ntp = system::check_ntp(&mut v, &c.system);
    let uplink = uplink::check(&mut v, c.uplink.as_ref());
    let trunk = trunk::check(&mut v, c.trunk.as_ref(), &uplink);
    let (names, egress_names) = names(&mut v, c);
    let groups = groups::check(&mut v, &c.groups);
    let cx6 = segments6::Ctx {
        uplink: &uplink,
        pd_written: c.uplink.as_ref().and_then(|u| u.prefix_delegation),
    };
    let segments = segments::check(
        &mut v,
        &c.segments,
        &uplink,
        &trunk,
        &names,
        &egress_names,
        &cx6,
    );
    let (egress, gateway_egress) = egress::check(&mut v, &c.egress, &c.system, &egress_names);
    let management = management::check(&mut v, &c.management, &segments, &groups, &names);
    let (rules, mut rule_names) = rules::check(&mut v, &c.rules, &names);
    let forwards = forwards::check(&mut v, &c.forwards, &mut rule_names, &segments, &names);
    let logging = logging::check(&mut v, &c.logging);
    let alerts = alerts::check(&mut v, &c.alerts, &groups);
    let sysctl = sysctl::check(&mut v, &c.sysctl);

    let model = Model {
        file: src.locator.file.clone(),
        hostname,
        backend,
        state_dir,
        gateway_egress,
        ntp,
        flow_offload: c.system.flow_offload.unwrap_or(true),
        uplink,
        trunk,
        segments,
        groups,
        rules,
        forwards,
        egress,
        management,
        logging,
        alerts,
        sysctl,
    };
    if model.backend == Backend::Iptables
        && let Some(key) = first_ipv6_key(&model)
    {
        v.err(
            key,
            "IPv6 needs the nftables backend: the iptables backend renders IPv4 only; set [system] backend = \"nftables\" or remove the IPv6 keys",
        );
    }
    let mut diagnostics = v.diags;
    for d in &mut diagnostics {
        src.locator.resolve(d);
    }
    let report = Report {
        locator: src.locator.clone(),
        diagnostics,
    };
    if report.has_errors() {
        Err(report)
    } else {
        Ok((model, report))
    }
}

/// The first IPv6 key of the config, for the iptables backend's refusal.
fn first_ipv6_key(m: &Model) -> Option<String> {
    if !m.uplink.address6.is_none() {
        return Some("uplink.address6".into());
    }
    if m.uplink.prefix_delegation.is_some() {
        return Some("uplink.prefix_delegation".into());
    }
    if let Some(s) = m.segments6().next() {
        return Some(format!("segments.{}.subnet6", s.segment));
    }
    m.groups
        .iter()
        .find(|g| !g.members6.is_empty())
        .map(|g| format!("groups.{}.members", g.name))
}

/// A rule's or forward's name: 1-40 characters of a-z, A-Z, 0-9, `-`, `_`, `.` (it labels
/// firewall comments, counters and log prefixes).
fn entry_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}
