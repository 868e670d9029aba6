//! The tokio shell around [`crate::serf::Serf`]: it owns the UDP and TCP
//! sockets on the bind address, the clock and the tick timer, resolves
//! join addresses (DNS names too, every resolved address, default port
//! 7946), retries `retry_join`, and implements [`model::AgentHandle`].
//!
//! All protocol decisions live in the sans-IO layers; this module only
//! moves bytes: datagrams (decrypted, decompressed and decoded before the
//! state lock is taken) to `Serf::handle_decoded_packet`, one message per
//! incoming TCP stream to `Serf::handle_stream` (reply written back), and
//! the `Output`s the engine asks for (datagrams, push-pull exchanges,
//! reliable user messages). Events go out on a broadcast channel in the
//! order the engine emitted them (member events already coalesced).
//!
//! Keyring operations (`install_key` ...) run across the cluster through
//! Serf's internal `_serf_*-key` queries, like `serf keys`. The keyring
//! and tags files are read at start and rewritten when they change.
//!
//! `-snapshot` keeps serf's snapshot file (see [`snapshot`]); `-rejoin`
//! rejoins the members it lists.
//!
//! Not implemented: `-replay` of events older than the join is best effort (the
//! events in the remote's push-pull buffer).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

pub mod snapshot;

use crate::core::Output;
use crate::model::{self, AgentConfig, Event, KeyResponse, Member, QueryParams, QueryReply, Stats};
use crate::serf::{self, Serf};
use crate::wire;

/// Serf's default gossip port.
pub const DEFAULT_PORT: u16 = 7946;
/// One deadline for a whole stream exchange (connect, request, reply), not
/// per read: a peer trickling a byte at a time is cut off by it.
/// memberlist: TCPTimeout 10 s (its LAN default; it sets one deadline on
/// the connection for the whole exchange).
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a leaving agent lets its peers handle the leave intent it sent
/// them directly before it sends the dead notice.
const INTENT_HEAD_START: Duration = Duration::from_millis(20);
/// Largest message read from a stream (every length it announces is
/// checked against this before its bytes are read).
const MAX_STREAM: usize = wire::MAX_BODY;
/// Bytes of stream messages buffered at once by all streams together
/// (incoming and the answers to our own push-pulls). memberlist has no
/// such bound: 128 streams (its maxPushPullRequests) × 20 MiB
/// (maxPushStateBytes) is 2.5 GiB. Ours: a stream waits for room before
/// its buffer grows, within its one [`TCP_TIMEOUT`]; the budget holds one
/// message of the largest size ([`MAX_STREAM`], 40 MiB) with room to spare,
/// and a cluster of 10,000 members pushes about 1–2 MiB.
pub const STREAM_BUFFER_BUDGET: usize = 64 << 20;
/// Incoming stream connections served at once; more are closed at once.
/// memberlist: maxPushPullRequests 128 (it counts push-pulls only; we
/// count every incoming stream, which are mostly push-pulls).
const MAX_STREAMS: usize = 128;
/// How often a peer failing to decrypt (or sending plaintext to our
/// keyring, or the reverse) is logged, per peer address and transport.
/// memberlist logs every failed packet; a misconfigured peer gossips
/// several a second, so once a minute names it without flooding the log.
const KEY_WARN_EVERY: Duration = Duration::from_secs(60);
/// Peers remembered for [`KEY_WARN_EVERY`]; when full (a flood of
/// addresses) further warnings are skipped until entries expire. A bound
/// so a spoofed-address flood cannot grow the map.
const KEY_WARN_PEERS: usize = 1024;

struct Inner {
    serf: Serf,
    queries: HashMap<u64, mpsc::Sender<QueryReply>>,
}

/// A running agent.
pub struct Agent {
    inner: Mutex<Inner>,
    start: Instant,
    udp: Arc<UdpSocket>,
    local_addr: SocketAddr,
    events: broadcast::Sender<Event>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    config: AgentConfig,
    me: std::sync::Weak<Agent>,
    /// Incoming TCP streams dropped as malformed (or cut, or timed out,
    /// or refused over [`MAX_STREAMS`]).
    streams_dropped: std::sync::atomic::AtomicU64,
    /// The room all stream buffers share.
    stream_budget: Arc<StreamBudget>,
    /// Events the event handlers never saw: their queue was full.
    handler_events_dropped: std::sync::atomic::AtomicU64,
    /// When each peer (address, is a stream) was last warned about for
    /// a key mismatch.
    key_warned: Mutex<HashMap<(IpAddr, bool), Instant>>,
    /// The snapshot file, when `-snapshot` is set.
    snap: Option<Mutex<snapshot::Writer>>,
    /// Events emitted before the first `subscribe` (None after it).
    early: Mutex<Option<Vec<Event>>>,
    /// Set once another node won the vote for our name.
    name_lost: tokio::sync::watch::Sender<Option<String>>,
}

