//! KDL 2.0 parser: the text of a job or workflow file becomes a `Document`,
//! or an input error at `path:line:col` that quotes the offending line.
//!
//! Hand-written and dependency-free because the runner is downloaded at every
//! VM boot: one recursive-descent pass over chars, no tables, no generics.
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

/// Hex, octal and binary are converted to decimal in quadratic time; real
/// configs never come close to this many digits.
const MAX_RADIX_DIGITS: usize = 4096;

const KEYWORD_HINT: &str = "KDL 2 writes booleans and null with a `#`: #true, #false, #null; \
     for the string, quote it";

/// Parses a whole KDL 2 document; `path` only labels errors. Stops at the
/// first error.
pub fn parse(path: &str, src: &str) -> Result<Document> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let mut p = Parser {
        path,
        s: src.chars().collect(),
        i: 0,
        lines: vec![0],
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
    if let Some((k, c)) = bad {
        let e = p.err(
            k,
            &format!("the character U+{:04X} is not allowed in KDL", c as u32),
        );
        return Err(match c {
            '\u{feff}' => e.with_hint("a byte order mark may only be the very first character"),
            _ => e.with_hint("inside a quoted string it can be written as an escape: \\u{...}"),
        });
    }
    let nodes = p.nodes(0)?;
    if p.peek() == '}' {
        return Err(p.err(p.i, "unexpected `}`: no children block is open"));
    }
    Ok(Document { nodes })
}

struct Parser<'a> {
    path: &'a str,
    s: Vec<char>,
    i: usize,
    /// Index in `s` where each line starts, for line/col without tracking
    /// them on every step.
    lines: Vec<usize>,
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
    !(is_ws(c) || is_nl(c) || disallowed(c) || "(){}[]/\\\"#;=".contains(c))
}

fn describe(c: char) -> String {
    match c {
        '\0' => "end of file".into(),
        c if is_nl(c) => "end of line".into(),
        c => format!("`{c}`"),
    }
}

