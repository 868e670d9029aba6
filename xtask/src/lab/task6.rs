//! Task 6, HAProxy follows the members by itself. The scenario: start ha,
//! then web apps one by one up to five, stop two, start two more, kill one
//! with `docker kill`; after each step HAProxy's runtime state (the stats)
//! must list exactly the running web apps as UP. A steady client load runs
//! through ha from the first backend on. The whole sequence runs twice:
//! with the lab's mechanism (`HA_RELOAD=lab`: handlers render, `s6-svc -h`,
//! restart with `-sf`), whose failure count is reported for comparison, then
//! with our reconciler (default; zero failed requests asserted), which
//! `--keep` leaves running.
//!
//! With the reconciler the sequence goes on with the balancer's own
//! restarts, under the same load: ha's agent killed (`kill -9`, init
//! restarts it) and restarted gracefully (`s6-svc -t`), during which
//! HAProxy's servers must not change at all; then `docker restart ha` and
//! ha recreated (removed, started anew: no snapshot, no config), after
//! which, once HAProxy answers again, every request must succeed and every
//! running web app be back in rotation. Requests with no HTTP answer while
//! ha itself is down are the restart window, counted apart.
//! Deliverables: stats screenshots and `docker ps` at each step.

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::baseline::wait_servers_up;
use super::load::{Load, LoadReport};
use super::{environ, poll, save_docker_ps, Lab, Options, Spec};
use crate::charts::{self, TimelineRun};
use crate::checks::Checks;
use crate::{images, project, shot};

const STAGE: u8 = 6;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Reconciler,
    Lab,
}

impl Mode {
    fn env(self) -> &'static str {
        match self {
            Mode::Reconciler => "reconciler",
            Mode::Lab => "lab",
        }
    }
}

