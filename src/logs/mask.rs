//! Secret masking: owns the `Masker` (a job's secrets and the encoded forms
//! they may take in a log, matched by a hand-written Aho-Corasick automaton)
//! and the `LineSplitter` that cuts output streams into masked log lines.
//! Every byte the runner sends out goes through here, so nothing in this file
//! may panic on input, and its cost stays linear in the text.

use super::bytes::{common_prefix, find_newline, push_bytes};
use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

/// Shorter values would match all over ordinary text and make logs unreadable.
const MIN_LEN: usize = 4;
/// Keeps state ids within `u32`; no real secret comes close.
const MAX_TOTAL: usize = 1 << 28;
const UPPER: &[u8; 16] = b"0123456789ABCDEF";
const LOWER: &[u8; 16] = b"0123456789abcdef";
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The job's secrets, shared read-only by the threads that write logs.
#[derive(Default)]
pub struct Masker {
    /// Every form of every secret, sorted and deduplicated.
    pats: Vec<Vec<u8>>,
    /// Built on first use (or by `build`) so that adding 100 secrets costs one
    /// construction, and a forgotten `build` cannot leave secrets unmasked.
    ac: OnceLock<Automaton>,
    /// Counts the additions, so a splitter holding a line scanned with an
    /// older automaton knows to scan it again.
    generation: u64,
}

// A derived Debug would print the secrets into the very logs we protect.
impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker")
            .field("patterns", &self.pats.len())
            .finish_non_exhaustive()
    }
}

impl Masker {
    pub const fn new() -> Masker {
        Masker {
            pats: Vec::new(),
            ac: OnceLock::new(),
            generation: 0,
        }
    }

    /// Registers a secret with all its forms; the error is a reason to log.
    pub fn add(&mut self, value: &[u8]) -> Result<(), &'static str> {
        if value.is_empty() {
            return Err("empty secret value is not masked");
        }
        if value.len() < MIN_LEN {
            return Err("secret shorter than 4 bytes is not masked (it would shred the log)");
        }
        let mut forms = vec![value.to_vec()];
        for line in value.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() >= MIN_LEN {
                forms.push(line.to_vec());
            }
        }
        for skip in 0..3 {
            forms.extend(base64_core(value, skip));
        }
        for hex in [UPPER, LOWER] {
            forms.push(percent(value, hex));
            forms.push(json(value, hex, false));
            forms.push(json(value, hex, true));
        }
        let total: usize = self.pats.iter().chain(&forms).map(Vec::len).sum();
        if total > MAX_TOTAL {
            return Err("secret too large to mask");
        }
        self.pats.extend(forms);
        crate::files::heapsort(&mut self.pats);
        self.pats.dedup();
        self.ac = OnceLock::new();
        self.generation += 1;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.pats.is_empty()
    }

    /// Optional: builds the automaton now rather than on the first `mask`.
    pub fn build(&self) {
        let _ = self.automaton();
    }

    fn automaton(&self) -> Option<&Automaton> {
        if self.pats.is_empty() {
            return None;
        }
        Some(self.ac.get_or_init(|| Automaton::new(&self.pats)))
    }

    /// Replaces every run of secret text in `text` with `***`.
    pub fn mask<'a>(&self, text: &'a [u8]) -> Cow<'a, [u8]> {
        let mut spans = Vec::new();
        if let Some(ac) = self.automaton() {
            ac.scan(0, text, 0, &mut spans, true);
        }
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = Vec::with_capacity(text.len());
        render(&mut out, text, &spans);
        Cow::Owned(out)
    }
}

/// Where to cut `text` at or before `at` so that no UTF-8 character (nor the
/// start of one the next bytes might complete) is split: then the U+FFFD
/// replacement of each part is that of the whole. 0 if only `at` == 0 is.
pub(crate) fn char_start(text: &[u8], at: usize) -> usize {
    let at = at.min(text.len());
    for back in 1..=at.min(3) {
        let b = text[at - back];
        // Not a continuation byte: ASCII, or a lead byte whose leading ones
        // count the bytes of its character.
        if b & 0xC0 != 0x80 {
            return if b >= 0xC0 && (!b).leading_zeros() as usize > back {
                at - back
            } else {
                at
            };
        }
    }
    at
}

