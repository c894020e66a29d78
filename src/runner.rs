//! The conductor: runs the stages in the order the data flows (command line
//! and job context, secrets and the log pipeline, checkout, plan, running
//! it, the final report) and turns the result into the exit code. Each
//! stage's failure is an `Error` whose kind decides that code.

use crate::config::args::{self, Command, Flags, HELP};
use crate::config::secrets::{self, Secrets};
use crate::config::{self, Config};
use crate::error::{Error, Result};
use crate::files::archive::Destination;
use crate::logs::mask::Masker;
use crate::logs::spool::Spool;
use crate::logs::upload::{self, Uploader};
use crate::logs::{self, logger};
use crate::plan::{self, Plan};
use crate::report::{ArtifactReport, JobState, Status};
use crate::run::{self, process, Outcome};
use crate::{checkout, files, http, sys};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Runs the runner and returns its exit code.
pub fn main() -> i32 {
    sys::close_inherited_on_exec();
    let env = config::process_env;
    logger::init(config::log_level(&env).value);
    let (cmd, flags) = match args::parse() {
        Ok(parsed) => parsed,
        Err(e) => return fail(e),
    };
    let result = match cmd {
        Command::Help => {
            print_out(HELP);
            Ok(0)
        }
        Command::Version => {
            print_out(&format!("solstice-runner {}\n", env!("CARGO_PKG_VERSION")));
            Ok(0)
        }
        Command::Check(file) => check(file.as_deref(), &flags),
        Command::Run { dry_run } => run(&flags, dry_run),
    };
    let code = result.unwrap_or_else(fail);
    // Whatever is still on its way to the spool is written before the
    // process exits (after a job, `run` has sealed it already).
    logs::seal();
    code
}

fn fail(e: Error) -> i32 {
    error!("{e}");
    e.exit_code()
}

/// Writes to stdout. A closed stdout (`check | head`) ends the output
/// quietly: the rest is not wanted, and the runner must not die of it.
fn print_out(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// `solstice-runner check [FILE]`: validates a workflow and prints its plan.
/// Secret names are checked against the secrets file a run would read.
fn check(file: Option<&str>, flags: &Flags) -> Result<i32> {
    let path = Path::new(file.unwrap_or(plan::WORKFLOW));
    let secrets_file = config::secrets_file(flags, &config::process_env)?;
    let secrets = secrets::read(&secrets_file.value)?;
    let wf = plan::workflow::load(path, &secrets)?;
    if !secrets.found && wf.names_secrets() {
        warn!(
            "no secrets file at {}: secret names are not checked",
            secrets.path
        );
    }
    print_out(&plan::workflow::describe(&wf));
    Ok(0)
}

/// The masker for every secret the runner knows of.
fn masker(cfg: &Config, secrets: &Secrets) -> Masker {
    let mut m = Masker::new();
    let mut add = |what: &str, value: &str| {
        if let Err(reason) = m.add(value.as_bytes()) {
            warn!("{what} is not masked in the log: {reason}");
        }
    };
    if let Some((user, pass)) = &cfg.repo.value.credentials {
        add("the password in repo_url", pass);
        // Tokens often travel as the user (`https://TOKEN:x-oauth-basic@host`);
        // a short user name is no secret and needs no warning.
        if user.len() >= 4 {
            add("the user in repo_url", user);
        }
    }
    if let Some(token) = cfg.token.value.as_deref().filter(|t| !t.is_empty()) {
        add("the job token", token);
    }
    if let Some(token) = &cfg.git_token.value {
        add("SOLSTICE_GIT_TOKEN", token);
    }
    for (name, value) in &secrets.vars {
        add(&format!("secret {name}"), value);
    }
    m.build();
    m
}

fn run(flags: &Flags, dry_run: bool) -> Result<i32> {
    let cfg = config::resolve(flags, &config::process_env)?;
    let secrets = secrets::read(&cfg.secrets_file.value)?;
    let masker = masker(&cfg, &secrets);
    if dry_run {
        // Without a spool there is no thread to start, nothing to fail.
        let _ = logs::init(masker, None, None);
        print_out(&logs::mask(&cfg.describe()));
        print_out(&format!(
            "plan: fetch {} at {} into {} (the commit alone, submodules one level deep, unless a `checkout` node in .solstice/workflow.kdl at that commit asks for more: `solstice-runner check` shows it), then run .solstice/job.sh, or the workflow in .solstice/workflow.kdl when there is no job.sh\n",
            cfg.repo.value.display,
            cfg.commit.value,
            cfg.workdir.value.display()
        ));
        return Ok(0);
    }
    let spool = match &cfg.spool.value {
        Some(p) => Some(open_spool(p)?),
        None => None,
    };
    let limit = cfg
        .spool
        .value
        .as_deref()
        .and_then(|p| logs::limit::Limit::new(cfg.log_limit.value, p));
    logs::init(masker, spool, limit)
        .map_err(|e| Error::internal(format!("cannot start the log spool's thread: {e}")))?;
    sys::install_signal_handlers()
        .map_err(|e| Error::internal(format!("cannot set up signal handling: {e}")))?;
    let uploader = match (&cfg.orchestrator.value, &cfg.spool.value) {
        (Some(endpoint), Some(path)) => Some(Uploader::start(
            upload::Config {
                endpoint: endpoint.clone(),
                job_id: cfg.job_id.value.clone().unwrap_or_default(),
                token: cfg.token.value.clone().unwrap_or_default(),
                heartbeat: cfg.heartbeat.value,
            },
            path.clone(),
            Box::new(run::cancel_from_orchestrator),
        )),
        _ => None,
    };
    let status = match execute(&cfg, &secrets) {
        Ok((o, artifacts)) => Status {
            state: o.state,
            exit_code: Some(o.exit_code),
            reason: o.reason,
            step: None,
            steps: o.steps,
            annotations: Vec::new(),
            annotations_dropped: 0,
            artifacts,
        },
        Err(e) => {
            let code = e.exit_code();
            let reason = logs::mask(e.headline());
            error!("{e}");
            Status {
                state: JobState::Error,
                exit_code: Some(code),
                reason: Some(reason),
                step: None,
                steps: Vec::new(),
                annotations: Vec::new(),
                annotations_dropped: 0,
                artifacts: Vec::new(),
            }
        }
    };
    let mut status = status;
    (status.annotations, status.annotations_dropped) = logs::annotations();
    if status.annotations_dropped > 0 {
        warn!(
            "{} annotations were left out of the report (at most {} per level and step, {} per job)",
            status.annotations_dropped,
            logs::ANNOTATIONS_PER_LEVEL_AND_STEP,
            logs::ANNOTATIONS_PER_JOB
        );
    }
    let code = status.exit_code.unwrap_or(0);
    logs::seal();
    if let Some(u) = uploader {
        u.finish(status, cfg.upload_deadline.value);
    }
    Ok(code)
}

fn open_spool(path: &Path) -> Result<Spool> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    Spool::create(path).map_err(|e| {
        Error::internal(format!(
            "cannot create the log spool {}: {e}",
            path.display()
        ))
    })
}

