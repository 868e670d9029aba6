//! The agent's one actor: the task that owns the protocol state
//! ([`Serf`]) and runs one `select!` over datagrams, stream connections
//! and the messages they carry, finished network exchanges, the handle's
//! [`Command`]s and the core's next deadline. After every input it
//! settles: file writes to the disk thread, a fresh [`View`], events and
//! query replies out, the core's outputs performed (datagrams sent at
//! once, stream exchanges on tasks of their own), then the answers.
//!
//! Nothing else touches the state, and the actor never waits on the
//! network or the disk: a slow peer holds one stream task, a slow disk
//! the disk thread.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use super::disk::{Disk, Job};
use super::net::{self, Incoming, KeyWarnings, StreamBudget, StreamCtx, MAX_STREAMS};
use super::view::{Events, View};
use crate::core::Output;
use crate::model::{Event, MemberEventKind, QueryParams, QueryReply};
use crate::serf::Serf;
use crate::wire;

/// The outcome of a file write the caller may wait for.
pub(super) type Written = oneshot::Receiver<anyhow::Result<()>>;

/// What the handle asks of the actor; each answers on its `reply`.
pub(super) enum Command {
    /// Start a join through `addr`: the push-pulls (address, bytes) the
    /// caller runs, then hands back as [`Command::JoinReply`].
    Join {
        addr: SocketAddr,
        replay: bool,
        reply: oneshot::Sender<Vec<(SocketAddr, Vec<u8>)>>,
    },
    /// A join's push-pull answer: merged or not.
    JoinReply {
        msg: wire::Message,
        reply: oneshot::Sender<bool>,
    },
    /// At least one join went through: announce ours.
    Joined { reply: oneshot::Sender<()> },
    /// A graceful leave's intent: true when every live peer was sent it.
    LeaveIntent { reply: oneshot::Sender<bool> },
    /// A graceful leave's dead notice.
    LeaveMemberlist { reply: oneshot::Sender<()> },
    /// The leave's snapshot line; `done` once it is written.
    SnapshotLeave { done: oneshot::Sender<()> },
    ForceLeave {
        node: String,
        prune: bool,
        reply: oneshot::Sender<bool>,
    },
    UserEvent {
        name: String,
        payload: Vec<u8>,
        coalesce: bool,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    /// Tags set and deleted; with a tags file, its write to wait for.
    SetTags {
        set: Vec<(String, String)>,
        delete: Vec<String>,
        reply: oneshot::Sender<anyhow::Result<Option<Written>>>,
    },
    /// A query whose replies go to `replies`.
    Query {
        params: QueryParams,
        replies: mpsc::Sender<QueryReply>,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    Respond {
        id: u64,
        payload: Vec<u8>,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    /// Stop: sockets closed, exchanges cut, file writes flushed, then `done`.
    Shutdown { done: oneshot::Sender<()> },
}

/// What the actor publishes, for the handle to read.
pub(super) struct Readers {
    pub commands: mpsc::Sender<Command>,
    pub view: watch::Receiver<Arc<View>>,
    /// The keyring, for the handle's own push-pulls (joins).
    pub keys: watch::Receiver<Arc<Vec<Vec<u8>>>>,
    pub events: Arc<Events>,
    pub name_lost: watch::Receiver<Option<String>>,
}

/// What the actor starts with.
pub(super) struct Parts {
    pub serf: Serf,
    /// Time zero of the core's clock.
    pub start: Instant,
    pub udp: UdpSocket,
    pub tcp: TcpListener,
    pub budget: Arc<StreamBudget>,
    pub disk: Disk,
    pub snapshot: bool,
    pub tags_file: bool,
}

/// Commands queued before a sender waits.
const COMMAND_QUEUE: usize = 64;
/// Datagrams taken in one go (already waiting in the socket) before the
/// actor settles.
const PACKET_BATCH: usize = 32;
/// Never sleep less than this: a deadline the core keeps in the past
/// cannot spin the actor.
const MIN_SLEEP: Duration = Duration::from_millis(1);

/// Starts the actor on its own task.
pub(super) fn spawn(parts: Parts) -> Readers {
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (incoming_tx, incoming_rx) = mpsc::channel(MAX_STREAMS);
    let keys = Arc::new(parts.serf.keys().to_vec());
    let view = watch::channel(Arc::new(View::of(&parts.serf, None, 0, 0))).0;
    let actor = Actor {
        keys: watch::channel(keys).0,
        view,
        events: Arc::new(Events::new()),
        name_lost: watch::channel(None).0,
        snapshot_clocks: parts.snapshot.then(|| parts.serf.clocks()),
        serf: parts.serf,
        start: parts.start,
        udp: parts.udp,
        tcp: parts.tcp,
        budget: parts.budget,
        disk: parts.disk,
        tags_file: parts.tags_file,
        incoming_tx,
        incoming_rx,
        streams: JoinSet::new(),
        exchanges: JoinSet::new(),
        queries: HashMap::new(),
        key_warnings: KeyWarnings::default(),
        streams_dropped: 0,
        timer_wakeups: 0,
        answers: Vec::new(),
    };
    let readers = Readers {
        commands,
        view: actor.view.subscribe(),
        keys: actor.keys.subscribe(),
        events: actor.events.clone(),
        name_lost: actor.name_lost.subscribe(),
    };
    tokio::spawn(actor.run(command_rx));
    readers
}

/// An outgoing stream exchange, finished.
enum Exchange {
    PushPull {
        to: SocketAddr,
        result: anyhow::Result<wire::Message>,
    },
    TcpPing(anyhow::Result<wire::Message>),
    Sent {
        to: SocketAddr,
        result: anyhow::Result<()>,
    },
}

struct Actor {
    serf: Serf,
    start: Instant,
    udp: UdpSocket,
    tcp: TcpListener,
    /// Incoming streams hand their message to the actor here.
    incoming_tx: mpsc::Sender<Incoming>,
    incoming_rx: mpsc::Receiver<Incoming>,
    /// Incoming stream tasks (at most [`MAX_STREAMS`]); aborted with the actor.
    streams: JoinSet<(SocketAddr, anyhow::Result<()>)>,
    /// Our own push-pulls, TCP pings and reliable sends.
    exchanges: JoinSet<Exchange>,
    budget: Arc<StreamBudget>,
    /// Where the replies to our queries go, by query id.
    queries: HashMap<u64, mpsc::Sender<QueryReply>>,
    key_warnings: KeyWarnings,
    streams_dropped: u64,
    /// Times the actor woke for the core's deadline (not for an input).
    timer_wakeups: u64,
    disk: Disk,
    /// The clocks last written to the snapshot (None: no snapshot).
    snapshot_clocks: Option<(u64, u64, u64)>,
    tags_file: bool,
    view: watch::Sender<Arc<View>>,
    keys: watch::Sender<Arc<Vec<Vec<u8>>>>,
    events: Arc<Events>,
    name_lost: watch::Sender<Option<String>>,
    /// Answers to send once the input that produced them is settled.
    answers: Vec<Box<dyn FnOnce() + Send>>,
}

impl Actor {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; 65536];
        let wake = tokio::time::sleep_until(self.next_wake());
        tokio::pin!(wake);
        let done = loop {
            tokio::select! {
                r = self.udp.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        self.packet(from, &buf[..n]);
                        self.more_packets(&mut buf);
                    }
                    Err(e) => tracing::debug!(error = %e, "udp receive failed"),
                },
                r = self.tcp.accept() => match r {
                    Ok((stream, from)) => self.accept(stream, from),
                    Err(e) => tracing::debug!(error = %e, "tcp accept failed"),
                },
                Some(m) = self.incoming_rx.recv() => self.incoming(m),
                Some(r) = self.streams.join_next(), if !self.streams.is_empty() => {
                    self.stream_done(r)
                }
                Some(r) = self.exchanges.join_next(), if !self.exchanges.is_empty() => {
                    self.exchange_done(r)
                }
                c = commands.recv() => match c {
                    None => break None,
                    Some(Command::Shutdown { done }) => break Some(done),
                    Some(c) => self.command(c),
                },
                () = &mut wake => self.timer_wakeups += 1,
            }
            let now = self.now();
            if self.serf.next_deadline() <= now {
                self.serf.tick(now);
            }
            self.settle();
            let next = self.next_wake();
            if next != wake.deadline() {
                wake.as_mut().reset(next);
            }
        };
        // The sockets close and the exchanges are cut here; the queued
        // file writes are flushed before the stop is answered.
        let Actor { disk, .. } = self;
        disk.finish().await;
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.start)
    }

    /// When the core next has something to do (read again after every
    /// input: a packet or a command may bring it forward).
    fn next_wake(&self) -> Instant {
        let now = self.now();
        self.start + self.serf.next_deadline().max(now + MIN_SLEEP)
    }

    /// One datagram, decrypted, decompressed and decoded here.
    fn packet(&mut self, from: SocketAddr, bytes: &[u8]) {
        let decoded = wire::decode_packet(self.serf.keys(), bytes);
        if let Err(e) = &decoded {
            self.key_warnings.warn(from, false, e);
        }
        let now = self.now();
        self.serf.handle_decoded_packet(from, decoded, now);
    }

    /// The datagrams already waiting, up to [`PACKET_BATCH`], settled once.
    fn more_packets(&mut self, buf: &mut [u8]) {
        for _ in 1..PACKET_BATCH {
            match self.udp.try_recv_from(buf) {
                Ok((n, from)) => self.packet(from, &buf[..n]),
                Err(_) => return,
            }
        }
    }

    /// A new stream connection: served on a task of its own, or closed at
    /// once when [`MAX_STREAMS`] are being served (a peer opening
    /// connections cannot hold more tasks and buffers than that).
    fn accept(&mut self, stream: TcpStream, from: SocketAddr) {
        if self.streams.len() >= MAX_STREAMS {
            drop(stream);
            tracing::debug!(%from, limit = MAX_STREAMS, "too many streams, connection refused");
            self.streams_dropped += 1;
            return;
        }
        let (ctx, tx) = (self.stream_ctx(), self.incoming_tx.clone());
        self.streams.spawn(async move {
            let r = net::serve_stream(stream, from, ctx, tx).await;
            (from, r)
        });
    }

    /// The message an incoming stream carried; its answer goes back to
    /// the stream's task.
    fn incoming(&mut self, m: Incoming) {
        let now = self.now();
        let r = self.serf.handle_stream(m.from, m.msg, now);
        self.answer(m.reply, r);
    }

    fn stream_done(&mut self, r: Result<(SocketAddr, anyhow::Result<()>), JoinError>) {
        let (from, e) = match r {
            Ok((_, Ok(()))) => return,
            Ok((from, Err(e))) => (from, e),
            Err(e) => {
                tracing::error!(error = %e, "a stream task failed");
                self.streams_dropped += 1;
                return;
            }
        };
        tracing::debug!(%from, error = %e, "bad tcp stream");
        if let Some(w) = e.downcast_ref::<wire::WireError>() {
            self.key_warnings.warn(from, true, w);
        }
        self.streams_dropped += 1;
    }

    fn exchange_done(&mut self, r: Result<Exchange, JoinError>) {
        let now = self.now();
        match r {
            Ok(Exchange::PushPull { result: Ok(m), .. }) => {
                self.serf.handle_push_pull_reply(m, now);
            }
            Ok(Exchange::PushPull { to, result: Err(e) }) => {
                tracing::debug!(%to, error = %e, "push-pull failed")
            }
            Ok(Exchange::TcpPing(Ok(m))) => self.serf.handle_tcp_ping_reply(m, now),
            // A probe whose TCP fallback failed is decided by the probe.
            Ok(Exchange::TcpPing(Err(_))) => {}
            Ok(Exchange::Sent { result: Ok(()), .. }) => {}
            Ok(Exchange::Sent { to, result: Err(e) }) => {
                tracing::debug!(%to, error = %e, "reliable send failed")
            }
            Err(e) => tracing::error!(error = %e, "a stream exchange task failed"),
        }
    }

    fn command(&mut self, c: Command) {
        let now = self.now();
        match c {
            Command::Join {
                addr,
                replay,
                reply,
            } => {
                self.serf.join(&[addr], replay);
                let mut pulls = Vec::new();
                for o in self.serf.drain_outputs() {
                    match o {
                        Output::PushPull { to, bytes, .. } => pulls.push((to, bytes)),
                        other => self.perform(other),
                    }
                }
                self.answer(reply, pulls);
            }
            Command::JoinReply { msg, reply } => {
                let ok = self.serf.handle_push_pull_reply(msg, now);
                self.answer(reply, ok);
            }
            Command::Joined { reply } => {
                self.serf.joined();
                self.answer(reply, ());
            }
            Command::LeaveIntent { reply } => {
                let direct = self.serf.leave_intent(now);
                self.answer(reply, direct);
            }
            Command::LeaveMemberlist { reply } => {
                self.serf.leave_memberlist(now);
                self.answer(reply, ());
            }
            Command::SnapshotLeave { done } => self.disk.send(Job::SnapshotLeave { done }),
            Command::ForceLeave { node, prune, reply } => {
                let found = self.serf.force_leave(&node, prune, now);
                self.answer(reply, found);
            }
            Command::UserEvent {
                name,
                payload,
                coalesce,
                reply,
            } => {
                let r = self.serf.user_event(&name, payload, coalesce, now);
                self.answer(reply, r);
            }
            Command::SetTags { set, delete, reply } => {
                let r = self.set_tags(set, delete, now);
                self.answer(reply, r);
            }
            Command::Query {
                params,
                replies,
                reply,
            } => {
                let r = self.serf.query(&params, now).map(|id| {
                    self.queries.insert(id, replies);
                });
                self.answer(reply, r);
            }
            Command::Respond { id, payload, reply } => {
                let r = self.serf.respond(id, payload, now);
                self.answer(reply, r);
            }
            Command::Shutdown { .. } => unreachable!("handled by the loop"),
        }
    }

    fn set_tags(
        &mut self,
        set: Vec<(String, String)>,
        delete: Vec<String>,
        now: Duration,
    ) -> anyhow::Result<Option<Written>> {
        let mut tags: Vec<(String, String)> = self.serf.tags().to_vec();
        tags.retain(|(k, _)| !delete.contains(k));
        for (k, v) in set {
            match tags.iter_mut().find(|(kk, _)| *kk == k) {
                Some(slot) => slot.1 = v,
                None => tags.push((k, v)),
            }
        }
        self.serf.set_tags(tags, now)?;
        if !self.tags_file {
            return Ok(None);
        }
        let (done, written) = oneshot::channel();
        self.disk.send(Job::Tags {
            tags: self.serf.tags().to_vec(),
            done,
        });
        Ok(Some(written))
    }

    /// Queues `v` for `reply`, sent when the input is settled (the view
    /// already shows its effect).
    fn answer<T: Send + 'static>(&mut self, reply: oneshot::Sender<T>, v: T) {
        self.answers.push(Box::new(move || {
            let _ = reply.send(v);
        }));
    }

    /// After an input: everything it caused goes out, in order.
    fn settle(&mut self) {
        if let Some(why) = self.serf.take_conflict_lost() {
            self.name_lost.send_replace(Some(why));
        }
        if self.serf.take_keys_changed() {
            let keys = self.serf.keys().to_vec();
            self.disk.send(Job::Keyring(keys.clone()));
            self.keys.send_replace(Arc::new(keys));
        }
        let events = self.serf.drain_events();
        self.snapshot(&events);
        let prev = self.view.borrow().clone();
        self.view.send_replace(Arc::new(View::of(
            &self.serf,
            Some(&prev),
            self.streams_dropped,
            self.timer_wakeups,
        )));
        self.events.publish(events);
        for (id, r) in self.serf.drain_query_replies() {
            let done = r == QueryReply::Done;
            if let Some(tx) = self.queries.get(&id) {
                let _ = tx.try_send(r);
            }
            if done {
                self.queries.remove(&id);
            }
        }
        for o in self.serf.drain_outputs() {
            self.perform(o);
        }
        for a in self.answers.drain(..) {
            a();
        }
    }

    /// Member changes and clock moves, for the snapshot file.
    fn snapshot(&mut self, events: &[Event]) {
        let Some(last) = &mut self.snapshot_clocks else {
            return;
        };
        let changes: Vec<(String, Option<SocketAddr>)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Member { kind, members } => Some((kind, members)),
                _ => None,
            })
            .flat_map(|(kind, members)| {
                members.iter().map(move |m| {
                    let alive = matches!(kind, MemberEventKind::Join | MemberEventKind::Update);
                    (
                        m.name.clone(),
                        alive.then(|| SocketAddr::new(m.addr, m.port)),
                    )
                })
            })
            .collect();
        let clocks = self.serf.clocks();
        if changes.is_empty() && clocks == *last {
            return;
        }
        *last = clocks;
        self.disk.send(Job::Snapshot { changes, clocks });
    }

    /// The keyring as it stands and the shared budget, for a new stream.
    fn stream_ctx(&self) -> StreamCtx {
        StreamCtx::new(&self.keys.borrow(), &self.budget)
    }

    /// Does what the core asked: a datagram at once (dropped if the socket
    /// buffer is full), a stream exchange on a task of its own.
    fn perform(&mut self, o: Output) {
        match o {
            Output::Packet { to, bytes } => {
                if let Err(e) = self.udp.try_send_to(&bytes, to) {
                    tracing::debug!(%to, error = %e, "udp send failed");
                }
            }
            Output::PushPull { to, bytes, .. } => {
                let ctx = self.stream_ctx();
                self.exchanges.spawn(async move {
                    let result = net::push_pull(to, bytes, ctx).await;
                    Exchange::PushPull { to, result }
                });
            }
            Output::TcpPing { to, bytes } => {
                let ctx = self.stream_ctx();
                self.exchanges
                    .spawn(async move { Exchange::TcpPing(net::tcp_ping(to, bytes, ctx).await) });
            }
            Output::Stream { to, bytes } => {
                self.exchanges.spawn(async move {
                    let result = net::send_reliable(to, bytes).await;
                    Exchange::Sent { to, result }
                });
            }
        }
    }
}
