//! Running the plan: `.solstice/job.sh` as one step, or a workflow job's
//! steps in order with their conditions, environment layers, working
//! directories and time limits. Each step's output goes through the log
//! pipeline; the outcome is what the final report says.

pub mod interface;
pub mod process;
pub mod ps;
pub mod step;

use crate::config::secrets::Secrets;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::logs;
use crate::plan::workflow::{Job, Step, When, Workflow};
use crate::report::{JobState, StepReport, StepState};
use process::{End, Limits};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use step::{Ran, Session};

/// How the job ended, for the exit code and the final status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub state: JobState,
    pub exit_code: i32,
    /// Why it did not succeed.
    pub reason: Option<String>,
    pub steps: Vec<StepReport>,
    /// Globs steps listed in `SOLSTICE_ARTIFACTS`.
    pub listed_artifacts: Vec<String>,
}

impl Outcome {
    /// The job was cancelled before it started.
    pub fn cancelled_early(sig: i32) -> Outcome {
        Outcome {
            state: JobState::Cancelled,
            exit_code: 128 + sig,
            reason: Some(cancel_reason(sig)),
            steps: Vec::new(),
            listed_artifacts: Vec::new(),
        }
    }
}

/// Runs `.solstice/job.sh`: directly when it is executable (its `#!` picks
/// the interpreter), else with /bin/sh. It is trusted with every secret, and
/// is one step: it may write the talk-back files as any step.
pub fn run_script(
    cfg: &Config,
    secrets: &Secrets,
    script: &Path,
    limits: Limits,
) -> Result<Outcome> {
    let name = crate::plan::JOB_SCRIPT;
    info!("running {name}");
    let started = Instant::now();
    let mut session = Session::new(cfg)?;
    let executable = crate::files::is_executable(script);
    let mut attempt = |direct: bool| {
        let mut cmd = session.command(if direct { script } else { Path::new("/bin/sh") });
        if !direct {
            cmd.arg(script);
        }
        cmd.envs(secrets.vars.iter().map(|(k, v)| (k, v)));
        // The events of job.sh carry no step name (docs/protocol.md).
        session.run(name, None, cmd, &[], &[], &[], limits)
    };
    let ran = match attempt(executable) {
        // An executable script without a shebang: the kernel refuses it, a shell does not.
        Err(e) if executable && e.raw_os_error() == Some(libc::ENOEXEC) => attempt(false),
        other => other,
    }
    .map_err(|e| Error::input(format!("cannot start {name}: {e} (check its #! line)")))?;
    let Ran {
        end,
        outputs,
        refused,
    } = ran;
    let mut code = end.exit_code();
    let (state, reason) = match (end, refused) {
        (End::Exited(0), Some(why)) => {
            code = 1;
            error!("job failed: {why}");
            (StepState::Failed, Some(format!("{name}: {why}")))
        }
        (End::Exited(0), None) => {
            info!("job succeeded");
            (StepState::Succeeded, None)
        }
        (End::Exited(c), _) => {
            error!("job failed with exit code {c}");
            (
                StepState::Failed,
                Some(format!("{name} failed with exit code {c}")),
            )
        }
        (End::Signaled(sig), _) => {
            error!("job died of signal {sig} (exit code {code})");
            let sig = process::signal_name(sig);
            (StepState::Failed, Some(format!("{name} died of {sig}")))
        }
        (End::TimedOut, _) => {
            error!("job timed out and was killed (exit code {code})");
            (StepState::TimedOut, timeout_reason(cfg))
        }
        (End::Cancelled(sig), _) => {
            let why = cancel_reason(sig);
            warn!("job cancelled ({why}; exit code {code})");
            (StepState::Cancelled, Some(why))
        }
    };
    Ok(Outcome {
        state: job_state(state),
        exit_code: code,
        reason: reason.map(|r| logs::mask(&r)),
        steps: vec![StepReport {
            name: name.to_string(),
            state,
            exit_code: Some(code),
            duration_ms: process::millis(started.elapsed()),
            outputs,
        }],
        listed_artifacts: std::mem::take(&mut session.artifacts),
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

/// Why the job stopped before its end: the steps that still run are the
/// cleanup steps, within their own time budget.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancelled(i32),
    TimedOut,
}

impl Stop {
    /// Whether a step with this condition is a cleanup step for this stop:
    /// `always` for both, `cancelled` after a cancel, `failure` after a
    /// timeout.
    fn cleans_up(self, when: When) -> bool {
        matches!(
            (self, when),
            (_, When::Always)
                | (Stop::Cancelled(_), When::Cancelled)
                | (Stop::TimedOut, When::Failure)
        )
    }
}

/// The cleanup after a stop: its deadline, and how many stop requests had
/// arrived when it began (one more ends it at once).
struct Cleanup {
    deadline: Option<Instant>,
    stops_seen: u32,
    /// Why no further cleanup step runs, once one of them has said so.
    over: Option<&'static str>,
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
    let timeout_why = || {
        let words = job_limit.map(crate::config::duration_words);
        format!("job timeout after {}", words.unwrap_or_default())
    };
    let mut session = Session::new(cfg)?;
    let workspace = cfg.workdir.value.canonicalize().map_err(|e| {
        Error::internal(format!(
            "cannot resolve the workspace {}: {e}",
            cfg.workdir.value.display()
        ))
    })?;
    let mut steps: Vec<StepReport> = Vec::new();
    // The first step that decided the job's result, and how.
    let mut failed: Option<(i32, StepState, String)> = None;
    let mut stop: Option<Stop> = None;
    let mut cleanup: Option<Cleanup> = None;
    let total = job.steps.len();
    for (i, step) in job.steps.iter().enumerate() {
        if stop.is_none() {
            if let Some(sig) = crate::sys::cancelled() {
                warn!(
                    "the job was cancelled ({}); only cleanup steps run from here",
                    cancel_reason(sig)
                );
                stop = Some(Stop::Cancelled(sig));
                failed.get_or_insert((128 + sig, StepState::Cancelled, cancel_reason(sig)));
            } else if deadline.is_some_and(|d| Instant::now() >= d) {
                warn!("the job is out of time; only cleanup steps run from here");
                stop = Some(Stop::TimedOut);
                failed.get_or_insert((
                    crate::error::EXIT_TIMEOUT,
                    StepState::TimedOut,
                    timeout_why(),
                ));
            }
        }
        if let (Some(_), None) = (stop, &cleanup) {
            cleanup = Some(begin_cleanup(cfg));
        }
        let run = match (stop, &mut cleanup) {
            (None, _) => match step.when {
                When::Success => failed.is_none(),
                When::Failure => failed.is_some(),
                When::Always => true,
                When::Cancelled => false,
            },
            (Some(stop), Some(c)) => stop.cleans_up(step.when) && c.may_run(),
            (Some(_), None) => false,
        };
        let skipped = if run { "" } else { ": skipped" };
        info!("==> [{}/{total}] {}{skipped}", i + 1, step.name);
        let mut report = StepReport {
            name: logs::mask(&step.name),
            state: StepState::Skipped,
            exit_code: None,
            duration_ms: 0,
            outputs: Vec::new(),
        };
        if run {
            let started = Instant::now();
            let step_limits = match &cleanup {
                None => Limits::new(
                    earliest(deadline, after(started, step.timeout)),
                    limits.grace,
                ),
                Some(c) => Limits {
                    deadline: earliest(c.deadline, after(started, step.timeout)),
                    grace: limits.grace,
                    stops_seen: c.stops_seen,
                },
            };
            let ran = start_step(
                &mut session,
                secrets,
                wf,
                job,
                step,
                &workspace,
                step_limits,
            );
            report.duration_ms = process::millis(started.elapsed());
            // A talk-back file the runner cannot take fails a step that
            // otherwise succeeded.
            let (end, refused) = match ran {
                Ok(r) => {
                    report.outputs = r.outputs;
                    match (r.end, r.refused) {
                        (End::Exited(0), Some(why)) => (Ok(End::Exited(1)), Some(why)),
                        (end, _) => (Ok(end), None),
                    }
                }
                Err(e) => (Err(e), None),
            };
            // A step that cannot start (its workdir leaves the workspace, its
            // shell is missing) fails like any other, with the runner's code.
            let name = &step.name;
            let job_out_of_time =
                cleanup.is_none() && deadline.is_some_and(|d| Instant::now() >= d);
            let cancelled_by = match end {
                Ok(End::Cancelled(sig)) => Some(sig),
                _ => None,
            };
            let (state, code, why) = match end {
                Ok(End::Exited(0)) => (StepState::Succeeded, 0, String::new()),
                Ok(end @ End::TimedOut) if job_out_of_time => {
                    (StepState::TimedOut, end.exit_code(), timeout_why())
                }
                Ok(end @ End::TimedOut) => {
                    let words = crate::config::duration_words(step.timeout.unwrap_or_default());
                    let why = format!("step \"{name}\" timed out after {words}");
                    (StepState::TimedOut, end.exit_code(), why)
                }
                Ok(end @ End::Cancelled(sig)) => {
                    (StepState::Cancelled, end.exit_code(), cancel_reason(sig))
                }
                Ok(end) => {
                    let code = end.exit_code();
                    let why = match &refused {
                        Some(r) => format!("step \"{name}\": {r}"),
                        None => format!("step \"{name}\" failed with exit code {code}"),
                    };
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
            if let Some(c) = &mut cleanup {
                // A cleanup step's end never changes the job's result.
                c.after_step(state, code, name);
            } else if code != 0 {
                let stopped = match (cancelled_by, state) {
                    (Some(sig), _) => Some(Stop::Cancelled(sig)),
                    (None, StepState::TimedOut) if job_out_of_time => Some(Stop::TimedOut),
                    _ => None,
                };
                if step.continue_on_error && stopped.is_none() {
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
                if stopped.is_some() {
                    stop = stopped;
                    cleanup = Some(begin_cleanup(cfg));
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
        listed_artifacts: std::mem::take(&mut session.artifacts),
    })
}

/// Starts the cleanup budget (`SOLSTICE_CLEANUP_TIMEOUT`).
fn begin_cleanup(cfg: &Config) -> Cleanup {
    let budget = cfg.cleanup_timeout.value;
    let over = budget.is_zero().then_some("SOLSTICE_CLEANUP_TIMEOUT is 0");
    Cleanup {
        deadline: Instant::now().checked_add(budget),
        stops_seen: crate::sys::stop_count(),
        over,
    }
}

impl Cleanup {
    /// Whether another cleanup step may start; says once why not.
    fn may_run(&mut self) -> bool {
        if self.over.is_none() {
            if crate::sys::stop_count() > self.stops_seen {
                self.over = Some("a further stop request ended the cleanup");
            } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.over = Some("the cleanup time (SOLSTICE_CLEANUP_TIMEOUT) is used up");
            }
            if let Some(why) = self.over {
                warn!("no further cleanup step runs: {why}");
            }
        }
        self.over.is_none()
    }

    fn after_step(&mut self, state: StepState, code: i32, name: &str) {
        match state {
            StepState::Succeeded => {}
            StepState::Cancelled => {
                warn!("cleanup step \"{name}\" was stopped by a further stop request (exit code {code})")
            }
            StepState::TimedOut => warn!("cleanup step \"{name}\" timed out (exit code {code})"),
            _ => warn!("cleanup step \"{name}\" failed with exit code {code}"),
        }
    }
}

/// The orchestrator's words when it asked for the cancel.
static ORCHESTRATOR_REASON: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Cancels the job because the orchestrator asked (its answer carried
/// `cancel`), as SIGTERM would: the same stop, grace and cleanup, exit 143.
pub fn cancel_from_orchestrator(reason: &str) {
    if ORCHESTRATOR_REASON.set(reason.to_string()).is_ok() {
        warn!("{}", cancel_reason(libc::SIGTERM));
        crate::sys::request_cancel(libc::SIGTERM);
    }
}

/// Why the job was cancelled, for its log and its final status.
pub fn cancel_reason(sig: i32) -> String {
    match ORCHESTRATOR_REASON.get() {
        Some(r) if r.is_empty() => "cancelled by the orchestrator".into(),
        Some(r) => format!("cancelled by the orchestrator: {r}"),
        None => process::signal_name(sig),
    }
}

/// Writes a step's script and runs it with the step's shell, directory and
/// environment layers.
fn start_step(
    session: &mut Session,
    secrets: &Secrets,
    wf: &Workflow,
    job: &Job,
    step: &Step,
    workspace: &Path,
    limits: Limits,
) -> Result<Ran> {
    let dir = step_dir(workspace, step)?;
    let script = session.script(&step.run)?;
    let mut words = step.shell().split_whitespace();
    let program = words.next().unwrap_or("/bin/sh");
    let mut cmd = session.command(Path::new(program));
    cmd.args(words).arg(&script).current_dir(&dir);
    // Least privilege: a step sees only the secrets it or its job names.
    let mut fixed: Vec<(&str, &str)> = Vec::new();
    for name in job.secrets.iter().chain(&step.secrets) {
        if let Some(v) = secrets.get(name) {
            fixed.push((name, v));
        }
    }
    fixed.push(("SOLSTICE_JOB", &job.name));
    fixed.push(("SOLSTICE_STEP", &step.name));
    let name = step.name.as_str();
    session
        .run(
            name,
            Some(name),
            cmd,
            &[&wf.env, &job.env],
            &step.env,
            &fixed,
            limits,
        )
        .map_err(|e| {
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
