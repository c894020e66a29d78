//! End-to-end tests of the job context against the real binary: bad input
//! (flags, environment, job file) is refused with exit code 251, a message
//! naming the problem (with `path:line:col` for the job file) and no side
//! effects; precedence flags > environment > job file > defaults;
//! `--dry-run`; `--help` and `--version`.
//!
//! Checkout behaviour (transports, credentials, workdir reuse, option
//! injection into git) is tested in tests/checkout.rs.

mod common;

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::Duration;

use common::job::Job;
use common::runner::{Output, Runner};

const DEADLINE: Duration = Duration::from_secs(30);

/// A local repository with two commits whose job prints which one it is
/// (`job: v1`, `job: v2`) and leaves a marker `ran` outside the checkout, so
/// a run that should not have happened is visible. Its `sha` is the second
/// commit, [`older`] the first.
fn two_commits() -> Job {
    let mut job = Job::empty();
    job.repo.write_job(&format!(
        "echo \"job: $(cat version.txt)\"\ntouch {}",
        job.q("ran")
    ));
    job.repo.write("version.txt", "v1\n");
    job.commit("v1");
    job.repo.write("version.txt", "v2\n");
    job.commit("v2");
    job
}

/// The first of [`two_commits`].
fn older(job: &Job) -> String {
    job.repo.rev_parse("HEAD~1")
}

/// Whether the job ran.
fn job_ran(job: &Job) -> bool {
    job.file("ran").exists()
}

