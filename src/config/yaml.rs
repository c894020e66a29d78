//! Reader for the YAML subset that cloud-init writes as the job file
//! (`/etc/solstice/job.yaml`) and that the secrets file uses. This module owns
//! the subset; docs/job-file.md describes it for users.
//!
//! The subset: one flat mapping, one `key: value` per line, every key at
//! column 1. A key or value is a plain, 'single-quoted' (`''` escape) or
//! "double-quoted" (every YAML 1.2 escape) scalar on one line; `key:` alone is
//! an empty plain value. Also: blank lines, full-line comments and comments
//! after ` #`, one `---` before the first entry, `...` after the last, CRLF
//! line ends, a UTF-8 BOM at the start. Anything else is refused at
//! `path:line:col` rather than guessed at: indentation, sequences, flow
//! collections, anchors, aliases, tags, block scalars, multi-line scalars,
//! tabs outside quotes and comments, directives, a second document, duplicate
//! keys, non-printable characters, keys over YAML's 1024-character limit.
//!
//! Inside the subset the result equals PyYAML's BaseLoader (checked by
//! tests/yaml_subset.rs). Refused on purpose although PyYAML reads them as a
//! flat map of strings: duplicate keys (PyYAML keeps the last), a mapping
//! indented as a whole, multi-line plain and quoted scalars, a `{a: b}` flow
//! mapping, anchors and tags (also `--- !!map`), `|`/`>` block scalars,
//! `%YAML` directives, `? key` explicit keys, a `#` straight after a closing
//! quote, a lone CR line end, raw U+0085/U+2028/U+2029 (line breaks to
//! PyYAML's YAML 1.1, content to YAML 1.2), a BOM after the start, and
//! `\u`/`\U` escapes of surrogates (not a Rust string). An empty document
//! gives no entries where PyYAML gives null or "".

use crate::error::{Error, Result};

/// One `key: value` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    /// The value was a plain scalar, so `null`, `~` and "" may mean null to
    /// the caller; a quoted value is always a string.
    pub plain: bool,
    pub line: usize,
    /// Column of the key, in characters, 1-based.
    pub col: usize,
    /// Column of the value (its opening quote if quoted; just after the `:`
    /// if empty).
    pub value_col: usize,
}

const TAB: &str = "tab characters are only supported inside quoted scalars and comments";
const SURROGATE: &str = "escape is not a Unicode scalar value (surrogates are not supported)";
const OPEN: &str = "unterminated quoted scalar (multi-line scalars are not supported)";

/// Errors travel boxed inside this module: a pointer is much cheaper to pass
/// up through every `?` than a whole `Error`.
type Res<T> = std::result::Result<T, Box<Error>>;

/// YAML's one-character escapes, and what each stands for: lists compile
/// smaller than a `match`.
const ESCAPES: &[u8] = b"0abt\tnvfre \"/\\N_LP";
const ESCAPED: [char; 18] = [
    '\0', '\x07', '\x08', '\t', '\t', '\n', '\x0b', '\x0c', '\r', '\x1b', ' ', '"', '/', '\\',
    '\u{85}', '\u{a0}', '\u{2028}', '\u{2029}',
];

/// One line as characters, so columns are character counts and every lookup
/// is bounds-checked.
struct Line<'a> {
    path: &'a str,
    text: &'a str,
    n: usize,
    l: Vec<char>,
}

