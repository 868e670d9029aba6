//! The agent's side of Serf's RPC: the server ([`serve`]) over any
//! [`crate::model::AgentHandle`], and the tracing layer that feeds the
//! `monitor` command ([`MonitorLayer`]). The messages and the client are in
//! the `serf_rpc` crate (re-exported here for the CLI).

mod monitor;
mod server;

pub use monitor::{open_stdout_gate, LogLevel, MonitorLayer};
pub use serf_rpc::{
    codec, errors, msg, Client, Command, Error, EventStream, LogStream, Result, StreamRecord,
};
pub use server::{serve, serve_with, ServeOptions};
