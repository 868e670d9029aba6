//! Serf's RPC messages, one struct each, after the Go structs of Serf's
//! IPC: field names are the Go names (the map keys on the wire), fields in
//! the order this project has always written them (`tests/wire_bytes.rs`
//! holds those bytes; Serf's decoder does not care about the order). The
//! client encodes requests and decodes responses with these; the agent's
//! server does the opposite, with the same structs; `convert.rs` maps
//! them to and from the agent's model. How each Go kind is written and read (leniently)
//! is in `go.rs`; which command carries which message is [`Command`]'s
//! table (and the one in the crate's documentation).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::go;
use serf_proto::model;

/// Serf's RPC commands (the header's `Command`), with the message each
/// carries: request body → response body. "-" is no body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// `handshake`: [`HandshakeRequest`] → -
    Handshake,
    /// `auth`: [`AuthRequest`] → -
    Auth,
    /// `event`: [`EventRequest`] → -
    Event,
    /// `force-leave`: [`ForceLeaveRequest`] → -
    ForceLeave,
    /// `join`: [`JoinRequest`] → [`JoinResponse`]
    Join,
    /// `members`: - → [`MembersResponse`]
    Members,
    /// `members-filtered`: [`MembersFilteredRequest`] → [`MembersResponse`]
    MembersFiltered,
    /// `tags`: [`TagsRequest`] → -
    Tags,
    /// `stream`: [`StreamRequest`] → -, then [`EventRecord`]s
    Stream,
    /// `monitor`: [`MonitorRequest`] → -, then [`LogRecord`]s
    Monitor,
    /// `stop`: [`StopRequest`] → -
    Stop,
    /// `leave`: - → -
    Leave,
    /// `query`: [`QueryRequest`] → -, then [`QueryRecord`]s
    Query,
    /// `respond`: [`RespondRequest`] → -
    Respond,
    /// `install-key`: [`KeyRequest`] → [`KeyResponse`]
    InstallKey,
    /// `use-key`: [`KeyRequest`] → [`KeyResponse`]
    UseKey,
    /// `remove-key`: [`KeyRequest`] → [`KeyResponse`]
    RemoveKey,
    /// `list-keys`: - → [`KeyResponse`] (with `Keys`)
    ListKeys,
    /// `stats`: - → [`StatsResponse`]
    Stats,
    /// `get-coordinate`: [`CoordinateRequest`] → [`CoordinateResponse`]
    GetCoordinate,
}

impl Command {
    pub const ALL: [Command; 20] = [
        Command::Handshake,
        Command::Auth,
        Command::Event,
        Command::ForceLeave,
        Command::Join,
        Command::Members,
        Command::MembersFiltered,
        Command::Tags,
        Command::Stream,
        Command::Monitor,
        Command::Stop,
        Command::Leave,
        Command::Query,
        Command::Respond,
        Command::InstallKey,
        Command::UseKey,
        Command::RemoveKey,
        Command::ListKeys,
        Command::Stats,
        Command::GetCoordinate,
    ];

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Command::Handshake => "handshake",
            Command::Auth => "auth",
            Command::Event => "event",
            Command::ForceLeave => "force-leave",
            Command::Join => "join",
            Command::Members => "members",
            Command::MembersFiltered => "members-filtered",
            Command::Tags => "tags",
            Command::Stream => "stream",
            Command::Monitor => "monitor",
            Command::Stop => "stop",
            Command::Leave => "leave",
            Command::Query => "query",
            Command::Respond => "respond",
            Command::InstallKey => "install-key",
            Command::UseKey => "use-key",
            Command::RemoveKey => "remove-key",
            Command::ListKeys => "list-keys",
            Command::Stats => "stats",
            Command::GetCoordinate => "get-coordinate",
        }
    }

    pub fn parse(name: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Does the request carry a body after its header?
    pub fn request_has_body(self) -> bool {
        !matches!(
            self,
            Command::Members | Command::Leave | Command::ListKeys | Command::Stats
        )
    }

    /// Does the response carry a body after its header? Serf's server sends
    /// these bodies even with an error (except the errors it sends before
    /// looking at the command: handshake and auth required).
    pub fn response_has_body(self) -> bool {
        matches!(
            self,
            Command::Join
                | Command::Members
                | Command::MembersFiltered
                | Command::InstallKey
                | Command::UseKey
                | Command::RemoveKey
                | Command::ListKeys
                | Command::Stats
                | Command::GetCoordinate
        )
    }
}

