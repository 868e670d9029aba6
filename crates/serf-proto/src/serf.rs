//! The sans-IO Serf layer over [`crate::core`]: Lamport clocks, join and
//! leave intents, member status (alive/leaving/left/failed), user events
//! with their dedup buffer, queries and responses, tags in node meta,
//! reconnect, reap, and Serf's event coalescing.
//!
//! [`Serf`] owns a [`Core`] and plays its [`Delegate`]. Like the core it is
//! driven by the caller (`handle_packet`, `handle_stream`, ..., and `tick`
//! at [`Serf::next_deadline`]) and drained for [`Output`]s and [`Event`]s;
//! it never blocks or reads a clock.
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
//!
//! Its parts: `state` (the state behind the delegate, broadcast queues),
//! `delegate` (the core's callbacks), `members` (member state, intents,
//! reaping), `events` (user events), `queries` (queries and responses),
//! `keyring` (keyring queries), `conflict` (name conflicts), `pushpull`
//! (Serf's push-pull state), `coalesce` (event coalescing), `timers`
//! (what [`Serf::tick`] does). This file holds the configuration, the
//! limits, the Lamport clock and [`Serf`]'s entry points.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::coordinate;
use crate::core::{self, BroadcastQueue, Core, Delegate, Output};
use crate::model::{Event, Member, MemberStatus};
use crate::wire::{self, SerfMessage};

mod coalesce;
mod conflict;
mod delegate;
mod events;
mod keyring;
mod members;
mod pushpull;
mod queries;
mod state;
mod timers;

use coalesce::{MemberCoalescer, UserCoalescer};
use state::{Queue, State, Tracked};

/// The keyring payloads (`wire`'s), where the agent has always found them.
pub use crate::wire::{decode_key_response, encode_key_request, KeyResponse as NodeKeyResponse};

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

/// The Serf agent's protocol engine: memberlist core + Serf state.
pub struct Serf {
    core: Core,
    st: State,
    next_queue_check: Duration,
    next_reap: Duration,
    next_reconnect: Duration,
}

impl Serf {
    /// A Serf at `now`; `nonces`: the host's CSPRNG for AES-GCM nonces
    /// (see [`core::NonceSource`]).
    pub fn new(mut cfg: Config, now: Duration, nonces: core::NonceSource) -> Serf {
        cfg.core.meta = wire::encode_tags(&cfg.tags);
        let core_cfg = cfg.core.clone();
        let mut core = Core::new(core_cfg, now, nonces);
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
            members: Tracked::default(),
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
            coord: Tracked::new(
                (!cfg.disable_coordinates).then(|| coordinate::Client::new(cfg.core.seed ^ 0xc00d)),
            ),
            coord_cache: Tracked::default(),
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

    pub(super) fn after_core(&mut self) {
        self.st.n_nodes = self.core.node_count();
        for q in std::mem::take(&mut self.st.internal) {
            self.answer_internal(q);
        }
        for (to, msg) in std::mem::take(&mut self.st.sends) {
            self.core.send_user(to, &msg);
        }
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
        if let Some(m) = self.st.members.edit().get_mut(name.as_str()) {
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
        if let Some(m) = self.st.members.edit().get_mut(name.as_str()) {
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
            .filter(|m| *m.member.name != *self.st.name && m.member.status == MemberStatus::Alive)
            .count()
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

    pub fn drain_outputs(&mut self) -> Vec<Output> {
        self.core.drain_outputs()
    }

    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.st.events)
    }

    /// Moves whenever the member list may have changed: a host keeping a
    /// copy of [`Serf::members`] copies again only when this moved.
    pub fn members_version(&self) -> u64 {
        self.st.members.version()
    }

    /// Moves whenever a coordinate (ours or a cached one) may have changed.
    pub fn coordinates_version(&self) -> u64 {
        self.st
            .coord
            .version()
            .wrapping_add(self.st.coord_cache.version())
    }

    pub fn members(&self) -> Vec<Member> {
        self.st
            .members
            .values()
            .map(|m| m.member.to_member())
            .collect()
    }

    /// Status of one member, without copying it.
    pub fn status_of(&self, name: &str) -> Option<MemberStatus> {
        self.st.members.get(name).map(|m| m.member.status)
    }

    pub fn member(&self, name: &str) -> Option<Member> {
        self.st.members.get(name).map(|m| m.member.to_member())
    }

    pub fn local_member(&self) -> Member {
        self.st.members[self.st.name.as_str()].member.to_member()
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

/// Helpers shared by the Serf layer's unit tests.
#[cfg(test)]
pub(crate) mod testutil {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::{core, Config, Serf};
    use crate::core::Delegate;
    use crate::wire::{self, SerfMessage};

    /// The time the tests hand messages in at.
    pub(crate) const NOW: Duration = Duration::from_secs(1);

    /// Hands each of `msgs` to the Serf layer as a gossiped user message,
    /// at [`NOW`].
    pub(crate) fn deliver(s: &mut Serf, msgs: impl IntoIterator<Item = Vec<u8>>) {
        for m in msgs {
            s.st.notify_msg(&m, NOW);
        }
    }

    pub(crate) fn serf() -> Serf {
        let addr: SocketAddr = "127.0.0.1:7946".parse().unwrap();
        let cfg = Config::new(core::Config::lan("me", addr));
        Serf::new(cfg, Duration::ZERO, crate::sim::nonce_source(1))
    }

    pub(crate) fn user_event(ltime: u64, name: &str, payload: &[u8]) -> Vec<u8> {
        SerfMessage::UserEvent(wire::UserEvent {
            ltime,
            name: name.into(),
            payload: payload.to_vec(),
            cc: false,
        })
        .encode()
    }

    pub(crate) fn query(ltime: u64, id: u32) -> Vec<u8> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serf::testutil::*;

    #[test]
    fn clock_witness() {
        let mut c = Clock::default();
        c.increment();
        c.witness(5);
        assert_eq!(c.time(), 6);
        c.witness(2);
        assert_eq!(c.time(), 6);
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
        deliver(&mut s, msgs);
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
        s.st.merge_remote_state(&pp, true, NOW);
        s.restore_clocks(t, t, t);
        assert_eq!(s.clocks(), (t, t, t));
        // Our own sends at the top of the range.
        s.user_event("mine", vec![], false, NOW).unwrap();
        s.query(&crate::model::QueryParams::default(), NOW).unwrap();
        s.leave_intent(NOW);
        s.force_leave("me", false, NOW);
        assert_eq!(s.clocks(), (t, t, t));
    }
}
