//! Tests for the secret masker and the line splitter: every form of a matrix of
//! secrets, at every chunking, against an independent naive oracle.

use std::borrow::Cow;
use std::sync::Arc;
use workflow_runner::logs::mask::{LineSplitter, Masker};
#[path = "common/rng.rs"]
mod rng;
use rng::Rng;
#[path = "common/forms.rs"]
mod forms_oracle;
use forms_oracle::{b64, b64_core, json, pct};

impl Rng {
    fn bytes(&mut self, n: usize, alphabet: &[u8]) -> Vec<u8> {
        (0..n)
            .map(|_| alphabet[self.below(alphabet.len())])
            .collect()
    }
    /// Up to `max - 1` random bytes.
    fn some(&mut self, max: usize, alphabet: &[u8]) -> Vec<u8> {
        let n = self.below(max);
        self.bytes(n, alphabet)
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Every form the masker must hide for `secret`, derived independently.
fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut f = vec![secret.to_vec()];
    for line in secret.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() >= 4 {
            f.push(line.to_vec());
        }
    }
    f.extend((0..3).filter_map(|k| b64_core(secret, k)));
    for upper in [false, true] {
        f.push(pct(secret, upper));
        f.push(json(secret, false, upper));
        f.push(json(secret, true, upper));
    }
    f.sort();
    f.dedup();
    f
}

