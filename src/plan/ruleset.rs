//! The backend-neutral ruleset: what both renderers and `explain` are computed from.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;

use crate::model::{
    AddrRange, AddrRange6, Dhcp6Mode, Endpoint, InternetAccess, Loc, Model, PortRange, Prefix6,
    Proto, Rate, Service, Uplink6Addressing, UplinkAddressing,
    addr::{merge_ranges, merge_ranges6},
};

/// Name of the nftables table (and prefix of the iptables chains and ipsets) Bulkhead owns.
pub const TABLE: &str = "bulkhead";
/// The live set that alerts put scanning sources into.
pub const QUARANTINE: &str = "quarantine";
/// Suffix of the IPv6 twin of a set: group `web`'s IPv6 members are in set `web_v6`, the
/// quarantined IPv6 sources in `quarantine_v6`, a delegated segment's /64 in `SEGMENT_v6`.
pub const V6_SUFFIX: &str = "_v6";

/// The name of the IPv6 twin of set `name`.
pub fn set6(name: &str) -> String {
    format!("{name}{V6_SUFFIX}")
}

/// Link-local unicast, fe80::/10: the source of neighbour discovery, RS and DHCPv6 requests.
pub fn link_local() -> Ipv6Net {
    Ipv6Net::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10).expect("constant")
}

/// All DHCPv6 relay agents and servers, ff02::1:2.
pub const DHCP6_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ROUTER_ADVERT: u8 = 134;

