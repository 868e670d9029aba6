//! End to end: `render reconcile` (the binary) between a real `serf agent`
//! cluster and the real HAProxy, on loopback. Backend members join, leave
//! gracefully and crash; a member with a hostile name is ignored with one
//! log line; a steady keep-alive load through HAProxy's frontend sees no
//! failed request; the written haproxy.cfg lists the same servers and
//! passes `haproxy -c`; SIGTERM stops the reconciler with status 0.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn log_text(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
use testkit::http::{Load, WebServer};
use testkit::{eventually, free_port, require, ChildGuard, SerfAgent, Signal, SERF};

/// The rendered empty-backend haproxy.cfg for these loopback ports, through
/// the binary's one-shot mode and the shipped template.
fn empty_config(vars: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut args = vec!["--backends".to_string(), "[]".into()];
    args.extend(var_flags(vars));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    one_shot(&argv).unwrap_or_else(|e| panic!("{e}"))
}

/// `render reconcile` as a child, logging to `log`.
fn start_reconciler(
    rpc: u16,
    admin: &str,
    live_cfg: &std::path::Path,
    vars: &serde_json::Map<String, serde_json::Value>,
    log: &std::path::Path,
) -> ChildGuard {
    let mut args = vec![
        format!("--rpc-addr=127.0.0.1:{rpc}"),
        format!("--admin-socket={admin}"),
        "--port-tag=port".into(),
        format!("--config-out={}", live_cfg.display()),
        format!("--check={HAPROXY} -c -f {{}}"),
        "--verify-secs=1".into(),
        "--log-level=info".into(),
    ];
    args.extend(reconcile_vars(vars));
    reconcile_child(&args, &[], log)
}

