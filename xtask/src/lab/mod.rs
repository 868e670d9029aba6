//! The lab's tasks as scenarios: one definition per task, run by
//! `cargo xtask task N` and by the integration tests alike.
//!
//! Containers are started with the Docker CLI on the lab's `heig` network.
//! Only `ha` publishes ports, and only on 127.0.0.1 (random host ports), so
//! nothing is reachable from outside the machine. testcontainers-rs is not
//! used for this: it publishes every exposed port on all interfaces and has
//! no way to bind 127.0.0.1. Every container carries the label `ait.lab=1`,
//! which is how a run finds and removes leftovers of an earlier one.

mod baseline;
mod chaos;
pub mod load;
mod membership;
mod task0;
mod task1;
mod task2;
mod task3;
mod task4;
mod task5;
mod task6;

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::checks::Checks;
use crate::docker;

pub use chaos::{chaos, ChaosOptions};
pub use task0::task0;
pub use task1::task1;
pub use task2::task2;
pub use task3::task3;
pub use task4::task4;
pub use task5::task5;
pub use task6::task6;

/// How a scenario run behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Leave the stack running at the end (and print its URLs).
    pub keep: bool,
}

/// The lab tasks implemented so far.
pub const TASKS: &[u8] = &[0, 1, 2, 3, 4, 5, 6];

/// Run task `n`.
pub async fn run_task(n: u8, opts: &Options) -> Result<Checks> {
    match n {
        0 => task0(opts).await,
        1 => task1(opts).await,
        2 => task2(opts).await,
        3 => task3(opts).await,
        4 => task4(opts).await,
        5 => task5(opts).await,
        6 => task6(opts).await,
        other => bail!(
            "lab task {other} is not implemented yet (implemented: {:?})",
            TASKS
        ),
    }
}

const LABEL: &str = "ait.lab";
/// ha's ports, published on 127.0.0.1: HTTP, stats and, up to task 5, the
/// lab's admin socket (the final stage keeps it inside the container).
fn ha_ports(stage: u8) -> &'static [u16] {
    if stage >= 6 {
        &[80, 1936]
    } else {
        &[80, 1936, 9999]
    }
}

/// Scenarios share container names and the network: one at a time per
/// process (the integration tests run in parallel threads).
static ONE_LAB: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What to start: `ait/<image>:task<stage>` named `name` on `heig`.
#[derive(Debug, Clone, Default)]
pub struct Spec<'a> {
    pub image: &'a str,
    pub stage: u8,
    pub name: &'a str,
    pub env: Vec<(&'a str, String)>,
    /// Bind mounts (host path, container path), read-only.
    pub mounts: Vec<(PathBuf, &'a str)>,
}

/// ha of `stage` with `HA_RELOAD=reload` (task 6: `reconciler` or `lab`).
pub fn ha_spec(stage: u8, reload: &str) -> Spec<'static> {
    Spec {
        image: "ha",
        stage,
        name: "ha",
        env: vec![("HA_RELOAD", reload.to_string())],
        ..Default::default()
    }
}

/// A running lab stack: containers by name on `heig`.
pub struct Lab {
    names: Vec<String>,
    ips: BTreeMap<String, Ipv4Addr>,
    /// ha's container port -> 127.0.0.1:host port
    published: BTreeMap<u16, SocketAddr>,
    pub http: reqwest::Client,
    _one_lab: tokio::sync::MutexGuard<'static, ()>,
    /// `target/lab.lock`, locked: one lab per machine, also across
    /// processes (a `cargo xtask task N` next to the test suite or a bench
    /// would otherwise remove the other's containers).
    _machine_lock: std::fs::File,
    /// A fresh gossip key for this stack: the final stage refuses to run
    /// its agents without one (or an explicit GOSSIP_INSECURE=1).
    gossip_key: String,
}

impl Lab {
    /// Remove leftovers of earlier runs and make sure `heig` exists.
    pub async fn new() -> Result<Lab> {
        let guard = ONE_LAB.lock().await;
        let machine_lock = tokio::task::spawn_blocking(lock_machine).await??;
        crate::prereq::ensure_docker().await?;
        remove_leftovers()?;
        docker::ensure_network(&docker::HEIG)?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        Ok(Lab {
            names: Vec::new(),
            ips: BTreeMap::new(),
            published: BTreeMap::new(),
            http,
            _one_lab: guard,
            _machine_lock: machine_lock,
            gossip_key: fresh_gossip_key()?,
        })
    }

