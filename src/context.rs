//! The job context: what to fetch, where, and how to report, resolved from
//! command-line flags, the environment, the job file and defaults (in that
//! order of precedence), then validated before anything touches the disk or
//! the network.

use crate::error::{Error, Result};
use crate::yaml;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_JOB_FILE: &str = "/etc/solstice/job.yaml";
pub const DEFAULT_WORKDIR: &str = "/root/work";

/// One setting of the job context and every name it goes by.
pub struct Setting {
    pub key: &'static str,
    pub env: &'static str,
    pub flag: Option<&'static str>,
    pub default: Option<&'static str>,
    /// Never printed, not even by `--dry-run`.
    pub secret: bool,
}

/// Every setting the job file may hold, one a line: key, environment
/// variable, flag, default (the last two may be empty). A key not listed
/// here draws a warning, never an error: the orchestrator may be newer than
/// the runner. Text rather than a table of `Setting`s: its 26 string
/// pointers cost 1.7 KB of .data.rel.ro and relocations.
const SETTINGS: &str = "\
repo_url SOLSTICE_REPO_URL repo-url
commit_sha SOLSTICE_COMMIT_SHA commit
workdir SOLSTICE_WORKDIR workdir /root/work
job SOLSTICE_JOB job
timeout SOLSTICE_JOB_TIMEOUT
orchestrator_url SOLSTICE_ORCHESTRATOR_URL
job_id SOLSTICE_JOB_ID
token SOLSTICE_JOB_TOKEN
spool SOLSTICE_SPOOL
secrets_file SOLSTICE_SECRETS_FILE  /etc/solstice/secrets.yaml";

/// How many settings `SETTINGS` lists.
pub const COUNT: usize = 10;

/// The `i`th setting of `SETTINGS`; past the end, one with empty names.
#[inline(never)]
pub fn setting(i: usize) -> Setting {
    let line = SETTINGS.split('\n').nth(i).unwrap_or_default();
    let mut f = line.split(' ');
    let mut next = || f.next().filter(|s| !s.is_empty());
    let key = next().unwrap_or_default();
    Setting {
        key,
        env: next().unwrap_or_default(),
        flag: next(),
        default: next(),
        secret: key == "token",
    }
}

/// The index of the setting whose flag is `--name`.
pub fn flag_index(name: &str) -> Option<usize> {
    (0..COUNT).find(|&i| setting(i).flag == Some(name))
}

/// The index of the setting `key`.
fn index(key: &str) -> Option<usize> {
    (0..COUNT).find(|&i| setting(i).key == key)
}

/// Where a resolved value came from, for `--dry-run` and error messages.
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

impl Source {
    /// How `--dry-run` and error messages name the source.
    pub fn text(&self) -> String {
        let (head, name) = match self {
            Source::Flag(name) => ("flag --", *name),
            Source::Env(name) => ("environment ", *name),
            Source::File { path, line, col } => return format!("{path}:{line}:{col}"),
            Source::Default => ("default", ""),
        };
        let mut s = head.to_string();
        s.push_str(name);
        s
    }
}

#[derive(Clone, Debug)]
pub struct Value {
    pub text: String,
    pub source: Source,
}

/// Values given on the command line, by setting index.
#[derive(Default)]
pub struct Flags {
    pub values: [Option<String>; COUNT],
    pub job_file: Option<String>,
}

/// The resolved context: every setting's value (if any) and its source.
pub struct Context {
    pub job_file: String,
    pub job_file_found: bool,
    values: [Option<Value>; COUNT],
    /// Validated and normalised forms of the required settings.
    pub repo: Repo,
    pub commit: String,
    pub workdir: PathBuf,
}

impl Context {
    #[inline(never)]
    pub fn get(&self, key: &str) -> Option<&Value> {
        let i = index(key)?;
        self.values.get(i)?.as_ref()
    }

    pub fn text(&self, key: &str) -> Option<&str> {
        self.get(key).map(|v| v.text.as_str())
    }

