//! The agent against a hostile or broken peer: our agent and Debian's
//! `serf` (0.9.4), in the same run, on loopback, under the same three
//! attacks, each on a fresh cluster of three agents of one kind (A, B and C,
//! all ours or all serf, so a false failure compares like with like):
//!
//! - (a) idle: 500 TCP connections to A's gossip port that send nothing and
//!   stay open for 30 s (or until A closes them);
//! - (b) slow drip: 50 TCP connections that each send a push-pull stream
//!   header (type byte and `{Nodes: 1, UserStateLen: 0, Join: false}`) at
//!   once, then the node state that header announces one byte every 2 s,
//!   for 30 s;
//! - (c) compressed bomb: UDP datagrams to A's gossip port at 2,000 per
//!   second for 30 s, each a compress message (type 9, `{Algo: 0, Buf}`)
//!   of about 25 KiB whose LZW data expands to 32 MiB: an `alive` type
//!   byte then 0x91 repeated (msgpack arrays of one element, nested). Built
//!   with the agent's own encoders (`gossip::wire`), LZW as Go's writer
//!   emits it. 32 MiB is below our decoder's cap of the time (40 MiB, as
//!   memberlist's two 20 MiB), serf decodes without a cap.
//!
//! During each attack, and for 5 s after it: A's peak RSS (VmHWM at the end:
//! a fresh process, so its peak over this attack), A's CPU (utime + stime,
//! from the attack's start to 5 s after its end), and every 100 ms each of
//! A, B and C asked for its members over one RPC connection (our client,
//! which speaks to both): a member seen `failed` by any of them while its
//! process runs is a false failure; a member whose process exited counts
//! too (a crash is worse). The attacker's loops are bounded in count and in
//! time and only send to 127.0.0.1.
//!
//! As a safety net on a shared machine, A is killed if its RSS passes
//! 2 GiB (that attack's rows then fail with the RSS seen).

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::gossip::model::MemberStatus;
use ::gossip::rpc::Client;
use ::gossip::wire::{self, mtype, NodeState, PushNodeState, PushPullHeader};

use super::gossip::{all_alive, cpu_secs, start_ready, until, SERF};
use super::{row, rss_kib, Row};
use crate::{images, prereq, project};

/// How long each attack lasts.
const ATTACK: Duration = Duration::from_secs(30);
/// How long failures are still looked for after an attack.
const AFTER: Duration = Duration::from_secs(5);
/// Rest between the cluster being whole and the attack.
const SETTLE: Duration = Duration::from_secs(3);
const IDLE_CONNS: usize = 500;
const DRIP_CONNS: usize = 50;
const DRIP_EVERY: Duration = Duration::from_secs(2);
const BOMB_RATE: u64 = 2_000;
/// What each bomb decompresses to.
const BOMB_MIB: usize = 32;
/// The bound we state for the attacked agent's peak RSS, under every attack.
const RSS_BOUND_MIB: f64 = 64.0;
/// Safety net: A is killed past this.
const RSS_KILL_MIB: f64 = 2048.0;
const POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug)]
enum Attack {
    Idle,
    Drip,
    Bomb,
}

const ATTACKS: [Attack; 3] = [Attack::Idle, Attack::Drip, Attack::Bomb];

impl Attack {
    fn what(self) -> String {
        match self {
            Attack::Idle => format!("(a) {IDLE_CONNS} idle TCP connections, 30 s"),
            Attack::Drip => {
                format!("(b) {DRIP_CONNS} slow-drip TCP connections (1 byte / 2 s), 30 s")
            }
            Attack::Bomb => {
                format!("(c) LZW-bomb datagrams (~25 KiB → {BOMB_MIB} MiB), 2,000/s for 30 s")
            }
        }
    }
}

#[derive(Debug, Default)]
struct Outcome {
    /// A's VmHWM, MiB.
    peak_mib: f64,
    /// A's CPU seconds over the attack and [`AFTER`].
    cpu: f64,
    /// Members seen failed while running, or exited.
    failed: usize,
}

