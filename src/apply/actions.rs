//! What an apply does to links, addresses and routes, and what it removes afterwards,
//! computed once from the plan, the live system and the record of what Bulkhead created:
//! [`super::Applier::diff`] lists these actions, [`super::Applier::apply`] carries them out.
//! (Sysctls and the firewall have their own comparisons, in `sysctl` and `apply`.)

use std::net::IpAddr;

use ipnet::IpNet;

use super::netlink::{self, Netlink, NetlinkError};
use super::state::{Created, CreatedAddress, CreatedLink};
use super::{Change, Step};
use crate::plan::{LinkKind, Plan};

/// One change to links, addresses or routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A planned port, a VLAN's trunk or a route's device that does not exist: the apply
    /// fails here.
    Missing {
        step: Step,
        name: String,
        role: String,
    },
    /// A link of the planned name that is not the planned VLAN (and not one Bulkhead created):
    /// the apply fails here.
    Conflict {
        name: String,
        want: String,
    },
    /// A VLAN Bulkhead created whose id or trunk changed in the config: deleted, then created
    /// as planned.
    Recreate {
        name: String,
        was_parent: String,
        was_id: u16,
        parent: String,
        id: u16,
        mtu: Option<u32>,
        up: bool,
    },
    /// A planned VLAN that does not exist: created (with its MTU, and up when planned).
    Create {
        name: String,
        parent: String,
        id: u16,
        mtu: Option<u32>,
        up: bool,
    },
    SetMtu {
        name: String,
        from: u32,
        to: u32,
    },
    AddAddress {
        dev: String,
        address: IpNet,
    },
    SetUp {
        name: String,
    },
    /// A default route: IPv4 (`[uplink] gateway`) or IPv6 (`[uplink] gateway6`).
    AddRoute {
        via: IpAddr,
        dev: String,
    },
    /// Another default route exists: the planned one is not added (the apply says so).
    OtherRoute {
        via: IpAddr,
        dev: String,
    },
    /// An address Bulkhead added that the plan no longer lists.
    RemoveAddress {
        dev: String,
        address: IpNet,
    },
    /// A VLAN Bulkhead created that the plan no longer lists.
    RemoveLink {
        name: String,
        id: u16,
    },
}

impl Action {
    /// Whether the action creates (or recreates) an interface, or stands for one that is
    /// missing: until it is done, settings of that interface are still to be written.
    pub fn creates(&self) -> bool {
        matches!(
            self,
            Action::Missing { .. }
                | Action::Conflict { .. }
                | Action::Recreate { .. }
                | Action::Create { .. }
        )
    }
}

const CLEANUP: &str = "created by Bulkhead, no longer planned";

impl Action {
    pub fn step(&self) -> Step {
        match self {
            Action::Missing { step, .. } => *step,
            Action::AddRoute { .. } | Action::OtherRoute { .. } => Step::Routes,
            Action::RemoveAddress { .. } | Action::RemoveLink { .. } => Step::Cleanup,
            _ => Step::Links,
        }
    }

    pub fn object(&self) -> String {
        match self {
            Action::Missing { name, .. }
            | Action::Conflict { name, .. }
            | Action::Recreate { name, .. }
            | Action::Create { name, .. }
            | Action::SetMtu { name, .. }
            | Action::SetUp { name }
            | Action::RemoveLink { name, .. } => name.clone(),
            Action::AddAddress { dev, address } | Action::RemoveAddress { dev, address } => {
                format!("{dev}/{address}")
            }
            Action::AddRoute { via, dev } | Action::OtherRoute { via, dev } => {
                format!("default via {via} dev {dev}")
            }
        }
    }

    /// The change as `diff` lists it (None: nothing would change).
    pub fn planned(&self) -> Option<Change> {
        let detail = match self {
            Action::Missing { step, role, .. } => match step {
                Step::Links if !role.starts_with("trunk of") => {
                    "missing (a port: must exist, apply will fail)".to_string()
                }
                _ => format!("missing ({role}: must exist, apply will fail)"),
            },
            Action::Conflict { want, .. } => format!("exists but is not {want} (apply will fail)"),
            Action::Recreate {
                was_parent,
                was_id,
                parent,
                id,
                ..
            } => format!("vlan {was_id} on {was_parent}: recreate as vlan {id} on {parent}"),
            Action::Create { parent, id, .. } => format!("missing: create vlan {id} on {parent}"),
            Action::SetMtu { from, to, .. } => format!("mtu {from} -> {to}"),
            Action::AddAddress { .. } => "address to add".into(),
            Action::SetUp { .. } => "down -> up".into(),
            Action::AddRoute { .. } => "route to add".into(),
            Action::OtherRoute { .. } => return None,
            Action::RemoveAddress { .. } => format!("address to remove ({CLEANUP})"),
            Action::RemoveLink { .. } => format!("link to remove ({CLEANUP})"),
        };
        Some(self.change(detail))
    }

