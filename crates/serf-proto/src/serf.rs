//! The sans-IO Serf layer over [`crate::core`]: Lamport clocks, join and
//! leave intents, member status (alive/leaving/left/failed), user events
//! with their dedup buffer, queries and responses, tags in node meta,
//! reconnect, reap, and Serf's event coalescing.
//!
//! [`Serf`] owns a [`Core`] and plays its [`Delegate`]. Like the core it is
//! driven by the caller (`handle_packet`, `handle_stream`, `tick`, ...) and
//! drained for [`Output`]s and [`Event`]s; it never blocks or reads a clock.
//!
//! Behaviour follows serf 0.9.4 as the `serf agent` command configures it:
//! the three clocks start at 1; a leave intent turns an alive member into
//! `leaving` (memberlist's later dead notice then makes it `left`, a failed
//! member becomes `left` at once); a member that dies without an intent
//! is `failed`; failed members are retried every 30 s and reaped after the
//! reconnect timeout, left ones after the tombstone timeout (24 h each by
//! default); member events are coalesced (3 s period, 1 s quiescence, the
//! agent's settings), user events with `coalesce` keep only the newest per
//! name. Queries honour node and tag filters, the ack flag, the timeout,
//! and are relayed (`relay_factor`) like Serf.
//!
//! Serf's internal keyring queries (`_serf_install-key`, `_serf_use-key`,
//! `_serf_remove-key`, `_serf_list-keys`) are answered like Serf does.
//!
//! `force_leave` with `prune` erases the member everywhere (member-reap).
//! Clocks can be restored from a snapshot (the file itself is the agent's).
//!
//! Name conflicts are resolved as Serf does: when an alive message claims
//! this node's name from another address, a `_serf_conflict` query asks
//! every member which address it knows for the name; unless a majority of
//! the answers vouch for ours, [`Serf::take_conflict_lost`] tells the agent
//! to stop. `_serf_ping` gets the ack every query gets; internal queries
//! are never shown to users.
//!
//! Network coordinates: every ack this node sends carries its Vivaldi
//! coordinate (see [`coordinate`]), every answered direct probe updates it
//! from the round trip and the peer's coordinate, and the last coordinate
//! of each member is kept until the member is reaped.
//!
//! Not implemented: the user-event and query size limits are checked by
//! the agent only for events.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine;

use crate::coordinate;
use crate::core::{self, BroadcastQueue, Core, Delegate, Node, Output};
use crate::model::{Event, IncomingQuery, Member, MemberEventKind, MemberStatus, QueryReply};
use crate::wire::{self, NodeState, SerfMessage};

#[derive(Debug, Clone)]
pub struct Config {
    pub core: core::Config,
    pub tags: Vec<(String, String)>,
    pub reap_interval: Duration,
    pub reconnect_interval: Duration,
    pub reconnect_timeout: Duration,
    pub tombstone_timeout: Duration,
    pub coalesce_period: Duration,
    pub quiescent_period: Duration,
    pub user_coalesce_period: Duration,
    pub user_quiescent_period: Duration,
    pub event_buffer: usize,
    pub query_buffer: usize,
    pub recent_intent_timeout: Duration,
    pub query_timeout_mult: u32,
    /// Most bytes of a user event's name plus payload sent, before and
    /// after encoding (Serf's `UserEventSizeLimit`: 512, at most 9 KiB).
    pub user_event_size_limit: usize,
    /// Most bytes of an encoded query sent (Serf's `QuerySizeLimit`).
    pub query_size_limit: usize,
    /// Most bytes of an encoded query response sent (Serf's
    /// `QueryResponseSizeLimit`).
    pub query_response_size_limit: usize,
    /// When another node claims this node's name, ask the cluster which of
    /// the two it knows (`_serf_conflict`) and give up the name when the
    /// majority vouches for the other one (Serf's default: on).
    pub name_conflict_resolution: bool,
    /// Keep no network coordinates: acks carry no payload, `get-coordinate`
    /// knows none (Serf's `DisableCoordinates`, config key
    /// `disable_coordinates`).
    pub disable_coordinates: bool,
    /// Serf's `MaxQueueDepth` (4096): past this many messages an intent,
    /// event or query broadcast queue drops its most sent, oldest ones.
    pub max_queue_depth: usize,
    /// Serf's `MinQueueDepth` (0, off): when set, the limit is twice the
    /// number of members, at least this, and `max_queue_depth` is ignored.
    pub min_queue_depth: usize,
    /// Serf's `QueueDepthWarning` (128): a queue this deep is reported.
    pub queue_depth_warning: usize,
    /// Serf's `QueueCheckInterval` (30 s): how often queue depths are
    /// reported.
    pub queue_check_interval: Duration,
}

impl Config {
    pub fn new(core: core::Config) -> Config {
        Config {
            core,
            tags: Vec::new(),
            reap_interval: Duration::from_secs(15),
            reconnect_interval: Duration::from_secs(30),
            reconnect_timeout: Duration::from_secs(24 * 3600),
            tombstone_timeout: Duration::from_secs(24 * 3600),
            coalesce_period: Duration::from_secs(3),
            quiescent_period: Duration::from_secs(1),
            user_coalesce_period: Duration::from_secs(3),
            user_quiescent_period: Duration::from_secs(1),
            event_buffer: 512,
            query_buffer: 512,
            recent_intent_timeout: Duration::from_secs(300),
            query_timeout_mult: 16,
            user_event_size_limit: 512,
            query_size_limit: 1024,
            query_response_size_limit: 1024,
            name_conflict_resolution: true,
            disable_coordinates: false,
            max_queue_depth: 4096,
            min_queue_depth: 0,
            queue_depth_warning: 128,
            queue_check_interval: Duration::from_secs(30),
        }
    }
}

/// The most a user event may take, whatever the configured limit
/// (Serf's `UserEventSizeLimit` constant, 9 KiB).
pub const USER_EVENT_SIZE_MAX: usize = 9 * 1024;

/// The most user events (and query ids) kept for one Lamport time. Serf
/// appends to a time's list without limit; a forged flood of distinct
/// events at one time would grow it, and the dedup scan with it, for ever.
/// A node sends one event per time of its event clock, so only events sent
/// at the same moment by different nodes share a time: 64 of those at once
/// is far past what a cluster sends in practice.
pub const MAX_EVENTS_PER_LTIME: usize = 64;

/// The most bytes (names plus payloads) of user events kept for one Lamport
/// time. The whole buffer goes out in every push-pull, and memberlist
/// refuses a remote state over `maxPushStateBytes` (20 MiB): at 32 KiB a
/// time, Serf's default 512-slot buffer holds at most 16 MiB, leaving room
/// for the member list. 32 KiB is also 64 events of Serf's default 512-byte
/// `UserEventSizeLimit`, and more than three of its 9 KiB maximum.
pub const MAX_EVENT_BYTES_PER_LTIME: usize = 32 * 1024;

/// memberlist's `MetaMaxSize`: the most bytes a node's encoded tags take.
pub const META_MAX_SIZE: usize = 512;
/// Intents (join, leave) kept for members not known yet, until their
/// member appears or `recent_intent_timeout` (5 min) passes. Serf keeps
/// them in an unbounded map (`recentIntents`); a peer sending intents for
/// made-up names at a datagram's rate would grow it by ~100,000 a second.
/// An intent waits here only between a join's broadcast and the member's
/// alive message, so the bound is the members that join in that window:
/// the same 4096 as the queues (Serf's `MinQueueDepth`).
pub const MAX_INTENTS: usize = 4096;

/// Serf's check on a node's encoded tags (at start and on every change).
pub fn check_meta_size(meta: &[u8]) -> anyhow::Result<()> {
    anyhow::ensure!(
        meta.len() <= META_MAX_SIZE,
        "Encoded length of tags exceeds limit of {META_MAX_SIZE} bytes"
    );
    Ok(())
}

/// Serf's Lamport clock. Times come from the network and the snapshot, so
/// a peer can send the largest one: the clock then stays there (saturating)
/// where Serf's would wrap to 0; it never overflows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock(u64);

impl Clock {
    pub fn time(&self) -> u64 {
        self.0
    }
    pub fn increment(&mut self) -> u64 {
        self.0 = self.0.saturating_add(1);
        self.0
    }
    pub fn witness(&mut self, v: u64) {
        if v >= self.0 {
            self.0 = v.saturating_add(1);
        }
    }
}

