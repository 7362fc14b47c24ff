//! Links, addresses and routes through rtnetlink.
//!
//! The trait is synchronous: the real implementation owns a single-threaded tokio runtime and
//! its netlink socket, both created on the calling thread — so the socket lives in that
//! thread's network namespace, and a caller that is itself async uses `spawn_blocking`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{Handle, LinkUnspec, LinkVlan, RouteMessageBuilder};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error(
        "interface {name} does not exist (needed as {role}); check the interface name in the config"
    )]
    MissingInterface { name: String, role: String },
    #[error(
        "cannot create VLAN {name} on {parent} (id {id}): the kernel has no 802.1Q support (load module 8021q or build with CONFIG_VLAN_8021Q)"
    )]
    VlanUnsupported {
        name: String,
        parent: String,
        id: u16,
    },
    #[error("interface {name} exists but is not {want}; Bulkhead will not change or remove it")]
    Conflict { name: String, want: String },
    #[error("netlink {op} {object}: {message}")]
    Failed {
        op: &'static str,
        object: String,
        /// errno when the kernel answered with one.
        errno: Option<i32>,
        message: String,
    },
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// `IFLA_INFO_KIND`, e.g. `vlan` or `veth`.
    pub kind: Option<String>,
    pub vlan_id: Option<u16>,
    /// `IFLA_LINK`: the parent of a VLAN.
    pub parent: Option<u32>,
}

/// A default route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    pub via: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

/// An IPv6 default route (`::/0`) in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute6 {
    pub via: Option<Ipv6Addr>,
    pub oif: Option<u32>,
}

/// Link side effects. Calls that create return `Ok(false)` when the object already existed
/// (EEXIST is a fact about state, not a failure); calls that delete return `Ok(false)` when it
/// was already gone.
pub trait Netlink {
    fn link(&self, name: &str) -> Result<Option<LinkState>, NetlinkError>;
    fn link_by_index(&self, index: u32) -> Result<Option<LinkState>, NetlinkError>;
    fn add_vlan(&self, name: &str, parent: u32, id: u16) -> Result<bool, NetlinkError>;
    fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError>;
    fn set_up(&self, index: u32) -> Result<(), NetlinkError>;
    fn del_link(&self, index: u32) -> Result<bool, NetlinkError>;
    /// IPv4 and IPv6 addresses (link-local ones included).
    fn addresses(&self, index: u32) -> Result<Vec<IpNet>, NetlinkError>;
    /// Add an address; an IPv6 one without duplicate address detection (the gateway's own
    /// address on its segment is usable at once).
    fn add_address(&self, index: u32, addr: IpNet) -> Result<bool, NetlinkError>;
    fn del_address(&self, index: u32, addr: IpNet) -> Result<bool, NetlinkError>;
    fn default_routes(&self) -> Result<Vec<DefaultRoute>, NetlinkError>;
    fn add_default_route(&self, via: Ipv4Addr, oif: u32) -> Result<bool, NetlinkError>;
    /// The IPv6 default route `::/0 via VIA dev OIF` (a static uplink address6).
    fn add_default_route6(&self, _via: Ipv6Addr, _oif: u32) -> Result<bool, NetlinkError> {
        Ok(false)
    }
    /// The IPv6 default routes of the main table (a static one, or one learned from RAs).
    fn default_routes6(&self) -> Result<Vec<DefaultRoute6>, NetlinkError> {
        Ok(Vec::new())
    }
}

/// The real kernel.
pub struct RtNetlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

const EEXIST: i32 = 17;
const ENOENT: i32 = 2;
const ENODEV: i32 = 19;
const EADDRNOTAVAIL: i32 = 99;
const EOPNOTSUPP: i32 = 95;

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => {
            let c = m.raw_code();
            (c != 0).then_some(-c)
        }
        _ => None,
    }
}

fn failed(op: &'static str, object: impl Into<String>, e: rtnetlink::Error) -> NetlinkError {
    let errno = errno(&e);
    let message = match &e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        e => e.to_string(),
    };
    NetlinkError::Failed {
        op,
        object: object.into(),
        errno,
        message,
    }
}

