//! The envelopes around memberlist messages in a datagram: label, compound,
//! compress (LZW), CRC and encryption (AES-GCM), and whole packets in
//! ([`decode_packet`]) and out ([`encode_packet`]).

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};

use super::{
    go_de, go_ser, mtype, Message, Result, WireError, MAX_BODY, MAX_NEST, MAX_PACKET_PLAIN,
};

pub fn make_compound<M: AsRef<[u8]>>(msgs: &[M]) -> Vec<u8> {
    debug_assert!(msgs.len() <= 255);
    let total: usize = msgs.iter().map(|m| m.as_ref().len() + 2).sum();
    let mut buf = Vec::with_capacity(2 + total);
    buf.push(mtype::COMPOUND);
    buf.push(msgs.len() as u8);
    for m in msgs {
        buf.extend_from_slice(&(m.as_ref().len() as u16).to_be_bytes());
    }
    for m in msgs {
        buf.extend_from_slice(m.as_ref());
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

/// A compressed message (type 9): `Algo` 0 is LZW, the only one.
#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Compress {
    algo: u64,
    /// Read from a str or bin only (a missing one is an error).
    #[serde(
        serialize_with = "serde_bytes::serialize",
        deserialize_with = "go_de::str_or_bin"
    )]
    buf: Option<Vec<u8>>,
}

/// Wraps a message in a compress message (type 9).
pub fn compress_msg(msg: &[u8]) -> Vec<u8> {
    let c = Compress {
        algo: 0,
        buf: Some(lzw_compress(msg)),
    };
    go_ser::to_vec(mtype::COMPRESS, &c)
}

/// Unwraps a compress body (after the type byte); returns the inner
/// message and the bytes of the body consumed.
pub fn decompress_body(body: &[u8]) -> Result<(Vec<u8>, usize)> {
    decompress_body_max(body, MAX_BODY)
}

/// [`decompress_body`] producing at most `max` bytes.
pub fn decompress_body_max(body: &[u8], max: usize) -> Result<(Vec<u8>, usize)> {
    let (c, used) = go_de::from_slice::<Compress>(body)?;
    if c.algo != 0 {
        return Err(WireError::Field("Algo"));
    }
    let buf = c.buf.ok_or(WireError::Field("Buf"))?;
    let out = lzw_decompress_max(&buf, max)?;
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

pub(super) const NONCE_SIZE: usize = 12;
pub(super) const TAG_SIZE: usize = 16;

/// AES-GCM's two ways: seal (encrypt) or open (decrypt and check).
#[derive(Clone, Copy)]
enum Way {
    Seal,
    Open,
}

/// AES-GCM with 128, 192 or 256 bit keys, as the key's length says;
/// `None` for another length, or a ciphertext that does not open.
fn gcm(way: Way, key: &[u8], nonce: &[u8], data: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    fn run<C: Aead + AeadCore<NonceSize = U12> + KeyInit>(
        way: Way,
        key: &[u8],
        nonce: &[u8],
        msg: &[u8],
        aad: &[u8],
    ) -> Option<Vec<u8>> {
        let cipher = C::new_from_slice(key).ok()?;
        let (nonce, p) = (Nonce::from_slice(nonce), Payload { msg, aad });
        match way {
            Way::Seal => cipher.encrypt(nonce, p),
            Way::Open => cipher.decrypt(nonce, p),
        }
        .ok()
    }
    type Aes192Gcm = aes_gcm::AesGcm<aes_gcm::aes::Aes192, U12>;
    match key.len() {
        16 => run::<Aes128Gcm>(way, key, nonce, data, aad),
        24 => run::<Aes192Gcm>(way, key, nonce, data, aad),
        32 => run::<Aes256Gcm>(way, key, nonce, data, aad),
        _ => None,
    }
}

/// Encrypts with version 1 (no padding): version byte, nonce, ciphertext+tag.
pub fn encrypt_payload(key: &[u8], nonce: [u8; 12], msg: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(1 + NONCE_SIZE + msg.len() + TAG_SIZE);
    out.push(1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&gcm(Way::Seal, key, &nonce, msg, aad)?);
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
        if let Some(mut plain) = gcm(Way::Open, k, nonce, ct, aad) {
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
