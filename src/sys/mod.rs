//! The runner's system calls that std does not offer: signal handling with a
//! self-pipe, poll, a look at a child's exit without reaping it, signals to a
//! process group, the Linux child subreaper and parent-death signal, pipe
//! sizes, and the reaping of orphans the subreaper inherits.
//!
//! This is one of the two modules where `unsafe` is allowed (the other is the
//! log's byte scanner). Every block is one call with its arguments checked
//! here, and every result is checked; callers get safe functions.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::process::Command;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::Duration;

/// The first signal that asked the runner to stop (0 while none did).
static CANCEL: AtomicI32 = AtomicI32::new(0);
/// How many stop signals arrived in all: a second one cuts the cleanup short.
static STOPS: AtomicU32 = AtomicU32::new(0);
/// The self-pipe's ends: the handler writes a byte, the poll loop wakes.
static WAKE_WRITE: AtomicI32 = AtomicI32::new(-1);
static WAKE_READ: AtomicI32 = AtomicI32::new(-1);

/// The signals that cancel the job as an operator's stop would: TERM and
/// INT, HUP (the console or the session went away) and QUIT.
pub const STOP_SIGNALS: [i32; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

extern "C" fn on_signal(sig: libc::c_int) {
    // The interrupted code may be between a failing call and its read of
    // errno; the write below must not change what it reads.
    let saved = errno();
    if sig != libc::SIGCHLD {
        let _ = CANCEL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
        STOPS.fetch_add(1, Ordering::SeqCst);
    }
    wake();
    set_errno(saved);
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn errno_ptr() -> *mut libc::c_int {
    // SAFETY: returns the calling thread's errno location; no preconditions.
    unsafe { libc::__errno_location() }
}

#[cfg(any(target_os = "illumos", target_os = "solaris"))]
fn errno_ptr() -> *mut libc::c_int {
    // SAFETY: returns the calling thread's errno location; no preconditions.
    unsafe { libc::___errno() }
}

fn errno() -> libc::c_int {
    // SAFETY: the pointer is this thread's errno, valid for its lifetime.
    unsafe { *errno_ptr() }
}

fn set_errno(e: libc::c_int) {
    // SAFETY: as in `errno`.
    unsafe { *errno_ptr() = e }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Wakes the poll loop (from a signal handler, or from the upload thread when
/// the orchestrator asks for a cancel). A full pipe already means "wake up".
pub fn wake() {
    let fd = WAKE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the buffer is one valid byte.
        unsafe { libc::write(fd, [0u8].as_ptr().cast(), 1) };
    }
}

/// Routes the stop signals into a cancellation request and SIGCHLD into a
/// wake-up of the poll loop, and on Linux makes the runner a child subreaper.
/// Idempotent; called before the first process starts.
pub fn install_signal_handlers() -> io::Result<()> {
    if WAKE_READ.load(Ordering::SeqCst) >= 0 {
        return Ok(());
    }
    let mut fds = [-1; 2];
    // SAFETY: fds is a valid two-element array for pipe2 to fill.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    WAKE_READ.store(fds[0], Ordering::SeqCst);
    WAKE_WRITE.store(fds[1], Ordering::SeqCst);
    for sig in STOP_SIGNALS.into_iter().chain([libc::SIGCHLD]) {
        // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the
        // handler is an extern "C" fn that only touches atomics and errno
        // and calls write(2).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            cvt(libc::sigemptyset(&mut action.sa_mask))?;
            action.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
            cvt(libc::sigaction(sig, &action, std::ptr::null_mut()))?;
        }
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with an integer argument; no memory is passed.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
        if r != 0 {
            warn!(
                "cannot become a child subreaper ({}): job processes that leave their process group may outlive the job",
                io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// The signal that cancelled the run, if one did.
pub fn cancelled() -> Option<i32> {
    match CANCEL.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Records a cancel that did not come as a signal (the orchestrator asked),
/// counted like SIGTERM, and wakes the poll loop.
pub fn request_cancel(sig: i32) {
    if CANCEL
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        STOPS.fetch_add(1, Ordering::SeqCst);
    }
    wake();
}

/// How many stop requests arrived so far.
pub fn stop_count() -> u32 {
    STOPS.load(Ordering::SeqCst)
}

/// Empties the self-pipe after a wake-up.
fn drain_wake() {
    let fd = WAKE_READ.load(Ordering::SeqCst);
    let mut buf = [0u8; 64];
    // SAFETY: reads into a valid buffer from our non-blocking pipe.
    while fd >= 0 && unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// Waits until one of `fds` is readable (or at its end), a signal or
/// `wake` arrives, or `timeout` passes. Returns which of `fds` are ready;
/// `None` stands for a descriptor not to watch.
pub fn poll_read<const N: usize>(
    fds: [Option<BorrowedFd<'_>>; N],
    timeout: Duration,
) -> io::Result<[bool; N]> {
    let mut set = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 8];
    let n = N.min(7);
    for (slot, fd) in set.iter_mut().zip(fds.iter()) {
        slot.fd = fd.map_or(-1, |f| f.as_raw_fd());
    }
    set[n].fd = WAKE_READ.load(Ordering::SeqCst);
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `set` is a valid array of n + 1 pollfds; negative descriptors
    // are ignored by poll.
    let r = unsafe { libc::poll(set.as_mut_ptr(), (n + 1) as libc::nfds_t, ms) };
    let mut ready = [false; N];
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(ready)
        } else {
            Err(e)
        };
    }
    if set[n].revents != 0 {
        drain_wake();
    }
    for (r, slot) in ready.iter_mut().zip(set.iter()) {
        *r = slot.revents != 0;
    }
    Ok(ready)
}

/// How a process ended, as waitid reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// Whether the child `pid` has ended, without reaping it: the zombie keeps
/// its pid, and so its process group's id, from being reused until the
/// caller has signalled the group for the last time and reaps it.
pub fn peek_exit(pid: u32) -> io::Result<Option<Exit>> {
    // SAFETY: a zeroed siginfo_t is a valid out-parameter; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: waitid on one pid with a valid siginfo pointer.
    cvt(unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) })?;
    // SAFETY: after a successful waitid the pid and status fields are set
    // (si_pid is 0 when the child has not changed state).
    let (who, status) = unsafe { (info.si_pid(), info.si_status()) };
    if who == 0 {
        return Ok(None);
    }
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => Exit::Code(status),
        _ => Exit::Signal(status),
    }))
}

