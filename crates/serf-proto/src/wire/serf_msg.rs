//! Serf's messages, carried in memberlist user messages: join and leave
//! intents, user events, queries and their responses, push-pull state,
//! relay; and the payloads Serf puts in other fields: the tag meta, query
//! filters, and the answers to its internal conflict and keyring queries.
//! Each is a struct in Go's key order.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{addr_bytes, bytes_addr, go_de, go_ser, stype, Result, WireError};
use crate::model::{Member, MemberStatus};

/// A leave intent (type 0): `node` is leaving (or, with `prune`, to be
/// forgotten).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Leave {
    #[serde(rename = "LTime")]
    pub ltime: u64,
    pub node: String,
    pub prune: bool,
}

/// A join intent (type 1).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Join {
    #[serde(rename = "LTime")]
    pub ltime: u64,
    pub node: String,
}

/// A user event (type 3); `cc`: may be coalesced.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UserEvent {
    #[serde(rename = "CC")]
    pub cc: bool,
    #[serde(rename = "LTime")]
    pub ltime: u64,
    pub name: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// A query (type 4).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Query {
    #[serde(with = "serde_bytes")]
    pub addr: Vec<u8>,
    /// Each a [`QueryFilter`]'s bytes; nil on the wire when none.
    #[serde(with = "filters")]
    pub filters: Vec<Vec<u8>>,
    pub flags: u32,
    #[serde(rename = "ID")]
    pub id: u32,
    #[serde(rename = "LTime")]
    pub ltime: u64,
    pub name: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub port: u16,
    pub relay_factor: u8,
    pub source_node: String,
    /// nanoseconds (Go `time.Duration`)
    pub timeout: i64,
}

pub const QUERY_FLAG_ACK: u32 = 1;
pub const QUERY_FLAG_NO_BROADCAST: u32 = 2;

/// An answer (or ack) to a query (type 5).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct QueryResponse {
    pub flags: u32,
    pub from: String,
    #[serde(rename = "ID")]
    pub id: u32,
    #[serde(rename = "LTime")]
    pub ltime: u64,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// One event of a push-pull's event buffer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UserEventRec {
    pub name: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// The events of one Lamport time.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UserEvents {
    #[serde(deserialize_with = "array_or_empty")]
    pub events: Vec<UserEventRec>,
    #[serde(rename = "LTime")]
    pub ltime: u64,
}

/// Serf's state in a memberlist push-pull (type 2).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SerfPushPull {
    #[serde(rename = "EventLTime")]
    pub event_ltime: u64,
    /// Nil entries (empty slots of Go's ring) are skipped.
    #[serde(deserialize_with = "events")]
    pub events: Vec<UserEvents>,
    #[serde(rename = "LTime")]
    pub ltime: u64,
    pub left_members: Vec<String>,
    #[serde(rename = "QueryLTime")]
    pub query_ltime: u64,
    /// node -> status ltime (a map on the wire; order as received).
    #[serde(rename = "StatusLTimes", with = "pairs")]
    pub status_ltimes: Vec<(String, u64)>,
}

/// Relay (type 9): forward `inner` (a Serf message) to `dest`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Relay {
    pub dest_addr: Vec<u8>,
    pub dest_port: u16,
    pub dest_name: String,
    pub inner: Vec<u8>,
}

/// A relay's header; the inner message follows it.
#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RelayHeader {
    /// Required (a missing one is an error).
    dest_addr: Option<UdpAddr>,
    dest_name: String,
}

/// Go's `net.UDPAddr`.
#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct UdpAddr {
    #[serde(rename = "IP", with = "serde_bytes")]
    ip: Vec<u8>,
    #[serde(rename = "Port")]
    port: u16,
    /// Written empty, never read.
    #[serde(rename = "Zone", skip_deserializing)]
    zone: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerfMessage {
    Leave(Leave),
    Join(Join),
    PushPull(SerfPushPull),
    UserEvent(UserEvent),
    Query(Query),
    QueryResponse(QueryResponse),
    Relay(Relay),
    /// Types we accept but do not act on (conflict and key messages).
    Other(u8),
}

