//! End-to-end tests of the job's process lifecycle against the real binary:
//! cancellation by SIGTERM/SIGINT (TERM to the job's group, KILL after
//! `SOLSTICE_CANCEL_GRACE`), the job timeout, leftover background processes,
//! and that no process of the job outlives the runner.
//!
//! Jobs write the pids of everything they start to a file outside the
//! checkout. The test records each process's start time while it is alive,
//! so "is it gone" and the cleanup of a failed test never confuse it with a
//! later process that got the same pid.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::git::{HttpConfig, HttpMode};
use common::job::{Job, Release};
use common::runner::{wait_until, Running};

const DEADLINE: Duration = Duration::from_secs(30);
/// How long a job may take to show that it is up.
const STARTUP: Duration = Duration::from_secs(15);
/// How soon after the runner's exit its job's processes must be gone (they
/// were sent SIGKILL; the kernel finishes them asynchronously).
const REAP: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The job `body` (after `#!/bin/sh`), where `PIDS` stands for the quoted
/// pid file and `RELEASE` for a bounded wait for the test's release marker.
fn pid_job(body: &str) -> Job {
    let mut job = Job::empty();
    let body = body
        .replace("PIDS", &job.q("pids"))
        .replace("RELEASE", &job.wait_for_release());
    job.repo.write_job(&body);
    job.commit("job");
    job
}

/// A process seen alive: its pid and its start time (in clock ticks since
/// boot), which tells it apart from a later process with the same pid.
#[derive(Clone, Copy, Debug)]
struct Proc {
    pid: i32,
    start: u64,
}

/// `(state, pgrp, start time, utime + stime)` from /proc/<pid>/stat.
fn stat(pid: i32) -> Option<(char, i32, u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state), so field N is f[N - 3].
    let state = f.first()?.chars().next()?;
    let pgrp = f.get(2)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let start = f.get(19)?.parse().ok()?;
    Some((state, pgrp, start, utime + stime))
}

impl Proc {
    /// Still running (a zombie has finished; it only waits to be reaped).
    fn alive(&self) -> bool {
        matches!(stat(self.pid), Some((state, _, start, _)) if state != 'Z' && start == self.start)
    }
}

/// The processes a job recorded; whatever of them is still alive when this
/// is dropped (a failed test) is killed, by pid, after checking it is the
/// same process.
struct Family {
    procs: Vec<Proc>,
}

impl Family {
    /// Waits until the job has written `n` pids, then records them, all of
    /// which must be alive. On failure, what was recorded alive is killed.
    #[track_caller]
    fn wait_for(job: &Job, n: usize) -> Family {
        let path = job.file("pids");
        let deadline = Instant::now() + STARTUP;
        while read_pids(&path).len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut family = Family { procs: Vec::new() };
        let mut dead = Vec::new();
        let pids = read_pids(&path);
        for &pid in &pids {
            match stat(pid) {
                Some((state, _, start, _)) if state != 'Z' => {
                    family.procs.push(Proc { pid, start })
                }
                _ => dead.push(pid),
            }
        }
        // Panicking drops `family`, which kills the live ones.
        assert!(
            pids.len() >= n,
            "timed out after {STARTUP:?} waiting for {n} pids in the job's pid file (got {pids:?})"
        );
        assert!(
            dead.is_empty(),
            "job processes {dead:?} are not running when they should be"
        );
        family
    }

    fn survivors(&self) -> Vec<i32> {
        self.procs
            .iter()
            .filter(|p| p.alive())
            .map(|p| p.pid)
            .collect()
    }

    /// Asserts that every recorded process is gone (allowing the kernel
    /// `REAP` to finish processes that were sent SIGKILL).
    #[track_caller]
    fn assert_all_gone(&self, what: &str) {
        let deadline = Instant::now() + REAP;
        while Instant::now() < deadline && !self.survivors().is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = self.survivors();
        if !left.is_empty() {
            let desc: Vec<String> = left.iter().map(|&pid| describe(pid)).collect();
            panic!(
                "{what}: {} job process(es) outlived the runner:\n{}",
                left.len(),
                desc.join("\n")
            );
        }
    }
}

