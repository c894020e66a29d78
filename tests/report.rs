//! End-to-end reporting: the real runner binary, a real git repository, and
//! the fault-injecting orchestrator on loopback. In every fault mode the
//! delivery passes `common::delivery::check_delivery`: the bytes the
//! orchestrator holds equal the runner's spool exactly, with seq rising by
//! one from 0, and the final status comes after the whole log.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::delivery::check_delivery;
use common::events::{events, stream_lines, stream_text};
use common::job::Job;
use common::orchestrator::{Fault, Orchestrator, Request};
use common::runner::{wait_until, Runner};

const DEADLINE: Duration = Duration::from_secs(60);
const TOKEN: &str = "tok-3f9a1c77e2";
const JOB: &str = "job-42";

/// The job's runner reporting to `orch` as [`JOB`], with 20 s to finish
/// the upload.
fn runner(job: &Job, orch: &Orchestrator) -> Runner {
    job.reporting(orch, JOB, TOKEN)
        .env("SOLSTICE_UPLOAD_DEADLINE", "20")
}

/// A job whose output is worth checking: both streams, many lines, a long one.
const CHATTY: &str = r#"
i=0
while [ $i -lt 300 ]; do echo "out line $i"; echo "err line $i" >&2; i=$((i+1)); done
head -c 300000 /dev/zero | tr '\0' 'x'; echo
echo "token seen by job: ${SOLSTICE_JOB_TOKEN:-none}"
"#;

fn healthy_run(fault: Fault) {
    let job = Job::script(CHATTY);
    let orch = Orchestrator::start(TOKEN, fault);
    let out = runner(&job, &orch).run(DEADLINE);
    out.assert_code(0);
    let fin = check_delivery(&orch, JOB, TOKEN, &job.spool(), &out);
    assert_eq!(fin.state, "succeeded");
    assert_eq!(fin.exit_code, Some(0));
    assert_eq!(fin.steps.len(), 1);
    assert_eq!(fin.steps[0].state, "succeeded");
    let log = String::from_utf8_lossy(&orch.log(JOB)).into_owned();
    let evs = events(log.as_bytes());
    for (stream, line) in [("stdout", "out line 299"), ("stderr", "err line 0")] {
        assert!(
            stream_lines(&evs, stream).iter().any(|l| l == line),
            "{stream} events"
        );
        assert!(
            evs.iter()
                .filter(|e| e.stream == stream)
                .all(|e| e.step.is_none()),
            "{stream} events outside a step"
        );
    }
    // Each stream's events give back its lines whole, the long one included.
    let out_lines = stream_lines(&evs, "stdout");
    assert_eq!(out_lines.len(), 302, "stdout lines");
    assert_eq!(out_lines[300], "x".repeat(300_000));
    assert!(
        log.contains(r#""stream":"runner""#) && log.contains("fetching"),
        "runner events"
    );
    assert!(
        log.contains("token seen by job: none"),
        "the token reached the job"
    );
    // The console keeps the plain text.
    assert!(out.stdout.contains("out line 7\n") && !out.stdout.contains("\"seq\""));
}

#[test]
fn healthy_orchestrator_gets_the_whole_log() {
    healthy_run(Fault::Healthy);
}

#[test]
fn refused_requests_are_retried() {
    healthy_run(Fault::Refuse503(3));
}

#[test]
fn lost_answers_never_duplicate() {
    healthy_run(Fault::LoseAnswers(2));
}

#[test]
fn orchestrator_not_listening_at_first() {
    healthy_run(Fault::AbsentFor(Duration::from_millis(1500)));
}

#[test]
fn failed_job_is_reported_with_its_code() {
    let job = Job::script("echo failing; exit 3");
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    let out = runner(&job, &orch).run(DEADLINE);
    out.assert_code(3);
    let fin = check_delivery(&orch, JOB, TOKEN, &job.spool(), &out);
    assert_eq!((fin.state.as_str(), fin.exit_code), ("failed", Some(3)));
}

#[test]
fn wrong_token_stops_uploading_but_not_the_job() {
    let job = Job::script("echo still runs; exit 5");
    let orch = Orchestrator::start("another-token", Fault::Healthy);
    let started = Instant::now();
    let out = runner(&job, &orch).run(DEADLINE);
    out.assert_code(5);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the runner waited on a refusing orchestrator"
    );
    assert!(out.stdout.contains("still runs"));
    assert!(orch.counts().total <= 3, "{:?}", orch.counts());
    assert!(!out.stderr.contains(TOKEN));
    // The end of the upload is said once more when the job is over, naming
    // the refusal rather than the deadline.
    let end = out
        .stderr
        .lines()
        .filter(|l| l.contains("the log upload stopped early"))
        .collect::<Vec<_>>();
    assert_eq!(end.len(), 1, "{out}");
    assert!(end[0].contains("refused the job token (401"), "{out}");
    assert!(!out.stderr.contains("SOLSTICE_UPLOAD_DEADLINE"), "{out}");
}

