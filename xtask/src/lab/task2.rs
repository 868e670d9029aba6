//! Task 2, membership agent: both images run our Serf-compatible agent as a
//! second supervised service (ha: `--join ha --replay --event-handler ...
//! --tag role=balancer`; web apps: `--retry-join ha --tag role=backend`).
//! Deliverables: `docker logs` of ha, s1 and s2 after starting them in the
//! lab's order. Extra checks: the web apps started *before* ha still form
//! one cluster with it (the lab's seed-node flaw, fixed by retry-join), and
//! `docker stop` makes a member leave gracefully (no SIGTERM trap needed).

use anyhow::Result;

use super::baseline::{check_serving, save_ps_and_inspect};
use super::membership::{wait_alive, wait_status};
use super::{save_docker_logs, Lab, Options, Spec};
use crate::checks::Checks;
use crate::{images, project};

const STAGE: u8 = 2;
pub const CLUSTER: [(&str, &str); 3] = [("ha", "balancer"), ("s1", "backend"), ("s2", "backend")];

pub async fn task2(opts: &Options) -> Result<Checks> {
    let mut checks = Checks::new("Lab task 2: a membership agent in every container");
    checks.step("building the images (cached when nothing changed)");
    images::ensure_images(STAGE).await?;
    let logs = project::task_logs(2)?;

    {
        let mut lab = Lab::new().await?;
        checks.step("starting s1 and s2 first, then ha (the order the lab's flaw forbids)");
        for name in ["s1", "s2"] {
            lab.start(webapp(name)).await?;
        }
        checks
            .check("web apps started before ha run alone, retrying", || async {
                // Without ha nobody can introduce s1 and s2 to each other.
                let s1 = wait_alive("s1", &[("s1", "backend")]).await?;
                let s2 = wait_alive("s2", &[("s2", "backend")]).await?;
                Ok(format!("s1 sees: {s1}; s2 sees: {s2}"))
            })
            .await;
        lab.start(ha()).await?;
        checks
            .check(
                "one cluster once ha is up (start order does not matter)",
                || wait_alive("ha", &CLUSTER),
            )
            .await;
        lab.teardown(&Options::default()).await?;
    }

    let mut lab = Lab::new().await?;
    checks.step("starting ha, s1, s2 in the lab's order");
    lab.start(ha()).await?;
    for name in ["s1", "s2"] {
        lab.start(webapp(name)).await?;
    }
    for viewer in ["ha", "s1", "s2"] {
        checks
            .check(
                &format!("{viewer}'s agent sees ha, s1, s2 alive with their roles"),
                || wait_alive(viewer, &CLUSTER),
            )
            .await;
    }
    check_serving(&mut checks, &lab).await?;
    for name in ["ha", "s1", "s2"] {
        save_docker_logs(&mut checks, &logs, name, &format!("docker-logs-{name}.txt"))?;
    }
    save_ps_and_inspect(&mut checks, 2, &["ha", "s1", "s2"]).await?;

    checks.step("docker stop s2");
    lab.stop("s2").await?;
    checks
        .check(
            "a stopped web app leaves gracefully (SIGTERM, no trap)",
            || wait_status("ha", "s2", "left"),
        )
        .await;

    lab.teardown(opts).await?;
    Ok(checks)
}

pub fn ha() -> Spec<'static> {
    Spec {
        image: "ha",
        stage: STAGE,
        name: "ha",
        ..Default::default()
    }
}

pub fn webapp(name: &str) -> Spec<'_> {
    Spec {
        image: "webapp",
        stage: STAGE,
        name,
        ..Default::default()
    }
}
