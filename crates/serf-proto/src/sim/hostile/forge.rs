//! What the hostile peers say, built from the input: names, addresses,
//! clocks, tags, memberlist and Serf messages, envelopes.

use super::*;

impl Harness<'_> {
    pub(super) fn name(&mut self) -> String {
        let s = match self.g.below(12) {
            0..=3 => format!("n{}", self.g.below(4)),
            4..=7 => format!("p{}", self.g.below(PHANTOMS)),
            8 => String::new(),
            _ => self.g.string(6),
        };
        self.names.insert(s.clone());
        s
    }

    /// A socket address: a real node's, a phantom's, an odd port, IPv6.
    pub(super) fn sock(&mut self) -> SocketAddr {
        match self.g.below(8) {
            0..=2 => sim_addr(self.node()),
            3..=5 => phantom_addr(self.g.below(PHANTOMS)),
            6 => SocketAddr::new(sim_addr(self.node()).ip(), self.g.u16()),
            _ => SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0,
                    0,
                    0,
                    0,
                    0,
                    self.g.u8() as u16,
                )),
                7946,
            ),
        }
    }

    /// Address bytes and port as they go in a message (sometimes garbage).
    pub(super) fn addr_port(&mut self) -> (Vec<u8>, u16) {
        if self.g.below(10) == 0 {
            let b = self.g.bytes(5);
            (b, self.g.u16())
        } else {
            let a = self.sock();
            (wire::addr_bytes(a.ip()), a.port())
        }
    }

    pub(super) fn ltime(&mut self, base: u64) -> u64 {
        let v = match self.g.below(8) {
            0 | 1 => self.g.below(8) as u64,
            2..=4 => base
                .saturating_sub(4)
                .saturating_add(self.g.below(12) as u64),
            5 => u64::MAX - self.g.below(4) as u64,
            6 => 1u64 << self.g.below(64),
            _ => self.g.u64(),
        };
        v.min(self.opts.max_ltime)
    }

    pub(super) fn incarnation(&mut self, base: u32) -> u32 {
        let v = match self.g.below(8) {
            0 | 1 => self.g.below(8) as u32,
            2..=4 => base
                .saturating_sub(2)
                .saturating_add(self.g.below(6) as u32),
            5 => u32::MAX - self.g.below(4) as u32,
            _ => self.g.u32(),
        };
        v.min(self.opts.max_incarnation)
    }

    pub(super) fn seq(&mut self) -> u32 {
        match self.g.below(4) {
            0 | 1 => self.g.below(16) as u32,
            2 => u32::MAX - self.g.below(2) as u32,
            _ => self.g.u32(),
        }
    }

    pub(super) fn clocks(&self, t: usize) -> (u64, u64, u64) {
        self.sim.nodes[t].serf.clocks()
    }

    pub(super) fn known_incarnation(&self, t: usize, name: &str) -> u32 {
        self.sim.nodes[t]
            .serf
            .core()
            .node(name)
            .map(|n| n.incarnation)
            .unwrap_or(0)
    }

    pub(super) fn tags(&mut self) -> Vec<(String, String)> {
        let n = self.g.below(4);
        (0..n)
            .map(|_| {
                let k = match self.g.below(4) {
                    0 => "role".to_string(),
                    1 => "id".to_string(),
                    2 => "dc".to_string(),
                    _ => self.g.string(6),
                };
                (k, self.g.string(8))
            })
            .collect()
    }

    pub(super) fn meta(&mut self) -> Vec<u8> {
        match self.g.below(4) {
            0 => Vec::new(),
            1 | 2 => {
                let t = self.tags();
                wire::encode_tags(&t)
            }
            _ => self.g.bytes(600),
        }
    }

    pub(super) fn vsn(&mut self) -> Vec<u8> {
        match self.g.below(4) {
            0 | 1 => vec![1, 5, 2, 2, 5, 5],
            2 => vec![1, 5, 2, 2, 5, 4],
            _ => self.g.bytes(8),
        }
    }

    pub(super) fn float(&mut self) -> f64 {
        match self.g.below(8) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => -1e300,
            3 => 0.0,
            4 => f64::from_bits(self.g.u64()),
            _ => (self.g.u16() as f64 - 32768.0) / 1000.0,
        }
    }

    /// An ack payload: none, garbage, or a coordinate (maybe absurd).
    pub(super) fn ack_payload(&mut self) -> Vec<u8> {
        match self.g.below(4) {
            0 => Vec::new(),
            1 => self.g.bytes(40),
            _ => {
                let mut c = Coordinate::default();
                if self.g.below(8) == 0 {
                    let d = self.g.below(12);
                    c.vec = vec![0.0; d];
                }
                if self.g.bool() {
                    for x in c.vec.iter_mut() {
                        *x = (self.g.u16() as f64 - 32768.0) / 1000.0;
                    }
                    let i = self.g.below(c.vec.len().max(1));
                    if let Some(x) = c.vec.get_mut(i) {
                        *x = self.float();
                    }
                }
                match self.g.below(4) {
                    0 => c.error = self.float(),
                    1 => c.adjustment = self.float(),
                    2 => c.height = self.float(),
                    _ => {}
                }
                c.encode_payload()
            }
        }
    }

    pub(super) fn accuse(&mut self, t: usize) -> Accuse {
        let node = self.name();
        let base = self.known_incarnation(t, &node);
        let from = if self.g.below(4) == 0 {
            node.clone()
        } else {
            self.name()
        };
        Accuse {
            incarnation: self.incarnation(base),
            node,
            from,
        }
    }

    pub(super) fn alive(&mut self, t: usize) -> Alive {
        let node = self.name();
        let base = self.known_incarnation(t, &node);
        let (addr, port) = self.addr_port();
        Alive {
            incarnation: self.incarnation(base),
            node,
            addr,
            port,
            meta: self.meta(),
            vsn: self.vsn(),
        }
    }

    pub(super) fn push_pull(&mut self, t: usize) -> PushPull {
        let n = self.g.below(5);
        let nodes = (0..n)
            .map(|_| {
                let name = self.name();
                let base = self.known_incarnation(t, &name);
                let (addr, port) = self.addr_port();
                PushNodeState {
                    name,
                    addr,
                    port,
                    meta: self.meta(),
                    incarnation: self.incarnation(base),
                    state: [
                        NodeState::Alive,
                        NodeState::Suspect,
                        NodeState::Dead,
                        NodeState::Left,
                    ][self.g.below(4)],
                    vsn: self.vsn(),
                }
            })
            .collect();
        let user_state = match self.g.below(4) {
            0 => Vec::new(),
            1 => self.g.bytes(32),
            _ => SerfMessage::PushPull(self.serf_push_pull(t)).encode(),
        };
        PushPull {
            join: self.g.bool(),
            nodes,
            user_state,
        }
    }

    pub(super) fn serf_push_pull(&mut self, t: usize) -> SerfPushPull {
        let c = self.clocks(t);
        let n = self.g.below(5);
        let status_ltimes = (0..n).map(|_| (self.name(), self.ltime(c.0))).collect();
        let n = self.g.below(3);
        let left_members = (0..n).map(|_| self.name()).collect();
        let n = self.g.below(3);
        let events = (0..n)
            .map(|_| UserEvents {
                ltime: self.ltime(c.1),
                events: (0..self.g.below(3))
                    .map(|_| UserEventRec {
                        name: self.event_name(),
                        payload: self.g.bytes(16),
                    })
                    .collect(),
            })
            .collect();
        SerfPushPull {
            ltime: self.ltime(c.0),
            status_ltimes,
            left_members,
            event_ltime: self.ltime(c.1),
            events,
            query_ltime: self.ltime(c.2),
        }
    }

    pub(super) fn event_name(&mut self) -> String {
        match self.g.below(3) {
            0 => "deploy".into(),
            1 => String::new(),
            _ => self.g.string(8),
        }
    }

    /// A key for a keyring request: one the cluster has, a new valid one,
    /// or one of a wrong size.
    pub(super) fn key(&mut self) -> Vec<u8> {
        match self.g.below(4) {
            0 | 1 if !self.keys.is_empty() => {
                let i = self.g.below(self.keys.len());
                self.keys[i].clone()
            }
            3 => self.g.bytes(40),
            _ => {
                let len = [16, 24, 32][self.g.below(3)];
                vec![self.g.u8(); len]
            }
        }
    }

    pub(super) fn query_name_payload(&mut self) -> (String, Vec<u8>) {
        const NAMES: [&str; 8] = [
            "q",
            "deploy",
            "_serf_ping",
            "_serf_conflict",
            "_serf_install-key",
            "_serf_use-key",
            "_serf_remove-key",
            "_serf_list-keys",
        ];
        let i = self.g.below(NAMES.len() + 1);
        let name = NAMES
            .get(i)
            .map(|s| s.to_string())
            .unwrap_or_else(|| self.g.string(10));
        let payload = if name.ends_with("-key") && self.g.below(4) != 0 {
            let key = self.key();
            // Only an encrypted cluster takes keys (a node without a
            // keyring refuses keyring requests).
            if !self.keys.is_empty()
                && matches!(key.len(), 16 | 24 | 32)
                && !self.keys.contains(&key)
            {
                self.keys.push(key.clone());
            }
            serf::encode_key_request(&key)
        } else if name == "_serf_conflict" && self.g.bool() {
            self.name().into_bytes()
        } else {
            self.g.bytes(32)
        };
        (name, payload)
    }

    pub(super) fn filter(&mut self) -> Vec<u8> {
        match self.g.below(4) {
            0 => {
                let n = self.g.below(3);
                let names = (0..n).map(|_| self.name()).collect();
                wire::QueryFilter::Nodes(names).encode()
            }
            1 => {
                const EXPRS: [&str; 5] = [".*", "^1$", "^$", "(", "[0-9]+"];
                let i = self.g.below(EXPRS.len() + 1);
                let expr = EXPRS
                    .get(i)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| self.g.string(8));
                let tag = ["id", "role", ""][self.g.below(3)].to_string();
                wire::QueryFilter::Tag { tag, expr }.encode()
            }
            2 => self.g.bytes(8),
            _ => Vec::new(),
        }
    }

    pub(super) fn query(&mut self, t: usize) -> wire::Query {
        let c = self.clocks(t);
        let (addr, port) = self.addr_port();
        let (name, payload) = self.query_name_payload();
        wire::Query {
            ltime: self.ltime(c.2),
            id: if self.g.bool() {
                self.g.below(4) as u32
            } else {
                self.g.u32()
            },
            addr,
            port,
            source_node: self.name(),
            filters: (0..self.g.below(3)).map(|_| self.filter()).collect(),
            flags: match self.g.below(4) {
                0 => 0,
                1 => wire::QUERY_FLAG_ACK,
                2 => wire::QUERY_FLAG_NO_BROADCAST,
                _ => self.g.u32(),
            },
            relay_factor: match self.g.below(4) {
                0 | 1 => 0,
                2 => self.g.below(4) as u8,
                _ => self.g.u8(),
            },
            timeout: match self.g.below(6) {
                0 => 0,
                1 => -(self.g.u32() as i64),
                2 => i64::MAX,
                3 => i64::MIN,
                _ => self.g.below(10_000) as i64 * 1_000_000,
            },
            name,
            payload,
        }
    }

    pub(super) fn query_response(&mut self) -> wire::QueryResponse {
        let queries: Vec<(u64, u32)> = self
            .inbox
            .iter()
            .filter_map(|(_, _, s)| match s {
                Seen::Query { ltime, id } => Some((*ltime, *id)),
                _ => None,
            })
            .collect();
        let (ltime, id) = if !queries.is_empty() && self.g.below(4) != 0 {
            queries[self.g.below(queries.len())]
        } else {
            (self.g.below(8) as u64, self.g.u32())
        };
        let from = self.name();
        let flags = match self.g.below(3) {
            0 => 0,
            1 => wire::QUERY_FLAG_ACK,
            _ => self.g.u32(),
        };
        let payload = match self.g.below(4) {
            0 => {
                let a = self.sock();
                let m = Member {
                    name: from.clone(),
                    addr: a.ip(),
                    port: a.port(),
                    tags: self.tags(),
                    status: MemberStatus::Alive,
                    protocol: [1, 5, 2],
                    delegate: [2, 5, 5],
                };
                wire::encode_conflict_response(Some(&m))
            }
            1 => wire::encode_conflict_response(None),
            _ => self.g.bytes(32),
        };
        wire::QueryResponse {
            ltime,
            id,
            from,
            flags,
            payload,
        }
    }

    /// An encoded Serf message (what rides in a memberlist user message).
    pub(super) fn serf_msg(&mut self, t: usize, depth: usize) -> Vec<u8> {
        let c = self.clocks(t);
        let m = match self.g.below(12) {
            0 | 1 => SerfMessage::Leave(wire::Leave {
                ltime: self.ltime(c.0),
                node: self.name(),
                prune: self.g.bool(),
            }),
            2 | 3 => SerfMessage::Join(wire::Join {
                ltime: self.ltime(c.0),
                node: self.name(),
            }),
            4 | 5 => SerfMessage::UserEvent(wire::UserEvent {
                ltime: self.ltime(c.1),
                name: self.event_name(),
                payload: self.g.bytes(64),
                cc: self.g.bool(),
            }),
            6 | 7 => SerfMessage::Query(self.query(t)),
            8 => SerfMessage::QueryResponse(self.query_response()),
            9 => SerfMessage::PushPull(self.serf_push_pull(t)),
            10 if depth < 2 => {
                let (dest_addr, dest_port) = self.addr_port();
                SerfMessage::Relay(wire::Relay {
                    dest_addr,
                    dest_port,
                    dest_name: self.name(),
                    inner: self.serf_msg(t, depth + 1),
                })
            }
            _ => {
                // Conflict / key messages and unknown types, then garbage.
                let mut v = vec![[6, 7, 8, self.g.u8()][self.g.below(4)]];
                v.extend(self.g.bytes(16));
                return v;
            }
        };
        m.encode()
    }

    /// A memberlist message, encoded (type byte first, no envelope).
    pub(super) fn message(&mut self, t: usize) -> Vec<u8> {
        let m = match self.g.below(13) {
            0 => {
                let (source_addr, source_port) = if self.g.bool() {
                    self.addr_port()
                } else {
                    (Vec::new(), 0)
                };
                Message::Ping(wire::Ping {
                    seq_no: self.seq(),
                    node: if self.g.bool() {
                        self.sim.nodes[t].serf.name().to_string()
                    } else {
                        self.name()
                    },
                    source_addr,
                    source_port,
                    source_node: self.name(),
                })
            }
            1 => {
                let (target, port) = self.addr_port();
                let (source_addr, source_port) = self.addr_port();
                Message::IndirectPing(wire::IndirectPing {
                    seq_no: self.seq(),
                    target,
                    port,
                    node: self.name(),
                    nack: self.g.bool(),
                    source_addr,
                    source_port,
                    source_node: self.name(),
                })
            }
            2 => Message::Ack(wire::Ack {
                seq_no: self.seq(),
                payload: self.ack_payload(),
            }),
            3 => Message::Nack(wire::Nack { seq_no: self.seq() }),
            4 | 5 => Message::Suspect(self.accuse(t)),
            6 | 7 => Message::Alive(self.alive(t)),
            8 => Message::Dead(self.accuse(t)),
            9 | 10 => Message::User(self.serf_msg(t, 0)),
            11 => match self.g.below(3) {
                0 => Message::PushPull(self.push_pull(t)),
                1 => Message::Err(self.g.string(16)),
                _ => return self.g.bytes(24),
            },
            _ => {
                // A message type with a garbage body.
                let mut v = vec![self.g.below(14) as u8];
                v.extend(self.g.bytes(24));
                return v;
            }
        };
        m.encode()
    }

    /// The keys a hostile envelope is sealed with.
    pub(super) fn envelope(&mut self, t: usize) -> Envelope {
        let keys = match self.g.below(8) {
            0 => Vec::new(),
            1 => vec![vec![7u8; 16]],
            _ => self.sim.nodes[t].serf.keys().to_vec(),
        };
        Envelope {
            keys,
            compress: self.g.bool(),
        }
    }

    pub(super) fn nonce(&mut self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&self.g.u64().to_le_bytes());
        n
    }
}
