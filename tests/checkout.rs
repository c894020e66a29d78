//! End-to-end checkout tests: the real runner binary fetching from real git
//! servers on loopback (file://, a local path, git daemon, smart HTTP with
//! protocol v2, dumb HTTP, Basic auth), then running `.solstice/job.sh`.
//!
//! In the transport tests the requested commit is the middle one of three,
//! never the branch tip, so a runner that just clones the default branch
//! fails them.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::git::{
    base64, git_in, head_of, snapshot, GitDaemon, HttpConfig, HttpMode, HttpServer, Repo,
};
use common::runner::{wait_until, Output, Runner};
use common::tmp::{free_port, TempDir};

const DEADLINE: Duration = Duration::from_secs(90);

/// A served repository with three commits; each commit's `version.txt`
/// says `v1`, `v2`, `v3` and its job prints that.
struct Fixture {
    tmp: TempDir,
    work: Repo,
    bare: Repo,
    /// The three commits, oldest first.
    c: [String; 3],
}

const VERSION_JOB: &str = r#"echo "job: version $(cat version.txt)""#;

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_job(VERSION_JOB)
    }

    fn with_job(job: &str) -> Fixture {
        let tmp = TempDir::new("checkout");
        let work = Repo::init(tmp.join("work"));
        work.write_job(job);
        let mut c = Vec::new();
        for i in 1..=3 {
            work.write("version.txt", format!("v{}\n", i));
            c.push(work.commit(&format!("commit {}", i)));
        }
        let bare = work.clone_bare_to(tmp.join("srv/r.git"));
        Fixture {
            tmp,
            work,
            bare,
            c: [c[0].clone(), c[1].clone(), c[2].clone()],
        }
    }

    /// The served bare repository's directory.
    fn bare_path(&self) -> &Path {
        self.bare.path()
    }

    fn srv(&self) -> PathBuf {
        self.tmp.join("srv")
    }

    fn file_url(&self) -> String {
        format!("file://{}", self.bare_path().display())
    }

    fn workdir(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }

    /// Adds a commit on the work repository and publishes it.
    fn add_commit(&self, version: &str) -> String {
        self.work.write("version.txt", format!("{}\n", version));
        let sha = self.work.commit(version);
        self.work.push_to(&self.bare);
        sha
    }
}

/// The runner with the job context in the environment, no retries (tests
/// that expect failure stay fast), and a git time limit of 60 s.
fn runner(url: &str, sha: &str, workdir: &Path) -> Runner {
    Runner::for_job(Path::new(url), sha, workdir).env("SOLSTICE_GIT_TIMEOUT", "60")
}

#[track_caller]
fn assert_head(workdir: &Path, sha: &str) {
    let head = head_of(workdir);
    assert_eq!(
        head,
        sha,
        "HEAD in {} is not the requested commit",
        workdir.display()
    );
}

/// Number of commits reachable from HEAD (1 for a shallow fetch of one
/// commit).
fn depth(workdir: &Path) -> usize {
    git_in(workdir, &["rev-list", "--count", "HEAD"])
        .parse()
        .unwrap()
}

