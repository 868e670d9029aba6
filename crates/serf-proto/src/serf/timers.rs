//! What time drives in the Serf layer: the core's timers, coalescer
//! flushes, query deadlines, the name-conflict vote, intent expiry,
//! pruning, queue checks, reaping and reconnecting.

use std::net::SocketAddr;
use std::time::Duration;

use super::Serf;
use crate::model::{MemberEventKind, MemberStatus};

impl Serf {
    /// See [`Core::next_gossip_at`](crate::core::Core::next_gossip_at).
    pub fn next_gossip_at(&self) -> Duration {
        self.core.next_gossip_at()
    }

    /// The earliest time at which [`Serf::tick`] has something to do, on
    /// the clock of the `now` passed in: the core's
    /// [`next_deadline`](crate::core::Core::next_deadline), a coalescer's
    /// flush, a query's deadline, a name-conflict vote to start (at once),
    /// a received query or an intent to forget, a pruned member to erase,
    /// the queue check, the reap, the reconnect. Ticking earlier is
    /// harmless; after any input or call (packet, stream, join, user
    /// event, query, leave...) the host reads it again. A time already past
    /// means "now".
    pub fn next_deadline(&self) -> Duration {
        let st = &self.st;
        if st.conflict_seen.is_some() {
            return Duration::ZERO;
        }
        // Forgotten once strictly past their time (tick keeps `now <= t`).
        let after = |t: Duration| t.saturating_add(Duration::from_nanos(1));
        let cfg = &st.cfg;
        let mut at = self.core.next_deadline(&self.st);
        let coalescers = [
            st.member_co
                .window
                .deadline(cfg.coalesce_period, cfg.quiescent_period),
            st.user_co
                .window
                .deadline(cfg.user_coalesce_period, cfg.user_quiescent_period),
        ];
        let intents = st
            .intents
            .values()
            .map(|i| after(i.at.saturating_add(cfg.recent_intent_timeout)));
        let prunes = st.prunes.iter().map(|(_, t)| *t);
        for t in coalescers
            .into_iter()
            .flatten()
            .chain(st.query_deadlines())
            .chain(intents)
            .chain(prunes)
        {
            at = at.min(t);
        }
        at = at.min(self.next_queue_check).min(self.next_reap);
        if !st.leaving {
            at = at.min(self.next_reconnect);
        }
        at
    }

    /// Advances timers: call it at [`Serf::next_deadline`] (or earlier).
    pub fn tick(&mut self, now: Duration) {
        self.core.tick(now, &mut self.st);
        self.after_core();
        // Coalescing.
        let (cp, qp) = (self.st.cfg.coalesce_period, self.st.cfg.quiescent_period);
        if self.st.member_co.window.due(now, cp, qp) {
            let mut out = Vec::new();
            self.st.member_co.flush(&mut out);
            self.st.events.extend(out);
        }
        let (up, uq) = (
            self.st.cfg.user_coalesce_period,
            self.st.cfg.user_quiescent_period,
        );
        if self.st.user_co.window.due(now, up, uq) {
            let mut out = Vec::new();
            self.st.user_co.flush(&mut out);
            self.st.events.extend(out);
        }
        self.st.expire_queries(now);
        self.start_conflict_vote(now);
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
                self.st.emit_member(MemberEventKind::Reap, &m.member, now);
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
}
