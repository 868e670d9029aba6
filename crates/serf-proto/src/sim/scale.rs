//! The large-cluster scenario of `cargo xtask bench sim`: N members join
//! in waves, one user event spreads right after the join storm and one
//! once every broadcast queue has drained, one more join spreads, 1 %
//! crash, the cluster splits in two halves and heals. Deterministic from its seed;
//! the host (`examples/sim_scale.rs`) measures wall time and memory at the
//! phase boundaries it is told about.
//!
//! What a member "sees" is what its Serf layer reports as events, taken as
//! they happen: the handlers' coalescing window (1–3 s in the agent) is set
//! to zero here, since it delays what handlers see, not what the protocol
//! knows. Every member's view (who it lists alive) is kept as one bit per
//! member pair, so a convergence check costs O(N), not N² name lookups.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use super::Sim;
use crate::core::Rng;
use crate::model::{Event, MemberEventKind};

/// The scenario's knobs; [`Params::new`] gives the bench's values.
#[derive(Debug, Clone)]
pub struct Params {
    pub n: usize,
    pub seed: u64,
    /// Waves of joins (each about N / waves members).
    pub waves: usize,
    /// The first members, through which the others join (one each, in
    /// turn), as `-retry-join` lists a few seeds.
    pub seeds: usize,
    /// A wave's joins are spread over this much time, in ten batches.
    pub wave_spread: Duration,
    /// Between the end of one wave and the next.
    pub wave_gap: Duration,
    /// Members crashed at once, in per mille of N (10: 1 %).
    pub killed_per_mille: usize,
    /// The window over which messages per member are counted.
    pub steady: Duration,
    /// How long the two halves stay apart.
    pub partition: Duration,
    /// The most simulated time to wait, after the first user event, for
    /// every member's broadcast queues to drain before the second one.
    pub settle_limit: Duration,
    /// The most simulated time a phase may take before it counts as failed.
    pub limit: Duration,
    /// Stop once the waves converged (to measure what full member lists
    /// cost, without the rest).
    pub only_converge: bool,
}

impl Params {
    pub fn new(n: usize, seed: u64) -> Params {
        Params {
            n,
            seed,
            waves: 10,
            seeds: 3,
            wave_spread: Duration::from_secs(1),
            wave_gap: Duration::from_secs(2),
            killed_per_mille: 10,
            steady: Duration::from_secs(10),
            partition: Duration::from_secs(40),
            settle_limit: Duration::from_secs(120),
            limit: Duration::from_secs(180),
            only_converge: false,
        }
    }
}

/// What the scenario measured; times of one phase count from its start.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub n: usize,
    /// After the last wave's last join: until every live member lists every
    /// other alive.
    pub converge: Option<Duration>,
    /// Per member: when it got the user event sent by `n0` 10 s after the
    /// join storm converged (none for the last member, which joins after
    /// it).
    pub event_seen: Vec<Option<Duration>>,
    /// Broadcasts queued (memberlist's queue and Serf's three) per live
    /// member when that event was sent: the largest and the mean.
    pub event_depth: (usize, f64),
    /// After that event was seen by all: until every live member's queues
    /// were empty (`None`: not within [`Params::settle_limit`]).
    pub settle: Option<Duration>,
    /// Per member: when it got the second user event from `n0`, sent once
    /// the queues drained (or the wait ran out): the case of Pittel's
    /// estimate, one update in an otherwise quiet cluster.
    pub settled_event_seen: Vec<Option<Duration>>,
    /// [`Report::event_depth`] when the second event was sent.
    pub settled_depth: (usize, f64),
    /// Per member: when it saw the last member's join (`n{N-1}`, joining
    /// through `n0` into the converged cluster).
    pub join_seen: Vec<Option<Duration>>,
    /// The members crashed (1 %).
    pub killed: Vec<usize>,
    /// Per live member: when it had seen every crashed one fail.
    pub failed_seen: Vec<Option<Duration>>,
    /// Members listed failed while alive and reachable (before the
    /// partition): false failures.
    pub false_failures: u64,
    /// After the partition's heal: until every live member lists every
    /// other alive again.
    pub heal: Option<Duration>,
    /// Sent per live member per simulated second in the steady window.
    pub datagrams_per_member_s: f64,
    pub streams_per_member_s: f64,
    /// Node wake-ups per member per simulated second in the same window.
    pub ticks_per_member_s: f64,
    /// Simulated time of the whole run.
    pub simulated: Duration,
}

