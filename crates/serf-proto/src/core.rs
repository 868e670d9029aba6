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
//! Timers are polled: the caller calls [`Core::tick`] at least every
//! [`Core::TICK`]; deadlines are checked there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use crate::wire::{self, Accuse, Alive, Envelope, Message, NodeState, Ping, PushNodeState};

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
    /// Seed of the core's random choices (and AES-GCM nonces).
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
    pub name: String,
    pub addr: SocketAddr,
    pub meta: Vec<u8>,
    pub vsn: Vec<u8>,
    pub incarnation: u32,
    pub state: NodeState,
    pub state_change: Duration,
}

/// What the layer above (Serf) provides and hears.
pub trait Delegate {
    fn notify_msg(&mut self, msg: &[u8], now: Duration);
    fn get_broadcasts(&mut self, overhead: usize, limit: usize) -> Vec<Vec<u8>>;
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

/// A small deterministic PRNG (splitmix64): the core must be reproducible
/// under the simulator; the agent seeds it from the OS.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
    pub fn nonce(&mut self) -> [u8; 12] {
        let a = self.next_u64().to_le_bytes();
        let b = self.next_u64().to_le_bytes();
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&a);
        n[8..].copy_from_slice(&b[..4]);
        n
    }
}

/// memberlist's TransmitLimitedQueue: messages go out piggybacked until
/// each was sent `limit` times; fewest-sent first.
///
/// Kept ordered as memberlist keeps its btree (fewest transmits first,
/// newest first among equals), so a take walks the front of the queue
/// instead of sorting all of it, and a prune drops from the back.
#[derive(Debug, Default, Clone)]
pub struct BroadcastQueue {
    items: BTreeMap<QueueKey, Broadcast>,
    /// Which node names have a message queued (name → its key), so queueing
    /// about a node finds the message it replaces without a scan: with a
    /// thousand members that scan dominated the run time.
    named: HashMap<String, QueueKey>,
    seq: u64,
}

/// (transmits, newest first): the queue's order.
type QueueKey = (u32, std::cmp::Reverse<u64>);

#[derive(Debug, Clone)]
struct Broadcast {
    /// Messages about the same node replace each other.
    name: Option<String>,
    msg: Vec<u8>,
}

/// Broadcasts taken for one packet: a compound message counts its parts in
/// one byte (memberlist: at most 255), one of them the message they ride on.
const MAX_PIGGYBACKED: usize = 254;

impl BroadcastQueue {
    pub fn queue(&mut self, name: Option<String>, msg: Vec<u8>) {
        self.seq += 1;
        let key = (0, std::cmp::Reverse(self.seq));
        if let Some(n) = &name {
            if let Some(old) = self.named.insert(n.clone(), key) {
                self.items.remove(&old);
            }
        }
        self.items.insert(key, Broadcast { name, msg });
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// memberlist's `Prune`: keeps at most `max` messages, dropping the
    /// most sent, then the oldest; returns how many went.
    pub fn prune(&mut self, max: usize) -> usize {
        let mut dropped = 0;
        while self.items.len() > max {
            let Some((_, b)) = self.items.pop_last() else {
                break;
            };
            if let Some(n) = &b.name {
                self.named.remove(n);
            }
            dropped += 1;
        }
        dropped
    }
    pub fn get(&mut self, overhead: usize, limit: usize, max_transmits: u32) -> Vec<Vec<u8>> {
        // Fewest transmits first, newest first among equals: the map's order.
        let mut used = 0;
        let mut taken = Vec::new();
        for (key, b) in &self.items {
            // Nothing fits in what is left (a message is at least a byte).
            if taken.len() >= MAX_PIGGYBACKED || limit.saturating_sub(used) <= overhead {
                break;
            }
            let cost = b.msg.len() + overhead;
            if used + cost > limit {
                continue;
            }
            used += cost;
            taken.push(*key);
        }
        let mut out = Vec::with_capacity(taken.len());
        for (transmits, id) in taken {
            let Some(b) = self.items.remove(&(transmits, id)) else {
                continue;
            };
            let sent = transmits.saturating_add(1);
            if sent < max_transmits {
                out.push(b.msg.clone());
                let key = (sent, id);
                if let Some(n) = &b.name {
                    self.named.insert(n.clone(), key);
                }
                self.items.insert(key, b);
            } else {
                if let Some(n) = &b.name {
                    self.named.remove(n);
                }
                out.push(b.msg);
            }
        }
        out
    }
}

pub fn retransmit_limit(mult: u32, n: usize) -> u32 {
    let scale = ((n + 1) as f64).log10().ceil().max(1.0) as u32;
    mult * scale
}

pub fn suspicion_timeout(mult: u32, n: usize, interval: Duration) -> Duration {
    let scale = (n.max(1) as f64).log10().max(1.0);
    let ms = (scale * 1000.0) as u64;
    interval * mult * ms as u32 / 1000
}

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

impl Suspicion {
    fn recompute(&mut self) {
        let c = self.confirmations.len() as f64;
        let timeout = if self.k < 1 {
            self.min
        } else {
            let frac = (c + 1.0).ln() / (self.k as f64 + 1.0).ln();
            let raw =
                self.max.as_secs_f64() - frac * (self.max.as_secs_f64() - self.min.as_secs_f64());
            Duration::from_millis((raw * 1000.0).floor().max(0.0) as u64).max(self.min)
        };
        self.deadline = self.start + timeout;
    }
}

#[derive(Debug, Clone)]
struct Probe {
    target: String,
    seq: u32,
    /// When the direct ping left (the round trip's start).
    sent_at: Duration,
    timeout_at: Duration,
    end_at: Duration,
    indirect_sent: bool,
    expected_nacks: usize,
    nacks: usize,
}

#[derive(Debug, Clone)]
struct Relay {
    orig_seq: u32,
    requester: SocketAddr,
    nack: bool,
    deadline: Duration,
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

pub struct Core {
    cfg: Config,
    env: Envelope,
    nodes: BTreeMap<String, Node>,
    incarnation: u32,
    seq: u32,
    rng: Rng,
    queue: BroadcastQueue,
    outputs: Vec<Output>,
    suspicions: HashMap<String, Suspicion>,
    probe: Option<Probe>,
    probe_order: Vec<String>,
    probe_index: usize,
    next_probe: Duration,
    next_gossip: Duration,
    next_push_pull: Duration,
    next_cleanup: Duration,
    relays: HashMap<u32, Relay>,
    /// Addresses of peers speaking memberlist protocol >= 5 (they get CRCs).
    crc_addrs: HashSet<SocketAddr>,
    awareness: i32,
    leaving: bool,
    /// A refutation happened while handling input: tell the live peers
    /// directly once that input is handled ([`Core::announce_refutation`]).
    refuted: bool,
    pub counters: Counters,
}

impl Core {
    /// The caller should call [`Core::tick`] at least this often.
    pub const TICK: Duration = Duration::from_millis(50);

