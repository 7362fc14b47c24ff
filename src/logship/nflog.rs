//! Firewall log records from the kernel: an NFLOG group over a raw `NETLINK_NETFILTER`
//! socket, and our own decoder of the nfnetlink_log attributes and the IPv4/IPv6, TCP, UDP
//! and ICMP headers of the logged packet.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_CFG_CMD_PF_BIND: u8 = 3;
const NFULNL_CFG_CMD_PF_UNBIND: u8 = 4;
const NFULNL_COPY_PACKET: u8 = 2;

const NFULA_PACKET_HDR: u16 = 1;
const NFULA_TIMESTAMP: u16 = 3;
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_IFINDEX_OUTDEV: u16 = 5;
const NFULA_HWADDR: u16 = 8;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;

/// One logged packet, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// The log prefix (`bh:CHAIN:KIND:NAME`).
    pub prefix: String,
    /// Ethertype of the packet (0x0800 IPv4, 0x86dd IPv6).
    pub hw_protocol: u16,
    /// Netfilter hook (0 prerouting, 1 input, 2 forward, 3 output, 4 postrouting).
    pub hook: u8,
    pub indev: Option<u32>,
    pub outdev: Option<u32>,
    /// Source MAC address, when the kernel had one.
    pub mac: Option<[u8; 6]>,
    /// Kernel timestamp in microseconds since the epoch, when it sent one.
    pub time_us: Option<u64>,
    pub packet: Option<Packet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    pub len: u16,
    pub l4: L4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp { sport: u16, dport: u16, flags: u8 },
    Udp { sport: u16, dport: u16 },
    Icmp { typ: u8, code: u8 },
    Other,
}

impl Packet {
    pub fn proto_name(&self) -> String {
        match self.proto {
            1 => "icmp".into(),
            6 => "tcp".into(),
            17 => "udp".into(),
            58 => "icmpv6".into(),
            n => n.to_string(),
        }
    }

    pub fn dport(&self) -> Option<u16> {
        match self.l4 {
            L4::Tcp { dport, .. } | L4::Udp { dport, .. } => Some(dport),
            _ => None,
        }
    }

    pub fn sport(&self) -> Option<u16> {
        match self.l4 {
            L4::Tcp { sport, .. } | L4::Udp { sport, .. } => Some(sport),
            _ => None,
        }
    }
}

/// TCP flags as letters (`S` SYN, `A` ACK, `F` FIN, `R` RST, `P` PSH, `U` URG).
pub fn tcp_flags(f: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (0x02, 'S'),
        (0x10, 'A'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x20, 'U'),
    ] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    s
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

/// Decode the IP packet NFLOG carried (the network header onwards).
pub fn decode_packet(p: &[u8]) -> Option<Packet> {
    let v = p.first()? >> 4;
    let (src, dst, proto, len, l4) = match v {
        4 => {
            if p.len() < 20 {
                return None;
            }
            let ihl = usize::from(p[0] & 0x0f) * 4;
            if ihl < 20 || p.len() < ihl {
                return None;
            }
            let frag_off = be16(&p[6..8]) & 0x1fff;
            let src = IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]));
            let dst = IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19]));
            // only the first fragment carries the transport header
            let l4 = if frag_off == 0 { &p[ihl..] } else { &[][..] };
            (src, dst, p[9], be16(&p[2..4]), l4)
        }
        6 => {
            if p.len() < 40 {
                return None;
            }
            let s: [u8; 16] = p[8..24].try_into().ok()?;
            let d: [u8; 16] = p[24..40].try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                p[6],
                be16(&p[4..6]).saturating_add(40),
                &p[40..],
            )
        }
        _ => return None,
    };
    let l4 = match proto {
        6 if l4.len() >= 14 => L4::Tcp {
            sport: be16(&l4[0..2]),
            dport: be16(&l4[2..4]),
            flags: l4[13],
        },
        17 if l4.len() >= 4 => L4::Udp {
            sport: be16(&l4[0..2]),
            dport: be16(&l4[2..4]),
        },
        1 | 58 if l4.len() >= 2 => L4::Icmp {
            typ: l4[0],
            code: l4[1],
        },
        _ => L4::Other,
    };
    Some(Packet {
        src,
        dst,
        proto,
        len,
        l4,
    })
}