#[derive(Debug, Clone)]
struct SMember {
    member: Member,
    status_ltime: u64,
    leave_time: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntentKind {
    Join,
    Leave,
}

#[derive(Debug, Clone)]
struct Intent {
    ltime: u64,
    kind: IntentKind,
    at: Duration,
}

/// What was last passed on for a member: kind, address, port, tags.
type Passed = (MemberEventKind, IpAddr, u16, Vec<(String, String)>);

/// Member-event coalescing (serf's memberEventCoalescer), with one
/// difference: serf drops an event of the kind it last passed on for that
/// name; here it is dropped only when the address and tags are the same
/// too, so a member that leaves and comes back at another address within
/// one window is still announced (serf would fold leave + join into
/// nothing, and handlers would keep the old address).
#[derive(Debug, Default)]
struct MemberCoalescer {
    latest: BTreeMap<String, (MemberEventKind, Member)>,
    last: HashMap<String, Passed>,
    first_at: Option<Duration>,
    last_at: Duration,
}

impl MemberCoalescer {
    fn push(&mut self, kind: MemberEventKind, m: Member, now: Duration) {
        self.first_at.get_or_insert(now);
        self.last_at = now;
        self.latest.insert(m.name.clone(), (kind, m));
    }
    fn due(&self, now: Duration, period: Duration, quiet: Duration) -> bool {
        match self.first_at {
            None => false,
            Some(f) => now >= f + period || now >= self.last_at + quiet,
        }
    }
    fn flush(&mut self, out: &mut Vec<Event>) {
        self.first_at = None;
        let mut groups: Vec<(MemberEventKind, Vec<Member>)> = Vec::new();
        for (name, (kind, m)) in std::mem::take(&mut self.latest) {
            let seen = (kind, m.addr, m.port, m.tags.clone());
            if self.last.get(&name) == Some(&seen) && kind != MemberEventKind::Update {
                continue;
            }
            self.last.insert(name, seen);
            match groups.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, v)) => v.push(m),
                None => groups.push((kind, vec![m])),
            }
        }
        let order = [
            MemberEventKind::Join,
            MemberEventKind::Update,
            MemberEventKind::Leave,
            MemberEventKind::Failed,
            MemberEventKind::Reap,
        ];
        groups.sort_by_key(|(k, _)| order.iter().position(|o| o == k));
        for (kind, members) in groups {
            out.push(Event::Member { kind, members });
        }
    }
}

/// User-event coalescing (serf's userEventCoalescer): newest ltime per name.
#[derive(Debug, Default)]
struct UserCoalescer {
    events: BTreeMap<String, (u64, Vec<Event>)>,
    first_at: Option<Duration>,
    last_at: Duration,
}

impl UserCoalescer {
    fn push(&mut self, name: &str, ltime: u64, e: Event, now: Duration) {
        self.first_at.get_or_insert(now);
        self.last_at = now;
        let slot = self
            .events
            .entry(name.to_string())
            .or_insert((ltime, Vec::new()));
        if ltime > slot.0 {
            *slot = (ltime, vec![e]);
        } else if ltime == slot.0 {
            slot.1.push(e);
        }
    }
    fn due(&self, now: Duration, period: Duration, quiet: Duration) -> bool {
        match self.first_at {
            None => false,
            Some(f) => now >= f + period || now >= self.last_at + quiet,
        }
    }
    fn flush(&mut self, out: &mut Vec<Event>) {
        self.first_at = None;
        for (_, (_, evs)) in std::mem::take(&mut self.events) {
            out.extend(evs);
        }
    }
}

#[derive(Debug, Clone)]
struct SeenQuery {
    ltime: u64,
    ids: Vec<u32>,
}

/// A query received, kept until it is answered or times out.
#[derive(Debug, Clone)]
struct PendingResponse {
    ltime: u64,
    id: u32,
    to: SocketAddr,
    deadline: Duration,
    relay_factor: u8,
}

/// A query this node sent, collecting answers.
#[derive(Debug, Clone)]
struct OutgoingQuery {
    local_id: u64,
    deadline: Duration,
    acks: HashSet<String>,
    responses: HashSet<String>,
}

/// Our `_serf_conflict` query and its tally: how many answered, and how
/// many of those know our name at our address.
#[derive(Debug, Clone)]
struct ConflictVote {
    local_id: u64,
    other: SocketAddr,
    responses: usize,
    matching: usize,
}

/// An internal (`_serf_*`) query, answered once the core is reachable
/// (the keyring lives there).
#[derive(Debug, Clone)]
struct InternalQuery {
    name: String,
    payload: Vec<u8>,
    to: SocketAddr,
    source_node: String,
    ltime: u64,
    id: u32,
    relay_factor: u8,
}

/// Serf's three broadcast queues, named as Serf names them in its logs.
#[derive(Debug, Clone, Copy)]
enum Queue {
    Intent = 0,
    Event = 1,
    Query = 2,
}

impl Queue {
    fn name(self) -> &'static str {
        match self {
            Queue::Intent => "Intent",
            Queue::Event => "Event",
            Queue::Query => "Query",
        }
    }
}

/// Everything the delegate side needs; kept apart from the core so both
/// can be borrowed at once.
struct State {
    cfg: Config,
    name: String,
    clock: Clock,
    event_clock: Clock,
    query_clock: Clock,
    members: BTreeMap<String, SMember>,
    intents: HashMap<String, Intent>,
    /// Intents for unknown members dropped because [`MAX_INTENTS`] were kept.
    intents_dropped: u64,
    event_buffer: Vec<Option<wire::UserEvents>>,
    event_min_time: u64,
    query_buffer: Vec<Option<SeenQuery>>,
    broadcasts: BroadcastQueue,
    event_broadcasts: BroadcastQueue,
    query_broadcasts: BroadcastQueue,
    /// Messages pruned from each queue since the last check.
    queue_dropped: [u64; 3],
    /// The last Lamport time whose full buffer was warned about.
    full_ltime_warned: Option<u64>,
    n_nodes: usize,
    member_co: MemberCoalescer,
    user_co: UserCoalescer,
    events: Vec<Event>,
    /// best-effort user messages to send once the core is free: (to, serf msg)
    sends: Vec<(SocketAddr, Vec<u8>)>,
    pending: HashMap<u64, PendingResponse>,
    next_local_id: u64,
    outgoing: HashMap<(u64, u32), OutgoingQuery>,
    replies: Vec<(u64, QueryReply)>,
    leaving: bool,
    event_join_ignore: bool,
    internal: Vec<InternalQuery>,
    keys_changed: bool,
    /// Members to erase (force-leave with prune) at the given time.
    prunes: Vec<(String, Duration)>,
    /// Another node claims our name from this address: start a vote.
    conflict_seen: Option<SocketAddr>,
    /// The `_serf_conflict` vote under way.
    conflict_vote: Option<ConflictVote>,
    /// Set when the vote went to the other node: the agent must stop.
    conflict_lost: Option<String>,
    rng: core::Rng,
    self_addr: SocketAddr,
    /// This node's Vivaldi coordinate (none when disabled).
    coord: Option<coordinate::Client>,
    /// The last coordinate each other member sent in an ack.
    coord_cache: HashMap<String, coordinate::Coordinate>,
}

fn member_of(node: &Node, status: MemberStatus) -> Member {
    let tags = wire::decode_tags(&node.meta).unwrap_or_default();
    let v = |i: usize| node.vsn.get(i).copied().unwrap_or(0);
    Member {
        name: node.name.clone(),
        addr: node.addr.ip(),
        port: node.addr.port(),
        tags,
        status,
        protocol: [v(0), v(1), v(2)],
        delegate: [v(3), v(4), v(5)],
    }
}

impl State {
    /// One warning per Lamport time whose event (or query) buffer is full;
    /// the rest of a flood at that time is dropped quietly.
    fn refused_at_ltime(&mut self, what: &str, name: &str, ltime: u64) {
        if self.full_ltime_warned != Some(ltime) {
            self.full_ltime_warned = Some(ltime);
            tracing::warn!(
                "dropping {what} {name:?} at Lamport time {ltime}: already {MAX_EVENTS_PER_LTIME} \
                 (or {MAX_EVENT_BYTES_PER_LTIME} bytes) kept for that time"
            );
        }
    }

    /// Serf's `getQueueMax`: `MaxQueueDepth`, or with `MinQueueDepth` set,
    /// twice the members but at least that.
    fn queue_max(&self) -> usize {
        if self.cfg.min_queue_depth > 0 {
            (2 * self.members.len()).max(self.cfg.min_queue_depth)
        } else {
            self.cfg.max_queue_depth
        }
    }

    fn queue_of(&mut self, q: Queue) -> &mut BroadcastQueue {
        match q {
            Queue::Intent => &mut self.broadcasts,
            Queue::Event => &mut self.event_broadcasts,
            Queue::Query => &mut self.query_broadcasts,
        }
    }

    /// Queues a broadcast; past the queue limit the most sent, oldest
    /// messages go at once (Serf prunes every 30 s, and a flood can queue a
    /// lot in 30 s). Warned once per check interval, as Serf warns.
    fn enqueue(&mut self, q: Queue, msg: Vec<u8>) {
        let max = self.queue_max();
        let queue = self.queue_of(q);
        queue.queue(None, msg);
        let dropped = queue.prune(max);
        if dropped > 0 {
            let depth = max + dropped;
            let i = q as usize;
            if self.queue_dropped[i] == 0 {
                tracing::warn!(
                    "{} queue depth ({depth}) exceeds limit ({max}), dropping messages!",
                    q.name()
                );
            }
            self.queue_dropped[i] += dropped as u64;
        }
    }

    /// Serf's periodic queue check: a warning for a deep queue, and how
    /// many messages were dropped since the last check.
    fn check_queues(&mut self) {
        let warn_at = self.cfg.queue_depth_warning;
        let max = self.queue_max();
        for q in [Queue::Intent, Queue::Event, Queue::Query] {
            let depth = self.queue_of(q).len();
            if depth >= warn_at {
                tracing::warn!("{} queue depth: {depth}", q.name());
            }
            let dropped = std::mem::take(&mut self.queue_dropped[q as usize]);
            if dropped > 0 {
                tracing::warn!(
                    "{} queue: {dropped} messages dropped past the limit ({max}) since the last check",
                    q.name()
                );
            }
        }
    }

