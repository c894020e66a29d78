//! Workflows: turns a parsed `.solstice/workflow.kdl` into jobs and steps
//! (rejecting every unknown word, wrong type and missing piece with its
//! line:col), selects the job to run, and runs its steps in order with their
//! environment layers, working directories, conditions and timeouts.

use crate::context::{is_env_name, parse_duration, Context};
use crate::error::{Error, Result};
use crate::exec::{End, Limits};
use crate::kdl::{self, Entry, Node, Value};
use crate::secrets::Secrets;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Success,
    Failure,
    Always,
}

#[derive(Debug)]
pub struct Step {
    pub name: String,
    pub run: String,
    pub workdir: Option<String>,
    pub timeout: Option<Duration>,
    pub continue_on_error: bool,
    pub when: When,
    pub shell: String,
    pub env: Vec<(String, String)>,
    pub secrets: Vec<String>,
}

#[derive(Debug)]
pub struct Job {
    pub name: String,
    pub runs_on: Option<String>,
    pub timeout: Option<Duration>,
    pub env: Vec<(String, String)>,
    pub secrets: Vec<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Default)]
pub struct Workflow {
    pub env: Vec<(String, String)>,
    /// The secrets file's values, filled in just before running.
    pub secrets: Vec<(String, String)>,
    pub jobs: Vec<Job>,
}

pub const DEFAULT_SHELL: &str = "/bin/sh -e";

/// Collects every problem in a file instead of stopping at the first, so
/// `check` can list them all.
struct Checker<'a> {
    path: &'a str,
    errors: Vec<Error>,
    /// The secrets file, when there is one to check secret names against.
    secrets: Option<&'a Secrets>,
}

