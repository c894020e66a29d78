//! After a cancel or a timeout the cleanup steps still run (issue 13):
//! `if="always"` after both, `if="cancelled"` after a cancel, `if="failure"`
//! after a timeout, one after another within SOLSTICE_CLEANUP_TIMEOUT; a
//! further stop signal ends the cleanup at once; the final state stays
//! `cancelled` or `timed_out`, with a reason; the job's processes are listed
//! before it is stopped.

mod common;

use std::time::{Duration, Instant};

use common::delivery::check_delivery;
use common::job::Job;
use common::orchestrator::{Fault, Orchestrator};
use common::runner::wait_until;

const DEADLINE: Duration = Duration::from_secs(60);
const TOKEN: &str = "tok-cleanup-5d1";
const JOB: &str = "job-cleanup";

/// A workflow whose first step waits for a stop; then one step of each
/// condition, each printing its name.
const STEPS: &str = r#"
job "j" {
    step "main" { run "echo main started; while :; do sleep 0.05; done" }
    step "next" { run "echo RAN next" }
    step "on-failure" if="failure" { run "echo RAN on-failure" }
    step "on-cancel" if="cancelled" { run "echo RAN on-cancel" }
    step "always" if="always" { run "echo RAN always" }
}
"#;

fn ran(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("RAN "))
        .collect()
}

#[test]
fn after_a_sigterm_the_always_and_cancelled_steps_run() {
    let job = Job::workflow(STEPS);
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    let running = job.reporting(&orch, JOB, TOKEN).spawn();
    wait_until(DEADLINE, "the first step to start", || {
        running.stdout_so_far().contains("main started")
    });
    running.signal(libc::SIGTERM);
    let out = running.wait(DEADLINE);
    out.assert_code(143);
    assert_eq!(ran(&out.stdout), ["on-cancel", "always"], "{out}");
    let fin = check_delivery(&orch, JOB, TOKEN, &job.spool(), &out);
    assert_eq!(fin.state, "cancelled");
    assert!(fin.raw.contains(r#""reason":"SIGTERM""#), "{}", fin.raw);
    let states: Vec<(&str, &str)> = fin
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.state.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("main", "cancelled"),
            ("next", "skipped"),
            ("on-failure", "skipped"),
            ("on-cancel", "succeeded"),
            ("always", "succeeded"),
        ]
    );
}

#[test]
fn after_a_timeout_the_always_and_failure_steps_run() {
    let job = Job::workflow(STEPS);
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    let out = job
        .reporting(&orch, JOB, TOKEN)
        .env("SOLSTICE_JOB_TIMEOUT", "1")
        .run(DEADLINE);
    out.assert_code(124);
    assert_eq!(ran(&out.stdout), ["on-failure", "always"], "{out}");
    let fin = check_delivery(&orch, JOB, TOKEN, &job.spool(), &out);
    assert_eq!(fin.state, "timed_out");
    assert!(
        fin.raw.contains(r#""reason":"job timeout after 1s""#),
        "{}",
        fin.raw
    );
    assert_eq!(fin.steps[0].state, "timed_out");
    assert_eq!(fin.steps[4].state, "succeeded");
}

#[test]
fn the_job_is_listed_before_a_timeout_stops_it() {
    let job = Job::workflow(r#"step "hang" { run "sleep 4242; echo never" }"#);
    let out = job
        .runner()
        .env("SOLSTICE_JOB_TIMEOUT", "1")
        .env("SOLSTICE_CANCEL_GRACE", "1")
        .run(DEADLINE);
    out.assert_code(124);
    let listing = out
        .stderr
        .split_once("the job's processes")
        .unwrap_or_else(|| panic!("no process listing:\n{out}"))
        .1;
    let line = listing
        .lines()
        .find(|l| l.contains("sleep 4242"))
        .unwrap_or_else(|| panic!("the listing does not name the hung command:\n{out}"));
    // pid, parent, state, seconds, command
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert!(fields.len() >= 6, "{line}");
    assert!(fields[fields.len() - 5].parse::<u32>().is_ok(), "{line}");
}

#[test]
fn a_cleanup_step_is_stopped_when_the_cleanup_time_is_up() {
    let job = Job::workflow(
        r#"
step "main" { run "echo main started; while :; do sleep 0.05; done" }
step "slow cleanup" if="always" { run "echo RAN slow; while :; do sleep 0.05; done" }
step "late cleanup" if="always" { run "echo RAN late" }
"#,
    );
    let running = job
        .runner()
        .env("SOLSTICE_CLEANUP_TIMEOUT", "1")
        .env("SOLSTICE_CANCEL_GRACE", "1")
        .spawn();
    wait_until(DEADLINE, "the first step to start", || {
        running.stdout_so_far().contains("main started")
    });
    let t0 = Instant::now();
    running.signal(libc::SIGTERM);
    let out = running.wait(DEADLINE);
    out.assert_code(143);
    assert_eq!(ran(&out.stdout), ["slow"], "{out}");
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "the cleanup step did not get its budget"
    );
    assert!(
        out.stderr.contains("SOLSTICE_CLEANUP_TIMEOUT"),
        "the log should say why the last step did not run:\n{out}"
    );
}

#[test]
fn a_second_sigterm_ends_the_cleanup_at_once() {
    let job = Job::workflow(
        r#"
step "main" { run "echo main started; while :; do sleep 0.05; done" }
step "stubborn cleanup" if="always" { run "trap '' TERM; echo RAN stubborn; while :; do sleep 0.05; done" }
step "late cleanup" if="always" { run "echo RAN late" }
"#,
    );
    // With a long grace, only "at once" can end the run quickly.
    let running = job.runner().env("SOLSTICE_CANCEL_GRACE", "40").spawn();
    wait_until(DEADLINE, "the first step to start", || {
        running.stdout_so_far().contains("main started")
    });
    running.signal(libc::SIGTERM);
    wait_until(DEADLINE, "the cleanup step to start", || {
        running.stdout_so_far().contains("RAN stubborn")
    });
    let t0 = Instant::now();
    running.signal(libc::SIGTERM);
    let out = running.wait(DEADLINE);
    out.assert_code(143);
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "the second SIGTERM waited for the 40 s grace"
    );
    assert_eq!(ran(&out.stdout), ["stubborn"], "{out}");
}

#[test]
fn no_cleanup_step_runs_with_a_zero_budget() {
    let job = Job::workflow(STEPS);
    let running = job.runner().env("SOLSTICE_CLEANUP_TIMEOUT", "0").spawn();
    wait_until(DEADLINE, "the first step to start", || {
        running.stdout_so_far().contains("main started")
    });
    running.signal(libc::SIGTERM);
    let out = running.wait(DEADLINE);
    out.assert_code(143);
    assert!(ran(&out.stdout).is_empty(), "{out}");
}
