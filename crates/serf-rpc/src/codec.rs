//! MessagePack framing for the RPC stream and helpers to read Serf's
//! Go-struct-shaped maps leniently (strings may arrive as `str` or `bin`,
//! integers in any width) and to build them the way Serf's encoder does
//! (`[]byte` as `bin`, strings as `str`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rmpv::Value;
use tokio::io::{AsyncRead, AsyncReadExt};

use serf_proto::model::{Member, MemberStatus};

/// Largest single value accepted from a peer: Serf's own messages are far
/// smaller; this only bounds memory on garbage input.
const MAX_VALUE: usize = 16 * 1024 * 1024;

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

    /// The next value; `Ok(None)` on a clean end of stream between values.
    pub async fn next(&mut self) -> io::Result<Option<Value>> {
        loop {
            if !self.buf.is_empty() {
                let mut slice = &self.buf[..];
                match rmpv::decode::read_value(&mut slice) {
                    Ok(v) => {
                        let used = self.buf.len() - slice.len();
                        self.buf.drain(..used);
                        return Ok(Some(v));
                    }
                    Err(e) if is_eof(&e) => {}
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
}

fn is_eof(e: &rmpv::decode::Error) -> bool {
    match e {
        rmpv::decode::Error::InvalidMarkerRead(io) | rmpv::decode::Error::InvalidDataRead(io) => {
            io.kind() == io::ErrorKind::UnexpectedEof
        }
        _ => false,
    }
}

/// Encodes values back to back into one buffer (one write per message).
pub fn encode(values: &[&Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        // Writing into a Vec cannot fail.
        rmpv::encode::write_value(&mut out, v).expect("encode into Vec");
    }
    out
}

/// Does a successful or failed response to `command` carry a body?
/// Mirrors Serf's server: these send `header, body` even on error.
pub fn response_has_body(command: &str) -> bool {
    matches!(
        command,
        "join"
            | "members"
            | "members-filtered"
            | "install-key"
            | "use-key"
            | "remove-key"
            | "list-keys"
            | "stats"
            | "get-coordinate"
    )
}

/// Does a request for `command` carry a body?
pub fn request_has_body(command: &str) -> bool {
    !matches!(command, "members" | "leave" | "list-keys" | "stats")
}

// ---- building values ------------------------------------------------------

pub fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

pub fn bin(b: &[u8]) -> Value {
    Value::Binary(b.to_vec())
}

pub fn str_map<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
    Value::Map(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::from(k), Value::from(v)))
            .collect(),
    )
}

pub fn str_list<'a>(items: impl IntoIterator<Item = &'a str>) -> Value {
    Value::Array(items.into_iter().map(Value::from).collect())
}

pub fn header_req(command: &str, seq: u64) -> Value {
    map(vec![("Command", command.into()), ("Seq", seq.into())])
}

pub fn header_resp(seq: u64, error: &str) -> Value {
    map(vec![("Seq", seq.into()), ("Error", error.into())])
}

pub fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// A member as Serf's RPC `Member` struct.
pub fn member_value(m: &Member) -> Value {
    map(vec![
        ("Name", m.name.as_str().into()),
        ("Addr", bin(&ip_bytes(m.addr))),
        ("Port", m.port.into()),
        (
            "Tags",
            str_map(m.tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        ),
        ("Status", m.status.as_str().into()),
        ("ProtocolMin", m.protocol[0].into()),
        ("ProtocolMax", m.protocol[1].into()),
        ("ProtocolCur", m.protocol[2].into()),
        ("DelegateMin", m.delegate[0].into()),
        ("DelegateMax", m.delegate[1].into()),
        ("DelegateCur", m.delegate[2].into()),
    ])
}

// ---- reading values -------------------------------------------------------

/// Field `key` of a map value (Go field names are case-sensitive keys).
pub fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_map()?.iter().find_map(|(k, val)| {
        let name = match k {
            Value::String(s) => s.as_bytes(),
            Value::Binary(b) => b.as_slice(),
            _ => return None,
        };
        (name == key.as_bytes()).then_some(val)
    })
}

pub fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::String(s) => Some(s.as_bytes()),
        Value::Binary(b) => Some(b),
        _ => None,
    }
}

