//! Socket options, plain send/recv on raw descriptors, and the socket ioctls.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

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

/// SO_RCVTIMEO: a blocking receive gives up after `d`.
pub fn set_recv_timeout(fd: impl AsFd, d: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
}

/// SO_RCVBUFFORCE: a receive buffer of `bytes`, beyond rmem_max (needs CAP_NET_ADMIN).
pub fn set_recv_buffer_force(fd: impl AsFd, bytes: u32) -> io::Result<()> {
    let size = bytes.min(i32::MAX as u32) as libc::c_int;
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size)
}

/// SO_SNDBUFFORCE: a send buffer of `bytes`, beyond wmem_max (needs CAP_NET_ADMIN). A netlink
/// batch has to fit into one send.
pub fn set_send_buffer_force(fd: impl AsFd, bytes: u32) -> io::Result<()> {
    let size = bytes.min(i32::MAX as u32) as libc::c_int;
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &size)
}

/// send(2) on a connected (or netlink) socket.
pub fn send(fd: impl AsFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: sending a buffer valid for its length; the fd is borrowed, so open.
    let n = unsafe { libc::send(fd.as_fd().as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// recv(2) of one datagram (blocking unless the socket says otherwise).
pub fn recv(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reading into a buffer valid for its length; the fd is borrowed, so open.
    let n = unsafe {
        libc::recv(
            fd.as_fd().as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Most datagrams one [`recv_batch`] or [`send_batch`] call moves.
pub const BATCH_MAX: usize = 64;

fn sockaddr_v4(a: &SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// recvmmsg(2) without blocking: up to `bufs.len()` (at most [`BATCH_MAX`]) IPv4 datagrams
/// that are already queued, each into its own buffer. Fills `got` with (length, source) per
/// datagram, in arrival order, and returns how many; `WouldBlock` when none is queued. A
/// datagram longer than its buffer is cut to the buffer (as recv(2) does).
pub fn recv_batch(
    fd: impl AsFd,
    bufs: &mut [Vec<u8>],
    got: &mut Vec<(usize, SocketAddrV4)>,
) -> io::Result<usize> {
    got.clear();
    let n = bufs.len().min(BATCH_MAX);
    // SAFETY: sockaddr_in, iovec and mmsghdr are plain old data; all-zero is valid.
    let mut addrs: [libc::sockaddr_in; BATCH_MAX] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; BATCH_MAX] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH_MAX] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iovs[i] = libc::iovec {
            iov_base: bufs[i].as_mut_ptr().cast(),
            iov_len: bufs[i].len(),
        };
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_in).cast();
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        h.msg_iov = &mut iovs[i];
        h.msg_iovlen = 1;
    }
    // SAFETY: the first n headers point at n live iovecs (each valid for its buffer's length)
    // and n sockaddr_in of the size given; nothing is moved until the call returns; the fd
    // is borrowed, so open.
    let r = unsafe {
        libc::recvmmsg(
            fd.as_fd().as_raw_fd(),
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    for i in 0..r as usize {
        let a = &addrs[i];
        let src = SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
            u16::from_be(a.sin_port),
        );
        got.push(((hdrs[i].msg_len as usize).min(bufs[i].len()), src));
    }
    Ok(got.len())
}

/// sendmmsg(2) without blocking: each (payload, destination) as one datagram, in order, up
/// to [`BATCH_MAX`] per call. Returns how many left (a prefix of `msgs`); an error only when
/// the first could not be sent (`WouldBlock`: the send buffer is full).
pub fn send_batch(fd: impl AsFd, msgs: &[(&[u8], SocketAddrV4)]) -> io::Result<usize> {
    let n = msgs.len().min(BATCH_MAX);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: sockaddr_in, iovec and mmsghdr are plain old data; all-zero is valid.
    let mut addrs: [libc::sockaddr_in; BATCH_MAX] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; BATCH_MAX] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH_MAX] = unsafe { std::mem::zeroed() };
    for (i, (payload, to)) in msgs.iter().take(n).enumerate() {
        addrs[i] = sockaddr_v4(to);
        iovs[i] = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_in).cast();
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        h.msg_iov = &mut iovs[i];
        h.msg_iovlen = 1;
    }
    // SAFETY: the first n headers point at n live iovecs (the kernel only reads the
    // payloads) and n sockaddr_in; the fd is borrowed, so open.
    let r = unsafe {
        libc::sendmmsg(
            fd.as_fd().as_raw_fd(),
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Bytes still in a stream socket's send queue, not yet acknowledged by the peer
/// (SIOCOUTQ). A descriptor that is no longer open gives an error, not a wrong read.
pub fn send_queue_len(fd: RawFd) -> io::Result<u64> {
    let mut outq: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one c_int into outq.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut outq) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(outq.max(0) as u64)
}

/// Add a completed, non-permanent ARP entry ip -> mac on `iface` (SIOCSARP) through the
/// socket `fd`.
pub fn set_arp(fd: impl AsFd, iface: &str, ip: Ipv4Addr, mac: [u8; 6]) -> io::Result<()> {
    const ATF_COM: libc::c_int = 0x02;
    if iface.len() >= 16 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // SAFETY: arpreq is plain old data; all-zero is a valid value.
    let mut req: libc::arpreq = unsafe { std::mem::zeroed() };
    let pa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in fits in sockaddr (both 16 bytes); we copy bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            &pa as *const libc::sockaddr_in as *const u8,
            &mut req.arp_pa as *mut libc::sockaddr as *mut u8,
            std::mem::size_of::<libc::sockaddr_in>(),
        );
    }
    req.arp_ha.sa_family = libc::ARPHRD_ETHER;
    for (d, s) in req.arp_ha.sa_data.iter_mut().zip(mac) {
        *d = s as libc::c_char;
    }
    req.arp_flags = ATF_COM;
    for (d, s) in req.arp_dev.iter_mut().zip(iface.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: valid socket fd and a fully initialised arpreq.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::SIOCSARP as _, &req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Interface name of an index (in this network namespace).
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes into buf.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(s.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_of_datagrams_both_ways_on_loopback() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(to) = rx.local_addr().unwrap() else {
            unreachable!()
        };
        let std::net::SocketAddr::V4(from) = tx.local_addr().unwrap() else {
            unreachable!()
        };
        let mut bufs = vec![vec![0u8; 16]; 4];
        let mut got = Vec::new();
        // nothing queued: WouldBlock, not a wait
        let e = recv_batch(&rx, &mut bufs, &mut got).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let payloads: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; usize::from(i) + 1]).collect();
        let msgs: Vec<(&[u8], SocketAddrV4)> =
            payloads.iter().map(|p| (p.as_slice(), to)).collect();
        assert_eq!(send_batch(&tx, &msgs).unwrap(), 6);
        // four buffers: the first four datagrams, in order, then the other two
        assert_eq!(recv_batch(&rx, &mut bufs, &mut got).unwrap(), 4);
        for (i, (n, src)) in got.iter().enumerate() {
            assert_eq!(*src, from);
            assert_eq!(&bufs[i][..*n], payloads[i].as_slice());
        }
        assert_eq!(recv_batch(&rx, &mut bufs, &mut got).unwrap(), 2);
        assert_eq!(&bufs[1][..got[1].0], payloads[5].as_slice());
        // a datagram longer than its buffer is cut to it
        let long = vec![7u8; 40];
        assert_eq!(send_batch(&tx, &[(long.as_slice(), to)]).unwrap(), 1);
        assert_eq!(recv_batch(&rx, &mut bufs, &mut got).unwrap(), 1);
        assert_eq!(got[0].0, 16);
    }

    #[test]
    fn loopback_has_index_1_and_no_index_0() {
        assert_eq!(ifname(1).as_deref(), Some("lo"));
        assert_eq!(ifname(0), None);
    }

    #[test]
    fn options_and_queue_on_a_real_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        set_recv_timeout(&c, Duration::from_millis(1500)).unwrap();
        assert_eq!(c.read_timeout().unwrap(), Some(Duration::from_millis(1500)));
        assert_eq!(send_queue_len(c.as_raw_fd()).unwrap(), 0);
        assert!(send_queue_len(-1).is_err());
    }
}
