//! Real parts for the integration tests: HAProxy and serf as child
//! processes (killed on drop, also when a test fails), tiny HTTP backends,
//! a bounded keep-alive load client, and polling helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub const HAPROXY: &str = "/usr/sbin/haproxy";
pub const SERF: &str = "/usr/bin/serf";

/// Fail (not skip) when a real part is missing, saying what to install.
pub fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package `{package}` (apt-get install {package})"
    );
}

/// A free port on 127.0.0.1 (TCP and UDP, as serf binds both), taken below
/// Linux's ephemeral range (32768+): a port the kernel hands out for
/// outgoing connections could be in use again by the time HAProxy or serf
/// binds it. A process-wide counter keeps tests of one binary apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919).wrapping_add(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos(),
    );
    for _ in 0..2000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + (seed.wrapping_add(n.wrapping_mul(17)) % 12000) as u16;
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free port found in 20000-31999 on 127.0.0.1");
}

/// Poll `f` every 50 ms until it returns Some, or panic after `deadline`.
pub async fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct ChildGuard {
    pub name: String,
    pub child: Option<Child>,
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> ChildGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        ChildGuard {
            name: name.into(),
            child: Some(child),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Send a signal (e.g. SIGINT for a graceful serf leave).
    pub fn signal(&self, sig: i32) {
        use nix::sys::signal::{kill, Signal};
        let sig = Signal::try_from(sig).expect("a valid signal number");
        let _ = kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// Wait (polling) for the process to exit; its status.
    pub async fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                start.elapsed() < deadline,
                "{} did not exit within {deadline:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// HAProxy on loopback with the crate's own template: frontend, stats and a
/// TCP admin socket on free 127.0.0.1 ports, a unix admin socket in `dir`.
pub struct Haproxy {
    pub guard: ChildGuard,
    pub dir: PathBuf,
    pub cfg: PathBuf,
    pub frontend: u16,
    pub stats: u16,
    pub admin_tcp: u16,
    pub admin_sock: PathBuf,
}

impl Haproxy {
    /// Template variables that put every listener on loopback.
    pub fn vars(
        dir: &Path,
        frontend: u16,
        stats: u16,
        admin_tcp: u16,
    ) -> serde_json::Map<String, serde_json::Value> {
        let v = serde_json::json!({
            "frontend_bind": format!("127.0.0.1:{frontend}"),
            "stats_bind": format!("127.0.0.1:{stats}"),
            "admin_tcp": format!("ipv4@127.0.0.1:{admin_tcp}"),
            "admin_socket": dir.join("admin.sock").display().to_string(),
        });
        v.as_object().unwrap().clone()
    }

    /// Start HAProxy from `cfg_text` (already rendered) in `dir`.
    pub async fn start(
        dir: &Path,
        cfg_text: &str,
        frontend: u16,
        stats: u16,
        admin_tcp: u16,
    ) -> Haproxy {
        require(HAPROXY, "haproxy");
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, cfg_text).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("haproxy.log"))
            .unwrap();
        let guard = ChildGuard::spawn(
            "haproxy",
            Command::new(HAPROXY)
                .arg("-f")
                .arg(&cfg)
                .arg("-db")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let h = Haproxy {
            guard,
            dir: dir.to_path_buf(),
            cfg,
            frontend,
            stats,
            admin_tcp,
            admin_sock: dir.join("admin.sock"),
        };
        let sock = h.admin_sock.clone();
        let mut h = h;
        let log_path = dir.join("haproxy.log");
        wait_for(
            "HAProxy's admin socket",
            Duration::from_secs(30),
            async || {
                if !h.guard.is_running() {
                    panic!(
                        "haproxy exited at start:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                cli(&sock, "show info")
                    .await
                    .ok()
                    .filter(|r| r.contains("Name: HAProxy"))
            },
        )
        .await;
        h
    }

    pub async fn cmd(&self, c: &str) -> String {
        cli(&self.admin_sock, c).await.unwrap()
    }

    /// name -> (addr:port, op_state, admin_state)
    pub async fn servers(&self) -> BTreeMap<String, (String, u8, u8)> {
        let r = self.cmd("show servers state nodes").await;
        let mut out = BTreeMap::new();
        for l in r.lines().skip(2) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 18 {
                out.insert(
                    f[3].to_string(),
                    (
                        format!("{}:{}", f[4], f[18]),
                        f[5].parse().unwrap(),
                        f[6].parse().unwrap(),
                    ),
                );
            }
        }
        out
    }

    /// Current sessions on a server of `nodes` (`show stat`'s scur).
    pub async fn sessions(&self, name: &str) -> u64 {
        let r = self.cmd("show stat").await;
        r.lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f.len() > 4 && f[0] == "nodes" && f[1] == name).then(|| f[4].parse().unwrap_or(0))
            })
            .unwrap_or(0)
    }

    /// name -> srv_id (a server removed and added again gets a new id).
    pub async fn ids(&self) -> BTreeMap<String, u32> {
        let r = self.cmd("show servers state nodes").await;
        r.lines()
            .skip(2)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 3).then(|| (f[3].to_string(), f[2].parse().unwrap()))
            })
            .collect()
    }

    /// srv_check_result of a server (0 unknown, 1 neutral, 2 failed,
    /// 3 passed, 4 conditionally passed), None when it does not exist.
    pub async fn check_result(&self, name: &str) -> Option<u8> {
        let r = self.cmd("show servers state nodes").await;
        r.lines().skip(2).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 11 && f[3] == name).then(|| f[11].parse().unwrap())
        })
    }

    /// Names of servers that are UP (op_state 2) and not in maint/drain.
    pub async fn up(&self) -> Vec<String> {
        self.servers()
            .await
            .into_iter()
            .filter(|(_, (_, op, adm))| *op == 2 && *adm == 0)
            .map(|(n, _)| n)
            .collect()
    }
}

