//! The validated model: everything in the config, checked and resolved, with no side effects.

pub mod addr;
mod validate;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;

pub use addr::{AddrRange, AddrRange6, PortRange};
pub use validate::build;

/// The uplink address the lab gives a gateway whose config says `address = "dhcp"`.
pub const LAB_UPLINK: &str = "203.0.113.2/24";
/// The lab's "internet" router behind the uplink.
pub const LAB_UPLINK_GW: &str = "203.0.113.1";

/// How the lab runs a config: see [`Model::for_lab`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabMode {
    /// Run this firewall backend instead of the configured one.
    pub backend: Option<Backend>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Nftables,
    Iptables,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::Iptables => "iptables",
        }
    }
}

/// Where something was declared in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Loc {
    pub file: String,
    pub line: usize,
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One NTP server of `[system] ntp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum NtpServer {
    Addr(Ipv4Addr),
    Name(String),
}

impl std::fmt::Display for NtpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NtpServer::Addr(a) => write!(f, "{a}"),
            NtpServer::Name(n) => f.write_str(n),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Model {
    pub file: String,
    pub hostname: String,
    pub backend: Backend,
    pub state_dir: PathBuf,
    pub gateway_egress: Option<String>,
    /// `[system] ntp`: the NTP servers (IPv4 addresses or host names), in config order.
    pub ntp: Vec<NtpServer>,
    pub uplink: Uplink,
    pub trunk: Option<Trunk>,
    pub segments: Vec<Segment>,
    pub groups: Vec<Group>,
    pub rules: Vec<Rule>,
    pub forwards: Vec<Forward>,
    pub egress: Vec<EgressProfile>,
    pub management: Management,
    pub logging: Logging,
    pub alerts: Alerts,
    pub sysctl: Sysctl,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Uplink {
    pub interface: String,
    pub addressing: UplinkAddressing,
    pub masquerade: bool,
    pub mtu: Option<u32>,
    /// `[uplink] address6`: how the uplink gets its IPv6 address.
    #[serde(skip_serializing_if = "Uplink6Addressing::is_none")]
    pub address6: Uplink6Addressing,
    /// `[uplink] prefix_delegation`: the prefix length (48-64) asked for by DHCPv6 IA_PD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_delegation: Option<u8>,
}

/// `[uplink] address6`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Uplink6Addressing {
    /// No IPv6 address on the uplink (the default).
    None,
    /// Kernel SLAAC from the upstream's RAs (accept_ra=2 on the uplink only); a dhcpcd runs.
    Slaac,
    /// DHCPv6 (IA_NA) by dhcpcd; the default route still comes from the upstream's RAs.
    Dhcpv6,
    Static {
        /// Address with its prefix, e.g. 2001:db8:0:1::2/64.
        address: Ipv6Net,
        /// The default router: inside `address`'s prefix or link-local.
        gateway: Ipv6Addr,
    },
}

impl Uplink6Addressing {
    pub fn is_none(&self) -> bool {
        matches!(self, Uplink6Addressing::None)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkAddressing {
    Dhcp,
    Static {
        /// Address with its prefix, e.g. 203.0.113.2/24.
        address: Ipv4Net,
        gateway: Option<Ipv4Addr>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trunk {
    pub interface: String,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmentLink {
    Vlan { parent: String, id: u16 },
    Port,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InternetAccess {
    None,
    Full,
    Profile(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    pub name: String,
    pub description: Option<String>,
    pub link: SegmentLink,
    /// The kernel interface that carries the segment.
    pub ifname: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: Option<u32>,
    pub internet: InternetAccess,
    pub management: bool,
    pub dhcp: Option<DhcpPool>,
    pub loc: Loc,
    /// The segment's IPv6 side; `None`: IPv4-only (no RA, no DHCPv6, no IPv6 forwarding).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Segment6>,
}

/// Everything the RA sender and the DHCPv6 server need for one IPv6 segment.
///
/// The prefix of a delegated segment is known only at run time: resolve addresses with
/// [`Segment6::subnet6`] and [`Segment6::gateway6`], giving them the prefix the uplink
/// currently holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment6 {
    /// The segment's name (`[segments.NAME]`).
    pub segment: String,
    /// The kernel interface that carries the segment (the same as [`Segment::ifname`]).
    pub ifname: String,
    /// Where the segment's /64 comes from.
    pub prefix: Prefix6,
    /// The interface identifier (lower 64 bits) of the gateway's address in the /64: 1 unless
    /// `gateway6` says otherwise. The full address is [`Segment6::gateway6`].
    pub gateway_iid: u64,
    /// `[segments.NAME.dhcp6] mode`: the M/O flags of the RAs and what DHCPv6 answers.
    pub mode: Dhcp6Mode,
    /// IPv6 DNS servers from `[segments.NAME.dhcp] dns` (RDNSS and DHCPv6 option 23).
    pub dns6: Vec<Ipv6Addr>,
    /// `[segments.NAME.dhcp] domain` (DNSSL and DHCPv6 option 24).
    pub domain: Option<String>,
    /// The stateful pool as interface identifiers (lower 64 bits), inclusive; `Some` exactly
    /// when `mode` is stateful. [`Segment6::pool_in`] makes addresses of them.
    pub pool: Option<Pool6>,
    /// Valid lifetime of stateful leases, seconds (`[segments.NAME.dhcp] lease_time`, default
    /// 3600).
    pub lease_time: u32,
    /// The segment's MTU, when configured (RA MTU option).
    pub mtu: Option<u32>,
}

/// Where a segment's /64 comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Prefix6 {
    /// `subnet6 = "PREFIX/64"`.
    Static(Ipv6Net),
    /// `subnet6 = "delegated"`: the `prefix_id`-th /64 of the prefix delegated to the uplink.
    Delegated { prefix_id: u32 },
}

/// `[segments.NAME.dhcp6] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dhcp6Mode {
    /// Addresses by SLAAC only; RAs carry RDNSS/DNSSL; M=0, O=0, no DHCPv6 server.
    Slaac,
    /// SLAAC addresses, DNS by stateless DHCPv6 too; M=0, O=1.
    Stateless,
    /// Addresses from the DHCPv6 pool; M=1, O=1; prefix without the A flag.
    Stateful,
}

