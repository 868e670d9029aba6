//! What time drives: the probe cycle (direct, indirect and TCP pings),
//! gossip rounds, periodic push-pull, suspicion and relay deadlines.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Core, Delegate, Node, Output, Probe};
use crate::wire::{self, Accuse, Message, NodeState, Ping};

impl Core {
    /// When the next gossip round is due (one of the times
    /// [`Core::next_deadline`] takes the earliest of).
    pub fn next_gossip_at(&self) -> Duration {
        self.next_gossip
    }

    /// The earliest time at which [`Core::tick`] has something to do, on
    /// the clock of the `now` passed in: a refutation to announce (at once),
    /// a suspicion timing out, a relayed ping to nack, the probe's timeout
    /// (indirect pings) or end (failure), the next probe, gossip round or
    /// push-pull, or the cleanup of dead nodes (once a second while there
    /// are any). Ticking earlier is harmless; after any input (packet,
    /// stream, join, leave, ...) the host reads it again. A time already
    /// past means "now".
    ///
    /// A gossip round counts only while something is queued (here or in
    /// `d`): memberlist's round with nothing to send sends nothing, and an
    /// idle agent woken five times a second for it spent most of its CPU
    /// on those wake-ups. The first round after an idle spell therefore
    /// goes out as soon as something is queued, not at the next multiple
    /// of the gossip interval (memberlist's ticker): up to one interval
    /// earlier; the rounds after it keep the interval.
    pub fn next_deadline<D: Delegate>(&self, d: &D) -> Duration {
        if self.refuted {
            return Duration::ZERO;
        }
        let mut at = if self.has_broadcasts(d) {
            self.next_gossip
        } else {
            Duration::MAX
        };
        for s in self.suspicions.values() {
            at = at.min(s.deadline);
        }
        for r in self.relays.values() {
            at = at.min(r.deadline);
        }
        if self.leaving {
            // tick only gossips (and times out the above) while leaving.
            return at;
        }
        match &self.probe {
            Some(p) => {
                // (Indirect pings need the target still known: without it
                // tick has nothing to send, and the probe just ends.)
                if !p.indirect_sent && self.nodes.contains_key(&*p.target) {
                    at = at.min(p.timeout_at);
                }
                at = at.min(p.end_at);
            }
            None => at = at.min(self.next_probe),
        }
        at = at.min(self.next_push_pull);
        if self.has_gone {
            at = at.min(self.next_cleanup);
        }
        at
    }

    /// Advances timers.
    pub fn tick<D: Delegate>(&mut self, now: Duration, d: &mut D) {
        // A refutation flagged by an input path that does not announce it.
        self.announce_refutation();
        // Suspicion timeouts.
        for node in super::expired(&self.suspicions, now, |s| s.deadline) {
            let Some(s) = self.suspicions.remove(&node) else {
                continue;
            };
            let x = Accuse {
                incarnation: s.incarnation,
                node,
                from: self.cfg.name.clone(),
            };
            self.dead_node(x, now, d);
        }
        // Relayed pings that got no ack: nack back.
        let late = super::expired(&self.relays, now, |r| r.deadline);
        for s in late {
            if let Some(r) = self.relays.remove(&s) {
                if r.nack {
                    let m = Message::Nack(wire::Nack { seq_no: r.orig_seq }).encode();
                    self.send_msg(r.requester, m, d);
                }
            }
        }
        if self.leaving {
            // Keep gossiping so our leave spreads, but stop probing.
            self.gossip_round(now, d);
            return;
        }
        self.probe_tick(now, d);
        self.gossip_round(now, d);
        if now >= self.next_push_pull {
            let others = self
                .nodes
                .values()
                .filter(|n| *n.name != *self.cfg.name && n.state == NodeState::Alive)
                .count();
            self.next_push_pull = now + push_pull_scale(self.cfg.push_pull_interval, others + 1);
            if others > 0 {
                let pick = self.rng.below(others);
                let to = self
                    .nodes
                    .values()
                    .filter(|n| *n.name != *self.cfg.name && n.state == NodeState::Alive)
                    .nth(pick)
                    .map(|n| n.addr);
                if let Some(to) = to {
                    let bytes = self.local_state_stream(false, d);
                    self.outputs.push(Output::PushPull {
                        to,
                        join: false,
                        bytes,
                    });
                }
            }
        }
        // Forget dead nodes after gossip_to_dead (memberlist's resetNodes);
        // a scan of the whole table, so once a second, not every tick.
        if now < self.next_cleanup {
            return;
        }
        self.next_cleanup = now + Duration::from_secs(1);
        let cutoff = self.cfg.gossip_to_dead;
        let me = self.cfg.name.clone();
        let mut left_behind = false;
        let gone: Vec<Arc<str>> = self
            .nodes
            .values()
            .filter(|n| matches!(n.state, NodeState::Dead | NodeState::Left) && *n.name != *me)
            .filter(|n| {
                let expired = now.saturating_sub(n.state_change) > cutoff;
                left_behind |= !expired;
                expired
            })
            .map(|n| n.name.clone())
            .collect();
        self.has_gone = left_behind;
        for g in gone {
            self.nodes.remove(&g);
            self.probe_order.retain(|n| *n != g);
        }
    }

