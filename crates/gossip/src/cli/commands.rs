//! The client commands: each parses Serf's flags, talks to an agent over
//! RPC and prints what `serf` prints. Errors go to stderr (Serf prints them
//! on stdout) with Serf's wording, exit code 1.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Serialize;

use super::flags::{parse_duration, FlagError, Flags, Kind};
use super::output::{columnize, json};
use crate::model::{MemberStatus, QueryParams, QueryReply};
use crate::rpc::Client;

const RPC_FLAGS: [(&str, Kind); 2] = [("rpc-addr", Kind::Value), ("rpc-auth", Kind::Value)];

/// Parses `specs` plus the RPC flags; prints help or the error itself.
fn parse(specs: &[(&'static str, Kind)], argv: &[String], help: &str) -> Result<Flags, i32> {
    let mut all = specs.to_vec();
    all.extend_from_slice(&RPC_FLAGS);
    match Flags::parse(&all, argv) {
        Ok(f) => Ok(f),
        Err(FlagError::Help) => {
            println!("{}", help.trim());
            Err(0)
        }
        Err(FlagError::Bad(msg)) => {
            eprintln!("{msg}\n{}", help.trim());
            Err(1)
        }
    }
}

fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("{msg}");
    1
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

const MEMBERS_HELP: &str = "
Usage: gossip members [options]

  Outputs the members of a running Serf agent.

Options:
  -detailed                 Additional information such as protocol versions.
  -format                   Output format: 'json' or 'text' (default).
  -name=<regexp>            Only members whose name matches (anchored).
  -role=<regexp>            Deprecated: same as -tag role=<regexp>.
  -status=<regexp>          Only members whose status matches.
  -tag <key>=<regexp>       Only members with a matching tag (repeatable).
  -rpc-addr=127.0.0.1:7373  RPC address of the Serf agent.
  -rpc-auth=\"\"              RPC auth token of the Serf agent.
";

#[derive(Serialize)]
struct JsonMember {
    name: String,
    addr: String,
    port: u16,
    tags: BTreeMap<String, String>,
    status: String,
    protocol: BTreeMap<String, u8>,
}

#[derive(Serialize)]
struct JsonMembers {
    /// Go marshals an empty slice that was never appended to as `null`.
    members: Option<Vec<JsonMember>>,
}

pub async fn members(argv: &[String]) -> i32 {
    let f = match parse(
        &[
            ("detailed", Kind::Bool),
            ("format", Kind::Value),
            ("name", Kind::Value),
            ("role", Kind::Value),
            ("status", Kind::Value),
            ("tag", Kind::List),
        ],
        argv,
        MEMBERS_HELP,
    ) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let mut tag_list = f.list("tag");
    if let Some(role) = f.value("role") {
        println!("Deprecation warning: 'Role' has been replaced with 'Tags'");
        tag_list.push(format!("role={role}"));
    }
    let tags = match parse_tags(&tag_list) {
        Ok(t) => t,
        Err(e) => return fail(format!("Error: {e}")),
    };
    let format = f.value("format").unwrap_or("text");
    if format != "text" && format != "json" {
        return fail(format!(
            "Encoding error: Invalid output format \"{format}\""
        ));
    }
    let client = match connect(&f).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let members = match client
        .members_filtered(
            &tags,
            f.value("status").unwrap_or(""),
            f.value("name").unwrap_or(""),
        )
        .await
    {
        Ok(m) => m,
        Err(e) => return fail(format!("Error retrieving members: {e}")),
    };
    if format == "json" {
        let list: Vec<JsonMember> = members
            .iter()
            .map(|m| JsonMember {
                name: m.name.clone(),
                addr: SocketAddr::new(m.addr, m.port).to_string(),
                port: m.port,
                tags: m.tags.iter().cloned().collect(),
                status: m.status.as_str().to_string(),
                protocol: [
                    ("min".to_string(), m.delegate[0]),
                    ("max".to_string(), m.delegate[1]),
                    ("version".to_string(), m.delegate[2]),
                ]
                .into_iter()
                .collect(),
            })
            .collect();
        let out = JsonMembers {
            members: (!list.is_empty()).then_some(list),
        };
        println!("{}", json(&out));
        return 0;
    }
    let detailed = f.bool("detailed", false);
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut row = vec![
                m.name.clone(),
                SocketAddr::new(m.addr, m.port).to_string(),
                m.status.as_str().to_string(),
                tags.join(","),
            ];
            if detailed {
                row.push(format!("Protocol Version: {}", m.delegate[2]));
                row.push(format!(
                    "Available Protocol Range: [{}, {}]",
                    m.delegate[0], m.delegate[1]
                ));
            }
            row
        })
        .collect();
    println!("{}", columnize(&rows));
    0
}

