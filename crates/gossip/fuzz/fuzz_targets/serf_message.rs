//! Serf messages inside user messages, and tag meta.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gossip::wire::SerfMessage::decode(data);
    let _ = gossip::wire::decode_tags(data);
});
