//! memberlist's messages: ping, indirect ping, ack, nack, suspect, alive,
//! dead, push-pull (header, node states, Serf's state), user, err; each a
//! struct in Go's key order, and the [`Message`] enum that tags them with
//! their type byte.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{go_de, go_ser, mtype, Result, WireError, MAX_BODY};

fn is_zero(v: &u16) -> bool {
    *v == 0
}

/// A direct probe (type 0). The source fields are omitted when empty, as
/// Go's `omitempty` does.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Ping {
    pub node: String,
    pub seq_no: u32,
    #[serde(with = "serde_bytes", skip_serializing_if = "Vec::is_empty")]
    pub source_addr: Vec<u8>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source_node: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub source_port: u16,
}

/// A request to probe `target` for us (type 1).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IndirectPing {
    pub nack: bool,
    pub node: String,
    pub port: u16,
    pub seq_no: u32,
    #[serde(with = "serde_bytes", skip_serializing_if = "Vec::is_empty")]
    pub source_addr: Vec<u8>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source_node: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub source_port: u16,
    #[serde(with = "serde_bytes")]
    pub target: Vec<u8>,
}

/// The answer to a ping (type 2); Serf's payload is a coordinate.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Ack {
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub seq_no: u32,
}

/// An indirect probe's "no answer yet" (type 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Nack {
    pub seq_no: u32,
}

/// suspect (3) and dead (5) share this shape.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Accuse {
    pub from: String,
    pub incarnation: u32,
    pub node: String,
}

/// A node's claim to be alive (type 4), with its tags in `meta`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Alive {
    #[serde(with = "serde_bytes")]
    pub addr: Vec<u8>,
    pub incarnation: u32,
    #[serde(with = "serde_bytes")]
    pub meta: Vec<u8>,
    pub node: String,
    pub port: u16,
    /// Protocol and delegate versions: Go writes raw, old peers an array.
    #[serde(with = "serde_bytes")]
    pub vsn: Vec<u8>,
}

/// memberlist node state in push-pull (an integer on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u8")]
pub enum NodeState {
    #[default]
    Alive = 0,
    Suspect = 1,
    Dead = 2,
    Left = 3,
}

impl TryFrom<u64> for NodeState {
    type Error = WireError;
    fn try_from(v: u64) -> Result<Self> {
        Ok(match v {
            0 => NodeState::Alive,
            1 => NodeState::Suspect,
            2 => NodeState::Dead,
            3 => NodeState::Left,
            _ => return Err(WireError::Field("State")),
        })
    }
}

impl From<NodeState> for u8 {
    fn from(s: NodeState) -> u8 {
        s as u8
    }
}

/// One node of a push-pull.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PushNodeState {
    #[serde(with = "serde_bytes")]
    pub addr: Vec<u8>,
    pub incarnation: u32,
    #[serde(with = "serde_bytes")]
    pub meta: Vec<u8>,
    pub name: String,
    pub port: u16,
    pub state: NodeState,
    #[serde(with = "serde_bytes")]
    pub vsn: Vec<u8>,
}

impl PushNodeState {
    /// The node state alone (a push-pull's header says how many follow).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        go_ser::write(&mut out, self);
        out
    }
}

/// A push-pull's header: the node states and the bytes of Serf's state
/// that follow it on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PushPullHeader {
    pub join: bool,
    pub nodes: u64,
    pub user_state_len: u64,
}

impl PushPullHeader {
    /// With its type byte: a header may announce what it likes (tests and
    /// the hostile bench send ones that lie).
    pub fn encode(&self) -> Vec<u8> {
        go_ser::to_vec(mtype::PUSH_PULL, self)
    }

    /// The header at the front of a push-pull body (after the type byte),
    /// and the bytes it took.
    pub fn decode(body: &[u8]) -> Result<(PushPullHeader, usize)> {
        go_de::from_slice(body)
    }
}

/// A full state exchange (type 6), on streams only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushPull {
    pub join: bool,
    pub nodes: Vec<PushNodeState>,
    /// Serf's state (a Serf push-pull message), possibly empty.
    pub user_state: Vec<u8>,
}

/// A stream's error response (type 13).
#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct ErrResp<'a> {
    #[serde(rename = "Error", borrow)]
    error: std::borrow::Cow<'a, str>,
}

