//! What a person sees when a KDL file is wrong: each error's message, its
//! `path:line:col`, the quoted line with its caret, and the hints for KDL 1
//! habits. Then the parser's promise never to panic or run away, checked on
//! mutated copies of the suite's inputs and on hostile shapes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use workflow_runner::error::{Error, Kind};
use workflow_runner::plan::kdl::{parse, Number, Value};

fn err(src: &str) -> Error {
    match parse("job.kdl", src) {
        Ok(doc) => panic!("accepted {src:?} as {doc:?}"),
        Err(e) => e,
    }
}

/// Message, line and column of the error for `src`.
fn at(src: &str) -> (String, usize, usize) {
    let e = err(src);
    assert_eq!(e.kind, Kind::Input, "{e}");
    let loc = e.loc.clone().expect("a KDL error has a location");
    assert_eq!(loc.path, "job.kdl");
    (e.headline().to_string(), loc.line, loc.col)
}

fn assert_at(src: &str, msg_part: &str, line: usize, col: usize) {
    let (msg, l, c) = at(src);
    assert!(
        msg.contains(msg_part),
        "for {src:?}: message {msg:?} lacks {msg_part:?}"
    );
    assert_eq!((l, c), (line, col), "for {src:?}: {msg}");
}

#[test]
fn display_has_location_caret_and_hint() {
    let e = err("build {\n    cache true\n}\n");
    assert_eq!(
        e.to_string(),
        concat!(
            "job.kdl:2:11: `true` cannot be a bare string\n",
            "        cache true\n",
            "              ^\n",
            "    hint: KDL 2 writes booleans and null with a `#`: #true, #false, #null; for the string, quote it"
        )
    );
}

#[test]
fn kdl1_keywords_get_hints() {
    for (src, word) in [
        ("n true", "true"),
        ("n x=false", "false"),
        ("n null", "null"),
        ("false", "false"),
    ] {
        let e = err(src);
        assert!(e.msg.contains(&format!("`{word}`")), "{e}");
        assert!(
            detail(&e)
                .contains("hint: KDL 2 writes booleans and null with a `#`: #true, #false, #null"),
            "{e}"
        );
    }
    // As a property key too: `null=1` is not a string key.
    let e = err("n null=1");
    assert!(detail(&e).contains("#null"), "{e}");
    let e = err("n inf");
    assert!(detail(&e).contains("#inf, #-inf and #nan"), "{e}");
}

#[test]
fn kdl1_raw_strings_get_hints() {
    for src in ["n r\"raw\"", "n r#\"raw\"#", "n k=r##\"a\"##", "r\"x\""] {
        let e = err(src);
        assert!(e.msg.contains("raw strings are KDL 1 syntax"), "{e}");
        assert!(
            detail(&e).contains("hint: KDL 2 writes raw strings as #\"...\"#"),
            "{e}"
        );
    }
    assert_at("a {\n  b r#\"x\"#\n}", "KDL 1", 2, 5);
    // A node or argument named r is fine when spaced.
    assert!(parse("t", "r \"arg\" r #\"raw\"#").is_ok());
}

#[test]
fn caret_is_under_the_column() {
    let e = err("node 1 2\n\tchild \"a\\qb\"\n");
    assert_eq!(e.loc.as_ref().map(|l| (l.line, l.col)), Some((2, 10)));
    assert!(
        detail(&e).starts_with("\n    \tchild \"a\\qb\"\n    \t        ^"),
        "{:?}",
        detail(&e)
    );
}

#[test]
fn strings() {
    assert_at("n \"abc", "unterminated string", 1, 3);
    assert_at("n \"ab\nc\"", "cannot span lines", 1, 6);
    assert_at("n \"a\\qb\"", "invalid escape `\\q`", 1, 5);
    assert_at("n \"\\/\"", "`\\/` is not an escape", 1, 4);
    assert_at("n \"\\u{D800}\"", "Unicode scalar value", 1, 4);
    assert_at("n \"\\u{110000}\"", "Unicode scalar value", 1, 4);
    assert_at("n \"\\u{1234567}\"", "1 to 6 hex digits", 1, 4);
    assert_at("n \"\\u{}\"", "1 to 6 hex digits", 1, 4);
    assert_at("n #\"abc\"", "unterminated string", 1, 3);
    assert_at("n ##\"abc\"#", "unterminated string", 1, 3);
    assert_at("n #\"a\nb\"#", "cannot span lines", 1, 6);
    assert_at("n #x", "unknown keyword `#x`", 1, 3);
    assert_at("n foo#bar", "expected a space before `#`", 1, 6);
}