    pub fn new(cfg: Config, now: Duration) -> Core {
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
            relays: HashMap::new(),
            crc_addrs: HashSet::new(),
            awareness: 0,
            leaving: false,
            refuted: false,
            counters: Counters::default(),
            cfg,
        };
        let me = Node {
            name: core.cfg.name.clone(),
            addr: core.cfg.addr,
            meta: core.cfg.meta.clone(),
            vsn: core.cfg.vsn.to_vec(),
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
        &self.nodes[&self.cfg.name]
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
        let packet = if extra.is_empty() {
            msg
        } else {
            let mut all = vec![msg];
            all.extend(extra);
            wire::make_compound(&all)
        };
        self.send_raw(to, &packet);
    }

    fn send_raw(&mut self, to: SocketAddr, msg: &[u8]) {
        let crc = self.wants_crc(to);
        let nonce = self.rng.nonce();
        let bytes = wire::encode_packet(&self.env, msg, crc, nonce);
        self.counters.packets_out += 1;
        self.outputs.push(Output::Packet { to, bytes });
    }

    fn get_broadcasts<D: Delegate>(
        &mut self,
        overhead: usize,
        limit: usize,
        d: &mut D,
    ) -> Vec<Vec<u8>> {
        let lim = self.retransmit_limit();
        let mut out = self.queue.get(overhead, limit, lim);
        let used: usize = out.iter().map(|m| m.len() + overhead).sum();
        // Serf's messages ride in user messages (one byte of overhead).
        let user = d.get_broadcasts(overhead + 1, limit.saturating_sub(used));
        out.extend(user.into_iter().map(|m| Message::User(m).encode()));
        out
    }

    fn broadcast(&mut self, node: &str, msg: Message) {
        self.queue.queue(Some(node.to_string()), msg.encode());
    }

    // --- entry points -----------------------------------------------------

    /// Starts a join through `addr`: a push-pull with Join set.
    pub fn join<D: Delegate>(&mut self, addr: SocketAddr, d: &mut D) {
        let bytes = self.local_state_stream(true, d);
        self.outputs.push(Output::PushPull {
            to: addr,
            join: true,
            bytes,
        });
    }

    fn local_state_stream<D: Delegate>(&mut self, join: bool, d: &mut D) -> Vec<u8> {
        let nodes = self
            .nodes
            .values()
            .map(|n| PushNodeState {
                name: n.name.clone(),
                addr: wire::addr_bytes(n.addr.ip()),
                port: n.addr.port(),
                meta: n.meta.clone(),
                incarnation: n.incarnation,
                state: n.state,
                vsn: n.vsn.clone(),
            })
            .collect();
        let msg = Message::PushPull(wire::PushPull {
            join,
            nodes,
            user_state: d.local_state(join),
        });
        let nonce = self.rng.nonce();
        wire::encode_stream(&self.env, &msg.encode(), nonce)
    }

    /// A UDP datagram arrived.
    pub fn handle_packet<D: Delegate>(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        now: Duration,
        d: &mut D,
    ) {
        let decoded = wire::decode_packet(&self.env.keys, bytes);
        self.handle_decoded_packet(from, decoded, now, d);
    }

