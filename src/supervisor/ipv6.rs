//! IPv6 on the segments for `bulkhead run`: for every segment with `subnet6` router
//! advertisements ([`crate::ra`]) and, in the stateless and stateful modes, the DHCPv6 server
//! ([`crate::dhcp6`]) with its leases in `leases6.journal` beside the DHCPv4 journal. The
//! gateway's address is the apply's (it is in the plan; a delegated segment's too, since the
//! plan takes the delegated prefix as an input).
//!
//! A reload hands the new model to [`Ipv6Service::update`]: segments that are gone send
//! their final RA (router lifetime 0) and stop serving; changed ones are updated in place
//! (a prefix that changed is advertised deprecated while the new one is announced); new
//! ones start. A segment numbered from a delegated prefix waits until the uplink holds one.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use ipnet::Ipv6Net;

use crate::dhcp6::{Dhcp6Handle, Dhcp6Mode, SegmentV6};
use crate::model::{Dhcp6Mode as Mode6, Model};
use crate::ra::{Mode, Prefix, RaConfig, RaHandle};

/// What one IPv6 segment runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted6 {
    /// Segment name.
    pub segment: String,
    /// Its interface.
    pub interface: String,
    /// The gateway's address on it, as `ADDR/64`.
    pub gateway: Ipv6Net,
    /// Whether this service puts `gateway` on the interface (a delegated prefix); a static
    /// one is put there by the apply.
    pub own_address: bool,
    /// What its RAs carry.
    pub ra: RaConfig,
    /// The DHCPv6 service (stateless and stateful modes).
    pub dhcp: Option<SegmentV6>,
}

/// The IPv6 segments of a model that can run now (`delegated`: the prefix the uplink holds,
/// if any), in config order.
pub fn wanted(m: &Model, delegated: Option<Ipv6Net>) -> Vec<Wanted6> {
    let mut v = Vec::new();
    for s in m.segments6() {
        let (Some(net), Some(gw)) = (s.subnet6(delegated), s.gateway6(delegated)) else {
            continue;
        };
        let mode = match s.mode {
            Mode6::Slaac => Mode::Slaac,
            Mode6::Stateless => Mode::Stateless,
            Mode6::Stateful => Mode::Stateful,
        };
        let mut ra = RaConfig::new(mode, vec![Prefix::new(net)]);
        ra.dns = s.dns6.clone();
        ra.domains = s.domain.iter().cloned().collect();
        ra.mtu = s.mtu;
        let dhcp = match s.mode {
            Mode6::Slaac => None,
            Mode6::Stateless | Mode6::Stateful => {
                let mode = if s.mode == Mode6::Stateful {
                    Dhcp6Mode::Stateful
                } else {
                    Dhcp6Mode::Stateless
                };
                let mut d = SegmentV6::new(&s.segment, &s.ifname, mode, net);
                if let Some(p) = s.pool_in(delegated) {
                    d.pool_start = p.lo;
                    d.pool_end = p.hi;
                }
                d.dns = s.dns6.clone();
                d.domains = ra.domains.clone();
                d.valid_lifetime = s.lease_time.max(60);
                d.preferred_lifetime = d.valid_lifetime / 2;
                Some(d)
            }
        };
        v.push(Wanted6 {
            segment: s.segment.clone(),
            interface: s.ifname.clone(),
            gateway: Ipv6Net::new(gw, 64).expect("/64"),
            // the apply puts every gateway6 on, a delegated one too: the plan is built with
            // the delegated prefix (plan::delegated), so address and firewall move together
            own_address: false,
            ra,
            dhcp,
        });
    }
    v
}

struct Running {
    wanted: Wanted6,
    ra: RaHandle,
}

/// The running IPv6 services of the gateway.
pub struct Ipv6Service {
    dir: PathBuf,
    running: BTreeMap<String, Running>,
    dhcp: Option<Dhcp6Handle>,
}

async fn netlink() -> Option<rtnetlink::Handle> {
    match rtnetlink::new_connection() {
        Ok((conn, handle, _)) => {
            tokio::spawn(conn);
            Some(handle)
        }
        Err(e) => {
            tracing::error!("netlink for IPv6 addresses: {e}");
            None
        }
    }
}

/// Put `addr` on `iface` (replacing it if present), without DAD.
async fn add_address(iface: &str, addr: Ipv6Net) -> Result<(), String> {
    use netlink_packet_route::address::{AddressAttribute, AddressFlags};
    let index = crate::sys::icmp6::if_index(iface).map_err(|e| format!("{iface}: {e}"))?;
    let h = netlink().await.ok_or("no netlink")?;
    let mut req = h
        .address()
        .add(index, IpAddr::V6(addr.addr()), addr.prefix_len())
        .replace();
    req.message_mut()
        .attributes
        .push(AddressAttribute::Flags(AddressFlags::Nodad));
    req.execute()
        .await
        .map_err(|e| format!("add {addr} on {iface}: {e}"))
}

/// Take `addr` off `iface`, if it is there.
async fn del_address(iface: &str, addr: Ipv6Net) {
    use netlink_packet_route::address::AddressAttribute;
    let Ok(index) = crate::sys::icmp6::if_index(iface) else {
        return;
    };
    let Some(h) = netlink().await else { return };
    let mut s = h.address().get().set_link_index_filter(index).execute();
    while let Ok(Some(m)) = s.try_next().await {
        let here =
            m.attributes.iter().any(
                |a| matches!(a, AddressAttribute::Address(IpAddr::V6(x)) if *x == addr.addr()),
            ) && m.header.prefix_len == addr.prefix_len();
        if here {
            if let Err(e) = h.address().del(m).execute().await {
                tracing::warn!(interface = iface, address = %addr, "removing the old gateway6 address: {e}");
            }
            return;
        }
    }
}

