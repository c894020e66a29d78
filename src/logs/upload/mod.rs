//! Upload of the log spool and the job status to the orchestrator, over
//! hand-written HTTP/1.1 on libc sockets (see docs/protocol.md).
//!
//! One background thread tails the spool file and POSTs whole lines from the
//! offset the orchestrator has acknowledged, so a retry after a lost answer
//! can neither duplicate nor skip bytes, and memory holds at most one request
//! body. The job never waits on this thread except in `finish`, and then only
//! up to a deadline.
//!
//! Everything the server sends is untrusted: malformed answers are errors to
//! retry or give up on, never panics (panic=abort would kill the job).
//!
//! Written for size (the binary is downloaded at every VM boot): no JSON
//! library (the status is written by hand, and `length` is the only field
//! read), no std address parsing or formatting, one message per shape.
//! The socket and the spool are plain descriptors used through libc, and
//! the shared state is leaked rather than counted: std's TcpStream, File
//! and Arc each brought code that nothing else in the runner uses.

#![allow(unsafe_code)] // until this module moves to std::net and std::thread

use crate::config::url::{is_ci, parse_num, Endpoint};
use crate::report::Status;
use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most log bytes in one request (a single longer line goes alone, whole).
const MAX_BATCH: usize = 256 * 1024;
/// While output flows, the longest a line waits before it is sent; also how
/// often an idle spool is polled.
const INTERVAL: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(15);
const BACKOFF_MIN_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 5000;
/// Limits on what the server may send: our answers are tiny JSON objects.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;

pub struct Config {
    pub endpoint: Endpoint,
    pub job_id: String,
    pub token: String,
}

impl fmt::Debug for Config {
    // By hand, so that no `{:?}` anywhere can print the token.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Config")
            .field("endpoint", &self.endpoint)
            .field("job_id", &self.job_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The state the job thread and the upload thread share.
struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

struct State {
    /// Set by `finish`, taken by the upload thread: the final status body
    /// and the log length it reports.
    finish: Option<(Vec<u8>, u64)>,
    abandoned: bool,
    /// Set once by the upload thread when it stops: whether everything,
    /// final status included, was acknowledged.
    outcome: Option<bool>,
    /// Log bytes the orchestrator has acknowledged, for messages.
    acked: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a change or `until`; false once `until` has passed.
    fn wait<'a>(&self, st: MutexGuard<'a, State>, until: Instant) -> (MutexGuard<'a, State>, bool) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (st, false);
        }
        let st = self.cv.wait_timeout(st, left);
        (st.unwrap_or_else(|e| e.into_inner()).0, true)
    }
}

/// Logs `job <id>: <what>`, the shape of every message of the uploader.
fn say(level: log::Level, job: &str, what: fmt::Arguments) {
    crate::logs::logger::emit(level, format_args!("job {job}: {what}"));
}

/// Logs why the upload stops for good; returns false, for `run`'s result.
fn stop(job: &str, why: fmt::Arguments) -> bool {
    say(
        log::Level::Error,
        job,
        format_args!(
            "{why}; the log is not uploaded further (the job goes on, its log stays in the spool)"
        ),
    );
    false
}

/// Handle on the upload thread.
pub struct Uploader {
    shared: &'static Shared,
    spool_path: PathBuf,
    job_id: String,
}

impl Uploader {
    /// Spawns the upload thread, which first reports "running", then tails
    /// the spool at `spool_path` (which may not exist yet).
    pub fn start(cfg: Config, spool_path: PathBuf) -> Uploader {
        // Leaked rather than counted: one per job, and the detached thread
        // may outlive the handle.
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            state: Mutex::new(State {
                finish: None,
                abandoned: false,
                outcome: None,
                acked: 0,
            }),
            cv: Condvar::new(),
        }));
        let job_id = cfg.job_id.clone();
        let token_ok = !cfg.token.is_empty() && cfg.token.bytes().all(|b| b.is_ascii_graphic());
        let started = if !token_ok {
            stop(
                &job_id,
                format_args!(
                    "SOLSTICE_JOB_TOKEN is empty or has characters that cannot go in an HTTP \
                     header"
                ),
            )
        } else if let Err(e) = spawn(Worker::new(cfg, spool_path.clone(), shared)) {
            stop(
                &job_id,
                format_args!("cannot start the log upload thread: {e}"),
            )
        } else {
            true
        };
        if !started {
            shared.lock().outcome = Some(false);
        }
        Uploader {
            shared,
            spool_path,
            job_id,
        }
    }

    /// Uploads the rest of the spool, then reports `status` with the spool's
    /// size as `log_length`. Returns whether the orchestrator acknowledged
    /// everything within `deadline`; returns at the deadline regardless.
    /// The caller flushes the spool and stops appending before calling this.
    pub fn finish(self, status: Status, deadline: Duration) -> bool {
        // An unrepresentable deadline is none: an hour at a time.
        let end = Instant::now().checked_add(deadline);
        let log_length = std::fs::metadata(&self.spool_path).map_or(0, |m| m.len());
        let mut st = self.shared.lock();
        st.finish = Some((status.body(log_length).into_bytes(), log_length));
        self.shared.cv.notify_all();
        loop {
            if let Some(ok) = st.outcome {
                return ok;
            }
            let waited;
            let until = end.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            (st, waited) = self.shared.wait(st, until);
            if !waited {
                // Dropping `self` on return abandons the upload thread.
                say(
                    log::Level::Warn,
                    &self.job_id,
                    format_args!(
                        "the orchestrator did not take the whole log within {} ms \
                         (SOLSTICE_UPLOAD_DEADLINE; {} of {} bytes acknowledged); giving up on \
                         the upload",
                        deadline.as_millis() as u64,
                        st.acked,
                        log_length
                    ),
                );
                return false;
            }
        }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        // Without `finish` the thread would tail the spool forever.
        self.shared.lock().abandoned = true;
        self.shared.cv.notify_all();
    }
}