/// One Runtime API command over the unix socket.
pub async fn cli(sock: &Path, c: &str) -> std::io::Result<String> {
    let mut s = tokio::net::UnixStream::connect(sock).await?;
    s.write_all(format!("{c}\n").as_bytes()).await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .map_err(|_| std::io::Error::other("timeout"))??;
    Ok(out)
}

/// A tiny keep-alive HTTP/1.1 server: `GET /` → 200 with `X-Backend: NAME`
/// and body NAME; `HEAD /` → 200 (HAProxy's check). Dropping it closes the
/// listener and every connection.
pub struct WebServer {
    pub name: String,
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl WebServer {
    pub async fn start(name: &str) -> WebServer {
        WebServer::serve(name, TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    /// Serve on a listener the caller bound (e.g. a port chosen earlier).
    pub fn serve(name: &str, l: TcpListener) -> WebServer {
        let port = l.local_addr().unwrap().port();
        let n = name.to_string();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((s, _)) = l.accept().await {
                conns.spawn(serve_conn(s, n.clone()));
                while conns.try_join_next().is_some() {}
            }
        });
        WebServer {
            name: name.into(),
            port,
            task,
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        // Aborting the accept task drops the JoinSet, which aborts every
        // connection task.
        self.task.abort();
    }
}

async fn serve_conn(s: TcpStream, name: String) {
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let head = line.starts_with("HEAD ");
        // `GET /slow`: a long request, to have one in flight on purpose.
        let slow = line.starts_with("GET /slow ");
        // Skip headers; requests here carry no body.
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
        }
        if slow {
            tokio::time::sleep(SLOW).await;
        }
        let body = if head { String::new() } else { name.clone() };
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Backend: {name}\r\n\r\n{body}",
            name.len()
        );
        if r.get_mut().write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// How long `GET /slow` takes.
pub const SLOW: Duration = Duration::from_secs(6);

/// One `GET path` on a new connection to 127.0.0.1:port: Ok(backend name)
/// on a 200.
pub async fn get(port: u16, path: &str) -> Result<String, String> {
    let mut conn = None;
    one_request_to(&mut conn, port, path).await
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

/// `conns` keep-alive client tasks against 127.0.0.1:port, one request
/// every `pace` per task, each request one attempt (no retry), until
/// `stop` or `max` elapsed or `max_requests` per task.
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
                let stop = stop.clone();
                let report = report.clone();
                tokio::spawn(async move {
                    let start = Instant::now();
                    let mut conn: Option<BufReader<TcpStream>> = None;
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) && start.elapsed() < max && n < max_requests
                    {
                        n += 1;
                        let res = one_request(&mut conn, port).await;
                        if res.is_err() {
                            conn = None;
                        }
                        {
                            let mut r = report.lock().unwrap();
                            match res {
                                Ok(backend) => {
                                    r.ok += 1;
                                    let now = Instant::now();
                                    r.first.entry(backend.clone()).or_insert(now);
                                    r.last.insert(backend.clone(), now);
                                    *r.by_backend.entry(backend).or_default() += 1;
                                }
                                Err(e) => {
                                    r.failed += 1;
                                    *r.failures.entry(e).or_default() += 1;
                                }
                            }
                        }
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

    pub fn snapshot(&self) -> LoadReport {
        self.report.lock().unwrap().clone()
    }

    pub async fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        let r = self.report.lock().unwrap().clone();
        r
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

/// One GET / on the kept-alive connection (opened when there is none);
/// Ok(backend name) on a 200, Err(kind) otherwise.
async fn one_request(conn: &mut Option<BufReader<TcpStream>>, port: u16) -> Result<String, String> {
    one_request_to(conn, port, "/").await
}

async fn one_request_to(
    conn: &mut Option<BufReader<TcpStream>>,
    port: u16,
    path: &str,
) -> Result<String, String> {
    if conn.is_none() {
        let s = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        *conn = Some(BufReader::new(s));
    }
    let c = conn.as_mut().unwrap();
    let fut = async {
        c.get_mut()
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut status = String::new();
        if c.read_line(&mut status)
            .await
            .map_err(|e| format!("read: {e}"))?
            == 0
        {
            return Err("eof before response".to_string());
        }
        let mut len = 0usize;
        let mut backend = String::new();
        let mut close = false;
        loop {
            let mut h = String::new();
            if c.read_line(&mut h)
                .await
                .map_err(|e| format!("read: {e}"))?
                == 0
            {
                return Err("eof in headers".into());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "x-backend" => backend = v.trim().to_string(),
                "connection" => close = v.trim().eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut body = vec![0; len];
        c.read_exact(&mut body)
            .await
            .map_err(|e| format!("body: {e}"))?;
        let code = status.split_whitespace().nth(1).unwrap_or("").to_string();
        Ok((code, backend, close))
    };
    let (code, backend, close) = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| "timeout".to_string())??;
    if close {
        *conn = None;
    }
    if code == "200" {
        Ok(backend)
    } else {
        Err(format!("status {code}"))
    }
}

/// A real `serf agent` on 127.0.0.1 with its own gossip and RPC ports.
pub struct SerfAgent {
    pub guard: ChildGuard,
    pub name: String,
    pub bind: u16,
    pub rpc: u16,
}

impl SerfAgent {
    /// `tags` as ("role", "backend"); `join`: the bind port of a member.
    pub async fn start(
        name: &str,
        tags: &[(&str, &str)],
        join: Option<u16>,
        log: &Path,
    ) -> SerfAgent {
        SerfAgent::start_on(name, tags, join, log, free_port()).await
    }

    /// Same, with a given RPC port (to restart an agent where a client
    /// expects it).
    pub async fn start_on(
        name: &str,
        tags: &[(&str, &str)],
        join: Option<u16>,
        log: &Path,
        rpc: u16,
    ) -> SerfAgent {
        require(SERF, "serf");
        let bind = free_port();
        let mut cmd = Command::new(SERF);
        cmd.arg("agent")
            .arg(format!("-node={name}"))
            .arg(format!("-bind=127.0.0.1:{bind}"))
            .arg(format!("-rpc-addr=127.0.0.1:{rpc}"))
            .arg("-log-level=warn");
        for (k, v) in tags {
            cmd.arg(format!("-tag={k}={v}"));
        }
        if let Some(j) = join {
            cmd.arg(format!("-join=127.0.0.1:{j}"));
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let guard = ChildGuard::spawn(&format!("serf agent {name}"), &mut cmd);
        let agent = SerfAgent {
            guard,
            name: name.into(),
            bind,
            rpc,
        };
        wait_for(
            &format!("serf agent {name}'s RPC port"),
            Duration::from_secs(30),
            async || {
                TcpStream::connect(("127.0.0.1", rpc))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        agent
    }
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
    /// ms from `since` to the last answer from `backend` (0: none after).
    pub fn leave_ms(&self, backend: &str, since: Instant) -> Option<u128> {
        self.last
            .get(backend)
            .map(|t| t.saturating_duration_since(since).as_millis())
    }
}
