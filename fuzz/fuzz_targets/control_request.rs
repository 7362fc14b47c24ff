//! Fuzz the control socket's request reading: the input is a byte stream as a client sends
//! it, cut into reads of `data[0] % 64 + 1` bytes and split into lines by a `LineReader`
//! capped at `data[1] % 128 + 1` bytes (small, so the cap is hit often) and by one capped at
//! the real `MAX_LINE`. Besides "never panics", checks that a reader never holds more than
//! its cap, that a line it returns has no newline and fits the cap, that without an
//! over-long line the lines and newlines give back the input, and that every request that
//! parses serializes to one that parses the same.
//!
//! Run from the `fuzz` directory: `cargo +nightly fuzz run control_request`.
#![no_main]

use bulkhead::control::{Line, LineReader, MAX_LINE, parse_request};
use libfuzzer_sys::fuzz_target;

fn split(input: &[u8], read: usize, max: usize) -> (Vec<Line>, bool) {
    let mut r = LineReader::new(max);
    let mut out = Vec::new();
    for chunk in input.chunks(read) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let (n, line) = r.feed(rest);
            assert!(n > 0 && n <= rest.len(), "used {n} of {}", rest.len());
            assert!(r.pending() <= max, "holds {} > {max}", r.pending());
            rest = &rest[n..];
            if let Some(l) = line {
                if l == Line::TooLong {
                    // the server closes the connection here
                    return (out, true);
                }
                out.push(l);
            }
        }
    }
    if let Some(l) = r.finish() {
        out.push(l);
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (read, small) = (usize::from(data[0] % 64) + 1, usize::from(data[1] % 128) + 1);
    let input = &data[2..];
    for max in [small, MAX_LINE] {
        let (lines, too_long) = split(input, read, max);
        let mut back = Vec::new();
        for l in &lines {
            let Line::Complete(l) = l else {
                unreachable!("TooLong ends the stream")
            };
            assert!(l.len() <= max);
            assert!(!l.contains(&b'\n'));
            back.extend_from_slice(l);
            back.push(b'\n');
            if let Ok(req) = parse_request(l) {
                let again = serde_json::to_vec(&req).expect("serializes");
                assert_eq!(parse_request(&again).as_ref(), Ok(&req));
            }
        }
        if !too_long {
            // the last line may have had no newline
            let n = input.len();
            assert!(back == input || (back.len() == n + 1 && back[..n] == *input));
        }
    }
});
