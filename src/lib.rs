//! solstice-runner as a library: the binary in `main.rs` is a thin shell over
//! `runner::main`, and the integration tests reach the parsers through here.
//!
//! The data flows top to bottom: job context -> checkout -> plan -> execution
//! -> log pipeline -> report.

pub mod context;
pub mod secrets;
pub mod yaml;

pub mod checkout;

pub mod kdl;
pub mod plan;
pub mod workflow;

pub mod exec;

pub mod logger;
pub mod mask;
pub mod output;
pub mod spool;
pub mod upload;

pub mod error;
pub mod runner;
