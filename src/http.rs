//! A minimal HTTP/1.1 client for the orchestrator (docs/protocol.md,
//! "Transport"): one kept-alive connection, one request at a time, a body
//! from memory or streamed from a file, and answers framed by
//! `Content-Length`, by the chunked coding or by the close (RFC 9112). The
//! log uploader uses it, and so do the artifact and cache transfers through
//! `put_file` and `get_to_file`.
//!
//! Everything the server sends is untrusted: a malformed, oversized or
//! unexpected answer is a failure to retry or to report, never a panic
//! (panic=abort would kill the job).

use crate::config::url::{is_ci, parse_num, Endpoint};
use crate::error::{Error, Result};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// For every read and write: a server that stops moving data for this long
/// has failed the request.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// Status line and headers of one answer (interim answers included); the
/// trailer fields of a chunked body have as much again.
pub const MAX_HEAD: usize = 16 * 1024;
/// A chunk's size line (with any extensions) and the line end after its data.
const MAX_CHUNK_LINES: usize = 1024;
/// An answer body kept in memory: the orchestrator's answers are small JSON.
pub const MAX_BODY: usize = 64 * 1024;
/// The read buffer; larger than MAX_HEAD, so that a head within its limit
/// always fits.
const BUF: usize = 32 * 1024;
/// How much of a file goes to the socket per write.
const FILE_CHUNK: usize = 64 * 1024;
const BACKOFF_MIN_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 5000;

/// What a request carries.
pub enum Body<'a> {
    Bytes(&'a [u8]),
    /// The first `len` bytes of the file, read by position, so that a
    /// second try sends them again from the start and memory stays bounded.
    File(&'a File, u64),
}

impl Body<'_> {
    fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::File(_, len) => *len,
        }
    }
}

pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query, as `Client::target` builds it.
    pub target: &'a str,
    /// Headers after the client's own (Host, Authorization, User-Agent,
    /// Connection) and before `Content-Length`. The caller's own values:
    /// nothing received goes here.
    pub headers: &'a [(&'a str, &'a str)],
    /// `None`: no body and no `Content-Length` (a GET).
    pub body: Option<Body<'a>>,
}

/// Where the body of an answer goes.
pub enum Sink<'a> {
    /// Into `Response::body`, at most MAX_BODY bytes.
    Memory,
    /// A 2xx answer's body is written to the file from position 0, at most
    /// `cap` bytes; other answers' bodies go to memory as above.
    File { file: &'a File, cap: u64 },
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The body, unless it went to a file.
    pub body: Vec<u8>,
    /// Bytes written to the file sink.
    pub written: u64,
    keep_alive: bool,
}

/// Why an exchange brought no answer.
#[derive(Debug)]
pub enum Failure {
    /// The connection failed, or the answer was malformed or too long:
    /// another try may fare better.
    Transient(Error),
    /// Another try would fare the same: a local file could not be read or
    /// written, or the answer's body is over the caller's cap.
    Final(Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Failure::Transient(e) | Failure::Final(e) => e.msg.fmt(f),
        }
    }
}

/// A client of one orchestrator, with the job's token and, between
/// requests, the kept-alive connection.
pub struct Client {
    prefix: String,
    host: String,
    port: u16,
    /// `host:port` as the `Host` header has it (IPv6 in brackets).
    authority: String,
    /// The header lines every request starts with, each ending in CRLF.
    common: String,
    conn: Option<Conn>,
}

impl fmt::Debug for Client {
    // By hand, so that no `{:?}` anywhere can print the token.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.url())
    }
}