    /// Forgets a member for good (reap, prune), with its coordinate.
    fn erase(&mut self, name: &str) -> Option<SMember> {
        if let Some(c) = &mut self.coord {
            c.forget(name);
            self.coord_cache.remove(name);
        }
        self.members.remove(name)
    }

    fn emit_member(&mut self, kind: MemberEventKind, m: Member, now: Duration) {
        tracing::info!(event = kind.as_str(), node = %m.name, addr = %m.addr, "serf member event");
        self.member_co.push(kind, m, now);
    }

    fn retransmit_limit(&self) -> u32 {
        core::retransmit_limit(self.cfg.core.retransmit_mult, self.n_nodes.max(1))
    }

    fn handle_leave_intent(&mut self, ltime: u64, node: &str, prune: bool, now: Duration) -> bool {
        self.clock.witness(ltime);
        let Some(m) = self.members.get_mut(node) else {
            return self.store_intent(node, ltime, IntentKind::Leave, now);
        };
        if ltime <= m.status_ltime {
            return false;
        }
        if node == self.name && !self.leaving {
            // Someone says we are leaving and we are not: refute with a
            // newer join intent.
            let t = self.clock.increment();
            let msg = SerfMessage::Join(wire::Join {
                ltime: t,
                node: self.name.clone(),
            });
            if let Some(me) = self.members.get_mut(&self.name) {
                me.status_ltime = t;
            }
            self.enqueue(Queue::Intent, msg.encode());
            return false;
        }
        match m.member.status {
            MemberStatus::Alive => {
                m.member.status = MemberStatus::Leaving;
                m.status_ltime = ltime;
                if prune {
                    // serf waits for the leave to spread before erasing.
                    self.prunes
                        .push((node.to_string(), now + Duration::from_secs(6)));
                }
                true
            }
            MemberStatus::Failed => {
                m.member.status = MemberStatus::Left;
                m.status_ltime = ltime;
                m.leave_time = now;
                let mm = m.member.clone();
                self.emit_member(MemberEventKind::Leave, mm, now);
                if prune {
                    self.prunes.push((node.to_string(), now));
                }
                true
            }
            _ => false,
        }
    }

    fn handle_join_intent(&mut self, ltime: u64, node: &str, now: Duration) -> bool {
        self.clock.witness(ltime);
        let Some(m) = self.members.get_mut(node) else {
            return self.store_intent(node, ltime, IntentKind::Join, now);
        };
        if ltime <= m.status_ltime {
            return false;
        }
        m.status_ltime = ltime;
        if m.member.status == MemberStatus::Leaving {
            m.member.status = MemberStatus::Alive;
        }
        true
    }

    fn store_intent(&mut self, node: &str, ltime: u64, kind: IntentKind, now: Duration) -> bool {
        match self.intents.get(node) {
            Some(i) if i.ltime >= ltime => false,
            // Full: a flood of made-up names. The new one is dropped (not
            // rebroadcast) rather than an older one evicted: finding the
            // oldest is a scan, and legitimate intents wait here only until
            // their member's alive message, a gossip round or two.
            None if self.intents.len() >= MAX_INTENTS => {
                self.intents_dropped = self.intents_dropped.saturating_add(1);
                false
            }
            _ => {
                self.intents.insert(
                    node.to_string(),
                    Intent {
                        ltime,
                        kind,
                        at: now,
                    },
                );
                true
            }
        }
    }

    fn handle_user_event(
        &mut self,
        ltime: u64,
        name: String,
        payload: Vec<u8>,
        cc: bool,
        now: Duration,
    ) -> bool {
        self.event_clock.witness(ltime);
        if ltime < self.event_min_time {
            return false;
        }
        let cur = self.event_clock.time();
        let size = self.event_buffer.len() as u64;
        if cur > size && ltime < cur - size {
            return false;
        }
        let idx = (ltime % size) as usize;
        let bytes = name.len() + payload.len();
        match &mut self.event_buffer[idx] {
            Some(seen) if seen.ltime == ltime => {
                if seen
                    .events
                    .iter()
                    .any(|e| e.name == name && e.payload == payload)
                {
                    return false;
                }
                let kept: usize = seen
                    .events
                    .iter()
                    .map(|e| e.name.len() + e.payload.len())
                    .sum();
                if seen.events.len() >= MAX_EVENTS_PER_LTIME
                    || kept + bytes > MAX_EVENT_BYTES_PER_LTIME
                {
                    self.refused_at_ltime("user event", &name, ltime);
                    return false;
                }
                seen.events.push(wire::UserEventRec {
                    name: name.clone(),
                    payload: payload.clone(),
                });
            }
            _ if bytes > MAX_EVENT_BYTES_PER_LTIME => {
                self.refused_at_ltime("user event", &name, ltime);
                return false;
            }
            slot => {
                *slot = Some(wire::UserEvents {
                    ltime,
                    events: vec![wire::UserEventRec {
                        name: name.clone(),
                        payload: payload.clone(),
                    }],
                })
            }
        }
        tracing::info!(event = %name, ltime, "serf user event");
        let e = Event::User {
            ltime,
            name: name.clone(),
            payload,
            coalesce: cc,
        };
        if cc {
            self.user_co.push(&name, ltime, e, now);
        } else {
            self.events.push(e);
        }
        true
    }

    fn should_process(&self, filters: &[Vec<u8>]) -> bool {
        for f in filters {
            let Some((&t, body)) = f.split_first() else {
                return false;
            };
            let Ok((v, _)) = wire::read_value(body) else {
                return false;
            };
            match t {
                0 => {
                    let names: Vec<String> = match &v {
                        rmpv::Value::Array(a) => a
                            .iter()
                            .filter_map(|x| {
                                wire::value_bytes(x).and_then(|b| String::from_utf8(b).ok())
                            })
                            .collect(),
                        _ => return false,
                    };
                    if !names.contains(&self.name) {
                        return false;
                    }
                }
                1 => {
                    let Ok(fields) = wire::Fields::of(&v) else {
                        return false;
                    };
                    let (Ok(tag), Ok(expr)) = (fields.string("Tag"), fields.string("Expr")) else {
                        return false;
                    };
                    let Ok(re) = regex::Regex::new(&expr) else {
                        return false;
                    };
                    let val = self
                        .cfg
                        .tags
                        .iter()
                        .find(|(k, _)| *k == tag)
                        .map(|(_, v)| v.as_str());
                    if !re.is_match(val.unwrap_or("")) {
                        return false;
                    }
                }
                _ => return false,
            }
        }
        true
    }

    fn handle_query(&mut self, q: wire::Query, raw: &[u8], now: Duration) -> bool {
        self.query_clock.witness(q.ltime);
        let cur = self.query_clock.time();
        let size = self.query_buffer.len() as u64;
        if cur > size && q.ltime < cur - size {
            return false;
        }
        let idx = (q.ltime % size) as usize;
        match &mut self.query_buffer[idx] {
            Some(seen) if seen.ltime == q.ltime => {
                if seen.ids.contains(&q.id) {
                    return false;
                }
                if seen.ids.len() >= MAX_EVENTS_PER_LTIME {
                    self.refused_at_ltime("query", &q.name, q.ltime);
                    return false;
                }
                seen.ids.push(q.id);
            }
            slot => {
                *slot = Some(SeenQuery {
                    ltime: q.ltime,
                    ids: vec![q.id],
                })
            }
        }
        let _ = raw;
        let rebroadcast = q.flags & wire::QUERY_FLAG_NO_BROADCAST == 0;
        if !self.should_process(&q.filters) {
            return rebroadcast;
        }
        let Some(to) = wire::bytes_addr(&q.addr).map(|ip| SocketAddr::new(ip, q.port)) else {
            return rebroadcast;
        };
        if q.flags & wire::QUERY_FLAG_ACK != 0 {
            let ack = SerfMessage::QueryResponse(wire::QueryResponse {
                ltime: q.ltime,
                id: q.id,
                from: self.name.clone(),
                flags: wire::QUERY_FLAG_ACK,
                payload: Vec::new(),
            })
            .encode();
            self.send_with_relay(to, &q.source_node, ack, q.relay_factor);
        }
        if q.name.starts_with("_serf_") {
            self.internal.push(InternalQuery {
                name: q.name,
                payload: q.payload,
                to,
                source_node: q.source_node,
                ltime: q.ltime,
                id: q.id,
                relay_factor: q.relay_factor,
            });
            return rebroadcast;
        }
        let local = self.next_local_id;
        self.next_local_id += 1;
        let timeout = Duration::from_nanos(q.timeout.max(0) as u64);
        self.pending.insert(
            local,
            PendingResponse {
                ltime: q.ltime,
                id: q.id,
                to,
                deadline: now + timeout,
                relay_factor: q.relay_factor,
            },
        );
        self.events.push(Event::Query(IncomingQuery {
            id: local,
            ltime: q.ltime,
            name: q.name,
            payload: q.payload,
        }));
        rebroadcast
    }

