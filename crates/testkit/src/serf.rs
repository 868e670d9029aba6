//! The real `serf agent` (Debian's serf 0.9.4) on loopback, with its own
//! gossip and RPC ports and its own temp dir, killed when dropped.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::process::ChildGuard;
use crate::wait::{eventually, eventually_blocking_explained, DEADLINE};

pub const SERF: &str = "/usr/bin/serf";

/// Set to see every agent's log after the test, not only a failed one's.
const SHOW_LOGS: &str = "GOSSIP_SHOW_SERF_LOGS";

/// How to start one agent: `SerfAgent::builder(name)`, flags, then
/// [`start`](SerfAgentBuilder::start) (waits until its RPC port accepts).
pub struct SerfAgentBuilder {
    name: String,
    dir: TempDir,
    args: Vec<String>,
    bind_port: Option<u16>,
    rpc_port: Option<u16>,
    log_file: Option<PathBuf>,
}

impl SerfAgentBuilder {
    /// The agent's own temp dir, there before it starts (for handler
    /// scripts, config files; its log is `serf.log` in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `-tag=KEY=VALUE`.
    pub fn tag(self, key: &str, value: &str) -> Self {
        self.arg(format!("-tag={key}={value}"))
    }

    pub fn tags(self, tags: &[(&str, &str)]) -> Self {
        tags.iter().fold(self, |b, (k, v)| b.tag(k, v))
    }

    /// `-join=ADDR` at start (serf exits when the join fails).
    pub fn join(self, addr: impl Display) -> Self {
        self.arg(format!("-join={addr}"))
    }

    /// `-encrypt=KEY` (base64).
    pub fn encrypt(self, key: &str) -> Self {
        self.arg(format!("-encrypt={key}"))
    }

    /// `-event-handler=SPEC` (`[filter=]command`).
    pub fn event_handler(self, spec: &str) -> Self {
        self.arg(format!("-event-handler={spec}"))
    }

    /// `-log-level=LEVEL` (serf's default: info).
    pub fn log_level(self, level: &str) -> Self {
        self.arg(format!("-log-level={level}"))
    }

    /// Any other flag of `serf agent`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args(self, args: &[&str]) -> Self {
        args.iter().fold(self, |b, a| b.arg(*a))
    }

    /// Gossip on this port (default: a free one).
    pub fn bind_port(mut self, port: u16) -> Self {
        self.bind_port = Some(port);
        self
    }

    /// RPC on this port (default: a free one), e.g. to restart an agent
    /// where a client expects it.
    pub fn rpc_port(mut self, port: u16) -> Self {
        self.rpc_port = Some(port);
        self
    }

    /// Append the log to `path` (several agents may share one file)
    /// instead of `serf.log` in the agent's dir.
    pub fn log_file(mut self, path: &Path) -> Self {
        self.log_file = Some(path.to_path_buf());
        self
    }

    /// Starts the process without waiting for anything.
    pub fn spawn(self) -> SerfAgent {
        crate::require(SERF, "serf");
        let bind = loopback(self.bind_port.unwrap_or_else(crate::free_port));
        let rpc = loopback(self.rpc_port.unwrap_or_else(crate::free_port));
        let own_log = self.log_file.is_none();
        let log = self
            .log_file
            .unwrap_or_else(|| self.dir.path().join("serf.log"));
        let (process, log_start) = launch(&self.name, bind, rpc, &self.args, &log);
        SerfAgent {
            process,
            name: self.name,
            bind,
            rpc,
            log,
            log_start,
            own_log,
            args: self.args,
            ports_picked: self.bind_port.is_none() && self.rpc_port.is_none(),
            dir: self.dir,
        }
    }

    /// Starts the agent and waits until it logs that it runs and its RPC
    /// port accepts connections (a connect alone could reach another
    /// process that took the port); panics with its log if it exits first.
    /// An agent on ports picked here that stops because another process
    /// took one of them (between the check and serf's bind) is started
    /// again on other ports, twice at most.
    pub async fn start(self) -> SerfAgent {
        let mut agent = self.spawn();
        for attempt in 1..=PORT_TRIES {
            let what = format!("serf agent {}'s RPC port {}", agent.name, agent.rpc);
            let started = eventually(&what, DEADLINE, async || {
                if attempt < PORT_TRIES && agent.lost_a_port() {
                    return Some(false);
                }
                agent.assert_running();
                if !agent.says_running() {
                    return None;
                }
                tokio::net::TcpStream::connect(agent.rpc)
                    .await
                    .ok()
                    .map(|_| true)
            })
            .await;
            if started {
                break;
            }
            agent.relaunch_on_other_ports();
        }
        agent
    }

    /// [`start`](SerfAgentBuilder::start) on a thread that may block.
    pub fn start_blocking(self) -> SerfAgent {
        let mut agent = self.spawn();
        for attempt in 1..=PORT_TRIES {
            let what = format!("serf agent {}'s RPC port {}", agent.name, agent.rpc);
            let log = agent.log.clone();
            let started = eventually_blocking_explained(
                &what,
                DEADLINE,
                || std::fs::read_to_string(log).unwrap_or_default(),
                || {
                    if attempt < PORT_TRIES && agent.lost_a_port() {
                        return Some(false);
                    }
                    agent.assert_running();
                    if !agent.says_running() {
                        return None;
                    }
                    std::net::TcpStream::connect(agent.rpc).ok().map(|_| true)
                },
            );
            if started {
                break;
            }
            agent.relaunch_on_other_ports();
        }
        agent
    }
}

