//! Checkout: brings the workdir to the exact requested commit with the
//! system `git` (shallow fetch of the object id, full fetch where the server
//! cannot serve that), initialises submodules, and verifies HEAD.
//!
//! git never prompts, runs with a time limit, is retried on transient network
//! errors, and gets nothing from the job context it could take as an option:
//! the commit is validated hex, the URL cannot start with `-` and is stored as
//! a remote, and credentials travel in the environment, never in arguments.

use crate::config::url::strip_credentials;
use crate::config::{Config, Transport};
use crate::error::{Error, Result};
use crate::plan::workflow::{CheckoutPlan, Submodules};
use crate::run::process::{self, End, Limits};
use crate::sys;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Git<'a> {
    cfg: &'a Config,
    dir: &'a Path,
}

/// What a failed git command said, classified for retrying.
struct Failure {
    message: String,
    transient: bool,
}

impl Git<'_> {
    /// git with the space-separated words of `args`, then `last` if given
    /// (a value from outside, which may hold spaces).
    fn command(&self, args: &str, last: Option<&str>) -> Command {
        // GIT_DIR and GIT_WORK_TREE from the runner's environment would
        // point git elsewhere than the workdir.
        let mut cmd = process::command("git", &["GIT_DIR", "GIT_WORK_TREE"]);
        // A reused workdir may hold hooks or an fsmonitor command written by
        // an earlier job; the runner's own git must never run them.
        cmd.args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-C",
        ])
        .arg(self.dir)
        .args(args.split(' ').chain(last))
        .env("GIT_TERMINAL_PROMPT", "0")
        // Only transports that fetch; ext:: in a submodule URL would run commands.
        .env("GIT_ALLOW_PROTOCOL", "http:https:ssh:git:file");
        if std::env::var_os("GIT_SSH_COMMAND").is_none() && std::env::var_os("GIT_SSH").is_none() {
            cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        }
        let repo = &self.cfg.repo.value;
        let auth = match (&repo.transport, &repo.credentials) {
            (Transport::Http, Some((user, pass))) => Some(format!("{user}:{pass}")),
            (Transport::Http, None) => self
                .cfg
                .git_token
                .value
                .as_ref()
                .map(|token| format!("{}:{token}", self.cfg.git_user.value)),
            _ => None,
        };
        if let Some(auth) = auth {
            // Scoped to the repository's origin so submodules on other hosts
            // never receive these credentials; the environment keeps them off
            // command lines and out of .git/config.
            let header = format!(
                "Authorization: Basic {}",
                crate::logs::mask::base64(auth.as_bytes())
            );
            let n: u64 = std::env::var("GIT_CONFIG_COUNT")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            cmd.env("GIT_CONFIG_COUNT", (n + 1).to_string())
                .env(
                    format!("GIT_CONFIG_KEY_{n}"),
                    format!("http.{}.extraHeader", repo.origin),
                )
                .env(format!("GIT_CONFIG_VALUE_{n}"), header);
        }
        cmd
    }

    /// Runs git once; on failure returns its stderr, credentials removed.
    fn run_once(&self, args: &str, last: Option<&str>) -> std::result::Result<Vec<u8>, Failure> {
        let (space, value) = last.map_or(("", ""), |l| (" ", l));
        debug!("git {args}{space}{value}");
        let deadline = self
            .cfg
            .git_timeout
            .value
            .and_then(|t| Instant::now().checked_add(t));
        let limits = Limits::new(deadline, Duration::from_secs(5));
        let out =
            process::run_collected(self.command(args, last), limits).map_err(|e| Failure {
                message: format!("cannot run git: {e} (is git installed and on PATH?)"),
                transient: false,
            })?;
        let (message, transient) = match out.end {
            End::Exited(0) => return Ok(out.stdout),
            End::TimedOut => (
                format!(
                    "timed out after {} s (SOLSTICE_GIT_TIMEOUT)",
                    self.cfg.git_timeout.value.unwrap_or_default().as_secs()
                ),
                true,
            ),
            End::Cancelled(sig) => (format!("cancelled by signal {sig}"), false),
            end => {
                let text = strip_credentials(String::from_utf8_lossy(&out.stderr).trim());
                if text.is_empty() {
                    (format!("exited with {}", end.exit_code()), false)
                } else {
                    let transient = is_transient(&text);
                    (text, transient)
                }
            }
        };
        Err(Failure { message, transient })
    }

    /// Runs git, retrying transient failures with exponential backoff.
    fn run(
        &self,
        what: &str,
        args: &str,
        last: Option<&str>,
    ) -> std::result::Result<Vec<u8>, Failure> {
        let mut delay_ms = 1000;
        let mut attempt = 0;
        loop {
            match self.run_once(args, last) {
                Ok(out) => return Ok(out),
                Err(f)
                    if f.transient
                        && attempt < self.cfg.git_retries.value
                        && sys::cancelled().is_none() =>
                {
                    attempt += 1;
                    warn!(
                        "{what} failed ({}); retrying in {} ms (attempt {} of {})",
                        last_line(&f.message),
                        delay_ms,
                        attempt + 1,
                        self.cfg.git_retries.value + 1
                    );
                    std::thread::sleep(Duration::from_millis(delay_ms + jitter(delay_ms)));
                    delay_ms = (delay_ms * 2).min(30_000);
                }
                Err(f) => return Err(f),
            }
        }
    }

    /// Runs a step whose failure ends the checkout.
    fn must(&self, what: &str, args: &str, last: Option<&str>) -> Result<Vec<u8>> {
        match self.run(what, args, last) {
            Ok(out) => Ok(out),
            Err(f) => Err(Error::fetch(format!("{what} failed: {}", f.message))),
        }
    }

    fn fetch_error(&self, what: &str, f: Failure) -> Error {
        Error::fetch(format!(
            "{what} from {} failed: {}",
            self.cfg.repo.value.display, f.message
        ))
    }
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text)
}