    /// Sends a response directly and through `relay` random members.
    fn send_with_relay(&mut self, to: SocketAddr, dest_name: &str, msg: Vec<u8>, relay: u8) {
        self.sends.push((to, msg.clone()));
        if relay == 0 {
            return;
        }
        let mut peers: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|m| m.member.status == MemberStatus::Alive && m.member.name != self.name)
            .map(|m| SocketAddr::new(m.member.addr, m.member.port))
            .filter(|a| *a != to)
            .collect();
        self.rng.shuffle(&mut peers);
        peers.truncate(relay as usize);
        for p in peers {
            let relayed = SerfMessage::Relay(wire::Relay {
                dest_addr: wire::addr_bytes(to.ip()),
                dest_port: to.port(),
                dest_name: dest_name.to_string(),
                inner: msg.clone(),
            });
            self.sends.push((p, relayed.encode()));
        }
    }

    /// Serf's rule: keep the name when a majority of the answers vouch
    /// for our address, give it up otherwise (no answer at all loses too).
    fn count_conflict_vote(&mut self, vote: ConflictVote) {
        let majority = vote.responses / 2 + 1;
        if vote.matching >= majority {
            tracing::info!(
                "majority in name conflict resolution [{} / {}]",
                vote.matching,
                vote.responses
            );
        } else {
            let why = format!(
                "node name '{}' is also claimed by {}, and the cluster sides with it \
                 ({} of {} members know this name at {}); names must be unique",
                self.name, vote.other, vote.matching, vote.responses, self.self_addr
            );
            tracing::warn!("minority in name conflict resolution: {why}");
            self.conflict_lost = Some(why);
        }
    }

    fn handle_query_response(&mut self, r: wire::QueryResponse) {
        let Some(q) = self.outgoing.get_mut(&(r.ltime, r.id)) else {
            return;
        };
        let local = q.local_id;
        if let Some(vote) = self.conflict_vote.as_mut().filter(|v| v.local_id == local) {
            if r.flags & wire::QUERY_FLAG_ACK == 0 && q.responses.insert(r.from.clone()) {
                match wire::decode_conflict_response(&r.payload) {
                    Ok(vouched) => {
                        vote.responses += 1;
                        if vouched == Some((self.self_addr.ip(), self.self_addr.port())) {
                            vote.matching += 1;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(from = %r.from, error = %e, "invalid conflict query response")
                    }
                }
            }
            return;
        }
        if r.flags & wire::QUERY_FLAG_ACK != 0 {
            if q.acks.insert(r.from.clone()) {
                self.replies.push((local, QueryReply::Ack { from: r.from }));
            }
        } else if q.responses.insert(r.from.clone()) {
            self.replies.push((
                local,
                QueryReply::Response {
                    from: r.from,
                    payload: r.payload,
                },
            ));
        }
    }
}

impl Delegate for State {
    fn ack_payload(&mut self) -> Vec<u8> {
        self.coord
            .as_ref()
            .map(|c| c.coordinate().encode_payload())
            .unwrap_or_default()
    }

    fn notify_ping_complete(&mut self, node: &Node, rtt: Duration, payload: &[u8]) {
        let Some(client) = &mut self.coord else {
            return;
        };
        let other = match coordinate::Coordinate::decode_payload(payload) {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(node = %node.name, error = %e, "cannot read the coordinate in an ack");
                return;
            }
        };
        match client.update(&node.name, &other, rtt) {
            Ok(_) => {
                self.coord_cache.insert(node.name.clone(), other);
            }
            Err(e) => tracing::trace!(node = %node.name, error = %e, "coordinate rejected"),
        }
    }

    fn notify_conflict(&mut self, existing: &Node, other: SocketAddr, _now: Duration) {
        if existing.name != self.name {
            tracing::warn!(node = %existing.name, mine = %existing.addr, theirs = %other,
                "name conflict: two nodes claim this name");
            return;
        }
        tracing::error!(node = %self.name, theirs = %other,
            "this node's name is claimed by another node; names must be unique (resolution: {})",
            self.cfg.name_conflict_resolution);
        if self.cfg.name_conflict_resolution && self.conflict_vote.is_none() {
            self.conflict_seen = Some(other);
        }
    }

    fn notify_msg(&mut self, msg: &[u8], now: Duration) {
        let m = match SerfMessage::decode(msg) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "dropped serf message");
                return;
            }
        };
        let lim = self.retransmit_limit();
        let _ = lim;
        match m {
            SerfMessage::Leave(wire::Leave { ltime, node, prune }) => {
                if self.handle_leave_intent(ltime, &node, prune, now) {
                    self.enqueue(Queue::Intent, msg.to_vec());
                }
            }
            SerfMessage::Join(wire::Join { ltime, node }) => {
                if self.handle_join_intent(ltime, &node, now) {
                    self.enqueue(Queue::Intent, msg.to_vec());
                }
            }
            SerfMessage::UserEvent(wire::UserEvent {
                ltime,
                name,
                payload,
                cc,
            }) => {
                if self.handle_user_event(ltime, name, payload, cc, now) {
                    self.enqueue(Queue::Event, msg.to_vec());
                }
            }
            SerfMessage::Query(q) => {
                if self.handle_query(q, msg, now) {
                    self.enqueue(Queue::Query, msg.to_vec());
                }
            }
            SerfMessage::QueryResponse(r) => self.handle_query_response(r),
            SerfMessage::Relay(wire::Relay {
                dest_addr,
                dest_port,
                inner,
                ..
            }) => {
                if let Some(ip) = wire::bytes_addr(&dest_addr) {
                    self.sends.push((SocketAddr::new(ip, dest_port), inner));
                }
            }
            SerfMessage::PushPull(_) | SerfMessage::Other(_) => {}
        }
    }

    fn get_broadcasts(&mut self, overhead: usize, limit: usize) -> Vec<Vec<u8>> {
        let lim = self.retransmit_limit();
        let mut out = self.broadcasts.get(overhead, limit, lim);
        let mut used: usize = out.iter().map(|m| m.len() + overhead).sum();
        let q = self
            .query_broadcasts
            .get(overhead, limit.saturating_sub(used), lim);
        used += q.iter().map(|m| m.len() + overhead).sum::<usize>();
        out.extend(q);
        out.extend(
            self.event_broadcasts
                .get(overhead, limit.saturating_sub(used), lim),
        );
        out
    }

    fn local_state(&mut self, _join: bool) -> Vec<u8> {
        let pp = wire::SerfPushPull {
            ltime: self.clock.time(),
            status_ltimes: self
                .members
                .iter()
                .map(|(n, m)| (n.clone(), m.status_ltime))
                .collect(),
            left_members: self
                .members
                .values()
                .filter(|m| m.member.status == MemberStatus::Left)
                .map(|m| m.member.name.clone())
                .collect(),
            event_ltime: self.event_clock.time(),
            events: self.event_buffer.iter().flatten().cloned().collect(),
            query_ltime: self.query_clock.time(),
        };
        SerfMessage::PushPull(pp).encode()
    }

    fn merge_remote_state(&mut self, buf: &[u8], join: bool, now: Duration) {
        let Ok(SerfMessage::PushPull(pp)) = SerfMessage::decode(buf) else {
            tracing::debug!("bad serf remote state");
            return;
        };
        if pp.ltime > 0 {
            self.clock.witness(pp.ltime - 1);
        }
        if pp.event_ltime > 0 {
            self.event_clock.witness(pp.event_ltime - 1);
        }
        if pp.query_ltime > 0 {
            self.query_clock.witness(pp.query_ltime - 1);
        }
        let status: HashMap<&str, u64> = pp
            .status_ltimes
            .iter()
            .map(|(n, t)| (n.as_str(), *t))
            .collect();
        for name in &pp.left_members {
            let lt = status
                .get(name.as_str())
                .copied()
                .unwrap_or(0)
                .saturating_add(1);
            self.handle_leave_intent(lt, name, false, now);
        }
        for (name, lt) in &pp.status_ltimes {
            if pp.left_members.contains(name) {
                continue;
            }
            self.handle_join_intent(*lt, name, now);
        }
        // The agent ignores old events when joining (serf agent default,
        // unless -replay): events before the remote's clock are history.
        if join && self.event_join_ignore && pp.event_ltime > self.event_min_time {
            self.event_min_time = pp.event_ltime;
        }
        for ue in pp.events {
            for e in ue.events {
                self.handle_user_event(ue.ltime, e.name, e.payload, false, now);
            }
        }
    }

    fn notify_join(&mut self, node: &Node, now: Duration) {
        let mut status = MemberStatus::Alive;
        let mut ltime = 0;
        if let Some(i) = self.intents.remove(&node.name) {
            ltime = i.ltime;
            if i.kind == IntentKind::Leave {
                status = MemberStatus::Leaving;
            }
        }
        let member = member_of(node, status);
        match self.members.get_mut(&node.name) {
            Some(m) => {
                m.member = member_of(node, MemberStatus::Alive);
                m.status_ltime = m.status_ltime.max(ltime);
            }
            None => {
                self.members.insert(
                    node.name.clone(),
                    SMember {
                        member: member.clone(),
                        status_ltime: ltime,
                        leave_time: Duration::ZERO,
                    },
                );
            }
        }
        let m = self.members[&node.name].member.clone();
        self.emit_member(MemberEventKind::Join, m, now);
    }

    fn notify_leave(&mut self, node: &Node, now: Duration) {
        let Some(m) = self.members.get_mut(&node.name) else {
            return;
        };
        let kind = match m.member.status {
            MemberStatus::Leaving => MemberStatus::Left,
            MemberStatus::Alive if node.state == NodeState::Left => MemberStatus::Left,
            MemberStatus::Alive => MemberStatus::Failed,
            _ => return,
        };
        m.member.status = kind;
        m.leave_time = now;
        let mm = m.member.clone();
        let ev = if kind == MemberStatus::Left {
            MemberEventKind::Leave
        } else {
            MemberEventKind::Failed
        };
        self.emit_member(ev, mm, now);
    }

    fn notify_update(&mut self, node: &Node, now: Duration) {
        let Some(m) = self.members.get_mut(&node.name) else {
            return;
        };
        let status = m.member.status;
        m.member = member_of(node, status);
        let mm = m.member.clone();
        self.emit_member(MemberEventKind::Update, mm, now);
    }
}

