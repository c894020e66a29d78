//! The job context: every setting the runner has, typed and resolved once
//! from command-line flags, the environment, the job file and defaults (in
//! that order of precedence), each with where it came from, and validated
//! before anything touches the disk or the network. Everything downstream
//! reads `Config`'s fields; nothing looks a setting up by name.

pub mod args;
pub mod secrets;
pub mod url;
pub mod yaml;

use crate::error::{Error, Result};
use args::Flags;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use url::{Endpoint, Repo, Transport};

pub const DEFAULT_JOB_FILE: &str = "/etc/solstice/job.yaml";
pub const DEFAULT_WORKDIR: &str = "/root/work";

/// The longest string Linux passes to a program in its environment or
/// arguments (MAX_ARG_STRLEN, 32 pages), terminating NUL included: a longer
/// `NAME=value` makes every exec fail with "Argument list too long".
pub const MAX_ENV_STRING: usize = 128 * 1024;

/// The runner's own credentials, which it may find in its environment: no
/// process it starts is given them (a job could read them from there, or
/// have replaced a tool the runner runs after it).
pub const CREDENTIALS: [&str; 2] = ["SOLSTICE_JOB_TOKEN", "SOLSTICE_GIT_TOKEN"];

/// The environment a process the runner starts begins with: the runner's
/// own, read through std (which takes its lock), without the credentials
/// and without the variables named in `also`. Left out here rather than
/// removed from a command afterwards, so no command ever holds them.
pub fn child_env(also: &[&str]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut env = Vec::new();
    for (k, v) in std::env::vars_os() {
        if !CREDENTIALS.iter().chain(also).any(|c| k == *c) {
            env.push((k, v));
        }
    }
    env
}