// ---- headers ---------------------------------------------------------------

/// Every request starts with this (`requestHeader`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RequestHeader {
    #[serde(rename = "Command", deserialize_with = "go::string")]
    pub command: String,
    #[serde(rename = "Seq", deserialize_with = "go::uint")]
    pub seq: u64,
}

/// Every response and stream record starts with this (`responseHeader`);
/// an empty `error` is success.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponseHeader {
    #[serde(rename = "Seq", deserialize_with = "go::uint")]
    pub seq: u64,
    #[serde(rename = "Error", deserialize_with = "go::string")]
    pub error: String,
}

// ---- requests --------------------------------------------------------------

/// `handshake` (`handshakeRequest`); Serf knows version 1 only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HandshakeRequest {
    #[serde(rename = "Version", deserialize_with = "go::uint")]
    pub version: u64,
}

/// `auth` (`authRequest`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthRequest {
    #[serde(rename = "AuthKey", deserialize_with = "go::string")]
    pub auth_key: String,
}

/// `event` (`eventRequest`): a user event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventRequest {
    #[serde(rename = "Name", deserialize_with = "go::string")]
    pub name: String,
    #[serde(rename = "Payload", with = "go::bytes")]
    pub payload: Vec<u8>,
    #[serde(rename = "Coalesce", deserialize_with = "go::boolean")]
    pub coalesce: bool,
}

/// `force-leave` (`forceLeaveRequest`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ForceLeaveRequest {
    #[serde(rename = "Node", deserialize_with = "go::string")]
    pub node: String,
    #[serde(rename = "Prune", deserialize_with = "go::boolean")]
    pub prune: bool,
}

/// `join` (`joinRequest`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JoinRequest {
    #[serde(rename = "Existing", deserialize_with = "go::strings")]
    pub existing: Vec<String>,
    #[serde(rename = "Replay", deserialize_with = "go::boolean")]
    pub replay: bool,
}

/// `members-filtered` (`membersFilteredRequest`): regular expressions,
/// anchored by the agent; empty ones match everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MembersFilteredRequest {
    #[serde(rename = "Tags", with = "go::str_map")]
    pub tags: Vec<(String, String)>,
    #[serde(rename = "Status", deserialize_with = "go::string")]
    pub status: String,
    #[serde(rename = "Name", deserialize_with = "go::string")]
    pub name: String,
}

/// `tags` (`tagsRequest`): tags to set, then tag names to delete.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TagsRequest {
    #[serde(rename = "Tags", with = "go::str_map")]
    pub tags: Vec<(String, String)>,
    #[serde(rename = "DeleteTags", deserialize_with = "go::strings")]
    pub delete_tags: Vec<String>,
}

/// `stream` (`streamRequest`): Serf's event filter (`*`, `member-join`,
/// `user:deploy,query`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamRequest {
    #[serde(rename = "Type", deserialize_with = "go::string")]
    pub filter: String,
}

/// `monitor` (`monitorRequest`): the lowest level sent, upper case.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitorRequest {
    #[serde(rename = "LogLevel", deserialize_with = "go::string")]
    pub log_level: String,
}

/// `stop` (`stopRequest`): the `Seq` of the stream or monitor to end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StopRequest {
    #[serde(rename = "Stop", deserialize_with = "go::uint")]
    pub stop: u64,
}

