//! Time: chrony keeps the gateway's clock with the servers of `[system] ntp`. `bulkhead run`
//! writes its config and runs `chronyd` in the foreground as its child (like the uplink's DHCP
//! client); `bulkhead status` shows the sync state from `chronyc tracking`. Without servers
//! (the default) no chronyd runs; in the lab none runs either (it would set the host's clock).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::model::Model;

/// chronyd's command socket (chronyc's default place).
pub const SOCKET_DIR: &str = "/run/chrony";

/// The chrony config for the model's servers.
pub fn config(m: &Model, state_dir: &Path) -> String {
    let mut s = String::from("# written by bulkhead run from [system] ntp\n");
    for srv in &m.ntp {
        s.push_str(&format!("server {srv} iburst\n"));
    }
    s.push_str(&format!(
        "driftfile {}\n\
         # no RTC to trust on an appliance: step whenever the clock is more than 1 s off\n\
         makestep 1 -1\n\
         rtcsync\n\
         # no UDP command port; chronyc over the unix socket only\n\
         cmdport 0\n\
         bindcmdaddress {SOCKET_DIR}/chronyd.sock\n\
         pidfile {SOCKET_DIR}/chronyd.pid\n",
        state_dir.join("chrony.drift").display()
    ));
    s
}

fn conf_path(state_dir: &Path) -> PathBuf {
    state_dir.join("chrony.conf")
}

/// Start chronyd, or None without servers, in the lab, or when it cannot run.
pub fn start(m: &Model, state_dir: &Path, lab: bool) -> Option<Child> {
    if m.ntp.is_empty() || lab {
        return None;
    }
    let conf = conf_path(state_dir);
    if let Err(e) = std::fs::write(&conf, config(m, state_dir)) {
        tracing::error!("cannot write {}: {e}", conf.display());
        return None;
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(SOCKET_DIR);
    }
    // -d: foreground, log to stderr (the console); -u root: the image has no _chrony user
    match Command::new("chronyd")
        .args(["-d", "-u", "root", "-f"])
        .arg(&conf)
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(c) => {
            let servers: Vec<String> = m.ntp.iter().map(|s| s.to_string()).collect();
            tracing::info!(servers = ?servers, pid = c.id(), "NTP client (chronyd) started");
            Some(c)
        }
        Err(e) => {
            tracing::error!("cannot start chronyd for [system] ntp: {e}");
            None
        }
    }
}

pub fn stop(child: Option<Child>) {
    if let Some(mut c) = child {
        let _ = crate::sys::proc::terminate(c.id());
        let _ = c.wait();
    }
}

/// Parse `chronyc -c tracking` (CSV): the reference, stratum, offset and leap status.
pub fn parse_tracking(csv: &str) -> Option<serde_json::Value> {
    let f: Vec<&str> = csv.trim().split(',').collect();
    if f.len() < 14 {
        return None;
    }
    let leap = f[13];
    let synced = leap != "Not synchronised" && f[2] != "0";
    Some(serde_json::json!({
        "state": if synced { "synced" } else { "unsynchronised" },
        "synced": synced,
        "reference": f[1],
        "stratum": f[2].parse::<u32>().ok(),
        "offset_s": f[4].parse::<f64>().ok(),
        "leap": leap,
    }))
}

/// The `time` section of `bulkhead status`.
pub fn status(m: &Model) -> serde_json::Value {
    let servers: Vec<String> = m.ntp.iter().map(|s| s.to_string()).collect();
    let mut v = if m.ntp.is_empty() {
        serde_json::json!({"state": "off (no [system] ntp servers)", "synced": false})
    } else {
        Command::new("chronyc")
            .args(["-c", "-n", "tracking"])
            .stdin(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| parse_tracking(&String::from_utf8_lossy(&o.stdout)))
            .unwrap_or_else(
                || serde_json::json!({"state": "no answer from chronyd", "synced": false}),
            )
    };
    v["ntp"] = serde_json::json!(servers);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_synced_and_not() {
        let ok = "C0000201,192.0.2.1,3,1733468000.123,-0.000012345,0.000001,0.00002,-1.2,0.001,0.05,0.01,0.002,64.2,Normal\n";
        let v = parse_tracking(ok).unwrap();
        assert_eq!(v["state"], "synced");
        assert_eq!(v["stratum"], 3);
        let no = "00000000,,0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,1.0,0.0,Not synchronised\n";
        assert_eq!(parse_tracking(no).unwrap()["synced"], false);
        assert!(parse_tracking("garbage").is_none());
    }

    #[test]
    fn config_lists_the_servers() {
        let (m, _) = crate::plan::load_str(
            "t.toml",
            "[system]\nntp = [\"192.0.2.123\", \"ntp.example.net\"]\n[uplink]\ninterface = \"wan0\"\n[segments.a]\ninterface = \"lan0\"\nsubnet = \"198.18.2.0/24\"\ngateway = \"198.18.2.1\"\nmanagement = true\n",
        )
        .unwrap();
        let c = config(&m, Path::new("/var/lib/bulkhead"));
        assert!(
            c.contains("server 192.0.2.123 iburst\nserver ntp.example.net iburst\n"),
            "{c}"
        );
        assert!(
            c.contains("driftfile /var/lib/bulkhead/chrony.drift"),
            "{c}"
        );
        assert!(c.contains("cmdport 0"), "{c}");
    }
}
