//! The lab's tasks as scenarios: one definition per task, run by
//! `cargo xtask task N` and by the integration tests alike.
//!
//! Containers are started with testcontainers on the lab's `heig` network
//! and reached from the host at their address on that network, so nothing
//! is published on the host's interfaces. Every container carries the label
//! `ait.lab=1`, which is how a run finds and removes leftovers of an earlier
//! one.

mod task0;

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::checks::Checks;
use crate::docker;

pub use task0::task0;

/// How a scenario run behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Leave the stack running at the end (and print its URLs).
    pub keep: bool,
}

/// The lab tasks implemented so far.
pub const TASKS: &[u8] = &[0];

/// Run task `n`.
pub async fn run_task(n: u8, opts: &Options) -> Result<Checks> {
    match n {
        0 => task0(opts).await,
        other => bail!(
            "lab task {other} is not implemented yet (implemented: {:?})",
            TASKS
        ),
    }
}

const LABEL: &str = "ait.lab";

/// Scenarios share container names and the network: one at a time per
/// process (the integration tests run in parallel threads).
static ONE_LAB: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running lab stack: containers by name on `heig`.
pub struct Lab {
    containers: BTreeMap<String, ContainerAsync<GenericImage>>,
    ips: BTreeMap<String, Ipv4Addr>,
    pub http: reqwest::Client,
    _one_lab: tokio::sync::MutexGuard<'static, ()>,
}

impl Lab {
    /// Remove leftovers of earlier runs and make sure `heig` exists.
    pub async fn new(opts: &Options) -> Result<Lab> {
        let guard = ONE_LAB.lock().await;
        tokio::task::spawn_blocking(crate::prereq::ensure_docker).await??;
        remove_leftovers()?;
        docker::ensure_network(&docker::HEIG)?;
        if opts.keep {
            // testcontainers reads this when a container is created: kept
            // containers are not removed when the scenario ends.
            std::env::set_var("TESTCONTAINERS_COMMAND", "keep");
        } else {
            std::env::remove_var("TESTCONTAINERS_COMMAND");
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        Ok(Lab {
            containers: BTreeMap::new(),
            ips: BTreeMap::new(),
            http,
            _one_lab: guard,
        })
    }

    /// Start `name` from `ait/<image>:task<stage>` on `heig`, with its
    /// hostname set to its name, as the lab does.
    pub async fn start(
        &mut self,
        image: &str,
        stage: u8,
        name: &str,
        env: &[(&str, &str)],
    ) -> Result<Ipv4Addr> {
        let mut request = GenericImage::new(format!("ait/{image}"), format!("task{stage}"))
            .with_container_name(name)
            .with_hostname(name)
            .with_network(docker::HEIG.name)
            .with_label(LABEL, "1")
            .with_startup_timeout(Duration::from_secs(60));
        for (k, v) in env {
            request = request.with_env_var(*k, *v);
        }
        let container = request
            .start()
            .await
            .with_context(|| format!("starting {name} from ait/{image}:task{stage}"))?;
        self.containers.insert(name.into(), container);
        let ip = docker::ip_on(name, docker::HEIG.name)?;
        self.ips.insert(name.into(), ip);
        Ok(ip)
    }

    /// The address of a started container on `heig`.
    pub fn ip(&self, name: &str) -> Result<Ipv4Addr> {
        self.ips
            .get(name)
            .copied()
            .with_context(|| format!("container {name} was not started by this scenario"))
    }

    /// `docker stop` (graceful) then remove one container.
    pub async fn stop(&mut self, name: &str) -> Result<()> {
        if let Some(c) = self.containers.remove(name) {
            c.stop().await.with_context(|| format!("stopping {name}"))?;
            c.rm().await.with_context(|| format!("removing {name}"))?;
        }
        self.ips.remove(name);
        Ok(())
    }

    /// Remove every container (unless kept) and the network.
    pub async fn teardown(mut self, opts: &Options) -> Result<()> {
        if opts.keep {
            // Dropping kept containers leaves them running.
            self.containers.clear();
            return Ok(());
        }
        let names: Vec<String> = self.containers.keys().cloned().collect();
        for name in names {
            if let Some(c) = self.containers.remove(&name) {
                c.rm().await.with_context(|| format!("removing {name}"))?;
            }
        }
        docker::remove_network(docker::HEIG.name);
        Ok(())
    }

    /// Print where a kept stack can be reached.
    pub fn print_urls(&self) {
        if let Some(ha) = self.ips.get("ha") {
            eprintln!("The stack keeps running (remove it with `cargo xtask down`):");
            eprintln!("  web app through HAProxy: http://{ha}/");
            eprintln!("  HAProxy stats page:      http://{ha}:1936/");
            eprintln!("  HAProxy admin socket:    tcp {ha}:9999");
        }
    }

    /// GET `url`, returning status, `x-backend-ip` and the JSON body.
    pub async fn get_json(
        &self,
        client: &reqwest::Client,
        url: &str,
    ) -> Result<(u16, Option<String>, serde_json::Value)> {
        let resp = client.get(url).send().await?;
        let status = resp.status().as_u16();
        let backend = resp
            .headers()
            .get("x-backend-ip")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.json().await.unwrap_or(serde_json::Value::Null);
        Ok((status, backend, body))
    }

    /// HAProxy's stats as (proxy, server, status) rows.
    pub async fn haproxy_stats(&self) -> Result<Vec<(String, String, String)>> {
        let url = format!("http://{}:1936/;csv", self.ip("ha")?);
        let text = self.http.get(&url).send().await?.text().await?;
        parse_stats_csv(&text)
    }
}

/// Parse HAProxy's stats CSV into (pxname, svname, status) rows.
pub fn parse_stats_csv(text: &str) -> Result<Vec<(String, String, String)>> {
    let mut lines = text.lines();
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .context("stats CSV has no '# pxname,...' header")?;
    let cols: Vec<&str> = header.split(',').collect();
    let status = cols
        .iter()
        .position(|c| *c == "status")
        .context("stats CSV has no status column")?;
    Ok(lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some((
                f.first()?.to_string(),
                f.get(1)?.to_string(),
                f.get(status)?.to_string(),
            ))
        })
        .collect())
}

