//! The core's callbacks into the Serf layer ([`Delegate`]): Serf messages
//! dispatched, broadcasts handed out, coordinates from acks, and the
//! push-pull and node notices passed to their owners.

use std::net::SocketAddr;
use std::time::Duration;

use super::state::{Queue, State};
use crate::coordinate;
use crate::core::{Delegate, Node};
use crate::wire::{self, SerfMessage};

impl Delegate for State {
    fn ack_payload(&mut self) -> Vec<u8> {
        self.coord
            .as_ref()
            .map(|c| c.coordinate().encode_payload())
            .unwrap_or_default()
    }

    fn notify_ping_complete(&mut self, node: &Node, rtt: Duration, payload: &[u8]) {
        let Some(client) = self.coord.edit() else {
            return;
        };
        let other = match coordinate::Coordinate::decode_payload(payload) {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(node = %node.name, error = %e, "cannot read the coordinate in an ack");
                return;
            }
        };
        match client.update(&node.name, &other, rtt) {
            Ok(_) => {
                self.coord_cache.edit().insert(node.name.clone(), other);
            }
            Err(e) => tracing::trace!(node = %node.name, error = %e, "coordinate rejected"),
        }
    }

    fn notify_conflict(&mut self, existing: &Node, other: SocketAddr, _now: Duration) {
        self.name_conflict(existing, other);
    }

    fn notify_msg(&mut self, msg: &[u8], now: Duration) {
        let m = match SerfMessage::decode(msg) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "dropped serf message");
                return;
            }
        };
        let lim = self.retransmit_limit();
        let _ = lim;
        match m {
            SerfMessage::Leave(wire::Leave { ltime, node, prune }) => {
                if self.handle_leave_intent(ltime, &node, prune, now) {
                    self.enqueue(Queue::Intent, msg.to_vec());
                }
            }
            SerfMessage::Join(wire::Join { ltime, node }) => {
                if self.handle_join_intent(ltime, &node, now) {
                    self.enqueue(Queue::Intent, msg.to_vec());
                }
            }
            SerfMessage::UserEvent(wire::UserEvent {
                ltime,
                name,
                payload,
                cc,
            }) => {
                if self.handle_user_event(ltime, name, payload, cc, now) {
                    self.enqueue(Queue::Event, msg.to_vec());
                }
            }
            SerfMessage::Query(q) => {
                if self.handle_query(q, msg, now) {
                    self.enqueue(Queue::Query, msg.to_vec());
                }
            }
            SerfMessage::QueryResponse(r) => self.handle_query_response(r),
            SerfMessage::Relay(wire::Relay {
                dest_addr,
                dest_port,
                inner,
                ..
            }) => {
                if let Some(ip) = wire::bytes_addr(&dest_addr) {
                    self.sends.push((SocketAddr::new(ip, dest_port), inner));
                }
            }
            SerfMessage::PushPull(_) | SerfMessage::Other(_) => {}
        }
    }

    fn has_broadcasts(&self) -> bool {
        !(self.broadcasts.is_empty()
            && self.query_broadcasts.is_empty()
            && self.event_broadcasts.is_empty())
    }

    fn get_broadcasts(&mut self, overhead: usize, limit: usize) -> Vec<Vec<u8>> {
        let lim = self.retransmit_limit();
        let mut out = self.broadcasts.get(overhead, limit, lim);
        let mut used: usize = out.iter().map(|m| m.len() + overhead).sum();
        let q = self
            .query_broadcasts
            .get(overhead, limit.saturating_sub(used), lim);
        used += q.iter().map(|m| m.len() + overhead).sum::<usize>();
        out.extend(q);
        out.extend(
            self.event_broadcasts
                .get(overhead, limit.saturating_sub(used), lim),
        );
        out
    }

    fn local_state(&mut self, _join: bool) -> Vec<u8> {
        self.push_pull_state()
    }

    fn merge_remote_state(&mut self, buf: &[u8], join: bool, now: Duration) {
        self.merge_push_pull(buf, join, now);
    }

    fn notify_join(&mut self, node: &Node, now: Duration) {
        self.node_joined(node, now);
    }

    fn notify_leave(&mut self, node: &Node, now: Duration) {
        self.node_left(node, now);
    }

    fn notify_update(&mut self, node: &Node, now: Duration) {
        self.node_updated(node, now);
    }
}
