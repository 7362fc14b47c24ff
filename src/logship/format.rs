//! Syslog message formats: RFC 5424 (with Bulkhead's structured data) and RFC 3164.
//!
//! Our own code rather than the `syslog` crate's formatters: those take the time from the
//! clock when formatting, a numeric MSGID, and write SD-PARAM values without the escaping
//! RFC 5424 requires; events here carry their own time and the kind as MSGID.

use super::event::{Event, civil, rfc3339};

/// The SD-ID of Bulkhead's structured data element (`name@PEN`).
pub const SD_ID: &str = "bulkhead@32473";
/// APP-NAME / TAG of every message.
pub const APP: &str = "bulkhead";
/// Syslog facility: daemon (3).
pub const FACILITY: u8 = 3;

/// Characters that must not reach a log line or a terminal as they are: control characters
/// (C0 with newline and ESC, DEL, C1), the Unicode line and paragraph separators, and the
/// bidirectional overrides and isolates that reorder what an operator sees.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The visible form of one such character: `\n`, `\r`, `\t`, `\x1b` (below U+0100), else
/// `\u{202e}`.
pub fn push_escaped(c: char, out: &mut String) {
    use std::fmt::Write;
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x100 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        }
    }
}

/// Text from outside (a DHCP hostname, a client id, a vendor class, a message) made safe for
/// one log line and a terminal: every character [`needs_escape`] names is replaced by its
/// visible escape; everything else is kept.
pub fn escape_text(v: &str, out: &mut String) {
    for c in v.chars() {
        if needs_escape(c) {
            push_escaped(c, out);
        } else {
            out.push(c);
        }
    }
}

/// [`escape_text`] into a new string.
pub fn escaped(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    escape_text(v, &mut s);
    s
}

/// Escape an SD-PARAM value: `"`, `\` and `]` get a backslash (RFC 5424 section 6.3.3);
/// control characters become visible escapes ([`escape_text`]).
pub fn escape_sd_value(v: &str, out: &mut String) {
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
            out.push(c);
        } else if needs_escape(c) {
            push_escaped(c, out);
        } else {
            out.push(c);
        }
    }
}

/// An SD-NAME: printable US-ASCII except `=`, space, `]` and `"`; 1 to 32 characters.
pub fn sd_name(n: &str) -> String {
    let mut s: String = n
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"') {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    if s.is_empty() {
        s.push('_');
    }
    s
}

/// A header field (HOSTNAME, APP-NAME): printable US-ASCII, no spaces, `-` when empty.
fn header_field(v: &str, max: usize) -> String {
    let s: String = v
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if s.is_empty() { "-".into() } else { s }
}

fn pri(ev: &Event) -> u8 {
    FACILITY * 8 + ev.severity.code()
}