/// Up to a quarter of `ms`, so many VMs retrying at once spread out.
fn jitter(ms: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let seed = (nanos ^ std::process::id().wrapping_mul(2654435761)) as u64;
    ms / 4 * (seed % 1000) / 1000
}

/// Errors worth another try: the network or the server, not the request.
/// (The lists are single strings, a pattern a line: a table of `&str` would
/// cost a relocation per entry.)
fn is_transient(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    const PERMANENT: &str = "not our ref
couldn't find remote ref
authentication failed
not found
returned error: 4
does not appear to be a git repository";
    const TRANSIENT: &str = "could not resolve host
connection refused
connection timed out
connection reset
timed out
early eof
hung up unexpectedly
rpc failed
unable to connect
unable to access
network is unreachable
temporary failure
transfer closed
returned error: 5
http 5
internal server error
bad gateway
service unavailable
gateway time";
    let says = |p: &str| s.as_bytes().windows(p.len()).any(|w| w == p.as_bytes());
    !PERMANENT.lines().any(says) && TRANSIENT.lines().any(says)
}

/// Brings `ctx.workdir` to `ctx.commit`.
pub fn checkout(cfg: &Config) -> Result<()> {
    let dir = cfg.workdir.value.as_path();
    let git = Git { cfg, dir };
    let reused = prepare_workdir(&git)?;
    let sha = cfg.commit.value.as_str();
    let shown = &cfg.repo.value.display;
    info!("fetching {shown} at {sha}");
    let started = Instant::now();

    let shallow = git.run(
        "shallow fetch",
        "fetch --quiet --no-tags --depth=1 origin --",
        Some(sha),
    );
    if let Err(f) = shallow {
        if f.transient || sys::cancelled().is_some() {
            return Err(git.fetch_error("fetching the commit", f));
        }
        info!(
            "the server cannot serve the commit alone ({}); fetching all branches and tags",
            last_line(&f.message)
        );
        // --unshallow only where an earlier shallow fetch left a shallow
        // repository: git refuses it on a complete one.
        let args = if dir.join(".git/shallow").exists() {
            "fetch --quiet --no-tags --unshallow origin -- +refs/heads/*:refs/remotes/origin/* +refs/tags/*:refs/tags/*"
        } else {
            "fetch --quiet --no-tags origin -- +refs/heads/*:refs/remotes/origin/* +refs/tags/*:refs/tags/*"
        };
        git.run("full fetch", args, None)
            .map_err(|f| git.fetch_error("fetching", f))?;
        let object = format!("{sha}^{{commit}}");
        if git.run_once("cat-file -e", Some(&object)).is_err() {
            return Err(Error::fetch(format!(
                "commit {sha} is not in {shown} (not on any branch or tag the server offers)"
            )));
        }
    }
    git.must("checkout", "checkout --quiet --force --detach", Some(sha))?;
    if reused {
        git.must("cleaning the workdir", "clean -ffdxq", None)?;
    }
    verify_head(&git, sha, "checkout")?;
    let plan = read_plan(dir)?;
    if plan != CheckoutPlan::DEFAULT {
        info!("{}", crate::plan::workflow::describe_checkout(&plan));
    }
    deepen(&git, &plan, sha)?;
    submodules(&git, plan.submodules)?;
    if plan.lfs {
        lfs(&git)?;
    }
    // Nothing above may move HEAD from the requested commit.
    verify_head(&git, sha, "the checkout")?;
    info!(
        "checked out {sha} in {} ms",
        process::millis(started.elapsed())
    );
    Ok(())
}