    /// A UDP datagram arrived, already through [`wire::decode_packet`]
    /// (so a caller can decrypt, decompress and decode it without holding
    /// whatever guards this state).
    pub fn handle_decoded_packet<D: Delegate>(
        &mut self,
        from: SocketAddr,
        decoded: wire::Result<(Vec<Message>, usize)>,
        now: Duration,
        d: &mut D,
    ) {
        self.counters.packets_in += 1;
        let (msgs, dropped) = match decoded {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(%from, error = %e, "dropped packet");
                self.counters.packets_dropped += 1;
                return;
            }
        };
        self.counters.packets_dropped += dropped as u64;
        for m in msgs {
            self.handle_message(from, m, now, d);
        }
        self.announce_refutation();
    }

    fn handle_message<D: Delegate>(
        &mut self,
        from: SocketAddr,
        m: Message,
        now: Duration,
        d: &mut D,
    ) {
        match m {
            Message::Ping(p) => {
                if !p.node.is_empty() && p.node != self.cfg.name {
                    return;
                }
                let to = reply_addr(&p.source_addr, p.source_port).unwrap_or(from);
                let ack = Message::Ack(wire::Ack {
                    seq_no: p.seq_no,
                    payload: d.ack_payload(),
                });
                self.send_msg(to, ack.encode(), d);
            }
            Message::IndirectPing(ip) => {
                let Some(target) =
                    wire::bytes_addr(&ip.target).map(|a| SocketAddr::new(a, ip.port))
                else {
                    return;
                };
                let requester = reply_addr(&ip.source_addr, ip.source_port).unwrap_or(from);
                let seq = self.next_seq();
                self.relays.insert(
                    seq,
                    Relay {
                        orig_seq: ip.seq_no,
                        requester,
                        nack: ip.nack,
                        deadline: now + self.cfg.probe_timeout,
                    },
                );
                let ping = Message::Ping(Ping {
                    seq_no: seq,
                    node: ip.node,
                    source_addr: wire::addr_bytes(self.cfg.addr.ip()),
                    source_port: self.cfg.addr.port(),
                    source_node: self.cfg.name.clone(),
                });
                self.send_msg(target, ping.encode(), d);
            }
            Message::Ack(a) => self.handle_ack(a.seq_no, &a.payload, now, d),
            Message::Nack(wire::Nack { seq_no }) => {
                if let Some(p) = &mut self.probe {
                    if p.seq == seq_no {
                        p.nacks += 1;
                    }
                }
            }
            Message::Alive(a) => self.alive_node(a, now, d, false),
            Message::Suspect(s) => self.suspect_node(s, now, d),
            Message::Dead(x) => self.dead_node(x, now, d),
            Message::User(b) => d.notify_msg(&b, now),
            Message::PushPull(_) | Message::Err(_) => {
                self.counters.packets_dropped += 1;
            }
        }
    }

    fn handle_ack<D: Delegate>(&mut self, seq: u32, payload: &[u8], now: Duration, d: &mut D) {
        if let Some(r) = self.relays.remove(&seq) {
            let ack = Message::Ack(wire::Ack {
                seq_no: r.orig_seq,
                payload: Vec::new(),
            });
            self.send_msg(r.requester, ack.encode(), d);
            return;
        }
        if let Some(p) = &self.probe {
            if p.seq == seq {
                // Only an answer to the direct ping, in time, is a round
                // trip (memberlist's NotifyPingComplete).
                if !p.indirect_sent {
                    if let Some(node) = self.nodes.get(&p.target) {
                        let rtt = now.saturating_sub(p.sent_at);
                        d.notify_ping_complete(node, rtt, payload);
                    }
                }
                self.probe = None;
                self.apply_awareness(-1);
            }
        }
    }

    /// A message arrived on an incoming TCP stream; returns the reply to
    /// write back, if any.
    pub fn handle_stream<D: Delegate>(
        &mut self,
        _from: SocketAddr,
        m: Message,
        now: Duration,
        d: &mut D,
    ) -> Option<Vec<u8>> {
        match m {
            Message::PushPull(pp) => {
                let reply = self.local_state_stream(pp.join, d);
                self.merge_remote(pp, now, d);
                self.announce_refutation();
                Some(reply)
            }
            Message::Ping(p) => {
                if !p.node.is_empty() && p.node != self.cfg.name {
                    return None;
                }
                let ack = Message::Ack(wire::Ack {
                    seq_no: p.seq_no,
                    payload: d.ack_payload(),
                });
                let nonce = self.rng.nonce();
                Some(wire::encode_stream(&self.env, &ack.encode(), nonce))
            }
            Message::User(b) => {
                d.notify_msg(&b, now);
                None
            }
            _ => None,
        }
    }

    /// The answer to a TCP fallback ping: an ack for the current probe
    /// counts like a UDP one.
    pub fn handle_tcp_ping_reply<D: Delegate>(&mut self, m: Message, now: Duration, d: &mut D) {
        if let Message::Ack(a) = m {
            if self.relays.contains_key(&a.seq_no) {
                return;
            }
            self.handle_ack(a.seq_no, &a.payload, now, d);
        }
    }

