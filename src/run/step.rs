//! One step from start to end: its command (program, environment layers,
//! working directory), the files it may write to talk back to the runner,
//! its output through the log pipeline, and what it said in those files.
//! A `Session` holds what the steps of one job hand on to each other.

use super::interface::{self, File};
use super::process::{self, End, Limits};
use super::{cancel_reason, ps};
use crate::config::Config;
use crate::error::Result;
use crate::files::private::PrivateDir;
use crate::logs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the steps of one job share: the private directory for scripts and
/// talk-back files, and what earlier steps asked for.
pub struct Session<'a> {
    pub cfg: &'a Config,
    dir: PrivateDir,
    /// `SOLSTICE_ENV` settings of earlier steps, in order.
    env: Vec<(String, String)>,
    /// `SOLSTICE_PATH` directories of earlier steps, in the order written.
    path: Vec<String>,
    /// `SOLSTICE_ARTIFACTS` globs of every step so far.
    pub artifacts: Vec<String>,
    /// Steps started so far: each gets files of its own.
    started: usize,
}

/// How a step went.
pub struct Ran {
    pub end: End,
    /// What it wrote to `SOLSTICE_OUTPUT`, masked.
    pub outputs: Vec<(String, String)>,
    /// A file it wrote that the runner could not take: this fails the step.
    pub refused: Option<String>,
}

impl<'a> Session<'a> {
    pub fn new(cfg: &'a Config) -> Result<Session<'a>> {
        Ok(Session {
            cfg,
            dir: PrivateDir::create("job")?,
            env: Vec::new(),
            path: Vec::new(),
            artifacts: Vec::new(),
            started: 0,
        })
    }

    /// Writes a step's script into the private directory.
    pub fn script(&self, text: &str) -> Result<PathBuf> {
        let mut text = text.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let name = format!("step-{}.sh", self.started + 1);
        self.dir.write(&name, text.as_bytes())
    }

    /// The command a job process starts from: the runner's environment
    /// (without its credentials), plus what tells the job where it runs.
    pub fn command(&self, program: &Path) -> Command {
        let cfg = self.cfg;
        let mut cmd = process::command(program, &[]);
        cmd.current_dir(&cfg.workdir.value)
            .env("CI", "true")
            .env("SOLSTICE_WORKSPACE", &cfg.workdir.value)
            .env("SOLSTICE_REPO_URL", &cfg.repo.value.display)
            .env("SOLSTICE_COMMIT_SHA", &cfg.commit.value);
        cmd
    }

    /// Runs `cmd` as the step `name` (`step`: the name its log events carry).
    /// The environment layers, each over the one before: `below` (the
    /// workflow's and the job's), what earlier steps set with
    /// `SOLSTICE_ENV`, `above` (the step's own), then `fixed` (its secrets
    /// and names, which no layer may change). Fails only when it cannot
    /// start.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &mut self,
        name: &str,
        step: Option<&str>,
        mut cmd: Command,
        below: &[&[(String, String)]],
        above: &[(String, String)],
        fixed: &[(&str, &str)],
        limits: Limits,
    ) -> io::Result<Ran> {
        self.started += 1;
        let n = self.started;
        let layers = below.iter().copied().chain([&self.env[..], above]);
        let mut path_var = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        let mut debug = self.cfg.step_debug.value;
        for layer in layers {
            for (k, v) in layer {
                cmd.env(k, v);
                match k.as_str() {
                    "PATH" => path_var.clone_from(v),
                    "SOLSTICE_STEP_DEBUG" => debug = crate::config::parse_bool(v).unwrap_or(debug),
                    _ => {}
                }
            }
        }
        if !self.path.is_empty() {
            // The directory written last comes first.
            let mut p: Vec<&str> = self.path.iter().rev().map(String::as_str).collect();
            p.push(&path_var);
            cmd.env("PATH", p.join(":"));
        }
        cmd.envs(fixed.iter().copied());
        let mut files = Vec::new();
        for f in File::ALL {
            let path = self
                .dir
                .write(&format!("{n}-{}", f.name()), b"")
                .map_err(|e| io::Error::other(e.msg.clone()))?;
            let (var, alias) = f.vars();
            cmd.env(var, &path);
            if let Some(alias) = alias {
                cmd.env(alias, &path);
            }
            files.push((f, path));
        }
        logs::set_step(step, debug);
        let end = run_logged(cmd, limits);
        let ran = end.map(|end| self.after(name, end, &files));
        logs::set_step(None, false);
        ran
    }

    /// Reads what the step wrote to its files.
    fn after(&mut self, name: &str, end: End, files: &[(File, PathBuf)]) -> Ran {
        let mut ran = Ran {
            end,
            outputs: Vec::new(),
            refused: None,
        };
        for (f, path) in files {
            let var = f.vars().0;
            let cut = *f == File::Summary;
            let text = match interface::read(path, var, cut) {
                Ok(Some((text, over))) => {
                    if over {
                        warn!("step \"{name}\": the summary is over 1 MiB; only its first 1 MiB is kept");
                    }
                    text
                }
                Ok(None) => continue,
                Err(e) => {
                    ran.refused.get_or_insert(e);
                    continue;
                }
            };
            let taken = match f {
                File::Env => interface::vars(&text, var).map(|v| {
                    for (k, val) in v {
                        self.env.retain(|(e, _)| *e != k);
                        self.env.push((k, val));
                    }
                }),
                File::Path => interface::dirs(&text, var).map(|d| self.path.extend(d)),
                File::Output => interface::vars(&text, var).map(|v| {
                    ran.outputs = v
                        .into_iter()
                        .map(|(k, val)| (logs::mask(&k), logs::mask(&val)))
                        .collect();
                }),
                File::Summary => {
                    let mut c = logs::Capture::summary();
                    c.feed(Some(&text));
                    c.feed(None);
                    Ok(())
                }
                File::Artifacts => interface::dirs(&text, var).map(|g| self.artifacts.extend(g)),
            };
            if let Err(e) = taken {
                ran.refused.get_or_insert(e);
            }
        }
        if let Some(e) = &ran.refused {
            error!("step \"{name}\": {e}");
        }
        ran
    }
}

/// Runs `cmd` with its output through the log pipeline. Before a timeout or
/// a cancel stops it, the job's processes are logged, so a hung job can be
/// diagnosed from its log.
fn run_logged(cmd: Command, limits: Limits) -> io::Result<End> {
    let mut captures = [logs::Capture::stdout(), logs::Capture::stderr()];
    process::run(cmd, limits, &mut |event| match event {
        process::Output::Data(i, data) => {
            if let Some(c) = captures.get_mut(i) {
                c.feed(Some(data))
            }
        }
        process::Output::End(i) => {
            if let Some(c) = captures.get_mut(i) {
                c.feed(None)
            }
        }
        process::Output::Idle => captures.iter_mut().for_each(logs::Capture::idle),
        process::Output::Stopping(_, why) => {
            let what = match why {
                End::TimedOut => "timed out".to_string(),
                End::Cancelled(sig) => format!("was cancelled ({})", cancel_reason(sig)),
                _ => "stopping".to_string(),
            };
            let grace = crate::config::duration_words(limits.grace);
            warn!("the job {what}; sending SIGTERM to its processes, SIGKILL follows in {grace}");
            for line in ps::listing() {
                warn!("{line}");
            }
        }
    })
}
