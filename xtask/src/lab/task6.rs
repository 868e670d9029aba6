//! Task 6, HAProxy follows the members by itself. The scenario: start ha,
//! then web apps one by one up to five, stop two, start two more, kill one
//! with `docker kill`; after each step HAProxy's runtime state (the stats)
//! must list exactly the running web apps as UP. A steady client load runs
//! through ha from the first backend on. The whole sequence runs twice:
//! with the lab's mechanism (`HA_RELOAD=lab`: handlers render, `s6-svc -h`,
//! restart with `-sf`), whose failure count is reported for comparison, then
//! with our reconciler (default; zero failed requests asserted), which
//! `--keep` leaves running.
//! Deliverables: stats screenshots and `docker ps` at each step.

use anyhow::{ensure, Result};
use std::collections::BTreeSet;

use super::baseline::wait_servers_up;
use super::load::{Load, LoadReport};
use super::{save_docker_ps, Lab, Options, Spec};
use crate::checks::Checks;
use crate::{docker, images, project, shot};

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

pub async fn task6(opts: &Options) -> Result<Checks> {
    let mut checks = Checks::new("Lab task 6: HAProxy follows web apps coming and going");
    checks.step("building the images (cached when nothing changed)");
    tokio::task::spawn_blocking(|| images::ensure_images(STAGE)).await??;
    // The lab's mechanism first: the reconciler's run comes last, so that
    // `--keep` leaves the final stage (the reconciler) running.
    let lab = run_sequence(&mut checks, Mode::Lab, &Options::default(), false).await?;
    let ours = run_sequence(&mut checks, Mode::Reconciler, opts, true).await?;
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

async fn run_sequence(
    checks: &mut Checks,
    mode: Mode,
    opts: &Options,
    deliverables: bool,
) -> Result<LoadReport> {
    let label = mode.env();
    let logs = project::task_logs(6)?;
    let assets = project::report_assets()?;
    let mut lab = Lab::new().await?;
    checks.step(&format!("[{label}] starting ha (HA_RELOAD={label})"));
    lab.start(Spec {
        image: "ha",
        stage: STAGE,
        name: "ha",
        env: vec![("HA_RELOAD", label.to_string())],
        ..Default::default()
    })
    .await?;
    // The mode's cont-init script decides whether the reconciler runs: only
    // one mechanism may drive HAProxy.
    checks
        .check(
            &format!("[{label}] only the {label} mechanism drives HAProxy"),
            || async {
                let st = docker::exec("ha", &["s6-svstat", "/var/run/s6/services/reconcile"])?;
                let up = st.starts_with("up");
                ensure!(
                    up == matches!(mode, Mode::Reconciler),
                    "reconcile service: {}",
                    st.trim()
                );
                Ok(format!(
                    "reconcile service {}",
                    if up { "up" } else { "down" }
                ))
            },
        )
        .await;
    let mut running: BTreeSet<&str> = BTreeSet::new();
    let mut load: Option<Load> = None;
    for (i, step) in STEPS.iter().enumerate() {
        let n = i + 1;
        let what = match step {
            Step::Start(name) => {
                lab.start(Spec {
                    image: "webapp",
                    stage: STAGE,
                    name,
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
                docker::run(["kill", name])?;
                running.remove(name);
                format!("docker kill {name}")
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
            save_docker_ps(checks, &logs, &format!("docker-ps-step{n:02}.txt"))?;
            let png = assets.join(format!("task6-step{n:02}.png"));
            let url = format!("http://{}/", lab.ha(1936)?);
            let p = png.clone();
            match tokio::task::spawn_blocking(move || shot::screenshot(&url, &p)).await? {
                Ok(()) => checks.deliverable(&png),
                Err(e) => eprintln!("   screenshot of step {n} failed: {e:#}"),
            }
        }
    }
    let report = match load {
        Some(l) => l.stop().await,
        None => LoadReport::default(),
    };
    eprintln!(
        "   [{label}] load: {} requests, {} failed {:?}",
        report.sent, report.failed, report.samples
    );
    crate::lab::load::print_haproxy_failures(label, "ha");
    lab.teardown(opts).await?;
    Ok(report)
}