enum Step {
    Start(&'static str),
    Stop(&'static str),
    Kill(&'static str),
    /// `kill -9` of ha's agent (init restarts it).
    KillAgent,
    /// `s6-svc -t` of ha's agent: a graceful leave, then a new agent.
    RestartAgent,
    /// `docker restart ha`.
    RestartHa,
    /// ha removed and started anew (a new container).
    RecreateHa,
}

impl Step {
    /// The step's name on the timeline chart.
    fn mark(&self) -> String {
        match self {
            Step::Start(n) => format!("start {n}"),
            Step::Stop(n) => format!("stop {n}"),
            Step::Kill(n) => format!("kill {n}"),
            Step::KillAgent => "agent kill -9".into(),
            Step::RestartAgent => "agent s6-svc -t".into(),
            Step::RestartHa => "docker restart ha".into(),
            Step::RecreateHa => "ha recreated".into(),
        }
    }
}

const STEPS: &[Step] = &[
    Step::Start("s1"),
    Step::Start("s2"),
    Step::Start("s3"),
    Step::Start("s4"),
    Step::Start("s5"),
    Step::Stop("s1"),
    Step::Stop("s2"),
    Step::Start("s6"),
    Step::Start("s7"),
    Step::Kill("s3"),
];

/// The balancer's own restarts, run after [`STEPS`] with the reconciler.
const RESTARTS: &[Step] = &[
    Step::KillAgent,
    Step::RestartAgent,
    Step::RestartHa,
    Step::RecreateHa,
];

pub async fn task6(opts: &Options) -> Result<Checks> {
    let mut checks = Checks::new("Lab task 6: HAProxy follows web apps coming and going");
    checks.step("building the images (cached when nothing changed)");
    images::ensure_images(STAGE).await?;
    // The lab's mechanism first: the final stage's run comes last, so that
    // `--keep` leaves it (the reconciler, sticky, sessions in Redis) running.
    let lab = run_sequence(&mut checks, &Run::LAB, &Options::default()).await?;
    let memory = run_sequence(&mut checks, &Run::STICKY_MEMORY, &Options::default()).await?;
    let ours = run_sequence(&mut checks, &Run::FINAL, opts).await?;
    let timeline: Vec<TimelineRun> = [
        (&Run::LAB, &lab),
        (&Run::STICKY_MEMORY, &memory),
        (&Run::FINAL, &ours),
    ]
    .into_iter()
    .map(|(run, r)| TimelineRun {
        setup: run.setup.to_string(),
        timeline: r.timeline.clone(),
    })
    .collect();
    match charts::save_timeline(&timeline) {
        Ok(svg) => checks.deliverable(&svg),
        Err(e) => eprintln!("   the timeline chart failed: {e:#}"),
    }
    eprintln!("   one cookie through the whole sequence (sessionViews 1, 2, 3, ...):");
    for (run, r) in [
        (&Run::LAB, &lab),
        (&Run::STICKY_MEMORY, &memory),
        (&Run::FINAL, &ours),
    ] {
        eprintln!(
            "      {:<44} {} visits, {} resets, {} skips; {} of {} requests failed",
            run.setup, r.session.visits, r.session.resets, r.session.skips, r.failed, r.sent
        );
    }
    checks
        .check(
            "one cookie through every step of the final stage: sessionViews 1, 2, 3, ... with no reset and no skip",
            || async {
                let s = &ours.session;
                s.unbroken()?;
                Ok(format!(
                    "{}: {} visits, 0 resets, 0 skips (last count {}); {}: {} resets; {}: {} resets",
                    Run::FINAL.setup,
                    s.visits,
                    s.last,
                    Run::STICKY_MEMORY.setup,
                    memory.session.resets,
                    Run::LAB.setup,
                    lab.session.resets
                ))
            },
        )
        .await;
    checks
        .check("zero failed requests with the reconciler", || async {
            ensure!(
                ours.failed == 0,
                "{} of {} requests failed, e.g. {:?}",
                ours.failed,
                ours.sent,
                ours.samples
            );
            Ok(format!(
                "reconciler: 0 of {} failed; lab's -sf restart: {} of {} failed",
                ours.sent, lab.failed, lab.sent
            ))
        })
        .await;
    Ok(checks)
}

/// One run of the sequence: a mechanism and a session store.
struct Run {
    label: &'static str,
    mode: Mode,
    /// `SESSION_STORE` of the web apps; `None`: the image's (Redis, with
    /// the `sessions` container).
    store: Option<&'static str>,
    /// What the run stands for, in the resets table.
    setup: &'static str,
    /// The balancer's restarts after the scale steps, the deliverables,
    /// the final stage's own checks.
    last: bool,
}

impl Run {
    /// (a) The lab's setup: round robin, sessions in each web app's memory.
    const LAB: Run = Run {
        label: "lab",
        mode: Mode::Lab,
        store: Some("memory"),
        setup: "(a) lab: round robin, in-memory",
        last: false,
    };
    /// (b) Our balancer, sticky, sessions still in each web app's memory.
    const STICKY_MEMORY: Run = Run {
        label: "sticky, in-memory",
        mode: Mode::Reconciler,
        store: Some("memory"),
        setup: "(b) reconciler: sticky, in-memory",
        last: false,
    };
    /// (c) The final stage as shipped: sticky, sessions in Redis.
    const FINAL: Run = Run {
        label: "reconciler",
        mode: Mode::Reconciler,
        store: None,
        setup: "(c) reconciler: sticky, Redis (final stage)",
        last: true,
    };
}

async fn run_sequence(checks: &mut Checks, run: &Run, opts: &Options) -> Result<LoadReport> {
    let (label, mode, deliverables) = (run.label, run.mode, run.last);
    let logs = project::task_logs(6)?;
    let assets = project::report_assets()?;
    let mut lab = Lab::new().await?;
    checks.step(&format!("[{label}] starting ha (HA_RELOAD={})", mode.env()));
    lab.start(ha_spec(mode)).await?;
    // The mode's cont-init script decides whether the reconciler runs: only
    // one mechanism may drive HAProxy.
    checks
        .check(
            &format!("[{label}] only the {} mechanism drives HAProxy", mode.env()),
            || async {
                let lab = &lab;
                // Until the cont-init scripts are done (20-reload-mode adds
                // or removes reconcile's `down` file), no service runs and
                // the status says "down 0 seconds, normally up": wait for
                // HAProxy's service, which every mode starts.
                poll("ha's services started", Duration::from_secs(60), || async {
                    Ok(svstat(lab, "ha").await?.starts_with("up").then_some(()))
                })
                .await?;
                match mode {
                    // Spawned after ha's service, maybe not yet: wait for it.
                    Mode::Reconciler => {
                        poll(
                            "the reconcile service up",
                            Duration::from_secs(30),
                            || async move {
                                Ok(svstat(lab, "reconcile")
                                    .await?
                                    .starts_with("up")
                                    .then_some(()))
                            },
                        )
                        .await?;
                        Ok("reconcile service up".to_string())
                    }
                    // Services started: with its `down` file s6 never starts
                    // it, so one read is the truth.
                    Mode::Lab => {
                        let st = svstat(lab, "reconcile").await?;
                        ensure!(
                            !st.starts_with("up") && !st.contains("normally up"),
                            "reconcile service: {st}"
                        );
                        Ok(format!("reconcile service: {st}"))
                    }
                }
            },
        )
        .await;
    let mut running: BTreeSet<&str> = BTreeSet::new();
    let mut load: Option<Load> = None;
    let steps = STEPS.iter().chain(if run.last { RESTARTS } else { &[] });
    for (i, step) in steps.enumerate() {
        let n = i + 1;
        let names: Vec<&str> = running.iter().copied().collect();
        if let Some(l) = &load {
            l.mark(&step.mark());
        }
        let what = match step {
            Step::Start(name) => {
                lab.start(Spec {
                    image: "webapp",
                    stage: STAGE,
                    name,
                    env: run
                        .store
                        .map(|store| vec![("SESSION_STORE", store.to_string())])
                        .unwrap_or_default(),
                    ..Default::default()
                })
                .await?;
                running.insert(name);
                format!("start {name}")
            }
            Step::Stop(name) => {
                lab.stop(name).await?;
                running.remove(name);
                format!("docker stop {name}")
            }
            Step::Kill(name) => {
                lab.kill(name).await?;
                running.remove(name);
                format!("docker kill {name}")
            }
            Step::KillAgent | Step::RestartAgent => {
                let graceful = matches!(step, Step::RestartAgent);
                let what = if graceful {
                    "ha's agent restarted (s6-svc -t)"
                } else {
                    "ha's agent killed (kill -9)"
                };
                let before = agent_pid(&lab).await?;
                if graceful {
                    lab.exec("ha", &["s6-svc", "-t", AGENT_SERVICE]).await?;
                } else {
                    lab.exec("ha", &["sh", "-c", &format!("kill -9 {before}")])
                        .await?;
                }
                checks
                    .check(
                        &format!(
                            "[{label}] step {n}, {what}: HAProxy's servers unchanged throughout"
                        ),
                        || hold_servers(&lab, &names, before),
                    )
                    .await;
                what.to_string()
            }
            Step::RestartHa | Step::RecreateHa => {
                let recreate = matches!(step, Step::RecreateHa);
                let load = load.as_ref().context("the load runs from step 1 on")?;
                let ips = lab.ips_of(&names)?;
                let started = lab
                    .bounce_ha(load, &ips, recreate.then(|| ha_spec(mode)))
                    .await?;
                let what = if recreate {
                    "ha recreated (docker stop, rm, run: no snapshot, no config)"
                } else {
                    "docker restart ha"
                };
                checks
                    .check(
                        &format!("[{label}] step {n}, {what}: once HAProxy answers, every web app is back"),
                        || back_in_rotation(load, &ips, started),
                    )
                    .await;
                what.to_string()
            }
        };
        let names: Vec<&str> = running.iter().copied().collect();
        checks
            .check(
                &format!("[{label}] step {n}, {what}: HAProxy has {names:?} UP"),
                || async {
                    let servers = wait_servers_up(&lab, &names).await?;
                    let (sent, failed) = load.as_ref().map(Load::snapshot).unwrap_or_default();
                    Ok(format!(
                        "{}; load so far {failed}/{sent} failed",
                        servers.join(", ")
                    ))
                },
            )
            .await;
        if load.is_none() {
            // From the first backend on, clients expect answers.
            load = Some(Load::start(lab.ha(80)?));
        }
        if deliverables {
            save_docker_ps(checks, &logs, &format!("docker-ps-step{n:02}.txt")).await?;
            let png = assets.join(format!("task6-step{n:02}.png"));
            let url = format!("http://{}/", lab.ha(1936)?);
            let p = png.clone();
            match shot::screenshot(&url, &p).await {
                Ok(()) => checks.deliverable(&png),
                Err(e) => eprintln!("   screenshot of step {n} failed: {e:#}"),
            }
        }
    }
    if run.last {
        checks
            .check(
                "[reconciler] HAProxy's admin API answers only inside ha; the stats page is read-only",
                || admin_api_is_private(&lab),
            )
            .await;
        checks
            .check(
                "[reconciler] the gossip key is in no environment of a process init started (web app s4, ha) nor in their logs; gossip still encrypted",
                || key_stays_out(&lab),
            )
            .await;
        checks
            .check(
                "[reconciler] the image's 05-gossip-key refuses a 20-byte key and describes it without showing it",
                || bad_key_is_described(&lab),
            )
            .await;
    }
    let report = match load {
        Some(l) => l.stop().await,
        None => LoadReport::default(),
    };
    eprintln!(
        "   [{label}] load: {} requests, {} failed {:?}; {} with no answer while ha restarted",
        report.sent, report.failed, report.samples, report.in_window
    );
    crate::lab::load::print_haproxy_failures(label, "ha").await;
    if run.last {
        let mut killed = None;
        let outcome = killed_users_keep_their_count(&lab, &mut killed).await;
        checks
            .check(
                "[reconciler] a browser's own web app killed (docker kill): its next request is answered by another one, and its count goes on",
                || async { outcome },
            )
            .await;
        if let Some(host) = killed {
            running.retain(|n| *n != host);
        }
        let names: Vec<&str> = running.iter().copied().collect();
        checks
            .check(
                "[reconciler] the session store stopped: every GET / answers 503 with a message (no hang), the web apps stay in rotation; started again, the same cookie counts on",
                || store_outage(&mut lab, &names),
            )
            .await;
    }
    lab.teardown(opts).await?;
    Ok(report)
}

/// A client with a session: the web app that answers it (sticky) is killed
/// with `docker kill`; from then on every request must be answered (HAProxy
/// redispatches it), by another web app, and the first answer carries the
/// next number of the session. `killed` gets the killed web app's name.
async fn killed_users_keep_their_count(lab: &Lab, killed: &mut Option<String>) -> Result<String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("http://{}/", lab.ha(80)?);
    let get = || async {
        let r = client.get(&url).send().await?;
        ensure!(r.status().is_success(), "HTTP {}", r.status());
        let v: serde_json::Value = r.json().await?;
        let host = v["host"].as_str().context("no host")?.to_string();
        let views = v["sessionViews"].as_u64().context("no sessionViews")?;
        Ok::<_, anyhow::Error>((host, views))
    };
    let mut last = get().await?;
    for _ in 0..4 {
        let now = get().await?;
        ensure!(
            now.0 == last.0 && now.1 == last.1 + 1,
            "not sticky before the kill: {last:?} then {now:?}"
        );
        last = now;
    }
    let (host, before) = last;
    lab.kill(&host).await?;
    *killed = Some(host.clone());
    let (to, after) = get()
        .await
        .with_context(|| format!("the first request after {host} was killed"))?;
    ensure!(to != host, "answered by {to}, the killed web app");
    ensure!(
        after == before + 1,
        "the count went from {before} on {host} to {after} on {to}"
    );
    Ok(format!(
        "{host} killed at count {before}; the next request answered by {to} with {after}"
    ))
}

/// `docker stop sessions` after the load: a client holding a session gets
/// an answer to every request, 503 with the web app's message, while
/// HAProxy keeps every web app UP (its health check, `HEAD /`, needs no
/// store); once `sessions` is started again the session is still there
/// (Redis's append-only file) and its count goes on.
async fn store_outage(lab: &mut Lab, names: &[&str]) -> Result<String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("http://{}/", lab.ha(80)?);
    let views = |body: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["sessionViews"].as_u64())
    };
    let mut before = 0;
    for _ in 0..3 {
        let r = client.get(&url).send().await?;
        ensure!(
            r.status().is_success(),
            "before the outage: HTTP {}",
            r.status()
        );
        before = views(&r.bytes().await?).context("no sessionViews before the outage")?;
    }
    lab.stop_only(super::SESSIONS).await?;
    let mut refused = 0;
    for i in 0..20 {
        let r = client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("request {i} with the store stopped got no answer"))?;
        let status = r.status();
        let body = String::from_utf8_lossy(&r.bytes().await?).into_owned();
        ensure!(
            status == reqwest::StatusCode::SERVICE_UNAVAILABLE
                && body.contains("session store unavailable"),
            "request {i} with the store stopped: HTTP {status} {body:?}"
        );
        refused += 1;
    }
    let servers = wait_servers_up(lab, names).await?;
    lab.start_again(super::SESSIONS).await?;
    let after = poll(
        "GET / answers 200 again",
        Duration::from_secs(60),
        || async {
            let r = client.get(&url).send().await?;
            if !r.status().is_success() {
                return Ok(None);
            }
            Ok(views(&r.bytes().await?))
        },
    )
    .await?;
    ensure!(
        after == before + 1,
        "the session's count went from {before} before the outage to {after} after it"
    );
    Ok(format!(
        "{refused} requests answered 503 \"session store unavailable\"; HAProxy meanwhile: {}; after the restart the count went on: {before} -> {after}",
        servers.join(", ")
    ))
}