/// Iterate the netlink attributes (type without flags, payload) of a buffer.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let typ = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        let adv = (len + 3) & !3;
        b = &b[adv.min(b.len())..];
        Some((typ, payload))
    })
}

/// Decode the attributes of one NFULNL_MSG_PACKET (after the nfgenmsg header).
pub fn decode_attrs(b: &[u8]) -> Record {
    let mut r = Record::default();
    for (typ, v) in attrs(b) {
        match typ {
            NFULA_PACKET_HDR if v.len() >= 3 => {
                r.hw_protocol = be16(&v[0..2]);
                r.hook = v[2];
            }
            NFULA_TIMESTAMP if v.len() >= 16 => {
                // out of range (not a real clock): no time rather than an overflow
                r.time_us = be64(&v[0..8])
                    .checked_mul(1_000_000)
                    .and_then(|t| t.checked_add(be64(&v[8..16])));
            }
            NFULA_IFINDEX_INDEV if v.len() >= 4 => r.indev = Some(be32(v)),
            NFULA_IFINDEX_OUTDEV if v.len() >= 4 => r.outdev = Some(be32(v)),
            NFULA_HWADDR if v.len() >= 10 && be16(&v[0..2]) == 6 => {
                r.mac = v[4..10].try_into().ok();
            }
            NFULA_PAYLOAD => r.packet = decode_packet(v),
            NFULA_PREFIX => {
                let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
                r.prefix = String::from_utf8_lossy(&v[..end]).into_owned();
            }
            _ => {}
        }
    }
    r
}

/// Decode every NFLOG packet record in a datagram read from the socket.
/// Netlink errors (for example the ack of a config command) are returned as `Err(errno)`.
pub fn decode_datagram(mut b: &[u8]) -> Vec<Result<Record, i32>> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = u32::from_ne_bytes(b[0..4].try_into().expect("4")) as usize;
        let typ = u16::from_ne_bytes([b[4], b[5]]);
        if len < 16 || len > b.len() {
            break;
        }
        let body = &b[16..len];
        if typ == NLMSG_ERROR && body.len() >= 4 {
            let e = i32::from_ne_bytes(body[0..4].try_into().expect("4"));
            if e != 0 {
                out.push(Err(e.checked_neg().unwrap_or(i32::MAX)));
            }
        } else if typ == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET && body.len() >= 4 {
            out.push(Ok(decode_attrs(&body[4..])));
        } else if typ == NLMSG_DONE {
            break;
        }
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

fn attr(buf: &mut Vec<u8>, typ: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&typ.to_ne_bytes());
    buf.extend_from_slice(payload);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// A config message: nlmsghdr + nfgenmsg(family, version 0, res_id = group) + attributes.
fn config_msg(seq: u32, family: u8, group: u16, attrs_: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b.push(family);
    b.push(0);
    b.extend_from_slice(&group.to_be_bytes());
    for (t, p) in attrs_ {
        attr(&mut b, *t, p);
    }
    let len = b.len() as u32;
    b[0..4].copy_from_slice(&len.to_ne_bytes());
    b[4..6].copy_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
    b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    b
}

/// A socket bound to one NFLOG group.
pub struct NflogSocket {
    fd: OwnedFd,
    seq: u32,
}

impl NflogSocket {
    /// Open a `NETLINK_NETFILTER` socket and bind it to `group`, copying whole packets
    /// (the first 256 bytes: enough for the headers).
    pub fn bind(group: u16) -> io::Result<Self> {
        let fd = crate::apply::firewall::nftgen::netfilter_socket()?;
        crate::sys::netlink::bind_auto(&fd)?;
        // failure is harmless (a smaller buffer)
        let _ = crate::sys::socket::set_recv_buffer_force(&fd, 4 << 20);
        let mut s = NflogSocket { fd, seq: 0 };
        // Kernels before 3.17 need the family (un)bound first; newer ones ignore it.
        let _ = s.command(
            libc::AF_INET as u8,
            0,
            &[(NFULA_CFG_CMD, vec![NFULNL_CFG_CMD_PF_UNBIND])],
        );
        let _ = s.command(
            libc::AF_INET as u8,
            0,
            &[(NFULA_CFG_CMD, vec![NFULNL_CFG_CMD_PF_BIND])],
        );
        s.command(0, group, &[(NFULA_CFG_CMD, vec![NFULNL_CFG_CMD_BIND])])?;
        let mut mode = 256u32.to_be_bytes().to_vec();
        mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
        s.command(0, group, &[(NFULA_CFG_MODE, mode)])?;
        // deliver at once: no batching delay, one packet per message
        s.command(
            0,
            group,
            &[(NFULA_CFG_TIMEOUT, 0u32.to_be_bytes().to_vec())],
        )?;
        s.command(
            0,
            group,
            &[(NFULA_CFG_QTHRESH, 1u32.to_be_bytes().to_vec())],
        )?;
        Ok(s)
    }

