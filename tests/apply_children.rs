//! The helper processes an apply runs, counted through logging wrappers put first on PATH (its
//! own binary and one test: PATH is the whole process's).
//! - The other backend's leftovers are looked for only when they can be there: at the first
//!   apply (or after a lost state) and after a generation of the other backend. An apply on
//!   top of one of its own backend's runs no `iptables-save` (it found none already), which on
//!   every reload and drift repair cost a process and a full listing of the iptables tables.
//! - The flowtable probe (`nft -c`) runs once per boot, not in every apply: its answer is kept
//!   in the state directory with the boot id.

mod apply_support;

use apply_support::*;
use bulkhead::apply::Applier;
use bulkhead::model::Backend;

#[test]
fn repeated_applies_run_no_iptables_listing_and_no_flowtable_probe() {
    init();
    let dir = TempDir::new("wrap");
    let log = dir.path().join("calls");
    let nft_log = dir.path().join("nft-calls");
    for (tool, log) in [("iptables-save", &log), ("nft", &nft_log)] {
        let real = sh(&format!("command -v {tool}")).trim().to_string();
        let wrapper = dir.path().join(tool);
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\nexec {real} \"$@\"\n",
                log.display()
            ),
        )
        .unwrap();
        sh(&format!("chmod 755 {}", wrapper.display()));
    }
    let probes = || {
        std::fs::read_to_string(&nft_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("-c "))
            .count()
    };
    // SAFETY: set before any thread of this test binary reads the environment (one test).
    unsafe {
        std::env::set_var(
            "PATH",
            format!(
                "{}:{}",
                dir.path().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
    };
    let calls = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let gw = gateway("otherbe");
    let state = TempDir::new("state");
    let nft = plan("apply.toml", Backend::Nftables);
    let apply = || {
        gw.run(|| {
            Applier::new(state.path(), Backend::Nftables)
                .unwrap()
                .apply(&nft)
                .unwrap()
        })
    };
    apply();
    let first = calls();
    assert!(
        first > 0,
        "the first apply did not look for iptables leftovers"
    );
    assert_eq!(probes(), 1, "the first apply did not probe for flowtables");
    apply();
    apply();
    assert_eq!(
        calls(),
        first,
        "applies on top of an nftables generation listed iptables again"
    );
    assert_eq!(
        probes(),
        1,
        "later applies (new appliers) probed for flowtables again:\n{}",
        std::fs::read_to_string(&nft_log).unwrap_or_default()
    );
    // a lost state: looked for again
    std::fs::remove_dir_all(state.path()).unwrap();
    apply();
    assert!(
        calls() > first,
        "after a lost state the leftovers were not looked for"
    );
}