    fn probe_tick<D: Delegate>(&mut self, now: Duration, d: &mut D) {
        if let Some(p) = self.probe.clone() {
            if !p.indirect_sent && now >= p.timeout_at {
                self.send_indirect(&p, d);
            }
            if now >= p.end_at {
                // Lifeguard: missing nacks hint at our own trouble.
                self.probe = None;
                self.counters.probe_failures += 1;
                let missed = p.expected_nacks.saturating_sub(p.nacks) as i32;
                self.apply_awareness(if p.expected_nacks > 0 { missed } else { 1 });
                if let Some(n) = self.nodes.get(&*p.target) {
                    if n.state == NodeState::Alive || n.state == NodeState::Suspect {
                        let s = Accuse {
                            incarnation: n.incarnation,
                            node: p.target.to_string(),
                            from: self.cfg.name.clone(),
                        };
                        self.suspect_node(s, now, d);
                    }
                }
            } else {
                return;
            }
        }
        if now < self.next_probe {
            return;
        }
        let interval = self.scale(self.cfg.probe_interval);
        self.next_probe = now + interval;
        let Some(target) = self.next_probe_target() else {
            return;
        };
        let addr = self.nodes[&target].addr;
        let seq = self.next_seq();
        self.counters.probes += 1;
        self.probe = Some(Probe {
            target: target.clone(),
            seq,
            sent_at: now,
            timeout_at: now + self.scale(self.cfg.probe_timeout),
            end_at: now + interval,
            indirect_sent: false,
            expected_nacks: 0,
            nacks: 0,
        });
        let ping = Message::Ping(Ping {
            seq_no: seq,
            node: target.to_string(),
            source_addr: wire::addr_bytes(self.cfg.addr.ip()),
            source_port: self.cfg.addr.port(),
            source_node: self.cfg.name.clone(),
        });
        self.send_msg(addr, ping.encode(), d);
    }

    fn next_probe_target(&mut self) -> Option<Arc<str>> {
        for _ in 0..=self.probe_order.len() {
            if self.probe_index >= self.probe_order.len() {
                self.probe_index = 0;
                let mut order: Vec<Arc<str>> = self
                    .nodes
                    .keys()
                    .filter(|n| ***n != *self.cfg.name)
                    .cloned()
                    .collect();
                self.rng.shuffle(&mut order);
                self.probe_order = order;
                if self.probe_order.is_empty() {
                    return None;
                }
            }
            let name = self.probe_order[self.probe_index].clone();
            self.probe_index += 1;
            if let Some(n) = self.nodes.get(&name) {
                if matches!(n.state, NodeState::Alive | NodeState::Suspect) {
                    return Some(name);
                }
            }
        }
        None
    }