fn link_state(m: &LinkMessage) -> LinkState {
    let mut s = LinkState {
        index: m.header.index,
        name: String::new(),
        mtu: 0,
        up: m.header.flags.contains(LinkFlags::Up),
        kind: None,
        vlan_id: None,
        parent: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::Mtu(x) => s.mtu = *x,
            LinkAttribute::Link(p) => s.parent = Some(*p),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => s.kind = Some(k.to_string()),
                        LinkInfo::Data(InfoData::Vlan(v)) => {
                            for x in v {
                                if let InfoVlan::Id(id) = x {
                                    s.vlan_id = Some(*id);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    s
}

fn addr_of(m: &AddressMessage) -> Option<IpNet> {
    if m.header.family != AddressFamily::Inet && m.header.family != AddressFamily::Inet6 {
        return None;
    }
    // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on point-to-point).
    let mut local = None;
    let mut address = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(x) => local = Some(*x),
            AddressAttribute::Address(x) => address = Some(*x),
            _ => {}
        }
    }
    match local.or(address)? {
        IpAddr::V4(a) => Ipv4Net::new(a, m.header.prefix_len).ok().map(IpNet::V4),
        IpAddr::V6(a) => Ipv6Net::new(a, m.header.prefix_len).ok().map(IpNet::V6),
    }
}

impl RtNetlink {
    /// Open a netlink socket in the calling thread's network namespace.
    pub fn new() -> Result<Self, NetlinkError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(NetlinkError::Socket)?;
        let handle = rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
            tokio::spawn(conn);
            Ok::<_, NetlinkError>(handle)
        })?;
        Ok(RtNetlink { rt, handle })
    }

    fn get_link(&self, req: rtnetlink::LinkGetRequest) -> Result<Option<LinkState>, NetlinkError> {
        self.rt.block_on(async {
            let mut s = req.execute();
            match s.try_next().await {
                Ok(Some(m)) => Ok(Some(link_state(&m))),
                Ok(None) => Ok(None),
                Err(e) if matches!(errno(&e), Some(ENODEV | ENOENT)) => Ok(None),
                Err(e) => Err(failed("get link", "", e)),
            }
        })
    }
}

impl Netlink for RtNetlink {
    fn link(&self, name: &str) -> Result<Option<LinkState>, NetlinkError> {
        self.get_link(self.handle.link().get().match_name(name.to_string()))
            .map_err(|e| match e {
                NetlinkError::Failed {
                    op, errno, message, ..
                } => NetlinkError::Failed {
                    op,
                    object: name.into(),
                    errno,
                    message,
                },
                e => e,
            })
    }

    fn link_by_index(&self, index: u32) -> Result<Option<LinkState>, NetlinkError> {
        self.get_link(self.handle.link().get().match_index(index))
    }

    fn add_vlan(&self, name: &str, parent: u32, id: u16) -> Result<bool, NetlinkError> {
        // NLM_F_CREATE|NLM_F_EXCL (rtnetlink's add): an existing link is reported as EEXIST.
        let msg = vlan_message(name, parent, id);
        let r = self
            .rt
            .block_on(async { self.handle.link().add(msg).execute().await });
        match r {
            Ok(()) => {
                tracing::info!(link = %name, parent, vlan = id, "created vlan link");
                Ok(true)
            }
            Err(e) if errno(&e) == Some(EEXIST) => Ok(false),
            Err(e) if errno(&e) == Some(EOPNOTSUPP) => {
                let parent = self
                    .link_by_index(parent)
                    .ok()
                    .flatten()
                    .map_or(format!("ifindex {parent}"), |l| l.name);
                Err(NetlinkError::VlanUnsupported {
                    name: name.into(),
                    parent,
                    id,
                })
            }
            Err(e) => Err(failed("add vlan", name, e)),
        }
    }

    fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.rt
            .block_on(async { self.handle.link().set(msg).execute().await })
            .map_err(|e| failed("set mtu", format!("ifindex {index} mtu {mtu}"), e))?;
        tracing::info!(ifindex = index, mtu, "set link mtu");
        Ok(())
    }

    fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.rt
            .block_on(async { self.handle.link().set(msg).execute().await })
            .map_err(|e| failed("set up", format!("ifindex {index}"), e))?;
        tracing::info!(ifindex = index, "set link up");
        Ok(())
    }

    fn del_link(&self, index: u32) -> Result<bool, NetlinkError> {
        match self
            .rt
            .block_on(async { self.handle.link().del(index).execute().await })
        {
            Ok(()) => {
                tracing::info!(ifindex = index, "deleted link");
                Ok(true)
            }
            Err(e) if matches!(errno(&e), Some(ENODEV | ENOENT)) => Ok(false),
            Err(e) => Err(failed("delete link", format!("ifindex {index}"), e)),
        }
    }

    fn addresses(&self, index: u32) -> Result<Vec<IpNet>, NetlinkError> {
        self.rt.block_on(async {
            let mut s = self
                .handle
                .address()
                .get()
                .set_link_index_filter(index)
                .execute();
            let mut v = Vec::new();
            loop {
                match s.try_next().await {
                    Ok(Some(m)) => {
                        if m.header.index == index
                            && let Some(a) = addr_of(&m)
                        {
                            v.push(a);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Err(failed("list addresses", format!("ifindex {index}"), e)),
                }
            }
            Ok(v)
        })
    }

    fn add_address(&self, index: u32, addr: IpNet) -> Result<bool, NetlinkError> {
        let r = self.rt.block_on(async {
            let mut req = self
                .handle
                .address()
                .add(index, addr.addr(), addr.prefix_len());
            if addr.addr().is_ipv6() {
                req.message_mut()
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            req.execute().await
        });
        match r {
            Ok(()) => {
                tracing::info!(ifindex = index, address = %addr, "added address");
                Ok(true)
            }
            Err(e) if errno(&e) == Some(EEXIST) => Ok(false),
            Err(e) => Err(failed("add address", format!("{addr} ifindex {index}"), e)),
        }
    }

    fn del_address(&self, index: u32, addr: IpNet) -> Result<bool, NetlinkError> {
        let r = self.rt.block_on(async {
            let mut s = self
                .handle
                .address()
                .get()
                .set_link_index_filter(index)
                .execute();
            let mut found = None;
            while let Some(m) = s.try_next().await? {
                if m.header.index == index && addr_of(&m) == Some(addr) {
                    found = Some(m);
                    break;
                }
            }
            drop(s);
            match found {
                Some(m) => self.handle.address().del(m).execute().await.map(|_| true),
                None => Ok(false),
            }
        });
        match r {
            Ok(true) => {
                tracing::info!(ifindex = index, address = %addr, "deleted address");
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) if matches!(errno(&e), Some(EADDRNOTAVAIL | ENODEV)) => Ok(false),
            Err(e) => Err(failed(
                "delete address",
                format!("{addr} ifindex {index}"),
                e,
            )),
        }
    }

    fn default_routes(&self) -> Result<Vec<DefaultRoute>, NetlinkError> {
        self.dump_routes(
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            "main",
            default_route,
        )
    }

    fn add_default_route(&self, via: Ipv4Addr, oif: u32) -> Result<bool, NetlinkError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(via)
            .output_interface(oif)
            .build();
        match self
            .rt
            .block_on(async { self.handle.route().add(msg).execute().await })
        {
            Ok(()) => {
                tracing::info!(via = %via, ifindex = oif, "added default route");
                Ok(true)
            }
            Err(e) if errno(&e) == Some(EEXIST) => Ok(false),
            Err(e) => Err(failed("add route", format!("default via {via}"), e)),
        }
    }

    fn add_default_route6(&self, via: Ipv6Addr, oif: u32) -> Result<bool, NetlinkError> {
        self.add_default_route6_impl(via, oif)
    }

    fn default_routes6(&self) -> Result<Vec<DefaultRoute6>, NetlinkError> {
        self.dump_routes(
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
            "main (IPv6)",
            default_route6,
        )
    }
}

impl RtNetlink {
    /// The routes of a dump (`msg` names the family) that `pick` keeps.
    fn dump_routes<T>(
        &self,
        msg: RouteMessage,
        table: &'static str,
        pick: fn(&RouteMessage) -> Option<T>,
    ) -> Result<Vec<T>, NetlinkError> {
        self.rt.block_on(async {
            let mut s = self.handle.route().get(msg).execute();
            let mut v = Vec::new();
            loop {
                match s.try_next().await {
                    Ok(Some(m)) => v.extend(pick(&m)),
                    Ok(None) => break,
                    Err(e) => return Err(failed("list routes", table, e)),
                }
            }
            Ok(v)
        })
    }

    fn add_default_route6_impl(&self, via: Ipv6Addr, oif: u32) -> Result<bool, NetlinkError> {
        let msg = RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(via)
            .output_interface(oif)
            .build();
        match self
            .rt
            .block_on(async { self.handle.route().add(msg).execute().await })
        {
            Ok(()) => {
                tracing::info!(via = %via, ifindex = oif, "added IPv6 default route");
                Ok(true)
            }
            Err(e) if errno(&e) == Some(EEXIST) => Ok(false),
            Err(e) => Err(failed("add route", format!("default via {via}"), e)),
        }
    }
}

fn default_route(m: &RouteMessage) -> Option<DefaultRoute> {
    if m.header.address_family != AddressFamily::Inet
        || m.header.destination_prefix_length != 0
        || m.header.table != rtnetlink::packet_route::route::RouteHeader::RT_TABLE_MAIN
    {
        return None;
    }
    let mut r = DefaultRoute {
        via: None,
        oif: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => r.via = Some(*g),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Table(t) if *t != 254 => return None,
            _ => {}
        }
    }
    Some(r)
}

