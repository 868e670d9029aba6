//! Hosts that sleep until [`Serf::next_deadline`] instead of polling:
//! probes, failure detection, gossip and query deadlines happen exactly on
//! time, like a run ticked every 50 ms (within one probe interval), and an
//! idle cluster is woken a few times a second, not twenty.
//!
//! [`Serf::next_deadline`]: serf_proto::serf::Serf::next_deadline

use std::time::Duration;

use serf_proto::core::suspicion_timeout;
use serf_proto::model::{Event, MemberStatus, QueryParams, QueryReply};
use serf_proto::sim::Sim;
use serf_proto::wire::NodeState;

const MS: Duration = Duration::from_millis(1);
const POLL: Duration = Duration::from_millis(50);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A gossip interval that divides none of the other periods (probe
/// interval and timeout, suspicion timeout, query timeouts): a host woken
/// only for gossip rounds would probe, time out and finish queries late.
const ODD_GOSSIP: Duration = Duration::from_millis(170);

/// Two members, joined, run for five seconds; `poll`: ticked every 50 ms
/// instead of at their deadlines.
fn pair(seed: u64, poll: bool) -> Sim {
    pair_gossiping(seed, poll, ODD_GOSSIP)
}

fn pair_gossiping(seed: u64, poll: bool, gossip: Duration) -> Sim {
    let mut sim = Sim::new(2, seed, |c| c.core.gossip_interval = gossip);
    if poll {
        sim.poll = Some(POLL);
    }
    assert!(sim.join(1, 0));
    sim.run_for(secs(5));
    assert!(sim.converged());
    sim
}

/// Runs `sim` a millisecond at a time until `cond` holds (at most `limit`);
/// the time it first held. Every deadline of the simulation falls on a
/// whole millisecond (the staggers are whole milliseconds, the intervals
/// too), so this sees each change at the instant it happens.
fn step_until(sim: &mut Sim, limit: Duration, mut cond: impl FnMut(&Sim) -> bool) -> Duration {
    let end = sim.now() + limit;
    while sim.now() < end {
        if cond(sim) {
            return sim.now();
        }
        sim.run_for(MS);
    }
    assert!(cond(sim), "not within {limit:?}");
    sim.now()
}

/// When n0 probes: the times its probe counter goes up, over `d`.
fn probe_times(sim: &mut Sim, d: Duration) -> Vec<Duration> {
    let end = sim.now() + d;
    let mut times = Vec::new();
    let mut probes = sim.nodes[0].serf.core().counters.probes;
    while sim.now() < end {
        sim.run_for(MS);
        let now = sim.nodes[0].serf.core().counters.probes;
        if now != probes {
            assert_eq!(now, probes + 1, "one probe per millisecond at most");
            times.push(sim.now());
            probes = now;
        }
    }
    times
}

/// Probes go out every probe interval exactly, from the node's own
/// (staggered) start, not at the next 50 ms step.
#[test]
fn probes_go_out_every_probe_interval_exactly() {
    for seed in 1..=3 {
        let mut sim = pair(seed, false);
        let times = probe_times(&mut sim, secs(10));
        assert_eq!(times.len(), 10, "seed {seed}: {times:?}");
        for w in times.windows(2) {
            assert_eq!(w[1] - w[0], secs(1), "seed {seed}: {times:?}");
        }
    }
    // Polled, they snap to the 50 ms steps.
    let mut sim = pair(1, true);
    let times = probe_times(&mut sim, secs(10));
    assert_eq!(times.len(), 10, "{times:?}");
    assert!(times.iter().all(|t| t.as_millis() % 50 == 0), "{times:?}");
}

/// What happened to a crashed peer, seen from n0: when it was suspected
/// and declared dead (core), and when Serf said failed.
struct Failure {
    suspect: Duration,
    dead: Duration,
    failed: Duration,
}

fn crash_and_detect(seed: u64, poll: bool) -> (Duration, Failure) {
    let mut sim = pair(seed, poll);
    let crashed = sim.now();
    sim.crash(1);
    let node = |s: &Sim| s.nodes[0].serf.core().node("n1").cloned().expect("known");
    step_until(&mut sim, secs(5), |s| node(s).state == NodeState::Suspect);
    let suspect = node(&sim).state_change;
    step_until(&mut sim, secs(30), |s| node(s).state == NodeState::Dead);
    let dead = node(&sim).state_change;
    let failed = step_until(&mut sim, secs(5), |s| {
        s.status(0, "n1") == Some(MemberStatus::Failed)
    });
    (
        crashed,
        Failure {
            suspect,
            dead,
            failed,
        },
    )
}

/// A crashed member: suspected when the probe that gets no answer ends
/// (at most two probe intervals after the crash: the probe in flight, then
/// the next), dead exactly at the suspicion timeout (two members: the
/// minimum, 4 s), failed at once; a run ticked every 50 ms finds the same
/// within one probe interval.
#[test]
fn crashed_member_is_suspected_then_dead_at_its_deadlines() {
    for seed in 1..=3 {
        let (crashed, f) = crash_and_detect(seed, false);
        assert!(
            f.suspect > crashed && f.suspect <= crashed + secs(2),
            "seed {seed}: crashed at {crashed:?}, suspected at {:?}",
            f.suspect
        );
        assert_eq!(
            f.dead - f.suspect,
            suspicion_timeout(4, 2, secs(1)),
            "seed {seed}"
        );
        assert_eq!(f.failed, f.dead, "seed {seed}");

        let (p_crashed, p) = crash_and_detect(seed, true);
        let (a, b) = (f.failed - crashed, p.failed - p_crashed);
        let diff = a.abs_diff(b);
        assert!(
            diff <= secs(1),
            "seed {seed}: failed after {a:?} driven by deadlines, {b:?} polled"
        );
    }
}

/// A user event goes out with the next gossip round and arrives a few
/// milliseconds later: never more than a gossip interval plus the
/// network's 5 ms.
#[test]
fn gossip_rounds_are_on_time() {
    for (seed, poll) in [(1, false), (2, false), (3, false), (1, true)] {
        let mut sim = pair_gossiping(seed, poll, Duration::from_millis(200));
        for round in 0..5 {
            let sent = sim.now();
            let name = format!("e{round}");
            sim.nodes[0]
                .serf
                .user_event(&name, vec![], false, sent)
                .unwrap();
            let got = step_until(&mut sim, secs(2), |s| {
                s.nodes[1]
                    .events
                    .iter()
                    .any(|e| matches!(e, Event::User { name: n, .. } if *n == name))
            });
            // Polled, a round can wait for the next 50 ms step.
            let slack = if poll { POLL } else { Duration::ZERO };
            assert!(
                got - sent <= Duration::from_millis(200 + 5) + slack,
                "seed {seed}, polled {poll}: event {round} took {:?}",
                got - sent
            );
            sim.run_for(Duration::from_millis(37));
        }
    }
}

/// A query's deadline is a deadline too: `Done` comes exactly at it.
#[test]
fn query_is_done_at_its_deadline() {
    let mut sim = pair(4, false);
    let asked = sim.now();
    let p = QueryParams {
        name: "q".into(),
        timeout: Duration::from_millis(1500),
        ..Default::default()
    };
    let id = sim.nodes[0].serf.query(&p, asked).unwrap();
    let mut done = None;
    while done.is_none() && sim.now() < asked + secs(3) {
        sim.run_for(MS);
        let replies = sim.nodes[0].serf.drain_query_replies();
        if replies.contains(&(id, QueryReply::Done)) {
            done = Some(sim.now());
        }
    }
    assert_eq!(done, Some(asked + Duration::from_millis(1500)));
}

/// An idle pair of members, a minute long: each is woken about once a
/// second (its probe; gossip rounds only while something is queued, as
/// they send nothing otherwise), not six (every gossip round) nor twenty
/// (every 50 ms).
#[test]
fn idle_members_wake_a_few_times_a_second() {
    let per_node_per_sec = |poll: bool| {
        let mut sim = pair_gossiping(5, poll, Duration::from_millis(200));
        let before = sim.ticks;
        sim.run_for(secs(60));
        assert!(sim.converged());
        (sim.ticks - before) as f64 / 2.0 / 60.0
    };
    let driven = per_node_per_sec(false);
    let polled = per_node_per_sec(true);
    assert!(
        (1.0..=1.5).contains(&driven),
        "{driven:.2} wake-ups a second"
    );
    assert!((19.9..=20.1).contains(&polled), "{polled:.2} polled");
}