#[test]
fn multi_line_strings() {
    assert_at("n \"\"\"one line\"\"\"", "must start a new line", 1, 6);
    assert_at("n #\"\"\"#", "must start a new line", 1, 7);
    assert_at(
        "n \"\"\"\n  a\n b\n  \"\"\"",
        "does not start with the indentation",
        3,
        1,
    );
    assert_at(
        "n \"\"\"\n  a\n\t b\n  \"\"\"",
        "does not start with the indentation",
        3,
        1,
    );
    assert_at("n \"\"\"\n  a\n  b\"\"\"", "must be on its own line", 3, 4);
    assert_at(
        "n \"\"\"\n  a\n  b\\\n  \"\"\"",
        "must be on its own line",
        4,
        3,
    );
    assert_at(
        "n \"\"\"\n\\s a\n  \"\"\"",
        "does not start with the indentation",
        2,
        1,
    );
    assert_at("x\nn \"\"\"\n  a\n", "unterminated multi-line string", 2, 3);
    let doc = parse("t", "n \"\"\"\n    a\n\n  b \\\n   c\\n\n  \"\"\"").unwrap();
    assert_eq!(
        doc.nodes[0].entries[0].value,
        Value::String("  a\n\nb c\n".into())
    );
}

#[test]
fn numbers() {
    assert_at("n 1.0.0", "invalid number `1.0.0`", 1, 3);
    assert_at("n 0x", "invalid number `0x`", 1, 3);
    assert_at("n 0x_1", "invalid number", 1, 3);
    assert_at("n 0o8", "invalid number", 1, 3);
    assert_at("n 0b12", "out of range", 1, 3);
    assert_at("n 1._5", "after the `.`", 1, 3);
    assert_at("n 1e", "exponent", 1, 3);
    assert_at("n 1n", "invalid number `1n`", 1, 3);
    assert_at("n -2px", "invalid number", 1, 3);
    let e = err("n .5");
    assert!(
        e.msg.contains("digit before the `.`") && detail(&e).contains("hint: write 0.5"),
        "{e}"
    );
    let too_long = format!("n 0x{}", "f".repeat(5000));
    assert_at(&too_long, "too many digits", 1, 3);

    let doc = parse(
        "t",
        "n 0xffffffffffffffffff -0b101 0o17 +7 -0 1_000 1.5e3 2E-2 #inf #-inf #nan",
    )
    .unwrap();
    let nums: Vec<Number> = doc.nodes[0]
        .entries
        .iter()
        .map(|e| match &e.value {
            Value::Number(n) => n.clone(),
            v => panic!("{v:?}"),
        })
        .collect();
    let int = |s: &str| Number::Int(s.into());
    let float = |s: &str| Number::Float(s.into());
    assert_eq!(
        nums,
        [
            int("4722366482869645213695"),
            int("-5"),
            int("15"),
            int("7"),
            int("0"),
            int("1000"),
            float("1.5E+3"),
            float("2E-2"),
            Number::Inf,
            Number::NegInf,
            Number::NaN
        ]
    );
    assert_eq!(int("-9223372036854775808").as_i64(), Some(i64::MIN));
    assert_eq!(int("9223372036854775808").as_i64(), None);
    assert_eq!(float("1.0").as_i64(), None);
    assert_eq!(float("1.5E+3").as_f64(), Some(1500.0));
}

