//! The job's result as the orchestrator sees it: job and step states as
//! enums, turned into protocol strings here and nowhere else, and the status
//! body (docs/protocol.md, "PUT status") written by miniserde.

use crate::logs::commands::{Annotation, Level};
use miniserde::ser::{Fragment, Map, Serialize};
use std::borrow::Cow;

/// How a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    /// The runner could not do its part: bad input, a failed fetch, a bug.
    Error,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed_out",
            JobState::Error => "error",
        }
    }
}

/// How one step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepState {
    Succeeded,
    Failed,
    Skipped,
    TimedOut,
    Cancelled,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
            StepState::TimedOut => "timed_out",
            StepState::Cancelled => "cancelled",
        }
    }

    /// The summary table's word for it.
    pub fn words(self) -> &'static str {
        match self {
            StepState::Succeeded => "ok",
            StepState::TimedOut => "timed out",
            other => other.as_str(),
        }
    }
}

/// What became of an artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArtifactState {
    Uploaded,
    /// Written beside the workdir: there is no orchestrator.
    Written,
    Failed,
    TooLarge,
    /// No path matched anything.
    Empty,
}

impl ArtifactState {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactState::Uploaded => "uploaded",
            ArtifactState::Written => "written",
            ArtifactState::Failed => "failed",
            ArtifactState::TooLarge => "too_large",
            ArtifactState::Empty => "empty",
        }
    }
}

/// An artifact in the final status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactReport {
    pub name: String,
    /// Entries in the archive: files, directories and links.
    pub files: u64,
    /// The archive's length as sent.
    pub bytes: u64,
    /// Its SHA-256 in hex, as sent; empty when there is no archive.
    pub sha256: String,
    pub state: ArtifactState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepReport {
    pub name: String,
    pub state: StepState,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// What the step wrote to `SOLSTICE_OUTPUT`, masked; reported when any.
    pub outputs: Vec<(String, String)>,
}

/// What the runner reports in `PUT status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub state: JobState,
    pub exit_code: Option<i32>,
    /// Why the job did not succeed, in a short sentence; `None` on success.
    pub reason: Option<String>,
    /// While running: the step that runs now.
    pub step: Option<String>,
    pub steps: Vec<StepReport>,
    /// `::error::`, `::warning::` and `::notice::` lines, with the step
    /// that printed each (masked), within their caps.
    pub annotations: Vec<Annotation>,
    /// How many annotations the caps left out.
    pub annotations_dropped: u64,
    pub artifacts: Vec<ArtifactReport>,
}

impl Status {
    pub fn running(step: Option<String>) -> Status {
        Status {
            state: JobState::Running,
            exit_code: None,
            reason: None,
            step,
            steps: Vec::new(),
            annotations: Vec::new(),
            annotations_dropped: 0,
            artifacts: Vec::new(),
        }
    }

    /// The body of `PUT status`, with `log_length` as documented.
    pub fn body(&self, log_length: u64) -> String {
        miniserde::json::to_string(&Body {
            status: self,
            log_length,
        })
    }
}

struct Body<'a> {
    status: &'a Status,
    log_length: u64,
}

/// One field of a JSON object, by its place in the documented order.
enum Field<'a> {
    Is(&'static str, &'a dyn Serialize),
    /// Pairs of strings, written as an object of their own.
    Pairs(&'static str, &'a [(String, String)]),
    /// An absent field: left out rather than written as null.
    Absent,
    /// Past the last field.
    End,
}

/// A struct miniserde writes as a JSON object, a field at a time.
trait Fields {
    fn field(&self, i: usize) -> Field<'_>;
}

/// Walks the fields of `of` in order, skipping the absent ones.
struct Walk<'a, T> {
    of: &'a T,
    next: usize,
    /// The object a `Field::Pairs` is written as.
    pairs: Pairs<'a>,
}

impl<T: Fields> Map for Walk<'_, T> {
    fn next(&mut self) -> Option<(Cow<'_, str>, &dyn Serialize)> {
        loop {
            self.next += 1;
            match self.of.field(self.next - 1) {
                Field::Is(key, value) => return Some((Cow::Borrowed(key), value)),
                Field::Pairs(key, pairs) => {
                    self.pairs = Pairs(pairs, 0);
                    return Some((Cow::Borrowed(key), &self.pairs));
                }
                Field::Absent => {}
                Field::End => return None,
            }
        }
    }
}

/// `Serialize` for types with `Fields`.
macro_rules! serialize_fields {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn begin(&self) -> Fragment<'_> {
                Fragment::Map(Box::new(Walk { of: self, next: 0, pairs: Pairs(&[], 0) }))
            }
        }
    )*};
}
serialize_fields!(Body<'_>, StepReport, Annotation, ArtifactReport);

/// Pairs of strings as a JSON object, and, while it is written, the next
/// pair.
struct Pairs<'a>(&'a [(String, String)], usize);

impl Serialize for Pairs<'_> {
    fn begin(&self) -> Fragment<'_> {
        Fragment::Map(Box::new(Pairs(self.0, 0)))
    }
}

