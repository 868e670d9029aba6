//! The piggybacked broadcast queue (memberlist's TransmitLimitedQueue) and
//! its retransmit limit.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// memberlist's TransmitLimitedQueue: messages go out piggybacked until
/// each was sent `limit` times; fewest-sent first.
///
/// Kept in memberlist's btree order: fewest transmits first, then the
/// longest message, then the newest. A take looks, tier by tier of
/// transmits, for the first message that fits the space left (one range
/// lookup, as memberlist's `AscendRange`), so it never walks the messages
/// that do not fit; a prune drops from the back. The bytes are shared: a
/// take hands out the same allocation each time it sends a message.
#[derive(Debug, Default, Clone)]
pub struct BroadcastQueue {
    items: BTreeMap<QueueKey, Broadcast>,
    /// Which node names have a message queued (name → its key), so queueing
    /// about a node finds the message it replaces without a scan: with a
    /// thousand members that scan dominated the run time.
    named: HashMap<Arc<str>, QueueKey>,
    seq: u64,
}

/// (transmits, longest first, newest first): the queue's order.
type QueueKey = (u32, Reverse<usize>, Reverse<u64>);

#[derive(Debug, Clone)]
struct Broadcast {
    /// Messages about the same node replace each other.
    name: Option<Arc<str>>,
    msg: Arc<[u8]>,
}

/// Broadcasts taken for one packet: a compound message counts its parts in
/// one byte (memberlist: at most 255), one of them the message they ride on.
const MAX_PIGGYBACKED: usize = 254;

impl BroadcastQueue {
    pub fn queue(&mut self, name: Option<&str>, msg: Vec<u8>) {
        let name = name.map(|n| self.replace(n).unwrap_or_else(|| Arc::from(n)));
        self.push(name, msg);
    }

    /// [`BroadcastQueue::queue`] about a node whose name its holder keeps
    /// as `name`: the queue shares that allocation instead of copying it.
    pub fn queue_about(&mut self, name: &Arc<str>, msg: Vec<u8>) {
        let name = self.replace(name).unwrap_or_else(|| name.clone());
        self.push(Some(name), msg);
    }

    /// The message queued about `name` goes (a newer one replaces it); the
    /// name it was queued under, to be used again.
    fn replace(&mut self, name: &str) -> Option<Arc<str>> {
        let (n, old) = self.named.remove_entry(name)?;
        self.items.remove(&old);
        Some(n)
    }

    fn push(&mut self, name: Option<Arc<str>>, msg: Vec<u8>) {
        self.seq += 1;
        let key = (0, Reverse(msg.len()), Reverse(self.seq));
        if let Some(n) = &name {
            self.named.insert(n.clone(), key);
        }
        self.items.insert(
            key,
            Broadcast {
                name,
                msg: msg.into(),
            },
        );
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// memberlist's `Prune`: keeps at most `max` messages, dropping the
    /// most sent, then the shortest, then the oldest; returns how many went.
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
    /// memberlist's `GetBroadcasts`: messages for `limit` bytes, each
    /// costing `overhead` more, fewest transmits first and within a tier
    /// the longest that fits, newest first among equals; a message sent
    /// `max_transmits` times leaves the queue.
    pub fn get(&mut self, overhead: usize, limit: usize, max_transmits: u32) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        self.take(overhead, limit, max_transmits, &mut out);
        out.into_iter().map(|m| m.to_vec()).collect()
    }
    /// [`BroadcastQueue::get`], appending the shared bytes to `out`;
    /// returns the bytes taken, overheads included.
    pub fn take(
        &mut self,
        overhead: usize,
        limit: usize,
        max_transmits: u32,
        out: &mut Vec<Arc<[u8]>>,
    ) -> usize {
        let (Some((first, _)), Some((last, _))) =
            (self.items.first_key_value(), self.items.last_key_value())
        else {
            return 0;
        };
        let (mut tier, last_tier) = (first.0, last.0);
        let mut used = 0;
        // Taken messages leave the map at once and come back (one transmit
        // more) once the take is over, so a higher tier does not find them
        // again (memberlist's delayed reinsertion).
        let mut taken = Vec::new();
        while tier <= last_tier && taken.len() < MAX_PIGGYBACKED {
            // Nothing fits in what is left (a message is at least a byte).
            let free = limit.saturating_sub(used + overhead);
            if free == 0 {
                break;
            }
            // The first of this tier no longer than `free`.
            let from = (tier, Reverse(free), Reverse(u64::MAX));
            let found = match tier.checked_add(1) {
                Some(next) => {
                    let to = (next, Reverse(usize::MAX), Reverse(u64::MAX));
                    self.items.range(from..to).next()
                }
                None => self.items.range(from..).next(),
            }
            .map(|(k, _)| *k);
            match found {
                Some(key) => {
                    let b = self.items.remove(&key).expect("found");
                    used += b.msg.len() + overhead;
                    taken.push((key, b));
                }
                None if tier == last_tier => break,
                None => tier += 1,
            }
        }
        for (key, b) in taken {
            let sent = key.0.saturating_add(1);
            out.push(b.msg.clone());
            if sent < max_transmits {
                let key = (sent, key.1, key.2);
                if let Some(n) = &b.name {
                    self.named.insert(n.clone(), key);
                }
                self.items.insert(key, b);
            } else if let Some(n) = &b.name {
                self.named.remove(n);
            }
        }
        used
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
        q.queue(Some("a"), vec![5]);
        q.queue(Some("a"), vec![6]);
        assert_eq!(q.get(0, 1, 10), vec![vec![6]]);
        assert_eq!(q.len(), 5);
    }

    /// memberlist's `Prune`: the most sent, then oldest, go first; named
    /// messages pruned can be queued again.
    #[test]
    fn queue_prune_drops_most_sent_then_oldest() {
        let mut q = BroadcastQueue::default();
        q.queue(Some("a"), vec![1]);
        q.queue(None, vec![2]);
        q.get(0, 1, 10); // 2 sent once
        q.queue(None, vec![3]);
        q.queue(None, vec![4]);
        assert_eq!(q.prune(2), 2);
        assert_eq!(q.len(), 2);
        assert_eq!(q.get(0, 100, 10), vec![vec![4], vec![3]]);
        assert_eq!(q.prune(5), 0);
        q.queue(Some("a"), vec![5]);
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn queue_limits_transmits_and_replaces_by_name() {
        let mut q = BroadcastQueue::default();
        q.queue(Some("a"), vec![1]);
        q.queue(Some("a"), vec![2]);
        q.queue(None, vec![3]);
        assert_eq!(q.len(), 2);
        for _ in 0..3 {
            assert_eq!(q.get(2, 1000, 3).len(), 2);
        }
        assert!(q.is_empty());
        // Once a node's message has gone out for good, a new one about the
        // same node is queued afresh, and replaced again by the next.
        q.queue(Some("a"), vec![4]);
        q.queue(Some("b"), vec![5]);
        q.queue(Some("a"), vec![6]);
        let mut sent = q.get(2, 1000, 3);
        sent.sort();
        assert_eq!(sent, vec![vec![5], vec![6]]);
    }
}
