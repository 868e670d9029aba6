//! The Redis session store (`--session-store redis://...`) against a real
//! redis-server on 127.0.0.1: exact counts, expiry with the key, gone stays
//! gone, replays, outages, and two web apps sharing the sessions.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::redis::{exists, Connect, RedisServer};
use common::{browser, set_cookie, visit, visit_in_parallel, TestServer};
use reqwest::StatusCode;
use serde_json::Value;
use tower_sessions::cookie::time::{Duration as TimeDuration, OffsetDateTime};
use tower_sessions::session::{Id, Record};
use tower_sessions::SessionStore;
use webapp::sessions::redis_store::key;
use webapp::{SessionBackend, StoreSetting};

fn with_redis(redis: &RedisServer, args: &[&str]) -> TestServer {
    let url = redis.url();
    let mut argv = vec!["--session-store", &url];
    argv.extend_from_slice(args);
    TestServer::start(&argv)
}

fn threaded_with_redis(redis: &RedisServer) -> TestServer {
    TestServer::start_threaded(&["--session-store", &redis.url()])
}

fn session_key(id: &str) -> String {
    key(&id.parse::<Id>().unwrap())
}

fn hget(conn: &mut redis::Connection, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET").arg(key).arg(field).query(conn).unwrap()
}

fn pttl(conn: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(conn).unwrap()
}

/// Polls `check` until it holds; fails after `secs`.
async fn eventually(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let within = Duration::from_secs(secs);
    testkit::eventually(what, within, async || check().await.then_some(())).await
}

/// 32 tasks x 50 requests on one cookie: every request gets its own number
/// (2..=1601, each exactly once), the next visit reads 1602, and so does the
/// session's hash, which holds the record and the counter under one TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_counts_concurrent_visits_exactly_in_one_hash() {
    let redis = RedisServer::start();
    let server = threaded_with_redis(&redis);
    let c = browser();
    let url = server.url("/");
    let (first, id) = visit(&c, &url, None).await;
    assert_eq!(first, 1);
    let seen = visit_in_parallel(&c, std::slice::from_ref(&url), &id, (32, 50), false).await;
    assert_eq!(seen, (2..=1601).collect::<Vec<u64>>());
    assert_eq!(visit(&c, &url, None).await, (1602, id.clone()));

    let mut conn = redis.conn();
    let key = session_key(&id);
    assert_eq!(key, format!("webapp:session:{id}"));
    let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).unwrap();
    assert_eq!(kind, "hash");
    assert_eq!(hget(&mut conn, &key, "views").as_deref(), Some("1602"));
    let record: Value = serde_json::from_str(&hget(&mut conn, &key, "record").unwrap()).unwrap();
    assert_eq!(record["data"]["seen"], true, "{record}");
    let ttl = pttl(&mut conn, &key);
    assert!(ttl > 0 && ttl <= 1_800_000, "PTTL {ttl}");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert_eq!(keys, [key]);
}

/// `--session-idle-secs 1`: every visit sets the key's TTL to the idle
/// time; a session left alone expires with its key, and its cookie then
/// gets a new session counted from 1.
#[tokio::test]
async fn redis_sessions_expire_with_their_key() {
    let redis = RedisServer::start();
    let server = with_redis(&redis, &["--session-idle-secs", "1"]);
    let mut conn = redis.conn();
    let res = reqwest::get(server.url("/")).await.unwrap();
    let old = set_cookie(&res).unwrap();
    let body: Value = res.json().await.unwrap();
    let old_key = session_key(body["id"].as_str().unwrap());

    // A visit sets the TTL to the idle time, whatever it was.
    redis::cmd("PEXPIRE")
        .arg(&old_key)
        .arg(100_000)
        .query::<()>(&mut conn)
        .unwrap();
    let res = common::get_with_cookie(&server.url("/"), &old).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["sessionViews"], 2);
    let ttl = pttl(&mut conn, &old_key);
    assert!(ttl > 0 && ttl <= 1000, "PTTL {ttl} after a visit");

    // Left alone, the key goes.
    eventually(20, "the idle session's key expires", async || {
        !exists(&mut conn, &old_key)
    })
    .await;
    let res = common::get_with_cookie(&server.url("/"), &old).await;
    let fresh = set_cookie(&res).expect("a new session cookie");
    assert_ne!(fresh, old);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["sessionViews"], 1);
    assert!(
        !exists(&mut conn, &old_key),
        "the expired session came back"
    );
    assert!(exists(
        &mut conn,
        &session_key(body["id"].as_str().unwrap())
    ));
}

