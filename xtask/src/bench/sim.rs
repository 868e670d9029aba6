//! The protocol core at scale, simulated: serf-proto's scale scenario
//! (`sim::scale`: joins in waves, one user event right after the join
//! storm and one once every broadcast queue drained, one join, 1 % crashed,
//! a partition healed) run by its release-built host
//! (`crates/serf-proto/examples/sim_scale.rs`) in its own process, first at
//! 1,000 members to measure the bytes each member pair costs, then at the
//! largest N that stays within [`BUDGET_BYTES`].
//!
//! The peers are estimates, not programs: the epidemic estimate of Pittel
//! for one update (rounds ≈ log(N)/log(k+1) + ln(N)/k, memberlist's fanout
//! k = 3, a round being the LAN profile's 200 ms gossip interval), SWIM's
//! detection bound and Serf's reconnect interval. Per-member times go to
//! `target/bench/sim.json`.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::process::{Command, Stdio};

use super::{row, Row};
use crate::project;

/// Members of the run that measures the bytes per member pair.
const PROBE_N: usize = 1_000;
/// The goal: this many members.
const GOAL_N: usize = 10_000;
/// The most memory a run may take on this shared machine (24 GiB, shared
/// with the lab and other runs).
const BUDGET_BYTES: f64 = 8.0 * GIB;
/// What the machine has.
const MACHINE_BYTES: f64 = 24.0 * GIB;
const GIB: f64 = (1u64 << 30) as f64;
/// Headroom over the peak measured at 1,000 members (transient queues and
/// buffers grow with N too).
const SAFETY: f64 = 0.8;
const SEED: u64 = 1;
/// memberlist's LAN profile: gossip every 200 ms to 3 members, a probe a
/// second, suspicion multiplier 4; Serf reconnects to a failed member
/// every 30 s.
const GOSSIP_S: f64 = 0.2;
const FANOUT: f64 = 3.0;
const PROBE_S: f64 = 1.0;
const SUSPICION_MULT: f64 = 4.0;
const RECONNECT_S: f64 = 30.0;
/// The wall time the largest run may take.
const WALL_GOAL_S: f64 = 120.0;

/// Pittel's estimate in seconds for one update to reach all `n`.
fn pittel_s(n: f64) -> f64 {
    (n.ln() / (FANOUT + 1.0).ln() + n.ln() / FANOUT) * GOSSIP_S
}

/// One run of the host; `converge_only`: the join waves and nothing more.
fn run_sim(bin: &std::path::Path, n: usize, converge_only: bool) -> Result<Value> {
    eprintln!("sim: {n} members (seed {SEED})");
    let mut cmd = Command::new(bin);
    cmd.args([n.to_string(), SEED.to_string()]);
    if converge_only {
        cmd.arg("converge");
    }
    super::dies_with_bench(&mut cmd, nix::sys::signal::Signal::SIGKILL);
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("{} {n} failed: {}", bin.display(), out.status);
    }
    serde_json::from_slice(&out.stdout).context("sim_scale's JSON")
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

/// The largest of a per-member list of times (NaN when one never saw it).
fn all_seen(v: &Value, key: &str) -> f64 {
    let Some(list) = v[key].as_array() else {
        return f64::NAN;
    };
    let killed: Vec<u64> = v["killed"]
        .as_array()
        .map(|k| k.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let mut max: f64 = 0.0;
    for (i, t) in list.iter().enumerate() {
        // The crashed ones see nothing; the last member joins after the event.
        if (key == "failed_seen_s" && killed.contains(&(i as u64)))
            || (key.ends_with("event_seen_s") && i + 1 == list.len())
        {
            continue;
        }
        match t.as_f64() {
            Some(t) => max = max.max(t),
            None => return f64::NAN,
        }
    }
    max
}

/// The heap live after the waves converged, at the phase of that name.
fn heap_at(v: &Value, phase: &str) -> f64 {
    v["phases"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == phase))
        .map_or(f64::NAN, |p| num(p, "heap_bytes"))
}

