//! Shared test support: real git servers on loopback, a real orchestrator,
//! and a way to run the runner binary with deadlines.
//!
//! - `delivery`: the one delivery check, and a runner's reporting settings.
//! - `events`: reading the runner's NDJSON log spool.
//! - `files`: tools, tree snapshots and raw tar archives for `files_*`.
//! - `forms`: a secret's encoded forms, derived apart from the masker.
//! - `git`: repositories, `git daemon` and an HTTP git server on loopback.
//! - `job`: the one job fixture: a repository, a scratch area, a runner.
//! - `orchestrator`: the test orchestrator, with faults on purpose.
//! - `rng`: reproducible randomness (xorshift64).
//! - `runner`: the runner binary with a clean environment and deadlines.
//! - `tmp`: temporary directories and loopback ports.
#![allow(dead_code)]

pub mod delivery;
pub mod events;
pub mod files;
pub mod forms;
pub mod git;
pub mod job;
pub mod orchestrator;
pub mod rng;
pub mod runner;
pub mod tmp;
