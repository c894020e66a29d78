//! Execution: starts a process in its own process group and supervises it in
//! one poll loop: its output pipes, the job and step timeouts, cancellation by
//! SIGTERM/SIGINT with a grace period, and the killing of whatever it left
//! behind, so nothing of the job outlives the runner.
//!
//! Processes are started with fork and execve rather than std::process: the
//! runner needs process groups, signal resets and a poll loop anyway, and
//! std's Command (with its environment map) cost about 30 KB of the binary
//! that every VM downloads.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// How long a job's leftover background processes may keep its output pipes
/// open after its main process exited, before the group is killed.
const DRAIN: Duration = Duration::from_millis(500);

/// The signal that asked the runner to stop (0 while none did).
static CANCEL: AtomicI32 = AtomicI32::new(0);
/// The write end of the self-pipe that wakes the poll loop on a signal.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
static WAKE_READ_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig != libc::SIGCHLD {
        CANCEL.store(sig, Ordering::SeqCst);
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; a full pipe already wakes the loop.
        unsafe { libc::write(fd, [0u8].as_ptr().cast(), 1) };
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A pipe whose ends are close-on-exec, so no job inherits a stray one.
fn pipe() -> io::Result<(libc::c_int, libc::c_int)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element array.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((fds[0], fds[1]))
}

/// Routes SIGTERM and SIGINT into a cancellation request, and SIGCHLD into a
/// wake-up of the poll loop. Called once, early.
pub fn install_signal_handlers() -> io::Result<()> {
    if WAKE_FD.load(Ordering::SeqCst) >= 0 {
        return Ok(());
    }
    let (r, w) = pipe()?;
    // SAFETY: plain fcntl/sigaction calls on descriptors and structs we own.
    unsafe {
        libc::fcntl(r, libc::F_SETFL, libc::O_NONBLOCK);
        libc::fcntl(w, libc::F_SETFL, libc::O_NONBLOCK);
        WAKE_READ_FD.store(r, Ordering::SeqCst);
        WAKE_FD.store(w, Ordering::SeqCst);
        // Job processes that leave their group (setsid, daemons) are
        // re-parented to the runner instead of init, so it can kill them.
        #[cfg(target_os = "linux")]
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) != 0 {
            warn!(
                "cannot become a child subreaper ({}): job processes that leave their process group may outlive the job",
                io::Error::last_os_error()
            );
        }
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            action.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
    Ok(())
}

/// The signal that cancelled the run, if any.
pub fn cancelled() -> Option<i32> {
    match CANCEL.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Whole milliseconds of `d`, without the 128-bit arithmetic of `as_millis`.
pub fn millis(d: Duration) -> u64 {
    d.as_secs() * 1000 + d.subsec_millis() as u64
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
}

/// What to run: program, arguments, working directory, and changes to the
/// runner's environment (applied in order; `None` removes a variable).
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<(OsString, Option<OsString>)>,
}

impl Spec {
    pub fn new(program: impl Into<PathBuf>) -> Spec {
        Spec {
            program: program.into(),
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
        }
    }

    pub fn arg(&mut self, a: impl AsRef<OsStr>) -> &mut Spec {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn env(&mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> &mut Spec {
        self.env
            .push((k.as_ref().to_os_string(), Some(v.as_ref().to_os_string())));
        self
    }

    pub fn env_remove(&mut self, k: &str) -> &mut Spec {
        self.env.push((k.into(), None));
        self
    }

    pub fn cwd(&mut self, dir: &Path) -> &mut Spec {
        self.cwd = Some(dir.to_path_buf());
        self
    }
}

fn cstring(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in an argument"))
}

/// Finds `program` on PATH the way a shell would, unless it names a path.
fn resolve(program: &Path) -> PathBuf {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return program.to_path_buf();
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        let c = CString::new(candidate.as_os_str().as_bytes().to_vec()).unwrap_or_default();
        // SAFETY: access(2) on a NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
            return candidate;
        }
    }
    program.to_path_buf()
}

/// A started process: its id (also its process group) and output pipes.
struct Started {
    pid: libc::pid_t,
    out: libc::c_int,
    err: libc::c_int,
}

