//! Interoperation with the real serf 0.9.4 (`/usr/bin/serf`, Debian's
//! package): a mixed cluster of real `serf agent` processes and our agent,
//! on 127.0.0.1 only.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gossip::agent::{self, Agent};
use gossip::model::{AgentConfig, AgentHandle, Event, MemberStatus};

const SERF: &str = "/usr/bin/serf";

fn serf_bin() -> &'static str {
    assert!(
        Path::new(SERF).exists(),
        "{SERF} is missing: install Debian's serf package (apt-get install serf)"
    );
    SERF
}

/// A port free for both TCP and UDP on 127.0.0.1.
fn free_port() -> u16 {
    for _ in 0..50 {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = t.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free port");
}

/// A real serf agent, killed when dropped.
struct SerfProc {
    child: Child,
    name: String,
    bind: SocketAddr,
    rpc: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "gossip-interop-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl SerfProc {
    fn start(
        name: &str,
        tags: &[(&str, &str)],
        join: Option<SocketAddr>,
        key: Option<&str>,
    ) -> SerfProc {
        let dir = TempDir::new(name);
        let bind: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let rpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let events = dir.0.join("events.log");
        let handler = dir.0.join("handler.sh");
        std::fs::write(
            &handler,
            format!(
                "#!/bin/sh\n{{ echo \"EVENT $SERF_EVENT $SERF_USER_EVENT $SERF_QUERY_NAME\"; cat; echo; }} >> {}\n\
                 if [ \"$SERF_EVENT\" = query ]; then printf 'pong-%s' \"$SERF_SELF_NAME\"; fi\n",
                events.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(serf_bin());
        cmd.arg("agent")
            .arg(format!("-node={name}"))
            .arg(format!("-bind={bind}"))
            .arg(format!("-rpc-addr={rpc}"))
            .arg(format!("-event-handler=sh {}", handler.display()))
            .arg("-log-level=debug");
        for (k, v) in tags {
            cmd.arg(format!("-tag={k}={v}"));
        }
        if let Some(j) = join {
            cmd.arg(format!("-join={j}"));
        }
        if let Some(k) = key {
            cmd.arg(format!("-encrypt={k}"));
        }
        let log = dir.0.join("serf.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("spawn serf");
        let p = SerfProc {
            child,
            name: name.to_string(),
            bind,
            rpc,
            log,
            _dir: dir,
        };
        poll("serf RPC answers", Duration::from_secs(30), || {
            p.members().ok().map(|_| ())
        });
        p
    }

    fn events_file(&self) -> PathBuf {
        self._dir.0.join("events.log")
    }

    fn rpc_cmd(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(serf_bin())
            .arg(args[0])
            // Go's flag parsing stops at the first positional argument.
            .arg(format!("-rpc-addr={}", self.rpc))
            .args(&args[1..])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `serf members -format json` as (name, addr, status, tags).
    fn members(&self) -> Result<Vec<(String, String, String, serde_json::Value)>, String> {
        let s = self.rpc_cmd(&["members", "-format=json"])?;
        let v: serde_json::Value = serde_json::from_str(&s).map_err(|e| e.to_string())?;
        Ok(v["members"]
            .as_array()
            .ok_or("no members")?
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or("").to_string(),
                    m["addr"].as_str().unwrap_or("").to_string(),
                    m["status"].as_str().unwrap_or("").to_string(),
                    m["tags"].clone(),
                )
            })
            .collect())
    }

    fn status_of(&self, name: &str) -> Option<String> {
        self.members()
            .ok()?
            .into_iter()
            .find(|m| m.0 == name)
            .map(|m| m.2)
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SerfProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() || std::env::var_os("GOSSIP_SHOW_SERF_LOGS").is_some() {
            eprintln!("--- log of serf {} ---\n{}", self.name, self.log_text());
        }
    }
}

/// Polls `f` until it yields; prints how long it took (the measurements
/// quoted in the report come from these lines: `--nocapture`).
fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let deadline = start + limit;
    loop {
        if let Some(v) = f() {
            eprintln!("[interop] {what}: {:.1?}", start.elapsed());
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn apoll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let deadline = start + limit;
    loop {
        if let Some(v) = f() {
            eprintln!("[interop] {what}: {:.1?}", start.elapsed());
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn start_ours(
    name: &str,
    tags: &[(&str, &str)],
    join: Vec<String>,
    keys: Vec<Vec<u8>>,
) -> Arc<Agent> {
    let cfg = AgentConfig {
        node_name: name.to_string(),
        bind: "127.0.0.1:0".parse().unwrap(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        join,
        encrypt_keys: keys,
        ..AgentConfig::default()
    };
    agent::start(cfg).await.expect("our agent starts and joins")
}

/// Runs the blocking serf CLI off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_cluster_join_tags_events_leave() {
    let serf = Arc::new(blocking(|| SerfProc::start("real1", &[("role", "lb")], None, None)).await);
    let ours = start_ours(
        "ours1",
        &[("role", "backend"), ("zone", "z1")],
        vec![serf.bind.to_string()],
        vec![],
    )
    .await;
    let our_addr = ours.local_addr();

    // We see serf alive with its address and tags.
    let m = apoll("ours sees real1 alive", Duration::from_secs(30), || {
        ours.members()
            .into_iter()
            .find(|m| m.name == "real1" && m.status == MemberStatus::Alive)
    })
    .await;
    assert_eq!(SocketAddr::new(m.addr, m.port), serf.bind);
    assert_eq!(m.tag("role"), Some("lb"));

    // serf sees us alive with our address and tags.
    let s = serf.clone();
    let (addr, tags) = blocking(move || {
        poll("serf sees ours1 alive", Duration::from_secs(30), || {
            s.members()
                .ok()?
                .into_iter()
                .find(|m| m.0 == "ours1" && m.2 == "alive")
                .map(|m| (m.1, m.3))
        })
    })
    .await;
    assert_eq!(addr, our_addr.to_string());
    assert_eq!(tags["role"], "backend");
    assert_eq!(tags["zone"], "z1");

    // serf's handler saw our join, with our address and role on stdin.
    let f = serf.events_file();
    blocking(move || {
        poll(
            "serf's handler got member-join for ours1",
            Duration::from_secs(30),
            || {
                let t = std::fs::read_to_string(&f).ok()?;
                t.lines()
                    .any(|l| l.starts_with("ours1\t127.0.0.1\tbackend\t") && l.contains("zone=z1"))
                    .then_some(())
            },
        )
    })
    .await;

    // A user event from serf reaches us.
    let mut rx = ours.subscribe();
    let s = serf.clone();
    blocking(move || {
        s.rpc_cmd(&["event", "deploy", "v1 payload"])
            .expect("serf event")
    })
    .await;
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match rx.recv().await {
                Ok(Event::User { name, payload, .. }) if name == "deploy" => return payload,
                Ok(_) => {}
                Err(e) => panic!("event stream: {e}"),
            }
        }
    })
    .await
    .expect("user event from serf within 30 s");
    assert_eq!(got, b"v1 payload");

    // Our user event reaches serf's handler.
    ours.user_event("from-ours", b"hello serf".to_vec(), false)
        .await
        .unwrap();
    let f = serf.events_file();
    blocking(move || {
        poll(
            "serf handler got our event",
            Duration::from_secs(30),
            || {
                let t = std::fs::read_to_string(&f).ok()?;
                (t.contains("EVENT user from-ours") && t.contains("hello serf")).then_some(())
            },
        )
    })
    .await;

    // A tag change is seen by serf.
    ours.set_tags(vec![("color".into(), "blue".into())], vec!["zone".into()])
        .await
        .unwrap();
    let s = serf.clone();
    blocking(move || {
        poll("serf sees our new tags", Duration::from_secs(30), || {
            let m = s.members().ok()?.into_iter().find(|m| m.0 == "ours1")?;
            (m.3["color"] == "blue" && m.3.get("zone").is_none()).then_some(())
        })
    })
    .await;

    // Graceful leave: serf shows us as left, and never took us for failed
    // on the way (the intent, sent to it directly, came before the dead
    // notice).
    ours.leave().await.unwrap();
    ours.shutdown().await.unwrap();
    let s = serf.clone();
    blocking(move || {
        poll("serf sees ours1 left", Duration::from_secs(30), || {
            (s.status_of("ours1")? == "left").then_some(())
        })
    })
    .await;
    let log = serf.log_text();
    assert!(log.contains("EventMemberLeave: ours1"), "{log}");
    assert!(!log.contains("EventMemberFailed: ours1"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_detected_both_ways() {
    let mut real = blocking(|| SerfProc::start("real2", &[], None, None)).await;
    let watcher = Arc::new(blocking(|| SerfProc::start("real3", &[], None, None)).await);
    let ours = start_ours(
        "ours2",
        &[],
        vec![real.bind.to_string(), watcher.bind.to_string()],
        vec![],
    )
    .await;
    apoll(
        "ours sees both serfs alive",
        Duration::from_secs(30),
        || {
            let alive = ours
                .members()
                .iter()
                .filter(|m| m.status == MemberStatus::Alive)
                .count();
            (alive == 3).then_some(())
        },
    )
    .await;
    let w = watcher.clone();
    blocking(move || {
        poll(
            "real3 sees real2 through us",
            Duration::from_secs(30),
            || (w.status_of("real2")? == "alive").then_some(()),
        )
    })
    .await;

    // kill -9 of a serf: we mark it failed.
    blocking(move || {
        real.kill9();
        real
    })
    .await;
    apoll("ours sees real2 failed", Duration::from_secs(60), || {
        ours.members()
            .into_iter()
            .find(|m| m.name == "real2" && m.status == MemberStatus::Failed)
    })
    .await;

    // force-leave from our side: the other serf moves real2 to left.
    ours.force_leave("real2", false).await.unwrap();
    let w = watcher.clone();
    blocking(move || {
        poll(
            "real3 sees real2 left after our force-leave",
            Duration::from_secs(60),
            || (w.status_of("real2")? == "left").then_some(()),
        )
    })
    .await;
    assert!(ours
        .members()
        .iter()
        .any(|m| m.name == "real2" && m.status == MemberStatus::Left));

    // Our agent stops without leaving: serf marks it failed.
    ours.shutdown().await.unwrap();
    drop(ours);
    let w = watcher.clone();
    blocking(move || {
        poll("real3 sees ours2 failed", Duration::from_secs(60), || {
            (w.status_of("ours2")? == "failed").then_some(())
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_cluster() {
    let key = Command::new(serf_bin())
        .arg("keygen")
        .output()
        .expect("serf keygen");
    let key = String::from_utf8(key.stdout).unwrap().trim().to_string();
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&key)
        .unwrap();
    let k2 = key.clone();
    let serf = Arc::new(
        blocking(move || SerfProc::start("real4", &[("role", "x")], None, Some(&k2))).await,
    );

    // Without the key we cannot join.
    let cfg = AgentConfig {
        node_name: "nokey".into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        join: vec![serf.bind.to_string()],
        ..AgentConfig::default()
    };
    assert!(
        agent::start(cfg).await.is_err(),
        "join without the key must fail"
    );

    let ours = start_ours(
        "ours4",
        &[("role", "y")],
        vec![serf.bind.to_string()],
        vec![raw],
    )
    .await;
    apoll(
        "ours sees real4 alive (encrypted)",
        Duration::from_secs(30),
        || {
            ours.members()
                .into_iter()
                .find(|m| m.name == "real4" && m.status == MemberStatus::Alive)
        },
    )
    .await;
    let s = serf.clone();
    blocking(move || {
        poll(
            "real4 sees ours4 alive (encrypted)",
            Duration::from_secs(30),
            || (s.status_of("ours4")? == "alive").then_some(()),
        )
    })
    .await;
    // Gossip (UDP) works too: an event from serf arrives.
    let mut rx = ours.subscribe();
    let s = serf.clone();
    blocking(move || s.rpc_cmd(&["event", "enc", "secret"]).expect("serf event")).await;
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(Event::User { name, .. }) = rx.recv().await {
                if name == "enc" {
                    return;
                }
            }
        }
    })
    .await
    .expect("encrypted user event within 30 s");

    // The same key from a keyring file (serf's format: a JSON list of
    // base64 keys, the first one primary).
    let dir = TempDir::new("keyring");
    let keyring = dir.0.join("keyring.json");
    std::fs::write(&keyring, format!("[\"{key}\"]")).unwrap();
    let cfg = AgentConfig {
        node_name: "ours4k".into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        join: vec![serf.bind.to_string()],
        keyring_file: Some(keyring.clone()),
        ..AgentConfig::default()
    };
    let from_file = agent::start(cfg)
        .await
        .expect("joins with the keyring file");
    let s = serf.clone();
    blocking(move || {
        poll(
            "real4 sees ours4k alive (keyring file)",
            Duration::from_secs(30),
            || (s.status_of("ours4k")? == "alive").then_some(()),
        )
    })
    .await;
    from_file.leave().await.unwrap();
    from_file.shutdown().await.unwrap();
    let kept: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(&keyring).unwrap()).unwrap();
    assert_eq!(kept, vec![key], "the keyring file is kept");

    ours.leave().await.unwrap();
    ours.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_both_ways_and_dns_join() {
    let serf = Arc::new(blocking(|| SerfProc::start("real5", &[("role", "q")], None, None)).await);
    // Join by DNS name: localhost resolves to 127.0.0.1 (and maybe ::1,
    // which refuses: every resolved address is tried).
    let ours = start_ours(
        "ours5",
        &[],
        vec![format!("localhost:{}", serf.bind.port())],
        vec![],
    )
    .await;
    apoll("ours sees real5 alive", Duration::from_secs(30), || {
        ours.members()
            .into_iter()
            .find(|m| m.name == "real5" && m.status == MemberStatus::Alive)
    })
    .await;

    // Our query: serf acks and its handler answers.
    let mut rx = ours
        .query(gossip::model::QueryParams {
            name: "whoami".into(),
            payload: b"?".to_vec(),
            request_ack: true,
            timeout: Duration::from_secs(8),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut acked = false;
    let mut answer = None;
    while let Some(r) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("query finishes")
    {
        match r {
            gossip::model::QueryReply::Ack { from } if from == "real5" => acked = true,
            gossip::model::QueryReply::Response { from, payload } if from == "real5" => {
                answer = Some(payload)
            }
            gossip::model::QueryReply::Done => break,
            _ => {}
        }
    }
    assert!(acked, "no ack from real5");
    assert_eq!(answer.as_deref(), Some(&b"pong-real5"[..]));

    // serf's query: we receive it and answer.
    let mut ev = ours.subscribe();
    let s = serf.clone();
    let cli = tokio::task::spawn_blocking(move || {
        s.rpc_cmd(&["query", "-timeout=8s", "-format=json", "ask", "payload-x"])
    });
    let id = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(Event::Query(q)) = ev.recv().await {
                if q.name == "ask" {
                    assert_eq!(q.payload, b"payload-x");
                    return q.id;
                }
            }
        }
    })
    .await
    .expect("serf's query reaches us");
    ours.respond(id, b"answer-from-ours".to_vec())
        .await
        .unwrap();
    let out = cli.await.unwrap().expect("serf query runs");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json from serf query");
    assert_eq!(
        v["Responses"]["ours5"], "answer-from-ours",
        "serf query output: {out}"
    );
    assert!(
        v["Acks"].as_array().unwrap().iter().any(|a| a == "ours5"),
        "serf got no ack from us: {out}"
    );

    // Filters: a tag filter that matches only serf keeps us out; a node
    // filter naming us brings us in.
    let mut ev = ours.subscribe();
    let s = serf.clone();
    let out = blocking(move || {
        s.rpc_cmd(&[
            "query",
            "-timeout=3s",
            "-format=json",
            "-tag=role=^q$",
            "tagged",
            "x",
        ])
        .expect("serf query with a tag filter")
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Responses"]["real5"], "pong-real5", "{out}");
    assert!(v["Responses"].get("ours5").is_none(), "{out}");
    // The query is over: had we processed it, its event would be queued.
    while let Ok(e) = ev.try_recv() {
        assert!(
            !matches!(&e, Event::Query(q) if q.name == "tagged"),
            "a filtered-out query reached us"
        );
    }
    let mut rx = ours
        .query(gossip::model::QueryParams {
            name: "only-q".into(),
            filter_tags: [("role".to_string(), "^q$".to_string())]
                .into_iter()
                .collect(),
            timeout: Duration::from_secs(3),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut from = Vec::new();
    while let Some(r) = rx.recv().await {
        match r {
            gossip::model::QueryReply::Response { from: f, .. } => from.push(f),
            gossip::model::QueryReply::Done => break,
            _ => {}
        }
    }
    assert_eq!(from, vec!["real5".to_string()]);
    ours.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_join_waits_for_a_late_serf() {
    let port = free_port();
    let cfg = AgentConfig {
        node_name: "ours6".into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        retry_join: vec![format!("127.0.0.1:{port}")],
        retry_interval: Duration::from_millis(500),
        ..AgentConfig::default()
    };
    let ours = agent::start(cfg).await.expect("start with retry_join");
    assert_eq!(ours.members().len(), 1);
    // serf comes up later on that port.
    let serf = blocking(move || {
        let dir = TempDir::new("late");
        let rpc = free_port();
        let child = Command::new(serf_bin())
            .arg("agent")
            .arg("-node=late")
            .arg(format!("-bind=127.0.0.1:{port}"))
            .arg(format!("-rpc-addr=127.0.0.1:{rpc}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serf");
        SerfProc {
            child,
            name: "late".into(),
            bind: format!("127.0.0.1:{port}").parse().unwrap(),
            rpc: format!("127.0.0.1:{rpc}").parse().unwrap(),
            log: dir.0.join("none.log"),
            _dir: dir,
        }
    })
    .await;
    apoll(
        "retry-join reaches the late serf",
        Duration::from_secs(30),
        || {
            ours.members()
                .into_iter()
                .find(|m| m.name == "late" && m.status == MemberStatus::Alive)
        },
    )
    .await;
    ours.shutdown().await.unwrap();
    drop(serf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_on_both_sides_come_back_alive() {
    let serf = blocking(|| SerfProc::start("real7", &[], None, None)).await;
    let serf_bind = serf.bind;
    let ours = start_ours("ours7", &[("v", "1")], vec![serf_bind.to_string()], vec![]).await;
    let port = ours.local_addr().port();
    let serf = Arc::new(serf);
    let s = serf.clone();
    blocking(move || {
        poll("real7 sees ours7 alive", Duration::from_secs(30), || {
            (s.status_of("ours7")? == "alive").then_some(())
        })
    })
    .await;

    // Ours crashes (no leave) and comes back on the same port.
    ours.shutdown().await.unwrap();
    drop(ours);
    let s = serf.clone();
    blocking(move || {
        poll("real7 sees ours7 failed", Duration::from_secs(60), || {
            (s.status_of("ours7")? == "failed").then_some(())
        })
    })
    .await;
    let ours = agent::start(AgentConfig {
        node_name: "ours7".into(),
        bind: format!("127.0.0.1:{port}").parse().unwrap(),
        tags: vec![("v".into(), "2".into())],
        join: vec![serf_bind.to_string()],
        ..AgentConfig::default()
    })
    .await
    .expect("restarted agent joins serf");
    let s = serf.clone();
    blocking(move || {
        poll(
            "real7 sees ours7 alive again with new tags",
            Duration::from_secs(60),
            || {
                let m = s.members().ok()?.into_iter().find(|m| m.0 == "ours7")?;
                (m.2 == "alive" && m.3["v"] == "2").then_some(())
            },
        )
    })
    .await;

    // serf is killed and restarted on the same port, joining us.
    let mut serf = Arc::try_unwrap(serf).ok().expect("only owner");
    blocking(move || serf.kill9()).await;
    apoll("ours sees real7 failed", Duration::from_secs(60), || {
        ours.members()
            .into_iter()
            .find(|m| m.name == "real7" && m.status == MemberStatus::Failed)
    })
    .await;
    let our_addr = ours.local_addr();
    let serf2 = blocking(move || {
        let dir = TempDir::new("real7b");
        let rpc = free_port();
        let log = dir.0.join("serf.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(serf_bin())
            .arg("agent")
            .arg("-node=real7")
            .arg(format!("-bind={serf_bind}"))
            .arg(format!("-rpc-addr=127.0.0.1:{rpc}"))
            .arg(format!("-join={our_addr}"))
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("spawn serf");
        SerfProc {
            child,
            name: "real7b".into(),
            bind: serf_bind,
            rpc: format!("127.0.0.1:{rpc}").parse().unwrap(),
            log,
            _dir: dir,
        }
    })
    .await;
    apoll(
        "ours sees real7 alive again",
        Duration::from_secs(60),
        || {
            ours.members()
                .into_iter()
                .find(|m| m.name == "real7" && m.status == MemberStatus::Alive)
        },
    )
    .await;
    ours.shutdown().await.unwrap();
    drop(serf2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyring_operations_across_the_cluster() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let gen = || {
        let out = Command::new(serf_bin())
            .arg("keygen")
            .output()
            .expect("serf keygen");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (k1, k2) = (gen(), gen());
    let k1c = k1.clone();
    let serf = Arc::new(blocking(move || SerfProc::start("real8", &[], None, Some(&k1c))).await);
    let ours = start_ours(
        "ours8",
        &[],
        vec![serf.bind.to_string()],
        vec![b64.decode(&k1).unwrap()],
    )
    .await;
    let s = serf.clone();
    blocking(move || {
        poll("real8 sees ours8 alive", Duration::from_secs(30), || {
            (s.status_of("ours8")? == "alive").then_some(())
        })
    })
    .await;

    // We install a key: both nodes answer and succeed.
    let r = ours.install_key(b64.decode(&k2).unwrap()).await.unwrap();
    assert_eq!((r.num_nodes, r.num_resp, r.num_err), (2, 2, 0), "{r:?}");
    // serf lists it on both nodes.
    let s = serf.clone();
    let k2c = k2.clone();
    blocking(move || {
        let out = s.rpc_cmd(&["keys", "-list"]).expect("serf keys -list");
        let line = out
            .lines()
            .find(|l| l.contains(&k2c))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(line.contains("[2/2]"), "{out}");
    })
    .await;

    // serf switches the primary key and removes the old one: we follow.
    let s = serf.clone();
    let (k1c, k2c) = (k1.clone(), k2.clone());
    blocking(move || {
        s.rpc_cmd(&["keys", &format!("-use={k2c}")])
            .expect("serf keys -use");
        s.rpc_cmd(&["keys", &format!("-remove={k1c}")])
            .expect("serf keys -remove");
    })
    .await;
    let l = ours.list_keys().await.unwrap();
    assert_eq!(l.keys.get(&k2), Some(&2), "{l:?}");
    assert!(!l.keys.contains_key(&k1), "{l:?}");

    // Gossip still flows with the new key only.
    let mut rx = ours.subscribe();
    let s = serf.clone();
    blocking(move || {
        s.rpc_cmd(&["event", "after-rotate", "x"])
            .expect("serf event")
    })
    .await;
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(Event::User { name, .. }) = rx.recv().await {
                if name == "after-rotate" {
                    return;
                }
            }
        }
    })
    .await
    .expect("event after key rotation");
    ours.shutdown().await.unwrap();
}

/// Name conflicts, both ways. A real serf started under one of our names
/// asks the cluster (`_serf_conflict`); our agents answer in Serf's format,
/// so it counts every answer and gives the name up. Our agent started under
/// a real serf's name asks too, reads the real serfs' answers, and stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_names_lose_the_vote_both_ways() {
    let real_a = Arc::new(blocking(|| SerfProc::start("realA", &[], None, None)).await);
    let seed = real_a.bind.to_string();
    let ours_b = start_ours("oursB", &[], vec![seed.clone()], vec![]).await;
    let ours_c = start_ours("oursC", &[], vec![seed.clone()], vec![]).await;
    let real_e =
        Arc::new(blocking(move || SerfProc::start("realE", &[], seed.parse().ok(), None)).await);
    apoll(
        "oursC sees four members alive",
        Duration::from_secs(30),
        || {
            let alive = ours_c
                .members()
                .iter()
                .filter(|m| m.status == MemberStatus::Alive)
                .count();
            (alive == 4).then_some(())
        },
    )
    .await;

    // A real serf claims "oursB" from another address.
    let bind = real_a.bind;
    let dup = blocking(move || SerfProc::start("oursB", &[], Some(bind), None)).await;
    let dup = blocking(move || {
        poll(
            "the duplicate serf gives the name up",
            Duration::from_secs(60),
            || {
                dup.log_text()
                    .contains("minority in name conflict resolution")
                    .then_some(())
            },
        );
        dup
    })
    .await;
    // realA, oursC and realE answered (oursB does not answer about itself);
    // an answer serf could not decode would not be counted.
    let log = dup.log_text();
    assert!(log.contains("[0 / 3]"), "serf's tally:\n{log}");
    drop(dup);

    // Our agent claims "realE" from another address.
    let dup = start_ours("realE", &[], vec![real_a.bind.to_string()], vec![]).await;
    let why = tokio::time::timeout(Duration::from_secs(60), dup.name_conflict_lost())
        .await
        .expect("our duplicate gives the name up");
    eprintln!("[interop] our duplicate: {why}");
    // realA (serf), oursB and oursC answered; realE does not answer about itself.
    assert!(why.contains("0 of 3 members"), "{why}");
    dup.shutdown().await.unwrap();
    drop(dup);

    // The rightful owners keep their names and addresses.
    let e_addr = real_e.bind;
    apoll(
        "oursC still sees realE at its address",
        Duration::from_secs(30),
        || {
            ours_c.members().into_iter().find(|m| {
                m.name == "realE"
                    && m.status == MemberStatus::Alive
                    && m.addr == e_addr.ip()
                    && m.port == e_addr.port()
            })
        },
    )
    .await;
    let b_port = ours_b.local_addr().port();
    let a = real_a.clone();
    blocking(move || {
        poll(
            "realA still sees oursB at its address",
            Duration::from_secs(30),
            || {
                let v: serde_json::Value =
                    serde_json::from_str(&a.rpc_cmd(&["members", "-format=json"]).ok()?).ok()?;
                v["members"].as_array()?.iter().find(|m| {
                    m["name"] == "oursB"
                        && m["status"] == "alive"
                        && m["port"].as_u64() == Some(u64::from(b_port))
                })?;
                Some(())
            },
        )
    })
    .await;
    ours_b.shutdown().await.unwrap();
    ours_c.shutdown().await.unwrap();
}

/// Three real serf agents and three of ours, each half joining through the
/// other: one cluster of six where everyone sees everyone alive; a user
/// event from each side runs the handlers of all three serfs and reaches
/// all three of ours; a tag change on each side is seen on the other; a
/// graceful leave of one of each is `left` everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_and_three_form_one_cluster() {
    let r1 = blocking(|| SerfProc::start("mix-r1", &[("side", "serf")], None, None)).await;
    let r1_bind = r1.bind;
    let o1 = start_ours(
        "mix-o1",
        &[("side", "ours")],
        vec![r1_bind.to_string()],
        vec![],
    )
    .await;
    let o1_addr = o1.local_addr();
    let r2 =
        blocking(move || SerfProc::start("mix-r2", &[("side", "serf")], Some(o1_addr), None)).await;
    let o2 = start_ours(
        "mix-o2",
        &[("side", "ours")],
        vec![r2.bind.to_string()],
        vec![],
    )
    .await;
    let o2_addr = o2.local_addr();
    let r3 =
        blocking(move || SerfProc::start("mix-r3", &[("side", "serf")], Some(o2_addr), None)).await;
    let o3 = start_ours(
        "mix-o3",
        &[("side", "ours")],
        vec![r3.bind.to_string()],
        vec![],
    )
    .await;
    let reals = Arc::new([r1, r2, r3]);
    let ours = [o1, o2, o3];
    let names = ["mix-r1", "mix-r2", "mix-r3", "mix-o1", "mix-o2", "mix-o3"];

    // Everyone sees everyone alive, with the right side tag. A member that
    // missed a join's gossip learns it at its next push-pull (every 30 s,
    // staggered), as in memberlist: the deadline allows for that.
    for o in &ours {
        apoll(
            &format!("{} sees six alive", o.local_member().name),
            Duration::from_secs(75),
            || {
                let ms = o.members();
                names
                    .iter()
                    .all(|n| {
                        ms.iter().any(|m| {
                            m.name == *n
                                && m.status == MemberStatus::Alive
                                && m.tag("side")
                                    == Some(if n.contains("-r") { "serf" } else { "ours" })
                        })
                    })
                    .then_some(())
            },
        )
        .await;
    }
    let rs = reals.clone();
    blocking(move || {
        for r in rs.iter() {
            poll(
                &format!("{} sees six alive", r.name),
                Duration::from_secs(75),
                || {
                    let ms = r.members().ok()?;
                    names
                        .iter()
                        .all(|n| ms.iter().any(|m| m.0 == *n && m.2 == "alive"))
                        .then_some(())
                },
            );
        }
    })
    .await;

    // A user event from each side: all three serfs run their handler, all
    // three of ours deliver it. Gossip alone misses a member now and then
    // (each node passes an event on a few times, to random peers); the
    // member then gets it from the recent events of its next push-pull
    // (every 30 s, staggered), as in Serf: the deadline allows for that.
    let event_deadline = Duration::from_secs(75);
    for (from_serf, event) in [(true, "from-serf"), (false, "from-ours")] {
        let mut rxs: Vec<_> = ours.iter().map(|o| o.subscribe()).collect();
        if from_serf {
            let rs = reals.clone();
            blocking(move || rs[2].rpc_cmd(&["event", event, "p"]).expect("serf event")).await;
        } else {
            ours[0]
                .user_event(event, b"p".to_vec(), false)
                .await
                .unwrap();
        }
        for (i, rx) in rxs.iter_mut().enumerate() {
            tokio::time::timeout(event_deadline, async {
                loop {
                    match rx.recv().await {
                        Ok(Event::User { name, .. }) if name == event => return,
                        Ok(_) => {}
                        Err(e) => panic!("event stream: {e}"),
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("mix-o{} did not get {event}", i + 1));
        }
        let rs = reals.clone();
        blocking(move || {
            for r in rs.iter() {
                let f = r.events_file();
                poll(
                    &format!("{}'s handler ran for {event}", r.name),
                    event_deadline,
                    || {
                        let t = std::fs::read_to_string(&f).ok()?;
                        t.contains(&format!("EVENT user {event}")).then_some(())
                    },
                );
            }
        })
        .await;
    }

    // Tag changes cross over.
    ours[1]
        .set_tags(vec![("color".into(), "green".into())], vec![])
        .await
        .unwrap();
    let rs = reals.clone();
    blocking(move || {
        rs[0]
            .rpc_cmd(&["tags", "-set", "color=red"])
            .expect("serf tags");
        poll(
            "mix-r3 sees mix-o2's new tag",
            Duration::from_secs(30),
            || {
                let m = rs[2]
                    .members()
                    .ok()?
                    .into_iter()
                    .find(|m| m.0 == "mix-o2")?;
                (m.3["color"] == "green").then_some(())
            },
        );
    })
    .await;
    apoll(
        "mix-o3 sees mix-r1's new tag",
        Duration::from_secs(30),
        || {
            ours[2]
                .members()
                .into_iter()
                .find(|m| m.name == "mix-r1" && m.tag("color") == Some("red"))
        },
    )
    .await;

    // One of each leaves gracefully: `left` on both sides.
    ours[0].leave().await.unwrap();
    ours[0].shutdown().await.unwrap();
    let rs = reals.clone();
    blocking(move || {
        rs[1].rpc_cmd(&["leave"]).expect("serf leave");
        poll(
            "mix-r3 sees mix-o1 and mix-r2 left",
            Duration::from_secs(30),
            || {
                (rs[2].status_of("mix-o1")? == "left" && rs[2].status_of("mix-r2")? == "left")
                    .then_some(())
            },
        );
    })
    .await;
    for o in &ours[1..] {
        apoll(
            "ours see mix-o1 and mix-r2 left",
            Duration::from_secs(30),
            || {
                let ms = o.members();
                let left = |n: &str| {
                    ms.iter()
                        .any(|m| m.name == n && m.status == MemberStatus::Left)
                };
                (left("mix-o1") && left("mix-r2")).then_some(())
            },
        )
        .await;
    }
    for o in &ours[1..] {
        o.shutdown().await.unwrap();
    }
}

/// Network coordinates both ways: serf learns ours from our acks, we learn
/// serf's from its acks, and `serf rtt` (real CLI) answers against either
/// agent's RPC, as does our `rtt` command against serf's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinates_both_ways() {
    let real = Arc::new(blocking(|| SerfProc::start("coord-serf", &[], None, None)).await);
    let ours = start_ours("coord-ours", &[], vec![real.bind.to_string()], vec![]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let our_rpc = listener.local_addr().unwrap();
    let server = tokio::spawn(gossip::rpc::serve(listener, ours.clone(), None));

    // Each side probes the other once a second; a coordinate comes with
    // every ack.
    let r = real.clone();
    let line = blocking(move || {
        poll(
            "serf estimates the rtt to our node",
            Duration::from_secs(60),
            || r.rpc_cmd(&["rtt", "coord-ours"]).ok(),
        )
    })
    .await;
    assert!(
        line.starts_with("Estimated coord-ours <-> coord-serf rtt: ")
            && line.trim_end().ends_with(" ms"),
        "{line}"
    );
    let theirs = apoll("we hold serf's coordinate", Duration::from_secs(60), || {
        ours.coordinate("coord-serf")
    })
    .await;
    assert_eq!(theirs.vec.len(), gossip::coordinate::DIMENSIONS);
    let mine = ours.coordinate("coord-ours").expect("our own coordinate");
    assert_ne!(
        mine,
        gossip::coordinate::Coordinate::default(),
        "our coordinate never moved"
    );
    let est = mine.distance_to(&theirs).unwrap();
    assert!(
        est < Duration::from_secs(1),
        "loopback estimated at {est:?}"
    );

    // The real CLI against our RPC: one node given, the second is ours.
    let line = blocking(move || {
        Command::new(serf_bin())
            .args(["rtt", &format!("-rpc-addr={our_rpc}"), "coord-serf"])
            .output()
            .unwrap()
    })
    .await;
    assert!(
        line.status.success(),
        "{}",
        String::from_utf8_lossy(&line.stderr)
    );
    let text = String::from_utf8_lossy(&line.stdout);
    assert!(
        text.starts_with("Estimated coord-serf <-> coord-ours rtt: "),
        "{text}"
    );
    // An unknown node: serf's message, from our RPC.
    let out = blocking(move || {
        Command::new(serf_bin())
            .args(["rtt", &format!("-rpc-addr={our_rpc}"), "nobody"])
            .output()
            .unwrap()
    })
    .await;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("Could not find a coordinate for node \"nobody\""),
        "{:?}: {said}",
        out.status
    );

    // Our CLI against serf's RPC.
    let rpc = real.rpc;
    let out = blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_gossip"))
            .args([
                "rtt",
                &format!("-rpc-addr={rpc}"),
                "coord-ours",
                "coord-serf",
            ])
            .output()
            .unwrap()
    })
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("Estimated coord-ours <-> coord-serf rtt: "),
        "{text}"
    );
    server.abort();
    ours.shutdown().await.unwrap();
}
