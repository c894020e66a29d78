//! solstice-runner as a library: the binary in `main.rs` is a thin shell over
//! `runner::main`, and the integration tests reach the parsers through here.
//!
//! The modules follow the data, top to bottom: the job context (`config`),
//! the checkout, the plan (job.sh or the workflow), running it (`run`), the
//! log pipeline (`log`: capture, mask, console, spool, upload) and the final
//! report. `runner` calls each stage in that order; no stage calls back up.

// Unsafe code lives in two modules only, `sys` and `logs::bytes`, each
// block with a SAFETY comment; everywhere else it is refused.
#![deny(unsafe_code)]

// The runner's log macros: like `log`'s, but every call goes through one
// function, `log::logger::emit`, so a call site costs only its format
// arguments (each `log::info!` site also carries static metadata).
#[macro_use]
mod logmacros {
    macro_rules! error { ($($t:tt)*) => { $crate::logs::logger::emit(::log::Level::Error, format_args!($($t)*)) } }
    macro_rules! warn { ($($t:tt)*) => { $crate::logs::logger::emit(::log::Level::Warn, format_args!($($t)*)) } }
    macro_rules! info { ($($t:tt)*) => { $crate::logs::logger::emit(::log::Level::Info, format_args!($($t)*)) } }
    macro_rules! debug { ($($t:tt)*) => { $crate::logs::logger::emit(::log::Level::Debug, format_args!($($t)*)) } }
}

pub mod config;

pub mod checkout;

pub mod plan;

pub mod run;

pub mod logs;

pub mod files;

pub mod report;

pub mod http;

pub mod error;
pub mod runner;

pub mod sys;
