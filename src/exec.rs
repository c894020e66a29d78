//! Execution: starts a process in its own process group and supervises it in
//! one poll loop: its output pipes, the job and step timeouts, cancellation by
//! SIGTERM/SIGINT with a grace period, and the killing of whatever it left
//! behind, so nothing of the job outlives the runner.
//!
//! Processes are started with fork and execve rather than std::process: the
//! runner needs process groups, signal resets and a poll loop anyway, and
//! std's Command (with its environment map) cost about 30 KB of the binary
//! that every VM downloads.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
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
/// runner's environment (applied in order). Kept as the NUL-terminated bytes
/// execve wants, so starting it builds no strings.
pub struct Spec {
    /// The program, then each argument, each followed by a NUL.
    argv: Vec<u8>,
    /// `NAME=value` sets a variable, `NAME` alone removes it; each followed by a NUL.
    env: Vec<u8>,
    /// The working directory and a NUL; empty to inherit the runner's.
    cwd: Vec<u8>,
    /// Something held a NUL byte, which execve cannot pass on.
    nul: bool,
}

impl Spec {
    pub fn new(program: impl AsRef<OsStr>) -> Spec {
        let mut spec = Spec {
            argv: Vec::new(),
            env: Vec::new(),
            cwd: Vec::new(),
            nul: false,
        };
        spec.arg(program);
        spec
    }

    pub fn arg(&mut self, a: impl AsRef<OsStr>) -> &mut Spec {
        self.add(Field::Argv, &[a.as_ref()])
    }

    pub fn env(&mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> &mut Spec {
        self.add(Field::Env, &[k.as_ref(), OsStr::new("="), v.as_ref()])
    }

    pub fn env_remove(&mut self, k: &str) -> &mut Spec {
        self.add(Field::Env, &[k.as_ref()])
    }

    pub fn cwd(&mut self, dir: &Path) -> &mut Spec {
        self.cwd.clear();
        self.add(Field::Cwd, &[dir.as_os_str()])
    }

    /// Adds several changes at once from a constant: `NAME=value` or `NAME`
    /// entries, each followed by a NUL.
    pub fn env_list(&mut self, list: &'static [u8]) -> &mut Spec {
        self.env.extend_from_slice(list);
        self
    }

    /// Adds several arguments at once from a constant, each followed by a NUL.
    pub fn arg_list(&mut self, list: &'static [u8]) -> &mut Spec {
        self.argv.extend_from_slice(list);
        self
    }

    fn add(&mut self, field: Field, parts: &[&OsStr]) -> &mut Spec {
        let buf = match field {
            Field::Argv => &mut self.argv,
            Field::Env => &mut self.env,
            Field::Cwd => &mut self.cwd,
        };
        for p in parts {
            let p = p.as_bytes();
            self.nul |= p.contains(&0);
            buf.extend_from_slice(p);
        }
        buf.push(0);
        self
    }
}

enum Field {
    Argv,
    Env,
    Cwd,
}

/// The NUL-terminated strings in `buf`, for execve.
fn pointers(buf: &[u8], out: &mut Vec<*const libc::c_char>) {
    let mut start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b == 0 {
            out.push(buf[start..].as_ptr().cast());
            start = i + 1;
        }
    }
}

/// The name part of a `NAME=value` (or `NAME`) environment entry.
fn env_name(entry: &[u8]) -> &[u8] {
    entry.split(|&b| b == b'=').next().unwrap_or(entry)
}

extern "C" {
    /// The process environment. The runner never changes its own
    /// environment, so reading it needs no lock.
    static environ: *const *const libc::c_char;
}

/// The environment of a job: the runner's, minus the variables `spec` sets
/// or removes, plus those it sets (the last setting of a name wins).
fn environment(spec: &Spec, out: &mut Vec<*const libc::c_char>) {
    let mut changes = Vec::new();
    pointers(&spec.env, &mut changes);
    // SAFETY: environ is a NULL-terminated array of C strings, and so are
    // the changes.
    let name = |p: *const libc::c_char| env_name(unsafe { CStr::from_ptr(p) }.to_bytes());
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            if !changes.iter().any(|&c| name(c) == name(*p)) {
                out.push(*p);
            }
            p = p.add(1);
        }
    }
    for (i, &c) in changes.iter().enumerate() {
        let n = name(c);
        if unsafe { *c.add(n.len()) } != 0 && !changes[i + 1..].iter().any(|&l| name(l) == n) {
            out.push(c);
        }
    }
    out.push(std::ptr::null());
}