/// Hex, octal and binary integers convert to decimal exactly, at every
/// length up to the longest allowed: checked against schoolbook long
/// multiplication, one digit at a time.
#[test]
fn radix_numbers_convert_exactly() {
    fn reference(digits: &str, radix: u32) -> String {
        // Little-endian decimal digits.
        let mut dec: Vec<u32> = Vec::new();
        for c in digits.chars().filter(|&c| c != '_') {
            let mut carry = c.to_digit(radix).unwrap();
            for d in dec.iter_mut() {
                let v = *d * radix + carry;
                *d = v % 10;
                carry = v / 10;
            }
            while carry > 0 {
                dec.push(carry % 10);
                carry /= 10;
            }
        }
        while dec.last() == Some(&0) {
            dec.pop();
        }
        if dec.is_empty() {
            return "0".into();
        }
        dec.iter()
            .rev()
            .map(|d| char::from(b'0' + *d as u8))
            .collect()
    }
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |below: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % below as u64) as usize
    };
    for (prefix, radix, alphabet) in [
        ("0x", 16, "0123456789abcdefABCDEF"),
        ("0o", 8, "01234567"),
        ("0b", 2, "01"),
    ] {
        let alphabet: Vec<char> = alphabet.chars().collect();
        for len in [1, 2, 6, 7, 8, 9, 10, 11, 29, 30, 31, 61, 200, 1000, 4096] {
            for round in 0..3 {
                let mut digits: String = (0..len).map(|_| alphabet[next(alphabet.len())]).collect();
                if round == 1 {
                    // The largest value of this length.
                    digits = alphabet[radix as usize - 1].to_string().repeat(len);
                }
                if round == 2 && (2..4096).contains(&len) {
                    digits.insert(1, '_');
                }
                let src = format!("n {prefix}{digits} -{prefix}{digits}");
                let shown = &src[..src.len().min(60)];
                let Ok(doc) = parse("t", &src) else {
                    panic!("{shown}... was refused");
                };
                let want = reference(&digits, radix);
                let neg = if want == "0" {
                    want.clone()
                } else {
                    format!("-{want}")
                };
                let got: Vec<&Value> = doc.nodes[0].entries.iter().map(|e| &e.value).collect();
                assert_eq!(
                    got,
                    [
                        &Value::Number(Number::Int(want)),
                        &Value::Number(Number::Int(neg))
                    ],
                    "{shown}"
                );
            }
        }
    }
}

#[test]
fn structure() {
    assert_at("n {\n  a\n", "this `{` is never closed", 1, 3);
    assert_at("a\n}\n", "unexpected `}`", 2, 1);
    assert_at("n \"a\"1", "expected a space before `1`", 1, 6);
    assert_at("n a=\"1\"b=2", "expected a space before `b`", 1, 8);
    assert_at("n {} x", "after the children block", 1, 6);
    assert_at("n {} {}", "only one children block", 1, 6);
    assert_at("n /-{} x", "after the children block", 1, 8);
    assert_at("n a\\b", "must end its line", 1, 4);
    assert_at("n [x]", "expected an argument or property, found `[`", 1, 3);
    assert_at(
        "n a=",
        "expected a value after `=`, found end of file",
        1,
        5,
    );
    assert_at(
        "n 1=2",
        "a property key must be a string, not a number",
        1,
        3,
    );
    assert_at("#true", "a node name must be a string, not a boolean", 1, 1);
    assert_at("{", "expected a node name, found `{`", 1, 1);
    assert_at("n /* x", "unterminated `/*` comment", 1, 3);
    assert_at("a;;", "expected a node name, found `;`", 1, 3);
}

#[test]
fn type_annotations() {
    assert_at("n ()1", "empty type annotation", 1, 3);
    assert_at("n ( )1", "empty type annotation", 1, 3);
    assert_at(
        "n (t)k=1",
        "property key cannot have a type annotation",
        1,
        3,
    );
    assert_at("n (t", "expected `)`", 1, 5);
    assert_at(
        "n (1)2",
        "a type annotation must be a string, not a number",
        1,
        4,
    );
    assert_at(
        "n (t)",
        "expected a value after the type annotation, found end of file",
        1,
        6,
    );
    assert_at("(t)\nn", "expected a node name, found end of line", 1, 4);
    assert_at("n (/-t)1", "expected a type name, found `/`", 1, 4);
}

#[test]
fn slashdash() {
    let msg = "`/-` must be followed by";
    assert_at("n /-", msg, 1, 3);
    assert_at("n a /-;", msg, 1, 5);
    assert_at("n {\n  /-\n}", msg, 2, 3);
    assert_at("/- /- n", msg, 1, 1);
    assert_at("n k= /-1", "expected a value after `=`, found `/`", 1, 6);
    assert_at(
        "n (t)/-1",
        "expected a value after the type annotation, found `/`",
        1,
        6,
    );
}

