//! The Applier's ordering and bookkeeping with in-memory fakes of every layer: covers the VLAN
//! paths (creation, recreation, removal) that this kernel (no 802.1Q) cannot run, and runs
//! without root.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::rc::Rc;

use bulkhead::apply::firewall::{FirewallError, LoadText, RuleCounter};
use bulkhead::apply::netlink::{DefaultRoute, LinkState};
use bulkhead::apply::sysctl::SysctlError;
use bulkhead::apply::{Applier, Firewall, Netlink, NetlinkError, Step, Sysctl};
use bulkhead::model::{self, Backend};
use bulkhead::plan::{self, LinkKind, Plan, SysctlPlan};
use ipnet::IpNet;

type Log = Rc<RefCell<Vec<String>>>;

#[derive(Default)]
struct World {
    links: Vec<LinkState>,
    addrs: Vec<(u32, IpNet)>,
    routes: Vec<DefaultRoute>,
    sysctl: BTreeMap<String, String>,
    fw: Option<LoadText>,
    next: u32,
    /// The next load of the full firewall is refused (as the kernel refuses a ruleset that
    /// names a device yet to be created).
    refuse_full_once: bool,
    /// Adding an address fails.
    fail_addresses: bool,
}

type W = Rc<RefCell<World>>;

struct Net(W, Log);
struct Sys(W, Log);
struct Fw(W, Log);

impl Netlink for Net {
    fn link(&self, name: &str) -> Result<Option<LinkState>, NetlinkError> {
        Ok(self
            .0
            .borrow()
            .links
            .iter()
            .find(|l| l.name == name)
            .cloned())
    }
    fn link_by_index(&self, index: u32) -> Result<Option<LinkState>, NetlinkError> {
        Ok(self
            .0
            .borrow()
            .links
            .iter()
            .find(|l| l.index == index)
            .cloned())
    }
    fn add_vlan(&self, name: &str, parent: u32, id: u16) -> Result<bool, NetlinkError> {
        let mut w = self.0.borrow_mut();
        if w.links.iter().any(|l| l.name == name) {
            return Ok(false);
        }
        w.next += 1;
        let index = w.next;
        w.links.push(LinkState {
            index,
            name: name.into(),
            mtu: 1500,
            up: false,
            kind: Some("vlan".into()),
            vlan_id: Some(id),
            parent: Some(parent),
        });
        self.1.borrow_mut().push(format!("add_vlan {name} {id}"));
        Ok(true)
    }
    fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let mut w = self.0.borrow_mut();
        w.links.iter_mut().find(|l| l.index == index).unwrap().mtu = mtu;
        Ok(())
    }
    fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        let mut w = self.0.borrow_mut();
        w.links.iter_mut().find(|l| l.index == index).unwrap().up = true;
        Ok(())
    }
    fn del_link(&self, index: u32) -> Result<bool, NetlinkError> {
        let mut w = self.0.borrow_mut();
        let n = w.links.len();
        let name = w
            .links
            .iter()
            .find(|l| l.index == index)
            .map(|l| l.name.clone());
        w.links.retain(|l| l.index != index);
        w.addrs.retain(|a| a.0 != index);
        self.1
            .borrow_mut()
            .push(format!("del_link {}", name.unwrap_or_default()));
        Ok(w.links.len() != n)
    }
    fn addresses(&self, index: u32) -> Result<Vec<IpNet>, NetlinkError> {
        Ok(self
            .0
            .borrow()
            .addrs
            .iter()
            .filter(|a| a.0 == index)
            .map(|a| a.1)
            .collect())
    }
    fn add_address(&self, index: u32, addr: IpNet) -> Result<bool, NetlinkError> {
        let mut w = self.0.borrow_mut();
        if w.fail_addresses {
            return Err(NetlinkError::Failed {
                op: "add address",
                object: addr.to_string(),
                errno: Some(22),
                message: "refused".into(),
            });
        }
        if w.addrs.contains(&(index, addr)) {
            return Ok(false);
        }
        w.addrs.push((index, addr));
        Ok(true)
    }
    fn del_address(&self, index: u32, addr: IpNet) -> Result<bool, NetlinkError> {
        let mut w = self.0.borrow_mut();
        let n = w.addrs.len();
        w.addrs.retain(|a| *a != (index, addr));
        Ok(w.addrs.len() != n)
    }
    fn default_routes(&self) -> Result<Vec<DefaultRoute>, NetlinkError> {
        Ok(self.0.borrow().routes.clone())
    }
    fn add_default_route(&self, via: Ipv4Addr, oif: u32) -> Result<bool, NetlinkError> {
        self.0.borrow_mut().routes.push(DefaultRoute {
            via: Some(via),
            oif: Some(oif),
        });
        Ok(true)
    }
}

