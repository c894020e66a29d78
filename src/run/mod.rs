//! Running the plan: `.solstice/job.sh` as one step, or a workflow job's
//! steps in order with their conditions, environment layers, working
//! directories and time limits. Each step's output goes through the log
//! pipeline; the outcome is what the final report says.

pub mod process;
pub mod ps;

use crate::config::secrets::Secrets;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::logs;
use crate::plan::workflow::{Job, Step, When, Workflow};
use crate::report::{JobState, StepReport, StepState};
use process::{End, Limits};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How the job ended, for the exit code and the final status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub state: JobState,
    pub exit_code: i32,
    /// Why it did not succeed.
    pub reason: Option<String>,
    pub steps: Vec<StepReport>,
}

/// The command every job process starts from: the runner's environment
/// (without its credentials), plus what tells the job where it runs.
fn job_command(cfg: &Config, program: &Path) -> Command {
    let mut cmd = process::command(program);
    cmd.current_dir(&cfg.workdir.value)
        .env("CI", "true")
        .env("SOLSTICE_WORKSPACE", &cfg.workdir.value)
        .env("SOLSTICE_REPO_URL", &cfg.repo.value.display)
        .env("SOLSTICE_COMMIT_SHA", &cfg.commit.value);
    cmd
}

/// Runs `cmd` with its output through the log pipeline. Before a timeout or
/// a cancel stops it, the job's processes are logged, so a hung job can be
/// diagnosed from its log.
fn run_logged(cmd: Command, limits: Limits) -> io::Result<End> {
    let mut captures = [logs::Capture::stdout(), logs::Capture::stderr()];
    process::run(cmd, limits, &mut |event| match event {
        process::Output::Data(i, data) => {
            if let Some(c) = captures.get_mut(i) {
                c.feed(Some(data))
            }
        }
        process::Output::End(i) => {
            if let Some(c) = captures.get_mut(i) {
                c.feed(None)
            }
        }
        process::Output::Idle => captures.iter_mut().for_each(logs::Capture::idle),
        process::Output::Stopping(_, why) => {
            let what = match why {
                End::TimedOut => "timed out".to_string(),
                End::Cancelled(sig) => format!("cancelled ({})", process::signal_name(sig)),
                _ => "stopping".to_string(),
            };
            warn!("the job {what}; stopping it");
            for line in ps::listing() {
                warn!("{line}");
            }
        }
    })
}

/// Runs `.solstice/job.sh`: directly when it is executable (its `#!` picks
/// the interpreter), else with /bin/sh. It is trusted with every secret.
pub fn run_script(
    cfg: &Config,
    secrets: &Secrets,
    script: &Path,
    limits: Limits,
) -> Result<Outcome> {
    let name = crate::plan::JOB_SCRIPT;
    info!("running {name}");
    let started = Instant::now();
    let executable = process::is_executable(script);
    let command = |direct: bool| {
        let mut cmd = job_command(cfg, if direct { script } else { Path::new("/bin/sh") });
        if !direct {
            cmd.arg(script);
        }
        cmd.envs(secrets.vars.iter().map(|(k, v)| (k, v)));
        cmd
    };
    let end = match run_logged(command(executable), limits) {
        // An executable script without a shebang: the kernel refuses it, a shell does not.
        Err(e) if executable && e.raw_os_error() == Some(libc::ENOEXEC) => {
            run_logged(command(false), limits)
        }
        other => other,
    }
    .map_err(|e| Error::input(format!("cannot start {name}: {e} (check its #! line)")))?;
    let code = end.exit_code();
    let (state, reason) = match end {
        End::Exited(0) => {
            info!("job succeeded");
            (StepState::Succeeded, None)
        }
        End::Exited(c) => {
            error!("job failed with exit code {c}");
            (
                StepState::Failed,
                Some(format!("{name} failed with exit code {c}")),
            )
        }
        End::Signaled(sig) => {
            error!("job died of signal {sig} (exit code {code})");
            let sig = process::signal_name(sig);
            (StepState::Failed, Some(format!("{name} died of {sig}")))
        }
        End::TimedOut => {
            error!("job timed out and was killed (exit code {code})");
            (StepState::TimedOut, timeout_reason(cfg))
        }
        End::Cancelled(sig) => {
            warn!("job cancelled by signal {sig} (exit code {code})");
            (StepState::Cancelled, Some(process::signal_name(sig)))
        }
    };
    Ok(Outcome {
        state: job_state(state),
        exit_code: code,
        reason,
        steps: vec![StepReport {
            name: name.to_string(),
            state,
            exit_code: Some(code),
            duration_ms: process::millis(started.elapsed()),
        }],
    })
}

/// The job's state for a step's, when that step decides it.
fn job_state(step: StepState) -> JobState {
    match step {
        StepState::Succeeded | StepState::Skipped => JobState::Succeeded,
        StepState::Failed => JobState::Failed,
        StepState::TimedOut => JobState::TimedOut,
        StepState::Cancelled => JobState::Cancelled,
    }
}

