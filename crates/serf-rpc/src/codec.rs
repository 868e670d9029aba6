//! The framing of the RPC stream: back-to-back MessagePack values, read one
//! whole value at a time ([`ValueReader`]) and decoded into the message
//! structs of [`crate::msg`] ([`decode`]), or encoded from them ([`encode`],
//! struct fields as map keys, the way Serf's Go encoder writes them).

use std::io;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::go::Lenient;

/// Largest single value accepted from a peer: Serf's own messages are far
/// smaller; this only bounds memory on garbage input.
const MAX_VALUE: usize = 16 * 1024 * 1024;

/// A value that is well-formed MessagePack but not the message expected.
pub type DecodeError = rmp_serde::decode::Error;

/// Appends `value` as one MessagePack value: structs as maps keyed by
/// their (Go) field names.
pub fn encode<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing into a Vec cannot fail, and every message has known lengths.
    rmp_serde::encode::write_named(out, value).expect("encode into Vec");
}

/// `value` alone as bytes.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&mut out, value);
    out
}

/// Decodes one message leniently (as `go.rs` reads each field): a value that is not
/// a map reads as the message's zero value, missing fields as theirs.
pub fn decode<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, DecodeError> {
    rmp_serde::from_slice::<Lenient<T>>(bytes).map(|l| l.0)
}

/// Reads one MessagePack value at a time from a byte stream.
pub struct ValueReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> ValueReader<R> {
    pub fn new(inner: R) -> Self {
        ValueReader {
            inner,
            buf: Vec::with_capacity(4096),
        }
    }

    /// The bytes of the next whole value; `Ok(None)` on a clean end of
    /// stream between values.
    pub async fn next_raw(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if !self.buf.is_empty() {
                match value_len(&self.buf) {
                    Ok(Some(n)) => {
                        let rest = self.buf.split_off(n);
                        return Ok(Some(std::mem::replace(&mut self.buf, rest)));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("bad MessagePack: {e}"),
                        ))
                    }
                }
                if self.buf.len() > MAX_VALUE {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MessagePack value larger than 16 MiB",
                    ));
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.inner.read(&mut chunk).await?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next value decoded as `T` (see [`decode`]).
    pub async fn next<T: DeserializeOwned + Default>(&mut self) -> io::Result<Option<T>> {
        match self.next_raw().await? {
            None => Ok(None),
            Some(bytes) => decode(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
}

/// The length of the whole value at the start of `buf`; `None` while it is
/// not all there.
fn value_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let mut rest = buf;
    let skipped = IgnoredAny::deserialize(&mut rmp_serde::Deserializer::new(&mut rest));
    match skipped {
        Ok(IgnoredAny) => Ok(Some(buf.len() - rest.len())),
        Err(
            rmp_serde::decode::Error::InvalidMarkerRead(e)
            | rmp_serde::decode::Error::InvalidDataRead(e),
        ) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{JoinResponse, ResponseHeader};

    #[tokio::test]
    async fn reader_splits_back_to_back_values_and_waits_for_partial_ones() {
        let mut bytes = Vec::new();
        encode(
            &mut bytes,
            &ResponseHeader {
                seq: 7,
                error: String::new(),
            },
        );
        encode(&mut bytes, &JoinResponse { num: 2 });
        // Feed the bytes one at a time through a duplex pipe.
        let (mut tx, rx) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for byte in bytes {
                tx.write_all(&[byte]).await.unwrap();
            }
        });
        let mut r = ValueReader::new(rx);
        let a: ResponseHeader = r.next().await.unwrap().unwrap();
        let b: JoinResponse = r.next().await.unwrap().unwrap();
        writer.await.unwrap();
        assert_eq!(a.seq, 7);
        assert_eq!(b.num, 2);
        assert!(r.next_raw().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn garbage_and_truncation_are_errors() {
        // 0xc1 is MessagePack's one unused marker.
        let mut r = ValueReader::new(&[0x81, 0xc1][..]);
        assert_eq!(
            r.next_raw().await.unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // A map of one entry whose value never comes.
        let mut r = ValueReader::new(&[0x81, 0xa1, b'a'][..]);
        assert_eq!(
            r.next_raw().await.unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