/// The Serf agent's protocol engine: memberlist core + Serf state.
pub struct Serf {
    core: Core,
    st: State,
    next_queue_check: Duration,
    next_reap: Duration,
    next_reconnect: Duration,
}

impl Serf {
    pub fn new(mut cfg: Config, now: Duration) -> Serf {
        cfg.core.meta = wire::encode_tags(&cfg.tags);
        let core_cfg = cfg.core.clone();
        let mut core = Core::new(core_cfg, now);
        let mut clock = Clock::default();
        let mut event_clock = Clock::default();
        let mut query_clock = Clock::default();
        clock.increment();
        event_clock.increment();
        query_clock.increment();
        let name = cfg.core.name.clone();
        let self_addr = cfg.core.addr;
        let mut st = State {
            name: name.clone(),
            clock,
            event_clock,
            query_clock,
            members: BTreeMap::new(),
            intents: HashMap::new(),
            intents_dropped: 0,
            event_buffer: vec![None; cfg.event_buffer.max(1)],
            event_min_time: 0,
            query_buffer: vec![None; cfg.query_buffer.max(1)],
            broadcasts: BroadcastQueue::default(),
            event_broadcasts: BroadcastQueue::default(),
            query_broadcasts: BroadcastQueue::default(),
            queue_dropped: [0; 3],
            full_ltime_warned: None,
            n_nodes: 1,
            member_co: MemberCoalescer::default(),
            user_co: UserCoalescer::default(),
            events: Vec::new(),
            sends: Vec::new(),
            pending: HashMap::new(),
            next_local_id: 1,
            outgoing: HashMap::new(),
            replies: Vec::new(),
            leaving: false,
            event_join_ignore: false,
            internal: Vec::new(),
            keys_changed: false,
            prunes: Vec::new(),
            conflict_seen: None,
            conflict_vote: None,
            conflict_lost: None,
            rng: core::Rng::new(cfg.core.seed ^ 0x5eed),
            self_addr,
            coord: (!cfg.disable_coordinates)
                .then(|| coordinate::Client::new(cfg.core.seed ^ 0xc00d)),
            coord_cache: HashMap::new(),
            cfg,
        };
        // memberlist announces the local node to its delegate at start.
        let me = core.local_node().clone();
        st.notify_join(&me, now);
        let _ = &mut core;
        let reap = st.cfg.reap_interval;
        let check = st.cfg.queue_check_interval;
        let reconnect = st.cfg.reconnect_interval;
        Serf {
            core,
            st,
            next_queue_check: now + check,
            next_reap: now + reap,
            next_reconnect: now + reconnect,
        }
    }

    pub fn name(&self) -> &str {
        &self.st.name
    }
    pub fn core(&self) -> &Core {
        &self.core
    }

    fn after_core(&mut self) {
        self.st.n_nodes = self.core.node_count();
        for q in std::mem::take(&mut self.st.internal) {
            self.answer_internal(q);
        }
        for (to, msg) in std::mem::take(&mut self.st.sends) {
            self.core.send_user(to, &msg);
        }
    }

    /// Serf's internal queries: `conflict` (what we know of a disputed
    /// name) and the keyring ones (`install-key`, `use-key`, `remove-key`,
    /// `list-keys`); `ping` needs only the ack sent on receipt.
    fn answer_internal(&mut self, q: InternalQuery) {
        let op = q.name.trim_start_matches("_serf_");
        if op == "conflict" {
            self.answer_conflict(q);
            return;
        }
        if !matches!(op, "install-key" | "use-key" | "remove-key" | "list-keys") {
            return;
        }
        let mut keys = self.core.keys().to_vec();
        let (result, message) = if keys.is_empty() {
            (
                false,
                "No keyring to modify (encryption not enabled)".to_string(),
            )
        } else if op == "list-keys" {
            (true, String::new())
        } else {
            match decode_key_request(&q.payload) {
                None => (false, "malformed key request".to_string()),
                Some(key) => match op {
                    "install-key" => {
                        if !matches!(key.len(), 16 | 24 | 32) {
                            (
                                false,
                                format!("key size must be 16, 24 or 32 bytes, got {}", key.len()),
                            )
                        } else {
                            if !keys.contains(&key) {
                                keys.push(key);
                            }
                            (true, String::new())
                        }
                    }
                    "use-key" => match keys.iter().position(|k| *k == key) {
                        Some(i) => {
                            let k = keys.remove(i);
                            keys.insert(0, k);
                            (true, String::new())
                        }
                        None => (false, "Requested key is not in the keyring".to_string()),
                    },
                    _ => {
                        if keys.first() == Some(&key) {
                            (false, "Removing the primary key is not allowed".to_string())
                        } else {
                            keys.retain(|k| *k != key);
                            (true, String::new())
                        }
                    }
                },
            }
        };
        if result && op != "list-keys" && keys != self.core.keys() {
            self.core.set_keys(keys.clone());
            self.st.keys_changed = true;
        }
        let b64 = |k: &Vec<u8>| base64::engine::general_purpose::STANDARD.encode(k);
        let list: Vec<String> = if op == "list-keys" {
            keys.iter().map(b64).collect()
        } else {
            Vec::new()
        };
        let primary = if op == "list-keys" {
            keys.first().map(b64).unwrap_or_default()
        } else {
            String::new()
        };
        let payload = encode_key_response(result, &message, &list, &primary);
        self.send_internal_answer(&q, payload);
    }

    /// Sends this node's response to an internal query (relayed as asked).
    fn send_internal_answer(&mut self, q: &InternalQuery, payload: Vec<u8>) {
        let msg = SerfMessage::QueryResponse(wire::QueryResponse {
            ltime: q.ltime,
            id: q.id,
            from: self.st.name.clone(),
            flags: 0,
            payload,
        })
        .encode();
        self.st
            .send_with_relay(q.to, &q.source_node, msg, q.relay_factor);
        for (to, m) in std::mem::take(&mut self.st.sends) {
            self.core.send_user(to, &m);
        }
    }

    /// Another node asks which address we know for a name it holds; a node
    /// never answers about its own name (the vote is about it).
    fn answer_conflict(&mut self, q: InternalQuery) {
        let Ok(node) = std::str::from_utf8(&q.payload) else {
            return;
        };
        if node == self.st.name {
            return;
        }
        tracing::debug!(node, "conflict resolution query");
        let member = self.st.members.get(node).map(|m| &m.member);
        let payload = wire::encode_conflict_response(member);
        self.send_internal_answer(&q, payload);
    }

    /// Why this node must stop, once: another node won the vote for its
    /// name (Serf shuts down in that case).
    pub fn take_conflict_lost(&mut self) -> Option<String> {
        self.st.conflict_lost.take()
    }

    /// True once after a keyring query changed our keys (persist them).
    pub fn take_keys_changed(&mut self) -> bool {
        std::mem::take(&mut self.st.keys_changed)
    }

    pub fn handle_packet(&mut self, from: SocketAddr, bytes: &[u8], now: Duration) {
        self.core.handle_packet(from, bytes, now, &mut self.st);
        self.after_core();
    }

    /// A datagram the caller already decoded with [`wire::decode_packet`]
    /// (with [`Serf::keys`]), outside its lock.
    pub fn handle_decoded_packet(
        &mut self,
        from: SocketAddr,
        decoded: wire::Result<(Vec<wire::Message>, usize)>,
        now: Duration,
    ) {
        self.core
            .handle_decoded_packet(from, decoded, now, &mut self.st);
        self.after_core();
    }

    /// A message read from an incoming TCP stream; returns the bytes to
    /// write back, if any.
    pub fn handle_stream(
        &mut self,
        from: SocketAddr,
        m: wire::Message,
        now: Duration,
    ) -> Option<Vec<u8>> {
        let r = self.core.handle_stream(from, m, now, &mut self.st);
        self.after_core();
        r
    }

    /// The answer to a TCP fallback ping this node sent.
    pub fn handle_tcp_ping_reply(&mut self, m: wire::Message, now: Duration) {
        self.core.handle_tcp_ping_reply(m, now, &mut self.st);
        self.after_core();
    }

    /// The reply to a push-pull this node started.
    pub fn handle_push_pull_reply(&mut self, m: wire::Message, now: Duration) -> bool {
        let ok = self.core.handle_push_pull_reply(m, now, &mut self.st);
        self.after_core();
        ok
    }

