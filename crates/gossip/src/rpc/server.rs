//! The RPC server: Serf's IPC commands answered from a
//! [`crate::model::AgentHandle`], one task per connection plus one per
//! stream, monitor or query, all writing through the connection's single
//! writer so records never interleave.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, Notify};
use tokio::task::JoinHandle;

use super::codec::{self, ValueReader};
use super::errors;
use super::monitor::{self, LogLevel};
use super::msg::{self, Command};
use crate::handler::{any_matches, EventFilter};
use crate::model::{AgentHandle, Event, KeyResponse, QueryReply};

/// Records queued for one slow client before new ones are dropped (Serf
/// drops too, with a warning).
const OUT_QUEUE: usize = 4096;
/// Query ids remembered per connection for `respond`.
const MAX_PENDING_QUERIES: usize = 4096;

/// Options beyond the agent and the key.
#[derive(Default, Clone)]
pub struct ServeOptions {
    /// `auth` key; None or empty: no authentication.
    pub auth_key: Option<String>,
    /// Notified after an RPC `leave` has left and shut the agent down, so
    /// the process running the agent can exit as Serf's does.
    pub on_leave: Option<Arc<Notify>>,
}

/// Serves Serf's RPC on `listener` until the task is dropped or aborted.
pub async fn serve<A: AgentHandle + ?Sized>(
    listener: TcpListener,
    agent: Arc<A>,
    auth_key: Option<String>,
) {
    serve_with(
        listener,
        agent,
        ServeOptions {
            auth_key,
            on_leave: None,
        },
    )
    .await
}

