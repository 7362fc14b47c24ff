//! `[system] ntp`: the servers reach the model in config order, and with
//! `system.gateway_egress` the gateway's output chain lets NTP out (UDP 123) to each server
//! given by address, and out of the uplink for servers given by name.

use bulkhead::plan::{self, Part};

const CONFIG: &str = r#"[system]
gateway_egress = "dns_only"
ntp = ["192.0.2.123", "ntp.example.net", "pool.example.org"]

[uplink]
interface = "wan0"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true

[egress.dns_only]
allow = [{ proto = "udp", ports = [53] }]
"#;

#[test]
fn ntp_servers_are_in_the_model_in_order() {
    let (m, _) = plan::load_str("ntp.toml", CONFIG).unwrap();
    let s: Vec<String> = m.ntp.iter().map(|s| s.to_string()).collect();
    assert_eq!(s, ["192.0.2.123", "ntp.example.net", "pool.example.org"]);
}

#[test]
fn gateway_egress_lets_ntp_out() {
    let (m, _) = plan::load_str("ntp.toml", CONFIG).unwrap();
    let fw = plan::build(&m, None).text(Some(Part::Firewall));
    let ntp: Vec<&str> = fw.lines().filter(|l| l.contains("dport 123")).collect();
    assert_eq!(
        ntp.len(),
        2,
        "one rule per address, one for all names:\n{fw}"
    );
    assert!(
        ntp.iter()
            .any(|l| l.contains("ip daddr 192.0.2.123") && l.contains("udp dport 123")),
        "{fw}"
    );
    assert!(
        ntp.iter()
            .any(|l| l.contains("oifname \"wan0\"") && l.contains("udp dport 123")),
        "{fw}"
    );
}

#[test]
fn without_ntp_nothing_changes() {
    let text = CONFIG.replace(
        "ntp = [\"192.0.2.123\", \"ntp.example.net\", \"pool.example.org\"]\n",
        "",
    );
    let (m, _) = plan::load_str("ntp.toml", &text).unwrap();
    assert!(m.ntp.is_empty());
    let fw = plan::build(&m, None).text(Some(Part::Firewall));
    assert!(!fw.contains("dport 123"), "{fw}");
}
