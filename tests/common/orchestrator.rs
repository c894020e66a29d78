//! A real orchestrator for tests: an HTTP/1.1 server (std only) on loopback
//! that implements docs/protocol.md, records what each job sent, and can
//! misbehave on purpose (see `Fault`).
//!
//! Its checks of the runner's requests (framing, headers, whole lines,
//! status JSON, one request of a job at a time, file digests) land in
//! `violations()`, which tests expect to be empty.

use miniserde::{json, Deserialize};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How the orchestrator misbehaves.
#[derive(Clone, Debug)]
pub enum Fault {
    Healthy,
    /// The first K requests, of any kind, get 503.
    Refuse503(usize),
    /// The first K log batches that are appended get no answer: the server
    /// closes the connection as if the answer was lost on the way.
    LoseAnswers(usize),
    /// After the K-th appended log batch has been answered 200, the server
    /// forgets that batch, as an orchestrator that crashed before making it
    /// durable would: the runner must send it again.
    ForgetBatch(usize),
    /// Nothing listens on the port for this long after `start`.
    AbsentFor(Duration),
    /// The server expects another token and answers 401 to everything.
    WrongToken,
    /// Legal but unusual HTTP: 100 Continue before answers, chunked bodies
    /// with extensions and trailers, close-delimited bodies, and
    /// `Connection: close` on some answers.
    Quirky,
    /// Connections are accepted and requests read, but never answered.
    Hang,
    /// The first K status PUTs are answered 409 with the server's length,
    /// even when they could be accepted.
    ConflictStatus(usize),
    /// Every request is answered 307, a redirect.
    Redirect,
}

#[derive(Clone, Debug)]
pub struct StepRecord {
    pub name: String,
    pub state: String,
    pub exit_code: Option<i64>,
    pub duration_ms: u64,
}

/// One status PUT as received.
#[derive(Clone, Debug)]
pub struct StatusRecord {
    pub job: String,
    pub state: String,
    pub exit_code: Option<i64>,
    pub log_length: u64,
    pub runner_version: String,
    /// The running step, in a `running` status.
    pub step: Option<String>,
    /// Why a final state is not `succeeded`.
    pub reason: Option<String>,
    pub steps: Vec<StepRecord>,
    /// The log length the server held when the PUT arrived.
    pub server_length: u64,
    /// Whether the server accepted it (a final status with a log_length
    /// other than the server's length gets 409).
    pub accepted: bool,
    pub raw: String,
}

impl StatusRecord {
    pub fn is_final(&self) -> bool {
        is_final(&self.state)
    }
}

fn is_final(state: &str) -> bool {
    matches!(
        state,
        "succeeded" | "failed" | "cancelled" | "timed_out" | "error"
    )
}

/// One request of a job, in arrival order.
#[derive(Clone, Debug)]
pub enum Request {
    Log {
        offset: u64,
        len: usize,
        outcome: u16,
    },
    Status(StatusRecord),
}

#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Every complete request read, whatever it got.
    pub total: usize,
    pub connections: usize,
    pub log_posts: usize,
    pub status_puts: usize,
    pub refused_503: usize,
    pub unauthorized: usize,
    pub lost_answers: usize,
    pub forgotten: usize,
    pub appended: usize,
    pub conflicts: usize,
    /// Answers that carried `"cancel": true`.
    pub cancels: usize,
    pub redirected: usize,
    /// PUTs of artifacts and cache entries that were stored.
    pub file_puts: usize,
    pub cache_gets: usize,
    pub cache_hits: usize,
}

/// One artifact PUT as stored.
#[derive(Clone, Debug)]
pub struct FileRecord {
    pub name: String,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
}

/// Which answers carry `"cancel": true` (see `Orchestrator::cancel_on`).
#[derive(Clone, Debug)]
struct CancelOn {
    /// "log" or "status".
    kind: &'static str,
    code: u16,
    reason: Option<String>,
}

#[derive(Default)]
struct Job {
    log: Vec<u8>,
    requests: Vec<Request>,
    artifacts: Vec<FileRecord>,
    /// Requests of this job being handled now: more than one is a violation.
    in_flight: usize,
}

#[derive(Default)]
struct State {
    jobs: HashMap<String, Job>,
    cache: HashMap<String, Vec<u8>>,
    counts: Counts,
    violations: Vec<String>,
    bind_failed: bool,
    cancel: Option<CancelOn>,
    /// Every artifact PUT gets this status instead of being stored.
    refuse_artifacts: Option<u16>,
}

