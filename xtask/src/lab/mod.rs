//! The lab's tasks as scenarios: one definition per task, run by
//! `cargo xtask task N` and by the integration tests alike.
//!
//! Containers are started, stopped, restarted, paused, exec'd into and read
//! through testcontainers (`AsyncRunner`, `ContainerAsync`) on the lab's
//! `heig` network; what testcontainers does not cover (the network and its
//! subnet, connecting and disconnecting, inspecting, `docker kill`, the
//! `docker ps` table) goes through the Docker API ([`crate::engine`]). No
//! scenario spawns the `docker` command. Only `ha` publishes ports, and only
//! on 127.0.0.1 (random host ports): testcontainers publishes every exposed
//! port on all interfaces by default, so each container's host config sets
//! the bindings itself and turns `publish_all_ports` off.
//!
//! A [`Lab`] holds the handles of the containers it started: they are
//! removed when it is dropped, also when a scenario fails half-way. With
//! `--keep` the handles are deliberately leaked (`std::mem::forget`) and
//! the stack keeps running. Every container carries the label `ait.lab=1`,
//! which is how a run (and `cargo xtask down`) finds what a kept stack or a
//! crashed run left behind.

mod baseline;
mod chaos;
pub mod environ;
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

use testcontainers::core::{AccessMode, ContainerPort, ExecCommand, Mount};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::checks::Checks;
use crate::engine::{self, ExecOutput, HEIG};

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

/// The shared session store's container (and image) name: what the final
/// stage's `SESSION_STORE` names.
pub const SESSIONS: &str = "sessions";

/// The session store of the final stage (Redis, image `ait/sessions`).
pub fn sessions_spec() -> Spec<'static> {
    Spec {
        image: SESSIONS,
        stage: 6,
        name: SESSIONS,
        ..Default::default()
    }
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

/// A running lab stack: containers by name on `heig`, each held by its
/// testcontainers handle.
pub struct Lab {
    containers: BTreeMap<String, Started>,
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

/// One started container: its handle and the image it runs.
struct Started {
    handle: ContainerAsync<GenericImage>,
    image: String,
}

impl Lab {
    /// Remove leftovers of earlier runs and make sure `heig` exists.
    pub async fn new() -> Result<Lab> {
        let guard = ONE_LAB.lock().await;
        let machine_lock = tokio::task::spawn_blocking(lock_machine).await??;
        crate::prereq::ensure_docker().await?;
        remove_leftovers().await?;
        engine::ensure_network(&HEIG, LABEL).await?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        Ok(Lab {
            containers: BTreeMap::new(),
            ips: BTreeMap::new(),
            published: BTreeMap::new(),
            http,
            _one_lab: guard,
            _machine_lock: machine_lock,
            gossip_key: fresh_gossip_key()?,
        })
    }

    /// Start a container with its hostname set to its name, as the lab
    /// does; `ha` publishes its ports on 127.0.0.1, nothing else publishes
    /// any. A final-stage web app uses the shared session store (its
    /// image's default, `SESSION_STORE=redis://sessions:6379/0`): the
    /// `sessions` container is started first when it is not running yet,
    /// unless the spec sets a store of its own.
    pub async fn start(&mut self, spec: Spec<'_>) -> Result<Ipv4Addr> {
        if spec.image == "webapp"
            && spec.stage >= 6
            && !spec.env.iter().any(|(k, _)| *k == "SESSION_STORE")
            && !self.containers.contains_key(SESSIONS)
        {
            self.start_one(sessions_spec()).await?;
        }
        self.start_one(spec).await
    }