/// Finds `program` on PATH the way a shell would, unless it names a path.
/// Returns the path to execute, NUL-terminated.
fn resolve(program: &[u8]) -> Vec<u8> {
    if !program.contains(&b'/') {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        for dir in path.as_bytes().split(|&b| b == b':') {
            let mut candidate = dir.to_vec();
            if !dir.is_empty() {
                candidate.push(b'/');
            }
            candidate.extend_from_slice(program);
            candidate.push(0);
            // SAFETY: access(2) on a NUL-terminated path.
            if unsafe { libc::access(candidate.as_ptr().cast(), libc::X_OK) } == 0 {
                return candidate;
            }
        }
    }
    let mut path = program.to_vec();
    path.push(0);
    path
}

/// Calls `f` with the name of each entry of the directory `dir` but `.` and
/// `..`, until it returns false. `flags` are added to those of open(2):
/// O_NOFOLLOW refuses a symbolic link.
pub fn scan_dir(
    dir: &Path,
    flags: libc::c_int,
    f: &mut dyn FnMut(&[u8]) -> bool,
) -> io::Result<()> {
    let mut path = dir.as_os_str().as_bytes().to_vec();
    path.push(0);
    // SAFETY: open on a NUL-terminated path; each entry's name is a C
    // string valid until the next readdir; the stream (and so the
    // descriptor) is closed once.
    unsafe {
        let fd = libc::open(
            path.as_ptr().cast(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | flags,
        );
        let d = if fd < 0 {
            std::ptr::null_mut()
        } else {
            libc::fdopendir(fd)
        };
        if d.is_null() {
            let e = io::Error::last_os_error();
            close_all(&[fd]);
            return Err(e);
        }
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = CStr::from_ptr((*e).d_name.as_ptr()).to_bytes();
            if name != b"." && name != b".." && !f(name) {
                break;
            }
        }
        libc::closedir(d);
    }
    Ok(())
}

/// Removes `path` and, if it is a directory, everything in it; symbolic
/// links are removed, never followed. Errors are ignored.
pub fn remove_tree(path: &Path) {
    let mut names = Vec::new();
    let listed = scan_dir(path, libc::O_NOFOLLOW, &mut |n| {
        names.push(path.join(OsStr::from_bytes(n)));
        true
    });
    for p in &names {
        remove_tree(p);
    }
    let _ = match listed {
        Ok(()) => std::fs::remove_dir(path),
        Err(_) => std::fs::remove_file(path),
    };
}

/// Creates `dir` and whatever parents it lacks, like `mkdir -p`, with
/// permissions `mode` (less the umask).
pub fn create_dirs(dir: &Path, mode: libc::mode_t) -> io::Result<()> {
    // The parent of a bare file name: the current directory.
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    let mut path = dir.as_os_str().as_bytes().to_vec();
    path.push(0);
    let mut first_error = None;
    for i in 1..path.len() {
        let c = path[i];
        if c != b'/' && c != 0 {
            continue;
        }
        path[i] = 0;
        // SAFETY: mkdir on a NUL-terminated prefix of the path.
        let r = unsafe { libc::mkdir(path.as_ptr().cast(), mode) };
        path[i] = c;
        let e = io::Error::last_os_error();
        if r == 0 || e.kind() == io::ErrorKind::AlreadyExists {
            continue;
        }
        // A parent that could not be made says more than the child's ENOENT.
        let e = first_error.take().unwrap_or(e);
        if c == 0 {
            return Err(e);
        }
        first_error = Some(e);
    }
    if dir.is_dir() {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EEXIST))
    }
}

fn spawn(spec: &Spec, pipes: &mut [libc::c_int; 2]) -> io::Result<libc::pid_t> {
    install_signal_handlers()?;
    if spec.nul {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in an argument",
        ));
    }
    let program = spec.argv.split(|&b| b == 0).next().unwrap_or_default();
    let path = resolve(program);
    let mut argv = Vec::new();
    pointers(&spec.argv, &mut argv);
    argv.push(std::ptr::null());
    let mut envp = Vec::new();
    environment(spec, &mut envp);
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
            if spec.cwd.is_empty() || libc::chdir(spec.cwd.as_ptr().cast()) == 0 {
                // The runner ignores SIGPIPE and handles TERM, INT and CHLD;
                // the job starts with the defaults and nothing blocked.
                for sig in [libc::SIGPIPE, libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
                    libc::signal(sig, libc::SIG_DFL);
                }
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                libc::execve(path.as_ptr().cast(), argv.as_ptr(), envp.as_ptr());
            }
            let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            let bytes = errno.to_ne_bytes();
            libc::write(status_w, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127);
        }
        pid
    };
    close_all(&[out_w, err_w, status_w]);
    let mut errno = [0u8; 4];
    let failed = if pid < 0 {
        Some(io::Error::last_os_error())
    } else {
        // Also set here, so the group exists before the parent signals it.
        unsafe { libc::setpgid(pid, pid) };
        let n = read_retry(status_r, &mut errno);
        (n == 4).then(|| {
            let mut status = 0;
            unsafe { libc::waitpid(pid, &mut status, 0) };
            io::Error::from_raw_os_error(i32::from_ne_bytes(errno))
        })
    };
    close_all(&[status_r]);
    if let Some(e) = failed {
        close_all(&[out_r, err_r]);
        return Err(e);
    }
    *pipes = [out_r, err_r];
    Ok(pid)
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

