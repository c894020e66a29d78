//! solstice-runner as a library: the binary in `main.rs` is a thin shell over
//! `runner::main`, and the integration tests reach the parsers through here.
//!
//! The data flows top to bottom: job context -> checkout -> plan -> execution
//! -> log pipeline -> report.

// The runner's log macros: like `log`'s, but every call goes through one
// function, `logger::emit`, so a call site costs only its format arguments
// (each `log::info!` site also carries static metadata with relocations).
#[macro_use]
mod logmacros {
    macro_rules! error { ($($t:tt)*) => { $crate::logger::emit(log::Level::Error, format_args!($($t)*)) } }
    macro_rules! warn { ($($t:tt)*) => { $crate::logger::emit(log::Level::Warn, format_args!($($t)*)) } }
    macro_rules! info { ($($t:tt)*) => { $crate::logger::emit(log::Level::Info, format_args!($($t)*)) } }
    macro_rules! debug { ($($t:tt)*) => { $crate::logger::emit(log::Level::Debug, format_args!($($t)*)) } }
}

pub mod context;
pub mod secrets;
pub mod yaml;

pub mod checkout;

pub mod kdl;
pub mod plan;
pub mod workflow;

pub mod exec;
pub mod files;

pub mod logger;
pub mod mask;
pub mod output;
pub mod spool;
pub mod upload;

pub mod error;
pub mod runner;
