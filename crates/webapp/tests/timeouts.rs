//! Connection timeouts, seen by raw TCP clients: a request head sent too
//! slowly (slowloris) and a kept-alive connection left idle are closed by
//! the server; a request that is slow to answer, and a client sending
//! requests back to back, are not cut.
//!
//! No timing is asserted: only that the server closes a connection before a
//! deadline far above the configured timeout, or that answers arrive.

mod common;

use std::time::Duration;

use common::TestServer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Far above every timeout configured here: a connection still open this
/// long after its timeout started was not going to be closed.
const DEADLINE: Duration = Duration::from_secs(20);

/// A raw HTTP/1.1 connection to the test server.
struct Conn(BufReader<TcpStream>);

impl Conn {
    async fn open(server: &TestServer) -> Self {
        Conn(BufReader::new(
            TcpStream::connect(server.addr).await.unwrap(),
        ))
    }

    async fn send(&mut self, bytes: &str) -> std::io::Result<()> {
        self.0.get_mut().write_all(bytes.as_bytes()).await
    }

    /// Reads one response (head, then its `content-length` body); returns
    /// its status and body.
    async fn response(&mut self) -> (u16, String) {
        let mut line = String::new();
        if self.0.read_line(&mut line).await.unwrap() == 0 {
            panic!("the server closed the connection instead of answering");
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {line:?}"));
        let mut length = 0;
        loop {
            line.clear();
            self.0.read_line(&mut line).await.unwrap();
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.0.read_exact(&mut body).await.unwrap();
        (status, String::from_utf8(body).unwrap())
    }

    /// Waits at most `within` for the server to close the connection (end
    /// of stream or reset); true if it did. Bytes sent meanwhile (an error
    /// response) are skipped.
    async fn closed_within(&mut self, within: Duration) -> bool {
        let end = Instant::now() + within;
        let mut buf = [0; 1024];
        loop {
            match tokio::time::timeout_at(end, self.0.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }
}

const GET: &str = "GET / HTTP/1.1\r\nhost: test\r\n\r\n";

/// A client that sends `GET / HTTP/1.1`, then one header line every 500 ms,
/// never ending the head: each line comes well within the 1.5 s header
/// timeout, so only a deadline on the whole head can close it. Checked on a
/// fresh connection and on a kept-alive one after an answered request.
#[tokio::test]
async fn a_slowloris_is_disconnected_by_the_header_timeout() {
    let server = TestServer::start(&[
        "--header-timeout-ms",
        "1500",
        "--keep-alive-timeout-ms",
        "60000",
    ]);
    for after_a_request in [false, true] {
        let mut conn = Conn::open(&server).await;
        if after_a_request {
            conn.send(GET).await.unwrap();
            assert_eq!(conn.response().await.0, 200);
        }
        conn.send("GET / HTTP/1.1\r\n").await.unwrap();
        let started = Instant::now();
        let mut lines = 0;
        let closed = loop {
            if started.elapsed() > DEADLINE {
                break false;
            }
            // The pacing: half a second for the server to close, then the
            // next line (a write refused by a reset also means closed).
            if conn.closed_within(Duration::from_millis(500)).await {
                break true;
            }
            if conn.send(&format!("x-slow-{lines}: 1\r\n")).await.is_err() {
                break true;
            }
            lines += 1;
        };
        assert!(
            closed,
            "after_a_request={after_a_request}: still open after {:?} and {lines} header lines",
            started.elapsed()
        );
    }
}

/// One request answered, then nothing: the server closes the connection
/// once the keep-alive timeout has run out. The header timeout also runs
/// while a kept-alive connection waits for its next request, so it closes
/// an idle connection too when it is the shorter one.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    for args in [
        [
            "--keep-alive-timeout-ms",
            "1000",
            "--header-timeout-ms",
            "60000",
        ],
        [
            "--keep-alive-timeout-ms",
            "60000",
            "--header-timeout-ms",
            "1000",
        ],
    ] {
        let server = TestServer::start(&args);
        let mut conn = Conn::open(&server).await;
        conn.send(GET).await.unwrap();
        let (status, body) = conn.response().await;
        assert_eq!(status, 200, "{body}");
        assert!(
            conn.closed_within(DEADLINE).await,
            "{args:?}: an idle connection still open after {DEADLINE:?}"
        );
    }
}

/// With both timeouts at 1.5 s, on one kept-alive connection, each request
/// sent as soon as the previous answer is read: `POST /delay` 3 s, a `GET /`
/// that is answered after those 3 s (neither timer cuts a request being
/// handled), `POST /delay` 0, then 50 `GET /` back to back.
#[tokio::test]
async fn slow_answers_and_back_to_back_requests_are_not_cut() {
    let server = TestServer::start(&[
        "--header-timeout-ms",
        "1500",
        "--keep-alive-timeout-ms",
        "1500",
    ]);
    let mut conn = Conn::open(&server).await;
    let mut ask = async |request: &str, what: &str| {
        conn.send(request).await.unwrap();
        let (status, body) = timeout(DEADLINE, conn.response())
            .await
            .unwrap_or_else(|_| panic!("{what}: not answered"));
        assert_eq!(status, 200, "{what}: {body}");
        body
    };
    ask(&post_delay(3000), "POST /delay 3000").await;
    let body = ask(GET, "the delayed GET /").await;
    assert!(body.contains("\"sessionViews\":1"), "{body}");
    ask(&post_delay(0), "POST /delay 0").await;
    for i in 0..50 {
        ask(GET, &format!("GET / number {i}")).await;
    }
}

fn post_delay(ms: u64) -> String {
    let body = format!(r#"{{"delay": {ms}}}"#);
    format!(
        "POST /delay HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The keep-alive timeout is for idleness: a next request whose head
/// trickles in, a header line every 250 ms for 4 s (twice the 2 s
/// keep-alive timeout), is answered (within the header timeout, 60 s here).
#[tokio::test]
async fn a_request_trickling_in_after_a_response_is_not_idle() {
    let server = TestServer::start(&[
        "--header-timeout-ms",
        "60000",
        "--keep-alive-timeout-ms",
        "2000",
    ]);
    let mut conn = Conn::open(&server).await;
    conn.send(GET).await.unwrap();
    assert_eq!(conn.response().await.0, 200);
    conn.send("GET / HTTP/1.1\r\nhost: test\r\n").await.unwrap();
    for i in 0..16 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        conn.send(&format!("x-slow-{i}: 1\r\n")).await.unwrap();
    }
    conn.send("\r\n").await.unwrap();
    let (status, body) = timeout(DEADLINE, conn.response())
        .await
        .expect("the trickled request is answered");
    assert_eq!(status, 200, "{body}");
}
