//! The runner's own log lines: a `log` facade backend that writes one plain
//! line per record (`<UTC time> <LEVEL> <message>`) through the log pipeline,
//! so the lines are masked, reach stderr and, when a spool is open, become
//! `runner` events like any other output.

use crate::output;
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

struct Logger;

static LOGGER: Logger = Logger;

/// Whether stderr is a terminal, decided once by `init`.
static COLOUR: AtomicBool = AtomicBool::new(false);

/// Installs the logger. The level comes from `SOLSTICE_LOG` (error, warn,
/// info, debug, trace; default info); an unknown value is reported once and
/// info is used, since a typo must not silence the log at 3 a.m.
pub fn init() {
    let raw = std::env::var("SOLSTICE_LOG").unwrap_or_default();
    let (level, bad) = match raw.trim().to_ascii_lowercase().as_str() {
        "" | "info" => (LevelFilter::Info, false),
        "error" => (LevelFilter::Error, false),
        "warn" | "warning" => (LevelFilter::Warn, false),
        "debug" => (LevelFilter::Debug, false),
        "trace" => (LevelFilter::Trace, false),
        "off" => (LevelFilter::Off, false),
        _ => (LevelFilter::Info, true),
    };
    // SAFETY: isatty only inspects the descriptor.
    COLOUR.store(unsafe { libc::isatty(2) } == 1, Relaxed);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
    if bad {
        warn!("SOLSTICE_LOG={raw:?} is not one of error, warn, info, debug, trace; using info");
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let (name, colour) = match record.level() {
            Level::Error => ("ERROR", "31"),
            Level::Warn => ("WARN ", "33"),
            Level::Info => ("INFO ", "32"),
            Level::Debug => ("DEBUG", "36"),
            Level::Trace => ("TRACE", "90"),
        };
        let ts = crate::spool::rfc3339_millis(std::time::SystemTime::now());
        let plain = format!("{ts} {name} {}", record.args());
        let console = COLOUR.load(Relaxed).then(|| {
            format!(
                "\x1b[2m{ts}\x1b[0m \x1b[{colour}m{name}\x1b[0m {}",
                record.args()
            )
        });
        output::runner_line(&plain, console.as_deref());
    }

    fn flush(&self) {}
}

/// Every log record of the runner goes through here (see the macros in
/// lib.rs); the level check happens before anything is formatted.
#[inline(never)]
pub fn emit(level: Level, args: std::fmt::Arguments) {
    log::log!(level, "{args}");
}
