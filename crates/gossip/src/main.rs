//! `gossip` binary: the serf-compatible command line (see `gossip::cli`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // One thread: the agent's work is small and comes from one actor, and
    // every wake-up of an idle agent is then one thread waking, not a
    // worker waking another to share the work (file writes have a thread
    // of their own).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gossip: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(gossip::cli::run(args));
    // Exit without waiting for background tasks (RPC connections, handlers).
    std::process::exit(code);
}