impl Drop for Family {
    fn drop(&mut self) {
        for p in &self.procs {
            if p.alive() {
                unsafe {
                    libc::kill(p.pid, libc::SIGKILL);
                }
            }
        }
    }
}

fn describe(pid: i32) -> String {
    let cmd = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    let pgrp = stat(pid).map(|s| s.1).unwrap_or(0);
    format!("  pid {pid} (group {pgrp}): {cmd}")
}

fn read_pids(path: &Path) -> Vec<i32> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Waits for the runner to exit within `deadline` and returns its output
/// and how long that took.
fn wait_timed(running: Running, deadline: Duration) -> (common::runner::Output, Duration) {
    let t0 = Instant::now();
    let out = running.wait(deadline);
    (out, t0.elapsed())
}

/// A job that starts a family of processes, records their pids (7 in all:
/// itself, a child, a child with its own child, an orphaned grandchild, and
/// a grandchild that ignores TERM and HUP), says `ready`, then `tail`.
fn family_job(tail: &str) -> Job {
    pid_job(&format!(
        r#"P=PIDS
echo $$ >> $P
sleep 101 & echo $! >> $P
sh -c 'sleep 102 & echo $! >> "$1"; wait' sh "$P" & echo $! >> $P
( sleep 103 >/dev/null 2>&1 & echo $! >> "$P" )
( trap '' TERM HUP; sleep 104 & echo $! >> "$P"; wait ) &
echo $! >> $P
until [ "$(wc -l < $P)" -ge 7 ]; do sleep 0.01; done
echo ready
{tail}"#
    ))
}

const FAMILY: usize = 7;

// ---------------------------------------------------------------------------
// Cancellation by signal
// ---------------------------------------------------------------------------

#[test]
fn sigterm_terms_the_job_group_and_the_runner_exits_143_promptly() {
    // Default grace (10 s): a job that exits on TERM must not wait for it.
    let job = pid_job(
        r#"trap 'echo "job: got TERM"; exit 5' TERM
echo $$ >> PIDS
sh -c 'trap "echo grandchild: got TERM; exit 0" TERM; echo $$ >> "$1"; while :; do sleep 0.05; done' sh PIDS &
until [ "$(wc -l < PIDS)" -ge 2 ]; do sleep 0.01; done
echo ready
while :; do sleep 0.05; done"#,
    );
    let running = job.runner().spawn();
    let family = Family::wait_for(&job, 2);
    wait_until(STARTUP, "the job to say ready", || {
        running.stdout_so_far().contains("ready\n")
    });
    running.signal(libc::SIGTERM);
    let (out, took) = wait_timed(running, DEADLINE);
    out.assert_code(143);
    assert!(
        took < Duration::from_secs(3),
        "the runner took {took:?} after SIGTERM although the job exited at once:\n{out}"
    );
    out.assert_stdout_contains("job: got TERM\n");
    out.assert_stdout_contains("grandchild: got TERM\n");
    family.assert_all_gone("after SIGTERM");
}

#[test]
fn sigint_sends_term_to_the_job_and_the_runner_exits_130() {
    let job = pid_job(
        r#"trap 'echo "job: got TERM"; exit 0' TERM
trap 'echo "job: got INT"; exit 0' INT
echo $$ >> PIDS
echo ready
while :; do sleep 0.05; done"#,
    );
    let running = job.runner().spawn();
    let family = Family::wait_for(&job, 1);
    wait_until(STARTUP, "the job to say ready", || {
        running.stdout_so_far().contains("ready\n")
    });
    running.signal(libc::SIGINT);
    let (out, took) = wait_timed(running, DEADLINE);
    out.assert_code(130);
    assert!(took < Duration::from_secs(3), "took {took:?}:\n{out}");
    out.assert_stdout_contains("job: got TERM\n");
    assert!(!out.stdout.contains("got INT"), "{out}");
    family.assert_all_gone("after SIGINT");
}