/// Standard base64 with padding (RFC 4648): the masked forms, and the
/// Authorization header the checkout sends.
pub fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= c.len() {
                B64[(n >> shift & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// The part of the base64 encoding of `value` that does not depend on the
/// `skip` bytes before it nor on what follows it.
fn base64_core(value: &[u8], skip: usize) -> Option<Vec<u8>> {
    let mut bytes = vec![0; skip];
    bytes.extend_from_slice(value);
    bytes.resize(bytes.len().div_ceil(3) * 3, 0);
    let enc = base64(&bytes).into_bytes();
    // Char i carries bits 6i..6i+6: keep those entirely inside the value.
    let (lo, hi) = ((8 * skip).div_ceil(6), 8 * (skip + value.len()) / 6);
    enc.get(lo..hi)
        .filter(|s| s.len() >= MIN_LEN)
        .map(<[u8]>::to_vec)
}

fn percent(value: &[u8], hex: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() * 3);
    for &b in value {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]);
        }
    }
    out
}

/// A JSON string body; `ascii` escapes non-ASCII as `\uXXXX` (UTF-16) the way
/// many writers do. Bytes that are not UTF-8 cannot be in JSON and stay raw.
fn json(value: &[u8], hex: &[u8; 16], ascii: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 8);
    for chunk in value.utf8_chunks() {
        for ch in chunk.valid().chars() {
            let esc: &[u8] = match ch {
                '"' => b"\\\"",
                '\\' => b"\\\\",
                '\n' => b"\\n",
                '\r' => b"\\r",
                '\t' => b"\\t",
                '\u{8}' => b"\\b",
                '\u{c}' => b"\\f",
                _ => b"",
            };
            if !esc.is_empty() {
                out.extend_from_slice(esc);
            } else if ch < ' ' || (ascii && !ch.is_ascii()) {
                for unit in ch.encode_utf16(&mut [0; 2]) {
                    out.extend_from_slice(b"\\u");
                    for shift in [12, 8, 4, 0] {
                        out.push(hex[usize::from(*unit >> shift & 15)]);
                    }
                }
            } else {
                out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
            }
        }
        out.extend_from_slice(chunk.invalid());
    }
    out
}

/// Aho-Corasick over bytes. A state's children are numbered together, so
/// they are the `kids[s]` states from `child[s]`: no per-edge target is
/// stored, which keeps it near 16 bytes per state.
struct Automaton {
    /// Dense transitions from the root only: it is where most bytes are read.
    root: Box<[u32; 256]>,
    /// Wu-Manber shifts: for the hash of the 3 bytes that end a window of
    /// `min_len` bytes, how far the window may move without passing the start
    /// of a pattern. At the root, text is skipped by up to `min_len - 2`
    /// bytes per lookup: the log is mostly secret-free, and a byte-by-byte
    /// filter cost more than the rest of the pipeline together.
    shift: Box<[u8]>,
    /// One bit per hash: set for those in `shift` (3 bytes found in the
    /// first `min_len` of a pattern). Most windows of a log are not: then the
    /// window moves by the whole `min_len - 2` without waiting for `shift`,
    /// and the processor can look at the next window before this one's
    /// lookup is back, instead of one lookup after the other.
    seen: Box<[u64]>,
    /// The shortest pattern's length (4 or more).
    min_len: usize,
    // Boxed slices rather than Vecs: their indexing is built in, which matters
    // in the hot loop at opt-level "z", where Vec's Index is not inlined.
    /// The byte on the edge into each state.
    label: Box<[u8]>,
    /// The children of state `s` are the `kids[s]` states from `child[s]`.
    child: Box<[u32]>,
    kids: Box<[u16]>,
    /// How many states follow `s` one by one, each the only child of the
    /// one before and ending no pattern (up to 255): they are numbered in a
    /// row from `child[s]`, so their labels lie together, and the text is
    /// compared with them at once, not walked a state at a time (the walk
    /// was most of the cost of a line holding a secret).
    run: Box<[u8]>,
    fail: Box<[u32]>,
    /// Length of the longest pattern ending at this state, 0 if none. Shorter
    /// ones ending there lie inside it, so masking needs no more.
    out: Box<[u32]>,
    longest: usize,
    /// Some pattern holds a `\n`: then a match may span lines.
    newline: bool,
}