    /// The reply to a push-pull we started.
    pub fn handle_push_pull_reply<D: Delegate>(
        &mut self,
        m: Message,
        now: Duration,
        d: &mut D,
    ) -> bool {
        match m {
            Message::PushPull(pp) => {
                self.merge_remote(pp, now, d);
                self.announce_refutation();
                true
            }
            _ => false,
        }
    }

    fn merge_remote<D: Delegate>(&mut self, pp: wire::PushPull, now: Duration, d: &mut D) {
        for r in pp.nodes {
            match r.state {
                NodeState::Alive => self.alive_node(
                    Alive {
                        incarnation: r.incarnation,
                        node: r.name,
                        addr: r.addr,
                        port: r.port,
                        meta: r.meta,
                        vsn: r.vsn,
                    },
                    now,
                    d,
                    false,
                ),
                NodeState::Left => self.dead_node(
                    Accuse {
                        incarnation: r.incarnation,
                        from: r.name.clone(),
                        node: r.name,
                    },
                    now,
                    d,
                ),
                // memberlist treats a remote "dead" as a suspicion only.
                NodeState::Dead | NodeState::Suspect => self.suspect_node(
                    Accuse {
                        incarnation: r.incarnation,
                        node: r.name,
                        from: self.cfg.name.clone(),
                    },
                    now,
                    d,
                ),
            }
        }
        if !pp.user_state.is_empty() {
            d.merge_remote_state(&pp.user_state, pp.join, now);
        }
    }

    // --- state changes (memberlist state.go) -----------------------------

    fn refute(&mut self, accused: u32) {
        // Saturating: a peer accusing us at u32::MAX must not overflow
        // (memberlist's counter wraps to 0 there; either way a claim at the
        // largest incarnation cannot be outbid).
        self.incarnation = self.incarnation.max(accused).saturating_add(1);
        self.counters.refutes += 1;
        self.apply_awareness(1);
        let a = self.local_alive();
        let inc = self.incarnation;
        if let Some(me) = self.nodes.get_mut(&self.cfg.name) {
            me.incarnation = inc;
        }
        let name = self.cfg.name.clone();
        self.broadcast(&name, Message::Alive(a));
        self.refuted = true;
    }

    /// After a refutation, the new alive message goes straight to the live
    /// peers as well as by gossip (as a leave does, [`Core::announce`]):
    /// a node that rejoins under the name of one that left, or one that was
    /// suspected, is seen alive everywhere at once. Called once the input
    /// that caused it is handled, so that a rejoining node already knows
    /// the members its join brought in.
    fn announce_refutation(&mut self) {
        if std::mem::take(&mut self.refuted) && !self.leaving {
            let _ = self.announce(&Message::Alive(self.local_alive()).encode());
        }
    }

    fn alive_node<D: Delegate>(&mut self, a: Alive, now: Duration, d: &mut D, _bootstrap: bool) {
        if a.vsn.len() >= 3 && (a.vsn[0] == 0 || a.vsn[1] == 0 || a.vsn[0] > a.vsn[1]) {
            return;
        }
        let Some(ip) = wire::bytes_addr(&a.addr) else {
            return;
        };
        let addr = SocketAddr::new(ip, a.port);
        let is_local = a.node == self.cfg.name;
        if is_local && self.leaving {
            return;
        }
        let mut updates_node = false;
        match self.nodes.get(&a.node) {
            None => {
                self.nodes.insert(
                    a.node.clone(),
                    Node {
                        name: a.node.clone(),
                        addr,
                        meta: a.meta.clone(),
                        vsn: a.vsn.clone(),
                        incarnation: 0,
                        state: NodeState::Dead,
                        state_change: now,
                    },
                );
                // Probe newcomers at a random point of the round.
                let pos = self.rng.below(self.probe_order.len() + 1);
                self.probe_order.insert(pos, a.node.clone());
            }
            Some(n) if n.addr != addr => {
                if !is_local && (n.state == NodeState::Left || n.state == NodeState::Dead) {
                    updates_node = true;
                } else {
                    // Someone else claims this name (maybe ours): ignore the
                    // alive and let the delegate decide, as memberlist does.
                    tracing::warn!(node = %a.node, mine = %n.addr, theirs = %addr, "conflicting address, ignoring alive");
                    let existing = n.clone();
                    d.notify_conflict(&existing, addr, now);
                    return;
                }
            }
            _ => {}
        }
        let cur = &self.nodes[&a.node];
        if a.incarnation <= cur.incarnation && !is_local && !updates_node {
            return;
        }
        if a.incarnation < cur.incarnation && is_local {
            return;
        }
        self.suspicions.remove(&a.node);
        let old_state = cur.state;
        let old_meta = cur.meta.clone();
        if is_local {
            if a.incarnation == self.incarnation && a.meta == self.cfg.meta && a.vsn == self.cfg.vsn
            {
                return;
            }
            self.refute(a.incarnation);
            return;
        }
        let name = a.node.clone();
        let n = self.nodes.get_mut(&name).expect("present");
        n.incarnation = a.incarnation;
        n.meta = a.meta.clone();
        n.addr = addr;
        if a.vsn.len() >= 6 {
            n.vsn = a.vsn.clone();
        }
        if n.vsn.get(1).copied().unwrap_or(0) >= 5 {
            self.crc_addrs.insert(addr);
        }
        if n.state != NodeState::Alive {
            n.state = NodeState::Alive;
            n.state_change = now;
        }
        let snapshot = n.clone();
        self.broadcast(&name, Message::Alive(a));
        if old_state == NodeState::Dead || old_state == NodeState::Left {
            d.notify_join(&snapshot, now);
        } else if old_meta != snapshot.meta {
            d.notify_update(&snapshot, now);
        }
    }

