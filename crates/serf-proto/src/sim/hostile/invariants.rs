//! The invariants checked after every operation (see the module docs of
//! `sim::hostile`).

use super::*;

impl Harness<'_> {
    pub(super) fn check_stream(&self, i: usize, bytes: &[u8]) -> Option<Message> {
        match wire::parse_stream(&self.keys, bytes) {
            Ok(Some((m, used))) if used == bytes.len() => Some(m),
            other => panic!("node {i} sent a stream message that does not decode: {other:?}"),
        }
    }

    pub(super) fn check(&mut self) {
        self.collect_tapped();
        for i in 0..self.n() {
            let node = &mut self.sim.nodes[i];
            // The sim keeps every event; only recent queries matter here.
            if node.events.len() > 64 {
                let extra = node.events.len() - 64;
                node.events.drain(..extra);
            }
            if node.crashed {
                continue;
            }
            let s = &node.serf;
            let me = s.name().to_string();
            let c = s.clocks();
            let last = self.last[i];
            assert!(
                c.0 >= last.clocks.0 && c.1 >= last.clocks.1 && c.2 >= last.clocks.2,
                "node {me}: a Lamport clock went backwards: {:?} -> {c:?}",
                last.clocks
            );
            let inc = s.core().incarnation();
            assert!(
                inc >= last.incarnation,
                "node {me}: its incarnation went backwards: {} -> {inc}",
                last.incarnation
            );
            self.last[i] = Last {
                clocks: c,
                incarnation: inc,
            };
            let status = s.status_of(&me);
            if self.left[i] {
                assert!(status.is_some(), "node {me} left and lost itself");
            } else {
                assert_eq!(
                    status,
                    Some(MemberStatus::Alive),
                    "node {me} sees itself {status:?} without having left"
                );
                assert_eq!(
                    s.core().local_node().state,
                    NodeState::Alive,
                    "node {me}: memberlist sees itself not alive without having left"
                );
            }
            let members = s.members();
            assert!(members.len() <= self.names.len());
            for m in &members {
                assert!(
                    self.names.contains(&m.name),
                    "node {me} knows a member named {:?} nobody used",
                    m.name
                );
            }
            for n in s.core().nodes() {
                assert!(
                    self.names.contains(&*n.name),
                    "node {me}: memberlist knows a node named {:?} nobody used",
                    n.name
                );
            }
        }
    }
}
