//! The upload thread: the running status, then whole lines of the spool
//! from the acknowledged offset, heartbeats while the job is quiet, and the
//! final status once the orchestrator holds the whole log.

use super::{say, stop, Config, OnCancel, Outcome, Shared};
use crate::http::{is_retried, Backoff, Body, Client, Request, Sink};
use crate::report::Status;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most log bytes in one request (a single longer line goes alone, whole).
const MAX_BATCH: usize = 256 * 1024;
/// While output flows, the longest a line waits before it is sent; also how
/// often an idle spool is polled.
const INTERVAL: Duration = Duration::from_millis(250);
/// How much of a cancel reason is passed on: it ends up in a log line.
const MAX_REASON: usize = 256;

/// The fields the runner reads from an answer's JSON body; others are
/// ignored. A body that is not such an object (or has one of these fields
/// of another type) has none.
#[derive(miniserde::Deserialize, Default)]
struct Answer {
    length: Option<u64>,
    cancel: Option<bool>,
    reason: Option<String>,
}

impl Answer {
    fn read(body: &[u8]) -> Answer {
        std::str::from_utf8(body)
            .ok()
            .and_then(|text| miniserde::json::from_str(text).ok())
            .unwrap_or_default()
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
    GiveUp(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Log,
    Status,
}

pub(super) struct Worker {
    client: Client,
    /// The orchestrator's URL, for messages.
    url: String,
    job_id: String,
    /// `{prefix}/v1/jobs/{job}/`, to which `log` or `status` is appended.
    job_target: String,
    spool_path: PathBuf,
    /// The spool, once it exists.
    spool: Option<File>,
    shared: Arc<Shared>,
    /// What the orchestrator has acknowledged: the next POST's offset.
    acked: u64,
    body: Vec<u8>,
    last_post: Option<Instant>,
    /// When the last request went out, for the heartbeat.
    last_sent: Instant,
    heartbeat: Option<Duration>,
    backoff: Backoff,
    /// A failure streak has been logged; later failures go to debug.
    troubled: bool,
    /// Taken by the first answer that asks to cancel.
    on_cancel: Option<OnCancel>,
}

impl Worker {
    pub(super) fn new(
        client: Client,
        cfg: Config,
        spool_path: PathBuf,
        shared: Arc<Shared>,
        on_cancel: OnCancel,
    ) -> Worker {
        let mut job_target = client.target(&["v1", "jobs", &cfg.job_id]);
        job_target.push('/');
        Worker {
            url: client.url(),
            client,
            job_id: cfg.job_id,
            job_target,
            spool_path,
            spool: None,
            shared,
            acked: 0,
            body: Vec::with_capacity(MAX_BATCH),
            last_post: None,
            last_sent: Instant::now(),
            // Zero would be a request after every answer.
            heartbeat: cfg.heartbeat.filter(|h| !h.is_zero()),
            backoff: Backoff::new(),
            troubled: false,
            on_cancel: Some(on_cancel),
        }
    }

    pub(super) fn run(mut self) {
        let outcome = match self.run_inner() {
            Ok(()) => Outcome::Delivered,
            Err(why) => Outcome::Stopped(why),
        };
        self.shared.end(outcome);
    }

    fn run_inner(&mut self) -> Result<(), String> {
        let mut started = false;
        // The final status body and the log length it reports, once
        // `finish` has handed them over.
        let mut fin: Option<(Vec<u8>, u64)> = None;
        loop {
            {
                let mut st = self.shared.lock();
                if st.abandoned {
                    return Err("the uploader was dropped".into());
                }
                if fin.is_none() {
                    fin = st.finish.take();
                }
            }
            let mut final_sent = false;
            let reply = if !started {
                // The first request; no log is sent before it is acknowledged.
                let body = Status::running(crate::logs::current_step()).body(0);
                self.request(Kind::Status, body.as_bytes())
            } else {
                let limit = fin.as_ref().map(|f| f.1);
                let more = match self.read_batch(limit) {
                    Ok(more) => more,
                    // The spool is ours; losing it is not the orchestrator's fault.
                    Err(e) => return Err(self.spool_error(e)),
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
                    let reply = self.request(Kind::Log, &body);
                    self.body = body;
                    reply
                } else if let Some((body, _)) = fin.as_ref().filter(|f| self.acked >= f.1) {
                    final_sent = true;
                    self.request(Kind::Status, body)
                } else if let Some(step) = self.heartbeat_due(limit.is_some()) {
                    let body = Status::running(step).body(self.acked);
                    self.request(Kind::Status, body.as_bytes())
                } else {
                    // Nothing new yet; or, after finish, nothing readable
                    // below the final length: the file is shorter than it
                    // was then, which only a broken disk does.
                    let wait = match self.heartbeat {
                        Some(h) if limit.is_none() => {
                            h.saturating_sub(self.last_sent.elapsed()).min(INTERVAL)
                        }
                        _ => INTERVAL,
                    };
                    self.pause(wait, limit.is_none());
                    continue;
                }
            };
            match reply {
                Reply::Done if final_sent => return Ok(()),
                Reply::Done => {
                    started = true;
                    self.recovered();
                }
                Reply::Resume(m) => {
                    // The orchestrator holds another length: continue from
                    // there (after a final status, the status goes again).
                    let before = self.acked;
                    self.resume_at(m)?;
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
                Reply::GiveUp(why) => return Err(why),
            }
        }
    }

    /// With nothing else to send and the job still running: the step for a
    /// heartbeat if one is due. Decided under the lock `finish` takes, so
    /// that none starts once `finish` was called.
    fn heartbeat_due(&self, finished: bool) -> Option<Option<String>> {
        let h = self.heartbeat.filter(|_| !finished)?;
        if self.last_sent.elapsed() < h {
            return None;
        }
        let st = self.shared.lock();
        // The pipeline knows the step (its events carry it), masked.
        (!st.finishing && !st.abandoned).then(crate::logs::current_step)
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
        let pause = self.backoff.pause();
        self.pause(pause, false);
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
        self.backoff.reset();
    }

    fn set_acked(&mut self, n: u64) {
        self.acked = n;
        self.shared.lock().acked = n;
    }

    fn spool_error(&self, e: io::Error) -> String {
        stop(&self.job_id, format!("cannot read the log spool: {e}"))
    }

    /// Accepts a length the orchestrator reported, if it is a line boundary
    /// of our spool (0, or just after a `\n`, and not past its end); anything
    /// else means the orchestrator holds a different log, and uploading more
    /// could only corrupt it.
    fn resume_at(&mut self, m: u64) -> Result<(), String> {
        let mut b = [b'\n'];
        if m > 0 {
            // Past the end, the read returns nothing and `b` stays 0.
            b[0] = 0;
            let read = self.spool().and_then(|f| f.read_at(&mut b, m - 1));
            if let Err(e) = read {
                return Err(self.spool_error(e));
            }
        }
        if b[0] != b'\n' {
            return Err(stop(
                &self.job_id,
                format!(
                    "the orchestrator reports {m} log bytes, which is not a line boundary of \
                     this job's spool"
                ),
            ));
        }
        self.set_acked(m);
        Ok(())
    }

    /// The spool, opened on first use (the job may not have written it yet).
    fn spool(&mut self) -> io::Result<&File> {
        if self.spool.is_none() {
            self.spool = Some(File::open(&self.spool_path)?);
        }
        self.spool
            .as_ref()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    /// Loads the next request body into `self.body`: whole lines from
    /// `acked`, at most MAX_BATCH bytes unless one line is longer. `limit` is
    /// the spool's final size once the job is done; then a last line without
    /// its newline (only a failing disk leaves one) is sent too. Returns
    /// whether more than a batch was waiting: then there is a backlog to
    /// send at once rather than gather.
    fn read_batch(&mut self, limit: Option<u64>) -> io::Result<bool> {
        let mut body = std::mem::take(&mut self.body);
        let result = self.fill_batch(&mut body, limit);
        if result.is_err() || (limit.is_none() && !body.ends_with(b"\n")) {
            body.clear();
        }
        self.body = body;
        result
    }

    fn fill_batch(&mut self, body: &mut Vec<u8>, limit: Option<u64>) -> io::Result<bool> {
        body.clear();
        let acked = self.acked;
        let file = match self.spool() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && limit.is_none() => return Ok(false),
            f => f?,
        };
        let size = file.metadata()?.len();
        let avail = limit.map_or(size, |l| l.min(size)).saturating_sub(acked);
        // A batch, then (with no line end in a whole batch: one line longer
        // than a batch, or one still being written) 64 KiB at a time up to
        // the end of that line, which goes whole and alone.
        let mut want = MAX_BATCH;
        while (body.len() as u64) < avail {
            let from = body.len();
            let n = (avail - from as u64).min(want as u64) as usize;
            body.resize(from + n, 0);
            let mut got = 0;
            while got < n {
                let at = acked + (from + got) as u64;
                match file.read_at(body.get_mut(from + got..).unwrap_or_default(), at) {
                    Ok(0) => break, // the file shrank under us
                    Ok(k) => got += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            body.truncate(from + got);
            let new = body.get(from..).unwrap_or_default();
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
        Ok(false)
    }

    /// Hands a cancel to the runner, once.
    fn cancel(&mut self, reason: Option<&str>) {
        if let Some(on_cancel) = self.on_cancel.take() {
            // The reason goes into a log line: one line, of bounded length.
            let reason: String = reason
                .unwrap_or_default()
                .chars()
                .take(MAX_REASON)
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            on_cancel(reason.trim());
        }
    }

    /// One request: `PUT status` with `body`, or `POST log` from `acked`.
    fn request(&mut self, kind: Kind, body: &[u8]) -> Reply {
        let (method, target, content_type, what) = match kind {
            Kind::Log => (
                "POST",
                format!("{}log?offset={}", self.job_target, self.acked),
                "application/x-ndjson",
                "POST log",
            ),
            Kind::Status => (
                "PUT",
                format!("{}status", self.job_target),
                "application/json",
                "PUT status",
            ),
        };
        let req = Request {
            method,
            target: &target,
            headers: &[("Content-Type", content_type)],
            body: Some(Body::Bytes(body)),
        };
        self.last_sent = Instant::now();
        let resp = match self.client.exchange(&req, &Sink::Memory) {
            Ok(r) => r,
            Err(f) => return Reply::Retry(f.to_string()),
        };
        let status = resp.status;
        let answer = Answer::read(&resp.body);
        if matches!(status, 200..=299 | 409) && answer.cancel == Some(true) {
            self.cancel(answer.reason.as_deref());
        }
        let ep = &self.url;
        let why = match status {
            200..=299 if kind == Kind::Status => return Reply::Done,
            200..=299 => {
                // A 2xx without a readable length still means "appended".
                let end = self.acked + body.len() as u64;
                let m = answer.length.unwrap_or(end);
                if m != end {
                    return Reply::Resume(m);
                }
                self.set_acked(m);
                return Reply::Done;
            }
            409 => match answer.length {
                Some(m) => return Reply::Resume(m),
                None => format!(
                    "the orchestrator at {ep} answered 409 to {what} without a length to resume \
                     from"
                ),
            },
            _ if is_retried(status) => {
                return Reply::Retry(format!("the orchestrator answered {status} to {what}"))
            }
            401 | 403 => {
                format!("the orchestrator at {ep} refused the job token ({status} to {what})")
            }
            300..=399 => format!(
                "the orchestrator at {ep} answered {status} to {what}, a redirect, which is not \
                 followed"
            ),
            _ => format!(
                "the orchestrator at {ep} answered {status} to {what}, which is not retried"
            ),
        };
        Reply::GiveUp(stop(&self.job_id, why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_with_miniserde_and_unreadable_ones_have_no_fields() {
        let cases: [(&str, Option<u64>); 16] = [
            (r#"{"length":93}"#, Some(93)),
            (
                r#"{ "length" : 207 , "note": "offset mismatch" }"#,
                Some(207),
            ),
            (r#"{"note":"\"length\": 5","length":6}"#, Some(6)),
            (r#"{"a":{"length":3},"b":[{"length":4}]}"#, None),
            (r#"{"length":7,"length":8}"#, Some(8)),
            (r#"{"length":0}"#, Some(0)),
            (r#"{"length":null}"#, None),
            (r#"{"length":18446744073709551615}"#, Some(u64::MAX)),
            (r#"{"length":18446744073709551616}"#, None),
            (r#"{"length":-1}"#, None),
            (r#"{"length":1.5}"#, None),
            (r#"{"length":1e3}"#, None),
            (r#"{"length":"9"}"#, None),
            (r#"{"length":007}"#, None),
            (r#"[{"length":1}]"#, None),
            ("", None),
        ];
        for (body, want) in cases {
            assert_eq!(Answer::read(body.as_bytes()).length, want, "{body}");
        }
        let a =
            Answer::read(br#"{"length":5,"cancel":true,"reason":"pressed \"stop\"","x":[1,{}]}"#);
        assert_eq!(
            (a.length, a.cancel, a.reason.as_deref()),
            (Some(5), Some(true), Some("pressed \"stop\""))
        );
        // One field of another type makes the whole body unreadable.
        let a = Answer::read(br#"{"length":5,"cancel":"yes"}"#);
        assert_eq!((a.length, a.cancel), (None, None));
        assert_eq!(Answer::read(b"{\"length\":5,\"x\":\"\xff\"}").length, None);
        // Deep nesting in an ignored field neither recurses nor fails.
        let deep = format!(
            r#"{{"x":{}{},"length":3}}"#,
            "[".repeat(30_000),
            "]".repeat(30_000)
        );
        assert_eq!(Answer::read(deep.as_bytes()).length, Some(3));
    }
}
