//! The log pipeline: every byte that leaves the runner (the job's stdout and
//! stderr, the runner's own log lines) is cut into lines, masked, written to
//! the console and, when a spool is open, handed to the spool's thread
//! (`writer`), which appends it: what one pipe read brought as one event
//! (docs/protocol.md, "Log events"). The uploader sends the spool to the
//! orchestrator.
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
mod writer;

use mask::{LineSplitter, Masker};
use spool::{Spool, Stream};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::SystemTime;
use writer::{Job, Writer};

/// Longest piece of a line kept in memory; longer lines become several events.
pub const MAX_LINE: usize = 64 * 1024;
/// Most text in one event: even escaped at 6 bytes a byte (`\u00xx`) an event
/// stays well under the 256 KiB an upload request carries.
const MAX_EVENT: usize = 32 * 1024;

struct Pipeline {
    /// The job's secrets; grows when the job registers a value with
    /// `::add-mask::`.
    masker: RwLock<Masker>,
    /// Set once the final status is computed: its `log_length` is the
    /// spool's size then, so later lines (the uploader's own) go to the
    /// console only.
    sealed: AtomicBool,
    sink: Mutex<Sink>,
    /// The spool's thread, when there is a spool.
    writer: Option<Arc<Writer>>,
}

/// What the job said through workflow commands, and the step it runs.
struct Sink {
    /// The step whose output this is, masked (it is the `step` of events).
    step: Option<String>,
    /// `::debug::` lines are shown for this step.
    debug: bool,
    /// `::stop-commands::TOKEN` is in force: the token that ends it.
    stopped_by: Option<String>,
    annotations: Annotations,
}

/// The annotations the job made, capped per level and step and per job.
#[derive(Default)]
pub struct Annotations {
    pub kept: Vec<commands::Annotation>,
    pub dropped: u64,
    /// Per level, how many the current step made.
    step_counts: [usize; 3],
}

/// At most this many annotations of one level per step, and per job.
pub const ANNOTATIONS_PER_LEVEL_AND_STEP: usize = 10;
pub const ANNOTATIONS_PER_JOB: usize = 50;

static PIPELINE: OnceLock<Pipeline> = OnceLock::new();

/// Installs the masker and the spool (`limit`: `SOLSTICE_LOG_LIMIT`, how
/// much job output it keeps), whose thread it starts. Until then the
/// runner's own lines go to stderr unmasked, which is only safe because
/// nothing secret is logged before the secrets are known.
pub fn init(
    masker: Masker,
    spool: Option<Spool>,
    limit: Option<limit::Limit>,
) -> std::io::Result<()> {
    let writer = match spool {
        Some(s) => Some(Writer::start(s, limit)?),
        None => None,
    };
    let _ = PIPELINE.set(Pipeline {
        masker: RwLock::new(masker),
        sealed: AtomicBool::new(false),
        sink: Mutex::new(Sink {
            step: None,
            debug: false,
            stopped_by: None,
            annotations: Annotations::default(),
        }),
        writer,
    });
    Ok(())
}

impl Pipeline {
    fn sink(&self) -> MutexGuard<'_, Sink> {
        // A panic while holding it aborts the runner, so it is never poisoned
        // in practice; if it were, the data is still whole.
        self.sink.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `text` to the spool's thread as it arrived now (the job's
    /// output waits while the queue is full, the runner's lines never), and
    /// returns an empty buffer for the next; nothing after the seal.
    fn send(&self, stream: Stream, text: Vec<u8>, whole: bool) -> Vec<u8> {
        match self
            .writer
            .as_ref()
            .filter(|_| !self.sealed.load(Ordering::SeqCst))
        {
            Some(w) => {
                let ms = spool::millis(SystemTime::now());
                let job = Job::Text {
                    stream,
                    ms,
                    text,
                    whole,
                };
                w.send(job, stream != Stream::Runner)
            }
            None => text,
        }
    }
}

/// Starts one of the runner's own threads (the spool's, the uploader's):
/// one function for both, so the binary holds std's spawning code once.
pub(crate) fn spawn(f: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
    std::thread::Builder::new().spawn(f).map(drop)
}

/// Runs `f` with the job's masker; before `init`, one without secrets
/// (nothing secret is logged before the secrets are known).
fn with_masker<R>(f: impl FnOnce(&Masker) -> R) -> R {
    static NO_MASK: Masker = Masker::new();
    match PIPELINE.get() {
        Some(p) => f(&p.masker.read().unwrap_or_else(|e| e.into_inner())),
        None => f(&NO_MASK),
    }
}

/// Registers a value the job asked to have masked (`::add-mask::`), with
/// the forms every secret is masked in; a value too short is refused with
/// a warning, as for secrets.
pub fn add_mask(value: &str) {
    let Some(p) = PIPELINE.get() else { return };
    let added = p
        .masker
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .add(value.as_bytes());
    if let Err(reason) = added {
        warn!("a value registered with ::add-mask:: is not masked: {reason}");
    }
}