struct Inner {
    state: Mutex<State>,
    cv: Condvar,
    expected_auth: String,
    fault: Fault,
    prefix: String,
    authority: String,
    stop: AtomicBool,
    /// Answers that closed the connection, with `Fault::Quirky`.
    closes: AtomicUsize,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn violation(&self, v: String) {
        self.lock().violations.push(v);
        self.cv.notify_all();
    }
}

pub struct Orchestrator {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Orchestrator {
    /// Starts a server that accepts `token` (unless `fault` says otherwise).
    pub fn start(token: &str, fault: Fault) -> Orchestrator {
        Orchestrator::start_with_prefix(token, fault, "")
    }

    /// Same, serving the protocol under a path prefix such as "/ci".
    pub fn start_with_prefix(token: &str, fault: Fault, prefix: &str) -> Orchestrator {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let expected = match fault {
            Fault::WrongToken => format!("Bearer other-{token}"),
            _ => format!("Bearer {token}"),
        };
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            expected_auth: expected,
            fault: fault.clone(),
            prefix: prefix.to_string(),
            authority: addr.to_string(),
            stop: AtomicBool::new(false),
            closes: AtomicUsize::new(0),
        });
        let server = inner.clone();
        match fault {
            Fault::AbsentFor(d) => {
                // Free the port now and take it again later: in between,
                // connections are refused. Another process may grab the
                // port meanwhile; then `bind_failed()` says so.
                drop(listener);
                std::thread::spawn(move || {
                    let wake = Instant::now() + d;
                    // The absence is the fault being simulated, so it is timed.
                    while Instant::now() < wake && !server.stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10).min(wake - Instant::now()));
                    }
                    let give_up = Instant::now() + Duration::from_secs(5);
                    loop {
                        match TcpListener::bind(addr) {
                            Ok(l) => return serve(l, server),
                            Err(_) if Instant::now() < give_up => {
                                std::thread::sleep(Duration::from_millis(20))
                            }
                            Err(_) => {
                                server.lock().bind_failed = true;
                                server.cv.notify_all();
                                return;
                            }
                        }
                    }
                });
            }
            _ => {
                std::thread::spawn(move || serve(listener, server));
            }
        }
        Orchestrator { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.inner.prefix)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The log bytes the server holds for `job`.
    pub fn log(&self, job: &str) -> Vec<u8> {
        self.inner
            .lock()
            .jobs
            .get(job)
            .map(|j| j.log.clone())
            .unwrap_or_default()
    }

    pub fn requests(&self, job: &str) -> Vec<Request> {
        self.inner
            .lock()
            .jobs
            .get(job)
            .map(|j| j.requests.clone())
            .unwrap_or_default()
    }

    /// Every status PUT of `job`, in arrival order.
    pub fn statuses(&self, job: &str) -> Vec<StatusRecord> {
        self.requests(job)
            .into_iter()
            .filter_map(|r| match r {
                Request::Status(s) => Some(s),
                Request::Log { .. } => None,
            })
            .collect()
    }

    pub fn counts(&self) -> Counts {
        self.inner.lock().counts.clone()
    }

    /// From now on, answers to `kind` ("log" or "status") requests with
    /// status `code` (2xx or 409) carry `"cancel": true` and `reason`.
    pub fn cancel_on(&self, kind: &'static str, code: u16, reason: Option<&str>) {
        self.inner.lock().cancel = Some(CancelOn {
            kind,
            code,
            reason: reason.map(str::to_string),
        });
    }

    /// From now on, every artifact PUT is answered `code` and not stored.
    pub fn refuse_artifacts(&self, code: u16) {
        self.inner.lock().refuse_artifacts = Some(code);
    }

    /// The artifacts `job` uploaded, in arrival order.
    pub fn artifacts(&self, job: &str) -> Vec<FileRecord> {
        self.inner
            .lock()
            .jobs
            .get(job)
            .map(|j| j.artifacts.clone())
            .unwrap_or_default()
    }

    /// The cache entry stored under `key`.
    pub fn cache(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.lock().cache.get(key).cloned()
    }

    /// Stores a cache entry, as if a job had uploaded it.
    pub fn put_cache(&self, key: &str, body: &[u8]) {
        self.inner
            .lock()
            .cache
            .insert(key.to_string(), body.to_vec());
    }

    pub fn violations(&self) -> Vec<String> {
        self.inner.lock().violations.clone()
    }

    /// With `Fault::AbsentFor`: the port was taken by someone else meanwhile.
    pub fn bind_failed(&self) -> bool {
        self.inner.lock().bind_failed
    }

    /// Waits up to `deadline` for an accepted final status of any job.
    pub fn wait_for_final(&self, deadline: Duration) -> Option<StatusRecord> {
        let mut found = None;
        self.wait_until(deadline, |jobs| {
            found = jobs
                .values()
                .flat_map(|j| j.requests.iter())
                .find_map(|r| match r {
                    Request::Status(s) if s.accepted && s.is_final() => Some(s.clone()),
                    _ => None,
                });
            found.is_some()
        });
        found
    }

    /// Waits up to `deadline` until the server holds at least `len` log
    /// bytes of `job`.
    pub fn wait_for_log_len(&self, job: &str, len: u64, deadline: Duration) -> bool {
        self.wait_until(deadline, |jobs| {
            jobs.get(job).is_some_and(|j| j.log.len() as u64 >= len)
        })
    }

    /// Waits up to `deadline` until `pred` holds over the requests of `job`.
    pub fn wait_for_requests(
        &self,
        job: &str,
        deadline: Duration,
        mut pred: impl FnMut(&[Request]) -> bool,
    ) -> bool {
        self.wait_until(deadline, |jobs| {
            pred(jobs.get(job).map_or(&[][..], |j| &j.requests))
        })
    }

    /// Waits up to `deadline` until `pred` holds over the counts.
    pub fn wait_for_counts(
        &self,
        deadline: Duration,
        mut pred: impl FnMut(&Counts) -> bool,
    ) -> bool {
        self.wait_for(deadline, |st| pred(&st.counts))
    }

    fn wait_until(
        &self,
        deadline: Duration,
        mut pred: impl FnMut(&HashMap<String, Job>) -> bool,
    ) -> bool {
        self.wait_for(deadline, |st| pred(&st.jobs))
    }

    /// Waits up to `deadline` until `pred` holds over the server's state,
    /// woken by every change; gives up early if the port could not be bound.
    fn wait_for(&self, deadline: Duration, mut pred: impl FnMut(&State) -> bool) -> bool {
        let end = Instant::now() + deadline;
        let mut st = self.inner.lock();
        loop {
            if pred(&st) {
                return true;
            }
            let now = Instant::now();
            if now >= end || st.bind_failed {
                return false;
            }
            st = self
                .inner
                .cv
                .wait_timeout(st, end - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag and lets the port go.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve(listener: TcpListener, inner: Arc<Inner>) {
    for conn in listener.incoming() {
        if inner.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = conn else { continue };
        inner.lock().counts.connections += 1;
        let inner = inner.clone();
        std::thread::spawn(move || handle(stream, inner));
    }
}

struct Req {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What to do after a request.
enum Answer {
    Send(u16, Vec<u8>),
    /// Close without answering.
    Drop,
}

fn send(code: u16, body: impl Into<Vec<u8>>) -> Answer {
    Answer::Send(code, body.into())
}

/// The job a log or status target belongs to. (Artifact uploads go on
/// connections of their own and may overlap these.)
fn job_of(target: &str, prefix: &str) -> Option<String> {
    let rest = target.strip_prefix(prefix)?.strip_prefix("/v1/jobs/")?;
    let path = rest.split('?').next()?;
    let (job, what) = path.split_once('/')?;
    matches!(what, "log" | "status").then(|| percent_decode(job))?
}

fn handle(stream: TcpStream, inner: Arc<Inner>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut out = write_half;
    let mut reader = BufReader::new(stream);
    let mut answered = 0usize;
    loop {
        let req = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                inner.violation(format!("malformed request: {e}"));
                return;
            }
        };
        if inner.stop.load(Ordering::SeqCst) {
            return;
        }
        let job = job_of(&req.target, &inner.prefix);
        if let Some(job) = &job {
            let mut st = inner.lock();
            let j = st.jobs.entry(job.clone()).or_default();
            j.in_flight += 1;
            if j.in_flight > 1 {
                st.violations
                    .push(format!("two log or status requests of job {job:?} at once"));
            }
        }
        let answer = route(&req, &inner);
        // Before the answer leaves: the runner may send its next request
        // as soon as it has it.
        if let Some(job) = &job {
            if let Some(j) = inner.lock().jobs.get_mut(job) {
                j.in_flight -= 1;
            }
        }
        inner.cv.notify_all();
        let (code, body) = match answer {
            Answer::Drop => {
                let _ = out.shutdown(Shutdown::Both);
                return;
            }
            Answer::Send(code, body) => (code, body),
        };
        answered += 1;
        let close = matches!(inner.fault, Fault::Quirky) && answered.is_multiple_of(3);
        // Every other closing answer is framed by the close alone.
        let by_close = close && inner.closes.fetch_add(1, Ordering::SeqCst) % 2 == 1;
        let bytes = render(code, &body, &inner.fault, answered, close, by_close);
        if out.write_all(&bytes).is_err() || close {
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn render(code: u16, body: &[u8], fault: &Fault, n: usize, close: bool, by_close: bool) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        201 => "Created",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        503 => "Service Unavailable",
        _ => "Whatever",
    };
    let mut out = Vec::new();
    if !matches!(fault, Fault::Quirky) {
        out.extend_from_slice(
            format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(body);
        return out;
    }
    if n % 2 == 1 {
        out.extend_from_slice(b"HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n");
    }
    if by_close {
        // Framed by the close alone.
        out.extend_from_slice(
            format!("HTTP/1.1 {code} {reason}\r\nconnection: Close\r\ncontent-type: application/json\r\n\r\n")
                .as_bytes(),
        );
        out.extend_from_slice(body);
        return out;
    }
    out.extend_from_slice(
        format!("HTTP/1.1 {code} {reason}\nTransfer-Encoding:  chunked\r\n").as_bytes(),
    );
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"X-Padding: some header the runner ignores\r\n\r\n");
    for (i, piece) in body.chunks(3).enumerate() {
        if i % 2 == 0 {
            out.extend_from_slice(format!("{:X};ext=1\r\n", piece.len()).as_bytes());
        } else {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        }
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\nX-Trailer: done\r\n\r\n");
    out
}

fn read_request(r: &mut BufReader<TcpStream>) -> Result<Option<Req>, String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(_) => return Ok(None),
    }
    if !line.ends_with("\r\n") {
        return Err(format!("request line without CRLF: {line:?}"));
    }
    let mut parts = line.trim_end().split(' ');
    let (Some(method), Some(target), Some("HTTP/1.1"), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("bad request line: {line:?}"));
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).map_err(|e| e.to_string())? == 0 {
            return Err("connection closed inside the head".to_string());
        }
        if !h.ends_with("\r\n") {
            return Err(format!("header line without CRLF: {h:?}"));
        }
        let h = h.trim_end_matches("\r\n");
        if h.is_empty() {
            break;
        }
        let (n, v) = h
            .split_once(':')
            .ok_or_else(|| format!("bad header {h:?}"))?;
        headers.push((n.to_string(), v.trim().to_string()));
    }
    let req = Req {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    // A GET has no body (RFC 9110 8.6: no Content-Length either); POST and
    // PUT always have one.
    let len: usize = match (req.method.as_str(), req.header("content-length")) {
        ("GET", None) => 0,
        ("GET", Some(_)) => return Err("a GET with Content-Length".to_string()),
        (_, None) => return Err("no Content-Length".to_string()),
        (_, Some(n)) => n.parse().map_err(|_| "bad Content-Length".to_string())?,
    };
    let mut body = vec![0; len];
    r.read_exact(&mut body)
        .map_err(|e| format!("short body: {e}"))?;
    Ok(Some(Req { body, ..req }))
}

#[derive(Deserialize)]
struct StatusWire {
    state: String,
    exit_code: Option<i64>,
    log_length: u64,
    runner_version: String,
    step: Option<String>,
    reason: Option<String>,
    steps: Vec<StepWire>,
}

#[derive(Deserialize)]
struct StepWire {
    name: String,
    state: String,
    exit_code: Option<i64>,
    duration_ms: u64,
}

fn route(req: &Req, inner: &Inner) -> Answer {
    let mut st = inner.lock();
    st.counts.total += 1;
    match inner.fault {
        Fault::Hang => {
            drop(st);
            // Never answers; the runner's side gives up on its own.
            while !inner.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            return Answer::Drop;
        }
        Fault::Refuse503(k) if st.counts.refused_503 < k => {
            st.counts.refused_503 += 1;
            return send(503, "{\"error\":\"try later\"}");
        }
        Fault::Redirect => {
            st.counts.redirected += 1;
            return send(307, "{}");
        }
        _ => {}
    }
    if req.header("authorization") != Some(inner.expected_auth.as_str()) {
        st.counts.unauthorized += 1;
        return send(401, "{\"error\":\"bad token\"}");
    }
    if req.header("host") != Some(inner.authority.as_str()) {
        let v = format!(
            "Host is {:?}, expected {:?}",
            req.header("host"),
            inner.authority
        );
        st.violations.push(v);
    }
    let rest = req.target.strip_prefix(&inner.prefix).unwrap_or("");
    if let Some(key) = rest.strip_prefix("/v1/cache/") {
        return cache(req, &mut st, key);
    }
    let Some(rest) = rest.strip_prefix("/v1/jobs/") else {
        st.violations
            .push(format!("unknown target {:?}", req.target));
        return send(404, "{}");
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let Some((job_enc, what)) = path.split_once('/') else {
        st.violations
            .push(format!("unknown target {:?}", req.target));
        return send(404, "{}");
    };
    let job = match percent_decode(job_enc) {
        Some(j) => j,
        None => {
            st.violations
                .push(format!("bad job id encoding {job_enc:?}"));
            return send(400, "{}");
        }
    };
    let (kind, answer) = match (req.method.as_str(), what) {
        ("POST", "log") => ("log", log_post(req, inner, &mut st, &job, query)),
        ("PUT", "status") => ("status", status_put(req, inner, &mut st, &job)),
        ("PUT", _) if what.starts_with("artifacts/") => {
            return artifact_put(req, &mut st, &job, &what["artifacts/".len()..]);
        }
        _ => {
            st.violations
                .push(format!("unexpected {} {}", req.method, req.target));
            return send(404, "{}");
        }
    };
    // The cancel rides on the answer's JSON object.
    match (answer, &st.cancel) {
        (Answer::Send(code, body), Some(c)) if c.kind == kind && c.code == code => {
            let mut fields = String::from("\"cancel\":true");
            if let Some(r) = &c.reason {
                fields.push_str(&format!(",\"reason\":{}", json::to_string(r)));
            }
            let body = String::from_utf8(body).expect("JSON answers");
            let body = match body.strip_suffix('}') {
                Some(open) if open.trim_end() == "{" => format!("{{{fields}}}"),
                Some(open) => format!("{open},{fields}}}"),
                None => body,
            };
            st.counts.cancels += 1;
            send(code, body)
        }
        (answer, _) => answer,
    }
}

fn log_post(req: &Req, inner: &Inner, st: &mut State, job: &str, query: &str) -> Answer {
    let mut problems = Vec::new();
    st.counts.log_posts += 1;
    if req.header("content-type") != Some("application/x-ndjson") {
        problems.push(format!(
            "log POST with Content-Type {:?}",
            req.header("content-type")
        ));
    }
    if !req.body.is_empty() && !req.body.ends_with(b"\n") {
        problems.push("log POST body does not end with a whole line".to_string());
    }
    if req.body.is_empty() {
        problems.push("empty log POST".to_string());
    }
    let offset = query
        .strip_prefix("offset=")
        .and_then(|o| o.parse::<u64>().ok());
    let lose = matches!(inner.fault, Fault::LoseAnswers(k) if st.counts.lost_answers < k);
    let j = st.jobs.entry(job.to_string()).or_default();
    let have = j.log.len() as u64;
    let answer = match offset {
        None => {
            problems.push(format!("log POST without offset: {:?}", req.target));
            send(400, "{}")
        }
        Some(o) if o == have => {
            j.log.extend_from_slice(&req.body);
            let m = j.log.len();
            j.requests.push(Request::Log {
                offset: o,
                len: req.body.len(),
                outcome: 200,
            });
            st.counts.appended += 1;
            if matches!(inner.fault, Fault::ForgetBatch(k) if st.counts.appended == k) {
                st.counts.forgotten += 1;
                j.log.truncate(o as usize);
                j.requests.pop();
            }
            if lose {
                st.counts.lost_answers += 1;
                Answer::Drop
            } else {
                send(200, format!("{{\"length\":{m}}}"))
            }
        }
        Some(o) => {
            st.counts.conflicts += 1;
            j.requests.push(Request::Log {
                offset: o,
                len: req.body.len(),
                outcome: 409,
            });
            send(
                409,
                format!("{{\"length\": {have}, \"note\": \"offset mismatch\"}}"),
            )
        }
    };
    st.violations.extend(problems);
    answer
}

fn status_put(req: &Req, inner: &Inner, st: &mut State, job: &str) -> Answer {
    st.counts.status_puts += 1;
    if req.header("content-type") != Some("application/json") {
        st.violations.push(format!(
            "status PUT with Content-Type {:?}",
            req.header("content-type")
        ));
    }
    let raw = String::from_utf8_lossy(&req.body).into_owned();
    let Ok(w) = json::from_str::<StatusWire>(&raw) else {
        st.violations
            .push(format!("status body is not the expected JSON: {raw}"));
        return send(400, "{}");
    };
    let conflict = matches!(inner.fault, Fault::ConflictStatus(k) if st.counts.status_puts <= k);
    let j = st.jobs.entry(job.to_string()).or_default();
    let have = j.log.len() as u64;
    let accepted = !conflict && (!is_final(&w.state) || w.log_length == have);
    j.requests.push(Request::Status(StatusRecord {
        job: job.to_string(),
        state: w.state,
        exit_code: w.exit_code,
        log_length: w.log_length,
        runner_version: w.runner_version,
        step: w.step,
        reason: w.reason,
        steps: w
            .steps
            .into_iter()
            .map(|s| StepRecord {
                name: s.name,
                state: s.state,
                exit_code: s.exit_code,
                duration_ms: s.duration_ms,
            })
            .collect(),
        server_length: have,
        accepted,
        raw,
    }));
    if accepted {
        send(200, "{}")
    } else {
        st.counts.conflicts += 1;
        send(409, format!("{{\"length\":{have}}}"))
    }
}

/// Checks what a file PUT must carry; returns the problems.
fn check_file_put(req: &Req) -> Vec<String> {
    let mut problems = Vec::new();
    let want = format!("sha-256=:{}:", base64(&sha256(&req.body)));
    if req.header("repr-digest") != Some(want.as_str()) {
        problems.push(format!(
            "{} {} with Repr-Digest {:?}, expected {want:?}",
            req.method,
            req.target,
            req.header("repr-digest")
        ));
    }
    if req.header("content-length") != Some(req.body.len().to_string().as_str()) {
        problems.push(format!(
            "{} {} without its Content-Length",
            req.method, req.target
        ));
    }
    problems
}

fn artifact_put(req: &Req, st: &mut State, job: &str, name_enc: &str) -> Answer {
    let Some(name) = percent_decode(name_enc) else {
        st.violations
            .push(format!("bad artifact name encoding {name_enc:?}"));
        return send(400, "{}");
    };
    let problems = check_file_put(req);
    if !problems.is_empty() {
        st.violations.extend(problems);
        return send(400, "{}");
    }
    if let Some(code) = st.refuse_artifacts {
        return send(code, "{}");
    }
    st.counts.file_puts += 1;
    st.jobs
        .entry(job.to_string())
        .or_default()
        .artifacts
        .push(FileRecord {
            name,
            body: req.body.clone(),
            content_type: req.header("content-type").map(str::to_string),
            content_encoding: req.header("content-encoding").map(str::to_string),
        });
    send(201, "{}")
}

fn cache(req: &Req, st: &mut State, key_enc: &str) -> Answer {
    let Some(key) = percent_decode(key_enc) else {
        st.violations
            .push(format!("bad cache key encoding {key_enc:?}"));
        return send(400, "{}");
    };
    match req.method.as_str() {
        "GET" => {
            st.counts.cache_gets += 1;
            match st.cache.get(&key) {
                Some(body) => {
                    let body = body.clone();
                    st.counts.cache_hits += 1;
                    send(200, body)
                }
                None => send(404, "{}"),
            }
        }
        "PUT" => {
            let problems = check_file_put(req);
            if !problems.is_empty() {
                st.violations.extend(problems);
                return send(400, "{}");
            }
            st.counts.file_puts += 1;
            st.cache.insert(key, req.body.clone());
            send(200, "{}")
        }
        m => {
            st.violations.push(format!("unexpected {m} {}", req.target));
            send(405, "{}")
        }
    }
}

/// Base64 with padding (RFC 4648 section 4), written here independently of
/// the runner's.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// SHA-256 (FIPS 180-4), for checking `Repr-Digest`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 64];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (i, x) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c if c.is_ascii_alphanumeric() || b"-._~".contains(&c) => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}
