//! Real git on loopback for the tests: a repository builder over the `git`
//! binary, `git daemon`, and a small std-only HTTP server that serves
//! repositories as smart HTTP (`git http-backend` as a CGI) or dumb HTTP
//! (static files), optionally behind Basic auth.
//!
//! Every git command started here runs with a controlled environment: a
//! temporary `HOME`, no system or global config, a fixed identity and fixed
//! dates, so the tests behave the same on a fresh machine and on a
//! developer's machine with its own `~/.gitconfig`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::tmp::{accepts_connections, free_port, TempDir};

// ---------------------------------------------------------------------------
// Running git
// ---------------------------------------------------------------------------

/// A fixed date, so commit SHAs do not depend on the clock.
const FIXED_DATE: &str = "1700000000 +0000";

/// Applies the controlled git environment to `cmd`: `home` as `HOME` (and
/// XDG config home), no system or global config, a fixed identity and
/// dates, no prompts, C locale. Inherits everything else (PATH in
/// particular).
pub fn isolate_git_env(cmd: &mut Command, home: &Path) {
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Solstice Test")
        .env("GIT_AUTHOR_EMAIL", "test@solstice.invalid")
        .env("GIT_COMMITTER_NAME", "Solstice Test")
        .env("GIT_COMMITTER_EMAIL", "test@solstice.invalid")
        .env("GIT_AUTHOR_DATE", FIXED_DATE)
        .env("GIT_COMMITTER_DATE", FIXED_DATE)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
        .env_remove("GIT_PROTOCOL")
        .env_remove("GIT_CONFIG_PARAMETERS")
        .env_remove("GIT_CONFIG_COUNT");
}

fn run_git_raw(dir: &Path, home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("git");
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    isolate_git_env(&mut cmd, home);
    cmd.output()
        .unwrap_or_else(|e| panic!("starting git {:?} in {}: {}", args, dir.display(), e))
}

