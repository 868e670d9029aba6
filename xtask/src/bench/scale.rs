//! `cargo xtask bench scale`: 200 agent processes on loopback, ours then
//! Debian's serf 0.9.4, one group at a time, the same LAN profile and flags:
//! join through three seeds, a user event, a graceful leave and a kill -9
//! seen by all, RSS and idle CPU, and false failures over the whole run.
//!
//! Every agent starts at once with `-retry-join` to the three seeds (a seed
//! to the other two) and serf's default retry interval. The bench watches
//! each agent over its RPC (one connection per agent, from one tokio
//! runtime), never by spawning `serf members`:
//! - join: `stats` polled every 200 ms until the agent counts 200 members,
//!   none failed or left (member events on a `stream` are coalesced for up
//!   to 3 s by both agents, too coarse to time a join with);
//! - user event (`-coalesce=false`, sent over agent 0's RPC): the handler of
//!   each agent appends the time it ran to a file of its own;
//! - leave (SIGINT) and kill -9: `members-filtered` (that member's name and
//!   status) polled every 100 ms at each of the 199 others;
//! - false failures: a `member-failed` stream per agent, opened as soon as
//!   its RPC answers, plus every agent's member list at the end: any member
//!   reported failed but the one killed.
//!
//! Capacity (checked before choosing 200, on this 2-core, 24 GiB machine):
//! pid_max 32768, threads-max 192726, `ulimit -u` 96363, 20000 open files
//! per process, local ports 32768-60999 (the agents' ports are taken below
//! that range, so outgoing connections never collide with them). 200 serf
//! processes use about 3.3 GiB and 2,000 threads, 200 of ours far less; 400
//! at once (both groups idle together, tried by hand) fit as well. Each
//! group logs its thread count and total RSS.
//!
//! The per-agent times (distributions of "seen by all") go to
//! `target/bench/scale.json`, and to report/assets/gossip-seen.{json,svg}
//! (the report's chart).

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::gossip::model::{MemberEventKind, MemberStatus};
use ::gossip::rpc::{Client, StreamRecord};

use super::gossip::{cpu_secs, SERF};
use super::{median, row, rss_anon_kib, rss_kib, Guard, Row};
use crate::{images, prereq, project};

const N: usize = 200;
const SEEDS: usize = 3;
const EVENTS: usize = 3;
const IDLE: Duration = Duration::from_secs(60);
/// Below the kernel's ephemeral range (32768 up), so no outgoing
/// connection of another process holds one when we pick it.
const PORT_BASE: u16 = 21000;
const JOIN_LIMIT: Duration = Duration::from_secs(300);
/// How long the handlers of all agents get to run one user event.
const EVENT_LIMIT: Duration = Duration::from_secs(60);
/// How long all others get to list the leaver left, and the killed failed.
const LEAVE_LIMIT: Duration = Duration::from_secs(60);
const KILL_LIMIT: Duration = Duration::from_secs(120);
const JOIN_POLL: Duration = Duration::from_millis(200);
/// After this long, the join is polled every [`JOIN_POLL_SLOW`].
const JOIN_FINE: Duration = Duration::from_secs(15);
const JOIN_POLL_SLOW: Duration = Duration::from_secs(1);
const SEEN_POLL: Duration = Duration::from_millis(100);

/// What one group (all ours or all serf) measured. Each time is one per
/// agent; `None` (null in the JSON) where that agent had not got there
/// within the step's limit: a cluster that does not converge (serf's 200
/// on 2 cores) is measured to the end, bounded, instead of stopping the
/// bench.
#[derive(Debug, Default, Serialize)]
struct Measured {
    /// Seconds from the start of all 200 until each agent listed 200
    /// members alive, one per agent.
    join_all_alive_s: Vec<Option<f64>>,
    /// Seconds from sending each user event until each agent's handler ran
    /// it: one per agent and event.
    user_event_handler_s: Vec<Option<f64>>,
    /// Seconds from SIGINT to the leaver until each other agent listed it
    /// `left`.
    leave_seen_left_s: Vec<Option<f64>>,
    /// Seconds from kill -9 until each other agent listed it `failed`.
    kill_seen_failed_s: Vec<Option<f64>>,
    /// Mean VmRSS per agent, idle with 200 members.
    rss_kib_mean: f64,
    /// Mean anonymous RSS per agent (without shared file pages).
    rss_anon_kib_mean: f64,
    /// utime + stime of the 200 together over 60 idle seconds.
    idle_cpu_s: f64,
    /// Members some agent reported failed that were never killed, with the
    /// seconds from the start of all agents until the first report (the
    /// member lists read at the end count as reported then).
    false_failures: BTreeMap<String, f64>,
}