impl Parser<'_> {
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

    fn err(&self, at: usize, msg: &str) -> Error {
        let (line, col) = self.pos(at);
        // `with_source` splits lines on LF only; give it KDL's line breaks
        // (CR, NEL, FF, ...) as LF so the quoted line matches `line`.
        let mut src = String::with_capacity(self.s.len());
        for (k, &c) in self.s.iter().enumerate() {
            if !is_nl(c) {
                src.push(c);
            } else if !(c == '\r' && self.s.get(k + 1) == Some(&'\n')) {
                src.push('\n');
            }
        }
        Error::at(self.path, line, col, msg).with_source(&src)
    }

    fn nodes(&mut self, depth: usize) -> Result<Vec<Node>> {
        let mut out = Vec::new();
        loop {
            self.line_space()?;
            if matches!(self.peek(), '\0' | '}') {
                return Ok(out);
            }
            let dash = self.slashdash()?;
            let node = self.node(depth)?;
            if !dash {
                out.push(node);
            }
        }
    }

    fn slashdash(&mut self) -> Result<bool> {
        if !self.starts("/-") {
            return Ok(false);
        }
        let at = self.i;
        self.i += 2;
        self.line_space()?;
        if matches!(self.peek(), '\0' | '}' | ';') || self.starts("/-") {
            return Err(self.err(
                at,
                "`/-` must be followed by the node, argument, property or children block it comments out",
            ));
        }
        Ok(true)
    }

    /// Whitespace where newlines are allowed: between nodes, after `/-`.
    fn line_space(&mut self) -> Result<()> {
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
    fn node_space(&mut self) -> Result<bool> {
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
                return Err(self.err(at, "a line continuation `\\` must end its line"));
            }
        }
    }

    fn ws(&mut self) -> Result<()> {
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
    fn block_comment(&mut self) -> Result<()> {
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
                return Err(self.err(at, "unterminated `/*` comment"));
            } else {
                self.i += 1;
            }
        }
    }

    fn node(&mut self, depth: usize) -> Result<Node> {
        let ty = self.ty()?;
        let at = self.i;
        let (line, col) = self.pos(at);
        let name = match self.value("a node name")? {
            Value::String(s) => s,
            v => {
                let msg = format!("a node name must be a string, not a {}", v.type_name());
                return Err(self.err(at, &msg));
            }
        };
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
                return Ok(node);
            }
            if c == ';' || is_nl(c) {
                self.bump_nl();
                return Ok(node);
            }
            if self.starts("//") {
                self.line_comment();
                return Ok(node);
            }
            let at = self.i;
            let dash = self.slashdash()?;
            if self.peek() == '{' {
                if real_block && !dash {
                    return Err(self.err(at, "a node can have only one children block"));
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
                let msg = format!(
                    "expected `;` or a newline after the children block, found {}",
                    describe(c)
                );
                return Err(self.err(at, &msg));
            }
            if !dash && !spaced {
                return Err(self.err(at, &format!("expected a space before {}", describe(c))));
            }
            let e = self.entry()?;
            if !dash {
                node.entries.push(e);
            }
        }
    }

    fn children(&mut self, depth: usize) -> Result<Vec<Node>> {
        let at = self.i;
        if depth >= MAX_DEPTH {
            let msg = format!("children blocks nested more than {MAX_DEPTH} deep");
            return Err(self.err(at, &msg));
        }
        self.i += 1;
        let kids = self.nodes(depth + 1)?;
        if !self.eat('}') {
            return Err(self.err(at, "this `{` is never closed"));
        }
        Ok(kids)
    }

    fn entry(&mut self) -> Result<Entry> {
        let at = self.i;
        let (line, col) = self.pos(at);
        let ty = self.ty()?;
        let what = if ty.is_some() {
            "a value after the type annotation"
        } else {
            "an argument or property"
        };
        let value = self.value(what)?;
        let after = self.i;
        self.node_space()?;
        if !self.eat('=') {
            self.i = after;
            return Ok(Entry {
                key: None,
                ty,
                value,
                line,
                col,
            });
        }
        let key = match value {
            Value::String(s) if ty.is_none() => s,
            _ if ty.is_some() => {
                return Err(self
                    .err(at, "a property key cannot have a type annotation")
                    .with_hint("annotate the value instead: key=(type)value"))
            }
            v => {
                return Err(self.err(
                    at,
                    &format!("a property key must be a string, not a {}", v.type_name()),
                ))
            }
        };
        self.node_space()?;
        let ty = self.ty()?;
        let value = self.value("a value after `=`")?;
        Ok(Entry {
            key: Some(key),
            ty,
            value,
            line,
            col,
        })
    }

    /// An optional `(type)` and the space after it.
    fn ty(&mut self) -> Result<Option<String>> {
        if !self.eat('(') {
            return Ok(None);
        }
        let at = self.i - 1;
        self.node_space()?;
        if self.peek() == ')' {
            return Err(self
                .err(at, "empty type annotation")
                .with_hint("quote an empty type: (\"\")"));
        }
        let name = match self.value("a type name")? {
            Value::String(s) => s,
            v => {
                let msg = format!(
                    "a type annotation must be a string, not a {}",
                    v.type_name()
                );
                return Err(self.err(at + 1, &msg));
            }
        };
        self.node_space()?;
        if !self.eat(')') {
            let msg = format!(
                "expected `)` to close the type annotation, found {}",
                describe(self.peek())
            );
            return Err(self.err(self.i, &msg));
        }
        self.node_space()?;
        Ok(Some(name))
    }

    fn value(&mut self, what: &str) -> Result<Value> {
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
            let word = self.word();
            return Ok(match word.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                "inf" => Value::Number(Number::Inf),
                "-inf" => Value::Number(Number::NegInf),
                "nan" => Value::Number(Number::NaN),
                _ => return Err(self.err(at, &format!("unknown keyword `#{word}`"))),
            });
        }
        let word = self.word();
        if word.is_empty() {
            return Err(self.err(
                at,
                &format!("expected {what}, found {}", describe(self.peek())),
            ));
        }
        let unsigned = word.strip_prefix(['+', '-']).unwrap_or(&word);
        if unsigned.starts_with(|c: char| c.is_ascii_digit()) {
            return match number(&word) {
                Ok(n) => Ok(Value::Number(n)),
                Err(why) => Err(self
                    .err(at, &format!("invalid number `{word}`: {why}"))
                    .with_hint(&format!("if it is meant as a string, quote it: \"{word}\""))),
            };
        }
        if unsigned
            .strip_prefix('.')
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        {
            return Err(self
                .err(
                    at,
                    &format!("invalid number `{word}`: it needs a digit before the `.`"),
                )
                .with_hint("write 0.5, not .5; quote it if it is a string"));
        }
        match word.as_str() {
            "true" | "false" | "null" => {
                let msg = format!("`{word}` cannot be a bare string");
                Err(self.err(at, &msg).with_hint(KEYWORD_HINT))
            }
            "inf" | "-inf" | "nan" => Err(self
                .err(at, &format!("`{word}` cannot be a bare string"))
                .with_hint(
                    "the float keywords are #inf, #-inf and #nan; for the string, quote it",
                )),
            "r" if matches!(self.peek(), '"' | '#') => Err(self
                .err(at, "`r\"...\"` raw strings are KDL 1 syntax")
                .with_hint(
                    "KDL 2 writes raw strings as #\"...\"#, with as many # on each side as needed",
                )),
            _ => Ok(Value::String(word)),
        }
    }

    fn word(&mut self) -> String {
        let mut w = String::new();
        while is_ident(self.peek()) {
            w.push(self.peek());
            self.i += 1;
        }
        w
    }

    /// A quoted string; `self.i` is at its first `"`, `at` at any `#` before.
    /// `hashes` > 0 makes it raw, closed by `"` and as many `#`.
    fn string(&mut self, at: usize, hashes: usize) -> Result<String> {
        if self.starts("\"\"\"") {
            return self.multi_line(at, hashes);
        }
        self.i += 1;
        let mut s = String::new();
        loop {
            let c = self.peek();
            if c == '\0' {
                return Err(self.err(at, "unterminated string"));
            }
            if is_nl(c) {
                return Err(self
                    .err(self.i, "a quoted string cannot span lines")
                    .with_hint("write \\n, or use a multi-line string: \"\"\" on its own line"));
            }
            if c == '"' && self.closes(1, hashes) {
                self.i += 1 + hashes;
                return Ok(s);
            }
            if c == '\\' && hashes == 0 {
                s.extend(self.escape()?);
            } else {
                s.push(c);
                self.i += 1;
            }
        }
    }

    fn closes(&self, from: usize, hashes: usize) -> bool {
        (from..from + hashes).all(|k| self.at(k) == '#')
    }

    /// Dedent works on literal characters only, so escapes are kept apart
    /// (`false`) until then: `\s` is not indentation, an escaped newline
    /// does not split lines, and `\` + whitespace is already gone.
    fn multi_line(&mut self, at: usize, hashes: usize) -> Result<String> {
        self.i += 3;
        if !is_nl(self.peek()) {
            return Err(self
                .err(
                    self.i,
                    "a multi-line string must start a new line right after its opening \"\"\"",
                )
                .with_hint("for a single-line string use one \" on each side"));
        }
        self.bump_nl();
        let mut buf: Vec<(char, bool)> = Vec::new();
        let mut starts = vec![self.i];
        loop {
            let c = self.peek();
            if c == '\0' {
                return Err(self.err(at, "unterminated multi-line string"));
            }
            if self.starts("\"\"\"") && self.closes(3, hashes) {
                break;
            }
            if is_nl(c) {
                self.bump_nl();
                buf.push(('\n', true));
                starts.push(self.i);
            } else if c == '\\' && hashes == 0 {
                if let Some(e) = self.escape()? {
                    buf.push((e, false));
                }
            } else {
                buf.push((c, true));
                self.i += 1;
            }
        }
        let close = self.i;
        self.i += 3 + hashes;
        let lines: Vec<&[(char, bool)]> = buf.split(|&(c, lit)| lit && c == '\n').collect();
        let blank = |l: &[(char, bool)]| l.iter().all(|&(c, lit)| lit && is_ws(c));
        let (prefix, body) = lines
            .split_last()
            .map_or((&[][..], &[][..]), |(p, b)| (*p, b));
        let line_at = |k: usize| starts.get(k).copied().unwrap_or(at);
        if !blank(prefix) {
            return Err(self
                .err(
                    close,
                    "the closing \"\"\" of a multi-line string must be on its own line",
                )
                .with_hint("only whitespace may come before it on that line"));
        }
        let mut out = String::new();
        for (k, line) in body.iter().enumerate() {
            if k > 0 {
                out.push('\n');
            }
            if blank(line) {
                continue;
            }
            match line.strip_prefix(prefix) {
                Some(rest) => out.extend(rest.iter().map(|p| p.0)),
                None => {
                    return Err(self
                        .err(line_at(k), "this line of a multi-line string does not start with the indentation of its closing \"\"\"")
                        .with_hint("every line must start with exactly the whitespace before the closing \"\"\""))
                }
            }
        }
        Ok(out)
    }

    /// At a `\` in a quoted string: the character it stands for, or None
    /// for escaped whitespace, which is dropped.
    fn escape(&mut self) -> Result<Option<char>> {
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
            return Err(self.err(at, "unterminated string"));
        }
        self.i += 1;
        Ok(Some(match c {
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            '\\' => '\\',
            '"' => '"',
            'b' => '\u{8}',
            'f' => '\u{c}',
            's' => ' ',
            'u' => {
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
                match char::from_u32(v) {
                    Some(c) if ok => c,
                    _ => {
                        return Err(self.err(at, "`\\u{...}` needs 1 to 6 hex digits naming a Unicode scalar value"))
                    }
                }
            }
            '/' => return Err(self.err(at, "`\\/` is not an escape in KDL 2").with_hint("write / as it is")),
            _ => {
                return Err(self
                    .err(at, &format!("invalid escape `\\{c}`"))
                    .with_hint("the escapes are \\n \\r \\t \\\\ \\\" \\b \\f \\s \\u{hex}, and \\ before whitespace"))
            }
        }))
    }
}