/// The balancer's side, in a temp dir: HAProxy with no server yet (from
/// the shipped template), a serf agent `ha`, and the reconciler between
/// them on HAProxy's TCP admin socket (as the lab's 9999) or, with
/// `unix_admin`, on its unix socket.
struct Balancer {
    h: Haproxy,
    ha: SerfAgent,
    reconciler: ChildGuard,
    fe: u16,
    serf_log: std::path::PathBuf,
    rec_log: std::path::PathBuf,
    live_cfg: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Balancer {
    async fn start(unix_admin: bool) -> Balancer {
        require(HAPROXY, "haproxy");
        require(SERF, "serf");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (fe, st, at) = (free_port(), free_port(), free_port());
        let vars = Haproxy::vars(d, fe, st, at);
        let h = Haproxy::start(d, &empty_config(&vars), fe, st, at).await;
        let serf_log = d.join("serf.log");
        let ha = serf("ha", &[("role", "balancer")], None, &serf_log)
            .start()
            .await;
        let rec_log = d.join("reconcile.log");
        let live_cfg = d.join("live.cfg");
        let admin = if unix_admin {
            d.join("admin.sock").display().to_string()
        } else {
            format!("127.0.0.1:{at}")
        };
        let reconciler = start_reconciler(ha.rpc.port(), &admin, &live_cfg, &vars, &rec_log);
        Balancer {
            h,
            ha,
            reconciler,
            fe,
            serf_log,
            rec_log,
            live_cfg,
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serf_members_drive_haproxy_without_failed_requests() {
    let Balancer {
        h,
        ha,
        mut reconciler,
        fe,
        serf_log,
        rec_log,
        live_cfg,
        _dir,
    } = Balancer::start(false).await;

    // Two backends join.
    let (w1, s1) = backend("s1", ha.bind, &serf_log).await;
    let (w2, s2) = backend("s2", ha.bind, &serf_log).await;
    let w3 = WebServer::start("s3").await;
    let p3 = w3.port.to_string();
    let t3 = [("role", "backend"), ("port", p3.as_str())];
    eventually(
        "s1 and s2 UP in HAProxy",
        Duration::from_secs(60),
        async || (h.up().await == ["s1", "s2"]).then_some(()),
    )
    .await;

    // Steady load from here on: 4 keep-alive clients, one attempt each.
    let load = Load::start(
        fe,
        4,
        Duration::from_millis(5),
        Duration::from_secs(150),
        30_000,
    );

    // A member with a hostile name and the backend role: ignored, logged.
    let hostile = serf("a b;rm", &t3, Some(ha.bind), &serf_log).start().await;
    eventually(
        "the hostile name logged",
        Duration::from_secs(60),
        async || {
            log_text(&rec_log)
                .contains("ignoring member \"a b;rm\"")
                .then_some(())
        },
    )
    .await;

    // A third backend joins.
    let t_s3 = std::time::Instant::now();
    let s3 = serf("s3", &t3, Some(ha.bind), &serf_log).start().await;
    eventually("s3 UP", Duration::from_secs(60), async || {
        (h.up().await == ["s1", "s2", "s3"]).then_some(())
    })
    .await;

    // s1 leaves gracefully (SIGINT makes serf leave), s2 crashes.
    let t_s1 = std::time::Instant::now();
    s1.signal(Signal::SIGINT);
    eventually("s1 removed", Duration::from_secs(60), async || {
        (!h.servers().await.contains_key("s1")).then_some(())
    })
    .await;
    let t_s2 = std::time::Instant::now();
    drop(s2);
    eventually(
        "s2 removed after its failure is detected",
        Duration::from_secs(60),
        async || (h.servers().await.keys().collect::<Vec<_>>() == ["s3"]).then_some(()),
    )
    .await;
    let seen = load.snapshot().by_backend.get("s3").copied().unwrap_or(0);
    eventually(
        "more answers from s3",
        Duration::from_secs(30),
        async || {
            (load.snapshot().by_backend.get("s3").copied().unwrap_or(0) > seen + 20).then_some(())
        },
    )
    .await;
    let report = load.finish().await;
    eprintln!("load: {report:?}");
    eprintln!(
        "measured: s3 agent start -> first answer {:?} ms; s1 SIGINT (leave) -> last answer {:?} ms; s2 SIGKILL (failed) -> last answer {:?} ms",
        report.join_ms("s3", t_s3),
        report.leave_ms("s1", t_s1),
        report.leave_ms("s2", t_s2)
    );
    assert_eq!(report.failed, 0, "failed requests: {report:?}");
    for b in ["s1", "s2", "s3"] {
        assert!(
            report.by_backend.get(b).copied().unwrap_or(0) > 0,
            "{b} got no request: {report:?}"
        );
    }

    // The hostile member never reached HAProxy; it was reported once.
    assert!(!h.servers().await.keys().any(|k| k.contains(' ')));
    let log = log_text(&rec_log);
    assert_eq!(
        log.matches("ignoring member \"a b;rm\"").count(),
        1,
        "{log}"
    );
    assert!(
        log.contains(&format!("added s1 127.0.0.1:{}", w1.port)),
        "{log}"
    );
    assert!(log.contains("removed s1"), "{log}");

    // The file follows: s3 only, and valid.
    let written = eventually(
        "the config written with s3 only",
        Duration::from_secs(30),
        async || {
            let t = std::fs::read_to_string(&live_cfg).ok()?;
            (t.contains(&format!("server s3 127.0.0.1:{} ", w3.port))
                && !t.contains("server s1 ")
                && !t.contains("server s2 "))
            .then_some(t)
        },
    )
    .await;
    assert!(!written.contains("a b;rm"));
    let check = Command::new(HAPROXY)
        .args(["-c", "-q", "-f"])
        .arg(&live_cfg)
        .status()
        .unwrap();
    assert!(check.success(), "haproxy -c refused:\n{written}");

    // SIGTERM: exit 0.
    reconciler.signal(Signal::SIGTERM);
    let status = reconciler.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", log_text(&rec_log));
    eprintln!("reconciler log:\n{}", log_text(&rec_log));
    drop((hostile, s3, s1, ha, w1, w2, w3));
}

/// Started before HAProxy and the agent exist, the reconciler waits for
/// them; it follows HAProxy through a restart (from the config file it
/// wrote) and the agent through a restart, and never exits on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_haproxy_and_agent_restarts() {
    require(HAPROXY, "haproxy");
    require(SERF, "serf");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (fe, st, at, rpc) = (free_port(), free_port(), free_port(), free_port());
    let vars = Haproxy::vars(d, fe, st, at);
    let rec_log = d.join("reconcile.log");
    let serf_log = d.join("serf.log");
    let live_cfg = d.join("live.cfg");
    let sock = d.join("admin.sock").display().to_string();
    let mut reconciler = start_reconciler(rpc, &sock, &live_cfg, &vars, &rec_log);
    eventually(
        "the agent reported unavailable",
        Duration::from_secs(30),
        async || {
            log_text(&rec_log)
                .contains("membership agent unavailable")
                .then_some(())
        },
    )
    .await;

    let ha = serf("ha", &[("role", "balancer")], None, &serf_log)
        .rpc_port(rpc)
        .start()
        .await;
    let (w1, s1) = backend("s1", ha.bind, &serf_log).await;
    // HAProxy comes last; the file is already there for it.
    let cfg = eventually("the config with s1", Duration::from_secs(30), async || {
        std::fs::read_to_string(&live_cfg)
            .ok()
            .filter(|t| t.contains("server s1 "))
    })
    .await;
    let h = Haproxy::start(d, &cfg, fe, st, at).await;
    eventually("s1 UP", Duration::from_secs(60), async || {
        (h.up().await == ["s1"]).then_some(())
    })
    .await;

    // HAProxy restarts from the written file; a new member still gets in.
    drop(h);
    let cfg = std::fs::read_to_string(&live_cfg).unwrap();
    let h = Haproxy::start(d, &cfg, fe, st, at).await;
    let (w2, s2) = backend("s2", ha.bind, &serf_log).await;
    eventually(
        "s1 and s2 UP after the HAProxy restart",
        Duration::from_secs(60),
        async || (h.up().await == ["s1", "s2"]).then_some(()),
    )
    .await;

    // The agent restarts (same RPC port) and rejoins; the reconciler
    // reconnects, keeps s1 and s2, and follows a new member.
    drop(ha);
    eventually(
        "the lost stream logged",
        Duration::from_secs(30),
        async || {
            log_text(&rec_log)
                .contains("membership stream lost")
                .then_some(())
        },
    )
    .await;
    let ha = serf("ha", &[("role", "balancer")], Some(s1.bind), &serf_log)
        .rpc_port(rpc)
        .start()
        .await;
    let (w3, s3) = backend("s3", ha.bind, &serf_log).await;
    eventually(
        "s1, s2 and s3 UP after the agent restart",
        Duration::from_secs(60),
        async || (h.up().await == ["s1", "s2", "s3"]).then_some(()),
    )
    .await;
    assert!(reconciler.is_running(), "{}", log_text(&rec_log));
    reconciler.signal(Signal::SIGINT);
    let status = reconciler.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "SIGINT: exit 0\n{}",
        log_text(&rec_log)
    );
    eprintln!("reconciler log:\n{}", log_text(&rec_log));
    drop((s1, s2, s3, ha, w1, w2, w3));
}

/// Two live members claiming one address (Docker gives a dead container's
/// address to the next one before the agents notice the death): HAProxy
/// gets one server for it, named after the later claimant; the earlier one
/// is logged once and comes back when it is the only claimant again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_per_address_owned_by_the_later_member() {
    let Balancer {
        h,
        ha,
        mut reconciler,
        serf_log,
        rec_log,
        live_cfg,
        _dir,
        ..
    } = Balancer::start(true).await;

    let w = WebServer::start("w").await;
    let port = w.port.to_string();
    let tags = [("role", "backend"), ("port", port.as_str())];
    let old = serf("old", &tags, Some(ha.bind), &serf_log).start().await;
    eventually("old UP", Duration::from_secs(60), async || {
        (h.up().await == ["old"]).then_some(())
    })
    .await;

    // "new" claims the same address while "old" is still alive.
    let new = serf("new", &tags, Some(ha.bind), &serf_log).start().await;
    eventually(
        "one server for the address: new's",
        Duration::from_secs(60),
        async || (h.servers().await.keys().collect::<Vec<_>>() == ["new"]).then_some(()),
    )
    .await;
    eventually("new UP", Duration::from_secs(60), async || {
        (h.up().await == ["new"]).then_some(())
    })
    .await;
    let log = log_text(&rec_log);
    let line =
        format!("ignoring member \"old\": its address 127.0.0.1:{port} now belongs to \"new\"");
    assert_eq!(log.matches(&line).count(), 1, "{log}");
    let cfg = std::fs::read_to_string(&live_cfg).unwrap();
    assert!(
        cfg.contains("server new ") && !cfg.contains("server old "),
        "{cfg}"
    );

    // "new" leaves: "old" is the only claimant again.
    new.signal(Signal::SIGINT);
    eventually("old back, alone", Duration::from_secs(60), async || {
        (h.servers().await.keys().collect::<Vec<_>>() == ["old"] && h.up().await == ["old"])
            .then_some(())
    })
    .await;
    reconciler.signal(Signal::SIGTERM);
    let status = reconciler.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", log_text(&rec_log));
    drop((old, new, ha, w));
}

/// Our own agent (`gossip`, run in this test process with its Serf RPC
/// server) on the balancer, real `serf agent`s as backends: the reconciler
/// works the same against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_with_our_gossip_agent() {
    require(HAPROXY, "haproxy");
    require(SERF, "serf");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (fe, st, at) = (free_port(), free_port(), free_port());
    let vars = Haproxy::vars(d, fe, st, at);
    let h = Haproxy::start(d, &empty_config(&vars), fe, st, at).await;

