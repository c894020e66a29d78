//! The runner's own log lines: a `log` facade backend that writes one plain
//! line per record (`<UTC time> <LEVEL> <message>`) through the log pipeline,
//! so the lines are masked, reach stderr and, when a spool is open, become
//! `runner` events like any other output.

use crate::config::LogLevel;
use crate::logs::runner_line;
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

struct Logger;

static LOGGER: Logger = Logger;

/// Whether stderr is a terminal, decided once by `init`.
static COLOUR: AtomicBool = AtomicBool::new(false);

/// Installs the logger at `level`. Called first thing, so that even an
/// error in the job context is reported in the log's format.
pub fn init(level: LogLevel) {
    use std::io::IsTerminal;
    COLOUR.store(std::io::stderr().is_terminal(), Relaxed);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(match level {
            LogLevel::Off => LevelFilter::Off,
            LogLevel::Error => LevelFilter::Error,
            LogLevel::Warn => LevelFilter::Warn,
            LogLevel::Info => LevelFilter::Info,
            LogLevel::Debug => LevelFilter::Debug,
            LogLevel::Trace => LevelFilter::Trace,
        });
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
        let ts = crate::logs::spool::rfc3339_millis(std::time::SystemTime::now());
        let plain = format!("{ts} {name} {}", record.args());
        let console = COLOUR.load(Relaxed).then(|| {
            format!(
                "\x1b[2m{ts}\x1b[0m \x1b[{colour}m{name}\x1b[0m {}",
                record.args()
            )
        });
        runner_line(&plain, console.as_deref());
    }

    fn flush(&self) {}
}

/// Every log record of the runner goes through here (see the macros in
/// lib.rs); the level check happens before anything is formatted.
#[inline(never)]
pub fn emit(level: Level, args: std::fmt::Arguments) {
    log::log!(level, "{args}");
}
