//! The client commands (`members`, `event`, `keys`, ...), grouped by job
//! in `commands/`; here what they all share: Serf's RPC flags and
//! environment, connecting to the agent, and Serf's way of failing. Each
//! command parses Serf's flags, talks to an agent over RPC and prints what
//! `serf` prints. Errors go to stderr (Serf prints them on stdout) with
//! Serf's wording, exit code 1.

/// `?` for a command that returns its exit code: the `Ok` value, else
/// return the `Err` code; with a context, an error is printed Serf's way
/// (`context: error`) and the command exits 1.
macro_rules! or_exit {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => return code,
        }
    };
    ($e:expr, $context:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return fail(format!("{}: {e}", $context)),
        }
    };
}

mod events;
mod inspect;
mod keys;
mod membership;

use std::net::SocketAddr;

use super::flags::{FlagError, Flags, Kind};
use crate::rpc::Client;

pub use events::{event, query};
pub use inspect::{info, monitor, rtt};
pub use keys::{keygen, keys};
pub use membership::{force_leave, join, leave, members, reachability, tags};

/// A client command's interface, declared once: its help text and the
/// flags it takes by kind. The RPC flags every command shares
/// (`-rpc-addr`, `-rpc-auth`) are not declared here: [`parse`] accepts
/// them and [`Usage::help`] lists them.
struct Usage {
    /// The help text down to the command's own options.
    text: &'static str,
    bools: &'static [&'static str],
    values: &'static [&'static str],
    lists: &'static [&'static str],
}

impl Usage {
    /// Fills the flag kinds a command does not use: `..Usage::NO_FLAGS`.
    const NO_FLAGS: Usage = Usage {
        text: "",
        bools: &[],
        values: &[],
        lists: &[],
    };

    /// The whole help text, trimmed, ending with the RPC flags.
    fn help(&self) -> String {
        format!(
            "{}\n  -rpc-addr=127.0.0.1:7373  RPC address of the Serf agent.\n  -rpc-auth=\"\"              RPC auth token of the Serf agent.",
            self.text.trim()
        )
    }

    fn specs(&self) -> Vec<(&'static str, Kind)> {
        let kinds = [
            (self.bools, Kind::Bool),
            (self.values, Kind::Value),
            (self.lists, Kind::List),
            (&["rpc-addr", "rpc-auth"], Kind::Value),
        ];
        kinds
            .into_iter()
            .flat_map(|(names, kind)| names.iter().map(move |n| (*n, kind)))
            .collect()
    }
}

/// Parses `argv` by `usage`; prints the help or the error itself.
fn parse(usage: &Usage, argv: &[String]) -> Result<Flags, i32> {
    match Flags::parse(&usage.specs(), argv) {
        Ok(f) => Ok(f),
        Err(FlagError::Help) => {
            println!("{}", usage.help());
            Err(0)
        }
        Err(FlagError::Bad(msg)) => {
            eprintln!("{msg}\n{}", usage.help());
            Err(1)
        }
    }
}

fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("{msg}");
    1
}

/// `-format`, which must be `text` or `json`.
fn output_format(f: &Flags) -> Result<&str, i32> {
    match f.value("format").unwrap_or("text") {
        format @ ("text" | "json") => Ok(format),
        format => Err(fail(format!(
            "Encoding error: Invalid output format \"{format}\""
        ))),
    }
}

/// The `name [payload]` arguments of `event` and `query`.
fn name_and_payload<'a>(
    f: &'a Flags,
    missing: &str,
    usage: &Usage,
) -> Result<(&'a str, &'a [u8]), i32> {
    match f.args.as_slice() {
        [] => Err(fail(format!("{missing}\n\n{}", usage.help()))),
        [name] => Ok((name, b"")),
        [name, payload] => Ok((name, payload.as_bytes())),
        _ => Err(fail(format!(
            "Too many command line arguments. Only a name and payload must be specified.\n\n{}",
            usage.help()
        ))),
    }
}

/// Connects as Serf's CLI does: `-rpc-addr`, else `SERF_RPC_ADDR`, else
/// 127.0.0.1:7373; `-rpc-auth`, else `SERF_RPC_AUTH`.
async fn connect(f: &Flags) -> Result<Client, i32> {
    let addr_text = f
        .value("rpc-addr")
        .map(str::to_string)
        .or_else(|| {
            std::env::var("SERF_RPC_ADDR")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "127.0.0.1:7373".into());
    let auth = f
        .value("rpc-auth")
        .map(str::to_string)
        .or_else(|| std::env::var("SERF_RPC_AUTH").ok());
    let addr = match resolve(&addr_text).await {
        Ok(a) => a,
        Err(e) => return Err(fail(format!("Error connecting to Serf agent: {e}"))),
    };
    Client::connect(addr, auth.as_deref())
        .await
        .map_err(|e| fail(format!("Error connecting to Serf agent: {e}")))
}

async fn resolve(text: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    tokio::net::lookup_host(text)
        .await
        .map_err(|e| format!("invalid RPC address '{text}': {e}"))?
        .next()
        .ok_or_else(|| format!("RPC address '{text}' resolves to nothing"))
}

/// `k=v` pairs as Serf's `UnmarshalTags` reads them.
fn parse_tags(list: &[String]) -> Result<Vec<(String, String)>, String> {
    list.iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(format!("Invalid tag: '{t}'")),
        })
        .collect()
}
