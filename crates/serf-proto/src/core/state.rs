//! Node state transitions (memberlist's state.go): alive, suspect, dead and
//! left, Lifeguard's suspicion timeouts, refutation, leave and announcements.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Core, Delegate, Node, Suspicion, ANNOUNCE_MAX};
use crate::wire::{self, Accuse, Alive, Message, NodeState};

/// The six version bytes memberlist keeps from an alive (protocol min,
/// max, current; delegate min, max, current): only from one that carries
/// at least six.
fn vsn_of(v: &[u8]) -> Option<[u8; 6]> {
    v.get(..6)?.try_into().ok()
}

pub fn suspicion_timeout(mult: u32, n: usize, interval: Duration) -> Duration {
    let scale = (n.max(1) as f64).log10().max(1.0);
    let ms = (scale * 1000.0) as u64;
    interval * mult * ms as u32 / 1000
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

impl Core {
    fn refute(&mut self, accused: u32) {
        // Saturating: a peer accusing us at u32::MAX must not overflow
        // (memberlist's counter wraps to 0 there; either way a claim at the
        // largest incarnation cannot be outbid).
        self.incarnation = self.incarnation.max(accused).saturating_add(1);
        self.counters.refutes += 1;
        self.apply_awareness(1);
        let a = self.local_alive();
        let inc = self.incarnation;
        if let Some(me) = self.nodes.get_mut(self.cfg.name.as_str()) {
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
    pub(super) fn announce_refutation(&mut self) {
        if std::mem::take(&mut self.refuted) && !self.leaving {
            let _ = self.announce(&Message::Alive(self.local_alive()).encode());
        }
    }

    pub(super) fn alive_node<D: Delegate>(
        &mut self,
        a: Alive,
        now: Duration,
        d: &mut D,
        _bootstrap: bool,
    ) {
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
        // One lookup decides the common case (an alive already known, at
        // no newer incarnation: dropped); the update looks up once more.
        let cur_incarnation = match self.nodes.get(a.node.as_str()) {
            None => {
                let name: Arc<str> = Arc::from(a.node.as_str());
                self.nodes.insert(
                    name.clone(),
                    Node {
                        name: name.clone(),
                        addr,
                        meta: Arc::from(a.meta.as_slice()),
                        vsn: vsn_of(&a.vsn).unwrap_or_default(),
                        incarnation: 0,
                        state: NodeState::Dead,
                        state_change: now,
                    },
                );
                self.has_gone = true;
                // Probe newcomers at a random point of the round.
                let pos = self.rng.below(self.probe_order.len() + 1);
                self.probe_order.insert(pos, name);
                0
            }
            Some(n) if n.addr != addr => {
                if !is_local && (n.state == NodeState::Left || n.state == NodeState::Dead) {
                    updates_node = true;
                    n.incarnation
                } else {
                    // Someone else claims this name (maybe ours): ignore the
                    // alive and let the delegate decide, as memberlist does.
                    tracing::warn!(node = %a.node, mine = %n.addr, theirs = %addr, "conflicting address, ignoring alive");
                    let existing = n.clone();
                    d.notify_conflict(&existing, addr, now);
                    return;
                }
            }
            Some(n) => n.incarnation,
        };
        if a.incarnation <= cur_incarnation && !is_local && !updates_node {
            return;
        }
        if a.incarnation < cur_incarnation && is_local {
            return;
        }
        self.suspicions.remove(&a.node);
        if is_local {
            if a.incarnation == self.incarnation && a.meta == self.cfg.meta && a.vsn == self.cfg.vsn
            {
                return;
            }
            self.refute(a.incarnation);
            return;
        }
        let n = self.nodes.get_mut(a.node.as_str()).expect("present");
        let old_state = n.state;
        let meta_changed = *n.meta != *a.meta;
        n.incarnation = a.incarnation;
        if meta_changed {
            n.meta = Arc::from(a.meta.as_slice());
        }
        n.addr = addr;
        if let Some(vsn) = vsn_of(&a.vsn) {
            n.vsn = vsn;
        }
        if n.vsn[1] >= 5 {
            self.crc_addrs.insert(addr);
        }
        if n.state != NodeState::Alive {
            n.state = NodeState::Alive;
            n.state_change = now;
        }
        let snapshot = n.clone();
        self.broadcast(&snapshot.name, Message::Alive(a));
        if old_state == NodeState::Dead || old_state == NodeState::Left {
            d.notify_join(&snapshot, now);
        } else if meta_changed {
            d.notify_update(&snapshot, now);
        }
    }

    pub(super) fn suspect_node<D: Delegate>(&mut self, s: Accuse, now: Duration, d: &mut D) {
        let Some(n) = self.nodes.get(s.node.as_str()) else {
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
                let node = s.node.clone();
                self.broadcast(&node, Message::Suspect(s));
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
        if let Some(n) = self.nodes.get_mut(node_name.as_str()) {
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

    pub(super) fn dead_node<D: Delegate>(&mut self, x: Accuse, now: Duration, d: &mut D) {
        let Some(n) = self.nodes.get(x.node.as_str()) else {
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
        let n = self.nodes.get_mut(name.as_str()).expect("present");
        n.incarnation = incarnation;
        n.state = if left {
            NodeState::Left
        } else {
            NodeState::Dead
        };
        n.state_change = now;
        let snapshot = n.clone();
        self.has_gone = true;
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
            .filter(|n| *n.name != **me && matches!(n.state, NodeState::Alive | NodeState::Suspect))
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
        if let Some(me) = self.nodes.get_mut(self.cfg.name.as_str()) {
            me.meta = Arc::from(meta.as_slice());
            me.incarnation = inc;
        }
        let a = self.local_alive();
        let name = self.cfg.name.clone();
        self.broadcast(&name, Message::Alive(a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::retransmit_limit;

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
}