/// Reads once from stream `i`: hands over what came, or closes the stream
/// at its end (or on an error). Returns whether it is still open.
fn pump(
    pipes: &mut [libc::c_int; 2],
    i: usize,
    buf: &mut [u8],
    sink: &mut dyn FnMut(Output),
) -> bool {
    let got = read_retry(pipes[i], buf);
    if got > 0 {
        sink(Output::Data(i, &buf[..got as usize]));
        return true;
    }
    close_all(&[pipes[i]]);
    pipes[i] = -1;
    sink(Output::End(i));
    false
}

/// Runs `spec` in a new process group, hands its output to `sink` as it
/// arrives, and supervises it to the end.
pub fn run(spec: &Spec, limits: Limits, sink: &mut dyn FnMut(Output)) -> io::Result<End> {
    let mut pipes = [-1; 2];
    let pid = spawn(spec, &mut pipes)?;
    let wake = WAKE_READ_FD.load(Ordering::SeqCst);
    let mut buf = vec![0u8; 64 * 1024];
    let mut status: Option<End> = None;
    // Why the group is being stopped, and when TERM becomes KILL.
    let mut stopping: Option<(End, Instant)> = None;
    let mut drain_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let mut raw = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        if status.is_none() && unsafe { libc::waitpid(pid, &mut raw, libc::WNOHANG) } == pid {
            status = Some(if libc::WIFSIGNALED(raw) {
                End::Signaled(libc::WTERMSIG(raw))
            } else {
                End::Exited(libc::WEXITSTATUS(raw))
            });
        }
        let mut wake_at = now + Duration::from_millis(100);
        match stopping {
            Some((_, kill_at)) => {
                if now >= kill_at {
                    kill_group(pid, libc::SIGKILL);
                }
                wake_at = wake_at.min(kill_at);
            }
            None => {
                let reason = match (cancelled(), limits.deadline) {
                    (Some(sig), _) => Some(End::Cancelled(sig)),
                    // A process that has exited is past timing out.
                    (None, Some(d)) if status.is_none() => {
                        wake_at = wake_at.min(d);
                        (now >= d).then_some(End::TimedOut)
                    }
                    _ => None,
                };
                if let Some(reason) = reason {
                    kill_group(pid, libc::SIGTERM);
                    stopping = Some((reason, now + limits.grace));
                    continue;
                }
            }
        }
        if status.is_some() {
            if pipes == [-1; 2] {
                break;
            }
            // Leftover background processes holding the pipes get a short
            // drain, then the group goes, so they cannot hang the VM.
            let until = *drain_until.get_or_insert(now + DRAIN);
            if now >= until {
                kill_group(pid, libc::SIGKILL);
                break;
            }
            wake_at = wake_at.min(until);
        }
        let timeout = millis(wake_at.saturating_duration_since(now)) as libc::c_int;
        let mut fds = [pipes[0], pipes[1], wake].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: fds is a valid array; negative descriptors are ignored by poll.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, timeout) };
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
        for (i, fd) in fds[..2].iter().enumerate() {
            if fd.revents != 0 {
                pump(&mut pipes, i, &mut buf, sink);
            }
        }
    }
    // Whatever is still buffered in a pipe held open by a killed process is
    // read without blocking, so the last lines are not lost.
    for i in 0..2 {
        if pipes[i] >= 0 {
            unsafe { libc::fcntl(pipes[i], libc::F_SETFL, libc::O_NONBLOCK) };
            while pump(&mut pipes, i, &mut buf, sink) {}
        }
    }
    kill_group(pid, libc::SIGKILL);
    if status.is_none() {
        let mut raw = 0;
        unsafe { libc::waitpid(pid, &mut raw, 0) };
    }
    kill_strays();
    Ok(match (stopping, status) {
        (Some((reason, _)), _) => reason,
        (None, Some(end)) => end,
        (None, None) => End::Exited(1),
    })
}

