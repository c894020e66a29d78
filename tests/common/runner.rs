//! Running the `solstice-runner` binary with a controlled environment and
//! deadlines.
//!
//! The environment is cleared, then given PATH, a temporary HOME, the C
//! locale, and `SOLSTICE_JOB_FILE` pointing at a path that does not exist
//! (so the machine's `/etc/solstice/job.yaml` can never leak in); tests add
//! what they need with `.env()`.
//!
//! `SOLSTICE_TEST_BIN` and `SOLSTICE_TEST_WRAPPER` run the same tests against
//! another build, e.g. the aarch64 musl binary under `qemu-aarch64` (see
//! [`runner_bin`] and `scripts/test-aarch64.sh`).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::tmp::TempDir;

/// How long the tests usually give one runner invocation.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// The path of the runner binary under test: `SOLSTICE_TEST_BIN` when set
/// (a path; relative to the directory `cargo test` runs the tests in, the
/// package root), else the binary cargo built for these tests.
///
/// With `SOLSTICE_TEST_WRAPPER` (a program and its arguments, split on
/// whitespace, e.g. `qemu-aarch64`) every run starts the wrapper with the
/// binary as its first argument, so the same tests run a foreign-arch build
/// under user-mode emulation. The pid the tests see and signal is then the
/// wrapper's; the wrapper must pass signals on (qemu-user does) and exit
/// with the runner's code.
pub fn runner_bin() -> PathBuf {
    match std::env::var_os("SOLSTICE_TEST_BIN") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            let p = if p.is_absolute() {
                p
            } else {
                std::env::current_dir()
                    .expect("current directory for SOLSTICE_TEST_BIN")
                    .join(p)
            };
            assert!(
                p.is_file(),
                "SOLSTICE_TEST_BIN={} is not a file",
                p.display()
            );
            p
        }
        _ => PathBuf::from(env!("CARGO_BIN_EXE_solstice-runner")),
    }
}

/// The wrapper program and its arguments from `SOLSTICE_TEST_WRAPPER`, if
/// set (see [`runner_bin`]). The program is resolved on the test process's
/// PATH here, so a test that gives the runner another PATH still starts it.
pub fn runner_wrapper() -> Option<Vec<OsString>> {
    let w = std::env::var_os("SOLSTICE_TEST_WRAPPER")?;
    let mut words: Vec<OsString> = w
        .to_str()
        .expect("SOLSTICE_TEST_WRAPPER is not valid UTF-8")
        .split_whitespace()
        .map(OsString::from)
        .collect();
    let program = words.first()?;
    if !program.to_string_lossy().contains('/') {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let found = std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("SOLSTICE_TEST_WRAPPER: {program:?} is not on PATH"));
        words[0] = found.into_os_string();
    }
    Some(words)
}

/// A `Command` that starts the runner under test (through the wrapper when
/// one is set), with no arguments and the test process's environment; for
/// tests that need a bare `Command` rather than a [`Runner`].
pub fn runner_command() -> Command {
    match runner_wrapper() {
        Some(words) => {
            let mut cmd = Command::new(&words[0]);
            cmd.args(&words[1..]).arg(runner_bin());
            cmd
        }
        None => Command::new(runner_bin()),
    }
}

/// How the runner under test is started, for messages: the binary, or the
/// wrapper and the binary.
pub fn runner_description() -> String {
    match runner_wrapper() {
        Some(words) => {
            let w: Vec<String> = words
                .iter()
                .map(|w| w.to_string_lossy().into_owned())
                .collect();
            format!("{} {}", w.join(" "), runner_bin().display())
        }
        None => runner_bin().display().to_string(),
    }
}

/// What a finished runner left behind.
#[derive(Clone)]
pub struct Output {
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Its stdout, lossy UTF-8.
    pub stdout: String,
    /// Its stderr, lossy UTF-8.
    pub stderr: String,
    /// The CPU time (user and system) the runner process itself used, read
    /// from its zombie before it was reaped; `None` if that was not possible
    /// (it was killed at the deadline, or there is no /proc).
    pub cpu: Option<Duration>,
}

