//! Our agent against itself over real loopback sockets: join, coalesced
//! member events (self included), tags, user events, leave, restart.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{config, wait_member};
use gossip::agent::{self, Agent};
use gossip::model::{AgentConfig, AgentHandle, Event, MemberEventKind, MemberStatus};
use testkit::{eventually, free_port, temp_dir, TempDir};
use tokio::sync::broadcast;

async fn start(name: &str, tags: &[(&str, &str)], join: Vec<String>) -> Arc<Agent> {
    agent::start(config(name, tags, join))
        .await
        .expect("agent starts")
}

/// Waits for a member event of `kind` naming `who`.
async fn member_event(
    rx: &mut broadcast::Receiver<Event>,
    kind: MemberEventKind,
    who: &str,
) -> Vec<gossip::model::Member> {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match rx.recv().await {
                Ok(Event::Member { kind: k, members })
                    if k == kind && members.iter().any(|m| m.name == who) =>
                {
                    return members
                }
                Ok(_) => {}
                Err(e) => panic!("event stream: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {} for {who} within 30 s", kind.as_str()))
}

async fn wait_status(a: &Agent, who: &str, st: MemberStatus) {
    wait_member(a, who, st, Duration::from_secs(60)).await;
}

/// A snapshot file's path in a fresh temp dir (removed with the handle).
fn snapshot_file(tag: &str) -> (TempDir, PathBuf) {
    let dir = temp_dir(tag);
    let snap = dir.path().join("snapshot");
    (dir, snap)
}

/// `name`, keeping its snapshot at `snap` (with `rejoin`), started joined
/// to `seed` (named `seed_name`) and seeing it alive; its config, without
/// the join, restarts it.
async fn start_with_snapshot(
    name: &str,
    snap: &Path,
    rejoin: bool,
    seed: &Agent,
    seed_name: &str,
) -> (Arc<Agent>, AgentConfig) {
    let cfg = AgentConfig {
        snapshot: Some(snap.to_path_buf()),
        rejoin,
        ..config(name, &[], vec![])
    };
    let b = agent::start(AgentConfig {
        join: vec![seed.local_addr().to_string()],
        ..cfg.clone()
    })
    .await
    .unwrap();
    wait_status(&b, seed_name, MemberStatus::Alive).await;
    (b, cfg)
}

