//! Files out of and into the VM, end to end (issue 14): artifacts a step
//! lists in `$SOLSTICE_ARTIFACTS` or a workflow job declares, uploaded to the
//! test orchestrator (which checks Content-Length and Repr-Digest) or written
//! beside the workdir; and the keyed cache, restored and saved. Archives are
//! read back with GNU tar, as a user would.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::job::Job;
use common::orchestrator::{Fault, FileRecord, Orchestrator, StatusRecord};
use common::runner::{Output, Runner};
use miniserde::json::{self, Value};

const DEADLINE: Duration = Duration::from_secs(60);
const TOKEN: &str = "tok-files-2b9";
const JOB: &str = "job-files";

fn reporting(r: Runner, job: &Job, orch: &Orchestrator) -> Runner {
    r.env("SOLSTICE_ORCHESTRATOR_URL", orch.url())
        .env("SOLSTICE_JOB_ID", JOB)
        .env("SOLSTICE_JOB_TOKEN", TOKEN)
        .env("SOLSTICE_SPOOL", job.file("spool.ndjson"))
}

fn run(
    job: &Job,
    orch: &Orchestrator,
    extra: impl FnOnce(Runner) -> Runner,
) -> (Output, StatusRecord) {
    let out = extra(reporting(job.runner(), job, orch)).run(DEADLINE);
    let fin = orch
        .wait_for_final(DEADLINE)
        .unwrap_or_else(|| panic!("no final status:\n{out}"));
    assert!(orch.violations().is_empty(), "{:?}", orch.violations());
    (out, fin)
}

/// The names GNU tar lists in an archive (gzip or not).
fn tar_list(body: &[u8]) -> Vec<String> {
    let mut child = Command::new("tar")
        .args(["-tzf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("GNU tar");
    let mut stdin = child.stdin.take().unwrap();
    let data = body.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "tar -t failed");
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    names.sort();
    names
}

fn artifacts_of(fin: &StatusRecord) -> Vec<Value> {
    let v: Value = json::from_str(&fin.raw).unwrap();
    match v {
        Value::Object(o) => match o.get("artifacts") {
            Some(Value::Array(a)) => a.to_vec(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn field(v: &Value, key: &str) -> String {
    match v {
        Value::Object(o) => match o.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            other => format!("{other:?}"),
        },
        _ => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const BUILD: &str = r#"mkdir -p dist/sub reports
echo binary > dist/app
echo nested > dist/sub/lib.so
ln -s app dist/link
echo '<xml/>' > reports/junit.xml
echo notes > notes.txt
"#;

#[test]
fn a_step_lists_artifacts_and_they_are_uploaded_whatever_the_result() {
    if !common::files::gnu_tar() {
        return;
    }
    let job = Job::script(&format!(
        "{BUILD}printf 'dist\\nreports/*.xml\\nnothing/*.bin\\n../outside\\n' >> \"$SOLSTICE_ARTIFACTS\"\nexit 3"
    ));
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    let (out, fin) = run(&job, &orch, |r| r);
    out.assert_code(3);
    let uploaded: Vec<FileRecord> = orch.artifacts(JOB);
    assert_eq!(uploaded.len(), 1, "{out}");
    let a = &uploaded[0];
    assert_eq!(a.name, "artifacts");
    assert_eq!(
        tar_list(&a.body),
        [
            "dist",
            "dist/app",
            "dist/link",
            "dist/sub",
            "dist/sub/lib.so",
            "reports/junit.xml"
        ]
    );
    // Warnings, not failures: no match, and a pattern that leaves the workspace.
    out.assert_stderr_contains("nothing/*.bin");
    out.assert_stderr_contains("../outside");
    let reports = artifacts_of(&fin);
    assert_eq!(reports.len(), 1, "{}", fin.raw);
    let r = &reports[0];
    assert_eq!(field(r, "name"), "artifacts");
    assert_eq!(field(r, "state"), "uploaded");
    assert_eq!(field(r, "bytes"), a.body.len().to_string());
    assert_eq!(
        field(r, "sha256"),
        hex(&common::orchestrator::sha256(&a.body))
    );
    assert_eq!(
        fin.state, "failed",
        "an artifact does not change the result"
    );
}

#[test]
fn without_an_orchestrator_artifacts_are_written_beside_the_workdir() {
    if !common::files::gnu_tar() {
        return;
    }
    let job = Job::script(&format!(
        "{BUILD}echo 'dist/app' >> \"$SOLSTICE_ARTIFACTS\""
    ));
    let out = job.runner().run(DEADLINE);
    out.assert_code(0);
    let dir = format!("{}.artifacts", job.workdir().display());
    let written = ["artifacts.tar.gz", "artifacts.tar"]
        .iter()
        .map(|n| Path::new(&dir).join(n))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no archive in {dir}:\n{out}"));
    assert_eq!(tar_list(&fs::read(&written).unwrap()), ["dist/app"]);
    out.assert_stderr_contains(&written.display().to_string());
}

#[test]
fn an_artifact_over_the_limit_is_not_sent() {
    let job = Job::script(
        "head -c 300000 /dev/urandom > big.bin\necho big.bin >> \"$SOLSTICE_ARTIFACTS\"",
    );
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    let (out, fin) = run(&job, &orch, |r| r.env("SOLSTICE_ARTIFACT_LIMIT", "100K"));
    out.assert_code(0);
    assert!(orch.artifacts(JOB).is_empty());
    let reports = artifacts_of(&fin);
    assert_eq!(field(&reports[0], "state"), "too_large", "{}", fin.raw);
    out.assert_stderr_contains("SOLSTICE_ARTIFACT_LIMIT");
}

#[test]
fn a_failed_upload_is_reported_and_the_job_result_stands() {
    let job = Job::script("echo x > x.txt\necho x.txt >> \"$SOLSTICE_ARTIFACTS\"");
    // Refuses every artifact with 403, accepts the log and the status.
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    orch.refuse_artifacts(403);
    let (out, fin) = run(&job, &orch, |r| r);
    out.assert_code(0);
    assert_eq!(fin.state, "succeeded");
    assert_eq!(field(&artifacts_of(&fin)[0], "state"), "failed");
    out.assert_stderr_contains("403");
}
