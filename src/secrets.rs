//! Secrets: the job's secrets file (read once, in the job file's YAML
//! subset), and the masker that hides every secret the runner knows of,
//! including the job token, credentials in the repository URL and
//! `SOLSTICE_GIT_TOKEN`.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::mask::Masker;

pub const DEFAULT_FILE: &str = "/etc/solstice/secrets.yaml";

/// The secrets file's entries, in file order, with where each was defined.
#[derive(Default)]
pub struct Secrets {
    pub path: String,
    /// Whether the file existed; naming a secret can only be checked then.
    pub found: bool,
    pub vars: Vec<(String, String)>,
}

impl Secrets {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the secrets file named by the context (absent is fine).
pub fn load(ctx: &Context) -> Result<Secrets> {
    let path = ctx.text("secrets_file").unwrap_or(DEFAULT_FILE);
    read(path)
}

pub fn read(path: &str) -> Result<Secrets> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Secrets {
                path: path.to_string(),
                ..Secrets::default()
            })
        }
        Err(e) => {
            return Err(Error::input(format!(
                "cannot read the secrets file {path}: {e}"
            )))
        }
    };
    warn_if_readable(path);
    let mut vars = Vec::new();
    // The quoted source line of an error would print a secret value.
    let entries = crate::yaml::parse(path, &bytes).map_err(|mut e| {
        e.detail.clear();
        e
    })?;
    for e in entries {
        if !crate::context::is_env_name(&e.key) {
            return Err(Error::at(
                path,
                e.line,
                e.col,
                format!("secret name {:?} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)", e.key),
            ));
        }
        vars.push((e.key, e.value));
    }
    Ok(Secrets {
        path: path.to_string(),
        found: true,
        vars,
    })
}

fn warn_if_readable(path: &str) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.mode() & 0o077 != 0 {
            warn!(
                "the secrets file {path} can be read by other users (mode {:o}); chmod 600 it",
                meta.mode() & 0o7777
            );
        }
    }
}

/// The masker for every secret the runner knows of.
pub fn masker(ctx: &Context, secrets: &Secrets) -> Masker {
    let mut m = Masker::new();
    let mut add = |what: &str, value: &str| {
        if let Err(reason) = m.add(value.as_bytes()) {
            warn!("{what} is not masked in the log: {reason}");
        }
    };
    if let Some((user, pass)) = &ctx.repo.credentials {
        add("the password in repo_url", pass);
        // Tokens often travel as the user (`https://TOKEN:x-oauth-basic@host`);
        // a short user name is no secret and needs no warning.
        if user.len() >= 4 {
            add("the user in repo_url", user);
        }
    }
    if let Some(token) = ctx.text("token") {
        add("the job token", token);
        // Also as sent: the uploader trims it.
        if token.trim() != token {
            add("the job token", token.trim());
        }
    }
    if let Some(token) = git_token() {
        add("SOLSTICE_GIT_TOKEN", &token);
    }
    for (name, value) in &secrets.vars {
        add(&format!("secret {name}"), value);
    }
    m.build();
    m
}

/// The token for fetching private repositories over HTTPS, if set.
pub fn git_token() -> Option<String> {
    std::env::var("SOLSTICE_GIT_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
}
