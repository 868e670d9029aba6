//! The test kit: what the workspace's integration tests share, so that each
//! crate's tests hold only what is theirs. Dev-only (`publish = false`,
//! never a normal dependency).
//!
//! - [`free_port`] and [`temp_dir`]: loopback ports and scratch dirs;
//! - [`eventually`] / [`eventually_blocking`]: poll a condition up to a
//!   deadline instead of sleeping a fixed time;
//! - [`ChildGuard`]: a child process killed and reaped on drop;
//! - [`SerfAgent`]: the real `serf agent` 0.9.4 on loopback;
//! - [`http`]: tiny HTTP backends, one-request clients and a load generator;
//! - [`RedisServer`]: a real `redis-server` on loopback;
//! - [`CountingAlloc`]: a global allocator that counts live and peak bytes.

mod alloc;
pub mod http;
mod ports;
mod process;
mod redis;
mod serf;
mod wait;

pub use alloc::CountingAlloc;
pub use nix::sys::signal::Signal;
pub use ports::free_port;
pub use process::ChildGuard;
pub use redis::RedisServer;
pub use serf::{SerfAgent, SerfAgentBuilder, SerfMember, SERF};
pub use tempfile::TempDir;
pub use wait::{eventually, eventually_blocking, eventually_blocking_explained, DEADLINE};

use std::path::Path;

/// A fresh directory under the system temp dir, removed (with what is in
/// it) when the returned handle is dropped. `tag` starts its name, to tell
/// whose it is while a test runs.
pub fn temp_dir(tag: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{tag}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temp dir for {tag}: {e}"))
}

/// Fails (never skips) when a real part a test runs is missing, saying
/// which Debian package to install.
pub fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package `{package}` (apt-get install {package})"
    );
}
