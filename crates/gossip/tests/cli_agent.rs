//! `gossip agent` end to end in a cluster with a real `serf agent` 0.9.4:
//! banner, RPC for the real `serf` CLI, event handlers, and a graceful
//! leave on SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use testkit::{
    eventually, eventually_blocking_explained, free_port, temp_dir, ChildGuard, SerfAgent, Signal,
    DEADLINE, SERF,
};

const GOSSIP: &str = env!("CARGO_BIN_EXE_gossip");

/// Our agent process, killed on drop.
struct GossipAgent {
    process: ChildGuard,
    rpc: SocketAddr,
    bind: SocketAddr,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl GossipAgent {
    fn start(name: &str, dir: &Path, extra: &[String]) -> GossipAgent {
        let bind = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let rpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let process = ChildGuard::spawn(
            &format!("gossip agent {name}"),
            Command::new(GOSSIP)
                .arg("agent")
                .arg(format!("-node={name}"))
                .arg(format!("--bind={bind}"))
                .args(["-rpc-addr", &rpc.to_string()])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&stdout).unwrap())
                .stderr(std::fs::File::create(&stderr).unwrap()),
        );
        let mut agent = GossipAgent {
            process,
            rpc,
            bind,
            stdout,
            stderr,
        };
        let logs = agent.log_paths();
        eventually_blocking_explained(&format!("RPC on {rpc}"), DEADLINE, logs, || {
            if let Some(st) = agent.process.exit_status() {
                panic!("gossip agent exited ({st}):\n{}", agent.logs());
            }
            std::net::TcpStream::connect(rpc).ok()
        });
        agent
    }

    /// Its output so far, read from its files by a closure that does not
    /// borrow the agent.
    fn log_paths(&self) -> impl Fn() -> String {
        let (out, err) = (self.stdout.clone(), self.stderr.clone());
        move || {
            format!(
                "stdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&out).unwrap_or_default(),
                std::fs::read_to_string(&err).unwrap_or_default()
            )
        }
    }

    fn logs(&self) -> String {
        self.log_paths()()
    }

    fn signal(&self, sig: Signal) {
        self.process.signal(sig);
    }

    fn wait_exit(&mut self) -> Option<i32> {
        let logs = self.log_paths();
        eventually_blocking_explained("the agent to exit", DEADLINE, logs, || {
            self.process.exit_status()
        })
        .code()
    }
}

fn serf(args: &[&str]) -> Output {
    Command::new(SERF).args(args).output().expect("run serf")
}

