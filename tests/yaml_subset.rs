//! The job file's YAML subset (src/config/yaml.rs): what it refuses and
//! where, that what it accepts reads exactly as PyYAML's BaseLoader reads it,
//! that what it refuses of PyYAML's flat maps is one of the deliberate
//! refusals listed in src/config/yaml.rs, and that no input makes it panic.
//!
//! The PyYAML comparison runs one `python3` for everything and needs PyYAML
//! (`pip install pyyaml`); CI installs it.

use std::io::Write;
use std::process::{Command, Stdio};
use workflow_runner::config::yaml::{parse, Entry};
#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

/// Refused inputs: the text, the expected line and column, and a fragment of
/// the message.
const REFUSED: &[(&str, usize, usize, &str)] = &[
    // Structure outside the subset.
    ("a:\n  b: c", 2, 3, "indented line: nested mappings"),
    ("a: b\n  c", 2, 3, "indented line"),
    (
        "a: 'x\n  y'",
        1,
        4,
        "unterminated quoted scalar (multi-line",
    ),
    ("a: \"x\\\n  y\"", 1, 4, "unterminated quoted scalar"),
    (" a: 1\n b: 2", 1, 2, "indented line"),
    ("a: 1\nb\n", 2, 2, "expected `: ` after the key"),
    ("a: 1\nb c", 2, 4, "expected `: `"),
    ("a:b", 1, 4, "expected `: `"),
    ("a:#b", 1, 5, "expected `: `"),
    ("\"a\":b", 1, 4, "expected `: `"),
    ("'a'x: 1", 1, 4, "expected `: `"),
    ("a #b: c", 1, 3, "expected `: `"),
    ("- a", 1, 1, "block sequences (`- item`) are not supported"),
    ("a:\n- b", 2, 1, "block sequences"),
    ("a: - b", 1, 4, "block sequences"),
    ("a: -", 1, 4, "block sequences"),
    (
        "a: [b]",
        1,
        4,
        "flow sequences (`[a, b]`) are not supported",
    ),
    ("[a]: b", 1, 1, "flow sequences"),
    (
        "a: {b: c}",
        1,
        4,
        "flow mappings (`{a: b}`) are not supported",
    ),
    ("{a: b}", 1, 1, "flow mappings"),
    ("a: &x y", 1, 4, "anchors (`&name`) are not supported"),
    ("&x a: b", 1, 1, "anchors"),
    ("a: *x", 1, 4, "aliases (`*name`) are not supported"),
    ("a: !x y", 1, 4, "tags (`!tag`, `!!str`) are not supported"),
    ("a: !!str y", 1, 4, "tags"),
    ("!!str a: b", 1, 1, "tags"),
    (
        "a: |\n  x",
        1,
        4,
        "block scalars (`|`, `>`) are not supported",
    ),
    ("a: >-\n  x", 1, 4, "block scalars"),
    (
        "? a\n: b",
        1,
        1,
        "explicit keys (`? key`) are not supported",
    ),
    ("a: ? b", 1, 4, "explicit keys"),
    (": b", 1, 1, "`: ` without a key before it is not supported"),
    ("a: : b", 1, 4, "`: ` without a key"),
    (
        "a: b: c",
        1,
        5,
        "`: ` inside a plain value is not supported",
    ),
    ("a: b:", 1, 5, "`: ` inside a plain value"),
    ("a: http://x: 1", 1, 12, "`: ` inside a plain value"),
    (
        "a: @x",
        1,
        4,
        "a plain scalar cannot start with `@` (quote the value)",
    ),
    ("a: `x", 1, 4, "cannot start with ```"),
    ("a: %x", 1, 4, "cannot start with `%`"),
    ("a: ,x", 1, 4, "cannot start with `,`"),
    ("a: ]", 1, 4, "cannot start with `]`"),
    ("a: }", 1, 4, "cannot start with `}`"),
    ("@a: b", 1, 1, "cannot start with `@`"),
    // Documents and directives.
    (
        "%YAML 1.2\n---\na: 1",
        1,
        1,
        "directives (`%YAML`, `%TAG`) are not supported",
    ),
    (
        "a: 1\n---\nb: 2",
        2,
        1,
        "a second document is not supported",
    ),
    ("---\n---", 2, 1, "a second document"),
    ("---\n---\n", 2, 1, "a second document"),
    ("---\r\n--- # again\r\n", 2, 1, "a second document"),
    ("# c\n---\n\n---\na: 1\n", 4, 1, "a second document"),
    ("---\na: 1\n...\n---\n", 4, 1, "a second document"),
    (
        "a: 1\n...\nb: 2",
        3,
        1,
        "content after the document end `...` is not supported",
    ),
    ("a: 1\n...\nb: 2\n", 3, 1, "content after the document end"),
    (
        "a: 1\n... # end\n# c\n\n...\nb: 2",
        6,
        1,
        "content after the document end",
    ),
    ("---\n...\n'b': 2", 3, 1, "content after the document end"),
    (
        "a: 1\r\n...\r\nb: 2\r\n",
        3,
        1,
        "content after the document end",
    ),
    ("...\n", 1, 1, "document end `...` before any document"),
    ("# c\n...", 2, 1, "before any document"),
    (
        "--- a: 1",
        1,
        5,
        "content on the `---` or `...` line is not supported",
    ),
    ("a: 1\n... x", 2, 5, "content on the `---` or `...` line"),
    ("---#x\na: 1", 1, 6, "expected `: `"),
    // Quoted scalars.
    ("a: \"x", 1, 4, "unterminated quoted scalar"),
    ("a: 'x''", 1, 4, "unterminated quoted scalar"),
    ("a: \"x\\", 1, 4, "unterminated quoted scalar"),
    ("'a: 1", 1, 1, "unterminated quoted scalar"),
    ("a: 'b' c", 1, 8, "unexpected text after the quoted value"),
    (
        "a: \"b\": c",
        1,
        7,
        "unexpected text after the quoted value",
    ),
    ("a: 'b'#c", 1, 7, "a comment needs a space before `#`"),
    ("a: \"b\"#c", 1, 7, "a comment needs a space before `#`"),
    ("a: \"\\q\"", 1, 5, "invalid escape `\\q`"),
    ("a: \"\\'\"", 1, 5, "invalid escape `\\'`"),
    ("a: \"\\x4\"", 1, 8, "escape `\\x` needs 2 hex digits"),
    ("a: \"\\u12g4\"", 1, 9, "escape `\\u` needs 4 hex digits"),
    (
        "a: \"\\U0001F60\"",
        1,
        14,
        "escape `\\U` needs 8 hex digits",
    ),
    (
        "a: \"\\ud800\"",
        1,
        5,
        "not a Unicode scalar value (surrogates",
    ),
    ("a: \"\\uDFFF\"", 1, 5, "surrogates"),
    ("a: \"\\U00110000\"", 1, 5, "not a Unicode scalar value"),
    ("a: \"\\UFFFFFFFF\"", 1, 5, "not a Unicode scalar value"),
    // Whitespace and characters.
    (
        "a:\tb",
        1,
        3,
        "tab characters are only supported inside quoted scalars and comments",
    ),
    ("a: b\t", 1, 5, "tab characters"),
    ("a: b\t# c", 1, 5, "tab characters"),
    ("a: b\tc", 1, 5, "tab characters"),
    ("\ta: b", 1, 1, "tab characters"),
    ("a\t: b", 1, 2, "tab characters"),
    ("a: 'b'\t", 1, 7, "tab characters"),
    ("---\t\na: b", 1, 4, "tab characters"),
    ("a: 1\n\t\n", 2, 1, "tab characters"),
    (
        "a: x\u{1}",
        1,
        5,
        "non-printable character U+0001 is not allowed",
    ),
    ("a: 'x\u{0}'", 1, 6, "U+0000"),
    ("a: x\u{7f}", 1, 5, "U+007F"),
    ("a: \"\u{9f}\"", 1, 5, "U+009F"),
    ("a: \u{fffe}", 1, 4, "U+FFFE"),
    ("# \u{1b}[0m\na: 1", 1, 3, "U+001B"),
    (
        "a: x\ry",
        1,
        5,
        "a carriage return is only supported in a CRLF line end",
    ),
    ("a: 1\rb: 2", 1, 5, "carriage return"),
    ("a: 1\r", 1, 5, "carriage return"),
    ("a: 1\n\r", 2, 1, "carriage return"),
    ("\r", 1, 1, "carriage return"),
    ("---\r", 1, 4, "carriage return"),
    ("a: 'x'\r", 1, 7, "carriage return"),
    ("a: 1\r\r\n", 1, 5, "carriage return"),
    ("a: 1 # c\r", 1, 9, "carriage return"),
    (
        "a: x\u{2028}y",
        1,
        5,
        "Unicode line breaks (U+0085, U+2028, U+2029) are not supported",
    ),
    ("a: 'x\u{85}y'", 1, 6, "Unicode line breaks"),
    ("a: 1 # x\u{2029}y", 1, 9, "Unicode line breaks"),
    (
        "a: x\u{feff}",
        1,
        5,
        "a byte order mark is only allowed at the start of the file",
    ),
    ("---\n\u{feff}a: 1", 2, 1, "byte order mark"),
    // Keys.
    (
        "a: 1\na: 2",
        2,
        1,
        "duplicate key \"a\" (first at line 1, column 1)",
    ),
    (
        "a: 1\nb: 2\n'a': 3",
        3,
        1,
        "duplicate key \"a\" (first at line 1, column 1)",
    ),
    ("\"\\x41\": 1\nA: 2", 2, 1, "duplicate key \"A\""),
    // Positions count characters, after a BOM and across CRLF.
    ("\u{feff}a", 1, 2, "expected `: `"),
    ("é: ü\r\nb: 1\r\n  c: 3\r\n", 3, 3, "indented line"),
    ("日本: 語: x", 1, 6, "`: ` inside a plain value"),
];

