//! The RPC server: Serf's IPC commands answered from a
//! [`crate::model::AgentHandle`], one task per connection plus one per
//! stream, monitor or query, all writing through the connection's single
//! writer so records never interleave.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use rmpv::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, Notify};
use tokio::task::JoinHandle;

use super::codec::{self, get_bool, get_bytes, get_str, get_u64, ValueReader};
use super::errors;
use super::monitor::{self, LogLevel};
use crate::handler::{any_matches, EventFilter};
use crate::model::{AgentHandle, Event, KeyResponse, QueryParams, QueryReply};

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
            let header = match reader.next().await {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(target: "agent.ipc", "failed to decode request header: {e}");
                    break;
                }
            };
            let command = get_str(&header, "Command");
            let seq = get_u64(&header, "Seq");
            let body = if codec::request_has_body(&command) && is_known(&command) {
                match reader.next().await {
                    Ok(Some(b)) => b,
                    _ => break,
                }
            } else {
                Value::Nil
            };
            if !conn.handle(&command, seq, body).await {
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

    async fn reply(&self, seq: u64, error: &str, body: Option<Value>) {
        let header = codec::header_resp(seq, error);
        let bytes = match &body {
            Some(b) => codec::encode(&[&header, b]),
            None => codec::encode(&[&header]),
        };
        let _ = self.out.send(bytes).await;
    }

    /// Handles one request; false closes the connection (as Serf does
    /// after a missing handshake or an unknown command).
    async fn handle(&mut self, command: &str, seq: u64, body: Value) -> bool {
        if command != "handshake" && self.version == 0 {
            self.reply(seq, errors::HANDSHAKE_REQUIRED, None).await;
            return false;
        }
        let key = self.opts.auth_key.as_deref().unwrap_or("");
        if !key.is_empty() && !self.authed && command != "auth" && command != "handshake" {
            tracing::warn!(target: "agent.ipc", "Client sending commands before auth");
            self.reply(seq, errors::AUTH_REQUIRED, None).await;
            return true;
        }
        match command {
            "handshake" => {
                let v = get_u64(&body, "Version");
                let err = if v != 1 {
                    errors::UNSUPPORTED_IPC_VERSION
                } else if self.version != 0 {
                    errors::DUPLICATE_HANDSHAKE
                } else {
                    self.version = v;
                    ""
                };
                self.reply(seq, err, None).await;
            }
            "auth" => {
                let err = if get_str(&body, "AuthKey") == key {
                    self.authed = true;
                    ""
                } else {
                    errors::INVALID_AUTH_TOKEN
                };
                self.reply(seq, err, None).await;
            }
            "event" => {
                let r = self
                    .agent
                    .user_event(
                        &get_str(&body, "Name"),
                        get_bytes(&body, "Payload"),
                        get_bool(&body, "Coalesce"),
                    )
                    .await;
                self.reply(seq, &err_text(r), None).await;
            }
            "force-leave" => {
                let r = self
                    .agent
                    .force_leave(&get_str(&body, "Node"), get_bool(&body, "Prune"))
                    .await;
                self.reply(seq, &err_text(r.map(|_| ())), None).await;
            }
            "join" => {
                let existing = codec::get_str_list(&body, "Existing");
                let r = self.agent.join(existing, get_bool(&body, "Replay")).await;
                let (num, err) = match r {
                    Ok(n) => (n, String::new()),
                    Err(e) => (0, format!("{e:#}")),
                };
                let resp = codec::map(vec![("Num", (num.min(i32::MAX as usize) as u64).into())]);
                self.reply(seq, &err, Some(resp)).await;
            }
            "members" => {
                let members = self.agent.members();
                self.reply(seq, "", Some(members_body(members.iter())))
                    .await;
            }
            "members-filtered" => {
                let (members, err) = match filter_members(self.agent.members(), &body) {
                    Ok(m) => (m, String::new()),
                    Err(e) => (Vec::new(), e),
                };
                self.reply(seq, &err, Some(members_body(members.iter())))
                    .await;
            }
            "stream" => self.handle_stream(seq, &body).await,
            "monitor" => self.handle_monitor(seq, &body).await,
            "stop" => {
                let target = get_u64(&body, "Stop");
                if let Some(task) = self.streams.remove(&target) {
                    task.abort();
                }
                if self.monitor.as_ref().is_some_and(|(s, _)| *s == target) {
                    if let Some((_, task)) = self.monitor.take() {
                        task.abort();
                    }
                }
                self.reply(seq, "", None).await;
            }
            "leave" => {
                tracing::info!(target: "agent.ipc", "Graceful leave triggered");
                let r = self.agent.leave().await;
                if let Err(e) = &r {
                    tracing::error!(target: "agent.ipc", "leave failed: {e:#}");
                }
                self.reply(seq, &err_text(r), None).await;
                if let Err(e) = self.agent.shutdown().await {
                    tracing::error!(target: "agent.ipc", "shutdown failed: {e:#}");
                }
                if let Some(n) = &self.opts.on_leave {
                    n.notify_one();
                }
            }
            "tags" => {
                let set = codec::get_str_pairs(&body, "Tags");
                let delete = codec::get_str_list(&body, "DeleteTags");
                let r = self.agent.set_tags(set, delete).await;
                self.reply(seq, &err_text(r), None).await;
            }
            "query" => self.handle_query(seq, &body).await,
            "respond" => {
                let id = get_u64(&body, "ID");
                let known = self.queries.lock().unwrap().contains(&id);
                let err = if known {
                    err_text(self.agent.respond(id, get_bytes(&body, "Payload")).await)
                } else {
                    errors::INVALID_QUERY_ID.to_string()
                };
                self.reply(seq, &err, None).await;
            }
            "stats" => {
                let stats = self.agent.stats();
                let body = Value::Map(
                    stats
                        .iter()
                        .map(|(section, kv)| {
                            (
                                Value::from(section.as_str()),
                                codec::str_map(kv.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                            )
                        })
                        .collect(),
                );
                self.reply(seq, "", Some(body)).await;
            }
            "get-coordinate" => {
                // Serf answers an unknown node with Ok false and Go's
                // zero coordinate (no Vec).
                let node = get_str(&body, "Node");
                let (coord, ok) = match self.agent.coordinate(&node) {
                    Some(c) => (c.to_value(), true),
                    None => (
                        codec::map(vec![
                            ("Vec", Value::Nil),
                            ("Error", Value::F64(0.0)),
                            ("Adjustment", Value::F64(0.0)),
                            ("Height", Value::F64(0.0)),
                        ]),
                        false,
                    ),
                };
                let body = codec::map(vec![("Coord", coord), ("Ok", ok.into())]);
                self.reply(seq, "", Some(body)).await;
            }
            "install-key" | "use-key" | "remove-key" | "list-keys" => {
                let r = self.key_op(command, &body).await;
                let (resp, err) = match r {
                    Ok(resp) => (resp, String::new()),
                    Err(e) => (KeyResponse::default(), e),
                };
                self.reply(seq, &err, Some(key_body(&resp, command == "list-keys")))
                    .await;
            }
            _ => {
                tracing::error!(target: "agent.ipc", "command '{command}' not recognized");
                self.reply(seq, errors::UNSUPPORTED_COMMAND, None).await;
                return false;
            }
        }
        true
    }

    async fn key_op(&self, command: &str, body: &Value) -> Result<KeyResponse, String> {
        if command == "list-keys" {
            return self.agent.list_keys().await.map_err(|e| format!("{e:#}"));
        }
        let text = get_str(body, "Key");
        let key = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| format!("Failed to decode key '{text}': {e}"))?;
        let r = match command {
            "install-key" => self.agent.install_key(key).await,
            "use-key" => self.agent.use_key(key).await,
            _ => self.agent.remove_key(key).await,
        };
        r.map_err(|e| format!("{e:#}"))
    }

    async fn handle_stream(&mut self, seq: u64, body: &Value) {
        let filters = match EventFilter::parse_list(&get_str(body, "Type")) {
            Ok(f) => f,
            Err(_) => return self.reply(seq, errors::INVALID_FILTER, None).await,
        };
        if self.streams.contains_key(&seq) {
            return self.reply(seq, errors::STREAM_EXISTS, None).await;
        }
        // Subscribe before answering so nothing emitted after the answer is missed.
        let mut events = self.agent.subscribe();
        self.reply(seq, "", None).await;
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
                let bytes = codec::encode(&[&codec::header_resp(seq, ""), &event_record(&event)]);
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

    async fn handle_monitor(&mut self, seq: u64, body: &Value) {
        let name = get_str(body, "LogLevel").to_uppercase();
        let Some(level) = LogLevel::parse(&name) else {
            return self
                .reply(seq, &format!("Unknown log level: {name}"), None)
                .await;
        };
        if self.monitor.is_some() {
            return self.reply(seq, errors::MONITOR_EXISTS, None).await;
        }
        let (backlog, mut lines) = monitor::subscribe();
        self.reply(seq, "", None).await;
        let out = self.out.clone();
        let task = tokio::spawn(async move {
            for line in backlog.into_iter().filter(|l| l.level >= level) {
                let rec = codec::map(vec![("Log", line.text.as_str().into())]);
                let bytes = codec::encode(&[&codec::header_resp(seq, ""), &rec]);
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
                let rec = codec::map(vec![("Log", line.text.as_str().into())]);
                let bytes = codec::encode(&[&codec::header_resp(seq, ""), &rec]);
                if let Err(mpsc::error::TrySendError::Closed(_)) = out.try_send(bytes) {
                    break;
                }
            }
        });
        self.monitor = Some((seq, task));
    }

    async fn handle_query(&mut self, seq: u64, body: &Value) {
        let params = QueryParams {
            name: get_str(body, "Name"),
            payload: get_bytes(body, "Payload"),
            filter_nodes: codec::get_str_list(body, "FilterNodes"),
            filter_tags: codec::get_str_pairs(body, "FilterTags")
                .into_iter()
                .collect(),
            request_ack: get_bool(body, "RequestAck"),
            relay_factor: get_u64(body, "RelayFactor").min(255) as u8,
            timeout: Duration::from_nanos(codec::get_i64(body, "Timeout").max(0) as u64),
        };
        let mut replies = match self.agent.query(params).await {
            Ok(rx) => rx,
            Err(e) => return self.reply(seq, &format!("{e:#}"), None).await,
        };
        self.reply(seq, "", None).await;
        let out = self.out.clone();
        tokio::spawn(async move {
            loop {
                let reply = replies.recv().await.unwrap_or(QueryReply::Done);
                let (kind, from, payload) = match &reply {
                    QueryReply::Ack { from } => ("ack", from.as_str(), Value::Nil),
                    QueryReply::Response { from, payload } => {
                        ("response", from.as_str(), codec::bin(payload))
                    }
                    QueryReply::Done => ("done", "", Value::Nil),
                };
                let rec = codec::map(vec![
                    ("Type", kind.into()),
                    ("From", from.into()),
                    ("Payload", payload),
                ]);
                let bytes = codec::encode(&[&codec::header_resp(seq, ""), &rec]);
                if out.send(bytes).await.is_err() || reply == QueryReply::Done {
                    break;
                }
            }
        });
    }
}

fn is_known(command: &str) -> bool {
    matches!(
        command,
        "handshake"
            | "auth"
            | "event"
            | "force-leave"
            | "join"
            | "members"
            | "members-filtered"
            | "stream"
            | "monitor"
            | "stop"
            | "leave"
            | "tags"
            | "query"
            | "respond"
            | "stats"
            | "get-coordinate"
            | "install-key"
            | "use-key"
            | "remove-key"
            | "list-keys"
    )
}

fn err_text(r: anyhow::Result<()>) -> String {
    match r {
        Ok(()) => String::new(),
        Err(e) => format!("{e:#}"),
    }
}

fn members_body<'a>(members: impl Iterator<Item = &'a crate::model::Member>) -> Value {
    codec::map(vec![(
        "Members",
        Value::Array(members.map(codec::member_value).collect()),
    )])
}

