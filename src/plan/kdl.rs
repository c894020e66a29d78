//! KDL 2.0 parser: the text of a job or workflow file becomes a `Document`,
//! or an input error at `path:line:col` that quotes the offending line.
//!
//! Hand-written and dependency-free because the runner is downloaded at every
//! VM boot: one recursive-descent pass over chars, no generics.
//! Input is hostile as far as this module cares: nothing here may panic
//! (release builds abort), and nesting is bounded so the stack is too.

use crate::error::{Error, Result};
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub nodes: Vec<Node>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub ty: Option<String>,
    pub name: String,
    /// Arguments and properties in source order. A repeated property key is
    /// kept each time; the spec says the rightmost wins, as `prop` does.
    pub entries: Vec<Entry>,
    /// Empty when the node has no children block (or an empty one).
    pub children: Vec<Node>,
    pub line: usize,
    pub col: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// `Some` for a property.
    pub key: Option<String>,
    pub ty: Option<String>,
    pub value: Value,
    pub line: usize,
    pub col: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    String(String),
    Number(Number),
    Bool(bool),
    Null,
}

/// Numbers keep their exact text, so no integer or float is ever rounded: a
/// config value is passed on as written, whatever its size.
#[derive(Clone, Debug, PartialEq)]
pub enum Number {
    /// Decimal digits with an optional leading `-`, no leading zeros, any
    /// size; hex, octal and binary are converted.
    Int(String),
    /// Digits as written without `_`, exponent as `E+N`/`E-N`: `-1.50E+3`.
    Float(String),
    Inf,
    NegInf,
    NaN,
}

impl Number {
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Number::Int(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Number::Int(s) | Number::Float(s) => s.parse().ok(),
            Number::Inf => Some(f64::INFINITY),
            Number::NegInf => Some(f64::NEG_INFINITY),
            Number::NaN => Some(f64::NAN),
        }
    }
}

/// KDL syntax: `12`, `1.5E+3`, `#inf`.
impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Number::Int(s) | Number::Float(s) => s,
            Number::Inf => "#inf",
            Number::NegInf => "#-inf",
            Number::NaN => "#nan",
        })
    }
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Number(_) => "number",
            Value::Bool(_) => "boolean",
            Value::Null => "null",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

impl Node {
    /// The property `key`; the rightmost one when it is repeated.
    pub fn prop(&self, key: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.key.as_deref() == Some(key))
    }
}

/// Children blocks nest by recursion; this keeps hostile input off the end
/// of the stack.
const MAX_DEPTH: usize = 256;

/// Hex, octal and binary are converted to decimal in time quadratic in their
/// length; real configs never come close to this many digits.
const MAX_RADIX_DIGITS: usize = 4096;

const KEYWORD_HINT: &str = "KDL 2 writes booleans and null with a `#`: #true, #false, #null; \
     for the string, quote it";

/// `src` as `Error::with_source` (which splits on LF) must see it to quote
/// the line KDL counts: KDL's other line breaks (CR, NEL, VT, FF, LS, PS)
/// become LF, CRLF stays one break, and a leading BOM, which the parser
/// skips, goes.
pub fn lf_only(src: &str) -> String {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let mut out = String::with_capacity(src.len());
    let mut prev = ' ';
    for c in src.chars() {
        if !(prev == '\r' && c == '\n') {
            out.push(if is_nl(c) { '\n' } else { c });
        }
        prev = c;
    }
    out
}

