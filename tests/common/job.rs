//! The one job fixture: a real git repository with one commit holding a
//! `.solstice/job.sh` or `.solstice/workflow.kdl` (and whatever else a test
//! puts there), a scratch area outside the checkout for markers, pid files,
//! secrets files and spools, and a runner with that job's context and a
//! fresh workdir per run.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::git::Repo;
use super::runner::Runner;
use super::tmp::TempDir;

pub const JOB_SCRIPT: &str = ".solstice/job.sh";
pub const WORKFLOW: &str = ".solstice/workflow.kdl";

pub struct Job {
    pub tmp: TempDir,
    pub repo: Repo,
    pub sha: String,
    runs: AtomicUsize,
}

impl Job {
    /// A repository set up by `setup`, committed.
    pub fn with(setup: impl FnOnce(&Repo)) -> Job {
        let tmp = TempDir::new("job");
        let repo = Repo::init(tmp.join("repo"));
        setup(&repo);
        let sha = repo.commit("job");
        Job {
            tmp,
            repo,
            sha,
            runs: AtomicUsize::new(0),
        }
    }

    /// An executable `.solstice/job.sh`: `#!/bin/sh` and `body`.
    pub fn script(body: &str) -> Job {
        Job::with(|r| {
            r.write_job(body);
        })
    }

    /// A `.solstice/workflow.kdl` of this text. `SCRATCH` in it stands for
    /// the scratch directory's path.
    pub fn workflow(kdl: &str) -> Job {
        let tmp = TempDir::new("job");
        let kdl = kdl.replace("SCRATCH", &tmp.path().display().to_string());
        let repo = Repo::init(tmp.join("repo"));
        repo.write(WORKFLOW, kdl);
        let sha = repo.commit("workflow");
        Job {
            tmp,
            repo,
            sha,
            runs: AtomicUsize::new(0),
        }
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
        let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        Runner::for_job(self.repo.path(), &self.sha, &self.workdir_n(n))
    }

    fn workdir_n(&self, n: usize) -> PathBuf {
        self.tmp.join(format!("wd{n}"))
    }

    /// The workdir of the latest run.
    pub fn workdir(&self) -> PathBuf {
        self.workdir_n(self.runs.load(Ordering::SeqCst).max(1))
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
