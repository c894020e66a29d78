//! End-to-end workflow tests: a real git repository holding
//! `.solstice/workflow.kdl`, checked out and run by the real runner binary,
//! one test per rule of docs/workflow.md; then `solstice-runner check` on
//! valid and invalid files.
//!
//! Nothing here sleeps and hopes: every run has a deadline, timeouts are one
//! or two seconds, and a killed process tree is proven dead by its pids.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::job::{Job, WORKFLOW};
use common::runner::{wait_until, Output, Runner};
use common::tmp::TempDir;

const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Log readers
// ---------------------------------------------------------------------------

/// The runner's own messages (its stderr lines after `<time> <LEVEL> `),
/// without the job's stderr.
fn messages(out: &Output) -> Vec<String> {
    out.stderr
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(' ')?;
            let level = rest.get(..6)?;
            ["ERROR ", "WARN  ", "INFO  ", "DEBUG "]
                .contains(&level)
                .then(|| rest[6..].to_string())
        })
        .collect()
}

/// The step headers, in order: `[2/4] test`.
fn headers(out: &Output) -> Vec<String> {
    messages(out)
        .iter()
        .filter_map(|m| m.strip_prefix("==> ").map(str::to_string))
        .collect()
}

/// One line of the closing summary.
#[derive(Debug)]
struct Row {
    result: String,
    secs: f64,
    name: String,
}

/// The summary table: `  <result> <secs>s  <name>` after `summary:`.
fn summary(out: &Output) -> Vec<Row> {
    let msgs = messages(out);
    let start = msgs
        .iter()
        .position(|m| m == "summary:")
        .unwrap_or_else(|| panic!("no summary in the log:\n{out}"));
    msgs[start + 1..]
        .iter()
        .take_while(|m| m.starts_with("  "))
        .map(|m| {
            let (result, rest) = m.split_at(14);
            let (secs, name) = rest
                .trim_start()
                .split_once("s  ")
                .unwrap_or_else(|| panic!("bad summary row {m:?}"));
            Row {
                result: result.trim().to_string(),
                secs: secs
                    .parse()
                    .unwrap_or_else(|_| panic!("bad duration in {m:?}")),
                name: name.to_string(),
            }
        })
        .collect()
}

/// The summary as `(result, name)` pairs.
fn results(out: &Output) -> Vec<(String, String)> {
    summary(out)
        .into_iter()
        .map(|r| (r.result, r.name))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The value of `NAME=value` printed by the job on stdout.
#[track_caller]
fn printed(out: &Output, name: &str) -> String {
    let prefix = format!("{name}=");
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("the job did not print {name}:\n{out}"))
        .to_string()
}

/// Whether a process is gone (or a zombie, which runs nothing).
fn process_gone(pid: i32) -> bool {
    if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        return stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']));
    }
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) != 0 }
}

/// The pids a step wrote, one per line, into `file`.
fn pids(file: &Path) -> Vec<i32> {
    let text = fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("the step wrote no pids to {}: {e}", file.display()));
    text.lines().map(|l| l.trim().parse().unwrap()).collect()
}

#[track_caller]
fn assert_all_dead(pids: &[i32]) {
    assert!(!pids.is_empty());
    for &pid in pids {
        wait_until(
            Duration::from_secs(5),
            &format!("process {pid} to die"),
            || process_gone(pid),
        );
    }
}

/// Kills whatever a failing test left alive, so it cannot outlive the run.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(text) = fs::read_to_string(&self.0) {
            for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                if !process_gone(pid) {
                    // SAFETY: a pid our own test's step started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}

/// The job file for `job` selection tests.
fn job_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("job.yaml");
    fs::write(&path, text).unwrap();
    path
}

// ---------------------------------------------------------------------------
// Which file runs
// ---------------------------------------------------------------------------

/// The issue's example, with `cargo` replaced by commands any machine has.
const ISSUE_EXAMPLE: &str = r#"env { RUST_BACKTRACE "1" }                 // for every job (optional)
job "build" runs-on="illumos-latest" timeout="30m" {
    env { CARGO_TERM_COLOR "never" }
    step "compile" { run "echo compiled > artifact.txt" }
    step "test" timeout="10m" continue-on-error=#true workdir="crates/core" {
        env { RUST_LOG "debug" }
        run """
            echo "test in $(basename "$PWD") RUST_LOG=$RUST_LOG CARGO_TERM_COLOR=$CARGO_TERM_COLOR RUST_BACKTRACE=$RUST_BACKTRACE"
            echo done
            """
    }
    step "cleanup" if="always" run="rm -f artifact.txt; echo cleaned"
}
"#;

