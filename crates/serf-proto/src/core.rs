//! The sans-IO SWIM + Lifeguard state machine (memberlist's job).
//!
//! Owns the node table (incarnation, alive/suspect/dead/left), the probe
//! cycle, suspicion, refutation, local-health awareness, the piggybacked
//! broadcast queue, gossip and push-pull. It has no sockets, clocks or
//! tasks: the caller feeds it packets, TCP messages and the current time
//! (`now` = time since some fixed origin, a `Duration`), and drains
//! [`Output`]s (UDP packets and TCP exchanges to perform). Callbacks toward
//! the layer above (Serf) go through [`Delegate`].
//!
//! Implemented, following memberlist 0.2 (serf 0.9.4's): probe every
//! `probe_interval` round-robin over a shuffled node list, ack within
//! `probe_timeout`, else indirect pings through `indirect_checks` members
//! (with nacks toward peers that speak protocol ≥ 4), suspicion with
//! Lifeguard's timeout `max(min, max − log(c+1)/log(k+1)·(max−min))` where
//! `min = suspicion_mult · max(1, log10 n) · probe_interval`, refutation by
//! incarnation, awareness score scaling probe timeouts, gossip every
//! `gossip_interval` to `gossip_nodes` members (plus recently dead ones),
//! transmit-limited broadcasts (`retransmit_mult · ceil(log10(n+1))`, a new
//! message about a node replaces older ones), push-pull at join and every
//! `push_pull_interval`, CRC toward peers speaking protocol ≥ 5,
//! compression and encryption of what it sends.
//!
//! When a probe gets no UDP ack in time, a TCP ping is sent too (toward
//! peers speaking protocol ≥ 3), like memberlist's fallback.
//!
//! Not implemented: dead-node reclaim, protocol version negotiation
//! (we advertise serf 0.9.4's versions and accept any peer), labels.
//! Timers: the host calls [`Core::tick`] at [`Core::next_deadline`], and
//! reads that again after every input; ticking earlier is harmless, and
//! no host needs to poll.

//!
//! Its parts: [`broadcast`] (the piggybacked queue), `state` (node state
//! transitions), `input` (packets and streams in), `timers` (probes,
//! gossip, push-pull, deadlines), [`rng`] (the seeded PRNG, the nonce
//! source's type). This file
//! holds the configuration, the types the layer above sees and the
//! [`Core`] itself with its sending helpers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::wire::{self, Alive, Envelope, Message, NodeState};

mod addrs;
pub mod broadcast;
mod input;
pub mod rng;
mod state;
mod timers;

use addrs::AddrSet;
pub use broadcast::{retransmit_limit, BroadcastQueue};
pub use rng::{NonceSource, Rng};
pub use state::suspicion_timeout;

/// The keys of `map`'s entries whose deadline has come, earliest deadline
/// first and equal deadlines by key: the order their timers would fire in,
/// whatever order the map keeps (a `HashMap`'s differs from process to
/// process, and a simulation must replay from its seed).
pub(crate) fn expired<'a, K: Clone + Ord + 'a, V: 'a>(
    map: impl IntoIterator<Item = (&'a K, &'a V)>,
    now: Duration,
    deadline: impl Fn(&V) -> Duration,
) -> Vec<K> {
    let mut due: Vec<(Duration, K)> = map
        .into_iter()
        .map(|(k, v)| (deadline(v), k))
        .filter(|(at, _)| now >= *at)
        .map(|(at, k)| (at, k.clone()))
        .collect();
    due.sort();
    due.into_iter().map(|(_, k)| k).collect()
}

/// Most peers a leaving node tells directly; the others hear it by gossip.
pub const ANNOUNCE_MAX: usize = 64;

