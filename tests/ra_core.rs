//! The sans-IO router-advertisement scheduler on a timeline (time passed in): what is sent
//! when, what a solicitation changes, renumbering and the final RA.

use std::net::Ipv6Addr;
use std::time::Duration;

use bulkhead::ra::core::{MAX_INITIAL_RTR_ADVERT_INTERVAL, MIN_DELAY_BETWEEN_RAS};
use bulkhead::ra::packet::{PacketError, ROUTER_SOLICIT, parse_solicit};
use bulkhead::ra::{Mode, Prefix, RaConfig, RaScheduler, RouterAdvert};

const S: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;
const LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x42);

fn net(s: &str) -> ipnet::Ipv6Net {
    s.parse().unwrap()
}

fn cfg(mode: Mode) -> RaConfig {
    let mut c = RaConfig::new(mode, vec![Prefix::new(net("2001:db8:1::/64"))]);
    c.dns = vec!["2001:db8:1::1".parse().unwrap()];
    c.domains = vec!["lab.example".into(), "example".into()];
    c.mtu = Some(1480);
    c.source_lladdr = Some([2, 0, 0, 0, 0, 1]);
    c
}

fn rs(options: &[u8]) -> Vec<u8> {
    let mut v = vec![ROUTER_SOLICIT, 0, 0, 0, 0, 0, 0, 0];
    v.extend_from_slice(options);
    v
}

/// Every RA sent from `from` to `to`, polled every 10 ms: (time, RA).
fn run(s: &mut RaScheduler, from: Duration, to: Duration) -> Vec<(Duration, RouterAdvert)> {
    let mut out = Vec::new();
    let mut t = from;
    while t <= to {
        if let Some(p) = s.poll(t) {
            out.push((t, RouterAdvert::decode(&p).unwrap()));
        }
        t += MS(10);
    }
    out
}