    let agent = gossip::agent::start(gossip::model::AgentConfig {
        node_name: "ha".into(),
        bind: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        tags: vec![("role".into(), "balancer".into())],
        ..Default::default()
    })
    .await
    .expect("our agent starts");
    let gossip_addr = agent.local_addr();
    let rpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rpc = rpc_listener.local_addr().unwrap().port();
    let rpc_task = tokio::spawn(gossip::rpc::serve(rpc_listener, agent.clone(), None));

    let rec_log = d.join("reconcile.log");
    let live_cfg = d.join("live.cfg");
    let mut reconciler =
        start_reconciler(rpc, &format!("127.0.0.1:{at}"), &live_cfg, &vars, &rec_log);

    let serf_log = d.join("serf.log");
    let (w1, s1) = backend("s1", gossip_addr, &serf_log).await;
    let (w2, s2) = backend("s2", gossip_addr, &serf_log).await;
    eventually("s1 and s2 UP", Duration::from_secs(60), async || {
        (h.up().await == ["s1", "s2"]).then_some(())
    })
    .await;
    let load = Load::start(
        fe,
        4,
        Duration::from_millis(5),
        Duration::from_secs(90),
        15_000,
    );
    s1.signal(Signal::SIGINT);
    eventually("s1 removed", Duration::from_secs(60), async || {
        (h.servers().await.keys().collect::<Vec<_>>() == ["s2"]).then_some(())
    })
    .await;
    let seen = load.snapshot().by_backend.get("s2").copied().unwrap_or(0);
    eventually(
        "more answers from s2",
        Duration::from_secs(30),
        async || {
            (load.snapshot().by_backend.get("s2").copied().unwrap_or(0) > seen + 20).then_some(())
        },
    )
    .await;
    let report = load.finish().await;
    eprintln!("load: {report:?}");
    assert_eq!(report.failed, 0, "failed requests: {report:?}");

    reconciler.signal(Signal::SIGTERM);
    let status = reconciler.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", log_text(&rec_log));
    rpc_task.abort();
    drop((s1, s2, w1, w2));
}
