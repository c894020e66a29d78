//! Library-level tests of the log spool and the uploader: the timestamp and
//! URL helpers, the exact event JSON, and whole upload runs against the test
//! orchestrator in each of its fault modes.

mod common;

use common::delivery;
use common::orchestrator::{base64, sha256, Fault, Orchestrator, Request, StatusRecord};
use common::tmp::{free_port, TempDir};
use miniserde::{json, Deserialize, Serialize};
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use workflow_runner::config::url::{parse_url, Endpoint};
use workflow_runner::error::Kind;
use workflow_runner::http::{get_to_file, put_file, Client, PutFile};
use workflow_runner::logs::spool::{rfc3339_millis, Spool, Stream};
use workflow_runner::logs::upload::{Config, OnCancel, Outcome, Uploader};
use workflow_runner::report::{JobState, Status, StepReport, StepState};

// ---------------------------------------------------------------- helpers

/// Captures every log message, to check what the uploader says (and that
/// it never says a token).
struct Capture;

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static CAPTURE: Capture = Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let line = format!("{} {}", record.level(), record.args());
        LOGS.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
    fn flush(&self) {}
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&CAPTURE).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Debug);
    });
}

fn logs_mentioning(s: &str) -> Vec<String> {
    LOGS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|l| l.contains(s))
        .cloned()
        .collect()
}

const LONG_ESCAPED: u64 = 997;

/// The i-th event of the test job: mostly build-like lines, plus empty
/// lines, invalid UTF-8, non-ASCII and control characters, and long pieces,
/// some of which grow past one request (256 KiB) once escaped.
fn event(i: u64) -> (Stream, Option<&'static str>, Vec<u8>) {
    let stream = match i % 5 {
        0 => Stream::Stderr,
        3 => Stream::Runner,
        _ => Stream::Stdout,
    };
    let step = match (i / 100) % 4 {
        0 => None,
        1 => Some("build"),
        2 => Some("test \"unit\"\t☃"),
        _ => Some("deploy"),
    };
    let text = if i % 1000 == LONG_ESCAPED {
        // Each \x01 becomes \u0001: about 280 KB of JSON from 50 KB of text.
        (0..50_000u32)
            .map(|k| if k % 10 == 0 { b'"' } else { 1 })
            .collect()
    } else if i % 250 == 7 {
        let mut t = format!("long {i}: ").into_bytes();
        t.extend((0..40_000u32).map(|k| b'a' + (k % 26) as u8));
        t
    } else if i.is_multiple_of(13) {
        let mut t = format!("bad utf-8 {i}: ").into_bytes();
        t.extend_from_slice(b"\xff\xfe and a cut sequence \xe2\x82");
        t
    } else if i.is_multiple_of(7) {
        format!("grüße {i} ✓ 🚀 \x1b[31mred\x1b[0m\ttab \\ back \"quoted\"\r").into_bytes()
    } else if i.is_multiple_of(11) {
        Vec::new()
    } else {
        format!(
            "line {i:>7}: Compiling crate-{:02} v0.{}.0 (/build/src/crate-{:02}) ........",
            i % 50,
            i % 9,
            i % 50
        )
        .into_bytes()
    };
    (stream, step, text)
}

/// Appends events 0..n in bursts of varying size, flushing after each burst
/// as the runner does after each pipe read.
fn write_job(spool: &Mutex<Spool>, n: u64) {
    let mut rng: u64 = 0x1234_5678;
    let mut i = 0;
    let mut burst = 0;
    while i < n {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let size = 1 + rng % 300;
        let mut s = spool.lock().unwrap();
        for _ in 0..size.min(n - i) {
            let (stream, step, text) = event(i);
            s.append(stream, step, &text);
            i += 1;
        }
        s.flush().expect("flush the spool");
        drop(s);
        burst += 1;
        if burst % 8 == 0 {
            // Shapes the output into bursts with gaps, like a real build.
            std::thread::sleep(Duration::from_millis(3));
        }
    }
}

fn final_status() -> Status {
    Status {
        state: JobState::Failed,
        exit_code: Some(3),
        reason: Some("step \"test \\\"unit\\\"\" failed with exit code 3".into()),
        step: None,
        steps: vec![
            StepReport {
                name: "build".into(),
                state: StepState::Succeeded,
                exit_code: Some(0),
                duration_ms: 1234,
                outputs: vec![("version".into(), "1.2.3".into())],
            },
            StepReport {
                name: "test \"unit\"".into(),
                state: StepState::Failed,
                exit_code: Some(3),
                duration_ms: 56,
                outputs: Vec::new(),
            },
            StepReport {
                name: "deploy".into(),
                state: StepState::Skipped,
                exit_code: None,
                duration_ms: 0,
                outputs: Vec::new(),
            },
        ],
        annotations: Vec::new(),
        annotations_dropped: 0,
        artifacts: Vec::new(),
    }
}

struct Run {
    _dir: TempDir,
    spool: PathBuf,
    token: String,
    outcome: Outcome,
    acknowledged: bool,
    finish_took: Duration,
    write_took: Duration,
}

/// The uploader's settings for a test job, without a heartbeat.
fn config(url: &str, job: &str, token: &str) -> Config {
    Config {
        endpoint: parse_url(url).expect("test URL"),
        job_id: job.into(),
        token: token.into(),
        heartbeat: None,
    }
}

/// A cancel callback for jobs that expect none.
fn no_cancel() -> OnCancel {
    Box::new(|reason: &str| panic!("unexpected cancel: {reason:?}"))
}

/// A whole job: the uploader starts, a writer thread produces `n` events,
/// then `finish` with `deadline`.
fn run_job(name: &str, url: &str, job: &str, token: &str, n: u64, deadline: Duration) -> Run {
    run_job_with(name, config(url, job, token), no_cancel(), n, deadline)
}

fn run_job_with(name: &str, cfg: Config, on_cancel: OnCancel, n: u64, deadline: Duration) -> Run {
    init_logs();
    let dir = TempDir::new(name);
    let path = dir.join("spool.ndjson");
    let spool = Arc::new(Mutex::new(Spool::create(&path).expect("create spool")));
    let token = cfg.token.clone();
    let up = Uploader::start(cfg, path.clone(), on_cancel);
    let started = Instant::now();
    let writer = {
        let spool = spool.clone();
        std::thread::spawn(move || write_job(&spool, n))
    };
    writer.join().expect("writer thread");
    spool.lock().unwrap().flush().expect("flush");
    let write_took = started.elapsed();
    let t = Instant::now();
    let outcome = up.finish(final_status(), deadline);
    Run {
        _dir: dir,
        spool: path,
        token,
        acknowledged: outcome == Outcome::Delivered,
        outcome,
        finish_took: t.elapsed(),
        write_took,
    }
}

#[derive(Deserialize, Serialize)]
struct Event {
    seq: u64,
    ts: String,
    stream: String,
    step: Option<String>,
    text: String,
}