/// A session deleted under a web app (expired, evicted, flushed) is not
/// brought back: not by its cookie, nor by a late visit, save or load
/// through the store; and `create` never overwrites a live session.
#[tokio::test]
async fn a_gone_session_is_not_recreated() {
    let redis = RedisServer::start();
    let server = with_redis(&redis, &[]);
    let mut conn = redis.conn();

    // Over HTTP.
    let c = browser();
    let (n, id) = visit(&c, &server.url("/"), None).await;
    assert_eq!(n, 1);
    redis::cmd("DEL")
        .arg(session_key(&id))
        .query::<()>(&mut conn)
        .unwrap();
    let (n, new_id) = visit(&c, &server.url("/"), None).await;
    assert_eq!(n, 1);
    assert_ne!(new_id, id);
    assert!(!exists(&mut conn, &session_key(&id)));

    // Through the store.
    let Ok(StoreSetting::Redis(target)) = StoreSetting::parse(&redis.url()) else {
        panic!("{} does not parse", redis.url());
    };
    let store = SessionBackend::new(
        &StoreSetting::Redis(target),
        10,
        Duration::from_secs(60),
        Duration::from_secs(5),
    )
    .unwrap();
    let mut record = Record {
        id: Id::default(),
        data: Default::default(),
        expiry_date: OffsetDateTime::now_utc() + TimeDuration::hours(1),
    };
    store.create(&mut record).await.unwrap();
    let id = record.id;
    let key = key(&id);
    assert_eq!(hget(&mut conn, &key, "views").as_deref(), Some("0"));
    assert_eq!(store.visit(&id, None).await, Ok(Some(1)));
    assert_eq!(store.load(&id).await.unwrap(), Some(record.clone()));

    // A create that draws a live id takes another one and leaves it alone.
    let mut clash = Record {
        id,
        data: [("other".to_owned(), Value::from(1))].into_iter().collect(),
        expiry_date: record.expiry_date,
    };
    store.create(&mut clash).await.unwrap();
    assert_ne!(clash.id, id);
    assert_eq!(store.load(&id).await.unwrap(), Some(record.clone()));
    assert_eq!(store.visit(&id, None).await, Ok(Some(2)));

    redis::cmd("DEL").arg(&key).query::<()>(&mut conn).unwrap();
    record.data.insert("late".into(), Value::from(true));
    store.save(&record).await.unwrap();
    assert!(!exists(&mut conn, &key), "save re-created the session");
    assert_eq!(store.visit(&id, None).await, Ok(None));
    assert_eq!(store.visit(&id, Some("r-1")).await, Ok(None));
    assert!(!exists(&mut conn, &key), "a visit re-created the session");
    assert_eq!(store.load(&id).await.unwrap(), None);
    assert!(!exists(&mut conn, &key));

    store.delete(&clash.id).await.unwrap();
    assert!(!exists(
        &mut conn,
        &webapp::sessions::redis_store::key(&clash.id)
    ));
}

/// The replay: requests with the same `X-Request-Id` on one cookie count
/// once and get the same number; any other id, or none, counts.
async fn replays_count_once(server: &TestServer) {
    let c = browser();
    let url = server.url("/");
    let (n, id) = visit(&c, &url, None).await;
    assert_eq!(n, 1);
    assert_eq!(visit(&c, &url, Some("req-a")).await, (2, id.clone()));
    assert_eq!(visit(&c, &url, Some("req-a")).await, (2, id.clone()));
    assert_eq!(visit(&c, &url, Some("req-b")).await, (3, id.clone()));
    assert_eq!(visit(&c, &url, Some("req-b")).await, (3, id.clone()));
    assert_eq!(visit(&c, &url, None).await, (4, id.clone()));
    assert_eq!(visit(&c, &url, None).await, (5, id.clone()));
    assert_eq!(visit(&c, &url, Some("req-a")).await, (6, id.clone()));
    // A replay racing its original: one count, one number for both.
    let (first, second) = tokio::join!(
        visit(&c, &url, Some("req-c")),
        visit(&c, &url, Some("req-c"))
    );
    assert_eq!(first, (7, id.clone()));
    assert_eq!(second, (7, id.clone()));
    assert_eq!(visit(&c, &url, Some("req-a")).await, (8, id.clone()));
    assert_eq!(visit(&c, &url, Some("req-a")).await, (8, id.clone()));
    // Several headers (the client's, then HAProxy's): the last one counts.
    let res = c
        .get(&url)
        .header("x-request-id", "from-client")
        .header("x-request-id", "req-a")
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["sessionViews"], 8);
    // Another session with the same request id is another visit.
    assert_eq!(visit(&browser(), &url, Some("req-a")).await.0, 1);
    // A request id that is not a plain token is refused, and not counted.
    let res = c
        .get(&url)
        .header("x-request-id", "x".repeat(300))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("X-Request-Id"),
        "{body}"
    );
    assert_eq!(visit(&c, &url, None).await, (9, id));
}