/// Fails unless HEAD is `sha` after `step`.
fn verify_head(git: &Git, sha: &str, step: &str) -> Result<()> {
    let head = git.must("reading HEAD", "rev-parse HEAD", None)?;
    let head = String::from_utf8_lossy(&head).trim().to_ascii_lowercase();
    if head != sha {
        return Err(Error::fetch(format!(
            "HEAD is {head} after {step}, not the requested {sha}"
        )));
    }
    Ok(())
}

/// The checkout the commit asks for in `.solstice/workflow.kdl`'s
/// `checkout` node (a `job.sh` repository may have one too); the default
/// without one.
fn read_plan(dir: &Path) -> Result<CheckoutPlan> {
    let path = dir.join(crate::plan::WORKFLOW);
    if !path.is_file() {
        return Ok(CheckoutPlan::DEFAULT);
    }
    Ok(crate::plan::workflow::checkout_plan(&path)?.unwrap_or(CheckoutPlan::DEFAULT))
}

/// Fetches the history and tags the plan asks for. Where the first fetch
/// had to take everything (a dumb HTTP server, an old one), the repository
/// is complete already, with every tag: nothing more is fetched.
fn deepen(git: &Git, plan: &CheckoutPlan, sha: &str) -> Result<()> {
    if !git.dir.join(".git/shallow").exists() {
        return Ok(());
    }
    let depth = match plan.fetch_depth {
        1 => None,
        0 => Some("--unshallow".to_string()),
        n => Some(format!("--depth={n}")),
    };
    if let Some(d) = &depth {
        let args = format!("fetch --quiet --no-tags {d} origin --");
        git.run("fetching history", &args, Some(sha))
            .map_err(|f| git.fetch_error("fetching history", f))?;
    }
    if plan.tags {
        // Tags come with as much history as the commit has, so `git
        // describe` finds any tag within it; without a limit, every tag.
        let limit = match plan.fetch_depth {
            0 => String::new(),
            n if git.dir.join(".git/shallow").exists() => format!(" --depth={n}"),
            _ => String::new(),
        };
        let args = format!("fetch --quiet --no-tags{limit} origin --");
        git.run("fetching tags", &args, Some("+refs/tags/*:refs/tags/*"))
            .map_err(|f| git.fetch_error("fetching tags", f))?;
    }
    Ok(())
}

/// Initialises submodules as the plan says, when `.gitmodules` exists:
/// shallow first, in full where the server cannot serve that.
fn submodules(git: &Git, which: Submodules) -> Result<()> {
    let args = match which {
        _ if !git.dir.join(".gitmodules").exists() => return Ok(()),
        Submodules::Off => return Ok(()),
        Submodules::One => "submodule update --init --force --depth=1",
        Submodules::Recursive => "submodule update --init --recursive --force --depth=1",
    };
    info!("initialising submodules");
    if let Err(f) = git.run("submodule update", args, None) {
        info!(
            "shallow submodule update failed ({}); fetching them in full",
            last_line(&f.message)
        );
        // The full update is the shallow one without its last word.
        let full = &args[..args.len() - " --depth=1".len()];
        git.must("submodule update", full, None)?;
    }
    Ok(())
}