/// Waits until the snapshot at `snap` holds each of `wants` (`what` says
/// what that means).
async fn wait_snapshot(snap: &Path, what: &str, wants: &[&str]) {
    eventually(what, Duration::from_secs(30), async || {
        let t = std::fs::read_to_string(snap).unwrap_or_default();
        wants.iter().all(|w| t.contains(w)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_events_tags_leave() {
    let a = start("a", &[("role", "balancer")], vec![]).await;
    let mut ev_a = a.subscribe();
    member_event(&mut ev_a, MemberEventKind::Join, "a").await;

    let b = start(
        "b",
        &[("role", "backend"), ("zone", "z1")],
        vec![a.local_addr().to_string()],
    )
    .await;
    let joined = member_event(&mut ev_a, MemberEventKind::Join, "b").await;
    let mb = joined.iter().find(|m| m.name == "b").unwrap();
    assert_eq!(mb.port, b.local_addr().port());
    assert_eq!(
        mb.tags,
        vec![
            ("role".into(), "backend".into()),
            ("zone".into(), "z1".into())
        ]
    );
    assert_eq!(mb.protocol, [1, 5, 2]);
    assert_eq!(mb.delegate, [2, 5, 5]);

    b.set_tags(vec![("color".into(), "blue".into())], vec![])
        .await
        .unwrap();
    let upd = member_event(&mut ev_a, MemberEventKind::Update, "b").await;
    assert_eq!(upd[0].tag("color"), Some("blue"));

    b.user_event("deploy", b"v1 payload".to_vec(), true)
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(Event::User {
                name,
                payload,
                ltime,
                ..
            }) = ev_a.recv().await
            {
                return (name, payload, ltime);
            }
        }
    })
    .await
    .expect("user event");
    assert_eq!(got, ("deploy".to_string(), b"v1 payload".to_vec(), 1));

    b.leave().await.unwrap();
    b.shutdown().await.unwrap();
    member_event(&mut ev_a, MemberEventKind::Leave, "b").await;
    wait_status(&a, "b", MemberStatus::Left).await;
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_then_restart_on_same_port_is_alive_again() {
    let a = start("a2", &[], vec![]).await;
    let b = start("b2", &[], vec![a.local_addr().to_string()]).await;
    let port = b.local_addr().port();
    wait_status(&a, "b2", MemberStatus::Alive).await;
    b.shutdown().await.unwrap();
    drop(b);
    wait_status(&a, "b2", MemberStatus::Failed).await;
    let b = agent::start(AgentConfig {
        node_name: "b2".into(),
        bind: format!("127.0.0.1:{port}").parse().unwrap(),
        join: vec![a.local_addr().to_string()],
        ..AgentConfig::default()
    })
    .await
    .expect("restarted agent joins");
    wait_status(&a, "b2", MemberStatus::Alive).await;
    wait_status(&b, "a2", MemberStatus::Alive).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_failures_are_errors() {
    // Nobody listens there: the join must fail, naming the address.
    let port = free_port();
    let err = agent::start(config("lonely", &[], vec![format!("127.0.0.1:{port}")]))
        .await
        .err()
        .expect("join to a closed port fails");
    assert!(format!("{err:#}").contains(&port.to_string()), "{err:#}");
    let err = agent::start(config("lonely2", &[], vec!["no-such-host.invalid".into()]))
        .await
        .err()
        .expect("join to an unresolvable name fails");
    assert!(
        format!("{err:#}").contains("no-such-host.invalid"),
        "{err:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_file_is_saved_and_reloaded() {
    let dir = temp_dir("gossip-tags");
    let dir = dir.path();
    let path = dir.join("tags.json");
    let cfg = AgentConfig {
        tags_file: Some(path.clone()),
        ..config("t", &[("role", "web")], vec![])
    };
    let a = agent::start(cfg.clone()).await.unwrap();
    a.set_tags(vec![("zone".into(), "z9".into())], vec![])
        .await
        .unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(saved["zone"], "z9");
    assert_eq!(saved["role"], "web");
    a.shutdown().await.unwrap();
    drop(a);
    let b = agent::start(AgentConfig {
        tags: vec![],
        ..cfg.clone()
    })
    .await
    .unwrap();
    assert_eq!(b.local_member().tag("zone"), Some("z9"));
    assert_eq!(b.local_member().tag("role"), Some("web"));
    b.shutdown().await.unwrap();
    assert!(!dir.join("tags.json.tmp").exists(), "temporary file left");

    // A tags file that cannot be used is an error naming it, and is left
    // as it was (it used to be overwritten with the command line's tags).
    let bad = r#"{"role": "web", "weight": 3}"#;
    std::fs::write(&path, bad).unwrap();
    let e = match agent::start(cfg.clone()).await {
        Ok(_) => panic!("started with an unusable tags file"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains(&format!("tags file {}", path.display())) && e.contains("weight"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), bad);
    std::fs::write(&path, b"\xff\xfe").unwrap();
    let e = match agent::start(cfg.clone()).await {
        Ok(_) => panic!("started with an unusable tags file"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"\xff\xfe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_itself_succeeds_like_serf() {
    // The lab starts ha with `-join ha`: the seed joins its own address.
    let port = free_port();
    let a = agent::start(AgentConfig {
        node_name: "seed".into(),
        bind: format!("127.0.0.1:{port}").parse().unwrap(),
        join: vec![format!("127.0.0.1:{port}")],
        ..AgentConfig::default()
    })
    .await
    .expect("joining our own address works");
    assert_eq!(a.members().len(), 1);
    assert_eq!(a.local_member().status, MemberStatus::Alive);
    a.shutdown().await.unwrap();
}

/// On paused time: the agent's timers run on tokio's clock, so the wait
/// past the coalescing window is instant and exact.
#[tokio::test(start_paused = true)]
async fn first_subscriber_gets_events_since_start() {
    let a = start("early", &[], vec![]).await;
    // Later than the coalescing window: the self member-join is already out.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut rx = a.subscribe();
    member_event(&mut rx, MemberEventKind::Join, "early").await;
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_rejoin_after_a_crash() {
    let (_dir, snap) = snapshot_file("gossip-snap");
    let a = start("snap-a", &[], vec![]).await;
    let (b, cfg) = start_with_snapshot("snap-b", &snap, true, &a, "snap-a").await;
    for i in 0..3 {
        b.user_event("e", vec![i], false).await.unwrap();
    }
    // The coalesced member-join for snap-a lands in the file.
    let want = format!("alive: snap-a {}", a.local_addr());
    wait_snapshot(
        &snap,
        "the snapshot to record snap-a and the event clock",
        &[&want, "event-clock: 4"],
    )
    .await;
    b.shutdown().await.unwrap();
    drop(b);
    wait_status(&a, "snap-b", MemberStatus::Failed).await;

    // Restart without -join: -rejoin finds snap-a in the snapshot.
    let b = agent::start(cfg).await.unwrap();
    wait_status(&a, "snap-b", MemberStatus::Alive).await;
    let stats = b.stats();
    let event_time: u64 = stats["serf"]["event_time"].parse().unwrap();
    assert!(event_time >= 4, "event clock not restored: {event_time}");
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

/// Serf's snapshot rules, which a balancer restarted under load depends on
/// (ha's agent is the only seed of the lab): after a crash the agent
/// rejoins whom its snapshot lists, with or without -rejoin; after a
/// graceful leave only with -rejoin (rejoin_after_leave). Without -rejoin
/// a restarted agent after a leave starts alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_rejoins_after_a_crash_and_after_a_leave_with_rejoin() {
    let dir = temp_dir("gossip-snap-rules");
    let dir = dir.path();
    let a = start("rules-a", &[], vec![]).await;
    for rejoin in [false, true] {
        let snap = dir.join(format!("snapshot-{rejoin}"));
        let name = format!("rules-b-{rejoin}");
        let (b, cfg) = start_with_snapshot(&name, &snap, rejoin, &a, "rules-a").await;
        wait_snapshot(
            &snap,
            "the snapshot to record rules-a",
            &["alive: rules-a "],
        )
        .await;
        // A crash (no leave): the restart rejoins, -rejoin or not.
        b.shutdown().await.unwrap();
        drop(b);
        let b = agent::start(cfg.clone()).await.unwrap();
        assert!(
            b.members().iter().any(|m| m.name == "rules-a"),
            "rejoin={rejoin}: no rejoin after a crash: {:?}",
            b.members()
        );
        wait_status(&b, "rules-a", MemberStatus::Alive).await;
        // A graceful leave: a sees b left; the restart rejoins only with
        // -rejoin (the rejoin is part of the start: no waiting needed).
        b.leave().await.unwrap();
        b.shutdown().await.unwrap();
        drop(b);
        wait_status(&a, &name, MemberStatus::Left).await;
        let b = agent::start(cfg.clone()).await.unwrap();
        let knows_a = b.members().iter().any(|m| m.name == "rules-a");
        assert_eq!(
            knows_a,
            rejoin,
            "rejoin={rejoin}: after a leave, members: {:?}",
            b.members()
        );
        if rejoin {
            wait_status(&a, &name, MemberStatus::Alive).await;
        }
        b.shutdown().await.unwrap();
    }
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_dropped_and_counted() {
    use tokio::io::AsyncWriteExt;
    let a = start("garbage", &[], vec![]).await;
    let addr = a.local_addr();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for bad in [
        &b"\x07\xff"[..],
        b"\x0c\x00\x00\x00\x00\x04",
        b"\x09\x82",
        b"\x04\xde\xad\xbe\xef",
        b"",
    ] {
        udp.send_to(bad, addr).await.unwrap();
    }
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"\x06\xc1\xc1\xc1").await.unwrap();
    drop(tcp);
    eventually("the drops counted", Duration::from_secs(30), async || {
        let s = a.stats();
        let p: u64 = s["serf"]["packets_dropped"].parse().unwrap();
        let t: u64 = s["serf"]["streams_dropped"].parse().unwrap();
        (p >= 4 && t >= 1).then_some(())
    })
    .await;
    // Still healthy: another agent can join.
    let b = start("garbage-b", &[], vec![addr.to_string()]).await;
    wait_status(&a, "garbage-b", MemberStatus::Alive).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// On paused time: the reap round (every 15 s) and the tombstone timeout
/// are the agent's timers on tokio's clock; the two agents' packets go
/// over real loopback sockets meanwhile.
#[tokio::test(start_paused = true)]
async fn a_left_member_is_reaped_after_the_tombstone_timeout() {
    // Serf's `tombstone_timeout` (24 h by default): a member that left is
    // listed as `left` that long, then reaped at the next reap round
    // (every 15 s), with a member-reap event.
    let a = agent::start(AgentConfig {
        tombstone_timeout: Duration::from_secs(1),
        ..config("keeper", &[], vec![])
    })
    .await
    .expect("agent starts");
    let mut ev = a.subscribe();
    let b = start("goes", &[], vec![a.local_addr().to_string()]).await;
    wait_status(&a, "goes", MemberStatus::Alive).await;
    b.leave().await.unwrap();
    b.shutdown().await.unwrap();
    wait_status(&a, "goes", MemberStatus::Left).await;
    // The reap comes within 16 s; 60 s of deadline for a loaded machine.
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match ev.recv().await {
                Ok(Event::Member { kind, members })
                    if kind == MemberEventKind::Reap
                        && members.iter().any(|m| m.name == "goes") =>
                {
                    return
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await
    .expect("member-reap of goes within 60 s");
    assert!(
        a.members().iter().all(|m| m.name != "goes"),
        "{:?}",
        a.members()
    );
    a.shutdown().await.unwrap();
}

/// A snapshot (written by anyone) with the largest Lamport times: the
/// agent starts, its clocks stay at the top, a user event and a query
/// still go out, and `stats` still answers (no overflow, no poisoned lock).
/// `stats` shows the queue depths and the handler drop counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_with_the_largest_clocks_does_not_overflow() {
    let (_dir, snap) = snapshot_file("gossip-snap-max");
    let max = u64::MAX.to_string();
    std::fs::write(
        &snap,
        format!("clock: {max}\nevent-clock: {max}\nquery-clock: {max}\n"),
    )
    .unwrap();
    let a = agent::start(AgentConfig {
        snapshot: Some(snap.clone()),
        ..config("snap-max", &[], vec![])
    })
    .await
    .expect("agent starts");
    a.user_event("e", vec![], false).await.unwrap();
    a.query(gossip::model::QueryParams {
        name: "q".into(),
        timeout: Duration::from_millis(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let stats = a.stats();
    for k in ["member_time", "event_time", "query_time"] {
        assert_eq!(stats["serf"][k], max, "{k}: {stats:?}");
    }
    for k in ["intent_queue", "event_queue", "query_queue"] {
        let _: usize = stats["serf"][k].parse().unwrap();
    }
    assert_eq!(stats["serf"]["event_queue"], "1", "{stats:?}");
    assert_eq!(stats["agent"]["handler_events_dropped"], "0", "{stats:?}");
    a.shutdown().await.unwrap();
}
