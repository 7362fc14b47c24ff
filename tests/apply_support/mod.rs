//! Shared helpers for the apply tests: network namespaces (named with the pid, deleted in
//! Drop even on panic), running code inside one, and the test configs.
//!
//! Netlink and the firewall tools run in a namespace through a thread that `setns`es into it
//! before it builds anything: the Applier's rtnetlink socket, `/proc/sys/net` lookups and the
//! `nft`/`iptables` children all follow the calling thread's network namespace, so the whole
//! test stays in one process (assertions, panics and timings stay in the test harness), and
//! tests run in parallel in their own namespaces. Re-executing the test binary under
//! `ip netns exec` would work too but splits every test in two processes.

#![allow(dead_code)]

#[path = "../common/mod.rs"]
pub mod common;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use bulkhead::model::{self, Backend};
use bulkhead::plan::{self, Plan};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Logging for the test, and what every apply test needs: root and the firewall tools.
/// Fails (never skips) without them.
pub fn init() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    common::require_root_and(&["ip", "nft", "iptables", "iptables-restore", "ipset"]);
}

fn unique(tag: &str) -> String {
    format!(
        "bht{}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst),
        tag
    )
}

pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace of this test process.
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(tag: &str) -> Ns {
        let name = unique(tag);
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        Ns { name }
    }

    /// Run a shell command inside the namespace; panics on failure.
    pub fn sh(&self, cmd: &str) -> String {
        sh(&format!("ip netns exec {} sh -c '{}'", self.name, cmd))
    }

    /// Run `f` on a thread that has entered the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                let fd = std::fs::File::open(&path).unwrap();
                // SAFETY: a valid namespace fd; setns only affects this thread.
                let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            });
            match h.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A scratch directory removed in Drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/configs")
        .join(name)
}

pub fn plan(name: &str, backend: Backend) -> Plan {
    let (m, _) = model::load(&config(name)).unwrap_or_else(|r| panic!("{name}: {r:?}"));
    plan::build(&m, Some(backend))
}

/// The gateway namespace for the test config: every port of the config exists (as one end of
/// a veth pair whose other end stays in the same namespace, down).
pub fn gateway(tag: &str) -> Ns {
    let ns = Ns::new(tag);
    for p in ["bhup", "bhlan", "bhsrv", "bhmgmt"] {
        ns.sh(&format!("ip link add {p} type veth peer name {p}-p"));
    }
    ns
}

pub fn nft_table(ns: &Ns) -> String {
    ns.sh("nft list table inet bulkhead")
}

/// IPv4 addresses (with prefix) of an interface, from `ip -j addr`.
pub fn addrs(ns: &Ns, dev: &str) -> Vec<String> {
    let out = ns.sh(&format!("ip -j addr show dev {dev}"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut r = Vec::new();
    for l in v.as_array().unwrap() {
        for a in l["addr_info"].as_array().unwrap() {
            if a["family"] == "inet" {
                r.push(format!(
                    "{}/{}",
                    a["local"].as_str().unwrap(),
                    a["prefixlen"]
                ));
            }
        }
    }
    r
}

pub fn link_json(ns: &Ns, dev: &str) -> serde_json::Value {
    let out = ns.sh(&format!("ip -d -j link show dev {dev}"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

pub fn proc_sys(ns: &Ns, key: &str) -> String {
    ns.sh(&format!("cat /proc/sys/{}", key.replace('.', "/")))
        .trim()
        .to_string()
}
