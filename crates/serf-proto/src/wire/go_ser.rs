//! Writing typed messages as go-msgpack writes them for memberlist and
//! Serf: a serde `Serializer` appending to a `Vec<u8>`.
//!
//! A struct is a map keyed by its (renamed) field names in declaration
//! order, which every message declares in the order Go writes its keys; a
//! `[]byte` field (`#[serde(with = "serde_bytes")]`) is msgpack raw, the
//! str family holding any bytes, as go-msgpack's handle in memberlist has
//! no bin type (rmp-serde writes bin, and its `Raw` bin for non-UTF-8
//! bytes, which is why this file exists); integers take their smallest
//! form; `None` and unit are nil. Enums and tuples have no Go form here
//! and are refused.

use serde::ser::{self, Impossible, Serialize};

use super::{Result, WireError};

/// Appends `v` to `out`.
pub(super) fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    v.serialize(&mut Encoder { out })
        .expect("every wire message has a go-msgpack form");
}

/// `v` after a type byte.
pub(super) fn to_vec<T: Serialize + ?Sized>(type_byte: u8, v: &T) -> Vec<u8> {
    let mut out = vec![type_byte];
    write(&mut out, v);
    out
}

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
}

fn unsupported(what: &str) -> WireError {
    WireError::Msgpack(format!("{what} has no go-msgpack form here"))
}

impl Encoder<'_> {
    fn len(&mut self, what: &str, len: Option<usize>) -> Result<u32> {
        len.and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| unsupported(what))
    }
}

/// The narrower integers, each written as the wider one it widens to
/// (msgpack picks the smallest encoding for the value anyway).
macro_rules! widened {
    ($($($narrow:ident($t:ty)),+ => $wide:ident;)+) => {
        $($(
            fn $narrow(self, v: $t) -> Result<()> {
                self.$wide(v.into())
            }
        )+)+
    };
}

impl<'a, 'b> ser::Serializer for &'b mut Encoder<'a> {
    type Ok = ();
    type Error = WireError;
    type SerializeSeq = Self;
    type SerializeTuple = Impossible<(), WireError>;
    type SerializeTupleStruct = Impossible<(), WireError>;
    type SerializeTupleVariant = Impossible<(), WireError>;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), WireError>;

    fn serialize_bool(self, v: bool) -> Result<()> {
        rmp::encode::write_bool(self.out, v).expect("vec write");
        Ok(())
    }
    widened! {
        serialize_i8(i8), serialize_i16(i16), serialize_i32(i32) => serialize_i64;
        serialize_u8(u8), serialize_u16(u16), serialize_u32(u32) => serialize_u64;
    }
    fn serialize_i64(self, v: i64) -> Result<()> {
        rmp::encode::write_sint(self.out, v).expect("vec write");
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<()> {
        rmp::encode::write_uint(self.out, v).expect("vec write");
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<()> {
        rmp::encode::write_f32(self.out, v).expect("vec write");
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<()> {
        rmp::encode::write_f64(self.out, v).expect("vec write");
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<()> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<()> {
        self.serialize_bytes(v.as_bytes())
    }
    /// Raw: a str header, whatever the bytes.
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        let len = u32::try_from(v.len()).map_err(|_| unsupported("a value over 4 GiB"))?;
        rmp::encode::write_str_len(self.out, len).expect("vec write");
        self.out.extend_from_slice(v);
        Ok(())
    }
    fn serialize_none(self) -> Result<()> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<()> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<()> {
        rmp::encode::write_nil(self.out).expect("vec write");
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<()> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<()> {
        Err(unsupported("an enum"))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Result<()> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<()> {
        Err(unsupported("an enum"))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self> {
        let n = self.len("a sequence of unknown length", len)?;
        rmp::encode::write_array_len(self.out, n).expect("vec write");
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple> {
        Err(unsupported("a tuple"))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct> {
        Err(unsupported("a tuple"))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(unsupported("an enum"))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self> {
        let n = self.len("a map of unknown length", len)?;
        rmp::encode::write_map_len(self.out, n).expect("vec write");
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Self> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant> {
        Err(unsupported("an enum"))
    }
}

impl ser::SerializeSeq for &mut Encoder<'_> {
    type Ok = ();
    type Error = WireError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<()> {
        Ok(())
    }
}

impl ser::SerializeMap for &mut Encoder<'_> {
    type Ok = ();
    type Error = WireError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<()> {
        k.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<()> {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Encoder<'_> {
    type Ok = ();
    type Error = WireError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, k: &'static str, v: &T) -> Result<()> {
        rmp::encode::write_str(self.out, k).expect("vec write");
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<()> {
        Ok(())
    }
}