fn spawn(spec: &Spec) -> io::Result<Started> {
    install_signal_handlers()?;
    let path = cstring(resolve(&spec.program).into_os_string().into_vec())?;
    let mut argv = vec![cstring(spec.program.as_os_str().as_bytes().to_vec())?];
    for a in &spec.args {
        argv.push(cstring(a.as_bytes().to_vec())?);
    }
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    for (k, v) in &spec.env {
        vars.retain(|(name, _)| name != k);
        if let Some(v) = v {
            vars.push((k.clone(), v.clone()));
        }
    }
    let mut envp = Vec::with_capacity(vars.len());
    for (k, v) in vars {
        let mut kv = k.into_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        envp.push(cstring(kv)?);
    }
    let cwd = match &spec.cwd {
        Some(dir) => Some(cstring(dir.as_os_str().as_bytes().to_vec())?),
        None => None,
    };
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    let devnull = b"/dev/null\0";

    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // Bigger pipes mean fewer wake-ups for a job that writes fast.
    #[cfg(target_os = "linux")]
    for fd in [out_r, err_r] {
        unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20) };
    }
    let (status_r, status_w) = pipe()?;
    // SAFETY: between fork and execve the child calls only async-signal-safe
    // functions on memory prepared above, and leaves through execve or _exit.
    let pid = unsafe {
        let pid = libc::fork();
        if pid == 0 {
            libc::setpgid(0, 0);
            let null = libc::open(devnull.as_ptr().cast(), libc::O_RDONLY);
            if null >= 0 {
                libc::dup2(null, 0);
            }
            libc::dup2(out_w, 1);
            libc::dup2(err_w, 2);
            let mut errno = 0;
            if let Some(dir) = &cwd {
                if libc::chdir(dir.as_ptr()) != 0 {
                    errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
                }
            }
            if errno == 0 {
                // The runner ignores SIGPIPE and handles TERM, INT and CHLD;
                // the job starts with the defaults and nothing blocked.
                for sig in [libc::SIGPIPE, libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
                    libc::signal(sig, libc::SIG_DFL);
                }
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                libc::execve(path.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr());
                errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            }
            let bytes = errno.to_ne_bytes();
            libc::write(status_w, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127);
        }
        pid
    };
    // SAFETY: closing descriptors this function created.
    unsafe {
        libc::close(out_w);
        libc::close(err_w);
        libc::close(status_w);
    }
    if pid < 0 {
        let e = io::Error::last_os_error();
        close_all(&[out_r, err_r, status_r]);
        return Err(e);
    }
    // Also set here, so the group exists before the parent signals it.
    unsafe { libc::setpgid(pid, pid) };
    let mut errno = [0u8; 4];
    let n = read_retry(status_r, &mut errno);
    close_all(&[status_r]);
    if n == 4 {
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        close_all(&[out_r, err_r]);
        return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
    }
    Ok(Started {
        pid,
        out: out_r,
        err: err_r,
    })
}

fn close_all(fds: &[libc::c_int]) {
    for &fd in fds {
        if fd >= 0 {
            // SAFETY: each descriptor is owned by the caller and closed once.
            unsafe { libc::close(fd) };
        }
    }
}

fn read_retry(fd: libc::c_int, buf: &mut [u8]) -> isize {
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return n;
        }
    }
}

fn kill_group(pgid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: plain syscall; a group that is already gone gives ESRCH.
    unsafe { libc::kill(-pgid, sig) };
}

/// What the supervised process's output did. Stream 0 is stdout, 1 stderr.
pub enum Output<'a> {
    Data(usize, &'a [u8]),
    End(usize),
    /// No output for a while: the log pipeline shows unfinished lines then.
    Idle,
}