#[tokio::test]
async fn redis_replays_count_once() {
    let redis = RedisServer::start();
    let server = with_redis(&redis, &[]);
    replays_count_once(&server).await;
    let mut conn = redis.conn();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
}

#[tokio::test]
async fn memory_replays_count_once() {
    replays_count_once(&TestServer::start(&[])).await;
}

/// With a request id on every request (as behind HAProxy), concurrent
/// visits are still each counted once, in both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_visits_with_request_ids_are_all_counted() {
    let redis = RedisServer::start();
    for server in [TestServer::start_threaded(&[]), threaded_with_redis(&redis)] {
        let c = browser();
        let url = server.url("/");
        let (_, id) = visit(&c, &url, None).await;
        let seen = visit_in_parallel(&c, std::slice::from_ref(&url), &id, (32, 25), true).await;
        assert_eq!(seen, (2..=801).collect::<Vec<u64>>());
    }
}

/// What one `GET /` under an outage may answer: 200 with a count, or 503
/// with the JSON error; never a hung request (the client gives up after
/// 10 s) nor a cut connection.
async fn get_during_outage(c: &reqwest::Client, url: &str) -> StatusCode {
    let res = c
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET / failed instead of answering: {e}"));
    let status = res.status();
    let body: Value = res.json().await.expect("a JSON body");
    match status {
        StatusCode::OK => assert!(body["sessionViews"].as_u64().is_some(), "{body}"),
        StatusCode::SERVICE_UNAVAILABLE => {
            assert_eq!(body["error"], "session store unavailable", "{body}");
            assert!(
                !body["detail"].as_str().unwrap_or_default().is_empty(),
                "{body}"
            );
        }
        other => panic!("GET / answered {other}: {body}"),
    }
    status
}

fn bounded_browser() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `HEAD /`, with and without the session cookie of `c`.
async fn head_is_ok(c: &reqwest::Client, url: &str) {
    for client in [c, &bounded_browser()] {
        let res = client.head(url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get("set-cookie").is_none());
    }
}

/// redis-server killed under load: every request is answered 200 or 503
/// with the JSON error, in bounded time; `HEAD /` stays 200; once a server
/// is back on the same port, requests succeed again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_answers_503_and_recovers() {
    let mut redis = RedisServer::start();
    let server = TestServer::start_threaded(&[
        "--session-store",
        &redis.url(),
        "--session-store-timeout-ms",
        "500",
    ]);
    let url = server.url("/");
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let c = bounded_browser();
                let mut statuses = HashSet::new();
                while !stop.load(Ordering::Relaxed) {
                    statuses.insert(get_during_outage(&c, &url).await);
                }
                statuses
            })
        })
        .collect();
    let c = bounded_browser();
    eventually(20, "the load is served", async || {
        get_during_outage(&c, &url).await == StatusCode::OK
    })
    .await;

    redis.kill();
    eventually(20, "GET / answers 503 with redis down", async || {
        get_during_outage(&c, &url).await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    // A new visitor too, and the health check stays green.
    let res = common::client().get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    for _ in 0..5 {
        head_is_ok(&c, &url).await;
    }

    redis.restart();
    // The restarted server is empty: the old cookie starts a new session.
    eventually(20, "GET / answers 200 again", async || {
        get_during_outage(&c, &url).await == StatusCode::OK
    })
    .await;
    let (n, id) = visit(&c, &url, None).await;
    assert_eq!(visit(&c, &url, None).await, (n + 1, id));

    stop.store(true, Ordering::Relaxed);
    let mut seen = HashSet::new();
    for task in load {
        seen.extend(task.await.expect("a load task failed"));
    }
    assert!(seen.contains(&StatusCode::OK), "{seen:?}");
}

/// A redis-server that stops answering (SIGSTOP) is a 503 after the store
/// timeout, not a hung request; when it answers again, so does the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_is_a_503_within_the_timeout() {
    let redis = RedisServer::start();
    let server = with_redis(&redis, &["--session-store-timeout-ms", "300"]);
    let url = server.url("/");
    let c = bounded_browser();
    let (n, id) = visit(&c, &url, None).await;
    assert_eq!(n, 1);

    redis.pause();
    let res = c.get(&url).send().await.expect("an answer within 10 s");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "session store unavailable");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("no answer within 300 ms"),
        "{body}"
    );
    head_is_ok(&c, &url).await;

    redis.resume();
    // The timed-out visit may have been counted when the server woke up:
    // the count goes on from 2 or 3.
    let mut last = 0;
    eventually(20, "GET / answers 200 again", async || {
        let res = c.get(&url).send().await.unwrap();
        if res.status() != StatusCode::OK {
            return false;
        }
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["id"], id.as_str());
        last = body["sessionViews"].as_u64().unwrap();
        true
    })
    .await;
    assert!((2..=3).contains(&last), "count {last} after the stall");
}

