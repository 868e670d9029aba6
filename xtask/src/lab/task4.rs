//! Task 4, template engine: ha's join handler renders the one-line template
//! "Container NAME has joined the Serf cluster with the following IP
//! address: IP" into /tmp/haproxy.cfg. Scenario as the lab's: start ha, s1,
//! s2, reading the file after each step; then `docker ps` and `docker
//! inspect` of each container. The file only ever holds the last member
//! handled: the flaw the lab asks about.

use anyhow::Result;
use std::time::Duration;

use super::baseline::save_ps_and_inspect;
use super::membership::wait_alive;
use super::{poll, Lab, Options, Spec};
use crate::checks::Checks;
use crate::{docker, images, project};

const STAGE: u8 = 4;

pub async fn task4(opts: &Options) -> Result<Checks> {
    let mut checks = Checks::new("Lab task 4: the join handler renders a template");
    checks.step("building the images (cached when nothing changed)");
    images::ensure_images(STAGE).await?;
    let logs = project::task_logs(4)?;
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
        let ip = lab
            .start(Spec {
                image,
                stage: STAGE,
                name,
                ..Default::default()
            })
            .await?;
        let expected = format!(
            "Container {name} has joined the Serf cluster with the following IP address: {ip}"
        );
        let path = logs.join(format!("{}-haproxy.cfg-after-{name}", step + 1));
        checks
            .check(
                &format!("after starting {name}: /tmp/haproxy.cfg names {name}"),
                || async {
                    wait_alive("ha", cluster).await?;
                    let text = poll("the rendered line", Duration::from_secs(60), || async {
                        let text =
                            docker::exec("ha", &["cat", "/tmp/haproxy.cfg"]).unwrap_or_default();
                        Ok((text.trim() == expected).then_some(text))
                    })
                    .await?;
                    std::fs::write(&path, &text)?;
                    Ok(text.trim().to_string())
                },
            )
            .await;
        if path.exists() {
            checks.deliverable(&path);
        }
    }
    save_ps_and_inspect(&mut checks, 4, &["ha", "s1", "s2"]).await?;
    lab.teardown(opts).await?;
    Ok(checks)
}
