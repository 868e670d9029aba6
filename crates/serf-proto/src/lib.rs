//! `serf_proto`: the memberlist and Serf protocols, without I/O.
//!
//! Everything here is a function of its inputs: bytes in, bytes and events
//! out; time comes in as an argument (`now`, a `Duration` on the host's
//! clock), randomness from sources the host hands in. No async runtime, no
//! sockets, no files, no threads, no clock: `clippy.toml` in this crate
//! bans them, and `cargo tree -e normal -p serf-proto` shows no tokio, mio,
//! libc or getrandom. The host (the `gossip` agent, or [`sim`]) owns
//! sockets and timers.
//!
//! - [`wire`]: the memberlist and Serf wire formats;
//! - [`core`]: memberlist's SWIM/Lifeguard state machine;
//! - [`serf`]: the Serf layer on top (events, queries, intents, keyring);
//! - [`coordinate`]: Vivaldi network coordinates;
//! - [`model`]: the plain data shared with the agent and its front ends;
//! - [`sim`]: a deterministic simulator of many members.

pub mod coordinate;
pub mod core;
pub mod model;
pub mod serf;
pub mod sim;
pub mod wire;
