//! The on-disk spool of one target: events that could not be delivered yet, in order.
//!
//! A directory of chunk files named by a 20-digit number; each chunk holds frames as
//! `u32 length (little-endian) + bytes`. Appends go to the newest chunk, replay reads the
//! oldest chunk first, and frames that must go out before everything spooled (those sent on
//! a connection that broke before they were known to be delivered) go into a chunk numbered
//! below the oldest. When the spool is over its limit, whole chunks are dropped, oldest
//! first, and their frames counted as dropped.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The first chunk number: room below it for prepended chunks.
const START: u64 = 1 << 40;

#[derive(Debug)]
struct Chunk {
    num: u64,
    bytes: u64,
    frames: u64,
}

pub struct Spool {
    dir: PathBuf,
    limit: u64,
    chunk_size: u64,
    chunks: VecDeque<Chunk>,
    tail: Option<BufWriter<File>>,
    bytes: u64,
    frames: u64,
    /// Frames dropped because the spool was full (since this process started).
    pub dropped: u64,
    /// Frames written to the spool (since this process started).
    pub spooled: u64,
}

fn chunk_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.chunk"))
}

/// Frames of a chunk's bytes; a torn last frame (a crash while writing) is ignored.
fn frames_of(data: &[u8]) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut b = data;
    while b.len() >= 4 {
        let n = u32::from_le_bytes(b[0..4].try_into().expect("4")) as usize;
        if b.len() < 4 + n {
            break;
        }
        v.push(b[4..4 + n].to_vec());
        b = &b[4 + n..];
    }
    v
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
            tail: None,
            bytes: 0,
            frames: 0,
            dropped: 0,
            spooled: 0,
        };
        for n in nums {
            let data = std::fs::read(chunk_path(dir, n))?;
            let frames = frames_of(&data).len() as u64;
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

    /// Frames waiting.
    pub fn len(&self) -> u64 {
        self.frames
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn write_frame(w: &mut impl Write, f: &[u8]) -> io::Result<()> {
        w.write_all(&(f.len() as u32).to_le_bytes())?;
        w.write_all(f)
    }

    /// Append frames after everything spooled.
    pub fn append<'a>(&mut self, frames: impl IntoIterator<Item = &'a [u8]>) -> io::Result<()> {
        for f in frames {
            let need_new = match self.chunks.back() {
                None => true,
                Some(c) => c.bytes >= self.chunk_size || self.tail.is_none(),
            };
            if need_new {
                self.flush()?;
                let num = self.chunks.back().map_or(START, |c| c.num + 1);
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(chunk_path(&self.dir, num))?;
                self.tail = Some(BufWriter::with_capacity(64 << 10, file));
                self.chunks.push_back(Chunk {
                    num,
                    bytes: 0,
                    frames: 0,
                });
            }
            let w = self.tail.as_mut().expect("tail open");
            Self::write_frame(w, f)?;
            let c = self.chunks.back_mut().expect("tail chunk");
            let n = 4 + f.len() as u64;
            c.bytes += n;
            c.frames += 1;
            self.bytes += n;
            self.frames += 1;
            self.spooled += 1;
            if self.bytes > self.limit {
                self.enforce()?;
            }
        }
        Ok(())
    }

    /// Put frames before everything spooled (they go out first), keeping their order.
    pub fn prepend<'a>(&mut self, frames: impl IntoIterator<Item = &'a [u8]>) -> io::Result<()> {
        let num = self.chunks.front().map_or(START, |c| c.num - 1);
        let mut w = BufWriter::new(File::create(chunk_path(&self.dir, num))?);
        let (mut bytes, mut count) = (0u64, 0u64);
        for f in frames {
            Self::write_frame(&mut w, f)?;
            bytes += 4 + f.len() as u64;
            count += 1;
        }
        w.flush()?;
        if count == 0 {
            drop(w);
            std::fs::remove_file(chunk_path(&self.dir, num))?;
            return Ok(());
        }
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

    /// Take the oldest chunk's frames out of the spool (the caller sends them).
    pub fn pop_chunk(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let Some((num, bytes)) = self.chunks.front().map(|c| (c.num, c.bytes)) else {
            return Ok(Vec::new());
        };
        if self.chunks.len() == 1 {
            self.flush()?;
            self.tail = None;
        }
        let p = chunk_path(&self.dir, num);
        let mut data = Vec::with_capacity(bytes as usize);
        File::open(&p)?.read_to_end(&mut data)?;
        std::fs::remove_file(&p)?;
        let c = self.chunks.pop_front().expect("front");
        self.bytes -= c.bytes;
        self.frames -= c.frames;
        Ok(frames_of(&data))
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(w) = self.tail.as_mut() {
            w.flush()?;
        }
        Ok(())
    }

    /// Drop the oldest chunks while over the limit (never the only, newest chunk... unless
    /// even that one is over the limit on its own).
    fn enforce(&mut self) -> io::Result<()> {
        while self.bytes > self.limit && !self.chunks.is_empty() {
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
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(i: u32) -> Vec<u8> {
        format!("event {i:06} {}", "x".repeat(40)).into_bytes()
    }

    fn drain(s: &mut Spool) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        while !s.is_empty() {
            v.extend(s.pop_chunk().unwrap());
        }
        v
    }

    #[test]
    fn order_is_kept_across_chunks_and_prepends() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path(), 1 << 20).unwrap();
        let a: Vec<Vec<u8>> = (100..400).map(f).collect();
        s.append(a.iter().map(|x| x.as_slice())).unwrap();
        assert_eq!(s.len(), 300);
        let first = s.pop_chunk().unwrap();
        assert_eq!(first[0], f(100));
        // the popped chunk could not be delivered: back in front, then a newer prepend
        s.prepend(first.iter().map(|x| x.as_slice())).unwrap();
        let early: Vec<Vec<u8>> = (0..100).map(f).collect();
        s.prepend(early.iter().map(|x| x.as_slice())).unwrap();
        s.append([f(400).as_slice()]).unwrap();
        let all = drain(&mut s);
        assert_eq!(all, (0..401).map(f).collect::<Vec<_>>());
        assert_eq!(s.dropped, 0);
        assert_eq!(s.bytes(), 0);
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
        // a torn frame at the end of the newest chunk is ignored
        let newest = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .max()
            .unwrap();
        let mut fh = OpenOptions::new().append(true).open(&newest).unwrap();
        fh.write_all(&[200, 0, 0, 0, b'x']).unwrap();
        drop(fh);
        let mut s = Spool::open(d.path(), 1 << 20).unwrap();
        assert_eq!(s.len(), 50);
        s.append([f(50).as_slice()]).unwrap();
        assert_eq!(drain(&mut s), (0..51).map(f).collect::<Vec<_>>());
    }
}
