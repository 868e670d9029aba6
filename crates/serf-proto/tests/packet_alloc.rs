//! Memory a single hostile datagram can make the decoder allocate,
//! measured with a counting global allocator (this file is its own test
//! binary, so nothing else allocates through it concurrently... except the
//! test harness, which is why the bound is generous).

use std::sync::Mutex;

use serf_proto::wire;
use testkit::CountingAlloc;

#[global_allocator]
static A: CountingAlloc = CountingAlloc::new();

/// One measurement at a time (tests run on parallel threads).
static SERIAL: Mutex<()> = Mutex::new(());

/// Peak bytes allocated above the level at the start while `f` runs.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = A.live();
    A.reset_peak(base);
    let r = f();
    (r, A.peak().saturating_sub(base))
}

/// Worst case we accept for one datagram, all envelopes and msgpack
/// values included: a few MiB (see `wire::MAX_PACKET_PLAIN`).
const BOUND: usize = 16 << 20;

/// `decode` run on the datagram `pkt` under the counting allocator, its
/// peak checked against [`BOUND`]; `parts` tells what the datagram holds,
/// for the failure message.
fn decode_within_bound<T: std::fmt::Debug>(
    pkt: &[u8],
    parts: &str,
    decode: impl FnOnce(&[u8]) -> T,
) -> T {
    let (r, peak) = peak_during(|| decode(pkt));
    eprintln!("peak {} KiB for a {} byte datagram", peak >> 10, pkt.len());
    assert!(
        peak <= BOUND,
        "decoding a {} byte datagram{parts} peaked at {} MiB ({r:?})",
        pkt.len(),
        peak >> 20
    );
    r
}

/// An alive message whose body is an array of `n` nils (1 byte each in,
/// one `rmpv::Value` each out).
fn nil_array_msg(n: usize) -> Vec<u8> {
    let mut m = vec![4u8, 0xdd];
    m.extend_from_slice(&(n as u32).to_be_bytes());
    m.resize(m.len() + n, 0xc0);
    m
}

#[test]
fn a_compressed_datagram_cannot_expand_without_bound() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 12 MiB of nils compress to a few KiB: one datagram.
    let pkt = wire::compress_msg(&nil_array_msg(12 << 20));
    assert!(pkt.len() <= 65_507, "not a datagram: {} bytes", pkt.len());
    let r = decode_within_bound(&pkt, "", |p| {
        wire::decode_packet(&[], p).map(|(m, _)| m.len())
    });
    assert!(r.is_err(), "{r:?}");
}

#[test]
fn a_plain_datagram_of_tiny_values_stays_small() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The largest datagram memberlist reads, all one-byte values.
    let pkt = nil_array_msg(65_536 - 6);
    // Decoded or refused: only the memory it took is checked.
    let _ = decode_within_bound(&pkt, "", |p| {
        wire::decode_packet(&[], p).map(|(m, _)| m.len())
    });
}

#[test]
fn a_compound_of_compressed_parts_shares_one_budget() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 255 parts (the compound maximum), each a compressed blob that
    // expands to 1 MiB of nils.
    let part = wire::compress_msg(&nil_array_msg(1 << 20));
    let n = (65_000 / (part.len() + 2)).min(255);
    let pkt = wire::make_compound(&vec![part; n]);
    assert!(pkt.len() <= 65_507, "not a datagram: {} bytes", pkt.len());
    // Decoded or refused: only the memory it took is checked.
    let _ = decode_within_bound(&pkt, &format!(" ({n} parts)"), |p| {
        wire::decode_packet(&[], p).map(|(m, d)| (m.len(), d))
    });
}

/// A stream frame (plain, no keyring) holding one ping whose body is an
/// array of `n` nils.
fn nil_array_stream(n: usize) -> Vec<u8> {
    let mut m = vec![wire::mtype::PING, 0xdd];
    m.extend_from_slice(&(n as u32).to_be_bytes());
    m.resize(m.len() + n, 0xc0);
    m
}

#[test]
fn a_stream_message_of_tiny_values_is_refused_before_decoding() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 32 MiB (under the 40 MiB stream limit) of one-byte values: without
    // a count, 32 Mi `rmpv::Value`s (over a GiB).
    let frame = nil_array_stream(32 << 20);
    let (r, peak) = peak_during(|| wire::parse_stream(&[], &frame).map(|m| m.is_some()));
    eprintln!(
        "peak {} KiB for a {} MiB stream message ({} bytes a value)",
        peak >> 10,
        frame.len() >> 20,
        std::mem::size_of::<rmpv::Value>()
    );
    assert!(
        peak <= BOUND,
        "decoding a {} MiB stream message peaked at {} MiB ({r:?})",
        frame.len() >> 20,
        peak >> 20
    );
    let e = r.expect_err("refused");
    assert!(e.to_string().contains("msgpack value count"), "{e}");
}

#[test]
fn a_value_at_the_count_limit_still_decodes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The array itself is one value: MAX_VALUES - 1 elements is the most.
    let n = wire::MAX_VALUES as usize - 1;
    let mut buf = vec![0xdd];
    buf.extend_from_slice(&(n as u32).to_be_bytes());
    buf.resize(buf.len() + n, 0xc0);
    let (v, used) = wire::read_value(&buf).expect("at the limit");
    assert_eq!(used, buf.len());
    assert_eq!(v.as_array().map(Vec::len), Some(n));
    buf[1..5].copy_from_slice(&(n as u32 + 1).to_be_bytes());
    buf.push(0xc0);
    let e = wire::read_value(&buf).expect_err("one over");
    assert!(e.to_string().contains("msgpack value count"), "{e}");
}
