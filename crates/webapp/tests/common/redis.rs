//! A real `redis-server` (Debian's) on 127.0.0.1, one per test, killed when
//! the guard is dropped. Without the binary the tests fail: they never skip.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const MISSING: &str = "redis-server is not installed: the Redis session store tests run \
     Debian's redis-server on 127.0.0.1 (apt-get install redis-server; `cargo xtask test` \
     installs it)";

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// A fresh server on a free port, answering PING.
    pub fn start() -> Self {
        // The port is free when picked but could be taken before the server
        // binds it (tests run in parallel): then try another.
        for _ in 0..5 {
            if let Some(server) = Self::try_start_on(free_port()) {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// A fresh (empty) server on `port`, answering PING.
    pub fn start_on(port: u16) -> Self {
        // Right after a kill the port may still be held for a moment.
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(server) = Self::try_start_on(port) {
                return server;
            }
            assert!(
                Instant::now() < end,
                "redis-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_start_on(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{MISSING}"),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        let mut server = RedisServer {
            port,
            child: Some(child),
        };
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if server.answers() {
                return Some(server);
            }
            let child = server.child.as_mut().unwrap();
            if child.try_wait().unwrap().is_some() {
                // Exited: the port was taken.
                server.child = None;
                return None;
            }
            assert!(
                Instant::now() < end,
                "redis-server on port {port} does not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut conn).is_ok()
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A plain connection, to look at the keys.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("a connection to the test redis-server")
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts an empty server again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let again = Self::start_on(self.port);
        *self = again;
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, sig: Signal) {
        let child = self.child.as_ref().expect("a running redis-server");
        kill(Pid::from_raw(child.id() as i32), sig).unwrap();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `EXISTS key`.
pub fn exists(conn: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query::<i64>(conn).unwrap() == 1
}
