//! Router solicitation / advertisement wire format (RFC 4861 section 4, RFC 8106 for
//! RDNSS/DNSSL). Bytes are whole ICMPv6 messages starting at the ICMPv6 type; the checksum
//! field is left zero on encode (the kernel computes it for raw ICMPv6 sockets) and not
//! checked on decode (the kernel drops packets whose checksum is wrong).

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

/// ICMPv6 type of a router solicitation.
pub const ROUTER_SOLICIT: u8 = 133;
/// ICMPv6 type of a router advertisement.
pub const ROUTER_ADVERT: u8 = 134;

const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_PREFIX_INFO: u8 = 3;
const OPT_MTU: u8 = 5;
const OPT_RDNSS: u8 = 25;
const OPT_DNSSL: u8 = 31;

/// Why a packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than its fixed part.
    #[error("too short ({0} bytes)")]
    TooShort(usize),
    /// Not the ICMPv6 type expected.
    #[error("ICMPv6 type {0}, expected {1}")]
    WrongType(u8, u8),
    /// ICMPv6 code other than 0.
    #[error("ICMPv6 code {0}, must be 0")]
    BadCode(u8),
    /// Not sent with hop limit 255, so not from this link.
    #[error("hop limit {0}, must be 255 (off-link or forged)")]
    BadHopLimit(u8),
    /// An option of length 0 or running past the end.
    #[error("option type {kind} at offset {offset}: {why}")]
    BadOption {
        /// Option type.
        kind: u8,
        /// Offset of the option in the message.
        offset: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// A solicitation from the unspecified address carries a source link-layer option.
    #[error("source link-layer option from the unspecified address")]
    LladdrFromUnspecified,
}

/// One Prefix Information option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixInfo {
    /// The prefix (its length is the prefix length; host bits are zero on the wire).
    pub prefix: Ipv6Net,
    /// L flag: on-link.
    pub on_link: bool,
    /// A flag: hosts may form addresses by SLAAC.
    pub autonomous: bool,
    /// Valid lifetime, seconds (0xffff_ffff: infinite).
    pub valid: u32,
    /// Preferred lifetime, seconds (0: deprecated).
    pub preferred: u32,
}

/// A router advertisement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouterAdvert {
    /// Cur Hop Limit hosts should use (0: unspecified).
    pub cur_hop_limit: u8,
    /// M flag: addresses by DHCPv6.
    pub managed: bool,
    /// O flag: other configuration (DNS) by DHCPv6.
    pub other: bool,
    /// Router lifetime, seconds (0: not a default router).
    pub router_lifetime: u16,
    /// Reachable time, milliseconds (0: unspecified).
    pub reachable_time: u32,
    /// Retrans timer, milliseconds (0: unspecified).
    pub retrans_timer: u32,
    /// Source link-layer address option.
    pub source_lladdr: Option<[u8; 6]>,
    /// MTU option.
    pub mtu: Option<u32>,
    /// Prefix information options.
    pub prefixes: Vec<PrefixInfo>,
    /// RDNSS option: lifetime (seconds) and servers; none when the list is empty.
    pub rdnss: Option<(u32, Vec<Ipv6Addr>)>,
    /// DNSSL option: lifetime (seconds) and domains; none when the list is empty.
    pub dnssl: Option<(u32, Vec<String>)>,
}

fn push_opt(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    // body excludes type and length; pad the whole option to a multiple of 8.
    let total = (2 + body.len()).div_ceil(8) * 8;
    out.push(kind);
    out.push((total / 8) as u8);
    out.extend_from_slice(body);
    out.resize(out.len() + total - 2 - body.len(), 0);
}

