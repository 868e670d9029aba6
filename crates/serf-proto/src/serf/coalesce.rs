//! Serf's event coalescing: member events folded per member, user events
//! with `coalesce` kept newest per name, both flushed after a quiet spell
//! or a full period.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use crate::model::{Event, Member, MemberEventKind};

/// What was last passed on for a member: the kind, and a fingerprint of
/// its address, port and tags ([`fingerprint`]). Kept for every member
/// that ever had an event: a copy of each member's tags here was a tenth
/// of what a member pair costs in a large cluster.
pub(super) type Passed = (MemberEventKind, u64);

/// A member's address, port and tags in 64 bits (SipHash with fixed keys:
/// the same on every run). Two different ones collide with odds of 2^-64,
/// and then only fold an event of the kind last passed on.
fn fingerprint(m: &Member) -> u64 {
    let mut h = DefaultHasher::new();
    (m.addr, m.port, &m.tags).hash(&mut h);
    h.finish()
}

/// The span over which events are held: from the first held to the last.
#[derive(Debug, Default)]
pub(super) struct Window {
    pub(super) first_at: Option<Duration>,
    pub(super) last_at: Duration,
}

impl Window {
    fn hold(&mut self, now: Duration) {
        self.first_at.get_or_insert(now);
        self.last_at = now;
    }
    /// When the events held must go out: a full `period` after the first,
    /// or `quiet` after the last; `None` when nothing is held.
    pub(super) fn deadline(&self, period: Duration, quiet: Duration) -> Option<Duration> {
        self.first_at
            .map(|f| (f + period).min(self.last_at + quiet))
    }
    pub(super) fn due(&self, now: Duration, period: Duration, quiet: Duration) -> bool {
        self.deadline(period, quiet).is_some_and(|at| now >= at)
    }
}

/// Member-event coalescing (serf's memberEventCoalescer), with one
/// difference: serf drops an event of the kind it last passed on for that
/// name; here it is dropped only when the address and tags are the same
/// too, so a member that leaves and comes back at another address within
/// one window is still announced (serf would fold leave + join into
/// nothing, and handlers would keep the old address).
#[derive(Debug, Default)]
pub(super) struct MemberCoalescer {
    pub(super) latest: BTreeMap<Arc<str>, (MemberEventKind, Member)>,
    /// Keyed by the member table's own name allocation (shared, not copied).
    pub(super) last: HashMap<Arc<str>, Passed>,
    pub(super) window: Window,
}

impl MemberCoalescer {
    #[cfg(test)]
    pub(super) fn push(&mut self, kind: MemberEventKind, m: Member, now: Duration) {
        self.push_named(kind, Arc::from(m.name.as_str()), m, now);
    }
    /// An event for the member the member table keeps under `name`.
    pub(super) fn push_named(
        &mut self,
        kind: MemberEventKind,
        name: Arc<str>,
        m: Member,
        now: Duration,
    ) {
        self.window.hold(now);
        self.latest.insert(name, (kind, m));
    }
    pub(super) fn flush(&mut self, out: &mut Vec<Event>) {
        self.window.first_at = None;
        let mut groups: Vec<(MemberEventKind, Vec<Member>)> = Vec::new();
        for (name, (kind, m)) in std::mem::take(&mut self.latest) {
            let seen = (kind, fingerprint(&m));
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
pub(super) struct UserCoalescer {
    pub(super) events: BTreeMap<String, (u64, Vec<Event>)>,
    pub(super) window: Window,
}

impl UserCoalescer {
    pub(super) fn push(&mut self, name: &str, ltime: u64, e: Event, now: Duration) {
        self.window.hold(now);
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
    pub(super) fn flush(&mut self, out: &mut Vec<Event>) {
        self.window.first_at = None;
        for (_, (_, evs)) in std::mem::take(&mut self.events) {
            out.extend(evs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MemberStatus;

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
        assert!(!c.window.due(s(0), s(3), s(1)));
        assert!(c.window.due(s(1), s(3), s(1)));
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
