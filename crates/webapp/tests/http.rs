//! The web app over real HTTP on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::{
    browser, client, get_json, get_with_cookie, set_cookie, visit, visit_in_parallel, TestServer,
    HOST, IP, TAG,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn get_root_says_hello_with_header_and_session_cookie() {
    let server = TestServer::start(&[]);
    let c = browser();
    let res = c.get(server.url("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-backend-ip"], IP);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let raw = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(raw.starts_with("NODESESSID="), "{raw}");
    assert!(raw.contains("HttpOnly"), "{raw}");
    assert!(raw.contains("Path=/"), "{raw}");
    let cookie = set_cookie(&res).unwrap();
    let body: Value = res.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        body,
        json!({"hello": "world!", "ip": IP, "host": HOST, "tag": TAG, "sessionViews": 1, "id": id})
    );
    assert_eq!(cookie, format!("NODESESSID={id}"));

    // Same browser: same session, counted.
    assert_eq!(visit(&c, &server.url("/"), None).await, (2, id.clone()));
    assert_eq!(visit(&c, &server.url("/"), None).await, (3, id.clone()));
    // Another browser: its own session.
    let (n, other) = visit(&browser(), &server.url("/"), None).await;
    assert_eq!(n, 1);
    assert_ne!(other, id);
    assert_eq!(server.live_sessions(), 2);
}

#[tokio::test]
async fn tag_falls_back_to_tag_env_and_defaults_to_empty() {
    let server = TestServer::start_untagged(&["--tag-fallback", "from-TAG"]);
    let body = get_json(&server.url("/")).await;
    assert_eq!(body["tag"], "from-TAG");

    let server = TestServer::start_untagged(&["--tag", ""]);
    let body = get_json(&server.url("/")).await;
    assert_eq!(body["tag"], "");
}

#[test]
fn default_ip_is_a_real_address() {
    let ip = webapp::primary_ipv4();
    assert!(!ip.is_unspecified());
    assert!(ip.is_ipv4());
}

/// 32 tasks x 50 requests on one cookie: every request gets its own number
/// (2..=1601, each exactly once) and the next visit reads 1602.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_visits_on_one_session_are_all_counted() {
    let server = TestServer::start_threaded(&[]);
    let c = browser();
    let url = server.url("/");
    let (first, id) = visit(&c, &url, None).await;
    assert_eq!(first, 1);
    let seen = visit_in_parallel(&c, std::slice::from_ref(&url), &id, (32, 50), false).await;
    assert_eq!(seen, (2..=1601).collect::<Vec<u64>>());
    assert_eq!(visit(&c, &url, None).await, (1602, id));
    assert_eq!(server.live_sessions(), 1);
}

#[tokio::test]
async fn head_is_a_cheap_health_check_without_session() {
    let server = TestServer::start(&[]);
    for _ in 0..5 {
        let res = client().head(server.url("/")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["x-backend-ip"], IP);
        assert!(res.headers().get("set-cookie").is_none());
    }
    assert_eq!(server.live_sessions(), 0);

    // HEAD with a session cookie neither counts a visit nor re-sets the cookie.
    let c = browser();
    let (_, id) = visit(&c, &server.url("/"), None).await;
    for _ in 0..3 {
        let res = c.head(server.url("/")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get("set-cookie").is_none());
    }
    assert_eq!(visit(&c, &server.url("/"), None).await, (2, id));
    // A stale cookie on HEAD creates nothing either.
    let res = client()
        .head(server.url("/"))
        .header("cookie", "NODESESSID=AAAAAAAAAAAAAAAAAAAAAA")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("set-cookie").is_none());
    assert_eq!(server.live_sessions(), 1);
}