impl Dhcp6Mode {
    pub fn name(self) -> &'static str {
        match self {
            Dhcp6Mode::Slaac => "slaac",
            Dhcp6Mode::Stateless => "stateless",
            Dhcp6Mode::Stateful => "stateful",
        }
    }
}

/// A stateful DHCPv6 pool: interface identifiers `first..=last` within the segment's /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pool6 {
    pub first: u64,
    pub last: u64,
}

/// The default stateful pool when `range6` is not given: PREFIX::1000 - PREFIX::1fff.
pub const DEFAULT_POOL6: Pool6 = Pool6 {
    first: 0x1000,
    last: 0x1fff,
};

impl Segment6 {
    /// The segment's /64: the static one, or the `prefix_id`-th /64 of `delegated` (`None`
    /// while no prefix is delegated, or when the id does not fit in it).
    pub fn subnet6(&self, delegated: Option<Ipv6Net>) -> Option<Ipv6Net> {
        match self.prefix {
            Prefix6::Static(n) => Some(n),
            Prefix6::Delegated { prefix_id } => {
                let d = delegated?;
                let plen = d.prefix_len();
                if plen > 64 || (plen < 64 && u64::from(prefix_id) >> (64 - plen) != 0) {
                    return None;
                }
                if plen == 64 && prefix_id != 0 {
                    return None;
                }
                let base = u128::from(d.network());
                let net = base | (u128::from(prefix_id) << 64);
                Ipv6Net::new(Ipv6Addr::from(net), 64).ok()
            }
        }
    }

    /// The gateway's address on the segment (see [`Segment6::subnet6`]).
    pub fn gateway6(&self, delegated: Option<Ipv6Net>) -> Option<Ipv6Addr> {
        self.subnet6(delegated)
            .map(|n| addr::with_iid(n, self.gateway_iid))
    }

