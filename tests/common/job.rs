//! The one job fixture: a real git repository with one commit holding a
//! `.solstice/job.sh` or `.solstice/workflow.kdl` (and whatever else a test
//! puts there), a scratch area outside the checkout for markers, pid files,
//! secrets files and spools, and a runner with that job's context and a
//! fresh workdir per run.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::delivery::reporting;
use super::git::Repo;
use super::orchestrator::Orchestrator;
use super::runner::{Output, Runner, DEFAULT_DEADLINE};
use super::tmp::TempDir;

pub const JOB_SCRIPT: &str = ".solstice/job.sh";
pub const WORKFLOW: &str = ".solstice/workflow.kdl";

pub struct Job {
    pub tmp: TempDir,
    pub repo: Repo,
    /// The commit the runner checks out (empty until the first commit).
    pub sha: String,
    runs: AtomicUsize,
}

impl Job {
    /// A repository with nothing committed yet, for a test whose files need
    /// the scratch area's paths ([`Job::q`], [`Job::wait_for_release`]):
    /// write them with `job.repo`, then [`Job::commit`].
    pub fn empty() -> Job {
        let tmp = TempDir::new("job");
        let repo = Repo::init(tmp.join("repo"));
        Job {
            tmp,
            repo,
            sha: String::new(),
            runs: AtomicUsize::new(0),
        }
    }

    /// Commits what is in the work tree; the runner checks out this commit.
    pub fn commit(&mut self, message: &str) -> &str {
        self.sha = self.repo.commit(message);
        &self.sha
    }

    /// A repository set up by `setup`, committed.
    pub fn with(setup: impl FnOnce(&Repo)) -> Job {
        let mut job = Job::empty();
        setup(&job.repo);
        job.commit("job");
        job
    }

    /// An executable `.solstice/job.sh`: `#!/bin/sh` and `body`.
    pub fn script(body: &str) -> Job {
        Job::with(|r| {
            r.write_job(body);
        })
    }

    /// An executable `.solstice/job.sh` of exactly these bytes (its own
    /// `#!` line, or none).
    pub fn raw_script(bytes: impl AsRef<[u8]>) -> Job {
        Job::with(|r| {
            r.write_executable(JOB_SCRIPT, bytes);
        })
    }

    /// A `.solstice/workflow.kdl` of this text. `SCRATCH` in it stands for
    /// the scratch directory's path.
    pub fn workflow(kdl: &str) -> Job {
        Job::workflow_with(kdl, |_| {})
    }

    /// The same, plus whatever `setup` adds to the repository.
    pub fn workflow_with(kdl: &str, setup: impl FnOnce(&Repo)) -> Job {
        let mut job = Job::empty();
        let kdl = kdl.replace("SCRATCH", &job.path().display().to_string());
        job.repo.write(WORKFLOW, kdl);
        setup(&job.repo);
        job.commit("workflow");
        job
    }

    /// A path in the scratch area, outside the checkout.
    pub fn file(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }

    /// The same, single-quoted for a shell.
    pub fn q(&self, name: &str) -> String {
        format!("'{}'", self.file(name).display())
    }

    /// The runner with this job's context and a new workdir.
    pub fn runner(&self) -> Runner {
        self.runner_in(&self.new_workdir())
    }

    /// The runner with this job's context and the given workdir.
    pub fn runner_in(&self, workdir: &Path) -> Runner {
        Runner::for_job(self.repo.path(), &self.sha, workdir)
    }

    /// Runs the runner (new workdir) to its end within
    /// [`DEFAULT_DEADLINE`].
    pub fn run(&self) -> Output {
        self.runner().run(DEFAULT_DEADLINE)
    }

    /// A workdir no run has used yet; it becomes [`Job::workdir`]. For a
    /// test that starts the runner without [`Job::runner`].
    pub fn new_workdir(&self) -> PathBuf {
        let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        self.workdir_n(n)
    }

    fn workdir_n(&self, n: usize) -> PathBuf {
        self.tmp.join(format!("wd{n}"))
    }

    /// The workdir of the latest run.
    pub fn workdir(&self) -> PathBuf {
        self.workdir_n(self.runs.load(Ordering::SeqCst).max(1))
    }

    /// The same with links resolved, as `pwd -P` prints it; it must exist.
    pub fn real_workdir(&self) -> PathBuf {
        fs::canonicalize(self.workdir()).unwrap()
    }

    /// Where a reporting run keeps its spool: `spool.ndjson` in the scratch
    /// area.
    pub fn spool(&self) -> PathBuf {
        self.file("spool.ndjson")
    }

    /// The runner (new workdir) reporting to `orch` as job `id` with
    /// `token`, its spool at [`Job::spool`].
    pub fn reporting(&self, orch: &Orchestrator, id: &str, token: &str) -> Runner {
        reporting(self.runner(), orch, id, token, &self.spool())
    }

    /// Writes a file in the scratch area with mode 0600; returns its path.
    pub fn private_file(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.file(name);
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// A shell fragment that waits, at most 30 s, for `release`.
    pub fn wait_for_release(&self) -> String {
        format!(
            "i=0; while [ ! -e {m} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
            m = self.q("release")
        )
    }

    pub fn release(&self) {
        fs::write(self.file("release"), b"").unwrap();
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
}

/// Releases a job when dropped, so a test that fails early leaves no job
/// waiting (the job's wait is bounded too). Nothing is killed by pid: a pid
/// file may name a process that ended long ago and whose pid is now someone
/// else's.
pub struct Release<'a>(pub &'a Job);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}
