//! [groups.NAME]: named address sets (members as addresses, CIDR blocks or ranges, IPv4 and
//! IPv6 mixed).

use super::*;

pub(super) fn check(v: &mut V, cg: &[(String, config::Group)]) -> Vec<Group> {
    let mut groups = Vec::new();
    for (n, g) in cg {
        let p = format!("groups.{n}");
        let mut members = Vec::new();
        let mut members6 = Vec::new();
        for (i, m) in g.members.iter().enumerate() {
            let mp = format!("{p}.members[{i}]");
            if m.contains(':') {
                match AddrRange6::parse(m) {
                    Ok(r) => match [r.lo, r.hi].into_iter().find_map(addr::v6_special) {
                        Some(why) => v.err(
                            mp,
                            format!(
                                "`{m}` is {why}; a group member must be a global or ULA address"
                            ),
                        ),
                        None => members6.push(r),
                    },
                    Err(e) => v.err(mp, e),
                }
                continue;
            }
            match AddrRange::parse(m) {
                Ok(r) => members.push(r),
                Err(e) => v.err(mp, e),
            }
        }
        groups.push(Group {
            name: n.clone(),
            description: g.description.clone(),
            members,
            loc: v.loc(&p),
            members6,
        });
    }
    groups
}
