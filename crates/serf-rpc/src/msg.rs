//! Serf's RPC messages, one struct each, as Serf's `client/const.go`
//! declares them: field names are the Go names (the map keys on the wire),
//! fields in the order Serf's structs list them. The client encodes requests
//! and decodes responses with these; the agent's server does the opposite,
//! with the same structs. How each Go kind is written and read (leniently)
//! is in `go.rs`; which command carries which message is [`Command`]'s
//! table (and the one in the crate's documentation).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::go;
use serf_proto::coordinate::Coordinate;
use serf_proto::model::{self, MemberEventKind, MemberStatus, QueryParams, QueryReply};

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

// ---- to and from the agent's model -----------------------------------------

impl From<&model::Member> for Member {
    fn from(m: &model::Member) -> Member {
        Member {
            name: m.name.clone(),
            addr: match m.addr {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            },
            port: m.port,
            tags: m.tags.clone(),
            status: m.status.as_str().to_string(),
            protocol_min: m.protocol[0],
            protocol_max: m.protocol[1],
            protocol_cur: m.protocol[2],
            delegate_min: m.delegate[0],
            delegate_max: m.delegate[1],
            delegate_cur: m.delegate[2],
        }
    }
}

impl From<Member> for model::Member {
    /// An address that is not 4 or 16 bytes reads as 0.0.0.0, an unknown
    /// status as `none`.
    fn from(m: Member) -> model::Member {
        model::Member {
            name: m.name,
            addr: ip_from_bytes(&m.addr).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            port: m.port,
            tags: m.tags,
            status: match m.status.as_str() {
                "alive" => MemberStatus::Alive,
                "leaving" => MemberStatus::Leaving,
                "left" => MemberStatus::Left,
                "failed" => MemberStatus::Failed,
                _ => MemberStatus::None,
            },
            protocol: [m.protocol_min, m.protocol_max, m.protocol_cur],
            delegate: [m.delegate_min, m.delegate_max, m.delegate_cur],
        }
    }
}

/// Go's `net.IP`: 4 or 16 bytes; IPv4-mapped IPv6 is shown as IPv4, as Go does.
pub fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(b) {
        return Some(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?);
    Some(match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    })
}

impl MembersResponse {
    pub fn new<'a>(members: impl IntoIterator<Item = &'a model::Member>) -> MembersResponse {
        MembersResponse {
            members: members.into_iter().map(Member::from).collect(),
        }
    }

    pub fn into_model(self) -> Vec<model::Member> {
        self.members.into_iter().map(model::Member::from).collect()
    }
}

impl From<&QueryParams> for QueryRequest {
    fn from(p: &QueryParams) -> QueryRequest {
        QueryRequest {
            filter_nodes: p.filter_nodes.clone(),
            filter_tags: p.filter_tags.clone(),
            request_ack: p.request_ack,
            relay_factor: p.relay_factor,
            timeout: p.timeout.as_nanos().min(i64::MAX as u128) as i64,
            name: p.name.clone(),
            payload: p.payload.clone(),
        }
    }
}

impl From<QueryRequest> for QueryParams {
    /// A negative timeout is 0 (Serf's default).
    fn from(q: QueryRequest) -> QueryParams {
        QueryParams {
            name: q.name,
            payload: q.payload,
            filter_nodes: q.filter_nodes,
            filter_tags: q.filter_tags,
            request_ack: q.request_ack,
            relay_factor: q.relay_factor,
            timeout: Duration::from_nanos(q.timeout.max(0) as u64),
        }
    }
}

impl KeyResponse {
    /// `with_keys`: `list-keys` (the others send `Keys` as nil).
    pub fn new(r: &model::KeyResponse, with_keys: bool) -> KeyResponse {
        KeyResponse {
            messages: r.messages.clone(),
            num_nodes: r.num_nodes as u64,
            num_err: r.num_err as u64,
            num_resp: r.num_resp as u64,
            keys: with_keys.then(|| r.keys.iter().map(|(k, n)| (k.clone(), *n as u64)).collect()),
        }
    }
}

impl From<KeyResponse> for model::KeyResponse {
    fn from(r: KeyResponse) -> model::KeyResponse {
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        model::KeyResponse {
            num_nodes: count(r.num_nodes),
            num_resp: count(r.num_resp),
            num_err: count(r.num_err),
            messages: r.messages,
            keys: r
                .keys
                .unwrap_or_default()
                .into_iter()
                .map(|(k, n)| (k, count(n)))
                .collect(),
        }
    }
}

impl From<&Coordinate> for Coord {
    fn from(c: &Coordinate) -> Coord {
        Coord {
            vec: Some(c.vec.clone()),
            error: c.error,
            adjustment: c.adjustment,
            height: c.height,
        }
    }
}

impl From<Coord> for Coordinate {
    fn from(c: Coord) -> Coordinate {
        Coordinate {
            vec: c.vec.unwrap_or_default(),
            error: c.error,
            adjustment: c.adjustment,
            height: c.height,
        }
    }
}

impl CoordinateResponse {
    /// Serf's answer for a node it has no coordinate of: `Ok` false and
    /// Go's zero coordinate (a nil `Vec`).
    pub fn unknown() -> CoordinateResponse {
        CoordinateResponse {
            coord: Some(Coord::default()),
            ok: false,
        }
    }
}

impl From<&model::Event> for EventRecord {
    fn from(e: &model::Event) -> EventRecord {
        match e {
            model::Event::Member { kind, members } => {
                let body = MembersResponse::new(members);
                match kind {
                    MemberEventKind::Join => EventRecord::MemberJoin(body),
                    MemberEventKind::Leave => EventRecord::MemberLeave(body),
                    MemberEventKind::Failed => EventRecord::MemberFailed(body),
                    MemberEventKind::Update => EventRecord::MemberUpdate(body),
                    MemberEventKind::Reap => EventRecord::MemberReap(body),
                }
            }
            model::Event::User {
                ltime,
                name,
                payload,
                coalesce,
            } => EventRecord::User(UserEventRecord {
                ltime: *ltime,
                name: name.clone(),
                payload: payload.clone(),
                coalesce: *coalesce,
            }),
            model::Event::Query(q) => EventRecord::Query(QueryEventRecord {
                id: q.id,
                ltime: q.ltime,
                name: q.name.clone(),
                payload: q.payload.clone(),
            }),
        }
    }
}

impl From<&QueryReply> for QueryRecord {
    fn from(r: &QueryReply) -> QueryRecord {
        let (kind, from, payload) = match r {
            QueryReply::Ack { from } => ("ack", from.clone(), None),
            QueryReply::Response { from, payload } => {
                ("response", from.clone(), Some(payload.clone()))
            }
            QueryReply::Done => ("done", String::new(), None),
        };
        QueryRecord {
            kind: kind.to_string(),
            from,
            payload,
        }
    }
}

impl QueryRecord {
    /// The reply this record carries; `None` for an unknown `Type`.
    pub fn into_reply(self) -> Option<QueryReply> {
        match self.kind.as_str() {
            "ack" => Some(QueryReply::Ack { from: self.from }),
            "response" => Some(QueryReply::Response {
                from: self.from,
                payload: self.payload.unwrap_or_default(),
            }),
            "done" => Some(QueryReply::Done),
            _ => None,
        }
    }
}
