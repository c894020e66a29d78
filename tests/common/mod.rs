//! Shared test support: real git servers on loopback, a real orchestrator,
//! and a way to run the runner binary with deadlines.
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
