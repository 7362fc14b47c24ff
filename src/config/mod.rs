//! Wire types of `bulkhead.toml`, exactly as written by the operator.
//!
//! Parsing is tolerant section by section: every table entry is deserialized on its own, so
//! one bad segment does not hide the problems of the next one. Semantic checks live in
//! [`crate::model`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::diag::{Diagnostic, Locator, Report};

/// The default location of the config file on the appliance.
pub const DEFAULT_PATH: &str = "/etc/bulkhead/bulkhead.toml";

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct System {
    pub hostname: Option<String>,
    pub backend: Option<String>,
    pub state_dir: Option<String>,
    /// Name of an egress profile that restricts what the gateway itself may send.
    pub gateway_egress: Option<String>,
    /// NTP servers (addresses or host names) the gateway keeps its clock with (chrony).
    pub ntp: Option<Vec<String>>,
    /// Offload established forwarded TCP/UDP flows to an nftables flowtable (default true;
    /// used only where the kernel has nf_flow_table).
    pub flow_offload: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    pub interface: String,
    /// `"dhcp"` or a static `ADDRESS/PREFIX`.
    pub address: Option<String>,
    pub gateway: Option<String>,
    pub masquerade: Option<bool>,
    pub mtu: Option<i64>,
    /// IPv6: `"none"` (default), `"slaac"`, `"dhcpv6"` or a static `ADDRESS/PREFIX`.
    pub address6: Option<String>,
    /// IPv6 default router; required with a static `address6`.
    pub gateway6: Option<String>,
    /// Prefix length (48-64) to ask the upstream for by DHCPv6 prefix delegation.
    pub prefix_delegation: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Trunk {
    pub interface: String,
    pub mtu: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    pub description: Option<String>,
    /// 802.1Q VLAN id on the trunk.
    pub vlan: Option<i64>,
    /// A plain port instead of a VLAN.
    pub interface: Option<String>,
    /// Name of the VLAN link (default `TRUNK.VID`).
    pub link_name: Option<String>,
    pub subnet: String,
    pub gateway: String,
    pub mtu: Option<i64>,
    pub internet: Option<bool>,
    pub egress: Option<String>,
    pub management: Option<bool>,
    pub dhcp: Option<Dhcp>,
    /// IPv6 subnet: a `PREFIX/64`, or `"delegated"` with `prefix_id`.
    pub subnet6: Option<String>,
    /// The gateway's IPv6 address on the segment (default `PREFIX::1`).
    pub gateway6: Option<String>,
    /// With `subnet6 = "delegated"`: which /64 of the delegated prefix this segment gets.
    pub prefix_id: Option<i64>,
    pub dhcp6: Option<Dhcp6>,
}

/// `[segments.NAME.dhcp6]`: how IPv6 hosts of the segment get addresses.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dhcp6 {
    /// `"slaac"` (default), `"stateless"` or `"stateful"`.
    pub mode: Option<String>,
    /// Stateful pool: `["START", "END"]` inside the segment's subnet6.
    pub range6: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dhcp {
    pub enabled: Option<bool>,
    #[serde(default)]
    pub ranges: Vec<String>,
    pub lease_time: Option<Duration>,
    pub max_lease_time: Option<Duration>,
    pub dns: Option<Vec<String>>,
    pub domain: Option<String>,
    #[serde(default)]
    pub reservations: Vec<Reservation>,
    #[serde(default)]
    pub options: Vec<DhcpOption>,
    /// Relay agents (their giaddr) whose relayed requests this segment answers.
    #[serde(default)]
    pub relays: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Reservation {
    pub mac: String,
    pub address: String,
    pub hostname: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DhcpOption {
    pub code: i64,
    pub ips: Option<Vec<String>>,
    pub text: Option<String>,
    pub hex: Option<String>,
    pub u8: Option<i64>,
    pub u16: Option<i64>,
    pub u32: Option<i64>,
    pub bool: Option<bool>,
}

/// A duration: whole seconds, or a string such as `"90s"`, `"10m"`, `"12h"`, `"7d"`, `"1h30m"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Duration {
    Seconds(i64),
    Text(String),
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub description: Option<String>,
    #[serde(default)]
    pub members: Vec<String>,
}

/// A port (`443`) or an inclusive range (`"8000-8100"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Port {
    Number(i64),
    Text(String),
}

/// One protocol (`"tcp"`) or several (`["tcp", "udp"]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Protos {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub description: Option<String>,
    pub from: String,
    pub to: String,
    pub proto: Option<Protos>,
    pub ports: Option<Vec<Port>>,
    pub log: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    pub name: String,
    pub description: Option<String>,
    pub proto: String,
    /// Port (or range) on the uplink.
    pub port: Port,
    /// Address of the inside host.
    pub to: String,
    /// Port on the inside host (default: the same as `port`).
    pub to_port: Option<i64>,
    /// Who may use it: a group, `internet` (default) or `any`.
    pub from: Option<String>,
    pub log: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub proto: Protos,
    pub ports: Option<Vec<Port>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EgressProfile {
    pub description: Option<String>,
    #[serde(default)]
    pub allow: Vec<Service>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Management {
    pub ssh_port: Option<i64>,
    pub api_port: Option<i64>,
    /// The API's certificate and key (PEM files); default: generated in the state directory.
    pub api_cert: Option<String>,
    pub api_key: Option<String>,
    /// Groups (inside the management segment) that may manage the gateway. Default: the whole
    /// management segment.
    pub sources: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    pub level: Option<String>,
    pub json: Option<bool>,
    pub nflog_group: Option<i64>,
    /// Drop-log rate limit, e.g. `"10/second"`.
    pub drop_log_rate: Option<String>,
    pub drop_log_burst: Option<i64>,
    /// Bytes the on-disk spool for unreachable targets may use.
    pub spool_limit: Option<i64>,
    #[serde(default)]
    pub targets: Vec<LogTarget>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogTarget {
    pub name: Option<String>,
    pub host: String,
    pub port: Option<i64>,
    pub transport: Option<String>,
    pub format: Option<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    pub drop_burst: Option<DropBurst>,
    pub port_scan: Option<PortScan>,
    pub sensitive_ports: Option<SensitivePorts>,
    pub quarantine: Option<Quarantine>,
    /// Host groups, addresses or CIDR blocks whose alerts never quarantine them.
    pub never_quarantine: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DropBurst {
    pub count: i64,
    pub window: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortScan {
    pub ports: Option<i64>,
    pub hosts: Option<i64>,
    pub window: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SensitivePorts {
    pub ports: Vec<Port>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Quarantine {
    pub enabled: Option<bool>,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sysctl {
    pub forwarding: Option<bool>,
    pub rp_filter: Option<i64>,
    pub accept_redirects: Option<bool>,
    pub send_redirects: Option<bool>,
    pub accept_source_route: Option<bool>,
    pub syncookies: Option<bool>,
    pub log_martians: Option<bool>,
    pub ignore_broadcast_ping: Option<bool>,
    pub extra: Option<BTreeMap<String, String>>,
}

/// The whole file. Maps keep the order of the file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub system: System,
    pub uplink: Option<Uplink>,
    pub trunk: Option<Trunk>,
    pub segments: Vec<(String, Segment)>,
    pub groups: Vec<(String, Group)>,
    pub rules: Vec<Rule>,
    pub forwards: Vec<Forward>,
    pub egress: Vec<(String, EgressProfile)>,
    pub management: Management,
    pub logging: Logging,
    pub alerts: Alerts,
    pub sysctl: Sysctl,
}

/// A config file read from disk or memory, with its locator.
#[derive(Debug, Clone)]
pub struct Source {
    pub config: Config,
    pub locator: Locator,
}

const TOP_KEYS: &[&str] = &[
    "system",
    "uplink",
    "trunk",
    "segments",
    "groups",
    "rules",
    "forwards",
    "egress",
    "management",
    "logging",
    "alerts",
    "sysctl",
];

fn index_paths(loc: &mut Locator, prefix: &str, value: &Spanned<DeValue<'_>>) {
    match value.get_ref() {
        DeValue::Table(t) => {
            for (k, v) in t.iter() {
                let path = if prefix.is_empty() {
                    k.get_ref().to_string()
                } else {
                    format!("{prefix}.{}", k.get_ref())
                };
                loc.insert(path.clone(), k.span(), v.span());
                index_paths(loc, &path, v);
            }
        }
        DeValue::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                let path = format!("{prefix}[{i}]");
                loc.insert(path.clone(), v.span(), v.span());
                index_paths(loc, &path, v);
            }
        }
        _ => {}
    }
}

struct Loader<'a> {
    locator: Locator,
    diags: Vec<Diagnostic>,
    _text: &'a str,
}

impl Loader<'_> {
    fn de<T: DeserializeOwned>(&mut self, path: &str, v: &Spanned<DeValue<'_>>) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(v.clone())) {
            Ok(t) => Some(t),
            Err(e) => {
                let span = e.span().unwrap_or_else(|| v.span());
                let at = self
                    .locator
                    .path_at(span.start)
                    .filter(|p| p.starts_with(path))
                    .unwrap_or(path)
                    .to_string();
                let msg = tidy_serde_message(e.message());
                self.diags.push(Diagnostic::error(at, msg).at(span));
                None
            }
        }
    }

    fn table<'b, 'i>(
        &mut self,
        path: &str,
        v: &'b Spanned<DeValue<'i>>,
    ) -> Option<&'b DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.diags.push(
                    Diagnostic::error(
                        path,
                        format!("expected a table, found {}", other.type_str()),
                    )
                    .at(v.span()),
                );
                None
            }
        }
    }

    fn named<T: DeserializeOwned>(
        &mut self,
        path: &str,
        v: &Spanned<DeValue<'_>>,
    ) -> Vec<(String, T)> {
        let mut out = Vec::new();
        if let Some(t) = self.table(path, v) {
            for (k, item) in t.iter() {
                let p = format!("{path}.{}", k.get_ref());
                if let Some(x) = self.de::<T>(&p, item) {
                    out.push((k.get_ref().to_string(), x));
                }
            }
        }
        out
    }

    fn list<T: DeserializeOwned>(&mut self, path: &str, v: &Spanned<DeValue<'_>>) -> Vec<T> {
        let mut out = Vec::new();
        match v.get_ref() {
            DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    if let Some(x) = self.de::<T>(&format!("{path}[{i}]"), item) {
                        out.push(x);
                    }
                }
            }
            other => self.diags.push(
                Diagnostic::error(
                    path,
                    format!(
                        "expected an array of tables ([[{path}]]), found {}",
                        other.type_str()
                    ),
                )
                .at(v.span()),
            ),
        }
        out
    }
}

