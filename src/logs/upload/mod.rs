//! Upload of the log spool and the job status to the orchestrator over
//! `crate::http` (see docs/protocol.md).
//!
//! One background thread tails the spool file and POSTs whole lines from the
//! offset the orchestrator has acknowledged, so a retry after a lost answer
//! can neither duplicate nor skip bytes, and memory holds at most one request
//! body. While the job is quiet it sends heartbeats, and it hands a cancel
//! the orchestrator asks for to the runner through a callback. The job never
//! waits on this thread except in `finish`, and then only up to a deadline.

mod worker;

use crate::config::url::Endpoint;
use crate::http::Client;
use crate::report::Status;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub struct Config {
    pub endpoint: Endpoint,
    pub job_id: String,
    pub token: String,
    /// While the job runs, a `running` status goes out whenever nothing was
    /// sent for this long; `None`: no heartbeat.
    pub heartbeat: Option<Duration>,
}

impl fmt::Debug for Config {
    // By hand, so that no `{:?}` anywhere can print the token.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Config")
            .field("endpoint", &self.endpoint)
            .field("job_id", &self.job_id)
            .field("token", &"<redacted>")
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
}

/// Called once, on the upload thread, with the reason (empty when none was
/// given) of the first answer that asks to cancel the job.
pub type OnCancel = Box<dyn FnOnce(&str) + Send>;

/// How the upload ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The orchestrator acknowledged the whole log and the final status.
    Delivered,
    /// The upload stopped early, for this reason (a refusal by the
    /// orchestrator, an unreadable spool, an unusable token).
    Stopped(String),
    /// `finish`'s deadline passed first, with `acked` of `total` log bytes
    /// acknowledged.
    DeadlinePassed { acked: u64, total: u64 },
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
    /// Whether `finish` was called: no heartbeat starts after that.
    finishing: bool,
    abandoned: bool,
    /// Set once by the upload thread when it stops.
    outcome: Option<Outcome>,
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

    /// Records how the upload ended (the first word stands).
    fn end(&self, outcome: Outcome) {
        let mut st = self.lock();
        st.outcome.get_or_insert(outcome);
        self.cv.notify_all();
    }
}

/// Logs `job <id>: <what>`, the shape of every message of the uploader.
fn say(level: log::Level, job: &str, what: fmt::Arguments) {
    crate::logs::logger::emit(level, format_args!("job {job}: {what}"));
}

/// Logs, when it happens, why the upload stops for good; returns the
/// reason for the outcome.
fn stop(job: &str, why: String) -> String {
    say(
        log::Level::Error,
        job,
        format_args!(
            "{why}; the log is not uploaded further (the job goes on, its log stays in the spool)"
        ),
    );
    why
}

/// Handle on the upload thread.
pub struct Uploader {
    shared: Arc<Shared>,
    spool_path: PathBuf,
    job_id: String,
}

impl Uploader {
    /// Spawns the upload thread, which first reports "running", then tails
    /// the spool at `spool_path` (which may not exist yet). `on_cancel` is
    /// called as `OnCancel` says.
    pub fn start(cfg: Config, spool_path: PathBuf, on_cancel: OnCancel) -> Uploader {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                finish: None,
                finishing: false,
                abandoned: false,
                outcome: None,
                acked: 0,
            }),
            cv: Condvar::new(),
        });
        let job_id = cfg.job_id.clone();
        let started = Client::new(&cfg.endpoint, &cfg.token)
            .map_err(|e| e.msg.clone())
            .and_then(|client| {
                let w =
                    worker::Worker::new(client, cfg, spool_path.clone(), shared.clone(), on_cancel);
                crate::logs::spawn(Box::new(move || w.run()))
                    .map_err(|e| format!("cannot start the log upload thread: {e}"))
            });
        if let Err(why) = started {
            shared.end(Outcome::Stopped(stop(&job_id, why)));
        }
        Uploader {
            shared,
            spool_path,
            job_id,
        }
    }

    /// Uploads the rest of the spool, then reports `status` with the spool's
    /// size as `log_length`. Returns how the upload ended, and logs it in one
    /// line unless everything was delivered; returns at `deadline`
    /// regardless. The caller flushes the spool and stops appending before
    /// calling this.
    pub fn finish(self, status: Status, deadline: Duration) -> Outcome {
        // An unrepresentable deadline is none: an hour at a time.
        let end = Instant::now().checked_add(deadline);
        let total = std::fs::metadata(&self.spool_path).map_or(0, |m| m.len());
        let mut st = self.shared.lock();
        st.finishing = true;
        st.finish = Some((status.body(total).into_bytes(), total));
        self.shared.cv.notify_all();
        let outcome = loop {
            if let Some(o) = st.outcome.take() {
                break o;
            }
            let waited;
            let until = end.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            (st, waited) = self.shared.wait(st, until);
            if !waited {
                break Outcome::DeadlinePassed {
                    acked: st.acked,
                    total,
                };
            }
        };
        let acked = st.acked;
        drop(st);
        let job = &self.job_id;
        match &outcome {
            Outcome::Delivered => say(
                log::Level::Debug,
                job,
                format_args!(
                    "the orchestrator has the whole log ({total} bytes) and the final status"
                ),
            ),
            Outcome::Stopped(why) => say(
                log::Level::Warn,
                job,
                format_args!(
                    "the log upload stopped early: {why}; the orchestrator has {acked} of {total} \
                     log bytes and no final status (the whole log is in the spool {})",
                    self.spool_path.display()
                ),
            ),
            Outcome::DeadlinePassed { acked, total } => say(
                log::Level::Warn,
                job,
                format_args!(
                    "the orchestrator did not take the whole log and the final status within {} \
                     ms (SOLSTICE_UPLOAD_DEADLINE; {acked} of {total} bytes acknowledged); \
                     giving up on the upload",
                    deadline.as_millis() as u64
                ),
            ),
        }
        outcome
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        // Without `finish` the thread would tail the spool forever.
        self.shared.lock().abandoned = true;
        self.shared.cv.notify_all();
    }
}
