//! Member state: the members map, join and leave intents (Lamport-ordered,
//! kept for unknown members up to a bound), memberlist's node notices,
//! force-leave and reaping.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::state::{Queue, State};
use super::{Serf, MAX_INTENTS};
use crate::core::Node;
use crate::model::{Member, MemberEventKind, MemberStatus};
use crate::wire::{self, NodeState, SerfMessage};

#[derive(Debug, Clone)]
pub(super) struct SMember {
    pub(super) member: MemberRecord,
    pub(super) status_ltime: u64,
    pub(super) leave_time: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IntentKind {
    Join,
    Leave,
}

#[derive(Debug, Clone)]
pub(super) struct Intent {
    pub(super) ltime: u64,
    pub(super) kind: IntentKind,
    pub(super) at: Duration,
}

/// What Serf keeps of a member: the node as memberlist last reported it,
/// its name and meta shared with memberlist's node table (one allocation
/// each, however long both keep them), and its status. The tags are
/// decoded from the meta when a [`Member`] is handed out, so a member
/// costs the same few words whatever its tags.
#[derive(Debug, Clone)]
pub(super) struct MemberRecord {
    pub(super) name: Arc<str>,
    pub(super) meta: Arc<[u8]>,
    pub(super) addr: IpAddr,
    pub(super) port: u16,
    pub(super) status: MemberStatus,
    pub(super) vsn: [u8; 6],
}

impl MemberRecord {
    /// The member as the agent, its handlers and the RPC see it.
    pub(super) fn to_member(&self) -> Member {
        let v = &self.vsn;
        Member {
            name: self.name.to_string(),
            addr: self.addr,
            port: self.port,
            tags: wire::decode_tags(&self.meta).unwrap_or_default(),
            status: self.status,
            protocol: [v[0], v[1], v[2]],
            delegate: [v[3], v[4], v[5]],
        }
    }
}

pub(super) fn member_of(node: &Node, status: MemberStatus) -> MemberRecord {
    MemberRecord {
        name: node.name.clone(),
        meta: node.meta.clone(),
        addr: node.addr.ip(),
        port: node.addr.port(),
        status,
        vsn: node.vsn,
    }
}

impl State {
    /// Forgets a member for good (reap, prune), with its coordinate.
    pub(super) fn erase(&mut self, name: &str) -> Option<SMember> {
        if let Some(c) = self.coord.edit() {
            c.forget(name);
            self.coord_cache.edit().remove(name);
        }
        self.members.edit().remove(name)
    }

    pub(super) fn emit_member(&mut self, kind: MemberEventKind, m: &MemberRecord, now: Duration) {
        tracing::info!(event = kind.as_str(), node = %m.name, addr = %m.addr, "serf member event");
        self.member_co
            .push_named(kind, m.name.clone(), m.to_member(), now);
    }

    pub(super) fn handle_leave_intent(
        &mut self,
        ltime: u64,
        node: &str,
        prune: bool,
        now: Duration,
    ) -> bool {
        self.clock.witness(ltime);
        let Some(m) = self.members.edit().get_mut(node) else {
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
            if let Some(me) = self.members.edit().get_mut(self.name.as_str()) {
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
                self.emit_member(MemberEventKind::Leave, &mm, now);
                if prune {
                    self.prunes.push((node.to_string(), now));
                }
                true
            }
            _ => false,
        }
    }

    pub(super) fn handle_join_intent(&mut self, ltime: u64, node: &str, now: Duration) -> bool {
        self.clock.witness(ltime);
        let Some(m) = self.members.edit().get_mut(node) else {
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

    pub(super) fn store_intent(
        &mut self,
        node: &str,
        ltime: u64,
        kind: IntentKind,
        now: Duration,
    ) -> bool {
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

    /// memberlist says a node joined (or came back): its member, with
    /// any intent kept for it.
    pub(super) fn node_joined(&mut self, node: &Node, now: Duration) {
        let mut status = MemberStatus::Alive;
        let mut ltime = 0;
        if let Some(i) = self.intents.remove(&*node.name) {
            ltime = i.ltime;
            if i.kind == IntentKind::Leave {
                status = MemberStatus::Leaving;
            }
        }
        let member = member_of(node, status);
        match self.members.edit().get_mut(&node.name) {
            Some(m) => {
                m.member = member_of(node, MemberStatus::Alive);
                m.status_ltime = m.status_ltime.max(ltime);
            }
            None => {
                self.members.edit().insert(
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
        self.emit_member(MemberEventKind::Join, &m, now);
    }

    /// memberlist says a node is dead or left: it failed, or it left.
    pub(super) fn node_left(&mut self, node: &Node, now: Duration) {
        let Some(m) = self.members.edit().get_mut(&node.name) else {
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
        self.emit_member(ev, &mm, now);
    }

    /// memberlist says a node changed its meta (tags).
    pub(super) fn node_updated(&mut self, node: &Node, now: Duration) {
        let Some(m) = self.members.edit().get_mut(&node.name) else {
            return;
        };
        let status = m.member.status;
        m.member = member_of(node, status);
        let mm = m.member.clone();
        self.emit_member(MemberEventKind::Update, &mm, now);
    }
}

impl Serf {
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

    pub(super) fn reap(&mut self, now: Duration) {
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
            .filter(|m| *m.member.name != *self.st.name)
            .map(|m| m.member.name.to_string())
            .collect();
        for g in gone {
            if let Some(m) = self.st.erase(&g) {
                self.st.emit_member(MemberEventKind::Reap, &m.member, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serf::testutil::*;

    /// Join and leave intents for names nobody announced: at most
    /// MAX_INTENTS are kept, the rest dropped and counted; an intent for a
    /// name already kept still updates it.
    #[test]
    fn intents_for_unknown_members_are_bounded() {
        let mut s = serf();
        let intents = (0..3 * MAX_INTENTS as u64).map(|i| {
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
            m.encode()
        });
        deliver(&mut s, intents);
        assert_eq!(s.st.intents.len(), MAX_INTENTS);
        assert_eq!(s.intents().1, 2 * MAX_INTENTS as u64);
        let m = SerfMessage::Join(wire::Join {
            ltime: u64::MAX / 2,
            node: "ghost-0".into(),
        });
        deliver(&mut s, [m.encode()]);
        assert_eq!(s.st.intents["ghost-0"].ltime, u64::MAX / 2);
        assert_eq!(s.intents().1, 2 * MAX_INTENTS as u64);
    }
}
