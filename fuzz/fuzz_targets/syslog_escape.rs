//! Fuzz the syslog formats with arbitrary text in an event (its message, field names and
//! values, the hostname), as a DHCP client could send it: RFC 5424, RFC 3164 and the
//! `bulkhead logs` line must each be one line with no control character, and RFC 5424
//! must parse back to the text with only its control characters escaped.
//!
//! Run from the `fuzz` directory: `cargo +nightly fuzz run syslog_escape`.
#![no_main]

use bulkhead::logship::format::{escaped, needs_escape, parse_rfc5424, rfc3164, rfc5424};
use bulkhead::logship::{Event, Kind, Severity, text_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // parts separated by 0xFF bytes (U+FFFD after the lossy decoding)
    let mut parts = text.split('\u{fffd}');
    let host = parts.next().unwrap_or_default().to_string();
    let msg = parts.next().unwrap_or_default().to_string();
    let mut ev = Event::new(Kind::Lease, Severity::Info, msg.clone());
    let rest: Vec<&str> = parts.collect();
    for kv in rest.chunks(2) {
        ev = ev.with(kv[0], kv.get(1).copied().unwrap_or_default());
    }
    for line in [rfc5424(&ev, &host, 1), rfc3164(&ev, &host, 1), text_line(&ev)] {
        assert!(!line.chars().any(needs_escape), "{line:?}");
    }
    let p = parse_rfc5424(&rfc5424(&ev, &host, 1)).expect("RFC 5424 parses");
    assert_eq!(p.msg, escaped(&msg));
    assert_eq!(p.params.len(), 2 + ev.fields.len());
    for ((_, want), (_, got)) in ev.fields.iter().zip(&p.params[2..]) {
        assert_eq!(*got, escaped(want));
    }
});
