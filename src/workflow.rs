//! Workflows: turns a parsed `.solstice/workflow.kdl` into jobs and steps
//! (rejecting every unknown word, wrong type and missing piece with its
//! line:col), selects the job to run, and runs its steps in order with their
//! environment layers, working directories, conditions and timeouts.
//!
//! Names in messages and in the plan are quoted as written (`"name"`), never
//! with `{:?}`: a name may be a secret's value, which the log masker finds as
//! written but not as Rust escapes it (`\u{a0}`).

use crate::context::{is_env_name, parse_duration, Context};
use crate::error::{Error, Result};
use crate::exec::{End, Limits};
use crate::kdl::{self, Entry, Node, Value};
use crate::secrets::Secrets;
use std::fmt::Write;
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

#[derive(Debug, Default)]
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

impl When {
    /// The word `if=` takes.
    pub fn name(self) -> &'static str {
        match self {
            When::Success => "success",
            When::Failure => "failure",
            When::Always => "always",
        }
    }
}

/// A node's first argument.
fn arg(node: &Node) -> Option<&Entry> {
    node.entries.iter().find(|e| e.key.is_none())
}

/// Collects every problem in a file instead of stopping at the first, so
/// `check` can list them all.
struct Checker<'a> {
    path: &'a str,
    /// The file as `Error::with_source` quotes it.
    src: String,
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
        let e = Error::at(self.path, line, col, msg).with_source(&self.src);
        // `min` shows the compiler that `insert` cannot panic.
        self.errors.insert(at.min(self.errors.len()), e);
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

    fn unknown(&mut self, node: &Node, place: &str) {
        let msg = format!("unknown node `{}` {place}", node.name);
        self.err(node.line, node.col, msg);
    }

    /// The string `e` holds; else an error calling it `what` + `name`.
    fn string(&mut self, e: &Entry, what: &str, name: &str) -> Option<String> {
        match &e.value {
            Value::String(s) => Some(s.clone()),
            other => {
                self.err(
                    e.line,
                    e.col,
                    format!("{what}{name} must be a string, not a {}", other.type_name()),
                );
                None
            }
        }
    }

    /// A `timeout`, the only duration there is.
    fn duration(&mut self, e: &Entry) -> Option<Duration> {
        let parsed = match &e.value {
            Value::String(s) => parse_duration(s),
            // `u64`'s parser, which `parse_duration` has too, rather than
            // `as_i64`'s: a negative or fractional number fails either way.
            Value::Number(kdl::Number::Int(n)) => match n.parse() {
                Ok(secs) => Ok(Duration::from_secs(secs)),
                Err(_) => {
                    Err("a duration must be a whole, non-negative number of seconds".to_string())
                }
            },
            Value::Number(_) => {
                Err("a duration must be a whole, non-negative number of seconds".to_string())
            }
            other => Err(format!(
                "must be a duration such as \"10m\", not a {}",
                other.type_name()
            )),
        };
        let msg = match parsed {
            Ok(d) if d.is_zero() => "timeout must be more than zero".to_string(),
            Ok(d) => return Some(d),
            Err(m) => format!("timeout: {m}"),
        };
        self.err(e.line, e.col, msg);
        None
    }

    /// Refuses properties and arguments a node does not take. `props` lists
    /// the properties it does take as "a, b" (one string rather than a slice
    /// of them, which would need a relocation per name).
    fn only(&mut self, node: &Node, props: &str, args: usize) {
        let mut seen_args = 0;
        for e in &node.entries {
            let msg = match &e.key {
                Some(k) if props.is_empty() || !props.split(", ").any(|p| p == k) => {
                    let allowed = if props.is_empty() { "none" } else { props };
                    format!(
                        "unknown property `{k}` on `{}` (allowed: {allowed})",
                        node.name
                    )
                }
                Some(_) => continue,
                None => {
                    seen_args += 1;
                    if seen_args <= args {
                        continue;
                    }
                    format!("unexpected argument to `{}`", node.name)
                }
            };
            self.err(e.line, e.col, msg);
        }
    }

    fn env(&mut self, node: &Node, out: &mut Vec<(String, String)>) {
        self.only(node, "", 0);
        for var in &node.children {
            let name = &var.name;
            if !is_env_name(name) {
                self.err(
                    var.line,
                    var.col,
                    format!("`{name}` is not a valid environment variable name"),
                );
            }
            self.only(var, "", 1);
            self.leaf(var);
            match arg(var) {
                Some(e) => {
                    if let Some(v) = self.string(e, "the value of ", name) {
                        out.retain(|(k, _)| k != name);
                        out.push((name.clone(), v));
                    }
                }
                None => self.err(
                    var.line,
                    var.col,
                    format!("`{name}` needs a value: {name} \"...\""),
                ),
            }
        }
    }

    fn secrets(&mut self, node: &Node, out: &mut Vec<String>) {
        self.only(node, "", usize::MAX);
        if !node.children.is_empty() {
            self.err(
                node.line,
                node.col,
                "`secrets` takes names as arguments, not a block".into(),
            );
        }
        for e in node.entries.iter().filter(|e| e.key.is_none()) {
            if let Some(name) = self.string(e, "a secret name", "") {
                if !is_env_name(&name) {
                    self.err(
                        e.line,
                        e.col,
                        format!("\"{name}\" is not a valid environment variable name"),
                    );
                }
                if let Some(known) = self.secrets.filter(|s| s.found) {
                    if known.get(&name).is_none() {
                        self.err(
                            e.line,
                            e.col,
                            format!("no secret \"{name}\" in the secrets file {}", known.path),
                        );
                    }
                }
                out.push(name);
            }
        }
    }

    fn job(&mut self, node: &Node) -> Job {
        self.only(node, "runs-on, timeout", 1);
        let mut job = Job::default();
        match arg(node) {
            Some(e) => {
                if let Some(name) = self.string(e, "a job name", "") {
                    if name.trim().is_empty() {
                        self.err(e.line, e.col, "a job name cannot be empty".into());
                    }
                    job.name = name;
                }
            }
            None => self.err(
                node.line,
                node.col,
                "a job needs a name: job \"build\" { ... }".into(),
            ),
        }
        for e in &node.entries {
            match e.key.as_deref() {
                Some("runs-on") => job.runs_on = self.string(e, "runs-on", ""),
                Some("timeout") => job.timeout = self.duration(e),
                _ => {}
            }
        }
        for child in &node.children {
            match child.name.as_str() {
                "env" => self.env(child, &mut job.env),
                "secrets" => self.secrets(child, &mut job.secrets),
                "step" => self.step(child, &mut job),
                _ => self.unknown(child, "in job (allowed: env, secrets, step)"),
            }
        }
        if job.steps.is_empty() {
            self.err(
                node.line,
                node.col,
                format!("job \"{}\" has no steps", job.name),
            );
        }
        job
    }

    /// Checks a `step` node and adds it to `job`.
    fn step(&mut self, node: &Node, job: &mut Job) {
        self.only(
            node,
            "run, workdir, timeout, continue-on-error, if, shell",
            1,
        );
        let name = match arg(node) {
            Some(e) => self.string(e, "a step name", "").unwrap_or_default(),
            None => format!("step {}", job.steps.len() + 1),
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
            let key = e.key.as_deref().unwrap_or_default();
            match key {
                "timeout" => step.timeout = self.duration(e),
                "continue-on-error" => match e.value {
                    Value::Bool(b) => step.continue_on_error = b,
                    ref other => self.err(
                        e.line,
                        e.col,
                        format!(
                            "continue-on-error must be #true or #false, not a {}",
                            other.type_name()
                        ),
                    ),
                },
                "run" | "workdir" | "if" | "shell" => {
                    runs += (key == "run") as usize;
                    // A value of the wrong type is an error, so the step is
                    // never used and need not be updated.
                    let Some(s) = self.string(e, key, "") else {
                        continue;
                    };
                    match key {
                        "run" => step.run = s,
                        "workdir" => {
                            // `Path::is_absolute` on Unix, without the parsing.
                            if s.starts_with('/') || escapes(&s) {
                                self.err(
                                    e.line,
                                    e.col,
                                    format!("workdir \"{s}\" must be a relative path inside the workspace"),
                                );
                            }
                            step.workdir = Some(s);
                        }
                        "if" => match s.as_str() {
                            "success" => step.when = When::Success,
                            "failure" => step.when = When::Failure,
                            "always" => step.when = When::Always,
                            _ => self.err(
                                e.line,
                                e.col,
                                format!("if=\"{s}\" is not a condition: use \"success\", \"failure\" or \"always\""),
                            ),
                        },
                        _ => {
                            if s.trim().is_empty() {
                                self.err(e.line, e.col, "shell is empty".into());
                            }
                            step.shell = s;
                        }
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
                    self.only(child, "", 1);
                    self.leaf(child);
                    match arg(child) {
                        Some(e) => step.run = self.string(e, "run", "").unwrap_or_default(),
                        None => self.err(
                            child.line,
                            child.col,
                            "`run` needs the script as a string".into(),
                        ),
                    }
                }
                _ => self.unknown(child, "in step (allowed: env, secrets, run)"),
            }
        }
        if runs != 1 {
            let many = if runs == 0 { "no" } else { "more than one" };
            self.err(
                node.line,
                node.col,
                format!("step \"{}\" has {many} `run`", step.name),
            );
        }
        job.steps.push(step);
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
    let doc = match kdl::parse(path, src) {
        Ok(doc) => doc,
        Err(e) => return Err(vec![e]),
    };
    let mut c = Checker {
        path,
        // Quoted with KDL's own line breaks, so line N is the parser's line N.
        src: kdl::lf_only(src),
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
                    let (line, col) = arg(node).map_or((node.line, node.col), |e| (e.line, e.col));
                    c.err(line, col, format!("duplicate job name \"{}\"", job.name));
                }
                wf.jobs.push(job);
            }
            "step" => top_steps.push(node),
            _ => c.unknown(node, "at the top level (allowed: env, job, step)"),
        }
    }
    if let (Some(at), Some(job)) = (top_steps.first(), wf.jobs.first()) {
        c.err(
            at.line,
            at.col,
            format!(
                "`step` at the top level next to jobs (like \"{}\"); put it inside a job",
                job.name
            ),
        );
    } else if !top_steps.is_empty() {
        let mut job = Job {
            name: "default".to_string(),
            ..Job::default()
        };
        for node in top_steps {
            c.step(node, &mut job);
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
        Ok(wf)
    } else {
        Err(c.errors)
    }
}

