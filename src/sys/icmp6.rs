//! ICMPv6 raw-socket calls for the router-advertisement sender: the ICMPv6 type filter,
//! the hop limit of received packets (IPV6_RECVHOPLIMIT ancillary data) and interface
//! indexes.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

/// `ICMP6_FILTER` (linux/icmpv6.h): the option of level IPPROTO_ICMPV6.
const ICMP6_FILTER: libc::c_int = 1;

fn setsockopt<T>(fd: impl AsFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: the option value is a valid T of the size given; the fd is borrowed, so open.
    let r = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// ICMP6_FILTER: the raw ICMPv6 socket receives only messages of these types; every other
/// type (router advertisements included) is dropped by the kernel before it is queued.
pub fn pass_only_types(fd: impl AsFd, types: &[u8]) -> io::Result<()> {
    // Linux: a set bit blocks the type.
    let mut filter = [u32::MAX; 8];
    for t in types {
        filter[(*t >> 5) as usize] &= !(1u32 << (*t & 31));
    }
    setsockopt(fd, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &filter)
}

/// IPV6_RECVHOPLIMIT: every received datagram carries its hop limit as ancillary data.
pub fn recv_hop_limit(fd: impl AsFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, &on)
}

/// recvmsg(2) of one datagram (non-blocking if the socket is): its length, its source and
/// the hop limit it arrived with (when the kernel reported it).
pub fn recv_from_hop_limit(
    fd: impl AsFd,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddrV6, Option<u8>)> {
    // SAFETY: all-zero is a valid sockaddr_in6 and msghdr.
    let mut src: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut src as *mut libc::sockaddr_in6).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg points at live buffers of the sizes given; the fd is borrowed, so open.
    let n = unsafe { libc::recvmsg(fd.as_fd().as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut hop_limit = None;
    // SAFETY: the kernel filled msg_control up to msg_controllen; the CMSG macros stay
    // inside it, and an IPV6_HOPLIMIT payload is one c_int.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IPV6 && (*c).cmsg_type == libc::IPV6_HOPLIMIT {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                hop_limit = u8::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let addr = SocketAddrV6::new(
        Ipv6Addr::from(src.sin6_addr.s6_addr),
        u16::from_be(src.sin6_port),
        src.sin6_flowinfo,
        src.sin6_scope_id,
    );
    Ok((n as usize, addr, hop_limit))
}

/// Index of an interface by name (in this network namespace).
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name with NUL"))?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i)
}

/// The hardware (MAC) address of an Ethernet-like interface (SIOCGIFHWADDR), in the
/// network namespace of the calling thread.
pub fn hw_addr(name: &str) -> io::Result<[u8; 6]> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    let sock = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)?;
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads ifr_name and writes ifr_hwaddr inside req.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the kernel filled the ifr_hwaddr member of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}

/// Register an owned socket with the tokio reactor.
pub fn async_socket(
    sock: socket2::Socket,
) -> io::Result<tokio::io::unix::AsyncFd<socket2::Socket>> {
    // SAFETY: the AsyncFd owns the socket: its descriptor stays open for as long as it is
    // registered and is closed only when the AsyncFd is dropped, after deregistration.
    unsafe { tokio::io::unix::AsyncFd::register(sock) }.map_err(io::Error::from)
}
