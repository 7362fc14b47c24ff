//! The other backend's leftovers are looked for only when they can be there: at the first
//! apply (or after a lost state) and after a generation of the other backend. An apply on top
//! of one of its own backend's runs no `iptables-save` (it found none already), which on
//! every reload and drift repair cost a process and a full listing of the iptables tables.
//! Its own binary: it puts a logging `iptables-save` first on PATH for the whole process.

mod apply_support;

use apply_support::*;
use bulkhead::apply::Applier;
use bulkhead::model::Backend;

#[test]
fn an_nftables_apply_on_an_nftables_generation_does_not_list_iptables() {
    init();
    let real = sh("command -v iptables-save").trim().to_string();
    let dir = TempDir::new("wrap");
    let log = dir.path().join("calls");
    let wrapper = dir.path().join("iptables-save");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec {real} \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    sh(&format!("chmod 755 {}", wrapper.display()));
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
    apply();
    apply();
    assert_eq!(
        calls(),
        first,
        "applies on top of an nftables generation listed iptables again"
    );
    // a lost state: looked for again
    std::fs::remove_dir_all(state.path()).unwrap();
    apply();
    assert!(
        calls() > first,
        "after a lost state the leftovers were not looked for"
    );
}
