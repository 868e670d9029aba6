//! Serf's part of a push-pull: the local state sent, a remote one merged.

use std::collections::HashMap;
use std::time::Duration;

use super::state::State;
use crate::model::MemberStatus;
use crate::wire::{self, SerfMessage};

impl State {
    /// This node's Serf state for a push-pull: clocks, member status
    /// times, left members, the recent user events.
    pub(super) fn push_pull_state(&mut self) -> Vec<u8> {
        let pp = wire::SerfPushPull {
            ltime: self.clock.time(),
            status_ltimes: self
                .members
                .iter()
                .map(|(n, m)| (n.to_string(), m.status_ltime))
                .collect(),
            left_members: self
                .members
                .values()
                .filter(|m| m.member.status == MemberStatus::Left)
                .map(|m| m.member.name.to_string())
                .collect(),
            event_ltime: self.event_clock.time(),
            events: self.event_buffer.iter().flatten().cloned().collect(),
            query_ltime: self.query_clock.time(),
        };
        SerfMessage::PushPull(pp).encode()
    }

    /// A peer's push-pull state: its clocks witnessed, its intents and
    /// user events handled as if gossiped.
    pub(super) fn merge_push_pull(&mut self, buf: &[u8], join: bool, now: Duration) {
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
}
