//! The lab's traffic: listeners that answer on every probed port, and probes that open real
//! TCP connections and UDP exchanges from a chosen source address.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// Answer on every given port until killed: TCP connections get a line and are closed, UDP
/// datagrams are echoed.
pub fn serve(tcp: &[u16], udp: &[u16], addrs: &[Ipv4Addr]) -> std::io::Result<()> {
    let mut threads = Vec::new();
    for &p in tcp {
        let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, p))?;
        threads.push(std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                // say who we saw: the lab proves masquerading with it
                let peer = c
                    .peer_addr()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default();
                let _ = c.write_all(format!("bulkhead-lab {peer}\n").as_bytes());
            }
        }));
    }
    let any = [Ipv4Addr::UNSPECIFIED];
    let addrs = if addrs.is_empty() { &any[..] } else { addrs };
    for &p in udp {
        for &a in addrs {
            let s = UdpSocket::bind(SocketAddrV4::new(a, p))?;
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while let Ok((_, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(format!("bulkhead-lab {}", from.ip()).as_bytes(), from);
                }
            }));
        }
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// One probe: `tcp:ADDR:PORT` or `udp:ADDR:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub udp: bool,
    pub dst: SocketAddrV4,
}

impl std::str::FromStr for Probe {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (proto, rest) = s.split_once(':').ok_or(format!("bad probe `{s}`"))?;
        let dst: SocketAddrV4 = rest.parse().map_err(|_| format!("bad probe `{s}`"))?;
        match proto {
            "tcp" => Ok(Probe { udp: false, dst }),
            "udp" => Ok(Probe { udp: true, dst }),
            _ => Err(format!("bad probe `{s}`")),
        }
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", if self.udp { "udp" } else { "tcp" }, self.dst)
    }
}

/// What a probe saw: whether it got through, and the source address the far end saw (when
/// a lab listener answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub through: bool,
    pub seen_as: Option<Ipv4Addr>,
}

fn seen(buf: &[u8]) -> Option<Ipv4Addr> {
    std::str::from_utf8(buf)
        .ok()?
        .trim()
        .strip_prefix("bulkhead-lab ")?
        .parse()
        .ok()
}

/// Did the probe get through? TCP: connected, or refused (a reset means the packet crossed the
/// firewall). UDP: an answer came back.
pub fn probe(bind: Option<Ipv4Addr>, p: Probe, timeout: Duration) -> Outcome {
    let blocked = Outcome {
        through: false,
        seen_as: None,
    };
    let src = SocketAddr::V4(SocketAddrV4::new(bind.unwrap_or(Ipv4Addr::UNSPECIFIED), 0));
    if p.udp {
        let Ok(s) = UdpSocket::bind(src) else {
            return blocked;
        };
        let _ = s.set_read_timeout(Some(timeout));
        if s.send_to(b"bulkhead-lab", p.dst).is_err() {
            return blocked;
        }
        let mut buf = [0u8; 64];
        return match s.recv_from(&mut buf) {
            Ok((n, _)) => Outcome {
                through: true,
                seen_as: seen(&buf[..n]),
            },
            Err(_) => blocked,
        };
    }
    let Ok(s) = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)) else {
        return blocked;
    };
    if s.bind(&src.into()).is_err() {
        return blocked;
    }
    match s.connect_timeout(&SocketAddr::V4(p.dst).into(), timeout) {
        Ok(()) => {
            let mut t: std::net::TcpStream = s.into();
            let _ = t.set_read_timeout(Some(timeout));
            let mut buf = [0u8; 64];
            let n = std::io::Read::read(&mut t, &mut buf).unwrap_or(0);
            Outcome {
                through: true,
                seen_as: seen(&buf[..n]),
            }
        }
        Err(e) => Outcome {
            through: e.kind() == std::io::ErrorKind::ConnectionRefused,
            seen_as: None,
        },
    }
}

/// Run probes in parallel; results in the same order.
pub fn probe_all(bind: Option<Ipv4Addr>, probes: &[Probe], timeout: Duration) -> Vec<Outcome> {
    std::thread::scope(|sc| {
        let hs: Vec<_> = probes
            .iter()
            .map(|p| sc.spawn(move || probe(bind, *p, timeout)))
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join().unwrap_or(Outcome {
                    through: false,
                    seen_as: None,
                })
            })
            .collect()
    })
}
