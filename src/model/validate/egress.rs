//! [egress.NAME]: egress profiles, and `system.gateway_egress` which names one.

use super::*;

pub(super) fn check(
    v: &mut V,
    ce: &[(String, config::EgressProfile)],
    sys: &config::System,
    egress_names: &BTreeSet<String>,
) -> (Vec<EgressProfile>, Option<String>) {
    let mut egress = Vec::new();
    for (n, e) in ce {
        let p = format!("egress.{n}");
        let mut allow = Vec::new();
        for (i, s) in e.allow.iter().enumerate() {
            if let Some(svc) =
                v.service(&format!("{p}.allow[{i}]"), Some(&s.proto), s.ports.as_ref())
            {
                allow.push(svc);
            }
        }
        if e.allow.is_empty() {
            v.warn(format!("{p}.allow"), "profile allows nothing");
        }
        egress.push(EgressProfile {
            name: n.clone(),
            description: e.description.clone(),
            allow,
        });
    }
    let gateway_egress = sys.gateway_egress.clone();
    if let Some(g) = &gateway_egress
        && !egress_names.contains(g)
    {
        v.err(
            "system.gateway_egress",
            format!("no egress profile named `{g}`"),
        );
    }
    (egress, gateway_egress)
}