    fn suspect_node<D: Delegate>(&mut self, s: Accuse, now: Duration, d: &mut D) {
        let Some(n) = self.nodes.get(&s.node) else {
            return;
        };
        if s.incarnation < n.incarnation {
            return;
        }
        if let Some(sus) = self.suspicions.get_mut(&s.node) {
            if s.from != s.node
                && sus.confirmations.len() < sus.k as usize
                && sus.confirmations.insert(s.from.clone())
            {
                sus.recompute();
                // Re-gossip the confirmation so others learn of it.
                self.queue
                    .queue(Some(s.node.clone()), Message::Suspect(s).encode());
            }
            return;
        }
        if n.state != NodeState::Alive {
            return;
        }
        if s.node == self.cfg.name {
            self.refute(s.incarnation);
            return;
        }
        let node_name = s.node.clone();
        let incarnation = s.incarnation;
        self.broadcast(&node_name, Message::Suspect(s.clone()));
        if let Some(n) = self.nodes.get_mut(&node_name) {
            n.incarnation = incarnation;
            n.state = NodeState::Suspect;
            n.state_change = now;
        }
        let count = self.nodes.len();
        let mut k = self.cfg.suspicion_mult.saturating_sub(2);
        if (count as i64 - 2) < k as i64 {
            k = 0;
        }
        let min = suspicion_timeout(self.cfg.suspicion_mult, count, self.cfg.probe_interval);
        let max = min * self.cfg.suspicion_max_mult;
        let mut sus = Suspicion {
            incarnation,
            k,
            start: now,
            min,
            max,
            confirmations: HashSet::new(),
            deadline: now,
        };
        if s.from != self.cfg.name && s.from != node_name {
            sus.confirmations.insert(s.from);
        }
        sus.recompute();
        self.suspicions.insert(node_name, sus);
        let _ = d;
    }

    fn dead_node<D: Delegate>(&mut self, x: Accuse, now: Duration, d: &mut D) {
        let Some(n) = self.nodes.get(&x.node) else {
            return;
        };
        if x.incarnation < n.incarnation {
            return;
        }
        self.suspicions.remove(&x.node);
        if matches!(n.state, NodeState::Dead | NodeState::Left) {
            return;
        }
        if x.node == self.cfg.name && !self.leaving {
            self.refute(x.incarnation);
            return;
        }
        let name = x.node.clone();
        let left = x.node == x.from;
        let incarnation = x.incarnation;
        self.broadcast(&name, Message::Dead(x));
        let n = self.nodes.get_mut(&name).expect("present");
        n.incarnation = incarnation;
        n.state = if left {
            NodeState::Left
        } else {
            NodeState::Dead
        };
        n.state_change = now;
        let snapshot = n.clone();
        if name != self.cfg.name {
            d.notify_leave(&snapshot, now);
        }
    }

    /// Graceful leave: gossip our own death with From = self (= left), and
    /// tell the live peers directly ([`Core::announce`]).
    pub fn leave(&mut self, now: Duration, d: &mut impl Delegate) {
        self.leaving = true;
        let name = self.cfg.name.clone();
        let x = Accuse {
            incarnation: self.incarnation,
            node: name.clone(),
            from: name,
        };
        self.dead_node(x.clone(), now, d);
        let _ = self.announce(&Message::Dead(x).encode());
    }

    /// Sends `msg` at once to every live peer (to [`ANNOUNCE_MAX`] of them,
    /// chosen at random, in a larger cluster), on top of the gossip that
    /// carries it too. Memberlist and Serf only gossip a leave: each peer
    /// hears it after a few gossip rounds (200 ms each on a LAN), and a load
    /// balancer keeps sending requests to the leaving node meanwhile. The
    /// peers take the direct copy as any gossiped one (the later copies are
    /// duplicates), so a real serf is told the same way.
    ///
    /// True when every live peer was sent it.
    pub fn announce(&mut self, msg: &[u8]) -> bool {
        let me = &self.cfg.name;
        let mut to: Vec<SocketAddr> = self
            .nodes
            .values()
            .filter(|n| &n.name != me && matches!(n.state, NodeState::Alive | NodeState::Suspect))
            .map(|n| n.addr)
            .collect();
        let all = to.len() <= ANNOUNCE_MAX;
        if !all {
            self.rng.shuffle(&mut to);
            to.truncate(ANNOUNCE_MAX);
        }
        for addr in to {
            self.send_raw(addr, msg);
        }
        all
    }

    /// [`Core::announce`] for a message of the layer above (a user message).
    pub fn announce_user(&mut self, msg: &[u8]) -> bool {
        self.announce(&Message::User(msg.to_vec()).encode())
    }

