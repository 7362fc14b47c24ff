//! [[forwards]]: port forwards from the uplink to a host in a segment.

use super::*;

pub(super) fn check(
    v: &mut V,
    cf: &[config::Forward],
    rule_names: &mut BTreeMap<String, usize>,
    segments: &[Segment],
    names: &Names,
) -> Vec<Forward> {
    let mut forwards: Vec<Forward> = Vec::new();
    for (i, f) in cf.iter().enumerate() {
        let p = format!("forwards[{i}]");
        let name_ok = entry_name_ok(&f.name);
        if !name_ok {
            v.err(
                format!("{p}.name"),
                format!(
                    "forward name `{}` must be 1-40 characters of a-z, A-Z, 0-9, - _ .",
                    f.name
                ),
            );
        } else if let Some(j) = rule_names.insert(f.name.clone(), usize::MAX) {
            let other = if j == usize::MAX {
                "another forward".to_string()
            } else {
                format!("rules[{j}]")
            };
            v.err(
                format!("{p}.name"),
                format!("name `{}` is already used by {other}", f.name),
            );
        }
        let proto = match Proto::parse(&f.proto) {
            Ok(pr @ (Proto::Tcp | Proto::Udp)) => Some(pr),
            Ok(_) => {
                v.err(format!("{p}.proto"), "a port forward is tcp or udp");
                None
            }
            Err(e) => {
                v.err(format!("{p}.proto"), e);
                None
            }
        };
        let port = v.port(&format!("{p}.port"), &f.port);
        let to_port = f.to_port.and_then(|tp| {
            PortRange::check_number(tp)
                .map_err(|e| v.err(format!("{p}.to_port"), e))
                .ok()
        });
        if let (Some(pr), Some(_)) = (port, to_port)
            && pr.lo != pr.hi
        {
            v.err(
                format!("{p}.to_port"),
                "to_port cannot be combined with a port range (ranges map one to one)",
            );
        }
        let to = match config::parse_ipv4(&f.to) {
            Ok(a) => match segments.iter().find(|s| s.subnet.contains(&a)) {
                Some(s) if s.gateway == a => {
                    v.err(format!("{p}.to"), format!("{a} is the gateway itself"));
                    None
                }
                Some(s) => Some((a, s.name.clone())),
                None => {
                    v.err(format!("{p}.to"), format!("{a} is not inside any segment"));
                    None
                }
            },
            Err(e) => {
                v.err(format!("{p}.to"), e);
                None
            }
        };
        let from = match f.from.as_deref() {
            None => Some(Endpoint::Internet),
            Some(s) => match names.endpoint(s) {
                Some(e @ (Endpoint::Internet | Endpoint::Any | Endpoint::Group(_))) => Some(e),
                _ => {
                    v.err(
                        format!("{p}.from"),
                        format!("`{s}` is not a group, `internet` or `any`"),
                    );
                    None
                }
            },
        };
        let (Some(proto), Some(port), Some((to, to_segment)), Some(from)) = (proto, port, to, from)
        else {
            continue;
        };
        if let Some(o) = forwards
            .iter()
            .find(|o| o.proto == proto && (o.port.lo <= port.hi && port.lo <= o.port.hi))
        {
            v.err(
                format!("{p}.port"),
                format!(
                    "{} port {port} is already forwarded by `{}`",
                    proto.name(),
                    o.name
                ),
            );
            continue;
        }
        forwards.push(Forward {
            name: f.name.clone(),
            description: f.description.clone(),
            proto,
            port,
            to,
            to_segment,
            to_port,
            from,
            log: f.log.unwrap_or(false),
            loc: v.loc(&p),
        });
    }
    forwards
}
