//! Sticky routing (`render reconcile --sticky`, the template's `sticky`)
//! and X-Request-Id, through the real HAProxy: a client's SERVERID cookie
//! names the server that answered it (the member's name), and sends it back
//! there on every request while that server is up; the value stays the
//! same across a change of address and restarts of the reconciler and of
//! HAProxy; a dead or departed sticky server hands its client over to
//! another one with a new cookie and no failed request. X-Request-Id is
//! HAProxy's, never the client's, and a replayed request keeps it. With
//! sticky off, the rendered configuration is the lab's, byte for byte.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use common::*;
use render::backends::{Backend, BackendSet, MemberInfo};
use render::cli::{settings, ReconcileArgs};
use render::membership::MembershipSource;
use render::reconcile::{self, Reconciler};
use testkit::http::{Behaviour, Conn, WebServer};
use testkit::{eventually, free_port, require, Signal, SERF};
use tokio::sync::watch;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");
/// The options the reconciler gives every server by default.
const SERVER_OPTIONS: &str = "check inter 500ms downinter 100ms fall 1 rise 1 pool-purge-delay 100ms observe layer4 error-limit 1 on-error mark-down";

// ---------------------------------------------------------------------
// Clients through HAProxy (the web servers are the kit's [`WebServer`]s:
// they say who they are and what they were sent).

/// What a client learnt from one answer through HAProxy.
#[derive(Debug, Clone)]
struct Answer {
    backend: String,
    set_cookie: Vec<String>,
    cache_control: Vec<String>,
    /// The X-Request-Id values the web server received.
    seen_ids: Vec<String>,
    /// The Cookie header the web server received.
    seen_cookie: String,
}

