//! The nf_tables ruleset generation of this network namespace (NFT_MSG_GETGEN over
//! netlink): every committed nftables transaction — ours, an operator's `nft`, iptables-nft —
//! increments it. While it has not moved, nothing in nftables changed, so a drift check
//! need not list (and parse) the whole table with every set element.

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETGEN: u16 = 16;
const NFT_MSG_NEWGEN: u16 = 15;
const NFTA_GEN_ID: u16 = 1;
const NLMSG_ERROR: u16 = 2;

/// A raw `NETLINK_NETFILTER` socket (nf_tables requests here, NFLOG records in logship).
pub use crate::sys::netlink::netfilter_socket;

/// The current generation, or None when it cannot be read (no nf_tables, no permission).
pub fn generation() -> Option<u32> {
    let fd = netfilter_socket().ok()?;
    let _ = crate::sys::socket::set_recv_timeout(&fd, std::time::Duration::from_secs(1));
    let req = request();
    if crate::sys::netlink::send_to_kernel(&fd, &req).ok()? != req.len() {
        return None;
    }
    let mut buf = [0u8; 1024];
    let n = crate::sys::socket::recv(&fd, &mut buf).ok()?;
    if n == 0 {
        return None;
    }
    parse_reply(&buf[..n])
}

/// nlmsghdr + nfgenmsg asking for the generation.
fn request() -> Vec<u8> {
    let mut m = Vec::with_capacity(20);
    m.extend_from_slice(&20u32.to_ne_bytes()); // nlmsg_len
    m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
    m.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid
    m.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]); // family, version, res_id
    m
}

/// NFTA_GEN_ID of an NFT_MSG_NEWGEN reply.
fn parse_reply(b: &[u8]) -> Option<u32> {
    let len = u32::from_ne_bytes(b.get(0..4)?.try_into().ok()?) as usize;
    let ty = u16::from_ne_bytes(b.get(4..6)?.try_into().ok()?);
    if ty == NLMSG_ERROR || ty != ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN) {
        return None;
    }
    let msg = b.get(..len.min(b.len()))?;
    let mut at = 16 + 4;
    while at + 4 <= msg.len() {
        let alen = u16::from_ne_bytes(msg[at..at + 2].try_into().ok()?) as usize;
        let aty = u16::from_ne_bytes(msg[at + 2..at + 4].try_into().ok()?) & 0x3fff;
        if alen < 4 {
            return None;
        }
        if aty == NFTA_GEN_ID && alen >= 8 {
            return Some(u32::from_be_bytes(
                msg.get(at + 4..at + 8)?.try_into().ok()?,
            ));
        }
        at += (alen + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_newgen_reply() {
        let mut r = Vec::new();
        r.extend_from_slice(&36u32.to_ne_bytes());
        r.extend_from_slice(&((10u16 << 8) | 15).to_ne_bytes());
        r.extend_from_slice(&0u16.to_ne_bytes());
        r.extend_from_slice(&1u32.to_ne_bytes());
        r.extend_from_slice(&0u32.to_ne_bytes());
        r.extend_from_slice(&[0, 0, 0, 0]);
        // NFTA_GEN_ID = 0x01020304, then NFTA_GEN_PROC_PID
        r.extend_from_slice(&8u16.to_ne_bytes());
        r.extend_from_slice(&1u16.to_ne_bytes());
        r.extend_from_slice(&0x0102_0304u32.to_be_bytes());
        r.extend_from_slice(&8u16.to_ne_bytes());
        r.extend_from_slice(&2u16.to_ne_bytes());
        r.extend_from_slice(&7u32.to_be_bytes());
        assert_eq!(parse_reply(&r), Some(0x0102_0304));
        assert_eq!(request().len(), 20);
    }

    #[test]
    fn an_error_reply_is_none() {
        let mut r = Vec::new();
        r.extend_from_slice(&36u32.to_ne_bytes());
        r.extend_from_slice(&2u16.to_ne_bytes());
        r.extend_from_slice(&[0; 30]);
        assert_eq!(parse_reply(&r), None);
    }
}

#[cfg(test)]
mod live {
    /// Reading the generation is harmless anywhere; as root it must work.
    #[test]
    fn the_kernel_answers() {
        if !crate::sys::proc::is_root() {
            return;
        }
        let a = super::generation().expect("NFT_MSG_GETGEN answered");
        assert_eq!(super::generation(), Some(a), "nothing changed in between");
    }
}