    /// Starts a join through each address (push-pull with Join set). Call
    /// [`Serf::joined`] once at least one of them answered.
    /// Without `replay`, user events older than the cluster's event clock
    /// at join are not delivered (serf agent's default).
    pub fn join(&mut self, addrs: &[SocketAddr], replay: bool) {
        self.st.event_join_ignore = !replay;
        for a in addrs {
            self.core.join(*a, &mut self.st);
        }
    }

    /// After a successful join: broadcast our join intent (serf's Join).
    pub fn joined(&mut self) {
        let t = self.st.clock.time();
        let name = self.st.name.clone();
        self.st.handle_join_intent(t, &name, Duration::ZERO);
        let msg = SerfMessage::Join(wire::Join {
            ltime: t,
            node: name,
        });
        self.st.enqueue(Queue::Intent, msg.encode());
        self.st.event_join_ignore = false;
    }

    /// Step one of a graceful leave: the leave intent. True when every live
    /// peer was sent it directly (not only queued for gossip).
    pub fn leave_intent(&mut self, now: Duration) -> bool {
        self.st.leaving = true;
        let t = self.st.clock.increment();
        let name = self.st.name.clone();
        if let Some(m) = self.st.members.get_mut(&name) {
            m.member.status = MemberStatus::Leaving;
            m.status_ltime = t;
        }
        let msg = SerfMessage::Leave(wire::Leave {
            ltime: t,
            node: name,
            prune: false,
        })
        .encode();
        // Told directly too: peers see us leaving in one hop.
        let told_all = self.core.announce_user(&msg);
        self.st.enqueue(Queue::Intent, msg);
        let _ = now;
        told_all
    }

    /// Step two: memberlist's leave (dead about self, From = self).
    pub fn leave_memberlist(&mut self, now: Duration) {
        self.core.leave(now, &mut self.st);
        let name = self.st.name.clone();
        if let Some(m) = self.st.members.get_mut(&name) {
            m.member.status = MemberStatus::Left;
        }
        self.after_core();
    }

    /// Messages still waiting to be gossiped at least once.
    pub fn pending_broadcasts(&self) -> usize {
        self.core.pending_broadcasts() + self.st.broadcasts.len()
    }

    /// Messages in the intent, event and query queues (Serf's
    /// `intent_queue`, `event_queue`, `query_queue` stats).
    pub fn queue_depths(&self) -> (usize, usize, usize) {
        (
            self.st.broadcasts.len(),
            self.st.event_broadcasts.len(),
            self.st.query_broadcasts.len(),
        )
    }

    /// Intents for unknown members kept, and dropped over [`MAX_INTENTS`].
    pub fn intents(&self) -> (usize, u64) {
        (self.st.intents.len(), self.st.intents_dropped)
    }

    /// Number of alive members other than self.
    pub fn alive_peers(&self) -> usize {
        self.st
            .members
            .values()
            .filter(|m| m.member.name != self.st.name && m.member.status == MemberStatus::Alive)
            .count()
    }

    /// Sends a user event; refused, as by Serf, when its name and payload
    /// exceed the configured limit before or after encoding.
    pub fn user_event(
        &mut self,
        name: &str,
        payload: Vec<u8>,
        coalesce: bool,
        now: Duration,
    ) -> anyhow::Result<()> {
        let limit = self.st.cfg.user_event_size_limit;
        let size = name.len() + payload.len();
        anyhow::ensure!(
            size <= limit,
            "user event exceeds configured limit of {limit} bytes before encoding"
        );
        anyhow::ensure!(
            size <= USER_EVENT_SIZE_MAX,
            "user event exceeds sane limit of {USER_EVENT_SIZE_MAX} bytes before encoding"
        );
        let t = self.st.event_clock.time();
        let raw = SerfMessage::UserEvent(wire::UserEvent {
            ltime: t,
            name: name.to_string(),
            payload: payload.clone(),
            cc: coalesce,
        })
        .encode();
        anyhow::ensure!(
            raw.len() <= limit,
            "encoded user event exceeds configured limit of {limit} bytes after encoding"
        );
        anyhow::ensure!(
            raw.len() <= USER_EVENT_SIZE_MAX,
            "encoded user event exceeds reasonable limit of {USER_EVENT_SIZE_MAX} bytes after encoding"
        );
        self.st.event_clock.increment();
        self.st
            .handle_user_event(t, name.to_string(), payload, coalesce, now);
        self.st.enqueue(Queue::Event, raw);
        Ok(())
    }

    /// Refused, tags unchanged, when they would not fit memberlist's meta.
    pub fn set_tags(&mut self, tags: Vec<(String, String)>, now: Duration) -> anyhow::Result<()> {
        let meta = wire::encode_tags(&tags);
        check_meta_size(&meta)?;
        self.st.cfg.tags = tags;
        self.core.set_meta(meta);
        let me = self.core.local_node().clone();
        self.st.notify_update(&me, now);
        Ok(())
    }

    pub fn tags(&self) -> &[(String, String)] {
        &self.st.cfg.tags
    }

    /// Removes a failed member (serf force-leave): a leave intent for it.
    /// With `prune`, the member is erased at once (member-reap), everywhere.
    pub fn force_leave(&mut self, node: &str, prune: bool, now: Duration) -> bool {
        let Some(m) = self.st.members.get(node) else {
            return false;
        };
        let t = self
            .st
            .clock
            .increment()
            .max(m.status_ltime.saturating_add(1));
        let msg = SerfMessage::Leave(wire::Leave {
            ltime: t,
            node: node.to_string(),
            prune,
        });
        if self.st.handle_leave_intent(t, node, prune, now) {
            self.st.enqueue(Queue::Intent, msg.encode());
        }
        true
    }

    /// Sends a query; answers come out of [`Serf::drain_query_replies`]
    /// with the returned local id, then `Done` at the deadline.
    /// Refused, as by Serf, when the encoded query exceeds the configured
    /// limit.
    pub fn query(&mut self, p: &crate::model::QueryParams, now: Duration) -> anyhow::Result<u64> {
        let ltime = self.st.query_clock.time();
        let id = self.st.rng.next_u64() as u32;
        let mut filters = Vec::new();
        if !p.filter_nodes.is_empty() {
            let mut f = vec![0u8];
            rmp::encode::write_array_len(&mut f, p.filter_nodes.len() as u32).expect("vec write");
            for n in &p.filter_nodes {
                rmp::encode::write_str(&mut f, n).expect("vec write");
            }
            filters.push(f);
        }
        for (tag, expr) in &p.filter_tags {
            let f = wire::MapEnc::new(vec![1u8], 2)
                .str("Expr", expr)
                .str("Tag", tag)
                .finish();
            filters.push(f);
        }
        let timeout = if p.timeout.is_zero() {
            let n = self.st.members.len().max(1);
            let scale = ((n + 1) as f64).log10().ceil().max(1.0) as u32;
            self.st.cfg.core.gossip_interval * self.st.cfg.query_timeout_mult * scale
        } else {
            p.timeout
        };
        let q = wire::Query {
            ltime,
            id,
            addr: wire::addr_bytes(self.st.self_addr.ip()),
            port: self.st.self_addr.port(),
            source_node: self.st.name.clone(),
            filters,
            flags: if p.request_ack {
                wire::QUERY_FLAG_ACK
            } else {
                0
            },
            relay_factor: p.relay_factor,
            timeout: timeout.as_nanos() as i64,
            name: p.name.clone(),
            payload: p.payload.clone(),
        };
        let raw = SerfMessage::Query(q.clone()).encode();
        let limit = self.st.cfg.query_size_limit;
        anyhow::ensure!(raw.len() <= limit, "query exceeds limit of {limit} bytes");
        self.st.query_clock.increment();
        let local = self.st.next_local_id;
        self.st.next_local_id += 1;
        self.st.outgoing.insert(
            (ltime, id),
            OutgoingQuery {
                local_id: local,
                deadline: now + timeout,
                acks: HashSet::new(),
                responses: HashSet::new(),
            },
        );
        // We process our own query like any member.
        self.st.handle_query(q, &raw, now);
        self.st.enqueue(Queue::Query, raw);
        self.after_core();
        Ok(local)
    }

    /// Answers a query received earlier (by its local id).
    pub fn respond(
        &mut self,
        local_id: u64,
        payload: Vec<u8>,
        now: Duration,
    ) -> anyhow::Result<()> {
        let Some(p) = self.st.pending.remove(&local_id) else {
            anyhow::bail!("no pending query with id {local_id}");
        };
        if now > p.deadline {
            anyhow::bail!("query {local_id} timed out");
        }
        let msg = SerfMessage::QueryResponse(wire::QueryResponse {
            ltime: p.ltime,
            id: p.id,
            from: self.st.name.clone(),
            flags: 0,
            payload,
        })
        .encode();
        // Too big: refused as by Serf, and the query stays answerable.
        let limit = self.st.cfg.query_response_size_limit;
        if msg.len() > limit {
            self.st.pending.insert(local_id, p);
            anyhow::bail!("response exceeds limit of {limit} bytes");
        }
        let name = String::new();
        self.st.send_with_relay(p.to, &name, msg, p.relay_factor);
        self.after_core();
        Ok(())
    }

