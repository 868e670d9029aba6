//! The reconciler's RPC calls to the membership agent have a deadline: an
//! agent that accepts TCP but never answers (stopped with SIGSTOP, or a
//! connection gone half-dead) makes `connect`/`members` fail instead of
//! hanging, and `membership::follow` reconnects and publishes a fresh list
//! once an agent answers again. Real `serf agent`s; the only fakes are a
//! listener that accepts and never answers and a TCP relay that can freeze
//! its connections.
//!
//! Every wait is bounded by a generous outer deadline ([`OUTER`]); no test
//! asserts how long the RPC deadline itself is.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use render::backends::MemberInfo;
use render::membership::{follow, Coalescing, MembershipSource};
use render::serf_source::SerfSource;
use testkit::{require, SERF};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Far above any RPC deadline the source may use: hitting it means "hangs".
const OUTER: Duration = Duration::from_secs(60);

/// A resync much shorter than the reconciler's default, so a wedged agent
/// is found soon after it stops answering.
const TIMING: Coalescing = Coalescing {
    quiet: Duration::from_millis(100),
    max_delay: Duration::from_millis(500),
    resync: Duration::from_secs(1),
};

/// `fut`'s output, or a panic naming `what` when it is still pending after
/// [`OUTER`].
async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(OUTER, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: still pending after {OUTER:?} (hangs)"))
}

fn names(list: &[MemberInfo]) -> Vec<String> {
    let mut n: Vec<String> = list.iter().map(|m| m.name.clone()).collect();
    n.sort();
    n
}

/// The next list `follow` publishes (skipping `None`).
async fn next_list(rx: &mut watch::Receiver<Option<Vec<MemberInfo>>>) -> Vec<String> {
    loop {
        rx.changed().await.expect("follow is running");
        if let Some(l) = rx.borrow_and_update().as_ref() {
            return names(l);
        }
    }
}

/// A source that records, in order, the outcome of every call `follow`
/// makes on the wrapped one: `connect ok`, `members err: ...`, ...
struct Recorded<S> {
    inner: S,
    calls: Arc<Mutex<Vec<String>>>,
}

impl<S> Recorded<S> {
    fn note<T>(&self, what: &str, r: &anyhow::Result<T>) {
        let line = match r {
            Ok(_) => format!("{what} ok"),
            Err(e) => format!("{what} err: {e:#}"),
        };
        self.calls.lock().unwrap().push(line);
    }
}

impl<S: MembershipSource> MembershipSource for Recorded<S> {
    async fn connect(&mut self) -> anyhow::Result<()> {
        let r = self.inner.connect().await;
        self.note("connect", &r);
        r
    }
    async fn members(&mut self) -> anyhow::Result<Vec<MemberInfo>> {
        let r = self.inner.members().await;
        self.note("members", &r);
        r
    }
    async fn next_event(&mut self) -> anyhow::Result<()> {
        let r = self.inner.next_event().await;
        self.note("next_event", &r);
        r
    }
}