#[derive(Serialize)]
struct Samples<'a> {
    agents: usize,
    seeds: usize,
    user_events: usize,
    /// Each step's limit in seconds: a null time is "not within it".
    limits_s: BTreeMap<&'static str, f64>,
    ours: &'a Measured,
    serf: &'a Measured,
}

/// The steps' limits, by the name of their samples.
fn limits() -> BTreeMap<&'static str, f64> {
    BTreeMap::from([
        ("join_all_alive_s", JOIN_LIMIT.as_secs_f64()),
        ("user_event_handler_s", EVENT_LIMIT.as_secs_f64()),
        ("leave_seen_left_s", LEAVE_LIMIT.as_secs_f64()),
        ("kill_seen_failed_s", KILL_LIMIT.as_secs_f64()),
    ])
}

/// The times for a row: an agent that had not got there counts as the
/// step's limit, a lower bound of its real time (so a row can only favour
/// the group that got there).
fn at_limit(v: &[Option<f64>], limit: Duration) -> Vec<f64> {
    v.iter().map(|t| t.unwrap_or(limit.as_secs_f64())).collect()
}

/// How many agents had not got there, and the step, for the log.
fn short(v: &[Option<f64>]) -> usize {
    v.iter().filter(|t| t.is_none()).count()
}

pub(super) fn rows() -> Result<Vec<Row>> {
    prereq::ensure_tool("serf", "serf")?;
    let rt = tokio::runtime::Runtime::new()?;
    let ours = rt.block_on(images::build_binaries())?.join("gossip");
    let dir = project::target_dir().join("bench/scale");
    let _ = std::fs::remove_dir_all(&dir);
    let o = rt.block_on(measure("ours", &ours, &dir.join("ours")))?;
    let s = rt.block_on(measure("serf", Path::new(SERF), &dir.join("serf")))?;
    let samples = serde_json::to_value(Samples {
        agents: N,
        seeds: SEEDS,
        user_events: EVENTS,
        limits_s: limits(),
        ours: &o,
        serf: &s,
    })?;
    std::fs::write(
        project::target_dir().join("bench/scale.json"),
        serde_json::to_string_pretty(&samples)?,
    )?;
    // The distributions, kept and drawn for the report.
    crate::charts::save_seen(&serde_json::from_value(samples)?)?;
    Ok(table(&o, &s))
}

