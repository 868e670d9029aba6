//! Our membership agent against Debian's `serf` (0.9.x), on loopback, in the
//! same run: clusters of one kind at a time, the same LAN profile, the same
//! client (`serf members` / `serf event` from Debian's package, which speaks
//! to both agents over the RPC).
//!
//! - join seen: a third agent starts with `-join`; until the first agent
//!   lists it `alive` (process start included, for both);
//! - graceful leave seen: SIGINT to it; until the first lists it `left`;
//! - kill -9 → failed: until the first lists it `failed` (SWIM probe,
//!   indirect probes, suspicion timeout: the profile's numbers);
//! - user event to 30 agents: `serf event -coalesce=false`; until the last
//!   of the 30 event handlers has run;
//! - RSS idle with 2 and with 30 members (mean per agent; with 30, also its
//!   anonymous part: what each more agent costs, the binary's pages being
//!   shared), and CPU time used by the 30 agents together over 60 idle
//!   seconds.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{free_port, median, row, rss_anon_kib, rss_kib, Guard, Row};
use crate::{images, prereq, project};

pub(super) const SERF: &str = "/usr/bin/serf";
const CYCLES: usize = 5;
const KILLS: usize = 5;
const BIG: usize = 30;
const EVENTS: usize = 5;
const IDLE: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Measured {
    join: Vec<f64>,
    leave: Vec<f64>,
    failed: Vec<f64>,
    event: Vec<f64>,
    rss2: f64,
    rss30: f64,
    anon30: f64,
    cpu60: f64,
}

pub(super) fn rows() -> Result<Vec<Row>> {
    prereq::ensure_tool("serf", "serf")?;
    let ours = tokio::runtime::Runtime::new()?
        .block_on(images::build_binaries())?
        .join("gossip");
    let dir = project::target_dir().join("bench/gossip");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let o = measure("ours", &ours, &dir.join("ours"))?;
    let s = measure("serf", Path::new(SERF), &dir.join("serf"))?;
    let peer = "serf 0.9 (Debian)";
    let m = median;
    let faster = |name: &str, a: &[f64], b: &[f64], n: usize| {
        row(
            &format!("{name}, median of {n}"),
            "s",
            m(a),
            m(b),
            peer,
            "no slower than serf (+50 ms)",
            m(a) <= m(b) + 0.05,
        )
    };
    Ok(vec![
        faster("join seen by a peer", &o.join, &s.join, CYCLES),
        faster(
            "graceful leave (SIGINT) seen as left",
            &o.leave,
            &s.leave,
            CYCLES,
        ),
        // Detection starts when the next probe reaches the dead member: a
        // random point of the probe cycle (1 s in the LAN profile) for
        // both, so a median may differ by up to that much with equal logic.
        row(
            &format!("kill -9 seen as failed, median of {KILLS}"),
            "s",
            m(&o.failed),
            m(&s.failed),
            peer,
            "no slower than serf (+1 s, one probe interval)",
            m(&o.failed) <= m(&s.failed) + 1.0,
        ),
        // An event leaves with the next gossip round (every 200 ms in the
        // LAN profile), a random wait for both: allow one round.
        row(
            &format!("user event run by the handlers of all 30 agents, median of {EVENTS}"),
            "s",
            m(&o.event),
            m(&s.event),
            peer,
            "no slower than serf (+0.2 s, one gossip interval)",
            m(&o.event) <= m(&s.event) + 0.2,
        ),
        row(
            "agent RSS idle, 2 members (mean per agent)",
            "KiB",
            o.rss2,
            s.rss2,
            peer,
            "a quarter of serf's or less",
            o.rss2 <= s.rss2 / 4.0,
        ),
        row(
            "agent RSS idle, 30 members (mean per agent)",
            "KiB",
            o.rss30,
            s.rss30,
            peer,
            "a quarter of serf's or less",
            o.rss30 <= s.rss30 / 4.0,
        ),
        row(
            "agent anonymous RSS idle, 30 members (mean; without shared file pages)",
            "KiB",
            o.anon30,
            s.anon30,
            peer,
            "a quarter of serf's or less",
            o.anon30 <= s.anon30 / 4.0,
        ),
        row(
            "CPU of 30 idle agents over 60 s (all together)",
            "s",
            o.cpu60,
            s.cpu60,
            peer,
            "no more than serf's",
            o.cpu60 <= s.cpu60,
        ),
    ])
}

/// One agent process on loopback.
pub(super) struct Agent {
    pub(super) name: String,
    pub(super) bind: u16,
    pub(super) rpc: u16,
    pub(super) proc: Guard,
}

