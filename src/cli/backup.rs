//! `bulkhead backup -o FILE [--with-secrets]` and `bulkhead restore FILE`.
//!
//! A backup is one gzip'd tar archive (made and read with the system's `tar`, busybox's on
//! the appliance) of a directory `bulkhead-backup/`:
//!
//! ```text
//! MANIFEST          format=bulkhead-backup-1, version, created, with_secrets, files
//! bulkhead.toml     the config in effect
//! authorized_keys   the admin SSH keys (when there are any)
//! ssh/              the SSH host keys (so that a replacement box keeps its identity)
//! dhcp/             the lease store
//! tls/NAME.*        the log targets' CA and client certificates; their private keys only
//!                   with --with-secrets
//! ```
//!
//! A restore unpacks into a temporary directory, refuses entries that would land outside
//! it, validates the config with the running firmware (every finding as FILE:LINE:COL, exit
//! 2, nothing touched), then puts the keys and leases in place and applies the config with
//! commit-confirm like `bulkhead setup` (`bulkhead confirm` keeps it; otherwise the previous
//! config comes back and the saved one is left as it was).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::Args;

use super::{CliError, Global};

pub const FORMAT: &str = "bulkhead-backup-1";
const TOP: &str = "bulkhead-backup";

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Write the archive here (mode 0600: it holds the SSH host keys).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Also include the log targets' private TLS keys.
    #[arg(long)]
    pub with_secrets: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The archive made by `bulkhead backup`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The restored config comes back out unless `bulkhead confirm` arrives within this
    /// time (0: kept at once).
    #[arg(long, default_value = super::setup::DEFAULT_CONFIRM)]
    pub confirm_within: String,
}

/// The config in effect and where a restored one is saved: on the appliance (the shipped
/// config path) the saved config on the data partition, else the config file itself.
fn config_paths(g: &Global) -> (PathBuf, PathBuf) {
    let saved = Path::new(super::setup::SAVED_PATH);
    if g.config == Path::new(crate::config::DEFAULT_PATH) {
        let cur = if saved.exists() {
            saved.to_path_buf()
        } else {
            g.config.clone()
        };
        (cur, saved.to_path_buf())
    } else {
        (g.config.clone(), g.config.clone())
    }
}

/// A private (0700) scratch directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        for i in 0..100u32 {
            let p = base.join(format!(
                "bulkhead-backup.{}.{}.{i}",
                std::process::id(),
                crate::dhcp::leases::unix_now()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => return Ok(TempDir(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("no free temporary directory name"))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    if !from.is_dir() {
        return Ok(0);
    }
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            n += copy_tree(&e.path(), &to.join(e.file_name()))?;
        } else if t.is_file() && !e.file_name().to_string_lossy().ends_with(".lock") {
            // (lock files belong to the running daemon)
            std::fs::copy(e.path(), to.join(e.file_name()))?;
            n += 1;
        }
    }
    Ok(n)
}