fn ha_spec(mode: Mode) -> Spec<'static> {
    super::ha_spec(STAGE, mode.env())
}

pub(crate) const AGENT_SERVICE: &str = "/var/run/s6/services/serf";

/// The pid of ha's agent, from `s6-svstat` ("up (pid N) ...").
pub(crate) async fn agent_pid(lab: &Lab) -> Result<u32> {
    let st = lab.exec("ha", &["s6-svstat", AGENT_SERVICE]).await?;
    st.split("pid ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no pid in s6-svstat's {st:?}"))
}

/// Members `serf members` (in `container`) lists as alive.
async fn alive_members(lab: &Lab, container: &str) -> BTreeSet<String> {
    lab.exec(container, &["serf", "members"])
        .await
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("alive"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// While ha's agent restarts: every server of `names` must stay in
/// HAProxy's `nodes` backend and UP at every poll (others, such as a web
/// app killed a moment ago, may only be down or go), until a new agent (not
/// `old_pid`) lists
/// every web app alive and the web apps list ha alive again, and for a few
/// seconds more (two of the reconciler's passes over a synced view).
async fn hold_servers(lab: &Lab, names: &[&str], old_pid: u32) -> Result<String> {
    hold_servers_timed(lab, names, old_pid)
        .await
        .map(|(detail, _)| detail)
}

/// [`hold_servers`], also returning when the new agent had rejoined (from
/// the call).
pub(crate) async fn hold_servers_timed(
    lab: &Lab,
    names: &[&str],
    old_pid: u32,
) -> Result<(String, Duration)> {
    let wanted: BTreeSet<&str> = names.iter().copied().collect();
    let start = Instant::now();
    let mut rejoined: Option<Duration> = None;
    let mut polls = 0u32;
    loop {
        let rows = lab.haproxy_stats().await?;
        let servers: Vec<(&str, &str)> = rows
            .iter()
            .filter(|(px, sv, _)| px == "nodes" && sv != "BACKEND")
            .map(|(_, sv, st)| (sv.as_str(), st.as_str()))
            .collect();
        let up: BTreeSet<&str> = servers
            .iter()
            .filter(|(_, st)| *st == "UP")
            .map(|(sv, _)| *sv)
            .collect();
        if up != wanted {
            bail!(
                "after {:?}, HAProxy's servers changed: {servers:?} (wanted {names:?} UP)",
                start.elapsed()
            );
        }
        polls += 1;
        if rejoined.is_none() {
            let new_agent = agent_pid(lab).await.is_ok_and(|p| p != old_pid);
            let ha_sees = alive_members(lab, "ha").await;
            let seen_by_first = match names.first() {
                Some(w) => alive_members(lab, w).await.contains("ha"),
                None => true,
            };
            if new_agent && wanted.iter().all(|n| ha_sees.contains(*n)) && seen_by_first {
                rejoined = Some(start.elapsed());
            }
        }
        match rejoined {
            Some(t) if start.elapsed() > t + Duration::from_secs(11) => {
                let detail = format!(
                    "{} UP at each of {polls} polls over {:.1} s; the new agent saw every web app alive (and they saw ha) after {:.1} s",
                    names.join(", "),
                    start.elapsed().as_secs_f64(),
                    t.as_secs_f64()
                );
                return Ok((detail, t));
            }
            None if start.elapsed() > Duration::from_secs(120) => bail!(
                "ha's new agent did not see {names:?} alive within 120 s (ha lists {:?})",
                alive_members(lab, "ha").await
            ),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After ha restarted (its published port already given to `load`): wait
/// until it answers again and every web app in `ips` is back in rotation;
/// no request may have failed so far.
async fn back_in_rotation(load: &Load, ips: &[String], started: Instant) -> Result<String> {
    let back = load.wait_back(ips, started).await?;
    let (sent, failed) = load.snapshot();
    ensure!(failed == 0, "{failed} of {sent} requests failed so far");
    Ok(format!(
        "HAProxy answered {:.2} s after the restart began ({} requests without an answer before); all {} web apps served {:.2} s after its first answer; load so far {failed}/{sent} failed",
        back.answered_after,
        load.in_window(),
        ips.len(),
        back.all_served_after,
    ))
}

/// The final stage's admin socket listens on ha's 127.0.0.1 only: from a
/// web app, ha:9999 refuses the connection (before, any container on heig
/// could add, disable or re-address servers); inside ha, `show info`
/// answers; the stats page offers no admin actions.
async fn admin_api_is_private(lab: &Lab) -> Result<String> {
    let probe = "exec 3<>/dev/tcp/ha/9999 && echo 'show info' >&3 && timeout 2 cat <&3";
    let from_web_app = lab.exec_output("s4", &["bash", "-c", probe]).await?;
    let said = &from_web_app.stdout;
    ensure!(
        from_web_app.code != 0 && !said.contains("Name: HAProxy"),
        "from s4, ha:9999 answered: {said}"
    );
    let err = &from_web_app.stderr;
    ensure!(err.contains("refused"), "from s4, ha:9999: {}", err.trim());
    let inside = lab
        .exec(
            "ha",
            &[
                "bash",
                "-c",
                "exec 3<>/dev/tcp/127.0.0.1/9999 && echo 'show info' >&3 && cat <&3",
            ],
        )
        .await?;
    ensure!(
        inside.contains("Name: HAProxy"),
        "inside ha, 127.0.0.1:9999 said: {inside}"
    );
    let page = lab
        .http
        .get(format!("http://{}/", lab.ha(1936)?))
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        page.contains("Statistics Report") && !page.contains("action to perform"),
        "the stats page offers admin actions"
    );
    Ok(format!(
        "from s4: {}; inside ha: show info answers; stats page without actions",
        err.trim().lines().last().unwrap_or_default()
    ))
}

/// The key goes to a root-only file and out of the container environment
/// store (cont-init.d/05-gossip-key); init starts every process with that
/// store, so the web app, the agent, HAProxy and the handlers never see it:
/// `/proc/PID/environ` of each process under PID 1 in s4 and ha has no
/// GOSSIP_KEY and not the value. The agents still encrypt.
async fn key_stays_out(lab: &Lab) -> Result<String> {
    let key = lab.gossip_key();
    let mut said = Vec::new();
    for (c, must) in [("s4", ["webapp", "serf"]), ("ha", ["haproxy", "serf"])] {
        let out = lab.exec(c, &["bash", "-c", environ::PROBE]).await?;
        said.push(environ::check(c, &out, key, &must)?);
        let logs = lab.logs(c).await?;
        ensure!(!logs.contains(key), "{c}'s logs show the gossip key");
        ensure!(
            logs.contains("Encrypted: true"),
            "{c}'s agent does not say `Encrypted: true`"
        );
    }
    let alive = alive_members(lab, "s4").await;
    ensure!(
        alive.contains("ha"),
        "s4's agent does not list ha alive: {alive:?}"
    );
    said.push(format!("both say Encrypted: true; s4 sees {alive:?} alive"));
    Ok(said.join("; "))
}

/// A key of the wrong size: the image's 05-gossip-key (run in s4 on a
/// scratch INIT_ROOT, as init would run it in a new container) stops with
/// one line naming GOSSIP_KEY, its length and what is wrong, not the value.
async fn bad_key_is_described(lab: &Lab) -> Result<String> {
    use base64::Engine as _;
    let key = crate::lab::fresh_gossip_key()?;
    let raw = base64::engine::general_purpose::STANDARD.decode(&key)?;
    let bad = base64::engine::general_purpose::STANDARD.encode(&raw[..20]);
    let var = format!("GOSSIP_KEY={bad}");
    let out = lab
        .exec_output(
            "s4",
            &[
                "env",
                "-i",
                "PATH=/usr/local/bin:/usr/bin:/bin",
                "INIT_ROOT=/tmp/badkey",
                &var,
                "bash",
                "/etc/cont-init.d/05-gossip-key",
            ],
        )
        .await?;
    let said = format!("{}{}", out.stdout, out.stderr);
    ensure!(!said.contains(&bad), "05-gossip-key shows the rejected key");
    ensure!(
        out.code == 1,
        "05-gossip-key exited {} on a 20-byte key",
        out.code
    );
    let line = said
        .lines()
        .find(|l| l.starts_with("gossip-key:"))
        .context("05-gossip-key said nothing")?;
    ensure!(
        line.contains("GOSSIP_KEY (28 base64 characters)") && line.contains("20 bytes"),
        "05-gossip-key says: {line}"
    );
    Ok(line.trim().to_string())
}

/// `s6-svstat` of one of ha's services, trimmed.
async fn svstat(lab: &Lab, service: &str) -> Result<String> {
    let dir = format!("/var/run/s6/services/{service}");
    Ok(lab
        .exec("ha", &["s6-svstat", &dir])
        .await?
        .trim()
        .to_string())
}
