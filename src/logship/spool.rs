//! The on-disk spool of one target: events that could not be delivered yet, in order.
//!
//! A directory of chunk files named by a 20-digit number. Each chunk holds frames:
//!
//! ```text
//! MAGIC (FF F8) | u32 length (LE) | u32 CRC-32 of length bytes and payload (LE) | payload
//! ```
//!
//! The magic never occurs in a payload (payloads are UTF-8, where FF and F8 cannot appear),
//! so a reader that meets a damaged frame (a flipped bit, a torn write) skips to the next
//! place where a whole frame with a matching checksum starts: one damaged frame costs that
//! frame, never the rest of the chunk. Every damaged stretch is counted (as one frame, the
//! least it held) and the shipper reports the count as a warning event.
//!
//! Appends go to the newest chunk and reach the kernel (write(2)) before `append` returns,
//! so a killed process loses nothing spooled; they are made durable (fdatasync) on a bounded
//! schedule: at least every [`SYNC_FRAMES`] frames or [`SYNC_INTERVAL`], whichever comes
//! first (the shipper calls [`Spool::maybe_sync`] on a timer), so a power cut loses at most
//! that much of the newest spooled events.
//!
//! Replay reads the oldest chunk first ([`Spool::pop_chunk`]) but leaves its file in place:
//! the chunk is deleted only when every one of its frames is confirmed delivered
//! ([`Spool::confirm`]), or when the frames still unconfirmed have been written again,
//! durably, into a chunk in front of everything ([`Spool::prepend`] then
//! [`Spool::release_reading`]: a broken connection or a stop). A crash at any point leaves
//! the chunk on disk and its frames are sent again after the restart: at least once.
//!
//! When the spool is over its limit, whole chunks are dropped, oldest first, and their frames
//! counted as dropped.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The first chunk number: room below it for prepended chunks.
const START: u64 = 1 << 40;
/// The first bytes of every frame.
pub const MAGIC: [u8; 2] = [0xFF, 0xF8];
/// Magic, length, checksum.
pub const HEADER: usize = 10;
/// The largest frame a reader accepts (a longer length field is damage).
pub const MAX_FRAME: usize = 16 << 20;
/// Spooled frames not yet fsynced at most ...
pub const SYNC_FRAMES: u64 = 512;
/// ... and for at most this long.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Chunk {
    num: u64,
    bytes: u64,
    frames: u64,
}

/// A chunk taken out for sending: its file stays until its frames are confirmed.
#[derive(Debug)]
struct Reading {
    num: u64,
    bytes: u64,
    outstanding: u64,
}

/// The frames of one chunk taken out for sending.
#[derive(Debug, Default)]
pub struct Popped {
    /// The chunk's number: pass it to [`Spool::confirm`] for every delivered frame.
    pub num: u64,
    pub frames: Vec<Vec<u8>>,
    /// Damaged frames skipped in it.
    pub damaged: u64,
    /// The chunk's file name.
    pub file: String,
    /// The chunk could not be read (its frames, counted as damaged, are lost).
    pub error: Option<String>,
}

pub struct Spool {
    dir: PathBuf,
    limit: u64,
    chunk_size: u64,
    chunks: VecDeque<Chunk>,
    reading: VecDeque<Reading>,
    /// The newest chunk, open for appending.
    tail: Option<File>,
    bytes: u64,
    frames: u64,
    unsynced: u64,
    last_sync: Instant,
    /// A chunk file was created since the directory was last fsynced.
    dir_dirty: bool,
    /// Frames dropped because the spool was full (since this process started).
    pub dropped: u64,
    /// Frames written to the spool (since this process started).
    pub spooled: u64,
    /// Damaged frames found and skipped when reading chunks (since this process started).
    pub discarded: u64,
}

fn chunk_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.chunk"))
}