fn check_git(dir: &Path, args: &[&str], out: Output) -> String {
    if !out.status.success() {
        panic!(
            "git {:?} in {} failed ({}):\nstdout: {}\nstderr: {}",
            args,
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// Runs `git args` in `dir` with the controlled environment (a throwaway
/// temp HOME); panics on failure; returns stdout without trailing newlines.
pub fn git_in(dir: &Path, args: &[&str]) -> String {
    let home = TempDir::new("git-home");
    let out = run_git_raw(dir, home.path(), args);
    check_git(dir, args, out)
}

/// Like [`git_in`] but returns the raw output without checking the status.
pub fn git_output_in(dir: &Path, args: &[&str]) -> Output {
    let home = TempDir::new("git-home");
    run_git_raw(dir, home.path(), args)
}

/// `git rev-parse HEAD` in `dir`.
pub fn head_of(dir: &Path) -> String {
    git_in(dir, &["rev-parse", "HEAD"])
}

/// The directory where git keeps its helper programs (`git --exec-path`).
pub fn git_exec_path() -> PathBuf {
    let out = Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("running git --exec-path");
    assert!(out.status.success(), "git --exec-path failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

// ---------------------------------------------------------------------------
// Repository builder
// ---------------------------------------------------------------------------

/// A git repository on disk, built with the real `git` binary. Files are
/// written relative to the work tree; `commit` stages everything.
pub struct Repo {
    path: PathBuf,
    bare: bool,
    home: TempDir,
}

impl Repo {
    /// `git init -b main path` (creates `path` with parents).
    pub fn init(path: impl AsRef<Path>) -> Repo {
        Repo::init_impl(path.as_ref(), false)
    }

    /// `git init --bare -b main path`.
    pub fn init_bare(path: impl AsRef<Path>) -> Repo {
        Repo::init_impl(path.as_ref(), true)
    }

    fn init_impl(path: &Path, bare: bool) -> Repo {
        fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {}", path.display(), e));
        let repo = Repo {
            path: path.to_path_buf(),
            bare,
            home: TempDir::new("repo-home"),
        };
        let mut args = vec!["init", "-q", "-b", "main"];
        if bare {
            args.push("--bare");
        }
        args.push(".");
        repo.git(&args);
        repo
    }

    /// Opens an existing repository (for instance a checkout the runner
    /// made), to run git in it with the controlled environment.
    pub fn open(path: impl AsRef<Path>) -> Repo {
        let path = path.as_ref().to_path_buf();
        let bare = !path.join(".git").exists();
        Repo {
            path,
            bare,
            home: TempDir::new("repo-home"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_bare(&self) -> bool {
        self.bare
    }

    /// Runs `git args` in the repository; panics on failure; returns stdout
    /// without trailing newlines.
    pub fn git(&self, args: &[&str]) -> String {
        let out = run_git_raw(&self.path, self.home.path(), args);
        check_git(&self.path, args, out)
    }

    /// Runs `git args` in the repository and returns the raw output.
    pub fn git_output(&self, args: &[&str]) -> Output {
        run_git_raw(&self.path, self.home.path(), args)
    }

    fn work_path(&self, rel: &str) -> PathBuf {
        assert!(!self.bare, "cannot write files into a bare repository");
        self.path.join(rel)
    }

    /// Writes a file (creating parent directories) in the work tree.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> &Repo {
        let p = self.work_path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&p, contents).unwrap_or_else(|e| panic!("writing {}: {}", p.display(), e));
        self
    }

    /// Writes an executable file (mode 0755).
    pub fn write_executable(&self, rel: &str, contents: impl AsRef<[u8]>) -> &Repo {
        self.write(rel, contents);
        let p = self.work_path(rel);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    /// Writes `.solstice/job.sh` (mode 0755) with `#!/bin/sh` and `body`.
    pub fn write_job(&self, body: &str) -> &Repo {
        let script = format!("#!/bin/sh\n{}\n", body);
        self.write_executable(".solstice/job.sh", script)
    }

    /// Removes a file from the work tree (staged by the next commit).
    pub fn remove(&self, rel: &str) -> &Repo {
        let p = self.work_path(rel);
        fs::remove_file(&p).unwrap_or_else(|e| panic!("removing {}: {}", p.display(), e));
        self
    }

    /// Stages everything (`git add -A`) and commits; returns the new SHA.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    /// Adds a submodule entry without cloning it: a gitlink at `path`
    /// pinned to `sha`, and a `.gitmodules` section with `url`. Commit
    /// afterwards.
    pub fn add_submodule(&self, path: &str, url: &str, sha: &str) -> &Repo {
        assert!(!self.bare);
        let gitmodules = self.path.join(".gitmodules");
        let mut text = fs::read_to_string(&gitmodules).unwrap_or_default();
        text.push_str(&format!(
            "[submodule \"{}\"]\n\tpath = {}\n\turl = {}\n",
            path, path, url
        ));
        fs::write(&gitmodules, text).unwrap();
        // An empty directory at the gitlink's path, as for a submodule that
        // is not checked out; without it `git add -A` would stage a removal.
        fs::create_dir_all(self.path.join(path)).unwrap();
        self.git(&[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{},{}", sha, path),
        ]);
        self
    }

    /// `git rev-parse HEAD`.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// `git rev-parse rev`.
    pub fn rev_parse(&self, rev: &str) -> String {
        self.git(&["rev-parse", rev])
    }

    /// `git update-server-info`, which dumb HTTP needs after every change.
    pub fn update_server_info(&self) -> &Repo {
        self.git(&["update-server-info"]);
        self
    }

    /// Makes a bare copy of this repository at `dest` (for serving), with
    /// server info updated for dumb HTTP.
    pub fn clone_bare_to(&self, dest: impl AsRef<Path>) -> Repo {
        let dest = dest.as_ref();
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        let src = self.path.to_string_lossy().into_owned();
        let dst = dest.to_string_lossy().into_owned();
        self.git(&["clone", "-q", "--bare", "--no-local", &src, &dst]);
        let bare = Repo::open(dest);
        bare.update_server_info();
        bare
    }

    /// Pushes all branches and tags to `bare` (force), then updates its
    /// server info.
    pub fn push_to(&self, bare: &Repo) {
        let dst = bare.path.to_string_lossy().into_owned();
        self.git(&["push", "-q", "--force", &dst, "refs/heads/*:refs/heads/*"]);
        self.git(&["push", "-q", "--force", "--tags", &dst]);
        bare.update_server_info();
    }
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

fn kill_group(child: &mut Child) {
    let pid = child.id() as i32;
    // The child leads its own process group (process_group(0)), so this
    // reaches it and whatever it forked, and nothing else.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------
// git daemon
// ---------------------------------------------------------------------------

/// `git daemon` serving every repository under a base directory on
/// 127.0.0.1, killed (with everything it forked) on drop.
pub struct GitDaemon {
    child: Child,
    port: u16,
    base: PathBuf,
    home: TempDir,
}

impl GitDaemon {
    /// Starts the daemon and waits until it accepts connections. Retries on
    /// a new port if the daemon exits (for instance because another process
    /// took the port between the probe and the bind).
    pub fn start(base_dir: impl AsRef<Path>) -> GitDaemon {
        let base = base_dir.as_ref().to_path_buf();
        let home = TempDir::new("daemon-home");
        let mut last_log = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let log_path = home.join(format!("daemon-{}.log", attempt));
            let log = fs::File::create(&log_path).unwrap();
            let mut cmd = Command::new("git");
            cmd.arg("daemon")
                .arg("--reuseaddr")
                .arg("--export-all")
                .arg(format!("--base-path={}", base.display()))
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={}", port))
                .arg("--informative-errors")
                .arg("--verbose")
                .arg(&base)
                .current_dir(&base)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .process_group(0);
            isolate_git_env(&mut cmd, home.path());
            let mut child = cmd.spawn().expect("starting git daemon");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_status)) = child.try_wait() {
                    break; // exited: probably lost the port; try another
                }
                if accepts_connections(port) {
                    return GitDaemon {
                        child,
                        port,
                        base,
                        home,
                    };
                }
                if Instant::now() > deadline {
                    kill_group(&mut child);
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            kill_group(&mut child);
            last_log = fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!("git daemon did not start; its log:\n{}", last_log);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// `git://127.0.0.1:PORT/name`.
    pub fn url(&self, name: &str) -> String {
        format!(
            "git://127.0.0.1:{}/{}",
            self.port,
            name.trim_start_matches('/')
        )
    }

    /// The daemon's log so far (it runs with `--verbose`).
    pub fn log(&self) -> String {
        let mut s = String::new();
        let mut entries: Vec<_> = fs::read_dir(self.home.path())
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        for p in entries {
            if p.extension() == Some(OsStr::new("log")) {
                s.push_str(&fs::read_to_string(&p).unwrap_or_default());
            }
        }
        s
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

// ---------------------------------------------------------------------------
// HTTP server
// ---------------------------------------------------------------------------

/// How [`HttpServer`] serves the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpMode {
    /// `git http-backend` as a CGI for every request.
    Smart,
    /// Static files only; 404 for anything else.
    Dumb,
}

/// One request the server saw.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    pub method: String,
    /// The request target as sent, query included.
    pub target: String,
    /// The whole request line, e.g. `GET /r.git/info/refs?service=... HTTP/1.1`.
    pub line: String,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The status the server answered with.
    pub status: u16,
}

impl HttpRequest {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct HttpShared {
    root: PathBuf,
    mode: HttpMode,
    auth: Option<(String, String)>,
    /// Answer this many of the first requests with 503 (fault injection).
    fail_first: AtomicU64,
    /// While true, requests wait (after being read) until released.
    held: Mutex<bool>,
    held_cv: Condvar,
    /// Requests waiting at the gate right now.
    waiting: AtomicU64,
    requests: Mutex<Vec<HttpRequest>>,
    errors: Mutex<Vec<String>>,
    stop: AtomicBool,
    home: TempDir,
}

/// A small HTTP/1.1 server on 127.0.0.1, a thread per connection, with
/// keep-alive. Stopped on drop.
pub struct HttpServer {
    port: u16,
    shared: Arc<HttpShared>,
    accept_thread: Option<JoinHandle<()>>,
}

/// Options for [`HttpServer::start`].
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub mode: HttpMode,
    pub root: PathBuf,
    /// Require Basic auth with this user and password.
    pub auth: Option<(String, String)>,
    /// Answer the first N requests with `503 Service Unavailable`.
    pub fail_first: u64,
    /// Start with the gate closed: every request waits, unanswered, until
    /// [`HttpServer::release`] (or drop). Simulates a server that hangs.
    pub hold: bool,
}

impl HttpConfig {
    pub fn new(mode: HttpMode, root: impl AsRef<Path>) -> HttpConfig {
        HttpConfig {
            mode,
            root: root.as_ref().to_path_buf(),
            auth: None,
            fail_first: 0,
            hold: false,
        }
    }

    pub fn basic_auth(mut self, user: &str, password: &str) -> HttpConfig {
        self.auth = Some((user.to_string(), password.to_string()));
        self
    }

    pub fn fail_first(mut self, n: u64) -> HttpConfig {
        self.fail_first = n;
        self
    }

    pub fn hold(mut self) -> HttpConfig {
        self.hold = true;
        self
    }

    pub fn start(self) -> HttpServer {
        HttpServer::start(self)
    }
}

impl HttpServer {
    /// Smart HTTP over the repositories under `root`.
    pub fn smart(root: impl AsRef<Path>) -> HttpServer {
        HttpConfig::new(HttpMode::Smart, root).start()
    }

    /// Dumb HTTP: static files under `root`.
    pub fn dumb(root: impl AsRef<Path>) -> HttpServer {
        HttpConfig::new(HttpMode::Dumb, root).start()
    }

    /// Smart HTTP behind Basic auth.
    pub fn smart_with_auth(root: impl AsRef<Path>, user: &str, password: &str) -> HttpServer {
        HttpConfig::new(HttpMode::Smart, root)
            .basic_auth(user, password)
            .start()
    }

    pub fn start(config: HttpConfig) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(HttpShared {
            root: config.root,
            mode: config.mode,
            auth: config.auth,
            fail_first: AtomicU64::new(config.fail_first),
            held: Mutex::new(config.hold),
            held_cv: Condvar::new(),
            waiting: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            home: TempDir::new("http-home"),
        });
        let sh = shared.clone();
        let accept_thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let stream = match stream {
                    Ok(s) => s,
                    Err(_) => continue,
                };
                let sh2 = sh.clone();
                thread::spawn(move || {
                    if let Err(e) = serve_connection(&sh2, stream) {
                        if e.kind() != io::ErrorKind::UnexpectedEof
                            && e.kind() != io::ErrorKind::ConnectionReset
                            && e.kind() != io::ErrorKind::BrokenPipe
                        {
                            sh2.errors.lock().unwrap().push(e.to_string());
                        }
                    }
                });
            }
        });
        HttpServer {
            port,
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/name`.
    pub fn url(&self, name: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            name.trim_start_matches('/')
        )
    }

    /// `http://user:password@127.0.0.1:PORT/name`.
    pub fn url_with_credentials(&self, user: &str, password: &str, name: &str) -> String {
        format!(
            "http://{}:{}@127.0.0.1:{}/{}",
            user,
            password,
            self.port,
            name.trim_start_matches('/')
        )
    }

    /// Every request seen so far, in order.
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Every request line seen so far.
    pub fn request_lines(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.line).collect()
    }

    /// Every `Authorization` header value seen so far.
    pub fn authorization_headers(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|r| r.header("authorization").map(str::to_string))
            .collect()
    }

    /// How many requests are waiting at the closed gate (see
    /// [`HttpConfig::hold`]).
    pub fn waiting(&self) -> u64 {
        self.shared.waiting.load(Ordering::SeqCst)
    }

    /// Opens the gate: held requests proceed, new ones are not held.
    pub fn release(&self) {
        *self.shared.held.lock().unwrap() = false;
        self.shared.held_cv.notify_all();
    }

    /// I/O errors the server hit while serving (other than clients going
    /// away), for diagnostics.
    pub fn errors(&self) -> Vec<String> {
        self.shared.errors.lock().unwrap().clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.release();
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one CRLF (or LF) terminated line; `None` at a clean EOF.
fn read_line(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.take(64 * 1024).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "line too long or truncated",
        ));
    }
    while matches!(buf.last(), Some(b'\n') | Some(b'\r')) {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "eof in chunk size"))?;
        let size_str = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad chunk size {:?}", line),
            )
        })?;
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                match read_line(r)? {
                    None => return Ok(body),
                    Some(l) if l.is_empty() => return Ok(body),
                    Some(_) => {}
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let crlf = read_line(r)?.unwrap_or_default();
        if !crlf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "missing CRLF after chunk",
            ));
        }
    }
}