/// Parses a whole KDL 2 document; `path` only labels errors. Stops at the
/// first error.
pub fn parse(path: &str, src: &str) -> Result<Document> {
    let text = src.strip_prefix('\u{feff}').unwrap_or(src);
    let mut p = Parser {
        path,
        src,
        s: text.chars().collect(),
        i: 0,
        lines: vec![0],
        error: None,
    };
    let mut bad = None;
    for (k, &c) in p.s.iter().enumerate() {
        if is_nl(c) && !(c == '\r' && p.s.get(k + 1) == Some(&'\n')) {
            p.lines.push(k + 1);
        }
        if bad.is_none() && disallowed(c) {
            bad = Some((k, c));
        }
    }
    // Checked up front because the spec bans these everywhere, comments
    // included; it also frees '\0' to mean end of input below.
    let nodes = match bad {
        Some((k, c)) => Err(p.fail_fmt(
            k,
            format_args!("the character U+{:04X} is not allowed in KDL", c as u32),
            if c == '\u{feff}' {
                "a byte order mark may only be the very first character"
            } else {
                "inside a quoted string it can be written as an escape: \\u{...}"
            },
        )),
        None => p.nodes(0),
    };
    match p.error {
        Some(e) => Err(e),
        None => Ok(Document {
            nodes: nodes.unwrap_or_default(),
        }),
    }
}

/// What the parser's steps return. The parse stops at its first error, which
/// `Parser::fail` keeps in the parser, so only this empty marker travels up:
/// far less code to pass along than a whole `Error` at every `?`.
type Parse<T> = std::result::Result<T, Failed>;

/// The parse failed; the error is in `Parser::error`.
struct Failed;

struct Parser<'a> {
    path: &'a str,
    /// The whole input, BOM included, to quote in errors.
    src: &'a str,
    s: Vec<char>,
    i: usize,
    /// Index in `s` where each line starts, for line/col without tracking
    /// them on every step.
    lines: Vec<usize>,
    error: Option<Error>,
}

fn is_nl(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{85}' | '\u{b}' | '\u{c}' | '\u{2028}' | '\u{2029}'
    )
}

fn is_ws(c: char) -> bool {
    matches!(
        c,
        '\t' | ' ' | '\u{a0}' | '\u{1680}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    ) || ('\u{2000}'..='\u{200a}').contains(&c)
}

fn disallowed(c: char) -> bool {
    matches!(
        c,
        '\0'..='\u{8}'
            | '\u{e}'..='\u{1f}'
            | '\u{7f}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}'
    )
}

fn is_ident(c: char) -> bool {
    !(is_ws(c)
        || is_nl(c)
        || disallowed(c)
        || matches!(
            c,
            '(' | ')' | '{' | '}' | '[' | ']' | '/' | '\\' | '"' | '#' | ';' | '='
        ))
}

fn starts_digit(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_digit())
}

