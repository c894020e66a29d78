//! The log's byte-level hot paths, where every byte of the job's output
//! passes: the newline and command searches and the JSON string escaper.
//! They are the only code outside `sys` allowed `unsafe`: SSE2 loads (libc's
//! memchr off x86_64), and SSE2 stores straight into a buffer's spare
//! capacity. Each is checked byte for byte against a plain implementation
//! in the tests (miniserde's JSON for the escaper).
#![allow(unsafe_code)]

/// The first `\n` in `data`. Every byte of the log passes here: a byte loop
/// at opt-level "z" is not vectorised, and musl's memchr goes a word at a
/// time, so x86_64 compares 16 bytes at once (SSE2, which every x86_64 CPU
/// has) and other targets call libc's memchr.
#[cfg(target_arch = "x86_64")]
pub fn find_newline(data: &[u8]) -> Option<usize> {
    find_pair(data, None)
}

#[cfg(not(target_arch = "x86_64"))]
pub fn find_newline(data: &[u8]) -> Option<usize> {
    // SAFETY: memchr reads at most `data.len()` bytes from a valid slice.
    let p = unsafe { libc::memchr(data.as_ptr().cast(), i32::from(b'\n'), data.len()) };
    if p.is_null() {
        None
    } else {
        Some(p as usize - data.as_ptr() as usize)
    }
}

/// Where the first line after a `\n` in `data` starts with `:` (a workflow
/// command may be there): the index of that `:`. One pass over the bytes
/// rather than a search per line.
#[cfg(target_arch = "x86_64")]
pub fn find_command(data: &[u8]) -> Option<usize> {
    find_pair(data, Some(b':')).map(|i| i + 1)
}

#[cfg(not(target_arch = "x86_64"))]
pub fn find_command(data: &[u8]) -> Option<usize> {
    data.windows(2).position(|w| w == b"\n:").map(|i| i + 1)
}

/// The first `\n` in `data` that `next` follows (any byte, or the end, if
/// `None`): 32 places per round, then 16, the last block overlapping the
/// one before. Inlined, so each caller's `next` is a constant.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn find_pair(data: &[u8], next: Option<u8>) -> Option<usize> {
    use std::arch::x86_64::*;
    // With `next` a block ends one byte early: its byte after is compared too.
    let n = data.len().saturating_sub(usize::from(next.is_some()));
    let block = |i: usize| {
        // SAFETY: callers pass i + 16 <= n, and n + 1 <= data.len() with `next`.
        unsafe {
            let p = data.as_ptr().add(i);
            let m = _mm_cmpeq_epi8(_mm_loadu_si128(p.cast()), _mm_set1_epi8(b'\n' as i8));
            let m = match next {
                Some(c) => _mm_and_si128(
                    m,
                    _mm_cmpeq_epi8(_mm_loadu_si128(p.add(1).cast()), _mm_set1_epi8(c as i8)),
                ),
                None => m,
            };
            _mm_movemask_epi8(m) as u32
        }
    };
    if n < 16 {
        return (0..n).find(|&i| data[i] == b'\n' && next.is_none_or(|c| data[i + 1] == c));
    }
    let mut i = 0;
    while i + 32 <= n {
        let m = block(i) | block(i + 16) << 16;
        if m != 0 {
            return Some(i + m.trailing_zeros() as usize);
        }
        i += 32;
    }
    loop {
        // The last block: the 16 bytes before n, less the ones seen already.
        let last = i + 16 > n;
        let at = if last { n - 16 } else { i };
        let m = block(at) >> (i - at);
        if m != 0 {
            return Some(i + m.trailing_zeros() as usize);
        }
        if last || i + 16 == n {
            return None;
        }
        i += 16;
    }
}

/// Appends `src` to `out`. A short piece is copied 16 bytes at a time
/// (the last block overlapping the one before) without calling memcpy:
/// musl's starts with a byte loop and `rep movsq`, which cost more than a
/// line of text takes to copy, and masked lines are many short pieces.
pub fn push_bytes(out: &mut Vec<u8>, src: &[u8]) {
    let n = src.len();
    if n > 256 {
        return out.extend_from_slice(src);
    }
    out.reserve(n);
    let dst = out.spare_capacity_mut().as_mut_ptr().cast::<u8>();
    let (s, mut i) = (src.as_ptr(), 0);
    // SAFETY: every copy reads within `src` and writes within the `n`
    // bytes reserved; the unaligned accesses allow any address.
    unsafe {
        if n >= 16 {
            let copy = |at: usize| {
                let block = s.add(at).cast::<[u8; 16]>().read_unaligned();
                dst.add(at).cast::<[u8; 16]>().write_unaligned(block);
            };
            while i + 16 < n {
                copy(i);
                i += 16;
            }
            copy(n - 16);
        } else {
            while i < n {
                dst.add(i).write(*s.add(i));
                i += 1;
            }
        }
        out.set_len(out.len() + n);
    }
}

/// How many bytes `a` and `b` have in common from their start: 16 at a time
/// on x86_64 (the masker follows a secret's bytes with it).
pub fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    while i + 16 <= n {
        use std::arch::x86_64::*;
        // SAFETY: both slices hold 16 bytes from i.
        let same = unsafe {
            let x = _mm_loadu_si128(a.as_ptr().add(i).cast());
            let y = _mm_loadu_si128(b.as_ptr().add(i).cast());
            _mm_movemask_epi8(_mm_cmpeq_epi8(x, y)) as u32
        };
        if same != 0xffff {
            return i + (!same).trailing_zeros() as usize;
        }
        i += 16;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// Appends `text` as a JSON string, quotes included (see `push_escaped`).
pub fn push_json_str(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    push_escaped(out, text);
    out.push(b'"');
}

/// Appends `text` escaped as the inside of a JSON string (RFC 8259), byte for
/// byte as miniserde and serde_json write it: `"` and `\` with a backslash,
/// `\b \t \n \f \r`, other control characters as `\u00xx`, everything else,
/// non-ASCII included, as it is. Invalid UTF-8 becomes U+FFFD, as
/// `String::from_utf8_lossy` replaces it.
pub fn push_escaped(out: &mut Vec<u8>, text: &[u8]) {
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
