//! Deployment scenarios beyond the lab's single `docker run`s: the final
//! stage through `docker/compose.yaml` (Debian's docker-compose 1.29 or
//! `docker compose` v2), scaled up and down under a steady client load.
//! The same file as a stack on a single-node Docker Swarm.
//! `cargo xtask compose`, `cargo xtask swarm` and `xtask/tests/deploy.rs`
//! run the same code.

use anyhow::{ensure, Context, Result};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;
use tokio::process::Command;

use crate::checks::Checks;
use crate::lab::load::Load;
use crate::lab::{fresh_gossip_key, parse_stats_csv, poll};
use crate::{engine, images, prereq, project};

/// The compose project; its own network and subnet, so that it can run next
/// to a lab stack.
const PROJECT: &str = "aitcompose";
const SUBNET: &str = "192.168.44.0/24";

/// One compose project. [`Project::down`] brings it down (with its
/// volumes); one dropped without it (an early error) is brought down from
/// its `Drop`.
struct Project {
    cmd: Vec<String>,
    env: Vec<(String, String)>,
    down: bool,
}

impl Project {
    async fn new(env: Vec<(String, String)>) -> Result<Project> {
        // prereq probes the compose tool with blocking commands (once).
        let cmd = tokio::task::spawn_blocking(prereq::compose_command).await??;
        Ok(Project {
            cmd,
            env,
            down: false,
        })
    }

    /// `compose -p aitcompose -f docker/compose.yaml ARGS...`
    async fn run(&self, args: &[&str]) -> Result<String> {
        let file = project::root().join("docker/compose.yaml");
        let out = Command::new(&self.cmd[0])
            .args(&self.cmd[1..])
            .args(["-p", PROJECT, "-f"])
            .arg(&file)
            .args(args)
            .env("AIT_SUBNET", SUBNET)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .await
            .with_context(|| format!("running {} {}", self.cmd.join(" "), args.join(" ")))?;
        ensure!(
            out.status.success(),
            "{} {} failed: {}",
            self.cmd.join(" "),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `compose down -v --remove-orphans`; a failure is not an error.
    async fn down(mut self) {
        self.down = true;
        let _ = self.run(&["down", "-v", "--remove-orphans"]).await;
    }

    /// Ids of the running containers of `service`.
    async fn containers(&self, service: &str) -> Result<Vec<String>> {
        containers_of(service, false).await
    }
}

/// Ids of the project's containers of `service`, newest first; stopped ones
/// too when `all`.
async fn containers_of(service: &str, all: bool) -> Result<Vec<String>> {
    let project = format!("com.docker.compose.project={PROJECT}");
    let service = format!("com.docker.compose.service={service}");
    engine::containers_with_filters(&[("label", &project), ("label", &service)], all).await
}

impl Drop for Project {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        let p = Project {
            cmd: self.cmd.clone(),
            env: self.env.clone(),
            // this copy's own drop does nothing
            down: true,
        };
        finish_in_drop(p.down());
    }
}

/// Run a clean-up to its end from a `Drop` (a scenario that returned early
/// with an error, or panicked): on a multi-threaded runtime the worker is
/// handed over first (`block_in_place`); otherwise the clean-up runs on a
/// thread of its own, with a runtime of its own.
fn finish_in_drop<F>(cleanup: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(cleanup))
        }
        _ => {
            let _ = std::thread::spawn(move || match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(cleanup),
                Err(e) => eprintln!("   !! clean-up skipped, no runtime for it: {e}"),
            })
            .join();
        }
    }
}

