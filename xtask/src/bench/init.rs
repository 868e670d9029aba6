//! Our init against Debian's s6 (s6-svscan + one s6-supervise per service)
//! and tini, in one image (`docker/bench-init`), with the same two stand-in
//! services (`sleep` behind a shell that ignores SIGTERM when asked).
//!
//! - Memory: the supervisor's processes once both services run: our `/init`
//!   (PID 1, one process for everything), s6-svscan plus its s6-supervise
//!   children, tini (which supervises nothing: it runs one shell that starts
//!   both services in the background and waits).
//! - `docker stop` (Docker's default 10 s timeout) with services that end on
//!   SIGTERM, and with services that ignore it: ours should take the grace
//!   period (`S6_KILL_GRACETIME`, 3 s) then kill, never Docker's 10 s.

use anyhow::{anyhow, bail, Context, Result};
use std::time::{Duration, Instant};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::{median, row, Row};
use crate::{engine, images, prereq};

const IMAGE: &str = "ait/bench-init";
const IMAGE_TAG: &str = "latest";
/// `docker stop`s per supervisor and service kind; the median is reported.
const STOPS: usize = 3;
/// Our init's default grace period before SIGKILL (s6-overlay's
/// S6_KILL_GRACETIME).
const GRACE_S: f64 = 3.0;

#[derive(Clone, Copy, PartialEq)]
enum Sup {
    Ours,
    S6,
    Tini,
}

impl Sup {
    fn label(self) -> &'static str {
        match self {
            Sup::Ours => "ours",
            Sup::S6 => "s6",
            Sup::Tini => "tini",
        }
    }

    /// The container's entrypoint and command.
    fn command(self) -> (&'static str, Vec<&'static str>) {
        match self {
            Sup::Ours => ("/init", vec![]),
            Sup::S6 => ("/usr/bin/s6-svscan", vec!["/etc/s6"]),
            // -g: signals go to the child's whole process group, so the
            // two background services get SIGTERM too.
            Sup::Tini => (
                "/usr/bin/tini",
                vec![
                    "-g",
                    "--",
                    "/bin/sh",
                    "-c",
                    "/usr/local/bin/bench-service & /usr/local/bin/bench-service & wait",
                ],
            ),
        }
    }
}

/// The rows, measured on a runtime of their own (multi-threaded: a
/// container handle removes its container when dropped, which blocks in
/// place on such a runtime).
pub(super) fn rows() -> Result<Vec<Row>> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(measure())
}

async fn measure() -> Result<Vec<Row>> {
    build_image().await?;
    let mut rss = Vec::new();
    let mut handle = Vec::new();
    let mut ignore = Vec::new();
    for sup in [Sup::Ours, Sup::S6, Sup::Tini] {
        rss.push(supervisor_rss(sup).await?);
        for (term, times) in [("handle", &mut handle), ("ignore", &mut ignore)] {
            let mut v = Vec::with_capacity(STOPS);
            for _ in 0..STOPS {
                v.push(stop_time(sup, term).await?);
            }
            times.push(median(&v));
        }
    }
    let [ours_rss, s6_rss, tini_rss] = [rss[0], rss[1], rss[2]];
    let s6 = "s6-svscan + 2 s6-supervise";
    let mut out = vec![
        row(
            "supervisor RSS with 2 services",
            "KiB",
            ours_rss,
            s6_rss,
            s6,
            "less than s6's processes together",
            ours_rss < s6_rss,
        ),
        row(
            "supervisor RSS with 2 services",
            "KiB",
            ours_rss,
            tini_rss,
            "tini (no supervision)",
            "within 2x of tini, which restarts nothing",
            ours_rss <= 2.0 * tini_rss,
        ),
    ];
    for (i, peer) in [(1, s6), (2, "tini -g")] {
        out.push(row(
            "docker stop, services that end on SIGTERM, median of 3",
            "s",
            handle[0],
            handle[i],
            peer,
            "< 1 s",
            handle[0] < 1.0,
        ));
    }
    for (i, peer) in [(1, s6), (2, "tini -g")] {
        out.push(row(
            "docker stop, services that ignore SIGTERM, median of 3",
            "s",
            ignore[0],
            ignore[i],
            peer,
            "the 3 s grace, then kill: < 4 s, never Docker's 10 s",
            ignore[0] >= GRACE_S && ignore[0] < GRACE_S + 1.0,
        ));
    }
    Ok(out)
}

