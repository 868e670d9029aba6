//! Queries: sending them, receiving them (dedup buffer, node and tag
//! filters, acks), responses and relays, deadlines, and the dispatch of
//! Serf's internal `_serf_*` queries.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::state::{Queue, State};
use super::{Serf, MAX_EVENTS_PER_LTIME};
use crate::model::{Event, IncomingQuery, MemberStatus, QueryReply};
use crate::wire::{self, SerfMessage};

#[derive(Debug, Clone)]
pub(super) struct SeenQuery {
    ltime: u64,
    ids: Vec<u32>,
}

/// A query received, kept until it is answered or times out.
#[derive(Debug, Clone)]
pub(super) struct PendingResponse {
    ltime: u64,
    id: u32,
    to: SocketAddr,
    deadline: Duration,
    relay_factor: u8,
}

/// A query this node sent, collecting answers.
#[derive(Debug, Clone)]
pub(super) struct OutgoingQuery {
    local_id: u64,
    deadline: Duration,
    acks: HashSet<String>,
    responses: HashSet<String>,
}

/// An internal (`_serf_*`) query, answered once the core is reachable
/// (the keyring lives there).
#[derive(Debug, Clone)]
pub(super) struct InternalQuery {
    pub(super) name: String,
    pub(super) payload: Vec<u8>,
    pub(super) to: SocketAddr,
    pub(super) source_node: String,
    pub(super) ltime: u64,
    pub(super) id: u32,
    pub(super) relay_factor: u8,
}