/// `query` (`queryRequest`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryRequest {
    #[serde(rename = "FilterNodes", deserialize_with = "go::strings")]
    pub filter_nodes: Vec<String>,
    /// Tag name → regular expression.
    #[serde(rename = "FilterTags", deserialize_with = "go::str_map::deserialize")]
    pub filter_tags: BTreeMap<String, String>,
    #[serde(rename = "RequestAck", deserialize_with = "go::boolean")]
    pub request_ack: bool,
    #[serde(rename = "RelayFactor", deserialize_with = "go::uint8")]
    pub relay_factor: u8,
    /// Go's `time.Duration`: nanoseconds; 0 is Serf's default.
    #[serde(rename = "Timeout", deserialize_with = "go::int")]
    pub timeout: i64,
    #[serde(rename = "Name", deserialize_with = "go::string")]
    pub name: String,
    #[serde(rename = "Payload", with = "go::bytes")]
    pub payload: Vec<u8>,
}

/// `respond` (`respondRequest`): the answer to a query seen on a stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RespondRequest {
    #[serde(rename = "ID", deserialize_with = "go::uint")]
    pub id: u64,
    #[serde(rename = "Payload", with = "go::bytes")]
    pub payload: Vec<u8>,
}

/// `install-key`, `use-key`, `remove-key` (`keyRequest`): a base64 key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyRequest {
    #[serde(rename = "Key", deserialize_with = "go::string")]
    pub key: String,
}

/// `get-coordinate` (`coordinateRequest`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoordinateRequest {
    #[serde(rename = "Node", deserialize_with = "go::string")]
    pub node: String,
}

// ---- responses -------------------------------------------------------------

/// `join`'s answer (`joinResponse`): how many addresses were reached.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JoinResponse {
    /// Go `int32`.
    #[serde(rename = "Num", deserialize_with = "go::uint")]
    pub num: u64,
}

/// `members` and `members-filtered`'s answer (`membersResponse`); also the
/// body of a member event record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MembersResponse {
    #[serde(rename = "Members", deserialize_with = "go::list")]
    pub members: Vec<Member>,
}

/// A member as Serf's RPC shows it (`client.Member`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Member {
    #[serde(rename = "Name", deserialize_with = "go::string")]
    pub name: String,
    /// Go's `net.IP`: 4 or 16 bytes.
    #[serde(rename = "Addr", with = "go::bytes")]
    pub addr: Vec<u8>,
    #[serde(rename = "Port", deserialize_with = "go::uint16")]
    pub port: u16,
    #[serde(rename = "Tags", with = "go::str_map")]
    pub tags: Vec<(String, String)>,
    #[serde(rename = "Status", deserialize_with = "go::string")]
    pub status: String,
    #[serde(rename = "ProtocolMin", deserialize_with = "go::uint8")]
    pub protocol_min: u8,
    #[serde(rename = "ProtocolMax", deserialize_with = "go::uint8")]
    pub protocol_max: u8,
    #[serde(rename = "ProtocolCur", deserialize_with = "go::uint8")]
    pub protocol_cur: u8,
    #[serde(rename = "DelegateMin", deserialize_with = "go::uint8")]
    pub delegate_min: u8,
    #[serde(rename = "DelegateMax", deserialize_with = "go::uint8")]
    pub delegate_max: u8,
    #[serde(rename = "DelegateCur", deserialize_with = "go::uint8")]
    pub delegate_cur: u8,
}

/// The key commands' answer (`keyResponse`); `keys` only for `list-keys`
/// (nil otherwise, as Serf sends it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyResponse {
    /// Node → error message.
    #[serde(rename = "Messages", deserialize_with = "go::str_map::deserialize")]
    pub messages: BTreeMap<String, String>,
    #[serde(rename = "NumNodes", deserialize_with = "go::uint")]
    pub num_nodes: u64,
    #[serde(rename = "NumErr", deserialize_with = "go::uint")]
    pub num_err: u64,
    #[serde(rename = "NumResp", deserialize_with = "go::uint")]
    pub num_resp: u64,
    /// Base64 key → number of nodes that have it.
    #[serde(rename = "Keys", deserialize_with = "go::counts")]
    pub keys: Option<BTreeMap<String, u64>>,
}