/// One bad input: what to change from the valid context, and what the
/// error must mention.
struct Case {
    name: &'static str,
    env: Vec<(&'static str, String)>,
    env_remove: Vec<&'static str>,
    args: Vec<OsString>,
    /// Written to `<tmp>/<name>.yaml` and passed as SOLSTICE_JOB_FILE.
    job_file: Option<Vec<u8>>,
    /// Fragments the stderr must contain; `{file}` stands for the job
    /// file's path.
    want: Vec<String>,
}

fn case(name: &'static str) -> Case {
    Case {
        name,
        env: Vec::new(),
        env_remove: Vec::new(),
        args: Vec::new(),
        job_file: None,
        want: Vec::new(),
    }
}

impl Case {
    fn env(mut self, k: &'static str, v: impl Into<String>) -> Case {
        self.env.push((k, v.into()));
        self
    }
    fn unset(mut self, k: &'static str) -> Case {
        self.env_remove.push(k);
        self
    }
    fn args(mut self, args: &[&str]) -> Case {
        self.args.extend(args.iter().map(OsString::from));
        self
    }
    fn file(mut self, contents: impl Into<Vec<u8>>) -> Case {
        self.job_file = Some(contents.into());
        self
    }
    fn want(mut self, fragments: &[&str]) -> Case {
        self.want.extend(fragments.iter().map(|s| s.to_string()));
        self
    }
}

#[track_caller]
fn check_refused(fx: &Job, c: Case, n: usize) -> Output {
    let wd = fx.file(&format!("wd-{n}"));
    let mut r = fx.runner_in(&wd);
    let mut file_path = String::new();
    if let Some(contents) = &c.job_file {
        let p = fx.file(&format!("{}.yaml", c.name.replace(' ', "-")));
        fs::write(&p, contents).unwrap();
        file_path = p.display().to_string();
        r = r.env("SOLSTICE_JOB_FILE", &p);
    }
    for (k, v) in &c.env {
        r = r.env(k, v);
    }
    for k in &c.env_remove {
        r = r.env_remove(k);
    }
    let out = r.args(&c.args).run(DEADLINE);
    let what = c.name;
    assert_eq!(
        out.code,
        Some(251),
        "{what}: expected exit code 251:\n{out}"
    );
    for w in &c.want {
        let w = w.replace("{file}", &file_path);
        assert!(
            out.stderr.contains(&w),
            "{what}: stderr does not mention {w:?}:\n{out}"
        );
    }
    assert!(
        out.stderr.contains("ERROR"),
        "{what}: the refusal is not logged as an error:\n{out}"
    );
    assert_eq!(out.stdout, "", "{what}: printed on stdout:\n{out}");
    assert!(!wd.exists(), "{what}: the workdir was created");
    assert!(!job_ran(fx), "{what}: the job ran");
    out
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

#[test]
fn bad_job_contexts_are_refused_with_251_and_no_side_effects() {
    let fx = two_commits();
    let short = fx.sha[..7].to_string();
    let cases = vec![
        case("missing repo_url").unset("SOLSTICE_REPO_URL").want(&[
            "repo_url",
            "SOLSTICE_REPO_URL",
            "--repo-url",
        ]),
        case("missing commit").unset("SOLSTICE_COMMIT_SHA").want(&[
            "commit_sha",
            "SOLSTICE_COMMIT_SHA",
            "--commit",
        ]),
        case("short sha")
            .env("SOLSTICE_COMMIT_SHA", short.clone())
            .want(&[
                "commit_sha",
                "SOLSTICE_COMMIT_SHA",
                &short,
                "full commit id",
            ]),
        case("branch name as sha")
            .args(&["--commit", "main"])
            .want(&["commit_sha", "--commit", "\"main\"", "full commit id"]),
        case("40 characters, not hex")
            .env("SOLSTICE_COMMIT_SHA", "g".repeat(40))
            .want(&["commit_sha", "full commit id"]),
        case("ext:: url")
            .env("SOLSTICE_REPO_URL", "ext::sh -c touch% /tmp/solstice-pwned")
            .want(&["repo_url", "ext::"]),
        case("url with a newline")
            .env("SOLSTICE_REPO_URL", "https://example.org/r\n.git")
            .want(&["repo_url", "control character"]),
        case("unsupported transport")
            .args(&["--repo-url", "ftp://example.org/r.git"])
            .want(&["repo_url", "ftp"]),
        case("empty url flag")
            .args(&["--repo-url", ""])
            .want(&["repo_url", "empty"]),
        case("timeout in env")
            .env("SOLSTICE_JOB_TIMEOUT", "10x")
            .want(&["timeout", "SOLSTICE_JOB_TIMEOUT", "10x"]),
        case("cancel grace not a number")
            .env("SOLSTICE_CANCEL_GRACE", "abc")
            .want(&["SOLSTICE_CANCEL_GRACE", "abc"]),
        case("git retries not a number")
            .env("SOLSTICE_GIT_RETRIES", "many")
            .want(&["SOLSTICE_GIT_RETRIES", "many"]),
        case("git timeout negative")
            .env("SOLSTICE_GIT_TIMEOUT", "-1")
            .want(&["SOLSTICE_GIT_TIMEOUT"]),
        case("unknown flag").args(&["--bogus"]).want(&["--bogus"]),
        case("flag without its value")
            .args(&["--commit"])
            .want(&["--commit"]),
        case("stray argument")
            .args(&["extra-argument"])
            .want(&["extra-argument"]),
    ];
    for (n, c) in cases.into_iter().enumerate() {
        check_refused(&fx, c, n);
    }
}

#[test]
fn bad_job_files_are_refused_with_251_at_path_line_col() {
    let fx = two_commits();
    let cases = vec![
        case("nested map")
            .file("workdir: /x\nimage: x\n  arch: amd64\n")
            .want(&["{file}:3:3: ", "indented line"]),
        case("block sequence")
            .file("# generated\nsteps:\n- make\n")
            .want(&["{file}:3:1: ", "block sequences"]),
        case("flow sequence")
            .file("tags: [a, b]\n")
            .want(&["{file}:1:7: ", "flow sequences"]),
        case("flow mapping")
            .file("env: {A: 1}\n")
            .want(&["{file}:1:6: ", "flow mappings"]),
        case("anchor")
            .file("job: j\nbase: &b x\n")
            .want(&["{file}:2:7: ", "anchors"]),
        case("tab indentation")
            .file("job: a\n\tjob_id: x\n")
            .want(&["{file}:2:1: ", "tab"]),
        case("duplicate key").file("job: a\njob: b\n").want(&[
            "{file}:2:1: ",
            "duplicate key \"job\"",
            "line 1",
        ]),
        case("unterminated quote")
            .file("job_id: 7\njob: 'build\n")
            .want(&["{file}:2:6: ", "unterminated"]),
        case("invalid utf-8")
            .file(b"job: \xff\n".to_vec())
            .want(&["{file}:1:6: ", "UTF-8"]),
        case("bad timeout in the job file")
            .file("job: j\ntimeout: 10x\n")
            .want(&["{file}:2:10: ", "timeout", "10x"]),
        case("branch name as commit in the job file")
            .unset("SOLSTICE_COMMIT_SHA")
            .file("commit_sha: main\n")
            .want(&["{file}:1:13: ", "commit_sha", "full commit id"]),
        case("url with an escaped newline in the job file")
            .unset("SOLSTICE_REPO_URL")
            .file("repo_url: \"https://example.org/r\\n.git\"\n")
            .want(&["{file}:1:11: ", "repo_url", "control character"]),
        case("ext:: url in the job file")
            .unset("SOLSTICE_REPO_URL")
            .file("repo_url: 'ext::sh -c touch% /tmp/solstice-pwned'\n")
            .want(&["{file}:1:11: ", "ext::"]),
    ];
    for (n, c) in cases.into_iter().enumerate() {
        check_refused(&fx, c, n);
    }
}

#[test]
fn an_unreadable_job_file_is_refused_with_251() {
    let fx = two_commits();
    // A directory: unreadable as a file even for root.
    let dir = fx.file("job.yaml.d");
    fs::create_dir(&dir).unwrap();
    let wd = fx.file("wd");
    let out = fx
        .runner_in(&wd)
        .env("SOLSTICE_JOB_FILE", &dir)
        .run(DEADLINE);
    out.assert_code(251);
    out.assert_stderr_contains("cannot read job file");
    out.assert_stderr_contains(&dir.display().to_string());
    assert!(!wd.exists());
    assert!(!job_ran(&fx));
}

#[test]
fn a_non_utf8_argument_is_refused_with_251() {
    let fx = two_commits();
    let wd = fx.file("wd");
    let out = fx
        .runner_in(&wd)
        .arg("--workdir")
        .arg(OsString::from_vec(b"/tmp/\xff\xfe".to_vec()))
        .run(DEADLINE);
    out.assert_code(251);
    out.assert_stderr_contains("UTF-8");
    assert!(!job_ran(&fx));
}

#[test]
fn an_unknown_job_file_key_warns_and_the_job_still_runs() {
    let fx = two_commits();
    let job_file = fx.file("job.yaml");
    fs::write(&job_file, "# from a newer orchestrator\nfuture_key: 1\n").unwrap();
    let wd = fx.file("wd");
    let out = fx
        .runner_in(&wd)
        .env("SOLSTICE_JOB_FILE", &job_file)
        .run(DEADLINE);
    out.assert_code(0);
    out.assert_stdout_contains("job: v2\n");
    let warning = out
        .stderr
        .lines()
        .find(|l| l.contains("future_key"))
        .unwrap_or_else(|| panic!("no warning about the unknown key:\n{out}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains(&format!("{}:2:1", job_file.display())),
        "{warning}"
    );
    assert!(job_ran(&fx));
}

// ---------------------------------------------------------------------------
// Precedence and --dry-run
// ---------------------------------------------------------------------------

/// The value and source `--dry-run` shows for `key`.
fn dry_run_value<'a>(out: &'a Output, key: &str) -> &'a str {
    out.stdout
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim())
        })
        .unwrap_or_else(|| panic!("--dry-run does not show {key}:\n{out}"))
}