impl Output {
    /// Panics (showing everything) unless the runner exited with `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Output {
        if self.code != Some(code) {
            panic!("expected exit code {}, got:\n{}", code, self);
        }
        self
    }

    /// Panics unless stdout contains `needle`.
    #[track_caller]
    pub fn assert_stdout_contains(&self, needle: &str) -> &Output {
        if !self.stdout.contains(needle) {
            panic!("expected stdout to contain {:?}:\n{}", needle, self);
        }
        self
    }

    /// Panics unless stderr contains `needle`.
    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Output {
        if !self.stderr.contains(needle) {
            panic!("expected stderr to contain {:?}:\n{}", needle, self);
        }
        self
    }

    /// stdout and stderr together.
    pub fn all_output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(f, "exit code: {:?}, signal: {:?}", self.code, self.signal)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        write!(f, "--- stderr ---\n{}", self.stderr)
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A builder for one run of the runner.
pub struct Runner {
    args: Vec<OsString>,
    envs: Vec<(OsString, Option<OsString>)>,
    cwd: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    home: TempDir,
}

impl Default for Runner {
    fn default() -> Self {
        Runner::new()
    }
}

impl Runner {
    pub fn new() -> Runner {
        Runner {
            args: Vec::new(),
            envs: Vec::new(),
            cwd: None,
            stdin: None,
            home: TempDir::new("runner-home"),
        }
    }

    /// The temporary HOME the runner gets (it lives as long as the builder).
    /// A runner set up to check out `repo` at `sha` into `workdir`, failing
    /// fast: no git retries, a 30 s limit per git command.
    pub fn for_job(repo: &Path, sha: &str, workdir: &Path) -> Runner {
        Runner::new()
            .env("SOLSTICE_REPO_URL", repo)
            .env("SOLSTICE_COMMIT_SHA", sha)
            .env("SOLSTICE_WORKDIR", workdir)
            .env("SOLSTICE_GIT_RETRIES", "0")
            .env("SOLSTICE_GIT_TIMEOUT", "30")
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Runner {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Runner
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.args.push(a.as_ref().to_os_string());
        }
        self
    }

    /// Sets an environment variable (overrides the defaults too).
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Runner {
        self.envs
            .push((k.as_ref().to_os_string(), Some(v.as_ref().to_os_string())));
        self
    }

    /// Removes an environment variable (one of the defaults, say).
    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Runner {
        self.envs.push((k.as_ref().to_os_string(), None));
        self
    }

