//! `cargo xtask chaos`: faults at random under a steady load, nothing lost.
//!
//! Deploys the final stage (ha with the reconciler, three web apps), runs
//! the steady bounded load of [`super::load`] through ha (loopback only)
//! for `--minutes`, and meanwhile injects one fault at a time, chosen at
//! random from a printed seed (`--seed` replays the same sequence of
//! choices): a web app started, stopped (`docker stop`), killed (`docker
//! kill`), paused then resumed (`docker pause`/`unpause`), disconnected from
//! the network then reconnected with its address (a partition); ha's agent
//! killed (`kill -9`) or restarted (`s6-svc -t`); ha restarted (`docker
//! restart`) or recreated. The web apps stay between 1 and 5; a paused or
//! partitioned one is resumed or reconnected after 1 to 20 s.
//!
//! After each fault, and after each resume or reconnection, it polls within
//! a deadline per kind (printed at the start) until HAProxy's UP servers
//! are exactly the running, reachable web apps (and none is left for a web
//! app that is gone) and every reachable agent's `serf members` lists the
//! same alive set; a paused or partitioned web app must stay out of
//! rotation as long as it is so. ha's agent restarts also keep HAProxy's
//! servers unchanged throughout (task 6's check).
//!
//! One fault at a time: once a fault has converged, the next waits until
//! the requests it held (a paused or cut-off web app answers them late)
//! have ended. Every request counts in the phase of the fault in progress
//! when it was sent. None may fail in any phase; only while ha itself restarts may a
//! request get no HTTP answer (the restart window, counted apart); an HTTP
//! error always fails. The clients wait up to 60 s, longer than HAProxy's
//! `timeout server` (50 s): HAProxy, not the client, decides when a request
//! held by a paused web app has failed.
//!
//! The table (per kind: faults, requests sent, failed, without an answer
//! while ha restarted, slowest request, slowest convergence) is printed and
//! written to `target/chaos/chaos.{md,json}`, and HAProxy's log lines of
//! the requests that failed or took a retry to `target/chaos/haproxy.log`.

use anyhow::{anyhow, ensure, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::load::{Load, LoadConfig, LoadReport, PhaseCounts};
use super::task6::{agent_pid, hold_servers_timed, AGENT_SERVICE};
use super::{poll, Lab, Options, Spec};
use crate::checks::Checks;
use crate::engine::{self, HEIG};
use crate::{images, project};

const STAGE: u8 = 6;
/// Web apps deployed before the first fault (as in the measure).
const FIRST_WEB_APPS: usize = 3;
const MAX_WEB_APPS: usize = 5;
/// How long a paused or partitioned web app stays so.
const HOLD_MS: std::ops::RangeInclusive<u64> = 1_000..=20_000;
/// Quiet time between two faults.
const GAP_MS: std::ops::RangeInclusive<u64> = 1_000..=3_000;
/// The clients' patience: beyond HAProxy's `timeout server` (50 s).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Every docker call of the scenario ends within this.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);
/// The load's phase between faults.
const STEADY: &str = "between faults";

/// How a chaos run behaves.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Inject faults for this many minutes (the fault in progress then
    /// finishes).
    pub minutes: u64,
    /// Replay the run of this seed; a fresh one (printed) when `None`.
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Start,
    Stop,
    Kill,
    Pause,
    Unpause,
    Disconnect,
    Reconnect,
    KillAgent,
    RestartAgent,
    RestartHa,
    RecreateHa,
}

const KINDS: [Kind; 11] = [
    Kind::Start,
    Kind::Stop,
    Kind::Kill,
    Kind::Pause,
    Kind::Unpause,
    Kind::Disconnect,
    Kind::Reconnect,
    Kind::KillAgent,
    Kind::RestartAgent,
    Kind::RestartHa,
    Kind::RecreateHa,
];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Start => "web app started",
            Kind::Stop => "docker stop",
            Kind::Kill => "docker kill",
            Kind::Pause => "docker pause",
            Kind::Unpause => "docker unpause",
            Kind::Disconnect => "network disconnect",
            Kind::Reconnect => "network connect",
            Kind::KillAgent => "ha's agent kill -9",
            Kind::RestartAgent => "ha's agent s6-svc -t",
            Kind::RestartHa => "docker restart ha",
            Kind::RecreateHa => "ha recreated",
        }
    }

    /// From the fault to HAProxy and the agents agreeing. Generous: a
    /// partition heals when an agent's reconnect (every 30 s, to one
    /// failed member at random, the dead ones included) reaches the other
    /// side.
    fn deadline(self) -> Duration {
        Duration::from_secs(match self {
            Kind::Pause | Kind::Disconnect => 30,
            Kind::Start | Kind::Stop | Kind::Kill | Kind::Unpause => 60,
            Kind::KillAgent | Kind::RestartAgent | Kind::RestartHa | Kind::RecreateHa => 120,
            Kind::Reconnect => 180,
        })
    }
}