/// The common assertions of a successful run at the middle commit.
#[track_caller]
fn assert_ran_middle(out: &Output, fx: &Fixture, workdir: &Path) {
    out.assert_code(0);
    out.assert_stdout_contains("job: version v2\n");
    assert_head(workdir, &fx.c[1]);
    assert_eq!(
        fs::read_to_string(workdir.join("version.txt")).unwrap(),
        "v2\n"
    );
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

// ---------------------------------------------------------------------------
// Transports
// ---------------------------------------------------------------------------

#[test]
fn file_url_checks_out_requested_commit() {
    let fx = Fixture::new();
    let wd = fx.workdir("wd");
    let out = runner(&fx.file_url(), &fx.c[1], &wd).run(DEADLINE);
    assert_ran_middle(&out, &fx, &wd);
    assert_eq!(depth(&wd), 1, "expected a shallow fetch of the one commit");
}

#[test]
fn local_path_checks_out_requested_commit() {
    let fx = Fixture::new();
    let wd = fx.workdir("wd");
    let url = fx.bare_path().to_str().unwrap().to_string();
    let out = runner(&url, &fx.c[1], &wd).run(DEADLINE);
    assert_ran_middle(&out, &fx, &wd);
}

#[test]
fn git_daemon_checks_out_requested_commit() {
    let fx = Fixture::new();
    let daemon = GitDaemon::start(fx.srv());
    let wd = fx.workdir("wd");
    let out = runner(&daemon.url("r.git"), &fx.c[1], &wd).run(DEADLINE);
    assert_ran_middle(&out, &fx, &wd);
    assert_eq!(depth(&wd), 1, "expected a shallow fetch of the one commit");
}

#[test]
fn smart_http_protocol_v2_checks_out_requested_commit() {
    let fx = Fixture::new();
    let http = HttpServer::smart(fx.srv());
    let wd = fx.workdir("wd");
    let out = runner(&http.url("r.git"), &fx.c[1], &wd).run(DEADLINE);
    assert_ran_middle(&out, &fx, &wd);
    assert_eq!(depth(&wd), 1, "expected a shallow fetch of the one commit");
    let reqs = http.requests();
    assert!(
        reqs.iter()
            .any(|r| r.header("git-protocol") == Some("version=2")),
        "no protocol v2 request: {:?}",
        http.request_lines()
    );
    assert!(
        reqs.iter().any(|r| r.method == "POST"
            && r.target.ends_with("/git-upload-pack")
            && r.status == 200),
        "no smart fetch: {:?}",
        http.request_lines()
    );
}

#[test]
fn dumb_http_falls_back_to_full_fetch() {
    let fx = Fixture::new();
    let http = HttpServer::dumb(fx.srv());
    let wd = fx.workdir("wd");
    let out = runner(&http.url("r.git"), &fx.c[1], &wd).run(DEADLINE);
    assert_ran_middle(&out, &fx, &wd);
    assert!(
        http.requests().iter().all(|r| r.method == "GET"),
        "{:?}",
        http.request_lines()
    );
    assert!(http
        .request_lines()
        .iter()
        .any(|l| l.contains("/r.git/objects/")));
}

#[test]
fn protocol_v0_server_without_sha_wants_falls_back() {
    // Over protocol v0 a server refuses a `want` for a commit that is not
    // a ref tip (uploadpack.allowReachableSHA1InWant is off by default):
    // the runner must fall back to a full fetch. Forced by git's
    // environment config, which the runner's git inherits.
    let fx = Fixture::new();
    let daemon = GitDaemon::start(fx.srv());
    let http = HttpServer::smart(fx.srv());
    for (i, url) in [daemon.url("r.git"), http.url("r.git")].iter().enumerate() {
        let wd = fx.workdir(&format!("wd{}", i));
        let out = runner(url, &fx.c[1], &wd)
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "protocol.version")
            .env("GIT_CONFIG_VALUE_0", "0")
            .run(DEADLINE);
        assert_ran_middle(&out, &fx, &wd);
        // The full fetch brought history: the fallback path really ran.
        assert!(depth(&wd) > 1, "{}", out);
    }
    assert!(
        http.requests()
            .iter()
            .all(|r| r.header("git-protocol").is_none()),
        "the client was not on protocol v0: {:?}",
        http.request_lines()
    );
}

// ---------------------------------------------------------------------------
// Fetch failures
// ---------------------------------------------------------------------------

#[test]
fn unknown_commit_fails_252_naming_the_commit() {
    let fx = Fixture::new();
    let daemon = GitDaemon::start(fx.srv());
    let smart = HttpServer::smart(fx.srv());
    let dumb = HttpServer::dumb(fx.srv());
    let unknown = "0badc0de".repeat(5);
    for (i, url) in [
        fx.file_url(),
        daemon.url("r.git"),
        smart.url("r.git"),
        dumb.url("r.git"),
    ]
    .iter()
    .enumerate()
    {
        let wd = fx.workdir(&format!("wd{}", i));
        let out = runner(url, &unknown, &wd).run(DEADLINE);
        out.assert_code(252);
        assert!(
            out.stderr.contains(&unknown[..12]),
            "the message should name the commit ({}):\n{}",
            url,
            out
        );
        assert!(!out.stdout.contains("job: version"), "{}", out);
    }
}

#[test]
fn unreachable_server_fails_252() {
    let fx = Fixture::new();
    for (i, url) in [
        format!("git://127.0.0.1:{}/r.git", free_port()),
        format!("http://127.0.0.1:{}/r.git", free_port()),
    ]
    .iter()
    .enumerate()
    {
        let wd = fx.workdir(&format!("wd{}", i));
        let out = runner(url, &fx.c[1], &wd).run(DEADLINE);
        out.assert_code(252);
        assert!(!out.stdout.contains("job: version"), "{}", out);
    }
}

#[test]
fn unknown_repository_on_live_server_fails_252() {
    let fx = Fixture::new();
    let daemon = GitDaemon::start(fx.srv());
    let http = HttpServer::smart(fx.srv());
    for (i, url) in [daemon.url("nope.git"), http.url("nope.git")]
        .iter()
        .enumerate()
    {
        let wd = fx.workdir(&format!("wd{}", i));
        let out = runner(url, &fx.c[1], &wd).run(DEADLINE);
        out.assert_code(252);
    }
}

