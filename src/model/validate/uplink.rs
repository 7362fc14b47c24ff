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
            Uplink {
                interface: u.interface.clone(),
                addressing,
                masquerade: u.masquerade.unwrap_or(true),
                mtu,
            }
        }
    }
}
