//! Raw netlink sockets (nf_tables requests, NFLOG records).

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

const NETLINK_NETFILTER: libc::c_int = 12;

/// A raw `NETLINK_NETFILTER` socket (nf_tables requests in apply, NFLOG records in logship).
pub fn netfilter_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked and owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The kernel's netlink address (pid 0, no groups).
fn kernel_addr() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    sa
}

/// Bind a netlink socket with pid 0 (the kernel assigns one) and no multicast groups.
pub fn bind_auto(fd: impl AsFd) -> io::Result<()> {
    let sa = kernel_addr();
    // SAFETY: sa is a valid sockaddr_nl of the given length; the fd is borrowed, so open.
    let r = unsafe {
        libc::bind(
            fd.as_fd().as_raw_fd(),
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Send one message to the kernel (netlink pid 0). Returns the bytes sent.
pub fn send_to_kernel(fd: impl AsFd, msg: &[u8]) -> io::Result<usize> {
    let sa = kernel_addr();
    // SAFETY: the buffer is valid for its length; sa is a valid sockaddr_nl of that length.
    let n = unsafe {
        libc::sendto(
            fd.as_fd().as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    #[test]
    fn opens_and_binds() {
        // socket(2) and bind(2) on NETLINK_NETFILTER need no privilege
        let fd = super::netfilter_socket().unwrap();
        super::bind_auto(&fd).unwrap();
    }
}