#[test]
fn first_ra_at_once_with_every_option_and_flags_per_mode() {
    for (mode, m, o, a) in [
        (Mode::Slaac, false, false, true),
        (Mode::Stateless, false, true, true),
        (Mode::Stateful, true, true, false),
    ] {
        let mut s = RaScheduler::new(cfg(mode), S(100), 7);
        assert_eq!(s.poll_at(), Some(S(100)));
        let ra = RouterAdvert::decode(&s.poll(S(100)).expect("first RA at once")).unwrap();
        assert_eq!((ra.managed, ra.other), (m, o), "{mode:?}");
        assert_eq!(ra.router_lifetime, 1800);
        assert_eq!(ra.prefixes.len(), 1);
        let p = &ra.prefixes[0];
        assert_eq!(p.prefix, net("2001:db8:1::/64"));
        assert!(p.on_link, "{mode:?}: L=1");
        assert_eq!(p.autonomous, a, "{mode:?}");
        assert_eq!((p.valid, p.preferred), (5400, 2700));
        assert_eq!(ra.mtu, Some(1480));
        assert_eq!(ra.source_lladdr, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(
            ra.rdnss,
            Some((1800, vec!["2001:db8:1::1".parse::<Ipv6Addr>().unwrap()]))
        );
        assert_eq!(
            ra.dnssl,
            Some((1800, vec!["lab.example".to_string(), "example".to_string()]))
        );
        // Nothing more until the next interval.
        assert_eq!(s.poll(S(100) + MS(10)), None);
    }
}

#[test]
fn initial_fast_ras_then_jittered_intervals_within_rfc_bounds() {
    let mut c = cfg(Mode::Slaac);
    c.max_interval = S(600);
    let min = c.min_interval();
    assert_eq!(min, S(198));
    let mut s = RaScheduler::new(c, S(0), 12345);
    let sent = run(&mut s, S(0), S(6000));
    let times: Vec<Duration> = sent.iter().map(|(t, _)| *t).collect();
    assert!(times.len() > 10, "{times:?}");
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // RAs 1..=3 follow at most MAX_INITIAL_RTR_ADVERT_INTERVAL apart.
    for g in &gaps[..3] {
        assert!(*g <= MAX_INITIAL_RTR_ADVERT_INTERVAL, "initial gap {g:?}");
    }
    for g in &gaps[3..] {
        assert!(*g >= min && *g <= S(600) + MS(10), "gap {g:?}");
    }
    // Jitter: not all gaps equal.
    assert!(gaps[3..].iter().any(|g| *g != gaps[3]), "{gaps:?}");
}

#[test]
fn solicitation_answered_within_half_a_second_and_rate_limited() {
    let mut s = RaScheduler::new(cfg(Mode::Slaac), S(0), 99);
    run(&mut s, S(0), S(60)); // past the initial RAs
    let t = S(100);
    assert!(s.poll_at().unwrap() > t + S(5));
    s.on_solicit(t, &rs(&[1, 1, 2, 0, 0, 0, 0, 9]), 255, LL)
        .unwrap();
    let at = s.poll_at().unwrap();
    assert!(at >= t && at <= t + MS(500), "answer at {at:?}");
    let sent = run(&mut s, t, t + S(1));
    assert_eq!(sent.len(), 1);
    // A flood of solicitations: at most one RA per MIN_DELAY_BETWEEN_RAS.
    let mut times = Vec::new();
    let mut now = t + S(1);
    while now < t + S(31) {
        s.on_solicit(now, &rs(&[]), 255, LL).unwrap();
        if s.poll(now).is_some() {
            times.push(now);
        }
        now += MS(10);
    }
    assert!(
        times.len() <= 11 && times.len() >= 9,
        "{} RAs in 30 s",
        times.len()
    );
    for w in times.windows(2) {
        assert!(w[1] - w[0] >= MIN_DELAY_BETWEEN_RAS, "{times:?}");
    }
}

#[test]
fn invalid_solicitations_are_refused_and_change_nothing() {
    let mut s = RaScheduler::new(cfg(Mode::Slaac), S(0), 5);
    run(&mut s, S(0), S(60));
    let before = s.poll_at();
    let cases: Vec<(Vec<u8>, u8, Ipv6Addr, &str)> = vec![
        (rs(&[]), 64, LL, "hop limit"),
        (vec![ROUTER_SOLICIT, 1, 0, 0, 0, 0, 0, 0], 255, LL, "code"),
        (vec![ROUTER_SOLICIT, 0, 0, 0], 255, LL, "too short"),
        (rs(&[1, 0, 0, 0, 0, 0, 0, 0]), 255, LL, "length 0"),
        (rs(&[1, 2, 0, 0, 0, 0, 0, 0]), 255, LL, "past the end"),
        (rs(&[1]), 255, LL, "truncated"),
        (
            rs(&[1, 1, 2, 0, 0, 0, 0, 9]),
            255,
            Ipv6Addr::UNSPECIFIED,
            "unspecified",
        ),
        (
            vec![134, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            255,
            LL,
            "type",
        ),
    ];
    for (pkt, hop, src, what) in cases {
        let e = s.on_solicit(S(100), &pkt, hop, src).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(what)
                || format!("{e:?}")
                    .to_lowercase()
                    .contains(&what.replace(' ', "")),
            "{what}: {text}"
        );
        assert_eq!(s.poll_at(), before, "{what} changed the schedule");
    }
    assert!(matches!(
        parse_solicit(&rs(&[]), 1, LL),
        Err(PacketError::BadHopLimit(1))
    ));
}

#[test]
fn renumbering_deprecates_the_old_prefix_down_to_zero_then_drops_it() {
    let mut c = cfg(Mode::Slaac);
    c.max_interval = S(60);
    c.prefixes = vec![Prefix {
        net: net("2001:db8:1::/64"),
        valid: 600,
        preferred: 300,
    }];
    let mut s = RaScheduler::new(c.clone(), S(0), 3);
    run(&mut s, S(0), S(100));
    let mut c2 = c.clone();
    c2.prefixes = vec![Prefix::new(net("2001:db8:2::/64"))];
    s.update(c2, S(100));
    // The new configuration goes out at once (no more than MIN_DELAY_BETWEEN_RAS late).
    assert!(s.poll_at().unwrap() <= S(100) + MIN_DELAY_BETWEEN_RAS);
    let sent = run(&mut s, S(100), S(1000));
    let (t0, first) = &sent[0];
    assert!(*t0 <= S(103));
    let find =
        |ra: &RouterAdvert, p: &str| ra.prefixes.iter().find(|x| x.prefix == net(p)).cloned();
    let new = find(first, "2001:db8:2::/64").expect("new prefix");
    assert_eq!((new.valid, new.preferred), (5400, 2700));
    let old = find(first, "2001:db8:1::/64").expect("old prefix still advertised");
    assert_eq!(old.preferred, 0, "old prefix deprecated");
    assert!(old.valid <= 600 && old.valid >= 595, "{}", old.valid);
    // Valid lifetime counts down, reaches 0 in one RA, then the prefix is gone.
    let olds: Vec<(Duration, u32)> = sent
        .iter()
        .filter_map(|(t, ra)| find(ra, "2001:db8:1::/64").map(|p| (*t, p.valid)))
        .collect();
    for w in olds.windows(2) {
        assert!(w[1].1 <= w[0].1, "{olds:?}");
    }
    let (t_zero, v) = *olds.last().unwrap();
    assert_eq!(v, 0, "{olds:?}");
    assert!(t_zero >= S(700) && t_zero <= S(700) + S(4), "{t_zero:?}");
    let after: Vec<_> = sent.iter().filter(|(t, _)| *t > t_zero).collect();
    assert!(!after.is_empty());
    assert!(
        after
            .iter()
            .all(|(_, ra)| find(ra, "2001:db8:1::/64").is_none())
    );
    assert!(
        after
            .iter()
            .all(|(_, ra)| find(ra, "2001:db8:2::/64").is_some())
    );
}

#[test]
fn a_prefix_given_with_zero_preferred_lifetime_is_sent_as_is() {
    let mut c = cfg(Mode::Slaac);
    c.prefixes.push(Prefix {
        net: net("2001:db8:9::/64"),
        valid: 100,
        preferred: 0,
    });
    let mut s = RaScheduler::new(c, S(0), 1);
    let ra = RouterAdvert::decode(&s.poll(S(0)).unwrap()).unwrap();
    assert_eq!(ra.prefixes.len(), 2);
    assert_eq!((ra.prefixes[1].valid, ra.prefixes[1].preferred), (100, 0));
}

#[test]
fn stop_sends_router_lifetime_zero_and_nothing_after() {
    let mut s = RaScheduler::new(cfg(Mode::Stateful), S(0), 1);
    s.poll(S(0)).unwrap();
    let last = RouterAdvert::decode(&s.stop(S(10))).unwrap();
    assert_eq!(last.router_lifetime, 0);
    assert_eq!(last.prefixes.len(), 1);
    assert_eq!(s.poll_at(), None);
    assert_eq!(s.poll(S(10_000)), None);
    s.on_solicit(S(20), &rs(&[]), 255, LL).unwrap();
    assert_eq!(s.poll(S(21)), None);
}

#[test]
fn decode_refuses_malformed_advertisements() {
    let mut s = RaScheduler::new(cfg(Mode::Slaac), S(0), 1);
    let good = s.poll(S(0)).unwrap();
    assert_eq!(good.len() % 8, 0);
    let mut bad = good.clone();
    bad[17] = 0; // first option's length
    assert!(RouterAdvert::decode(&bad).is_err());
    assert!(RouterAdvert::decode(&good[..good.len() - 3]).is_err());
    for cut in 0..good.len() {
        let _ = RouterAdvert::decode(&good[..cut]);
    }
}