pub fn as_string(v: &Value) -> Option<String> {
    as_bytes(v).map(|b| String::from_utf8_lossy(b).into_owned())
}

pub fn get_str(v: &Value, key: &str) -> String {
    get(v, key).and_then(as_string).unwrap_or_default()
}

pub fn get_bytes(v: &Value, key: &str) -> Vec<u8> {
    get(v, key)
        .and_then(as_bytes)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

pub fn get_u64(v: &Value, key: &str) -> u64 {
    match get(v, key) {
        Some(Value::Integer(i)) => i
            .as_u64()
            .or_else(|| i.as_i64().map(|x| x.max(0) as u64))
            .unwrap_or(0),
        _ => 0,
    }
}

pub fn get_i64(v: &Value, key: &str) -> i64 {
    match get(v, key) {
        Some(Value::Integer(i)) => i.as_i64().unwrap_or_else(|| {
            i.as_u64()
                .map(|u| u.min(i64::MAX as u64) as i64)
                .unwrap_or(0)
        }),
        _ => 0,
    }
}

pub fn get_bool(v: &Value, key: &str) -> bool {
    matches!(get(v, key), Some(Value::Boolean(true)))
}

/// A `map[string]string` field, in wire order.
pub fn get_str_pairs(v: &Value, key: &str) -> Vec<(String, String)> {
    match get(v, key).and_then(Value::as_map) {
        Some(m) => m
            .iter()
            .filter_map(|(k, v)| Some((as_string(k)?, as_string(v)?)))
            .collect(),
        None => Vec::new(),
    }
}

pub fn get_str_list(v: &Value, key: &str) -> Vec<String> {
    match get(v, key).and_then(Value::as_array) {
        Some(a) => a.iter().filter_map(as_string).collect(),
        None => Vec::new(),
    }
}

pub fn status_from_str(s: &str) -> MemberStatus {
    match s {
        "alive" => MemberStatus::Alive,
        "leaving" => MemberStatus::Leaving,
        "left" => MemberStatus::Left,
        "failed" => MemberStatus::Failed,
        _ => MemberStatus::None,
    }
}

/// Go's `net.IP`: 4 or 16 bytes; IPv4-mapped IPv6 is shown as IPv4, as Go does.
pub fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(b);
            let v6 = Ipv6Addr::from(o);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

pub fn member_from_value(v: &Value) -> Member {
    let addr = ip_from_bytes(&get_bytes(v, "Addr")).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let b = |k: &str| get_u64(v, k).min(255) as u8;
    Member {
        name: get_str(v, "Name"),
        addr,
        port: get_u64(v, "Port").min(65535) as u16,
        tags: get_str_pairs(v, "Tags"),
        status: status_from_str(&get_str(v, "Status")),
        protocol: [b("ProtocolMin"), b("ProtocolMax"), b("ProtocolCur")],
        delegate: [b("DelegateMin"), b("DelegateMax"), b("DelegateCur")],
    }
}

pub fn members_from_list(v: &Value, key: &str) -> Vec<Member> {
    match get(v, key).and_then(Value::as_array) {
        Some(a) => a.iter().map(member_from_value).collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reader_splits_back_to_back_values_and_waits_for_partial_ones() {
        let a = header_resp(7, "");
        let b = map(vec![("Num", 2u64.into())]);
        let bytes = encode(&[&a, &b]);
        // Feed the bytes one at a time through a duplex pipe.
        let (mut tx, rx) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for byte in bytes {
                tx.write_all(&[byte]).await.unwrap();
            }
        });
        let mut r = ValueReader::new(rx);
        let got_a = r.next().await.unwrap().unwrap();
        let got_b = r.next().await.unwrap().unwrap();
        writer.await.unwrap();
        assert_eq!(get_u64(&got_a, "Seq"), 7);
        assert_eq!(get_u64(&got_b, "Num"), 2);
        assert!(r.next().await.unwrap().is_none());
    }

    #[test]
    fn ipv4_mapped_addresses_read_as_ipv4() {
        let mut b = [0u8; 16];
        b[10] = 0xff;
        b[11] = 0xff;
        b[12..].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(ip_from_bytes(&b), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(ip_from_bytes(&[1, 2, 3]), None);
    }
}