impl Line<'_> {
    /// The character at `i`; past the end, '\n', which a line never holds.
    fn at(&self, i: usize) -> char {
        self.l.get(i).copied().unwrap_or('\n')
    }

    fn spaces(&self, mut i: usize) -> usize {
        while self.at(i) == ' ' {
            i += 1;
        }
        i
    }

    fn err(&self, i: usize, msg: &str) -> Box<Error> {
        Box::new(Error::at(self.path, self.n, i + 1, msg).with_source(self.text))
    }

    /// Only spaces and a comment may follow `i`.
    fn end(&self, i: usize, msg: &str) -> Res<()> {
        let k = self.spaces(i);
        match self.at(k) {
            '\n' => Ok(()),
            // YAML 1.2 needs whitespace before a comment; PyYAML does not
            // after a quote, so `'a'#b` would be read differently.
            '#' if k > i => Ok(()),
            '#' => Err(self.err(k, "a comment needs a space before `#`")),
            '\t' => Err(self.err(k, TAB)),
            _ => Err(self.err(k, msg)),
        }
    }

    /// The escape whose backslash is just before `*j` in the double-quoted
    /// scalar opened at `open`; moves `*j` past it.
    fn escape(&self, open: usize, j: &mut usize) -> Res<char> {
        let b = *j - 1;
        let e = self.at(*j);
        *j += 1;
        if let Some(k) = ESCAPES.iter().position(|&c| c as char == e) {
            return Ok(ESCAPED.get(k).copied().unwrap_or(e));
        }
        let n = match e {
            'x' => 2,
            'u' => 4,
            'U' => 8,
            '\n' => return Err(self.err(open, OPEN)),
            _ => return Err(self.err(b, &format!("invalid escape `\\{e}`"))),
        };
        let mut v = 0u32;
        for _ in 0..n {
            let d = self.at(*j).to_digit(16);
            let d =
                d.ok_or_else(|| self.err(*j, &format!("escape `\\{e}` needs {n} hex digits")))?;
            v = v * 16 + d;
            *j += 1;
        }
        char::from_u32(v).ok_or_else(|| self.err(b, SURROGATE))
    }

    /// The scalar starting at `i`: its value, whether it was plain, and the
    /// index just past it.
    fn scalar(&self, i: usize) -> Res<(String, bool, usize)> {
        let q = self.at(i);
        let mut s = String::new();
        let mut j = i + 1;
        if q == '\'' || q == '"' {
            loop {
                let ch = self.at(j);
                j += 1;
                if ch == '\n' {
                    return Err(self.err(i, OPEN));
                }
                if ch == q {
                    if q == '"' || self.at(j) != '\'' {
                        return Ok((s, false, j));
                    }
                    j += 1;
                    s.push(q);
                } else if ch == '\\' && q == '"' {
                    s.push(self.escape(i, &mut j)?);
                } else {
                    s.push(ch);
                }
            }
        }
        // YAML's rule for the first character of a plain scalar: no
        // indicator, except `-`, `?` and `:` followed by a non-space.
        let what = match q {
            '-' | '?' | ':' if !matches!(self.at(j), ' ' | '\t' | '\n') => "",
            '-' => "block sequences (`- item`) are not supported",
            '?' => "explicit keys (`? key`) are not supported",
            ':' => "`: ` without a key before it is not supported",
            '[' => "flow sequences (`[a, b]`) are not supported",
            '{' => "flow mappings (`{a: b}`) are not supported",
            '&' => "anchors (`&name`) are not supported",
            '*' => "aliases (`*name`) are not supported",
            '!' => "tags (`!tag`, `!!str`) are not supported",
            '|' | '>' => "block scalars (`|`, `>`) are not supported",
            _ => "",
        };
        if !what.is_empty() {
            return Err(self.err(i, what));
        }
        if b",]}%@`".iter().any(|&c| c as char == q) {
            let m = format!("a plain scalar cannot start with `{q}` (quote the value)");
            return Err(self.err(i, &m));
        }
        // Trailing spaces end the scalar only before a comment, a `: ` or
        // the line end, so remember where the last non-space was.
        let mut e = i;
        j = i;
        loop {
            match self.at(j) {
                '\n' => break,
                '\t' => return Err(self.err(j, TAB)),
                ' ' => {
                    j = self.spaces(j);
                    if self.at(j) == '#' {
                        break;
                    }
                    continue;
                }
                ':' if matches!(self.at(j + 1), ' ' | '\t' | '\n') => break,
                _ => e = j + 1,
            }
            j += 1;
        }
        let s = self.l.get(i..e).unwrap_or_default().iter().collect();
        Ok((s, true, e))
    }
}

/// Reads `src` (the contents of the file at `path`) as the flat mapping
/// described at the top of this module, in file order.
pub fn parse(path: &str, src: &[u8]) -> Result<Vec<Entry>> {
    parse_boxed(path, src).map_err(|e| *e)
}

