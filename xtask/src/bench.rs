//! `cargo xtask bench`: our parts against their peers, in the same run, on
//! this machine, printed as one table (metric, ours, peer, ratio, goal) and
//! written as Markdown and JSON under `target/bench/`.
//!
//! Each group of rows lives in its own module under `bench/` and is listed
//! in [`BENCHES`].

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::project;

/// One line of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub metric: String,
    pub unit: String,
    /// NaN when not measured (a phase that did not end within its limit),
    /// which JSON writes as `null` and reads back as NaN, as for `ratio`.
    #[serde(deserialize_with = "nan_if_null")]
    pub ours: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub peer: f64,
    pub peer_name: String,
    /// ours / peer: NaN when both are 0 (a count of failures, say), which
    /// JSON writes as `null` and reads back as NaN.
    #[serde(deserialize_with = "nan_if_null")]
    pub ratio: f64,
    pub goal: String,
    pub passed: bool,
}

fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

mod gossip;
mod hostile;
mod init;
mod scale;
mod scaling;
mod sim;
mod webapp;

/// A group of rows, run by `cargo xtask bench` or `cargo xtask bench NAME`.
pub struct Bench {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn() -> Result<Vec<Row>>,
    /// Part of a plain `cargo xtask bench` (false: a group that takes more
    /// than a few minutes runs only when named).
    pub default: bool,
}

/// Every benchmark, in the order of the table.
pub const BENCHES: &[Bench] = &[
    Bench {
        name: "gossip",
        about: "gossip agent vs Debian's serf on loopback: join/leave/failure seen, user event to 30, RSS, idle CPU",
        run: gossip::rows,
        default: true,
    },
    Bench {
        name: "hostile",
        about: "gossip agent vs Debian's serf under attack on loopback: 500 idle TCP connections, 50 slow-drip ones, LZW-bomb datagrams at 2,000/s: RSS, CPU, false failures",
        run: hostile::rows,
        default: true,
    },
    Bench {
        name: "webapp",
        about: "web app (memory store, Redis store) vs Express + express-session: req/s, p99 added by Redis, lost session updates, RSS",
        run: webapp::rows,
        default: true,
    },
    Bench {
        name: "init",
        about: "init vs s6-svscan + s6-supervise and tini: RSS, docker stop times",
        run: init::rows,
        default: true,
    },
    Bench {
        name: "scaling",
        about: "HAProxy following web apps: our reconciler vs the lab's handler + -sf restart",
        run: scaling::rows,
        default: true,
    },
    Bench {
        name: "scale",
        about: "200 gossip agents vs 200 of Debian's serf on loopback, started at once: all alive at all, user event run by all handlers, leave and kill -9 seen by all, RSS, idle CPU, false failures (about 10 minutes: only as `cargo xtask bench scale`)",
        run: scale::rows,
        default: false,
    },
    Bench {
        name: "sim",
        about: "the protocol core simulated (release build): bytes per member pair at 1,000, then the largest N within 8 GiB (goal 10,000): join waves, one event and one join vs Pittel's estimate (k=3), 1 % crashed, a partition healed, messages per member, simulator speed (only as `cargo xtask bench sim`)",
        run: sim::rows,
        default: false,
    },
];

pub fn run(only: Option<&str>) -> Result<Vec<Row>> {
    if let Some(name) = only {
        if !BENCHES.iter().any(|b| b.name == name) {
            let known: Vec<&str> = BENCHES.iter().map(|b| b.name).collect();
            bail!("unknown benchmark {name:?}: known ones are {known:?}");
        }
    }
    let mut rows = Vec::new();
    let chosen = |b: &&Bench| only.map_or(b.default, |n| n == b.name);
    for b in BENCHES.iter().filter(chosen) {
        eprintln!("bench {}: {}", b.name, b.about);
        let group = (b.run)().with_context(|| format!("benchmark {}", b.name))?;
        crate::charts::save_group(b.name, &group)?;
        rows.extend(group);
    }
    write_outputs(&rows)?;
    print_table(&rows);
    Ok(rows)
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process killed when dropped.
pub(crate) struct Guard(pub Child);

/// Arms `cmd` so that its process cannot outlive the bench: the kernel
/// sends it `signal` when the thread that starts it ends
/// (PR_SET_PDEATHSIG), so a Ctrl-C, a `kill` or a crash of the bench
/// leaves no agent, server or simulator running. A bench starts its
/// children from its main thread.
pub(crate) fn dies_with_bench(cmd: &mut Command, signal: nix::sys::signal::Signal) {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    // SAFETY: between fork and exec the closure makes two system calls
    // (prctl, getppid) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(signal)?;
            // The bench died before the signal was armed.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("the bench exited"));
            }
            Ok(())
        });
    }
}

impl Guard {
    /// Starts `cmd` as a child killed when the guard is dropped, and by
    /// the kernel when the bench ends otherwise ([`dies_with_bench`]).
    pub(crate) fn spawn(cmd: &mut Command) -> std::io::Result<Guard> {
        Guard::spawn_ended_by(cmd, nix::sys::signal::Signal::SIGKILL)
    }