impl Checker<'_> {
    /// Records an error, keeping the list in file order (a sort would cost
    /// the binary 4 KB).
    fn err(&mut self, line: usize, col: usize, msg: String) {
        let at = self.errors.partition_point(|e| {
            e.loc
                .as_ref()
                .is_some_and(|l| (l.line, l.col) <= (line, col))
        });
        self.errors.insert(at, Error::at(self.path, line, col, msg));
    }

    /// Refuses a children block on a node that takes none.
    fn leaf(&mut self, node: &Node) {
        if let Some(c) = node.children.first() {
            self.err(
                c.line,
                c.col,
                format!("`{}` takes no children block", node.name),
            );
        }
    }

    fn string(&mut self, e: &Entry, what: &str) -> Option<String> {
        match &e.value {
            Value::String(s) => Some(s.clone()),
            other => {
                self.err(
                    e.line,
                    e.col,
                    format!("{what} must be a string, not a {}", other.type_name()),
                );
                None
            }
        }
    }

    fn duration(&mut self, e: &Entry, what: &str) -> Option<Duration> {
        let parsed = match &e.value {
            Value::String(s) => parse_duration(s),
            Value::Number(n) => match n.as_i64() {
                Some(secs) if secs >= 0 => Ok(Duration::from_secs(secs as u64)),
                _ => Err("a duration must be a whole, non-negative number of seconds".to_string()),
            },
            other => Err(format!(
                "must be a duration such as \"10m\", not a {}",
                other.type_name()
            )),
        };
        match parsed {
            Ok(d) if d.is_zero() => {
                self.err(e.line, e.col, format!("{what} must be more than zero"))
            }
            Ok(d) => return Some(d),
            Err(m) => self.err(e.line, e.col, format!("{what}: {m}")),
        }
        None
    }

    /// Refuses properties and arguments a node does not take.
    fn only(&mut self, node: &Node, props: &[&str], args: usize) {
        let mut seen_args = 0;
        for e in &node.entries {
            match &e.key {
                Some(k) if !props.contains(&k.as_str()) => {
                    let allowed = if props.is_empty() {
                        "none".to_string()
                    } else {
                        props.join(", ")
                    };
                    self.err(
                        e.line,
                        e.col,
                        format!(
                            "unknown property `{k}` on `{}` (allowed: {allowed})",
                            node.name
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    seen_args += 1;
                    if seen_args > args {
                        self.err(
                            e.line,
                            e.col,
                            format!("unexpected argument to `{}`", node.name),
                        );
                    }
                }
            }
        }
    }

    fn env(&mut self, node: &Node, out: &mut Vec<(String, String)>) {
        self.only(node, &[], 0);
        for var in &node.children {
            if !is_env_name(&var.name) {
                self.err(
                    var.line,
                    var.col,
                    format!("`{}` is not a valid environment variable name", var.name),
                );
            }
            self.only(var, &[], 1);
            self.leaf(var);
            match var.entries.iter().find(|e| e.key.is_none()) {
                Some(e) => {
                    if let Some(v) = self.string(e, &format!("the value of {}", var.name)) {
                        out.retain(|(k, _)| k != &var.name);
                        out.push((var.name.clone(), v));
                    }
                }
                None => self.err(
                    var.line,
                    var.col,
                    format!("`{}` needs a value: {} \"...\"", var.name, var.name),
                ),
            }
        }
    }

    fn secrets(&mut self, node: &Node, out: &mut Vec<String>) {
        self.only(node, &[], usize::MAX);
        if !node.children.is_empty() {
            self.err(
                node.line,
                node.col,
                "`secrets` takes names as arguments, not a block".into(),
            );
        }
        for e in node.entries.iter().filter(|e| e.key.is_none()) {
            if let Some(name) = self.string(e, "a secret name") {
                if !is_env_name(&name) {
                    self.err(
                        e.line,
                        e.col,
                        format!("{name:?} is not a valid environment variable name"),
                    );
                }
                if let Some(known) = self.secrets.filter(|s| s.found) {
                    if known.get(&name).is_none() {
                        self.err(
                            e.line,
                            e.col,
                            format!("no secret {name:?} in the secrets file {}", known.path),
                        );
                    }
                }
                out.push(name);
            }
        }
    }

    fn job(&mut self, node: &Node) -> Job {
        self.only(node, &["runs-on", "timeout"], 1);
        let name = match node.entries.iter().find(|e| e.key.is_none()) {
            Some(e) => {
                let name = self.string(e, "a job name").unwrap_or_default();
                if matches!(e.value, Value::String(_)) && name.trim().is_empty() {
                    self.err(e.line, e.col, "a job name cannot be empty".into());
                }
                name
            }
            None => {
                self.err(
                    node.line,
                    node.col,
                    "a job needs a name: job \"build\" { ... }".into(),
                );
                String::new()
            }
        };
        let mut job = Job {
            name,
            runs_on: None,
            timeout: None,
            env: Vec::new(),
            secrets: Vec::new(),
            steps: Vec::new(),
        };
        for e in &node.entries {
            match e.key.as_deref() {
                Some("runs-on") => job.runs_on = self.string(e, "runs-on"),
                Some("timeout") => job.timeout = self.duration(e, "timeout"),
                _ => {}
            }
        }
        for child in &node.children {
            match child.name.as_str() {
                "env" => self.env(child, &mut job.env),
                "secrets" => self.secrets(child, &mut job.secrets),
                "step" => {
                    let n = job.steps.len() + 1;
                    let step = self.step(child, n);
                    job.steps.push(step);
                }
                other => self.err(
                    child.line,
                    child.col,
                    format!("unknown node `{other}` in job (allowed: env, secrets, step)"),
                ),
            }
        }
        if job.steps.is_empty() {
            self.err(
                node.line,
                node.col,
                format!("job {:?} has no steps", job.name),
            );
        }
        job
    }

    fn step(&mut self, node: &Node, n: usize) -> Step {
        self.only(
            node,
            &[
                "run",
                "workdir",
                "timeout",
                "continue-on-error",
                "if",
                "shell",
            ],
            1,
        );
        let name = match node.entries.iter().find(|e| e.key.is_none()) {
            Some(e) => self.string(e, "a step name").unwrap_or_default(),
            None => format!("step {n}"),
        };
        let mut step = Step {
            name,
            run: String::new(),
            workdir: None,
            timeout: None,
            continue_on_error: false,
            when: When::Success,
            shell: DEFAULT_SHELL.to_string(),
            env: Vec::new(),
            secrets: Vec::new(),
        };
        let mut runs = 0;
        for e in &node.entries {
            match e.key.as_deref() {
                Some("run") => {
                    runs += 1;
                    step.run = self.string(e, "run").unwrap_or_default();
                }
                Some("workdir") => {
                    step.workdir = self.string(e, "workdir");
                    if let Some(w) = &step.workdir {
                        if Path::new(w).is_absolute() || escapes(w) {
                            self.err(e.line, e.col, format!("workdir {w:?} must be a relative path inside the workspace"));
                        }
                    }
                }
                Some("timeout") => step.timeout = self.duration(e, "timeout"),
                Some("continue-on-error") => match e.value {
                    Value::Bool(b) => step.continue_on_error = b,
                    ref other => self.err(
                        e.line,
                        e.col,
                        format!("continue-on-error must be #true or #false, not a {}", other.type_name()),
                    ),
                },
                Some("if") => match self.string(e, "if").as_deref() {
                    Some("success") => step.when = When::Success,
                    Some("failure") => step.when = When::Failure,
                    Some("always") => step.when = When::Always,
                    Some(other) => self.err(
                        e.line,
                        e.col,
                        format!("if={other:?} is not a condition: use \"success\", \"failure\" or \"always\""),
                    ),
                    None => {}
                },
                Some("shell") => {
                    if let Some(s) = self.string(e, "shell") {
                        if s.split_whitespace().next().is_none() {
                            self.err(e.line, e.col, "shell is empty".into());
                        }
                        step.shell = s;
                    }
                }
                _ => {}
            }
        }
        for child in &node.children {
            match child.name.as_str() {
                "env" => self.env(child, &mut step.env),
                "secrets" => self.secrets(child, &mut step.secrets),
                "run" => {
                    runs += 1;
                    self.only(child, &[], 1);
                    self.leaf(child);
                    match child.entries.iter().find(|e| e.key.is_none()) {
                        Some(e) => step.run = self.string(e, "run").unwrap_or_default(),
                        None => self.err(
                            child.line,
                            child.col,
                            "`run` needs the script as a string".into(),
                        ),
                    }
                }
                other => self.err(
                    child.line,
                    child.col,
                    format!("unknown node `{other}` in step (allowed: env, secrets, run)"),
                ),
            }
        }
        match runs {
            0 => self.err(
                node.line,
                node.col,
                format!("step {:?} has no `run`", step.name),
            ),
            1 => {}
            _ => self.err(
                node.line,
                node.col,
                format!("step {:?} has more than one `run`", step.name),
            ),
        }
        step
    }
}

/// Whether a relative path climbs above its start (`a/../..`), lexically.
fn escapes(path: &str) -> bool {
    let mut depth: i64 = 0;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => depth -= 1,
            _ => depth += 1,
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// Parses and validates a workflow file's text; every problem is returned,
/// in file order, each quoting its line.
/// Secret names are checked against `secrets` when its file was found.
pub fn parse(
    path: &str,
    src: &str,
    secrets: Option<&Secrets>,
) -> std::result::Result<Workflow, Vec<Error>> {
    let doc = kdl::parse(path, src).map_err(|e| vec![e])?;
    let mut c = Checker {
        path,
        errors: Vec::new(),
        secrets,
    };
    let mut wf = Workflow::default();
    let mut top_steps = Vec::new();
    for node in &doc.nodes {
        match node.name.as_str() {
            "env" => c.env(node, &mut wf.env),
            "job" => {
                let job = c.job(node);
                if !job.name.is_empty() && wf.jobs.iter().any(|j| j.name == job.name) {
                    let at = node.entries.iter().find(|e| e.key.is_none());
                    let (line, col) = at.map_or((node.line, node.col), |e| (e.line, e.col));
                    c.err(line, col, format!("duplicate job name {:?}", job.name));
                }
                wf.jobs.push(job);
            }
            "step" => top_steps.push(node),
            other => c.err(
                node.line,
                node.col,
                format!("unknown node `{other}` at the top level (allowed: env, job, step)"),
            ),
        }
    }
    if let (Some(at), Some(job)) = (top_steps.first(), wf.jobs.first()) {
        c.err(
            at.line,
            at.col,
            format!(
                "`step` at the top level next to jobs (like {:?}); put it inside a job",
                job.name
            ),
        );
    } else if !top_steps.is_empty() {
        let mut job = Job {
            name: "default".to_string(),
            runs_on: None,
            timeout: None,
            env: Vec::new(),
            secrets: Vec::new(),
            steps: Vec::new(),
        };
        for node in top_steps {
            let n = job.steps.len() + 1;
            let step = c.step(node, n);
            job.steps.push(step);
        }
        wf.jobs.push(job);
    }
    if wf.jobs.is_empty() && c.errors.is_empty() {
        c.err(
            1,
            1,
            "the workflow has no job: add job \"NAME\" { step { run \"...\" } }".into(),
        );
    }
    if c.errors.is_empty() {
        return Ok(wf);
    }
    // Quoted with KDL's own line breaks, so line N is the parser's line N.
    let src = lf_only(src);
    Err(c.errors.into_iter().map(|e| e.with_source(&src)).collect())
}

/// `src` as `Error::with_source` (which splits on LF) must see it: KDL's
/// other line breaks (CR, NEL, VT, FF, LS, PS) become LF, CRLF stays one
/// break, and a leading BOM, which the KDL parser skips, goes.
fn lf_only(src: &str) -> String {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\r' | '\u{85}' | '\u{b}' | '\u{c}' | '\u{2028}' | '\u{2029}' => out.push('\n'),
            c => out.push(c),
        }
    }
    out
}