#[test]
fn absent_orchestrator_gives_up_at_the_deadline() {
    let job = Job::script("echo alone");
    let orch = Orchestrator::start(TOKEN, Fault::AbsentFor(Duration::from_secs(600)));
    let started = Instant::now();
    let out = runner(&job, &orch)
        .env("SOLSTICE_UPLOAD_DEADLINE", "1")
        .run(DEADLINE);
    out.assert_code(0);
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(out.stderr.contains("SOLSTICE_UPLOAD_DEADLINE"), "{out}");
    // The spool still holds everything for a later look.
    assert!(String::from_utf8_lossy(&fs::read(job.spool()).unwrap()).contains("alone"));
}

#[test]
fn cancellation_is_reported_after_the_whole_log() {
    let job = Job::script("trap 'echo got term; exit 1' TERM; echo started; sleep 60 & wait");
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    let running = runner(&job, &orch)
        .env("SOLSTICE_CANCEL_GRACE", "2")
        .spawn();
    wait_until(DEADLINE, "the job to start", || {
        running.stdout_so_far().contains("started")
    });
    running.signal(libc_sigterm());
    let out = running.wait(DEADLINE);
    out.assert_code(143);
    let fin = check_delivery(&orch, JOB, TOKEN, &job.spool(), &out);
    assert_eq!(
        (fin.state.as_str(), fin.exit_code),
        ("cancelled", Some(143))
    );
    assert!(String::from_utf8_lossy(&orch.log(JOB)).contains("got term"));
}