    /// New meta (tags): bump the incarnation and gossip an alive.
    pub fn set_meta(&mut self, meta: Vec<u8>) {
        self.cfg.meta = meta.clone();
        self.incarnation = self.incarnation.saturating_add(1);
        let inc = self.incarnation;
        if let Some(me) = self.nodes.get_mut(&self.cfg.name) {
            me.meta = meta;
            me.incarnation = inc;
        }
        let a = self.local_alive();
        let name = self.cfg.name.clone();
        self.broadcast(&name, Message::Alive(a));
    }

    /// Best-effort user message to one address.
    pub fn send_user(&mut self, to: SocketAddr, msg: &[u8]) {
        let m = Message::User(msg.to_vec()).encode();
        self.send_raw(to, &m);
    }

    /// Reliable user message over TCP.
    pub fn send_user_reliable(&mut self, to: SocketAddr, msg: &[u8]) {
        let nonce = self.rng.nonce();
        let bytes = wire::encode_stream(&self.env, &wire::user_stream_msg(msg), nonce);
        self.outputs.push(Output::Stream { to, bytes });
    }

    /// Advances timers.
    /// When the next gossip round is due: the shell wakes up for it
    /// exactly, rather than at the next [`Core::TICK`] (a message waits for
    /// the next round at every hop; 50 ms more per hop added up).
    pub fn next_gossip_at(&self) -> Duration {
        self.next_gossip
    }

    pub fn tick<D: Delegate>(&mut self, now: Duration, d: &mut D) {
        // A refutation flagged by an input path that does not announce it.
        self.announce_refutation();
        // Suspicion timeouts.
        let expired: Vec<(String, u32)> = self
            .suspicions
            .iter()
            .filter(|(_, s)| now >= s.deadline)
            .map(|(n, s)| (n.clone(), s.incarnation))
            .collect();
        for (node, inc) in expired {
            self.suspicions.remove(&node);
            let x = Accuse {
                incarnation: inc,
                node,
                from: self.cfg.name.clone(),
            };
            self.dead_node(x, now, d);
        }
        // Relayed pings that got no ack: nack back.
        let late: Vec<u32> = self
            .relays
            .iter()
            .filter(|(_, r)| now >= r.deadline)
            .map(|(s, _)| *s)
            .collect();
        for s in late {
            if let Some(r) = self.relays.remove(&s) {
                if r.nack {
                    let m = Message::Nack(wire::Nack { seq_no: r.orig_seq }).encode();
                    self.send_msg(r.requester, m, d);
                }
            }
        }
        if self.leaving {
            // Keep gossiping so our leave spreads, but stop probing.
            if now >= self.next_gossip {
                self.next_gossip = now + self.cfg.gossip_interval;
                self.gossip(now, d);
            }
            return;
        }
        self.probe_tick(now, d);
        if now >= self.next_gossip {
            self.next_gossip = now + self.cfg.gossip_interval;
            self.gossip(now, d);
        }
        if now >= self.next_push_pull {
            let others = self
                .nodes
                .values()
                .filter(|n| n.name != self.cfg.name && n.state == NodeState::Alive)
                .count();
            self.next_push_pull = now + push_pull_scale(self.cfg.push_pull_interval, others + 1);
            if others > 0 {
                let pick = self.rng.below(others);
                let to = self
                    .nodes
                    .values()
                    .filter(|n| n.name != self.cfg.name && n.state == NodeState::Alive)
                    .nth(pick)
                    .map(|n| n.addr);
                if let Some(to) = to {
                    let bytes = self.local_state_stream(false, d);
                    self.outputs.push(Output::PushPull {
                        to,
                        join: false,
                        bytes,
                    });
                }
            }
        }
        // Forget dead nodes after gossip_to_dead (memberlist's resetNodes);
        // a scan of the whole table, so once a second, not every tick.
        if now < self.next_cleanup {
            return;
        }
        self.next_cleanup = now + Duration::from_secs(1);
        let cutoff = self.cfg.gossip_to_dead;
        let me = self.cfg.name.clone();
        let gone: Vec<String> = self
            .nodes
            .values()
            .filter(|n| {
                n.name != me
                    && matches!(n.state, NodeState::Dead | NodeState::Left)
                    && now.saturating_sub(n.state_change) > cutoff
            })
            .map(|n| n.name.clone())
            .collect();
        for g in gone {
            self.nodes.remove(&g);
            self.probe_order.retain(|n| n != &g);
        }
    }

