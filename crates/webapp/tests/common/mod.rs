//! An in-process server on 127.0.0.1:0, on its own thread and runtime, so
//! that anything blocking in the server would stall it (as `thread-sleep`
//! stalls the lab's Express app) and the tests would see it.

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

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Starts with the test identity plus `args` (e.g. `["--max-sessions", "5"]`).
    pub fn start(args: &[&str]) -> Self {
        let mut argv = vec![
            "webapp",
            "--server-ip",
            IP,
            "--server-name",
            HOST,
            "--tag",
            TAG,
        ];
        argv.extend_from_slice(args);
        Self::start_config(Config::parse_from(argv))
    }

    /// The same on a two-thread runtime, so that handlers really run in
    /// parallel (for the concurrency test).
    pub fn start_threaded(args: &[&str]) -> Self {
        let mut argv = vec!["webapp", "--server-ip", IP, "--server-name", HOST];
        argv.extend_from_slice(&["--tag", TAG]);
        argv.extend_from_slice(args);
        Self::start_config_on(Config::parse_from(argv), 2)
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

/// The `NODESESSID=...` pair of a response's Set-Cookie, if any.
pub fn set_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("NODESESSID="))
        .map(|v| v.split(';').next().unwrap().to_owned())
}