const JOIN_HELP: &str = "
Usage: gossip join [options] address ...

  Tells a running Serf agent to join the cluster through the given
  addresses (host or host:port, DNS names allowed).

Options:
  -replay                   Replay past user events.
  -rpc-addr=127.0.0.1:7373  RPC address of the Serf agent.
  -rpc-auth=\"\"              RPC auth token of the Serf agent.
";

pub async fn join(argv: &[String]) -> i32 {
    let f = match parse(&[("replay", Kind::Bool)], argv, JOIN_HELP) {
        Ok(f) => f,
        Err(code) => return code,
    };
    if f.args.is_empty() {
        return fail(format!(
            "At least one address to join must be specified.\n\n{}",
            JOIN_HELP.trim()
        ));
    }
    let client = match connect(&f).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.join(&f.args, f.bool("replay", false)).await {
        Ok(n) => {
            println!("Successfully joined cluster by contacting {n} nodes.");
            0
        }
        Err(e) => fail(format!("Error joining the cluster: {e}")),
    }
}

const LEAVE_HELP: &str = "
Usage: gossip leave

  Causes the agent to gracefully leave the Serf cluster and shut down.

Options:
  -rpc-addr=127.0.0.1:7373  RPC address of the Serf agent.
  -rpc-auth=\"\"              RPC auth token of the Serf agent.
";

pub async fn leave(argv: &[String]) -> i32 {
    let f = match parse(&[], argv, LEAVE_HELP) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let client = match connect(&f).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.leave().await {
        Ok(()) => {
            println!("Graceful leave complete");
            0
        }
        Err(e) => fail(format!("Error leaving: {e}")),
    }
}

const RTT_HELP: &str = "
Usage: gossip rtt [options] node1 [node2]

  Estimates the round trip time between two nodes from the agent's network
  coordinates (Vivaldi, updated by every probe). Without node2, the second
  node is the agent's own. Node names as `members` shows them, not
  addresses.

Options:
  -rpc-addr=127.0.0.1:7373  RPC address of the Serf agent.
  -rpc-auth=\"\"              RPC auth token of the Serf agent.
";

pub async fn rtt(argv: &[String]) -> i32 {
    let f = match parse(&[], argv, RTT_HELP) {
        Ok(f) => f,
        Err(code) => return code,
    };
    if f.args.is_empty() || f.args.len() > 2 {
        eprintln!(
            "One or two node names must be specified\n\n{}",
            RTT_HELP.trim()
        );
        return 1;
    }
    let client = match connect(&f).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut nodes = f.args.clone();
    if nodes.len() == 1 {
        match client.stats().await {
            Ok(s) => nodes.push(
                s.get("agent")
                    .and_then(|a| a.get("name"))
                    .cloned()
                    .unwrap_or_default(),
            ),
            Err(e) => return fail(format!("Error querying agent: {e}")),
        }
    }
    let mut coords = Vec::new();
    for node in &nodes {
        match client.get_coordinate(node).await {
            Ok(Some(c)) => coords.push(c),
            Ok(None) => return fail(format!("Could not find a coordinate for node {node:?}")),
            Err(e) => return fail(format!("Error getting coordinates: {e}")),
        }
    }
    match coords[0].distance_to(&coords[1]) {
        Some(d) => {
            println!(
                "Estimated {} <-> {} rtt: {:.3} ms",
                nodes[0],
                nodes[1],
                d.as_secs_f64() * 1000.0
            );
            0
        }
        None => fail(format!(
            "Coordinates of {} and {} cannot be compared (dimensions {} and {}, or not finite)",
            nodes[0],
            nodes[1],
            coords[0].vec.len(),
            coords[1].vec.len()
        )),
    }
}

