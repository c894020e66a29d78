//! The checkout builds need (issue 17): the `checkout` node of
//! `.solstice/workflow.kdl` asks for history, tags, submodules and LFS
//! objects beyond the one commit, and the runner fetches them after the
//! exact commit, from real servers on loopback; HEAD never moves.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::git::{head_of, GitDaemon, HttpServer, Repo};
use common::runner::{Output, Runner};
use common::tmp::TempDir;

const DEADLINE: Duration = Duration::from_secs(60);

/// A repository of `n` commits, tagged `v1` at the third and `v2` (an
/// annotated tag) at the sixth, whose job reports the history it sees;
/// `workflow` is its `.solstice/workflow.kdl` (in every commit).
fn history(tmp: &TempDir, n: usize, workflow: &str) -> (Repo, String) {
    let repo = Repo::init(tmp.join("work"));
    repo.write_job(
        r#"echo "commits=$(git rev-list --count HEAD)"
echo "describe=$(git describe --tags 2>/dev/null || echo none)"
echo "head=$(git rev-parse HEAD)""#,
    );
    if !workflow.is_empty() {
        repo.write(".solstice/workflow.kdl", workflow);
    }
    let mut sha = String::new();
    for i in 1..=n {
        repo.write("count.txt", format!("{i}\n"));
        sha = repo.commit(&format!("commit {i}"));
        if i == 3 {
            repo.git(&["tag", "v1"]);
        }
        if i == 6 {
            repo.git(&["tag", "-a", "v2", "-m", "two"]);
        }
    }
    (repo, sha)
}

fn run(url: &str, sha: &str, wd: &Path) -> Output {
    Runner::for_job(Path::new(url), sha, wd).run(DEADLINE)
}

fn said<'a>(out: &'a Output, key: &str) -> &'a str {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("the job did not print {key}:\n{out}"))
}

#[test]
fn by_default_the_commit_comes_alone_and_describe_finds_nothing() {
    let tmp = TempDir::new("plan");
    let (repo, sha) = history(&tmp, 8, "");
    repo.clone_bare_to(tmp.join("srv/r.git"));
    let daemon = GitDaemon::start(tmp.join("srv"));
    let out = run(&daemon.url("r.git"), &sha, &tmp.join("wd"));
    out.assert_code(0);
    assert_eq!(said(&out, "commits"), "1");
    assert_eq!(said(&out, "describe"), "none");
}

#[test]
fn all_history_and_tags_make_describe_work() {
    let tmp = TempDir::new("plan");
    let (repo, sha) = history(&tmp, 8, "checkout fetch-depth=0 tags=#true\n");
    repo.clone_bare_to(tmp.join("srv/r.git"));
    let daemon = GitDaemon::start(tmp.join("srv"));
    let wd = tmp.join("wd");
    let out = run(&daemon.url("r.git"), &sha, &wd);
    out.assert_code(0);
    assert_eq!(said(&out, "commits"), "8");
    assert!(said(&out, "describe").starts_with("v2-2-g"), "{out}");
    assert_eq!(said(&out, "head"), sha);
    assert_eq!(head_of(&wd), sha);
    out.assert_stderr_contains("checkout: all history, every tag");
}

#[test]
fn a_depth_of_five_gives_exactly_five_commits() {
    let tmp = TempDir::new("plan");
    let (repo, sha) = history(&tmp, 12, "checkout fetch-depth=5\n");
    repo.clone_bare_to(tmp.join("srv/r.git"));
    let daemon = GitDaemon::start(tmp.join("srv"));
    let out = run(&daemon.url("r.git"), &sha, &tmp.join("wd"));
    out.assert_code(0);
    assert_eq!(said(&out, "commits"), "5");
    assert_eq!(said(&out, "describe"), "none");
}

