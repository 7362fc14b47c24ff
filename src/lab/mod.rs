//! `bulkhead lab`: a whole site in network namespaces — the gateway, one client per segment,
//! one host per group, an "internet" behind the uplink — and the proof that the policy holds:
//! real connections for every allowed flow and a sample of denied ones, compared with what
//! `explain` (and the host firewalls from `hostrules`) say.

pub mod net;
pub mod siem;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::{Endpoint, Model, Proto, UplinkAddressing};
use crate::plan::{explain, hostrules, ruleset};

/// The lab's internet server (TEST-NET-2).
pub const INTERNET_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 80);

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{0}")]
    Setup(String),
    #[error("lab `{0}` is already up (state in {1}); run `bulkhead lab down` first")]
    AlreadyUp(String, String),
    #[error("lab `{0}` is not up")]
    NotUp(String),
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |err| LabError::Io { what, err }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Host {
    /// Segment name, group name, or `internet`.
    pub name: String,
    pub ns: String,
    pub addr: Ipv4Addr,
    pub segment: Option<String>,
    pub group: Option<String>,
    /// The address came from the gateway's DHCP server.
    #[serde(default)]
    pub dhcp: bool,
}

/// The client of a segment that serves DHCP takes its address by DHCP.
fn dhcp_client(m: &Model, h: &Host) -> bool {
    h.group.is_none()
        && !h.name.starts_with("fwd-")
        && h.segment
            .as_ref()
            .and_then(|s| m.segment(s))
            .is_some_and(|s| s.dhcp.is_some())
}

/// busybox udhcpc calls this with the lease in its environment.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# lab DHCP client hook: configure the lease on the interface (no resolv.conf, no hooks)
case "$1" in
  deconfig) ip -4 addr flush dev "$interface" ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip -4 addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip -4 route replace default via "${router%% *}" dev "$interface"
    echo "lease $ip/${mask} router $router dns $dns domain $domain lease $lease"
    ;;
esac
exit 0
"#;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    pub config: PathBuf,
    pub backend: String,
    pub gateway_ns: String,
    pub internet_ns: String,
    /// Every namespace the lab created, to be removed by `down`.
    pub namespaces: Vec<String>,
    /// Every process the lab started, to be killed by `down`.
    pub pids: Vec<u32>,
    pub hosts: Vec<Host>,
    /// The gateway is the image in qemu; its serial console is logged here.
    #[serde(default)]
    pub console: Option<PathBuf>,
    /// The SIEM host (`up --siem`).
    #[serde(default)]
    pub siem: Option<siem::SiemState>,
}

pub struct Lab {
    pub name: String,
    pub dir: PathBuf,
    /// The bulkhead binary to run inside the namespaces.
    pub bin: PathBuf,
    /// Run the gateway as the appliance image in qemu instead of in a namespace.
    pub vm: Option<Vm>,
    /// Start a SIEM host (rsyslogd) at the config's log targets.
    pub siem: bool,
}

/// The appliance image as the lab's gateway: the image's own config (the shipped one) runs on
/// real 802.1Q VLANs of the guest's trunk, which a userspace tagging switch hands to the
/// segments' bridges; the uplink takes its address by DHCP from the lab's internet router.
#[derive(Debug, Clone)]
pub struct Vm {
    /// The image build's output directory (vmlinux, initramfs).
    pub image_out: PathBuf,
    /// `image/run`.
    pub runner: PathBuf,
    /// `tests/vm/vlanswitch.py`.
    pub switch: PathBuf,
    /// A disk image whose data partition keeps the appliance's state (leases, generations)
    /// across lab runs.
    pub disk: Option<PathBuf>,
}