/// serde's messages name Rust types; say what the file should contain instead.
fn tidy_serde_message(m: &str) -> String {
    let m = m.trim();
    if m.starts_with("data did not match any variant of untagged enum Duration") {
        return "expected a duration: whole seconds or a string like \"10m\", \"12h\"".into();
    }
    if m.starts_with("data did not match any variant of untagged enum Port") {
        return "expected a port number or a range string like \"8000-8100\"".into();
    }
    if m.starts_with("data did not match any variant of untagged enum Protos") {
        return "expected a protocol name or an array of them".into();
    }
    m.replace("invalid type: ", "wrong type: ")
        .replace("a sequence", "an array")
        .replace("struct ", "table ")
        .replace("i64", "an integer")
}

/// Parse a config file's text. Returns the wire config, or every syntax/shape problem at once.
pub fn parse(file: &str, text: &str) -> Result<Source, Report> {
    let mut locator = Locator::new(file, text);
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let diagnostics = syntax
            .iter()
            .map(|e| {
                let d = Diagnostic::error("syntax", e.message().trim().to_string());
                match e.span() {
                    Some(s) => d.at(s),
                    None => d,
                }
            })
            .collect();
        return Err(Report {
            locator,
            diagnostics,
        });
    }
    let root_value = Spanned::new(root.span(), DeValue::Table(root.get_ref().clone()));
    index_paths(&mut locator, "", &root_value);
    let mut ld = Loader {
        locator,
        diags: Vec::new(),
        _text: text,
    };
    let mut cfg = Config::default();
    for (k, v) in root.get_ref().iter() {
        let key = k.get_ref().as_ref();
        match key {
            "system" => cfg.system = ld.de(key, v).unwrap_or_default(),
            "uplink" => cfg.uplink = ld.de(key, v),
            "trunk" => cfg.trunk = ld.de(key, v),
            "segments" => cfg.segments = ld.named(key, v),
            "groups" => cfg.groups = ld.named(key, v),
            "egress" => cfg.egress = ld.named(key, v),
            "rules" => cfg.rules = ld.list(key, v),
            "forwards" => cfg.forwards = ld.list(key, v),
            "management" => cfg.management = ld.de(key, v).unwrap_or_default(),
            "logging" => cfg.logging = ld.de(key, v).unwrap_or_default(),
            "alerts" => cfg.alerts = ld.de(key, v).unwrap_or_default(),
            "sysctl" => cfg.sysctl = ld.de(key, v).unwrap_or_default(),
            _ => ld.diags.push(
                Diagnostic::error(
                    key,
                    format!(
                        "unknown section `{key}`, expected one of: {}",
                        TOP_KEYS.join(", ")
                    ),
                )
                .at(k.span()),
            ),
        }
    }
    if ld.diags.is_empty() {
        Ok(Source {
            config: cfg,
            locator: ld.locator,
        })
    } else {
        Err(Report {
            locator: ld.locator,
            diagnostics: ld.diags,
        })
    }
}

/// Read and parse a config file.
pub fn load(path: &std::path::Path) -> Result<Source, Report> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&file, &text),
        Err(e) => Err(Report {
            locator: Locator::new(&file, ""),
            diagnostics: vec![Diagnostic::error("", format!("cannot read the file: {e}"))],
        }),
    }
}

/// Parse `a.b.c.d` for the config, with a message that names what was given.
pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("`{s}` is not an IPv4 address"))
}