/// Runs `spec` in a new process group, hands its output to `sink` as it
/// arrives, and supervises it to the end.
pub fn run(spec: &Spec, limits: Limits, sink: &mut dyn FnMut(Output)) -> io::Result<End> {
    let p = spawn(spec)?;
    let wake = WAKE_READ_FD.load(Ordering::SeqCst);
    let mut pipes = [p.out, p.err];
    let mut buf = vec![0u8; 64 * 1024];
    let mut status: Option<End> = None;
    // Why the group is being stopped, and when TERM becomes KILL.
    let mut stopping: Option<(End, Instant)> = None;
    let mut drain_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if status.is_none() {
            let mut raw = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            if unsafe { libc::waitpid(p.pid, &mut raw, libc::WNOHANG) } == p.pid {
                status = Some(if libc::WIFSIGNALED(raw) {
                    End::Signaled(libc::WTERMSIG(raw))
                } else {
                    End::Exited(libc::WEXITSTATUS(raw))
                });
            }
        }
        match stopping {
            None => {
                let reason = match (cancelled(), limits.deadline) {
                    (Some(sig), _) => Some(End::Cancelled(sig)),
                    (None, Some(d)) if now >= d && status.is_none() => Some(End::TimedOut),
                    _ => None,
                };
                if let Some(reason) = reason {
                    kill_group(p.pid, libc::SIGTERM);
                    stopping = Some((reason, now + limits.grace));
                }
            }
            Some((_, kill_at)) if now >= kill_at => kill_group(p.pid, libc::SIGKILL),
            Some(_) => {}
        }
        if status.is_some() {
            if pipes.iter().all(|&fd| fd < 0) {
                break;
            }
            // Leftover background processes holding the pipes get a short
            // drain, then the group goes, so they cannot hang the VM.
            let until = *drain_until.get_or_insert(now + DRAIN);
            if now >= until {
                kill_group(p.pid, libc::SIGKILL);
                break;
            }
        }
        let mut wake_at = now + Duration::from_millis(100);
        // A passed deadline must not keep waking the loop during the grace.
        let deadline = limits.deadline.filter(|_| stopping.is_none());
        for t in [deadline, stopping.map(|s| s.1), drain_until]
            .into_iter()
            .flatten()
        {
            wake_at = wake_at.min(t.max(now));
        }
        let timeout = millis(wake_at.saturating_duration_since(now)) as libc::c_int;
        let mut fds = [
            libc::pollfd {
                fd: pipes[0],
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pipes[1],
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array; negative descriptors are ignored by poll.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n == 0 {
            sink(Output::Idle);
        }
        if n <= 0 {
            continue;
        }
        if fds[2].revents != 0 {
            let mut drain = [0u8; 64];
            while read_retry(wake, &mut drain) > 0 {}
        }
        for i in 0..2 {
            if fds[i].revents == 0 {
                continue;
            }
            let got = read_retry(pipes[i], &mut buf);
            if got > 0 {
                sink(Output::Data(i, &buf[..got as usize]));
            } else {
                close_all(&[pipes[i]]);
                pipes[i] = -1;
                sink(Output::End(i));
            }
        }
    }
    // Whatever is still buffered in a pipe held open by a killed process is
    // read without blocking, so the last lines are not lost.
    for (i, fd) in pipes.iter().enumerate() {
        if *fd >= 0 {
            unsafe { libc::fcntl(*fd, libc::F_SETFL, libc::O_NONBLOCK) };
            loop {
                let got = read_retry(*fd, &mut buf);
                if got <= 0 {
                    break;
                }
                sink(Output::Data(i, &buf[..got as usize]));
            }
            close_all(&[*fd]);
            sink(Output::End(i));
        }
    }
    kill_group(p.pid, libc::SIGKILL);
    if status.is_none() {
        let mut raw = 0;
        unsafe { libc::waitpid(p.pid, &mut raw, 0) };
    }
    kill_strays();
    Ok(match (stopping, status) {
        (Some((reason, _)), _) => reason,
        (None, Some(end)) => end,
        (None, None) => End::Exited(1),
    })
}

/// Kills what is left of a job outside its process group: the runner is a
/// child subreaper, so such processes became its children when their
/// parents died. Killing and reaping one re-parents its own children, hence
/// the rounds. (illumos has no subreaper; there only the group is killed.)
#[cfg(target_os = "linux")]
fn kill_strays() {
    // No children at all (the usual case): nothing to scan /proc for.
    let mut raw = 0;
    if unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) } < 0 {
        return;
    }
    let me = std::process::id().to_string();
    for _ in 0..64 {
        let mut killed = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<libc::pid_t>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // The parent pid is the second field after the command's ")".
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1));
            if ppid == Some(me.as_str()) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed.push(pid);
            }
        }
        if killed.is_empty() {
            return;
        }
        for pid in killed {
            let mut raw = 0;
            unsafe { libc::waitpid(pid, &mut raw, 0) };
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn kill_strays() {}

/// What a collected run produced.
pub struct Collected {
    pub end: End,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `spec` and collects its output in memory (for git, whose output is
/// small); supervised like a job.
pub fn run_collected(spec: &Spec, limits: Limits) -> io::Result<Collected> {
    let mut out = [Vec::new(), Vec::new()];
    let end = run(spec, limits, &mut |event| {
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
