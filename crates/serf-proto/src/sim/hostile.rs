//! A small simulated cluster against hostile peers: [`run`] reads a
//! sequence of operations from bytes and plays them on 2–4 real [`Serf`]
//! nodes wired by the [`Sim`], checking invariants after each one.
//!
//! The fuzz target `serf_cluster` (crates/serf-proto/fuzz) feeds it libFuzzer's
//! inputs; the test below feeds it a fixed RNG's bytes on every
//! `cargo test`.
//!
//! The hostile peers are phantom addresses (`10.0.0.101`–`103`) and
//! spoofed ones. What they send is *decoded* content built from the bytes
//! (memberlist alive/suspect/dead/ping/ack/nack, push-pull states, Serf
//! intents with any Lamport time up to `u64::MAX`, user events, queries
//! including the internal `_serf_*` ones with key requests, query
//! responses, relays, coordinates with NaN/infinite values, ...), encoded
//! with the crate's own encoders and envelopes (compound, LZW, CRC,
//! AES-GCM with the cluster's key or a wrong one) and given to
//! `Serf::handle_packet`, or, through `wire::parse_stream`, to
//! `Serf::handle_stream`, `handle_push_pull_reply` and
//! `handle_tcp_ping_reply`. What the nodes send to a phantom is kept
//! ([`Sim::tap`]), so a phantom can answer for real: acks and nacks with
//! the right sequence numbers, responses to the queries it saw, replies to
//! the push-pulls and TCP pings it was sent. Between those, simulated time
//! advances (every node ticks at its deadlines) and the nodes join, leave,
//! crash, restart, partition, send events and queries, answer queries,
//! force-leave, change tags and restore clocks.
//!
//! Invariants, checked after every operation on every running node:
//! - no panic (in a debug build, no arithmetic overflow either);
//! - none of the three Lamport clocks goes backwards, nor the node's own
//!   incarnation (until the node restarts);
//! - a node that was not told to leave sees itself alive, in the Serf
//!   member table and in memberlist's (it refutes what says otherwise);
//!   a node that left still has itself in its table;
//! - every member a node knows (Serf's table and memberlist's) carries a
//!   name the test used, so the tables are bounded by the names used;
//! - whatever a node sends to a phantom decodes (packets with no message
//!   dropped, stream messages whole), and so does its reply to a stream.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::{sim_addr, Sim};
use crate::coordinate::Coordinate;
use crate::core::Output;
use crate::model::{Event, Member, MemberStatus, QueryParams};
use crate::serf;
use crate::wire::{
    self, Accuse, Alive, Envelope, Message, NodeState, PushNodeState, PushPull, SerfMessage,
    SerfPushPull, UserEventRec, UserEvents,
};

/// Bounds on what hostile messages carry.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Largest Lamport time in a hostile message or restored clock.
    pub max_ltime: u64,
    /// Largest incarnation in a hostile message.
    pub max_incarnation: u32,
    /// Most operations played from one input.
    pub max_ops: usize,
    /// Most simulated time one input may let pass (the time steps are
    /// what costs: every node ticks at each of its deadlines).
    pub max_time: Duration,
    /// Print each operation to stderr (to read a crashing input).
    pub trace: bool,
}

impl Options {
    /// Anything goes.
    pub const ALL: Options = Options {
        max_ltime: u64::MAX,
        max_incarnation: u32::MAX,
        max_ops: 256,
        max_time: Duration::from_secs(30),
        trace: false,
    };
}

mod forge;
mod gen;
mod invariants;
mod play;

pub use gen::Gen;

/// How many phantom (hostile) peers there are.
const PHANTOMS: usize = 3;

pub fn phantom_addr(k: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 101 + k as u8)), 7946)
}

/// What a node sent to a phantom, as far as a phantom can answer it.
#[derive(Debug, Clone)]
enum Seen {
    /// A ping or indirect ping (answer: ack or nack with `seq`).
    Ping { seq: u32 },
    /// A query (answer: a response with its ltime and id).
    Query { ltime: u64, id: u32 },
    /// A push-pull this node started (answer: the reply).
    PushPull,
    /// A TCP fallback ping (answer: the reply).
    TcpPing { seq: u32 },
}

#[derive(Debug, Clone, Copy, Default)]
struct Last {
    clocks: (u64, u64, u64),
    incarnation: u32,
}

struct Harness<'a> {
    g: Gen<'a>,
    opts: Options,
    sim: Sim,
    /// Every node name the test used (real nodes' and in messages).
    names: BTreeSet<String>,
    /// Every key the cluster may have used; empty when it is plaintext.
    keys: Vec<Vec<u8>>,
    /// (node that sent it, phantom it went to, what it was).
    inbox: Vec<(usize, SocketAddr, Seen)>,
    last: Vec<Last>,
    left: Vec<bool>,
}

