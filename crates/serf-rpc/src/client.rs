//! The RPC client: one TCP connection, requests matched to responses by
//! `Seq`, streams (`stream`, `monitor`, `query`) delivered on channels.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::codec::{self, ValueReader};
use crate::msg::{self, Command, EventRecord};
use crate::{errors, Error, Result};
use serf_proto::coordinate::Coordinate;
use serf_proto::model::{
    Event, IncomingQuery, KeyResponse, Member, MemberEventKind, QueryParams, QueryReply, Stats,
};

/// Serf's client gives up dialing after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Query replies buffered before the forwarding task waits for the consumer.
const STREAM_BUFFER: usize = 1024;

/// One record of an event `stream`: the agent's own [`Event`]; a query
/// carries the id to answer it with through [`Client::respond`].
pub type StreamRecord = Event;

/// A body as it came off the wire, decoded by whoever asked for it.
type Raw = Vec<u8>;

/// What the reader task does with responses carrying a given `Seq`.
enum Pending {
    /// A plain request: one header, with a body when `body` is set.
    Once {
        body: bool,
        tx: oneshot::Sender<Result<Option<Raw>>>,
    },
    /// A streaming request: the first header answers the request, every
    /// later header is followed by a record body.
    Stream {
        init: Option<oneshot::Sender<Result<()>>>,
        // Unbounded: the reader must never wait for a stream's consumer,
        // or a consumer that calls the client before reading would deadlock.
        tx: mpsc::UnboundedSender<Raw>,
    },
}

type Dispatch = Arc<Mutex<HashMap<u64, Pending>>>;

struct Inner {
    seq: AtomicU64,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    dispatch: Dispatch,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A connection to a Serf (or gossip) agent's RPC port. Cheap to clone;
/// the connection closes when the last clone (and stream) is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A subscription (`stream`, `monitor`): its records in order. Ends
/// (`recv` gives `None`) when the connection closes.
pub struct Subscription<R> {
    client: Client,
    seq: u64,
    rx: mpsc::UnboundedReceiver<Raw>,
    record: PhantomData<fn() -> R>,
}

/// An event subscription (`stream` command).
pub type EventStream = Subscription<StreamRecord>;

/// A log subscription (`monitor` command): its log lines.
pub type LogStream = Subscription<String>;

/// What a subscription yields, read from one record body.
pub trait Record: Sized {
    /// `None`: a record to skip.
    fn from_body(raw: &[u8]) -> Option<Self>;
}

impl Record for StreamRecord {
    /// Records of kinds this client does not know are skipped.
    fn from_body(raw: &[u8]) -> Option<Self> {
        EventRecord::decode(raw).ok().map(Into::into)
    }
}

impl Record for String {
    /// A record that does not decode reads as an empty line.
    fn from_body(raw: &[u8]) -> Option<Self> {
        Some(codec::decode::<msg::LogRecord>(raw).unwrap_or_default().log)
    }
}

impl Client {
    /// Connects, performs the handshake and, with a key, authenticates.
    pub async fn connect(addr: SocketAddr, auth_key: Option<&str>) -> Result<Client> {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(Error::Connect { addr, source }),
            Err(_) => {
                return Err(Error::Connect {
                    addr,
                    source: std::io::ErrorKind::TimedOut.into(),
                })
            }
        };
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let dispatch: Dispatch = Arc::default();
        let reader = tokio::spawn(read_loop(ValueReader::new(rd), dispatch.clone()));
        let client = Client {
            inner: Arc::new(Inner {
                seq: AtomicU64::new(0),
                writer: tokio::sync::Mutex::new(wr),
                dispatch,
                reader,
            }),
        };
        client
            .call(
                Command::Handshake,
                Some(&msg::HandshakeRequest { version: 1 }),
            )
            .await?;
        if let Some(key) = auth_key.filter(|k| !k.is_empty()) {
            let auth = msg::AuthRequest {
                auth_key: key.to_string(),
            };
            client.call(Command::Auth, Some(&auth)).await?;
        }
        Ok(client)
    }

