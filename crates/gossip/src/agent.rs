//! The tokio host around [`crate::serf::Serf`]: [`start`] binds the UDP and
//! TCP sockets on the bind address, loads the files (keyring, tags,
//! snapshot), starts the actor, joins `join` (DNS names too, every
//! resolved address, default port 7946) and keeps retrying `retry_join`;
//! [`Agent`] is the handle the front ends hold ([`model::AgentHandle`]).
//!
//! One task, the actor (`actor.rs`), owns the protocol state and runs one
//! `select!` over datagrams, stream connections, the handle's commands and
//! the core's next deadline; it sleeps until something is due. All
//! protocol decisions live in the sans-IO layers; the host only moves
//! bytes: datagrams to `Serf::handle_decoded_packet`, one message per
//! incoming TCP stream to `Serf::handle_stream` (reply written back), and
//! the `Output`s the engine asks for (datagrams, push-pull exchanges,
//! reliable user messages, TCP pings) on tasks of their own (`net.rs`).
//! Events go out on a broadcast channel in the order the engine emitted
//! them (member events already coalesced); reads answer from the view the
//! actor publishes after every input (`view.rs`).
//!
//! Keyring operations (`install_key` ...) run across the cluster through
//! Serf's internal `_serf_*-key` queries, like `serf keys`. The keyring
//! and tags files are read at start (`config.rs`) and rewritten when they
//! change, by the disk thread (`disk.rs`), which also keeps `-snapshot`
//! (serf's snapshot file, see [`snapshot`]); `-rejoin` rejoins the members
//! it lists.
//!
//! Not implemented: `-replay` of events older than the join is best effort (the
//! events in the remote's push-pull buffer).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

mod actor;
mod config;
mod disk;
mod handle;
mod net;
pub mod snapshot;
mod view;

pub use net::{resolve, StreamBudget, DEFAULT_PORT, STREAM_BUFFER_BUDGET};

use crate::model::{self, AgentConfig};
use crate::serf::Serf;

/// A running agent: the handle to its actor.
pub struct Agent {
    commands: mpsc::Sender<actor::Command>,
    view: watch::Receiver<Arc<view::View>>,
    keys: watch::Receiver<Arc<Vec<Vec<u8>>>>,
    events: Arc<view::Events>,
    /// The room all stream buffers share (the actor's streams and the
    /// handle's join push-pulls).
    budget: Arc<StreamBudget>,
    /// Events the event handlers never saw: their queue was full.
    handler_events_dropped: AtomicU64,
    /// Set once another node won the vote for our name.
    name_lost: watch::Receiver<Option<String>>,
    local_addr: SocketAddr,
    config: AgentConfig,
    retry_join: OnceLock<tokio::task::AbortHandle>,
}

/// Starts an agent: binds its sockets, starts its actor, joins
/// `config.join` (failing if none answers) and starts `retry_join`.
pub async fn start(config: AgentConfig) -> anyhow::Result<Arc<Agent>> {
    let (udp, tcp) = net::bind(config.bind).await?;
    let local_addr = tcp.local_addr()?;
    let advertise = match config.advertise {
        Some(a) if a.port() == 0 => SocketAddr::new(a.ip(), local_addr.port()),
        Some(a) => a,
        None => SocketAddr::new(net::advertise_ip(local_addr.ip()), local_addr.port()),
    };
    let scfg = config::serf_config(&config, advertise)?;
    // Read before anything happens, so an unusable snapshot stops the start
    // before the first member event.
    let previous = match &config.snapshot {
        Some(path) => Some((path, snapshot::load(path, config.rejoin)?)),
        None => None,
    };
    let start = tokio::time::Instant::now();
    // AES-GCM nonces from the OS's CSPRNG (the core's own PRNG is seeded,
    // for the simulator; nonces must never repeat).
    let nonces = Box::new(<rand::rngs::StdRng as rand::SeedableRng>::from_os_rng());
    let mut serf = Serf::new(scfg, Duration::ZERO, nonces);
    let mut rejoin_addrs = Vec::new();
    let writer = match previous {
        Some((path, prev)) => {
            serf.restore_clocks(prev.clock, prev.event_clock, prev.query_clock);
            // Serf rejoins whom the snapshot lists: after a crash always,
            // after a leave only with -rejoin (the leave forgot them
            // otherwise).
            rejoin_addrs = prev
                .alive
                .iter()
                .filter(|(n, _)| **n != config.node_name)
                .map(|(_, a)| a.clone())
                .collect();
            Some(
                snapshot::Writer::new(path.clone(), &prev, serf.clocks())
                    .rejoin_after_leave(config.rejoin),
            )
        }
        None => None,
    };
    let disk = disk::Disk::start(disk::Files {
        snapshot: writer,
        keyring: config.keyring_file.clone(),
        tags: config.tags_file.clone(),
    })?;
    let budget = Arc::new(StreamBudget::new());
    let readers = actor::spawn(actor::Parts {
        serf,
        start,
        udp,
        tcp,
        budget: budget.clone(),
        disk,
        snapshot: config.snapshot.is_some(),
        tags_file: config.tags_file.is_some(),
    });
    let agent = Arc::new(Agent {
        commands: readers.commands,
        view: readers.view,
        keys: readers.keys,
        events: readers.events,
        budget,
        handler_events_dropped: AtomicU64::new(0),
        name_lost: readers.name_lost,
        local_addr,
        config: config.clone(),
        retry_join: OnceLock::new(),
    });
    tracing::info!(node = %config.node_name, bind = %local_addr, %advertise, "agent started");
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
        let task = tokio::spawn(retry_join(Arc::downgrade(&agent)));
        let _ = agent.retry_join.set(task.abort_handle());
    }
    Ok(agent)
}

/// `retry_join`: joins until one attempt succeeds or `retry_max` failed.
/// Backoff: quick first retries (the seed may be seconds away), doubling
/// up to the configured interval.
async fn retry_join(weak: std::sync::Weak<Agent>) {
    let (addrs, interval, max, replay) = {
        let Some(a) = weak.upgrade() else { return };
        (
            a.config.retry_join.clone(),
            a.config.retry_interval.max(Duration::from_millis(100)),
            a.config.retry_max,
            a.config.replay,
        )
    };
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
}

impl Agent {
    /// The TCP/UDP address the agent is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Resolves when this node lost a name-conflict vote, with the reason;
    /// the caller must stop the agent (as Serf shuts down then).
    pub async fn name_conflict_lost(&self) -> String {
        let mut rx = self.name_lost.clone();
        let why = rx
            .wait_for(|why| why.is_some())
            .await
            .map(|why| why.clone().unwrap_or_default());
        match why {
            Ok(why) => why,
            // The actor stopped without losing its name.
            Err(_) => std::future::pending().await,
        }
    }

    fn stop_retry_join(&self) {
        if let Some(t) = self.retry_join.get() {
            t.abort();
        }
    }
}

impl Drop for Agent {
    /// The actor stops once its last handle is gone (its command channel
    /// closes); the retry-join is stopped here.
    fn drop(&mut self) {
        self.stop_retry_join();
    }
}
