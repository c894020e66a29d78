//! The log pipeline: every byte that leaves the runner (the job's stdout and
//! stderr, the runner's own log lines) is cut into lines, masked, written to
//! the console and, when a spool is open, appended to it: what one pipe read
//! brought as one event (docs/protocol.md, "Log events"). The uploader sends
//! the spool to the orchestrator.
//!
//! Console stdout and stderr stay plain text, so the serial console reads like
//! a terminal; the spool carries the structured events the uploader sends.

pub mod bytes;
pub mod commands;
pub mod limit;
pub mod logger;
pub mod mask;
pub mod spool;
pub mod upload;

use mask::{LineSplitter, Masker};
use spool::{Spool, Stream};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Longest piece of a line kept in memory; longer lines become several events.
pub const MAX_LINE: usize = 64 * 1024;
/// Most text in one event: even escaped at 6 bytes a byte (`\u00xx`) an event
/// stays well under the 256 KiB an upload request carries.
const MAX_EVENT: usize = 32 * 1024;

struct Pipeline {
    masker: Masker,
    /// Set once the final status is computed: its `log_length` is the
    /// spool's size then, so later lines (the uploader's own) go to the
    /// console only.
    sealed: AtomicBool,
    sink: Mutex<Sink>,
}

/// What the spool side of the pipeline holds between writes.
struct Sink {
    spool: Option<Spool>,
    /// The step whose output this is, masked (it is the `step` of events).
    step: Option<String>,
    /// The spool could not be written at the last flush: the error was
    /// reported once, and is not again until a write succeeds.
    failing: bool,
    /// `SOLSTICE_LOG_LIMIT`: how much job output the spool keeps.
    limit: Option<limit::Limit>,
}

static PIPELINE: OnceLock<Pipeline> = OnceLock::new();

/// Installs the masker and the spool. Until then the runner's own lines go
/// to stderr unmasked, which is only safe because nothing secret is logged
/// before the secrets are known.
pub fn init(masker: Masker, spool: Option<Spool>, limit: Option<limit::Limit>) {
    let _ = PIPELINE.set(Pipeline {
        masker,
        sealed: AtomicBool::new(false),
        sink: Mutex::new(Sink {
            spool,
            step: None,
            failing: false,
            limit,
        }),
    });
}

impl Pipeline {
    fn sink(&self) -> MutexGuard<'_, Sink> {
        // A panic while holding it aborts the runner, so it is never poisoned
        // in practice; if it were, the data is still whole.
        self.sink.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Closes the spool to new events (see `Pipeline::sealed`), after writing
/// the kept tail of a log that outgrew its limit.
pub fn seal() {
    if let Some(p) = PIPELINE.get() {
        let mut sink = p.sink();
        let Sink {
            spool,
            limit,
            failing,
            ..
        } = &mut *sink;
        if let (Some(s), Some(l)) = (spool, limit) {
            l.finish(s);
            // A failure streak was reported already.
            if let (Err(e), false) = (s.flush(), *failing) {
                drop(sink);
                error!("writing the log spool failed: {e}");
            }
        }
        p.sealed.store(true, Ordering::SeqCst);
    }
}

/// Names the step whose output follows (None between steps).
pub fn set_step(step: Option<&str>) {
    if let Some(p) = PIPELINE.get() {
        // The name becomes the `step` field of every event: masked too.
        p.sink().step = step.map(mask);
    }
}

/// Masks `text` with the job's secrets, for messages built outside the pipeline.
pub fn mask(text: &str) -> String {
    String::from_utf8_lossy(&masker(PIPELINE.get()).mask(text.as_bytes())).into_owned()
}

/// Writes one of the runner's own log records: `plain` to the spool,
/// `console` (the coloured form, if any) or `plain` to stderr.
pub fn runner_line(plain: &str, console: Option<&str>) {
    let pipeline = PIPELINE.get();
    // Masked, as one line of output: a `runner` event is one message, its
    // lines ending in `\n` like the job's.
    let line = |text: &str| {
        let mut out = masker(pipeline).mask(text.as_bytes()).into_owned();
        out.push(b'\n');
        out
    };
    let shown = line(console.unwrap_or(plain));
    let _ = std::io::stderr().lock().write_all(&shown);
    let Some(p) = pipeline.filter(|p| !p.sealed.load(Ordering::SeqCst)) else {
        return;
    };
    let masked = if console.is_some() {
        line(plain)
    } else {
        shown
    };
    let mut sink = p.sink();
    let Sink { spool, step, .. } = &mut *sink;
    if let Some(s) = spool {
        append_events(s, Stream::Runner, step.as_deref(), &masked, None);
        // A failure here is the job's output's to report (see `Capture`).
        let _ = s.flush();
    }
}

/// The job's masker; before `init`, one without secrets (nothing secret is
/// logged before the secrets are known).
fn masker(pipeline: Option<&Pipeline>) -> &Masker {
    static NO_MASK: Masker = Masker::new();
    pipeline.map_or(&NO_MASK, |p| &p.masker)
}

/// Appends `text`, the masked bytes of one stream as read together, as
/// events: whole lines (`\n` included), or a piece of a line that the
/// stream's next event continues; at most MAX_EVENT bytes each. `ts` is the
/// time they arrived, when that was not now.
fn append_events(
    s: &mut Spool,
    stream: Stream,
    step: Option<&str>,
    mut text: &[u8],
    ts: Option<&[u8; 24]>,
) {
    while !text.is_empty() {
        let mut end = text.len();
        if end > MAX_EVENT || text.last() != Some(&b'\n') {
            let head = &text[..end.min(MAX_EVENT)];
            end = match head.iter().rposition(|&b| b == b'\n') {
                Some(nl) => nl + 1,
                // A piece of a long line: cut between characters (the
                // pieces come from the splitter whole, so this is safe).
                None if end > MAX_EVENT => mask::char_start(text, MAX_EVENT).max(1),
                None => end,
            };
        }
        let (event, rest) = text.split_at(end);
        match ts {
            Some(ts) => s.append_at(stream, step, event, ts),
            None => s.append(stream, step, event),
        }
        text = rest;
    }
}

/// One of the job's output streams on its way through the pipeline. Each
/// chunk read from the pipe is handled as one batch: one console write, one
/// spool write, so a fast job costs a few syscalls per 64 KiB, not per line.
pub struct Capture {
    stream: Stream,
    splitter: LineSplitter,
    console: Vec<u8>,
}

impl Capture {
    pub fn stdout() -> Capture {
        Capture::new(Stream::Stdout)
    }

