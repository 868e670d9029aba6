//! HTTP/1.1 on loopback without a framework: tiny backends that say who
//! they are, one-request clients, and a keep-alive load generator that
//! counts every answer by backend.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How long `GET /slow` takes: a request kept in flight on purpose.
pub const SLOW: Duration = Duration::from_secs(6);

/// How long a client waits for a whole answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a [`WebServer`] does with a `GET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// 200, body and `X-Backend` the server's name.
    Answer,
    /// Read, then the connection closed without a byte (a web app killed
    /// after it counted the visit). `HEAD` (HAProxy's check) still → 200.
    DropGets,
    /// `GET` → 503 with the web app's `{"error":"session store
    /// unavailable"}` (a web app cut off from its session store). `HEAD`
    /// (HAProxy's check, which needs no store) still → 200.
    StoreDown,
}

/// A keep-alive HTTP/1.1 server on 127.0.0.1: `GET` → 200 with body and
/// `X-Backend` its name (`GET /slow` after [`SLOW`]), `HEAD` → 200 without
/// a body. Every answer also carries `X-Seen-Request-Id` (the X-Request-Id
/// values it was sent, `|`-joined) and `X-Seen-Cookie`. Dropping it closes
/// the listener and every connection.
pub struct WebServer {
    pub name: String,
    pub port: u16,
    /// X-Request-Id values of the `GET`s it received (answered or not).
    ids: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebServer {
    /// Answering on a free port.
    pub async fn start(name: &str) -> WebServer {
        WebServer::start_as(name, Behaviour::Answer).await
    }

    pub async fn start_as(name: &str, behaviour: Behaviour) -> WebServer {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        WebServer::serve_as(name, l, behaviour)
    }

    /// Answering on a listener the caller bound (e.g. a port chosen earlier).
    pub fn serve(name: &str, l: TcpListener) -> WebServer {
        WebServer::serve_as(name, l, Behaviour::Answer)
    }

    fn serve_as(name: &str, l: TcpListener, behaviour: Behaviour) -> WebServer {
        let port = l.local_addr().unwrap().port();
        let ids = Arc::new(Mutex::new(Vec::new()));
        let (n, seen) = (name.to_string(), ids.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((s, _)) = l.accept().await {
                conns.spawn(serve_conn(s, n.clone(), behaviour, seen.clone()));
                while conns.try_join_next().is_some() {}
            }
        });
        WebServer {
            name: name.into(),
            port,
            ids,
            task,
        }
    }

    /// The X-Request-Id values of the `GET`s received so far.
    pub fn ids(&self) -> Vec<String> {
        self.ids.lock().unwrap().clone()
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        // The accept task owns the JoinSet: aborting it aborts every
        // connection task too.
        self.task.abort();
    }
}

async fn serve_conn(
    s: TcpStream,
    name: String,
    behaviour: Behaviour,
    ids: Arc<Mutex<Vec<String>>>,
) {
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let get = line.starts_with("GET ");
        let slow = line.starts_with("GET /slow ");
        // Requests here carry no body: headers only.
        let (mut seen, mut cookie) = (Vec::new(), String::new());
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            if k.eq_ignore_ascii_case("x-request-id") {
                seen.push(v.trim().to_string());
            } else if k.eq_ignore_ascii_case("cookie") {
                cookie = v.trim().to_string();
            }
        }
        if get {
            ids.lock().unwrap().extend(seen.iter().cloned());
            if behaviour == Behaviour::DropGets {
                return;
            }
        }
        if slow {
            tokio::time::sleep(SLOW).await;
        }
        let store_down = get && behaviour == Behaviour::StoreDown;
        let (status, kind, body) = if store_down {
            (
                "503 Service Unavailable",
                "application/json",
                r#"{"error":"session store unavailable","detail":"visit: timed out"}"#,
            )
        } else if get {
            ("200 OK", "text/plain", name.as_str())
        } else {
            ("200 OK", "text/plain", "")
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nX-Backend: {name}\r\nX-Seen-Request-Id: {}\r\nX-Seen-Cookie: {cookie}\r\n\r\n{body}",
            if get { body.len() } else { name.len() },
            seen.join("|")
        );
        if r.get_mut().write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// One answer: status, headers in order (repeated ones repeated), body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (any case).
    pub fn header<'a>(&'a self, name: &str) -> Option<&'a str> {
        self.all(name).first().copied()
    }

    /// Every value of header `name` (any case), in order.
    pub fn all<'a>(&'a self, name: &str) -> Vec<&'a str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A client connection, opened on first use and kept alive between
