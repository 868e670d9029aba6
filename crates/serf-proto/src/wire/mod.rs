//! The memberlist and Serf wire formats: the one place that parses and
//! builds bytes.
//!
//! What is here (checked against packets captured from serf 0.9.4):
//! - memberlist messages: one type byte, then a MessagePack map keyed by the
//!   Go field names. Keys are written in the order go-msgpack writes them
//!   (sorted), `[]byte` fields as msgpack "raw" (str family), integers in
//!   their smallest form. Decoding accepts str or bin for byte fields, any
//!   integer width, unknown keys, and arrays of ints for `Vsn`.
//! - the packet envelopes: label (244, dropped when empty), encryption
//!   (type 10 on streams; version byte + nonce + AES-GCM on packets), CRC
//!   (12), compression (9, LZW LSB literal width 8, like Go's
//!   `compress/lzw`), compound (7).
//! - TCP streams: push-pull (header, node states, Serf user state), user
//!   messages with their length header, ping/ack, error response;
//!   [`parse_stream`] tells "need more bytes" apart from "malformed".
//! - Serf messages carried in memberlist user messages: join/leave intents,
//!   user events, queries and responses, push-pull state, relay; and the
//!   tag meta (byte 255 + map).
//!
//! Not here: the payloads of Serf's keyring queries (`serf::encode_key_request`
//! and friends live with the Serf layer); conflict responses are ignored.
//!
//! Decoders return errors as values and never panic on hostile input.

use std::net::IpAddr;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, Nonce};
use rmpv::Value;

/// memberlist message type bytes.
pub mod mtype {
    pub const PING: u8 = 0;
    pub const INDIRECT_PING: u8 = 1;
    pub const ACK: u8 = 2;
    pub const SUSPECT: u8 = 3;
    pub const ALIVE: u8 = 4;
    pub const DEAD: u8 = 5;
    pub const PUSH_PULL: u8 = 6;
    pub const COMPOUND: u8 = 7;
    pub const USER: u8 = 8;
    pub const COMPRESS: u8 = 9;
    pub const ENCRYPT: u8 = 10;
    pub const NACK: u8 = 11;
    pub const HAS_CRC: u8 = 12;
    pub const ERR: u8 = 13;
    pub const HAS_LABEL: u8 = 244;
}

/// Serf message type bytes (first byte of a memberlist user message).
pub mod stype {
    pub const LEAVE: u8 = 0;
    pub const JOIN: u8 = 1;
    pub const PUSH_PULL: u8 = 2;
    pub const USER_EVENT: u8 = 3;
    pub const QUERY: u8 = 4;
    pub const QUERY_RESPONSE: u8 = 5;
    pub const CONFLICT_RESPONSE: u8 = 6;
    pub const KEY_REQUEST: u8 = 7;
    pub const KEY_RESPONSE: u8 = 8;
    pub const RELAY: u8 = 9;
}

/// Largest decompressed or decrypted body we accept (memberlist: 2 × 20 MiB).
pub const MAX_BODY: usize = 40 * 1024 * 1024;
/// Most plaintext one datagram may expand to through its compress
/// envelopes, all of them together. memberlist reads datagrams into a
/// 64 KiB buffer (udpPacketBufSize 65536) and builds the packets it sends
/// to fit a datagram before it compresses them, so no packet a memberlist
/// sends decompresses past 64 KiB. memberlist itself caps nothing here;
/// without a cap a ~20 KiB datagram of LZW codes expands to tens of MiB,
/// and its msgpack (one-byte values) to an `rmpv::Value` tree of GiB.
/// With it, the worst case is a few MiB of values (about 50 bytes each).
pub const MAX_PACKET_PLAIN: usize = 64 * 1024;
/// Nesting limit for msgpack values from the network.
const MAX_DEPTH: usize = 16;
/// Nesting limit for envelopes (compound in compress in compound ...).
const MAX_NEST: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message truncated")]
    Truncated,
    #[error("empty message")]
    Empty,
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("malformed msgpack: {0}")]
    Msgpack(String),
    #[error("missing or invalid field {0}")]
    Field(&'static str),
    #[error("bad checksum")]
    Crc,
    #[error("decompression failed: {0}")]
    Compress(String),
    #[error("no key could decrypt the message")]
    Decrypt,
    #[error("message is encrypted and no keyring is set")]
    EncryptedButNoKeys,
    #[error("message is not encrypted but encryption is required")]
    NotEncrypted,
    #[error("too large: {0} bytes")]
    TooLarge(usize),
    #[error("nested too deep")]
    TooDeep,
    #[error("{what} of {size} bytes is over the limit of {limit} bytes")]
    OverLimit {
        what: &'static str,
        size: u64,
        limit: usize,
    },
}

pub type Result<T> = std::result::Result<T, WireError>;

// ---------------------------------------------------------------------------
// MessagePack helpers

/// Builds a msgpack map; keys must be added in the order Go writes them.
pub struct MapEnc {
    buf: Vec<u8>,
}

impl MapEnc {
    pub fn new(buf: Vec<u8>, len: u32) -> Self {
        let mut e = MapEnc { buf };
        rmp::encode::write_map_len(&mut e.buf, len).expect("vec write");
        e
    }
    fn key(&mut self, k: &str) {
        rmp::encode::write_str(&mut self.buf, k).expect("vec write");
    }
    pub fn uint(mut self, k: &str, v: u64) -> Self {
        self.key(k);
        rmp::encode::write_uint(&mut self.buf, v).expect("vec write");
        self
    }
    pub fn int(mut self, k: &str, v: i64) -> Self {
        self.key(k);
        rmp::encode::write_sint(&mut self.buf, v).expect("vec write");
        self
    }
    pub fn str(mut self, k: &str, v: &str) -> Self {
        self.key(k);
        rmp::encode::write_str(&mut self.buf, v).expect("vec write");
        self
    }
    /// A Go `[]byte`: go-msgpack writes it as raw (str family); nil as nil.
    pub fn bytes(mut self, k: &str, v: &[u8]) -> Self {
        self.key(k);
        write_raw(&mut self.buf, v);
        self
    }
    pub fn nil(mut self, k: &str) -> Self {
        self.key(k);
        rmp::encode::write_nil(&mut self.buf).expect("vec write");
        self
    }
    pub fn bool(mut self, k: &str, v: bool) -> Self {
        self.key(k);
        rmp::encode::write_bool(&mut self.buf, v).expect("vec write");
        self
    }
    /// Appends an already encoded value under key `k`.
    pub fn raw_value(mut self, k: &str, encoded: &[u8]) -> Self {
        self.key(k);
        self.buf.extend_from_slice(encoded);
        self
    }
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

pub fn write_raw(buf: &mut Vec<u8>, v: &[u8]) {
    rmp::encode::write_str_len(buf, v.len() as u32).expect("vec write");
    buf.extend_from_slice(v);
}

fn write_str(buf: &mut Vec<u8>, v: &str) {
    rmp::encode::write_str(buf, v).expect("vec write");
}

/// Most msgpack values (containers and scalars, at any depth) one
/// [`read_value`] turns into an `rmpv::Value` tree. Go decodes into typed
/// structs, where a one-byte value stays about a byte; here each is a
/// `Value` of [`size_of::<Value>()`] bytes (40), so without a count a
/// 40 MiB stream of nils is a 1.6 GiB tree. The largest value a Serf peer
/// sends is a push-pull's state: about 4 values a member plus the event
/// buffer (512 Lamport times × a few events), under 200,000 for 10,000
/// members; 1 Mi values leaves room for 200,000 members, and bounds one
/// tree to 40 MiB. memberlist and Serf have no such count.
pub const MAX_VALUES: u64 = 1 << 20;

/// Counts the values of the msgpack value at the front of `buf` from its
/// headers alone (nothing allocated), refusing more than [`MAX_VALUES`].
/// A cut-off value passes: the decoder then says `Truncated`.
fn check_value_count(buf: &[u8]) -> Result<()> {
    let (mut pos, mut pending, mut seen) = (0usize, 1u64, 0u64);
    while pending > 0 {
        let Some((size, children)) = value_head(&buf[pos.min(buf.len())..])? else {
            return Ok(());
        };
        seen += 1;
        pending = pending - 1 + children;
        if seen + pending > MAX_VALUES {
            return Err(WireError::OverLimit {
                what: "msgpack value count",
                size: seen + pending,
                limit: MAX_VALUES as usize,
            });
        }
        pos = pos.saturating_add(size);
    }
    Ok(())
}

/// Reads one msgpack value from the front of `buf`; returns it and the
/// number of bytes it took. A cut-off value is `Truncated`; a value of
/// more than [`MAX_VALUES`] values is refused before any is decoded.
pub fn read_value(buf: &[u8]) -> Result<(Value, usize)> {
    check_value_count(buf)?;
    let mut cur = buf;
    match rmpv::decode::read_value_with_max_depth(&mut cur, MAX_DEPTH) {
        Ok(v) => Ok((v, buf.len() - cur.len())),
        Err(e) => {
            let eof = match &e {
                rmpv::decode::Error::InvalidMarkerRead(io)
                | rmpv::decode::Error::InvalidDataRead(io) => {
                    io.kind() == std::io::ErrorKind::UnexpectedEof
                }
                _ => false,
            };
            if eof {
                Err(WireError::Truncated)
            } else {
                Err(WireError::Msgpack(e.to_string()))
            }
        }
    }
}

/// Field access on a decoded msgpack map, Go-decoder style: missing fields
/// are zero values, unknown fields are ignored.
pub struct Fields<'a>(&'a [(Value, Value)]);

