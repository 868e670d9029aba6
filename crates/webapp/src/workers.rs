//! The binary's server: one thread per core, each running its own
//! current-thread tokio runtime with its own `SO_REUSEPORT` listener on the
//! same port (the kernel spreads new connections over the listeners), as
//! nginx's workers do; the calling runtime keeps the signals, the log's
//! timer and the session store's upkeep, and decides when to drain.
//!
//! A connection lives on the thread that accepted it, so serving it needs
//! no cross-thread wake-up and no work stealing (tokio's multi-thread
//! scheduler, its futex wake-ups and parking were 18 to 19 % of a `GET /`'s
//! CPU: see the README's "Speed"). What the threads share is the
//! [`AppState`]: the memory store (one bounded cache for the process) or the
//! Redis client, whose connection task lives on the runtime that first used
//! it; every runtime therefore stays up until all have drained.
//!
//! Its lines keep the `webapp` target that they had when they were logged
//! from the crate root (`INFO webapp: listening on ...`, parsed by scripts).
//!
//! Shutdown is the one [`crate::serve_state`] has: on `shutdown`, every
//! listener closes and every connection is drained; past the grace period
//! the connections still open are cut.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::access_log::AccessLog;
use crate::front::Front;
use crate::{conn, AppState, Config, Timeouts};

/// The listening sockets, one per worker, all on one address.
#[derive(Debug)]
pub struct Listeners {
    sockets: Vec<std::net::TcpListener>,
    addr: SocketAddr,
}

impl Listeners {
    /// The address all of them listen on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The backlog tokio's `TcpListener::bind` uses.
const BACKLOG: u32 = 1024;

/// Binds `workers` (at least one) listening sockets to `ip:port` with
/// `SO_REUSEPORT`; with port 0 the first gets a free port and the others
/// join it. A port another socket already holds is refused, as a plain bind
/// would (sharing it is only for our own workers). Must run inside a tokio
/// runtime.
pub fn bind(ip: IpAddr, port: u16, workers: usize) -> io::Result<Listeners> {
    if port != 0 {
        // Another process's socket, even one with SO_REUSEPORT, makes this
        // plain bind fail: ours would otherwise join it.
        drop(std::net::TcpListener::bind((ip, port))?);
    }
    let listen = |port: u16| -> io::Result<std::net::TcpListener> {
        let socket = match ip {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(SocketAddr::new(ip, port))?;
        socket.listen(BACKLOG)?.into_std()
    };
    let first = listen(port)?;
    let addr = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers.max(1) {
        sockets.push(listen(addr.port())?);
    }
    Ok(Listeners { sockets, addr })
}

/// Where the server is in its shutdown; the workers follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    /// Listeners closed, connections finishing their requests.
    Draining,
    /// The grace period is over: connections still open are cut.
    Cut,
    /// Every worker is done: runtimes may go.
    Release,
}

/// Serves [`app`] over `state` on each of `listeners`, one thread and
/// runtime each, until `shutdown` completes (then, after
/// `--shutdown-delay-ms`, drains for at most `--shutdown-grace-secs`).
/// Returns once every worker has stopped; the first error of a worker that
/// stopped on its own is returned (the others are drained first).
pub async fn serve(
    listeners: Listeners,
    config: &Config,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let delay = Duration::from_millis(config.shutdown_delay_ms);
    let timeouts = Timeouts::from(config);
    info!(
        target: "webapp",
        ip = %state.0.ip, host = %state.0.host, tag = %state.0.tag,
        sessions = %state.0.sessions.describe(),
        "listening on {}", listeners.addr
    );
    let upkeep = tokio::spawn(state.0.sessions.clone().upkeep());
    let (phase, phases) = watch::channel(Phase::Serving);
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let mut threads = Vec::new();
    let mut failed = None;
    for (i, socket) in listeners.sockets.into_iter().enumerate() {
        let worker = Worker {
            socket,
            state: state.clone(),
            access: state.0.access_log.get().cloned(),
            timeouts,
            phases: phases.clone(),
            done: Done(Some(done_tx.clone())),
        };
        match std::thread::Builder::new()
            .name(format!("webapp-{i}"))
            .spawn(move || worker.run())
        {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(done_tx);
    let mut running = threads.len();

    if failed.is_none() {
        tokio::select! {
            () = shutdown => {
                if !delay.is_zero() {
                    info!(target: "webapp", "still serving for {delay:?} while the load balancer lets go of us");
                    tokio::time::sleep(delay).await;
                }
            }
            ended = done.recv() => {
                running -= 1;
                failed = Some(stopped_early(ended));
            }
        }
    }
    info!(target: "webapp", "shutting down: no new connections, draining in-flight requests");
    phase.send_replace(Phase::Draining);
    let deadline = tokio::time::Instant::now() + grace;
    let mut cut = false;
    while running > 0 {
        tokio::select! {
            ended = done.recv() => match ended {
                Some(Ok(())) => running -= 1,
                Some(Err(e)) => {
                    running -= 1;
                    failed.get_or_insert(e);
                }
                None => break,
            },
            () = tokio::time::sleep_until(deadline), if !cut => {
                warn!(target: "webapp", "in-flight requests still running after {grace:?}: stopping anyway");
                phase.send_replace(Phase::Cut);
                cut = true;
            }
        }
    }
    phase.send_replace(Phase::Release);
    let joined = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    });
    let _ = joined.await;
    upkeep.abort();
    info!(target: "webapp", "stopped");
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What a worker that stopped before the shutdown said.
fn stopped_early(ended: Option<io::Result<()>>) -> io::Error {
    let e = match ended {
        Some(Err(e)) => e,
        _ => io::Error::other("a worker stopped on its own"),
    };
    error!(target: "webapp", "a worker stopped before the shutdown: {e}; stopping the others");
    e
}

/// One worker thread's part.
struct Worker {
    socket: std::net::TcpListener,
    state: AppState,
    access: Option<AccessLog>,
    timeouts: Timeouts,
    phases: watch::Receiver<Phase>,
    done: Done,
}

/// Tells the server the worker is done, once; if the worker panicked,
/// says so.
struct Done(Option<mpsc::UnboundedSender<io::Result<()>>>);

impl Done {
    fn send(&mut self, result: io::Result<()>) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(result);
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        self.send(Err(io::Error::other("a worker thread panicked")));
    }
}

impl Worker {
    fn run(mut self) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => return self.done.send(Err(e)),
        };
        runtime.block_on(async move {
            let result = match TcpListener::from_std(self.socket) {
                Ok(listener) => {
                    let reached = |phase: Phase| {
                        let mut phases = self.phases.clone();
                        async move {
                            // A dropped sender: the server is gone, stop.
                            let _ = phases.wait_for(|p| *p >= phase).await;
                        }
                    };
                    let front = Front::new(self.state);
                    tokio::select! {
                        () = conn::serve(listener, front, self.access, self.timeouts,
                                         reached(Phase::Draining)) => {}
                        () = reached(Phase::Cut) => {}
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            };
            self.done.send(result);
            let _ = self.phases.wait_for(|p| *p >= Phase::Release).await;
        });
    }
}