/// A locally administered MAC derived from the host's name.
fn host_mac(name: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let b = h.to_be_bytes();
    format!("02:b4:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

fn run(args: &[&str]) -> Result<String, LabError> {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(io(format!("running {}", args[0])))?;
    if !o.status.success() {
        return Err(LabError::Setup(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn ns_run(ns: &str, args: &[&str]) -> Result<String, LabError> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    run(&v)
}

impl Lab {
    pub fn new(name: &str) -> Self {
        Lab {
            name: name.to_string(),
            dir: PathBuf::from("/run/bulkhead-lab").join(name),
            bin: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("bulkhead")),
            vm: None,
            siem: false,
        }
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("lab.json")
    }

    pub fn state(&self) -> Result<LabState, LabError> {
        let t = std::fs::read_to_string(self.state_path())
            .map_err(|_| LabError::NotUp(self.name.clone()))?;
        serde_json::from_str(&t).map_err(|e| LabError::Setup(format!("lab state: {e}")))
    }

    fn save(&self, st: &LabState) -> Result<(), LabError> {
        let t = serde_json::to_string_pretty(st).expect("serializes");
        std::fs::write(self.state_path(), t).map_err(io("writing the lab state"))
    }

    fn ns(&self, tag: &str) -> String {
        format!("bhl-{}-{tag}", self.name)
    }

    /// Choose the hosts: a client per segment, a host per group, the internet.
    pub fn hosts(&self, m: &Model) -> Vec<Host> {
        let mut used: BTreeSet<Ipv4Addr> = m.segments.iter().map(|s| s.gateway).collect();
        let mut hosts = Vec::new();
        let mut group_addrs = Vec::new();
        for g in &m.groups {
            let Some(first) = g.members.first() else {
                continue;
            };
            let mut a = first.lo;
            if first.len() > 2 && u32::from(a) & 0xff == 0 {
                a = Ipv4Addr::from(u32::from(a) + 1);
            }
            group_addrs.push((g.name.clone(), a));
        }
        let in_group = |a: Ipv4Addr| {
            m.groups
                .iter()
                .any(|g| g.members.iter().any(|r| r.contains(a)))
        };
        for s in &m.segments {
            let reserved: BTreeSet<Ipv4Addr> = s
                .dhcp
                .iter()
                .flat_map(|d| d.reservations.iter().map(|r| r.address))
                .collect();
            let start = s
                .dhcp
                .as_ref()
                .and_then(|d| d.ranges.first().map(|r| r.lo))
                .unwrap_or(Ipv4Addr::from(u32::from(s.subnet.network()) + 2));
            let client = s
                .subnet
                .hosts()
                .skip_while(|a| *a < start)
                .chain(s.subnet.hosts())
                .find(|a| !used.contains(a) && !reserved.contains(a) && !in_group(*a));
            if let Some(a) = client {
                used.insert(a);
                hosts.push(Host {
                    name: s.name.clone(),
                    ns: self.ns(&format!("c-{}", s.name)),
                    addr: a,
                    segment: Some(s.name.clone()),
                    group: None,
                    dhcp: false,
                });
            }
        }
        for (g, a) in group_addrs {
            if !used.insert(a) {
                continue;
            }
            let seg = m.segment_of(a);
            hosts.push(Host {
                name: g.clone(),
                ns: match seg {
                    Some(_) => self.ns(&format!("g-{g}")),
                    None => self.ns("inet"),
                },
                addr: a,
                segment: seg.map(|s| s.name.clone()),
                group: Some(g),
                dhcp: false,
            });
        }
        for f in &m.forwards {
            if used.insert(f.to) {
                hosts.push(Host {
                    name: format!("fwd-{}", f.name),
                    ns: self.ns(&format!("f-{}", f.name)),
                    addr: f.to,
                    segment: Some(f.to_segment.clone()),
                    group: None,
                    dhcp: false,
                });
            }
        }
        hosts.push(Host {
            name: "internet".into(),
            ns: self.ns("inet"),
            addr: INTERNET_HOST,
            segment: None,
            group: None,
            dhcp: false,
        });
        hosts
    }

    /// Build the topology and start the gateway with `config`.
    pub fn up(&self, config: &Path, model: &Model, backend: &str) -> Result<LabState, LabError> {
        if self.state_path().exists() {
            return Err(LabError::AlreadyUp(
                self.name.clone(),
                self.dir.display().to_string(),
            ));
        }
        std::fs::create_dir_all(&self.dir).map_err(io("creating the lab directory"))?;
        let backend_mode = match backend {
            "iptables" => crate::model::Backend::Iptables,
            _ => crate::model::Backend::Nftables,
        };
        let lm = model.for_lab(crate::model::LabMode {
            backend: Some(backend_mode),
        });
        let hosts = self.hosts(&lm);
        let mut st = LabState {
            name: self.name.clone(),
            config: std::fs::canonicalize(config).unwrap_or(config.to_path_buf()),
            backend: backend.to_string(),
            gateway_ns: self.ns("gw"),
            internet_ns: self.ns("inet"),
            namespaces: Vec::new(),
            pids: Vec::new(),
            hosts: hosts.clone(),
            console: None,
            siem: None,
        };
        // Save early and as we go: whatever happens, `down` finds what was created.
        self.save(&st)?;
        let r = self.build(&lm, &mut st);
        self.save(&st)?;
        r?;
        Ok(st)
    }

    fn add_ns(&self, st: &mut LabState, ns: &str) -> Result<(), LabError> {
        if st.namespaces.iter().any(|n| n == ns) {
            return Ok(());
        }
        run(&["ip", "netns", "add", ns])?;
        st.namespaces.push(ns.to_string());
        self.save(st)?;
        ns_run(ns, &["ip", "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// A veth pair with one end in each namespace, renamed there.
    fn veth(&self, a_ns: &str, a: &str, b_ns: &str, b: &str) -> Result<(), LabError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let ta = format!("bhl{}a{n}", std::process::id() % 10000);
        let tb = format!("bhl{}b{n}", std::process::id() % 10000);
        run(&[
            "ip", "link", "add", &ta, "type", "veth", "peer", "name", &tb,
        ])?;
        run(&["ip", "link", "set", &ta, "netns", a_ns])?;
        run(&["ip", "link", "set", &tb, "netns", b_ns])?;
        ns_run(a_ns, &["ip", "link", "set", &ta, "name", a])?;
        ns_run(b_ns, &["ip", "link", "set", &tb, "name", b])?;
        ns_run(a_ns, &["ip", "link", "set", a, "up"])?;
        ns_run(b_ns, &["ip", "link", "set", b, "up"])?;
        Ok(())
    }

    fn spawn(
        &self,
        st: &mut LabState,
        ns: &str,
        args: &[&str],
        log: &str,
    ) -> Result<u32, LabError> {
        let logf = std::fs::File::create(self.dir.join(log)).map_err(io("creating a log file"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().map_err(io("log file"))?)
            .stderr(logf)
            .spawn()
            .map_err(io(format!("starting {}", args[0])))?;
        st.pids.push(child.id());
        self.save(st)?;
        Ok(child.id())
    }

    fn build(&self, m: &Model, st: &mut LabState) -> Result<(), LabError> {
        let gw = st.gateway_ns.clone();
        let inet = st.internet_ns.clone();
        if self.vm.is_some() {
            st.gateway_ns.clear();
        } else {
            self.add_ns(st, &gw)?;
        }
        self.add_ns(st, &inet)?;
        // uplink: gateway <-> internet router
        let UplinkAddressing::Static { address, gateway } = &m.uplink.addressing else {
            unreachable!("for_lab gives a static uplink")
        };
        let router = gateway.ok_or_else(|| {
            LabError::Setup("the lab needs uplink.gateway with a static uplink address".into())
        })?;
        let rnet = Ipv4Net::new(router, address.prefix_len()).unwrap();
        if self.vm.is_none() {
            self.veth(&gw, &m.uplink.interface, &inet, "gw0")?;
            ns_run(
                &inet,
                &["ip", "addr", "add", &rnet.to_string(), "dev", "gw0"],
            )?;
        }
        for s in m.segments.iter().filter(|_| self.vm.is_none()) {
            // the internet can send to the inside: the gateway's firewall must stop it
            ns_run(
                &inet,
                &[
                    "ip",
                    "route",
                    "add",
                    &s.subnet.to_string(),
                    "via",
                    &address.addr().to_string(),
                ],
            )?;
        }
        // segments: a bridge in a switch namespace per segment
        for s in &m.segments {
            let sw = self.ns(&format!("sw-{}", s.name));
            self.add_ns(st, &sw)?;
            ns_run(&sw, &["ip", "link", "add", "br0", "type", "bridge"])?;
            ns_run(&sw, &["ip", "link", "set", "br0", "up"])?;
            if self.vm.is_some() {
                continue; // the tagging switch attaches this VLAN below
            }
            self.veth(&gw, &s.ifname, &sw, "up0")?;
            ns_run(&sw, &["ip", "link", "set", "up0", "master", "br0"])?;
            // the gateway's link is down until bulkhead brings it up
            ns_run(&gw, &["ip", "link", "set", &s.ifname, "down"])?;
        }
        // hosts
        for (i, h) in st.hosts.clone().iter().enumerate() {
            match &h.segment {
                Some(seg) => {
                    let s = m.segment(seg).expect("host segment");
                    self.add_ns(st, &h.ns)?;
                    let sw = self.ns(&format!("sw-{}", s.name));
                    self.veth(&h.ns, "eth0", &sw, &format!("p{i}"))?;
                    // a stable MAC per host: the same client gets the same lease next time
                    ns_run(
                        &h.ns,
                        &["ip", "link", "set", "eth0", "address", &host_mac(&h.name)],
                    )?;
                    ns_run(
                        &sw,
                        &["ip", "link", "set", &format!("p{i}"), "master", "br0"],
                    )?;
                    if dhcp_client(m, h) {
                        continue; // addressed by the gateway's DHCP server below
                    }
                    let a = Ipv4Net::new(h.addr, s.subnet.prefix_len()).unwrap();
                    ns_run(&h.ns, &["ip", "addr", "add", &a.to_string(), "dev", "eth0"])?;
                    ns_run(
                        &h.ns,
                        &[
                            "ip",
                            "route",
                            "add",
                            "default",
                            "via",
                            &s.gateway.to_string(),
                        ],
                    )?;
                }
                None => {
                    ns_run(
                        &inet,
                        &["ip", "addr", "add", &format!("{}/32", h.addr), "dev", "lo"],
                    )?;
                }
            }
        }
        if self.siem {
            siem::start(self, m, st)?;
        }
        // the gateway
        let bin = self.bin.to_string_lossy().into_owned();
        match &self.vm {
            Some(vm) => self.start_vm(vm, st, &rnet, address.addr())?,
            None => self.start_gateway(st, &bin)?,
        }
        // clients of DHCP segments ask the gateway for their address
        let script = self.dir.join("udhcpc.script");
        std::fs::write(&script, UDHCPC_SCRIPT).map_err(io("writing the DHCP client script"))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .map_err(io("the DHCP client script"))?;
        }
        let sc = script.to_string_lossy().into_owned();
        let clients: Vec<usize> = (0..st.hosts.len())
            .filter(|i| dhcp_client(m, &st.hosts[*i]))
            .collect();
        for i in &clients {
            let h = st.hosts[*i].clone();
            self.spawn(
                st,
                &h.ns,
                &[
                    "busybox",
                    "udhcpc",
                    "-f",
                    "-i",
                    "eth0",
                    "-s",
                    &sc,
                    "-t",
                    "20",
                    "-T",
                    "1",
                    "-A",
                    "1",
                    "-x",
                    &format!("hostname:{}", h.name),
                ],
                &format!("dhcp-{}.log", h.name),
            )?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in clients {
            let ns = st.hosts[i].ns.clone();
            let addr = loop {
                let out = ns_run(&ns, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"])?;
                if let Some(a) = out.split_whitespace().skip_while(|w| *w != "inet").nth(1) {
                    break a
                        .split('/')
                        .next()
                        .unwrap_or_default()
                        .parse::<Ipv4Addr>()
                        .ok();
                }
                if Instant::now() > deadline {
                    let log = std::fs::read_to_string(
                        self.dir.join(format!("dhcp-{}.log", st.hosts[i].name)),
                    )
                    .unwrap_or_default();
                    return Err(LabError::Setup(format!(
                        "{} got no address by DHCP in 30 s:\n{log}",
                        st.hosts[i].name
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if let Some(a) = addr {
                st.hosts[i].addr = a;
                st.hosts[i].dhcp = true;
            }
        }
        self.save(st)?;
        // listeners on every probed port, host firewalls on group hosts
        let (tcp, udp) = ports(&probes(
            m,
            &st.hosts,
            st.hosts.iter().map(|h| h.addr).collect(),
        ));
        let tcp_s = join(&tcp);
        let udp_s = join(&udp);
        let mut by_ns: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for h in &st.hosts {
            by_ns
                .entry(h.ns.clone())
                .or_default()
                .push(h.addr.to_string());
        }
        for (ns, addrs) in &by_ns {
            // UDP answers must come from the address asked, so each one is bound
            let a = addrs.join(",");
            let args = [
                &bin, "lab", "serve", "--tcp", &tcp_s, "--udp", &udp_s, "--addrs", &a,
            ];
            self.spawn(st, ns, &args, &format!("serve-{ns}.log"))?;
        }
        for h in st.hosts.clone() {
            if let (Some(g), Some(_)) = (&h.group, &h.segment) {
                let text = hostrules::render(m, g).map_err(|e| LabError::Setup(e.to_string()))?;
                let f = self.dir.join(format!("hostrules-{g}.nft"));
                std::fs::write(&f, text).map_err(io("writing host rules"))?;
                ns_run(&h.ns, &["nft", "-f", &f.to_string_lossy()])?;
            }
        }
        Ok(())
    }

    fn start_gateway(&self, st: &mut LabState, bin: &str) -> Result<(), LabError> {
        let gw = st.gateway_ns.clone();
        let cfg = st.config.to_string_lossy().into_owned();
        let backend = st.backend.clone();
        let state_dir = self.dir.join("gateway");
        let sd = state_dir.to_string_lossy().into_owned();
        self.spawn(
            st,
            &gw,
            &[
                bin,
                "-c",
                &cfg,
                "--lab",
                "--lab-backend",
                &backend,
                "run",
                "--state-dir",
                &sd,
            ],
            "gateway.log",
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::fs::read_to_string(state_dir.join("ready")).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default();
                return Err(LabError::Setup(format!(
                    "the gateway did not become ready in 30 s:\n{log}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Boot the image with its trunk on the tagging switch and its uplink in the internet
    /// namespace, which hands it `uplink` by DHCP; wait for `bulkhead: ready`.
    fn start_vm(
        &self,
        vm: &Vm,
        st: &mut LabState,
        router: &Ipv4Net,
        uplink: Ipv4Addr,
    ) -> Result<(), LabError> {
        let m = crate::plan::load(&st.config)
            .map_err(|r| LabError::Setup(r.to_string()))?
            .0;
        let inet = st.internet_ns.clone();
        let tag = std::process::id() % 100000;
        let (sw_sock, qemu_sock) = (self.dir.join("sw.sock"), self.dir.join("qemu.sock"));
        let mut args: Vec<String> = vec![
            vm.switch.to_string_lossy().into_owned(),
            "--sock".into(),
            sw_sock.to_string_lossy().into_owned(),
            "--peer".into(),
            qemu_sock.to_string_lossy().into_owned(),
        ];
        let mut taps = Vec::new();
        for s in &m.segments {
            let crate::model::SegmentLink::Vlan { id, .. } = s.link else {
                return Err(LabError::Setup(format!(
                    "segment `{}` is a plain port; the image's gateway has only its trunk and uplink NICs",
                    s.name
                )));
            };
            let tap = format!("bl{tag}v{id}");
            let sw = self.ns(&format!("sw-{}", s.name));
            args.push("--port".into());
            args.push(format!("{id}:{tap}:{sw}"));
            taps.push((tap, sw));
        }
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let mut cmd = vec!["python3"];
        cmd.extend(a);
        self.spawn_here(st, &cmd, "switch.log")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        for (tap, sw) in &taps {
            while ns_run(sw, &["ip", "link", "show", tap]).is_err() {
                if Instant::now() > deadline {
                    let log =
                        std::fs::read_to_string(self.dir.join("switch.log")).unwrap_or_default();
                    return Err(LabError::Setup(format!(
                        "the tagging switch did not create {tap}:\n{log}"
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            ns_run(sw, &["ip", "link", "set", tap, "master", "br0"])?;
            ns_run(sw, &["ip", "link", "set", tap, "up"])?;
        }
        // the image
        let console = self.dir.join("console.log");
        let up_tap = format!("bl{tag}up");
        let runner = vm.runner.to_string_lossy().into_owned();
        let out = vm.image_out.to_string_lossy().into_owned();
        let trunk = format!("dgram:{}:{}", qemu_sock.display(), sw_sock.display());
        let serial = format!("file:{}", console.display());
        let uplink_spec = format!("tap:{up_tap}");
        let disk = vm.disk.as_ref().map(|d| d.to_string_lossy().into_owned());
        // a test image (image/build --test) answers commands on a control socket
        // (tests/vm/guestctl.py); a release image has no agent, so none is offered to it
        let test_image = std::fs::read_to_string(vm.image_out.join("manifest.txt"))
            .is_ok_and(|m| m.lines().any(|l| l == "variant test"));
        let ctl = test_image.then(|| self.dir.join("ctl.sock").to_string_lossy().into_owned());
        self.spawn_here(
            st,
            &[
                &runner,
                "--mode",
                "elf",
                "--out",
                &out,
                "--trunk",
                &trunk,
                "--uplink",
                &uplink_spec,
                "--serial",
                &serial,
                "--mem",
                "256",
                "--timeout",
                "7200",
            ]
            .into_iter()
            .chain(disk.iter().flat_map(|d| ["--disk", d.as_str()]))
            .chain(ctl.iter().flat_map(|c| ["--ctl", c.as_str()]))
            .collect::<Vec<_>>(),
            "qemu.log",
        )?;
        st.console = Some(console.clone());
        self.save(st)?;
        // qemu creates the uplink tap here; it keeps working after the move
        let deadline = Instant::now() + Duration::from_secs(30);
        while run(&["ip", "link", "show", &up_tap]).is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("qemu.log")).unwrap_or_default();
                return Err(LabError::Setup(format!(
                    "qemu did not create its uplink tap:\n{log}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        run(&["ip", "link", "set", &up_tap, "netns", &inet])?;
        ns_run(&inet, &["ip", "link", "set", &up_tap, "name", "gw0"])?;
        ns_run(&inet, &["ip", "link", "set", "gw0", "up"])?;
        ns_run(
            &inet,
            &["ip", "addr", "add", &router.to_string(), "dev", "gw0"],
        )?;
        for s in &m.segments {
            let _ = ns_run(
                &inet,
                &[
                    "ip",
                    "route",
                    "replace",
                    &s.subnet.to_string(),
                    "via",
                    &uplink.to_string(),
                ],
            );
        }
        // the uplink's DHCP server: one address, the one the lab expects
        let conf = self.dir.join("udhcpd.conf");
        let leases = self.dir.join("udhcpd.leases");
        std::fs::write(&leases, "").map_err(io("the uplink lease file"))?;
        std::fs::write(
            &conf,
            format!(
                "interface gw0\nstart {uplink}\nend {uplink}\nmax_leases 1\noption subnet {}\noption router {}\nlease_file {}\npidfile {}\n",
                router.netmask(),
                router.addr(),
                leases.display(),
                self.dir.join("udhcpd.pid").display()
            ),
        )
        .map_err(io("the uplink DHCP server config"))?;
        let c = conf.to_string_lossy().into_owned();
        self.spawn(st, &inet, &["busybox", "udhcpd", "-f", &c], "udhcpd.log")?;
        // wait for the appliance
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let text = std::fs::read_to_string(&console).unwrap_or_default();
            if text.contains("bulkhead: ready") {
                break;
            }
            if Instant::now() > deadline {
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                return Err(LabError::Setup(format!(
                    "the appliance did not print `bulkhead: ready` in 180 s; console tail:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// A process in the lab's own (root) namespace.
    fn spawn_here(&self, st: &mut LabState, args: &[&str], log: &str) -> Result<u32, LabError> {
        let logf = std::fs::File::create(self.dir.join(log)).map_err(io("creating a log file"))?;
        let child = Command::new(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(logf.try_clone().map_err(io("log file"))?)
            .stderr(logf)
            .spawn()
            .map_err(io(format!("starting {}", args[0])))?;
        st.pids.push(child.id());
        self.save(st)?;
        Ok(child.id())
    }

    /// Kill what the lab started and remove what it created, and only that.
    pub fn down(&self) -> Result<LabState, LabError> {
        let st = self.state()?;
        for pid in &st.pids {
            // a pid this lab started; errors (already gone) are ignored
            let _ = crate::sys::proc::terminate(*pid);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for pid in &st.pids {
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                // reap our own children when we are their parent
                crate::sys::proc::reap_nohang(*pid);
            }
            if Path::new(&format!("/proc/{pid}")).exists() {
                let _ = crate::sys::proc::kill(*pid);
            }
        }
        for ns in st.namespaces.iter().rev() {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(st)
    }
}

fn join(v: &BTreeSet<u16>) -> String {
    v.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// One row of the matrix.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub from: String,
    pub to: String,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: Proto,
    pub port: u16,
    /// The port at the destination host (after a port forward).
    pub inner_port: u16,
    pub why: String,
    pub expected: bool,
    pub decided_by: String,
    pub observed: Option<bool>,
    /// The source address the destination saw, and the one it must see (the uplink address
    /// when the flow leaves through a masquerading uplink).
    pub seen_as: Option<Ipv4Addr>,
    pub nat_as: Option<Ipv4Addr>,
}

impl Check {
    pub fn ok(&self) -> bool {
        self.observed == Some(self.expected)
            && (!self.expected || self.nat_as.is_none() || self.seen_as == self.nat_as)
    }
}

fn ports(checks: &[Check]) -> (BTreeSet<u16>, BTreeSet<u16>) {
    let mut tcp = BTreeSet::new();
    let mut udp = BTreeSet::new();
    for c in checks {
        match c.proto {
            Proto::Udp => udp.insert(c.inner_port),
            _ => tcp.insert(c.inner_port),
        };
    }
    (tcp, udp)
}

/// What the policy says of a flow between two lab hosts: the gateway's verdict (explain) when
/// the flow crosses it, and the host firewalls of group hosts at either end.
fn expect(
    m: &Model,
    rs: &ruleset::Ruleset,
    hosts: &[Host],
    src: &Host,
    dst: Ipv4Addr,
    proto: Proto,
    port: u16,
) -> (bool, String) {
    let f = explain::Flow {
        src: src.addr.into(),
        dst: dst.into(),
        proto,
        port: Some(port),
    };
    let d = explain::explain(m, rs, &f);
    let dst_real = d.packet.dst;
    let to_gateway = m.segments.iter().any(|s| s.gateway == dst);
    let same_segment = !to_gateway
        && src.segment.is_some()
        && src.segment.as_deref() == m.segment_of(dst).map(|s| s.name.as_str());
    let (mut ok, mut why) = if same_segment {
        (true, "same segment: host firewalls only".to_string())
    } else {
        (d.allowed(), d.describe())
    };
    fn view<'a>(m: &'a Model, h: &'a Host) -> Option<hostrules::HostView<'a>> {
        h.group
            .as_ref()
            .filter(|_| h.segment.is_some())
            .map(|g| hostrules::HostView {
                group: g,
                segment: h.segment.as_ref().and_then(|s| m.segment(s)),
            })
    }
    if ok
        && let Some(v) = view(m, src)
        && !hostrules::output_allows(m, &v, dst, proto, Some(port))
    {
        ok = false;
        why = format!("host firewall of {} (output)", src.name);
    }
    if ok
        && let Some(h) = hosts.iter().find(|h| h.addr == dst_real)
        && let Some(v) = view(m, h)
        && !hostrules::input_allows(m, &v, src.addr, proto, d.packet.dport)
    {
        ok = false;
        why = format!("host firewall of {} (input)", h.name);
    }
    (ok, why)
}

/// The probes: every flow a rule or port forward allows, and a sample of denied ones.
pub fn probes(m: &Model, hosts: &[Host], _addrs: Vec<Ipv4Addr>) -> Vec<Check> {
    let rs = ruleset::build(m);
    let by_seg: BTreeMap<&str, &Host> = hosts
        .iter()
        .filter(|h| h.group.is_none() && h.segment.is_some() && !h.name.starts_with("fwd-"))
        .map(|h| (h.segment.as_deref().unwrap(), h))
        .collect();
    let by_group: BTreeMap<&str, &Host> = hosts
        .iter()
        .filter_map(|h| h.group.as_deref().map(|g| (g, h)))
        .collect();
    let internet = hosts
        .iter()
        .find(|h| h.name == "internet")
        .expect("internet host");
    let uplink_addr = match &m.uplink.addressing {
        UplinkAddressing::Static { address, .. } => address.addr(),
        UplinkAddressing::Dhcp => model_lab_uplink(),
    };
    let srcs = |e: &Endpoint| -> Vec<&Host> {
        match e {
            Endpoint::Segment(s) => by_seg.get(s.as_str()).copied().into_iter().collect(),
            Endpoint::Group(g) => by_group.get(g.as_str()).copied().into_iter().collect(),
            Endpoint::Internet | Endpoint::Any => vec![internet],
            Endpoint::Gateway => vec![],
        }
    };
    let dsts = |e: &Endpoint, from: &Host| -> Vec<(String, Ipv4Addr)> {
        match e {
            Endpoint::Segment(s) => by_seg
                .get(s.as_str())
                .map(|h| (h.name.clone(), h.addr))
                .into_iter()
                .collect(),
            Endpoint::Group(g) => by_group
                .get(g.as_str())
                .map(|h| (h.name.clone(), h.addr))
                .into_iter()
                .collect(),
            Endpoint::Internet => vec![("internet".into(), INTERNET_HOST)],
            Endpoint::Gateway => {
                let a = from
                    .segment
                    .as_ref()
                    .and_then(|s| m.segment(s))
                    .map_or(uplink_addr, |s| s.gateway);
                vec![("gateway".into(), a)]
            }
            Endpoint::Any => {
                let mut v: Vec<(String, Ipv4Addr)> = by_seg
                    .values()
                    .filter(|h| h.addr != from.addr)
                    .map(|h| (h.name.clone(), h.addr))
                    .collect();
                v.push(("internet".into(), INTERNET_HOST));
                v
            }
        }
    };
    let mut out: Vec<Check> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut push = |src: &Host, to: String, dst: Ipv4Addr, proto: Proto, port: u16, why: String| {
        if src.addr == dst || !seen.insert((src.addr, dst, proto, port)) {
            return;
        }
        let (expected, decided_by) = expect(m, &rs, hosts, src, dst, proto, port);
        let flow = explain::Flow {
            src: src.addr.into(),
            dst: dst.into(),
            proto,
            port: Some(port),
        };
        let (packet, _) = explain::classify(m, &rs, &flow);
        let inner_port = packet.dport.unwrap_or(port);
        let nat_as = (m.uplink.masquerade
            && packet.oif.as_deref() == Some(m.uplink.interface.as_str()))
        .then_some(uplink_addr);
        out.push(Check {
            from: src.name.clone(),
            to,
            src: src.addr,
            dst,
            proto,
            port,
            inner_port,
            why,
            expected,
            decided_by,
            observed: None,
            seen_as: None,
            nat_as,
        });
    };
    for r in &m.rules {
        let mut ports: Vec<u16> = r.service.ports.iter().flat_map(|p| [p.lo, p.hi]).collect();
        ports.dedup();
        if ports.is_empty() {
            ports = vec![80];
        }
        for proto in &r.service.protos {
            let protos = match proto {
                Proto::Any => vec![Proto::Tcp, Proto::Udp],
                Proto::Icmp => continue,
                p => vec![*p],
            };
            for src in srcs(&r.from) {
                for (to, dst) in dsts(&r.to, src) {
                    for p in &protos {
                        for port in &ports {
                            push(src, to.clone(), dst, *p, *port, format!("rule {}", r.name));
                        }
                    }
                }
            }
        }
    }
    for f in &m.forwards {
        let src = match &f.from {
            Endpoint::Group(g) => by_group.get(g.as_str()).copied().unwrap_or(internet),
            _ => internet,
        };
        let src = if src.segment.is_some() { internet } else { src };
        push(
            src,
            "uplink".into(),
            uplink_addr,
            f.proto,
            f.port.lo,
            format!("forward {}", f.name),
        );
        if f.from != Endpoint::Internet && f.from != Endpoint::Any {
            push(
                internet,
                "uplink".into(),
                uplink_addr,
                f.proto,
                f.port.lo,
                format!("forward {} (not from {})", f.name, f.from),
            );
        }
    }
    // denied sample: every segment pair, SSH to the gateway from everywhere, internet -> inside
    let sample = [22u16, 80, 443, 5432];
    for a in by_seg.values() {
        for b in by_seg.values() {
            for p in sample {
                push(
                    a,
                    b.name.clone(),
                    b.addr,
                    Proto::Tcp,
                    p,
                    "segment pair".into(),
                );
            }
        }
        for s in &m.segments {
            push(
                a,
                format!("gateway@{}", s.name),
                s.gateway,
                Proto::Tcp,
                m.management.ssh_port,
                "gateway SSH".into(),
            );
        }
        for (p, proto) in [
            (443, Proto::Tcp),
            (25, Proto::Tcp),
            (53, Proto::Udp),
            (123, Proto::Udp),
        ] {
            push(
                a,
                "internet".into(),
                INTERNET_HOST,
                proto,
                p,
                "egress".into(),
            );
        }
        push(
            internet,
            a.name.clone(),
            a.addr,
            Proto::Tcp,
            22,
            "internet to inside".into(),
        );
        push(
            internet,
            a.name.clone(),
            a.addr,
            Proto::Tcp,
            443,
            "internet to inside".into(),
        );
    }
    push(
        internet,
        "gateway@uplink".into(),
        uplink_addr,
        Proto::Tcp,
        m.management.ssh_port,
        "gateway SSH".into(),
    );
    for g in by_group.values() {
        for a in by_seg.values() {
            push(
                a,
                g.name.clone(),
                g.addr,
                Proto::Tcp,
                22,
                "group sample".into(),
            );
        }
    }
    out
}

fn model_lab_uplink() -> Ipv4Addr {
    crate::model::LAB_UPLINK
        .parse::<Ipv4Net>()
        .expect("constant")
        .addr()
}

/// Run every probe from its source namespace; fills `observed`.
pub fn verify(lab: &Lab, st: &LabState, checks: &mut [Check]) -> Result<(), LabError> {
    // A connection that got through is conclusive; one that did not may be a lost packet on a
    // loaded machine, so unanswered probes are tried again (a denied flow never gets through).
    // The flows the policy allows go first, every round: the denied probes look like a scan
    // (and SSH to the gateway from a client segment is a sensitive port), so a gateway whose
    // config quarantines on alerts would lock the clients out of their allowed flows.
    let vm = st.console.is_some();
    let rounds = if vm { 3 } else { 2 };
    let (allowed, denied): (Vec<usize>, Vec<usize>) =
        (0..checks.len()).partition(|i| checks[*i].expected);
    for mut todo in [allowed, denied] {
        for _ in 0..rounds {
            if todo.is_empty() {
                break;
            }
            probe_round(lab, st, checks, &todo, vm)?;
            todo.retain(|i| checks[*i].observed != Some(true));
        }
    }
    Ok(())
}

/// Probe the given checks, in parallel per source (one source at a time for an emulated
/// appliance, which a burst from every source at once would overrun).
fn probe_round(
    lab: &Lab,
    st: &LabState,
    checks: &mut [Check],
    which: &[usize],
    vm: bool,
) -> Result<(), LabError> {
    let mut by_src: BTreeMap<Ipv4Addr, Vec<usize>> = BTreeMap::new();
    for &i in which {
        by_src.entry(checks[i].src).or_default().push(i);
    }
    let bin = lab.bin.to_string_lossy().into_owned();
    let timeout = if vm { "3000" } else { "600" };
    let one = |src: Ipv4Addr,
               idx: &[usize],
               checks: &[Check]|
     -> Result<(Vec<usize>, String), LabError> {
        let host = st
            .hosts
            .iter()
            .find(|h| h.addr == src)
            .expect("source host");
        let mut args: Vec<String> = vec![
            bin.clone(),
            "lab".into(),
            "probe".into(),
            "--timeout-ms".into(),
            timeout.into(),
            "--bind".into(),
            src.to_string(),
        ];
        args.extend(idx.iter().map(|i| {
            let c = &checks[*i];
            net::Probe {
                udp: c.proto == Proto::Udp,
                dst: SocketAddrV4::new(c.dst, c.port),
            }
            .to_string()
        }));
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        ns_run(&host.ns, &a).map(|out| (idx.to_vec(), out))
    };
    let results: Vec<Result<(Vec<usize>, String), LabError>> = if vm {
        by_src
            .iter()
            .map(|(src, idx)| one(*src, idx, checks))
            .collect()
    } else {
        let snapshot: &[Check] = checks;
        std::thread::scope(|sc| {
            let hs: Vec<_> = by_src
                .iter()
                .map(|(src, idx)| sc.spawn(move || one(*src, idx, snapshot)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("probe thread"))
                .collect()
        })
    };
    for r in results {
        let (idx, out) = r?;
        for (i, line) in idx.iter().zip(out.lines()) {
            let mut w = line.split_whitespace().skip(1);
            checks[*i].observed = Some(w.next() == Some("ok"));
            checks[*i].seen_as = w.next().and_then(|a| a.parse().ok());
        }
    }
    Ok(())
}