    fn probe_tick<D: Delegate>(&mut self, now: Duration, d: &mut D) {
        if let Some(p) = self.probe.clone() {
            if !p.indirect_sent && now >= p.timeout_at {
                self.send_indirect(&p, d);
            }
            if now >= p.end_at {
                // Lifeguard: missing nacks hint at our own trouble.
                self.probe = None;
                self.counters.probe_failures += 1;
                let missed = p.expected_nacks.saturating_sub(p.nacks) as i32;
                self.apply_awareness(if p.expected_nacks > 0 { missed } else { 1 });
                if let Some(n) = self.nodes.get(&p.target) {
                    if n.state == NodeState::Alive || n.state == NodeState::Suspect {
                        let s = Accuse {
                            incarnation: n.incarnation,
                            node: p.target.clone(),
                            from: self.cfg.name.clone(),
                        };
                        self.suspect_node(s, now, d);
                    }
                }
            } else {
                return;
            }
        }
        if now < self.next_probe {
            return;
        }
        let interval = self.scale(self.cfg.probe_interval);
        self.next_probe = now + interval;
        let Some(target) = self.next_probe_target() else {
            return;
        };
        let addr = self.nodes[&target].addr;
        let seq = self.next_seq();
        self.counters.probes += 1;
        self.probe = Some(Probe {
            target: target.clone(),
            seq,
            sent_at: now,
            timeout_at: now + self.scale(self.cfg.probe_timeout),
            end_at: now + interval,
            indirect_sent: false,
            expected_nacks: 0,
            nacks: 0,
        });
        let ping = Message::Ping(Ping {
            seq_no: seq,
            node: target,
            source_addr: wire::addr_bytes(self.cfg.addr.ip()),
            source_port: self.cfg.addr.port(),
            source_node: self.cfg.name.clone(),
        });
        self.send_msg(addr, ping.encode(), d);
    }

    fn next_probe_target(&mut self) -> Option<String> {
        for _ in 0..=self.probe_order.len() {
            if self.probe_index >= self.probe_order.len() {
                self.probe_index = 0;
                let mut order: Vec<String> = self
                    .nodes
                    .keys()
                    .filter(|n| **n != self.cfg.name)
                    .cloned()
                    .collect();
                self.rng.shuffle(&mut order);
                self.probe_order = order;
                if self.probe_order.is_empty() {
                    return None;
                }
            }
            let name = self.probe_order[self.probe_index].clone();
            self.probe_index += 1;
            if let Some(n) = self.nodes.get(&name) {
                if matches!(n.state, NodeState::Alive | NodeState::Suspect) {
                    return Some(name);
                }
            }
        }
        None
    }

    fn send_indirect<D: Delegate>(&mut self, p: &Probe, d: &mut D) {
        let Some(target) = self.nodes.get(&p.target).cloned() else {
            return;
        };
        let mut peers: Vec<Node> = self
            .nodes
            .values()
            .filter(|n| {
                n.name != self.cfg.name && n.name != p.target && n.state == NodeState::Alive
            })
            .cloned()
            .collect();
        self.rng.shuffle(&mut peers);
        peers.truncate(self.cfg.indirect_checks);
        let mut expected = 0;
        for peer in &peers {
            let nack = peer.vsn.get(1).copied().unwrap_or(0) >= 4;
            expected += nack as usize;
            let m = Message::IndirectPing(wire::IndirectPing {
                seq_no: p.seq,
                target: wire::addr_bytes(target.addr.ip()),
                port: target.addr.port(),
                node: target.name.clone(),
                nack,
                source_addr: wire::addr_bytes(self.cfg.addr.ip()),
                source_port: self.cfg.addr.port(),
                source_node: self.cfg.name.clone(),
            });
            self.send_msg(peer.addr, m.encode(), d);
        }
        if let Some(pr) = &mut self.probe {
            pr.indirect_sent = true;
            pr.expected_nacks = expected;
        }
        // TCP fallback toward peers that understand it (protocol >= 3).
        if target.vsn.get(1).copied().unwrap_or(0) >= 3 {
            let ping = Message::Ping(Ping {
                seq_no: p.seq,
                node: target.name.clone(),
                source_addr: wire::addr_bytes(self.cfg.addr.ip()),
                source_port: self.cfg.addr.port(),
                source_node: self.cfg.name.clone(),
            });
            let nonce = self.rng.nonce();
            let bytes = wire::encode_stream(&self.env, &ping.encode(), nonce);
            self.outputs.push(Output::TcpPing {
                to: target.addr,
                bytes,
            });
        }
    }