impl Parser<'_> {
    /// The char `k` past the current one; '\0' past the end. Not inlined:
    /// it is used everywhere, and a call is smaller than its bounds check.
    #[inline(never)]
    fn at(&self, k: usize) -> char {
        self.s.get(self.i + k).copied().unwrap_or('\0')
    }

    fn peek(&self) -> char {
        self.at(0)
    }

    fn starts(&self, lit: &str) -> bool {
        lit.chars().enumerate().all(|(k, c)| self.at(k) == c)
    }

    fn eat(&mut self, c: char) -> bool {
        let hit = self.peek() == c;
        if hit {
            self.i += 1;
        }
        hit
    }

    /// Steps over one char, or over CRLF, which is a single newline.
    fn bump_nl(&mut self) {
        self.i += if self.starts("\r\n") { 2 } else { 1 };
    }

    fn pos(&self, at: usize) -> (usize, usize) {
        let line = self.lines.partition_point(|&s| s <= at).max(1);
        let start = self.lines.get(line - 1).copied().unwrap_or(0);
        (line, at.saturating_sub(start) + 1)
    }

    /// Records the error at char `at`, with a hint unless `hint` is empty;
    /// for `Err(self.fail(..))`.
    fn fail(&mut self, at: usize, msg: &str, hint: &str) -> Failed {
        let (line, col) = self.pos(at);
        let mut e = Error::at(self.path, line, col, msg).with_source(&lf_only(self.src));
        if !hint.is_empty() {
            e = e.with_hint(hint);
        }
        self.error = Some(e);
        Failed
    }

    /// `fail` with a formatted message: the `String` is made and dropped
    /// here rather than at each caller.
    fn fail_fmt(&mut self, at: usize, msg: fmt::Arguments, hint: &str) -> Failed {
        self.fail(at, &fmt::format(msg), hint)
    }

    /// Fails with `before` followed by what is at `at`.
    fn found(&mut self, at: usize, before: &str) -> Failed {
        let mut msg = String::from(before);
        match self.s.get(at).copied().unwrap_or('\0') {
            '\0' => msg += "end of file",
            c if is_nl(c) => msg += "end of line",
            c => {
                msg.push('`');
                msg.push(c);
                msg.push('`');
            }
        }
        self.fail(at, &msg, "")
    }

    fn nodes(&mut self, depth: usize) -> Parse<Vec<Node>> {
        let mut out = Vec::new();
        loop {
            self.line_space()?;
            if self.peek() == '}' && depth == 0 {
                return Err(self.fail(self.i, "unexpected `}`: no children block is open", ""));
            }
            if matches!(self.peek(), '\0' | '}') {
                return Ok(out);
            }
            let dash = self.slashdash()?;
            self.node(depth, &mut out, !dash)?;
        }
    }

    fn slashdash(&mut self) -> Parse<bool> {
        if !self.starts("/-") {
            return Ok(false);
        }
        let at = self.i;
        self.i += 2;
        self.line_space()?;
        if matches!(self.peek(), '\0' | '}' | ';') || self.starts("/-") {
            return Err(self.fail(
                at,
                "`/-` must be followed by the node, argument, property or children block it comments out",
                "",
            ));
        }
        Ok(true)
    }

    /// Whitespace where newlines are allowed: between nodes, after `/-`.
    fn line_space(&mut self) -> Parse<()> {
        loop {
            if is_nl(self.peek()) {
                self.bump_nl();
            } else if self.starts("//") {
                self.line_comment();
            } else if !self.node_space()? {
                return Ok(());
            }
        }
    }

    /// Whitespace inside a node: spaces, `/* */`, and `\` line continuations.
    /// Returns whether there was any, since entries must be separated.
    fn node_space(&mut self) -> Parse<bool> {
        let start = self.i;
        loop {
            self.ws()?;
            if self.peek() != '\\' {
                return Ok(self.i != start);
            }
            let at = self.i;
            self.i += 1;
            self.ws()?;
            if self.starts("//") {
                self.line_comment();
            } else if is_nl(self.peek()) {
                self.bump_nl();
            } else if self.peek() != '\0' {
                return Err(self.fail(at, "a line continuation `\\` must end its line", ""));
            }
        }
    }

    fn ws(&mut self) -> Parse<()> {
        loop {
            if is_ws(self.peek()) {
                self.i += 1;
            } else if self.starts("/*") {
                self.block_comment()?;
            } else {
                return Ok(());
            }
        }
    }

    fn line_comment(&mut self) {
        while !is_nl(self.peek()) && self.peek() != '\0' {
            self.i += 1;
        }
        if self.peek() != '\0' {
            self.bump_nl();
        }
    }

    // A counter rather than recursion, so nesting depth costs no stack.
    fn block_comment(&mut self) -> Parse<()> {
        let at = self.i;
        let mut depth = 1usize;
        self.i += 2;
        loop {
            if self.starts("/*") {
                depth += 1;
                self.i += 2;
            } else if self.starts("*/") {
                depth -= 1;
                self.i += 2;
                if depth == 0 {
                    return Ok(());
                }
            } else if self.peek() == '\0' {
                return Err(self.fail(at, "unterminated `/*` comment", ""));
            } else {
                self.i += 1;
            }
        }
    }

    /// A value that must be a string: a node name or a type.
    fn text(&mut self, what: &str, expected: &str, at: usize) -> Parse<String> {
        let v = self.value(expected)?;
        self.string_of(v, what, at)
    }

    /// The string `v` holds; else an error calling it `what`.
    fn string_of(&mut self, v: Value, what: &str, at: usize) -> Parse<String> {
        match v {
            Value::String(s) => Ok(s),
            v => Err(self.fail_fmt(
                at,
                format_args!("{what} must be a string, not a {}", v.type_name()),
                "",
            )),
        }
    }

    /// A node, added to `out` unless it is slashdashed. Adding it here
    /// rather than returning it saves copying it out of a `Result`.
    fn node(&mut self, depth: usize, out: &mut Vec<Node>, keep: bool) -> Parse<()> {
        let ty = self.ty()?;
        let (line, col) = self.pos(self.i);
        let name = self.text("a node name", "expected a node name, found ", self.i)?;
        let mut node = Node {
            ty,
            name,
            entries: Vec::new(),
            children: Vec::new(),
            line,
            col,
        };
        let (mut any_block, mut real_block) = (false, false);
        loop {
            let spaced = self.node_space()?;
            let c = self.peek();
            if c == '\0' || c == '}' {
                break;
            }
            if c == ';' || is_nl(c) {
                self.bump_nl();
                break;
            }
            if self.starts("//") {
                self.line_comment();
                break;
            }
            let at = self.i;
            let dash = self.slashdash()?;
            if self.peek() == '{' {
                if real_block && !dash {
                    return Err(self.fail(at, "a node can have only one children block", ""));
                }
                let kids = self.children(depth)?;
                any_block = true;
                if !dash {
                    real_block = true;
                    node.children = kids;
                }
                continue;
            }
            // The grammar puts children last, slashdashed blocks included.
            if any_block {
                return Err(self.found(
                    at,
                    "expected `;` or a newline after the children block, found ",
                ));
            }
            if !dash && !spaced {
                return Err(self.found(at, "expected a space before "));
            }
            self.entry(&mut node.entries, !dash)?;
        }
        if keep {
            // A list grows four at a time at first: most nodes hold one or
            // two entries and a block of a few nodes, and a file of many
            // small nodes would otherwise cost three times its memory.
            node.entries.shrink_to_fit();
            node.children.shrink_to_fit();
            out.push(node);
        }
        Ok(())
    }

    fn children(&mut self, depth: usize) -> Parse<Vec<Node>> {
        let at = self.i;
        if depth >= MAX_DEPTH {
            // MAX_DEPTH, spelled out: no formatting for a constant.
            return Err(self.fail(at, "children blocks nested more than 256 deep", ""));
        }
        self.i += 1;
        let kids = self.nodes(depth + 1)?;
        if !self.eat('}') {
            return Err(self.fail(at, "this `{` is never closed", ""));
        }
        Ok(kids)
    }

    /// An argument or property, added to `out` unless it is slashdashed.
    fn entry(&mut self, out: &mut Vec<Entry>, keep: bool) -> Parse<()> {
        let at = self.i;
        let (line, col) = self.pos(at);
        let mut ty = self.ty()?;
        let mut value = self.value(if ty.is_some() {
            "expected a value after the type annotation, found "
        } else {
            "expected an argument or property, found "
        })?;
        let after = self.i;
        self.node_space()?;
        let mut key = None;
        if self.eat('=') {
            if ty.is_some() {
                return Err(self.fail(
                    at,
                    "a property key cannot have a type annotation",
                    "annotate the value instead: key=(type)value",
                ));
            }
            key = Some(self.string_of(value, "a property key", at)?);
            self.node_space()?;
            ty = self.ty()?;
            value = self.value("expected a value after `=`, found ")?;
        } else {
            self.i = after;
        }
        if keep {
            out.push(Entry {
                key,
                ty,
                value,
                line,
                col,
            });
        }
        Ok(())
    }

    /// An optional `(type)` and the space after it.
    fn ty(&mut self) -> Parse<Option<String>> {
        if !self.eat('(') {
            return Ok(None);
        }
        let at = self.i - 1;
        self.node_space()?;
        if self.peek() == ')' {
            return Err(self.fail(at, "empty type annotation", "quote an empty type: (\"\")"));
        }
        let name = self.text("a type annotation", "expected a type name, found ", at + 1)?;
        self.node_space()?;
        if !self.eat(')') {
            return Err(self.found(self.i, "expected `)` to close the type annotation, found "));
        }
        self.node_space()?;
        Ok(Some(name))
    }

    /// A value; `expected` starts the error for a missing one.
    fn value(&mut self, expected: &str) -> Parse<Value> {
        let at = self.i;
        let mut hashes = 0;
        while self.at(hashes) == '#' {
            hashes += 1;
        }
        if self.at(hashes) == '"' {
            self.i += hashes;
            return Ok(Value::String(self.string(at, hashes)?));
        }
        if hashes > 0 {
            self.i += 1;
        }
        let word = self.word();
        let keyword = match word.as_str() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            "null" => Some(Value::Null),
            "inf" => Some(Value::Number(Number::Inf)),
            "-inf" => Some(Value::Number(Number::NegInf)),
            "nan" => Some(Value::Number(Number::NaN)),
            _ => None,
        };
        if hashes > 0 {
            return match keyword {
                Some(v) => Ok(v),
                None => Err(self.fail_fmt(at, format_args!("unknown keyword `#{word}`"), "")),
            };
        }
        if word.is_empty() {
            return Err(self.found(at, expected));
        }
        let unsigned = word.strip_prefix(['+', '-']).unwrap_or(&word);
        if starts_digit(unsigned) {
            return match number(&word) {
                Ok(n) => Ok(Value::Number(n)),
                Err(why) => Err(self.fail_fmt(
                    at,
                    format_args!("invalid number `{word}`: {why}"),
                    &format!("if it is meant as a string, quote it: \"{word}\""),
                )),
            };
        }
        if unsigned.strip_prefix('.').is_some_and(starts_digit) {
            return Err(self.fail_fmt(
                at,
                format_args!("invalid number `{word}`: it needs a digit before the `.`"),
                "write 0.5, not .5; quote it if it is a string",
            ));
        }
        if let Some(v) = keyword {
            return Err(self.fail_fmt(
                at,
                format_args!("`{word}` cannot be a bare string"),
                if !matches!(v, Value::Number(_)) {
                    KEYWORD_HINT
                } else {
                    "the float keywords are #inf, #-inf and #nan; for the string, quote it"
                },
            ));
        }
        if word == "r" && matches!(self.peek(), '"' | '#') {
            return Err(self.fail(
                at,
                "`r\"...\"` raw strings are KDL 1 syntax",
                "KDL 2 writes raw strings as #\"...\"#, with as many # on each side as needed",
            ));
        }
        Ok(Value::String(word))
    }

    fn word(&mut self) -> String {
        let start = self.i;
        while is_ident(self.peek()) {
            self.i += 1;
        }
        let mut w = String::new();
        push_all(&mut w, self.s.get(start..self.i).unwrap_or_default());
        w
    }

    fn closes(&self, from: usize, hashes: usize) -> bool {
        (from..from + hashes).all(|k| self.at(k) == '#')
    }

    /// A quoted string; `self.i` is at its first `"`, `at` at any `#` before.
    /// `hashes` > 0 makes it raw, closed by `"` and as many `#`.
    ///
    /// A multi-line string's dedent works on literal characters only, so
    /// each line's literal leading whitespace is counted as it is read: `\s`
    /// is not indentation, an escaped newline does not split lines, and `\`
    /// + whitespace is already gone.
    fn string(&mut self, at: usize, hashes: usize) -> Parse<String> {
        let multi = self.starts("\"\"\"");
        let quotes = if multi { 3 } else { 1 };
        self.i += quotes;
        if multi {
            if !is_nl(self.peek()) {
                return Err(self.fail(
                    self.i,
                    "a multi-line string must start a new line right after its opening \"\"\"",
                    "for a single-line string use one \" on each side",
                ));
            }
            self.bump_nl();
        }
        let mut buf: Vec<char> = Vec::new();
        // Per line ended so far, three numbers: where it starts in `buf` and
        // in the source, and how many literal whitespace chars it starts
        // with, or usize::MAX when that is all it holds (a blank line).
        let mut lines: Vec<usize> = Vec::new();
        let (mut start, mut line_at, mut ws, mut blank) = (0, self.i, 0, true);
        loop {
            let c = self.peek();
            if c == '\0' {
                let msg = if multi {
                    "unterminated multi-line string"
                } else {
                    "unterminated string"
                };
                return Err(self.fail(at, msg, ""));
            }
            if c == '"' && (!multi || self.starts("\"\"\"")) && self.closes(quotes, hashes) {
                break;
            }
            if is_nl(c) {
                if !multi {
                    return Err(self.fail(
                        self.i,
                        "a quoted string cannot span lines",
                        "write \\n, or use a multi-line string: \"\"\" on its own line",
                    ));
                }
                self.bump_nl();
                lines.push(start);
                lines.push(line_at);
                lines.push(if blank { usize::MAX } else { ws });
                buf.push('\n');
                (start, line_at, ws, blank) = (buf.len(), self.i, 0, true);
            } else if c == '\\' && hashes == 0 {
                // Escapes are not indentation, and a line with one is not blank.
                if let Some(e) = self.escape()? {
                    buf.push(e);
                    blank = false;
                }
            } else {
                if blank && is_ws(c) {
                    ws += 1;
                } else {
                    blank = false;
                }
                buf.push(c);
                self.i += 1;
            }
        }
        let close = self.i;
        self.i += quotes + hashes;
        let mut out = String::new();
        if !multi {
            push_all(&mut out, &buf);
            return Ok(out);
        }
        // The last line holds the indentation to remove from the others.
        if !blank {
            return Err(self.fail(
                close,
                "the closing \"\"\" of a multi-line string must be on its own line",
                "only whitespace may come before it on that line",
            ));
        }
        let prefix = buf.get(start..).unwrap_or_default();
        let mut k = 0;
        while let Some(&[from, at_line, lead]) = lines.get(k..k + 3) {
            // The line ends at its '\n', just before the next line's start.
            let to = lines.get(k + 3).copied().unwrap_or(start).saturating_sub(1);
            if k > 0 {
                out.push('\n');
            }
            k += 3;
            if lead == usize::MAX {
                continue;
            }
            let rest = from + prefix.len();
            if lead < prefix.len() || buf.get(from..rest) != Some(prefix) {
                return Err(self.fail(
                    at_line,
                    "this line of a multi-line string does not start with the indentation of its closing \"\"\"",
                    "every line must start with exactly the whitespace before the closing \"\"\"",
                ));
            }
            push_all(&mut out, buf.get(rest..to).unwrap_or_default());
        }
        Ok(out)
    }

    /// At a `\` in a quoted string: the character it stands for, or None
    /// for escaped whitespace, which is dropped.
    fn escape(&mut self) -> Parse<Option<char>> {
        let at = self.i;
        self.i += 1;
        let c = self.peek();
        if is_ws(c) || is_nl(c) {
            while is_ws(self.peek()) || is_nl(self.peek()) {
                self.i += 1;
            }
            return Ok(None);
        }
        if c == '\0' {
            return Err(self.fail(at, "unterminated string", ""));
        }
        self.i += 1;
        // Parallel lists, which compile smaller than a `match`.
        const NAMES: &[u8] = b"nrt\\\"bfs";
        const CHARS: &[u8] = b"\n\r\t\\\"\x08\x0c ";
        if let Some(k) = NAMES.iter().position(|&b| b as char == c) {
            return Ok(CHARS.get(k).map(|&b| b as char));
        }
        if c == 'u' {
            let mut v = 0u32;
            let mut n = 0;
            let mut ok = self.eat('{');
            while ok && n <= 6 {
                match self.peek().to_digit(16) {
                    Some(d) => v = v * 16 + d,
                    None => break,
                }
                n += 1;
                self.i += 1;
            }
            ok = ok && (1..=6).contains(&n) && self.eat('}');
            return match char::from_u32(v) {
                Some(c) if ok => Ok(Some(c)),
                _ => Err(self.fail(
                    at,
                    "`\\u{...}` needs 1 to 6 hex digits naming a Unicode scalar value",
                    "",
                )),
            };
        }
        Err(if c == '/' {
            self.fail(at, "`\\/` is not an escape in KDL 2", "write / as it is")
        } else {
            self.fail_fmt(
                at,
                format_args!("invalid escape `\\{c}`"),
                "the escapes are \\n \\r \\t \\\\ \\\" \\b \\f \\s \\u{hex}, and \\ before whitespace",
            )
        })
    }
}

