//! The `serf`-compatible command line: `gossip agent|members|join|leave|
//! force-leave|event|query|tags|info|monitor|reachability|rtt|keys|
//! keygen|version`, with Serf's flags (one or two dashes), environment
//! (`SERF_RPC_ADDR`, `SERF_RPC_AUTH`) and output formats.

mod agent_cmd;
mod agent_config;
mod commands;
mod config_file;
pub mod flags;
mod host;
mod output;

pub use agent_config::{agent_config, AgentSettings};
pub use output::columnize;

/// Serf's protocol range, as `version` reports it.
pub const PROTOCOL_MAX: u8 = 5;
pub const PROTOCOL_MIN: u8 = 2;

const USAGE: &str = "usage: gossip [--version] [--help] <command> [<args>]

Available commands are:
    agent           Runs a Serf agent
    event           Send a custom event through the Serf cluster
    force-leave     Forces a member of the cluster to enter the \"left\" state
    info            Provides debugging information for operators
    join            Tell Serf agent to join cluster
    keygen          Generates a new encryption key
    keys            Manipulate the internal encryption keyring used by Serf
    leave           Gracefully leaves the Serf cluster and shuts down
    members         Lists the members of a Serf cluster
    monitor         Stream logs from a Serf agent
    query           Send a query to the Serf cluster
    reachability    Test network reachability
    rtt             Estimates network round trip time between nodes
    tags            Modify tags of a running Serf agent
    version         Prints the Serf version";

/// Runs the command line (without the program name); returns the exit code.
pub async fn run(args: Vec<String>) -> i32 {
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        return 1;
    };
    let rest = &args[1..];
    match command.as_str() {
        "agent" => agent_cmd::run(rest).await,
        "members" => commands::members(rest).await,
        "join" => commands::join(rest).await,
        "leave" => commands::leave(rest).await,
        "force-leave" => commands::force_leave(rest).await,
        "event" => commands::event(rest).await,
        "query" => commands::query(rest).await,
        "tags" => commands::tags(rest).await,
        "info" => commands::info(rest).await,
        "monitor" => commands::monitor(rest).await,
        "reachability" => commands::reachability(rest).await,
        "rtt" => commands::rtt(rest).await,
        "keys" => commands::keys(rest).await,
        "keygen" => commands::keygen(rest),
        "version" | "-v" | "-version" | "--version" => version(),
        "-h" | "-help" | "--help" | "help" => {
            println!("{USAGE}");
            0
        }
        other => {
            eprintln!("gossip: unknown command '{other}'\n\n{USAGE}");
            1
        }
    }
}

/// `gossip version`.
fn version() -> i32 {
    println!(
        "gossip v{} (Serf 0.9.4 compatible)",
        env!("CARGO_PKG_VERSION")
    );
    println!("Agent Protocol: {PROTOCOL_MAX} (Understands back to: {PROTOCOL_MIN})");
    0
}
