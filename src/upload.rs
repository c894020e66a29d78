//! Upload of the log spool and the job status to the orchestrator, over
//! hand-written HTTP/1.1 on std::net (see docs/protocol.md).
//!
//! One background thread tails the spool file and POSTs whole lines from the
//! offset the orchestrator has acknowledged, so a retry after a lost answer
//! can neither duplicate nor skip bytes, and memory holds at most one request
//! body. The job never waits on this thread except in `finish`, and then only
//! up to a deadline.
//!
//! Everything the server sends is untrusted: malformed answers are errors to
//! retry or give up on, never panics (panic=abort would kill the job).

use crate::error::{Error, Result};
use miniserde::{Deserialize, Serialize};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most log bytes in one request (a single longer line goes alone, whole).
const MAX_BATCH: usize = 256 * 1024;
/// While output flows, the longest a line waits before it is sent; also how
/// often an idle spool is polled.
const INTERVAL: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(15);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Limits on what the server may send: our answers are tiny JSON objects.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;

const NDJSON: &str = "application/x-ndjson";
const JSON: &str = "application/json";

/// Where the orchestrator listens: `http://host:port/prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// A name or an address; an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
    /// The path before `/v1/...`: empty or `/a/b`, without a trailing slash.
    pub prefix: String,
}

impl Endpoint {
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.prefix)
    }
}

/// Parses `SOLSTICE_ORCHESTRATOR_URL`: `http://host[:port][/prefix]`, port 80
/// when absent.
pub fn parse_url(s: &str) -> Result<Endpoint> {
    const VAR: &str = "SOLSTICE_ORCHESTRATOR_URL";
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(Error::input(format!(
            "{VAR} {s:?} is not a URL: expected http://host:port[/prefix]"
        )));
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // Checked before anything echoes the URL: user information may hold a password.
    if authority.contains('@') {
        return Err(Error::input(format!(
            "{VAR} must not contain user information (user@ or user:password@): \
             the runner authenticates with SOLSTICE_JOB_TOKEN"
        )));
    }
    if scheme.eq_ignore_ascii_case("https") {
        return Err(Error::input(format!(
            "{VAR} {s:?} uses https, which the runner does not speak: it talks plain HTTP \
             to the orchestrator on the host side of the VM network; use http://host:port"
        )));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(Error::input(format!(
            "{VAR} {s:?} has the scheme {scheme:?}: expected http://host:port[/prefix]"
        )));
    }
    let bad = |why: &str| Error::input(format!("{VAR} {s:?}: {why}"));

    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(bad("an IPv6 address needs a closing ]"));
        };
        if addr.is_empty()
            || !addr
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(bad("the IPv6 address is not valid"));
        }
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err(bad("expected :port after the IPv6 address")),
            },
        };
        (addr, port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("the host is missing"));
    }
    if !authority.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return Err(bad(
            "the host may only contain letters, digits, '-', '_' and '.'",
        ));
    }
    let port = match port {
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        },
    };
    if tail.contains(['?', '#']) {
        return Err(bad("the URL must not have a query (?) or a fragment (#)"));
    }
    if !tail.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "the path may only contain printable ASCII without spaces",
        ));
    }
    Ok(Endpoint {
        host: host.to_string(),
        port,
        prefix: tail.trim_end_matches('/').to_string(),
    })
}

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

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StepReport {
    pub name: String,
    pub state: String,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// "running", "succeeded", "failed", "cancelled", "timed_out" or "error".
    pub state: &'static str,
    pub exit_code: Option<i32>,
    pub steps: Vec<StepReport>,
}

#[derive(Serialize)]
struct StatusBody<'a> {
    state: &'a str,
    exit_code: Option<i32>,
    log_length: u64,
    runner_version: &'a str,
    steps: &'a [StepReport],
}

#[derive(Deserialize)]
struct LengthBody {
    length: u64,
}

/// The state the job thread and the upload thread share.
struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

struct State {
    finish: Option<(Status, u64)>,
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
}