    fn send_indirect<D: Delegate>(&mut self, p: &Probe, d: &mut D) {
        let Some(target) = self.nodes.get(&*p.target).cloned() else {
            return;
        };
        let mut peers: Vec<Node> = self
            .nodes
            .values()
            .filter(|n| {
                *n.name != *self.cfg.name && n.name != p.target && n.state == NodeState::Alive
            })
            .cloned()
            .collect();
        self.rng.shuffle(&mut peers);
        peers.truncate(self.cfg.indirect_checks);
        let mut expected = 0;
        for peer in &peers {
            let nack = peer.vsn.get(1).copied().unwrap_or(0) >= 4;
            expected += nack as usize;
            let m = Message::IndirectPing(wire::IndirectPing {
                seq_no: p.seq,
                target: wire::addr_bytes(target.addr.ip()),
                port: target.addr.port(),
                node: target.name.to_string(),
                nack,
                source_addr: wire::addr_bytes(self.cfg.addr.ip()),
                source_port: self.cfg.addr.port(),
                source_node: self.cfg.name.clone(),
            });
            self.send_msg(peer.addr, m.encode(), d);
        }
        if let Some(pr) = &mut self.probe {
            pr.indirect_sent = true;
            pr.expected_nacks = expected;
        }
        // TCP fallback toward peers that understand it (protocol >= 3).
        if target.vsn.get(1).copied().unwrap_or(0) >= 3 {
            let ping = Message::Ping(Ping {
                seq_no: p.seq,
                node: target.name.to_string(),
                source_addr: wire::addr_bytes(self.cfg.addr.ip()),
                source_port: self.cfg.addr.port(),
                source_node: self.cfg.name.clone(),
            });
            let nonce = self.nonce();
            let bytes = wire::encode_stream(&self.env, &ping.encode(), nonce);
            self.outputs.push(Output::TcpPing {
                to: target.addr,
                bytes,
            });
        }
    }

    fn has_broadcasts<D: Delegate>(&self, d: &D) -> bool {
        !self.queue.is_empty() || d.has_broadcasts()
    }

    /// The gossip round, when one is due and something is queued (see
    /// [`Core::next_deadline`]).
    fn gossip_round<D: Delegate>(&mut self, now: Duration, d: &mut D) {
        if now >= self.next_gossip && self.has_broadcasts(d) {
            self.next_gossip = now + self.cfg.gossip_interval;
            self.gossip(now, d);
        }
    }

    fn gossip<D: Delegate>(&mut self, now: Duration, d: &mut D) {
        let to_dead = self.cfg.gossip_to_dead;
        // As memberlist: live and suspect nodes, and nodes that died (not
        // left) recently, so a wrongly declared death can be refuted. A node
        // that left said goodbye: gossip sent to it is lost, and in a small
        // cluster that many leave at once, it would take a large share of
        // every round from the live members.
        let eligible = |n: &Node| match n.state {
            NodeState::Alive | NodeState::Suspect => true,
            NodeState::Dead => now.saturating_sub(n.state_change) <= to_dead,
            NodeState::Left => false,
        };
        let k = self.cfg.gossip_nodes;
        let mut cands: Vec<SocketAddr> = Vec::with_capacity(k);
        let total = self.probe_order.len();
        if total < k * 3 {
            let mut all: Vec<SocketAddr> = self
                .probe_order
                .iter()
                .filter_map(|name| self.nodes.get(name))
                .filter(|n| eligible(n))
                .map(|n| n.addr)
                .collect();
            self.rng.shuffle(&mut all);
            all.truncate(k);
            cands = all;
        } else {
            // Large clusters: sample like memberlist's kRandomNodes.
            for _ in 0..3 * total {
                if cands.len() >= k {
                    break;
                }
                let i = self.rng.below(total);
                let Some(n) = self.nodes.get(&self.probe_order[i]) else {
                    continue;
                };
                if eligible(n) && !cands.contains(&n.addr) {
                    cands.push(n.addr);
                }
            }
        }
        let mut avail = self.cfg.udp_buffer - 2;
        if !self.env.keys.is_empty() {
            avail -= 29;
        }
        for to in cands {
            let msgs = self.get_broadcasts(2, avail, d);
            if msgs.is_empty() {
                return;
            }
            if msgs.len() == 1 {
                self.send_raw(to, &msgs[0]);
            } else {
                self.send_raw(to, &wire::make_compound(&msgs));
            }
        }
    }
}

fn push_pull_scale(interval: Duration, n: usize) -> Duration {
    if n <= 32 {
        return interval;
    }
    let mult = ((n as f64).log2() - 32f64.log2()).ceil() + 1.0;
    interval * mult as u32
}
