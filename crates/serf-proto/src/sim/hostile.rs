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

/// Reads bytes as a stream of choices; zeros once they run out.
pub struct Gen<'a> {
    data: &'a [u8],
}

impl<'a> Gen<'a> {
    pub fn new(data: &'a [u8]) -> Gen<'a> {
        Gen { data }
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) | ((self.u32() as u64) << 32)
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// A number below `n` (0 when `n` is 0 or 1).
    pub fn below(&mut self, n: usize) -> usize {
        match n {
            0 | 1 => 0,
            2..=256 => self.u8() as usize % n,
            _ => self.u32() as usize % n,
        }
    }
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1).min(self.data.len());
        let (b, rest) = self.data.split_at(n);
        self.data = rest;
        b.to_vec()
    }
    pub fn string(&mut self, max: usize) -> String {
        String::from_utf8_lossy(&self.bytes(max)).into_owned()
    }
}

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

    fn name(&mut self) -> String {
        let s = match self.g.below(12) {
            0..=3 => format!("n{}", self.g.below(4)),
            4..=7 => format!("p{}", self.g.below(PHANTOMS)),
            8 => String::new(),
            _ => self.g.string(6),
        };
        self.names.insert(s.clone());
        s
    }

    /// A socket address: a real node's, a phantom's, an odd port, IPv6.
    fn sock(&mut self) -> SocketAddr {
        match self.g.below(8) {
            0..=2 => sim_addr(self.node()),
            3..=5 => phantom_addr(self.g.below(PHANTOMS)),
            6 => SocketAddr::new(sim_addr(self.node()).ip(), self.g.u16()),
            _ => SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0,
                    0,
                    0,
                    0,
                    0,
                    self.g.u8() as u16,
                )),
                7946,
            ),
        }
    }

    /// Address bytes and port as they go in a message (sometimes garbage).
    fn addr_port(&mut self) -> (Vec<u8>, u16) {
        if self.g.below(10) == 0 {
            let b = self.g.bytes(5);
            (b, self.g.u16())
        } else {
            let a = self.sock();
            (wire::addr_bytes(a.ip()), a.port())
        }
    }

    fn ltime(&mut self, base: u64) -> u64 {
        let v = match self.g.below(8) {
            0 | 1 => self.g.below(8) as u64,
            2..=4 => base
                .saturating_sub(4)
                .saturating_add(self.g.below(12) as u64),
            5 => u64::MAX - self.g.below(4) as u64,
            6 => 1u64 << self.g.below(64),
            _ => self.g.u64(),
        };
        v.min(self.opts.max_ltime)
    }

    fn incarnation(&mut self, base: u32) -> u32 {
        let v = match self.g.below(8) {
            0 | 1 => self.g.below(8) as u32,
            2..=4 => base
                .saturating_sub(2)
                .saturating_add(self.g.below(6) as u32),
            5 => u32::MAX - self.g.below(4) as u32,
            _ => self.g.u32(),
        };
        v.min(self.opts.max_incarnation)
    }

    fn seq(&mut self) -> u32 {
        match self.g.below(4) {
            0 | 1 => self.g.below(16) as u32,
            2 => u32::MAX - self.g.below(2) as u32,
            _ => self.g.u32(),
        }
    }

    fn clocks(&self, t: usize) -> (u64, u64, u64) {
        self.sim.nodes[t].serf.clocks()
    }

    fn known_incarnation(&self, t: usize, name: &str) -> u32 {
        self.sim.nodes[t]
            .serf
            .core()
            .node(name)
            .map(|n| n.incarnation)
            .unwrap_or(0)
    }

    fn tags(&mut self) -> Vec<(String, String)> {
        let n = self.g.below(4);
        (0..n)
            .map(|_| {
                let k = match self.g.below(4) {
                    0 => "role".to_string(),
                    1 => "id".to_string(),
                    2 => "dc".to_string(),
                    _ => self.g.string(6),
                };
                (k, self.g.string(8))
            })
            .collect()
    }

    fn meta(&mut self) -> Vec<u8> {
        match self.g.below(4) {
            0 => Vec::new(),
            1 | 2 => {
                let t = self.tags();
                wire::encode_tags(&t)
            }
            _ => self.g.bytes(600),
        }
    }

    fn vsn(&mut self) -> Vec<u8> {
        match self.g.below(4) {
            0 | 1 => vec![1, 5, 2, 2, 5, 5],
            2 => vec![1, 5, 2, 2, 5, 4],
            _ => self.g.bytes(8),
        }
    }

    fn float(&mut self) -> f64 {
        match self.g.below(8) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => -1e300,
            3 => 0.0,
            4 => f64::from_bits(self.g.u64()),
            _ => (self.g.u16() as f64 - 32768.0) / 1000.0,
        }
    }

    /// An ack payload: none, garbage, or a coordinate (maybe absurd).
    fn ack_payload(&mut self) -> Vec<u8> {
        match self.g.below(4) {
            0 => Vec::new(),
            1 => self.g.bytes(40),
            _ => {
                let mut c = Coordinate::default();
                if self.g.below(8) == 0 {
                    let d = self.g.below(12);
                    c.vec = vec![0.0; d];
                }
                if self.g.bool() {
                    for x in c.vec.iter_mut() {
                        *x = (self.g.u16() as f64 - 32768.0) / 1000.0;
                    }
                    let i = self.g.below(c.vec.len().max(1));
                    if let Some(x) = c.vec.get_mut(i) {
                        *x = self.float();
                    }
                }
                match self.g.below(4) {
                    0 => c.error = self.float(),
                    1 => c.adjustment = self.float(),
                    2 => c.height = self.float(),
                    _ => {}
                }
                c.encode_payload()
            }
        }
    }

    fn accuse(&mut self, t: usize) -> Accuse {
        let node = self.name();
        let base = self.known_incarnation(t, &node);
        let from = if self.g.below(4) == 0 {
            node.clone()
        } else {
            self.name()
        };
        Accuse {
            incarnation: self.incarnation(base),
            node,
            from,
        }
    }

    fn alive(&mut self, t: usize) -> Alive {
        let node = self.name();
        let base = self.known_incarnation(t, &node);
        let (addr, port) = self.addr_port();
        Alive {
            incarnation: self.incarnation(base),
            node,
            addr,
            port,
            meta: self.meta(),
            vsn: self.vsn(),
        }
    }

    fn push_pull(&mut self, t: usize) -> PushPull {
        let n = self.g.below(5);
        let nodes = (0..n)
            .map(|_| {
                let name = self.name();
                let base = self.known_incarnation(t, &name);
                let (addr, port) = self.addr_port();
                PushNodeState {
                    name,
                    addr,
                    port,
                    meta: self.meta(),
                    incarnation: self.incarnation(base),
                    state: [
                        NodeState::Alive,
                        NodeState::Suspect,
                        NodeState::Dead,
                        NodeState::Left,
                    ][self.g.below(4)],
                    vsn: self.vsn(),
                }
            })
            .collect();
        let user_state = match self.g.below(4) {
            0 => Vec::new(),
            1 => self.g.bytes(32),
            _ => SerfMessage::PushPull(self.serf_push_pull(t)).encode(),
        };
        PushPull {
            join: self.g.bool(),
            nodes,
            user_state,
        }
    }

    fn serf_push_pull(&mut self, t: usize) -> SerfPushPull {
        let c = self.clocks(t);
        let n = self.g.below(5);
        let status_ltimes = (0..n).map(|_| (self.name(), self.ltime(c.0))).collect();
        let n = self.g.below(3);
        let left_members = (0..n).map(|_| self.name()).collect();
        let n = self.g.below(3);
        let events = (0..n)
            .map(|_| UserEvents {
                ltime: self.ltime(c.1),
                events: (0..self.g.below(3))
                    .map(|_| UserEventRec {
                        name: self.event_name(),
                        payload: self.g.bytes(16),
                    })
                    .collect(),
            })
            .collect();
        SerfPushPull {
            ltime: self.ltime(c.0),
            status_ltimes,
            left_members,
            event_ltime: self.ltime(c.1),
            events,
            query_ltime: self.ltime(c.2),
        }
    }

    fn event_name(&mut self) -> String {
        match self.g.below(3) {
            0 => "deploy".into(),
            1 => String::new(),
            _ => self.g.string(8),
        }
    }

    /// A key for a keyring request: one the cluster has, a new valid one,
    /// or one of a wrong size.
    fn key(&mut self) -> Vec<u8> {
        match self.g.below(4) {
            0 | 1 if !self.keys.is_empty() => {
                let i = self.g.below(self.keys.len());
                self.keys[i].clone()
            }
            3 => self.g.bytes(40),
            _ => {
                let len = [16, 24, 32][self.g.below(3)];
                vec![self.g.u8(); len]
            }
        }
    }

    fn query_name_payload(&mut self) -> (String, Vec<u8>) {
        const NAMES: [&str; 8] = [
            "q",
            "deploy",
            "_serf_ping",
            "_serf_conflict",
            "_serf_install-key",
            "_serf_use-key",
            "_serf_remove-key",
            "_serf_list-keys",
        ];
        let i = self.g.below(NAMES.len() + 1);
        let name = NAMES
            .get(i)
            .map(|s| s.to_string())
            .unwrap_or_else(|| self.g.string(10));
        let payload = if name.ends_with("-key") && self.g.below(4) != 0 {
            let key = self.key();
            // Only an encrypted cluster takes keys (a node without a
            // keyring refuses keyring requests).
            if !self.keys.is_empty()
                && matches!(key.len(), 16 | 24 | 32)
                && !self.keys.contains(&key)
            {
                self.keys.push(key.clone());
            }
            serf::encode_key_request(&key)
        } else if name == "_serf_conflict" && self.g.bool() {
            self.name().into_bytes()
        } else {
            self.g.bytes(32)
        };
        (name, payload)
    }

    fn filter(&mut self) -> Vec<u8> {
        match self.g.below(4) {
            0 => {
                let n = self.g.below(3);
                let names = (0..n).map(|_| self.name()).collect();
                wire::QueryFilter::Nodes(names).encode()
            }
            1 => {
                const EXPRS: [&str; 5] = [".*", "^1$", "^$", "(", "[0-9]+"];
                let i = self.g.below(EXPRS.len() + 1);
                let expr = EXPRS
                    .get(i)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| self.g.string(8));
                let tag = ["id", "role", ""][self.g.below(3)].to_string();
                wire::QueryFilter::Tag { tag, expr }.encode()
            }
            2 => self.g.bytes(8),
            _ => Vec::new(),
        }
    }

    fn query(&mut self, t: usize) -> wire::Query {
        let c = self.clocks(t);
        let (addr, port) = self.addr_port();
        let (name, payload) = self.query_name_payload();
        wire::Query {
            ltime: self.ltime(c.2),
            id: if self.g.bool() {
                self.g.below(4) as u32
            } else {
                self.g.u32()
            },
            addr,
            port,
            source_node: self.name(),
            filters: (0..self.g.below(3)).map(|_| self.filter()).collect(),
            flags: match self.g.below(4) {
                0 => 0,
                1 => wire::QUERY_FLAG_ACK,
                2 => wire::QUERY_FLAG_NO_BROADCAST,
                _ => self.g.u32(),
            },
            relay_factor: match self.g.below(4) {
                0 | 1 => 0,
                2 => self.g.below(4) as u8,
                _ => self.g.u8(),
            },
            timeout: match self.g.below(6) {
                0 => 0,
                1 => -(self.g.u32() as i64),
                2 => i64::MAX,
                3 => i64::MIN,
                _ => self.g.below(10_000) as i64 * 1_000_000,
            },
            name,
            payload,
        }
    }

    fn query_response(&mut self) -> wire::QueryResponse {
        let queries: Vec<(u64, u32)> = self
            .inbox
            .iter()
            .filter_map(|(_, _, s)| match s {
                Seen::Query { ltime, id } => Some((*ltime, *id)),
                _ => None,
            })
            .collect();
        let (ltime, id) = if !queries.is_empty() && self.g.below(4) != 0 {
            queries[self.g.below(queries.len())]
        } else {
            (self.g.below(8) as u64, self.g.u32())
        };
        let from = self.name();
        let flags = match self.g.below(3) {
            0 => 0,
            1 => wire::QUERY_FLAG_ACK,
            _ => self.g.u32(),
        };
        let payload = match self.g.below(4) {
            0 => {
                let a = self.sock();
                let m = Member {
                    name: from.clone(),
                    addr: a.ip(),
                    port: a.port(),
                    tags: self.tags(),
                    status: MemberStatus::Alive,
                    protocol: [1, 5, 2],
                    delegate: [2, 5, 5],
                };
                wire::encode_conflict_response(Some(&m))
            }
            1 => wire::encode_conflict_response(None),
            _ => self.g.bytes(32),
        };
        wire::QueryResponse {
            ltime,
            id,
            from,
            flags,
            payload,
        }
    }

    /// An encoded Serf message (what rides in a memberlist user message).
    fn serf_msg(&mut self, t: usize, depth: usize) -> Vec<u8> {
        let c = self.clocks(t);
        let m = match self.g.below(12) {
            0 | 1 => SerfMessage::Leave(wire::Leave {
                ltime: self.ltime(c.0),
                node: self.name(),
                prune: self.g.bool(),
            }),
            2 | 3 => SerfMessage::Join(wire::Join {
                ltime: self.ltime(c.0),
                node: self.name(),
            }),
            4 | 5 => SerfMessage::UserEvent(wire::UserEvent {
                ltime: self.ltime(c.1),
                name: self.event_name(),
                payload: self.g.bytes(64),
                cc: self.g.bool(),
            }),
            6 | 7 => SerfMessage::Query(self.query(t)),
            8 => SerfMessage::QueryResponse(self.query_response()),
            9 => SerfMessage::PushPull(self.serf_push_pull(t)),
            10 if depth < 2 => {
                let (dest_addr, dest_port) = self.addr_port();
                SerfMessage::Relay(wire::Relay {
                    dest_addr,
                    dest_port,
                    dest_name: self.name(),
                    inner: self.serf_msg(t, depth + 1),
                })
            }
            _ => {
                // Conflict / key messages and unknown types, then garbage.
                let mut v = vec![[6, 7, 8, self.g.u8()][self.g.below(4)]];
                v.extend(self.g.bytes(16));
                return v;
            }
        };
        m.encode()
    }

    /// A memberlist message, encoded (type byte first, no envelope).
    fn message(&mut self, t: usize) -> Vec<u8> {
        let m = match self.g.below(13) {
            0 => {
                let (source_addr, source_port) = if self.g.bool() {
                    self.addr_port()
                } else {
                    (Vec::new(), 0)
                };
                Message::Ping(wire::Ping {
                    seq_no: self.seq(),
                    node: if self.g.bool() {
                        self.sim.nodes[t].serf.name().to_string()
                    } else {
                        self.name()
                    },
                    source_addr,
                    source_port,
                    source_node: self.name(),
                })
            }
            1 => {
                let (target, port) = self.addr_port();
                let (source_addr, source_port) = self.addr_port();
                Message::IndirectPing(wire::IndirectPing {
                    seq_no: self.seq(),
                    target,
                    port,
                    node: self.name(),
                    nack: self.g.bool(),
                    source_addr,
                    source_port,
                    source_node: self.name(),
                })
            }
            2 => Message::Ack(wire::Ack {
                seq_no: self.seq(),
                payload: self.ack_payload(),
            }),
            3 => Message::Nack(wire::Nack { seq_no: self.seq() }),
            4 | 5 => Message::Suspect(self.accuse(t)),
            6 | 7 => Message::Alive(self.alive(t)),
            8 => Message::Dead(self.accuse(t)),
            9 | 10 => Message::User(self.serf_msg(t, 0)),
            11 => match self.g.below(3) {
                0 => Message::PushPull(self.push_pull(t)),
                1 => Message::Err(self.g.string(16)),
                _ => return self.g.bytes(24),
            },
            _ => {
                // A message type with a garbage body.
                let mut v = vec![self.g.below(14) as u8];
                v.extend(self.g.bytes(24));
                return v;
            }
        };
        m.encode()
    }

    /// The keys a hostile envelope is sealed with.
    fn envelope(&mut self, t: usize) -> Envelope {
        let keys = match self.g.below(8) {
            0 => Vec::new(),
            1 => vec![vec![7u8; 16]],
            _ => self.sim.nodes[t].serf.keys().to_vec(),
        };
        Envelope {
            keys,
            compress: self.g.bool(),
        }
    }

    fn nonce(&mut self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&self.g.u64().to_le_bytes());
        n
    }

    /// A datagram to node `t` from `from`, of one or more messages.
    fn deliver_packet(&mut self, t: usize, from: SocketAddr, parts: Vec<Vec<u8>>) {
        let msg = if parts.len() == 1 {
            parts.into_iter().next().expect("one")
        } else {
            wire::make_compound(&parts)
        };
        let env = self.envelope(t);
        let crc = self.g.bool();
        let nonce = self.nonce();
        let bytes = wire::encode_packet(&env, &msg, crc, nonce);
        if self.sim.nodes[t].crashed {
            return;
        }
        self.log(|| {
            let keys = self.sim.nodes[t].serf.keys();
            format!(
                "packet to n{t} from {from}: {:?}",
                wire::decode_packet(keys, &bytes)
            )
        });
        let now = self.sim.now();
        self.sim.nodes[t].serf.handle_packet(from, &bytes, now);
        self.sim.send_now(t);
    }

    /// A stream message for node `t`, sealed and parsed as the agent does;
    /// `None` when the node would not read it.
    fn stream_msg(&mut self, t: usize, m: Vec<u8>) -> Option<Message> {
        let env = self.envelope(t);
        let nonce = self.nonce();
        let bytes = wire::encode_stream(&env, &m, nonce);
        let keys = self.sim.nodes[t].serf.keys().to_vec();
        match wire::parse_stream(&keys, &bytes) {
            Ok(Some((m, _))) => Some(m),
            _ => None,
        }
    }

    fn op(&mut self) {
        let now = self.sim.now();
        let code = self.g.below(24);
        if !matches!(code, 0..=8) {
            self.log(|| format!("op {code} (see Harness::op)"));
        }
        match code {
            // A datagram from a hostile or spoofed peer.
            0..=5 => {
                let t = self.node();
                let from = self.sock();
                let k = if self.g.below(4) == 0 {
                    2 + self.g.below(4)
                } else {
                    1
                };
                let parts = (0..k).map(|_| self.message(t)).collect();
                self.deliver_packet(t, from, parts);
            }
            // An incoming TCP stream.
            6..=8 => {
                let t = self.node();
                let from = self.sock();
                let m = match self.g.below(5) {
                    0 | 1 => Message::PushPull(self.push_pull(t)).encode(),
                    2 => wire::user_stream_msg(&self.serf_msg(t, 0)),
                    3 => Message::Ping(wire::Ping {
                        seq_no: self.seq(),
                        node: self.name(),
                        ..Default::default()
                    })
                    .encode(),
                    _ => self.message(t),
                };
                if self.sim.nodes[t].crashed {
                    return;
                }
                let Some(m) = self.stream_msg(t, m) else {
                    return;
                };
                self.log(|| format!("stream to n{t} from {from}: {m:?}"));
                let reply = self.sim.nodes[t].serf.handle_stream(from, m, now);
                if let Some(r) = reply {
                    match wire::parse_stream(&self.keys, &r) {
                        Ok(Some((_, used))) if used == r.len() => {}
                        other => panic!("node {t}'s stream reply does not decode: {other:?}"),
                    }
                }
                self.sim.send_now(t);
            }
            // A phantom answers something it was sent.
            9 | 10 => self.answer(),
            // Time passes.
            11..=13 => {
                let d = match self.g.below(4) {
                    0 => Duration::from_millis(1 + self.g.below(50) as u64),
                    1 => Duration::from_millis(50),
                    2 => Duration::from_millis(self.g.below(1000) as u64),
                    _ => Duration::from_millis(self.g.below(8000) as u64),
                };
                let left = self.opts.max_time.saturating_sub(self.sim.now());
                self.sim.run_for(d.min(left));
            }
            14 => {
                let (i, j) = (self.node(), self.node());
                if !self.sim.nodes[i].crashed {
                    self.sim.join(i, j);
                }
            }
            15 => {
                let i = self.node();
                if self.sim.nodes[i].crashed {
                    return;
                }
                self.left[i] = true;
                self.sim.nodes[i].serf.leave_intent(now);
                self.sim.send_now(i);
                if self.g.bool() {
                    let d = Duration::from_millis(self.g.below(500) as u64);
                    let left = self.opts.max_time.saturating_sub(self.sim.now());
                    self.sim.run_for(d.min(left));
                    let now = self.sim.now();
                    self.sim.nodes[i].serf.leave_memberlist(now);
                    self.sim.send_now(i);
                }
            }
            16 => {
                let i = self.node();
                let name = self.event_name();
                let payload = self.g.bytes(64);
                let cc = self.g.bool();
                let _ = self.sim.nodes[i].serf.user_event(&name, payload, cc, now);
                self.sim.send_now(i);
            }
            17 => {
                let i = self.node();
                let (name, payload) = self.query_name_payload();
                let mut p = QueryParams {
                    name,
                    payload,
                    request_ack: self.g.bool(),
                    relay_factor: self.g.below(3) as u8,
                    timeout: match self.g.below(3) {
                        0 => Duration::ZERO,
                        1 => Duration::from_millis(self.g.below(5000) as u64),
                        _ => Duration::from_nanos(self.g.u64() >> 1),
                    },
                    ..Default::default()
                };
                if self.g.below(4) == 0 {
                    p.filter_nodes = vec![self.name()];
                }
                if self.g.below(4) == 0 {
                    p.filter_tags.insert("id".into(), self.g.string(4));
                }
                let _ = self.sim.nodes[i].serf.query(&p, now);
                self.sim.send_now(i);
            }
            18 => {
                // Answer a query a node received (or a made-up id).
                let i = self.node();
                let ids: Vec<u64> = self.sim.nodes[i]
                    .events
                    .iter()
                    .filter_map(|e| match e {
                        Event::Query(q) => Some(q.id),
                        _ => None,
                    })
                    .collect();
                let id = if !ids.is_empty() && self.g.below(4) != 0 {
                    ids[self.g.below(ids.len())]
                } else {
                    self.g.below(8) as u64
                };
                let payload = self.g.bytes(1100);
                let _ = self.sim.nodes[i].serf.respond(id, payload, now);
                self.sim.send_now(i);
            }
            19 => {
                let i = self.node();
                let name = self.name();
                let prune = self.g.bool();
                self.sim.nodes[i].serf.force_leave(&name, prune, now);
                self.sim.send_now(i);
            }
            20 => {
                let i = self.node();
                let tags = self.tags();
                let _ = self.sim.nodes[i].serf.set_tags(tags, now);
                self.sim.send_now(i);
            }
            21 => {
                let i = self.node();
                if self.g.bool() {
                    self.sim.crash(i);
                } else {
                    self.sim.restart(i);
                    self.last[i] = Last::default();
                    self.left[i] = false;
                    let j = self.node();
                    if i != j {
                        self.sim.join(i, j);
                    }
                }
            }
            22 => match self.g.below(3) {
                0 => {
                    let i = self.node();
                    let grp = self.g.below(2) as u32;
                    self.sim.set_group(i, grp);
                }
                1 => self.sim.heal(),
                _ => self.sim.loss = [0.0, 0.1, 0.5][self.g.below(3)],
            },
            _ => {
                // Clocks restored from a (maybe corrupt) snapshot.
                let i = self.node();
                let c = self.clocks(i);
                let (a, b, q) = (self.ltime(c.0), self.ltime(c.1), self.ltime(c.2));
                self.sim.nodes[i].serf.restore_clocks(a, b, q);
            }
        }
    }

    /// A phantom answers one thing from its inbox.
    fn answer(&mut self) {
        if self.inbox.is_empty() {
            return;
        }
        let k = self.g.below(self.inbox.len());
        let (i, phantom, seen) = self.inbox[k].clone();
        if self.sim.nodes[i].crashed {
            return;
        }
        let now = self.sim.now();
        match seen {
            Seen::Ping { seq } => {
                let m = if self.g.below(4) == 0 {
                    Message::Nack(wire::Nack { seq_no: seq })
                } else {
                    Message::Ack(wire::Ack {
                        seq_no: seq,
                        payload: self.ack_payload(),
                    })
                };
                self.deliver_packet(i, phantom, vec![m.encode()]);
            }
            Seen::Query { .. } => {
                let mut r = self.query_response();
                if let Seen::Query { ltime, id } = seen {
                    (r.ltime, r.id) = (ltime, id);
                }
                let m = Message::User(SerfMessage::QueryResponse(r).encode()).encode();
                self.deliver_packet(i, phantom, vec![m]);
            }
            Seen::PushPull => {
                let m = if self.g.below(8) == 0 {
                    self.message(i)
                } else {
                    Message::PushPull(self.push_pull(i)).encode()
                };
                if let Some(m) = self.stream_msg(i, m) {
                    self.log(|| format!("push-pull reply to n{i} from {phantom}: {m:?}"));
                    self.sim.nodes[i].serf.handle_push_pull_reply(m, now);
                    self.sim.send_now(i);
                }
            }
            Seen::TcpPing { seq } => {
                let m = Message::Ack(wire::Ack {
                    seq_no: if self.g.below(4) == 0 {
                        self.seq()
                    } else {
                        seq
                    },
                    payload: self.ack_payload(),
                })
                .encode();
                if let Some(m) = self.stream_msg(i, m) {
                    self.log(|| format!("TCP ping reply to n{i} from {phantom}: {m:?}"));
                    self.sim.nodes[i].serf.handle_tcp_ping_reply(m, now);
                    self.sim.send_now(i);
                }
            }
        }
    }

    /// Reads what the nodes sent to phantoms into the inbox; all of it
    /// must decode.
    fn collect_tapped(&mut self) {
        for (i, o) in std::mem::take(&mut self.sim.tapped) {
            match o {
                Output::Packet { to, bytes } => {
                    let (msgs, dropped) = match wire::decode_packet(&self.keys, &bytes) {
                        Ok(x) => x,
                        Err(e) => panic!("node {i} sent a packet that does not decode: {e}"),
                    };
                    assert_eq!(
                        dropped, 0,
                        "node {i} sent a packet with bad parts: {msgs:?}"
                    );
                    for m in msgs {
                        match m {
                            Message::Ping(p) => {
                                self.inbox.push((i, to, Seen::Ping { seq: p.seq_no }))
                            }
                            Message::IndirectPing(p) => {
                                self.inbox.push((i, to, Seen::Ping { seq: p.seq_no }))
                            }
                            Message::User(b) => {
                                if let Ok(SerfMessage::Query(q)) = SerfMessage::decode(&b) {
                                    self.inbox.push((
                                        i,
                                        to,
                                        Seen::Query {
                                            ltime: q.ltime,
                                            id: q.id,
                                        },
                                    ));
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Output::PushPull { to, bytes, .. } => {
                    self.check_stream(i, &bytes);
                    self.inbox.push((i, to, Seen::PushPull));
                }
                Output::TcpPing { to, bytes } => {
                    if let Some(Message::Ping(p)) = self.check_stream(i, &bytes) {
                        self.inbox.push((i, to, Seen::TcpPing { seq: p.seq_no }));
                    }
                }
                Output::Stream { bytes, .. } => {
                    self.check_stream(i, &bytes);
                }
            }
        }
        if self.inbox.len() > 32 {
            let extra = self.inbox.len() - 32;
            self.inbox.drain(..extra);
        }
    }

    fn check_stream(&self, i: usize, bytes: &[u8]) -> Option<Message> {
        match wire::parse_stream(&self.keys, bytes) {
            Ok(Some((m, used))) if used == bytes.len() => Some(m),
            other => panic!("node {i} sent a stream message that does not decode: {other:?}"),
        }
    }

    fn check(&mut self) {
        self.collect_tapped();
        for i in 0..self.n() {
            let node = &mut self.sim.nodes[i];
            // The sim keeps every event; only recent queries matter here.
            if node.events.len() > 64 {
                let extra = node.events.len() - 64;
                node.events.drain(..extra);
            }
            if node.crashed {
                continue;
            }
            let s = &node.serf;
            let me = s.name().to_string();
            let c = s.clocks();
            let last = self.last[i];
            assert!(
                c.0 >= last.clocks.0 && c.1 >= last.clocks.1 && c.2 >= last.clocks.2,
                "node {me}: a Lamport clock went backwards: {:?} -> {c:?}",
                last.clocks
            );
            let inc = s.core().incarnation();
            assert!(
                inc >= last.incarnation,
                "node {me}: its incarnation went backwards: {} -> {inc}",
                last.incarnation
            );
            self.last[i] = Last {
                clocks: c,
                incarnation: inc,
            };
            let status = s.status_of(&me);
            if self.left[i] {
                assert!(status.is_some(), "node {me} left and lost itself");
            } else {
                assert_eq!(
                    status,
                    Some(MemberStatus::Alive),
                    "node {me} sees itself {status:?} without having left"
                );
                assert_eq!(
                    s.core().local_node().state,
                    NodeState::Alive,
                    "node {me}: memberlist sees itself not alive without having left"
                );
            }
            let members = s.members();
            assert!(members.len() <= self.names.len());
            for m in &members {
                assert!(
                    self.names.contains(&m.name),
                    "node {me} knows a member named {:?} nobody used",
                    m.name
                );
            }
            for n in s.core().nodes() {
                assert!(
                    self.names.contains(&n.name),
                    "node {me}: memberlist knows a node named {:?} nobody used",
                    n.name
                );
            }
        }
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
