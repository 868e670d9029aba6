//! What comes in: datagrams and TCP messages decoded and dispatched, pings
//! answered, acks matched to probes, push-pull states merged.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Core, Delegate, Output, Relay};
use crate::wire::{self, Accuse, Alive, Message, NodeState, Ping, PushNodeState};

impl Core {
    /// Starts a join through `addr`: a push-pull with Join set.
    pub fn join<D: Delegate>(&mut self, addr: SocketAddr, d: &mut D) {
        let bytes = self.local_state_stream(true, d);
        self.outputs.push(Output::PushPull {
            to: addr,
            join: true,
            bytes,
        });
    }

    pub(super) fn local_state_stream<D: Delegate>(&mut self, join: bool, d: &mut D) -> Vec<u8> {
        let nodes = self
            .nodes
            .values()
            .map(|n| PushNodeState {
                name: n.name.to_string(),
                addr: wire::addr_bytes(n.addr.ip()),
                port: n.addr.port(),
                meta: n.meta.to_vec(),
                incarnation: n.incarnation,
                state: n.state,
                vsn: n.vsn.to_vec(),
            })
            .collect();
        let msg = Message::PushPull(wire::PushPull {
            join,
            nodes,
            user_state: d.local_state(join),
        });
        let nonce = self.nonce();
        wire::encode_stream(&self.env, &msg.encode(), nonce)
    }

    /// A UDP datagram arrived.
    pub fn handle_packet<D: Delegate>(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        now: Duration,
        d: &mut D,
    ) {
        let decoded = wire::decode_packet(&self.env.keys, bytes);
        self.handle_decoded_packet(from, decoded, now, d);
    }

