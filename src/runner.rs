//! The runner's phases, in order: command line, job context, secrets and log
//! pipeline, checkout, plan, execution, report. Each phase's failure becomes
//! an `Error` whose kind decides the exit code.

use crate::checkout::{self, GitOptions};
use crate::context::{self, Context, Flags};
use crate::error::{Error, Result};
use crate::exec::{self, End, Limits};
use crate::secrets::{self, Secrets};
use crate::spool::Spool;
use crate::upload::{self, Status, StepReport, Uploader};
use crate::{logger, output, plan};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const HELP: &str = "\
solstice-runner: fetch a repository at an exact commit and run its Solstice CI job

USAGE:
    solstice-runner [OPTIONS]            run the job
    solstice-runner check [FILE]         validate a workflow (default .solstice/workflow.kdl)

OPTIONS (each overrides its environment variable, which overrides the job file):
    --repo-url URL      repository to fetch            SOLSTICE_REPO_URL    repo_url
    --commit SHA        full commit id to check out    SOLSTICE_COMMIT_SHA  commit_sha
    --workdir DIR       where to check it out          SOLSTICE_WORKDIR     workdir (default /root/work)
    --job NAME          workflow job to run            SOLSTICE_JOB         job
    --job-file PATH     job file (default /etc/solstice/job.yaml; SOLSTICE_JOB_FILE)
    --dry-run           print the resolved context and plan; fetch and run nothing
    -h, --help          print this help
    -V, --version       print the version

EXIT CODES:
    the job's own code; 128+N if it died of signal N; 124 if a timeout killed it;
    250 internal error, 251 bad input, 252 fetch failed
";

enum Cmd {
    Run { flags: Flags, dry_run: bool },
    Check(Option<String>),
    Help,
    Version,
}

/// The command line, through lexopt (the design card's parser): `--flag
/// value`, `--flag=value`, `-h`/`-V`, and `--` ending the options.
fn parse_args() -> Result<Cmd> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut flags = Flags::default();
    let mut dry_run = false;
    let mut check: Option<Option<String>> = None;
    while let Some(arg) = parser.next().map_err(usage)? {
        let key = match arg {
            Short('h') | Long("help") => return Ok(Cmd::Help),
            Short('V') | Long("version") => return Ok(Cmd::Version),
            Long("dry-run") => {
                dry_run = true;
                continue;
            }
            Long("job-file") => None,
            Long(name) => match context::flag_index(name) {
                Some(i) => Some(i),
                None => return Err(usage(arg.unexpected())),
            },
            Value(v) => {
                let v = string(v)?;
                if check.is_none() && v == "check" {
                    check = Some(None);
                } else if check == Some(None) {
                    check = Some(Some(v));
                } else if v != "run" {
                    return Err(usage(Value(v.into()).unexpected()));
                }
                continue;
            }
            other => return Err(usage(other.unexpected())),
        };
        let value = string(parser.value().map_err(usage)?)?;
        match key {
            None => flags.job_file = Some(value),
            // A repeated setting flag: the first one counts.
            Some(i) => {
                flags.values[i].get_or_insert(value);
            }
        }
    }
    Ok(match check {
        Some(file) => Cmd::Check(file),
        None => Cmd::Run { flags, dry_run },
    })
}

#[inline(never)]
fn usage(e: lexopt::Error) -> Error {
    Error::input(format!("{e} (see --help)"))
}

fn string(v: OsString) -> Result<String> {
    v.into_string()
        .map_err(|v| Error::input(format!("argument {v:?} is not valid UTF-8")))
}

