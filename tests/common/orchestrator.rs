//! A real orchestrator for tests: an HTTP/1.1 server (std only) on loopback
//! that implements docs/protocol.md, records what each job sent, and can
//! misbehave on purpose (see `Fault`).
//!
//! Its checks of the runner's requests (framing, headers, whole lines,
//! status JSON) land in `violations()`, which tests expect to be empty.

use miniserde::{json, Deserialize};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
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
}

#[derive(Default)]
struct Job {
    log: Vec<u8>,
    requests: Vec<Request>,
}

#[derive(Default)]
struct State {
    jobs: HashMap<String, Job>,
    counts: Counts,
    violations: Vec<String>,
    bind_failed: bool,
}

struct Inner {
    state: Mutex<State>,
    cv: Condvar,
    expected_auth: String,
    fault: Fault,
    prefix: String,
    authority: String,
    stop: AtomicBool,
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
    Send(u16, String),
    /// Close without answering.
    Drop,
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
        let answer = route(&req, &inner);
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
        let bytes = render(code, &body, &inner.fault, answered, close);
        if out.write_all(&bytes).is_err() || close {
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn render(code: u16, body: &str, fault: &Fault, n: usize, close: bool) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
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
                "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        return out;
    }
    if n % 2 == 1 {
        out.extend_from_slice(b"HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n");
    }
    if close && n.is_multiple_of(2) {
        // Framed by the close alone.
        out.extend_from_slice(
            format!("HTTP/1.1 {code} {reason}\r\nconnection: Close\r\ncontent-type: application/json\r\n\r\n{body}")
                .as_bytes(),
        );
        return out;
    }
    out.extend_from_slice(
        format!("HTTP/1.1 {code} {reason}\nTransfer-Encoding:  chunked\r\n").as_bytes(),
    );
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"X-Padding: some header the runner ignores\r\n\r\n");
    for (i, piece) in body.as_bytes().chunks(3).enumerate() {
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
    let len: usize = req
        .header("content-length")
        .ok_or("no Content-Length")?
        .parse()
        .map_err(|_| "bad Content-Length".to_string())?;
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
            return Answer::Send(503, "{\"error\":\"try later\"}".to_string());
        }
        _ => {}
    }
    if req.header("authorization") != Some(inner.expected_auth.as_str()) {
        st.counts.unauthorized += 1;
        return Answer::Send(401, "{\"error\":\"bad token\"}".to_string());
    }
    let mut problems = Vec::new();
    if req.header("host") != Some(inner.authority.as_str()) {
        problems.push(format!(
            "Host is {:?}, expected {:?}",
            req.header("host"),
            inner.authority
        ));
    }
    let Some(rest) = req
        .target
        .strip_prefix(&inner.prefix)
        .and_then(|r| r.strip_prefix("/v1/jobs/"))
    else {
        st.violations
            .push(format!("unknown target {:?}", req.target));
        return Answer::Send(404, "{}".to_string());
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let Some((job_enc, what)) = path.split_once('/') else {
        st.violations
            .push(format!("unknown target {:?}", req.target));
        return Answer::Send(404, "{}".to_string());
    };
    let job = match percent_decode(job_enc) {
        Some(j) => j,
        None => {
            st.violations
                .push(format!("bad job id encoding {job_enc:?}"));
            return Answer::Send(400, "{}".to_string());
        }
    };
    let answer = match (req.method.as_str(), what) {
        ("POST", "log") => {
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
            let state = &mut *st;
            let j = state.jobs.entry(job.clone()).or_default();
            let have = j.log.len() as u64;
            match offset {
                None => {
                    problems.push(format!("log POST without offset: {:?}", req.target));
                    Answer::Send(400, "{}".to_string())
                }
                Some(o) if o == have => {
                    j.log.extend_from_slice(&req.body);
                    let m = j.log.len();
                    j.requests.push(Request::Log {
                        offset: o,
                        len: req.body.len(),
                        outcome: 200,
                    });
                    state.counts.appended += 1;
                    if matches!(inner.fault, Fault::ForgetBatch(k) if state.counts.appended == k) {
                        state.counts.forgotten += 1;
                        j.log.truncate(o as usize);
                        j.requests.pop();
                    }
                    if lose {
                        state.counts.lost_answers += 1;
                        Answer::Drop
                    } else {
                        Answer::Send(200, format!("{{\"length\":{m}}}"))
                    }
                }
                Some(o) => {
                    state.counts.conflicts += 1;
                    j.requests.push(Request::Log {
                        offset: o,
                        len: req.body.len(),
                        outcome: 409,
                    });
                    Answer::Send(
                        409,
                        format!("{{\"length\": {have}, \"note\": \"offset mismatch\"}}"),
                    )
                }
            }
        }
        ("PUT", "status") => {
            st.counts.status_puts += 1;
            if req.header("content-type") != Some("application/json") {
                problems.push(format!(
                    "status PUT with Content-Type {:?}",
                    req.header("content-type")
                ));
            }
            let raw = String::from_utf8_lossy(&req.body).into_owned();
            match json::from_str::<StatusWire>(&raw) {
                Err(_) => {
                    problems.push(format!("status body is not the expected JSON: {raw}"));
                    Answer::Send(400, "{}".to_string())
                }
                Ok(w) => {
                    let j = st.jobs.entry(job.clone()).or_default();
                    let have = j.log.len() as u64;
                    let accepted = !is_final(&w.state) || w.log_length == have;
                    j.requests.push(Request::Status(StatusRecord {
                        job: job.clone(),
                        state: w.state,
                        exit_code: w.exit_code,
                        log_length: w.log_length,
                        runner_version: w.runner_version,
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
                        Answer::Send(200, "{}".to_string())
                    } else {
                        st.counts.conflicts += 1;
                        Answer::Send(409, format!("{{\"length\":{have}}}"))
                    }
                }
            }
        }
        _ => {
            problems.push(format!("unexpected {} {}", req.method, req.target));
            Answer::Send(404, "{}".to_string())
        }
    };
    st.violations.extend(problems);
    answer
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
