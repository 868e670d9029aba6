//! The memberlist and Serf wire formats: the one place that parses and
//! builds bytes.
//!
//! Checked against packets captured from serf 0.9.4 (`golden_*.hex`) and
//! against the bytes this crate wrote before its messages were typed
//! (`golden_b8cdd01.txt`). One file a job:
//! - [`msgpack`](self::msgpack): reading msgpack from the network within
//!   limits (value count and depth from the headers, before any decoding);
//! - `go_de` / `go_ser`: msgpack as go-msgpack reads and writes it, as a
//!   serde data format: every message below is a plain struct with
//!   `#[derive(Serialize, Deserialize)]`, written once;
//! - [`memberlist`](self::memberlist): ping, indirect ping, ack, nack,
//!   suspect, alive, dead, push-pull, err, and the [`Message`] enum;
//! - [`envelope`](self::envelope): label, compound, compress (LZW), CRC,
//!   encryption (AES-GCM), and whole packets ([`decode_packet`],
//!   [`encode_packet`]);
//! - [`stream`](self::stream): TCP framing ([`encode_stream`],
//!   [`parse_stream`], the incremental [`StreamFrame`]);
//! - [`serf_msg`](self::serf_msg): Serf's messages inside memberlist user
//!   messages (intents, user events, queries and responses, push-pull
//!   state, relay), the tag meta, query filters, and the payloads of the
//!   conflict and keyring queries.
//!
//! memberlist messages are one type byte, then a MessagePack map keyed by
//! the Go field names. Keys are written in the order go-msgpack writes them
//! (sorted), `[]byte` fields as msgpack "raw" (str family), integers in
//! their smallest form. Decoding accepts str or bin for byte fields, any
//! integer width, nil as the zero value, unknown keys, and arrays of ints
//! for `Vsn`.
//!
//! Decoders return errors as values and never panic on hostile input.

mod envelope;
mod go_de;
mod go_ser;
mod memberlist;
mod msgpack;
mod serf_msg;
mod stream;

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod tests;

pub use envelope::{
    add_crc, compress_msg, decode_packet, decompress_body, decompress_body_max, decrypt_payload,
    encode_packet, encrypt_payload, lzw_compress, lzw_decompress, lzw_decompress_max,
    make_compound, split_compound, strip_label, Envelope,
};
pub use memberlist::{
    addr_bytes, bytes_addr, Accuse, Ack, Alive, IndirectPing, Message, Nack, NodeState, Ping,
    PushNodeState, PushPull, PushPullHeader,
};
pub use msgpack::{read_value, MAX_VALUES};
pub use serf_msg::{
    decode_conflict_response, decode_key_request, decode_key_response, decode_tags,
    encode_conflict_response, encode_key_request, encode_tags, Join, KeyResponse, Leave, Query,
    QueryFilter, QueryResponse, Relay, SerfMessage, SerfPushPull, UserEvent, UserEventRec,
    UserEvents, QUERY_FLAG_ACK, QUERY_FLAG_NO_BROADCAST,
};
pub use stream::{encode_stream, parse_stream, user_stream_msg, StreamFrame};

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
/// Nesting limit for msgpack values from the network (rmpv's count, which
/// spends two per container level: 8 levels).
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

/// A value of the wrong shape, as serde's visitors report it.
impl serde::de::Error for WireError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        WireError::Msgpack(msg.to_string())
    }
}

/// A type with no go-msgpack form (never one of ours).
impl serde::ser::Error for WireError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        WireError::Msgpack(msg.to_string())
    }
}
