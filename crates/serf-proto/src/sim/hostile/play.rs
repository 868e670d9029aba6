//! Playing the input on the cluster: deliveries of forged packets and
//! streams, the next operation, the phantoms' answers to what they saw.

use super::*;

impl Harness<'_> {
    /// A datagram to node `t` from `from`, of one or more messages.
    pub(super) fn deliver_packet(&mut self, t: usize, from: SocketAddr, parts: Vec<Vec<u8>>) {
        let msg = if parts.len() == 1 {
            parts.into_iter().next().expect("one")
        } else {
            wire::make_compound(&parts)
        };
        let env = self.envelope(t);
        let crc = self.g.bool();
        let nonce = self.nonce();
        let bytes = wire::encode_packet(&env, &msg, crc, nonce);
        if self.sim.nodes[t].crashed {
            return;
        }
        self.log(|| {
            let keys = self.sim.nodes[t].serf.keys();
            format!(
                "packet to n{t} from {from}: {:?}",
                wire::decode_packet(keys, &bytes)
            )
        });
        let now = self.sim.now();
        self.sim.nodes[t].serf.handle_packet(from, &bytes, now);
        self.sim.send_now(t);
    }

    /// A stream message for node `t`, sealed and parsed as the agent does;
    /// `None` when the node would not read it.
    pub(super) fn stream_msg(&mut self, t: usize, m: Vec<u8>) -> Option<Message> {
        let env = self.envelope(t);
        let nonce = self.nonce();
        let bytes = wire::encode_stream(&env, &m, nonce);
        let keys = self.sim.nodes[t].serf.keys().to_vec();
        match wire::parse_stream(&keys, &bytes) {
            Ok(Some((m, _))) => Some(m),
            _ => None,
        }
    }

    pub(super) fn op(&mut self) {
        let now = self.sim.now();
        let code = self.g.below(24);
        if !matches!(code, 0..=8) {
            self.log(|| format!("op {code} (see Harness::op)"));
        }
        match code {
            // A datagram from a hostile or spoofed peer.
            0..=5 => {
                let t = self.node();
                let from = self.sock();
                let k = if self.g.below(4) == 0 {
                    2 + self.g.below(4)
                } else {
                    1
                };
                let parts = (0..k).map(|_| self.message(t)).collect();
                self.deliver_packet(t, from, parts);
            }
            // An incoming TCP stream.
            6..=8 => {
                let t = self.node();
                let from = self.sock();
                let m = match self.g.below(5) {
                    0 | 1 => Message::PushPull(self.push_pull(t)).encode(),
                    2 => wire::user_stream_msg(&self.serf_msg(t, 0)),
                    3 => Message::Ping(wire::Ping {
                        seq_no: self.seq(),
                        node: self.name(),
                        ..Default::default()
                    })
                    .encode(),
                    _ => self.message(t),
                };
                if self.sim.nodes[t].crashed {
                    return;
                }
                let Some(m) = self.stream_msg(t, m) else {
                    return;
                };
                self.log(|| format!("stream to n{t} from {from}: {m:?}"));
                let reply = self.sim.nodes[t].serf.handle_stream(from, m, now);
                if let Some(r) = reply {
                    match wire::parse_stream(&self.keys, &r) {
                        Ok(Some((_, used))) if used == r.len() => {}
                        other => panic!("node {t}'s stream reply does not decode: {other:?}"),
                    }
                }
                self.sim.send_now(t);
            }
            // A phantom answers something it was sent.
            9 | 10 => self.answer(),
            // Time passes.
            11..=13 => {
                let d = match self.g.below(4) {
                    0 => Duration::from_millis(1 + self.g.below(50) as u64),
                    1 => Duration::from_millis(50),
                    2 => Duration::from_millis(self.g.below(1000) as u64),
                    _ => Duration::from_millis(self.g.below(8000) as u64),
                };
                let left = self.opts.max_time.saturating_sub(self.sim.now());
                self.sim.run_for(d.min(left));
            }
            14 => {
                let (i, j) = (self.node(), self.node());
                if !self.sim.nodes[i].crashed {
                    self.sim.join(i, j);
                }
            }
            15 => {
                let i = self.node();
                if self.sim.nodes[i].crashed {
                    return;
                }
                self.left[i] = true;
                self.sim.nodes[i].serf.leave_intent(now);
                self.sim.send_now(i);
                if self.g.bool() {
                    let d = Duration::from_millis(self.g.below(500) as u64);
                    let left = self.opts.max_time.saturating_sub(self.sim.now());
                    self.sim.run_for(d.min(left));
                    let now = self.sim.now();
                    self.sim.nodes[i].serf.leave_memberlist(now);
                    self.sim.send_now(i);
                }
            }
            16 => {
                let i = self.node();
                let name = self.event_name();
                let payload = self.g.bytes(64);
                let cc = self.g.bool();
                let _ = self.sim.nodes[i].serf.user_event(&name, payload, cc, now);
                self.sim.send_now(i);
            }
            17 => {
                let i = self.node();
                let (name, payload) = self.query_name_payload();
                let mut p = QueryParams {
                    name,
                    payload,
                    request_ack: self.g.bool(),
                    relay_factor: self.g.below(3) as u8,
                    timeout: match self.g.below(3) {
                        0 => Duration::ZERO,
                        1 => Duration::from_millis(self.g.below(5000) as u64),
                        _ => Duration::from_nanos(self.g.u64() >> 1),
                    },
                    ..Default::default()
                };
                if self.g.below(4) == 0 {
                    p.filter_nodes = vec![self.name()];
                }
                if self.g.below(4) == 0 {
                    p.filter_tags.insert("id".into(), self.g.string(4));
                }
                let _ = self.sim.nodes[i].serf.query(&p, now);
                self.sim.send_now(i);
            }
            18 => {
                // Answer a query a node received (or a made-up id).
                let i = self.node();
                let ids: Vec<u64> = self.sim.nodes[i]
                    .events
                    .iter()
                    .filter_map(|e| match e {
                        Event::Query(q) => Some(q.id),
                        _ => None,
                    })
                    .collect();
                let id = if !ids.is_empty() && self.g.below(4) != 0 {
                    ids[self.g.below(ids.len())]
                } else {
                    self.g.below(8) as u64
                };
                let payload = self.g.bytes(1100);
                let _ = self.sim.nodes[i].serf.respond(id, payload, now);
                self.sim.send_now(i);
            }
            19 => {
                let i = self.node();
                let name = self.name();
                let prune = self.g.bool();
                self.sim.nodes[i].serf.force_leave(&name, prune, now);
                self.sim.send_now(i);
            }
            20 => {
                let i = self.node();
                let tags = self.tags();
                let _ = self.sim.nodes[i].serf.set_tags(tags, now);
                self.sim.send_now(i);
            }
            21 => {
                let i = self.node();
                if self.g.bool() {
                    self.sim.crash(i);
                } else {
                    self.sim.restart(i);
                    self.last[i] = Last::default();
                    self.left[i] = false;
                    let j = self.node();
                    if i != j {
                        self.sim.join(i, j);
                    }
                }
            }
            22 => match self.g.below(3) {
                0 => {
                    let i = self.node();
                    let grp = self.g.below(2) as u32;
                    self.sim.set_group(i, grp);
                }
                1 => self.sim.heal(),
                _ => self.sim.loss = [0.0, 0.1, 0.5][self.g.below(3)],
            },
            _ => {
                // Clocks restored from a (maybe corrupt) snapshot.
                let i = self.node();
                let c = self.clocks(i);
                let (a, b, q) = (self.ltime(c.0), self.ltime(c.1), self.ltime(c.2));
                self.sim.nodes[i].serf.restore_clocks(a, b, q);
            }
        }
    }

    /// A phantom answers one thing from its inbox.
    pub(super) fn answer(&mut self) {
        if self.inbox.is_empty() {
            return;
        }
        let k = self.g.below(self.inbox.len());
        let (i, phantom, seen) = self.inbox[k].clone();
        if self.sim.nodes[i].crashed {
            return;
        }
        let now = self.sim.now();
        match seen {
            Seen::Ping { seq } => {
                let m = if self.g.below(4) == 0 {
                    Message::Nack(wire::Nack { seq_no: seq })
                } else {
                    Message::Ack(wire::Ack {
                        seq_no: seq,
                        payload: self.ack_payload(),
                    })
                };
                self.deliver_packet(i, phantom, vec![m.encode()]);
            }
            Seen::Query { .. } => {
                let mut r = self.query_response();
                if let Seen::Query { ltime, id } = seen {
                    (r.ltime, r.id) = (ltime, id);
                }
                let m = Message::User(SerfMessage::QueryResponse(r).encode()).encode();
                self.deliver_packet(i, phantom, vec![m]);
            }
            Seen::PushPull => {
                let m = if self.g.below(8) == 0 {
                    self.message(i)
                } else {
                    Message::PushPull(self.push_pull(i)).encode()
                };
                if let Some(m) = self.stream_msg(i, m) {
                    self.log(|| format!("push-pull reply to n{i} from {phantom}: {m:?}"));
                    self.sim.nodes[i].serf.handle_push_pull_reply(m, now);
                    self.sim.send_now(i);
                }
            }
            Seen::TcpPing { seq } => {
                let m = Message::Ack(wire::Ack {
                    seq_no: if self.g.below(4) == 0 {
                        self.seq()
                    } else {
                        seq
                    },
                    payload: self.ack_payload(),
                })
                .encode();
                if let Some(m) = self.stream_msg(i, m) {
                    self.log(|| format!("TCP ping reply to n{i} from {phantom}: {m:?}"));
                    self.sim.nodes[i].serf.handle_tcp_ping_reply(m, now);
                    self.sim.send_now(i);
                }
            }
        }
    }

    /// Reads what the nodes sent to phantoms into the inbox; all of it
    /// must decode.
    pub(super) fn collect_tapped(&mut self) {
        for (i, o) in std::mem::take(&mut self.sim.tapped) {
            match o {
                Output::Packet { to, bytes } => {
                    let (msgs, dropped) = match wire::decode_packet(&self.keys, &bytes) {
                        Ok(x) => x,
                        Err(e) => panic!("node {i} sent a packet that does not decode: {e}"),
                    };
                    assert_eq!(
                        dropped, 0,
                        "node {i} sent a packet with bad parts: {msgs:?}"
                    );
                    for m in msgs {
                        match m {
                            Message::Ping(p) => {
                                self.inbox.push((i, to, Seen::Ping { seq: p.seq_no }))
                            }
                            Message::IndirectPing(p) => {
                                self.inbox.push((i, to, Seen::Ping { seq: p.seq_no }))
                            }
                            Message::User(b) => {
                                if let Ok(SerfMessage::Query(q)) = SerfMessage::decode(&b) {
                                    self.inbox.push((
                                        i,
                                        to,
                                        Seen::Query {
                                            ltime: q.ltime,
                                            id: q.id,
                                        },
                                    ));
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Output::PushPull { to, bytes, .. } => {
                    self.check_stream(i, &bytes);
                    self.inbox.push((i, to, Seen::PushPull));
                }
                Output::TcpPing { to, bytes } => {
                    if let Some(Message::Ping(p)) = self.check_stream(i, &bytes) {
                        self.inbox.push((i, to, Seen::TcpPing { seq: p.seq_no }));
                    }
                }
                Output::Stream { bytes, .. } => {
                    self.check_stream(i, &bytes);
                }
            }
        }
        if self.inbox.len() > 32 {
            let extra = self.inbox.len() - 32;
            self.inbox.drain(..extra);
        }
    }
}
