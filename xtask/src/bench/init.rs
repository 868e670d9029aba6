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

use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

use super::{median, row, Row};
use crate::{docker, images, prereq};

const IMAGE: &str = "ait/bench-init";
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

    /// `docker run` arguments after the options: entrypoint and command.
    fn command(self) -> Vec<&'static str> {
        match self {
            Sup::Ours => vec!["--entrypoint", "/init", IMAGE],
            Sup::S6 => vec!["--entrypoint", "/usr/bin/s6-svscan", IMAGE, "/etc/s6"],
            // -g: signals go to the child's whole process group, so the
            // two background services get SIGTERM too.
            Sup::Tini => vec![
                "--entrypoint",
                "/usr/bin/tini",
                IMAGE,
                "-g",
                "--",
                "/bin/sh",
                "-c",
                "/usr/local/bin/bench-service & /usr/local/bin/bench-service & wait",
            ],
        }
    }
}

pub(super) fn rows() -> Result<Vec<Row>> {
    build_image()?;
    let mut rss = Vec::new();
    let mut handle = Vec::new();
    let mut ignore = Vec::new();
    for sup in [Sup::Ours, Sup::S6, Sup::Tini] {
        rss.push(supervisor_rss(sup)?);
        for (term, times) in [("handle", &mut handle), ("ignore", &mut ignore)] {
            let v = (0..STOPS)
                .map(|_| stop_time(sup, term))
                .collect::<Result<Vec<_>>>()?;
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
fn build_image() -> Result<()> {
    // TEMP until merge
    let base = images::ensure_base_image()?;
    let ctx = images::stage_context(&images::build_binaries()?)?;
    eprintln!("bench init: docker build {IMAGE}");
    docker::run([
        "build".into(),
        "--quiet".into(),
        "--build-arg".into(),
        format!("BASE_IMAGE={base}"),
        "-t".into(),
        IMAGE.into(),
        "-f".into(),
        ctx.join("bench-init/Dockerfile").display().to_string(),
        ctx.display().to_string(),
    ])
    .with_context(|| format!("building {IMAGE}"))?;
    Ok(())
}

/// A running bench container, removed when dropped.
struct Container(String);

impl Container {
    fn start(sup: Sup, term: &str) -> Result<Container> {
        let name = format!("ait-bench-init-{}-{term}", sup.label());
        docker::remove_containers(&[&name]);
        let mut args = vec!["run", "-d", "--name", &name, "--network", "none", "-e"];
        let env = format!("BENCH_TERM={term}");
        args.push(&env);
        args.extend(sup.command());
        docker::run(&args).with_context(|| format!("starting {name}"))?;
        let c = Container(name);
        c.wait_services()?;
        Ok(c)
    }

    /// Both stand-in services run (two `sleep` processes in the container).
    fn wait_services(&self) -> Result<()> {
        let end = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < end {
            last = docker::run(["top", &self.0, "-o", "pid,comm"]).unwrap_or_default();
            if last.lines().filter(|l| l.ends_with(" sleep")).count() == 2 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{}: the two services did not start within 60 s; processes: {last}; logs: {}",
            self.0,
            docker::logs(&self.0).unwrap_or_default()
        )
    }

    /// The host pid of the container's PID 1.
    fn pid1(&self) -> Result<u32> {
        let pid = docker::run(["inspect", "-f", "{{.State.Pid}}", &self.0])?;
        pid.trim()
            .parse()
            .with_context(|| format!("{}: PID 1 is {pid:?}", self.0))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        docker::remove_containers(&[&self.0]);
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
fn supervisor_rss(sup: Sup) -> Result<f64> {
    let c = Container::start(sup, "handle")?;
    let pid1 = c.pid1()?;
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

/// Seconds taken by `docker stop` (Docker's default 10 s timeout).
fn stop_time(sup: Sup, term: &str) -> Result<f64> {
    let c = Container::start(sup, term)?;
    let t0 = Instant::now();
    docker::run(["stop", &c.0])?;
    let secs = t0.elapsed().as_secs_f64();
    let code = docker::run(["inspect", "-f", "{{.State.ExitCode}}", &c.0])?;
    eprintln!(
        "   {} ({term} SIGTERM): docker stop took {secs:.2} s, exit code {}",
        sup.label(),
        code.trim()
    );
    Ok(secs)
}