fn read(path: &Path) -> Result<String> {
    let shown = path.display();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => return Err(Error::input(format!("cannot read {shown}: {e}"))),
    };
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(e) => {
            // The first bad byte's line and column, counted the way KDL counts.
            let ok = e.as_bytes().get(..e.utf8_error().valid_up_to());
            let before =
                kdl::lf_only(std::str::from_utf8(ok.unwrap_or_default()).unwrap_or_default());
            let (mut line, mut col) = (1, 1);
            for c in before.chars() {
                if c == '\n' {
                    line += 1;
                    col = 1;
                } else {
                    col += 1;
                }
            }
            Err(Error::at(
                &path.to_string_lossy(),
                line,
                col,
                "invalid UTF-8",
            ))
        }
    }
}

/// Logs every error and folds them into one input error.
fn report_errors(shown: &str, errors: Vec<Error>) -> Error {
    let n = errors.len();
    for e in &errors {
        error!("{e}");
    }
    let s = if n == 1 { "" } else { "s" };
    Error::input(format!("{shown}: {n} error{s} in the workflow"))
}

/// `solstice-runner check [FILE]`: validate and print the plan.
pub fn check(file: Option<&str>) -> Result<()> {
    let shown = file.unwrap_or(crate::plan::WORKFLOW);
    let src = read(Path::new(shown))?;
    let secrets_path = std::env::var("SOLSTICE_SECRETS_FILE");
    let secrets = crate::secrets::read(
        secrets_path
            .as_deref()
            .unwrap_or(crate::secrets::DEFAULT_FILE),
    )?;
    if !secrets.found {
        warn!(
            "no secrets file at {}: secret names are not checked",
            secrets.path
        );
    }
    let wf = match parse(shown, &src, Some(&secrets)) {
        Ok(wf) => wf,
        Err(errors) => return Err(report_errors(shown, errors)),
    };
    print!("{}", describe(&wf));
    Ok(())
}

