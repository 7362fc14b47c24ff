//! Address and port value types shared by the model and the plan.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;

/// What IPv4 and IPv6 ranges share: construction, parsing (with errors that name the family
/// and the offending part) and comparisons.
macro_rules! addr_range {
    ($range:ident, $addr:ty, $net:ty, $family:literal, $example:literal) => {
        impl $range {
            pub fn single(a: $addr) -> Self {
                $range { lo: a, hi: a }
            }

            pub fn from_net(n: $net) -> Self {
                $range {
                    lo: n.network(),
                    hi: n.broadcast(),
                }
            }

            #[doc = concat!("Parse an ", $family, " address, a CIDR block or a range `", $example, "`.")]
            pub fn parse(s: &str) -> Result<Self, String> {
                let s = s.trim();
                if let Some((a, b)) = s.split_once('-') {
                    let lo: $addr = a.trim().parse().map_err(|_| {
                        format!(concat!("`{}` in range `{}` is not an ", $family, " address"), a, s)
                    })?;
                    let hi: $addr = b.trim().parse().map_err(|_| {
                        format!(concat!("`{}` in range `{}` is not an ", $family, " address"), b, s)
                    })?;
                    if lo > hi {
                        return Err(format!("range `{s}` ends before it starts"));
                    }
                    return Ok($range { lo, hi });
                }
                if s.contains('/') {
                    let n: $net = s.parse().map_err(|_| {
                        format!(concat!("`{}` is not an ", $family, " CIDR block"), s)
                    })?;
                    if n.network() != n.addr() {
                        return Err(format!(
                            "`{s}` has host bits set; did you mean `{}`?",
                            n.trunc()
                        ));
                    }
                    return Ok($range::from_net(n));
                }
                let a: $addr = s.parse().map_err(|_| {
                    format!(
                        concat!("`{}` is not an ", $family, " address, CIDR block or range (", $example, ")"),
                        s
                    )
                })?;
                Ok($range::single(a))
            }

            pub fn contains(&self, a: $addr) -> bool {
                self.lo <= a && a <= self.hi
            }

            pub fn overlaps(&self, o: &$range) -> bool {
                self.lo <= o.hi && o.lo <= self.hi
            }

            pub fn within(&self, n: &$net) -> bool {
                n.contains(&self.lo) && n.contains(&self.hi)
            }
        }
    };
}

addr_range!(AddrRange, Ipv4Addr, Ipv4Net, "IPv4", "a.b.c.d-e.f.g.h");
addr_range!(AddrRange6, Ipv6Addr, Ipv6Net, "IPv6", "x::a-x::b");

/// An inclusive IPv4 range; single addresses and CIDR blocks are ranges too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct AddrRange {
    pub lo: Ipv4Addr,
    pub hi: Ipv4Addr,
}