/// Sends `sig` to the process group `pgid`. The caller guarantees the group's
/// leader has not been reaped (see `peek_exit`), so the id still names the
/// job's group and no one else's. A group already gone is not an error.
pub fn signal_group(pgid: u32, sig: i32) {
    if pgid == 0 || pgid > i32::MAX as u32 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals that process group.
    unsafe { libc::kill(-(pgid as libc::pid_t), sig) };
}

/// Sends SIGKILL to `pid`, a child the caller has not reaped (an orphan the
/// subreaper inherited), so the pid cannot have been reused.
pub fn kill_child(pid: u32) {
    if pid == 0 || pid > i32::MAX as u32 {
        return;
    }
    // SAFETY: kill(2) on one positive pid.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

/// Reaps the child `pid` if it has ended; never blocks. Returns whether it
/// was reaped (or is not our child any more).
pub fn reap_if_ended(pid: u32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid on one pid with a valid status pointer.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    r != 0
}

/// Makes the job's first process receive SIGKILL if the runner dies
/// (SIGKILL, the OOM killer), so a job cannot run on unseen (Linux only;
/// elsewhere nothing is added). Its own children are not covered: they are
/// re-parented to init, which docs/security.md states.
pub fn kill_with_runner(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the child between fork and exec and
        // calls only async-signal-safe functions (prctl, getppid); it touches
        // no memory but a copied integer.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The runner died before the prctl: the signal will never come.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            })
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// Asks for a bigger pipe buffer (Linux), so a job that writes fast wakes
/// the runner less often; a refusal only costs speed.
pub fn grow_pipe(fd: BorrowedFd<'_>, bytes: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: fcntl on a descriptor the caller holds open.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, bytes)
    };
    #[cfg(not(target_os = "linux"))]
    let _ = (fd, bytes);
}

/// Marks every descriptor above stderr close-on-exec. The runner's parent
/// (cloud-init, a shell, a CI harness) may have left some open without the
/// flag; the runner never uses them, and no job may inherit them. Called
/// first thing, before any thread exists.
pub fn close_inherited_on_exec() {
    let mark = |fd: RawFd| {
        if fd > 2 {
            // SAFETY: fcntl on an integer; a descriptor that is not open
            // gives EBADF and nothing happens.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    };
    match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => {
            for entry in dir.flatten() {
                if let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                    mark(fd);
                }
            }
        }
        // No /proc: every descriptor up to a generous bound.
        Err(_) => (3..4096).for_each(mark),
    }
}
