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
use std::sync::{Mutex, MutexGuard, OnceLock, RwLock};

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
}

/// What the spool side of the pipeline holds between writes, and what the
/// job said through workflow commands.
struct Sink {
    spool: Option<Spool>,
    /// The step whose output this is, masked (it is the `step` of events).
    step: Option<String>,
    /// `::debug::` lines are shown for this step.
    debug: bool,
    /// `::stop-commands::TOKEN` is in force: the token that ends it.
    stopped_by: Option<String>,
    annotations: Annotations,
    /// The spool could not be written at the last flush: the error was
    /// reported once, and is not again until a write succeeds.
    failing: bool,
    /// `SOLSTICE_LOG_LIMIT`: how much job output the spool keeps.
    limit: Option<limit::Limit>,
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

/// Installs the masker and the spool. Until then the runner's own lines go
/// to stderr unmasked, which is only safe because nothing secret is logged
/// before the secrets are known.
pub fn init(masker: Masker, spool: Option<Spool>, limit: Option<limit::Limit>) {
    let _ = PIPELINE.set(Pipeline {
        masker: RwLock::new(masker),
        sealed: AtomicBool::new(false),
        sink: Mutex::new(Sink {
            spool,
            step: None,
            debug: false,
            stopped_by: None,
            annotations: Annotations::default(),
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

/// Names the step whose output follows (None between steps), and whether
/// its `::debug::` lines are shown. A step's commands start afresh.
pub fn set_step(step: Option<&str>, debug: bool) {
    if let Some(p) = PIPELINE.get() {
        // The name becomes the `step` field of every event: masked too.
        let name = step.map(mask);
        let mut sink = p.sink();
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
    let Some(p) = PIPELINE.get().filter(|p| !p.sealed.load(Ordering::SeqCst)) else {
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

/// Appends events of the job to the spool: what the head of a limited log
/// has room for, the rest to the kept tail; reports the start and the end
/// of a failure to write, once each.
fn append_job(sink: &mut Sink, stream: Stream, text: &[u8]) -> Option<std::io::Result<()>> {
    append_job_as(sink, stream, text, false)
}

/// `append_job`; with `whole`, `text` is one event (a command's), even
/// empty or with line breaks inside.
fn append_job_as(
    sink: &mut Sink,
    stream: Stream,
    text: &[u8],
    whole: bool,
) -> Option<std::io::Result<()>> {
    let Sink {
        spool,
        step,
        failing,
        limit,
        ..
    } = sink;
    let s = spool.as_mut()?;
    let n = limit.as_mut().map_or(text.len(), |l| l.head_share(text));
    let (head, rest) = text.split_at(n);
    if whole && n == text.len() {
        s.append(stream, step.as_deref(), text);
    } else {
        append_events(s, stream, step.as_deref(), head, None);
    }
    if let (Some(l), false) = (limit.as_mut(), rest.is_empty()) {
        let ts = s.timestamp();
        l.keep_tail(stream, step.as_deref(), rest, &ts);
    }
    // Only the start and the end of a failure streak are reported: a full
    // disk must not add a line per read.
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
}

fn report_spool(change: Option<std::io::Result<()>>) {
    match change {
        Some(Err(e)) => error!(
            "writing the log spool failed: {e}; events are held in memory up to 16 MiB, then counted as lost (the console keeps the whole log)"
        ),
        Some(Ok(())) => info!("the log spool can be written again"),
        None => {}
    }
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
            let change = append_job_as(&mut p.sink(), stream, text.as_bytes(), true);
            report_spool(change);
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
        with_masker(|m| splitter.process(what, m, &mut |text| console.extend_from_slice(text)));
        if let Some(p) = PIPELINE.get().filter(|_| !self.console.is_empty()) {
            let change = append_job(&mut p.sink(), self.stream, &self.console);
            report_spool(change);
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
        Stream::Stdout | Stream::Summary => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes).and_then(|_| out.flush())
        }
        _ => std::io::stderr().lock().write_all(bytes),
    };
}
