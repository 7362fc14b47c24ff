//! The crate's layering, checked on its source: `unsafe` lives in `src/sys` only, the model
//! does not reach into the plan, and the config validator is split per section.

mod common;

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Code lines (comments dropped) of every .rs file under `dir`, as (file, line number, text).
fn code_lines(dir: &Path) -> Vec<(String, usize, String)> {
    let mut files = Vec::new();
    rust_files(dir, &mut files);
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let body = std::fs::read_to_string(&f).unwrap();
        let name = f
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
            .display()
            .to_string();
        for (i, l) in body.lines().enumerate() {
            let code = l.split("//").next().unwrap_or("");
            out.push((name.clone(), i + 1, code.to_string()));
        }
    }
    out
}

#[test]
fn unsafe_code_only_in_sys() {
    let sys = src().join("sys");
    let bad: Vec<String> = code_lines(&src())
        .into_iter()
        .filter(|(f, _, l)| {
            !Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(f)
                .starts_with(&sys)
                && l.split(|c: char| !c.is_alphanumeric() && c != '_')
                    .any(|w| w == "unsafe")
        })
        .map(|(f, n, l)| format!("{f}:{n}: {}", l.trim()))
        .collect();
    assert!(
        bad.is_empty(),
        "unsafe outside src/sys:\n{}",
        bad.join("\n")
    );
    for root in ["lib.rs", "main.rs"] {
        let body = std::fs::read_to_string(src().join(root)).unwrap();
        assert!(
            body.contains("#![deny(unsafe_code)]"),
            "src/{root} lacks #![deny(unsafe_code)]"
        );
    }
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let allows: Vec<&str> = lib
        .lines()
        .zip(lib.lines().skip(1))
        .filter(|(a, _)| a.contains("allow(unsafe_code)"))
        .map(|(_, b)| b.trim())
        .collect();
    assert_eq!(allows, ["pub mod sys;"], "only `sys` may allow unsafe code");
}

/// As `grep -rn crate::plan src/model`: comments and doc links included.
#[test]
fn model_does_not_depend_on_plan() {
    let mut files = Vec::new();
    rust_files(&src().join("model"), &mut files);
    let bad: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let body = std::fs::read_to_string(f).unwrap();
            body.lines()
                .enumerate()
                .map(|(i, l)| (f.display().to_string(), i + 1, l.to_string()))
                .collect::<Vec<_>>()
        })
        .filter(|(_, _, l)| l.contains("crate::plan") || l.contains("super::plan"))
        .map(|(f, n, l)| format!("{f}:{n}: {}", l.trim()))
        .collect();
    assert!(
        bad.is_empty(),
        "src/model uses the plan:\n{}",
        bad.join("\n")
    );
}

#[test]
fn validator_is_split_per_section() {
    let dir = src().join("model/validate");
    assert!(
        dir.is_dir(),
        "src/model/validate/ holds one validator per section"
    );
    assert!(!src().join("model/validate.rs").exists());
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    for f in &files {
        let n = std::fs::read_to_string(f).unwrap().lines().count();
        assert!(n <= 600, "{} has {n} lines", f.display());
    }
    for section in [
        "system",
        "uplink",
        "segments",
        "groups",
        "rules",
        "dhcp",
        "logging",
        "alerts",
        "management",
    ] {
        assert!(
            dir.join(format!("{section}.rs")).exists(),
            "no validator for [{section}]"
        );
    }
}

const LOCKOUT: &str = r#"[uplink]
interface = "wan0"

[segments.lan]
interface = "lan0"
subnet = "198.18.1.0/24"
gateway = "198.18.1.1"

[segments.admin]
interface = "lan1"
subnet = "198.18.2.0/24"
gateway = "198.18.2.1"
management = true

[[rules]]
name = "lan-ssh"
from = "lan"
to = "gateway"
proto = "tcp"
ports = [22]
"#;

const LOCKOUT_LINE: &str = "rules[0]: rule `lan-ssh` lets segment `lan` reach SSH (tcp/22) on the gateway; it is allowed only from the management segment `admin`";

/// The anti-lockout invariants are checked on the plan's ruleset, outside the model, and
/// every entry point still reports them: the library's loader, the daemon's and `check`.
#[test]
fn lockout_reported_by_every_entry_point() {
    // the model alone checks the config, not the ruleset built from it
    bulkhead::model::load_str("lock.toml", LOCKOUT).expect("the model has no lockout check");

    let r = bulkhead::plan::load_str("lock.toml", LOCKOUT).unwrap_err();
    assert_eq!(r.lines(), [format!("lock.toml:15:1: {LOCKOUT_LINE}")]);

    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("lock.toml");
    std::fs::write(&p, LOCKOUT).unwrap();
    match bulkhead::supervisor::gateway::load(&p, None) {
        Err(bulkhead::supervisor::GwError::Config(r)) => {
            assert_eq!(r.lines(), [format!("{}:15:1: {LOCKOUT_LINE}", p.display())]);
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("the daemon's loader accepted a lockout"),
    }

    let o = std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .arg("-c")
        .arg(&p)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{}:15:1: {LOCKOUT_LINE}", p.display())),
        "{err}"
    );
}

/// Run by `a_test_without_root_fails_instead_of_skipping` as an unprivileged user.
#[test]
#[ignore = "run by a_test_without_root_fails_instead_of_skipping, without root"]
fn probe_needs_root() {
    require_root!();
    common::require_root_and(&["ip"]);
}

/// A test that needs root fails when it runs without root (a CI without root must not report
/// the kernel tests as passed).
#[test]
fn a_test_without_root_fails_instead_of_skipping() {
    common::require_root_and(&["setpriv"]);
    let exe = std::env::current_exe().unwrap();
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args([
            "--exact",
            "probe_needs_root",
            "--ignored",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "passed without root:\n{out}");
    assert!(
        out.contains("needs root: run as root (tools/test does)"),
        "{out}"
    );
    assert!(out.contains("1 failed"), "{out}");
}

/// A missing tool fails the test, naming the tool and what installs it.
#[test]
#[should_panic(
    expected = "needs no-such-tool-bh: install the package that provides it (tools/setup)"
)]
fn a_missing_tool_fails_instead_of_skipping() {
    common::require_root_and(&["ip", "no-such-tool-bh"]);
}

#[test]
fn every_tool_a_test_names_is_installed_by_tools_setup() {
    let setup = std::fs::read_to_string(common::root().join("tools/setup")).unwrap();
    let tools_line = setup
        .split("TOOLS=(")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("tools/setup lists TOOLS=(...)");
    let listed: Vec<&str> = tools_line.split_whitespace().collect();
    // every tool the tests pass to require_root_and
    let mut files = Vec::new();
    rust_files(&common::root().join("tests"), &mut files);
    let mut missing = Vec::new();
    for f in files
        .into_iter()
        .filter(|f| !f.ends_with("tests/structure.rs"))
    {
        let body = std::fs::read_to_string(&f).unwrap();
        for call in body.split("require_root_and(&[").skip(1) {
            let list = call.split(']').next().unwrap();
            for t in list
                .split(',')
                .map(|t| t.trim().trim_matches('"'))
                .filter(|t| !t.is_empty())
            {
                if !listed.contains(&t) {
                    missing.push(format!("{}: {t}", f.display()));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "tools/setup does not check: {missing:?}"
    );
}
