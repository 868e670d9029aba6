//! Interoperation with the real serf 0.9.4 (`/usr/bin/serf`, Debian's
//! package), membership: real `serf agent` processes and our agent on
//! 127.0.0.1 join, fail, restart, fight over a name and form one cluster
//! of six.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::interop::{
    blocking, next_user_event, serf_eventually, serf_sees, serf_sees_member, start_ours,
    start_serf, wait_handler_log,
};
use common::{config, wait_alive, wait_member};
use gossip::agent;
use gossip::model::{AgentConfig, AgentHandle, MemberStatus};
use testkit::{eventually, eventually_blocking, free_port, SerfAgent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_cluster_join_tags_events_leave() {
    let serf = Arc::new(blocking(|| start_serf("real1", &[("role", "lb")], None, None)).await);
    let ours = start_ours(
        "ours1",
        &[("role", "backend"), ("zone", "z1")],
        vec![serf.bind.to_string()],
        vec![],
    )
    .await;
    let our_addr = ours.local_addr();

    // We see serf alive with its address and tags.
    let m = wait_member(&ours, "real1", MemberStatus::Alive, Duration::from_secs(30)).await;
    assert_eq!(SocketAddr::new(m.addr, m.port), serf.bind);
    assert_eq!(m.tag("role"), Some("lb"));

    // serf sees us alive with our address and tags.
    let m = serf_sees_member(
        &serf,
        "ours1",
        "serf sees ours1 alive",
        Duration::from_secs(30),
        |m| m.status == "alive",
    )
    .await;
    assert_eq!(m.addr, our_addr.to_string());
    assert_eq!(m.tags["role"], "backend");
    assert_eq!(m.tags["zone"], "z1");

    // serf's handler saw our join, with our address and role on stdin.
    wait_handler_log(
        &serf,
        "serf's handler got member-join for ours1",
        Duration::from_secs(30),
        |t| {
            t.lines()
                .any(|l| l.starts_with("ours1\t127.0.0.1\tbackend\t") && l.contains("zone=z1"))
        },
    )
    .await;

    // A user event from serf reaches us.
    let mut rx = ours.subscribe();
    let s = serf.clone();
    blocking(move || {
        s.cli(&["event", "deploy", "v1 payload"])
            .expect("serf event")
    })
    .await;
    let got = next_user_event(&mut rx, "deploy", Duration::from_secs(30)).await;
    assert_eq!(got, b"v1 payload");

    // Our user event reaches serf's handler.
    ours.user_event("from-ours", b"hello serf".to_vec(), false)
        .await
        .unwrap();
    wait_handler_log(
        &serf,
        "serf handler got our event",
        Duration::from_secs(30),
        |t| t.contains("EVENT user from-ours") && t.contains("hello serf"),
    )
    .await;

    // A tag change is seen by serf.
    ours.set_tags(vec![("color".into(), "blue".into())], vec!["zone".into()])
        .await
        .unwrap();
    serf_sees_member(
        &serf,
        "ours1",
        "serf sees our new tags",
        Duration::from_secs(30),
        |m| m.tags["color"] == "blue" && m.tags.get("zone").is_none(),
    )
    .await;

    // Graceful leave: serf shows us as left, and never took us for failed
    // on the way (the intent, sent to it directly, came before the dead
    // notice).
    ours.leave().await.unwrap();
    ours.shutdown().await.unwrap();
    serf_sees(&serf, "ours1", "left", Duration::from_secs(30)).await;
    let log = serf.log_text();
    assert!(log.contains("EventMemberLeave: ours1"), "{log}");
    assert!(!log.contains("EventMemberFailed: ours1"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_detected_both_ways() {
    let mut real = blocking(|| start_serf("real2", &[], None, None)).await;
    let watcher = Arc::new(blocking(|| start_serf("real3", &[], None, None)).await);
    let ours = start_ours(
        "ours2",
        &[],
        vec![real.bind.to_string(), watcher.bind.to_string()],
        vec![],
    )
    .await;
    wait_alive(&ours, 3, Duration::from_secs(30)).await;
    serf_sees(&watcher, "real2", "alive", Duration::from_secs(30)).await;

    // kill -9 of a serf: we mark it failed.
    blocking(move || {
        real.kill();
        real
    })
    .await;
    wait_member(
        &ours,
        "real2",
        MemberStatus::Failed,
        Duration::from_secs(60),
    )
    .await;

    // force-leave from our side: the other serf moves real2 to left.
    ours.force_leave("real2", false).await.unwrap();
    serf_sees(&watcher, "real2", "left", Duration::from_secs(60)).await;
    assert!(ours
        .members()
        .iter()
        .any(|m| m.name == "real2" && m.status == MemberStatus::Left));

    // Our agent stops without leaving: serf marks it failed.
    ours.shutdown().await.unwrap();
    drop(ours);
    serf_sees(&watcher, "ours2", "failed", Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_join_waits_for_a_late_serf() {
    let port = free_port();
    let cfg = AgentConfig {
        retry_join: vec![format!("127.0.0.1:{port}")],
        retry_interval: Duration::from_millis(500),
        ..config("ours6", &[], vec![])
    };
    let ours = agent::start(cfg).await.expect("start with retry_join");
    assert_eq!(ours.members().len(), 1);
    // serf comes up later on that port.
    let serf = SerfAgent::builder("late").bind_port(port).spawn();
    wait_member(&ours, "late", MemberStatus::Alive, Duration::from_secs(30)).await;
    ours.shutdown().await.unwrap();
    drop(serf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_on_both_sides_come_back_alive() {
    let serf = blocking(|| start_serf("real7", &[], None, None)).await;
    let serf_bind = serf.bind;
    let ours = start_ours("ours7", &[("v", "1")], vec![serf_bind.to_string()], vec![]).await;
    let port = ours.local_addr().port();
    let serf = Arc::new(serf);
    serf_sees(&serf, "ours7", "alive", Duration::from_secs(30)).await;

    // Ours crashes (no leave) and comes back on the same port.
    ours.shutdown().await.unwrap();
    drop(ours);
    serf_sees(&serf, "ours7", "failed", Duration::from_secs(60)).await;
    let ours = agent::start(AgentConfig {
        node_name: "ours7".into(),
        bind: format!("127.0.0.1:{port}").parse().unwrap(),
        tags: vec![("v".into(), "2".into())],
        join: vec![serf_bind.to_string()],
        ..AgentConfig::default()
    })
    .await
    .expect("restarted agent joins serf");
    serf_sees_member(
        &serf,
        "ours7",
        "real7 sees ours7 alive again with new tags",
        Duration::from_secs(60),
        |m| m.status == "alive" && m.tags["v"] == "2",
    )
    .await;

    // serf is killed and restarted on the same port, joining us.
    let mut serf = Arc::try_unwrap(serf).ok().expect("only owner");
    blocking(move || serf.kill()).await;
    wait_member(
        &ours,
        "real7",
        MemberStatus::Failed,
        Duration::from_secs(60),
    )
    .await;
    let our_addr = ours.local_addr();
    let serf2 = SerfAgent::builder("real7")
        .bind_port(serf_bind.port())
        .join(our_addr)
        .spawn();
    wait_member(&ours, "real7", MemberStatus::Alive, Duration::from_secs(60)).await;
    ours.shutdown().await.unwrap();
    drop(serf2);
}

/// Name conflicts, both ways. A real serf started under one of our names
/// asks the cluster (`_serf_conflict`); our agents answer in Serf's format,
/// so it counts every answer and gives the name up. Our agent started under
/// a real serf's name asks too, reads the real serfs' answers, and stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_names_lose_the_vote_both_ways() {
    let real_a = Arc::new(blocking(|| start_serf("realA", &[], None, None)).await);
    let seed = real_a.bind.to_string();
    let ours_b = start_ours("oursB", &[], vec![seed.clone()], vec![]).await;
    let ours_c = start_ours("oursC", &[], vec![seed.clone()], vec![]).await;
    let real_e =
        Arc::new(blocking(move || start_serf("realE", &[], seed.parse().ok(), None)).await);
    wait_alive(&ours_c, 4, Duration::from_secs(30)).await;

    // A real serf claims "oursB" from another address.
    let bind = real_a.bind;
    let dup = blocking(move || start_serf("oursB", &[], Some(bind), None)).await;
    let dup = blocking(move || {
        eventually_blocking(
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
    eventually(
        "oursC still sees realE at its address",
        Duration::from_secs(30),
        async || {
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
    serf_eventually(
        "realA still sees oursB at its address",
        Duration::from_secs(30),
        move || {
            let v: serde_json::Value =
                serde_json::from_str(&a.cli(&["members", "-format=json"]).ok()?).ok()?;
            v["members"].as_array()?.iter().find(|m| {
                m["name"] == "oursB"
                    && m["status"] == "alive"
                    && m["port"].as_u64() == Some(u64::from(b_port))
            })?;
            Some(())
        },
    )
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
    // A chain: mix-r1, mix-o1 joins it, mix-r2 joins mix-o1, and so on.
    let (mut reals, mut ours) = (Vec::new(), Vec::new());
    let mut last_ours: Option<SocketAddr> = None;
    for i in 1..=3 {
        let name = format!("mix-r{i}");
        let r = blocking(move || start_serf(&name, &[("side", "serf")], last_ours, None)).await;
        let join = vec![r.bind.to_string()];
        let o = start_ours(&format!("mix-o{i}"), &[("side", "ours")], join, vec![]).await;
        last_ours = Some(o.local_addr());
        reals.push(r);
        ours.push(o);
    }
    let reals = Arc::new(reals);
    let names = ["mix-r1", "mix-r2", "mix-r3", "mix-o1", "mix-o2", "mix-o3"];

    // Everyone sees everyone alive, with the right side tag. A member that
    // missed a join's gossip learns it at its next push-pull (every 30 s,
    // staggered), as in memberlist: the deadline allows for that.
    for o in &ours {
        eventually(
            &format!("{} sees six alive", o.local_member().name),
            Duration::from_secs(75),
            async || {
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
            eventually_blocking(
                &format!("{} sees six alive", r.name),
                Duration::from_secs(75),
                || {
                    let ms = r.members().ok()?;
                    names
                        .iter()
                        .all(|n| ms.iter().any(|m| m.name == *n && m.status == "alive"))
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
            blocking(move || rs[2].cli(&["event", event, "p"]).expect("serf event")).await;
        } else {
            ours[0]
                .user_event(event, b"p".to_vec(), false)
                .await
                .unwrap();
        }
        for rx in rxs.iter_mut() {
            next_user_event(rx, event, event_deadline).await;
        }
        for r in reals.iter() {
            let what = format!("{}'s handler ran for {event}", r.name);
            let line = format!("EVENT user {event}");
            wait_handler_log(r, &what, event_deadline, move |t| t.contains(&line)).await;
        }
    }

    // Tag changes cross over.
    ours[1]
        .set_tags(vec![("color".into(), "green".into())], vec![])
        .await
        .unwrap();
    let rs = reals.clone();
    blocking(move || {
        rs[0]
            .cli(&["tags", "-set", "color=red"])
            .expect("serf tags");
        eventually_blocking(
            "mix-r3 sees mix-o2's new tag",
            Duration::from_secs(30),
            || {
                let m = rs[2]
                    .members()
                    .ok()?
                    .into_iter()
                    .find(|m| m.name == "mix-o2")?;
                (m.tags["color"] == "green").then_some(())
            },
        );
    })
    .await;
    eventually(
        "mix-o3 sees mix-r1's new tag",
        Duration::from_secs(30),
        async || {
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
        rs[1].cli(&["leave"]).expect("serf leave");
        eventually_blocking(
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
        eventually(
            "ours see mix-o1 and mix-r2 left",
            Duration::from_secs(30),
            async || {
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