/// A job file with every key of the README's table; the environment and the
/// flags then override some of them.
/// With `full`, also the reporting keys (for `--dry-run` only: a real run
/// would try to reach the orchestrator).
fn precedence_setup(fx: &Job, full: bool) -> (Runner, PathBuf, [PathBuf; 3]) {
    let [wd_file, wd_env, wd_flag] = [fx.file("wd-file"), fx.file("wd-env"), fx.file("wd-flag")];
    let job_file = fx.file("job.yaml");
    let mut text = format!(
        "repo_url: {url}\ncommit_sha: {c0}\nworkdir: {wd}\njob: from-file\ntimeout: 1h\n",
        url = fx.repo.path().display(),
        c0 = older(fx),
        wd = wd_file.display(),
    );
    if full {
        text.push_str(&format!(
            "orchestrator_url: http://127.0.0.1:9/prefix\njob_id: file-id\ntoken: file-t0ken\n\
             spool: {spool}\nsecrets_file: {secrets}\n",
            spool = fx.file("spool.ndjson").display(),
            secrets = fx.file("no-secrets.yaml").display(),
        ));
    }
    fs::write(&job_file, text).unwrap();
    let r = Runner::new()
        .env("SOLSTICE_JOB_FILE", &job_file)
        .env("SOLSTICE_COMMIT_SHA", &fx.sha)
        .env("SOLSTICE_WORKDIR", &wd_env)
        .env("SOLSTICE_JOB_ID", "env-id")
        .env("SOLSTICE_GIT_RETRIES", "0")
        .arg("--workdir")
        .arg(&wd_flag);
    (r, job_file, [wd_file, wd_env, wd_flag])
}