fn timeout_reason(cfg: &Config) -> Option<String> {
    Some(match cfg.timeout.value {
        Some(t) => format!("job timeout after {}", crate::config::duration_words(t)),
        None => "timed out".to_string(),
    })
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `t + d`; a limit too far away to represent is no limit.
fn after(t: Instant, d: Option<Duration>) -> Option<Instant> {
    d.and_then(|d| t.checked_add(d))
}

/// Runs a workflow job's steps in order. `limits` carries the job's
/// deadline from the job context; the job's own `timeout` may be earlier.
pub fn run_workflow(
    cfg: &Config,
    secrets: &Secrets,
    wf: &Workflow,
    job: &Job,
    limits: Limits,
) -> Result<Outcome> {
    // The job's deadline, and the limit it comes from, for the report.
    let own = after(Instant::now(), job.timeout);
    let (deadline, job_limit) = match (own, limits.deadline) {
        (Some(o), Some(c)) if c <= o => (Some(c), cfg.timeout.value),
        (Some(o), _) => (Some(o), job.timeout),
        (None, c) => (c, cfg.timeout.value),
    };
    let scripts = PrivateDir::create("steps")?;
    let workspace = cfg
        .workdir
        .value
        .canonicalize()
        .map_err(|e| io_error("resolve the workspace", &cfg.workdir.value, e))?;
    let mut steps: Vec<StepReport> = Vec::new();
    // The first step that decided the job's result, and how.
    let mut failed: Option<(i32, StepState, String)> = None;
    // Once the job is out of time or cancelled, nothing more runs.
    let mut stopped = false;
    let total = job.steps.len();
    for (i, step) in job.steps.iter().enumerate() {
        if let (false, Some(sig)) = (stopped, crate::sys::cancelled()) {
            warn!("cancelled by signal {sig}; no further step runs");
            stopped = true;
            failed.get_or_insert((128 + sig, StepState::Cancelled, process::signal_name(sig)));
        }
        let run = !stopped
            && match step.when {
                When::Success => failed.is_none(),
                When::Failure => failed.is_some(),
                When::Always => true,
                // A cleanup step for a cancel; nothing runs after a cancel yet.
                When::Cancelled => false,
            };
        let skipped = if run { "" } else { ": skipped" };
        info!("==> [{}/{total}] {}{skipped}", i + 1, step.name);
        let mut report = StepReport {
            name: logs::mask(&step.name),
            state: StepState::Skipped,
            exit_code: None,
            duration_ms: 0,
        };
        if run {
            logs::set_step(Some(&step.name));
            let started = Instant::now();
            let step_limits = Limits {
                deadline: earliest(deadline, after(started, step.timeout)),
                grace: limits.grace,
            };
            let end = start_step(
                cfg,
                secrets,
                wf,
                job,
                step,
                &workspace,
                &scripts,
                i + 1,
                step_limits,
            );
            logs::set_step(None);
            report.duration_ms = process::millis(started.elapsed());
            // A step that cannot start (its workdir leaves the workspace, its
            // shell is missing) fails like any other, with the runner's code.
            let name = &step.name;
            let job_out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
            let (state, code, why) = match end {
                Ok(End::Exited(0)) => (StepState::Succeeded, 0, String::new()),
                Ok(end @ End::TimedOut) if job_out_of_time => {
                    let words = job_limit.map(crate::config::duration_words);
                    let why = format!("job timeout after {}", words.unwrap_or_default());
                    (StepState::TimedOut, end.exit_code(), why)
                }
                Ok(end @ End::TimedOut) => {
                    let words = crate::config::duration_words(step.timeout.unwrap_or_default());
                    let why = format!("step \"{name}\" timed out after {words}");
                    (StepState::TimedOut, end.exit_code(), why)
                }
                Ok(end @ End::Cancelled(sig)) => (
                    StepState::Cancelled,
                    end.exit_code(),
                    process::signal_name(sig),
                ),
                Ok(end) => {
                    let code = end.exit_code();
                    let why = format!("step \"{name}\" failed with exit code {code}");
                    (StepState::Failed, code, why)
                }
                Err(e) => {
                    error!("{e}");
                    let why = format!("step \"{name}\" could not start: {}", e.headline());
                    (StepState::Failed, e.exit_code(), why)
                }
            };
            report.state = state;
            report.exit_code = Some(code);
            if state == StepState::Cancelled || (state == StepState::TimedOut && job_out_of_time) {
                stopped = true;
            }
            if code != 0 {
                if step.continue_on_error && !stopped {
                    warn!("step \"{name}\" failed with {code}; continuing (continue-on-error)");
                } else {
                    let how = match state {
                        StepState::TimedOut => "timed out with exit code",
                        StepState::Cancelled => "was cancelled with exit code",
                        _ => "failed with exit code",
                    };
                    error!("step \"{name}\" {how} {code}");
                    failed.get_or_insert((code, state, why));
                }
            }
        }
        steps.push(report);
    }
    summary(&steps);
    let (exit_code, state, reason) = match failed {
        None => (0, JobState::Succeeded, None),
        Some((code, state, why)) => (code, job_state(state), Some(why)),
    };
    if exit_code == 0 {
        info!("job \"{}\" succeeded", job.name);
    } else {
        error!("job \"{}\" failed with exit code {exit_code}", job.name);
    }
    Ok(Outcome {
        state,
        exit_code,
        reason: reason.map(|r| logs::mask(&r)),
        steps,
    })
}

/// Writes a step's script and runs it with the step's shell, directory and
/// environment layers.
#[allow(clippy::too_many_arguments)]
fn start_step(
    cfg: &Config,
    secrets: &Secrets,
    wf: &Workflow,
    job: &Job,
    step: &Step,
    workspace: &Path,
    scripts: &PrivateDir,
    n: usize,
    limits: Limits,
) -> Result<End> {
    let dir = step_dir(workspace, step)?;
    let mut text = step.run.clone();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let script = scripts.write(&format!("step-{n}.sh"), text.as_bytes())?;
    let mut words = step.shell().split_whitespace();
    let program = words.next().unwrap_or("/bin/sh");
    let mut cmd = job_command(cfg, Path::new(program));
    cmd.args(words).arg(&script).current_dir(&dir);
    for env in [&wf.env, &job.env, &step.env] {
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
    }
    // Least privilege: a step sees only the secrets it or its job names.
    for name in job.secrets.iter().chain(&step.secrets) {
        if let Some(v) = secrets.get(name) {
            cmd.env(name, v);
        }
    }
    cmd.env("SOLSTICE_JOB", &job.name)
        .env("SOLSTICE_STEP", &step.name);
    run_logged(cmd, limits).map_err(|e| {
        Error::input(format!(
            "step \"{}\": cannot start shell \"{program}\" in {}: {e}",
            step.name,
            dir.display()
        ))
    })
}

/// Resolves a step's workdir and refuses one that leaves the workspace
/// through `..` or a symlink.
fn step_dir(workspace: &Path, step: &Step) -> Result<PathBuf> {
    let Some(rel) = step.workdir.as_deref() else {
        return Ok(workspace.to_path_buf());
    };
    let name = &step.name;
    let dir = workspace.join(rel).canonicalize().map_err(|e| {
        Error::input(format!(
            "step \"{name}\": workdir \"{rel}\" cannot be used: {e}"
        ))
    })?;
    if !dir.starts_with(workspace) || !dir.is_dir() {
        return Err(Error::input(format!(
            "step \"{name}\": workdir \"{rel}\" resolves to {}, which is not a directory inside the workspace",
            dir.display()
        )));
    }
    Ok(dir)
}

/// "cannot {what} {path}: {e}", an internal error: the runner's own files.
fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::internal(format!("cannot {what} {}: {e}", path.display()))
}

