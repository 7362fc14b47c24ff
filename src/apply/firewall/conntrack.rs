//! Cutting a host's tracked connections over ctnetlink (NETLINK_NETFILTER, subsystem
//! CTNETLINK), without the `conntrack` tool.
//!
//! A quarantined source must lose the connections it already has, not only new ones: the
//! rulesets accept `ct state established` before the quarantine drop, and with flow offload an
//! established flow does not even pass the forward chain any more. Deleting the source's
//! conntrack entries (which also tears down their offloaded flows) makes its next packet a new
//! one again, which meets the quarantine drop.
//!
//! The dump (IPCTNL_MSG_CT_GET, NLM_F_DUMP, of the address's family) is matched here: an entry
//! goes when the address is any of the four addresses of its original and reply tuples (so
//! NATed connections to and from it go too); each is deleted with IPCTNL_MSG_CT_DELETE by its
//! original tuple and zone, an entry already gone (ENOENT) counting as deleted.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;

use super::nfset::{Conn, attrs, put_attr};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;

const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 0x8000;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

fn ct_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_CTNETLINK << 8) | msg
}

/// The addresses of one tuple (`CTA_TUPLE_ORIG` or `CTA_TUPLE_REPLY` payload).
fn tuple_addrs(tuple: &[u8]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for (t, ip) in attrs(tuple) {
        if t != CTA_TUPLE_IP {
            continue;
        }
        for (k, v) in attrs(ip) {
            match k {
                CTA_IP_V4_SRC | CTA_IP_V4_DST => {
                    if let Ok(b) = <[u8; 4]>::try_from(v) {
                        out.push(IpAddr::from(b));
                    }
                }
                CTA_IP_V6_SRC | CTA_IP_V6_DST => {
                    if let Ok(b) = <[u8; 16]>::try_from(v) {
                        out.push(IpAddr::from(b));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// One conntrack entry of a dump (the payload after the nlmsghdr): its original tuple and zone
/// (what a delete names it by), when `addr` is one of its addresses.
fn matching(payload: &[u8], net: &IpNet) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let a = attrs(payload.get(4..)?);
    let orig = a.iter().find(|(t, _)| *t == CTA_TUPLE_ORIG)?.1;
    let hit = a
        .iter()
        .filter(|(t, _)| *t == CTA_TUPLE_ORIG || *t == CTA_TUPLE_REPLY)
        .any(|(_, tuple)| tuple_addrs(tuple).iter().any(|a| net.contains(a)));
    hit.then(|| {
        let zone = a
            .iter()
            .find(|(t, _)| *t == CTA_ZONE)
            .map(|(_, z)| z.to_vec());
        (orig.to_vec(), zone)
    })
}

/// Delete every tracked connection an address of `net` takes part in (in the calling thread's
/// network namespace); returns how many were deleted.
pub fn cut(net: &IpNet) -> io::Result<usize> {
    let family = match net {
        IpNet::V4(_) => AF_INET,
        IpNet::V6(_) => AF_INET6,
    };
    let mut c = Conn::open()?;
    let doomed: Vec<_> = c
        .request_typed(ct_type(IPCTNL_MSG_CT_GET), NLM_F_DUMP, family, &[])?
        .iter()
        .filter_map(|p| matching(p, net))
        .collect();
    let mut n = 0;
    for (orig, zone) in doomed {
        let mut body = Vec::with_capacity(orig.len() + 16);
        put_attr(&mut body, CTA_TUPLE_ORIG | NLA_F_NESTED, &orig);
        if let Some(z) = zone {
            put_attr(&mut body, CTA_ZONE, &z);
        }
        match c.request_typed(ct_type(IPCTNL_MSG_CT_DELETE), NLM_F_ACK, family, &body) {
            Ok(_) => n += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => n += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(ty: u16, inner: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        put_attr(&mut b, ty | NLA_F_NESTED, inner);
        b
    }

    fn entry(src: IpAddr, dst: IpAddr, rsrc: IpAddr, rdst: IpAddr) -> Vec<u8> {
        let ip = |a: IpAddr, b: IpAddr| {
            let mut v = Vec::new();
            match (a, b) {
                (IpAddr::V4(a), IpAddr::V4(b)) => {
                    put_attr(&mut v, CTA_IP_V4_SRC, &a.octets());
                    put_attr(&mut v, CTA_IP_V4_DST, &b.octets());
                }
                (IpAddr::V6(a), IpAddr::V6(b)) => {
                    put_attr(&mut v, CTA_IP_V6_SRC, &a.octets());
                    put_attr(&mut v, CTA_IP_V6_DST, &b.octets());
                }
                _ => unreachable!(),
            }
            nested(CTA_TUPLE_IP, &v)
        };
        let mut p = vec![2, 0, 0, 0];
        p.extend(nested(CTA_TUPLE_ORIG, &ip(src, dst)));
        p.extend(nested(CTA_TUPLE_REPLY, &ip(rsrc, rdst)));
        put_attr(&mut p, CTA_ZONE, &0u16.to_be_bytes());
        p
    }

    #[test]
    fn an_entry_matches_by_any_of_its_addresses() {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        let n = |s: &str| IpNet::from(a(s));
        // masqueraded: client 198.18.1.11 -> 203.0.113.5, reply 203.0.113.5 -> 198.18.3.1
        let e = entry(
            a("198.18.1.11"),
            a("203.0.113.5"),
            a("203.0.113.5"),
            a("198.18.3.1"),
        );
        assert!(matching(&e, &n("198.18.1.11")).is_some());
        assert!(matching(&e, &n("198.18.3.1")).is_some());
        assert!(matching(&e, &n("198.18.1.10")).is_none());
        let (orig, zone) = matching(&e, &n("203.0.113.5")).unwrap();
        assert_eq!(tuple_addrs(&orig), vec![a("198.18.1.11"), a("203.0.113.5")]);
        assert_eq!(zone, Some(0u16.to_be_bytes().to_vec()));
        let e6 = entry(
            a("fd00:db8:1::11"),
            a("2001:db8:3::fe"),
            a("2001:db8:3::fe"),
            a("fd00:db8:1::11"),
        );
        assert!(matching(&e6, &n("fd00:db8:1::11")).is_some());
        assert!(matching(&e6, &n("fd00:db8:1::10")).is_none());
        assert!(matching(&e6, &"fd00:db8:1::/64".parse().unwrap()).is_some());
    }
}
