//! Instance log files: where they live, size rotation, reading the tail, following.
//!
//! Instances write straight into their log file (opened `O_APPEND` by the process
//! thread), never into a pipe held by corrald, so they keep logging if corrald dies.
//! Rotation is therefore copy-then-truncate: the writer's fd stays valid and, thanks to
//! `O_APPEND`, continues at the new end of file. Lines written between the copy and the
//! truncate are lost; that window is a few milliseconds per rotation. The live file is
//! checked every second and when its instance exits, so a fast writer can take it past
//! `log_max_size` by what it writes in a second; rotated files never exceed it.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The log file of one instance.
pub fn log_path(log_dir: &Path, unit: &str, instance: u32) -> PathBuf {
    log_dir.join(format!("{unit}.{instance}.log"))
}

/// One log file and its rotation policy.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The live file.
    pub path: PathBuf,
    /// Rotate once it is larger than this many bytes.
    pub max_size: u64,
    /// How many rotated files (`.1` newest … `.N` oldest) to keep.
    pub keep: u32,
}

/// Rotates every file in `files` that has outgrown its limit. Errors are logged, not fatal.
pub fn rotate_all(files: &[Rotation]) {
    for r in files {
        match fs::metadata(&r.path) {
            Ok(meta) if meta.len() > r.max_size => {
                if let Err(e) = rotate(r) {
                    tracing::warn!("cannot rotate {}: {e}", r.path.display());
                }
            }
            _ => {}
        }
    }
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// How far past a piece's cut rotation looks for the end of a line, so that rotated
/// files start at a line's beginning (a longer line is cut where the size falls).
const LINE_SEARCH: u64 = 4096;

/// Rotates one file that has outgrown `max_size`.
///
/// A fast writer may have written several times `max_size` since the last check, so the
/// file is cut into pieces of at most `max_size` bytes from its end (each starting at a
/// line's beginning where one is near), the newest becoming `.1`; pieces beyond `keep`
/// are dropped. Every rotated file therefore holds at most `max_size` bytes, and the
/// newest `max_size × keep` bytes are kept. The pieces are copied by the kernel
/// (`copy_file_range`), never read into corrald's memory.
fn rotate(r: &Rotation) -> io::Result<()> {
    let mut live = File::open(&r.path)?;
    let len = live.metadata()?.len();
    if r.keep > 0 && r.max_size > 0 {
        let mut pieces = Vec::new(); // (start, end), newest first
        let mut end = len;
        while end > 0 && pieces.len() < r.keep as usize {
            let mut start = end.saturating_sub(r.max_size);
            if start > 0 {
                start = after_line_end(&mut live, start, end)?;
            }
            pieces.push((start, end));
            end = start;
        }
        let shift = pieces.len() as u32;
        for n in (1..=r.keep).rev() {
            let from = numbered(&r.path, n);
            if !from.exists() {
                continue;
            }
            if n + shift > r.keep {
                fs::remove_file(&from)?;
            } else {
                fs::rename(&from, numbered(&r.path, n + shift))?;
            }
        }
        for (i, (start, end)) in pieces.into_iter().enumerate() {
            let mut out = File::create(numbered(&r.path, i as u32 + 1))?;
            live.seek(SeekFrom::Start(start))?;
            io::copy(&mut (&live).take(end - start), &mut out)?;
        }
    }
    fs::OpenOptions::new().write(true).open(&r.path)?.set_len(0)
}

/// The offset just past the first newline in `[start - 1, end - 1)`, looking at most
/// [`LINE_SEARCH`] bytes (so the piece `[offset, end)` is never empty); `start` itself
/// when none is there.
fn after_line_end(file: &mut File, start: u64, end: u64) -> io::Result<u64> {
    let from = start - 1;
    let mut buf = vec![0; LINE_SEARCH.min(end - start) as usize];
    file.seek(SeekFrom::Start(from))?;
    let n = file.read(&mut buf)?;
    Ok(buf[..n]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(start, |i| from + i as u64 + 1))
}

/// The last `n` lines of a file (fewer if it is shorter; none if it does not exist).
pub fn tail_lines(path: &Path, n: usize) -> io::Result<Vec<String>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let len = file.metadata()?.len();
    // Read backwards in chunks until n+1 newlines are seen (the last byte may be one).
    const CHUNK: u64 = 16 * 1024;
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    while start > 0 && buf.iter().filter(|&&b| b == b'\n').count() <= n {
        let step = CHUNK.min(start);
        start -= step;
        file.seek(SeekFrom::Start(start))?;
        let mut chunk = vec![0; step as usize];
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    Ok(lines[skip..].iter().map(|s| s.to_string()).collect())
}

/// A piece of a log file read by [`read_chunk`].
#[derive(Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Where the piece starts in the file.
    pub start: u64,
    /// Where the next read should start (after the last complete line returned).
    pub next: u64,
    /// The file's length when read.
    pub size: u64,
    /// The complete lines read (a line longer than the whole read is cut).
    pub lines: Vec<String>,
    /// The asked offset was past the file's end (it was rotated): reading began again.
    pub reset: bool,
}

