#![doc = include_str!("../README.md")]
//!
//! # Modules
//!
//! - [`machine`]: every decision, as a pure state machine (no I/O, no clock);
//! - [`runtime`]: the poll loop around it, the only place doing syscalls for PID 1;
//! - [`control`]: the control point format and the `s6-svc` / `s6-svstat` clients;
//! - [`contenv`]: environment capture and `with-contenv`;
//! - [`config`]: paths under `INIT_ROOT` and the environment variables.

pub mod config;
pub mod contenv;
pub mod control;
pub mod machine;
pub mod runtime;