/// Where a value came from, for `--dry-run` and error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    File {
        path: String,
        line: usize,
        col: usize,
    },
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Source::Flag(name) => write!(f, "flag --{name}"),
            Source::Env(name) => write!(f, "environment {name}"),
            Source::File { path, line, col } => write!(f, "{path}:{line}:{col}"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// A resolved setting and where it came from.
#[derive(Clone, Debug)]
pub struct Set<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Set<T> {
    fn default(value: T) -> Set<T> {
        Set {
            value,
            source: Source::Default,
        }
    }
}

/// Every name a setting goes by: its job file key, its environment variable
/// and its flag (the first and last are optional).
struct Names {
    key: Option<&'static str>,
    env: &'static str,
    flag: Option<&'static str>,
}

const fn names(key: &'static str, env: &'static str, flag: Option<&'static str>) -> Names {
    Names {
        key: if key.is_empty() { None } else { Some(key) },
        env,
        flag,
    }
}

const REPO_URL: Names = names("repo_url", "SOLSTICE_REPO_URL", Some("repo-url"));
const COMMIT: Names = names("commit_sha", "SOLSTICE_COMMIT_SHA", Some("commit"));
const WORKDIR: Names = names("workdir", "SOLSTICE_WORKDIR", Some("workdir"));
const JOB: Names = names("job", "SOLSTICE_JOB", Some("job"));
const TIMEOUT: Names = names("timeout", "SOLSTICE_JOB_TIMEOUT", None);
const ORCHESTRATOR: Names = names("orchestrator_url", "SOLSTICE_ORCHESTRATOR_URL", None);
const JOB_ID: Names = names("job_id", "SOLSTICE_JOB_ID", None);
const TOKEN: Names = names("token", "SOLSTICE_JOB_TOKEN", None);
const SPOOL: Names = names("spool", "SOLSTICE_SPOOL", None);
const SECRETS_FILE: Names = names("secrets_file", "SOLSTICE_SECRETS_FILE", None);
const LOG: Names = names("", "SOLSTICE_LOG", None);
const GIT_RETRIES: Names = names("", "SOLSTICE_GIT_RETRIES", None);
const GIT_TIMEOUT: Names = names("", "SOLSTICE_GIT_TIMEOUT", None);
const GIT_TOKEN: Names = names("", "SOLSTICE_GIT_TOKEN", None);
const GIT_USER: Names = names("", "SOLSTICE_GIT_USER", None);
const CANCEL_GRACE: Names = names("", "SOLSTICE_CANCEL_GRACE", None);
const UPLOAD_DEADLINE: Names = names("", "SOLSTICE_UPLOAD_DEADLINE", None);
const HEARTBEAT: Names = names("", "SOLSTICE_HEARTBEAT", None);
const CLEANUP_TIMEOUT: Names = names("", "SOLSTICE_CLEANUP_TIMEOUT", None);
const LOG_LIMIT: Names = names("", "SOLSTICE_LOG_LIMIT", None);
const ARTIFACT_LIMIT: Names = names("", "SOLSTICE_ARTIFACT_LIMIT", None);
const STEP_DEBUG: Names = names("", "SOLSTICE_STEP_DEBUG", None);

/// The keys a job file may hold. Any other draws a warning, never an error:
/// the orchestrator may be newer than the runner.
const FILE_KEYS: [&Names; 10] = [
    &REPO_URL,
    &COMMIT,
    &WORKDIR,
    &JOB,
    &TIMEOUT,
    &ORCHESTRATOR,
    &JOB_ID,
    &TOKEN,
    &SPOOL,
    &SECRETS_FILE,
];

/// The log level `SOLSTICE_LOG` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Everything the runner was told to do.
pub struct Config {
    pub job_file: Set<PathBuf>,
    pub job_file_found: bool,
    pub repo: Set<Repo>,
    pub commit: Set<String>,
    pub workdir: Set<PathBuf>,
    /// The workflow job to run; `None`: the only one.
    pub job: Set<Option<String>>,
    /// The job's time limit, counted from the end of the checkout.
    pub timeout: Set<Option<Duration>>,
    pub orchestrator: Set<Option<Endpoint>>,
    pub job_id: Set<Option<String>>,
    /// The bearer token for the orchestrator (a secret), trimmed.
    pub token: Set<Option<String>>,
    /// The NDJSON spool; by default next to the workdir when there is an
    /// orchestrator to send it to.
    pub spool: Set<Option<PathBuf>>,
    pub secrets_file: Set<PathBuf>,
    pub log_level: Set<LogLevel>,
    /// Extra attempts after a transient network error.
    pub git_retries: Set<u32>,
    /// Per git command; `None`: no limit.
    pub git_timeout: Set<Option<Duration>>,
    /// The token for fetching over HTTPS (a secret).
    pub git_token: Set<Option<String>>,
    pub git_user: Set<String>,
    /// Between SIGTERM and SIGKILL.
    pub cancel_grace: Set<Duration>,
    /// How long the end of the job waits for the orchestrator.
    pub upload_deadline: Set<Duration>,
    /// A status is sent when nothing was for this long; `None`: never.
    pub heartbeat: Set<Option<Duration>>,
    /// The time all cleanup steps share after a cancel or a timeout.
    pub cleanup_timeout: Set<Duration>,
    /// Bytes of job output kept in the log; `None`: all of it.
    pub log_limit: Set<Option<u64>>,
    /// The largest artifact sent; `None`: no limit.
    pub artifact_limit: Set<Option<u64>>,
    /// `::debug::` lines are shown.
    pub step_debug: Set<bool>,
}

/// The job file, read once.
struct JobFile {
    path: Set<PathBuf>,
    entries: Vec<yaml::Entry>,
    found: bool,
}

/// Reads each setting from its sources in order of precedence.
struct Resolver<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    file: JobFile,
}