/// memberlist's LAN defaults, as serf 0.9.4 runs them.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    /// Address advertised to peers.
    pub addr: SocketAddr,
    pub meta: Vec<u8>,
    /// pmin, pmax, pcur, dmin, dmax, dcur (serf 0.9.4 sends 1,5,2,2,5,5).
    pub vsn: [u8; 6],
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub indirect_checks: usize,
    pub suspicion_mult: u32,
    pub suspicion_max_mult: u32,
    pub retransmit_mult: u32,
    pub gossip_interval: Duration,
    pub gossip_nodes: usize,
    pub gossip_to_dead: Duration,
    pub push_pull_interval: Duration,
    pub awareness_max: i32,
    /// Keyring, primary first; empty: plaintext.
    pub keys: Vec<Vec<u8>>,
    pub compress: bool,
    pub udp_buffer: usize,
    /// Seed of the core's random choices (not of AES-GCM nonces: those
    /// come from the [`NonceSource`] handed to [`Core::new`]).
    pub seed: u64,
}

impl Config {
    pub fn lan(name: &str, addr: SocketAddr) -> Config {
        Config {
            name: name.to_string(),
            addr,
            meta: Vec::new(),
            vsn: [1, 5, 2, 2, 5, 5],
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_checks: 3,
            suspicion_mult: 4,
            suspicion_max_mult: 6,
            retransmit_mult: 4,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            gossip_to_dead: Duration::from_secs(30),
            push_pull_interval: Duration::from_secs(30),
            awareness_max: 8,
            keys: Vec::new(),
            compress: true,
            udp_buffer: 1400,
            seed: 1,
        }
    }
}

/// A node as memberlist knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Shared with the node table's key and the probe order (and Serf's
    /// member table): one allocation per name, however many hold it.
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub meta: Arc<[u8]>,
    /// Protocol min, max, current; delegate min, max, current (memberlist
    /// keeps these six and sends them back as six bytes; zero when a peer
    /// sent fewer).
    pub vsn: [u8; 6],
    pub incarnation: u32,
    pub state: NodeState,
    pub state_change: Duration,
}

/// What the layer above (Serf) provides and hears.
pub trait Delegate {
    fn notify_msg(&mut self, msg: &[u8], now: Duration);
    fn get_broadcasts(&mut self, overhead: usize, limit: usize) -> Vec<Vec<u8>>;
    /// Whether [`Delegate::get_broadcasts`] would give anything: with
    /// nothing queued here or in the core, a gossip round sends nothing
    /// (as in memberlist), so the host need not wake for it.
    fn has_broadcasts(&self) -> bool {
        true
    }
    fn local_state(&mut self, join: bool) -> Vec<u8>;
    fn merge_remote_state(&mut self, buf: &[u8], join: bool, now: Duration);
    fn notify_join(&mut self, node: &Node, now: Duration);
    /// The node is dead or left (`node.state` says which).
    fn notify_leave(&mut self, node: &Node, now: Duration);
    fn notify_update(&mut self, node: &Node, now: Duration);
    /// An alive message claims `existing`'s name from another address
    /// (memberlist's conflict delegate); `existing` may be this node.
    fn notify_conflict(&mut self, existing: &Node, other: SocketAddr, now: Duration) {
        let _ = (existing, other, now);
    }
    /// What to put in the acks this node sends (memberlist's ping
    /// delegate; Serf puts its network coordinate here).
    fn ack_payload(&mut self) -> Vec<u8> {
        Vec::new()
    }
    /// A direct probe of `node` was answered after `rtt`, with `payload`.
    fn notify_ping_complete(&mut self, node: &Node, rtt: Duration, payload: &[u8]) {
        let _ = (node, rtt, payload);
    }
}

/// I/O the caller must perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send one UDP datagram.
    Packet { to: SocketAddr, bytes: Vec<u8> },
    /// Open a TCP stream to `to`, write `bytes`, read one push-pull reply
    /// and give it to [`Core::handle_push_pull_reply`].
    PushPull {
        to: SocketAddr,
        join: bool,
        bytes: Vec<u8>,
    },
    /// Open a TCP stream to `to` and write `bytes`; no reply expected.
    Stream { to: SocketAddr, bytes: Vec<u8> },
    /// memberlist's TCP fallback probe: write `bytes` (a ping) on a new TCP
    /// stream to `to`, read one message and give it to
    /// [`Core::handle_tcp_ping_reply`].
    TcpPing { to: SocketAddr, bytes: Vec<u8> },
}