fn key_body(r: &KeyResponse, with_keys: bool) -> Value {
    let mut pairs = vec![
        (
            "Messages",
            codec::str_map(r.messages.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        ),
        ("NumNodes", (r.num_nodes as u64).into()),
        ("NumErr", (r.num_err as u64).into()),
        ("NumResp", (r.num_resp as u64).into()),
    ];
    let keys = if with_keys {
        Value::Map(
            r.keys
                .iter()
                .map(|(k, n)| (Value::from(k.as_str()), Value::from(*n as u64)))
                .collect(),
        )
    } else {
        Value::Nil
    };
    pairs.push(("Keys", keys));
    codec::map(pairs)
}

fn event_record(e: &Event) -> Value {
    match e {
        Event::Member { kind, members } => codec::map(vec![
            ("Event", kind.as_str().into()),
            (
                "Members",
                Value::Array(members.iter().map(codec::member_value).collect()),
            ),
        ]),
        Event::User {
            ltime,
            name,
            payload,
            coalesce,
        } => codec::map(vec![
            ("Event", "user".into()),
            ("LTime", (*ltime).into()),
            ("Name", name.as_str().into()),
            ("Payload", codec::bin(payload)),
            ("Coalesce", (*coalesce).into()),
        ]),
        Event::Query(q) => codec::map(vec![
            ("Event", "query".into()),
            ("ID", q.id.into()),
            ("LTime", q.ltime.into()),
            ("Name", q.name.as_str().into()),
            ("Payload", codec::bin(&q.payload)),
        ]),
    }
}

/// Serf's `members-filtered`: every given expression must match the whole
/// value (tags absent on a member match as the empty string).
fn filter_members(
    members: Vec<crate::model::Member>,
    body: &Value,
) -> Result<Vec<crate::model::Member>, String> {
    let compile = |expr: &str| {
        regex::Regex::new(&format!("^(?:{expr})$"))
            .map_err(|e| format!("Failed to compile regex: {e}"))
    };
    let tags = codec::get_str_pairs(body, "Tags")
        .into_iter()
        .map(|(k, v)| Ok((k, compile(&v)?)))
        .collect::<Result<Vec<_>, String>>()?;
    let status = get_str(body, "Status");
    let name = get_str(body, "Name");
    let status_re = compile(&status)?;
    let name_re = compile(&name)?;
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