/// Runs `worker` on a thread of its own, with pthreads directly: std::thread's
/// spawning machinery (thread handles and names, spawn hooks, stack-guard
/// bookkeeping) is some 13 KB of the binary, and nothing else uses it.
fn spawn(worker: Worker) -> io::Result<()> {
    extern "C" fn upload_thread(arg: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `arg` is the box `spawn` leaked for this thread alone.
        unsafe { Box::from_raw(arg.cast::<Worker>()) }.run();
        std::ptr::null_mut()
    }
    let arg = Box::into_raw(Box::new(worker)).cast::<libc::c_void>();
    // SAFETY: pthread calls on local values they initialise; the new thread
    // owns `arg`, which is freed here if there is none.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        let mut tid: libc::pthread_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        // What std gives its threads; musl's default is only 128 KiB.
        libc::pthread_attr_setstacksize(&mut attr, 2 << 20);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let rc = libc::pthread_create(&mut tid, &attr, upload_thread, arg);
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            drop(Box::from_raw(arg.cast::<Worker>()));
            return Err(io::Error::from_raw_os_error(rc));
        }
    }
    Ok(())
}

/// What became of one request.
enum Reply {
    Done,
    /// The orchestrator holds a different length; continue from there.
    Resume(u64),
    /// Connection trouble, 5xx, 408, 429, or an answer we could not read.
    Retry(String),
    /// Not retried: 4xx, redirects, an impossible length. Already logged.
    GiveUp,
}

struct Worker {
    endpoint: Endpoint,
    /// The endpoint as `http://host:port/prefix`, for messages.
    url: String,
    job_id: String,
    spool_path: PathBuf,
    shared: &'static Shared,
    /// The spool's descriptor once opened, else -1.
    spool_fd: i32,
    conn: Conn,
    /// What the orchestrator has acknowledged: the next POST's offset.
    acked: u64,
    body: Vec<u8>,
    last_post: Option<Instant>,
    /// The current backoff step, in milliseconds.
    backoff_ms: u64,
    rng: u64,
    /// A failure streak has been logged; later failures go to debug.
    troubled: bool,
    /// The request head after the request line, up to Content-Type.
    head_common: String,
    /// `{prefix}/v1/jobs/{job}/`, to which `log` or `status` is appended.
    job_path: String,
}