    fn next_seq(&self) -> u64 {
        self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Writes a request: header, then the body when there is one.
    async fn send<B: Serialize>(&self, command: Command, seq: u64, body: Option<&B>) -> Result<()> {
        let header = msg::RequestHeader {
            command: command.name().to_string(),
            seq,
        };
        let mut bytes = codec::to_vec(&header);
        if let Some(b) = body {
            codec::encode(&mut bytes, b);
        }
        let mut w = self.inner.writer.lock().await;
        w.write_all(&bytes).await?;
        w.flush().await?;
        Ok(())
    }

    /// Sends a request and waits for its single response; returns the body
    /// when the command has one.
    async fn call<B: Serialize>(&self, command: Command, body: Option<&B>) -> Result<Option<Raw>> {
        let seq = self.next_seq();
        let (tx, rx) = oneshot::channel();
        self.inner.dispatch.lock().unwrap().insert(
            seq,
            Pending::Once {
                body: command.response_has_body(),
                tx,
            },
        );
        if let Err(e) = self.send(command, seq, body).await {
            self.inner.dispatch.lock().unwrap().remove(&seq);
            return Err(e);
        }
        rx.await.unwrap_or(Err(Error::Closed))
    }

    /// [`Client::call`] for a command without a request body.
    async fn call_bare(&self, command: Command) -> Result<Option<Raw>> {
        self.call(command, None::<&()>).await
    }

    /// A call whose answer has a body, decoded as `R`.
    async fn call_for<B: Serialize, R: serde::de::DeserializeOwned + Default>(
        &self,
        command: Command,
        body: Option<&B>,
    ) -> Result<R> {
        let raw = self.call(command, body).await?.ok_or_else(|| {
            Error::Protocol(format!("no body in the answer to {}", command.name()))
        })?;
        decode(command, &raw)
    }

    /// Starts a streaming command; returns its seq and the record channel.
    async fn open_stream<B: Serialize>(
        &self,
        command: Command,
        body: &B,
    ) -> Result<(u64, mpsc::UnboundedReceiver<Raw>)> {
        let seq = self.next_seq();
        let (init_tx, init_rx) = oneshot::channel();
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.dispatch.lock().unwrap().insert(
            seq,
            Pending::Stream {
                init: Some(init_tx),
                tx,
            },
        );
        if let Err(e) = self.send(command, seq, Some(body)).await {
            self.inner.dispatch.lock().unwrap().remove(&seq);
            return Err(e);
        }
        match init_rx.await {
            Ok(Ok(())) => Ok((seq, rx)),
            Ok(Err(e)) => {
                self.inner.dispatch.lock().unwrap().remove(&seq);
                Err(e)
            }
            Err(_) => Err(Error::Closed),
        }
    }

    /// Ends a stream or monitor (`stop` command).
    async fn stop(&self, seq: u64) -> Result<()> {
        self.inner.dispatch.lock().unwrap().remove(&seq);
        self.call(Command::Stop, Some(&msg::StopRequest { stop: seq }))
            .await
            .map(|_| ())
    }

    /// All known members (`members`).
    pub async fn members(&self) -> Result<Vec<Member>> {
        let body: msg::MembersResponse = self.call_for(Command::Members, None::<&()>).await?;
        Ok(body.into_model())
    }

    /// Members whose tags, status and name match the given regular
    /// expressions (anchored by the agent); empty strings match everything.
    pub async fn members_filtered(
        &self,
        tags: &[(String, String)],
        status: &str,
        name: &str,
    ) -> Result<Vec<Member>> {
        let req = msg::MembersFilteredRequest {
            tags: tags.to_vec(),
            status: status.to_string(),
            name: name.to_string(),
        };
        let body: msg::MembersResponse =
            self.call_for(Command::MembersFiltered, Some(&req)).await?;
        Ok(body.into_model())
    }

    /// Asks the agent to join these addresses; returns how many it reached.
    pub async fn join<S: AsRef<str>>(&self, addrs: &[S], replay: bool) -> Result<usize> {
        let req = msg::JoinRequest {
            existing: addrs.iter().map(|a| a.as_ref().to_string()).collect(),
            replay,
        };
        // Serf sends the count even when the join failed; the error wins.
        let body: msg::JoinResponse = self.call_for(Command::Join, Some(&req)).await?;
        Ok(usize::try_from(body.num).unwrap_or(usize::MAX))
    }

    /// Graceful leave; the agent shuts down afterwards.
    pub async fn leave(&self) -> Result<()> {
        self.call_bare(Command::Leave).await.map(|_| ())
    }

    pub async fn force_leave(&self, node: &str) -> Result<()> {
        self.force_leave_with(node, false).await
    }

    /// Force-leave and remove the node from the member list at once.
    pub async fn force_leave_prune(&self, node: &str) -> Result<()> {
        self.force_leave_with(node, true).await
    }

    async fn force_leave_with(&self, node: &str, prune: bool) -> Result<()> {
        let req = msg::ForceLeaveRequest {
            node: node.to_string(),
            prune,
        };
        self.call(Command::ForceLeave, Some(&req)).await.map(|_| ())
    }

    pub async fn user_event(&self, name: &str, payload: &[u8], coalesce: bool) -> Result<()> {
        let req = msg::EventRequest {
            name: name.to_string(),
            payload: payload.to_vec(),
            coalesce,
        };
        self.call(Command::Event, Some(&req)).await.map(|_| ())
    }

    /// Sets and deletes tags of the agent.
    pub async fn update_tags(&self, set: &[(String, String)], delete: &[String]) -> Result<()> {
        let req = msg::TagsRequest {
            tags: set.to_vec(),
            delete_tags: delete.to_vec(),
        };
        self.call(Command::Tags, Some(&req)).await.map(|_| ())
    }

    /// Debug counters, section -> key -> value.
    pub async fn stats(&self) -> Result<Stats> {
        let body: msg::StatsResponse = self.call_for(Command::Stats, None::<&()>).await?;
        Ok(body.sections)
    }

    /// `get-coordinate`: the agent's last known network coordinate of
    /// `node`, `None` when it has none.
    pub async fn get_coordinate(&self, node: &str) -> Result<Option<Coordinate>> {
        let req = msg::CoordinateRequest {
            node: node.to_string(),
        };
        let body: msg::CoordinateResponse =
            self.call_for(Command::GetCoordinate, Some(&req)).await?;
        if !body.ok {
            return Ok(None);
        }
        let coord = body
            .coord
            .ok_or_else(|| Error::Protocol("get-coordinate: no Coord".into()))?;
        Ok(Some(coord.into()))
    }

    /// Subscribes to events: `filter` is Serf's (`*`, `member-join`,
    /// `user:deploy,query`, ...).
    pub async fn stream(&self, filter: &str) -> Result<EventStream> {
        let req = msg::StreamRequest {
            filter: filter.to_string(),
        };
        self.subscribe(Command::Stream, &req).await
    }

    /// Subscribes to the agent's log lines at `level` or above
    /// (`trace`, `debug`, `info`, `warn`, `err`).
    pub async fn monitor(&self, level: &str) -> Result<LogStream> {
        let req = msg::MonitorRequest {
            log_level: level.to_uppercase(),
        };
        self.subscribe(Command::Monitor, &req).await
    }

    async fn subscribe<R>(
        &self,
        command: Command,
        req: &impl Serialize,
    ) -> Result<Subscription<R>> {
        let (seq, rx) = self.open_stream(command, req).await?;
        Ok(Subscription {
            client: self.clone(),
            seq,
            rx,
            record: PhantomData,
        })
    }

    /// Sends a query; acks and responses arrive on the channel, then `Done`.
    pub async fn query(&self, params: QueryParams) -> Result<mpsc::Receiver<QueryReply>> {
        let req = msg::QueryRequest::from(&params);
        let (seq, mut raw) = self.open_stream(Command::Query, &req).await?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let dispatch = self.inner.dispatch.clone();
        tokio::spawn(async move {
            while let Some(rec) = raw.recv().await {
                let reply = match codec::decode::<msg::QueryRecord>(&rec).map(|r| r.into_reply()) {
                    Ok(Some(QueryReply::Done)) => break,
                    Ok(Some(reply)) => reply,
                    Ok(None) | Err(_) => continue,
                };
                if tx.send(reply).await.is_err() {
                    break;
                }
            }
            dispatch.lock().unwrap().remove(&seq);
            let _ = tx.send(QueryReply::Done).await;
        });
        Ok(rx)
    }

    /// Answers a query received through [`Client::stream`].
    pub async fn respond(&self, id: u64, payload: &[u8]) -> Result<()> {
        let req = msg::RespondRequest {
            id,
            payload: payload.to_vec(),
        };
        self.call(Command::Respond, Some(&req)).await.map(|_| ())
    }

    /// Installs a base64 key on every member's keyring.
    pub async fn install_key(&self, key: &str) -> Result<KeyResponse> {
        self.key_op(Command::InstallKey, Some(key)).await
    }

    /// Makes a base64 key the primary one cluster-wide.
    pub async fn use_key(&self, key: &str) -> Result<KeyResponse> {
        self.key_op(Command::UseKey, Some(key)).await
    }

    pub async fn remove_key(&self, key: &str) -> Result<KeyResponse> {
        self.key_op(Command::RemoveKey, Some(key)).await
    }

    pub async fn list_keys(&self) -> Result<KeyResponse> {
        self.key_op(Command::ListKeys, None).await
    }

    /// Key operations report per-node errors in the body even when the
    /// header carries an error, so the body is returned in both cases.
    async fn key_op(&self, command: Command, key: Option<&str>) -> Result<KeyResponse> {
        let body = key.map(|k| msg::KeyRequest { key: k.to_string() });
        let seq = self.next_seq();
        let (tx, rx) = oneshot::channel();
        self.inner
            .dispatch
            .lock()
            .unwrap()
            .insert(seq, Pending::Once { body: true, tx });
        self.send(command, seq, body.as_ref()).await?;
        match rx.await.unwrap_or(Err(Error::Closed)) {
            Ok(Some(raw)) => decode::<msg::KeyResponse>(command, &raw).map(KeyResponse::from),
            Ok(None) => Ok(KeyResponse::default()),
            Err(e) => Err(e),
        }
    }
}

/// Decodes the body of the answer to `command`.
fn decode<R: serde::de::DeserializeOwned + Default>(command: Command, raw: &[u8]) -> Result<R> {
    codec::decode(raw).map_err(|e| Error::Protocol(format!("{}: {e}", command.name())))
}

impl<R: Record> Subscription<R> {
    /// The next record; `None` once the connection is gone.
    pub async fn recv(&mut self) -> Option<R> {
        loop {
            let raw = self.rx.recv().await?;
            if let Some(rec) = R::from_body(&raw) {
                return Some(rec);
            }
        }
    }

