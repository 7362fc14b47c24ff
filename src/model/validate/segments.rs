//! [segments.NAME]: subnet, gateway, VLAN or port, MTU, internet access, the management
//! segment; each segment's [segments.NAME.dhcp] pool is checked in dhcp.rs.

use super::*;

pub(super) fn check(
    v: &mut V,
    segs: &[(String, config::Segment)],
    uplink: &Uplink,
    trunk: &Option<Trunk>,
    names: &Names,
    egress_names: &BTreeSet<String>,
    cx6: &super::segments6::Ctx,
) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    let mut vlan_ids: BTreeMap<u16, String> = BTreeMap::new();
    let mut ifnames: BTreeMap<String, String> = BTreeMap::new();
    for (n, s) in segs {
        let p = format!("segments.{n}");
        let subnet = match s.subnet.parse::<Ipv4Net>() {
            Ok(net) if net.addr() != net.network() => {
                v.err(
                    format!("{p}.subnet"),
                    format!(
                        "`{}` has host bits set; did you mean `{}`?",
                        s.subnet,
                        net.trunc()
                    ),
                );
                None
            }
            Ok(net) if net.prefix_len() > 30 => {
                v.err(
                    format!("{p}.subnet"),
                    format!("subnet {net} is too small for a segment (at most /30)"),
                );
                None
            }
            Ok(net) => Some(net),
            Err(_) => {
                v.err(
                    format!("{p}.subnet"),
                    format!("`{}` is not a subnet like 192.168.10.0/24", s.subnet),
                );
                None
            }
        };
        let gateway = match config::parse_ipv4(&s.gateway) {
            Ok(g) => {
                if let Some(net) = subnet {
                    if !net.contains(&g) {
                        v.err(
                            format!("{p}.gateway"),
                            format!("gateway {g} is outside the segment subnet {net}"),
                        );
                    } else if g == net.network() || g == net.broadcast() {
                        v.err(
                            format!("{p}.gateway"),
                            format!("gateway {g} is the network or broadcast address of {net}"),
                        );
                    }
                }
                Some(g)
            }
            Err(e) => {
                v.err(format!("{p}.gateway"), e);
                None
            }
        };
        let link = match (s.vlan, &s.interface) {
            (Some(_), Some(_)) => {
                v.err(
                    format!("{p}.interface"),
                    "a segment is either a VLAN (`vlan`) or a plain port (`interface`), not both",
                );
                None
            }
            (None, None) => {
                v.err(
                    p.clone(),
                    "a segment needs `vlan = ID` (on the trunk) or `interface = NAME`",
                );
                None
            }
            (Some(id), None) => {
                if !(1..=4094).contains(&id) {
                    v.err(
                        format!("{p}.vlan"),
                        format!("VLAN id {id} is out of range 1-4094"),
                    );
                    None
                } else if let Some(other) = vlan_ids.get(&(id as u16)) {
                    v.err(
                        format!("{p}.vlan"),
                        format!("VLAN id {id} is already used by segment `{other}`"),
                    );
                    None
                } else {
                    vlan_ids.insert(id as u16, n.clone());
                    match &trunk {
                        None => {
                            v.err(
                                format!("{p}.vlan"),
                                "a VLAN segment needs a [trunk] interface",
                            );
                            None
                        }
                        Some(t) => {
                            let ifname = s
                                .link_name
                                .clone()
                                .unwrap_or_else(|| format!("{}.{id}", t.interface));
                            let path = if s.link_name.is_some() {
                                format!("{p}.link_name")
                            } else {
                                format!("{p}.vlan")
                            };
                            v.ifname(&path, &ifname).then_some((
                                SegmentLink::Vlan {
                                    parent: t.interface.clone(),
                                    id: id as u16,
                                },
                                ifname,
                                path,
                            ))
                        }
                    }
                }
            }
            (None, Some(ifn)) => {
                if s.link_name.is_some() {
                    v.err(
                        format!("{p}.link_name"),
                        "link_name names a VLAN link; a port segment uses its `interface` name",
                    );
                }
                v.ifname(&format!("{p}.interface"), ifn)
                    .then(|| (SegmentLink::Port, ifn.clone(), format!("{p}.interface")))
            }
        };
        let (link, ifname) = match link {
            Some((l, ifn, path)) => {
                if ifn == uplink.interface {
                    v.err(path, format!("`{ifn}` is the uplink interface"));
                } else if trunk.as_ref().is_some_and(|t| t.interface == ifn) {
                    v.err(
                        path,
                        format!("`{ifn}` is the trunk interface; segments on it are VLANs"),
                    );
                } else if let Some(other) = ifnames.insert(ifn.clone(), n.clone()) {
                    v.err(
                        path,
                        format!("interface `{ifn}` is already used by segment `{other}`"),
                    );
                }
                (Some(l), ifn)
            }
            None => (None, String::new()),
        };
        let mtu = v.mtu(&format!("{p}.mtu"), s.mtu);
        if let (Some(m), Some(SegmentLink::Vlan { .. }), Some(t)) = (mtu, &link, &trunk) {
            let tm = t.mtu.unwrap_or(1500);
            if m > tm {
                v.err(
                    format!("{p}.mtu"),
                    format!("MTU {m} is larger than the trunk's MTU {tm}"),
                );
            }
        }
        let internet = match (s.internet.unwrap_or(false), &s.egress) {
            (true, Some(_)) => {
                v.err(format!("{p}.egress"), "`internet = true` allows all egress; `egress` limits it to a profile: choose one");
                InternetAccess::Full
            }
            (true, None) => InternetAccess::Full,
            (false, Some(e)) => {
                if !egress_names.contains(e) {
                    v.err(
                        format!("{p}.egress"),
                        format!("no egress profile named `{e}`"),
                    );
                }
                InternetAccess::Profile(e.clone())
            }
            (false, None) => InternetAccess::None,
        };
        let dhcp = match (&s.dhcp, subnet, gateway) {
            // A disabled pool is still checked, so it can be switched on safely later.
            (Some(d), Some(net), Some(gw)) => {
                super::dhcp::pool(v, &p, d, net, gw, names).filter(|_| d.enabled.unwrap_or(true))
            }
            _ => None,
        };
        let ipv6 = super::segments6::check(v, &p, s, &ifname, dhcp.as_ref(), mtu, cx6);
        if let (Some(l), Some(net), Some(gw)) = (link, subnet, gateway) {
            segments.push(Segment {
                name: n.clone(),
                description: s.description.clone(),
                link: l,
                ifname,
                subnet: net,
                gateway: gw,
                mtu,
                internet,
                management: s.management.unwrap_or(false),
                dhcp,
                loc: v.loc(&p),
                ipv6,
            });
        }
    }
    // subnet overlaps
    for i in 0..segments.len() {
        for j in 0..i {
            let (a, b) = (&segments[j], &segments[i]);
            if a.subnet.contains(&b.subnet.network()) || b.subnet.contains(&a.subnet.network()) {
                v.err(
                    format!("segments.{}.subnet", b.name),
                    format!(
                        "subnet {} overlaps segment `{}` ({})",
                        b.subnet, a.name, a.subnet
                    ),
                );
            }
        }
        if let UplinkAddressing::Static { address, .. } = &uplink.addressing {
            let s = &segments[i];
            let up = address.trunc();
            if up.contains(&s.subnet.network()) || s.subnet.contains(&up.network()) {
                v.err(
                    format!("segments.{}.subnet", s.name),
                    format!("subnet {} overlaps the uplink subnet {up}", s.subnet),
                );
            }
        }
    }
    super::segments6::across(v, &segments);
    super::segments6::against_uplink(v, &segments, uplink);
    // management segment
    let mgmt: Vec<&Segment> = segments.iter().filter(|s| s.management).collect();
    if segs.is_empty() {
        v.err(
            "",
            "no [segments.NAME] defined: the gateway has nothing to segment",
        );
    } else if mgmt.is_empty() && segs.len() == segments.len() {
        v.err(
            "segments",
            "no management segment: mark exactly one segment with `management = true`, or nobody can manage the gateway",
        );
    }
    for extra in mgmt.iter().skip(1) {
        v.err(
            format!("segments.{}.management", extra.name),
            format!(
                "segment `{}` is already the management segment; there can be only one",
                mgmt[0].name
            ),
        );
    }
    segments
}
