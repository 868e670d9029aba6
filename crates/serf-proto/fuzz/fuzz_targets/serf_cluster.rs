//! The Serf/memberlist state machine against hostile peers: 2–4 `Serf`
//! nodes in the simulator get well-formed but hostile messages (decoded
//! messages built from the input, encoded with the crate's encoders) via
//! `handle_packet`, `handle_stream`, `handle_push_pull_reply` and
//! `handle_tcp_ping_reply`, between ticks, joins, leaves, crashes, events,
//! queries, ...; invariants are checked after every operation. See
//! `serf_proto::sim::hostile`.
#![no_main]
use serf_proto::sim::hostile::{run, Options};
use libfuzzer_sys::fuzz_target;

/// With `--features avoid-known-overflow`: Lamport times and incarnations
/// stay below the top of their range, where `Clock::witness` (`v + 1`) and
/// the refutation (`inc + 1`) overflowed (the rest still gets fuzzed while
/// that is being fixed).
#[cfg(feature = "avoid-known-overflow")]
const OPTS: Options = Options {
    max_ltime: u64::MAX >> 1,
    max_incarnation: u32::MAX >> 1,
    ..Options::ALL
};
#[cfg(not(feature = "avoid-known-overflow"))]
const OPTS: Options = Options::ALL;

fuzz_target!(|data: &[u8]| {
    // SERF_CLUSTER_TRACE=1: print the operations (to read an artifact).
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let trace = *TRACE.get_or_init(|| std::env::var_os("SERF_CLUSTER_TRACE").is_some());
    run(data, &Options { trace, ..OPTS });
});