fn parse_boxed(path: &str, src: &[u8]) -> Res<Vec<Entry>> {
    let src = src.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(src);
    let text = match std::str::from_utf8(src) {
        Ok(t) => t,
        Err(e) => {
            // Place the first bad byte: its line, and the characters before
            // it on that line (continuation bytes do not start one).
            let ok = src.get(..e.valid_up_to()).unwrap_or_default();
            let (mut line, mut col) = (1, 1);
            for &b in ok {
                if b == b'\n' {
                    (line, col) = (line + 1, 1);
                } else if b & 0xC0 != 0x80 {
                    col += 1;
                }
            }
            let text = String::from_utf8_lossy(src);
            return Err(Box::new(
                Error::at(path, line, col, "invalid UTF-8").with_source(&text),
            ));
        }
    };
    let mut out: Vec<Entry> = Vec::new();
    let (mut started, mut ended) = (false, false);
    for (n, raw) in text.split_inclusive('\n').enumerate() {
        // A CR ends a line only before an LF; any other is refused below,
        // the last line's included.
        let raw = raw
            .strip_suffix('\n')
            .map_or(raw, |r| r.strip_suffix('\r').unwrap_or(r));
        let c = Line {
            path,
            text,
            n: n + 1,
            l: raw.chars().collect(),
        };
        for (i, &ch) in c.l.iter().enumerate() {
            let msg = match ch {
                '\t' => continue,
                '\r' => "a carriage return is only supported in a CRLF line end",
                '\u{85}' | '\u{2028}' | '\u{2029}' => {
                    "Unicode line breaks (U+0085, U+2028, U+2029) are not supported; \
                     use a \\N, \\L or \\P escape"
                }
                '\u{feff}' => "a byte order mark is only allowed at the start of the file",
                '\0'..='\x1f' | '\x7f'..='\u{9f}' | '\u{fffe}' | '\u{ffff}' => {
                    return Err(c.err(
                        i,
                        &format!("non-printable character U+{:04X} is not allowed", ch as u32),
                    ))
                }
                _ => continue,
            };
            return Err(c.err(i, msg));
        }
        let i = c.spaces(0);
        match c.at(i) {
            '\n' | '#' => continue,
            '\t' => return Err(c.err(i, TAB)),
            _ if i > 0 => {
                return Err(c.err(
                    i,
                    "indented line: nested mappings and multi-line values are not supported",
                ))
            }
            _ => {}
        }
        if (raw.starts_with("---") || raw.starts_with("..."))
            && matches!(c.at(3), ' ' | '\t' | '\n')
        {
            let start = c.at(0) == '-';
            if start && (started || ended || !out.is_empty()) {
                return Err(c.err(0, "a second document is not supported"));
            }
            if !start && !started && out.is_empty() {
                return Err(c.err(0, "document end `...` before any document"));
            }
            started |= start;
            ended |= !start;
            c.end(3, "content on the `---` or `...` line is not supported")?;
            continue;
        }
        if ended {
            return Err(c.err(0, "content after the document end `...` is not supported"));
        }
        if c.at(0) == '%' {
            return Err(c.err(0, "directives (`%YAML`, `%TAG`) are not supported"));
        }
        let (key, _, ke) = c.scalar(0)?;
        let k = c.spaces(ke);
        if c.at(k) != ':' || !matches!(c.at(k + 1), ' ' | '\t' | '\n') {
            return Err(c.err(
                k,
                "expected `: ` after the key (each line must be `key: value`)",
            ));
        }
        if k > 1024 {
            return Err(c.err(0, "keys longer than 1024 characters are not supported"));
        }
        if c.at(k + 1) == '\t' {
            return Err(c.err(k + 1, TAB));
        }
        let v = c.spaces(k + 1);
        let (value, plain, ve, value_col) = if matches!(c.at(v), '\n' | '#') {
            (String::new(), true, k + 1, k + 2)
        } else {
            let (s, p, e) = c.scalar(v)?;
            (s, p, e, v + 1)
        };
        if plain && c.at(c.spaces(ve)) == ':' {
            return Err(c.err(
                c.spaces(ve),
                "`: ` inside a plain value is not supported (nested mapping?); quote the value",
            ));
        }
        c.end(ve, "unexpected text after the quoted value")?;
        if let Some(f) = out.iter().find(|e| e.key == key) {
            return Err(c.err(
                0,
                &format!(
                    "duplicate key {:?} (first at line {}, column {})",
                    key, f.line, f.col
                ),
            ));
        }
        out.push(Entry {
            key,
            value,
            plain,
            line: n + 1,
            col: 1,
            value_col,
        });
    }
    Ok(out)
}
