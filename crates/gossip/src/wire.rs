//! memberlist and Serf message codec (msgpack maps keyed by Go field names, compound, CRC, compress, encrypt).
//!
//! Not written yet.
