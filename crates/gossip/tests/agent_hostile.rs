//! Our agent against a hostile or broken peer over real loopback sockets:
//! too many stream connections, a peer trickling bytes, oversized frames,
//! a peer with the wrong key.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{config, wait_member};
use gossip::agent::{self, Agent};
use gossip::model::{AgentConfig, AgentHandle, MemberStatus};
use gossip::wire;
use testkit::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

async fn start(name: &str, keys: Vec<Vec<u8>>, join: Vec<String>) -> Arc<Agent> {
    logs();
    agent::start(AgentConfig {
        encrypt_keys: keys,
        ..config(name, &[], join)
    })
    .await
    .expect("agent starts")
}

/// Everything logged at the agent's default level (info), process-wide.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        struct W(&'static Mutex<Vec<u8>>);
        impl Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || W(buf))
            .try_init();
        buf
    })
}

fn log_lines_with(needle: &str) -> Vec<String> {
    let l = logs().lock().unwrap();
    String::from_utf8_lossy(&l)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

fn stat(a: &Agent, k: &str) -> u64 {
    a.stats()["serf"][k].parse().unwrap()
}

async fn poll(what: &str, mut f: impl FnMut() -> bool) {
    eventually(what, Duration::from_secs(60), async || f().then_some(())).await
}

async fn wait_status(a: &Agent, who: &str, st: MemberStatus) {
    wait_member(a, who, st, Duration::from_secs(60)).await;
}

/// Sends a ping over UDP and waits for its ack.
async fn ping(to: SocketAddr, seq: u32) {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let msg = wire::Message::Ping(wire::Ping {
        seq_no: seq,
        ..Default::default()
    })
    .encode();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        udp.send_to(&msg, to).await.unwrap();
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(500), udp.recv_from(&mut buf)).await
        {
            if let Ok((msgs, _)) = wire::decode_packet(&[], &buf[..n]) {
                if msgs
                    .iter()
                    .any(|m| matches!(m, wire::Message::Ack(a) if a.seq_no == seq))
                {
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "no ack for ping {seq}");
    }
}

/// More stream connections than the agent takes at once: the extra ones
/// are closed straight away (not after the stream deadline, like the
/// first ones), the agent still answers pings, and takes streams again
/// once the first ones are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_stream_connections_are_closed_at_once() {
    const CONNS: usize = 300;
    let a = start("cap", vec![], vec![]).await;
    let addr = a.local_addr();
    let closed: Arc<Vec<AtomicBool>> =
        Arc::new((0..CONNS).map(|_| AtomicBool::new(false)).collect());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut held = Vec::new();
    for i in 0..CONNS {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let closed = closed.clone();
        let tx = tx.clone();
        held.push(tokio::spawn(async move {
            let mut b = [0u8; 16];
            // Read until the agent closes (EOF or reset).
            while let Ok(n) = s.read(&mut b).await {
                if n == 0 {
                    break;
                }
            }
            closed[i].store(true, Ordering::SeqCst);
            let _ = tx.send(i);
        }));
    }
    let first = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("no connection closed")
        .unwrap();
    assert!(
        !closed[0].load(Ordering::SeqCst),
        "the oldest connection was closed first (connection {first} closed): no cap, only timeouts"
    );
    ping(addr, 4242).await;
    poll("refusals counted", || stat(&a, "streams_dropped") > 0).await;
    // Once the held connections hit the stream deadline, streams work again.
    poll("every connection closed", || {
        closed.iter().all(|c| c.load(Ordering::SeqCst))
    })
    .await;
    let b = start("cap-b", vec![], vec![addr.to_string()]).await;
    wait_status(&a, "cap-b", MemberStatus::Alive).await;
    for h in held {
        h.abort();
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A peer sending one byte a second (well within any per-read timeout)
/// is cut off by the deadline for the whole exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_peer_is_dropped() {
    let a = start("trickle", vec![], vec![]).await;
    let mut s = TcpStream::connect(a.local_addr()).await.unwrap();
    // A user message announcing 4 KiB, then its payload, slowly.
    let mut head = wire::user_stream_msg(&[b'x'; 4096]);
    head.truncate(head.len() - 4096);
    s.write_all(&head).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut b = [0u8; 16];
    loop {
        assert!(
            Instant::now() < deadline,
            "a peer sending a byte a second is still connected after 60 s"
        );
        tokio::select! {
            r = s.read(&mut b) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if s.write_all(b"x").await.is_err() {
                    break;
                }
            }
        }
    }
    poll("drop counted", || stat(&a, "streams_dropped") >= 1).await;
    a.shutdown().await.unwrap();
}