/// The bench image: our base image with Debian's s6 and tini, and our init
/// from the same staged build context as the lab's images.
async fn build_image() -> Result<()> {
    prereq::ensure_docker().await?;
    let base = images::ensure_base_image().await?;
    let context = images::staged_context_tar().await?;
    eprintln!("bench init: docker build {IMAGE}:{IMAGE_TAG}");
    images::build_image(
        &context,
        &images::BuildSpec {
            dockerfile: "bench-init/Dockerfile",
            target: None,
            base: &base,
            tags: &[format!("{IMAGE}:{IMAGE_TAG}")],
        },
    )
    .await
}

/// A running bench container, removed when dropped (testcontainers'
/// handle does that).
struct Bench {
    name: String,
    c: ContainerAsync<GenericImage>,
}

impl Bench {
    /// `docker run -d --name NAME --network none -e BENCH_TERM=TERM
    /// --entrypoint E IMAGE CMD...`, then both services running.
    async fn start(sup: Sup, term: &str) -> Result<Bench> {
        let name = format!("ait-bench-init-{}-{term}", sup.label());
        // What a crashed run may have left under the same name.
        engine::remove(&name).await?;
        let (entrypoint, cmd) = sup.command();
        let c = GenericImage::new(IMAGE, IMAGE_TAG)
            .with_entrypoint(entrypoint)
            .with_cmd(cmd)
            .with_container_name(&name)
            .with_env_var("BENCH_TERM", term)
            .with_host_config_modifier(|hc| {
                hc.network_mode = Some("none".into());
                hc.publish_all_ports = Some(false);
            })
            .start()
            .await
            .map_err(|e| anyhow!("starting {name} from {IMAGE}:{IMAGE_TAG}: {e}"))?;
        let b = Bench { name, c };
        b.wait_services().await?;
        Ok(b)
    }

    /// Both stand-in services run (two `sleep` processes in the container).
    async fn wait_services(&self) -> Result<()> {
        let end = Instant::now() + Duration::from_secs(60);
        let mut last = Vec::new();
        while Instant::now() < end {
            last = engine::top(self.c.id()).await.unwrap_or_default();
            if last.iter().filter(|(_, comm)| comm == "sleep").count() == 2 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut logs = self.c.stdout_to_vec().await.unwrap_or_default();
        logs.extend(self.c.stderr_to_vec().await.unwrap_or_default());
        bail!(
            "{}: the two services did not start within 60 s; processes: {last:?}; logs: {}",
            self.name,
            String::from_utf8_lossy(&logs).trim()
        )
    }

    /// The host pid of the container's PID 1.
    async fn pid1(&self) -> Result<u32> {
        let (pid, _) = engine::state(self.c.id()).await?;
        u32::try_from(pid)
            .ok()
            .filter(|&p| p > 0)
            .with_context(|| format!("{}: PID 1 is {pid}", self.name))
    }
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The RSS of the supervisor's own processes: PID 1, plus (for s6) the
/// s6-supervise processes it started.
async fn supervisor_rss(sup: Sup) -> Result<f64> {
    let b = Bench::start(sup, "handle").await?;
    let pid1 = b.pid1().await?;
    let mut pids = vec![pid1];
    pids.extend(
        children(pid1)
            .into_iter()
            .filter(|&p| comm(p) == "s6-supervise"),
    );
    if sup == Sup::S6 && pids.len() != 3 {
        bail!("s6: expected s6-svscan and 2 s6-supervise, found pids {pids:?}");
    }
    let mut total = 0.0;
    for p in &pids {
        total += super::rss_kib(*p).with_context(|| format!("RSS of pid {p}"))?;
    }
    eprintln!(
        "   {}: {} process(es), RSS {total:.0} KiB",
        sup.label(),
        pids.len()
    );
    Ok(total)
}

/// Seconds taken by `docker stop` (the engine's default 10 s timeout).
async fn stop_time(sup: Sup, term: &str) -> Result<f64> {
    let b = Bench::start(sup, term).await?;
    let t0 = Instant::now();
    b.c.stop_with_timeout(None)
        .await
        .map_err(|e| anyhow!("stopping {}: {e}", b.name))?;
    let secs = t0.elapsed().as_secs_f64();
    let code =
        b.c.exit_code()
            .await
            .map_err(|e| anyhow!("reading the exit code of {}: {e}", b.name))?;
    eprintln!(
        "   {} ({term} SIGTERM): docker stop took {secs:.2} s, exit code {}",
        sup.label(),
        code.map_or_else(|| "none".to_string(), |c| c.to_string())
    );
    Ok(secs)
}
