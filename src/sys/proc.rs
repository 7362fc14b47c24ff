//! Processes: who we are, signals to the processes we started, sessions.

use std::io;
use std::process::Command;

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The effective user is root.
pub fn is_root() -> bool {
    euid() == 0
}

/// A signal to one process. Refuses pids that kill(2) would read as a process group or as
/// "every process" (0, and anything above i32::MAX, which would turn negative).
pub fn signal(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let p = i32::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("bad pid {pid}")))?;
    // SAFETY: kill(2) on one positive pid; no memory is involved.
    if unsafe { libc::kill(p, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// SIGTERM to `pid`.
pub fn terminate(pid: u32) -> io::Result<()> {
    signal(pid, libc::SIGTERM)
}

/// SIGKILL to `pid`.
pub fn kill(pid: u32) -> io::Result<()> {
    signal(pid, libc::SIGKILL)
}

/// Reap `pid` if it is our child and has exited; never blocks. Errors (not our child, still
/// running) are ignored.
pub fn reap_nohang(pid: u32) {
    if let Ok(p) = i32::try_from(pid)
        && p > 0
    {
        // SAFETY: waitpid(2) with a null status pointer is allowed; WNOHANG does not block.
        unsafe {
            libc::waitpid(p, std::ptr::null_mut(), libc::WNOHANG);
        }
    }
}

/// Make the command's child start a new session (setsid before exec), so that it outlives
/// the terminal session of this process.
pub fn new_session_on_spawn(c: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook only calls setsid(2), which is async-signal-safe, between fork and exec.
    unsafe {
        c.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

/// Narrow the file-creation mask: the bits of `deny` are added to the current umask (never
/// removed). Returns the mask now in force.
pub fn restrict_umask(deny: u32) -> u32 {
    // SAFETY: umask has no preconditions and cannot fail; it is called twice to read the
    // current mask (there is no other way to read it without /proc).
    let old = unsafe { libc::umask(0o077) } as u32;
    let new = old | (deny & 0o777);
    // SAFETY: as above.
    unsafe { libc::umask(new as libc::mode_t) };
    new
}

/// Fix glibc's mmap threshold at its default (128 KiB) for a long-running daemon. glibc
/// otherwise raises the threshold (and the trim threshold, to twice that) to the size of every
/// mmapped block that is freed, up to 32 MiB: after the lease store's first multi-MiB journal
/// read, every later read of that size, and what is decoded from it, came from a thread's
/// arena and stayed resident when freed (VmRSS +10 MiB over 40 `status` calls with a 3.5 MiB
/// journal, tests/status_rss.rs). Setting the threshold turns that adjustment off, so blocks
/// that large are mapped and unmapped again. Without glibc this does nothing.
pub fn bound_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes the allocator's locks itself and only changes its parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_group_pids() {
        assert!(signal(0, 0).is_err());
        assert!(signal(u32::MAX, 0).is_err());
        // signal 0 to ourselves: the process exists
        signal(std::process::id(), 0).unwrap();
    }

    #[test]
    fn terminates_and_reaps_a_child() {
        let mut c = Command::new("sleep").arg("30").spawn().unwrap();
        terminate(c.id()).unwrap();
        let st = c.wait().unwrap();
        assert!(!st.success());
    }
}