/// One frame as it is stored.
pub fn encode_frame(f: &[u8], out: &mut Vec<u8>) {
    let len = (f.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(f);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(f);
}

/// The frame starting at `i`, whole and with a matching checksum: (payload, end).
fn frame_at(b: &[u8], i: usize) -> Option<(&[u8], usize)> {
    let h = b.get(i..i.checked_add(HEADER)?)?;
    if h[0..2] != MAGIC {
        return None;
    }
    let n = u32::from_le_bytes(h[2..6].try_into().ok()?) as usize;
    if n > MAX_FRAME {
        return None;
    }
    let crc = u32::from_le_bytes(h[6..10].try_into().ok()?);
    let end = i + HEADER + n;
    let p = b.get(i + HEADER..end)?;
    let mut hs = crc32fast::Hasher::new();
    hs.update(&h[2..6]);
    hs.update(p);
    (hs.finalize() == crc).then_some((p, end))
}

/// What a chunk's bytes hold.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Frames {
    /// The whole frames with a matching checksum, in order.
    pub frames: Vec<Vec<u8>>,
    /// Damaged stretches skipped (each at least one frame): a bad checksum, a broken header,
    /// or a torn frame at the end.
    pub damaged: u64,
}

/// Read the frames of a chunk's bytes, skipping damage: after a frame that does not check
/// out, reading goes on at the next place a valid frame starts.
pub fn read_frames(b: &[u8]) -> Frames {
    let mut out = Frames::default();
    let mut i = 0;
    while i < b.len() {
        if let Some((p, end)) = frame_at(b, i) {
            out.frames.push(p.to_vec());
            i = end;
            continue;
        }
        out.damaged += 1;
        // resync: the next magic that starts a valid frame
        let mut j = i + 1;
        i = b.len();
        while let Some(k) = b[j..].windows(2).position(|w| w == MAGIC).map(|k| k + j) {
            if frame_at(b, k).is_some() {
                i = k;
                break;
            }
            j = k + 1;
        }
    }
    out
}

