//! Task 3, reacting to membership changes: ha's handler scripts append one
//! line per event to `/var/log/serf.log`. Scenario as the lab's: start ha
//! (keep its logs), start s1 (keep s1's and ha's), start s2 (keep all
//! three), then collect `/var/log/serf.log` from ha. Extra: stopping s1
//! records a `member-leave`.

use anyhow::{ensure, Result};
use std::time::Duration;

use super::membership::wait_alive;
use super::{poll, save_docker_logs, Lab, Options, Spec};
use crate::checks::Checks;
use crate::{docker, images, project};

const STAGE: u8 = 3;
const SERF_LOG: &str = "/var/log/serf.log";

pub async fn task3(opts: &Options) -> Result<Checks> {
    let mut checks = Checks::new("Lab task 3: handlers record membership events on ha");
    checks.step("building the images (cached when nothing changed)");
    images::ensure_images(STAGE).await?;
    let logs = project::task_logs(3)?;
    let mut lab = Lab::new().await?;

    let steps: [(&str, &[(&str, &str)]); 3] = [
        ("ha", &[("ha", "balancer")]),
        ("s1", &[("ha", "balancer"), ("s1", "backend")]),
        (
            "s2",
            &[("ha", "balancer"), ("s1", "backend"), ("s2", "backend")],
        ),
    ];
    for (step, (name, cluster)) in steps.iter().enumerate() {
        let image = if *name == "ha" { "ha" } else { "webapp" };
        lab.start(Spec {
            image,
            stage: STAGE,
            name,
            ..Default::default()
        })
        .await?;
        let expected: Vec<String> = cluster
            .iter()
            .map(|(n, r)| format!("Member join event received from: {n} with role {r}"))
            .collect();
        checks
            .check(
                &format!("after starting {name}: ha logs a join for each member"),
                || async {
                    wait_alive("ha", cluster).await?;
                    let log = poll(
                        "the join lines in serf.log",
                        Duration::from_secs(60),
                        || async {
                            let log = docker::exec("ha", &["cat", SERF_LOG]).unwrap_or_default();
                            Ok(expected
                                .iter()
                                .all(|l| log.contains(l.as_str()))
                                .then_some(log))
                        },
                    )
                    .await?;
                    let joins = log.matches("Member join event received").count();
                    ensure!(
                        joins == cluster.len(),
                        "{joins} join lines for {} members:\n{log}",
                        cluster.len()
                    );
                    Ok(format!("{joins} join line(s)"))
                },
            )
            .await;
        for (n, _) in cluster.iter() {
            save_docker_logs(
                &mut checks,
                &logs,
                n,
                &format!("{}-after-{name}-docker-logs-{n}.txt", step + 1),
            )?;
        }
    }

    checks.step("docker stop s1");
    lab.stop("s1").await?;
    checks
        .check("stopping s1 logs a member-leave", || async {
            let line = "Member member-leave event received from: s1 with role backend";
            poll(
                "the leave line in serf.log",
                Duration::from_secs(60),
                || async {
                    let log = docker::exec("ha", &["cat", SERF_LOG]).unwrap_or_default();
                    Ok(log.contains(line).then_some(()))
                },
            )
            .await?;
            Ok(line.to_string())
        })
        .await;

    let path = logs.join("serf.log");
    std::fs::write(&path, docker::exec("ha", &["cat", SERF_LOG])?)?;
    checks.deliverable(&path);

    lab.teardown(opts).await?;
    Ok(checks)
}