#[test]
fn a_job_ignoring_term_is_killed_after_the_grace() {
    let job = pid_job(
        r#"trap '' TERM
echo $$ >> PIDS
sleep 105 & echo $! >> PIDS
echo ready
wait"#,
    );
    let running = job.runner().env("SOLSTICE_CANCEL_GRACE", "1").spawn();
    let family = Family::wait_for(&job, 2);
    wait_until(STARTUP, "the job to say ready", || {
        running.stdout_so_far().contains("ready\n")
    });
    running.signal(libc::SIGTERM);
    let (out, took) = wait_timed(running, DEADLINE);
    out.assert_code(143);
    assert!(
        took >= Duration::from_millis(900),
        "killed after {took:?}, before the 1 s grace"
    );
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} with a 1 s grace:\n{out}"
    );
    family.assert_all_gone("after the grace");
}

#[test]
fn the_default_grace_is_ten_seconds() {
    let job = pid_job(
        r#"trap '' TERM
echo $$ >> PIDS
echo ready
while :; do sleep 0.1; done"#,
    );
    let running = job.runner().spawn();
    let family = Family::wait_for(&job, 1);
    wait_until(STARTUP, "the job to say ready", || {
        running.stdout_so_far().contains("ready\n")
    });
    let t0 = Instant::now();
    running.signal(libc::SIGTERM);
    // The runner says which grace it applies ...
    wait_until(STARTUP, "the runner to announce the grace", || {
        running.stderr_so_far().contains("SIGKILL follows in 10s")
    });
    // ... and keeps to it: the kill cannot come early, however loaded the
    // machine is (an upper bound would only measure the load).
    let out = running.wait(DEADLINE);
    let took = t0.elapsed();
    out.assert_code(143);
    assert!(
        took >= Duration::from_millis(9900),
        "the TERM-ignoring job was killed {took:?} after SIGTERM, before the 10 s default grace:\n{out}"
    );
    family.assert_all_gone("after the default grace");
}

#[test]
fn sigterm_during_the_checkout_exits_143() {
    let job = pid_job("echo should not run");
    let srv = job.file("srv");
    job.repo.clone_bare_to(srv.join("r.git"));
    let http = HttpConfig::new(HttpMode::Smart, &srv).hold().start();
    let running = job
        .runner()
        .env("SOLSTICE_REPO_URL", http.url("r.git"))
        .spawn();
    wait_until(STARTUP, "git to reach the (hanging) server", || {
        http.waiting() > 0
    });
    running.signal(libc::SIGTERM);
    let (out, took) = wait_timed(running, DEADLINE);
    http.release();
    out.assert_code(143);
    assert!(took < Duration::from_secs(5), "took {took:?}:\n{out}");
    assert!(!out.stdout.contains("should not run"), "{out}");
}

// ---------------------------------------------------------------------------
// Timeout
// ---------------------------------------------------------------------------

#[test]
fn the_job_timeout_terms_the_job_and_exits_124() {
    let job = pid_job(
        r#"trap 'echo "job: got TERM"; exit 0' TERM
echo $$ >> PIDS
sleep 106 & echo $! >> PIDS
echo ready
wait"#,
    );
    let t0 = Instant::now();
    let running = job.runner().env("SOLSTICE_JOB_TIMEOUT", "1").spawn();
    let family = Family::wait_for(&job, 2);
    let out = running.wait(DEADLINE);
    let took = t0.elapsed();
    out.assert_code(124);
    out.assert_stdout_contains("job: got TERM\n");
    assert!(out.stderr.to_lowercase().contains("timed out"), "{out}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "a 1 s timeout ended the run after {took:?}:\n{out}"
    );
    family.assert_all_gone("after the timeout");
}

#[test]
fn a_job_file_timeout_with_units_kills_a_term_ignoring_job_after_the_grace() {
    let job = pid_job(
        r#"trap '' TERM
echo $$ >> PIDS
sleep 107 & echo $! >> PIDS
wait"#,
    );
    let job_file = job.file("job.yaml");
    fs::write(&job_file, "timeout: 1s\n").unwrap();
    let t0 = Instant::now();
    let running = job
        .runner()
        .env("SOLSTICE_JOB_FILE", &job_file)
        .env("SOLSTICE_CANCEL_GRACE", "1")
        .spawn();
    let family = Family::wait_for(&job, 2);
    let out = running.wait(DEADLINE);
    let took = t0.elapsed();
    out.assert_code(124);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "1 s timeout + 1 s grace ended the run after {took:?}:\n{out}"
    );
    family.assert_all_gone("after the timeout and the grace");
}

