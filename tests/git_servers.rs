//! Self-tests of the test infrastructure in `common::git` and
//! `common::runner`: plain `git` against the loopback servers.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::git::{
    base64, git_output_in, head_of, snapshot, GitDaemon, HttpConfig, HttpMode, HttpServer, Repo,
};
use common::runner::wait_until;
use common::tmp::{accepts_connections, free_port, TempDir};

/// A work repository with three commits and a bare copy under
/// `<tmp>/srv/r.git`. Returns (work, bare, [c1, c2, c3]).
fn three_commits(tmp: &TempDir) -> (Repo, Repo, [String; 3]) {
    let work = Repo::init(tmp.join("work"));
    let mut shas = Vec::new();
    for i in 1..=3 {
        work.write("version.txt", format!("v{}\n", i));
        shas.push(work.commit(&format!("commit {}", i)));
    }
    let bare = work.clone_bare_to(tmp.join("srv/r.git"));
    (
        work,
        bare,
        [shas[0].clone(), shas[1].clone(), shas[2].clone()],
    )
}

fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git_output_in(dir, args);
    assert!(
        out.status.success(),
        "git {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `git init` in `dir`, then a shallow fetch of exactly `sha` from `url`
/// and a detached checkout: what the runner does.
fn shallow_fetch_exact(dir: &Path, url: &str, sha: &str) -> std::process::Output {
    fs::create_dir_all(dir).unwrap();
    git_ok(dir, &["init", "-q"]);
    let out = git_output_in(
        dir,
        &[
            "-c",
            "protocol.version=2",
            "fetch",
            "-q",
            "--depth=1",
            url,
            sha,
        ],
    );
    if out.status.success() {
        git_ok(dir, &["checkout", "-q", "--detach", sha]);
    }
    out
}

#[test]
fn temp_dir_is_unique_and_removed_on_drop() {
    let a = TempDir::new("selftest");
    let b = TempDir::new("selftest");
    assert_ne!(a.path(), b.path());
    assert!(a.path().is_dir());
    fs::write(a.join("f"), "x").unwrap();
    let p = a.path().to_path_buf();
    drop(a);
    if std::env::var_os("KEEP_TEST_DIRS").is_none() {
        assert!(!p.exists());
    }
}

#[test]
fn repo_builder_commits_with_fixed_identity_and_job_script() {
    let tmp = TempDir::new("selftest");
    let repo = Repo::init(tmp.join("r"));
    repo.write_job("echo hi");
    let c1 = repo.commit("first");
    assert_eq!(c1.len(), 40);
    assert_eq!(
        repo.git(&["log", "-1", "--format=%an <%ae>"]),
        "Solstice Test <test@solstice.invalid>"
    );
    assert_eq!(repo.git(&["symbolic-ref", "HEAD"]), "refs/heads/main");
    // The job script is committed executable.
    let ls = repo.git(&["ls-files", "-s", ".solstice/job.sh"]);
    assert!(ls.starts_with("100755 "), "{}", ls);
    repo.write("a/b/c.txt", "deep");
    let c2 = repo.commit("second");
    assert_ne!(c1, c2);
    assert_eq!(repo.rev_parse("HEAD~1"), c1);

    let bare = Repo::init_bare(tmp.join("b.git"));
    assert!(bare.is_bare());
    repo.push_to(&bare);
    assert_eq!(bare.rev_parse("refs/heads/main"), c2);
    assert!(
        bare.path().join("info/refs").exists(),
        "update-server-info ran"
    );
}

#[test]
fn repo_builder_adds_submodule_entry() {
    let tmp = TempDir::new("selftest");
    let sub = Repo::init(tmp.join("sub"));
    sub.write("s.txt", "sub");
    let s1 = sub.commit("s1");
    let sup = Repo::init(tmp.join("super"));
    sup.write_job("true");
    sup.add_submodule("libs/sub", "git://127.0.0.1:9/sub.git", &s1);
    sup.commit("with submodule");
    let ls = sup.git(&["ls-tree", "HEAD", "libs/sub"]);
    assert!(ls.starts_with(&format!("160000 commit {}", s1)), "{}", ls);
    let url = sup.git(&["config", "-f", ".gitmodules", "submodule.libs/sub.url"]);
    assert_eq!(url, "git://127.0.0.1:9/sub.git");
}

#[test]
fn git_daemon_serves_clone_and_exact_shallow_fetch() {
    let tmp = TempDir::new("selftest");
    let (_work, _bare, [_c1, c2, c3]) = three_commits(&tmp);
    let daemon = GitDaemon::start(tmp.join("srv"));
    assert!(daemon.url("r.git").starts_with("git://127.0.0.1:"));

    let clone = tmp.join("clone");
    git_ok(
        tmp.path(),
        &["clone", "-q", &daemon.url("r.git"), clone.to_str().unwrap()],
    );
    assert_eq!(head_of(&clone), c3);

    let exact = tmp.join("exact");
    let out = shallow_fetch_exact(&exact, &daemon.url("r.git"), &c2);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(head_of(&exact), c2);
    assert_eq!(
        fs::read_to_string(exact.join("version.txt")).unwrap(),
        "v2\n"
    );

    // Unknown repository: an informative error, not a hang.
    let out = git_output_in(tmp.path(), &["ls-remote", &daemon.url("nope.git")]);
    assert!(!out.status.success());
}

#[test]
fn git_daemon_is_gone_after_drop() {
    let tmp = TempDir::new("selftest");
    fs::create_dir_all(tmp.join("srv")).unwrap();
    let daemon = GitDaemon::start(tmp.join("srv"));
    let port = daemon.port();
    assert!(accepts_connections(port));
    drop(daemon);
    wait_until(Duration::from_secs(5), "daemon port to close", || {
        !accepts_connections(port)
    });
}

#[test]
fn smart_http_serves_protocol_v2_and_exact_shallow_fetch() {
    let tmp = TempDir::new("selftest");
    let (_work, _bare, [_c1, c2, c3]) = three_commits(&tmp);
    let http = HttpServer::smart(tmp.join("srv"));

    let clone = tmp.join("clone");
    git_ok(
        tmp.path(),
        &[
            "-c",
            "protocol.version=2",
            "clone",
            "-q",
            &http.url("r.git"),
            clone.to_str().unwrap(),
        ],
    );
    assert_eq!(head_of(&clone), c3);
    let reqs = http.requests();
    assert!(
        reqs.iter()
            .any(|r| r.header("git-protocol") == Some("version=2")),
        "{:?}",
        http.request_lines()
    );
    assert!(
        reqs.iter().any(|r| r.method == "POST"
            && r.target.ends_with("/git-upload-pack")
            && r.status == 200),
        "{:?}",
        http.request_lines()
    );

    let exact = tmp.join("exact");
    let out = shallow_fetch_exact(&exact, &http.url("r.git"), &c2);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(head_of(&exact), c2);

    let out = git_output_in(tmp.path(), &["ls-remote", &http.url("nope.git")]);
    assert!(!out.status.success());
    assert!(http.requests().iter().any(|r| r.status == 404));
    assert!(http.errors().is_empty(), "{:?}", http.errors());
}

#[test]
fn smart_http_handles_gzip_requests_with_many_wants() {
    // A clone wanting many distinct tips makes git gzip its request body
    // (above 1 KiB); http-backend must get HTTP_CONTENT_ENCODING.
    let tmp = TempDir::new("selftest");
    let work = Repo::init(tmp.join("work"));
    work.write("f", "base");
    let base = work.commit("base");
    let tree = work.rev_parse("HEAD^{tree}");
    let mut script = String::from("set -e\n");
    for i in 0..80 {
        script.push_str(&format!(
            "c=$(git commit-tree -p {} -m 'b{}' {}); git update-ref refs/heads/b{} $c\n",
            base, i, tree, i
        ));
    }
    work.write("mk.sh", &script);
    work.git(&["-c", "alias.x=!sh mk.sh", "x"]);
    work.remove("mk.sh");
    work.clone_bare_to(tmp.join("srv/many.git"));
    let http = HttpServer::smart(tmp.join("srv"));
    let clone = tmp.join("clone");
    git_ok(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--mirror",
            &http.url("many.git"),
            clone.to_str().unwrap(),
        ],
    );
    let refs = git_ok(
        &clone,
        &["for-each-ref", "--format=%(refname)", "refs/heads/"],
    );
    assert_eq!(refs.lines().count(), 81);
    let gz = http
        .requests()
        .iter()
        .any(|r| r.method == "POST" && r.header("content-encoding") == Some("gzip"));
    assert!(
        gz,
        "expected a gzip request body: {:?}",
        http.request_lines()
    );
}

