//! The RPC client: one TCP connection, requests matched to responses by
//! `Seq`, streams (`stream`, `monitor`, `query`) delivered on channels.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmpv::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::codec::{self, get, get_bytes, get_str, get_u64, ValueReader};
use crate::{errors, Error, Result};
use serf_proto::model::{KeyResponse, Member, MemberEventKind, QueryParams, QueryReply, Stats};

/// Serf's client gives up dialing after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Query replies buffered before the forwarding task waits for the consumer.
const STREAM_BUFFER: usize = 1024;

/// One record of an event `stream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRecord {
    Member {
        kind: MemberEventKind,
        members: Vec<Member>,
    },
    User {
        ltime: u64,
        name: String,
        payload: Vec<u8>,
        coalesce: bool,
    },
    /// A query this agent received; answer with [`Client::respond`]`(id, ..)`.
    Query {
        id: u64,
        ltime: u64,
        name: String,
        payload: Vec<u8>,
    },
}

/// What the reader task does with responses carrying a given `Seq`.
enum Pending {
    /// A plain request: one header, with a body when `body` is set.
    Once {
        body: bool,
        tx: oneshot::Sender<Result<Option<Value>>>,
    },
    /// A streaming request: the first header answers the request, every
    /// later header is followed by a record body.
    Stream {
        init: Option<oneshot::Sender<Result<()>>>,
        // Unbounded: the reader must never wait for a stream's consumer,
        // or a consumer that calls the client before reading would deadlock.
        tx: mpsc::UnboundedSender<Value>,
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

/// An event subscription (`stream` command). Ends (`recv` gives `None`) when
/// the connection closes.
pub struct EventStream {
    client: Client,
    seq: u64,
    rx: mpsc::UnboundedReceiver<Value>,
}

/// A log subscription (`monitor` command).
pub struct LogStream {
    client: Client,
    seq: u64,
    rx: mpsc::UnboundedReceiver<Value>,
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
                "handshake",
                Some(codec::map(vec![("Version", 1u64.into())])),
            )
            .await?;
        if let Some(key) = auth_key.filter(|k| !k.is_empty()) {
            client
                .call("auth", Some(codec::map(vec![("AuthKey", key.into())])))
                .await?;
        }
        Ok(client)
    }