impl Client {
    /// A client of `endpoint` authenticating with `token`, which must be
    /// printable ASCII without spaces to go into a header.
    pub fn new(endpoint: &Endpoint, token: &str) -> Result<Client> {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::upload(
                "SOLSTICE_JOB_TOKEN is empty or has characters that cannot go in an HTTP header",
            ));
        }
        let host = &endpoint.host;
        let port = endpoint.port;
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let common = format!(
            concat!(
                "Host: {}\r\nAuthorization: Bearer {}\r\nUser-Agent: solstice-runner/",
                env!("CARGO_PKG_VERSION"),
                "\r\nConnection: keep-alive\r\n"
            ),
            authority, token
        );
        Ok(Client {
            prefix: endpoint.prefix.clone(),
            host: host.clone(),
            port,
            authority,
            common,
            conn: None,
        })
    }

    /// `http://host:port/prefix`, for messages.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.authority, self.prefix)
    }

    /// `{prefix}/a/b/...`, each segment percent-encoded (all but RFC 3986's
    /// unreserved characters), so that a job id, an artifact name or a
    /// cache key is always exactly one path segment.
    pub fn target(&self, segments: &[&str]) -> String {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut t = self.prefix.clone();
        for s in segments {
            t.push('/');
            for b in s.bytes() {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    t.push(char::from(b));
                } else {
                    t.push('%');
                    t.push(char::from(HEX[usize::from(b >> 4)]));
                    t.push(char::from(HEX[usize::from(b & 15)]));
                }
            }
        }
        t
    }

    /// `{prefix}/v1/jobs/{job}/artifacts/{name}`.
    pub fn artifact_target(&self, job: &str, name: &str) -> String {
        self.target(&["v1", "jobs", job, "artifacts", name])
    }

    /// `{prefix}/v1/cache/{key}`.
    pub fn cache_target(&self, key: &str) -> String {
        self.target(&["v1", "cache", key])
    }

    /// Sends `req` and reads its answer, on the kept-alive connection if
    /// there is one. A kept-alive connection the server closed while idle
    /// fails before any byte of an answer arrives; then the request goes
    /// once more on a new connection. (Every request of the protocol is
    /// idempotent: the offset guards the log, a PUT replaces.)
    pub fn exchange(
        &mut self,
        req: &Request,
        sink: &Sink,
    ) -> std::result::Result<Response, Failure> {
        let mut head = format!("{} {} HTTP/1.1\r\n{}", req.method, req.target, self.common);
        for (name, value) in req.headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        if let Some(body) = &req.body {
            head.push_str("Content-Length: ");
            head.push_str(&body.len().to_string());
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        loop {
            let reused = self.conn.is_some();
            let conn = match &mut self.conn {
                Some(c) => c,
                None => {
                    let c = self
                        .open()
                        .map_err(|e| Failure::Transient(Error::upload(e)))?;
                    self.conn.insert(c)
                }
            };
            match conn.exchange(head.as_bytes(), req.body.as_ref(), sink) {
                Ok(resp) => {
                    if !resp.keep_alive {
                        self.conn = None;
                    }
                    return Ok(resp);
                }
                Err(t) => {
                    let stale = reused && t.transient && conn.received == 0;
                    self.conn = None;
                    if !stale {
                        return Err(t.into_failure());
                    }
                }
            }
        }
    }

    /// Closes the kept-alive connection, if any.
    pub fn close(&mut self) {
        self.conn = None;
    }

    /// Connects to the first address of the host that answers.
    fn open(&self) -> std::result::Result<Conn, String> {
        let addrs = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    // Failures here cannot happen on a connected TCP socket;
                    // and the callers' deadlines bound even a missing timeout.
                    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
                    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
                    let _ = stream.set_nodelay(true);
                    return Ok(Conn {
                        stream,
                        buf: vec![0; BUF].into_boxed_slice(),
                        start: 0,
                        end: 0,
                        received: 0,
                        budget: 0,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => format!("cannot connect to {}: {}", self.authority, io_words(&e)),
            None => format!("cannot resolve {}: no address", self.host),
        })
    }
}

/// An I/O error in words; a timeout says how long was waited.
fn io_words(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("nothing moved for {} s", IO_TIMEOUT.as_secs())
        }
        _ => e.to_string(),
    }
}

/// What went wrong inside one exchange, before the client words it.
struct Trouble {
    what: &'static str,
    io: Option<io::Error>,
    transient: bool,
}

