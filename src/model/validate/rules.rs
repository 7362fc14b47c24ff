//! [[rules]]: who may reach whom, with which protocols and ports.

use super::*;

/// The rules, and the names taken so far (a forward may not reuse one).
pub(super) fn check(
    v: &mut V,
    cr: &[config::Rule],
    names: &Names,
) -> (Vec<Rule>, BTreeMap<String, usize>) {
    let mut rules = Vec::new();
    let mut rule_names: BTreeMap<String, usize> = BTreeMap::new();
    for (i, r) in cr.iter().enumerate() {
        let p = format!("rules[{i}]");
        let name_ok = entry_name_ok(&r.name);
        if !name_ok {
            v.err(
                format!("{p}.name"),
                format!(
                    "rule name `{}` must be 1-40 characters of a-z, A-Z, 0-9, - _ .",
                    r.name
                ),
            );
        } else if let Some(j) = rule_names.insert(r.name.clone(), i) {
            v.err(
                format!("{p}.name"),
                format!("rule name `{}` is already used by rules[{j}]", r.name),
            );
        }
        let from = names.endpoint(&r.from);
        let to = names.endpoint(&r.to);
        if from.is_none() {
            v.err(
                format!("{p}.from"),
                format!(
                    "`{}` is not a segment, a group, `internet` or `any`",
                    r.from
                ),
            );
        }
        if to.is_none() {
            v.err(
                format!("{p}.to"),
                format!(
                    "`{}` is not a segment, a group, `internet`, `gateway` or `any`",
                    r.to
                ),
            );
        }
        let service = v.service(&p, r.proto.as_ref(), r.ports.as_ref());
        let (Some(from), Some(to), Some(service)) = (from, to, service) else {
            continue;
        };
        if from == Endpoint::Gateway {
            v.err(format!("{p}.from"), "`gateway` can only be a destination; the gateway's own egress is set by system.gateway_egress");
            continue;
        }
        if from == to && from != Endpoint::Any {
            match &from {
                Endpoint::Segment(s) => v.warn(format!("{p}.to"), format!("traffic inside segment `{s}` never crosses the gateway: only the host firewalls from `bulkhead hostrules` enforce this rule")),
                Endpoint::Internet => v.err(format!("{p}.to"), "traffic from the internet to the internet is not routed by the gateway"),
                _ => {}
            }
        }
        rules.push(Rule {
            name: r.name.clone(),
            description: r.description.clone(),
            from,
            to,
            service,
            log: r.log.unwrap_or(false),
            loc: v.loc(&p),
        });
    }
    (rules, rule_names)
}