/// Poll `probe` until it yields `Some`, at most `deadline`; the last error
/// or state is in the failure message.
pub async fn poll<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let end = Instant::now() + deadline;
    let mut last;
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => last = "not yet".into(),
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= end {
            bail!("{what}: still not true after {deadline:?} ({last})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn remove_leftovers() -> Result<()> {
    let ids = docker::run(["ps", "-aq", "--filter", &format!("label={LABEL}")])?;
    for id in ids.split_whitespace() {
        docker::run(["rm", "-f", "-v", id])?;
    }
    Ok(())
}

/// Write `docker ps` into `dir/file`.
pub fn save_docker_ps(checks: &mut Checks, dir: &Path, file: &str) -> Result<PathBuf> {
    let path = dir.join(file);
    std::fs::write(&path, docker::run(["ps"])?)?;
    checks.deliverable(&path);
    Ok(path)
}

/// Write `docker inspect NAME` into `dir/inspect-NAME.json`.
pub fn save_docker_inspect(checks: &mut Checks, dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(format!("inspect-{name}.json"));
    std::fs::write(&path, docker::run(["inspect", name])?)?;
    checks.deliverable(&path);
    Ok(path)
}

/// Write `docker logs NAME` (stdout and stderr) into `dir/file`.
pub fn save_docker_logs(checks: &mut Checks, dir: &Path, name: &str, file: &str) -> Result<PathBuf> {
    let out = std::process::Command::new("docker")
        .args(["logs", name])
        .output()
        .context("running docker logs")?;
    let mut text = out.stdout;
    text.extend_from_slice(&out.stderr);
    let path = dir.join(file);
    std::fs::write(&path, text)?;
    checks.deliverable(&path);
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_csv_rows_carry_the_status_column() {
        let csv = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight\n\
                   nodes,s1,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1\n\
                   nodes,s2,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1\n";
        let rows = parse_stats_csv(csv).unwrap();
        assert_eq!(
            rows,
            vec![
                ("nodes".into(), "s1".into(), "UP".into()),
                ("nodes".into(), "s2".into(), "DOWN".into())
            ]
        );
    }

    #[test]
    fn stats_csv_without_header_is_an_error() {
        assert!(parse_stats_csv("nodes,s1,UP\n").is_err());
    }
}
