//! `gossip agent`: the agent, its RPC server and its event handlers
//! started from the configuration (`agent_config.rs`), Serf's banner
//! printed, and a graceful leave on SIGINT or SIGTERM (a second signal
//! exits at once); SIGHUP reloads handlers and tags.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use super::agent_config::agent_config;
use crate::handler::HandlerRunner;
use crate::model::{AgentConfig, AgentHandle, Event};
use crate::rpc::{LogLevel, MonitorLayer, ServeOptions};

/// `gossip agent ...`: returns the process exit code.
pub async fn run(argv: &[String]) -> i32 {
    let (config, join) = match agent_config(argv) {
        Ok(c) => c,
        Err(e) if e.starts_with("Usage:") => {
            println!("{e}");
            return 0;
        }
        Err(e) => {
            eprintln!("==> {e}");
            return 1;
        }
    };
    let level = LogLevel::parse(&config.log_level).unwrap_or(LogLevel::Info);
    {
        use tracing_subscriber::layer::SubscriberExt;
        let sub = tracing_subscriber::registry().with(MonitorLayer::with_stdout(level));
        // Fails only if a subscriber is already set (tests embedding us).
        let _ = tracing::subscriber::set_global_default(sub);
    }
    let code = serve_agent(config, join, argv).await;
    // On a failed start the held-back log lines explain why.
    crate::rpc::open_stdout_gate();
    code
}

async fn serve_agent(config: AgentConfig, join: Vec<String>, argv: &[String]) -> i32 {
    println!("==> Starting Serf agent...");
    let rpc_listener = match tokio::net::TcpListener::bind(config.rpc_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "==> Error starting RPC listener on {}: {e}",
                config.rpc_addr
            );
            return 1;
        }
    };
    let runner = match HandlerRunner::new(&config.event_handlers, config.handler_timeout) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("==> Invalid event script: {e}");
            return 1;
        }
    };
    let node_name = config.node_name.clone();
    let rpc_addr = config.rpc_addr;
    let encrypted = !config.encrypt_keys.is_empty() || config.keyring_file.is_some();
    let snapshot = config.snapshot.is_some();
    let profile = config.profile.clone();
    let replay = config.replay;
    let agent = match crate::agent::start(config.clone()).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("==> Failed to start the Serf agent: {e:#}");
            return 1;
        }
    };
    // Subscribe before anything else happens so handlers see every event.
    let handler_events = agent.subscribe();
    tokio::spawn(log_events(agent.subscribe()));
    // Always running: a reload may add handlers to an agent started without.
    let runner = Arc::new(runner);
    {
        let (runner, host) = (runner.clone(), agent.clone());
        tokio::spawn(async move { runner.run(host, handler_events).await });
    }
    println!("==> Starting Serf agent RPC...");
    let left = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(crate::rpc::serve_with(
        rpc_listener,
        agent.clone(),
        ServeOptions {
            auth_key: config.rpc_auth_key.clone(),
            on_leave: Some(left.clone()),
        },
    ));
    let me = agent.local_member();
    println!("==> Serf agent running!");
    println!("                      Node name: '{node_name}'");
    println!(
        "                      Bind addr: '{}'",
        SocketAddr::new(config.bind.ip(), me.port)
    );
    if let Some(a) = config.advertise {
        println!("                 Advertise addr: '{a}'");
    }
    println!("                       RPC addr: '{rpc_addr}'");
    println!("                      Encrypted: {encrypted}");
    println!("                       Snapshot: {snapshot}");
    println!("                        Profile: {profile}");
    println!("    Message Compression Enabled: {}", config.compress);
    if !join.is_empty() {
        println!("==> Joining cluster...(replay: {replay})");
        match agent.join(join, replay).await {
            Ok(n) => println!("    Join completed. Synced with {n} initial agents"),
            Err(e) => {
                eprintln!("==> Error joining the cluster: {e:#}");
                let _ = agent.shutdown().await;
                return 1;
            }
        }
    }
    println!("\n==> Log data will now stream in as it occurs:\n");
    crate::rpc::open_stdout_gate();
    let reload = Reload {
        argv: argv.to_vec(),
        runner,
        tags: config.tags.clone(),
        tags_file: config.tags_file.is_some(),
    };
    let lost = {
        let agent = agent.clone();
        async move { agent.name_conflict_lost().await }
    };
    let leave_on = LeaveOn {
        interrupt: !config.skip_leave_on_interrupt,
        terminate: config.leave_on_terminate,
    };
    wait_for_exit(agent, left, reload, lost, leave_on).await
}