    /// [`Guard::spawn`] for a child that must hear of the bench's end by
    /// `signal` (a server that stops its own workers on SIGTERM).
    pub(crate) fn spawn_ended_by(
        cmd: &mut Command,
        signal: nix::sys::signal::Signal,
    ) -> std::io::Result<Guard> {
        dies_with_bench(cmd, signal);
        cmd.spawn().map(Guard)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn wait_http(port: u16) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("nothing listens on 127.0.0.1:{port} after 30 s")
}

pub(crate) fn rss_kib(pid: u32) -> Result<f64> {
    status_kib(pid, "VmRSS")
}

/// The anonymous part of the RSS: the process's own memory, without the
/// file pages (binary, libraries) that every process of the same program
/// shares through the page cache.
pub(crate) fn rss_anon_kib(pid: u32) -> Result<f64> {
    status_kib(pid, "RssAnon")
}

fn status_kib(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub(crate) fn row(
    metric: &str,
    unit: &str,
    ours: f64,
    peer: f64,
    peer_name: &str,
    goal: &str,
    passed: bool,
) -> Row {
    Row {
        metric: metric.into(),
        unit: unit.into(),
        ours,
        peer,
        peer_name: peer_name.into(),
        ratio: if peer == 0.0 { f64::NAN } else { ours / peer },
        goal: goal.into(),
        passed,
    }
}

fn markdown(rows: &[Row]) -> String {
    let mut md = String::from(
        "| metric | ours | peer | ratio | goal | result |\n|---|---|---|---|---|---|\n",
    );
    // Two decimals for small values (stop times of 0.05 s), one otherwise.
    let num = |v: f64| {
        if v.abs() < 10.0 {
            format!("{v:.2}")
        } else {
            format!("{v:.1}")
        }
    };
    for r in rows {
        md.push_str(&format!(
            "| {} | {} {} | {} {} ({}) | {} | {} | {} |\n",
            r.metric,
            num(r.ours),
            r.unit,
            num(r.peer),
            r.unit,
            r.peer_name,
            // No ratio to a peer's zero (0 false failures against 0).
            if r.ratio.is_finite() {
                format!("{:.2}", r.ratio)
            } else {
                "—".to_string()
            },
            r.goal,
            if r.passed { "pass" } else { "FAIL" }
        ));
    }
    md
}

fn write_outputs(rows: &[Row]) -> Result<()> {
    let dir: &Path = &project::target_dir().join("bench");
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("bench.md"), markdown(rows))?;
    std::fs::write(dir.join("bench.json"), serde_json::to_string_pretty(rows)?)?;
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!("{}", markdown(rows));
    let failed = rows.iter().filter(|r| !r.passed).count();
    println!("goals: {} passed, {} failed", rows.len() - failed, failed);
}

#[cfg(test)]
mod tests {
    use super::{Guard, Row};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// A child started by a thread that then ends (as the bench's main
    /// thread ends on Ctrl-C, a kill or a crash) does not outlive it: the
    /// kernel kills it. The guard itself is leaked, so its Drop cannot be
    /// what ends the child.
    #[test]
    fn a_child_does_not_outlive_the_thread_that_started_it() {
        let pid = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("300").stdin(Stdio::null());
            let guard = Guard::spawn(&mut cmd).expect("sleep starts");
            let pid = guard.0.id();
            std::mem::forget(guard);
            pid
        })
        .join()
        .unwrap();
        let proc_dir = format!("/proc/{pid}");
        let gone = |dir: &str| match std::fs::read_to_string(format!("{dir}/stat")) {
            // A zombie (state Z) has ended; only its exit status is left.
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z')),
            Err(_) => true,
        };
        let end = Instant::now() + Duration::from_secs(30);
        while !gone(&proc_dir) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        let ended = gone(&proc_dir);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
        assert!(
            ended,
            "sleep {pid} still runs after the thread that started it ended"
        );
    }

    /// `row` as the bench writes it to JSON, and as the charts read it back.
    fn round_trip(row: &Row) -> (String, Row) {
        let text = serde_json::to_string(row).unwrap();
        let back = serde_json::from_str(&text).unwrap();
        (text, back)
    }

    /// A row whose ratio is 0 / 0 (no failure on either side) is written
    /// with a `null` ratio and read back, as the charts read every group's
    /// rows after each group.
    #[test]
    fn a_row_without_a_ratio_round_trips() {
        let row = super::row(
            "members seen failed",
            "members",
            0.0,
            0.0,
            "serf",
            "0",
            true,
        );
        let (text, back) = round_trip(&row);
        assert!(text.contains("\"ratio\":null"), "{text}");
        assert!(back.ratio.is_nan());
        assert_eq!((back.ours, back.peer, back.passed), (0.0, 0.0, true));
    }

    /// A phase that never ended (the simulator's healed partition, say)
    /// has no figure: its row is kept and read back, not the end of the
    /// bench.
    #[test]
    fn a_row_without_a_figure_round_trips() {
        let row = super::row(
            "healed: reconverged",
            "s",
            f64::NAN,
            31.7,
            "reconnect interval + Pittel",
            "no more than that",
            false,
        );
        let (text, back) = round_trip(&row);
        assert!(text.contains("\"ours\":null"), "{text}");
        assert!(back.ours.is_nan() && back.ratio.is_nan());
        assert_eq!((back.peer, back.passed), (31.7, false));
    }
}