/// The point of the shared store: a user moved to another web app keeps the
/// session and its count, also under concurrent load on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_web_apps_share_sessions() {
    let redis = RedisServer::start();
    let a = with_redis(&redis, &[]);
    let b = with_redis(&redis, &[]);
    let c = browser();
    let (n, id) = visit(&c, &a.url("/"), None).await;
    assert_eq!(n, 1);
    assert_eq!(visit(&c, &b.url("/"), None).await, (2, id.clone()));
    assert_eq!(visit(&c, &a.url("/"), None).await, (3, id.clone()));
    // The cookie by hand, as HAProxy would forward it.
    let res = common::get_with_cookie(&b.url("/"), &format!("NODESESSID={id}")).await;
    assert!(set_cookie(&res).is_none(), "b started another session");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["sessionViews"], 4);
    // HAProxy's retry, on b, of a request a counted (and died before
    // answering): the same number, not counted again.
    assert_eq!(visit(&c, &a.url("/"), Some("r-9")).await, (5, id.clone()));
    assert_eq!(visit(&c, &b.url("/"), Some("r-9")).await, (5, id.clone()));

    let urls = [a.url("/"), b.url("/")];
    let seen = visit_in_parallel(&c, &urls, &id, (16, 25), false).await;
    assert_eq!(seen, (6..=405).collect::<Vec<u64>>());
    assert_eq!(visit(&c, &b.url("/"), None).await, (406, id));
}

