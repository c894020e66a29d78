//! The log pipeline: every line that leaves the runner (the job's stdout and
//! stderr, the runner's own log lines) is cut into lines, masked, written to
//! the console and, when a spool is open, appended to it: what one pipe read
//! brought as one event (docs/protocol.md, "Log events").
//!
//! Console stdout and stderr stay plain text, so the serial console reads like
//! a terminal; the spool carries the structured events the uploader sends.

use crate::exec;
use crate::mask::{LineSplitter, Masker};
use crate::spool::{Spool, Stream};
use std::io::Write;
use std::sync::{Mutex, OnceLock};

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
    sealed: std::sync::atomic::AtomicBool,
    spool: Option<Mutex<Spool>>,
    step: Mutex<Option<String>>,
}

static PIPELINE: OnceLock<Pipeline> = OnceLock::new();

/// Installs the masker and the spool. Until then the runner's own lines go
/// to stderr unmasked, which is only safe because nothing secret is logged
/// before the secrets are known.
pub fn init(masker: Masker, spool: Option<Spool>) {
    let _ = PIPELINE.set(Pipeline {
        masker,
        sealed: Default::default(),
        spool: spool.map(Mutex::new),
        step: Mutex::new(None),
    });
}

/// Closes the spool to new events; see `Pipeline::sealed`.
pub fn seal() {
    if let Some(p) = PIPELINE.get() {
        p.sealed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Names the step whose output follows (None between steps).
pub fn set_step(step: Option<&str>) {
    if let Some(p) = PIPELINE.get() {
        if let Ok(mut s) = p.step.lock() {
            // The name becomes the `step` field of every event: mask it too.
            *s = step.map(mask);
        }
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
    let Some(p) = pipeline else { return };
    let sealed = p.sealed.load(std::sync::atomic::Ordering::SeqCst);
    if let Some(spool) = p.spool.as_ref().filter(|_| !sealed) {
        let masked = if console.is_some() {
            line(plain)
        } else {
            shown
        };
        if let (Ok(mut s), Ok(step)) = (spool.lock(), p.step.lock()) {
            append_events(&mut s, Stream::Runner, step.as_deref(), &masked);
            let _ = s.flush();
        }
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
/// stream's next event continues; at most MAX_EVENT bytes each.
fn append_events(s: &mut Spool, stream: Stream, step: Option<&str>, mut text: &[u8]) {
    while !text.is_empty() {
        let mut end = text.len();
        if end > MAX_EVENT || text.last() != Some(&b'\n') {
            let head = &text[..end.min(MAX_EVENT)];
            end = match head.iter().rposition(|&b| b == b'\n') {
                Some(nl) => nl + 1,
                // A piece of a long line: cut between characters (the
                // pieces come from the splitter whole, so this is safe).
                None if end > MAX_EVENT => crate::mask::char_start(text, MAX_EVENT).max(1),
                None => end,
            };
        }
        let (event, rest) = text.split_at(end);
        s.append(stream, step, event);
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
    pub fn new(stream: Stream) -> Capture {
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
            let flush_error = match (p.spool.as_ref().map(Mutex::lock), p.step.lock()) {
                (Some(Ok(mut s)), Ok(step)) => {
                    append_events(&mut s, self.stream, step.as_deref(), &self.console);
                    s.flush().err()
                }
                _ => None,
            };
            if let Some(e) = flush_error {
                error!("writing the log spool failed: {e}");
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

/// Runs a job process with its output streamed through the pipeline.
pub fn run_job(spec: &exec::Spec, limits: exec::Limits) -> std::io::Result<exec::End> {
    let mut captures = [Capture::new(Stream::Stdout), Capture::new(Stream::Stderr)];
    exec::run(spec, limits, &mut |event| match event {
        exec::Output::Data(i, data) => captures.get_mut(i).map_or((), |c| c.feed(Some(data))),
        exec::Output::End(i) => captures.get_mut(i).map_or((), |c| c.feed(None)),
        exec::Output::Idle => captures.iter_mut().for_each(Capture::idle),
    })
}
