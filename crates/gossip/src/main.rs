//! `gossip` binary: the serf-compatible command line (see `gossip::cli`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Two workers whatever the host's core count: the agent's work is small,
    // and each worker thread costs memory in every container.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