#[test]
fn tags_within_the_depth_are_found() {
    // v2 is at commit 6, three commits below HEAD (9): within a depth of 5.
    let tmp = TempDir::new("plan");
    let (repo, sha) = history(&tmp, 9, "checkout fetch-depth=5 tags=#true\n");
    repo.clone_bare_to(tmp.join("srv/r.git"));
    let daemon = GitDaemon::start(tmp.join("srv"));
    let out = run(&daemon.url("r.git"), &sha, &tmp.join("wd"));
    out.assert_code(0);
    assert!(said(&out, "describe").starts_with("v2-3-g"), "{out}");
    assert_eq!(said(&out, "head"), sha);
}

#[test]
fn over_dumb_http_the_whole_history_comes_anyway() {
    // A dumb HTTP server cannot serve one commit: the runner fetches every
    // branch and tag in full, so a depth is moot and tags are there.
    let tmp = TempDir::new("plan");
    let (repo, sha) = history(&tmp, 8, "checkout fetch-depth=2 tags=#true\n");
    repo.clone_bare_to(tmp.join("srv/r.git"));
    let http = HttpServer::dumb(tmp.join("srv"));
    let out = run(&http.url("r.git"), &sha, &tmp.join("wd"));
    out.assert_code(0);
    assert_eq!(said(&out, "commits"), "8");
    assert!(said(&out, "describe").starts_with("v2-2-g"), "{out}");
}

#[test]
fn a_job_sh_repository_asks_with_a_workflow_of_only_a_checkout_node() {
    let tmp = TempDir::new("plan");
    let (repo, sha) = history(
        &tmp,
        7,
        "// job.sh runs; this only shapes the checkout\ncheckout fetch-depth=4\n",
    );
    repo.clone_bare_to(tmp.join("srv/r.git"));
    let daemon = GitDaemon::start(tmp.join("srv"));
    let out = run(&daemon.url("r.git"), &sha, &tmp.join("wd"));
    out.assert_code(0);
    assert_eq!(said(&out, "commits"), "4");
    // check accepts such a file and shows the plan.
    let wf = tmp.join("work/.solstice/workflow.kdl");
    let check = Runner::new().arg("check").arg(&wf).run(DEADLINE);
    check
        .assert_code(0)
        .assert_stdout_contains("checkout: 4 commits of history");
}

#[test]
fn a_bad_checkout_node_is_bad_input_even_beside_a_job_sh() {
    let tmp = TempDir::new("plan");
    let (repo, sha) = history(&tmp, 2, "checkout fetch-depht=3 submodules=\"all\"\n");
    repo.clone_bare_to(tmp.join("srv/r.git"));
    let daemon = GitDaemon::start(tmp.join("srv"));
    let out = run(&daemon.url("r.git"), &sha, &tmp.join("wd"));
    out.assert_code(251);
    out.assert_stderr_contains("did you mean `fetch-depth`?");
    out.assert_stderr_contains("submodules must be #true, #false or \"recursive\"");
    assert!(!out.stdout.contains("commits="), "the job ran:\n{out}");
    let check = Runner::new()
        .arg("check")
        .arg(tmp.join("work/.solstice/workflow.kdl"))
        .run(DEADLINE);
    check.assert_code(251).assert_stderr_contains("fetch-depht");
}

/// A chain of three repositories (top -> mid -> leaf) served by git daemon;
/// returns the daemon and the top repository's commit.
fn nested(tmp: &TempDir, workflow: &str) -> (GitDaemon, String) {
    let leaf = Repo::init(tmp.join("leaf"));
    leaf.write("leaf.txt", "leaf\n");
    let l1 = leaf.commit("leaf");
    leaf.clone_bare_to(tmp.join("srv/leaf.git"));
    let daemon = GitDaemon::start(tmp.join("srv"));
    let mid = Repo::init(tmp.join("mid"));
    mid.write("mid.txt", "mid\n");
    mid.add_submodule("leaf", &daemon.url("leaf.git"), &l1);
    let m1 = mid.commit("mid");
    mid.clone_bare_to(tmp.join("srv/mid.git"));
    let top = Repo::init(tmp.join("top"));
    top.write_job(
        r#"echo "mid=$(cat mid/mid.txt 2>/dev/null || echo missing)"
echo "leaf=$(cat mid/leaf/leaf.txt 2>/dev/null || echo missing)""#,
    );
    if !workflow.is_empty() {
        top.write(".solstice/workflow.kdl", workflow);
    }
    top.add_submodule("mid", &daemon.url("mid.git"), &m1);
    let t1 = top.commit("top");
    top.clone_bare_to(tmp.join("srv/top.git"));
    (daemon, t1)
}