struct Response {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn simple(status: u16, reason: &str, body: &str) -> Response {
        Response {
            status,
            reason: reason.to_string(),
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: body.as_bytes().to_vec(),
        }
    }
}

fn serve_connection(sh: &HttpShared, stream: TcpStream) -> io::Result<()> {
    if sh.stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let line = loop {
            match read_line(&mut reader)? {
                None => return Ok(()),
                Some(l) if l.is_empty() => continue, // stray CRLF between requests
                Some(l) => break l,
            }
        };
        let mut parts = line.splitn(3, ' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let version = parts.next().unwrap_or("HTTP/1.0").to_string();
        let mut headers = Vec::new();
        loop {
            let h = read_line(&mut reader)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "eof in headers"))?;
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        if get("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            writer.flush()?;
        }
        let body = if get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            read_chunked(&mut reader)?
        } else if let Some(len) = get("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
            let mut b = vec![0; len];
            reader.read_exact(&mut b)?;
            b
        } else {
            Vec::new()
        };
        let connection = get("connection").unwrap_or_default().to_ascii_lowercase();
        let keep_alive = if version == "HTTP/1.0" {
            connection.contains("keep-alive")
        } else {
            !connection.contains("close")
        };

        let resp = handle_request(sh, &method, &target, &headers, body);
        sh.requests.lock().unwrap().push(HttpRequest {
            method: method.clone(),
            target: target.clone(),
            line: line.clone(),
            headers: headers.clone(),
            status: resp.status,
        });

        let mut out = Vec::new();
        out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", resp.status, resp.reason).as_bytes());
        for (k, v) in &resp.headers {
            out.extend_from_slice(format!("{}: {}\r\n", k, v).as_bytes());
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n", resp.body.len()).as_bytes());
        out.extend_from_slice(if keep_alive {
            b"Connection: keep-alive\r\n\r\n".as_slice()
        } else {
            b"Connection: close\r\n\r\n".as_slice()
        });
        if method != "HEAD" {
            out.extend_from_slice(&resp.body);
        }
        writer.write_all(&out)?;
        writer.flush()?;
        if !keep_alive {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

fn handle_request(
    sh: &HttpShared,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Response {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };

    // A hanging server: wait at the gate until released.
    {
        let mut held = sh.held.lock().unwrap();
        if *held {
            sh.waiting.fetch_add(1, Ordering::SeqCst);
            while *held {
                held = sh.held_cv.wait(held).unwrap();
            }
            sh.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    // Fault injection first: a flaky server fails before anything else.
    let failed = sh
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failed {
        return Response::simple(503, "Service Unavailable", "try again later\n");
    }

    let mut remote_user = None;
    if let Some((user, password)) = &sh.auth {
        let expected = format!(
            "Basic {}",
            base64(format!("{}:{}", user, password).as_bytes())
        );
        let ok = get("authorization").is_some_and(|v| {
            // The scheme name is case-insensitive.
            match v.split_once(' ') {
                Some((scheme, rest)) => {
                    scheme.eq_ignore_ascii_case("basic")
                        && format!("Basic {}", rest.trim()) == expected
                }
                None => false,
            }
        });
        if !ok {
            let mut r = Response::simple(401, "Unauthorized", "authentication required\n");
            r.headers
                .push(("WWW-Authenticate".into(), "Basic realm=\"x\"".into()));
            return r;
        }
        remote_user = Some(user.clone());
    }

    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    let path = percent_decode(&path);
    if !path.starts_with('/')
        || Path::new(&path)
            .components()
            .any(|c| matches!(c, Component::ParentDir))
    {
        return Response::simple(400, "Bad Request", "bad path\n");
    }

    match sh.mode {
        HttpMode::Dumb => {
            if method != "GET" && method != "HEAD" {
                return Response::simple(405, "Method Not Allowed", "dumb server\n");
            }
            let file = sh.root.join(path.trim_start_matches('/'));
            match fs::metadata(&file) {
                Ok(m) if m.is_file() => match fs::read(&file) {
                    Ok(data) => Response {
                        status: 200,
                        reason: "OK".into(),
                        headers: vec![("Content-Type".into(), "application/octet-stream".into())],
                        body: data,
                    },
                    Err(_) => Response::simple(500, "Internal Server Error", "read failed\n"),
                },
                _ => Response::simple(404, "Not Found", "not found\n"),
            }
        }
        HttpMode::Smart => run_http_backend(sh, method, &path, &query, get, remote_user, body),
    }
}

fn run_http_backend<'a>(
    sh: &HttpShared,
    method: &str,
    path: &str,
    query: &str,
    get: impl Fn(&str) -> Option<&'a str>,
    remote_user: Option<String>,
    body: Vec<u8>,
) -> Response {
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &sh.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("SERVER_SOFTWARE", "solstice-test")
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .current_dir(&sh.root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    isolate_git_env(&mut cmd, sh.home.path());
    if let Some(ct) = get("content-type") {
        cmd.env("CONTENT_TYPE", ct);
    }
    if let Some(ce) = get("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", ce);
    }
    if let Some(p) = get("git-protocol") {
        cmd.env("GIT_PROTOCOL", p);
    }
    if let Some(u) = remote_user {
        cmd.env("REMOTE_USER", u).env("AUTH_TYPE", "Basic");
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Response::simple(500, "Internal Server Error", &format!("cgi: {}\n", e)),
    };
    let mut stdin = child.stdin.take().unwrap();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&body);
        // Dropping stdin closes it.
    });
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => return Response::simple(500, "Internal Server Error", &format!("cgi: {}\n", e)),
    };
    let _ = writer.join();
    parse_cgi_output(&out.stdout).unwrap_or_else(|| {
        Response::simple(
            500,
            "Internal Server Error",
            &format!(
                "bad CGI output; stderr: {}\n",
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
}

/// Splits CGI output into headers and body, taking the status from a
/// `Status:` header (200 if absent).
fn parse_cgi_output(out: &[u8]) -> Option<Response> {
    let (head_end, body_start) = if let Some(i) = find(out, b"\r\n\r\n") {
        (i, i + 4)
    } else if let Some(i) = find(out, b"\n\n") {
        (i, i + 2)
    } else {
        return None;
    };
    let head = String::from_utf8_lossy(&out[..head_end]);
    let mut status = 200;
    let mut reason = "OK".to_string();
    let mut headers = Vec::new();
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        let (k, v) = line.split_once(':')?;
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let (code, r) = v.split_once(' ').unwrap_or((v, ""));
            status = code.parse().ok()?;
            reason = if r.is_empty() {
                "Status".into()
            } else {
                r.to_string()
            };
        } else if !k.eq_ignore_ascii_case("content-length") {
            headers.push((k.to_string(), v.to_string()));
        }
    }
    Some(Response {
        status,
        reason,
        headers,
        body: out[body_start..].to_vec(),
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

// ---------------------------------------------------------------------------
// Snapshots of directory trees (to prove a directory was left untouched)
// ---------------------------------------------------------------------------

/// What a file-system entry was, for [`snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    File { mode: u32, contents: Vec<u8> },
    Dir { mode: u32 },
    Symlink { target: PathBuf },
}

/// Every entry under `root` (relative paths), with file contents, modes and
/// symlink targets; compare two snapshots to prove nothing changed.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(_) => return,
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let m = match fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(_) => continue,
            };
            let mode = m.permissions().mode();
            if m.file_type().is_symlink() {
                out.insert(
                    rel,
                    Entry::Symlink {
                        target: fs::read_link(&p).unwrap_or_default(),
                    },
                );
            } else if m.is_dir() {
                out.insert(rel, Entry::Dir { mode });
                walk(root, &p, out);
            } else {
                out.insert(
                    rel,
                    Entry::File {
                        mode,
                        contents: fs::read(&p).unwrap_or_default(),
                    },
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}