fn check_refusal(src: &[u8], line: usize, col: usize, frag: &str) {
    let shown = String::from_utf8_lossy(src);
    let err = match parse("job.yaml", src) {
        Ok(entries) => panic!("{shown:?} was accepted as {entries:?}"),
        Err(e) => e,
    };
    let loc = err.loc.clone().expect("refusal without a location");
    assert_eq!(
        (loc.path.as_str(), loc.line, loc.col),
        ("job.yaml", line, col),
        "{shown:?}: wrong place for {:?}",
        err.msg
    );
    assert!(
        err.msg.contains(frag),
        "{shown:?}: message {:?} lacks {frag:?}",
        err.msg
    );
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("job.yaml:{line}:{col}: ")),
        "{text}"
    );
    assert!(text.contains('^'), "no caret under the source line: {text}");
}

#[test]
fn refusals_are_placed_and_explained() {
    for &(src, line, col, frag) in REFUSED {
        check_refusal(src.as_bytes(), line, col, frag);
    }
    // Invalid UTF-8, placed at the first bad byte (the BOM takes no column).
    check_refusal(b"a: 1\nb: x\xffy", 2, 5, "invalid UTF-8");
    check_refusal(b"\xef\xbb\xbfa: \xc3", 1, 4, "invalid UTF-8");
    check_refusal(b"\xff\xfea\x00:\x00", 1, 1, "invalid UTF-8");
    check_refusal(b"a: \"\xed\xa0\x80\"", 1, 5, "invalid UTF-8");
    // YAML's 1024-character limit on an implicit key includes spaces before `:`.
    let long = format!("{}: 1", "k".repeat(1025));
    check_refusal(long.as_bytes(), 1, 1, "keys longer than 1024 characters");
    let long = format!("'{}' : 1", "k".repeat(1022));
    check_refusal(long.as_bytes(), 1, 1, "keys longer than 1024 characters");
    assert!(parse("j", format!("{}: 1", "k".repeat(1024)).as_bytes()).is_ok());
    assert!(parse("j", format!("{} : 1", "k".repeat(1023)).as_bytes()).is_ok());
}

