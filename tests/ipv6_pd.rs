//! Prefix delegation against a real upstream: Kea's `kea-dhcp6` in an "internet" namespace
//! delegates a /56 out of 2001:db8::/32 to `bulkhead run`'s uplink (its dhcpcd asks with
//! IA_PD); the delegated segments are numbered from it, move to a new prefix in one apply
//! when the upstream changes it, keep their numbering across a restart while the upstream is
//! silent, and lose it (IPv4 untouched) when the delegation is released.
//!
//! Needs root, `ip`, `nft`, dhcpcd and kea-dhcp6 (Debian kea-dhcp6-server).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// A child process of this test, stopped (SIGTERM, then waited for) on drop.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        // SAFETY: a signal to a child this test started.
        unsafe {
            libc_kill(self.0.id() as i32, 15);
        }
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, limit: Duration, f: impl FnMut() -> bool) -> Duration {
    wait_or(what, limit, f, String::new)
}

fn wait_or(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> bool,
    diag: impl Fn() -> String,
) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < limit,
            "{what}: not within {limit:?}\n{}",
            diag()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

/// Kea delegating exactly one /56 (`pool`, e.g. 2001:db8:100::) on `up0`, with a fresh lease
/// file; waits until it serves.
fn kea(ns: &common::Netns, dir: &Path, pool: &str) -> Kid {
    let leases = dir.join("kea-leases6.csv");
    let _ = std::fs::remove_file(&leases);
    let conf = dir.join("kea-dhcp6.json");
    std::fs::write(
        &conf,
        format!(
            r#"{{"Dhcp6": {{
  "interfaces-config": {{"interfaces": ["up0"]}},
  "lease-database": {{"type": "memfile", "persist": true, "lfc-interval": 0, "name": "{}"}},
  "server-id": {{"type": "LLT", "persist": false}},
  "preferred-lifetime": 3000, "valid-lifetime": 4000, "renew-timer": 1000, "rebind-timer": 2000,
  "subnet6": [{{"subnet": "2001:db8:ff::/64", "interface": "up0",
     "pd-pools": [{{"prefix": "{pool}", "prefix-len": 56, "delegated-len": 56}}]}}],
  "loggers": [{{"name": "kea-dhcp6", "output_options": [{{"output": "stdout"}}], "severity": "INFO"}}]
}}}}"#,
            leases.display()
        ),
    )
    .unwrap();
    let out = dir.join(format!("kea-{pool}.out"));
    let kid = Kid(ns
        .cmd(&["kea-dhcp6", "-c", conf.to_str().unwrap()])
        .env("KEA_PIDFILE_DIR", dir)
        .env("KEA_LOCKFILE_DIR", dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kea-dhcp6"));
    wait_for("kea-dhcp6 serving", Duration::from_secs(20), || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("DHCP6_STARTED")
    });
    kid
}

struct Site {
    client: common::Netns,
    gw: common::Netns,
    inet: common::Netns,
    dir: common::TempDir,
    config: PathBuf,
    /// The uplink's name: unique, dhcpcd keeps its lease and socket per interface name.
    uplink: String,
}