#[test]
fn smart_http_push_with_chunked_body_behind_auth() {
    // A push larger than http.postBuffer is sent with chunked encoding.
    let tmp = TempDir::new("selftest");
    let (work, _bare, _) = three_commits(&tmp);
    let http = HttpServer::smart_with_auth(tmp.join("srv"), "alice", "s3cret");
    let mut data = Vec::with_capacity(3 << 20);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    while data.len() < 3 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    work.write("big.bin", &data);
    let c4 = work.commit("big");
    let url = http.url_with_credentials("alice", "s3cret", "r.git");
    let out = work.git_output(&["push", "-q", &url, "main"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bare = Repo::open(tmp.join("srv/r.git"));
    assert_eq!(bare.rev_parse("refs/heads/main"), c4);
    let chunked = http.requests().iter().any(|r| {
        r.method == "POST"
            && r.header("transfer-encoding")
                .is_some_and(|v| v.contains("chunked"))
    });
    assert!(chunked, "{:?}", http.request_lines());
}

#[test]
fn dumb_http_serves_clone_but_not_exact_shallow_fetch() {
    let tmp = TempDir::new("selftest");
    let (_work, _bare, [_c1, c2, c3]) = three_commits(&tmp);
    let http = HttpServer::dumb(tmp.join("srv"));

    let clone = tmp.join("clone");
    git_ok(
        tmp.path(),
        &["clone", "-q", &http.url("r.git"), clone.to_str().unwrap()],
    );
    assert_eq!(head_of(&clone), c3);
    assert!(
        http.requests().iter().all(|r| r.method == "GET"),
        "{:?}",
        http.request_lines()
    );
    assert!(http
        .request_lines()
        .iter()
        .any(|l| l.contains("/r.git/info/refs")));

    let exact = tmp.join("exact");
    let out = shallow_fetch_exact(&exact, &http.url("r.git"), &c2);
    assert!(
        !out.status.success(),
        "dumb HTTP must not serve a shallow fetch"
    );
    // A full fetch then has the commit.
    git_ok(
        &exact,
        &[
            "fetch",
            "-q",
            &http.url("r.git"),
            "+refs/heads/*:refs/remotes/o/*",
        ],
    );
    git_ok(&exact, &["checkout", "-q", "--detach", &c2]);
    assert_eq!(head_of(&exact), c2);
}

#[test]
fn basic_auth_is_required_and_recorded() {
    let tmp = TempDir::new("selftest");
    let (_work, _bare, [_c1, _c2, c3]) = three_commits(&tmp);
    let http = HttpServer::smart_with_auth(tmp.join("srv"), "alice", "s3cret");

    let out = git_output_in(tmp.path(), &["ls-remote", &http.url("r.git")]);
    assert!(!out.status.success());
    assert!(http.requests().iter().any(|r| r.status == 401));
    assert!(http.authorization_headers().is_empty());

    let out = git_output_in(
        tmp.path(),
        &[
            "ls-remote",
            &http.url_with_credentials("alice", "wrong", "r.git"),
        ],
    );
    assert!(!out.status.success());

    let out = git_output_in(
        tmp.path(),
        &[
            "ls-remote",
            &http.url_with_credentials("alice", "s3cret", "r.git"),
            "main",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&c3));
    let expected = format!("Basic {}", base64(b"alice:s3cret"));
    assert!(
        http.authorization_headers().contains(&expected),
        "{:?}",
        http.authorization_headers()
    );
    assert!(http.request_lines().iter().all(|l| !l.contains("s3cret")));
}

#[test]
fn fail_first_answers_503_then_serves() {
    let tmp = TempDir::new("selftest");
    let (_work, _bare, [_c1, _c2, c3]) = three_commits(&tmp);
    let http = HttpConfig::new(HttpMode::Smart, tmp.join("srv"))
        .fail_first(1)
        .start();
    let out = git_output_in(tmp.path(), &["ls-remote", &http.url("r.git")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("503"));
    let out = git_output_in(tmp.path(), &["ls-remote", &http.url("r.git"), "main"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&c3));
}

#[test]
fn http_server_stops_on_drop() {
    let tmp = TempDir::new("selftest");
    let http = HttpServer::dumb(tmp.path());
    let port = http.port();
    assert!(accepts_connections(port));
    drop(http);
    wait_until(Duration::from_secs(5), "http port to close", || {
        !accepts_connections(port)
    });
}

#[test]
fn free_port_refuses_connections() {
    assert!(!accepts_connections(free_port()));
}

#[test]
fn base64_matches_rfc4648_vectors() {
    for (i, o) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(i.as_bytes()), o);
    }
}

#[test]
fn snapshot_sees_changes() {
    let tmp = TempDir::new("selftest");
    fs::write(tmp.join("a"), "1").unwrap();
    fs::create_dir(tmp.join("d")).unwrap();
    let before = snapshot(tmp.path());
    assert_eq!(before.len(), 2);
    fs::write(tmp.join("d/b"), "2").unwrap();
    assert_ne!(before, snapshot(tmp.path()));
}

#[test]
#[should_panic(expected = "waiting for: never")]
fn wait_until_panics_with_what_on_deadline() {
    wait_until(Duration::from_millis(50), "never", || false);
}

#[test]
fn held_requests_wait_until_released() {
    let tmp = TempDir::new("selftest");
    let (_work, _bare, [_c1, _c2, c3]) = three_commits(&tmp);
    let http = HttpConfig::new(HttpMode::Smart, tmp.join("srv"))
        .hold()
        .start();
    let url = http.url("r.git");
    let dir = tmp.path().to_path_buf();
    let t = std::thread::spawn(move || git_output_in(&dir, &["ls-remote", &url, "main"]));
    wait_until(Duration::from_secs(10), "a request at the gate", || {
        http.waiting() > 0
    });
    assert!(!t.is_finished());
    http.release();
    wait_until(Duration::from_secs(20), "ls-remote to finish", || {
        t.is_finished()
    });
    let out = t.join().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&c3));
}