#[test]
fn a_job_that_finishes_within_its_timeout_keeps_its_code() {
    let job = pid_job("echo quick; exit 7");
    let out = job
        .runner()
        .env("SOLSTICE_JOB_TIMEOUT", "10m")
        .run(DEADLINE);
    out.assert_code(7);
    assert_eq!(out.stdout, "quick\n");
}

#[test]
fn the_grace_after_a_timeout_does_not_spin_the_cpu() {
    // The job survives TERM (its trap only prints), so the runner sits in the
    // grace for 3 s; it should sleep there, not poll in a busy loop. The
    // runner's whole CPU time, read when it has exited, tells: a busy loop
    // would spend most of the 3 s on the CPU, a sleeping runner almost none.
    let job = pid_job(
        r#"trap 'echo "job: got TERM"' TERM
echo $$ >> PIDS
while :; do sleep 0.05; done"#,
    );
    let running = job
        .runner()
        .env("SOLSTICE_JOB_TIMEOUT", "1")
        .env("SOLSTICE_CANCEL_GRACE", "3")
        .spawn();
    let family = Family::wait_for(&job, 1);
    let out = running.wait(DEADLINE);
    out.assert_code(124);
    out.assert_stdout_contains("job: got TERM");
    let cpu = out.cpu.expect("the runner's CPU time, read from /proc");
    assert!(
        cpu < Duration::from_millis(500),
        "the runner used {cpu:?} of CPU over a run with a 3 s grace (busy loop?):\n{out}"
    );
    family.assert_all_gone("after the timeout");
}

// ---------------------------------------------------------------------------
// Leftovers and survivors
// ---------------------------------------------------------------------------

#[test]
fn leftovers_holding_the_output_do_not_keep_the_runner_waiting() {
    let job = pid_job(
        r#"echo $$ >> PIDS
sleep 108 & echo $! >> PIDS
sh -c 'echo $$ >> "$1"; while :; do sleep 0.05; done' sh PIDS >&2 &
until [ "$(wc -l < PIDS)" -ge 3 ]; do sleep 0.01; done
echo ready
RELEASE
echo main done
exit 3"#,
    );
    let _release = Release(&job);
    let running = job.runner().spawn();
    let family = Family::wait_for(&job, 3);
    wait_until(STARTUP, "the job to say ready", || {
        running.stdout_so_far().contains("ready\n")
    });
    job.release();
    let (out, took) = wait_timed(running, DEADLINE);
    out.assert_code(3);
    out.assert_stdout_contains("main done\n");
    assert!(
        took < Duration::from_millis(1500),
        "the runner waited {took:?} for leftovers after the job's main process exited"
    );
    family.assert_all_gone("after the job's main process exited");
}

#[test]
fn leftovers_not_holding_the_output_are_killed_too() {
    let job = pid_job(
        r#"echo $$ >> PIDS
nohup sleep 109 >/dev/null 2>&1 & echo $! >> PIDS
( trap '' TERM; exec sleep 110 ) </dev/null >/dev/null 2>&1 & echo $! >> PIDS
RELEASE
echo done"#,
    );
    let _release = Release(&job);
    let running = job.runner().spawn();
    let family = Family::wait_for(&job, 3);
    job.release();
    let (out, took) = wait_timed(running, DEADLINE);
    out.assert_code(0);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    family.assert_all_gone("after a job that left detached processes");
}

#[test]
fn no_process_of_the_job_outlives_a_normal_exit() {
    let job = family_job("RELEASE\necho bye");
    let _release = Release(&job);
    let running = job.runner().spawn();
    let family = Family::wait_for(&job, FAMILY);
    wait_until(STARTUP, "the job to say ready", || {
        running.stdout_so_far().contains("ready\n")
    });
    job.release();
    let (out, took) = wait_timed(running, DEADLINE);
    out.assert_code(0);
    assert!(took < Duration::from_secs(3), "took {took:?}:\n{out}");
    family.assert_all_gone("after a normal exit");
}