    /// Start a container with its hostname set to its name, as the lab
    /// does; `ha` publishes its ports on 127.0.0.1.
    pub async fn start(&mut self, spec: Spec<'_>) -> Result<Ipv4Addr> {
        let name = spec.name;
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            name,
            "--hostname",
            name,
            "--network",
            docker::HEIG.name,
            "--label",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("{LABEL}=1"));
        for (k, v) in &spec.env {
            args.extend(["-e".into(), format!("{k}={v}")]);
        }
        if spec.stage >= 6 && !spec.env.iter().any(|(k, _)| k.starts_with("GOSSIP_")) {
            args.extend(["-e".into(), format!("GOSSIP_KEY={}", self.gossip_key)]);
        }
        for (host, path) in &spec.mounts {
            args.extend(["-v".into(), format!("{}:{path}:ro", host.display())]);
        }
        let published: &[u16] = if spec.image == "ha" {
            ha_ports(spec.stage)
        } else {
            &[]
        };
        for port in published {
            args.extend(["-p".into(), format!("127.0.0.1::{port}")]);
        }
        if spec.image == "webapp" {
            // One name for every web app, as compose's service name: ha's
            // agent finds them through it after its own restart.
            args.extend(["--network-alias".into(), "webapp".into()]);
        }
        args.push(format!("ait/{}:task{}", spec.image, spec.stage));
        docker::run(&args).with_context(|| {
            format!("starting {name} from ait/{}:task{}", spec.image, spec.stage)
        })?;
        self.names.push(name.into());
        self.learn(name, published)
    }

    /// Read a container's address on `heig` and, for ha, its published
    /// ports (they change when it restarts).
    fn learn(&mut self, name: &str, published: &[u16]) -> Result<Ipv4Addr> {
        let ip = docker::ip_on(name, docker::HEIG.name)?;
        self.ips.insert(name.into(), ip);
        for &port in published {
            let out = docker::run(["port", name, &format!("{port}/tcp")])?;
            let addr = out
                .lines()
                .find_map(|l| l.trim().parse::<SocketAddr>().ok())
                .with_context(|| format!("{name}:{port} is not published: {out:?}"))?;
            self.published.insert(port, addr);
        }
        Ok(ip)
    }

    /// Read a web app's address on `heig` again (after it was reconnected
    /// to the network, maybe with another address).
    pub fn refresh_ip(&mut self, name: &str) -> Result<Ipv4Addr> {
        self.learn(name, &[])
    }

    /// ha restarted (`docker restart`) or, with `recreate`, removed and
    /// started anew from `spec`, under `load`: the answers of the web apps
    /// at `ips` are forgotten, the restart window opened, and the load sent
    /// to ha's new published port. Returns when the restart began, for
    /// [`load::Load::wait_back`].
    pub async fn bounce_ha(
        &mut self,
        load: &load::Load,
        ips: &[String],
        recreate: Option<Spec<'_>>,
    ) -> Result<Instant> {
        for ip in ips {
            load.forget(ip);
        }
        load.begin_restart();
        let began = Instant::now();
        match recreate {
            Some(spec) => {
                self.stop("ha").await?;
                self.start(spec).await?;
            }
            None => {
                self.restart("ha").await?;
            }
        }
        load.retarget(self.ha(80)?);
        Ok(began)
    }

    /// The addresses on `heig` of the containers `names`, as strings.
    pub fn ips_of(&self, names: &[&str]) -> Result<Vec<String>> {
        names
            .iter()
            .map(|n| self.ip(n).map(|ip| ip.to_string()))
            .collect()
    }

    /// `docker restart NAME`; ha's published ports are read again.
    pub async fn restart(&mut self, name: &str) -> Result<Ipv4Addr> {
        docker::run(["restart", name])?;
        let published: Vec<u16> = if name == "ha" {
            self.published.keys().copied().collect()
        } else {
            Vec::new()
        };
        self.learn(name, &published)
    }

    /// The address of a started container on `heig`.
    pub fn ip(&self, name: &str) -> Result<Ipv4Addr> {
        self.ips
            .get(name)
            .copied()
            .with_context(|| format!("container {name} was not started by this scenario"))
    }

    /// Where ha's container `port` is published on 127.0.0.1.
    pub fn ha(&self, port: u16) -> Result<SocketAddr> {
        self.published
            .get(&port)
            .copied()
            .with_context(|| format!("ha's port {port} is not published (is ha started?)"))
    }

    /// `docker stop` (graceful) then remove one container.
    pub async fn stop(&mut self, name: &str) -> Result<()> {
        docker::run(["stop", name])?;
        docker::run(["rm", "-v", name])?;
        self.names.retain(|n| n != name);
        self.ips.remove(name);
        Ok(())
    }

    /// Remove every container and the network, unless the stack is kept.
    pub async fn teardown(self, opts: &Options) -> Result<()> {
        if opts.keep {
            self.print_urls();
            return Ok(());
        }
        for name in &self.names {
            docker::run(["rm", "-f", "-v", name])?;
        }
        docker::remove_network(docker::HEIG.name);
        Ok(())
    }

    /// Print where a kept stack can be reached.
    pub fn print_urls(&self) {
        let show = |port: u16| {
            self.published
                .get(&port)
                .map(|a| a.to_string())
                .unwrap_or_else(|| "not published".into())
        };
        eprintln!("The stack keeps running (remove it with `cargo xtask down`):");
        eprintln!("  web app through HAProxy: http://{}/", show(80));
        eprintln!("  HAProxy stats page:      http://{}/", show(1936));
        eprintln!("  HAProxy admin socket:    tcp {}", show(9999));
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
        let url = format!("http://{}/;csv", self.ha(1936)?);
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
pub async fn poll<T, F, Fut>(what: &str, deadline: Duration, probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    poll_every(what, deadline, Duration::from_millis(250), probe).await
}

/// [`poll`] with another interval (the benchmarks time transitions with a
/// finer one).
pub async fn poll_every<T, F, Fut>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut probe: F,
) -> Result<T>
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
        tokio::time::sleep(every).await;
    }
}

/// 32 random bytes in base64, like `serf keygen`.
pub fn fresh_gossip_key() -> Result<String> {
    use base64::Engine as _;
    use std::io::Read as _;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("reading /dev/urandom for a gossip key")?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key))
}

/// Wait for, then take, the machine-wide lab lock (released on drop).
fn lock_machine() -> Result<std::fs::File> {
    let path = crate::project::target_dir().join("lab.lock");
    std::fs::create_dir_all(crate::project::target_dir())?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if file.try_lock().is_err() {
        eprintln!(
            "xtask: another lab is running on this machine; waiting for it ({})",
            path.display()
        );
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(file)
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
pub fn save_docker_logs(
    checks: &mut Checks,
    dir: &Path,
    name: &str,
    file: &str,
) -> Result<PathBuf> {
    let text = docker::logs(name)?;
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