/// `git lfs pull`, with the same credentials as every fetch. Without
/// git-lfs on the image that is bad input: the job asked for something this
/// VM cannot do, and it does not run.
fn lfs(git: &Git) -> Result<()> {
    if git.run_once("lfs version", None).is_err() {
        return Err(Error::input(
            "the checkout node asks for lfs=#true, but git-lfs is not installed on this image (`git lfs version` failed); install git-lfs in the base image, or drop lfs",
        ));
    }
    // git-lfs's filter, in the checkout's own config, so the job's git sees
    // the files as checked out rather than as changed pointers.
    for (key, value) in [
        ("filter.lfs.process", "git-lfs filter-process"),
        ("filter.lfs.required", "true"),
        ("filter.lfs.smudge", "git-lfs smudge -- %f"),
        ("filter.lfs.clean", "git-lfs clean -- %f"),
    ] {
        git.must(
            "configuring git-lfs",
            &format!("config --local {key}"),
            Some(value),
        )?;
    }
    info!("fetching LFS objects");
    git.must("git lfs pull", "lfs pull", None)?;
    // `git lfs pull` checks out what it fetched only where smudging is on.
    git.must("git lfs checkout", "lfs checkout", None)?;
    Ok(())
}

/// Creates the workdir or checks it is ours to reuse. Returns whether an
/// earlier checkout of the same repository is being reused.
fn prepare_workdir(git: &Git) -> Result<bool> {
    let dir = git.dir;
    let url = git.cfg.repo.value.fetch_url.as_str();
    let shown = dir.display();
    match std::fs::read_dir(dir).map(|mut d| d.next().is_none()) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::input(format!("cannot create workdir {shown}: {e}")))?;
        }
        Err(e) => return Err(Error::input(format!("workdir {shown} cannot be read: {e}"))),
        Ok(empty) => {
            if !empty {
                let origin = git.run_once("config --get remote.origin.url", None);
                let ours = dir.join(".git").is_dir()
                    && origin.is_ok_and(|o| o.trim_ascii() == url.as_bytes());
                if !ours {
                    return Err(Error::input(format!(
                        "workdir {shown} is not empty and is not a checkout of {}; it is left untouched (point SOLSTICE_WORKDIR at an empty or missing directory)",
                        git.cfg.repo.value.display
                    )));
                }
                info!("reusing the checkout in {shown}");
                scrub_config(git);
                return Ok(true);
            }
        }
    }
    let init = |args: &str, last: Option<&str>| {
        git.run_once(args, last)
            .map_err(|f| Error::internal(format!("preparing {shown} failed: {}", f.message)))
    };
    init("-c init.defaultBranch=solstice init --quiet", None)?;
    init("remote add origin --", Some(url))?;
    Ok(false)
}

/// Keys a checkout made by the runner has, a line each; anything else in a
/// reused `.git/config` was written by an earlier job.
const OWN_CONFIG: &str = "core.repositoryformatversion
core.filemode
core.bare
core.logallrefupdates
core.ignorecase
core.precomposeunicode
core.symlinks
remote.origin.url
remote.origin.fetch
extensions.objectformat";

/// Removes what an earlier job may have added to a reused checkout's
/// config: filters, `uploadpack`, `sshCommand`, includes and the like run
/// commands, with the runner's credentials in reach.
fn scrub_config(git: &Git) {
    let Ok(keys) = git.run_once("config --local --name-only --list", None) else {
        return;
    };
    for key in String::from_utf8_lossy(&keys).lines() {
        let lower = key.to_ascii_lowercase();
        if !OWN_CONFIG.lines().any(|own| own == lower) {
            debug!("removing {key} from the reused checkout's config");
            let _ = git.run_once("config --local --unset-all --", Some(key));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64() {
        use crate::logs::mask::base64;
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn transient() {
        assert!(super::is_transient(
            "fatal: unable to connect to 127.0.0.1:\nConnection refused"
        ));
        assert!(!super::is_transient("fatal: couldn't find remote ref abc"));
    }
}
