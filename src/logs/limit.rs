//! The bounded log (`SOLSTICE_LOG_LIMIT`): of the job's output, the spool
//! keeps the first half of the limit as it comes; past that, the output goes
//! to a tail kept on disk beside the spool in two alternating segment files,
//! so disk and memory stay bounded however much the job prints. When the job
//! ends, one `runner` event says how many bytes were left out, and the last
//! half of the limit follows with each piece's stream, step and time. The
//! console always shows everything; the text is masked before it gets here.

use super::mask::char_start;
use super::spool::{Spool, Stream};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, IoSlice, Read, Write};
use std::path::{Path, PathBuf};

pub struct Limit {
    /// Half the limit: what the head keeps, and the tail.
    half: u64,
    /// The spool's path, which the tail's segments are named after.
    spool: PathBuf,
    /// Job output bytes the spool took so far (at most `half`).
    head: u64,
    tail: Option<Tail>,
}

/// The tail: records appended to the current segment; when it holds `half`
/// bytes of text it becomes the previous one and the other starts again, so
/// the two always hold at least the last `half` bytes. A segment starts again
/// by being written over from its start, not truncated: freeing its pages
/// and taking new ones for the same bytes was a fifth of the spool thread's
/// time on tmpfs.
struct Tail {
    paths: [PathBuf; 2],
    /// The segment written now: 0 or 1.
    current: usize,
    file: File,
    /// Text bytes in each segment.
    held: [u64; 2],
    /// Bytes of whole records in each segment: what a reader takes from it
    /// (older records may lie beyond).
    lens: [u64; 2],
    /// Text bytes that went to the tail in all.
    total: u64,
    /// A write failed: the tail is incomplete, and the marker says so.
    failed: bool,
    /// The head of the record being written.
    head: Vec<u8>,
}

impl Limit {
    /// `limit` bytes of job output in all (`None`: no limit); the tail's
    /// segments are named after `spool`.
    pub fn new(limit: Option<u64>, spool: &Path) -> Option<Limit> {
        Some(Limit {
            half: (limit? / 2).max(1),
            spool: spool.to_path_buf(),
            head: 0,
            tail: None,
        })
    }

    /// How much of `text`, the next output of a job stream, the spool takes
    /// now; the caller passes the rest to `keep_tail`.
    pub fn head_share(&mut self, text: &[u8]) -> usize {
        let room = self.half.saturating_sub(self.head);
        if room >= text.len() as u64 {
            self.head += text.len() as u64;
            return text.len();
        }
        // Cut between characters, so the head's last event and the tail's
        // first are both valid text.
        let n = char_start(text, room as usize);
        self.head = self.half;
        n
    }

    /// Stores what the head had no room for.
    pub fn keep_tail(&mut self, stream: Stream, step: Option<&str>, text: &[u8], ts: &[u8; 24]) {
        if text.is_empty() {
            return;
        }
        let half = self.half;
        let tail = match &mut self.tail {
            Some(t) => t,
            slot => match Tail::create(&self.spool) {
                Ok(t) => slot.insert(t),
                Err(e) => {
                    warn!("cannot keep the tail of the log beside the spool: {e}; only its first part is kept");
                    return;
                }
            },
        };
        tail.total += text.len() as u64;
        if tail.failed {
            return;
        }
        if let Err(e) = tail.write(stream, step, text, ts, half) {
            tail.failed = true;
            warn!("writing the tail of the log failed: {e}; its last part will be incomplete");
        }
    }

