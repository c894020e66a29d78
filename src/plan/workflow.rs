//! Workflows: turns a parsed `.solstice/workflow.kdl` into jobs and steps
//! (rejecting every unknown word, wrong type and missing piece with its
//! line:col), selects the job to run, and runs its steps in order with their
//! environment layers, working directories, conditions and timeouts.
//!
//! Names in messages and in the plan are quoted as written (`"name"`), never
//! with `{:?}`: a name may be a secret's value, which the log masker finds as
//! written but not as Rust escapes it (`\u{a0}`).

use crate::config::secrets::Secrets;
use crate::config::{is_env_name, parse_duration};
use crate::error::{Error, Result};
use crate::plan::kdl::{self, Entry, Node, Value};
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum When {
    #[default]
    Success,
    Failure,
    Always,
    /// Only after the job was cancelled: a cleanup step.
    Cancelled,
}

/// A job or a step: one type for both (and for the workflow, whose units are
/// its jobs), so they share one checker, one plan printer and one set of
/// vector code. Each holds only the settings its kind takes.
#[derive(Debug, Default)]
pub struct Unit {
    pub name: String,
    /// The string properties by their position in `KEYS`: `RUN`, `RUNS_ON`,
    /// `WORKDIR`, `IF` (also in `when`) and `SHELL` (`None` is
    /// `DEFAULT_SHELL`). One array, so one assignment sets any of them.
    pub text: [Option<String>; 5],
    pub timeout: Option<Duration>,
    pub continue_on_error: bool,
    pub when: When,
    pub env: Vec<(String, String)>,
    pub secrets: Vec<String>,
    /// The workflow's jobs, a job's steps.
    pub units: Vec<Unit>,
}

pub type Workflow = Unit;
pub type Job = Unit;
pub type Step = Unit;

impl Unit {
    /// A step's script.
    pub fn run(&self) -> &str {
        self.text[RUN].as_deref().unwrap_or_default()
    }

    /// A step's working directory, relative to the workspace.
    pub fn workdir(&self) -> Option<&str> {
        self.text[WORKDIR].as_deref()
    }

    /// A step's shell command line.
    pub fn shell(&self) -> &str {
        self.text[SHELL].as_deref().unwrap_or(DEFAULT_SHELL)
    }

    /// A job's `runs-on` label.
    pub fn runs_on(&self) -> Option<&str> {
        self.text[RUNS_ON].as_deref()
    }

    /// The workflow's jobs, or a job's steps.
    pub fn parts(&self) -> &[Unit] {
        &self.units
    }

    /// Not inlined: `Default` for this many fields is 100 bytes a copy.
    #[inline(never)]
    fn named(name: String) -> Unit {
        Unit {
            name,
            ..Unit::default()
        }
    }
}

pub const DEFAULT_SHELL: &str = "/bin/sh -e";

impl When {
    /// The word `if=` takes.
    pub fn name(self) -> &'static str {
        match self {
            When::Success => "success",
            When::Failure => "failure",
            When::Always => "always",
            When::Cancelled => "cancelled",
        }
    }
}

/// A node's first argument.
fn arg(node: &Node) -> Option<&Entry> {
    node.entries.iter().find(|e| e.key.is_none())
}

/// What a node is, which decides what it may hold.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Top,
    Job,
    Step,
}

/// Every property there is, found by position so each is compared once.
const KEYS: [&str; 7] = [
    "run",
    "runs-on",
    "workdir",
    "if",
    "shell",
    "timeout",
    "continue-on-error",
];
const RUN: usize = 0;
const RUNS_ON: usize = 1;
const WORKDIR: usize = 2;
const IF: usize = 3;
const SHELL: usize = 4;
const TIMEOUT: usize = 5;
const CONTINUE_ON_ERROR: usize = 6;
/// Per kind: bit `i` is set when it takes `KEYS[i]`.
const TAKES: [u8; 3] = [0, 0b010_0010, 0b111_1101];

