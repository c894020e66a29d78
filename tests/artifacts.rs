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

use common::delivery::check_delivery;
use common::job::Job;
use common::orchestrator::{Fault, FileRecord, Orchestrator, StatusRecord};
use common::runner::{Output, Runner};
use miniserde::json::{self, Value};

const DEADLINE: Duration = Duration::from_secs(60);
const TOKEN: &str = "tok-files-2b9";
const JOB: &str = "job-files";

/// Runs `job` reporting to `orch` as [`JOB`] and checks the delivery;
/// returns the runner's output and the final status.
fn run(
    job: &Job,
    orch: &Orchestrator,
    extra: impl FnOnce(Runner) -> Runner,
) -> (Output, StatusRecord) {
    run_as(JOB, job, orch, extra)
}

/// The same as job `id`: a second job on the same orchestrator.
fn run_as(
    id: &str,
    job: &Job,
    orch: &Orchestrator,
    extra: impl FnOnce(Runner) -> Runner,
) -> (Output, StatusRecord) {
    let out = extra(job.reporting(orch, id, TOKEN)).run(DEADLINE);
    let fin = check_delivery(orch, id, TOKEN, &job.spool(), &out);
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

#[test]
fn declared_artifacts_follow_their_condition() {
    if !common::files::gnu_tar() {
        return;
    }
    let build: String = BUILD
        .lines()
        .map(|l| format!("            {l}\n"))
        .collect();
    let kdl = format!(
        r#"
job "j" {{
    step "build" {{
        run """
{build}            exit ${{EXIT:-0}}
            """
    }}
    artifact "binaries" {{ path "dist/**" }}
    artifact "test-reports" when="always" {{ path "reports/*.xml" }}
    artifact "debug" when="failure" {{ path "notes.txt" }}
}}
"#
    );
    let job = Job::workflow(&kdl);
    for (exit, want) in [
        ("0", vec!["binaries", "test-reports"]),
        ("1", vec!["test-reports", "debug"]),
    ] {
        let orch = Orchestrator::start(TOKEN, Fault::Healthy);
        let (out, fin) = run(&job, &orch, |r| r.env("EXIT", exit));
        out.assert_code(exit.parse().unwrap());
        let names: Vec<String> = orch.artifacts(JOB).into_iter().map(|a| a.name).collect();
        assert_eq!(names, want, "{out}");
        let states: Vec<String> = artifacts_of(&fin)
            .iter()
            .map(|a| field(a, "state"))
            .collect();
        assert!(states.iter().all(|s| s == "uploaded"), "{}", fin.raw);
    }
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    run(&job, &orch, |r| r);
    let bins = &orch.artifacts(JOB)[0];
    assert_eq!(
        tar_list(&bins.body),
        ["dist/app", "dist/link", "dist/sub", "dist/sub/lib.so"]
    );
}

/// A workflow that uses a cache of `deps/` keyed by `lock.txt`, and reports
/// whether it found the cache filled.
const CACHED: &str = r#"
job "j" {
    cache "deps" {
        path "deps"
        key-file "lock.txt"
    }
    step "build" {
        run """
            if [ -f deps/built.txt ]; then echo "FOUND $(cat deps/built.txt)"; else echo EMPTY; fi
            mkdir -p deps && echo "from run ${RUN_ID}" > deps/built.txt
            """
    }
}
"#;

fn cached_job() -> Job {
    Job::with(|r| {
        r.write(".solstice/workflow.kdl", CACHED);
        r.write("lock.txt", "serde = 1.0\n");
    })
}

#[test]
fn a_cache_misses_then_is_saved_then_hits() {
    let job = cached_job();
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    let (out, _) = run(&job, &orch, |r| r.env("RUN_ID", "one"));
    out.assert_code(0);
    out.assert_stdout_contains("EMPTY");
    out.assert_stderr_contains("cache deps: miss");
    out.assert_stderr_contains("cache deps: saved");
    // The key: name, OS, architecture and the key file's digest.
    let digest = hex(&common::orchestrator::sha256(b"serde = 1.0\n"));
    let key = format!(
        "deps-{}-{}-{digest}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    let stored = orch
        .cache(&key)
        .unwrap_or_else(|| panic!("nothing stored under {key}"));
    assert!(!stored.is_empty());
    let (out, _) = run_as("job-files-2", &job, &orch, |r| r.env("RUN_ID", "two"));
    out.assert_code(0);
    out.assert_stdout_contains("FOUND from run one");
    out.assert_stderr_contains("cache deps: hit");
    assert!(
        !out.stderr.contains("cache deps: saved"),
        "a hit is not saved again:\n{out}"
    );
}

#[test]
fn a_hostile_cache_archive_is_a_warning_and_a_miss() {
    if !common::files::python() {
        return;
    }
    let job = cached_job();
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    let digest = hex(&common::orchestrator::sha256(b"serde = 1.0\n"));
    let key = format!(
        "deps-{}-{}-{digest}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    // An archive whose entry climbs out of the cache's path.
    let evil = job.file("evil.tar");
    let made = Command::new("python3")
        .args([
            "-c",
            "import tarfile,io,sys\nt=tarfile.open(sys.argv[1],'w')\ni=tarfile.TarInfo('deps/../../escaped.txt')\nd=b'owned'\ni.size=len(d)\nt.addfile(i,io.BytesIO(d))\nt.close()",
        ])
        .arg(&evil)
        .status()
        .unwrap();
    assert!(made.success());
    orch.put_cache(&key, &fs::read(&evil).unwrap());
    let (out, fin) = run(&job, &orch, |r| r.env("RUN_ID", "x"));
    out.assert_code(0);
    assert_eq!(fin.state, "succeeded");
    out.assert_stdout_contains("EMPTY");
    out.assert_stderr_contains("counted as a miss");
    assert!(!job.path().join("escaped.txt").exists());
    assert!(!job.workdir().parent().unwrap().join("escaped.txt").exists());
}

#[test]
fn without_an_orchestrator_the_cache_is_off_in_one_line() {
    let job = cached_job();
    let out = job.runner().env("RUN_ID", "local").run(DEADLINE);
    out.assert_code(0);
    let lines = out.stderr.lines().filter(|l| l.contains("cache")).count();
    assert_eq!(lines, 1, "{out}");
    out.assert_stderr_contains("the cache is off");
}

/// The runner's credentials never reach a tool it runs after the job: the
/// job, as root, could have replaced that tool.
#[test]
fn gzip_is_not_given_the_runners_credentials() {
    let found = Command::new("sh")
        .args(["-c", "command -v gzip"])
        .output()
        .unwrap();
    let real = String::from_utf8_lossy(&found.stdout).trim().to_string();
    if real.is_empty() {
        return;
    }
    let job = Job::script("echo x > f.txt\necho f.txt >> \"$SOLSTICE_ARTIFACTS\"");
    let bin = job.file("bin");
    fs::create_dir_all(&bin).unwrap();
    let seen = job.file("gzip.env");
    let fake = bin.join("gzip");
    fs::write(
        &fake,
        format!(
            "#!/bin/sh\nenv > '{}'\nexec '{real}' \"$@\"\n",
            seen.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let orch = Orchestrator::start(TOKEN, Fault::Healthy);
    let (out, _) = run(&job, &orch, |r| {
        r.env("PATH", &path)
            .env("SOLSTICE_GIT_TOKEN", "git-secret-5d1")
    });
    out.assert_code(0);
    let env = fs::read_to_string(&seen)
        .unwrap_or_else(|_| panic!("the gzip on PATH did not run:\n{out}"));
    for secret in [
        TOKEN,
        "git-secret-5d1",
        "SOLSTICE_JOB_TOKEN",
        "SOLSTICE_GIT_TOKEN",
    ] {
        assert!(!env.contains(secret), "gzip saw {secret}:\n{env}");
    }
    assert_eq!(orch.artifacts(JOB).len(), 1, "{out}");
}