#[tokio::test]
async fn delay_slows_later_gets_without_blocking_other_connections() {
    let server = TestServer::start(&[]);
    let delay = Duration::from_millis(3000);
    let res = client()
        .post(server.url("/delay"))
        .json(&json!({"delay": delay.as_millis() as u64}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["message"], "New timeout of 3000ms configured.");

    let url = server.url("/");
    let started = Instant::now();
    let slow = tokio::spawn(async move { client().get(url).send().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Other connections are served while the GET sleeps: a health check and
    // a new delay setting (which does not shorten the pending sleep).
    let res = client().head(server.url("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = client()
        .post(server.url("/delay"))
        .form(&[("delay", "0")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        !slow.is_finished(),
        "the delayed GET answered before the HEAD"
    );

    let res = slow.await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        started.elapsed() >= delay,
        "GET answered after {:?}",
        started.elapsed()
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["sessionViews"], 1);

    // The form body above reset the delay: the next GET does not wait 3 s.
    let started = Instant::now();
    let (n, _) = visit(&client(), &server.url("/"), None).await;
    assert_eq!(n, 1);
    assert!(started.elapsed() < delay);
}

async fn post_delay(server: &TestServer, content_type: &str, body: &str) -> (StatusCode, String) {
    let mut req = client().post(server.url("/delay")).body(body.to_owned());
    if !content_type.is_empty() {
        req = req.header("content-type", content_type);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    (
        status,
        body["message"].as_str().expect("a JSON message").to_owned(),
    )
}

#[tokio::test]
async fn bad_delays_are_refused_with_a_message() {
    let server = TestServer::start(&[]);
    const JSON: &str = "application/json";
    const FORM: &str = "application/x-www-form-urlencoded";
    let error = StatusCode::INTERNAL_SERVER_ERROR;

    // Missing delay: 500, as in the lab.
    for (ct, body) in [
        (JSON, "{}"),
        (JSON, ""),
        ("", ""),
        (FORM, "other=1"),
        (JSON, "[1]"),
    ] {
        let (status, msg) = post_delay(&server, ct, body).await;
        assert_eq!(status, error, "{ct} {body}");
        assert!(msg.contains("no `delay`"), "{msg}");
    }
    // Invalid or absurd values: 500 naming the value.
    for (ct, body, shown) in [
        (JSON, r#"{"delay": -5}"#, "-5"),
        (JSON, r#"{"delay": 60001}"#, "60001"),
        (JSON, r#"{"delay": 1.5}"#, "1.5"),
        (JSON, r#"{"delay": "soon"}"#, "soon"),
        (JSON, r#"{"delay": null}"#, "null"),
        (FORM, "delay=abc", "abc"),
        (
            FORM,
            "delay=99999999999999999999999",
            "99999999999999999999999",
        ),
    ] {
        let (status, msg) = post_delay(&server, ct, body).await;
        assert_eq!(status, error, "{body}");
        assert!(msg.contains(shown) && msg.contains("60000"), "{msg}");
    }
    // Malformed JSON: 400; a body of another type: 415.
    let (status, msg) = post_delay(&server, JSON, r#"{"delay": "#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(msg.contains("Invalid JSON"), "{msg}");
    let (status, msg) = post_delay(&server, "text/plain", "delay=5").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(msg.contains("text/plain"), "{msg}");

    // Accepted forms: JSON number, JSON string, form value, JSON with charset.
    for (ct, body) in [
        (JSON, r#"{"delay": 0}"#),
        (JSON, r#"{"delay": "0"}"#),
        (FORM, "delay=0"),
        ("application/json; charset=utf-8", r#"{"delay": 60000}"#),
        (JSON, r#"{"delay": 0}"#),
    ] {
        let (status, msg) = post_delay(&server, ct, body).await;
        assert_eq!(status, StatusCode::OK, "{body}: {msg}");
        assert!(msg.starts_with("New timeout of"), "{msg}");
    }
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods() {
    let server = TestServer::start(&[]);
    let res = client().get(server.url("/nope")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["message"], "Not found: GET /nope");

    for (method, path) in [
        ("DELETE", "/"),
        ("POST", "/"),
        ("GET", "/delay"),
        ("PUT", "/delay"),
    ] {
        let res = client()
            .request(method.parse().unwrap(), server.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert!(res.headers().contains_key("allow"));
        let body: Value = res.json().await.unwrap();
        assert!(body["message"]
            .as_str()
            .unwrap()
            .starts_with("Method not allowed"));
    }
    assert_eq!(server.live_sessions(), 0);
}

/// `--max-sessions 5`: never more than 5 live sessions; the most recently
/// used ones survive.
#[tokio::test]
async fn live_sessions_are_capped() {
    let server = TestServer::start(&["--max-sessions", "5"]);
    let mut cookies = Vec::new();
    for _ in 0..40 {
        let res = client().get(server.url("/")).send().await.unwrap();
        cookies.push(set_cookie(&res).unwrap());
        assert!(server.live_sessions() <= 5);
    }
    // Newest first, so that revisiting a dead cookie (which starts a new
    // session) cannot evict a survivor before it is checked.
    let mut survivors = 0;
    for (age, cookie) in cookies.iter().rev().enumerate() {
        let res = get_with_cookie(&server.url("/"), cookie).await;
        let body: Value = res.json().await.unwrap();
        if body["sessionViews"] == 2 {
            assert_eq!(
                format!("NODESESSID={}", body["id"].as_str().unwrap()),
                *cookie
            );
            assert!(age < 5, "session {age} from the newest survived");
            survivors += 1;
        } else {
            assert_eq!(body["sessionViews"], 1);
        }
        assert!(server.live_sessions() <= 5);
    }
    assert_eq!(survivors, 5);
}

/// `--session-idle-secs 1`: a session left alone expires, one in use does not.
#[tokio::test]
async fn idle_sessions_expire() {
    let server = TestServer::start(&["--session-idle-secs", "1"]);
    let res = client().get(server.url("/")).send().await.unwrap();
    let old = set_cookie(&res).unwrap();

    // Visited every 200 ms for 2.5 s: alive throughout, while the first
    // session stays untouched for more than twice its idle time.
    let c = browser();
    let (_, kept) = visit(&c, &server.url("/"), None).await;
    let started = Instant::now();
    let mut i = 1;
    while started.elapsed() < Duration::from_millis(2500) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        i += 1;
        assert_eq!(visit(&c, &server.url("/"), None).await, (i, kept.clone()));
    }
    // The untouched session is gone (sent by hand: the server decides, not a jar).
    let res = get_with_cookie(&server.url("/"), &old).await;
    let fresh = set_cookie(&res).expect("a new session cookie");
    assert_ne!(fresh, old);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["sessionViews"], 1);
    assert_eq!(
        format!("NODESESSID={}", body["id"].as_str().unwrap()),
        fresh
    );
}

#[tokio::test]
async fn garbage_cookies_get_a_fresh_session() {
    let server = TestServer::start(&[]);
    for cookie in [
        "NODESESSID=",
        "NODESESSID=not-an-id",
        "NODESESSID=s%3Aabc.def",
        "other=1",
    ] {
        let res = get_with_cookie(&server.url("/"), cookie).await;
        assert_eq!(res.status(), StatusCode::OK, "{cookie}");
        assert!(set_cookie(&res).is_some(), "{cookie}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["sessionViews"], 1);
    }
}
