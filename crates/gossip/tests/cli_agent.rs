//! `gossip agent` end to end in a cluster with a real `serf agent` 0.9.4:
//! banner, RPC for the real `serf` CLI, event handlers, signals (a
//! graceful leave on SIGTERM, a reload on SIGHUP), tags and config files.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::cli::{poll, serf, serf_stdout, GossipAgent};
use testkit::{eventually, temp_dir, SerfAgent, Signal, DEADLINE};

#[test]
fn gossip_agent_joins_serf_runs_handlers_and_leaves_on_sigterm() {
    let s = SerfAgent::builder("serf-peer")
        .tag("role", "balancer")
        .start_blocking();
    let dir = temp_dir("cli-agent");
    let dir = dir.path();
    let log = dir.join("events");
    let handler = format!(
        "echo \"$SERF_EVENT $SERF_SELF_NAME $SERF_SELF_ROLE $SERF_USER_EVENT\" >> {0}; cat >> {0}",
        log.display()
    );
    let mut g = GossipAgent::start(
        "ours",
        dir,
        &[
            "-tag".into(),
            "role=backend".into(),
            "--join".into(),
            s.bind.to_string(),
            format!("-event-handler=member-join,user:deploy={handler}"),
        ],
    );
    let logs = || format!("{}\nserf:\n{}", g.logs(), s.log_text());

    // The banner is serf's.
    let banner = poll("banner", logs, || {
        let t = std::fs::read_to_string(&g.stdout).unwrap_or_default();
        t.contains("Log data will now stream in").then_some(t)
    });
    assert!(
        banner.starts_with("==> Starting Serf agent...\n"),
        "{banner}"
    );
    assert!(banner.contains("Node name: 'ours'"), "{banner}");
    assert!(
        banner.contains("==> Joining cluster...(replay: false)"),
        "{banner}"
    );
    assert!(
        banner.contains("Join completed. Synced with 1 initial agents"),
        "{banner}"
    );

    // The real serf CLI reads our agent's member list over our RPC.
    let grpc = format!("-rpc-addr={}", g.rpc);
    poll("serf members via our RPC shows both", logs, || {
        let t = serf_stdout(&["members", &grpc]);
        (t.contains("serf-peer") && t.contains("ours")).then_some(())
    });
    // And the serf agent sees us alive with our tag.
    let srpc = format!("-rpc-addr={}", s.rpc);
    poll("serf agent sees ours alive", logs, || {
        let t = serf_stdout(&["members", &srpc, "-name=ours"]);
        (t.trim() == format!("ours  {}  alive  role=backend", g.bind)).then_some(())
    });

    // Handlers: member-join for both, then a user event sent from serf.
    poll("member-join handler lines", logs, || {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        (t.contains("member-join ours backend")
            && t.contains(&format!(
                "serf-peer\t{}\tbalancer\trole=balancer\n",
                s.bind.ip()
            )))
        .then_some(())
    });
    let o = serf(&["event", &srpc, "deploy", "v2"]);
    assert!(o.status.success(), "{o:?}");
    poll("user event handler", logs, || {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        t.contains("user ours backend deploy\nv2\n").then_some(())
    });

    // SIGTERM: graceful leave, exit 0, serf sees us as left.
    g.signal(Signal::SIGTERM);
    assert_eq!(g.wait_exit(), Some(0), "{}", g.logs());
    let out = std::fs::read_to_string(&g.stdout).unwrap();
    assert!(
        out.contains("==> Gracefully shutting down agent..."),
        "{out}"
    );
    poll(
        "serf sees ours left",
        || s.log_text(),
        || {
            let t = serf_stdout(&["members", &srpc, "-name=ours"]);
            t.contains(" left ").then_some(())
        },
    );
}

