//! Workflows: turns a parsed `.solstice/workflow.kdl` into typed jobs and
//! steps, rejecting every unknown word, wrong type, missing piece and value
//! no program could be given, each at its line:col; describes the plan; and
//! selects the job to run (`run` runs it).
//!
//! The file is hostile input as far as this module cares: it is refused
//! above `MAX_BYTES`, checking it takes time and memory linear in its size
//! however many errors it holds, and only the first `SHOWN` errors are
//! printed, each quoting a window of its line.
//!
//! Names in messages and in the plan are quoted as written (`"name"`), never
//! with `{:?}`: a name may be a secret's value, which the log masker finds as
//! written but not as Rust escapes it (`\u{a0}`).

use crate::config::secrets::Secrets;
use crate::config::{is_env_name, parse_duration, MAX_ENV_STRING};
use crate::error::{Error, Result};
use crate::plan::kdl::{self, Entry, Node, Value};
use std::fmt::{self, Write};
use std::path::Path;
use std::time::Duration;

/// The largest workflow file the runner reads (documented in
/// docs/workflow.md). Real workflows are a few kilobytes; the limit bounds
/// what a hostile one costs.
pub const MAX_BYTES: usize = 1 << 20;

/// How many errors are printed in full; the rest are only counted.
const SHOWN: usize = 50;

/// The default `shell`.
pub const DEFAULT_SHELL: &str = "/bin/sh -e";

/// A whole workflow file.
#[derive(Debug, Default)]
pub struct Workflow {
    /// The top-level `env`, for every job.
    pub env: Vec<(String, String)>,
    pub jobs: Vec<Job>,
    /// What the checkout should fetch beyond the commit (issue 17).
    pub checkout: Option<CheckoutPlan>,
}

/// The top-level `checkout` node: what a build needs of the repository
/// beyond the one commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckoutPlan {
    /// Commits of history to fetch; 0 for all of it.
    pub fetch_depth: u32,
    /// Fetch every tag.
    pub tags: bool,
    pub submodules: Submodules,
    /// Run `git lfs pull` after the checkout.
    pub lfs: bool,
}

/// Which submodules the checkout initialises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Submodules {
    /// One level when `.gitmodules` exists: the default.
    #[default]
    One,
    Recursive,
    Off,
}

impl CheckoutPlan {
    /// What the checkout does without a `checkout` node.
    pub const DEFAULT: CheckoutPlan = CheckoutPlan {
        fetch_depth: 1,
        tags: false,
        submodules: Submodules::One,
        lfs: false,
    };
}

/// When a declared artifact is kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Keep {
    #[default]
    Success,
    Failure,
    Always,
}

/// `artifact "NAME" when="..." { path "GLOB" ... }` in a job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Artifact {
    pub name: String,
    pub when: Keep,
    pub paths: Vec<String>,
}

/// `cache "NAME" { path "DIR" ...; key-file "FILE" ... }` in a job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cache {
    pub name: String,
    pub paths: Vec<String>,
    pub key_files: Vec<String>,
}

/// The artifact made of what steps list in `SOLSTICE_ARTIFACTS`; a
/// declared artifact cannot take its name.
pub const LISTED_ARTIFACTS: &str = "artifacts";

#[derive(Debug, Default)]
pub struct Job {
    pub name: String,
    /// A label for the orchestrator; the runner only reports it.
    pub runs_on: Option<String>,
    pub timeout: Option<Duration>,
    pub env: Vec<(String, String)>,
    /// Secrets every step of the job gets, by name.
    pub secrets: Vec<String>,
    pub steps: Vec<Step>,
    pub artifacts: Vec<Artifact>,
    pub caches: Vec<Cache>,
}

#[derive(Debug, Default)]
pub struct Step {
    pub name: String,
    /// The script.
    pub run: String,
    /// Relative to the workspace; `None` is the workspace itself.
    pub workdir: Option<String>,
    /// `None` is `DEFAULT_SHELL`.
    pub shell: Option<String>,
    pub when: When,
    pub timeout: Option<Duration>,
    pub continue_on_error: bool,
    pub env: Vec<(String, String)>,
    /// Secrets this step gets, by name, besides its job's.
    pub secrets: Vec<String>,
}

/// A step's `if`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum When {
    #[default]
    Success,
    Failure,
    Always,
    /// A cleanup step for a cancelled job.
    Cancelled,
}

impl Keep {
    /// The word `when=` takes.
    pub fn name(self) -> &'static str {
        match self {
            Keep::Success => "success",
            Keep::Failure => "failure",
            Keep::Always => "always",
        }
    }
}

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

