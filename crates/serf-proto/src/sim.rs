//! A deterministic simulator for the sans-IO engine: many [`Serf`]
//! instances on a simulated network with simulated time, packet loss,
//! latency, partitions and crashes. Same seed, same run.
//!
//! UDP datagrams are delayed by 1–5 ms and dropped with probability
//! `loss`; TCP exchanges (push-pull, reliable messages) are delivered at
//! once and fail only across a partition or toward a crashed node. Time
//! moves from event to event: the next datagram's delivery or the next
//! node deadline ([`Serf::next_deadline`], read again after every input a
//! node gets), so each node is ticked exactly when it has something to do,
//! as the agent sleeps until its deadline.
//! LZW compression is off by default here (it dominated the run time; the
//! codec has its own tests and the interop tests use it with real serf).
//!
//! Scale: 100 members converge in about a second of wall time in the debug
//! profile; 1000 is possible but slow in debug builds (see the report).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::core::{NonceSource, Output, Rng};
use crate::model::{Event, Member, MemberStatus};
use crate::serf::{self, Serf};
use crate::wire;

pub mod hostile;
pub mod scale;

/// A datagram in flight: delivery time, tie-breaker, target index, source, bytes.
type InFlight = (Duration, u64, usize, SocketAddr, Vec<u8>);

/// What [`Sim::watch`] calls with each event: (node, time, event).
pub type Watcher = Box<dyn FnMut(usize, Duration, &Event)>;

pub struct SimNode {
    pub serf: Serf,
    pub addr: SocketAddr,
    pub crashed: bool,
    /// Partition group; nodes talk only within their group.
    pub group: u32,
    pub events: Vec<Event>,
    /// Why the node stopped after losing a name-conflict vote (the agent
    /// exits then; the simulator takes the node down).
    pub lost_name: Option<String>,
}

pub struct Sim {
    pub nodes: Vec<SimNode>,
    /// Each node's configuration, for [`Sim::restart`].
    configs: Vec<serf::Config>,
    now: Duration,
    queue: BinaryHeap<Reverse<InFlight>>,
    /// Each node's deadline as last read (`Duration::MAX`: crashed), and
    /// the wake-ups in time order; an entry that no longer matches its
    /// node's deadline is stale and skipped.
    deadlines: Vec<Duration>,
    wakes: BinaryHeap<Reverse<(Duration, usize)>>,
    /// Node ticks so far (each one a wake-up of that node).
    pub ticks: u64,
    /// Set: tick every live node every `poll` of simulated time instead of
    /// at its deadlines (how hosts ran before [`Serf::next_deadline`]; kept
    /// to compare the two).
    pub poll: Option<Duration>,
    next_poll: Duration,
    /// Per node: the instant of its last tick and how many it had then
    /// (a deadline that never moves on would spin the simulation).
    same_instant: Vec<(Duration, u32)>,
    seq: u64,
    rng: Rng,
    pub loss: f64,
    /// Extra one-way delay from node a to node b (a network's shape, for
    /// the coordinate tests); on top of the 1–5 ms jitter.
    pub link_delay: Option<Box<dyn Fn(usize, usize) -> Duration>>,
    pub delivered: u64,
    pub dropped: u64,
    /// Datagrams sent to nodes (delivered, lost or dropped).
    pub datagrams: u64,
    /// Stream exchanges opened (push-pull, TCP ping, reliable message),
    /// whether or not they reached their node.
    pub streams: u64,
    /// When set, each node's events go to this watcher as (node, time,
    /// event) instead of into [`SimNode::events`]: a large simulation keeps
    /// what it measures, not every event of every node.
    pub watch: Option<Watcher>,
    /// When set, what the nodes send to addresses outside the simulation
    /// (the hostile peers of [`hostile`]) is kept in [`Sim::tapped`] as
    /// (sender index, output) instead of being dropped.
    pub tap: bool,
    pub tapped: Vec<(usize, Output)>,
}

/// A deterministic nonce source for simulations and tests: ChaCha20 from
/// `seed` (as secure as the seed is secret: here, not at all; the agent
/// seeds its own from the OS).
pub fn nonce_source(seed: u64) -> NonceSource {
    Box::new(ChaCha20Rng::seed_from_u64(seed))
}

/// A node's nonce seed: from its PRNG seed, but not equal to it.
fn seed_of(cfg: &serf::Config) -> u64 {
    cfg.core.seed ^ 0x6e0c_e5ee_d5a1_7000
}