impl Agent {
    fn start(bin: &Path, dir: &Path, name: &str, join: Option<u16>) -> Result<Agent> {
        let (bind, rpc) = (free_port()?, free_port()?);
        let handler = dir.join("handler.sh");
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let mut cmd = Command::new(bin);
        cmd.arg("agent")
            .arg(format!("-node={name}"))
            .arg(format!("-bind=127.0.0.1:{bind}"))
            .arg(format!("-rpc-addr=127.0.0.1:{rpc}"))
            .arg(format!("-event-handler=user:bench={}", handler.display()))
            .arg("-log-level=warn")
            .env("BENCH_OUT", dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(port) = join {
            cmd.arg(format!("-join=127.0.0.1:{port}"));
        }
        let proc = Guard::spawn(&mut cmd).with_context(|| format!("starting {}", bin.display()))?;
        Ok(Agent {
            name: name.into(),
            bind,
            rpc,
            proc,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    fn signal(&self, sig: &str) -> Result<()> {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()?
            .success();
        if !ok {
            bail!("kill -{sig} {} failed", self.pid());
        }
        Ok(())
    }
}

/// `serf members -format=json` against an agent: (name, status) pairs.
fn members(rpc: u16) -> Result<Vec<(String, String)>> {
    let out = Command::new(SERF)
        .args([
            "members",
            &format!("-rpc-addr=127.0.0.1:{rpc}"),
            "-format=json",
        ])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "serf members: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["members"]
        .as_array()
        .context("no members array")?
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_string(),
                m["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

/// Poll (every 10 ms, up to `limit`) until `probe` holds; the instant it did.
pub(super) fn until(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> bool,
) -> Result<Instant> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if probe() {
            return Ok(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("{what}: not after {limit:?}")
}

fn sees(observer: &Agent, name: &str, status: &str) -> bool {
    members(observer.rpc)
        .map(|ms| ms.iter().any(|(n, s)| n == name && s == status))
        .unwrap_or(false)
}

pub(super) fn all_alive(observer: &Agent, n: usize) -> bool {
    members(observer.rpc)
        .map(|ms| ms.iter().filter(|(_, s)| s == "alive").count() == n)
        .unwrap_or(false)
}

/// Wait until the agent's RPC answers; an agent that exited meanwhile (a
/// failed `-join`, a port taken between choosing and binding it) is an
/// error with the end of its log.
fn ready(a: &mut Agent, dir: &Path) -> Result<()> {
    let mut exited = None;
    let r = until(
        &format!("{} answers on RPC", a.name),
        Duration::from_secs(20),
        || {
            if let Ok(Some(st)) = a.proc.0.try_wait() {
                exited = Some(st);
                return true;
            }
            members(a.rpc).is_ok()
        },
    );
    if let Some(st) = exited {
        let log = std::fs::read_to_string(dir.join(format!("{}.log", a.name))).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        bail!(
            "{} exited ({st}) before answering on RPC: {}",
            a.name,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    r.map(|_| ())
}

/// Starts an agent and waits until it answers; up to three tries, each
/// with new ports (30 agents started on 2 cores: a join may time out).
pub(super) fn start_ready(bin: &Path, dir: &Path, name: &str, join: Option<u16>) -> Result<Agent> {
    let mut last = None;
    for attempt in 1..=3 {
        let mut a = Agent::start(bin, dir, name, join)?;
        match ready(&mut a, dir) {
            Ok(()) => return Ok(a),
            Err(e) => {
                eprintln!("   {name}: attempt {attempt} failed: {e:#}");
                last = Some(e);
            }
        }
    }
    Err(last.expect("three attempts"))
}

pub(super) fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is the
    // 3rd field overall, utime and stime the 14th and 15th.
    let rest = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn measure(label: &str, bin: &Path, dir: &PathBuf) -> Result<Measured> {
    eprintln!("bench gossip: {label} ({})", bin.display());
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("handler.sh"),
        "#!/bin/sh\n# Records when this agent ran the user event.\ndate +%s.%N >> \"$BENCH_OUT/$SERF_SELF_NAME.events\"\n",
    )?;
    std::fs::set_permissions(
        dir.join("handler.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let mut m = Measured::default();

    // Two members, then a third one joining, leaving, or dying.
    let a = start_ready(bin, dir, "a", None)?;
    let b = start_ready(bin, dir, "b", Some(a.bind))?;
    until("a and b alive", Duration::from_secs(30), || {
        all_alive(&a, 2)
    })?;
    // Let both settle (their first push-pulls, gossip) before measuring.
    std::thread::sleep(Duration::from_secs(5));
    m.rss2 = (rss_kib(a.pid())? + rss_kib(b.pid())?) / 2.0;
    for i in 0..CYCLES {
        let name = format!("c{i}");
        let t0 = Instant::now();
        let mut c = Agent::start(bin, dir, &name, Some(a.bind))?;
        let seen = until(
            &format!("{name} alive at a"),
            Duration::from_secs(30),
            || sees(&a, &name, "alive"),
        )?;
        m.join.push(seen.duration_since(t0).as_secs_f64());
        ready(&mut c, dir)?;
        let t0 = Instant::now();
        c.signal("INT")?;
        let seen = until(
            &format!("{name} left at a"),
            Duration::from_secs(30),
            || sees(&a, &name, "left"),
        )?;
        m.leave.push(seen.duration_since(t0).as_secs_f64());
        eprintln!(
            "   [{label}] {name}: join seen after {:.3} s, leave after {:.3} s",
            m.join[i], m.leave[i]
        );
    }
    for i in 0..KILLS {
        let name = format!("k{i}");
        let mut k = Agent::start(bin, dir, &name, Some(a.bind))?;
        until(
            &format!("{name} alive at a"),
            Duration::from_secs(30),
            || sees(&a, &name, "alive"),
        )?;
        // Let the cluster probe it a few rounds first, as in a real failure.
        std::thread::sleep(Duration::from_secs(2));
        let t0 = Instant::now();
        k.proc.0.kill()?;
        let _ = k.proc.0.wait();
        let seen = until(
            &format!("{name} failed at a"),
            Duration::from_secs(60),
            || sees(&a, &name, "failed"),
        )?;
        let secs = seen.duration_since(t0).as_secs_f64();
        eprintln!("   [{label}] {name}: kill -9 seen as failed after {secs:.2} s");
        m.failed.push(secs);
    }
    drop((a, b));

    // Thirty members: a user event to all, memory and CPU at rest.
    let first = start_ready(bin, dir, "m0", None)?;
    let mut agents = vec![first];
    for i in 1..BIG {
        let join = agents[0].bind;
        agents.push(start_ready(bin, dir, &format!("m{i}"), Some(join))?);
    }
    until("30 agents alive at m0", Duration::from_secs(60), || {
        all_alive(&agents[0], BIG)
    })?;
    until("30 agents alive at m29", Duration::from_secs(60), || {
        all_alive(&agents[BIG - 1], BIG)
    })?;
    std::thread::sleep(Duration::from_secs(5));
    for e in 0..EVENTS {
        let sent = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
        let out = Command::new(SERF)
            .args([
                "event",
                &format!("-rpc-addr=127.0.0.1:{}", agents[0].rpc),
                "-coalesce=false",
                "bench",
                &format!("payload-{e}"),
            ])
            .output()?;
        if !out.status.success() {
            bail!(
                "serf event: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut last = 0.0f64;
        until(
            &format!("user event {e} run by all 30 handlers"),
            Duration::from_secs(30),
            || {
                let mut done = 0;
                for a in &agents {
                    let times: Vec<f64> =
                        std::fs::read_to_string(dir.join(format!("{}.events", a.name)))
                            .unwrap_or_default()
                            .lines()
                            .filter_map(|l| l.trim().parse().ok())
                            .collect();
                    if times.len() > e {
                        done += 1;
                        last = last.max(times[e]);
                    }
                }
                done == BIG
            },
        )?;
        let secs = last - sent;
        eprintln!("   [{label}] user event {e}: all 30 handlers ran after {secs:.3} s");
        m.event.push(secs);
    }
    let (mut rss, mut anon) = (0.0, 0.0);
    for a in &agents {
        rss += rss_kib(a.pid())?;
        anon += rss_anon_kib(a.pid())?;
    }
    m.rss30 = rss / BIG as f64;
    m.anon30 = anon / BIG as f64;
    let cpu0: f64 = agents
        .iter()
        .map(|a| cpu_secs(a.pid()))
        .sum::<Result<f64>>()?;
    std::thread::sleep(IDLE);
    let cpu1: f64 = agents
        .iter()
        .map(|a| cpu_secs(a.pid()))
        .sum::<Result<f64>>()?;
    m.cpu60 = cpu1 - cpu0;
    eprintln!(
        "   [{label}] RSS per agent: {:.0} KiB (2 members), {:.0} KiB (30, of which {:.0} anonymous); CPU of 30 over 60 s idle: {:.2} s",
        m.rss2, m.rss30, m.anon30, m.cpu60
    );
    Ok(m)
}