#[test]
fn disallowed_code_points() {
    let (msg, l, c) = at("// x\nn a\u{202e}b");
    assert_eq!(
        (msg.as_str(), l, c),
        ("the character U+202E is not allowed in KDL", 2, 4)
    );
    assert_at("n\u{7f}", "U+007F", 1, 2);
    assert_at("n \"\u{0}\"", "U+0000", 1, 4);
    let e = err("n \u{feff}a");
    assert!(
        detail(&e).contains("byte order mark may only be the very first"),
        "{e}"
    );
    // Comments are no exception.
    assert_at("n /* \u{200e} */", "U+200E", 1, 6);
    assert!(parse("t", "\u{feff}n").is_ok());
    assert!(parse("t", "n \"\\u{202e}\"").is_ok());
}

#[test]
fn nesting_is_bounded() {
    let ok = format!("{}{}", "n {".repeat(256), "}".repeat(256));
    assert_eq!(parse("t", &ok).map(|d| d.nodes.len()).ok(), Some(1));
    let deep = "n {".repeat(257);
    assert_at(&deep, "nested more than 256 deep", 1, 1 + 3 * 256 + 2);
    // Far past the limit: an error, not a stack overflow.
    assert!(parse("t", &"n {".repeat(200_000)).is_err());
    assert!(parse("t", &"/-n {".repeat(200_000)).is_err());
    // Comments nest with a counter, so any depth is fine.
    let comment = format!("n {}{} 1", "/*".repeat(100_000), "*/".repeat(100_000));
    assert_eq!(
        parse("t", &comment).map(|d| d.nodes[0].entries.len()).ok(),
        Some(1)
    );
}

#[test]
fn positions_count_chars_and_every_newline() {
    // BOM skipped; CRLF, CR, NEL, FF, LS, PS and VT each end a line; columns
    // count chars, not bytes.
    let src = "\u{feff}a 1\r\nb\r\u{e9}\u{e9} k=2\u{85}c\u{c}(t)d\u{2028}e\u{2029}f\u{b}g {\n  h \"x\" \\\n    \"y\"\n}";
    let doc = parse("t", src).unwrap();
    let pos: Vec<(&str, usize, usize)> = doc
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.line, n.col))
        .collect();
    let want = [
        ("a", 1, 1),
        ("b", 2, 1),
        ("\u{e9}\u{e9}", 3, 1),
        ("c", 4, 1),
        ("d", 5, 4),
        ("e", 6, 1),
        ("f", 7, 1),
        ("g", 8, 1),
    ];
    assert_eq!(pos, want);
    let k = &doc.nodes[2].entries[0];
    assert_eq!((k.key.as_deref(), k.line, k.col), (Some("k"), 3, 4));
    let h = &doc.nodes[7].children[0];
    assert_eq!((h.line, h.col), (9, 3));
    let cols: Vec<(usize, usize)> = h.entries.iter().map(|e| (e.line, e.col)).collect();
    assert_eq!(cols, [(9, 5), (10, 5)]);
    // Errors count lines the same way, and quote the right line.
    let e = err("a\rb\u{85}c 1.x");
    assert_eq!(e.loc.as_ref().map(|l| (l.line, l.col)), Some((3, 3)));
    assert!(
        detail(&e).starts_with("\n    c 1.x\n      ^"),
        "{:?}",
        detail(&e)
    );
}

#[test]
fn entries_and_props() {
    let doc = parse("t", "(t)n 1 k=(u8)2 \"a b\"=#null /- x k=3 {\n c; d\n}").unwrap();
    let n = &doc.nodes[0];
    assert_eq!((n.ty.as_deref(), n.name.as_str()), (Some("t"), "n"));
    assert_eq!(n.entries.len(), 4);
    assert_eq!(n.entries[1].ty.as_deref(), Some("u8"));
    assert_eq!(n.entries[2].key.as_deref(), Some("a b"));
    assert_eq!(n.entries[2].value, Value::Null);
    assert_eq!(
        n.prop("k").map(|e| &e.value),
        Some(&Value::Number(Number::Int("3".into())))
    );
    assert_eq!(
        n.children
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["c", "d"]
    );
    assert_eq!(Value::Bool(true).type_name(), "boolean");
    assert_eq!(Value::Null.type_name(), "null");
    assert_eq!(n.entries[0].value.type_name(), "number");
    assert_eq!(n.entries[2].value.type_name(), "null");
    assert_eq!(Value::String(String::new()).type_name(), "string");
}