fn is_rfc3339_millis(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Checks that the spool holds exactly events 0..n, each as miniserde
/// would serialise it.
fn check_spool(file: &[u8], n: u64) {
    assert!(
        file.is_empty() || file.ends_with(b"\n"),
        "spool ends mid-line"
    );
    let mut count = 0;
    for (i, line) in file
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let line = std::str::from_utf8(line).expect("spool lines are UTF-8");
        let ev: Event = json::from_str(line)
            .unwrap_or_else(|e| panic!("line {i} is not an event ({e}): {line:.200}"));
        assert_eq!(ev.seq, i as u64, "seq out of order");
        assert!(is_rfc3339_millis(&ev.ts), "bad ts {:?}", ev.ts);
        let (stream, step, text) = event(i as u64);
        assert_eq!(ev.stream, stream.as_str());
        assert_eq!(ev.step.as_deref(), step);
        assert_eq!(ev.text, String::from_utf8_lossy(&text), "text of event {i}");
        assert_eq!(
            json::to_string(&ev),
            line,
            "event {i} is not byte for byte miniserde's JSON"
        );
        count += 1;
    }
    assert_eq!(count, n, "number of events");
}

/// The delivery guarantees every fault mode must keep: the common delivery
/// check, and what this workload adds (exact events, the first and final
/// statuses' contents, batches).
fn check_delivery(orch: &Orchestrator, job: &str, run: &Run, n: u64) -> StatusRecord {
    assert!(
        run.acknowledged,
        "finish did not report success but {:?} (took {:?})",
        run.outcome, run.finish_took
    );
    let context = format!("finish: {:?} in {:?}", run.outcome, run.finish_took);
    let last = delivery::check_delivery(orch, job, &run.token, &run.spool, &context);
    let file = std::fs::read(&run.spool).expect("read spool");
    check_spool(&file, n);

    let requests = orch.requests(job);
    match requests.first() {
        Some(Request::Status(s)) => assert_eq!(
            s.raw,
            format!(
                r#"{{"state":"running","exit_code":null,"log_length":0,"runner_version":"{}","steps":[]}}"#,
                env!("CARGO_PKG_VERSION")
            ),
            "first request"
        ),
        other => panic!("the first request was not the running status: {other:?}"),
    }
    assert_eq!(last.state, "failed");
    assert_eq!(last.exit_code, Some(3));
    assert_eq!(last.runner_version, env!("CARGO_PKG_VERSION"));
    let steps: Vec<_> = last
        .steps
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.state.as_str(),
                s.exit_code,
                s.duration_ms,
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("build", "succeeded", Some(0), 1234),
            ("test \"unit\"", "failed", Some(3), 56),
            ("deploy", "skipped", None, 0)
        ]
    );
    for f in orch.statuses(job).iter().filter(|s| s.is_final()) {
        assert_eq!(
            f.server_length, f.log_length,
            "a final status was sent before the whole log: {f:?}"
        );
    }

    for r in &requests {
        if let Request::Log {
            offset,
            len,
            outcome: 200,
        } = r
        {
            let body = &file[*offset as usize..*offset as usize + len];
            let lines = body.iter().filter(|&&b| b == b'\n').count();
            assert!(
                *len <= 256 * 1024 || lines == 1,
                "a {len}-byte batch of {lines} lines"
            );
        }
    }
    assert!(
        requests
            .iter()
            .any(|r| matches!(r, Request::Log { len, outcome: 200, .. } if *len > 256 * 1024)),
        "the workload has lines longer than a batch, which must go whole"
    );
    last
}

fn assert_token_never_logged(token: &str) {
    let leaked = logs_mentioning(token);
    assert!(leaked.is_empty(), "token in log messages: {leaked:?}");
}

// ------------------------------------------------------------- rfc3339

fn at_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

#[test]
fn rfc3339_epoch_and_known_dates() {
    assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    // 2026-11-27T16:29:17.123Z, from `date -u -d ... +%s`.
    assert_eq!(
        rfc3339_millis(at_ms(1_795_796_957_123)),
        "2026-11-27T16:29:17.123Z"
    );
    assert_eq!(
        rfc3339_millis(at_ms(951_782_400_000)),
        "2000-02-29T00:00:00.000Z"
    );
    assert_eq!(
        rfc3339_millis(at_ms(1_000_000_000_999)),
        "2001-09-09T01:46:40.999Z"
    );
    assert_eq!(
        rfc3339_millis(at_ms(2_147_483_647_000)),
        "2038-01-19T03:14:07.000Z"
    );
    // Sub-millisecond parts are cut, not rounded.
    assert_eq!(
        rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(1_999_999)),
        "1970-01-01T00:00:00.001Z"
    );
}

#[test]
fn rfc3339_leap_years() {
    const DAY: i64 = 86_400_000;
    let feb28 = |y_ms: i64| {
        [
            rfc3339_millis(at_ms(y_ms)),
            rfc3339_millis(at_ms(y_ms + DAY)),
        ]
    };
    // 2024: divisible by 4.
    assert_eq!(
        feb28(1_709_078_400_000),
        ["2024-02-28T00:00:00.000Z", "2024-02-29T00:00:00.000Z"]
    );
    // 2023: not a leap year.
    assert_eq!(
        feb28(1_677_542_400_000),
        ["2023-02-28T00:00:00.000Z", "2023-03-01T00:00:00.000Z"]
    );
    // 2100: divisible by 100 but not by 400.
    assert_eq!(
        feb28(4_107_456_000_000),
        ["2100-02-28T00:00:00.000Z", "2100-03-01T00:00:00.000Z"]
    );
    // 2000: divisible by 400.
    assert_eq!(
        feb28(951_696_000_000),
        ["2000-02-28T00:00:00.000Z", "2000-02-29T00:00:00.000Z"]
    );
    // The last millisecond of a leap year, and the day after.
    assert_eq!(
        rfc3339_millis(at_ms(1_735_689_599_999)),
        "2024-12-31T23:59:59.999Z"
    );
    assert_eq!(
        rfc3339_millis(at_ms(1_735_689_600_000)),
        "2025-01-01T00:00:00.000Z"
    );
}

#[test]
fn rfc3339_before_the_epoch_and_out_of_range() {
    assert_eq!(rfc3339_millis(at_ms(-1)), "1969-12-31T23:59:59.999Z");
    assert_eq!(
        rfc3339_millis(UNIX_EPOCH - Duration::from_nanos(1)),
        "1969-12-31T23:59:59.999Z"
    );
    // 1900 is not a leap year.
    assert_eq!(
        rfc3339_millis(at_ms(-2_203_891_200_000)),
        "1900-03-01T00:00:00.000Z"
    );
    assert_eq!(
        rfc3339_millis(at_ms(-2_203_891_200_001)),
        "1900-02-28T23:59:59.999Z"
    );
    // Four-digit years only: clamped rather than malformed.
    assert_eq!(
        rfc3339_millis(at_ms(253_402_300_800_000)),
        "9999-12-31T23:59:59.999Z"
    );
    assert_eq!(
        rfc3339_millis(at_ms(-62_167_219_200_001)),
        "0000-01-01T00:00:00.000Z"
    );
}

