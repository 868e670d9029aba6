//! TCP streams: the envelope of a stream message ([`encode_stream`]),
//! finding where a message ends as bytes arrive ([`StreamFrame`]), and
//! reading it ([`parse_stream`]).

use serde::{Deserialize, Serialize};

use super::envelope::{NONCE_SIZE, TAG_SIZE};
use super::memberlist::decode_push_pull;
use super::msgpack::value_head;
use super::{
    compress_msg, decompress_body, decrypt_payload, encrypt_payload, go_de, go_ser, mtype,
    strip_label, Envelope, Message, PushPullHeader, Result, WireError, MAX_BODY,
};

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
            let (h, used) = go_de::from_slice::<UserMsgHeader>(body)?;
            if h.user_msg_len > (MAX_BODY / 2) as u64 {
                return Err(WireError::Field("UserMsgLen"));
            }
            let n = h.user_msg_len as usize;
            if body.len() - used < n {
                return Err(WireError::Truncated);
            }
            Ok((Message::User(body[used..used + n].to_vec()), 1 + used + n))
        }
        mtype::PING | mtype::ACK | mtype::ERR => {
            let (m, used) = Message::decode_prefix(t, body)?;
            Ok((m, 1 + used))
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
                            let (h, _) = go_de::from_slice::<UserMsgHeader>(head)?;
                            let n = h.user_msg_len as usize;
                            Step::Done(self.check("user message", self.pos, n)?)
                        }
                        mtype::PUSH_PULL => {
                            let (h, _) = PushPullHeader::decode(head)?;
                            let (nodes, ulen) = (h.nodes, h.user_state_len as usize);
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

/// The header of a user message on a stream: the length of what follows.
#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct UserMsgHeader {
    user_msg_len: u64,
}

/// A user message for a TCP stream (type 8, length header, payload).
pub fn user_stream_msg(payload: &[u8]) -> Vec<u8> {
    let header = UserMsgHeader {
        user_msg_len: payload.len() as u64,
    };
    let mut v = go_ser::to_vec(mtype::USER, &header);
    v.extend_from_slice(payload);
    v
}
