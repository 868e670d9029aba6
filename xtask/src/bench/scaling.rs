//! HAProxy following the web apps: our reconciler (the task-6 default)
//! against the lab's mechanism (`HA_RELOAD=lab`: a handler per event
//! renders the config, `s6-svc -h` restarts HAProxy with `-sf`), on the same
//! machine in the same run, each under the same steady client load.
//!
//! Per mechanism: ha and two web apps, then 20 scale events (start s3..s7,
//! stop them again, twice), each followed by HAProxy converging to the
//! running set, then [`KILLS`] web apps started and killed one after the
//! other (`docker kill`: no leave; each new one gets the address the last
//! one died with). Measured:
//! - join → served: `docker run` of a web app until the load's first answer
//!   carrying its `x-backend-ip`;
//! - graceful stop → out of rotation: `docker stop` until the stats no longer
//!   list it UP (absent, MAINT, DRAIN or DOWN);
//! - kill -9 → out of rotation: the same after `docker kill`;
//! - failed requests during the 20 scale events, and around the kills (one
//!   attempt per request);
//! - `docker restart ha` ([`HA_RESTARTS`] times, two web apps running), then
//!   ha recreated (removed and started anew: no snapshot, no config): from
//!   HAProxy's first HTTP answer to an answer from every web app (the time
//!   back in rotation), and the requests that failed once it answered (no
//!   answer at all while it is down is the restart window, not a failure);
//! - one client holding its cookies through all of it: how often its
//!   `sessionViews` went back (a lost session) or jumped. Ours runs the
//!   final stage as shipped (sticky, sessions in the `sessions` Redis); the
//!   lab's runs the lab's setup (round robin, sessions in each web app's
//!   memory).

use anyhow::Result;
use std::time::{Duration, Instant};

use super::{median, row, Row};
use crate::images;
use crate::lab::load::Load;
use crate::lab::{ha_spec, poll, poll_every, Lab, Options, Spec};

const STAGE: u8 = 6;
const EXTRA: [&str; 5] = ["s3", "s4", "s5", "s6", "s7"];
const ROUNDS: usize = 2;
const KILLS: usize = 6;
const HA_RESTARTS: usize = 3;

#[derive(Debug, Default)]
struct Measured {
    join_served: Vec<f64>,
    stop_out: Vec<f64>,
    kill_out: Vec<f64>,
    scale_sent: u64,
    scale_failed: u64,
    kill_sent: u64,
    kill_failed: u64,
    /// Seconds back in rotation after each `docker restart ha` (NaN: not
    /// back within the deadline).
    restart_back: Vec<f64>,
    /// The same after ha was recreated.
    recreate_back: f64,
    restart_sent: u64,
    restart_failed: u64,
    /// What one client holding its cookies saw of its session throughout.
    session: crate::lab::load::SessionReport,
}

/// The agents' gossip interval (LAN profile), in seconds.
const GOSSIP_INTERVAL: f64 = 0.2;