#[test]
fn an_orchestrator_cancel_on_a_log_answer_cancels_the_job() {
    let job =
        Job::script("trap 'echo got term; exit 1' TERM; while :; do echo tick; sleep 0.1; done");
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    let running = runner(&job, &orch)
        .env("SOLSTICE_CANCEL_GRACE", "2")
        .spawn();
    wait_until(DEADLINE, "the job to start", || {
        running.stdout_so_far().contains("tick")
    });
    orch.cancel_on("log", 200, Some("pressed cancel in the UI"));
    let out = running.wait(DEADLINE);
    out.assert_code(143);
    assert!(
        out.stderr
            .contains("cancelled by the orchestrator: pressed cancel in the UI"),
        "{out}"
    );
    let fin = check_delivery(&orch, JOB, TOKEN, &job.spool(), &out);
    assert_eq!(fin.state, "cancelled");
    assert!(
        fin.raw
            .contains(r#""reason":"cancelled by the orchestrator: pressed cancel in the UI""#),
        "{}",
        fin.raw
    );
    assert!(String::from_utf8_lossy(&orch.log(JOB)).contains("got term"));
}

#[test]
fn heartbeats_name_the_step_that_runs() {
    let fx = Job::workflow(
        r#"step "quiet step" run="echo started; i=0; while [ ! -e SCRATCH/release ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done""#,
    );
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    let running = fx
        .reporting(&orch, JOB, TOKEN)
        .env("SOLSTICE_HEARTBEAT", "1")
        .spawn();
    wait_until(DEADLINE, "a heartbeat naming the step", || {
        orch.statuses(JOB)
            .iter()
            .any(|s| s.state == "running" && s.raw.contains(r#""step":"quiet step""#))
    });
    fx.release();
    let out = running.wait(DEADLINE);
    out.assert_code(0);
    let fin = check_delivery(&orch, JOB, TOKEN, &fx.spool(), &out);
    assert_eq!(fin.state, "succeeded");
}

#[test]
fn a_quiet_job_hears_an_orchestrator_cancel_through_the_heartbeat() {
    let job = Job::script("echo started; sleep 60");
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    let running = runner(&job, &orch)
        .env("SOLSTICE_HEARTBEAT", "1")
        .env("SOLSTICE_CANCEL_GRACE", "2")
        .spawn();
    wait_until(DEADLINE, "the job to start", || {
        running.stdout_so_far().contains("started")
    });
    // Only status answers carry it, and the job prints nothing more.
    orch.cancel_on("status", 200, None);
    let out = running.wait(DEADLINE);
    out.assert_code(143);
    assert!(
        out.stderr.contains("cancelled by the orchestrator"),
        "{out}"
    );
    let fin = check_delivery(&orch, JOB, TOKEN, &job.spool(), &out);
    assert_eq!(fin.state, "cancelled");
    let heartbeats = orch
        .statuses(JOB)
        .iter()
        .skip(1)
        .filter(|s| s.state == "running")
        .count();
    assert!(heartbeats >= 1, "{:?}", orch.statuses(JOB));
}

#[test]
fn timeout_is_reported() {
    let job = Job::script("echo waiting; sleep 60");
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    let out = runner(&job, &orch)
        .env("SOLSTICE_JOB_TIMEOUT", "1")
        .env("SOLSTICE_CANCEL_GRACE", "1")
        .run(DEADLINE);
    out.assert_code(124);
    let fin = check_delivery(&orch, JOB, TOKEN, &job.spool(), &out);
    assert_eq!(
        (fin.state.as_str(), fin.exit_code),
        ("timed_out", Some(124))
    );
}

#[test]
fn runner_failure_is_reported_as_error() {
    let job = Job::script("echo never");
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    let out = runner(&job, &orch)
        .env("SOLSTICE_COMMIT_SHA", "0".repeat(40))
        .env("SOLSTICE_GIT_RETRIES", "0")
        .run(DEADLINE);
    out.assert_code(252);
    let fin = check_delivery(&orch, JOB, TOKEN, &job.spool(), &out);
    assert_eq!((fin.state.as_str(), fin.exit_code), ("error", Some(252)));
    assert!(String::from_utf8_lossy(&orch.log(JOB))
        .contains("0000000000000000000000000000000000000000"));
}

#[test]
fn secrets_are_masked_in_the_upload() {
    let job = Job::script(r#"echo "key=$API_KEY"; printf '%s' "$API_KEY" | base64"#);
    fs::write(job.file("secrets.yaml"), "API_KEY: 'p@ss w0rd\"x'\n").unwrap();
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    let out = runner(&job, &orch)
        .env("SOLSTICE_SECRETS_FILE", job.file("secrets.yaml"))
        .run(DEADLINE);
    out.assert_code(0);
    check_delivery(&orch, JOB, TOKEN, &job.spool(), &out);
    let log = String::from_utf8_lossy(&orch.log(JOB)).into_owned();
    assert!(log.contains("key=***"), "{log}");
    assert!(!log.contains("p@ss") && !out.stdout.contains("p@ss"));
    assert!(!log.contains("cEBzcyB3MHJkIng"), "base64 form leaked");
}

#[test]
fn https_orchestrator_is_refused_before_anything_runs() {
    let job = Job::script("echo never");
    let out = job
        .runner_in(&job.file("work"))
        .env("SOLSTICE_ORCHESTRATOR_URL", "https://127.0.0.1:1/")
        .env("SOLSTICE_JOB_ID", JOB)
        .run(DEADLINE);
    out.assert_code(251);
    assert!(out.stderr.contains("https"), "{out}");
    assert!(
        !job.file("work").exists(),
        "a refused context had side effects"
    );
}

#[test]
fn statuses_are_only_running_then_one_final() {
    let job = Job::script("echo hi");
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    let out = runner(&job, &orch).run(DEADLINE);
    check_delivery(&orch, JOB, TOKEN, &job.spool(), &out);
    let finals = orch
        .requests(JOB)
        .into_iter()
        .filter(|r| matches!(r, Request::Status(s) if s.is_final() && s.accepted))
        .count();
    assert_eq!(finals, 1);
}

fn libc_sigterm() -> i32 {
    15
}

#[test]
fn each_streams_events_join_into_its_output_exactly() {
    // A 300 KB line of 1- to 4-byte characters is cut into several events
    // (and pieces in the runner) at places that fall inside characters;
    // a pause inside a character makes the runner show the line early.
    let job = Job::script(
        r"printf 'crlf one\r\ncrlf two\r\n'
i=0; while [ $i -lt 30000 ]; do printf 'a\303\251\342\202\254\360\237\230\200'; i=$((i+1)); done; echo
printf 'bad \377 cut '; i=0; while [ $i -lt 20 ]; do printf '\342\202\254'; i=$((i+1)); done
printf '\342\202'; sleep 0.5; printf '\254 joined\n'
printf 'err one\nerr two' >&2
printf 'no newline at the end'
",
    );
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    let out = runner(&job, &orch).run(DEADLINE);
    out.assert_code(0);
    check_delivery(&orch, JOB, TOKEN, &job.spool(), &out);
    let want = format!(
        "crlf one\r\ncrlf two\r\n{}\nbad \u{fffd} cut {} joined\nno newline at the end",
        "a\u{e9}\u{20ac}\u{1f600}".repeat(30000),
        "\u{20ac}".repeat(21)
    );
    let evs = events(&fs::read(job.spool()).unwrap());
    let got = stream_text(&evs, "stdout");
    assert!(
        got == want,
        "stdout events joined differ: {} bytes, want {}",
        got.len(),
        want.len()
    );
    assert_eq!(stream_text(&evs, "stderr"), "err one\nerr two");
    assert!(out.stdout == want, "the console's stdout differs");
    // The long line took several events, none of which ends inside it with
    // a replacement character, and the pause showed `bad … cut ` early.
    let long: Vec<_> = evs
        .iter()
        .filter(|e| e.text.contains('\u{1f600}'))
        .collect();
    assert!(long.len() >= 2, "{} events for the long line", long.len());
    assert!(
        evs.iter()
            .any(|e| e.text.starts_with("bad \u{fffd} cut \u{20ac}") && !e.text.ends_with('\n')),
        "the paused line was not shown early"
    );
    // Every event is whole lines or a piece of one line.
    for e in &evs {
        let body = e.text.strip_suffix('\n').unwrap_or(&e.text);
        assert!(
            e.text.ends_with('\n') || !body.contains('\n'),
            "event {} mixes lines with a piece: {:?}",
            e.seq,
            &e.text[..e.text.len().min(80)]
        );
    }
}
