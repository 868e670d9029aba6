//! A real `redis-server` (Debian's) on 127.0.0.1, one per test, killed when
//! dropped. Without the binary the tests fail: they never skip.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::ChildGuard;
use crate::wait::eventually_blocking;

const MISSING: &str = "redis-server is not installed: these tests run Debian's redis-server \
     on 127.0.0.1 (apt-get install redis-server; `cargo xtask test` installs it)";

/// How long a start may take, and how long a port just freed by a kill
/// may stay taken.
const START: Duration = Duration::from_secs(20);

pub struct RedisServer {
    pub port: u16,
    process: ChildGuard,
}

impl RedisServer {
    /// A fresh (empty) server on a free port, answering PING.
    pub fn start() -> Self {
        // The port is free when picked but could be taken before the server
        // binds it (tests run in parallel): then try another.
        for _ in 0..5 {
            if let Some(server) = Self::try_start_on(crate::free_port()) {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// A fresh (empty) server on `port`, answering PING; retried while the
    /// port is still held (right after a kill).
    pub fn start_on(port: u16) -> Self {
        eventually_blocking(
            &format!("redis-server to start on port {port}"),
            START,
            || Self::try_start_on(port),
        )
    }

    fn try_start_on(port: u16) -> Option<Self> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = match ChildGuard::try_spawn("redis-server", &mut cmd) {
            Ok(process) => process,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{MISSING}"),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        let mut server = RedisServer { port, process };
        eventually_blocking(
            &format!("redis-server on port {port} to answer PING or exit"),
            START,
            || {
                if server.answers() {
                    Some(true)
                } else {
                    // Exited: the port was taken.
                    server.process.exit_status().map(|_| false)
                }
            },
        )
        .then_some(server)
    }

    /// Does it answer PING (inline command, RESP reply)?
    fn answers(&self) -> bool {
        let addr = ([127, 0, 0, 1], self.port).into();
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reply = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok()
            && s.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits for it.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts an empty server again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        *self = Self::start_on(self.port);
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.process.pause();
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.process.resume();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_restarts_on_its_port() {
        let mut r = RedisServer::start();
        assert!(r.answers());
        let port = r.port;
        r.restart();
        assert_eq!(r.port, port);
        assert!(r.answers());
        r.kill();
        assert!(!r.answers());
    }
}
