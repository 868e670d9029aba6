//! [`Serf::members_version`] and [`Serf::coordinates_version`]: a host
//! that keeps copies of the member list and coordinates (the agent's view)
//! copies again only when they moved, so they must move with every change
//! a reader could see, and stay put while an idle cluster only pings.
//!
//! [`Serf::members_version`]: serf_proto::serf::Serf::members_version
//! [`Serf::coordinates_version`]: serf_proto::serf::Serf::coordinates_version

use std::time::Duration;

use serf_proto::model::{Member, MemberStatus};
use serf_proto::sim::Sim;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn versions(sim: &Sim, i: usize) -> (u64, u64) {
    let s = &sim.nodes[i].serf;
    (s.members_version(), s.coordinates_version())
}

fn members(sim: &Sim, i: usize) -> Vec<Member> {
    sim.nodes[i].serf.members()
}

#[test]
fn versions_move_with_what_readers_see_and_only_then() {
    let mut sim = Sim::new(3, 7, |_| {});
    assert!(sim.join(1, 0));
    assert!(sim.join(2, 0));
    sim.run_for(secs(10));
    assert!(sim.converged());

    // Idle: pings and acks only. The member list stays put; the
    // coordinates move with every probe's round trip.
    let (m0, c0) = versions(&sim, 0);
    let before = members(&sim, 0);
    sim.run_for(secs(10));
    let (m1, c1) = versions(&sim, 0);
    assert_eq!(m1, m0, "an idle cluster moved the member version");
    assert_eq!(members(&sim, 0), before);
    assert_ne!(c1, c0, "ten seconds of probes and no coordinate moved");

    // A tag change on n2 reaches n0: the version moves with it.
    let now = sim.now();
    sim.nodes[2]
        .serf
        .set_tags(vec![("role".into(), "web".into())], now)
        .unwrap();
    sim.send_now(2);
    sim.run_for(secs(5));
    let (m2, _) = versions(&sim, 0);
    assert_ne!(m2, m1, "a tag change left the member version");
    let n2 = sim.nodes[0].serf.member("n2").expect("n2 known");
    assert!(
        n2.tags.iter().any(|(k, v)| k == "role" && v == "web"),
        "{n2:?}"
    );

    // n2 crashes: once n0 lists it failed, the version moved again.
    sim.nodes[2].crashed = true;
    sim.run_for(secs(30));
    let (m3, _) = versions(&sim, 0);
    assert_eq!(
        sim.nodes[0].serf.status_of("n2"),
        Some(MemberStatus::Failed)
    );
    assert_ne!(m3, m2, "a failure left the member version");
}