/// Who each member lists alive (a bit per pair), from its Serf events.
struct Views {
    n: usize,
    words: usize,
    alive: Vec<u64>,
    count: Vec<u32>,
    /// The phase's start: event and failure times count from it.
    since: Duration,
    user_event: Option<String>,
    event_seen: Vec<Option<Duration>>,
    settled_event: Option<String>,
    settled_seen: Vec<Option<Duration>>,
    joiner: Option<usize>,
    join_seen: Vec<Option<Duration>>,
    killed: Vec<bool>,
    n_killed: u32,
    killed_failed: Vec<u32>,
    failed_seen: Vec<Option<Duration>>,
    /// Failures of members that are not crashed count as false.
    count_false: bool,
    false_failures: u64,
}

fn index_of(name: &str) -> Option<usize> {
    name.strip_prefix('n')?.parse().ok()
}

impl Views {
    fn new(n: usize) -> Views {
        let words = n.div_ceil(64);
        Views {
            n,
            words,
            alive: vec![0; n * words],
            count: vec![0; n],
            since: Duration::ZERO,
            user_event: None,
            event_seen: vec![None; n],
            settled_event: None,
            settled_seen: vec![None; n],
            joiner: None,
            join_seen: vec![None; n],
            killed: vec![false; n],
            n_killed: 0,
            killed_failed: vec![0; n],
            failed_seen: vec![None; n],
            count_false: true,
            false_failures: 0,
        }
    }

    fn sees(&self, i: usize, j: usize) -> bool {
        self.alive[i * self.words + j / 64] & (1 << (j % 64)) != 0
    }

    /// Sets whether `i` lists `j` alive; true when that changed.
    fn set(&mut self, i: usize, j: usize, alive: bool) -> bool {
        if self.sees(i, j) == alive {
            return false;
        }
        self.alive[i * self.words + j / 64] ^= 1 << (j % 64);
        if alive {
            self.count[i] += 1;
        } else {
            self.count[i] -= 1;
        }
        true
    }

    fn on(&mut self, i: usize, now: Duration, e: &Event) {
        let at = now.saturating_sub(self.since);
        match e {
            Event::Member { kind, members } => {
                for j in members.iter().filter_map(|m| index_of(&m.name)) {
                    if j >= self.n {
                        continue;
                    }
                    match kind {
                        MemberEventKind::Join => {
                            self.set(i, j, true);
                            if self.joiner == Some(j) && self.join_seen[i].is_none() {
                                self.join_seen[i] = Some(at);
                            }
                        }
                        MemberEventKind::Failed
                        | MemberEventKind::Leave
                        | MemberEventKind::Reap => {
                            let was = self.set(i, j, false);
                            if *kind != MemberEventKind::Failed || !was {
                                continue;
                            }
                            if self.killed[j] {
                                self.killed_failed[i] += 1;
                                if self.killed_failed[i] == self.n_killed {
                                    self.failed_seen[i] = Some(at);
                                }
                            } else if self.count_false {
                                self.false_failures += 1;
                            }
                        }
                        MemberEventKind::Update => {}
                    }
                }
            }
            Event::User { name, .. } => {
                let seen = if self.user_event.as_deref() == Some(name) {
                    &mut self.event_seen[i]
                } else if self.settled_event.as_deref() == Some(name) {
                    &mut self.settled_seen[i]
                } else {
                    return;
                };
                if seen.is_none() {
                    *seen = Some(at);
                }
            }
            Event::Query(_) => {}
        }
    }

    /// Every live member lists every live member alive, and no crashed one.
    fn converged(&self, sim: &Sim) -> bool {
        let live: Vec<usize> = (0..self.n).filter(|&i| !sim.nodes[i].crashed).collect();
        let down: Vec<usize> = (0..self.n).filter(|&i| sim.nodes[i].crashed).collect();
        live.iter().all(|&i| {
            self.count[i] as usize == live.len() && down.iter().all(|&j| !self.sees(i, j))
        })
    }
}

/// Broadcasts queued per live member (memberlist's queue and Serf's
/// intent, event and query queues): the largest and the mean.
/// A user event from n0, sent at once; the queue depths it met.
fn send_event(sim: &mut Sim, name: &str) -> (usize, f64) {
    let depth = queue_depth(sim);
    let now = sim.now();
    sim.nodes[0]
        .serf
        .user_event(name, Vec::new(), false, now)
        .expect("a small user event");
    sim.send_now(0);
    depth
}