/// One `GET /` through HAProxy on a new connection, with an optional
/// Cookie and X-Request-Id; Ok on a 200 only.
async fn get(port: u16, cookie: Option<&str>, request_id: Option<&str>) -> Result<Answer, String> {
    let mut headers = vec!["Connection: close".to_string()];
    if let Some(c) = cookie {
        headers.push(format!("Cookie: {c}"));
    }
    if let Some(id) = request_id {
        headers.push(format!("X-Request-Id: {id}"));
    }
    let r = Conn::new(port).get("/", &headers).await?;
    if r.status != 200 {
        return Err(format!("status {:?}", r.status.to_string()));
    }
    let values = |name: &str| {
        r.all(name)
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    Ok(Answer {
        backend: r.header("x-backend").unwrap_or_default().to_string(),
        set_cookie: values("set-cookie"),
        cache_control: values("cache-control"),
        seen_ids: r
            .header("x-seen-request-id")
            .filter(|v| !v.is_empty())
            .map(|v| v.split('|').map(str::to_string).collect())
            .unwrap_or_default(),
        seen_cookie: r.header("x-seen-cookie").unwrap_or_default().to_string(),
    })
}

/// The SERVERID a Set-Cookie header sets, checking its whole form.
fn serverid(set_cookie: &str) -> &str {
    let v = set_cookie
        .strip_prefix("SERVERID=")
        .and_then(|v| v.strip_suffix("; path=/"))
        .unwrap_or_else(|| panic!("not HAProxy's SERVERID cookie: {set_cookie:?}"));
    assert!(!v.is_empty() && !v.contains([';', ' ']), "{set_cookie:?}");
    v
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Requests without a cookie until every one of `expected` has answered:
/// cookie value → the backend that answered (its X-Backend). Every answer
/// must set SERVERID to its server, with Cache-Control: private.
async fn cookies_handed_out(fe: u16, expected: usize) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    eventually(
        "a cookie from every server",
        Duration::from_secs(30),
        async || {
            let a = get(fe, None, None).await.unwrap();
            assert_eq!(a.set_cookie.len(), 1, "{a:?}");
            assert!(
                a.cache_control.iter().any(|c| c == "private"),
                "nocache: {a:?}"
            );
            out.insert(serverid(&a.set_cookie[0]).to_string(), a.backend);
            (out.len() == expected).then_some(())
        },
    )
    .await;
    out
}

/// Each `(cookie value, backend)`: 50 requests holding that cookie all
/// reach that backend, and none gets a new cookie.
async fn assert_routes(fe: u16, routes: &[(&str, &str)]) {
    for (cookie, backend) in routes {
        for i in 0..50 {
            let a = get(fe, Some(&format!("SERVERID={cookie}")), None)
                .await
                .unwrap_or_else(|e| panic!("request {i} with SERVERID={cookie}: {e}"));
            assert_eq!(
                &a.backend, backend,
                "request {i} with SERVERID={cookie}: {a:?}"
            );
            assert!(a.set_cookie.is_empty(), "a cookie already right: {a:?}");
        }
    }
}

// ---------------------------------------------------------------------
// The reconciler in-process, on a member list the test sets.

/// The member list, as the test sets it (one list per "event").
struct Members(watch::Receiver<Vec<MemberInfo>>);

impl MembershipSource for Members {
    async fn connect(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    async fn members(&mut self) -> anyhow::Result<Vec<MemberInfo>> {
        Ok(self.0.borrow_and_update().clone())
    }
    async fn next_event(&mut self) -> anyhow::Result<()> {
        match self.0.changed().await {
            Ok(()) => Ok(()),
            Err(_) => std::future::pending().await,
        }
    }
}

/// `render reconcile` flags for HAProxy on loopback in `dir`, plus `extra`.
fn args(
    dir: &std::path::Path,
    ports: (u16, u16, u16),
    out: &std::path::Path,
    extra: &[&str],
) -> ReconcileArgs {
    loopback_args(dir, ports, out, "-c -q -f", extra)
}

fn backend_set(list: &[(&str, &str, u16)]) -> BackendSet {
    list.iter()
        .map(|(n, ip, p)| (n.to_string(), Backend::new(*n, ip.parse().unwrap(), *p)))
        .collect()
}

fn golden(name: &str) -> String {
    std::fs::read_to_string(format!("{GOLDEN}/{name}")).unwrap()
}

// ---------------------------------------------------------------------
// The configuration.

/// Sticky off (the default) renders exactly what the template rendered
/// before sticky routing existed, for the three ways the image renders it
/// (task 5's handlers, HA_RELOAD=lab's handlers, the reconciler), and none
/// of it mentions a cookie or a request id.
#[test]
fn sticky_off_is_the_labs_config_byte_for_byte() {
    let two = r#"[{"name":"s1","ip":"10.0.0.1"},{"name":"s2","ip":"10.0.0.2"}]"#;
    let task5 = one_shot(&["--backends", two, "--admin_tcp", "ipv4@0.0.0.0:9999"]).unwrap();
    assert_eq!(task5, golden("task5.cfg"));
    let explicit = one_shot(&[
        "--backends",
        two,
        "--admin_tcp",
        "ipv4@0.0.0.0:9999",
        "--sticky",
        "false",
    ])
    .unwrap();
    assert_eq!(explicit, golden("task5.cfg"));
    let lab = one_shot(&["--backends", two, "--idle_close_on_response", "false"]).unwrap();
    assert_eq!(lab, golden("lab-reload.cfg"));

    let s = settings(&ReconcileArgs::try_parse_from(["render-reconcile"]).unwrap()).unwrap();
    assert!(!s.sticky, "off unless asked for");
    let set = backend_set(&[("s1", "10.0.0.1", 3000), ("s2", "fd00::2", 3001)]);
    let rec = reconcile::render_config(&s, &set).unwrap();
    assert_eq!(rec, golden("reconciler.cfg"));

    for text in [&task5, &lab, &rec] {
        let lower = text.to_ascii_lowercase();
        for word in [
            "cookie",
            "serverid",
            "x-request-id",
            "unique-id",
            "use-server",
        ] {
            assert!(!lower.contains(word), "{word} in the off config:\n{text}");
        }
    }
}

/// The sticky configuration the reconciler writes passes `haproxy -c`, has
/// the sticky rules and X-Request-Id, keeps the retry and redispatch
/// settings, and no `cookie` keyword on server lines (HAProxy 2.6 refuses
/// it in `add server`). A `sticky` that is not a boolean is one clear error.
#[tokio::test]
async fn the_sticky_config_passes_haproxy_check() {
    require(HAPROXY, "haproxy");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("haproxy.cfg");
    let a = args(
        dir.path(),
        (free_port(), free_port(), free_port()),
        &out,
        &["--sticky"],
    );
    let mut rec = Reconciler::new(settings(&a).unwrap());
    rec.write_config(&backend_set(&[
        ("s1", "10.0.0.1", 3000),
        ("s2", "10.0.0.2", 3000),
        ("web-3.a:b_c", "fd00::3", 3001),
    ]))
    .await;
    let text = std::fs::read_to_string(&out).expect("written: it passed haproxy -c");
    let check = Command::new(HAPROXY)
        .args(["-c", "-q", "-f"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "haproxy -c refused:\n{}\n{text}",
        String::from_utf8_lossy(&check.stderr)
    );
    for want in [
        "http-request del-header X-Request-Id",
        "unique-id-format %[uuid()]",
        "unique-id-header X-Request-Id",
        "http-request set-var(txn.sticky_server) req.cook(SERVERID)",
        "use-server %[var(txn.sticky_server)] if { var(txn.sticky_server) -m found }",
        "http-response add-header Set-Cookie \"SERVERID=%[srv_name]; path=/\" unless sticky_kept",
        "http-response add-header Cache-Control private unless sticky_kept",
        "retries 3",
        "retry-on conn-failure empty-response",
        "option redispatch 1",
        &format!("server s1 10.0.0.1:3000 {SERVER_OPTIONS}\n"),
        &format!("server web-3.a:b_c [fd00::3]:3001 {SERVER_OPTIONS}\n"),
    ] {
        assert!(text.contains(want), "missing {want:?}:\n{text}");
    }
    assert!(
        !text.contains("option persist"),
        "a down server must not keep its clients"
    );
    for l in text
        .lines()
        .filter(|l| l.trim_start().starts_with("server "))
    {
        assert!(!l.contains(" cookie "), "{l}");
    }

    // The one-shot mode (the image's fallback) renders the same rules.
    let one = one_shot(&["--backends", "[]", "--sticky", "true"]).unwrap();
    assert!(
        one.contains("use-server %[var(txn.sticky_server)]"),
        "{one}"
    );
    for (bad, shown) in [("yes", "\"yes\""), ("1", "1"), ("\"true\"", "\"true\"")] {
        let e = one_shot(&["--backends", "[]", "--sticky", bad]).unwrap_err();
        assert!(
            e.contains(&format!("sticky must be true or false, not {shown}")),
            "{bad}: {e}"
        );
        assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
    }
    let e = one_shot(&["--backends", "[]", "--request_id", "on"]).unwrap_err();
    assert!(
        e.contains("request_id must be true or false, not \"on\""),
        "{e}"
    );
}

// ---------------------------------------------------------------------
// Through HAProxy.

/// Three servers added by the reconciler: a client without the cookie is
/// given one naming the server that answered; holding it, it reaches that
/// server on every request. The value is the member's name: kept when the
/// member changes address, the same after a restart of the reconciler
/// (entries adopted, not re-added) and of HAProxy from the written file.
/// X-Request-Id is HAProxy's, one per request, never the client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_names_the_member_and_survives_moves_and_restarts() {
    require(HAPROXY, "haproxy");
    let dir = tempfile::tempdir().unwrap();
    let (fe, st, at) = (free_port(), free_port(), free_port());
    let out = dir.path().join("written.cfg");
    let s = settings(&args(dir.path(), (fe, st, at), &out, &["--sticky"])).unwrap();
    let h = Haproxy::start_empty(&s, dir.path(), (fe, st, at)).await;
    let (w1, w2, w3) = (
        WebServer::start("s1").await,
        WebServer::start("s2").await,
        WebServer::start("s3").await,
    );
    let (tx, rx) = watch::channel(vec![
        member("s1", w1.port),
        member("s2", w2.port),
        member("s3", w3.port),
    ]);
    let run = Running::start(s.clone(), Members(rx));
    eventually("s1, s2, s3 UP", Duration::from_secs(30), async || {
        (h.up().await == ["s1", "s2", "s3"]).then_some(())
    })
    .await;

    // Why the cookie is not on the servers: this HAProxy refuses it.
    let reply = h
        .cmd("add server nodes/probe 127.0.0.1:1 cookie probe")
        .await;
    assert!(
        reply.contains("'cookie' option is not accepted for dynamic server"),
        "HAProxy now takes `cookie` in `add server` ({reply:?}): the template's sticky rules could become HAProxy's own cookie persistence"
    );

    let cookies = cookies_handed_out(fe, 3).await;
    let names = |m: &[(&str, &str)]| -> BTreeMap<String, String> {
        m.iter()
            .map(|(c, b)| (c.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(cookies, names(&[("s1", "s1"), ("s2", "s2"), ("s3", "s3")]));
    assert_routes(fe, &[("s1", "s1"), ("s2", "s2"), ("s3", "s3")]).await;

    // The application's own cookies go through with SERVERID.
    let a = get(fe, Some("NODESESSID=abc; SERVERID=s3"), None)
        .await
        .unwrap();
    assert_eq!(a.backend, "s3");
    assert!(a.seen_cookie.contains("NODESESSID=abc"), "{a:?}");
    // A cookie that names no server: balanced, and a cookie for the server
    // that answered.
    let a = get(fe, Some("SERVERID=nosuch"), None).await.unwrap();
    assert_eq!(a.set_cookie, [format!("SERVERID={}; path=/", a.backend)]);

    // X-Request-Id: HAProxy's own, once, fresh for every request.
    let a = get(fe, None, Some("forged")).await.unwrap();
    let b = get(fe, Some("SERVERID=s1"), Some("forged")).await.unwrap();
    for x in [&a, &b] {
        assert_eq!(x.seen_ids.len(), 1, "exactly one X-Request-Id: {x:?}");
        assert!(is_uuid(&x.seen_ids[0]), "{x:?}");
    }
    assert_ne!(a.seen_ids, b.seen_ids);

    // s2 moves (same member, new address): its entry is re-addressed and
    // its cookie still leads to it.
    let w2b = WebServer::start("s2b").await;
    tx.send(vec![
        member("s1", w1.port),
        member("s2", w2b.port),
        member("s3", w3.port),
    ])
    .unwrap();
    let moved = format!("127.0.0.1:{}", w2b.port);
    eventually(
        "s2 UP at its new address",
        Duration::from_secs(30),
        async || {
            let servers = h.servers().await;
            (servers.get("s2").map(|s| s.0.as_str()) == Some(moved.as_str())
                && h.up().await == ["s1", "s2", "s3"])
            .then_some(())
        },
    )
    .await;
    drop(w2);
    assert_routes(fe, &[("s2", "s2b")]).await;

    // The reconciler restarts: it adopts the entries (same ids) and writes
    // the file again (removed here to see it happen).
    run.stop().await;
    let ids = h.ids().await;
    std::fs::remove_file(&out).unwrap();
    let run = Running::start(s.clone(), Members(tx.subscribe()));
    let written = eventually(
        "the file written by the new reconciler",
        Duration::from_secs(30),
        async || std::fs::read_to_string(&out).ok(),
    )
    .await;
    assert_eq!(h.ids().await, ids, "entries adopted, not re-added");
    let after_moves = [("s1", "s1"), ("s2", "s2b"), ("s3", "s3")];
    assert_routes(fe, &after_moves).await;
    assert!(
        written.contains(&format!("server s2 127.0.0.1:{} ", w2b.port))
            && written.contains("use-server %[var(txn.sticky_server)]"),
        "{written}"
    );

    // HAProxy restarts from the written file: the same cookies lead to the
    // same servers, and new clients get the same values.
    run.stop().await;
    drop(h);
    let h = Haproxy::start(dir.path(), &written, fe, st, at).await;
    eventually(
        "s1, s2, s3 UP after the HAProxy restart",
        Duration::from_secs(30),
        async || (h.up().await == ["s1", "s2", "s3"]).then_some(()),
    )
    .await;
    assert_routes(fe, &after_moves).await;
    assert_eq!(cookies_handed_out(fe, 3).await, names(&after_moves));
}

/// HAProxy (sticky config) in front of a web server named `name` that
/// behaves as `behaviour` and one named "ok" that answers, both UP; the
/// frontend's port last.
async fn sticky_pair(
    name: &str,
    behaviour: Behaviour,
) -> (tempfile::TempDir, WebServer, WebServer, Haproxy, u16) {
    require(HAPROXY, "haproxy");
    let dir = tempfile::tempdir().unwrap();
    let (fe, st, at) = (free_port(), free_port(), free_port());
    let odd = WebServer::start_as(name, behaviour).await;
    let ok = WebServer::start("ok").await;
    let s = settings(&args(
        dir.path(),
        (fe, st, at),
        &dir.path().join("written.cfg"),
        &["--sticky"],
    ))
    .unwrap();
    let cfg = reconcile::render_config(
        &s,
        &backend_set(&[(name, "127.0.0.1", odd.port), ("ok", "127.0.0.1", ok.port)]),
    )
    .unwrap();
    let h = Haproxy::start(dir.path(), &cfg, fe, st, at).await;
    eventually(
        &format!("{name} and ok UP"),
        Duration::from_secs(30),
        async || (h.up().await == [name, "ok"]).then_some(()),
    )
    .await;
    (dir, odd, ok, h, fe)
}

/// A request that HAProxy replays (the sticky server read it and closed
/// the connection without answering: `retry-on empty-response`) reaches
/// the next server with the X-Request-Id the first one saw, and the client
/// gets that server's cookie. The client's own X-Request-Id never arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_request_keeps_its_request_id() {
    let (_dir, dropper, ok, _h, fe) = sticky_pair("drop", Behaviour::DropGets).await;

    let a = get(fe, Some("SERVERID=drop"), Some("forged"))
        .await
        .expect("the replay is answered");
    assert_eq!(a.backend, "ok");
    assert_eq!(a.set_cookie, ["SERVERID=ok; path=/"]);
    let dropped = dropper.ids();
    assert_eq!(
        dropped.len(),
        1,
        "the sticky server got it first: {dropped:?}"
    );
    assert_eq!(a.seen_ids, dropped, "the replay carries the same id");
    assert!(
        is_uuid(&dropped[0]),
        "HAProxy's id, not the client's: {dropped:?}"
    );
    assert_eq!(ok.ids(), dropped);
}

/// A web app cut off from its session store (a network partition, a store
/// connection still reconnecting) answers 503 "session store unavailable"
/// and keeps passing HAProxy's check, which needs no store. Its request is
/// replayed on another web app, with the same X-Request-Id (so a visit the
/// first one may have counted is not counted twice), and the client gets
/// the other's answer, with its cookie: sticky or not, no request fails
/// while one web app still reaches the store. (The chaos run found it: a
/// request in flight to a web app disconnected from the network came back
/// 503 when the network did.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_app_without_its_store_hands_the_request_over() {
    let (_dir, down, _ok, h, fe) = sticky_pair("down", Behaviour::StoreDown).await;

    // Sticky to the web app without a store.
    let a = get(fe, Some("SERVERID=down"), None)
        .await
        .expect("the sticky client is answered by the other web app");
    assert_eq!(a.backend, "ok");
    assert_eq!(a.set_cookie, ["SERVERID=ok; path=/"]);
    let refused = down.ids();
    assert_eq!(
        refused.len(),
        1,
        "the sticky server got it first: {refused:?}"
    );
    assert_eq!(a.seen_ids, refused, "the replay carries the same id");

    // No cookie: round robin meets the web app without a store every other
    // request, and every request is answered by the one with a store.
    for i in 0..20 {
        let a = get(fe, None, None)
            .await
            .unwrap_or_else(|e| panic!("request {i} without a cookie: {e}"));
        assert_eq!(a.backend, "ok", "request {i}");
    }
    assert!(
        down.ids().len() > 1,
        "round robin never tried the web app without a store: {:?}",
        down.ids()
    );
    assert_eq!(h.up().await, ["down", "ok"], "its check still passes");
}

// ---------------------------------------------------------------------
// End to end: the binary (HA_STICKY) between real serf agents and HAProxy.

/// A client that keeps its SERVERID cookie like a browser, one request at
/// a time on new connections, every 5 ms.
struct StickyClient {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Result<Answer, String>>>>,
    cookie: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StickyClient {
    fn start(fe: u16) -> StickyClient {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let cookie = Arc::new(Mutex::new(None::<String>));
        let (st, an, ck) = (stop.clone(), answers.clone(), cookie.clone());
        let task = tokio::spawn(async move {
            while !st.load(Ordering::Relaxed) {
                let held = ck.lock().unwrap().clone();
                let header = held.as_ref().map(|v| format!("SERVERID={v}"));
                let res = get(fe, header.as_deref(), None).await;
                if let Ok(a) = &res {
                    if let Some(sc) = a.set_cookie.first() {
                        *ck.lock().unwrap() = Some(serverid(sc).to_string());
                    }
                }
                an.lock().unwrap().push(res);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        StickyClient {
            stop,
            answers,
            cookie,
            task,
        }
    }

    fn cookie(&self) -> Option<String> {
        self.cookie.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.answers.lock().unwrap().len()
    }

    /// Wait until the cookie names another server than `old` and that
    /// server has answered 20 times since; its name.
    async fn moved_from(&self, old: Option<&str>) -> String {
        let (mut new, mut since) = (None::<String>, 0);
        eventually(
            &format!("the client handed over from {old:?}"),
            Duration::from_secs(60),
            async || {
                let c = self.cookie();
                if c.is_some() && c.as_deref() != old && c != new {
                    (new, since) = (c, self.count());
                }
                (new.is_some() && self.count() >= since + 20).then(|| new.clone().unwrap())
            },
        )
        .await
    }

    async fn finish(mut self) -> Vec<Result<Answer, String>> {
        self.stop.store(true, Ordering::Relaxed);
        (&mut self.task).await.unwrap();
        let a = self.answers.lock().unwrap().clone();
        a
    }
}

impl Drop for StickyClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `render reconcile` with `HA_STICKY=true` (no flag), between a serf
/// cluster and HAProxy started from the one-shot `--sticky true` config.
/// A client sticks to one web app; its web server dies (its agent lives
/// on: HAProxy's checks and the redispatch handle it), then the next one's
/// member leaves: each time the client is sent to another web app and
/// given its cookie on that answer, never back, with no failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_departed_sticky_server_hands_its_client_over() {
    require(HAPROXY, "haproxy");
    require(SERF, "serf");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (fe, st, at) = (free_port(), free_port(), free_port());
    let vars = Haproxy::vars(d, fe, st, at);
    let mut one_shot_args = vec![
        "--backends".to_string(),
        "[]".into(),
        "--sticky".into(),
        "true".into(),
    ];
    one_shot_args.extend(var_flags(&vars));
    let argv: Vec<&str> = one_shot_args.iter().map(String::as_str).collect();
    let h = Haproxy::start(d, &one_shot(&argv).unwrap(), fe, st, at).await;

    let serf_log = d.join("serf.log");
    let ha = serf("ha", &[("role", "balancer")], None, &serf_log)
        .start()
        .await;
    let rec_log = d.join("reconcile.log");
    let mut rec_args = vec![
        format!("--rpc-addr={}", ha.rpc),
        format!("--admin-socket={}", d.join("admin.sock").display()),
        "--port-tag=port".into(),
        format!("--config-out={}", d.join("live.cfg").display()),
        format!("--check={HAPROXY} -c -q -f {{}}"),
        "--verify-secs=1".into(),
    ];
    rec_args.extend(reconcile_vars(&vars));
    let _reconciler = reconcile_child(&rec_args, &[("HA_STICKY", "true")], &rec_log);

    let names = ["s1", "s2", "s3"];
    let mut web = BTreeMap::new();
    let mut agents = BTreeMap::new();
    for n in names {
        let (w, agent) = backend(n, ha.bind, &serf_log).await;
        agents.insert(n, agent);
        web.insert(n, w);
    }
    eventually("s1, s2, s3 UP", Duration::from_secs(60), async || {
        (h.up().await == names).then_some(())
    })
    .await;
    let text = std::fs::read_to_string(&rec_log).unwrap();
    assert!(
        text.contains("sticky routing: cookie SERVERID = the server's name"),
        "HA_STICKY did not reach the reconciler:\n{text}"
    );

    let client = StickyClient::start(fe);
    let first = client.moved_from(None).await;

    // Its web server dies; its agent stays alive, so the reconciler keeps
    // the entry: HAProxy's redispatch and checks take the client away.
    drop(web.remove(first.as_str()));
    let second = client.moved_from(Some(&first)).await;
    eventually(
        &format!("{first} DOWN in HAProxy"),
        Duration::from_secs(30),
        async || (h.servers().await.get(first.as_str()).map(|s| s.1) == Some(0)).then_some(()),
    )
    .await;

    // The next one's member leaves: maintenance, then deletion.
    agents[second.as_str()].signal(Signal::SIGINT);
    let third = client.moved_from(Some(&second)).await;
    eventually(
        &format!("{second} deleted"),
        Duration::from_secs(60),
        async || (!h.servers().await.contains_key(second.as_str())).then_some(()),
    )
    .await;

    let answers = client.finish().await;
    let failed: Vec<_> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    let answers: Vec<Answer> = answers.into_iter().map(Result::unwrap).collect();
    let mut runs: Vec<&str> = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        let switched = runs.last() != Some(&a.backend.as_str());
        if switched {
            runs.push(&a.backend);
            assert_eq!(
                a.set_cookie,
                [format!("SERVERID={}; path=/", a.backend)],
                "answer {i}: a new server hands out its cookie"
            );
        } else {
            assert!(a.set_cookie.is_empty(), "answer {i}: {a:?}");
        }
    }
    assert_eq!(
        runs,
        [first.as_str(), second.as_str(), third.as_str()],
        "never back to a lost server"
    );
    eprintln!(
        "{} answers, handed over {first} -> {second} (web server killed) -> {third} (member left), 0 failed",
        answers.len()
    );
    drop((agents, ha));
}
