//! Processes: starts a command (the job, a step, git) in a process group of
//! its own with `std::process`, and supervises it in one poll loop over its
//! two output pipes and the signal wake-up: the output goes to a sink as it
//! arrives, timeouts and cancellation send TERM to the group, the grace
//! later KILL, and whatever the job left behind is killed when it ends.
//!
//! The group is signalled only while its leader is unreaped: the loop sees
//! the leader's exit with `sys::peek_exit`, which leaves the zombie in place,
//! so the group id cannot have passed to an unrelated process. The leader is
//! reaped last, after the final KILL to its group.

use crate::sys;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::process::{ChildStderr, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a job's leftover background processes may keep its output pipes
/// open after its main process exited, before the group is killed.
const DRAIN: Duration = Duration::from_millis(500);
/// The longest the loop sleeps without looking at the clock.
const TICK: Duration = Duration::from_millis(100);

/// Limits on one supervised process.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub deadline: Option<Instant>,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Stop requests (`sys::stop_count`) already answered. 0 for everything
    /// but cleanup steps, which run after the cancel that started the
    /// cleanup and are stopped, at once, only by a further one.
    pub stops_seen: u32,
}

impl Limits {
    pub fn new(deadline: Option<Instant>, grace: Duration) -> Limits {
        Limits {
            deadline,
            grace,
            stops_seen: 0,
        }
    }
}

/// How a supervised process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    Cancelled(i32),
}

impl End {
    /// The exit code the runner reports: the code itself, 128+N for signal
    /// N, 124 for a timeout.
    pub fn exit_code(self) -> i32 {
        match self {
            End::Exited(code) => code,
            End::Signaled(sig) | End::Cancelled(sig) => 128 + sig,
            End::TimedOut => crate::error::EXIT_TIMEOUT,
        }
    }
}

/// What the supervised process's output did. Stream 0 is stdout, 1 stderr.
pub enum Output<'a> {
    Data(usize, &'a [u8]),
    End(usize),
    /// No output for a while: the log pipeline shows unfinished lines then.
    Idle,
    /// The process is about to be stopped (timeout or cancel), with why;
    /// the caller may log what is running first.
    Stopping(u32, End),
}

/// `program` with the environment of `config::child_env(also)`; the
/// command's own settings come on top.
pub fn command(program: impl AsRef<std::ffi::OsStr>, also: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear().envs(crate::config::child_env(also));
    cmd
}

/// Runs `cmd` in a new process group, hands its output to `sink` as it
/// arrives, and supervises it to the end. Fails only when it cannot start.
pub fn run(mut cmd: Command, limits: Limits, sink: &mut dyn FnMut(Output)) -> io::Result<End> {
    sys::install_signal_handlers()?;
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    sys::kill_with_runner(&mut cmd);
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let mut out = Pipes {
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
    };
    for fd in [
        out.stdout.as_ref().map(|p| p.as_fd()),
        out.stderr.as_ref().map(|p| p.as_fd()),
    ]
    .into_iter()
    .flatten()
    {
        sys::grow_pipe(fd, 1 << 20);
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut exit: Option<sys::Exit> = None;
    // Why the group is being stopped, and when TERM becomes KILL.
    let mut stopping: Option<(End, Instant)> = None;
    let mut drain_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if exit.is_none() {
            exit = sys::peek_exit(pid)?;
        }
        let mut wake_at = now + TICK;
        match stopping {
            Some((_, kill_at)) => {
                if now >= kill_at {
                    sys::signal_group(pid, libc::SIGKILL);
                }
                wake_at = wake_at.min(kill_at);
            }
            None => {
                let stop = sys::stop_count() > limits.stops_seen;
                let reason = match (sys::cancelled().filter(|_| stop), limits.deadline) {
                    (Some(sig), _) => Some(End::Cancelled(sig)),
                    // A process that has exited is past timing out.
                    (None, Some(d)) if exit.is_none() => {
                        wake_at = wake_at.min(d);
                        (now >= d).then_some(End::TimedOut)
                    }
                    _ => None,
                };
                if let Some(reason) = reason {
                    sink(Output::Stopping(pid, reason));
                    sys::signal_group(pid, libc::SIGTERM);
                    // A further stop during the cleanup means "now".
                    let at_once = limits.stops_seen > 0 && matches!(reason, End::Cancelled(_));
                    let grace = if at_once {
                        Duration::ZERO
                    } else {
                        limits.grace
                    };
                    stopping = Some((reason, now + grace));
                    continue;
                }
            }
        }
        if exit.is_some() {
            if out.closed() {
                break;
            }
            // Leftover background processes holding the pipes get a short
            // drain, then the group goes, so they cannot hang the VM.
            let until = *drain_until.get_or_insert(now + DRAIN);
            if now >= until {
                break;
            }
            wake_at = wake_at.min(until);
        }
        let ready = sys::poll_read(out.fds(), wake_at.saturating_duration_since(now))?;
        if ready == [false; 2] && Instant::now() >= wake_at {
            sink(Output::Idle);
        }
        for (i, r) in ready.into_iter().enumerate() {
            if r {
                out.pump(i, &mut buf, sink);
            }
        }
    }
    // The leader is still unreaped here (at worst a zombie), so its group id
    // is still the job's.
    sys::signal_group(pid, libc::SIGKILL);
    // Whatever is still buffered in a pipe held open by a process outside
    // the group is read while it is ready, so the last lines are not lost.
    while !out.closed() {
        let ready = sys::poll_read(out.fds(), Duration::ZERO)?;
        if ready == [false; 2] {
            break;
        }
        for (i, r) in ready.into_iter().enumerate() {
            if r {
                out.pump(i, &mut buf, sink);
            }
        }
    }
    for i in 0..2 {
        if out.is_open(i) {
            out.close(i, sink);
        }
    }
    let status = child.wait()?;
    reap_orphans();
    use std::os::unix::process::ExitStatusExt;
    Ok(match (stopping, exit) {
        (Some((reason, _)), _) => reason,
        (None, Some(sys::Exit::Code(c))) => End::Exited(c),
        (None, Some(sys::Exit::Signal(s))) => End::Signaled(s),
        (None, None) => match (status.code(), status.signal()) {
            (Some(c), _) => End::Exited(c),
            (None, Some(s)) => End::Signaled(s),
            _ => End::Exited(1),
        },
    })
}

