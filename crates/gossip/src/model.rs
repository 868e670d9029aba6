//! The contract between the membership agent and its front ends.
//!
//! The agent (memberlist + Serf layers) implements [`AgentHandle`]; the RPC
//! server, the CLI's `agent` command and the event-handler runner use only
//! what is here. Names follow Serf's so the RPC mapping is one to one.

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

/// Configuration of `gossip agent`; the CLI (flags, config files) fills it
/// in, the agent consumes it. Defaults follow Serf's.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    /// Gossip bind address (Serf: `-bind`, default 0.0.0.0:7946).
    pub bind: std::net::SocketAddr,
    /// Address advertised to peers (Serf: `-advertise`); None: derived from bind.
    pub advertise: Option<std::net::SocketAddr>,
    pub rpc_addr: std::net::SocketAddr,
    pub rpc_auth_key: Option<String>,
    /// Tags in insertion order.
    pub tags: Vec<(String, String)>,
    pub tags_file: Option<std::path::PathBuf>,
    /// Addresses or DNS names, with optional `:port`, joined at start.
    pub join: Vec<String>,
    pub retry_join: Vec<String>,
    pub retry_interval: Duration,
    /// 0 = retry forever.
    pub retry_max: u32,
    pub replay: bool,
    /// Raw `-event-handler` values (`[filter=]script`).
    pub event_handlers: Vec<String>,
    /// Keyring: primary first. Keys are 16, 24 or 32 bytes.
    pub encrypt_keys: Vec<Vec<u8>>,
    pub keyring_file: Option<std::path::PathBuf>,
    pub snapshot: Option<std::path::PathBuf>,
    pub rejoin: bool,
    /// Serf's `disable_name_resolution`: never vote on a disputed name.
    pub disable_name_resolution: bool,
    /// Serf's `disable_coordinates`: keep no network coordinates.
    pub disable_coordinates: bool,
    /// `lan` (default), `wan` or `local`.
    pub profile: String,
    pub log_level: String,
    /// Timeout for one handler run before it is killed.
    pub handler_timeout: Duration,
    /// Member events are coalesced until this long after the first one...
    /// (Serf's agent: 3 s; not configurable in Serf).
    pub coalesce_period: Duration,
    /// ...or this long without a new one (Serf's agent: 1 s).
    pub quiescent_period: Duration,
    /// Serf's `leave_on_terminate`: SIGTERM leaves gracefully. Serf's
    /// default is false; ours is true, since a container is stopped with
    /// SIGTERM and peers should then see it `left`, not `failed`.
    pub leave_on_terminate: bool,
    /// Serf's `skip_leave_on_interrupt`: SIGINT exits without a leave.
    pub skip_leave_on_interrupt: bool,
    /// Serf's `reconnect_interval`: how often a failed member is retried.
    pub reconnect_interval: Duration,
    /// Serf's `reconnect_timeout`: a failed member is reaped after this.
    pub reconnect_timeout: Duration,
    /// Serf's `tombstone_timeout`: a left member is reaped after this.
    pub tombstone_timeout: Duration,
    /// Messages sent compressed (LZW, memberlist's compress message):
    /// Serf's `enable_compression`, on unless `-disable-compression`.
    pub compress: bool,
    /// Serf's `broadcast_timeout`: how long a leave waits for its intent
    /// and its dead notice to be sent.
    pub broadcast_timeout: Duration,
    /// Serf's `user_event_size_limit`: name + payload, at most 9216.
    pub user_event_size_limit: usize,
    /// Serf's `query_size_limit`: an encoded query sent.
    pub query_size_limit: usize,
    /// Serf's `query_response_size_limit`: an encoded response sent.
    pub query_response_size_limit: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            node_name: String::new(),
            bind: "0.0.0.0:7946".parse().unwrap(),
            advertise: None,
            rpc_addr: "127.0.0.1:7373".parse().unwrap(),
            rpc_auth_key: None,
            tags: Vec::new(),
            tags_file: None,
            join: Vec::new(),
            retry_join: Vec::new(),
            retry_interval: Duration::from_secs(30),
            retry_max: 0,
            replay: false,
            event_handlers: Vec::new(),
            encrypt_keys: Vec::new(),
            keyring_file: None,
            snapshot: None,
            rejoin: false,
            disable_name_resolution: false,
            disable_coordinates: false,
            profile: "lan".into(),
            log_level: "info".into(),
            handler_timeout: Duration::from_secs(30),
            coalesce_period: Duration::from_secs(3),
            quiescent_period: Duration::from_secs(1),
            leave_on_terminate: true,
            skip_leave_on_interrupt: false,
            reconnect_interval: Duration::from_secs(30),
            reconnect_timeout: Duration::from_secs(24 * 3600),
            tombstone_timeout: Duration::from_secs(24 * 3600),
            compress: true,
            broadcast_timeout: Duration::from_secs(5),
            user_event_size_limit: 512,
            query_size_limit: 1024,
            query_response_size_limit: 1024,
        }
    }
}

/// Counters and facts for `serf info` / the `stats` RPC:
/// section -> key -> value, as Serf prints them.
pub type Stats = BTreeMap<String, BTreeMap<String, String>>;

/// A running agent, as the RPC server, CLI and handler runner see it.
#[async_trait::async_trait]
pub trait AgentHandle: Send + Sync + 'static {
    /// This agent's own member record.
    fn local_member(&self) -> Member;
    /// Every known member, including left and failed ones not yet reaped.
    fn members(&self) -> Vec<Member>;
    /// Join through the given addresses/names; returns how many were contacted.
    async fn join(&self, existing: Vec<String>, replay: bool) -> anyhow::Result<usize>;
    /// Graceful leave: broadcast the intent, wait for it to spread.
    async fn leave(&self) -> anyhow::Result<()>;
    async fn force_leave(&self, node: &str, prune: bool) -> anyhow::Result<()>;
    async fn user_event(&self, name: &str, payload: Vec<u8>, coalesce: bool) -> anyhow::Result<()>;
    /// Set and delete tags, then gossip the new meta.
    async fn set_tags(&self, set: Vec<(String, String)>, delete: Vec<String>)
        -> anyhow::Result<()>;
    /// Send a query; replies arrive on the channel, ending with `Done`.
    async fn query(
        &self,
        params: QueryParams,
    ) -> anyhow::Result<tokio::sync::mpsc::Receiver<QueryReply>>;
    /// Answer a query this agent received (by `IncomingQuery::id`).
    async fn respond(&self, id: u64, payload: Vec<u8>) -> anyhow::Result<()>;
    /// A new subscription to events emitted from now on.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event>;
    fn stats(&self) -> Stats;
    /// `n` more events were dropped before the event handlers saw them
    /// (their queue was full); counted in `stats`.
    fn handler_events_dropped(&self, n: u64) {
        let _ = n;
    }
    /// The network coordinate last known for `node` (ours included).
    fn coordinate(&self, node: &str) -> Option<crate::coordinate::Coordinate>;
    /// Keyring operations (`serf keys`): key bytes in, per-node results out.
    async fn install_key(&self, key: Vec<u8>) -> anyhow::Result<KeyResponse>;
    async fn use_key(&self, key: Vec<u8>) -> anyhow::Result<KeyResponse>;
    async fn remove_key(&self, key: Vec<u8>) -> anyhow::Result<KeyResponse>;
    async fn list_keys(&self) -> anyhow::Result<KeyResponse>;
    /// Stop the agent's sockets and timers (after `leave` for a graceful stop).
    async fn shutdown(&self) -> anyhow::Result<()>;
}

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
