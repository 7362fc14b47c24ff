//! The sans-IO router-advertisement scheduler (RFC 4861 6.2): which RA to send when, for
//! one interface. Time is passed in as the [`Duration`] since any fixed start; the core
//! never reads a clock, sleeps or touches a socket.
//!
//! * Unsolicited RAs every `[min_interval, max_interval]` (uniformly random, RFC 4861
//!   6.2.4), the first [`MAX_INITIAL_RTR_ADVERTISEMENTS`] of them at most
//!   [`MAX_INITIAL_RTR_ADVERT_INTERVAL`] apart, the first one at once.
//! * A valid router solicitation brings a multicast RA after a random delay of at most
//!   [`MAX_RA_DELAY_TIME`], but never sooner than [`MIN_DELAY_BETWEEN_RAS`] after the
//!   previous multicast RA (RFC 4861 6.2.6): a flood of solicitations costs at most one RA
//!   every 3 seconds.
//! * Renumbering: [`RaScheduler::update`] with a configuration whose prefix list lost a
//!   prefix keeps advertising the old prefix with preferred lifetime 0 and a valid
//!   lifetime that counts down to 0 (sent once at 0, then dropped), and sends the new
//!   configuration with fast RAs, as for a new interface.
//! * [`RaScheduler::stop`] gives the final RA with router lifetime 0 (RFC 4861 6.2.5).

use std::net::Ipv6Addr;
use std::time::Duration;

use ipnet::Ipv6Net;

use super::packet::{PacketError, PrefixInfo, RouterAdvert, parse_solicit};

/// RFC 4861 10: initial advertisements sent fast.
pub const MAX_INITIAL_RTR_ADVERTISEMENTS: u8 = 3;
/// RFC 4861 10: the longest interval between the initial advertisements.
pub const MAX_INITIAL_RTR_ADVERT_INTERVAL: Duration = Duration::from_secs(16);
/// RFC 4861 10: the shortest time between two multicast advertisements.
pub const MIN_DELAY_BETWEEN_RAS: Duration = Duration::from_secs(3);
/// RFC 4861 10: the longest random delay before answering a solicitation.
pub const MAX_RA_DELAY_TIME: Duration = Duration::from_millis(500);
/// RFC 9096: default preferred lifetime of an advertised prefix (45 minutes).
pub const DEFAULT_PREFERRED_LIFETIME: u32 = 2700;
/// RFC 9096: default valid lifetime of an advertised prefix (90 minutes).
pub const DEFAULT_VALID_LIFETIME: u32 = 5400;

/// How a segment's hosts get their addresses and other configuration
/// (`[segments.NAME.dhcp6] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SLAAC addresses (A=1), DNS from RDNSS/DNSSL; M=0 O=0.
    Slaac,
    /// SLAAC addresses (A=1), DNS also by stateless DHCPv6; M=0 O=1.
    Stateless,
    /// Addresses by DHCPv6 only: M=1 O=1, and the prefix is advertised on-link (L=1)
    /// with A=0, so hosts form no SLAAC address the gateway does not know of.
    Stateful,
}

impl Mode {
    /// (M, O, A) flags of the mode.
    pub fn flags(self) -> (bool, bool, bool) {
        match self {
            Mode::Slaac => (false, false, true),
            Mode::Stateless => (false, true, true),
            Mode::Stateful => (true, true, false),
        }
    }
}

/// One advertised prefix and its lifetimes (seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    /// The prefix (a /64 for SLAAC).
    pub net: Ipv6Net,
    /// Valid lifetime, seconds.
    pub valid: u32,
    /// Preferred lifetime, seconds; 0 advertises the prefix as deprecated.
    pub preferred: u32,
}

impl Prefix {
    /// A prefix with the RFC 9096 default lifetimes.
    pub fn new(net: Ipv6Net) -> Self {
        Prefix {
            net: net.trunc(),
            valid: DEFAULT_VALID_LIFETIME,
            preferred: DEFAULT_PREFERRED_LIFETIME,
        }
    }
}

