//! The durable log spool: turns each piece of job output into one NDJSON event
//! and appends it to a local file, which is the uploader's source of truth.
//!
//! This is the job's hot path (it runs once per output line), so `append` only
//! formats into a reused buffer, never touches the network, and writes to the
//! file only when the caller has not flushed for a megabyte; `flush` writes
//! the buffer in one go after each pipe read.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a log event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// A message of the runner itself (step started, step failed, ...).
    Runner,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Runner => "runner",
        }
    }
}

/// `append` writes the buffer out itself past this size, so a caller that
/// forgets to flush cannot make the buffer grow without bound.
const AUTO_FLUSH: usize = 1 << 20;
/// A batch shares one clock reading (see `append`), renewed after this many
/// events even without a flush.
const CLOCK_EVERY: u32 = 1024;
/// While the file cannot be written (disk full), events are held up to this
/// much and dropped beyond it: the job must go on with bounded memory.
const MAX_PENDING: usize = 16 << 20;

pub struct Spool {
    file: File,
    buf: Vec<u8>,
    written: u64,
    seq: u64,
    /// `{"seq":N` for the next event, kept by incrementing the digits in
    /// place: at opt-level "z" a division by ten is a real `div`, and
    /// formatting seq would take several per event.
    head: Vec<u8>,
    /// The clock reading for the current batch; `None` after a flush.
    clock_ms: Option<i64>,
    since_clock: u32,
    /// Events not recorded because the file could not be written.
    dropped: u64,
    /// `,"ts":"…","stream":"…","step":…,"text":"` for the current
    /// millisecond, stream and step: everything between the seq and the
    /// text of an event, up to the text's opening quote.
    mid: Vec<u8>,
    mid_ms: i64,
    mid_stream: Stream,
    mid_valid: bool,
    esc: Escapes,
    /// The step the cached JSON of `step_json` belongs to.
    step_some: bool,
    step_raw: Vec<u8>,
    step_json: Vec<u8>,
}

impl Spool {
    /// Creates (or truncates) the spool file.
    pub fn create(path: &Path) -> io::Result<Spool> {
        let file = File::create(path)?;
        Ok(Spool {
            file,
            buf: Vec::with_capacity(64 * 1024),
            written: 0,
            seq: 0,
            head: b"{\"seq\":0".to_vec(),
            clock_ms: None,
            since_clock: 0,
            dropped: 0,
            mid: Vec::with_capacity(96),
            mid_ms: 0,
            mid_stream: Stream::Runner,
            mid_valid: false,
            step_some: false,
            step_raw: Vec::new(),
            step_json: b"null".to_vec(),
            esc: Escapes::from_miniserde(),
        })
    }

    /// Buffers one event. Invalid UTF-8 in `text` becomes U+FFFD.
    ///
    /// The events appended between two flushes share one timestamp, read at
    /// the first of them: the caller flushes after each pipe read, so that is
    /// when the read returned, which is when those lines arrived. (Reading
    /// the clock costs 40-90 ns in a VM, as much as formatting the event.)
    pub fn append(&mut self, stream: Stream, step: Option<&str>, text: &[u8]) {
        if self.buf.len() >= AUTO_FLUSH {
            // An error here is reported by the caller's next flush, which retries.
            let _ = self.write_out();
            if self.buf.len() >= MAX_PENDING {
                self.dropped += 1;
                return;
            }
        }
        let ms = match self.clock_ms {
            Some(ms) if self.since_clock < CLOCK_EVERY => {
                self.since_clock += 1;
                ms
            }
            _ => {
                let ms = millis(SystemTime::now());
                self.clock_ms = Some(ms);
                self.since_clock = 1;
                ms
            }
        };
        let step_changed = match step {
            None => self.step_some,
            Some(s) => !self.step_some || self.step_raw != s.as_bytes(),
        };
        if step_changed {
            self.set_step(step);
        }
        if step_changed || !self.mid_valid || ms != self.mid_ms || stream != self.mid_stream {
            self.rebuild_mid(ms, stream);
        }
        // Four copies per event: opt-level "z" does not inline Vec's methods.
        let b = &mut self.buf;
        b.reserve(self.head.len() + self.mid.len() + text.len() + 3);
        b.extend_from_slice(&self.head);
        if self.esc.own && is_plain_ascii(text) {
            b.extend_from_slice(&self.mid);
            b.extend_from_slice(text);
            b.extend_from_slice(b"\"}\n");
        } else {
            b.extend_from_slice(&self.mid[..self.mid.len() - 1]);
            self.esc.push_json_str(b, text);
            b.extend_from_slice(b"}\n");
        }
        self.seq += 1;
        self.bump_head();
    }