const FORCE_LEAVE_HELP: &str = "
Usage: gossip force-leave [options] name

  Forces a member of the cluster into the \"left\" state, e.g. a failed
  node that will not come back.

Options:
  -prune                    Remove the node from the member list at once.
  -rpc-addr=127.0.0.1:7373  RPC address of the Serf agent.
  -rpc-auth=\"\"              RPC auth token of the Serf agent.
";

pub async fn force_leave(argv: &[String]) -> i32 {
    let f = match parse(&[("prune", Kind::Bool)], argv, FORCE_LEAVE_HELP) {
        Ok(f) => f,
        Err(code) => return code,
    };
    if f.args.len() != 1 {
        return fail(format!(
            "A node name must be specified to force leave.\n\n{}",
            FORCE_LEAVE_HELP.trim()
        ));
    }
    let client = match connect(&f).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let r = if f.bool("prune", false) {
        client.force_leave_prune(&f.args[0]).await
    } else {
        client.force_leave(&f.args[0]).await
    };
    match r {
        Ok(()) => 0,
        Err(e) => fail(format!("Error force leaving: {e}")),
    }
}

const EVENT_HELP: &str = "
Usage: gossip event [options] name [payload]

  Dispatches a custom user event across the cluster.

Options:
  -coalesce=true/false      Whether handlers may coalesce this event (default true).
  -rpc-addr=127.0.0.1:7373  RPC address of the Serf agent.
  -rpc-auth=\"\"              RPC auth token of the Serf agent.
";

pub async fn event(argv: &[String]) -> i32 {
    let f = match parse(&[("coalesce", Kind::Bool)], argv, EVENT_HELP) {
        Ok(f) => f,
        Err(code) => return code,
    };
    match f.args.len() {
        0 => {
            return fail(format!(
                "An event name must be specified.\n\n{}",
                EVENT_HELP.trim()
            ))
        }
        1 | 2 => {}
        _ => {
            return fail(format!(
                "Too many command line arguments. Only a name and payload must be specified.\n\n{}",
                EVENT_HELP.trim()
            ))
        }
    }
    let coalesce = f.bool("coalesce", true);
    let name = &f.args[0];
    let payload = f.args.get(1).map(|p| p.as_bytes()).unwrap_or(b"");
    let client = match connect(&f).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.user_event(name, payload, coalesce).await {
        Ok(()) => {
            println!("Event '{name}' dispatched! Coalescing enabled: {coalesce}");
            0
        }
        Err(e) => fail(format!("Error sending event: {e}")),
    }
}

const QUERY_HELP: &str = "
Usage: gossip query [options] name [payload]

  Sends a query to the cluster and prints acknowledgements and responses.

