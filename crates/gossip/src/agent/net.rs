//! The agent's network edge: binding the gossip sockets, resolving join
//! addresses, and the stream exchanges (incoming messages, push-pulls,
//! TCP pings, reliable user messages) with their limits — one deadline
//! per exchange, a frame-size cap and one buffer budget for all streams.
//!
//! Nothing here touches the protocol state: the stream tasks hand what
//! they read to the actor (see [`super::actor`]) and get back what to
//! write.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use crate::wire;

/// Serf's default gossip port.
pub const DEFAULT_PORT: u16 = 7946;
/// One deadline for a whole stream exchange (connect, request, reply), not
/// per read: a peer trickling a byte at a time is cut off by it.
/// memberlist: TCPTimeout 10 s (its LAN default; it sets one deadline on
/// the connection for the whole exchange).
pub(super) const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// A TCP fallback ping's answer is useless after the probe interval.
const TCP_PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest message read from a stream (every length it announces is
/// checked against this before its bytes are read).
const MAX_STREAM: usize = wire::MAX_BODY;
/// Bytes of stream messages buffered at once by all streams together
/// (incoming and the answers to our own push-pulls). memberlist has no
/// such bound: 128 streams (its maxPushPullRequests) × 20 MiB
/// (maxPushStateBytes) is 2.5 GiB. Ours: a stream waits for room before
/// its buffer grows, within its one `TCP_TIMEOUT`; the budget holds one
/// message of the largest size (`MAX_STREAM`, 40 MiB) with room to spare,
/// and a cluster of 10,000 members pushes about 1–2 MiB.
pub const STREAM_BUFFER_BUDGET: usize = 64 << 20;
/// Incoming stream connections served at once; more are closed at once.
/// memberlist: maxPushPullRequests 128 (it counts push-pulls only; we
/// count every incoming stream, which are mostly push-pulls).
pub(super) const MAX_STREAMS: usize = 128;
/// How often a peer failing to decrypt (or sending plaintext to our
/// keyring, or the reverse) is logged, per peer address and transport.
/// memberlist logs every failed packet; a misconfigured peer gossips
/// several a second, so once a minute names it without flooding the log.
const KEY_WARN_EVERY: Duration = Duration::from_secs(60);
/// Peers remembered for [`KEY_WARN_EVERY`]; when full (a flood of
/// addresses) further warnings are skipped until entries expire. A bound
/// so a spoofed-address flood cannot grow the map.
const KEY_WARN_PEERS: usize = 1024;

/// Binds UDP and TCP on `addr` (port 0: the same free port for both).
pub(super) async fn bind(addr: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        let tcp = TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind tcp {addr}"))?;
        let udp = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("bind udp {addr}"))?;
        return Ok((udp, tcp));
    }
    let mut last = None;
    for _ in 0..20 {
        let tcp = TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind tcp {addr}"))?;
        let port = tcp.local_addr()?.port();
        match UdpSocket::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(udp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "no free port for both udp and tcp on {addr}: {last:?}"
    ))
}

/// The address to advertise when bound to 0.0.0.0: the source address the
/// kernel picks toward private ranges first (a container network without a
/// default route still has a route to its own subnet), then anywhere. A UDP
/// `connect` sends nothing.
pub(super) fn advertise_ip(bound: IpAddr) -> IpAddr {
    if !bound.is_unspecified() {
        return bound;
    }
    let probes = [
        "10.255.255.255:9",
        "172.31.255.255:9",
        "192.168.255.255:9",
        "100.64.0.1:9",
        "192.0.2.1:9",
    ];
    for p in probes {
        let got = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| {
            s.connect(p)?;
            s.local_addr()
        });
        if let Ok(a) = got {
            if !a.ip().is_unspecified() && !a.ip().is_loopback() {
                return a.ip();
            }
        }
    }
    IpAddr::from([127, 0, 0, 1])
}

fn split_host_port(s: &str) -> (String, u16) {
    let s = s.trim();
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return (sa.ip().to_string(), sa.port());
    }
    if let Ok(ip) = s.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
        return (ip.to_string(), DEFAULT_PORT);
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h.to_string(), port),
            Err(_) => (s.to_string(), DEFAULT_PORT),
        },
        _ => (s.to_string(), DEFAULT_PORT),
    }
}

/// Resolves `host[:port]` to every address it names.
pub async fn resolve(s: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let (host, port) = split_host_port(s);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("cannot resolve {s:?}"))?
        .collect();
    anyhow::ensure!(!addrs.is_empty(), "{s:?} resolves to no address");
    Ok(addrs)
}

