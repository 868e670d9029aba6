//! Render's own test parts: HAProxy on loopback with the crate's template
//! (admin socket, server states), the reconciler in-process on a member
//! list the test sets, and `render reconcile` as a child. What every
//! crate's tests share (ports, processes, serf agents, HTTP backends and
//! load, polling) is the test kit's.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;
use render::backends::{BackendSet, MemberInfo};
use render::cli::ReconcileArgs;
use render::membership::MembershipSource;
use render::reconcile::{self, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use testkit::http::WebServer;
use testkit::{eventually, require, ChildGuard, SerfAgent, SerfAgentBuilder};

pub const HAPROXY: &str = "/usr/sbin/haproxy";
pub const RENDER: &str = env!("CARGO_BIN_EXE_render");
pub const TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/templates/haproxy.cfg.tera");

/// A real serf agent for these tests: tagged, joining `join` when given,
/// logging warnings to `log` (shared by a test's agents). Add flags, then
/// `.start().await`.
pub fn serf(
    name: &str,
    tags: &[(&str, &str)],
    join: Option<SocketAddr>,
    log: &Path,
) -> SerfAgentBuilder {
    let b = SerfAgent::builder(name)
        .log_level("warn")
        .tags(tags)
        .log_file(log);
    match join {
        Some(j) => b.join(j),
        None => b,
    }
}

/// A backend as the lab runs one: a web server named `name` and its serf
/// agent (tags role=backend and port=the web server's port) joined to
/// `join`, logging to `log`.
pub async fn backend(name: &str, join: SocketAddr, log: &Path) -> (WebServer, SerfAgent) {
    let web = WebServer::start(name).await;
    let port = web.port.to_string();
    let tags = [("role", "backend"), ("port", port.as_str())];
    let agent = serf(name, &tags, Some(join), log).start().await;
    (web, agent)
}

/// A backend member as the reconciler's selector wants it: role backend,
/// its web port in tag `port`, on 127.0.0.1.
pub fn member(name: &str, port: u16) -> MemberInfo {
    MemberInfo {
        name: name.into(),
        addr: "127.0.0.1".parse().unwrap(),
        status: "alive".into(),
        tags: vec![
            ("role".into(), "backend".into()),
            ("port".into(), port.to_string()),
        ],
    }
}

/// The reconciler in-process on `source`; aborted when dropped.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn start(s: Settings, source: impl MembershipSource) -> Running {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(reconcile::run(s, source, async move {
            let _ = stopped.await;
        }));
        Running {
            stop: Some(stop),
            task,
        }
    }

    /// Shuts it down as a signal would; it must stop within 10 s.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the reconciler stops on shutdown")
            .unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The one-shot mode on the shipped template with these arguments (a
/// `--backends`, `--sticky`, the variables): Ok(stdout) or Err(stderr).
pub fn one_shot(args: &[&str]) -> Result<String, String> {
    let o = Command::new(RENDER)
        .arg("--template")
        .arg(TEMPLATE)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if o.status.success() {
        Ok(String::from_utf8(o.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// `--NAME VALUE` for each template variable.
pub fn var_flags(vars: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    vars.iter()
        .flat_map(|(k, v)| [format!("--{k}"), v.as_str().unwrap().to_string()])
        .collect()
}

/// `render reconcile` flags for HAProxy on loopback in `dir` (`ports`:
/// frontend, stats, TCP admin), the reconciler's timings shortened for
/// tests, `--check={HAPROXY} {check} {}`, then `extra`.
pub fn loopback_args(
    dir: &Path,
    ports: (u16, u16, u16),
    out: &Path,
    check: &str,
    extra: &[&str],
) -> ReconcileArgs {
    let mut a = vec![
        "render-reconcile".to_string(),
        format!("--admin-socket={}", dir.join("admin.sock").display()),
        "--port-tag=port".into(),
        format!("--config-out={}", out.display()),
        format!("--check={HAPROXY} {check} {{}}"),
        "--quiet-ms=100".into(),
        "--verify-secs=1".into(),
    ];
    a.extend(reconcile_vars(&Haproxy::vars(
        dir, ports.0, ports.1, ports.2,
    )));
    a.extend(extra.iter().map(|e| e.to_string()));
    ReconcileArgs::try_parse_from(a).unwrap()
}

/// `render reconcile` as a child with `args` after `reconcile`, stdout
/// and stderr to `log`, RUST_LOG unset, plus `env`.
pub fn reconcile_child(args: &[String], env: &[(&str, &str)], log: &Path) -> ChildGuard {
    let log_file = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(RENDER);
    cmd.arg("reconcile")
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
    ChildGuard::spawn("render reconcile", &mut cmd)
}

/// `--var=NAME=VALUE` for each template variable.
pub fn reconcile_vars(vars: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    vars.iter()
        .map(|(k, v)| format!("--var={k}={}", v.as_str().unwrap()))
        .collect()
}

/// HAProxy on loopback with the crate's own template: frontend, stats and a
/// TCP admin socket on free 127.0.0.1 ports, a unix admin socket in `dir`.
pub struct Haproxy {
    pub process: ChildGuard,
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
        let process = ChildGuard::spawn(
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
            process,
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
        eventually(
            "HAProxy's admin socket",
            Duration::from_secs(30),
            async || {
                if !h.process.is_running() {
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

    /// HAProxy from the config the reconciler with settings `s` renders
    /// for no backend yet, in `dir` on `(frontend, stats, admin_tcp)`.
    pub async fn start_empty(s: &Settings, dir: &Path, (fe, st, at): (u16, u16, u16)) -> Haproxy {
        let cfg = reconcile::render_config(s, &BackendSet::new()).unwrap();
        Haproxy::start(dir, &cfg, fe, st, at).await
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
