//! The reconciler against the real HAProxy, with the member list scripted
//! by the test (the Serf-driven end-to-end test is `reconcile_serf.rs`):
//! adoption of servers from the config file, join, leave, a member that
//! comes back at another address before its entry is deleted, a restart of
//! the reconciler, a restart of HAProxy from the written config — and zero
//! failed requests under steady keep-alive load throughout.

mod common;

use std::time::Duration;

use common::*;
use render::backends::{Backend, BackendSet, MemberInfo};
use render::cli::settings;
use render::membership::MembershipSource;
use render::reconcile::{self, Settings};
use testkit::http::{get, Load, WebServer};
use testkit::{eventually, free_port, require};
use tokio::sync::mpsc;

/// Member lists pushed by the test; each push is one "event". Like Serf,
/// the agent goes on listing a member that departed, as `left` (Serf
/// keeps it until it is reaped), unless the test sends a list that
/// [`forgets`] everything before it (a restarted agent).
struct Scripted {
    rx: mpsc::UnboundedReceiver<Vec<MemberInfo>>,
    current: Vec<MemberInfo>,
    seen: std::collections::BTreeMap<String, MemberInfo>,
}

/// The status that marks a pushed list as a fresh agent's: the members
/// seen before are forgotten (this entry itself is listed alive).
const FRESH: &str = "fresh-agent";

fn forgets(mut list: Vec<MemberInfo>) -> Vec<MemberInfo> {
    list.push(MemberInfo {
        status: FRESH.into(),
        ..member("ha", 1)
    });
    list
}

impl Scripted {
    fn set(&mut self, list: Vec<MemberInfo>) {
        if list.iter().any(|m| m.status == FRESH) {
            self.seen.clear();
        }
        for m in &list {
            self.seen.insert(m.name.clone(), m.clone());
        }
        self.current = self
            .seen
            .values()
            .map(|m| {
                let mut m = m.clone();
                if m.status == FRESH {
                    m.status = "alive".into();
                    m.tags.clear();
                } else if !list.iter().any(|l| l.name == m.name) {
                    m.status = "left".into();
                }
                m
            })
            .collect();
    }
}