    pub fn stderr() -> Capture {
        Capture::new(Stream::Stderr)
    }

    fn new(stream: Stream) -> Capture {
        Capture {
            stream,
            splitter: LineSplitter::new(MAX_LINE),
            console: Vec::new(),
        }
    }

    /// Takes the next chunk of output; `None` is the end of the stream.
    pub fn feed(&mut self, data: Option<&[u8]>) {
        self.handle(Some(data));
    }

    /// Output paused: shows what is safe of an unfinished line.
    pub fn idle(&mut self) {
        self.handle(None);
    }

    /// `Some(chunk)` feeds, `Some(None)` ends the stream, `None` flushes.
    fn handle(&mut self, what: Option<Option<&[u8]>>) {
        let pipeline = PIPELINE.get();
        let masker = masker(pipeline);
        // The batch, masked: the console's bytes and the spool's text.
        let console = &mut self.console;
        console.clear();
        self.splitter
            .process(what, masker, &mut |text| console.extend_from_slice(text));
        if let Some(p) = pipeline.filter(|_| !self.console.is_empty()) {
            let change = {
                let mut sink = p.sink();
                let Sink {
                    spool,
                    step,
                    failing,
                    limit,
                } = &mut *sink;
                spool.as_mut().and_then(|s| {
                    let text = &self.console[..];
                    // Past the limit, what the head has no room for goes to
                    // the kept tail instead of the spool.
                    let n = limit.as_mut().map_or(text.len(), |l| l.head_share(text));
                    let (head, rest) = text.split_at(n);
                    append_events(s, self.stream, step.as_deref(), head, None);
                    if let (Some(l), false) = (limit.as_mut(), rest.is_empty()) {
                        let ts = s.timestamp();
                        l.keep_tail(self.stream, step.as_deref(), rest, &ts);
                    }
                    // Only the start and the end of a failure streak are
                    // reported: a full disk must not add a line per read.
                    match s.flush() {
                        Err(e) if !*failing => {
                            *failing = true;
                            Some(Err(e))
                        }
                        Ok(()) if *failing => {
                            *failing = false;
                            Some(Ok(()))
                        }
                        _ => None,
                    }
                })
            };
            match change {
                Some(Err(e)) => error!(
                    "writing the log spool failed: {e}; events are held in memory up to 16 MiB, then counted as lost (the console keeps the whole log)"
                ),
                Some(Ok(())) => info!("the log spool can be written again"),
                None => {}
            }
        }
        write_console(self.stream, &self.console);
    }
}

fn write_console(stream: Stream, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    // A closed console must not stop the job or the spool: errors are dropped.
    let _ = match stream {
        Stream::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes).and_then(|_| out.flush())
        }
        _ => std::io::stderr().lock().write_all(bytes),
    };
}