fn default_route6(m: &RouteMessage) -> Option<DefaultRoute6> {
    if m.header.address_family != AddressFamily::Inet6
        || m.header.destination_prefix_length != 0
        || m.header.table != rtnetlink::packet_route::route::RouteHeader::RT_TABLE_MAIN
        || m.header.kind != rtnetlink::packet_route::route::RouteType::Unicast
    {
        return None;
    }
    let mut r = DefaultRoute6 {
        via: None,
        oif: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => r.via = Some(*g),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Table(t) if *t != 254 => return None,
            _ => {}
        }
    }
    Some(r)
}

/// RTM_NEWLINK body for an 802.1Q link: IFLA_IFNAME = name, IFLA_LINK = parent's ifindex,
/// IFLA_LINKINFO { IFLA_INFO_KIND "vlan", IFLA_INFO_DATA { IFLA_VLAN_ID id } }, created down
/// (apply brings it up after MTU and addresses).
pub fn vlan_message(name: &str, parent: u32, id: u16) -> LinkMessage {
    LinkVlan::new(name, parent, id).build()
}

/// Whether the kernel reports the link as an 802.1Q VLAN (`IFLA_INFO_KIND` = `vlan`).
pub fn is_vlan(l: &LinkState) -> bool {
    l.kind.as_deref() == Some(InfoKind::Vlan.to_string().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_message_carries_parent_kind_and_id() {
        let m = vlan_message("eth0.10", 7, 10);
        let a = &m.attributes;
        assert!(a.contains(&LinkAttribute::IfName("eth0.10".into())));
        assert!(a.contains(&LinkAttribute::Link(7)));
        let info = a
            .iter()
            .find_map(|x| match x {
                LinkAttribute::LinkInfo(i) => Some(i.clone()),
                _ => None,
            })
            .expect("IFLA_LINKINFO");
        assert!(info.contains(&LinkInfo::Kind(InfoKind::Vlan)));
        assert!(info.contains(&LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(10)]))));
        assert!(!m.header.flags.contains(LinkFlags::Up));
        // Round trip through the parser used for kernel replies.
        let s = link_state(&m);
        assert_eq!(
            (s.name.as_str(), s.parent, s.vlan_id),
            ("eth0.10", Some(7), Some(10))
        );
        assert!(is_vlan(&s));
    }
}