#[test]
fn serf_config_keys_can_make_a_signal_stop_without_a_leave() {
    let s = SerfAgent::builder("serf-peer2").start_blocking();
    let dir = temp_dir("cli-agent-noleave");
    let dir = dir.path();
    let conf = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        format!("-config-file={}", p.display())
    };
    let join = format!("-join={}", s.bind);
    let mut on_term = GossipAgent::start(
        "noleave-term",
        dir,
        &[
            conf("term.json", r#"{"leave_on_terminate": false}"#),
            join.clone(),
        ],
    );
    let mut on_int = GossipAgent::start(
        "noleave-int",
        dir,
        &[
            conf("int.json", r#"{"skip_leave_on_interrupt": true}"#),
            join,
        ],
    );
    let srpc = format!("-rpc-addr={}", s.rpc);
    let serf_sees_both = |status: &str| {
        for name in ["noleave-term", "noleave-int"] {
            poll(
                &format!("serf sees {name} {status}"),
                || s.log_text(),
                || {
                    serf_stdout(&["members", &srpc, &format!("-name={name}")])
                        .contains(&format!(" {status}"))
                        .then_some(())
                },
            );
        }
    };
    serf_sees_both("alive");
    on_term.signal(Signal::SIGTERM);
    on_int.signal(Signal::SIGINT);
    for (g, sig) in [(&mut on_term, "terminated"), (&mut on_int, "interrupt")] {
        assert_eq!(g.wait_exit(), Some(1), "{}", g.logs());
        let out = std::fs::read_to_string(&g.stdout).unwrap();
        assert!(out.contains(&format!("==> Caught signal: {sig}")), "{out}");
        assert!(!out.contains("Gracefully shutting down"), "{out}");
    }
    // No leave was sent: serf finds both failed (not left).
    serf_sees_both("failed");
    assert!(
        !s.log_text().contains("EventMemberLeave"),
        "{}",
        s.log_text()
    );
}

#[test]
fn rpc_leave_stops_our_agent_with_exit_0() {
    let mut g = GossipAgent::start_in_temp("solo", &[]);
    let o = serf(&["leave", &format!("-rpc-addr={}", g.rpc)]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "Graceful leave complete\n",
        "{o:?}"
    );
    assert_eq!(g.wait_exit(), Some(0), "{}", g.logs());
}

#[test]
fn config_file_and_tags_file_persist_rpc_tag_changes_and_sigint_leaves() {
    let dir = temp_dir("cli-agent-cfg");
    let dir = dir.path();
    let tags_file = dir.join("tags.json");
    let cfg = dir.join("agent.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"tags_file": "{}", "log_level": "debug", "enable_compression": true}}"#,
            tags_file.display()
        ),
    )
    .unwrap();
    std::fs::write(&tags_file, r#"{"role": "web", "zone": "z2"}"#).unwrap();
    let mut g = GossipAgent::start("cfg", dir, &[format!("-config-file={}", cfg.display())]);
    let rpc = format!("-rpc-addr={}", g.rpc);
    let t = serf_stdout(&["members", &rpc]);
    assert!(
        t.contains("role=web") && t.contains("zone=z2"),
        "tags not read from the tags file: {t}"
    );
    let o = serf(&["tags", &rpc, "-set", "color=blue", "-delete", "zone"]);
    assert!(o.status.success(), "{o:?}");
    poll(
        "tags file rewritten",
        || g.logs(),
        || {
            let text = std::fs::read_to_string(&tags_file).unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            (v == serde_json::json!({"role": "web", "color": "blue"})).then_some(())
        },
    );
    g.signal(Signal::SIGINT);
    assert_eq!(g.wait_exit(), Some(0), "{}", g.logs());
    assert!(
        g.logs().contains("==> Caught signal: interrupt"),
        "{}",
        g.logs()
    );
}

#[test]
fn queries_are_answered_by_handlers_on_both_serf_and_gossip() {
    let s = SerfAgent::builder("q-serf")
        .event_handler("query:ping=/bin/echo pong-from-serf")
        .start_blocking();
    let g = GossipAgent::start_in_temp(
        "q-ours",
        &[
            format!("-join={}", s.bind),
            "-event-handler".into(),
            "query:ping=/bin/echo pong-from-ours".into(),
        ],
    );
    for rpc in [g.rpc, s.rpc] {
        let r = format!("-rpc-addr={rpc}");
        poll(
            "both members alive",
            || g.logs(),
            || {
                let t = serf_stdout(&["members", &r, "-status=alive"]);
                (t.lines().count() == 2).then_some(())
            },
        );
    }
    for rpc in [g.rpc, s.rpc] {
        let text = serf_stdout(&["query", &format!("-rpc-addr={rpc}"), "-timeout=5s", "ping"]);
        for want in [
            "Response from 'q-serf': pong-from-serf",
            "Response from 'q-ours': pong-from-ours",
            "Ack from 'q-serf'",
            "Ack from 'q-ours'",
            "Total Responses: 2",
        ] {
            assert!(
                text.contains(want),
                "query via {rpc}: missing {want:?} in\n{text}\n{}",
                g.logs()
            );
        }
    }
}

#[test]
fn rpc_client_streams_member_events_from_our_agent() {
    use gossip::model::{MemberEventKind, MemberStatus};
    let g = GossipAgent::start_in_temp("st-ours", &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = eventually_connect(g.rpc).await;
        let mut stream = c.stream("member-join,member-leave").await.unwrap();
        let mut s = SerfAgent::builder("st-serf")
            .tag("role", "backend")
            .start()
            .await;
        assert_eq!(c.join(&[s.bind.to_string()], false).await.unwrap(), 1);
        let joined = next_about(&mut stream, "st-serf", MemberEventKind::Join).await;
        let m = joined.iter().find(|m| m.name == "st-serf").unwrap();
        assert_eq!(m.tag("role"), Some("backend"));
        assert_eq!(m.port, s.bind.port());
        let o = serf(&["leave", &format!("-rpc-addr={}", s.rpc)]);
        assert!(o.status.success(), "{o:?}");
        let left = next_about(&mut stream, "st-serf", MemberEventKind::Leave).await;
        assert_eq!(
            left.iter().find(|m| m.name == "st-serf").unwrap().status,
            MemberStatus::Left
        );
        let _ = s.exited();
    });
}