impl AddrRange {
    pub fn len(&self) -> u64 {
        u64::from(u32::from(self.hi)) - u64::from(u32::from(self.lo)) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The smallest list of CIDR blocks that covers exactly this range.
    pub fn to_cidrs(&self) -> Vec<Ipv4Net> {
        let mut out = Vec::new();
        let mut lo = u64::from(u32::from(self.lo));
        let hi = u64::from(u32::from(self.hi));
        while lo <= hi {
            let mut size = if lo == 0 {
                1u64 << 32
            } else {
                lo & lo.wrapping_neg()
            };
            while lo + size - 1 > hi {
                size >>= 1;
            }
            let prefix = 32 - size.trailing_zeros() as u8;
            out.push(Ipv4Net::new(Ipv4Addr::from(lo as u32), prefix).expect("prefix <= 32"));
            lo += size;
        }
        out
    }
}

impl fmt::Display for AddrRange {
    /// `a`, `a/nn` when the range is one CIDR block, else `a-b`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            return write!(f, "{}", self.lo);
        }
        let c = self.to_cidrs();
        if c.len() == 1 {
            write!(f, "{}", c[0])
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// Sort and merge overlapping or adjacent ranges.
pub fn merge_ranges(mut v: Vec<AddrRange>) -> Vec<AddrRange> {
    v.sort();
    let mut out: Vec<AddrRange> = Vec::with_capacity(v.len());
    for r in v {
        if let Some(last) = out.last_mut()
            && u64::from(u32::from(r.lo)) <= u64::from(u32::from(last.hi)) + 1
        {
            if r.hi > last.hi {
                last.hi = r.hi;
            }
            continue;
        }
        out.push(r);
    }
    out
}

/// `a` minus `b`: the parts of the ranges of `a` not covered by any range of `b`.
pub fn subtract_ranges(a: &[AddrRange], b: &[AddrRange]) -> Vec<AddrRange> {
    let mut out = merge_ranges(a.to_vec());
    for cut in merge_ranges(b.to_vec()) {
        let mut next = Vec::with_capacity(out.len() + 1);
        for r in out {
            if !r.overlaps(&cut) {
                next.push(r);
                continue;
            }
            if r.lo < cut.lo {
                next.push(AddrRange {
                    lo: r.lo,
                    hi: Ipv4Addr::from(u32::from(cut.lo) - 1),
                });
            }
            if r.hi > cut.hi {
                next.push(AddrRange {
                    lo: Ipv4Addr::from(u32::from(cut.hi) + 1),
                    hi: r.hi,
                });
            }
        }
        out = next;
    }
    out
}

/// An inclusive IPv6 range; single addresses and CIDR blocks are ranges too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct AddrRange6 {
    pub lo: Ipv6Addr,
    pub hi: Ipv6Addr,
}

impl AddrRange6 {
    /// The smallest list of CIDR blocks that covers exactly this range.
    pub fn to_cidrs(&self) -> Vec<Ipv6Net> {
        let mut out = Vec::new();
        let mut lo = u128::from(self.lo);
        let hi = u128::from(self.hi);
        loop {
            // The largest aligned block starting at `lo` that does not pass `hi`.
            let mut bits = if lo == 0 { 128 } else { lo.trailing_zeros() };
            let end = |b: u32| {
                if b == 128 {
                    u128::MAX
                } else {
                    lo + ((1u128 << b) - 1)
                }
            };
            while end(bits) > hi {
                bits -= 1;
            }
            out.push(Ipv6Net::new(Ipv6Addr::from(lo), (128 - bits) as u8).expect("prefix <= 128"));
            let last = end(bits);
            if last >= hi {
                break;
            }
            lo = last + 1;
        }
        out
    }
}

impl fmt::Display for AddrRange6 {
    /// `a`, `a/nn` when the range is one CIDR block, else `a-b`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            return write!(f, "{}", self.lo);
        }
        let c = self.to_cidrs();
        if c.len() == 1 {
            write!(f, "{}", c[0])
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// Sort and merge overlapping or adjacent IPv6 ranges.
pub fn merge_ranges6(mut v: Vec<AddrRange6>) -> Vec<AddrRange6> {
    v.sort();
    let mut out: Vec<AddrRange6> = Vec::with_capacity(v.len());
    for r in v {
        if let Some(last) = out.last_mut()
            && u128::from(r.lo) <= u128::from(last.hi).saturating_add(1)
        {
            if r.hi > last.hi {
                last.hi = r.hi;
            }
            continue;
        }
        out.push(r);
    }
    out
}

/// `a` minus `b` for IPv6 ranges.
pub fn subtract_ranges6(a: &[AddrRange6], b: &[AddrRange6]) -> Vec<AddrRange6> {
    let mut out = merge_ranges6(a.to_vec());
    for cut in merge_ranges6(b.to_vec()) {
        let mut next = Vec::with_capacity(out.len() + 1);
        for r in out {
            if !r.overlaps(&cut) {
                next.push(r);
                continue;
            }
            if r.lo < cut.lo {
                next.push(AddrRange6 {
                    lo: r.lo,
                    hi: Ipv6Addr::from(u128::from(cut.lo) - 1),
                });
            }
            if r.hi > cut.hi {
                next.push(AddrRange6 {
                    lo: Ipv6Addr::from(u128::from(cut.hi) + 1),
                    hi: r.hi,
                });
            }
        }
        out = next;
    }
    out
}

/// Why an IPv6 address cannot be a segment's or the uplink's global address (or a group
/// member): link-local, multicast, loopback, unspecified or IPv4-mapped.
pub fn v6_special(a: Ipv6Addr) -> Option<&'static str> {
    let seg0 = a.segments()[0];
    if a.is_unspecified() {
        Some("the unspecified address")
    } else if a.is_loopback() {
        Some("the loopback address")
    } else if seg0 & 0xffc0 == 0xfe80 {
        Some("link-local (fe80::/10)")
    } else if seg0 & 0xff00 == 0xff00 {
        Some("multicast (ff00::/8)")
    } else if a.to_ipv4_mapped().is_some() {
        Some("IPv4-mapped (::ffff:0:0/96)")
    } else {
        None
    }
}

/// The address made of the upper 64 bits of `net` and the interface identifier `iid`.
pub fn with_iid(net: Ipv6Net, iid: u64) -> Ipv6Addr {
    Ipv6Addr::from((u128::from(net.network()) & !u128::from(u64::MAX)) | u128::from(iid))
}

/// The interface identifier (lower 64 bits) of `a`.
pub fn iid_of(a: Ipv6Addr) -> u64 {
    u128::from(a) as u64
}

/// An inclusive port range; a single port has `lo == hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn single(p: u16) -> Self {
        PortRange { lo: p, hi: p }
    }

    pub fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }

    pub fn check_number(n: i64) -> Result<u16, String> {
        if (1..=65535).contains(&n) {
            Ok(n as u16)
        } else {
            Err(format!("port {n} is out of range 1-65535"))
        }
    }

    pub fn parse_text(s: &str) -> Result<Self, String> {
        let num = |t: &str| -> Result<u16, String> {
            let n: i64 = t
                .trim()
                .parse()
                .map_err(|_| format!("`{s}` is not a port or a port range like \"8000-8100\""))?;
            Self::check_number(n)
        };
        match s.split_once('-') {
            Some((a, b)) => {
                let (lo, hi) = (num(a)?, num(b)?);
                if lo > hi {
                    return Err(format!("port range `{s}` ends before it starts"));
                }
                Ok(PortRange { lo, hi })
            }
            None => Ok(PortRange::single(num(s)?)),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// Sort and merge port ranges.
pub fn merge_ports(mut v: Vec<PortRange>) -> Vec<PortRange> {
    v.sort();
    let mut out: Vec<PortRange> = Vec::new();
    for r in v {
        if let Some(last) = out.last_mut()
            && u32::from(r.lo) <= u32::from(last.hi) + 1
        {
            last.hi = last.hi.max(r.hi);
            continue;
        }
        out.push(r);
    }
    out
}

/// Parse a duration: whole seconds or `"1h30m"`, `"10m"`, `"90s"`, `"7d"`.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let mult = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => {
                return Err(format!(
                    "`{s}` is not a duration (use s, m, h, d: \"1h30m\")"
                ));
            }
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration (use s, m, h, d: \"1h30m\")"))?;
        total = total.saturating_add(n.saturating_mul(mult));
        num.clear();
    }
    if !num.is_empty() {
        total = total.saturating_add(
            num.parse::<u64>()
                .map_err(|_| format!("`{s}` is not a duration"))?,
        );
    }
    Ok(total)
}