pub(super) fn rows() -> Result<Vec<Row>> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(images::ensure_images(STAGE))?;
    let ours = rt.block_on(measure("reconciler"))?;
    let lab = rt.block_on(measure("lab"))?;
    let med = |v: &[f64]| median(v);
    let peer = "lab's handler + -sf restart";
    Ok(vec![
        row(
            "failed requests during 20 scale events (steady load through ha)",
            "requests",
            ours.scale_failed as f64,
            lab.scale_failed as f64,
            peer,
            &format!("0 for ours (of {} sent)", ours.scale_sent),
            ours.scale_failed == 0,
        ),
        row(
            "join -> first request served by the new web app, median of 10",
            "s",
            med(&ours.join_served),
            med(&lab.join_served),
            peer,
            // Both modes hear of the member through the same agent, whose
            // gossip reaches ha at a random round: the medians of the two
            // differ by up to a gossip interval from run to run, either way.
            "< 1.5 s and no slower than the lab's (+0.2 s, one gossip interval)",
            med(&ours.join_served) < 1.5
                && med(&ours.join_served) <= med(&lab.join_served) + GOSSIP_INTERVAL,
        ),
        row(
            "graceful stop -> out of rotation, median of 10",
            "s",
            med(&ours.stop_out),
            med(&lab.stop_out),
            peer,
            "no slower than the lab's (+0.2 s, one gossip interval)",
            med(&ours.stop_out) <= med(&lab.stop_out) + GOSSIP_INTERVAL,
        ),
        row(
            &format!("kill -9 -> out of rotation, median of {KILLS}"),
            "s",
            med(&ours.kill_out),
            med(&lab.kill_out),
            peer,
            // Both are bounded by the same health check (inter 500ms fall 1):
            // allow half an interval of phase jitter.
            "no slower than the lab's + 0.25 s",
            med(&ours.kill_out) <= med(&lab.kill_out) + 0.25,
        ),
        row(
            &format!(
                "docker restart ha -> every web app back in rotation once HAProxy answers, worst of {HA_RESTARTS}"
            ),
            "s",
            worst(&ours.restart_back),
            worst(&lab.restart_back),
            peer,
            "<= 2 s",
            worst(&ours.restart_back) <= 2.0,
        ),
        row(
            "ha recreated (no snapshot, no config) -> every web app back in rotation once HAProxy answers",
            "s",
            ours.recreate_back,
            lab.recreate_back,
            peer,
            "<= 2 s",
            ours.recreate_back <= 2.0,
        ),
        row(
            &format!(
                "failed requests around {HA_RESTARTS} docker restart ha and a recreate, once HAProxy answers"
            ),
            "requests",
            ours.restart_failed as f64,
            lab.restart_failed as f64,
            peer,
            &format!("0 for ours (of {} sent)", ours.restart_sent),
            ours.restart_failed == 0,
        ),
        row(
            "one cookie through every event: sessionViews going back (a lost session); ours: sticky + Redis, lab: round robin + in-memory",
            "resets",
            ours.session.resets as f64,
            lab.session.resets as f64,
            peer,
            &format!("0 for ours (of {} visits)", ours.session.visits),
            ours.session.visits > 0 && ours.session.resets == 0,
        ),
        row(
            "one cookie through every event: sessionViews jumping (a visit counted twice or never shown)",
            "skips",
            ours.session.skips as f64,
            lab.session.skips as f64,
            peer,
            "0 for ours",
            ours.session.visits > 0 && ours.session.skips == 0,
        ),
        row(
            &format!("failed requests around {KILLS} docker kills (what retries do not absorb)"),
            "requests",
            ours.kill_failed as f64,
            lab.kill_failed as f64,
            peer,
            &format!("0 for ours (of {} sent)", ours.kill_sent),
            ours.kill_failed == 0,
        ),
    ])
}

/// The largest value, NaN (never back) above all.
fn worst(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, |a: f64, b| {
        if b.is_nan() || a.is_nan() {
            f64::NAN
        } else {
            a.max(b)
        }
    })
}

/// A web app of the final stage; with the lab's mechanism, sessions in its
/// own memory, as in the lab (ours: the image's default, the shared store).
fn webapp<'a>(name: &'a str, mode: &str) -> Spec<'a> {
    Spec {
        image: "webapp",
        stage: STAGE,
        name,
        env: if mode == "lab" {
            vec![("SESSION_STORE", "memory".to_string())]
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}

/// A join served later than this is unusual (the median is under 1 s):
/// the bench shows what ha's agent and handlers said meanwhile.
const SLOW_JOIN_SECS: f64 = 5.0;

/// A stopped web app still in rotation after this long was taken out by
/// its closing port (after the web app's 3 s shutdown delay), not by the
/// leave: the bench shows what ha heard.
const SLOW_STOP_SECS: f64 = 2.5;

/// Prints ha's recent log lines about handlers and `name`, and the end of
/// the handlers' log, to tell a handler that hung (killed after
/// `-handler-timeout`) from an event that came late or not at all.
async fn explain_slow(lab: &Lab, name: &str) {
    match lab.logs("ha").await {
        Ok(log) => {
            let lines: Vec<&str> = log.lines().collect();
            for line in &lines[lines.len().saturating_sub(300)..] {
                if line.contains(name) || line.contains("handler") || line.contains("haproxy") {
                    eprintln!("      ha: {line}");
                }
            }
        }
        Err(e) => eprintln!("      (no logs of ha: {e:#})"),
    }
    // The handlers' own log (lab mode; absent with the reconciler).
    if let Ok(log) = lab
        .exec("ha", &["tail", "-n", "30", "/var/log/serf.log"])
        .await
    {
        for line in log.lines() {
            eprintln!("      serf.log: {line}");
        }
    }
}

/// Poll the stats until `name` is (`up`) or is not (`!up`) listed UP in
/// the `nodes` backend; HAProxy restarting (lab mode) reads as "not yet".
async fn wait_rotation(lab: &Lab, name: &str, up: bool) -> Result<Instant> {
    // Every 50 ms: the transitions timed here take a few tenths of a second.
    poll_every(
        &format!("{name} {} rotation", if up { "in" } else { "out of" }),
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let rows = match lab.haproxy_stats().await {
                Ok(r) => r,
                Err(_) => return Ok(None),
            };
            let is_up = rows
                .iter()
                .any(|(px, sv, st)| px == "nodes" && sv == name && st.starts_with("UP"));
            Ok((is_up == up).then(Instant::now))
        },
    )
    .await
}

