//! Test support shared by the rpc/cli/handler tests: free loopback ports,
//! temp dirs, and a real `serf agent` process killed on drop.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const SERF: &str = "/usr/bin/serf";
pub const DEADLINE: Duration = Duration::from_secs(45);

/// A loopback port free for both TCP and UDP right now.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port found for TCP and UDP");
}

pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "gossip-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

pub fn require_serf() {
    assert!(
        Path::new(SERF).exists(),
        "{SERF} not found: install Debian's serf package (apt-get install serf)"
    );
}

/// A real `serf agent` on loopback, killed when dropped.
pub struct SerfAgent {
    pub name: String,
    pub bind: SocketAddr,
    pub rpc: SocketAddr,
    child: Child,
    pub log: PathBuf,
    pub dir: PathBuf,
}

impl SerfAgent {
    /// Starts `serf agent` with these extra flags (`{dir}` in them stands
    /// for the agent's temp dir) and waits until its RPC port accepts
    /// connections.
    pub fn start(name: &str, extra: &[&str]) -> SerfAgent {
        require_serf();
        let bind: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let rpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let dir = temp_dir(&format!("serf-{name}"));
        let log = dir.join("agent.log");
        let extra: Vec<String> = extra
            .iter()
            .map(|a| a.replace("{dir}", dir.to_str().unwrap()))
            .collect();
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(SERF)
            .arg("agent")
            .arg(format!("-node={name}"))
            .arg(format!("-bind={bind}"))
            .arg(format!("-rpc-addr={rpc}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn serf agent");
        let mut agent = SerfAgent {
            name: name.to_string(),
            bind,
            rpc,
            child,
            log,
            dir: dir.clone(),
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(rpc).is_err() {
            assert!(
                !agent.exited(),
                "serf agent {name} exited; log:\n{}",
                agent.log_text()
            );
            assert!(
                start.elapsed() < DEADLINE,
                "serf agent {name} did not open RPC on {rpc}; log:\n{}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Has the process exited (e.g. after an RPC `leave`)?
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for SerfAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Some`, failing with `what` after the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