#[test]
fn entries_carry_positions_and_style() {
    let src = "\u{feff}--- # job\r\nid: 42\r\n\r\n# comment\r\n'name':   \"x y\"  # c\r\nempty:\r\nnull: ~\r\ntilde_q: '~'\r\nè:  # nothing\r\n...\r\n";
    let got = parse("job.yaml", src.as_bytes()).unwrap();
    let e = |key: &str, value: &str, plain, line, value_col| Entry {
        key: key.into(),
        value: value.into(),
        plain,
        line,
        col: 1,
        value_col,
    };
    assert_eq!(
        got,
        vec![
            e("id", "42", true, 2, 5),
            e("name", "x y", false, 5, 11),
            e("empty", "", true, 6, 7),
            e("null", "~", true, 7, 7),
            e("tilde_q", "~", false, 8, 10),
            e("è", "", true, 9, 3),
        ]
    );
    assert_eq!(parse("j", b"").unwrap(), vec![]);
    assert_eq!(
        parse("j", b"\xef\xbb\xbf# only a comment\n\n---\n...\n...\n").unwrap(),
        vec![]
    );
    let esc = parse(
        "j",
        br#"k: "\0\a\b\t\	\n\v\f\r\e\ \"\/\\\N\_\L\P\x41\u00e9\U0001F600""#,
    )
    .unwrap();
    assert_eq!(
        esc[0].value,
        "\0\x07\x08\t\t\n\x0b\x0c\r\x1b \"/\\\u{85}\u{a0}\u{2028}\u{2029}Aé😀"
    );
}