/// The members of the next `kind` event that includes `name`.
async fn next_about(
    stream: &mut gossip::rpc::EventStream,
    name: &str,
    kind: gossip::model::MemberEventKind,
) -> Vec<gossip::model::Member> {
    use gossip::rpc::StreamRecord;
    tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.recv().await {
                Some(StreamRecord::Member { kind: k, members })
                    if k == kind && members.iter().any(|m| m.name == name) =>
                {
                    return members;
                }
                Some(_) => continue,
                None => panic!("stream closed"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind:?} for {name}"))
}

/// Our agent accepts TCP before its RPC server runs: retry the handshake.
async fn eventually_connect(addr: SocketAddr) -> gossip::rpc::Client {
    eventually(
        &format!("an RPC handshake with {addr}"),
        DEADLINE,
        async || {
            tokio::time::timeout(
                Duration::from_secs(5),
                gossip::rpc::Client::connect(addr, None),
            )
            .await
            .ok()?
            .ok()
        },
    )
    .await
}

#[test]
fn sighup_reloads_event_handlers_and_tags_from_the_config_files() {
    let dir = temp_dir("cli-agent-hup");
    let dir = dir.path();
    let cfg = dir.join("agent.json");
    let before = dir.join("before");
    let after = dir.join("after");
    let write_cfg = |out: &Path, role: &str| {
        let v = serde_json::json!({
            "event_handlers": [format!("user=cat >> {}", out.display())],
            "tags": {"role": role},
        });
        std::fs::write(&cfg, v.to_string()).unwrap();
    };
    write_cfg(&before, "web");
    let g = GossipAgent::start("hup", dir, &[format!("-config-file={}", cfg.display())]);
    let rpc = format!("-rpc-addr={}", g.rpc);
    // Wait for the RPC server proper (the port accepts before it runs).
    poll(
        "RPC answers",
        || g.logs(),
        || serf(&["members", &rpc]).status.success().then_some(()),
    );
    // The handler writing `out` has run once it holds `want`.
    let handler_wrote = |what: &str, out: &Path, want: &str| {
        poll(
            what,
            || g.logs(),
            || (std::fs::read_to_string(out).unwrap_or_default() == want).then_some(()),
        );
    };
    assert!(serf(&["event", &rpc, "one", "first"]).status.success());
    handler_wrote("old handler ran", &before, "first\n");

    write_cfg(&after, "db");
    g.signal(Signal::SIGHUP);
    poll(
        "reload logged",
        || g.logs(),
        || {
            g.logs()
                .contains("==> Reloading configuration...")
                .then_some(())
        },
    );
    poll(
        "tags reloaded",
        || g.logs(),
        || {
            let t = serf_stdout(&["members", &rpc]);
            t.contains("role=db").then_some(())
        },
    );
    assert!(serf(&["event", &rpc, "two", "second"]).status.success());
    handler_wrote("new handler ran", &after, "second\n");
    assert_eq!(std::fs::read_to_string(&before).unwrap(), "first\n");
}

/// `-disable-compression` (serf's flag; config key `enable_compression`):
/// the banner says so and a serf agent still understands every message.
#[test]
fn an_agent_without_compression_joins_serf() {
    let s = SerfAgent::builder("nc-serf").start_blocking();
    let ours = GossipAgent::start_in_temp(
        "nc-ours",
        &[format!("-join={}", s.bind), "-disable-compression".into()],
    );
    let logs = || format!("{}\nserf:\n{}", ours.logs(), s.log_text());
    poll("the banner", logs, || {
        ours.logs()
            .contains("Message Compression Enabled: false")
            .then_some(())
    });
    for rpc in [s.rpc, ours.rpc] {
        poll("both members alive on both sides", logs, || {
            let out = serf_stdout(&["members", &format!("-rpc-addr={rpc}"), "-status=alive"]);
            (out.lines().count() == 2).then_some(())
        });
    }
    let o = serf(&["event", &format!("-rpc-addr={}", ours.rpc), "nc", "plain"]);
    assert!(o.status.success(), "{o:?}");
    poll("serf to log our event", logs, || {
        s.log_text()
            .contains("Received event: user-event: nc")
            .then_some(())
    });
}