/// Handle on the upload thread.
pub struct Uploader {
    shared: Arc<Shared>,
    spool_path: PathBuf,
    job_id: String,
}

impl Uploader {
    /// Spawns the upload thread, which first reports "running", then tails
    /// the spool at `spool_path` (which may not exist yet).
    pub fn start(cfg: Config, spool_path: PathBuf) -> Uploader {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                finish: None,
                abandoned: false,
                outcome: None,
                acked: 0,
            }),
            cv: Condvar::new(),
        });
        let job_id = cfg.job_id.clone();
        let worker = Worker::new(cfg, spool_path.clone(), shared.clone());
        let spawned = std::thread::Builder::new()
            .name("upload".to_string())
            .spawn(move || worker.run());
        if let Err(e) = spawned {
            log::error!("cannot start the log upload thread: {e}; the log stays in the spool only");
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
        let end = Instant::now().checked_add(deadline);
        let log_length = std::fs::metadata(&self.spool_path)
            .map(|m| m.len())
            .unwrap_or(0);
        let mut st = self.shared.lock();
        st.finish = Some((status, log_length));
        self.shared.cv.notify_all();
        loop {
            if let Some(ok) = st.outcome {
                return ok;
            }
            let now = Instant::now();
            let left = match end {
                Some(end) if end > now => end - now,
                Some(_) => {
                    st.abandoned = true;
                    self.shared.cv.notify_all();
                    log::warn!(
                        "job {}: the orchestrator did not take the whole log within {} ms \
                         ({} of {} bytes acknowledged); giving up on the upload",
                        self.job_id,
                        deadline.as_millis(),
                        st.acked,
                        log_length
                    );
                    return false;
                }
                None => Duration::from_secs(3600),
            };
            st = self
                .shared
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
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
    job_id: String,
    token: String,
    spool_path: PathBuf,
    shared: Arc<Shared>,
    file: Option<File>,
    conn: Option<Conn>,
    /// What the orchestrator has acknowledged: the next POST's offset.
    acked: u64,
    body: Vec<u8>,
    last_post: Option<Instant>,
    backoff: Duration,
    rng: u64,
    /// A failure streak has been logged; later failures go to debug.
    troubled: bool,
    /// The request head up to the request-specific headers.
    head_common: String,
    log_path: String,
    status_path: String,
}

impl Worker {
    fn new(cfg: Config, spool_path: PathBuf, shared: Arc<Shared>) -> Worker {
        let job = percent_encode(&cfg.job_id);
        let prefix = &cfg.endpoint.prefix;
        let head_common = format!(
            "Host: {}\r\nAuthorization: Bearer {}\r\nUser-Agent: solstice-runner/{}\r\n\
             Connection: keep-alive\r\n",
            cfg.endpoint.authority(),
            cfg.token,
            env!("CARGO_PKG_VERSION")
        );
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let seed =
            (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
        Worker {
            log_path: format!("{prefix}/v1/jobs/{job}/log"),
            status_path: format!("{prefix}/v1/jobs/{job}/status"),
            endpoint: cfg.endpoint,
            job_id: cfg.job_id,
            token: cfg.token,
            spool_path,
            shared,
            file: None,
            conn: None,
            acked: 0,
            body: Vec::with_capacity(MAX_BATCH),
            last_post: None,
            backoff: BACKOFF_MIN,
            rng: seed | 1,
            troubled: false,
            head_common,
        }
    }

    fn run(mut self) {
        let ok = self.run_inner();
        let mut st = self.shared.lock();
        st.outcome = Some(ok);
        self.shared.cv.notify_all();
    }

    fn run_inner(&mut self) -> bool {
        if self.token.is_empty() || !self.token.bytes().all(|b| b.is_ascii_graphic()) {
            log::error!(
                "job {}: SOLSTICE_JOB_TOKEN is empty or has characters that cannot go in an \
                 HTTP header; the log is not uploaded (the job goes on)",
                self.job_id
            );
            return false;
        }
        let running = Status {
            state: "running",
            exit_code: None,
            steps: Vec::new(),
        };
        loop {
            if self.abandoned() {
                return false;
            }
            match self.put_status(&running, self.acked) {
                Reply::Done => break,
                Reply::Resume(m) => {
                    if !self.resume_at(m) {
                        return false;
                    }
                    break;
                }
                Reply::Retry(why) => self.trouble(&why),
                Reply::GiveUp => return false,
            }
        }
        loop {
            if self.abandoned() {
                return false;
            }
            let fin = self.shared.lock().finish.as_ref().map(|f| f.1);
            let more = match self.read_batch(fin) {
                Ok(more) => more,
                Err(e) => {
                    // The spool is ours; losing it is not the orchestrator's fault.
                    log::error!(
                        "job {}: cannot read the log spool: {e}; upload stopped",
                        self.job_id
                    );
                    return false;
                }
            };
            if !self.body.is_empty() {
                if fin.is_none() && !more {
                    // Gather a trickle into one request per interval.
                    if let Some(due) = self.last_post.map(|t| t + INTERVAL) {
                        if Instant::now() < due {
                            self.wait_until(due, true);
                            continue;
                        }
                    }
                }
                self.last_post = Some(Instant::now());
                match self.post_log() {
                    Reply::Done => self.recovered(),
                    Reply::Resume(m) => {
                        if !self.resume(m) {
                            return false;
                        }
                    }
                    Reply::Retry(why) => self.trouble(&why),
                    Reply::GiveUp => return false,
                }
                continue;
            }
            let Some(fin) = fin else {
                self.wait_until(Instant::now() + INTERVAL, true);
                continue;
            };
            if self.acked < fin {
                // Nothing readable yet below the final length: the file is
                // shorter than it was at finish, which only a broken disk does.
                self.wait_until(Instant::now() + INTERVAL, false);
                continue;
            }
            let status = match self.shared.lock().finish.as_ref() {
                Some(f) => f.0.clone(),
                None => continue,
            };
            match self.put_status(&status, fin) {
                Reply::Done => return true,
                Reply::Resume(m) => {
                    // The orchestrator says it has not got the whole log: send
                    // from where it is, then the status again.
                    if !self.resume(m) {
                        return false;
                    }
                }
                Reply::Retry(why) => self.trouble(&why),
                Reply::GiveUp => return false,
            }
        }
    }

    fn abandoned(&self) -> bool {
        self.shared.lock().abandoned
    }

    /// Sleeps until `until`, or until abandoned, or (with `on_finish`) until
    /// `finish` is called.
    fn wait_until(&self, until: Instant, on_finish: bool) {
        let mut st = self.shared.lock();
        loop {
            if st.abandoned || (on_finish && st.finish.is_some()) {
                return;
            }
            let now = Instant::now();
            if now >= until {
                return;
            }
            st = self
                .shared
                .cv
                .wait_timeout(st, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn trouble(&mut self, why: &str) {
        if !self.troubled {
            log::warn!(
                "job {}: upload to {} failed: {why}; retrying with backoff (the job goes on, \
                 its log is kept in the spool)",
                self.job_id,
                self.endpoint
            );
            self.troubled = true;
        } else {
            log::debug!(
                "job {}: upload to {} failed again: {why}",
                self.job_id,
                self.endpoint
            );
        }
        // Full jitter over the upper half: spreads runners that failed
        // together without ever retrying hot.
        let cap = self.backoff.as_millis() as u64;
        let pause = cap / 2 + self.random() % (cap / 2 + 1);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.wait_until(Instant::now() + Duration::from_millis(pause), false);
    }

    fn recovered(&mut self) {
        if self.troubled {
            log::info!(
                "job {}: upload to {} works again",
                self.job_id,
                self.endpoint
            );
            self.troubled = false;
        }
        self.backoff = BACKOFF_MIN;
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

    fn set_acked(&mut self, n: u64) {
        self.acked = n;
        self.shared.lock().acked = n;
    }

    /// Continues from the length the orchestrator reported. Not moving
    /// forward is legitimate once (an orchestrator that restarted from older
    /// state), but repeated it would be a hot loop, so it pauses like a
    /// failure.
    fn resume(&mut self, m: u64) -> bool {
        let before = self.acked;
        if !self.resume_at(m) {
            return false;
        }
        if m <= before {
            self.trouble(&format!(
                "the orchestrator reports {m} log bytes where {before} were acknowledged"
            ));
        }
        true
    }

    /// Accepts a length the orchestrator reported, if it is a line boundary
    /// of our spool; anything else means the orchestrator holds a different
    /// log, and uploading more could only corrupt it.
    fn resume_at(&mut self, m: u64) -> bool {
        match self.is_line_boundary(m) {
            Ok(true) => {
                self.set_acked(m);
                true
            }
            Ok(false) => {
                log::error!(
                    "job {}: the orchestrator reports {m} log bytes, which is not a line boundary \
                     of this job's spool; the log is not uploaded further (the job goes on)",
                    self.job_id
                );
                false
            }
            Err(e) => {
                log::error!(
                    "job {}: cannot read the log spool: {e}; upload stopped",
                    self.job_id
                );
                false
            }
        }
    }

    fn is_line_boundary(&mut self, m: u64) -> io::Result<bool> {
        if m == 0 {
            return Ok(true);
        }
        let file = open_spool(&mut self.file, &self.spool_path)?;
        if m > file.metadata()?.len() {
            return Ok(false);
        }
        file.seek(SeekFrom::Start(m - 1))?;
        let mut b = [0u8; 1];
        file.read_exact(&mut b)?;
        Ok(b[0] == b'\n')
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
        let file = match open_spool(&mut self.file, &self.spool_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && limit.is_none() => return Ok(false),
            Err(e) => return Err(e),
        };
        let size = file.metadata()?.len();
        let end = limit.map_or(size, |l| l.min(size));
        if end <= acked {
            return Ok(false);
        }
        let avail = end - acked;
        file.seek(SeekFrom::Start(acked))?;
        read_up_to(file, &mut self.body, avail.min(MAX_BATCH as u64) as usize)?;
        if let Some(i) = self.body.iter().rposition(|&b| b == b'\n') {
            self.body.truncate(i + 1);
            return Ok(avail > MAX_BATCH as u64);
        }
        // No line end in a whole batch: one line longer than a batch, which
        // goes whole and alone, or a line still being written.
        loop {
            let from = self.body.len();
            if from as u64 >= avail {
                break;
            }
            read_up_to(
                file,
                &mut self.body,
                (avail - from as u64).min(64 * 1024) as usize,
            )?;
            if self.body.len() == from {
                break; // the file shrank under us
            }
            if let Some(i) = self.body[from..].iter().position(|&b| b == b'\n') {
                self.body.truncate(from + i + 1);
                return Ok(avail > MAX_BATCH as u64);
            }
        }
        if limit.is_none() {
            self.body.clear();
        }
        Ok(false)
    }

    fn post_log(&mut self) -> Reply {
        let path = format!("{}?offset={}", self.log_path, self.acked);
        let body = std::mem::take(&mut self.body);
        let sent = body.len() as u64;
        let reply = self.exchange("POST", &path, NDJSON, &body);
        self.body = body;
        let resp = match reply {
            Ok(r) => r,
            Err(why) => return Reply::Retry(why),
        };
        match resp.status {
            200..=299 => {
                // A 2xx without a readable length still means "appended".
                let m = parse_length(&resp.body).unwrap_or(self.acked + sent);
                if m == self.acked + sent {
                    self.set_acked(m);
                    Reply::Done
                } else {
                    Reply::Resume(m)
                }
            }
            409 => match parse_length(&resp.body) {
                Some(m) => Reply::Resume(m),
                None => self.give_up("POST log", 409, "its answer has no length to resume from"),
            },
            s => self.classify(s, "POST log"),
        }
    }

    fn put_status(&mut self, status: &Status, log_length: u64) -> Reply {
        let body = miniserde::json::to_string(&StatusBody {
            state: status.state,
            exit_code: status.exit_code,
            log_length,
            runner_version: env!("CARGO_PKG_VERSION"),
            steps: &status.steps,
        });
        let path = self.status_path.clone();
        let resp = match self.exchange("PUT", &path, JSON, body.as_bytes()) {
            Ok(r) => r,
            Err(why) => return Reply::Retry(why),
        };
        match resp.status {
            200..=299 => {
                self.recovered();
                Reply::Done
            }
            409 => match parse_length(&resp.body) {
                Some(m) => Reply::Resume(m),
                None => self.give_up("PUT status", 409, "its answer has no length to resume from"),
            },
            s => self.classify(s, "PUT status"),
        }
    }

    fn classify(&mut self, status: u16, what: &str) -> Reply {
        match status {
            408 | 429 | 500..=599 => {
                Reply::Retry(format!("the orchestrator answered {status} to {what}"))
            }
            401 | 403 => self.give_up(what, status, "it does not accept the job token"),
            300..=399 => self.give_up(what, status, "redirects are not followed"),
            400..=499 => self.give_up(what, status, "the request is not retried"),
            _ => Reply::Retry(format!("the orchestrator answered {status} to {what}")),
        }
    }

    fn give_up(&mut self, what: &str, status: u16, why: &str) -> Reply {
        log::error!(
            "job {}: the orchestrator at {} answered {status} to {what}: {why}; the log is \
             not uploaded further (the job goes on, its log stays in the spool)",
            self.job_id,
            self.endpoint
        );
        Reply::GiveUp
    }

    /// One request and its answer, on the kept-alive connection if there is
    /// one. A kept-alive connection the server closed meanwhile fails before
    /// any answer byte; then the request is sent once more on a new one
    /// (safe: every request is idempotent thanks to the offset).
    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        ctype: &str,
        body: &[u8],
    ) -> std::result::Result<Response, String> {
        let mut head = String::with_capacity(256);
        head.push_str(method);
        head.push(' ');
        head.push_str(path);
        head.push_str(" HTTP/1.1\r\n");
        head.push_str(&self.head_common);
        head.push_str("Content-Type: ");
        head.push_str(ctype);
        head.push_str("\r\nContent-Length: ");
        head.push_str(&body.len().to_string());
        head.push_str("\r\n\r\n");
        for attempt in 0..2 {
            let reused = self.conn.is_some();
            let mut conn = match self.conn.take() {
                Some(c) => c,
                None => Conn::open(&self.endpoint)?,
            };
            match conn.exchange(head.as_bytes(), body) {
                Ok(resp) => {
                    if resp.keep_alive {
                        self.conn = Some(conn);
                    }
                    return Ok(resp);
                }
                Err(e) if reused && e.before_answer && attempt == 0 => {
                    log::debug!(
                        "job {}: kept-alive connection gone ({}); reconnecting",
                        self.job_id,
                        e.msg
                    );
                }
                Err(e) => return Err(e.msg),
            }
        }
        Err("the connection failed twice".to_string())
    }
}

fn open_spool<'a>(file: &'a mut Option<File>, path: &Path) -> io::Result<&'a mut File> {
    if file.is_none() {
        *file = Some(File::open(path)?);
    }
    file.as_mut().ok_or_else(|| io::ErrorKind::NotFound.into())
}

/// Appends up to `n` bytes from `r` to `out`; fewer only at end of file.
fn read_up_to(r: &mut File, out: &mut Vec<u8>, n: usize) -> io::Result<()> {
    let start = out.len();
    out.resize(start + n, 0);
    let mut got = 0;
    while got < n {
        match r.read(&mut out[start + got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                out.truncate(start + got);
                return Err(e);
            }
        }
    }
    out.truncate(start + got);
    Ok(())
}

fn parse_length(body: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(body).ok()?;
    miniserde::json::from_str::<LengthBody>(s)
        .ok()
        .map(|b| b.length)
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so a job id
/// is always exactly one path segment.
fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    out
}

struct Response {
    status: u16,
    body: Vec<u8>,
    keep_alive: bool,
}

struct NetError {
    msg: String,
    /// Failed before any byte of an answer arrived.
    before_answer: bool,
}

fn net_err(msg: impl Into<String>, before_answer: bool) -> NetError {
    NetError {
        msg: msg.into(),
        before_answer,
    }
}

/// One HTTP/1.1 client connection with its read buffer (RFC 9112 framing).
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    /// Bytes received since the current request was sent.
    received: usize,
}

impl Conn {
    fn open(ep: &Endpoint) -> std::result::Result<Conn, String> {
        let addrs = (ep.host.as_str(), ep.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", ep.host))?;
        let mut last = format!("{} resolves to no address", ep.host);
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    let setup = stream
                        .set_read_timeout(Some(IO_TIMEOUT))
                        .and_then(|_| stream.set_write_timeout(Some(IO_TIMEOUT)))
                        .and_then(|_| stream.set_nodelay(true));
                    if let Err(e) = setup {
                        last = format!("cannot set up the connection to {addr}: {e}");
                        continue;
                    }
                    return Ok(Conn {
                        stream,
                        buf: Vec::with_capacity(4096),
                        pos: 0,
                        received: 0,
                    });
                }
                Err(e) => last = format!("cannot connect to {addr}: {e}"),
            }
        }
        Err(last)
    }

    fn exchange(&mut self, head: &[u8], body: &[u8]) -> std::result::Result<Response, NetError> {
        // Leftover bytes from the previous answer mean the server broke framing.
        if self.pos != self.buf.len() {
            return Err(net_err("stray bytes after the previous answer", false));
        }
        self.buf.clear();
        self.pos = 0;
        self.received = 0;
        let sent = self
            .stream
            .write_all(head)
            .and_then(|_| self.stream.write_all(body));
        if let Err(e) = sent {
            return Err(net_err(format!("sending the request: {e}"), true));
        }
        self.read_response().map_err(|mut e| {
            e.before_answer = self.received == 0;
            e
        })
    }

    /// Reads more of the answer; false at end of stream.
    fn fill(&mut self) -> std::result::Result<bool, NetError> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut tmp = [0u8; 4096];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.received += n;
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(net_err(format!("reading the answer: {e}"), false)),
            }
        }
    }

    fn more(&mut self) -> std::result::Result<(), NetError> {
        if self.fill()? {
            Ok(())
        } else {
            Err(net_err("the orchestrator closed the connection", false))
        }
    }

    /// One line without its CRLF (a bare LF is accepted too, RFC 9112 2.2).
    fn line(&mut self, budget: &mut usize) -> std::result::Result<String, NetError> {
        let mut scanned = self.pos;
        loop {
            if let Some(i) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i;
                let len = end + 1 - self.pos;
                if len > *budget {
                    return Err(net_err("the answer's head is too long", false));
                }
                *budget -= len;
                let mut line = &self.buf[self.pos..end];
                if let [rest @ .., b'\r'] = line {
                    line = rest;
                }
                let s = String::from_utf8_lossy(line).into_owned();
                self.pos = end + 1;
                return Ok(s);
            }
            scanned = self.buf.len();
            if self.buf.len() - self.pos > *budget {
                return Err(net_err("the answer's head is too long", false));
            }
            self.more()?;
        }
    }

    fn take(&mut self, n: usize, out: &mut Vec<u8>) -> std::result::Result<(), NetError> {
        let mut left = n;
        while left > 0 {
            if self.pos == self.buf.len() {
                self.more()?;
            }
            let k = left.min(self.buf.len() - self.pos);
            out.extend_from_slice(&self.buf[self.pos..self.pos + k]);
            self.pos += k;
            left -= k;
        }
        Ok(())
    }

    fn read_response(&mut self) -> std::result::Result<Response, NetError> {
        let mut budget = MAX_HEAD;
        loop {
            let status_line = self.line(&mut budget)?;
            let mut parts = status_line.splitn(3, ' ');
            let version = parts.next().unwrap_or("");
            let code = parts.next().unwrap_or("");
            let http11 = match version {
                "HTTP/1.1" => true,
                "HTTP/1.0" => false,
                _ => {
                    return Err(net_err(
                        format!("not an HTTP/1.x answer: {:.60}", status_line),
                        false,
                    ))
                }
            };
            let status = match code.parse::<u16>() {
                Ok(s) if code.len() == 3 && (100..=999).contains(&s) => s,
                _ => {
                    return Err(net_err(
                        format!("bad status line: {:.60}", status_line),
                        false,
                    ))
                }
            };
            let mut length: Option<usize> = None;
            let mut chunked = false;
            let mut other_coding = false;
            let mut close = !http11;
            loop {
                let line = self.line(&mut budget)?;
                if line.is_empty() {
                    break;
                }
                let Some((name, value)) = line.split_once(':') else {
                    return Err(net_err("a header line without a colon", false));
                };
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    let n = match value.parse::<usize>() {
                        Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => n,
                        _ => return Err(net_err("bad Content-Length", false)),
                    };
                    if length.is_some_and(|l| l != n) {
                        return Err(net_err("conflicting Content-Length headers", false));
                    }
                    length = Some(n);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    let last = value.rsplit(',').next().unwrap_or("").trim();
                    chunked = last.eq_ignore_ascii_case("chunked");
                    other_coding = !chunked;
                } else if name.eq_ignore_ascii_case("connection") {
                    for token in value.split(',') {
                        let token = token.trim();
                        if token.eq_ignore_ascii_case("close") {
                            close = true;
                        } else if token.eq_ignore_ascii_case("keep-alive") && !http11 {
                            close = false;
                        }
                    }
                }
            }
            if (100..200).contains(&status) {
                if status == 101 {
                    return Err(net_err("the orchestrator switched protocols", false));
                }
                // Interim answers (100 Continue) have no body; the real one follows.
                continue;
            }
            let mut body = Vec::new();
            if status == 204 || status == 304 {
                // No body by definition (RFC 9112 6.3).
            } else if chunked {
                self.read_chunked(&mut body, &mut budget)?;
            } else if other_coding {
                // Framed by the close only (RFC 9112 6.3, item 4).
                self.read_to_close(&mut body)?;
                close = true;
            } else if let Some(n) = length {
                if n > MAX_BODY {
                    return Err(net_err(
                        format!("an answer body of {n} bytes is too long"),
                        false,
                    ));
                }
                self.take(n, &mut body)?;
            } else {
                self.read_to_close(&mut body)?;
                close = true;
            }
            return Ok(Response {
                status,
                body,
                keep_alive: !close,
            });
        }
    }

    fn read_chunked(
        &mut self,
        body: &mut Vec<u8>,
        budget: &mut usize,
    ) -> std::result::Result<(), NetError> {
        loop {
            let line = self.line(budget)?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = match usize::from_str_radix(size_text, 16) {
                Ok(n)
                    if !size_text.is_empty()
                        && size_text.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    n
                }
                _ => return Err(net_err("bad chunk size", false)),
            };
            if size == 0 {
                // Trailer fields, ignored, up to the empty line.
                while !self.line(budget)?.is_empty() {}
                return Ok(());
            }
            if body.len() + size > MAX_BODY {
                return Err(net_err("the chunked answer body is too long", false));
            }
            self.take(size, body)?;
            if !self.line(budget)?.is_empty() {
                return Err(net_err("a chunk does not end with CRLF", false));
            }
        }
    }

    fn read_to_close(&mut self, body: &mut Vec<u8>) -> std::result::Result<(), NetError> {
        loop {
            body.extend_from_slice(&self.buf[self.pos..]);
            self.pos = self.buf.len();
            if body.len() > MAX_BODY {
                return Err(net_err("the answer body is too long", false));
            }
            if !self.fill()? {
                return Ok(());
            }
        }
    }
}