/// Inputs inside the subset, each of which must be accepted and read as PyYAML
/// reads it.
const CORPUS: &[&str] = &[
    "a: b",
    "a:",
    "a:   ",
    "a: ~",
    "a: null",
    "a: true",
    "a: 012",
    "a: 0x1F",
    "a: 1e3",
    "a: ''",
    "a: \"\"",
    "a: 'it''s'",
    "a: ''''",
    "a: 'x'''",
    "a: '#not a comment'",
    "a: \"#\" # a comment",
    "a: x#y",
    "a: x #y",
    "a: x  #  y",
    "a: x #",
    "a: x   ",
    "a:    x",
    "a: x  y  z",
    "url: https://x:1/y",
    "a: x:y",
    "a: a:b:c",
    "a: ::x",
    "a: :x",
    "a: -x",
    "a: --",
    "a: ---",
    "a: ...",
    "a: ?x",
    "a: x?",
    "a: x-",
    "a: -1",
    "a: x - y",
    "a: x ? y",
    "a: x[y]{z},w",
    "a: x]",
    "a: x&y*z!w|v>u",
    "a: x & y ! z",
    "a: 100%",
    "a: a@b",
    "a: a`b",
    "a: x'y\"z",
    "a: \\n is not an escape here",
    "a: 'c:\\dir\\'",
    r#"a: "\0\a\b\t\	\n\v\f\r\e\ \"\/\\\N\_\L\P""#,
    r#"a: "\x41\x7e\xff\x00\x85""#,
    r#"a: "\u00e9\u20AC\uFFFF\ufeff""#,
    r#"a: "\U0001F600\U0010FFFF\U00000041""#,
    r#"a: "'" "#,
    r#"a: '"'"#,
    r#"a: "\\n""#,
    "a: 'tab\there'",
    "a: \"tab\there\"",
    "a: ' lead and trail '",
    "a: \" \"",
    "\"quoted key\": v",
    "'single key': v",
    r#""k\tk": v"#,
    "'': empty key",
    "\"\": e",
    "a b c: d e f",
    "a : b",
    "'a'   : b",
    "\"a\" :  'b'  ",
    "-x: 1",
    "?x: 1",
    ":x: 1",
    "?: q",
    "-: d",
    ":: c",
    "---x: 1",
    "...x: 1",
    "a#b: c",
    "k[0]: v",
    "k,k: v",
    "k{}: v",
    "<<: merge",
    "=: eq",
    "~: tilde",
    "é: ü",
    "日本: 語",
    "emoji: 😀",
    "nbsp: \u{a0}x\u{a0}",
    "ideographic: \u{3000}",
    "key_with-dash.and/slash: 1",
    "a: b # comment with \t tab, 'quotes', : colons, # hashes",
    "# only a comment",
    "",
    "\n\n",
    "   \n",
    "---",
    "---\n",
    "--- \n...",
    "--- # c\na: 1\n... # end\n# after\n...\n",
    "# before\n\n---\na: 1",
    "\u{feff}a: 1",
    "\u{feff}---\na: 1",
    "\u{feff}",
    "a: 1\r\nb: 2\r\n",
    "a: 1\r\n# c\r\n\r\nb: 'x'\r\n",
    "a: 1\nb: 2\r\nc: 3",
    "a: 1\n  # indented comment\nb: 2",
    "a:\n  # indented comment\nb: 2",
    "a: 1\n   \nb: 2",
    "a: 'x' # c",
    "a: \"x\"   ",
    "a: 1\nb: 1\nc: 1",
    "A: 1\na: 2",
    "a: 1\n'b': 2\n\"c\": 3\n'a b': 4",
];

