//! An in-process server on 127.0.0.1:0, on its own thread and runtime, so
//! that anything blocking in the server would stall it (as `thread-sleep`
//! stalls the lab's Express app) and the tests would see it; and the
//! clients the tests visit it with.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Parser;
use webapp::{AppState, Config, Timeouts};

pub mod redis;

pub const IP: &str = "10.0.0.7";
pub const HOST: &str = "test-host";
pub const TAG: &str = "s1";

/// `webapp` with the test's IP and host name, then `tag` and `args`.
fn argv<'a>(tag: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    let mut argv = vec!["webapp", "--server-ip", IP, "--server-name", HOST];
    argv.extend_from_slice(tag);
    argv.extend_from_slice(args);
    argv
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Starts with the test identity plus `args` (e.g. `["--max-sessions", "5"]`).
    pub fn start(args: &[&str]) -> Self {
        Self::start_config(Config::parse_from(argv(&["--tag", TAG], args)))
    }

    /// Starts with the test's IP and host name but no `--tag`, plus `args`.
    pub fn start_untagged(args: &[&str]) -> Self {
        Self::start_config(Config::parse_from(argv(&[], args)))
    }

    /// The same on a two-thread runtime, so that handlers really run in
    /// parallel (for the concurrency test).
    pub fn start_threaded(args: &[&str]) -> Self {
        Self::start_config_on(Config::parse_from(argv(&["--tag", TAG], args)), 2)
    }

    pub fn start_config(config: Config) -> Self {
        Self::start_config_on(config, 1)
    }

    fn start_config_on(config: Config, threads: usize) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let timeouts = Timeouts::from(&config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // The state is made on the server's runtime (the Redis client spawns
        // its tasks there) and a clone is sent back for the test to inspect.
        let (state_tx, state_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = match threads {
                1 => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?,
                n => tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(n)
                    .enable_all()
                    .build()?,
            };
            rt.block_on(async move {
                let state = AppState::new(&config).expect("a valid configuration");
                state_tx.send(state.clone()).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let shutdown = async move {
                    let _ = stopped.await;
                };
                let grace = Duration::from_secs(5);
                webapp::serve_state(listener, state, timeouts, grace, shutdown).await
            })
        });
        let state = state_rx.recv().expect("the server thread made its state");
        TestServer {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The number of live sessions in the memory store.
    pub fn live_sessions(&self) -> u64 {
        self.state
            .sessions()
            .memory()
            .expect("the memory store")
            .len()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            if !std::thread::panicking() {
                result
                    .expect("server thread panicked")
                    .expect("server failed");
            }
        }
    }
}

/// A client with its own cookie jar (one browser).
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .build()
        .unwrap()
}

/// A client without cookies.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// `GET url` with `cookie` sent by hand, without a jar (as HAProxy
/// forwards it): the server alone decides what it is worth.
pub async fn get_with_cookie(url: &str, cookie: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

/// `GET url` without a cookie: the JSON body.
pub async fn get_json(url: &str) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The `NODESESSID=...` pair of a response's Set-Cookie, if any.
pub fn set_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("NODESESSID="))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// `GET url` (with `X-Request-Id` when given), which must answer 200: the
/// count and session id.
pub async fn visit(c: &reqwest::Client, url: &str, request: Option<&str>) -> (u64, String) {
    let mut req = c.get(url);
    if let Some(request) = request {
        req = req.header("x-request-id", request);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = res.json().await.unwrap();
    (
        body["sessionViews"].as_u64().unwrap(),
        body["id"].as_str().unwrap().to_owned(),
    )
}

/// `tasks` tasks at once, each visiting `per_task` times with `c` (one
/// browser, in session `id`), task `t` at `urls[t % urls.len()]`, its
/// `i`-th visit with X-Request-Id `t-i` when `request_ids`. Every visit
/// must stay in session `id`; the counts they got, sorted.
pub async fn visit_in_parallel(
    c: &reqwest::Client,
    urls: &[String],
    id: &str,
    (tasks, per_task): (usize, usize),
    request_ids: bool,
) -> Vec<u64> {
    let tasks: Vec<_> = (0..tasks)
        .map(|t| {
            let (c, url, id) = (c.clone(), urls[t % urls.len()].clone(), id.to_owned());
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(per_task);
                for i in 0..per_task {
                    let request = request_ids.then(|| format!("{t}-{i}"));
                    let (n, got) = visit(&c, &url, request.as_deref()).await;
                    assert_eq!(got, id);
                    seen.push(n);
                }
                seen
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap());
    }
    seen.sort_unstable();
    seen
}
