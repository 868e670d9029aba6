//! Sending to the cluster: `event` (a user event) and `query` (a query,
//! with its acks and responses printed as they come).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{connect, fail, name_and_payload, parse, parse_tags, Usage};
use crate::cli::flags::parse_duration;
use crate::cli::output::json;
use crate::model::{QueryParams, QueryReply};

const EVENT: Usage = Usage {
    text: "
Usage: gossip event [options] name [payload]

  Dispatches a custom user event across the cluster.

Options:
  -coalesce=true/false      Whether handlers may coalesce this event (default true).
",
    bools: &["coalesce"],
    ..Usage::NO_FLAGS
};

pub async fn event(argv: &[String]) -> i32 {
    let f = or_exit!(parse(&EVENT, argv));
    let (name, payload) = or_exit!(name_and_payload(
        &f,
        "An event name must be specified.",
        &EVENT
    ));
    let coalesce = f.bool("coalesce", true);
    let client = or_exit!(connect(&f).await);
    match client.user_event(name, payload, coalesce).await {
        Ok(()) => {
            println!("Event '{name}' dispatched! Coalescing enabled: {coalesce}");
            0
        }
        Err(e) => fail(format!("Error sending event: {e}")),
    }
}

const QUERY: Usage = Usage {
    text: "
Usage: gossip query [options] name [payload]

  Sends a query to the cluster and prints acknowledgements and responses.

Options:
  -format                   'text' (default) or 'json'.
  -no-ack                   Do not ask nodes to acknowledge.
  -node=NAME                Only this node (repeatable).
  -relay-factor=N           Relay each response through N other nodes (0-255).
  -tag key=regexp           Only nodes whose tag matches (repeatable).
  -timeout=15s              How long to wait (default: the agent's).
",
    bools: &["no-ack"],
    values: &["format", "relay-factor", "timeout"],
    lists: &["node", "tag"],
};

#[derive(Serialize)]
struct JsonQuery {
    #[serde(rename = "Acks")]
    acks: Option<Vec<String>>,
    #[serde(rename = "Responses")]
    responses: BTreeMap<String, String>,
}

pub async fn query(argv: &[String]) -> i32 {
    let f = or_exit!(parse(&QUERY, argv));
    let filter_tags = or_exit!(parse_tags(&f.list("tag")), "Error");
    let timeout =
        or_exit!(f.value("timeout").map(parse_duration).transpose(), "Error").unwrap_or_default();
    let relay_factor = match f.value("relay-factor").unwrap_or("0").parse::<u8>() {
        Ok(n) => n,
        Err(_) => return fail("Relay factor must be between 0 and 255"),
    };
    let (name, payload) = or_exit!(name_and_payload(
        &f,
        "A query name must be specified.",
        &QUERY
    ));
    let format = f.value("format").unwrap_or("text");
    if format != "text" && format != "json" {
        return fail(format!("Invalid format: {format}"));
    }
    let no_ack = f.bool("no-ack", false);
    let client = or_exit!(connect(&f).await);
    let params = QueryParams {
        name: name.to_string(),
        payload: payload.to_vec(),
        filter_nodes: f.list("node"),
        filter_tags: filter_tags.into_iter().collect(),
        request_ack: !no_ack,
        relay_factor,
        timeout,
    };
    let mut replies = or_exit!(client.query(params).await, "Error sending query");
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