fn push_all(out: &mut String, chars: &[char]) {
    for &c in chars {
        out.push(c);
    }
}

/// A bare word that starts like a number must be one.
fn number(word: &str) -> std::result::Result<Number, &'static str> {
    let (neg, s) = match word.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        all => (false, all),
    };
    let radix = match s {
        [b'0', b'x', ..] => 16,
        [b'0', b'o', ..] => 8,
        [b'0', b'b', ..] => 2,
        _ => 10,
    };
    // ASCII: an integer's decimal digits, maybe with leading zeros, or a
    // float's text.
    let mut out: Vec<u8> = Vec::new();
    // 0 in the integer part, 1 in the fraction, 2 in the exponent.
    let mut part = 0;
    if radix != 10 {
        let ds = s.get(2..).unwrap_or_default();
        // `to_digit(radix)` would bring a panic for a radix it cannot
        // know is valid.
        let digit = |c: &u8| (*c as char).to_digit(16).filter(|&d| d < radix);
        if ds.first().and_then(digit).is_none() {
            return Err("the digits must start right after the prefix");
        }
        if ds.len() > MAX_RADIX_DIGITS {
            return Err("too many digits");
        }
        // Little-endian limbs of nine decimal digits, so any size converts
        // exactly; each pass over them takes in as many digits as a u64
        // product allows, which keeps the longest number allowed cheap.
        const BASE: u64 = 1_000_000_000;
        let per = match radix {
            16 => 7,
            8 => 10,
            _ => 30,
        };
        let mut digits = ds.iter().filter(|&&c| c != b'_');
        let mut limbs: Vec<u64> = Vec::new();
        loop {
            let (mut chunk, mut scale) = (0u64, 1u64);
            for c in digits.by_ref().take(per) {
                let d = digit(c).ok_or("a digit is out of range for its base")?;
                chunk = chunk * u64::from(radix) + u64::from(d);
                scale *= u64::from(radix);
            }
            if scale == 1 {
                break;
            }
            let mut carry = chunk;
            for l in limbs.iter_mut() {
                let v = *l * scale + carry;
                *l = v % BASE;
                carry = v / BASE;
            }
            while carry > 0 {
                limbs.push(carry % BASE);
                carry /= BASE;
            }
        }
        // Least significant digit first, then turned around; the top limb's
        // leading zeros are dropped below like any others.
        for &limb in &limbs {
            let mut l = limb;
            for _ in 0..9 {
                out.push(b'0' + (l % 10) as u8);
                l /= 10;
            }
        }
        out.reverse();
    } else {
        // digit (digit | _)* in each part; the exponent's sign is explicit
        // in the output.
        let mut need_digit = true;
        let mut k = 0;
        while let Some(&c) = s.get(k) {
            k += 1;
            match c {
                b'0'..=b'9' => need_digit = false,
                b'_' if !need_digit => continue,
                b'.' if part == 0 && !need_digit => {
                    part = 1;
                    need_digit = true;
                }
                b'e' | b'E' if part < 2 && !need_digit => {
                    part = 2;
                    need_digit = true;
                    out.push(b'E');
                    match s.get(k) {
                        Some(&c @ (b'+' | b'-')) => {
                            k += 1;
                            out.push(c);
                        }
                        _ => out.push(b'+'),
                    }
                    continue;
                }
                _ => {
                    need_digit = true;
                    break;
                }
            }
            out.push(c);
        }
        if need_digit {
            return Err(match part {
                0 => "expected only digits and `_` before the `.` or exponent",
                1 => "expected digits after the `.`",
                _ => "expected digits in the exponent",
            });
        }
    }
    let lead = match part {
        0 => out.iter().take_while(|&&c| c == b'0').count(),
        _ => 0,
    };
    let mut text = String::new();
    match out.get(lead..) {
        Some(digits) if !digits.is_empty() => {
            if neg {
                text.push('-');
            }
            for &c in digits {
                text.push(c as char);
            }
        }
        // Only zeros: no sign on 0.
        _ => text.push('0'),
    }
    Ok(if part == 0 {
        Number::Int(text)
    } else {
        Number::Float(text)
    })
}