/// The child's two output pipes; `None` once a stream has ended.
struct Pipes {
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

impl Pipes {
    fn fds(&self) -> [Option<std::os::fd::BorrowedFd<'_>>; 2] {
        [
            self.stdout.as_ref().map(|p| p.as_fd()),
            self.stderr.as_ref().map(|p| p.as_fd()),
        ]
    }

    fn closed(&self) -> bool {
        self.stdout.is_none() && self.stderr.is_none()
    }

    fn is_open(&self, i: usize) -> bool {
        match i {
            0 => self.stdout.is_some(),
            _ => self.stderr.is_some(),
        }
    }

    fn close(&mut self, i: usize, sink: &mut dyn FnMut(Output)) {
        match i {
            0 => self.stdout = None,
            _ => self.stderr = None,
        }
        sink(Output::End(i));
    }

    /// Reads once from stream `i` (poll said it is ready, so this does not
    /// block): hands over what came, or closes the stream at its end or on
    /// an error.
    fn pump(&mut self, i: usize, buf: &mut [u8], sink: &mut dyn FnMut(Output)) {
        let got = loop {
            let r = match i {
                0 => self.stdout.as_mut().map(|p| p.read(buf)),
                _ => self.stderr.as_mut().map(|p| p.read(buf)),
            };
            match r {
                Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Some(r) => break r.unwrap_or(0),
                None => return,
            }
        };
        match buf.get(..got) {
            Some(data) if got > 0 => sink(Output::Data(i, data)),
            _ => self.close(i, sink),
        }
    }
}

/// Kills and reaps what is left of a job outside its process group: the
/// runner is a child subreaper, so such processes became its children when
/// their parents died. A killed process's own children are re-parented to
/// the runner in turn, hence the rounds. Never blocks: a process that does
/// not die at once (stuck in the kernel) is left, and reaped by a later call.
/// (illumos has no subreaper; there only the group is killed.)
#[cfg(target_os = "linux")]
pub fn reap_orphans() {
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let orphans = children_of(me);
        if orphans.is_empty() {
            return;
        }
        for &pid in &orphans {
            sys::kill_child(pid);
        }
        let left: Vec<u32> = orphans
            .into_iter()
            .filter(|&p| !sys::reap_if_ended(p))
            .collect();
        if !left.is_empty() && Instant::now() >= deadline {
            let pids: Vec<String> = left.iter().map(u32::to_string).collect();
            warn!(
                "{} leftover job process(es) did not end after SIGKILL (pids {}); continuing without them",
                left.len(),
                pids.join(", ")
            );
            return;
        }
        if !left.is_empty() {
            // Waits for a SIGCHLD (or 10 ms) rather than spinning.
            let _ = sys::poll_read::<0>([], Duration::from_millis(10));
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub fn reap_orphans() {}

/// The pids whose parent is `parent`, from /proc.
#[cfg(target_os = "linux")]
fn children_of(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if super::ps::parent_of(pid) == Some(parent) {
            pids.push(pid);
        }
    }
    pids
}

/// What a collected run produced.
pub struct Collected {
    pub end: End,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `cmd` and collects its output in memory (for git, whose output is
/// small); supervised like a job.
pub fn run_collected(cmd: Command, limits: Limits) -> io::Result<Collected> {
    let mut out = [Vec::new(), Vec::new()];
    let end = run(cmd, limits, &mut |event| {
        if let Output::Data(i, d) = event {
            if let Some(o) = out.get_mut(i) {
                o.extend_from_slice(d);
            }
        }
    })?;
    let [stdout, stderr] = out;
    Ok(Collected {
        end,
        stdout,
        stderr,
    })
}

/// Whole milliseconds of `d`, saturating.
pub fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// A signal's name for messages and reports: "SIGTERM", or "signal 42".
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}