impl Automaton {
    /// `pats` must be sorted, deduplicated and non-empty each: then the
    /// patterns below one trie node form a contiguous range whose first one
    /// is the node itself if it is a pattern, so the trie is built from
    /// ranges without pointers.
    fn new(pats: &[Vec<u8>]) -> Automaton {
        let (mut label, mut out) = (vec![0u8], vec![0u32]);
        let (mut child, mut kids) = (vec![0u32], vec![0u16]);
        // (state, the patterns below it, their bytes in common): a state's
        // children get their numbers together when it is taken, and the
        // last one is taken next, so a run of single children is numbered
        // in a row.
        let mut todo = vec![(0, 0, pats.len(), 0)];
        while let Some((s, lo, hi, depth)) = todo.pop() {
            child[s] = label.len() as u32;
            let mut j = lo;
            while j < hi {
                let Some(&b) = pats[j].get(depth) else {
                    j += 1;
                    continue;
                };
                let mut k = j + 1;
                while k < hi && pats[k].get(depth) == Some(&b) {
                    k += 1;
                }
                todo.push((label.len(), j, k, depth + 1));
                label.push(b);
                out.push(if pats[j].len() == depth + 1 {
                    depth as u32 + 1
                } else {
                    0
                });
                child.push(0);
                kids.push(0);
                kids[s] += 1;
                j = k;
            }
        }
        let n = label.len();
        let mut ac = Automaton {
            root: Box::new([0; 256]),
            shift: Vec::new().into(),
            seen: Vec::new().into(),
            min_len: pats.iter().map(Vec::len).min().unwrap_or(4).max(3),
            label: label.into(),
            child: child.into(),
            kids: kids.into(),
            run: vec![0; n].into(),
            fail: vec![0; n].into(),
            out: out.into(),
            longest: pats.iter().map(Vec::len).max().unwrap_or(1),
            newline: pats.iter().any(|p| p.contains(&b'\n')),
        };
        for w in ac.children(0) {
            ac.root[usize::from(ac.label[w])] = w as u32;
        }
        let m = ac.min_len;
        let mut shift = vec![(m - 2).min(255) as u8; 1 << 16];
        let mut seen = vec![0u64; 1 << 10];
        for p in pats {
            for (j, w) in p.get(..m).unwrap_or_default().windows(3).enumerate() {
                let h = hash3(u32::from_be_bytes([0, w[0], w[1], w[2]]));
                shift[h] = shift[h].min((m - 3 - j) as u8);
                seen[h >> 6] |= 1 << (h & 63);
            }
        }
        ac.shift = shift.into();
        ac.seen = seen.into();
        // Failure links level by level: each one leads to a shallower state.
        let mut level: Vec<usize> = ac.children(0).collect();
        let mut at = 0;
        while let Some(&v) = level.get(at) {
            at += 1;
            for w in ac.children(v) {
                let f = ac.next(ac.fail[v], ac.label[w]);
                ac.fail[w] = f;
                if ac.out[w] == 0 {
                    ac.out[w] = ac.out[f as usize];
                }
                level.push(w);
            }
        }
        // A child is numbered after its parent, so runs are known from the end.
        for v in (1..n).rev() {
            let c = ac.child[v] as usize;
            if ac.kids[v] == 1 && ac.out[c] == 0 {
                ac.run[v] = ac.run[c].saturating_add(1);
            }
        }
        ac
    }

    /// The first place from `i` where a pattern may start. Near the end of
    /// `hay`, where no whole window fits, a `complete` text can hold no more
    /// matches; a stream's next bytes might, so its tail is left to the
    /// automaton byte by byte. Skipping a place where no pattern starts
    /// leaves the state at the root, as scanning it would, for all that
    /// matters to later matches.
    #[inline(always)]
    fn skip(&self, hay: &[u8], mut i: usize, complete: bool) -> usize {
        let m = self.min_len;
        let full = (m - 2).min(255);
        loop {
            let Some(w) = hay.get(i + m - 3..i + m) else {
                return if complete { hay.len() } else { i };
            };
            let h = hash3(u32::from_be_bytes([0, w[0], w[1], w[2]]));
            if self
                .seen
                .get(h >> 6)
                .is_some_and(|&b| b >> (h & 63) & 1 == 0)
            {
                i += full;
                continue;
            }
            match self.shift.get(h) {
                Some(&0) | None => return i,
                Some(&sh) => i += usize::from(sh),
            }
        }
    }

