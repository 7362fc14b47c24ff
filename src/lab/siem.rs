//! `bulkhead lab up --siem`: a SIEM host running Debian's rsyslogd at the address of each
//! UDP/TCP `[[logging.targets]]` receiver inside a segment (the management segment in the
//! shipped config), writing what it receives as RFC 5424 to `siem.log` in the lab
//! directory; `lab verify` then shows the drops and alerts that arrived there.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{Lab, LabError, LabState, io, ns_run};
use crate::model::{Model, Transport};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SiemState {
    pub ns: String,
    /// Where rsyslog listens: `udp:ADDR:PORT`, `tcp:ADDR:PORT`.
    pub listens: Vec<String>,
    pub log: PathBuf,
}

/// What reached the SIEM.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub events: usize,
    pub by_kind: BTreeMap<String, usize>,
    /// The last drop and alert messages.
    pub drops: Vec<String>,
    pub alerts: Vec<String>,
}

/// Create the SIEM namespace on the targets' segments and start rsyslogd there.
pub fn start(lab: &Lab, m: &Model, st: &mut LabState) -> Result<(), LabError> {
    let mut hosts: BTreeMap<Ipv4Addr, (String, Vec<(Transport, u16)>)> = BTreeMap::new();
    for t in &m.logging.targets {
        if t.transport == Transport::Tls {
            continue;
        }
        let Some(seg) = m.segment_of(t.host) else {
            continue;
        };
        hosts
            .entry(t.host)
            .or_insert_with(|| (seg.name.clone(), Vec::new()))
            .1
            .push((t.transport, t.port));
    }
    if hosts.is_empty() {
        return Err(LabError::Setup(
            "--siem: the config has no udp or tcp [[logging.targets]] receiver inside a segment"
                .into(),
        ));
    }
    let ns = lab.ns("siem");
    lab.add_ns(st, &ns)?;
    let mut listens = Vec::new();
    let mut inputs = String::new();
    for (i, (addr, (seg, ports))) in hosts.iter().enumerate() {
        let s = m.segment(seg).expect("target segment");
        let sw = lab.ns(&format!("sw-{seg}"));
        let ifname = format!("eth{i}");
        lab.veth(&ns, &ifname, &sw, &format!("siem{i}"))?;
        ns_run(
            &sw,
            &["ip", "link", "set", &format!("siem{i}"), "master", "br0"],
        )?;
        let a = Ipv4Net::new(*addr, s.subnet.prefix_len()).expect("prefix");
        ns_run(&ns, &["ip", "addr", "add", &a.to_string(), "dev", &ifname])?;
        if i == 0 {
            ns_run(
                &ns,
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
        for (tr, port) in ports {
            let (module, name) = match tr {
                Transport::Udp => ("imudp", "udp"),
                _ => ("imtcp", "tcp"),
            };
            inputs.push_str(&format!(
                "input(type=\"{module}\" address=\"{addr}\" port=\"{port}\" ruleset=\"siem\")\n"
            ));
            listens.push(format!("{name}:{addr}:{port}"));
        }
    }
    let log = lab.dir.join("siem.log");
    let work = lab.dir.join("siem-work");
    std::fs::create_dir_all(&work).map_err(io("creating the SIEM directory"))?;
    let conf = format!(
        "global(workDirectory=\"{}\" maxMessageSize=\"64k\" net.enableDNS=\"off\")\nmodule(load=\"imudp\")\nmodule(load=\"imtcp\")\n{inputs}ruleset(name=\"siem\") {{ action(type=\"omfile\" file=\"{}\" template=\"RSYSLOG_SyslogProtocol23Format\") }}\n",
        work.display(),
        log.display()
    );
    let conf_path = lab.dir.join("siem-rsyslog.conf");
    std::fs::write(&conf_path, conf).map_err(io("writing the SIEM's rsyslog config"))?;
    let pid = lab.dir.join("siem-rsyslog.pid");
    lab.spawn(
        st,
        &ns,
        &[
            "rsyslogd",
            "-n",
            "-f",
            &conf_path.to_string_lossy(),
            "-i",
            &pid.to_string_lossy(),
        ],
        "siem-rsyslog.log",
    )?;
    // wait for the TCP listeners (UDP needs no wait)
    let deadline = Instant::now() + Duration::from_secs(10);
    for l in listens.iter().filter(|l| l.starts_with("tcp:")) {
        let want = l.trim_start_matches("tcp:").to_string();
        while !ns_run(&ns, &["ss", "-ltnH"])?.contains(&want) {
            if Instant::now() > deadline {
                return Err(LabError::Setup(format!(
                    "the SIEM's rsyslogd does not listen on {want}: {}",
                    std::fs::read_to_string(lab.dir.join("siem-rsyslog.log")).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    st.siem = Some(SiemState { ns, listens, log });
    Ok(())
}

/// Read what the SIEM received.
pub fn report(s: &SiemState) -> Report {
    let text = std::fs::read_to_string(&s.log).unwrap_or_default();
    let mut r = Report::default();
    for line in text.lines() {
        let Some(p) = crate::logship::format::parse_rfc5424(line) else {
            continue;
        };
        r.events += 1;
        *r.by_kind.entry(p.msgid.clone()).or_default() += 1;
        match p.msgid.as_str() {
            "drop" => r.drops.push(p.msg.clone()),
            "alert" => r.alerts.push(p.msg.clone()),
            _ => {}
        }
    }
    let keep = |v: &mut Vec<String>, n: usize| {
        let cut = v.len().saturating_sub(n);
        v.drain(..cut);
    };
    keep(&mut r.drops, 5);
    keep(&mut r.alerts, 5);
    r
}

/// Wait (a little) for drops to arrive after the probes, then report.
pub fn report_after_probes(s: &SiemState, before: usize) -> Report {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = report(s);
        let drops = r.by_kind.get("drop").copied().unwrap_or(0);
        if drops > before || Instant::now() > deadline {
            // let the rest of the burst land
            std::thread::sleep(Duration::from_millis(500));
            return report(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