    /// Every setting with its value, secrets hidden: what `--dry-run` prints.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let found = if self.job_file_found {
            ""
        } else {
            " (not found)"
        };
        row(&mut out, "job_file", &[&self.job_file, found]);
        for (i, value) in self.values.iter().enumerate() {
            let setting = setting(i);
            let Some(v) = value else {
                row(&mut out, setting.key, &["(unset)"]);
                continue;
            };
            let text = if setting.secret {
                "(set, hidden)"
            } else if setting.key == "repo_url" {
                &self.repo.display
            } else {
                &v.text
            };
            let source = v.source.text();
            row(&mut out, setting.key, &[text, "    [", &source, "]"]);
        }
        out
    }
}

/// One `key = value` line of `describe`, the key padded to 16 columns.
fn row(out: &mut String, key: &str, parts: &[&str]) {
    out.push_str(key);
    for _ in key.len()..16 {
        out.push(' ');
    }
    out.push_str(" = ");
    for p in parts {
        out.push_str(p);
    }
    out.push('\n');
}

/// Resolves the context from `flags`, the process environment and the job file.
pub fn resolve(flags: &Flags) -> Result<Context> {
    resolve_with(flags, &|name| std::env::var(name).ok())
}

/// `resolve` with the environment given as a function, so tests need not
/// touch the process environment.
pub fn resolve_with(flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<Context> {
    let env = |name: &str| env(name).filter(|v| !v.is_empty());
    let (job_file, explicit) = match flags.job_file.clone().or_else(|| env("SOLSTICE_JOB_FILE")) {
        Some(path) => (path, true),
        None => (DEFAULT_JOB_FILE.to_string(), false),
    };
    let file = read_job_file(&job_file)?;
    let job_file_found = file.is_some();
    if !job_file_found && explicit {
        debug!("job file {job_file} not found; using flags and environment only");
    }
    let entries = file.unwrap_or_default();

    let mut values: [Option<Value>; COUNT] = Default::default();
    for (i, slot) in values.iter_mut().enumerate() {
        let setting = setting(i);

        let entry = entries.iter().find(|e| {
            e.key == setting.key
                && !(e.plain && matches!(e.value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
        });
        let value = if let (Some(name), Some(text)) = (setting.flag, &flags.values[i]) {
            Some((text.clone(), Source::Flag(name)))
        } else if let Some(text) = env(setting.env) {
            Some((text, Source::Env(setting.env)))
        } else if let Some(e) = entry {
            let source = Source::File {
                path: job_file.clone(),
                line: e.line,
                col: e.value_col,
            };
            Some((e.value.clone(), source))
        } else {
            setting.default.map(|d| (d.to_string(), Source::Default))
        };
        *slot = value.map(|(text, source)| Value { text, source });
    }
    for e in &entries {
        if index(&e.key).is_none() {
            warn!(
                "{job_file}:{}:{}: unknown key {:?} ignored (this runner is {}; the orchestrator may be newer)",
                e.line,
                e.col,
                e.key,
                env!("CARGO_PKG_VERSION")
            );
        }
    }

    // The first three settings are the required ones.
    let required = |i: usize| {
        let setting = setting(i);
        let key = setting.key;
        values[i].as_ref().ok_or_else(|| {
            let file_note = if job_file_found {
                ""
            } else {
                ", which was not found"
            };
            Error::input(format!(
                "no {key} given: set {}, pass --{}, or write `{key}: ...` in the job file {job_file}{file_note}",
                setting.env,
                setting.flag.unwrap_or(""),
            ))
        })
    };
    let url = required(0)?;
    let repo = parse_repo_url(&url.text).map_err(|msg| bad_value(url, "repo_url", &msg))?;
    let sha = required(1)?;
    let commit = check_commit(&sha.text).map_err(|msg| bad_value(sha, "commit_sha", &msg))?;
    let wd = required(2)?;
    let workdir = check_workdir(&wd.text).map_err(|msg| bad_value(wd, "workdir", &msg))?;

    Ok(Context {
        job_file,
        job_file_found,
        values,
        repo,
        commit,
        workdir,
    })
}

/// An error about a value, naming where the value came from.
pub fn bad_value(v: &Value, key: &str, msg: &str) -> Error {
    match &v.source {
        Source::File { path, line, col } => Error::at(path, *line, *col, format!("{key}: {msg}")),
        other => Error::input(format!("{key} (from {}): {msg}", other.text())),
    }
}

/// Reads and parses the job file; `None` when it does not exist.
fn read_job_file(path: &str) -> Result<Option<Vec<yaml::Entry>>> {
    match std::fs::read(path) {
        Ok(bytes) => yaml::parse(path, &bytes).map(Some).map_err(|mut e| {
            // The job file holds the job token: never quote its line. The
            // detail starts with that line, after a newline and four spaces.
            if e.detail
                .get(5..)
                .unwrap_or("")
                .trim_start()
                .trim_start_matches(['"', '\''])
                .starts_with("token")
            {
                e.detail.clear();
            }
            e
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::input(format!("cannot read job file {path}: {e}"))),
    }
}

/// A whole number from the environment variable `name`, or `default` when
/// it is unset or empty.
pub fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => match v.trim().parse() {
            Ok(n) => Ok(n),
            Err(_) => Err(Error::input(format!("{name}={v:?} is not a whole number"))),
        },
        _ => Ok(default),
    }
}

/// A name a shell can export: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// A full object id: 40 hex digits (SHA-1) or 64 (SHA-256), lowercased.
pub fn check_commit(text: &str) -> std::result::Result<String, String> {
    let ok_len = text.len() == 40 || text.len() == 64;
    if ok_len && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(text.to_ascii_lowercase());
    }
    Err(format!(
        "{:?} is not a full commit id (40 or 64 hexadecimal digits; branch names and short ids are not accepted, so the job runs exactly the commit it was given)",
        shorten(text)
    ))
}

fn check_workdir(text: &str) -> std::result::Result<PathBuf, String> {
    if text.chars().any(|c| c.is_control()) {
        return Err("contains a control character".into());
    }
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

fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}

/// How git reaches the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Http,
    Ssh,
    Git,
    File,
}

