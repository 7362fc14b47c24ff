//! `bulkhead setup`: first-boot setup from the console.
//!
//! An interactive wizard (or, with `--from FILE`, a TOML answers file) picks the trunk and
//! uplink NICs, the uplink's addressing, the management VLAN and address, an admin SSH key and
//! a syslog target. The new config is the current one edited in place (other sections and
//! comments are kept), validated like any config, shown as a plan, then applied with
//! commit-confirm: it is written beside the saved config as a candidate and becomes the saved
//! config only when `bulkhead confirm` arrives in time; otherwise the previous config comes
//! back and the saved file is left as it was.

use std::io::{IsTerminal, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use ipnet::Ipv4Net;
use toml_edit::{DocumentMut, Item, Table, value};

use super::{CliError, Global};
use crate::control::{self, Request};
use crate::plan::{self, Part};

/// Where the appliance keeps the config setup saved (its data partition; the init runs this
/// file when it exists, else [`crate::config::DEFAULT_PATH`]).
pub const SAVED_PATH: &str = "/var/lib/bulkhead/bulkhead.toml";

/// Default commit-confirm window of a setup apply.
pub const DEFAULT_CONFIRM: &str = "120s";

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Take the answers from this TOML file instead of asking (see docs/setup.md).
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Save the new config here (default: the config file; for the shipped
    /// /etc/bulkhead/bulkhead.toml, /var/lib/bulkhead/bulkhead.toml as on the appliance); the
    /// admin key goes to `authorized_keys` in the same directory.
    #[arg(long, value_name = "PATH", env = "BULKHEAD_SAVE")]
    pub save: Option<PathBuf>,
    /// Write the config and the key, do not apply.
    #[arg(long)]
    pub no_apply: bool,
    /// Apply without asking.
    #[arg(short, long)]
    pub yes: bool,
    /// The previous config comes back unless `bulkhead confirm` arrives within this time
    /// (0: no confirmation, the new config is kept at once).
    #[arg(long, default_value = DEFAULT_CONFIRM)]
    pub confirm_within: String,
    /// Print the full plan before asking to apply.
    #[arg(long)]
    pub show_plan: bool,
}

/// A wrong answer: the field it belongs to, and where it is in an answers file.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerError {
    pub field: String,
    /// `FILE:LINE` in an answers file.
    pub at: Option<String>,
    pub message: String,
}

impl std::fmt::Display for AnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{at}: {}: {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

/// How the uplink gets its address.
#[derive(Debug, Clone, PartialEq)]
pub enum UplinkAddr {
    Dhcp,
    Static(Ipv4Net),
}

impl std::fmt::Display for UplinkAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UplinkAddr::Dhcp => f.write_str("dhcp"),
            UplinkAddr::Static(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Syslog {
    pub host: Ipv4Addr,
    pub port: Option<u16>,
}

/// The answers of the wizard or of an answers file; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answers {
    pub trunk: Option<String>,
    pub uplink: Option<String>,
    pub uplink_address: Option<UplinkAddr>,
    pub uplink_gateway: Option<Ipv4Addr>,
    pub mgmt_vlan: Option<u16>,
    /// The gateway's address on the management segment, with the segment's prefix.
    pub mgmt_address: Option<Ipv4Net>,
    pub admin_key: Option<String>,
    /// `Some(None)`: no syslog target.
    pub syslog: Option<Option<Syslog>>,
    pub syslog_transport: Option<String>,
}

// ---- answers, one field at a time ------------------------------------------------------

pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr, String> {
    crate::config::parse_ipv4(s.trim()).map_err(|_| format!("`{s}` is not an IPv4 address"))
}

pub fn parse_uplink_address(s: &str) -> Result<UplinkAddr, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("dhcp") {
        return Ok(UplinkAddr::Dhcp);
    }
    parse_host_prefix(t).map(UplinkAddr::Static).map_err(|e| {
        format!("{e}; expected `dhcp` or an address with its prefix, e.g. 203.0.113.2/24")
    })
}

/// An address with its prefix, for an interface: not the network or broadcast address.
pub fn parse_host_prefix(s: &str) -> Result<Ipv4Net, String> {
    let t = s.trim();
    let n: Ipv4Net = t
        .parse()
        .map_err(|_| format!("`{s}` is not an address with a prefix (like 10.0.100.1/24)"))?;
    if n.prefix_len() <= 30 && (n.addr() == n.network() || n.addr() == n.broadcast()) {
        return Err(format!(
            "`{s}` is the {} address of {}: give the gateway's own address",
            if n.addr() == n.network() {
                "network"
            } else {
                "broadcast"
            },
            n.trunc()
        ));
    }
    if n.prefix_len() < 8 {
        return Err(format!("`{s}`: a /{} is too large", n.prefix_len()));
    }
    Ok(n)
}

pub fn parse_vlan(n: i64) -> Result<u16, String> {
    if (1..=4094).contains(&n) {
        Ok(n as u16)
    } else {
        Err(format!("VLAN id {n} is out of range 1-4094"))
    }
}

pub fn parse_vlan_text(s: &str) -> Result<u16, String> {
    s.trim()
        .parse::<i64>()
        .map_err(|_| format!("`{s}` is not a VLAN id (1-4094)"))
        .and_then(parse_vlan)
}