/// The position in `KEYS` of `key`, when `takes` has it.
fn prop(key: &str, takes: u8) -> Option<usize> {
    KEYS.iter()
        .position(|&k| k == key)
        .filter(|&i| takes >> i & 1 == 1)
}

/// Per kind: the properties it takes, and where its children are, with the
/// children allowed, for the messages about an unknown one.
const PROPS: [&str; 3] = [
    "",
    "runs-on, timeout",
    "run, workdir, timeout, continue-on-error, if, shell",
];
const PLACES: [&str; 3] = [
    "at the top level (allowed: env, job, step)",
    "in job (allowed: env, secrets, step)",
    "in step (allowed: env, secrets, run)",
];

/// Collects every problem in a file instead of stopping at the first, so
/// `check` can list them all.
struct Checker<'a> {
    path: &'a str,
    /// The file as `Error::with_source` quotes it.
    src: String,
    errors: Vec<Error>,
    /// The secrets file, when there is one to check secret names against.
    secrets: &'a Secrets,
}

impl Checker<'_> {
    /// Records an error, keeping the list in file order (a sort would cost
    /// the binary 4 KB).
    /// Takes the message unformatted: one `format` here rather than one
    /// `format` and a `String` to move and drop at each of 30 call sites.
    fn err(&mut self, line: usize, col: usize, msg: std::fmt::Arguments) {
        let msg = std::fmt::format(msg);
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
                format_args!("`{}` takes no children block", node.name),
            );
        }
    }

    /// The string `e` holds; else an error calling it `what` + `name`.
    fn string(&mut self, e: &Entry, what: &str, name: &str) -> Option<String> {
        match &e.value {
            Value::String(s) => Some(s.clone()),
            other => {
                self.err(
                    e.line,
                    e.col,
                    format_args!("{what}{name} must be a string, not a {}", other.type_name()),
                );
                None
            }
        }
    }

    /// A `timeout`, the only duration there is.
    fn duration(&mut self, e: &Entry) -> Option<Duration> {
        const WHOLE: &str = "a duration must be a whole, non-negative number of seconds";
        let parsed = match &e.value {
            Value::String(s) => parse_duration(s),
            // `u64`'s parser, which `parse_duration` has too, rather than
            // `as_i64`'s: a negative or fractional number fails either way.
            Value::Number(kdl::Number::Int(n)) => match n.parse() {
                Ok(secs) => Ok(Duration::from_secs(secs)),
                Err(_) => Err(WHOLE.to_string()),
            },
            Value::Number(_) => Err(WHOLE.to_string()),
            other => Err(format!(
                "must be a duration such as \"10m\", not a {}",
                other.type_name()
            )),
        };
        match parsed {
            Ok(d) if d.is_zero() => self.err(
                e.line,
                e.col,
                format_args!("timeout must be more than zero"),
            ),
            Ok(d) => return Some(d),
            Err(m) => self.err(e.line, e.col, format_args!("timeout: {m}")),
        }
        None
    }

    /// Refuses properties and arguments a node does not take. `props` lists
    /// the properties it does take as "a, b" (one string rather than a slice
    /// of them, which would need a relocation per name).
    fn only(&mut self, node: &Node, takes: u8, props: &str, args: usize) {
        let mut seen_args = 0;
        for e in &node.entries {
            match &e.key {
                Some(k) if prop(k, takes).is_none() => {
                    let allowed = if props.is_empty() { "none" } else { props };
                    self.err(
                        e.line,
                        e.col,
                        format_args!(
                            "unknown property `{k}` on `{}` (allowed: {allowed})",
                            node.name
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    seen_args += 1;
                    if seen_args > args {
                        let msg = format_args!("unexpected argument to `{}`", node.name);
                        self.err(e.line, e.col, msg);
                    }
                }
            }
        }
    }

    fn env(&mut self, node: &Node, out: &mut Vec<(String, String)>) {
        self.only(node, 0, "", 0);
        for var in &node.children {
            let name = &var.name;
            if !is_env_name(name) {
                self.err(
                    var.line,
                    var.col,
                    format_args!("`{name}` is not a valid environment variable name"),
                );
            }
            self.only(var, 0, "", 1);
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
                    format_args!("`{name}` needs a value: {name} \"...\""),
                ),
            }
        }
    }

    fn secrets(&mut self, node: &Node, out: &mut Vec<String>) {
        self.only(node, 0, "", usize::MAX);
        if !node.children.is_empty() {
            self.err(
                node.line,
                node.col,
                format_args!("`secrets` takes names as arguments, not a block"),
            );
        }
        for e in node.entries.iter().filter(|e| e.key.is_none()) {
            if let Some(name) = self.string(e, "a secret name", "") {
                if !is_env_name(&name) {
                    self.err(
                        e.line,
                        e.col,
                        format_args!("\"{name}\" is not a valid environment variable name"),
                    );
                }
                let known = self.secrets;
                if known.found && known.get(&name).is_none() {
                    self.err(
                        e.line,
                        e.col,
                        format_args!("no secret \"{name}\" in the secrets file {}", known.path),
                    );
                }
                out.push(name);
            }
        }
    }

    /// Checks the workflow (`Kind::Top`, `node` the document's nodes as
    /// children), a job or a step; `n` is a step's position in its job.
    fn unit(&mut self, node: &Node, kind: Kind, n: usize) -> Unit {
        let k = kind as usize;
        let props = PROPS.get(k).copied().unwrap_or_default();
        let takes = TAKES.get(k).copied().unwrap_or_default();
        let mut u = Unit::named(String::new());
        if kind != Kind::Top {
            self.only(node, takes, props, 1);
            u.name = match (arg(node), kind) {
                (Some(e), _) => {
                    let what = if kind == Kind::Job {
                        "a job name"
                    } else {
                        "a step name"
                    };
                    let name = self.string(e, what, "").unwrap_or_default();
                    if kind == Kind::Job && e.value.as_str().is_some_and(|s| s.trim().is_empty()) {
                        self.err(e.line, e.col, format_args!("a job name cannot be empty"));
                    }
                    name
                }
                (None, Kind::Job) => {
                    self.err(
                        node.line,
                        node.col,
                        format_args!("a job needs a name: job \"build\" {{ ... }}"),
                    );
                    String::new()
                }
                _ => format!("step {n}"),
            };
        }
        let mut runs = 0;
        for e in &node.entries {
            let key = e.key.as_deref().unwrap_or_default();
            let Some(p) = prop(key, takes) else {
                continue;
            };
            match p {
                TIMEOUT => u.timeout = self.duration(e),
                CONTINUE_ON_ERROR => match e.value {
                    Value::Bool(b) => u.continue_on_error = b,
                    ref other => self.err(
                        e.line,
                        e.col,
                        format_args!(
                            "continue-on-error must be #true or #false, not a {}",
                            other.type_name()
                        ),
                    ),
                },
                _ => {
                    runs += (p == RUN) as usize;
                    // A value of the wrong type is an error, so the unit is
                    // never used and need not be updated.
                    let Some(s) = self.string(e, key, "") else {
                        continue;
                    };
                    match p {
                        // `Path::is_absolute` on Unix, without the parsing.
                        WORKDIR if s.starts_with('/') || escapes(&s) => self.err(
                            e.line,
                            e.col,
                            format_args!(
                                "workdir \"{s}\" must be a relative path inside the workspace"
                            ),
                        ),
                        IF => match s.as_str() {
                            "success" => u.when = When::Success,
                            "failure" => u.when = When::Failure,
                            "always" => u.when = When::Always,
                            "cancelled" => u.when = When::Cancelled,
                            _ => self.err(
                                e.line,
                                e.col,
                                format_args!("if=\"{s}\" is not a condition: use \"success\", \"failure\", \"always\" or \"cancelled\""),
                            ),
                        },
                        SHELL if s.trim().is_empty() => {
                            self.err(e.line, e.col, format_args!("shell is empty"))
                        }
                        _ => {}
                    }
                    if let Some(slot) = u.text.get_mut(p) {
                        *slot = Some(s);
                    }
                }
            }
        }
        let mut top_steps = Vec::new();
        for child in &node.children {
            match (child.name.as_str(), kind) {
                ("env", _) => self.env(child, &mut u.env),
                ("secrets", Kind::Job | Kind::Step) => self.secrets(child, &mut u.secrets),
                ("step", Kind::Job) => {
                    let step = self.unit(child, Kind::Step, u.units.len() + 1);
                    u.units.push(step);
                }
                ("step", Kind::Top) => top_steps.push(child),
                ("job", Kind::Top) => {
                    let job = self.unit(child, Kind::Job, 0);
                    if !job.name.is_empty() && u.units.iter().any(|j| j.name == job.name) {
                        let (line, col) =
                            arg(child).map_or((child.line, child.col), |e| (e.line, e.col));
                        self.err(
                            line,
                            col,
                            format_args!("duplicate job name \"{}\"", job.name),
                        );
                    }
                    u.units.push(job);
                }
                ("run", Kind::Step) => {
                    runs += 1;
                    self.only(child, 0, "", 1);
                    self.leaf(child);
                    match arg(child) {
                        Some(e) => u.text[RUN] = self.string(e, "run", ""),
                        None => self.err(
                            child.line,
                            child.col,
                            format_args!("`run` needs the script as a string"),
                        ),
                    }
                }
                _ => {
                    let place = PLACES.get(k).copied().unwrap_or_default();
                    self.err(
                        child.line,
                        child.col,
                        format_args!("unknown node `{}` {place}", child.name),
                    );
                }
            }
        }
        match kind {
            Kind::Top => {
                if let (Some(at), Some(job)) = (top_steps.first(), u.units.first()) {
                    self.err(
                        at.line,
                        at.col,
                        format_args!(
                            "`step` at the top level next to jobs (like \"{}\"); put it inside a job",
                            job.name
                        ),
                    );
                } else if !top_steps.is_empty() {
                    let mut job = Unit::named("default".to_string());
                    for node in top_steps {
                        let step = self.unit(node, Kind::Step, job.units.len() + 1);
                        job.units.push(step);
                    }
                    u.units.push(job);
                }
                if u.units.is_empty() && self.errors.is_empty() {
                    self.err(
                        1,
                        1,
                        format_args!("the workflow has no job: add job \"NAME\" {{ step {{ run \"...\" }} }}"),
                    );
                }
            }
            Kind::Job => {
                if u.units.is_empty() {
                    self.err(
                        node.line,
                        node.col,
                        format_args!("job \"{}\" has no steps", u.name),
                    );
                }
            }
            Kind::Step => {
                if runs != 1 {
                    let many = if runs == 0 { "no" } else { "more than one" };
                    self.err(
                        node.line,
                        node.col,
                        format_args!("step \"{}\" has {many} `run`", u.name),
                    );
                }
            }
        }
        u
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

/// Parses and validates a workflow file's text. Every problem is logged, in
/// file order, each quoting its line, and counted in the error returned.
/// Secret names are checked against `secrets` when its file was found.
pub fn parse(path: &str, src: &str, secrets: &Secrets) -> Result<Workflow> {
    let mut c = Checker {
        path,
        // Quoted with KDL's own line breaks, so line N is the parser's line N.
        src: kdl::lf_only(src),
        errors: Vec::new(),
        secrets,
    };
    match kdl::parse(path, src) {
        Ok(doc) => {
            // The document as the children of a node that has nothing else.
            let top = Node {
                ty: None,
                name: String::new(),
                entries: Vec::new(),
                children: doc.nodes,
                line: 1,
                col: 1,
            };
            let wf = c.unit(&top, Kind::Top, 0);
            if c.errors.is_empty() {
                return Ok(wf);
            }
        }
        Err(e) => c.errors.push(e),
    }
    let n = c.errors.len();
    for e in &c.errors {
        error!("{e}");
    }
    let s = if n == 1 { "" } else { "s" };
    Err(input(format_args!("{path}: {n} error{s} in the workflow")))
}

fn read(path: &Path) -> Result<String> {
    let shown = path.display();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => return Err(input(format_args!("cannot read {shown}: {e}"))),
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

/// Reads and validates the workflow at `path`; secret names are checked
/// against `secrets` when its file was found.
pub fn load(path: &Path, secrets: &Secrets) -> Result<Workflow> {
    let src = read(path)?;
    parse(&path.display().to_string(), &src, secrets)
}

impl Unit {
    /// A job's declared caches.
    pub fn caches(&self) -> &[crate::files::cache::Cache] {
        &[]
    }

    /// A job's declared artifacts.
    pub fn artifacts(&self) -> &[crate::files::artifacts::Artifact] {
        &[]
    }

    /// Whether any job or step names a secret.
    pub fn names_secrets(&self) -> bool {
        self.units
            .iter()
            .any(|j| !j.secrets.is_empty() || j.units.iter().any(|s| !s.secrets.is_empty()))
    }
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

/// A job's or step's non-default settings, each after a space, and the end
/// of its line. A job has only `runs-on` and `timeout`; a step all but
/// `runs-on`: one printer for both.
fn describe_settings(out: &mut String, u: &Unit) {
    if let Some(r) = &u.text[RUNS_ON] {
        let _ = write!(out, " runs-on=\"{r}\"");
    }
    if u.when != When::Success {
        let _ = write!(out, " if=\"{}\"", u.when.name());
    }
    if u.continue_on_error {
        out.push_str(" continue-on-error");
    }
    if let Some(t) = u.timeout {
        let _ = write!(out, " timeout={}s", t.as_secs());
    }
    if let Some(w) = &u.text[WORKDIR] {
        let _ = write!(out, " workdir=\"{w}\"");
    }
    if let Some(sh) = &u.text[SHELL] {
        let _ = write!(out, " shell=\"{sh}\"");
    }
    out.push('\n');
}

/// The plan in words: jobs, steps and what each runs.
pub fn describe(wf: &Workflow) -> String {
    let mut out = String::new();
    describe_env(&mut out, "", &wf.env, &[]);
    for job in &wf.units {
        let _ = write!(out, "job \"{}\"", job.name);
        describe_settings(&mut out, job);
        describe_env(&mut out, "  ", &job.env, &job.secrets);
        for (i, s) in job.units.iter().enumerate() {
            let _ = write!(out, "  [{}/{}] \"{}\"", i + 1, job.units.len(), s.name);
            describe_settings(&mut out, s);
            describe_env(&mut out, "      ", &s.env, &s.secrets);
            for line in s.text[RUN].as_deref().unwrap_or_default().lines() {
                let _ = writeln!(out, "      | {line}");
            }
        }
    }
    out
}

/// Picks the job to run: the named one, or the only one.
pub fn select<'a>(wf: &'a Workflow, wanted: Option<&str>) -> Result<&'a Job> {
    let mut names = String::new();
    for j in &wf.units {
        if !names.is_empty() {
            names += ", ";
        }
        let _ = write!(names, "\"{}\"", j.name);
    }
    Err(match (wanted, wf.units.as_slice()) {
        (Some(name), jobs) => match jobs.iter().find(|j| j.name == name) {
            Some(job) => return Ok(job),
            None => input(format_args!("no job named \"{name}\" in the workflow; it has {names}")),
        },
        (None, [only]) => return Ok(only),
        (None, _) => input(format_args!(
            "the workflow has several jobs ({names}); choose one with SOLSTICE_JOB, the job file key `job`, or --job"
        )),
    })
}

/// An input error with a formatted message.
fn input(msg: std::fmt::Arguments) -> Error {
    Error::input(std::fmt::format(msg))
}
