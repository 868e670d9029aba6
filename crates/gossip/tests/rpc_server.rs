//! `gossip::rpc::serve` driven by the real `serf` 0.9.4 command line (and by
//! our own client), over a small in-test `AgentHandle`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use gossip::model::*;
use gossip::rpc::{Client, MonitorLayer, StreamRecord};
use testkit::{eventually, DEADLINE, SERF};
use tokio::sync::{broadcast, mpsc};

/// What the fake agent was asked to do.
#[derive(Default, Debug)]
struct Calls {
    events: Vec<(String, Vec<u8>, bool)>,
    joins: Vec<(Vec<String>, bool)>,
    force_leaves: Vec<(String, bool)>,
    responds: Vec<(u64, Vec<u8>)>,
    queries: Vec<QueryParams>,
    installed: Vec<Vec<u8>>,
    left: bool,
    shut_down: bool,
}

struct FakeAgent {
    members: Mutex<Vec<Member>>,
    events: broadcast::Sender<Event>,
    calls: Mutex<Calls>,
}

fn member(name: &str, port: u16, tags: &[(&str, &str)], status: MemberStatus) -> Member {
    Member {
        name: name.into(),
        addr: "127.0.0.1".parse().unwrap(),
        port,
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        status,
        protocol: [1, 5, 2],
        delegate: [2, 5, 4],
    }
}

impl FakeAgent {
    fn new() -> Arc<FakeAgent> {
        Arc::new(FakeAgent {
            members: Mutex::new(vec![
                member("alpha", 7946, &[("role", "lb")], MemberStatus::Alive),
                member(
                    "beta-long",
                    7947,
                    &[("role", "backend"), ("zone", "z1")],
                    MemberStatus::Alive,
                ),
                member("gamma", 7948, &[], MemberStatus::Failed),
            ]),
            events: broadcast::channel(64).0,
            calls: Mutex::default(),
        })
    }
}