impl Trouble {
    fn into_failure(self) -> Failure {
        let msg = match &self.io {
            Some(e) => format!("{}: {}", self.what, io_words(e)),
            None => self.what.to_string(),
        };
        let e = Error::upload(msg);
        if self.transient {
            Failure::Transient(e)
        } else {
            Failure::Final(e)
        }
    }
}

impl From<&'static str> for Trouble {
    fn from(what: &'static str) -> Trouble {
        Trouble {
            what,
            io: None,
            transient: true,
        }
    }
}

type Step<T> = std::result::Result<T, Trouble>;

const CLOSED: &str = "the orchestrator closed the connection";
const TOO_LONG: &str = "the answer is too long";
const OVER_CAP: Trouble = Trouble {
    what: "the answer's body is larger than allowed",
    io: None,
    transient: false,
};

/// One connection and its read buffer (`buf[start..end]` is unread).
struct Conn {
    stream: TcpStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes received since the current request was sent.
    received: u64,
    /// What the current answer may still use of MAX_HEAD.
    budget: usize,
}

/// Where the body being read goes.
enum Out<'a> {
    Memory(&'a mut Vec<u8>),
    File { file: &'a File, cap: u64, at: u64 },
}

impl Out<'_> {
    /// Whether `n` more bytes are sure to be too many.
    fn refuses(&self, n: u64) -> Option<Trouble> {
        match self {
            Out::Memory(v) => {
                (n > (MAX_BODY - v.len().min(MAX_BODY)) as u64).then(|| TOO_LONG.into())
            }
            Out::File { cap, at, .. } => (n > cap - at).then_some(OVER_CAP),
        }
    }

    fn put(&mut self, piece: &[u8]) -> Step<()> {
        if let Some(t) = self.refuses(piece.len() as u64) {
            return Err(t);
        }
        match self {
            Out::Memory(v) => v.extend_from_slice(piece),
            Out::File { file, at, .. } => {
                file.write_all_at(piece, *at).map_err(|e| Trouble {
                    what: "writing the answer to a file",
                    io: Some(e),
                    transient: false,
                })?;
                *at += piece.len() as u64;
            }
        }
        Ok(())
    }
}

impl Conn {
    fn exchange(&mut self, head: &[u8], body: Option<&Body>, sink: &Sink) -> Step<Response> {
        // Bytes left from the previous answer mean the server broke framing.
        if self.start != self.end {
            return Err("stray bytes after the previous answer".into());
        }
        self.received = 0;
        match self.send(head, body) {
            Ok(()) => self.read_response(sink),
            Err(t) if t.transient => {
                // A server may answer (a refusal, say) before it has read the
                // whole body, and close: that answer counts.
                match self.read_response(sink) {
                    Ok(mut resp) => {
                        resp.keep_alive = false;
                        Ok(resp)
                    }
                    Err(_) => Err(t),
                }
            }
            Err(t) => Err(t),
        }
    }

