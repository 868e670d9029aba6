//! The agent as one actor, seen from outside: its file writes run beside
//! the protocol, so a stuck disk delays the snapshot, never a ping or a
//! command.

mod common;

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::config;
use gossip::agent;
use gossip::model::{AgentConfig, AgentHandle};
use gossip::wire;
use testkit::{eventually_blocking, temp_dir};

/// Sends pings over UDP until one is acked; false if none is within `limit`.
fn ping(to: SocketAddr, seq: u32, limit: Duration) -> bool {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let msg = wire::Message::Ping(wire::Ping {
        seq_no: seq,
        ..Default::default()
    })
    .encode();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        udp.send_to(&msg, to).unwrap();
        if let Ok((n, _)) = udp.recv_from(&mut buf) {
            if let Ok((msgs, _)) = wire::decode_packet(&[], &buf[..n]) {
                if msgs
                    .iter()
                    .any(|m| matches!(m, wire::Message::Ack(a) if a.seq_no == seq))
                {
                    return true;
                }
            }
        }
    }
    false
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(r, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

/// Whether this process's file writer thread ("gossip-disk") is blocked
/// opening a FIFO that has no reader: the kernel names that wait
/// `wait_for_partner`; where wait channels are hidden, the thread's
/// current system call is `openat`.
fn disk_thread_opening_a_fifo() -> bool {
    const OPENAT: &str = if cfg!(target_arch = "x86_64") {
        "257 "
    } else {
        "56 "
    };
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    tasks.flatten().any(|t| {
        let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
        read("comm").trim() == "gossip-disk"
            && (read("wchan") == "wait_for_partner" || read("syscall").starts_with(OPENAT))
    })
}

/// The snapshot file swapped for a FIFO nobody reads: every append to it
/// blocks in `open`. The agent must keep answering pings and commands
/// meanwhile (it used to write under its state lock: everything stopped).
/// The test's own pings and waits run on plain threads, so a stalled
/// runtime fails the test instead of hanging it.
#[test]
fn a_blocked_snapshot_file_stalls_neither_pings_nor_commands() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = temp_dir("gossip-blocked-disk");
    let dir = dir.path();
    let snap = dir.join("snapshot");
    let a = rt
        .block_on(agent::start(AgentConfig {
            snapshot: Some(snap.clone()),
            coalesce_period: Duration::from_millis(100),
            quiescent_period: Duration::from_millis(50),
            ..config("stuck-disk", &[], vec![])
        }))
        .expect("agent starts");
    let addr = a.local_addr();
    assert!(
        ping(addr, 1, Duration::from_secs(30)),
        "no ack before the disk got stuck"
    );
    // Our own member-join is written first, to the file.
    eventually_blocking(
        "the snapshot to record our join",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&snap)
                .unwrap_or_default()
                .contains("alive: stuck-disk ")
                .then_some(())
        },
    );

    std::fs::remove_file(&snap).unwrap();
    mkfifo(&snap);
    // Each user event moves the event clock: a snapshot line to append.
    // The first one's append must be stuck in `open` before the others
    // and the ping are judged, or they would only race the writer.
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..3u8 {
        let (a, tx) = (a.clone(), tx.clone());
        rt.spawn(async move {
            let r = a.user_event("e", vec![i], false).await;
            let _ = tx.send(r.is_ok());
        });
        if i == 0 {
            eventually_blocking(
                "the file writer to block opening the FIFO",
                Duration::from_secs(30),
                || disk_thread_opening_a_fifo().then_some(()),
            );
        }
    }
    let commands_done = (0..3)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)))
        .all(|r| r == Ok(true));
    let acked = ping(addr, 2, Duration::from_secs(10));

    // Unstick the disk before judging: a reader lets the blocked append
    // through, and the FIFO is replaced by a file for the writes after it.
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&snap)
        .unwrap();
    std::fs::write(dir.join("snapshot.new"), b"").unwrap();
    std::fs::rename(dir.join("snapshot.new"), &snap).unwrap();
    let mut got = Vec::new();
    let drained = Instant::now() + Duration::from_secs(10);
    while Instant::now() < drained {
        let mut b = [0u8; 4096];
        match fifo.read(&mut b) {
            Ok(0) if !got.is_empty() => break,
            Ok(n) if n > 0 => got.extend_from_slice(&b[..n]),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    assert!(
        commands_done,
        "user events not answered within 10 s while the disk was stuck"
    );
    assert!(acked, "no ack within 10 s while the disk was stuck");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("event-clock: "),
        "the blocked append never went through: {text:?}"
    );
    rt.block_on(a.shutdown()).unwrap();
    drop(a);
    rt.shutdown_timeout(Duration::from_secs(5));
}

/// An idle agent sleeps until the core has something due (a gossip round,
/// a probe, a reap...), not on a fixed polling tick: alone, on paused
/// time, it wakes for its timers at most 8 times a second (the LAN
/// profile gossips every 200 ms and probes every second; a 50 ms polling
/// tick would be 20 more).
#[tokio::test(start_paused = true)]
async fn an_idle_agent_wakes_only_when_something_is_due() {
    let a = agent::start(config("idle", &[], vec![]))
        .await
        .expect("agent starts");
    let wakeups =
        |a: &agent::Agent| -> u64 { a.stats()["agent"]["timer_wakeups"].parse().unwrap() };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = wakeups(&a);
    const IDLE: u64 = 60;
    tokio::time::sleep(Duration::from_secs(IDLE)).await;
    let per_s = (wakeups(&a) - before) as f64 / IDLE as f64;
    eprintln!("idle agent: {per_s:.1} timer wake-ups/s");
    assert!(per_s <= 8.0, "{per_s:.1} timer wake-ups/s while idle");
    a.shutdown().await.unwrap();
}