impl MembershipSource for Scripted {
    async fn connect(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    async fn members(&mut self) -> anyhow::Result<Vec<MemberInfo>> {
        Ok(self.current.clone())
    }
    async fn next_event(&mut self) -> anyhow::Result<()> {
        match self.rx.recv().await {
            Some(list) => {
                self.set(list);
                Ok(())
            }
            None => std::future::pending().await,
        }
    }
}

/// The reconciler on a [`Scripted`] list, starting from `initial`; the
/// sender pushes the next lists.
fn start_scripted(
    s: Settings,
    initial: Vec<MemberInfo>,
) -> (Running, mpsc::UnboundedSender<Vec<MemberInfo>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut src = Scripted {
        rx,
        current: Vec::new(),
        seen: Default::default(),
    };
    src.set(initial);
    (Running::start(s, src), tx)
}

fn settings_for(dir: &std::path::Path, ports: (u16, u16, u16), out: &std::path::Path) -> Settings {
    settings(&loopback_args(dir, ports, out, "-c -f", &[])).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_member_list_without_failed_requests() {
    require(HAPROXY, "haproxy");
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("render=debug")
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let (fe, st, at) = (free_port(), free_port(), free_port());
    let b0 = WebServer::start("s0").await;
    let b1 = WebServer::start("s1").await;
    let b2 = WebServer::start("s2").await;

    // HAProxy starts from a file that already lists s0: the reconciler
    // must adopt it, not add it again.
    let mut initial = BackendSet::new();
    initial.insert(
        "s0".into(),
        Backend::new("s0", "127.0.0.1".parse().unwrap(), b0.port),
    );
    let s = settings_for(dir.path(), (fe, st, at), &dir.path().join("written.cfg"));
    let cfg = reconcile::render_config(&s, &initial).unwrap();
    let h = Haproxy::start(dir.path(), &cfg, fe, st, at).await;
    eventually(
        "s0 UP from the config file",
        Duration::from_secs(30),
        async || (h.up().await == ["s0"]).then_some(()),
    )
    .await;

    let load = Load::start(
        fe,
        4,
        Duration::from_millis(5),
        Duration::from_secs(120),
        20_000,
    );
    let (run, tx) = start_scripted(
        s.clone(),
        vec![member("s0", b0.port), member("s1", b1.port)],
    );
    eventually("s0 and s1 UP", Duration::from_secs(30), async || {
        (h.up().await == ["s0", "s1"]).then_some(())
    })
    .await;
    assert_eq!(h.servers().await.len(), 2, "s0 adopted, not duplicated");

    // s0 leaves, s2 joins.
    let t_change = std::time::Instant::now();
    tx.send(vec![member("s1", b1.port), member("s2", b2.port)])
        .unwrap();
    eventually(
        "s0 deleted, s1 and s2 UP",
        Duration::from_secs(30),
        async || {
            let servers = h.servers().await;
            (servers.keys().collect::<Vec<_>>() == ["s1", "s2"] && h.up().await == ["s1", "s2"])
                .then_some(())
        },
    )
    .await;

    // s1 leaves and comes straight back elsewhere (a new port): its old
    // entry is re-enabled at the new address whether or not it was
    // deleted in between.
    let b1b = WebServer::start("s1b").await;
    tx.send(vec![member("s2", b2.port)]).unwrap();
    eventually("s1 out of service", Duration::from_secs(30), async || {
        (h.up().await == ["s2"]).then_some(())
    })
    .await;
    tx.send(vec![member("s1", b1b.port), member("s2", b2.port)])
        .unwrap();
    let want = format!("127.0.0.1:{}", b1b.port);
    eventually(
        "s1 UP at its new address",
        Duration::from_secs(30),
        async || {
            let servers = h.servers().await;
            (servers.get("s1").map(|s| s.0.as_str()) == Some(want.as_str())
                && h.up().await == ["s1", "s2"])
            .then_some(())
        },
    )
    .await;
    eventually(
        "answers from s1's new server",
        Duration::from_secs(30),
        async || (load.snapshot().by_backend.get("s1b").copied().unwrap_or(0) > 10).then_some(()),
    )
    .await;

    // The reconciler restarts; meanwhile s2 was put in maintenance by hand
    // and moved to another port. The new process adopts what is there: s1
    // untouched, s2's entry re-enabled at its new address (same server ids:
    // nothing re-added).
    run.stop().await;
    let ids_before = h.ids().await;
    h.cmd("set server nodes/s2 state maint").await;
    let b2b = WebServer::start("s2b").await;
    let (run, _tx2) = start_scripted(
        s.clone(),
        vec![member("s1", b1b.port), member("s2", b2b.port)],
    );
    let want = format!("127.0.0.1:{}", b2b.port);
    eventually(
        "s2 UP at its new address",
        Duration::from_secs(30),
        async || {
            let servers = h.servers().await;
            (servers.get("s2").map(|s| s.0.as_str()) == Some(want.as_str())
                && h.up().await == ["s1", "s2"])
            .then_some(())
        },
    )
    .await;
    assert_eq!(h.ids().await, ids_before, "entries reused, not re-added");
    eventually(
        "answers from s2's new server",
        Duration::from_secs(30),
        async || (load.snapshot().by_backend.get("s2b").copied().unwrap_or(0) > 10).then_some(()),
    )
    .await;

    let report = load.finish().await;
    run.stop().await;
    eprintln!("load: {report:?}");
    eprintln!(
        "measured (100 ms quiet window included): s2 join -> first answer {:?} ms; s0 leave -> last answer {:?} ms",
        report.join_ms("s2", t_change),
        report.leave_ms("s0", t_change)
    );
    assert_eq!(report.failed, 0, "failed requests: {report:?}");
    for b in ["s0", "s1", "s1b", "s2", "s2b"] {
        assert!(
            report.by_backend.get(b).copied().unwrap_or(0) > 0,
            "{b} got no request: {report:?}"
        );
    }

    // The written config lists the same servers and passes haproxy -c.
    let written = std::fs::read_to_string(dir.path().join("written.cfg")).unwrap();
    assert!(
        written.contains(&format!("server s1 127.0.0.1:{} check", b1b.port)),
        "{written}"
    );
    assert!(
        written.contains(&format!("server s2 127.0.0.1:{} check", b2b.port)),
        "{written}"
    );
    assert!(!written.contains("server s0 "), "{written}");
    let check = std::process::Command::new(HAPROXY)
        .args(["-c", "-q", "-f"])
        .arg(dir.path().join("written.cfg"))
        .status()
        .unwrap();
    assert!(
        check.success(),
        "haproxy -c refused the written config:\n{written}"
    );

    // HAProxy restarted from the written file comes back with them.
    drop(h);
    let h2 = Haproxy::start(dir.path(), &written, fe, st, at).await;
    eventually(
        "s1 and s2 UP after an HAProxy restart",
        Duration::from_secs(30),
        async || (h2.up().await == ["s1", "s2"]).then_some(()),
    )
    .await;
}

/// A member whose web server is not listening yet gets traffic only once
/// its health check passes (the default probe finds nothing and falls back
/// to the gated join): it stays DOWN and costs no request; once it listens
/// it comes UP and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_join_waits_for_a_passing_check() {
    require(HAPROXY, "haproxy");
    let dir = tempfile::tempdir().unwrap();
    let (fe, st, at) = (free_port(), free_port(), free_port());
    let s = settings_for(dir.path(), (fe, st, at), &dir.path().join("written.cfg"));
    let h = Haproxy::start_empty(&s, dir.path(), (fe, st, at)).await;
    let w1 = WebServer::start("s1").await;
    let (run, tx) = start_scripted(s, vec![member("s1", w1.port)]);
    eventually("s1 UP", Duration::from_secs(30), async || {
        (h.up().await == ["s1"]).then_some(())
    })
    .await;

    let load = Load::start(
        fe,
        4,
        Duration::from_millis(5),
        Duration::from_secs(90),
        15_000,
    );
    let late_port = free_port();
    tx.send(vec![member("s1", w1.port), member("late", late_port)])
        .unwrap();
    // Its first check fails (nothing listens): it must never have been UP.
    eventually(
        "late's first failed check",
        Duration::from_secs(30),
        async || {
            let servers = h.servers().await;
            // Between `state drain` and `health down` the server is
            // UP/DRAIN for an instant: draining takes no new requests. What
            // must never happen is UP and ready (admin state 0).
            if let Some((_, op, admin)) = servers.get("late") {
                assert!(
                    !(*op == 2 && *admin == 0),
                    "late is UP and ready although nothing listens on its port"
                );
            }
            (h.check_result("late").await == Some(2)).then_some(())
        },
    )
    .await;
    assert_eq!(h.up().await, ["s1"]);

    // Now it listens: UP after its check passes, and it gets requests.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", late_port))
        .await
        .unwrap();
    let late = WebServer::serve("late", listener);
    eventually("late UP", Duration::from_secs(30), async || {
        (h.up().await == ["late", "s1"]).then_some(())
    })
    .await;
    eventually("answers from late", Duration::from_secs(30), async || {
        (load.snapshot().by_backend.get("late").copied().unwrap_or(0) > 10).then_some(())
    })
    .await;
    let report = load.finish().await;
    run.stop().await;
    eprintln!("load: {report:?}");
    assert_eq!(report.failed, 0, "failed requests: {report:?}");
    drop(late);
}

/// The default join probes a new member itself: one that accepts
/// connections is UP at once, before HAProxy has run a single check of it
/// (checks every hour here, so a gated join would still be waiting), and
/// serves with no failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_join_enables_a_listening_server_before_any_check() {
    require(HAPROXY, "haproxy");
    let dir = tempfile::tempdir().unwrap();
    let (fe, st, at) = (free_port(), free_port(), free_port());
    let mut s = settings_for(dir.path(), (fe, st, at), &dir.path().join("written.cfg"));
    assert_eq!(s.join, reconcile::JoinMode::Probe, "the default join");
    s.server_options = "check inter 1h downinter 1h fall 1 rise 1".into();
    let h = Haproxy::start_empty(&s, dir.path(), (fe, st, at)).await;
    let w1 = WebServer::start("s1").await;
    let (run, tx) = start_scripted(s, vec![]);
    tx.send(vec![member("s1", w1.port)]).unwrap();
    eventually("s1 UP", Duration::from_secs(30), async || {
        (h.up().await == ["s1"]).then_some(())
    })
    .await;
    // srv_check_result 0: HAProxy has not completed a check of s1 yet.
    assert_eq!(
        h.check_result("s1").await,
        Some(0),
        "s1 was checked already"
    );
    let load = Load::start(
        fe,
        2,
        Duration::from_millis(5),
        Duration::from_secs(90),
        10_000,
    );
    eventually("answers from s1", Duration::from_secs(30), async || {
        (load.snapshot().by_backend.get("s1").copied().unwrap_or(0) > 10).then_some(())
    })
    .await;
    let report = load.finish().await;
    run.stop().await;
    assert_eq!(report.failed, 0, "failed requests: {report:?}");
}