    async fn start_one(&mut self, spec: Spec<'_>) -> Result<Ipv4Addr> {
        let name = spec.name;
        let published: &'static [u16] = if spec.image == "ha" {
            ha_ports(spec.stage)
        } else {
            &[]
        };
        let mut image =
            GenericImage::new(format!("ait/{}", spec.image), format!("task{}", spec.stage));
        for &port in published {
            image = image.with_exposed_port(ContainerPort::Tcp(port));
        }
        let mut req = image
            .with_container_name(name)
            .with_hostname(name)
            .with_network(HEIG.name)
            .with_label(LABEL, "1")
            .with_startup_timeout(Duration::from_secs(120))
            .with_host_config_modifier(move |host| {
                host.publish_all_ports = Some(false);
                host.port_bindings = Some(
                    published
                        .iter()
                        .map(|p| {
                            (
                                format!("{p}/tcp"),
                                Some(vec![bollard::models::PortBinding {
                                    host_ip: Some("127.0.0.1".into()),
                                    host_port: Some(String::new()),
                                }]),
                            )
                        })
                        .collect(),
                );
            });
        for (k, v) in &spec.env {
            req = req.with_env_var(*k, v.clone());
        }
        if spec.stage >= 6
            && spec.image != SESSIONS
            && !spec.env.iter().any(|(k, _)| k.starts_with("GOSSIP_"))
        {
            req = req.with_env_var("GOSSIP_KEY", self.gossip_key.clone());
        }
        if spec.stage >= 6
            && spec.image == "ha"
            && !spec.env.iter().any(|(k, _)| *k == "GOSSIP_BACKENDS")
        {
            // Whom ha's agent retries joining after its own restart: in
            // compose the service name `webapp`, which Docker's DNS resolves
            // to every web app (a network alias). testcontainers creates a
            // container with its network only (no aliases), so the lab names
            // the web apps running now, or ha itself when there are none yet.
            let apps = self.running("webapp");
            let backends = if apps.is_empty() {
                name.to_string()
            } else {
                apps.join(" ")
            };
            req = req.with_env_var("GOSSIP_BACKENDS", backends);
        }
        for (host, path) in &spec.mounts {
            req = req.with_mount(
                Mount::bind_mount(host.display().to_string(), *path)
                    .with_access_mode(AccessMode::ReadOnly),
            );
        }
        let handle = req.start().await.with_context(|| {
            format!("starting {name} from ait/{}:task{}", spec.image, spec.stage)
        })?;
        self.containers.insert(
            name.into(),
            Started {
                handle,
                image: spec.image.into(),
            },
        );
        self.learn(name, published).await
    }

