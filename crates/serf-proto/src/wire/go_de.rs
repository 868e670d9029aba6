//! Reading msgpack into typed messages as Go's decoder (go-msgpack, as
//! memberlist and Serf use it) reads it: a serde `Deserializer` over a
//! byte slice.
//!
//! Lenient like the Go side: a `[]byte` or string field takes a str, a bin,
//! an array of small ints or nil; an integer field any integer width (nil
//! is 0); a bool field nil as false; a slice or map nil as empty. In a
//! struct, unknown keys are skipped (and keys that are not strings), a
//! repeated key keeps its first value, and missing keys keep the field's
//! default (`#[serde(default)]` on every message). Strict where a peer
//! could make us work: a struct must be a map, and the whole value must
//! pass [`check_value`] (count and depth, from its headers) before
//! anything of it is decoded. A field of the wrong type is
//! [`WireError::Field`] naming it; a cut-off value is `Truncated`.

use std::borrow::Cow;

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, Visitor};

use super::msgpack::{check_value, skip_value};
use super::{Result, WireError};

/// Decodes the msgpack value at the front of `buf` as a `T`; returns it and
/// the bytes it took.
pub(super) fn from_slice<'de, T: de::Deserialize<'de>>(buf: &'de [u8]) -> Result<(T, usize)> {
    check_value(buf)?;
    let mut d = Decoder { buf, pos: 0 };
    let v = T::deserialize(&mut d)?;
    Ok((v, d.pos))
}

struct Decoder<'de> {
    buf: &'de [u8],
    pos: usize,
}

/// One value's header (a string's or binary's bytes included).
enum Head<'de> {
    Nil,
    Bool(bool),
    Uint(u64),
    /// Negative only: a non-negative signed integer is a `Uint`.
    Int(i64),
    Float(f64),
    Str(&'de [u8]),
    Bin(&'de [u8]),
    Array(u32),
    Map(u32),
    Ext,
}

impl Head<'_> {
    fn what(&self) -> &'static str {
        match self {
            Head::Nil => "nil",
            Head::Bool(_) => "a bool",
            Head::Uint(_) | Head::Int(_) => "an integer",
            Head::Float(_) => "a float",
            Head::Str(_) => "a string",
            Head::Bin(_) => "a binary",
            Head::Array(_) => "an array",
            Head::Map(_) => "a map",
            Head::Ext => "an extension",
        }
    }

    fn unexpected(&self, want: &str) -> WireError {
        WireError::Msgpack(format!("expected {want}, found {}", self.what()))
    }
}

