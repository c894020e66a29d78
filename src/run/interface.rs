//! The files a step writes to talk back to the runner, under GitHub's
//! conventions and our names: `SOLSTICE_ENV` and `SOLSTICE_OUTPUT` hold
//! `NAME=value` lines or `NAME<<DELIMITER` heredocs, `SOLSTICE_PATH` one
//! directory per line, `SOLSTICE_STEP_SUMMARY` Markdown. This module reads
//! them, strictly: whatever a later step would receive must be something
//! exec can pass, and a malformed file fails the step with the variable and
//! the line named.

use std::path::Path;

/// The most a step may write to one of these files.
pub const MAX_FILE: u64 = 1 << 20;

/// One of the files, by the variable that names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum File {
    Env,
    Path,
    Output,
    Summary,
    /// Issue 14: globs of files to keep as the `artifacts` artifact.
    Artifacts,
}

impl File {
    pub const ALL: [File; 5] = [
        File::Env,
        File::Path,
        File::Output,
        File::Summary,
        File::Artifacts,
    ];

    /// The variable that names the file, and GitHub's name for it.
    pub fn vars(self) -> (&'static str, Option<&'static str>) {
        match self {
            File::Env => ("SOLSTICE_ENV", Some("GITHUB_ENV")),
            File::Path => ("SOLSTICE_PATH", Some("GITHUB_PATH")),
            File::Output => ("SOLSTICE_OUTPUT", Some("GITHUB_OUTPUT")),
            File::Summary => ("SOLSTICE_STEP_SUMMARY", Some("GITHUB_STEP_SUMMARY")),
            File::Artifacts => ("SOLSTICE_ARTIFACTS", None),
        }
    }

    /// The file's name in the step's private directory.
    pub fn name(self) -> &'static str {
        match self {
            File::Env => "env",
            File::Path => "path",
            File::Output => "output",
            File::Summary => "summary",
            File::Artifacts => "artifacts",
        }
    }
}

/// Reads a step's file: `None` if it is missing (the step removed it).
/// More than `MAX_FILE` bytes is an error, unless `cut` says to keep the
/// first `MAX_FILE` (then the bool says it was cut).
pub fn read(path: &Path, var: &str, cut: bool) -> Result<Option<(Vec<u8>, bool)>, String> {
    let (bytes, over) = match crate::files::read_capped(path, MAX_FILE) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{var}: cannot read {}: {e}", path.display())),
    };
    if over && !cut {
        return Err(format!(
            "{var}: the file is over {MAX_FILE} bytes, the most a step may write"
        ));
    }
    Ok(Some((bytes, over)))
}

/// The lines of `text`, each with its 1-based number, CRLF or LF ended.
fn lines(text: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    text.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(move |_| !text.is_empty())
}

/// `NAME=value` lines and `NAME<<DELIMITER` heredocs, in order; a name set
/// twice keeps its last value.
pub fn vars(text: &[u8], var: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut it = lines(text);
    while let Some((n, line)) = it.next() {
        if line.is_empty() {
            continue;
        }
        let at = |msg: String| format!("{var} line {n}: {msg}");
        let eq = line.iter().position(|&b| b == b'=');
        let heredoc = find(line, b"<<").filter(|&h| eq.is_none_or(|e| h < e));
        let (name, value) = match (heredoc, eq) {
            (Some(h), _) => {
                let delim = &line[h + 2..];
                if delim.is_empty() {
                    return Err(at("a heredoc needs a delimiter after `<<`".into()));
                }
                let mut value: Vec<u8> = Vec::new();
                let mut closed = false;
                let mut first = true;
                for (_, l) in it.by_ref() {
                    if l == delim {
                        closed = true;
                        break;
                    }
                    if !first {
                        value.push(b'\n');
                    }
                    first = false;
                    value.extend_from_slice(l);
                }
                if !closed {
                    return Err(at(format!(
                        "the heredoc has no closing `{}` line",
                        String::from_utf8_lossy(delim)
                    )));
                }
                (&line[..h], value)
            }
            (None, Some(e)) => (&line[..e], line[e + 1..].to_vec()),
            (None, None) => {
                return Err(at("expected NAME=value or NAME<<DELIMITER".into()));
            }
        };
        let name = std::str::from_utf8(name).unwrap_or_default();
        if !crate::config::is_env_name(name) {
            let shown = String::from_utf8_lossy(&line[..line.len().min(64)]);
            return Err(at(format!(
                "`{shown}` does not start with a variable name ([A-Za-z_][A-Za-z0-9_]*)"
            )));
        }
        let upper = name.to_ascii_uppercase();
        if upper.starts_with("SOLSTICE_") || upper.starts_with("GITHUB_") {
            return Err(at(format!(
                "{name}: names starting with SOLSTICE_ or GITHUB_ belong to the runner"
            )));
        }
        if value.contains(&0) {
            return Err(at(format!(
                "the value of {name} holds a NUL byte, which no program can receive"
            )));
        }
        if name.len() + value.len() + 2 > crate::config::MAX_ENV_STRING {
            return Err(at(format!(
                "the value of {name} is {} bytes; an environment variable holds at most {}",
                value.len(),
                crate::config::MAX_ENV_STRING - name.len() - 2
            )));
        }
        let value = String::from_utf8_lossy(&value).into_owned();
        out.retain(|(k, _)| k != name);
        out.push((name.to_string(), value));
    }
    Ok(out)
}

/// One directory per line (blank lines skipped), in the order written.
pub fn dirs(text: &[u8], var: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (n, line) in lines(text) {
        if line.trim_ascii().is_empty() {
            continue;
        }
        if line.contains(&0) || line.contains(&b':') {
            return Err(format!(
                "{var} line {n}: a directory for PATH cannot hold a NUL byte or a `:`"
            ));
        }
        out.push(String::from_utf8_lossy(line).into_owned());
    }
    Ok(out)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines_and_heredocs() {
        let text = b"A=1\r\nB=x=y\n\nC<<EOF\nline 1\r\n\nline 3\nEOF\nD<<X\nX\nE<<Y\n\nz\nY\nA=2\n";
        let v = vars(text, "SOLSTICE_ENV").unwrap();
        let got: Vec<(&str, &str)> = v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [
                ("B", "x=y"),
                ("C", "line 1\n\nline 3"),
                ("D", ""),
                ("E", "\nz"),
                ("A", "2")
            ]
        );
        for (bad, says) in [
            (&b"A=1\nnonsense\n"[..], "line 2"),
            (b"C<<EOF\nno end\n", "no closing `EOF`"),
            (b"SOLSTICE_X=1\n", "belong to the runner"),
            (b"github_token=1\n", "belong to the runner"),
            (b"1A=1\n", "variable name"),
            (b"A=a\0b\n", "NUL"),
            (b"A<<\n", "delimiter"),
        ] {
            let e = vars(bad, "SOLSTICE_ENV").unwrap_err();
            assert!(
                e.contains(says) && e.starts_with("SOLSTICE_ENV line"),
                "{e}"
            );
        }
        assert_eq!(vars(b"", "V").unwrap(), vec![]);
    }

    #[test]
    fn path_lines() {
        assert_eq!(dirs(b"/a\r\n\n/b c\n", "P").unwrap(), ["/a", "/b c"]);
        assert!(dirs(b"/a:/b\n", "P").is_err());
    }
}
