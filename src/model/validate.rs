//! config (wire) → model, collecting every problem with its place.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use super::addr::{self, AddrRange, PortRange, merge_ports, parse_duration, parse_mac};
use super::*;
use crate::config::{self, Source};
use crate::diag::{Diagnostic, Report};

const KEYWORDS: &[&str] = &["internet", "any", "gateway", "quarantine", "segments"];
/// DHCP options Bulkhead fills in itself; the config may not set them by code.
const MANAGED_OPTIONS: &[(u8, &str)] = &[
    (1, "subnet mask (from segment.subnet)"),
    (3, "router (the segment gateway)"),
    (6, "DNS servers (dhcp.dns)"),
    (15, "domain name (dhcp.domain)"),
    (26, "interface MTU (segment.mtu)"),
    (28, "broadcast address (from segment.subnet)"),
    (50, "requested address"),
    (51, "lease time (dhcp.lease_time)"),
    (53, "message type"),
    (54, "server identifier"),
    (55, "parameter request list"),
    (57, "maximum message size"),
    (58, "renewal time"),
    (59, "rebinding time"),
    (61, "client identifier"),
];

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

/// Validate a parsed config into a model. Returns the model with its warnings, or every error.
pub fn build(src: &Source) -> Result<(Model, Report), Report> {
    let mut v = V {
        src,
        diags: Vec::new(),
    };
    let c = &src.config;

    // system
    let hostname = c
        .system
        .hostname
        .clone()
        .unwrap_or_else(|| "bulkhead".into());
    if !hostname_ok(&hostname) {
        v.err(
            "system.hostname",
            format!("`{hostname}` is not a valid hostname"),
        );
    }
    let backend = match c.system.backend.as_deref() {
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
    let state_dir = PathBuf::from(c.system.state_dir.as_deref().unwrap_or("/var/lib/bulkhead"));
    if !state_dir.is_absolute() {
        v.err("system.state_dir", "state_dir must be an absolute path");
    }

    // uplink
    let uplink = match &c.uplink {
        None => {
            v.err(
                "uplink",
                "missing [uplink] section: the gateway needs an uplink interface",
            );
            Uplink {
                interface: String::new(),
                addressing: UplinkAddressing::Dhcp,
                masquerade: true,
                mtu: None,
            }
        }
        Some(u) => {
            v.ifname("uplink.interface", &u.interface);
            let addressing = match u.address.as_deref() {
                None | Some("dhcp") => {
                    if u.gateway.is_some() {
                        v.err(
                            "uplink.gateway",
                            "a gateway is given only with a static address; DHCP supplies it",
                        );
                    }
                    UplinkAddressing::Dhcp
                }
                Some(a) => match a.parse::<Ipv4Net>() {
                    Ok(net) => {
                        let gateway = match u.gateway.as_deref() {
                            None => None,
                            Some(g) => match config::parse_ipv4(g) {
                                Ok(g) if net.contains(&g) && g != net.addr() => Some(g),
                                Ok(g) if g == net.addr() => {
                                    v.err(
                                        "uplink.gateway",
                                        format!("gateway {g} is the uplink's own address"),
                                    );
                                    None
                                }
                                Ok(g) => {
                                    v.err(
                                        "uplink.gateway",
                                        format!(
                                            "gateway {g} is outside the uplink subnet {}",
                                            net.trunc()
                                        ),
                                    );
                                    None
                                }
                                Err(e) => {
                                    v.err("uplink.gateway", e);
                                    None
                                }
                            },
                        };
                        UplinkAddressing::Static {
                            address: net,
                            gateway,
                        }
                    }
                    Err(_) => {
                        v.err(
                            "uplink.address",
                            format!("`{a}` is neither \"dhcp\" nor an address with prefix like 203.0.113.2/24"),
                        );
                        UplinkAddressing::Dhcp
                    }
                },
            };
            let mtu = v.mtu("uplink.mtu", u.mtu);
            Uplink {
                interface: u.interface.clone(),
                addressing,
                masquerade: u.masquerade.unwrap_or(true),
                mtu,
            }
        }
    };

    // trunk
    let trunk = c.trunk.as_ref().map(|t| {
        v.ifname("trunk.interface", &t.interface);
        if t.interface == uplink.interface {
            v.err(
                "trunk.interface",
                format!("`{}` is already the uplink", t.interface),
            );
        }
        Trunk {
            interface: t.interface.clone(),
            mtu: v.mtu("trunk.mtu", t.mtu),
        }
    });

    // names
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
            if names.segments.contains_key(n) {
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

    // groups
    let mut groups = Vec::new();
    for (n, g) in &c.groups {
        let p = format!("groups.{n}");
        let mut members = Vec::new();
        for (i, m) in g.members.iter().enumerate() {
            match AddrRange::parse(m) {
                Ok(r) => members.push(r),
                Err(e) => v.err(format!("{p}.members[{i}]"), e),
            }
        }
        groups.push(Group {
            name: n.clone(),
            description: g.description.clone(),
            members,
            loc: v.loc(&p),
        });
    }

    // segments
    let mut segments: Vec<Segment> = Vec::new();
    let mut vlan_ids: BTreeMap<u16, String> = BTreeMap::new();
    let mut ifnames: BTreeMap<String, String> = BTreeMap::new();
    for (n, s) in &c.segments {
        let p = format!("segments.{n}");
        let subnet = match s.subnet.parse::<Ipv4Net>() {
            Ok(net) if net.addr() != net.network() => {
                v.err(
                    format!("{p}.subnet"),
                    format!(
                        "`{}` has host bits set; did you mean `{}`?",
                        s.subnet,
                        net.trunc()
                    ),
                );
                None
            }
            Ok(net) if net.prefix_len() > 30 => {
                v.err(
                    format!("{p}.subnet"),
                    format!("subnet {net} is too small for a segment (at most /30)"),
                );
                None
            }
            Ok(net) => Some(net),
            Err(_) => {
                v.err(
                    format!("{p}.subnet"),
                    format!("`{}` is not a subnet like 192.168.10.0/24", s.subnet),
                );
                None
            }
        };
        let gateway = match config::parse_ipv4(&s.gateway) {
            Ok(g) => {
                if let Some(net) = subnet {
                    if !net.contains(&g) {
                        v.err(
                            format!("{p}.gateway"),
                            format!("gateway {g} is outside the segment subnet {net}"),
                        );
                    } else if g == net.network() || g == net.broadcast() {
                        v.err(
                            format!("{p}.gateway"),
                            format!("gateway {g} is the network or broadcast address of {net}"),
                        );
                    }
                }
                Some(g)
            }
            Err(e) => {
                v.err(format!("{p}.gateway"), e);
                None
            }
        };
        let link = match (s.vlan, &s.interface) {
            (Some(_), Some(_)) => {
                v.err(
                    format!("{p}.interface"),
                    "a segment is either a VLAN (`vlan`) or a plain port (`interface`), not both",
                );
                None
            }
            (None, None) => {
                v.err(
                    p.clone(),
                    "a segment needs `vlan = ID` (on the trunk) or `interface = NAME`",
                );
                None
            }
            (Some(id), None) => {
                if !(1..=4094).contains(&id) {
                    v.err(
                        format!("{p}.vlan"),
                        format!("VLAN id {id} is out of range 1-4094"),
                    );
                    None
                } else if let Some(other) = vlan_ids.get(&(id as u16)) {
                    v.err(
                        format!("{p}.vlan"),
                        format!("VLAN id {id} is already used by segment `{other}`"),
                    );
                    None
                } else {
                    vlan_ids.insert(id as u16, n.clone());
                    match &trunk {
                        None => {
                            v.err(
                                format!("{p}.vlan"),
                                "a VLAN segment needs a [trunk] interface",
                            );
                            None
                        }
                        Some(t) => {
                            let ifname = s
                                .link_name
                                .clone()
                                .unwrap_or_else(|| format!("{}.{id}", t.interface));
                            let path = if s.link_name.is_some() {
                                format!("{p}.link_name")
                            } else {
                                format!("{p}.vlan")
                            };
                            v.ifname(&path, &ifname).then_some((
                                SegmentLink::Vlan {
                                    parent: t.interface.clone(),
                                    id: id as u16,
                                },
                                ifname,
                                path,
                            ))
                        }
                    }
                }
            }
            (None, Some(ifn)) => {
                if s.link_name.is_some() {
                    v.err(
                        format!("{p}.link_name"),
                        "link_name names a VLAN link; a port segment uses its `interface` name",
                    );
                }
                v.ifname(&format!("{p}.interface"), ifn)
                    .then(|| (SegmentLink::Port, ifn.clone(), format!("{p}.interface")))
            }
        };
        let (link, ifname) = match link {
            Some((l, ifn, path)) => {
                if ifn == uplink.interface {
                    v.err(path, format!("`{ifn}` is the uplink interface"));
                } else if trunk.as_ref().is_some_and(|t| t.interface == ifn) {
                    v.err(
                        path,
                        format!("`{ifn}` is the trunk interface; segments on it are VLANs"),
                    );
                } else if let Some(other) = ifnames.insert(ifn.clone(), n.clone()) {
                    v.err(
                        path,
                        format!("interface `{ifn}` is already used by segment `{other}`"),
                    );
                }
                (Some(l), ifn)
            }
            None => (None, String::new()),
        };
        let mtu = v.mtu(&format!("{p}.mtu"), s.mtu);
        if let (Some(m), Some(SegmentLink::Vlan { .. }), Some(t)) = (mtu, &link, &trunk) {
            let tm = t.mtu.unwrap_or(1500);
            if m > tm {
                v.err(
                    format!("{p}.mtu"),
                    format!("MTU {m} is larger than the trunk's MTU {tm}"),
                );
            }
        }
        let internet = match (s.internet.unwrap_or(false), &s.egress) {
            (true, Some(_)) => {
                v.err(format!("{p}.egress"), "`internet = true` allows all egress; `egress` limits it to a profile: choose one");
                InternetAccess::Full
            }
            (true, None) => InternetAccess::Full,
            (false, Some(e)) => {
                if !egress_names.contains(e) {
                    v.err(
                        format!("{p}.egress"),
                        format!("no egress profile named `{e}`"),
                    );
                }
                InternetAccess::Profile(e.clone())
            }
            (false, None) => InternetAccess::None,
        };
        let dhcp = match (&s.dhcp, subnet, gateway) {
            // A disabled pool is still checked, so it can be switched on safely later.
            (Some(d), Some(net), Some(gw)) => {
                dhcp_pool(&mut v, &p, d, net, gw, &names).filter(|_| d.enabled.unwrap_or(true))
            }
            _ => None,
        };
        if let (Some(l), Some(net), Some(gw)) = (link, subnet, gateway) {
            segments.push(Segment {
                name: n.clone(),
                description: s.description.clone(),
                link: l,
                ifname,
                subnet: net,
                gateway: gw,
                mtu,
                internet,
                management: s.management.unwrap_or(false),
                dhcp,
                loc: v.loc(&p),
            });
        }
    }
    // subnet overlaps
    for i in 0..segments.len() {
        for j in 0..i {
            let (a, b) = (&segments[j], &segments[i]);
            if a.subnet.contains(&b.subnet.network()) || b.subnet.contains(&a.subnet.network()) {
                v.err(
                    format!("segments.{}.subnet", b.name),
                    format!(
                        "subnet {} overlaps segment `{}` ({})",
                        b.subnet, a.name, a.subnet
                    ),
                );
            }
        }
        if let UplinkAddressing::Static { address, .. } = &uplink.addressing {
            let s = &segments[i];
            let up = address.trunc();
            if up.contains(&s.subnet.network()) || s.subnet.contains(&up.network()) {
                v.err(
                    format!("segments.{}.subnet", s.name),
                    format!("subnet {} overlaps the uplink subnet {up}", s.subnet),
                );
            }
        }
    }
    // management segment
    let mgmt: Vec<&Segment> = segments.iter().filter(|s| s.management).collect();
    if c.segments.is_empty() {
        v.err(
            "",
            "no [segments.NAME] defined: the gateway has nothing to segment",
        );
    } else if mgmt.is_empty() && c.segments.len() == segments.len() {
        v.err(
            "segments",
            "no management segment: mark exactly one segment with `management = true`, or nobody can manage the gateway",
        );
    }
    for extra in mgmt.iter().skip(1) {
        v.err(
            format!("segments.{}.management", extra.name),
            format!(
                "segment `{}` is already the management segment; there can be only one",
                mgmt[0].name
            ),
        );
    }

    // egress profiles
    let mut egress = Vec::new();
    for (n, e) in &c.egress {
        let p = format!("egress.{n}");
        let mut allow = Vec::new();
        for (i, s) in e.allow.iter().enumerate() {
            if let Some(svc) =
                v.service(&format!("{p}.allow[{i}]"), Some(&s.proto), s.ports.as_ref())
            {
                allow.push(svc);
            }
        }
        if e.allow.is_empty() {
            v.warn(format!("{p}.allow"), "profile allows nothing");
        }
        egress.push(EgressProfile {
            name: n.clone(),
            description: e.description.clone(),
            allow,
        });
    }
    let gateway_egress = c.system.gateway_egress.clone();
    if let Some(g) = &gateway_egress
        && !egress_names.contains(g)
    {
        v.err(
            "system.gateway_egress",
            format!("no egress profile named `{g}`"),
        );
    }

    // management access
    let mut ssh_port = 22;
    if let Some(p) = c.management.ssh_port {
        match PortRange::check_number(p) {
            Ok(p) => ssh_port = p,
            Err(e) => v.err("management.ssh_port", e),
        }
    }
    let api_port = c.management.api_port.and_then(|p| {
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
    let mut sources = Vec::new();
    let mut whole_segment = false;
    for (i, s) in c.management.sources.iter().flatten().enumerate() {
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
    if c.management.sources.as_ref().is_some_and(|s| s.is_empty()) {
        v.err(
            "management.sources",
            "an empty source list would lock every administrator out of the gateway",
        );
    }
    if whole_segment {
        sources.clear();
    }
    let management = Management {
        ssh_port,
        api_port,
        sources,
    };

    // rules
    let mut rules = Vec::new();
    let mut rule_names: BTreeMap<String, usize> = BTreeMap::new();
    for (i, r) in c.rules.iter().enumerate() {
        let p = format!("rules[{i}]");
        let name_ok = !r.name.is_empty()
            && r.name.len() <= 40
            && r.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name_ok {
            v.err(
                format!("{p}.name"),
                format!(
                    "rule name `{}` must be 1-40 characters of a-z, A-Z, 0-9, - _ .",
                    r.name
                ),
            );
        } else if let Some(j) = rule_names.insert(r.name.clone(), i) {
            v.err(
                format!("{p}.name"),
                format!("rule name `{}` is already used by rules[{j}]", r.name),
            );
        }
        let from = names.endpoint(&r.from);
        let to = names.endpoint(&r.to);
        if from.is_none() {
            v.err(
                format!("{p}.from"),
                format!(
                    "`{}` is not a segment, a group, `internet` or `any`",
                    r.from
                ),
            );
        }
        if to.is_none() {
            v.err(
                format!("{p}.to"),
                format!(
                    "`{}` is not a segment, a group, `internet`, `gateway` or `any`",
                    r.to
                ),
            );
        }
        let service = v.service(&p, r.proto.as_ref(), r.ports.as_ref());
        let (Some(from), Some(to), Some(service)) = (from, to, service) else {
            continue;
        };
        if from == Endpoint::Gateway {
            v.err(format!("{p}.from"), "`gateway` can only be a destination; the gateway's own egress is set by system.gateway_egress");
            continue;
        }
        if from == to && from != Endpoint::Any {
            match &from {
                Endpoint::Segment(s) => v.warn(format!("{p}.to"), format!("traffic inside segment `{s}` never crosses the gateway: only the host firewalls from `bulkhead hostrules` enforce this rule")),
                Endpoint::Internet => v.err(format!("{p}.to"), "traffic from the internet to the internet is not routed by the gateway"),
                _ => {}
            }
        }
        rules.push(Rule {
            name: r.name.clone(),
            description: r.description.clone(),
            from,
            to,
            service,
            log: r.log.unwrap_or(false),
            loc: v.loc(&p),
        });
    }

    // forwards
    let mut forwards: Vec<Forward> = Vec::new();
    for (i, f) in c.forwards.iter().enumerate() {
        let p = format!("forwards[{i}]");
        let name_ok = !f.name.is_empty()
            && f.name.len() <= 40
            && f.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name_ok {
            v.err(
                format!("{p}.name"),
                format!(
                    "forward name `{}` must be 1-40 characters of a-z, A-Z, 0-9, - _ .",
                    f.name
                ),
            );
        } else if let Some(j) = rule_names.insert(f.name.clone(), usize::MAX) {
            let other = if j == usize::MAX {
                "another forward".to_string()
            } else {
                format!("rules[{j}]")
            };
            v.err(
                format!("{p}.name"),
                format!("name `{}` is already used by {other}", f.name),
            );
        }
        let proto = match Proto::parse(&f.proto) {
            Ok(pr @ (Proto::Tcp | Proto::Udp)) => Some(pr),
            Ok(_) => {
                v.err(format!("{p}.proto"), "a port forward is tcp or udp");
                None
            }
            Err(e) => {
                v.err(format!("{p}.proto"), e);
                None
            }
        };
        let port = v.port(&format!("{p}.port"), &f.port);
        let to_port = f.to_port.and_then(|tp| {
            PortRange::check_number(tp)
                .map_err(|e| v.err(format!("{p}.to_port"), e))
                .ok()
        });
        if let (Some(pr), Some(_)) = (port, to_port)
            && pr.lo != pr.hi
        {
            v.err(
                format!("{p}.to_port"),
                "to_port cannot be combined with a port range (ranges map one to one)",
            );
        }
        let to = match config::parse_ipv4(&f.to) {
            Ok(a) => match segments.iter().find(|s| s.subnet.contains(&a)) {
                Some(s) if s.gateway == a => {
                    v.err(format!("{p}.to"), format!("{a} is the gateway itself"));
                    None
                }
                Some(s) => Some((a, s.name.clone())),
                None => {
                    v.err(format!("{p}.to"), format!("{a} is not inside any segment"));
                    None
                }
            },
            Err(e) => {
                v.err(format!("{p}.to"), e);
                None
            }
        };
        let from = match f.from.as_deref() {
            None => Some(Endpoint::Internet),
            Some(s) => match names.endpoint(s) {
                Some(e @ (Endpoint::Internet | Endpoint::Any | Endpoint::Group(_))) => Some(e),
                _ => {
                    v.err(
                        format!("{p}.from"),
                        format!("`{s}` is not a group, `internet` or `any`"),
                    );
                    None
                }
            },
        };
        let (Some(proto), Some(port), Some((to, to_segment)), Some(from)) = (proto, port, to, from)
        else {
            continue;
        };
        if let Some(o) = forwards
            .iter()
            .find(|o| o.proto == proto && (o.port.lo <= port.hi && port.lo <= o.port.hi))
        {
            v.err(
                format!("{p}.port"),
                format!(
                    "{} port {port} is already forwarded by `{}`",
                    proto.name(),
                    o.name
                ),
            );
            continue;
        }
        forwards.push(Forward {
            name: f.name.clone(),
            description: f.description.clone(),
            proto,
            port,
            to,
            to_segment,
            to_port,
            from,
            log: f.log.unwrap_or(false),
            loc: v.loc(&p),
        });
    }

    // logging
    let l = &c.logging;
    let level = l.level.clone().unwrap_or_else(|| "info".into());
    if !["trace", "debug", "info", "warn", "error"].contains(&level.as_str()) {
        v.err(
            "logging.level",
            format!("unknown level `{level}`, expected trace, debug, info, warn or error"),
        );
    }
    let nflog_group = match l.nflog_group {
        None => 1,
        Some(g) if (0..=65535).contains(&g) => g as u16,
        Some(g) => {
            v.err(
                "logging.nflog_group",
                format!("NFLOG group {g} is out of range 0-65535"),
            );
            1
        }
    };
    let drop_log_rate = match l.drop_log_rate.as_deref() {
        None => Rate {
            count: 10,
            per: "second",
        },
        Some(s) => match parse_rate(s) {
            Ok(r) => r,
            Err(e) => {
                v.err("logging.drop_log_rate", e);
                Rate {
                    count: 10,
                    per: "second",
                }
            }
        },
    };
    let drop_log_burst = match l.drop_log_burst {
        None => 20,
        Some(b) if (1..=10000).contains(&b) => b as u32,
        Some(b) => {
            v.err(
                "logging.drop_log_burst",
                format!("burst {b} is out of range 1-10000"),
            );
            20
        }
    };
    let spool_limit = match l.spool_limit {
        None => 64 << 20,
        Some(b) if b >= 65536 => b as u64,
        Some(b) => {
            v.err(
                "logging.spool_limit",
                format!("spool limit {b} bytes is below the minimum of 65536"),
            );
            64 << 20
        }
    };
    let mut targets = Vec::new();
    for (i, t) in l.targets.iter().enumerate() {
        let p = format!("logging.targets[{i}]");
        let host = match config::parse_ipv4(&t.host) {
            Ok(h) => Some(h),
            Err(_) => {
                v.err(format!("{p}.host"), format!("`{}` must be an IPv4 address: the gateway does not depend on DNS to ship its logs", t.host));
                None
            }
        };
        let transport = match t.transport.as_deref() {
            None | Some("udp") => Transport::Udp,
            Some("tcp") => Transport::Tcp,
            Some("tls") => Transport::Tls,
            Some(o) => {
                v.err(
                    format!("{p}.transport"),
                    format!("unknown transport `{o}`, expected udp, tcp or tls"),
                );
                Transport::Udp
            }
        };
        let format = match t.format.as_deref() {
            None | Some("rfc5424") => LogFormat::Rfc5424,
            Some("rfc3164") => LogFormat::Rfc3164,
            Some(o) => {
                v.err(
                    format!("{p}.format"),
                    format!("unknown format `{o}`, expected rfc5424 or rfc3164"),
                );
                LogFormat::Rfc5424
            }
        };
        let port = match t.port {
            None => {
                if transport == Transport::Tls {
                    6514
                } else {
                    514
                }
            }
            Some(n) => PortRange::check_number(n).unwrap_or_else(|e| {
                v.err(format!("{p}.port"), e);
                514
            }),
        };
        if transport == Transport::Tls && t.ca_file.is_none() {
            v.err(
                format!("{p}.ca_file"),
                "a tls target needs ca_file to verify the receiver",
            );
        }
        if transport != Transport::Tls
            && (t.ca_file.is_some() || t.cert_file.is_some() || t.key_file.is_some())
        {
            v.err(
                p.clone(),
                "ca_file, cert_file and key_file apply only to transport = \"tls\"",
            );
        }
        if t.cert_file.is_some() != t.key_file.is_some() {
            v.err(
                p.clone(),
                "a client certificate needs both cert_file and key_file",
            );
        }
        let name = t.name.clone().unwrap_or_else(|| format!("target{i}"));
        if name.is_empty()
            || name.len() > 32
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            v.err(
                format!("{p}.name"),
                format!("target name `{name}` must be 1-32 characters of a-z, A-Z, 0-9, - _ ."),
            );
        }
        if let Some(host) = host {
            targets.push(LogTarget {
                name,
                host,
                port,
                transport,
                format,
                ca_file: t.ca_file.as_ref().map(PathBuf::from),
                cert_file: t.cert_file.as_ref().map(PathBuf::from),
                key_file: t.key_file.as_ref().map(PathBuf::from),
            });
        }
    }
    let logging = Logging {
        level,
        json: l.json.unwrap_or(false),
        nflog_group,
        drop_log_rate,
        drop_log_burst,
        spool_limit,
        targets,
    };

    // alerts
    let a = &c.alerts;
    let drop_burst = a.drop_burst.as_ref().and_then(|d| {
        let w = v.duration("alerts.drop_burst.window", &d.window);
        if d.count < 1 {
            v.err("alerts.drop_burst.count", "count must be at least 1");
            return None;
        }
        w.map(|w| (d.count.min(u32::MAX as i64) as u32, w))
    });
    let port_scan = a.port_scan.as_ref().and_then(|s| {
        let w = v.duration("alerts.port_scan.window", &s.window);
        let pos = |v: &mut V, path: &str, x: Option<i64>| match x {
            Some(n) if n >= 2 => Some(n as u32),
            Some(n) => {
                v.err(path, format!("{n} is too small: a scan means at least 2 distinct targets"));
                None
            }
            None => None,
        };
        let ports = pos(&mut v, "alerts.port_scan.ports", s.ports);
        let hosts = pos(&mut v, "alerts.port_scan.hosts", s.hosts);
        if s.ports.is_none() && s.hosts.is_none() {
            v.err("alerts.port_scan", "set `ports` (distinct destination ports) and/or `hosts` (distinct destination hosts)");
        }
        w.map(|window| PortScan { ports, hosts, window })
    });
    let mut sensitive_ports = Vec::new();
    if let Some(sp) = &a.sensitive_ports {
        for (i, p) in sp.ports.iter().enumerate() {
            if let Some(r) = v.port(&format!("alerts.sensitive_ports.ports[{i}]"), p) {
                sensitive_ports.push(r);
            }
        }
    }
    let quarantine = a.quarantine.as_ref().and_then(|q| {
        if !q.enabled.unwrap_or(true) {
            return None;
        }
        match &q.timeout {
            Some(t) => v.duration("alerts.quarantine.timeout", t),
            None => Some(600),
        }
    });
    let alerts = Alerts {
        drop_burst,
        port_scan,
        sensitive_ports: merge_ports(sensitive_ports),
        quarantine,
    };

    // sysctl
    let s = &c.sysctl;
    let rp_filter = match s.rp_filter {
        None => 1,
        Some(n) if (0..=2).contains(&n) => n as u8,
        Some(n) => {
            v.err(
                "sysctl.rp_filter",
                format!("rp_filter {n} must be 0 (off), 1 (strict) or 2 (loose)"),
            );
            1
        }
    };
    let mut extra = BTreeMap::new();
    for (k, val) in s.extra.iter().flatten() {
        let ok = k.split('.').count() >= 2
            && k.split('.').all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-/".contains(c))
            });
        let managed = [
            ("net.ipv4.ip_forward", "forwarding"),
            ("net.ipv4.conf.all.rp_filter", "rp_filter"),
            ("net.ipv4.conf.default.rp_filter", "rp_filter"),
            ("net.ipv4.conf.all.accept_redirects", "accept_redirects"),
            ("net.ipv4.conf.default.accept_redirects", "accept_redirects"),
            ("net.ipv6.conf.all.accept_redirects", "accept_redirects"),
            ("net.ipv6.conf.default.accept_redirects", "accept_redirects"),
            ("net.ipv4.conf.all.send_redirects", "send_redirects"),
            ("net.ipv4.conf.default.send_redirects", "send_redirects"),
            (
                "net.ipv4.conf.all.accept_source_route",
                "accept_source_route",
            ),
            (
                "net.ipv4.conf.default.accept_source_route",
                "accept_source_route",
            ),
            ("net.ipv4.tcp_syncookies", "syncookies"),
            ("net.ipv4.conf.all.log_martians", "log_martians"),
            ("net.ipv4.conf.default.log_martians", "log_martians"),
            (
                "net.ipv4.icmp_echo_ignore_broadcasts",
                "ignore_broadcast_ping",
            ),
        ];
        if let Some((_, key)) = managed.iter().find(|(m, _)| m == k) {
            v.err(
                format!("sysctl.extra.{k}"),
                format!("`{k}` is set by sysctl.{key}; set that key instead"),
            );
            continue;
        }
        if !ok {
            v.err(
                format!("sysctl.extra.{k}"),
                format!("`{k}` is not a sysctl key like net.ipv4.tcp_timestamps"),
            );
        } else if val.trim().is_empty() || val.contains('\n') {
            v.err(
                format!("sysctl.extra.{k}"),
                "value must be one non-empty line",
            );
        } else {
            extra.insert(k.clone(), val.clone());
        }
    }
    let sysctl = Sysctl {
        forwarding: s.forwarding.unwrap_or(true),
        rp_filter,
        accept_redirects: s.accept_redirects.unwrap_or(false),
        send_redirects: s.send_redirects.unwrap_or(false),
        accept_source_route: s.accept_source_route.unwrap_or(false),
        syncookies: s.syncookies.unwrap_or(true),
        log_martians: s.log_martians.unwrap_or(true),
        ignore_broadcast_ping: s.ignore_broadcast_ping.unwrap_or(true),
        extra,
    };
    if !sysctl.forwarding {
        v.warn(
            "sysctl.forwarding",
            "forwarding is off: no segment can reach another or the internet",
        );
    }

    let model = Model {
        file: src.locator.file.clone(),
        hostname,
        backend,
        state_dir,
        gateway_egress,
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
    let errors_before = v
        .diags
        .iter()
        .any(|d| d.severity == crate::diag::Severity::Error);
    if !errors_before {
        v.diags.extend(crate::plan::invariants::check(&model));
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

fn parse_rate(s: &str) -> Result<Rate, String> {
    let bad = || format!("`{s}` is not a rate like \"10/second\" (second, minute or hour)");
    let (n, per) = s.split_once('/').ok_or_else(bad)?;
    let count: u32 = n.trim().parse().map_err(|_| bad())?;
    let per = match per.trim() {
        "second" | "s" => "second",
        "minute" | "m" => "minute",
        "hour" | "h" => "hour",
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err("a rate of 0 would log nothing; remove logging instead".into());
    }
    Ok(Rate { count, per })
}

fn dhcp_pool(
    v: &mut V,
    seg_path: &str,
    d: &config::Dhcp,
    net: Ipv4Net,
    gw: Ipv4Addr,
    names: &Names,
) -> Option<DhcpPool> {
    let p = format!("{seg_path}.dhcp");
    let mut ranges: Vec<AddrRange> = Vec::new();
    for (i, r) in d.ranges.iter().enumerate() {
        let rp = format!("{p}.ranges[{i}]");
        let r = match AddrRange::parse(r) {
            Ok(r) => r,
            Err(e) => {
                v.err(rp, e);
                continue;
            }
        };
        if !r.within(&net) {
            v.err(
                rp,
                format!("range {r} is not inside the segment subnet {net}"),
            );
        } else if r.contains(gw) {
            v.err(rp, format!("range {r} covers the gateway address {gw}"));
        } else if r.contains(net.network()) || r.contains(net.broadcast()) {
            v.err(
                rp,
                format!("range {r} covers the network or broadcast address of {net}"),
            );
        } else if let Some(o) = ranges.iter().find(|o| o.overlaps(&r)) {
            v.err(rp, format!("range {r} overlaps range {o}"));
        } else {
            ranges.push(r);
        }
    }
    if d.ranges.is_empty() && d.reservations.is_empty() {
        v.err(
            format!("{p}.ranges"),
            "DHCP needs at least one range or reservation (or set enabled = false)",
        );
    }
    let lease_time = d
        .lease_time
        .as_ref()
        .map_or(Some(3600), |x| v.duration(&format!("{p}.lease_time"), x));
    let max_lease_time = d.max_lease_time.as_ref().map_or(Some(86400), |x| {
        v.duration(&format!("{p}.max_lease_time"), x)
    });
    if let (Some(l), Some(m)) = (lease_time, max_lease_time) {
        if l > m {
            v.err(
                format!("{p}.lease_time"),
                format!("lease_time ({l}s) is longer than max_lease_time ({m}s)"),
            );
        }
        if m > u32::MAX as u64 {
            v.err(format!("{p}.max_lease_time"), "lease time too long");
        }
    }
    let mut dns = Vec::new();
    for (i, s) in d.dns.iter().flatten().enumerate() {
        match config::parse_ipv4(s) {
            Ok(a) => dns.push(a),
            Err(e) => v.err(format!("{p}.dns[{i}]"), e),
        }
    }
    if let Some(dom) = &d.domain
        && !hostname_ok(dom)
    {
        v.err(
            format!("{p}.domain"),
            format!("`{dom}` is not a valid domain name"),
        );
    }
    let mut reservations: Vec<Reservation> = Vec::new();
    for (i, r) in d.reservations.iter().enumerate() {
        let rp = format!("{p}.reservations[{i}]");
        let mac = parse_mac(&r.mac)
            .map_err(|e| v.err(format!("{rp}.mac"), e))
            .ok();
        let address = match config::parse_ipv4(&r.address) {
            Ok(a) if !net.contains(&a) => {
                v.err(
                    format!("{rp}.address"),
                    format!("{a} is not inside the segment subnet {net}"),
                );
                None
            }
            Ok(a) if a == gw => {
                v.err(
                    format!("{rp}.address"),
                    format!("{a} is the gateway address"),
                );
                None
            }
            Ok(a) if a == net.network() || a == net.broadcast() => {
                v.err(
                    format!("{rp}.address"),
                    format!("{a} is the network or broadcast address"),
                );
                None
            }
            Ok(a) => Some(a),
            Err(e) => {
                v.err(format!("{rp}.address"), e);
                None
            }
        };
        if let Some(h) = &r.hostname
            && !hostname_ok(h)
        {
            v.err(
                format!("{rp}.hostname"),
                format!("`{h}` is not a valid hostname"),
            );
        }
        if let Some(g) = &r.group
            && !names.groups.contains(g)
        {
            v.err(format!("{rp}.group"), format!("no group named `{g}`"));
        }
        let (Some(mac), Some(address)) = (mac, address) else {
            continue;
        };
        if let Some(j) = reservations.iter().position(|o| o.mac == mac) {
            v.err(
                format!("{rp}.mac"),
                format!(
                    "MAC {} is already reserved by reservations[{j}]",
                    addr::fmt_mac(&mac)
                ),
            );
            continue;
        }
        if let Some(j) = reservations.iter().position(|o| o.address == address) {
            v.err(
                format!("{rp}.address"),
                format!("{address} is already reserved by reservations[{j}]"),
            );
            continue;
        }
        reservations.push(Reservation {
            mac,
            address,
            hostname: r.hostname.clone(),
            group: r.group.clone(),
        });
    }
    let mut options = Vec::new();
    for (i, o) in d.options.iter().enumerate() {
        let op = format!("{p}.options[{i}]");
        if let Some(opt) = dhcp_option(v, &op, o) {
            if options.iter().any(|x: &DhcpOption| x.code == opt.code) {
                v.err(
                    format!("{op}.code"),
                    format!("option {} is set twice", opt.code),
                );
            } else {
                options.push(opt);
            }
        }
    }
    Some(DhcpPool {
        ranges,
        lease_time: lease_time.unwrap_or(3600).min(u32::MAX as u64) as u32,
        max_lease_time: max_lease_time.unwrap_or(86400).min(u32::MAX as u64) as u32,
        dns,
        domain: d.domain.clone(),
        reservations,
        options,
        relays: dhcp_relays(v, &p, &d.relays),
    })
}

/// `[segments.NAME.dhcp] relays`: each a relay agent's IPv4 address (its giaddr), once.
fn dhcp_relays(v: &mut V, p: &str, relays: &[String]) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for (i, s) in relays.iter().enumerate() {
        let rp = format!("{p}.relays[{i}]");
        match config::parse_ipv4(s) {
            Ok(a) if a.is_unspecified() || a.is_broadcast() || a.is_multicast() => {
                v.err(rp, format!("{a} cannot be a relay agent address (giaddr)"))
            }
            Ok(a) if out.contains(&a) => v.err(rp, format!("relay {a} is listed twice")),
            Ok(a) => out.push(a),
            Err(e) => v.err(rp, e),
        }
    }
    out
}

fn dhcp_option(v: &mut V, p: &str, o: &config::DhcpOption) -> Option<DhcpOption> {
    if !(1..=254).contains(&o.code) {
        v.err(
            format!("{p}.code"),
            format!("option code {} is out of range 1-254", o.code),
        );
        return None;
    }
    let code = o.code as u8;
    if let Some((_, what)) = MANAGED_OPTIONS.iter().find(|(c, _)| *c == code) {
        v.err(
            format!("{p}.code"),
            format!("option {code} is set by bulkhead itself: {what}"),
        );
        return None;
    }
    let given = [
        o.ips.is_some(),
        o.text.is_some(),
        o.hex.is_some(),
        o.u8.is_some(),
        o.u16.is_some(),
        o.u32.is_some(),
        o.bool.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if given != 1 {
        v.err(
            p.to_string(),
            "give exactly one value: ips, text, hex, u8, u16, u32 or bool",
        );
        return None;
    }
    let int = |v: &mut V, n: i64, max: i64, key: &str| -> Option<i64> {
        if (0..=max).contains(&n) {
            Some(n)
        } else {
            v.err(format!("{p}.{key}"), format!("{n} does not fit in {key}"));
            None
        }
    };
    let (data, shown) = if let Some(ips) = &o.ips {
        let mut data = Vec::new();
        for (i, s) in ips.iter().enumerate() {
            match config::parse_ipv4(s) {
                Ok(a) => data.extend(a.octets()),
                Err(e) => {
                    v.err(format!("{p}.ips[{i}]"), e);
                    return None;
                }
            }
        }
        (data, ips.join(", "))
    } else if let Some(t) = &o.text {
        (t.as_bytes().to_vec(), format!("\"{t}\""))
    } else if let Some(h) = &o.hex {
        let clean: String = h
            .chars()
            .filter(|c| *c != ':' && !c.is_whitespace())
            .collect();
        if !clean.len().is_multiple_of(2) || !clean.chars().all(|c| c.is_ascii_hexdigit()) {
            v.err(
                format!("{p}.hex"),
                format!("`{h}` is not hex bytes like \"0a:0b:0c\""),
            );
            return None;
        }
        let data = (0..clean.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap())
            .collect();
        (data, format!("0x{clean}"))
    } else if let Some(n) = o.u8 {
        (vec![int(v, n, 255, "u8")? as u8], n.to_string())
    } else if let Some(n) = o.u16 {
        (
            (int(v, n, 65535, "u16")? as u16).to_be_bytes().to_vec(),
            n.to_string(),
        )
    } else if let Some(n) = o.u32 {
        (
            (int(v, n, u32::MAX as i64, "u32")? as u32)
                .to_be_bytes()
                .to_vec(),
            n.to_string(),
        )
    } else {
        let b = o.bool.unwrap_or(false);
        (vec![b as u8], b.to_string())
    };
    if data.is_empty() || data.len() > 255 {
        v.err(
            p.to_string(),
            format!("option payload must be 1-255 bytes, got {}", data.len()),
        );
        return None;
    }
    Some(DhcpOption { code, data, shown })
}