/// `--join enable`: a member known to be serving is UP at once (no check
/// round), under load, with no failed request; leave as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_join_mode_under_load() {
    require(HAPROXY, "haproxy");
    let dir = tempfile::tempdir().unwrap();
    let (fe, st, at) = (free_port(), free_port(), free_port());
    let mut s = settings_for(dir.path(), (fe, st, at), &dir.path().join("written.cfg"));
    s.join = render::reconcile::JoinMode::Enable;
    let h = Haproxy::start_empty(&s, dir.path(), (fe, st, at)).await;
    let w1 = WebServer::start("s1").await;
    let w2 = WebServer::start("s2").await;
    let (run, tx) = start_scripted(s, vec![member("s1", w1.port)]);
    eventually("s1 UP", Duration::from_secs(30), async || {
        (h.up().await == ["s1"]).then_some(())
    })
    .await;
    let load = Load::start(
        fe,
        4,
        Duration::from_millis(5),
        Duration::from_secs(90),
        15_000,
    );
    let t_join = std::time::Instant::now();
    tx.send(vec![member("s1", w1.port), member("s2", w2.port)])
        .unwrap();
    eventually("answers from s2", Duration::from_secs(30), async || {
        (load.snapshot().by_backend.get("s2").copied().unwrap_or(0) > 10).then_some(())
    })
    .await;
    let t_leave = std::time::Instant::now();
    tx.send(vec![member("s2", w2.port)]).unwrap();
    eventually("s1 deleted", Duration::from_secs(30), async || {
        (h.servers().await.keys().collect::<Vec<_>>() == ["s2"]).then_some(())
    })
    .await;
    let report = load.finish().await;
    run.stop().await;
    eprintln!("load: {report:?}");
    eprintln!(
        "measured (100 ms quiet window included), --join enable: s2 join -> first answer {:?} ms; s1 leave -> last answer {:?} ms",
        report.join_ms("s2", t_join),
        report.leave_ms("s1", t_leave)
    );
    assert_eq!(report.failed, 0, "failed requests: {report:?}");
}