/// [`serve`] with [`ServeOptions`].
pub async fn serve_with<A: AgentHandle + ?Sized>(
    listener: TcpListener,
    agent: Arc<A>,
    opts: ServeOptions,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tracing::info!(target: "agent.ipc", "Accepted client: {peer}");
                tokio::spawn(Conn::run(agent.clone(), opts.clone(), stream));
            }
            Err(e) => {
                tracing::error!(target: "agent.ipc", "Failed to accept client: {e}");
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

struct Conn<A: ?Sized> {
    agent: Arc<A>,
    opts: ServeOptions,
    out: mpsc::Sender<Vec<u8>>,
    version: u64,
    authed: bool,
    streams: HashMap<u64, JoinHandle<()>>,
    monitor: Option<(u64, JoinHandle<()>)>,
    /// Ids of queries shown to this client, so `respond` can refuse others
    /// with Serf's message.
    queries: Arc<Mutex<VecDeque<u64>>>,
}

impl<A: AgentHandle + ?Sized> Conn<A> {
    /// Serves one connection until the peer goes away.
    async fn run(agent: Arc<A>, opts: ServeOptions, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let (out, mut rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
        let writer = tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if wr.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let mut conn = Conn {
            agent,
            opts,
            out,
            version: 0,
            authed: false,
            streams: HashMap::new(),
            monitor: None,
            queries: Arc::default(),
        };
        let mut reader = ValueReader::new(rd);
        loop {
            let header: msg::RequestHeader = match reader.next().await {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(target: "agent.ipc", "failed to decode request header: {e}");
                    break;
                }
            };
            let command = Command::parse(&header.command);
            let body = match command {
                Some(c) if c.request_has_body() => match reader.next_raw().await {
                    Ok(Some(b)) => Body(Some(b)),
                    _ => break,
                },
                _ => Body(None),
            };
            if conn.handle(&header, command, body).await.is_err() {
                break;
            }
        }
        for (_, task) in conn.streams.drain() {
            task.abort();
        }
        if let Some((_, task)) = conn.monitor.take() {
            task.abort();
        }
        drop(conn);
        let _ = writer.await;
    }

    /// Answers with a header and, for commands that have one, a body.
    async fn reply<B: Serialize>(&self, seq: u64, error: &str, body: Option<&B>) {
        let _ = self.out.send(response(seq, error, body)).await;
    }

    /// Answers with a header alone.
    async fn reply_bare(&self, seq: u64, error: &str) {
        self.reply(seq, error, None::<&()>).await
    }

    /// Handles one request (`command`: the header's, when known); `Err`
    /// closes the connection (as Serf does after a missing handshake or an
    /// unknown command, and as this server does on a body that does not
    /// decode).
    async fn handle(
        &mut self,
        header: &msg::RequestHeader,
        command: Option<Command>,
        body: Body,
    ) -> Result<(), Closed> {
        let seq = header.seq;
        if command != Some(Command::Handshake) && self.version == 0 {
            self.reply_bare(seq, errors::HANDSHAKE_REQUIRED).await;
            return Err(Closed);
        }
        let key = self.opts.auth_key.as_deref().unwrap_or("");
        if !key.is_empty()
            && !self.authed
            && command != Some(Command::Auth)
            && command != Some(Command::Handshake)
        {
            tracing::warn!(target: "agent.ipc", "Client sending commands before auth");
            self.reply_bare(seq, errors::AUTH_REQUIRED).await;
            return Ok(());
        }
        let Some(command) = command else {
            let name = &header.command;
            tracing::error!(target: "agent.ipc", "command '{name}' not recognized");
            self.reply_bare(seq, errors::UNSUPPORTED_COMMAND).await;
            return Err(Closed);
        };
        match command {
            Command::Handshake => {
                let v = body.decode::<msg::HandshakeRequest>(command)?.version;
                let err = if v != 1 {
                    errors::UNSUPPORTED_IPC_VERSION
                } else if self.version != 0 {
                    errors::DUPLICATE_HANDSHAKE
                } else {
                    self.version = v;
                    ""
                };
                self.reply_bare(seq, err).await;
            }
            Command::Auth => {
                let err = if body.decode::<msg::AuthRequest>(command)?.auth_key == key {
                    self.authed = true;
                    ""
                } else {
                    errors::INVALID_AUTH_TOKEN
                };
                self.reply_bare(seq, err).await;
            }
            Command::Event => {
                let req: msg::EventRequest = body.decode(command)?;
                let r = self
                    .agent
                    .user_event(&req.name, req.payload, req.coalesce)
                    .await;
                self.reply_bare(seq, &err_text(r)).await;
            }
            Command::ForceLeave => {
                let req: msg::ForceLeaveRequest = body.decode(command)?;
                let r = self.agent.force_leave(&req.node, req.prune).await;
                self.reply_bare(seq, &err_text(r.map(|_| ()))).await;
            }
            Command::Join => {
                let req: msg::JoinRequest = body.decode(command)?;
                let r = self.agent.join(req.existing, req.replay).await;
                let (num, err) = match r {
                    Ok(n) => (n, String::new()),
                    Err(e) => (0, format!("{e:#}")),
                };
                let resp = msg::JoinResponse {
                    num: num.min(i32::MAX as usize) as u64,
                };
                self.reply(seq, &err, Some(&resp)).await;
            }
            Command::Members => {
                let members = self.agent.members();
                let resp = msg::MembersResponse::new(&members);
                self.reply(seq, "", Some(&resp)).await;
            }
            Command::MembersFiltered => {
                let req: msg::MembersFilteredRequest = body.decode(command)?;
                let (members, err) = match filter_members(self.agent.members(), &req) {
                    Ok(m) => (m, String::new()),
                    Err(e) => (Vec::new(), e),
                };
                let resp = msg::MembersResponse::new(&members);
                self.reply(seq, &err, Some(&resp)).await;
            }
            Command::Stream => self.handle_stream(seq, body.decode(command)?).await,
            Command::Monitor => self.handle_monitor(seq, body.decode(command)?).await,
            Command::Stop => {
                let target = body.decode::<msg::StopRequest>(command)?.stop;
                if let Some(task) = self.streams.remove(&target) {
                    task.abort();
                }
                if self.monitor.as_ref().is_some_and(|(s, _)| *s == target) {
                    if let Some((_, task)) = self.monitor.take() {
                        task.abort();
                    }
                }
                self.reply_bare(seq, "").await;
            }
            Command::Leave => {
                tracing::info!(target: "agent.ipc", "Graceful leave triggered");
                let r = self.agent.leave().await;
                if let Err(e) = &r {
                    tracing::error!(target: "agent.ipc", "leave failed: {e:#}");
                }
                self.reply_bare(seq, &err_text(r)).await;
                if let Err(e) = self.agent.shutdown().await {
                    tracing::error!(target: "agent.ipc", "shutdown failed: {e:#}");
                }
                if let Some(n) = &self.opts.on_leave {
                    n.notify_one();
                }
            }
            Command::Tags => {
                let req: msg::TagsRequest = body.decode(command)?;
                let r = self.agent.set_tags(req.tags, req.delete_tags).await;
                self.reply_bare(seq, &err_text(r)).await;
            }
            Command::Query => self.handle_query(seq, body.decode(command)?).await,
            Command::Respond => {
                let req: msg::RespondRequest = body.decode(command)?;
                let known = self.queries.lock().unwrap().contains(&req.id);
                let err = if known {
                    err_text(self.agent.respond(req.id, req.payload).await)
                } else {
                    errors::INVALID_QUERY_ID.to_string()
                };
                self.reply_bare(seq, &err).await;
            }
            Command::Stats => {
                let resp = msg::StatsResponse {
                    sections: self.agent.stats(),
                };
                self.reply(seq, "", Some(&resp)).await;
            }
            Command::GetCoordinate => {
                let req: msg::CoordinateRequest = body.decode(command)?;
                let resp = match self.agent.coordinate(&req.node) {
                    Some(c) => msg::CoordinateResponse {
                        coord: Some((&c).into()),
                        ok: true,
                    },
                    // Serf answers an unknown node with Ok false and Go's
                    // zero coordinate (no Vec).
                    None => msg::CoordinateResponse::unknown(),
                };
                self.reply(seq, "", Some(&resp)).await;
            }
            Command::InstallKey | Command::UseKey | Command::RemoveKey | Command::ListKeys => {
                // `list-keys` has no body: its request reads as empty.
                let req: msg::KeyRequest = body.decode(command)?;
                let (resp, err) = match self.key_op(command, &req.key).await {
                    Ok(resp) => (resp, String::new()),
                    Err(e) => (KeyResponse::default(), e),
                };
                let resp = msg::KeyResponse::new(&resp, command == Command::ListKeys);
                self.reply(seq, &err, Some(&resp)).await;
            }
        }
        Ok(())
    }

    async fn key_op(&self, command: Command, text: &str) -> Result<KeyResponse, String> {
        if command == Command::ListKeys {
            return self.agent.list_keys().await.map_err(|e| format!("{e:#}"));
        }
        let key = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| format!("Failed to decode key '{text}': {e}"))?;
        let r = match command {
            Command::InstallKey => self.agent.install_key(key).await,
            Command::UseKey => self.agent.use_key(key).await,
            _ => self.agent.remove_key(key).await,
        };
        r.map_err(|e| format!("{e:#}"))
    }

    async fn handle_stream(&mut self, seq: u64, req: msg::StreamRequest) {
        let filters = match EventFilter::parse_list(&req.filter) {
            Ok(f) => f,
            Err(_) => return self.reply_bare(seq, errors::INVALID_FILTER).await,
        };
        if self.streams.contains_key(&seq) {
            return self.reply_bare(seq, errors::STREAM_EXISTS).await;
        }
        // Subscribe before answering so nothing emitted after the answer is missed.
        let mut events = self.agent.subscribe();
        self.reply_bare(seq, "").await;
        let out = self.out.clone();
        let queries = self.queries.clone();
        let task = tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(target: "agent.ipc", "Dropping {n} events to a slow stream client");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if !any_matches(&filters, &event) {
                    continue;
                }
                if let Event::Query(q) = &event {
                    let mut known = queries.lock().unwrap();
                    if known.len() >= MAX_PENDING_QUERIES {
                        known.pop_front();
                    }
                    known.push_back(q.id);
                }
                let bytes = response(seq, "", Some(&msg::EventRecord::from(&event)));
                match out.try_send(bytes) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(target: "agent.ipc", "Dropping event to a slow stream client");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
        });
        self.streams.insert(seq, task);
    }

    async fn handle_monitor(&mut self, seq: u64, req: msg::MonitorRequest) {
        let name = req.log_level.to_uppercase();
        let Some(level) = LogLevel::parse(&name) else {
            return self
                .reply_bare(seq, &format!("Unknown log level: {name}"))
                .await;
        };
        if self.monitor.is_some() {
            return self.reply_bare(seq, errors::MONITOR_EXISTS).await;
        }
        let (backlog, mut lines) = monitor::subscribe();
        self.reply_bare(seq, "").await;
        let out = self.out.clone();
        let task = tokio::spawn(async move {
            for line in backlog.into_iter().filter(|l| l.level >= level) {
                let bytes = log_record(seq, line.text);
                if out.send(bytes).await.is_err() {
                    return;
                }
            }
            loop {
                let line = match lines.recv().await {
                    Ok(l) => l,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if line.level < level {
                    continue;
                }
                let bytes = log_record(seq, line.text);
                if let Err(mpsc::error::TrySendError::Closed(_)) = out.try_send(bytes) {
                    break;
                }
            }
        });
        self.monitor = Some((seq, task));
    }

    async fn handle_query(&mut self, seq: u64, req: msg::QueryRequest) {
        let mut replies = match self.agent.query(req.into()).await {
            Ok(rx) => rx,
            Err(e) => return self.reply_bare(seq, &format!("{e:#}")).await,
        };
        self.reply_bare(seq, "").await;
        let out = self.out.clone();
        tokio::spawn(async move {
            loop {
                let reply = replies.recv().await.unwrap_or(QueryReply::Done);
                let bytes = response(seq, "", Some(&msg::QueryRecord::from(&reply)));
                if out.send(bytes).await.is_err() || reply == QueryReply::Done {
                    break;
                }
            }
        });
    }
}

