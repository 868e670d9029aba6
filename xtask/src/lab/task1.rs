//! Task 1, process supervisor: both images run our init as PID 1 and their
//! application as a supervised service (`/etc/services.d/NAME/run`, in the
//! lab's `#!/usr/bin/with-contenv bash` style). Users see no change; the
//! checks show what supervision adds: a killed HAProxy comes back,
//! `s6-svc -h` reaches it, `docker stop` is prompt and clean, and orphans
//! are reaped.

use anyhow::{bail, ensure, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use super::baseline::{check_serving, save_ps_and_inspect, screenshot_stats};
use super::{poll, save_docker_logs, Lab, Options, Spec};
use crate::checks::Checks;
use crate::{docker, images, project};

const STAGE: u8 = 1;
const HA_SERVICE: &str = "/var/run/s6/services/ha";

/// A service that spawns 100 short-lived children and orphans them at once
/// (each is started by a subshell that exits immediately), then stays up.
const ORPHANS_RUN: &str = r#"#!/bin/bash
for i in $(seq 1 100); do ( sleep 0.2 & ) ; done
touch /tmp/orphans-spawned
exec sleep infinity
"#;

pub async fn task1(opts: &Options) -> Result<Checks> {
    let mut checks = Checks::new("Lab task 1: init as PID 1, applications as supervised services");
    checks.step("building the images (cached when nothing changed)");
    images::ensure_images(STAGE).await?;
    let fixture = project::target_dir().join("lab-fixtures/orphans");
    std::fs::create_dir_all(&fixture)?;
    std::fs::write(fixture.join("run"), ORPHANS_RUN)?;
    std::fs::set_permissions(fixture.join("run"), std::fs::Permissions::from_mode(0o755))?;

    let mut lab = Lab::new().await?;
    checks.step("starting s1 (with an orphan-spawning extra service), s2 and ha");
    lab.start(Spec {
        image: "webapp",
        stage: STAGE,
        name: "s1",
        mounts: vec![(fixture.clone(), "/etc/services.d/orphans")],
        ..Default::default()
    })
    .await?;
    for (image, name) in [("webapp", "s2"), ("ha", "ha")] {
        lab.start(Spec {
            image,
            stage: STAGE,
            name,
            ..Default::default()
        })
        .await?;
    }
    check_serving(&mut checks, &lab).await?;
    screenshot_stats(&mut checks, &lab, "task1-stats.png").await?;

    checks
        .check("init is PID 1 and haproxy a supervised service", || async {
            let comm = docker::exec("ha", &["cat", "/proc/1/comm"])?;
            ensure!(comm.trim() == "init", "PID 1 in ha is {:?}", comm.trim());
            let status = svstat()?;
            ensure!(status.starts_with("up"), "s6-svstat {HA_SERVICE}: {status}");
            Ok(format!("PID 1 is init; s6-svstat: {status}"))
        })
        .await;

    checks
        .check(
            "a killed haproxy is restarted by the supervisor",
            || async {
                let before = service_pid()?;
                docker::exec("ha", &["bash", "-c", &format!("kill -9 {before}")])?;
                let after = poll(
                    "haproxy back up with a new pid",
                    Duration::from_secs(30),
                    || async {
                        let status = svstat()?;
                        let pid = service_pid().ok();
                        Ok(
                            (status.starts_with("up") && pid.is_some() && pid != Some(before))
                                .then_some(pid.unwrap_or_default()),
                        )
                    },
                )
                .await?;
                let front = lab.ha(80)?;
                poll("ha serving again", Duration::from_secs(30), || async {
                    let (status, _, _) =
                        lab.get_json(&lab.http, &format!("http://{front}/")).await?;
                    Ok((status == 200).then_some(()))
                })
                .await?;
                Ok(format!("pid {before} killed, pid {after} serving"))
            },
        )
        .await;

    checks
        .check("s6-svc -h reaches haproxy (it reloads)", || async {
            let count = || -> Result<usize> {
                let logs = docker_logs("ha")?;
                Ok(logs.matches("New worker (").count())
            };
            let master = service_pid()?;
            let before = count()?;
            docker::exec("ha", &["s6-svc", "-h", HA_SERVICE])?;
            poll(
                "a new haproxy worker after SIGHUP",
                Duration::from_secs(30),
                || async { Ok((count()? > before).then_some(())) },
            )
            .await?;
            ensure!(
                service_pid()? == master,
                "the haproxy master was replaced instead of reloaded"
            );
            Ok(format!("master {master} kept, new worker forked"))
        })
        .await;

    checks
        .check("orphaned children are reaped (no zombie left)", || async {
            poll(
                "the orphan service ran",
                Duration::from_secs(30),
                || async { Ok(docker::exec("s1", &["test", "-e", "/tmp/orphans-spawned"]).ok()) },
            )
            .await?;
            let zombies = || -> Result<usize> {
                let out = docker::exec(
                    "s1",
                    &[
                        "bash",
                        "-c",
                        "grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l",
                    ],
                )?;
                out.trim().parse().context("counting zombies")
            };
            let sleepers = || -> Result<usize> {
                let out = docker::exec(
                    "s1",
                    &[
                        "bash",
                        "-c",
                        "grep -lx 'sleep' /proc/[0-9]*/comm 2>/dev/null | wc -l",
                    ],
                )?;
                out.trim().parse().context("counting sleep processes")
            };
            poll(
                "no zombie and no orphan left",
                Duration::from_secs(30),
                || async {
                    // `sleep infinity` of the service itself stays.
                    Ok((zombies()? == 0 && sleepers()? <= 1).then_some(()))
                },
            )
            .await?;
            Ok("100 orphans spawned, 0 zombies left".into())
        })
        .await;

    let logs_dir = project::task_logs(1)?;
    save_docker_logs(&mut checks, &logs_dir, "ha", "docker-logs-ha.txt")?;
    save_ps_and_inspect(&mut checks, 1, &["ha", "s1", "s2"]).await?;

    checks
        .check("docker stop ha exits promptly with code 0", || async {
            let started = Instant::now();
            docker::run(["stop", "ha"])?;
            let took = started.elapsed();
            let code = docker::run(["inspect", "-f", "{{.State.ExitCode}}", "ha"])?;
            // 0 means init shut down by itself; Docker's SIGKILL after its
            // 10 s timeout would show as 137.
            if code.trim() != "0" {
                bail!("ha exited with code {} after {took:.1?}", code.trim());
            }
            Ok(format!("exit code 0 after {:.2} s", took.as_secs_f64()))
        })
        .await;

    if opts.keep {
        docker::run(["start", "ha"])?;
    }
    lab.teardown(opts).await?;
    Ok(checks)
}

fn svstat() -> Result<String> {
    Ok(docker::exec("ha", &["s6-svstat", HA_SERVICE])?
        .trim()
        .to_string())
}

/// The pid of the ha service's process, from `s6-svstat`.
fn service_pid() -> Result<u32> {
    let status = svstat()?;
    status
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.trim().parse().ok())
        .with_context(|| format!("no pid in s6-svstat output {status:?}"))
}

fn docker_logs(name: &str) -> Result<String> {
    let out = std::process::Command::new("docker")
        .args(["logs", name])
        .output()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(text)
}