/// One memberlist message, after the envelopes are removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Ping(Ping),
    IndirectPing(IndirectPing),
    Ack(Ack),
    Nack(Nack),
    Suspect(Accuse),
    Alive(Alive),
    Dead(Accuse),
    User(Vec<u8>),
    PushPull(PushPull),
    Err(String),
}

pub fn addr_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

pub fn bytes_addr(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?);
            Some(
                v6.to_ipv4_mapped()
                    .map(IpAddr::V4)
                    .unwrap_or(IpAddr::V6(v6)),
            )
        }
        _ => None,
    }
}

impl Message {
    /// The message with its type byte, no envelope.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Ping(p) => go_ser::to_vec(mtype::PING, p),
            Message::IndirectPing(p) => go_ser::to_vec(mtype::INDIRECT_PING, p),
            Message::Ack(a) => go_ser::to_vec(mtype::ACK, a),
            Message::Nack(n) => go_ser::to_vec(mtype::NACK, n),
            Message::Suspect(a) => go_ser::to_vec(mtype::SUSPECT, a),
            Message::Dead(a) => go_ser::to_vec(mtype::DEAD, a),
            Message::Alive(a) => go_ser::to_vec(mtype::ALIVE, a),
            Message::User(b) => {
                let mut v = Vec::with_capacity(b.len() + 1);
                v.push(mtype::USER);
                v.extend_from_slice(b);
                v
            }
            Message::PushPull(pp) => {
                let mut buf = PushPullHeader {
                    join: pp.join,
                    nodes: pp.nodes.len() as u64,
                    user_state_len: pp.user_state.len() as u64,
                }
                .encode();
                for n in &pp.nodes {
                    go_ser::write(&mut buf, n);
                }
                buf.extend_from_slice(&pp.user_state);
                buf
            }
            Message::Err(s) => go_ser::to_vec(mtype::ERR, &ErrResp { error: s.into() }),
        }
    }

    /// Decodes one message (type byte first) that is not an envelope.
    pub fn decode(buf: &[u8]) -> Result<Message> {
        let (&t, body) = buf.split_first().ok_or(WireError::Empty)?;
        Ok(Message::decode_prefix(t, body)?.0)
    }

    /// The message of type `t` at the front of `body`, and the bytes of
    /// `body` it took (a user message takes them all).
    pub(super) fn decode_prefix(t: u8, body: &[u8]) -> Result<(Message, usize)> {
        fn de<'a, T: Deserialize<'a>>(
            body: &'a [u8],
            wrap: impl FnOnce(T) -> Message,
        ) -> Result<(Message, usize)> {
            go_de::from_slice(body).map(|(v, used)| (wrap(v), used))
        }
        match t {
            mtype::PING => de(body, Message::Ping),
            mtype::INDIRECT_PING => de(body, Message::IndirectPing),
            mtype::ACK => de(body, Message::Ack),
            mtype::NACK => de(body, Message::Nack),
            mtype::SUSPECT => de(body, Message::Suspect),
            mtype::DEAD => de(body, Message::Dead),
            mtype::ALIVE => de(body, Message::Alive),
            mtype::USER => Ok((Message::User(body.to_vec()), body.len())),
            mtype::PUSH_PULL => {
                decode_push_pull(body).map(|(pp, used)| (Message::PushPull(pp), used))
            }
            mtype::ERR => de(body, |e: ErrResp| Message::Err(e.error.into_owned())),
            other => Err(WireError::UnknownType(other)),
        }
    }
}

/// Push-pull body (after the type byte); returns it and bytes consumed.
pub(super) fn decode_push_pull(body: &[u8]) -> Result<(PushPull, usize)> {
    let (h, mut off) = PushPullHeader::decode(body)?;
    if h.nodes > 1024 * 1024 {
        return Err(WireError::Field("Nodes"));
    }
    if h.user_state_len > MAX_BODY as u64 {
        return Err(WireError::Field("UserStateLen"));
    }
    let mut nodes = Vec::with_capacity((h.nodes as usize).min(1024));
    for _ in 0..h.nodes {
        let (n, used) = go_de::from_slice(&body[off..])?;
        off += used;
        nodes.push(n);
    }
    let ulen = h.user_state_len as usize;
    if body.len() - off < ulen {
        return Err(WireError::Truncated);
    }
    let user_state = body[off..off + ulen].to_vec();
    Ok((
        PushPull {
            join: h.join,
            nodes,
            user_state,
        },
        off + ulen,
    ))
}