impl Sysctl for Sys {
    fn read(&self, key: &str) -> Result<String, SysctlError> {
        let w = self.0.borrow();
        // Per-interface keys exist only while the interface does.
        let parts: Vec<&str> = key.split('.').collect();
        if let ["net", _, "conf", i, ..] = parts.as_slice()
            && !["all", "default"].contains(i)
            && !w.links.iter().any(|l| l.name == i.replace('/', "."))
        {
            return Err(SysctlError {
                key: key.into(),
                path: key.into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        // the kernel's defaults: IPv6 router advertisements and SLAAC on, the rest off
        let on = key.ends_with(".accept_ra") || key.ends_with(".autoconf");
        Ok(w.sysctl
            .get(key)
            .cloned()
            .unwrap_or_else(|| if on { "1" } else { "0" }.into()))
    }
    fn write(&self, key: &str, value: &str) -> Result<(), SysctlError> {
        self.0.borrow_mut().sysctl.insert(key.into(), value.into());
        self.1.borrow_mut().push(format!("sysctl {key}"));
        Ok(())
    }
}

impl Firewall for Fw {
    fn backend(&self) -> Backend {
        Backend::Nftables
    }
    fn is_loaded(&self) -> Result<bool, FirewallError> {
        Ok(self.0.borrow().fw.is_some())
    }
    fn snapshot(&self) -> Result<Option<String>, FirewallError> {
        Ok(self.0.borrow().fw.as_ref().map(|t| format!("{t:?}")))
    }
    fn load(&self, text: &LoadText, _work: &Path) -> Result<Vec<String>, FirewallError> {
        let LoadText::Nftables { script } = text else {
            unreachable!()
        };
        let what = if script.contains("rule:") {
            "full"
        } else {
            "fail-closed"
        };
        if what == "full" && std::mem::take(&mut self.0.borrow_mut().refuse_full_once) {
            self.1.borrow_mut().push("fw full refused".into());
            return Err(FirewallError::Parse {
                what: "load".into(),
                message: "no such device".into(),
            });
        }
        self.1.borrow_mut().push(format!("fw {what}"));
        self.0.borrow_mut().fw = Some(text.clone());
        Ok(vec![])
    }
    fn counters(&self) -> Result<Vec<RuleCounter>, FirewallError> {
        Ok(vec![])
    }
    fn set_list(&self, _: &str) -> Result<Vec<String>, FirewallError> {
        Ok(vec![])
    }
    fn set_add(&self, _: &str, _: &[IpNet]) -> Result<(), FirewallError> {
        Ok(())
    }
    fn set_del(&self, _: &str, _: &[IpNet]) -> Result<(), FirewallError> {
        Ok(())
    }
    fn set_sizes(&self) -> Result<Vec<(String, usize)>, FirewallError> {
        Ok(vec![])
    }
    fn remove_all(&self) -> Result<Vec<String>, FirewallError> {
        self.0.borrow_mut().fw = None;
        Ok(vec![])
    }
}

struct Setup {
    world: W,
    log: Log,
    dir: std::path::PathBuf,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        let mut w = World::default();
        for (i, n) in ["eth0", "eth1"].iter().enumerate() {
            w.links.push(LinkState {
                index: i as u32 + 1,
                name: n.to_string(),
                mtu: 1500,
                up: false,
                kind: None,
                vlan_id: None,
                parent: None,
            });
        }
        w.next = 10;
        let dir = std::env::temp_dir().join(format!("bh-fake-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Setup {
            world: Rc::new(RefCell::new(w)),
            log: Rc::default(),
            dir,
        }
    }

    fn applier(&self) -> Applier {
        Applier::with_parts(
            &self.dir,
            Box::new(Net(self.world.clone(), self.log.clone())),
            Box::new(Sys(self.world.clone(), self.log.clone())),
            Box::new(Fw(self.world.clone(), self.log.clone())),
        )
    }

    fn pos(&self, ev: &str) -> usize {
        self.log
            .borrow()
            .iter()
            .position(|e| e == ev)
            .unwrap_or_else(|| panic!("no `{ev}` in {:?}", self.log.borrow()))
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn shipped() -> Plan {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("overlay/etc/bulkhead/bulkhead.toml");
    let (m, _) = model::load(&p).unwrap();
    let mut plan = plan::build(&m, None);
    plan.sysctls.push(SysctlPlan {
        key: "net.ipv4.conf.eth0/10.rp_filter".into(),
        value: "2".into(),
    });
    plan
}

#[test]
fn order_vlans_and_idempotence_on_the_shipped_config() {
    let s = Setup::new("order");
    let plan = shipped();
    let a = s.applier();
    let r = a.apply(&plan).unwrap();
    // sysctls → fail-closed → vlans → the interface's own sysctl → full firewall.
    assert!(s.pos("sysctl net.ipv4.ip_forward") < s.pos("fw fail-closed"));
    assert!(s.pos("fw fail-closed") < s.pos("add_vlan eth0.10 10"));
    assert!(s.pos("add_vlan eth0.200 200") < s.pos("sysctl net.ipv4.conf.eth0/10.rp_filter"));
    assert!(s.pos("sysctl net.ipv4.conf.eth0/10.rp_filter") < s.pos("fw full"));
    // VLANs are created with router advertisements already off (the default.* keys come
    // first), and each one's own keys are set once it exists, before the full firewall.
    assert!(s.pos("sysctl net.ipv6.conf.default.accept_ra") < s.pos("add_vlan eth0.10 10"));
    assert!(s.pos("sysctl net.ipv6.conf.default.autoconf") < s.pos("add_vlan eth0.10 10"));
    assert!(s.pos("sysctl net.ipv6.conf.eth0.accept_ra") < s.pos("add_vlan eth0.10 10"));
    for id in [10, 20, 30, 100, 200] {
        for key in ["accept_ra", "autoconf"] {
            let k = format!("sysctl net.ipv6.conf.eth0/{id}.{key}");
            assert!(s.pos("add_vlan eth0.200 200") < s.pos(&k), "{k}");
            assert!(s.pos(&k) < s.pos("fw full"), "{k}");
        }
    }
    assert!(
        !s.log
            .borrow()
            .iter()
            .any(|e| e.starts_with("sysctl net.ipv6.conf.eth1.")),
        "the uplink's IPv6 settings are left to the kernel"
    );
    assert_eq!(r.generation, Some(1));
    {
        let w = s.world.borrow();
        for (name, id, addr) in [
            ("eth0.10", 10, "192.168.10.1/24"),
            ("eth0.100", 100, "192.168.100.1/24"),
        ] {
            let l = w.links.iter().find(|l| l.name == name).unwrap();
            assert_eq!(l.vlan_id, Some(id));
            assert_eq!(l.parent, Some(1));
            assert!(l.up);
            assert!(w.addrs.contains(&(l.index, addr.parse().unwrap())));
        }
    }
    let r2 = a.apply(&plan).unwrap();
    assert!(r2.changes.is_empty(), "{:?}", r2.changes);
    assert!(a.diff(&plan).unwrap().changes.is_empty());
}

#[test]
fn vlan_id_change_recreates_and_removed_segment_deletes_only_created_links() {
    let s = Setup::new("vlans");
    let mut plan = shipped();
    let a = s.applier();
    a.apply(&plan).unwrap();
    // eth0.10 becomes VLAN 11 under the same name; guest (eth0.200) goes away.
    for l in &mut plan.links {
        if l.name == "eth0.10" {
            l.kind = LinkKind::Vlan {
                parent: "eth0".into(),
                id: 11,
            };
        }
    }
    plan.links.retain(|l| l.name != "eth0.200");
    plan.sysctls.retain(|s| !s.key.contains(".eth0/200."));
    let r = a.apply(&plan).unwrap();
    let w = s.world.borrow();
    assert_eq!(
        w.links
            .iter()
            .find(|l| l.name == "eth0.10")
            .unwrap()
            .vlan_id,
        Some(11)
    );
    assert!(!w.links.iter().any(|l| l.name == "eth0.200"));
    assert!(
        w.links.iter().any(|l| l.name == "eth0"),
        "the trunk port stays"
    );
    assert!(
        r.changes
            .iter()
            .any(|c| c.step == Step::Cleanup && c.object == "eth0.200")
    );
    drop(w);
    // A VLAN-named link Bulkhead did not create, with the wrong id: refused, left alone.
    let mut foreign = plan.clone();
    foreign.links.push(bulkhead::plan::LinkPlan {
        name: "eth0.300".into(),
        kind: LinkKind::Vlan {
            parent: "eth0".into(),
            id: 300,
        },
        role: "segment:x".into(),
        mtu: None,
        addresses: vec![],
        dhcp_client: false,
        up: true,
    });
    s.world.borrow_mut().links.push(LinkState {
        index: 99,
        name: "eth0.300".into(),
        mtu: 1500,
        up: true,
        kind: Some("vlan".into()),
        vlan_id: Some(301),
        parent: Some(1),
    });
    let e = a.apply(&foreign).unwrap_err();
    assert_eq!(e.step(), Some(Step::Links));
    assert!(
        e.to_string()
            .contains("eth0.300 exists but is not vlan 300"),
        "{e}"
    );
    assert!(s.world.borrow().links.iter().any(|l| l.index == 99));
}

#[test]
fn diff_on_a_fresh_system_lists_everything_and_changes_nothing() {
    let s = Setup::new("diff");
    let plan = shipped();
    let a = s.applier();
    let d = a.diff(&plan).unwrap();
    let has = |step: Step, obj: &str| d.changes.iter().any(|c| c.step == step && c.object == obj);
    assert!(has(Step::Sysctls, "net.ipv4.ip_forward"));
    assert!(has(Step::Links, "eth0.30"));
    assert!(has(Step::Links, "eth0.30/192.168.30.1/24"));
    assert!(has(Step::Links, "eth0"), "trunk down -> up");
    assert!(has(Step::Firewall, "table inet bulkhead"));
    // The sysctl of a VLAN not yet created cannot be read: diff says when it will be set.
    assert!(has(Step::Sysctls, "net.ipv4.conf.eth0/10.rp_filter"));
    assert!(
        s.log.borrow().is_empty(),
        "diff changed something: {:?}",
        s.log.borrow()
    );
    assert!(s.world.borrow().fw.is_none());
}

/// The link, address, route and cleanup changes as (step, object), sorted.
fn net_changes(v: &[bulkhead::apply::Change]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = v
        .iter()
        .filter(|c| matches!(c.step, Step::Links | Step::Routes | Step::Cleanup))
        .map(|c| (c.step.to_string(), c.object.clone()))
        .collect();
    v.sort();
    v
}

#[test]
fn diff_lists_exactly_what_apply_then_does() {
    let s = Setup::new("same");
    let mut plan = shipped();
    let a = s.applier();
    // a fresh system: every VLAN created (and set up), every address added
    let d = a.diff(&plan).unwrap();
    let r = a.apply(&plan).unwrap();
    assert!(!r.changes.is_empty());
    assert_eq!(net_changes(&d.changes), net_changes(&r.changes));
    // a VLAN id changed under the same name, a segment gone, an MTU and an address changed
    for l in &mut plan.links {
        if l.name == "eth0.10" {
            l.kind = LinkKind::Vlan {
                parent: "eth0".into(),
                id: 11,
            };
        }
        if l.name == "eth0.20" {
            l.mtu = Some(1400);
        }
        if l.name == "eth0.30" {
            l.addresses = vec!["198.18.31.1/24".parse().unwrap()];
        }
    }
    plan.links.retain(|l| l.name != "eth0.200");
    plan.sysctls.retain(|s| !s.key.contains(".eth0/200."));
    let d = a.diff(&plan).unwrap();
    assert!(
        d.changes
            .iter()
            .any(|c| c.step == Step::Links && c.object == "eth0.10"),
        "the VLAN recreation is missing from the diff: {:?}",
        d.changes
    );
    let before = s.log.borrow().len();
    let r = a.apply(&plan).unwrap();
    assert!(s.log.borrow().len() > before);
    assert_eq!(net_changes(&d.changes), net_changes(&r.changes));
    // and then there is nothing left to do
    assert!(a.diff(&plan).unwrap().changes.is_empty());
    assert!(a.apply(&plan).unwrap().changes.is_empty());
}

/// Plain ports that exist already: eth0 a segment, eth1 the uplink.
fn plain_ports() -> Plan {
    let text = "[uplink]\ninterface = \"eth1\"\naddress = \"198.18.70.2/24\"\ngateway = \"198.18.70.1\"\n\n[segments.lan]\ninterface = \"eth0\"\nsubnet = \"198.18.71.0/24\"\ngateway = \"198.18.71.1\"\nmanagement = true\n\n[[rules]]\nname = \"lan-out\"\nfrom = \"lan\"\nto = \"internet\"\nproto = \"tcp\"\nports = [443]\n";
    let (m, _) = plan::load_str("plain.toml", text).unwrap();
    plan::build(&m, None)
}

fn fw_loads(s: &Setup) -> Vec<String> {
    s.log
        .borrow()
        .iter()
        .filter(|e| e.starts_with("fw "))
        .cloned()
        .collect()
}

/// A cold apply whose links step creates no interface loads the full firewall once, before any
/// interface is touched: no fail-closed table first.
#[test]
fn cold_apply_on_existing_ports_loads_the_firewall_once_before_the_links() {
    let s = Setup::new("cold1");
    let a = s.applier();
    let r = a.apply(&plain_ports()).unwrap();
    assert_eq!(fw_loads(&s), vec!["fw full"]);
    assert!(
        !r.changes.iter().any(|c| c.step == Step::FailClosed),
        "{:?}",
        r.changes
    );
    assert!(
        s.world.borrow().addrs.len() >= 2,
        "the links were configured after"
    );
    // the second apply changes nothing and loads nothing
    let r2 = a.apply(&plain_ports()).unwrap();
    assert!(r2.changes.is_empty(), "{:?}", r2.changes);
    assert_eq!(fw_loads(&s), vec!["fw full"]);
}

/// Where the kernel refuses the full firewall before the links, the fail-closed one goes first
/// and the full one follows the links, as before.
#[test]
fn full_firewall_refused_before_the_links_falls_back_to_fail_closed_first() {
    let s = Setup::new("cold2");
    s.world.borrow_mut().refuse_full_once = true;
    let r = s.applier().apply(&plain_ports()).unwrap();
    assert_eq!(
        fw_loads(&s),
        vec!["fw full refused", "fw fail-closed", "fw full"]
    );
    assert!(r.changes.iter().any(|c| c.step == Step::FailClosed));
}

/// A cold apply that loaded the full firewall first and then failed at the links ends with the
/// fail-closed firewall, as one that had loaded the fail-closed one first would.
#[test]
fn cold_apply_failing_at_the_links_after_the_full_firewall_ends_fail_closed() {
    let s = Setup::new("cold3");
    s.world.borrow_mut().fail_addresses = true;
    let e = s.applier().apply(&plain_ports()).unwrap_err();
    assert_eq!(fw_loads(&s), vec!["fw full", "fw fail-closed"]);
    let m = e.to_string();
    assert!(m.contains("the fail-closed firewall is loaded"), "{m}");
    let w = s.world.borrow();
    let Some(LoadText::Nftables { script }) = &w.fw else {
        panic!("no firewall")
    };
    assert!(
        !script.contains("rule:"),
        "the fail-closed ruleset is loaded"
    );
}
