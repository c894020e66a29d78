//! Secrets end to end (issue 5): the real runner binary, real git
//! repositories and servers on loopback, and the test orchestrator.
//!
//! - The matrix: secrets with spaces, quotes, backslashes, `%`, non-ASCII,
//!   tabs, LF and CRLF lines, exactly 4 bytes, plus the job token and
//!   `SOLSTICE_GIT_TOKEN`; each in every form the masker must know, printed
//!   by a job on stdout and on stderr, whole, cut into separate writes at
//!   random points (a hand-written xorshift, so runs are reproducible),
//!   paused mid-secret so the runner shows the unfinished line, and
//!   straddling the 64 KiB cut of an over-long line. The console must equal
//!   an independent oracle of the masking, and no form may reach the
//!   console, the spool, the orchestrator's log or the final status.
//! - Secrets in the runner's own messages: a job name, a step name, a
//!   repository path, and git's error output with its HTTP trace.
//! - `SOLSTICE_GIT_TOKEN`: the fetch works with the header, and the token
//!   is on no command line (sampled while the server holds git's request and
//!   while the job runs), in no file under `.git`, and not in the job's
//!   environment; the secrets file is read once.
//! - The secrets file: values under 4 bytes, permissions, invalid names,
//!   and errors that must not quote a value.
//! - Least privilege in workflows, at run time and in `check`.
//!
//! Waits are deadlines on conditions; the only sleeps are in the jobs,
//! where a pause in the output is what is being tested.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::delivery::check_delivery;
use common::events::{events, stream_text};
use common::forms::{b64_core, json, pct};
use common::git::{base64, HttpConfig, HttpMode, HttpServer};
use common::job::{Job, WORKFLOW};
use common::orchestrator::{Fault, Orchestrator};
use common::rng::Rng;
use common::runner::{wait_until, Output, Runner};
use common::tmp::TempDir;

const DEADLINE: Duration = Duration::from_secs(60);
const JOB_ID: &str = "job-secrets";
/// Printable ASCII without spaces, as the upload requires.
const JOB_TOKEN: &str = "jt-7Qe2Lr9sXw4Vb";
const GIT_TOKEN: &str = "gt-Hq3vN8pZ2mK6";
const COMMIT_ZEROS: &str = "0123456789abcdef0123456789abcdef01234567";

/// Names and values of the matrix, as the secrets file gives them.
const MATRIX: &[(&str, &str)] = &[
    ("SPACES", "open sesame 4 all"),
    ("QUOTES", "it's \"double\" and 'single'"),
    ("BACKSLASH", "C:\\new\\table\\\\x41\\"),
    ("PERCENT", "100%off%20now%"),
    ("UNICODE", "pässwörd-日本語-😀"),
    ("TAB", "tab\there-Zz"),
    ("MULTI_LF", "line-one-aaaa\nline-two-bbbb\nlast-cccc"),
    ("MULTI_CRLF", "crlf-first-1111\r\ncrlf-second-2222"),
    ("FOUR", "k9#Q"),
];

// ---------------------------------------------------------------------------
// Reproducible randomness
// ---------------------------------------------------------------------------

impl Rng {
    /// A number in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

// ---------------------------------------------------------------------------
// The forms a secret may take, derived independently of src/mask.rs
// ---------------------------------------------------------------------------

/// Every form the masker must hide for `v`, labelled.
fn forms(v: &str) -> Vec<(String, Vec<u8>)> {
    let b = v.as_bytes();
    let mut f = vec![("raw".to_string(), b.to_vec())];
    for (n, line) in b.split(|&c| c == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() >= 4 && line != b {
            f.push((format!("line {}", n + 1), line.to_vec()));
        }
    }
    for skip in 0..3 {
        if let Some(core) = b64_core(b, skip) {
            f.push((format!("base64@{skip}"), core));
        }
    }
    f.push(("percent".into(), pct(b, true)));
    f.push(("percent-lower".into(), pct(b, false)));
    f.push(("json".into(), json(v.as_bytes(), false, false)));
    f.push(("json-ascii".into(), json(v.as_bytes(), true, true)));
    f.push(("json-ascii-lower".into(), json(v.as_bytes(), true, false)));
    f
}

/// What Rust's `{:?}` makes of `v`, without the quotes.
fn rust_debug_body(v: &str) -> Vec<u8> {
    let d = format!("{v:?}");
    d.as_bytes()[1..d.len() - 1].to_vec()
}

// ---------------------------------------------------------------------------
// Needles: finding leaks, and the oracle of the masking
// ---------------------------------------------------------------------------

/// Byte strings that must not appear, each with a label; all at least 4
/// bytes, found in one pass with a 2-byte prefilter and a 4-byte index.
struct Needles {
    pats: Vec<(String, Vec<u8>)>,
    first2: Vec<bool>,
    by_prefix: HashMap<[u8; 4], Vec<usize>>,
}

impl Needles {
    fn new() -> Needles {
        Needles {
            pats: Vec::new(),
            first2: vec![false; 1 << 16],
            by_prefix: HashMap::new(),
        }
    }

    /// Every form of a secret.
    fn secret(&mut self, name: &str, value: &str) -> &mut Needles {
        assert!(value.len() >= 4, "test secrets are at least 4 bytes");
        for (form, bytes) in forms(value) {
            self.add(&format!("{name} ({form})"), &bytes);
        }
        self
    }

    /// One byte string.
    fn add(&mut self, label: &str, bytes: &[u8]) -> &mut Needles {
        assert!(bytes.len() >= 4, "needle {label:?} is under 4 bytes");
        if self.pats.iter().any(|(_, p)| p == bytes) {
            return self;
        }
        self.first2[usize::from(bytes[0]) << 8 | usize::from(bytes[1])] = true;
        let key = [bytes[0], bytes[1], bytes[2], bytes[3]];
        self.by_prefix.entry(key).or_default().push(self.pats.len());
        self.pats.push((label.to_string(), bytes.to_vec()));
        self
    }

    /// Every (start, needle) occurring in `hay`.
    fn occurrences(&self, hay: &[u8]) -> Vec<(usize, usize)> {
        let mut found = Vec::new();
        if hay.len() < 4 {
            return found;
        }
        for i in 0..=hay.len() - 4 {
            if !self.first2[usize::from(hay[i]) << 8 | usize::from(hay[i + 1])] {
                continue;
            }
            let key = [hay[i], hay[i + 1], hay[i + 2], hay[i + 3]];
            if let Some(ids) = self.by_prefix.get(&key) {
                for &id in ids {
                    if hay[i..].starts_with(&self.pats[id].1) {
                        found.push((i, id));
                    }
                }
            }
        }
        found
    }

    /// Records each needle found in `hay`, with a little context.
    fn leaks(&self, place: &str, hay: &[u8], out: &mut Vec<String>) {
        for (i, id) in self.occurrences(hay) {
            let (label, pat) = &self.pats[id];
            let from = i.saturating_sub(40);
            let to = (i + pat.len() + 40).min(hay.len());
            out.push(format!(
                "{place}: {label} at byte {i}: {:?}",
                String::from_utf8_lossy(&hay[from..to])
            ));
        }
    }