impl Step {
    /// The shell command line, the default when the step names none.
    pub fn shell(&self) -> &str {
        self.shell.as_deref().unwrap_or(DEFAULT_SHELL)
    }
}

impl Workflow {
    /// Whether any job or step names a secret.
    pub fn names_secrets(&self) -> bool {
        self.jobs
            .iter()
            .any(|j| !j.secrets.is_empty() || j.steps.iter().any(|s| !s.secrets.is_empty()))
    }
}

/// What each place takes, for the checker and for its messages.
const JOB_PROPS: &[&str] = &["runs-on", "timeout"];
const STEP_PROPS: &[&str] = &[
    "run",
    "workdir",
    "timeout",
    "continue-on-error",
    "if",
    "shell",
];
const TOP_NODES: &[&str] = &["checkout", "env", "job", "step"];
const JOB_NODES: &[&str] = &["artifact", "cache", "env", "secrets", "step"];
const CHECKOUT_PROPS: &[&str] = &["fetch-depth", "tags", "submodules", "lfs"];
const STEP_NODES: &[&str] = &["env", "secrets", "run"];

/// A node's first argument.
fn arg(node: &Node) -> Option<&Entry> {
    node.entries.iter().find(|e| e.key.is_none())
}

/// An error found, before its line is quoted.
struct Found {
    line: usize,
    col: usize,
    msg: String,
}

/// Collects every problem in a file instead of stopping at the first, so
/// `check` can list them all.
struct Checker<'a> {
    /// The first `SHOWN` errors in file order.
    shown: Vec<Found>,
    /// Every error, shown or not.
    count: usize,
    /// The secrets file, when there is one to check secret names against.
    secrets: &'a Secrets,
}

