//! How each Go field kind of Serf's RPC structs is read (and, where serde's
//! default differs, written), for `#[serde(with = ...)]` and
//! `#[serde(deserialize_with = ...)]` on the message structs.
//!
//! Writing follows Serf's encoder (go's `codec.MsgpackHandle` with
//! `WriteExt`): `string` as str, `[]byte` as bin, integers in their smallest
//! form, `map[string]string` as a map in the order given. Reading is as
//! lenient as Go's decoder with `RawToString`, and more: a string or `[]byte`
//! may arrive as str or bin (invalid UTF-8 is replaced, not refused), an
//! integer in any width or sign, and a value of the wrong kind, or nil, reads
//! as the field's zero value. Only floats (coordinates) are strict: a
//! coordinate that is not numbers is an error, not a zero.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serializer};

/// One value as it arrived; lists and maps are consumed, not kept.
enum Scalar<'a> {
    Nil,
    Bool(bool),
    Int(i128),
    Float(f64),
    Text(&'a [u8]),
    /// A list, a map or an extension value.
    Compound,
}

impl Scalar<'_> {
    fn text(&self) -> Option<String> {
        match self {
            Scalar::Text(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    fn uint(&self) -> u64 {
        match *self {
            Scalar::Int(i) => i.clamp(0, u64::MAX as i128) as u64,
            _ => 0,
        }
    }
}

/// What one field kind makes of each shape of value.
trait Shape {
    type Out;

    fn scalar<E: de::Error>(s: Scalar<'_>) -> Result<Self::Out, E>;

    fn seq<'de, A: SeqAccess<'de>>(mut a: A) -> Result<Self::Out, A::Error> {
        while a.next_element::<IgnoredAny>()?.is_some() {}
        Self::scalar(Scalar::Compound)
    }

    fn map<'de, A: MapAccess<'de>>(mut a: A) -> Result<Self::Out, A::Error> {
        while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Self::scalar(Scalar::Compound)
    }
}

/// The one visitor: takes any value and hands it to the shape.
struct Any<S>(PhantomData<S>);

fn read<'de, S: Shape, D: Deserializer<'de>>(d: D) -> Result<S::Out, D::Error> {
    d.deserialize_any(Any::<S>(PhantomData))
}

impl<'de, S: Shape> Visitor<'de> for Any<S> {
    type Value = S::Out;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a MessagePack value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<S::Out, E> {
        S::scalar(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<S::Out, E> {
        S::scalar(Scalar::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<S::Out, E> {
        S::scalar(Scalar::Int(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<S::Out, E> {
        S::scalar(Scalar::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<S::Out, E> {
        S::scalar(Scalar::Text(v.as_bytes()))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<S::Out, E> {
        S::scalar(Scalar::Text(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<S::Out, E> {
        S::scalar(Scalar::Nil)
    }
    fn visit_none<E: de::Error>(self) -> Result<S::Out, E> {
        S::scalar(Scalar::Nil)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<S::Out, D::Error> {
        d.deserialize_any(self)
    }
    /// MessagePack extension values (Serf sends none on RPC).
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<S::Out, D::Error> {
        IgnoredAny::deserialize(d)?;
        S::scalar(Scalar::Compound)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<S::Out, A::Error> {
        S::seq(a)
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<S::Out, A::Error> {
        S::map(a)
    }
}

/// A field kind as a type usable inside lists and maps.
struct Item<S: Shape>(S::Out);

impl<'de, S: Shape> Deserialize<'de> for Item<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read::<S, D>(d).map(Item)
    }
}

// ---- the kinds ---------------------------------------------------------

/// `string` or `[]byte`; None for anything else.
struct TextShape;
impl Shape for TextShape {
    type Out = Option<String>;
    fn scalar<E: de::Error>(s: Scalar<'_>) -> Result<Self::Out, E> {
        Ok(s.text())
    }
}

struct BytesShape;
impl Shape for BytesShape {
    type Out = Option<Vec<u8>>;
    fn scalar<E: de::Error>(s: Scalar<'_>) -> Result<Self::Out, E> {
        Ok(match s {
            Scalar::Text(b) => Some(b.to_vec()),
            _ => None,
        })
    }
}

struct UintShape;
impl Shape for UintShape {
    type Out = u64;
    fn scalar<E: de::Error>(s: Scalar<'_>) -> Result<u64, E> {
        Ok(s.uint())
    }
}

struct IntShape;
impl Shape for IntShape {
    type Out = i64;
    fn scalar<E: de::Error>(s: Scalar<'_>) -> Result<i64, E> {
        Ok(match s {
            Scalar::Int(i) => i.clamp(i64::MIN.into(), i64::MAX.into()) as i64,
            _ => 0,
        })
    }
}

struct BoolShape;
impl Shape for BoolShape {
    type Out = bool;
    fn scalar<E: de::Error>(s: Scalar<'_>) -> Result<bool, E> {
        Ok(matches!(s, Scalar::Bool(true)))
    }
}

/// A number, strictly: nil is refused too (an element of `Vec`).
struct NumberShape;
impl Shape for NumberShape {
    type Out = f64;
    fn scalar<E: de::Error>(s: Scalar<'_>) -> Result<f64, E> {
        match s {
            Scalar::Float(f) => Ok(f),
            Scalar::Int(i) => Ok(i as f64),
            _ => Err(E::custom("expected a number")),
        }
    }
}

/// `[]string`; elements that are not strings are skipped.
struct TextListShape;
impl Shape for TextListShape {
    type Out = Vec<String>;
    fn scalar<E: de::Error>(_: Scalar<'_>) -> Result<Vec<String>, E> {
        Ok(Vec::new())
    }
    fn seq<'de, A: SeqAccess<'de>>(mut a: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::new();
        while let Some(Item(s)) = a.next_element::<Item<TextShape>>()? {
            out.extend(s);
        }
        Ok(out)
    }
}

/// `map[string]V` in wire order; entries whose key is not a string, or
/// whose value `V` makes nothing of, are skipped.
struct PairsShape<V>(PhantomData<V>);
impl<V: Shape<Out = Option<T>>, T> Shape for PairsShape<V> {
    type Out = Vec<(String, T)>;
    fn scalar<E: de::Error>(_: Scalar<'_>) -> Result<Self::Out, E> {
        Ok(Vec::new())
    }
    fn map<'de, A: MapAccess<'de>>(mut a: A) -> Result<Self::Out, A::Error> {
        let mut out = Vec::new();
        while let Some((Item(k), Item(v))) = a.next_entry::<Item<TextShape>, Item<V>>()? {
            if let (Some(k), Some(v)) = (k, v) {
                out.push((k, v));
            }
        }
        Ok(out)
    }
}

/// A count in a map (`map[string]int`): any integer, anything else 0.
struct CountShape;
impl Shape for CountShape {
    type Out = Option<u64>;
    fn scalar<E: de::Error>(s: Scalar<'_>) -> Result<Option<u64>, E> {
        Ok(Some(s.uint()))
    }
}

/// A stats value: Serf sends strings; other scalars are shown as text.
struct ShownShape;
impl Shape for ShownShape {
    type Out = Option<String>;
    fn scalar<E: de::Error>(s: Scalar<'_>) -> Result<Option<String>, E> {
        Ok(Some(match s {
            Scalar::Text(_) => s.text().unwrap_or_default(),
            Scalar::Nil => "nil".into(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Compound => String::new(),
        }))
    }
}

/// A stats section: a map, or an empty section for anything else.
struct SectionShape;
impl Shape for SectionShape {
    type Out = Option<BTreeMap<String, String>>;
    fn scalar<E: de::Error>(_: Scalar<'_>) -> Result<Self::Out, E> {
        Ok(Some(BTreeMap::new()))
    }
    fn map<'de, A: MapAccess<'de>>(a: A) -> Result<Self::Out, A::Error> {
        PairsShape::<ShownShape>::map(a).map(|p| Some(p.into_iter().collect()))
    }
}

/// A Go struct: a map read into `T`, anything else `T`'s zero value.
struct StructShape<T>(PhantomData<T>);
impl<T: DeserializeOwned + Default> Shape for StructShape<T> {
    type Out = T;
    fn scalar<E: de::Error>(_: Scalar<'_>) -> Result<T, E> {
        Ok(T::default())
    }
    fn map<'de, A: MapAccess<'de>>(a: A) -> Result<T, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(a))
    }
}

struct ListShape<T>(PhantomData<T>);
impl<T: DeserializeOwned + Default> Shape for ListShape<T> {
    type Out = Vec<T>;
    fn scalar<E: de::Error>(_: Scalar<'_>) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }
    fn seq<'de, A: SeqAccess<'de>>(mut a: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(Item(v)) = a.next_element::<Item<StructShape<T>>>()? {
            out.push(v);
        }
        Ok(out)
    }
}

// ---- the functions the messages name ------------------------------------

/// A whole message read leniently: a value that is not a map is `T`'s
/// zero value, as Serf's decoder leaves a struct it could not fill.
pub(crate) struct Lenient<T>(pub T);

impl<'de, T: DeserializeOwned + Default> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read::<StructShape<T>, D>(d).map(Lenient)
    }
}

/// Go `string`.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    read::<TextShape, D>(d).map(Option::unwrap_or_default)
}

/// Go `uint64`, `int` and the like when the value is a count or an id.
pub fn uint<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    read::<UintShape, D>(d)
}

/// Go `uint8` (protocol versions, relay factor).
pub fn uint8<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    read::<UintShape, D>(d).map(|n| n.min(u8::MAX.into()) as u8)
}

/// Go `uint16` (ports).
pub fn uint16<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    read::<UintShape, D>(d).map(|n| n.min(u16::MAX.into()) as u16)
}

/// Go `int64` (`time.Duration`).
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    read::<IntShape, D>(d)
}

/// Go `bool`.
pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    read::<BoolShape, D>(d)
}

/// Go `float64`: nil reads as 0, anything else not a number is an error.
pub fn float<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    struct FloatShape;
    impl Shape for FloatShape {
        type Out = f64;
        fn scalar<E: de::Error>(s: Scalar<'_>) -> Result<f64, E> {
            match s {
                Scalar::Nil => Ok(0.0),
                s => NumberShape::scalar(s),
            }
        }
    }
    read::<FloatShape, D>(d)
}

/// Go `[]float64` (a coordinate's `Vec`): nil or a list of at most 64
/// numbers (a coordinate has 8), strictly.
pub fn floats<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<f64>>, D::Error> {
    const MAX: usize = 64;
    struct FloatsShape;
    impl Shape for FloatsShape {
        type Out = Option<Vec<f64>>;
        fn scalar<E: de::Error>(s: Scalar<'_>) -> Result<Self::Out, E> {
            match s {
                Scalar::Nil => Ok(None),
                _ => Err(E::custom("expected a list of numbers")),
            }
        }
        fn seq<'de, A: SeqAccess<'de>>(mut a: A) -> Result<Self::Out, A::Error> {
            let mut out = Vec::new();
            while let Some(Item(x)) = a.next_element::<Item<NumberShape>>()? {
                if out.len() == MAX {
                    return Err(de::Error::custom("more than 64 dimensions"));
                }
                out.push(x);
            }
            Ok(Some(out))
        }
        fn map<'de, A: MapAccess<'de>>(_: A) -> Result<Self::Out, A::Error> {
            Err(de::Error::custom("expected a list of numbers"))
        }
    }
    read::<FloatsShape, D>(d)
}

/// Go `[]string`.
pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    read::<TextListShape, D>(d)
}

/// Go `[]T` of structs.
pub fn list<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    read::<ListShape<T>, D>(d)
}

/// Go `map[string]int` that may be nil (`list-keys`' `Keys`).
pub fn counts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, u64>>, D::Error> {
    struct CountsShape;
    impl Shape for CountsShape {
        type Out = Option<BTreeMap<String, u64>>;
        fn scalar<E: de::Error>(_: Scalar<'_>) -> Result<Self::Out, E> {
            Ok(None)
        }
        fn map<'de, A: MapAccess<'de>>(a: A) -> Result<Self::Out, A::Error> {
            PairsShape::<CountShape>::map(a).map(|p| Some(p.into_iter().collect()))
        }
    }
    read::<CountsShape, D>(d)
}

/// Go `map[string]map[string]string` (`stats`).
pub fn sections<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, D::Error> {
    read::<PairsShape<SectionShape>, D>(d).map(|p| p.into_iter().collect())
}

/// Go `[]byte`: written as bin; read from bin or str, nil or other: empty.
pub mod bytes {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::serialize(v, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        read::<BytesShape, D>(d).map(Option::unwrap_or_default)
    }
}

/// Go `[]byte` that Serf leaves nil (a query ack's `Payload`): `None` is
/// written as nil, and read back from nil (or anything not bytes).
pub mod opt_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => serde_bytes::serialize(b.as_slice(), s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        read::<BytesShape, D>(d)
    }
}

/// Go `map[string]string` kept in wire order (tags, tag filters).
pub mod str_map {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(v.iter().map(|(k, v)| (k, v)))
    }

    pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: FromIterator<(String, String)>,
    {
        read::<PairsShape<TextShape>, D>(d).map(|p| p.into_iter().collect())
    }
}
