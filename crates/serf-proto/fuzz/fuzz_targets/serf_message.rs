//! Serf messages inside user messages, tag meta, the payloads of internal
//! query responses (name conflict, keyring), and the network coordinate in
//! ack payloads (decoded, then fed to the Vivaldi update).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serf_proto::wire::SerfMessage::decode(data);
    let _ = serf_proto::wire::decode_tags(data);
    let _ = serf_proto::wire::decode_conflict_response(data);
    let _ = serf_proto::serf::decode_key_response(data);
    if let Ok(Some(c)) = serf_proto::coordinate::Coordinate::decode_payload(data) {
        let _ = c.distance_to(&serf_proto::coordinate::Coordinate::default());
        let mut client = serf_proto::coordinate::Client::new(1);
        for _ in 0..3 {
            let _ = client.update("peer", &c, std::time::Duration::from_millis(3));
        }
        let _ = client.coordinate().distance_to(&c);
    }
});