/// Reads at most `max` bytes of complete lines: from `offset`, or, without one (or when
/// the file is now shorter than `offset`, as after a rotation), from the last `max`
/// bytes' first line start. Memory used is bounded by `max` whatever the file's size; a
/// missing file reads as empty.
pub fn read_chunk(path: &Path, offset: Option<u64>, max: usize) -> io::Result<Chunk> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Chunk {
                start: 0,
                next: 0,
                size: 0,
                lines: Vec::new(),
                reset: offset.is_some_and(|o| o > 0),
            });
        }
        Err(e) => return Err(e),
    };
    let size = file.metadata()?.len();
    let max = max.max(1) as u64;
    let reset = offset.is_some_and(|o| o > size);
    let (mut start, from_tail) = match offset {
        Some(o) if o <= size => (o, false),
        _ => (size.saturating_sub(max), size > max),
    };
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    file.take(max).read_to_end(&mut buf)?;
    if from_tail {
        // Begin at a line's start, unless the piece is one line too long to show whole.
        if let Some(nl) = buf.iter().position(|&b| b == b'\n')
            && nl + 1 < buf.len()
        {
            buf.drain(..=nl);
            start += nl as u64 + 1;
        }
    }
    let end = match buf.iter().rposition(|&b| b == b'\n') {
        Some(nl) => nl + 1,
        // No line end in a full read: a line longer than `max`, handed out in pieces.
        None if buf.len() as u64 == max => buf.len(),
        None => 0,
    };
    buf.truncate(end);
    let lines = String::from_utf8_lossy(&buf)
        .lines()
        .map(str::to_owned)
        .collect();
    Ok(Chunk {
        start,
        next: start + end as u64,
        size,
        lines,
        reset,
    })
}

