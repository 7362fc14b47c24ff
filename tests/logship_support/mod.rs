//! Shared by the logship tests and the benchmark helpers: network namespaces with a
//! `bhls-` prefix, a test CA with certificates (certtool), and Debian's rsyslogd run by the
//! test with its own config (UDP, TCP and TLS inputs), writing what it receives to files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static N: AtomicUsize = AtomicUsize::new(0);

#[path = "../common/mod.rs"]
mod common;
pub use common::{Netns, TempDir, require_root_and};

/// Fail (never skip) unless root with rsyslogd and certtool installed.
#[macro_export]
macro_rules! require_siem {
    () => {
        logship_support::require_root_and(&["ip", "rsyslogd", "certtool"]);
    };
}

pub fn run(args: &[&str]) -> String {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A veth pair between two namespaces, with an address (CIDR) on each end.
pub fn link(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    let n = N.fetch_add(1, Ordering::SeqCst);
    let (ta, tb) = (
        format!("bhls{}a{n}", std::process::id() % 100000),
        format!("bhls{}b{n}", std::process::id() % 100000),
    );
    run(&[
        "ip", "link", "add", &ta, "type", "veth", "peer", "name", &tb,
    ]);
    run(&["ip", "link", "set", &ta, "netns", &a.name]);
    run(&["ip", "link", "set", &tb, "netns", &b.name]);
    a.ok(&["ip", "link", "set", &ta, "name", a_if]);
    b.ok(&["ip", "link", "set", &tb, "name", b_if]);
    for (ns, i, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        if !addr.is_empty() {
            ns.ok(&["ip", "addr", "add", addr, "dev", i]);
        }
        ns.ok(&["ip", "link", "set", i, "up"]);
    }
}

/// A CA, a server certificate for `server_ip` and a client certificate, made by certtool.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub fn pki(dir: &Path, server_ip: &str) -> Pki {
    let p = |n: &str| dir.join(n);
    let key = |n: &str| {
        run(&[
            "certtool",
            "--generate-privkey",
            // RSA: ring refused a certtool ECDSA (SEC1) client key in one run ("failed to
            // parse private key"); RSA keys load every time
            "--key-type=rsa",
            "--bits=2048",
            "--outfile",
            p(n).to_str().unwrap(),
        ]);
    };
    let tmpl = |n: &str, body: &str| std::fs::write(p(n), body).unwrap();
    key("ca.key");
    tmpl(
        "ca.tmpl",
        "cn = \"bulkhead test CA\"\nca\ncert_signing_key\nexpiration_days = 2\n",
    );
    run(&[
        "certtool",
        "--generate-self-signed",
        "--load-privkey",
        p("ca.key").to_str().unwrap(),
        "--template",
        p("ca.tmpl").to_str().unwrap(),
        "--outfile",
        p("ca.pem").to_str().unwrap(),
    ]);
    for (name, body) in [
        (
            "server",
            format!(
                "cn = \"siem\"\nip_address = \"{server_ip}\"\ntls_www_server\nsigning_key\nexpiration_days = 2\n"
            ),
        ),
        (
            "client",
            "cn = \"gateway\"\ntls_www_client\nsigning_key\nexpiration_days = 2\n".to_string(),
        ),
    ] {
        key(&format!("{name}.key"));
        tmpl(&format!("{name}.tmpl"), &body);
        run(&[
            "certtool",
            "--generate-certificate",
            "--load-privkey",
            p(&format!("{name}.key")).to_str().unwrap(),
            "--load-ca-certificate",
            p("ca.pem").to_str().unwrap(),
            "--load-ca-privkey",
            p("ca.key").to_str().unwrap(),
            "--template",
            p(&format!("{name}.tmpl")).to_str().unwrap(),
            "--outfile",
            p(&format!("{name}.pem")).to_str().unwrap(),
        ]);
    }
    Pki {
        ca: p("ca.pem"),
        server_cert: p("server.pem"),
        server_key: p("server.key"),
        client_cert: p("client.pem"),
        client_key: p("client.key"),
    }
}

/// rsyslogd in a namespace: UDP and TCP on 514, TLS (gnutls, client certificates required)
/// on 6514; each input written to its own file as RFC 5424 (rsyslog's
/// RSYSLOG_SyslogProtocol23Format, i.e. what rsyslog parsed).
pub struct Rsyslog {
    pub dir: PathBuf,
    pub ns: String,
    conf: PathBuf,
    pid_file: PathBuf,
    child: Option<Child>,
}

impl Rsyslog {
    pub fn new(ns: &Netns, dir: &Path, addr: &str, pki: &Pki) -> Self {
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let f = |n: &str| dir.join(n).display().to_string();
        let conf = format!(
            r#"global(workDirectory="{work}"
       defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}"
       maxMessageSize="64k" net.enableDNS="off")
module(load="imudp")
module(load="imtcp" maxSessions="200")
input(type="imudp" address="{addr}" port="514" ruleset="udp")
input(type="imtcp" address="{addr}" port="514" ruleset="tcp")
input(type="imtcp" address="{addr}" port="6514" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
ruleset(name="udp") {{ action(type="omfile" file="{udp}" template="RSYSLOG_SyslogProtocol23Format") }}
ruleset(name="tcp") {{ action(type="omfile" file="{tcp}" template="RSYSLOG_SyslogProtocol23Format") }}
ruleset(name="tls") {{ action(type="omfile" file="{tls}" template="RSYSLOG_SyslogProtocol23Format") }}
"#,
            work = work.display(),
            ca = pki.ca.display(),
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
            udp = f("udp.log"),
            tcp = f("tcp.log"),
            tls = f("tls.log"),
        );
        let conf_path = dir.join("rsyslog.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut r = Rsyslog {
            dir: dir.to_path_buf(),
            ns: ns.name.clone(),
            conf: conf_path,
            pid_file: dir.join("rsyslogd.pid"),
            child: None,
        };
        r.start(addr);
        r
    }

    pub fn file(&self, transport: &str) -> PathBuf {
        self.dir.join(format!("{transport}.log"))
    }

    /// Start rsyslogd and wait until it listens on TCP 514 and 6514.
    pub fn start(&mut self, addr: &str) {
        let _ = std::fs::remove_file(&self.pid_file);
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "rsyslogd", "-n", "-f"])
            .arg(&self.conf)
            .arg("-i")
            .arg(&self.pid_file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("rsyslogd.err")).unwrap())
            .spawn()
            .expect("start rsyslogd");
        self.child = Some(child);
        let t0 = Instant::now();
        loop {
            let o = Command::new("ip")
                .args(["netns", "exec", &self.ns, "ss", "-ltnH"])
                .output()
                .unwrap();
            let s = String::from_utf8_lossy(&o.stdout);
            if s.contains(&format!("{addr}:514")) && s.contains(&format!("{addr}:6514")) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "rsyslogd did not listen: {}",
                std::fs::read_to_string(self.dir.join("rsyslogd.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop rsyslogd (SIGTERM to its pid) and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling the pid of a child we started and have not reaped.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let t0 = Instant::now();
            loop {
                if c.try_wait().unwrap().is_some() {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(10) {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn lines(&self, transport: &str) -> Vec<String> {
        std::fs::read_to_string(self.file(transport))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Wait until `f` holds, or fail after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
