//! Our `gossip agent` binary as a child process for the tests that run it,
//! and the real `serf` command line beside it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use testkit::{
    eventually_blocking_explained, free_port, temp_dir, ChildGuard, Signal, TempDir, DEADLINE, SERF,
};

pub const GOSSIP: &str = env!("CARGO_BIN_EXE_gossip");

/// Our agent process, killed on drop.
pub struct GossipAgent {
    pub process: ChildGuard,
    pub rpc: SocketAddr,
    pub bind: SocketAddr,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// The temp dir of [`GossipAgent::start_in_temp`], removed after the
    /// process is killed (fields drop in order).
    scratch: Option<TempDir>,
}

impl GossipAgent {
    /// Starts our agent on fresh ports and waits until it says it is
    /// running and its RPC port answers. A port another process took
    /// between our check and the agent's bind is not the agent: an agent
    /// that stops because its address is in use is started again on other
    /// ports (a connect alone could reach whoever holds the port).
    pub fn start(name: &str, dir: &Path, extra: &[String]) -> GossipAgent {
        for attempt in 1.. {
            match GossipAgent::try_start(name, dir, extra) {
                Ok(agent) => return agent,
                Err(logs) if attempt < 3 && logs.contains("in use") => {
                    eprintln!("gossip agent {name}: address in use, other ports:\n{logs}");
                }
                Err(logs) => panic!("gossip agent {name} exited:\n{logs}"),
            }
        }
        unreachable!()
    }

    fn try_start(name: &str, dir: &Path, extra: &[String]) -> Result<GossipAgent, String> {
        let bind = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let rpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let process = ChildGuard::spawn(
            &format!("gossip agent {name}"),
            Command::new(GOSSIP)
                .arg("agent")
                .arg(format!("-node={name}"))
                .arg(format!("--bind={bind}"))
                .args(["-rpc-addr", &rpc.to_string()])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&stdout).unwrap())
                .stderr(std::fs::File::create(&stderr).unwrap()),
        );
        let mut agent = GossipAgent {
            process,
            rpc,
            bind,
            stdout,
            stderr,
            scratch: None,
        };
        let logs = agent.log_paths();
        let started =
            eventually_blocking_explained(&format!("RPC on {rpc}"), DEADLINE, logs, || {
                if agent.process.exit_status().is_some() {
                    return Some(false);
                }
                let running = std::fs::read_to_string(&agent.stdout)
                    .is_ok_and(|t| t.contains("==> Serf agent running!"));
                (running && std::net::TcpStream::connect(rpc).is_ok()).then_some(true)
            });
        if started {
            Ok(agent)
        } else {
            Err(agent.logs())
        }
    }

    /// [`GossipAgent::start`] with its output in a temp dir of its own.
    pub fn start_in_temp(name: &str, extra: &[String]) -> GossipAgent {
        let dir = temp_dir(&format!("gossip-agent-{name}"));
        let mut agent = GossipAgent::start(name, dir.path(), extra);
        agent.scratch = Some(dir);
        agent
    }

    /// Its output so far, read from its files by a closure that does not
    /// borrow the agent.
    pub fn log_paths(&self) -> impl Fn() -> String {
        let (out, err) = (self.stdout.clone(), self.stderr.clone());
        move || {
            format!(
                "stdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&out).unwrap_or_default(),
                std::fs::read_to_string(&err).unwrap_or_default()
            )
        }
    }

    pub fn logs(&self) -> String {
        self.log_paths()()
    }

    pub fn signal(&self, sig: Signal) {
        self.process.signal(sig);
    }

    pub fn wait_exit(&mut self) -> Option<i32> {
        let logs = self.log_paths();
        eventually_blocking_explained("the agent to exit", DEADLINE, logs, || {
            self.process.exit_status()
        })
        .code()
    }
}

/// The real `serf` command line with `args` (against any agent's RPC).
pub fn serf(args: &[&str]) -> Output {
    Command::new(SERF).args(args).output().expect("run serf")
}

/// The serf CLI's stdout, as text.
pub fn serf_stdout(args: &[&str]) -> String {
    String::from_utf8_lossy(&serf(args).stdout).into_owned()
}

/// Polls `f` (blocking) until it returns Some; `logs` go with a timeout.
pub fn poll<T>(what: &str, logs: impl Fn() -> String, f: impl FnMut() -> Option<T>) -> T {
    eventually_blocking_explained(what, DEADLINE, logs, f)
}