    /// Appends the marker and the tail to `spool`, and removes the segments.
    pub fn finish(&mut self, spool: &mut Spool) {
        let Some(tail) = self.tail.take() else {
            return;
        };
        let held = tail.held[0] + tail.held[1];
        let kept = held.min(self.half);
        let omitted = tail.total - kept;
        let note = if tail.failed {
            " (the tail could not be fully kept)"
        } else {
            ""
        };
        let marker = format!("[... {omitted} bytes of output omitted ...]{note}\n");
        spool.append(Stream::Runner, None, marker.as_bytes());
        let mut skip = held - kept;
        for i in [1 - tail.current, tail.current] {
            if let Err(e) = replay(&tail.paths[i], tail.lens[i], &mut skip, spool) {
                warn!("reading the tail of the log failed: {e}");
            }
        }
        for p in &tail.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Tail {
    fn create(spool: &Path) -> io::Result<Tail> {
        let name = |i: usize| {
            let mut p = spool.as_os_str().to_os_string();
            p.push(format!(".tail{i}"));
            PathBuf::from(p)
        };
        let paths = [name(0), name(1)];
        let _ = std::fs::remove_file(&paths[1]);
        Ok(Tail {
            file: segment(&paths[0], true)?,
            paths,
            current: 0,
            held: [0, 0],
            lens: [0, 0],
            total: 0,
            failed: false,
            head: Vec::new(),
        })
    }

    /// One record: stream, step, time and text, lengths as 4-byte LE. The
    /// head and the text go out in one `writev`, without copying the text
    /// (an allocation per record was a system call pair on musl).
    fn write(
        &mut self,
        stream: Stream,
        step: Option<&str>,
        text: &[u8],
        ts: &[u8; 24],
        half: u64,
    ) -> io::Result<()> {
        if self.held[self.current] >= half {
            // The other segment's text is older than the last `half` bytes now.
            self.current = 1 - self.current;
            self.file = segment(&self.paths[self.current], false)?;
            self.held[self.current] = 0;
            self.lens[self.current] = 0;
        }
        let step = step.unwrap_or_default().as_bytes();
        let head = &mut self.head;
        head.clear();
        head.push(stream.index());
        head.extend_from_slice(ts);
        head.extend_from_slice(&(step.len() as u32).to_le_bytes());
        head.extend_from_slice(step);
        head.extend_from_slice(&(text.len() as u32).to_le_bytes());
        let (mut a, mut b) = (&head[..], text);
        while !a.is_empty() || !b.is_empty() {
            let n = match self
                .file
                .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
            {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let k = n.min(a.len());
            a = &a[k..];
            b = &b[n - k..];
        }
        self.held[self.current] += text.len() as u64;
        self.lens[self.current] += (self.head.len() + text.len()) as u64;
        Ok(())
    }
}

/// A segment file, to be written from its start (emptied with `truncate`).
fn segment(path: &Path, truncate: bool) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)
}

/// Appends the records in the first `len` bytes of one segment to `spool`,
/// leaving out the first `skip` bytes of text (counted down as they are
/// skipped).
fn replay(path: &Path, len: u64, skip: &mut u64, spool: &mut Spool) -> io::Result<()> {
    let file = match File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        f => f?,
    };
    let mut r = BufReader::new(file.take(len));
    let mut head = [0u8; 1 + 24 + 4];
    let (mut step, mut text) = (Vec::new(), Vec::new());
    loop {
        match r.read_exact(&mut head) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            other => other?,
        }
        let stream = Stream::from_index(head[0]);
        let mut ts = [0u8; 24];
        ts.copy_from_slice(&head[1..25]);
        let len = u32::from_le_bytes([head[25], head[26], head[27], head[28]]);
        read_field(&mut r, len, &mut step)?;
        let mut len = [0u8; 4];
        r.read_exact(&mut len)?;
        read_field(&mut r, u32::from_le_bytes(len), &mut text)?;
        let from = if *skip >= text.len() as u64 {
            *skip -= text.len() as u64;
            continue;
        } else {
            let s = *skip as usize;
            *skip = 0;
            // Start at the next character, never inside one.
            let c = char_start(&text, s);
            if c < s {
                (s..text.len())
                    .find(|&i| char_start(&text, i) == i)
                    .unwrap_or(text.len())
            } else {
                c
            }
        };
        let step = String::from_utf8_lossy(&step);
        let step = (!step.is_empty()).then_some(&*step);
        if let Some(t) = text.get(from..).filter(|t| !t.is_empty()) {
            super::append_events(spool, stream, step, t, &ts);
        }
    }
}

/// Reads `len` bytes into `v`, reusing its memory.
fn read_field(r: &mut impl Read, len: u32, v: &mut Vec<u8>) -> io::Result<()> {
    v.clear();
    r.take(u64::from(len)).read_to_end(v)?;
    if v.len() != len as usize {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}
