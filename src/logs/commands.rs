//! Workflow commands: a line of the job's output of the form
//! `::name key=value,key=value::message` speaks to the runner, with GitHub
//! Actions' names and escapes, so a script written for GitHub runs
//! unchanged. This module reads such a line; the pipeline acts on it.

/// A command line, read. Messages and property values are unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    AddMask(String),
    Group(String),
    EndGroup,
    Annotation(Annotation),
    Debug(String),
    /// `::stop-commands::TOKEN`: no command is read until `::TOKEN::`.
    StopCommands(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Notice,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
        }
    }
}

/// An `::error`, `::warning` or `::notice` line's content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Annotation {
    pub level: Option<Level>,
    pub message: String,
    /// The step that printed it (set by the pipeline, masked).
    pub step: String,
    pub file: Option<String>,
    pub line: Option<u64>,
    pub end_line: Option<u64>,
    pub col: Option<u64>,
    pub end_col: Option<u64>,
    pub title: Option<String>,
}

/// Reads `line` (without its line end) as a command; `None` when it is not
/// one the runner knows, which keeps it ordinary output.
pub fn parse(line: &[u8]) -> Option<Command> {
    let rest = line.strip_prefix(b"::")?;
    let end = find(rest, b"::")?;
    let (head, message) = (&rest[..end], &rest[end + 2..]);
    // The name ends at the first space; properties follow it.
    let (name, props) = match head.iter().position(|&b| b == b' ') {
        Some(i) => (&head[..i], &head[i + 1..]),
        None => (head, &b""[..]),
    };
    let message = unescape(message, false);
    let level = match name {
        b"add-mask" => return Some(Command::AddMask(message)),
        b"group" => return Some(Command::Group(message)),
        b"endgroup" => return Some(Command::EndGroup),
        b"debug" => return Some(Command::Debug(message)),
        b"stop-commands" if !message.is_empty() => return Some(Command::StopCommands(message)),
        b"error" => Level::Error,
        b"warning" => Level::Warning,
        b"notice" => Level::Notice,
        _ => return None,
    };
    let mut a = Annotation {
        level: Some(level),
        message,
        ..Annotation::default()
    };
    for prop in props.split(|&b| b == b',') {
        let Some(eq) = prop.iter().position(|&b| b == b'=') else {
            continue;
        };
        let key = prop[..eq].trim_ascii();
        let value = unescape(&prop[eq + 1..], true);
        let number = || value.trim().parse::<u64>().ok();
        match key {
            b"file" => a.file = Some(value),
            b"line" => a.line = number(),
            b"endLine" => a.end_line = number(),
            b"col" => a.col = number(),
            b"endColumn" => a.end_col = number(),
            b"title" => a.title = Some(value),
            // Unknown properties are ignored, as GitHub's runner does.
            _ => {}
        }
    }
    Some(Command::Annotation(a))
}

/// Whether `line` ends a `::stop-commands::TOKEN` section: `::TOKEN::`.
pub fn resumes(line: &[u8], token: &str) -> bool {
    line.strip_prefix(b"::")
        .and_then(|l| l.strip_suffix(b"::"))
        .is_some_and(|t| t == token.as_bytes())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// GitHub's escapes: `%25` `%0D` `%0A` everywhere, and in property values
/// also `%3A` and `%2C`. Anything else stays as written; invalid UTF-8
/// becomes U+FFFD.
fn unescape(text: &[u8], property: bool) -> String {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        let code = text.get(i + 1..i + 3).filter(|_| b == b'%');
        let decoded = match code {
            Some(b"25") => Some(b'%'),
            Some(b"0D" | b"0d") => Some(b'\r'),
            Some(b"0A" | b"0a") => Some(b'\n'),
            Some(b"3A" | b"3a") if property => Some(b':'),
            Some(b"2C" | b"2c") if property => Some(b','),
            _ => None,
        };
        match decoded {
            Some(d) => {
                out.push(d);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(
            parse(b"::add-mask::s3cret"),
            Some(Command::AddMask("s3cret".into()))
        );
        assert_eq!(
            parse(b"::group::Build %25 test"),
            Some(Command::Group("Build % test".into()))
        );
        assert_eq!(parse(b"::endgroup::"), Some(Command::EndGroup));
        assert_eq!(
            parse(b"::debug::a%0Ab"),
            Some(Command::Debug("a\nb".into()))
        );
        assert_eq!(
            parse(b"::stop-commands::tok"),
            Some(Command::StopCommands("tok".into()))
        );
        assert_eq!(parse(b"::stop-commands::"), None);
        assert_eq!(parse(b"::nope::x"), None);
        assert_eq!(parse(b":: group::x"), None);
        assert_eq!(parse(b"::group"), None);
        assert_eq!(parse(b"plain ::group::x"), None);
        let Some(Command::Annotation(a)) = parse(
            b"::error file=src/a%2Cb.rs,line=3,endLine=4,col=5,endColumn=9,title=T%3A x,zz=1::bad %0D%0Athing",
        ) else {
            panic!("not an annotation")
        };
        assert_eq!(a.level, Some(Level::Error));
        assert_eq!(a.file.as_deref(), Some("src/a,b.rs"));
        assert_eq!(
            (a.line, a.end_line, a.col, a.end_col),
            (Some(3), Some(4), Some(5), Some(9))
        );
        assert_eq!(a.title.as_deref(), Some("T: x"));
        assert_eq!(a.message, "bad \r\nthing");
        // %3A is only an escape in properties.
        let Some(Command::Annotation(a)) = parse(b"::notice::a%3Ab") else {
            panic!()
        };
        assert_eq!(a.message, "a%3Ab");
        assert!(resumes(b"::tok::", "tok"));
        assert!(!resumes(b"::tok:: ", "tok"));
    }
}
