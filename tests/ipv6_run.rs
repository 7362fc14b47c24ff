//! IPv6 through `bulkhead run`: on a segment with `subnet6` and `mode = "stateful"` dhcpcd -6
//! gets a DHCPv6 lease (and `bulkhead leases` lists it); on a `slaac` segment the kernel's
//! own SLAAC numbers the client and takes a default route via the gateway's link-local; a
//! SIGHUP reload that renumbers the slaac segment gives the client the new prefix with the
//! old one deprecated; one that drops its subnet6 sends its final RA, and the client loses
//! that default route.
//!
//! Needs root, `ip`, dhcpcd and nft. Namespaces are named with the test's pid and removed on
//! drop; only processes started here are killed, by pid. Addresses: 198.18.0.0/15 and
//! 2001:db8::/32.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Netns;

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

struct Kid(Child);

impl Kid {
    fn term(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = bulkhead::sys::proc::terminate(self.0.id());
            let _ = self.0.wait();
        }
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = bulkhead::sys::proc::kill(self.0.id());
            let _ = self.0.wait();
        }
    }
}

const CONFIG: &str = r#"[uplink]
interface = "wan0"
address = "198.18.80.2/24"
gateway = "198.18.80.1"

[segments.lan]
interface = "lan0"
subnet = "198.18.81.0/24"
gateway = "198.18.81.1"
subnet6 = "2001:db8:81::/64"
management = true
[segments.lan.dhcp]
ranges = ["198.18.81.100-198.18.81.150"]
dns = ["2001:db8:81::53"]
domain = "lan.example"
[segments.lan.dhcp6]
mode = "stateful"

[segments.iot]
interface = "iot0"
subnet = "198.18.82.0/24"
gateway = "198.18.82.1"
subnet6 = "2001:db8:82::/64"
"#;

fn veth(gw: &Netns, gwif: &str, cl: &Netns, clif: &str) {
    let st = Command::new("ip")
        .args([
            "link", "add", gwif, "netns", &gw.name, "type", "veth", "peer", "name", clif,
        ])
        .args(["netns", &cl.name])
        .status()
        .unwrap();
    assert!(st.success());
    cl.ok(&[
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{clif}.accept_dad=0"),
    ]);
    cl.ok(&["ip", "link", "set", clif, "up"]);
}