/// Naive masking: every occurrence of every form is covered, and each run of
/// covered bytes becomes one `***`.
fn oracle(text: &[u8], pats: &[Vec<u8>]) -> Vec<u8> {
    let mut cov = vec![false; text.len()];
    for p in pats {
        for i in 0..(text.len() + 1).saturating_sub(p.len()) {
            if text[i..].starts_with(p) {
                cov[i..i + p.len()].iter_mut().for_each(|c| *c = true);
            }
        }
    }
    let mut out = Vec::new();
    for (i, &b) in text.iter().enumerate() {
        if !cov[i] {
            out.push(b);
        } else if i == 0 || !cov[i - 1] {
            out.extend_from_slice(b"***");
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn long_secret() -> Vec<u8> {
    let mut r = Rng(0x5eed);
    r.bytes(
        300,
        b"abcdefghijklmnopqrstuvwxyz0123456789 !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    )
}

fn secrets() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        &b"hunter22"[..],
        b"pass word with spaces",
        b"quo\"te'd \"x\"",
        b"back\\slash\\",
        b"100%pure&more=yes",
        "pässwörd ✓ 🦀 ünïcödé".as_bytes(),
        b"first-line\nsecond-line",
        b"crlf-one\r\ncrlf-two\r\n",
        b"ab\ncd\nefgh",
        b"abcd",
        b"tab\tand\x01ctl\x1f\x08\x0c",
        b"a/b+c=d?e#f",
        b"\xff\xfeinvalid\xc3(",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect();
    v.push(long_secret());
    v
}

fn masker(secrets: &[Vec<u8>]) -> Masker {
    let mut m = Masker::new();
    for s in secrets {
        m.add(s).unwrap();
    }
    m.build();
    m
}

fn all_forms(secrets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut f: Vec<_> = secrets.iter().flat_map(|s| forms(s)).collect();
    f.sort();
    f.dedup();
    f
}

/// Runs `input` through a splitter fed in the given chunk sizes (cycled).
fn split(m: &Masker, max: usize, input: &[u8], sizes: &[usize]) -> Vec<(Vec<u8>, bool)> {
    let mut sp = LineSplitter::new(max);
    let mut out = Vec::new();
    let mut emit = |t: &[u8], c: bool| out.push((t.to_vec(), c));
    let mut rest = input;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(n.clamp(1, rest.len()));
        sp.push(now, m, &mut emit);
        rest = later;
    }
    sp.finish(m, &mut emit);
    sp.finish(m, &mut emit);
    out
}

fn assert_no_form(out: &[u8], pats: &[Vec<u8>], ctx: &str) {
    for p in pats {
        assert!(
            !contains(out, p),
            "{ctx}: form {:?} left in {:?}",
            String::from_utf8_lossy(p),
            String::from_utf8_lossy(out)
        );
    }
}

#[test]
fn masker_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Masker>();
    check::<LineSplitter>();
}

#[test]
fn refuses_short_and_empty_values() {
    let mut m = Masker::new();
    assert!(m.is_empty());
    for v in [&b""[..], b"a", b"abc", "é".as_bytes()] {
        let e = m.add(v).unwrap_err();
        assert!(!e.is_empty());
    }
    assert!(m.is_empty());
    assert!(matches!(m.mask(b"abc a abc"), Cow::Borrowed(_)));
    m.add(b"abcd").unwrap();
    m.add("ü€".as_bytes()).unwrap(); // 5 bytes, 2 chars: bytes count
    assert!(!m.is_empty());
    assert_eq!(&*m.mask(b"abc abcd abcde"), b"abc *** ***e");
    assert_eq!(&*m.mask("x ü€ y".as_bytes()), b"x *** y");
}

#[test]
fn debug_does_not_reveal_secrets() {
    let m = masker(&[b"topsecretvalue".to_vec()]);
    assert!(!format!("{m:?}").contains("topsecret"));
    let mut sp = LineSplitter::new(100);
    sp.push(b"held back: topsecretvalue", &m, &mut |_, _| {
        panic!("no line yet")
    });
    assert!(!format!("{sp:?}").contains("topsecret"));
}

#[test]
fn every_form_is_masked_in_context() {
    let secrets = secrets();
    let m = masker(&secrets);
    for s in &secrets {
        let fs = forms(s);
        assert!(fs.len() >= 3, "{s:?}");
        for f in &fs {
            for (pre, post) in [
                (&b""[..], &b""[..]),
                (b"log: ", b" end"),
                (b"xx", b"yy"),
                (b"=", b"\""),
                (b"", b"0"),
            ] {
                let text = [pre, f, post].concat();
                let out = m.mask(&text);
                assert_no_form(&out, &fs, "in context");
                assert!(contains(&out, b"***"));
                assert!(
                    out.starts_with(pre) && out.ends_with(post),
                    "{:?}",
                    String::from_utf8_lossy(&out)
                );
                let twice = [pre, f, f, post].concat();
                assert_eq!(&*m.mask(&twice), [pre, b"***", post].concat());
            }
        }
    }
}

#[test]
fn base64_at_every_alignment_inside_longer_base64() {
    let secrets = secrets();
    let m = masker(&secrets);
    for s in &secrets {
        for pre in [
            &b""[..],
            b"u",
            b"us",
            b"user:",
            b"Authorization: x",
            b"\xff\x00",
        ] {
            for post in [&b""[..], b"x", b"xy", b"xyz", b":tail-of-it"] {
                let enc = b64(&[pre, s, post].concat());
                let text = [b"Basic ", &enc[..], b" ok"].concat();
                let out = m.mask(&text);
                let core = b64_core(s, pre.len() % 3);
                if let Some(core) = &core {
                    assert!(contains(&text, core));
                    assert!(!contains(&out, core), "{s:?} {pre:?} {post:?}");
                    assert_eq!(out, oracle(&text, &all_forms(&secrets)));
                }
            }
        }
    }
}

#[test]
fn base64_cores_of_a_minimal_secret() {
    // base64("abcd") = YWJjZA==, base64("?abcd") = ?GFiY2Q=, base64("??abcd") = ??BhYmNk
    let cores: Vec<_> = (0..3).map(|k| b64_core(b"abcd", k)).collect();
    assert_eq!(
        cores,
        [
            Some(b"YWJjZ".to_vec()),
            Some(b"FiY2".to_vec()),
            Some(b"hYmNk".to_vec())
        ]
    );
    let m = masker(&[b"abcd".to_vec()]);
    for pre in [&b""[..], b"x", b"xy"] {
        let text = b64(&[pre, b"abcd"].concat());
        assert_eq!(m.mask(&text), oracle(&text, &forms(b"abcd")));
        assert!(contains(&m.mask(&text), b"***"));
    }
}

#[test]
fn matches_oracle_on_random_mixtures() {
    let secrets = secrets();
    let m = masker(&secrets);
    let pats = all_forms(&secrets);
    let mut r = Rng(42);
    for _ in 0..3000 {
        let mut text = Vec::new();
        for _ in 0..r.below(6) {
            match r.below(4) {
                0 => text.extend(r.some(12, ALNUM)),
                1 => text.extend(r.some(6, b" \"\\%\r\t\xff\xc3")),
                _ => {
                    let p = &pats[r.below(pats.len())];
                    // Whole forms, and also fragments that overlap other text.
                    let a = if r.below(3) == 0 { r.below(p.len()) } else { 0 };
                    let b = if r.below(3) == 0 {
                        a + r.below(p.len() - a + 1)
                    } else {
                        p.len()
                    };
                    text.extend_from_slice(&p[a..b]);
                }
            }
        }
        let out = m.mask(&text);
        assert_eq!(
            out,
            oracle(&text, &pats),
            "{:?}",
            String::from_utf8_lossy(&text)
        );
        if out == text {
            assert!(matches!(out, Cow::Borrowed(_)));
        }
    }
}

#[test]
fn clean_text_passes_unchanged() {
    let secrets = secrets();
    let m = masker(&secrets);
    let pats = all_forms(&secrets);
    let mut r = Rng(7);
    let all: Vec<u8> = (0..=255).collect();
    for i in 0..2000 {
        let alphabet = if i % 2 == 0 { &all[..] } else { ALNUM };
        let text = r.some(300, alphabet);
        if pats.iter().any(|p| contains(&text, p)) {
            continue;
        }
        assert!(matches!(m.mask(&text), Cow::Borrowed(t) if t == &text[..]));
    }
    let prose =
        b"The quick brown fox jumps over the lazy dog; hunter2 abc ab\xff\xfe \"quoted\" 100% pure";
    assert!(matches!(m.mask(prose), Cow::Borrowed(_)));
}

#[test]
fn overlapping_and_adjacent_secrets_merge() {
    let m = masker(&[
        b"abcdefgh".to_vec(),
        b"defghijk".to_vec(),
        b"abcd".to_vec(),
        b"secret".to_vec(),
    ]);
    assert_eq!(&*m.mask(b"xabcdefghijky"), b"x***y");
    assert_eq!(&*m.mask(b"abcdabcd"), b"***");
    assert_eq!(&*m.mask(b"abc abcd-abcd abcdefg"), b"abc ***-*** ***efg");
    assert_eq!(&*m.mask(b"secretsecret secretabcd"), b"*** ***");
    let m = masker(&[
        b"secret".to_vec(),
        b"secret-long".to_vec(),
        b"very-secret".to_vec(),
    ]);
    assert_eq!(&*m.mask(b"[secret-long]"), b"[***]");
    assert_eq!(&*m.mask(b"[secret-lo]"), b"[***-lo]");
    assert_eq!(&*m.mask(b"[very-secret-long]"), b"[***]");
    // A long match found last swallows the shorter spans found before it.
    let m = masker(&[b"bcde".to_vec(), b"fghi".to_vec(), b"abcdefghij".to_vec()]);
    assert_eq!(&*m.mask(b"<abcdefghij>"), b"<***>");
    assert_eq!(&*m.mask(b"<xbcdeyfghiz>"), b"<x***y***z>");
    assert_eq!(&*m.mask(b"<abcdefghi>"), b"<a***>");
}

#[test]
fn splitter_basics() {
    let m = masker(&[b"hunter22".to_vec()]);
    let lines = split(&m, 100, b"a\r\nb hunter22\n\n\r\nlast\xff\r", &[1000]);
    let want: Vec<(Vec<u8>, bool)> = vec![
        (b"a\r".to_vec(), true),
        (b"b ***".to_vec(), true),
        (b"".to_vec(), true),
        (b"\r".to_vec(), true),
        (b"last\xff\r".to_vec(), false),
    ];
    assert_eq!(lines, want);
    assert!(split(&m, 100, b"", &[1]).is_empty());
    assert_eq!(
        split(&m, 100, b"a\rb\r\r\n", &[1]),
        vec![(b"a\rb\r\r".to_vec(), true)]
    );
    assert_eq!(split(&m, 100, b"x\n", &[1]), vec![(b"x".to_vec(), true)]);
    assert_eq!(
        split(&Masker::new(), 3, b"abcdefg\n", &[2]),
        vec![
            (b"abc".to_vec(), false),
            (b"def".to_vec(), false),
            (b"g".to_vec(), true)
        ]
    );
    assert_eq!(
        split(&Masker::new(), 3, b"abcdef\n", &[1]),
        vec![(b"abc".to_vec(), false), (b"def".to_vec(), true)]
    );
}

fn document(secrets: &[Vec<u8>], r: &mut Rng, lines: usize) -> Vec<u8> {
    let pats = all_forms(secrets);
    let mut doc = Vec::new();
    for i in 0..lines {
        doc.extend(r.some(8, ALNUM));
        for _ in 0..r.below(3) {
            doc.extend_from_slice(&pats[r.below(pats.len())]);
            doc.extend(r.some(3, b" x\"%"));
        }
        doc.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
    }
    doc.extend_from_slice(b"tail hunter22");
    doc
}

fn expected_lines(m: &Masker, doc: &[u8]) -> Vec<(Vec<u8>, bool)> {
    let mut parts: Vec<&[u8]> = doc.split(|&b| b == b'\n').collect();
    let last = parts.pop().unwrap();
    let mut want: Vec<_> = parts
        .iter()
        .map(|l| (m.mask(l).into_owned(), true))
        .collect();
    if !last.is_empty() {
        // A last line without newline is not complete: the console must
        // not be given a newline the job never wrote.
        want.push((m.mask(last).into_owned(), false));
    }
    want
}

#[test]
fn splitter_every_split_point() {
    let secrets = secrets();
    let m = masker(&secrets);
    let pats = all_forms(&secrets);
    let mut r = Rng(99);
    let doc = document(&secrets[..6], &mut r, 12);
    let want = expected_lines(&m, &doc);
    for (l, _) in &want {
        assert_no_form(l, &pats, "whole");
    }
    for i in 0..=doc.len() {
        assert_eq!(
            split(&m, 1 << 16, &doc, &[i, doc.len()]),
            want,
            "split at {i}"
        );
    }
    // Every pair of split points on a short line holding several forms.
    let short = [
        &b"x "[..],
        &forms(b"quo\"te'd \"x\"")[1],
        b" ",
        &b64(b"user:hunter22"),
        b"\r\n",
    ]
    .concat();
    let want = expected_lines(&m, &short);
    for i in 0..=short.len() {
        for j in i..=short.len() {
            assert_eq!(split(&m, 1 << 16, &short, &[i, j - i, short.len()]), want);
        }
    }
}

#[test]
fn splitter_random_chunking() {
    random_chunking(&secrets(), 2024);
}

/// As above with the secrets that have no line break, which the splitter
/// matches over many lines at once.
#[test]
fn splitter_random_chunking_single_line_secrets() {
    random_chunking(&secrets()[..6], 2025);
}

fn random_chunking(secrets: &[Vec<u8>], seed: u64) {
    let m = masker(secrets);
    let mut r = Rng(seed);
    let doc = document(secrets, &mut r, 200);
    let want = expected_lines(&m, &doc);
    for _ in 0..3000 {
        let sizes: Vec<usize> = (0..16)
            .map(|_| {
                let top = if r.below(2) == 0 { 8 } else { 200 };
                1 + r.below(top)
            })
            .collect();
        assert_eq!(split(&m, 1 << 16, &doc, &sizes), want);
    }
}

/// Checks the pieces of one over-long line: bounded, flagged, no form left in
/// any piece nor across the joins, and once joined (a mask cut in two joins
/// into `******`) the same as the line masked whole, `want`.
fn check_pieces(out: &[(Vec<u8>, bool)], max: usize, pats: &[Vec<u8>], want: &[u8]) {
    assert!(out
        .split_last()
        .is_some_and(|(_, rest)| rest.iter().all(|p| !p.1)));
    assert!(
        out.iter().all(|p| p.0.len() <= max + 4),
        "a piece is too long"
    );
    let mut joined = out.concat_bytes();
    assert_no_form(&joined, pats, "joined pieces");
    while let Some(i) = joined.windows(6).position(|w| w == b"******") {
        joined.drain(i..i + 3);
    }
    assert_eq!(
        String::from_utf8_lossy(&joined),
        String::from_utf8_lossy(want)
    );
}

#[test]
fn overlong_lines_mask_secrets_at_the_cut() {
    let secrets = secrets();
    let m = masker(&secrets);
    let pats = all_forms(&secrets);
    let single: Vec<_> = pats.iter().filter(|p| !p.contains(&b'\n')).collect();
    let mut r = Rng(5);
    for max in [1, 5, 16, 33, 100] {
        for p in single.iter().step_by(3) {
            for off in 0..(2 * max + 3).min(80) {
                let line = [&r.bytes(off, ALNUM)[..], p, &r.some(2 * max, ALNUM), b"\n"].concat();
                let once = split(&m, max, &line, &[line.len()]);
                check_pieces(&once, max, &pats, &oracle(&line[..line.len() - 1], &pats));
                for _ in 0..3 {
                    let sizes: Vec<usize> = (0..4).map(|_| 1 + r.below(20)).collect();
                    assert_eq!(split(&m, max, &line, &sizes), once);
                }
            }
        }
    }
}

#[test]
fn overlong_lines_without_secrets_are_exact() {
    let m = masker(&secrets());
    let mut r = Rng(11);
    for max in [1, 7, 64] {
        let line = r.bytes(1000, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ");
        let out = split(&m, max, &[&line[..], b"\r\n"].concat(), &[13]);
        assert!(out[..out.len() - 1]
            .iter()
            .all(|(p, c)| p.len() == max && !c));
        assert_eq!(out.concat_bytes(), [&line[..], b"\r"].concat());
    }
}

trait Concat {
    fn concat_bytes(&self) -> Vec<u8>;
}

impl Concat for [(Vec<u8>, bool)] {
    fn concat_bytes(&self) -> Vec<u8> {
        self.iter().flat_map(|p| p.0.iter().copied()).collect()
    }
}

#[test]
fn overlong_runs_of_secret_stay_masked() {
    // Matches overlap without end, so there is no clean place to cut.
    let m = masker(&[b"aaaa".to_vec(), b"abababab".to_vec()]);
    for max in [1, 3, 10] {
        for line in [vec![b'a'; 1000], b"ab".repeat(500)] {
            let out = split(&m, max, &[&line[..], b"\n"].concat(), &[7]);
            check_pieces(&out, max, &[b"a".to_vec()], b"***");
        }
    }
    // The whole line is secret: each piece is just the mask.
    let out = split(&m, 16, &[vec![b'a'; 100], b"\n".to_vec()].concat(), &[1]);
    // (The last piece may be empty: the mask reached the end of the line.)
    assert!(out.iter().all(|(p, c)| p == b"***" || (p.is_empty() && *c)));
}

#[test]
fn a_huge_line_is_cut_and_fully_masked() {
    let secrets = secrets();
    let m = masker(&secrets);
    let pats = all_forms(&secrets);
    let single: Vec<_> = pats.iter().filter(|p| !p.contains(&b'\n')).collect();
    let mut r = Rng(3);
    let mut line = Vec::new();
    while line.len() < 1 << 20 {
        line.extend(r.some(50, ALNUM));
        line.extend_from_slice(single[r.below(single.len())]);
    }
    line.push(b'\n');
    let out = split(&m, 4096, &line, &[65536, 4095, 1, 17]);
    check_pieces(&out, 4096, &pats, &m.mask(&line[..line.len() - 1]));
}

#[test]
fn hundred_secrets() {
    let mut r = Rng(100);
    let secrets: Vec<Vec<u8>> = (0..100)
        .map(|_| {
            let n = 8 + r.below(40);
            r.bytes(
                n,
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ %\"\\:",
            )
        })
        .collect();
    let m = Arc::new(masker(&secrets));
    let pats = all_forms(&secrets);
    assert!(pats.len() > 500, "{} patterns", pats.len());
    let doc = document(&secrets, &mut r, 300);
    let want = expected_lines(&m, &doc);
    for (line, _) in &want {
        assert_no_form(line, &pats, "100 secrets");
    }
    for (line, (got, _)) in doc.split(|&b| b == b'\n').zip(&want).take(40) {
        assert_eq!(got, &oracle(line, &pats));
    }
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (m, doc) = (Arc::clone(&m), doc.clone());
            std::thread::spawn(move || split(&m, 1 << 16, &doc, &[1 + t * 37]))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), want);
    }
}