pub(super) fn rows() -> Result<Vec<Row>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(project::root())
        .args(["build", "--release", "--quiet", "-p", "serf-proto"])
        .args(["--example", "sim_scale"])
        .status()?;
    if !status.success() {
        bail!("cargo build --release -p serf-proto --example sim_scale failed");
    }
    let bin = project::target_dir().join("release/examples/sim_scale");
    let probe = run_sim(&bin, PROBE_N, true)?;
    let pairs = (PROBE_N * PROBE_N) as f64;
    let heap_pair = heap_at(&probe, "converged") / pairs;
    let hwm_pair = num(&probe, "vm_hwm_kib") * 1024.0 / pairs;
    // The largest N whose peak fits the budget, in hundreds.
    let fit = |bytes: f64| ((bytes * SAFETY / hwm_pair).sqrt() / 100.0).floor() * 100.0;
    let n_budget = fit(BUDGET_BYTES).min(GOAL_N as f64);
    let n_machine = fit(MACHINE_BYTES);
    let n = n_budget as usize;
    let big = run_sim(&bin, n, false)?;
    let runs = Value::Array(vec![probe.clone(), big.clone()]);
    let dir = project::target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("sim.json"), serde_json::to_string(&runs)?)?;

    let nf = n as f64;
    let est = pittel_s(nf);
    let pittel = format!(
        "Pittel estimate, k=3, {:.1} rounds of 200 ms",
        est / GOSSIP_S
    );
    let at = |m: &str| format!("{m}, {n} simulated members");
    let mut rows = vec![
        row(
            &format!("sim: heap bytes per member pair at {PROBE_N} members (after convergence)"),
            "B",
            heap_pair,
            MACHINE_BYTES / (GOAL_N * GOAL_N) as f64,
            "what 10,000 members in 24 GiB allow",
            "at most that: every member keeps every member (core, Serf layer, coordinate cache)",
            heap_pair <= MACHINE_BYTES / (GOAL_N * GOAL_N) as f64,
        ),
        row(
            &format!("sim: peak RSS bytes per member pair at {PROBE_N} members"),
            "B",
            hwm_pair,
            MACHINE_BYTES / (GOAL_N * GOAL_N) as f64,
            "what 10,000 members in 24 GiB allow",
            &format!(
                "at most that; at this size 24 GiB hold {n_machine} members, 8 GiB {n_budget}. \
                 A pair holds memberlist's node record (96 B and a 16 B key) and Serf's member \
                 record (88 B and a 16 B key), each in a B-tree about 2/3 full, one shared \
                 name, 8 B in the CRC address set, 16 B in the probe order and the coalescer \
                 each, and, until the join storm drains, its queued broadcasts. One record for \
                 both layers in a table indexed by position (no B-tree slack, one key) would \
                 come near 150 B a pair"
            ),
            hwm_pair <= MACHINE_BYTES / (GOAL_N * GOAL_N) as f64,
        ),
        row(
            "sim: members simulated (largest N within 8 GiB)",
            "members",
            nf,
            GOAL_N as f64,
            "the goal",
            "10,000",
            n >= GOAL_N,
        ),
    ];
    let event = all_seen(&big, "event_seen_s");
    let join = all_seen(&big, "join_seen_s");
    let depth = |which: &str| {
        format!(
            "broadcasts queued per member when sent: max {}, mean {:.1}",
            num(&big, &format!("{which}_depth_max")),
            num(&big, &format!("{which}_depth_mean")),
        )
    };
    rows.push(row(
        &at(&format!(
            "sim: one user event seen by every member, sent 10 s after the join storm converged ({})",
            depth("event")
        )),
        "s",
        event,
        est,
        &pittel,
        "within 2× of the estimate",
        event <= 2.0 * est,
    ));
    let settled = all_seen(&big, "settled_event_seen_s");
    let settle = num(&big, "settle_s");
    rows.push(row(
        &at(&format!(
            "sim: one user event seen by every member, sent once every queue drained \
             ({} s after the first was seen by all; {})",
            if settle.is_finite() {
                format!("{settle:.1}")
            } else {
                "not within 120".into()
            },
            depth("settled")
        )),
        "s",
        settled,
        est,
        &pittel,
        "within 2× of the estimate (the case it is about: one update, a quiet cluster)",
        settled <= 2.0 * est,
    ));
    rows.push(row(
        &at("sim: one join seen by every member"),
        "s",
        join,
        est,
        &pittel,
        "within 2× of the estimate",
        join <= 2.0 * est,
    ));
    let converge = num(&big, "converge_s");
    rows.push(row(
        &at("sim: full convergence after the last of 10 join waves"),
        "s",
        converge,
        est,
        &pittel,
        "converges (the estimate is for one update; a wave is N/10 of them sharing the gossip packets)",
        converge.is_finite(),
    ));
    // SWIM: the next probe of a dead member (within a probe interval), the
    // suspicion's minimum timeout (mult × log10 N × probe interval, reached
    // once enough members confirm), then the dead message's spread.
    let detect = PROBE_S + SUSPICION_MULT * nf.log10().max(1.0) * PROBE_S + est;
    let failed = all_seen(&big, "failed_seen_s");
    rows.push(row(
        &at("sim: 1 % crashed seen failed by every live member"),
        "s",
        failed,
        detect,
        "SWIM bound: probe + min suspicion timeout + Pittel",
        "within 2× of the bound",
        failed <= 2.0 * detect,
    ));
    let heal = num(&big, "heal_s");
    rows.push(row(
        &at("sim: two halves apart for 40 s, healed: reconverged"),
        "s",
        heal,
        RECONNECT_S + est,
        "Serf's reconnect interval (30 s) + Pittel",
        "no more than that",
        heal <= RECONNECT_S + est,
    ));
    let sent = num(&big, "datagrams_per_member_s") + num(&big, "streams_per_member_s");
    // A probe and its ack a second each way; gossip only when there is
    // something to say.
    let expected = 2.0 * (1.0 / PROBE_S);
    rows.push(row(
        &at("sim: messages sent per member per simulated second, steady (datagrams + streams)"),
        "msg/s",
        sent,
        expected,
        "SWIM's schedule: one probe and one ack a second",
        "no more than 2× that",
        sent <= 2.0 * expected,
    ));
    let false_failures = num(&big, "false_failures");
    rows.push(row(
        &at("sim: false failures before the partition"),
        "members",
        false_failures,
        0.0,
        "none",
        "0",
        false_failures == 0.0,
    ));
    let wall = num(&big, "wall_s");
    let simulated = num(&big, "simulated_s");
    rows.push(row(
        &at("sim: simulator speed, simulated s per wall s"),
        "x",
        simulated / wall,
        simulated / WALL_GOAL_S,
        "the speed that finishes the run in 2 min",
        &format!("the run within 2 min of wall time (took {wall:.0} s)"),
        wall <= WALL_GOAL_S,
    ));
    Ok(rows)
}