#[test]
fn hanging_server_hits_git_timeout_and_fails_252() {
    let fx = Fixture::new();
    let http = HttpConfig::new(HttpMode::Smart, fx.srv()).hold().start();
    let wd = fx.workdir("wd");
    let started = std::time::Instant::now();
    let out = runner(&http.url("r.git"), &fx.c[1], &wd)
        .env("SOLSTICE_GIT_TIMEOUT", "2")
        .run(DEADLINE);
    out.assert_code(252);
    assert!(lower(&out.stderr).contains("timed out"), "{}", out);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert!(http.waiting() > 0, "git never reached the server");
}

#[test]
fn retry_is_logged_for_unreachable_server() {
    let fx = Fixture::new();
    let url = format!("http://127.0.0.1:{}/r.git", free_port());
    let wd = fx.workdir("wd");
    let out = runner(&url, &fx.c[1], &wd)
        .env("SOLSTICE_GIT_RETRIES", "1")
        .run(DEADLINE);
    out.assert_code(252);
    assert!(
        lower(&out.stderr).contains("retry"),
        "a retry should be logged:\n{}",
        out
    );
}

#[test]
fn transient_server_error_is_retried_and_recovers() {
    let fx = Fixture::new();
    let http = HttpConfig::new(HttpMode::Smart, fx.srv())
        .fail_first(1)
        .start();
    let wd = fx.workdir("wd");
    let out = runner(&http.url("r.git"), &fx.c[1], &wd)
        .env("SOLSTICE_GIT_RETRIES", "2")
        .run(DEADLINE);
    assert_ran_middle(&out, &fx, &wd);
    assert!(http.requests().iter().any(|r| r.status == 503));
    assert!(lower(&out.stderr).contains("retry"), "{}", out);
}

// ---------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------