/// The room all stream buffers share ([`STREAM_BUFFER_BUDGET`] bytes).
pub struct StreamBudget {
    room: Arc<tokio::sync::Semaphore>,
    /// The most bytes ever held at once.
    peak: std::sync::atomic::AtomicU64,
}

impl StreamBudget {
    pub(super) fn new() -> Self {
        StreamBudget {
            room: Arc::new(tokio::sync::Semaphore::new(STREAM_BUFFER_BUDGET)),
            peak: Default::default(),
        }
    }

    /// Waits for `n` more bytes of room (added to `held`).
    async fn take(
        &self,
        held: &mut Option<tokio::sync::OwnedSemaphorePermit>,
        n: usize,
    ) -> anyhow::Result<()> {
        let n32 = u32::try_from(n).context("stream buffer growth over 4 GiB")?;
        let p = self.room.clone().acquire_many_owned(n32).await?;
        let used = STREAM_BUFFER_BUDGET - self.room.available_permits();
        self.peak
            .fetch_max(used as u64, std::sync::atomic::Ordering::Relaxed);
        match held {
            Some(h) => h.merge(p),
            None => *held = Some(p),
        }
        Ok(())
    }

    /// The most bytes the stream buffers held at once so far.
    pub fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Reads one message from a stream: the frame's lengths are checked as
/// they arrive and it is decoded once, when whole. Its buffer grows only
/// with room from `budget`, held until the message is decoded. No deadline
/// of its own: callers bound the whole exchange with [`TCP_TIMEOUT`].
async fn read_message(
    stream: &mut TcpStream,
    keys: &[Vec<u8>],
    budget: &StreamBudget,
) -> anyhow::Result<wire::Message> {
    const CHUNK: usize = 64 * 1024;
    let mut frame = wire::StreamFrame::new(MAX_STREAM, !keys.is_empty());
    let mut held = None;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if let Some(len) = frame.advance(&buf)? {
            return match wire::parse_stream(keys, &buf[..len])? {
                Some((m, _)) => Ok(m),
                None => anyhow::bail!("stream message of {len} bytes is cut short inside"),
            };
        }
        if buf.capacity() - buf.len() < 4096 {
            // Doubling (no quadratic copying), never past the message's
            // length once known nor past the limit (a longer message is
            // refused by the frame first).
            let want = (2 * buf.capacity()).max(buf.len() + CHUNK).min(
                frame
                    .known_len()
                    .unwrap_or(MAX_STREAM)
                    .max(buf.len() + 4096),
            );
            budget.take(&mut held, want - buf.capacity()).await?;
            buf.reserve_exact(want - buf.len());
        }
        let n = stream.read_buf(&mut buf).await?;
        anyhow::ensure!(
            n > 0,
            "stream closed before a whole message ({} bytes)",
            buf.len()
        );
    }
}

/// What a stream needs from the agent: the keyring as it stands when the
/// stream starts, and the read budget all streams share.
pub(super) struct StreamCtx {
    keys: Arc<Vec<Vec<u8>>>,
    budget: Arc<StreamBudget>,
}

impl StreamCtx {
    pub(super) fn new(keys: &Arc<Vec<Vec<u8>>>, budget: &Arc<StreamBudget>) -> StreamCtx {
        StreamCtx {
            keys: keys.clone(),
            budget: budget.clone(),
        }
    }
}

/// A push-pull with `to`: our state out, its state back (an error reply
/// is an error), all within [`TCP_TIMEOUT`].
pub(super) async fn push_pull(
    to: SocketAddr,
    bytes: Vec<u8>,
    ctx: StreamCtx,
) -> anyhow::Result<wire::Message> {
    let m = exchange(to, bytes, &ctx, TCP_TIMEOUT, "push-pull").await?;
    if let wire::Message::Err(e) = &m {
        anyhow::bail!("remote error from {to}: {e}");
    }
    Ok(m)
}

/// memberlist's TCP fallback probe: a ping on a new stream, one message
/// back, within [`TCP_PING_TIMEOUT`].
pub(super) async fn tcp_ping(
    to: SocketAddr,
    bytes: Vec<u8>,
    ctx: StreamCtx,
) -> anyhow::Result<wire::Message> {
    exchange(to, bytes, &ctx, TCP_PING_TIMEOUT, "TCP ping").await
}

