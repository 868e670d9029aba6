//! Task 0, the baseline: HAProxy with a static configuration listing s1 and
//! s2 (their addresses patched in by the start script), two web apps, the
//! `heig` network. Deliverables: the stats page with both backends UP,
//! `docker ps` and `docker inspect` of each container.

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeSet;
use std::time::Duration;

use super::{poll, save_docker_inspect, save_docker_ps, Lab, Options};
use crate::checks::Checks;
use crate::{images, project, shot};

const STAGE: u8 = 0;

pub async fn task0(opts: &Options) -> Result<Checks> {
    let mut checks = Checks::new("Lab task 0: static HAProxy in front of s1 and s2");
    checks.step("building the images (cached when nothing changed)");
    tokio::task::spawn_blocking(|| images::ensure_images(STAGE)).await??;
    let mut lab = Lab::new(opts).await?;
    checks.step("starting s1, s2 and ha on heig");
    for name in ["s1", "s2"] {
        lab.start("webapp", STAGE, name, &[]).await?;
    }
    lab.start("ha", STAGE, "ha", &[]).await?;
    let ha = lab.ip("ha")?;
    let (s1, s2) = (lab.ip("s1")?.to_string(), lab.ip("s2")?.to_string());

    checks
        .check("ha answers GET / on port 80", || async {
            let status = poll("GET / through ha", Duration::from_secs(60), || async {
                let (status, _, _) = lab.get_json(&lab.http, &format!("http://{ha}/")).await?;
                Ok((status == 200).then_some(status))
            })
            .await?;
            Ok(format!("HTTP {status} from http://{ha}/"))
        })
        .await;

    checks
        .check("round robin reaches s1 and s2", || async {
            let wanted: BTreeSet<String> = [s1.clone(), s2.clone()].into();
            let seen = poll("both backends answering", Duration::from_secs(60), || async {
                let mut seen = BTreeSet::new();
                for _ in 0..10 {
                    // A fresh client each time: no cookie, no stickiness.
                    let (status, backend, _) =
                        lab.get_json(&lab.http, &format!("http://{ha}/")).await?;
                    if status == 200 {
                        seen.extend(backend);
                    }
                }
                Ok((seen == wanted).then_some(seen))
            })
            .await?;
            Ok(format!("x-backend-ip seen: {seen:?}"))
        })
        .await;

    checks
        .check("a session cookie keeps counting on its backend", || async {
            let mut detail = Vec::new();
            for (name, ip) in [("s1", &s1), ("s2", &s2)] {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .cookie_store(true)
                    .timeout(Duration::from_secs(10))
                    .build()?;
                let url = format!("http://{ip}:3000/");
                let mut views = Vec::new();
                let mut ids = BTreeSet::new();
                for _ in 0..3 {
                    let (status, _, body) = lab.get_json(&client, &url).await?;
                    ensure!(status == 200, "{name} answered {status}");
                    views.push(body["sessionViews"].as_u64().context("no sessionViews")?);
                    ids.insert(body["id"].to_string());
                }
                ensure!(
                    views == [1, 2, 3] && ids.len() == 1,
                    "{name}: sessionViews {views:?} over session ids {ids:?}"
                );
                detail.push(format!("{name}: 1,2,3 on one session"));
            }
            Ok(detail.join("; "))
        })
        .await;

    checks
        .check("the stats page lists s1 and s2 UP", || async {
            let rows = poll("s1 and s2 UP in the stats", Duration::from_secs(60), || async {
                let rows = lab.haproxy_stats().await?;
                let up: BTreeSet<&str> = rows
                    .iter()
                    .filter(|(px, sv, st)| px == "nodes" && sv != "BACKEND" && st == "UP")
                    .map(|(_, sv, _)| sv.as_str())
                    .collect();
                Ok((up == BTreeSet::from(["s1", "s2"])).then(|| rows.clone()))
            })
            .await?;
            let servers: Vec<String> = rows
                .iter()
                .filter(|(px, sv, _)| px == "nodes" && sv != "BACKEND")
                .map(|(_, sv, st)| format!("{sv} {st}"))
                .collect();
            Ok(servers.join(", "))
        })
        .await;

    let logs = project::task_logs(0)?;
    let shot_path = project::report_assets()?.join("task0-stats.png");
    checks
        .check("screenshot of the stats page", || async {
            let url = format!("http://{ha}:1936/");
            let path = shot_path.clone();
            tokio::task::spawn_blocking(move || shot::screenshot(&url, &path)).await??;
            Ok(format!("{}", shot_path.display()))
        })
        .await;
    if shot_path.exists() {
        checks.deliverable(&shot_path);
    }

    let mut saved = Ok(());
    for result in [
        save_docker_ps(&mut checks, &logs, "docker-ps.txt").map(|_| ()),
        save_docker_inspect(&mut checks, &logs, "ha").map(|_| ()),
        save_docker_inspect(&mut checks, &logs, "s1").map(|_| ()),
        save_docker_inspect(&mut checks, &logs, "s2").map(|_| ()),
    ] {
        if result.is_err() && saved.is_ok() {
            saved = result;
        }
    }
    let n = checks.deliverables.len();
    checks
        .check("docker ps and docker inspect saved", || async {
            match saved {
                Ok(()) => Ok(format!("{n} files under logs/task_0/")),
                Err(e) => bail!("{e:#}"),
            }
        })
        .await;

    if opts.keep {
        lab.print_urls();
    }
    lab.teardown(opts).await?;
    Ok(checks)
}
