//! TEMPORARY: the old hand-written msgpack helpers, for callers outside
//! wire/ until they move to the typed messages (deleted then).

use rmpv::Value;

use super::{Result, WireError};

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
