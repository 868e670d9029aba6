//! The vocabulary shared by the protocol, the agent and its front ends:
//! members, events, queries, keyring results, stats. Names follow Serf's so
//! the RPC mapping is one to one. Plain data: no I/O, no runtime.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;
/// Serf's member status, as the RPC and `serf members` print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberStatus {
    None,
    Alive,
    Leaving,
    Left,
    Failed,
}

impl MemberStatus {
    /// The word Serf uses (`alive`, `leaving`, `left`, `failed`, `none`).
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::None => "none",
            MemberStatus::Alive => "alive",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Left => "left",
            MemberStatus::Failed => "failed",
        }
    }
}

/// One member as the agent knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub addr: IpAddr,
    pub port: u16,
    /// Tags in the order they were decoded from the node's meta (Serf does
    /// not sort them; handlers see them in this order).
    pub tags: Vec<(String, String)>,
    pub status: MemberStatus,
    /// memberlist protocol min, max, current.
    pub protocol: [u8; 3],
    /// Serf (delegate) protocol min, max, current.
    pub delegate: [u8; 3],
}

impl Member {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Membership event kinds, with Serf's names (`member-join`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberEventKind {
    Join,
    Leave,
    Failed,
    Update,
    Reap,
}

impl MemberEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberEventKind::Join => "member-join",
            MemberEventKind::Leave => "member-leave",
            MemberEventKind::Failed => "member-failed",
            MemberEventKind::Update => "member-update",
            MemberEventKind::Reap => "member-reap",
        }
    }
}

/// A query received by this agent; answer it with [`AgentHandle::respond`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingQuery {
    /// Local id used by `respond` (Serf's RPC calls it `ID`).
    pub id: u64,
    pub ltime: u64,
    pub name: String,
    pub payload: Vec<u8>,
}

/// What the agent emits, in order, after coalescing member events
/// (Serf batches member events for about a second before handlers see them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Member {
        kind: MemberEventKind,
        members: Vec<Member>,
    },
    User {
        ltime: u64,
        name: String,
        payload: Vec<u8>,
        coalesce: bool,
    },
    Query(IncomingQuery),
}

/// Parameters of a query sent by this agent (Serf's `query` RPC).
#[derive(Debug, Clone, Default)]
pub struct QueryParams {
    pub name: String,
    pub payload: Vec<u8>,
    pub filter_nodes: Vec<String>,
    /// tag name -> regular expression
    pub filter_tags: BTreeMap<String, String>,
    pub request_ack: bool,
    pub relay_factor: u8,
    /// zero: Serf's default (gossip interval × query timeout multiplier × log(N)).
    pub timeout: Duration,
}

/// What comes back from a query, in arrival order, then `Done`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryReply {
    Ack { from: String },
    Response { from: String, payload: Vec<u8> },
    Done,
}

/// Counters and facts for `serf info` / the `stats` RPC:
/// section -> key -> value, as Serf prints them.
pub type Stats = BTreeMap<String, BTreeMap<String, String>>;

/// Result of a keyring operation across the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyResponse {
    pub num_nodes: usize,
    pub num_resp: usize,
    pub num_err: usize,
    /// node -> error message
    pub messages: BTreeMap<String, String>,
    /// base64 key -> number of nodes that have it (list only)
    pub keys: BTreeMap<String, usize>,
}
