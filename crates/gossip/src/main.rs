//! `gossip`: a membership agent wire-compatible with HashiCorp Serf 0.9.
//!
//! Will own: the SWIM/Lifeguard core (sans-IO), Serf's layer (Lamport
//! clocks, intents, user events, queries), the RPC on 7373, the `serf`-like
//! CLI and event handlers. Not written yet: see the issue "gossip".

fn main() {
    eprintln!("gossip: not implemented yet");
    std::process::exit(64);
}