    /// The oracle: each line of `text` with every maximal run of bytes
    /// covered by some needle replaced by `***`.
    fn mask(&self, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        for (n, line) in text.split(|&b| b == b'\n').enumerate() {
            if n > 0 {
                out.push(b'\n');
            }
            let mut covered = vec![false; line.len()];
            for (i, id) in self.occurrences(line) {
                for c in &mut covered[i..i + self.pats[id].1.len()] {
                    *c = true;
                }
            }
            let mut i = 0;
            while i < line.len() {
                if covered[i] {
                    out.extend_from_slice(b"***");
                    while i < line.len() && covered[i] {
                        i += 1;
                    }
                } else {
                    out.push(line[i]);
                    i += 1;
                }
            }
        }
        out
    }
}

#[track_caller]
fn assert_no_leaks(leaks: &[String], out: &Output) {
    if leaks.is_empty() {
        return;
    }
    let shown: Vec<&String> = leaks.iter().take(25).collect();
    panic!(
        "{} secret occurrence(s) escaped the masker; the first ones:\n{}\n\n\
         runner stderr (last 3000 bytes):\n{}",
        leaks.len(),
        shown
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        tail(&out.stderr, 3000)
    );
}

fn tail(s: &str, n: usize) -> &str {
    let mut at = s.len().saturating_sub(n);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

// ---------------------------------------------------------------------------
// The spool and the orchestrator's log
// ---------------------------------------------------------------------------

/// Looks for needles in a log of events: its raw bytes, each event's text
/// and step, and each stream's texts joined (a secret cut between two
/// events of an over-long or paused line must not pass either).
fn log_leaks(needles: &Needles, place: &str, log: &[u8], out: &mut Vec<String>) {
    needles.leaks(&format!("{place} (raw bytes)"), log, out);
    let mut joined: HashMap<String, Vec<u8>> = HashMap::new();
    for e in events(log) {
        needles.leaks(
            &format!("{place} seq {} text", e.seq),
            e.text.as_bytes(),
            out,
        );
        if let Some(step) = &e.step {
            needles.leaks(&format!("{place} seq {} step", e.seq), step.as_bytes(), out);
        }
        joined
            .entry(e.stream.clone())
            .or_default()
            .extend_from_slice(e.text.as_bytes());
    }
    for (stream, text) in joined {
        let mut found = Vec::new();
        needles.leaks(&format!("{place} {stream} texts joined"), &text, &mut found);
        // Those inside one event were reported above.
        out.extend(found.into_iter().take(3));
    }
}

/// Needles in everything a run left: console, spool, the orchestrator's log
/// and the bodies of every status it received.
fn all_leaks(
    needles: &Needles,
    out: &Output,
    spool: &Path,
    orch: Option<&Orchestrator>,
) -> Vec<String> {
    let mut leaks = Vec::new();
    needles.leaks("runner stdout", out.stdout.as_bytes(), &mut leaks);
    needles.leaks("runner stderr", out.stderr.as_bytes(), &mut leaks);
    if let Ok(bytes) = fs::read(spool) {
        log_leaks(needles, "spool", &bytes, &mut leaks);
    }
    if let Some(orch) = orch {
        log_leaks(needles, "orchestrator log", &orch.log(JOB_ID), &mut leaks);
        for s in orch.statuses(JOB_ID) {
            needles.leaks("status body", s.raw.as_bytes(), &mut leaks);
        }
    }
    leaks
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// Writes the job's `secrets.yaml` (mode 0600) with these entries,
/// double-quoted; returns its path.
fn secrets_file(job: &Job, entries: &[(&str, &str)]) -> PathBuf {
    let text: String = entries
        .iter()
        .map(|(k, v)| format!("{k}: {}\n", yaml_quote(v)))
        .collect();
    job.private_file("secrets.yaml", &text)
}

/// The job's runner reporting to `orch` as [`JOB_ID`] with [`JOB_TOKEN`],
/// with 20 s to finish the upload.
fn reporting(job: &Job, orch: &Orchestrator) -> Runner {
    job.reporting(orch, JOB_ID, JOB_TOKEN)
        .env("SOLSTICE_UPLOAD_DEADLINE", "20")
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> PathBuf {
    let _ = fs::remove_file(path);
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    path.to_path_buf()
}

/// A YAML double-quoted scalar holding `v` (docs/job-file.md): non-ASCII
/// letters stay literal, everything unusual is escaped.
fn yaml_quote(v: &str) -> String {
    let mut out = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c if !c.is_ascii() && c.is_alphanumeric() => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// `bytes` as one shell word in single quotes.
fn sq(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![b'\''];
    for &b in bytes {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The shell code that prints `$NAME`'s bytes in hex: a form the masker
/// does not know, so the test can see what the job got.
fn hex_of_var(name: &str) -> String {
    format!("\"$(printf '%s' \"${name}\" | od -An -v -tx1 | tr -d ' \\n')\"")
}

/// The runner's own lines on stderr: `<UTC time> <LEVEL> `.
fn is_runner_line(l: &str) -> bool {
    let b = l.as_bytes();
    b.len() > 30
        && b[4] == b'-'
        && b[10] == b'T'
        && b[23] == b'Z'
        && b[24] == b' '
        && ["ERROR ", "WARN  ", "INFO  ", "DEBUG ", "TRACE "]
            .iter()
            .any(|lv| l[25..].starts_with(lv))
}

/// The runner's messages, without time and level.
fn messages(out: &Output) -> Vec<String> {
    out.stderr
        .lines()
        .filter(|l| is_runner_line(l))
        .map(|l| l[31..].to_string())
        .collect()
}

/// The job's stderr: the runner's stderr without the runner's own lines.
fn job_stderr(out: &Output) -> String {
    let mut s = String::new();
    for l in out.stderr.split_inclusive('\n') {
        if !is_runner_line(l) {
            s.push_str(l);
        }
    }
    s
}

// ---------------------------------------------------------------------------
// The job script of the matrix
// ---------------------------------------------------------------------------

/// A job script and the exact bytes it writes to stdout (0) and stderr (1).
struct Script {
    sh: Vec<u8>,
    out: [Vec<u8>; 2],
}

impl Script {
    fn new() -> Script {
        Script {
            sh: b"#!/bin/sh\nset -e\n".to_vec(),
            out: [Vec::new(), Vec::new()],
        }
    }

    fn code(&mut self, code: &str) {
        self.sh.extend_from_slice(code.as_bytes());
        self.sh.push(b'\n');
    }

    fn redirect(&mut self, fd: usize) {
        if fd == 1 {
            self.sh.extend_from_slice(b" >&2");
        }
        self.sh.push(b'\n');
    }

    /// One `printf` (one write) of these bytes on stream `fd`.
    fn lit(&mut self, fd: usize, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.sh.extend_from_slice(b"printf '%s' ");
        self.sh.extend_from_slice(&sq(bytes));
        self.redirect(fd);
        self.out[fd].extend_from_slice(bytes);
    }

    /// Shell code that writes `produces` on stream `fd`.
    fn shell(&mut self, fd: usize, code: &str, produces: &[u8]) {
        self.sh.extend_from_slice(code.as_bytes());
        self.redirect(fd);
        self.out[fd].extend_from_slice(produces);
    }
}

/// One secret of the matrix as the job may print it.
struct Printable {
    bytes: Vec<u8>,
    /// Shell code giving the bytes from the secret's variable, if the job
    /// computes this form itself.
    shell: Option<String>,
}

fn printables(name: Option<&str>, value: &str) -> Vec<Printable> {
    let b = value.as_bytes();
    let mut p = vec![Printable {
        bytes: b.to_vec(),
        shell: name.map(|n| format!("\"${n}\"")),
    }];
    for prefix in ["", "x", "xy"] {
        let mut data = prefix.as_bytes().to_vec();
        data.extend_from_slice(b);
        p.push(Printable {
            bytes: base64(&data).into_bytes(),
            shell: name.map(|n| format!("\"$(printf '%s%s' '{prefix}' \"${n}\" | base64 -w0)\"")),
        });
    }
    for bytes in [
        pct(b, true),
        pct(b, false),
        json(value.as_bytes(), false, false),
        json(value.as_bytes(), true, true),
        json(value.as_bytes(), true, false),
    ] {
        p.push(Printable { bytes, shell: None });
    }
    p
}

/// Cuts `line` at 1 to 4 random points within `lo..=hi`.
fn cut_points(rng: &mut Rng, line: &[u8], lo: usize, hi: usize) -> Vec<usize> {
    let n = rng.range(1, 4);
    let mut cuts: BTreeSet<usize> = BTreeSet::new();
    for _ in 0..n {
        cuts.insert(rng.range(lo, hi));
    }
    cuts.into_iter()
        .filter(|&c| c > 0 && c < line.len())
        .collect()
}

fn pieces<'a>(line: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at = 0;
    let mut out = Vec::new();
    for &c in cuts.iter().chain(std::iter::once(&line.len())) {
        out.push(&line[at..c]);
        at = c;
    }
    out
}

const FILLER: usize = 300;
const PAUSE: &str = "sleep 0.2";

/// The whole matrix as one job script; also the number of paused lines.
fn matrix_script(rng: &mut Rng) -> (Script, usize) {
    let mut s = Script::new();
    // Each secret (the two tokens are ones a job might learn, from
    // /proc/$PPID/environ say, and print).
    let mut all: Vec<(Option<&str>, &str)> = MATRIX.iter().map(|(n, v)| (Some(*n), *v)).collect();
    all.push((None, JOB_TOKEN));
    all.push((None, GIT_TOKEN));
    for (i, &(name, value)) in all.iter().enumerate() {
        if let Some(n) = name {
            s.shell(
                0,
                &format!("printf 'H{i}:%s\\n' {}", hex_of_var(n)),
                format!("H{i}:{}\n", hex(value.as_bytes())).as_bytes(),
            );
        }
        for fd in 0..2 {
            for (j, p) in printables(name, value).iter().enumerate() {
                let marker = format!("M{i}.{j}.{fd}w:");
                let mut line = marker.clone().into_bytes();
                line.extend_from_slice(&p.bytes);
                line.extend_from_slice(b":E\n");
                match &p.shell {
                    Some(code) => s.shell(fd, &format!("printf '{marker}%s:E\\n' {code}"), &line),
                    None => s.lit(fd, &line),
                }
                // The same line in separate writes, cut inside the form.
                let split = format!("M{i}.{j}.{fd}s:");
                let mut line = split.clone().into_bytes();
                line.extend_from_slice(&p.bytes);
                line.extend_from_slice(b":E\n");
                let cuts = cut_points(rng, &line, split.len(), split.len() + p.bytes.len());
                for piece in pieces(&line, &cuts) {
                    s.lit(fd, piece);
                }
            }
        }
    }
    // Paused mid-secret on both streams at once, so the runner goes idle
    // and shows what it safely can of both unfinished lines.
    let mut paused = 0;
    for (i, &(name, value)) in all.iter().enumerate() {
        let ps = printables(name, value);
        // The raw form on one stream, another form on the other.
        let other = 1 + rng.below(ps.len() - 1);
        let picks = if i % 2 == 0 { [0, other] } else { [other, 0] };
        let mut rests = Vec::new();
        for (fd, &j) in picks.iter().enumerate() {
            let p = &ps[j];
            let mut line = vec![b'.'; FILLER];
            line.extend_from_slice(format!("P{i}.{fd}:").as_bytes());
            let start = line.len();
            line.extend_from_slice(&p.bytes);
            line.extend_from_slice(b":E\n");
            let cut = start + rng.range(1, p.bytes.len() - 1);
            s.lit(fd, &line[..cut]);
            rests.push((fd, line[cut..].to_vec()));
        }
        s.code(PAUSE);
        for (fd, rest) in rests {
            s.lit(fd, &rest);
        }
        paused += 2;
    }
    // Over-long lines: the secret straddles the 64 KiB cut (or sits next to it).
    for (i, &(name, value)) in all.iter().enumerate() {
        let Some(n) = name else { continue };
        let marker = format!("L{i}:");
        let start = 65536 - rng.range(0, value.len() + 2);
        let dots = start - marker.len();
        let mut line = marker.clone().into_bytes();
        line.extend(std::iter::repeat_n(b'.', dots));
        line.extend_from_slice(value.as_bytes());
        line.extend_from_slice(b":E\n");
        s.shell(
            0,
            &format!(
                "printf '{marker}'; head -c {dots} /dev/zero | tr '\\0' .; {}",
                format_args!("printf '%s:E\\n' \"${n}\"")
            ),
            &line,
        );
    }
    s.code("echo matrix-done");
    s.out[0].extend_from_slice(b"matrix-done\n");
    (s, paused)
}

// ---------------------------------------------------------------------------
// The matrix
// ---------------------------------------------------------------------------

#[test]
fn every_form_of_every_secret_is_masked_on_every_path() {
    let mut rng = Rng(0x5EC2_E75E_C2E7_5EC2);
    let (script, paused) = matrix_script(&mut rng);
    let fx = Job::raw_script(&script.sh);
    let secrets = secrets_file(&fx, MATRIX);
    let orch = Orchestrator::start(JOB_TOKEN, Fault::Healthy);
    let out = reporting(&fx, &orch)
        .env("SOLSTICE_SECRETS_FILE", &secrets)
        .env("SOLSTICE_GIT_TOKEN", GIT_TOKEN)
        .run(DEADLINE);
    out.assert_code(0);
    check_delivery(&orch, JOB_ID, JOB_TOKEN, &fx.spool(), &out);

    let mut needles = Needles::new();
    for (name, value) in MATRIX {
        needles.secret(name, value);
    }
    needles.secret("job token", JOB_TOKEN);
    needles.secret("SOLSTICE_GIT_TOKEN", GIT_TOKEN);

    // Nothing leaked anywhere.
    assert_no_leaks(&all_leaks(&needles, &out, &fx.spool(), Some(&orch)), &out);

    // The console is exactly the job's output, masked as the oracle says:
    // so every form was printed, reached the console, and was masked whole.
    let want_out = String::from_utf8_lossy(&needles.mask(&script.out[0])).into_owned();
    let want_err = String::from_utf8_lossy(&needles.mask(&script.out[1])).into_owned();
    if out.stdout != want_out {
        panic!(
            "stdout differs from the oracle:\n{}",
            first_difference(&out.stdout, &want_out)
        );
    }
    let got_err = job_stderr(&out);
    if got_err != want_err {
        panic!(
            "the job's stderr differs from the oracle:\n{}",
            first_difference(&got_err, &want_err)
        );
    }
    // job.sh got every secret byte for byte (the H lines are hex).
    for (i, (_, value)) in MATRIX.iter().enumerate() {
        out.assert_stdout_contains(&format!("H{i}:{}\n", hex(value.as_bytes())));
    }
    // The pauses did make the runner show unfinished lines: the filler of
    // a paused line reached the spool as an event of its own, the secret
    // held back until its end came.
    let log = fs::read(fx.spool()).unwrap();
    let evs = events(&log);
    // Each stream's events joined are that stream, masked: no character was
    // cut into two U+FFFD between events.
    for (stream, want) in [("stdout", &want_out), ("stderr", &want_err)] {
        let got = stream_text(&evs, stream);
        if got != *want {
            panic!(
                "the spool's {stream} differs from the oracle:\n{}",
                first_difference(&got, want)
            );
        }
    }
    let shown_early = evs
        .iter()
        .filter(|e| !e.text.is_empty() && e.text.bytes().all(|b| b == b'.'))
        .count();
    assert!(
        shown_early > 0,
        "none of the {paused} paused lines was shown before its end: the pauses tested nothing"
    );
}

/// Where two long texts part, with context.
fn first_difference(got: &str, want: &str) -> String {
    let (g, w) = (got.as_bytes(), want.as_bytes());
    let at = g
        .iter()
        .zip(w)
        .position(|(a, b)| a != b)
        .unwrap_or(g.len().min(w.len()));
    let from = at.saturating_sub(200);
    format!(
        "at byte {at} (got {} bytes, want {}):\n got: {:?}\nwant: {:?}",
        g.len(),
        w.len(),
        String::from_utf8_lossy(&g[from..(at + 200).min(g.len())]),
        String::from_utf8_lossy(&w[from..(at + 200).min(w.len())])
    )
}

// ---------------------------------------------------------------------------
// Secrets in the runner's own messages
// ---------------------------------------------------------------------------

const WORKFLOW_TWO_JOBS: &str = r#"
job "build" {
    step "compile" run="echo compiled"
}
job "deploy" {
    step "ship" run="echo shipped"
}
"#;

#[test]
fn a_secret_as_job_name_is_masked_in_runner_messages() {
    // Any string the runner quotes in a message may happen to be a secret;
    // a job name that names no job is quoted in the error, in `{:?}` style.
    let fx = Job::workflow(WORKFLOW_TWO_JOBS);
    let cases = [
        ("SPACES", "open sesame 4 all"),
        ("QUOTES", "it's \"double\" and 'single'"),
        ("BACKSLASH", "C:\\new\\table\\\\x41\\"),
        ("PERCENT", "100%off%20now%"),
        ("UNICODE", "pässwörd-日本語-😀"),
        ("TAB", "tab\there-Zz"),
        ("MULTI_LF", "line-one-aaaa\nline-two-bbbb\nlast-cccc"),
        ("NBSP", "nb\u{a0}space-secret"),
        ("COMBINING", "cafe\u{301}-accent-secret"),
    ];
    let secrets = secrets_file(&fx, &cases);
    let mut leaks = Vec::new();
    let mut last = None;
    for (name, value) in cases {
        let spool = fx.file(&format!("spool-{name}.ndjson"));
        let out = fx
            .runner()
            .env("SOLSTICE_SECRETS_FILE", &secrets)
            .env("SOLSTICE_SPOOL", &spool)
            .env("SOLSTICE_JOB", value)
            .run(DEADLINE);
        out.assert_code(251);
        assert!(
            messages(&out)
                .iter()
                .any(|m| m.starts_with("no job named ")),
            "{out}"
        );
        let mut needles = Needles::new();
        needles.secret(name, value);
        // How `{:?}` writes it, which the runner must not produce either.
        needles.add(
            &format!("{name} (Rust debug form)"),
            &rust_debug_body(value),
        );
        leaks.extend(all_leaks(&needles, &out, &spool, None));
        last = Some(out);
    }
    assert_no_leaks(&leaks, last.as_ref().unwrap());
}

#[test]
fn a_secret_as_step_name_is_masked_in_messages_spool_and_status() {
    let step = "deploy-key 7Hq";
    let quoted = "it's \"quoted\" 9x";
    let fx = Job::workflow(&format!(
        "job \"ci\" {{\n    step {:?} run=\"echo first\"\n    step {:?} run=\"echo second; exit 3\"\n}}\n",
        step, quoted
    ));
    let secrets = secrets_file(&fx, &[("STEP_SECRET", step), ("QUOTED_SECRET", quoted)]);
    let orch = Orchestrator::start(JOB_TOKEN, Fault::Healthy);
    let out = reporting(&fx, &orch)
        .env("SOLSTICE_SECRETS_FILE", &secrets)
        .run(DEADLINE);
    out.assert_code(3);
    out.assert_stdout_contains("first\n")
        .assert_stdout_contains("second\n");
    check_delivery(&orch, JOB_ID, JOB_TOKEN, &fx.spool(), &out);
    let msgs = messages(&out);
    assert!(msgs.iter().any(|m| m == "==> [1/2] ***"), "{out}");
    let mut needles = Needles::new();
    needles
        .secret("STEP_SECRET", step)
        .secret("QUOTED_SECRET", quoted);
    assert_no_leaks(&all_leaks(&needles, &out, &fx.spool(), Some(&orch)), &out);
}

#[test]
fn dry_run_output_is_masked() {
    // `--dry-run` prints the resolved context on stdout: a value there that
    // is a secret must be masked like any other output.
    let tmp = TempDir::new("secrets-dry");
    let value = "dry-run s3cret 8128";
    let file = write_mode(
        &tmp.join("secrets.yaml"),
        format!("JOB_NAME_SECRET: {}\n", yaml_quote(value)).as_bytes(),
        0o600,
    );
    let out = dry_run(&tmp)
        .env("SOLSTICE_SECRETS_FILE", &file)
        .env("SOLSTICE_JOB", value)
        .run(DEADLINE);
    out.assert_code(0).assert_stdout_contains("job ");
    let mut needles = Needles::new();
    needles.secret("JOB_NAME_SECRET", value);
    assert_no_leaks(&all_leaks(&needles, &out, &tmp.join("none"), None), &out);
}

#[test]
fn the_job_token_is_masked_as_it_is_sent() {
    // A token file written by a shell ends in a newline; the runner trims
    // it before sending it, so the trimmed token is the secret to mask.
    let token = "jt-Trim-Me-4711";
    let mut script = Script::new();
    for p in printables(None, token) {
        let mut line = b"T:".to_vec();
        line.extend_from_slice(&p.bytes);
        line.extend_from_slice(b":E\n");
        script.lit(0, &line);
    }
    let fx = Job::raw_script(&script.sh);
    let orch = Orchestrator::start(token, Fault::Healthy);
    let out = reporting(&fx, &orch)
        .env("SOLSTICE_JOB_TOKEN", format!("{token}\n"))
        .run(DEADLINE);
    out.assert_code(0);
    check_delivery(&orch, JOB_ID, token, &fx.spool(), &out);
    let mut needles = Needles::new();
    needles.secret("the job token (trimmed, as sent)", token);
    assert_no_leaks(&all_leaks(&needles, &out, &fx.spool(), Some(&orch)), &out);
}

// ---------------------------------------------------------------------------
// git's error output
// ---------------------------------------------------------------------------

/// The job, its repository also a bare `srv/r.git` in its scratch area, to
/// serve over smart HTTP.
fn served(job: Job) -> Job {
    job.repo.clone_bare_to(job.file("srv/r.git"));
    job
}

#[test]
fn git_error_output_is_masked() {
    let job = served(Job::script("echo never"));
    let http = HttpServer::smart_with_auth(job.file("srv"), "x-access-token", GIT_TOKEN);
    let path_secret = "repo-s3cr3t-9f8e";
    let url_password = "url-Pw-31415926";
    let wrong_token = "wrong-Tok-27182818";
    let secrets = write_mode(
        &job.file("secrets.yaml"),
        format!("REPO_PATH: {}\n", yaml_quote(path_secret)).as_bytes(),
        0o600,
    );
    // git prints its HTTP headers, Authorization included, with these.
    let trace = [("GIT_CURL_VERBOSE", "1"), ("GIT_TRACE_REDACT", "0")];
    struct Case {
        what: &'static str,
        url: String,
        env: Vec<(&'static str, String)>,
        needles: Needles,
        header_shown: bool,
    }
    let mut cases = Vec::new();
    {
        let mut n = Needles::new();
        n.secret("REPO_PATH", path_secret);
        cases.push(Case {
            what: "a secret in the repository path (404)",
            url: http.url(&format!("{path_secret}.git")),
            env: vec![("SOLSTICE_GIT_TOKEN", GIT_TOKEN.into())],
            needles: n,
            header_shown: false,
        });
    }
    for (user, skip) in [(None, "x-access-token:"), (Some("bob"), "bob:")] {
        let mut n = Needles::new();
        n.secret("SOLSTICE_GIT_TOKEN", wrong_token);
        n.add(
            "the whole Authorization value",
            base64(format!("{skip}{wrong_token}").as_bytes()).as_bytes(),
        );
        let mut env = vec![("SOLSTICE_GIT_TOKEN", wrong_token.to_string())];
        if let Some(u) = user {
            env.push(("SOLSTICE_GIT_USER", u.to_string()));
        }
        env.extend(trace.iter().map(|(k, v)| (*k, v.to_string())));
        cases.push(Case {
            what: if user.is_some() {
                "a wrong SOLSTICE_GIT_TOKEN as user bob, traced"
            } else {
                "a wrong SOLSTICE_GIT_TOKEN, traced"
            },
            url: http.url("r.git"),
            env,
            needles: n,
            header_shown: true,
        });
    }
    {
        let mut n = Needles::new();
        n.secret("the password in repo_url", url_password);
        n.add(
            "the whole Authorization value",
            base64(format!("dave:{url_password}").as_bytes()).as_bytes(),
        );
        cases.push(Case {
            what: "a wrong password in repo_url, traced",
            url: http.url_with_credentials("dave", url_password, "r.git"),
            env: trace.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            needles: n,
            header_shown: true,
        });
    }
    for (k, case) in cases.iter().enumerate() {
        let spool = job.file(&format!("spool{k}.ndjson"));
        let mut r = job
            .runner()
            .env("SOLSTICE_REPO_URL", &case.url)
            .env("SOLSTICE_SECRETS_FILE", &secrets)
            .env("SOLSTICE_SPOOL", &spool);
        for (key, v) in &case.env {
            r = r.env(key, v);
        }
        let out = r.run(DEADLINE);
        assert_eq!(out.code, Some(252), "{}: {out}", case.what);
        if case.header_shown {
            assert!(
                out.stderr.contains("Authorization: Basic"),
                "{}: git did not print its headers, so this tested nothing:\n{out}",
                case.what
            );
        } else {
            assert!(out.stderr.contains("***"), "{}: {out}", case.what);
        }
        let leaks = all_leaks(&case.needles, &out, &spool, None);
        if !leaks.is_empty() {
            eprintln!("case: {}", case.what);
        }
        assert_no_leaks(&leaks, &out);
    }
}

#[test]
fn a_token_as_the_user_in_repo_url_is_masked() {
    // GitHub's `https://TOKEN:x-oauth-basic@host/...`: the user part is the
    // credential. A job that shows its job file (where repo_url comes from)
    // or git's HTTP trace must not reveal it.
    let user_token = "ghp-User4Token9c1d";
    let password = "x-oauth-basic";
    let job = served(Job::script("echo \"job file: repo_url: $ORIGINAL_URL\""));
    let http = HttpServer::smart_with_auth(job.file("srv"), user_token, password);
    let mut needles = Needles::new();
    needles.secret("the user in repo_url", user_token).add(
        "the whole Authorization value",
        base64(format!("{user_token}:{password}").as_bytes()).as_bytes(),
    );
    let mut leaks = Vec::new();
    let mut last = None;
    for (k, name, trace) in [(0, "r.git", false), (1, "missing.git", true)] {
        let url = http.url_with_credentials(user_token, password, name);
        let spool = job.file(&format!("spool{k}.ndjson"));
        let mut r = job
            .runner()
            .env("SOLSTICE_REPO_URL", &url)
            .env("ORIGINAL_URL", &url)
            .env("SOLSTICE_SPOOL", &spool);
        if trace {
            r = r.env("GIT_CURL_VERBOSE", "1").env("GIT_TRACE_REDACT", "0");
        }
        let out = r.run(DEADLINE);
        if trace {
            out.assert_code(252)
                .assert_stderr_contains("Authorization: Basic");
        } else {
            out.assert_code(0)
                .assert_stdout_contains("job file: repo_url: ");
        }
        leaks.extend(all_leaks(&needles, &out, &spool, None));
        last = Some(out);
    }
    assert_no_leaks(&leaks, last.as_ref().unwrap());
}

// ---------------------------------------------------------------------------
// SOLSTICE_GIT_TOKEN and command lines
// ---------------------------------------------------------------------------

struct Proc {
    pid: i32,
    ppid: i32,
    cmdline: Vec<u8>,
}

fn processes() -> Vec<Proc> {
    let mut all = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let (Ok(stat), Ok(cmdline)) = (
            fs::read_to_string(e.path().join("stat")),
            fs::read(e.path().join("cmdline")),
        ) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        else {
            continue;
        };
        all.push(Proc { pid, ppid, cmdline });
    }
    all
}

fn descendants(all: &[Proc], root: i32) -> Vec<&Proc> {
    let mut set = BTreeSet::from([root]);
    loop {
        let before = set.len();
        for p in all {
            if set.contains(&p.ppid) {
                set.insert(p.pid);
            }
        }
        if set.len() == before {
            break;
        }
    }
    all.iter()
        .filter(|p| set.contains(&p.pid) && p.pid != root)
        .collect()
}

fn show(cmdline: &[u8]) -> String {
    String::from_utf8_lossy(cmdline).replace('\0', " ")
}

/// Samples every command line on the machine; returns the runner's
/// descendants' command lines and records any needle found in any.
fn sample_command_lines(
    needles: &Needles,
    runner: u32,
    when: &str,
    leaks: &mut Vec<String>,
) -> Vec<String> {
    let all = processes();
    for p in &all {
        needles.leaks(
            &format!(
                "{when}: command line of pid {} ({})",
                p.pid,
                show(&p.cmdline)
            ),
            &p.cmdline,
            leaks,
        );
    }
    descendants(&all, runner as i32)
        .iter()
        .map(|p| show(&p.cmdline))
        .collect()
}

/// Every file under `dir` holding one of the needles.
fn files_with(needles: &Needles, dir: &Path, leaks: &mut Vec<String>) {
    for (rel, e) in common::git::snapshot(dir) {
        if let common::git::Entry::File { contents, .. } = e {
            needles.leaks(
                &format!("file {}", dir.join(rel).display()),
                &contents,
                leaks,
            );
        }
    }
}

#[test]
fn git_token_fetches_and_stays_off_command_lines_git_config_and_the_job() {
    let mut job = Job::empty();
    let env_file = job.file("job-env.txt");
    let go = job.file("go");
    job.repo.write_job(&format!(
        r#"env > {env}
echo "api=$API_KEY"
printf 'hex=%s\n' {hex}
echo "new=${{NEW_ONE-unset}}"
echo "job waiting"
i=0
while [ ! -e {go} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
echo "job done""#,
        env = String::from_utf8(sq(env_file.to_str().unwrap().as_bytes())).unwrap(),
        go = String::from_utf8(sq(go.to_str().unwrap().as_bytes())).unwrap(),
        hex = hex_of_var("API_KEY"),
    ));
    job.commit("served");
    let job = served(job);
    let api_key = "api-Key 'orig' 4242";
    let secrets = write_mode(
        &job.file("secrets.yaml"),
        format!("API_KEY: {}\n", yaml_quote(api_key)).as_bytes(),
        0o600,
    );
    let http = HttpConfig::new(HttpMode::Smart, job.file("srv"))
        .basic_auth("x-access-token", GIT_TOKEN)
        .hold()
        .start();
    let orch = Orchestrator::start(JOB_TOKEN, Fault::Healthy);
    let header = format!(
        "Basic {}",
        base64(format!("x-access-token:{GIT_TOKEN}").as_bytes())
    );

    let mut needles = Needles::new();
    needles
        .secret("SOLSTICE_GIT_TOKEN", GIT_TOKEN)
        .secret("job token", JOB_TOKEN)
        .secret("API_KEY", api_key)
        .add("the Authorization header value", header.as_bytes());

    let running = reporting(&job, &orch)
        .env("SOLSTICE_REPO_URL", http.url("r.git"))
        .env("SOLSTICE_SECRETS_FILE", &secrets)
        .env("SOLSTICE_GIT_TOKEN", GIT_TOKEN)
        .spawn();
    let mut leaks = Vec::new();
    wait_until(DEADLINE, "git to reach the held server", || {
        http.waiting() > 0
    });
    let during_fetch =
        sample_command_lines(&needles, running.pid(), "during the fetch", &mut leaks);

    // The secrets file is read once: what happens to it now changes nothing.
    let rewritten = "rewritten-after-start-0000";
    write_mode(
        &secrets,
        format!("API_KEY: \"{rewritten}\"\nNEW_ONE: \"added-later-1111\"\n").as_bytes(),
        0o644,
    );
    http.release();
    wait_until(DEADLINE, "the job to start", || {
        running.stdout_so_far().contains("job waiting")
    });
    let during_job = sample_command_lines(&needles, running.pid(), "during the job", &mut leaks);
    fs::write(&go, "").unwrap();
    let out = running.wait(DEADLINE);
    out.assert_code(0).assert_stdout_contains("job done\n");
    check_delivery(&orch, JOB_ID, JOB_TOKEN, &job.spool(), &out);

    assert!(
        during_fetch
            .iter()
            .any(|c| c.contains("remote-http") || c.starts_with("git")),
        "git was not caught in the act; the runner's descendants were {during_fetch:?}"
    );
    assert!(
        during_job.iter().any(|c| c.contains("job.sh")),
        "the job was not caught in the act; the runner's descendants were {during_job:?}"
    );
    assert!(
        http.authorization_headers().contains(&header),
        "the token did not arrive as an Authorization header: {:?}",
        http.authorization_headers()
    );
    // Nowhere on the way: command lines, .git, the console, spool, upload.
    files_with(&needles, &job.workdir().join(".git"), &mut leaks);
    leaks.extend(all_leaks(&needles, &out, &job.spool(), Some(&orch)));
    assert_no_leaks(&leaks, &out);

    // The job's environment: the secrets file's secrets, as they were at
    // the start, and neither token nor git's header configuration.
    let env = fs::read(&env_file).unwrap();
    let mut job_leaks = Vec::new();
    let mut tokens = Needles::new();
    tokens
        .secret("SOLSTICE_GIT_TOKEN", GIT_TOKEN)
        .secret("job token", JOB_TOKEN)
        .add("the Authorization header value", header.as_bytes())
        .add("git's header configuration", b"GIT_CONFIG_");
    tokens.leaks("the job's environment", &env, &mut job_leaks);
    assert!(job_leaks.is_empty(), "{job_leaks:#?}");
    let env = String::from_utf8_lossy(&env);
    assert!(env.contains(&format!("API_KEY={api_key}\n")), "{env}");
    assert!(
        !env.contains(rewritten) && !env.contains("NEW_ONE"),
        "{env}"
    );
    out.assert_stdout_contains("api=***\n")
        .assert_stdout_contains(&format!("hex={}\n", hex(api_key.as_bytes())))
        .assert_stdout_contains("new=unset\n");
    assert!(
        !out.stderr.contains("can be read by other users"),
        "the secrets file was read again after it changed:\n{out}"
    );
}

#[test]
fn no_secret_on_a_command_line_during_a_workflow_step() {
    let mut fx = Job::empty();
    let go = fx.file("go");
    let go_q = String::from_utf8(sq(go.to_str().unwrap().as_bytes())).unwrap();
    let kdl = format!(
        r#"job "ci" {{
    secrets "API_KEY"
    step "wait" {{
        secrets "OTHER"
        run "echo step waiting; i=0; while [ ! -e {go} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; echo step done"
    }}
}}
"#,
        go = go_q.replace('"', "\\\"")
    );
    fx.repo.write(WORKFLOW, kdl);
    fx.commit("workflow");
    let (api, other) = ("api-value-6021", "other value 1602");
    let secrets = secrets_file(&fx, &[("API_KEY", api), ("OTHER", other)]);
    let mut needles = Needles::new();
    needles.secret("API_KEY", api).secret("OTHER", other);
    let running = fx
        .runner()
        .env("SOLSTICE_SECRETS_FILE", &secrets)
        .env("SOLSTICE_JOB_TOKEN", JOB_TOKEN)
        .spawn();
    wait_until(DEADLINE, "the step to start", || {
        running.stdout_so_far().contains("step waiting")
    });
    let mut leaks = Vec::new();
    let during = sample_command_lines(&needles, running.pid(), "during the step", &mut leaks);
    fs::write(&go, "").unwrap();
    let out = running.wait(DEADLINE);
    out.assert_code(0).assert_stdout_contains("step done\n");
    assert!(
        during.iter().any(|c| c.contains("step-1.sh")),
        "the step was not caught in the act: {during:?}"
    );
    assert_no_leaks(&leaks, &out);
}

// ---------------------------------------------------------------------------
// The secrets file itself
// ---------------------------------------------------------------------------

/// A `--dry-run` of the runner: it reads the secrets file and builds the
/// masker, then stops.
fn dry_run(tmp: &TempDir) -> Runner {
    Runner::new().args([
        "--repo-url",
        "/nonexistent/repo",
        "--commit",
        COMMIT_ZEROS,
        "--workdir",
        tmp.join("wd").to_str().unwrap(),
        "--dry-run",
    ])
}

#[test]
fn values_under_4_bytes_are_refused_with_a_warning_naming_them() {
    let tmp = TempDir::new("secrets-short");
    let file = write_mode(
        &tmp.join("secrets.yaml"),
        b"SHORT: \"Zq9\"\nEMPTY: \"\"\nFOUR: \"k9#Q\"\nLONGER: \"fine-value-1\"\n",
        0o600,
    );
    let out = dry_run(&tmp)
        .env("SOLSTICE_SECRETS_FILE", &file)
        .env("SOLSTICE_JOB_TOKEN", "qX7")
        .env("SOLSTICE_GIT_TOKEN", "wV5")
        .run(DEADLINE);
    out.assert_code(0);
    let msgs = messages(&out);
    let warned = |what: &str| {
        msgs.iter()
            .any(|m| m.contains(what) && m.contains("not masked"))
    };
    for what in [
        "secret SHORT",
        "secret EMPTY",
        "the job token",
        "SOLSTICE_GIT_TOKEN",
    ] {
        assert!(warned(what), "no warning naming {what}:\n{out}");
    }
    for what in ["secret FOUR", "secret LONGER"] {
        assert!(!warned(what), "{what} is long enough to mask:\n{out}");
    }
    assert!(
        msgs.iter().any(|m| m.contains("shorter than 4 bytes")),
        "the warning gives no reason:\n{out}"
    );
    for value in ["Zq9", "qX7", "wV5"] {
        assert!(
            !out.all_output().contains(value),
            "the value {value:?} was printed:\n{out}"
        );
    }
}

#[test]
fn a_secrets_file_other_users_can_read_draws_a_warning() {
    let tmp = TempDir::new("secrets-mode");
    for (mode, warns) in [
        (0o644, true),
        (0o640, true),
        (0o604, true),
        (0o600, false),
        (0o400, false),
    ] {
        let file = write_mode(
            &tmp.join("secrets.yaml"),
            b"API_KEY: \"mode-test-value\"\n",
            mode,
        );
        let out = dry_run(&tmp)
            .env("SOLSTICE_SECRETS_FILE", &file)
            .run(DEADLINE);
        out.assert_code(0);
        let warning = messages(&out)
            .into_iter()
            .find(|m| m.contains("can be read by other users"));
        match (warns, warning) {
            (true, Some(w)) => assert!(
                w.contains(file.to_str().unwrap()) && w.contains("chmod 600"),
                "mode {mode:o}: {w}"
            ),
            (true, None) => panic!("mode {mode:o} drew no warning:\n{out}"),
            (false, Some(w)) => panic!("mode {mode:o} drew a warning: {w}"),
            (false, None) => {}
        }
        assert!(!out.all_output().contains("mode-test-value"), "{out}");
    }
}

#[test]
fn invalid_secret_names_are_251_with_their_position() {
    let tmp = TempDir::new("secrets-names");
    for (text, line, col, name) in [
        (
            "OK: \"fine-value\"\n# a comment\nmy-key: \"value-abc123\"\n",
            3,
            1,
            "my-key",
        ),
        ("1ABC: \"value-abc123\"\n", 1, 1, "1ABC"),
        ("'SP ACE': \"value-abc123\"\n", 1, 1, "SP ACE"),
    ] {
        let file = write_mode(&tmp.join("secrets.yaml"), text.as_bytes(), 0o600);
        // Both before a dry run and before a real one.
        for dry in [true, false] {
            let r = if dry {
                dry_run(&tmp)
            } else {
                Runner::new()
                    .env("SOLSTICE_REPO_URL", "/nonexistent/repo")
                    .env("SOLSTICE_COMMIT_SHA", COMMIT_ZEROS)
                    .env("SOLSTICE_WORKDIR", tmp.join("wd-real"))
            };
            let out = r.env("SOLSTICE_SECRETS_FILE", &file).run(DEADLINE);
            out.assert_code(251);
            out.assert_stderr_contains(&format!("{}:{line}:{col}: ", file.display()))
                .assert_stderr_contains(&format!("{name:?}"));
            assert!(
                !out.all_output().contains("value-abc123"),
                "a value was printed:\n{out}"
            );
            assert!(
                !tmp.join("wd-real").exists(),
                "a refused secrets file had side effects"
            );
        }
    }
}

#[test]
fn secrets_file_errors_never_print_a_value() {
    // The YAML reader quotes the offending line of a file it refuses; in
    // the secrets file that line holds a secret, and no masker exists yet.
    let tmp = TempDir::new("secrets-errors");
    let cases: [(&str, &str, &str); 4] = [
        (
            "API_KEY: \"hunter2-topsecret\\q\"\n",
            "1:",
            "hunter2-topsecret",
        ),
        (
            "A: \"first-value-1111\"\nA: \"second-value-2222\"\n",
            "2:1:",
            "second-value-2222",
        ),
        (
            "B: 'unterminated-secret-3333\n",
            "1:",
            "unterminated-secret-3333",
        ),
        (
            "OK: \"fine\"\nC: \"quoted-value-4444\" trailing\n",
            "2:",
            "quoted-value-4444",
        ),
    ];
    let mut failures = Vec::new();
    for (text, at, value) in cases {
        let file = write_mode(&tmp.join("secrets.yaml"), text.as_bytes(), 0o600);
        let out = dry_run(&tmp)
            .env("SOLSTICE_SECRETS_FILE", &file)
            .run(DEADLINE);
        out.assert_code(251);
        out.assert_stderr_contains(&format!("{}:{at}", file.display()));
        if out.all_output().contains(value) {
            failures.push(format!("{text:?}: the value was printed:\n{}", out.stderr));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn job_file_errors_never_print_the_token() {
    let tmp = TempDir::new("secrets-jobfile");
    let token = "jobfile-token-5555";
    let job_file = write_mode(
        &tmp.join("job.yaml"),
        format!("repo_url: /nonexistent/repo\ntoken: \"{token}\\q\"\n").as_bytes(),
        0o600,
    );
    let out = dry_run(&tmp)
        .env("SOLSTICE_JOB_FILE", &job_file)
        .run(DEADLINE);
    out.assert_code(251);
    out.assert_stderr_contains(&format!("{}:2:", job_file.display()));
    assert!(
        !out.all_output().contains(token),
        "the token was printed:\n{out}"
    );
}

// ---------------------------------------------------------------------------
// Least privilege in workflows
// ---------------------------------------------------------------------------

const REPORT: &str = r#"for n in SHARED A_ONLY B_ONLY UNUSED; do
    eval "set=\${$n+set} v=\${$n-}"
    printf '%s %s=%s %s\n' "$SOLSTICE_STEP" "$n" "${set:-unset}" "$(printf '%s' "$v" | od -An -v -tx1 | tr -d ' \n')"
done
echo "$SOLSTICE_STEP tokens=${SOLSTICE_JOB_TOKEN-unset},${SOLSTICE_GIT_TOKEN-unset}"
"#;

const LEAST: &[(&str, &str)] = &[
    ("SHARED", "shared 'value' 1001"),
    ("A_ONLY", "only-for-a \"2002\""),
    ("B_ONLY", "only-for-b\\3003"),
    ("UNUSED", "never-named-4004"),
];

/// Both tokens in the runner's environment: no step and no job.sh may see them.
fn with_tokens(r: Runner) -> Runner {
    r.env("SOLSTICE_JOB_TOKEN", JOB_TOKEN)
        .env("SOLSTICE_GIT_TOKEN", GIT_TOKEN)
}

/// The REPORT lines a step prints when it sees exactly `seen`.
fn report_lines(step: &str, seen: &[&str]) -> String {
    LEAST
        .iter()
        .map(|(n, v)| {
            if seen.contains(n) {
                format!("{step} {n}=set {}\n", hex(v.as_bytes()))
            } else {
                format!("{step} {n}=unset \n")
            }
        })
        .chain([format!("{step} tokens=unset,unset\n")])
        .collect()
}

#[test]
fn a_step_sees_only_the_secrets_it_or_its_job_names() {
    let fx = Job::workflow_with(
        r#"job "ci" {
    secrets "SHARED"
    step "a" {
        secrets "A_ONLY"
        run "sh .solstice/report.sh"
    }
    step "b" {
        secrets "B_ONLY" "A_ONLY"
        run "sh .solstice/report.sh"
    }
    step "c" run="sh .solstice/report.sh"
}
job "bare" {
    step "d" {
        secrets "UNUSED"
        run "sh .solstice/report.sh"
    }
    step "e" run="sh .solstice/report.sh"
}
"#,
        |r| {
            r.write(".solstice/report.sh", REPORT);
        },
    );
    let secrets = secrets_file(&fx, LEAST);
    let out = with_tokens(fx.runner())
        .env("SOLSTICE_SECRETS_FILE", &secrets)
        .env("SOLSTICE_JOB", "ci")
        .run(DEADLINE);
    out.assert_code(0);
    let want = report_lines("a", &["SHARED", "A_ONLY"])
        + &report_lines("b", &["SHARED", "A_ONLY", "B_ONLY"])
        + &report_lines("c", &["SHARED"]);
    assert_eq!(out.stdout, want, "{out}");

    let out = with_tokens(fx.runner())
        .env("SOLSTICE_SECRETS_FILE", &secrets)
        .env("SOLSTICE_JOB", "bare")
        .run(DEADLINE);
    out.assert_code(0);
    let want = report_lines("d", &["UNUSED"]) + &report_lines("e", &[]);
    assert_eq!(out.stdout, want, "{out}");
}

#[test]
fn job_sh_sees_every_secret() {
    let fx = Job::raw_script(format!("#!/bin/sh\nSOLSTICE_STEP=job.sh\n{REPORT}").as_bytes());
    let secrets = secrets_file(&fx, LEAST);
    let out = with_tokens(fx.runner())
        .env("SOLSTICE_SECRETS_FILE", &secrets)
        .run(DEADLINE);
    out.assert_code(0);
    assert_eq!(
        out.stdout,
        report_lines("job.sh", &["SHARED", "A_ONLY", "B_ONLY", "UNUSED"]),
        "{out}"
    );
}

/// 1-based line and column of the `n`-th (from 0) occurrence of `needle`.
fn position(text: &str, needle: &str, n: usize) -> (usize, usize) {
    let at = text.match_indices(needle).nth(n).expect("needle in text").0;
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap().chars().count() + 1;
    (line, col)
}

const NAMES_MISSING: &str = r#"job "ci" {
    secrets "SHARED" "ALSO_MISSING"
    step "a" {
        secrets "NOPE"
        run "echo step-ran"
    }
}
"#;

#[test]
fn a_secret_missing_from_the_file_is_251_at_its_position_in_run_and_check() {
    let fx = Job::workflow(NAMES_MISSING);
    let secrets = secrets_file(&fx, &LEAST[..1]);
    let (l1, c1) = position(NAMES_MISSING, "\"ALSO_MISSING\"", 0);
    let (l2, c2) = position(NAMES_MISSING, "\"NOPE\"", 0);

    // Running: refused before any step.
    let out = fx
        .runner()
        .env("SOLSTICE_SECRETS_FILE", &secrets)
        .run(DEADLINE);
    out.assert_code(251);
    for (l, c, name) in [(l1, c1, "ALSO_MISSING"), (l2, c2, "NOPE")] {
        out.assert_stderr_contains(&format!(
            ".solstice/workflow.kdl:{l}:{c}: no secret \"{name}\" in the secrets file"
        ));
    }
    assert!(!out.stdout.contains("step-ran"), "a step ran:\n{out}");

    // `check` with the secrets file: the same errors.
    let file = fx.repo.path().join(".solstice/workflow.kdl");
    let check = |secrets_file: &Path| {
        Runner::new()
            .arg("check")
            .arg(&file)
            .env("SOLSTICE_SECRETS_FILE", secrets_file)
            .run(DEADLINE)
    };
    let out = check(&secrets);
    out.assert_code(251);
    for (l, c, name) in [(l1, c1, "ALSO_MISSING"), (l2, c2, "NOPE")] {
        out.assert_stderr_contains(&format!(
            "{}:{l}:{c}: no secret \"{name}\" in the secrets file",
            file.display()
        ));
    }

    // Without a secrets file the names cannot be checked: a warning only.
    let absent = fx.file("no-such-secrets.yaml");
    let out = check(&absent);
    out.assert_code(0);
    assert!(
        messages(&out)
            .iter()
            .any(|m| m.contains("no secrets file") && m.contains(absent.to_str().unwrap())),
        "{out}"
    );
    let out = fx
        .runner()
        .env("SOLSTICE_SECRETS_FILE", &absent)
        .run(DEADLINE);
    out.assert_code(0).assert_stdout_contains("step-ran\n");
    assert!(
        messages(&out)
            .iter()
            .any(|m| m.contains("names secrets but there is no secrets file")),
        "{out}"
    );

    // All names present: check passes without a warning.
    let full = secrets_file(
        &fx,
        &[
            ("SHARED", "s-1111"),
            ("ALSO_MISSING", "s-2222"),
            ("NOPE", "s-3333"),
        ],
    );
    let out = check(&full);
    out.assert_code(0);
    assert!(!out.stderr.contains("WARN"), "{out}");
}

#[test]
fn a_secret_too_big_for_an_environment_variable_is_refused_up_front() {
    // Linux passes at most 128 KiB in one `NAME=value` string; a longer one
    // would make every exec fail with "Argument list too long".
    let fx = Job::raw_script(b"#!/bin/sh\necho ran > ran.txt\n");
    let big = "x".repeat(200 * 1024);
    let secrets = secrets_file(&fx, &[("SMALL", "fine-value"), ("HUGE_CERT", &big)]);
    let wd = fx.file("wd-huge");
    let out = fx
        .runner_in(&wd)
        .env("SOLSTICE_SECRETS_FILE", &secrets)
        .run(DEADLINE);
    out.assert_code(251);
    let msg = out
        .stderr
        .lines()
        .find(|l| l.contains("HUGE_CERT"))
        .unwrap_or_else(|| panic!("no message names the secret:\n{out}"));
    assert!(msg.contains("131070") || msg.contains("131072"), "{msg}");
    assert!(msg.contains(&format!("{}:2:", secrets.display())), "{msg}");
    assert!(!out.all_output().contains(&big[..64]), "the value leaked");
    assert!(!wd.exists(), "the checkout happened before the refusal");
}

#[test]
fn check_reads_the_secrets_file_a_run_would_read_from_the_job_file() {
    let fx = Job::workflow(NAMES_MISSING);
    let secrets = secrets_file(&fx, &LEAST[..1]);
    let job_file = fx.file("job.yaml");
    fs::write(&job_file, format!("secrets_file: {}\n", secrets.display())).unwrap();
    let wf = fx.repo.path().join(".solstice/workflow.kdl");
    // No SOLSTICE_SECRETS_FILE: the job file's key names it, as for a run.
    let out = Runner::new()
        .arg("check")
        .arg(&wf)
        .env("SOLSTICE_JOB_FILE", &job_file)
        .run(DEADLINE);
    out.assert_code(251);
    out.assert_stderr_contains("no secret \"NOPE\" in the secrets file");
    // A workflow that names no secret draws no warning about a missing file.
    let plain = fx.file("plain.kdl");
    fs::write(&plain, "step run=\"true\"\n").unwrap();
    let out = Runner::new().arg("check").arg(&plain).run(DEADLINE);
    out.assert_code(0);
    assert!(!out.stderr.contains("secrets file"), "{out}");
}