/// A validated repository URL. `fetch_url` has no credentials; they are kept
/// apart so they never reach a command line, `.git/config` or a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repo {
    pub transport: Transport,
    pub fetch_url: String,
    /// What logs and the job's environment show: `fetch_url` as given.
    pub display: String,
    /// `scheme://host[:port]/` for scoping an HTTP authorization header.
    pub origin: String,
    /// Decoded user and password from an http(s) URL.
    pub credentials: Option<(String, String)>,
}

/// Validates a repository URL: no option look-alikes, no control
/// characters, and only transports fit for fetching (`ext::` and other
/// remote-helper transports can run commands, so they are refused).
pub fn parse_repo_url(url: &str) -> std::result::Result<Repo, String> {
    if url.is_empty() {
        return Err("is empty".into());
    }
    if url.starts_with('-') {
        return Err(format!(
            "{:?} starts with '-' and could be taken as an option; refused",
            shorten(url)
        ));
    }
    if url.chars().any(|c| c.is_control()) {
        return Err("contains a control character".into());
    }
    let scheme_end = url.find("://");
    let first_colon = url.find(':');
    if let Some(i) = url.find("::") {
        if scheme_end.is_none_or(|s| i < s) && !url[..i].contains('/') {
            return Err(format!(
                "the transport {:?} runs a remote helper command; only https, http, ssh, git, file, scp-style and local paths are accepted",
                &url[..i + 2]
            ));
        }
    }
    let mut origin = String::new();
    let mut credentials = None;
    let (transport, fetch_url) = if let Some(end) = scheme_end.filter(|&e| !url[..e].contains('/'))
    {
        let scheme = url[..end].to_ascii_lowercase();
        let transport = match scheme.as_str() {
            "https" | "http" => Transport::Http,
            "ssh" | "git+ssh" | "ssh+git" => Transport::Ssh,
            "git" => Transport::Git,
            "file" => Transport::File,
            _ => {
                return Err(format!(
                    "the transport {scheme:?} is not supported; use https, http, ssh, git, file, scp-style (user@host:path) or a local path"
                ))
            }
        };
        let rest = &url[end + 3..];
        let auth_end = rest.find('/').unwrap_or(rest.len());
        let authority = &rest[..auth_end];
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        if transport != Transport::File && hostport.is_empty() {
            return Err("has no host".into());
        }
        if hostport.starts_with('-') {
            return Err("has a host starting with '-', which ssh could take as an option".into());
        }
        let scheme = &url[..end + 3];
        let mut fetch_url = scheme.to_string();
        match (userinfo, &transport) {
            (Some(ui), Transport::Http) => {
                let (user, pass) = ui.split_once(':').unwrap_or((ui, ""));
                credentials = Some((percent_decode(user), percent_decode(pass)));
            }
            (Some(ui), _) => {
                // An ssh user name is no secret, but a password never belongs in a URL.
                fetch_url.push_str(ui.split_once(':').map_or(ui, |(user, _)| user));
                fetch_url.push('@');
            }
            (None, _) => {}
        }
        fetch_url.push_str(hostport);
        fetch_url.push_str(&rest[auth_end..]);
        origin.push_str(scheme);
        origin.push_str(hostport);
        origin.push('/');
        (transport, fetch_url)
    } else if let Some(colon) = first_colon.filter(|&c| !url[..c].contains('/')) {
        // scp-style `[user@]host:path`: a colon before any slash.
        let host = &url[..colon];
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        if host.is_empty() || host.starts_with('-') {
            return Err("has an empty host or one starting with '-'".into());
        }
        (Transport::Ssh, url.to_string())
    } else {
        // A local path, made absolute because git runs inside the workdir.
        let path = check_workdir(url)?;
        (Transport::File, path.to_string_lossy().into_owned())
    };
    Ok(Repo {
        transport,
        display: fetch_url.clone(),
        fetch_url,
        origin,
        credentials,
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes credentials from every `scheme://user:pass@` in `text`, for
/// messages that quote URLs (git's errors do).
pub fn strip_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"');
        let authority = &tail[..end.unwrap_or(tail.len())];
        match authority.rfind('@') {
            Some(at) => rest = &tail[at + 1..],
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports() {
        let ok = |u: &str| parse_repo_url(u).map(|r| r.transport);
        assert_eq!(ok("https://example.org/r.git"), Ok(Transport::Http));
        assert_eq!(ok("git@example.org:org/r.git"), Ok(Transport::Ssh));
        assert_eq!(ok("ssh://git@example.org/r"), Ok(Transport::Ssh));
        assert_eq!(ok("git://127.0.0.1/r"), Ok(Transport::Git));
        assert_eq!(ok("file:///srv/r.git"), Ok(Transport::File));
        assert_eq!(ok("/srv/r.git"), Ok(Transport::File));
        for bad in [
            "ext::sh -c touch% /tmp/x",
            "fd::3",
            "-oProxyCommand=x",
            "--upload-pack=x",
        ] {
            assert!(parse_repo_url(bad).is_err(), "{bad}");
        }
        assert!(parse_repo_url("ftp://x/y").is_err());
        assert!(parse_repo_url("https://x/\ny").is_err());
        assert!(parse_repo_url("ssh://-oProxyCommand=x/y").is_err());
    }

    #[test]
    fn credentials_are_split_off() {
        let r = parse_repo_url("https://user:p%40ss@host:8080/r.git").unwrap();
        assert_eq!(r.fetch_url, "https://host:8080/r.git");
        assert_eq!(r.origin, "https://host:8080/");
        assert_eq!(r.credentials, Some(("user".into(), "p@ss".into())));
        assert_eq!(
            strip_credentials("fatal: 'https://u:p@h/x' failed"),
            "fatal: 'https://h/x' failed"
        );
    }

    #[test]
    fn the_settings_text_is_well_formed() {
        assert_eq!(SETTINGS.lines().count(), COUNT);
        assert!(setting(COUNT).key.is_empty());
        assert_eq!(setting(2).default, Some(DEFAULT_WORKDIR));
        assert_eq!(setting(9).default, Some(crate::secrets::DEFAULT_FILE));
        assert_eq!(setting(9).flag, None);
        assert!(setting(7).secret && setting(7).key == "token");
        for i in 0..COUNT {
            let s = setting(i);
            assert!(s.env.starts_with("SOLSTICE_"), "{}", s.key);
            assert_eq!(index(s.key), Some(i));
        }
    }

    #[test]
    fn commits() {
        assert!(check_commit(&"a".repeat(40)).is_ok());
        assert!(check_commit(&"A".repeat(64)).is_ok());
        assert!(check_commit("main").is_err());
        assert!(check_commit(&"g".repeat(40)).is_err());
        assert!(check_commit("--help").is_err());
    }
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

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in ["", "m", "1x", "30m1h", "1h1h", "10m5", "-1", "1.5m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