/// A leave while a request is still running on the member: `state maint`
/// lets it finish (200), `del server` is refused meanwhile and retried in
/// the background; the member coming back in that window gets its entry
/// re-enabled (same server id), not a second one; a later leave deletes it
/// once it is idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_with_a_request_in_flight_then_return() {
    require(HAPROXY, "haproxy");
    let dir = tempfile::tempdir().unwrap();
    let (fe, st, at) = (free_port(), free_port(), free_port());
    let s = settings_for(dir.path(), (fe, st, at), &dir.path().join("written.cfg"));
    let h = Haproxy::start_empty(&s, dir.path(), (fe, st, at)).await;
    let w1 = WebServer::start("s1").await;
    let w2 = WebServer::start("s2").await;
    let both = vec![member("s1", w1.port), member("s2", w2.port)];
    let (run, tx) = start_scripted(s, both.clone());
    eventually("s1 and s2 UP", Duration::from_secs(30), async || {
        (h.up().await == ["s1", "s2"]).then_some(())
    })
    .await;
    let ids = h.ids().await;

    // Slow requests until one runs on s1 (round robin: the first pair).
    let slow: Vec<_> = (0..4).map(|_| tokio::spawn(get(fe, "/slow"))).collect();
    eventually(
        "a slow request running on s1",
        Duration::from_secs(30),
        async || (h.sessions("s1").await > 0).then_some(()),
    )
    .await;

    tx.send(vec![member("s2", w2.port)]).unwrap();
    eventually("s1 in maintenance", Duration::from_secs(30), async || {
        let servers = h.servers().await;
        servers
            .get("s1")
            .is_some_and(|s| s.2 & 1 == 1)
            .then_some(())
    })
    .await;
    assert!(
        h.sessions("s1").await > 0,
        "the slow request is still running on s1"
    );

    tx.send(both).unwrap();
    eventually("s1 UP again", Duration::from_secs(30), async || {
        (h.up().await == ["s1", "s2"]).then_some(())
    })
    .await;
    // Still the entry with the slow request on it (no other traffic runs
    // here, so a new entry would have no session): re-enabled, not added.
    assert!(h.sessions("s1").await > 0, "s1's entry was replaced");
    assert_eq!(h.ids().await, ids);

    for r in slow {
        let backend = r.await.unwrap().expect("slow request answered");
        assert!(backend == "s1" || backend == "s2", "{backend}");
    }

    // Leave again; once idle, the entry goes.
    tx.send(vec![member("s2", w2.port)]).unwrap();
    eventually("s1 deleted", Duration::from_secs(30), async || {
        (h.servers().await.keys().collect::<Vec<_>>() == ["s2"]).then_some(())
    })
    .await;
    run.stop().await;
}