#[test]
fn rfc3339_agrees_with_a_day_by_day_count() {
    // Walks 1970..2400 a day at a time with a naive calendar.
    let mut ms: i64 = 0;
    for year in 1970..2400 {
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let days = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        for (m, &len) in days.iter().enumerate() {
            for d in 1..=len {
                if d == 1 || d == len {
                    let want = format!("{year:04}-{:02}-{d:02}T13:07:05.042Z", m + 1);
                    assert_eq!(rfc3339_millis(at_ms(ms + 47_225_042)), want);
                }
                ms += 86_400_000;
            }
        }
    }
}

// ------------------------------------------------------------ parse_url

fn ep(host: &str, port: u16, prefix: &str) -> Endpoint {
    Endpoint {
        host: host.into(),
        port,
        prefix: prefix.into(),
    }
}

#[test]
fn parse_url_accepts_host_port_and_prefix() {
    assert_eq!(
        parse_url("http://10.0.2.2:8080").unwrap(),
        ep("10.0.2.2", 8080, "")
    );
    assert_eq!(
        parse_url("http://10.0.2.2:8080/").unwrap(),
        ep("10.0.2.2", 8080, "")
    );
    assert_eq!(
        parse_url("HTTP://orchestrator.local:1/ci/api/").unwrap(),
        ep("orchestrator.local", 1, "/ci/api")
    );
    assert_eq!(parse_url("http://host_gw").unwrap(), ep("host_gw", 80, ""));
    assert_eq!(
        parse_url("http://[fe80::1]:65535/x").unwrap(),
        ep("fe80::1", 65535, "/x")
    );
    assert_eq!(parse_url("http://[::1]").unwrap(), ep("::1", 80, ""));
    assert_eq!(
        parse_url("http://h:9/a%20b").unwrap().to_string(),
        "http://h:9/a%20b"
    );
    assert_eq!(
        parse_url("http://[::1]:8/p").unwrap().to_string(),
        "http://[::1]:8/p"
    );
}

#[test]
fn parse_url_refuses_https_clearly() {
    let e = parse_url("https://orchestrator:443").unwrap_err();
    assert_eq!(e.kind, Kind::Input);
    assert!(e.msg.contains("SOLSTICE_ORCHESTRATOR_URL"), "{}", e.msg);
    assert!(e.msg.contains("plain HTTP"), "{}", e.msg);
    assert!(e.msg.contains("host side of the VM network"), "{}", e.msg);
    assert!(parse_url("HTTPS://x:1")
        .unwrap_err()
        .msg
        .contains("plain HTTP"));
}

#[test]
fn parse_url_refuses_malformed_urls() {
    for bad in [
        "",
        "orchestrator:8080",
        "ftp://h:1",
        "http://",
        "http://:8080",
        "http://h:",
        "http://h:0",
        "http://h:65536",
        "http://h:+80",
        "http://h:8x",
        "http://h:1:2",
        "http://h o:1",
        "http://h:1/a b",
        "http://h:1/?x=1",
        "http://h:1#frag",
        "http://[::1",
        "http://[zz]:1",
        "http://[::1]x",
        "http://hé:1",
    ] {
        let e = parse_url(bad).expect_err(bad);
        assert_eq!(e.kind, Kind::Input, "{bad}");
        assert!(
            e.msg.contains("SOLSTICE_ORCHESTRATOR_URL"),
            "{bad}: {}",
            e.msg
        );
    }
}

#[test]
fn parse_url_refuses_userinfo_without_echoing_it() {
    for url in [
        "http://user:hunter2@h:1",
        "https://user:hunter2@h:1",
        "http://hunter2@h",
    ] {
        let e = parse_url(url).unwrap_err();
        assert!(e.msg.contains("user information"), "{}", e.msg);
        assert!(!e.to_string().contains("hunter2"), "{}", e);
    }
}

// ---------------------------------------------------------------- spool

#[test]
fn spool_writes_exact_json_events() {
    let dir = TempDir::new("spool-json");
    let path = dir.join("s.ndjson");
    let mut s = Spool::create(&path).unwrap();
    assert_eq!((s.len(), s.seq()), (0, 0));
    let texts: [&[u8]; 8] = [
        b"hello",
        b"",
        b"quote \" backslash \\ slash / tab \t cr \r nul \0 esc \x1b del \x7f",
        b"invalid \xc3\x28 \xff end",
        "unicode ✓ 🚀 \u{2028}".as_bytes(),
        b"exactly8",
        b"1234567\"",
        b"\x1f",
    ];
    let before = SystemTime::now();
    for (i, t) in texts.iter().enumerate() {
        let step = if i % 2 == 0 {
            Some("step \"one\"")
        } else {
            None
        };
        let stream = [Stream::Stdout, Stream::Stderr, Stream::Runner][i % 3];
        s.append(stream, step, t);
    }
    assert_eq!(s.len(), 0, "append only buffers");
    assert_eq!(s.seq(), texts.len() as u64);
    s.flush().unwrap();
    let after = SystemTime::now();
    let file = std::fs::read(&path).unwrap();
    assert_eq!(s.len(), file.len() as u64);
    let lines: Vec<&str> = std::str::from_utf8(&file).unwrap().lines().collect();
    assert_eq!(lines.len(), texts.len());
    for (i, line) in lines.iter().enumerate() {
        let ev: Event = json::from_str(line).unwrap();
        assert!(
            ev.ts >= rfc3339_millis(before) && ev.ts <= rfc3339_millis(after),
            "{}",
            ev.ts
        );
        let want = Event {
            seq: i as u64,
            ts: ev.ts.clone(),
            stream: ["stdout", "stderr", "runner"][i % 3].to_string(),
            step: if i % 2 == 0 {
                Some("step \"one\"".to_string())
            } else {
                None
            },
            text: String::from_utf8_lossy(texts[i]).into_owned(),
        };
        assert_eq!(*line, json::to_string(&want), "event {i}");
    }
    assert!(
        lines[3].contains("invalid \u{fffd}( \u{fffd} end"),
        "{}",
        lines[3]
    );
    assert!(
        lines[2].contains(r#"nul \u0000 esc \u001b"#),
        "{}",
        lines[2]
    );
}

#[test]
fn spool_escaping_is_byte_for_byte_miniserdes() {
    // The spool takes miniserde's escapes per character and skips escape-free
    // words; this compares whole events with miniserde's own output for
    // every byte value at every position within a word, and random bytes.
    let dir = TempDir::new("spool-escape");
    let path = dir.join("s.ndjson");
    let mut s = Spool::create(&path).unwrap();
    let mut texts: Vec<Vec<u8>> = Vec::new();
    for b in 0..=255u8 {
        for pad in 0..17 {
            let mut t = vec![b'a'; pad];
            t.push(b);
            t.extend_from_slice(b"tail-0123456789");
            texts.push(t);
        }
    }
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..3000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let len = (rng % 90) as usize;
        let mut t = Vec::with_capacity(len);
        for _ in 0..len {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Mostly printable, some controls, quotes, backslashes and high bytes.
            t.push(match rng % 8 {
                0 => (rng >> 8) as u8,
                1 => b"\"\\\x1b\t\n\x7f\xe2\x80\xa8"[(rng >> 8) as usize % 9],
                _ => b' ' + (rng >> 8) as u8 % 95,
            });
        }
        texts.push(t);
    }
    for (i, t) in texts.iter().enumerate() {
        let step = ["odd \u{7} \"step\"", "é\\", "plain"][i % 3];
        s.append(Stream::Stderr, Some(step), t);
    }
    s.flush().unwrap();
    let file = std::fs::read_to_string(&path).expect("the spool is UTF-8");
    let mut n = 0;
    for (i, line) in file.lines().enumerate() {
        let ev: Event = json::from_str(line).expect("an event");
        let want = Event {
            seq: i as u64,
            ts: ev.ts.clone(),
            stream: "stderr".into(),
            step: Some(["odd \u{7} \"step\"", "é\\", "plain"][i % 3].into()),
            text: String::from_utf8_lossy(&texts[i]).into_owned(),
        };
        assert_eq!(line, json::to_string(&want), "text {:?}", texts[i]);
        n += 1;
    }
    assert_eq!(n, texts.len());
}