fn queue_depth(sim: &Sim) -> (usize, f64) {
    let depths: Vec<usize> = sim
        .nodes
        .iter()
        .filter(|n| !n.crashed)
        .map(|n| {
            let (intent, event, query) = n.serf.queue_depths();
            n.serf.core().pending_broadcasts() + intent + event + query
        })
        .collect();
    let max = depths.iter().copied().max().unwrap_or(0);
    let mean = depths.iter().sum::<usize>() as f64 / depths.len().max(1) as f64;
    (max, mean)
}

/// How often a phase checks whether it is done.
const STEP: Duration = Duration::from_millis(50);

/// Runs `sim` in [`STEP`]s until `done` or `limit`; the time it took.
fn run_until(
    sim: &mut Sim,
    views: &Rc<RefCell<Views>>,
    limit: Duration,
    done: impl Fn(&Views, &Sim) -> bool,
) -> Option<Duration> {
    let start = sim.now();
    loop {
        if done(&views.borrow(), sim) {
            return Some(sim.now() - start);
        }
        if sim.now() - start >= limit {
            return None;
        }
        sim.run_for(STEP);
    }
}

/// Runs the scenario; `phase(name, sim)` is called after each phase (the
/// host reads its clock and memory there).
pub fn run(p: &Params, phase: &mut dyn FnMut(&str, &Sim)) -> Report {
    let n = p.n;
    assert!(n >= 20, "the scenario needs at least 20 members");
    let mut sim = Sim::new(n, p.seed, |cfg| {
        cfg.coalesce_period = Duration::ZERO;
        cfg.quiescent_period = Duration::ZERO;
        cfg.user_coalesce_period = Duration::ZERO;
        cfg.user_quiescent_period = Duration::ZERO;
    });
    let views = Rc::new(RefCell::new(Views::new(n)));
    let v = views.clone();
    sim.watch = Some(Box::new(move |i, now, e| v.borrow_mut().on(i, now, e)));
    let mut rng = Rng::new(p.seed ^ 0x5ca1e);
    let last = n - 1;
    // Everyone but n0 is outside the cluster until its wave (and the last
    // member until its own join): crashed, in the simulator's terms.
    for node in &mut sim.nodes[1..] {
        node.crashed = true;
    }
    phase("created", &sim);

    // Waves: n1 .. n{N-2}, each through one of the first members.
    let joining: Vec<usize> = (1..last).collect();
    let per_wave = joining.len().div_ceil(p.waves);
    for wave in joining.chunks(per_wave) {
        let batch = wave.len().div_ceil(10);
        for part in wave.chunks(batch) {
            for &i in part {
                sim.nodes[i].crashed = false;
                let seed = (i - 1) % p.seeds.min(i);
                sim.join(i, seed);
            }
            sim.run_for(p.wave_spread / 10);
        }
        sim.run_for(p.wave_gap);
    }
    phase("waves", &sim);
    let converge = run_until(&mut sim, &views, p.limit, |v, s| v.converged(s));
    phase("converged", &sim);
    if p.only_converge {
        return Report {
            n,
            converge,
            simulated: sim.now(),
            ..Report::default()
        };
    }

    // Steady state: what each member sends.
    let (d0, s0, t0) = (sim.datagrams, sim.streams, sim.ticks);
    sim.run_for(p.steady);
    let live = (n - 1) as f64;
    let per = |a: u64, b: u64| (a - b) as f64 / live / p.steady.as_secs_f64();
    let datagrams_per_member_s = per(sim.datagrams, d0);
    let streams_per_member_s = per(sim.streams, s0);
    let ticks_per_member_s = per(sim.ticks, t0);
    phase("steady", &sim);

    // One user event from n0, while the queues still carry the storm.
    {
        let mut v = views.borrow_mut();
        v.since = sim.now();
        v.user_event = Some("scale-probe".into());
    }
    let event_depth = send_event(&mut sim, "scale-probe");
    let seen_by_all = |v: &Views, s: &Sim, seen: &[Option<Duration>]| {
        (0..v.n).all(|i| s.nodes[i].crashed || seen[i].is_some())
    };
    run_until(&mut sim, &views, p.limit, |v, s| {
        seen_by_all(v, s, &v.event_seen)
    });
    // Another once every queue drained: one update in a quiet cluster.
    let settle = run_until(&mut sim, &views, p.settle_limit, |_, s| {
        queue_depth(s).0 == 0
    });
    {
        let mut v = views.borrow_mut();
        v.since = sim.now();
        v.settled_event = Some("scale-probe-settled".into());
    }
    let settled_depth = send_event(&mut sim, "scale-probe-settled");
    run_until(&mut sim, &views, p.limit, |v, s| {
        seen_by_all(v, s, &v.settled_seen)
    });
    phase("event", &sim);

    // The last member joins through n0.
    {
        let mut v = views.borrow_mut();
        v.since = sim.now();
        v.joiner = Some(last);
    }
    sim.nodes[last].crashed = false;
    sim.join(last, 0);
    run_until(&mut sim, &views, p.limit, |v, s| {
        seen_by_all(v, s, &v.join_seen)
    });
    run_until(&mut sim, &views, p.limit, |v, s| v.converged(s));
    phase("join", &sim);

    // 1 % crash at once (never n0, the event's sender).
    let mut order: Vec<usize> = (1..n).collect();
    for k in (1..order.len()).rev() {
        order.swap(k, rng.below(k + 1));
    }
    let mut killed: Vec<usize> = order[..(n * p.killed_per_mille / 1000).max(1)].to_vec();
    killed.sort_unstable();
    {
        let mut v = views.borrow_mut();
        v.since = sim.now();
        for &k in &killed {
            v.killed[k] = true;
        }
        v.n_killed = killed.len() as u32;
    }
    for &k in &killed {
        sim.crash(k);
    }
    run_until(&mut sim, &views, p.limit, |v, s| {
        (0..v.n).all(|i| s.nodes[i].crashed || v.failed_seen[i].is_some())
    });
    phase("failures", &sim);

    // Two halves, apart for a while, then healed.
    views.borrow_mut().count_false = false;
    for i in n / 2..n {
        sim.set_group(i, 1);
    }
    sim.run_for(p.partition);
    phase("partitioned", &sim);
    sim.heal();
    let heal = run_until(&mut sim, &views, p.limit, |v, s| v.converged(s));
    phase("healed", &sim);

    let v = views.borrow();
    Report {
        n,
        converge,
        event_seen: v.event_seen.clone(),
        event_depth,
        settle,
        settled_event_seen: v.settled_seen.clone(),
        settled_depth,
        join_seen: v.join_seen.clone(),
        failed_seen: v.failed_seen.clone(),
        killed,
        false_failures: v.false_failures,
        heal,
        datagrams_per_member_s,
        streams_per_member_s,
        ticks_per_member_s,
        simulated: sim.now(),
    }
}

