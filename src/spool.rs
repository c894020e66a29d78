//! The durable log spool: turns each piece of output into one NDJSON event
//! and appends it to a local file, which is the uploader's source of truth.
//!
//! This is the job's hot path (every byte of the log is escaped here), so
//! `append` only formats into a reused buffer, never touches the network,
//! and writes to the file only when the caller has not flushed for a
//! megabyte; `flush` writes the buffer in one go after each pipe read.

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
    /// the first of them: the caller flushes after each pipe read, so that is
    /// when the read returned, which is when its lines arrived.
    pub fn append(&mut self, stream: Stream, step: Option<&str>, text: &[u8]) {
        if self.buf.len() >= AUTO_FLUSH {
            // An error here is reported by the caller's next flush, which retries.
            let _ = self.write_out();
            if self.buf.len() >= MAX_PENDING {
                self.dropped += 1;
                return;
            }
        }
        let ts = *self
            .ts
            .get_or_insert_with(|| format_millis(millis(SystemTime::now())));
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
            &ts,
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

/// Appends `text` as a JSON string, quotes included (see `push_escaped`).
pub(crate) fn push_json_str(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    push_escaped(out, text);
    out.push(b'"');
}

/// Appends `text` escaped as the inside of a JSON string (RFC 8259), byte for
/// byte as miniserde and serde_json write it: `"` and `\` with a backslash,
/// `\b \t \n \f \r`, other control characters as `\u00xx`, everything else,
/// non-ASCII included, as it is. Invalid UTF-8 becomes U+FFFD, as
/// `String::from_utf8_lossy` replaces it.
fn push_escaped(out: &mut Vec<u8>, text: &[u8]) {
    // Every byte of the log passes here. Escape-free text is copied a block
    // at a time straight into the spare capacity (opt-level "z" does not
    // vectorise a byte loop, and a memcpy call per run of plain text was
    // what made the musl build slow); the rest goes byte by byte.
    // One input byte becomes at most 6 (`\u00xx`); BLOCK more let a whole
    // block be stored before it is known where its first escape is.
    out.reserve(text.len().saturating_mul(6).saturating_add(BLOCK));
    let dst = out.spare_capacity_mut().as_mut_ptr().cast::<u8>();
    // Bytes written to `dst`: at most 6 per byte of `text` read so far.
    let mut o = 0;
    let mut i = 0;
    loop {
        while i + BLOCK <= text.len() {
            // SAFETY: BLOCK bytes of `text` from i; o <= 6 * i, so o + BLOCK
            // is within the reserve.
            let k = unsafe { copy_plain(text.as_ptr().add(i), dst.add(o)) };
            i += k;
            o += k;
            if k < BLOCK {
                if text.get(i) != Some(&b'\n') {
                    break;
                }
                // The escape at the end of every line, without leaving the loop.
                // SAFETY: i < text.len(), so o + 2 <= 6 * i + 2 is reserved.
                unsafe { dst.add(o).cast::<[u8; 2]>().write_unaligned(*b"\\n") };
                i += 1;
                o += 2;
            }
        }
        let Some(&b) = text.get(i) else { break };
        let mut esc = [b, 0, 0, 0, 0, 0, 0, 0];
        let mut n = 1;
        let mut used = 1;
        if b >= 0x80 {
            let (len, whole) = utf8_prefix(&text[i..]);
            used = len;
            n = 3;
            if whole {
                n = len;
                esc[..n].copy_from_slice(&text[i..i + n]);
            } else {
                esc[..3].copy_from_slice("\u{fffd}".as_bytes());
            }
        } else if b < 0x20 || b == b'"' || b == b'\\' {
            let short = match b {
                b'"' | b'\\' => b,
                _ => b"uuuuuuuubtnufruuuuuuuuuuuuuuuuuu"[usize::from(b)],
            };
            esc[0] = b'\\';
            esc[1] = short;
            n = 2;
            if short == b'u' {
                esc[2..6].copy_from_slice(&[
                    b'0',
                    b'0',
                    b'0' + (b >> 4),
                    LOWER_HEX[usize::from(b & 15)],
                ]);
                n = 6;
            }
        }
        // SAFETY: o <= 6 * i and i < text.len(), so o + 8 <= o + BLOCK is
        // within the reserve; the `n` bytes kept are at most 6 * `used` (one
        // store, not a memcpy call per escape).
        unsafe {
            dst.add(o)
                .cast::<u64>()
                .write_unaligned(u64::from_ne_bytes(esc))
        };
        o += n;
        i += used;
    }
    // SAFETY: the first `o` spare bytes were written above.
    unsafe { out.set_len(out.len() + o) };
}

const LOWER_HEX: &[u8; 16] = b"0123456789abcdef";

/// The UTF-8 character `s` starts with (its first byte is not ASCII): its
/// length and whether it is valid; if not, the length is that of the bytes
/// one U+FFFD replaces, as in `String::from_utf8_lossy`.
fn utf8_prefix(s: &[u8]) -> (usize, bool) {
    let head = s.get(..4).unwrap_or(s);
    match std::str::from_utf8(head) {
        Err(e) if e.valid_up_to() == 0 => (e.error_len().unwrap_or(head.len()), false),
        // The lead byte has as many leading ones as the character has bytes.
        _ => ((!s[0]).leading_zeros() as usize, true),
    }
}

/// Bytes `copy_plain` takes at once: an SSE2 register where every CPU has one.
#[cfg(target_arch = "x86_64")]
const BLOCK: usize = 16;
#[cfg(not(target_arch = "x86_64"))]
const BLOCK: usize = 8;

/// Copies BLOCK bytes from `src` to `dst` and says how many of them come
/// before the first one JSON must escape (BLOCK if none): a control
/// character, `"`, `\`, or a byte of non-ASCII (checked as UTF-8 apart).
/// SAFETY: `src` must be readable and `dst` writable for BLOCK bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn copy_plain(src: *const u8, dst: *mut u8) -> usize {
    use std::arch::x86_64::*;
    let v = _mm_loadu_si128(src.cast());
    _mm_storeu_si128(dst.cast(), v);
    let is = |c: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8));
    // Signed: the bytes from 0x80 on are below 0x20 too.
    let m = _mm_or_si128(
        _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
        _mm_or_si128(is(b'"'), is(b'\\')),
    );
    (_mm_movemask_epi8(m) as u32 | 1 << BLOCK).trailing_zeros() as usize
}

/// Eight bytes as one word: the classic "has a byte less than n" and "has a
/// zero byte" tests, plus the high bits. They err only above a byte that is
/// really special, so the lowest flag is exact.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
unsafe fn copy_plain(src: *const u8, dst: *mut u8) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let x = u64::from_le(src.cast::<u64>().read_unaligned());
    dst.cast::<u64>().write_unaligned(x.to_le());
    let quote = x ^ (ONES * u64::from(b'"'));
    let backslash = x ^ (ONES * u64::from(b'\\'));
    let flags = (x
        | x.wrapping_sub(ONES * 0x20)
        | quote.wrapping_sub(ONES) & !quote
        | backslash.wrapping_sub(ONES) & !backslash)
        & (ONES << 7);
    (flags.trailing_zeros() / 8) as usize
}

/// Milliseconds since the Unix epoch, rounded down (also before the epoch).
fn millis(t: SystemTime) -> i64 {
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

fn format_millis(ms: i64) -> [u8; 24] {
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