/// ha's agent restarted: the reconciler reconnects to an agent that knows
/// only itself. Absence from that list is not death: every server stays,
/// in HAProxy and in the written file, and no request fails. Once the view
/// is synced, a server the agent does not list goes only when HAProxy's
/// checks find it down; one the agent lists as left goes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_that_knows_only_itself_removes_nothing() {
    require(HAPROXY, "haproxy");
    let dir = tempfile::tempdir().unwrap();
    let (fe, st, at) = (free_port(), free_port(), free_port());
    let out = dir.path().join("written.cfg");
    let s = settings_for(dir.path(), (fe, st, at), &out);
    let h = Haproxy::start_empty(&s, dir.path(), (fe, st, at)).await;
    let w1 = WebServer::start("s1").await;
    let w2 = WebServer::start("s2").await;
    let w3 = WebServer::start("s3").await;
    let all = vec![
        member("s1", w1.port),
        member("s2", w2.port),
        member("s3", w3.port),
    ];
    let (run, tx) = start_scripted(s.clone(), all.clone());
    eventually("s1, s2, s3 UP", Duration::from_secs(30), async || {
        (h.up().await == ["s1", "s2", "s3"]).then_some(())
    })
    .await;
    let ids = h.ids().await;
    let load = Load::start(
        fe,
        4,
        Duration::from_millis(5),
        Duration::from_secs(120),
        20_000,
    );

    // The agent restarts: a fresh list, ha alone. Then (a later push) it
    // has heard of s3 only, from one gossip message.
    tx.send(forgets(vec![])).unwrap();
    tx.send(forgets(vec![member("s3", w3.port)])).unwrap();
    // Two verify passes (--verify-secs=1) and the written file: nothing
    // may change.
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        assert_eq!(
            h.ids().await,
            ids,
            "a server was removed on a fresh agent's word"
        );
        assert_eq!(h.up().await, ["s1", "s2", "s3"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let written = std::fs::read_to_string(&out).unwrap();
    for b in [&w1, &w2, &w3] {
        assert!(
            written.contains(&format!("127.0.0.1:{} check", b.port)),
            "the file keeps every server:\n{written}"
        );
    }

    // Synced (s3 alive besides ha) and s2 dies: it goes once HAProxy's
    // check finds it down. s1 still passes its checks: it stays.
    drop(w2);
    eventually(
        "s2, down and not listed, deleted",
        Duration::from_secs(30),
        async || (h.servers().await.keys().collect::<Vec<_>>() == ["s1", "s3"]).then_some(()),
    )
    .await;
    assert_eq!(h.up().await, ["s1", "s3"]);

    // The agent learns s1 from a push-pull: nothing to do. s1 leaves: out
    // at once (listed as left), whatever its checks say.
    tx.send(vec![member("s1", w1.port), member("s3", w3.port)])
        .unwrap();
    tx.send(vec![member("s3", w3.port)]).unwrap();
    eventually(
        "s1 deleted on its leave",
        Duration::from_secs(30),
        async || (h.servers().await.keys().collect::<Vec<_>>() == ["s3"]).then_some(()),
    )
    .await;
    let report = load.finish().await;
    run.stop().await;
    eprintln!("load: {report:?}");
    assert_eq!(report.failed, 0, "failed requests: {report:?}");
    drop(w1);
}