/// Runs the runner and returns its exit code.
pub fn main() -> i32 {
    logger::init();
    let cmd = match parse_args() {
        Ok(cmd) => cmd,
        Err(e) => return fail(e),
    };
    match cmd {
        Cmd::Help => {
            print!("{HELP}");
            0
        }
        Cmd::Version => {
            println!("solstice-runner {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Cmd::Check(file) => match crate::workflow::check(file.as_deref()) {
            Ok(()) => 0,
            Err(e) => fail(e),
        },
        Cmd::Run { flags, dry_run } => match run(&flags, dry_run) {
            Ok(code) => code,
            Err(e) => fail(e),
        },
    }
}

fn fail(e: Error) -> i32 {
    error!("{e}");
    e.exit_code()
}

fn run(flags: &Flags, dry_run: bool) -> Result<i32> {
    let ctx = context::resolve(flags)?;
    let secrets = secrets::load(&ctx)?;
    let job_timeout = match ctx.get("timeout") {
        Some(v) => Some(
            context::parse_duration(&v.text).map_err(|m| context::bad_value(v, "timeout", &m))?,
        ),
        None => None,
    };
    let grace = Duration::from_secs(context::env_number("SOLSTICE_CANCEL_GRACE", 10)?);
    let upload_deadline = Duration::from_secs(context::env_number("SOLSTICE_UPLOAD_DEADLINE", 30)?);
    let upload = upload_config(&ctx)?;
    let spool_path = match ctx.text("spool") {
        Some(p) => Some(PathBuf::from(p)),
        // The spool is what the uploader sends, so an orchestrator needs one.
        None if upload.is_some() => {
            let mut p = ctx.workdir.clone().into_os_string();
            p.push(".log.ndjson");
            Some(PathBuf::from(p))
        }
        None => None,
    };
    let masker = secrets::masker(&ctx, &secrets);
    if dry_run {
        output::init(masker, None);
        print!("{}", output::mask(&ctx.describe()));
        if let Some(p) = &spool_path {
            println!("spool            = {}", p.display());
        }
        println!(
            "plan: fetch {} at {} into {}, then run .solstice/job.sh, or the workflow in .solstice/workflow.kdl when there is no job.sh",
            ctx.repo.display,
            ctx.commit,
            ctx.workdir.display()
        );
        return Ok(0);
    }
    let spool = match &spool_path {
        Some(p) => Some(open_spool(p)?),
        None => None,
    };
    output::init(masker, spool);
    exec::install_signal_handlers()
        .map_err(|e| Error::internal(format!("cannot set up signal handling: {e}")))?;
    let uploader = match (upload, &spool_path) {
        (Some(cfg), Some(path)) => Some(Uploader::start(cfg, path.clone())),
        _ => None,
    };
    let (code, status) = match execute(&ctx, &secrets, job_timeout, grace) {
        Ok(status) => (status.exit_code.unwrap_or(0), status),
        Err(e) => {
            let code = fail(e);
            (
                code,
                Status {
                    state: "error",
                    exit_code: Some(code),
                    steps: Vec::new(),
                },
            )
        }
    };
    if let Some(u) = uploader {
        output::seal();
        if !u.finish(status, upload_deadline) {
            warn!(
                "the orchestrator did not acknowledge the whole log within {} s (SOLSTICE_UPLOAD_DEADLINE)",
                upload_deadline.as_secs()
            );
        }
    }
    Ok(code)
}

/// The orchestrator settings, checked before anything runs; `None` without
/// an orchestrator URL (console only).
fn upload_config(ctx: &Context) -> Result<Option<upload::Config>> {
    let Some(url) = ctx.get("orchestrator_url") else {
        return Ok(None);
    };
    let endpoint = upload::parse_url(&url.text)
        .map_err(|e| context::bad_value(url, "orchestrator_url", &e.msg))?;
    let job_id = ctx.text("job_id").ok_or_else(|| {
        Error::input(
            "an orchestrator_url needs a job_id: set SOLSTICE_JOB_ID or `job_id:` in the job file",
        )
    })?;
    // A token file written by a shell often ends in a newline.
    let token = ctx.text("token").unwrap_or("").trim().to_string();
    if token.is_empty() {
        warn!("no job token (SOLSTICE_JOB_TOKEN): the orchestrator will likely refuse the log");
    }
    Ok(Some(upload::Config {
        endpoint,
        job_id: job_id.to_string(),
        token,
    }))
}

fn open_spool(path: &Path) -> Result<Spool> {
    if let Some(dir) = path.parent() {
        let _ = crate::exec::create_dirs(dir, 0o777);
    }
    Spool::create(path).map_err(|e| {
        Error::internal(format!(
            "cannot create the log spool {}: {e}",
            path.display()
        ))
    })
}

/// The job phases after the context: checkout, plan, run. A `job_timeout`
/// of 0, or one too far away to represent, is no limit.
fn execute(
    ctx: &Context,
    secrets: &Secrets,
    job_timeout: Option<Duration>,
    grace: Duration,
) -> Result<Status> {
    let checked_out = checkout::checkout(ctx, &GitOptions::from_env()?);
    // A cancelled git fails like any other; the cancellation is what counts.
    if let Some(sig) = exec::cancelled() {
        warn!("cancelled by signal {sig} before the job started");
        return Ok(Status {
            state: "cancelled",
            exit_code: Some(128 + sig),
            steps: Vec::new(),
        });
    }
    checked_out?;
    // The job's time limit counts from here: fetching has SOLSTICE_GIT_TIMEOUT.
    let deadline = job_timeout
        .filter(|t| !t.is_zero())
        .and_then(|t| Instant::now().checked_add(t));
    let limits = Limits { deadline, grace };
    match plan::find(&ctx.workdir)? {
        plan::Plan::Script(script) => {
            let started = Instant::now();
            let end = run_script(ctx, secrets, &script, limits)?;
            let code = report(end);
            let state = state_of(end);
            let step = StepReport {
                name: plan::JOB_SCRIPT.to_string(),
                state: state.to_string(),
                exit_code: Some(code),
                duration_ms: exec::millis(started.elapsed()),
            };
            Ok(Status {
                state,
                exit_code: Some(code),
                steps: vec![step],
            })
        }
        plan::Plan::Workflow(path) => {
            let (code, results) = crate::workflow::run_file(ctx, secrets, &path, limits)?;
            let first_failure = results
                .iter()
                .find(|r| r.exit_code == Some(code) && r.state != "ok");
            let state = match (exec::cancelled(), first_failure) {
                (Some(_), _) => "cancelled",
                _ if code == 0 => "succeeded",
                (None, Some(r)) if r.state == "timed_out" => "timed_out",
                _ => "failed",
            };
            let mut steps = Vec::with_capacity(results.len());
            for r in &results {
                steps.push(StepReport {
                    name: output::mask(&r.name),
                    state: if r.state == "ok" {
                        "succeeded"
                    } else {
                        r.state
                    }
                    .to_string(),
                    exit_code: r.exit_code,
                    duration_ms: exec::millis(r.duration),
                });
            }
            Ok(Status {
                state,
                exit_code: Some(code),
                steps,
            })
        }
    }
}

/// The orchestrator's name for how a job ended.
pub fn state_of(end: End) -> &'static str {
    match end {
        End::Exited(0) => "succeeded",
        End::TimedOut => "timed_out",
        End::Cancelled(_) => "cancelled",
        _ => "failed",
    }
}