/// Parse `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let bad = || format!("`{s}` is not a MAC address like aa:bb:cc:dd:ee:ff");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(bad());
        }
        mac[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_decomposition_covers_exactly() {
        let r = AddrRange::parse("10.10.1.10-10.10.1.19").unwrap();
        let c: Vec<String> = r.to_cidrs().iter().map(|n| n.to_string()).collect();
        assert_eq!(c, ["10.10.1.10/31", "10.10.1.12/30", "10.10.1.16/30"]);
        let all = AddrRange::parse("0.0.0.0-255.255.255.255").unwrap();
        assert_eq!(all.to_cidrs().len(), 1);
        assert_eq!(
            AddrRange::parse("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert_eq!(parse_duration("600").unwrap(), 600);
        assert!(parse_duration("10 minutes").is_err());
    }

    #[test]
    fn subtracting() {
        let a = vec![AddrRange::parse("10.0.0.0/24").unwrap()];
        let b = vec![AddrRange::parse("10.0.0.10-10.0.0.19").unwrap()];
        let r: Vec<String> = subtract_ranges(&a, &b)
            .iter()
            .map(|x| x.to_string())
            .collect();
        assert_eq!(r, ["10.0.0.0-10.0.0.9", "10.0.0.20-10.0.0.255"]);
        assert!(subtract_ranges(&b, &a).is_empty());
    }

    #[test]
    fn merging() {
        let v = vec![
            AddrRange::parse("10.0.0.5-10.0.0.9").unwrap(),
            AddrRange::parse("10.0.0.1-10.0.0.4").unwrap(),
            AddrRange::parse("10.0.0.20").unwrap(),
        ];
        let m = merge_ranges(v);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].to_string(), "10.0.0.1-10.0.0.9");
    }

    #[test]
    fn v6_ranges() {
        let r = AddrRange6::parse("fd00:10::10-fd00:10::1f").unwrap();
        let c: Vec<String> = r.to_cidrs().iter().map(|n| n.to_string()).collect();
        assert_eq!(c, ["fd00:10::10/124"]);
        assert_eq!(r.to_string(), "fd00:10::10/124");
        let r = AddrRange6::parse("fd00:10::1-fd00:10::4").unwrap();
        let c: Vec<String> = r.to_cidrs().iter().map(|n| n.to_string()).collect();
        assert_eq!(c, ["fd00:10::1/128", "fd00:10::2/127", "fd00:10::4/128"]);
        let all = AddrRange6::parse("::/0").unwrap();
        assert_eq!(all.to_cidrs().len(), 1);
        assert_eq!(all.to_string(), "::/0");
        assert!(AddrRange6::parse("fd00:10::1/64").is_err());
        let m = merge_ranges6(vec![
            AddrRange6::parse("fd00::5-fd00::9").unwrap(),
            AddrRange6::parse("fd00::1-fd00::4").unwrap(),
        ]);
        assert_eq!(m.len(), 1);
        let s = subtract_ranges6(
            &[AddrRange6::parse("fd00::/126").unwrap()],
            &[AddrRange6::parse("fd00::1").unwrap()],
        );
        assert_eq!(s.len(), 2);
        assert_eq!(
            with_iid("fd00:10::/64".parse().unwrap(), 1),
            "fd00:10::1".parse::<Ipv6Addr>().unwrap()
        );
    }
}