/// Which signals end in a graceful leave (the others stop the agent without
/// one, as Serf's `skip_leave_on_interrupt` and `leave_on_terminate`).
#[derive(Clone, Copy)]
struct LeaveOn {
    interrupt: bool,
    terminate: bool,
}

/// What SIGHUP re-reads: the same arguments (so the same config files)
/// give the new event handlers and tags, as Serf's reload does.
struct Reload {
    argv: Vec<String>,
    runner: Arc<HandlerRunner>,
    /// Tags from the configuration at start or the last reload.
    tags: Vec<(String, String)>,
    /// With a tags file the file, not the configuration, owns the tags.
    tags_file: bool,
}

impl Reload {
    async fn apply<A: AgentHandle + ?Sized>(&mut self, agent: &A) {
        println!("==> Reloading configuration...");
        let config = match agent_config(&self.argv) {
            Ok((c, _)) => c,
            Err(e) => {
                eprintln!("==> Failed to reload configs: {e}");
                return;
            }
        };
        if let Err(e) = self.runner.replace(&config.event_handlers) {
            eprintln!("==> Failed to reload event handlers: {e}");
            return;
        }
        if !self.tags_file && config.tags != self.tags {
            let delete: Vec<String> = self
                .tags
                .iter()
                .filter(|(k, _)| !config.tags.iter().any(|(k2, _)| k2 == k))
                .map(|(k, _)| k.clone())
                .collect();
            match agent.set_tags(config.tags.clone(), delete).await {
                Ok(()) => self.tags = config.tags,
                Err(e) => eprintln!("==> Failed to update tags: {e:#}"),
            }
        }
    }
}

/// Serf's `Received event: ...` line for every event the agent emits.
async fn log_events(mut events: tokio::sync::broadcast::Receiver<Event>) {
    loop {
        match events.recv().await {
            Ok(e) => {
                let what = match &e {
                    Event::Member { kind, .. } => kind.as_str().to_string(),
                    Event::User { name, .. } => format!("user-event: {name}"),
                    Event::Query(q) => format!("query: {}", q.name),
                };
                tracing::info!(target: "agent", "Received event: {what}");
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
}

/// Waits for a signal or an RPC `leave`; leaves gracefully on SIGINT or
/// SIGTERM (unless `leave_on` says otherwise: then it shuts down without a
/// leave and returns 1, as Serf), exits at once on a second signal, reloads
/// on SIGHUP; stops
/// with code 1, without a leave, when `lost` (a name-conflict vote lost:
/// the name belongs to another node, whose membership a leave would end).
async fn wait_for_exit<A: AgentHandle + ?Sized>(
    agent: Arc<A>,
    left: Arc<tokio::sync::Notify>,
    mut reload: Reload,
    lost: impl std::future::Future<Output = String>,
    leave_on: LeaveOn,
) -> i32 {
    tokio::pin!(lost);
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("==> Failed to install signal handlers");
        return 1;
    };
    let name = loop {
        tokio::select! {
            _ = int.recv() => break "interrupt",
            _ = term.recv() => break "terminated",
            _ = hup.recv() => {
                println!("==> Caught signal: hangup");
                reload.apply(&*agent).await;
            }
            _ = left.notified() => {
                // The RPC server already left and shut the agent down.
                return 0;
            }
            why = &mut lost => {
                eprintln!("==> Error: {why}; stopping");
                if let Err(e) = agent.shutdown().await {
                    eprintln!("==> Error: {e:#}");
                }
                return 1;
            }
        }
    };
    println!("==> Caught signal: {name}");
    let leave = match name {
        "interrupt" => leave_on.interrupt,
        _ => leave_on.terminate,
    };
    if !leave {
        // No leave: peers will find this node failed.
        if let Err(e) = agent.shutdown().await {
            eprintln!("==> Error: {e:#}");
        }
        return 1;
    }
    println!("==> Gracefully shutting down agent...");
    let graceful = async {
        if let Err(e) = agent.leave().await {
            eprintln!("==> Error: {e:#}");
        }
        if let Err(e) = agent.shutdown().await {
            eprintln!("==> Error: {e:#}");
        }
    };
    tokio::select! {
        _ = graceful => 0,
        _ = int.recv() => 1,
        _ = term.recv() => 1,
        _ = tokio::time::sleep(Duration::from_secs(60)) => {
            eprintln!("==> Graceful leave took too long; exiting");
            1
        }
    }
}
