//! The piggybacked broadcast queue (memberlist's TransmitLimitedQueue) and
//! its retransmit limit.

use std::collections::{BTreeMap, HashMap};

/// memberlist's TransmitLimitedQueue: messages go out piggybacked until
/// each was sent `limit` times; fewest-sent first.
///
/// Kept ordered as memberlist keeps its btree (fewest transmits first,
/// newest first among equals), so a take walks the front of the queue
/// instead of sorting all of it, and a prune drops from the back.
#[derive(Debug, Default, Clone)]
pub struct BroadcastQueue {
    items: BTreeMap<QueueKey, Broadcast>,
    /// Which node names have a message queued (name → its key), so queueing
    /// about a node finds the message it replaces without a scan: with a
    /// thousand members that scan dominated the run time.
    named: HashMap<String, QueueKey>,
    seq: u64,
}

/// (transmits, newest first): the queue's order.
type QueueKey = (u32, std::cmp::Reverse<u64>);

#[derive(Debug, Clone)]
struct Broadcast {
    /// Messages about the same node replace each other.
    name: Option<String>,
    msg: Vec<u8>,
}

/// Broadcasts taken for one packet: a compound message counts its parts in
/// one byte (memberlist: at most 255), one of them the message they ride on.
const MAX_PIGGYBACKED: usize = 254;

impl BroadcastQueue {
    pub fn queue(&mut self, name: Option<String>, msg: Vec<u8>) {
        self.seq += 1;
        let key = (0, std::cmp::Reverse(self.seq));
        if let Some(n) = &name {
            if let Some(old) = self.named.insert(n.clone(), key) {
                self.items.remove(&old);
            }
        }
        self.items.insert(key, Broadcast { name, msg });
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// memberlist's `Prune`: keeps at most `max` messages, dropping the
    /// most sent, then the oldest; returns how many went.
    pub fn prune(&mut self, max: usize) -> usize {
        let mut dropped = 0;
        while self.items.len() > max {
            let Some((_, b)) = self.items.pop_last() else {
                break;
            };
            if let Some(n) = &b.name {
                self.named.remove(n);
            }
            dropped += 1;
        }
        dropped
    }
    pub fn get(&mut self, overhead: usize, limit: usize, max_transmits: u32) -> Vec<Vec<u8>> {
        // Fewest transmits first, newest first among equals: the map's order.
        let mut used = 0;
        let mut taken = Vec::new();
        for (key, b) in &self.items {
            // Nothing fits in what is left (a message is at least a byte).
            if taken.len() >= MAX_PIGGYBACKED || limit.saturating_sub(used) <= overhead {
                break;
            }
            let cost = b.msg.len() + overhead;
            if used + cost > limit {
                continue;
            }
            used += cost;
            taken.push(*key);
        }
        let mut out = Vec::with_capacity(taken.len());
        for (transmits, id) in taken {
            let Some(b) = self.items.remove(&(transmits, id)) else {
                continue;
            };
            let sent = transmits.saturating_add(1);
            if sent < max_transmits {
                out.push(b.msg.clone());
                let key = (sent, id);
                if let Some(n) = &b.name {
                    self.named.insert(n.clone(), key);
                }
                self.items.insert(key, b);
            } else {
                if let Some(n) = &b.name {
                    self.named.remove(n);
                }
                out.push(b.msg);
            }
        }
        out
    }
}

pub fn retransmit_limit(mult: u32, n: usize) -> u32 {
    let scale = ((n + 1) as f64).log10().ceil().max(1.0) as u32;
    mult * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    /// memberlist's order: fewest transmits first, newest first among
    /// equals; a message too big for the space left is skipped, not the
    /// end of the take.
    #[test]
    fn queue_takes_fewest_sent_then_newest_first() {
        let mut q = BroadcastQueue::default();
        q.queue(None, vec![1]);
        q.queue(None, vec![2]);
        assert_eq!(q.get(0, 1, 10), vec![vec![2]]);
        q.queue(None, vec![3; 5]);
        q.queue(None, vec![4]);
        // 3 is too big for 2 bytes; 4 (newest, unsent) then 1 (unsent).
        assert_eq!(q.get(0, 2, 10), vec![vec![4], vec![1]]);
        assert_eq!(
            q.get(0, 100, 10),
            vec![vec![3; 5], vec![4], vec![2], vec![1]]
        );
        // Named messages keep their place when replaced... by the new one.
        q.queue(Some("a".into()), vec![5]);
        q.queue(Some("a".into()), vec![6]);
        assert_eq!(q.get(0, 1, 10), vec![vec![6]]);
        assert_eq!(q.len(), 5);
    }

    /// memberlist's `Prune`: the most sent, then oldest, go first; named
    /// messages pruned can be queued again.
    #[test]
    fn queue_prune_drops_most_sent_then_oldest() {
        let mut q = BroadcastQueue::default();
        q.queue(Some("a".into()), vec![1]);
        q.queue(None, vec![2]);
        q.get(0, 1, 10); // 2 sent once
        q.queue(None, vec![3]);
        q.queue(None, vec![4]);
        assert_eq!(q.prune(2), 2);
        assert_eq!(q.len(), 2);
        assert_eq!(q.get(0, 100, 10), vec![vec![4], vec![3]]);
        assert_eq!(q.prune(5), 0);
        q.queue(Some("a".into()), vec![5]);
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn queue_limits_transmits_and_replaces_by_name() {
        let mut q = BroadcastQueue::default();
        q.queue(Some("a".into()), vec![1]);
        q.queue(Some("a".into()), vec![2]);
        q.queue(None, vec![3]);
        assert_eq!(q.len(), 2);
        for _ in 0..3 {
            assert_eq!(q.get(2, 1000, 3).len(), 2);
        }
        assert!(q.is_empty());
        // Once a node's message has gone out for good, a new one about the
        // same node is queued afresh, and replaced again by the next.
        q.queue(Some("a".into()), vec![4]);
        q.queue(Some("b".into()), vec![5]);
        q.queue(Some("a".into()), vec![6]);
        let mut sent = q.get(2, 1000, 3);
        sent.sort();
        assert_eq!(sent, vec![vec![5], vec![6]]);
    }
}