/// A plan's `env` and `secrets` lines at `indent`.
fn describe_env(out: &mut String, indent: &str, env: &[(String, String)], secrets: &[String]) {
    for (k, v) in env {
        let _ = writeln!(out, "{indent}env {k}={v}");
    }
    if !secrets.is_empty() {
        let _ = write!(out, "{indent}secrets");
        for s in secrets {
            out.push(' ');
            out.push_str(s);
        }
        out.push('\n');
    }
}

/// The plan in words: jobs, steps and what each runs.
pub fn describe(wf: &Workflow) -> String {
    let mut out = String::new();
    describe_env(&mut out, "", &wf.env, &[]);
    for job in &wf.jobs {
        let _ = write!(out, "job \"{}\"", job.name);
        if let Some(r) = &job.runs_on {
            let _ = write!(out, " runs-on=\"{r}\"");
        }
        if let Some(t) = job.timeout {
            let _ = write!(out, " timeout={}s", t.as_secs());
        }
        out.push('\n');
        describe_env(&mut out, "  ", &job.env, &job.secrets);
        for (i, s) in job.steps.iter().enumerate() {
            let _ = write!(out, "  [{}/{}] \"{}\"", i + 1, job.steps.len(), s.name);
            if s.when != When::Success {
                let _ = write!(out, " if=\"{}\"", s.when.name());
            }
            if s.continue_on_error {
                out.push_str(" continue-on-error");
            }
            if let Some(t) = s.timeout {
                let _ = write!(out, " timeout={}s", t.as_secs());
            }
            if let Some(w) = &s.workdir {
                let _ = write!(out, " workdir=\"{w}\"");
            }
            if s.shell != DEFAULT_SHELL {
                let _ = write!(out, " shell=\"{}\"", s.shell);
            }
            out.push('\n');
            describe_env(&mut out, "      ", &s.env, &s.secrets);
            for line in s.run.lines() {
                let _ = writeln!(out, "      | {line}");
            }
        }
    }
    out
}

