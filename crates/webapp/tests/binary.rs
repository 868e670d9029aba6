//! The real `webapp` binary: startup line, flags, signals, graceful shutdown,
//! the session store setting.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::client;
use serde_json::Value;
use testkit::{eventually, eventually_blocking, ChildGuard, Signal};

/// The binary with its stdout read line by line on a thread; killed on drop.
struct Webapp {
    process: ChildGuard,
    lines: Receiver<String>,
    log: Vec<String>,
    addr: SocketAddr,
}

impl Webapp {
    fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut process = ChildGuard::spawn(
            "webapp",
            Command::new(env!("CARGO_BIN_EXE_webapp"))
                .args(["--bind", "127.0.0.1", "--port", "0"])
                .args(args)
                .env("RUST_LOG", "info,webapp=debug")
                .envs(env.iter().copied())
                .env("SERVER_IP", "10.0.0.8")
                .env("SERVER_NAME", "bin-host")
                .stdout(Stdio::piped()),
        );
        let stdout = process.child_mut().stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut app = Webapp {
            process,
            lines,
            log: Vec::new(),
            addr: ([0, 0, 0, 0], 0).into(),
        };
        let line = app.wait_line("listening on ");
        let addr = line
            .split("listening on ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        app.addr = addr
            .parse()
            .unwrap_or_else(|e| panic!("{addr:?} in {line:?}: {e}"));
        app
    }

