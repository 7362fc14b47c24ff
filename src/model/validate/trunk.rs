//! [trunk]: the interface that carries the VLAN segments.

use super::*;

pub(super) fn check(v: &mut V, t: Option<&config::Trunk>, uplink: &Uplink) -> Option<Trunk> {
    t.map(|t| {
        v.ifname("trunk.interface", &t.interface);
        if t.interface == uplink.interface {
            v.err(
                "trunk.interface",
                format!("`{}` is already the uplink", t.interface),
            );
        }
        Trunk {
            interface: t.interface.clone(),
            mtu: v.mtu("trunk.mtu", t.mtu),
        }
    })
}