/// Counters shown by `stats`.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub packets_in: u64,
    pub packets_dropped: u64,
    pub packets_out: u64,
    pub probes: u64,
    pub probe_failures: u64,
    pub refutes: u64,
}

/// A node suspected, with Lifeguard's confirmations shrinking its timeout
/// toward `min` (state.rs).
#[derive(Debug, Clone)]
struct Suspicion {
    incarnation: u32,
    k: u32,
    start: Duration,
    min: Duration,
    max: Duration,
    confirmations: HashSet<String>,
    deadline: Duration,
}

/// The probe under way: one node pinged, its ack awaited (timers.rs).
#[derive(Debug, Clone)]
struct Probe {
    target: Arc<str>,
    seq: u32,
    /// When the direct ping left (the round trip's start).
    sent_at: Duration,
    timeout_at: Duration,
    end_at: Duration,
    indirect_sent: bool,
    expected_nacks: usize,
    nacks: usize,
}

/// A ping relayed for a peer (an indirect probe): answered with its ack,
/// or a nack at `deadline` when asked (input.rs, timers.rs).
#[derive(Debug, Clone)]
struct Relay {
    orig_seq: u32,
    requester: SocketAddr,
    nack: bool,
    deadline: Duration,
}

pub struct Core {
    cfg: Config,
    env: Envelope,
    nodes: BTreeMap<Arc<str>, Node>,
    incarnation: u32,
    seq: u32,
    rng: Rng,
    nonces: NonceSource,
    queue: BroadcastQueue,
    outputs: Vec<Output>,
    suspicions: HashMap<String, Suspicion>,
    probe: Option<Probe>,
    probe_order: Vec<Arc<str>>,
    probe_index: usize,
    next_probe: Duration,
    next_gossip: Duration,
    next_push_pull: Duration,
    next_cleanup: Duration,
    /// Some node other than this one is dead or left: the once-a-second
    /// cleanup has something to forget, some day (set when a node goes,
    /// recomputed by each cleanup scan).
    has_gone: bool,
    relays: HashMap<u32, Relay>,
    /// Addresses of peers speaking memberlist protocol >= 5 (they get CRCs).
    crc_addrs: AddrSet,
    awareness: i32,
    leaving: bool,
    /// A refutation happened while handling input: tell the live peers
    /// directly once that input is handled ([`Core::announce_refutation`]).
    refuted: bool,
    pub counters: Counters,
}

