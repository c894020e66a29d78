//! The durable log spool: turns each piece of output into one NDJSON event
//! and appends it to a local file, which is the uploader's source of truth.
//!
//! Every byte of the log is escaped here, on the spool's own thread
//! (`writer`), so `append` only formats into a reused buffer, never touches
//! the network, and writes to the file only when the caller has not flushed
//! for a megabyte; `flush` writes the buffer in one go after each batch.

use super::bytes::push_json_str;
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
    /// What a step wrote to `SOLSTICE_STEP_SUMMARY`.
    Summary,
    /// `::group::TITLE` and `::endgroup::`: a section of the log.
    Group,
    EndGroup,
    /// `::debug::MESSAGE`, shown with `SOLSTICE_STEP_DEBUG`.
    Debug,
    /// `::error::`, `::warning::` and `::notice::` annotations.
    Error,
    Warning,
    Notice,
}

/// Every stream, by its index.
const STREAMS: [Stream; 10] = [
    Stream::Stdout,
    Stream::Stderr,
    Stream::Runner,
    Stream::Summary,
    Stream::Group,
    Stream::EndGroup,
    Stream::Debug,
    Stream::Error,
    Stream::Warning,
    Stream::Notice,
];

impl Stream {
    /// A small number for the stream, for the log tail's records.
    pub fn index(self) -> u8 {
        self as u8
    }

    pub fn from_index(i: u8) -> Stream {
        STREAMS
            .get(usize::from(i))
            .copied()
            .unwrap_or(Stream::Runner)
    }

    /// The stream's name in the log's events (docs/protocol.md).
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Runner => "runner",
            Stream::Summary => "summary",
            Stream::Group => "group",
            Stream::EndGroup => "endgroup",
            Stream::Debug => "debug",
            Stream::Error => "error",
            Stream::Warning => "warning",
            Stream::Notice => "notice",
        }
    }
}

/// `append` writes the buffer out itself past this size, so a caller that
/// forgets to flush cannot make the buffer grow without bound.
const AUTO_FLUSH: usize = 1 << 20;
/// While the file cannot be written (disk full), events are held up to this
/// much and dropped beyond it: the job must go on with bounded memory.
const MAX_PENDING: usize = 16 << 20;

pub struct Spool {
    file: File,
    buf: Vec<u8>,
    written: u64,
    seq: u64,
    /// The time of the events since the last write, read at the first.
    ts: Option<[u8; 24]>,
    /// Events not recorded because the file could not be written.
    dropped: u64,
}

impl Spool {
    /// Creates (or truncates) the spool file.
    pub fn create(path: &Path) -> io::Result<Spool> {
        Ok(Spool {
            file: File::create(path)?,
            buf: Vec::with_capacity(64 * 1024),
            written: 0,
            seq: 0,
            ts: None,
            dropped: 0,
        })
    }

    /// Buffers one event with `text` as it is (see docs/protocol.md, "Log
    /// events", for what the pipeline puts in one). Invalid UTF-8 in `text`
    /// becomes U+FFFD.
    ///
    /// The events appended between two flushes share one timestamp, read at
    /// the first of them. The pipeline gives each read's time to `append_at`
    /// instead; this is for the spool's own notes.
    pub fn append(&mut self, stream: Stream, step: Option<&str>, text: &[u8]) {
        let ts = self.timestamp();
        self.append_at(stream, step, text, &ts);
    }

    /// The time the events of this batch carry (see `append`).
    fn timestamp(&mut self) -> [u8; 24] {
        *self
            .ts
            .get_or_insert_with(|| format_millis(millis(SystemTime::now())))
    }