async fn measure(mode: &str) -> Result<Measured> {
    eprintln!("bench scaling: HA_RELOAD={mode}");
    let mut lab = Lab::new().await?;
    let result = scenario(&mut lab, mode).await;
    lab.teardown(&Options::default()).await?;
    result
}

async fn scenario(lab: &mut Lab, mode: &str) -> Result<Measured> {
    let mut m = Measured::default();
    lab.start(ha_spec(STAGE, mode)).await?;
    for name in ["s1", "s2"] {
        lab.start(webapp(name, mode)).await?;
        wait_rotation(lab, name, true).await?;
    }
    let load = Load::start(lab.ha(80)?);
    let before = load.snapshot();
    for round in 0..ROUNDS {
        for name in EXTRA {
            let t0 = Instant::now();
            let ip = lab.start(webapp(name, mode)).await?.to_string();
            load.forget(&ip);
            let first = poll(
                &format!("a first answer from {name} ({ip})"),
                Duration::from_secs(60),
                || async { Ok(load.seen(&ip).map(|(first, _)| first)) },
            )
            .await?;
            let secs = first.duration_since(t0).as_secs_f64();
            eprintln!("   [{mode}] round {round}: {name} joined, served after {secs:.2} s");
            if secs > SLOW_JOIN_SECS {
                explain_slow(lab, name).await;
            }
            m.join_served.push(secs);
            wait_rotation(lab, name, true).await?;
        }
        for name in EXTRA {
            let t0 = Instant::now();
            let shared: &Lab = lab;
            let (stopped, out) =
                tokio::join!(shared.stop_only(name), wait_rotation(shared, name, false));
            stopped?;
            let out = out?;
            lab.stop(name).await?; // already stopped: removes it
            let secs = out.duration_since(t0).as_secs_f64();
            eprintln!("   [{mode}] round {round}: {name} stopped, out after {secs:.2} s");
            if secs > SLOW_STOP_SECS {
                explain_slow(lab, name).await;
            }
            m.stop_out.push(secs);
        }
    }
    let after = load.snapshot();
    m.scale_sent = after.0 - before.0;
    m.scale_failed = after.1 - before.1;
    // Fresh names: Docker gives each the address the last one died with,
    // while the agents still list the dead ones as alive for a few seconds.
    for i in 1..=KILLS {
        let name = &format!("k{i}");
        lab.start(webapp(name, mode)).await?;
        wait_rotation(lab, name, true).await?;
        let t0 = Instant::now();
        lab.kill(name).await?;
        let out = wait_rotation(lab, name, false).await?;
        let secs = out.duration_since(t0).as_secs_f64();
        eprintln!("   [{mode}] {name} killed, out after {secs:.2} s");
        m.kill_out.push(secs);
        lab.stop(name).await?;
    }
    let after_kills = load.snapshot();
    let ips = lab.ips_of(&["s1", "s2"])?;
    m.recreate_back = f64::NAN;
    for i in 1..=HA_RESTARTS + 1 {
        let recreate = i > HA_RESTARTS;
        let t0 = lab
            .bounce_ha(&load, &ips, recreate.then(|| ha_spec(STAGE, mode)))
            .await?;
        let what = if recreate {
            "ha recreated".to_string()
        } else {
            format!("docker restart ha #{i}")
        };
        match load.wait_back(&ips, t0).await {
            Ok(back) => {
                eprintln!(
                    "   [{mode}] {what}: answered after {:.2} s, every web app back {:.2} s later",
                    back.answered_after, back.all_served_after
                );
                if recreate {
                    m.recreate_back = back.all_served_after;
                } else {
                    m.restart_back.push(back.all_served_after);
                }
            }
            Err(e) => {
                eprintln!("   [{mode}] {what}: {e:#}");
                if !recreate {
                    m.restart_back.push(f64::NAN);
                }
                break;
            }
        }
    }
    let report = load.stop().await;
    m.session = report.session.clone();
    m.kill_sent = after_kills.0 - after.0;
    m.kill_failed = after_kills.1 - after.1;
    m.restart_sent = report.sent - after_kills.0 - report.in_window;
    m.restart_failed = report.failed - after_kills.1;
    eprintln!(
        "   [{mode}] load: {} sent, {} failed during scaling, {} around kills; e.g. {:?}; one cookie: {} visits, {} resets, {} skips {:?}",
        report.sent, m.scale_failed, m.kill_failed, report.samples,
        report.session.visits, report.session.resets, report.session.skips, report.session.samples
    );
    crate::lab::load::print_haproxy_failures(mode, "ha").await;
    Ok(m)
}
