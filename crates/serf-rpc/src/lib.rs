//! Serf's RPC protocol ("IPC" in Serf's sources), as spoken on 7373 by
//! `serf members`, `serf event`, ...: the messages ([`msg`]), the framing
//! ([`codec`]) and a [`Client`]; the server lives with the agent
//! (`gossip::rpc`), over the same messages.
//!
//! The framing is a stream of MessagePack values: every request is a
//! [`msg::RequestHeader`] `{Command, Seq}` optionally followed by a body;
//! every response is a [`msg::ResponseHeader`] `{Seq, Error}` optionally
//! followed by a body. Whether a body follows is known only from the
//! command, so both sides keep that table ([`msg::Command`]). Streaming
//! commands (`stream`, `monitor`, `query`) answer once with a bare header,
//! then send header + record under the same `Seq` until stopped.
//!
//! | command | request body | response body |
//! |---|---|---|
//! | `handshake` | [`msg::HandshakeRequest`] | - |
//! | `auth` | [`msg::AuthRequest`] | - |
//! | `event` | [`msg::EventRequest`] | - |
//! | `force-leave` | [`msg::ForceLeaveRequest`] | - |
//! | `join` | [`msg::JoinRequest`] | [`msg::JoinResponse`] |
//! | `members` | - | [`msg::MembersResponse`] of [`msg::Member`] |
//! | `members-filtered` | [`msg::MembersFilteredRequest`] | [`msg::MembersResponse`] |
//! | `tags` | [`msg::TagsRequest`] | - |
//! | `stream` | [`msg::StreamRequest`] | -, then [`msg::EventRecord`]s |
//! | `monitor` | [`msg::MonitorRequest`] | -, then [`msg::LogRecord`]s |
//! | `stop` | [`msg::StopRequest`] | - |
//! | `leave` | - | - |
//! | `query` | [`msg::QueryRequest`] | -, then [`msg::QueryRecord`]s |
//! | `respond` | [`msg::RespondRequest`] | - |
//! | `install-key`, `use-key`, `remove-key` | [`msg::KeyRequest`] | [`msg::KeyResponse`] |
//! | `list-keys` | - | [`msg::KeyResponse`] |
//! | `stats` | - | [`msg::StatsResponse`] |
//! | `get-coordinate` | [`msg::CoordinateRequest`] | [`msg::CoordinateResponse`] of [`msg::Coord`] |

mod client;
pub mod codec;
mod convert;
mod go;
pub mod msg;

pub use client::{Client, EventStream, LogStream, Record, StreamRecord, Subscription};
pub use msg::Command;

/// Errors of the RPC client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("RPC connection to {addr}: {source}")]
    Connect {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("RPC I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The agent answered with this `Error` string (Serf's wording, e.g.
    /// "Invalid authentication token").
    #[error("{0}")]
    Remote(String),
    #[error("RPC protocol: {0}")]
    Protocol(String),
    #[error("RPC connection closed")]
    Closed,
}

pub type Result<T> = std::result::Result<T, Error>;

/// Serf's error strings, shared by client and server so both say the same.
pub mod errors {
    pub const UNSUPPORTED_COMMAND: &str = "Unsupported command";
    pub const UNSUPPORTED_IPC_VERSION: &str = "Unsupported IPC version";
    pub const DUPLICATE_HANDSHAKE: &str = "Handshake already performed";
    pub const HANDSHAKE_REQUIRED: &str = "Handshake required";
    pub const MONITOR_EXISTS: &str = "Monitor already exists";
    pub const INVALID_FILTER: &str = "Invalid event filter";
    pub const STREAM_EXISTS: &str = "Stream with given sequence exists";
    pub const INVALID_QUERY_ID: &str = "No pending queries matching ID";
    pub const AUTH_REQUIRED: &str = "Authentication required";
    pub const INVALID_AUTH_TOKEN: &str = "Invalid authentication token";
}