    fn bump_head(&mut self) {
        let digits_from = b"{\"seq\":".len();
        for i in (digits_from..self.head.len()).rev() {
            if self.head[i] == b'9' {
                self.head[i] = b'0';
            } else {
                self.head[i] += 1;
                return;
            }
        }
        self.head.insert(digits_from, b'1');
    }

    /// Writes the buffered events to the file. On an error the unwritten rest
    /// stays buffered and the next flush continues where this one stopped, so
    /// the file never holds a torn event followed by another one.
    pub fn flush(&mut self) -> io::Result<()> {
        self.clock_ms = None;
        self.write_out()?;
        if self.dropped > 0 {
            let msg = format!(
                "{} log events were lost: the spool file could not be written",
                self.dropped
            );
            self.dropped = 0;
            self.append(Stream::Runner, None, msg.as_bytes());
            self.write_out()?;
        }
        if self.buf.capacity() > 4 * AUTO_FLUSH {
            // One huge burst should not pin its buffer for the rest of the job.
            self.buf.shrink_to(AUTO_FLUSH);
        }
        Ok(())
    }

    /// Bytes written to the file so far (buffered events not included).
    pub fn len(&self) -> u64 {
        self.written
    }

    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// The seq the next event gets.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn write_out(&mut self) -> io::Result<()> {
        let mut done = 0;
        let res = loop {
            if done == self.buf.len() {
                break Ok(());
            }
            match self.file.write(&self.buf[done..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.written += done as u64;
        if done == self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.drain(..done);
        }
        res
    }

    fn set_step(&mut self, step: Option<&str>) {
        self.step_raw.clear();
        self.step_json.clear();
        match step {
            None => {
                self.step_some = false;
                self.step_json.extend_from_slice(b"null");
            }
            Some(s) => {
                self.step_some = true;
                self.step_raw.extend_from_slice(s.as_bytes());
                self.esc.push_json_str(&mut self.step_json, s.as_bytes());
            }
        }
    }

    fn rebuild_mid(&mut self, ms: i64, stream: Stream) {
        let mut ts = [0u8; 24];
        format_millis(ms, &mut ts);
        let m = &mut self.mid;
        m.clear();
        m.extend_from_slice(b",\"ts\":\"");
        m.extend_from_slice(&ts);
        m.extend_from_slice(b"\",\"stream\":\"");
        m.extend_from_slice(stream.as_str().as_bytes());
        m.extend_from_slice(b"\",\"step\":");
        m.extend_from_slice(&self.step_json);
        m.extend_from_slice(b",\"text\":\"");
        self.mid_ms = ms;
        self.mid_stream = stream;
        self.mid_valid = true;
    }
}

/// miniserde's JSON string escaping, one ASCII character at a time.
///
/// miniserde escapes byte by byte, without context, and passes non-ASCII
/// through, so its escape of a whole string is the concatenation of its
/// escapes of each character. Asking it once per ASCII character up front
/// lets an event be escaped in place, where `miniserde::json::to_string`
/// would allocate and grow a String per event (5-9 times the cost of a
/// plain line, and colored compiler output has escapes on most lines).
struct Escapes {
    /// `[len, bytes...]` of each ASCII character's escape; len 0: kept as is.
    table: [[u8; 8]; 128],
    /// The table has the shape `is_plain_ascii` assumes (exactly the
    /// control characters, `"` and `\` escaped); when a future miniserde
    /// disagrees, every string goes through `miniserde::json::to_string`.
    own: bool,
}

impl Escapes {
    fn from_miniserde() -> Escapes {
        let mut table = [[0u8; 8]; 128];
        let mut own = true;
        for c in 0..128u8 {
            let one = miniserde::json::to_string(&*(c as char).to_string());
            let inner = one
                .as_bytes()
                .get(1..one.len().saturating_sub(1))
                .unwrap_or(&[]);
            if inner == [c] {
                own &= !needs_escape(c);
            } else if (1..8).contains(&inner.len()) {
                table[usize::from(c)][0] = inner.len() as u8;
                table[usize::from(c)][1..=inner.len()].copy_from_slice(inner);
                own &= needs_escape(c);
            } else {
                own = false;
            }
        }
        Escapes { table, own }
    }

