//! Fuzz the spool's frame reader with arbitrary chunk bytes (damaged, torn, hostile).
//! Besides "never panics", checks that what it returns is what a clean chunk of those
//! frames reads back as (same frames, no damage), and that damage in front of a whole
//! chunk never costs that chunk's frames after resync.
//!
//! Run from the `fuzz` directory: `cargo +nightly fuzz run spool_frames`.
#![no_main]

use bulkhead::logship::spool::{encode_frame, read_frames};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let r = read_frames(data);
    let mut clean = Vec::new();
    for f in &r.frames {
        encode_frame(f, &mut clean);
    }
    let again = read_frames(&clean);
    assert_eq!(again.frames, r.frames);
    assert_eq!(again.damaged, 0);
    // frames of UTF-8 text (what the spool holds) after garbage that holds no frame
    // header: all found, the garbage counted once
    if !data.is_empty() && !data.windows(2).any(|w| w == [0xFF, 0xF8]) && data[data.len() - 1] != 0xFF {
        let text = String::from_utf8_lossy(data);
        let mut b = data.to_vec();
        encode_frame(text.as_bytes(), &mut b);
        encode_frame(b"next", &mut b);
        let r = read_frames(&b);
        assert_eq!(r.damaged, 1);
        assert_eq!(r.frames, vec![text.as_bytes().to_vec(), b"next".to_vec()]);
    }
});