    pub fn drain_query_replies(&mut self) -> Vec<(u64, QueryReply)> {
        std::mem::take(&mut self.st.replies)
    }

    /// See [`Core::next_gossip_at`].
    pub fn next_gossip_at(&self) -> Duration {
        self.core.next_gossip_at()
    }

    pub fn tick(&mut self, now: Duration) {
        self.core.tick(now, &mut self.st);
        self.after_core();
        // Coalescing.
        let (cp, qp) = (self.st.cfg.coalesce_period, self.st.cfg.quiescent_period);
        if self.st.member_co.due(now, cp, qp) {
            let mut out = Vec::new();
            self.st.member_co.flush(&mut out);
            self.st.events.extend(out);
        }
        let (up, uq) = (
            self.st.cfg.user_coalesce_period,
            self.st.cfg.user_quiescent_period,
        );
        if self.st.user_co.due(now, up, uq) {
            let mut out = Vec::new();
            self.st.user_co.flush(&mut out);
            self.st.events.extend(out);
        }
        // Query deadlines.
        let done: Vec<(u64, u32)> = self
            .st
            .outgoing
            .iter()
            .filter(|(_, q)| now >= q.deadline)
            .map(|(k, _)| *k)
            .collect();
        for k in done {
            if let Some(q) = self.st.outgoing.remove(&k) {
                match self.st.conflict_vote.take() {
                    Some(vote) if vote.local_id == q.local_id => self.st.count_conflict_vote(vote),
                    other => {
                        self.st.conflict_vote = other;
                        self.st.replies.push((q.local_id, QueryReply::Done));
                    }
                }
            }
        }
        if let Some(other) = self.st.conflict_seen.take() {
            if self.st.conflict_vote.is_none() && self.st.conflict_lost.is_none() {
                let p = crate::model::QueryParams {
                    name: "_serf_conflict".to_string(),
                    payload: self.st.name.clone().into_bytes(),
                    ..Default::default()
                };
                match self.query(&p, now) {
                    Ok(local_id) => {
                        self.st.conflict_vote = Some(ConflictVote {
                            local_id,
                            other,
                            responses: 0,
                            matching: 0,
                        })
                    }
                    Err(e) => tracing::error!("cannot ask the cluster about our name: {e:#}"),
                }
            }
        }
        self.st.pending.retain(|_, p| now <= p.deadline);
        // Stale intents.
        let rit = self.st.cfg.recent_intent_timeout;
        self.st
            .intents
            .retain(|_, i| now.saturating_sub(i.at) <= rit);
        // Pruned members (force-leave -prune).
        let due: Vec<String> = self
            .st
            .prunes
            .iter()
            .filter(|(_, at)| now >= *at)
            .map(|(n, _)| n.clone())
            .collect();
        self.st.prunes.retain(|(_, at)| now < *at);
        for name in due {
            if name == self.st.name {
                continue;
            }
            if let Some(m) = self.st.erase(&name) {
                self.st.emit_member(MemberEventKind::Reap, m.member, now);
            }
        }
        if now >= self.next_queue_check {
            self.next_queue_check = now + self.st.cfg.queue_check_interval;
            self.st.check_queues();
        }
        // Reap.
        if now >= self.next_reap {
            self.next_reap = now + self.st.cfg.reap_interval;
            self.reap(now);
        }
        // Reconnect to one failed member.
        if now >= self.next_reconnect && !self.st.leaving {
            self.next_reconnect = now + self.st.cfg.reconnect_interval;
            let failed: Vec<SocketAddr> = self
                .st
                .members
                .values()
                .filter(|m| m.member.status == MemberStatus::Failed)
                .map(|m| SocketAddr::new(m.member.addr, m.member.port))
                .collect();
            if !failed.is_empty() {
                let pick = failed[self.st.rng.below(failed.len())];
                self.core.join(pick, &mut self.st);
            }
        }
    }

    fn reap(&mut self, now: Duration) {
        let (rt, tt) = (self.st.cfg.reconnect_timeout, self.st.cfg.tombstone_timeout);
        let gone: Vec<String> = self
            .st
            .members
            .values()
            .filter(|m| match m.member.status {
                MemberStatus::Failed => now.saturating_sub(m.leave_time) > rt,
                MemberStatus::Left => now.saturating_sub(m.leave_time) > tt,
                _ => false,
            })
            .filter(|m| m.member.name != self.st.name)
            .map(|m| m.member.name.clone())
            .collect();
        for g in gone {
            if let Some(m) = self.st.erase(&g) {
                self.st.emit_member(MemberEventKind::Reap, m.member, now);
            }
        }
    }

    pub fn drain_outputs(&mut self) -> Vec<Output> {
        self.core.drain_outputs()
    }

    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.st.events)
    }

    pub fn members(&self) -> Vec<Member> {
        self.st.members.values().map(|m| m.member.clone()).collect()
    }

    /// Status of one member, without copying it.
    pub fn status_of(&self, name: &str) -> Option<MemberStatus> {
        self.st.members.get(name).map(|m| m.member.status)
    }

    pub fn member(&self, name: &str) -> Option<Member> {
        self.st.members.get(name).map(|m| m.member.clone())
    }

    pub fn local_member(&self) -> Member {
        self.st.members[&self.st.name].member.clone()
    }

    /// Restores clocks from a snapshot: events and queries up to those
    /// clocks are history and not delivered again (serf's behaviour).
    pub fn restore_clocks(&mut self, clock: u64, event: u64, query: u64) {
        self.st.clock.witness(clock);
        self.st.event_clock.witness(event);
        self.st.query_clock.witness(query);
        self.st.event_min_time = self.st.event_min_time.max(event.saturating_add(1));
    }

    /// The last known network coordinate of `name` (ours included);
    /// `None` when unknown or when coordinates are disabled.
    pub fn coordinate(&self, name: &str) -> Option<&coordinate::Coordinate> {
        if name == self.st.name {
            return self.st.coord.as_ref().map(|c| c.coordinate());
        }
        self.st.coord_cache.get(name)
    }

    /// Times our coordinate went invalid and was reset; `None` when
    /// coordinates are disabled.
    pub fn coordinate_resets(&self) -> Option<u64> {
        self.st.coord.as_ref().map(|c| c.resets)
    }

    pub fn clocks(&self) -> (u64, u64, u64) {
        (
            self.st.clock.time(),
            self.st.event_clock.time(),
            self.st.query_clock.time(),
        )
    }

    pub fn set_keys(&mut self, keys: Vec<Vec<u8>>) {
        self.core.set_keys(keys);
    }
    pub fn keys(&self) -> &[Vec<u8>] {
        self.core.keys()
    }
}

/// Payload of a keyring query: the key-request type byte, then {Key}.
pub fn encode_key_request(key: &[u8]) -> Vec<u8> {
    wire::MapEnc::new(vec![wire::stype::KEY_REQUEST], 1)
        .bytes("Key", key)
        .finish()
}

fn decode_key_request(payload: &[u8]) -> Option<Vec<u8>> {
    let (&t, body) = payload.split_first()?;
    if t != wire::stype::KEY_REQUEST {
        return None;
    }
    let (v, _) = wire::read_value(body).ok()?;
    wire::Fields::of(&v).ok()?.bytes("Key").ok()
}

fn encode_key_response(result: bool, message: &str, keys: &[String], primary: &str) -> Vec<u8> {
    let mut list = Vec::new();
    rmp::encode::write_array_len(&mut list, keys.len() as u32).expect("vec write");
    for k in keys {
        rmp::encode::write_str(&mut list, k).expect("vec write");
    }
    wire::MapEnc::new(vec![wire::stype::KEY_RESPONSE], 4)
        .raw_value("Keys", &list)
        .str("Message", message)
        .str("PrimaryKey", primary)
        .bool("Result", result)
        .finish()
}

/// One node's answer to a keyring query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeKeyResponse {
    pub result: bool,
    pub message: String,
    pub keys: Vec<String>,
    pub primary_key: String,
}

