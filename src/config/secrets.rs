//! The job's secrets file: a flat `NAME: value` file in the job file's YAML
//! subset, read once. Its values never appear in an error (no source line is
//! quoted), and a value that no program could receive in its environment is
//! refused before anything runs.

use crate::error::{Error, Result};
use std::path::Path;

pub const DEFAULT_FILE: &str = "/etc/solstice/secrets.yaml";

/// The secrets file's entries, in file order.
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

/// Reads the secrets file at `path`; a missing file is an empty set.
pub fn read(path: &Path) -> Result<Secrets> {
    let shown = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Secrets {
                path: shown,
                ..Secrets::default()
            })
        }
        Err(e) => {
            return Err(Error::input(format!(
                "cannot read the secrets file {shown}: {e}"
            )))
        }
    };
    warn_if_readable(path, &shown);
    let entries = crate::config::yaml::parse(&shown, &bytes).map_err(Error::without_quote)?;
    let mut vars = Vec::new();
    for e in entries {
        if !crate::config::is_env_name(&e.key) {
            return Err(Error::at(
                &shown,
                e.line,
                e.col,
                format!("secret name {:?} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)", e.key),
            ));
        }
        // `NAME=value` and its NUL must fit in one exec string.
        let len = e.key.len() + 1 + e.value.len() + 1;
        if len > crate::config::MAX_ENV_STRING {
            return Err(Error::at(
                &shown,
                e.line,
                e.value_col,
                format!(
                    "secret {} is {} bytes; a program's environment variable can hold at most {} (Linux's limit on one exec string, {} bytes with the name, `=` and NUL)",
                    e.key,
                    e.value.len(),
                    crate::config::MAX_ENV_STRING - e.key.len() - 2,
                    crate::config::MAX_ENV_STRING
                ),
            ));
        }
        vars.push((e.key, e.value));
    }
    Ok(Secrets {
        path: shown,
        found: true,
        vars,
    })
}

fn warn_if_readable(path: &Path, shown: &str) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.mode() & 0o077 != 0 {
            warn!(
                "the secrets file {shown} can be read by other users (mode {:o}); chmod 600 it",
                meta.mode() & 0o7777
            );
        }
    }
}