/// What one interface advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaConfig {
    /// M/O/A flags.
    pub mode: Mode,
    /// Prefixes with their lifetimes.
    pub prefixes: Vec<Prefix>,
    /// RDNSS servers (RFC 8106); none: no RDNSS option.
    pub dns: Vec<Ipv6Addr>,
    /// DNSSL domains (RFC 8106); none: no DNSSL option.
    pub domains: Vec<String>,
    /// Link MTU to advertise, if any.
    pub mtu: Option<u32>,
    /// The interface's MAC, sent as the source link-layer option.
    pub source_lladdr: Option<[u8; 6]>,
    /// MaxRtrAdvInterval (4 s to 1800 s; default 600 s).
    pub max_interval: Duration,
    /// Router lifetime, seconds (default 3 x MaxRtrAdvInterval, at most 9000).
    pub router_lifetime: u16,
}

impl RaConfig {
    /// The RFC 4861 defaults for a mode and its prefixes.
    pub fn new(mode: Mode, prefixes: Vec<Prefix>) -> Self {
        RaConfig {
            mode,
            prefixes,
            dns: Vec::new(),
            domains: Vec::new(),
            mtu: None,
            source_lladdr: None,
            max_interval: Duration::from_secs(600),
            router_lifetime: 1800,
        }
    }

    /// MinRtrAdvInterval: 0.33 x MaxRtrAdvInterval (at least 3 s), RFC 4861 6.2.1.
    pub fn min_interval(&self) -> Duration {
        (self.max_interval.mul_f64(0.33)).max(Duration::from_secs(3))
    }

    /// Lifetime of RDNSS/DNSSL: RFC 8106 recommends at least 3 x MaxRtrAdvInterval.
    pub fn dns_lifetime(&self) -> u32 {
        (self.max_interval.as_secs() * 3).min(u32::MAX as u64) as u32
    }
}

#[derive(Debug, Clone)]
struct Deprecated {
    net: Ipv6Net,
    /// When the valid lifetime reaches 0.
    ends: Duration,
    /// Sent once with valid lifetime 0 already.
    sent_zero: bool,
}

/// Why a solicitation was not answered.
pub type RsError = PacketError;

/// The scheduler of one interface.
#[derive(Debug, Clone)]
pub struct RaScheduler {
    cfg: RaConfig,
    deprecated: Vec<Deprecated>,
    next: Duration,
    initial_left: u8,
    last_multicast: Option<Duration>,
    rng: u64,
    stopped: bool,
}

impl RaScheduler {
    /// Start advertising `cfg` at `now`; `seed` drives the random intervals.
    pub fn new(cfg: RaConfig, now: Duration, seed: u64) -> Self {
        RaScheduler {
            cfg,
            deprecated: Vec::new(),
            next: now,
            initial_left: MAX_INITIAL_RTR_ADVERTISEMENTS,
            last_multicast: None,
            rng: seed | 1,
            stopped: false,
        }
    }

    /// The configuration advertised.
    pub fn config(&self) -> &RaConfig {
        &self.cfg
    }