pub fn sim_addr(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8)),
        7946,
    )
}

impl Sim {
    /// `n` nodes named `n0`, `n1`, ...; `tweak` adjusts each node's config.
    pub fn new(n: usize, seed: u64, tweak: impl Fn(&mut serf::Config)) -> Sim {
        let mut nodes = Vec::with_capacity(n);
        let mut configs = Vec::with_capacity(n);
        for i in 0..n {
            let mut core = crate::core::Config::lan(&format!("n{i}"), sim_addr(i));
            core.seed = seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
            // LZW costs more than the whole protocol at this scale; the
            // codec has its own tests. `tweak` can turn it back on.
            core.compress = false;
            let mut cfg = serf::Config::new(core);
            cfg.tags = vec![("id".into(), i.to_string())];
            tweak(&mut cfg);
            configs.push(cfg.clone());
            let nonces = nonce_source(seed_of(&cfg));
            nodes.push(SimNode {
                serf: Serf::new(cfg, Duration::ZERO, nonces),
                addr: sim_addr(i),
                crashed: false,
                group: 0,
                events: Vec::new(),
                lost_name: None,
            });
        }
        Sim {
            nodes,
            configs,
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            deadlines: vec![Duration::MAX; n],
            wakes: BinaryHeap::new(),
            ticks: 0,
            poll: None,
            next_poll: Duration::ZERO,
            same_instant: vec![(Duration::MAX, 0); n],
            seq: 0,
            rng: Rng::new(seed),
            loss: 0.0,
            link_delay: None,
            delivered: 0,
            dropped: 0,
            datagrams: 0,
            streams: 0,
            watch: None,
            tap: false,
            tapped: Vec::new(),
        }
    }

    pub fn now(&self) -> Duration {
        self.now
    }

    fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        match addr.ip() {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                // x.y.z.0 (a hostile peer's 0.0.0.0, say) is no node's.
                let i = (o[2] as usize * 250 + o[3] as usize).checked_sub(1)?;
                (i < self.nodes.len() && self.nodes[i].addr == addr).then_some(i)
            }
            _ => None,
        }
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        !self.nodes[a].crashed
            && !self.nodes[b].crashed
            && self.nodes[a].group == self.nodes[b].group
    }

    /// Node `i`'s stream `bytes` to `to`, when that is a node `i` can
    /// reach and the bytes read there: the node's index and its reply.
    fn open_stream(
        &mut self,
        i: usize,
        to: SocketAddr,
        bytes: &[u8],
    ) -> Option<(usize, Option<Vec<u8>>)> {
        let t = self.index_of(to)?;
        if !self.reachable(i, t) {
            return None;
        }
        let m = self.read_stream(t, bytes)?;
        let (from, now) = (self.nodes[i].addr, self.now);
        Some((t, self.nodes[t].serf.handle_stream(from, m, now)))
    }

    /// A stream's `bytes` as node `i` reads them (with its keys).
    fn read_stream(&self, i: usize, bytes: &[u8]) -> Option<wire::Message> {
        let keys = self.nodes[i].serf.keys();
        match wire::parse_stream(keys, bytes) {
            Ok(Some((m, _))) => Some(m),
            _ => None,
        }
    }

    /// A stream from node `i` that expects an answer (push-pull, TCP
    /// ping): counted, the peer's turn queued in `work`, and the peer's
    /// reply read as node `i` reads it (`None`: no peer, no reply, or one
    /// that does not parse).
    fn exchange(
        &mut self,
        i: usize,
        to: SocketAddr,
        bytes: &[u8],
        work: &mut Vec<usize>,
    ) -> Option<wire::Message> {
        self.streams += 1;
        let (t, reply) = self.open_stream(i, to, bytes)?;
        work.push(t);
        self.read_stream(i, &reply?)
    }

    /// Node `i` joins through node `j` (push-pull at once).
    pub fn join(&mut self, i: usize, j: usize) -> bool {
        let to = self.nodes[j].addr;
        self.nodes[i].serf.join(&[to], false);
        let ok = self.flush(i);
        if ok > 0 {
            self.nodes[i].serf.joined();
            self.flush(i);
        }
        ok > 0
    }

    /// Performs node `i`'s outputs; returns how many push-pulls succeeded.
    fn flush(&mut self, i: usize) -> usize {
        let mut ok = 0;
        let mut work = vec![i];
        let mut rounds = 0;
        while let Some(i) = work.pop() {
            rounds += 1;
            if rounds > 10_000 {
                break;
            }
            for o in self.nodes[i].serf.drain_outputs() {
                if self.tap {
                    let to = match &o {
                        Output::Packet { to, .. }
                        | Output::PushPull { to, .. }
                        | Output::TcpPing { to, .. }
                        | Output::Stream { to, .. } => *to,
                    };
                    if self.index_of(to).is_none() {
                        self.tapped.push((i, o));
                        continue;
                    }
                }
                match o {
                    Output::Packet { to, bytes } => {
                        let Some(t) = self.index_of(to) else { continue };
                        self.datagrams += 1;
                        let lost =
                            (self.rng.next_u64() % 1_000_000) as f64 / 1_000_000.0 < self.loss;
                        if lost || !self.reachable(i, t) {
                            self.dropped += 1;
                            continue;
                        }
                        let mut delay = Duration::from_millis(1 + self.rng.below(5) as u64);
                        if let Some(f) = &self.link_delay {
                            delay += f(i, t);
                        }
                        self.seq += 1;
                        let from = self.nodes[i].addr;
                        self.queue
                            .push(Reverse((self.now + delay, self.seq, t, from, bytes)));
                    }
                    Output::PushPull { to, bytes, .. } => {
                        if let Some(m) = self.exchange(i, to, &bytes, &mut work) {
                            let now = self.now;
                            if self.nodes[i].serf.handle_push_pull_reply(m, now) {
                                ok += 1;
                            }
                            work.push(i);
                        }
                    }
                    Output::TcpPing { to, bytes } => {
                        if let Some(m) = self.exchange(i, to, &bytes, &mut work) {
                            let now = self.now;
                            self.nodes[i].serf.handle_tcp_ping_reply(m, now);
                            work.push(i);
                        }
                    }
                    Output::Stream { to, bytes } => {
                        self.streams += 1;
                        if let Some((t, _)) = self.open_stream(i, to, &bytes) {
                            work.push(t);
                        }
                    }
                }
            }
            let ev = self.nodes[i].serf.drain_events();
            match &mut self.watch {
                Some(w) => ev.iter().for_each(|e| w(i, self.now, e)),
                None => self.nodes[i].events.extend(ev),
            }
            self.schedule(i);
        }
        ok
    }

    /// Reads node `i`'s next deadline again (after an input or a tick).
    fn schedule(&mut self, i: usize) {
        if self.poll.is_some() {
            return;
        }
        let at = if self.nodes[i].crashed {
            Duration::MAX
        } else {
            self.nodes[i].serf.next_deadline()
        };
        if at != self.deadlines[i] {
            self.deadlines[i] = at;
            if at != Duration::MAX {
                self.wakes.push(Reverse((at, i)));
            }
        }
    }

    /// The earliest node deadline, with its node (stale entries dropped).
    fn next_wake(&mut self) -> Option<(Duration, usize)> {
        while let Some(&Reverse((at, i))) = self.wakes.peek() {
            if self.deadlines[i] == at {
                return Some((at, i));
            }
            self.wakes.pop();
        }
        None
    }

    /// Sends what node `i` has to send now, as the agent does right after
    /// a call from its RPC (the simulator otherwise sends it at the node's
    /// next tick).
    pub fn send_now(&mut self, i: usize) {
        self.flush(i);
    }

    /// Runs the simulation for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        if let Some(period) = self.poll {
            self.run_polling(d, period);
            return;
        }
        let end = self.now + d;
        // The caller may have called a node (a user event, a leave...),
        // crashed or restarted one since the last run: read every deadline.
        for i in 0..self.nodes.len() {
            self.schedule(i);
        }
        loop {
            let next_pkt = self.queue.peek().map(|Reverse((t, ..))| *t);
            let wake = self.next_wake();
            // A datagram due before the next deadline goes first; a
            // deadline already past is due now.
            let pkt_first = match (next_pkt, wake) {
                (Some(p), Some((w, _))) => p < w,
                (Some(_), None) => true,
                (None, _) => false,
            };
            let next = match (pkt_first, next_pkt, wake) {
                (true, Some(p), _) => p,
                (false, _, Some((w, _))) => w,
                _ => end.saturating_add(Duration::from_nanos(1)),
            };
            if next > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(next);
            let now = self.now;
            if pkt_first {
                self.deliver_next(now);
            } else if let Some((_, i)) = wake {
                self.ticks += 1;
                self.nodes[i].serf.tick(now);
                self.flush(i);
                // A deadline may be "now" again after a tick (an input it
                // caused asks for one more), but not for ever.
                let (at, n) = &mut self.same_instant[i];
                (*at, *n) = if *at == now { (now, *n + 1) } else { (now, 1) };
                assert!(
                    *n < 100,
                    "n{i} is ticked again and again at {now:?} (deadline {:?})",
                    self.deadlines[i]
                );
                if let Some(why) = self.nodes[i].serf.take_conflict_lost() {
                    self.nodes[i].lost_name = Some(why);
                    self.nodes[i].crashed = true;
                    self.schedule(i);
                }
            }
        }
    }

    /// Delivers the earliest queued packet, unless its node has crashed.
    fn deliver_next(&mut self, now: Duration) {
        let Reverse((_, _, t, from, bytes)) = self.queue.pop().expect("peeked");
        if self.nodes[t].crashed {
            return;
        }
        self.delivered += 1;
        self.nodes[t].serf.handle_packet(from, &bytes, now);
        self.flush(t);
    }

    /// [`Sim::run_for`] with every live node ticked every `period`, in
    /// index order, whatever its deadline.
    fn run_polling(&mut self, d: Duration, period: Duration) {
        let end = self.now + d;
        loop {
            let next_pkt = self.queue.peek().map(|Reverse((t, ..))| *t);
            let next = match next_pkt {
                Some(t) if t < self.next_poll => t,
                _ => self.next_poll,
            };
            if next > end {
                self.now = end;
                return;
            }
            self.now = next;
            let now = self.now;
            if next_pkt == Some(next) && next < self.next_poll {
                self.deliver_next(now);
            } else {
                self.next_poll = now + period;
                for i in 0..self.nodes.len() {
                    if self.nodes[i].crashed {
                        continue;
                    }
                    self.ticks += 1;
                    self.nodes[i].serf.tick(now);
                    self.flush(i);
                    if let Some(why) = self.nodes[i].serf.take_conflict_lost() {
                        self.nodes[i].lost_name = Some(why);
                        self.nodes[i].crashed = true;
                    }
                }
            }
        }
    }

    /// Runs until `cond` holds (checked every simulated 100 ms) or `limit`
    /// passes; returns the simulated time it took.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut cond: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        while self.now - start < limit {
            if cond(self) {
                return Some(self.now - start);
            }
            self.run_for(Duration::from_millis(100));
        }
        cond(self).then(|| self.now - start)
    }

    pub fn crash(&mut self, i: usize) {
        self.nodes[i].crashed = true;
    }

    /// Node `i` comes back as a fresh process with the same name, address
    /// and configuration (its clocks and member table start empty, as after
    /// a container restart); it still has to [`Sim::join`].
    pub fn restart(&mut self, i: usize) {
        let mut cfg = self.configs[i].clone();
        cfg.core.seed = cfg.core.seed.wrapping_add(self.now.as_nanos() as u64);
        let node = &mut self.nodes[i];
        let nonces = nonce_source(seed_of(&cfg));
        node.serf = Serf::new(cfg, self.now, nonces);
        node.crashed = false;
        node.events.clear();
    }

    /// Puts node `i` in partition group `g` (all start in group 0).
    pub fn set_group(&mut self, i: usize, g: u32) {
        self.nodes[i].group = g;
    }

    pub fn heal(&mut self) {
        for n in &mut self.nodes {
            n.group = 0;
        }
    }

    /// What node `i` thinks of the member named `name`.
    pub fn status(&self, i: usize, name: &str) -> Option<MemberStatus> {
        self.nodes[i].serf.status_of(name)
    }

    pub fn members(&self, i: usize) -> Vec<Member> {
        self.nodes[i].serf.members()
    }

    /// Every live node sees every live node alive, and every crashed node
    /// as not alive.
    pub fn converged(&self) -> bool {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|i| !self.nodes[*i].crashed)
            .collect();
        live.iter().all(|&i| {
            (0..self.nodes.len()).all(|j| {
                let st = self.status(i, &format!("n{j}"));
                if self.nodes[j].crashed {
                    st != Some(MemberStatus::Alive)
                } else {
                    st == Some(MemberStatus::Alive)
                }
            })
        })
    }

    /// How many (observer, member) pairs say `failed`, among live nodes.
    pub fn count_status(&self, status: MemberStatus) -> usize {
        (0..self.nodes.len())
            .filter(|i| !self.nodes[*i].crashed)
            .map(|i| {
                self.members(i)
                    .iter()
                    .filter(|m| m.status == status)
                    .count()
            })
            .sum()
    }
}