/// `bytes` out on a new stream to `to` and one message back, within `limit`.
async fn exchange(
    to: SocketAddr,
    bytes: Vec<u8>,
    ctx: &StreamCtx,
    limit: Duration,
    what: &str,
) -> anyhow::Result<wire::Message> {
    tokio::time::timeout(limit, async {
        let mut s = TcpStream::connect(to)
            .await
            .with_context(|| format!("connect {to}"))?;
        s.write_all(&bytes).await.context("write")?;
        read_message(&mut s, &ctx.keys, &ctx.budget).await
    })
    .await
    .with_context(|| format!("{what} with {to} timed out"))?
}

/// A reliable user message: written on a new stream, no reply; the whole
/// exchange within [`TCP_TIMEOUT`] (a peer that stops reading does not
/// hold the task).
pub(super) async fn send_reliable(to: SocketAddr, bytes: Vec<u8>) -> anyhow::Result<()> {
    tokio::time::timeout(TCP_TIMEOUT, async {
        let mut s = TcpStream::connect(to).await?;
        s.write_all(&bytes).await?;
        s.shutdown().await?;
        anyhow::Ok(())
    })
    .await?
}

/// The message an incoming stream carried, for the actor; it answers on
/// `reply` with the bytes to write back, if any.
pub(super) struct Incoming {
    pub from: SocketAddr,
    pub msg: wire::Message,
    pub reply: oneshot::Sender<Option<Vec<u8>>>,
}

/// One incoming stream, within [`TCP_TIMEOUT`]: a message in, handed to
/// the actor, its reply (if any) out.
pub(super) async fn serve_stream(
    mut stream: TcpStream,
    from: SocketAddr,
    ctx: StreamCtx,
    actor: mpsc::Sender<Incoming>,
) -> anyhow::Result<()> {
    let exchange = async {
        let msg = read_message(&mut stream, &ctx.keys, &ctx.budget).await?;
        let (reply, answer) = oneshot::channel();
        if actor.send(Incoming { from, msg, reply }).await.is_err() {
            return Ok(()); // shutting down
        }
        if let Ok(Some(r)) = answer.await {
            stream.write_all(&r).await?;
            stream.shutdown().await?;
        }
        Ok(())
    };
    match tokio::time::timeout(TCP_TIMEOUT, exchange).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("stream not done within {TCP_TIMEOUT:?}")),
    }
}

/// True for the errors of a peer whose keyring does not match ours.
fn key_mismatch(e: &wire::WireError) -> bool {
    matches!(
        e,
        wire::WireError::Decrypt
            | wire::WireError::NotEncrypted
            | wire::WireError::EncryptedButNoKeys
    )
}

/// Warnings naming a peer whose keyring does not match ours, at most once
/// per [`KEY_WARN_EVERY`] per peer and transport.
#[derive(Default)]
pub(super) struct KeyWarnings {
    /// When each peer (address, is a stream) was last warned about.
    warned: HashMap<(IpAddr, bool), tokio::time::Instant>,
}

impl KeyWarnings {
    pub(super) fn warn(&mut self, from: SocketAddr, stream: bool, e: &wire::WireError) {
        if !key_mismatch(e) {
            return;
        }
        let now = tokio::time::Instant::now();
        let key = (from.ip(), stream);
        if self
            .warned
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < KEY_WARN_EVERY)
        {
            return;
        }
        if self.warned.len() >= KEY_WARN_PEERS {
            self.warned
                .retain(|_, t| now.duration_since(*t) < KEY_WARN_EVERY);
            if self.warned.len() >= KEY_WARN_PEERS {
                return;
            }
        }
        self.warned.insert(key, now);
        let what = if stream { "stream" } else { "packet" };
        tracing::warn!(
            %from,
            error = %e,
            "dropped a {what} from {from}: {e} (its keyring does not match ours); \
             the next from this address are not logged for {}s",
            KEY_WARN_EVERY.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("ha"), ("ha".into(), 7946));
        assert_eq!(split_host_port("ha:8000"), ("ha".into(), 8000));
        assert_eq!(split_host_port("127.0.0.1"), ("127.0.0.1".into(), 7946));
        assert_eq!(split_host_port("127.0.0.1:1"), ("127.0.0.1".into(), 1));
        assert_eq!(split_host_port("[::1]:5"), ("::1".into(), 5));
        assert_eq!(split_host_port("::1"), ("::1".into(), 7946));
    }
}