impl<'de> Decoder<'de> {
    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let b = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(b)
    }

    fn be(&mut self, n: usize) -> Result<u64> {
        Ok(self.take(n)?.iter().fold(0u64, |a, &x| a << 8 | x as u64))
    }

    fn peek_nil(&self) -> bool {
        self.buf.get(self.pos) == Some(&0xc0)
    }

    fn head(&mut self) -> Result<Head<'de>> {
        let m = self.take(1)?[0];
        let signed = |v: i64| {
            if v < 0 {
                Head::Int(v)
            } else {
                Head::Uint(v as u64)
            }
        };
        Ok(match m {
            0x00..=0x7f => Head::Uint(m as u64),
            0xe0..=0xff => Head::Int(m as i8 as i64),
            0x80..=0x8f => Head::Map((m & 0x0f) as u32),
            0x90..=0x9f => Head::Array((m & 0x0f) as u32),
            0xa0..=0xbf => Head::Str(self.take((m & 0x1f) as usize)?),
            0xc0 => Head::Nil,
            0xc2 => Head::Bool(false),
            0xc3 => Head::Bool(true),
            0xc4..=0xc6 => {
                let n = self.be(1 << (m - 0xc4))?;
                Head::Bin(self.take(n as usize)?)
            }
            0xd9..=0xdb => {
                let n = self.be(1 << (m - 0xd9))?;
                Head::Str(self.take(n as usize)?)
            }
            0xca => Head::Float(f32::from_bits(self.be(4)? as u32) as f64),
            0xcb => Head::Float(f64::from_bits(self.be(8)?)),
            0xcc..=0xcf => Head::Uint(self.be(1 << (m - 0xcc))?),
            0xd0 => signed(self.be(1)? as u8 as i8 as i64),
            0xd1 => signed(self.be(2)? as u16 as i16 as i64),
            0xd2 => signed(self.be(4)? as u32 as i32 as i64),
            0xd3 => signed(self.be(8)? as i64),
            0xdc => Head::Array(self.be(2)? as u32),
            0xdd => Head::Array(self.be(4)? as u32),
            0xde => Head::Map(self.be(2)? as u32),
            0xdf => Head::Map(self.be(4)? as u32),
            0xc7..=0xc9 | 0xd4..=0xd8 => {
                self.pos -= 1;
                self.skip()?;
                Head::Ext
            }
            0xc1 => return Err(WireError::Msgpack("reserved marker 0xc1".into())),
        })
    }

    /// Skips the value at the cursor.
    fn skip(&mut self) -> Result<()> {
        self.pos += skip_value(&self.buf[self.pos..])?;
        Ok(())
    }

    /// Skips the rest of a container whose header was read.
    fn skip_n(&mut self, values: u64) -> Result<()> {
        for _ in 0..values {
            self.skip()?;
        }
        Ok(())
    }

    /// A Go `[]byte` or string: str, bin, an array of small ints, or nil.
    fn bytes_like(&mut self) -> Result<Cow<'de, [u8]>> {
        match self.head()? {
            Head::Nil => Ok(Cow::Borrowed(&[])),
            Head::Str(b) | Head::Bin(b) => Ok(Cow::Borrowed(b)),
            Head::Array(n) => (0..n)
                .map(|_| match self.head()? {
                    Head::Uint(u) if u <= 255 => Ok(u as u8),
                    h => Err(h.unexpected("a byte")),
                })
                .collect::<Result<Vec<u8>>>()
                .map(Cow::Owned),
            h => Err(h.unexpected("bytes or a string")),
        }
    }

    fn seq<V: Visitor<'de>>(&mut self, n: u32, v: V) -> Result<V::Value> {
        let mut access = Seq { de: self, left: n };
        let out = v.visit_seq(&mut access)?;
        let left = access.left;
        self.skip_n(left as u64)?;
        Ok(out)
    }

    /// A map's entries; a struct's (`fields`) matched against its names.
    fn map<V: Visitor<'de>>(
        &mut self,
        n: u32,
        fields: Option<&'static [&'static str]>,
        v: V,
    ) -> Result<V::Value> {
        let mut access = Map {
            de: self,
            left: n,
            fields,
            seen: 0,
            key: "",
        };
        let out = v.visit_map(&mut access)?;
        let left = access.left;
        self.skip_n(2 * left as u64)?;
        Ok(out)
    }
}

/// Hints that read the same as another.
macro_rules! same_as {
    ($($hint:ident => $as:ident),* $(,)?) => {$(
        fn $hint<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
            self.$as(v)
        }
    )*};
}

