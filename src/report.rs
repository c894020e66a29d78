//! The job's result as the orchestrator sees it: job and step states as
//! enums, turned into protocol strings here and nowhere else, and the status
//! body (docs/protocol.md, "PUT status") written by miniserde.

use crate::logs::commands::Annotation;
use miniserde::ser::{Fragment, Map, Seq, Serialize};
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

/// Walks the fields of a map one by one, skipping the absent ones, so
/// optional fields are left out rather than written as null.
pub struct Fields<'a> {
    items: Vec<(&'a str, Box<dyn Serialize + 'a>)>,
    next: usize,
}

impl<'a> Default for Fields<'a> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Fields<'a> {
    pub fn new() -> Fields<'a> {
        Fields {
            items: Vec::new(),
            next: 0,
        }
    }

    /// Adds a field.
    pub fn with(mut self, key: &'a str, value: impl Serialize + 'a) -> Fields<'a> {
        self.items.push((key, Box::new(value)));
        self
    }

    /// Adds a field when there is a value.
    pub fn with_some<T: Serialize>(self, key: &'a str, value: &'a Option<T>) -> Fields<'a> {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }

    pub fn fragment(self) -> Fragment<'a> {
        Fragment::Map(Box::new(self))
    }
}

impl Map for Fields<'_> {
    fn next(&mut self) -> Option<(Cow<'_, str>, &dyn Serialize)> {
        let (k, v) = self.items.get(self.next)?;
        self.next += 1;
        Some((Cow::Borrowed(*k), &**v))
    }
}

const RUNNER_VERSION: &str = env!("CARGO_PKG_VERSION");

impl Serialize for Body<'_> {
    fn begin(&self) -> Fragment<'_> {
        let s = self.status;
        let fields = Fields::new()
            .with("state", s.state)
            .with("exit_code", s.exit_code)
            .with("log_length", self.log_length)
            .with("runner_version", RUNNER_VERSION)
            .with_some("reason", &s.reason)
            .with_some("step", &s.step)
            .with("steps", List(&s.steps));
        let fields = match s.annotations.is_empty() {
            true => fields,
            false => fields.with("annotations", List(&s.annotations)),
        };
        let fields = match s.annotations_dropped {
            0 => fields,
            n => fields.with("annotations_dropped", n),
        };
        match s.artifacts.is_empty() {
            true => fields.fragment(),
            false => fields.with("artifacts", List(&s.artifacts)).fragment(),
        }
    }
}

/// A list miniserde writes as a JSON array.
pub struct List<'a, T>(pub &'a [T]);

impl<T: Serialize> Serialize for List<'_, T> {
    fn begin(&self) -> Fragment<'_> {
        Fragment::Seq(Box::new(Items(self.0.iter())))
    }
}

struct Items<'a, T>(std::slice::Iter<'a, T>);

impl<T: Serialize> Seq for Items<'_, T> {
    fn next(&mut self) -> Option<&dyn Serialize> {
        Some(self.0.next()?)
    }
}

impl Serialize for StepReport {
    fn begin(&self) -> Fragment<'_> {
        let fields = Fields::new()
            .with("name", &self.name)
            .with("state", self.state)
            .with("exit_code", self.exit_code)
            .with("duration_ms", self.duration_ms);
        if self.outputs.is_empty() {
            return fields.fragment();
        }
        fields.with("outputs", Object(&self.outputs)).fragment()
    }
}

/// An annotation as a JSON object, absent fields left out.
impl Serialize for Annotation {
    fn begin(&self) -> Fragment<'_> {
        let level = self.level.map_or("notice", |l| l.as_str());
        let fields = Fields::new()
            .with("level", level)
            .with("message", &self.message);
        // job.sh's annotations have no step.
        let fields = match self.step.is_empty() {
            true => fields,
            false => fields.with("step", &self.step),
        };
        fields
            .with_some("file", &self.file)
            .with_some("line", &self.line)
            .with_some("end_line", &self.end_line)
            .with_some("col", &self.col)
            .with_some("end_col", &self.end_col)
            .with_some("title", &self.title)
            .fragment()
    }
}

impl Serialize for ArtifactReport {
    fn begin(&self) -> Fragment<'_> {
        Fields::new()
            .with("name", &self.name)
            .with("files", self.files)
            .with("bytes", self.bytes)
            .with("sha256", &self.sha256)
            .with("state", self.state.as_str())
            .fragment()
    }
}

/// Pairs of strings miniserde writes as a JSON object.
pub struct Object<'a>(pub &'a [(String, String)]);

impl Serialize for Object<'_> {
    fn begin(&self) -> Fragment<'_> {
        let mut fields = Fields::new();
        for (k, v) in self.0 {
            fields.items.push((k.as_str(), Box::new(v)));
        }
        fields.fragment()
    }
}

impl Serialize for StepState {
    fn begin(&self) -> Fragment<'_> {
        Fragment::Str(Cow::Borrowed(self.as_str()))
    }
}

impl Serialize for JobState {
    fn begin(&self) -> Fragment<'_> {
        Fragment::Str(Cow::Borrowed(self.as_str()))
    }
}

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
