//! The validated model: everything in the config, checked and resolved, with no side effects.

pub mod addr;
mod validate;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::Serialize;

pub use addr::{AddrRange, PortRange};
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
    /// `[system] flow_offload` (default true): established forwarded flows go through an
    /// nftables flowtable when the kernel has one.
    pub flow_offload: bool,
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
    /// Members as written, normalised to ranges.
    pub members: Vec<AddrRange>,
    pub loc: Loc,
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