impl SerfMessage {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            SerfMessage::Leave(m) => go_ser::to_vec(stype::LEAVE, m),
            SerfMessage::Join(m) => go_ser::to_vec(stype::JOIN, m),
            SerfMessage::PushPull(m) => go_ser::to_vec(stype::PUSH_PULL, m),
            SerfMessage::UserEvent(m) => go_ser::to_vec(stype::USER_EVENT, m),
            SerfMessage::Query(m) => go_ser::to_vec(stype::QUERY, m),
            SerfMessage::QueryResponse(m) => go_ser::to_vec(stype::QUERY_RESPONSE, m),
            SerfMessage::Relay(r) => {
                let header = RelayHeader {
                    dest_addr: Some(UdpAddr {
                        ip: r.dest_addr.clone(),
                        port: r.dest_port,
                        zone: String::new(),
                    }),
                    dest_name: r.dest_name.clone(),
                };
                let mut b = go_ser::to_vec(stype::RELAY, &header);
                b.extend_from_slice(&r.inner);
                b
            }
            SerfMessage::Other(t) => vec![*t],
        }
    }

    pub fn decode(buf: &[u8]) -> Result<SerfMessage> {
        let (&t, body) = buf.split_first().ok_or(WireError::Empty)?;
        fn de<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
            go_de::from_slice(body).map(|(v, _)| v)
        }
        Ok(match t {
            stype::LEAVE => SerfMessage::Leave(de(body)?),
            stype::JOIN => SerfMessage::Join(de(body)?),
            stype::PUSH_PULL => SerfMessage::PushPull(de(body)?),
            stype::USER_EVENT => SerfMessage::UserEvent(de(body)?),
            stype::QUERY => SerfMessage::Query(de(body)?),
            stype::QUERY_RESPONSE => SerfMessage::QueryResponse(de(body)?),
            stype::RELAY => {
                let (h, used) = go_de::from_slice::<RelayHeader>(body)?;
                let addr = h.dest_addr.ok_or(WireError::Field("DestAddr"))?;
                SerfMessage::Relay(Relay {
                    dest_addr: addr.ip,
                    dest_port: addr.port,
                    dest_name: h.dest_name,
                    inner: body[used..].to_vec(),
                })
            }
            stype::CONFLICT_RESPONSE | stype::KEY_REQUEST | stype::KEY_RESPONSE => {
                SerfMessage::Other(t)
            }
            other => return Err(WireError::UnknownType(other)),
        })
    }
}

/// Tags as a Go `map[string]string`, in the order given (a Go map's order
/// is whatever the sender wrote; we keep it).
#[derive(Serialize, Deserialize)]
struct Tags(#[serde(with = "pairs")] Vec<(String, String)>);

/// Serf's tags in node meta: 255 then a map of str to str. Old meta
/// without 255 is the role.
pub fn encode_tags(tags: &[(String, String)]) -> Vec<u8> {
    go_ser::to_vec(255, &Tags(tags.to_vec()))
}

pub fn decode_tags(meta: &[u8]) -> Result<Vec<(String, String)>> {
    match meta.split_first() {
        None => Ok(Vec::new()),
        Some((255, body)) => {
            let (tags, _) = go_de::from_slice::<Option<Tags>>(body)?;
            Ok(tags.ok_or(WireError::Field("tags"))?.0)
        }
        Some(_) => Ok(vec![(
            "role".to_string(),
            String::from_utf8_lossy(meta).into_owned(),
        )]),
    }
}

/// A query filter: which members should answer. On the wire a type byte,
/// then a msgpack value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryFilter {
    /// 0: only these nodes (an array of names).
    Nodes(Vec<String>),
    /// 1: only members whose tag `tag` matches the regular expression
    /// `expr` (a map).
    Tag { tag: String, expr: String },
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct TagFilter {
    expr: String,
    tag: String,
}

impl QueryFilter {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            QueryFilter::Nodes(nodes) => go_ser::to_vec(0, nodes),
            QueryFilter::Tag { tag, expr } => {
                let f = TagFilter {
                    expr: expr.clone(),
                    tag: tag.clone(),
                };
                go_ser::to_vec(1, &f)
            }
        }
    }

    pub fn decode(buf: &[u8]) -> Result<QueryFilter> {
        let (&t, body) = buf.split_first().ok_or(WireError::Empty)?;
        match t {
            0 => Ok(QueryFilter::Nodes(go_de::from_slice(body)?.0)),
            1 => {
                let (f, _) = go_de::from_slice::<TagFilter>(body)?;
                Ok(QueryFilter::Tag {
                    tag: f.tag,
                    expr: f.expr,
                })
            }
            other => Err(WireError::UnknownType(other)),
        }
    }
}

/// What a member believes of a node whose name is disputed: Serf's
/// `Member`, keys in Go's field order. We read back only what we use.
#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ConflictMember {
    #[serde(skip_deserializing)]
    name: String,
    #[serde(with = "serde_bytes")]
    addr: Vec<u8>,
    port: u16,
    #[serde(skip_deserializing, with = "pairs")]
    tags: Vec<(String, String)>,
    #[serde(skip_deserializing)]
    status: u8,
    #[serde(skip_deserializing)]
    protocol_min: u8,
    #[serde(skip_deserializing)]
    protocol_max: u8,
    #[serde(skip_deserializing)]
    protocol_cur: u8,
    #[serde(skip_deserializing)]
    delegate_min: u8,
    #[serde(skip_deserializing)]
    delegate_max: u8,
    #[serde(skip_deserializing)]
    delegate_cur: u8,
}

