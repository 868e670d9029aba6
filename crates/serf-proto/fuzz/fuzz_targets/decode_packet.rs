//! memberlist packets: envelopes (CRC, compress, compound, encrypt) and
//! messages must never panic, with or without a keyring.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serf_proto::wire::decode_packet(&[], data);
    let _ = serf_proto::wire::decode_packet(&[vec![1u8; 16]], data);
});