    fn gossip<D: Delegate>(&mut self, now: Duration, d: &mut D) {
        let to_dead = self.cfg.gossip_to_dead;
        // As memberlist: live and suspect nodes, and nodes that died (not
        // left) recently, so a wrongly declared death can be refuted. A node
        // that left said goodbye: gossip sent to it is lost, and in a small
        // cluster that many leave at once, it would take a large share of
        // every round from the live members.
        let eligible = |n: &Node| match n.state {
            NodeState::Alive | NodeState::Suspect => true,
            NodeState::Dead => now.saturating_sub(n.state_change) <= to_dead,
            NodeState::Left => false,
        };
        let k = self.cfg.gossip_nodes;
        let mut cands: Vec<SocketAddr> = Vec::with_capacity(k);
        let total = self.probe_order.len();
        if total < k * 3 {
            let mut all: Vec<SocketAddr> = self
                .probe_order
                .iter()
                .filter_map(|name| self.nodes.get(name))
                .filter(|n| eligible(n))
                .map(|n| n.addr)
                .collect();
            self.rng.shuffle(&mut all);
            all.truncate(k);
            cands = all;
        } else {
            // Large clusters: sample like memberlist's kRandomNodes.
            for _ in 0..3 * total {
                if cands.len() >= k {
                    break;
                }
                let i = self.rng.below(total);
                let Some(n) = self.nodes.get(&self.probe_order[i]) else {
                    continue;
                };
                if eligible(n) && !cands.contains(&n.addr) {
                    cands.push(n.addr);
                }
            }
        }
        let mut avail = self.cfg.udp_buffer - 2;
        if !self.env.keys.is_empty() {
            avail -= 29;
        }
        for to in cands {
            let msgs = self.get_broadcasts(2, avail, d);
            if msgs.is_empty() {
                return;
            }
            let packet = if msgs.len() == 1 {
                msgs.into_iter().next().expect("one")
            } else {
                wire::make_compound(&msgs)
            };
            self.send_raw(to, &packet);
        }
    }
}

fn reply_addr(addr: &[u8], port: u16) -> Option<SocketAddr> {
    if port == 0 {
        return None;
    }
    wire::bytes_addr(addr).map(|ip| SocketAddr::new(ip, port))
}

fn push_pull_scale(interval: Duration, n: usize) -> Duration {
    if n <= 32 {
        return interval;
    }
    let mult = ((n as f64).log2() - 32f64.log2()).ceil() + 1.0;
    interval * mult as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifeguard_formulas_match_memberlist() {
        assert_eq!(
            suspicion_timeout(4, 1, Duration::from_secs(1)),
            Duration::from_secs(4)
        );
        assert_eq!(
            suspicion_timeout(4, 100, Duration::from_secs(1)),
            Duration::from_secs(8)
        );
        assert_eq!(
            suspicion_timeout(4, 1000, Duration::from_secs(1)),
            Duration::from_secs(12)
        );
        assert_eq!(retransmit_limit(4, 2), 4);
        assert_eq!(retransmit_limit(4, 99), 8);
        let mut s = Suspicion {
            incarnation: 1,
            k: 3,
            start: Duration::ZERO,
            min: Duration::from_secs(2),
            max: Duration::from_secs(30),
            confirmations: HashSet::new(),
            deadline: Duration::ZERO,
        };
        s.recompute();
        assert_eq!(s.deadline, Duration::from_secs(30));
        s.confirmations.insert("a".into());
        s.recompute();
        assert_eq!(s.deadline, Duration::from_secs(16));
        s.confirmations.insert("b".into());
        s.confirmations.insert("c".into());
        s.recompute();
        assert_eq!(s.deadline, Duration::from_secs(2));
    }

    /// memberlist's order: fewest transmits first, newest first among
    /// equals; a message too big for the space left is skipped, not the
    /// end of the take.
    #[test]
    fn queue_takes_fewest_sent_then_newest_first() {
        let mut q = BroadcastQueue::default();
        q.queue(None, vec![1]);
        q.queue(None, vec![2]);
        assert_eq!(q.get(0, 1, 10), vec![vec![2]]);
        q.queue(None, vec![3; 5]);
        q.queue(None, vec![4]);
        // 3 is too big for 2 bytes; 4 (newest, unsent) then 1 (unsent).
        assert_eq!(q.get(0, 2, 10), vec![vec![4], vec![1]]);
        assert_eq!(
            q.get(0, 100, 10),
            vec![vec![3; 5], vec![4], vec![2], vec![1]]
        );
        // Named messages keep their place when replaced... by the new one.
        q.queue(Some("a".into()), vec![5]);
        q.queue(Some("a".into()), vec![6]);
        assert_eq!(q.get(0, 1, 10), vec![vec![6]]);
        assert_eq!(q.len(), 5);
    }

    /// memberlist's `Prune`: the most sent, then oldest, go first; named
    /// messages pruned can be queued again.
    #[test]
    fn queue_prune_drops_most_sent_then_oldest() {
        let mut q = BroadcastQueue::default();
        q.queue(Some("a".into()), vec![1]);
        q.queue(None, vec![2]);
        q.get(0, 1, 10); // 2 sent once
        q.queue(None, vec![3]);
        q.queue(None, vec![4]);
        assert_eq!(q.prune(2), 2);
        assert_eq!(q.len(), 2);
        assert_eq!(q.get(0, 100, 10), vec![vec![4], vec![3]]);
        assert_eq!(q.prune(5), 0);
        q.queue(Some("a".into()), vec![5]);
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn queue_limits_transmits_and_replaces_by_name() {
        let mut q = BroadcastQueue::default();
        q.queue(Some("a".into()), vec![1]);
        q.queue(Some("a".into()), vec![2]);
        q.queue(None, vec![3]);
        assert_eq!(q.len(), 2);
        for _ in 0..3 {
            assert_eq!(q.get(2, 1000, 3).len(), 2);
        }
        assert!(q.is_empty());
        // Once a node's message has gone out for good, a new one about the
        // same node is queued afresh, and replaced again by the next.
        q.queue(Some("a".into()), vec![4]);
        q.queue(Some("b".into()), vec![5]);
        q.queue(Some("a".into()), vec![6]);
        let mut sent = q.get(2, 1000, 3);
        sent.sort();
        assert_eq!(sent, vec![vec![5], vec![6]]);
    }
}
