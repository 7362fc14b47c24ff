//! The plan: the complete desired state computed from a model. Pure and deterministic: the same
//! model always gives byte-identical output.

pub mod delegated;
pub mod explain;
pub mod hostrules;
pub mod invariants;
pub use invariants::{load, load_str};
pub mod iptables;
pub mod nft;
pub mod ruleset;

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};
use serde::Serialize;

use crate::model::{
    AddrRange, Backend, DhcpOption, Model, Reservation, SegmentLink, Uplink6Addressing,
    UplinkAddressing,
};
pub use ruleset::Ruleset;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum LinkKind {
    Vlan { parent: String, id: u16 },
    Port,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkPlan {
    pub name: String,
    #[serde(flatten)]
    pub kind: LinkKind,
    /// `trunk`, `uplink` or `segment:NAME`.
    pub role: String,
    pub mtu: Option<u32>,
    /// Addresses with prefix (gateway/prefix of the segment; gateway6/64 of an IPv6 segment,
    /// added without duplicate address detection).
    pub addresses: Vec<IpNet>,
    pub dhcp_client: bool,
    pub up: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoutePlan {
    pub dst: Ipv4Net,
    pub via: Ipv4Addr,
    pub dev: String,
}

/// The IPv6 default route of a static uplink `address6` (`::/0 via gateway6`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route6Plan {
    pub via: Ipv6Addr,
    pub dev: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SysctlPlan {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolPlan {
    pub segment: String,
    pub interface: String,
    pub subnet: Ipv4Net,
    pub server: Ipv4Addr,
    pub router: Ipv4Addr,
    pub broadcast: Ipv4Addr,
    pub ranges: Vec<AddrRange>,
    pub lease_time: u32,
    pub max_lease_time: u32,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub mtu: Option<u32>,
    pub reservations: Vec<Reservation>,
    pub options: Vec<DhcpOption>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<Ipv4Addr>,
}

/// The firewall as the chosen backend will load it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase", tag = "backend")]
pub enum FirewallText {
    Nftables { script: String },
    Iptables { ipset: String, rules: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub source: String,
    pub hostname: String,
    pub backend: Backend,
    pub links: Vec<LinkPlan>,
    pub routes: Vec<RoutePlan>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes6: Vec<Route6Plan>,
    pub sysctls: Vec<SysctlPlan>,
    pub ruleset: Ruleset,
    pub firewall: FirewallText,
    pub dhcp: Vec<PoolPlan>,
}

fn links(m: &Model) -> (Vec<LinkPlan>, Vec<RoutePlan>) {
    let mut out = Vec::new();
    if let Some(t) = &m.trunk {
        out.push(LinkPlan {
            name: t.interface.clone(),
            kind: LinkKind::Port,
            role: "trunk".into(),
            mtu: t.mtu,
            addresses: Vec::new(),
            dhcp_client: false,
            up: true,
        });
    }
    let mut routes = Vec::new();
    let (addresses, dhcp_client) = match &m.uplink.addressing {
        UplinkAddressing::Dhcp => (Vec::new(), true),
        UplinkAddressing::Static { address, gateway } => {
            if let Some(g) = gateway {
                routes.push(RoutePlan {
                    dst: Ipv4Net::default(),
                    via: *g,
                    dev: m.uplink.interface.clone(),
                });
            }
            (vec![IpNet::V4(*address)], false)
        }
    };
    let mut addresses = addresses;
    if let Uplink6Addressing::Static { address, .. } = &m.uplink.address6 {
        addresses.push(IpNet::V6(*address));
    }
    out.push(LinkPlan {
        name: m.uplink.interface.clone(),
        kind: LinkKind::Port,
        role: "uplink".into(),
        mtu: m.uplink.mtu,
        addresses,
        dhcp_client,
        up: true,
    });
    for s in &m.segments {
        out.push(LinkPlan {
            name: s.ifname.clone(),
            kind: match &s.link {
                SegmentLink::Vlan { parent, id } => LinkKind::Vlan {
                    parent: parent.clone(),
                    id: *id,
                },
                SegmentLink::Port => LinkKind::Port,
            },
            role: format!("segment:{}", s.name),
            mtu: s.mtu,
            addresses: segment_addresses(s),
            dhcp_client: false,
            up: true,
        });
    }
    (out, routes)
}

/// The gateway's addresses on a segment: gateway/prefix, and gateway6/64 for a static subnet6
/// (a delegated segment's address comes with its prefix, at run time).
fn segment_addresses(s: &crate::model::Segment) -> Vec<IpNet> {
    let mut v = vec![IpNet::V4(
        Ipv4Net::new(s.gateway, s.subnet.prefix_len()).unwrap(),
    )];
    if let Some(g) = s.ipv6.as_ref().and_then(|x| x.gateway6(None)) {
        v.push(IpNet::V6(ipnet::Ipv6Net::new(g, 64).unwrap()));
    }
    v
}

/// The IPv6 default route of a static uplink address6.
fn routes6(m: &Model) -> Vec<Route6Plan> {
    match &m.uplink.address6 {
        Uplink6Addressing::Static { gateway, .. } => vec![Route6Plan {
            via: *gateway,
            dev: m.uplink.interface.clone(),
        }],
        _ => Vec::new(),
    }
}

/// Kernel settings. `default.*` and global keys come first, so interfaces created afterwards
/// inherit them.
fn sysctls(m: &Model, backend: Backend, links: &[LinkPlan]) -> Vec<SysctlPlan> {
    let s = &m.sysctl;
    let b = |x: bool| if x { "1" } else { "0" }.to_string();
    let mut v = Vec::new();
    let mut put = |k: &str, val: String| {
        v.push(SysctlPlan {
            key: k.to_string(),
            value: val,
        })
    };
    // ip_forward first: writing it resets per-interface defaults such as accept_redirects
    put("net.ipv4.ip_forward", b(s.forwarding));
    for scope in ["default", "all"] {
        put(
            &format!("net.ipv4.conf.{scope}.rp_filter"),
            s.rp_filter.to_string(),
        );
        put(
            &format!("net.ipv4.conf.{scope}.accept_redirects"),
            b(s.accept_redirects),
        );
        put(
            &format!("net.ipv4.conf.{scope}.send_redirects"),
            b(s.send_redirects),
        );
        put(
            &format!("net.ipv4.conf.{scope}.accept_source_route"),
            b(s.accept_source_route),
        );
        put(
            &format!("net.ipv4.conf.{scope}.log_martians"),
            b(s.log_martians),
        );
        put(
            &format!("net.ipv6.conf.{scope}.accept_redirects"),
            b(s.accept_redirects),
        );
        // replacing a segment's address must not take the new one down with the old one
        put(
            &format!("net.ipv4.conf.{scope}.promote_secondaries"),
            "1".into(),
        );
    }
    // No router advertisement from a segment may give the gateway an address or a default
    // route: links created from here on (the VLANs) start with RAs and SLAAC off ...
    put("net.ipv6.conf.default.accept_ra", "0".into());
    put("net.ipv6.conf.default.autoconf", "0".into());
    if backend == Backend::Iptables {
        // the iptables rendering filters IPv4 only: IPv6 is switched off rather than left open
        put("net.ipv6.conf.all.disable_ipv6", "1".into());
        put("net.ipv6.conf.default.disable_ipv6", "1".into());
    }
    put("net.ipv4.tcp_syncookies", b(s.syncookies));
    put(
        "net.ipv4.icmp_echo_ignore_broadcasts",
        b(s.ignore_broadcast_ping),
    );
    // IPv6 segments: the gateway routes IPv6 (forwarding on makes the kernel a router, which
    // ignores RAs on every link whose accept_ra is not 2).
    let v6 = m.segments6().next().is_some() && backend == Backend::Nftables;
    if v6 {
        put("net.ipv6.conf.all.forwarding", b(s.forwarding));
    }
    // ... and so does every segment port, VLAN link and the trunk (set once the link exists).
    // The uplink keeps the kernel's setting: its router is the one to listen to; with
    // `address6 = "slaac"` it takes RAs even while forwarding (accept_ra = 2).
    for l in links.iter().filter(|l| l.role != "uplink") {
        let dev = l.name.replace('.', "/");
        put(&format!("net.ipv6.conf.{dev}.accept_ra"), "0".into());
        put(&format!("net.ipv6.conf.{dev}.autoconf"), "0".into());
    }
    if m.uplink.address6 == Uplink6Addressing::Slaac && backend == Backend::Nftables {
        let dev = m.uplink.interface.replace('.', "/");
        put(&format!("net.ipv6.conf.{dev}.accept_ra"), "2".into());
        put(&format!("net.ipv6.conf.{dev}.autoconf"), "1".into());
    }
    // `address6 = "dhcpv6"`: the address is dhcpcd's (IA_NA), the default route still comes
    // from the upstream's RAs, which a forwarding kernel takes only with accept_ra = 2
    if m.uplink.address6 == Uplink6Addressing::Dhcpv6 && backend == Backend::Nftables {
        let dev = m.uplink.interface.replace('.', "/");
        put(&format!("net.ipv6.conf.{dev}.accept_ra"), "2".into());
        put(&format!("net.ipv6.conf.{dev}.autoconf"), "0".into());
    }
    for (k, val) in &s.extra {
        if let Some(x) = v.iter_mut().find(|x| &x.key == k) {
            x.value = val.clone();
        } else {
            v.push(SysctlPlan {
                key: k.clone(),
                value: val.clone(),
            });
        }
    }
    v
}

fn pools(m: &Model) -> Vec<PoolPlan> {
    m.segments
        .iter()
        .filter_map(|s| {
            let d = s.dhcp.as_ref()?;
            Some(PoolPlan {
                segment: s.name.clone(),
                interface: s.ifname.clone(),
                subnet: s.subnet,
                server: s.gateway,
                router: s.gateway,
                broadcast: s.subnet.broadcast(),
                ranges: d.ranges.clone(),
                lease_time: d.lease_time,
                max_lease_time: d.max_lease_time,
                dns: d.dns.clone(),
                domain: d.domain.clone(),
                mtu: s.mtu,
                reservations: d.reservations.clone(),
                options: d.options.clone(),
                relays: d.relays.clone(),
            })
        })
        .collect()
}

/// Render the firewall for a backend.
pub fn render_firewall(rs: &Ruleset, backend: Backend, source: &str) -> FirewallText {
    match backend {
        Backend::Nftables => FirewallText::Nftables {
            script: nft::render(rs, source),
        },
        Backend::Iptables => FirewallText::Iptables {
            ipset: iptables::render_ipset(rs),
            rules: iptables::render(rs, source),
        },
    }
}

/// Compute the plan for a model, for its own backend or another one.
pub fn build(m: &Model, backend: Option<Backend>) -> Plan {
    let backend = backend.unwrap_or(m.backend);
    let (links, routes) = links(m);
    let sysctls = sysctls(m, backend, &links);
    let routes6 = routes6(m);
    let ruleset = ruleset::build(m);
    let source = m.source_name();
    let firewall = render_firewall(&ruleset, backend, &source);
    Plan {
        source,
        hostname: m.hostname.clone(),
        backend,
        links,
        routes,
        routes6,
        sysctls,
        ruleset,
        firewall,
        dhcp: pools(m),
    }
}

/// Which part of the plan to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Links,
    Sysctl,
    Firewall,
    Dhcp,
}

impl Plan {
    /// Human-readable text. `--only firewall` is exactly what apply loads.
    pub fn text(&self, only: Option<Part>) -> String {
        let mut o = String::new();
        let show = |p: Part| only.is_none_or(|x| x == p);
        let header = only.is_none();
        if show(Part::Links) {
            if header {
                let _ = writeln!(o, "# links");
            }
            for l in &self.links {
                let kind = match &l.kind {
                    LinkKind::Vlan { parent, id } => format!("vlan {} on {parent} id {id}", l.name),
                    LinkKind::Port => format!("port {}", l.name),
                };
                let mut s = kind;
                if let Some(m) = l.mtu {
                    let _ = write!(s, " mtu {m}");
                }
                for a in &l.addresses {
                    let _ = write!(s, " address {a}");
                }
                if l.dhcp_client {
                    s.push_str(" address dhcp");
                }
                let _ = writeln!(o, "{s} up  # {}", l.role);
            }
            for r in &self.routes {
                let _ = writeln!(o, "route {} via {} dev {}", r.dst, r.via, r.dev);
            }
            for r in &self.routes6 {
                let _ = writeln!(o, "route ::/0 via {} dev {}", r.via, r.dev);
            }
        }
        if show(Part::Sysctl) {
            if header {
                let _ = writeln!(o, "\n# sysctl");
            }
            for s in &self.sysctls {
                let _ = writeln!(o, "{} = {}", s.key, s.value);
            }
        }
        if show(Part::Dhcp) {
            if header {
                let _ = writeln!(o, "\n# dhcp");
            }
            for p in &self.dhcp {
                let _ = writeln!(
                    o,
                    "pool {} on {} subnet {}",
                    p.segment, p.interface, p.subnet
                );
                let _ = writeln!(
                    o,
                    "  server {} router {} broadcast {}",
                    p.server, p.router, p.broadcast
                );
                for r in &p.ranges {
                    let _ = writeln!(o, "  range {}-{} ({} addresses)", r.lo, r.hi, r.len());
                }
                let _ = writeln!(o, "  lease {}s max {}s", p.lease_time, p.max_lease_time);
                if !p.dns.is_empty() {
                    let d: Vec<String> = p.dns.iter().map(|a| a.to_string()).collect();
                    let _ = writeln!(o, "  dns {}", d.join(", "));
                }
                if !p.relays.is_empty() {
                    let r: Vec<String> = p.relays.iter().map(|a| a.to_string()).collect();
                    let _ = writeln!(o, "  relays {}", r.join(", "));
                }
                if let Some(d) = &p.domain {
                    let _ = writeln!(o, "  domain {d}");
                }
                if let Some(m) = p.mtu {
                    let _ = writeln!(o, "  mtu {m}");
                }
                for r in &p.reservations {
                    let _ = write!(
                        o,
                        "  reserve {} -> {}",
                        crate::model::addr::fmt_mac(&r.mac),
                        r.address
                    );
                    if let Some(h) = &r.hostname {
                        let _ = write!(o, " hostname {h}");
                    }
                    if let Some(g) = &r.group {
                        let _ = write!(o, " group {g}");
                    }
                    let _ = writeln!(o);
                }
                for x in &p.options {
                    let _ = writeln!(o, "  option {} = {}", x.code, x.shown);
                }
            }
        }
        if show(Part::Firewall) {
            if header {
                let _ = writeln!(o, "\n# firewall ({})", self.backend.name());
            }
            match &self.firewall {
                FirewallText::Nftables { script } => o.push_str(script),
                FirewallText::Iptables { ipset, rules } => {
                    if header || only == Some(Part::Firewall) {
                        let _ = writeln!(o, "# --- ipset restore ---");
                    }
                    o.push_str(ipset);
                    let _ = writeln!(o, "# --- iptables-restore --noflush ---");
                    o.push_str(rules);
                }
            }
        }
        o
    }

    pub fn json(&self, only: Option<Part>) -> String {
        let v = match only {
            None => serde_json::to_value(self),
            Some(Part::Links) => serde_json::to_value(
                serde_json::json!({"links": self.links, "routes": self.routes, "routes6": self.routes6}),
            ),
            Some(Part::Sysctl) => {
                serde_json::to_value(serde_json::json!({"sysctls": self.sysctls}))
            }
            Some(Part::Dhcp) => serde_json::to_value(serde_json::json!({"dhcp": self.dhcp})),
            Some(Part::Firewall) => serde_json::to_value(
                serde_json::json!({"firewall": self.firewall, "ruleset": self.ruleset}),
            ),
        }
        .expect("plan serializes");
        let mut s = serde_json::to_string_pretty(&v).expect("plan serializes");
        s.push('\n');
        s
    }
}

impl Plan {
    /// The same plan without the flowtable, for a kernel that has none (nf_flow_table): the
    /// policy is unchanged, established flows stay on the normal forwarding path.
    pub fn without_flow_offload(&self) -> Plan {
        let mut p = self.clone();
        if p.ruleset.flowtable.take().is_some() {
            p.firewall = render_firewall(&p.ruleset, p.backend, &p.source);
        }
        p
    }
}