    /// A UDP datagram arrived, already through [`wire::decode_packet`]
    /// (so a caller can decrypt, decompress and decode it without holding
    /// whatever guards this state).
    pub fn handle_decoded_packet<D: Delegate>(
        &mut self,
        from: SocketAddr,
        decoded: wire::Result<(Vec<Message>, usize)>,
        now: Duration,
        d: &mut D,
    ) {
        self.counters.packets_in += 1;
        let (msgs, dropped) = match decoded {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(%from, error = %e, "dropped packet");
                self.counters.packets_dropped += 1;
                return;
            }
        };
        self.counters.packets_dropped += dropped as u64;
        for m in msgs {
            self.handle_message(from, m, now, d);
        }
        self.announce_refutation();
    }

    fn handle_message<D: Delegate>(
        &mut self,
        from: SocketAddr,
        m: Message,
        now: Duration,
        d: &mut D,
    ) {
        match m {
            Message::Ping(p) => {
                if !p.node.is_empty() && p.node != self.cfg.name {
                    return;
                }
                let to = reply_addr(&p.source_addr, p.source_port).unwrap_or(from);
                let ack = Message::Ack(wire::Ack {
                    seq_no: p.seq_no,
                    payload: d.ack_payload(),
                });
                self.send_msg(to, ack.encode(), d);
            }
            Message::IndirectPing(ip) => {
                let Some(target) =
                    wire::bytes_addr(&ip.target).map(|a| SocketAddr::new(a, ip.port))
                else {
                    return;
                };
                let requester = reply_addr(&ip.source_addr, ip.source_port).unwrap_or(from);
                let seq = self.next_seq();
                self.relays.insert(
                    seq,
                    Relay {
                        orig_seq: ip.seq_no,
                        requester,
                        nack: ip.nack,
                        deadline: now + self.cfg.probe_timeout,
                    },
                );
                let ping = Message::Ping(Ping {
                    seq_no: seq,
                    node: ip.node,
                    source_addr: wire::addr_bytes(self.cfg.addr.ip()),
                    source_port: self.cfg.addr.port(),
                    source_node: self.cfg.name.clone(),
                });
                self.send_msg(target, ping.encode(), d);
            }
            Message::Ack(a) => self.handle_ack(a.seq_no, &a.payload, now, d),
            Message::Nack(wire::Nack { seq_no }) => {
                if let Some(p) = &mut self.probe {
                    if p.seq == seq_no {
                        p.nacks += 1;
                    }
                }
            }
            Message::Alive(a) => self.alive_node(a, now, d, false),
            Message::Suspect(s) => self.suspect_node(s, now, d),
            Message::Dead(x) => self.dead_node(x, now, d),
            Message::User(b) => d.notify_msg(&b, now),
            Message::PushPull(_) | Message::Err(_) => {
                self.counters.packets_dropped += 1;
            }
        }
    }

    fn handle_ack<D: Delegate>(&mut self, seq: u32, payload: &[u8], now: Duration, d: &mut D) {
        if let Some(r) = self.relays.remove(&seq) {
            let ack = Message::Ack(wire::Ack {
                seq_no: r.orig_seq,
                payload: Vec::new(),
            });
            self.send_msg(r.requester, ack.encode(), d);
            return;
        }
        if let Some(p) = &self.probe {
            if p.seq == seq {
                // Only an answer to the direct ping, in time, is a round
                // trip (memberlist's NotifyPingComplete).
                if !p.indirect_sent {
                    if let Some(node) = self.nodes.get(&*p.target) {
                        let rtt = now.saturating_sub(p.sent_at);
                        d.notify_ping_complete(node, rtt, payload);
                    }
                }
                self.probe = None;
                self.apply_awareness(-1);
            }
        }
    }

    /// A message arrived on an incoming TCP stream; returns the reply to
    /// write back, if any.
    pub fn handle_stream<D: Delegate>(
        &mut self,
        _from: SocketAddr,
        m: Message,
        now: Duration,
        d: &mut D,
    ) -> Option<Vec<u8>> {
        match m {
            Message::PushPull(pp) => {
                let reply = self.local_state_stream(pp.join, d);
                self.merge_remote(pp, now, d);
                self.announce_refutation();
                Some(reply)
            }
            Message::Ping(p) => {
                if !p.node.is_empty() && p.node != self.cfg.name {
                    return None;
                }
                let ack = Message::Ack(wire::Ack {
                    seq_no: p.seq_no,
                    payload: d.ack_payload(),
                });
                let nonce = self.nonce();
                Some(wire::encode_stream(&self.env, &ack.encode(), nonce))
            }
            Message::User(b) => {
                d.notify_msg(&b, now);
                None
            }
            _ => None,
        }
    }

    /// The answer to a TCP fallback ping: an ack for the current probe
    /// counts like a UDP one.
    pub fn handle_tcp_ping_reply<D: Delegate>(&mut self, m: Message, now: Duration, d: &mut D) {
        if let Message::Ack(a) = m {
            if self.relays.contains_key(&a.seq_no) {
                return;
            }
            self.handle_ack(a.seq_no, &a.payload, now, d);
        }
    }

    /// The reply to a push-pull we started.
    pub fn handle_push_pull_reply<D: Delegate>(
        &mut self,
        m: Message,
        now: Duration,
        d: &mut D,
    ) -> bool {
        match m {
            Message::PushPull(pp) => {
                self.merge_remote(pp, now, d);
                self.announce_refutation();
                true
            }
            _ => false,
        }
    }

    fn merge_remote<D: Delegate>(&mut self, pp: wire::PushPull, now: Duration, d: &mut D) {
        for r in pp.nodes {
            match r.state {
                NodeState::Alive => self.alive_node(
                    Alive {
                        incarnation: r.incarnation,
                        node: r.name,
                        addr: r.addr,
                        port: r.port,
                        meta: r.meta,
                        vsn: r.vsn,
                    },
                    now,
                    d,
                    false,
                ),
                NodeState::Left => self.dead_node(
                    Accuse {
                        incarnation: r.incarnation,
                        from: r.name.clone(),
                        node: r.name,
                    },
                    now,
                    d,
                ),
                // memberlist treats a remote "dead" as a suspicion only.
                NodeState::Dead | NodeState::Suspect => self.suspect_node(
                    Accuse {
                        incarnation: r.incarnation,
                        node: r.name,
                        from: self.cfg.name.clone(),
                    },
                    now,
                    d,
                ),
            }
        }
        if !pp.user_state.is_empty() {
            d.merge_remote_state(&pp.user_state, pp.join, now);
        }
    }
}

fn reply_addr(addr: &[u8], port: u16) -> Option<SocketAddr> {
    if port == 0 {
        return None;
    }
    wire::bytes_addr(addr).map(|ip| SocketAddr::new(ip, port))
}
