//! The Serf layer's state behind the core's delegate, and its three
//! broadcast queues (intent, event, query) with Serf's depth limits.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::coalesce::{MemberCoalescer, UserCoalescer};
use super::conflict::ConflictVote;
use super::members::{Intent, SMember};
use super::queries::{InternalQuery, OutgoingQuery, PendingResponse, SeenQuery};
use super::{Clock, Config};
use crate::coordinate;
use crate::core::{self, BroadcastQueue};
use crate::model::{Event, QueryReply};
use crate::wire;

/// Serf's three broadcast queues, named as Serf names them in its logs.
#[derive(Debug, Clone, Copy)]
pub(super) enum Queue {
    Intent = 0,
    Event = 1,
    Query = 2,
}

impl Queue {
    pub(super) fn name(self) -> &'static str {
        match self {
            Queue::Intent => "Intent",
            Queue::Event => "Event",
            Queue::Query => "Query",
        }
    }
}

/// Everything the delegate side needs; kept apart from the core so both
/// can be borrowed at once.
pub(super) struct State {
    pub(super) cfg: Config,
    pub(super) name: String,
    pub(super) clock: Clock,
    pub(super) event_clock: Clock,
    pub(super) query_clock: Clock,
    pub(super) members: Tracked<BTreeMap<Arc<str>, SMember>>,
    pub(super) intents: HashMap<String, Intent>,
    /// Intents for unknown members dropped because [`MAX_INTENTS`] were kept.
    pub(super) intents_dropped: u64,
    pub(super) event_buffer: Vec<Option<wire::UserEvents>>,
    pub(super) event_min_time: u64,
    pub(super) query_buffer: Vec<Option<SeenQuery>>,
    pub(super) broadcasts: BroadcastQueue,
    pub(super) event_broadcasts: BroadcastQueue,
    pub(super) query_broadcasts: BroadcastQueue,
    /// Messages pruned from each queue since the last check.
    pub(super) queue_dropped: [u64; 3],
    /// The last Lamport time whose full buffer was warned about.
    pub(super) full_ltime_warned: Option<u64>,
    pub(super) n_nodes: usize,
    pub(super) member_co: MemberCoalescer,
    pub(super) user_co: UserCoalescer,
    pub(super) events: Vec<Event>,
    /// best-effort user messages to send once the core is free: (to, serf msg)
    pub(super) sends: Vec<(SocketAddr, Vec<u8>)>,
    pub(super) pending: HashMap<u64, PendingResponse>,
    pub(super) next_local_id: u64,
    pub(super) outgoing: HashMap<(u64, u32), OutgoingQuery>,
    pub(super) replies: Vec<(u64, QueryReply)>,
    pub(super) leaving: bool,
    pub(super) event_join_ignore: bool,
    pub(super) internal: Vec<InternalQuery>,
    pub(super) keys_changed: bool,
    /// Members to erase (force-leave with prune) at the given time.
    pub(super) prunes: Vec<(String, Duration)>,
    /// Another node claims our name from this address: start a vote.
    pub(super) conflict_seen: Option<SocketAddr>,
    /// The `_serf_conflict` vote under way.
    pub(super) conflict_vote: Option<ConflictVote>,
    /// Set when the vote went to the other node: the agent must stop.
    pub(super) conflict_lost: Option<String>,
    pub(super) rng: core::Rng,
    pub(super) self_addr: SocketAddr,
    /// This node's Vivaldi coordinate (none when disabled).
    pub(super) coord: Tracked<Option<coordinate::Client>>,
    /// The last coordinate each other member sent in an ack.
    pub(super) coord_cache: Tracked<HashMap<Arc<str>, coordinate::Coordinate>>,
}

/// A value whose every mutable access counts as a change: readers see it
/// through `Deref`, writers must go through [`Tracked::edit`], which bumps
/// the version. A host that publishes copies of it (the agent's view)
/// rebuilds its copy only when the version moved.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tracked<T> {
    value: T,
    version: u64,
}

impl<T> Tracked<T> {
    pub(crate) fn new(value: T) -> Self {
        Tracked { value, version: 0 }
    }

    /// Write access: counted as a change, whether or not the caller makes one.
    pub(crate) fn edit(&mut self) -> &mut T {
        self.version = self.version.wrapping_add(1);
        &mut self.value
    }

    pub(crate) fn version(&self) -> u64 {
        self.version
    }
}

impl<T> std::ops::Deref for Tracked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl State {
    /// Serf's `getQueueMax`: `MaxQueueDepth`, or with `MinQueueDepth` set,
    /// twice the members but at least that.
    pub(super) fn queue_max(&self) -> usize {
        if self.cfg.min_queue_depth > 0 {
            (2 * self.members.len()).max(self.cfg.min_queue_depth)
        } else {
            self.cfg.max_queue_depth
        }
    }

    pub(super) fn queue_of(&mut self, q: Queue) -> &mut BroadcastQueue {
        match q {
            Queue::Intent => &mut self.broadcasts,
            Queue::Event => &mut self.event_broadcasts,
            Queue::Query => &mut self.query_broadcasts,
        }
    }

    /// Queues a broadcast; past the queue limit the most sent, oldest
    /// messages go at once (Serf prunes every 30 s, and a flood can queue a
    /// lot in 30 s). Warned once per check interval, as Serf warns.
    pub(super) fn enqueue(&mut self, q: Queue, msg: Vec<u8>) {
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
    pub(super) fn check_queues(&mut self) {
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

    pub(super) fn retransmit_limit(&self) -> u32 {
        core::retransmit_limit(self.cfg.core.retransmit_mult, self.n_nodes.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serf::testutil::*;
    use crate::serf::{Config, Serf, MAX_INTENTS};
    use crate::wire::SerfMessage;

    /// Serf prunes its intent, event and query queues to `MaxQueueDepth`
    /// (4096), or with `MinQueueDepth` set to twice the members, at least
    /// that minimum.
    #[test]
    fn broadcast_queues_are_pruned_at_the_max_queue_depth() {
        let mut s = serf();
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
            deliver(&mut s, [join.encode(), user_event(i + 10, "e", b"")]);
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
        let mut s = Serf::new(cfg, Duration::ZERO, crate::sim::nonce_source(1));
        deliver(&mut s, (0..300u64).map(|i| user_event(i + 10, "e", b"")));
        // One member: max(100, 2 * 1).
        assert_eq!(s.st.event_broadcasts.len(), 100);
    }
}
