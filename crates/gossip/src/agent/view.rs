//! What the actor publishes for everyone else: the [`View`] of its state
//! the handle's synchronous reads (members, stats, coordinates) answer
//! from, and the event stream (with the events emitted before anyone
//! subscribed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::coordinate::Coordinate;
use crate::model::{self, Event, Member, Stats};
use crate::serf::Serf;

/// Events a subscriber may fall behind before it misses some.
const EVENT_BACKLOG: usize = 512;
/// How many events are kept for the first subscriber.
const EARLY_EVENTS: usize = 1024;

/// The actor's state as of its last input (published after every input,
/// before the events and replies that input caused go out). The member
/// list and the coordinates are shared with the previous view unless the
/// core says they may have changed: copying them after every packet and
/// timer was most of an idle agent's CPU at 200 members.
#[derive(Default)]
pub(super) struct View {
    pub members: Arc<Vec<Member>>,
    /// Our own entry in `members`.
    pub local: usize,
    pub coordinates: Arc<HashMap<String, Coordinate>>,
    /// The core's versions `members` and `coordinates` were copied at.
    versions: Option<(u64, u64)>,
    pub clocks: (u64, u64, u64),
    /// Intent, event and query queue depths.
    pub queues: (usize, usize, usize),
    /// Unknown intents kept, and dropped.
    pub intents: (usize, u64),
    pub encrypted: bool,
    pub health_score: i32,
    pub packets: (u64, u64, u64),
    pub coordinate_resets: Option<u64>,
    /// Incoming streams dropped (malformed, cut, timed out or refused).
    pub streams_dropped: u64,
    pub pending_broadcasts: usize,
    pub alive_peers: usize,
    /// Times the actor woke for the core's deadline (not for an input).
    pub timer_wakeups: u64,
}

impl View {
    /// The view of `serf` now; `prev` (the last one published) lends the
    /// member list and coordinates when they have not changed since.
    pub(super) fn of(
        serf: &Serf,
        prev: Option<&View>,
        streams_dropped: u64,
        timer_wakeups: u64,
    ) -> View {
        let (members_v, coords_v) = (serf.members_version(), serf.coordinates_version());
        let prev_v = prev.and_then(|p| p.versions);
        let (members, local) = match prev {
            Some(p) if prev_v.is_some_and(|(m, _)| m == members_v) => (p.members.clone(), p.local),
            _ => {
                let members = serf.members();
                let local = members
                    .iter()
                    .position(|m| m.name == serf.name())
                    .unwrap_or_default();
                (Arc::new(members), local)
            }
        };
        // A member that comes or goes takes its coordinate along.
        let coordinates = match prev {
            Some(p) if prev_v == Some((members_v, coords_v)) => p.coordinates.clone(),
            _ => Arc::new(
                members
                    .iter()
                    .filter_map(|m| Some((m.name.clone(), serf.coordinate(&m.name)?.clone())))
                    .collect(),
            ),
        };
        let c = &serf.core().counters;
        View {
            members,
            local,
            coordinates,
            versions: Some((members_v, coords_v)),
            clocks: serf.clocks(),
            queues: serf.queue_depths(),
            intents: serf.intents(),
            encrypted: !serf.keys().is_empty(),
            health_score: serf.core().awareness(),
            packets: (c.packets_in, c.packets_dropped, c.packets_out),
            coordinate_resets: serf.coordinate_resets(),
            streams_dropped,
            pending_broadcasts: serf.pending_broadcasts(),
            alive_peers: serf.alive_peers(),
            timer_wakeups,
        }
    }

    pub(super) fn local_member(&self) -> Member {
        self.members[self.local].clone()
    }

    /// `stats` as serf's agent shows it, plus our own `agent` entries
    /// (`agent`, then the view's `timer_wakeups`).
    pub(super) fn stats(&self, mut agent: Vec<(&str, String)>) -> Stats {
        agent.push(("timer_wakeups", self.timer_wakeups.to_string()));
        let count = |st: model::MemberStatus| {
            self.members
                .iter()
                .filter(|m| m.status == st)
                .count()
                .to_string()
        };
        let (clock, ev, q) = self.clocks;
        let (intents, events, queries) = self.queues;
        let mut stats = Stats::new();
        stats.insert(
            "agent".into(),
            agent.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        );
        let mut serf: Vec<(&str, String)> = vec![
            ("members", self.members.len().to_string()),
            ("failed", count(model::MemberStatus::Failed)),
            ("left", count(model::MemberStatus::Left)),
            ("member_time", clock.to_string()),
            ("event_time", ev.to_string()),
            ("query_time", q.to_string()),
            ("intent_queue", intents.to_string()),
            ("unknown_intents", self.intents.0.to_string()),
            ("unknown_intents_dropped", self.intents.1.to_string()),
            ("event_queue", events.to_string()),
            ("query_queue", queries.to_string()),
            ("encrypted", self.encrypted.to_string()),
            ("health_score", self.health_score.to_string()),
            ("packets_in", self.packets.0.to_string()),
            ("packets_dropped", self.packets.1.to_string()),
            ("packets_out", self.packets.2.to_string()),
            ("streams_dropped", self.streams_dropped.to_string()),
        ];
        // As serf: only when coordinates are kept.
        if let Some(resets) = self.coordinate_resets {
            serf.push(("coordinate_resets", resets.to_string()));
        }
        stats.insert(
            "serf".into(),
            serf.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        );
        stats
    }
}

/// The event stream: the actor publishes, the handle subscribes.
pub(super) struct Events {
    tx: broadcast::Sender<Event>,
    /// Events emitted before the first `subscribe` (None after it).
    early: Mutex<Option<Vec<Event>>>,
}

impl Events {
    pub(super) fn new() -> Events {
        // Every slot is allocated (and touched) up front: 4096 of them were
        // half of the idle agent's anonymous memory. Member events come
        // coalesced, one event for a burst, so a subscriber (handlers, RPC
        // streams) falling 512 events behind is a stuck one.
        let (tx, _) = broadcast::channel(EVENT_BACKLOG);
        Events {
            tx,
            early: Mutex::new(Some(Vec::new())),
        }
    }

    /// Sends events, in order; kept for the first subscriber while there is
    /// none yet (self's member-join above all).
    pub(super) fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut early = self.early.lock().expect("early events");
        for e in events {
            match early.as_mut() {
                Some(buf) if self.tx.receiver_count() == 0 => {
                    if buf.len() < EARLY_EVENTS {
                        buf.push(e);
                    }
                }
                _ => {
                    let _ = self.tx.send(e);
                }
            }
        }
    }

    /// The first subscription also gets the events emitted before it
    /// (since start); later ones only what comes after them.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Event> {
        // The lock keeps `publish` from sending in between.
        let mut early = self.early.lock().expect("early events");
        let rx = self.tx.subscribe();
        if let Some(early) = early.take() {
            for e in early {
                let _ = self.tx.send(e);
            }
        }
        rx
    }
}