/// Closes the spool to new events (see `Pipeline::sealed`) once everything
/// handed over before is written, with the kept tail of a log that outgrew
/// its limit. Called again, it does nothing more.
pub fn seal() {
    if let Some(p) = PIPELINE.get() {
        if let Some(w) = &p.writer {
            w.seal();
        }
        p.sealed.store(true, Ordering::SeqCst);
    }
}

/// Names the step whose output follows (None between steps), and whether
/// its `::debug::` lines are shown. A step's commands start afresh.
pub fn set_step(step: Option<&str>, debug: bool) {
    if let Some(p) = PIPELINE.get() {
        // The name becomes the `step` field of every event: masked too.
        let name = step.map(mask);
        let mut sink = p.sink();
        if let Some(w) = &p.writer {
            // Through the queue, so it applies to the output that follows.
            w.send(Job::Step(name.clone()), false);
        }
        sink.step = name;
        sink.debug = debug;
        sink.stopped_by = None;
        sink.annotations.step_counts = [0; 3];
    }
}

/// The step that runs now, masked (for the heartbeat's status).
pub fn current_step() -> Option<String> {
    PIPELINE.get().and_then(|p| p.sink().step.clone())
}

/// The annotations the job made so far, and how many were dropped.
pub fn annotations() -> (Vec<commands::Annotation>, u64) {
    match PIPELINE.get() {
        Some(p) => {
            let sink = p.sink();
            (sink.annotations.kept.clone(), sink.annotations.dropped)
        }
        None => (Vec::new(), 0),
    }
}

/// Masks `text` with the job's secrets, for messages built outside the pipeline.
pub fn mask(text: &str) -> String {
    with_masker(|m| String::from_utf8_lossy(&m.mask(text.as_bytes())).into_owned())
}

/// Writes one of the runner's own log records: `plain` to the spool,
/// `console` (the coloured form, if any) or `plain` to stderr.
pub fn runner_line(plain: &str, console: Option<&str>) {
    // Masked, as one line of output: a `runner` event is one message, its
    // lines ending in `\n` like the job's.
    let line = |text: &str| {
        let mut out = with_masker(|m| m.mask(text.as_bytes()).into_owned());
        out.push(b'\n');
        out
    };
    let shown = line(console.unwrap_or(plain));
    let _ = std::io::stderr().lock().write_all(&shown);
    let Some(p) = PIPELINE.get() else { return };
    let masked = if console.is_some() {
        line(plain)
    } else {
        shown
    };
    p.send(Stream::Runner, masked, false);
}

/// Appends `text`, the masked bytes of one stream as read together, as
/// events: whole lines (`\n` included), or a piece of a line that the
/// stream's next event continues; at most MAX_EVENT bytes each. `ts` is the
/// time they arrived.
fn append_events(
    s: &mut Spool,
    stream: Stream,
    step: Option<&str>,
    mut text: &[u8],
    ts: &[u8; 24],
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
        s.append_at(stream, step, event, ts);
        text = rest;
    }
}

/// One of the job's output streams on its way through the pipeline. Each
/// chunk read from the pipe is handled as one batch: one console write, one
/// spool write, so a fast job costs a few syscalls per 64 KiB, not per line.
///
/// A line that starts with `::` may be a workflow command: it is held until
/// it is complete (or too long to be one), then acted on before it is
/// masked, so a value it registers with `::add-mask::` never shows.
pub struct Capture {
    stream: Stream,
    splitter: LineSplitter,
    console: Vec<u8>,
    /// The next byte starts a line.
    line_start: bool,
    /// A line that may be a command, held until its end.
    held: Option<Vec<u8>>,
}

impl Capture {
    pub fn stdout() -> Capture {
        Capture::new(Stream::Stdout)
    }

    pub fn stderr() -> Capture {
        Capture::new(Stream::Stderr)
    }

    /// The step summary's text, which has no commands.
    pub fn summary() -> Capture {
        let mut c = Capture::new(Stream::Summary);
        c.line_start = false;
        c
    }

    fn new(stream: Stream) -> Capture {
        Capture {
            stream,
            splitter: LineSplitter::new(MAX_LINE),
            console: Vec::new(),
            line_start: true,
            held: None,
        }
    }