impl Map for Pairs<'_> {
    fn next(&mut self) -> Option<(Cow<'_, str>, &dyn Serialize)> {
        let (k, v) = self.0.get(self.1)?;
        self.1 += 1;
        Some((Cow::Borrowed(k.as_str()), v))
    }
}

const RUNNER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A field that is there when the value is.
fn some<'a, T: Serialize>(key: &'static str, value: &'a Option<T>) -> Field<'a> {
    match value {
        Some(v) => Field::Is(key, v),
        None => Field::Absent,
    }
}

impl Fields for Body<'_> {
    fn field(&self, i: usize) -> Field<'_> {
        let s = self.status;
        match i {
            0 => Field::Is("state", &s.state),
            1 => Field::Is("exit_code", &s.exit_code),
            2 => Field::Is("log_length", &self.log_length),
            3 => Field::Is("runner_version", &RUNNER_VERSION),
            4 => some("reason", &s.reason),
            5 => some("step", &s.step),
            6 => Field::Is("steps", &s.steps),
            7 if s.annotations.is_empty() => Field::Absent,
            7 => Field::Is("annotations", &s.annotations),
            8 if s.annotations_dropped == 0 => Field::Absent,
            8 => Field::Is("annotations_dropped", &s.annotations_dropped),
            9 if s.artifacts.is_empty() => Field::Absent,
            9 => Field::Is("artifacts", &s.artifacts),
            _ => Field::End,
        }
    }
}

impl Fields for StepReport {
    fn field(&self, i: usize) -> Field<'_> {
        match i {
            0 => Field::Is("name", &self.name),
            1 => Field::Is("state", &self.state),
            2 => Field::Is("exit_code", &self.exit_code),
            3 => Field::Is("duration_ms", &self.duration_ms),
            4 if self.outputs.is_empty() => Field::Absent,
            4 => Field::Pairs("outputs", &self.outputs),
            _ => Field::End,
        }
    }
}

/// An annotation as a JSON object, absent fields left out.
impl Fields for Annotation {
    fn field(&self, i: usize) -> Field<'_> {
        match i {
            0 => Field::Is("level", self.level.as_ref().unwrap_or(&Level::Notice)),
            1 => Field::Is("message", &self.message),
            // job.sh's annotations have no step.
            2 if self.step.is_empty() => Field::Absent,
            2 => Field::Is("step", &self.step),
            3 => some("file", &self.file),
            4 => some("line", &self.line),
            5 => some("end_line", &self.end_line),
            6 => some("col", &self.col),
            7 => some("end_col", &self.end_col),
            8 => some("title", &self.title),
            _ => Field::End,
        }
    }
}

impl Fields for ArtifactReport {
    fn field(&self, i: usize) -> Field<'_> {
        match i {
            0 => Field::Is("name", &self.name),
            1 => Field::Is("files", &self.files),
            2 => Field::Is("bytes", &self.bytes),
            3 => Field::Is("sha256", &self.sha256),
            4 => Field::Is("state", &self.state),
            _ => Field::End,
        }
    }
}

/// `Serialize` for the states, as their protocol strings.
macro_rules! serialize_as_str {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn begin(&self) -> Fragment<'_> {
                Fragment::Str(Cow::Borrowed(self.as_str()))
            }
        }
    )*};
}
serialize_as_str!(JobState, StepState, ArtifactState, Level);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_keep_the_documented_order_and_leave_absent_fields_out() {
        let running = Status::running(None).body(0);
        assert_eq!(
            running,
            concat!(
                r#"{"state":"running","exit_code":null,"log_length":0,"runner_version":""#,
                env!("CARGO_PKG_VERSION"),
                r#"","steps":[]}"#
            )
        );
        let done = Status {
            state: JobState::Failed,
            exit_code: Some(3),
            reason: Some("step \"test\" failed with exit code 3".into()),
            step: None,
            steps: vec![StepReport {
                name: "te\"st".into(),
                state: StepState::Failed,
                exit_code: Some(3),
                duration_ms: 12,
                outputs: vec![("version".into(), "1.2".into())],
            }],
            annotations: vec![Annotation {
                level: Some(crate::logs::commands::Level::Error),
                message: "bad".into(),
                step: "te\"st".into(),
                file: Some("a.rs".into()),
                line: Some(3),
                ..Annotation::default()
            }],
            annotations_dropped: 2,
            artifacts: vec![ArtifactReport {
                name: "dist".into(),
                files: 2,
                bytes: 1024,
                sha256: "ab".into(),
                state: ArtifactState::TooLarge,
            }],
        };
        let body = done.body(207);
        assert!(body.starts_with(r#"{"state":"failed","exit_code":3,"log_length":207,"#));
        assert!(body.contains(r#""reason":"step \"test\" failed with exit code 3","steps":[{"name":"te\"st","state":"failed","exit_code":3,"duration_ms":12,"outputs":{"version":"1.2"}}],"annotations":[{"level":"error","message":"bad","step":"te\"st","file":"a.rs","line":3}],"annotations_dropped":2,"artifacts":[{"name":"dist","files":2,"bytes":1024,"sha256":"ab","state":"too_large"}]}"#), "{body}");
    }
}