    /// `append` with the event's time given: when the read that brought the
    /// text returned (output kept aside in the log's tail keeps it too).
    pub fn append_at(&mut self, stream: Stream, step: Option<&str>, text: &[u8], ts: &[u8; 24]) {
        if self.buf.len() >= AUTO_FLUSH {
            // An error here is reported by the caller's next flush, which retries.
            let _ = self.write_out();
            if self.buf.len() >= MAX_PENDING {
                self.dropped += 1;
                return;
            }
        }
        let mut digits = [0u8; 20];
        let mut k = digits.len();
        let mut v = self.seq;
        loop {
            k -= 1;
            digits[k] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let b = &mut self.buf;
        for part in [
            &b"{\"seq\":"[..],
            &digits[k..],
            b",\"ts\":\"",
            ts,
            b"\",\"stream\":\"",
            stream.as_str().as_bytes(),
            b"\",\"step\":",
        ] {
            b.extend_from_slice(part);
        }
        match step {
            Some(s) => push_json_str(b, s.as_bytes()),
            None => b.extend_from_slice(b"null"),
        }
        b.extend_from_slice(b",\"text\":");
        push_json_str(b, text);
        b.extend_from_slice(b"}\n");
        self.seq += 1;
    }

    /// Writes the buffered events to the file. On an error the unwritten rest
    /// stays buffered and the next flush continues where this one stopped, so
    /// the file never holds a torn event followed by another one.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        if self.dropped > 0 {
            let msg = format!(
                "{} log events were lost: the spool file could not be written\n",
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

    /// Bytes of events buffered, not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The seq the next event gets.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn write_out(&mut self) -> io::Result<()> {
        let mut done = 0;
        let res = loop {
            let rest = &self.buf[done..];
            if rest.is_empty() {
                break Ok(());
            }
            match self.file.write(rest) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.written += done as u64;
        self.buf.drain(..done);
        // Events of the next batch read the clock anew.
        self.ts = None;
        res
    }
}

/// Milliseconds since the Unix epoch, rounded down (also before the epoch).
pub(crate) fn millis(t: SystemTime) -> i64 {
    // Seconds are capped far beyond what `format_millis` clamps to anyway.
    let ms = |d: std::time::Duration, up: u32| {
        d.as_secs().min(1 << 40) as i64 * 1000 + i64::from((d.subsec_nanos() + up) / 1_000_000)
    };
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => ms(d, 0),
        Err(e) => -ms(e.duration(), 999_999),
    }
}

/// `t` as RFC 3339 in UTC with milliseconds: `2026-11-27T16:29:17.123Z`.
/// Times outside years 0000..=9999, which RFC 3339 cannot write, are clamped.
pub fn rfc3339_millis(t: SystemTime) -> String {
    String::from_utf8_lossy(&format_millis(millis(t))).into_owned()
}

pub(crate) fn format_millis(ms: i64) -> [u8; 24] {
    // 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z.
    const MIN: i64 = -62_167_219_200_000;
    const MAX: i64 = 253_402_300_799_999;
    // From 0000-01-01 on, so that all arithmetic is unsigned.
    let ms = (ms.clamp(MIN, MAX) - MIN) as u64;
    let in_day = ms % 86_400_000;
    // Howard Hinnant's `civil_from_days`: counting years from March puts
    // the leap day last, so each 400-year era (146,097 days) is regular.
    // Day 0 is 0000-03-01 minus one era (-0400-03-01), to stay unsigned.
    let z = ms / 86_400_000 + 146_097 - 60;
    let era = z / 146_097;
    let doe = z % 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // March = 0
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2) - 400;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let secs = in_day / 1000;
    // All fields as one decimal number, YYYYMMDDhhmmssmmm (17 digits fit a
    // u64), written right to left over the template's zeros.
    let hms = (secs / 3600 * 100 + secs / 60 % 60) * 100 + secs % 60;
    let mut v = (((y * 100 + m) * 100 + d) * 1_000_000 + hms) * 1000 + in_day % 1000;
    let mut out = *b"0000-00-00T00:00:00.000Z";
    for c in out.iter_mut().rev() {
        if *c == b'0' {
            *c += (v % 10) as u8;
            v /= 10;
        }
    }
    out
}