    fn send(&mut self, head: &[u8], body: Option<&Body>) -> Step<()> {
        let sending = |e| Trouble {
            what: "sending the request",
            io: Some(e),
            transient: true,
        };
        self.stream.write_all(head).map_err(sending)?;
        match body {
            None => Ok(()),
            Some(Body::Bytes(b)) => self.stream.write_all(b).map_err(sending),
            Some(Body::File(file, len)) => {
                let mut chunk = vec![0; FILE_CHUNK];
                let mut at = 0;
                while at < *len {
                    let want = (*len - at).min(FILE_CHUNK as u64) as usize;
                    let piece = chunk.get_mut(..want).unwrap_or_default();
                    let n = match file.read_at(piece, at) {
                        Ok(0) => {
                            return Err(Trouble {
                                what: "the file to send is shorter than its length",
                                io: None,
                                transient: false,
                            })
                        }
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            return Err(Trouble {
                                what: "reading the file to send",
                                io: Some(e),
                                transient: false,
                            })
                        }
                    };
                    self.stream
                        .write_all(piece.get(..n).unwrap_or_default())
                        .map_err(sending)?;
                    at += n as u64;
                }
                Ok(())
            }
        }
    }

    /// Reads more of the answer; false at the end of the stream.
    fn fill(&mut self) -> Step<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let Some(space) = self.buf.get_mut(self.end..).filter(|s| !s.is_empty()) else {
            return Err(TOO_LONG.into());
        };
        loop {
            match self.stream.read(space) {
                Ok(n) => {
                    self.end += n;
                    self.received += n as u64;
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Trouble {
                        what: "reading the answer",
                        io: Some(e),
                        transient: true,
                    })
                }
            }
        }
    }

    fn unread(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// One line without its CRLF (a bare LF is accepted too, RFC 9112 2.2),
    /// counted against `budget`.
    fn line(&mut self) -> Step<&[u8]> {
        // Bytes known to hold no line end.
        let mut scanned = 0;
        loop {
            let unread = self.unread();
            if let Some(i) = unread
                .get(scanned..)
                .unwrap_or_default()
                .iter()
                .position(|&b| b == b'\n')
            {
                let len = scanned + i + 1;
                self.budget = self.budget.checked_sub(len).ok_or(TOO_LONG)?;
                let from = self.start;
                self.start += len;
                let line = self.buf.get(from..from + len - 1).unwrap_or_default();
                return Ok(line.strip_suffix(b"\r").unwrap_or(line));
            }
            scanned = unread.len();
            if scanned > self.budget {
                return Err(TOO_LONG.into());
            }
            if !self.fill()? {
                return Err(CLOSED.into());
            }
        }
    }

    /// Moves `n` bytes of the answer to `out`, or with `None` all up to the
    /// end of the stream.
    fn take(&mut self, n: Option<u64>, out: &mut Out) -> Step<()> {
        if let Some(t) = n.and_then(|n| out.refuses(n)) {
            return Err(t);
        }
        let mut left = n;
        while left != Some(0) {
            if self.start == self.end && !self.fill()? {
                return match left {
                    Some(_) => Err(CLOSED.into()),
                    None => Ok(()),
                };
            }
            let unread = self.unread();
            let k = left.map_or(unread.len(), |l| l.min(unread.len() as u64) as usize);
            out.put(unread.get(..k).unwrap_or_default())?;
            self.start += k;
            left = left.map(|l| l - k as u64);
        }
        Ok(())
    }

    fn read_response(&mut self, sink: &Sink) -> Step<Response> {
        self.budget = MAX_HEAD;
        loop {
            // `HTTP/1.1 200 OK`; the reason phrase is optional.
            let line = self.line()?;
            let http11 = match line.get(..9) {
                Some(b"HTTP/1.1 ") => true,
                Some(b"HTTP/1.0 ") => false,
                _ => return Err("not an HTTP/1.x answer".into()),
            };
            let status = match (line.get(9..12).and_then(|c| parse_num(c, 10)), line.get(12)) {
                (Some(s @ 100..=999), None | Some(b' ')) => s as u16,
                _ => return Err("bad status line".into()),
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
                        return Err("conflicting Content-Length headers".into());
                    }
                    length = Some(n);
                } else if is_ci(name, b"transfer-encoding") {
                    // The last coding counts.
                    let last = value.iter().rposition(|&b| b == b',');
                    let last = value.get(last.map_or(0, |i| i + 1)..).unwrap_or_default();
                    coding = Some(is_ci(last.trim_ascii(), b"chunked"));
                } else if is_ci(name, b"connection") {
                    // Any item `close`, in a comma-separated list.
                    close |= value
                        .split(|&b| b == b',')
                        .any(|item| is_ci(item.trim_ascii(), b"close"));
                }
            }
            if status < 200 {
                if status == 101 {
                    return Err("the orchestrator switched protocols".into());
                }
                // Interim answers (100 Continue) have no body; the real one follows.
                continue;
            }
            let mut body = Vec::new();
            let mut out = match sink {
                Sink::File { file, cap } if (200..300).contains(&status) => Out::File {
                    file,
                    cap: *cap,
                    at: 0,
                },
                _ => Out::Memory(&mut body),
            };
            // 204 and 304 have no body by definition (RFC 9112 6.3).
            if status != 204 && status != 304 {
                match (coding, length) {
                    (Some(true), _) => loop {
                        self.budget = MAX_CHUNK_LINES;
                        let line = self.line()?;
                        // Chunk extensions (`;name=value`) are ignored.
                        let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
                        let size = line
                            .get(..end)
                            .and_then(|s| parse_num(s.trim_ascii(), 16))
                            .ok_or("bad chunk size")?;
                        if size == 0 {
                            // Trailer fields, ignored, up to the empty line.
                            self.budget = MAX_HEAD;
                            while !self.line()?.is_empty() {}
                            break;
                        }
                        self.take(Some(size), &mut out)?;
                        if !self.line()?.is_empty() {
                            return Err("a chunk does not end with CRLF".into());
                        }
                    },
                    (None, Some(n)) => self.take(Some(n), &mut out)?,
                    // Another coding, or no framing: the close ends the body
                    // (RFC 9112 6.3, items 4 and 8).
                    _ => {
                        self.take(None, &mut out)?;
                        close = true;
                    }
                }
            }
            let written = match out {
                Out::File { at, .. } => at,
                Out::Memory(_) => 0,
            };
            // Bytes beyond the answer: the connection is out of step.
            close |= self.start != self.end;
            return Ok(Response {
                status,
                body,
                written,
                keep_alive: !close,
            });
        }
    }
}

