//! The runner's one error type, and the exit codes that classify its failures.
//!
//! A job's own exit code passes through unchanged, so the runner's failures use
//! codes a job is unlikely to produce and no signal can (128+N stops at 192 on
//! every supported OS): an orchestrator can tell "fix the input", "retry the VM"
//! and "report a bug" apart from "the build failed".

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
    /// The runner itself failed: I/O on its own files, a process it could not
    /// start, a bug.
    Internal,
}

impl Kind {
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Internal => 250,
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

/// Boxed, so a `Result` stays one word wide: moving a 100-byte error
/// through every `?` cost about 9 KB of the binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(Box<Inner>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inner {
    pub kind: Kind,
    pub loc: Option<Loc>,
    pub msg: String,
    /// Extra lines printed after the message: a quoted source line with a
    /// caret, or a hint.
    pub detail: String,
}

impl Error {
    pub fn new(kind: Kind, msg: impl Into<String>) -> Error {
        Error::make(kind, None, msg.into())
    }

    /// The one constructor: the generic ones above only convert `msg`.
    #[inline(never)]
    fn make(kind: Kind, loc: Option<Loc>, msg: String) -> Error {
        Error(Box::new(Inner {
            kind,
            loc,
            msg,
            detail: String::new(),
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

    /// An input error at `path:line:col`.
    pub fn at(path: &str, line: usize, col: usize, msg: impl Into<String>) -> Error {
        let loc = Loc {
            path: path.to_string(),
            line,
            col,
        };
        Error::make(Kind::Input, Some(loc), msg.into())
    }

    /// Adds the offending source line and a caret under `col`.
    pub fn with_source(mut self, src: &str) -> Error {
        let Some((line, col)) = self.loc.as_ref().map(|l| (l.line, l.col)) else {
            return self;
        };
        if let Some(text) = src.lines().nth(line.saturating_sub(1)) {
            let text = text.trim_end_matches('\r');
            let d = &mut self.detail;
            d.push_str("\n    ");
            d.push_str(text);
            d.push_str("\n    ");
            for c in text.chars().take(col.saturating_sub(1)) {
                d.push(if c == '\t' { '\t' } else { ' ' });
            }
            d.push('^');
        }
        self
    }

    pub fn with_hint(mut self, hint: &str) -> Error {
        self.detail.push_str("\n    hint: ");
        self.detail.push_str(hint);
        self
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

impl std::ops::DerefMut for Error {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if let Some(loc) = &self.loc {
            write!(f, "{}:{}:{}: ", loc.path, loc.line, loc.col)?;
        }
        f.write_str(&self.msg)?;
        f.write_str(&self.detail)
    }
}

impl std::error::Error for Error {}

/// `parts` joined: the one builder for messages that are only concatenation,
/// cheaper at each call site than `format!`.
#[inline(never)]
pub fn cat(parts: &[&str]) -> String {
    let mut s = String::new();
    for p in parts {
        s.push_str(p);
    }
    s
}

pub type Result<T> = std::result::Result<T, Error>;