/// `docker ARGS...` for the user-facing swarm commands (`swarm`, `stack`,
/// `service`), with `env` added: its stdout; a failure names the command
/// and carries its stderr.
async fn docker_cli<S: AsRef<OsStr>>(args: &[S], env: &[(String, String)]) -> Result<String> {
    let shown = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("docker")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .with_context(|| format!("running docker {shown}"))?;
    ensure!(
        out.status.success(),
        "docker {shown} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The web apps' addresses on the project network.
async fn webapp_ips(p: &Project) -> Result<BTreeSet<String>> {
    let mut ips = BTreeSet::new();
    for id in p.containers("webapp").await? {
        ips.insert(engine::ips(&id).await?);
    }
    Ok(ips)
}

/// Wait until HAProxy's `nodes` backend has exactly the running web apps
/// UP (as many servers as containers; the reconciler names servers after
/// the members, i.e. the containers' hostnames).
async fn wait_follows(p: &Project, stats: SocketAddr, want: usize) -> Result<String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    poll(
        &format!("HAProxy lists the {want} running web apps UP"),
        Duration::from_secs(90),
        || async {
            let running = p.containers("webapp").await?;
            let text = http
                .get(format!("http://{stats}/;csv"))
                .send()
                .await?
                .text()
                .await?;
            let rows = parse_stats_csv(&text)?;
            let up: Vec<&str> = rows
                .iter()
                .filter(|(px, sv, st)| px == "nodes" && sv != "BACKEND" && st == "UP")
                .map(|(_, sv, _)| sv.as_str())
                .collect();
            let names: BTreeSet<&str> = up.iter().copied().collect();
            let ids: BTreeSet<&str> = running.iter().map(|id| &id[..12]).collect();
            if running.len() == want && names == ids {
                Ok(Some(format!("{} UP: {}", up.len(), up.join(", "))))
            } else {
                anyhow::bail!("{} containers running, servers UP: {:?}", running.len(), up)
            }
        },
    )
    .await
}

/// Compose: up (2 web apps), scale to 5 and back to 1 under load with no
/// failed request, gossip encrypted; then the same file without a key is
/// refused with a clear message, and with GOSSIP_INSECURE=1 it runs (and
/// says it is unencrypted).
pub async fn compose() -> Result<Checks> {
    let mut checks = Checks::new("Compose: the final stage on one host, scaled under load");
    checks.step("building the images (cached when nothing changed)");
    images::ensure_images(6).await?;
    let (http, stats) = (free_port()?, free_port()?);
    let key = fresh_gossip_key()?;
    let p = Project::new(vec![
        ("AIT_GOSSIP_KEY".into(), key.clone()),
        ("AIT_HTTP_PORT".into(), http.to_string()),
        ("AIT_STATS_PORT".into(), stats.to_string()),
    ])
    .await?;
    let _ = p.run(&["down", "-v", "--remove-orphans"]).await;
    checks.step("compose up -d (ha and 2 web apps)");
    p.run(&["up", "-d"]).await?;
    let stats_addr: SocketAddr = ([127, 0, 0, 1], stats).into();
    checks
        .check("HAProxy follows the 2 web apps of `up -d`", || {
            wait_follows(&p, stats_addr, 2)
        })
        .await;
    checks
        .check("gossip is encrypted with the key given", || async {
            let ha = p.containers("ha").await?;
            let id = ha.first().context("no ha container")?;
            let logs = engine::logs(id).await?;
            ensure!(
                logs.contains("Encrypted: true"),
                "ha's agent does not say `Encrypted: true`"
            );
            let members = engine::exec(id, &["serf", "members"]).await?;
            let alive = members.lines().filter(|l| l.contains("alive")).count();
            ensure!(
                alive == 3,
                "ha's agent sees {alive} alive members:\n{members}"
            );
            Ok("ha's agent: Encrypted: true; 3 members alive".to_string())
        })
        .await;
    checks
        .check(
            "the gossip key reaches no process init started in the web apps and ha (/proc/PID/environ), nor their logs",
            || async {
                let mut said = Vec::new();
                let webapps = p.containers("webapp").await?;
                ensure!(webapps.len() == 2, "{} web app containers", webapps.len());
                let ha = p.containers("ha").await?;
                let all = webapps
                    .iter()
                    .map(|id| (id, ["webapp", "serf"]))
                    .chain(ha.iter().map(|id| (id, ["haproxy", "serf"])));
                for (id, must) in all {
                    let short = &id[..12.min(id.len())];
                    let out = engine::exec(id, &["bash", "-c", crate::lab::environ::PROBE]).await?;
                    said.push(crate::lab::environ::check(short, &out, &key, &must)?);
                    ensure!(
                        !engine::logs(id).await?.contains(&key),
                        "{short}'s logs show the gossip key"
                    );
                }
                Ok(said.join("; "))
            },
        )
        .await;
    let load = Load::start(([127, 0, 0, 1], http).into());
    for n in [5usize, 1] {
        checks.step(&format!("compose up -d --scale webapp={n} (under load)"));
        p.run(&["up", "-d", "--scale", &format!("webapp={n}")])
            .await?;
        checks
            .check(&format!("HAProxy follows the scale to {n}"), || {
                wait_follows(&p, stats_addr, n)
            })
            .await;
    }
    // ha recreated (what an image update does): a new container, no
    // snapshot, no config. Once HAProxy answers, every request succeeds
    // and every web app is served again.
    checks.step("compose up -d --force-recreate --no-deps ha (under load)");
    let ips: Vec<String> = webapp_ips(&p).await?.into_iter().collect();
    for ip in &ips {
        load.forget(ip);
    }
    load.begin_restart();
    let t0 = std::time::Instant::now();
    p.run(&["up", "-d", "--force-recreate", "--no-deps", "ha"])
        .await?;
    load.retarget(([127, 0, 0, 1], http).into());
    checks
        .check("ha recreated: every web app back once HAProxy answers", || async {
            let back = load.wait_back(&ips, t0).await?;
            let (sent, failed) = load.snapshot();
            ensure!(failed == 0, "{failed} of {sent} requests failed so far");
            Ok(format!(
                "HAProxy answered after {:.2} s ({} requests without an answer before); every web app served {:.2} s later",
                back.answered_after,
                load.in_window(),
                back.all_served_after
            ))
        })
        .await;
    let report = load.stop().await;
    checks
        .check(
            "no failed request while scaling 2 -> 5 -> 1 and recreating ha",
            || async {
                ensure!(
                    report.sent > 0 && report.failed == 0,
                    "{} of {} requests failed, e.g. {:?}",
                    report.failed,
                    report.sent,
                    report.samples
                );
                let ips = webapp_ips(&p).await?;
                Ok(format!("0 of {} failed; serving now: {ips:?}", report.sent))
            },
        )
        .await;
    checks
        .check(
            "one cookie through 2 -> 5 -> 1 and ha recreated: sessionViews 1, 2, 3, ... (sticky routing, sessions in the `sessions` service)",
            || async {
                let s = &report.session;
                s.unbroken()?;
                Ok(format!("{} visits, no reset, no skip", s.visits))
            },
        )
        .await;
    p.down().await;

    checks.step("compose up -d without a gossip key");
    let p = Project::new(vec![
        ("AIT_HTTP_PORT".into(), free_port()?.to_string()),
        ("AIT_STATS_PORT".into(), free_port()?.to_string()),
    ])
    .await?;
    p.run(&["up", "-d", "--scale", "webapp=0"]).await?;
    checks
        .check(
            "no key: ha refuses to start and says what to set",
            || async {
                let text = poll(
                    "ha's logs explain the missing key",
                    Duration::from_secs(60),
                    || async {
                        let ids = containers_of("ha", true).await?;
                        let id = ids.first().context("no ha container")?;
                        let logs = engine::logs(id).await?;
                        Ok(logs
                            .lines()
                            .find(|l| l.contains("no gossip encryption key"))
                            .map(str::to_owned))
                    },
                )
                .await?;
                Ok(text.trim().to_string())
            },
        )
        .await;
    p.down().await;

    checks.step("compose up -d with AIT_GOSSIP_INSECURE=1 (1 web app)");
    let stats = free_port()?;
    let p = Project::new(vec![
        ("AIT_GOSSIP_INSECURE".into(), "1".into()),
        ("AIT_HTTP_PORT".into(), free_port()?.to_string()),
        ("AIT_STATS_PORT".into(), stats.to_string()),
    ])
    .await?;
    p.run(&["up", "-d", "--scale", "webapp=1"]).await?;
    checks
        .check("explicitly unencrypted: the stack still forms", || async {
            let up = wait_follows(&p, ([127, 0, 0, 1], stats).into(), 1).await?;
            let ha = p.containers("ha").await?;
            let logs = engine::logs(ha.first().context("no ha container")?).await?;
            ensure!(
                logs.contains("gossip is NOT encrypted") && logs.contains("Encrypted: false"),
                "ha's logs do not warn that gossip is unencrypted:\n{logs}"
            );
            Ok(format!("{up}; ha warns: gossip is NOT encrypted"))
        })
        .await;
    p.down().await;
    Ok(checks)
}

/// The stack's name on the swarm (services `ait_ha`, `ait_webapp`).
const STACK: &str = "ait";
const SWARM_SUBNET: &str = "192.168.45.0/24";

/// `docker/compose.yaml` without its `ports:` lists. Swarm's ingress
/// publishes on every interface (it ignores `127.0.0.1:`), and this
/// machine's rule is loopback only: the swarm test reaches HAProxy from
/// inside the ha container instead. Everything else is the file as is.
pub fn without_ports(compose: &str) -> String {
    let mut out = String::new();
    let mut skipping: Option<usize> = None;
    for line in compose.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(level) = skipping {
            if line.trim().is_empty() || indent > level {
                continue;
            }
            skipping = None;
        }
        if line.trim_start() == "ports:" {
            skipping = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A single-node swarm for the test: made (advertising 127.0.0.1) when
/// the engine is not in one, and left again by [`Swarm::leave`] (or its
/// `Drop`, after an early error); the stack is removed either way.
struct Swarm {
    made: bool,
    env: Vec<(String, String)>,
    left: bool,
}

impl Swarm {
    async fn join() -> Result<Swarm> {
        let state = engine::swarm_state().await?;
        let made = match state.as_str() {
            "active" => false,
            "inactive" => {
                docker_cli(&["swarm", "init", "--advertise-addr", "127.0.0.1"], &[]).await?;
                true
            }
            other => {
                anyhow::bail!("the engine's swarm state is {other:?}: expected active or inactive")
            }
        };
        Ok(Swarm {
            made,
            env: Vec::new(),
            left: false,
        })
    }

    async fn deploy(&mut self, file: &std::path::Path, env: Vec<(String, String)>) -> Result<()> {
        self.env = env;
        let args: [&OsStr; 5] = [
            "stack".as_ref(),
            "deploy".as_ref(),
            "-c".as_ref(),
            file.as_os_str(),
            STACK.as_ref(),
        ];
        docker_cli(&args, &self.env).await?;
        Ok(())
    }

    /// Running containers of `service` (`ha`, `webapp`) with their hostnames.
    async fn containers(&self, service: &str) -> Result<Vec<(String, String)>> {
        let label = format!("com.docker.swarm.service.name={STACK}_{service}");
        let mut out = Vec::new();
        for id in engine::containers_with_filters(&[("label", &label)], false).await? {
            let host = engine::hostname(&id).await?;
            out.push((id, host));
        }
        Ok(out)
    }

    /// Remove the stack, and leave the swarm if this test made it.
    async fn leave(mut self) {
        self.left = true;
        take_down(self.made).await;
    }
}

/// `docker stack rm ait`, then (once its network is gone) `docker swarm
/// leave --force` when `made`. Failures are not errors.
async fn take_down(made: bool) {
    let _ = docker_cli(&["stack", "rm", STACK], &[]).await;
    // The stack's network goes once its containers are gone.
    let network = format!("{STACK}_heig");
    for _ in 0..300 {
        if !matches!(engine::network_exists(&network).await, Ok(true)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if made {
        let _ = docker_cli(&["swarm", "leave", "--force"], &[]).await;
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if !self.left {
            finish_in_drop(take_down(self.made));
        }
    }
}

/// HAProxy's stats CSV (`show stat`), read inside the ha container from
/// the runtime API on its own 127.0.0.1:9999 with bash's /dev/tcp (nothing
/// is published, and the image has no HTTP client).
async fn stats_inside(ha: &str) -> Result<Vec<(String, String, String)>> {
    let csv = engine::exec(
        ha,
        &[
            "bash",
            "-c",
            "exec 3<>/dev/tcp/127.0.0.1/9999 && echo 'show stat' >&3 && cat <&3",
        ],
    )
    .await?;
    parse_stats_csv(&csv)
}

/// Wait until HAProxy lists exactly the running web app tasks UP.
async fn swarm_follows(s: &Swarm, want: usize) -> Result<String> {
    poll(
        &format!("HAProxy lists the {want} web app tasks UP"),
        Duration::from_secs(120),
        || async {
            let ha = s.containers("ha").await?;
            let (ha, _) = ha.first().context("no running ha task")?;
            let tasks = s.containers("webapp").await?;
            let rows = stats_inside(ha).await?;
            let up: BTreeSet<&str> = rows
                .iter()
                .filter(|(px, sv, st)| px == "nodes" && sv != "BACKEND" && st == "UP")
                .map(|(_, sv, _)| sv.as_str())
                .collect();
            let hosts: BTreeSet<&str> = tasks.iter().map(|(_, h)| h.as_str()).collect();
            if tasks.len() == want && up == hosts {
                Ok(Some(format!(
                    "{want} tasks, UP: {}",
                    up.into_iter().collect::<Vec<_>>().join(", ")
                )))
            } else {
                anyhow::bail!(
                    "{} tasks running ({hosts:?}), servers UP: {up:?}",
                    tasks.len()
                )
            }
        },
    )
    .await
}

/// Swarm: `docker stack deploy` of the compose file on a single-node swarm
/// (its ports left out, see [`without_ports`]), agents joining through
/// `tasks.ha` and advertising their overlay address; the web app service
/// scaled to 5 and down to 2, HAProxy following.
pub async fn swarm() -> Result<Checks> {
    let mut checks = Checks::new("Swarm: the final stage as a stack on a single-node swarm");
    checks.step("building the images (cached when nothing changed)");
    images::ensure_images(6).await?;
    let source = project::root().join("docker/compose.yaml");
    let compose = tokio::fs::read_to_string(&source)
        .await
        .with_context(|| format!("reading {}", source.display()))?;
    let file = project::target_dir().join("swarm-stack.yaml");
    tokio::fs::write(&file, without_ports(&compose))
        .await
        .with_context(|| format!("writing {}", file.display()))?;
    checks.step("docker swarm init --advertise-addr 127.0.0.1 (unless in a swarm already)");
    let mut s = Swarm::join().await?;
    let _ = docker_cli(&["stack", "rm", STACK], &[]).await;
    checks.step(&format!(
        "docker stack deploy -c {} {STACK} (the compose file without ports)",
        file.display()
    ));
    s.deploy(
        &file,
        vec![
            ("AIT_GOSSIP_KEY".into(), fresh_gossip_key()?),
            ("AIT_GOSSIP_JOIN".into(), "tasks.ha".into()),
            ("AIT_GOSSIP_BACKENDS".into(), "tasks.webapp".into()),
            ("AIT_SUBNET".into(), SWARM_SUBNET.into()),
        ],
    )
    .await?;
    checks
        .check("HAProxy follows the 2 web app tasks of the deploy", || {
            swarm_follows(&s, 2)
        })
        .await;
    checks
        .check(
            "every member advertises its overlay address, gossip encrypted",
            || async {
                let ha = s.containers("ha").await?;
                let (ha, _) = ha.first().context("no running ha task")?;
                let members = engine::exec(ha, &["serf", "members"]).await?;
                let prefix = SWARM_SUBNET.trim_end_matches("0/24");
                let alive: Vec<&str> = members.lines().filter(|l| l.contains(" alive ")).collect();
                ensure!(
                    alive.len() == 3 && alive.iter().all(|l| l.contains(&format!(" {prefix}"))),
                    "expected 3 alive members on {SWARM_SUBNET}:\n{members}"
                );
                ensure!(
                    engine::logs(ha).await?.contains("Encrypted: true"),
                    "ha's agent does not say `Encrypted: true`"
                );
                Ok(format!("3 alive on {SWARM_SUBNET}, encrypted"))
            },
        )
        .await;
    for n in [5usize, 2] {
        checks.step(&format!("docker service scale {STACK}_webapp={n}"));
        docker_cli(
            &[
                "service",
                "scale",
                "--detach",
                &format!("{STACK}_webapp={n}"),
            ],
            &[],
        )
        .await?;
        checks
            .check(&format!("HAProxy follows the scale to {n}"), || {
                swarm_follows(&s, n)
            })
            .await;
    }
    // ha replaced by a new task (an image update does this): a new
    // container, a new address, no snapshot. Its agent finds the web apps
    // through tasks.webapp and HAProxy lists them all again.
    checks.step(&format!(
        "docker service update --force {STACK}_ha (ha replaced by a new task)"
    ));
    let old_ha = s.containers("ha").await?;
    docker_cli(
        &[
            "service",
            "update",
            "--force",
            "--detach",
            &format!("{STACK}_ha"),
        ],
        &[],
    )
    .await?;
    checks
        .check("a new ha task lists every web app task UP", || async {
            poll(
                "a new ha task is running",
                Duration::from_secs(120),
                || async {
                    let now = s.containers("ha").await?;
                    Ok((now.len() == 1 && now != old_ha).then_some(()))
                },
            )
            .await?;
            swarm_follows(&s, 2).await
        })
        .await;
    s.leave().await;
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::{finish_in_drop, without_ports};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// A clean-up started from a `Drop` has ended when the drop returns,
    /// whatever runs it: a multi-threaded runtime, a current-thread one, or
    /// none.
    fn clean_up_ends_before_drop_returns() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        finish_in_drop(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
        });
        assert!(done.load(Ordering::SeqCst));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn clean_up_from_drop_on_a_multi_threaded_runtime() {
        clean_up_ends_before_drop_returns();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn clean_up_from_drop_on_a_current_thread_runtime() {
        clean_up_ends_before_drop_returns();
    }

    #[test]
    fn clean_up_from_drop_without_a_runtime() {
        clean_up_ends_before_drop_returns();
    }

    #[test]
    fn ports_lists_are_left_out_and_nothing_else() {
        let file = "services:\n  ha:\n    image: x\n    ports:\n      - \"127.0.0.1:8080:80\"\n\n      - \"1936:1936\"\n    networks: [heig]\n  webapp:\n    image: y\nnetworks:\n  heig: {}\n";
        let out = without_ports(file);
        assert_eq!(
            out,
            "services:\n  ha:\n    image: x\n    networks: [heig]\n  webapp:\n    image: y\nnetworks:\n  heig: {}\n"
        );
        let real = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docker/compose.yaml"
        ))
        .unwrap();
        let stripped = without_ports(&real);
        assert!(real.contains("ports:") && !stripped.contains("ports:"));
        assert!(stripped.contains("GOSSIP_JOIN") && stripped.contains("replicas: 2"));
    }
}