/// Starts of an agent on picked ports before a taken port is a failure.
const PORT_TRIES: u32 = 3;

/// Runs `serf agent` with its log appended to `log`; the process and where
/// this run's lines start in the log (a restart appends to an earlier run's).
fn launch(
    name: &str,
    bind: SocketAddr,
    rpc: SocketAddr,
    args: &[String],
    log: &Path,
) -> (ChildGuard, u64) {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
    let log_start = out.metadata().map(|m| m.len()).unwrap_or(0);
    let mut cmd = Command::new(SERF);
    cmd.arg("agent")
        .arg(format!("-node={name}"))
        .arg(format!("-bind={bind}"))
        .arg(format!("-rpc-addr={rpc}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let process = ChildGuard::spawn(&format!("serf agent {name}"), &mut cmd);
    (process, log_start)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One member as `serf members -format=json` lists it.
#[derive(Debug, Clone)]
pub struct SerfMember {
    pub name: String,
    pub addr: String,
    pub status: String,
    pub tags: serde_json::Value,
}

/// A running `serf agent`; killed (SIGKILL) and reaped when dropped, its
/// log printed then if the test is failing.
pub struct SerfAgent {
    pub process: ChildGuard,
    pub name: String,
    /// Its gossip address.
    pub bind: SocketAddr,
    pub rpc: SocketAddr,
    pub log: PathBuf,
    /// Where this run's lines start in `log`.
    log_start: u64,
    own_log: bool,
    /// Its flags, for a start on other ports.
    args: Vec<String>,
    /// Both ports were picked by the builder, not asked for by the test.
    ports_picked: bool,
    /// Its own temp dir, removed after the process is gone.
    pub dir: TempDir,
}

impl SerfAgent {
    pub fn builder(name: &str) -> SerfAgentBuilder {
        SerfAgentBuilder {
            name: name.into(),
            dir: crate::temp_dir(&format!("serf-{name}")),
            args: Vec::new(),
            bind_port: None,
            rpc_port: None,
            log_file: None,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Has the process exited (e.g. after an RPC `leave`)?
    pub fn exited(&mut self) -> bool {
        !self.process.is_running()
    }

    pub fn signal(&self, sig: Signal) {
        self.process.signal(sig)
    }

    /// SIGKILL: a crash, no leave.
    pub fn kill(&mut self) {
        self.process.kill()
    }

    /// This run's part of the log.
    fn run_log(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let from = (self.log_start as usize).min(text.len());
        String::from_utf8_lossy(&text[from..]).into_owned()
    }

    /// Has this run logged "Serf agent running!" (its listeners are bound)?
    fn says_running(&self) -> bool {
        self.run_log().contains("Serf agent running!")
    }

    /// Did this run stop because a port picked for it was taken?
    fn lost_a_port(&mut self) -> bool {
        self.ports_picked
            && self.process.exit_status().is_some()
            && self.run_log().contains("address already in use")
    }

    /// Starts this agent again on two newly picked ports.
    fn relaunch_on_other_ports(&mut self) {
        eprintln!(
            "serf agent {}: a port of {} / {} was taken, starting on other ports",
            self.name, self.bind, self.rpc
        );
        self.bind = loopback(crate::free_port());
        self.rpc = loopback(crate::free_port());
        let (process, log_start) = launch(&self.name, self.bind, self.rpc, &self.args, &self.log);
        self.process = process;
        self.log_start = log_start;
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.process.exit_status() {
            panic!(
                "serf agent {} exited ({status}); log:\n{}",
                self.name,
                self.log_text()
            );
        }
    }

    /// The `serf` command line against this agent's RPC: `args[0]` is the
    /// command (`members`, `event`, ...), the rest follow `-rpc-addr`
    /// (Go's flag parsing stops at the first positional argument).
    /// Ok(stdout) on success, Err(stderr) otherwise.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(SERF)
            .arg(args[0])
            .arg(format!("-rpc-addr={}", self.rpc))
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `serf members -format=json` through this agent.
    pub fn members(&self) -> Result<Vec<SerfMember>, String> {
        let text = self.cli(&["members", "-format=json"])?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let field = |m: &serde_json::Value, k: &str| m[k].as_str().unwrap_or("").to_string();
        Ok(v["members"]
            .as_array()
            .ok_or("no members")?
            .iter()
            .map(|m| SerfMember {
                name: field(m, "name"),
                addr: field(m, "addr"),
                status: field(m, "status"),
                tags: m["tags"].clone(),
            })
            .collect())
    }

    /// What this agent lists about `name`; `None` when it does not list
    /// it (or the CLI fails).
    pub fn member(&self, name: &str) -> Option<SerfMember> {
        self.members().ok()?.into_iter().find(|m| m.name == name)
    }

    /// The status (`alive`, `failed`, `left`, ...) this agent gives `name`.
    pub fn status_of(&self, name: &str) -> Option<String> {
        self.member(name).map(|m| m.status)
    }
}

impl Drop for SerfAgent {
    fn drop(&mut self) {
        self.process.kill();
        let show = std::thread::panicking() || std::env::var_os(SHOW_LOGS).is_some();
        if show && self.own_log {
            eprintln!(
                "--- log of serf agent {} ---\n{}",
                self.name,
                self.log_text()
            );
        }
    }
}