fn table(o: &Measured, s: &Measured) -> Vec<Row> {
    let peer = "serf 0.9 (Debian)";
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    let p99 = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get((v.len() * 99).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let join = (
        at_limit(&o.join_all_alive_s, JOIN_LIMIT),
        at_limit(&s.join_all_alive_s, JOIN_LIMIT),
    );
    let event = (
        at_limit(&o.user_event_handler_s, EVENT_LIMIT),
        at_limit(&s.user_event_handler_s, EVENT_LIMIT),
    );
    let leave = (
        at_limit(&o.leave_seen_left_s, LEAVE_LIMIT),
        at_limit(&s.leave_seen_left_s, LEAVE_LIMIT),
    );
    let kill = (
        at_limit(&o.kill_seen_failed_s, KILL_LIMIT),
        at_limit(&s.kill_seen_failed_s, KILL_LIMIT),
    );
    // (metric, ours, serf, allowance): no slower than serf plus the
    // allowance. Joins and leaves: 50 ms, as in the gossip group, except a
    // maximum over 199 agents, which rides on the last gossip round (200 ms
    // in the LAN profile); a user event leaves with the next gossip round, a
    // random wait: one round; failure detection starts when the next probe
    // reaches the dead member, a random point of the 1 s probe cycle.
    let timed: [(String, f64, f64, f64); 9] = [
        (
            format!("{N} agents started at once: all {N} alive, median over agents"),
            median(&join.0),
            median(&join.1),
            0.05,
        ),
        (
            format!("{N} agents started at once: all {N} alive, max over agents"),
            max(&join.0),
            max(&join.1),
            0.05,
        ),
        (
            format!("user event run by the handlers of {N} agents, median ({EVENTS} events)"),
            median(&event.0),
            median(&event.1),
            0.2,
        ),
        (
            format!("user event run by the handlers of {N} agents, p99 ({EVENTS} events)"),
            p99(&event.0),
            p99(&event.1),
            0.2,
        ),
        (
            format!("user event run by the handlers of {N} agents, max ({EVENTS} events)"),
            max(&event.0),
            max(&event.1),
            0.2,
        ),
        (
            format!("graceful leave seen as left by {} others, median", N - 1),
            median(&leave.0),
            median(&leave.1),
            0.05,
        ),
        (
            format!("graceful leave seen as left by {} others, max", N - 1),
            max(&leave.0),
            max(&leave.1),
            0.2,
        ),
        (
            format!("kill -9 seen as failed by {} others, median", N - 1),
            median(&kill.0),
            median(&kill.1),
            1.0,
        ),
        (
            format!("kill -9 seen as failed by {} others, max", N - 1),
            max(&kill.0),
            max(&kill.1),
            1.0,
        ),
    ];
    let mut rows: Vec<Row> = timed
        .into_iter()
        .map(|(metric, ours, serf, allow)| {
            let goal = if allow < 0.1 {
                format!("no slower than serf (+{:.0} ms)", allow * 1000.0)
            } else {
                format!("no slower than serf (+{allow} s)")
            };
            row(&metric, "s", ours, serf, peer, &goal, ours <= serf + allow)
        })
        .collect();
    rows.push(row(
        &format!("agent RSS idle, {N} members (mean per agent)"),
        "KiB",
        o.rss_kib_mean,
        s.rss_kib_mean,
        peer,
        "a quarter of serf's or less",
        o.rss_kib_mean <= s.rss_kib_mean / 4.0,
    ));
    rows.push(row(
        &format!("CPU of {N} idle agents over 60 s (all together)"),
        "s",
        o.idle_cpu_s,
        s.idle_cpu_s,
        peer,
        "half of serf's or less",
        o.idle_cpu_s <= s.idle_cpu_s / 2.0,
    ));
    rows.push(row(
        &format!("false failures, whole run of {N} agents (members reported failed, never killed)"),
        "",
        o.false_failures.len() as f64,
        s.false_failures.len() as f64,
        peer,
        "0",
        o.false_failures.is_empty(),
    ));
    rows
}

/// One agent process and the RPC connection the bench watches it through.
struct Agent {
    name: String,
    rpc: SocketAddr,
    proc: Guard,
}

/// `n` ports from [`PORT_BASE`] up, each free for both TCP and UDP on
/// loopback (the agents gossip over UDP and TCP on the same port).
fn ports(n: usize) -> Result<Vec<u16>> {
    let mut out = Vec::with_capacity(n);
    for p in PORT_BASE..32000 {
        if out.len() == n {
            break;
        }
        let a = ("127.0.0.1", p);
        if TcpListener::bind(a).is_ok() && UdpSocket::bind(a).is_ok() {
            out.push(p);
        }
    }
    if out.len() < n {
        bail!("only {} free ports from {PORT_BASE} to 32000", out.len());
    }
    Ok(out)
}

fn handler_script(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("handler.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\n# Records when this agent ran the user event.\ndate +%s.%N >> \"$BENCH_OUT/$SERF_SELF_NAME.events\"\n",
    )?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(path)
}

/// Starts all `N` agents, one right after the other; agent `i < SEEDS` is
/// a seed.
fn start_all(bin: &Path, dir: &Path) -> Result<Vec<Agent>> {
    let handler = handler_script(dir)?;
    let p = ports(2 * N)?;
    let (bind, rpc) = p.split_at(N);
    let mut agents = Vec::with_capacity(N);
    for i in 0..N {
        let name = format!("s{i:03}");
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        // At nice 19, both groups alike: on an idle machine that changes
        // nothing, and a group that saturates it (serf's 200 on 2 cores,
        // load average 500) still leaves the bench the CPU to watch it
        // with; at nice 0 the bench got about 1 % and its timers fired
        // minutes late.
        let mut cmd = Command::new("nice");
        cmd.args(["-n", "19"])
            .arg(bin)
            .arg("agent")
            .arg(format!("-node={name}"))
            .arg(format!("-bind=127.0.0.1:{}", bind[i]))
            .arg(format!("-rpc-addr=127.0.0.1:{}", rpc[i]))
            .arg(format!("-event-handler=user:bench={}", handler.display()))
            .arg("-log-level=warn")
            .env("BENCH_OUT", dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (s, port) in bind.iter().enumerate().take(SEEDS) {
            if s != i {
                cmd.arg(format!("-retry-join=127.0.0.1:{port}"));
            }
        }
        let proc = Guard::spawn(&mut cmd).with_context(|| format!("starting {}", bin.display()))?;
        agents.push(Agent {
            name,
            rpc: ([127, 0, 0, 1], rpc[i]).into(),
            proc,
        });
    }
    Ok(agents)
}

/// Connects to an agent's RPC, retrying while it starts; each attempt is
/// bounded too (a starved agent's full backlog can hold a connect).
async fn connect(a: &SocketAddr, limit: Duration) -> Result<Client> {
    let end = Instant::now() + limit;
    loop {
        let attempt = tokio::time::timeout_at(end.into(), Client::connect(*a, None)).await;
        match attempt {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) if Instant::now() >= end => bail!("RPC {a}: {e}"),
            Err(_) => bail!("RPC {a}: no connection within {limit:?}"),
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// How long one RPC call at the end of the run (a member list) may take.
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// Member name -> seconds from the start until first reported failed.
type Failures = Arc<Mutex<BTreeMap<String, f64>>>;

/// Per agent: connects, records every `member-failed` it streams, and polls
/// `stats` until it counts `N` members, none failed or left; the seconds
/// from `t0` until then, or None if that was not within [`JOIN_LIMIT`].
async fn watch_join(
    addr: SocketAddr,
    t0: Instant,
    failed: Failures,
) -> Result<(Client, Option<f64>)> {
    let client = connect(&addr, JOIN_LIMIT).await?;
    let deadline = (t0 + JOIN_LIMIT).into();
    let Ok(stream) = tokio::time::timeout_at(deadline, client.stream("member-failed")).await else {
        return Ok((client, None));
    };
    let mut stream = stream?;
    tokio::spawn(async move {
        while let Some(rec) = stream.recv().await {
            if let StreamRecord::Member {
                kind: MemberEventKind::Failed,
                members,
            } = rec
            {
                let at = t0.elapsed().as_secs_f64();
                let mut f = failed.lock().unwrap();
                for m in members {
                    f.entry(m.name).or_insert(at);
                }
            }
        }
    });
    loop {
        // A starved agent may take minutes to answer (serf's 200 on 2
        // cores): the call is bounded by the step's limit like the rest.
        let Ok(st) = tokio::time::timeout_at(deadline, client.stats()).await else {
            return Ok((client, None));
        };
        let st = st?;
        let count = |k: &str| -> usize {
            st.get("serf")
                .and_then(|s| s.get(k))
                .and_then(|v| v.parse().ok())
                .unwrap_or(usize::MAX)
        };
        if count("members") == N && count("failed") == 0 && count("left") == 0 {
            return Ok((client, Some(t0.elapsed().as_secs_f64())));
        }
        if t0.elapsed() >= JOIN_LIMIT {
            return Ok((client, None));
        }
        // Fine-grained while a quick join is plausible, then gentler: 200
        // agents each asked five times a second is a thousand RPC calls a
        // second, CPU a starved cluster (serf's, at 200 on 2 cores) needs.
        let poll = if t0.elapsed() < JOIN_FINE {
            JOIN_POLL
        } else {
            JOIN_POLL_SLOW
        };
        tokio::time::sleep(poll).await;
    }
}

/// At each client, seconds from `t0` until it lists `name` as `status`;
/// None where that was not within `limit`.
async fn seen_by_all(
    clients: &[Client],
    name: &str,
    status: MemberStatus,
    t0: Instant,
    limit: Duration,
) -> Result<Vec<Option<f64>>> {
    let tasks: Vec<_> = clients
        .iter()
        .cloned()
        .map(|c| {
            let name = name.to_string();
            tokio::spawn(async move {
                let seen = async {
                    loop {
                        let found = c.members_filtered(&[], status.as_str(), &name).await?;
                        if !found.is_empty() {
                            return anyhow::Ok(t0.elapsed().as_secs_f64());
                        }
                        tokio::time::sleep(SEEN_POLL).await;
                    }
                };
                match tokio::time::timeout_at((t0 + limit).into(), seen).await {
                    Ok(t) => t.map(Some),
                    Err(_) => Ok(None),
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    if !Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()?
        .success()
    {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

/// Handler run times recorded by the agent `name`, in order.
fn handler_times(dir: &Path, name: &str) -> Vec<f64> {
    std::fs::read_to_string(dir.join(format!("{name}.events")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Threads and total RSS (MiB) of the group, for the log.
fn footprint(agents: &[Agent]) -> (usize, f64) {
    let mut threads = 0;
    let mut rss = 0.0;
    for a in agents {
        let st = std::fs::read_to_string(format!("/proc/{}/status", a.proc.0.id()));
        threads += st
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
            })
            .unwrap_or(0);
        rss += rss_kib(a.proc.0.id()).unwrap_or(0.0);
    }
    (threads, rss / 1024.0)
}

async fn measure(label: &str, bin: &Path, dir: &Path) -> Result<Measured> {
    eprintln!("bench scale: {label} ({}), {N} agents", bin.display());
    std::fs::create_dir_all(dir)?;
    let mut m = Measured::default();
    let failed: Failures = Arc::default();

    // All at once, then each agent watched until it lists all N.
    let t0 = Instant::now();
    let t_start = t0;
    let mut agents = start_all(bin, dir)?;
    let spawned = t0.elapsed().as_secs_f64();
    let watches: Vec<_> = agents
        .iter()
        .map(|a| tokio::spawn(watch_join(a.rpc, t0, failed.clone())))
        .collect();
    // An agent still short of N at the limit is recorded as such, and the
    // run goes on: every later step is bounded too.
    let mut clients = Vec::with_capacity(N);
    for w in watches {
        let (c, secs) = w.await??;
        clients.push(c);
        m.join_all_alive_s.push(secs);
    }
    let late = short(&m.join_all_alive_s);
    if late > 0 {
        eprintln!(
            "   [{label}] {late} agents did not list {N} members alive within {JOIN_LIMIT:?} (the rows count them as the limit)"
        );
    }
    let (threads, total) = footprint(&agents);
    let join = at_limit(&m.join_all_alive_s, JOIN_LIMIT);
    eprintln!(
        "   [{label}] started in {spawned:.2} s; all list {N}: median {:.2} s, max {:.2} s ({threads} threads, {total:.0} MiB RSS in all)",
        median(&join),
        join.iter().copied().fold(0.0, f64::max),
    );
    tokio::time::sleep(Duration::from_secs(10)).await;

    // User events from agent 0, timed by each agent's handler.
    for e in 0..EVENTS {
        let sent = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
        let end = Instant::now() + EVENT_LIMIT;
        let payload = format!("payload-{e}");
        let send = clients[0].user_event("bench", payload.as_bytes(), false);
        match tokio::time::timeout_at(end.into(), send).await {
            Ok(r) => r?,
            Err(_) => eprintln!(
                "   [{label}] user event {e}: the sender did not take it within {EVENT_LIMIT:?}"
            ),
        }
        loop {
            let times: Vec<Vec<f64>> = agents.iter().map(|a| handler_times(dir, &a.name)).collect();
            let all = times.iter().all(|t| t.len() > e);
            if all || Instant::now() > end {
                m.user_event_handler_s
                    .extend(times.iter().map(|t| t.get(e).map(|at| at - sent)));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let last = &m.user_event_handler_s[e * N..];
        let ran = at_limit(last, EVENT_LIMIT);
        eprintln!(
            "   [{label}] user event {e}: handlers ran it after median {:.3} s, max {:.3} s; {} of {N} not within {EVENT_LIMIT:?}",
            median(&ran),
            ran.iter().copied().fold(0.0, f64::max),
            short(last),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // At rest: memory, then CPU over a minute.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (mut rss, mut anon) = (0.0, 0.0);
    for a in &agents {
        rss += rss_kib(a.proc.0.id())?;
        anon += rss_anon_kib(a.proc.0.id())?;
    }
    m.rss_kib_mean = rss / N as f64;
    m.rss_anon_kib_mean = anon / N as f64;
    let cpu =
        |agents: &[Agent]| -> Result<f64> { agents.iter().map(|a| cpu_secs(a.proc.0.id())).sum() };
    let cpu0 = cpu(&agents)?;
    tokio::time::sleep(IDLE).await;
    m.idle_cpu_s = cpu(&agents)? - cpu0;
    eprintln!(
        "   [{label}] idle: RSS {:.0} KiB per agent ({:.0} anonymous), CPU of {N} over 60 s {:.2} s",
        m.rss_kib_mean, m.rss_anon_kib_mean, m.idle_cpu_s
    );

    // The last agent leaves; the one before it is killed. Neither is a
    // seed nor the event's sender.
    let leaver = agents.pop().expect("N agents");
    clients.pop();
    let t0 = Instant::now();
    signal(leaver.proc.0.id(), "INT")?;
    m.leave_seen_left_s =
        seen_by_all(&clients, &leaver.name, MemberStatus::Left, t0, LEAVE_LIMIT).await?;
    let mut victim = agents.pop().expect("N agents");
    clients.pop();
    let t0 = Instant::now();
    victim.proc.0.kill()?;
    let _ = victim.proc.0.wait();
    m.kill_seen_failed_s =
        seen_by_all(&clients, &victim.name, MemberStatus::Failed, t0, KILL_LIMIT).await?;
    let leave = at_limit(&m.leave_seen_left_s, LEAVE_LIMIT);
    let kill = at_limit(&m.kill_seen_failed_s, KILL_LIMIT);
    eprintln!(
        "   [{label}] leave seen by all after median {:.2} s, max {:.2} s ({} not within {LEAVE_LIMIT:?}); kill -9 after median {:.2} s, max {:.2} s ({} not within {KILL_LIMIT:?})",
        median(&leave),
        leave.iter().copied().fold(0.0, f64::max),
        short(&m.leave_seen_left_s),
        median(&kill),
        kill.iter().copied().fold(0.0, f64::max),
        short(&m.kill_seen_failed_s),
    );

    // False failures: streamed, and in every member list at the end.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut reported = failed.lock().unwrap().clone();
    // All at once, each bounded: one by one, a starved group's 199 lists
    // took many minutes.
    let lists: Vec<_> = clients
        .iter()
        .cloned()
        .map(|c| tokio::spawn(async move { tokio::time::timeout(CALL_LIMIT, c.members()).await }))
        .collect();
    let mut unanswered = 0;
    for list in lists {
        let Ok(members) = list.await? else {
            unanswered += 1;
            continue;
        };
        let at = t_start.elapsed().as_secs_f64();
        for mem in members? {
            if mem.status == MemberStatus::Failed {
                reported.entry(mem.name).or_insert(at);
            }
        }
    }
    if unanswered > 0 {
        eprintln!(
            "   [{label}] {unanswered} agents did not list their members within {CALL_LIMIT:?}"
        );
    }
    reported.remove(&victim.name);
    m.false_failures = reported.into_iter().collect();
    if !m.false_failures.is_empty() {
        let first = m.false_failures.values().copied().fold(f64::MAX, f64::min);
        let last = m.false_failures.values().copied().fold(0.0, f64::max);
        eprintln!(
            "   [{label}] {} members falsely reported failed, first reports from {first:.1} s to {last:.1} s after the start",
            m.false_failures.len()
        );
    }
    drop(clients);
    // SIGKILL to all first, then reap: one kill and wait at a time took
    // minutes in a saturated group (each dying process at nice 19 among
    // the busy others).
    for a in &mut agents {
        let _ = a.proc.0.kill();
    }
    drop((agents, leaver, victim));
    Ok(m)
}
