//! Reading msgpack from the network within limits: the size of a value
//! from its headers alone, the value count and depth checked before
//! anything is decoded, and bounded `rmpv` values.

use rmpv::Value;

use super::{Result, WireError, MAX_DEPTH};

/// Most msgpack values (containers and scalars, at any depth) one message
/// value may hold. Go decodes into typed structs, where a one-byte value
/// stays about a byte; an [`rmpv::Value`] tree ([`read_value`]) spends
/// [`size_of::<Value>()`] bytes (40) on each, so without a count a 40 MiB
/// stream of nils is a 1.6 GiB tree. The largest value a Serf peer sends
/// is a push-pull's state: about 4 values a member plus the event buffer
/// (512 Lamport times × a few events), under 200,000 for 10,000 members;
/// 1 Mi values leaves room for 200,000 members, and bounds one tree to
/// 40 MiB. memberlist and Serf have no such count.
pub const MAX_VALUES: u64 = 1 << 20;

/// Levels a value may nest (the top value is level 1): what rmpv's depth
/// count of [`MAX_DEPTH`] allows, as it spends two on each container.
const MAX_LEVELS: usize = MAX_DEPTH / 2;

/// Checks the msgpack value at the front of `buf` from its headers alone
/// (nothing allocated): at most [`MAX_VALUES`] values, nested at most
/// [`MAX_LEVELS`] deep, all of it there (else `Truncated`); returns its
/// size.
pub(super) fn check_value(buf: &[u8]) -> Result<usize> {
    // Children still to come of each open container, innermost last.
    let mut open: Vec<u64> = Vec::new();
    let (mut pos, mut pending, mut seen) = (0usize, 1u64, 0u64);
    while pending > 0 {
        let at = buf.get(pos..).unwrap_or_default();
        let (size, children) = value_head(at)?.ok_or(WireError::Truncated)?;
        // rmpv spends one more on a string's or extension's data.
        let data = matches!(at[0], 0xa0..=0xbf | 0xd9..=0xdb | 0xc7..=0xc9 | 0xd4..=0xd8);
        if open.len() + 1 + data as usize > MAX_LEVELS {
            return Err(WireError::TooDeep);
        }
        seen += 1;
        pending = pending - 1 + children;
        if seen + pending > MAX_VALUES {
            return Err(WireError::OverLimit {
                what: "msgpack value count",
                size: seen + pending,
                limit: MAX_VALUES as usize,
            });
        }
        if let Some(n) = open.last_mut() {
            *n -= 1;
        }
        if children > 0 {
            open.push(children);
        }
        while open.last() == Some(&0) {
            open.pop();
        }
        pos = pos.saturating_add(size);
    }
    if pos > buf.len() {
        return Err(WireError::Truncated);
    }
    Ok(pos)
}

/// Reads one msgpack value from the front of `buf`; returns it and the
/// number of bytes it took. A cut-off value is `Truncated`; a value of
/// more than [`MAX_VALUES`] values, or nested deeper than rmpv reads, is
/// refused before any is decoded.
pub fn read_value(buf: &[u8]) -> Result<(Value, usize)> {
    check_value(buf)?;
    let mut cur = buf;
    match rmpv::decode::read_value_with_max_depth(&mut cur, MAX_DEPTH) {
        Ok(v) => Ok((v, buf.len() - cur.len())),
        Err(e) => {
            let eof = match &e {
                rmpv::decode::Error::InvalidMarkerRead(io)
                | rmpv::decode::Error::InvalidDataRead(io) => {
                    io.kind() == std::io::ErrorKind::UnexpectedEof
                }
                _ => false,
            };
            if eof {
                Err(WireError::Truncated)
            } else {
                Err(WireError::Msgpack(e.to_string()))
            }
        }
    }
}

/// Skips the msgpack value at the front of `buf`, headers only; returns
/// its size. A cut-off value is `Truncated`.
pub(super) fn skip_value(buf: &[u8]) -> Result<usize> {
    let (mut pos, mut pending) = (0usize, 1u64);
    while pending > 0 {
        let (size, children) =
            value_head(buf.get(pos..).unwrap_or_default())?.ok_or(WireError::Truncated)?;
        pos = pos.saturating_add(size);
        pending = pending - 1 + children;
    }
    if pos > buf.len() {
        return Err(WireError::Truncated);
    }
    Ok(pos)
}

/// The size of the msgpack value at the front of `buf` without its
/// elements (a string's or binary's bytes included), and how many
/// elements follow it (map: 2 per entry). `None`: its header is cut off.
pub(super) fn value_head(buf: &[u8]) -> Result<Option<(usize, u64)>> {
    let Some(&m) = buf.first() else {
        return Ok(None);
    };
    // Reads a big-endian length of `w` bytes after the marker.
    let len = |w: usize| -> Option<u64> {
        let b = buf.get(1..1 + w)?;
        Some(b.iter().fold(0u64, |a, &x| a << 8 | x as u64))
    };
    let r = match m {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Some((1, 0)),
        0x80..=0x8f => Some((1, 2 * (m & 0x0f) as u64)),
        0x90..=0x9f => Some((1, (m & 0x0f) as u64)),
        0xa0..=0xbf => Some((1 + (m & 0x1f) as usize, 0)),
        0xc1 => return Err(WireError::Msgpack("reserved marker 0xc1".into())),
        0xc4 | 0xd9 => len(1).map(|n| (2 + n as usize, 0)),
        0xc5 | 0xda => len(2).map(|n| (3 + n as usize, 0)),
        0xc6 | 0xdb => len(4).map(|n| (5 + n as usize, 0)),
        0xc7 => len(1).map(|n| (3 + n as usize, 0)),
        0xc8 => len(2).map(|n| (4 + n as usize, 0)),
        0xc9 => len(4).map(|n| (6 + n as usize, 0)),
        0xca => Some((5, 0)),
        0xcb => Some((9, 0)),
        0xcc | 0xd0 => Some((2, 0)),
        0xcd | 0xd1 => Some((3, 0)),
        0xce | 0xd2 => Some((5, 0)),
        0xcf | 0xd3 => Some((9, 0)),
        0xd4 => Some((3, 0)),
        0xd5 => Some((4, 0)),
        0xd6 => Some((6, 0)),
        0xd7 => Some((10, 0)),
        0xd8 => Some((18, 0)),
        0xdc => len(2).map(|n| (3, n)),
        0xdd => len(4).map(|n| (5, n)),
        0xde => len(2).map(|n| (3, 2 * n)),
        0xdf => len(4).map(|n| (5, 2 * n)),
    };
    Ok(r)
}