impl<'de> Deserializer<'de> for &mut Decoder<'de> {
    type Error = WireError;

    same_as! {
        deserialize_u8 => deserialize_u64,
        deserialize_u16 => deserialize_u64,
        deserialize_u32 => deserialize_u64,
        deserialize_i8 => deserialize_i64,
        deserialize_i16 => deserialize_i64,
        deserialize_i32 => deserialize_i64,
        deserialize_f32 => deserialize_f64,
        deserialize_string => deserialize_str,
        deserialize_char => deserialize_str,
        deserialize_identifier => deserialize_str,
        deserialize_byte_buf => deserialize_bytes,
    }

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self.head()? {
            Head::Nil => v.visit_unit(),
            Head::Bool(b) => v.visit_bool(b),
            Head::Uint(u) => v.visit_u64(u),
            Head::Int(i) => v.visit_i64(i),
            Head::Float(f) => v.visit_f64(f),
            Head::Str(b) => match std::str::from_utf8(b) {
                Ok(s) => v.visit_borrowed_str(s),
                Err(_) => v.visit_borrowed_bytes(b),
            },
            Head::Bin(b) => v.visit_borrowed_bytes(b),
            Head::Array(n) => self.seq(n, v),
            Head::Map(n) => self.map(n, None, v),
            // No Go type here has one: as good as nil.
            Head::Ext => v.visit_unit(),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self.head()? {
            Head::Nil => v.visit_bool(false),
            Head::Bool(b) => v.visit_bool(b),
            h => Err(h.unexpected("a bool")),
        }
    }

    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self.head()? {
            Head::Nil => v.visit_u64(0),
            Head::Uint(u) => v.visit_u64(u),
            h => Err(h.unexpected("an unsigned integer")),
        }
    }

    /// Go's `int64` (a `time.Duration`): any integer; one over
    /// `i64::MAX` wraps, as Go's decoder does.
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self.head()? {
            Head::Nil => v.visit_i64(0),
            Head::Uint(u) => v.visit_i64(u as i64),
            Head::Int(i) => v.visit_i64(i),
            h => Err(h.unexpected("an integer")),
        }
    }

    /// A float, or an integer read as one.
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self.head()? {
            Head::Nil => v.visit_f64(0.0),
            Head::Float(f) => v.visit_f64(f),
            Head::Uint(u) => v.visit_f64(u as f64),
            Head::Int(i) => v.visit_f64(i as f64),
            h => Err(h.unexpected("a number")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        let utf8 = || WireError::Msgpack("a string that is not UTF-8".into());
        match self.bytes_like()? {
            Cow::Borrowed(b) => v.visit_borrowed_str(std::str::from_utf8(b).map_err(|_| utf8())?),
            Cow::Owned(b) => v.visit_string(String::from_utf8(b).map_err(|_| utf8())?),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self.bytes_like()? {
            Cow::Borrowed(b) => v.visit_borrowed_bytes(b),
            Cow::Owned(b) => v.visit_byte_buf(b),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        if self.peek_nil() {
            self.pos += 1;
            v.visit_none()
        } else {
            v.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self.head()? {
            Head::Nil => v.visit_unit(),
            h => Err(h.unexpected("nil")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self.head()? {
            Head::Nil => self.seq(0, v),
            Head::Array(n) => self.seq(n, v),
            h => Err(h.unexpected("an array")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        v: V,
    ) -> Result<V::Value> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self.head()? {
            Head::Nil => self.map(0, None, v),
            Head::Map(n) => self.map(n, None, v),
            h => Err(h.unexpected("a map")),
        }
    }

    /// A map whose keys are matched against the field names here: the
    /// struct's visitor only sees the first entry of each of its fields.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value> {
        let n = match self.head()? {
            Head::Map(n) => n,
            h => return Err(h.unexpected("a map")),
        };
        debug_assert!(fields.len() <= 64, "a message of more than 64 fields");
        self.map(n, Some(fields), v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value> {
        Err(WireError::Msgpack("no enum is sent as such".into()))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        self.skip()?;
        v.visit_unit()
    }
}

struct Seq<'a, 'de> {
    de: &'a mut Decoder<'de>,
    left: u32,
}

impl<'de> de::SeqAccess<'de> for Seq<'_, 'de> {
    type Error = WireError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left as usize)
    }
}

/// A map's entries; for a struct (`fields`), only the first entry of each
/// field, the others skipped.
struct Map<'a, 'de> {
    de: &'a mut Decoder<'de>,
    left: u32,
    fields: Option<&'static [&'static str]>,
    /// Fields already given (bit i: `fields[i]`).
    seen: u64,
    /// The field whose value comes next.
    key: &'static str,
}

impl<'de> de::MapAccess<'de> for Map<'_, 'de> {
    type Error = WireError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        let Some(fields) = self.fields else {
            if self.left == 0 {
                return Ok(None);
            }
            self.left -= 1;
            return seed.deserialize(&mut *self.de).map(Some);
        };
        while self.left > 0 {
            self.left -= 1;
            let name = match self.de.head()? {
                Head::Str(b) | Head::Bin(b) => b,
                Head::Array(n) => {
                    self.de.skip_n(n as u64 + 1)?;
                    continue;
                }
                Head::Map(n) => {
                    self.de.skip_n(2 * n as u64 + 1)?;
                    continue;
                }
                _ => {
                    self.de.skip()?;
                    continue;
                }
            };
            let found = fields.iter().position(|f| f.as_bytes() == name);
            match found {
                Some(i) if i < 64 && self.seen & (1 << i) == 0 => {
                    self.seen |= 1 << i;
                    self.key = fields[i];
                    let key: de::value::StrDeserializer<WireError> = fields[i].into_deserializer();
                    return seed.deserialize(key).map(Some);
                }
                _ => self.de.skip()?,
            }
        }
        Ok(None)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value> {
        let key = self.key;
        let v = seed.deserialize(&mut *self.de);
        match (v, self.fields) {
            (Err(WireError::Msgpack(_)), Some(_)) => Err(WireError::Field(key)),
            (v, _) => v,
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left as usize)
    }
}

/// `#[serde(deserialize_with)]` for a `[]byte` field read only from a str
/// or a bin (not nil, not an array of ints), `None` when missing.
pub(super) fn str_or_bin<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<u8>>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string or binary")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Vec<u8>, E> {
            Ok(s.as_bytes().to_vec())
        }
        fn visit_bytes<E: de::Error>(self, b: &[u8]) -> std::result::Result<Vec<u8>, E> {
            Ok(b.to_vec())
        }
    }
    d.deserialize_any(V).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Alive, Ping};

    /// A map of `entries` (key, encoded value), as msgpack.
    fn map(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut b = vec![0x80 | entries.len() as u8];
        for (k, v) in entries {
            b.push(0xa0 | k.len() as u8);
            b.extend_from_slice(k);
            b.extend_from_slice(v);
        }
        b
    }

    fn ping(b: &[u8]) -> Result<Ping> {
        from_slice::<Ping>(b).map(|(p, _)| p)
    }

    #[test]
    fn bytes_and_strings_come_as_str_bin_arrays_or_nil() {
        let want = Alive {
            addr: vec![10, 0, 0, 1],
            node: "n".into(),
            vsn: vec![1, 5, 2],
            ..Default::default()
        };
        let forms: [(&[u8], &[u8], &[u8]); 3] = [
            (b"\xa4\x0a\x00\x00\x01", b"\xa1n", b"\x93\x01\x05\x02"),
            (
                b"\xc4\x04\x0a\x00\x00\x01",
                b"\xc4\x01n",
                b"\xa3\x01\x05\x02",
            ),
            (
                b"\x94\x0a\x00\x00\x01",
                b"\x91\x6e",
                b"\xc4\x03\x01\x05\x02",
            ),
        ];
        for (addr, node, vsn) in forms {
            let b = map(&[
                (b"Addr", addr),
                (b"Node", node),
                (b"Vsn", vsn),
                (b"Meta", b"\xc0"),
            ]);
            assert_eq!(from_slice::<Alive>(&b).map(|(a, _)| a), Ok(want.clone()));
        }
        // Not a byte, not UTF-8, not bytes at all: the field is named.
        let bad: [(&[u8], &[u8]); 4] = [
            (b"Addr", b"\x91\xcd\x01\x00"),
            (b"Node", b"\xa1\xff"),
            (b"Node", b"\x01"),
            (b"Meta", b"\x80"),
        ];
        for (k, v) in bad {
            let name = std::str::from_utf8(k).unwrap();
            let e = from_slice::<Alive>(&map(&[(k, v)])).unwrap_err();
            assert!(
                matches!(e, WireError::Field(f) if f == name),
                "{name}: {e:?}"
            );
        }
    }

    #[test]
    fn integers_of_any_width_nil_as_zero_and_ranges_checked() {
        for seq in [
            &b"\x07"[..],
            b"\xcc\x07",
            b"\xcd\x00\x07",
            b"\xd0\x07",
            b"\xd3\0\0\0\0\0\0\0\x07",
        ] {
            assert_eq!(ping(&map(&[(b"SeqNo", seq)])).unwrap().seq_no, 7);
        }
        assert_eq!(ping(&map(&[(b"SeqNo", b"\xc0")])).unwrap().seq_no, 0);
        for (k, v) in [
            (&b"SeqNo"[..], &b"\xff"[..]),
            (b"SourcePort", b"\xce\x00\x01\x00\x00"),
        ] {
            assert!(matches!(ping(&map(&[(k, v)])), Err(WireError::Field(_))));
        }
        assert_eq!(
            ping(&map(&[(b"SeqNo", b"\xcb\0\0\0\0\0\0\0\0")])),
            Err(WireError::Field("SeqNo"))
        );
        // Go's int64 wraps past i64::MAX.
        let q: crate::wire::Query = from_slice(&map(&[(
            b"Timeout",
            b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
        )]))
        .unwrap()
        .0;
        assert_eq!(q.timeout, -1);
    }

    #[test]
    fn keys_unknown_repeated_missing_or_not_strings() {
        let mut b = vec![0x85];
        b.extend_from_slice(b"\xa4Node\xa1a"); // first wins
        b.extend_from_slice(b"\x01\x02"); // an integer key: skipped
        b.extend_from_slice(b"\x91\xa5SeqNo\x09"); // an array key: skipped
        b.extend_from_slice(b"\xa5Extra\x92\x80\x91\xc0"); // unknown: skipped
        b.extend_from_slice(b"\xa4Node\xa1b");
        let want = Ping {
            node: "a".into(),
            ..Default::default()
        };
        assert_eq!(from_slice::<Ping>(&b), Ok((want, b.len())));
        // Keys may be bin; a struct must be a map.
        assert_eq!(ping(b"\x81\xc4\x05SeqNo\x03").unwrap().seq_no, 3);
        assert!(ping(b"\x92\xa1a\x03").is_err());
        assert!(ping(b"\xc0").is_err());
    }

    #[test]
    fn limits_hold_before_decoding() {
        // Cut anywhere: truncated, even where a field would be wrong.
        let b = map(&[(b"Node", b"\xa3abc"), (b"SeqNo", b"\x05")]);
        for cut in 0..b.len() {
            assert_eq!(ping(&b[..cut]), Err(WireError::Truncated), "cut {cut}");
        }
        assert_eq!(
            ping(&map(&[(b"SeqNo", b"\xa1x"), (b"Node", b"\xa5ab")])),
            Err(WireError::Truncated)
        );
        // 8 levels are read (an unknown key's value at level 2), 9 are not.
        let nested = |levels: usize| {
            let mut v = vec![0x91; levels - 2];
            v.push(0xc0);
            map(&[(b"X", &v)])
        };
        assert!(ping(&nested(8)).is_ok());
        assert_eq!(ping(&nested(9)), Err(WireError::TooDeep));
        // An array announcing more values than allowed, from its header.
        let e = ping(&map(&[(b"X", b"\xdd\x00\x10\x00\x00")])).unwrap_err();
        assert!(e.to_string().contains("msgpack value count"), "{e}");
    }
}
