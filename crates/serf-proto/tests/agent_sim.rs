//! The sans-IO engine under the deterministic simulator: convergence,
//! loss, partitions, crashes, leave, events.

use std::time::Duration;

use serf_proto::model::{Event, MemberEventKind, MemberStatus};
use serf_proto::sim::Sim;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A graceful leave as the agent does it (intent, then memberlist's leave,
/// `spread` each to spread), then the process stops.
fn leave_and_stop(sim: &mut Sim, i: usize, spread: Duration) {
    let now = sim.now();
    sim.nodes[i].serf.leave_intent(now);
    sim.run_for(spread);
    let now = sim.now();
    sim.nodes[i].serf.leave_memberlist(now);
    sim.run_for(spread);
    sim.crash(i);
}

/// How long the agent lets each step of a leave spread.
const AGENT_LEAVE_SPREAD: Duration = Duration::from_millis(500);

fn cluster(n: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(n, seed, |_| {});
    for i in 1..n {
        assert!(sim.join(i, 0), "n{i} joins n0");
        sim.run_for(Duration::from_millis(20));
    }
    sim
}

/// [`cluster`], converged within 60 s of simulated time.
fn converged_cluster(n: usize, seed: u64) -> Sim {
    let mut sim = cluster(n, seed);
    assert!(sim.run_until(secs(60), |s| s.converged()).is_some());
    sim
}

/// Whether every node of the `n` but `who` sees `n{who}` as `status`.
fn others_see(sim: &Sim, n: usize, who: usize, status: MemberStatus) -> bool {
    let name = format!("n{who}");
    (0..n)
        .filter(|&i| i != who)
        .all(|i| sim.status(i, &name) == Some(status))
}

#[test]
fn hundred_members_converge() {
    let mut sim = cluster(100, 1);
    let took = sim.run_until(secs(60), |s| s.converged());
    assert!(
        took.is_some(),
        "100 members did not converge in 60 s of simulated time"
    );
    assert_eq!(sim.count_status(MemberStatus::Failed), 0);
}

/// A thousand members, joining one after the other through n0, converge:
/// every one sees every other alive, and nobody was ever taken for failed.
#[test]
fn thousand_members_converge() {
    let mut sim = cluster(1000, 3);
    let mut took = None;
    for waited in 1..=120 {
        sim.run_for(secs(1));
        if sim.converged() {
            took = Some(waited);
            break;
        }
    }
    assert!(
        took.is_some(),
        "1000 members did not converge in 120 s of simulated time"
    );
    assert_eq!(sim.count_status(MemberStatus::Failed), 0);
    eprintln!("1000 members converged {took:?} s after the last join");
}

/// A sixth node starts under n1's name from another address: the cluster
/// votes (`_serf_conflict`), the newcomer loses and stops, n1 keeps its
/// name and address everywhere.
#[test]
fn a_duplicate_name_loses_the_vote() {
    let mut sim = Sim::new(6, 11, |c| {
        if c.core.name == "n5" {
            c.core.name = "n1".to_string();
        }
    });
    for i in 1..5 {
        assert!(sim.join(i, 0), "n{i} joins n0");
    }
    sim.run_for(secs(5));
    assert!(sim.join(5, 0), "the duplicate reaches n0");
    let lost = sim.run_until(secs(60), |s| s.nodes[5].lost_name.is_some());
    assert!(lost.is_some(), "the duplicate never lost the vote");
    let why = sim.nodes[5].lost_name.clone().unwrap_or_default();
    assert!(why.contains("'n1'"), "{why}");
    sim.run_for(secs(10));
    assert!(sim.nodes[1].lost_name.is_none(), "n1 lost its own name");
    for i in 0..5 {
        let n1 = sim
            .members(i)
            .into_iter()
            .find(|m| m.name == "n1")
            .expect("n1 is known");
        assert_eq!(n1.status, MemberStatus::Alive, "n{i} sees n1");
        assert_eq!(
            n1.addr,
            serf_proto::sim::sim_addr(1).ip(),
            "n{i} sees n1's address"
        );
    }
}

/// A converged cluster of `n` run for `time` with a share `loss` of the
/// datagrams lost: nobody is taken for failed (else `why`).
fn lossy_run(n: usize, seed: u64, loss: f64, time: Duration, why: &str) -> Sim {
    let mut sim = converged_cluster(n, seed);
    sim.loss = loss;
    sim.run_for(time);
    assert_eq!(sim.count_status(MemberStatus::Failed), 0, "{why}");
    sim
}

#[test]
fn ten_percent_loss_gives_no_false_failures() {
    let why = "a member was marked failed under 10% loss";
    let sim = lossy_run(30, 2, 0.10, secs(120), why);
    assert!(sim.dropped > 0, "the loss model dropped nothing");
}

#[test]
fn crashed_member_is_detected_failed() {
    let mut sim = converged_cluster(20, 3);
    sim.crash(7);
    let took = sim.run_until(secs(120), |s| others_see(s, 20, 7, MemberStatus::Failed));
    assert!(took.is_some(), "n7's crash was not detected by everyone");
    // Member events are coalesced (up to 3 s) before they are emitted.
    sim.run_for(secs(4));
    // Each observer emitted a coalesced member-failed for n7.
    for i in (0..20).filter(|&i| i != 7) {
        assert!(
            sim.nodes[i].events.iter().any(|e| matches!(e,
                Event::Member { kind: MemberEventKind::Failed, members } if members.iter().any(|m| m.name == "n7"))),
            "n{i} emitted no member-failed for n7"
        );
    }
}

#[test]
fn partition_heals() {
    let n = 16;
    let mut sim = converged_cluster(n, 4);
    for i in 0..n / 2 {
        sim.set_group(i, 1);
    }
    let split = sim.run_until(secs(180), |s| {
        (0..n / 2).all(|i| s.status(i, &format!("n{}", n - 1)) == Some(MemberStatus::Failed))
            && (n / 2..n).all(|i| s.status(i, "n0") == Some(MemberStatus::Failed))
    });
    assert!(split.is_some(), "the two sides never saw each other failed");
    sim.heal();
    let healed = sim.run_until(secs(300), |s| s.converged());
    assert!(healed.is_some(), "the partition did not heal");
}

#[test]
fn graceful_leave_is_left_not_failed() {
    let mut sim = converged_cluster(10, 5);
    leave_and_stop(&mut sim, 3, secs(2));
    let took = sim.run_until(secs(60), |s| others_see(s, 10, 3, MemberStatus::Left));
    assert!(took.is_some(), "n3 not seen as left everywhere");
    sim.run_for(secs(30));
    assert_eq!(sim.count_status(MemberStatus::Failed), 0);
}

/// A leaving node tells its live peers directly, not only by gossip: all
/// of them see it leaving, then left, well within one gossip interval
/// (200 ms), where gossip alone reaches three peers a round.
#[test]
fn a_graceful_leave_reaches_every_peer_in_one_hop() {
    let mut sim = converged_cluster(20, 8);
    let peers = || (0..20).filter(|&i| i != 7);
    // n7's messages out at once, 20 ms (the agent's head start for the
    // intent before the dead notice) for them to land: n7 as its peers see it.
    let sent_and_seen = |sim: &mut Sim| {
        sim.send_now(7);
        sim.run_for(Duration::from_millis(20));
        peers().map(|i| sim.status(i, "n7")).collect::<Vec<_>>()
    };
    let now = sim.now();
    assert!(
        sim.nodes[7].serf.leave_intent(now),
        "all 19 peers told directly"
    );
    let leaving = sent_and_seen(&mut sim);
    assert!(
        leaving.iter().all(|s| *s == Some(MemberStatus::Leaving)),
        "20 ms after the intent: {leaving:?}"
    );
    let now = sim.now();
    sim.nodes[7].serf.leave_memberlist(now);
    let left = sent_and_seen(&mut sim);
    assert!(
        left.iter().all(|s| *s == Some(MemberStatus::Left)),
        "20 ms after memberlist's leave: {left:?}"
    );
    // Nobody took it for failed on the way (past the event coalescing).
    sim.run_for(secs(5));
    let failed = peers()
        .flat_map(|i| sim.nodes[i].events.iter())
        .filter(|e| {
            matches!(
                e,
                Event::Member {
                    kind: MemberEventKind::Failed,
                    ..
                }
            )
        })
        .count();
    assert_eq!(failed, 0, "member-failed events");
}

/// A peer accusing a node at the largest incarnation (hostile or broken):
/// the refutation saturates instead of overflowing, and the cluster goes on.
#[test]
fn an_accusation_at_the_largest_incarnation_does_not_overflow() {
    let mut sim = converged_cluster(3, 5);
    let accuse = serf_proto::wire::Message::Suspect(serf_proto::wire::Accuse {
        incarnation: u32::MAX,
        node: "n0".into(),
        from: "n1".into(),
    });
    let now = sim.now();
    sim.nodes[0]
        .serf
        .handle_packet(serf_proto::sim::sim_addr(1), &accuse.encode(), now);
    sim.run_for(secs(5));
    assert!(
        (1..3).all(|i| sim.status(i, "n1").is_some()),
        "the cluster still lists its members"
    );
}

/// A node that comes back under the name of one that left finds its old
/// self `left` in the state it joins with, and refutes it with a higher
/// incarnation; the refutation goes straight to every live peer, so all of
/// them see it alive at once instead of after the refutation's gossip.
#[test]
fn a_refutation_reaches_every_peer_in_one_hop() {
    let mut sim = converged_cluster(20, 9);
    leave_and_stop(&mut sim, 7, AGENT_LEAVE_SPREAD);
    assert!(sim
        .run_until(secs(60), |s| others_see(s, 20, 7, MemberStatus::Left))
        .is_some());
    sim.restart(7);
    assert!(sim.join(7, 0), "n7 rejoins through n0");
    sim.run_for(Duration::from_millis(20));
    let seen: Vec<_> = (0..20)
        .filter(|&i| i != 7)
        .map(|i| sim.status(i, "n7"))
        .collect();
    assert!(
        seen.iter().all(|s| *s == Some(MemberStatus::Alive)),
        "20 ms after the rejoin: {seen:?}"
    );
}

/// The lab's scale-down then scale-up with the same container name: a member
/// that left gracefully comes back as a fresh process under the same name
/// and address; everyone sees it alive again and fires a join for it.
#[test]
fn member_that_left_rejoins_under_the_same_name() {
    let mut sim = converged_cluster(10, 11);
    for round in 0..3 {
        leave_and_stop(&mut sim, 3, secs(1));
        let left = sim.run_until(secs(60), |s| others_see(s, 10, 3, MemberStatus::Left));
        assert!(
            left.is_some(),
            "round {round}: n3 not seen as left everywhere"
        );
        // Past the member-event coalescing window (3 s): the leave has been
        // passed on, so the rejoin is a new event (within the window, serf
        // folds leave + join into nothing).
        sim.run_for(secs(5));
        for i in 0..10 {
            sim.nodes[i].events.clear();
        }
        sim.restart(3);
        assert!(sim.join(3, 0), "round {round}: n3 rejoins through n0");
        let took = sim.run_until(secs(30), |s| s.converged());
        assert!(
            took.is_some(),
            "round {round}: n3 not alive everywhere 30 s after rejoining: {:?}",
            (0..10).map(|i| sim.status(i, "n3")).collect::<Vec<_>>()
        );
        // Old leave intents still being gossiped must not undo the rejoin,
        // and the join has passed the coalescing window everywhere.
        sim.run_for(secs(20));
        assert!(
            sim.converged(),
            "round {round}: n3 lost again after rejoining"
        );
        for i in (0..10).filter(|&i| i != 3) {
            let joined = sim.nodes[i].events.iter().any(|e| {
                matches!(e, Event::Member { kind: MemberEventKind::Join, members }
                    if members.iter().any(|m| m.name == "n3"))
            });
            assert!(
                joined,
                "round {round}: n{i} fired no member-join for n3; its events: {:?}",
                sim.nodes[i].events
            );
        }
    }
}

#[test]
fn user_event_reaches_everyone_once() {
    let mut sim = converged_cluster(25, 6);
    let now = sim.now();
    sim.nodes[4]
        .serf
        .user_event("deploy", b"v2".to_vec(), false, now)
        .unwrap();
    let took = sim.run_until(secs(30), |s| {
        s.nodes.iter().all(|n| {
            n.events
                .iter()
                .filter(|e| matches!(e, Event::User { name, .. } if name == "deploy"))
                .count()
                == 1
        })
    });
    assert!(
        took.is_some(),
        "the event did not reach every node exactly once"
    );
    sim.run_for(secs(10));
    for n in &sim.nodes {
        let c = n
            .events
            .iter()
            .filter(|e| matches!(e, Event::User { name, .. } if name == "deploy"))
            .count();
        assert_eq!(c, 1, "duplicate delivery");
    }
}

#[test]
fn simulation_is_deterministic() {
    let run = || {
        let mut sim = cluster(12, 42);
        sim.loss = 0.05;
        sim.run_for(secs(20));
        (sim.delivered, sim.dropped)
    };
    assert_eq!(run(), run());
}

/// A partition makes many suspicions (and relayed pings) time out at
/// once; the order they are handled in must come from the seed too, not
/// from a hash map's per-process order: the same seed, the same run, heal
/// included.
#[test]
fn a_partition_and_its_heal_replay_the_same_from_a_seed() {
    let run = || {
        let n = 48;
        let mut sim = cluster(n, 7);
        sim.run_for(secs(10));
        for i in n / 2..n {
            sim.set_group(i, 1);
        }
        sim.run_for(secs(40));
        sim.heal();
        sim.run_for(secs(40));
        let events: Vec<usize> = sim.nodes.iter().map(|n| n.events.len()).collect();
        (
            sim.delivered,
            sim.dropped,
            sim.datagrams,
            sim.streams,
            events,
        )
    };
    let first = run();
    for _ in 0..3 {
        assert_eq!(run(), first);
    }
}

#[test]
fn tcp_fallback_ping_keeps_members_alive_when_udp_is_lost() {
    // Every datagram is lost; only TCP (push-pull, fallback pings) passes.
    let why = "TCP fallback pings should prevent failures";
    let sim = lossy_run(5, 8, 1.0, secs(60), why);
    assert!(sim.count_status(MemberStatus::Alive) == 25);
}

#[test]
fn encrypted_and_compressed_cluster_converges_and_detects_a_crash() {
    let mut sim = Sim::new(10, 9, |c| {
        c.core.compress = true;
        c.core.keys = vec![vec![7u8; 32], vec![8u8; 16]];
    });
    for i in 1..10 {
        assert!(sim.join(i, 0), "n{i} joins n0 (encrypted)");
    }
    assert!(sim.run_until(secs(60), |s| s.converged()).is_some());
    sim.crash(2);
    assert!(
        sim.run_until(secs(120), |s| s.converged()).is_some(),
        "n2's crash not detected"
    );
}

/// Two sites, 40 ms apart one way, 0 ms within a site (plus the simulator's
/// 1–5 ms jitter each way): after a few minutes of probing, every node's
/// coordinate puts the other site about 80 ms away and its own site close.
#[test]
fn coordinates_learn_the_shape_of_the_network() {
    let n = 12;
    let mut sim = cluster(n, 11);
    let site = |i: usize| i % 2;
    sim.link_delay = Some(Box::new(move |a, b| {
        if site(a) == site(b) {
            Duration::ZERO
        } else {
            Duration::from_millis(40)
        }
    }));
    sim.run_for(secs(300));
    assert!(sim.converged());
    for i in 0..n {
        let me = sim.nodes[i]
            .serf
            .coordinate(&format!("n{i}"))
            .expect("own coordinate")
            .clone();
        for j in 0..n {
            if i == j {
                continue;
            }
            // Each node knows the coordinate a peer last sent it; compare
            // with the peer's own current coordinate.
            let other = sim.nodes[j].serf.coordinate(&format!("n{j}")).unwrap();
            let est = me.distance_to(other).unwrap().as_secs_f64() * 1000.0;
            if site(i) == site(j) {
                assert!(est < 25.0, "n{i} -> n{j}, same site: estimated {est:.1} ms");
            } else {
                assert!(
                    (60.0..110.0).contains(&est),
                    "n{i} -> n{j}, other site (about 86 ms): estimated {est:.1} ms"
                );
            }
        }
        assert_eq!(sim.nodes[i].serf.coordinate_resets(), Some(0));
    }
}

/// `disable_coordinates`: acks carry nothing, no coordinate is known, and
/// the cluster works as before.
#[test]
fn coordinates_can_be_disabled() {
    let mut sim = Sim::new(4, 5, |c| c.disable_coordinates = true);
    for i in 1..4 {
        assert!(sim.join(i, 0));
    }
    sim.run_for(secs(30));
    assert!(sim.converged());
    for i in 0..4 {
        assert!(sim.nodes[i].serf.coordinate(&format!("n{i}")).is_none());
        assert_eq!(sim.nodes[i].serf.coordinate_resets(), None);
    }
}

/// The scaling bench's pattern: ha (n0) and two web apps stay; five more
/// join, then leave one after the other; the last one comes straight back
/// under its name and must be seen alive by the others within a few
/// seconds (its own push-pull join and the refutation of its leave, not
/// the next periodic push-pull 30 s later), whatever the seed.
#[test]
fn a_rejoin_after_many_leaves_is_seen_quickly() {
    for seed in 0..20 {
        let mut sim = cluster(8, 100 + seed);
        assert!(
            // A member may miss a join's gossip and learn it at the next
            // push-pull (every 30 s), as in memberlist.
            sim.run_until(secs(60), |s| s.converged()).is_some(),
            "seed {seed}: 8 nodes did not converge: {:?}",
            (0..8)
                .map(|i| sim
                    .members(i)
                    .iter()
                    .map(|m| format!("{}:{:?}", m.name, m.status))
                    .collect::<Vec<_>>())
                .collect::<Vec<_>>()
        );
        for i in 3..8 {
            leave_and_stop(&mut sim, i, AGENT_LEAVE_SPREAD);
            sim.run_for(secs(1));
        }
        let left = sim.run_until(secs(30), |s| {
            (3..8).all(|i| s.status(0, &format!("n{i}")) == Some(MemberStatus::Left))
        });
        assert!(
            left.is_some(),
            "seed {seed}: the five leaves not seen by n0"
        );
        sim.restart(7);
        assert!(sim.join(7, 0), "seed {seed}: n7 rejoins through n0");
        let took = sim.run_until(secs(40), |s| {
            (0..3).all(|i| s.status(i, "n7") == Some(MemberStatus::Alive))
        });
        let took = took.unwrap_or_else(|| panic!("seed {seed}: n7 never seen alive again"));
        assert!(
            took < secs(5),
            "seed {seed}: n7 seen alive again by n0, n1, n2 only after {took:?}"
        );
    }
}

/// Nodes that left gracefully are not gossip targets (memberlist gossips to
/// dead nodes for 30 s, so that they may refute, but never to nodes that
/// said goodbye): once the leaves are known, not one datagram goes to them.
#[test]
fn no_gossip_is_sent_to_nodes_that_left() {
    let mut sim = converged_cluster(6, 21);
    for i in [4, 5] {
        leave_and_stop(&mut sim, i, AGENT_LEAVE_SPREAD);
    }
    let left = sim.run_until(secs(30), |s| {
        (0..4).all(|i| {
            [4, 5]
                .iter()
                .all(|j| s.status(i, &format!("n{j}")) == Some(MemberStatus::Left))
        })
    });
    assert!(left.is_some(), "the leaves were not seen");
    // Past any broadcast still in flight about the leaves.
    sim.run_for(secs(2));
    // Within memberlist's 30 s of gossip to the dead, and with events to
    // carry: a user event makes every node gossip.
    sim.dropped = 0;
    let now = sim.now();
    sim.nodes[0]
        .serf
        .user_event("ping", b"x".to_vec(), false, now)
        .unwrap();
    sim.run_for(secs(10));
    assert_eq!(sim.dropped, 0, "datagrams sent to nodes that left");
}

/// Serf's size limits on what a node sends: a user event, a query or a
/// response over its limit is refused with Serf's message and changes
/// nothing; a larger configured limit lets a bigger event through, and it
/// reaches everyone (too big for a gossip packet, it travels by push-pull,
/// as in Serf).
#[test]
fn size_limits_refuse_what_serf_refuses_and_configured_limits_widen_them() {
    let mut sim = Sim::new(3, 41, |c| {
        if c.core.name == "n2" {
            c.user_event_size_limit = 2048;
            c.query_response_size_limit = 2048;
        }
    });
    for i in 1..3 {
        assert!(sim.join(i, 0), "n{i} joins n0");
    }
    assert!(sim.run_until(secs(60), |s| s.converged()).is_some());
    let now = sim.now();
    let user_events = |sim: &Sim, i: usize| {
        sim.nodes[i]
            .events
            .iter()
            .filter(|e| matches!(e, Event::User { .. }))
            .count()
    };

    let n0 = &mut sim.nodes[0].serf;
    let refusals = [
        (
            600,
            "user event exceeds configured limit of 512 bytes before encoding",
        ),
        // Under the limit as given, over it once encoded (Serf refuses it too).
        (
            490,
            "encoded user event exceeds configured limit of 512 bytes after encoding",
        ),
    ];
    for (len, why) in refusals {
        let e = n0
            .user_event("big", vec![b'a'; len], false, now)
            .unwrap_err();
        assert_eq!(e.to_string(), why);
    }
    let q = serf_proto::model::QueryParams {
        name: "big".into(),
        payload: vec![b'q'; 1100],
        ..Default::default()
    };
    let e = n0.query(&q, now).unwrap_err();
    assert_eq!(e.to_string(), "query exceeds limit of 1024 bytes");
    sim.run_for(secs(5));
    for i in 0..3 {
        assert_eq!(user_events(&sim, i), 0, "n{i} got a refused event");
        assert!(
            !sim.nodes[i]
                .events
                .iter()
                .any(|e| matches!(e, Event::Query(_))),
            "n{i} got a refused query"
        );
    }

    // n2's limit is 2048: a 1500-byte event goes out and reaches all.
    let now = sim.now();
    sim.nodes[2]
        .serf
        .user_event("big", vec![b'b'; 1500], false, now)
        .unwrap();
    let took = sim.run_until(secs(90), |s| (0..3).all(|i| user_events(s, i) == 1));
    assert!(took.is_some(), "the 1500-byte event did not reach everyone");

    // A response over n0's 1024 bytes is refused, and the query stays
    // answerable: a smaller answer then goes through. n2 may answer 1500.
    let now = sim.now();
    let q = serf_proto::model::QueryParams {
        name: "ask".into(),
        timeout: secs(10),
        ..Default::default()
    };
    let local = sim.nodes[1].serf.query(&q, now).unwrap();
    sim.run_until(secs(5), |s| {
        [0, 2].iter().all(|&i| {
            s.nodes[i]
                .events
                .iter()
                .any(|e| matches!(e, Event::Query(q) if q.name == "ask"))
        })
    })
    .expect("the query reached n0 and n2");
    let id_at = |sim: &Sim, i: usize| {
        sim.nodes[i]
            .events
            .iter()
            .find_map(|e| match e {
                Event::Query(q) if q.name == "ask" => Some(q.id),
                _ => None,
            })
            .unwrap()
    };
    let (id0, id2) = (id_at(&sim, 0), id_at(&sim, 2));
    let now = sim.now();
    let e = sim.nodes[0]
        .serf
        .respond(id0, vec![b'r'; 1100], now)
        .unwrap_err();
    assert_eq!(e.to_string(), "response exceeds limit of 1024 bytes");
    sim.nodes[0]
        .serf
        .respond(id0, b"short".to_vec(), now)
        .unwrap();
    sim.nodes[2]
        .serf
        .respond(id2, vec![b'r'; 1500], now)
        .unwrap();
    let mut answers = Vec::new();
    for _ in 0..50 {
        sim.run_for(Duration::from_millis(100));
        answers.extend(
            sim.nodes[1]
                .serf
                .drain_query_replies()
                .into_iter()
                .filter_map(|(id, r)| match r {
                    serf_proto::model::QueryReply::Response { from, payload } if id == local => {
                        Some((from, payload.len()))
                    }
                    _ => None,
                }),
        );
    }
    answers.sort();
    assert_eq!(answers, vec![("n0".into(), 5), ("n2".into(), 1500)]);
}