    #[inline]
    fn children(&self, s: usize) -> std::ops::Range<usize> {
        let c = self.child[s] as usize;
        c..c + usize::from(self.kids[s])
    }

    /// The state after `b` from `s`. Inside a match this runs for every
    /// byte, so it is written out by hand (an iterator here was a call per
    /// byte at opt-level "z").
    #[inline(always)]
    fn next(&self, mut s: u32, b: u8) -> u32 {
        loop {
            if s == 0 {
                return self.root[usize::from(b)];
            }
            let at = s as usize;
            let (Some(&lo), Some(&n)) = (self.child.get(at), self.kids.get(at)) else {
                return 0;
            };
            let (mut k, hi) = (lo, lo + u32::from(n));
            while k < hi {
                if self.label.get(k as usize) == Some(&b) {
                    return k;
                }
                k += 1;
            }
            s = self.fail.get(at).copied().unwrap_or(0);
        }
    }

    /// Feeds `hay` from `state`, adding the matches (offset by `base`) to the
    /// merged, sorted `spans`; returns the state to continue from.
    /// `complete` says no bytes follow `hay` (a whole line or text).
    fn scan(
        &self,
        mut s: u32,
        hay: &[u8],
        base: usize,
        spans: &mut Vec<(usize, usize)>,
        complete: bool,
    ) -> u32 {
        let mut i = 0;
        while i < hay.len() {
            if s == 0 {
                i = self.skip(hay, i, complete);
            }
            let Some(&b) = hay.get(i) else { break };
            s = self.next(s, b);
            let len = self.out[s as usize] as usize;
            i += 1;
            if len != 0 {
                let (mut start, end) = ((base + i).saturating_sub(len), base + i);
                // Ends only grow, but a longer match may swallow earlier spans.
                while let Some(&(s0, e0)) = spans.last() {
                    if e0 < start {
                        break;
                    }
                    start = start.min(s0);
                    spans.pop();
                }
                spans.push((start, end));
            }
            // Down a run of only children as far as the text follows it: no
            // pattern ends on the way, so the state is all that changes.
            let at = s as usize;
            let (Some(&k), Some(&c)) = (self.run.get(at).filter(|&&k| k > 0), self.child.get(at))
            else {
                continue;
            };
            let (c, k) = (c as usize, usize::from(k));
            let text = hay.get(i..).unwrap_or_default();
            let m = common_prefix(text, self.label.get(c..c + k).unwrap_or_default());
            if m > 0 {
                s = (c + m - 1) as u32;
                i += m;
            }
        }
        s
    }
}

/// Hashes 3 bytes (the low 24 bits of `x`) to 16 bits.
#[inline(always)]
fn hash3(x: u32) -> usize {
    ((x << 8).wrapping_mul(0x9E37_79B1) >> 16) as usize
}

/// Appends `text` with each span replaced by `***`; spans may run past the end.
fn render(out: &mut Vec<u8>, text: &[u8], spans: &[(usize, usize)]) {
    let mut at = 0;
    for &(s, e) in spans {
        push_bytes(out, text.get(at..s).unwrap_or_default());
        out.extend_from_slice(b"***");
        at = e;
    }
    push_bytes(out, text.get(at..).unwrap_or_default());
}

/// Turns a byte stream into masked lines, holding at most about `max_line`
/// plus the longest pattern bytes of a line, however long it is.
#[derive(Default)]
pub struct LineSplitter {
    max: usize,
    /// The current line's bytes not yet emitted, all of them already scanned.
    buf: Vec<u8>,
    /// Masked ranges of `buf`, merged and sorted.
    spans: Vec<(usize, usize)>,
    /// Automaton state after the last scanned byte of this line; it carries
    /// over cuts so nothing is scanned twice.
    state: u32,
    /// Part of this line has been emitted.
    partial: bool,
    /// Where each piece `process` gave out ends, for `push` and the like.
    ends: Vec<usize>,
    /// The masker's generation `buf` was scanned with.
    generation: u64,
}