#[async_trait::async_trait]
impl AgentHandle for FakeAgent {
    fn local_member(&self) -> Member {
        self.members.lock().unwrap()[0].clone()
    }
    fn members(&self) -> Vec<Member> {
        self.members.lock().unwrap().clone()
    }
    async fn join(&self, existing: Vec<String>, replay: bool) -> anyhow::Result<usize> {
        if existing.iter().any(|a| a.contains("nowhere")) {
            anyhow::bail!("Failed to join {}: no such host", existing[0]);
        }
        let n = existing.len();
        self.calls.lock().unwrap().joins.push((existing, replay));
        Ok(n)
    }
    async fn leave(&self) -> anyhow::Result<()> {
        self.calls.lock().unwrap().left = true;
        Ok(())
    }
    async fn force_leave(&self, node: &str, prune: bool) -> anyhow::Result<()> {
        self.calls
            .lock()
            .unwrap()
            .force_leaves
            .push((node.into(), prune));
        Ok(())
    }
    async fn user_event(&self, name: &str, payload: Vec<u8>, coalesce: bool) -> anyhow::Result<()> {
        if payload.len() > 512 {
            anyhow::bail!("user event exceeds limit of 512 bytes");
        }
        self.calls
            .lock()
            .unwrap()
            .events
            .push((name.into(), payload.clone(), coalesce));
        let _ = self.events.send(Event::User {
            ltime: 7,
            name: name.into(),
            payload,
            coalesce,
        });
        Ok(())
    }
    async fn set_tags(
        &self,
        set: Vec<(String, String)>,
        delete: Vec<String>,
    ) -> anyhow::Result<()> {
        let mut ms = self.members.lock().unwrap();
        let me = &mut ms[0];
        me.tags.retain(|(k, _)| !delete.contains(k));
        for (k, v) in set {
            me.tags.retain(|(k2, _)| *k2 != k);
            me.tags.push((k, v));
        }
        let _ = self.events.send(Event::Member {
            kind: MemberEventKind::Update,
            members: vec![me.clone()],
        });
        Ok(())
    }
    async fn query(&self, params: QueryParams) -> anyhow::Result<mpsc::Receiver<QueryReply>> {
        let (tx, rx) = mpsc::channel(8);
        let payload = params.payload.clone();
        // Like Serf, a query ends at its deadline, not after the last reply
        // (serf's CLI can lose records that race with an early "done").
        let deadline = if params.timeout.is_zero() {
            Duration::from_millis(500)
        } else {
            params.timeout
        };
        self.calls.lock().unwrap().queries.push(params);
        tokio::spawn(async move {
            let _ = tx
                .send(QueryReply::Ack {
                    from: "beta-long".into(),
                })
                .await;
            let mut answer = b"echo:".to_vec();
            answer.extend_from_slice(&payload);
            let _ = tx
                .send(QueryReply::Response {
                    from: "beta-long".into(),
                    payload: answer,
                })
                .await;
            tokio::time::sleep(deadline).await;
            let _ = tx.send(QueryReply::Done).await;
        });
        Ok(rx)
    }
    async fn respond(&self, id: u64, payload: Vec<u8>) -> anyhow::Result<()> {
        self.calls.lock().unwrap().responds.push((id, payload));
        Ok(())
    }
    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
    fn coordinate(&self, node: &str) -> Option<gossip::coordinate::Coordinate> {
        (node == "alpha").then(gossip::coordinate::Coordinate::default)
    }
    fn stats(&self) -> Stats {
        let mut s = Stats::new();
        s.entry("agent".into())
            .or_default()
            .insert("name".into(), "alpha".into());
        s.entry("serf".into())
            .or_default()
            .insert("members".into(), "3".into());
        s
    }
    async fn install_key(&self, key: Vec<u8>) -> anyhow::Result<KeyResponse> {
        self.calls.lock().unwrap().installed.push(key);
        Ok(KeyResponse {
            num_nodes: 3,
            num_resp: 3,
            ..Default::default()
        })
    }
    async fn use_key(&self, _key: Vec<u8>) -> anyhow::Result<KeyResponse> {
        anyhow::bail!("use-key is not supported by this test agent")
    }
    async fn remove_key(&self, _key: Vec<u8>) -> anyhow::Result<KeyResponse> {
        anyhow::bail!("remove-key is not supported by this test agent")
    }
    async fn list_keys(&self) -> anyhow::Result<KeyResponse> {
        let mut keys = BTreeMap::new();
        keys.insert("T9jncgl9mbLus+baTTa7q7nPSUrXwbDi2dhbtqir37s=".into(), 3);
        Ok(KeyResponse {
            num_nodes: 3,
            num_resp: 3,
            keys,
            ..Default::default()
        })
    }
    async fn shutdown(&self) -> anyhow::Result<()> {
        self.calls.lock().unwrap().shut_down = true;
        Ok(())
    }
}

/// Starts our server on a free loopback port.
async fn start(auth: Option<&str>) -> (Arc<FakeAgent>, SocketAddr, tokio::task::JoinHandle<()>) {
    let agent = FakeAgent::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(gossip::rpc::serve(
        listener,
        agent.clone(),
        auth.map(str::to_string),
    ));
    (agent, addr, task)
}