/// A directory of the runner's own for one job: step scripts, and the files
/// steps write to talk back. Outside the checkout, so the job's tree stays
/// exactly the commit; under TMPDIR with an unpredictable name, created
/// exclusively with mode 0700, so no other user can plant or read anything
/// in it; removed with everything in it at the end.
pub struct PrivateDir(PathBuf);

impl PrivateDir {
    pub fn create(what: &str) -> Result<PrivateDir> {
        use std::hash::{BuildHasher, Hasher};
        use std::os::unix::fs::DirBuilderExt;
        let tmp = std::env::temp_dir();
        let mut last = None;
        for _ in 0..16 {
            // std seeds each RandomState from the OS's random source.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            let dir = tmp.join(format!("solstice-{what}-{:016x}", h.finish()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(PrivateDir(dir)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(io_error("create a private directory in", &tmp, e)),
            }
        }
        let e = last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists));
        Err(io_error("create a private directory in", &tmp, e))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Creates the file `name` in the directory, which must not exist yet.
    pub fn write(&self, name: &str, contents: &[u8]) -> Result<PathBuf> {
        use std::io::Write;
        let path = self.0.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| f.write_all(contents))
            .map_err(|e| io_error("write", &path, e))?;
        Ok(path)
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            warn!("cannot remove {}: {e}", self.0.display());
        }
    }
}

/// The closing table: every step, its result and its duration.
fn summary(steps: &[StepReport]) {
    info!("summary:");
    for s in steps {
        let mut result = s.state.words().to_string();
        if let (StepState::Failed, Some(c)) = (s.state, s.exit_code) {
            result.push_str(&format!(" {c}"));
        }
        info!(
            "  {:<12} {:>6}.{}s  {}",
            result,
            s.duration_ms / 1000,
            s.duration_ms % 1000 / 100,
            s.name
        );
    }
}