#[test]
fn secrets_added_after_use_are_masked() {
    let mut m = Masker::new();
    m.add(b"first-secret").unwrap();
    assert_eq!(
        &*m.mask(b"first-secret second-secret"),
        b"*** second-secret"
    );
    m.add(b"second-secret").unwrap();
    assert_eq!(&*m.mask(b"first-secret second-secret"), b"*** ***");
}

#[test]
fn byte_searches_and_copies_agree_with_a_byte_loop() {
    use workflow_runner::logs::bytes::{common_prefix, find_command, find_newline, push_bytes};
    let newline = |d: &[u8]| d.iter().position(|&b| b == b'\n');
    let command = |d: &[u8]| d.windows(2).position(|w| w == b"\n:").map(|i| i + 1);
    let mut r = Rng(7);
    for len in 0..100 {
        for _ in 0..300 {
            let d = r.bytes(len, b"aaaaaaaab:\n");
            assert_eq!(find_newline(&d), newline(&d), "{d:?}");
            assert_eq!(find_command(&d), command(&d), "{d:?}");
        }
    }
    let common = |a: &[u8], b: &[u8]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
    for len in 0..70 {
        for _ in 0..300 {
            let a = r.bytes(len, b"aaaaaaab");
            let n = r.below(70);
            let b = r.bytes(n, b"aaaaaaab");
            assert_eq!(common_prefix(&a, &b), common(&a, &b), "{a:?} {b:?}");
            assert_eq!(common_prefix(&a, &a), len);
        }
    }
    for len in 0..300 {
        let src = r.bytes(len, b"abcdefgh");
        let mut out = r.bytes(len % 21, b"xyz");
        let mut want = out.clone();
        push_bytes(&mut out, &src);
        want.extend_from_slice(&src);
        assert_eq!(out, want);
    }
    // One match at every place of a longer buffer, and none.
    for len in [0, 1, 15, 16, 17, 31, 32, 33, 100, 1000] {
        let plain = vec![b'x'; len];
        assert_eq!((find_newline(&plain), find_command(&plain)), (None, None));
        for at in 0..len {
            let mut d = plain.clone();
            d[at] = b'\n';
            assert_eq!(find_newline(&d), Some(at));
            assert_eq!(find_command(&d), None);
            if at + 1 < len {
                d[at + 1] = b':';
                assert_eq!(find_command(&d), Some(at + 1), "len {len}");
            }
        }
    }
}

