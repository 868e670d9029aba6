//! Name conflict resolution (Serf's `_serf_conflict` query): asking the
//! cluster who owns our name, answering others, counting the vote.

use std::net::SocketAddr;
use std::time::Duration;

use super::queries::InternalQuery;
use super::state::State;
use super::Serf;
use crate::core::Node;
use crate::model::QueryReply;
use crate::wire;

/// Our `_serf_conflict` query and its tally: how many answered, and how
/// many of those know our name at our address.
#[derive(Debug, Clone)]
pub(super) struct ConflictVote {
    local_id: u64,
    other: SocketAddr,
    responses: usize,
    matching: usize,
}

impl ConflictVote {
    /// Whether our query `local_id` is this vote.
    pub(super) fn is_for(&self, local_id: u64) -> bool {
        self.local_id == local_id
    }
}

impl State {
    /// An alive message claims `existing`'s name from `other`: when the
    /// name is ours, a vote is started at the next tick.
    pub(super) fn name_conflict(&mut self, existing: &Node, other: SocketAddr) {
        if *existing.name != *self.name {
            tracing::warn!(node = %existing.name, mine = %existing.addr, theirs = %other,
                "name conflict: two nodes claim this name");
            return;
        }
        tracing::error!(node = %self.name, theirs = %other,
            "this node's name is claimed by another node; names must be unique (resolution: {})",
            self.cfg.name_conflict_resolution);
        if self.cfg.name_conflict_resolution && self.conflict_vote.is_none() {
            self.conflict_seen = Some(other);
        }
    }

    /// One member's answer to our `_serf_conflict` query: the address it
    /// knows for our name, if any; a vouch when that address is ours.
    pub(super) fn count_conflict_answer(&mut self, r: &wire::QueryResponse) {
        let Some(vote) = self.conflict_vote.as_mut() else {
            return;
        };
        match wire::decode_conflict_response(&r.payload) {
            Ok(vouched) => {
                vote.responses += 1;
                if vouched == Some((self.self_addr.ip(), self.self_addr.port())) {
                    vote.matching += 1;
                }
            }
            Err(e) => {
                tracing::warn!(from = %r.from, error = %e, "invalid conflict query response")
            }
        }
    }

    /// Our query `local_id` reached its deadline: the name-conflict vote
    /// is counted; any other query is done.
    pub(super) fn query_ended(&mut self, local_id: u64) {
        match self.conflict_vote.take() {
            Some(vote) if vote.is_for(local_id) => self.count_conflict_vote(vote),
            other => {
                self.conflict_vote = other;
                self.replies.push((local_id, QueryReply::Done));
            }
        }
    }

    /// Serf's rule: keep the name when a majority of the answers vouch
    /// for our address, give it up otherwise (no answer at all loses too).
    fn count_conflict_vote(&mut self, vote: ConflictVote) {
        let majority = vote.responses / 2 + 1;
        if vote.matching >= majority {
            tracing::info!(
                "majority in name conflict resolution [{} / {}]",
                vote.matching,
                vote.responses
            );
        } else {
            let why = format!(
                "node name '{}' is also claimed by {}, and the cluster sides with it \
                 ({} of {} members know this name at {}); names must be unique",
                self.name, vote.other, vote.matching, vote.responses, self.self_addr
            );
            tracing::warn!("minority in name conflict resolution: {why}");
            self.conflict_lost = Some(why);
        }
    }
}

impl Serf {
    /// Another node claimed our name: ask every member which address it
    /// knows for it (`_serf_conflict`), unless a vote is under way or lost.
    pub(super) fn start_conflict_vote(&mut self, now: Duration) {
        if let Some(other) = self.st.conflict_seen.take() {
            if self.st.conflict_vote.is_none() && self.st.conflict_lost.is_none() {
                let p = crate::model::QueryParams {
                    name: "_serf_conflict".to_string(),
                    payload: self.st.name.clone().into_bytes(),
                    ..Default::default()
                };
                match self.query(&p, now) {
                    Ok(local_id) => {
                        self.st.conflict_vote = Some(ConflictVote {
                            local_id,
                            other,
                            responses: 0,
                            matching: 0,
                        })
                    }
                    Err(e) => tracing::error!("cannot ask the cluster about our name: {e:#}"),
                }
            }
        }
    }

    /// Another node asks which address we know for a name it holds; a node
    /// never answers about its own name (the vote is about it).
    pub(super) fn answer_conflict(&mut self, q: InternalQuery) {
        let Ok(node) = std::str::from_utf8(&q.payload) else {
            return;
        };
        if node == self.st.name {
            return;
        }
        tracing::debug!(node, "conflict resolution query");
        let member = self.st.members.get(node).map(|m| m.member.to_member());
        let payload = wire::encode_conflict_response(member.as_ref());
        self.send_internal_answer(&q, payload);
    }

    /// Why this node must stop, once: another node won the vote for its
    /// name (Serf shuts down in that case).
    pub fn take_conflict_lost(&mut self) -> Option<String> {
        self.st.conflict_lost.take()
    }
}