impl Ipv6Service {
    /// Start IPv6 on every segment of `m` that has it (`delegated`: the prefix the uplink
    /// holds); leases in `dhcp_dir`.
    pub async fn start(m: &Model, delegated: Option<Ipv6Net>, dhcp_dir: &Path) -> Ipv6Service {
        let mut s = Ipv6Service {
            dir: dhcp_dir.to_path_buf(),
            running: BTreeMap::new(),
            dhcp: None,
        };
        s.update(m, delegated).await;
        s
    }

    /// The DHCPv6 server, once one runs.
    pub fn dhcp(&self) -> Option<&Dhcp6Handle> {
        self.dhcp.as_ref()
    }

    /// Follow a new model: stop what is gone, update what changed, start what is new.
    pub async fn update(&mut self, m: &Model, delegated: Option<Ipv6Net>) {
        let want = wanted(m, delegated);
        for s in m.segments6() {
            if !want.iter().any(|w| w.segment == s.segment) {
                tracing::info!(segment = %s.segment, "IPv6 waits for a delegated prefix");
            }
        }
        let names: Vec<&str> = want.iter().map(|w| w.segment.as_str()).collect();
        // Gone (or moved to another interface): final RA, DHCPv6 off, address off.
        let gone: Vec<String> = self
            .running
            .iter()
            .filter(|(n, r)| {
                !names.contains(&n.as_str())
                    || want
                        .iter()
                        .any(|w| &w.segment == *n && w.interface != r.wanted.interface)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            let r = self.running.remove(&n).expect("listed");
            r.ra.stop().await;
            if let Some(d) = &self.dhcp
                && r.wanted.dhcp.is_some()
            {
                let _ = d.remove_segment(&n).await;
            }
            if r.wanted.own_address {
                del_address(&r.wanted.interface, r.wanted.gateway).await;
            }
            tracing::info!(segment = %n, "IPv6 stopped");
        }
        if self.dhcp.is_none() && want.iter().any(|w| w.dhcp.is_some()) {
            match crate::dhcp6::serve6(Vec::new(), &self.dir, Default::default()).await {
                Ok(h) => self.dhcp = Some(h),
                Err(e) => tracing::error!("the DHCPv6 server could not start: {e}"),
            }
        }
        for w in want {
            if let Some(r) = self.running.get(&w.segment)
                && r.wanted == w
            {
                continue;
            }
            if w.own_address
                && let Err(e) = add_address(&w.interface, w.gateway).await
            {
                tracing::error!(segment = %w.segment, "gateway6 address: {e}");
            }
            match self.running.get_mut(&w.segment) {
                Some(r) => {
                    if r.wanted.own_address && r.wanted.gateway != w.gateway {
                        del_address(&w.interface, r.wanted.gateway).await;
                    }
                    r.ra.update(w.ra.clone());
                    if let Some(d) = &self.dhcp {
                        match &w.dhcp {
                            Some(seg) => {
                                if let Err(e) = d.add_segment(seg.clone()) {
                                    tracing::error!(segment = %w.segment, "DHCPv6: {e}");
                                }
                            }
                            None if r.wanted.dhcp.is_some() => {
                                let _ = d.remove_segment(&w.segment).await;
                            }
                            None => {}
                        }
                    }
                    tracing::info!(segment = %w.segment, "IPv6 updated");
                    r.wanted = w;
                }
                None => {
                    let ra = match crate::ra::spawn(&w.interface, w.ra.clone()) {
                        Ok(h) => h,
                        Err(e) => {
                            tracing::error!(segment = %w.segment, interface = %w.interface, "router advertisements could not start: {e}");
                            continue;
                        }
                    };
                    if let (Some(d), Some(seg)) = (&self.dhcp, &w.dhcp)
                        && let Err(e) = d.add_segment(seg.clone())
                    {
                        tracing::error!(segment = %w.segment, "DHCPv6: {e}");
                    }
                    tracing::info!(segment = %w.segment, interface = %w.interface, gateway6 = %w.gateway, dhcp6 = w.dhcp.is_some(), "IPv6 serving");
                    self.running
                        .insert(w.segment.clone(), Running { wanted: w, ra });
                }
            }
        }
    }

    /// Final RAs (router lifetime 0) on every segment, DHCPv6 off. Addresses stay, like the
    /// ruleset.
    pub async fn stop(self) {
        for (_, r) in self.running {
            r.ra.stop().await;
        }
        if let Some(d) = self.dhcp {
            d.shutdown().await;
        }
    }
}

/// What decides the IPv6 services of a model (compared by the engine after every job).
pub fn key(m: &Model, delegated: Option<Ipv6Net>) -> Vec<Wanted6> {
    wanted(m, delegated)
}

/// The live DHCPv6 leases of a state directory (safe while the server writes them).
pub fn read_leases6(state_dir: &Path, segment: Option<&str>) -> Vec<crate::dhcp6::Lease6> {
    let mut v =
        crate::dhcp6::read_leases6(&super::dhcp_dir(state_dir), crate::dhcp::leases::unix_now())
            .unwrap_or_default();
    if let Some(s) = segment {
        v.retain(|l| l.segment == s);
    }
    v
}