/// A bare word that starts like a number must be one.
fn number(word: &str) -> std::result::Result<Number, &'static str> {
    let (neg, s) = match word.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, word.strip_prefix('+').unwrap_or(word)),
    };
    let radix = match s.get(..2) {
        Some("0x") => 16,
        Some("0o") => 8,
        Some("0b") => 2,
        _ => 10,
    };
    if radix != 10 {
        let ds = s.get(2..).unwrap_or("");
        if !ds.starts_with(|c: char| c.is_digit(radix)) {
            return Err("the digits must start right after the prefix");
        }
        if ds.len() > MAX_RADIX_DIGITS {
            return Err("too many digits");
        }
        // Little-endian base 10^9 limbs, so any size converts exactly.
        let mut limbs: Vec<u32> = vec![0];
        for c in ds.chars().filter(|&c| c != '_') {
            let mut carry = c
                .to_digit(radix)
                .ok_or("a digit is out of range for its base")? as u64;
            for l in limbs.iter_mut() {
                let v = *l as u64 * radix as u64 + carry;
                *l = (v % 1_000_000_000) as u32;
                carry = v / 1_000_000_000;
            }
            if carry > 0 {
                limbs.push(carry as u32);
            }
        }
        let mut out = String::new();
        if neg && limbs.iter().any(|&l| l != 0) {
            out.push('-');
        }
        let mut it = limbs.iter().rev();
        if let Some(top) = it.next() {
            out += &top.to_string();
        }
        for l in it {
            out += &format!("{l:09}");
        }
        return Ok(Number::Int(out));
    }
    let (mantissa, exp) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let int = digits(int).ok_or("expected only digits and `_` before the `.` or exponent")?;
    if frac.is_none() && exp.is_none() {
        let int = int.trim_start_matches('0');
        return Ok(Number::Int(match (neg, int) {
            (_, "") => "0".into(),
            (true, i) => format!("-{i}"),
            (false, i) => i.into(),
        }));
    }
    let mut out = String::from(if neg { "-" } else { "" });
    out += &int;
    if let Some(f) = frac {
        out.push('.');
        out += &digits(f).ok_or("expected digits after the `.`")?;
    }
    if let Some(e) = exp {
        let (sign, e) = match e.strip_prefix('-') {
            Some(rest) => ('-', rest),
            None => ('+', e.strip_prefix('+').unwrap_or(e)),
        };
        out.push('E');
        out.push(sign);
        out += &digits(e).ok_or("expected digits in the exponent")?;
    }
    Ok(Number::Float(out))
}

/// `digit (digit | _)*` without the underscores.
fn digits(s: &str) -> Option<String> {
    let ok = s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_digit() || c == '_');
    ok.then(|| s.chars().filter(|&c| c != '_').collect())
}
