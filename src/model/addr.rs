//! Address and port value types shared by the model and the plan.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

/// An inclusive IPv4 range; single addresses and CIDR blocks are ranges too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct AddrRange {
    pub lo: Ipv4Addr,
    pub hi: Ipv4Addr,
}

impl AddrRange {
    pub fn single(a: Ipv4Addr) -> Self {
        AddrRange { lo: a, hi: a }
    }

    pub fn from_net(n: Ipv4Net) -> Self {
        AddrRange {
            lo: n.network(),
            hi: n.broadcast(),
        }
    }

    /// Parse `a.b.c.d`, `a.b.c.d/nn` or `a.b.c.d-e.f.g.h`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some((a, b)) = s.split_once('-') {
            let lo: Ipv4Addr = a
                .trim()
                .parse()
                .map_err(|_| format!("`{a}` in range `{s}` is not an IPv4 address"))?;
            let hi: Ipv4Addr = b
                .trim()
                .parse()
                .map_err(|_| format!("`{b}` in range `{s}` is not an IPv4 address"))?;
            if lo > hi {
                return Err(format!("range `{s}` ends before it starts"));
            }
            return Ok(AddrRange { lo, hi });
        }
        if s.contains('/') {
            let n: Ipv4Net = s
                .parse()
                .map_err(|_| format!("`{s}` is not an IPv4 CIDR block"))?;
            if n.network() != n.addr() {
                return Err(format!(
                    "`{s}` has host bits set; did you mean `{}`?",
                    n.trunc()
                ));
            }
            return Ok(AddrRange::from_net(n));
        }
        let a: Ipv4Addr = s.parse().map_err(|_| {
            format!("`{s}` is not an IPv4 address, CIDR block or range (a.b.c.d-e.f.g.h)")
        })?;
        Ok(AddrRange::single(a))
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        self.lo <= a && a <= self.hi
    }

    pub fn overlaps(&self, o: &AddrRange) -> bool {
        self.lo <= o.hi && o.lo <= self.hi
    }

    pub fn within(&self, n: &Ipv4Net) -> bool {
        n.contains(&self.lo) && n.contains(&self.hi)
    }

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
}
