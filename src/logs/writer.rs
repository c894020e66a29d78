//! The spool's own thread: the job's output, masked, is handed over here in
//! the buffer it was masked into, and this thread turns it into NDJSON
//! events and writes them, so escaping and the file write are off the path
//! from the job's pipe to the console. The queue between the two is bounded
//! in bytes (the job waits when the spool falls behind, as it did when the
//! spool was written in line), keeps the order in which everything was
//! handed over, and gives emptied buffers back for reuse, so a steady flow
//! allocates nothing.

use super::limit::Limit;
use super::spool::{self, Spool, Stream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Most text waiting for the spool thread: a few pipe reads.
const MAX_QUEUED: usize = 128 * 1024;
/// Emptied buffers kept for reuse, and the largest kept: more than can be
/// in the queue at once, so that a steady flow never drops one to allocate
/// another (on musl each large allocation is a system call pair).
const FREE_BUFFERS: usize = 4;
const MAX_FREE_CAPACITY: usize = 256 * 1024;
/// The spool thread writes its buffer out when it holds this much.
const WRITE_AT: usize = 128 * 1024;

/// What the spool thread is asked to do, in order.
pub enum Job {
    /// Events of `text`, which arrived at `ms` (Unix milliseconds). `whole`:
    /// one event, even empty or with line breaks inside (a command's).
    Text {
        stream: Stream,
        ms: i64,
        text: Vec<u8>,
        whole: bool,
    },
    /// The step whose output follows.
    Step(Option<String>),
    /// Write the kept tail of a limited log and everything before this; what
    /// comes after it is not written.
    Seal,
}

#[derive(Default)]
struct State {
    jobs: Vec<Job>,
    /// Text bytes handed over and not yet written (queued or in hand).
    bytes: usize,
    free: Vec<Vec<u8>>,
    /// The spool thread waits for jobs.
    idle: bool,
    /// A sender waits for room or for the seal.
    waiting: bool,
    /// Seals asked for, and done.
    seals_asked: u64,
    seals_done: u64,
    /// The most `bytes` ever was (for the tests).
    #[cfg(test)]
    peak: usize,
}

/// The sending side, shared by every thread that logs.
pub struct Writer {
    state: Mutex<State>,
    /// Signals the spool thread: jobs are queued.
    work: Condvar,
    /// Signals senders: room was made, or a seal done.
    room: Condvar,
}

impl Writer {
    /// Starts the spool thread, which owns `spool` and `limit` from now on.
    pub fn start(spool: Spool, limit: Option<Limit>) -> std::io::Result<Arc<Writer>> {
        let w = Arc::new(Writer {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            room: Condvar::new(),
        });
        let shared = w.clone();
        super::spawn(Box::new(move || shared.run(spool, limit)))?;
        Ok(w)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The thread panicking aborts the runner, so it is never poisoned
        // in practice; if it were, the queue is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, cv: &Condvar, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        cv.wait(st).unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job`. With `bounded` (the job's output) it first waits while
    /// the queue is full, and returns an empty buffer for the next text,
    /// one the spool thread is done with if there is one; the runner's own
    /// lines never wait, so the spool thread may log through here too.
    pub fn send(&self, job: Job, bounded: bool) -> Vec<u8> {
        let len = match &job {
            Job::Text { text, .. } => text.len(),
            _ => 0,
        };
        let mut st = self.lock();
        while bounded && st.bytes >= MAX_QUEUED {
            st.waiting = true;
            st = self.wait(&self.room, st);
        }
        st.bytes += len;
        #[cfg(test)]
        {
            st.peak = st.peak.max(st.bytes);
        }
        self.push(&mut st, job);
        match bounded {
            true => st.free.pop().unwrap_or_default(),
            false => Vec::new(),
        }
    }

    fn push(&self, st: &mut State, job: Job) {
        st.jobs.push(job);
        // A notify is a system call: only when the thread sleeps.
        if st.idle {
            st.idle = false;
            self.work.notify_one();
        }
    }

    /// Returns once everything sent before is in the spool file, with the
    /// tail of a limited log; what is sent later is dropped.
    pub fn seal(&self) {
        let mut st = self.lock();
        st.seals_asked += 1;
        let ticket = st.seals_asked;
        self.push(&mut st, Job::Seal);
        while st.seals_done < ticket {
            st.waiting = true;
            st = self.wait(&self.room, st);
        }
    }

    /// The spool thread: takes what is queued, all of it at once, turns it
    /// into events, writes them, gives the buffers back; sleeps when there
    /// is nothing to do.
    fn run(&self, mut spool: Spool, mut limit: Option<Limit>) {
        let mut step: Option<String> = None;
        let mut failing = false;
        let mut sealed = false;
        let mut batch = Vec::new();
        let mut emptied = Vec::new();
        loop {
            {
                let mut st = self.lock();
                while st.jobs.is_empty() {
                    st.idle = true;
                    st = self.wait(&self.work, st);
                }
                std::mem::swap(&mut st.jobs, &mut batch);
            }
            let mut done = 0;
            let mut seals = 0;
            for job in batch.drain(..) {
                match job {
                    Job::Text {
                        stream,
                        ms,
                        mut text,
                        whole,
                    } => {
                        if !sealed {
                            let ts = spool::format_millis(ms);
                            append(
                                &mut spool,
                                &mut limit,
                                step.as_deref(),
                                stream,
                                &text,
                                whole,
                                &ts,
                            );
                            if spool.pending() >= WRITE_AT {
                                failing = flushed(&mut spool, failing);
                            }
                        }
                        done += text.len();
                        if text.capacity() <= MAX_FREE_CAPACITY {
                            text.clear();
                            emptied.push(text);
                        }
                    }
                    Job::Step(s) => step = s,
                    Job::Seal => {
                        if !sealed {
                            if let Some(l) = &mut limit {
                                l.finish(&mut spool);
                            }
                            sealed = true;
                        }
                        failing = flushed(&mut spool, failing);
                        seals += 1;
                    }
                }
            }
            failing = flushed(&mut spool, failing);
            let mut st = self.lock();
            st.bytes -= done;
            st.seals_done += seals;
            while st.free.len() < FREE_BUFFERS {
                let Some(b) = emptied.pop() else { break };
                st.free.push(b);
            }
            emptied.clear();
            if st.waiting {
                st.waiting = false;
                self.room.notify_all();
            }
        }
    }
}

/// Appends one piece of text as events: a job's output to what the head of
/// a limited log has room for, the rest to the kept tail; the runner's own
/// lines are never cut.
fn append(
    s: &mut Spool,
    limit: &mut Option<Limit>,
    step: Option<&str>,
    stream: Stream,
    text: &[u8],
    whole: bool,
    ts: &[u8; 24],
) {
    let limit = limit.as_mut().filter(|_| stream != Stream::Runner);
    let (head, rest) = match limit {
        Some(l) => {
            let n = l.head_share(text);
            if n < text.len() {
                l.keep_tail(stream, step, &text[n..], ts);
            }
            text.split_at(n)
        }
        None => (text, &[][..]),
    };
    if whole && rest.is_empty() {
        s.append_at(stream, step, text, ts);
    } else {
        super::append_events(s, stream, step, head, ts);
    }
}

/// Writes the spool's buffer; reports the start and the end of a failure to
/// write, once each (a full disk must not add a line per read). Returns
/// whether writing fails now.
fn flushed(s: &mut Spool, failing: bool) -> bool {
    match s.flush() {
        Err(e) if !failing => {
            error!(
                "writing the log spool failed: {e}; events are held in memory up to 16 MiB, then counted as lost (the console keeps the whole log)"
            );
            true
        }
        Ok(()) if failing => {
            info!("the log spool can be written again");
            false
        }
        r => r.is_err(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("solstice-writer-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn text(stream: Stream, text: Vec<u8>) -> Job {
        Job::Text {
            stream,
            ms: 0,
            text,
            whole: false,
        }
    }

    #[derive(miniserde::Deserialize)]
    struct Event {
        seq: u64,
        stream: String,
        step: Option<String>,
        text: String,
    }

    /// The events of NDJSON `lines`, checking `seq` on the way.
    fn events(lines: &str) -> Vec<Event> {
        let mut out = Vec::new();
        for (i, line) in lines.lines().enumerate() {
            let e: Event = miniserde::json::from_str(line).unwrap();
            assert_eq!(e.seq, i as u64, "seq of {line}");
            out.push(e);
        }
        out
    }

    #[test]
    fn order_is_kept_across_threads_and_nothing_is_lost_at_the_seal() {
        let dir = temp("order");
        let path = dir.join("spool.ndjson");
        let w = Writer::start(Spool::create(&path).unwrap(), None).unwrap();
        w.send(Job::Step(Some("build".into())), false);
        // Two threads send numbered lines, one as the job's output (bounded)
        // and one as the runner's: each one's own order must hold, and the
        // step sent before them applies to all.
        std::thread::scope(|s| {
            for (stream, name) in [(Stream::Stdout, "out"), (Stream::Runner, "run")] {
                let w = &w;
                s.spawn(move || {
                    let mut b = Vec::new();
                    for i in 0..20_000 {
                        b.extend_from_slice(format!("{name} {i}\n").as_bytes());
                        b = w.send(text(stream, b), stream != Stream::Runner);
                    }
                });
            }
        });
        w.seal();
        // After the seal nothing more is written.
        w.send(text(Stream::Stdout, b"late\n".to_vec()), true);
        w.seal();
        let ev = events(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(ev.len(), 40_000);
        for (stream, name) in [("stdout", "out"), ("runner", "run")] {
            let mine: Vec<&str> = ev
                .iter()
                .filter(|e| e.stream == stream)
                .map(|e| e.text.as_str())
                .collect();
            let want: Vec<String> = (0..20_000).map(|i| format!("{name} {i}\n")).collect();
            assert_eq!(mine, want);
        }
        assert!(ev.iter().all(|e| e.step.as_deref() == Some("build")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Reads the FIFO at `path` slowly until it has brought `want` bytes of
    /// event text; returns the stdout text.
    fn slow_reader(path: &Path, want: usize) -> Vec<u8> {
        use std::io::{BufRead, BufReader};
        let mut r = BufReader::with_capacity(4096, std::fs::File::open(path).unwrap());
        let (mut got, mut line, mut seq) = (Vec::new(), String::new(), 0);
        while got.len() < want {
            line.clear();
            assert!(r.read_line(&mut line).unwrap() > 0, "the spool ended early");
            let e: Event = miniserde::json::from_str(&line).unwrap();
            assert_eq!((e.seq, e.stream.as_str()), (seq, "stdout"));
            seq += 1;
            got.extend_from_slice(e.text.as_bytes());
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        got
    }

    #[test]
    fn a_fast_sender_waits_for_a_slow_spool_and_nothing_is_lost() {
        // The spool is a FIFO read slowly: the queue must stay bounded while
        // a sender pushes 8 MiB as fast as it can, and all of it arrives.
        let dir = temp("bound");
        let path = dir.join("spool.fifo");
        let made = std::process::Command::new("mkfifo").arg(&path).status();
        assert!(made.unwrap().success());
        let chunk: Vec<u8> = (0..655u32)
            .flat_map(|i| format!("{i:099}\n").into_bytes())
            .collect();
        let n = (8 << 20) / chunk.len();
        let reader = {
            let path = path.clone();
            let want = n * chunk.len();
            std::thread::spawn(move || slow_reader(&path, want))
        };
        let w = Writer::start(Spool::create(&path).unwrap(), None).unwrap();
        let mut b = Vec::new();
        for _ in 0..n {
            b.extend_from_slice(&chunk);
            b = w.send(text(Stream::Stdout, b), true);
        }
        w.seal();
        let peak = w.lock().peak;
        assert!(
            peak <= MAX_QUEUED + chunk.len(),
            "{peak} bytes were queued at once"
        );
        let got = reader.join().unwrap();
        assert_eq!(got.len(), n * chunk.len());
        assert!(
            got.chunks(chunk.len()).all(|c| c == chunk),
            "the text differs"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