/// The job's stages after the context: checkout, plan, caches restored,
/// run, caches saved, artifacts. Returns how the job ended and what became
/// of its artifacts.
fn execute(cfg: &Config, secrets: &Secrets) -> Result<(Outcome, Vec<ArtifactReport>)> {
    let checked_out = checkout::checkout(cfg);
    // A cancelled git fails like any other; the cancellation is what counts.
    if let Some(sig) = sys::cancelled() {
        warn!("cancelled by signal {sig} before the job started");
        return Ok((Outcome::cancelled_early(sig), Vec::new()));
    }
    checked_out?;
    // The job's time limit counts from here: fetching has SOLSTICE_GIT_TIMEOUT.
    let deadline = cfg
        .timeout
        .value
        .and_then(|t| Instant::now().checked_add(t));
    let limits = process::Limits::new(deadline, cfg.cancel_grace.value);
    let mut client = match (&cfg.orchestrator.value, &cfg.token.value) {
        (Some(ep), Some(token)) => http::Client::new(ep, token).ok(),
        _ => None,
    };
    let workspace = cfg.workdir.value.as_path();
    let (outcome, declared) = match plan::find(workspace)? {
        Plan::Script(script) => (run::run_script(cfg, secrets, &script, limits)?, Vec::new()),
        Plan::Workflow(path) => {
            let wf = plan::workflow::load(&path, secrets)?;
            if !secrets.found && wf.names_secrets() {
                warn!(
                    "the workflow names secrets but there is no secrets file at {}",
                    secrets.path
                );
            }
            let job = plan::workflow::select(&wf, cfg.job.value.as_deref())?;
            let n = job.steps.len();
            let runs_on = job
                .runs_on
                .as_deref()
                .map(|r| format!(", runs-on \"{r}\""))
                .unwrap_or_default();
            info!(
                "running job \"{}\" of {} ({n} step{}{runs_on})",
                job.name,
                plan::WORKFLOW,
                if n == 1 { "" } else { "s" }
            );
            let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
            let caches = &job.caches;
            let restored = restore_caches(cfg, client.as_mut(), caches, home.as_deref());
            let outcome = run::run_workflow(cfg, secrets, &wf, job, limits)?;
            if let (Some(c), JobState::Succeeded) = (client.as_mut(), outcome.state) {
                for (cache, r) in caches.iter().zip(&restored) {
                    if let Some(r) = r.as_ref().filter(|r| !r.hit) {
                        files::cache::save(
                            c,
                            cache,
                            &r.key,
                            workspace,
                            home.as_deref(),
                            cfg.artifact_limit.value,
                            cfg.upload_deadline.value,
                        );
                    }
                }
            }
            (outcome, job.artifacts.clone())
        }
    };
    let to = match client.as_mut() {
        Some(client) => Destination::Orchestrator {
            client,
            job_id: cfg.job_id.value.as_deref().unwrap_or_default(),
            deadline: cfg.upload_deadline.value,
        },
        None => {
            let mut dir = cfg.workdir.value.clone().into_os_string();
            dir.push(".artifacts");
            Destination::Local(dir.into())
        }
    };
    let reports = files::artifacts::collect(
        workspace,
        &declared,
        &outcome.listed_artifacts,
        outcome.state == JobState::Succeeded,
        cfg.artifact_limit.value,
        to,
    );
    Ok((outcome, reports))
}

/// Restores the job's caches before its first step; for each, its key and
/// whether it was a hit (`None`: it could not be keyed).
fn restore_caches(
    cfg: &Config,
    client: Option<&mut http::Client>,
    caches: &[plan::workflow::Cache],
    home: Option<&Path>,
) -> Vec<Option<files::cache::Restored>> {
    if caches.is_empty() {
        return Vec::new();
    }
    let Some(client) = client else {
        info!("the cache is off: there is no orchestrator to keep it (SOLSTICE_ORCHESTRATOR_URL)");
        return Vec::new();
    };
    let cap = cfg.artifact_limit.value.unwrap_or(u64::MAX);
    caches
        .iter()
        .map(|c| {
            files::cache::restore(
                client,
                c,
                &cfg.workdir.value,
                home,
                cap,
                cfg.upload_deadline.value,
            )
        })
        .collect()
}