/// The decimal number `s` spells, if that is all it is.
#[cfg(target_os = "linux")]
fn parse_pid(s: &[u8]) -> Option<libc::pid_t> {
    let mut n: libc::pid_t = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((b - b'0') as libc::pid_t)?;
    }
    (!s.is_empty()).then_some(n)
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
    let me = unsafe { libc::getpid() };
    for _ in 0..64 {
        let mut killed = 0;
        let _ = scan_dir(Path::new("/proc"), 0, &mut |name| {
            let Some(pid) = parse_pid(name) else {
                return true;
            };
            let mut path = b"/proc/".to_vec();
            path.extend_from_slice(name);
            path.extend_from_slice(b"/stat\0");
            // "pid (command) state ppid ...": the command (at most 64 bytes)
            // and the parent pid fit well in the first 256 bytes.
            let mut stat = [0u8; 256];
            let mut n = 0;
            // SAFETY: open/read/close on a NUL-terminated path and our buffer.
            unsafe {
                let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    n = read_retry(fd, &mut stat).max(0) as usize;
                    libc::close(fd);
                }
            }
            let stat = &stat[..n];
            let ppid = stat
                .iter()
                .rposition(|&b| b == b')')
                .and_then(|end| stat[end + 1..].split(|&b| b == b' ').nth(2))
                .and_then(parse_pid);
            if ppid == Some(me) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed += 1;
            }
            true
        });
        if killed == 0 {
            return;
        }
        // Each killed child ends, and is reaped here.
        for _ in 0..killed {
            unsafe { libc::waitpid(-1, &mut raw, 0) };
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("exec-test-{}-{name}", std::process::id()));
        remove_tree(&dir);
        dir
    }

    #[test]
    fn create_dirs_makes_parents_and_accepts_existing() {
        let top = scratch("mkdir");
        let deep = top.join("a/b//c/");
        create_dirs(&deep, 0o777).unwrap();
        assert!(deep.is_dir());
        create_dirs(&deep, 0o777).unwrap();
        create_dirs(Path::new(""), 0o777).unwrap();
        fs::write(top.join("file"), "x").unwrap();
        let e = create_dirs(&top.join("file"), 0o777).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let e = create_dirs(&top.join("file/x/y"), 0o777).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
        remove_tree(&top);
        assert!(!top.exists());
    }

    #[test]
    fn remove_tree_does_not_follow_links() {
        let top = scratch("rm");
        let keep = scratch("rm-keep");
        create_dirs(&top.join("d/e"), 0o777).unwrap();
        create_dirs(&keep, 0o777).unwrap();
        fs::write(keep.join("kept"), "x").unwrap();
        fs::write(top.join("d/e/f"), "x").unwrap();
        std::os::unix::fs::symlink(&keep, top.join("d/link")).unwrap();
        remove_tree(&top);
        assert!(!top.exists());
        assert!(keep.join("kept").exists());
        remove_tree(&keep);
        assert!(!keep.exists());
    }

    #[test]
    fn scan_dir_lists_names() {
        let top = scratch("scan");
        create_dirs(&top.join("x"), 0o777).unwrap();
        fs::write(top.join("y"), "").unwrap();
        let mut names = Vec::new();
        scan_dir(&top, 0, &mut |n| {
            names.push(n.to_vec());
            true
        })
        .unwrap();
        names.sort();
        assert_eq!(names, [b"x".to_vec(), b"y".to_vec()]);
        let e = scan_dir(&top.join("y"), 0, &mut |_| true).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
        remove_tree(&top);
    }

    #[test]
    fn environment_applies_changes_in_order() {
        let mut spec = Spec::new("x");
        spec.env("EXEC_TEST_A", "1")
            .env_remove("PATH")
            .env("EXEC_TEST_B", "")
            .env("EXEC_TEST_A", "2")
            .env("EXEC_TEST_C", "3")
            .env_remove("EXEC_TEST_C");
        let mut envp = Vec::new();
        environment(&spec, &mut envp);
        assert!(envp.pop().unwrap().is_null());
        let vars: Vec<&[u8]> = envp
            .iter()
            .map(|&p| unsafe { CStr::from_ptr(p) }.to_bytes())
            .collect();
        assert!(!vars.iter().any(|v| env_name(v) == b"PATH"));
        assert!(!vars.iter().any(|v| env_name(v) == b"EXEC_TEST_C"));
        for (k, _) in std::env::vars_os() {
            let k = k.as_bytes();
            if k != b"PATH" && !k.starts_with(b"EXEC_TEST_") {
                assert!(vars.iter().any(|v| env_name(v) == k));
            }
        }
        assert_eq!(
            vars[vars.len() - 2..],
            [&b"EXEC_TEST_B="[..], b"EXEC_TEST_A=2"]
        );
    }

    #[test]
    fn nul_bytes_are_refused() {
        let mut spec = Spec::new("/bin/true");
        spec.arg("a\0b");
        let e = run_collected(
            &spec,
            Limits {
                deadline: None,
                grace: Duration::from_secs(1),
            },
        )
        .err()
        .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn resolve_searches_path() {
        assert!(resolve(b"sh").ends_with(b"/sh\0"));
        assert_eq!(resolve(b"./sh"), b"./sh\0");
    }
}