fn bulkhead(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .arg("-c")
        .arg(dir.join("box.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn slaac_and_dhcpv6_through_bulkhead_run_and_a_reload_withdraws_a_segment() {
    common::require_root_and(&["ip", "dhcpcd", "nft"]);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let gw = Netns::new("v6g");
    let lan = Netns::new("v6l");
    let iot = Netns::new("v6i");
    gw.ok(&["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"]);
    gw.ok(&[
        "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "wan0p",
    ]);
    // Unique client interface names: dhcpcd keeps per-interface sockets in the shared /run.
    let lanif = format!("v6l{}", std::process::id() % 10000);
    let iotif = format!("v6i{}", std::process::id() % 10000);
    veth(&gw, "lan0", &lan, &lanif);
    veth(&gw, "iot0", &iot, &iotif);
    iot.ok(&[
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{iotif}.accept_ra=1"),
    ]);
    std::fs::write(dir.join("box.toml"), CONFIG).unwrap();
    let log = std::fs::File::create(dir.join("run.log")).unwrap();
    let mut run = Kid(gw
        .cmd(&[env!("CARGO_BIN_EXE_bulkhead")])
        .arg("-c")
        .arg(dir.join("box.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("run")
        .env("BULKHEAD_LOG", "debug")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap());
    let run_log = || std::fs::read_to_string(dir.join("run.log")).unwrap_or_default();
    wait_for("bulkhead run ready", Duration::from_secs(30), || {
        dir.join("state/ready").exists()
    });
    // The gateway's addresses are on the segments.
    wait_for("gateway6 on lan0", Duration::from_secs(5), || {
        gw.ok(&["ip", "-6", "addr", "show", "dev", "lan0"])
            .contains("2001:db8:81::1/64")
    });
    assert!(
        gw.ok(&["ip", "-6", "addr", "show", "dev", "iot0"])
            .contains("2001:db8:82::1/64")
    );

    // slaac segment: the kernel's own SLAAC and a default route via the gateway.
    let gw_ll = {
        let out = gw.ok(&[
            "ip", "-6", "-o", "addr", "show", "dev", "iot0", "scope", "link",
        ]);
        let w: Vec<&str> = out.split_whitespace().collect();
        w[w.iter().position(|x| *x == "inet6").unwrap() + 1]
            .split('/')
            .next()
            .unwrap()
            .to_string()
    };
    wait_for(
        "a SLAAC address on the iot client",
        Duration::from_secs(30),
        || {
            iot.ok(&["ip", "-6", "addr", "show", "dev", &iotif, "scope", "global"])
                .contains("inet6 2001:db8:82:0:")
        },
    );
    wait_for(
        "the iot client's default route",
        Duration::from_secs(10),
        || {
            iot.ok(&["ip", "-6", "route", "show", "default"])
                .contains(&format!("via {gw_ll}"))
        },
    );

    // stateful segment: dhcpcd -6 gets an address from the default pool.
    let hook = dir.join("hook.sh");
    let hook_log = dir.join("hook.log");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\n{{ env; echo --; }} >> {}\n", hook_log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let conf = dir.join("dhcpcd.conf");
    std::fs::write(
        &conf,
        "ipv6only\nipv6rs\noption dhcp6_name_servers, dhcp6_domain_search\n",
    )
    .unwrap();
    let _dhcpcd = Kid(lan
        .cmd(&["dhcpcd", "-6", "-B", "-d", "-f"])
        .arg(&conf)
        .arg("-c")
        .arg(&hook)
        .arg(&lanif)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("dhcpcd.out")).unwrap())
        .spawn()
        .unwrap());
    let mut addr = String::new();
    wait_for("dhcpcd -6 bound", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&hook_log).unwrap_or_default();
        let bound = text.split("--\n").find(|r| r.contains("reason=BOUND6"));
        if let Some(r) = bound {
            addr = r
                .lines()
                .find_map(|l| l.strip_prefix("new_dhcp6_ia_na1_ia_addr1="))
                .unwrap_or_default()
                .to_string();
            return true;
        }
        false
    });
    let a: std::net::Ipv6Addr = addr
        .parse()
        .unwrap_or_else(|_| panic!("{addr:?}\n{}", run_log()));
    let n = u128::from(a);
    assert_eq!(
        n >> 64,
        u128::from("2001:db8:81::".parse::<std::net::Ipv6Addr>().unwrap()) >> 64
    );
    assert!(
        (0x1000..=0x1fff).contains(&(n & 0xffff_ffff_ffff_ffff)),
        "{a}"
    );
    let hook_text = std::fs::read_to_string(&hook_log).unwrap();
    assert!(
        hook_text.contains("new_dhcp6_name_servers=2001:db8:81::53"),
        "{hook_text}"
    );
    // The lease is in the journal beside the DHCPv4 one, and `bulkhead leases` lists it.
    assert!(dir.join("state/dhcp/leases6.journal").exists());
    let listing = bulkhead(dir, &["leases"]);
    assert!(
        listing.contains(&a.to_string()) && listing.contains("1 DHCPv6 leases"),
        "{listing}"
    );

    // Renumber iot: the new prefix is announced at once, the old one deprecated
    // (preferred lifetime 0), and the gateway address moves.
    let old = iot.ok(&["ip", "-6", "addr", "show", "dev", &iotif, "scope", "global"]);
    std::fs::write(
        dir.join("box.toml"),
        CONFIG.replace("2001:db8:82::/64", "2001:db8:92::/64"),
    )
    .unwrap();
    bulkhead::sys::proc::signal(run.0.id(), libc::SIGHUP).unwrap();
    wait_for(
        "a SLAAC address in the new prefix",
        Duration::from_secs(15),
        || {
            iot.ok(&["ip", "-6", "addr", "show", "dev", &iotif, "scope", "global"])
                .contains("inet6 2001:db8:92:0:")
        },
    );
    wait_for(
        "the old address deprecated",
        Duration::from_secs(10),
        || {
            let a = iot.ok(&["ip", "-6", "addr", "show", "dev", &iotif, "scope", "global"]);
            let olds: Vec<&str> = a
                .split("inet6 ")
                .filter(|x| x.starts_with("2001:db8:82:0:"))
                .collect();
            !olds.is_empty()
                && olds
                    .iter()
                    .all(|x| x.contains("deprecated") && x.contains("preferred_lft 0sec"))
        },
    );
    assert!(old.contains("2001:db8:82:0:"), "{old}");
    wait_for("gateway6 moved", Duration::from_secs(5), || {
        let a = gw.ok(&["ip", "-6", "addr", "show", "dev", "iot0"]);
        a.contains("2001:db8:92::1/64") && !a.contains("2001:db8:82::1/64")
    });

    // Reload without iot's subnet6: its final RA takes the client's default route away.
    std::fs::write(
        dir.join("box.toml"),
        CONFIG.replace("subnet6 = \"2001:db8:82::/64\"\n", ""),
    )
    .unwrap();
    bulkhead::sys::proc::signal(run.0.id(), libc::SIGHUP).unwrap();
    wait_for(
        "the iot default route withdrawn",
        Duration::from_secs(15),
        || {
            !iot.ok(&["ip", "-6", "route", "show", "default"])
                .contains("via")
        },
    );
    wait_for("gateway6 off iot0", Duration::from_secs(5), || {
        !gw.ok(&["ip", "-6", "addr", "show", "dev", "iot0"])
            .contains("2001:db8:82::1/64")
    });
    // The stateful segment keeps serving: the lease is still listed after the reload.
    assert!(bulkhead(dir, &["leases"]).contains(&a.to_string()));
    assert!(run_log().contains("IPv6 stopped"), "{}", run_log());
    run.term();
}