pub fn decode_key_response(payload: &[u8]) -> Option<NodeKeyResponse> {
    let (&t, body) = payload.split_first()?;
    if t != wire::stype::KEY_RESPONSE {
        return None;
    }
    let (v, _) = wire::read_value(body).ok()?;
    let f = wire::Fields::of(&v).ok()?;
    let keys = match f.get("Keys") {
        Some(rmpv::Value::Array(a)) => a
            .iter()
            .filter_map(|x| wire::value_bytes(x).and_then(|b| String::from_utf8(b).ok()))
            .collect(),
        _ => Vec::new(),
    };
    Some(NodeKeyResponse {
        result: f.bool("Result").ok()?,
        message: f.string("Message").unwrap_or_default(),
        keys,
        primary_key: f.string("PrimaryKey").unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_witness() {
        let mut c = Clock::default();
        c.increment();
        c.witness(5);
        assert_eq!(c.time(), 6);
        c.witness(2);
        assert_eq!(c.time(), 6);
    }

    fn serf() -> Serf {
        let addr: SocketAddr = "127.0.0.1:7946".parse().unwrap();
        Serf::new(Config::new(core::Config::lan("me", addr)), Duration::ZERO)
    }

    fn user_event(ltime: u64, name: &str, payload: &[u8]) -> Vec<u8> {
        SerfMessage::UserEvent(wire::UserEvent {
            ltime,
            name: name.into(),
            payload: payload.to_vec(),
            cc: false,
        })
        .encode()
    }

    fn query(ltime: u64, id: u32) -> Vec<u8> {
        SerfMessage::Query(wire::Query {
            ltime,
            id,
            addr: wire::addr_bytes("127.0.0.2".parse().unwrap()),
            port: 7946,
            source_node: "other".into(),
            flags: wire::QUERY_FLAG_NO_BROADCAST,
            timeout: 1_000_000_000,
            name: "q".into(),
            ..Default::default()
        })
        .encode()
    }

    /// Join and leave intents for names nobody announced: at most
    /// MAX_INTENTS are kept, the rest dropped and counted; an intent for a
    /// name already kept still updates it.
    #[test]
    fn intents_for_unknown_members_are_bounded() {
        let mut s = serf();
        let now = Duration::from_secs(1);
        for i in 0..3 * MAX_INTENTS as u64 {
            let node = format!("ghost-{i}");
            let m = if i % 2 == 0 {
                SerfMessage::Join(wire::Join { ltime: i + 1, node })
            } else {
                SerfMessage::Leave(wire::Leave {
                    ltime: i + 1,
                    node,
                    prune: false,
                })
            };
            s.st.notify_msg(&m.encode(), now);
        }
        assert_eq!(s.st.intents.len(), MAX_INTENTS);
        assert_eq!(s.intents().1, 2 * MAX_INTENTS as u64);
        let m = SerfMessage::Join(wire::Join {
            ltime: u64::MAX / 2,
            node: "ghost-0".into(),
        });
        s.st.notify_msg(&m.encode(), now);
        assert_eq!(s.st.intents["ghost-0"].ltime, u64::MAX / 2);
        assert_eq!(s.intents().1, 2 * MAX_INTENTS as u64);
    }

    #[test]
    fn clock_saturates_at_the_largest_lamport_time() {
        let mut c = Clock::default();
        c.witness(u64::MAX);
        assert_eq!(c.time(), u64::MAX);
        c.witness(u64::MAX);
        assert_eq!(c.increment(), u64::MAX);
        assert_eq!(c.time(), u64::MAX);
    }

    /// Lamport times at the top of the range, from every network path and
    /// from a snapshot: nothing overflows (a panic here would poison the
    /// agent's lock), the clocks stay at the largest time.
    #[test]
    fn lamport_times_at_u64_max_never_overflow() {
        let mut s = serf();
        let now = Duration::from_secs(1);
        let t = u64::MAX;
        let msgs = [
            SerfMessage::Join(wire::Join {
                ltime: t,
                node: "ghost".into(),
            })
            .encode(),
            SerfMessage::Leave(wire::Leave {
                ltime: t,
                node: "ghost".into(),
                prune: true,
            })
            .encode(),
            SerfMessage::Leave(wire::Leave {
                ltime: t,
                node: "me".into(),
                prune: false,
            })
            .encode(),
            user_event(t, "e", b"x"),
            query(t, 1),
        ];
        for m in &msgs {
            s.st.notify_msg(m, now);
        }
        let pp = SerfMessage::PushPull(wire::SerfPushPull {
            ltime: t,
            status_ltimes: vec![("me".into(), t), ("gone".into(), t)],
            left_members: vec!["gone".into()],
            event_ltime: t,
            events: vec![wire::UserEvents {
                ltime: t,
                events: vec![wire::UserEventRec {
                    name: "f".into(),
                    payload: vec![],
                }],
            }],
            query_ltime: t,
        })
        .encode();
        s.st.merge_remote_state(&pp, true, now);
        s.restore_clocks(t, t, t);
        assert_eq!(s.clocks(), (t, t, t));
        // Our own sends at the top of the range.
        s.user_event("mine", vec![], false, now).unwrap();
        s.query(&crate::model::QueryParams::default(), now).unwrap();
        s.leave_intent(now);
        s.force_leave("me", false, now);
        assert_eq!(s.clocks(), (t, t, t));
    }

    #[test]
    fn user_events_kept_per_lamport_time_are_bounded() {
        let mut s = serf();
        let now = Duration::from_secs(1);
        for i in 0..1000 {
            s.st.notify_msg(&user_event(7, &format!("e{i}"), b""), now);
        }
        let slot = s.st.event_buffer.iter().flatten().find(|u| u.ltime == 7);
        assert_eq!(slot.map(|u| u.events.len()), Some(MAX_EVENTS_PER_LTIME));
        assert_eq!(s.drain_events().len(), MAX_EVENTS_PER_LTIME);
        // Bytes too: big events fill a time's budget before its count does.
        let big = vec![0u8; 9 * 1024];
        for i in 0..100 {
            s.st.notify_msg(&user_event(8, &format!("b{i}"), &big), now);
        }
        let kept: usize =
            s.st.event_buffer
                .iter()
                .flatten()
                .filter(|u| u.ltime == 8)
                .flat_map(|u| &u.events)
                .map(|e| e.name.len() + e.payload.len())
                .sum();
        assert!(kept <= MAX_EVENT_BYTES_PER_LTIME, "{kept} bytes kept");
        assert!(kept > 0);
    }

    #[test]
    fn query_ids_kept_per_lamport_time_are_bounded() {
        let mut s = serf();
        let now = Duration::from_secs(1);
        for id in 0..1000 {
            s.st.notify_msg(&query(7, id), now);
        }
        let slot = s.st.query_buffer.iter().flatten().find(|q| q.ltime == 7);
        assert_eq!(slot.map(|q| q.ids.len()), Some(MAX_EVENTS_PER_LTIME));
        let queries = s
            .drain_events()
            .into_iter()
            .filter(|e| matches!(e, Event::Query(_)))
            .count();
        assert_eq!(queries, MAX_EVENTS_PER_LTIME);
    }

    /// Serf prunes its intent, event and query queues to `MaxQueueDepth`
    /// (4096), or with `MinQueueDepth` set to twice the members, at least
    /// that minimum.
    #[test]
    fn broadcast_queues_are_pruned_at_the_max_queue_depth() {
        let mut s = serf();
        let now = Duration::from_secs(1);
        for i in 0..5000u64 {
            let join = SerfMessage::Join(wire::Join {
                ltime: i + 10,
                node: format!("n{i}"),
            });
            // The map of intents for unknown members has its own bound
            // (MAX_INTENTS, tested above): emptied so every join is queued.
            if s.st.intents.len() == MAX_INTENTS {
                s.st.intents.clear();
            }
            s.st.notify_msg(&join.encode(), now);
            s.st.notify_msg(&user_event(i + 10, "e", b""), now);
        }
        assert_eq!(s.st.broadcasts.len(), 4096);
        assert_eq!(s.st.event_broadcasts.len(), 4096);
        s.drain_events();
        // The newest stay: the oldest (most sent) go first.
        let out = s.st.broadcasts.get(0, 1 << 20, 100);
        let newest = SerfMessage::Join(wire::Join {
            ltime: 5009,
            node: "n4999".into(),
        })
        .encode();
        assert_eq!(out.first(), Some(&newest));

        let mut cfg = Config::new(core::Config::lan("me", "127.0.0.1:7946".parse().unwrap()));
        cfg.min_queue_depth = 100;
        let mut s = Serf::new(cfg, Duration::ZERO);
        for i in 0..300u64 {
            s.st.notify_msg(&user_event(i + 10, "e", b""), now);
        }
        // One member: max(100, 2 * 1).
        assert_eq!(s.st.event_broadcasts.len(), 100);
    }

    #[test]
    fn member_coalescer_keeps_latest_and_skips_repeats() {
        let m = |n: &str| Member {
            name: n.into(),
            addr: "127.0.0.1".parse().unwrap(),
            port: 1,
            tags: vec![],
            status: MemberStatus::Alive,
            protocol: [0; 3],
            delegate: [0; 3],
        };
        let mut c = MemberCoalescer::default();
        let s = Duration::from_secs;
        c.push(MemberEventKind::Join, m("a"), s(0));
        c.push(MemberEventKind::Failed, m("a"), s(0));
        c.push(MemberEventKind::Join, m("b"), s(0));
        assert!(!c.due(s(0), s(3), s(1)));
        assert!(c.due(s(1), s(3), s(1)));
        let mut out = Vec::new();
        c.flush(&mut out);
        assert_eq!(out.len(), 2);
        assert!(
            matches!(&out[0], Event::Member { kind: MemberEventKind::Join, members } if members[0].name == "b")
        );
        // A second join of b with nothing in between is not repeated.
        c.push(MemberEventKind::Join, m("b"), s(5));
        let mut out = Vec::new();
        c.flush(&mut out);
        assert!(out.is_empty());
        // b leaves and comes back at another address within one window:
        // the join is passed on (serf would drop it).
        c.push(MemberEventKind::Leave, m("b"), s(6));
        let mut moved = m("b");
        moved.addr = "127.0.0.2".parse().unwrap();
        c.push(MemberEventKind::Join, moved, s(6));
        let mut out = Vec::new();
        c.flush(&mut out);
        assert!(
            matches!(&out[..], [Event::Member { kind: MemberEventKind::Join, members }] if members[0].addr.to_string() == "127.0.0.2")
        );
    }
}