    /// The working directory of the runner process (default: its HOME).
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Runner {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Bytes to feed on stdin (default: /dev/null).
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Runner {
        self.stdin = Some(data.into());
        self
    }

    fn command(&self) -> Command {
        let mut cmd = runner_command();
        cmd.args(&self.args)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", self.home.path())
            .env("LC_ALL", "C")
            .env(
                "SOLSTICE_JOB_FILE",
                self.home.path().join("no-such-dir/job.yaml"),
            )
            .current_dir(self.cwd.as_deref().unwrap_or(self.home.path()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            // Its own process group, so a deadline kill reaches whatever it
            // started too, and nothing else.
            .process_group(0);
        for (k, v) in &self.envs {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }

    /// The command [`Runner::spawn`] would start, and the HOME that must
    /// outlive it: for a test that reads the runner's pipes itself.
    pub fn into_command(self) -> (Command, TempDir) {
        (self.command(), self.home)
    }

    /// Starts the runner; its output is collected in the background.
    pub fn spawn(self) -> Running {
        let mut cmd = self.command();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {}", runner_description(), e));
        if let Some(data) = self.stdin.clone() {
            let mut stdin = child.stdin.take().unwrap();
            thread::spawn(move || {
                use std::io::Write;
                let _ = stdin.write_all(&data);
            });
        }
        let stdout = Collector::start(child.stdout.take().unwrap());
        let stderr = Collector::start(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
            status: None,
            cpu: None,
            _home: self.home,
        }
    }

    /// Runs the runner to completion. If it has not exited within
    /// `deadline`, kills it (and its process group) and panics with what
    /// it printed so far.
    pub fn run(self, deadline: Duration) -> Output {
        self.spawn().wait(deadline)
    }
}

/// Reads a pipe to its end in a thread, keeping everything it read.
struct Collector {
    buf: Arc<Mutex<Vec<u8>>>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    fn start(mut r: impl Read + Send + 'static) -> Collector {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (b, d) = (buf.clone(), done.clone());
        let thread = thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match r.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => b.lock().unwrap().extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            d.store(true, Ordering::SeqCst);
        });
        Collector {
            buf,
            done,
            thread: Some(thread),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    /// Waits for EOF, at most until `until`; a grandchild that kept the
    /// pipe open must not hang the test.
    fn finish(&mut self, until: Instant) {
        while !self.done.load(Ordering::SeqCst) && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
        if self.done.load(Ordering::SeqCst) {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// A runner that was started with [`Runner::spawn`].
pub struct Running {
    child: Child,
    stdout: Collector,
    stderr: Collector,
    status: Option<ExitStatus>,
    /// CPU time read from the zombie just before reaping (see `Output::cpu`).
    cpu: Option<Duration>,
    _home: TempDir,
}

/// User plus system CPU time of `pid` from /proc, which a zombie still has.
fn cpu_time(pid: u32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = text
        .get(text.rfind(')')? + 2..)?
        .split_whitespace()
        .collect();
    // Fields 14 and 15 (utime, stime); f[0] is field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis(ticks * 1000 / hz))
}

/// Whether child `pid` has exited, without reaping it.
fn exited_unreaped(pid: u32) -> bool {
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    let r = unsafe { libc::waitid(libc::P_PID, pid, &mut info, flags) };
    r == 0 && unsafe { info.si_pid() } != 0
}

impl Running {
    /// The runner's pid (the wrapper's under `SOLSTICE_TEST_WRAPPER`: it
    /// passes signals on, so signal this one).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed on stdout so far.
    pub fn stdout_so_far(&self) -> String {
        self.stdout.text()
    }

    /// Everything it printed on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr.text()
    }

    /// Sends `sig` to the runner process (not its group).
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Whether it has exited (reaps it if so).
    pub fn has_exited(&mut self) -> bool {
        if self.status.is_some() {
            return true;
        }
        if exited_unreaped(self.child.id()) {
            self.cpu = cpu_time(self.child.id());
        }
        match self.child.try_wait() {
            Ok(Some(st)) => {
                self.status = Some(st);
                true
            }
            _ => false,
        }
    }

    /// Kills the runner's whole process group and reaps the runner.
    pub fn kill(&mut self) {
        let pid = self.child.id() as i32;
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        if let Ok(st) = self.child.wait() {
            self.status.get_or_insert(st);
        }
    }

    fn output(&mut self, status: ExitStatus) -> Output {
        let until = Instant::now() + Duration::from_secs(5);
        self.stdout.finish(until);
        self.stderr.finish(until);
        Output {
            code: status.code(),
            signal: status.signal(),
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
            cpu: self.cpu,
        }
    }

    /// Waits for the runner to exit. On deadline, kills it (and its process
    /// group) and panics with what it printed so far.
    pub fn wait(mut self, deadline: Duration) -> Output {
        let end = Instant::now() + deadline;
        loop {
            if self.has_exited() {
                let st = self.status.unwrap();
                return self.output(st);
            }
            if Instant::now() >= end {
                self.kill();
                let st = self.status.unwrap_or_else(|| ExitStatus::from_raw(9));
                let out = self.output(st);
                panic!(
                    "solstice-runner did not finish within {:?}; killed it. What it printed:\n{}",
                    deadline, out
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
        }
    }
}

/// Polls `cond` every few milliseconds until it holds; panics naming `what`
/// if it does not within `deadline`.
#[track_caller]
pub fn wait_until(deadline: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= end {
            panic!("timed out after {:?} waiting for: {}", deadline, what);
        }
        thread::sleep(Duration::from_millis(5));
    }
}