#[test]
fn spool_replaces_invalid_utf8_as_from_utf8_lossy() {
    // Every lead byte with followers at the edges of the valid ranges, whole
    // and cut short, at the end of the text and at each place in a word.
    let edges = [
        0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff,
    ];
    let mut texts: Vec<Vec<u8>> = Vec::new();
    for lead in 0x80..=0xffu8 {
        for &b1 in &edges {
            for b2 in [0x80, 0xbf, 0x41] {
                for (k, b3) in [0x80u8, 0xbf, 0x0a].into_iter().enumerate() {
                    let mut t = vec![b'x'; (lead as usize + k) % 9];
                    t.extend_from_slice(&[lead, b1, b2, b3]);
                    t.truncate(t.len() - (usize::from(b1) % 4).min(3));
                    texts.push(t);
                }
            }
        }
    }
    let dir = TempDir::new("spool-utf8");
    let path = dir.join("s.ndjson");
    let mut s = Spool::create(&path).unwrap();
    for t in &texts {
        s.append(Stream::Stdout, None, t);
    }
    s.flush().unwrap();
    let file = std::fs::read_to_string(&path).expect("the spool is UTF-8");
    let lines: Vec<_> = file.lines().collect();
    assert_eq!(lines.len(), texts.len());
    for (line, t) in lines.iter().zip(&texts) {
        let ev: Event = json::from_str(line).expect("an event");
        assert_eq!(ev.text, String::from_utf8_lossy(t), "text {t:x?}");
        assert_eq!(*line, json::to_string(&ev), "text {t:x?}");
    }
}