/// `redis::cmd("INFO commandstats")`'s call count of `command` (0 if absent).
fn calls(conn: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

/// A new session is one script call (created with its first visit
/// counted); tower-sessions' layer does not save it again after the
/// handler. A known session's visit is one more; a cookie whose session
/// is gone costs the visit that finds it gone, then the start.
#[tokio::test]
async fn a_new_session_is_one_script_call() {
    let redis = RedisServer::start();
    let server = with_redis(&redis, &[]);
    let url = server.url("/");
    let mut conn = redis.conn();
    // Both scripts loaded (a first EVALSHA of each meets NOSCRIPT).
    let warm = browser();
    assert_eq!(visit(&warm, &url, None).await.0, 1);
    assert_eq!(visit(&warm, &url, None).await.0, 2);
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query::<()>(&mut conn)
        .unwrap();

    let c = browser();
    let (n, id) = visit(&c, &url, None).await;
    assert_eq!(n, 1);
    assert_eq!(calls(&mut conn, "evalsha"), 1);
    assert_eq!(calls(&mut conn, "eval"), 0);
    assert_eq!(calls(&mut conn, "script|load"), 0);
    assert_eq!(visit(&c, &url, None).await, (2, id.clone()));
    assert_eq!(calls(&mut conn, "evalsha"), 2);

    redis::cmd("DEL")
        .arg(session_key(&id))
        .query::<()>(&mut conn)
        .unwrap();
    let (n, new_id) = visit(&c, &url, None).await;
    assert_eq!(n, 1);
    assert_ne!(new_id, id);
    assert_eq!(calls(&mut conn, "evalsha"), 4);
    assert_eq!(visit(&c, &url, None).await, (2, new_id));
}

/// The request id of a new session's first visit is remembered like any
/// other: a replay of that request with the new cookie gets 1 again.
async fn a_first_visit_is_replayed_as_such(server: &TestServer) -> String {
    let c = browser();
    let url = server.url("/");
    let (n, id) = visit(&c, &url, Some("first")).await;
    assert_eq!(n, 1);
    assert_eq!(visit(&c, &url, Some("first")).await, (1, id.clone()));
    assert_eq!(visit(&c, &url, Some("second")).await, (2, id.clone()));
    assert_eq!(visit(&c, &url, None).await, (3, id.clone()));
    id
}

#[tokio::test]
async fn redis_first_visits_are_replayed_as_such() {
    let redis = RedisServer::start();
    let server = with_redis(&redis, &[]);
    let id = a_first_visit_is_replayed_as_such(&server).await;
    let mut conn = redis.conn();
    let key = session_key(&id);
    assert_eq!(hget(&mut conn, &key, "views").as_deref(), Some("3"));
    assert_eq!(hget(&mut conn, &key, "req").as_deref(), Some("second"));

    // The hash a start leaves: the record, the count 1, the request id
    // and its number, under the idle TTL.
    let c = common::client();
    let res = c
        .get(server.url("/"))
        .header("x-request-id", "r-1")
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    let key = session_key(body["id"].as_str().unwrap());
    let fields: Vec<(String, String)> = redis::cmd("HGETALL").arg(&key).query(&mut conn).unwrap();
    let mut names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["record", "req", "req_views", "views"]);
    assert_eq!(hget(&mut conn, &key, "views").as_deref(), Some("1"));
    assert_eq!(hget(&mut conn, &key, "req").as_deref(), Some("r-1"));
    assert_eq!(hget(&mut conn, &key, "req_views").as_deref(), Some("1"));
    let record: Record = serde_json::from_str(&hget(&mut conn, &key, "record").unwrap()).unwrap();
    assert_eq!(record.id.to_string(), body["id"].as_str().unwrap());
    assert_eq!(record.data["seen"], true, "{record:?}");
    let ttl = pttl(&mut conn, &key);
    assert!(ttl > 0 && ttl <= 1_800_000, "PTTL {ttl}");
}

#[tokio::test]
async fn memory_first_visits_are_replayed_as_such() {
    a_first_visit_is_replayed_as_such(&TestServer::start(&[])).await;
}

/// `start` through either store: the new session counts 1 and knows the
/// request id; a start that drew a live id takes another one and leaves
/// the live session as it was.
#[tokio::test]
async fn a_start_never_overwrites_a_live_session() {
    let redis = RedisServer::start();
    let Ok(StoreSetting::Redis(target)) = StoreSetting::parse(&redis.url()) else {
        panic!("{} does not parse", redis.url());
    };
    for setting in [StoreSetting::Memory, StoreSetting::Redis(target)] {
        let store = SessionBackend::new(
            &setting,
            10,
            Duration::from_secs(60),
            Duration::from_secs(5),
        )
        .unwrap();
        let record = |id: Id, value: i64| Record {
            id,
            data: [("v".to_owned(), Value::from(value))].into_iter().collect(),
            expiry_date: OffsetDateTime::now_utc() + TimeDuration::hours(1),
        };
        let asked = Id::default();
        let live = store.start(record(asked, 1), Some("r-1")).await.unwrap();
        assert_eq!(live, asked, "{setting:?}");
        assert_eq!(store.visit(&live, Some("r-1")).await, Ok(Some(1)));
        assert_eq!(store.visit(&live, None).await, Ok(Some(2)));

        let other = store.start(record(live, 2), None).await.unwrap();
        assert_ne!(other, live, "{setting:?}");
        let kept = store.load(&live).await.unwrap().expect("the live session");
        assert_eq!(kept.data["v"], 1, "{setting:?}");
        assert_eq!(store.visit(&live, None).await, Ok(Some(3)));
        // Its last request id is still its own (no id since: still the last).
        assert_eq!(store.visit(&live, Some("r-1")).await, Ok(Some(1)));
        assert_eq!(store.visit(&other, None).await, Ok(Some(2)));
    }
}