impl<'a> Fields<'a> {
    pub fn of(v: &'a Value) -> Result<Self> {
        match v {
            Value::Map(m) => Ok(Fields(m)),
            _ => Err(WireError::Msgpack("expected a map".into())),
        }
    }
    pub fn get(&self, k: &str) -> Option<&'a Value> {
        self.0.iter().find_map(|(key, v)| {
            let name = match key {
                Value::String(s) => s.as_bytes(),
                Value::Binary(b) => b.as_slice(),
                _ => return None,
            };
            (name == k.as_bytes()).then_some(v)
        })
    }
    pub fn uint(&self, k: &'static str) -> Result<u64> {
        match self.get(k) {
            None | Some(Value::Nil) => Ok(0),
            Some(v) => v.as_u64().ok_or(WireError::Field(k)),
        }
    }
    pub fn int(&self, k: &'static str) -> Result<i64> {
        match self.get(k) {
            None | Some(Value::Nil) => Ok(0),
            Some(v) => v
                .as_i64()
                .or_else(|| v.as_u64().map(|u| u as i64))
                .ok_or(WireError::Field(k)),
        }
    }
    pub fn u32(&self, k: &'static str) -> Result<u32> {
        u32::try_from(self.uint(k)?).map_err(|_| WireError::Field(k))
    }
    pub fn u16(&self, k: &'static str) -> Result<u16> {
        u16::try_from(self.uint(k)?).map_err(|_| WireError::Field(k))
    }
    pub fn bool(&self, k: &'static str) -> Result<bool> {
        match self.get(k) {
            None | Some(Value::Nil) => Ok(false),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(_) => Err(WireError::Field(k)),
        }
    }
    pub fn bytes(&self, k: &'static str) -> Result<Vec<u8>> {
        match self.get(k) {
            None | Some(Value::Nil) => Ok(Vec::new()),
            Some(v) => value_bytes(v).ok_or(WireError::Field(k)),
        }
    }
    pub fn string(&self, k: &'static str) -> Result<String> {
        let b = self.bytes(k)?;
        String::from_utf8(b).map_err(|_| WireError::Field(k))
    }
}

/// A Go `[]byte` or string: str, bin, or an array of small ints.
pub fn value_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Binary(b) => Some(b.clone()),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_u64().and_then(|u| u8::try_from(u).ok()))
            .collect(),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

fn value_string(v: &Value) -> Option<String> {
    value_bytes(v).and_then(|b| String::from_utf8(b).ok())
}

fn decode_map(body: &[u8]) -> Result<Value> {
    let (v, _) = read_value(body)?;
    Ok(v)
}