    /// Stops the subscription on the agent.
    pub async fn stop(self) -> Result<()> {
        self.client.stop(self.seq).await
    }
}

impl From<EventRecord> for StreamRecord {
    fn from(rec: EventRecord) -> StreamRecord {
        let (kind, body) = match rec {
            EventRecord::User(u) => {
                return StreamRecord::User {
                    ltime: u.ltime,
                    name: u.name,
                    payload: u.payload,
                    coalesce: u.coalesce,
                }
            }
            EventRecord::Query(q) => {
                return StreamRecord::Query(IncomingQuery {
                    id: q.id,
                    ltime: q.ltime,
                    name: q.name,
                    payload: q.payload,
                })
            }
            EventRecord::MemberJoin(b) => (MemberEventKind::Join, b),
            EventRecord::MemberLeave(b) => (MemberEventKind::Leave, b),
            EventRecord::MemberFailed(b) => (MemberEventKind::Failed, b),
            EventRecord::MemberUpdate(b) => (MemberEventKind::Update, b),
            EventRecord::MemberReap(b) => (MemberEventKind::Reap, b),
        };
        StreamRecord::Member {
            kind,
            members: body.into_model(),
        }
    }
}

/// Reads headers (and bodies) and routes them by `Seq`. Ends on EOF or
/// garbage, which drops every pending sender: callers see `Closed`.
async fn read_loop(mut reader: ValueReader<tokio::net::tcp::OwnedReadHalf>, dispatch: Dispatch) {
    loop {
        let msg::ResponseHeader { seq, error } = match reader.next().await {
            Ok(Some(h)) => h,
            Ok(None) | Err(_) => break,
        };
        let pending = dispatch.lock().unwrap().remove(&seq);
        match pending {
            Some(Pending::Once { body, tx }) => {
                // Serf sends no body with these errors whatever the command.
                let bodyless = matches!(
                    error.as_str(),
                    errors::AUTH_REQUIRED
                        | errors::HANDSHAKE_REQUIRED
                        | errors::UNSUPPORTED_COMMAND
                );
                let value = if body && !bodyless {
                    match reader.next_raw().await {
                        Ok(Some(v)) => Some(v),
                        _ => break,
                    }
                } else {
                    None
                };
                let _ = tx.send(if error.is_empty() {
                    Ok(value)
                } else {
                    Err(Error::Remote(error))
                });
            }
            Some(Pending::Stream {
                init: Some(init),
                tx,
            }) => {
                let failed = !error.is_empty();
                let _ = init.send(if failed {
                    Err(Error::Remote(error))
                } else {
                    Ok(())
                });
                if !failed {
                    dispatch
                        .lock()
                        .unwrap()
                        .insert(seq, Pending::Stream { init: None, tx });
                }
            }
            Some(Pending::Stream { init: None, tx }) => {
                let rec = match reader.next_raw().await {
                    Ok(Some(v)) => v,
                    _ => break,
                };
                // Re-register before delivering so the next record finds it.
                dispatch.lock().unwrap().insert(
                    seq,
                    Pending::Stream {
                        init: None,
                        tx: tx.clone(),
                    },
                );
                if tx.send(rec).is_err() {
                    // The consumer is gone: forget the stream (records
                    // still in flight are skipped below as unknown).
                    dispatch.lock().unwrap().remove(&seq);
                }
            }
            None => {
                // A record of a stream we stopped: records always carry a
                // body, so skip it to stay in step.
                if reader.next_raw().await.ok().flatten().is_none() {
                    break;
                }
            }
        }
    }
    dispatch.lock().unwrap().clear();
}