/// Polls `f` (blocking) until it returns Some; `logs` go with a timeout.
fn poll<T>(what: &str, logs: impl Fn() -> String, f: impl FnMut() -> Option<T>) -> T {
    eventually_blocking_explained(what, DEADLINE, logs, f)
}

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
        let t = String::from_utf8_lossy(&serf(&["members", &grpc]).stdout).into_owned();
        (t.contains("serf-peer") && t.contains("ours")).then_some(())
    });
    // And the serf agent sees us alive with our tag.
    let srpc = format!("-rpc-addr={}", s.rpc);
    poll("serf agent sees ours alive", logs, || {
        let t =
            String::from_utf8_lossy(&serf(&["members", &srpc, "-name=ours"]).stdout).into_owned();
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
            let t = String::from_utf8_lossy(&serf(&["members", &srpc, "-name=ours"]).stdout)
                .into_owned();
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
    let status = |name: &str| {
        let o = serf(&["members", &srpc, &format!("-name={name}")]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    for name in ["noleave-term", "noleave-int"] {
        poll(
            &format!("serf sees {name} alive"),
            || s.log_text(),
            || status(name).contains(" alive").then_some(()),
        );
    }
    on_term.signal(Signal::SIGTERM);
    on_int.signal(Signal::SIGINT);
    for (g, sig) in [(&mut on_term, "terminated"), (&mut on_int, "interrupt")] {
        assert_eq!(g.wait_exit(), Some(1), "{}", g.logs());
        let out = std::fs::read_to_string(&g.stdout).unwrap();
        assert!(out.contains(&format!("==> Caught signal: {sig}")), "{out}");
        assert!(!out.contains("Gracefully shutting down"), "{out}");
    }
    // No leave was sent: serf finds both failed (not left).
    for name in ["noleave-term", "noleave-int"] {
        poll(
            &format!("serf sees {name} failed"),
            || s.log_text(),
            || status(name).contains(" failed").then_some(()),
        );
    }
    assert!(
        !s.log_text().contains("EventMemberLeave"),
        "{}",
        s.log_text()
    );
}

#[test]
fn rpc_leave_stops_our_agent_with_exit_0() {
    let dir = temp_dir("cli-agent-leave");
    let dir = dir.path();
    let mut g = GossipAgent::start("solo", dir, &[]);
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
    let t = String::from_utf8_lossy(&serf(&["members", &rpc]).stdout).into_owned();
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
fn tag_flags_conflict_with_an_existing_tags_file() {
    let dir = temp_dir("cli-agent-tagsconflict");
    let dir = dir.path();
    let tags_file = dir.join("tags.json");
    std::fs::write(&tags_file, r#"{"role": "web"}"#).unwrap();
    let o = Command::new(GOSSIP)
        .args(["agent", "-node=x", "-tag=role=db"])
        .arg(format!("-tags-file={}", tags_file.display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("Tags config not allowed while using tag files"),
        "{o:?}"
    );
}

/// Runs `gossip agent ARGS` that must refuse to start: its output, once it
/// exited (a regression that starts the agent fails at the deadline instead
/// of hanging).
fn refused_start(args: &[String]) -> Output {
    let mut child = ChildGuard::spawn(
        &format!("gossip agent with {args:?} (it must refuse to start)"),
        Command::new(GOSSIP)
            .args([
                "agent",
                "-node=x",
                "-bind=127.0.0.1:0",
                "-rpc-addr=127.0.0.1:0",
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let o = child.output_blocking(DEADLINE);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {o:?}");
    // Nothing happened before the refusal: no member event was logged.
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("member-join"),
        "{o:?}"
    );
    o
}

#[test]
fn a_snapshot_path_that_cannot_be_opened_stops_the_start() {
    let dir = temp_dir("cli-agent-badsnapshot");
    let dir = dir.path();
    // A directory where the snapshot file should be.
    let snapshot = dir.join("snapshot");
    std::fs::create_dir_all(&snapshot).unwrap();
    let o = refused_start(&[format!("-snapshot={}", snapshot.display())]);
    let want = format!("cannot open the snapshot file {}", snapshot.display());
    assert!(String::from_utf8_lossy(&o.stderr).contains(&want), "{o:?}");
}

#[test]
fn a_keyring_file_without_usable_keys_stops_the_start() {
    // Before, each of these started an agent gossiping in plain text whose
    // banner said `Encrypted: true`. serf 0.8 refuses all of them too.
    let dir = temp_dir("cli-agent-badkeyring");
    let dir = dir.path();
    let key = "QHOYjmYlxSCBhdfiolhtDQ==";
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let missing = dir.join("missing.json").display().to_string();
    let not_json = file("not-json", "QHOYjmYlxSCBhdfiolhtDQ==\n");
    let empty = file("empty.json", "[]");
    let bad_key = file("bad-key.json", &format!("[\"{key}\", \"not base64!\"]"));
    let short = file("short.json", "[\"c2hvcnQ=\"]");
    let good = file("good.json", &format!("[\"{key}\"]"));
    let cases: [(Vec<String>, String); 6] = [
        (
            vec![format!("-keyring-file={missing}")],
            format!("cannot read keyring file {missing}"),
        ),
        (
            vec![format!("-keyring-file={not_json}")],
            format!("keyring file {not_json} is not a JSON list of keys"),
        ),
        (
            vec![format!("-keyring-file={empty}")],
            format!("no keys present in keyring file {empty}"),
        ),
        (
            vec![format!("-keyring-file={bad_key}")],
            format!("bad key #2 in keyring file {bad_key}"),
        ),
        (
            vec![format!("-keyring-file={short}")],
            "encryption key must be 16, 24 or 32 bytes, got 5".into(),
        ),
        (
            vec![format!("-keyring-file={good}"), format!("-encrypt={key}")],
            "Encryption key not allowed while using a keyring".into(),
        ),
    ];
    for (args, want) in cases {
        let o = refused_start(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&want), "{args:?}: want {want:?} in {err}");
        assert!(!err.contains("not base64!"), "a key is echoed: {err}");
    }
}

#[test]
fn queries_are_answered_by_handlers_on_both_serf_and_gossip() {
    let s = SerfAgent::builder("q-serf")
        .event_handler("query:ping=/bin/echo pong-from-serf")
        .start_blocking();
    let dir = temp_dir("cli-agent-query");
    let dir = dir.path();
    let g = GossipAgent::start(
        "q-ours",
        dir,
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
                let t = String::from_utf8_lossy(&serf(&["members", &r, "-status=alive"]).stdout)
                    .into_owned();
                (t.lines().count() == 2).then_some(())
            },
        );
    }
    for rpc in [g.rpc, s.rpc] {
        let o = serf(&["query", &format!("-rpc-addr={rpc}"), "-timeout=5s", "ping"]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
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
    let dir = temp_dir("cli-agent-stream");
    let dir = dir.path();
    let g = GossipAgent::start("st-ours", dir, &[]);
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
    assert!(serf(&["event", &rpc, "one", "first"]).status.success());
    poll(
        "old handler ran",
        || g.logs(),
        || {
            let t = std::fs::read_to_string(&before).unwrap_or_default();
            (t == "first\n").then_some(())
        },
    );

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
            let t = String::from_utf8_lossy(&serf(&["members", &rpc]).stdout).into_owned();
            t.contains("role=db").then_some(())
        },
    );
    assert!(serf(&["event", &rpc, "two", "second"]).status.success());
    poll(
        "new handler ran",
        || g.logs(),
        || {
            let t = std::fs::read_to_string(&after).unwrap_or_default();
            (t == "second\n").then_some(())
        },
    );
    assert_eq!(std::fs::read_to_string(&before).unwrap(), "first\n");
}

/// Serf's size limits, side by side with the real serf: the same refusals
/// through either agent's RPC (user event, query, a handler's response),
/// the config keys that widen them, and the 9 KiB ceiling at start.
#[test]
fn size_limits_match_serf_and_follow_its_config_keys() {
    let dir = temp_dir("cli-agent-limits");
    let dir = dir.path();
    // A query handler answering 1500 bytes; a user-event handler recording
    // the size of the payload it got.
    let answer = dir.join("answer.sh");
    std::fs::write(&answer, "#!/bin/sh\nhead -c 1500 /dev/zero | tr '\\0' b\n").unwrap();
    let got = dir.join("serf-got");
    let record = dir.join("record.sh");
    std::fs::write(
        &record,
        format!(
            "#!/bin/sh\nwc -c > {}.tmp && mv {0}.tmp {0}\n",
            got.display()
        ),
    )
    .unwrap();
    for f in [&answer, &record] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let big_query = format!("query:big={}", answer.display());
    let s = SerfAgent::builder("l-serf")
        .event_handler(&big_query)
        .event_handler(&format!("user:big={}", record.display()))
        .start_blocking();
    let ours = GossipAgent::start(
        "l-ours",
        dir,
        &[
            format!("-join={}", s.bind),
            "-event-handler".into(),
            big_query.clone(),
        ],
    );
    let wide_cfg = dir.join("wide.json");
    std::fs::write(
        &wide_cfg,
        r#"{"user_event_size_limit": 2048, "query_response_size_limit": 2048}"#,
    )
    .unwrap();
    let wide = GossipAgent::start(
        "l-wide",
        dir,
        &[
            format!("-join={}", s.bind),
            format!("-config-file={}", wide_cfg.display()),
            "-event-handler".into(),
            big_query.clone(),
        ],
    );
    let logs = || format!("{}\n{}\nserf:\n{}", ours.logs(), wide.logs(), s.log_text());
    poll("three members alive", logs, || {
        let out = serf(&["members", &format!("-rpc-addr={}", s.rpc), "-status=alive"]);
        (String::from_utf8_lossy(&out.stdout).lines().count() == 3).then_some(())
    });

    let a = |n: usize| "a".repeat(n);
    for (args, want) in [
        (
            vec!["event".to_string(), "big".into(), a(600)],
            "Error sending event: user event exceeds configured limit of 512 bytes before encoding",
        ),
        (
            vec!["event".to_string(), "big".into(), a(490)],
            "Error sending event: encoded user event exceeds configured limit of 512 bytes after encoding",
        ),
        (
            vec!["query".to_string(), "-timeout=1s".into(), "big".into(), a(1100)],
            "Error sending query: query exceeds limit of 1024 bytes",
        ),
    ] {
        for rpc in [s.rpc, ours.rpc] {
            let mut argv = vec![args[0].clone(), format!("-rpc-addr={rpc}")];
            argv.extend(args[1..].iter().cloned());
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let o = serf(&argv);
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{rpc}: {argv:?} accepted: {text}");
            assert!(text.contains(want), "{rpc}: {:?}: {text}", args[0]);
        }
    }

    // 1500-byte answers: serf and l-ours refuse to send them (1024), l-wide
    // sends its own (2048).
    let o = serf(&[
        "query",
        &format!("-rpc-addr={}", ours.rpc),
        "-timeout=3s",
        "big",
    ]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("Total Acks: 3"), "{text}\n{}", logs());
    assert!(text.contains("Total Responses: 1"), "{text}\n{}", logs());
    assert!(
        text.contains(&format!("Response from 'l-wide': {}", "b".repeat(1500))),
        "{text}"
    );
    poll("l-ours to log the refused response", logs, || {
        ours.logs()
            .contains("Failed to respond to query 'big': response exceeds limit of 1024 bytes")
            .then_some(())
    });

    // l-wide sends a 1500-byte event (too big for a gossip packet: it
    // travels by push-pull, every 30 s); serf's handler receives it whole.
    let o = serf(&[
        "event",
        &format!("-rpc-addr={}", wide.rpc),
        "big",
        &"e".repeat(1500),
    ]);
    assert!(o.status.success(), "{o:?}");
    eventually_blocking_explained(
        "serf's handler to get the 1500-byte event",
        Duration::from_secs(75),
        || {
            let n = std::fs::read_to_string(&got).unwrap_or_default();
            format!("serf's handler got {n:?} bytes\n{}", logs())
        },
        || {
            let n = std::fs::read_to_string(&got).unwrap_or_default();
            // serf's handler gets the payload plus the newline serf appends.
            (n.trim() == "1501").then_some(())
        },
    );

    // The ceiling is Serf's: 9216 bytes.
    let too_wide = dir.join("too-wide.json");
    std::fs::write(&too_wide, r#"{"user_event_size_limit": 10000}"#).unwrap();
    let o = refused_start(&[format!("-config-file={}", too_wide.display())]);
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("user event size limit 10000 exceeds limit of 9216 bytes"),
        "{o:?}"
    );
}

/// `-disable-compression` (serf's flag; config key `enable_compression`):
/// the banner says so and a serf agent still understands every message.
#[test]
fn an_agent_without_compression_joins_serf() {
    let s = SerfAgent::builder("nc-serf").start_blocking();
    let dir = temp_dir("cli-agent-nocompress");
    let dir = dir.path();
    let ours = GossipAgent::start(
        "nc-ours",
        dir,
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
            let out = serf(&["members", &format!("-rpc-addr={rpc}"), "-status=alive"]);
            (String::from_utf8_lossy(&out.stdout).lines().count() == 2).then_some(())
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

/// Tags must fit memberlist's 512 bytes of node meta: too many stop the
/// start, and a change through RPC that would not fit is refused with the
/// tags left as they were — serf 0.8's messages, checked side by side.
#[test]
fn tags_that_do_not_fit_are_refused_as_by_serf() {
    let big = format!("big={}", "a".repeat(600));
    let o = refused_start(&["-tag".into(), big.clone()]);
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("Encoded length of tags exceeds limit of 512 bytes"),
        "{o:?}"
    );

    let dir = temp_dir("cli-agent-bigtags");
    let dir = dir.path();
    let ours = GossipAgent::start("bt-ours", dir, &["-tag".into(), "role=web".into()]);
    let r = format!("-rpc-addr={}", ours.rpc);
    let o = serf(&["tags", &r, "-set", &big]);
    let err = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("Error setting tags: Encoded length of tags exceeds limit of 512 bytes"),
        "{err}"
    );
    let members = String::from_utf8_lossy(&serf(&["members", &r]).stdout).into_owned();
    assert!(
        members.contains("role=web") && !members.contains("big="),
        "{members}"
    );
    // A change that fits still goes through.
    assert!(serf(&["tags", &r, "-set", "zone=z1"]).status.success());
    let members = String::from_utf8_lossy(&serf(&["members", &r]).stdout).into_owned();
    assert!(members.contains("zone=z1"), "{members}");
}