#[test]
fn dry_run_shows_each_setting_with_its_source_and_does_nothing() {
    let fx = two_commits();
    let (r, job_file, [wd_file, wd_env, wd_flag]) = precedence_setup(&fx, true);
    let f = job_file.display().to_string();
    let out = r.arg("--dry-run").run(DEADLINE);
    out.assert_code(0);

    let shows = |key: &str, value: &str, source: &str| {
        let v = dry_run_value(&out, key);
        assert!(
            v.starts_with(value) && v.contains(&format!("[{source}]")),
            "{key}: expected {value:?} from {source:?}, got {v:?}:\n{out}"
        );
    };
    assert_eq!(
        dry_run_value(&out, "job_file"),
        format!("{f}    [environment SOLSTICE_JOB_FILE]"),
        "{out}"
    );
    shows(
        "repo_url",
        &fx.repo.path().display().to_string(),
        &format!("{f}:1:11"),
    );
    shows("commit_sha", &fx.sha, "environment SOLSTICE_COMMIT_SHA");
    shows("workdir", &wd_flag.display().to_string(), "flag --workdir");
    shows("job", "from-file", &format!("{f}:4:6"));
    shows("timeout", "1h", &format!("{f}:5:10"));
    shows("job_id", "env-id", "environment SOLSTICE_JOB_ID");
    shows("token", "(set, hidden)", &format!("{f}:8:8"));
    shows(
        "orchestrator_url",
        "http://127.0.0.1:9/prefix",
        &format!("{f}:6:19"),
    );
    shows(
        "spool",
        &fx.file("spool.ndjson").display().to_string(),
        &format!("{f}:9:8"),
    );
    assert!(
        !out.all_output().contains("file-t0ken"),
        "the token leaked:\n{out}"
    );

    // Nothing was fetched, created or run.
    for wd in [&wd_file, &wd_env, &wd_flag] {
        assert!(!wd.exists(), "--dry-run created {}", wd.display());
    }
    assert!(!job_ran(&fx));
    assert!(!out.stdout.contains("job: v"), "{out}");
}

#[test]
fn dry_run_shows_defaults_and_unset_settings() {
    let fx = two_commits();
    let out = Runner::new()
        .env("SOLSTICE_REPO_URL", fx.repo.path().display().to_string())
        .env("SOLSTICE_COMMIT_SHA", &fx.sha)
        .arg("--dry-run")
        .run(DEADLINE);
    out.assert_code(0);
    let workdir = dry_run_value(&out, "workdir");
    assert!(
        workdir.starts_with("/root/work") && workdir.contains("[default]"),
        "{workdir:?}"
    );
    assert!(dry_run_value(&out, "repo_url").contains("[environment SOLSTICE_REPO_URL]"));
    for key in [
        "job",
        "timeout",
        "orchestrator_url",
        "job_id",
        "token",
        "spool",
        "secrets_file",
    ] {
        // Every setting is listed, set or not.
        dry_run_value(&out, key);
    }
    let secrets = dry_run_value(&out, "secrets_file");
    assert!(
        secrets.starts_with("/etc/solstice/secrets.yaml") && secrets.contains("[default]"),
        "the README's default secrets_file: {secrets:?}"
    );
    assert!(dry_run_value(&out, "token").contains("unset"));
    assert!(dry_run_value(&out, "timeout").contains("unset"));
}

#[test]
fn dry_run_hides_secrets_and_url_credentials() {
    let fx = two_commits();
    let out = Runner::new()
        .env(
            "SOLSTICE_REPO_URL",
            "https://builder:pa55-w0rd@127.0.0.1:9/team/app.git",
        )
        .env("SOLSTICE_COMMIT_SHA", &fx.sha)
        .env("SOLSTICE_WORKDIR", fx.file("wd"))
        .env("SOLSTICE_JOB_TOKEN", "t0ken-value")
        .arg("--dry-run")
        .run(DEADLINE);
    out.assert_code(0);
    let all = out.all_output();
    assert!(
        !all.contains("pa55-w0rd"),
        "the URL password leaked:\n{out}"
    );
    assert!(!all.contains("t0ken-value"), "the token leaked:\n{out}");
    assert!(
        dry_run_value(&out, "token").contains("(set, hidden)"),
        "{out}"
    );
    assert!(
        dry_run_value(&out, "repo_url").contains("127.0.0.1:9/team/app.git"),
        "{out}"
    );
    assert!(!fx.file("wd").exists());
}

