//! Reading the runner's log spool (docs/protocol.md, "Log events"): NDJSON
//! events, one per read of a stream, whose texts joined per stream give back
//! that stream's output exactly, lines with their `\n`.

use miniserde::{json, Deserialize};

#[derive(Deserialize, Debug)]
pub struct Event {
    pub seq: u64,
    pub ts: String,
    pub stream: String,
    pub step: Option<String>,
    pub text: String,
}

/// Every event of a log, in order; panics on a line that is not one.
pub fn events(log: &[u8]) -> Vec<Event> {
    String::from_utf8_lossy(log)
        .lines()
        .map(|l| json::from_str(l).unwrap_or_else(|e| panic!("not an event: {l:?}: {e}")))
        .collect()
}

/// One stream's texts joined: what it printed (masked), byte for byte.
pub fn stream_text(events: &[Event], stream: &str) -> String {
    events
        .iter()
        .filter(|e| e.stream == stream)
        .map(|e| e.text.as_str())
        .collect()
}

/// One stream's lines without their `\n` (an unterminated last line too).
pub fn stream_lines(events: &[Event], stream: &str) -> Vec<String> {
    stream_text(events, stream)
        .split_inclusive('\n')
        .map(|l| l.strip_suffix('\n').unwrap_or(l).to_string())
        .collect()
}