/// Events a subscriber may fall behind before it misses some.
const EVENT_BACKLOG: usize = 512;

/// How many events are kept for the first subscriber.
const EARLY_EVENTS: usize = 1024;

/// Starts an agent: binds its sockets, starts its timers, joins
/// `config.join` (failing if none answers) and starts `retry_join`.
pub async fn start(config: AgentConfig) -> anyhow::Result<Arc<Agent>> {
    let (udp, tcp) = bind(config.bind).await?;
    let local_addr = tcp.local_addr()?;
    let advertise = match config.advertise {
        Some(a) if a.port() == 0 => SocketAddr::new(a.ip(), local_addr.port()),
        Some(a) => a,
        None => SocketAddr::new(advertise_ip(local_addr.ip()), local_addr.port()),
    };
    let mut keys = config.encrypt_keys.clone();
    if let Some(path) = &config.keyring_file {
        // As serf: the keyring file must exist and hold at least one key,
        // and it is the only source of keys. An agent that cannot read it
        // does not start rather than gossip in plain text.
        anyhow::ensure!(
            keys.is_empty(),
            "Encryption key not allowed while using a keyring"
        );
        let text = std::fs::read(path)
            .with_context(|| format!("cannot read keyring file {}", path.display()))?;
        let list: Vec<String> = serde_json::from_slice(&text).with_context(|| {
            format!("keyring file {} is not a JSON list of keys", path.display())
        })?;
        anyhow::ensure!(
            !list.is_empty(),
            "no keys present in keyring file {}",
            path.display()
        );
        for (i, k) in list.iter().enumerate() {
            // The key itself stays out of the message: it is a secret.
            let b = base64::engine::general_purpose::STANDARD
                .decode(k.trim())
                .with_context(|| {
                    format!("bad key #{} in keyring file {}", i + 1, path.display())
                })?;
            if !keys.contains(&b) {
                keys.push(b);
            }
        }
    }
    for k in &keys {
        anyhow::ensure!(
            matches!(k.len(), 16 | 24 | 32),
            "encryption key must be 16, 24 or 32 bytes, got {}",
            k.len()
        );
    }
    let mut core_cfg = crate::core::Config::lan(&config.node_name, advertise);
    core_cfg.keys = keys;
    core_cfg.compress = config.compress;
    core_cfg.seed = rand::random();
    apply_profile(&mut core_cfg, &config.profile)?;
    let mut scfg = serf::Config::new(core_cfg);
    scfg.coalesce_period = config.coalesce_period;
    scfg.quiescent_period = config.quiescent_period;
    scfg.reconnect_interval = config.reconnect_interval;
    scfg.reconnect_timeout = config.reconnect_timeout;
    scfg.tombstone_timeout = config.tombstone_timeout;
    scfg.user_event_size_limit = config.user_event_size_limit;
    scfg.query_size_limit = config.query_size_limit;
    scfg.query_response_size_limit = config.query_response_size_limit;
    scfg.tags = config.tags.clone();
    scfg.name_conflict_resolution = !config.disable_name_resolution;
    scfg.disable_coordinates = config.disable_coordinates;
    if let Some(path) = &config.tags_file {
        // serf: tags saved by an earlier run win over the command line.
        // A file that exists but cannot be read or decoded is an error:
        // it would be overwritten below.
        let text = match std::fs::read(path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read tags file {}", path.display()))
            }
        };
        if let Some(text) = text {
            let saved: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&text)
                .with_context(|| {
                format!("tags file {} is not a JSON object", path.display())
            })?;
            for (k, v) in saved {
                let Some(v) = v.as_str().map(str::to_string) else {
                    anyhow::bail!(
                        "tags file {}: tag {k:?} is {v}, not a string",
                        path.display()
                    );
                };
                match scfg.tags.iter_mut().find(|(kk, _)| *kk == k) {
                    Some(slot) => slot.1 = v,
                    None => scfg.tags.push((k, v)),
                }
            }
        }
    }
    // Tags that do not fit a node's meta stop the start, before the tags
    // file is written.
    serf::check_meta_size(&crate::wire::encode_tags(&scfg.tags))?;
    if let Some(path) = &config.tags_file {
        save_tags(path, &scfg.tags)?;
    }
    // Read before anything happens, so an unusable snapshot stops the start
    // before the first member event.
    let previous = match &config.snapshot {
        Some(path) => Some((path, snapshot::load(path, config.rejoin)?)),
        None => None,
    };
    let start = Instant::now();
    let nonces = Box::new(<rand::rngs::StdRng as rand::SeedableRng>::from_os_rng());
    let mut serf = Serf::new(scfg, Duration::ZERO, nonces);
    let mut rejoin_addrs = Vec::new();
    let snap = match previous {
        Some((path, prev)) => {
            serf.restore_clocks(prev.clock, prev.event_clock, prev.query_clock);
            // Serf rejoins whom the snapshot lists: after a crash always,
            // after a leave only with -rejoin (the leave forgot them
            // otherwise).
            if !prev.alive.is_empty() {
                rejoin_addrs = prev
                    .alive
                    .iter()
                    .filter(|(n, _)| **n != config.node_name)
                    .map(|(_, a)| a.clone())
                    .collect();
            }
            Some(Mutex::new(
                snapshot::Writer::new(path.clone(), &prev, serf.clocks())
                    .rejoin_after_leave(config.rejoin),
            ))
        }
        None => None,
    };
    // Every slot is allocated (and touched) up front: 4096 of them were
    // half of the idle agent's anonymous memory. Member events come
    // coalesced, one event for a burst, so a subscriber (handlers, RPC
    // streams) falling 512 events behind is a stuck one.
    let (events, _) = broadcast::channel(EVENT_BACKLOG);
    let agent = Arc::new_cyclic(|me| Agent {
        inner: Mutex::new(Inner {
            serf,
            queries: HashMap::new(),
        }),
        start,
        udp: Arc::new(udp),
        local_addr,
        events,
        tasks: Mutex::new(Vec::new()),
        config: config.clone(),
        me: me.clone(),
        early: Mutex::new(Some(Vec::new())),
        snap,
        streams_dropped: Default::default(),
        stream_budget: Arc::new(StreamBudget::new()),
        handler_events_dropped: Default::default(),
        key_warned: Default::default(),
        name_lost: tokio::sync::watch::channel(None).0,
    });
    tracing::info!(node = %config.node_name, bind = %local_addr, %advertise, "agent started");
    let tasks = vec![
        tokio::spawn(udp_loop(Arc::downgrade(&agent), agent.udp.clone())),
        tokio::spawn(tcp_loop(Arc::downgrade(&agent), tcp)),
        tokio::spawn(tick_loop(Arc::downgrade(&agent))),
    ];
    agent.tasks.lock().expect("tasks").extend(tasks);
    if !rejoin_addrs.is_empty() {
        // -rejoin: best effort, like serf (a failure is only logged).
        match model::AgentHandle::join(&*agent, rejoin_addrs, config.replay).await {
            Ok(n) => tracing::info!(n, "rejoined members from the snapshot"),
            Err(e) => tracing::warn!(error = %e, "rejoin from the snapshot failed"),
        }
    }
    if !config.join.is_empty() {
        model::AgentHandle::join(&*agent, config.join.clone(), config.replay).await?;
    }
    if !config.retry_join.is_empty() {
        let weak = Arc::downgrade(&agent);
        let h = tokio::spawn(async move {
            let (addrs, interval, max, replay) = {
                let Some(a) = weak.upgrade() else { return };
                (
                    a.config.retry_join.clone(),
                    a.config.retry_interval.max(Duration::from_millis(100)),
                    a.config.retry_max,
                    a.config.replay,
                )
            };
            // Backoff: quick first retries (the seed may be seconds away),
            // doubling up to the configured interval.
            let mut delay = interval.min(Duration::from_secs(1));
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                let Some(a) = weak.upgrade() else { return };
                match model::AgentHandle::join(&*a, addrs.clone(), replay).await {
                    Ok(n) => {
                        tracing::info!(n, "retry-join succeeded");
                        return;
                    }
                    Err(e) => tracing::warn!(attempt, error = %e, "retry-join failed"),
                }
                drop(a);
                if max != 0 && attempt >= max {
                    tracing::error!("retry-join gave up after {attempt} attempts");
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(interval);
            }
        });
        agent.tasks.lock().expect("tasks").push(h);
    }
    Ok(agent)
}