    /// The lines printed so far (read without waiting), containing `needle`.
    fn lines_with(&mut self, needle: &str) -> Vec<String> {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        self.log
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits (at most 20 s) for a stdout line containing `needle`.
    fn wait_line(&mut self, needle: &str) -> String {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no line with {needle:?} ({e}); output so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    fn signal(&self, sig: Signal) {
        self.process.signal(sig);
    }

    /// Waits (at most 30 s) for the process to exit.
    fn wait_exit(&mut self) -> ExitStatus {
        self.process.wait_exit_blocking(Duration::from_secs(30))
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

async fn set_delay(app: &Webapp, ms: u64) {
    let res = client()
        .post(app.url("/delay"))
        .json(&serde_json::json!({ "delay": ms }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_its_address_and_serves_env_identity() {
    let mut app = Webapp::start(&["--tag", "bin"]);
    // The default store is this process's memory.
    assert!(app.lines_with("listening on")[0].contains("sessions=memory"));
    let res = client().get(app.url("/")).send().await.unwrap();
    assert_eq!(res.headers()["x-backend-ip"], "10.0.0.8");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["host"], "bin-host");
    assert_eq!(body["tag"], "bin");
    assert_eq!(body["sessionViews"], 1);
}

/// SIGTERM with a delayed request in flight: the listener closes at once,
/// the request still gets its answer, then the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits_0() {
    let mut app = Webapp::start(&[]);
    set_delay(&app, 1500).await;
    let url = app.url("/");
    let slow = tokio::spawn(async move { client().get(url).send().await });
    app.wait_line("http{method=GET path=/}: webapp: started");

    app.signal(Signal::SIGTERM);
    app.wait_line("SIGTERM received");
    app.wait_line("shutting down");
    // Poll until the listener is closed (the accept loop stops right after
    // the line above), while the delayed request is still pending.
    eventually_blocking(
        "the listener closed after SIGTERM",
        Duration::from_secs(5),
        || TcpStream::connect(app.addr).is_err().then_some(()),
    );
    assert!(
        !slow.is_finished(),
        "the delayed request answered before the listener closed"
    );

    let res = slow
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["hello"], "world!");
    let status = app.wait_exit();
    assert!(status.success(), "{status}");
    app.wait_line("stopped");
}

/// With a shutdown delay, SIGTERM first changes nothing for clients: new
/// connections are still accepted and answered (the balancer is letting go
/// of this server meanwhile), then the process drains and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delay_keeps_serving_after_sigterm() {
    let mut app = Webapp::start(&["--shutdown-delay-ms", "3000"]);
    app.signal(Signal::SIGTERM);
    app.wait_line("still serving for");
    let res = client()
        .get(app.url("/"))
        .header("connection", "close")
        .send()
        .await
        .expect("a new connection is served during the delay");
    assert_eq!(res.status(), 200);
    app.wait_line("shutting down");
    let status = app.wait_exit();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_0() {
    let mut app = Webapp::start(&[]);
    app.signal(Signal::SIGINT);
    app.wait_line("SIGINT received");
    let status = app.wait_exit();
    assert!(status.success(), "{status}");
}

/// The drain is bounded: a request delayed past the grace period is cut and
/// the process still exits 0, long before the delay would have run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_is_bounded() {
    let mut app = Webapp::start(&["--shutdown-grace-secs", "1"]);
    set_delay(&app, 60_000).await;
    let url = app.url("/");
    let slow = tokio::spawn(async move { client().get(url).send().await });
    app.wait_line("http{method=GET path=/}: webapp: started");
    let signalled = Instant::now();
    app.signal(Signal::SIGTERM);
    let status = app.wait_exit();
    assert!(status.success(), "{status}");
    assert!(signalled.elapsed() < Duration::from_secs(30));
    assert!(
        slow.await.unwrap().is_err(),
        "the cut request got an answer"
    );
}

#[test]
fn bad_flags_are_refused() {
    for args in [
        &["--max-sessions", "0"][..],
        &["--session-idle-secs", "0"],
        &["--port", "x"],
        &["--shutdown-delay-ms", "600000"],
        &["--header-timeout-ms", "0"],
        &["--keep-alive-timeout-ms", "3600001"],
        &["--session-store-timeout-ms", "0"],
        &["--session-store-timeout-ms", "60001"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_webapp"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

/// Run `cmd`, which must refuse to start: its stderr. Accepted, it would
/// serve until a signal, so it is waited for a bounded time, then killed.
fn refused_start(cmd: &mut Command, what: &str) -> String {
    let mut child = ChildGuard::spawn(
        &format!("webapp with {what} (it must refuse to start)"),
        cmd.stdout(Stdio::null()).stderr(Stdio::piped()),
    );
    let out = child.output_blocking(Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{what}: {err}");
    err
}

/// A timeout that does not parse, from its flag or its environment
/// variable, stops the start with one error naming the flag.
#[test]
fn timeouts_that_do_not_parse_are_named() {
    for (flag, env) in [
        ("--header-timeout-ms", "HEADER_TIMEOUT_MS"),
        ("--keep-alive-timeout-ms", "KEEP_ALIVE_TIMEOUT_MS"),
    ] {
        for by_env in [false, true] {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_webapp"));
            cmd.args(["--bind", "127.0.0.1", "--port", "0"]);
            if by_env {
                cmd.env(env, "5s");
            } else {
                cmd.args([flag, "5s"]);
            }
            let err = refused_start(&mut cmd, &format!("{flag} 5s (by_env={by_env})"));
            assert!(
                err.contains(&format!("invalid value '5s' for '{flag}")),
                "{flag} (by_env={by_env}): {err}"
            );
        }
    }
}

#[test]
fn a_log_filter_that_does_not_parse_is_refused() {
    let err = refused_start(
        Command::new(env!("CARGO_BIN_EXE_webapp"))
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .env("RUST_LOG", "webapp=verbose"),
        "RUST_LOG=webapp=verbose",
    );
    assert!(err.contains("\"webapp=verbose\""), "{err}");
}

/// A `--session-store` / `SESSION_STORE` that cannot be used stops the
/// start with one error naming the variable, the value and the expected
/// shape, and never the password the URL carries.
#[test]
fn a_bad_session_store_is_refused_without_its_password() {
    for (value, shown) in [
        ("memroy", "\"memroy\""),
        ("redis://cache:99999/0", "\"redis://cache:99999/0\""),
        (
            "redis://admin:hunter2@cache:99999/0",
            "\"redis://***@cache:99999/0\"",
        ),
        ("redis://:hunter2@cache/x", "\"redis://***@cache/x\""),
        ("rediss://:hunter2@cache", "\"rediss://***@cache\""),
    ] {
        for by_env in [false, true] {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_webapp"));
            cmd.args(["--bind", "127.0.0.1", "--port", "0"]);
            // anyhow would add a backtrace under these.
            cmd.env_remove("RUST_BACKTRACE")
                .env_remove("RUST_LIB_BACKTRACE");
            if by_env {
                cmd.env("SESSION_STORE", value);
            } else {
                cmd.args(["--session-store", value]);
            }
            let err = refused_start(&mut cmd, &format!("{shown} (by_env={by_env})"));
            assert!(err.contains("invalid SESSION_STORE"), "{err}");
            assert!(err.contains(shown), "{shown}: {err}");
            assert!(
                err.contains("redis://[[user]:password@]host[:port][/db]"),
                "{err}"
            );
            assert!(!err.contains("hunter2"), "the password is shown: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{err}");
        }
    }
}

/// Containers start in any order: with Redis not up yet the web app starts,
/// answers `HEAD /` and answers `GET /` 503 (warning in the log, at most
/// one per 10 s), and uses Redis as soon as it is up, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_before_redis_and_uses_it_once_up() {
    let port = testkit::free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    // The default log filter: no line per failed request but the access log.
    let mut app = Webapp::start_with_env(&[], &[("SESSION_STORE", &url), ("RUST_LOG", "")]);
    assert!(app.lines_with("listening on")[0].contains(&format!("sessions={url}")));
    let res = client().head(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);

    let started = Instant::now();
    for _ in 0..50 {
        let res = client().get(app.url("/")).send().await.unwrap();
        assert_eq!(res.status(), 503);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "session store unavailable", "{body}");
    }
    app.wait_line("unavailable");
    let warnings = app.lines_with("unavailable").len() as u64;
    let allowed = 1 + started.elapsed().as_secs() / 10;
    assert!(
        (1..=allowed).contains(&warnings),
        "{warnings} warnings for 50 failures in {:?}",
        started.elapsed()
    );
    assert_eq!(
        app.lines_with("refused").len() as u64,
        warnings,
        "{:#?}",
        app.lines_with("refused")
    );

    let _redis = common::redis::RedisServer::start_on(port);
    eventually("a 200 with redis up", Duration::from_secs(20), async || {
        let res = client().get(app.url("/")).send().await.unwrap();
        if res.status() == 200 {
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["sessionViews"], 1);
            return Some(());
        }
        assert_eq!(res.status(), 503);
        None
    })
    .await;
    app.wait_line("answers again");
}