// ---------------------------------------------------------------------------
// memberlist messages

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ping {
    pub seq_no: u32,
    pub node: String,
    pub source_addr: Vec<u8>,
    pub source_port: u16,
    pub source_node: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndirectPing {
    pub seq_no: u32,
    pub target: Vec<u8>,
    pub port: u16,
    pub node: String,
    pub nack: bool,
    pub source_addr: Vec<u8>,
    pub source_port: u16,
    pub source_node: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ack {
    pub seq_no: u32,
    pub payload: Vec<u8>,
}

/// suspect (3) and dead (5) share this shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Accuse {
    pub incarnation: u32,
    pub node: String,
    pub from: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Alive {
    pub incarnation: u32,
    pub node: String,
    pub addr: Vec<u8>,
    pub port: u16,
    pub meta: Vec<u8>,
    pub vsn: Vec<u8>,
}

/// memberlist node state in push-pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    Alive = 0,
    Suspect = 1,
    Dead = 2,
    Left = 3,
}

impl NodeState {
    fn from_u64(v: u64) -> Option<Self> {
        Some(match v {
            0 => NodeState::Alive,
            1 => NodeState::Suspect,
            2 => NodeState::Dead,
            3 => NodeState::Left,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushNodeState {
    pub name: String,
    pub addr: Vec<u8>,
    pub port: u16,
    pub meta: Vec<u8>,
    pub incarnation: u32,
    pub state: NodeState,
    pub vsn: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushPull {
    pub join: bool,
    pub nodes: Vec<PushNodeState>,
    /// Serf's state (a Serf push-pull message), possibly empty.
    pub user_state: Vec<u8>,
}

/// One memberlist message, after the envelopes are removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Ping(Ping),
    IndirectPing(IndirectPing),
    Ack(Ack),
    Nack { seq_no: u32 },
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

fn enc_ping(p: &Ping) -> Vec<u8> {
    let mut n = 2;
    n += (!p.source_addr.is_empty()) as u32;
    n += (p.source_port != 0) as u32;
    n += (!p.source_node.is_empty()) as u32;
    let mut e = MapEnc::new(vec![mtype::PING], n).str("Node", &p.node);
    e = e.uint("SeqNo", p.seq_no as u64);
    if !p.source_addr.is_empty() {
        e = e.bytes("SourceAddr", &p.source_addr);
    }
    if !p.source_node.is_empty() {
        e = e.str("SourceNode", &p.source_node);
    }
    if p.source_port != 0 {
        e = e.uint("SourcePort", p.source_port as u64);
    }
    e.finish()
}

fn enc_indirect(p: &IndirectPing) -> Vec<u8> {
    let mut n = 5;
    n += (!p.source_addr.is_empty()) as u32;
    n += (p.source_port != 0) as u32;
    n += (!p.source_node.is_empty()) as u32;
    let mut e = MapEnc::new(vec![mtype::INDIRECT_PING], n)
        .bool("Nack", p.nack)
        .str("Node", &p.node)
        .uint("Port", p.port as u64)
        .uint("SeqNo", p.seq_no as u64);
    if !p.source_addr.is_empty() {
        e = e.bytes("SourceAddr", &p.source_addr);
    }
    if !p.source_node.is_empty() {
        e = e.str("SourceNode", &p.source_node);
    }
    if p.source_port != 0 {
        e = e.uint("SourcePort", p.source_port as u64);
    }
    e.bytes("Target", &p.target).finish()
}

fn enc_accuse(t: u8, a: &Accuse) -> Vec<u8> {
    MapEnc::new(vec![t], 3)
        .str("From", &a.from)
        .uint("Incarnation", a.incarnation as u64)
        .str("Node", &a.node)
        .finish()
}

fn enc_alive_fields(e: MapEnc, a: &Alive) -> MapEnc {
    e.bytes("Addr", &a.addr)
        .uint("Incarnation", a.incarnation as u64)
        .bytes("Meta", &a.meta)
        .str("Node", &a.node)
        .uint("Port", a.port as u64)
        .bytes("Vsn", &a.vsn)
}

fn enc_push_node(buf: Vec<u8>, n: &PushNodeState) -> Vec<u8> {
    MapEnc::new(buf, 7)
        .bytes("Addr", &n.addr)
        .uint("Incarnation", n.incarnation as u64)
        .bytes("Meta", &n.meta)
        .str("Name", &n.name)
        .uint("Port", n.port as u64)
        .uint("State", n.state as u64)
        .bytes("Vsn", &n.vsn)
        .finish()
}

impl Message {
    /// The message with its type byte, no envelope.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Ping(p) => enc_ping(p),
            Message::IndirectPing(p) => enc_indirect(p),
            Message::Ack(a) => MapEnc::new(vec![mtype::ACK], 2)
                .bytes("Payload", &a.payload)
                .uint("SeqNo", a.seq_no as u64)
                .finish(),
            Message::Nack { seq_no } => MapEnc::new(vec![mtype::NACK], 1)
                .uint("SeqNo", *seq_no as u64)
                .finish(),
            Message::Suspect(a) => enc_accuse(mtype::SUSPECT, a),
            Message::Dead(a) => enc_accuse(mtype::DEAD, a),
            Message::Alive(a) => enc_alive_fields(MapEnc::new(vec![mtype::ALIVE], 6), a).finish(),
            Message::User(b) => {
                let mut v = Vec::with_capacity(b.len() + 1);
                v.push(mtype::USER);
                v.extend_from_slice(b);
                v
            }
            Message::PushPull(pp) => {
                let mut buf = MapEnc::new(vec![mtype::PUSH_PULL], 3)
                    .bool("Join", pp.join)
                    .uint("Nodes", pp.nodes.len() as u64)
                    .uint("UserStateLen", pp.user_state.len() as u64)
                    .finish();
                for n in &pp.nodes {
                    buf = enc_push_node(buf, n);
                }
                buf.extend_from_slice(&pp.user_state);
                buf
            }
            Message::Err(s) => MapEnc::new(vec![mtype::ERR], 1).str("Error", s).finish(),
        }
    }

    /// Decodes one message (type byte first) that is not an envelope.
    pub fn decode(buf: &[u8]) -> Result<Message> {
        let (&t, body) = buf.split_first().ok_or(WireError::Empty)?;
        Ok(match t {
            mtype::PING => {
                let v = decode_map(body)?;
                let f = Fields::of(&v)?;
                Message::Ping(Ping {
                    seq_no: f.u32("SeqNo")?,
                    node: f.string("Node")?,
                    source_addr: f.bytes("SourceAddr")?,
                    source_port: f.u16("SourcePort")?,
                    source_node: f.string("SourceNode")?,
                })
            }
            mtype::INDIRECT_PING => {
                let v = decode_map(body)?;
                let f = Fields::of(&v)?;
                Message::IndirectPing(IndirectPing {
                    seq_no: f.u32("SeqNo")?,
                    target: f.bytes("Target")?,
                    port: f.u16("Port")?,
                    node: f.string("Node")?,
                    nack: f.bool("Nack")?,
                    source_addr: f.bytes("SourceAddr")?,
                    source_port: f.u16("SourcePort")?,
                    source_node: f.string("SourceNode")?,
                })
            }
            mtype::ACK => {
                let v = decode_map(body)?;
                let f = Fields::of(&v)?;
                Message::Ack(Ack {
                    seq_no: f.u32("SeqNo")?,
                    payload: f.bytes("Payload")?,
                })
            }
            mtype::NACK => {
                let v = decode_map(body)?;
                Message::Nack {
                    seq_no: Fields::of(&v)?.u32("SeqNo")?,
                }
            }
            mtype::SUSPECT | mtype::DEAD => {
                let v = decode_map(body)?;
                let f = Fields::of(&v)?;
                let a = Accuse {
                    incarnation: f.u32("Incarnation")?,
                    node: f.string("Node")?,
                    from: f.string("From")?,
                };
                if t == mtype::SUSPECT {
                    Message::Suspect(a)
                } else {
                    Message::Dead(a)
                }
            }
            mtype::ALIVE => {
                let v = decode_map(body)?;
                let f = Fields::of(&v)?;
                Message::Alive(Alive {
                    incarnation: f.u32("Incarnation")?,
                    node: f.string("Node")?,
                    addr: f.bytes("Addr")?,
                    port: f.u16("Port")?,
                    meta: f.bytes("Meta")?,
                    vsn: f.bytes("Vsn")?,
                })
            }
            mtype::USER => Message::User(body.to_vec()),
            mtype::PUSH_PULL => Message::PushPull(decode_push_pull(body)?.0),
            mtype::ERR => {
                let v = decode_map(body)?;
                Message::Err(Fields::of(&v)?.string("Error")?)
            }
            other => return Err(WireError::UnknownType(other)),
        })
    }
}

/// Push-pull body (after the type byte); returns it and bytes consumed.
fn decode_push_pull(body: &[u8]) -> Result<(PushPull, usize)> {
    let (hv, mut off) = read_value(body)?;
    let h = Fields::of(&hv)?;
    let n = h.int("Nodes")?;
    let ulen = h.int("UserStateLen")?;
    if !(0..=1024 * 1024).contains(&n) {
        return Err(WireError::Field("Nodes"));
    }
    if ulen < 0 || ulen as usize > MAX_BODY {
        return Err(WireError::Field("UserStateLen"));
    }
    let join = h.bool("Join")?;
    let mut nodes = Vec::with_capacity((n as usize).min(1024));
    for _ in 0..n {
        let (v, used) = read_value(&body[off..])?;
        off += used;
        let f = Fields::of(&v)?;
        nodes.push(PushNodeState {
            name: f.string("Name")?,
            addr: f.bytes("Addr")?,
            port: f.u16("Port")?,
            meta: f.bytes("Meta")?,
            incarnation: f.u32("Incarnation")?,
            state: NodeState::from_u64(f.uint("State")?).ok_or(WireError::Field("State"))?,
            vsn: f.bytes("Vsn")?,
        });
    }
    let ulen = ulen as usize;
    if body.len() - off < ulen {
        return Err(WireError::Truncated);
    }
    let user_state = body[off..off + ulen].to_vec();
    Ok((
        PushPull {
            join,
            nodes,
            user_state,
        },
        off + ulen,
    ))
}

// ---------------------------------------------------------------------------
// Envelopes

pub fn make_compound(msgs: &[Vec<u8>]) -> Vec<u8> {
    debug_assert!(msgs.len() <= 255);
    let total: usize = msgs.iter().map(|m| m.len() + 2).sum();
    let mut buf = Vec::with_capacity(2 + total);
    buf.push(mtype::COMPOUND);
    buf.push(msgs.len() as u8);
    for m in msgs {
        buf.extend_from_slice(&(m.len() as u16).to_be_bytes());
    }
    for m in msgs {
        buf.extend_from_slice(m);
    }
    buf
}

/// Parts of a compound body (after the type byte). Like memberlist, parts
/// cut off at the end are dropped and counted in the second value.
pub fn split_compound(body: &[u8]) -> Result<(Vec<&[u8]>, usize)> {
    let (&n, rest) = body.split_first().ok_or(WireError::Truncated)?;
    let n = n as usize;
    if rest.len() < n * 2 {
        return Err(WireError::Truncated);
    }
    let (lens, mut data) = rest.split_at(n * 2);
    let mut parts = Vec::with_capacity(n);
    for (i, l) in lens.chunks_exact(2).enumerate() {
        let l = u16::from_be_bytes([l[0], l[1]]) as usize;
        if data.len() < l {
            return Ok((parts, n - i));
        }
        let (p, r) = data.split_at(l);
        parts.push(p);
        data = r;
    }
    Ok((parts, 0))
}

pub fn lzw_compress(data: &[u8]) -> Vec<u8> {
    let mut enc = weezl::encode::Encoder::new(weezl::BitOrder::Lsb, 8);
    enc.encode(data).unwrap_or_default()
}

pub fn lzw_decompress(data: &[u8]) -> Result<Vec<u8>> {
    lzw_decompress_max(data, MAX_BODY)
}

/// Decompresses at most `max` bytes: the output is checked after every
/// chunk (8 KiB), so no more than `max` + 8 KiB is ever produced.
pub fn lzw_decompress_max(data: &[u8], max: usize) -> Result<Vec<u8>> {
    let mut dec = weezl::decode::Decoder::new(weezl::BitOrder::Lsb, 8);
    let mut out = Vec::new();
    let mut input = data;
    // A small stack buffer: zeroing a large one per packet was the
    // simulator's hottest spot.
    let mut chunk = [0u8; 8192];
    loop {
        let r = dec.decode_bytes(input, &mut chunk);
        input = &input[r.consumed_in..];
        out.extend_from_slice(&chunk[..r.consumed_out]);
        if out.len() > max {
            return Err(WireError::OverLimit {
                what: "decompressed message",
                size: out.len() as u64,
                limit: max,
            });
        }
        match r.status {
            Ok(weezl::LzwStatus::Done) => break,
            Ok(weezl::LzwStatus::Ok) => {}
            Ok(weezl::LzwStatus::NoProgress) => {
                // Go's writer always ends with an EOF code; tolerate a missing one.
                if r.consumed_in == 0 && r.consumed_out == 0 {
                    break;
                }
            }
            Err(e) => return Err(WireError::Compress(e.to_string())),
        }
    }
    Ok(out)
}

/// Wraps a message in a compress message (type 9).
pub fn compress_msg(msg: &[u8]) -> Vec<u8> {
    let c = lzw_compress(msg);
    MapEnc::new(vec![mtype::COMPRESS], 2)
        .uint("Algo", 0)
        .bytes("Buf", &c)
        .finish()
}

/// Unwraps a compress body (after the type byte); returns the inner
/// message and the bytes of the body consumed.
pub fn decompress_body(body: &[u8]) -> Result<(Vec<u8>, usize)> {
    decompress_body_max(body, MAX_BODY)
}

/// [`decompress_body`] producing at most `max` bytes.
pub fn decompress_body_max(body: &[u8], max: usize) -> Result<(Vec<u8>, usize)> {
    let (v, used) = read_value(body)?;
    let f = Fields::of(&v)?;
    if f.uint("Algo")? != 0 {
        return Err(WireError::Field("Algo"));
    }
    let buf = match f.get("Buf") {
        Some(Value::Binary(b)) => &b[..],
        Some(Value::String(s)) => s.as_bytes(),
        _ => return Err(WireError::Field("Buf")),
    };
    let out = lzw_decompress_max(buf, max)?;
    if out.is_empty() {
        return Err(WireError::Empty);
    }
    Ok((out, used))
}

pub fn add_crc(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 5);
    out.push(mtype::HAS_CRC);
    out.extend_from_slice(&crc32fast::hash(msg).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// Strips a label header (244, len, label); returns the label and the rest.
pub fn strip_label(buf: &[u8]) -> Result<(&[u8], &[u8])> {
    if buf.first() != Some(&mtype::HAS_LABEL) {
        return Ok((&[], buf));
    }
    let len = *buf.get(1).ok_or(WireError::Truncated)? as usize;
    if buf.len() < 2 + len {
        return Err(WireError::Truncated);
    }
    Ok((&buf[2..2 + len], &buf[2 + len..]))
}

// --- encryption (memberlist security.go: version 1 = AES-GCM, no padding;
// version 0 = AES-GCM over PKCS7-padded plaintext).

const NONCE_SIZE: usize = 12;
const TAG_SIZE: usize = 16;

fn gcm_open(key: &[u8], nonce: &[u8], ct: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let nonce = Nonce::from_slice(nonce);
    let p = Payload { msg: ct, aad };
    match key.len() {
        16 => Aes128Gcm::new_from_slice(key).ok()?.decrypt(nonce, p).ok(),
        24 => {
            aes_gcm::AesGcm::<aes_gcm::aes::Aes192, aes_gcm::aead::consts::U12>::new_from_slice(key)
                .ok()?
                .decrypt(nonce, p)
                .ok()
        }
        32 => Aes256Gcm::new_from_slice(key).ok()?.decrypt(nonce, p).ok(),
        _ => None,
    }
}

fn gcm_seal(key: &[u8], nonce: &[u8], pt: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let nonce = Nonce::from_slice(nonce);
    let p = Payload { msg: pt, aad };
    match key.len() {
        16 => Aes128Gcm::new_from_slice(key).ok()?.encrypt(nonce, p).ok(),
        24 => {
            aes_gcm::AesGcm::<aes_gcm::aes::Aes192, aes_gcm::aead::consts::U12>::new_from_slice(key)
                .ok()?
                .encrypt(nonce, p)
                .ok()
        }
        32 => Aes256Gcm::new_from_slice(key).ok()?.encrypt(nonce, p).ok(),
        _ => None,
    }
}

/// Encrypts with version 1 (no padding): version byte, nonce, ciphertext+tag.
pub fn encrypt_payload(key: &[u8], nonce: [u8; 12], msg: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(1 + NONCE_SIZE + msg.len() + TAG_SIZE);
    out.push(1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&gcm_seal(key, &nonce, msg, aad)?);
    Some(out)
}

/// Tries every key of the keyring (primary first).
pub fn decrypt_payload(keys: &[Vec<u8>], msg: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    let (&vsn, _) = msg.split_first().ok_or(WireError::Empty)?;
    if vsn > 1 {
        return Err(WireError::Decrypt);
    }
    if msg.len() < 1 + NONCE_SIZE + TAG_SIZE {
        return Err(WireError::Truncated);
    }
    let nonce = &msg[1..1 + NONCE_SIZE];
    let ct = &msg[1 + NONCE_SIZE..];
    for k in keys {
        if let Some(mut plain) = gcm_open(k, nonce, ct, aad) {
            if vsn == 0 {
                let pad = *plain.last().ok_or(WireError::Decrypt)? as usize;
                if pad == 0 || pad > plain.len() {
                    return Err(WireError::Decrypt);
                }
                plain.truncate(plain.len() - pad);
            }
            return Ok(plain);
        }
    }
    Err(WireError::Decrypt)
}

/// Settings for the envelopes of outgoing packets and streams.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// Keyring, primary first; empty: no encryption.
    pub keys: Vec<Vec<u8>>,
    pub compress: bool,
}

/// Removes a packet's envelopes and returns the memberlist messages in it,
/// plus how many parts were dropped as malformed or truncated. All its
/// compress envelopes together expand to at most [`MAX_PACKET_PLAIN`].
pub fn decode_packet(keys: &[Vec<u8>], buf: &[u8]) -> Result<(Vec<Message>, usize)> {
    let (label, buf) = strip_label(buf)?;
    if !label.is_empty() {
        // We run without a label, like serf 0.9.4; memberlist drops those.
        return Err(WireError::Field("label"));
    }
    let plain;
    let buf = if keys.is_empty() {
        buf
    } else {
        plain = decrypt_payload(keys, buf, label)?;
        &plain[..]
    };
    let mut out = Vec::new();
    let mut dropped = 0;
    let mut budget = MAX_PACKET_PLAIN;
    decode_command(buf, 0, &mut out, &mut dropped, &mut budget)?;
    Ok((out, dropped))
}

/// `budget`: decompressed bytes this packet may still produce.
fn decode_command(
    buf: &[u8],
    depth: usize,
    out: &mut Vec<Message>,
    dropped: &mut usize,
    budget: &mut usize,
) -> Result<()> {
    if depth > MAX_NEST {
        return Err(WireError::TooDeep);
    }
    let (&t, body) = buf.split_first().ok_or(WireError::Empty)?;
    match t {
        mtype::HAS_CRC => {
            if body.len() < 4 {
                return Err(WireError::Truncated);
            }
            let want = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            if crc32fast::hash(&body[4..]) != want {
                return Err(WireError::Crc);
            }
            decode_command(&body[4..], depth + 1, out, dropped, budget)
        }
        mtype::COMPRESS => {
            let (inner, _) = decompress_body_max(body, *budget).inspect_err(|e| {
                if matches!(e, WireError::OverLimit { .. }) {
                    *budget = 0;
                }
            })?;
            *budget -= inner.len();
            decode_command(&inner, depth + 1, out, dropped, budget)
        }
        mtype::COMPOUND => {
            let (parts, trunc) = split_compound(body)?;
            *dropped += trunc;
            for p in parts {
                if decode_command(p, depth + 1, out, dropped, budget).is_err() {
                    *dropped += 1;
                }
            }
            Ok(())
        }
        mtype::ENCRYPT | mtype::HAS_LABEL => Err(WireError::UnknownType(t)),
        _ => {
            out.push(Message::decode(buf)?);
            Ok(())
        }
    }
}

/// Applies compression (if smaller), CRC (when the peer speaks protocol ≥ 5)
/// and encryption to an outgoing packet.
pub fn encode_packet(env: &Envelope, msg: &[u8], crc: bool, nonce: [u8; 12]) -> Vec<u8> {
    let mut msg = msg.to_vec();
    if env.compress {
        let c = compress_msg(&msg);
        if c.len() < msg.len() {
            msg = c;
        }
    }
    if crc {
        msg = add_crc(&msg);
    }
    if let Some(k) = env.keys.first() {
        if let Some(e) = encrypt_payload(k, nonce, &msg, &[]) {
            msg = e;
        }
    }
    msg
}

/// Wraps a stream message (push-pull, user, ping, ack, err) for TCP.
pub fn encode_stream(env: &Envelope, msg: &[u8], nonce: [u8; 12]) -> Vec<u8> {
    let mut msg = msg.to_vec();
    if env.compress {
        msg = compress_msg(&msg);
    }
    if let Some(k) = env.keys.first() {
        let enc_len = 1 + NONCE_SIZE + msg.len() + TAG_SIZE;
        let mut head = vec![mtype::ENCRYPT];
        head.extend_from_slice(&(enc_len as u32).to_be_bytes());
        if let Some(e) = encrypt_payload(k, nonce, &msg, &head) {
            head.extend_from_slice(&e);
            return head;
        }
    }
    msg
}

/// Parses one message from the front of a TCP stream buffer.
/// `Ok(None)`: more bytes are needed. On success returns the message and
/// the number of bytes it used.
pub fn parse_stream(keys: &[Vec<u8>], buf: &[u8]) -> Result<Option<(Message, usize)>> {
    match parse_stream_inner(keys, buf) {
        Err(WireError::Truncated) => Ok(None),
        other => other.map(Some),
    }
}

fn parse_stream_inner(keys: &[Vec<u8>], buf: &[u8]) -> Result<(Message, usize)> {
    let (label, rest) = strip_label(buf)?;
    if !label.is_empty() {
        return Err(WireError::Field("label"));
    }
    let lab = buf.len() - rest.len();
    let (&t, body) = rest.split_first().ok_or(WireError::Truncated)?;
    if t == mtype::ENCRYPT {
        if keys.is_empty() {
            return Err(WireError::EncryptedButNoKeys);
        }
        if body.len() < 4 {
            return Err(WireError::Truncated);
        }
        let n = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
        if n > MAX_BODY / 2 {
            return Err(WireError::TooLarge(n));
        }
        if body.len() < 4 + n {
            return Err(WireError::Truncated);
        }
        let plain = decrypt_payload(keys, &body[4..4 + n], &rest[..5])?;
        // The decrypted body holds the whole message: a truncation inside
        // it is malformed, not "need more".
        let (m, _) = parse_plain_stream(&plain).map_err(|e| match e {
            WireError::Truncated => WireError::Msgpack("truncated inside encrypted stream".into()),
            e => e,
        })?;
        return Ok((m, lab + 5 + n));
    }
    if !keys.is_empty() {
        return Err(WireError::NotEncrypted);
    }
    let (m, used) = parse_plain_stream(rest)?;
    Ok((m, lab + used))
}

fn parse_plain_stream(buf: &[u8]) -> Result<(Message, usize)> {
    let (&t, body) = buf.split_first().ok_or(WireError::Truncated)?;
    if t == mtype::COMPRESS {
        let (inner, used) = decompress_body(body)?;
        let (m, _) = parse_plain_stream(&inner).map_err(|e| match e {
            WireError::Truncated => WireError::Msgpack("truncated inside compressed stream".into()),
            e => e,
        })?;
        return Ok((m, 1 + used));
    }
    match t {
        mtype::PUSH_PULL => {
            let (pp, used) = decode_push_pull(body)?;
            Ok((Message::PushPull(pp), 1 + used))
        }
        mtype::USER => {
            let (hv, used) = read_value(body)?;
            let n = Fields::of(&hv)?.int("UserMsgLen")?;
            if n < 0 || n as usize > MAX_BODY / 2 {
                return Err(WireError::Field("UserMsgLen"));
            }
            let n = n as usize;
            if body.len() - used < n {
                return Err(WireError::Truncated);
            }
            Ok((Message::User(body[used..used + n].to_vec()), 1 + used + n))
        }
        mtype::PING | mtype::ACK | mtype::ERR => {
            let (_, used) = read_value(body)?;
            Ok((Message::decode(&buf[..1 + used])?, 1 + used))
        }
        other => Err(WireError::UnknownType(other)),
    }
}

/// Finds where the first message of a TCP stream ends, incrementally:
/// feed it the growing buffer and it resumes where it stopped, so a
/// message arriving in many chunks costs one pass over its bytes (then one
/// decode, with [`parse_stream`]). Every length a frame announces (an
/// encrypted frame's, a push-pull's node count and user state, a user
/// message's, a msgpack string's or array's) is checked against `limit`
/// as soon as its header is in, before any of what it announces is read.
#[derive(Debug)]
pub struct StreamFrame {
    limit: usize,
    /// Whether the stream must be encrypted (we have keys).
    keyed: bool,
    /// Bytes of the frame accounted for so far.
    pos: usize,
    /// msgpack values still to skip from `pos` (the current step's).
    pending: u64,
    step: Step,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// Before the (optional) label and the type byte.
    Start,
    /// Skipping one header value that starts at `start`, of type `t`.
    Header { t: u8, start: usize },
    /// Skipping a push-pull's node values, then `ulen` bytes of state.
    Nodes { ulen: usize },
    /// The frame is `len` bytes.
    Done(usize),
}

impl StreamFrame {
    pub fn new(limit: usize, keyed: bool) -> Self {
        StreamFrame {
            limit,
            keyed,
            pos: 0,
            pending: 0,
            step: Step::Start,
        }
    }

    /// The whole message's length, once its headers have said it.
    pub fn known_len(&self) -> Option<usize> {
        match self.step {
            Step::Done(n) => Some(n),
            _ => None,
        }
    }

    /// The first message's length once `buf` (the stream so far, always
    /// the same prefix growing) holds all of it; `None`: read more.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Option<usize>> {
        loop {
            match self.step {
                Step::Done(n) => return Ok((buf.len() >= n).then_some(n)),
                Step::Start => {
                    let mut at = 0;
                    if buf.first() == Some(&mtype::HAS_LABEL) {
                        let Some(&l) = buf.get(1) else {
                            return Ok(None);
                        };
                        at = 2 + l as usize;
                    }
                    let Some(&t) = buf.get(at) else {
                        return Ok(None);
                    };
                    at += 1;
                    match (t, self.keyed) {
                        (mtype::ENCRYPT, false) => return Err(WireError::EncryptedButNoKeys),
                        (mtype::ENCRYPT, true) => {
                            let Some(l) = buf.get(at..at + 4) else {
                                return Ok(None);
                            };
                            let n = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
                            self.step = Step::Done(self.check("encrypted frame", at + 4, n)?);
                        }
                        (_, true) => return Err(WireError::NotEncrypted),
                        (
                            mtype::COMPRESS
                            | mtype::PING
                            | mtype::ACK
                            | mtype::ERR
                            | mtype::USER
                            | mtype::PUSH_PULL,
                            false,
                        ) => {
                            self.pos = at;
                            self.pending = 1;
                            self.step = Step::Header { t, start: at };
                        }
                        (other, false) => return Err(WireError::UnknownType(other)),
                    }
                }
                Step::Header { t, start } => {
                    if !self.skip_values(buf)? {
                        return Ok(None);
                    }
                    let head = &buf[start..self.pos];
                    self.step = match t {
                        mtype::USER => {
                            let (hv, _) = read_value(head)?;
                            let n = Fields::of(&hv)?.uint("UserMsgLen")?;
                            Step::Done(self.check("user message", self.pos, n as usize)?)
                        }
                        mtype::PUSH_PULL => {
                            let (hv, _) = read_value(head)?;
                            let h = Fields::of(&hv)?;
                            let nodes = h.uint("Nodes")?;
                            let ulen = h.uint("UserStateLen")? as usize;
                            // Each node is at least one byte.
                            self.check("push-pull node count", self.pos, nodes as usize)?;
                            self.check("push-pull user state", self.pos, ulen)?;
                            self.check("push-pull", self.pos + nodes as usize, ulen)?;
                            self.pending = nodes;
                            Step::Nodes { ulen }
                        }
                        _ => Step::Done(self.pos),
                    };
                }
                Step::Nodes { ulen } => {
                    if !self.skip_values(buf)? {
                        return Ok(None);
                    }
                    self.step = Step::Done(self.check("push-pull", self.pos, ulen)?);
                }
            }
        }
    }

    /// `at + n`, if within the limit.
    fn check(&self, what: &'static str, at: usize, n: usize) -> Result<usize> {
        match at.checked_add(n) {
            Some(end) if end <= self.limit => Ok(end),
            _ => Err(WireError::OverLimit {
                what,
                size: n as u64,
                limit: self.limit,
            }),
        }
    }

    /// Skips `pending` msgpack values from `pos`, headers only (a string
    /// or binary's bytes are skipped whole); true once all are skipped.
    fn skip_values(&mut self, buf: &[u8]) -> Result<bool> {
        while self.pending > 0 {
            let Some((size, children)) = value_head(&buf[self.pos..])? else {
                return Ok(false);
            };
            let end = self.check("msgpack value", self.pos, size)?;
            // Each value is at least one byte.
            if children > (self.limit - end) as u64 {
                return Err(WireError::OverLimit {
                    what: "msgpack container",
                    size: children,
                    limit: self.limit,
                });
            }
            if buf.len() < end {
                return Ok(false);
            }
            self.pos = end;
            self.pending = self.pending - 1 + children;
        }
        Ok(true)
    }
}

/// The size of the msgpack value at the front of `buf` without its
/// elements (a string's or binary's bytes included), and how many
/// elements follow it (map: 2 per entry). `None`: its header is cut off.
fn value_head(buf: &[u8]) -> Result<Option<(usize, u64)>> {
    let Some(&m) = buf.first() else {
        return Ok(None);
    };
    // Reads a big-endian length of `w` bytes after the marker.
    let len = |w: usize| -> Option<u64> {
        let b = buf.get(1..1 + w)?;
        Some(b.iter().fold(0u64, |a, &x| a << 8 | x as u64))
    };
    let r = match m {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Some((1, 0)),
        0x80..=0x8f => Some((1, 2 * (m & 0x0f) as u64)),
        0x90..=0x9f => Some((1, (m & 0x0f) as u64)),
        0xa0..=0xbf => Some((1 + (m & 0x1f) as usize, 0)),
        0xc1 => return Err(WireError::Msgpack("reserved marker 0xc1".into())),
        0xc4 | 0xd9 => len(1).map(|n| (2 + n as usize, 0)),
        0xc5 | 0xda => len(2).map(|n| (3 + n as usize, 0)),
        0xc6 | 0xdb => len(4).map(|n| (5 + n as usize, 0)),
        0xc7 => len(1).map(|n| (3 + n as usize, 0)),
        0xc8 => len(2).map(|n| (4 + n as usize, 0)),
        0xc9 => len(4).map(|n| (6 + n as usize, 0)),
        0xca => Some((5, 0)),
        0xcb => Some((9, 0)),
        0xcc | 0xd0 => Some((2, 0)),
        0xcd | 0xd1 => Some((3, 0)),
        0xce | 0xd2 => Some((5, 0)),
        0xcf | 0xd3 => Some((9, 0)),
        0xd4 => Some((3, 0)),
        0xd5 => Some((4, 0)),
        0xd6 => Some((6, 0)),
        0xd7 => Some((10, 0)),
        0xd8 => Some((18, 0)),
        0xdc => len(2).map(|n| (3, n)),
        0xdd => len(4).map(|n| (5, n)),
        0xde => len(2).map(|n| (3, 2 * n)),
        0xdf => len(4).map(|n| (5, 2 * n)),
    };
    Ok(r)
}

/// A user message for a TCP stream (type 8, length header, payload).
pub fn user_stream_msg(payload: &[u8]) -> Vec<u8> {
    let mut v = MapEnc::new(vec![mtype::USER], 1)
        .uint("UserMsgLen", payload.len() as u64)
        .finish();
    v.extend_from_slice(payload);
    v
}

// ---------------------------------------------------------------------------
// Name conflict resolution

/// What a member believes of a node whose name is disputed: the payload of
/// a `_serf_conflict` response (type byte 6, then Serf's `Member` struct as
/// a map in field order, or nil when the member does not know the node).
pub fn encode_conflict_response(m: Option<&crate::model::Member>) -> Vec<u8> {
    let mut buf = vec![stype::CONFLICT_RESPONSE];
    let Some(m) = m else {
        rmp::encode::write_nil(&mut buf).expect("vec write");
        return buf;
    };
    let mut tags = Vec::new();
    rmp::encode::write_map_len(&mut tags, m.tags.len() as u32).expect("vec write");
    for (k, v) in &m.tags {
        write_str(&mut tags, k);
        write_str(&mut tags, v);
    }
    let status = match m.status {
        crate::model::MemberStatus::None => 0,
        crate::model::MemberStatus::Alive => 1,
        crate::model::MemberStatus::Leaving => 2,
        crate::model::MemberStatus::Left => 3,
        crate::model::MemberStatus::Failed => 4,
    };
    MapEnc::new(buf, 11)
        .str("Name", &m.name)
        .bytes("Addr", &addr_bytes(m.addr))
        .uint("Port", m.port.into())
        .raw_value("Tags", &tags)
        .int("Status", status)
        .uint("ProtocolMin", m.protocol[0].into())
        .uint("ProtocolMax", m.protocol[1].into())
        .uint("ProtocolCur", m.protocol[2].into())
        .uint("DelegateMin", m.delegate[0].into())
        .uint("DelegateMax", m.delegate[1].into())
        .uint("DelegateCur", m.delegate[2].into())
        .finish()
}

/// The address and port a `_serf_conflict` response vouches for; `None`
/// when the responder does not know the node (Serf counts such an answer
/// as a response that does not match).
pub fn decode_conflict_response(payload: &[u8]) -> Result<Option<(IpAddr, u16)>> {
    match payload.split_first() {
        Some((&stype::CONFLICT_RESPONSE, body)) => {
            let v = decode_map(body)?;
            if v.is_nil() {
                return Ok(None);
            }
            let f = Fields::of(&v)?;
            let ip = bytes_addr(&f.bytes("Addr")?).ok_or(WireError::Field("Addr"))?;
            Ok(Some((ip, f.u16("Port")?)))
        }
        Some((&t, _)) => Err(WireError::UnknownType(t)),
        None => Err(WireError::Field("conflict response")),
    }
}

// ---------------------------------------------------------------------------
// Serf messages

/// Serf's tags in node meta: 255 then a map of str to str (Go map: order is
/// whatever the sender wrote, we keep it). Old meta without 255 is the role.
pub fn encode_tags(tags: &[(String, String)]) -> Vec<u8> {
    let mut buf = vec![255u8];
    rmp::encode::write_map_len(&mut buf, tags.len() as u32).expect("vec write");
    for (k, v) in tags {
        write_str(&mut buf, k);
        write_str(&mut buf, v);
    }
    buf
}

pub fn decode_tags(meta: &[u8]) -> Result<Vec<(String, String)>> {
    match meta.split_first() {
        None => Ok(Vec::new()),
        Some((255, body)) => {
            let v = decode_map(body)?;
            match v {
                Value::Map(m) => m
                    .iter()
                    .map(|(k, v)| {
                        Ok((
                            value_string(k).ok_or(WireError::Field("tag"))?,
                            value_string(v).ok_or(WireError::Field("tag"))?,
                        ))
                    })
                    .collect(),
                _ => Err(WireError::Field("tags")),
            }
        }
        Some(_) => Ok(vec![(
            "role".to_string(),
            String::from_utf8_lossy(meta).into_owned(),
        )]),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserEventRec {
    pub name: String,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserEvents {
    pub ltime: u64,
    pub events: Vec<UserEventRec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SerfPushPull {
    pub ltime: u64,
    /// node -> status ltime (order as received).
    pub status_ltimes: Vec<(String, u64)>,
    pub left_members: Vec<String>,
    pub event_ltime: u64,
    pub events: Vec<UserEvents>,
    pub query_ltime: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    pub ltime: u64,
    pub id: u32,
    pub addr: Vec<u8>,
    pub port: u16,
    pub source_node: String,
    pub filters: Vec<Vec<u8>>,
    pub flags: u32,
    pub relay_factor: u8,
    /// nanoseconds (Go `time.Duration`)
    pub timeout: i64,
    pub name: String,
    pub payload: Vec<u8>,
}

pub const QUERY_FLAG_ACK: u32 = 1;
pub const QUERY_FLAG_NO_BROADCAST: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueryResponse {
    pub ltime: u64,
    pub id: u32,
    pub from: String,
    pub flags: u32,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerfMessage {
    Leave {
        ltime: u64,
        node: String,
        prune: bool,
    },
    Join {
        ltime: u64,
        node: String,
    },
    PushPull(SerfPushPull),
    UserEvent {
        ltime: u64,
        name: String,
        payload: Vec<u8>,
        cc: bool,
    },
    Query(Query),
    QueryResponse(QueryResponse),
    /// Relay: forward `inner` (a Serf message) to `dest`.
    Relay {
        dest_addr: Vec<u8>,
        dest_port: u16,
        dest_name: String,
        inner: Vec<u8>,
    },
    /// Types we accept but do not act on (conflict and key messages).
    Other(u8),
}

fn enc_query_fields(buf: Vec<u8>, q: &Query) -> Vec<u8> {
    let mut filters = Vec::new();
    if q.filters.is_empty() {
        rmp::encode::write_nil(&mut filters).expect("vec write");
    } else {
        rmp::encode::write_array_len(&mut filters, q.filters.len() as u32).expect("vec write");
        for f in &q.filters {
            write_raw(&mut filters, f);
        }
    }
    MapEnc::new(buf, 11)
        .bytes("Addr", &q.addr)
        .raw_value("Filters", &filters)
        .uint("Flags", q.flags as u64)
        .uint("ID", q.id as u64)
        .uint("LTime", q.ltime)
        .str("Name", &q.name)
        .bytes("Payload", &q.payload)
        .uint("Port", q.port as u64)
        .uint("RelayFactor", q.relay_factor as u64)
        .str("SourceNode", &q.source_node)
        .int("Timeout", q.timeout)
        .finish()
}

impl SerfMessage {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            SerfMessage::Leave { ltime, node, prune } => MapEnc::new(vec![stype::LEAVE], 3)
                .uint("LTime", *ltime)
                .str("Node", node)
                .bool("Prune", *prune)
                .finish(),
            SerfMessage::Join { ltime, node } => MapEnc::new(vec![stype::JOIN], 2)
                .uint("LTime", *ltime)
                .str("Node", node)
                .finish(),
            SerfMessage::UserEvent {
                ltime,
                name,
                payload,
                cc,
            } => MapEnc::new(vec![stype::USER_EVENT], 4)
                .bool("CC", *cc)
                .uint("LTime", *ltime)
                .str("Name", name)
                .bytes("Payload", payload)
                .finish(),
            SerfMessage::Query(q) => enc_query_fields(vec![stype::QUERY], q),
            SerfMessage::QueryResponse(r) => MapEnc::new(vec![stype::QUERY_RESPONSE], 5)
                .uint("Flags", r.flags as u64)
                .str("From", &r.from)
                .uint("ID", r.id as u64)
                .uint("LTime", r.ltime)
                .bytes("Payload", &r.payload)
                .finish(),
            SerfMessage::PushPull(pp) => {
                let mut events = Vec::new();
                rmp::encode::write_array_len(&mut events, pp.events.len() as u32)
                    .expect("vec write");
                for ue in &pp.events {
                    let mut inner = Vec::new();
                    rmp::encode::write_array_len(&mut inner, ue.events.len() as u32)
                        .expect("vec write");
                    for e in &ue.events {
                        inner = MapEnc::new(inner, 2)
                            .str("Name", &e.name)
                            .bytes("Payload", &e.payload)
                            .finish();
                    }
                    events = MapEnc::new(events, 2)
                        .raw_value("Events", &inner)
                        .uint("LTime", ue.ltime)
                        .finish();
                }
                let mut left = Vec::new();
                rmp::encode::write_array_len(&mut left, pp.left_members.len() as u32)
                    .expect("vec write");
                for l in &pp.left_members {
                    write_str(&mut left, l);
                }
                let mut st = Vec::new();
                rmp::encode::write_map_len(&mut st, pp.status_ltimes.len() as u32)
                    .expect("vec write");
                for (n, t) in &pp.status_ltimes {
                    write_str(&mut st, n);
                    rmp::encode::write_uint(&mut st, *t).expect("vec write");
                }
                MapEnc::new(vec![stype::PUSH_PULL], 6)
                    .uint("EventLTime", pp.event_ltime)
                    .raw_value("Events", &events)
                    .uint("LTime", pp.ltime)
                    .raw_value("LeftMembers", &left)
                    .uint("QueryLTime", pp.query_ltime)
                    .raw_value("StatusLTimes", &st)
                    .finish()
            }
            SerfMessage::Relay {
                dest_addr,
                dest_port,
                dest_name,
                inner,
            } => {
                // Go encodes net.UDPAddr as a map {IP, Port, Zone}.
                let addr = MapEnc::new(Vec::new(), 3)
                    .bytes("IP", dest_addr)
                    .uint("Port", *dest_port as u64)
                    .str("Zone", "")
                    .finish();
                let mut b = MapEnc::new(vec![stype::RELAY], 2)
                    .raw_value("DestAddr", &addr)
                    .str("DestName", dest_name)
                    .finish();
                b.extend_from_slice(inner);
                b
            }
            SerfMessage::Other(t) => vec![*t],
        }
    }

    pub fn decode(buf: &[u8]) -> Result<SerfMessage> {
        let (&t, body) = buf.split_first().ok_or(WireError::Empty)?;
        match t {
            stype::LEAVE
            | stype::JOIN
            | stype::USER_EVENT
            | stype::QUERY
            | stype::QUERY_RESPONSE
            | stype::PUSH_PULL => {}
            stype::RELAY => {
                let (hv, used) = read_value(body)?;
                let h = Fields::of(&hv)?;
                let (ip, port) = match h.get("DestAddr") {
                    Some(v @ Value::Map(_)) => {
                        let a = Fields::of(v)?;
                        (a.bytes("IP")?, a.u16("Port")?)
                    }
                    _ => return Err(WireError::Field("DestAddr")),
                };
                return Ok(SerfMessage::Relay {
                    dest_addr: ip,
                    dest_port: port,
                    dest_name: h.string("DestName")?,
                    inner: body[used..].to_vec(),
                });
            }
            stype::CONFLICT_RESPONSE | stype::KEY_REQUEST | stype::KEY_RESPONSE => {
                return Ok(SerfMessage::Other(t))
            }
            other => return Err(WireError::UnknownType(other)),
        }
        let v = decode_map(body)?;
        let f = Fields::of(&v)?;
        Ok(match t {
            stype::LEAVE => SerfMessage::Leave {
                ltime: f.uint("LTime")?,
                node: f.string("Node")?,
                prune: f.bool("Prune")?,
            },
            stype::JOIN => SerfMessage::Join {
                ltime: f.uint("LTime")?,
                node: f.string("Node")?,
            },
            stype::USER_EVENT => SerfMessage::UserEvent {
                ltime: f.uint("LTime")?,
                name: f.string("Name")?,
                payload: f.bytes("Payload")?,
                cc: f.bool("CC")?,
            },
            stype::QUERY => SerfMessage::Query(Query {
                ltime: f.uint("LTime")?,
                id: f.u32("ID")?,
                addr: f.bytes("Addr")?,
                port: f.u16("Port")?,
                source_node: f.string("SourceNode")?,
                filters: match f.get("Filters") {
                    None | Some(Value::Nil) => Vec::new(),
                    Some(Value::Array(a)) => a
                        .iter()
                        .map(|x| value_bytes(x).ok_or(WireError::Field("Filters")))
                        .collect::<Result<_>>()?,
                    Some(_) => return Err(WireError::Field("Filters")),
                },
                flags: f.u32("Flags")?,
                relay_factor: u8::try_from(f.uint("RelayFactor")?)
                    .map_err(|_| WireError::Field("RelayFactor"))?,
                timeout: f.int("Timeout")?,
                name: f.string("Name")?,
                payload: f.bytes("Payload")?,
            }),
            stype::QUERY_RESPONSE => SerfMessage::QueryResponse(QueryResponse {
                ltime: f.uint("LTime")?,
                id: f.u32("ID")?,
                from: f.string("From")?,
                flags: f.u32("Flags")?,
                payload: f.bytes("Payload")?,
            }),
            _ => {
                // PUSH_PULL
                let status_ltimes = match f.get("StatusLTimes") {
                    None | Some(Value::Nil) => Vec::new(),
                    Some(Value::Map(m)) => m
                        .iter()
                        .map(|(k, v)| {
                            Ok((
                                value_string(k).ok_or(WireError::Field("StatusLTimes"))?,
                                v.as_u64().ok_or(WireError::Field("StatusLTimes"))?,
                            ))
                        })
                        .collect::<Result<_>>()?,
                    Some(_) => return Err(WireError::Field("StatusLTimes")),
                };
                let left_members = match f.get("LeftMembers") {
                    None | Some(Value::Nil) => Vec::new(),
                    Some(Value::Array(a)) => a
                        .iter()
                        .map(|x| value_string(x).ok_or(WireError::Field("LeftMembers")))
                        .collect::<Result<_>>()?,
                    Some(_) => return Err(WireError::Field("LeftMembers")),
                };
                let mut events = Vec::new();
                if let Some(Value::Array(a)) = f.get("Events") {
                    for ev in a {
                        if matches!(ev, Value::Nil) {
                            continue;
                        }
                        let ef = Fields::of(ev)?;
                        let mut recs = Vec::new();
                        if let Some(Value::Array(es)) = ef.get("Events") {
                            for e in es {
                                let rf = Fields::of(e)?;
                                recs.push(UserEventRec {
                                    name: rf.string("Name")?,
                                    payload: rf.bytes("Payload")?,
                                });
                            }
                        }
                        events.push(UserEvents {
                            ltime: ef.uint("LTime")?,
                            events: recs,
                        });
                    }
                }
                SerfMessage::PushPull(SerfPushPull {
                    ltime: f.uint("LTime")?,
                    status_ltimes,
                    left_members,
                    event_ltime: f.uint("EventLTime")?,
                    events,
                    query_ltime: f.uint("QueryLTime")?,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A compound of two alive messages sent by serf 0.9.4 (node sa to sb),
    /// captured on loopback: CRC envelope, compound, alive with tag meta.
    const GOLDEN_ALIVES: &str = "0cbeb9bee40702005100440486a441646472a47f000001ab496e6361726e6174696f6e01a44d657461b7ff82a4726f6c65a76261636b656e64a47a6f6e65a27a31a44e6f6465a27362a4506f7274cd461ba356736ea60105020205050486a441646472a47f000001ab496e6361726e6174696f6e01a44d657461aaff81a4726f6c65a26c62a44e6f6465a27361a4506f7274cd461aa356736ea6010502020505";

    fn golden(name: &str) -> Vec<u8> {
        let s = match name {
            "comp" => include_str!("wire/golden_comp.hex"),
            "event" => include_str!("wire/golden_event.hex"),
            "pp" => include_str!("wire/golden_pp.hex"),
            _ => include_str!("wire/golden_pp_resp.hex"),
        };
        hex(s.trim())
    }

    #[test]
    fn golden_compressed_packet_from_serf() {
        let (msgs, dropped) = decode_packet(&[], &golden("comp")).unwrap();
        assert_eq!(dropped, 0);
        assert!(!msgs.is_empty(), "{msgs:?}");
    }

    #[test]
    fn golden_user_event_from_serf() {
        let (msgs, _) = decode_packet(&[], &golden("event")).unwrap();
        let users: Vec<SerfMessage> = msgs
            .iter()
            .filter_map(|m| match m {
                Message::User(b) => Some(SerfMessage::decode(b).unwrap()),
                _ => None,
            })
            .collect();
        assert!(
            users
                .iter()
                .any(|m| matches!(m, SerfMessage::UserEvent { name, payload, .. }
                if name == "deploy" && payload == b"v1 payload")),
            "{msgs:?}"
        );
    }

    #[test]
    fn golden_push_pull_streams_from_serf() {
        // The responder echoes the initiator's Join flag.
        for (which, want_join) in [("pp", true), ("resp", true)] {
            let b = golden(which);
            let (m, used) = parse_stream(&[], &b).unwrap().unwrap();
            assert_eq!(used, b.len());
            let Message::PushPull(pp) = m else {
                panic!("{m:?}")
            };
            assert_eq!(pp.join, want_join);
            assert!(!pp.nodes.is_empty());
            let SerfMessage::PushPull(s) = SerfMessage::decode(&pp.user_state).unwrap() else {
                panic!()
            };
            assert!(!s.status_ltimes.is_empty());
        }
    }

    #[test]
    fn golden_alive_compound_from_serf() {
        let (msgs, dropped) = decode_packet(&[], &hex(GOLDEN_ALIVES)).unwrap();
        assert_eq!(dropped, 0);
        assert_eq!(msgs.len(), 2);
        let Message::Alive(a) = &msgs[0] else {
            panic!("{msgs:?}")
        };
        assert_eq!(a.node, "sb");
        assert_eq!(a.addr, vec![127, 0, 0, 1]);
        assert_eq!(a.port, 17947);
        assert_eq!(a.vsn, vec![1, 5, 2, 2, 5, 5]);
        assert_eq!(
            decode_tags(&a.meta).unwrap(),
            vec![
                ("role".into(), "backend".into()),
                ("zone".into(), "z1".into())
            ]
        );
        // Our encoder writes the same bytes as go-msgpack for this message.
        let whole = hex(GOLDEN_ALIVES);
        let (parts, _) = split_compound(&whole[6..]).unwrap();
        assert_eq!(Message::Alive(a.clone()).encode(), parts[0]);
    }

    #[test]
    fn compress_round_trip_and_go_compat() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let c = compress_msg(&data);
        let (out, used) = decompress_body(&c[1..]).unwrap();
        assert_eq!(out, data);
        assert_eq!(used, c.len() - 1);
    }

    #[test]
    fn crc_mismatch_is_an_error() {
        let mut p = add_crc(&Message::Nack { seq_no: 3 }.encode());
        let last = p.len() - 1;
        p[last] ^= 1;
        assert_eq!(decode_packet(&[], &p).unwrap_err(), WireError::Crc);
    }

    #[test]
    fn round_trips() {
        let msgs = vec![
            Message::Ping(Ping {
                seq_no: 7,
                node: "a".into(),
                source_addr: vec![127, 0, 0, 1],
                source_port: 7946,
                source_node: "b".into(),
            }),
            Message::IndirectPing(IndirectPing {
                seq_no: 1 << 20,
                target: vec![10, 0, 0, 1],
                port: 1,
                node: "x".into(),
                nack: true,
                ..Default::default()
            }),
            Message::Ack(Ack {
                seq_no: u32::MAX,
                payload: vec![1, 2, 3],
            }),
            Message::Suspect(Accuse {
                incarnation: 9,
                node: "n".into(),
                from: "m".into(),
            }),
            Message::Dead(Accuse {
                incarnation: 300,
                node: "n".into(),
                from: "n".into(),
            }),
            Message::User(vec![3, 4]),
        ];
        let env = Envelope {
            keys: vec![vec![7u8; 16]],
            compress: true,
        };
        let encoded: Vec<Vec<u8>> = msgs.iter().map(|m| m.encode()).collect();
        let pkt = encode_packet(&env, &make_compound(&encoded), true, [5; 12]);
        let (back, dropped) = decode_packet(&env.keys, &pkt).unwrap();
        assert_eq!(dropped, 0);
        assert_eq!(back, msgs);
        // Wrong key: refused.
        assert_eq!(
            decode_packet(&[vec![8u8; 16]], &pkt).unwrap_err(),
            WireError::Decrypt
        );
    }

    /// The framer finds the same message end as `parse_stream`, fed a
    /// byte at a time (each call resuming), for every kind of stream
    /// message, plain, compressed and encrypted.
    #[test]
    fn stream_frame_finds_message_ends_incrementally() {
        let pp = Message::PushPull(PushPull {
            join: false,
            nodes: (0..3)
                .map(|i| PushNodeState {
                    name: format!("n{i}"),
                    addr: vec![127, 0, 0, 1],
                    port: 7946,
                    meta: encode_tags(&[("role".into(), "x".into())]),
                    incarnation: i,
                    state: NodeState::Alive,
                    vsn: vec![1, 5, 2, 2, 5, 5],
                })
                .collect(),
            user_state: vec![7; 300],
        });
        let ping = Message::Ping(Ping {
            seq_no: 3,
            node: "x".into(),
            ..Default::default()
        });
        let user = user_stream_msg(&[1, 2, 3, 4]);
        for keys in [vec![], vec![vec![1u8; 16]]] {
            for compress in [false, true] {
                let env = Envelope {
                    keys: keys.clone(),
                    compress,
                };
                for msg in [pp.encode(), ping.encode(), user.clone()] {
                    let mut bytes = encode_stream(&env, &msg, [9; 12]);
                    let whole = bytes.len();
                    // Trailing bytes are not part of the frame.
                    bytes.extend_from_slice(&[0xc1; 8]);
                    let mut f = StreamFrame::new(MAX_BODY, !keys.is_empty());
                    let mut found = None;
                    for cut in 0..=bytes.len() {
                        if let Some(n) = f.advance(&bytes[..cut]).unwrap() {
                            found = Some((cut, n));
                            break;
                        }
                    }
                    assert_eq!(found, Some((whole, whole)), "compress {compress}");
                    let (_, used) = parse_stream(&keys, &bytes[..whole]).unwrap().unwrap();
                    assert_eq!(used, whole);
                }
            }
        }
    }

    /// Every length a frame announces is checked before its bytes come,
    /// with an error naming the value; keying mismatches are refused from
    /// the first byte.
    #[test]
    fn stream_frame_refuses_announced_lengths_over_the_limit() {
        let limit = 1024;
        let over = |head: &[u8]| {
            let e = StreamFrame::new(limit, false).advance(head).unwrap_err();
            assert!(matches!(e, WireError::OverLimit { .. }), "{e:?}");
            e.to_string()
        };
        let pp = |nodes: u64, ulen: u64| {
            MapEnc::new(vec![mtype::PUSH_PULL], 3)
                .bool("Join", false)
                .uint("Nodes", nodes)
                .uint("UserStateLen", ulen)
                .finish()
        };
        assert!(over(&pp(0, 5000)).contains("5000"));
        assert!(over(&pp(5000, 0)).contains("5000"));
        assert!(over(&pp(600, 600)).contains("push-pull"));
        let user = MapEnc::new(vec![mtype::USER], 1)
            .uint("UserMsgLen", 4096)
            .finish();
        assert!(over(&user).contains("4096"));
        // A msgpack string (header included), and an array announcing more
        // elements than fit.
        assert!(over(&[mtype::PING, 0xdb, 0, 1, 0, 0]).contains("65541"));
        assert!(over(&[mtype::PING, 0xdd, 0, 0, 16, 0]).contains("4096"));
        let mut f = StreamFrame::new(limit, true);
        assert!(
            over_keyed(&mut f, &[mtype::ENCRYPT, 0, 0, 0x10, 0]).contains("4096"),
            "encrypted frame length"
        );
        assert_eq!(
            StreamFrame::new(limit, true).advance(&[mtype::PUSH_PULL]),
            Err(WireError::NotEncrypted)
        );
        assert_eq!(
            StreamFrame::new(limit, false).advance(&[mtype::ENCRYPT]),
            Err(WireError::EncryptedButNoKeys)
        );
        assert_eq!(
            StreamFrame::new(limit, false).advance(&[mtype::COMPOUND]),
            Err(WireError::UnknownType(mtype::COMPOUND))
        );
        assert!(StreamFrame::new(limit, false)
            .advance(&[mtype::PING, 0xc1])
            .is_err());
    }

    fn over_keyed(f: &mut StreamFrame, head: &[u8]) -> String {
        f.advance(head).unwrap_err().to_string()
    }

    /// All compress envelopes of one datagram share one output budget:
    /// an envelope expanding past it is refused with the limit named.
    #[test]
    fn a_datagram_decompresses_to_at_most_the_packet_limit() {
        let mut big = vec![mtype::USER];
        big.resize(MAX_PACKET_PLAIN + 1, b'x');
        let e = decode_packet(&[], &compress_msg(&big)).unwrap_err();
        assert!(e.to_string().contains(&MAX_PACKET_PLAIN.to_string()), "{e}");
        // Two halves in a compound: the first fits, the second is dropped.
        let mut half = vec![mtype::USER];
        half.resize(MAX_PACKET_PLAIN / 2 + 1, b'x');
        let c = compress_msg(&half);
        let (msgs, dropped) = decode_packet(&[], &make_compound(&[c.clone(), c])).unwrap();
        assert_eq!((msgs.len(), dropped), (1, 1));
        // A packet within the budget still decodes.
        let (msgs, _) = decode_packet(&[], &compress_msg(&half)).unwrap();
        assert_eq!(msgs, vec![Message::User(half[1..].to_vec())]);
    }

    #[test]
    fn stream_push_pull_round_trip_incremental() {
        let pp = Message::PushPull(PushPull {
            join: true,
            nodes: vec![PushNodeState {
                name: "a".into(),
                addr: vec![127, 0, 0, 1],
                port: 7946,
                meta: encode_tags(&[("role".into(), "x".into())]),
                incarnation: 3,
                state: NodeState::Alive,
                vsn: vec![1, 5, 2, 2, 5, 5],
            }],
            user_state: SerfMessage::PushPull(SerfPushPull {
                ltime: 4,
                status_ltimes: vec![("a".into(), 2)],
                left_members: vec!["z".into()],
                event_ltime: 3,
                events: vec![UserEvents {
                    ltime: 2,
                    events: vec![UserEventRec {
                        name: "deploy".into(),
                        payload: b"p".to_vec(),
                    }],
                }],
                query_ltime: 1,
            })
            .encode(),
        });
        for keys in [vec![], vec![vec![1u8; 32]]] {
            for compress in [false, true] {
                let env = Envelope {
                    keys: keys.clone(),
                    compress,
                };
                let bytes = encode_stream(&env, &pp.encode(), [9; 12]);
                for cut in 0..bytes.len() {
                    assert_eq!(parse_stream(&keys, &bytes[..cut]), Ok(None), "cut {cut}");
                }
                let (m, used) = parse_stream(&keys, &bytes).unwrap().unwrap();
                assert_eq!(used, bytes.len());
                assert_eq!(m, pp);
                let Message::PushPull(p) = m else {
                    unreachable!()
                };
                let SerfMessage::PushPull(s) = SerfMessage::decode(&p.user_state).unwrap() else {
                    panic!()
                };
                assert_eq!(s.events[0].events[0].name, "deploy");
            }
        }
    }

    #[test]
    fn serf_messages_round_trip() {
        let ms = vec![
            SerfMessage::Leave {
                ltime: 5,
                node: "a".into(),
                prune: false,
            },
            SerfMessage::Join {
                ltime: 1 << 40,
                node: "b".into(),
            },
            SerfMessage::UserEvent {
                ltime: 2,
                name: "deploy".into(),
                payload: b"v1".to_vec(),
                cc: true,
            },
            SerfMessage::Query(Query {
                ltime: 3,
                id: 99,
                addr: vec![127, 0, 0, 1],
                port: 7946,
                source_node: "a".into(),
                filters: vec![vec![0, 1]],
                flags: QUERY_FLAG_ACK,
                relay_factor: 0,
                timeout: 5_000_000_000,
                name: "q".into(),
                payload: vec![],
            }),
            SerfMessage::QueryResponse(QueryResponse {
                ltime: 3,
                id: 99,
                from: "b".into(),
                flags: 0,
                payload: b"ok".to_vec(),
            }),
        ];
        for m in ms {
            assert_eq!(SerfMessage::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let golden = hex(GOLDEN_ALIVES);
        for i in 0..20000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut b = if i % 2 == 0 {
                golden.clone()
            } else {
                (0..(seed % 64) as usize)
                    .map(|j| (seed >> (j % 8)) as u8)
                    .collect()
            };
            if !b.is_empty() {
                let idx = (seed as usize / 3) % b.len();
                b[idx] = (seed >> 11) as u8;
                b.truncate((seed as usize / 7) % (b.len() + 1));
            }
            let _ = decode_packet(&[], &b);
            let _ = parse_stream(&[], &b);
            let _ = SerfMessage::decode(&b);
            let _ = decode_tags(&b);
        }
    }

    #[test]
    fn conflict_responses_round_trip_and_reject_garbage() {
        let m = crate::model::Member {
            name: "s1".into(),
            addr: "192.168.42.11".parse().unwrap(),
            port: 7946,
            tags: vec![("role".into(), "backend".into())],
            status: crate::model::MemberStatus::Alive,
            protocol: [1, 5, 2],
            delegate: [2, 5, 4],
        };
        let b = encode_conflict_response(Some(&m));
        assert_eq!(b[0], stype::CONFLICT_RESPONSE);
        assert_eq!(
            decode_conflict_response(&b).unwrap(),
            Some((m.addr, m.port))
        );
        assert_eq!(
            decode_conflict_response(&encode_conflict_response(None)).unwrap(),
            None
        );
        assert!(decode_conflict_response(&[]).is_err());
        assert!(decode_conflict_response(&[5, 0xc0]).is_err());
        assert!(
            decode_conflict_response(&[6, 0x81, 0xa4, b'A', b'd', b'd', b'r', 0xa1, 1]).is_err()
        );
    }
}