    /// The names of the started containers of `image`.
    fn running(&self, image: &str) -> Vec<String> {
        self.containers
            .iter()
            .filter(|(_, s)| s.image == image)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The handle of a started container.
    fn handle(&self, name: &str) -> Result<&ContainerAsync<GenericImage>> {
        self.containers
            .get(name)
            .map(|s| &s.handle)
            .ok_or_else(|| engine::unknown(name))
    }

    /// Read a container's address on `heig` and, for ha, its published
    /// ports (they change when it restarts).
    async fn learn(&mut self, name: &str, published: &[u16]) -> Result<Ipv4Addr> {
        let ip = engine::ip_on(name, HEIG.name).await?;
        self.ips.insert(name.into(), ip);
        for &port in published {
            self.published
                .insert(port, engine::published(name, port).await?);
        }
        Ok(ip)
    }

    /// Read a web app's address on `heig` again (after it was reconnected
    /// to the network, maybe with another address).
    pub async fn refresh_ip(&mut self, name: &str) -> Result<Ipv4Addr> {
        self.learn(name, &[]).await
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

    /// `docker restart NAME` (stop with Docker's 10 s grace, then start);
    /// ha's published ports are read again.
    pub async fn restart(&mut self, name: &str) -> Result<Ipv4Addr> {
        self.stop_only(name).await?;
        self.start_again(name).await
    }

    /// `docker kill NAME` (SIGKILL): the container stays, stopped, until
    /// the scenario ends.
    pub async fn kill(&self, name: &str) -> Result<()> {
        engine::kill(self.handle(name)?.id(), "KILL").await
    }

    /// `docker pause NAME`.
    pub async fn pause(&self, name: &str) -> Result<()> {
        self.handle(name)?
            .pause()
            .await
            .with_context(|| format!("pausing {name}"))
    }

    /// `docker unpause NAME`.
    pub async fn unpause(&self, name: &str) -> Result<()> {
        self.handle(name)?
            .unpause()
            .await
            .with_context(|| format!("unpausing {name}"))
    }

    /// The gossip key this lab gives the final stage's containers (for
    /// checks that it appears nowhere it should not; never print it).
    pub fn gossip_key(&self) -> &str {
        &self.gossip_key
    }

    /// `docker exec NAME CMD...`: what it printed and how it ended.
    pub async fn exec_output(&self, name: &str, cmd: &[&str]) -> Result<ExecOutput> {
        let what = || format!("docker exec {name} {}", cmd.join(" "));
        let mut run = self
            .handle(name)?
            .exec(ExecCommand::new(cmd.iter().copied()))
            .await
            .with_context(what)?;
        let stdout = run.stdout_to_vec().await.with_context(what)?;
        let stderr = run.stderr_to_vec().await.with_context(what)?;
        // The streams end with the process; its exit code follows shortly.
        let code = poll_every(
            &what(),
            Duration::from_secs(10),
            Duration::from_millis(5),
            || {
                let run = &run;
                async move { Ok(run.exit_code().await?) }
            },
        )
        .await?;
        Ok(ExecOutput {
            code,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    /// `docker exec NAME CMD...`'s stdout; a non-zero exit is an error
    /// carrying stderr.
    pub async fn exec(&self, name: &str, cmd: &[&str]) -> Result<String> {
        let out = self.exec_output(name, cmd).await?;
        if out.code != 0 {
            bail!(
                "docker exec {name} {} failed (exit {}): {}",
                cmd.join(" "),
                out.code,
                out.stderr.trim()
            );
        }
        Ok(out.stdout)
    }

    /// `docker exec -d NAME CMD...` (testcontainers' exec attaches to the
    /// output, which a long-running command must outlive).
    pub async fn exec_detached(&self, name: &str, cmd: &[&str]) -> Result<()> {
        engine::exec_detached(self.handle(name)?.id(), cmd).await
    }

    /// `docker logs NAME`: its stdout, then its stderr.
    pub async fn logs(&self, name: &str) -> Result<String> {
        let handle = self.handle(name)?;
        let mut text = handle
            .stdout_to_vec()
            .await
            .with_context(|| format!("reading the logs of {name}"))?;
        text.extend(
            handle
                .stderr_to_vec()
                .await
                .with_context(|| format!("reading the logs of {name}"))?,
        );
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    /// `docker inspect -f {{.State.ExitCode}} NAME`.
    pub async fn exit_code(&self, name: &str) -> Result<Option<i64>> {
        self.handle(name)?
            .exit_code()
            .await
            .with_context(|| format!("reading the exit code of {name}"))
    }

    /// `docker stop NAME` with Docker's 10 s grace, the container kept.
    pub async fn stop_only(&self, name: &str) -> Result<()> {
        self.handle(name)?
            .stop_with_timeout(Some(10))
            .await
            .with_context(|| format!("stopping {name}"))
    }

    /// `docker start NAME` of a stopped one.
    pub async fn start_again(&mut self, name: &str) -> Result<Ipv4Addr> {
        self.handle(name)?
            .start()
            .await
            .with_context(|| format!("starting {name} again"))?;
        let published: Vec<u16> = if name == "ha" {
            self.published.keys().copied().collect()
        } else {
            Vec::new()
        };
        self.learn(name, &published).await
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

    /// `docker stop` (graceful, Docker's 10 s grace) then remove one
    /// container.
    pub async fn stop(&mut self, name: &str) -> Result<()> {
        self.stop_only(name).await?;
        if let Some(started) = self.containers.remove(name) {
            started
                .handle
                .rm()
                .await
                .with_context(|| format!("removing {name}"))?;
        }
        self.ips.remove(name);
        Ok(())
    }

    /// Remove every container and the network, unless the stack is kept:
    /// then the handles are leaked on purpose, and `cargo xtask down` (or
    /// the next run's sweep) removes the stack.
    pub async fn teardown(mut self, opts: &Options) -> Result<()> {
        if opts.keep {
            self.print_urls();
            for (_, started) in std::mem::take(&mut self.containers) {
                std::mem::forget(started.handle);
            }
            return Ok(());
        }
        for (name, started) in std::mem::take(&mut self.containers) {
            started
                .handle
                .rm()
                .await
                .with_context(|| format!("removing {name}"))?;
        }
        engine::remove_network(HEIG.name).await
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

/// `cargo xtask down`: remove a kept stack (or what a crashed run left)
/// and the lab's network.
pub async fn down() -> Result<()> {
    crate::prereq::ensure_docker().await?;
    remove_leftovers().await?;
    engine::remove_network(HEIG.name).await
}

/// What a kept stack or a crashed run left: containers carrying the lab's
/// label.
async fn remove_leftovers() -> Result<()> {
    let n = engine::remove_labelled(LABEL).await?;
    if n > 0 {
        eprintln!("xtask: removed {n} container(s) an earlier run left behind");
    }
    Ok(())
}

/// Write `docker ps` (the CLI's table, from the API) into `dir/file`.
pub async fn save_docker_ps(checks: &mut Checks, dir: &Path, file: &str) -> Result<PathBuf> {
    let path = dir.join(file);
    tokio::fs::write(&path, engine::ps_table().await?).await?;
    checks.deliverable(&path);
    Ok(path)
}

/// Write `docker inspect NAME` into `dir/inspect-NAME.json`.
pub async fn save_docker_inspect(checks: &mut Checks, dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(format!("inspect-{name}.json"));
    tokio::fs::write(&path, engine::inspect_json(name).await?).await?;
    checks.deliverable(&path);
    Ok(path)
}

/// Write `docker logs NAME` (stdout and stderr) into `dir/file`.
pub async fn save_docker_logs(
    lab: &Lab,
    checks: &mut Checks,
    dir: &Path,
    name: &str,
    file: &str,
) -> Result<PathBuf> {
    let text = lab.logs(name).await?;
    let path = dir.join(file);
    tokio::fs::write(&path, text).await?;
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
