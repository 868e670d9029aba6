//! `gossip`: a membership agent wire-compatible with HashiCorp Serf 0.9.
//!
//! Module ownership (two people work here in parallel; keep to your own):
//! - `model`: the contract between the agent and its front ends (RPC, CLI,
//!   handlers). Change it only in a way both sides agree on.
//! - agent side (`wire`, `core`, `serf`, `sim`, `agent`): the memberlist
//!   codec, the sans-IO SWIM/Lifeguard + Serf state machines, the
//!   deterministic simulator and the tokio shell that implements
//!   [`model::AgentHandle`].
//! - front-end side (`rpc`, `cli`, `handler`): Serf's RPC (server over
//!   `AgentHandle`, and client), the `serf`-compatible command line
//!   (`src/main.rs`), and the event-handler runner.

pub mod agent;
pub mod cli;
pub mod handler;
pub mod model;
pub mod rpc;

// The protocol, as the agent and its tests have always named it.
pub use serf_proto::{coordinate, core, serf, sim, wire};