/// RFC 5424: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [bulkhead@32473 ...] MSG`.
/// The SD element always carries `kind` and `seq`, then the event's fields.
pub fn rfc5424(ev: &Event, hostname: &str, procid: u32) -> String {
    let mut s = String::with_capacity(160 + ev.msg.len() + ev.fields.len() * 24);
    s.push('<');
    s.push_str(&pri(ev).to_string());
    s.push_str(">1 ");
    s.push_str(&rfc3339(ev.time_us));
    s.push(' ');
    s.push_str(&header_field(hostname, 255));
    s.push(' ');
    s.push_str(APP);
    s.push(' ');
    s.push_str(&procid.to_string());
    s.push(' ');
    s.push_str(ev.kind.name());
    s.push_str(" [");
    s.push_str(SD_ID);
    s.push_str(" kind=\"");
    s.push_str(ev.kind.name());
    s.push_str("\" seq=\"");
    s.push_str(&ev.seq.to_string());
    s.push('"');
    for (k, v) in &ev.fields {
        s.push(' ');
        s.push_str(&sd_name(k));
        s.push_str("=\"");
        escape_sd_value(v, &mut s);
        s.push('"');
    }
    s.push(']');
    if !ev.msg.is_empty() {
        s.push(' ');
        escape_text(&ev.msg, &mut s);
    }
    s
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// RFC 3164: `<PRI>Mmm dd hh:mm:ss HOSTNAME bulkhead[PID]: MSG kind=... seq=... k=v ...`
/// (time in UTC; fields appended as `name=value`, values with spaces quoted).
pub fn rfc3164(ev: &Event, hostname: &str, procid: u32) -> String {
    let (_, mo, d, h, mi, sec, _) = civil(ev.time_us);
    let mut s = format!(
        "<{}>{} {:>2} {:02}:{:02}:{:02} {} {}[{}]: ",
        pri(ev),
        MONTHS[(mo - 1) as usize],
        d,
        h,
        mi,
        sec,
        header_field(hostname, 255),
        APP,
        procid,
    );
    escape_text(&ev.msg, &mut s);
    s.push_str(" kind=");
    s.push_str(ev.kind.name());
    s.push_str(" seq=");
    s.push_str(&ev.seq.to_string());
    for (k, v) in &ev.fields {
        s.push(' ');
        s.push_str(&sd_name(k));
        s.push('=');
        if v.is_empty() || v.contains([' ', '"', '\\']) || v.contains(needs_escape) {
            s.push('"');
            for c in v.chars() {
                if matches!(c, '"' | '\\') {
                    s.push('\\');
                    s.push(c);
                } else if needs_escape(c) {
                    push_escaped(c, &mut s);
                } else {
                    s.push(c);
                }
            }
            s.push('"');
        } else {
            s.push_str(v);
        }
    }
    s
}

/// RFC 6587 octet counting: `LEN SP MSG`.
pub fn octet_counted(msg: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg.as_bytes());
}

/// RFC 6587 octet counting of a message already in bytes.
pub fn octet_counted_bytes(msg: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg);
}

