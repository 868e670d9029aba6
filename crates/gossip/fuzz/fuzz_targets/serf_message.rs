//! Serf messages inside user messages, tag meta, and the payloads of
//! internal query responses (name conflict, keyring).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gossip::wire::SerfMessage::decode(data);
    let _ = gossip::wire::decode_tags(data);
    let _ = gossip::wire::decode_conflict_response(data);
    let _ = gossip::serf::decode_key_response(data);
});
