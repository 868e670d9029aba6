//! `gossip::rpc::Client` against the real `serf agent` 0.9.4 on loopback.

mod common;

use std::time::Duration;

use common::acked_query;
use gossip::model::{IncomingQuery, MemberEventKind, MemberStatus, QueryReply};
use gossip::rpc::{Client, EventStream, StreamRecord};
use testkit::{eventually, SerfAgent, DEADLINE};

/// The next stream record satisfying `pred`, skipping others.
async fn wait_record(
    stream: &mut EventStream,
    what: &str,
    pred: impl Fn(&StreamRecord) -> bool,
) -> StreamRecord {
    let fut = async {
        loop {
            match stream.recv().await {
                Some(r) if pred(&r) => return r,
                Some(_) => continue,
                None => panic!("stream closed while waiting for {what}"),
            }
        }
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test]
async fn members_tags_filters_and_stats_of_a_real_serf() {
    let a = SerfAgent::builder("alpha")
        .tag("role", "lb")
        .tag("zone", "z1")
        .start()
        .await;
    let c = Client::connect(a.rpc, None).await.expect("connect");

    let members = c.members().await.unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
    let m = &members[0];
    assert_eq!(m.name, "alpha");
    assert_eq!(m.addr, a.bind.ip());
    assert_eq!(m.port, a.bind.port());
    assert_eq!(m.status, MemberStatus::Alive);
    assert_eq!(m.tag("role"), Some("lb"));
    assert_eq!(m.tag("zone"), Some("z1"));
    assert!(m.protocol[1] >= m.protocol[0] && m.protocol[1] > 0, "{m:?}");

    c.update_tags(&[("color".into(), "blue".into())], &["zone".into()])
        .await
        .unwrap();
    let m = c.members().await.unwrap().remove(0);
    assert_eq!(m.tag("color"), Some("blue"));
    assert_eq!(m.tag("zone"), None);
    assert_eq!(m.tag("role"), Some("lb"));

    let hit = c
        .members_filtered(&[("role".into(), "l.".into())], "alive", "alp.*")
        .await
        .unwrap();
    assert_eq!(hit.len(), 1);
    let miss = c
        .members_filtered(&[("role".into(), "web".into())], "", "")
        .await
        .unwrap();
    assert!(miss.is_empty(), "{miss:?}");

    let stats = c.stats().await.unwrap();
    assert_eq!(stats["agent"]["name"], "alpha", "{stats:?}");
    assert_eq!(stats["serf"]["members"], "1", "{stats:?}");
}

#[tokio::test]
async fn stream_sees_join_user_event_query_and_leave() {
    let a = SerfAgent::builder("a1").tag("role", "lb").start().await;
    let mut b = SerfAgent::builder("b1")
        .tag("role", "backend")
        .start()
        .await;
    let ca = Client::connect(a.rpc, None).await.unwrap();
    let cb = Client::connect(b.rpc, None).await.unwrap();
    let mut stream = ca
        .stream("member-join,member-leave,user:deploy")
        .await
        .unwrap();
    let mut logs = ca.monitor("debug").await.unwrap();

    let n = ca.join(&[b.bind.to_string()], false).await.unwrap();
    assert_eq!(n, 1);
    let rec = wait_record(&mut stream, "member-join of b1", |r| {
        matches!(r, StreamRecord::Member { kind: MemberEventKind::Join, members }
            if members.iter().any(|m| m.name == "b1"))
    })
    .await;
    let StreamRecord::Member { members, .. } = rec else {
        unreachable!()
    };
    let mb = members.iter().find(|m| m.name == "b1").unwrap();
    assert_eq!(mb.tag("role"), Some("backend"));
    assert_eq!(mb.port, b.bind.port());

    // A user event sent through b reaches a's stream; the filter drops "other".
    cb.user_event("other", b"x", false).await.unwrap();
    cb.user_event("deploy", b"v1 payload", true).await.unwrap();
    let rec = wait_record(&mut stream, "user event deploy", |r| {
        matches!(r, StreamRecord::User { .. })
    })
    .await;
    match rec {
        StreamRecord::User {
            name,
            payload,
            coalesce,
            ltime,
        } => {
            assert_eq!(
                name, "deploy",
                "filter user:deploy let another event through"
            );
            assert_eq!(payload, b"v1 payload");
            assert!(coalesce);
            assert!(ltime > 0);
        }
        other => panic!("{other:?}"),
    }

    // Query from a, answered by b through its own stream + respond.
    let mut qstream = cb.stream("query:ping").await.unwrap();
    let mut replies = ca
        .query(acked_query("ping", b"hello", Duration::from_secs(10)))
        .await
        .unwrap();
    let q = wait_record(&mut qstream, "query ping on b1", |r| {
        matches!(r, StreamRecord::Query { .. })
    })
    .await;
    let StreamRecord::Query(IncomingQuery {
        id, name, payload, ..
    }) = q
    else {
        unreachable!()
    };
    assert_eq!(name, "ping");
    assert_eq!(payload, b"hello");
    cb.respond(id, b"pong").await.unwrap();
    let mut got_response = false;
    let mut got_ack = false;
    tokio::time::timeout(DEADLINE, async {
        while let Some(r) = replies.recv().await {
            match r {
                QueryReply::Ack { from } if from == "b1" => got_ack = true,
                QueryReply::Response { from, payload } if from == "b1" => {
                    assert_eq!(payload, b"pong");
                    got_response = true;
                }
                // Seen once in CI: serf 0.9.4 passed on a response with an
                // empty From besides b1's. Our client hands on what serf
                // sent; b1's answer must still be there.
                QueryReply::Response { from, payload } => {
                    eprintln!("a response not from b1: from {from:?}, payload {payload:?}");
                }
                QueryReply::Done => break,
                _ => {}
            }
        }
    })
    .await
    .expect("query did not finish");
    assert!(
        got_response && got_ack,
        "ack {got_ack}, response {got_response}"
    );
    // Responding twice to an unknown id is refused with Serf's words.
    let err = cb.respond(id + 1000, b"late").await.unwrap_err();
    assert_eq!(err.to_string(), "No pending queries matching ID");

    // Graceful leave of b: a's stream reports member-leave with b left.
    cb.leave().await.unwrap();
    let rec = wait_record(&mut stream, "member-leave of b1", |r| {
        matches!(
            r,
            StreamRecord::Member {
                kind: MemberEventKind::Leave,
                ..
            }
        )
    })
    .await;
    let StreamRecord::Member { members, .. } = rec else {
        unreachable!()
    };
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].name, "b1");
    assert_eq!(members[0].status, MemberStatus::Left);
    eventually("b1 process exit after leave", DEADLINE, async || {
        b.exited().then_some(())
    })
    .await;

    // The monitor saw a's log lines about it.
    let line = tokio::time::timeout(DEADLINE, async {
        loop {
            match logs.recv().await {
                Some(l) if l.contains("b1") => return l,
                Some(_) => continue,
                None => panic!("monitor closed"),
            }
        }
    })
    .await
    .expect("no log line about b1");
    assert!(line.contains('['), "{line}");
    stream.stop().await.unwrap();
    // The connection is still usable after stopping a stream.
    assert_eq!(ca.members().await.unwrap().len(), 2);
}