/// The environment every job process gets on top of the runner's own.
pub fn job_command(ctx: &Context, program: &Path) -> exec::Spec {
    let mut cmd = exec::Spec::new(program);
    cmd.cwd(&ctx.workdir)
        .env("CI", "true")
        .env("SOLSTICE_WORKSPACE", &ctx.workdir)
        .env("SOLSTICE_REPO_URL", ctx.repo.display.as_str())
        .env("SOLSTICE_COMMIT_SHA", ctx.commit.as_str());
    // The job must not be able to impersonate the runner or fetch privately.
    for secret in ["SOLSTICE_JOB_TOKEN", "SOLSTICE_GIT_TOKEN"] {
        cmd.env_remove(secret);
    }
    cmd
}

fn run_script(ctx: &Context, secrets: &Secrets, script: &Path, limits: Limits) -> Result<End> {
    use std::os::unix::fs::PermissionsExt;
    let executable = std::fs::metadata(script)
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    info!("running {}", plan::JOB_SCRIPT);
    let command = |direct: bool| {
        let mut cmd = job_command(ctx, if direct { script } else { Path::new("/bin/sh") });
        if !direct {
            cmd.arg(script);
        }
        // job.sh is trusted with every secret; workflow steps get only those they name.
        for (k, v) in &secrets.vars {
            cmd.env(k.as_str(), v.as_str());
        }
        cmd
    };
    match output::run_job(&command(executable), limits) {
        // An executable script without a shebang: the kernel refuses it, a shell does not.
        Err(e) if executable && e.raw_os_error() == Some(libc::ENOEXEC) => {
            output::run_job(&command(false), limits)
        }
        other => other,
    }
    .map_err(|e| {
        Error::input(format!(
            "cannot start {}: {e} (check its #! line)",
            plan::JOB_SCRIPT
        ))
    })
}

/// Logs how the job ended and returns the runner's exit code for it.
fn report(end: End) -> i32 {
    let code = end.exit_code();
    match end {
        End::Exited(0) => info!("job succeeded"),
        End::Exited(c) => error!("job failed with exit code {c}"),
        End::Signaled(sig) => error!("job died of signal {sig} (exit code {code})"),
        End::TimedOut => error!("job timed out and was killed (exit code {code})"),
        End::Cancelled(sig) => warn!("job cancelled by signal {sig} (exit code {code})"),
    }
    code
}