/// Picks the job to run: the named one, or the only one.
pub fn select<'a>(wf: &'a Workflow, wanted: Option<&str>) -> Result<&'a Job> {
    let mut names = String::new();
    for j in &wf.jobs {
        if !names.is_empty() {
            names += ", ";
        }
        let _ = write!(names, "\"{}\"", j.name);
    }
    let msg = match (wanted, wf.jobs.as_slice()) {
        (Some(name), jobs) => match jobs.iter().find(|j| j.name == name) {
            Some(job) => return Ok(job),
            None => format!("no job named \"{name}\" in the workflow; it has {names}"),
        },
        (None, [only]) => return Ok(only),
        (None, _) => format!(
            "the workflow has several jobs ({names}); choose one with SOLSTICE_JOB, the job file key `job`, or --job"
        ),
    };
    Err(Error::input(msg))
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
    let mut wf = match parse(shown, &src, Some(secrets)) {
        Ok(wf) => wf,
        Err(errors) => return Err(report_errors(shown, errors)),
    };
    if !secrets.found
        && wf
            .jobs
            .iter()
            .any(|j| !j.secrets.is_empty() || j.steps.iter().any(|s| !s.secrets.is_empty()))
    {
        warn!(
            "the workflow names secrets but there is no secrets file at {}",
            secrets.path
        );
    }
    wf.secrets = secrets.vars.clone();
    let job = select(&wf, ctx.text("job"))?;
    let runs_on = match &job.runs_on {
        Some(r) => format!(", runs-on \"{r}\""),
        None => String::new(),
    };
    let n = job.steps.len();
    let s = if n == 1 { "" } else { "s" };
    info!(
        "running job \"{}\" of {shown} ({n} step{s}{runs_on})",
        job.name
    );
    let (code, results) = run_job(ctx, &wf, job, limits)?;
    summary(&results);
    if code == 0 {
        info!("job \"{}\" succeeded", job.name);
    } else {
        error!("job \"{}\" failed with exit code {code}", job.name);
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
    let workspace = match ctx.workdir.canonicalize() {
        Ok(w) => w,
        Err(e) => return Err(io_error("resolve the workspace", &ctx.workdir, e)),
    };
    let mut results: Vec<StepResult> = Vec::new();
    let mut failed_code: Option<i32> = None;
    // Once the job is out of time or cancelled, nothing more runs.
    let mut stopped = false;
    let total = job.steps.len();
    for (i, step) in job.steps.iter().enumerate() {
        if let (false, Some(sig)) = (stopped, crate::exec::cancelled()) {
            warn!("cancelled by signal {sig}; no further step runs");
            stopped = true;
            failed_code.get_or_insert(128 + sig);
        }
        let run = !stopped
            && match step.when {
                When::Success => failed_code.is_none(),
                When::Failure => failed_code.is_some(),
                When::Always => true,
            };
        let skipped = if run { "" } else { ": skipped" };
        info!("==> [{}/{total}] {}{skipped}", i + 1, step.name);
        let mut result = StepResult {
            name: step.name.clone(),
            state: "skipped",
            exit_code: None,
            duration: Duration::ZERO,
        };
        if run {
            crate::output::set_step(Some(&step.name));
            let step_started = Instant::now();
            let step_limits = Limits {
                deadline: earliest(deadline, after(step_started, step.timeout)),
                grace: limits.grace,
            };
            let end = start_step(ctx, wf, job, step, &workspace, &scripts, i + 1, step_limits);
            crate::output::set_step(None);
            result.duration = step_started.elapsed();
            // A step that cannot start (its workdir leaves the workspace, its
            // shell is missing) fails like any other, with the runner's code.
            let (state, code) = match end {
                Ok(End::Exited(0)) => ("ok", 0),
                Ok(end @ End::TimedOut) => ("timed_out", end.exit_code()),
                Ok(end @ End::Cancelled(_)) => ("cancelled", end.exit_code()),
                Ok(end) => ("failed", end.exit_code()),
                Err(e) => {
                    error!("{e}");
                    ("failed", e.exit_code())
                }
            };
            result.state = state;
            result.exit_code = Some(code);
            if state == "cancelled"
                || (state == "timed_out" && deadline.is_some_and(|d| Instant::now() >= d))
            {
                stopped = true;
            }
            if code != 0 {
                // One log call for both outcomes: a warning when the job goes
                // on, else an error, and the job's code is this one.
                let go_on = step.continue_on_error && !stopped;
                let (level, how, tail) = if go_on {
                    (
                        log::Level::Warn,
                        "failed with",
                        "; continuing (continue-on-error)",
                    )
                } else if state == "timed_out" {
                    (log::Level::Error, "timed out with exit code", "")
                } else {
                    (log::Level::Error, "failed with exit code", "")
                };
                crate::logger::emit(
                    level,
                    format_args!("step \"{}\" {how} {code}{tail}", step.name),
                );
                if !go_on {
                    failed_code.get_or_insert(code);
                }
            }
        }
        results.push(result);
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
    // `&str` pairs throughout, so `Spec::env` is instantiated once.
    for env in [&wf.env, &job.env, &step.env] {
        for (k, v) in env {
            cmd.env(k.as_str(), v.as_str());
        }
    }
    // Least privilege: a step sees only the secrets it or its job names.
    for names in [&job.secrets, &step.secrets] {
        for name in names {
            if let Some((k, v)) = wf.secrets.iter().find(|(k, _)| k == name) {
                cmd.env(k.as_str(), v.as_str());
            }
        }
    }
    cmd.env("SOLSTICE_JOB", job.name.as_str())
        .env("SOLSTICE_STEP", step.name.as_str());
    match crate::output::run_job(&cmd, limits) {
        Ok(end) => Ok(end),
        Err(e) => Err(Error::input(format!(
            "step \"{}\": cannot start shell \"{program}\" in {}: {e}",
            step.name,
            dir.display()
        ))),
    }
}

/// Resolves a step's workdir and refuses one that leaves the workspace
/// through `..` or a symlink.
fn step_dir(workspace: &Path, step: &Step) -> Result<PathBuf> {
    let Some(rel) = &step.workdir else {
        return Ok(workspace.to_path_buf());
    };
    let dir = match workspace.join(rel).canonicalize() {
        Ok(dir) => dir,
        Err(e) => {
            return Err(Error::input(format!(
                "step \"{}\": workdir \"{rel}\" cannot be used: {e}",
                step.name
            )))
        }
    };
    // Inside by bytes: `Path::starts_with` compares component by component,
    // which costs 400 bytes more; both paths are canonical.
    use std::os::unix::ffi::OsStrExt;
    let ws = workspace.as_os_str().as_bytes();
    let inside = dir
        .as_os_str()
        .as_bytes()
        .strip_prefix(ws)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/") || ws.ends_with(b"/"));
    if !inside || !dir.is_dir() {
        return Err(Error::input(format!(
            "step \"{}\": workdir \"{rel}\" resolves to {}, which is not a directory inside the workspace",
            step.name,
            dir.display()
        )));
    }
    Ok(dir)
}

/// "cannot {what} {path}: {e}", an internal error: the runner's own files.
fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::internal(format!("cannot {what} {}: {e}", path.display()))
}

