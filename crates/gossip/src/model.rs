//! The contract between the membership agent and its front ends.
//!
//! The agent (`crate::agent`) implements [`AgentHandle`]; the RPC server,
//! the CLI's `agent` command and the event-handler runner use only what is
//! here. The plain data types (members, events, queries) are the protocol
//! crate's, re-exported.

use std::time::Duration;

pub use serf_proto::model::*;

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
    fn coordinate(&self, node: &str) -> Option<serf_proto::coordinate::Coordinate>;
    /// Keyring operations (`serf keys`): key bytes in, per-node results out.
    async fn install_key(&self, key: Vec<u8>) -> anyhow::Result<KeyResponse>;
    async fn use_key(&self, key: Vec<u8>) -> anyhow::Result<KeyResponse>;
    async fn remove_key(&self, key: Vec<u8>) -> anyhow::Result<KeyResponse>;
    async fn list_keys(&self) -> anyhow::Result<KeyResponse>;
    /// Stop the agent's sockets and timers (after `leave` for a graceful stop).
    async fn shutdown(&self) -> anyhow::Result<()>;
}