/// The payload of a `_serf_conflict` response: type byte 6, then the
/// member, or nil when the responder does not know the node.
pub fn encode_conflict_response(m: Option<&Member>) -> Vec<u8> {
    let m = m.map(|m| ConflictMember {
        name: m.name.clone(),
        addr: addr_bytes(m.addr),
        port: m.port,
        tags: m.tags.clone(),
        status: match m.status {
            MemberStatus::None => 0,
            MemberStatus::Alive => 1,
            MemberStatus::Leaving => 2,
            MemberStatus::Left => 3,
            MemberStatus::Failed => 4,
        },
        protocol_min: m.protocol[0],
        protocol_max: m.protocol[1],
        protocol_cur: m.protocol[2],
        delegate_min: m.delegate[0],
        delegate_max: m.delegate[1],
        delegate_cur: m.delegate[2],
    });
    go_ser::to_vec(stype::CONFLICT_RESPONSE, &m)
}

/// The address and port a `_serf_conflict` response vouches for; `None`
/// when the responder does not know the node (Serf counts such an answer
/// as a response that does not match).
pub fn decode_conflict_response(payload: &[u8]) -> Result<Option<(IpAddr, u16)>> {
    match payload.split_first() {
        Some((&stype::CONFLICT_RESPONSE, body)) => {
            let Some(m) = go_de::from_slice::<Option<ConflictMember>>(body)?.0 else {
                return Ok(None);
            };
            let ip = bytes_addr(&m.addr).ok_or(WireError::Field("Addr"))?;
            Ok(Some((ip, m.port)))
        }
        Some((&t, _)) => Err(WireError::UnknownType(t)),
        None => Err(WireError::Field("conflict response")),
    }
}

/// A keyring query's payload (type byte 7): the key to install, use or
/// remove (none to list).
#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct KeyRequest {
    #[serde(with = "serde_bytes")]
    key: Vec<u8>,
}

pub fn encode_key_request(key: &[u8]) -> Vec<u8> {
    let r = KeyRequest { key: key.to_vec() };
    go_ser::to_vec(stype::KEY_REQUEST, &r)
}

pub fn decode_key_request(payload: &[u8]) -> Option<Vec<u8>> {
    match payload.split_first()? {
        (&stype::KEY_REQUEST, body) => Some(go_de::from_slice::<KeyRequest>(body).ok()?.0.key),
        _ => None,
    }
}

/// One node's answer to a keyring query (type byte 8).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct KeyResponse {
    pub keys: Vec<String>,
    pub message: String,
    pub primary_key: String,
    pub result: bool,
}

impl KeyResponse {
    pub fn encode(&self) -> Vec<u8> {
        go_ser::to_vec(stype::KEY_RESPONSE, self)
    }
}

pub fn decode_key_response(payload: &[u8]) -> Option<KeyResponse> {
    match payload.split_first()? {
        (&stype::KEY_RESPONSE, body) => Some(go_de::from_slice(body).ok()?.0),
        _ => None,
    }
}

/// `#[serde(with)]` for a Go map kept as ordered pairs.
mod pairs {
    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
    use serde::ser::{Serialize, Serializer};
    use std::marker::PhantomData;

    pub fn serialize<S: Serializer, V: Serialize>(
        pairs: &[(String, V)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<(String, V)>, D::Error> {
        struct Pairs<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Pairs<V> {
            type Value = Vec<(String, V)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(0).min(1024));
                while let Some(kv) = m.next_entry()? {
                    out.push(kv);
                }
                Ok(out)
            }
        }
        d.deserialize_map(Pairs(PhantomData))
    }
}

/// `#[serde(with)]` for a query's filters: nil when there are none.
mod filters {
    use serde::de::{Deserialize, Deserializer};
    use serde::ser::Serializer;
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(filters: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        if filters.is_empty() {
            return s.serialize_none();
        }
        s.collect_seq(filters.iter().map(|f| Bytes::new(f)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let v = Vec::<ByteBuf>::deserialize(d)?;
        Ok(v.into_iter().map(ByteBuf::into_vec).collect())
    }
}

/// An array, or empty for anything else (how Serf's push-pull events were
/// always read here).
fn array_or_empty<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    use serde::de::{Error, MapAccess, SeqAccess, Visitor};
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> std::result::Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(s.size_hint().unwrap_or(0).min(1024));
            while let Some(x) = s.next_element()? {
                out.push(x);
            }
            Ok(out)
        }
        fn visit_map<A: MapAccess<'de>>(self, _: A) -> std::result::Result<Vec<T>, A::Error> {
            Ok(Vec::new())
        }
        fn visit_unit<E: Error>(self) -> std::result::Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_bool<E: Error>(self, _: bool) -> std::result::Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_u64<E: Error>(self, _: u64) -> std::result::Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_i64<E: Error>(self, _: i64) -> std::result::Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_f64<E: Error>(self, _: f64) -> std::result::Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_bytes<E: Error>(self, _: &[u8]) -> std::result::Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_str<E: Error>(self, _: &str) -> std::result::Result<Vec<T>, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V(std::marker::PhantomData))
}

/// A push-pull's events: [`array_or_empty`], nil entries skipped.
fn events<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<UserEvents>, D::Error> {
    let v: Vec<Option<UserEvents>> = array_or_empty(d)?;
    Ok(v.into_iter().flatten().collect())
}
