//! The membership commands: `members`, `join`, `leave`, `force-leave`,
//! `tags` (this agent's) and `reachability` (who answers a ping query).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{connect, fail, output_format, parse, parse_tags, Usage};
use crate::cli::output::{columnize, json};
use crate::model::{MemberStatus, QueryParams, QueryReply};

const MEMBERS: Usage = Usage {
    text: "
Usage: gossip members [options]

  Outputs the members of a running Serf agent.

Options:
  -detailed                 Additional information such as protocol versions.
  -format                   Output format: 'json' or 'text' (default).
  -name=<regexp>            Only members whose name matches (anchored).
  -role=<regexp>            Deprecated: same as -tag role=<regexp>.
  -status=<regexp>          Only members whose status matches.
  -tag <key>=<regexp>       Only members with a matching tag (repeatable).
",
    bools: &["detailed"],
    values: &["format", "name", "role", "status"],
    lists: &["tag"],
};

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
    let f = or_exit!(parse(&MEMBERS, argv));
    let mut tag_list = f.list("tag");
    if let Some(role) = f.value("role") {
        println!("Deprecation warning: 'Role' has been replaced with 'Tags'");
        tag_list.push(format!("role={role}"));
    }
    let tags = or_exit!(parse_tags(&tag_list), "Error");
    let format = or_exit!(output_format(&f));
    let client = or_exit!(connect(&f).await);
    let members = or_exit!(
        client
            .members_filtered(
                &tags,
                f.value("status").unwrap_or(""),
                f.value("name").unwrap_or(""),
            )
            .await,
        "Error retrieving members"
    );
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

const JOIN: Usage = Usage {
    text: "
Usage: gossip join [options] address ...

  Tells a running Serf agent to join the cluster through the given
  addresses (host or host:port, DNS names allowed).

Options:
  -replay                   Replay past user events.
",
    bools: &["replay"],
    ..Usage::NO_FLAGS
};

pub async fn join(argv: &[String]) -> i32 {
    let f = or_exit!(parse(&JOIN, argv));
    if f.args.is_empty() {
        return fail(format!(
            "At least one address to join must be specified.\n\n{}",
            JOIN.help()
        ));
    }
    let client = or_exit!(connect(&f).await);
    match client.join(&f.args, f.bool("replay", false)).await {
        Ok(n) => {
            println!("Successfully joined cluster by contacting {n} nodes.");
            0
        }
        Err(e) => fail(format!("Error joining the cluster: {e}")),
    }
}

const LEAVE: Usage = Usage {
    text: "
Usage: gossip leave

  Causes the agent to gracefully leave the Serf cluster and shut down.

Options:
",
    ..Usage::NO_FLAGS
};

pub async fn leave(argv: &[String]) -> i32 {
    let f = or_exit!(parse(&LEAVE, argv));
    let client = or_exit!(connect(&f).await);
    match client.leave().await {
        Ok(()) => {
            println!("Graceful leave complete");
            0
        }
        Err(e) => fail(format!("Error leaving: {e}")),
    }
}

const FORCE_LEAVE: Usage = Usage {
    text: "
Usage: gossip force-leave [options] name

  Forces a member of the cluster into the \"left\" state, e.g. a failed
  node that will not come back.

Options:
  -prune                    Remove the node from the member list at once.
",
    bools: &["prune"],
    ..Usage::NO_FLAGS
};

pub async fn force_leave(argv: &[String]) -> i32 {
    let f = or_exit!(parse(&FORCE_LEAVE, argv));
    if f.args.len() != 1 {
        return fail(format!(
            "A node name must be specified to force leave.\n\n{}",
            FORCE_LEAVE.help()
        ));
    }
    let client = or_exit!(connect(&f).await);
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

const TAGS: Usage = Usage {
    text: "
Usage: gossip tags [options] ...

  Modifies tags on a running Serf agent.

Options:
  -set key=value            Create or update a tag (repeatable).
  -delete key               Remove a tag (repeatable).
",
    lists: &["set", "delete"],
    ..Usage::NO_FLAGS
};

pub async fn tags(argv: &[String]) -> i32 {
    let f = or_exit!(parse(&TAGS, argv));
    let set = f.list("set");
    let delete = f.list("delete");
    if set.is_empty() && delete.is_empty() {
        println!("{}", TAGS.help());
        return 1;
    }
    let set = or_exit!(parse_tags(&set), "Error");
    let client = or_exit!(connect(&f).await);
    match client.update_tags(&set, &delete).await {
        Ok(()) => {
            println!("Successfully updated agent tags");
            0
        }
        Err(e) => fail(format!("Error setting tags: {e}")),
    }
}

const REACHABILITY: Usage = Usage {
    text: "
Usage: gossip reachability [options]

  Pings every live member through a query and reports who did not answer.

Options:
  -verbose                  Print each acknowledgement.
",
    bools: &["verbose"],
    ..Usage::NO_FLAGS
};

pub async fn reachability(argv: &[String]) -> i32 {
    let f = or_exit!(parse(&REACHABILITY, argv));
    let verbose = f.bool("verbose", false);
    let client = or_exit!(connect(&f).await);
    let members = or_exit!(client.members().await, "Error getting members");
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
    let mut replies = or_exit!(client.query(params).await, "Error sending query");
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
