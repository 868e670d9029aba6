//! Task 5, the real configuration: the handlers keep /nodes/NAME for every
//! backend and render the full haproxy.cfg from all of them (HAProxy is not
//! told yet: that is task 6). Scenario as the lab's: start ha, s1, s2,
//! keeping the configuration after each step, `docker ps`, `docker inspect`
//! and the /nodes listing; then stop s1 and keep them again. Extra: members
//! with hostile names (`../../etc/passwd`, `a b;rm -rf /`) neither escape
//! /nodes nor reach the configuration.

use anyhow::{ensure, Result};
use std::collections::BTreeSet;
use std::time::Duration;

use super::baseline::save_ps_and_inspect;
use super::membership::wait_alive;
use super::{poll, save_docker_ps, Lab, Options, Spec};
use crate::checks::Checks;
use crate::{docker, images, project};

const STAGE: u8 = 5;
const CFG: &str = "/usr/local/etc/haproxy/haproxy.cfg";
/// (node name, role) of the members expected alive.
type Cluster = &'static [(&'static str, &'static str)];

/// The `server NAME ...` names in ha's haproxy.cfg.
fn servers_in_config() -> Result<(String, BTreeSet<String>)> {
    let text = docker::exec("ha", &["cat", CFG])?;
    let names = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    Ok((text, names))
}

fn nodes_listing() -> Result<String> {
    docker::exec(
        "ha",
        &[
            "bash",
            "-c",
            "ls -l /nodes; head -v /nodes/* 2>/dev/null || true",
        ],
    )
}

async fn wait_config(backends: &[&str]) -> Result<String> {
    let wanted: BTreeSet<String> = backends.iter().map(|s| s.to_string()).collect();
    let (text, _) = poll(
        &format!("haproxy.cfg listing {backends:?}"),
        Duration::from_secs(60),
        || async {
            let (text, names) = servers_in_config()?;
            Ok((names == wanted).then_some((text, names)))
        },
    )
    .await?;
    Ok(text)
}

pub async fn task5(opts: &Options) -> Result<Checks> {
    let mut checks = Checks::new("Lab task 5: haproxy.cfg generated from the members");
    checks.step("building the images (cached when nothing changed)");
    images::ensure_images(STAGE).await?;
    let logs = project::task_logs(5)?;
    let mut lab = Lab::new().await?;

    let steps: [(&str, Cluster, &[&str]); 3] = [
        ("ha", &[("ha", "balancer")], &[]),
        ("s1", &[("ha", "balancer"), ("s1", "backend")], &["s1"]),
        (
            "s2",
            &[("ha", "balancer"), ("s1", "backend"), ("s2", "backend")],
            &["s1", "s2"],
        ),
    ];
    for (step, (name, cluster, backends)) in steps.iter().enumerate() {
        let image = if *name == "ha" { "ha" } else { "webapp" };
        lab.start(Spec {
            image,
            stage: STAGE,
            name,
            ..Default::default()
        })
        .await?;
        let n = step + 1;
        let cfg_path = logs.join(format!("{n}-haproxy.cfg-after-{name}"));
        checks
            .check(
                &format!("after starting {name}: haproxy.cfg lists {backends:?}"),
                || async {
                    wait_alive("ha", cluster).await?;
                    let text = wait_config(backends).await?;
                    std::fs::write(&cfg_path, &text)?;
                    docker::exec("ha", &["/usr/sbin/haproxy", "-c", "-q", "-f", CFG])?;
                    Ok("valid (haproxy -c)".into())
                },
            )
            .await;
        if cfg_path.exists() {
            checks.deliverable(&cfg_path);
        }
        let nodes_path = logs.join(format!("{n}-nodes-after-{name}.txt"));
        std::fs::write(&nodes_path, nodes_listing()?)?;
        checks.deliverable(&nodes_path);
    }
    save_ps_and_inspect(&mut checks, 5, &["ha", "s1", "s2"]).await?;

    checks
        .check(
            "hostile node names neither escape /nodes nor reach the config",
            || async {
                let passwd_before = docker::exec("ha", &["cat", "/etc/passwd"])?;
                // Extra agents inside s2, on their own ports, with hostile names.
                for (i, name) in ["../../etc/passwd", "a b;rm -rf /"].iter().enumerate() {
                    let bind = format!("0.0.0.0:{}", 7950 + i);
                    let rpc = format!("127.0.0.1:{}", 7380 + i);
                    docker::run([
                        "exec",
                        "-d",
                        "s2",
                        "serf",
                        "agent",
                        "-node",
                        name,
                        "-bind",
                        &bind,
                        "-rpc-addr",
                        &rpc,
                        "-join",
                        "ha",
                        "-tag",
                        "role=backend",
                    ])?;
                }
                poll(
                    "ha sees the hostile members",
                    Duration::from_secs(60),
                    || async {
                        let seen = super::membership::members("ha")?;
                        Ok((seen.contains_key("../../etc/passwd")
                            && seen.contains_key("a b;rm -rf /"))
                        .then_some(()))
                    },
                )
                .await?;
                poll(
                    "ha's handlers reported them",
                    Duration::from_secs(60),
                    || async {
                        let log = docker::exec("ha", &["cat", "/var/log/serf.log"])?;
                        Ok(
                            (log.matches("Ignoring member with unsafe name").count() >= 2)
                                .then_some(()),
                        )
                    },
                )
                .await?;
                let (_, names) = servers_in_config()?;
                ensure!(
                    names == BTreeSet::from(["s1".to_string(), "s2".to_string()]),
                    "config servers changed to {names:?}"
                );
                let listing = docker::exec("ha", &["ls", "-A", "/nodes"])?;
                let files: BTreeSet<&str> = listing.split_whitespace().collect();
                ensure!(
                    files == BTreeSet::from(["s1", "s2"]),
                    "/nodes holds {files:?}"
                );
                ensure!(
                    docker::exec("ha", &["cat", "/etc/passwd"])? == passwd_before,
                    "/etc/passwd changed"
                );
                docker::exec("ha", &["/usr/sbin/haproxy", "-c", "-q", "-f", CFG])?;
                Ok("ignored and logged; /nodes = {s1, s2}; config still valid".into())
            },
        )
        .await;

    checks.step("docker stop s1");
    lab.stop("s1").await?;
    let cfg_path = logs.join("4-haproxy.cfg-after-stopping-s1");
    checks
        .check("after stopping s1: haproxy.cfg lists only s2", || async {
            let text = wait_config(&["s2"]).await?;
            std::fs::write(&cfg_path, &text)?;
            Ok("s2 only".into())
        })
        .await;
    if cfg_path.exists() {
        checks.deliverable(&cfg_path);
    }
    let nodes_path = logs.join("4-nodes-after-stopping-s1.txt");
    std::fs::write(&nodes_path, nodes_listing()?)?;
    checks.deliverable(&nodes_path);
    save_docker_ps(&mut checks, &logs, "docker-ps-after-stopping-s1.txt")?;

    lab.teardown(opts).await?;
    Ok(checks)
}