/// Wait (at most [`OUTER`]) until `calls` has a line, after the first
/// `from`, that starts with `prefix`; its index.
async fn wait_call(calls: &Arc<Mutex<Vec<String>>>, from: usize, prefix: &str) -> usize {
    let found = tokio::time::timeout(OUTER, async {
        loop {
            if let Some(i) = calls.lock().unwrap()[from..]
                .iter()
                .position(|l| l.starts_with(prefix))
            {
                return from + i;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "no {prefix:?} after {OUTER:?} (hangs); calls so far:\n{}",
            calls.lock().unwrap().join("\n")
        )
    })
}

/// A listener that accepts every connection and never answers (a wedged
/// agent as the client sees it: the kernel completes the TCP handshake).
async fn accept_and_never_answer() -> (String, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

/// A TCP relay to `upstream` whose connections [`Relay::freeze`] stops
/// forever while keeping them open: a connection gone half-dead (the agent
/// behind it replaced, a middlebox that dropped it, ...): no FIN, no RST,
/// no answer. Connections accepted after a freeze relay normally.
struct Relay {
    addr: String,
    freeze: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: u16) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (freeze, _) = watch::channel(0u64);
        let f = freeze.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = l.accept().await {
                let mut frozen = f.subscribe();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut up) => return,
                        _ = frozen.changed() => {}
                    }
                    // Frozen: both ends stay open, nothing moves.
                    std::future::pending::<()>().await;
                    drop((client, up));
                });
            }
        });
        Relay { addr, freeze, task }
    }

    fn freeze(&self) {
        self.freeze.send_modify(|n| *n += 1);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn connect_to_a_listener_that_never_answers_fails() {
    let (addr, task) = accept_and_never_answer().await;
    let mut src = SerfSource::new(addr, None);
    let err = bounded("connect() to a silent listener", src.connect())
        .await
        .expect_err("connect() to a listener that never answers must fail");
    eprintln!("connect: {err:#}");
    task.abort();
}

#[tokio::test]
async fn a_stopped_agent_fails_members_and_connect_then_works_after_sigcont() {
    require(SERF, "serf");
    let dir = tempfile::tempdir().unwrap();
    let ha = serf("ha", &[], None, &dir.path().join("serf.log"))
        .start()
        .await;
    let mut src = SerfSource::new(ha.rpc.to_string(), None);
    bounded("connect()", src.connect()).await.unwrap();
    assert_eq!(names(&src.members().await.unwrap()), ["ha"]);

    // SIGSTOP; back once every thread of it is stopped.
    ha.process.pause();
    let err = bounded("members() of a stopped agent", src.members())
        .await
        .expect_err("members() of a stopped agent must fail");
    eprintln!("members: {err:#}");
    // The connection was dropped with it.
    assert!(bounded("next_event()", src.next_event()).await.is_err());
    // The stopped agent's kernel still accepts connections.
    let err = bounded("connect() to a stopped agent", src.connect())
        .await
        .expect_err("connect() to a stopped agent must fail");
    eprintln!("connect: {err:#}");

    ha.process.resume();
    bounded("connect() after SIGCONT", src.connect())
        .await
        .unwrap();
    let list = bounded("members() after SIGCONT", src.members())
        .await
        .unwrap();
    assert_eq!(names(&list), ["ha"]);
}

#[tokio::test]
async fn follow_notices_a_stopped_agent_and_lists_again_after_sigcont() {
    require(SERF, "serf");
    let dir = tempfile::tempdir().unwrap();
    let ha = serf("ha", &[], None, &dir.path().join("serf.log"))
        .start()
        .await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let source = Recorded {
        inner: SerfSource::new(ha.rpc.to_string(), None),
        calls: calls.clone(),
    };
    let (tx, mut rx) = watch::channel(None);
    let task = tokio::spawn(follow(source, tx, TIMING));
    assert_eq!(bounded("the first list", next_list(&mut rx)).await, ["ha"]);

    let stopped_at = calls.lock().unwrap().len();
    // SIGSTOP; back once every thread of it is stopped.
    ha.process.pause();
    // The resync's `members` gives up on the stopped agent, and so does
    // the reconnect that follows.
    let i = wait_call(&calls, stopped_at, "members err").await;
    wait_call(&calls, i, "connect err").await;
    rx.borrow_and_update();

    ha.process.resume();
    assert_eq!(
        bounded("a list after SIGCONT", next_list(&mut rx)).await,
        ["ha"]
    );
    let log = calls.lock().unwrap().join("\n");
    eprintln!("{log}");
    assert!(
        log[log.rfind("connect err").unwrap()..].contains("connect ok"),
        "reconnected after SIGCONT:\n{log}"
    );
    task.abort();
}

#[tokio::test]
async fn follow_gets_past_a_half_dead_connection() {
    require(SERF, "serf");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serf.log");
    let ha = serf("ha", &[], None, &log).start().await;
    let relay = Relay::start(ha.rpc.port()).await;
    let (tx, mut rx) = watch::channel(None);
    let task = tokio::spawn(follow(
        SerfSource::new(relay.addr.clone(), None),
        tx,
        TIMING,
    ));
    assert_eq!(bounded("the first list", next_list(&mut rx)).await, ["ha"]);

    // The follower's connection goes silent for good; a member joins,
    // and its event is lost on the frozen connection.
    relay.freeze();
    let _s1 = serf("s1", &[], Some(ha.bind), &log).start().await;
    bounded("a list with s1 through a new connection", async {
        while next_list(&mut rx).await != ["ha", "s1"] {}
    })
    .await;
    task.abort();
}
