//! The event-handler runner with real shell scripts, fed `model::Event`s
//! through a channel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gossip::handler::{invoke, HandlerHost, HandlerRunner, RunOutcome, HANDLER_QUEUE};
use gossip::model::*;
use testkit::{eventually, temp_dir};
use tokio::sync::mpsc;

struct Host {
    me: Member,
    responses: Mutex<Vec<(u64, Vec<u8>)>>,
    dropped: AtomicU64,
}

#[async_trait::async_trait]
impl HandlerHost for Host {
    fn local_member(&self) -> Member {
        self.me.clone()
    }
    async fn respond(&self, id: u64, payload: Vec<u8>) -> anyhow::Result<()> {
        self.responses.lock().unwrap().push((id, payload));
        Ok(())
    }
    fn events_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }
}

fn member(name: &str, ip: &str, tags: &[(&str, &str)]) -> Member {
    Member {
        name: name.into(),
        addr: ip.parse().unwrap(),
        port: 7946,
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        status: MemberStatus::Alive,
        protocol: [2, 5, 5],
        delegate: [2, 5, 4],
    }
}

fn host() -> Arc<Host> {
    Arc::new(Host {
        me: member(
            "a",
            "127.0.0.1",
            &[("role", "balancer"), ("web-port", "80")],
        ),
        responses: Mutex::default(),
        dropped: AtomicU64::new(0),
    })
}

/// Feeds `events` to a runner with `specs` and waits until all are handled.
async fn run(specs: &[String], timeout: Duration, host: Arc<Host>, events: Vec<Event>) {
    let runner = HandlerRunner::new(specs, timeout).expect("handler specs");
    let (tx, rx) = mpsc::channel(16);
    for e in events {
        tx.send(e).await.unwrap();
    }
    drop(tx);
    tokio::time::timeout(Duration::from_secs(60), runner.run_channel(host, rx))
        .await
        .expect("runner finished");
}

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[tokio::test]
async fn member_event_gets_serf_environment_and_stdin() {
    let d = temp_dir("h-member");
    let d = d.path();
    let script = format!(
        "env | grep '^SERF_' | sort > {0}/env; cat > {0}/stdin",
        d.display()
    );
    let join = Event::Member {
        kind: MemberEventKind::Join,
        members: vec![
            member("b", "10.0.0.2", &[("zone", "z1"), ("role", "backend")]),
            member("c\tx", "10.0.0.3", &[]),
        ],
    };
    run(
        &[format!("member-join={script}")],
        Duration::from_secs(30),
        host(),
        vec![join],
    )
    .await;
    assert_eq!(
        read(&d.join("stdin")),
        "b\t10.0.0.2\tbackend\tzone=z1,role=backend\nc\\tx\t10.0.0.3\t\t\n"
    );
    let env = read(&d.join("env"));
    for want in [
        "SERF_EVENT=member-join",
        "SERF_SELF_NAME=a",
        "SERF_SELF_ROLE=balancer",
        "SERF_TAG_ROLE=balancer",
        "SERF_TAG_WEB_PORT=80",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} missing in\n{env}");
    }
    assert!(!env.contains("SERF_USER_EVENT"), "{env}");
}

#[tokio::test]
async fn user_events_filtered_by_name_and_run_one_at_a_time_in_order() {
    let d = temp_dir("h-user");
    let d = d.path();
    let log = d.join("log");
    let script = format!(
        "echo \"start $SERF_USER_LTIME $SERF_USER_EVENT $(cat)\" >> {0}; sleep 0.2; echo \"end $SERF_USER_LTIME\" >> {0}",
        log.display()
    );
    let ev = |ltime, name: &str, payload: &str| Event::User {
        ltime,
        name: name.into(),
        payload: payload.as_bytes().to_vec(),
        coalesce: true,
    };
    run(
        &[format!("user:deploy,member-leave={script}")],
        Duration::from_secs(30),
        host(),
        vec![
            ev(1, "deploy", "v1"),
            ev(2, "other", "ignored"),
            ev(3, "deploy", "v2\n"),
            ev(4, "deploy", ""),
        ],
    )
    .await;
    assert_eq!(
        read(&log),
        "start 1 deploy v1\nend 1\nstart 3 deploy v2\nend 3\nstart 4 deploy \nend 4\n"
    );
}

/// The output goes to `respond` whole: the size limit is the agent's
/// (query_response_size_limit), which refuses a response over it, as Serf
/// does; a truncated answer would pass for a complete one.
#[tokio::test]
async fn query_handler_output_is_the_response_whole() {
    let h = host();
    let q = |id, name: &str| {
        Event::Query(IncomingQuery {
            id,
            ltime: 9,
            name: name.into(),
            payload: b"hi".to_vec(),
        })
    };
    run(
        &[
            "query:ping=echo \"pong $SERF_QUERY_NAME $SERF_QUERY_LTIME $(cat)\"".into(),
            "query:big=head -c 5000 /dev/zero | tr '\\0' x".into(),
            "query:silent=true".into(),
            "query:fail=echo nope; exit 3".into(),
        ],
        Duration::from_secs(30),
        h.clone(),
        vec![q(1, "ping"), q(2, "big"), q(3, "silent"), q(4, "fail")],
    )
    .await;
    let got = h.responses.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], (1, b"pong ping 9 hi\n".to_vec()));
    assert_eq!(got[1].0, 2);
    assert_eq!(got[1].1, vec![b'x'; 5000]);
}