    fn command(&mut self, family: u8, group: u16, a: &[(u16, Vec<u8>)]) -> io::Result<()> {
        self.seq += 1;
        let m = config_msg(self.seq, family, group, a);
        crate::sys::socket::send(&self.fd, &m)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = self.recv(&mut buf)?;
            for r in decode_datagram(&buf[..n]) {
                if let Err(e) = r {
                    return Err(io::Error::from_raw_os_error(e));
                }
            }
            // the ack (an NLMSG_ERROR with 0) ends the exchange
            if n >= 16 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
                return Ok(());
            }
        }
    }

    /// Read one datagram (blocking).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        crate::sys::socket::recv(&self.fd, buf)
    }
}

/// The parts of an NFLOG prefix `bh:CHAIN:KIND:NAME`.
pub fn split_prefix(p: &str) -> Option<(&str, &str, &str)> {
    let rest = p.strip_prefix("bh:")?;
    let (chain, rest) = rest.split_once(':')?;
    let (kind, name) = rest.split_once(':')?;
    Some((chain, kind, name))
}

/// Interface name of an index (in this network namespace).
pub fn ifname(index: u32) -> Option<String> {
    crate::sys::socket::ifname(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 TCP SYN 198.18.20.10:40000 -> 198.18.30.5:22.
    const SYN: [u8; 40] = [
        0x45, 0x00, 0x00, 0x28, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, // ver..proto
        198, 18, 20, 10, 198, 18, 30, 5, // src, dst
        0x9c, 0x40, 0x00, 0x16, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0,
        0, // tcp
    ];

    /// A complete NFULNL_MSG_PACKET datagram as the kernel sends it (little-endian host).
    fn golden_datagram() -> Vec<u8> {
        let mut body = vec![2u8, 0, 0, 1]; // nfgenmsg: AF_INET, v0, group 1
        attr(&mut body, NFULA_PACKET_HDR, &[0x08, 0x00, 2, 0]);
        attr(
            &mut body,
            NFULA_PREFIX,
            b"bh:forward:builtin:default-drop\0",
        );
        attr(&mut body, NFULA_IFINDEX_INDEV, &3u32.to_be_bytes());
        attr(&mut body, NFULA_IFINDEX_OUTDEV, &5u32.to_be_bytes());
        attr(
            &mut body,
            NFULA_HWADDR,
            &[0, 6, 0, 0, 0x02, 0xbb, 0, 0, 0, 0x14, 0, 0],
        );
        let mut ts = 1_796_119_200u64.to_be_bytes().to_vec();
        ts.extend_from_slice(&250u64.to_be_bytes());
        attr(&mut body, NFULA_TIMESTAMP, &ts);
        attr(&mut body, NFULA_PAYLOAD, &SYN);
        let mut m = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&0x0400u16.to_ne_bytes());
        m.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn golden_bytes_decode() {
        let d = golden_datagram();
        // the exact bytes, so a change of the encoder in the test is noticed
        assert_eq!(d.len(), 16 + 4 + 8 + 36 + 8 + 8 + 16 + 20 + 44);
        assert_eq!(&d[20..28], &[8, 0, 1, 0, 0x08, 0x00, 2, 0]);
        let v = decode_datagram(&d);
        assert_eq!(v.len(), 1);
        let r = v[0].clone().unwrap();
        assert_eq!(r.prefix, "bh:forward:builtin:default-drop");
        assert_eq!(r.hw_protocol, 0x0800);
        assert_eq!(r.hook, 2);
        assert_eq!(r.indev, Some(3));
        assert_eq!(r.outdev, Some(5));
        assert_eq!(r.mac, Some([0x02, 0xbb, 0, 0, 0, 0x14]));
        assert_eq!(r.time_us, Some(1_796_119_200_000_250));
        let p = r.packet.unwrap();
        assert_eq!(p.src, "198.18.20.10".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst, "198.18.30.5".parse::<IpAddr>().unwrap());
        assert_eq!(p.proto_name(), "tcp");
        assert_eq!(p.len, 40);
        assert_eq!(
            p.l4,
            L4::Tcp {
                sport: 40000,
                dport: 22,
                flags: 0x02
            }
        );
        assert_eq!(tcp_flags(0x12), "SA");
    }

    #[test]
    fn udp_icmp_fragments_and_ipv6() {
        let mut udp = SYN[..28].to_vec();
        udp[9] = 17;
        udp[20..24].copy_from_slice(&[0x13, 0x88, 0x00, 0x35]);
        let p = decode_packet(&udp).unwrap();
        assert_eq!(
            p.l4,
            L4::Udp {
                sport: 5000,
                dport: 53
            }
        );
        assert_eq!(p.dport(), Some(53));
        let mut icmp = SYN[..28].to_vec();
        icmp[9] = 1;
        icmp[20] = 8;
        icmp[21] = 0;
        assert_eq!(
            decode_packet(&icmp).unwrap().l4,
            L4::Icmp { typ: 8, code: 0 }
        );
        // a later fragment has no transport header
        let mut frag = SYN.to_vec();
        frag[6] = 0x00;
        frag[7] = 0x10;
        assert_eq!(decode_packet(&frag).unwrap().l4, L4::Other);
        // truncated
        assert!(decode_packet(&SYN[..12]).is_none());
        assert!(decode_packet(&[]).is_none());
        // IPv6 UDP
        let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0x00, 0x44, 0x00, 0x43, 0, 8, 0, 0]);
        let p = decode_packet(&v6).unwrap();
        assert_eq!(p.src, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            p.l4,
            L4::Udp {
                sport: 68,
                dport: 67
            }
        );
        assert_eq!(p.len, 48);
    }

    #[test]
    fn errors_and_garbage() {
        // an NLMSG_ERROR carrying -EBUSY
        let mut m = 36u32.to_ne_bytes().to_vec();
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&(-16i32).to_ne_bytes());
        m.extend_from_slice(&[0; 16]);
        assert_eq!(decode_datagram(&m), vec![Err(16)]);
        // a length beyond the buffer stops decoding
        let mut bad = golden_datagram();
        bad[0] = 0xff;
        bad[1] = 0xff;
        assert!(decode_datagram(&bad).is_empty());
        // attributes with a bad length are ignored
        assert_eq!(decode_attrs(&[2, 0, 1, 0]), Record::default());
    }

    #[test]
    fn extreme_values_do_not_panic() {
        // a timestamp whose microseconds do not fit in 64 bits is no timestamp
        let mut a = Vec::new();
        attr(&mut a, NFULA_TIMESTAMP, &[0xff; 16]);
        assert_eq!(decode_attrs(&a).time_us, None);
        // an NLMSG_ERROR with i32::MIN
        let mut m = 36u32.to_ne_bytes().to_vec();
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&i32::MIN.to_ne_bytes());
        m.extend_from_slice(&[0; 16]);
        assert_eq!(decode_datagram(&m), vec![Err(i32::MAX)]);
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            split_prefix("bh:forward:rule:dmz-web-to-app"),
            Some(("forward", "rule", "dmz-web-to-app"))
        );
        assert_eq!(
            split_prefix("bh:input:builtin:default-drop").unwrap().2,
            "default-drop"
        );
        assert_eq!(split_prefix("other"), None);
    }

    #[test]
    fn config_message_layout() {
        let m = config_msg(7, 0, 1, &[(NFULA_CFG_CMD, vec![NFULNL_CFG_CMD_BIND])]);
        assert_eq!(m.len(), 16 + 4 + 8);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x0401);
        assert_eq!(&m[16..20], &[0, 0, 0, 1]);
        assert_eq!(&m[20..25], &[5, 0, 1, 0, 1]);
    }
}