fn tar(args: &[&std::ffi::OsStr]) -> Result<String, String> {
    let o = Command::new("tar")
        .args(args)
        .output()
        .map_err(|e| format!("tar: {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into())
    } else {
        Err(format!(
            "tar: {}",
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .replace('\n', "; ")
        ))
    }
}

pub fn backup(g: &Global, a: BackupArgs) -> Result<ExitCode, CliError> {
    let (cur, _) = config_paths(g);
    let text = std::fs::read_to_string(&cur)
        .map_err(|e| CliError::Usage(format!("reading the config {}: {e}", cur.display())))?;
    let m = match crate::plan::load_str(&cur.display().to_string(), &text) {
        Ok((m, _)) => m,
        Err(r) => {
            eprint!("{r}");
            eprintln!("bulkhead backup: the config in effect does not validate; nothing written");
            return Ok(ExitCode::from(2));
        }
    };
    let state = g.state_dir.clone().unwrap_or_else(|| m.state_dir.clone());
    let tmp = TempDir::new()?;
    let top = tmp.path().join(TOP);
    std::fs::create_dir_all(&top)?;
    let mut files = vec!["bulkhead.toml".to_string()];
    std::fs::write(top.join("bulkhead.toml"), &text)?;
    let keys = super::setup::keys_path(&cur);
    if keys.is_file() {
        std::fs::copy(&keys, top.join("authorized_keys"))?;
        files.push("authorized_keys".into());
    }
    if copy_tree(&state.join("ssh"), &top.join("ssh"))? > 0 {
        files.push("ssh/".into());
    }
    if copy_tree(&crate::supervisor::dhcp_dir(&state), &top.join("dhcp"))? > 0 {
        files.push("dhcp/".into());
    }
    let mut skipped = Vec::new();
    for t in &m.logging.targets {
        for (kind, p, secret) in [
            ("ca", &t.ca_file, false),
            ("cert", &t.cert_file, false),
            ("key", &t.key_file, true),
        ] {
            let Some(p) = p else { continue };
            if secret && !a.with_secrets {
                skipped.push(p.display().to_string());
                continue;
            }
            if p.is_file() {
                std::fs::create_dir_all(top.join("tls"))?;
                let name = format!("tls/{}.{kind}.pem", t.name);
                std::fs::copy(p, top.join(&name))?;
                files.push(format!("{name}={}", p.display()));
            }
        }
    }
    let manifest = format!(
        "format={FORMAT}\nversion={}\ncreated={}\nwith_secrets={}\nconfig={}\nfiles={}\n",
        crate::upgrade::image_version().unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
        crate::dhcp::leases::unix_now(),
        u8::from(a.with_secrets),
        cur.display(),
        files.join(" ")
    );
    std::fs::write(top.join("MANIFEST"), manifest)?;
    let out = super::setup::absolute(&a.output);
    let part = out.with_extension("part");
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&part)?;
    }
    tar(&[
        "-czf".as_ref(),
        part.as_os_str(),
        "-C".as_ref(),
        tmp.path().as_os_str(),
        TOP.as_ref(),
    ])
    .map_err(CliError::Usage)?;
    std::fs::rename(&part, &out)?;
    println!(
        "bulkhead backup: {} ({})",
        out.display(),
        files
            .iter()
            .map(|f| f.split('=').next().unwrap_or(f))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !skipped.is_empty() {
        println!(
            "bulkhead backup: private TLS keys left out (use --with-secrets): {}",
            skipped.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// An archive entry that would land outside the directory it is unpacked into.
pub fn unsafe_entry(name: &str) -> bool {
    let n = name.trim_start_matches("./");
    n.starts_with('/')
        || n.split('/').any(|c| c == "..")
        || !(n == TOP || n == format!("{TOP}/") || n.starts_with(&format!("{TOP}/")))
}

pub fn restore(g: &Global, a: RestoreArgs) -> Result<ExitCode, CliError> {
    let within = crate::model::addr::parse_duration(&a.confirm_within)
        .map_err(|e| CliError::Usage(format!("--confirm-within: {e}")))?;
    let f = a.file.display().to_string();
    let refuse = |why: String| {
        eprintln!("bulkhead restore: {f}: {why}; nothing was changed");
        Ok(ExitCode::from(2))
    };
    // 1. list and unpack into a private directory
    let list = match tar(&["-tzf".as_ref(), a.file.as_os_str()]) {
        Ok(l) => l,
        Err(e) => return refuse(format!("not a backup archive ({e})")),
    };
    if let Some(bad) = list.lines().find(|l| unsafe_entry(l)) {
        return refuse(format!("entry '{bad}' is outside {TOP}/"));
    }
    let tmp = TempDir::new()?;
    if let Err(e) = tar(&[
        "-xzf".as_ref(),
        a.file.as_os_str(),
        "-C".as_ref(),
        tmp.path().as_os_str(),
    ]) {
        return refuse(format!("cannot unpack: {e}"));
    }
    let top = tmp.path().join(TOP);
    let manifest = crate::upgrade::parse_kv(
        &std::fs::read_to_string(top.join("MANIFEST")).unwrap_or_default(),
    );
    if manifest.get("format").map(String::as_str) != Some(FORMAT) {
        return refuse(format!("no {FORMAT} MANIFEST in the archive"));
    }
    // 2. the config, validated by this firmware before anything is touched
    let (_, save) = config_paths(g);
    let cand = crate::supervisor::gateway::candidate_path(&save);
    let text = std::fs::read_to_string(top.join("bulkhead.toml")).unwrap_or_default();
    let label = format!("{f}:{TOP}/bulkhead.toml");
    let m = match crate::plan::load_str(&label, &text) {
        Ok((m, w)) => {
            if !w.diagnostics.is_empty() {
                eprint!("{w}");
            }
            m
        }
        Err(r) => {
            eprint!("{r}");
            let n = r.errors().count();
            return refuse(format!(
                "the config in the backup does not validate with this firmware ({n} error{})",
                if n == 1 { "" } else { "s" }
            ));
        }
    };
    let state = g.state_dir.clone().unwrap_or_else(|| m.state_dir.clone());
    // 3. keys, leases, TLS files, then the config with commit-confirm
    let keys = super::setup::keys_path(&save);
    if top.join("authorized_keys").is_file() {
        std::fs::create_dir_all(keys.parent().unwrap_or(Path::new("/")))?;
        std::fs::copy(top.join("authorized_keys"), &keys)?;
    }
    let nssh = copy_tree(&top.join("ssh"), &state.join("ssh"))?;
    let nlease = copy_tree(&top.join("dhcp"), &crate::supervisor::dhcp_dir(&state))?;
    if let Some(files) = manifest.get("files") {
        for (name, dest) in files.split(' ').filter_map(|e| e.split_once('=')) {
            let src = top.join(name);
            if src.is_file() && name.starts_with("tls/") && !name.contains("..") {
                let dest = Path::new(dest);
                if let Some(d) = dest.parent() {
                    std::fs::create_dir_all(d)?;
                }
                std::fs::copy(&src, dest)?;
            }
        }
    }
    crate::sys::fs::write_atomic(&cand, text.as_bytes(), 0o600)?;
    println!(
        "bulkhead restore: config valid; restored {nssh} SSH host key file(s), {nlease} lease file(s){}",
        if keys.is_file() {
            ", the admin keys"
        } else {
            ""
        }
    );
    let within = (within > 0).then_some(within);
    let (view, pending) = super::setup::apply_config(g, &m, &cand, &save, within)?;
    println!("bulkhead restore: applied ({} changes)", view.changes.len());
    if pending {
        println!(
            "bulkhead restore: run `bulkhead confirm` within {} to keep it; otherwise the previous config comes back",
            a.confirm_within
        );
    } else {
        println!("bulkhead restore: saved as {}", save.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_outside_the_backup_are_unsafe() {
        assert!(!unsafe_entry("bulkhead-backup/"));
        assert!(!unsafe_entry(
            "./bulkhead-backup/ssh/dropbear_ed25519_host_key"
        ));
        assert!(unsafe_entry("/etc/passwd"));
        assert!(unsafe_entry("bulkhead-backup/../../etc/passwd"));
        assert!(unsafe_entry("other/file"));
    }
}