    fn random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn random_between(&mut self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo).as_millis() as u64;
        lo + Duration::from_millis(self.random() % (span + 1))
    }

    /// When [`poll`](Self::poll) next has something to send (`None` once stopped).
    pub fn poll_at(&self) -> Option<Duration> {
        (!self.stopped).then_some(self.next)
    }

    /// The RA to multicast to ff02::1 now, if one is due.
    pub fn poll(&mut self, now: Duration) -> Option<Vec<u8>> {
        if self.stopped || now < self.next {
            return None;
        }
        let ra = self.advert(now);
        self.last_multicast = Some(now);
        // Deprecated prefixes sent with valid lifetime 0 once are dropped after that RA.
        for d in &mut self.deprecated {
            if d.ends <= now {
                d.sent_zero = true;
            }
        }
        let mut interval = self.random_between(self.cfg.min_interval(), self.cfg.max_interval);
        if self.initial_left > 0 {
            self.initial_left -= 1;
            interval = interval.min(MAX_INITIAL_RTR_ADVERT_INTERVAL);
        }
        // A deprecated prefix whose valid lifetime is about to end is advertised at 0
        // promptly rather than up to an interval late.
        if let Some(end) = self
            .deprecated
            .iter()
            .filter(|d| !d.sent_zero)
            .map(|d| d.ends)
            .min()
        {
            interval = interval.min(end.saturating_sub(now).max(MIN_DELAY_BETWEEN_RAS));
        }
        self.next = now + interval;
        Some(ra.encode())
    }

    /// A router solicitation arrived (with the hop limit and source it had). A valid one
    /// moves the next multicast RA forward (rate-limited); an invalid one is refused with
    /// the reason, and changes nothing.
    pub fn on_solicit(
        &mut self,
        now: Duration,
        packet: &[u8],
        hop_limit: u8,
        src: Ipv6Addr,
    ) -> Result<(), RsError> {
        parse_solicit(packet, hop_limit, src)?;
        if self.stopped {
            return Ok(());
        }
        let delay = self.random_between(Duration::ZERO, MAX_RA_DELAY_TIME);
        let mut at = now + delay;
        if let Some(last) = self.last_multicast {
            at = at.max(last + MIN_DELAY_BETWEEN_RAS);
        }
        self.next = self.next.min(at);
        Ok(())
    }

    /// Advertise a new configuration from `now` on. Prefixes no longer in it are kept,
    /// deprecated: preferred lifetime 0 and a valid lifetime counting down from what was
    /// last advertised to 0. The new configuration goes out at once and in fast RAs.
    pub fn update(&mut self, cfg: RaConfig, now: Duration) {
        for old in &self.cfg.prefixes {
            if !cfg.prefixes.iter().any(|p| p.net == old.net)
                && !self.deprecated.iter().any(|d| d.net == old.net)
            {
                self.deprecated.push(Deprecated {
                    net: old.net,
                    ends: now + Duration::from_secs(old.valid as u64),
                    sent_zero: false,
                });
            }
        }
        // A prefix that comes back is advertised normally again.
        self.deprecated
            .retain(|d| !cfg.prefixes.iter().any(|p| p.net == d.net));
        if cfg != self.cfg {
            self.cfg = cfg;
            self.initial_left = MAX_INITIAL_RTR_ADVERTISEMENTS;
            let mut at = now;
            if let Some(last) = self.last_multicast {
                at = at.max(last + MIN_DELAY_BETWEEN_RAS);
            }
            self.next = self.next.min(at);
        }
    }

    /// Stop: the final RA, with router lifetime 0, to multicast now. Nothing is sent
    /// after it.
    pub fn stop(&mut self, now: Duration) -> Vec<u8> {
        let mut ra = self.advert(now);
        ra.router_lifetime = 0;
        self.stopped = true;
        ra.encode()
    }

    /// The RA as it would be sent at `now`.
    pub fn advert(&mut self, now: Duration) -> RouterAdvert {
        self.deprecated.retain(|d| !d.sent_zero);
        let (managed, other, autonomous) = self.cfg.mode.flags();
        let mut prefixes: Vec<PrefixInfo> = self
            .cfg
            .prefixes
            .iter()
            .map(|p| PrefixInfo {
                prefix: p.net,
                on_link: true,
                autonomous,
                valid: p.valid,
                preferred: p.preferred.min(p.valid),
            })
            .collect();
        for d in &self.deprecated {
            prefixes.push(PrefixInfo {
                prefix: d.net,
                on_link: true,
                autonomous,
                valid: d.ends.saturating_sub(now).as_secs() as u32,
                preferred: 0,
            });
        }
        let life = self.cfg.dns_lifetime();
        RouterAdvert {
            cur_hop_limit: 64,
            managed,
            other,
            router_lifetime: self.cfg.router_lifetime,
            reachable_time: 0,
            retrans_timer: 0,
            source_lladdr: self.cfg.source_lladdr,
            mtu: self.cfg.mtu,
            prefixes,
            rdnss: (!self.cfg.dns.is_empty()).then(|| (life, self.cfg.dns.clone())),
            dnssl: (!self.cfg.domains.is_empty()).then(|| (life, self.cfg.domains.clone())),
        }
    }
}