/// A frame announcing more than the stream limit is refused from its
/// header: the agent does not read (buffer) the body, so a peer pushing
/// the body gets its connection reset long before it has sent it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_push_pull_is_refused_from_its_header() {
    let a = start("big", vec![], vec![]).await;
    let mut s = TcpStream::connect(a.local_addr()).await.unwrap();
    // Plaintext push-pull header: no nodes, a user state as large as the
    // whole stream limit (so header + state are over it).
    let head = wire::PushPullHeader {
        join: false,
        nodes: 0,
        user_state_len: wire::MAX_BODY as u64,
    }
    .encode();
    s.write_all(&head).await.unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let sent = tokio::time::timeout(Duration::from_secs(60), async {
        let mut sent = 0usize;
        while sent < 32 << 20 {
            if s.write_all(&chunk).await.is_err() {
                return Some(sent);
            }
            sent += chunk.len();
        }
        None
    })
    .await
    .expect("writes neither refused nor taken within 60 s");
    assert!(
        sent.is_some(),
        "the agent took 32 MiB of a frame whose header is over the limit"
    );
    poll("oversized header counted", || {
        stat(&a, "streams_dropped") >= 1
    })
    .await;
    a.shutdown().await.unwrap();
}

/// Streams pushing large messages share one buffer budget: six peers each
/// pushing a 30 MiB user message (under the 40 MiB stream limit; 180 MiB
/// together) never make the agent hold more than
/// [`agent::STREAM_BUFFER_BUDGET`] of stream buffers, and it keeps
/// answering pings meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_buffers_share_one_budget() {
    const PEERS: usize = 6;
    const SIZE: usize = 30 << 20;
    let a = start("budget", vec![], vec![]).await;
    let addr = a.local_addr();
    // The header of a user message announcing SIZE bytes.
    let mut head = wire::user_stream_msg(&vec![0u8; SIZE]);
    head.truncate(head.len() - SIZE);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut peers = Vec::new();
    for _ in 0..PEERS {
        let head = head.clone();
        let tx = tx.clone();
        peers.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&head).await.unwrap();
            let chunk = vec![0u8; 256 * 1024];
            let mut sent = 0;
            while sent < SIZE {
                // A write the agent stops taking (no room) stalls here.
                match tokio::time::timeout(Duration::from_secs(2), s.write_all(&chunk)).await {
                    Ok(Ok(())) => sent += chunk.len(),
                    Ok(Err(_)) => break,
                    Err(_) => {
                        let _ = tx.send(sent);
                        // Hold the connection until the agent's deadline.
                        let mut b = [0u8; 16];
                        let _ = s.read(&mut b).await;
                        return;
                    }
                }
            }
            let _ = tx.send(sent);
        }));
    }
    drop(tx);
    let mut stalled = 0;
    while let Some(sent) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("every peer finished or stalled within 60 s")
    {
        if sent < SIZE {
            stalled += 1;
        }
    }
    ping(addr, 4343).await;
    let peak: u64 = a.stats()["agent"]["stream_buffer_peak_bytes"]
        .parse()
        .unwrap();
    eprintln!(
        "stream buffers peaked at {} MiB, {stalled} of {PEERS} peers stalled",
        peak >> 20
    );
    assert!(
        peak <= agent::STREAM_BUFFER_BUDGET as u64,
        "stream buffers held {peak} bytes at once, over the {} byte budget",
        agent::STREAM_BUFFER_BUDGET
    );
    assert!(
        peak >= SIZE as u64,
        "the streams never buffered a whole message ({peak} bytes)"
    );
    assert!(stalled > 0, "every peer pushed its {SIZE} bytes: no budget");
    for p in peers {
        p.abort();
    }
    a.shutdown().await.unwrap();
}

/// A peer encrypting with another key is named in a warning at the
/// default log level, once, however many packets it sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_wrong_key_is_warned_about_once() {
    let a = start("keyed", vec![vec![1u8; 32]], vec![]).await;
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = udp.local_addr().unwrap().to_string();
    let env = wire::Envelope {
        keys: vec![vec![2u8; 32]],
        compress: false,
    };
    let ping = wire::Message::Ping(wire::Ping::default()).encode();
    let pkt = wire::encode_packet(&env, &ping, false, [7; 12]);
    let before = stat(&a, "packets_dropped");
    for _ in 0..50 {
        udp.send_to(&pkt, a.local_addr()).await.unwrap();
    }
    poll("the 50 packets dropped", || {
        stat(&a, "packets_dropped") >= before + 50
    })
    .await;
    let warned = log_lines_with(&me);
    assert_eq!(warned.len(), 1, "warnings naming {me}: {warned:?}");
    assert!(warned[0].contains("WARN"), "{warned:?}");

    // The same over a stream.
    let mut s = TcpStream::connect(a.local_addr()).await.unwrap();
    let me = s.local_addr().unwrap().ip().to_string()
        + ":"
        + &s.local_addr().unwrap().port().to_string();
    s.write_all(&wire::encode_stream(&env, &ping, [8; 12]))
        .await
        .unwrap();
    poll("stream warning", || log_lines_with(&me).len() == 1).await;
    a.shutdown().await.unwrap();
}
