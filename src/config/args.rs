//! The command line as the user typed it, through lexopt (the design card's
//! parser): `--flag value`, `--flag=value`, `-h`/`-V`, and `--` ending the
//! options. Nothing here is validated beyond its shape; `config::resolve`
//! turns these raw values into settings.

use crate::error::{Error, Result};
use std::ffi::OsString;

pub const HELP: &str = "\
solstice-runner: fetch a repository at an exact commit and run its Solstice CI job

USAGE:
    solstice-runner [OPTIONS]            run the job
    solstice-runner check [FILE]         validate a workflow (default .solstice/workflow.kdl)

OPTIONS (each overrides its environment variable, which overrides the job file):
    --repo-url URL      repository to fetch            SOLSTICE_REPO_URL    repo_url
    --commit SHA        full commit id to check out    SOLSTICE_COMMIT_SHA  commit_sha
    --workdir DIR       where to check it out          SOLSTICE_WORKDIR     workdir (default /root/work)
    --job NAME          workflow job to run            SOLSTICE_JOB         job
    --job-file PATH     job file (default /etc/solstice/job.yaml; SOLSTICE_JOB_FILE)
    --dry-run           print every setting with its source, and the plan; fetch and run nothing
    -h, --help          print this help
    -V, --version       print the version

EXIT CODES:
    the job's own code; 128+N if it died of signal N; 124 if a timeout killed it;
    250 internal error, 251 bad input, 252 fetch failed
";

/// Values given on the command line; `None` when the flag was not given.
/// A repeated flag: the first one counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub repo_url: Option<String>,
    pub commit: Option<String>,
    pub workdir: Option<String>,
    pub job: Option<String>,
    pub job_file: Option<String>,
}

/// What the runner was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Run { dry_run: bool },
    Check(Option<String>),
    Help,
    Version,
}

/// Parses the process's arguments.
pub fn parse() -> Result<(Command, Flags)> {
    parse_from(std::env::args_os().skip(1))
}

/// Parses `args` (without the program name).
pub fn parse_from(args: impl IntoIterator<Item = OsString>) -> Result<(Command, Flags)> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut flags = Flags::default();
    let mut dry_run = false;
    let mut check: Option<Option<String>> = None;
    while let Some(arg) = parser.next().map_err(usage)? {
        let slot = match arg {
            Short('h') | Long("help") => return Ok((Command::Help, flags)),
            Short('V') | Long("version") => return Ok((Command::Version, flags)),
            Long("dry-run") => {
                dry_run = true;
                continue;
            }
            Long("repo-url") => &mut flags.repo_url,
            Long("commit") => &mut flags.commit,
            Long("workdir") => &mut flags.workdir,
            Long("job") => &mut flags.job,
            Long("job-file") => &mut flags.job_file,
            Value(v) => {
                let v = string(v)?;
                if check.is_none() && v == "check" {
                    check = Some(None);
                } else if check == Some(None) {
                    check = Some(Some(v));
                } else if v != "run" {
                    return Err(usage(Value(v.into()).unexpected()));
                }
                continue;
            }
            other => return Err(usage(other.unexpected())),
        };
        let value = string(parser.value().map_err(usage)?)?;
        slot.get_or_insert(value);
    }
    Ok(match check {
        Some(file) => (Command::Check(file), flags),
        None => (Command::Run { dry_run }, flags),
    })
}

fn usage(e: lexopt::Error) -> Error {
    Error::input(format!("{e} (see --help)"))
}

fn string(v: OsString) -> Result<String> {
    v.into_string()
        .map_err(|v| Error::input(format!("argument {v:?} is not valid UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<(Command, Flags)> {
        parse_from(args.iter().map(OsString::from))
    }

    #[test]
    fn flags_and_commands() {
        let (cmd, f) = parse(&["--repo-url", "u", "--commit=c", "--repo-url", "x"]).unwrap();
        assert_eq!(cmd, Command::Run { dry_run: false });
        assert_eq!(f.repo_url.as_deref(), Some("u"));
        assert_eq!(f.commit.as_deref(), Some("c"));
        let (cmd, _) = parse(&["check", "f.kdl"]).unwrap();
        assert_eq!(cmd, Command::Check(Some("f.kdl".into())));
        assert_eq!(
            parse(&["--dry-run"]).unwrap().0,
            Command::Run { dry_run: true }
        );
        assert!(parse(&["--nope"]).is_err());
        assert!(parse(&["check", "a", "b"]).is_err());
        assert!(parse(&["--workdir"]).is_err());
    }
}