/// The suite's inputs; `None` (the caller skips) when the suite is absent
/// outside CI, so a lone clone still passes `cargo test`.
fn suite_inputs() -> Option<Vec<(String, String)>> {
    let dir = match std::env::var_os("KDL_SUITE_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/kdl-suite"),
    }
    .join("input");
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) => {
            let why = format!(
                "cannot read the KDL suite at {} ({e}); set KDL_SUITE_DIR to point elsewhere",
                dir.display()
            );
            if std::env::var_os("CI").is_some() {
                panic!("{why}");
            }
            println!("{why}: SKIPPED");
            return None;
        }
    };
    let mut out: Vec<(String, String)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((name, text))
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no inputs in {}", dir.display());
    Some(out)
}

/// Parses without letting a panic escape; returns the panic as a failure line.
fn survives(label: &str, src: &str) -> Option<String> {
    match catch_unwind(AssertUnwindSafe(|| parse("fuzz.kdl", src))) {
        Ok(_) => None,
        Err(_) => Some(format!("{label}: panicked on {src:?}")),
    }
}

#[test]
fn never_panics_on_truncated_inputs() {
    let Some(inputs) = suite_inputs() else {
        return;
    };
    let picks = [
        "all_node_fields.kdl",
        "escaped_whitespace.kdl",
        "multiline_string_whitespace_only.kdl",
        "multiline_raw_string_containing_quotes.kdl",
        "raw_string_arg.kdl",
        "slashdash_multiple_child_blocks.kdl",
        "nested_multiline_block_comment.kdl",
        "unicode_silly.kdl",
        "hex_int.kdl",
        "parse_all_arg_types.kdl",
    ];
    let mut failures = Vec::new();
    let mut runs = 0;
    for (name, text) in inputs.iter().filter(|(n, _)| picks.contains(&n.as_str())) {
        for (k, _) in text.char_indices().chain([(text.len(), ' ')]) {
            runs += 1;
            failures.extend(survives(name, &text[..k]));
        }
    }
    assert!(runs > 100, "too few truncations ran: {runs}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn never_panics_on_mutated_inputs() {
    // Bytes that steer the parser into its corners, plus the start of a
    // multi-byte char so that lossy decoding makes odd code points too.
    const PICKS: &[u8] = b"\"\\#/*-{}()=;\n\r \t0xeE._u+\x00\x7f\xe2\xc2";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut failures = Vec::new();
    let mut runs = 0;
    let Some(inputs) = suite_inputs() else {
        return;
    };
    for (name, text) in inputs {
        for _ in 0..12 {
            let mut b = text.clone().into_bytes();
            for _ in 0..1 + next() % 3 {
                let at = (next() % (b.len() as u64 + 1)) as usize;
                let byte = match next() % 3 {
                    0 => next() as u8,
                    _ => PICKS[(next() % PICKS.len() as u64) as usize],
                };
                match next() % 4 {
                    0 if at < b.len() => b[at] = byte,
                    1 if at < b.len() => {
                        b.remove(at);
                    }
                    2 => {
                        let end = (at + 1 + (next() % 8) as usize).min(b.len());
                        let chunk = b[at.min(end)..end].to_vec();
                        b.splice(at..at, chunk);
                    }
                    _ => b.insert(at, byte),
                }
            }
            runs += 1;
            failures.extend(survives(&name, &String::from_utf8_lossy(&b)));
        }
    }
    assert!(runs >= 3000, "only {runs} mutations ran");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn hostile_shapes_finish() {
    let big = [
        format!("n {}", "a=1 ".repeat(100_000)),
        format!("n \"{}\"", "\\u{41}".repeat(100_000)),
        format!("n \"\"\"\n{}  \"\"\"", "  x\n".repeat(100_000)),
        format!("n {}", "1".repeat(100_000)),
        format!("n 0b{}", "1".repeat(4096)),
        // Each of the longest numbers allowed costs the same again.
        format!("n{}", format!(" 0x{}", "f".repeat(4096)).repeat(64)),
        "/-".repeat(100_000),
        "\\\n".repeat(100_000),
        format!("n{}", " \\".repeat(100_000)),
    ];
    for src in &big {
        let start = std::time::Instant::now();
        assert!(survives("hostile", src).is_none());
        assert!(
            start.elapsed().as_secs() < 10,
            "too slow on {}",
            &src[..40.min(src.len())]
        );
    }
}

/// What an error adds after its first line: the quoted source and hints.
fn detail(e: &Error) -> &str {
    &e.msg[e.headline().len()..]
}
