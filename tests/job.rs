//! End-to-end tests of the job run against the real binary: how
//! `.solstice/job.sh` is started (shebang, /bin/sh fallback, cwd,
//! environment, stdin), how its output is streamed (as it comes, unchanged,
//! long lines and partial lines, bounded memory), the exit codes, and the
//! runner's own log lines.
//!
//! The repositories are local (a path as the repository URL), so a run costs
//! a few tens of milliseconds of git. Jobs that must still be running while
//! the test looks at them wait (bounded) for a marker file the test creates;
//! a guard creates it when a test fails early, so no job is left looping.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::job::{Job, Release};
use common::runner::{runner_wrapper, wait_until, Output, Runner};
use common::tmp::TempDir;

const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `VmHWM` (peak resident set) of a live process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The runner started directly, its stdout handed raw to a callback (for
/// byte-exact checks and for outputs too big to keep), stderr kept.
struct RawRun {
    child: Child,
    stdout_done: Arc<AtomicBool>,
    stdout_thread: Option<JoinHandle<()>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    _home: TempDir,
}

impl RawRun {
    /// Starts `runner` (its environment, its process group).
    fn spawn(runner: Runner, mut on_stdout: impl FnMut(&[u8]) + Send + 'static) -> RawRun {
        let (mut cmd, home) = runner.into_command();
        let mut child = cmd.spawn().expect("starting solstice-runner");
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let stdout_done = Arc::new(AtomicBool::new(false));
        let done = stdout_done.clone();
        let stdout_thread = thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match out.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => on_stdout(&buf[..n]),
                }
            }
            done.store(true, Ordering::SeqCst);
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let e = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match err.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => e.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
        });
        RawRun {
            child,
            stdout_done,
            stdout_thread: Some(stdout_thread),
            stderr,
            _home: home,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for the exit and for stdout's end, within `deadline`.
    fn wait(&mut self, deadline: Duration) -> (ExitStatus, String) {
        let mut status = None;
        wait_until(deadline, "the runner to exit", || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        wait_until(deadline, "the runner's stdout to close", || {
            self.stdout_done.load(Ordering::SeqCst)
        });
        if let Some(t) = self.stdout_thread.take() {
            t.join().unwrap();
        }
        let stderr = String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned();
        (status.unwrap(), stderr)
    }
}

impl Drop for RawRun {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            unsafe {
                libc::kill(-(self.child.id() as i32), libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
    }
}

/// Runs the job and returns its exact stdout bytes, the exit status and stderr.
fn run_raw(job: &Job, extra: &[(&str, &str)]) -> (Vec<u8>, ExitStatus, String) {
    let out = Arc::new(Mutex::new(Vec::new()));
    let o = out.clone();
    let mut runner = job.runner();
    for (k, v) in extra {
        runner = runner.env(k, v);
    }
    let mut run = RawRun::spawn(runner, move |d| o.lock().unwrap().extend_from_slice(d));
    let (status, stderr) = run.wait(DEADLINE);
    let bytes = out.lock().unwrap().clone();
    (bytes, status, stderr)
}

/// The runner's own log lines: stderr lines that look like `<ts> <LEVEL> `.
fn log_levels(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let _ts = parts.next()?;
            let level = parts.next()?;
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                .contains(&level)
                .then(|| level.to_string())
        })
        .collect()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Parses `YYYY-MM-DDTHH:MM:SS.mmmZ` (or `+00:00`) into Unix milliseconds.
fn parse_rfc3339_utc_millis(ts: &str) -> Result<i64, String> {
    let b = ts.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let s = ts
            .get(r.clone())
            .ok_or_else(|| format!("{ts:?} too short"))?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(format!("{ts:?}: {s:?} is not digits"));
        }
        Ok(s.parse().unwrap())
    };
    let sep = |i: usize, c: u8| -> Result<(), String> {
        if b.get(i) == Some(&c) {
            Ok(())
        } else {
            Err(format!("{ts:?}: expected {:?} at {i}", c as char))
        }
    };
    sep(4, b'-')?;
    sep(7, b'-')?;
    sep(10, b'T')?;
    sep(13, b':')?;
    sep(16, b':')?;
    sep(19, b'.')?;
    let (y, mo, d, h, mi, s, ms) = (
        digits(0..4)?,
        digits(5..7)?,
        digits(8..10)?,
        digits(11..13)?,
        digits(14..16)?,
        digits(17..19)?,
        digits(20..23)?,
    );
    let zone = &ts[23..];
    if zone != "Z" && zone != "+00:00" {
        return Err(format!("{ts:?}: not UTC with millisecond precision"));
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return Err(format!("{ts:?}: out of range"));
    }
    Ok(((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
}

// ---------------------------------------------------------------------------
// How job.sh is started
// ---------------------------------------------------------------------------

#[test]
fn executable_job_runs_through_its_shebang() {
    // `#!/bin/cat` makes the kernel run cat on the script: stdout is the
    // script itself. Through /bin/sh it would print "via-sh" instead.
    let script = "#!/bin/cat\necho via-sh\n";
    let job = Job::raw_script(script);
    let out = job.runner().run(DEADLINE);
    out.assert_code(0);
    assert_eq!(out.stdout, script, "{}", out);
}

#[test]
fn non_executable_job_runs_with_bin_sh() {
    // Mode 0644 in git: the shebang is only a comment to /bin/sh.
    let job = Job::with(|r| {
        r.write(
            ".solstice/job.sh",
            "#!/bin/cat\necho via-sh\necho \"arg0=$0\"\n",
        );
    });
    let out = job.runner().run(DEADLINE);
    out.assert_code(0);
    assert!(out.stdout.starts_with("via-sh\narg0="), "{}", out);
    assert!(
        out.stdout.trim_end().ends_with(".solstice/job.sh"),
        "{}",
        out
    );
}

#[test]
fn executable_job_without_shebang_runs_with_bin_sh_once() {
    let mut job = Job::empty();
    job.repo.write_executable(
        ".solstice/job.sh",
        format!("echo ran >> {}\necho no-shebang\nexit 3\n", job.q("count")),
    );
    job.commit("no shebang");
    let out = job.runner().run(DEADLINE);
    out.assert_code(3);
    assert_eq!(out.stdout, "no-shebang\n", "{}", out);
    assert_eq!(
        fs::read_to_string(job.file("count")).unwrap(),
        "ran\n",
        "the job ran more or less than once"
    );
}

#[test]
fn job_gets_the_runner_environment_plus_ci_without_tokens() {
    let job = Job::script(
        r#"echo "MY_VAR=$MY_VAR"
echo "CI=$CI"
echo "JOB_TOKEN=${SOLSTICE_JOB_TOKEN-unset}"
echo "GIT_TOKEN=${SOLSTICE_GIT_TOKEN-unset}"
echo "WORKSPACE=$SOLSTICE_WORKSPACE"
echo "REPO_URL=$SOLSTICE_REPO_URL"
echo "COMMIT=$SOLSTICE_COMMIT_SHA"
echo "PWD=$(pwd -P)"
env | grep -c 'tok-s3cret' || true"#,
    );
    let out = job
        .runner()
        .env("MY_VAR", "from the runner")
        .env("CI", "false")
        .env("SOLSTICE_JOB_TOKEN", "job-tok-s3cret")
        .env("SOLSTICE_GIT_TOKEN", "git-tok-s3cret")
        .run(DEADLINE);
    out.assert_code(0);
    let wd = fs::canonicalize(job.workdir()).unwrap();
    let expected = format!(
        "MY_VAR=from the runner\nCI=true\nJOB_TOKEN=unset\nGIT_TOKEN=unset\nWORKSPACE={}\nREPO_URL={}\nCOMMIT={}\nPWD={}\n0\n",
        job.workdir().display(),
        job.repo.path().display(),
        job.sha,
        wd.display()
    );
    assert_eq!(out.stdout, expected, "{}", out);
}

#[test]
fn job_stdin_is_dev_null_even_when_the_runner_has_input() {
    let job = Job::script(
        r#"if IFS= read -r line; then echo "read: $line"; else echo "stdin: eof"; fi
readlink /proc/self/fd/0"#,
    );
    let out = job
        .runner()
        .stdin(b"this is for the runner, not the job\n".to_vec())
        .run(DEADLINE);
    out.assert_code(0);
    assert_eq!(out.stdout, "stdin: eof\n/dev/null\n", "{}", out);
}

#[test]
fn job_runs_in_its_own_process_group() {
    let job = Job::script(
        r#"read -r pid comm state ppid pgrp rest < /proc/$$/stat
echo "pid=$$ pgrp=$pgrp ppid=$ppid""#,
    );
    let running = job.runner().spawn();
    let runner_pid = running.pid();
    let out = running.wait(DEADLINE);
    out.assert_code(0);
    let field = |name: &str| -> u32 {
        out.stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in job output:\n{out}"))
    };
    assert_eq!(field("pgrp"), field("pid"), "job does not lead its group");
    assert_eq!(field("ppid"), runner_pid, "job is not the runner's child");
    assert_ne!(field("pgrp"), runner_pid, "job shares the runner's group");
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

#[test]
fn stdout_and_stderr_pass_through_unchanged() {
    let job = Job::script(
        r#"printf 'plain line\n'
printf 'cr\r\nnul\000byte \377\376 \033[31mred\033[0m\ttab  \n'
printf 'job-err-line\n' >&2
printf 'err \377 bytes\n' >&2
printf 'no newline at end'"#,
    );
    let (stdout, status, _) = run_raw(&job, &[]);
    assert_eq!(status.code(), Some(0));
    let expected: &[u8] =
        b"plain line\ncr\r\nnul\0byte \xff\xfe \x1b[31mred\x1b[0m\ttab  \nno newline at end";
    assert_eq!(
        stdout,
        expected,
        "stdout differs:\n got {:?}\nwant {:?}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(expected)
    );

    // stderr: the job's lines are there as whole lines, without prefixes,
    // between the runner's own log lines.
    let out = job.runner().run(DEADLINE);
    out.assert_code(0);
    assert!(
        out.stderr.lines().any(|l| l == "job-err-line"),
        "job's stderr line was changed or prefixed:\n{out}"
    );
    assert!(
        !out.stdout.contains("job-err-line"),
        "stderr leaked into stdout:\n{out}"
    );
}

#[test]
fn stderr_bytes_are_unchanged() {
    let job = Job::script(r#"printf 'err \377\376 \033[1mbold\033[0m end\n' >&2"#);
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut run = RawRun::spawn(job.runner(), {
        let o = out.clone();
        move |d| o.lock().unwrap().extend_from_slice(d)
    });
    let (status, _) = run.wait(DEADLINE);
    assert_eq!(status.code(), Some(0));
    let err = run.stderr.lock().unwrap().clone();
    let want: &[u8] = b"\nerr \xff\xfe \x1b[1mbold\x1b[0m end\n";
    assert!(
        err.windows(want.len()).any(|w| w == want),
        "the job's stderr bytes were changed:\n{:?}",
        String::from_utf8_lossy(&err)
    );
}

#[test]
fn a_line_arrives_while_the_job_is_still_running() {
    let mut job = Job::empty();
    let body = format!(
        "echo before-the-wait\necho err-before-the-wait >&2\n{wait}\necho after",
        wait = job.wait_for_release()
    );
    job.repo.write_job(&body);
    job.commit("streaming");
    let _cleanup = Release(&job);
    let mut running = job.runner().spawn();
    wait_until(
        Duration::from_secs(10),
        "the job's first stdout line on the runner's stdout",
        || running.stdout_so_far().contains("before-the-wait\n"),
    );
    wait_until(
        Duration::from_secs(10),
        "the job's first stderr line on the runner's stderr",
        || running.stderr_so_far().contains("err-before-the-wait\n"),
    );
    assert!(!running.has_exited(), "the runner ended before the release");
    assert!(!running.stdout_so_far().contains("after"));
    job.release();
    let out = running.wait(DEADLINE);
    out.assert_code(0);
    assert_eq!(out.stdout, "before-the-wait\nafter\n", "{out}");
}

#[test]
fn a_partial_line_is_not_held_back_until_its_newline() {
    // A prompt or a progress bar: output without a newline, then a wait.
    let mut job = Job::empty();
    let body = format!(
        "printf 'progress: 10%%...'\nprintf 'err-partial' >&2\n{wait}\necho ' done'",
        wait = job.wait_for_release()
    );
    job.repo.write_job(&body);
    job.commit("partial");
    let _cleanup = Release(&job);
    let mut running = job.runner().spawn();
    wait_until(
        Duration::from_secs(5),
        "the partial stdout line to reach the runner's stdout while the job waits",
        || running.stdout_so_far().contains("progress: 10%..."),
    );
    wait_until(
        Duration::from_secs(5),
        "the partial stderr line to reach the runner's stderr while the job waits",
        || running.stderr_so_far().contains("err-partial"),
    );
    assert!(!running.has_exited());
    job.release();
    let out = running.wait(DEADLINE);
    out.assert_code(0);
    assert_eq!(out.stdout, "progress: 10%... done\n", "{out}");
}

#[test]
fn a_long_line_streams_before_the_job_ends() {
    // 10 MiB and a bit, no newline, then the job waits: all of it must be out
    // while the job is still waiting.
    let mut job = Job::empty();
    let body = format!(
        "head -c 10485760 /dev/zero | tr '\\000' 'a'\nprintf 'tail'\n{wait}",
        wait = job.wait_for_release()
    );
    job.repo.write_job(&body);
    job.commit("long line");
    let _cleanup = Release(&job);
    let mut running = job.runner().spawn();
    wait_until(
        Duration::from_secs(20),
        "the whole 10 MiB line (ending in 'tail') on stdout while the job waits",
        || running.stdout_so_far().len() >= 10 * 1024 * 1024 + 4,
    );
    assert!(!running.has_exited());
    job.release();
    let out = running.wait(DEADLINE);
    out.assert_code(0);
    assert_eq!(out.stdout.len(), 10 * 1024 * 1024 + 4);
    assert!(out.stdout.ends_with("aaaatail"));
    assert!(out.stdout.bytes().take(10 * 1024 * 1024).all(|b| b == b'a'));
}

#[test]
fn ten_mib_lines_without_newline_are_byte_exact() {
    let job = Job::script(
        "head -c 10485760 /dev/zero | tr '\\000' 'a'\necho\n\
         head -c 10485760 /dev/zero | tr '\\000' 'b' >&2\necho >&2\n\
         head -c 10485760 /dev/zero | tr '\\000' 'c'",
    );
    let (stdout, status, stderr) = run_raw(&job, &[]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    let mib10 = 10 * 1024 * 1024;
    let mut want = vec![b'a'; mib10];
    want.push(b'\n');
    want.extend(std::iter::repeat_n(b'c', mib10));
    assert!(
        stdout == want,
        "stdout is not the job's 20 MiB verbatim (got {} bytes)",
        stdout.len()
    );
    let line = format!("\n{}\n", "b".repeat(mib10));
    assert!(
        stderr.contains(&line),
        "the 10 MiB stderr line was not passed through whole"
    );
}

#[test]
fn two_hundred_mib_flow_in_bounded_memory() {
    // 100 MiB without a newline, then 100 MiB of short lines; the runner's
    // peak resident set is read while the job is still alive.
    const HALF: u64 = 100 * 1024 * 1024;
    let mut job = Job::empty();
    let body = format!(
        "head -c {HALF} /dev/zero | tr '\\000' 'x'\necho\nyes abcdefghij | head -c {HALF}\n{wait}",
        wait = job.wait_for_release()
    );
    job.repo.write_job(&body);
    job.commit("big");
    let _cleanup = Release(&job);

    let count = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(Mutex::new(None::<u64>));
    let (c, b) = (count.clone(), bad.clone());
    let pattern = b"abcdefghij\n";
    let on_stdout = move |d: &[u8]| {
        let start = c.load(Ordering::SeqCst);
        for (i, &byte) in d.iter().enumerate() {
            let at = start + i as u64;
            let want = if at < HALF {
                b'x'
            } else if at == HALF {
                b'\n'
            } else if at <= 2 * HALF {
                pattern[((at - HALF - 1) % 11) as usize]
            } else {
                0
            };
            if byte != want {
                b.lock().unwrap().get_or_insert(at);
                break;
            }
        }
        c.fetch_add(d.len() as u64, Ordering::SeqCst);
    };
    let mut run = RawRun::spawn(job.runner(), on_stdout);
    let total = 2 * HALF + 1;
    wait_until(
        Duration::from_secs(60),
        "all 200 MiB on the runner's stdout",
        || count.load(Ordering::SeqCst) >= total,
    );
    assert!(!run.has_exited(), "the job should still be waiting");
    let hwm = vm_hwm_kib(run.pid()).expect("reading the runner's VmHWM");
    job.release();
    let (status, stderr) = run.wait(DEADLINE);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(count.load(Ordering::SeqCst), total);
    assert_eq!(*bad.lock().unwrap(), None, "stdout differs at this offset");
    // Under SOLSTICE_TEST_WRAPPER (qemu-user) the pid is the emulator's,
    // whose own footprint is not the runner's.
    assert!(
        runner_wrapper().is_some() || hwm < 16 * 1024,
        "the runner's peak resident set was {hwm} KiB while streaming 200 MiB"
    );
}

// ---------------------------------------------------------------------------
// Exit codes
// ---------------------------------------------------------------------------

#[test]
fn the_job_exit_code_is_the_runner_exit_code() {
    let job = Job::script(r#"echo "exiting $JOB_EXIT"; exit "$JOB_EXIT""#);
    for code in [0, 1, 42, 255] {
        let out = job
            .runner()
            .env("JOB_EXIT", code.to_string())
            .env("SOLSTICE_WORKDIR", job.file(&format!("wd{code}")))
            .run(DEADLINE);
        out.assert_code(code);
        assert_eq!(out.stdout, format!("exiting {code}\n"));
    }
}

#[test]
fn a_job_killed_by_sigkill_gives_137() {
    let job = Job::script("echo about to die\nkill -9 $$\necho survived");
    let out = job.runner().run(DEADLINE);
    out.assert_code(137);
    assert_eq!(out.stdout, "about to die\n", "{out}");
}

#[test]
fn a_job_killed_by_sigsegv_gives_139() {
    let job = Job::script("ulimit -c 0 2>/dev/null\nkill -SEGV $$\necho survived");
    let out = job.runner().run(DEADLINE);
    out.assert_code(139);
    assert!(!out.stdout.contains("survived"), "{out}");
}

#[test]
fn a_repository_without_a_job_is_bad_input_251() {
    let job = Job::with(|r| {
        r.write("README", "nothing to run\n");
    });
    let out = job.runner().run(DEADLINE);
    out.assert_code(251);
    out.assert_stderr_contains(".solstice/job.sh");
    out.assert_stderr_contains(".solstice/workflow.kdl");
    assert_eq!(out.stdout, "", "{out}");
}

#[test]
fn git_missing_is_an_internal_error_250() {
    let job = Job::script("echo should not run");
    let out = job
        .runner()
        .env("PATH", job.file("empty-path"))
        .run(DEADLINE);
    out.assert_code(250);
    assert!(out.stderr.contains("git"), "{out}");
    assert_eq!(out.stdout, "");
}

// ---------------------------------------------------------------------------
// The runner's own log lines
// ---------------------------------------------------------------------------

#[test]
fn runner_log_lines_are_rfc3339_utc_millis_level_message() {
    let job = Job::script("echo only stdout from the job");
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let out = job.runner().run(DEADLINE);
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    out.assert_code(0);
    assert!(!out.stderr.is_empty(), "no log lines at the default level");
    for line in out.stderr.lines() {
        let (ts, rest) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("not `<ts> <LEVEL> <message>`: {line:?}"));
        let ms = parse_rfc3339_utc_millis(ts).unwrap_or_else(|e| panic!("{e} in {line:?}"));
        assert!(
            ms >= before - 1000 && ms <= after + 1000,
            "timestamp {ts} is not the current UTC time in {line:?}"
        );
        let rest = rest.trim_start();
        let (level, message) = rest
            .split_once(' ')
            .unwrap_or_else(|| panic!("no message in {line:?}"));
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level),
            "bad level {level:?} in {line:?}"
        );
        assert!(!message.trim().is_empty(), "empty message in {line:?}");
    }
}

#[test]
fn no_colour_codes_when_stderr_is_not_a_terminal() {
    let job = Job::script("echo fail >&2; exit 2");
    for level in ["info", "debug"] {
        let out = job
            .runner()
            .env("SOLSTICE_LOG", level)
            .env("SOLSTICE_WORKDIR", job.file(level))
            .run(DEADLINE);
        out.assert_code(2);
        assert!(
            !out.stderr.contains('\x1b') && !out.stdout.contains('\x1b'),
            "escape codes with SOLSTICE_LOG={level}:\n{out:?}"
        );
    }
}

#[test]
fn solstice_log_sets_the_level() {
    let ok = Job::script("echo fine");
    let failing = Job::script("exit 3");
    let run = |job: &Job, level: Option<&str>, wd: &str| -> Output {
        let mut r = job.runner().env("SOLSTICE_WORKDIR", job.file(wd));
        if let Some(l) = level {
            r = r.env("SOLSTICE_LOG", l);
        }
        r.run(DEADLINE)
    };
    let has = |out: &Output, level: &str| log_levels(&out.stderr).iter().any(|l| l == level);

    // default: info, no debug
    let out = run(&ok, None, "default");
    out.assert_code(0);
    assert!(has(&out, "INFO") && !has(&out, "DEBUG"), "{out}");

    // error: a successful run says nothing; a failed one says only ERROR
    let out = run(&ok, Some("error"), "error-ok");
    out.assert_code(0);
    assert_eq!(out.stderr, "", "SOLSTICE_LOG=error printed:\n{out}");
    let out = run(&failing, Some("error"), "error-fail");
    out.assert_code(3);
    let levels = log_levels(&out.stderr);
    assert!(
        !levels.is_empty() && levels.iter().all(|l| l == "ERROR"),
        "{out}"
    );

    // warn: no INFO lines
    let out = run(&ok, Some("warn"), "warn");
    out.assert_code(0);
    assert!(!has(&out, "INFO") && !has(&out, "DEBUG"), "{out}");

    // debug and trace: DEBUG lines too
    for level in ["debug", "trace"] {
        let out = run(&ok, Some(level), level);
        out.assert_code(0);
        assert!(has(&out, "DEBUG") && has(&out, "INFO"), "{level}: {out}");
    }

    // an invalid value: a warning naming it, then info
    let out = run(&ok, Some("verbose"), "invalid");
    out.assert_code(0);
    let warn = out
        .stderr
        .lines()
        .find(|l| l.contains("SOLSTICE_LOG"))
        .unwrap_or_else(|| panic!("no warning about SOLSTICE_LOG:\n{out}"));
    assert!(warn.contains("WARN") && warn.contains("verbose"), "{warn}");
    assert!(has(&out, "INFO") && !has(&out, "DEBUG"), "{out}");
}

#[test]
fn solstice_log_warn_still_shows_warnings() {
    let job = Job::script("echo fine");
    let job_file = job.file("job.yaml");
    fs::write(&job_file, "future_key: 1\n").unwrap();
    let out = job
        .runner()
        .env("SOLSTICE_JOB_FILE", &job_file)
        .env("SOLSTICE_LOG", "warn")
        .run(DEADLINE);
    out.assert_code(0);
    let levels = log_levels(&out.stderr);
    assert!(levels.iter().any(|l| l == "WARN"), "{out}");
    assert!(!levels.iter().any(|l| l == "INFO"), "{out}");
    out.assert_stderr_contains("future_key");
}

// ---------------------------------------------------------------------------
// Hostile conditions
// ---------------------------------------------------------------------------

#[test]
fn a_full_spool_disk_is_reported_once_and_the_console_stays_complete() {
    // /dev/full refuses every write with ENOSPC, as a full disk does.
    if !Path::new("/dev/full").exists() {
        eprintln!("skipped: no /dev/full");
        return;
    }
    let job = Job::script("i=0; while [ $i -lt 3000 ]; do echo \"line $i\"; i=$((i+1)); done");
    let out = job
        .runner()
        .env("SOLSTICE_SPOOL", "/dev/full")
        .run(DEADLINE);
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3000, "the console lost lines:\n{out}");
    assert_eq!(lines[2999], "line 2999");
    let errors = out
        .stderr
        .lines()
        .filter(|l| l.contains("writing the log spool failed"))
        .count();
    assert_eq!(errors, 1, "one error per failure streak:\n{}", out.stderr);
}

#[test]
fn a_closed_stdout_ends_check_and_dry_run_quietly() {
    let job = Job::script("echo never");
    let wf = job.file("wf.kdl");
    let mut big = String::new();
    for i in 0..2000 {
        big.push_str(&format!("step \"s{i}\" {{ run \"echo {i}\" }}\n"));
    }
    fs::write(&wf, big).unwrap();
    for args in [
        vec!["check".to_string(), wf.display().to_string()],
        vec!["--dry-run".to_string()],
    ] {
        // A pipe whose reader is gone: every write fails with EPIPE, as
        // under `| head` once head has exited.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let status = common::runner::runner_command()
            .args(&args)
            .env("SOLSTICE_REPO_URL", job.repo.path())
            .env("SOLSTICE_COMMIT_SHA", &job.sha)
            .env("SOLSTICE_JOB_FILE", job.file("none.yaml"))
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&status.stderr);
        assert_eq!(
            status.status.signal(),
            None,
            "{args:?} died of a signal: {err}"
        );
        assert_eq!(status.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn a_flood_reaches_the_spool_whole_and_in_order() {
    // 20 parts of 12,000 lines on stdout as fast as the shell makes them,
    // each in a group, a stderr line after each, and a value registered
    // with add-mask halfway: the spool's thread must keep every byte, the
    // order of stdout against the group events, and the job's last output
    // before the runner's final line.
    let job = Job::script(
        r#"i=0
while [ $i -lt 20 ]; do
  echo "::group::part $i"
  [ $i -eq 10 ] && echo "::add-mask::fl00d-s3cret"
  echo "value fl00d-s3cret"
  yes "part $i $(printf '%080d' $i)" | head -n 12000
  echo "err $i" >&2
  echo "::endgroup::"
  i=$((i+1))
done"#,
    );
    let spool = job.file("spool.ndjson");
    let out = job
        .runner()
        .env("SOLSTICE_SPOOL", &spool)
        .env("SOLSTICE_LOG_LIMIT", "0")
        .run(Duration::from_secs(120));
    out.assert_code(0);
    let events = common::events::events(&fs::read(&spool).unwrap());
    assert!(
        events.iter().enumerate().all(|(i, e)| e.seq == i as u64),
        "seq must count from 0 without gaps"
    );
    // stdout in the spool is the console's stdout without the command lines.
    let console: String = out
        .stdout
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("::"))
        .collect();
    let text = common::events::stream_text(&events, "stdout");
    assert_eq!(text.len(), console.len());
    assert!(
        text == console,
        "the spool's stdout differs from the console's"
    );
    // Part i's output lies between its group and endgroup events.
    let part = |i: usize| {
        let line = format!("part {i} {i:080}\n");
        let shown = if i >= 10 { "***" } else { "fl00d-s3cret" };
        format!("value {shown}\n{}", line.repeat(12000))
    };
    let mut want = String::new();
    let (mut seen, mut groups, mut ends) = (0, 0, 0);
    for e in &events {
        match e.stream.as_str() {
            "stdout" => seen += e.text.len(),
            "group" => {
                assert_eq!(e.text, format!("part {groups}"));
                assert_eq!(seen, want.len(), "stdout before group {groups}");
                want.push_str(&part(groups));
                groups += 1;
            }
            "endgroup" => {
                assert_eq!(seen, want.len(), "stdout before endgroup {ends}");
                ends += 1;
            }
            _ => {}
        }
    }
    assert_eq!((groups, ends), (20, 20));
    assert!(text == want, "the parts differ from what the job printed");
    let err: String = (0..20).map(|i| format!("err {i}\n")).collect();
    assert_eq!(common::events::stream_text(&events, "stderr"), err);
    // Nothing is lost at the end: the runner's last line follows it all.
    let last = events.last().unwrap();
    assert!(
        last.stream == "runner" && last.text.contains("job succeeded"),
        "the last event is {:?}",
        last.text
    );
}

#[test]
fn a_flood_through_the_spool_stays_in_bounded_memory() {
    // 64 MiB of short lines with the whole log kept: the spool's thread
    // falls behind a fast job at times, and its queue must not grow.
    const TOTAL: u64 = 64 * 1024 * 1024;
    let mut job = Job::empty();
    let body = format!(
        "yes abcdefghij | head -c {TOTAL}\n{wait}",
        wait = job.wait_for_release()
    );
    job.repo.write_job(&body);
    job.sha = job.repo.commit("flood");
    let _release = Release(&job);
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let spool = job.file("spool.ndjson");
    let runner = job
        .runner()
        .env("SOLSTICE_SPOOL", &spool)
        .env("SOLSTICE_LOG_LIMIT", "0");
    let mut run = RawRun::spawn(runner, move |d: &[u8]| {
        c.fetch_add(d.len() as u64, Ordering::SeqCst);
    });
    wait_until(
        Duration::from_secs(120),
        "all 64 MiB on the runner's stdout",
        || count.load(Ordering::SeqCst) >= TOTAL,
    );
    assert!(!run.has_exited(), "the job should still be waiting");
    let hwm = vm_hwm_kib(run.pid()).expect("reading the runner's VmHWM");
    job.release();
    let (status, stderr) = run.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{stderr}");
    let events = common::events::events(&fs::read(&spool).unwrap());
    let text = common::events::stream_text(&events, "stdout");
    assert_eq!(text.len() as u64, TOTAL);
    let want = "abcdefghij\n".repeat(TOTAL as usize / 11 + 1);
    assert!(text.as_bytes() == &want.as_bytes()[..TOTAL as usize]);
    assert!(
        runner_wrapper().is_some() || hwm < 16 * 1024,
        "the runner's peak resident set was {hwm} KiB while spooling 64 MiB"
    );
}

#[test]
fn a_log_over_its_limit_keeps_its_head_a_marker_and_its_tail() {
    // 2 MB of numbered lines under a 1 MiB limit: the spool keeps the first
    // 512 KiB, says how much was left out, then the last 512 KiB; the
    // console shows everything.
    let job = Job::script(
        r#"i=0; while [ $i -lt 40000 ]; do printf 'line %06d %038d\n' $i 0; i=$((i+1)); done; echo 'secret: s3cr3t-v4lue' >&2"#,
    );
    let spool = job.file("spool.ndjson");
    let secrets = job.file("secrets.yaml");
    fs::write(&secrets, "TOKEN: s3cr3t-v4lue\n").unwrap();
    let out = job
        .runner()
        .env("SOLSTICE_SPOOL", &spool)
        .env("SOLSTICE_LOG_LIMIT", "1M")
        .env("SOLSTICE_SECRETS_FILE", &secrets)
        .run(DEADLINE);
    out.assert_code(0);
    let total = 40000 * 51;
    assert_eq!(out.stdout.len(), total, "the console lost output");
    let events = common::events::events(&fs::read(&spool).unwrap());
    let text = common::events::stream_text(&events, "stdout");
    let half = 512 * 1024;
    // The limit counts the job's output as masked, both streams together:
    // the tail ends with stderr's 12 bytes.
    let masked_err = "secret: ***\n";
    assert_eq!(
        text.len() + masked_err.len(),
        2 * half,
        "head and tail are half the limit each"
    );
    assert!(text.starts_with("line 000000 "));
    assert_eq!(&text[..half], &out.stdout[..half]);
    assert_eq!(
        &text[half..],
        &out.stdout[total - (half - masked_err.len())..]
    );
    let omitted = total + masked_err.len() - 2 * half;
    let marker = format!("[... {omitted} bytes of output omitted ...]\n");
    let at = events
        .iter()
        .position(|e| e.stream == "runner" && e.text == marker)
        .unwrap_or_else(|| panic!("no marker {marker:?} in the spool"));
    // Everything before the marker is head, everything after it tail.
    let before: usize = events[..at]
        .iter()
        .filter(|e| e.stream == "stdout")
        .map(|e| e.text.len())
        .sum();
    assert_eq!(before, half);
    // Masking happened before the cut: the stderr line is in the tail, masked.
    assert_eq!(common::events::stream_text(&events, "stderr"), masked_err);
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seq must rise by one"
    );
    // The tail's segments are gone, and were read back without trouble
    // (a segment written over again holds older records past its end).
    assert!(!job.file("spool.ndjson.tail0").exists() && !job.file("spool.ndjson.tail1").exists());
    assert!(!out.stderr.contains("tail of the log"), "{}", out.stderr);
}
