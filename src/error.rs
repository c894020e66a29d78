//! The runner's one error type, and the exit codes that classify failures.
//!
//! Every stage (job file, workflow, context, checkout, upload) reports with
//! the same shape: a kind, a message, and where in an input file the problem
//! is, when it is in one. A job's own exit code passes through unchanged, so
//! the runner's failures use codes a job is unlikely to produce and no signal
//! can (128+N stops at 192): an orchestrator can tell "fix the input", "retry
//! the VM" and "report a bug" apart from "the build failed".

use std::fmt;

/// Exit code of a job killed by the job or step timeout (the `timeout(1)` convention).
pub const EXIT_TIMEOUT: i32 = 124;

/// What went wrong, which decides the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Bad input: flags, job context, job file, workflow, secrets file, or a
    /// repository without a job. Retrying the same input cannot help.
    Input,
    /// The repository could not be fetched or checked out (network, server,
    /// credentials, missing commit). Retrying the VM may help.
    Fetch,
    /// The orchestrator could not be reached or refused what was sent. Never
    /// an exit code of its own: the job's result stands.
    Upload,
    /// The runner itself failed: I/O on its own files, a process it could not
    /// start, a bug.
    Internal,
}

impl Kind {
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Internal | Kind::Upload => 250,
            Kind::Input => 251,
            Kind::Fetch => 252,
        }
    }
}

/// A place in an input file, 1-based.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub path: String,
    pub line: usize,
    pub col: usize,
}

/// Boxed, so a `Result` stays one word wide through every `?`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(Box<Inner>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inner {
    pub kind: Kind,
    /// What went wrong; after its first line, the quoted source line with a
    /// caret under the column, when the error is at one.
    pub msg: String,
    pub loc: Option<Loc>,
}

/// How wide a quoted source line may be: a one-line file of 10 MB must not
/// be printed under each of its errors.
const QUOTE_WIDTH: usize = 120;

impl Error {
    #[inline(never)]
    pub fn new(kind: Kind, msg: impl Into<String>) -> Error {
        Error(Box::new(Inner {
            kind,
            msg: msg.into(),
            loc: None,
        }))
    }

    pub fn input(msg: impl Into<String>) -> Error {
        Error::new(Kind::Input, msg)
    }

    pub fn fetch(msg: impl Into<String>) -> Error {
        Error::new(Kind::Fetch, msg)
    }

    pub fn internal(msg: impl Into<String>) -> Error {
        Error::new(Kind::Internal, msg)
    }

    pub fn upload(msg: impl Into<String>) -> Error {
        Error::new(Kind::Upload, msg)
    }

    /// An input error at `path:line:col`.
    pub fn at(path: &str, line: usize, col: usize, msg: impl Into<String>) -> Error {
        let mut e = Error::input(msg);
        e.0.loc = Some(Loc {
            path: path.to_string(),
            line,
            col,
        });
        e
    }

    /// Adds the offending line of `src` and a caret under the column. A long
    /// line is shown as a window around the column.
    pub fn with_source(mut self, src: &str) -> Error {
        let Some((line, col)) = self.loc.as_ref().map(|l| (l.line, l.col)) else {
            return self;
        };
        if let Some(text) = src.lines().nth(line.saturating_sub(1)) {
            let text = text.trim_end_matches('\r');
            // Only the window's characters are visited after its start.
            let at = col.saturating_sub(1);
            let start = at.saturating_sub(QUOTE_WIDTH / 2);
            let mut window = text.chars().skip(start);
            let shown: String = window.by_ref().take(QUOTE_WIDTH).collect();
            let m = &mut self.0.msg;
            m.push_str("\n    ");
            if start > 0 {
                m.push_str("...");
            }
            m.push_str(&shown);
            if window.next().is_some() {
                m.push_str("...");
            }
            m.push_str("\n    ");
            if start > 0 {
                m.push_str("   ");
            }
            for c in shown.chars().take(at - start) {
                m.push(if c == '\t' { '\t' } else { ' ' });
            }
            m.push('^');
        }
        self
    }

    /// The error without its quoted source line (for files that hold secrets).
    pub fn without_quote(mut self) -> Error {
        if let Some(i) = self.0.msg.find('\n') {
            self.0.msg.truncate(i);
        }
        self
    }

    pub fn with_hint(mut self, hint: &str) -> Error {
        self.0.msg.push_str("\n    hint: ");
        self.0.msg.push_str(hint);
        self
    }

    /// The first line of the message, without the location.
    pub fn headline(&self) -> &str {
        self.msg.lines().next().unwrap_or_default()
    }

    pub fn exit_code(&self) -> i32 {
        self.kind.exit_code()
    }
}

impl std::ops::Deref for Error {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if let Some(loc) = &self.loc {
            write!(f, "{}:{}:{}: ", loc.path, loc.line, loc.col)?;
        }
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_is_quoted_as_a_window() {
        let src = format!("{}X{}", "a".repeat(5000), "b".repeat(5000));
        let e = Error::at("f", 1, 5001, "bad").with_source(&src);
        let text = e.to_string();
        assert!(text.len() < 400, "{text}");
        let lines: Vec<&str> = text.lines().collect();
        let caret = lines[2].find('^').unwrap();
        assert_eq!(lines[1].as_bytes()[caret], b'X');
        assert_eq!(e.without_quote().to_string(), "f:1:5001: bad");
    }
}