impl Worker {
    fn new(cfg: Config, spool_path: PathBuf, shared: &'static Shared) -> Worker {
        let ep = &cfg.endpoint;
        let url = ep.url();
        let head_common = format!(
            concat!(
                "Host: {}\r\nAuthorization: Bearer {}\r\nUser-Agent: solstice-runner/",
                env!("CARGO_PKG_VERSION"),
                "\r\nConnection: keep-alive\r\nContent-Type: application/"
            ),
            url.get(7..url.len() - ep.prefix.len()).unwrap_or_default(),
            cfg.token,
        );
        // Percent-encodes everything but RFC 3986 unreserved characters, so
        // the job id is always exactly one path segment.
        let mut job_path = format!("{}/v1/jobs/", ep.prefix);
        // SAFETY: only ASCII is pushed.
        let v = unsafe { job_path.as_mut_vec() };
        for &b in cfg.job_id.as_bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                v.push(b);
            } else {
                let hex = b"0123456789ABCDEF";
                v.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 15)]]);
            }
        }
        v.push(b'/');
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let seed = u64::from(t.subsec_nanos())
            ^ t.as_secs()
            ^ (u64::from(std::process::id()) << 32)
            ^ 0x9E37_79B9_7F4A_7C15;
        Worker {
            endpoint: cfg.endpoint,
            url,
            job_id: cfg.job_id,
            spool_path,
            shared,
            spool_fd: -1,
            conn: Conn::new(),
            acked: 0,
            body: Vec::with_capacity(MAX_BATCH),
            last_post: None,
            backoff_ms: BACKOFF_MIN_MS,
            rng: seed | 1,
            troubled: false,
            head_common,
            job_path,
        }
    }

    fn run(mut self) {
        let ok = self.run_inner();
        self.shared.lock().outcome = Some(ok);
        self.shared.cv.notify_all();
    }

    fn run_inner(&mut self) -> bool {
        // The first request; no log is sent before it is acknowledged.
        let running = concat!(
            r#"{"state":"running","exit_code":null,"log_length":0,"runner_version":""#,
            env!("CARGO_PKG_VERSION"),
            r#"","steps":[]}"#
        )
        .as_bytes();
        let mut started = false;
        // The final status body and the log length it reports, once
        // `finish` has handed them over.
        let mut fin: Option<(Vec<u8>, u64)> = None;
        loop {
            {
                let mut st = self.shared.lock();
                if st.abandoned {
                    return false;
                }
                if fin.is_none() {
                    fin = st.finish.take();
                }
            }
            let mut final_sent = false;
            let reply = if !started {
                self.request(true, running)
            } else {
                let limit = fin.as_ref().map(|f| f.1);
                let more = match self.read_batch(limit) {
                    Ok(more) => more,
                    // The spool is ours; losing it is not the orchestrator's fault.
                    Err(e) => return self.spool_error(e),
                };
                if !self.body.is_empty() {
                    // Gather a trickle into one request per interval.
                    let since = self.last_post.map_or(INTERVAL, |t| t.elapsed());
                    if limit.is_none() && !more && since < INTERVAL {
                        self.pause(INTERVAL - since, true);
                        continue;
                    }
                    self.last_post = Some(Instant::now());
                    let body = std::mem::take(&mut self.body);
                    let reply = self.request(false, &body);
                    self.body = body;
                    reply
                } else if let Some((body, _)) = fin.as_ref().filter(|f| self.acked >= f.1) {
                    final_sent = true;
                    self.request(true, body)
                } else {
                    // Nothing new yet; or, after finish, nothing readable
                    // below the final length: the file is shorter than it
                    // was then, which only a broken disk does.
                    self.pause(INTERVAL, limit.is_none());
                    continue;
                }
            };
            match reply {
                Reply::Done if final_sent => return true,
                Reply::Done => {
                    started = true;
                    self.recovered();
                }
                Reply::Resume(m) => {
                    // The orchestrator holds another length: continue from
                    // there (after a final status, the status goes again).
                    let before = self.acked;
                    if !self.resume_at(m) {
                        return false;
                    }
                    // Not moving forward is legitimate once (an orchestrator
                    // that restarted from older state), but repeated it would
                    // be a hot loop, so it pauses like a failure.
                    if started && m <= before {
                        self.trouble(&format!(
                            "the orchestrator reports {m} log bytes where {before} were \
                             acknowledged"
                        ));
                    }
                    started = true;
                }
                Reply::Retry(why) => self.trouble(&why),
                Reply::GiveUp => return false,
            }
        }
    }

    /// Sleeps for `d`, or until abandoned, or (with `on_finish`) until
    /// `finish` is called.
    fn pause(&self, d: Duration, on_finish: bool) {
        let until = Instant::now() + d;
        let mut st = self.shared.lock();
        let mut waiting = true;
        while waiting && !st.abandoned && !(on_finish && st.finish.is_some()) {
            (st, waiting) = self.shared.wait(st, until);
        }
    }

    fn trouble(&mut self, why: &str) {
        // The first failure of a streak is a warning, the rest debug.
        let (level, tail) = if self.troubled {
            (log::Level::Debug, "")
        } else {
            (
                log::Level::Warn,
                "; retrying with backoff (the job goes on, its log is kept in the spool)",
            )
        };
        let ep = &self.url;
        say(
            level,
            &self.job_id,
            format_args!("upload to {ep} failed: {why}{tail}"),
        );
        self.troubled = true;
        // Full jitter over the upper half: spreads runners that failed
        // together without ever retrying hot.
        let cap = self.backoff_ms;
        let pause = cap / 2 + self.random() % (cap / 2 + 1);
        self.backoff_ms = (cap * 2).min(BACKOFF_MAX_MS);
        self.pause(Duration::from_millis(pause), false);
    }

    fn recovered(&mut self) {
        if self.troubled {
            let ep = &self.url;
            say(
                log::Level::Info,
                &self.job_id,
                format_args!("upload to {ep} works again"),
            );
            self.troubled = false;
        }
        self.backoff_ms = BACKOFF_MIN_MS;
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: jitter only, not security.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    #[inline(always)]
    fn set_acked(&mut self, n: u64) {
        self.acked = n;
        self.shared.lock().acked = n;
    }

    fn spool_error(&self, e: io::Error) -> bool {
        stop(&self.job_id, format_args!("cannot read the log spool: {e}"))
    }

    /// Accepts a length the orchestrator reported, if it is a line boundary
    /// of our spool (0, or just after a `\n`, and not past its end); anything
    /// else means the orchestrator holds a different log, and uploading more
    /// could only corrupt it.
    fn resume_at(&mut self, m: u64) -> bool {
        let mut b = [b'\n'];
        if m > 0 {
            // Past the end, the read returns nothing and `b` stays 0.
            b[0] = 0;
            if let Err(e) = self.spool().and_then(|fd| pread(fd, &mut b, m - 1)) {
                return self.spool_error(e);
            }
        }
        if b[0] != b'\n' {
            return stop(
                &self.job_id,
                format_args!(
                    "the orchestrator reports {m} log bytes, which is not a line boundary of \
                     this job's spool"
                ),
            );
        }
        self.set_acked(m);
        true
    }

    /// The spool, opened on first use (the job may not have written it
    /// yet), with libc: std's open path (OpenOptions) is not otherwise
    /// linked.
    fn spool(&mut self) -> io::Result<i32> {
        if self.spool_fd < 0 {
            // The spool's path has no NUL: the spool was created under it.
            let mut p = self.spool_path.as_os_str().as_bytes().to_vec();
            p.push(0);
            // SAFETY: a NUL-terminated path; the descriptor is closed on drop.
            let fd = unsafe { libc::open(p.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            self.spool_fd = fd;
        }
        Ok(self.spool_fd)
    }

    /// Loads the next request body into `self.body`: whole lines from
    /// `acked`, at most MAX_BATCH bytes unless one line is longer. `limit` is
    /// the spool's final size once the job is done; then a last line without
    /// its newline (only a failing disk leaves one) is sent too. Returns
    /// whether more than a batch was waiting: then there is a backlog to
    /// send at once rather than gather.
    fn read_batch(&mut self, limit: Option<u64>) -> io::Result<bool> {
        self.body.clear();
        let acked = self.acked;
        let fd = match self.spool() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && limit.is_none() => return Ok(false),
            f => f?,
        };
        let size = file_len(fd)?;
        let avail = limit.map_or(size, |l| l.min(size)).saturating_sub(acked);
        let body = &mut self.body;
        // A batch, then (with no line end in a whole batch: one line longer
        // than a batch, or one still being written) 64 KiB at a time up to
        // the end of that line, which goes whole and alone.
        let mut want = MAX_BATCH;
        while (body.len() as u64) < avail {
            let from = body.len();
            let n = (avail - from as u64).min(want as u64) as usize;
            let mut got = 0;
            while got < n {
                match read_more(fd, body, n - got, Some(acked + (from + got) as u64))? {
                    0 => break, // the file shrank under us
                    k => got += k,
                }
            }
            let new = &body[from..];
            let nl = if from == 0 {
                new.iter().rposition(|&b| b == b'\n')
            } else {
                new.iter().position(|&b| b == b'\n')
            };
            if let Some(i) = nl {
                body.truncate(from + i + 1);
                return Ok(avail > MAX_BATCH as u64);
            }
            if got == 0 {
                break;
            }
            want = 64 * 1024;
        }
        if limit.is_none() {
            body.clear();
        }
        Ok(false)
    }

    /// One request: `PUT status` with `put`, else `POST log` from `acked`.
    fn request(&mut self, put: bool, body: &[u8]) -> Reply {
        let (jp, hc, len) = (&self.job_path, &self.head_common, body.len());
        let (what, head) = if put {
            let h = format!("PUT {jp}status HTTP/1.1\r\n{hc}json\r\nContent-Length: {len}\r\n\r\n");
            ("PUT status", h)
        } else {
            let h = format!(
                "POST {jp}log?offset={} HTTP/1.1\r\n{hc}x-ndjson\r\nContent-Length: {len}\r\n\r\n",
                self.acked
            );
            ("POST log", h)
        };
        let resp = match self.exchange(head.as_bytes(), body) {
            Ok(r) => r,
            Err(why) => return Reply::Retry(why),
        };
        let length = parse_length(&resp.body);
        let status = resp.status;
        let why = match status {
            200..=299 if put => return Reply::Done,
            200..=299 => {
                // A 2xx without a readable length still means "appended".
                let end = self.acked + body.len() as u64;
                let m = length.unwrap_or(end);
                if m != end {
                    return Reply::Resume(m);
                }
                self.set_acked(m);
                return Reply::Done;
            }
            409 => match length {
                Some(m) => return Reply::Resume(m),
                None => "its answer has no length to resume from",
            },
            401 | 403 => "it does not accept the job token",
            300..=399 => "redirects are not followed",
            400..=499 if status != 408 && status != 429 => "the request is not retried",
            _ => return Reply::Retry(format!("the orchestrator answered {status} to {what}")),
        };
        let ep = &self.url;
        stop(
            &self.job_id,
            format_args!("the orchestrator at {ep} answered {status} to {what}: {why}"),
        );
        Reply::GiveUp
    }

    /// One request and its answer, on the kept-alive connection if there is
    /// one. A kept-alive connection the server closed meanwhile fails before
    /// any answer byte; then the request is sent once more on a new one
    /// (safe: every request is idempotent thanks to the offset).
    fn exchange(&mut self, head: &[u8], body: &[u8]) -> std::result::Result<Response, String> {
        loop {
            let reused = self.conn.fd >= 0;
            if !reused {
                self.conn.open(&self.endpoint, &self.url)?;
            }
            let conn = &mut self.conn;
            match conn.exchange(head, body) {
                Ok(resp) => {
                    if !resp.keep_alive {
                        conn.close();
                    }
                    return Ok(resp);
                }
                Err(why) => {
                    conn.close();
                    // The next round is on a new connection.
                    if !(reused && conn.received == 0) {
                        return Err(match conn.err.take() {
                            Some(e) => format!("{why}: {e}"),
                            None => why.to_string(),
                        });
                    }
                }
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.spool_fd >= 0 {
            // SAFETY: the descriptor is ours and closed once.
            unsafe { libc::close(self.spool_fd) };
        }
    }
}

/// Appends to `buf` what one read(2), or with `at` one pread(2) at that
/// offset, of at most `max` bytes returns (retried when interrupted),
/// without zeroing the space first.
fn read_more(fd: i32, buf: &mut Vec<u8>, max: usize, at: Option<u64>) -> io::Result<usize> {
    buf.reserve(max);
    let len = buf.len();
    // SAFETY: the read writes at most `max` bytes into the reserved spare
    // capacity, and only the bytes it wrote are counted in.
    unsafe {
        let p = buf.as_mut_ptr().add(len).cast();
        let n = loop {
            let n = match at {
                Some(offset) => libc::pread(fd, p, max, offset as libc::off_t),
                None => libc::read(fd, p, max),
            };
            if n >= 0 {
                break n;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        };
        buf.set_len(len + n as usize);
        Ok(n as usize)
    }
}

/// One pread(2) of `buf.len()` bytes at most, at `offset`.
fn pread(fd: i32, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    // SAFETY: reads into a valid slice.
    let n = unsafe {
        libc::pread(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The size of the file `fd`, with fstat directly: std's `File::metadata`
/// tries statx first and is not otherwise linked.
fn file_len(fd: i32) -> io::Result<u64> {
    // SAFETY: fstat fills a zeroed stat.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st.st_size as u64)
    }
}

/// The non-negative integer `length` of a JSON object such as
/// `{"length": 93, "note": "…"}`, without a JSON parser: a scan that skips
/// strings whole and looks at the keys of the top level only. Anything but
/// a plain JSON integer there (`1.5`, `-1`, `"9"`, `007`) is no length; the
/// last `length` counts, as with a parser. The rest of the body is not
/// checked: an orchestrator's answer is not a place to be strict.
fn parse_length(body: &[u8]) -> Option<u64> {
    let mut found = None;
    let mut depth = 0u32;
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        i += 1;
        match b {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                let start = i;
                loop {
                    match *body.get(i)? {
                        b'"' => break,
                        b'\\' => i += 2,
                        _ => i += 1,
                    }
                }
                let key = body.get(start..i)?;
                i += 1;
                let rest = body.get(i..)?.trim_ascii();
                if depth == 1 && key == b"length" && rest.first() == Some(&b':') {
                    let value = rest.get(1..).unwrap_or_default().trim_ascii();
                    let end = value
                        .iter()
                        .position(|&b| !b.is_ascii_digit())
                        .unwrap_or(value.len());
                    let (digits, after) = value.split_at(end);
                    let plain = matches!(after.trim_ascii().first(), Some(b',' | b'}'))
                        && (end == 1 || digits.first() != Some(&b'0'));
                    found = parse_num(digits, 10).filter(|_| plain);
                }
            }
            _ => {}
        }
    }
    found
}

struct Response {
    status: u64,
    body: Vec<u8>,
    keep_alive: bool,
}

const CLOSED: &str = "the orchestrator closed the connection";
const TOO_LONG: &str = "the answer is too long";

/// Why an exchange failed; an I/O error behind it is kept in `Conn::err`.
type Fail = &'static str;

/// A blocking TCP connection to `a` at `port`, made within CONNECT_TIMEOUT
/// (a non-blocking connect and poll), with IO_TIMEOUT for reads and writes.
///
/// SAFETY: `a.ai_addr` must point to a sockaddr of `a.ai_family`.
unsafe fn connect(a: &libc::addrinfo, port: u16) -> io::Result<i32> {
    let sa = a.ai_addr;
    match a.ai_family {
        libc::AF_INET => (*sa.cast::<libc::sockaddr_in>()).sin_port = port.to_be(),
        libc::AF_INET6 => (*sa.cast::<libc::sockaddr_in6>()).sin6_port = port.to_be(),
        _ => return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
    }
    let fd = libc::socket(
        a.ai_family,
        libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        0,
    );
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut err = 0;
    if libc::connect(fd, sa, a.ai_addrlen) != 0 {
        err = errno();
        if err == libc::EINPROGRESS {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            let ms = CONNECT_TIMEOUT.as_millis() as libc::c_int;
            err = loop {
                match libc::poll(&mut p, 1, ms) {
                    0 => break libc::ETIMEDOUT,
                    n if n > 0 => {
                        let mut len = 4;
                        libc::getsockopt(
                            fd,
                            libc::SOL_SOCKET,
                            libc::SO_ERROR,
                            (&mut err as *mut i32).cast(),
                            &mut len,
                        );
                        break err;
                    }
                    _ => match errno() {
                        libc::EINTR => {}
                        e => break e,
                    },
                }
            };
        }
    }
    if err != 0 {
        libc::close(fd);
        return Err(io::Error::from_raw_os_error(err));
    }
    // Failures here are ignored: they cannot happen on a connected TCP
    // socket, and `finish`'s deadline bounds even a missing timeout.
    libc::fcntl(fd, libc::F_SETFL, 0);
    let t = libc::timeval {
        tv_sec: IO_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        setopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&t as *const libc::timeval).cast(),
            size_of_val(&t),
        );
    }
    setopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        (&1i32 as *const i32).cast(),
        4,
    );
    Ok(fd)
}

unsafe fn setopt(fd: i32, level: i32, name: i32, v: *const libc::c_void, len: usize) {
    libc::setsockopt(fd, level, name, v, len as libc::socklen_t);
}

#[inline(always)]
fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// One HTTP/1.1 client connection with its read buffer (RFC 9112 framing).
/// Kept for the whole upload; `fd` is -1 while there is no connection.
struct Conn {
    fd: i32,
    buf: Vec<u8>,
    pos: usize,
    /// Bytes received since the current request was sent.
    received: usize,
    /// What the current answer may still use of MAX_HEAD.
    budget: usize,
    err: Option<io::Error>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.close();
    }
}