/// requests unless the server closes it or an exchange fails.
pub struct Conn {
    port: u16,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    /// To 127.0.0.1:`port`; nothing is connected yet.
    pub fn new(port: u16) -> Conn {
        Conn { port, stream: None }
    }

    /// Drops the connection: the next request opens a new one.
    pub fn close(&mut self) {
        self.stream = None;
    }

    /// `GET path` with `headers` (`Name: value` lines): the answer, whatever
    /// its status, or what went wrong (connect, write, read, timeout).
    pub async fn get(&mut self, path: &str, headers: &[String]) -> Result<Response, String> {
        let res = tokio::time::timeout(ANSWER_TIMEOUT, self.exchange(path, headers))
            .await
            .unwrap_or_else(|_| Err("timeout".to_string()));
        match &res {
            Ok(r)
                if r.all("connection")
                    .iter()
                    .any(|v| v.eq_ignore_ascii_case("close")) =>
            {
                self.stream = None
            }
            Ok(_) => {}
            Err(_) => self.stream = None,
        }
        res
    }

    async fn exchange(&mut self, path: &str, headers: &[String]) -> Result<Response, String> {
        if self.stream.is_none() {
            let s = TcpStream::connect(("127.0.0.1", self.port))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            self.stream = Some(BufReader::new(s));
        }
        let c = self.stream.as_mut().unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n");
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        c.get_mut()
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let read = |e: std::io::Error| format!("read: {e}");
        let mut status = String::new();
        if c.read_line(&mut status).await.map_err(read)? == 0 {
            return Err("eof before response".into());
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if c.read_line(&mut h).await.map_err(read)? == 0 {
                return Err("eof in headers".into());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            headers.push((k.to_string(), v.trim().to_string()));
        }
        let mut res = Response {
            status: status
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            headers,
            body: Vec::new(),
        };
        match res.header("content-length") {
            Some(len) => {
                res.body = vec![0; len.parse().unwrap_or(0)];
                c.read_exact(&mut res.body)
                    .await
                    .map_err(|e| format!("body: {e}"))?;
            }
            // No length: the body runs to the end of the connection.
            None => {
                c.read_to_end(&mut res.body)
                    .await
                    .map_err(|e| format!("body: {e}"))?;
                self.stream = None;
            }
        }
        Ok(res)
    }
}

/// One `GET path` on a new connection to 127.0.0.1:`port`: Ok(the
/// backend's name, from `X-Backend`) on a 200, Err(what) otherwise.
pub async fn get(port: u16, path: &str) -> Result<String, String> {
    backend_of(Conn::new(port).get(path, &[]).await)
}

fn backend_of(res: Result<Response, String>) -> Result<String, String> {
    let res = res?;
    if res.status == 200 {
        Ok(res.header("x-backend").unwrap_or_default().to_string())
    } else {
        Err(format!("status {}", res.status))
    }
}

/// Counts of a load run.
#[derive(Default, Clone)]
pub struct LoadReport {
    pub ok: u64,
    pub failed: u64,
    /// Backend name (from X-Backend) -> answers.
    pub by_backend: BTreeMap<String, u64>,
    /// status or error -> count, for failures.
    pub failures: BTreeMap<String, u64>,
    /// Backend name -> when its first / last answer arrived (to report
    /// join and leave latencies; never asserted on).
    pub first: BTreeMap<String, Instant>,
    pub last: BTreeMap<String, Instant>,
}

impl std::fmt::Debug for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ok {} failed {} by backend {:?} failures {:?}",
            self.ok, self.failed, self.by_backend, self.failures
        )
    }
}