/// Runs the real serf CLI (blocking, off the runtime's worker).
async fn serf(args: Vec<String>) -> Output {
    testkit::require(SERF, "serf");
    tokio::task::spawn_blocking(move || {
        Command::new(SERF)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run serf")
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// serf's CLI prints its errors on stdout; look at both streams.
fn both(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// serf prints tags in Go map order: sort each line's last (tags) column.
fn sorted_tags(text: &str) -> String {
    text.lines()
        .map(|l| match l.rsplit_once("  ") {
            Some((head, tags)) => {
                let mut t: Vec<&str> = tags.split(',').collect();
                t.sort();
                format!("{head}  {}\n", t.join(","))
            }
            None => format!("{l}\n"),
        })
        .collect()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serf_members_text_json_and_filters() {
    let (_agent, addr, _task) = start(None).await;
    let rpc = format!("-rpc-addr={addr}");
    let out = serf(args(&["members", &rpc])).await;
    assert!(out.status.success(), "{out:?}");
    let text = sorted_tags(&stdout(&out));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "alpha      127.0.0.1:7946  alive   role=lb",
            "beta-long  127.0.0.1:7947  alive   role=backend,zone=z1",
            // serf trims the output, so the last line loses its glue.
            "gamma      127.0.0.1:7948  failed",
        ],
        "{text}"
    );

    let out = serf(args(&["members", &rpc, "-format=json"])).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let ms = v["members"].as_array().unwrap();
    assert_eq!(ms.len(), 3);
    assert_eq!(ms[1]["name"], "beta-long");
    assert_eq!(ms[1]["addr"], "127.0.0.1:7947");
    assert_eq!(ms[1]["port"], 7947);
    assert_eq!(ms[1]["tags"]["zone"], "z1");
    assert_eq!(ms[1]["protocol"]["version"], 4);

    let out = serf(args(&[
        "members",
        &rpc,
        "-status=alive",
        "-tag",
        "role=back.*",
    ]))
    .await;
    assert_eq!(
        sorted_tags(&stdout(&out)).trim(),
        "beta-long  127.0.0.1:7947  alive  role=backend,zone=z1"
    );
    let out = serf(args(&["members", &rpc, "-name=gam.*"])).await;
    assert!(stdout(&out).starts_with("gamma "), "{out:?}");
    // A bad expression is an error, not a hang or a dropped connection.
    let out = serf(args(&["members", &rpc, "-name=("])).await;
    assert!(!out.status.success());
    assert!(both(&out).contains("Failed to compile regex"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serf_event_tags_join_force_leave_and_leave() {
    let (agent, addr, _task) = start(None).await;
    let rpc = format!("-rpc-addr={addr}");

    let out = serf(args(&["event", &rpc, "deploy", "v1 payload"])).await;
    assert_eq!(
        stdout(&out).trim(),
        "Event 'deploy' dispatched! Coalescing enabled: true"
    );
    let out = serf(args(&[
        "event",
        &rpc,
        "-coalesce=false",
        "big",
        &"x".repeat(600),
    ]))
    .await;
    assert!(!out.status.success());
    assert!(both(&out).contains("exceeds limit of 512 bytes"), "{out:?}");

    let out = serf(args(&[
        "tags",
        &rpc,
        "-set",
        "color=blue",
        "-delete",
        "role",
    ]))
    .await;
    assert_eq!(stdout(&out).trim(), "Successfully updated agent tags");
    assert_eq!(
        agent.local_member().tags,
        vec![("color".to_string(), "blue".to_string())]
    );

    let out = serf(args(&[
        "join",
        &rpc,
        "-replay",
        "10.0.0.1",
        "10.0.0.2:7946",
    ]))
    .await;
    assert_eq!(
        stdout(&out).trim(),
        "Successfully joined cluster by contacting 2 nodes."
    );
    let out = serf(args(&["join", &rpc, "nowhere.invalid"])).await;
    assert!(!out.status.success());
    assert!(
        both(&out).contains("Failed to join nowhere.invalid"),
        "{out:?}"
    );

    let out = serf(args(&["force-leave", &rpc, "gamma"])).await;
    assert!(out.status.success(), "{out:?}");

    let out = serf(args(&["leave", &rpc])).await;
    assert_eq!(stdout(&out).trim(), "Graceful leave complete");

    let calls = agent.calls.lock().unwrap();
    assert_eq!(
        calls.events,
        vec![("deploy".into(), b"v1 payload".to_vec(), true)]
    );
    assert_eq!(
        calls.joins,
        vec![(vec!["10.0.0.1".into(), "10.0.0.2:7946".into()], true)]
    );
    assert_eq!(calls.force_leaves, vec![("gamma".into(), false)]);
    assert!(calls.left && calls.shut_down);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serf_query_info_and_keys() {
    let (agent, addr, _task) = start(None).await;
    let rpc = format!("-rpc-addr={addr}");
    let out = serf(args(&[
        "query",
        &rpc,
        "-timeout=3s",
        "-tag",
        "role=web",
        "ping",
        "hi",
    ]))
    .await;
    // serf's CLI reads acks and responses from two channels in random
    // order, so the two middle lines may come either way round.
    let text = stdout(&out);
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1..3].sort();
    assert_eq!(
        lines,
        [
            "Query 'ping' dispatched",
            "Ack from 'beta-long'",
            "Response from 'beta-long': echo:hi",
            "Total Acks: 1",
            "Total Responses: 1"
        ],
        "{out:?}"
    );
    {
        let calls = agent.calls.lock().unwrap();
        let q = &calls.queries[0];
        assert_eq!(q.name, "ping");
        assert_eq!(q.timeout, Duration::from_secs(3));
        assert!(q.request_ack);
        assert_eq!(q.filter_tags.get("role").map(String::as_str), Some("web"));
    }

    let out = serf(args(&["info", &rpc])).await;
    assert_eq!(
        stdout(&out),
        "agent:\n\tname = alpha\nserf:\n\tmembers = 3\n",
        "{out:?}"
    );

    let out = serf(args(&["keys", &rpc, "-list"])).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("T9jncgl9mbLus+baTTa7q7nPSUrXwbDi2dhbtqir37s=  [3/3]"),
        "{text}"
    );
    let out = serf(args(&[
        "keys",
        &rpc,
        "-install",
        "T9jncgl9mbLus+baTTa7q7nPSUrXwbDi2dhbtqir37s=",
    ]))
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(agent.calls.lock().unwrap().installed[0].len(), 32);
    let out = serf(args(&[
        "keys",
        &rpc,
        "-use",
        "T9jncgl9mbLus+baTTa7q7nPSUrXwbDi2dhbtqir37s=",
    ]))
    .await;
    assert!(!out.status.success());
    assert!(
        both(&out).contains("not supported by this test agent"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serf_monitor_receives_log_lines() {
    init_tracing();
    let (_agent, addr, _task) = start(None).await;
    let mut child = tokio::process::Command::new(SERF)
        .args(["monitor", &format!("-rpc-addr={addr}"), "-log-level=info"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn serf monitor");
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line).await.unwrap() == 0 {
                panic!("serf monitor ended without the line");
            }
            if line.contains("hello monitor") {
                assert!(!line.contains("quiet debug"));
                return line;
            }
        }
    });
    eventually("serf monitor to show our log line", DEADLINE, async || {
        tracing::debug!(target: "agent", "quiet debug");
        tracing::info!(target: "agent", "hello monitor");
        reader.is_finished().then_some(())
    })
    .await;
    let line = reader.await.unwrap();
    assert!(line.contains("[INFO] agent: hello monitor"), "{line}");
    let _ = child.kill().await;
}

/// The monitor layer as the process-wide subscriber (once per test binary).
fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let sub = tracing_subscriber::registry().with(MonitorLayer::new());
        tracing::subscriber::set_global_default(sub).unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_replays_recent_lines_then_follows_at_the_asked_level() {
    init_tracing();
    let (_agent, addr, _task) = start(None).await;
    tracing::warn!(target: "agent", "early warning before any monitor");
    tracing::debug!(target: "agent", "early debug before any monitor");
    let c = Client::connect(addr, None).await.unwrap();
    let mut logs = c.monitor("warn").await.unwrap();
    tracing::info!(target: "agent", "late info below the level");
    tracing::error!(target: "agent", "late error after the monitor");
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some(l) = logs.recv().await {
            let done = l.contains("late error after the monitor");
            seen.push(l);
            if done {
                break;
            }
        }
    })
    .await
    .expect("monitor lines");
    let text = seen.join("\n");
    assert!(
        text.contains("[WARN] agent: early warning before any monitor"),
        "{text}"
    );
    assert!(
        !text.contains("early debug") && !text.contains("late info"),
        "{text}"
    );
    assert!(
        text.contains("[ERR] agent: late error after the monitor"),
        "{text}"
    );
    // A second monitor on the same connection is refused as Serf does.
    let err = c.monitor("info").await.err().unwrap();
    assert_eq!(err.to_string(), "Monitor already exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_enforced_for_serf_and_our_client() {
    let (_agent, addr, _task) = start(Some("k3y")).await;
    let rpc = format!("-rpc-addr={addr}");
    let out = serf(args(&["members", &rpc])).await;
    assert!(!out.status.success());
    assert!(both(&out).contains("Authentication required"));
    let out = serf(args(&["members", &rpc, "-rpc-auth=bad"])).await;
    assert!(both(&out).contains("Invalid authentication token"));
    let out = serf(args(&["members", &rpc, "-rpc-auth=k3y"])).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).lines().count(), 3);
    assert!(Client::connect(addr, Some("k3y")).await.is_ok());
}

#[tokio::test]
async fn our_client_streams_filtered_events_and_responds_to_queries() {
    let (agent, addr, _task) = start(None).await;
    let c = Client::connect(addr, None).await.unwrap();
    let mut s = c.stream("member-update,user:deploy,query").await.unwrap();
    c.user_event("other", b"no", false).await.unwrap();
    c.user_event("deploy", b"yes", false).await.unwrap();
    let rec = tokio::time::timeout(DEADLINE, s.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rec,
        StreamRecord::User {
            ltime: 7,
            name: "deploy".into(),
            payload: b"yes".to_vec(),
            coalesce: false
        }
    );
    c.update_tags(&[("v".into(), "2".into())], &[])
        .await
        .unwrap();
    match tokio::time::timeout(DEADLINE, s.recv())
        .await
        .unwrap()
        .unwrap()
    {
        StreamRecord::Member { kind, members } => {
            assert_eq!(kind, MemberEventKind::Update);
            assert_eq!(members[0].tag("v"), Some("2"));
        }
        other => panic!("{other:?}"),
    }
    // A query event delivered on this stream may be answered, another id not.
    let _ = agent.events.send(Event::Query(IncomingQuery {
        id: 42,
        ltime: 3,
        name: "load".into(),
        payload: b"?".to_vec(),
    }));
    let rec = tokio::time::timeout(DEADLINE, s.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(rec, StreamRecord::Query(IncomingQuery { id: 42, .. })),
        "{rec:?}"
    );
    c.respond(42, b"0.5").await.unwrap();
    let err = c.respond(43, b"x").await.unwrap_err();
    assert_eq!(err.to_string(), "No pending queries matching ID");
    assert_eq!(
        agent.calls.lock().unwrap().responds,
        vec![(42, b"0.5".to_vec())]
    );
    s.stop().await.unwrap();
    assert_eq!(c.members().await.unwrap().len(), 3);
    assert!(c.stream("bogus").await.is_err());
}

#[tokio::test]
async fn unread_stream_records_never_block_other_calls() {
    let (_agent, addr, _task) = start(None).await;
    let c = Client::connect(addr, None).await.unwrap();
    let mut s = c.stream("user").await.unwrap();
    // Far more records than any fixed buffer, none read while calling.
    let n = 3000;
    tokio::time::timeout(DEADLINE, async {
        for i in 0..n {
            c.user_event("tick", format!("{i}").as_bytes(), false)
                .await
                .unwrap();
        }
        assert_eq!(c.members().await.unwrap().len(), 3);
    })
    .await
    .expect("calls blocked behind unread stream records");
    for i in 0..n {
        match tokio::time::timeout(DEADLINE, s.recv()).await.unwrap() {
            Some(StreamRecord::User { payload, .. }) => {
                assert_eq!(payload, format!("{i}").as_bytes())
            }
            other => panic!("record {i}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn garbage_and_missing_handshake_close_only_that_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_agent, addr, _task) = start(None).await;

    // Not a request: the server closes the connection (read_to_end ends).
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(&[0xc1, 0xc1, 0xc1, 0xff]).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, raw.read_to_end(&mut buf))
        .await
        .expect("server closes a garbage connection");

    // A command before the handshake: Serf's error, then the connection closes.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = Vec::new();
    rmpv::encode::write_value(
        &mut req,
        &rmpv::Value::Map(vec![
            ("Command".into(), "members".into()),
            ("Seq".into(), 1u64.into()),
        ]),
    )
    .unwrap();
    raw.write_all(&req).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, raw.read_to_end(&mut buf))
        .await
        .expect("server closes after a missing handshake")
        .unwrap();
    let header = rmpv::decode::read_value(&mut &buf[..]).unwrap();
    let error = header
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_str() == Some("Error"))
        .map(|(_, v)| v.as_str().unwrap().to_string());
    assert_eq!(error.as_deref(), Some("Handshake required"));

    // Other clients are unaffected.
    let c = Client::connect(addr, None).await.unwrap();
    assert_eq!(c.members().await.unwrap().len(), 3);
}