#[test]
fn no_process_of_the_job_outlives_a_sigterm() {
    let job = family_job("while :; do sleep 0.05; done");
    let running = job.runner().env("SOLSTICE_CANCEL_GRACE", "1").spawn();
    let family = Family::wait_for(&job, FAMILY);
    wait_until(STARTUP, "the job to say ready", || {
        running.stdout_so_far().contains("ready\n")
    });
    running.signal(libc::SIGTERM);
    let (out, took) = wait_timed(running, DEADLINE);
    out.assert_code(143);
    assert!(took < Duration::from_secs(5), "took {took:?}:\n{out}");
    family.assert_all_gone("after SIGTERM");
}

#[test]
fn no_process_of_the_job_outlives_a_timeout() {
    let job = family_job("while :; do sleep 0.05; done");
    let running = job
        .runner()
        .env("SOLSTICE_JOB_TIMEOUT", "2")
        .env("SOLSTICE_CANCEL_GRACE", "1")
        .spawn();
    let family = Family::wait_for(&job, FAMILY);
    let (out, _) = wait_timed(running, DEADLINE);
    out.assert_code(124);
    family.assert_all_gone("after a timeout");
}

#[test]
fn a_job_process_that_leaves_the_group_does_not_outlive_the_runner() {
    // setsid(1) puts the process in a session and group of its own, out of
    // reach of a kill of the job's group; it is still the job's process.
    let job = pid_job(
        r#"echo $$ >> PIDS
setsid sleep 111 </dev/null >/dev/null 2>&1 & echo $! >> PIDS
RELEASE
echo done"#,
    );
    let _release = Release(&job);
    let running = job.runner().spawn();
    let family = Family::wait_for(&job, 2);
    job.release();
    let out = running.wait(DEADLINE);
    out.assert_code(0);
    family.assert_all_gone("after a job that used setsid");
}

// ---------------------------------------------------------------------------
// What the job inherits, and the runner's own death
// ---------------------------------------------------------------------------

#[test]
fn the_job_inherits_only_stdin_stdout_and_stderr() {
    // `ls` opens the directory it lists as its fourth descriptor; anything
    // beyond 0-3 was inherited from the runner.
    let job = pid_job("exec ls /proc/self/fd");
    let out = job.runner().run(DEADLINE);
    out.assert_code(0);
    let fds: Vec<u32> = out
        .stdout
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    assert_eq!(fds, [0, 1, 2, 3], "the job inherited descriptors:\n{out}");
}

#[test]
fn sighup_and_sigquit_cancel_like_sigterm() {
    for (sig, code) in [(libc::SIGHUP, 129), (libc::SIGQUIT, 131)] {
        let job = pid_job(
            r#"trap 'echo "job: got TERM"; exit 0' TERM
echo $$ >> PIDS
sleep 112 & echo $! >> PIDS
echo ready
wait"#,
        );
        let running = job.runner().spawn();
        let family = Family::wait_for(&job, 2);
        wait_until(STARTUP, "the job to say ready", || {
            running.stdout_so_far().contains("ready\n")
        });
        running.signal(sig);
        let out = running.wait(DEADLINE);
        out.assert_code(code);
        out.assert_stdout_contains("job: got TERM\n");
        family.assert_all_gone("after a stop signal");
    }
}

#[test]
fn a_killed_runner_takes_its_job_with_it() {
    if common::runner::runner_wrapper().is_some() {
        eprintln!(
            "skipped under SOLSTICE_TEST_WRAPPER: the parent-death signal follows the wrapper"
        );
        return;
    }
    // SIGKILL (or the OOM killer) gives the runner no chance to stop the
    // job; the kernel's parent-death signal must.
    let job = pid_job(
        r#"echo $$ >> PIDS
echo ready
while :; do sleep 0.05; done"#,
    );
    let mut running = job.runner().spawn();
    let family = Family::wait_for(&job, 1);
    wait_until(STARTUP, "the job to say ready", || {
        running.stdout_so_far().contains("ready\n")
    });
    running.signal(libc::SIGKILL);
    wait_until(DEADLINE, "the runner to die", || running.has_exited());
    family.assert_all_gone("after the runner was killed");
}
