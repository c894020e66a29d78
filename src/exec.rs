//! Execution: starts a process in its own process group, feeds its output to
//! the log pipeline (or collects it), and supervises it: job timeout,
//! cancellation by SIGTERM/SIGINT with a grace period, and the killing of
//! whatever the process left behind, so nothing of the job outlives the runner.

use crate::output;
use crate::spool::Stream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a job's leftover background processes may keep its output pipes
/// open after its main process exited, before the group is killed.
const DRAIN: Duration = Duration::from_millis(500);

/// The signal that asked the runner to stop (0 while none did).
static CANCEL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    CANCEL.store(sig, Ordering::SeqCst);
}

/// Routes SIGTERM and SIGINT into a cancellation request that the
/// supervisor turns into TERM, grace, KILL for the job's process group.
pub fn install_signal_handlers() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; sigaction is given a zeroed, filled-in struct.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// The signal that cancelled the run, if any.
pub fn cancelled() -> Option<i32> {
    match CANCEL.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Limits on one supervised process.
#[derive(Clone, Copy)]
pub struct Limits {
    pub deadline: Option<Instant>,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
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

    pub fn success(self) -> bool {
        self == End::Exited(0)
    }

    fn from_status(status: ExitStatus) -> End {
        match (status.code(), status.signal()) {
            (Some(code), _) => End::Exited(code),
            (None, Some(sig)) => End::Signaled(sig),
            // Neither code nor signal cannot happen for a waited-for child;
            // report it as a failure rather than success.
            (None, None) => End::Exited(1),
        }
    }
}

fn kill_group(pgid: u32, sig: libc::c_int) {
    // SAFETY: plain syscall; a group that is already gone gives ESRCH.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), sig);
    }
}

/// Runs `cmd` in a new process group with its stdout and stderr streamed
/// through the log pipeline, and supervises it to the end.
pub fn run_streamed(cmd: &mut Command, limits: Limits) -> std::io::Result<End> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = cmd.spawn()?;
    let (done_tx, done_rx) = mpsc::channel();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let tx = done_tx.clone();
        readers.push(thread::spawn(move || {
            output::capture(out, Stream::Stdout);
            let _ = tx.send(());
        }));
    }
    if let Some(err) = child.stderr.take() {
        let tx = done_tx.clone();
        readers.push(thread::spawn(move || {
            output::capture(err, Stream::Stderr);
            let _ = tx.send(());
        }));
    }
    drop(done_tx);
    let end = supervise(child, limits, readers.len(), &done_rx);
    for r in readers {
        let _ = r.join();
    }
    Ok(end)
}

/// What a collected run produced.
pub struct Collected {
    pub end: End,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `cmd` in a new process group and collects its output in memory
/// (for git, whose output is small); supervised like a job.
pub fn run_collected(cmd: &mut Command, limits: Limits) -> std::io::Result<Collected> {
    use std::io::Read;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = cmd.spawn()?;
    let (done_tx, done_rx) = mpsc::channel();
    let spawn_reader = |pipe: Option<Box<dyn Read + Send>>, tx: mpsc::Sender<()>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            let _ = tx.send(());
            bytes
        })
    };
    let out = spawn_reader(child.stdout.take().map(|p| Box::new(p) as _), done_tx.clone());
    let err = spawn_reader(child.stderr.take().map(|p| Box::new(p) as _), done_tx);
    let end = supervise(child, limits, 2, &done_rx);
    Ok(Collected {
        end,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Waits for `child` under `limits`, then for its `readers` output readers
/// (each sends on `readers_done` at end of file), and finally kills the
/// process group so no leftover process survives.
fn supervise(child: Child, limits: Limits, readers: usize, readers_done: &mpsc::Receiver<()>) -> End {
    let pgid = child.id();
    let (tx, rx) = mpsc::channel();
    let mut child = child;
    thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    // Why the group is being stopped, and when TERM becomes KILL.
    let mut stopping: Option<(End, Instant)> = None;
    let status = loop {
        let now = Instant::now();
        let mut wake = now + Duration::from_millis(100);
        if let Some((_, kill_at)) = stopping {
            wake = wake.min(kill_at);
        } else if let Some(d) = limits.deadline {
            wake = wake.min(d);
        }
        match rx.recv_timeout(wake.saturating_duration_since(now)) {
            Ok(status) => break status.ok(),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
        }
        let now = Instant::now();
        match stopping {
            None => {
                let reason = match (cancelled(), limits.deadline) {
                    (Some(sig), _) => Some(End::Cancelled(sig)),
                    (None, Some(d)) if now >= d => Some(End::TimedOut),
                    _ => None,
                };
                if let Some(reason) = reason {
                    kill_group(pgid, libc::SIGTERM);
                    stopping = Some((reason, now + limits.grace));
                }
            }
            Some((_, kill_at)) if now >= kill_at => kill_group(pgid, libc::SIGKILL),
            Some(_) => {}
        }
    };
    // Output still flowing from background processes gets a short drain,
    // then the group goes, so a daemon holding the pipe cannot hang the VM.
    let drain_until = Instant::now() + DRAIN;
    let mut open = readers;
    while open > 0 {
        let left = drain_until.saturating_duration_since(Instant::now());
        match readers_done.recv_timeout(left) {
            Ok(()) => open -= 1,
            Err(_) => break,
        }
    }
    kill_group(pgid, libc::SIGKILL);
    match (stopping, status) {
        (Some((reason, _)), _) => reason,
        (None, Some(status)) => End::from_status(status),
        (None, None) => End::Exited(1),
    }
}
