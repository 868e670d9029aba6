//! TCP stream messages (push-pull, user, ping), any prefix of them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serf_proto::wire::parse_stream(&[], data);
    let _ = serf_proto::wire::parse_stream(&[vec![2u8; 32]], data);
});