impl Checker<'_> {
    /// Records an error. Only the first `SHOWN` in file order are kept, and
    /// a message is formatted only when it is kept, so a file of a million
    /// errors costs no more memory than one of fifty. Takes the message
    /// unformatted for that reason, and so that the one `format` is here.
    fn err(&mut self, line: usize, col: usize, msg: fmt::Arguments) {
        self.count += 1;
        // After the errors already found at the same place.
        let at = self
            .shown
            .partition_point(|f| (f.line, f.col) <= (line, col));
        if at >= SHOWN {
            return;
        }
        if self.shown.len() >= SHOWN {
            self.shown.pop();
        }
        let found = Found {
            line,
            col,
            msg: fmt::format(msg),
        };
        // `min` shows the compiler that `insert` cannot panic.
        self.shown.insert(at.min(self.shown.len()), found);
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

    /// Reports a child node that has no place in `place`.
    fn unknown(&mut self, node: &Node, place: &str, allowed: &[&str]) {
        let name = &node.name;
        self.err(
            node.line,
            node.col,
            format_args!(
                "unknown node `{name}` {place} (allowed: {}){}",
                Allowed(allowed),
                Suggest(name, allowed)
            ),
        );
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

    /// Refuses text that no program could be given: a NUL ends a C string,
    /// and Linux passes at most `MAX_ENV_STRING` bytes, NUL included, in one
    /// argument or environment string. `var` is the environment variable the
    /// text becomes, or "" for an argument. Whether it passed.
    fn passable(&mut self, e: &Entry, what: fmt::Arguments, var: &str, text: &str) -> bool {
        let kind = if var.is_empty() {
            "argument"
        } else {
            "environment string"
        };
        if text.contains('\0') {
            self.err(
                e.line,
                e.col,
                format_args!(
                    "{what} contains a NUL byte, which no program can be given in an {kind}"
                ),
            );
            return false;
        }
        let len = match var {
            "" => text.len() + 1,
            _ => var.len() + text.len() + 2,
        };
        if len > MAX_ENV_STRING {
            let (var, eq) = if var.is_empty() {
                ("it", "")
            } else {
                (var, "=...")
            };
            self.err(
                e.line,
                e.col,
                format_args!(
                    "{what} is too long: {var}{eq} takes {len} bytes with its NUL, and Linux passes at most {MAX_ENV_STRING} (128 KiB) in one {kind}"
                ),
            );
            return false;
        }
        true
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

    /// Refuses properties a node does not take (`allowed`) and arguments
    /// past the first `args`.
    fn only(&mut self, node: &Node, allowed: &[&str], args: usize) {
        let mut seen_args = 0;
        for e in &node.entries {
            match &e.key {
                Some(k) if !allowed.contains(&k.as_str()) => {
                    self.err(
                        e.line,
                        e.col,
                        format_args!(
                            "unknown property `{k}` on `{}` (allowed: {}){}",
                            node.name,
                            Allowed(allowed),
                            Suggest(k, allowed)
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
        self.only(node, &[], 0);
        for var in &node.children {
            let name = &var.name;
            if !is_env_name(name) {
                self.err(
                    var.line,
                    var.col,
                    format_args!("`{name}` is not a valid environment variable name"),
                );
            }
            self.only(var, &[], 1);
            self.leaf(var);
            match arg(var) {
                Some(e) => {
                    if let Some(v) = self.string(e, "the value of ", name) {
                        self.passable(e, format_args!("the value of {name}"), name, &v);
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
        self.only(node, &[], usize::MAX);
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

    /// The top-level `checkout` node.
    fn checkout(&mut self, node: &Node) -> CheckoutPlan {
        self.only(node, CHECKOUT_PROPS, 0);
        self.leaf(node);
        let mut plan = CheckoutPlan::DEFAULT;
        for e in &node.entries {
            let Some(key) = e.key.as_deref() else {
                continue;
            };
            match (key, &e.value) {
                ("fetch-depth", Value::Number(kdl::Number::Int(n))) => match n.parse() {
                    Ok(d) => plan.fetch_depth = d,
                    Err(_) => self.err(
                        e.line,
                        e.col,
                        format_args!(
                            "fetch-depth must be a count of commits (0 for all history), not {n}"
                        ),
                    ),
                },
                ("tags", Value::Bool(b)) => plan.tags = *b,
                ("lfs", Value::Bool(b)) => plan.lfs = *b,
                ("submodules", Value::Bool(true)) => plan.submodules = Submodules::One,
                ("submodules", Value::Bool(false)) => plan.submodules = Submodules::Off,
                ("submodules", Value::String(s)) if s == "recursive" => {
                    plan.submodules = Submodules::Recursive
                }
                ("fetch-depth", v) => self.err(
                    e.line,
                    e.col,
                    format_args!(
                        "fetch-depth must be a count of commits (0 for all history), not a {}",
                        v.type_name()
                    ),
                ),
                ("submodules", _) => self.err(
                    e.line,
                    e.col,
                    format_args!("submodules must be #true, #false or \"recursive\""),
                ),
                ("tags" | "lfs", v) => self.err(
                    e.line,
                    e.col,
                    format_args!("{key} must be #true or #false, not a {}", v.type_name()),
                ),
                _ => {}
            }
        }
        plan
    }

    /// The name of an artifact or a cache: it goes into a URL and a file
    /// name, so letters, digits, `.`, `_` and `-` only.
    fn file_name(&mut self, node: &Node, what: &str) -> String {
        let Some(e) = arg(node) else {
            self.err(
                node.line,
                node.col,
                format_args!("{what} needs a name: {what} \"NAME\" {{ path \"...\" }}"),
            );
            return String::new();
        };
        let name = self.string(e, what, " name").unwrap_or_default();
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty() || !name.chars().all(ok) || name.starts_with('.') {
            self.err(
                e.line,
                e.col,
                format_args!("{what} name \"{name}\" must be letters, digits, `.`, `_` and `-`, not starting with `.`"),
            );
        }
        name
    }

    /// The `path` (or `key-file`) children of an artifact or cache node: a
    /// relative path that stays inside the workspace; `home` also allows
    /// `~/` for the home directory.
    fn paths(&mut self, node: &Node, child: &str, home: bool, out: &mut Vec<String>) {
        for c in node.children.iter().filter(|c| c.name == child) {
            self.only(c, &[], usize::MAX);
            self.leaf(c);
            for e in c.entries.iter().filter(|e| e.key.is_none()) {
                let Some(p) = self.string(e, child, "") else {
                    continue;
                };
                let rel = if home {
                    p.strip_prefix("~/").unwrap_or(&p)
                } else {
                    &p
                };
                if rel.is_empty()
                    || rel.starts_with('/')
                    || rel.split('/').any(|c| c == "..")
                    || p.contains('\0')
                {
                    let also = if home { " (or start with ~/)" } else { "" };
                    self.err(
                        e.line,
                        e.col,
                        format_args!("{child} \"{p}\" must be a relative path inside the workspace{also}, without `..`"),
                    );
                    continue;
                }
                out.push(p);
            }
        }
    }

    /// `artifact "NAME" when="..." { path "GLOB" ... }`.
    fn artifact(&mut self, node: &Node) -> Artifact {
        self.only(node, &["when"], 1);
        let mut a = Artifact {
            name: self.file_name(node, "artifact"),
            ..Artifact::default()
        };
        if a.name == LISTED_ARTIFACTS {
            self.err(
                node.line,
                node.col,
                format_args!("the artifact name \"{LISTED_ARTIFACTS}\" is the one steps fill through SOLSTICE_ARTIFACTS; choose another"),
            );
        }
        for e in &node.entries {
            if e.key.as_deref() == Some("when") {
                match e.value.as_str() {
                    Some("success") => a.when = Keep::Success,
                    Some("failure") => a.when = Keep::Failure,
                    Some("always") => a.when = Keep::Always,
                    _ => self.err(
                        e.line,
                        e.col,
                        format_args!("when must be \"success\", \"failure\" or \"always\""),
                    ),
                }
            }
        }
        for c in &node.children {
            if c.name != "path" {
                self.unknown(c, "in artifact", &["path"]);
            }
        }
        self.paths(node, "path", false, &mut a.paths);
        if a.paths.is_empty() {
            self.err(
                node.line,
                node.col,
                format_args!("artifact \"{}\" has no path", a.name),
            );
        }
        a
    }

    /// `cache "NAME" { path "DIR" ...; key-file "FILE" ... }`.
    fn cache(&mut self, node: &Node) -> Cache {
        self.only(node, &[], 1);
        let mut c = Cache {
            name: self.file_name(node, "cache"),
            ..Cache::default()
        };
        for child in &node.children {
            if child.name != "path" && child.name != "key-file" {
                self.unknown(child, "in cache", &["key-file", "path"]);
            }
        }
        self.paths(node, "path", true, &mut c.paths);
        self.paths(node, "key-file", false, &mut c.key_files);
        if c.paths.is_empty() {
            self.err(
                node.line,
                node.col,
                format_args!("cache \"{}\" has no path", c.name),
            );
        }
        c
    }

    /// The document's nodes as a workflow.
    fn workflow(&mut self, nodes: &[Node]) -> Workflow {
        let mut wf = Workflow::default();
        let mut top_steps = Vec::new();
        // Where each job's name is, for a duplicate's error.
        let mut named_at = Vec::new();
        for node in nodes {
            match node.name.as_str() {
                "env" => self.env(node, &mut wf.env),
                "checkout" => {
                    if wf.checkout.is_some() {
                        self.err(
                            node.line,
                            node.col,
                            format_args!("a second `checkout` node"),
                        );
                    }
                    wf.checkout = Some(self.checkout(node));
                }
                "job" => {
                    wf.jobs.push(self.job(node));
                    named_at.push(arg(node).map_or((node.line, node.col), |e| (e.line, e.col)));
                }
                "step" => top_steps.push(node),
                _ => self.unknown(node, "at the top level", TOP_NODES),
            }
        }
        let names: Vec<&str> = wf.jobs.iter().map(|j| j.name.as_str()).collect();
        self.repeats(&names, &named_at, "job name");
        if let (Some(at), Some(job)) = (top_steps.first(), wf.jobs.first()) {
            self.err(
                at.line,
                at.col,
                format_args!(
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
                let step = self.step(node, job.steps.len() + 1);
                job.steps.push(step);
            }
            wf.jobs.push(job);
        }
        // A file of only a `checkout` node serves a job.sh.
        if wf.jobs.is_empty() && wf.checkout.is_none() && self.count == 0 {
            self.err(
                1,
                1,
                format_args!(
                    "the workflow has no job: add job \"NAME\" {{ step {{ run \"...\" }} }}"
                ),
            );
        }
        last_of_each(&mut wf.env);
        wf
    }

    /// Reports each name in `names` that an earlier one repeats, at its
    /// place in `at`: sorted by name, then position, repeats sit next to
    /// each other and are found in one pass.
    fn repeats(&mut self, names: &[&str], at: &[(usize, usize)], what: &str) {
        let mut named: Vec<(&str, usize)> = names.iter().copied().zip(0..).collect();
        crate::files::heapsort(&mut named);
        for pair in named.windows(2) {
            if let [(first, _), (name, i)] = pair {
                if !name.is_empty() && first == name {
                    let (line, col) = at.get(*i).copied().unwrap_or((1, 1));
                    self.err(line, col, format_args!("duplicate {what} \"{name}\""));
                }
            }
        }
    }

    fn job(&mut self, node: &Node) -> Job {
        self.only(node, JOB_PROPS, 1);
        let mut job = Job::default();
        match arg(node) {
            Some(e) => {
                job.name = self.string(e, "a job name", "").unwrap_or_default();
                if e.value.as_str().is_some_and(|s| s.trim().is_empty()) {
                    self.err(e.line, e.col, format_args!("a job name cannot be empty"));
                }
                self.passable(e, format_args!("the job name"), "SOLSTICE_JOB", &job.name);
            }
            None => self.err(
                node.line,
                node.col,
                format_args!("a job needs a name: job \"build\" {{ ... }}"),
            ),
        }
        for e in &node.entries {
            match e.key.as_deref() {
                Some("runs-on") => job.runs_on = self.string(e, "runs-on", ""),
                Some("timeout") => job.timeout = self.duration(e),
                _ => {}
            }
        }
        // Where each artifact and cache is, for a repeated name's error.
        let (mut artifacts_at, mut caches_at) = (Vec::new(), Vec::new());
        for child in &node.children {
            match child.name.as_str() {
                "env" => self.env(child, &mut job.env),
                "secrets" => self.secrets(child, &mut job.secrets),
                "step" => {
                    let step = self.step(child, job.steps.len() + 1);
                    job.steps.push(step);
                }
                "artifact" => {
                    job.artifacts.push(self.artifact(child));
                    artifacts_at.push((child.line, child.col));
                }
                "cache" => {
                    job.caches.push(self.cache(child));
                    caches_at.push((child.line, child.col));
                }
                _ => self.unknown(child, "in job", JOB_NODES),
            }
        }
        let names: Vec<&str> = job.artifacts.iter().map(|a| a.name.as_str()).collect();
        self.repeats(&names, &artifacts_at, "artifact name");
        let names: Vec<&str> = job.caches.iter().map(|c| c.name.as_str()).collect();
        self.repeats(&names, &caches_at, "cache name");
        if job.steps.is_empty() {
            self.err(
                node.line,
                node.col,
                format_args!("job \"{}\" has no steps", job.name),
            );
        }
        last_of_each(&mut job.env);
        job
    }

    /// A step; `n` is its position in its job.
    fn step(&mut self, node: &Node, n: usize) -> Step {
        self.only(node, STEP_PROPS, 1);
        let name = match arg(node) {
            Some(e) => {
                let name = self.string(e, "a step name", "").unwrap_or_default();
                self.passable(e, format_args!("the step name"), "SOLSTICE_STEP", &name);
                name
            }
            None => format!("step {n}"),
        };
        let mut step = Step {
            name,
            ..Step::default()
        };
        let mut runs = 0;
        for e in &node.entries {
            let Some(key) = e.key.as_deref() else {
                continue;
            };
            match key {
                "timeout" => step.timeout = self.duration(e),
                "continue-on-error" => match e.value {
                    Value::Bool(b) => step.continue_on_error = b,
                    ref other => self.err(
                        e.line,
                        e.col,
                        format_args!(
                            "continue-on-error must be #true or #false, not a {}",
                            other.type_name()
                        ),
                    ),
                },
                "run" => {
                    runs += 1;
                    if let Some(s) = self.string(e, "run", "") {
                        step.run = s;
                    }
                }
                "workdir" => {
                    let Some(s) = self.string(e, "workdir", "") else {
                        continue;
                    };
                    // `Path::is_absolute` on Unix, without the parsing.
                    if s.starts_with('/') || escapes(&s) {
                        self.err(
                            e.line,
                            e.col,
                            format_args!(
                                "workdir \"{s}\" must be a relative path inside the workspace"
                            ),
                        );
                    } else if s.contains('\0') {
                        self.err(
                            e.line,
                            e.col,
                            format_args!("workdir contains a NUL byte, which no path can hold"),
                        );
                    }
                    step.workdir = Some(s);
                }
                "if" => {
                    let Some(s) = self.string(e, "if", "") else {
                        continue;
                    };
                    match s.as_str() {
                        "success" => step.when = When::Success,
                        "failure" => step.when = When::Failure,
                        "always" => step.when = When::Always,
                        "cancelled" => step.when = When::Cancelled,
                        _ => self.err(
                            e.line,
                            e.col,
                            format_args!("if=\"{s}\" is not a condition: use \"success\", \"failure\", \"always\" or \"cancelled\""),
                        ),
                    }
                }
                "shell" => {
                    let Some(s) = self.string(e, "shell", "") else {
                        continue;
                    };
                    if s.trim().is_empty() {
                        self.err(e.line, e.col, format_args!("shell is empty"));
                    }
                    // Each word is one argument of the program.
                    for word in s.split_whitespace() {
                        if !self.passable(e, format_args!("a word of shell"), "", word) {
                            break;
                        }
                    }
                    step.shell = Some(s);
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
                    match arg(child) {
                        Some(e) => {
                            if let Some(s) = self.string(e, "run", "") {
                                step.run = s;
                            }
                        }
                        None => self.err(
                            child.line,
                            child.col,
                            format_args!("`run` needs the script as a string"),
                        ),
                    }
                }
                _ => self.unknown(child, "in step", STEP_NODES),
            }
        }
        if runs != 1 {
            let many = if runs == 0 { "no" } else { "more than one" };
            self.err(
                node.line,
                node.col,
                format_args!("step \"{}\" has {many} `run`", step.name),
            );
        }
        last_of_each(&mut step.env);
        step
    }
}

/// A list of allowed names as "a, b, c", or "none".
struct Allowed<'a>(&'a [&'a str]);

impl fmt::Display for Allowed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// "; did you mean `name`?" when one of the allowed names is close enough
/// to the unknown one to be what was meant; else nothing. Worked out only
/// when the message is formatted, that is for the errors shown.
struct Suggest<'a>(&'a str, &'a [&'a str]);

impl fmt::Display for Suggest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let best = self
            .1
            .iter()
            .filter_map(|&name| near(self.0, name).map(|d| (d, name)))
            .min_by_key(|&(d, _)| d);
        match best {
            Some((_, name)) => write!(f, "; did you mean `{name}`?"),
            None => Ok(()),
        }
    }
}

/// The edit distance from `typed` to `name` (a byte inserted, deleted or
/// replaced, or two neighbours swapped; ASCII case ignored) when it is
/// small enough for `name` to be what was meant: at most a third of the
/// longer one's length, and at least one edit.
fn near(typed: &str, name: &str) -> Option<usize> {
    let (a, b) = (typed.as_bytes(), name.as_bytes());
    let limit = (a.len().max(b.len()) / 3).max(1);
    // Also keeps a long word from costing more than a short one.
    if a.len().abs_diff(b.len()) > limit {
        return None;
    }
    let at = |row: &[usize], k: usize| row.get(k).copied().unwrap_or(usize::MAX / 2);
    let same = |i: usize, j: usize| match (a.get(i), b.get(j)) {
        (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
        _ => false,
    };
    // Distances from each prefix of `a` to each prefix of `b`: the row two
    // back (for swaps), the last one, and the one being filled.
    let mut before: Vec<usize> = Vec::new();
    let mut last: Vec<usize> = (0..=b.len()).collect();
    for i in 0..a.len() {
        let mut row = vec![i + 1];
        for j in 0..b.len() {
            let mut d = (at(&last, j) + usize::from(!same(i, j)))
                .min(at(&last, j + 1) + 1)
                .min(at(&row, j) + 1);
            if i > 0 && j > 0 && same(i - 1, j) && same(i, j - 1) {
                d = d.min(at(&before, j - 1) + 1);
            }
            row.push(d);
        }
        before = std::mem::replace(&mut last, row);
    }
    let d = at(&last, b.len());
    (d <= limit).then_some(d)
}

/// Keeps the last value of each variable repeated in one scope, at the
/// place of that last one.
fn last_of_each(env: &mut Vec<(String, String)>) {
    if env.len() < 2 {
        return;
    }
    let mut named: Vec<(&str, usize)> = env
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (k.as_str(), i))
        .collect();
    // Repeats next to each other, the first of them first.
    crate::files::heapsort(&mut named);
    let mut keep = vec![true; named.len()];
    for pair in named.windows(2) {
        if let [(a, first), (b, _)] = pair {
            if a == b {
                if let Some(k) = keep.get_mut(*first) {
                    *k = false;
                }
            }
        }
    }
    let mut keep = keep.into_iter();
    env.retain(|_| keep.next().unwrap_or(true));
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

/// How much of a line is kept around an error's column for its quote: more
/// than any window `Error::with_source` shows of a long line, so the quote
/// of this part of the line is the quote of the whole line.
const MARGIN: usize = 1024;

/// The errors, each with its line quoted from `src` (KDL's line breaks as
/// LF). `found` is in file order, so one pass over `src` reaches every
/// line, and each error quotes only a window of its line: however long the
/// lines, the work is the file's length and a window per error shown.
fn quote(path: &str, src: &str, found: Vec<Found>) -> Vec<Error> {
    let mut rest = src;
    let (mut line, mut col) = (1, 1);
    let mut out = Vec::with_capacity(found.len());
    for f in found {
        let from = f.col.saturating_sub(MARGIN).max(1);
        while (line, col) < (f.line, from) {
            let mut chars = rest.chars();
            match chars.next() {
                Some('\n') if line < f.line => (line, col) = (line + 1, 1),
                Some(c) if c != '\n' => col += 1,
                // The end of the file, or of the error's line.
                _ => break,
            }
            rest = chars.as_str();
        }
        let mut text = "";
        if line == f.line {
            let want = f.col.saturating_sub(col) + MARGIN + 1;
            let end = rest
                .char_indices()
                .enumerate()
                .find(|&(n, (_, c))| c == '\n' || n == want)
                .map_or(rest.len(), |(_, (i, _))| i);
            text = rest.get(..end).unwrap_or_default();
        }
        let quoted = Error::at(path, 1, f.col.saturating_sub(col) + 1, "").with_source(text);
        out.push(Error::at(path, f.line, f.col, f.msg + &quoted.msg));
    }
    out
}

/// Parses and validates a workflow file's text. The first `SHOWN` problems
/// are logged in file order, each quoting its line, and all are counted in
/// the error returned. Secret names are checked against `secrets` when its
/// file was found.
pub fn parse(path: &str, src: &str, secrets: &Secrets) -> Result<Workflow> {
    check_with(path, src, secrets, |c, nodes| c.workflow(nodes))
}

/// The `checkout` node of the workflow at `path`, checked, with everything
/// else in the file left alone: a repository with a `job.sh` asks for its
/// checkout here too, and its jobs are not used. The file must still be
/// KDL. `None` when there is no such node.
pub fn checkout_plan(path: &Path) -> Result<Option<CheckoutPlan>> {
    let src = read(path)?;
    let none = Secrets::default();
    let shown = path.display().to_string();
    check_with(&shown, &src, &none, |c, nodes| {
        let mut plan = None;
        for node in nodes.iter().filter(|n| n.name == "checkout") {
            if plan.is_some() {
                c.err(
                    node.line,
                    node.col,
                    format_args!("a second `checkout` node"),
                );
            }
            plan = Some(c.checkout(node));
        }
        plan
    })
}

/// Parses `src` and checks it with `f`; every problem is logged, in file
/// order, each quoting its line, and counted in the error returned.
fn check_with<T>(
    path: &str,
    src: &str,
    secrets: &Secrets,
    f: impl FnOnce(&mut Checker, &[Node]) -> T,
) -> Result<T> {
    if src.len() > MAX_BYTES {
        return Err(too_big(path));
    }
    let doc = match kdl::parse(path, src) {
        Ok(doc) => doc,
        // A syntax error stops the parse, so it is the only one.
        Err(e) => {
            error!("{e}");
            return Err(input(format_args!("{path}: 1 error in the workflow")));
        }
    };
    let mut c = Checker {
        shown: Vec::new(),
        count: 0,
        secrets,
    };
    let wf = f(&mut c, &doc.nodes);
    if c.count == 0 {
        return Ok(wf);
    }
    drop((doc, wf));
    let n = c.count;
    let more = n - c.shown.len();
    // Quoted with KDL's own line breaks, so line N is the parser's line N.
    for e in quote(path, &kdl::lf_only(src), c.shown) {
        error!("{e}");
    }
    if more > 0 {
        let s = if more == 1 { "" } else { "s" };
        error!("{path}: and {more} more error{s}, not shown");
    }
    let s = if n == 1 { "" } else { "s" };
    Err(input(format_args!("{path}: {n} error{s} in the workflow")))
}

fn too_big(path: &str) -> Error {
    input(format_args!(
        "{path} is larger than a workflow file may be: at most 1 MiB ({MAX_BYTES} bytes)"
    ))
}

fn read(path: &Path) -> Result<String> {
    let shown = path.display();
    let bytes = match crate::files::read_capped(path, MAX_BYTES as u64) {
        Ok((_, true)) => return Err(too_big(&shown.to_string())),
        Ok((bytes, false)) => bytes,
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

fn describe_timeout(out: &mut String, timeout: Option<Duration>) {
    if let Some(t) = timeout {
        let _ = write!(out, " timeout={}s", t.as_secs());
    }
}

/// The plan in words: jobs, steps, their non-default settings and what each
/// runs.
pub fn describe(wf: &Workflow) -> String {
    let mut out = String::new();
    if let Some(c) = &wf.checkout {
        out.push_str(&describe_checkout(c));
        out.push('\n');
    }
    describe_env(&mut out, "", &wf.env, &[]);
    for job in &wf.jobs {
        let _ = write!(out, "job \"{}\"", job.name);
        if let Some(r) = &job.runs_on {
            let _ = write!(out, " runs-on=\"{r}\"");
        }
        describe_timeout(&mut out, job.timeout);
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
            describe_timeout(&mut out, s.timeout);
            if let Some(w) = &s.workdir {
                let _ = write!(out, " workdir=\"{w}\"");
            }
            if let Some(sh) = &s.shell {
                let _ = write!(out, " shell=\"{sh}\"");
            }
            out.push('\n');
            describe_env(&mut out, "      ", &s.env, &s.secrets);
            for line in s.run.lines() {
                let _ = writeln!(out, "      | {line}");
            }
        }
        for a in &job.artifacts {
            let _ = writeln!(
                out,
                "  artifact \"{}\" when=\"{}\": {}",
                a.name,
                a.when.name(),
                a.paths.join(", ")
            );
        }
        for c in &job.caches {
            let _ = write!(out, "  cache \"{}\": {}", c.name, c.paths.join(", "));
            if !c.key_files.is_empty() {
                let _ = write!(out, " (keyed by {})", c.key_files.join(", "));
            }
            out.push('\n');
        }
    }
    out
}

/// The checkout plan in words, for `check` and `--dry-run`.
pub fn describe_checkout(c: &CheckoutPlan) -> String {
    let depth = match c.fetch_depth {
        0 => "all history".to_string(),
        1 => "the commit alone".to_string(),
        n => format!("{n} commits of history"),
    };
    let submodules = match c.submodules {
        Submodules::One => "submodules one level deep (when .gitmodules exists)",
        Submodules::Recursive => "submodules recursively (when .gitmodules exists)",
        Submodules::Off => "no submodules",
    };
    let mut out = format!("checkout: {depth}");
    if c.tags {
        out.push_str(", every tag");
    }
    out.push_str(", ");
    out.push_str(submodules);
    if c.lfs {
        out.push_str(", then git lfs pull");
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
    Err(match (wanted, wf.jobs.as_slice()) {
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
fn input(msg: fmt::Arguments) -> Error {
    Error::input(fmt::format(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quoting a window of a line must print what quoting the whole line
    /// prints, wherever the column and however long the line.
    #[test]
    fn a_window_of_the_line_quotes_as_the_whole_line() {
        let long: String = (0..5000)
            .map(|i| match i % 7 {
                0 => '\t',
                1 => 'é',
                _ => char::from(b'a' + (i % 26) as u8),
            })
            .collect();
        let src = format!("first\n{long}\nshort\n{long}");
        let mut found = Vec::new();
        let mut want = Vec::new();
        for (line, col) in [
            (1, 1),
            (1, 6),
            (2, 1),
            (2, 60),
            (2, 61),
            (2, 62),
            (2, 1024),
            (2, 1025),
            (2, 1026),
            (2, 3000),
            (2, 4940),
            (2, 5001),
            (3, 3),
            (4, 2500),
            (4, 5000),
        ] {
            found.push(Found {
                line,
                col,
                msg: format!("at {line}:{col}"),
            });
            want.push(Error::at("f", line, col, format!("at {line}:{col}")).with_source(&src));
        }
        assert_eq!(quote("f", &src, found), want);
    }

    #[test]
    fn near_names_are_suggested() {
        assert_eq!(
            Suggest("wrkdir", STEP_PROPS).to_string(),
            "; did you mean `workdir`?"
        );
        assert_eq!(
            Suggest("Timeout", STEP_PROPS).to_string(),
            "; did you mean `timeout`?"
        );
        assert_eq!(
            Suggest("shlel", STEP_PROPS).to_string(),
            "; did you mean `shell`?"
        );
        assert_eq!(
            Suggest("runs_on", JOB_PROPS).to_string(),
            "; did you mean `runs-on`?"
        );
        assert_eq!(
            Suggest("steps", JOB_NODES).to_string(),
            "; did you mean `step`?"
        );
        assert_eq!(Suggest("script", STEP_NODES).to_string(), "");
        assert_eq!(Suggest("n", TOP_NODES).to_string(), "");
        assert_eq!(Suggest(&"x".repeat(100_000), STEP_PROPS).to_string(), "");
    }

    #[test]
    fn the_last_of_a_repeated_variable_stays_in_its_place() {
        let mut env: Vec<(String, String)> = [("A", "1"), ("B", "2"), ("A", "3"), ("C", "4")]
            .iter()
            .map(|&(k, v)| (k.to_string(), v.to_string()))
            .collect();
        last_of_each(&mut env);
        let got: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, [("B", "2"), ("A", "3"), ("C", "4")]);
    }
}