/// Plays `data` as a sequence of operations; panics when an invariant
/// breaks (see the module documentation).
pub fn run(data: &[u8], opts: &Options) {
    let mut g = Gen::new(data);
    let n = 2 + g.below(3);
    let seed = g.u64();
    let flags = g.u8();
    let encrypt = flags & 1 != 0;
    let compress = flags & 2 != 0;
    let conflict_resolution = flags & 4 == 0;
    let no_coordinates = flags & 8 != 0;
    let join_all = flags & 16 == 0;
    let key = vec![0x42u8; 16];
    let k = key.clone();
    let mut sim = Sim::new(n, seed, move |c: &mut serf::Config| {
        c.core.compress = compress;
        if encrypt {
            c.core.keys = vec![k.clone()];
        }
        c.name_conflict_resolution = conflict_resolution;
        c.disable_coordinates = no_coordinates;
        // Short timers, so that reap, reconnect, tombstones and the
        // forgetting of dead nodes happen within an input.
        c.reap_interval = Duration::from_secs(1);
        c.reconnect_interval = Duration::from_secs(2);
        c.reconnect_timeout = Duration::from_secs(6);
        c.tombstone_timeout = Duration::from_secs(6);
        c.recent_intent_timeout = Duration::from_secs(10);
        c.core.gossip_to_dead = Duration::from_secs(5);
        c.core.push_pull_interval = Duration::from_secs(5);
        c.event_buffer = 16;
        c.query_buffer = 16;
    });
    sim.tap = true;
    let mut names: BTreeSet<String> = (0..n).map(|i| format!("n{i}")).collect();
    names.extend((0..PHANTOMS).map(|k| format!("p{k}")));
    let mut h = Harness {
        g,
        opts: *opts,
        sim,
        names,
        keys: if encrypt { vec![key] } else { Vec::new() },
        inbox: Vec::new(),
        last: vec![Last::default(); n],
        left: vec![false; n],
    };
    if join_all {
        // Push-pulls are delivered at once: joined when this returns.
        for i in 1..n {
            h.sim.join(i, 0);
        }
    }
    h.check();
    let mut ops = 0;
    while !h.g.is_empty() && ops < h.opts.max_ops {
        h.op();
        h.check();
        ops += 1;
    }
}

impl Harness<'_> {
    fn log(&self, what: impl FnOnce() -> String) {
        if self.opts.trace {
            eprintln!("[{:?}] {}", self.sim.now(), what());
        }
    }

    fn n(&self) -> usize {
        self.sim.nodes.len()
    }

    fn node(&mut self) -> usize {
        let n = self.n();
        self.g.below(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stable smoke run of the fuzz target's interpreter: inputs from a
    /// fixed xorshift RNG, a few thousand of them.
    ///
    /// Lamport times and incarnations over their whole range, up to the
    /// largest values (the clocks and the refutation saturate).
    #[test]
    fn hostile_cluster_smoke() {
        let opts = Options {
            max_ops: 64,
            ..Options::ALL
        };
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for k in 0..3000 {
            let len = 16 + (next() % 600) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if std::panic::catch_unwind(|| run(&data, &opts)).is_err() {
                let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
                panic!("input {k} failed (above); as hex, for a fuzz artifact: {hex}");
            }
        }
    }

    /// The overflows `serf_cluster` found (inputs minimized or written by
    /// hand; `SERF_CLUSTER_TRACE=1` on the fuzz target prints what they
    /// do). Each panicked in debug builds (and wrapped around in release)
    /// before the clocks and the refutation saturated.
    #[test]
    fn known_overflows() {
        let inputs: [(&str, &[u8]); 4] = [
            // UDP suspect {Node: n0, Incarnation: u32::MAX} to n0:
            // Core::refute, `incarnation.max(accused) + 1` (core.rs).
            (
                "refute",
                &[
                    0xff, 0xa, 0, 0, 0, 0x40, 0, 0, 0xc8, 0, 0, 0, 0, 0, 0x2d, 0xc8, 0, 0, 0, 0x2d,
                ],
            ),
            // UDP user message, join intent {LTime: u64::MAX, Node: n1}:
            // Clock::witness, `v + 1`.
            (
                "witness",
                &[
                    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 1, 9, 2, 5, 0, 0, 1, 2,
                ],
            ),
            // UDP leave intent {LTime: u64::MAX - 1, Node: n0} to n0: the
            // witness makes the clock u64::MAX, the refuting join intent's
            // Clock::increment overflows.
            (
                "increment",
                &[
                    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 1, 9, 0, 5, 1, 0, 0, 0, 2,
                ],
            ),
            // Serf::restore_clocks(u64::MAX, ..) (a corrupt snapshot).
            (
                "restore_clocks",
                &[
                    0, 0, 0x8, 0x26, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x17, 0xc, 0xb5,
                ],
            ),
        ];
        let mut failed = Vec::new();
        for (what, data) in inputs {
            if std::panic::catch_unwind(|| run(data, &Options::ALL)).is_err() {
                failed.push(what);
            }
        }
        assert!(failed.is_empty(), "still panicking: {failed:?}");
    }
}