#[tokio::test]
async fn auth_key_is_required_and_checked() {
    // serf's agent takes the RPC key only from a config file.
    let dir = testkit::temp_dir("authcfg");
    let cfg = dir.path().join("auth.json");
    std::fs::write(&cfg, r#"{"rpc_auth": "s3cret"}"#).unwrap();
    let a = SerfAgent::builder("authy")
        .arg(format!("-config-file={}", cfg.display()))
        .start()
        .await;
    let anon = Client::connect(a.rpc, None).await.unwrap();
    let err = anon.members().await.unwrap_err();
    assert_eq!(err.to_string(), "Authentication required");
    let err = Client::connect(a.rpc, Some("wrong")).await.err().unwrap();
    assert_eq!(err.to_string(), "Invalid authentication token");
    let ok = Client::connect(a.rpc, Some("s3cret")).await.unwrap();
    assert_eq!(ok.members().await.unwrap().len(), 1);
}

#[tokio::test]
async fn bad_stream_filter_and_refused_connection_are_clear_errors() {
    let a = SerfAgent::builder("filt").start().await;
    let c = Client::connect(a.rpc, None).await.unwrap();
    let err = c.stream("member-explode").await.err().unwrap();
    assert_eq!(err.to_string(), "Invalid event filter");
    let err = c.monitor("loud").await.err().unwrap();
    assert_eq!(err.to_string(), "Unknown log level: LOUD");
    let port = testkit::free_port();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let err = Client::connect(addr, None).await.err().unwrap();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}