const USER: &str = "alice";
const PASSWORD: &str = "pw-Z7q9xK2m";

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    snapshot(dir)
        .into_iter()
        .filter_map(|(rel, e)| match e {
            common::git::Entry::File { contents, .. }
                if contents
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes()) =>
            {
                Some(rel)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn credentials_in_url_reach_server_as_header_and_leak_nowhere() {
    let fx = Fixture::with_job(
        r#"echo "job: version $(cat version.txt)"
echo "url=$SOLSTICE_REPO_URL""#,
    );
    let http = HttpServer::smart_with_auth(fx.srv(), USER, PASSWORD);
    let wd = fx.workdir("wd");
    let url = http.url_with_credentials(USER, PASSWORD, "r.git");
    let out = runner(&url, &fx.c[1], &wd).run(DEADLINE);
    assert_ran_middle(&out, &fx, &wd);

    let expected = format!(
        "Basic {}",
        base64(format!("{}:{}", USER, PASSWORD).as_bytes())
    );
    assert!(
        http.authorization_headers().contains(&expected),
        "credentials did not arrive as an Authorization header: {:?}",
        http.authorization_headers()
    );
    for line in http.request_lines() {
        assert!(
            !line.contains(PASSWORD),
            "password in request line {:?}",
            line
        );
    }
    assert!(
        !out.stdout.contains(PASSWORD),
        "password on stdout:\n{}",
        out
    );
    assert!(
        !out.stderr.contains(PASSWORD),
        "password on stderr:\n{}",
        out
    );
    // The job sees the URL without credentials.
    assert!(
        out.stdout.contains(&format!("url={}\n", http.url("r.git"))),
        "job's SOLSTICE_REPO_URL should be the URL without credentials:\n{}",
        out
    );
    let config = fs::read_to_string(wd.join(".git/config")).unwrap();
    assert!(
        !config.contains(PASSWORD),
        ".git/config holds the password:\n{}",
        config
    );
    let leaks = files_containing(&wd.join(".git"), PASSWORD);
    assert!(leaks.is_empty(), "password stored in {:?}", leaks);
}

#[test]
fn percent_encoded_credentials_are_decoded() {
    // Userinfo is percent-encoded in a URL: `p%40ss%3Aw%2Frd` is `p@ss:w/rd`.
    let fx = Fixture::new();
    let password = "p@ss:w/rd";
    let http = HttpServer::smart_with_auth(fx.srv(), USER, password);
    let wd = fx.workdir("wd");
    let url = http.url_with_credentials(USER, "p%40ss%3Aw%2Frd", "r.git");
    let out = runner(&url, &fx.c[1], &wd).run(DEADLINE);
    assert_ran_middle(&out, &fx, &wd);
    let expected = format!(
        "Basic {}",
        base64(format!("{}:{}", USER, password).as_bytes())
    );
    assert!(
        http.authorization_headers().contains(&expected),
        "{:?}",
        http.authorization_headers()
    );
    for secret in [password, "p%40ss%3Aw%2Frd"] {
        assert!(!out.all_output().contains(secret), "{}", out);
        let leaks = files_containing(&wd.join(".git"), secret);
        assert!(leaks.is_empty(), "password stored in {:?}", leaks);
    }
}

#[test]
fn job_environment_holds_no_credentials() {
    // The job writes its environment to a file outside the checkout (its
    // console output may be masked, which would hide a leak).
    let tmp = TempDir::new("checkout-env");
    let env_file = tmp.join("job-env.txt");
    let work = Repo::init(tmp.join("work"));
    work.write_job(&format!(
        "env > '{}'\ngit config --list --show-origin >> '{}' 2>&1\necho job done",
        env_file.display(),
        env_file.display()
    ));
    let sha = work.commit("env job");
    work.clone_bare_to(tmp.join("srv/r.git"));
    let http = HttpServer::smart_with_auth(tmp.join("srv"), USER, PASSWORD);
    let wd = tmp.join("wd");
    let out = runner(
        &http.url_with_credentials(USER, PASSWORD, "r.git"),
        &sha,
        &wd,
    )
    .run(DEADLINE);
    out.assert_code(0).assert_stdout_contains("job done");
    let env = fs::read_to_string(&env_file).unwrap();
    let encoded = base64(format!("{}:{}", USER, PASSWORD).as_bytes());
    assert!(
        !env.contains(PASSWORD),
        "password in the job's env:\n{}",
        env
    );
    assert!(
        !env.contains(&encoded),
        "encoded credentials in the job's env:\n{}",
        env
    );
    assert!(env.contains("CI=true"), "{}", env);
}

#[test]
fn credentials_never_appear_on_a_command_line() {
    // While git talks to a server that holds the request, no process on
    // the machine may show the password (or the encoded pair) in its
    // command line, which any user can read from /proc.
    let fx = Fixture::new();
    let http = HttpConfig::new(HttpMode::Smart, fx.srv())
        .basic_auth(USER, PASSWORD)
        .hold()
        .start();
    let wd = fx.workdir("wd");
    let url = http.url_with_credentials(USER, PASSWORD, "r.git");
    let running = runner(&url, &fx.c[1], &wd).spawn();
    wait_until(DEADLINE, "git to reach the held server", || {
        http.waiting() > 0
    });
    let encoded = base64(format!("{}:{}", USER, PASSWORD).as_bytes());
    let mut leaks = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(PASSWORD) || text.contains(&encoded) {
            leaks.push(text);
        }
    }
    http.release();
    let out = running.wait(DEADLINE);
    assert!(
        leaks.is_empty(),
        "credentials on a command line: {:?}",
        leaks
    );
    assert_ran_middle(&out, &fx, &wd);
}

#[test]
fn rerun_with_credentials_reuses_the_checkout() {
    let fx = Fixture::new();
    let http = HttpServer::smart_with_auth(fx.srv(), USER, PASSWORD);
    let wd = fx.workdir("wd");
    let url = http.url_with_credentials(USER, PASSWORD, "r.git");
    let out = runner(&url, &fx.c[1], &wd).run(DEADLINE);
    assert_ran_middle(&out, &fx, &wd);
    let out = runner(&url, &fx.c[2], &wd).run(DEADLINE);
    out.assert_code(0)
        .assert_stdout_contains("job: version v3\n");
    assert_head(&wd, &fx.c[2]);
    assert!(!out.all_output().contains(PASSWORD), "{}", out);
    let leaks = files_containing(&wd.join(".git"), PASSWORD);
    assert!(leaks.is_empty(), "password stored in {:?}", leaks);
}

#[test]
fn wrong_or_missing_credentials_fail_252_without_leaking() {
    let fx = Fixture::new();
    let http = HttpServer::smart_with_auth(fx.srv(), USER, PASSWORD);
    let wrong = "wrong-Pw-48151623";
    let cases = [
        http.url_with_credentials(USER, wrong, "r.git"),
        http.url("r.git"),
    ];
    for (i, url) in cases.iter().enumerate() {
        let wd = fx.workdir(&format!("wd{}", i));
        let out = runner(url, &fx.c[1], &wd).run(DEADLINE);
        out.assert_code(252);
        assert!(
            !out.all_output().contains(wrong),
            "password in output:\n{}",
            out
        );
    }
    assert!(http.requests().iter().any(|r| r.status == 401));
}

// ---------------------------------------------------------------------------
// The workdir
// ---------------------------------------------------------------------------

#[test]
fn missing_workdir_is_created_with_parents() {
    let fx = Fixture::new();
    let wd = fx.workdir("a/b/c/wd");
    assert!(!fx.workdir("a").exists());
    let out = runner(&fx.file_url(), &fx.c[1], &wd).run(DEADLINE);
    assert_ran_middle(&out, &fx, &wd);
}

#[test]
fn workdir_with_spaces_and_unicode() {
    let fx = Fixture::new();
    let wd = fx.workdir("my work dir/ünïcødé $HOME 'q'");
    let out = runner(&fx.file_url(), &fx.c[1], &wd).run(DEADLINE);
    assert_ran_middle(&out, &fx, &wd);
}

#[test]
fn relative_workdir_is_resolved_against_the_current_directory() {
    let fx = Fixture::with_job(r#"echo "ws=$SOLSTICE_WORKSPACE""#);
    let out = runner(&fx.file_url(), &fx.c[1], Path::new("rel/wd"))
        .current_dir(fx.tmp.path())
        .run(DEADLINE);
    out.assert_code(0);
    let wd = fx.workdir("rel/wd");
    assert_head(&wd, &fx.c[1]);
    let ws = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("ws="))
        .expect("job printed ws=");
    assert!(Path::new(ws).is_absolute(), "SOLSTICE_WORKSPACE={}", ws);
    assert_eq!(
        fs::canonicalize(ws).unwrap(),
        fs::canonicalize(&wd).unwrap()
    );
}

#[test]
fn empty_workdir_is_used() {
    let fx = Fixture::new();
    let wd = fx.workdir("wd");
    fs::create_dir(&wd).unwrap();
    let out = runner(&fx.file_url(), &fx.c[1], &wd).run(DEADLINE);
    assert_ran_middle(&out, &fx, &wd);
}

#[test]
fn non_empty_foreign_workdir_is_refused_and_untouched() {
    let fx = Fixture::new();
    let wd = fx.workdir("wd");
    fs::create_dir_all(wd.join("sub/deeper")).unwrap();
    fs::write(wd.join("notes.txt"), "mine\n").unwrap();
    fs::write(wd.join(".hidden"), "").unwrap();
    fs::write(wd.join("sub/deeper/data.bin"), [0u8, 1, 2, 255]).unwrap();
    let before = snapshot(&wd);
    let out = runner(&fx.file_url(), &fx.c[1], &wd).run(DEADLINE);
    out.assert_code(251);
    out.assert_stderr_contains("not empty");
    assert!(!out.stdout.contains("job: version"), "{}", out);
    assert_eq!(snapshot(&wd), before, "the foreign workdir was changed");

    // A single hidden file makes it non-empty too.
    let wd2 = fx.workdir("wd2");
    fs::create_dir(&wd2).unwrap();
    fs::write(wd2.join(".keep"), "").unwrap();
    let before = snapshot(&wd2);
    let out = runner(&fx.file_url(), &fx.c[1], &wd2).run(DEADLINE);
    out.assert_code(251);
    assert_eq!(snapshot(&wd2), before, "the foreign workdir was changed");
}

#[test]
fn checkout_of_another_repository_is_refused_and_untouched() {
    let fx = Fixture::new();
    let other = Repo::init(fx.workdir("other-work"));
    other.write_job("echo other");
    other.commit("other");
    let other_bare = other.clone_bare_to(fx.workdir("srv/other.git"));
    let wd = fx.workdir("wd");
    // A real checkout, made by the runner itself, of a different repository.
    let other_url = format!("file://{}", other_bare.path().display());
    runner(&other_url, &other.head(), &wd)
        .run(DEADLINE)
        .assert_code(0)
        .assert_stdout_contains("other");
    let before = snapshot(&wd);
    let out = runner(&fx.file_url(), &fx.c[1], &wd).run(DEADLINE);
    out.assert_code(251);
    assert!(!out.stdout.contains("job: version"), "{}", out);
    assert_eq!(
        snapshot(&wd),
        before,
        "the other repository's checkout was changed"
    );
    assert_head(&wd, &other.head());
}

#[test]
fn rerun_in_same_workdir_fetches_new_commit() {
    let fx = Fixture::new();
    let daemon = GitDaemon::start(fx.srv());
    let url = daemon.url("r.git");
    let wd = fx.workdir("wd");

    let out = runner(&url, &fx.c[1], &wd).run(DEADLINE);
    assert_ran_middle(&out, &fx, &wd);

    // A commit pushed after the first run.
    let c4 = fx.add_commit("v4");
    let out = runner(&url, &c4, &wd).run(DEADLINE);
    out.assert_code(0)
        .assert_stdout_contains("job: version v4\n");
    assert_head(&wd, &c4);

    // And back to an older commit than the first run's.
    let out = runner(&url, &fx.c[0], &wd).run(DEADLINE);
    out.assert_code(0)
        .assert_stdout_contains("job: version v1\n");
    assert_head(&wd, &fx.c[0]);
}

#[test]
fn rerun_after_failed_fetch_works() {
    // A first run that failed (unknown commit) leaves whatever it left; a
    // run of the same repository into that workdir must still succeed.
    let fx = Fixture::new();
    let daemon = GitDaemon::start(fx.srv());
    let url = daemon.url("r.git");
    let wd = fx.workdir("wd");
    runner(&url, &"0badc0de".repeat(5), &wd)
        .run(DEADLINE)
        .assert_code(252);
    let out = runner(&url, &fx.c[1], &wd).run(DEADLINE);
    assert_ran_middle(&out, &fx, &wd);
}

#[test]
fn rerun_after_job_dirtied_the_checkout_runs_the_new_commit_tree() {
    // The first job modifies a tracked file and leaves build output; the
    // next run must still run the requested commit's own files.
    let fx = Fixture::with_job(
        r#"echo "job: version $(cat version.txt)"
mkdir -p build && echo out > build/out.txt
echo dirty > version.txt"#,
    );
    let url = fx.file_url();
    let wd = fx.workdir("wd");
    runner(&url, &fx.c[1], &wd)
        .run(DEADLINE)
        .assert_code(0)
        .assert_stdout_contains("job: version v2\n");
    let out = runner(&url, &fx.c[2], &wd).run(DEADLINE);
    out.assert_code(0)
        .assert_stdout_contains("job: version v3\n");
    assert_head(&wd, &fx.c[2]);
}

// ---------------------------------------------------------------------------
// Submodules
// ---------------------------------------------------------------------------

#[test]
fn submodules_are_initialised_at_the_pinned_commit() {
    let tmp = TempDir::new("checkout-sub");
    let sub = Repo::init(tmp.join("sub-work"));
    sub.write("s.txt", "sub one\n");
    let s1 = sub.commit("s1");
    sub.write("s.txt", "sub two\n");
    let s2 = sub.commit("s2");
    sub.clone_bare_to(tmp.join("srv/sub.git"));
    // git refuses file:// submodules by default: serve it over git daemon.
    let daemon = GitDaemon::start(tmp.join("srv"));

    let sup = Repo::init(tmp.join("super-work"));
    sup.write_job(r#"echo "job: sub says $(cat libs/sub/s.txt)""#);
    let _p1 = sup.commit("no submodule yet");
    sup.add_submodule("libs/sub", &daemon.url("sub.git"), &s1);
    let p2 = sup.commit("add submodule at s1");
    sup.git(&[
        "update-index",
        "--cacheinfo",
        &format!("160000,{},libs/sub", s2),
    ]);
    let _p3 = sup.commit("move submodule to s2");
    let sup_bare = sup.clone_bare_to(tmp.join("srv/super.git"));

    for (i, url) in [
        daemon.url("super.git"),
        format!("file://{}", sup_bare.path().display()),
    ]
    .iter()
    .enumerate()
    {
        let wd = tmp.join(format!("wd{}", i));
        let out = runner(url, &p2, &wd).run(DEADLINE);
        out.assert_code(0)
            .assert_stdout_contains("job: sub says sub one\n");
        assert_head(&wd, &p2);
        assert_eq!(head_of(&wd.join("libs/sub")), s1);
    }
}

#[test]
fn submodule_with_relative_url_is_initialised() {
    let tmp = TempDir::new("checkout-sub");
    let sub = Repo::init(tmp.join("sub-work"));
    sub.write("s.txt", "relative one\n");
    let s1 = sub.commit("s1");
    sub.write("s.txt", "relative two\n");
    sub.commit("s2");
    sub.clone_bare_to(tmp.join("srv/sub.git"));
    let daemon = GitDaemon::start(tmp.join("srv"));

    let sup = Repo::init(tmp.join("super-work"));
    sup.write_job(r#"echo "job: sub says $(cat deps/sub/s.txt)""#);
    sup.add_submodule("deps/sub", "../sub.git", &s1);
    let p1 = sup.commit("relative submodule");
    sup.write("later.txt", "later\n");
    sup.commit("later");
    sup.clone_bare_to(tmp.join("srv/super.git"));

    let wd = tmp.join("wd");
    let out = runner(&daemon.url("super.git"), &p1, &wd).run(DEADLINE);
    out.assert_code(0)
        .assert_stdout_contains("job: sub says relative one\n");
    assert_head(&wd, &p1);
    assert_eq!(head_of(&wd.join("deps/sub")), s1);
}

// ---------------------------------------------------------------------------
// The job
// ---------------------------------------------------------------------------

#[test]
fn job_gets_its_environment_and_streams_verbatim() {
    let fx = Fixture::with_job(
        r#"echo "CI=$CI"
echo "SOLSTICE_WORKSPACE=$SOLSTICE_WORKSPACE"
echo "SOLSTICE_REPO_URL=$SOLSTICE_REPO_URL"
echo "SOLSTICE_COMMIT_SHA=$SOLSTICE_COMMIT_SHA"
echo "PWD=$(pwd -P)"
echo "version=$(cat version.txt)"
echo "to-stderr-from-job" >&2
printf '  spaced\ttabbed  \n\nno newline at end'"#,
    );
    let http = HttpServer::smart(fx.srv());
    let wd = fx.workdir("wd");
    let url = http.url("r.git");
    let out = runner(&url, &fx.c[1], &wd).run(DEADLINE);
    out.assert_code(0);
    assert_head(&wd, &fx.c[1]);

    let var = |name: &str| -> String {
        let prefix = format!("{}=", name);
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("job did not print {}:\n{}", name, out))
            .to_string()
    };
    let real_wd = fs::canonicalize(&wd).unwrap();
    assert_eq!(var("CI"), "true");
    assert_eq!(
        fs::canonicalize(var("SOLSTICE_WORKSPACE")).unwrap(),
        real_wd,
        "SOLSTICE_WORKSPACE"
    );
    assert_eq!(var("SOLSTICE_REPO_URL"), url);
    assert_eq!(var("SOLSTICE_COMMIT_SHA"), fx.c[1]);
    assert_eq!(PathBuf::from(var("PWD")), real_wd, "job cwd");

    // stdout is exactly the job's; the runner logs on stderr only.
    let expected = format!(
        "CI=true\nSOLSTICE_WORKSPACE={}\nSOLSTICE_REPO_URL={}\nSOLSTICE_COMMIT_SHA={}\nPWD={}\nversion=v2\n  spaced\ttabbed  \n\nno newline at end",
        var("SOLSTICE_WORKSPACE"),
        url,
        fx.c[1],
        real_wd.display()
    );
    assert_eq!(
        out.stdout, expected,
        "stdout is not the job's verbatim:\n{}",
        out
    );
    out.assert_stderr_contains("to-stderr-from-job");
}

#[test]
fn job_exit_code_passes_through() {
    let fx = Fixture::with_job("echo failing; exit 7");
    let wd = fx.workdir("wd");
    let out = runner(&fx.file_url(), &fx.c[1], &wd).run(DEADLINE);
    out.assert_code(7).assert_stdout_contains("failing");
}

#[test]
fn job_killed_by_signal_exits_128_plus_n() {
    let fx = Fixture::with_job("kill -TERM $$; sleep 5");
    let wd = fx.workdir("wd");
    let out = runner(&fx.file_url(), &fx.c[1], &wd).run(DEADLINE);
    out.assert_code(128 + 15);
}

#[test]
fn missing_job_script_is_bad_input() {
    let tmp = TempDir::new("checkout");
    let work = Repo::init(tmp.join("work"));
    work.write("README", "no job here\n");
    let sha = work.commit("no job");
    let bare = work.clone_bare_to(tmp.join("srv/r.git"));
    let wd = tmp.join("wd");
    let out = runner(&format!("file://{}", bare.path().display()), &sha, &wd).run(DEADLINE);
    out.assert_code(251);
    assert!(out.stderr.contains("job.sh"), "{}", out);
}

// ---------------------------------------------------------------------------
// Context sources that drive the checkout
// ---------------------------------------------------------------------------

#[test]
fn flags_drive_the_checkout_and_override_env() {
    let fx = Fixture::new();
    let wd = fx.workdir("wd");
    let bad_url = format!("http://127.0.0.1:{}/r.git", free_port());
    let out = runner(&bad_url, &fx.c[0], &fx.workdir("env-wd"))
        .arg("--repo-url")
        .arg(fx.file_url())
        .arg("--commit")
        .arg(&fx.c[1])
        .arg("--workdir")
        .arg(&wd)
        .run(DEADLINE);
    assert_ran_middle(&out, &fx, &wd);
    assert!(!fx.workdir("env-wd").exists());
}

#[test]
fn job_file_drives_the_checkout() {
    let fx = Fixture::new();
    let http = HttpServer::smart(fx.srv());
    let wd = fx.workdir("wd");
    let job_file = fx.workdir("job.yaml");
    fs::write(
        &job_file,
        format!(
            "repo_url: {}\ncommit_sha: {}\nworkdir: {}\n",
            http.url("r.git"),
            fx.c[1],
            wd.display()
        ),
    )
    .unwrap();
    let out = Runner::new()
        .env("SOLSTICE_JOB_FILE", &job_file)
        .env("SOLSTICE_GIT_RETRIES", "0")
        .run(DEADLINE);
    assert_ran_middle(&out, &fx, &wd);
}

#[test]
fn dry_run_fetches_nothing() {
    let fx = Fixture::new();
    let http = HttpServer::smart(fx.srv());
    let wd = fx.workdir("wd");
    let out = runner(&http.url("r.git"), &fx.c[1], &wd)
        .arg("--dry-run")
        .run(DEADLINE);
    out.assert_code(0);
    assert!(out.all_output().contains(&fx.c[1]), "{}", out);
    assert!(http.requests().is_empty(), "{:?}", http.request_lines());
    assert!(!wd.exists(), "dry run created the workdir");
    assert!(!out.stdout.contains("job: version"), "{}", out);
}

// ---------------------------------------------------------------------------
// Option injection
// ---------------------------------------------------------------------------

#[test]
fn option_injection_runs_nothing() {
    let fx = Fixture::new();
    let marker = fx.workdir("pwned");
    let m = marker.display().to_string();
    let bad_urls = [
        format!("--upload-pack=touch {}", m),
        format!("-oProxyCommand=touch {}", m),
        format!("ext::sh -c touch% {}", m),
        format!("-u touch {}", m),
    ];
    let bad_commits = [
        "--help".to_string(),
        format!("--upload-pack=touch {}", m),
        "-h".to_string(),
    ];
    let mut n = 0;
    let check = |r: Runner, what: &str| {
        let out = r.run(DEADLINE);
        assert_eq!(out.code, Some(251), "{}: expected 251:\n{}", what, out);
        assert!(!marker.exists(), "{} ran a command", what);
        assert!(!out.stdout.contains("job: version"), "{}: {}", what, out);
    };
    for url in &bad_urls {
        n += 1;
        let wd = fx.workdir(&format!("wd{}", n));
        check(runner(url, &fx.c[1], &wd), &format!("env url {:?}", url));
        n += 1;
        let wd = fx.workdir(&format!("wd{}", n));
        check(
            runner(&fx.file_url(), &fx.c[1], &wd)
                .arg("--repo-url")
                .arg(url),
            &format!("flag url {:?}", url),
        );
        n += 1;
        let wd = fx.workdir(&format!("wd{}", n));
        check(
            runner(&fx.file_url(), &fx.c[1], &wd).arg(format!("--repo-url={}", url)),
            &format!("flag= url {:?}", url),
        );
    }
    for commit in &bad_commits {
        n += 1;
        let wd = fx.workdir(&format!("wd{}", n));
        check(
            runner(&fx.file_url(), commit, &wd),
            &format!("env commit {:?}", commit),
        );
        n += 1;
        let wd = fx.workdir(&format!("wd{}", n));
        check(
            runner(&fx.file_url(), &fx.c[1], &wd)
                .arg("--commit")
                .arg(commit),
            &format!("flag commit {:?}", commit),
        );
    }
    // The same values from a job file.
    for (i, (url, commit)) in [
        (bad_urls[0].as_str(), fx.c[1].as_str()),
        (bad_urls[1].as_str(), fx.c[1].as_str()),
        (bad_urls[2].as_str(), fx.c[1].as_str()),
    ]
    .iter()
    .chain([(fx.file_url().as_str(), "--help")].iter())
    .enumerate()
    {
        let job_file = fx.workdir(&format!("job{}.yaml", i));
        let wd = fx.workdir(&format!("jf-wd{}", i));
        fs::write(
            &job_file,
            format!(
                "repo_url: \"{}\"\ncommit_sha: \"{}\"\nworkdir: {}\n",
                url,
                commit,
                wd.display()
            ),
        )
        .unwrap();
        check(
            Runner::new()
                .env("SOLSTICE_JOB_FILE", &job_file)
                .env("SOLSTICE_GIT_RETRIES", "0"),
            &format!("job file {:?} {:?}", url, commit),
        );
    }
    assert!(!marker.exists());
}