#[test]
fn workflow_runs_when_job_sh_is_absent() {
    let fx = Job::workflow_with(ISSUE_EXAMPLE, |r| {
        r.write("crates/core/lib.txt", "core\n");
    });
    let out = fx.run();
    out.assert_code(0);
    assert_eq!(
        out.stdout,
        "test in core RUST_LOG=debug CARGO_TERM_COLOR=never RUST_BACKTRACE=1\ndone\ncleaned\n",
        "{out}"
    );
    assert_eq!(
        headers(&out),
        ["[1/3] compile", "[2/3] test", "[3/3] cleanup"],
        "{out}"
    );
    assert!(
        messages(&out)
            .iter()
            .any(|m| m.contains(r#"running job "build""#)
                && m.contains(r#"runs-on "illumos-latest""#)),
        "runs-on is not reported:\n{out}"
    );
    assert_eq!(
        results(&out),
        pairs(&[("ok", "compile"), ("ok", "test"), ("ok", "cleanup")])
    );
    assert!(!fx.real_workdir().join("artifact.txt").exists());
}

#[test]
fn job_sh_wins_over_workflow_and_the_log_says_so() {
    let fx = Job::workflow_with(r#"step run="echo from-workflow""#, |r| {
        r.write_job("echo from-job-sh");
    });
    let out = fx.run();
    out.assert_code(0);
    assert_eq!(out.stdout, "from-job-sh\n", "{out}");
    assert!(
        messages(&out).iter().any(|m| m.contains(".solstice/job.sh")
            && m.contains(".solstice/workflow.kdl")
            && m.contains("ignored")),
        "the log does not say the workflow was ignored:\n{out}"
    );
    assert!(headers(&out).is_empty(), "{out}");
}

#[test]
fn invalid_workflow_runs_nothing_and_lists_every_error() {
    let fx = Job::workflow(
        "job \"a\" {\n    step run=\"touch ran\" timout=\"1m\"\n    step \"b\" if=\"sometimes\" run=\"touch ran\"\n}\n",
    );
    let out = fx.run();
    out.assert_code(251);
    out.assert_stderr_contains(".solstice/workflow.kdl:2:26: unknown property `timout` on `step`");
    out.assert_stderr_contains(".solstice/workflow.kdl:3:14: if=\"sometimes\" is not a condition");
    out.assert_stderr_contains(".solstice/workflow.kdl: 2 errors in the workflow");
    assert!(headers(&out).is_empty(), "{out}");
    assert!(!fx.real_workdir().join("ran").exists());
}

// ---------------------------------------------------------------------------
// Format
// ---------------------------------------------------------------------------

#[test]
fn top_level_steps_are_one_implicit_job() {
    let fx = Job::workflow(
        r#"
env { GREETING "hello" }
step run="echo \"1 $GREETING $SOLSTICE_JOB $SOLSTICE_STEP\""
step "named" { run "echo \"2 $SOLSTICE_STEP\"" }
step run="echo \"3 $SOLSTICE_STEP\""
"#,
    );
    let out = fx.run();
    out.assert_code(0);
    assert_eq!(
        out.stdout, "1 hello default step 1\n2 named\n3 step 3\n",
        "{out}"
    );
    assert_eq!(
        headers(&out),
        ["[1/3] step 1", "[2/3] named", "[3/3] step 3"]
    );
}

#[test]
fn scripts_run_verbatim_from_a_file() {
    let fx = Job::workflow(
        r##"
job "verbatim" {
    step "raw" {
        run #"""
            printf '%s\n' "back\slash" 'single "double"' "$0" | sed 's|/step-[0-9]*\.sh$|/SCRIPT|;s|^/.*/SCRIPT$|a script file|'
            echo "  indented"; echo '#not a comment'
            """#
    }
}
"##,
    );
    let out = fx.run();
    out.assert_code(0);
    assert_eq!(
        out.stdout, "back\\slash\nsingle \"double\"\na script file\n  indented\n#not a comment\n",
        "{out}"
    );
}

#[test]
fn default_shell_is_sh_e_and_shell_picks_another() {
    let fx = Job::workflow(
        r#"
job "shells" {
    step "default" continue-on-error=#true run="false; echo not-reached"
    step "plain" shell="/bin/sh" run="false; echo reached-after-false"
    step "traced" shell="sh -x" run="echo traced"
    step "missing" shell="/no/such/shell -e" continue-on-error=#true run="echo never"
}
"#,
    );
    let out = fx.run();
    out.assert_code(0);
    assert_eq!(out.stdout, "reached-after-false\ntraced\n", "{out}");
    out.assert_stderr_contains("+ echo traced");
    out.assert_stderr_contains("/no/such/shell");
    assert_eq!(
        results(&out),
        pairs(&[
            ("failed 1", "default"),
            ("ok", "plain"),
            ("ok", "traced"),
            ("failed 251", "missing"),
        ])
    );
}

// ---------------------------------------------------------------------------
// Job selection
// ---------------------------------------------------------------------------

const THREE_JOBS: &str = r#"
job "a" { step run="echo ran-a" }
job "b" { step run="echo ran-b" }
job "c" { step run="echo ran-c" }
"#;

#[test]
fn the_only_job_runs_without_selection() {
    let fx = Job::workflow(r#"job "solo" { step run="echo ran-$SOLSTICE_JOB" }"#);
    let out = fx.run();
    out.assert_code(0);
    assert_eq!(out.stdout, "ran-solo\n", "{out}");
}

#[test]
fn job_selected_by_solstice_job() {
    let fx = Job::workflow(THREE_JOBS);
    let out = fx.runner().env("SOLSTICE_JOB", "b").run(DEADLINE);
    out.assert_code(0);
    assert_eq!(out.stdout, "ran-b\n", "{out}");
}

#[test]
fn job_selected_by_job_file_key() {
    let fx = Job::workflow(THREE_JOBS);
    let file = job_file(fx.path(), "job: c\n");
    let out = fx.runner().env("SOLSTICE_JOB_FILE", &file).run(DEADLINE);
    out.assert_code(0);
    assert_eq!(out.stdout, "ran-c\n", "{out}");
}

#[test]
fn job_selected_by_flag_over_environment_and_job_file() {
    let fx = Job::workflow(THREE_JOBS);
    let file = job_file(fx.path(), "job: c\n");
    let out = fx
        .runner()
        .env("SOLSTICE_JOB_FILE", &file)
        .env("SOLSTICE_JOB", "b")
        .args(["--job", "a"])
        .run(DEADLINE);
    out.assert_code(0);
    assert_eq!(out.stdout, "ran-a\n", "{out}");
    // And the environment over the job file.
    let out = fx
        .runner()
        .env("SOLSTICE_JOB_FILE", &file)
        .env("SOLSTICE_JOB", "b")
        .run(DEADLINE);
    assert_eq!(out.stdout, "ran-b\n", "{out}");
}

#[test]
fn several_jobs_without_selection_is_an_error_listing_them() {
    let fx = Job::workflow(THREE_JOBS);
    let out = fx.run();
    out.assert_code(251);
    out.assert_stderr_contains(r#"the workflow has several jobs ("a", "b", "c")"#);
    out.assert_stderr_contains("SOLSTICE_JOB");
    out.assert_stderr_contains("--job");
    assert_eq!(out.stdout, "", "{out}");
}

#[test]
fn unknown_job_is_an_error_listing_the_jobs() {
    let fx = Job::workflow(THREE_JOBS);
    let out = fx.runner().args(["--job", "d"]).run(DEADLINE);
    out.assert_code(251);
    out.assert_stderr_contains(r#"no job named "d" in the workflow; it has "a", "b", "c""#);
    assert_eq!(out.stdout, "", "{out}");
}

// ---------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------

const LAYERS: &str = r#"
env {
    CI "workflow"
    LAYER "workflow"
    FROM_WORKFLOW "workflow"
}
job "layers" {
    env {
        LAYER "job"
        FROM_JOB "job"
    }
    step "with-env" {
        env {
            LAYER "step"
            SOLSTICE_STEP "step-env-cannot-rename-the-step"
        }
        run "for v in CI LAYER FROM_WORKFLOW FROM_JOB FROM_RUNNER SOLSTICE_JOB SOLSTICE_STEP; do eval \"echo $v=\\$$v\"; done"
    }
    step "without-env" run="echo after=$LAYER"
}
job "bare" { step run="echo bare=$LAYER; echo CI=$CI; echo WS=$SOLSTICE_WORKSPACE" }
"#;

#[test]
fn environment_layers_later_wins() {
    let fx = Job::workflow(LAYERS);
    let out = fx
        .runner()
        .env("SOLSTICE_JOB", "layers")
        .env("CI", "runner")
        .env("LAYER", "runner")
        .env("FROM_WORKFLOW", "runner")
        .env("FROM_JOB", "runner")
        .env("FROM_RUNNER", "runner")
        .run(DEADLINE);
    out.assert_code(0);
    assert_eq!(printed(&out, "LAYER"), "step", "step env wins\n{out}");
    assert_eq!(
        printed(&out, "after"),
        "job",
        "job env over workflow env\n{out}"
    );
    assert_eq!(printed(&out, "FROM_JOB"), "job");
    assert_eq!(printed(&out, "FROM_WORKFLOW"), "workflow");
    assert_eq!(printed(&out, "CI"), "workflow", "workflow env over CI=true");
    assert_eq!(printed(&out, "FROM_RUNNER"), "runner");
    assert_eq!(printed(&out, "SOLSTICE_JOB"), "layers");
    assert_eq!(printed(&out, "SOLSTICE_STEP"), "with-env");

    // Without job or step env: the workflow env over the SOLSTICE_* layer,
    // and the SOLSTICE_* layer over the runner's environment.
    let out = fx
        .runner()
        .env("SOLSTICE_JOB", "bare")
        .env("CI", "runner")
        .env("LAYER", "runner")
        .env("SOLSTICE_WORKSPACE", "/from/runner")
        .run(DEADLINE);
    out.assert_code(0);
    assert_eq!(printed(&out, "bare"), "workflow", "{out}");
    assert_eq!(printed(&out, "CI"), "workflow", "{out}");
    assert_eq!(
        fs::canonicalize(printed(&out, "WS")).unwrap(),
        fx.real_workdir(),
        "the SOLSTICE_* layer over the runner's environment\n{out}"
    );
}

#[test]
fn solstice_variables_over_the_runner_environment() {
    let fx = Job::workflow(
        r#"step run="echo CI=$CI; echo SHA=$SOLSTICE_COMMIT_SHA; echo WS=$SOLSTICE_WORKSPACE""#,
    );
    let out = fx
        .runner()
        .env("CI", "runner")
        .env("SOLSTICE_WORKSPACE", "/from/runner")
        .run(DEADLINE);
    out.assert_code(0);
    assert_eq!(printed(&out, "CI"), "true");
    assert_eq!(printed(&out, "SHA"), fx.sha);
    assert_eq!(
        fs::canonicalize(printed(&out, "WS")).unwrap(),
        fx.real_workdir()
    );
}

// ---------------------------------------------------------------------------
// Working directories
// ---------------------------------------------------------------------------

#[test]
fn steps_run_in_the_workspace_or_their_workdir() {
    let fx = Job::workflow_with(
        r#"
job "dirs" {
    step "root" run="echo root=$(pwd -P)"
    step "sub" workdir="crates/core" run="echo sub=$(pwd -P)"
    step "dotdot-inside" workdir="crates/core/../other" run="echo dotdot=$(pwd -P)"
    step "link-inside" workdir="core-link" run="echo link=$(pwd -P)"
    step "made-earlier" { run "mkdir -p gen/out"; }
    step "later" workdir="gen/out" run="echo gen=$(pwd -P)"
}
"#,
        |r| {
            r.write("crates/core/a.txt", "a\n");
            r.write("crates/other/b.txt", "b\n");
            std::os::unix::fs::symlink("crates/core", r.path().join("core-link")).unwrap();
        },
    );
    let out = fx.run();
    out.assert_code(0);
    let ws = fx.real_workdir();
    assert_eq!(PathBuf::from(printed(&out, "root")), ws);
    assert_eq!(PathBuf::from(printed(&out, "sub")), ws.join("crates/core"));
    assert_eq!(
        PathBuf::from(printed(&out, "dotdot")),
        ws.join("crates/other")
    );
    assert_eq!(PathBuf::from(printed(&out, "link")), ws.join("crates/core"));
    assert_eq!(PathBuf::from(printed(&out, "gen")), ws.join("gen/out"));
}

#[test]
fn workdir_escaping_through_dotdot_is_refused_before_anything_runs() {
    let fx = Job::workflow(
        "job \"j\" {\n    step \"first\" run=\"touch ran\"\n    step \"up\" workdir=\"crates/../../outside\" run=\"touch ran\"\n    step \"abs\" workdir=\"/tmp\" run=\"touch ran\"\n}\n",
    );
    let out = fx.run();
    out.assert_code(251);
    out.assert_stderr_contains(
        r#".solstice/workflow.kdl:3:15: workdir "crates/../../outside" must be a relative path inside the workspace"#,
    );
    out.assert_stderr_contains(
        r#".solstice/workflow.kdl:4:16: workdir "/tmp" must be a relative path inside the workspace"#,
    );
    assert!(headers(&out).is_empty(), "{out}");
    assert!(!fx.real_workdir().join("ran").exists());
}

#[test]
fn workdir_escaping_through_a_symlink_fails_the_step_and_runs_nothing_there() {
    let elsewhere = TempDir::new("elsewhere");
    let fx = Job::workflow_with(
        r#"
job "j" {
    step "escape" workdir="escape/sub" run="touch escaped-relative"
    step "absolute" if="always" workdir="abs" run="touch escaped-absolute"
    step "next" run="echo next"
    step "cleanup" if="always" run="echo cleanup"
}
"#,
        |r| {
            std::os::unix::fs::symlink("../outside", r.path().join("escape")).unwrap();
            std::os::unix::fs::symlink(elsewhere.path(), r.path().join("abs")).unwrap();
        },
    );
    let outside = fx.file("outside");
    fs::create_dir_all(outside.join("sub")).unwrap();
    let out = fx.run();
    out.assert_code(251);
    out.assert_stderr_contains(r#"step "escape": workdir "escape/sub" resolves to"#);
    out.assert_stderr_contains("which is not a directory inside the workspace");
    out.assert_stderr_contains(&format!(
        r#"step "absolute": workdir "abs" resolves to {}"#,
        fs::canonicalize(elsewhere.path()).unwrap().display()
    ));
    assert!(!outside.join("sub/escaped-relative").exists());
    assert!(!elsewhere.join("escaped-absolute").exists());
    assert_eq!(out.stdout, "cleanup\n", "{out}");
    assert_eq!(
        results(&out),
        pairs(&[
            ("failed 251", "escape"),
            ("failed 251", "absolute"),
            ("skipped", "next"),
            ("ok", "cleanup"),
        ])
    );
}

// ---------------------------------------------------------------------------
// Failures and conditions
// ---------------------------------------------------------------------------

#[test]
fn a_failing_step_skips_the_rest_except_always_and_failure() {
    let fx = Job::workflow(
        r#"
job "j" {
    step "one" run="echo one"
    step "two" run="echo two; exit 3"
    step "three" run="echo three"
    step "four" if="always" run="echo four"
    step "five" if="failure" run="echo five"
    step "six" if="success" run="echo six"
}
"#,
    );
    let out = fx.run();
    out.assert_code(3);
    assert_eq!(out.stdout, "one\ntwo\nfour\nfive\n", "{out}");
    assert_eq!(
        headers(&out),
        [
            "[1/6] one",
            "[2/6] two",
            "[3/6] three: skipped",
            "[4/6] four",
            "[5/6] five",
            "[6/6] six: skipped"
        ]
    );
    out.assert_stderr_contains(r#"step "two" failed with exit code 3"#);
    out.assert_stderr_contains(r#"job "j" failed with exit code 3"#);
}

const FAILURE_ONLY: &str = r#"
job "passing" {
    step "build" run="echo build"
    step "on-failure" if="failure" run="echo on-failure"
    step "always" if="always" run="echo always"
}
job "failing" {
    step "build" run="echo build; exit 2"
    step "on-failure" if="failure" run="echo on-failure"
    step "always" if="always" run="echo always"
}
"#;

#[test]
fn if_failure_runs_only_after_a_failure() {
    let fx = Job::workflow(FAILURE_ONLY);
    let out = fx.runner().args(["--job", "passing"]).run(DEADLINE);
    out.assert_code(0);
    assert_eq!(out.stdout, "build\nalways\n", "{out}");
    assert_eq!(
        results(&out),
        pairs(&[("ok", "build"), ("skipped", "on-failure"), ("ok", "always")])
    );

    let out = fx.runner().args(["--job", "failing"]).run(DEADLINE);
    out.assert_code(2);
    assert_eq!(out.stdout, "build\non-failure\nalways\n", "{out}");
    assert_eq!(
        results(&out),
        pairs(&[
            ("failed 2", "build"),
            ("ok", "on-failure"),
            ("ok", "always")
        ])
    );
}

#[test]
fn continue_on_error_records_the_failure_and_does_not_fail_the_job() {
    let fx = Job::workflow(
        r#"
job "j" {
    step "flaky" continue-on-error=#true run="echo flaky; exit 4"
    step "next" run="echo next"
    step "on-failure" if="failure" run="echo on-failure"
}
"#,
    );
    let out = fx.run();
    out.assert_code(0);
    assert_eq!(out.stdout, "flaky\nnext\n", "{out}");
    assert_eq!(
        results(&out),
        pairs(&[
            ("failed 4", "flaky"),
            ("ok", "next"),
            ("skipped", "on-failure")
        ])
    );
    out.assert_stderr_contains(r#"step "flaky" failed with 4; continuing (continue-on-error)"#);
    out.assert_stderr_contains(r#"job "j" succeeded"#);
}

#[test]
fn exit_code_is_that_of_the_first_failing_step() {
    let fx = Job::workflow(
        r#"
job "j" {
    step "ignored" continue-on-error=#true run="exit 9"
    step "first" run="exit 3"
    step "always" if="always" run="exit 5"
    step "failure" if="failure" run="exit 7"
    step "killed" if="always" run="kill -KILL $$"
}
"#,
    );
    let out = fx.run();
    out.assert_code(3);
    assert_eq!(
        results(&out),
        pairs(&[
            ("failed 9", "ignored"),
            ("failed 3", "first"),
            ("failed 5", "always"),
            ("failed 7", "failure"),
            ("failed 137", "killed"),
        ])
    );
}

// ---------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------

/// A step body that starts a tree of processes (one ignoring SIGTERM), writes
/// their pids to `$PIDS`, then waits.
const TREE: &str = r#"
sh -c 'trap "" TERM; exec sleep 300' &
echo $! >> "$PIDS"
(sleep 300 & echo $! >> "$PIDS"; wait) &
echo $! >> "$PIDS"
sleep 300 > /dev/null 2>&1 &
echo $! >> "$PIDS"
echo tree-started
wait
"#;

#[test]
fn step_timeout_kills_the_whole_process_tree_and_fails_124() {
    let fx = Job::workflow(&format!(
        r#"
job "j" timeout="1m" {{
    step "slow" timeout="2s" {{
        run """
{TREE}
"""
    }}
    step "next" run="echo next"
    step "cleanup" if="always" run="echo cleanup"
}}
"#
    ));
    let pid_file = fx.file("pids");
    let _reaper = Reaper(pid_file.clone());
    let started = Instant::now();
    let out = fx
        .runner()
        .env("PIDS", &pid_file)
        .env("SOLSTICE_CANCEL_GRACE", "1")
        .run(DEADLINE);
    let took = started.elapsed();
    out.assert_code(124);
    assert_eq!(out.stdout, "tree-started\ncleanup\n", "{out}");
    let pids = pids(&pid_file);
    assert_eq!(pids.len(), 4, "{pids:?}");
    assert_all_dead(&pids);
    assert!(took < Duration::from_secs(20), "took {took:?}\n{out}");
    let rows = summary(&out);
    assert_eq!(
        results(&out),
        pairs(&[
            ("timed out", "slow"),
            ("skipped", "next"),
            ("ok", "cleanup")
        ])
    );
    assert!(rows[0].secs >= 2.0, "{rows:?}");
    out.assert_stderr_contains(r#"step "slow" timed out with exit code 124"#);
}

#[test]
fn job_timeout_kills_the_step_and_only_cleanup_steps_run() {
    let fx = Job::workflow(&format!(
        r#"
job "j" timeout=2 {{
    step "first" run="echo first"
    step "slow" {{
        run """
{TREE}
"""
    }}
    step "cleanup" if="always" run="echo cleanup"
}}
"#
    ));
    let pid_file = fx.file("pids");
    let _reaper = Reaper(pid_file.clone());
    let out = fx
        .runner()
        .env("PIDS", &pid_file)
        .env("SOLSTICE_CANCEL_GRACE", "1")
        .run(DEADLINE);
    out.assert_code(124);
    assert_eq!(out.stdout, "first\ntree-started\ncleanup\n", "{out}");
    assert_all_dead(&pids(&pid_file));
    assert_eq!(
        results(&out),
        pairs(&[("ok", "first"), ("timed out", "slow"), ("ok", "cleanup")])
    );
}

#[test]
fn timeout_on_a_continue_on_error_step_is_recorded_and_the_job_goes_on() {
    let fx = Job::workflow(
        r#"
step "slow" timeout="1s" continue-on-error=#true run="sleep 30"
step "next" run="echo next"
"#,
    );
    let out = fx.runner().env("SOLSTICE_CANCEL_GRACE", "1").run(DEADLINE);
    out.assert_code(0);
    assert_eq!(out.stdout, "next\n", "{out}");
    assert_eq!(
        results(&out),
        pairs(&[("timed out", "slow"), ("ok", "next")])
    );
}

/// A process that leaves the step's process group (`setsid`, a daemon) is
/// still killed: on Linux the runner is a child subreaper.
#[test]
fn step_timeout_kills_processes_that_left_the_process_group() {
    let fx = Job::workflow(
        r#"
step "daemon" timeout="1s" {
    run """
        setsid sh -c 'echo $$ >> "$PIDS"; exec sleep 300' > /dev/null 2>&1 < /dev/null &
        while [ ! -s "$PIDS" ]; do sleep 0.01; done
        sleep 300
        """
}
"#,
    );
    let pid_file = fx.file("pids");
    let _reaper = Reaper(pid_file.clone());
    let out = fx
        .runner()
        .env("PIDS", &pid_file)
        .env("SOLSTICE_CANCEL_GRACE", "1")
        .run(DEADLINE);
    out.assert_code(124);
    assert_all_dead(&pids(&pid_file));
}

#[test]
fn solstice_job_timeout_also_bounds_a_workflow() {
    let fx = Job::workflow(
        r#"
step "slow" run="echo slow; sleep 30"
step "cleanup" if="always" run="echo cleanup"
"#,
    );
    let started = Instant::now();
    let out = fx
        .runner()
        .env("SOLSTICE_JOB_TIMEOUT", "2s")
        .env("SOLSTICE_CANCEL_GRACE", "1")
        .run(DEADLINE);
    out.assert_code(124);
    assert!(started.elapsed() < Duration::from_secs(20), "{out}");
    assert_eq!(out.stdout, "slow\ncleanup\n", "{out}");
    assert_eq!(
        results(&out),
        pairs(&[("timed out", "slow"), ("ok", "cleanup")])
    );
}

#[test]
fn cancelling_the_runner_kills_the_step_and_runs_only_cleanup_steps() {
    let fx = Job::workflow(&format!(
        r#"
step "slow" {{
    run """
{TREE}
"""
}}
step "cleanup" if="always" run="echo cleanup"
"#
    ));
    let pid_file = fx.file("pids");
    let _reaper = Reaper(pid_file.clone());
    let running = fx
        .runner()
        .env("PIDS", &pid_file)
        .env("SOLSTICE_CANCEL_GRACE", "1")
        .spawn();
    wait_until(DEADLINE, "the step to start its processes", || {
        running.stdout_so_far().contains("tree-started")
    });
    running.signal(libc::SIGTERM);
    let out = running.wait(DEADLINE);
    out.assert_code(128 + libc::SIGTERM);
    assert_eq!(out.stdout, "tree-started\ncleanup\n", "{out}");
    assert_all_dead(&pids(&pid_file));
    assert_eq!(
        results(&out),
        pairs(&[("cancelled", "slow"), ("ok", "cleanup")])
    );
}

// ---------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------

#[test]
fn summary_lists_every_step_with_result_and_duration() {
    let fx = Job::workflow(
        r#"
job "j" {
    step "quick" run="true"
    step "takes a while" run="sleep 0.3"
    step "broken" continue-on-error=#true run="exit 6"
    step "timed" timeout=1 continue-on-error=#true run="sleep 30"
    step "rescue" if="failure" run="true"
    step "last" run="true"
}
"#,
    );
    let out = fx.runner().env("SOLSTICE_CANCEL_GRACE", "1").run(DEADLINE);
    out.assert_code(0);
    let rows = summary(&out);
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.result.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("ok", "quick"),
            ("ok", "takes a while"),
            ("failed 6", "broken"),
            ("timed out", "timed"),
            ("skipped", "rescue"),
            ("ok", "last"),
        ],
        "{out}"
    );
    assert!(rows[1].secs >= 0.3, "{rows:?}");
    assert!(rows[3].secs >= 1.0 && rows[3].secs < 20.0, "{rows:?}");
    assert_eq!(rows[4].secs, 0.0, "{rows:?}");
    // The summary comes after every step's output and header.
    let msgs = messages(&out);
    let at = |needle: &str| msgs.iter().position(|m| m.contains(needle)).unwrap();
    assert!(at("==> [6/6] last") < at("summary:"), "{out}");
}

// ---------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------

/// Runs `solstice-runner check [file]` in `dir`.
fn check(dir: &Path, file: Option<&str>) -> Output {
    let mut r = Runner::new().current_dir(dir).arg("check");
    if let Some(f) = file {
        r = r.arg(f);
    }
    r.run(DEADLINE)
}

/// Writes `text` to `dir/name` and runs `check name` there.
fn check_text(text: &str) -> (TempDir, Output) {
    let dir = TempDir::new("check");
    fs::write(dir.join("wf.kdl"), text).unwrap();
    let out = check(dir.path(), Some("wf.kdl"));
    (dir, out)
}

/// The error reported at `path:line:col`: its message, then the quoted line
/// and the caret line under it, as printed.
#[track_caller]
fn error_at(out: &Output, path: &str, line: usize, col: usize) -> (String, String, String) {
    let tag = format!("{path}:{line}:{col}: ");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.contains(&tag))
        .unwrap_or_else(|| panic!("no error at {tag:?}:\n{out}"));
    let msg = lines[i].split_once(&tag).unwrap().1.to_string();
    let quoted = lines.get(i + 1).unwrap_or(&"").to_string();
    let caret = lines.get(i + 2).unwrap_or(&"").to_string();
    (msg, quoted, caret)
}

/// The `line:col` of every error `check` printed for wf.kdl, in order.
fn located(out: &Output) -> Vec<(usize, usize)> {
    out.stderr
        .lines()
        .filter_map(|l| {
            let rest = l.split_once(" wf.kdl:")?.1;
            let mut parts = rest.splitn(3, ':');
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .collect()
}

/// Asserts an error at `line:col` whose message contains `msg`, quoting
/// `source_line` with the caret under `col`.
#[track_caller]
fn assert_error(out: &Output, path: &str, line: usize, col: usize, msg: &str, source_line: &str) {
    let (got, quoted, caret) = error_at(out, path, line, col);
    assert!(
        got.contains(msg),
        "at {line}:{col}: {got:?} lacks {msg:?}\n{out}"
    );
    assert_eq!(
        quoted,
        format!("    {source_line}"),
        "quoted line at {line}:{col}"
    );
    assert_eq!(
        caret,
        format!("    {}^", " ".repeat(col - 1)),
        "caret at {line}:{col}"
    );
}

const VALID: &str = r#"// Every feature once.
env { RUST_BACKTRACE "1" }
job "build" runs-on="illumos-latest" timeout="1h30m" {
    env { CARGO_TERM_COLOR "never" }
    step "compile" { run "cargo build --release" }
    step "test" timeout="90s" continue-on-error=#true workdir="crates/core" {
        env { RUST_LOG "debug" }
        run """
            cargo test
            echo done
            """
    }
    step if="failure" shell="/bin/bash -eu" timeout=600 run="echo rescue"
    step "cleanup" if="always" run="rm -rf target/tmp"
}
job "lint" {
    step run="cargo clippy"
}
"#;

const VALID_PLAN: &str = r#"env RUST_BACKTRACE=1
job "build" runs-on="illumos-latest" timeout=5400s
  env CARGO_TERM_COLOR=never
  [1/4] "compile"
      | cargo build --release
  [2/4] "test" continue-on-error timeout=90s workdir="crates/core"
      env RUST_LOG=debug
      | cargo test
      | echo done
  [3/4] "step 3" if="failure" timeout=600s shell="/bin/bash -eu"
      | echo rescue
  [4/4] "cleanup" if="always"
      | rm -rf target/tmp
job "lint"
  [1/1] "step 1"
      | cargo clippy
"#;

#[test]
fn check_valid_file_prints_the_plan_and_exits_0() {
    let (_dir, out) = check_text(VALID);
    out.assert_code(0);
    assert_eq!(out.stdout, VALID_PLAN, "{out}");
    assert!(!out.stderr.contains("ERROR"), "{out}");
}

#[test]
fn check_defaults_to_the_solstice_workflow() {
    let dir = TempDir::new("check");
    fs::create_dir_all(dir.join(".solstice")).unwrap();
    fs::write(dir.join(WORKFLOW), VALID).unwrap();
    let out = check(dir.path(), None);
    out.assert_code(0);
    assert_eq!(out.stdout, VALID_PLAN, "{out}");

    let empty = TempDir::new("check");
    let out = check(empty.path(), None);
    out.assert_code(251);
    out.assert_stderr_contains("cannot read .solstice/workflow.kdl");
}

#[test]
fn check_accepts_the_issue_example_and_an_implicit_job() {
    let (_dir, out) = check_text(ISSUE_EXAMPLE);
    out.assert_code(0);
    out.assert_stdout_contains("job \"build\" runs-on=\"illumos-latest\" timeout=1800s\n");
    out.assert_stdout_contains(
        "  [3/3] \"cleanup\" if=\"always\"\n      | rm -f artifact.txt; echo cleaned\n",
    );

    let (_dir, out) = check_text("step run=\"make\"\nstep \"test\" run=\"make test\"\n");
    out.assert_code(0);
    assert_eq!(
        out.stdout,
        "job \"default\"\n  [1/2] \"step 1\"\n      | make\n  [2/2] \"test\"\n      | make test\n"
    );
}

/// One mistake per line; (line, col, message, line text).
const INVALID: &str = r#"jobs "typo" { }
job "a" runs_on="linux" {
    step "s1" timout="1m" run="true"
    step "s2" run="true" continue-on-error="yes"
    step "s3" run="true" timeout=#true
    step "s4" run="true" if="sometimes"
    step "s5" run="true" timeout="10 minutes"
    step "s6" run="true" timeout=0
    step "no-run" workdir="x"
    step "two-runs" run="a" { run "b"; }
    step "up" workdir="../x" run="true"
    step "abs" workdir="/etc" run="true"
    step "typo-child" run="true" { envv { A "1" }; }
    step "bad-env" run="true" { env { BAD-NAME "x"; N 1; }; }
    step "extra" "argument" run="true"
    step "nested" { run "true" { more "x" }; }
    sstep "x"
}
job "a" { step run="true" }
job { step run="true" }
job "empty" { }
step run="next to jobs"
job "" { step run="true" }
env { K "v" { child } }
"#;

#[test]
fn check_lists_every_error_with_location_and_caret() {
    let (_dir, out) = check_text(INVALID);
    out.assert_code(251);
    let src: Vec<&str> = INVALID.lines().collect();
    let expect: &[(usize, usize, &str)] = &[
        (
            1,
            1,
            "unknown node `jobs` at the top level (allowed: checkout, env, job, step); did you mean `job`?",
        ),
        (
            2,
            9,
            "unknown property `runs_on` on `job` (allowed: runs-on, timeout); did you mean `runs-on`?",
        ),
        (
            3,
            15,
            "unknown property `timout` on `step` (allowed: run, workdir, timeout, continue-on-error, if, shell); did you mean `timeout`?",
        ),
        (
            4,
            26,
            "continue-on-error must be #true or #false, not a string",
        ),
        (
            5,
            26,
            "timeout: must be a duration such as \"10m\", not a boolean",
        ),
        (6, 26, "if=\"sometimes\" is not a condition"),
        (7, 26, "timeout: \"10 minutes\" is not a duration"),
        (8, 26, "timeout must be more than zero"),
        (9, 5, "step \"no-run\" has no `run`"),
        (10, 5, "step \"two-runs\" has more than one `run`"),
        (
            11,
            15,
            "workdir \"../x\" must be a relative path inside the workspace",
        ),
        (
            12,
            16,
            "workdir \"/etc\" must be a relative path inside the workspace",
        ),
        (
            13,
            36,
            "unknown node `envv` in step (allowed: env, secrets, run); did you mean `env`?",
        ),
        (
            14,
            39,
            "`BAD-NAME` is not a valid environment variable name",
        ),
        (14, 55, "the value of N must be a string, not a number"),
        (15, 18, "unexpected argument to `step`"),
        (16, 34, "`run` takes no children block"),
        (
            17,
            5,
            "unknown node `sstep` in job (allowed: artifact, cache, env, secrets, step); did you mean `step`?",
        ),
        (19, 5, "duplicate job name \"a\""),
        (20, 1, "a job needs a name"),
        (21, 1, "job \"empty\" has no steps"),
        (22, 1, "`step` at the top level next to jobs"),
        (23, 5, "a job name cannot be empty"),
        (24, 15, "`K` takes no children block"),
    ];
    for &(line, col, msg) in expect {
        assert_error(&out, "wf.kdl", line, col, msg, src[line - 1]);
    }
    // Every error is listed, in file order, and counted.
    let tags = located(&out);
    let want: Vec<(usize, usize)> = expect.iter().map(|&(l, c, _)| (l, c)).collect();
    assert_eq!(tags, want, "{out}");
    out.assert_stderr_contains(&format!("wf.kdl: {} errors in the workflow", expect.len()));
    assert_eq!(out.stdout, "", "{out}");
}

#[test]
fn check_reports_a_file_without_jobs() {
    let (_dir, out) = check_text("// nothing yet\n");
    out.assert_code(251);
    out.assert_stderr_contains("wf.kdl:1:1: the workflow has no job");
}

#[test]
fn check_gives_kdl1_habits_their_hint() {
    let cases = [
        (
            "step run=\"true\" continue-on-error=true\n",
            "wf.kdl:1:35: `true` cannot be a bare string",
            "hint: KDL 2 writes booleans and null with a `#`: #true, #false, #null",
        ),
        (
            "step run=r\"raw\"\n",
            "wf.kdl:1:10: `r\"...\"` raw strings are KDL 1 syntax",
            "hint: KDL 2 writes raw strings as #\"...\"#",
        ),
        (
            "job \"a\" {\n    step run=\"x\" if=null\n}\n",
            "wf.kdl:2:21: `null` cannot be a bare string",
            "#null",
        ),
    ];
    for (src, error, hint) in cases {
        let (_dir, out) = check_text(src);
        out.assert_code(251);
        out.assert_stderr_contains(error);
        out.assert_stderr_contains(hint);
        assert_eq!(out.stdout, "", "{out}");
    }
}

/// The known bug: KDL counts CR, NEL, VT, FF, LS and PS as line breaks, and
/// the checker's errors must quote the line the parser counted.
#[test]
fn check_quotes_the_right_line_whatever_the_line_breaks() {
    let lines = [
        "// line one",
        "job \"a\" {",
        "    step run=\"true\" tiemout=\"1m\"",
        "}",
    ];
    for nl in [
        "\n", "\r\n", "\r", "\u{85}", "\u{b}", "\u{c}", "\u{2028}", "\u{2029}",
    ] {
        let text = lines.join(nl);
        for bom in ["", "\u{feff}"] {
            let (_dir, out) = check_text(&format!("{bom}{text}"));
            out.assert_code(251);
            assert_error(
                &out,
                "wf.kdl",
                3,
                21,
                "unknown property `tiemout` on `step`",
                lines[2],
            );
        }
    }
}

#[test]
fn check_reports_invalid_utf8_with_its_location() {
    let dir = TempDir::new("check");
    fs::write(dir.join("wf.kdl"), b"step run=\"a\"\rstep run=\"\xff\"\n").unwrap();
    let out = check(dir.path(), Some("wf.kdl"));
    out.assert_code(251);
    out.assert_stderr_contains("wf.kdl:2:11: invalid UTF-8");
}

#[test]
fn check_of_a_missing_file_is_bad_input() {
    let dir = TempDir::new("check");
    let out = check(dir.path(), Some("nope.kdl"));
    out.assert_code(251);
    out.assert_stderr_contains("cannot read nope.kdl");
}

/// What the typo is not near gets no suggestion.
#[test]
fn check_suggests_the_nearest_allowed_name() {
    let text = r#"job "a" {
    step "s" wrkdir="x" run="true" colour=#true
    stpe run="true"
    step "t" if="cancelled" run="true" Shell="/bin/bash"
}
"#;
    let (_dir, out) = check_text(text);
    out.assert_code(251);
    let src: Vec<&str> = text.lines().collect();
    let (line, col, msg) = (2, 14, "unknown property `wrkdir` on `step` (allowed: run, workdir, timeout, continue-on-error, if, shell); did you mean `workdir`?");
    assert_error(&out, "wf.kdl", line, col, msg, src[line - 1]);
    let (msg, ..) = error_at(&out, "wf.kdl", 2, 36);
    assert!(msg.ends_with("if, shell)"), "{msg}");
    let (line, col, msg) = (
        3,
        5,
        "unknown node `stpe` in job (allowed: artifact, cache, env, secrets, step); did you mean `step`?",
    );
    assert_error(&out, "wf.kdl", line, col, msg, src[line - 1]);
    let (msg, ..) = error_at(&out, "wf.kdl", 4, 40);
    assert!(msg.ends_with("did you mean `shell`?"), "{msg}");
    assert_eq!(located(&out), [(2, 14), (2, 36), (3, 5), (4, 40)], "{out}");
}

#[test]
fn check_accepts_a_cleanup_step_for_a_cancel() {
    let (_dir, out) =
        check_text("step run=\"make\"\nstep \"clean\" if=\"cancelled\" run=\"rm -rf out\"\n");
    out.assert_code(0);
    out.assert_stdout_contains("  [2/2] \"clean\" if=\"cancelled\"\n      | rm -rf out\n");

    let (_dir, out) = check_text("step if=\"canceled\" run=\"x\"\n");
    out.assert_code(251);
    out.assert_stderr_contains(
        "wf.kdl:1:6: if=\"canceled\" is not a condition: use \"success\", \"failure\", \"always\" or \"cancelled\"",
    );
}

// ---------------------------------------------------------------------------
// check on hostile files
// ---------------------------------------------------------------------------

/// A 16 KB and a 1 MB line of `n;n;n;...`, one error per node: the first
/// 50 are shown, each quoting a window of the line, and the rest counted,
/// so stderr stays small however long the line and however many errors.
#[test]
fn check_shows_the_first_errors_of_a_long_line_and_counts_the_rest() {
    for n in [8_192, 500_000] {
        let (_dir, out) = check_text(&"n;".repeat(n));
        out.assert_code(251);
        let want: Vec<(usize, usize)> = (0..50).map(|i| (1, 2 * i + 1)).collect();
        assert_eq!(located(&out), want, "for {n} nodes");
        let (_, quoted, caret) = error_at(&out, "wf.kdl", 1, 99);
        assert_eq!(quoted, format!("    ...{}...", "n;".repeat(60)));
        assert_eq!(caret, format!("       {}^", " ".repeat(60)));
        let more = n - 50;
        out.assert_stderr_contains(&format!("wf.kdl: and {more} more errors, not shown"));
        out.assert_stderr_contains(&format!("wf.kdl: {n} errors in the workflow"));
        let size = out.stderr.len();
        assert!(size < 20_000, "{size} bytes of stderr for {n} nodes");
        assert_eq!(out.stdout, "");
    }
}

#[test]
fn check_of_80000_lines_of_errors_shows_the_first_50() {
    let (_dir, out) = check_text(&"n\n".repeat(80_000));
    out.assert_code(251);
    let want: Vec<(usize, usize)> = (1..=50).map(|line| (line, 1)).collect();
    assert_eq!(located(&out), want);
    out.assert_stderr_contains("wf.kdl: and 79950 more errors, not shown");
    out.assert_stderr_contains("wf.kdl: 80000 errors in the workflow");
    let size = out.stderr.len();
    assert!(size < 20_000, "{size} bytes of stderr");
}

/// Every hostile shape near the size limit is checked in one pass: the
/// first errors are reported, the rest only counted. (Its speed, linear in
/// the file, is measured by `scripts/bench.sh --only validate`, not here:
/// a timed test measures the machine's load.)
#[test]
fn hostile_shapes_are_checked_with_bounded_output() {
    use workflow_runner::config::secrets::Secrets;
    use workflow_runner::plan::workflow::parse;
    type Shape = (&'static str, fn(usize) -> String);
    let shapes: [Shape; 6] = [
        ("an error per line", |n| "n\n".repeat(n)),
        ("errors on one line", |n| "n;".repeat(n)),
        ("an error per entry", |n| {
            format!("step run=\"x\" {}\n", "a=1 ".repeat(n))
        }),
        ("duplicate job names", |n| {
            "job \"a\" { step run=\"x\"; }\n".repeat(n)
        }),
        ("many jobs", |n| {
            (0..n)
                .map(|i| format!("job \"j{i}\" {{ step run=\"x\"; }}\n"))
                .collect()
        }),
        ("repeated variables", |n| {
            let vars: String = (0..n)
                .map(|i| format!("V{} \"x\"\n", i % (n / 2)))
                .collect();
            format!("env {{\n{vars}}}\nstep run=\"x\"\n")
        }),
    ];
    let secrets = Secrets::default();
    for (what, shape) in shapes {
        let big = shape(20_000);
        assert!(big.len() <= 1 << 20, "{what}: {} bytes", big.len());
        if let Err(e) = parse("wf.kdl", &big, &secrets) {
            assert!(e.msg.contains("error"), "{what}: {e}");
        }
    }
}

#[test]
fn check_refuses_a_file_over_1_mib() {
    const MIB: usize = 1 << 20;
    let head = "step run=\"true\"\n// ";
    let fill = |len: usize| format!("{head}{}\n", "x".repeat(len - head.len() - 1));
    let (_dir, out) = check_text(&fill(MIB));
    out.assert_code(0);
    let (_dir, out) = check_text(&fill(MIB + 1));
    out.assert_code(251);
    out.assert_stderr_contains(
        "wf.kdl is larger than a workflow file may be: at most 1 MiB (1048576 bytes)",
    );
    assert_eq!(out.stdout, "");
}

/// Text that becomes an argument or an environment string cannot hold a
/// NUL, nor exceed Linux's 128 KiB per string: `check` refuses it at its
/// line:col, rather than every step failing to start.
#[test]
fn check_refuses_what_no_program_can_be_given() {
    let text = r#"env { X "a\u{0}b" }
job "j\u{0}" {
    step "s\u{0}" shell="/bin/sh -\u{0}e" workdir="a\u{0}" run="true"
}
"#;
    let (_dir, out) = check_text(text);
    out.assert_code(251);
    let src: Vec<&str> = text.lines().collect();
    let expect: &[(usize, usize, &str)] = &[
        (
            1,
            9,
            "the value of X contains a NUL byte, which no program can be given in an environment string",
        ),
        (2, 5, "the job name contains a NUL byte"),
        (3, 10, "the step name contains a NUL byte"),
        (
            3,
            19,
            "a word of shell contains a NUL byte, which no program can be given in an argument",
        ),
        (3, 43, "workdir contains a NUL byte, which no path can hold"),
    ];
    for &(line, col, msg) in expect {
        assert_error(&out, "wf.kdl", line, col, msg, src[line - 1]);
    }
    assert_eq!(located(&out).len(), expect.len(), "{out}");

    // `BIG=`, the value and a NUL: 131,072 bytes fit, one more does not.
    let fits = "v".repeat(131_072 - 5);
    let (_dir, out) = check_text(&format!("env {{ BIG \"{fits}\" }}\nstep run=\"true\"\n"));
    out.assert_code(0);
    let (_dir, out) = check_text(&format!("env {{ BIG \"{fits}v\" }}\nstep run=\"true\"\n"));
    out.assert_code(251);
    out.assert_stderr_contains("wf.kdl:1:11: the value of BIG is too long: BIG=... takes 131073 bytes with its NUL, and Linux passes at most 131072 (128 KiB) in one environment string");
    let long = format!("step \"{}\" run=\"true\"\n", "s".repeat(131_072));
    let (_dir, out) = check_text(&long);
    out.assert_code(251);
    out.assert_stderr_contains(
        "wf.kdl:1:6: the step name is too long: SOLSTICE_STEP=... takes 131087 bytes",
    );
}

#[test]
fn check_reports_repeated_artifact_and_cache_names() {
    let (_dir, out) = check_text(
        r#"
job "j" {
    step run="true"
    artifact "a" { path "x" }
    artifact "a" { path "y" }
    cache "c" { path "d" }
    cache "c" { path "e" }
}
"#,
    );
    out.assert_code(251);
    out.assert_stderr_contains("wf.kdl:5:5: duplicate artifact name \"a\"");
    out.assert_stderr_contains("wf.kdl:7:5: duplicate cache name \"c\"");
}