// A derived Debug would show the unmasked bytes held back.
impl fmt::Debug for LineSplitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineSplitter")
            .field("max_line", &self.max)
            .field("held", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl LineSplitter {
    pub fn new(max_line: usize) -> Self {
        LineSplitter {
            max: max_line.max(1),
            ..Default::default()
        }
    }

    /// Feeds bytes; calls `emit(text, complete)` for each finished piece:
    /// `text` is masked, without its `\n` (a `\r` before it is kept, so the
    /// console gets the bytes back exactly); `complete` is true only for the
    /// piece that a newline ended: false for the leading pieces of an
    /// over-long line and for a last line without newline.
    /// Pass the same masker on every call.
    pub fn push(&mut self, data: &[u8], masker: &Masker, emit: &mut dyn FnMut(&[u8], bool)) {
        self.pieces(Some(Some(data)), masker, emit);
    }

    /// Emits as much of an unfinished line as can be shown without risking
    /// an unmasked secret: all but the bytes a match could still grow from.
    /// The log pipeline calls it when output has paused mid-line (a prompt,
    /// progress dots), so such output still reaches the console.
    pub fn flush(&mut self, masker: &Masker, emit: &mut dyn FnMut(&[u8], bool)) {
        self.pieces(None, masker, emit);
    }

    /// End of stream: emits what is left (a last line without newline), if any.
    pub fn finish(&mut self, masker: &Masker, emit: &mut dyn FnMut(&[u8], bool)) {
        self.pieces(Some(None), masker, emit);
    }

    /// `process`, each of its pieces cut into `emit`'s calls by `by_line`.
    fn pieces(
        &mut self,
        what: Option<Option<&[u8]>>,
        masker: &Masker,
        emit: &mut dyn FnMut(&[u8], bool),
    ) {
        let mut out = Vec::new();
        self.process(what, masker, &mut out);
        let mut from = 0;
        for &end in &self.ends {
            by_line(out.get(from..end).unwrap_or_default(), emit);
            from = end;
        }
    }

    /// What `push` (`Some(Some(data))`), `finish` (`Some(None)`) and `flush`
    /// (`None`) do, with the masked text appended to `out` as it is: lines
    /// with their `\n`, many at once, or pieces of a line (`ends` says where
    /// each piece ends). The log pipeline takes it so, without a call and a
    /// copy per line.
    pub(crate) fn process(
        &mut self,
        what: Option<Option<&[u8]>>,
        masker: &Masker,
        out: &mut Vec<u8>,
    ) {
        self.ends.clear();
        let ac = masker.automaton();
        if self.generation != masker.generation {
            // New secrets since this line was scanned: scan what is held
            // again, so a value registered now is masked in it too.
            self.generation = masker.generation;
            self.spans.clear();
            self.state = ac.map_or(0, |a| a.scan(0, &self.buf, 0, &mut self.spans, false));
        }
        if ac.is_none_or(|a| self.state as usize >= a.label.len()) {
            self.state = 0;
        }
        // A match still growing at the end of `buf` began within its last
        // `keep` bytes, so cutting before them cannot split an unseen match.
        let keep = ac.map_or(0, |a| a.longest - 1);
        let data = match what {
            Some(Some(data)) => data,
            Some(None) => {
                if !self.buf.is_empty() || self.partial {
                    self.end_line(false, out);
                }
                return;
            }
            None => {
                while self.buf.len() > keep {
                    let before = self.buf.len();
                    self.cut(keep, out);
                    if self.buf.len() == before {
                        break;
                    }
                }
                return;
            }
        };
        let cap = self.max.saturating_add(keep);
        // data[run..at] are whole lines with nothing to mask, not yet given
        // to `out`: they go on together, straight from `data`.
        let (mut run, mut at) = (0, 0);
        loop {
            let rest = data.get(at..).unwrap_or_default();
            // All the whole lines at once: when no pattern holds a `\n`, no
            // match spans lines, so one scan finds what a scan per line
            // would, without a search and a call per line.
            if self.buf.is_empty() && self.state == 0 && ac.is_none_or(|a| !a.newline) {
                let end = rest.iter().rposition(|&b| b == b'\n').map_or(0, |n| n + 1);
                if end > 0 && end <= self.max.saturating_add(1) {
                    let lines = &rest[..end];
                    self.spans.clear();
                    if let Some(ac) = ac {
                        ac.scan(0, lines, 0, &mut self.spans, true);
                    }
                    self.partial = false;
                    if !self.spans.is_empty() {
                        if run < at {
                            self.put(out, data.get(run..at).unwrap_or_default());
                        }
                        render(out, lines, &self.spans);
                        self.ends.push(out.len());
                        self.spans.clear();
                        run = at + end;
                    }
                    at += end;
                    continue;
                }
            }
            let nl = find_newline(rest);
            // The common case, a whole line inside this chunk, is masked in
            // place rather than copied through `buf`.
            if let Some(n) = nl.filter(|&n| n <= self.max && self.buf.is_empty() && self.state == 0)
            {
                let line = &rest[..n];
                self.spans.clear();
                if let Some(ac) = ac {
                    ac.scan(0, line, 0, &mut self.spans, true);
                }
                self.partial = false;
                at += n + 1;
                if !self.spans.is_empty() {
                    if run < at - n - 1 {
                        self.put(out, data.get(run..at - n - 1).unwrap_or_default());
                    }
                    render(out, line, &self.spans);
                    out.push(b'\n');
                    self.ends.push(out.len());
                    self.spans.clear();
                    run = at;
                }
                continue;
            }
            if run < at {
                self.put(out, data.get(run..at).unwrap_or_default());
            }
            let (mut line, _) = rest.split_at(nl.unwrap_or(rest.len()));
            at += line.len() + 1;
            run = at;
            loop {
                let (now, later) =
                    line.split_at(cap.saturating_sub(self.buf.len()).min(line.len()));
                let base = self.buf.len();
                self.buf.extend_from_slice(now);
                if let Some(ac) = ac {
                    self.state = ac.scan(self.state, now, base, &mut self.spans, false);
                }
                line = later;
                if line.is_empty() {
                    break;
                }
                self.cut(keep, out);
            }
            if nl.is_none() {
                return;
            }
            self.end_line(true, out);
        }
    }

    /// Emits the rest of the line. `complete` says a newline ended it; a
    /// `\r` before that newline stays in the text, so the console can write
    /// the line back byte for byte.
    fn end_line(&mut self, complete: bool, out: &mut Vec<u8>) {
        while self.buf.len() > self.max {
            self.cut(0, out);
        }
        self.emit_piece(self.buf.len(), complete, out);
        self.buf.clear();
        self.spans.clear();
        self.state = 0;
        self.partial = false;
    }

    /// Emits an incomplete piece of about `max` bytes, never cutting inside a
    /// masked span nor within the last `keep` bytes, unless a span covers all
    /// of it: then the span is split and its tail stays masked in `spans`.
    fn cut(&mut self, keep: usize, out: &mut Vec<u8>) {
        let len = self.buf.len();
        let safe = len.saturating_sub(keep);
        let mut c = self.max.min(safe);
        // A character cut in two would become two U+FFFD in the log's text.
        match char_start(&self.buf, c) {
            0 if c < self.max => return,
            0 => {}
            b => c = b,
        }
        let i = self.spans.partition_point(|&(_, e)| e <= c);
        if let Some(&(s, e)) = self.spans.get(i) {
            if s < c {
                c = if s > 0 { s } else { e.min(safe) };
            }
        }
        let c = c.clamp(1, len.max(1));
        self.emit_piece(c, false, out);
        self.buf.drain(..c.min(len));
        self.spans.retain_mut(|sp| {
            sp.0 = sp.0.saturating_sub(c);
            sp.1 = sp.1.saturating_sub(c);
            sp.1 > 0
        });
        self.partial = true;
    }

    /// Gives `buf[..end]` to `out`, masked, with a `\n` if `newline`.
    fn emit_piece(&mut self, end: usize, newline: bool, out: &mut Vec<u8>) {
        let text = self.buf.get(..end).unwrap_or(&self.buf);
        let n = self.spans.partition_point(|&(s, _)| s < end);
        render(out, text, self.spans.get(..n).unwrap_or_default());
        if newline {
            out.push(b'\n');
        }
        self.ends.push(out.len());
    }

    /// Gives `text` to `out` as it is, one piece.
    fn put(&mut self, out: &mut Vec<u8>, text: &[u8]) {
        out.extend_from_slice(text);
        self.ends.push(out.len());
    }
}

/// Cuts a piece of masked text from `LineSplitter::process` into `push`'s
/// calls: one per line, `complete` if its `\n` was there.
fn by_line(mut text: &[u8], emit: &mut dyn FnMut(&[u8], bool)) {
    while let Some(n) = find_newline(text) {
        emit(&text[..n], true);
        text = &text[n + 1..];
        if text.is_empty() {
            return;
        }
    }
    emit(text, false);
}