/// Pauses between tries: from 100 ms doubling up to 5 s, each drawn
/// uniformly from the upper half of the current step, so that runners that
/// failed together do not retry together.
pub struct Backoff {
    step_ms: u64,
    rng: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    pub fn new() -> Backoff {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let seed = u64::from(t.subsec_nanos())
            ^ t.as_secs()
            ^ (u64::from(std::process::id()) << 32)
            ^ 0x9E37_79B9_7F4A_7C15;
        Backoff {
            step_ms: BACKOFF_MIN_MS,
            rng: seed | 1,
        }
    }

    /// The next pause; the step after it is twice as long.
    pub fn pause(&mut self) -> Duration {
        // xorshift64*: jitter only, not security.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let cap = self.step_ms;
        self.step_ms = (cap * 2).min(BACKOFF_MAX_MS);
        Duration::from_millis(cap / 2 + r % (cap / 2 + 1))
    }

    /// After a success: the next failure pauses briefly again.
    pub fn reset(&mut self) {
        self.step_ms = BACKOFF_MIN_MS;
    }
}

/// Whether an answer asks for the same request again: 408, 429, 5xx, and
/// codes no server should send.
pub fn is_retried(status: u16) -> bool {
    matches!(status, 408 | 429) || !(200..500).contains(&status)
}

/// Tries `once` until it brings an answer that is not retried (see
/// `is_retried`) or the deadline leaves no time for another try: the first
/// try always goes, no later one starts after `deadline`, and one under way
/// goes on while data moves.
/// Returns the last answer, or the last failure when no answer came.
fn with_retries(
    deadline: Instant,
    mut once: impl FnMut() -> std::result::Result<Response, Failure>,
) -> Result<Response> {
    let mut backoff = Backoff::new();
    loop {
        let (pause, result) = match once() {
            Ok(resp) if !is_retried(resp.status) => return Ok(resp),
            Ok(resp) => (backoff.pause(), Ok(resp)),
            Err(Failure::Final(e)) => return Err(e),
            Err(Failure::Transient(e)) => (backoff.pause(), Err(e)),
        };
        let now = Instant::now();
        if now + pause >= deadline {
            return result;
        }
        std::thread::sleep(pause);
    }
}