/// A request body as read, decoded once the command says into what.
struct Body(Option<Vec<u8>>);

/// The connection is to be closed.
struct Closed;

impl Body {
    /// The body as `T`; a command without one reads as `T`'s zero value.
    fn decode<T: DeserializeOwned + Default>(&self, command: Command) -> Result<T, Closed> {
        match &self.0 {
            None => Ok(T::default()),
            Some(raw) => codec::decode(raw).map_err(|e| {
                let name = command.name();
                tracing::error!(target: "agent.ipc", "failed to decode the {name} request: {e}");
                Closed
            }),
        }
    }
}

/// A response header and, when given, its body, as one write.
fn response<B: Serialize>(seq: u64, error: &str, body: Option<&B>) -> Vec<u8> {
    let header = msg::ResponseHeader {
        seq,
        error: error.to_string(),
    };
    let mut bytes = codec::to_vec(&header);
    if let Some(b) = body {
        codec::encode(&mut bytes, b);
    }
    bytes
}

fn log_record(seq: u64, log: String) -> Vec<u8> {
    response(seq, "", Some(&msg::LogRecord { log }))
}

fn err_text(r: anyhow::Result<()>) -> String {
    match r {
        Ok(()) => String::new(),
        Err(e) => format!("{e:#}"),
    }
}

/// Serf's `members-filtered`: every given expression must match the whole
/// value (tags absent on a member match as the empty string).
fn filter_members(
    members: Vec<crate::model::Member>,
    req: &msg::MembersFilteredRequest,
) -> Result<Vec<crate::model::Member>, String> {
    let compile = |expr: &str| {
        regex_lite::Regex::new(&format!("^(?:{expr})$"))
            .map_err(|e| format!("Failed to compile regex: {e}"))
    };
    let tags = req
        .tags
        .iter()
        .map(|(k, v)| Ok((k, compile(v)?)))
        .collect::<Result<Vec<_>, String>>()?;
    let (status, name) = (&req.status, &req.name);
    let status_re = compile(status)?;
    let name_re = compile(name)?;
    Ok(members
        .into_iter()
        .filter(|m| {
            tags.iter()
                .all(|(k, re)| re.is_match(m.tag(k).unwrap_or("")))
                && (status.is_empty() || status_re.is_match(m.status.as_str()))
                && (name.is_empty() || name_re.is_match(&m.name))
        })
        .collect())
}
