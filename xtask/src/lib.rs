//! The project's one entry point beyond `cargo build`: installs what a fresh
//! machine lacks (Docker engine, debootstrap, Chromium, ...), builds the base
//! image and the `ha`/`webapp` images, runs the lab's tasks end to end,
//! benchmarks our parts against their peers, and runs the whole test suite.
//!
//! The lab scenarios live here as library code (`lab`) so that `cargo xtask
//! task N` and the integration tests in `xtask/tests/` run the same
//! definition of each task.

pub mod bench;
pub mod charts;
pub mod checks;
pub mod deploy;
pub mod engine;
pub mod images;
pub mod lab;
pub mod prereq;
pub mod project;
pub mod report;
pub mod shot;