impl LoadReport {
    /// ms from `since` to the first answer from `backend`.
    pub fn join_ms(&self, backend: &str, since: Instant) -> Option<u128> {
        self.first
            .get(backend)
            .map(|t| t.saturating_duration_since(since).as_millis())
    }

    /// ms from `since` to the last answer from `backend`.
    pub fn leave_ms(&self, backend: &str, since: Instant) -> Option<u128> {
        self.last
            .get(backend)
            .map(|t| t.saturating_duration_since(since).as_millis())
    }

    fn count(&mut self, res: Result<String, String>) {
        match res {
            Ok(backend) => {
                self.ok += 1;
                let now = Instant::now();
                self.first.entry(backend.clone()).or_insert(now);
                self.last.insert(backend.clone(), now);
                *self.by_backend.entry(backend).or_default() += 1;
            }
            Err(e) => {
                self.failed += 1;
                *self.failures.entry(e).or_default() += 1;
            }
        }
    }
}

/// `conns` keep-alive client tasks against 127.0.0.1:`port`, each sending
/// `GET /` every `pace`, one attempt per request (no retry), until
/// stopped, `max` has passed or it sent `max_requests`.
pub struct Load {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LoadReport>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(
        port: u16,
        conns: usize,
        pace: Duration,
        max: Duration,
        max_requests: u64,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let tasks = (0..conns)
            .map(|_| {
                let (stop, report) = (stop.clone(), report.clone());
                tokio::spawn(async move {
                    let start = Instant::now();
                    let mut conn = Conn::new(port);
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) && start.elapsed() < max && n < max_requests
                    {
                        n += 1;
                        let res = backend_of(conn.get("/", &[]).await);
                        if res.is_err() {
                            // A new connection after any failure, a 503 too.
                            conn.close();
                        }
                        report.lock().unwrap().count(res);
                        tokio::time::sleep(pace).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            report,
            tasks,
        }
    }

    /// The counts so far.
    pub fn snapshot(&self) -> LoadReport {
        self.report.lock().unwrap().clone()
    }

    /// Stops every client after its current request; the final counts.
    pub async fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        self.snapshot()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_backend_answers_heads_gets_and_counts_request_ids() {
        let w = WebServer::start("w1").await;
        assert_eq!(get(w.port, "/").await, Ok("w1".to_string()));
        let mut c = Conn::new(w.port);
        let r = c
            .get("/", &["X-Request-Id: r-1".into(), "Cookie: a=b".into()])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"w1");
        assert_eq!(r.header("x-seen-request-id"), Some("r-1"));
        assert_eq!(r.header("X-Seen-Cookie"), Some("a=b"));
        // The same connection again.
        assert_eq!(c.get("/", &[]).await.unwrap().status, 200);
        assert_eq!(w.ids(), ["r-1"]);

        let load = Load::start(w.port, 2, Duration::from_millis(1), SLOW, 5);
        crate::eventually("10 answers", crate::DEADLINE, async || {
            (load.snapshot().ok == 10).then_some(())
        })
        .await;
        let report = load.finish().await;
        assert_eq!((report.ok, report.failed), (10, 0), "{report:?}");
        assert_eq!(report.by_backend["w1"], 10);
    }

    #[tokio::test]
    async fn a_dropping_backend_is_an_error() {
        let w = WebServer::start_as("d", Behaviour::DropGets).await;
        let err = get(w.port, "/").await.unwrap_err();
        assert!(err.starts_with("eof") || err.starts_with("read"), "{err}");
        assert!(w.ids().is_empty());
    }
}
