//! Interoperation with the real serf 0.9.4 (`/usr/bin/serf`, Debian's
//! package) beyond membership: encrypted gossip and keyring operations,
//! queries both ways, and network coordinates, between real `serf agent`
//! processes and our agent on 127.0.0.1.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::cli::serf;
use common::interop::{blocking, keygen, next_user_event, serf_sees, start_ours, start_serf};
use common::{acked_query, config, wait_member};
use gossip::agent;
use gossip::model::{AgentConfig, AgentHandle, Event, MemberStatus};
use testkit::{eventually, eventually_blocking, temp_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_cluster() {
    let key = keygen();
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&key)
        .unwrap();
    let k2 = key.clone();
    let serf =
        Arc::new(blocking(move || start_serf("real4", &[("role", "x")], None, Some(&k2))).await);

    // Without the key we cannot join.
    let cfg = config("nokey", &[], vec![serf.bind.to_string()]);
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
    wait_member(&ours, "real4", MemberStatus::Alive, Duration::from_secs(30)).await;
    serf_sees(&serf, "ours4", "alive", Duration::from_secs(30)).await;
    // Gossip (UDP) works too: an event from serf arrives.
    let mut rx = ours.subscribe();
    let s = serf.clone();
    blocking(move || s.cli(&["event", "enc", "secret"]).expect("serf event")).await;
    next_user_event(&mut rx, "enc", Duration::from_secs(30)).await;

    // The same key from a keyring file (serf's format: a JSON list of
    // base64 keys, the first one primary).
    let dir = temp_dir("keyring");
    let keyring = dir.path().join("keyring.json");
    std::fs::write(&keyring, format!("[\"{key}\"]")).unwrap();
    let cfg = AgentConfig {
        keyring_file: Some(keyring.clone()),
        ..config("ours4k", &[], vec![serf.bind.to_string()])
    };
    let from_file = agent::start(cfg)
        .await
        .expect("joins with the keyring file");
    serf_sees(&serf, "ours4k", "alive", Duration::from_secs(30)).await;
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
    let serf = Arc::new(blocking(|| start_serf("real5", &[("role", "q")], None, None)).await);
    // Join by DNS name: localhost resolves to 127.0.0.1 (and maybe ::1,
    // which refuses: every resolved address is tried).
    let ours = start_ours(
        "ours5",
        &[],
        vec![format!("localhost:{}", serf.bind.port())],
        vec![],
    )
    .await;
    wait_member(&ours, "real5", MemberStatus::Alive, Duration::from_secs(30)).await;

    // Our query: serf acks and its handler answers.
    let mut rx = ours
        .query(acked_query("whoami", b"?", Duration::from_secs(8)))
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
        s.cli(&["query", "-timeout=8s", "-format=json", "ask", "payload-x"])
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
        s.cli(&[
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
async fn keyring_operations_across_the_cluster() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (k1, k2) = (keygen(), keygen());
    let k1c = k1.clone();
    let serf = Arc::new(blocking(move || start_serf("real8", &[], None, Some(&k1c))).await);
    let ours = start_ours(
        "ours8",
        &[],
        vec![serf.bind.to_string()],
        vec![b64.decode(&k1).unwrap()],
    )
    .await;
    serf_sees(&serf, "ours8", "alive", Duration::from_secs(30)).await;

    // We install a key: both nodes answer and succeed.
    let r = ours.install_key(b64.decode(&k2).unwrap()).await.unwrap();
    assert_eq!((r.num_nodes, r.num_resp, r.num_err), (2, 2, 0), "{r:?}");
    // serf lists it on both nodes.
    let s = serf.clone();
    let k2c = k2.clone();
    blocking(move || {
        let out = s.cli(&["keys", "-list"]).expect("serf keys -list");
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
        s.cli(&["keys", &format!("-use={k2c}")])
            .expect("serf keys -use");
        s.cli(&["keys", &format!("-remove={k1c}")])
            .expect("serf keys -remove");
    })
    .await;
    let l = ours.list_keys().await.unwrap();
    assert_eq!(l.keys.get(&k2), Some(&2), "{l:?}");
    assert!(!l.keys.contains_key(&k1), "{l:?}");

    // Gossip still flows with the new key only.
    let mut rx = ours.subscribe();
    let s = serf.clone();
    blocking(move || s.cli(&["event", "after-rotate", "x"]).expect("serf event")).await;
    next_user_event(&mut rx, "after-rotate", Duration::from_secs(30)).await;
    ours.shutdown().await.unwrap();
}

/// Network coordinates both ways: serf learns ours from our acks, we learn
/// serf's from its acks, and `serf rtt` (real CLI) answers against either
/// agent's RPC, as does our `rtt` command against serf's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinates_both_ways() {
    let real = Arc::new(blocking(|| start_serf("coord-serf", &[], None, None)).await);
    let ours = start_ours("coord-ours", &[], vec![real.bind.to_string()], vec![]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let our_rpc = listener.local_addr().unwrap();
    let server = tokio::spawn(gossip::rpc::serve(listener, ours.clone(), None));

    // Each side probes the other once a second; a coordinate comes with
    // every ack.
    let r = real.clone();
    let line = blocking(move || {
        eventually_blocking(
            "serf estimates the rtt to our node",
            Duration::from_secs(60),
            || r.cli(&["rtt", "coord-ours"]).ok(),
        )
    })
    .await;
    assert!(
        line.starts_with("Estimated coord-ours <-> coord-serf rtt: ")
            && line.trim_end().ends_with(" ms"),
        "{line}"
    );
    let theirs = eventually(
        "we hold serf's coordinate",
        Duration::from_secs(60),
        async || ours.coordinate("coord-serf"),
    )
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
    let line =
        blocking(move || serf(&["rtt", &format!("-rpc-addr={our_rpc}"), "coord-serf"])).await;
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
    let out = blocking(move || serf(&["rtt", &format!("-rpc-addr={our_rpc}"), "nobody"])).await;
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