pub(super) fn rows() -> Result<Vec<Row>> {
    prereq::ensure_tool("serf", "serf")?;
    let rt = tokio::runtime::Runtime::new()?;
    let ours = rt.block_on(images::build_binaries())?.join("gossip");
    let dir = project::target_dir().join("bench/hostile");
    let _ = std::fs::remove_dir_all(&dir);
    let bomb = bomb();
    eprintln!(
        "   bomb: {} bytes on the wire, {} MiB decompressed",
        bomb.len(),
        BOMB_MIB
    );
    if bomb.len() > 65_000 {
        bail!("the bomb ({} bytes) does not fit a datagram", bomb.len());
    }
    let kinds: [(&str, &Path); 2] = [("ours", &ours), ("serf", Path::new(SERF))];
    let mut got: Vec<Vec<Outcome>> = Vec::new();
    for (label, bin) in kinds {
        let mut per = Vec::new();
        for attack in ATTACKS {
            let d = dir.join(format!("{label}-{attack:?}").to_lowercase());
            std::fs::create_dir_all(&d)?;
            per.push(
                measure(&rt, label, bin, &d, attack, &bomb)
                    .with_context(|| format!("{label}, {}", attack.what()))?,
            );
        }
        got.push(per);
    }
    let peer = "serf 0.9 (Debian)";
    let mut rows = Vec::new();
    for (i, attack) in ATTACKS.iter().enumerate() {
        let (o, s) = (&got[0][i], &got[1][i]);
        let what = attack.what();
        rows.push(row(
            &format!("{what}: attacked agent's peak RSS (VmHWM)"),
            "MiB",
            o.peak_mib,
            s.peak_mib,
            peer,
            &format!("≤ {RSS_BOUND_MIB:.0} MiB and ≤ serf's"),
            o.peak_mib <= RSS_BOUND_MIB && o.peak_mib <= s.peak_mib,
        ));
        rows.push(row(
            &format!("{what}: attacked agent's CPU, attack + 5 s"),
            "s",
            o.cpu,
            s.cpu,
            peer,
            "no more than serf's (+0.1 s)",
            o.cpu <= s.cpu + 0.1,
        ));
        rows.push(row(
            &format!(
                "{what}: members seen failed or exited (3 agents of one kind, each polled every 100 ms)"
            ),
            "members",
            o.failed as f64,
            s.failed as f64,
            peer,
            "0",
            o.failed == 0,
        ));
    }
    Ok(rows)
}

/// A compress message whose LZW data decompresses to [`BOMB_MIB`] MiB: an
/// `alive` message type, then msgpack arrays of one element nested over
/// and over.
fn bomb() -> Vec<u8> {
    let mut inner = vec![0x91u8; BOMB_MIB << 20];
    inner[0] = mtype::ALIVE;
    wire::compress_msg(&inner)
}

/// A push-pull stream header announcing one node state, and that state.
fn drip_message(i: usize) -> (Vec<u8>, Vec<u8>) {
    let header = PushPullHeader {
        join: false,
        nodes: 1,
        user_state_len: 0,
    }
    .encode();
    let state = PushNodeState {
        name: format!("drip-{i}"),
        addr: vec![127, 0, 0, 1],
        port: 7946,
        meta: vec![],
        incarnation: 1,
        state: NodeState::Alive,
        vsn: vec![1, 5, 2, 2, 5, 4],
    }
    .encode();
    (header, state)
}