/// What `put_file` sends beside the file.
pub struct PutFile<'a> {
    /// `Content-Type`, such as `application/x-tar`.
    pub content_type: &'a str,
    /// Whether the file is gzip-compressed (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// The SHA-256 of the file's first `len` bytes as sent, for
    /// `Repr-Digest` (RFC 9530).
    pub sha256: &'a [u8],
}

/// `PUT target` with the first `len` bytes of `file` as the body, streamed.
/// Connection failures, 408, 429 and 5xx are retried with backoff; no try
/// but the first starts after `deadline`. Returns the status of the answer that ended the
/// tries: 2xx is success; 3xx and 4xx are not retried; 408, 429 or 5xx only
/// when the deadline left no time for another try. An error when no answer
/// came, or the file could not be read.
pub fn put_file(
    client: &mut Client,
    target: &str,
    file: &File,
    len: u64,
    how: &PutFile,
    deadline: Instant,
) -> Result<u16> {
    let digest = format!("sha-256=:{}:", crate::logs::mask::base64(how.sha256));
    let mut headers = vec![("Content-Type", how.content_type)];
    if how.gzip {
        headers.push(("Content-Encoding", "gzip"));
    }
    headers.push(("Repr-Digest", &digest));
    let req = Request {
        method: "PUT",
        target,
        headers: &headers,
        body: Some(Body::File(file, len)),
    };
    with_retries(deadline, || client.exchange(&req, &Sink::Memory)).map(|r| r.status)
}