impl Conn {
    fn new() -> Conn {
        Conn {
            fd: -1,
            buf: Vec::new(),
            pos: 0,
            received: 0,
            budget: 0,
            err: None,
        }
    }

    fn close(&mut self) {
        if self.fd >= 0 {
            // SAFETY: the descriptor is ours and closed once.
            unsafe { libc::close(self.fd) };
            self.fd = -1;
        }
    }

    /// Connects to the first address of the host that answers. Names are
    /// resolved with getaddrinfo and connected with libc directly: std's
    /// `ToSocketAddrs` and `connect_timeout` would convert each address to
    /// std's types and back, and carry their own text parsers.
    fn open(&mut self, ep: &Endpoint, url: &str) -> std::result::Result<(), String> {
        // parse_url admits no NUL, so the name is the host whole.
        let mut host = ep.host.clone().into_bytes();
        host.push(0);
        // SAFETY: all-zero is a valid addrinfo (null pointers, no flags).
        let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
        hints.ai_socktype = libc::SOCK_STREAM;
        let mut list = std::ptr::null_mut();
        // SAFETY: valid C string and hints; `list` is freed below.
        let rc =
            unsafe { libc::getaddrinfo(host.as_ptr().cast(), std::ptr::null(), &hints, &mut list) };
        if rc != 0 {
            // SAFETY: gai_strerror returns a static C string.
            let why = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) };
            return Err(format!(
                "cannot resolve {}: {}",
                ep.host,
                why.to_string_lossy()
            ));
        }
        let mut result = Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT));
        let mut ai = list;
        // SAFETY: getaddrinfo's list is valid until freeaddrinfo, and each
        // ai_addr points to the sockaddr its ai_family says, ours to change.
        while let (Err(_), Some(a)) = (&result, unsafe { ai.as_ref() }) {
            ai = a.ai_next;
            result = unsafe { connect(a, ep.port) };
        }
        // SAFETY: `list` came from getaddrinfo and is freed once.
        unsafe { libc::freeaddrinfo(list) };
        match result {
            Ok(fd) => {
                self.fd = fd;
                self.buf.clear();
                self.pos = 0;
                Ok(())
            }
            Err(e) => Err(format!(
                "cannot connect to {}: {e}",
                url.get(7..url.len() - ep.prefix.len()).unwrap_or_default()
            )),
        }
    }

    fn exchange(&mut self, head: &[u8], body: &[u8]) -> std::result::Result<Response, Fail> {
        // Leftover bytes from the previous answer mean the server broke
        // framing (and, with `received` still counting them, no resend).
        if self.pos != self.buf.len() {
            return Err("stray bytes after the previous answer");
        }
        self.received = 0;
        // write_all by hand over both parts. A peer that closed gives
        // EPIPE: the runner ignores SIGPIPE.
        for mut b in [head, body] {
            while !b.is_empty() {
                // SAFETY: writes from a valid slice.
                let n = unsafe { libc::write(self.fd, b.as_ptr().cast(), b.len()) };
                if n > 0 {
                    b = b.get(n as usize..).unwrap_or_default();
                } else if n == 0 || errno() != libc::EINTR {
                    self.err = (n < 0).then(io::Error::last_os_error);
                    return Err("sending the request");
                }
            }
        }
        self.read_response()
    }

    /// Reads more of the answer; false at end of stream.
    fn fill(&mut self) -> std::result::Result<bool, Fail> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        match read_more(self.fd, &mut self.buf, 4096, None) {
            Ok(n) => {
                self.received += n;
                Ok(n > 0)
            }
            Err(e) => {
                self.err = Some(e);
                Err("reading the answer")
            }
        }
    }

    /// One line without its CRLF (a bare LF is accepted too, RFC 9112 2.2),
    /// counted against `budget`, the bytes of head, chunk sizes and trailers
    /// the answer may still use.
    fn line(&mut self) -> std::result::Result<&[u8], Fail> {
        // Bytes after `pos` known to hold no line end (`fill` moves the
        // buffer's start only when everything was consumed).
        let mut scanned = 0;
        loop {
            let start = self.pos;
            if let Some(i) = self
                .buf
                .get(start + scanned..)
                .unwrap_or_default()
                .iter()
                .position(|&b| b == b'\n')
            {
                let end = start + scanned + i;
                self.budget = self.budget.checked_sub(end + 1 - start).ok_or(TOO_LONG)?;
                self.pos = end + 1;
                let line = self.buf.get(start..end).unwrap_or_default();
                return Ok(line.strip_suffix(b"\r").unwrap_or(line));
            }
            scanned = self.buf.len() - start;
            if scanned > self.budget {
                return Err(TOO_LONG);
            }
            if !self.fill()? {
                return Err(CLOSED);
            }
        }
    }

    /// Appends `n` bytes of the answer to `out`, or with `None` all up to
    /// the end of the stream; more than MAX_BODY in all is an error.
    fn take(&mut self, n: Option<u64>, out: &mut Vec<u8>) -> std::result::Result<(), Fail> {
        let room = (MAX_BODY - out.len()) as u64;
        if n.is_some_and(|n| n > room) {
            return Err(TOO_LONG);
        }
        // Up to the end: one byte more than there is room for is too long.
        let want = n.unwrap_or(room + 1);
        while ((self.buf.len() - self.pos) as u64) < want {
            if !self.fill()? {
                if n.is_some() {
                    return Err(CLOSED);
                }
                break;
            }
        }
        let rest = &self.buf[self.pos..];
        let k = want.min(rest.len() as u64) as usize;
        if k as u64 > room {
            return Err(TOO_LONG);
        }
        out.extend_from_slice(&rest[..k]);
        self.pos += k;
        Ok(())
    }

    fn read_response(&mut self) -> std::result::Result<Response, Fail> {
        self.budget = MAX_HEAD;
        loop {
            // `HTTP/1.1 200 OK`; the reason phrase is optional.
            let line = self.line()?;
            let http11 = match line.get(..9) {
                Some(b"HTTP/1.1 ") => true,
                Some(b"HTTP/1.0 ") => false,
                _ => return Err("not an HTTP/1.x answer"),
            };
            let status = match (line.get(9..12).and_then(|c| parse_num(c, 10)), line.get(12)) {
                (Some(s @ 100..), None | Some(b' ')) => s,
                _ => return Err("bad status line"),
            };
            let mut length = None;
            // Some(true): chunked; Some(false): another coding.
            let mut coding = None;
            // The connection is closed after an HTTP/1.0 answer, even one
            // that offers keep-alive (docs/protocol.md).
            let mut close = !http11;
            loop {
                let line = self.line()?;
                if line.is_empty() {
                    break;
                }
                let colon = line.iter().position(|&b| b == b':');
                let (name, value) = line.split_at(colon.ok_or("a header line without a colon")?);
                let value = value.get(1..).unwrap_or_default().trim_ascii();
                if is_ci(name, b"content-length") {
                    let n = parse_num(value, 10).ok_or("bad Content-Length")?;
                    if length.is_some_and(|l| l != n) {
                        return Err("conflicting Content-Length headers");
                    }
                    length = Some(n);
                } else if is_ci(name, b"transfer-encoding") {
                    // The last coding counts.
                    let last = value.iter().rposition(|&b| b == b',');
                    let last = value.get(last.map_or(0, |i| i + 1)..).unwrap_or_default();
                    coding = Some(is_ci(last.trim_ascii(), b"chunked"));
                } else if is_ci(name, b"connection") {
                    // Any item `close`, in a comma-separated list.
                    let mut rest = value;
                    while !rest.is_empty() {
                        let end = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
                        close |= is_ci(rest[..end].trim_ascii(), b"close");
                        rest = rest.get(end + 1..).unwrap_or_default();
                    }
                }
            }
            if status < 200 {
                if status == 101 {
                    return Err("the orchestrator switched protocols");
                }
                // Interim answers (100 Continue) have no body; the real one follows.
                continue;
            }
            let mut body = Vec::new();
            // 204 and 304 have no body by definition (RFC 9112 6.3).
            if status != 204 && status != 304 {
                match (coding, length) {
                    (Some(true), _) => loop {
                        let line = self.line()?;
                        // Chunk extensions (`;name=value`) are ignored.
                        let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
                        let size =
                            parse_num(line[..end].trim_ascii(), 16).ok_or("bad chunk size")?;
                        if size == 0 {
                            // Trailer fields, ignored, up to the empty line.
                            while !self.line()?.is_empty() {}
                            break;
                        }
                        self.take(Some(size), &mut body)?;
                        if !self.line()?.is_empty() {
                            return Err("a chunk does not end with CRLF");
                        }
                    },
                    (None, Some(n)) => self.take(Some(n), &mut body)?,
                    // Another coding, or no framing: the close ends the body
                    // (RFC 9112 6.3, items 4 and 8).
                    _ => {
                        self.take(None, &mut body)?;
                        close = true;
                    }
                }
            }
            return Ok(Response {
                status,
                body,
                keep_alive: !close,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn parse_length_reads_the_top_level_integer_only() {
        let cases: [(&str, Option<u64>); 14] = [
            (r#"{"length":93}"#, Some(93)),
            (
                r#"{ "length" : 207 , "note": "offset mismatch" }"#,
                Some(207),
            ),
            (r#"{"note":"\"length\": 5","length":6}"#, Some(6)),
            (r#"{"a":{"length":3},"b":[{"length":4}]}"#, None),
            (r#"{"length":7,"length":8}"#, Some(8)),
            (r#"{"length":0}"#, Some(0)),
            (r#"{"length":18446744073709551615}"#, Some(u64::MAX)),
            (r#"{"length":18446744073709551616}"#, None),
            (r#"{"length":-1}"#, None),
            (r#"{"length":1.5}"#, None),
            (r#"{"length":1e3}"#, None),
            (r#"{"length":"9"}"#, None),
            (r#"{"length":007}"#, None),
            ("", None),
        ];
        for (body, want) in cases {
            assert_eq!(parse_length(body.as_bytes()), want, "{body}");
        }
    }

    /// Answers that arrive a line at a time on one kept-alive connection,
    /// so that lines end exactly where reads end.
    #[test]
    fn answers_split_across_reads() {
        let answers: [&[u8]; 3] = [
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;x=y\r\n{\"len\r\n8\r\ngth\": 7}\r\n0\r\nTrailer: 1\r\n\r\n",
            b"HTTP/1.1 409 Conflict\nContent-Length: 13\n\n{\"length\":93}",
            b"HTTP/1.0 503 Busy\r\n\r\nclosed",
        ];
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_nodelay(true).unwrap();
            for answer in answers {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    s.read_exact(&mut b).unwrap();
                    head.push(b[0]);
                }
                for line in answer.split_inclusive(|&b| b == b'\n') {
                    s.write_all(line).unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        let mut conn = connected(port);
        let mut ask = || {
            let r = conn.exchange(b"GET / HTTP/1.1\r\n\r\n", b"").unwrap();
            (r.status, String::from_utf8(r.body).unwrap(), r.keep_alive)
        };
        assert_eq!(ask(), (200, r#"{"length": 7}"#.into(), true));
        assert_eq!(ask(), (409, r#"{"length":93}"#.into(), true));
        assert_eq!(ask(), (503, "closed".into(), false));
        server.join().unwrap();
    }

    /// A connection to a test server on 127.0.0.1:`port`.
    fn connected(port: u16) -> Conn {
        let ep = Endpoint {
            host: "127.0.0.1".into(),
            port,
            prefix: String::new(),
        };
        let mut conn = Conn::new();
        conn.open(&ep, &ep.url()).unwrap();
        conn
    }

    /// Bodies over MAX_BODY fail, whether announced or delimited by the close;
    /// one of exactly MAX_BODY bytes is read whole.
    #[test]
    fn answer_bodies_are_limited() {
        let big = vec![b'x'; MAX_BODY + 1];
        let cases: [(Vec<u8>, Option<usize>); 4] = [
            (
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    MAX_BODY + 1
                )
                .into(),
                None,
            ),
            ([b"HTTP/1.1 200 OK\r\n\r\n".as_slice(), &big].concat(), None),
            (
                [b"HTTP/1.1 200 OK\r\n\r\n".as_slice(), &big[1..]].concat(),
                Some(MAX_BODY),
            ),
            (
                [
                    b"HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n".as_slice(),
                    &big[1..],
                ]
                .concat(),
                Some(MAX_BODY),
            ),
        ];
        for (answer, want) in cases {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = std::thread::spawn(move || {
                let (mut s, _) = listener.accept().unwrap();
                let mut b = [0u8; 64];
                let _ = s.read(&mut b);
                let _ = s.write_all(&answer);
            });
            let mut conn = connected(port);
            let got = conn.exchange(b"GET / HTTP/1.1\r\n\r\n", b"");
            assert_eq!(got.map(|r| r.body.len()).ok(), want);
            server.join().unwrap();
        }
    }
}