/// The classic estimate of epidemic dissemination (Pittel): rounds for one
/// update to reach all of `n` members with fanout `k`,
/// log(n)/log(k+1) + ln(n)/k.
pub fn pittel_rounds(n: usize, k: usize) -> f64 {
    let (n, k) = (n as f64, k as f64);
    n.ln() / (k + 1.0).ln() + n.ln() / k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pittel_at_ten_thousand_with_fanout_three() {
        // log4(10^4) = 6.64, ln(10^4)/3 = 3.07.
        assert!((pittel_rounds(10_000, 3) - 9.71).abs() < 0.01);
    }

    #[test]
    fn a_small_run_measures_every_phase() {
        let mut phases = Vec::new();
        let mut p = Params::new(60, 7);
        p.partition = Duration::from_secs(30);
        let r = run(&p, &mut |name, _| phases.push(name.to_string()));
        assert_eq!(
            phases,
            [
                "created",
                "waves",
                "converged",
                "steady",
                "event",
                "join",
                "failures",
                "partitioned",
                "healed"
            ]
        );
        assert!(r.converge.is_some(), "{r:?}");
        assert!(r.event_seen[..59].iter().all(Option::is_some), "{r:?}");
        assert!(r.settle.is_some(), "{r:?}");
        assert_eq!(r.settled_depth.0, 0, "{r:?}");
        assert!(
            r.settled_event_seen[..59].iter().all(Option::is_some),
            "{r:?}"
        );
        assert!(r.join_seen.iter().all(Option::is_some), "{r:?}");
        assert_eq!(r.killed.len(), 1);
        let live_seen = (0..60)
            .filter(|i| !r.killed.contains(i))
            .all(|i| r.failed_seen[i].is_some());
        assert!(live_seen, "{r:?}");
        assert_eq!(r.false_failures, 0);
        assert!(r.heal.is_some(), "{r:?}");
        assert!(r.datagrams_per_member_s > 0.0);
    }
}