#[tokio::test]
async fn hung_handler_is_killed_and_later_events_still_run() {
    let d = temp_dir("h-hang");
    let d = d.path();
    let pidfile = d.join("pid");
    let after = d.join("after");
    let me = member("a", "127.0.0.1", &[]);
    let ev = Event::User {
        ltime: 1,
        name: "hang".into(),
        payload: vec![],
        coalesce: false,
    };
    let out = invoke(
        &format!(
            "echo started; sleep 300 & echo $! > {}; wait",
            pidfile.display()
        ),
        &me,
        &ev,
        Duration::from_secs(1),
    )
    .await;
    match out {
        RunOutcome::TimedOut { output } => assert_eq!(output, b"started\n"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The script's background child dies with it (gone or a zombie). The
    // SIGKILL to the process group is sent, but the kernel may still be
    // tearing the process down when we look: poll.
    let pid = read(&pidfile).trim().to_string();
    eventually(
        &format!("sleep {pid} gone after the timeout"),
        Duration::from_secs(30),
        async || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            (stat.is_empty() || stat.contains(") Z ") || stat.contains(") X ")).then_some(())
        },
    )
    .await;

    run(
        &[
            "user:hang=sleep 300".into(),
            format!("user:next=echo ran > {}", after.display()),
        ],
        Duration::from_secs(1),
        host(),
        vec![
            ev.clone(),
            Event::User {
                ltime: 2,
                name: "next".into(),
                payload: vec![],
                coalesce: false,
            },
        ],
    )
    .await;
    assert_eq!(read(&after), "ran\n");
}

#[tokio::test]
async fn failing_handler_reports_its_exit_code() {
    let me = member("a", "127.0.0.1", &[]);
    let ev = Event::Member {
        kind: MemberEventKind::Failed,
        members: vec![member("b", "10.0.0.2", &[])],
    };
    let out = invoke(
        "cat >/dev/null; echo oops >&2; exit 7",
        &me,
        &ev,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        out,
        RunOutcome::Exited {
            code: Some(7),
            output: b"oops\n".to_vec()
        }
    );
    assert!(HandlerRunner::new(&["member-boom=x".into()], Duration::from_secs(1)).is_err());
}

/// Polls `cond` (at most 60 s): waiting on other tasks, not on a timing.
async fn until(what: &str, cond: impl Fn() -> bool) {
    eventually(what, Duration::from_secs(60), async || cond().then_some(())).await
}

/// Handlers slower than events: the queue behind a busy handler holds
/// `HANDLER_QUEUE` events, the rest are dropped and counted (Serf's agent
/// would block its gossip instead), and the queued ones still run.
#[tokio::test]
async fn a_slow_handler_drops_and_counts_events_past_its_queue() {
    let d = temp_dir("h-slow");
    let d = d.path();
    let (started, go, last) = (d.join("started"), d.join("go"), d.join("last"));
    let specs = [
        format!(
            "user:block=touch {}; while [ ! -e {} ]; do sleep 0.01; done",
            started.display(),
            go.display()
        ),
        format!("user:last=echo ran > {}", last.display()),
    ];
    let runner = Arc::new(HandlerRunner::new(&specs, Duration::from_secs(120)).unwrap());
    let (tx, rx) = tokio::sync::broadcast::channel(4 * HANDLER_QUEUE);
    let h = host();
    let task = tokio::spawn({
        let (runner, h) = (runner.clone(), h.clone());
        async move { runner.run(h, rx).await }
    });
    let user = |name: &str| Event::User {
        ltime: 1,
        name: name.into(),
        payload: vec![],
        coalesce: false,
    };
    tx.send(user("block")).unwrap();
    until("the blocking handler", || started.exists()).await;
    // The handler is busy and its queue empty: it fills with these, and
    // the 100 after them are dropped.
    for _ in 0..HANDLER_QUEUE - 1 {
        tx.send(user("other")).unwrap();
    }
    tx.send(user("last")).unwrap();
    for _ in 0..100 {
        tx.send(user("other")).unwrap();
    }
    until("the drops counted", || {
        h.dropped.load(Ordering::Relaxed) >= 100
    })
    .await;
    std::fs::write(&go, "").unwrap();
    drop(tx);
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("runner finished")
        .unwrap();
    assert_eq!(h.dropped.load(Ordering::Relaxed), 100);
    assert_eq!(read(&last), "ran\n");
}