#[test]
fn splitter_fuzz_small_alphabet() {
    fuzz_small_alphabet(0xfeed, b"aab\r\n");
}

/// Secrets without a line break are matched over many lines at once (no
/// match can span lines then); the result must be the same.
#[test]
fn splitter_fuzz_secrets_without_line_breaks() {
    fuzz_small_alphabet(0xbeef, b"aab\r");
}

fn fuzz_small_alphabet(seed: u64, secret_bytes: &[u8]) {
    let mut r = Rng(seed);
    for round in 0..3000 {
        let secrets: Vec<Vec<u8>> = (0..1 + r.below(4))
            .map(|_| {
                let n = 4 + r.below(6);
                r.bytes(n, secret_bytes)
            })
            .collect();
        let m = masker(&secrets);
        let pats = all_forms(&secrets);
        let n = r.below(120);
        let input = r.bytes(n, b"aaabbx\r\n");
        let max = 1 + r.below(12);
        let sizes: Vec<usize> = (0..5).map(|_| 1 + r.below(9)).collect();
        let out = split(&m, max, &input, &sizes);
        assert_eq!(out, split(&m, max, &input, &[input.len()]), "round {round}");
        let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        let last = lines.pop().unwrap_or_default();
        let mut pieces = out.split_inclusive(|p| p.1);
        for line in &lines {
            let got = pieces.next().unwrap();
            assert!(
                got.last().is_some_and(|p| p.1),
                "a line ended by a newline is complete"
            );
            check_pieces(got, max, &[], &oracle(line, &pats));
        }
        if !last.is_empty() {
            let got = pieces.next().unwrap();
            assert!(
                got.iter().all(|p| !p.1),
                "the unterminated last line is not complete"
            );
            check_pieces(got, max, &[], &oracle(last, &pats));
        }
        assert!(pieces.next().is_none());
    }
}