impl Core {
    /// A core at `now`, with `nonces` for the AES-GCM nonces of what it
    /// encrypts.
    pub fn new(cfg: Config, now: Duration, nonces: NonceSource) -> Core {
        let env = Envelope {
            keys: cfg.keys.clone(),
            compress: cfg.compress,
        };
        let mut rng = Rng::new(cfg.seed);
        let stagger = |rng: &mut Rng, d: Duration| {
            Duration::from_millis(rng.below(d.as_millis().max(1) as usize) as u64)
        };
        let next_probe = now + stagger(&mut rng, cfg.probe_interval);
        let next_gossip = now + stagger(&mut rng, cfg.gossip_interval);
        let next_push_pull =
            now + cfg.push_pull_interval + stagger(&mut rng, cfg.push_pull_interval);
        let mut core = Core {
            env,
            nodes: BTreeMap::new(),
            incarnation: 1,
            seq: 0,
            rng,
            nonces,
            queue: BroadcastQueue::default(),
            outputs: Vec::new(),
            suspicions: HashMap::new(),
            probe: None,
            probe_order: Vec::new(),
            probe_index: 0,
            next_probe,
            next_gossip,
            next_push_pull,
            next_cleanup: now,
            has_gone: false,
            relays: HashMap::new(),
            crc_addrs: AddrSet::default(),
            awareness: 0,
            leaving: false,
            refuted: false,
            counters: Counters::default(),
            cfg,
        };
        let me = Node {
            name: Arc::from(core.cfg.name.as_str()),
            addr: core.cfg.addr,
            meta: Arc::from(core.cfg.meta.as_slice()),
            vsn: core.cfg.vsn,
            incarnation: 1,
            state: NodeState::Alive,
            state_change: now,
        };
        core.nodes.insert(me.name.clone(), me);
        core
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn local_node(&self) -> &Node {
        &self.nodes[self.cfg.name.as_str()]
    }
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }
    pub fn awareness(&self) -> i32 {
        self.awareness
    }
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }
    pub fn pending_broadcasts(&self) -> usize {
        self.queue.len()
    }
    pub fn num_alive(&self) -> usize {
        self.nodes
            .values()
            .filter(|n| matches!(n.state, NodeState::Alive | NodeState::Suspect))
            .count()
    }
    pub fn drain_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }
    /// Replaces the keyring (primary first).
    pub fn set_keys(&mut self, keys: Vec<Vec<u8>>) {
        self.env.keys = keys.clone();
        self.cfg.keys = keys;
    }
    pub fn keys(&self) -> &[Vec<u8>] {
        &self.env.keys
    }

    fn retransmit_limit(&self) -> u32 {
        retransmit_limit(self.cfg.retransmit_mult, self.nodes.len())
    }

    fn apply_awareness(&mut self, delta: i32) {
        self.awareness = (self.awareness + delta).clamp(0, self.cfg.awareness_max - 1);
    }

    fn scale(&self, d: Duration) -> Duration {
        d * (self.awareness as u32 + 1)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn local_alive(&self) -> Alive {
        Alive {
            incarnation: self.incarnation,
            node: self.cfg.name.clone(),
            addr: wire::addr_bytes(self.cfg.addr.ip()),
            port: self.cfg.addr.port(),
            meta: self.cfg.meta.clone(),
            vsn: self.cfg.vsn.to_vec(),
        }
    }

    /// A fresh AES-GCM nonce, from the host's CSPRNG (none drawn without
    /// a key: nothing is encrypted then, the nonce goes unused).
    fn nonce(&mut self) -> [u8; 12] {
        let mut n = [0u8; 12];
        if !self.env.keys.is_empty() {
            self.nonces.fill_bytes(&mut n);
        }
        n
    }

    fn wants_crc(&self, to: SocketAddr) -> bool {
        self.crc_addrs.contains(&to)
    }

    /// Sends one message, with queued broadcasts piggybacked.
    fn send_msg<D: Delegate>(&mut self, to: SocketAddr, msg: Vec<u8>, d: &mut D) {
        let overhead = 2;
        let mut avail = self.cfg.udp_buffer.saturating_sub(msg.len() + 2);
        if !self.env.keys.is_empty() {
            avail = avail.saturating_sub(29);
        }
        let extra = self.get_broadcasts(overhead, avail, d);
        if extra.is_empty() {
            self.send_raw(to, &msg);
        } else {
            let mut all: Vec<&[u8]> = Vec::with_capacity(extra.len() + 1);
            all.push(&msg);
            all.extend(extra.iter().map(|m| &m[..]));
            self.send_raw(to, &wire::make_compound(&all));
        }
    }

    fn send_raw(&mut self, to: SocketAddr, msg: &[u8]) {
        let crc = self.wants_crc(to);
        let nonce = self.nonce();
        let bytes = wire::encode_packet(&self.env, msg, crc, nonce);
        self.counters.packets_out += 1;
        self.outputs.push(Output::Packet { to, bytes });
    }

    /// The broadcasts for one packet's `limit` bytes: the core's own
    /// first (shared with its queue, not copied), then Serf's.
    fn get_broadcasts<D: Delegate>(
        &mut self,
        overhead: usize,
        limit: usize,
        d: &mut D,
    ) -> Vec<Arc<[u8]>> {
        let lim = self.retransmit_limit();
        let mut out = Vec::new();
        let used = self.queue.take(overhead, limit, lim, &mut out);
        // Serf's messages ride in user messages (one byte of overhead).
        let user = d.get_broadcasts(overhead + 1, limit.saturating_sub(used));
        out.extend(user.into_iter().map(|m| Message::User(m).encode().into()));
        out
    }

    fn broadcast(&mut self, node: &str, msg: Message) {
        // Queued under the node table's own name when it has one.
        match self.nodes.get_key_value(node) {
            Some((name, _)) => self.queue.queue_about(name, msg.encode()),
            None => self.queue.queue(Some(node), msg.encode()),
        }
    }

    /// Best-effort user message to one address.
    pub fn send_user(&mut self, to: SocketAddr, msg: &[u8]) {
        let m = Message::User(msg.to_vec()).encode();
        self.send_raw(to, &m);
    }

    /// Reliable user message over TCP.
    pub fn send_user_reliable(&mut self, to: SocketAddr, msg: &[u8]) {
        let nonce = self.nonce();
        let bytes = wire::encode_stream(&self.env, &wire::user_stream_msg(msg), nonce);
        self.outputs.push(Output::Stream { to, bytes });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use rand_chacha::rand_core::{CryptoRng, RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    use super::*;

    /// Timers that come due together fire in one order on every run: by
    /// deadline, then by key, not in the order of a `HashMap`, whose hash
    /// keys (and so its order) differ between maps and processes.
    #[test]
    fn expired_timers_come_out_in_the_same_order_from_any_map() {
        let at = |ms: u64| Duration::from_millis(ms);
        let entries: Vec<(String, Duration)> = (0..64)
            .map(|i| (format!("n{i}"), at(if i % 3 == 0 { 10 } else { 20 })))
            .chain([("late".to_string(), at(99))])
            .collect();
        let orders: Vec<Vec<String>> = (0..4)
            .map(|_| {
                let map: HashMap<String, Duration> = entries.iter().cloned().collect();
                expired(&map, at(50), |d| *d)
            })
            .collect();
        let mut want: Vec<(Duration, String)> = entries
            .iter()
            .filter(|(_, d)| *d <= at(50))
            .map(|(k, d)| (*d, k.clone()))
            .collect();
        want.sort();
        let want: Vec<String> = want.into_iter().map(|(_, k)| k).collect();
        for order in &orders {
            assert_eq!(order, &want);
        }
    }

    /// A CSPRNG that hands out ChaCha20's bytes and keeps a copy of what
    /// each `fill_bytes` drew.
    struct Recording {
        inner: ChaCha20Rng,
        drawn: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl RngCore for Recording {
        fn next_u32(&mut self) -> u32 {
            unreachable!("nonces are drawn with fill_bytes")
        }
        fn next_u64(&mut self) -> u64 {
            unreachable!("nonces are drawn with fill_bytes")
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            self.inner.fill_bytes(dst);
            self.drawn.lock().unwrap().push(dst.to_vec());
        }
    }

    impl CryptoRng for Recording {}

    /// Every AES-GCM nonce of what the core encrypts (datagrams, streams)
    /// is a draw of the CSPRNG the host handed in, and no two are alike.
    #[test]
    fn nonces_come_from_the_host_csprng() {
        let drawn = Arc::new(Mutex::new(Vec::new()));
        let nonces = Recording {
            inner: ChaCha20Rng::seed_from_u64(7),
            drawn: drawn.clone(),
        };
        let mut cfg = Config::lan("a", "127.0.0.1:7946".parse().unwrap());
        cfg.keys = vec![vec![1u8; 16]];
        let mut core = Core::new(cfg, Duration::ZERO, Box::new(nonces));
        let to: SocketAddr = "127.0.0.2:7946".parse().unwrap();
        core.send_user(to, b"x");
        core.send_user(to, b"x");
        core.send_user_reliable(to, b"y");
        let sent: Vec<Vec<u8>> = core
            .drain_outputs()
            .into_iter()
            .map(|o| match o {
                // [version][nonce]...
                Output::Packet { bytes, .. } => bytes[1..13].to_vec(),
                // [encrypt type][length: 4][version][nonce]...
                Output::Stream { bytes, .. } => bytes[6..18].to_vec(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(sent, *drawn.lock().unwrap());
        assert_eq!(sent.len(), 3);
        assert!(sent.iter().all(|n| n.len() == 12));
        assert_ne!(sent[0], sent[1]);
        assert_ne!(sent[1], sent[2]);
        assert_ne!(sent[0], sent[2]);
    }
}