/// Parse an RFC 5424 message back into (header fields, SD params, MSG): for tests and for
/// checking what a receiver wrote. Only the first SD element is returned.
pub fn parse_rfc5424(line: &str) -> Option<Parsed> {
    let rest = line.strip_prefix('<')?;
    let (pri, rest) = rest.split_once('>')?;
    let pri: u8 = pri.parse().ok()?;
    let rest = rest.strip_prefix("1 ")?;
    let mut it = rest.splitn(6, ' ');
    let time = it.next()?.to_string();
    let host = it.next()?.to_string();
    let app = it.next()?.to_string();
    let procid = it.next()?.to_string();
    let msgid = it.next()?.to_string();
    let rest = it.next().unwrap_or("");
    let mut params = Vec::new();
    let mut sd_id = String::new();
    let msg;
    if let Some(r) = rest.strip_prefix('[') {
        let b = r.as_bytes();
        let mut i = 0;
        while i < b.len() && b[i] != b' ' && b[i] != b']' {
            i += 1;
        }
        sd_id = r[..i].to_string();
        loop {
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            if i >= b.len() {
                return None;
            }
            if b[i] == b']' {
                i += 1;
                break;
            }
            let ns = i;
            while i < b.len() && b[i] != b'=' {
                i += 1;
            }
            let name = r[ns..i].to_string();
            if r.get(i..i + 2) != Some("=\"") {
                return None;
            }
            i += 2;
            let mut v = Vec::new();
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() && matches!(b[i + 1], b'"' | b'\\' | b']') {
                    i += 1;
                }
                v.push(b[i]);
                i += 1;
            }
            if i >= b.len() {
                return None;
            }
            i += 1;
            params.push((name, String::from_utf8(v).ok()?));
        }
        // further SD elements are skipped
        let mut r2 = &r[i..];
        while r2.starts_with('[') {
            r2 = &r2[r2.find(']')? + 1..];
        }
        msg = r2.strip_prefix(' ').unwrap_or(r2).to_string();
    } else {
        let r = rest.strip_prefix("- ").or(rest.strip_prefix('-'))?;
        msg = r.to_string();
    }
    Some(Parsed {
        pri,
        time,
        host,
        app,
        procid,
        msgid,
        sd_id,
        params,
        msg,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub pri: u8,
    pub time: String,
    pub host: String,
    pub app: String,
    pub procid: String,
    pub msgid: String,
    pub sd_id: String,
    pub params: Vec<(String, String)>,
    pub msg: String,
}

impl Parsed {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::super::event::{Kind, Severity};
    use super::*;

    fn drop_event() -> Event {
        let mut e = Event::new(
            Kind::Drop,
            Severity::Warning,
            "dropped tcp 198.18.20.10:40000 -> 198.18.30.5:22",
        )
        .with("chain", "forward")
        .with("rule", "default-drop")
        .with("in", "internal")
        .with("out", "server")
        .with("src", "198.18.20.10")
        .with("dst", "198.18.30.5")
        .with("proto", "tcp")
        .with("sport", 40000)
        .with("dport", 22);
        e.seq = 7;
        e.time_us = 1_796_119_200_000_001;
        e
    }

    #[test]
    fn rfc5424_golden() {
        assert_eq!(
            rfc5424(&drop_event(), "gw1", 42),
            "<28>1 2026-12-01T10:00:00.000001Z gw1 bulkhead 42 drop [bulkhead@32473 kind=\"drop\" seq=\"7\" chain=\"forward\" rule=\"default-drop\" in=\"internal\" out=\"server\" src=\"198.18.20.10\" dst=\"198.18.30.5\" proto=\"tcp\" sport=\"40000\" dport=\"22\"] dropped tcp 198.18.20.10:40000 -> 198.18.30.5:22"
        );
    }

    #[test]
    fn rfc5424_escapes_sd_values_and_names() {
        let mut e = Event::new(Kind::Log, Severity::Error, "")
            .with("config", r#"a "b" \c] d"#)
            .with("bad name=x", "v");
        e.seq = 1;
        e.time_us = 0;
        let s = rfc5424(&e, "", 1);
        assert_eq!(
            s,
            r#"<27>1 1970-01-01T00:00:00.000000Z - bulkhead 1 log [bulkhead@32473 kind="log" seq="1" config="a \"b\" \\c\] d" bad_name_x="v"]"#
        );
        let p = parse_rfc5424(&s).unwrap();
        assert_eq!(p.param("config"), Some(r#"a "b" \c] d"#));
        assert_eq!(p.param("bad_name_x"), Some("v"));
        assert_eq!(p.msg, "");
    }

    #[test]
    fn rfc5424_round_trips() {
        let s = rfc5424(&drop_event(), "gw1", 42);
        let p = parse_rfc5424(&s).unwrap();
        assert_eq!(p.pri, 28);
        assert_eq!(p.msgid, "drop");
        assert_eq!(p.sd_id, SD_ID);
        assert_eq!(p.param("dport"), Some("22"));
        assert_eq!(p.param("seq"), Some("7"));
        assert_eq!(p.msg, "dropped tcp 198.18.20.10:40000 -> 198.18.30.5:22");
    }

    #[test]
    fn rfc3164_golden() {
        let mut e = drop_event();
        e.fields.push(("note".into(), "two words".into()));
        assert_eq!(
            rfc3164(&e, "gw1", 42),
            "<28>Dec  1 10:00:00 gw1 bulkhead[42]: dropped tcp 198.18.20.10:40000 -> 198.18.30.5:22 kind=drop seq=7 chain=forward rule=default-drop in=internal out=server src=198.18.20.10 dst=198.18.30.5 proto=tcp sport=40000 dport=22 note=\"two words\""
        );
    }

    /// Text a DHCP client chose: a newline with a forged syslog header, a terminal escape
    /// sequence, a C1 CSI, a right-to-left override.
    const HOSTILE: &str = "pc\n<13>forged: root login\r\x1b[31mred\x07\u{9b}2J\u{202e}txt";

    fn hostile_event() -> Event {
        let mut e = Event::new(
            Kind::Lease,
            Severity::Info,
            format!("lease bound: {HOSTILE}"),
        )
        .with("hostname", HOSTILE)
        .with("client_id", "\x00\x01\x7f")
        .with(HOSTILE, "v");
        e.seq = 3;
        e.time_us = 0;
        e
    }

    fn assert_one_clean_line(s: &str) {
        let bad = |c: char| c.is_control() || matches!(c, '\u{2028}'..='\u{202e}');
        assert!(!s.chars().any(bad), "control characters left: {s:?}");
        assert!(!s.contains("\n<13>"), "{s:?}");
    }

    #[test]
    fn rfc5424_escapes_control_characters_everywhere() {
        let s = rfc5424(&hostile_event(), "gw\n1", 1);
        assert_one_clean_line(&s);
        let p = parse_rfc5424(&s).unwrap();
        let want = r"pc\n<13>forged: root login\r\x1b[31mred\x07\x9b2J\u{202e}txt";
        assert_eq!(p.param("hostname"), Some(want));
        assert_eq!(p.param("client_id"), Some(r"\x00\x01\x7f"));
        assert_eq!(p.msg, format!("lease bound: {want}"));
        assert_eq!(p.host, "gw1");
    }

    #[test]
    fn rfc3164_escapes_control_characters_everywhere() {
        let s = rfc3164(&hostile_event(), "gw1", 1);
        assert_one_clean_line(&s);
        assert!(
            s.contains(
                r#"hostname="pc\n<13>forged: root login\r\x1b[31mred\x07\x9b2J\u{202e}txt""#
            ),
            "{s}"
        );
        assert!(s.contains(r#"client_id="\x00\x01\x7f""#), "{s}");
    }

    #[test]
    fn escaping_keeps_ordinary_text() {
        let mut e = Event::new(Kind::Log, Severity::Info, "café 中文 a\\b \"q\"\tz");
        e.time_us = 0;
        assert!(
            rfc5424(&e, "gw", 1).ends_with(r#" café 中文 a\b "q"\tz"#),
            "{}",
            rfc5424(&e, "gw", 1)
        );
    }

    proptest::proptest! {
        /// What the `syslog_escape` fuzz target checks, on arbitrary Unicode text.
        #[test]
        fn any_text_gives_one_clean_line_that_parses_back(
            host in "\\PC*|[\\x00-\\x7f]*",
            msg in "\\PC*|[\\x00-\\x7f]*|.*",
            fields in proptest::collection::vec(("\\PC{0,8}", "(\\PC|[\\x00-\\x1f\\x7f-\\u{9f}\\u{2028}-\\u{202e}\"\\\\\\]])*"), 0..4),
        ) {
            let mut ev = Event::new(Kind::Lease, Severity::Info, msg.clone());
            for (k, v) in &fields {
                ev = ev.with(k, v);
            }
            for line in [rfc5424(&ev, &host, 1), rfc3164(&ev, &host, 1)] {
                proptest::prop_assert!(!line.chars().any(needs_escape), "{:?}", line);
            }
            let p = parse_rfc5424(&rfc5424(&ev, &host, 1)).unwrap();
            proptest::prop_assert_eq!(&p.msg, &escaped(&msg));
            proptest::prop_assert_eq!(p.params.len(), 2 + fields.len());
            for ((_, want), (_, got)) in fields.iter().zip(&p.params[2..]) {
                proptest::prop_assert_eq!(got, &escaped(want));
            }
        }
    }

    #[test]
    fn octet_counting_counts_bytes() {
        let mut v = Vec::new();
        octet_counted("é x", &mut v);
        assert_eq!(v, b"4 \xc3\xa9 x");
    }
}