    /// The change as an apply that carried it out reports it.
    pub fn done(&self) -> Change {
        let detail = match self {
            Action::Recreate {
                was_parent,
                was_id,
                parent,
                id,
                ..
            } => format!(
                "removed vlan {was_id} on {was_parent} and created it as vlan {id} on {parent}"
            ),
            Action::Create { parent, id, .. } => format!("created vlan {id} on {parent}"),
            Action::SetMtu { from, to, .. } => format!("mtu {from} -> {to}"),
            Action::AddAddress { .. } => "address added".into(),
            Action::SetUp { .. } => "up".into(),
            Action::AddRoute { .. } => "added".into(),
            Action::RemoveAddress { .. } => format!("address removed ({CLEANUP})"),
            Action::RemoveLink { .. } => format!("link removed ({CLEANUP})"),
            Action::Missing { .. } | Action::Conflict { .. } | Action::OtherRoute { .. } => {
                String::new()
            }
        };
        self.change(detail)
    }

    fn change(&self, detail: String) -> Change {
        Change {
            step: self.step(),
            object: self.object(),
            detail,
        }
    }
}

/// An apply's link, address and route actions, in the order they are carried out, and what
/// it removes after the firewall is loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actions {
    pub links: Vec<Action>,
    pub cleanup: Vec<Action>,
}

impl Actions {
    /// Everything, as `diff` lists it.
    pub fn planned(&self) -> impl Iterator<Item = Change> + '_ {
        self.links
            .iter()
            .chain(&self.cleanup)
            .filter_map(Action::planned)
    }
}

/// Is `c` an address the plan wants?
pub fn wanted_address(plan: &Plan, c: &CreatedAddress) -> bool {
    plan.links
        .iter()
        .any(|l| l.name == c.dev && l.addresses.contains(&c.address))
}

/// Is `c` a VLAN the plan wants (same name, trunk and id)?
pub fn wanted_link(plan: &Plan, c: &CreatedLink) -> bool {
    plan.links.iter().any(|l| {
        l.name == c.name
            && l.kind
                == LinkKind::Vlan {
                    parent: c.parent.clone(),
                    id: c.id,
                }
    })
}

/// What a planned default route `via` on `dev` needs, given the kernel's default routes of its
/// family (gateway, output interface): nothing when it is in place (no drift), the route, or
/// "left alone" when another default route is there (the kernel refuses a second one with
/// EEXIST: one learned from the upstream's RAs or set by hand stays).
fn default_route(
    net: &dyn Netlink,
    coming: &[&str],
    via: IpAddr,
    dev: &str,
    defaults: &[(Option<IpAddr>, Option<u32>)],
) -> Result<Option<Action>, NetlinkError> {
    let idx = net.link(dev)?.map(|l| l.index);
    let coming = coming.contains(&dev);
    if idx.is_none() && !coming {
        return Ok(Some(Action::Missing {
            step: Step::Routes,
            name: dev.to_string(),
            role: "route device".into(),
        }));
    }
    if !coming && defaults.contains(&(Some(via), idx)) {
        return Ok(None);
    }
    let others = defaults
        .iter()
        .any(|d| !(coming && idx.is_some() && d.1 == idx));
    let dev = dev.to_string();
    Ok(Some(if others {
        Action::OtherRoute { via, dev }
    } else {
        Action::AddRoute { via, dev }
    }))
}