#[test]
fn flags_beat_environment_beat_job_file_in_a_real_run() {
    let fx = two_commits();
    let (r, _job_file, [wd_file, wd_env, wd_flag]) = precedence_setup(&fx, false);
    let out = r.run(DEADLINE);
    // commit from the environment (v2) beats the job file's (v1); the
    // workdir from the flag beats both; the URL comes from the job file.
    out.assert_code(0);
    out.assert_stdout_contains("job: v2\n");
    assert_eq!(
        fs::read_to_string(wd_flag.join("version.txt")).unwrap(),
        "v2\n"
    );
    assert!(!wd_env.exists() && !wd_file.exists());
}

#[test]
fn job_file_values_are_used_when_nothing_overrides_them() {
    let fx = two_commits();
    let wd = fx.file("wd");
    let job_file = fx.file("job.yaml");
    fs::write(
        &job_file,
        format!(
            "---\n# as cloud-init writes it\nrepo_url: '{}'\ncommit_sha: \"{}\"   # v1\nworkdir: {}\n",
            fx.repo.path().display(),
            older(&fx),
            wd.display()
        ),
    )
    .unwrap();
    let out = Runner::new()
        .env("SOLSTICE_JOB_FILE", &job_file)
        .env("SOLSTICE_GIT_RETRIES", "0")
        .run(DEADLINE);
    out.assert_code(0);
    out.assert_stdout_contains("job: v1\n");
    assert!(wd.join(".git").is_dir());
}

#[test]
fn job_file_flag_beats_solstice_job_file() {
    let fx = two_commits();
    let good = fx.file("good.yaml");
    fs::write(&good, format!("commit_sha: {}\n", older(&fx))).unwrap();
    let broken = fx.file("broken.yaml");
    fs::write(&broken, "steps:\n- x\n").unwrap();
    let wd = fx.file("wd");
    let out = fx
        .runner_in(&wd)
        .env_remove("SOLSTICE_COMMIT_SHA")
        .env("SOLSTICE_JOB_FILE", &broken)
        .arg("--job-file")
        .arg(&good)
        .arg("--dry-run")
        .run(DEADLINE);
    out.assert_code(0);
    assert!(
        dry_run_value(&out, "commit_sha").starts_with(&older(&fx)),
        "{out}"
    );
    assert!(dry_run_value(&out, "job_file").starts_with(&good.display().to_string()));
}

// ---------------------------------------------------------------------------
// --help and --version
// ---------------------------------------------------------------------------

#[test]
fn help_prints_usage_and_exits_0_without_a_context() {
    for flag in ["--help", "-h"] {
        let out = Runner::new().arg(flag).run(DEADLINE);
        out.assert_code(0);
        for needle in [
            "USAGE",
            "--repo-url",
            "--commit",
            "--workdir",
            "--job-file",
            "--dry-run",
            "--version",
            "251",
        ] {
            assert!(out.stdout.contains(needle), "{flag}: no {needle:?}:\n{out}");
        }
        assert_eq!(out.stderr, "", "{flag}:\n{out}");
    }
}

#[test]
fn version_prints_the_package_version() {
    for flag in ["--version", "-V"] {
        let out = Runner::new().arg(flag).run(DEADLINE);
        out.assert_code(0);
        assert_eq!(
            out.stdout,
            format!("solstice-runner {}\n", env!("CARGO_PKG_VERSION")),
            "{flag}"
        );
        assert_eq!(out.stderr, "", "{flag}:\n{out}");
    }
}

#[test]
fn dry_run_lists_every_setting_once() {
    let fx = two_commits();
    let out = fx.runner_in(&fx.file("wd")).arg("--dry-run").run(DEADLINE);
    out.assert_code(0);
    let keys: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| Some(l.split_once(" = ")?.0.trim()))
        .collect();
    for key in [
        "job_file",
        "repo_url",
        "commit_sha",
        "workdir",
        "job",
        "timeout",
        "orchestrator_url",
        "job_id",
        "token",
        "spool",
        "secrets_file",
        "log",
        "git_retries",
        "git_timeout",
        "git_token",
        "git_user",
        "cancel_grace",
        "upload_deadline",
        "heartbeat",
        "cleanup_timeout",
        "log_limit",
        "artifact_limit",
        "step_debug",
    ] {
        let n = keys.iter().filter(|k| **k == key).count();
        assert_eq!(n, 1, "{key} is listed {n} times:\n{out}");
    }
    assert_eq!(
        dry_run_value(&out, "git_retries"),
        "0    [environment SOLSTICE_GIT_RETRIES]"
    );
    assert_eq!(dry_run_value(&out, "cancel_grace"), "10s    [default]");
}