/// Refused on purpose although PyYAML reads a flat map of strings: an example
/// of each, with a fragment of our message. Keep in step with the header of
/// src/config/yaml.rs.
const DELIBERATE: &[(&str, &str)] = &[
    ("a: 1\na: 2", "duplicate key"),
    (" a: 1\n b: 2", "indented line"),
    ("a: b\n  c", "indented line"),
    ("a: b\n\n  c", "indented line"),
    ("a: 'x\n  y'", "multi-line"),
    ("a: \"x\\\n  y\"", "multi-line"),
    ("{a: b, c: d}", "flow mappings"),
    ("a: &x y", "anchors"),
    ("&x a: y", "anchors"),
    ("a: !t y", "tags"),
    ("a: !!str y", "tags"),
    ("a: |\n  x", "block scalars"),
    ("a: >\n  x", "block scalars"),
    ("%YAML 1.1\n---\na: 1", "directives"),
    ("--- !!map\na: 1", "on the `---` or `...` line"),
    ("--- &m\na: 1", "on the `---` or `...` line"),
    ("? a\n: b", "explicit keys"),
    ("a: 'x'#c", "space before `#`"),
    ("a: \"x\"#c", "space before `#`"),
    ("a: 1\rb: 2", "carriage return"),
    ("a: 1\r", "carriage return"),
    ("a: 1\n\r", "carriage return"),
    ("a: \"x\u{2028}y\"", "Unicode line breaks"),
    ("a: 'x\u{85}y'", "Unicode line breaks"),
    ("---\n\u{feff}a: 1", "byte order mark"),
    ("a: x\u{feff}y", "byte order mark"),
    ("a: \"\\ud800\"", "surrogates"),
];

/// Message fragments of the deliberate refusals above.
const DELIBERATE_FRAGMENTS: &[&str] = &[
    "duplicate key",
    "indented line",
    "multi-line",
    "flow mappings",
    "anchors",
    "tags",
    "block scalars",
    "directives",
    "on the `---` or `...` line",
    "explicit keys",
    "space before `#`",
    "carriage return",
    "Unicode line breaks",
    "byte order mark",
    "surrogates",
];

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Our reading in the form the Python side prints: `map` and hex `key:value`
/// pairs in order, or None if refused.
fn ours(src: &[u8]) -> Result<String, String> {
    match parse("t.yaml", src) {
        Ok(entries) => Ok(entries.iter().fold("map".to_string(), |s, e| {
            s + &format!(" {}:{}", hex(e.key.as_bytes()), hex(e.value.as_bytes()))
        })),
        Err(e) => Err(e.msg.clone()),
    }
}