/// Echo requests answered per second (with a burst): enough for any monitoring, too little to
/// make the gateway a reflector.
pub const ECHO_LIMIT: Limit = Limit {
    rate: Rate {
        count: 10,
        per: "second",
    },
    burst: 20,
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ruleset {
    pub sets: Vec<SetDef>,
    pub chains: Vec<Chain>,
    pub dnat: Vec<Dnat>,
    /// Masquerade traffic leaving this interface.
    pub masquerade: Option<String>,
    pub nflog_group: u16,
    pub log_rate: Rate,
    pub log_burst: u32,
    /// Established forwarded TCP/UDP flows are offloaded to this flowtable (nftables only;
    /// `None` with `[system] flow_offload = false` or where the kernel has no flowtable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flowtable: Option<Flowtable>,
}

/// Name of the flowtable established forwarded flows are offloaded to.
pub const FLOWTABLE: &str = "ft";

/// An nftables flowtable over the interfaces forwarded traffic enters and leaves by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flowtable {
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetDef {
    pub name: String,
    /// Seconds after which an element expires, for live sets such as the quarantine.
    pub timeout: Option<u64>,
    pub elements: Vec<AddrRange>,
    pub comment: String,
    /// An IPv6 set (`type ipv6_addr`): its elements are in `elements6`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ipv6: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub elements6: Vec<AddrRange6>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Input,
    Forward,
    Output,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chain {
    pub name: &'static str,
    pub hook: Option<Hook>,
    pub policy: Verdict,
    pub rules: Vec<FwRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(&'static str),
}

/// Why a rendered rule exists: a config entry (with its place in the file) or a built-in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Origin {
    /// `rule`, `forward`, `internet`, `egress`, `management`, `dhcp`, `antispoof` or `builtin`.
    pub kind: &'static str,
    pub name: String,
    pub loc: Option<Loc>,
}

impl Origin {
    fn builtin(name: &str) -> Self {
        Origin {
            kind: "builtin",
            name: name.to_string(),
            loc: None,
        }
    }

    /// The stable comment every rendered rule carries.
    pub fn comment(&self) -> String {
        format!("{}:{}", self.kind, self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum L4 {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AddrMatch {
    Set(String),
    Nets(Vec<Ipv4Net>),
    /// An IPv6 set (`ip6 saddr @NAME`).
    Set6(String),
    Nets6(Vec<Ipv6Net>),
}

impl AddrMatch {
    pub fn is_v6(&self) -> bool {
        matches!(self, AddrMatch::Set6(_) | AddrMatch::Nets6(_))
    }
}

/// The address family a rule variant is bound to by its address matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fam {
    /// No address match: interfaces only, both families.
    Any,
    V4,
    V6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ct {
    EstablishedRelated,
    Invalid,
    Dnat,
}

/// A rate limit on a rule's match: packets beyond it go on to the next rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limit {
    pub rate: Rate,
    pub burst: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Match {
    /// Only IPv6 packets (nftables' inet table sees both families; iptables renders IPv4 only).
    pub ipv6: bool,
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub saddr: Option<AddrMatch>,
    pub daddr: Option<AddrMatch>,
    /// The destination is one of the gateway's own addresses.
    pub daddr_local: bool,
    pub l4: Option<L4>,
    pub sport: Vec<PortRange>,
    pub dport: Vec<PortRange>,
    /// ICMP / ICMPv6 message types (with `l4` set to the protocol); empty: any type.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub icmp_types: Vec<u8>,
    /// The IPv6 hop limit the packet must arrive with (255: sent on the link, not routed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hoplimit: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limit>,
    pub ct: Option<Ct>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FwRule {
    pub origin: Origin,
    #[serde(rename = "match")]
    pub m: Match,
    pub verdict: Verdict,
    /// Log (rate-limited, to NFLOG) before the verdict.
    pub log: bool,
}

impl FwRule {
    /// NFLOG prefix: `bh:CHAIN:KIND:NAME`, bounded for iptables' 64-byte limit.
    pub fn log_prefix(&self, chain: &str) -> String {
        let mut p = format!("bh:{chain}:{}", self.origin.comment());
        p.truncate(63);
        p
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dnat {
    pub origin: Origin,
    pub iif: String,
    pub proto: L4,
    pub port: PortRange,
    pub saddr: Option<AddrMatch>,
    pub to: Ipv4Addr,
    pub to_port: Option<u16>,
}

/// A service's protocols as rule variants. `icmp` means ICMPv6 too when the config has IPv6
/// and the variant is not bound to IPv4 by its addresses.
fn l4s(s: &Service, fam: Fam, v6: bool) -> Vec<Option<L4>> {
    let mut out = Vec::new();
    for p in &s.protos {
        match p {
            Proto::Tcp => out.push(Some(L4::Tcp)),
            Proto::Udp => out.push(Some(L4::Udp)),
            Proto::Icmp => {
                if fam != Fam::V6 {
                    out.push(Some(L4::Icmp));
                }
                if v6 && fam != Fam::V4 {
                    out.push(Some(L4::Icmpv6));
                }
            }
            Proto::Any => out.push(None),
        }
    }
    out
}

struct Builder<'m> {
    m: &'m Model,
    /// The config has IPv6 (segments, uplink or group members).
    v6: bool,
}

impl Builder<'_> {
    /// The per-family variants of a rule's address matches: the IPv4 one as always, and an
    /// IPv6 one when every group it names has IPv6 members (segments and interfaces match
    /// both families by themselves).
    fn families(
        &self,
        saddr: Option<AddrMatch>,
        daddr: Option<AddrMatch>,
    ) -> Vec<(Option<AddrMatch>, Option<AddrMatch>)> {
        let has6 = |a: &Option<AddrMatch>| match a {
            Some(AddrMatch::Set(g)) => self.m.group(g).is_some_and(|g| !g.members6.is_empty()),
            _ => true,
        };
        let to6 = |a: &Option<AddrMatch>| match a {
            Some(AddrMatch::Set(g)) => Some(AddrMatch::Set6(set6(g))),
            other => other.clone(),
        };
        let grouped =
            matches!(saddr, Some(AddrMatch::Set(_))) || matches!(daddr, Some(AddrMatch::Set(_)));
        let mut v = vec![(saddr.clone(), daddr.clone())];
        if grouped && has6(&saddr) && has6(&daddr) {
            v.push((to6(&saddr), to6(&daddr)));
        }
        v
    }

    fn uplink(&self) -> String {
        self.m.uplink.interface.clone()
    }

    /// Source side of an endpoint: (iif, saddr).
    fn src(&self, e: &Endpoint) -> (Option<String>, Option<AddrMatch>) {
        match e {
            Endpoint::Segment(s) => (Some(self.m.segment(s).unwrap().ifname.clone()), None),
            Endpoint::Group(g) => (None, Some(AddrMatch::Set(g.clone()))),
            Endpoint::Internet => (Some(self.uplink()), None),
            Endpoint::Any | Endpoint::Gateway => (None, None),
        }
    }

    /// Destination side of an endpoint in the forward chain: (oif, daddr).
    fn dst(&self, e: &Endpoint) -> (Option<String>, Option<AddrMatch>) {
        match e {
            Endpoint::Segment(s) => (Some(self.m.segment(s).unwrap().ifname.clone()), None),
            Endpoint::Group(g) => (None, Some(AddrMatch::Set(g.clone()))),
            Endpoint::Internet => (Some(self.uplink()), None),
            Endpoint::Any | Endpoint::Gateway => (None, None),
        }
    }

    /// Expand a service into one rule per protocol.
    fn service_rules(
        &self,
        out: &mut Vec<FwRule>,
        origin: &Origin,
        base: &Match,
        svc: &Service,
        log: bool,
    ) {
        let fam = match (&base.saddr, &base.daddr) {
            (Some(a), _) | (None, Some(a)) if a.is_v6() => Fam::V6,
            (None, None) => Fam::Any,
            _ => Fam::V4,
        };
        for l4 in l4s(svc, fam, self.v6) {
            let mut m = base.clone();
            m.l4 = l4;
            m.dport = svc.ports.clone();
            out.push(FwRule {
                origin: origin.clone(),
                m,
                verdict: Verdict::Accept,
                log,
            });
        }
    }

    fn head(&self, rules: &mut Vec<FwRule>, with_lo: bool, out: bool) {
        rules.push(FwRule {
            origin: Origin::builtin("established"),
            m: Match {
                ct: Some(Ct::EstablishedRelated),
                ..Match::default()
            },
            verdict: Verdict::Accept,
            log: false,
        });
        rules.push(FwRule {
            origin: Origin::builtin("invalid"),
            m: Match {
                ct: Some(Ct::Invalid),
                ..Match::default()
            },
            verdict: Verdict::Drop,
            log: false,
        });
        if with_lo {
            let m = if out {
                Match {
                    oif: Some("lo".into()),
                    ..Match::default()
                }
            } else {
                Match {
                    iif: Some("lo".into()),
                    ..Match::default()
                }
            };
            rules.push(FwRule {
                origin: Origin::builtin("loopback"),
                m,
                verdict: Verdict::Accept,
                log: false,
            });
        }
        if !out {
            rules.push(FwRule {
                origin: Origin::builtin("antispoof"),
                m: Match::default(),
                verdict: Verdict::Jump("antispoof"),
                log: false,
            });
            rules.push(FwRule {
                origin: Origin::builtin(QUARANTINE),
                m: Match {
                    saddr: Some(AddrMatch::Set(QUARANTINE.into())),
                    ..Match::default()
                },
                verdict: Verdict::Drop,
                log: false,
            });
            if self.v6 {
                rules.push(FwRule {
                    origin: Origin::builtin(QUARANTINE),
                    m: Match {
                        saddr: Some(AddrMatch::Set6(set6(QUARANTINE))),
                        ..Match::default()
                    },
                    verdict: Verdict::Drop,
                    log: false,
                });
            }
        }
    }

    /// ICMPv6 to the gateway itself, after RFC 4890 section 4.4 (traffic addressed to a
    /// firewall device): error messages, rate-limited echo requests, neighbour discovery and
    /// MLD on the link only. Router advertisements are taken from the uplink's router alone —
    /// never from a segment, where any client could claim to be the default router. Replies
    /// and errors of the gateway's own traffic pass earlier as established/related; every
    /// other type (redirects, unsolicited echo replies, router renumbering...) meets the
    /// logged default drop.
    fn icmpv6_input(&self, rules: &mut Vec<FwRule>) {
        let rule = |name: &str, iif: Option<String>, types: &[u8], hoplimit, limit| FwRule {
            origin: Origin::builtin(name),
            m: Match {
                ipv6: true,
                iif,
                l4: Some(L4::Icmpv6),
                icmp_types: types.to_vec(),
                hoplimit,
                limit,
                ..Match::default()
            },
            verdict: Verdict::Accept,
            log: false,
        };
        // destination unreachable, packet too big, time exceeded, parameter problem
        rules.push(rule("icmpv6-error", None, &[1, 2, 3, 4], None, None));
        rules.push(rule(
            "icmpv6-echo",
            None,
            &[ICMPV6_ECHO_REQUEST],
            None,
            Some(ECHO_LIMIT),
        ));
        // router solicitation, neighbour solicitation and advertisement: hop limit 255 proves
        // they were sent on the link (RFC 4861 6.1, 7.1.1)
        rules.push(rule("icmpv6-nd", None, &[133, 135, 136], Some(255), None));
        rules.push(rule(
            "icmpv6-router-advert",
            Some(self.uplink()),
            &[ICMPV6_ROUTER_ADVERT],
            Some(255),
            None,
        ));
        // MLD query, report, done and MLDv2 report: link-local, sent with hop limit 1
        rules.push(rule(
            "icmpv6-mld",
            None,
            &[130, 131, 132, 143],
            Some(1),
            None,
        ));
    }

    /// DHCPv6: requests to the server of a stateless or stateful IPv6 segment (from
    /// link-local to ff02::1:2, UDP 547), and the uplink client's replies (UDP 547 -> 546
    /// from a link-local server) when the uplink runs dhcpcd.
    fn dhcp6_input(&self, rules: &mut Vec<FwRule>) {
        for s in &self.m.segments {
            let Some(s6) = &s.ipv6 else { continue };
            if s6.mode == Dhcp6Mode::Slaac {
                continue;
            }
            rules.push(FwRule {
                origin: Origin {
                    kind: "dhcp6",
                    name: s.name.clone(),
                    loc: Some(s.loc.clone()),
                },
                m: Match {
                    iif: Some(s.ifname.clone()),
                    saddr: Some(AddrMatch::Nets6(vec![link_local()])),
                    daddr: Some(AddrMatch::Nets6(vec![
                        Ipv6Net::new(DHCP6_SERVERS, 128).expect("constant"),
                    ])),
                    l4: Some(L4::Udp),
                    dport: vec![PortRange::single(547)],
                    ..Match::default()
                },
                verdict: Verdict::Accept,
                log: false,
            });
        }
        if self.uplink_dhcp6() {
            rules.push(FwRule {
                origin: Origin::builtin("uplink-dhcp6-client"),
                m: Match {
                    iif: Some(self.uplink()),
                    saddr: Some(AddrMatch::Nets6(vec![link_local()])),
                    l4: Some(L4::Udp),
                    sport: vec![PortRange::single(547)],
                    dport: vec![PortRange::single(546)],
                    ..Match::default()
                },
                verdict: Verdict::Accept,
                log: false,
            });
        }
    }

    /// The uplink runs a DHCPv6 client (dhcpcd): for an address or a delegated prefix.
    fn uplink_dhcp6(&self) -> bool {
        matches!(
            self.m.uplink.address6,
            Uplink6Addressing::Slaac | Uplink6Addressing::Dhcpv6
        ) || self.m.uplink.prefix_delegation.is_some()
    }

    fn tail(&self, rules: &mut Vec<FwRule>) {
        rules.push(FwRule {
            origin: Origin::builtin("default-drop"),
            m: Match::default(),
            verdict: Verdict::Drop,
            log: true,
        });
    }

    /// IPv6 source checks of one segment: link-local (neighbour discovery, RS, DHCPv6), the
    /// unspecified address for duplicate address detection and MLD, and the segment's /64.
    /// A segment without subnet6 gets link-local only.
    fn antispoof6(&self, rules: &mut Vec<FwRule>, s: &crate::model::Segment, o: &Origin) {
        let ret = |saddr, l4, types: &[u8]| FwRule {
            origin: o.clone(),
            m: Match {
                iif: Some(s.ifname.clone()),
                saddr: Some(saddr),
                l4,
                icmp_types: types.to_vec(),
                ..Match::default()
            },
            verdict: Verdict::Return,
            log: false,
        };
        rules.push(ret(AddrMatch::Nets6(vec![link_local()]), None, &[]));
        rules.push(ret(
            AddrMatch::Nets6(vec![
                Ipv6Net::new(Ipv6Addr::UNSPECIFIED, 128).expect("constant"),
            ]),
            Some(L4::Icmpv6),
            &[135, 143],
        ));
        match s.ipv6.as_ref().map(|x| x.prefix) {
            Some(Prefix6::Static(n)) => rules.push(ret(AddrMatch::Nets6(vec![n]), None, &[])),
            Some(Prefix6::Delegated { .. }) => {
                rules.push(ret(AddrMatch::Set6(set6(&s.name)), None, &[]))
            }
            None => {}
        }
    }

    fn antispoof(&self) -> Chain {
        // Without IPv6 in the config, IPv6 never gets forwarded (no forwarding sysctl, policy
        // drop) and only ICMPv6 reaches the gateway: the address checks concern IPv4 alone.
        let mut rules = Vec::new();
        if !self.v6 {
            rules.push(FwRule {
                origin: Origin::builtin("ipv6"),
                m: Match {
                    ipv6: true,
                    ..Match::default()
                },
                verdict: Verdict::Return,
                log: false,
            });
        }
        for s in &self.m.segments {
            let o = Origin {
                kind: "antispoof",
                name: s.name.clone(),
                loc: Some(s.loc.clone()),
            };
            if s.dhcp.is_some() {
                rules.push(FwRule {
                    origin: o.clone(),
                    m: Match {
                        iif: Some(s.ifname.clone()),
                        saddr: Some(AddrMatch::Nets(vec![
                            Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 32).unwrap(),
                        ])),
                        l4: Some(L4::Udp),
                        dport: vec![PortRange::single(67)],
                        ..Match::default()
                    },
                    verdict: Verdict::Return,
                    log: false,
                });
            }
            rules.push(FwRule {
                origin: o.clone(),
                m: Match {
                    iif: Some(s.ifname.clone()),
                    saddr: Some(AddrMatch::Nets(vec![s.subnet])),
                    ..Match::default()
                },
                verdict: Verdict::Return,
                log: false,
            });
            if self.v6 {
                self.antispoof6(&mut rules, s, &o);
            }
            rules.push(FwRule {
                origin: o,
                m: Match {
                    iif: Some(s.ifname.clone()),
                    ..Match::default()
                },
                verdict: Verdict::Drop,
                log: true,
            });
        }
        if !self.m.segments.is_empty() {
            rules.push(FwRule {
                origin: Origin {
                    kind: "antispoof",
                    name: "uplink".into(),
                    loc: None,
                },
                m: Match {
                    iif: Some(self.uplink()),
                    saddr: Some(AddrMatch::Nets(
                        self.m.segments.iter().map(|s| s.subnet).collect(),
                    )),
                    ..Match::default()
                },
                verdict: Verdict::Drop,
                log: true,
            });
            // No segment's IPv6 prefix arrives from the uplink.
            let mut statics = Vec::new();
            let mut delegated = Vec::new();
            for s in &self.m.segments {
                match s.ipv6.as_ref().map(|x| x.prefix) {
                    Some(Prefix6::Static(n)) => statics.push(n),
                    Some(Prefix6::Delegated { .. }) => delegated.push(set6(&s.name)),
                    None => {}
                }
            }
            let mut saddrs: Vec<AddrMatch> = Vec::new();
            if !statics.is_empty() {
                saddrs.push(AddrMatch::Nets6(statics));
            }
            saddrs.extend(delegated.into_iter().map(AddrMatch::Set6));
            for saddr in saddrs {
                rules.push(FwRule {
                    origin: Origin {
                        kind: "antispoof",
                        name: "uplink".into(),
                        loc: None,
                    },
                    m: Match {
                        iif: Some(self.uplink()),
                        saddr: Some(saddr),
                        ..Match::default()
                    },
                    verdict: Verdict::Drop,
                    log: true,
                });
            }
        }
        Chain {
            name: "antispoof",
            hook: None,
            policy: Verdict::Return,
            rules,
        }
    }

    fn input(&self) -> Chain {
        let m = self.m;
        let mut rules = Vec::new();
        self.head(&mut rules, true, false);
        rules.push(FwRule {
            origin: Origin::builtin("icmp"),
            m: Match {
                l4: Some(L4::Icmp),
                ..Match::default()
            },
            verdict: Verdict::Accept,
            log: false,
        });
        self.icmpv6_input(&mut rules);
        for s in &m.segments {
            if s.dhcp.is_some() {
                rules.push(FwRule {
                    origin: Origin {
                        kind: "dhcp",
                        name: s.name.clone(),
                        loc: Some(s.loc.clone()),
                    },
                    m: Match {
                        iif: Some(s.ifname.clone()),
                        l4: Some(L4::Udp),
                        dport: vec![PortRange::single(67)],
                        ..Match::default()
                    },
                    verdict: Verdict::Accept,
                    log: false,
                });
                // The kernel loops a copy of every broadcast the gateway sends back in on the
                // sending interface: its own DHCP replies to 255.255.255.255:68 come back as
                // input from its own address. Nothing here listens for them; dropped without
                // a log line, they are not reported as drops.
                rules.push(FwRule {
                    origin: Origin {
                        kind: "dhcp",
                        name: format!("{}:own-broadcast", s.name),
                        loc: Some(s.loc.clone()),
                    },
                    m: Match {
                        iif: Some(s.ifname.clone()),
                        saddr: Some(AddrMatch::Nets(vec![Ipv4Net::new(s.gateway, 32).unwrap()])),
                        daddr: Some(AddrMatch::Nets(vec![
                            Ipv4Net::new(Ipv4Addr::BROADCAST, 32).unwrap(),
                        ])),
                        l4: Some(L4::Udp),
                        sport: vec![PortRange::single(67)],
                        dport: vec![PortRange::single(68)],
                        ..Match::default()
                    },
                    verdict: Verdict::Drop,
                    log: false,
                });
            }
        }
        if m.uplink.addressing == UplinkAddressing::Dhcp {
            rules.push(FwRule {
                origin: Origin::builtin("uplink-dhcp-client"),
                m: Match {
                    iif: Some(self.uplink()),
                    l4: Some(L4::Udp),
                    sport: vec![PortRange::single(67)],
                    dport: vec![PortRange::single(68)],
                    ..Match::default()
                },
                verdict: Verdict::Accept,
                log: false,
            });
        }
        self.dhcp6_input(&mut rules);
        let mg = m.management_segment();
        let mut ports = vec![PortRange::single(m.management.ssh_port)];
        if let Some(a) = m.management.api_port {
            ports.push(PortRange::single(a));
        }
        let ports = crate::model::addr::merge_ports(ports);
        let origin = Origin {
            kind: "management",
            name: mg.name.clone(),
            loc: Some(mg.loc.clone()),
        };
        let sources: Vec<Option<AddrMatch>> = if m.management.sources.is_empty() {
            vec![None]
        } else {
            m.management
                .sources
                .iter()
                .map(|g| Some(AddrMatch::Set(g.clone())))
                .collect()
        };
        for saddr in sources {
            for (saddr, _) in self.families(saddr, None) {
                rules.push(FwRule {
                    origin: origin.clone(),
                    m: Match {
                        iif: Some(mg.ifname.clone()),
                        saddr,
                        l4: Some(L4::Tcp),
                        dport: ports.clone(),
                        ..Match::default()
                    },
                    verdict: Verdict::Accept,
                    log: false,
                });
            }
        }
        for r in m.rules.iter().filter(|r| r.to == Endpoint::Gateway) {
            let (iif, saddr) = self.src(&r.from);
            for (saddr, _) in self.families(saddr, None) {
                let base = Match {
                    iif: iif.clone(),
                    saddr,
                    ..Match::default()
                };
                self.service_rules(&mut rules, &rule_origin(r), &base, &r.service, r.log);
            }
        }
        self.tail(&mut rules);
        Chain {
            name: "input",
            hook: Some(Hook::Input),
            policy: Verdict::Drop,
            rules,
        }
    }

    fn forward(&self) -> Chain {
        let m = self.m;
        let mut rules = Vec::new();
        self.head(&mut rules, false, false);
        for f in &m.forwards {
            let seg = m.segment(&f.to_segment).unwrap();
            let origin = Origin {
                kind: "forward",
                name: f.name.clone(),
                loc: Some(f.loc.clone()),
            };
            let port = match f.to_port {
                Some(p) => PortRange::single(p),
                None => f.port,
            };
            rules.push(FwRule {
                origin,
                m: Match {
                    iif: Some(self.uplink()),
                    oif: Some(seg.ifname.clone()),
                    saddr: forward_saddr(&f.from),
                    daddr: Some(AddrMatch::Nets(vec![Ipv4Net::new(f.to, 32).unwrap()])),
                    l4: Some(if f.proto == Proto::Udp {
                        L4::Udp
                    } else {
                        L4::Tcp
                    }),
                    dport: vec![port],
                    ct: Some(Ct::Dnat),
                    ..Match::default()
                },
                verdict: Verdict::Accept,
                log: f.log,
            });
        }
        for r in m.rules.iter().filter(|r| r.to != Endpoint::Gateway) {
            let (iif, saddr) = self.src(&r.from);
            let (oif, daddr) = self.dst(&r.to);
            for (saddr, daddr) in self.families(saddr, daddr) {
                let base = Match {
                    iif: iif.clone(),
                    oif: oif.clone(),
                    saddr,
                    daddr,
                    ..Match::default()
                };
                self.service_rules(&mut rules, &rule_origin(r), &base, &r.service, r.log);
            }
        }
        for s in &m.segments {
            let base = Match {
                iif: Some(s.ifname.clone()),
                oif: Some(self.uplink()),
                ..Match::default()
            };
            match &s.internet {
                InternetAccess::None => {}
                InternetAccess::Full => rules.push(FwRule {
                    origin: Origin {
                        kind: "internet",
                        name: s.name.clone(),
                        loc: Some(s.loc.clone()),
                    },
                    m: base,
                    verdict: Verdict::Accept,
                    log: false,
                }),
                InternetAccess::Profile(p) => {
                    let origin = Origin {
                        kind: "egress",
                        name: format!("{p}:{}", s.name),
                        loc: Some(s.loc.clone()),
                    };
                    for svc in &m.egress_profile(p).unwrap().allow {
                        self.service_rules(&mut rules, &origin, &base, svc, false);
                    }
                }
            }
        }
        self.tail(&mut rules);
        Chain {
            name: "forward",
            hook: Some(Hook::Forward),
            policy: Verdict::Drop,
            rules,
        }
    }

    fn output(&self) -> Chain {
        let m = self.m;
        let Some(profile) = &m.gateway_egress else {
            return Chain {
                name: "output",
                hook: Some(Hook::Output),
                policy: Verdict::Accept,
                rules: Vec::new(),
            };
        };
        let mut rules = Vec::new();
        self.head(&mut rules, true, true);
        for l4 in [L4::Icmp, L4::Icmpv6] {
            rules.push(FwRule {
                origin: Origin::builtin("icmp"),
                m: Match {
                    l4: Some(l4),
                    ..Match::default()
                },
                verdict: Verdict::Accept,
                log: false,
            });
        }
        rules.push(FwRule {
            origin: Origin::builtin("dhcp-server"),
            m: Match {
                l4: Some(L4::Udp),
                sport: vec![PortRange::single(67)],
                ..Match::default()
            },
            verdict: Verdict::Accept,
            log: false,
        });
        if m.uplink.addressing == UplinkAddressing::Dhcp {
            rules.push(FwRule {
                origin: Origin::builtin("uplink-dhcp-client"),
                m: Match {
                    oif: Some(self.uplink()),
                    l4: Some(L4::Udp),
                    dport: vec![PortRange::single(67)],
                    ..Match::default()
                },
                verdict: Verdict::Accept,
                log: false,
            });
        }
        if self.v6 {
            rules.push(FwRule {
                origin: Origin::builtin("dhcp6-server"),
                m: Match {
                    l4: Some(L4::Udp),
                    sport: vec![PortRange::single(547)],
                    ..Match::default()
                },
                verdict: Verdict::Accept,
                log: false,
            });
        }
        if self.uplink_dhcp6() {
            rules.push(FwRule {
                origin: Origin::builtin("uplink-dhcp6-client"),
                m: Match {
                    oif: Some(self.uplink()),
                    l4: Some(L4::Udp),
                    dport: vec![PortRange::single(547)],
                    ..Match::default()
                },
                verdict: Verdict::Accept,
                log: false,
            });
        }
        for t in &m.logging.targets {
            rules.push(FwRule {
                origin: Origin {
                    kind: "syslog",
                    name: t.name.clone(),
                    loc: None,
                },
                m: Match {
                    daddr: Some(AddrMatch::Nets(vec![Ipv4Net::new(t.host, 32).unwrap()])),
                    l4: Some(if t.transport == crate::model::Transport::Udp {
                        L4::Udp
                    } else {
                        L4::Tcp
                    }),
                    dport: vec![PortRange::single(t.port)],
                    ..Match::default()
                },
                verdict: Verdict::Accept,
                log: false,
            });
        }
        // NTP ([system] ntp): to each server given by address; to any address out of the
        // uplink for a server given by name (its addresses come from DNS)
        let mut ntp_any = false;
        for s in &m.ntp {
            let daddr = match s {
                crate::model::NtpServer::Addr(a) => {
                    Some(AddrMatch::Nets(vec![Ipv4Net::new(*a, 32).unwrap()]))
                }
                crate::model::NtpServer::Name(_) if ntp_any => continue,
                crate::model::NtpServer::Name(_) => {
                    ntp_any = true;
                    None
                }
            };
            rules.push(FwRule {
                origin: Origin {
                    kind: "ntp",
                    name: s.to_string(),
                    loc: None,
                },
                m: Match {
                    oif: daddr.is_none().then(|| self.uplink()),
                    daddr,
                    l4: Some(L4::Udp),
                    dport: vec![PortRange::single(123)],
                    ..Match::default()
                },
                verdict: Verdict::Accept,
                log: false,
            });
        }
        let origin = Origin {
            kind: "egress",
            name: format!("{profile}:gateway"),
            loc: None,
        };
        for svc in &m.egress_profile(profile).unwrap().allow {
            self.service_rules(&mut rules, &origin, &Match::default(), svc, false);
        }
        self.tail(&mut rules);
        Chain {
            name: "output",
            hook: Some(Hook::Output),
            policy: Verdict::Drop,
            rules,
        }
    }
}

fn rule_origin(r: &crate::model::Rule) -> Origin {
    Origin {
        kind: "rule",
        name: r.name.clone(),
        loc: Some(r.loc.clone()),
    }
}

fn forward_saddr(from: &Endpoint) -> Option<AddrMatch> {
    match from {
        Endpoint::Group(g) => Some(AddrMatch::Set(g.clone())),
        _ => None,
    }
}

/// Build the ruleset for a validated model.
pub fn build(m: &Model) -> Ruleset {
    let v6 = m.has_ipv6();
    let b = Builder { m, v6 };
    let mut sets: Vec<SetDef> = Vec::new();
    for g in &m.groups {
        sets.push(SetDef {
            name: g.name.clone(),
            timeout: None,
            elements: merge_ranges(g.members.clone()),
            comment: format!("group {}", g.name),
            ipv6: false,
            elements6: Vec::new(),
        });
        if !g.members6.is_empty() {
            sets.push(SetDef {
                name: set6(&g.name),
                timeout: None,
                elements: Vec::new(),
                comment: format!("group {} (IPv6)", g.name),
                ipv6: true,
                elements6: merge_ranges6(g.members6.clone()),
            });
        }
    }
    for s in &m.segments {
        if let Some(Prefix6::Delegated { prefix_id }) = s.ipv6.as_ref().map(|x| x.prefix) {
            // Filled with the segment's /64 when the uplink holds a delegated prefix.
            sets.push(SetDef {
                name: set6(&s.name),
                timeout: None,
                elements: Vec::new(),
                comment: format!("segment {} (delegated /64 number {prefix_id})", s.name),
                ipv6: true,
                elements6: Vec::new(),
            });
        }
    }
    sets.push(SetDef {
        name: QUARANTINE.into(),
        timeout: Some(m.alerts.quarantine.unwrap_or(600)),
        elements: Vec::new(),
        comment: "sources quarantined by alerts".into(),
        ipv6: false,
        elements6: Vec::new(),
    });
    if v6 {
        sets.push(SetDef {
            name: set6(QUARANTINE),
            timeout: Some(m.alerts.quarantine.unwrap_or(600)),
            elements: Vec::new(),
            comment: "IPv6 sources quarantined by alerts".into(),
            ipv6: true,
            elements6: Vec::new(),
        });
    }
    let dnat = m
        .forwards
        .iter()
        .map(|f| Dnat {
            origin: Origin {
                kind: "forward",
                name: f.name.clone(),
                loc: Some(f.loc.clone()),
            },
            iif: m.uplink.interface.clone(),
            proto: if f.proto == Proto::Udp {
                L4::Udp
            } else {
                L4::Tcp
            },
            port: f.port,
            saddr: forward_saddr(&f.from),
            to: f.to,
            to_port: f.to_port,
        })
        .collect();
    Ruleset {
        sets,
        chains: vec![b.antispoof(), b.input(), b.forward(), b.output()],
        dnat,
        masquerade: m.uplink.masquerade.then(|| m.uplink.interface.clone()),
        nflog_group: m.logging.nflog_group,
        log_rate: m.logging.drop_log_rate,
        log_burst: m.logging.drop_log_burst,
        flowtable: flowtable(m),
    }
}

/// The uplink, the trunk and every segment's link, when `[system] flow_offload` is on.
fn flowtable(m: &Model) -> Option<Flowtable> {
    if !m.flow_offload {
        return None;
    }
    let mut devices = vec![m.uplink.interface.clone()];
    devices.extend(m.trunk.as_ref().map(|t| t.interface.clone()));
    for s in &m.segments {
        if !devices.contains(&s.ifname) {
            devices.push(s.ifname.clone());
        }
    }
    Some(Flowtable { devices })
}

impl Ruleset {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    pub fn set(&self, name: &str) -> Option<&SetDef> {
        self.sets.iter().find(|s| s.name == name)
    }

    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum::<usize>()
            + self.dnat.len()
            + usize::from(self.masquerade.is_some())
    }

    pub fn element_count(&self) -> usize {
        self.sets
            .iter()
            .map(|s| s.elements.len() + s.elements6.len())
            .sum()
    }
}
