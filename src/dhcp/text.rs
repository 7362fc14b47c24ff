//! Text a DHCP client chose (host name, and anything else read from a
//! packet) made safe to store, log and print: control characters (C0, DEL,
//! C1), bidirectional-override marks and bytes that are not UTF-8 are
//! replaced by visible escapes, so an embedded newline cannot forge a log
//! line and an escape sequence cannot reach an operator's terminal.
//!
//! * `\n` (0x0a) becomes `\x0a`, ESC becomes `\x1b`, DEL `\x7f`;
//! * U+009B (C1 CSI) becomes `\u{9b}`, U+202E becomes `\u{202e}`;
//! * a byte that is not part of valid UTF-8 becomes `\xNN`.
//!
//! Backslashes are left alone, so escaping is idempotent: cleaning text
//! that was already cleaned changes nothing.

use std::borrow::Cow;
use std::fmt::Write;

/// Longest host name kept (bytes, after escaping); RFC 1035 names are at
/// most 255 octets.
pub const MAX_HOSTNAME: usize = 255;

/// Does this character need escaping?
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    if (c as u32) < 0x80 {
        let _ = write!(out, "\\x{:02x}", c as u32);
    } else {
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
    }
}

/// Clean raw bytes from a packet into a string with no control characters,
/// at most `limit` bytes long (cut between whole characters or escapes).
pub fn clean_bytes(bytes: &[u8], limit: usize) -> String {
    let mut out = String::with_capacity(bytes.len().min(limit));
    let mut piece = String::new();
    'outer: for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            piece.clear();
            if is_unsafe(c) {
                push_escaped(&mut piece, c);
            } else {
                piece.push(c);
            }
            if out.len() + piece.len() > limit {
                break 'outer;
            }
            out.push_str(&piece);
        }
        for b in chunk.invalid() {
            piece.clear();
            let _ = write!(piece, "\\x{b:02x}");
            if out.len() + piece.len() > limit {
                break 'outer;
            }
            out.push_str(&piece);
        }
    }
    out
}

/// Escape the unsafe characters of a string (for output paths: text stored
/// before it was cleaned on input is made safe again here).
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(clean_bytes(s.as_bytes(), usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_bad_utf8_idempotently() {
        let raw = b"a\nb\x1b[1m\xff\xc2\x9bc\\x0a";
        let once = clean_bytes(raw, usize::MAX);
        assert_eq!(once, r"a\x0ab\x1b[1m\xff\u{9b}c\x0a");
        assert_eq!(escape(&once), once);
        assert!(!once.chars().any(is_unsafe));
        assert_eq!(escape("plain-name"), "plain-name");
    }

    #[test]
    fn limit_cuts_between_escapes() {
        let s = clean_bytes(b"ab\n", 4);
        assert_eq!(s, "ab");
        assert!(clean_bytes(&[b'x'; 1000], MAX_HOSTNAME).len() == MAX_HOSTNAME);
    }
}
