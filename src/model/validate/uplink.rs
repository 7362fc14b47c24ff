//! [uplink]: the interface to the outside, DHCP or a static address with its gateway.

use super::*;

pub(super) fn check(v: &mut V, up: Option<&config::Uplink>) -> Uplink {
    match up {
        None => {
            v.err(
                "uplink",
                "missing [uplink] section: the gateway needs an uplink interface",
            );
            Uplink {
                interface: String::new(),
                addressing: UplinkAddressing::Dhcp,
                masquerade: true,
                mtu: None,
                address6: Uplink6Addressing::None,
                prefix_delegation: None,
            }
        }
        Some(u) => {
            v.ifname("uplink.interface", &u.interface);
            let addressing = match u.address.as_deref() {
                None | Some("dhcp") => {
                    if u.gateway.is_some() {
                        v.err(
                            "uplink.gateway",
                            "a gateway is given only with a static address; DHCP supplies it",
                        );
                    }
                    UplinkAddressing::Dhcp
                }
                Some(a) => match a.parse::<Ipv4Net>() {
                    Ok(net) => {
                        let gateway = match u.gateway.as_deref() {
                            None => None,
                            Some(g) => match config::parse_ipv4(g) {
                                Ok(g) if net.contains(&g) && g != net.addr() => Some(g),
                                Ok(g) if g == net.addr() => {
                                    v.err(
                                        "uplink.gateway",
                                        format!("gateway {g} is the uplink's own address"),
                                    );
                                    None
                                }
                                Ok(g) => {
                                    v.err(
                                        "uplink.gateway",
                                        format!(
                                            "gateway {g} is outside the uplink subnet {}",
                                            net.trunc()
                                        ),
                                    );
                                    None
                                }
                                Err(e) => {
                                    v.err("uplink.gateway", e);
                                    None
                                }
                            },
                        };
                        UplinkAddressing::Static {
                            address: net,
                            gateway,
                        }
                    }
                    Err(_) => {
                        v.err(
                            "uplink.address",
                            format!("`{a}` is neither \"dhcp\" nor an address with prefix like 203.0.113.2/24"),
                        );
                        UplinkAddressing::Dhcp
                    }
                },
            };
            let mtu = v.mtu("uplink.mtu", u.mtu);
            let address6 = address6(v, u);
            let prefix_delegation = match u.prefix_delegation {
                None => None,
                Some(n) if (48..=64).contains(&n) => Some(n as u8),
                Some(n) => {
                    v.err(
                        "uplink.prefix_delegation",
                        format!("prefix length {n} is out of range 48-64"),
                    );
                    None
                }
            };
            Uplink {
                interface: u.interface.clone(),
                addressing,
                masquerade: u.masquerade.unwrap_or(true),
                mtu,
                address6,
                prefix_delegation,
            }
        }
    }
}

/// `[uplink] address6` and `gateway6`.
fn address6(v: &mut V, u: &config::Uplink) -> Uplink6Addressing {
    let dynamic = |v: &mut V, a| {
        if u.gateway6.is_some() {
            v.err(
                "uplink.gateway6",
                "gateway6 is given only with a static address6; the upstream's router advertisements supply it",
            );
        }
        a
    };
    match u.address6.as_deref() {
        None | Some("none") => {
            if u.gateway6.is_some() {
                v.err(
                    "uplink.gateway6",
                    "gateway6 needs a static address6 = \"ADDRESS/PREFIX\"",
                );
            }
            Uplink6Addressing::None
        }
        Some("slaac") => dynamic(v, Uplink6Addressing::Slaac),
        Some("dhcpv6") => dynamic(v, Uplink6Addressing::Dhcpv6),
        Some(a) => {
            let net = match a.parse::<Ipv6Net>() {
                Ok(n) => n,
                Err(_) => {
                    v.err(
                        "uplink.address6",
                        format!("`{a}` is neither \"none\", \"slaac\", \"dhcpv6\" nor an IPv6 address with prefix like 2001:db8::2/64"),
                    );
                    return Uplink6Addressing::None;
                }
            };
            if let Some(why) = addr::v6_special(net.addr()) {
                v.err(
                    "uplink.address6",
                    format!(
                        "{} is {why}; the uplink needs a global or ULA address",
                        net.addr()
                    ),
                );
                return Uplink6Addressing::None;
            }
            if net.addr() == net.network() && net.prefix_len() < 127 {
                v.err(
                    "uplink.address6",
                    format!("{net} is the subnet-router anycast address of its prefix; give the uplink's own address"),
                );
                return Uplink6Addressing::None;
            }
            let Some(g) = u.gateway6.as_deref() else {
                v.err(
                    "uplink.address6",
                    "a static address6 needs `gateway6` (the upstream router, e.g. fe80::1)",
                );
                return Uplink6Addressing::None;
            };
            let gateway = match g.trim().parse::<std::net::Ipv6Addr>() {
                Err(_) => {
                    v.err("uplink.gateway6", format!("`{g}` is not an IPv6 address"));
                    return Uplink6Addressing::None;
                }
                Ok(g) if g == net.addr() => {
                    v.err(
                        "uplink.gateway6",
                        format!("gateway6 {g} is the uplink's own address"),
                    );
                    return Uplink6Addressing::None;
                }
                Ok(g) => g,
            };
            let link_local = gateway.segments()[0] & 0xffc0 == 0xfe80;
            if !link_local && !net.contains(&gateway) {
                v.err(
                    "uplink.gateway6",
                    format!(
                        "gateway6 {gateway} is neither link-local (fe80::/10) nor inside the uplink prefix {}",
                        net.trunc()
                    ),
                );
                return Uplink6Addressing::None;
            }
            if !link_local && let Some(why) = addr::v6_special(gateway) {
                v.err("uplink.gateway6", format!("gateway6 {gateway} is {why}"));
                return Uplink6Addressing::None;
            }
            Uplink6Addressing::Static {
                address: net,
                gateway,
            }
        }
    }
}