/// `HOST[:PORT]` (HOST an IPv4 address) or `none`.
pub fn parse_syslog(s: &str) -> Result<Option<Syslog>, String> {
    let t = s.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let (h, p) = match t.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (t, None),
    };
    let host = crate::config::parse_ipv4(h).map_err(|_| {
        format!("`{h}` must be an IPv4 address (the gateway does not depend on DNS to ship its logs); expected HOST[:PORT] or none")
    })?;
    let port = match p {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{p}` is not a port (1-65535)"))?,
        ),
    };
    Ok(Some(Syslog { host, port }))
}

pub fn parse_transport(s: &str) -> Result<String, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        t @ ("udp" | "tcp" | "tls") => Ok(t.to_string()),
        _ => Err(format!("unknown transport `{s}`, expected udp, tcp or tls")),
    }
}

/// An OpenSSH public key line: `TYPE BASE64 [COMMENT]`, TYPE one of ssh-ed25519, ssh-rsa,
/// ecdsa-sha2-*; the key blob must decode and name the same type. Returns the line, trimmed.
pub fn parse_ssh_key(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.contains('\n') {
        return Err("give one key on one line".into());
    }
    let mut w = t.split_whitespace();
    let kind = w.next().ok_or("empty key")?;
    if !(kind == "ssh-ed25519" || kind == "ssh-rsa" || kind.starts_with("ecdsa-sha2-")) {
        return Err(format!(
            "`{kind}` is not a supported key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-*); paste the whole line of the .pub file"
        ));
    }
    let b64 = w
        .next()
        .ok_or_else(|| format!("the {kind} key has no key data after its type"))?;
    let blob = base64_decode(b64).ok_or("the key data is not valid base64")?;
    let named = (blob.len() >= 4)
        .then(|| u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize)
        .and_then(|n| blob.get(4..4 + n));
    if named != Some(kind.as_bytes()) {
        return Err(format!(
            "the key data is not a {kind} key (truncated or mistyped?)"
        ));
    }
    let min = if kind == "ssh-ed25519" { 51 } else { 64 };
    if blob.len() < min {
        return Err("the key data is too short (truncated?)".into());
    }
    Ok(t.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let b = s.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return None;
    }
    let pad = b.iter().rev().take_while(|c| **c == b'=').count();
    if pad > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (i, chunk) in b.chunks(4).enumerate() {
        let last = i == b.len() / 4 - 1;
        let mut n = 0u32;
        for (j, c) in chunk.iter().enumerate() {
            let v = if *c == b'=' && last && j >= 4 - pad {
                0
            } else {
                val(*c)?
            };
            n = (n << 6) | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = if last { 3 - pad } else { 3 };
        out.extend_from_slice(&bytes[..keep]);
    }
    Some(out)
}

// ---- NICs ------------------------------------------------------------------------------

/// A network interface the wizard offers.
#[derive(Debug, Clone, PartialEq)]
pub struct Nic {
    pub name: String,
    pub mac: String,
    pub state: String,
}

impl std::fmt::Display for Nic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<12} {:<17} {}", self.name, self.mac, self.state)
    }
}

/// The NICs in /sys/class/net, without lo, VLAN links and the links a config creates.
pub fn nics(created: &[String]) -> Vec<Nic> {
    let base = Path::new("/sys/class/net");
    let mut v: Vec<Nic> = std::fs::read_dir(base)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let d = base.join(&name);
            let read = |f: &str| {
                std::fs::read_to_string(d.join(f))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default()
            };
            let uevent = read("uevent");
            if name == "lo"
                || created.contains(&name)
                || uevent.lines().any(|l| l == "DEVTYPE=vlan")
                || read("type") == "772"
            {
                return None;
            }
            let state = match read("operstate").as_str() {
                "up" => "link up".to_string(),
                "down" if read("carrier") == "0" => "no link".to_string(),
                "down" => "down".to_string(),
                o => format!("link {o}"),
            };
            Some(Nic {
                name,
                mac: read("address"),
                state,
            })
        })
        .collect();
    v.sort_by_key(|n| natural(&n.name));
    v
}

/// eth2 before eth10.
fn natural(s: &str) -> (String, u64) {
    let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (a, n) = s.split_at(s.len() - digits);
    (a.to_string(), n.parse().unwrap_or(0))
}

// ---- the answers file ------------------------------------------------------------------

/// Keys of the answers file.
pub const ANSWER_KEYS: &[&str] = &[
    "trunk",
    "uplink",
    "uplink_address",
    "uplink_gateway",
    "mgmt_vlan",
    "mgmt_address",
    "admin_key",
    "syslog",
    "syslog_transport",
];

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> usize {
    span.map_or(1, |s| {
        text[..s.start.min(text.len())].matches('\n').count() + 1
    })
}

/// Parse an answers file; every problem, each with its field and FILE:LINE.
pub fn parse_answers(file: &str, text: &str) -> Result<Answers, Vec<AnswerError>> {
    let doc = match toml_edit::Document::parse(text) {
        Ok(d) => d,
        Err(e) => {
            return Err(vec![AnswerError {
                field: "(file)".into(),
                at: Some(format!("{file}:{}", line_of(text, e.span()))),
                message: e.message().to_string(),
            }]);
        }
    };
    let mut errs = Vec::new();
    let mut a = Answers::default();
    for (k, item) in doc.as_table().iter() {
        let at = Some(format!(
            "{file}:{}",
            line_of(text, doc.as_table().key(k).and_then(|k| k.span()))
        ));
        let err = |m: String| AnswerError {
            field: k.to_string(),
            at: at.clone(),
            message: m,
        };
        let s = item.as_str();
        let need_str = || err("must be a string".into());
        let r: Result<(), AnswerError> = (|| {
            match k {
                "trunk" | "uplink" => {
                    let v = s.ok_or_else(need_str)?.trim().to_string();
                    if v.is_empty() {
                        return Err(err("must name a NIC".into()));
                    }
                    if k == "trunk" {
                        a.trunk = Some(v)
                    } else {
                        a.uplink = Some(v)
                    }
                }
                "uplink_address" => {
                    a.uplink_address =
                        Some(parse_uplink_address(s.ok_or_else(need_str)?).map_err(err)?)
                }
                "uplink_gateway" => {
                    a.uplink_gateway = Some(parse_ipv4(s.ok_or_else(need_str)?).map_err(err)?)
                }
                "mgmt_vlan" => {
                    let n = item
                        .as_integer()
                        .ok_or_else(|| err("must be a number (1-4094)".into()))?;
                    a.mgmt_vlan = Some(parse_vlan(n).map_err(err)?)
                }
                "mgmt_address" => {
                    a.mgmt_address = Some(parse_host_prefix(s.ok_or_else(need_str)?).map_err(err)?)
                }
                "admin_key" => {
                    a.admin_key = Some(parse_ssh_key(s.ok_or_else(need_str)?).map_err(err)?)
                }
                "syslog" => a.syslog = Some(parse_syslog(s.ok_or_else(need_str)?).map_err(err)?),
                "syslog_transport" => {
                    a.syslog_transport =
                        Some(parse_transport(s.ok_or_else(need_str)?).map_err(err)?)
                }
                _ => {
                    return Err(err(format!(
                        "unknown key; the answers file knows {}",
                        ANSWER_KEYS.join(", ")
                    )));
                }
            }
            Ok(())
        })();
        if let Err(e) = r {
            errs.push(e);
        }
    }
    if a.uplink_gateway.is_some() && a.uplink_address == Some(UplinkAddr::Dhcp) {
        errs.push(AnswerError {
            field: "uplink_gateway".into(),
            at: Some(format!(
                "{file}:{}",
                line_of(
                    text,
                    doc.as_table().key("uplink_gateway").and_then(|k| k.span())
                )
            )),
            message: "a DHCP uplink takes its gateway from the DHCP server".into(),
        });
    }
    if errs.is_empty() { Ok(a) } else { Err(errs) }
}

// ---- editing the config ----------------------------------------------------------------

/// The values of the current config that the wizard asks about (its defaults).
#[derive(Debug, Clone, Default)]
pub struct Current {
    pub trunk: Option<String>,
    pub uplink: Option<String>,
    pub uplink_address: Option<String>,
    pub uplink_gateway: Option<String>,
    /// Key of the management segment under `[segments]`.
    pub mgmt_segment: Option<String>,
    pub mgmt_vlan: Option<i64>,
    pub mgmt_address: Option<String>,
    pub syslog: Option<String>,
    pub syslog_transport: Option<String>,
}

fn get_str(t: Option<&Item>, k: &str) -> Option<String> {
    t?.get(k)?.as_str().map(str::to_string)
}

fn mgmt_segment(doc: &DocumentMut) -> Option<String> {
    let segs = doc.get("segments")?.as_table_like()?;
    segs.iter()
        .find(|(_, s)| {
            s.get("management")
                .and_then(|m| m.as_bool())
                .unwrap_or(false)
        })
        .map(|(k, _)| k.to_string())
}

pub fn current(doc: &DocumentMut) -> Current {
    let mgmt = mgmt_segment(doc);
    let seg = mgmt.as_ref().and_then(|m| doc.get("segments")?.get(m));
    let mgmt_address = seg.and_then(|s| {
        let gw = s.get("gateway")?.as_str()?;
        let subnet: Ipv4Net = s.get("subnet")?.as_str()?.parse().ok()?;
        Some(format!("{gw}/{}", subnet.prefix_len()))
    });
    let target = doc
        .get("logging")
        .and_then(|l| l.get("targets"))
        .and_then(|t| t.as_array_of_tables())
        .and_then(|a| a.get(0));
    let syslog = target.and_then(|t| {
        let host = t.get("host")?.as_str()?;
        Some(match t.get("port").and_then(|p| p.as_integer()) {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        })
    });
    Current {
        trunk: get_str(doc.get("trunk"), "interface"),
        uplink: get_str(doc.get("uplink"), "interface"),
        uplink_address: get_str(doc.get("uplink"), "address"),
        uplink_gateway: get_str(doc.get("uplink"), "gateway"),
        mgmt_vlan: seg.and_then(|s| s.get("vlan")).and_then(|v| v.as_integer()),
        mgmt_segment: mgmt,
        mgmt_address,
        syslog,
        syslog_transport: target
            .and_then(|t| t.get("transport"))
            .and_then(|v| v.as_str())
            .map(str::to_string),
    }
}

/// The table at `key` of `t`, created (as a standard table) when missing.
fn table<'a>(t: &'a mut Table, key: &str) -> Result<&'a mut Table, AnswerError> {
    if !t.contains_key(key) {
        let mut n = Table::new();
        n.set_implicit(false);
        t.insert(key, Item::Table(n));
    }
    let it = t.get_mut(key).expect("inserted");
    if let Item::Value(toml_edit::Value::InlineTable(_)) = it {
        let inline = it
            .as_inline_table()
            .cloned()
            .expect("checked: an inline table");
        *it = Item::Table(inline.into_table());
    }
    it.as_table_mut().ok_or_else(|| AnswerError {
        field: key.to_string(),
        at: None,
        message: "the config has this key, but not as a table".into(),
    })
}

/// A DHCP range for a subnet the old one no longer fits: the upper half, without the
/// gateway and the broadcast address.
fn default_range(net: Ipv4Net, gw: Ipv4Addr) -> Option<String> {
    let lo = u32::from(net.network());
    let hi = u32::from(net.broadcast());
    if hi - lo < 4 {
        return None;
    }
    let (mut a, mut b) = (lo + (hi - lo) / 2, hi - 1);
    let g = u32::from(gw);
    if g == a {
        a += 1;
    }
    if g == b {
        b -= 1;
    }
    Some(format!("{}-{}", Ipv4Addr::from(a), Ipv4Addr::from(b)))
}

fn range_within(r: &str, net: Ipv4Net) -> bool {
    let (a, b) = r.split_once('-').unwrap_or((r, r));
    [a, b]
        .iter()
        .all(|x| x.trim().parse::<Ipv4Addr>().is_ok_and(|x| net.contains(&x)))
}

/// Edit the config text with the answers; everything else (and every comment) stays.
pub fn edit(text: &str, a: &Answers) -> Result<String, AnswerError> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| AnswerError {
            field: "(config)".into(),
            at: Some(format!("line {}", line_of(text, e.span()))),
            message: e.message().to_string(),
        })?;
    let root = doc.as_table_mut();
    if let Some(t) = &a.trunk {
        table(root, "trunk")?["interface"] = value(t.as_str());
    }
    {
        let up = (a.uplink.is_some() || a.uplink_address.is_some() || a.uplink_gateway.is_some())
            .then(|| table(root, "uplink"))
            .transpose()?;
        if let Some(up) = up {
            if let Some(u) = &a.uplink {
                up["interface"] = value(u.as_str());
            }
            match &a.uplink_address {
                Some(UplinkAddr::Dhcp) => {
                    up["address"] = value("dhcp");
                    up.remove("gateway");
                }
                Some(UplinkAddr::Static(n)) => up["address"] = value(n.to_string()),
                None => {}
            }
            if let Some(g) = a.uplink_gateway {
                up["gateway"] = value(g.to_string());
            }
        }
    }
    if a.mgmt_vlan.is_some() || a.mgmt_address.is_some() {
        let name = mgmt_segment(&doc).unwrap_or_else(|| "mgmt".into());
        let segs = table(doc.as_table_mut(), "segments")?;
        let seg = table(segs, &name)?;
        seg["management"] = value(true);
        if let Some(v) = a.mgmt_vlan {
            // a plain port becomes a VLAN of the trunk; comments above the port go to the VLAN
            let decor = seg
                .key("interface")
                .filter(|_| !seg.contains_key("vlan"))
                .map(|k| k.leaf_decor().clone());
            seg.remove("interface");
            seg["vlan"] = value(i64::from(v));
            if let Some(d) = decor
                && let Some(mut k) = seg.key_mut("vlan")
            {
                *k.leaf_decor_mut() = d;
            }
        }
        if let Some(n) = a.mgmt_address {
            let net = n.trunc();
            seg["subnet"] = value(net.to_string());
            seg["gateway"] = value(n.addr().to_string());
            if let Some(dhcp) = seg.get_mut("dhcp").and_then(|d| d.as_table_like_mut()) {
                let ranges: Vec<String> = dhcp
                    .get("ranges")
                    .and_then(|r| r.as_array())
                    .map(|r| {
                        r.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let fits = !ranges.is_empty() && ranges.iter().all(|r| range_within(r, net));
                if !fits && let Some(r) = default_range(net, n.addr()) {
                    let mut arr = toml_edit::Array::new();
                    arr.push(r);
                    dhcp.insert("ranges", value(arr));
                }
            }
        }
    }
    match &a.syslog {
        None => {
            if let Some(tr) = &a.syslog_transport
                && let Some(t) = doc
                    .get_mut("logging")
                    .and_then(|l| l.get_mut("targets"))
                    .and_then(|t| t.as_array_of_tables_mut())
                    .and_then(|a| a.get_mut(0))
            {
                t["transport"] = value(tr.as_str());
            }
        }
        Some(None) => {
            if let Some(l) = doc.get_mut("logging").and_then(|l| l.as_table_mut()) {
                l.remove("targets");
            }
        }
        Some(Some(s)) => {
            let logging = table(doc.as_table_mut(), "logging")?;
            if !logging.contains_key("targets") {
                logging.insert(
                    "targets",
                    Item::ArrayOfTables(toml_edit::ArrayOfTables::new()),
                );
            }
            let arr = logging["targets"]
                .as_array_of_tables_mut()
                .ok_or_else(|| AnswerError {
                    field: "syslog".into(),
                    at: None,
                    message: "logging.targets in the config is not an array of tables".into(),
                })?;
            if arr.is_empty() {
                let mut t = Table::new();
                t["name"] = value("syslog");
                arr.push(t);
            }
            let t = arr.get_mut(0).expect("one target at least");
            let transport = a
                .syslog_transport
                .clone()
                .or_else(|| {
                    t.get("transport")
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "udp".into());
            t["host"] = value(s.host.to_string());
            let port = s
                .port
                .unwrap_or(if transport == "tls" { 6514 } else { 514 });
            t["port"] = value(i64::from(port));
            t["transport"] = value(transport);
        }
    }
    Ok(doc.to_string())
}

// ---- the steps -------------------------------------------------------------------------

pub(crate) fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// `authorized_keys` beside the saved config.
pub fn keys_path(save: &Path) -> PathBuf {
    save.with_file_name("authorized_keys")
}

use crate::supervisor::gateway::{KeyGrant, revoke_keys};
pub use crate::supervisor::gateway::{candidate_path, key_grant_path};

/// Replace a file durably (temp, fsync, rename, directory fsync).
fn write_atomic(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    crate::sys::fs::write_atomic(path, text.as_bytes(), mode)
}

/// Add the key to authorized_keys (kept: the keys already there).
fn save_key(path: &Path, key: &str) -> std::io::Result<bool> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let blob = |l: &str| l.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    if old.lines().any(|l| blob(l) == blob(key)) {
        return Ok(false);
    }
    let mut t = old;
    if !t.is_empty() && !t.ends_with('\n') {
        t.push('\n');
    }
    t.push_str(key);
    t.push('\n');
    write_atomic(path, &t, 0o600)?;
    Ok(true)
}

/// Problems of the answers that the config's validation cannot see: NICs that are not
/// there, one NIC for both roles.
fn check_nics(a: &Answers, cur: &Current, nics: &[Nic]) -> Vec<AnswerError> {
    let mut v = Vec::new();
    let trunk = a.trunk.clone().or_else(|| cur.trunk.clone());
    let uplink = a.uplink.clone().or_else(|| cur.uplink.clone());
    if trunk.is_some() && trunk == uplink {
        v.push(AnswerError {
            field: "uplink".into(),
            at: None,
            message: format!(
                "`{}` is the trunk NIC too: the uplink needs a NIC of its own",
                uplink.unwrap_or_default()
            ),
        });
    }
    for (field, nic) in [("trunk", &a.trunk), ("uplink", &a.uplink)] {
        if let Some(n) = nic
            && !nics.iter().any(|x| &x.name == n)
        {
            v.push(AnswerError {
                field: field.into(),
                at: None,
                message: format!(
                    "no NIC named `{n}` on this machine (NICs: {})",
                    if nics.is_empty() {
                        "none".to_string()
                    } else {
                        nics.iter()
                            .map(|x| x.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            });
        }
    }
    v
}

/// What the plan will do, in a few lines.
fn summary(m: &crate::model::Model, p: &plan::Plan, keys: &Path, key: Option<&str>) -> String {
    let mut s = String::new();
    let rs = &p.ruleset;
    s.push_str(&p.text(Some(Part::Links)));
    let mg = m.management_segment();
    s.push_str(&format!(
        "management: {} on {} ({}), SSH port {} from the management segment only\n",
        mg.gateway, mg.ifname, mg.subnet, m.management.ssh_port
    ));
    for t in &m.logging.targets {
        s.push_str(&format!(
            "syslog: {} {}:{} ({})\n",
            t.name,
            t.host,
            t.port,
            match t.transport {
                crate::model::Transport::Udp => "udp",
                crate::model::Transport::Tcp => "tcp",
                crate::model::Transport::Tls => "tls",
            }
        ))
    }
    if m.logging.targets.is_empty() {
        s.push_str("syslog: no target\n");
    }
    match key {
        Some(k) => s.push_str(&format!(
            "admin key: {} (added to {})\n",
            k.split_whitespace()
                .enumerate()
                .map(|(i, w)| if i == 1 && w.len() > 24 {
                    format!("{}…{}", &w[..12], &w[w.len() - 8..])
                } else {
                    w.to_string()
                })
                .collect::<Vec<_>>()
                .join(" "),
            keys.display()
        )),
        None => s.push_str(&format!("admin key: unchanged ({})\n", keys.display())),
    }
    s.push_str(&format!(
        "{} segments, {} groups, {} rules, {} port forwards; {} firewall rules ({}); DHCP on {} segments\n",
        m.segments.len(),
        m.groups.len(),
        m.rules.len(),
        m.forwards.len(),
        rs.rule_count(),
        m.backend.name(),
        p.dhcp.len()
    ));
    s
}

/// The candidate config, validated: the model, or every problem as FILE:LINE:COL: key: msg.
fn validate(file: &Path, text: &str) -> Result<crate::model::Model, String> {
    crate::plan::load_str(&file.display().to_string(), text)
        .map(|(m, _)| m)
        .map_err(|r| r.to_string())
}

fn fail(errs: &[AnswerError]) -> ExitCode {
    for e in errs {
        eprintln!("setup: {e}");
    }
    ExitCode::from(2)
}

pub fn run(g: &Global, args: SetupArgs) -> Result<ExitCode, CliError> {
    let confirm = crate::model::addr::parse_duration(&args.confirm_within)
        .map_err(|e| CliError::Usage(format!("--confirm-within: {e}")))?;
    // On the appliance (the shipped config, no --save) the config is saved on the data
    // partition, where the init looks first, and a config saved there is the current one.
    let appliance = args.save.is_none() && g.config == Path::new(crate::config::DEFAULT_PATH);
    let saved = Path::new(SAVED_PATH);
    let current_path = if appliance && saved.exists() {
        saved
    } else {
        g.config.as_path()
    };
    let save = match &args.save {
        Some(p) => absolute(p),
        None if appliance => saved.to_path_buf(),
        None => absolute(&g.config),
    };
    let base = std::fs::read_to_string(current_path).map_err(|e| {
        CliError::Usage(format!(
            "reading the current config {}: {e}",
            current_path.display()
        ))
    })?;
    let doc: DocumentMut = base.parse().map_err(|e| {
        CliError::Usage(format!(
            "{}: not a TOML file: {e}; fix it or start from the shipped config",
            current_path.display()
        ))
    })?;
    let cur = current(&doc);
    // links this config creates are not NICs to offer
    let created: Vec<String> = crate::plan::load_str("", &base)
        .map(|(m, _)| m.segments.iter().map(|s| s.ifname.clone()).collect())
        .unwrap_or_default();
    let nics = nics(&created);
    let keys = keys_path(&save);
    let interactive = args.from.is_none();
    if interactive && !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "the setup wizard needs a terminal; use `bulkhead setup --from FILE` for answers from a file".into(),
        ));
    }

    if interactive {
        fix_terminal_size();
    }
    let mut answers = match &args.from {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| CliError::Usage(format!("reading {}: {e}", f.display())))?;
            match parse_answers(&f.display().to_string(), &text) {
                Ok(a) => a,
                Err(errs) => return Ok(fail(&errs)),
            }
        }
        None => Answers::default(),
    };
    let mut out = std::io::stdout();
    let (model, text) = loop {
        if interactive {
            answers = match wizard::ask(&cur, &nics, &keys, &answers) {
                Ok(a) => a,
                Err(e) => return wizard::aborted(e),
            };
        }
        let mut errs = check_nics(&answers, &cur, &nics);
        if args.no_apply && !errs.is_empty() {
            // the config may be meant for another machine: say so, write it anyway
            for e in errs.drain(..) {
                eprintln!("setup: warning: {e}");
            }
        }
        let edited = edit(&base, &answers);
        let r = match edited {
            Err(e) => Err(format!("setup: {e}\n")),
            Ok(text) if errs.is_empty() => validate(&save, &text).map(|m| (m, text)),
            Ok(_) => Err(String::new()),
        };
        match r {
            Ok(x) => break x,
            Err(report) => {
                for e in &errs {
                    eprintln!("setup: {e}");
                }
                if !report.is_empty() {
                    eprint!("{report}");
                    eprintln!(
                        "setup: the new config is not valid (lines are those of the new config; nothing was written)"
                    );
                }
                if !interactive {
                    return Ok(ExitCode::from(2));
                }
                eprintln!("setup: let's go through the answers again");
            }
        }
    };

    let p = plan::build(&model, None);
    writeln!(out, "\nThe new configuration ({}):", save.display())?;
    write!(
        out,
        "{}",
        summary(&model, &p, &keys, answers.admin_key.as_deref())
    )?;
    let full = args.show_plan
        || (interactive
            && !args.yes
            && wizard::yes_no("Show the full plan?", false).map_err(wizard::io_err)?);
    if full {
        writeln!(out)?;
        out.write_all(p.text(None).as_bytes())?;
    }

    if args.no_apply {
        write_atomic(&save, &text, 0o644)?;
        if let Some(k) = &answers.admin_key {
            save_key(&keys, k)?;
        }
        writeln!(
            out,
            "setup: saved {}{}; not applied (`bulkhead -c {} apply` applies it)",
            save.display(),
            if answers.admin_key.is_some() {
                format!(" and the admin key in {}", keys.display())
            } else {
                String::new()
            },
            save.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let go = if args.yes {
        true
    } else if std::io::stdin().is_terminal() {
        let q = if confirm > 0 {
            format!("Apply it now? (it is undone in {confirm} s unless confirmed)")
        } else {
            "Apply it now?".to_string()
        };
        wizard::yes_no(&q, true).map_err(wizard::io_err)?
    } else {
        return Err(CliError::Usage(
            "not applied: pass --yes to apply without asking, or --no-apply to write the config only".into(),
        ));
    };
    if !go {
        writeln!(
            out,
            "setup: nothing applied, nothing saved (the answers are lost; `--no-apply` saves without applying)"
        )?;
        return Ok(ExitCode::from(1));
    }

    // the key first: an operator who can only reach the new management address can log in
    // with it to confirm
    // A key added here is listed beside the candidate: the apply records it with its pending
    // confirmation, and a rollback takes it out again.
    let grants = key_grant_path(&save);
    let mut added = Vec::new();
    if let Some(k) = &answers.admin_key
        && save_key(&keys, k)?
    {
        writeln!(out, "setup: admin key added to {}", keys.display())?;
        added.push(KeyGrant {
            file: keys.clone(),
            key: k.clone(),
        });
    }
    if added.is_empty() {
        let _ = std::fs::remove_file(&grants);
    } else {
        write_atomic(
            &grants,
            &serde_json::to_string(&added).expect("serializes"),
            0o600,
        )?;
    }
    // the file to apply; the gateway keeps what it applied as the candidate beside the saved
    // config until it is confirmed
    let input = save.with_file_name(format!(
        ".{}.setup-{}",
        save.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    write_atomic(&input, &text, 0o644)?;
    let within = (confirm > 0).then_some(confirm);
    let r = apply_config(g, &model, &input, &save, within);
    let _ = std::fs::remove_file(&input);
    match r {
        Ok((rep, pending)) => {
            writeln!(
                out,
                "setup: applied: {} change{}, generation {}",
                rep.changes.len(),
                if rep.changes.len() == 1 { "" } else { "s" },
                rep.generation.map_or("-".into(), |g| g.to_string())
            )?;
            if pending {
                writeln!(
                    out,
                    "setup: run `bulkhead confirm` within {confirm} s (on this console, or over SSH at {} from the management segment) to keep it;\n\
                     setup: otherwise the previous config comes back and {} stays as it was",
                    model.management_segment().gateway,
                    save.display()
                )?;
            } else {
                writeln!(out, "setup: saved {}", save.display())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            // nothing changed: the key goes too
            let _ = std::fs::remove_file(&grants);
            revoke_keys(&added);
            eprintln!(
                "setup: apply failed, nothing saved ({} is unchanged): {e}",
                save.display()
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// A serial console reports no size; the prompts need one to lay out their lines.
fn fix_terminal_size() {
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    if let Some((rows, cols)) = crate::sys::term::window_size(stdin.as_fd())
        && (cols == 0 || rows == 0)
    {
        let env = |k: &str, d: u16| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|v| *v > 0)
                .unwrap_or(d)
        };
        let _ =
            crate::sys::term::set_window_size(stdin.as_fd(), env("LINES", 24), env("COLUMNS", 80));
    }
}

/// Apply the candidate through the daemon when it runs, here otherwise. Returns the report
/// and whether a confirmation is pending. (Also used by `bulkhead restore`.)
pub(crate) fn apply_config(
    g: &Global,
    m: &crate::model::Model,
    input: &Path,
    save: &Path,
    within: Option<u64>,
) -> Result<(crate::supervisor::gateway::ApplyView, bool), CliError> {
    use crate::supervisor::Gateway;
    let state_dir = g.state_dir.clone().unwrap_or_else(|| m.state_dir.clone());
    let req = Request::Apply {
        confirm_within: within,
        config: Some(input.to_path_buf()),
        save: Some(save.to_path_buf()),
    };
    let view = match control::call(&state_dir, &req, Duration::from_secs(120)) {
        Some(Ok(r)) if r.ok => serde_json::from_value(r.data).unwrap_or_default(),
        Some(Ok(r)) => return Err(CliError::Daemon(r.error.unwrap_or_default())),
        Some(Err(e)) => return Err(CliError::Io(e)),
        None => {
            let mut gw = Gateway::open(input, Some(state_dir.clone()), g.lab_mode())?;
            let r = gw.apply_config(within.map(Duration::from_secs), Some(input), Some(save))?;
            if gw.pending().is_some() {
                let watch = Global {
                    config: if g.config.exists() {
                        g.config.clone()
                    } else {
                        save.to_path_buf()
                    },
                    lab: g.lab,
                    lab_backend: g.lab_backend,
                    state_dir: Some(state_dir.clone()),
                    remote: None,
                    token: None,
                    fingerprint: None,
                };
                super::spawn_watchdog(&watch, &state_dir)?;
            }
            serde_json::from_value(serde_json::to_value(r).expect("serializes")).unwrap_or_default()
        }
    };
    let pending = std::fs::read_to_string(state_dir.join("pending-confirm.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<crate::supervisor::gateway::Pending>(&t).ok())
        .is_some_and(|p| p.promote.is_some_and(|pr| pr.to == save));
    Ok((view, pending))
}

/// The prompts.
mod wizard {
    use super::*;
    use inquire::validator::Validation;
    use inquire::{Confirm, InquireError, Select, Text};

    pub fn io_err(e: InquireError) -> CliError {
        CliError::Io(std::io::Error::other(e.to_string()))
    }

    pub fn aborted(e: InquireError) -> Result<ExitCode, CliError> {
        match e {
            InquireError::OperationCanceled | InquireError::OperationInterrupted => {
                eprintln!("setup: cancelled; nothing was changed");
                Ok(ExitCode::from(130))
            }
            e => Err(io_err(e)),
        }
    }

    /// A yes/no question; Esc answers no.
    pub fn yes_no(q: &str, default: bool) -> Result<bool, InquireError> {
        match Confirm::new(q).with_default(default).prompt() {
            Err(InquireError::OperationCanceled) => Ok(false),
            r => r,
        }
    }

    fn validator<T>(
        f: impl Fn(&str) -> Result<T, String> + Clone + 'static,
    ) -> impl Fn(&str) -> Result<Validation, inquire::CustomUserError> + Clone {
        move |s: &str| {
            Ok(match f(s) {
                Ok(_) => Validation::Valid,
                Err(e) => Validation::Invalid(e.into()),
            })
        }
    }

    fn pick_nic(
        q: &str,
        nics: &[Nic],
        skip: Option<&str>,
        default: Option<&str>,
    ) -> Result<String, InquireError> {
        let opts: Vec<&Nic> = nics
            .iter()
            .filter(|n| Some(n.name.as_str()) != skip)
            .collect();
        if opts.is_empty() {
            // nothing to list: ask for a name
            let mut t = Text::new(q).with_help_message("no NICs found in /sys/class/net");
            if let Some(d) = default {
                t = t.with_default(d);
            }
            return t.prompt();
        }
        let start = default
            .and_then(|d| opts.iter().position(|n| n.name == d))
            .unwrap_or(0);
        let names: Vec<String> = opts.iter().map(|n| n.to_string()).collect();
        let choice = Select::new(q, names)
            .with_starting_cursor(start)
            .with_help_message("↑↓ to move, type to filter, Enter to choose")
            .prompt()?;
        Ok(choice
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string())
    }

    /// Ask every question, the previous answers (or the current config) as defaults.
    pub fn ask(
        cur: &Current,
        nics: &[Nic],
        keys: &Path,
        prev: &Answers,
    ) -> Result<Answers, InquireError> {
        println!("Bulkhead setup: Enter keeps the value in brackets; Esc cancels.");
        println!("NICs on this machine:");
        for n in nics {
            println!("  {n}");
        }
        let mut a = Answers::default();
        let trunk = pick_nic(
            "Trunk NIC (carries the VLANs):",
            nics,
            None,
            prev.trunk.as_deref().or(cur.trunk.as_deref()),
        )?;
        let uplink = pick_nic(
            "Uplink NIC (towards the internet):",
            nics,
            Some(&trunk),
            prev.uplink.as_deref().or(cur.uplink.as_deref()),
        )?;
        a.trunk = Some(trunk);
        a.uplink = Some(uplink);

        let cur_static = cur
            .uplink_address
            .as_deref()
            .is_some_and(|s| !s.eq_ignore_ascii_case("dhcp"));
        let prev_static = matches!(prev.uplink_address, Some(UplinkAddr::Static(_)));
        let modes = vec!["dhcp", "static"];
        let mode = Select::new("Uplink addressing:", modes)
            .with_starting_cursor(usize::from(prev_static || cur_static))
            .prompt()?;
        if mode == "dhcp" {
            a.uplink_address = Some(UplinkAddr::Dhcp);
        } else {
            let def = match &prev.uplink_address {
                Some(UplinkAddr::Static(n)) => Some(n.to_string()),
                _ => cur.uplink_address.clone().filter(|_| cur_static),
            };
            let mut t = Text::new("Uplink address/prefix:")
                .with_placeholder("203.0.113.2/24")
                .with_validator(validator(parse_host_prefix));
            if let Some(d) = def.as_deref() {
                t = t.with_default(d);
            }
            let addr = t.prompt()?;
            a.uplink_address = Some(parse_uplink_address(&addr).map_err(custom)?);
            let defgw = prev
                .uplink_gateway
                .map(|g| g.to_string())
                .or_else(|| cur.uplink_gateway.clone());
            let mut t = Text::new("Uplink default gateway (empty: none):").with_validator(
                validator(|s: &str| {
                    if s.trim().is_empty() {
                        Ok(None)
                    } else {
                        parse_ipv4(s).map(Some)
                    }
                }),
            );
            if let Some(d) = defgw.as_deref() {
                t = t.with_default(d);
            }
            let gw = t.prompt()?;
            a.uplink_gateway = if gw.trim().is_empty() {
                None
            } else {
                Some(parse_ipv4(&gw).map_err(custom)?)
            };
        }

        let defvlan = prev
            .mgmt_vlan
            .map(i64::from)
            .or(cur.mgmt_vlan)
            .map(|v| v.to_string());
        let mut t =
            Text::new("Management VLAN id (1-4094):").with_validator(validator(parse_vlan_text));
        if let Some(d) = defvlan.as_deref() {
            t = t.with_default(d);
        }
        a.mgmt_vlan = Some(parse_vlan_text(&t.prompt()?).map_err(custom)?);

        let defaddr = prev
            .mgmt_address
            .map(|n| n.to_string())
            .or_else(|| cur.mgmt_address.clone());
        let mut t = Text::new("Gateway address/prefix on the management VLAN:")
            .with_placeholder("10.0.100.1/24")
            .with_validator(validator(parse_host_prefix));
        if let Some(d) = defaddr.as_deref() {
            t = t.with_default(d);
        }
        a.mgmt_address = Some(parse_host_prefix(&t.prompt()?).map_err(custom)?);

        let have_keys = std::fs::read_to_string(keys)
            .map(|t| t.lines().any(|l| !l.trim().is_empty()))
            .unwrap_or(false);
        let help = if have_keys {
            "one line of your .pub file; empty keeps the keys already there"
        } else {
            "one line of your .pub file: ssh-ed25519 AAAA... you@host"
        };
        let prevkey = prev.admin_key.clone();
        let key = Text::new("Admin SSH public key:")
            .with_help_message(help)
            .with_validator(validator(move |s: &str| {
                if s.trim().is_empty() && (have_keys || prevkey.is_some()) {
                    Ok(String::new())
                } else {
                    parse_ssh_key(s)
                }
            }))
            .prompt()?;
        a.admin_key = if key.trim().is_empty() {
            prev.admin_key.clone()
        } else {
            Some(parse_ssh_key(&key).map_err(custom)?)
        };

        let defsys = match &prev.syslog {
            Some(Some(s)) => Some(match s.port {
                Some(p) => format!("{}:{p}", s.host),
                None => s.host.to_string(),
            }),
            Some(None) => Some("none".into()),
            None => cur.syslog.clone(),
        }
        .unwrap_or_else(|| "none".into());
        let sys = Text::new("Syslog target HOST[:PORT] (none: no target):")
            .with_default(&defsys)
            .with_validator(validator(parse_syslog))
            .prompt()?;
        a.syslog = Some(parse_syslog(&sys).map_err(custom)?);
        if a.syslog.as_ref().is_some_and(|s| s.is_some()) {
            let deft = prev
                .syslog_transport
                .clone()
                .or_else(|| cur.syslog_transport.clone())
                .unwrap_or_else(|| "udp".into());
            let opts = vec!["udp", "tcp", "tls"];
            let start = opts.iter().position(|o| *o == deft).unwrap_or(0);
            let tr = Select::new("Syslog transport:", opts)
                .with_starting_cursor(start)
                .prompt()?;
            a.syslog_transport = Some(tr.to_string());
        }
        Ok(a)
    }

    fn custom(e: String) -> InquireError {
        InquireError::Custom(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEhv9ZJ8l9q9d9I8WZb8xw2z6HkY5M8G3nJYk4c3o5vX admin@example";

    #[test]
    fn keys() {
        assert!(parse_ssh_key(ED).is_ok());
        assert!(parse_ssh_key("ssh-dss AAAA").is_err());
        assert!(parse_ssh_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEhv9ZJ8").is_err());
        assert!(
            parse_ssh_key(
                "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIEhv9ZJ8l9q9d9I8WZb8xw2z6HkY5M8G3nJYk4c3o5vX"
            )
            .is_err()
        );
        assert!(parse_ssh_key("ssh-ed25519 !!!!").is_err());
        assert_eq!(base64_decode("TWE="), Some(b"Ma".to_vec()));
        assert_eq!(base64_decode("TQ=="), Some(b"M".to_vec()));
        assert_eq!(base64_decode("TWFu"), Some(b"Man".to_vec()));
    }

    #[test]
    fn edit_creates_what_is_missing_and_keeps_the_rest() {
        let text = "# my site\n[trunk]\ninterface = \"eth0\"\n\n[segments.office]\n# the admins\ninterface = \"eth3\"\nsubnet = \"192.0.2.0/24\"\ngateway = \"192.0.2.1\"\nmanagement = true\ndhcp = { ranges = [\"192.0.2.100-192.0.2.120\"] }\n";
        let a = Answers {
            mgmt_vlan: Some(7),
            mgmt_address: Some("192.0.2.1/25".parse().unwrap()),
            syslog: Some(Some(Syslog {
                host: "192.0.2.9".parse().unwrap(),
                port: None,
            })),
            syslog_transport: Some("tls".into()),
            uplink: Some("eth1".into()),
            uplink_address: Some(UplinkAddr::Dhcp),
            ..Answers::default()
        };
        let t = edit(text, &a).unwrap();
        assert!(t.starts_with("# my site\n[trunk]"), "{t}");
        assert!(t.contains("# the admins\n"), "{t}");
        // the plain port became a VLAN of the trunk; the ranges fit the smaller subnet
        assert!(!t.contains("eth3") && t.contains("vlan = 7"), "{t}");
        assert!(t.contains("subnet = \"192.0.2.0/25\""), "{t}");
        assert!(t.contains("ranges = [\"192.0.2.100-192.0.2.120\"]"), "{t}");
        assert!(
            t.contains("[uplink]\ninterface = \"eth1\"\naddress = \"dhcp\""),
            "{t}"
        );
        assert!(
            t.contains("[[logging.targets]]\nname = \"syslog\"\nhost = \"192.0.2.9\"\nport = 6514\ntransport = \"tls\""),
            "{t}"
        );
        let c = current(&t.parse().unwrap());
        assert_eq!(c.mgmt_segment.as_deref(), Some("office"));
        assert_eq!(c.mgmt_vlan, Some(7));
        assert_eq!(c.mgmt_address.as_deref(), Some("192.0.2.1/25"));
        assert_eq!(c.syslog.as_deref(), Some("192.0.2.9:6514"));
        // a subnet the ranges no longer fit gets a range of its own
        let b = Answers {
            mgmt_address: Some("10.1.2.1/24".parse().unwrap()),
            ..Answers::default()
        };
        let t = edit(&t, &b).unwrap();
        assert!(t.contains("ranges = [\"10.1.2.127-10.1.2.254\"]"), "{t}");
        // nothing answered: nothing changed
        assert_eq!(edit(&t, &Answers::default()).unwrap(), t);
    }

    #[test]
    fn fields() {
        assert_eq!(parse_uplink_address("DHCP"), Ok(UplinkAddr::Dhcp));
        assert!(parse_uplink_address("10.0.0.0/24").is_err());
        assert!(parse_host_prefix("10.0.0.255/24").is_err());
        assert!(parse_host_prefix("10.0.0.1/24").is_ok());
        assert!(parse_vlan(4095).is_err());
        assert_eq!(
            parse_syslog("10.1.1.1:1514"),
            Ok(Some(Syslog {
                host: "10.1.1.1".parse().unwrap(),
                port: Some(1514)
            }))
        );
        assert_eq!(parse_syslog("none"), Ok(None));
        assert!(parse_syslog("logs.example:514").is_err());
        assert_eq!(
            default_range("10.0.0.0/24".parse().unwrap(), "10.0.0.1".parse().unwrap()).as_deref(),
            Some("10.0.0.127-10.0.0.254")
        );
    }
}