/// `GET target`, its 200 answer's body written to `file` from position 0
/// (the file is then cut to that length). Retried as `put_file`. Returns
/// the body's length, or `None` for a 404 (nothing stored under that
/// name). Another answer is an error, and so is a body over `cap` bytes
/// (not retried: it would be as large again); after an error the file
/// holds nothing usable.
pub fn get_to_file(
    client: &mut Client,
    target: &str,
    file: &File,
    cap: u64,
    deadline: Instant,
) -> Result<Option<u64>> {
    let req = Request {
        method: "GET",
        target,
        headers: &[],
        body: None,
    };
    let resp = with_retries(deadline, || {
        client.exchange(&req, &Sink::File { file, cap })
    })?;
    match resp.status {
        200 => {
            file.set_len(resp.written).map_err(|e| {
                Error::upload(format!("cannot cut the downloaded file to its length: {e}"))
            })?;
            Ok(Some(resp.written))
        }
        404 => Ok(None),
        s => Err(Error::upload(format!(
            "the orchestrator at {} answered {s} to GET {target}",
            client.url()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A client of a test server on 127.0.0.1:`port`.
    fn client(port: u16) -> Client {
        let ep = Endpoint {
            host: "127.0.0.1".into(),
            port,
            prefix: String::new(),
        };
        Client::new(&ep, "tok").unwrap()
    }

    fn get(c: &mut Client) -> std::result::Result<Response, Failure> {
        let req = Request {
            method: "GET",
            target: "/",
            headers: &[],
            body: None,
        };
        c.exchange(&req, &Sink::Memory)
    }

    /// Reads one request head (the tests' requests have no body).
    fn read_head(s: &mut TcpStream) {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
    }

    /// A test server on 127.0.0.1 that reads one request's head, sends
    /// `answer` as it is, and closes.
    fn answer_once(answer: Vec<u8>) -> (u16, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            read_head(&mut s);
            let _ = s.write_all(&answer);
        });
        (port, server)
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
                read_head(&mut s);
                for line in answer.split_inclusive(|&b| b == b'\n') {
                    s.write_all(line).unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        let mut c = client(port);
        let mut ask = || {
            let r = get(&mut c).unwrap();
            (r.status, String::from_utf8(r.body).unwrap(), r.keep_alive)
        };
        assert_eq!(ask(), (200, r#"{"length": 7}"#.into(), true));
        assert_eq!(ask(), (409, r#"{"length":93}"#.into(), true));
        assert_eq!(ask(), (503, "closed".into(), false));
        server.join().unwrap();
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
            let (port, server) = answer_once(answer);
            let got = get(&mut client(port));
            assert_eq!(got.map(|r| r.body.len()).ok(), want);
            server.join().unwrap();
        }
    }

    /// Heads over MAX_HEAD fail, counting interim answers; malformed heads
    /// and 101 fail; nothing panics.
    #[test]
    fn bad_heads_fail_without_panicking() {
        let filler = format!("X-Fill: {}\r\n", "y".repeat(1000));
        let cases: Vec<Vec<u8>> = vec![
            format!("HTTP/1.1 200 OK\r\n{}\r\n", filler.repeat(17)).into(),
            format!(
                "{}HTTP/1.1 200 OK\r\n\r\n",
                format!("HTTP/1.1 100 Continue\r\n{filler}\r\n").repeat(17)
            )
            .into(),
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec(),
            b"HTTP/2 200\r\n\r\n".to_vec(),
            b"HTTP/1.1 2000 OK\r\n\r\n".to_vec(),
            b"HTTP/1.1 20 OK\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort".to_vec(),
            b"HTTP/1.1 200".to_vec(),
            Vec::new(),
        ];
        for answer in cases {
            let shown = String::from_utf8_lossy(&answer[..answer.len().min(60)]).into_owned();
            let (port, server) = answer_once(answer);
            let got = get(&mut client(port));
            assert!(
                matches!(got, Err(Failure::Transient(_))),
                "{shown:?}: {got:?}"
            );
            server.join().unwrap();
        }
    }

    /// A 2xx body goes to the file sink, framed by the close or by many
    /// small chunks; another answer's body stays in memory; a chunk size
    /// line may not run on.
    #[test]
    fn bodies_stream_to_a_file() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for piece in data.chunks(5) {
            chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            chunked.extend_from_slice(piece);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let by_close = [b"HTTP/1.1 200 OK\r\n\r\n".as_slice(), &data].concat();
        let refused = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}".to_vec();
        let long_ext = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\nx\r\n0\r\n\r\n",
            "e".repeat(1100)
        )
        .into_bytes();
        let dir = std::env::temp_dir().join(format!("solstice-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out");
        // The answer, then the status, body length and bytes written.
        type Case = (Vec<u8>, Option<(u16, usize, u64)>);
        let cases: [Case; 4] = [
            (chunked, Some((200, 0, data.len() as u64))),
            (by_close, Some((200, 0, data.len() as u64))),
            (refused, Some((404, 2, 0))),
            (long_ext, None),
        ];
        for (answer, want) in cases {
            let (port, server) = answer_once(answer);
            let file = File::create(&path).unwrap();
            let req = Request {
                method: "GET",
                target: "/",
                headers: &[],
                body: None,
            };
            let sink = Sink::File {
                file: &file,
                cap: 1 << 20,
            };
            let got = client(port).exchange(&req, &sink);
            let got = got.ok().map(|r| (r.status, r.body.len(), r.written));
            assert_eq!(got, want);
            if want.is_some_and(|w| w.0 == 200) {
                assert!(std::fs::read(&path).unwrap() == data);
            }
            server.join().unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A kept-alive connection the server closed while idle: the request
    /// goes again, once, on a new connection.
    #[test]
    fn a_stale_connection_is_retried_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
            let (mut s, _) = listener.accept().unwrap();
            read_head(&mut s);
            s.write_all(ok).unwrap();
            drop(s); // closes the kept-alive connection
            let (mut s, _) = listener.accept().unwrap();
            read_head(&mut s);
            s.write_all(ok).unwrap();
            // The third request finds this connection closed too and goes
            // again on a new one, which closes without an answer: a
            // failure, not a stale connection.
            drop(s);
            let (mut s, _) = listener.accept().unwrap();
            read_head(&mut s);
        });
        let mut c = client(port);
        assert_eq!(get(&mut c).unwrap().status, 200);
        assert_eq!(get(&mut c).unwrap().status, 200);
        assert!(matches!(get(&mut c), Err(Failure::Transient(_))));
        server.join().unwrap();
    }
}