    /// Appends `text` as a JSON string; invalid UTF-8 becomes U+FFFD.
    fn push_json_str(&self, out: &mut Vec<u8>, text: &[u8]) {
        let s = match std::str::from_utf8(text) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(text),
        };
        if !self.own {
            out.extend_from_slice(miniserde::json::to_string(&*s).as_bytes());
            return;
        }
        let bytes = s.as_bytes();
        out.push(b'"');
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            if let Some(w) = bytes.get(i..i + 8) {
                if escapes_in(w) & HIGH == 0 {
                    i += 8;
                    continue;
                }
            }
            let b = bytes[i];
            if b < 0x80 && self.table[usize::from(b)][0] != 0 {
                let e = &self.table[usize::from(b)];
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(&e[1..=usize::from(e[0])]);
                start = i + 1;
            }
            i += 1;
        }
        out.extend_from_slice(&bytes[start..]);
        out.push(b'"');
    }
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of the result flags (at least) the first of the
/// eight bytes that is < 0x20, `"` or `\`, and it is zero when there is none:
/// the classic "has a byte less than n" and "has a zero byte" word tests. A
/// borrow can only flag a byte above one that really matched, so "any" is
/// exact. Bytes >= 0x80 are never flagged.
#[inline(always)]
fn escapes_in(w: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(w);
    let x = u64::from_le_bytes(a);
    let ctrl = x.wrapping_sub(ONES * 0x20) & !x;
    let q = x ^ (ONES * b'"' as u64);
    let quote = q.wrapping_sub(ONES) & !q;
    let b = x ^ (ONES * b'\\' as u64);
    let bslash = b.wrapping_sub(ONES) & !b;
    ctrl | quote | bslash
}

/// True when every byte is printable ASCII other than `"` and `\`. Eight bytes
/// at a time, since opt-level "z" does not vectorise a byte loop.
fn is_plain_ascii(text: &[u8]) -> bool {
    let mut chunks = text.chunks_exact(8);
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        let x = u64::from_le_bytes(a);
        let ctrl = x.wrapping_sub(ONES * 0x20) & !x;
        let q = x ^ (ONES * b'"' as u64);
        let quote = q.wrapping_sub(ONES) & !q;
        let b = x ^ (ONES * b'\\' as u64);
        let bslash = b.wrapping_sub(ONES) & !b;
        if (x | ctrl | quote | bslash) & HIGH != 0 {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&b| b < 0x80 && !needs_escape(b))
}

/// Milliseconds since the Unix epoch, rounded down (also before the epoch).
fn millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => {
            let ns = e.duration().as_nanos();
            let ms = ns.div_ceil(1_000_000);
            i64::try_from(ms).map(|m| -m).unwrap_or(i64::MIN)
        }
    }
}

/// `t` as RFC 3339 in UTC with milliseconds: `2026-11-27T16:29:17.123Z`.
/// Times outside years 0000..=9999, which RFC 3339 cannot write, are clamped.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let mut ts = [0u8; 24];
    format_millis(millis(t), &mut ts);
    ts.iter().map(|&b| b as char).collect()
}

fn format_millis(ms: i64, out: &mut [u8; 24]) {
    // 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z.
    const MIN: i64 = -62_167_219_200_000;
    const MAX: i64 = 253_402_300_799_999;
    let ms = ms.clamp(MIN, MAX);
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let secs = in_day / 1000;
    let fields: [(usize, i64, usize); 7] = [
        (0, y, 4),
        (5, m, 2),
        (8, d, 2),
        (11, secs / 3600, 2),
        (14, secs / 60 % 60, 2),
        (17, secs % 60, 2),
        (20, in_day % 1000, 3),
    ];
    *out = *b"0000-00-00T00:00:00.000Z";
    for (at, mut v, width) in fields {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
}

/// Proleptic Gregorian (year, month, day) of a day count from 1970-01-01,
/// after Howard Hinnant's `civil_from_days`: shifting the year to start in
/// March puts the leap day last, so each 400-year era is regular.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // March = 0
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