fn measure(
    rt: &tokio::runtime::Runtime,
    label: &str,
    bin: &Path,
    dir: &Path,
    attack: Attack,
    bomb: &[u8],
) -> Result<Outcome> {
    eprintln!("bench hostile: {label}, {}", attack.what());
    // gossip.rs's agents run a user-event handler; none is sent here.
    std::fs::write(dir.join("handler.sh"), "#!/bin/sh\n")?;
    std::fs::set_permissions(
        dir.join("handler.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let a = start_ready(bin, dir, "a", None)?;
    let b = start_ready(bin, dir, "b", Some(a.bind))?;
    let c = start_ready(bin, dir, "c", Some(a.bind))?;
    for x in [&a, &b, &c] {
        until(
            &format!("a, b and c alive at {}", x.name),
            Duration::from_secs(30),
            || all_alive(x, 3),
        )?;
    }
    std::thread::sleep(SETTLE);

    let stop = Arc::new(AtomicBool::new(false));
    // (observer, member) pairs seen failed, and members polled.
    let seen: Arc<Mutex<BTreeSet<(String, String)>>> = Arc::default();
    let polls = Arc::new(AtomicU64::new(0));
    let mut pollers = Vec::new();
    for x in [&a, &b, &c] {
        let addr: SocketAddr = ([127, 0, 0, 1], x.rpc).into();
        let (me, stop, seen, polls) = (x.name.clone(), stop.clone(), seen.clone(), polls.clone());
        pollers.push(rt.spawn(poll(addr, me, stop, seen, polls)));
    }
    let pid = a.pid();
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || sample(pid, stop))
    };

    let cpu0 = cpu_secs(pid)?;
    let t0 = Instant::now();
    let end = t0 + ATTACK;
    let summary = match attack {
        Attack::Idle => idle(a.bind, end),
        Attack::Drip => drip(a.bind, end),
        Attack::Bomb => flood(a.bind, end, bomb),
    }?;
    eprintln!(
        "   [{label}] attack over after {:.1} s: {summary}",
        t0.elapsed().as_secs_f64()
    );
    std::thread::sleep(AFTER);
    let mut out = Outcome::default();
    let mut agents = [a, b, c];
    let mut exited = Vec::new();
    for x in &mut agents {
        if let Ok(Some(st)) = x.proc.0.try_wait() {
            exited.push(format!("{} ({st})", x.name));
        }
    }
    let a_alive = !exited.iter().any(|e| e.starts_with("a "));
    out.cpu = if a_alive {
        cpu_secs(pid)? - cpu0
    } else {
        f64::NAN
    };
    let hwm = if a_alive {
        super::status_kib(pid, "VmHWM")? / 1024.0
    } else {
        0.0
    };
    stop.store(true, Ordering::Relaxed);
    let max_rss = sampler.join().expect("sampler thread");
    out.peak_mib = hwm.max(max_rss);
    for p in pollers {
        let _ = rt.block_on(p);
    }
    let seen = seen.lock().unwrap().clone();
    let mut bad: BTreeSet<String> = seen.iter().map(|(_, m)| m.clone()).collect();
    bad.extend(
        exited
            .iter()
            .map(|e| e.split(' ').next().unwrap_or("").to_string()),
    );
    out.failed = bad.len();
    eprintln!(
        "   [{label}] A: peak RSS {:.1} MiB, CPU {:.2} s; {} member polls; seen failed (observer→member): {:?}; exited: {:?}",
        out.peak_mib,
        out.cpu,
        polls.load(Ordering::Relaxed),
        seen,
        exited
    );
    drop(agents);
    Ok(out)
}

/// Asks one agent for its members every [`POLL`] until `stop`; records the
/// members it lists as failed.
async fn poll(
    addr: SocketAddr,
    me: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeSet<(String, String)>>>,
    polls: Arc<AtomicU64>,
) {
    let mut client: Option<Client> = None;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            client = tokio::time::timeout(Duration::from_secs(1), Client::connect(addr, None))
                .await
                .ok()
                .and_then(|r| r.ok());
        }
        if let Some(cl) = &client {
            match tokio::time::timeout(Duration::from_secs(1), cl.members()).await {
                Ok(Ok(ms)) => {
                    polls.fetch_add(1, Ordering::Relaxed);
                    let mut s = seen.lock().unwrap();
                    for m in ms {
                        if m.status == MemberStatus::Failed {
                            s.insert((me.clone(), m.name));
                        }
                    }
                }
                // An agent too busy to answer in 1 s, or a broken
                // connection: a new one next time.
                _ => client = None,
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Samples A's RSS every 100 ms until `stop`; kills A past the safety net.
/// The largest value seen, MiB.
fn sample(pid: u32, stop: Arc<AtomicBool>) -> f64 {
    let mut max = 0.0f64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(kib) = rss_kib(pid) else { break };
        let mib = kib / 1024.0;
        max = max.max(mib);
        if mib > RSS_KILL_MIB {
            eprintln!("   A's RSS is {mib:.0} MiB: killed (safety net)");
            kill9(pid);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    max
}

/// SIGKILL to A (a child of ours), by its pid.
fn kill9(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

/// Whether the other side has closed `s` (read gives 0 or an error).
fn closed(s: &mut TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    }
}

/// (a): connections that send nothing, held until `end`.
fn idle(port: u16, end: Instant) -> Result<String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut conns = Vec::with_capacity(IDLE_CONNS);
    let mut refused = 0;
    for _ in 0..IDLE_CONNS {
        if Instant::now() >= end {
            break;
        }
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => conns.push(s),
            Err(_) => refused += 1,
        }
    }
    let opened = conns.len();
    // Look every second for connections A has closed.
    let mut closed_at: Vec<Option<f64>> = vec![None; conns.len()];
    let t0 = Instant::now();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1).min(end - Instant::now()));
        for (i, s) in conns.iter_mut().enumerate() {
            if closed_at[i].is_none() && closed(s) {
                closed_at[i] = Some(t0.elapsed().as_secs_f64());
            }
        }
    }
    let shut: Vec<f64> = closed_at.iter().flatten().copied().collect();
    Ok(format!(
        "{opened} connected ({refused} failed), {} closed by the agent (first after {:.0} s)",
        shut.len(),
        shut.iter().copied().fold(f64::NAN, f64::min)
    ))
}