fn read(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::input(format!("cannot read {}: {e}", path.display())))?;
    String::from_utf8(bytes).map_err(|e| {
        let ok = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let before = lf_only(std::str::from_utf8(ok).unwrap_or_default());
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        Error::at(&path.display().to_string(), line, col, "invalid UTF-8")
    })
}

/// Logs every error and folds them into one input error.
fn report_errors(path: &Path, errors: Vec<Error>) -> Error {
    let n = errors.len();
    for e in errors {
        log::error!("{e}");
    }
    Error::input(format!(
        "{}: {n} error{} in the workflow",
        path.display(),
        if n == 1 { "" } else { "s" }
    ))
}

/// `solstice-runner check [FILE]`: validate and print the plan.
pub fn check(file: Option<&str>) -> Result<()> {
    let path = PathBuf::from(file.unwrap_or(crate::plan::WORKFLOW));
    let src = read(&path)?;
    let secrets_path = std::env::var("SOLSTICE_SECRETS_FILE");
    let secrets = crate::secrets::read(
        secrets_path
            .as_deref()
            .unwrap_or(crate::secrets::DEFAULT_FILE),
    )?;
    if !secrets.found {
        log::warn!(
            "no secrets file at {}: secret names are not checked",
            secrets.path
        );
    }
    let wf = parse(&path.display().to_string(), &src, Some(&secrets))
        .map_err(|errors| report_errors(&path, errors))?;
    print!("{}", describe(&wf));
    Ok(())
}