/// memberlist's LAN, WAN and local profiles (serf's `-profile`).
fn apply_profile(c: &mut crate::core::Config, profile: &str) -> anyhow::Result<()> {
    match profile {
        "" | "lan" => {}
        "wan" => {
            c.suspicion_mult = 6;
            c.push_pull_interval = Duration::from_secs(60);
            c.probe_timeout = Duration::from_secs(3);
            c.probe_interval = Duration::from_secs(5);
            c.gossip_nodes = 4;
            c.gossip_interval = Duration::from_millis(500);
            c.gossip_to_dead = Duration::from_secs(60);
        }
        "local" => {
            c.indirect_checks = 1;
            c.retransmit_mult = 2;
            c.suspicion_mult = 3;
            c.push_pull_interval = Duration::from_secs(15);
            c.probe_timeout = Duration::from_millis(200);
            c.probe_interval = Duration::from_secs(1);
            c.gossip_interval = Duration::from_millis(100);
            c.gossip_to_dead = Duration::from_secs(15);
        }
        other => anyhow::bail!("unknown profile {other:?} (expected lan, wan or local)"),
    }
    Ok(())
}

fn save_tags(path: &std::path::Path, tags: &[(String, String)]) -> anyhow::Result<()> {
    let map: serde_json::Map<String, serde_json::Value> = tags
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    write_atomically(path, &serde_json::to_vec_pretty(&map)?)
        .with_context(|| format!("cannot write tags file {}", path.display()))
}