/// (b): a stream header at once, then the node state it announces one byte
/// every [`DRIP_EVERY`], until `end`.
fn drip(port: u16, end: Instant) -> Result<String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut conns: Vec<(TcpStream, Vec<u8>, usize, bool)> = Vec::new();
    let mut refused = 0;
    for i in 0..DRIP_CONNS {
        let (header, state) = drip_message(i);
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .and_then(|mut s| s.write_all(&header).map(|()| s))
        {
            Ok(s) => conns.push((s, state, 0, false)),
            Err(_) => refused += 1,
        }
    }
    let opened = conns.len();
    let mut first_close: Option<f64> = None;
    let t0 = Instant::now();
    while Instant::now() < end {
        std::thread::sleep(DRIP_EVERY.min(end - Instant::now()));
        if Instant::now() >= end {
            break;
        }
        for (s, state, sent, shut) in &mut conns {
            if *shut {
                continue;
            }
            if closed(s) {
                *shut = true;
            } else if *sent < state.len() {
                let _ = s.set_nonblocking(false);
                if s.write_all(&state[*sent..*sent + 1]).is_err() {
                    *shut = true;
                } else {
                    *sent += 1;
                }
            }
            if *shut && first_close.is_none() {
                first_close = Some(t0.elapsed().as_secs_f64());
            }
        }
    }
    let shut = conns.iter().filter(|c| c.3).count();
    let dripped = conns.iter().map(|c| c.2).max().unwrap_or(0);
    Ok(format!(
        "{opened} connected ({refused} failed), up to {dripped} bytes dripped each, {shut} closed by the agent (first after {:.0} s)",
        first_close.unwrap_or(f64::NAN)
    ))
}

/// (c): the bomb at [`BOMB_RATE`] per second until `end` (and no more than
/// rate × duration datagrams).
fn flood(port: u16, end: Instant, bomb: &[u8]) -> Result<String> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    let limit = BOMB_RATE * ATTACK.as_secs();
    let t0 = Instant::now();
    let (mut sent, mut errors) = (0u64, 0u64);
    while sent + errors < limit && Instant::now() < end {
        // Send what the rate allows by now, then sleep a little.
        let due = (t0.elapsed().as_secs_f64() * BOMB_RATE as f64) as u64;
        while sent + errors < due.min(limit) {
            match sock.send_to(bomb, to) {
                Ok(_) => sent += 1,
                Err(_) => errors += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(format!(
        "{sent} datagrams sent ({errors} send errors) in {:.1} s",
        t0.elapsed().as_secs_f64()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bomb_fits_a_datagram_and_expands() {
        let b = bomb();
        assert!(b.len() < 65_000, "{} bytes", b.len());
        assert_eq!(b[0], mtype::COMPRESS);
        let (inner, _) = wire::decompress_body(&b[1..]).unwrap();
        assert_eq!(inner.len(), BOMB_MIB << 20);
        assert_eq!(inner[0], mtype::ALIVE);
    }

    #[test]
    fn the_drip_header_is_a_push_pull_header() {
        let (h, s) = drip_message(3);
        assert_eq!(h[0], mtype::PUSH_PULL);
        let (header, n) = PushPullHeader::decode(&h[1..]).unwrap();
        assert_eq!(n, h.len() - 1);
        assert_eq!(header.nodes, 1);
        assert!(s.len() > (ATTACK.as_secs() / DRIP_EVERY.as_secs()) as usize);
    }
}