/// Follows a growing file, handing out complete lines. Notices truncation (rotation)
/// and starts again from the beginning of the file.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// Starts at the current end of the file.
    pub fn from_end(path: PathBuf) -> Follower {
        let offset = fs::metadata(&path).map_or(0, |m| m.len());
        Follower {
            path,
            offset,
            partial: Vec::new(),
        }
    }

    /// Starts at the beginning of the file.
    pub fn from_start(path: PathBuf) -> Follower {
        Follower {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// New complete lines since the last call. With `flush`, a trailing line without a
    /// newline is returned too (used once the writer is known to be gone).
    pub fn poll(&mut self, flush: bool) -> io::Result<Vec<String>> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len < self.offset {
            self.offset = 0; // truncated by rotation
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut fresh = Vec::new();
        file.take(8 << 20).read_to_end(&mut fresh)?;
        self.offset += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        let mut lines = Vec::new();
        while let Some(pos) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
        }
        if flush && !self.partial.is_empty() {
            lines.push(String::from_utf8_lossy(&self.partial).into_owned());
            self.partial.clear();
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn tail_returns_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let text: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        fs::write(&path, text).unwrap();
        let last = tail_lines(&path, 3).unwrap();
        assert_eq!(last, vec!["line 49997", "line 49998", "line 49999"]);
        assert_eq!(tail_lines(&path, 60_000).unwrap().len(), 50_000);
        assert!(tail_lines(&dir.path().join("none"), 3).unwrap().is_empty());
    }

    #[test]
    fn chunks_are_bounded_whole_lines_from_an_offset_or_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let text: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
        fs::write(&path, &text).unwrap();
        let size = text.len() as u64;
        // From the end: at most 100 bytes, starting at a line's start.
        let c = read_chunk(&path, None, 100).unwrap();
        assert!(c.lines.len() > 5, "{c:?}");
        assert_eq!(c.lines.last().unwrap(), "line 9999");
        assert!(c.lines[0].starts_with("line "), "{c:?}");
        assert_eq!((c.next, c.size, c.reset), (size, size, false));
        assert!(size - c.start <= 100);
        // From an offset: only whole lines, and the next read goes on where it stopped.
        let c = read_chunk(&path, Some(0), 20).unwrap();
        assert_eq!(c.lines, vec!["line 0", "line 1"]);
        let c = read_chunk(&path, Some(c.next), 20).unwrap();
        assert_eq!(c.lines, vec!["line 2", "line 3"]);
        // Nothing new at the end; a half-written line waits for its end.
        let c = read_chunk(&path, Some(size), 20).unwrap();
        assert!(c.lines.is_empty() && c.next == size);
        let mut w = fs::OpenOptions::new().append(true).open(&path).unwrap();
        write!(w, "half").unwrap();
        assert!(read_chunk(&path, Some(size), 20).unwrap().lines.is_empty());
        // Rotated (shorter than the offset): begins again from the end.
        fs::write(&path, "new\n").unwrap();
        let c = read_chunk(&path, Some(size), 20).unwrap();
        assert_eq!(
            (c.lines, c.reset, c.next),
            (vec!["new".to_owned()], true, 4)
        );
        // A line longer than a read comes in pieces; a missing file is empty.
        fs::write(&path, "x".repeat(50)).unwrap();
        assert_eq!(read_chunk(&path, Some(0), 20).unwrap().next, 20);
        assert!(
            read_chunk(&dir.path().join("none"), None, 20)
                .unwrap()
                .lines
                .is_empty()
        );
    }

    #[test]
    fn follower_sees_new_lines_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        fs::write(&path, "old\n").unwrap();
        let mut f = Follower::from_end(path.clone());
        let mut w = fs::OpenOptions::new().append(true).open(&path).unwrap();
        write!(w, "one\ntw").unwrap();
        assert_eq!(f.poll(false).unwrap(), vec!["one"]);
        writeln!(w, "o").unwrap();
        assert_eq!(f.poll(false).unwrap(), vec!["two"]);
        w.set_len(0).unwrap();
        writeln!(w, "after").unwrap();
        assert_eq!(f.poll(false).unwrap(), vec!["after"]);
        write!(w, "tail").unwrap();
        assert_eq!(f.poll(true).unwrap(), vec!["tail"]);
    }

    #[test]
    fn rotation_shifts_older_files_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let r = Rotation {
            path: path.clone(),
            max_size: 9,
            keep: 3,
        };
        // 13 bytes over a limit of 9: two pieces, "round N\n" and "aaaa\n".
        for round in 0..2 {
            fs::write(&path, format!("aaaa\nround {round}\n")).unwrap();
            rotate_all(std::slice::from_ref(&r));
        }
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
        let read = |n| fs::read_to_string(numbered(&path, n)).unwrap();
        assert_eq!(read(1), "round 1\n");
        assert_eq!(read(2), "aaaa\n");
        assert_eq!(read(3), "round 0\n");
        assert!(!numbered(&path, 4).exists());
    }

    #[test]
    fn a_file_far_over_its_limit_is_cut_into_pieces_at_line_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let r = Rotation {
            path: path.clone(),
            max_size: 40,
            keep: 2,
        };
        fs::write(numbered(&path, 1), "old\n").unwrap();
        // 20 lines of 10 bytes: 200 bytes, five times the limit.
        let text: String = (0..20).map(|i| format!("line {i:04}\n")).collect();
        fs::write(&path, &text).unwrap();
        rotate_all(std::slice::from_ref(&r));
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
        let newest = fs::read_to_string(numbered(&path, 1)).unwrap();
        let older = fs::read_to_string(numbered(&path, 2)).unwrap();
        assert_eq!(newest, "line 0016\nline 0017\nline 0018\nline 0019\n");
        assert_eq!(older, "line 0012\nline 0013\nline 0014\nline 0015\n");
        assert!(!numbered(&path, 3).exists(), "the old .1 is past keep");
        // Unaligned: pieces start after a newline, and never exceed the limit.
        let text: String = (0..30).map(|i| format!("l{i}\n")).collect();
        fs::write(&path, &text).unwrap();
        rotate_all(std::slice::from_ref(&r));
        for n in [1, 2] {
            let piece = fs::read_to_string(numbered(&path, n)).unwrap();
            assert!(piece.len() <= 40, "{piece:?}");
            assert!(piece.starts_with('l') && piece.ends_with('\n'), "{piece:?}");
            assert!(text.contains(&piece));
        }
        let newest = fs::read_to_string(numbered(&path, 1)).unwrap();
        let older = fs::read_to_string(numbered(&path, 2)).unwrap();
        assert!(text.ends_with(&format!("{older}{newest}")));
    }
}
