//! [groups.NAME]: named address sets (members as addresses, CIDR blocks or ranges).

use super::*;

pub(super) fn check(v: &mut V, cg: &[(String, config::Group)]) -> Vec<Group> {
    let mut groups = Vec::new();
    for (n, g) in cg {
        let p = format!("groups.{n}");
        let mut members = Vec::new();
        for (i, m) in g.members.iter().enumerate() {
            match AddrRange::parse(m) {
                Ok(r) => members.push(r),
                Err(e) => v.err(format!("{p}.members[{i}]"), e),
            }
        }
        groups.push(Group {
            name: n.clone(),
            description: g.description.clone(),
            members,
            loc: v.loc(&p),
        });
    }
    groups
}