impl State {
    pub(super) fn should_process(&self, filters: &[Vec<u8>]) -> bool {
        for f in filters {
            match wire::QueryFilter::decode(f) {
                Ok(wire::QueryFilter::Nodes(names)) => {
                    if !names.contains(&self.name) {
                        return false;
                    }
                }
                Ok(wire::QueryFilter::Tag { tag, expr }) => {
                    let Ok(re) = regex_lite::Regex::new(&expr) else {
                        return false;
                    };
                    let val = self
                        .cfg
                        .tags
                        .iter()
                        .find(|(k, _)| *k == tag)
                        .map(|(_, v)| v.as_str());
                    if !re.is_match(val.unwrap_or("")) {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    }

    pub(super) fn handle_query(&mut self, q: wire::Query, raw: &[u8], now: Duration) -> bool {
        self.query_clock.witness(q.ltime);
        let cur = self.query_clock.time();
        let size = self.query_buffer.len() as u64;
        if cur > size && q.ltime < cur - size {
            return false;
        }
        let idx = (q.ltime % size) as usize;
        match &mut self.query_buffer[idx] {
            Some(seen) if seen.ltime == q.ltime => {
                if seen.ids.contains(&q.id) {
                    return false;
                }
                if seen.ids.len() >= MAX_EVENTS_PER_LTIME {
                    self.refused_at_ltime("query", &q.name, q.ltime);
                    return false;
                }
                seen.ids.push(q.id);
            }
            slot => {
                *slot = Some(SeenQuery {
                    ltime: q.ltime,
                    ids: vec![q.id],
                })
            }
        }
        let _ = raw;
        let rebroadcast = q.flags & wire::QUERY_FLAG_NO_BROADCAST == 0;
        if !self.should_process(&q.filters) {
            return rebroadcast;
        }
        let Some(to) = wire::bytes_addr(&q.addr).map(|ip| SocketAddr::new(ip, q.port)) else {
            return rebroadcast;
        };
        if q.flags & wire::QUERY_FLAG_ACK != 0 {
            let ack = SerfMessage::QueryResponse(wire::QueryResponse {
                ltime: q.ltime,
                id: q.id,
                from: self.name.clone(),
                flags: wire::QUERY_FLAG_ACK,
                payload: Vec::new(),
            })
            .encode();
            self.send_with_relay(to, &q.source_node, ack, q.relay_factor);
        }
        if q.name.starts_with("_serf_") {
            self.internal.push(InternalQuery {
                name: q.name,
                payload: q.payload,
                to,
                source_node: q.source_node,
                ltime: q.ltime,
                id: q.id,
                relay_factor: q.relay_factor,
            });
            return rebroadcast;
        }
        let local = self.next_local_id;
        self.next_local_id += 1;
        let timeout = Duration::from_nanos(q.timeout.max(0) as u64);
        self.pending.insert(
            local,
            PendingResponse {
                ltime: q.ltime,
                id: q.id,
                to,
                deadline: now + timeout,
                relay_factor: q.relay_factor,
            },
        );
        self.events.push(Event::Query(IncomingQuery {
            id: local,
            ltime: q.ltime,
            name: q.name,
            payload: q.payload,
        }));
        rebroadcast
    }

    /// Sends a response directly and through `relay` random members.
    pub(super) fn send_with_relay(
        &mut self,
        to: SocketAddr,
        dest_name: &str,
        msg: Vec<u8>,
        relay: u8,
    ) {
        self.sends.push((to, msg.clone()));
        if relay == 0 {
            return;
        }
        let mut peers: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|m| m.member.status == MemberStatus::Alive && *m.member.name != *self.name)
            .map(|m| SocketAddr::new(m.member.addr, m.member.port))
            .filter(|a| *a != to)
            .collect();
        self.rng.shuffle(&mut peers);
        peers.truncate(relay as usize);
        for p in peers {
            let relayed = SerfMessage::Relay(wire::Relay {
                dest_addr: wire::addr_bytes(to.ip()),
                dest_port: to.port(),
                dest_name: dest_name.to_string(),
                inner: msg.clone(),
            });
            self.sends.push((p, relayed.encode()));
        }
    }

    pub(super) fn handle_query_response(&mut self, r: wire::QueryResponse) {
        let Some(q) = self.outgoing.get_mut(&(r.ltime, r.id)) else {
            return;
        };
        let local = q.local_id;
        if self.conflict_vote.as_ref().is_some_and(|v| v.is_for(local)) {
            if r.flags & wire::QUERY_FLAG_ACK == 0 && q.responses.insert(r.from.clone()) {
                self.count_conflict_answer(&r);
            }
            return;
        }
        if r.flags & wire::QUERY_FLAG_ACK != 0 {
            if q.acks.insert(r.from.clone()) {
                self.replies.push((local, QueryReply::Ack { from: r.from }));
            }
        } else if q.responses.insert(r.from.clone()) {
            self.replies.push((
                local,
                QueryReply::Response {
                    from: r.from,
                    payload: r.payload,
                },
            ));
        }
    }
}

impl State {
    /// When queries fall due: ours at their deadline (`Done`), received
    /// ones once strictly past theirs (forgotten; `respond` allows the
    /// deadline itself).
    pub(super) fn query_deadlines(&self) -> impl Iterator<Item = Duration> + '_ {
        let ours = self.outgoing.values().map(|q| q.deadline);
        let received = self.pending.values();
        ours.chain(received.map(|p| p.deadline.saturating_add(Duration::from_nanos(1))))
    }

    /// Ends our queries whose deadline has come (a name-conflict vote is
    /// counted) and forgets the received ones past theirs.
    pub(super) fn expire_queries(&mut self, now: Duration) {
        for k in crate::core::expired(&self.outgoing, now, |q| q.deadline) {
            if let Some(q) = self.outgoing.remove(&k) {
                self.query_ended(q.local_id);
            }
        }
        self.pending.retain(|_, p| now <= p.deadline);
    }
}

impl Serf {
    /// Sends a query; answers come out of [`Serf::drain_query_replies`]
    /// with the returned local id, then `Done` at the deadline.
    /// Refused, as by Serf, when the encoded query exceeds the configured
    /// limit.
    pub fn query(&mut self, p: &crate::model::QueryParams, now: Duration) -> anyhow::Result<u64> {
        let ltime = self.st.query_clock.time();
        let id = self.st.rng.next_u64() as u32;
        let mut filters = Vec::new();
        if !p.filter_nodes.is_empty() {
            filters.push(wire::QueryFilter::Nodes(p.filter_nodes.clone()).encode());
        }
        for (tag, expr) in &p.filter_tags {
            let f = wire::QueryFilter::Tag {
                tag: tag.clone(),
                expr: expr.clone(),
            };
            filters.push(f.encode());
        }
        let timeout = if p.timeout.is_zero() {
            let n = self.st.members.len().max(1);
            let scale = ((n + 1) as f64).log10().ceil().max(1.0) as u32;
            self.st.cfg.core.gossip_interval * self.st.cfg.query_timeout_mult * scale
        } else {
            p.timeout
        };
        let q = wire::Query {
            ltime,
            id,
            addr: wire::addr_bytes(self.st.self_addr.ip()),
            port: self.st.self_addr.port(),
            source_node: self.st.name.clone(),
            filters,
            flags: if p.request_ack {
                wire::QUERY_FLAG_ACK
            } else {
                0
            },
            relay_factor: p.relay_factor,
            timeout: timeout.as_nanos() as i64,
            name: p.name.clone(),
            payload: p.payload.clone(),
        };
        let raw = SerfMessage::Query(q.clone()).encode();
        let limit = self.st.cfg.query_size_limit;
        anyhow::ensure!(raw.len() <= limit, "query exceeds limit of {limit} bytes");
        self.st.query_clock.increment();
        let local = self.st.next_local_id;
        self.st.next_local_id += 1;
        self.st.outgoing.insert(
            (ltime, id),
            OutgoingQuery {
                local_id: local,
                deadline: now + timeout,
                acks: HashSet::new(),
                responses: HashSet::new(),
            },
        );
        // We process our own query like any member.
        self.st.handle_query(q, &raw, now);
        self.st.enqueue(Queue::Query, raw);
        self.after_core();
        Ok(local)
    }

    /// Answers a query received earlier (by its local id).
    pub fn respond(
        &mut self,
        local_id: u64,
        payload: Vec<u8>,
        now: Duration,
    ) -> anyhow::Result<()> {
        let Some(p) = self.st.pending.remove(&local_id) else {
            anyhow::bail!("no pending query with id {local_id}");
        };
        if now > p.deadline {
            anyhow::bail!("query {local_id} timed out");
        }
        let msg = SerfMessage::QueryResponse(wire::QueryResponse {
            ltime: p.ltime,
            id: p.id,
            from: self.st.name.clone(),
            flags: 0,
            payload,
        })
        .encode();
        // Too big: refused as by Serf, and the query stays answerable.
        let limit = self.st.cfg.query_response_size_limit;
        if msg.len() > limit {
            self.st.pending.insert(local_id, p);
            anyhow::bail!("response exceeds limit of {limit} bytes");
        }
        let name = String::new();
        self.st.send_with_relay(p.to, &name, msg, p.relay_factor);
        self.after_core();
        Ok(())
    }

    pub fn drain_query_replies(&mut self) -> Vec<(u64, QueryReply)> {
        std::mem::take(&mut self.st.replies)
    }

    /// Serf's internal queries: `conflict` (what we know of a disputed
    /// name) and the keyring ones (`install-key`, `use-key`, `remove-key`,
    /// `list-keys`); `ping` needs only the ack sent on receipt.
    pub(super) fn answer_internal(&mut self, q: InternalQuery) {
        let op = q.name.trim_start_matches("_serf_");
        if op == "conflict" {
            self.answer_conflict(q);
            return;
        }
        if !matches!(op, "install-key" | "use-key" | "remove-key" | "list-keys") {
            return;
        }
        self.answer_keyring(q);
    }

    /// Sends this node's response to an internal query (relayed as asked).
    pub(super) fn send_internal_answer(&mut self, q: &InternalQuery, payload: Vec<u8>) {
        let msg = SerfMessage::QueryResponse(wire::QueryResponse {
            ltime: q.ltime,
            id: q.id,
            from: self.st.name.clone(),
            flags: 0,
            payload,
        })
        .encode();
        self.st
            .send_with_relay(q.to, &q.source_node, msg, q.relay_factor);
        for (to, m) in std::mem::take(&mut self.st.sends) {
            self.core.send_user(to, &m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serf::testutil::*;

    #[test]
    fn query_ids_kept_per_lamport_time_are_bounded() {
        let mut s = serf();
        deliver(&mut s, (0..1000).map(|id| query(7, id)));
        let slot = s.st.query_buffer.iter().flatten().find(|q| q.ltime == 7);
        assert_eq!(slot.map(|q| q.ids.len()), Some(MAX_EVENTS_PER_LTIME));
        let queries = s
            .drain_events()
            .into_iter()
            .filter(|e| matches!(e, Event::Query(_)))
            .count();
        assert_eq!(queries, MAX_EVENTS_PER_LTIME);
    }
}