/// The plan in words: jobs, steps and what each runs.
pub fn describe(wf: &Workflow) -> String {
    let mut out = String::new();
    for (k, v) in &wf.env {
        out.push_str(&format!("env {k}={v}\n"));
    }
    for job in &wf.jobs {
        out.push_str(&format!("job {:?}", job.name));
        if let Some(r) = &job.runs_on {
            out.push_str(&format!(" runs-on={r:?}"));
        }
        if let Some(t) = job.timeout {
            out.push_str(&format!(" timeout={}s", t.as_secs()));
        }
        out.push('\n');
        for (k, v) in &job.env {
            out.push_str(&format!("  env {k}={v}\n"));
        }
        if !job.secrets.is_empty() {
            out.push_str(&format!("  secrets {}\n", job.secrets.join(" ")));
        }
        for (i, s) in job.steps.iter().enumerate() {
            out.push_str(&format!("  [{}/{}] {:?}", i + 1, job.steps.len(), s.name));
            if s.when != When::Success {
                out.push_str(&format!(
                    " if={:?}",
                    format!("{:?}", s.when).to_ascii_lowercase()
                ));
            }
            if s.continue_on_error {
                out.push_str(" continue-on-error");
            }
            if let Some(t) = s.timeout {
                out.push_str(&format!(" timeout={}s", t.as_secs()));
            }
            if let Some(w) = &s.workdir {
                out.push_str(&format!(" workdir={w:?}"));
            }
            if s.shell != DEFAULT_SHELL {
                out.push_str(&format!(" shell={:?}", s.shell));
            }
            out.push('\n');
            for (k, v) in &s.env {
                out.push_str(&format!("      env {k}={v}\n"));
            }
            if !s.secrets.is_empty() {
                out.push_str(&format!("      secrets {}\n", s.secrets.join(" ")));
            }
            for line in s.run.lines() {
                out.push_str(&format!("      | {line}\n"));
            }
        }
    }
    out
}

