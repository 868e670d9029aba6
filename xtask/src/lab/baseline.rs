//! Checks shared by the stages whose stack is "ha in front of s1 and s2":
//! the stack serves through HAProxy, round robin reaches both web apps,
//! sessions count on their backend, the stats page lists them UP; plus the
//! stats screenshot and the `docker ps`/`docker inspect` deliverables.

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeSet;
use std::time::Duration;

use super::{poll, save_docker_inspect, save_docker_ps, Lab, Spec};
use crate::checks::Checks;
use crate::{images, project, shot};

/// Build the images up to `stage`, start s1, s2 then ha from that stage.
pub async fn start_stack(checks: &Checks, stage: u8) -> Result<Lab> {
    checks.step("building the images (cached when nothing changed)");
    images::ensure_images(stage).await?;
    let mut lab = Lab::new().await?;
    checks.step("starting s1, s2 and ha on heig");
    for name in ["s1", "s2"] {
        lab.start(Spec {
            image: "webapp",
            stage,
            name,
            ..Default::default()
        })
        .await?;
    }
    lab.start(Spec {
        image: "ha",
        stage,
        name: "ha",
        ..Default::default()
    })
    .await?;
    Ok(lab)
}

/// ha serves, round robin reaches s1 and s2, a session counts on its
/// backend, and the stats page lists s1 and s2 UP.
pub async fn check_serving(checks: &mut Checks, lab: &Lab) -> Result<()> {
    let front = lab.ha(80)?;
    let (s1, s2) = (lab.ip("s1")?.to_string(), lab.ip("s2")?.to_string());
    checks
        .check("ha answers GET / (published on 127.0.0.1)", || async {
            let status = poll("GET / through ha", Duration::from_secs(60), || async {
                let (status, _, _) = lab.get_json(&lab.http, &format!("http://{front}/")).await?;
                Ok((status == 200).then_some(status))
            })
            .await?;
            Ok(format!("HTTP {status} from http://{front}/"))
        })
        .await;

    checks
        .check("round robin reaches s1 and s2", || async {
            let wanted: BTreeSet<String> = [s1.clone(), s2.clone()].into();
            let seen = poll(
                "both backends answering",
                Duration::from_secs(60),
                || async {
                    let mut seen = BTreeSet::new();
                    for _ in 0..10 {
                        // No cookie jar: every request is a new client.
                        let (status, backend, _) =
                            lab.get_json(&lab.http, &format!("http://{front}/")).await?;
                        if status == 200 {
                            seen.extend(backend);
                        }
                    }
                    Ok((seen == wanted).then_some(seen))
                },
            )
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
            let servers = wait_servers_up(lab, &["s1", "s2"]).await?;
            Ok(servers.join(", "))
        })
        .await;
    Ok(())
}

/// Poll the stats until exactly `names` are the UP servers of `nodes`;
/// returns "name STATUS" for every server listed.
pub async fn wait_servers_up(lab: &Lab, names: &[&str]) -> Result<Vec<String>> {
    let wanted: BTreeSet<&str> = names.iter().copied().collect();
    let rows = poll(
        &format!("{names:?} UP in the stats"),
        Duration::from_secs(60),
        || async {
            let rows = lab.haproxy_stats().await?;
            let up: BTreeSet<&str> = rows
                .iter()
                .filter(|(px, sv, st)| px == "nodes" && sv != "BACKEND" && st == "UP")
                .map(|(_, sv, _)| sv.as_str())
                .collect();
            Ok((up == wanted).then(|| rows.clone()))
        },
    )
    .await?;
    Ok(rows
        .iter()
        .filter(|(px, sv, _)| px == "nodes" && sv != "BACKEND")
        .map(|(_, sv, st)| format!("{sv} {st}"))
        .collect())
}

/// Screenshot the stats page into `report/assets/<file>`.
pub async fn screenshot_stats(checks: &mut Checks, lab: &Lab, file: &str) -> Result<()> {
    let path = project::report_assets()?.join(file);
    let url = format!("http://{}/", lab.ha(1936)?);
    checks
        .check("screenshot of the stats page", || async {
            let (url, p) = (url.clone(), path.clone());
            tokio::task::spawn_blocking(move || shot::screenshot(&url, &p)).await??;
            Ok(format!("report/assets/{file}"))
        })
        .await;
    if path.exists() {
        checks.deliverable(&path);
    }
    Ok(())
}

/// `docker ps` and `docker inspect` of each container into logs/task_N/.
pub async fn save_ps_and_inspect(checks: &mut Checks, task: u8, names: &[&str]) -> Result<()> {
    let logs = project::task_logs(task)?;
    let mut first_error = None;
    let mut written = 0;
    let mut results = vec![save_docker_ps(checks, &logs, "docker-ps.txt").map(|_| ())];
    for name in names {
        results.push(save_docker_inspect(checks, &logs, name).map(|_| ()));
    }
    for r in results {
        match r {
            Ok(()) => written += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    checks
        .check("docker ps and docker inspect saved", || async {
            match first_error {
                None => Ok(format!("{written} files under logs/task_{task}/")),
                Some(e) => bail!("{e:#}"),
            }
        })
        .await;
    Ok(())
}