    /// The stateful pool as addresses of the segment's /64.
    pub fn pool_in(&self, delegated: Option<Ipv6Net>) -> Option<AddrRange6> {
        let (n, p) = (self.subnet6(delegated)?, self.pool?);
        Some(AddrRange6 {
            lo: addr::with_iid(n, p.first),
            hi: addr::with_iid(n, p.last),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DhcpPool {
    pub ranges: Vec<AddrRange>,
    pub lease_time: u32,
    pub max_lease_time: u32,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub reservations: Vec<Reservation>,
    pub options: Vec<DhcpOption>,
    /// Relay agents (giaddr) whose relayed requests the segment answers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reservation {
    #[serde(serialize_with = "ser_mac")]
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
    pub hostname: Option<String>,
    pub group: Option<String>,
}

fn ser_mac<S: serde::Serializer>(m: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&addr::fmt_mac(m))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DhcpOption {
    pub code: u8,
    /// The encoded payload.
    pub data: Vec<u8>,
    /// How the operator wrote it, for the plan.
    pub shown: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub name: String,
    pub description: Option<String>,
    /// IPv4 members as written, normalised to ranges.
    pub members: Vec<AddrRange>,
    pub loc: Loc,
    /// IPv6 members as written, normalised to ranges.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members6: Vec<AddrRange6>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    Segment(String),
    Group(String),
    Internet,
    Any,
    Gateway,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Segment(s) => write!(f, "segment {s}"),
            Endpoint::Group(g) => write!(f, "group {g}"),
            Endpoint::Internet => f.write_str("internet"),
            Endpoint::Any => f.write_str("any"),
            Endpoint::Gateway => f.write_str("gateway"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Any,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Any => "any",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "icmp" => Ok(Proto::Icmp),
            "any" => Ok(Proto::Any),
            _ => Err(format!(
                "unknown protocol `{s}`, expected tcp, udp, icmp or any"
            )),
        }
    }
}

/// Protocols and ports, as allowed by a rule or an egress profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub protos: Vec<Proto>,
    /// Empty: every port (or no ports, for icmp/any).
    pub ports: Vec<PortRange>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub name: String,
    pub description: Option<String>,
    pub from: Endpoint,
    pub to: Endpoint,
    pub service: Service,
    pub log: bool,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forward {
    pub name: String,
    pub description: Option<String>,
    pub proto: Proto,
    pub port: PortRange,
    pub to: Ipv4Addr,
    pub to_segment: String,
    pub to_port: Option<u16>,
    pub from: Endpoint,
    pub log: bool,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EgressProfile {
    pub name: String,
    pub description: Option<String>,
    pub allow: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Management {
    pub ssh_port: u16,
    pub api_port: Option<u16>,
    /// The operator's certificate and key for the API (PEM); `None`: generated on first start.
    pub api_cert: Option<std::path::PathBuf>,
    pub api_key: Option<std::path::PathBuf>,
    /// Groups allowed to manage the gateway; empty means the whole management segment.
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Rfc5424,
    Rfc3164,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogTarget {
    pub name: String,
    pub host: Ipv4Addr,
    pub port: u16,
    pub transport: Transport,
    pub format: LogFormat,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rate {
    pub count: u32,
    /// "second", "minute" or "hour".
    pub per: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Logging {
    pub level: String,
    pub json: bool,
    pub nflog_group: u16,
    pub drop_log_rate: Rate,
    pub drop_log_burst: u32,
    pub spool_limit: u64,
    pub targets: Vec<LogTarget>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alerts {
    /// (drops, window seconds)
    pub drop_burst: Option<(u32, u64)>,
    pub port_scan: Option<PortScan>,
    pub sensitive_ports: Vec<PortRange>,
    /// Quarantine timeout in seconds, when quarantine is on.
    pub quarantine: Option<u64>,
    /// Sources never quarantined (`never_quarantine`: groups resolved to their members, and
    /// addresses or CIDR blocks); their alerts are still raised.
    pub never_quarantine: Vec<AddrRange>,
    /// The IPv6 ones (group members and IPv6 entries).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub never_quarantine6: Vec<AddrRange6>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortScan {
    pub ports: Option<u32>,
    pub hosts: Option<u32>,
    pub window: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sysctl {
    pub forwarding: bool,
    pub rp_filter: u8,
    pub accept_redirects: bool,
    pub send_redirects: bool,
    pub accept_source_route: bool,
    pub syncookies: bool,
    pub log_martians: bool,
    pub ignore_broadcast_ping: bool,
    pub extra: BTreeMap<String, String>,
}

impl Model {
    /// The config file's name without its directory, for generated headers.
    pub fn source_name(&self) -> String {
        std::path::Path::new(&self.file)
            .file_name()
            .map_or(self.file.clone(), |f| f.to_string_lossy().into_owned())
    }

    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name == name)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn egress_profile(&self, name: &str) -> Option<&EgressProfile> {
        self.egress.iter().find(|p| p.name == name)
    }

    pub fn management_segment(&self) -> &Segment {
        self.segments
            .iter()
            .find(|s| s.management)
            .expect("validated model has a management segment")
    }

    /// The model as the lab runs it on a kernel without 802.1Q: every VLAN segment becomes a
    /// plain port of the same name (the lab creates veth ports named like the VLAN links), and
    /// a DHCP uplink gets the lab's static address ([`LAB_UPLINK`], via [`LAB_UPLINK_GW`]).
    pub fn for_lab(&self, mode: LabMode) -> Model {
        let mut m = self.clone();
        if let Some(b) = mode.backend {
            m.backend = b;
        }
        for s in &mut m.segments {
            s.link = SegmentLink::Port;
        }
        m.trunk = None;
        if m.uplink.addressing == UplinkAddressing::Dhcp {
            m.uplink.addressing = UplinkAddressing::Static {
                address: LAB_UPLINK.parse().expect("constant"),
                gateway: Some(LAB_UPLINK_GW.parse().expect("constant")),
            };
        }
        m
    }

    /// The IPv6 segments, in config order.
    pub fn segments6(&self) -> impl Iterator<Item = &Segment6> {
        self.segments.iter().filter_map(|s| s.ipv6.as_ref())
    }

    /// Whether anything in the config is IPv6 (segments, uplink or group members).
    pub fn has_ipv6(&self) -> bool {
        self.segments6().next().is_some()
            || !self.uplink.address6.is_none()
            || self.uplink.prefix_delegation.is_some()
            || self.groups.iter().any(|g| !g.members6.is_empty())
    }

    /// The segment whose static subnet6 holds `a`.
    pub fn segment_of6(&self, a: Ipv6Addr) -> Option<&Segment> {
        self.segments.iter().find(|s| {
            matches!(s.ipv6.as_ref().map(|x| x.prefix), Some(Prefix6::Static(n)) if n.contains(&a))
        })
    }

    /// The segment whose subnet holds `a`.
    pub fn segment_of(&self, a: Ipv4Addr) -> Option<&Segment> {
        self.segments.iter().find(|s| s.subnet.contains(&a))
    }

    /// The segment that wholly contains every member of a group, if there is one.
    pub fn segment_of_group(&self, g: &Group) -> Option<&Segment> {
        let first = g.members.first()?;
        let seg = self.segment_of(first.lo)?;
        g.members
            .iter()
            .all(|m| m.within(&seg.subnet))
            .then_some(seg)
    }
}

/// Load and validate a config file: every check of the config itself. The anti-lockout
/// invariants, which are checked on the ruleset built from the model, are added by
/// `plan::load`, the entry point every command uses.
/// On success returns the model and the warnings; on failure, every problem found.
pub fn load(path: &std::path::Path) -> Result<(Model, crate::diag::Report), crate::diag::Report> {
    let src = crate::config::load(path)?;
    build(&src)
}

/// Like [`load`], from text.
pub fn load_str(
    file: &str,
    text: &str,
) -> Result<(Model, crate::diag::Report), crate::diag::Report> {
    let src = crate::config::parse(file, text)?;
    build(&src)
}