#[test]
fn submodules_are_one_level_by_default_and_recursive_on_request() {
    for (workflow, leaf) in [
        ("", "missing"),
        ("checkout submodules=#true\n", "missing"),
        ("checkout submodules=\"recursive\"\n", "leaf"),
        ("checkout submodules=#false\n", "missing"),
    ] {
        let tmp = TempDir::new("plan-sub");
        let (daemon, sha) = nested(&tmp, workflow);
        let out = run(&daemon.url("top.git"), &sha, &tmp.join("wd"));
        out.assert_code(0);
        let mid = if workflow.contains("#false") {
            "missing"
        } else {
            "mid"
        };
        assert_eq!(said(&out, "mid"), mid, "{workflow:?}\n{out}");
        assert_eq!(said(&out, "leaf"), leaf, "{workflow:?}\n{out}");
    }
}

fn git_lfs_installed() -> bool {
    let ok = std::process::Command::new("git")
        .args(["lfs", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("this test needs git-lfs (CI installs it)");
        }
        println!("SKIPPED: git-lfs is not installed");
    }
    ok
}

/// A repository whose `data.bin` is stored in LFS (served from the
/// repository itself, as git-lfs does for file:// remotes).
fn lfs_repo(tmp: &TempDir, workflow: &str) -> (String, String) {
    let repo = Repo::init(tmp.join("work"));
    repo.git(&["lfs", "install", "--local"]);
    repo.git(&["lfs", "track", "*.bin"]);
    repo.write("data.bin", vec![b'L'; 3000]);
    repo.write_job(
        r#"echo "size=$(wc -c < data.bin)"; echo "dirty=$(git status --porcelain | wc -l)""#,
    );
    repo.write(".solstice/workflow.kdl", workflow);
    let sha = repo.commit("lfs");
    (format!("file://{}", repo.path().display()), sha)
}

#[test]
fn lfs_objects_are_pulled_on_request() {
    if !git_lfs_installed() {
        return;
    }
    let tmp = TempDir::new("plan-lfs");
    let (url, sha) = lfs_repo(&tmp, "checkout lfs=#true\n");
    let out = run(&url, &sha, &tmp.join("wd"));
    out.assert_code(0);
    assert_eq!(said(&out, "size"), "3000", "{out}");
    assert_eq!(
        said(&out, "dirty"),
        "0",
        "the job sees a clean tree:\n{out}"
    );
    // Without the node, the file is the pointer.
    let tmp = TempDir::new("plan-lfs");
    let (url, sha) = lfs_repo(&tmp, "checkout lfs=#false\n");
    let out = run(&url, &sha, &tmp.join("wd"));
    out.assert_code(0);
    assert_ne!(said(&out, "size"), "3000");
}

#[test]
fn lfs_without_git_lfs_is_a_clear_error_and_nothing_runs() {
    if !git_lfs_installed() {
        return;
    }
    let tmp = TempDir::new("plan-lfs");
    let (url, sha) = lfs_repo(&tmp, "checkout lfs=#true\n");
    // A PATH with git and a shell but not git-lfs.
    let bin = tmp.join("bin");
    fs::create_dir_all(&bin).unwrap();
    for tool in ["git", "sh", "wc", "cat"] {
        let found = ["/usr/bin", "/bin", "/usr/local/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap();
        std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
    }
    // An image without git-lfs has no system-wide LFS filter either.
    let out = Runner::for_job(Path::new(&url), &sha, &tmp.join("wd"))
        .env("PATH", &bin)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .run(DEADLINE);
    out.assert_code(251);
    out.assert_stderr_contains("git-lfs is not installed");
    assert!(!out.stdout.contains("size="), "the job ran:\n{out}");
}
