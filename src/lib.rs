//! solstice-runner as a library: the binary in `main.rs` is a thin shell over
//! these stages, and the integration tests reach the parsers through here.
//!
//! The data flows top to bottom: job context -> checkout -> plan -> execution
//! -> log pipeline -> report.

pub mod error;
pub mod kdl;
pub mod mask;
pub mod yaml;
pub mod spool;
pub mod upload;