fn save_keyring(path: &std::path::Path, keys: &[Vec<u8>]) -> anyhow::Result<()> {
    let list: Vec<String> = keys
        .iter()
        .map(|k| base64::engine::general_purpose::STANDARD.encode(k))
        .collect();
    write_atomically(path, &serde_json::to_vec_pretty(&list)?)
        .with_context(|| format!("cannot write keyring file {}", path.display()))
}

/// Writes `PATH.tmp` (created afresh, mode 0600 as serf writes its keyring
/// and tags files: the keys are secrets), flushes it to disk, renames it
/// over `path`, then flushes the directory so the rename itself survives a
/// crash. A crash or a full disk mid-way leaves the old tags or keys whole.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    // A `.tmp` left by a crash may have any mode: never write into it.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod write_atomically_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("gossip-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn keyring_file_is_0600_and_replaced_whole() {
        let dir = scratch("keyring");
        let path = dir.join("keyring.json");
        // An existing keyring, readable by all, and a stale `.tmp` left by a
        // crash, also world-readable: neither mode may survive.
        std::fs::write(&path, b"[\"old\"]").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let tmp = dir.join("keyring.json.tmp");
        std::fs::write(&tmp, b"junk").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o666)).unwrap();
        let old_inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());

        let keys = vec![vec![1u8; 32], vec![2u8; 16]];
        save_keyring(&path, &keys).unwrap();

        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "keyring file mode"
        );
        // Replaced by a rename (a new inode), not rewritten in place.
        assert_ne!(std::os::unix::fs::MetadataExt::ino(&meta), old_inode);
        assert!(!tmp.exists(), "no temporary file left behind");
        let list: Vec<String> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(list, vec![b64.encode([1u8; 32]), b64.encode([2u8; 16])]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn failed_rename_leaves_no_temporary() {
        let dir = scratch("keyring-fail");
        // The target is a non-empty directory: the rename fails, the
        // temporary (which holds the keys) must not be left behind.
        let target = dir.join("keyring.json");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"x").unwrap();
        assert!(save_keyring(&target, &[vec![3u8; 16]]).is_err());
        assert!(
            !dir.join("keyring.json.tmp").exists(),
            "temporary removed on error"
        );
        assert_eq!(std::fs::read(target.join("x")).unwrap(), b"x");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        let tcp = TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind tcp {addr}"))?;
        let udp = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("bind udp {addr}"))?;
        return Ok((udp, tcp));
    }
    // Port 0: the same free port for TCP and UDP.
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
fn advertise_ip(bound: IpAddr) -> IpAddr {
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
    fn new() -> Self {
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

async fn push_pull(
    to: SocketAddr,
    bytes: Vec<u8>,
    keys: Vec<Vec<u8>>,
    budget: Arc<StreamBudget>,
) -> anyhow::Result<wire::Message> {
    let m = tokio::time::timeout(TCP_TIMEOUT, async {
        let mut s = TcpStream::connect(to)
            .await
            .with_context(|| format!("connect {to}"))?;
        s.write_all(&bytes).await.context("write")?;
        read_message(&mut s, &keys, &budget).await
    })
    .await
    .with_context(|| format!("push-pull with {to} timed out"))??;
    if let wire::Message::Err(e) = &m {
        anyhow::bail!("remote error from {to}: {e}");
    }
    Ok(m)
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

async fn udp_loop(weak: std::sync::Weak<Agent>, udp: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = udp.recv_from(&mut buf).await else {
            continue;
        };
        let Some(agent) = weak.upgrade() else { return };
        // Decrypt, decompress and decode before taking the state lock.
        let decoded = wire::decode_packet(&agent.keys(), &buf[..n]);
        if let Err(e) = &decoded {
            agent.warn_key_mismatch(from, false, e);
        }
        let outs = {
            let mut g = agent.inner.lock().expect("agent lock");
            let now = agent.now();
            g.serf.handle_decoded_packet(from, decoded, now);
            agent.collect(&mut g)
        };
        agent.perform(outs);
    }
}

async fn tcp_loop(weak: std::sync::Weak<Agent>, tcp: TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS));
    loop {
        let Ok((mut stream, from)) = tcp.accept().await else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closed at once: a peer opening connections cannot hold more
            // than MAX_STREAMS tasks and buffers.
            drop(stream);
            tracing::debug!(%from, limit = MAX_STREAMS, "too many streams, connection refused");
            if let Some(a) = weak.upgrade() {
                a.streams_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            continue;
        };
        let weak = weak.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let r = tokio::time::timeout(TCP_TIMEOUT, serve_stream(&weak, &mut stream, from)).await;
            let e = match r {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e,
                Err(_) => anyhow::anyhow!("stream not done within {TCP_TIMEOUT:?}"),
            };
            tracing::debug!(%from, error = %e, "bad tcp stream");
            if let Some(a) = weak.upgrade() {
                if let Some(w) = e.downcast_ref::<wire::WireError>() {
                    a.warn_key_mismatch(from, true, w);
                }
                a.streams_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
}

/// One incoming stream: a message in, the engine's reply (if any) out.
async fn serve_stream(
    weak: &std::sync::Weak<Agent>,
    stream: &mut TcpStream,
    from: SocketAddr,
) -> anyhow::Result<()> {
    let Some((keys, budget)) = weak.upgrade().map(|a| (a.keys(), a.stream_budget.clone())) else {
        return Ok(());
    };
    let m = read_message(stream, &keys, &budget).await?;
    let Some(agent) = weak.upgrade() else {
        return Ok(());
    };
    let (reply, outs) = {
        let mut g = agent.inner.lock().expect("agent lock");
        let now = agent.now();
        let r = g.serf.handle_stream(from, m, now);
        (r, agent.collect(&mut g))
    };
    agent.perform(outs);
    drop(agent);
    if let Some(r) = reply {
        stream.write_all(&r).await?;
        stream.shutdown().await?;
    }
    Ok(())
}

/// Ticks the engine every [`crate::core::Core::TICK`], and also exactly
/// when a gossip round is due.
async fn tick_loop(weak: std::sync::Weak<Agent>) {
    use tokio::time::Instant as TokioInstant;
    let tick = crate::core::Core::TICK;
    let mut next_tick = TokioInstant::now() + tick;
    // Only a tick moves the next gossip round: read it under the tick's lock.
    let mut gossip_at = {
        let Some(agent) = weak.upgrade() else { return };
        let g = agent.inner.lock().expect("agent lock");
        agent.start + g.serf.next_gossip_at()
    };
    loop {
        let floor = TokioInstant::now() + Duration::from_millis(1);
        let wake = next_tick.min(TokioInstant::from_std(gossip_at)).max(floor);
        tokio::time::sleep_until(wake).await;
        let now = TokioInstant::now();
        if now >= next_tick {
            next_tick += tick;
            if next_tick <= now {
                next_tick = now + tick;
            }
        }
        let Some(agent) = weak.upgrade() else { return };
        let outs = {
            let mut g = agent.inner.lock().expect("agent lock");
            let now = agent.now();
            g.serf.tick(now);
            gossip_at = agent.start + g.serf.next_gossip_at();
            agent.collect(&mut g)
        };
        agent.perform(outs);
    }
}

impl Agent {
    /// The TCP/UDP address the agent is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Resolves when this node lost a name-conflict vote, with the reason;
    /// the caller must stop the agent (as Serf shuts down then).
    pub async fn name_conflict_lost(&self) -> String {
        let mut rx = self.name_lost.subscribe();
        let why = rx
            .wait_for(|why| why.is_some())
            .await
            .map(|why| why.clone().unwrap_or_default());
        match why {
            Ok(why) => why,
            // The sender lives as long as the agent.
            Err(_) => std::future::pending().await,
        }
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn keys(&self) -> Vec<Vec<u8>> {
        self.inner.lock().expect("agent lock").serf.keys().to_vec()
    }

    /// A warning naming a peer whose keyring does not match ours, at most
    /// once per [`KEY_WARN_EVERY`] per peer and transport.
    fn warn_key_mismatch(&self, from: SocketAddr, stream: bool, e: &wire::WireError) {
        if !key_mismatch(e) {
            return;
        }
        let now = Instant::now();
        {
            let mut w = self.key_warned.lock().expect("key warnings");
            let key = (from.ip(), stream);
            if w.get(&key)
                .is_some_and(|t| now.duration_since(*t) < KEY_WARN_EVERY)
            {
                return;
            }
            if w.len() >= KEY_WARN_PEERS {
                w.retain(|_, t| now.duration_since(*t) < KEY_WARN_EVERY);
                if w.len() >= KEY_WARN_PEERS {
                    return;
                }
            }
            w.insert(key, now);
        }
        let what = if stream { "stream" } else { "packet" };
        tracing::warn!(
            %from,
            error = %e,
            "dropped a {what} from {from}: {e} (its keyring does not match ours); \
             the next from this address are not logged for {}s",
            KEY_WARN_EVERY.as_secs()
        );
    }

    /// Under the lock: publishes events and query replies, returns the I/O
    /// to perform once the lock is released.
    fn collect(&self, g: &mut Inner) -> Vec<Output> {
        if let Some(why) = g.serf.take_conflict_lost() {
            self.name_lost.send_replace(Some(why));
        }
        if g.serf.take_keys_changed() {
            if let Some(path) = &self.config.keyring_file {
                if let Err(e) = save_keyring(path, g.serf.keys()) {
                    tracing::error!(error = %e, "cannot save the keyring");
                }
            }
        }
        let events = g.serf.drain_events();
        if let Some(w) = &self.snap {
            let mut w = w.lock().expect("snapshot");
            w.members(
                events
                    .iter()
                    .filter_map(|e| match e {
                        Event::Member { kind, members } => Some((kind, members)),
                        _ => None,
                    })
                    .flat_map(|(kind, members)| {
                        members.iter().map(move |m| match kind {
                            model::MemberEventKind::Join | model::MemberEventKind::Update => {
                                snapshot::Change::Alive(&m.name, SocketAddr::new(m.addr, m.port))
                            }
                            _ => snapshot::Change::NotAlive(&m.name),
                        })
                    }),
            );
            w.clocks(g.serf.clocks());
        }
        for e in events {
            let mut early = self.early.lock().expect("early events");
            match early.as_mut() {
                // Nobody has subscribed yet: keep the events (self's
                // member-join above all) for the first subscriber.
                Some(buf) if self.events.receiver_count() == 0 => {
                    if buf.len() < EARLY_EVENTS {
                        buf.push(e);
                    }
                }
                _ => {
                    let _ = self.events.send(e);
                }
            }
        }
        for (id, r) in g.serf.drain_query_replies() {
            let done = r == QueryReply::Done;
            if let Some(tx) = g.queries.get(&id) {
                let _ = tx.try_send(r);
            }
            if done {
                g.queries.remove(&id);
            }
        }
        g.serf.drain_outputs()
    }

    fn perform(self: &Arc<Self>, outs: Vec<Output>) {
        for o in outs {
            match o {
                Output::Packet { to, bytes } => {
                    if let Err(e) = self.udp.try_send_to(&bytes, to) {
                        tracing::debug!(%to, error = %e, "udp send failed");
                    }
                }
                Output::PushPull { to, bytes, .. } => {
                    let weak = Arc::downgrade(self);
                    let keys = self.keys();
                    let budget = self.stream_budget.clone();
                    tokio::spawn(async move {
                        let r = push_pull(to, bytes, keys, budget).await;
                        let Some(agent) = weak.upgrade() else { return };
                        match r {
                            Ok(m) => {
                                agent.merge_reply(m);
                            }
                            Err(e) => tracing::debug!(%to, error = %e, "push-pull failed"),
                        }
                    });
                }
                Output::TcpPing { to, bytes } => {
                    let weak = Arc::downgrade(self);
                    let keys = self.keys();
                    let budget = self.stream_budget.clone();
                    tokio::spawn(async move {
                        // Within the probe interval: later answers are useless.
                        let r = tokio::time::timeout(Duration::from_secs(1), async {
                            let mut s = TcpStream::connect(to).await?;
                            s.write_all(&bytes).await?;
                            read_message(&mut s, &keys, &budget).await
                        })
                        .await;
                        let Some(agent) = weak.upgrade() else { return };
                        if let Ok(Ok(m)) = r {
                            let outs = {
                                let mut g = agent.inner.lock().expect("agent lock");
                                let now = agent.now();
                                g.serf.handle_tcp_ping_reply(m, now);
                                agent.collect(&mut g)
                            };
                            agent.perform(outs);
                        }
                    });
                }
                Output::Stream { to, bytes } => {
                    tokio::spawn(async move {
                        // The whole exchange within the stream deadline: a
                        // peer that stops reading does not hold the task.
                        let r = tokio::time::timeout(TCP_TIMEOUT, async {
                            let mut s = TcpStream::connect(to).await?;
                            s.write_all(&bytes).await?;
                            s.shutdown().await?;
                            anyhow::Ok(())
                        })
                        .await
                        .map_err(anyhow::Error::from)
                        .and_then(|r| r);
                        if let Err(e) = r {
                            tracing::debug!(%to, error = %e, "reliable send failed");
                        }
                    });
                }
            }
        }
    }

    fn merge_reply(self: &Arc<Self>, m: wire::Message) -> bool {
        let (ok, outs) = {
            let mut g = self.inner.lock().expect("agent lock");
            let now = self.now();
            let ok = g.serf.handle_push_pull_reply(m, now);
            (ok, self.collect(&mut g))
        };
        self.perform(outs);
        ok
    }

    fn with_serf<T>(self: &Arc<Self>, f: impl FnOnce(&mut Serf, Duration) -> T) -> T {
        let (r, outs) = {
            let mut g = self.inner.lock().expect("agent lock");
            let now = self.now();
            let r = f(&mut g.serf, now);
            (r, self.collect(&mut g))
        };
        self.perform(outs);
        r
    }

    async fn wait_broadcasts(self: &Arc<Self>, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let (pending, peers) = {
                let g = self.inner.lock().expect("agent lock");
                (g.serf.pending_broadcasts(), g.serf.alive_peers())
            };
            if pending == 0 || peers == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A keyring operation across the cluster, as Serf's key manager does
    /// it: an internal query every member (us included) answers; it ends
    /// when every alive member answered or the query times out. Failures
    /// are reported in the response (`num_err`, `messages`), not as `Err`.
    async fn key_query(&self, op: &str, key: &[u8]) -> anyhow::Result<KeyResponse> {
        let me = self.arc();
        let num_nodes = model::AgentHandle::members(self)
            .iter()
            .filter(|m| m.status == model::MemberStatus::Alive)
            .count();
        let mut rx = model::AgentHandle::query(
            &*me,
            QueryParams {
                name: format!("_serf_{op}"),
                payload: serf::encode_key_request(key),
                ..Default::default()
            },
        )
        .await?;
        let mut resp = KeyResponse {
            num_nodes,
            ..Default::default()
        };
        while let Some(r) = rx.recv().await {
            match r {
                QueryReply::Response { from, payload } => {
                    resp.num_resp += 1;
                    match serf::decode_key_response(&payload) {
                        None => {
                            resp.num_err += 1;
                            resp.messages
                                .insert(from, "Failed to decode key response".into());
                        }
                        Some(n) => {
                            if !n.result {
                                resp.num_err += 1;
                            }
                            if !n.message.is_empty() {
                                resp.messages.insert(from, n.message);
                            }
                            for k in n.keys {
                                *resp.keys.entry(k).or_default() += 1;
                            }
                        }
                    }
                    if resp.num_resp >= num_nodes {
                        break;
                    }
                }
                QueryReply::Done => break,
                QueryReply::Ack { .. } => {}
            }
        }
        Ok(resp)
    }

    /// `AgentHandle` takes `&self`; the helpers that spawn tasks want the Arc.
    fn arc(&self) -> Arc<Agent> {
        self.me.upgrade().expect("agent is alive while borrowed")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        for t in self.tasks.lock().expect("tasks").drain(..) {
            t.abort();
        }
    }
}

#[async_trait::async_trait]
impl model::AgentHandle for Agent {
    fn local_member(&self) -> Member {
        self.inner.lock().expect("agent lock").serf.local_member()
    }

    fn members(&self) -> Vec<Member> {
        self.inner.lock().expect("agent lock").serf.members()
    }

    async fn join(&self, existing: Vec<String>, replay: bool) -> anyhow::Result<usize> {
        let me = self.arc();
        let mut addrs = Vec::new();
        let mut errors = Vec::new();
        for s in &existing {
            match resolve(s).await {
                Ok(a) => addrs.extend(a),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        let keys = self.keys();
        let mut ok = 0;
        for a in addrs {
            let outs = me.with_serf(|s, _| {
                s.join(&[a], replay);
                s.drain_outputs()
            });
            for o in outs {
                match o {
                    Output::PushPull { to, bytes, .. } => {
                        match push_pull(to, bytes, keys.clone(), me.stream_budget.clone()).await {
                            Ok(m) => {
                                if me.merge_reply(m) {
                                    ok += 1;
                                }
                            }
                            Err(e) => errors.push(format!("{to}: {e:#}")),
                        }
                    }
                    other => me.perform(vec![other]),
                }
            }
        }
        if ok == 0 {
            anyhow::bail!("failed to join any of {existing:?}: {}", errors.join("; "));
        }
        me.with_serf(|s, _| s.joined());
        Ok(ok)
    }

    async fn leave(&self) -> anyhow::Result<()> {
        let me = self.arc();
        // The intent must reach a peer before the dead notice does: a peer
        // that hears of the death of a member it does not know is leaving
        // records a failure (Serf's rule). Serf waits for the intent to be
        // gossiped; when every live peer was sent it directly, a moment for
        // them to handle it is enough (gossip carries it on meanwhile).
        if me.with_serf(|s, now| s.leave_intent(now)) {
            tokio::time::sleep(INTENT_HEAD_START).await;
        } else {
            me.wait_broadcasts(self.config.broadcast_timeout).await;
        }
        me.with_serf(|s, now| s.leave_memberlist(now));
        me.wait_broadcasts(self.config.broadcast_timeout).await;
        // Serf's LeavePropagateDelay: let the dead notice spread.
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(w) = &self.snap {
            w.lock().expect("snapshot").leave();
        }
        Ok(())
    }

    async fn force_leave(&self, node: &str, prune: bool) -> anyhow::Result<()> {
        let me = self.arc();
        let found = me.with_serf(|s, now| s.force_leave(node, prune, now));
        anyhow::ensure!(found, "no member named {node:?}");
        Ok(())
    }

    async fn user_event(&self, name: &str, payload: Vec<u8>, coalesce: bool) -> anyhow::Result<()> {
        let me = self.arc();
        me.with_serf(|s, now| s.user_event(name, payload, coalesce, now))
    }

    async fn set_tags(
        &self,
        set: Vec<(String, String)>,
        delete: Vec<String>,
    ) -> anyhow::Result<()> {
        let me = self.arc();
        me.with_serf(|s, now| {
            let mut tags: Vec<(String, String)> = s.tags().to_vec();
            tags.retain(|(k, _)| !delete.contains(k));
            for (k, v) in set {
                match tags.iter_mut().find(|(kk, _)| *kk == k) {
                    Some(slot) => slot.1 = v,
                    None => tags.push((k, v)),
                }
            }
            s.set_tags(tags, now)
        })?;
        if let Some(path) = &self.config.tags_file {
            let tags = self.inner.lock().expect("agent lock").serf.tags().to_vec();
            save_tags(path, &tags)?;
        }
        Ok(())
    }

    async fn query(&self, params: QueryParams) -> anyhow::Result<mpsc::Receiver<QueryReply>> {
        let me = self.arc();
        let (tx, rx) = mpsc::channel(1024);
        let (id, outs) = {
            let mut g = me.inner.lock().expect("agent lock");
            let now = me.now();
            let id = g.serf.query(&params, now)?;
            g.queries.insert(id, tx);
            (id, me.collect(&mut g))
        };
        let _ = id;
        me.perform(outs);
        Ok(rx)
    }

    async fn respond(&self, id: u64, payload: Vec<u8>) -> anyhow::Result<()> {
        let me = self.arc();
        me.with_serf(|s, now| s.respond(id, payload, now))
    }

    /// The first subscription also gets the events emitted before it
    /// (since start); later ones only what comes after them.
    fn subscribe(&self) -> broadcast::Receiver<Event> {
        // The agent lock keeps `collect` from publishing in between.
        let _g = self.inner.lock().expect("agent lock");
        let rx = self.events.subscribe();
        if let Some(early) = self.early.lock().expect("early events").take() {
            for e in early {
                let _ = self.events.send(e);
            }
        }
        rx
    }

    fn handler_events_dropped(&self, n: u64) {
        self.handler_events_dropped
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn coordinate(&self, node: &str) -> Option<crate::coordinate::Coordinate> {
        let g = self.inner.lock().expect("agent state");
        g.serf.coordinate(node).cloned()
    }

    fn stats(&self) -> Stats {
        let g = self.inner.lock().expect("agent lock");
        let members = g.serf.members();
        let count = |st: model::MemberStatus| {
            members
                .iter()
                .filter(|m| m.status == st)
                .count()
                .to_string()
        };
        let (clock, ev, q) = g.serf.clocks();
        let (intents, events, queries) = g.serf.queue_depths();
        let c = &g.serf.core().counters;
        let mut stats = Stats::new();
        stats.insert(
            "agent".into(),
            [
                ("name".to_string(), self.config.node_name.clone()),
                (
                    "stream_buffer_peak_bytes".to_string(),
                    self.stream_budget.peak().to_string(),
                ),
                (
                    "handler_events_dropped".to_string(),
                    self.handler_events_dropped
                        .load(std::sync::atomic::Ordering::Relaxed)
                        .to_string(),
                ),
            ]
            .into_iter()
            .collect(),
        );
        let mut serf: Vec<(&str, String)> = vec![
            ("members", members.len().to_string()),
            ("failed", count(model::MemberStatus::Failed)),
            ("left", count(model::MemberStatus::Left)),
            ("member_time", clock.to_string()),
            ("event_time", ev.to_string()),
            ("query_time", q.to_string()),
            ("intent_queue", intents.to_string()),
            ("unknown_intents", g.serf.intents().0.to_string()),
            ("unknown_intents_dropped", g.serf.intents().1.to_string()),
            ("event_queue", events.to_string()),
            ("query_queue", queries.to_string()),
            ("encrypted", (!g.serf.keys().is_empty()).to_string()),
            ("health_score", g.serf.core().awareness().to_string()),
            ("packets_in", c.packets_in.to_string()),
            ("packets_dropped", c.packets_dropped.to_string()),
            ("packets_out", c.packets_out.to_string()),
            (
                "streams_dropped",
                self.streams_dropped
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .to_string(),
            ),
        ];
        // As serf: only when coordinates are kept.
        if let Some(resets) = g.serf.coordinate_resets() {
            serf.push(("coordinate_resets", resets.to_string()));
        }
        stats.insert(
            "serf".into(),
            serf.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        );
        stats
    }

    async fn install_key(&self, key: Vec<u8>) -> anyhow::Result<KeyResponse> {
        anyhow::ensure!(
            matches!(key.len(), 16 | 24 | 32),
            "key must be 16, 24 or 32 bytes, got {}",
            key.len()
        );
        self.key_query("install-key", &key).await
    }

    async fn use_key(&self, key: Vec<u8>) -> anyhow::Result<KeyResponse> {
        self.key_query("use-key", &key).await
    }

    async fn remove_key(&self, key: Vec<u8>) -> anyhow::Result<KeyResponse> {
        self.key_query("remove-key", &key).await
    }

    async fn list_keys(&self) -> anyhow::Result<KeyResponse> {
        self.key_query("list-keys", &[]).await
    }

    async fn shutdown(&self) -> anyhow::Result<()> {
        for t in self.tasks.lock().expect("tasks").drain(..) {
            t.abort();
        }
        Ok(())
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
