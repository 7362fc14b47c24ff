//! The plan with the prefix delegated to the uplink (DHCPv6 IA_PD) as an input.
//!
//! A segment with `subnet6 = "delegated"` and `prefix_id = N` gets the N-th /64 of the
//! delegated prefix. Everything in the plan that derives from that /64 is filled in here: the
//! segment's IPv6 set (`SEGMENT_v6`, used by the anti-spoofing rules of the segment and of
//! the uplink) and the gateway's address on the segment (`gateway6`/64 on its link: the
//! apply adds the new one and removes the old one it had added). A new delegated prefix is one new plan, applied like any other (one atomic
//! firewall load); without a delegation the sets stay empty, so a delegated segment forwards
//! no IPv6 while IPv4 is untouched.

use ipnet::{IpNet, Ipv6Net};

use super::Plan;
use super::ruleset::{Ruleset, set6};
use crate::model::{AddrRange6, Backend, Model, Prefix6};

/// The /64 of every delegated segment under `delegated`, in config order (segment name,
/// prefix). Segments whose `prefix_id` does not fit in the delegated prefix are left out.
pub fn segment_prefixes(m: &Model, delegated: Ipv6Net) -> Vec<(String, Ipv6Net)> {
    m.segments
        .iter()
        .filter_map(|s| {
            let x = s.ipv6.as_ref()?;
            match x.prefix {
                Prefix6::Delegated { .. } => Some((s.name.clone(), x.subnet6(Some(delegated))?)),
                Prefix6::Static(_) => None,
            }
        })
        .collect()
}

/// Fill the prefix-derived sets of a ruleset with the delegated segments' /64s.
pub fn fill_ruleset(rs: &mut Ruleset, m: &Model, delegated: Ipv6Net) {
    for (seg, net) in segment_prefixes(m, delegated) {
        let name = set6(&seg);
        if let Some(set) = rs.sets.iter_mut().find(|s| s.name == name && s.ipv6) {
            set.elements6 = vec![AddrRange6::from_net(net)];
        }
    }
}

/// The plan for a model with the prefix the uplink holds (`None`: no delegation yet, or lost).
pub fn build(m: &Model, backend: Option<Backend>, delegated: Option<Ipv6Net>) -> Plan {
    let mut p = super::build(m, backend);
    if let Some(d) = delegated {
        for s in &m.segments {
            let Some(x) = s.ipv6.as_ref() else { continue };
            if !matches!(x.prefix, Prefix6::Delegated { .. }) {
                continue;
            }
            let Some(gw) = x.gateway6(Some(d)) else {
                continue;
            };
            let role = format!("segment:{}", s.name);
            if let Some(l) = p.links.iter_mut().find(|l| l.role == role) {
                l.addresses
                    .push(IpNet::V6(Ipv6Net::new(gw, 64).expect("a /64")));
            }
        }
        fill_ruleset(&mut p.ruleset, m, d);
        p.firewall = super::render_firewall(&p.ruleset, p.backend, &p.source);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delegated_prefix_numbers_sets_and_addresses() {
        let (m, _) = crate::plan::load_str(
            "t.toml",
            "[uplink]\ninterface = \"wan0\"\nprefix_delegation = 56\n\
             [segments.lan]\ninterface = \"lan0\"\nsubnet = \"198.18.2.0/24\"\ngateway = \"198.18.2.1\"\nmanagement = true\nsubnet6 = \"delegated\"\nprefix_id = 1\n",
        )
        .unwrap();
        let lan = |p: &Plan| {
            p.links
                .iter()
                .find(|l| l.name == "lan0")
                .unwrap()
                .addresses
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
        };
        let none = build(&m, None, None);
        assert_eq!(lan(&none), ["198.18.2.1/24"]);
        let d: Ipv6Net = "2001:db8:100::/56".parse().unwrap();
        let p = build(&m, None, Some(d));
        assert_eq!(lan(&p), ["198.18.2.1/24", "2001:db8:100:1::1/64"]);
        let set = p.ruleset.sets.iter().find(|s| s.name == "lan_v6").unwrap();
        assert_eq!(
            set.elements6,
            [AddrRange6::from_net("2001:db8:100:1::/64".parse().unwrap())]
        );
        let crate::plan::FirewallText::Nftables { script } = &p.firewall else {
            panic!()
        };
        assert!(script.contains("2001:db8:100:1::/64"), "{script}");
        // the IPv4 side is the same plan with or without the prefix
        assert_eq!(p.dhcp, none.dhcp);
        assert_eq!(p.routes, none.routes);
    }
}