    fn next_seq(&self) -> u64 {
        self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    async fn send(&self, command: &str, seq: u64, body: Option<&Value>) -> Result<()> {
        let header = codec::header_req(command, seq);
        let bytes = match body {
            Some(b) => codec::encode(&[&header, b]),
            None => codec::encode(&[&header]),
        };
        let mut w = self.inner.writer.lock().await;
        w.write_all(&bytes).await?;
        w.flush().await?;
        Ok(())
    }

    /// Sends a request and waits for its single response; returns the body
    /// when the command has one.
    async fn call(&self, command: &str, body: Option<Value>) -> Result<Option<Value>> {
        let seq = self.next_seq();
        let (tx, rx) = oneshot::channel();
        self.inner.dispatch.lock().unwrap().insert(
            seq,
            Pending::Once {
                body: codec::response_has_body(command),
                tx,
            },
        );
        if let Err(e) = self.send(command, seq, body.as_ref()).await {
            self.inner.dispatch.lock().unwrap().remove(&seq);
            return Err(e);
        }
        rx.await.unwrap_or(Err(Error::Closed))
    }

    async fn call_body(&self, command: &str, body: Option<Value>) -> Result<Value> {
        self.call(command, body)
            .await?
            .ok_or_else(|| Error::Protocol(format!("no body in the answer to {command}")))
    }

    /// Starts a streaming command; returns its seq and the record channel.
    async fn open_stream(
        &self,
        command: &str,
        body: Value,
    ) -> Result<(u64, mpsc::UnboundedReceiver<Value>)> {
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
        if let Err(e) = self.send(command, seq, Some(&body)).await {
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
        self.call("stop", Some(codec::map(vec![("Stop", seq.into())])))
            .await
            .map(|_| ())
    }

    /// All known members (`members`).
    pub async fn members(&self) -> Result<Vec<Member>> {
        let body = self.call_body("members", None).await?;
        Ok(codec::members_from_list(&body, "Members"))
    }

    /// Members whose tags, status and name match the given regular
    /// expressions (anchored by the agent); empty strings match everything.
    pub async fn members_filtered(
        &self,
        tags: &[(String, String)],
        status: &str,
        name: &str,
    ) -> Result<Vec<Member>> {
        let req = codec::map(vec![
            (
                "Tags",
                codec::str_map(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            ),
            ("Status", status.into()),
            ("Name", name.into()),
        ]);
        let body = self.call_body("members-filtered", Some(req)).await?;
        Ok(codec::members_from_list(&body, "Members"))
    }

    /// Asks the agent to join these addresses; returns how many it reached.
    pub async fn join<S: AsRef<str>>(&self, addrs: &[S], replay: bool) -> Result<usize> {
        let req = codec::map(vec![
            (
                "Existing",
                codec::str_list(addrs.iter().map(|a| a.as_ref())),
            ),
            ("Replay", replay.into()),
        ]);
        // Serf sends the count even when the join failed; the error wins.
        let body = self.call_body("join", Some(req)).await?;
        Ok(get_u64(&body, "Num") as usize)
    }

    /// Graceful leave; the agent shuts down afterwards.
    pub async fn leave(&self) -> Result<()> {
        self.call("leave", None).await.map(|_| ())
    }

    pub async fn force_leave(&self, node: &str) -> Result<()> {
        self.force_leave_with(node, false).await
    }

    /// Force-leave and remove the node from the member list at once.
    pub async fn force_leave_prune(&self, node: &str) -> Result<()> {
        self.force_leave_with(node, true).await
    }

    async fn force_leave_with(&self, node: &str, prune: bool) -> Result<()> {
        let req = codec::map(vec![("Node", node.into()), ("Prune", prune.into())]);
        self.call("force-leave", Some(req)).await.map(|_| ())
    }

    pub async fn user_event(&self, name: &str, payload: &[u8], coalesce: bool) -> Result<()> {
        let req = codec::map(vec![
            ("Name", name.into()),
            ("Payload", codec::bin(payload)),
            ("Coalesce", coalesce.into()),
        ]);
        self.call("event", Some(req)).await.map(|_| ())
    }

    /// Sets and deletes tags of the agent.
    pub async fn update_tags(&self, set: &[(String, String)], delete: &[String]) -> Result<()> {
        let req = codec::map(vec![
            (
                "Tags",
                codec::str_map(set.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            ),
            (
                "DeleteTags",
                codec::str_list(delete.iter().map(String::as_str)),
            ),
        ]);
        self.call("tags", Some(req)).await.map(|_| ())
    }

    /// Debug counters, section -> key -> value.
    pub async fn stats(&self) -> Result<Stats> {
        let body = self.call_body("stats", None).await?;
        let mut out = Stats::new();
        if let Some(sections) = body.as_map() {
            for (k, v) in sections {
                let Some(section) = codec::as_string(k) else {
                    continue;
                };
                let entry = out.entry(section).or_default();
                if let Some(m) = v.as_map() {
                    for (k2, v2) in m {
                        let key = codec::as_string(k2).unwrap_or_default();
                        let val = codec::as_string(v2).unwrap_or_else(|| v2.to_string());
                        entry.insert(key, val);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Subscribes to events: `filter` is Serf's (`*`, `member-join`,
    /// `user:deploy,query`, ...).
    /// `get-coordinate`: the agent's last known network coordinate of
    /// `node`, `None` when it has none.
    pub async fn get_coordinate(
        &self,
        node: &str,
    ) -> Result<Option<serf_proto::coordinate::Coordinate>> {
        let body = self
            .call_body(
                "get-coordinate",
                Some(codec::map(vec![("Node", node.into())])),
            )
            .await?;
        if !codec::get_bool(&body, "Ok") {
            return Ok(None);
        }
        let coord = codec::get(&body, "Coord")
            .ok_or_else(|| Error::Protocol("get-coordinate: no Coord".into()))?;
        serf_proto::coordinate::Coordinate::from_value(coord)
            .map(Some)
            .map_err(|e| Error::Protocol(format!("get-coordinate: {e}")))
    }

    pub async fn stream(&self, filter: &str) -> Result<EventStream> {
        let (seq, rx) = self
            .open_stream("stream", codec::map(vec![("Type", filter.into())]))
            .await?;
        Ok(EventStream {
            client: self.clone(),
            seq,
            rx,
        })
    }

    /// Subscribes to the agent's log lines at `level` or above
    /// (`trace`, `debug`, `info`, `warn`, `err`).
    pub async fn monitor(&self, level: &str) -> Result<LogStream> {
        let (seq, rx) = self
            .open_stream(
                "monitor",
                codec::map(vec![("LogLevel", level.to_uppercase().into())]),
            )
            .await?;
        Ok(LogStream {
            client: self.clone(),
            seq,
            rx,
        })
    }

    /// Sends a query; acks and responses arrive on the channel, then `Done`.
    pub async fn query(&self, params: QueryParams) -> Result<mpsc::Receiver<QueryReply>> {
        let req = codec::map(vec![
            (
                "FilterNodes",
                codec::str_list(params.filter_nodes.iter().map(String::as_str)),
            ),
            (
                "FilterTags",
                codec::str_map(
                    params
                        .filter_tags
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                ),
            ),
            ("RequestAck", params.request_ack.into()),
            ("RelayFactor", params.relay_factor.into()),
            (
                "Timeout",
                (params.timeout.as_nanos().min(i64::MAX as u128) as i64).into(),
            ),
            ("Name", params.name.as_str().into()),
            ("Payload", codec::bin(&params.payload)),
        ]);
        let (seq, mut raw) = self.open_stream("query", req).await?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let dispatch = self.inner.dispatch.clone();
        tokio::spawn(async move {
            while let Some(rec) = raw.recv().await {
                let reply = match get_str(&rec, "Type").as_str() {
                    "ack" => QueryReply::Ack {
                        from: get_str(&rec, "From"),
                    },
                    "response" => QueryReply::Response {
                        from: get_str(&rec, "From"),
                        payload: get_bytes(&rec, "Payload"),
                    },
                    "done" => break,
                    _ => continue,
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
        let req = codec::map(vec![("ID", id.into()), ("Payload", codec::bin(payload))]);
        self.call("respond", Some(req)).await.map(|_| ())
    }

    /// Installs a base64 key on every member's keyring.
    pub async fn install_key(&self, key: &str) -> Result<KeyResponse> {
        self.key_op("install-key", Some(key)).await
    }

    /// Makes a base64 key the primary one cluster-wide.
    pub async fn use_key(&self, key: &str) -> Result<KeyResponse> {
        self.key_op("use-key", Some(key)).await
    }

    pub async fn remove_key(&self, key: &str) -> Result<KeyResponse> {
        self.key_op("remove-key", Some(key)).await
    }

    pub async fn list_keys(&self) -> Result<KeyResponse> {
        self.key_op("list-keys", None).await
    }

    /// Key operations report per-node errors in the body even when the
    /// header carries an error, so the body is returned in both cases.
    async fn key_op(&self, command: &str, key: Option<&str>) -> Result<KeyResponse> {
        let body = key.map(|k| codec::map(vec![("Key", k.into())]));
        let seq = self.next_seq();
        let (tx, rx) = oneshot::channel();
        self.inner
            .dispatch
            .lock()
            .unwrap()
            .insert(seq, Pending::Once { body: true, tx });
        self.send(command, seq, body.as_ref()).await?;
        match rx.await.unwrap_or(Err(Error::Closed)) {
            Ok(Some(v)) => Ok(key_response(&v)),
            Ok(None) => Ok(KeyResponse::default()),
            Err(e) => Err(e),
        }
    }
}

fn key_response(v: &Value) -> KeyResponse {
    KeyResponse {
        num_nodes: get_u64(v, "NumNodes") as usize,
        num_resp: get_u64(v, "NumResp") as usize,
        num_err: get_u64(v, "NumErr") as usize,
        messages: codec::get_str_pairs(v, "Messages").into_iter().collect(),
        keys: match get(v, "Keys").and_then(Value::as_map) {
            Some(m) => m
                .iter()
                .filter_map(|(k, n)| Some((codec::as_string(k)?, n.as_u64().unwrap_or(0) as usize)))
                .collect(),
            None => Default::default(),
        },
    }
}

impl EventStream {
    /// The next record; `None` once the connection is gone.
    pub async fn recv(&mut self) -> Option<StreamRecord> {
        loop {
            let v = self.rx.recv().await?;
            if let Some(rec) = stream_record(&v) {
                return Some(rec);
            }
        }
    }

    /// Stops the subscription on the agent.
    pub async fn stop(self) -> Result<()> {
        self.client.stop(self.seq).await
    }
}

impl LogStream {
    pub async fn recv(&mut self) -> Option<String> {
        let v = self.rx.recv().await?;
        Some(get_str(&v, "Log"))
    }

    pub async fn stop(self) -> Result<()> {
        self.client.stop(self.seq).await
    }
}

fn stream_record(v: &Value) -> Option<StreamRecord> {
    let event = get_str(v, "Event");
    let kind = match event.as_str() {
        "user" => {
            return Some(StreamRecord::User {
                ltime: get_u64(v, "LTime"),
                name: get_str(v, "Name"),
                payload: get_bytes(v, "Payload"),
                coalesce: codec::get_bool(v, "Coalesce"),
            })
        }
        "query" => {
            return Some(StreamRecord::Query {
                id: get_u64(v, "ID"),
                ltime: get_u64(v, "LTime"),
                name: get_str(v, "Name"),
                payload: get_bytes(v, "Payload"),
            })
        }
        "member-join" => MemberEventKind::Join,
        "member-leave" => MemberEventKind::Leave,
        "member-failed" => MemberEventKind::Failed,
        "member-update" => MemberEventKind::Update,
        "member-reap" => MemberEventKind::Reap,
        _ => return None,
    };
    Some(StreamRecord::Member {
        kind,
        members: codec::members_from_list(v, "Members"),
    })
}

/// Reads headers (and bodies) and routes them by `Seq`. Ends on EOF or
/// garbage, which drops every pending sender: callers see `Closed`.
async fn read_loop(mut reader: ValueReader<tokio::net::tcp::OwnedReadHalf>, dispatch: Dispatch) {
    loop {
        let header = match reader.next().await {
            Ok(Some(v)) => v,
            Ok(None) | Err(_) => break,
        };
        let seq = get_u64(&header, "Seq");
        let error = get_str(&header, "Error");
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
                    match reader.next().await {
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
                let rec = match reader.next().await {
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
                if reader.next().await.ok().flatten().is_none() {
                    break;
                }
            }
        }
    }
    dispatch.lock().unwrap().clear();
}