/// One random choice of the run.
#[derive(Debug, Clone, PartialEq)]
enum Fault {
    Start(String),
    Stop(String),
    Kill(String),
    Pause(String, Duration),
    Partition(String, Duration),
    Agent { graceful: bool },
    Ha { recreate: bool },
}

impl Fault {
    fn describe(&self) -> String {
        match self {
            Fault::Start(n) => format!("start {n}"),
            Fault::Stop(n) => format!("docker stop {n}"),
            Fault::Kill(n) => format!("docker kill {n}"),
            Fault::Pause(n, d) => format!("docker pause {n} for {:.1} s", d.as_secs_f64()),
            Fault::Partition(n, d) => format!(
                "disconnect {n} from the network for {:.1} s",
                d.as_secs_f64()
            ),
            Fault::Agent { graceful: false } => "kill -9 ha's agent".into(),
            Fault::Agent { graceful: true } => "restart ha's agent (s6-svc -t)".into(),
            Fault::Ha { recreate: false } => "docker restart ha".into(),
            Fault::Ha { recreate: true } => "recreate ha (stop, rm, run)".into(),
        }
    }
}

/// The next fault: a kind drawn with weights among those that keep 1 to 5
/// web apps running and reachable, then its web app and duration. Only
/// `rng` decides, so a seed replays the same sequence.
fn choose(rng: &mut ChaCha8Rng, web_apps: &[String], next_name: &str) -> Fault {
    let n = web_apps.len();
    let (grow, shrink) = (n < MAX_WEB_APPS, n > 1);
    // (eligible, weight): start, stop, kill, pause, partition, agent, ha.
    let menu = [
        (grow, 4),
        (shrink, 2),
        (shrink, 2),
        (shrink, 3),
        (shrink, 3),
        (true, 2),
        (true, 2),
    ];
    let total: u32 = menu.iter().filter(|(ok, _)| *ok).map(|(_, w)| w).sum();
    let mut x = rng.random_range(0..total);
    let mut pick = 0;
    for (i, (ok, w)) in menu.iter().enumerate() {
        if !ok {
            continue;
        }
        if x < *w {
            pick = i;
            break;
        }
        x -= w;
    }
    let mut target = || web_apps[rng.random_range(0..n)].clone();
    match pick {
        0 => Fault::Start(next_name.into()),
        1 => Fault::Stop(target()),
        2 => Fault::Kill(target()),
        3 | 4 => {
            let name = target();
            let hold = Duration::from_millis(rng.random_range(HOLD_MS));
            if pick == 3 {
                Fault::Pause(name, hold)
            } else {
                Fault::Partition(name, hold)
            }
        }
        5 => Fault::Agent {
            graceful: rng.random_bool(0.5),
        },
        _ => Fault::Ha {
            recreate: rng.random_bool(0.5),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Reach {
    Up,
    Paused,
    Partitioned,
}

/// The web apps that exist, and whether each can be reached.
#[derive(Debug, Default)]
struct Fleet {
    apps: BTreeMap<String, Reach>,
    started: u32,
}

impl Fleet {
    /// The name the next started web app gets (never reused).
    fn next_name(&self) -> String {
        format!("w{}", self.started + 1)
    }

    fn names(&self) -> Vec<String> {
        self.apps.keys().cloned().collect()
    }

    fn with(&self, reach: Reach) -> BTreeSet<String> {
        self.apps
            .iter()
            .filter(|(_, r)| **r == reach)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// What one fault (or its resolution) gave.
#[derive(Debug, Clone, Serialize)]
struct Record {
    n: u32,
    /// Seconds since the load started.
    at_s: f64,
    kind: &'static str,
    target: String,
    detail: String,
    convergence_s: Option<f64>,
    deadline_s: u64,
    error: Option<String>,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
struct Row {
    kind: String,
    faults: usize,
    sent: u64,
    failed: u64,
    no_answer_while_ha_restarted: u64,
    slowest_request_s: f64,
    requests_over_1s: u64,
    slowest_convergence_s: Option<f64>,
    deadline_s: Option<u64>,
    failure_samples: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Summary {
    seed: u64,
    minutes: u64,
    faults: usize,
    sent: u64,
    failed: u64,
    no_answer_while_ha_restarted: u64,
    client_timeout_s: u64,
    rows: Vec<Row>,
    records: Vec<Record>,
}

pub async fn chaos(opts: &ChaosOptions) -> Result<Checks> {
    let seed = opts.seed.unwrap_or_else(fresh_seed);
    let mut checks = Checks::new(format!(
        "Chaos: faults at random for {} min under load (seed {seed})",
        opts.minutes
    ));
    eprintln!(
        "   seed {seed}: replay with `cargo xtask chaos --minutes {} --seed {seed}`",
        opts.minutes
    );
    eprintln!(
        "   convergence deadlines: {}",
        KINDS
            .iter()
            .map(|k| format!("{} {} s", k.label(), k.deadline().as_secs()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    checks.step("building the images (cached when nothing changed)");
    images::ensure_images(STAGE).await?;
    let mut lab = Lab::new().await?;
    checks.step(&format!(
        "deploying ha (reconciler) and {FIRST_WEB_APPS} web apps"
    ));
    lab.start(ha_spec()).await?;
    let mut fleet = Fleet::default();
    for _ in 0..FIRST_WEB_APPS {
        let name = fleet.next_name();
        lab.start(web_spec(&name)).await?;
        fleet.started += 1;
        fleet.apps.insert(name, Reach::Up);
    }
    let deployed = checks
        .check(
            "deployed: HAProxy serves the 3 web apps, every agent lists them alive",
            || async {
                let (took, detail) =
                    converge(&lab, &fleet, Duration::from_secs(120), Instant::now()).await?;
                Ok(format!("{detail} ({:.1} s)", took.as_secs_f64()))
            },
        )
        .await;
    if !deployed {
        lab.teardown(&Options::default()).await?;
        return Ok(checks);
    }

    let run_for = Duration::from_secs(opts.minutes * 60);
    let load = Load::start_with(
        lab.ha(80)?,
        LoadConfig {
            max_duration: run_for + Duration::from_secs(900),
            client_timeout: CLIENT_TIMEOUT,
        },
    );
    load.set_phase(STEADY);
    let began = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut records: Vec<Record> = Vec::new();
    let mut ha_log: Vec<String> = Vec::new();
    let mut n = 0u32;
    while began.elapsed() < run_for {
        n += 1;
        let fault = choose(&mut rng, &fleet.names(), &fleet.next_name());
        let gap = Duration::from_millis(rng.random_range(GAP_MS));
        let at = began.elapsed().as_secs_f64();
        checks.step(&format!("fault {n} at {at:.0} s: {}", fault.describe()));
        let done = inject(&mut lab, &mut fleet, &load, &fault, &mut ha_log).await;
        load.set_phase(STEADY);
        // One fault at a time: the next one waits for the requests this
        // one held (a paused or cut-off web app answers them late), so
        // that each request's fate belongs to the fault it was sent in.
        let drained = load.drained(CLIENT_TIMEOUT + Duration::from_secs(10)).await;
        let mut done = done;
        if let Ok(Some(last)) = done.as_mut().map(|o| o.last_mut()) {
            match drained {
                Ok(t) if t >= Duration::from_millis(500) => {
                    last.detail = format!(
                        "{}; its held requests ended {:.1} s later",
                        last.detail,
                        t.as_secs_f64()
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    last.error.get_or_insert(format!("{e:#}"));
                }
            }
        }
        let outcomes = match done {
            Ok(o) => o,
            Err(e) => {
                // The stack could not be brought back to a known state: stop
                // injecting.
                checks
                    .check(&format!("fault {n}: {}", fault.describe()), || async {
                        Err(e.context("the scenario could not carry the fault out"))
                    })
                    .await;
                break;
            }
        };
        for o in outcomes {
            let record = Record {
                n,
                at_s: at,
                kind: o.kind.label(),
                target: o.target,
                detail: o.detail,
                convergence_s: o.convergence.map(|d| d.as_secs_f64()),
                deadline_s: o.kind.deadline().as_secs(),
                error: o.error,
            };
            checks
                .check(
                    &format!(
                        "fault {n}, {} {}: converged within {} s",
                        record.kind, record.target, record.deadline_s
                    ),
                    || async {
                        match (&record.error, record.convergence_s) {
                            (None, Some(s)) => Ok(format!("{s:.1} s; {}", record.detail)),
                            (Some(e), _) => Err(anyhow!("{e}")),
                            (None, None) => Err(anyhow!("no convergence measured")),
                        }
                    },
                )
                .await;
            records.push(record);
        }
        tokio::time::sleep(gap).await;
    }
    checks.step(&format!(
        "{n} faults in {:.0} s; stopping the load",
        began.elapsed().as_secs_f64()
    ));
    let report = load.stop().await;
    checks
        .check(
            "at the end, HAProxy serves every web app and the agents agree",
            || async {
                let (_, detail) =
                    converge(&lab, &fleet, Duration::from_secs(120), Instant::now()).await?;
                Ok(detail)
            },
        )
        .await;
    let summary = summarise(seed, opts.minutes, n as usize, &report, records);
    checks
        .check("no request failed, in any phase", || async {
            let bad: Vec<String> = summary
                .rows
                .iter()
                .filter(|r| r.failed > 0)
                .map(|r| format!("{}: {} failed {:?}", r.kind, r.failed, r.failure_samples))
                .collect();
            ensure!(bad.is_empty(), "{}", bad.join("; "));
            Ok(format!("0 of {} requests failed", summary.sent))
        })
        .await;
    checks
        .check(
            "requests without an answer only while ha itself restarted",
            || async {
                let restarts = [Kind::RestartHa.label(), Kind::RecreateHa.label()];
                let bad: Vec<String> = summary
                    .rows
                    .iter()
                    .filter(|r| {
                        r.no_answer_while_ha_restarted > 0 && !restarts.contains(&r.kind.as_str())
                    })
                    .map(|r| format!("{}: {}", r.kind, r.no_answer_while_ha_restarted))
                    .collect();
                ensure!(bad.is_empty(), "{}", bad.join("; "));
                Ok(format!(
                    "{} without an answer, all while ha restarted",
                    summary.no_answer_while_ha_restarted
                ))
            },
        )
        .await;

    let table = markdown(&summary);
    println!("{table}");
    let dir = project::target_dir().join("chaos");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("chaos.md"), &table)?;
    std::fs::write(
        dir.join("chaos.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    ha_log.extend(haproxy_log_lines("ha").await);
    let mut log_text = ha_log.join("\n");
    log_text.push('\n');
    std::fs::write(dir.join("haproxy.log"), log_text)?;
    for file in ["chaos.md", "chaos.json", "haproxy.log"] {
        checks.deliverable(&dir.join(file));
    }
    eprintln!(
        "   seed {seed}; table in {}; HAProxy logged {} request(s) that failed or took a retry",
        dir.join("chaos.md").display(),
        ha_log.len()
    );
    crate::lab::load::print_haproxy_failures("chaos", "ha").await;
    lab.teardown(&Options::default()).await?;
    Ok(checks)
}

fn ha_spec() -> Spec<'static> {
    super::ha_spec(STAGE, "reconciler")
}

fn web_spec(name: &str) -> Spec<'_> {
    Spec {
        image: "webapp",
        stage: STAGE,
        name,
        ..Default::default()
    }
}

/// What one fault or resolution gave.
struct Outcome {
    kind: Kind,
    target: String,
    detail: String,
    convergence: Option<Duration>,
    error: Option<String>,
}

/// Carry `fault` out (and resolve it: resume, reconnect), waiting for the
/// stack to converge after each step. An `Err` means the stack could not
/// be brought back (a docker call failed); a convergence missed is in the
/// outcome.
async fn inject(
    lab: &mut Lab,
    fleet: &mut Fleet,
    load: &Load,
    fault: &Fault,
    ha_log: &mut Vec<String>,
) -> Result<Vec<Outcome>> {
    match fault {
        Fault::Start(name) => {
            load.set_phase(Kind::Start.label());
            let since = Instant::now();
            lab.start(web_spec(name)).await?;
            fleet.started += 1;
            fleet.apps.insert(name.clone(), Reach::Up);
            Ok(vec![settle(lab, fleet, Kind::Start, name, since).await])
        }
        Fault::Stop(name) => {
            load.set_phase(Kind::Stop.label());
            let ip = lab.ip(name)?.to_string();
            let since = Instant::now();
            lab.stop(name).await?;
            fleet.apps.remove(name);
            load.forget(&ip);
            Ok(vec![settle(lab, fleet, Kind::Stop, name, since).await])
        }
        Fault::Kill(name) => {
            load.set_phase(Kind::Kill.label());
            let ip = lab.ip(name)?.to_string();
            let since = Instant::now();
            bounded("docker kill", lab.kill(name)).await?;
            fleet.apps.remove(name);
            load.forget(&ip);
            let outcome = settle(lab, fleet, Kind::Kill, name, since).await;
            // The killed container goes (`docker stop` of an exited one
            // returns at once).
            lab.stop(name).await?;
            Ok(vec![outcome])
        }
        Fault::Pause(name, hold) => {
            load.set_phase(Kind::Pause.label());
            let since = Instant::now();
            bounded("docker pause", lab.pause(name)).await?;
            fleet.apps.insert(name.clone(), Reach::Paused);
            let mut out = settle(lab, fleet, Kind::Pause, name, since).await;
            let kept = stay_out(lab, name, since, since + *hold).await;
            note_hold(&mut out, kept, "paused", *hold);
            load.set_phase(Kind::Unpause.label());
            let since = Instant::now();
            bounded("docker unpause", lab.unpause(name)).await?;
            fleet.apps.insert(name.clone(), Reach::Up);
            let back = settle(lab, fleet, Kind::Unpause, name, since).await;
            Ok(vec![out, back])
        }
        Fault::Partition(name, hold) => {
            load.set_phase(Kind::Disconnect.label());
            let ip = lab.ip(name)?.to_string();
            let since = Instant::now();
            bounded(
                "docker network disconnect",
                engine::disconnect(HEIG.name, name),
            )
            .await?;
            fleet.apps.insert(name.clone(), Reach::Partitioned);
            let mut out = settle(lab, fleet, Kind::Disconnect, name, since).await;
            let kept = stay_out(lab, name, since, since + *hold).await;
            note_hold(&mut out, kept, "disconnected", *hold);
            load.set_phase(Kind::Reconnect.label());
            let since = Instant::now();
            // Back with its address, as after a real partition; should
            // another container hold it by now, with a new one.
            let mut readdressed = false;
            let with_ip = engine::connect(HEIG.name, name, Some(&ip), &[]);
            if let Err(e) = bounded("docker network connect --ip", with_ip).await {
                eprintln!(
                    "   {name} could not get {ip} back ({e:#}); reconnecting it with a new address"
                );
                bounded(
                    "docker network connect",
                    engine::connect(HEIG.name, name, None, &[]),
                )
                .await?;
                readdressed = true;
            }
            let new_ip = lab.refresh_ip(name).await?;
            fleet.apps.insert(name.clone(), Reach::Up);
            let mut back = settle(lab, fleet, Kind::Reconnect, name, since).await;
            if readdressed {
                back.detail = format!("new address {new_ip}; {}", back.detail);
            }
            Ok(vec![out, back])
        }
        Fault::Agent { graceful } => {
            let kind = if *graceful {
                Kind::RestartAgent
            } else {
                Kind::KillAgent
            };
            load.set_phase(kind.label());
            let names = fleet.names();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let before = agent_pid(lab).await?;
            let since = Instant::now();
            if *graceful {
                bounded(
                    "s6-svc -t",
                    lab.exec("ha", &["s6-svc", "-t", AGENT_SERVICE]),
                )
                .await?;
            } else {
                let kill = format!("kill -9 {before}");
                bounded("kill -9", lab.exec("ha", &["sh", "-c", &kill])).await?;
            }
            let lab: &Lab = lab;
            let fleet: &Fleet = fleet;
            let (held, converged) = tokio::join!(hold_servers_timed(lab, &refs, before), async {
                poll("ha's new agent runs", kind.deadline(), || async {
                    Ok(agent_pid(lab).await.ok().filter(|p| *p != before))
                })
                .await?;
                converge(lab, fleet, kind.deadline(), since).await
            });
            let mut out = outcome(kind, "ha", converged);
            match held {
                Ok((detail, rejoined)) => {
                    out.detail = format!(
                        "new agent rejoined after {:.1} s; {detail}",
                        rejoined.as_secs_f64()
                    )
                }
                Err(e) => {
                    out.error = Some(format!("HAProxy's servers did not hold: {e:#}"));
                }
            }
            Ok(vec![out])
        }
        Fault::Ha { recreate } => {
            let kind = if *recreate {
                Kind::RecreateHa
            } else {
                Kind::RestartHa
            };
            load.set_phase(kind.label());
            let names = fleet.names();
            let names: Vec<&str> = names.iter().map(|n| n.as_ref()).collect();
            let ips = lab.ips_of(&names)?;
            if *recreate {
                ha_log.extend(haproxy_log_lines("ha").await);
            }
            let since = lab.bounce_ha(load, &ips, recreate.then(ha_spec)).await?;
            let back = load.wait_back(&ips, since).await;
            let mut out = settle(lab, fleet, kind, "ha", since).await;
            match back {
                Ok(b) => {
                    out.detail = format!(
                        "HAProxy answered after {:.1} s ({} requests without an answer so far), every web app served {:.1} s later; {}",
                        b.answered_after,
                        load.in_window(),
                        b.all_served_after,
                        out.detail
                    )
                }
                Err(e) => {
                    out.error.get_or_insert(format!("{e:#}"));
                }
            }
            Ok(vec![out])
        }
    }
}

fn outcome(kind: Kind, target: &str, converged: Result<(Duration, String)>) -> Outcome {
    match converged {
        Ok((took, detail)) => Outcome {
            kind,
            target: target.into(),
            detail,
            convergence: Some(took),
            error: None,
        },
        Err(e) => Outcome {
            kind,
            target: target.into(),
            detail: String::new(),
            convergence: None,
            error: Some(format!("{e:#}")),
        },
    }
}

async fn settle(lab: &Lab, fleet: &Fleet, kind: Kind, target: &str, since: Instant) -> Outcome {
    outcome(
        kind,
        target,
        converge(lab, fleet, kind.deadline(), since).await,
    )
}

/// Add to a pause's or partition's outcome how it stayed out of rotation.
fn note_hold(out: &mut Outcome, kept: Result<Held>, state: &str, hold: Duration) {
    match kept {
        Ok(held) => {
            let agent = match held.declared_failed {
                Some(t) => format!(
                    "ha's agent declared it failed after {:.1} s",
                    t.as_secs_f64()
                ),
                None => "ha's agent listed it alive throughout".into(),
            };
            out.detail = format!(
                "{}; not UP at any of {} polls while {state} ({:.1} s); {agent}",
                out.detail,
                held.polls,
                hold.as_secs_f64()
            )
        }
        Err(e) => {
            out.error.get_or_insert(format!("{e:#}"));
        }
    }
}

/// Poll until HAProxy and the agents agree with `fleet`, at most
/// `deadline` after `since`; returns the time from `since` and a summary,
/// which says what was last awaited when it took more than 5 s.
async fn converge(
    lab: &Lab,
    fleet: &Fleet,
    deadline: Duration,
    since: Instant,
) -> Result<(Duration, String)> {
    let mut waited_for: Option<String> = None;
    loop {
        match converged(lab, fleet).await {
            Ok(detail) => {
                let took = since.elapsed();
                let detail = match waited_for {
                    Some(w) if took > Duration::from_secs(5) => {
                        format!("{detail} (last awaited: {w})")
                    }
                    _ => detail,
                };
                return Ok((took, detail));
            }
            Err(e) => waited_for = Some(format!("{e:#}")),
        }
        if since.elapsed() >= deadline {
            anyhow::bail!(
                "not converged within {} s: {}",
                deadline.as_secs(),
                waited_for.unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One look: HAProxy's UP servers are exactly the reachable web apps, it
/// lists no server for a web app that is gone, and ha and every reachable
/// web app list the same alive members: ha and the reachable web apps, and
/// maybe a paused or partitioned one their failure detection has not
/// caught yet. An `Err` says what differs.
async fn converged(lab: &Lab, fleet: &Fleet) -> Result<String> {
    let rows = lab.haproxy_stats().await?;
    let servers: BTreeMap<&str, &str> = rows
        .iter()
        .filter(|(px, sv, _)| px == "nodes" && sv != "BACKEND")
        .map(|(_, sv, st)| (sv.as_str(), st.as_str()))
        .collect();
    let up: BTreeSet<String> = servers
        .iter()
        .filter(|(_, st)| **st == "UP")
        .map(|(sv, _)| sv.to_string())
        .collect();
    let reachable = fleet.with(Reach::Up);
    ensure!(
        up == reachable,
        "HAProxy has {up:?} UP, wanted {reachable:?} (servers {servers:?})"
    );
    let stale: Vec<&str> = servers
        .keys()
        .copied()
        .filter(|s| !fleet.apps.contains_key(*s))
        .collect();
    ensure!(
        stale.is_empty(),
        "HAProxy still lists {stale:?}, which are gone (servers {servers:?})"
    );
    let mut wanted = reachable.clone();
    wanted.insert("ha".into());
    let mut allowed = wanted.clone();
    allowed.extend(fleet.with(Reach::Paused));
    allowed.extend(fleet.with(Reach::Partitioned));
    let asks = wanted.iter().map(|agent| async move {
        let alive = alive_members(lab, agent).await;
        (agent.clone(), alive)
    });
    let mut lists: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (agent, alive) in futures_util::future::join_all(asks).await {
        lists.insert(agent, alive?);
    }
    for (agent, alive) in &lists {
        ensure!(
            wanted.is_subset(alive) && alive.is_subset(&allowed),
            "{agent}'s agent lists {alive:?} alive, wanted {wanted:?}"
        );
    }
    let distinct: BTreeSet<&BTreeSet<String>> = lists.values().collect();
    ensure!(
        distinct.len() == 1,
        "the agents disagree on who is alive: {lists:?}"
    );
    let alive = distinct.into_iter().next().cloned().unwrap_or_default();
    Ok(format!(
        "HAProxy: {} UP; {} agents list {} alive",
        reachable.iter().cloned().collect::<Vec<_>>().join(", "),
        lists.len(),
        alive.iter().cloned().collect::<Vec<_>>().join(", ")
    ))
}

/// How a paused or partitioned web app stayed out.
struct Held {
    polls: u32,
    /// When ha's agent first listed it as not alive (from `since`).
    declared_failed: Option<Duration>,
}

/// Until `until`: `name` (paused or partitioned since `since`) is never UP
/// in HAProxy; also notes when ha's agent stops listing it alive.
async fn stay_out(lab: &Lab, name: &str, since: Instant, until: Instant) -> Result<Held> {
    let mut held = Held {
        polls: 0,
        declared_failed: None,
    };
    loop {
        if let Ok(rows) = lab.haproxy_stats().await {
            held.polls += 1;
            if let Some((_, _, st)) = rows
                .iter()
                .find(|(px, sv, st)| px == "nodes" && sv == name && st.starts_with("UP"))
            {
                return Err(anyhow!("{name} is {st} in HAProxy while unreachable"));
            }
        }
        if held.declared_failed.is_none() {
            if let Ok(alive) = alive_members(lab, "ha").await {
                if !alive.contains(name) {
                    held.declared_failed = Some(since.elapsed());
                }
            }
        }
        let now = Instant::now();
        if now >= until {
            return Ok(held);
        }
        tokio::time::sleep((until - now).min(Duration::from_millis(500))).await;
    }
}

/// Members `serf members` in `container` lists as alive.
async fn alive_members(lab: &Lab, container: &str) -> Result<BTreeSet<String>> {
    let out = bounded("serf members", lab.exec(container, &["serf", "members"])).await?;
    Ok(out
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("alive"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

/// An engine call, ended after [`DOCKER_TIMEOUT`] (a fault must not hang
/// the run).
async fn bounded<T>(what: &str, call: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(DOCKER_TIMEOUT, call)
        .await
        .map_err(|_| anyhow!("{what} did not end within {DOCKER_TIMEOUT:?}"))?
}

/// HAProxy's request log lines in `container`'s log (with `option
/// dontlog-normal`: the requests that failed, or took a retry or a
/// redispatch).
async fn haproxy_log_lines(container: &str) -> Vec<String> {
    engine::logs(container)
        .await
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("localnodes"))
        .map(str::to_owned)
        .collect()
}

fn fresh_seed() -> u64 {
    use std::io::Read as _;
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// The table's rows: one per kind (in [`KINDS`] order), the time between
/// faults, the deployment (`load` before the first phase) if any request
/// fell there.
fn summarise(
    seed: u64,
    minutes: u64,
    faults: usize,
    report: &LoadReport,
    records: Vec<Record>,
) -> Summary {
    let phases: BTreeMap<&str, &PhaseCounts> = report
        .phases
        .iter()
        .map(|(name, c)| (name.as_str(), c))
        .collect();
    let none = PhaseCounts::default();
    let row = |kind: String, faults: usize, conv: Option<f64>, deadline: Option<u64>| {
        let c = phases.get(kind.as_str()).copied().unwrap_or(&none);
        Row {
            faults,
            sent: c.sent,
            failed: c.failed,
            no_answer_while_ha_restarted: c.in_window,
            slowest_request_s: c.slowest_ms as f64 / 1000.0,
            requests_over_1s: c.over_1s,
            slowest_convergence_s: conv,
            deadline_s: deadline,
            failure_samples: c.samples.clone(),
            kind,
        }
    };
    let mut rows: Vec<Row> = KINDS
        .iter()
        .map(|k| {
            let mine: Vec<&Record> = records.iter().filter(|r| r.kind == k.label()).collect();
            let slowest = mine
                .iter()
                .filter_map(|r| r.convergence_s)
                .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
            row(
                k.label().into(),
                mine.len(),
                slowest,
                Some(k.deadline().as_secs()),
            )
        })
        .collect();
    // The load's first requests, before it is told the phase, are steady
    // ones too.
    let mut steady = row(STEADY.into(), 0, None, None);
    if let Some(first) = phases.get("load") {
        steady.sent += first.sent;
        steady.failed += first.failed;
        steady.no_answer_while_ha_restarted += first.in_window;
        steady.requests_over_1s += first.over_1s;
        steady.slowest_request_s = steady
            .slowest_request_s
            .max(first.slowest_ms as f64 / 1000.0);
        steady.failure_samples.extend(first.samples.iter().cloned());
    }
    rows.push(steady);
    Summary {
        seed,
        minutes,
        faults,
        sent: report.sent,
        failed: report.failed,
        no_answer_while_ha_restarted: report.in_window,
        client_timeout_s: CLIENT_TIMEOUT.as_secs(),
        rows,
        records,
    }
}

fn markdown(s: &Summary) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Chaos run, seed {} (`cargo xtask chaos --minutes {} --seed {}`): {} faults in {} min; \
         load {} requests, {} failed, {} without an answer while ha restarted (clients wait {} s).\n",
        s.seed, s.minutes, s.seed, s.faults, s.minutes, s.sent, s.failed,
        s.no_answer_while_ha_restarted, s.client_timeout_s
    );
    md.push_str("| fault | count | requests sent | failed | no answer while ha restarted | over 1 s | slowest request | slowest convergence | deadline |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &s.rows {
        let count = if r.kind == STEADY {
            "–".to_string()
        } else {
            r.faults.to_string()
        };
        let conv = r
            .slowest_convergence_s
            .map(|c| format!("{c:.1} s"))
            .unwrap_or_else(|| "–".into());
        let deadline = r
            .deadline_s
            .map(|d| format!("{d} s"))
            .unwrap_or_else(|| "–".into());
        let _ = writeln!(
            md,
            "| {} | {count} | {} | {} | {} | {} | {:.2} s | {conv} | {deadline} |",
            r.kind,
            r.sent,
            r.failed,
            r.no_answer_while_ha_restarted,
            r.requests_over_1s,
            r.slowest_request_s
        );
    }
    md.push_str("\nFaults in order:\n\n| # | at | fault | target | convergence | detail |\n|---:|---:|---|---|---:|---|\n");
    for r in &s.records {
        let conv = match (&r.error, r.convergence_s) {
            (Some(_), _) => "FAILED".to_string(),
            (None, Some(c)) => format!("{c:.1} s"),
            (None, None) => "–".into(),
        };
        let detail = r.error.as_deref().unwrap_or(&r.detail).replace('|', "/");
        let _ = writeln!(
            md,
            "| {} | {:.0} s | {} | {} | {conv} | {detail} |",
            r.n, r.at_s, r.kind, r.target
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("w{i}")).collect()
    }

    #[test]
    fn a_seed_replays_the_same_faults() {
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..50)
                .map(|i| choose(&mut rng, &names(1 + i % 5), "w9"))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn the_web_apps_stay_between_one_and_five() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..500 {
            match choose(&mut rng, &names(1), "w2") {
                Fault::Start(_) | Fault::Agent { .. } | Fault::Ha { .. } => {}
                other => panic!("{other:?} would leave no web app"),
            }
            assert!(!matches!(
                choose(&mut rng, &names(5), "w6"),
                Fault::Start(_)
            ));
        }
    }

    #[test]
    fn every_kind_comes_up_and_holds_are_bounded() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let f = choose(&mut rng, &names(3), "w4");
            if let Fault::Pause(_, d) | Fault::Partition(_, d) = &f {
                assert!(HOLD_MS.contains(&(d.as_millis() as u64)));
            }
            seen.insert(std::mem::discriminant(&f));
        }
        assert_eq!(seen.len(), 7);
    }

    #[test]
    fn the_table_has_a_row_per_kind_and_counts_phases() {
        let report = LoadReport {
            sent: 10,
            phases: vec![
                (
                    "load".into(),
                    PhaseCounts {
                        sent: 1,
                        ..Default::default()
                    },
                ),
                (
                    "docker pause".into(),
                    PhaseCounts {
                        sent: 6,
                        slowest_ms: 12_300,
                        over_1s: 4,
                        ..Default::default()
                    },
                ),
                (
                    STEADY.into(),
                    PhaseCounts {
                        sent: 3,
                        ..Default::default()
                    },
                ),
            ],
            ..Default::default()
        };
        let record = Record {
            n: 1,
            at_s: 3.0,
            kind: "docker pause",
            target: "w2".into(),
            detail: "ok".into(),
            convergence_s: Some(1.31),
            deadline_s: 30,
            error: None,
        };
        let s = summarise(9, 1, 1, &report, vec![record]);
        assert_eq!(s.rows.len(), KINDS.len() + 1);
        let md = markdown(&s);
        assert!(
            md.contains("| docker pause | 1 | 6 | 0 | 0 | 4 | 12.30 s | 1.3 s | 30 s |"),
            "{md}"
        );
        // The load's first request, before any phase, counts as steady.
        assert!(
            md.contains("| between faults | – | 4 | 0 | 0 | 0 |"),
            "{md}"
        );
        assert!(
            md.contains("| docker kill | 0 | 0 | 0 | 0 | 0 | 0.00 s | – | 60 s |"),
            "{md}"
        );
    }
}