impl Site {
    fn new() -> Site {
        let client = common::Netns::new("pdcli");
        let inet = common::Netns::new("pdinet");
        let gw = common::Netns::new("pdgw");
        let dir = common::TempDir::new("pd");
        let uplink = format!("pdw{}", std::process::id() % 100000);
        let st = Command::new("ip")
            .args(["link", "add", "up0", "netns", &inet.name, "type", "veth"])
            .args(["peer", "name", &uplink, "netns", &gw.name])
            .status()
            .unwrap();
        assert!(st.success(), "veth uplink");
        inet.ok(&["ip", "addr", "add", "198.19.0.1/30", "dev", "up0"]);
        inet.ok(&[
            "ip",
            "addr",
            "add",
            "2001:db8:ff::1/64",
            "dev",
            "up0",
            "nodad",
        ]);
        inet.ok(&["sysctl", "-qw", "net.ipv6.conf.up0.accept_dad=0"]);
        inet.ok(&["ip", "link", "set", "up0", "up"]);
        gw.ok(&["ip", "link", "set", &uplink, "up"]);
        // Kea binds to up0's link-local address: wait for it
        wait_for("up0's link-local address", Duration::from_secs(10), || {
            let a = inet.ok(&[
                "ip", "-6", "-o", "addr", "show", "dev", "up0", "scope", "link",
            ]);
            a.contains("fe80::") && !a.contains("tentative")
        });
        for l in ["lan0", "adm0"] {
            gw.ok(&[
                "ip",
                "link",
                "add",
                l,
                "type",
                "veth",
                "peer",
                "name",
                &format!("{l}p"),
            ]);
        }
        // a client on segment lan: kernel SLAAC from the gateway's RAs
        gw.ok(&["ip", "link", "set", "lan0p", "netns", &client.name]);
        client.ok(&["sysctl", "-qw", "net.ipv6.conf.lan0p.accept_dad=0"]);
        client.ok(&["sysctl", "-qw", "net.ipv6.conf.lan0p.accept_ra=1"]);
        client.ok(&["sysctl", "-qw", "net.ipv6.conf.lan0p.autoconf=1"]);
        client.ok(&["ip", "link", "set", "lan0p", "up"]);
        // the upstream routes the delegated prefixes to the gateway's static uplink address
        // (Kea delegates, it does not route)
        for p in ["2001:db8:100::/56", "2001:db8:200::/56"] {
            inet.ok(&[
                "ip",
                "-6",
                "route",
                "add",
                p,
                "via",
                "2001:db8:ff::2",
                "dev",
                "up0",
            ]);
        }
        let config = dir.path().join("box.toml");
        std::fs::write(
            &config,
            format!(
                "[uplink]\ninterface = \"{uplink}\"\naddress = \"198.19.0.2/30\"\ngateway = \"198.19.0.1\"\naddress6 = \"2001:db8:ff::2/64\"\ngateway6 = \"2001:db8:ff::1\"\nprefix_delegation = 56\n\n\
                 [segments.lan]\ninterface = \"lan0\"\nsubnet = \"198.18.60.0/24\"\ngateway = \"198.18.60.1\"\ninternet = true\nsubnet6 = \"delegated\"\nprefix_id = 1\n\n\
                 [segments.adm]\ninterface = \"adm0\"\nsubnet = \"198.18.61.0/24\"\ngateway = \"198.18.61.1\"\nmanagement = true\n"
            ),
        )
        .unwrap();
        Site {
            client,
            gw,
            inet,
            dir,
            config,
            uplink,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn run(&self, log: &str) -> Kid {
        let _ = std::fs::remove_file(self.state().join("ready"));
        let log = std::fs::File::create(self.dir.path().join(log)).unwrap();
        let kid = Kid(self
            .gw
            .cmd(&[
                env!("CARGO_BIN_EXE_bulkhead"),
                "-c",
                self.config.to_str().unwrap(),
                "--state-dir",
                self.state().to_str().unwrap(),
                "run",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap());
        wait_for("bulkhead run ready", Duration::from_secs(20), || {
            self.state().join("ready").exists()
        });
        kid
    }

    fn set(&self, name: &str) -> String {
        let o = self
            .gw
            .run(&["nft", "list", "set", "inet", "bulkhead", name]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The IPv4 side: addresses of the segment links and every IPv4 set (must not move).
    fn ipv4(&self) -> String {
        let mut s = String::new();
        for l in ["lan0", "adm0", &self.uplink] {
            s += &self.gw.ok(&["ip", "-4", "-o", "addr", "show", "dev", l]);
        }
        s += &self.gw.ok(&["ip", "-4", "route", "show"]);
        let t = self.gw.ok(&["nft", "list", "table", "inet", "bulkhead"]);
        // the IPv4 sets, with their elements
        let mut keep = false;
        for line in t.lines() {
            if line.trim_start().starts_with("set ") {
                keep = false;
            }
            if line.contains("type ipv4_addr") {
                keep = true;
            }
            if keep {
                s += line;
                s.push('\n');
            }
        }
        s
    }

    fn generation(&self) -> u64 {
        let t = std::fs::read_to_string(self.state().join("last-apply.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        v["generation"].as_u64().unwrap_or(0)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        // dhcpcd keeps its lease per interface name in the shared /var/lib/dhcpcd
        for ext in ["lease6", "lease"] {
            let _ = std::fs::remove_file(format!("/var/lib/dhcpcd/{}.{ext}", self.uplink));
        }
        let _ = (&self.inet, &self.gw, &self.client);
    }
}

/// The client's global addresses on lan0p: (address, deprecated?).
fn client_addrs(b: &Site) -> Vec<(String, bool)> {
    b.client
        .ok(&[
            "ip", "-6", "-o", "addr", "show", "dev", "lan0p", "scope", "global",
        ])
        .lines()
        .filter_map(|l| {
            let a = l.split_whitespace().nth(3)?.split('/').next()?.to_string();
            Some((a, l.contains("deprecated")))
        })
        .collect()
}

/// Connect from the client to the internet namespace over TCP; the source address the
/// internet side saw.
fn seen_from_client(b: &Site) -> String {
    let out = b.dir.path().join("seen.txt");
    let _ = std::fs::remove_file(&out);
    let srv = Kid(b
        .inet
        .cmd(&[
            "python3",
            "-c",
            "import socket,sys\ns=socket.socket(socket.AF_INET6)\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('2001:db8:ff::1',8086))\ns.listen(1)\nprint('listening',flush=True)\nc,a=s.accept()\nopen(sys.argv[1],'w').write(a[0])\n",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap());
    wait_for("the internet listener", Duration::from_secs(10), || {
        b.inet.ok(&["ss", "-Htln"]).contains("8086")
    });
    let o = b.client.run(&[
        "python3",
        "-c",
        "import socket\nsocket.create_connection(('2001:db8:ff::1',8086),timeout=5).close()",
    ]);
    assert!(
        o.status.success(),
        "client -> internet over IPv6: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    wait_for(
        "the internet side saw the client",
        Duration::from_secs(5),
        || out.exists(),
    );
    drop(srv);
    std::fs::read_to_string(&out).unwrap()
}

fn kept(b: &Site) -> serde_json::Value {
    let t = std::fs::read_to_string(b.state().join("uplink6/delegated.json")).unwrap_or_default();
    serde_json::from_str(&t).unwrap_or_default()
}

#[test]
fn delegated_prefix_numbers_the_segments_and_renumbering_moves_them_in_one_apply() {
    common::require_root_and(&["ip", "nft", "dhcpcd", "kea-dhcp6"]);
    let b = Site::new();
    let k1 = kea(&b.inet, b.dir.path(), "2001:db8:100::");
    let run = b.run("run1.log");

    // The /56 arrives; segment lan (prefix_id 1) is 2001:db8:100:1::/64.
    let t = wait_or(
        "the lan segment numbered",
        Duration::from_secs(30),
        || b.set("lan_v6").contains("2001:db8:100:1::/64"),
        || format!("{}\n{}", b.set("lan_v6"), b.log("run1.log")),
    );
    eprintln!("delegated prefix applied {t:?} after ready");
    wait_for("the prefix kept", Duration::from_secs(5), || {
        kept(&b)["prefix"] == "2001:db8:100::/56"
    });
    assert_eq!(
        kept(&b)["prefix"],
        "2001:db8:100::/56",
        "{}",
        b.log("run1.log")
    );
    assert_eq!(kept(&b)["valid"], 4000);
    // the gateway's address on lan, the client's SLAAC address in the delegated /64, and
    // the internet side sees the client's own address (routed, no NAT66)
    let lan6 = || {
        b.gw.ok(&[
            "ip", "-6", "-o", "addr", "show", "dev", "lan0", "scope", "global",
        ])
    };
    wait_for("gateway6 on lan", Duration::from_secs(10), || {
        lan6().contains("2001:db8:100:1::1/64")
    });
    let t = wait_or(
        "the client's SLAAC address in 2001:db8:100:1::/64",
        Duration::from_secs(30),
        || {
            client_addrs(&b)
                .iter()
                .any(|(a, d)| a.starts_with("2001:db8:100:1:") && !d)
        },
        || format!("{:?}\n{}", client_addrs(&b), b.log("run1.log")),
    );
    eprintln!("client numbered {t:?} after the gateway");
    let a1 = client_addrs(&b)
        .into_iter()
        .find(|(a, _)| a.starts_with("2001:db8:100:1:"))
        .unwrap()
        .0;
    assert_eq!(
        seen_from_client(&b),
        a1,
        "the internet side saw another source"
    );
    let v4 = b.ipv4();
    let gen1 = b.generation();
    assert!(gen1 >= 2, "the start and the delegated prefix: {gen1}");

    // Kea now delegates another /56; dhcpcd rebinds (dhcpcd -n): the old prefix comes back
    // with lifetime 0 next to the new one, and the segment moves in one apply.
    drop(k1);
    let _k2 = kea(&b.inet, b.dir.path(), "2001:db8:200::");
    b.gw.ok(&["dhcpcd", "-6", "-n", &b.uplink]);
    let t = wait_or(
        "the lan segment renumbered",
        Duration::from_secs(30),
        || b.set("lan_v6").contains("2001:db8:200:1::/64"),
        || format!("{}\n{}", b.set("lan_v6"), b.log("run1.log")),
    );
    eprintln!("renumbered {t:?} after the rebind was asked for");
    let set = b.set("lan_v6");
    assert!(!set.contains("2001:db8:100:"), "old prefix still in {set}");
    wait_for("the new prefix kept", Duration::from_secs(5), || {
        kept(&b)["prefix"] == "2001:db8:200::/56"
    });
    assert_eq!(b.generation(), gen1 + 1, "one apply for the renumbering");
    assert_eq!(b.ipv4(), v4, "IPv4 moved with the renumbering");
    // the gateway's address moved
    let l = lan6();
    assert!(
        l.contains("2001:db8:200:1::1/64") && !l.contains("2001:db8:100:"),
        "{l}"
    );
    // the client holds the new prefix, the old one deprecated (preferred lifetime 0)
    let t = wait_or(
        "the client renumbered",
        Duration::from_secs(30),
        || {
            let v = client_addrs(&b);
            v.iter()
                .any(|(a, d)| a.starts_with("2001:db8:200:1:") && !d)
                && v.iter().all(|(a, d)| !a.starts_with("2001:db8:100:") || *d)
        },
        || format!("{:?}\n{}", client_addrs(&b), b.log("run1.log")),
    );
    eprintln!("client renumbered {t:?} after the gateway");
    let a2 = client_addrs(&b)
        .into_iter()
        .find(|(a, d)| a.starts_with("2001:db8:200:1:") && !d)
        .unwrap()
        .0;
    assert_eq!(
        seen_from_client(&b),
        a2,
        "new connections use the new prefix"
    );
    let log = b.log("run1.log");
    assert!(
        log.contains("delegated prefix applied"),
        "no renumbering in the log:\n{log}"
    );
    drop(run);
    drop(_k2);
    // dhcpcd's privilege-separated helpers outlive its stopped manager for a moment, holding
    // its control socket: a dhcpcd started meanwhile hands its arguments to them and exits
    let sock = format!("/run/dhcpcd/{}-6.sock", b.uplink);
    wait_for(
        "the first run's dhcpcd gone",
        Duration::from_secs(20),
        || !Path::new(&sock).exists(),
    );

    // Restart with the upstream silent: the first apply already numbers the segment from
    // the kept prefix (the table is gone before the start, so nothing is left over).
    b.gw.ok(&["nft", "delete", "table", "inet", "bulkhead"]);
    let run = b.run("run2.log");
    let set = b.set("lan_v6");
    assert!(
        set.contains("2001:db8:200:1::/64"),
        "kept prefix not used at start: {set}\n{}",
        b.log("run2.log")
    );

    // The upstream stays silent: dhcpcd's Rebind of the kept delegation goes unanswered, it
    // gives the delegation up (EXPIRE6, ~10 s after its start) and the segment loses its IPv6
    // prefix; IPv4 stays as it was. (Not `dhcpcd -k`: a release makes dhcpcd exit before its
    // hook runs, so nothing tells bulkhead before the valid lifetime runs out.)
    wait_or(
        "the delegation dropped",
        Duration::from_secs(60),
        || !b.set("lan_v6").contains("2001:db8:"),
        || format!("{}\n{}", b.set("lan_v6"), b.log("run2.log")),
    );
    assert_eq!(b.ipv4(), v4, "IPv4 moved with the loss of the delegation");
    let l = lan6();
    assert!(
        !l.contains("2001:db8:"),
        "gateway6 kept after the loss: {l}"
    );
    wait_for("the kept prefix forgotten", Duration::from_secs(5), || {
        !b.state().join("uplink6/delegated.json").exists()
    });
    drop(run);
}

/// examples/v6_serve, built once (the RA sender and DHCPv6 server standing in for the
/// upstream router).
fn v6_serve_exe() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    BUILT.call_once(|| {
        let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--quiet", "--example", "v6_serve"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(st.success(), "building examples/v6_serve failed");
    });
    profile_dir.join("examples").join("v6_serve")
}

/// The upstream router on up0: RAs for 2001:db8:ff::/64 (A=1) and a DHCPv6 server, in
/// `mode` (stateless: O=1; stateful: M=1 with a pool ::1000-::1fff).
fn upstream_router(b: &Site, mode: &str) -> Kid {
    let segs = b.dir.path().join(format!("upstream-{mode}.json"));
    std::fs::write(
        &segs,
        format!(
            r#"[{{"segment": "up", "interface": "up0", "mode": "{mode}", "subnet": "2001:db8:ff::/64",
  "pool_start": "2001:db8:ff::1000", "pool_end": "2001:db8:ff::1fff", "dns": ["2001:db8:ff::53"]}}]"#
        ),
    )
    .unwrap();
    let out = b.dir.path().join(format!("upstream-{mode}.out"));
    let kid = Kid(b
        .inet
        .cmd(&[])
        .arg(v6_serve_exe())
        .arg(&segs)
        .arg(b.dir.path().join(format!("upstream-{mode}")))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(b.dir.path().join(format!("upstream-{mode}.log"))).unwrap())
        .spawn()
        .expect("spawn v6_serve"));
    wait_for(
        "the upstream router ready",
        Duration::from_secs(120),
        || {
            std::fs::read_to_string(&out)
                .unwrap_or_default()
                .contains("ready")
        },
    );
    kid
}

#[test]
fn uplink_address6_dhcpv6_then_slaac_after_a_reload() {
    common::require_root_and(&["ip", "nft", "dhcpcd"]);
    let b = Site::new();
    // lan has IPv6: the gateway forwards IPv6, so the kernel ignores RAs unless accept_ra = 2
    let cfg = |address6: &str| {
        std::fs::write(
            &b.config,
            format!(
                "[uplink]\ninterface = \"{}\"\naddress = \"198.19.0.2/30\"\ngateway = \"198.19.0.1\"\naddress6 = \"{address6}\"\n\n\
                 [segments.lan]\ninterface = \"lan0\"\nsubnet = \"198.18.60.0/24\"\ngateway = \"198.18.60.1\"\ninternet = true\nsubnet6 = \"fd00:db8:60::/64\"\n\n\
                 [segments.adm]\ninterface = \"adm0\"\nsubnet = \"198.18.61.0/24\"\ngateway = \"198.18.61.1\"\nmanagement = true\n",
                b.uplink
            ),
        )
        .unwrap();
    };
    let up6 = || {
        b.gw.ok(&[
            "ip", "-6", "-o", "addr", "show", "dev", &b.uplink, "scope", "global",
        ])
    };
    let default6 = || b.gw.ok(&["ip", "-6", "route", "show", "default"]);

    // address6 = "dhcpv6": dhcpcd takes an address from the upstream's pool (IA_NA); the
    // default route comes from the upstream's RAs although the gateway forwards
    cfg("dhcpv6");
    let router = upstream_router(&b, "stateful");
    let run = b.run("run.log");
    wait_or(
        "a DHCPv6 address on the uplink",
        Duration::from_secs(30),
        || up6().contains("2001:db8:ff::1"),
        || format!("{}\n{}", up6(), b.log("run.log")),
    );
    let a = up6();
    let leased = a
        .split_whitespace()
        .find(|w| w.starts_with("2001:db8:ff::1"))
        .unwrap();
    let iid = u16::from_str_radix(
        leased
            .split("::")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap(),
        16,
    )
    .unwrap();
    assert!((0x1000..=0x1fff).contains(&iid), "{a}");
    assert!(
        !a.contains("2001:db8:ff:0:"),
        "SLAAC with address6 = dhcpv6: {a}"
    );
    wait_or(
        "the default route from the RA with address6 = dhcpv6",
        Duration::from_secs(30),
        || default6().contains("via fe80::"),
        || format!("{}\n{}", default6(), b.log("run.log")),
    );

    // a reload to address6 = "slaac": the kernel numbers the uplink from the RAs; the DHCPv6
    // client stops (slaac without prefix_delegation needs none)
    drop(router);
    let _router = upstream_router(&b, "stateless");
    cfg("slaac");
    // SAFETY: SIGHUP to the daemon this test started.
    unsafe {
        libc_kill(run.0.id() as i32, 1);
    }
    wait_or(
        "a SLAAC address on the uplink",
        Duration::from_secs(30),
        || up6().contains("2001:db8:ff:0:"),
        || format!("{}\n{}", up6(), b.log("run.log")),
    );
    b.gw.ok(&["ip", "-6", "route", "flush", "default"]);
    wait_or(
        "the default route from the RA",
        Duration::from_secs(30),
        || default6().contains("via fe80::"),
        || format!("{}\n{}", default6(), b.log("run.log")),
    );
    drop(run);
}