/// `stats`' answer: section → key → value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StatsResponse {
    #[serde(deserialize_with = "go::sections")]
    pub sections: model::Stats,
}

/// `get-coordinate`'s answer (`coordinateResponse`): `ok` false (and a zero
/// coordinate) when the agent has none for the node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoordinateResponse {
    #[serde(rename = "Coord")]
    pub coord: Option<Coord>,
    #[serde(rename = "Ok", deserialize_with = "go::boolean")]
    pub ok: bool,
}

/// A network coordinate (`coordinate.Coordinate`); the same map is the
/// payload of memberlist's acks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Coord {
    /// nil in Go's zero coordinate.
    #[serde(rename = "Vec", deserialize_with = "go::floats")]
    pub vec: Option<Vec<f64>>,
    #[serde(rename = "Error", deserialize_with = "go::float")]
    pub error: f64,
    #[serde(rename = "Adjustment", deserialize_with = "go::float")]
    pub adjustment: f64,
    #[serde(rename = "Height", deserialize_with = "go::float")]
    pub height: f64,
}

// ---- stream records --------------------------------------------------------

/// A `stream` record (Serf's `memberEventRecord`, `userEventRecord`,
/// `queryEventRecord`), told apart by its `Event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Event")]
pub enum EventRecord {
    #[serde(rename = "member-join")]
    MemberJoin(MembersResponse),
    #[serde(rename = "member-leave")]
    MemberLeave(MembersResponse),
    #[serde(rename = "member-failed")]
    MemberFailed(MembersResponse),
    #[serde(rename = "member-update")]
    MemberUpdate(MembersResponse),
    #[serde(rename = "member-reap")]
    MemberReap(MembersResponse),
    #[serde(rename = "user")]
    User(UserEventRecord),
    #[serde(rename = "query")]
    Query(QueryEventRecord),
}

impl EventRecord {
    /// Decodes a record; an unknown or missing `Event` is an error (the
    /// client skips such records). Fields are read as leniently as in the
    /// other messages.
    pub fn decode(bytes: &[u8]) -> Result<EventRecord, crate::codec::DecodeError> {
        rmp_serde::from_slice(bytes)
    }
}

/// A user event on a stream (after `Event: "user"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserEventRecord {
    #[serde(rename = "LTime", deserialize_with = "go::uint")]
    pub ltime: u64,
    #[serde(rename = "Name", deserialize_with = "go::string")]
    pub name: String,
    #[serde(rename = "Payload", with = "go::bytes")]
    pub payload: Vec<u8>,
    #[serde(rename = "Coalesce", deserialize_with = "go::boolean")]
    pub coalesce: bool,
}

/// A query received by the agent, on a stream (after `Event: "query"`);
/// answer with `respond` and its `ID`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryEventRecord {
    #[serde(rename = "ID", deserialize_with = "go::uint")]
    pub id: u64,
    #[serde(rename = "LTime", deserialize_with = "go::uint")]
    pub ltime: u64,
    #[serde(rename = "Name", deserialize_with = "go::string")]
    pub name: String,
    #[serde(rename = "Payload", with = "go::bytes")]
    pub payload: Vec<u8>,
}

/// A `query` record (`queryRecord`): `Type` is `ack`, `response` or
/// `done`; acks and `done` carry a nil `Payload`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryRecord {
    #[serde(rename = "Type", deserialize_with = "go::string")]
    pub kind: String,
    #[serde(rename = "From", deserialize_with = "go::string")]
    pub from: String,
    #[serde(rename = "Payload", with = "go::opt_bytes")]
    pub payload: Option<Vec<u8>>,
}

/// A `monitor` record (`logRecord`): one formatted log line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogRecord {
    #[serde(rename = "Log", deserialize_with = "go::string")]
    pub log: String,
}
