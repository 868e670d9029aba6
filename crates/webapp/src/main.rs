//! `webapp`: parses flags and environment, serves until SIGTERM or SIGINT.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;
use webapp::log_out::LogOut;
use webapp::{AccessLog, AppState, Config};

/// mimalloc instead of glibc's malloc: its thread-local free lists suit the
/// per-request allocations of hyper, axum and the handler (README, "Speed").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Without `RUST_LOG`: our access log at info; tower-sessions' own warnings
/// (such as "record not found in store" for every expired cookie) silenced,
/// and its session methods' error lines too: each such error is answered by
/// our handler (a 503 when the store is down), and a store outage is logged
/// by the store, rate-limited, not once per request.
const DEFAULT_LOG: &str = "info,tower_sessions=error,tower_sessions_core=off";

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    // A RUST_LOG that does not parse is refused, not replaced by the default.
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => {
            EnvFilter::try_new(&v).with_context(|| format!("invalid RUST_LOG {v:?}"))?
        }
        _ => EnvFilter::new(DEFAULT_LOG),
    };
    // One line per event: buffered, written out every 100 ms, when full
    // and when `_flushing` is dropped (after the drain, or on an error).
    let ansi = std::io::stdout().is_terminal();
    let log = LogOut::stdout();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(log.clone())
        .init();
    // This thread's runtime keeps the signals, the log's timer and the
    // session store's upkeep; requests are served by one runtime per core
    // (`webapp::serve`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(config, log, ansi))
}

async fn run(config: Config, log: LogOut, ansi: bool) -> anyhow::Result<()> {
    let _flushing = log.flushing();
    // A bad --session-store stops the start; a Redis that is not up does not.
    let state = AppState::new(&config)?;
    // The access log goes into the same buffer as the other lines, in the
    // same format (`webapp::access_log`).
    state.set_access_log(AccessLog::new(log.clone(), ansi));
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let listeners = webapp::bind(config.bind, config.port, workers)
        .with_context(|| format!("cannot listen on {}:{}", config.bind, config.port))?;
    webapp::serve(listeners, &config, state, shutdown_signal()?).await?;
    Ok(())
}

/// Completes on the first SIGTERM (docker stop, s6) or SIGINT (Ctrl-C).
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!("{name} received");
    })
}
