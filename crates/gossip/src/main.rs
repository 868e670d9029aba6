//! `gossip` binary: the serf-compatible command line (see `cli`).

fn main() {
    eprintln!("gossip: not implemented yet");
    std::process::exit(64);
}
