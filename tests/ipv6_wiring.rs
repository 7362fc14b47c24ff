//! What `bulkhead run` serves on the IPv6 segments of a model (pure mapping), and the DHCPv6
//! journal living beside the DHCPv4 one in the same state directory.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use bulkhead::dhcp::leases::{LeaseStore, StoreOptions, read_journal, read_leases};
use bulkhead::dhcp::{Lease, LeaseState};
use bulkhead::dhcp6::{Dhcp6Mode, Lease6};
use bulkhead::ra::Mode;
use bulkhead::supervisor::ipv6::wanted;

#[test]
fn the_dual_stack_config_maps_to_ras_and_dhcpv6_per_mode() {
    let path = common::root().join("tests/golden/dualstack.toml");
    let (m, _, _) = bulkhead::supervisor::gateway::load(&path, None).unwrap();
    let w = wanted(&m, None);
    let by = |n: &str| {
        w.iter()
            .find(|x| x.segment == n)
            .unwrap_or_else(|| panic!("{n} in {w:?}"))
    };
    // dmz: slaac (the default): RAs only.
    let dmz = by("dmz");
    assert_eq!(dmz.ra.mode, Mode::Slaac);
    assert!(dmz.dhcp.is_none());
    assert_eq!(dmz.gateway.to_string(), "fd00:10::1/64");
    // A static subnet6's gateway address is the apply's (it is in the plan).
    assert!(w.iter().all(|x| !x.own_address));
    assert_eq!(dmz.ra.prefixes[0].net.to_string(), "fd00:10::/64");
    assert_eq!(dmz.ra.domains, vec!["dmz.example.internal".to_string()]);
    // internal: stateful, its IPv6 DNS server in RDNSS and option 23, lease_time 10m.
    let internal = by("internal");
    assert_eq!(internal.ra.mode, Mode::Stateful);
    assert_eq!(
        internal.ra.dns,
        vec!["fd00:30::53".parse::<Ipv6Addr>().unwrap()]
    );
    let d = internal.dhcp.as_ref().unwrap();
    assert_eq!(d.mode, Dhcp6Mode::Stateful);
    assert_eq!(d.interface, internal.interface);
    assert_eq!(d.dns, internal.ra.dns);
    assert_eq!(
        (d.pool_start.to_string(), d.pool_end.to_string()),
        ("fd00:20::1000".into(), "fd00:20::1fff".into())
    );
    assert_eq!((d.valid_lifetime, d.preferred_lifetime), (600, 300));
    // server: stateless.
    let server = by("server");
    assert_eq!(server.ra.mode, Mode::Stateless);
    assert_eq!(server.dhcp.as_ref().unwrap().mode, Dhcp6Mode::Stateless);
    // Every segment with subnet6 is served, and only those.
    let n6 = m.segments6().count();
    assert_eq!(w.len(), n6);
    assert!(
        m.segments
            .iter()
            .filter(|s| s.ipv6.is_none())
            .all(|s| w.iter().all(|x| x.segment != s.name))
    );
}

#[test]
fn dhcpv6_journal_sits_beside_the_dhcpv4_one() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || StoreOptions {
        clock: || 1_000,
        ..StoreOptions::default()
    };
    let v4 = Lease {
        segment: "lan".into(),
        addr: Ipv4Addr::new(198, 18, 1, 10),
        mac: [2, 0, 0, 0, 0, 1],
        client_id: None,
        hostname: None,
        group: None,
        expires: 5_000,
        state: LeaseState::Bound,
    };
    let v6 = Lease6 {
        segment: "lan".into(),
        addr: "2001:db8:1::1000".parse().unwrap(),
        duid: Some(vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1]),
        iaid: 7,
        hostname: Some("pc".into()),
        expires: 5_000,
        state: LeaseState::Bound,
    };
    {
        // Both open at once in one directory: separate files, separate locks.
        let (s4, _) = LeaseStore::open(dir.path(), opts()).unwrap();
        let (s6, _) = LeaseStore::<Lease6>::open_journal(dir.path(), opts()).unwrap();
        s4.commit(vec![v4.clone()]).wait_blocking().unwrap();
        s6.commit(vec![v6.clone()]).wait_blocking().unwrap();
        // A second DHCPv6 store on the same directory is refused.
        assert!(LeaseStore::<Lease6>::open_journal(dir.path(), opts()).is_err());
    }
    assert_eq!(read_leases(dir.path(), 1_000).unwrap(), vec![v4.clone()]);
    assert_eq!(
        read_journal::<Lease6>(dir.path(), 1_000).unwrap(),
        vec![v6.clone()]
    );
    // A torn last DHCPv6 record (a crash mid-write) is cut off; the one before survives.
    let path = dir.path().join(bulkhead::dhcp6::JOURNAL_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let whole = bytes.len();
    let mut more = v6.clone();
    more.addr = "2001:db8:1::1001".parse().unwrap();
    bytes.extend_from_slice(&bulkhead::dhcp::leases::encode_journal([&more])[8..]);
    bytes.truncate(whole + 20);
    std::fs::write(&path, &bytes).unwrap();
    let (_s6, loaded) = LeaseStore::<Lease6>::open_journal(dir.path(), opts()).unwrap();
    assert_eq!(loaded, vec![v6]);
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, whole);
    // The DHCPv4 journal was not touched.
    assert_eq!(read_leases(dir.path(), 1_000).unwrap(), vec![v4]);
}
