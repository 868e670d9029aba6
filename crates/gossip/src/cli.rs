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

use std::future::Future;
use std::pin::Pin;

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

/// One command's run, boxed: each command's state machine stays in its own
/// allocation and its own poll function, not inlined into one future as
/// large as all of them (the agent's binary is resident in every container).
type Run<'a> = Pin<Box<dyn Future<Output = i32> + 'a>>;

/// Runs the command line (without the program name); returns the exit code.
pub async fn run(args: Vec<String>) -> i32 {
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        return 1;
    };
    let rest = &args[1..];
    let run: Run = match command.as_str() {
        "agent" => Box::pin(agent_cmd::run(rest)),
        "members" => Box::pin(commands::members(rest)),
        "join" => Box::pin(commands::join(rest)),
        "leave" => Box::pin(commands::leave(rest)),
        "force-leave" => Box::pin(commands::force_leave(rest)),
        "event" => Box::pin(commands::event(rest)),
        "query" => Box::pin(commands::query(rest)),
        "tags" => Box::pin(commands::tags(rest)),
        "info" => Box::pin(commands::info(rest)),
        "monitor" => Box::pin(commands::monitor(rest)),
        "reachability" => Box::pin(commands::reachability(rest)),
        "rtt" => Box::pin(commands::rtt(rest)),
        "keys" => Box::pin(commands::keys(rest)),
        "keygen" => return commands::keygen(rest),
        "version" | "-v" | "-version" | "--version" => return version(),
        "-h" | "-help" | "--help" | "help" => {
            println!("{USAGE}");
            return 0;
        }
        other => {
            eprintln!("gossip: unknown command '{other}'\n\n{USAGE}");
            return 1;
        }
    };
    run.await
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