/// Where step scripts are written: a private directory outside the
/// checkout, so the job's tree stays exactly the commit.
struct ScriptDir(PathBuf);

impl ScriptDir {
    fn create() -> Result<ScriptDir> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!("solstice-runner-{}", std::process::id()));
        clear(&dir);
        if let Err(e) = std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&dir)
        {
            return Err(io_error("create", &dir, e));
        }
        Ok(ScriptDir(dir))
    }

    fn write(&self, n: usize, script: &str) -> Result<PathBuf> {
        let path = self.0.join(format!("step-{n}.sh"));
        let nl = if script.ends_with('\n') { "" } else { "\n" };
        match std::fs::write(&path, format!("{script}{nl}")) {
            Ok(()) => Ok(path),
            Err(e) => Err(io_error("write", &path, e)),
        }
    }
}

impl Drop for ScriptDir {
    fn drop(&mut self) {
        clear(&self.0);
    }
}

/// Removes a script directory and the files in it. It holds only files (a
/// script that makes a subdirectory there keeps it): `remove_dir_all`, which
/// walks trees, would cost 1.8 KB more.
fn clear(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
    let _ = std::fs::remove_dir(dir);
}

/// The closing table: every step, its result and its duration.
pub fn summary(results: &[StepResult]) {
    info!("summary:");
    for r in results {
        let mut result = String::from(match r.state {
            "timed_out" => "timed out",
            state => state,
        });
        if let ("failed", Some(c)) = (r.state, r.exit_code) {
            let _ = write!(result, " {c}");
        }
        let d = r.duration;
        info!(
            "  {:<12} {:>6}.{}s  {}",
            result,
            d.as_secs(),
            d.subsec_millis() / 100,
            r.name
        );
    }
}