    /// Takes the next chunk of output; `None` is the end of the stream.
    pub fn feed(&mut self, data: Option<&[u8]>) {
        let Some(mut data) = data else {
            if let Some(line) = self.held.take() {
                self.held_line(&line);
            }
            self.handle(Some(None));
            return;
        };
        // The summary never holds commands.
        if self.stream == Stream::Summary {
            self.handle(Some(Some(data)));
            return;
        }
        while !data.is_empty() {
            if let Some(held) = &mut self.held {
                let nl = bytes::find_newline(data);
                let end = nl.map_or(data.len(), |n| n + 1);
                held.extend_from_slice(&data[..end]);
                data = &data[end..];
                // Not a command after all: `:x`, or longer than any command.
                let not = held.get(1).is_some_and(|&b| b != b':') || held.len() > MAX_LINE;
                if nl.is_some() || not {
                    let line = self.held.take().unwrap_or_default();
                    if nl.is_some() {
                        self.held_line(&line);
                    } else {
                        self.handle(Some(Some(&line)));
                    }
                    self.line_start = nl.is_some();
                }
                continue;
            }
            // The next line that starts with ':'.
            let at = if self.line_start && data[0] == b':' {
                Some(0)
            } else {
                bytes::find_command(data)
            };
            match at {
                Some(i) => {
                    if i > 0 {
                        self.handle(Some(Some(&data[..i])));
                    }
                    self.held = Some(Vec::new());
                    data = &data[i..];
                }
                None => {
                    self.line_start = data.last() == Some(&b'\n');
                    self.handle(Some(Some(data)));
                    return;
                }
            }
        }
    }

    /// Output paused: shows what is safe of an unfinished line (a held
    /// command line waits for its end).
    pub fn idle(&mut self) {
        self.handle(None);
    }

    /// A complete line that started with `:` (its `\n` included, unless the
    /// stream ended without one): a command is acted on, anything else is
    /// ordinary output.
    fn held_line(&mut self, line: &[u8]) {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let Some(p) = PIPELINE.get() else {
            return self.handle(Some(Some(line)));
        };
        let mut sink = p.sink();
        if let Some(token) = &sink.stopped_by {
            if commands::resumes(text, token) {
                sink.stopped_by = None;
                drop(sink);
                self.show(line);
            } else {
                drop(sink);
                self.handle(Some(Some(line)));
            }
            return;
        }
        let Some(cmd) = commands::parse(text) else {
            drop(sink);
            return self.handle(Some(Some(line)));
        };
        use commands::Command;
        let event = match cmd {
            Command::AddMask(value) => {
                drop(sink);
                add_mask(&value);
                None
            }
            Command::StopCommands(token) => {
                sink.stopped_by = Some(token);
                drop(sink);
                None
            }
            Command::Group(title) => {
                drop(sink);
                Some((Stream::Group, mask(&title)))
            }
            Command::EndGroup => {
                drop(sink);
                Some((Stream::EndGroup, String::new()))
            }
            Command::Debug(message) => {
                let shown = sink.debug;
                drop(sink);
                if !shown {
                    // Without SOLSTICE_STEP_DEBUG the line appears nowhere.
                    return;
                }
                Some((Stream::Debug, mask(&message)))
            }
            Command::Annotation(mut a) => {
                a.message = mask(&a.message);
                a.file = a.file.map(|f| mask(&f));
                a.title = a.title.map(|t| mask(&t));
                let level = a.level.unwrap_or(commands::Level::Notice);
                let stream = match level {
                    commands::Level::Error => Stream::Error,
                    commands::Level::Warning => Stream::Warning,
                    commands::Level::Notice => Stream::Notice,
                };
                let text = a.message.clone();
                a.step = sink.step.clone().unwrap_or_default();
                let n = &mut sink.annotations;
                let count = &mut n.step_counts[level as usize];
                if *count < ANNOTATIONS_PER_LEVEL_AND_STEP && n.kept.len() < ANNOTATIONS_PER_JOB {
                    *count += 1;
                    n.kept.push(a);
                } else {
                    n.dropped += 1;
                }
                drop(sink);
                Some((stream, text))
            }
        };
        self.show(line);
        if let Some((stream, text)) = event {
            p.send(stream, text.into_bytes(), true);
        }
    }

    /// A command line on the console, as printed but masked.
    fn show(&mut self, line: &[u8]) {
        let masked = with_masker(|m| m.mask(line).into_owned());
        write_console(self.stream, &masked);
    }

    /// `Some(chunk)` feeds, `Some(None)` ends the stream, `None` flushes.
    fn handle(&mut self, what: Option<Option<&[u8]>>) {
        // The batch, masked: the console's bytes and the spool's text.
        let console = &mut self.console;
        console.clear();
        let splitter = &mut self.splitter;
        with_masker(|m| splitter.process(what, m, console));
        write_console(self.stream, &self.console);
        if let Some(p) = PIPELINE.get().filter(|_| !self.console.is_empty()) {
            // The buffer goes to the spool's thread; one it emptied comes back.
            let text = std::mem::take(&mut self.console);
            self.console = p.send(self.stream, text, false);
        }
    }
}

fn write_console(stream: Stream, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    // A closed console must not stop the job or the spool: errors are dropped.
    let _ = match stream {
        Stream::Stdout | Stream::Summary => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes).and_then(|_| out.flush())
        }
        _ => std::io::stderr().lock().write_all(bytes),
    };
}
