//! Shared helpers of the integration tests: the golden configs, and network namespaces that
//! clean up after themselves.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// (name, path) of every golden config: the shipped one and those under tests/golden.
pub fn golden_configs() -> Vec<(String, PathBuf)> {
    let mut v = vec![(
        "shipped".to_string(),
        root().join("overlay/etc/bulkhead/bulkhead.toml"),
    )];
    let mut more: Vec<_> = std::fs::read_dir(root().join("tests/golden"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    more.sort();
    for p in more {
        v.push((p.file_stem().unwrap().to_string_lossy().into_owned(), p));
    }
    v
}

pub fn is_root() -> bool {
    bulkhead::sys::proc::is_root()
}

/// Fail (never skip) a test that needs root: network namespaces, the kernel's netfilter.
pub fn require_root() {
    assert!(
        is_root(),
        "needs root: run as root (tools/test does); network namespaces and the kernel's netfilter need it"
    );
}

/// Fail (never skip) a test that needs root and the kernel's netfilter, saying why.
#[macro_export]
macro_rules! require_root {
    () => {
        common::require_root();
    };
}

/// The Debian package and the `tools/setup` line that install a tool the tests run.
pub fn tool_source(tool: &str) -> (&'static str, &'static str) {
    match tool {
        "dhclient" => ("isc-dhcp-client", "tools/setup dhcp"),
        "dhcpcd" => ("dhcpcd-base", "tools/setup dhcp"),
        "busybox" | "udhcpc" => ("busybox-static", "tools/setup dhcp"),
        "rsyslogd" => ("rsyslog", "tools/setup syslog"),
        "certtool" => ("gnutls-bin", "tools/setup syslog"),
        "logger" => ("bsdutils", "tools/setup syslog"),
        "ip" | "ss" => ("iproute2", "tools/setup"),
        "curl" => ("curl", "tools/setup"),
        "openssl" => ("openssl", "tools/setup"),
        "python3" => ("python3", "tools/setup"),
        "nft" => ("nftables", "tools/setup"),
        "iptables" | "iptables-restore" | "iptables-save" => ("iptables", "tools/setup"),
        "ipset" => ("ipset", "tools/setup"),
        "ssh-keygen" => ("openssh-client", "tools/setup"),
        "setpriv" => ("util-linux", "tools/setup"),
        "promtool" | "prometheus" => ("prometheus", "tools/setup"),
        "nc" => ("netcat-openbsd", "tools/setup"),
        "kea-dhcp6" => ("kea-dhcp6-server", "tools/setup"),
        _ => ("the package that provides it", "tools/setup"),
    }
}

/// The tool is on PATH or in one of the system's binary directories.
pub fn have_tool(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .any(|d| d.join(tool).is_file())
}

/// Fail (never skip) a test that needs root and these tools, naming what is missing and
/// what installs it.
pub fn require_root_and(tools: &[&str]) {
    require_root();
    for t in tools {
        let (pkg, setup) = tool_source(t);
        assert!(have_tool(t), "needs {t}: install {pkg} ({setup})");
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A network namespace that is deleted when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!(
            "bht-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip netns add");
        assert!(st.success(), "ip netns add {name} failed");
        let ns = Netns { name };
        ns.ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// A command to run inside the namespace.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Run a command inside the namespace.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// Run a command with standard input from a file.
    pub fn run_file(&self, args: &[&str], stdin: &Path) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(std::fs::File::open(stdin).unwrap())
            .output()
            .expect("ip netns exec")
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "in {}: {:?} failed: {}{}",
            self.name,
            args,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A temporary directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "bulkhead-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
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

/// One busybox udhcpc run in quit-after-lease mode in namespace `ns` (extra options such as
/// `-x 0x0c:HEX` appended); the leased address. The script it runs is written into `dir`.
pub fn udhcpc(ns: &str, iface: &str, dir: &Path, extra: &[&str]) -> Option<String> {
    let script = dir.join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] && echo \"LEASE $ip\"\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "busybox", "udhcpc", "-f", "-q", "-n", "-i", iface,
        ])
        .args(["-t", "3", "-T", "1", "-s"])
        .arg(&script)
        .args(extra)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("LEASE ").map(str::to_string))
}

/// Run `f` on a thread inside the network namespace `ns`.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on a valid namespace fd; affects only this thread.
        let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}");
        f()
    })
}