/// A domain name in DNS wire format (RFC 1035 3.1); labels longer than 63 bytes or empty
/// labels are left out.
fn encode_name(name: &str, out: &mut Vec<u8>) {
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            continue;
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

impl RouterAdvert {
    /// The ICMPv6 message (checksum zero, for the kernel to fill).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ROUTER_ADVERT, 0, 0, 0, self.cur_hop_limit];
        out.push((u8::from(self.managed) << 7) | (u8::from(self.other) << 6));
        out.extend_from_slice(&self.router_lifetime.to_be_bytes());
        out.extend_from_slice(&self.reachable_time.to_be_bytes());
        out.extend_from_slice(&self.retrans_timer.to_be_bytes());
        if let Some(mac) = self.source_lladdr {
            push_opt(&mut out, OPT_SOURCE_LLADDR, &mac);
        }
        if let Some(mtu) = self.mtu {
            let mut b = vec![0, 0];
            b.extend_from_slice(&mtu.to_be_bytes());
            push_opt(&mut out, OPT_MTU, &b);
        }
        for p in &self.prefixes {
            let mut b = vec![p.prefix.prefix_len()];
            b.push((u8::from(p.on_link) << 7) | (u8::from(p.autonomous) << 6));
            b.extend_from_slice(&p.valid.to_be_bytes());
            b.extend_from_slice(&p.preferred.to_be_bytes());
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&p.prefix.network().octets());
            push_opt(&mut out, OPT_PREFIX_INFO, &b);
        }
        if let Some((life, servers)) = &self.rdnss
            && !servers.is_empty()
        {
            let mut b = vec![0, 0];
            b.extend_from_slice(&life.to_be_bytes());
            for s in servers {
                b.extend_from_slice(&s.octets());
            }
            push_opt(&mut out, OPT_RDNSS, &b);
        }
        if let Some((life, domains)) = &self.dnssl
            && !domains.is_empty()
        {
            let mut b = vec![0, 0];
            b.extend_from_slice(&life.to_be_bytes());
            for d in domains {
                encode_name(d, &mut b);
            }
            push_opt(&mut out, OPT_DNSSL, &b);
        }
        out
    }

    /// Read a router advertisement (for tests and diagnostics: the gateway itself never
    /// acts on one). Options it does not know are skipped; malformed ones are refused.
    pub fn decode(b: &[u8]) -> Result<RouterAdvert, PacketError> {
        if b.len() < 16 {
            return Err(PacketError::TooShort(b.len()));
        }
        if b[0] != ROUTER_ADVERT {
            return Err(PacketError::WrongType(b[0], ROUTER_ADVERT));
        }
        if b[1] != 0 {
            return Err(PacketError::BadCode(b[1]));
        }
        let mut ra = RouterAdvert {
            cur_hop_limit: b[4],
            managed: b[5] & 0x80 != 0,
            other: b[5] & 0x40 != 0,
            router_lifetime: u16::from_be_bytes([b[6], b[7]]),
            reachable_time: be32(&b[8..12]),
            retrans_timer: be32(&b[12..16]),
            ..RouterAdvert::default()
        };
        for (kind, offset, body) in options(b, 16)? {
            let bad = |why| PacketError::BadOption { kind, offset, why };
            match kind {
                OPT_SOURCE_LLADDR => {
                    let mac: [u8; 6] = body.get(..6).ok_or(bad("short"))?.try_into().unwrap();
                    ra.source_lladdr = Some(mac);
                }
                OPT_MTU => ra.mtu = Some(be32(body.get(2..6).ok_or(bad("short"))?)),
                OPT_PREFIX_INFO => {
                    if body.len() != 30 {
                        return Err(bad("prefix information must be 32 bytes"));
                    }
                    let addr: [u8; 16] = body[14..30].try_into().unwrap();
                    let prefix = Ipv6Net::new(Ipv6Addr::from(addr), body[0])
                        .map_err(|_| bad("prefix length over 128"))?;
                    ra.prefixes.push(PrefixInfo {
                        prefix,
                        on_link: body[1] & 0x80 != 0,
                        autonomous: body[1] & 0x40 != 0,
                        valid: be32(&body[2..6]),
                        preferred: be32(&body[6..10]),
                    });
                }
                OPT_RDNSS => {
                    if body.len() < 22 || (body.len() - 6) % 16 != 0 {
                        return Err(bad("RDNSS needs one or more whole addresses"));
                    }
                    let servers = body[6..]
                        .chunks_exact(16)
                        .map(|c| Ipv6Addr::from(<[u8; 16]>::try_from(c).unwrap()))
                        .collect();
                    ra.rdnss = Some((be32(&body[2..6]), servers));
                }
                OPT_DNSSL => {
                    if body.len() < 6 {
                        return Err(bad("short"));
                    }
                    let mut domains = Vec::new();
                    let mut name = String::new();
                    let mut i = 6;
                    while i < body.len() {
                        let n = body[i] as usize;
                        i += 1;
                        if n == 0 {
                            if !name.is_empty() {
                                domains.push(std::mem::take(&mut name));
                            }
                            continue;
                        }
                        let label = body.get(i..i + n).ok_or(bad("label runs past the end"))?;
                        if !name.is_empty() {
                            name.push('.');
                        }
                        name.push_str(&crate::dhcp::text::clean_bytes(label, 63 * 4));
                        i += n;
                    }
                    ra.dnssl = Some((be32(&body[2..6]), domains));
                }
                _ => {}
            }
        }
        Ok(ra)
    }
}

/// A router solicitation that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSolicit {
    /// The source link-layer address option, if sent.
    pub source_lladdr: Option<Vec<u8>>,
}

/// Validate a router solicitation as RFC 4861 6.1.1 asks: hop limit 255, ICMPv6 code 0,
/// at least 8 bytes, every option of non-zero length inside the message, and no source
/// link-layer option when the source is the unspecified address.
pub fn parse_solicit(b: &[u8], hop_limit: u8, src: Ipv6Addr) -> Result<RouterSolicit, PacketError> {
    if hop_limit != 255 {
        return Err(PacketError::BadHopLimit(hop_limit));
    }
    if b.len() < 8 {
        return Err(PacketError::TooShort(b.len()));
    }
    if b[0] != ROUTER_SOLICIT {
        return Err(PacketError::WrongType(b[0], ROUTER_SOLICIT));
    }
    if b[1] != 0 {
        return Err(PacketError::BadCode(b[1]));
    }
    let mut rs = RouterSolicit {
        source_lladdr: None,
    };
    for (kind, _, body) in options(b, 8)? {
        if kind == OPT_SOURCE_LLADDR {
            if src.is_unspecified() {
                return Err(PacketError::LladdrFromUnspecified);
            }
            rs.source_lladdr = Some(body.to_vec());
        }
    }
    Ok(rs)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// One option: (type, offset, body after type and length).
type RawOption<'a> = (u8, usize, &'a [u8]);

/// The options from `start` on.
fn options(b: &[u8], start: usize) -> Result<Vec<RawOption<'_>>, PacketError> {
    let mut v = Vec::new();
    let mut i = start;
    while i < b.len() {
        let kind = b[i];
        let Some(&len) = b.get(i + 1) else {
            return Err(PacketError::BadOption {
                kind,
                offset: i,
                why: "truncated option header",
            });
        };
        if len == 0 {
            return Err(PacketError::BadOption {
                kind,
                offset: i,
                why: "length 0",
            });
        }
        let end = i + len as usize * 8;
        if end > b.len() {
            return Err(PacketError::BadOption {
                kind,
                offset: i,
                why: "runs past the end of the message",
            });
        }
        v.push((kind, i, &b[i + 2..end]));
        i = end;
    }
    Ok(v)
}