Options:
  -format                   'text' (default) or 'json'.
  -no-ack                   Do not ask nodes to acknowledge.
  -node=NAME                Only this node (repeatable).
  -relay-factor=N           Relay each response through N other nodes (0-255).
  -tag key=regexp           Only nodes whose tag matches (repeatable).
  -timeout=15s              How long to wait (default: the agent's).
  -rpc-addr=127.0.0.1:7373  RPC address of the Serf agent.
  -rpc-auth=\"\"              RPC auth token of the Serf agent.
";

#[derive(Serialize)]
struct JsonQuery {
    #[serde(rename = "Acks")]
    acks: Option<Vec<String>>,
    #[serde(rename = "Responses")]
    responses: BTreeMap<String, String>,
}

pub async fn query(argv: &[String]) -> i32 {
    let f = match parse(
        &[
            ("node", Kind::List),
            ("tag", Kind::List),
            ("timeout", Kind::Value),
            ("no-ack", Kind::Bool),
            ("format", Kind::Value),
            ("relay-factor", Kind::Value),
        ],
        argv,
        QUERY_HELP,
    ) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let filter_tags = match parse_tags(&f.list("tag")) {
        Ok(t) => t,
        Err(e) => return fail(format!("Error: {e}")),
    };
    let timeout = match f.value("timeout").map(parse_duration).transpose() {
        Ok(t) => t.unwrap_or_default(),
        Err(e) => return fail(format!("Error: {e}")),
    };
    let relay_factor = match f.value("relay-factor").unwrap_or("0").parse::<u8>() {
        Ok(n) => n,
        Err(_) => return fail("Relay factor must be between 0 and 255"),
    };
    match f.args.len() {
        0 => {
            return fail(format!(
                "A query name must be specified.\n\n{}",
                QUERY_HELP.trim()
            ))
        }
        1 | 2 => {}
        _ => {
            return fail(format!(
                "Too many command line arguments. Only a name and payload must be specified.\n\n{}",
                QUERY_HELP.trim()
            ))
        }
    }
    let format = f.value("format").unwrap_or("text");
    if format != "text" && format != "json" {
        return fail(format!("Invalid format: {format}"));
    }
    let no_ack = f.bool("no-ack", false);
    let name = f.args[0].clone();
    let client = match connect(&f).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let params = QueryParams {
        name: name.clone(),
        payload: f
            .args
            .get(1)
            .map(|p| p.as_bytes().to_vec())
            .unwrap_or_default(),
        filter_nodes: f.list("node"),
        filter_tags: filter_tags.into_iter().collect(),
        request_ack: !no_ack,
        relay_factor,
        timeout,
    };
    let mut replies = match client.query(params).await {
        Ok(r) => r,
        Err(e) => return fail(format!("Error sending query: {e}")),
    };
    let text = format == "text";
    if text {
        println!("Query '{name}' dispatched");
    }
    let mut acks = Vec::new();
    let mut responses = BTreeMap::new();
    let mut num_resp = 0;
    while let Some(r) = replies.recv().await {
        match r {
            QueryReply::Ack { from } => {
                if text {
                    println!("Ack from '{from}'");
                }
                acks.push(from);
            }
            QueryReply::Response { from, payload } => {
                num_resp += 1;
                let mut p = payload;
                if text {
                    if p.ends_with(b"\n") {
                        p.pop();
                    }
                    println!("Response from '{from}': {}", String::from_utf8_lossy(&p));
                }
                responses.insert(from, String::from_utf8_lossy(&p).into_owned());
            }
            QueryReply::Done => break,
        }
    }
    if text {
        if !no_ack {
            println!("Total Acks: {}", acks.len());
        }
        println!("Total Responses: {num_resp}");
    } else {
        let out = JsonQuery {
            acks: (!acks.is_empty()).then_some(acks),
            responses,
        };
        println!("{}", json(&out));
    }
    0
}

const TAGS_HELP: &str = "
Usage: gossip tags [options] ...

  Modifies tags on a running Serf agent.

Options:
  -set key=value            Create or update a tag (repeatable).
  -delete key               Remove a tag (repeatable).
  -rpc-addr=127.0.0.1:7373  RPC address of the Serf agent.
  -rpc-auth=\"\"              RPC auth token of the Serf agent.
";

pub async fn tags(argv: &[String]) -> i32 {
    let f = match parse(
        &[("set", Kind::List), ("delete", Kind::List)],
        argv,
        TAGS_HELP,
    ) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let set = f.list("set");
    let delete = f.list("delete");
    if set.is_empty() && delete.is_empty() {
        println!("{}", TAGS_HELP.trim());
        return 1;
    }
    let set = match parse_tags(&set) {
        Ok(t) => t,
        Err(e) => return fail(format!("Error: {e}")),
    };
    let client = match connect(&f).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.update_tags(&set, &delete).await {
        Ok(()) => {
            println!("Successfully updated agent tags");
            0
        }
        Err(e) => fail(format!("Error setting tags: {e}")),
    }
}

const INFO_HELP: &str = "
Usage: gossip info [options]

  Prints debugging information about the agent.

Options:
  -format                   'text' (default) or 'json'.
  -rpc-addr=127.0.0.1:7373  RPC address of the Serf agent.
  -rpc-auth=\"\"              RPC auth token of the Serf agent.
";

pub async fn info(argv: &[String]) -> i32 {
    let f = match parse(&[("format", Kind::Value)], argv, INFO_HELP) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let format = f.value("format").unwrap_or("text");
    if format != "text" && format != "json" {
        return fail(format!(
            "Encoding error: Invalid output format \"{format}\""
        ));
    }
    let client = match connect(&f).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let stats = match client.stats().await {
        Ok(s) => s,
        Err(e) => return fail(format!("Error querying agent: {e}")),
    };
    if format == "json" {
        println!("{}", json(&stats));
        return 0;
    }
    let mut out = String::new();
    for (section, kv) in &stats {
        out.push_str(section);
        out.push_str(":\n");
        for (k, v) in kv {
            out.push_str(&format!("\t{k} = {v}\n"));
        }
    }
    println!("{}", out.trim());
    0
}

const MONITOR_HELP: &str = "
Usage: gossip monitor [options]

  Streams the agent's log lines until interrupted.

Options:
  -log-level=info           trace, debug, info, warn or err.
  -rpc-addr=127.0.0.1:7373  RPC address of the Serf agent.
  -rpc-auth=\"\"              RPC auth token of the Serf agent.
";

pub async fn monitor(argv: &[String]) -> i32 {
    let f = match parse(&[("log-level", Kind::Value)], argv, MONITOR_HELP) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let client = match connect(&f).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut logs = match client.monitor(f.value("log-level").unwrap_or("INFO")).await {
        Ok(l) => l,
        Err(e) => return fail(format!("Error starting monitor: {e}")),
    };
    loop {
        tokio::select! {
            line = logs.recv() => match line {
                Some(l) => println!("{l}"),
                None => {
                    println!("Remote side ended the monitor! This usually means that the\nremote side has exited or crashed.");
                    return 1;
                }
            },
            _ = tokio::signal::ctrl_c() => return 0,
        }
    }
}

const REACHABILITY_HELP: &str = "
Usage: gossip reachability [options]

  Pings every live member through a query and reports who did not answer.

Options:
  -verbose                  Print each acknowledgement.
  -rpc-addr=127.0.0.1:7373  RPC address of the Serf agent.
  -rpc-auth=\"\"              RPC auth token of the Serf agent.
";

pub async fn reachability(argv: &[String]) -> i32 {
    let f = match parse(&[("verbose", Kind::Bool)], argv, REACHABILITY_HELP) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let verbose = f.bool("verbose", false);
    let client = match connect(&f).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let members = match client.members().await {
        Ok(m) => m,
        Err(e) => return fail(format!("Error getting members: {e}")),
    };
    let live: Vec<&str> = members
        .iter()
        .filter(|m| m.status == MemberStatus::Alive)
        .map(|m| m.name.as_str())
        .collect();
    println!(
        "Total members: {}, live members: {}",
        members.len(),
        live.len()
    );
    let params = QueryParams {
        name: "_serf_ping".into(),
        request_ack: true,
        ..Default::default()
    };
    let mut replies = match client.query(params).await {
        Ok(r) => r,
        Err(e) => return fail(format!("Error sending query: {e}")),
    };
    println!("Starting reachability test...");
    let start = Instant::now();
    let mut last = Duration::ZERO;
    let mut acked: Vec<String> = Vec::new();
    while let Some(r) = replies.recv().await {
        match r {
            QueryReply::Ack { from } => {
                if verbose {
                    println!("\tAck from '{from}'");
                }
                last = start.elapsed();
                if acked.contains(&from) {
                    println!("Duplicate response from '{from}'");
                } else {
                    acked.push(from);
                }
            }
            QueryReply::Response { .. } => {}
            QueryReply::Done => break,
        }
    }
    if verbose {
        println!(
            "Query time: {:.2} sec, time to last response: {:.2} sec",
            start.elapsed().as_secs_f64(),
            last.as_secs_f64()
        );
    }
    let missing: Vec<&&str> = live
        .iter()
        .filter(|n| !acked.iter().any(|a| a == **n))
        .collect();
    let extra: Vec<&String> = acked
        .iter()
        .filter(|a| !live.contains(&a.as_str()))
        .collect();
    if missing.is_empty() && extra.is_empty() {
        println!("Successfully contacted all live nodes");
        return 0;
    }
    if !extra.is_empty() {
        println!("Received more acks than live nodes! Acks from non-live nodes:");
        for m in extra {
            println!("\t{m}");
        }
    }
    if !missing.is_empty() {
        println!("Received less acks than live nodes! Missing acks from:");
        for m in missing {
            println!("\t{m}");
        }
    }
    1
}

const KEYS_HELP: &str = "
Usage: gossip keys [options]

  Manages the cluster's gossip encryption keyring.

Options:
  -install=<key>            Install a new key on every member.
  -use=<key>                Make an installed key the primary one.
  -remove=<key>             Remove a key from every member.
  -list                     List the installed keys and how many members have each.
  -rpc-addr=127.0.0.1:7373  RPC address of the Serf agent.
  -rpc-auth=\"\"              RPC auth token of the Serf agent.
";

pub async fn keys(argv: &[String]) -> i32 {
    let f = match parse(
        &[
            ("install", Kind::Value),
            ("use", Kind::Value),
            ("remove", Kind::Value),
            ("list", Kind::Bool),
        ],
        argv,
        KEYS_HELP,
    ) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let list = f.bool("list", false);
    let chosen = ["install", "use", "remove"]
        .iter()
        .filter(|n| f.is_set(n))
        .count()
        + usize::from(list);
    if chosen != 1 {
        if chosen > 1 {
            eprintln!("Only one of -install, -use, -remove, or -list allowed");
        }
        return fail(KEYS_HELP.trim());
    }
    let client = match connect(&f).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (start, done, failed, result) = if list {
        (
            "Asking all members for installed keys...",
            "Keys gathered, listing cluster keys...",
            "Failed to gather member keys",
            client.list_keys().await,
        )
    } else if let Some(k) = f.value("install") {
        (
            "Installing key on all members...",
            "Successfully installed key!",
            "Error installing key",
            client.install_key(k).await,
        )
    } else if let Some(k) = f.value("use") {
        (
            "Changing primary key on all members...",
            "Successfully changed primary key!",
            "Error changing primary key",
            client.use_key(k).await,
        )
    } else {
        let k = f.value("remove").unwrap_or_default();
        (
            "Removing key on all members...",
            "Successfully removed key!",
            "Error removing key",
            client.remove_key(k).await,
        )
    };
    println!("==> {start}");
    let resp = match result {
        Ok(r) if r.num_err == 0 => r,
        Ok(r) => {
            let rows: Vec<Vec<String>> = r
                .messages
                .iter()
                .map(|(n, m)| vec!["failed:".into(), n.clone(), m.clone()])
                .collect();
            eprintln!("{}\n", columnize(&rows));
            return fail(format!(
                "{failed}: {}/{} nodes reported failure",
                r.num_err, r.num_nodes
            ));
        }
        Err(e) => return fail(format!("{failed}: {e}")),
    };
    println!("==> {done}");
    if list {
        let rows: Vec<Vec<String>> = resp
            .keys
            .iter()
            .map(|(k, n)| vec![k.clone(), format!("[{n}/{}]", resp.num_nodes)])
            .collect();
        println!("\n{}", columnize(&rows));
    }
    0
}

pub fn keygen(argv: &[String]) -> i32 {
    if !argv.is_empty() {
        return fail("Usage: gossip keygen (takes no arguments)");
    }
    let mut key = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key));
    if let Err(e) = read {
        return fail(format!("Error reading random data: {e}"));
    }
    println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
    0
}

pub fn version() -> i32 {
    println!(
        "gossip v{} (Serf 0.9.4 compatible)",
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "Agent Protocol: {} (Understands back to: {})",
        super::PROTOCOL_MAX,
        super::PROTOCOL_MIN
    );
    0
}