const PY: &str = r#"
import sys
try:
    import yaml
except ImportError:
    sys.exit(3)
enc = lambda s: s.encode("utf-8", "surrogatepass").hex()
out = []
for line in sys.stdin:
    try:
        d = yaml.load(bytes.fromhex(line.strip()), Loader=yaml.BaseLoader)
    except Exception as e:  # ValueError and OverflowError too, for some escapes
        out.append("err " + type(e).__name__)
        continue
    if d is None:
        out.append("none")
    elif isinstance(d, str):
        out.append("str " + enc(d))
    elif isinstance(d, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in d.items()):
        out.append("map" + "".join(" %s:%s" % (enc(k), enc(v)) for k, v in d.items()))
    else:
        out.append("other " + type(d).__name__)
sys.stdout.write("\n".join(out) + "\n")
"#;

/// PyYAML's readings of `inputs`, from one python3 process; `None` when
/// python3 or PyYAML is missing outside CI (a fresh machine with only Rust
/// and git still passes `cargo test`; CI installs PyYAML and insists).
fn pyyaml(inputs: &[Vec<u8>]) -> Option<Vec<String>> {
    const HOW: &str = "this test needs python3 with PyYAML: pip install pyyaml";
    let missing = |why: String| {
        if std::env::var_os("CI").is_some() {
            panic!("{why}; {HOW}");
        }
        println!("yaml agreement with PyYAML SKIPPED: {why}; {HOW}");
        None
    };
    let mut child = match Command::new("python3")
        .args(["-c", PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return missing(format!("cannot run python3 ({e})")),
    };
    let mut stdin = child.stdin.take().unwrap();
    let feed: String = inputs.iter().map(|i| hex(i) + "\n").collect();
    let writer = std::thread::spawn(move || stdin.write_all(feed.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    if out.status.code() == Some(3) {
        return missing("PyYAML is not installed".into());
    }
    assert!(out.status.success(), "python3 failed: {:?}", out.status);
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines.len(),
        inputs.len(),
        "python3 answered a different number of inputs"
    );
    Some(lines)
}

impl Rng {
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const FIRST: &[&str] = &[
    "a", "b", "k", "Z", "0", "9", "_", ".", "/", "~", "=", "<", "(", "é", "ß", "日", "😀",
    "\u{a0}", "-x", "?x", ":x", "--", "\\", "+", "$",
];
const PLAIN: &[&str] = &[
    "a", "b", "z", "0", "7", " ", " ", ":", "#", "-", "?", "'", "\"", "[", "]", "{", "}", ",", "&",
    "*", "!", "|", ">", "%", "@", "`", "~", "\\", "/", ".", "é", "😀", "\u{a0}", "=", "x:y", "a#b",
    "://",
];
const SINGLE: &[&str] = &[
    "a", "Z", " ", "''", "\t", "#", " #", ": ", "\"", "\\", "é", "😀", "-", "[", "{",
];
const DOUBLE: &[&str] = &[
    "a",
    " ",
    "'",
    "#",
    " #",
    ": ",
    "\t",
    "é",
    "😀",
    "\\0",
    "\\a",
    "\\b",
    "\\t",
    "\\\t",
    "\\n",
    "\\v",
    "\\f",
    "\\r",
    "\\e",
    "\\ ",
    "\\\"",
    "\\/",
    "\\\\",
    "\\N",
    "\\_",
    "\\L",
    "\\P",
    "\\x41",
    "\\xfF",
    "\\u00e9",
    "\\u263A",
    "\\U0001F600",
    "\\q",
    "\\x4",
    "\\ud800",
];
/// Things to splice into a generated document to push it out of the subset.
const NASTY: &[&str] = &[
    "\t", "  ", ": ", ":", " #", "#", "'", "\"", "\\", "- ", "? ", "[", "]", "{", "}", "&a ", "*a",
    "!t ", "!!str ", "|", ">", "%", "@", "`", ",", "\n", "\r", "\r\n", "\n  ", "\n- ", "\n---\n",
    "\n...\n", "---", "...", "\u{2028}", "\u{85}", "\u{feff}", "\\u", "~", "\n? ", "\n: ", "\u{1}",
];

fn scalar(r: &mut Rng) -> String {
    let mut s = String::new();
    match r.below(5) {
        0..=2 => {
            s += r.pick(FIRST);
            for _ in 0..r.below(10) {
                s += r.pick(PLAIN);
            }
        }
        3 => {
            s += "'";
            for _ in 0..r.below(8) {
                s += r.pick(SINGLE);
            }
            s += "'";
        }
        _ => {
            s += "\"";
            for _ in 0..r.below(8) {
                s += r.pick(DOUBLE);
            }
            s += "\"";
        }
    }
    s
}

fn document(r: &mut Rng) -> String {
    let nl = if r.chance(20) { "\r\n" } else { "\n" };
    let mut s = String::new();
    if r.chance(10) {
        s += "\u{feff}";
    }
    if r.chance(10) {
        s = s + "# header" + nl;
    }
    if r.chance(25) {
        s = s + "---" + if r.chance(30) { " # start" } else { "" } + nl;
    }
    for _ in 0..=r.below(6) {
        if r.chance(10) {
            s += nl;
        }
        if r.chance(8) {
            s = s + "# c" + nl;
        }
        s += &scalar(r);
        if r.chance(10) {
            s += " ";
        }
        s += ":";
        if !r.chance(10) {
            s += if r.chance(10) { "   " } else { " " };
            s += &scalar(r);
        }
        if r.chance(15) {
            s += "  ";
        }
        if r.chance(15) {
            s += " # trailing";
        }
        s += nl;
    }
    if r.chance(15) {
        s = s + "..." + nl;
    }
    if r.chance(20) {
        s.truncate(s.trim_end_matches(['\r', '\n']).len());
    }
    s
}

/// `doc` with one to three characters deleted or snippets spliced in.
fn mutate(r: &mut Rng, doc: &str) -> String {
    let mut chars: Vec<char> = doc.chars().collect();
    for _ in 0..=r.below(3) {
        let at = r.below(chars.len() + 1);
        if r.chance(25) && at < chars.len() {
            chars.remove(at);
        } else {
            let bit = r.pick(NASTY);
            chars.splice(at..at, bit.chars());
        }
    }
    chars.into_iter().collect()
}

#[test]
fn agrees_with_pyyaml() {
    const N: usize = 600;
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let mut long = vec![
        format!("{}: 1", "k".repeat(1024)),
        format!("'{}' : 1", "k".repeat(1021)),
        format!("k: {}", "v ".repeat(2000)),
    ];
    long.extend(CORPUS.iter().map(|s| s.to_string()));
    let corpus = long;
    let clean: Vec<String> = (0..N).map(|_| document(&mut r)).collect();
    let noisy: Vec<String> = (0..N)
        .map(|_| {
            let d = document(&mut r);
            mutate(&mut r, &d)
        })
        .collect();
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    inputs.extend(corpus.iter().map(|s| s.as_bytes().to_vec()));
    inputs.extend(DELIBERATE.iter().map(|(s, _)| s.as_bytes().to_vec()));
    inputs.extend(REFUSED.iter().map(|(s, ..)| s.as_bytes().to_vec()));
    inputs.extend(clean.iter().chain(&noisy).map(|s| s.as_bytes().to_vec()));
    let Some(theirs) = pyyaml(&inputs) else {
        return;
    };
    let same =
        |mine: &str, py: &str| mine == py || (mine == "map" && (py == "none" || py == "str "));

    let (corpus_py, rest) = theirs.split_at(corpus.len());
    for (src, py) in corpus.iter().zip(corpus_py) {
        match ours(src.as_bytes()) {
            Ok(mine) => assert!(same(&mine, py), "{src:?}: we read {mine}, PyYAML {py}"),
            Err(e) => panic!("{src:?} is inside the subset but was refused: {e}"),
        }
    }
    let (deliberate_py, rest) = rest.split_at(DELIBERATE.len());
    for ((src, frag), py) in DELIBERATE.iter().zip(deliberate_py) {
        assert!(
            py.starts_with("map "),
            "{src:?}: PyYAML no longer reads it as a flat map: {py}"
        );
        match ours(src.as_bytes()) {
            Ok(mine) => panic!("{src:?} should be refused, was read as {mine}"),
            Err(e) => assert!(e.contains(frag), "{src:?}: {e:?} lacks {frag:?}"),
        }
    }
    let mut accepted = [0, 0];
    let generated = REFUSED
        .iter()
        .map(|(s, ..)| s.to_string())
        .chain(clean)
        .chain(noisy);
    for (n, (src, py)) in generated.zip(rest).enumerate() {
        match ours(src.as_bytes()) {
            Ok(mine) => {
                assert!(same(&mine, py), "{src:?}: we read {mine}, PyYAML {py}");
                accepted[usize::from(n >= REFUSED.len() + N)] += 1;
            }
            // A refusal of a flat map of strings must be a deliberate one.
            Err(e) if py.starts_with("map") => assert!(
                DELIBERATE_FRAGMENTS.iter().any(|f| e.contains(f)),
                "{src:?}: refused ({e}) but PyYAML reads {py}; \
                 accept it or list it as deliberate"
            ),
            Err(_) => {}
        }
    }
    eprintln!("generated inputs accepted (clean of {N}, noisy of {N}): {accepted:?}");
    // Keep the generator useful: plenty accepted, plenty refused.
    assert!(
        accepted[0] > 250 && accepted[1] > 100,
        "accepted (clean, noisy): {accepted:?}"
    );
    assert!(
        accepted[1] < 450,
        "too few refusals among noisy inputs: {accepted:?}"
    );
}

#[test]
fn never_panics_on_mutated_bytes() {
    let mut r = Rng(0x2545_F491_4F6C_DD1D);
    let mut seeds: Vec<Vec<u8>> = CORPUS.iter().map(|s| s.as_bytes().to_vec()).collect();
    seeds.extend(REFUSED.iter().map(|(s, ..)| s.as_bytes().to_vec()));
    seeds.extend((0..200).map(|_| document(&mut r).into_bytes()));
    const BYTES: &[u8] = b"\x00\t\n\r \"#'-.:?[\\]{|}\x7f\x80\xbf\xc3\xed\xef\xbb\xf0\xf4\xff";
    for round in 0..20_000 {
        let mut b = seeds[round % seeds.len()].clone();
        for _ in 0..=r.below(4) {
            let at = r.below(b.len() + 1);
            let byte = if r.chance(50) {
                BYTES[r.below(BYTES.len())]
            } else {
                r.next() as u8
            };
            match r.below(3) {
                0 if at < b.len() => b[at] = byte,
                1 if at < b.len() => {
                    b.remove(at);
                }
                _ => b.insert(at, byte),
            }
        }
        let lines = b.split(|&c| c == b'\n').count();
        match parse("m.yaml", &b) {
            Ok(entries) => {
                for e in entries {
                    assert!(e.line >= 1 && e.line <= lines && e.col == 1 && e.value_col > 1);
                }
            }
            Err(e) => {
                let loc = e.loc.clone().expect("refusal without a location");
                assert!(
                    loc.line >= 1 && loc.line <= lines && loc.col >= 1,
                    "{b:?}: {loc:?}"
                );
                assert!(!e.msg.is_empty());
            }
        }
    }
}