impl Spool {
    /// Open (or create) the spool in `dir`, picking up what an earlier run left.
    pub fn open(dir: &Path, limit: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut nums: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name();
                let n = n.to_str()?;
                n.strip_suffix(".chunk")?.parse().ok()
            })
            .collect();
        nums.sort_unstable();
        let mut s = Spool {
            dir: dir.to_path_buf(),
            limit,
            chunk_size: (limit / 16).clamp(4096, 4 << 20),
            chunks: VecDeque::new(),
            reading: VecDeque::new(),
            tail: None,
            bytes: 0,
            frames: 0,
            unsynced: 0,
            last_sync: Instant::now(),
            dir_dirty: false,
            dropped: 0,
            spooled: 0,
            discarded: 0,
        };
        for n in nums {
            let data = std::fs::read(chunk_path(dir, n))?;
            // damage is counted (and reported) when the chunk is read for sending
            let frames = read_frames(&data).frames.len() as u64;
            s.bytes += data.len() as u64;
            s.frames += frames;
            s.chunks.push_back(Chunk {
                num: n,
                bytes: data.len() as u64,
                frames,
            });
        }
        s.enforce()?;
        Ok(s)
    }

    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Frames waiting (not counting those of chunks taken out for sending).
    pub fn len(&self) -> u64 {
        self.frames
    }

    /// Bytes of the chunks waiting.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Chunk files on disk: waiting, and taken out for sending but not yet confirmed.
    pub fn chunk_files(&self) -> usize {
        self.chunks.len() + self.reading.len()
    }

    fn reading_bytes(&self) -> u64 {
        self.reading.iter().map(|r| r.bytes).sum()
    }

    /// The number of a new chunk in front of everything on disk.
    fn front_num(&self) -> u64 {
        let a = self.chunks.front().map(|c| c.num);
        let b = self.reading.front().map(|r| r.num);
        match (a, b) {
            (Some(a), Some(b)) => a.min(b) - 1,
            (Some(x), None) | (None, Some(x)) => x - 1,
            (None, None) => START,
        }
    }

    /// The number of a new chunk after everything on disk.
    fn back_num(&self) -> u64 {
        let a = self.chunks.back().map(|c| c.num);
        let b = self.reading.back().map(|r| r.num);
        a.max(b).map_or(START, |n| n + 1)
    }

    /// Append frames after everything spooled. They reach the kernel before this returns;
    /// they are fsynced on the bounded schedule (see the module documentation).
    /// Frames that cannot be written (a full disk, say) are counted as dropped; a frame cut
    /// short by the failing write is cut off the file again.
    pub fn append<'a>(&mut self, frames: impl IntoIterator<Item = &'a [u8]>) -> io::Result<()> {
        let frames: Vec<&[u8]> = frames.into_iter().collect();
        let mut done = 0;
        let r = self.append_frames(&frames, &mut done);
        if r.is_err() && done < frames.len() {
            self.dropped += (frames.len() - done) as u64;
        }
        r
    }

    fn append_frames(&mut self, frames: &[&[u8]], done: &mut usize) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        while *done < frames.len() {
            let need_new = match self.chunks.back() {
                None => true,
                Some(c) => c.bytes >= self.chunk_size || self.tail.is_none(),
            };
            if need_new {
                self.sync()?;
                let num = self.back_num();
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(chunk_path(&self.dir, num))?;
                self.tail = Some(file);
                self.dir_dirty = true;
                self.chunks.push_back(Chunk {
                    num,
                    bytes: 0,
                    frames: 0,
                });
            }
            // the frames that go into this chunk, in one write
            let start = self.chunks.back().expect("tail chunk").bytes;
            buf.clear();
            ends.clear();
            for f in &frames[*done..] {
                if !ends.is_empty() && start + buf.len() as u64 >= self.chunk_size {
                    break;
                }
                encode_frame(f, &mut buf);
                ends.push(buf.len());
            }
            let file = self.tail.as_mut().expect("tail open");
            let mut off = 0;
            let res = loop {
                if off == buf.len() {
                    break Ok(());
                }
                match file.write(&buf[off..]) {
                    Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                    Ok(n) => off += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            let whole = ends.iter().take_while(|e| **e <= off).count();
            let whole_bytes = if whole == 0 { 0 } else { ends[whole - 1] } as u64;
            if res.is_err() {
                if off as u64 > whole_bytes {
                    // cut the torn frame off; if even that fails, the reader skips it
                    let _ = file.set_len(start + whole_bytes);
                }
                // the next frame starts a chunk of its own
                self.tail = None;
            }
            let c = self.chunks.back_mut().expect("tail chunk");
            c.bytes += whole_bytes;
            c.frames += whole as u64;
            self.bytes += whole_bytes;
            self.frames += whole as u64;
            self.spooled += whole as u64;
            self.unsynced += whole as u64;
            *done += whole;
            res?;
            if self.bytes + self.reading_bytes() > self.limit {
                self.enforce()?;
            }
        }
        self.maybe_sync()
    }

    /// Put frames before everything spooled (they go out first), keeping their order. The
    /// chunk is fsynced (with its directory entry) before this returns.
    pub fn prepend<'a>(&mut self, frames: impl IntoIterator<Item = &'a [u8]>) -> io::Result<()> {
        let num = self.front_num();
        let path = chunk_path(&self.dir, num);
        let mut buf = Vec::new();
        let mut count = 0u64;
        for f in frames {
            encode_frame(f, &mut buf);
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        // whole or not at all: a crash leaves either no chunk or all of it
        crate::sys::fs::write_atomic(&path, &buf, 0o600)?;
        let bytes = buf.len() as u64;
        self.chunks.push_front(Chunk {
            num,
            bytes,
            frames: count,
        });
        self.bytes += bytes;
        self.frames += count;
        self.spooled += count;
        self.enforce()
    }

    /// Take the oldest chunk's frames out for sending. Its file stays until [`Spool::confirm`]
    /// has been called for each of its frames, or [`Spool::release_reading`].
    pub fn pop_chunk(&mut self) -> io::Result<Popped> {
        let Some(c) = self.chunks.front() else {
            return Ok(Popped::default());
        };
        let (num, bytes) = (c.num, c.bytes);
        if self.chunks.len() == 1 && self.tail.is_some() {
            // the chunk being appended to: no more appends into it
            self.sync()?;
            self.tail = None;
        }
        let p = chunk_path(&self.dir, num);
        let mut data = Vec::with_capacity(bytes as usize);
        let read = File::open(&p).and_then(|mut f| f.read_to_end(&mut data));
        let c = self.chunks.pop_front().expect("front");
        self.bytes -= c.bytes;
        self.frames -= c.frames;
        if let Err(e) = read {
            // gone or unreadable: its frames are lost, counted and reported, and the
            // chunks after it go on (rather than failing on this one forever)
            let _ = std::fs::remove_file(&p);
            self.discarded += c.frames.max(1);
            return Ok(Popped {
                num,
                frames: Vec::new(),
                damaged: c.frames.max(1),
                file: format!("{num:020}.chunk"),
                error: Some(e.to_string()),
            });
        }
        let f = read_frames(&data);
        self.discarded += f.damaged;
        if f.frames.is_empty() {
            std::fs::remove_file(&p)?;
        } else {
            self.reading.push_back(Reading {
                num,
                bytes: c.bytes,
                outstanding: f.frames.len() as u64,
            });
        }
        Ok(Popped {
            num,
            frames: f.frames,
            damaged: f.damaged,
            file: format!("{num:020}.chunk"),
            error: None,
        })
    }

    /// `n` frames of chunk `num` were delivered: when none of its frames is left, its file
    /// is deleted.
    pub fn confirm(&mut self, num: u64, n: u64) -> io::Result<()> {
        let Some(i) = self.reading.iter().position(|r| r.num == num) else {
            return Ok(());
        };
        let r = &mut self.reading[i];
        r.outstanding = r.outstanding.saturating_sub(n);
        if r.outstanding == 0 {
            self.reading.remove(i);
            std::fs::remove_file(chunk_path(&self.dir, num))?;
        }
        Ok(())
    }

    /// The chunks taken out for sending are done with: their unconfirmed frames were put back
    /// with [`Spool::prepend`] (or there were none). Deletes their files.
    pub fn release_reading(&mut self) -> io::Result<()> {
        while let Some(r) = self.reading.pop_front() {
            std::fs::remove_file(chunk_path(&self.dir, r.num))?;
        }
        Ok(())
    }

    /// Putting the unconfirmed frames back failed: the chunks taken out for sending go back
    /// to the front, whole, to be sent again (their delivered frames a second time).
    pub fn unread(&mut self) -> io::Result<()> {
        while let Some(r) = self.reading.pop_back() {
            let data = std::fs::read(chunk_path(&self.dir, r.num))?;
            let frames = read_frames(&data).frames.len() as u64;
            self.bytes += data.len() as u64;
            self.frames += frames;
            self.chunks.push_front(Chunk {
                num: r.num,
                bytes: data.len() as u64,
                frames,
            });
        }
        Ok(())
    }

    /// Nothing is buffered in the process: every append reached the kernel already (it
    /// survives the process, not a power cut; see [`Spool::sync`]).
    pub fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// fsync when [`SYNC_FRAMES`] frames or [`SYNC_INTERVAL`] have passed since the last one.
    pub fn maybe_sync(&mut self) -> io::Result<()> {
        if self.unsynced > 0
            && (self.unsynced >= SYNC_FRAMES || self.last_sync.elapsed() >= SYNC_INTERVAL)
        {
            self.sync()?;
        }
        Ok(())
    }

    /// Make everything appended durable: the newest chunk's data and new directory entries.
    pub fn sync(&mut self) -> io::Result<()> {
        if let Some(w) = self.tail.as_mut()
            && self.unsynced > 0
        {
            w.sync_data()?;
        }
        if self.dir_dirty {
            crate::sys::fs::sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        self.unsynced = 0;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Drop the oldest chunks while over the limit (never the only, newest chunk... unless
    /// even that one is over the limit on its own). Chunks being sent are not dropped.
    fn enforce(&mut self) -> io::Result<()> {
        let reading = self.reading_bytes();
        while self.bytes + reading > self.limit && !self.chunks.is_empty() {
            if self.chunks.len() == 1 {
                // one chunk over the whole limit: start a new one after it
                self.flush()?;
                self.tail = None;
            }
            let c = self.chunks.pop_front().expect("front");
            let _ = std::fs::remove_file(chunk_path(&self.dir, c.num));
            self.bytes -= c.bytes;
            self.frames -= c.frames;
            self.dropped += c.frames;
        }
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(i: u32) -> Vec<u8> {
        format!("event {i:06} {}", "x".repeat(40)).into_bytes()
    }

    /// Take every chunk and confirm every frame (what a healthy connection does).
    fn drain(s: &mut Spool) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        while !s.is_empty() {
            let p = s.pop_chunk().unwrap();
            s.confirm(p.num, p.frames.len() as u64).unwrap();
            v.extend(p.frames);
        }
        v
    }

    fn files(d: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn order_is_kept_across_chunks_and_prepends() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path(), 1 << 20).unwrap();
        let a: Vec<Vec<u8>> = (100..400).map(f).collect();
        s.append(a.iter().map(|x| x.as_slice())).unwrap();
        assert_eq!(s.len(), 300);
        let first = s.pop_chunk().unwrap().frames;
        assert_eq!(first[0], f(100));
        // the popped chunk could not be delivered: back in front, then a newer prepend
        s.prepend(first.iter().map(|x| x.as_slice())).unwrap();
        s.release_reading().unwrap();
        let early: Vec<Vec<u8>> = (0..100).map(f).collect();
        s.prepend(early.iter().map(|x| x.as_slice())).unwrap();
        s.append([f(400).as_slice()]).unwrap();
        let all = drain(&mut s);
        assert_eq!(all, (0..401).map(f).collect::<Vec<_>>());
        assert_eq!(s.dropped, 0);
        assert_eq!(s.bytes(), 0);
        assert!(files(d.path()).is_empty(), "{:?}", files(d.path()));
    }

    #[test]
    fn full_spool_drops_the_oldest_and_counts_them() {
        let d = tempfile::tempdir().unwrap();
        let limit = 65_536;
        let mut s = Spool::open(d.path(), limit).unwrap();
        let n = 5000u32;
        for i in 0..n {
            s.append([f(i).as_slice()]).unwrap();
        }
        assert!(s.bytes() <= limit, "{} > {limit}", s.bytes());
        assert!(s.dropped > 0);
        let kept = drain(&mut s);
        assert_eq!(kept.len() as u64 + s.dropped, u64::from(n));
        // what is kept is the newest, in order
        let first = u32::try_from(s.dropped).unwrap();
        assert_eq!(kept, (first..n).map(f).collect::<Vec<_>>());
    }

    #[test]
    fn survives_a_restart() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(d.path(), 1 << 20).unwrap();
            s.append(
                (0..50)
                    .map(f)
                    .collect::<Vec<_>>()
                    .iter()
                    .map(|x| x.as_slice()),
            )
            .unwrap();
        }
        // a torn frame at the end of the newest chunk is skipped and counted
        let newest = files(d.path()).pop().unwrap();
        let mut fh = OpenOptions::new().append(true).open(&newest).unwrap();
        fh.write_all(&[0xFF, 0xF8, 200, 0, 0, 0, 1, 2, 3, 4, b'x'])
            .unwrap();
        drop(fh);
        let mut s = Spool::open(d.path(), 1 << 20).unwrap();
        assert_eq!(s.len(), 50);
        s.append([f(50).as_slice()]).unwrap();
        assert_eq!(drain(&mut s), (0..51).map(f).collect::<Vec<_>>());
        assert_eq!(s.discarded, 1);
    }

    /// Frame `k` of 50 spooled in one chunk: its offset in the file.
    fn offset_of(k: usize) -> usize {
        (0..k).map(|i| HEADER + f(i as u32).len()).sum()
    }

    #[test]
    fn a_flipped_byte_costs_only_its_frame_and_is_counted() {
        for (what, at) in [
            ("payload", offset_of(10) + HEADER + 3),
            ("length", offset_of(10) + 3),
            ("magic", offset_of(10)),
            ("checksum", offset_of(10) + 7),
        ] {
            let d = tempfile::tempdir().unwrap();
            {
                let mut s = Spool::open(d.path(), 1 << 20).unwrap();
                let a: Vec<Vec<u8>> = (0..50).map(f).collect();
                s.append(a.iter().map(|x| x.as_slice())).unwrap();
            }
            let chunk = files(d.path()).pop().unwrap();
            let mut data = std::fs::read(&chunk).unwrap();
            data[at] ^= 0x04;
            std::fs::write(&chunk, &data).unwrap();
            let mut s = Spool::open(d.path(), 1 << 20).unwrap();
            let got = drain(&mut s);
            let want: Vec<Vec<u8>> = (0..50).filter(|i| *i != 10).map(f).collect();
            assert_eq!(got, want, "{what}");
            assert_eq!(s.discarded, 1, "{what}");
        }
    }

    #[test]
    fn appended_frames_reach_the_file_before_append_returns() {
        // a process killed right after spooling loses nothing: no frame waits in memory
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path(), 1 << 20).unwrap();
        s.append([f(1).as_slice(), f(2).as_slice()]).unwrap();
        s.append([f(3).as_slice()]).unwrap();
        let data = std::fs::read(files(d.path()).pop().unwrap()).unwrap();
        assert_eq!(read_frames(&data).frames, vec![f(1), f(2), f(3)]);
        std::mem::forget(s);
    }

    #[test]
    fn a_chunk_is_deleted_only_once_its_frames_are_confirmed() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path(), 1 << 20).unwrap();
        let a: Vec<Vec<u8>> = (0..20).map(f).collect();
        s.append(a.iter().map(|x| x.as_slice())).unwrap();
        let p = s.pop_chunk().unwrap();
        assert_eq!(p.frames.len(), 20);
        // taken out for sending: still on disk
        assert_eq!(files(d.path()).len(), 1);
        s.confirm(p.num, 19).unwrap();
        assert_eq!(files(d.path()).len(), 1);
        // a crash now: everything is sent again after the restart
        std::mem::forget(s);
        let mut s2 = Spool::open(d.path(), 1 << 20).unwrap();
        assert_eq!(s2.len(), 20);
        let p = s2.pop_chunk().unwrap();
        s2.confirm(p.num, 20).unwrap();
        assert!(files(d.path()).is_empty());
        assert!(s2.is_empty());
    }

    #[test]
    fn a_broken_connection_puts_back_only_the_unconfirmed_frames() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path(), 1 << 20).unwrap();
        let a: Vec<Vec<u8>> = (0..20).map(f).collect();
        s.append(a.iter().map(|x| x.as_slice())).unwrap();
        let p = s.pop_chunk().unwrap();
        s.append([f(20).as_slice()]).unwrap();
        s.confirm(p.num, 5).unwrap();
        s.prepend(p.frames[5..].iter().map(|x| x.as_slice()))
            .unwrap();
        s.release_reading().unwrap();
        assert_eq!(drain(&mut s), (5..21).map(f).collect::<Vec<_>>());
        // putting them back failed: the whole chunk goes out again
        let a: Vec<Vec<u8>> = (0..3).map(f).collect();
        s.append(a.iter().map(|x| x.as_slice())).unwrap();
        let p = s.pop_chunk().unwrap();
        s.confirm(p.num, 1).unwrap();
        s.unread().unwrap();
        assert_eq!(drain(&mut s), a);
    }

    #[test]
    fn an_unreadable_chunk_is_counted_and_the_next_one_still_read() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path(), 1 << 20).unwrap();
        s.append([f(1).as_slice()]).unwrap();
        s.sync().unwrap();
        s.tail = None;
        s.append([f(2).as_slice()]).unwrap();
        std::fs::remove_file(&files(d.path())[0]).unwrap();
        let p = s.pop_chunk().unwrap();
        assert!(p.error.is_some());
        assert_eq!((p.frames.len(), p.damaged, s.discarded), (0, 1, 1));
        assert_eq!(drain(&mut s), vec![f(2)]);
    }

    #[test]
    fn frames_a_full_disk_refuses_are_counted_as_dropped() {
        // a 16 KiB tmpfs as the spool's disk (needs root; skipped otherwise)
        let d = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
            .arg(d.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs");
            return;
        }
        let r = std::panic::catch_unwind(|| {
            let mut s = Spool::open(d.path(), 1 << 20).unwrap();
            let mut failed = 0u64;
            for i in 0..1000 {
                if s.append([f(i).as_slice()]).is_err() {
                    failed += 1;
                }
            }
            assert!(failed > 0, "a 16 KiB disk took 60 KB");
            assert_eq!(s.dropped, failed);
            // what was written is there, whole, in order
            let got = drain(&mut s);
            assert!(
                got.len() as u64 + failed >= 1000,
                "{} + {failed}",
                got.len()
            );
            assert!(got.iter().all(|x| x.starts_with(b"event ")));
        });
        let _ = std::process::Command::new("umount").arg(d.path()).status();
        if let Err(e) = r {
            std::panic::resume_unwind(e);
        }
    }

    #[test]
    fn the_reader_resyncs_after_garbage() {
        let mut b = Vec::new();
        encode_frame(b"one", &mut b);
        b.extend_from_slice(&[0xFF, 0xF8, 1, 2, 0xFF, 0xF8, 0, 0, 0]);
        encode_frame(b"two", &mut b);
        encode_frame(b"", &mut b);
        b.extend_from_slice(&[0xFF, 0xF8, 5, 0, 0, 0]);
        let r = read_frames(&b);
        assert_eq!(r.frames, vec![b"one".to_vec(), b"two".to_vec(), vec![]]);
        assert_eq!(r.damaged, 2);
        assert_eq!(read_frames(&[]), Frames::default());
    }

    proptest::proptest! {
        /// What the `spool_frames` fuzz target checks, on arbitrary bytes.
        #[test]
        fn any_bytes_read_without_panic_and_re_encode_cleanly(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
        ) {
            let r = read_frames(&data);
            let mut clean = Vec::new();
            for f in &r.frames {
                encode_frame(f, &mut clean);
            }
            let again = read_frames(&clean);
            proptest::prop_assert_eq!(&again.frames, &r.frames);
            proptest::prop_assert_eq!(again.damaged, 0);
        }

        /// Damage at any byte of a spooled chunk costs one stretch, never the frames after it.
        #[test]
        fn one_flipped_byte_anywhere_costs_at_most_its_frame(
            n in 1usize..20, at in proptest::num::usize::ANY, bit in 0u8..8,
        ) {
            let frames: Vec<Vec<u8>> = (0..n as u32).map(f).collect();
            let mut b = Vec::new();
            for x in &frames {
                encode_frame(x, &mut b);
            }
            let at = at % b.len();
            b[at] ^= 1 << bit;
            let r = read_frames(&b);
            proptest::prop_assert_eq!(r.damaged, 1);
            proptest::prop_assert_eq!(r.frames.len(), n - 1);
            proptest::prop_assert!(r.frames.iter().all(|x| frames.contains(x)));
        }
    }
}