#[test]
fn spool_len_counts_flushed_bytes_only() {
    let dir = TempDir::new("spool-len");
    let path = dir.join("s.ndjson");
    let mut s = Spool::create(&path).unwrap();
    for round in 0..3u64 {
        for _ in 0..1000 {
            s.append(Stream::Stdout, Some("x"), &[b'y'; 100]);
        }
        assert_eq!(s.len(), std::fs::metadata(&path).unwrap().len());
        s.flush().unwrap();
        assert_eq!(s.len(), std::fs::metadata(&path).unwrap().len());
        assert_eq!(s.seq(), (round + 1) * 1000);
    }
    // Creating again truncates.
    let s = Spool::create(&path).unwrap();
    assert_eq!(s.len(), 0);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn spool_without_flush_stays_bounded() {
    // A caller that never flushes still gets its events to the file.
    let dir = TempDir::new("spool-bound");
    let path = dir.join("s.ndjson");
    let mut s = Spool::create(&path).unwrap();
    for _ in 0..50_000 {
        s.append(Stream::Stdout, None, &[b'z'; 100]);
    }
    assert!(!s.is_empty(), "append never wrote");
    s.flush().unwrap();
    let file = std::fs::read(&path).unwrap();
    assert_eq!(file.iter().filter(|&&b| b == b'\n').count(), 50_000);
}

#[test]
fn spool_on_a_full_disk_stays_bounded() {
    // /dev/full fails every write with ENOSPC, as a full disk would.
    let full = std::path::Path::new("/dev/full");
    if !full.exists() {
        return;
    }
    let mut s = Spool::create(full).unwrap();
    for _ in 0..300_000 {
        s.append(Stream::Stdout, None, &[b'q'; 100]);
    }
    // About 16 MiB are held (some 110,000 events); the rest are dropped
    // without using up seq numbers, so the file would have no gaps.
    assert!(s.seq() > 50_000 && s.seq() < 200_000, "seq {}", s.seq());
    assert_eq!(s.len(), 0);
    assert!(s.flush().is_err());
}

// --------------------------------------------------------------- upload

const N: u64 = 4000;
const GENEROUS: Duration = Duration::from_secs(30);

#[test]
fn upload_healthy() {
    let token = "tok-healthy-Zq81";
    let orch = Orchestrator::start(token, Fault::Healthy);
    let run = run_job("healthy", &orch.url(), "job-1", token, N, GENEROUS);
    check_delivery(&orch, "job-1", &run, N);
    assert!(orch.wait_for_final(Duration::from_secs(1)).is_some());
    // Keep-alive: far fewer connections than requests.
    let c = orch.counts();
    assert!(c.connections * 4 <= c.total, "{c:?}");
    assert_eq!(c.conflicts, 0, "{c:?}");
    assert_token_never_logged(token);
}

#[test]
fn upload_retries_after_503() {
    let token = "tok-503-Ab4z";
    let orch = Orchestrator::start(token, Fault::Refuse503(4));
    let run = run_job("503", &orch.url(), "job-503", token, N, GENEROUS);
    check_delivery(&orch, "job-503", &run, N);
    assert_eq!(orch.counts().refused_503, 4);
    // The failure streak is reported once as a warning, then at debug level.
    let warned: Vec<_> = logs_mentioning("WARN job job-503: upload to");
    assert_eq!(warned.len(), 1, "{:?}", logs_mentioning("job-503"));
    assert_eq!(
        logs_mentioning("INFO job job-503: upload to").len(),
        1,
        "recovery is reported"
    );
    assert_token_never_logged(token);
}

#[test]
fn upload_resumes_after_lost_answers() {
    let token = "tok-lost-Qq17";
    let orch = Orchestrator::start(token, Fault::LoseAnswers(3));
    let run = run_job("lost", &orch.url(), "job-lost", token, N, GENEROUS);
    check_delivery(&orch, "job-lost", &run, N);
    let c = orch.counts();
    assert_eq!(c.lost_answers, 3, "{c:?}");
    // Each lost answer is followed by a retry at the old offset, which the
    // server refuses with 409 and the runner resumes from its length.
    assert!(c.conflicts >= 3, "{c:?}");
    assert_token_never_logged(token);
}

#[test]
fn upload_resends_what_the_orchestrator_forgot() {
    let token = "tok-forget-Ff48";
    let orch = Orchestrator::start(token, Fault::ForgetBatch(3));
    let run = run_job("forget", &orch.url(), "job-forget", token, N, GENEROUS);
    check_delivery(&orch, "job-forget", &run, N);
    let c = orch.counts();
    assert_eq!(c.forgotten, 1, "{c:?}");
    // The next batch went to an offset past the server's length; the 409
    // sent the runner back.
    assert!(c.conflicts >= 1, "{c:?}");
    assert_token_never_logged(token);
}

#[test]
fn upload_keeps_up_with_a_flood() {
    // 24 MB printed at once must go out in back-to-back full batches while
    // the job runs, not one batch per interval (1 MiB/s).
    init_logs();
    let token = "tok-flood-Gg5";
    let orch = Orchestrator::start(token, Fault::Healthy);
    let dir = TempDir::new("flood");
    let path = dir.join("spool.ndjson");
    let mut spool = Spool::create(&path).unwrap();
    let cfg = config(&orch.url(), "job-flood", token);
    let up = Uploader::start(cfg, path.clone(), no_cancel());
    let text = [b'f'; 400];
    for i in 0..50_000 {
        spool.append(Stream::Stdout, Some("flood"), &text);
        if i % 160 == 159 {
            spool.flush().unwrap();
        }
    }
    spool.flush().unwrap();
    assert!(spool.len() > 24_000_000);
    let t = Instant::now();
    assert!(
        orch.wait_for_log_len("job-flood", spool.len(), Duration::from_secs(8)),
        "only {} of {} bytes after {:?}",
        orch.log("job-flood").len(),
        spool.len(),
        t.elapsed()
    );
    assert_eq!(up.finish(final_status(), GENEROUS), Outcome::Delivered);
    assert_eq!(orch.log("job-flood"), std::fs::read(&path).unwrap());
}

#[test]
fn upload_waits_for_a_late_orchestrator() {
    let token = "tok-late-Lm55";
    // Another process may take the released port meanwhile; then try anew.
    for attempt in 0..3 {
        let orch = Orchestrator::start(token, Fault::AbsentFor(Duration::from_millis(800)));
        let job = format!("job-late-{attempt}");
        let run = run_job(
            &format!("late-{attempt}"),
            &orch.url(),
            &job,
            token,
            N,
            GENEROUS,
        );
        if orch.bind_failed() {
            continue;
        }
        check_delivery(&orch, &job, &run, N);
        assert_token_never_logged(token);
        return;
    }
    panic!("could not get the port back three times");
}

#[test]
fn upload_copes_with_quirky_http() {
    let token = "tok-quirky-Pp09";
    let orch = Orchestrator::start(token, Fault::Quirky);
    let run = run_job("quirky", &orch.url(), "job-quirky", token, N, GENEROUS);
    check_delivery(&orch, "job-quirky", &run, N);
    let c = orch.counts();
    assert!(
        c.connections > 1,
        "Connection: close should have forced reconnects: {c:?}"
    );
    assert_token_never_logged(token);
}

#[test]
fn upload_under_a_prefix_with_an_odd_job_id() {
    let token = "tok-prefix-Ww22";
    let orch = Orchestrator::start_with_prefix(token, Fault::Healthy, "/solstice/api");
    let job = "42/a b?c#d%é";
    let run = run_job(
        "prefix",
        &format!("{}/", orch.url()),
        job,
        token,
        500,
        GENEROUS,
    );
    let file = std::fs::read(&run.spool).unwrap();
    assert!(run.acknowledged);
    assert_eq!(orch.log(job), file);
    let statuses = orch.statuses(job);
    assert_eq!(statuses.first().map(|s| s.state.as_str()), Some("running"));
    assert_eq!(
        statuses.last().map(|s| s.log_length),
        Some(file.len() as u64)
    );
    assert!(orch.violations().is_empty(), "{:?}", orch.violations());
}

#[test]
fn upload_streams_while_the_job_runs() {
    init_logs();
    let token = "tok-stream-Rr3";
    let orch = Orchestrator::start(token, Fault::Healthy);
    let dir = TempDir::new("stream");
    let path = dir.join("spool.ndjson");
    let mut spool = Spool::create(&path).unwrap();
    let cfg = config(&orch.url(), "job-stream", token);
    let up = Uploader::start(cfg, path.clone(), no_cancel());
    for round in 0..5u64 {
        for i in 0..10 {
            let (stream, step, text) = event(round * 10 + i);
            spool.append(stream, step, &text);
        }
        spool.flush().unwrap();
        // Without finish: the uploader tails the spool on its own.
        assert!(
            orch.wait_for_log_len("job-stream", spool.len(), Duration::from_secs(3)),
            "round {round}: the server has {} of {} bytes",
            orch.log("job-stream").len(),
            spool.len()
        );
    }
    assert_eq!(up.finish(final_status(), GENEROUS), Outcome::Delivered);
    let requests = orch.requests("job-stream");
    assert!(matches!(&requests[0], Request::Status(s) if s.state == "running"));
    assert!(
        requests
            .iter()
            .filter(|r| matches!(r, Request::Log { .. }))
            .count()
            >= 5
    );
    check_spool(&std::fs::read(&path).unwrap(), 50);
}

#[test]
fn wrong_token_gives_up_after_one_401() {
    let token = "tok-wrong-Kk70";
    let orch = Orchestrator::start(token, Fault::WrongToken);
    let run = run_job("wrong-token", &orch.url(), "job-401", token, N, GENEROUS);
    assert!(!run.acknowledged);
    assert!(
        run.finish_took < Duration::from_secs(2),
        "finish took {:?}",
        run.finish_took
    );
    let c = orch.counts();
    assert_eq!((c.total, c.unauthorized), (1, 1), "{c:?}");
    match &run.outcome {
        Outcome::Stopped(why) => assert!(
            why.contains("refused the job token (401 to PUT status)"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    // Said as an error when it happened, without the token; then once more
    // at the end, as why the upload stopped, without blaming the deadline.
    let said: Vec<_> = logs_mentioning("job job-401:");
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(
        said[0].starts_with("ERROR") && said[0].contains("401"),
        "{said:?}"
    );
    assert!(
        said[1].starts_with("WARN job job-401: the log upload stopped early: ")
            && said[1].contains("refused the job token (401 to PUT status)"),
        "{said:?}"
    );
    assert!(
        said.iter().all(|l| !l.contains("SOLSTICE_UPLOAD_DEADLINE")),
        "{said:?}"
    );
    assert_token_never_logged(token);
    assert_token_never_logged("other-tok-wrong");
}

#[test]
fn a_redirect_stops_the_upload_and_is_named_at_the_end() {
    let token = "tok-redirect-Rd3";
    let orch = Orchestrator::start(token, Fault::Redirect);
    let run = run_job("redirect", &orch.url(), "job-307", token, 200, GENEROUS);
    assert!(
        run.finish_took < Duration::from_secs(2),
        "finish took {:?}",
        run.finish_took
    );
    assert_eq!(orch.counts().total, 1, "{:?}", orch.counts());
    match &run.outcome {
        Outcome::Stopped(why) => assert!(
            why.contains("answered 307 to PUT status, a redirect, which is not followed"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    let said = logs_mentioning("job job-307:");
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(
        said[1].contains("stopped early") && said[1].contains("307"),
        "{said:?}"
    );
    assert!(
        said.iter().all(|l| !l.contains("SOLSTICE_UPLOAD_DEADLINE")),
        "{said:?}"
    );
}

#[test]
fn absent_orchestrator_finish_returns_at_the_deadline() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let run = run_job(
        "absent",
        &url,
        "job-absent",
        "tok-absent",
        2000,
        Duration::from_millis(500),
    );
    assert!(!run.acknowledged);
    assert!(
        run.finish_took >= Duration::from_millis(490),
        "{:?}",
        run.finish_took
    );
    assert!(
        run.finish_took < Duration::from_millis(1500),
        "{:?}",
        run.finish_took
    );
    assert_eq!(
        logs_mentioning("WARN job job-absent: upload to").len(),
        1,
        "{:?}",
        logs_mentioning("job-absent")
    );
    let end = logs_mentioning("WARN job job-absent: the orchestrator did not take");
    assert_eq!(end.len(), 1);
    assert!(end[0].contains("SOLSTICE_UPLOAD_DEADLINE"), "{end:?}");
    let total = std::fs::metadata(&run.spool).unwrap().len();
    assert_eq!(run.outcome, Outcome::DeadlinePassed { acked: 0, total });
}

#[test]
fn hanging_orchestrator_does_not_slow_the_job() {
    let token = "tok-hang-Hh12";
    let orch = Orchestrator::start(token, Fault::Hang);
    let run = run_job(
        "hang",
        &orch.url(),
        "job-hang",
        token,
        20_000,
        Duration::from_millis(400),
    );
    assert!(orch.wait_for_counts(Duration::from_secs(5), |c| c.total >= 1));
    assert!(!run.acknowledged);
    assert!(
        run.finish_took < Duration::from_millis(1500),
        "{:?}",
        run.finish_took
    );
    // The job's side never touched the network: 20k events are a moment's work.
    assert!(
        run.write_took < Duration::from_secs(10),
        "{:?}",
        run.write_took
    );
    check_spool(&std::fs::read(&run.spool).unwrap(), 20_000);
}

// ---------------------------------------------------------------- cancel

/// A cancel callback that records what it was called with.
fn cancel_recorder() -> (Arc<Mutex<Vec<String>>>, OnCancel) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    let on_cancel: OnCancel = Box::new(move |reason: &str| {
        c.lock().unwrap().push(reason.to_string());
    });
    (calls, on_cancel)
}

/// A job whose answers of `kind` with `code` carry a cancel: the whole log
/// is still delivered, and the callback was called once, with `want`.
fn cancel_run(
    name: &str,
    fault: Fault,
    kind: &'static str,
    code: u16,
    reason: Option<&str>,
    want: &str,
) {
    let token = "tok-cancel-Cc5";
    let job = format!("job-{name}");
    let orch = Orchestrator::start(token, fault);
    orch.cancel_on(kind, code, reason);
    let (calls, on_cancel) = cancel_recorder();
    let run = run_job_with(
        name,
        config(&orch.url(), &job, token),
        on_cancel,
        N,
        GENEROUS,
    );
    check_delivery(&orch, &job, &run, N);
    let c = orch.counts();
    assert!(c.cancels >= 2, "several answers carried the cancel: {c:?}");
    assert_eq!(*calls.lock().unwrap(), [want], "{c:?}");
}

#[test]
fn a_cancel_on_log_answers_is_handed_over_once() {
    cancel_run(
        "cancel-log-200",
        Fault::Healthy,
        "log",
        200,
        Some("pressed cancel"),
        "pressed cancel",
    );
}

#[test]
fn a_cancel_on_status_answers_is_handed_over_once() {
    // Without a reason: the first answer, to the running status, carries it.
    cancel_run("cancel-status-200", Fault::Healthy, "status", 200, None, "");
}

#[test]
fn a_cancel_on_a_log_409_is_handed_over_once_as_one_bounded_line() {
    // Each lost answer brings a retry, answered 409 with the cancel. The
    // reason comes as one line of at most 256 characters.
    let reason = format!("  stop\nnow\t{}", "é".repeat(400));
    let want = format!("stop now {}", "é".repeat(245));
    cancel_run(
        "cancel-log-409",
        Fault::LoseAnswers(2),
        "log",
        409,
        Some(&reason),
        &want,
    );
}

#[test]
fn a_cancel_on_a_status_409_is_handed_over_once() {
    // The running status and the first final one are answered 409.
    cancel_run(
        "cancel-status-409",
        Fault::ConflictStatus(2),
        "status",
        409,
        Some("s409"),
        "s409",
    );
}

// ------------------------------------------------------------- heartbeat

/// Running statuses; the step comes from the log pipeline, which these
/// in-process tests do not start (tests/report.rs checks it end to end).
fn running(requests: &[Request]) -> usize {
    requests
        .iter()
        .filter(|r| matches!(r, Request::Status(s) if s.state == "running" && s.step.is_none()))
        .count()
}

/// Checks the order of a finished job's requests: running statuses, then
/// one final status, last; heartbeats report what the server held.
fn check_order(orch: &Orchestrator, job: &str) {
    let requests = orch.requests(job);
    let first_final = requests
        .iter()
        .position(|r| matches!(r, Request::Status(s) if s.is_final()))
        .expect("a final status");
    assert_eq!(
        first_final,
        requests.len() - 1,
        "requests after the final status: {requests:#?}"
    );
    for r in &requests {
        if let Request::Status(s) = r {
            if s.state == "running" {
                assert_eq!(s.log_length, s.server_length, "{s:?}");
            }
        }
    }
    assert!(orch.violations().is_empty(), "{:?}", orch.violations());
}

#[test]
fn heartbeats_come_while_the_job_is_quiet() {
    init_logs();
    let token = "tok-beat-Hb1";
    let job = "job-beat";
    let orch = Orchestrator::start(token, Fault::Healthy);
    let dir = TempDir::new("heartbeat");
    let path = dir.join("spool.ndjson");
    let mut spool = Spool::create(&path).unwrap();
    let beat = Duration::from_millis(100);
    let cfg = Config {
        heartbeat: Some(beat),
        ..config(&orch.url(), job, token)
    };
    let started = Instant::now();
    let up = Uploader::start(cfg, path.clone(), no_cancel());
    assert!(
        orch.wait_for_requests(job, GENEROUS, |r| running(r) >= 3),
        "{:#?}",
        orch.requests(job)
    );
    spool.append(Stream::Stdout, Some("build"), b"some output\n");
    spool.flush().unwrap();
    assert!(
        orch.wait_for_requests(job, GENEROUS, |r| running(r) >= 5),
        "{:#?}",
        orch.requests(job)
    );
    // Each heartbeat follows at least `beat` of silence.
    let statuses = orch.statuses(job);
    let elapsed = started.elapsed();
    let beats = statuses.len() as u128 - 1;
    assert!(
        beats * beat.as_millis() <= elapsed.as_millis(),
        "{beats} heartbeats in {elapsed:?}"
    );
    assert!(orch.log(job).ends_with(b"some output\\n\"}\n"));
    assert_eq!(up.finish(final_status(), GENEROUS), Outcome::Delivered);
    check_order(&orch, job);
}

#[test]
fn heartbeats_stop_at_finish_and_never_pass_the_final_status() {
    init_logs();
    let token = "tok-beat-Hb2";
    let orch = Orchestrator::start(token, Fault::Healthy);
    let dir = TempDir::new("heartbeat-finish");
    let beat = Duration::from_millis(5);
    // Finish lands at a different moment of the heartbeats each round.
    for round in 0..8u64 {
        let job = format!("job-beat-{round}");
        let path = dir.join(format!("spool-{round}.ndjson"));
        let mut spool = Spool::create(&path).unwrap();
        let cfg = Config {
            heartbeat: Some(beat),
            ..config(&orch.url(), &job, token)
        };
        let up = Uploader::start(cfg, path.clone(), no_cancel());
        for i in 0..20 {
            let (stream, step, text) = event(i);
            spool.append(stream, step, &text);
        }
        spool.flush().unwrap();
        assert!(orch.wait_for_requests(&job, GENEROUS, |r| running(r) >= 3));
        for i in 20..40 {
            let (stream, step, text) = event(i);
            spool.append(stream, step, &text);
        }
        spool.flush().unwrap();
        std::thread::sleep(Duration::from_micros(700 * round));
        assert_eq!(up.finish(final_status(), GENEROUS), Outcome::Delivered);
        assert_eq!(orch.log(&job), std::fs::read(&path).unwrap());
        check_order(&orch, &job);
        // The upload thread has ended: ten heartbeat intervals bring nothing.
        let n = orch.requests(&job).len();
        std::thread::sleep(beat * 10);
        assert_eq!(orch.requests(&job).len(), n);
    }
}

// ----------------------------------------------------------------- files

fn client_of(orch: &Orchestrator, token: &str) -> Client {
    Client::new(&parse_url(&orch.url()).unwrap(), token).unwrap()
}

/// `n` bytes that do not compress and are not all text.
fn blob(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn put(
    client: &mut Client,
    target: &str,
    file: &File,
    body: &[u8],
    gzip: bool,
    deadline: Instant,
) -> workflow_runner::error::Result<u16> {
    let digest = sha256(body);
    let how = PutFile {
        content_type: "application/x-tar",
        gzip,
        sha256: &digest,
    };
    put_file(client, target, file, body.len() as u64, &how, deadline)
}

#[test]
fn the_test_orchestrator_hashes_and_encodes_like_the_standards() {
    let hex = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        hex(sha256(b"")),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        hex(sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        hex(sha256(
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
        )),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    );
    assert_eq!(
        hex(sha256(&vec![b'a'; 1_000_000])),
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
    );
    for (plain, enc) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(plain.as_bytes()), enc);
    }
}

#[test]
fn put_file_streams_the_body_with_its_length_and_digest() {
    let token = "tok-put-Pf1";
    let orch = Orchestrator::start(token, Fault::Healthy);
    let dir = TempDir::new("put");
    let body = blob(700_000, 1);
    let path = dir.join("a.tar.gz");
    // Only the first `len` bytes are sent.
    std::fs::write(&path, [&body[..], b"not sent"].concat()).unwrap();
    let file = File::open(&path).unwrap();
    let mut client = client_of(&orch, token);
    let target = client.artifact_target("job-put", "build output/ü");
    assert_eq!(target, "/v1/jobs/job-put/artifacts/build%20output%2F%C3%BC");
    let deadline = Instant::now() + GENEROUS;
    assert_eq!(
        put(&mut client, &target, &file, &body, true, deadline).unwrap(),
        201
    );
    // Again, plain, on the same kept-alive connection.
    let small = &body[..1000];
    let target2 = client.artifact_target("job-put", "report");
    assert_eq!(
        put(&mut client, &target2, &file, small, false, deadline).unwrap(),
        201
    );
    let arts = orch.artifacts("job-put");
    assert_eq!(arts.len(), 2);
    assert_eq!(arts[0].name, "build output/ü");
    assert!(arts[0].body == body, "the artifact's bytes differ");
    assert_eq!(arts[0].content_encoding.as_deref(), Some("gzip"));
    assert_eq!(arts[0].content_type.as_deref(), Some("application/x-tar"));
    assert_eq!(
        (arts[1].name.as_str(), &arts[1].body[..]),
        ("report", small)
    );
    assert_eq!(arts[1].content_encoding, None);
    assert_eq!(orch.counts().connections, 1, "{:?}", orch.counts());
    assert!(orch.violations().is_empty(), "{:?}", orch.violations());
}

#[test]
fn a_wrong_digest_is_caught_by_the_test_orchestrator() {
    // The check the other tests rely on is real.
    let token = "tok-digest-Dg1";
    let orch = Orchestrator::start(token, Fault::Healthy);
    let dir = TempDir::new("digest");
    let path = dir.join("f");
    std::fs::write(&path, b"hello").unwrap();
    let file = File::open(&path).unwrap();
    let mut client = client_of(&orch, token);
    let target = client.cache_target("k");
    let how = PutFile {
        content_type: "application/x-tar",
        gzip: false,
        sha256: &sha256(b"hellO"),
    };
    let deadline = Instant::now() + GENEROUS;
    assert_eq!(
        put_file(&mut client, &target, &file, 5, &how, deadline).unwrap(),
        400
    );
    assert_eq!(orch.violations().len(), 1, "{:?}", orch.violations());
    assert!(orch.cache("k").is_none());
}

#[test]
fn put_file_retries_5xx_and_not_4xx() {
    let dir = TempDir::new("put-retry");
    let body = blob(50_000, 2);
    let path = dir.join("f");
    std::fs::write(&path, &body).unwrap();
    let file = File::open(&path).unwrap();
    let token = "tok-retry-Rt1";

    let orch = Orchestrator::start(token, Fault::Refuse503(2));
    let mut client = client_of(&orch, token);
    let target = client.cache_target("deps-linux-x86_64-00ff");
    let deadline = Instant::now() + GENEROUS;
    assert_eq!(
        put(&mut client, &target, &file, &body, false, deadline).unwrap(),
        200
    );
    let c = orch.counts();
    assert_eq!((c.refused_503, c.file_puts), (2, 1), "{c:?}");
    assert!(orch
        .cache("deps-linux-x86_64-00ff")
        .is_some_and(|b| b == body));

    let orch = Orchestrator::start(token, Fault::WrongToken);
    let mut client = client_of(&orch, token);
    let t = Instant::now();
    assert_eq!(
        put(&mut client, &target, &file, &body, false, deadline).unwrap(),
        401
    );
    assert_eq!(orch.counts().total, 1, "a 4xx is not retried");
    assert!(t.elapsed() < Duration::from_secs(5));

    // 503 without end: the last answer once the deadline leaves no time.
    let orch = Orchestrator::start(token, Fault::Refuse503(usize::MAX));
    let mut client = client_of(&orch, token);
    let t = Instant::now();
    let status = put(
        &mut client,
        &target,
        &file,
        &body,
        false,
        t + Duration::from_millis(400),
    );
    assert_eq!(status.unwrap(), 503);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(orch.counts().refused_503 >= 2, "{:?}", orch.counts());

    // Nobody listening: an error naming the connection, at the deadline.
    let url = format!("http://127.0.0.1:{}", free_port());
    let mut client = Client::new(&parse_url(&url).unwrap(), token).unwrap();
    let t = Instant::now();
    let err = put(
        &mut client,
        &target,
        &file,
        &body,
        false,
        t + Duration::from_millis(300),
    )
    .unwrap_err();
    assert_eq!(err.kind, Kind::Upload);
    assert!(err.msg.contains("cannot connect to 127.0.0.1:"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn get_to_file_fetches_what_was_put_within_a_cap_and_404_is_a_miss() {
    let token = "tok-get-Gt1";
    let dir = TempDir::new("get");
    let body = blob(300_000, 3);
    let src = dir.join("src");
    std::fs::write(&src, &body).unwrap();
    // Content-Length answers, then chunked and close-delimited ones.
    for (i, fault) in [Fault::Healthy, Fault::Quirky].into_iter().enumerate() {
        let orch = Orchestrator::start(token, fault);
        let mut client = client_of(&orch, token);
        let key = "deps-linux-x86_64-0a1b";
        let target = client.cache_target(key);
        let deadline = Instant::now() + GENEROUS;
        let file = File::open(&src).unwrap();
        assert_eq!(
            put(&mut client, &target, &file, &body, true, deadline).unwrap(),
            200
        );

        let out_path = dir.join(format!("out-{i}"));
        // What the file held before is replaced, not overwritten in part.
        std::fs::write(&out_path, vec![b'j'; 400_000]).unwrap();
        let out = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&out_path)
            .unwrap();
        // Enough answers that the quirky server frames some by the close.
        for _ in 0..6 {
            let got = get_to_file(&mut client, &target, &out, 1 << 20, deadline).unwrap();
            assert_eq!(got, Some(body.len() as u64));
            assert!(
                std::fs::read(&out_path).unwrap() == body,
                "the download differs"
            );
        }
        // Exactly at the cap is fine; a byte over is an error, not retried.
        let got = get_to_file(&mut client, &target, &out, body.len() as u64, deadline).unwrap();
        assert_eq!(got, Some(body.len() as u64));
        let gets = orch.counts().cache_gets;
        let err =
            get_to_file(&mut client, &target, &out, body.len() as u64 - 1, deadline).unwrap_err();
        assert!(err.msg.contains("larger than allowed"), "{err}");
        assert_eq!(
            orch.counts().cache_gets,
            gets + 1,
            "a body over the cap is not fetched again"
        );

        let miss = client.cache_target("deps-linux-x86_64-ffff");
        assert_eq!(
            get_to_file(&mut client, &miss, &out, 1 << 20, deadline).unwrap(),
            None
        );
        assert!(orch.violations().is_empty(), "{:?}", orch.violations());
    }
}

// ---------------------------------------------------------------- bench

/// `cargo test --release --test upload -- --ignored --nocapture bench`:
/// the spool's cost for 100-byte lines as the pipeline hands them over (one
/// 64 KiB pipe read, 650 lines, as two events of 325 lines), next to plainly
/// writing the same bytes (what `tee` does).
#[test]
#[ignore]
fn bench_append_100_byte_lines() {
    use std::io::Write;
    let dir = TempDir::new("bench");
    let path = dir.join("s.ndjson");
    let mut s = Spool::create(&path).unwrap();
    let line = format!(
        "{:<99}\n",
        "some build output: Compiling serde v1.0.200 (registry) finished target(s) in 3.2s"
    );
    let half = line.repeat(325);
    let reads: u64 = 8_000;
    let bytes = reads * 650 * 100;
    let t = Instant::now();
    for _ in 0..reads {
        s.append(Stream::Stdout, Some("build"), half.as_bytes());
        s.append(Stream::Stdout, Some("build"), half.as_bytes());
        s.flush().unwrap();
    }
    let took = t.elapsed();
    // The same into /dev/null: formatting without the page-cache copy.
    let mut null = Spool::create(std::path::Path::new("/dev/null")).unwrap();
    let t = Instant::now();
    for _ in 0..reads {
        null.append(Stream::Stdout, Some("build"), half.as_bytes());
        null.append(Stream::Stdout, Some("build"), half.as_bytes());
        null.flush().unwrap();
    }
    let null_took = t.elapsed();
    let mut raw = std::fs::File::create(dir.join("raw")).unwrap();
    let chunk = line.repeat(650);
    let t = Instant::now();
    for _ in 0..reads {
        raw.write_all(chunk.as_bytes()).unwrap();
    }
    let raw_took = t.elapsed();
    println!(
        "spool: {:.0} MB/s of input ({:.0} MB/s of spool, {:.3} spool bytes per input byte); \
         into /dev/null: {:.0} MB/s; plain write of the input: {:.0} MB/s",
        bytes as f64 / took.as_secs_f64() / 1e6,
        s.len() as f64 / took.as_secs_f64() / 1e6,
        s.len() as f64 / bytes as f64,
        bytes as f64 / null_took.as_secs_f64() / 1e6,
        bytes as f64 / raw_took.as_secs_f64() / 1e6,
    );
}