impl Resolver<'_> {
    /// The raw text of a setting and its source: the flag's value if given,
    /// else the environment's (empty counts as unset), else the job file's
    /// (a plain null counts as unset).
    // Not inlined: it is the bulk of every setting's resolution, and each
    // typed setting would otherwise carry its own copy.
    #[inline(never)]
    fn raw(&self, flag: Option<&String>, n: &Names) -> Option<(String, Source)> {
        if let (Some(name), Some(v)) = (n.flag, flag) {
            return Some((v.clone(), Source::Flag(name)));
        }
        if let Some(v) = (self.env)(n.env).filter(|v| !v.is_empty()) {
            return Some((v, Source::Env(n.env)));
        }
        let key = n.key?;
        let e = self.file.entries.iter().find(|e| {
            e.key == key
                && !(e.plain && matches!(e.value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
        })?;
        let source = Source::File {
            path: self.file.path.value.display().to_string(),
            line: e.line,
            col: e.value_col,
        };
        Some((e.value.clone(), source))
    }

    /// A setting parsed by `parse`, or `default` when unset. An error names
    /// the setting and its source.
    fn get<T>(
        &self,
        flag: Option<&String>,
        n: &Names,
        default: T,
        parse: fn(&str) -> std::result::Result<T, String>,
    ) -> Result<Set<T>> {
        match self.raw(flag, n) {
            None => Ok(Set::default(default)),
            Some((text, source)) => match parse(&text) {
                Ok(value) => Ok(Set { value, source }),
                Err(msg) => Err(bad_value(&source, n, &msg)),
            },
        }
    }

    fn text(&self, flag: Option<&String>, n: &Names) -> Set<Option<String>> {
        match self.raw(flag, n) {
            Some((text, source)) => Set {
                value: Some(text),
                source,
            },
            None => Set::default(None),
        }
    }

    /// The settings a run and `check` share: where the secrets are.
    fn secrets_file(&self) -> Result<Set<PathBuf>> {
        self.get(
            None,
            &SECRETS_FILE,
            PathBuf::from(secrets::DEFAULT_FILE),
            |t| no_control(t).map(PathBuf::from),
        )
    }
}

/// An error about a value, naming the setting and where the value came from.
#[inline(never)]
fn bad_value(source: &Source, n: &Names, msg: &str) -> Error {
    let name = n.key.unwrap_or(n.env);
    match source {
        Source::File { path, line, col } => Error::at(path, *line, *col, format!("{name}: {msg}")),
        other => Error::input(format!("{name} (from {other}): {msg}")),
    }
}

fn no_control(text: &str) -> std::result::Result<&str, String> {
    if text.chars().any(char::is_control) {
        Err("contains a control character".into())
    } else {
        Ok(text)
    }
}

/// Finds and reads the job file: `--job-file`, else `SOLSTICE_JOB_FILE`, else
/// the default, which may be missing.
fn job_file(flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<JobFile> {
    let path = match (
        &flags.job_file,
        env("SOLSTICE_JOB_FILE").filter(|v| !v.is_empty()),
    ) {
        (Some(p), _) => Set {
            value: PathBuf::from(p),
            source: Source::Flag("job-file"),
        },
        (None, Some(p)) => Set {
            value: PathBuf::from(p),
            source: Source::Env("SOLSTICE_JOB_FILE"),
        },
        (None, None) => Set::default(PathBuf::from(DEFAULT_JOB_FILE)),
    };
    let shown = path.value.display().to_string();
    let (entries, found) = match std::fs::read(&path.value) {
        Ok(bytes) => (parse_job_file(&shown, &bytes)?, true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if path.source != Source::Default {
                debug!("job file {shown} not found; using flags and environment only");
            }
            (Vec::new(), false)
        }
        Err(e) => return Err(Error::input(format!("cannot read job file {shown}: {e}"))),
    };
    for e in &entries {
        if !FILE_KEYS.iter().any(|n| n.key == Some(e.key.as_str())) {
            warn!(
                "{shown}:{}:{}: unknown key {:?} ignored (this runner is {}; the orchestrator may be newer)",
                e.line,
                e.col,
                e.key,
                env!("CARGO_PKG_VERSION")
            );
        }
    }
    Ok(JobFile {
        path,
        entries,
        found,
    })
}

/// The job file's entries. It holds the job token, so an error never quotes
/// the line of a `token` key.
fn parse_job_file(shown: &str, bytes: &[u8]) -> Result<Vec<yaml::Entry>> {
    yaml::parse(shown, bytes).map_err(|e| {
        let line = e.loc.as_ref().map_or(0, |l| l.line);
        let src = String::from_utf8_lossy(bytes);
        let on_token = src
            .lines()
            .nth(line.saturating_sub(1))
            .map(|l| l.trim_start().trim_start_matches(['"', '\'']))
            .is_some_and(|l| l.starts_with("token"));
        if on_token {
            e.without_quote()
        } else {
            e
        }
    })
}

/// The environment the runner was started with.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Resolves every setting for a run from `flags`, `env` and the job file.
pub fn resolve(flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
    let r = Resolver {
        env,
        file: job_file(flags, env)?,
    };
    let required = |flag: Option<&String>, n: &Names| -> Result<(String, Source)> {
        r.raw(flag, n).ok_or_else(|| {
            let key = n.key.unwrap_or(n.env);
            let missing = if r.file.found { "" } else { ", which was not found" };
            Error::input(format!(
                "no {key} given: set {}, pass --{}, or write `{key}: ...` in the job file {}{missing}",
                n.env,
                n.flag.unwrap_or(""),
                r.file.path.value.display(),
            ))
        })
    };
    let (url, source) = required(flags.repo_url.as_ref(), &REPO_URL)?;
    let repo = match url::parse_repo_url(&url) {
        Ok(value) => Set { value, source },
        Err(msg) => return Err(bad_value(&source, &REPO_URL, &msg)),
    };
    let (sha, source) = required(flags.commit.as_ref(), &COMMIT)?;
    let commit = match check_commit(&sha) {
        Ok(value) => Set { value, source },
        Err(msg) => return Err(bad_value(&source, &COMMIT, &msg)),
    };
    let workdir = r.get(
        flags.workdir.as_ref(),
        &WORKDIR,
        PathBuf::from(DEFAULT_WORKDIR),
        absolute_path,
    )?;
    let job = r.text(flags.job.as_ref(), &JOB);
    let timeout = r.get(None, &TIMEOUT, None, optional_duration)?;
    let orchestrator = r.get(None, &ORCHESTRATOR, None, |t| {
        url::parse_url(t).map(Some).map_err(|e| e.msg.clone())
    })?;
    let job_id = r.text(None, &JOB_ID);
    let mut token = r.text(None, &TOKEN);
    // A token file written by a shell often ends in a newline.
    token.value = token.value.map(|t| t.trim().to_string());
    if orchestrator.value.is_some() {
        if job_id.value.is_none() {
            return Err(Error::input(
                "an orchestrator_url needs a job_id: set SOLSTICE_JOB_ID or `job_id:` in the job file",
            ));
        }
        if token.value.as_deref().unwrap_or("").is_empty() {
            warn!("no job token (SOLSTICE_JOB_TOKEN): the orchestrator will likely refuse the log");
        }
    }
    let mut spool = r.get(None, &SPOOL, None, |t| absolute_path(t).map(Some))?;
    if spool.value.is_none() && orchestrator.value.is_some() {
        // The spool is what the uploader sends, so an orchestrator needs one.
        let mut p = workdir.value.clone().into_os_string();
        p.push(".log.ndjson");
        spool.value = Some(PathBuf::from(p));
    }
    let secrets_file = r.secrets_file()?;
    let log_level = log_level(env);
    let git_retries = r.get(None, &GIT_RETRIES, 3, |t| {
        whole(t).map(|n| n.min(100) as u32)
    })?;
    let git_timeout = r.get(
        None,
        &GIT_TIMEOUT,
        Some(Duration::from_secs(600)),
        optional_seconds,
    )?;
    let git_token = r.text(None, &GIT_TOKEN);
    let git_user = r.get(None, &GIT_USER, "x-access-token".to_string(), |t| {
        no_control(t).map(str::to_string)
    })?;
    let cancel_grace = r.get(None, &CANCEL_GRACE, Duration::from_secs(10), seconds)?;
    let upload_deadline = r.get(None, &UPLOAD_DEADLINE, Duration::from_secs(30), seconds)?;
    let heartbeat = r.get(
        None,
        &HEARTBEAT,
        Some(Duration::from_secs(10)),
        optional_seconds,
    )?;
    let cleanup_timeout = r.get(None, &CLEANUP_TIMEOUT, Duration::from_secs(300), seconds)?;
    let log_limit = r.get(None, &LOG_LIMIT, Some(100 << 20), optional_bytes)?;
    let artifact_limit = r.get(None, &ARTIFACT_LIMIT, Some(1 << 30), optional_bytes)?;
    let step_debug = r.get(None, &STEP_DEBUG, false, parse_bool)?;
    Ok(Config {
        job_file_found: r.file.found,
        job_file: r.file.path,
        repo,
        commit,
        workdir,
        job,
        timeout,
        orchestrator,
        job_id,
        token,
        spool,
        secrets_file,
        log_level,
        git_retries,
        git_timeout,
        git_token,
        git_user,
        cancel_grace,
        upload_deadline,
        heartbeat,
        cleanup_timeout,
        log_limit,
        artifact_limit,
        step_debug,
    })
}

/// The log level `SOLSTICE_LOG` asks for. An unknown value is reported and
/// info is used: a typo must not silence the log at 3 a.m., nor fail the job.
pub fn log_level(env: &dyn Fn(&str) -> Option<String>) -> Set<LogLevel> {
    let r = Resolver {
        env,
        file: JobFile {
            path: Set::default(PathBuf::new()),
            entries: Vec::new(),
            found: false,
        },
    };
    r.get(None, &LOG, LogLevel::Info, parse_level)
        .unwrap_or_else(|e| {
            warn!("{e}; using info");
            Set::default(LogLevel::Info)
        })
}

/// The secrets file a run would read, resolved exactly as a run resolves it
/// (flags, environment, the job file's `secrets_file`): what `check` uses.
pub fn secrets_file(flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<Set<PathBuf>> {
    Resolver {
        env,
        file: job_file(flags, env)?,
    }
    .secrets_file()
}

impl Config {
    /// Every setting with its value and source, secrets hidden, one a line:
    /// what `--dry-run` prints.
    pub fn describe(&self) -> String {
        fn shown<T: ToString>(v: &Option<T>) -> String {
            v.as_ref()
                .map_or_else(|| "(unset)".to_string(), T::to_string)
        }
        fn secret(v: &Option<String>) -> String {
            match v {
                Some(_) => "(set, hidden)".into(),
                None => "(unset)".into(),
            }
        }
        fn secs(d: &Option<Duration>) -> String {
            d.map_or_else(|| "0 (none)".into(), duration_words)
        }
        let path = |p: &Option<PathBuf>| shown(&p.as_ref().map(|p| p.display().to_string()));
        let found = if self.job_file_found {
            ""
        } else {
            " (not found)"
        };
        let mut out = String::new();
        row(
            &mut out,
            "job_file",
            format!("{}{found}", self.job_file.value.display()),
            &self.job_file.source,
        );
        row(
            &mut out,
            "repo_url",
            self.repo.value.display.clone(),
            &self.repo.source,
        );
        row(
            &mut out,
            "commit_sha",
            self.commit.value.clone(),
            &self.commit.source,
        );
        row(
            &mut out,
            "workdir",
            self.workdir.value.display().to_string(),
            &self.workdir.source,
        );
        row(&mut out, "job", shown(&self.job.value), &self.job.source);
        let timeout = self.timeout.value.map(duration_words);
        row(&mut out, "timeout", shown(&timeout), &self.timeout.source);
        row(
            &mut out,
            "orchestrator_url",
            shown(&self.orchestrator.value),
            &self.orchestrator.source,
        );
        row(
            &mut out,
            "job_id",
            shown(&self.job_id.value),
            &self.job_id.source,
        );
        row(
            &mut out,
            "token",
            secret(&self.token.value),
            &self.token.source,
        );
        row(
            &mut out,
            "spool",
            path(&self.spool.value),
            &self.spool.source,
        );
        row(
            &mut out,
            "secrets_file",
            self.secrets_file.value.display().to_string(),
            &self.secrets_file.source,
        );
        row(
            &mut out,
            "log",
            self.log_level.value.name().into(),
            &self.log_level.source,
        );
        row(
            &mut out,
            "git_retries",
            self.git_retries.value.to_string(),
            &self.git_retries.source,
        );
        row(
            &mut out,
            "git_timeout",
            secs(&self.git_timeout.value),
            &self.git_timeout.source,
        );
        row(
            &mut out,
            "git_token",
            secret(&self.git_token.value),
            &self.git_token.source,
        );
        row(
            &mut out,
            "git_user",
            self.git_user.value.clone(),
            &self.git_user.source,
        );
        row(
            &mut out,
            "cancel_grace",
            duration_words(self.cancel_grace.value),
            &self.cancel_grace.source,
        );
        row(
            &mut out,
            "upload_deadline",
            duration_words(self.upload_deadline.value),
            &self.upload_deadline.source,
        );
        row(
            &mut out,
            "heartbeat",
            secs(&self.heartbeat.value),
            &self.heartbeat.source,
        );
        row(
            &mut out,
            "cleanup_timeout",
            duration_words(self.cleanup_timeout.value),
            &self.cleanup_timeout.source,
        );
        let limit = |v: &Option<u64>| v.map_or_else(|| "0 (none)".into(), |n| format!("{n} bytes"));
        row(
            &mut out,
            "log_limit",
            limit(&self.log_limit.value),
            &self.log_limit.source,
        );
        row(
            &mut out,
            "artifact_limit",
            limit(&self.artifact_limit.value),
            &self.artifact_limit.source,
        );
        row(
            &mut out,
            "step_debug",
            self.step_debug.value.to_string(),
            &self.step_debug.source,
        );
        out
    }
}

/// One line of `Config::describe`.
fn row(out: &mut String, name: &str, value: String, source: &Source) {
    use std::fmt::Write;
    let _ = writeln!(out, "{name:<16} = {value}    [{source}]");
}

fn parse_level(t: &str) -> std::result::Result<LogLevel, String> {
    Ok(match t.trim().to_ascii_lowercase().as_str() {
        "off" => LogLevel::Off,
        "error" => LogLevel::Error,
        "warn" | "warning" => LogLevel::Warn,
        "info" => LogLevel::Info,
        "debug" => LogLevel::Debug,
        "trace" => LogLevel::Trace,
        _ => {
            return Err(format!(
                "{t:?} is not one of off, error, warn, info, debug, trace"
            ))
        }
    })
}

/// `1`/`true` or `0`/`false` (any case), as GitHub's runner reads its debug flags.
pub fn parse_bool(t: &str) -> std::result::Result<bool, String> {
    match t.trim().to_ascii_lowercase().as_str() {
        "1" | "true" => Ok(true),
        "0" | "false" | "" => Ok(false),
        _ => Err(format!("{t:?} is not true, false, 1 or 0")),
    }
}

/// A duration where 0 means none.
fn optional_duration(t: &str) -> std::result::Result<Option<Duration>, String> {
    parse_duration(t).map(|d| Some(d).filter(|d| !d.is_zero()))
}

/// Whole seconds where 0 means none.
fn optional_seconds(t: &str) -> std::result::Result<Option<Duration>, String> {
    seconds(t).map(|d| Some(d).filter(|d| !d.is_zero()))
}

/// A byte count where 0 means no limit.
fn optional_bytes(t: &str) -> std::result::Result<Option<u64>, String> {
    bytes(t).map(|n| Some(n).filter(|&n| n > 0))
}

fn whole(t: &str) -> std::result::Result<u64, String> {
    t.trim()
        .parse()
        .map_err(|_| format!("{t:?} is not a whole number"))
}

fn seconds(t: &str) -> std::result::Result<Duration, String> {
    t.trim()
        .parse()
        .map(Duration::from_secs)
        .map_err(|_| format!("{t:?} is not a whole number of seconds"))
}

/// A byte count: a whole number with an optional K, M or G (powers of 1024).
fn bytes(t: &str) -> std::result::Result<u64, String> {
    let t = t.trim();
    let (digits, shift) = match t.as_bytes().last() {
        Some(b'K' | b'k') => (&t[..t.len() - 1], 10),
        Some(b'M' | b'm') => (&t[..t.len() - 1], 20),
        Some(b'G' | b'g') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| {
            format!("{t:?} is not a number of bytes (a whole number, or with K, M or G)")
        })
}

/// A full object id: 40 hex digits (SHA-1) or 64 (SHA-256), lowercased.
pub fn check_commit(text: &str) -> std::result::Result<String, String> {
    let ok_len = text.len() == 40 || text.len() == 64;
    if ok_len && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(text.to_ascii_lowercase());
    }
    let shown: String = text.chars().take(80).collect();
    Err(format!(
        "{shown:?} is not a full commit id (40 or 64 hexadecimal digits; branch names and short ids are not accepted, so the job runs exactly the commit it was given)"
    ))
}

/// `text` as an absolute path without `.` components, relative paths taken
/// from the current directory.
pub fn absolute_path(text: &str) -> std::result::Result<PathBuf, String> {
    let text = no_control(text)?;
    let path = Path::new(text);
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let cwd =
            std::env::current_dir().map_err(|e| format!("cannot resolve a relative path: {e}"))?;
        cwd.join(path)
    };
    // `components` drops the `.` parts, so `--repo-url .` reads as the directory itself.
    Ok(path.components().collect())
}

/// A name a shell can export: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// A duration: whole seconds ("90"), or units "h", "m", "s" in that order
/// ("90s", "10m", "1h30m").
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    match t.parse().ok().or_else(|| units(t)) {
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => Err(format!(
            "{text:?} is not a duration (use seconds, or e.g. \"90s\", \"10m\", \"1h30m\")"
        )),
    }
}