/// Picks the job to run: the named one, or the only one.
pub fn select<'a>(wf: &'a Workflow, wanted: Option<&str>) -> Result<&'a Job> {
    let names = || {
        wf.jobs
            .iter()
            .map(|j| format!("{:?}", j.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (wanted, wf.jobs.as_slice()) {
        (Some(name), jobs) => jobs
            .iter()
            .find(|j| j.name == name)
            .ok_or_else(|| Error::input(format!("no job named {name:?} in the workflow; it has {}", names()))),
        (None, [only]) => Ok(only),
        (None, _) => Err(Error::input(format!(
            "the workflow has several jobs ({}); choose one with SOLSTICE_JOB, the job file key `job`, or --job",
            names()
        ))),
    }
}

/// How one step ended, for the summary and the orchestrator.
#[derive(Clone, Debug)]
pub struct StepResult {
    pub name: String,
    /// "ok", "failed", "skipped", "timed_out", "cancelled".
    pub state: &'static str,
    pub exit_code: Option<i32>,
    pub duration: Duration,
}

/// Runs the selected job of the workflow at `path`; returns the exit code
/// and every step's result.
pub fn run_file(
    ctx: &Context,
    secrets: &Secrets,
    path: &Path,
    limits: Limits,
) -> Result<(i32, Vec<StepResult>)> {
    let src = read(path)?;
    let shown = crate::plan::WORKFLOW;
    let mut wf = parse(shown, &src, Some(secrets))
        .map_err(|errors| report_errors(Path::new(shown), errors))?;
    if !secrets.found
        && wf
            .jobs
            .iter()
            .any(|j| !j.secrets.is_empty() || j.steps.iter().any(|s| !s.secrets.is_empty()))
    {
        log::warn!(
            "the workflow names secrets but there is no secrets file at {}",
            secrets.path
        );
    }
    wf.secrets = secrets.vars.clone();
    let job = select(&wf, ctx.text("job"))?;
    let runs_on = match &job.runs_on {
        Some(r) => format!(", runs-on {r:?}"),
        None => String::new(),
    };
    let n = job.steps.len();
    let s = if n == 1 { "" } else { "s" };
    log::info!(
        "running job {:?} of {shown} ({n} step{s}{runs_on})",
        job.name
    );
    let (code, results) = run_job(ctx, &wf, job, limits)?;
    summary(&results);
    if code == 0 {
        log::info!("job {:?} succeeded", job.name);
    } else {
        log::error!("job {:?} failed with exit code {code}", job.name);
    }
    Ok((code, results))
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

/// Runs a job's steps in order; returns the job's exit code and each step's result.
pub fn run_job(
    ctx: &Context,
    wf: &Workflow,
    job: &Job,
    limits: Limits,
) -> Result<(i32, Vec<StepResult>)> {
    let deadline = earliest(limits.deadline, after(Instant::now(), job.timeout));
    let scripts = ScriptDir::create()?;
    let workspace = ctx.workdir.canonicalize().map_err(|e| {
        Error::internal(format!(
            "cannot resolve the workspace {}: {e}",
            ctx.workdir.display()
        ))
    })?;
    let mut results: Vec<StepResult> = Vec::new();
    let mut failed_code: Option<i32> = None;
    // Once the job is out of time or cancelled, nothing more runs.
    let mut stopped = false;
    let total = job.steps.len();
    for (i, step) in job.steps.iter().enumerate() {
        if let (false, Some(sig)) = (stopped, crate::exec::cancelled()) {
            log::warn!("cancelled by signal {sig}; no further step runs");
            stopped = true;
            failed_code.get_or_insert(128 + sig);
        }
        let run = !stopped
            && match step.when {
                When::Success => failed_code.is_none(),
                When::Failure => failed_code.is_some(),
                When::Always => true,
            };
        if !run {
            log::info!("==> [{}/{total}] {}: skipped", i + 1, step.name);
            results.push(StepResult {
                name: step.name.clone(),
                state: "skipped",
                exit_code: None,
                duration: Duration::ZERO,
            });
            continue;
        }
        log::info!("==> [{}/{total}] {}", i + 1, step.name);
        crate::output::set_step(Some(&step.name));
        let step_started = Instant::now();
        let step_limits = Limits {
            deadline: earliest(deadline, after(step_started, step.timeout)),
            grace: limits.grace,
        };
        let end = start_step(ctx, wf, job, step, &workspace, &scripts, i + 1, step_limits);
        crate::output::set_step(None);
        let duration = step_started.elapsed();
        // A step that cannot start (its workdir leaves the workspace, its
        // shell is missing) fails like any other, with the runner's code.
        let (state, code) = match end {
            Ok(End::Exited(0)) => ("ok", 0),
            Ok(end @ End::TimedOut) => ("timed_out", end.exit_code()),
            Ok(end @ End::Cancelled(_)) => ("cancelled", end.exit_code()),
            Ok(end) => ("failed", end.exit_code()),
            Err(e) => {
                log::error!("{e}");
                ("failed", e.exit_code())
            }
        };
        results.push(StepResult {
            name: step.name.clone(),
            state,
            exit_code: Some(code),
            duration,
        });
        if state == "cancelled"
            || (state == "timed_out" && deadline.is_some_and(|d| Instant::now() >= d))
        {
            stopped = true;
        }
        if code != 0 {
            if step.continue_on_error && !stopped {
                log::warn!(
                    "step {:?} failed with {code}; continuing (continue-on-error)",
                    step.name
                );
            } else {
                log::error!(
                    "step {:?} {} with exit code {code}",
                    step.name,
                    if state == "timed_out" {
                        "timed out"
                    } else {
                        "failed"
                    }
                );
                failed_code.get_or_insert(code);
            }
        }
    }
    Ok((failed_code.unwrap_or(0), results))
}

/// Writes a step's script and runs it with the step's shell, directory and
/// environment layers.
#[allow(clippy::too_many_arguments)]
fn start_step(
    ctx: &Context,
    wf: &Workflow,
    job: &Job,
    step: &Step,
    workspace: &Path,
    scripts: &ScriptDir,
    n: usize,
    limits: Limits,
) -> Result<End> {
    let dir = step_dir(workspace, step)?;
    let script = scripts.write(n, &step.run)?;
    let mut words = step.shell.split_whitespace();
    let program = words.next().unwrap_or("/bin/sh");
    let mut cmd = crate::runner::job_command(ctx, Path::new(program));
    for w in words {
        cmd.arg(w);
    }
    cmd.arg(&script).cwd(&dir);
    for (k, v) in wf.env.iter().chain(&job.env).chain(&step.env) {
        cmd.env(k, v);
    }
    // Least privilege: a step sees only the secrets it or its job names.
    for name in job.secrets.iter().chain(&step.secrets) {
        if let Some((k, v)) = wf.secrets.iter().find(|(k, _)| k == name) {
            cmd.env(k, v);
        }
    }
    cmd.env("SOLSTICE_JOB", &job.name)
        .env("SOLSTICE_STEP", &step.name);
    crate::output::run_job(&cmd, limits).map_err(|e| {
        Error::input(format!(
            "step {:?}: cannot start shell {program:?} in {}: {e}",
            step.name,
            dir.display()
        ))
    })
}

/// Resolves a step's workdir and refuses one that leaves the workspace
/// through `..` or a symlink.
fn step_dir(workspace: &Path, step: &Step) -> Result<PathBuf> {
    let Some(rel) = &step.workdir else {
        return Ok(workspace.to_path_buf());
    };
    let dir = workspace.join(rel).canonicalize().map_err(|e| {
        Error::input(format!(
            "step {:?}: workdir {rel:?} cannot be used: {e}",
            step.name
        ))
    })?;
    if !dir.starts_with(workspace) || !dir.is_dir() {
        return Err(Error::input(format!(
            "step {:?}: workdir {rel:?} resolves to {}, which is not a directory inside the workspace",
            step.name,
            dir.display()
        )));
    }
    Ok(dir)
}

/// Where step scripts are written: a private directory outside the
/// checkout, so the job's tree stays exactly the commit.
struct ScriptDir(PathBuf);

impl ScriptDir {
    fn create() -> Result<ScriptDir> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!("solstice-runner-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&dir)
            .map_err(|e| Error::internal(format!("cannot create {}: {e}", dir.display())))?;
        Ok(ScriptDir(dir))
    }

    fn write(&self, n: usize, script: &str) -> Result<PathBuf> {
        let path = self.0.join(format!("step-{n}.sh"));
        let mut text = script.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        std::fs::write(&path, text)
            .map_err(|e| Error::internal(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }
}

impl Drop for ScriptDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The closing table: every step, its result and its duration.
pub fn summary(results: &[StepResult]) {
    log::info!("summary:");
    for r in results {
        let result = match (r.state, r.exit_code) {
            ("failed", Some(c)) => format!("failed {c}"),
            ("timed_out", _) => "timed out".to_string(),
            (state, _) => state.to_string(),
        };
        let tenths = r.duration.as_millis() as u64 / 100;
        log::info!(
            "  {:<12} {:>6}.{}s  {}",
            result,
            tenths / 10,
            tenths % 10,
            r.name
        );
    }
}