/// Compare the plan with the live links, addresses and routes (reads only).
pub fn compute(net: &dyn Netlink, plan: &Plan, rec: &Created) -> Result<Actions, NetlinkError> {
    let mut a = Actions::default();
    // links that do not exist now but will once their actions ran (their index changes)
    let mut coming: Vec<&str> = Vec::new();
    for lp in &plan.links {
        let existing = net.link(&lp.name)?;
        let all_addresses = |v: &mut Vec<Action>| {
            v.extend(lp.addresses.iter().map(|a| Action::AddAddress {
                dev: lp.name.clone(),
                address: *a,
            }))
        };
        let link = match (existing, &lp.kind) {
            (Some(s), LinkKind::Vlan { parent, id }) => {
                let was = rec.links.iter().find(|c| c.name == lp.name);
                if let Some(c) = was
                    && (c.id != *id || &c.parent != parent)
                    && netlink::is_vlan(&s)
                {
                    if net.link(parent)?.is_none() {
                        a.links.push(Action::Missing {
                            step: Step::Links,
                            name: parent.clone(),
                            role: format!("trunk of {}", lp.name),
                        });
                        continue;
                    }
                    a.links.push(Action::Recreate {
                        name: lp.name.clone(),
                        was_parent: c.parent.clone(),
                        was_id: c.id,
                        parent: parent.clone(),
                        id: *id,
                        mtu: lp.mtu,
                        up: lp.up,
                    });
                    all_addresses(&mut a.links);
                    coming.push(&lp.name);
                    continue;
                }
                let p = net.link(parent)?;
                if !netlink::is_vlan(&s)
                    || s.vlan_id != Some(*id)
                    || p.is_none_or(|p| Some(p.index) != s.parent)
                {
                    a.links.push(Action::Conflict {
                        name: lp.name.clone(),
                        want: format!("vlan {id} on {parent}"),
                    });
                    continue;
                }
                s
            }
            (Some(s), LinkKind::Port) => s,
            (None, LinkKind::Port) => {
                a.links.push(Action::Missing {
                    step: Step::Links,
                    name: lp.name.clone(),
                    role: lp.role.clone(),
                });
                continue;
            }
            (None, LinkKind::Vlan { parent, id }) => {
                if net.link(parent)?.is_none() {
                    a.links.push(Action::Missing {
                        step: Step::Links,
                        name: parent.clone(),
                        role: format!("trunk of {}", lp.name),
                    });
                    continue;
                }
                a.links.push(Action::Create {
                    name: lp.name.clone(),
                    parent: parent.clone(),
                    id: *id,
                    mtu: lp.mtu,
                    up: lp.up,
                });
                all_addresses(&mut a.links);
                coming.push(&lp.name);
                continue;
            }
        };
        if let Some(to) = lp.mtu
            && link.mtu != to
        {
            a.links.push(Action::SetMtu {
                name: lp.name.clone(),
                from: link.mtu,
                to,
            });
        }
        let have = net.addresses(link.index)?;
        for addr in lp.addresses.iter().filter(|x| !have.contains(x)) {
            a.links.push(Action::AddAddress {
                dev: lp.name.clone(),
                address: *addr,
            });
        }
        if lp.up && !link.up {
            a.links.push(Action::SetUp {
                name: lp.name.clone(),
            });
        }
    }

    let defaults: Vec<_> = net
        .default_routes()?
        .into_iter()
        .map(|d| (d.via.map(IpAddr::V4), d.oif))
        .collect();
    for rt in &plan.routes {
        if rt.dst.prefix_len() != 0 {
            tracing::warn!(route = %rt.dst, "only default routes are applied");
            continue;
        }
        a.links.extend(default_route(
            net,
            &coming,
            IpAddr::V4(rt.via),
            &rt.dev,
            &defaults,
        )?);
    }
    // the IPv6 default route of a static uplink address6
    let defaults6: Vec<_> = if plan.routes6.is_empty() {
        Vec::new()
    } else {
        net.default_routes6()?
            .into_iter()
            .map(|d| (d.via.map(IpAddr::V6), d.oif))
            .collect()
    };
    for rt in &plan.routes6 {
        a.links.extend(default_route(
            net,
            &coming,
            IpAddr::V6(rt.via),
            &rt.dev,
            &defaults6,
        )?);
    }

    // removed after the firewall: what Bulkhead created and the plan no longer lists (a
    // recreated VLAN's old addresses go with it)
    for c in &rec.addresses {
        if wanted_address(plan, c) || coming.contains(&c.dev.as_str()) {
            continue;
        }
        if let Some(l) = net.link(&c.dev)?
            && net.addresses(l.index)?.contains(&c.address)
        {
            a.cleanup.push(Action::RemoveAddress {
                dev: c.dev.clone(),
                address: c.address,
            });
        }
    }
    for c in &rec.links {
        if wanted_link(plan, c) || coming.contains(&c.name.as_str()) {
            continue;
        }
        if let Some(l) = net.link(&c.name)?
            && netlink::is_vlan(&l)
            && l.vlan_id == Some(c.id)
        {
            a.cleanup.push(Action::RemoveLink {
                name: c.name.clone(),
                id: c.id,
            });
        }
    }
    Ok(a)
}