/// Seconds in `t` written with units, `None` when it is not such a duration.
fn units(t: &str) -> Option<u64> {
    let (mut total, mut num, mut last) = (0u64, None::<u64>, 0);
    for b in t.bytes() {
        if b.is_ascii_digit() {
            num = Some(
                num.unwrap_or(0)
                    .checked_mul(10)?
                    .checked_add(u64::from(b - b'0'))?,
            );
            continue;
        }
        let rank = b"hms".iter().position(|&u| u == b)? + 1;
        if rank <= last {
            return None;
        }
        last = rank;
        let mult = [3600, 60, 1][rank - 1];
        total = total.checked_add(num.take()?.checked_mul(mult)?)?;
    }
    // Nothing at all, or a number without its unit.
    (last > 0 && num.is_none()).then_some(total)
}

/// A duration in words for messages: "30m", "1h30m", "45s".
pub fn duration_words(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in ["", "m", "1x", "30m1h", "1h1h", "10m5", "-1", "1.5m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(duration_words(Duration::from_secs(5400)), "1h30m");
        assert_eq!(duration_words(Duration::from_secs(0)), "0s");
    }

    #[test]
    fn commits() {
        assert!(check_commit(&"a".repeat(40)).is_ok());
        assert!(check_commit(&"A".repeat(64)).is_ok());
        assert!(check_commit("main").is_err());
        assert!(check_commit(&"g".repeat(40)).is_err());
        assert!(check_commit("--help").is_err());
    }

    #[test]
    fn byte_counts() {
        assert_eq!(bytes("100"), Ok(100));
        assert_eq!(bytes("1K"), Ok(1024));
        assert_eq!(bytes("2m"), Ok(2 << 20));
        assert!(bytes("x").is_err());
        assert!(bytes("99999999999G").is_err());
    }
}
