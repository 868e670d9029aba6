//! Looking into an agent: `info` (its stats), `monitor` (its log lines)
//! and `rtt` (round trips estimated from network coordinates).

use super::{connect, fail, output_format, parse, Usage};
use crate::cli::output::json;

const INFO: Usage = Usage {
    text: "
Usage: gossip info [options]

  Prints debugging information about the agent.

Options:
  -format                   'text' (default) or 'json'.
",
    values: &["format"],
    ..Usage::NO_FLAGS
};

pub async fn info(argv: &[String]) -> i32 {
    let f = or_exit!(parse(&INFO, argv));
    let format = or_exit!(output_format(&f));
    let client = or_exit!(connect(&f).await);
    let stats = or_exit!(client.stats().await, "Error querying agent");
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

const MONITOR: Usage = Usage {
    text: "
Usage: gossip monitor [options]

  Streams the agent's log lines until interrupted.

Options:
  -log-level=info           trace, debug, info, warn or err.
",
    values: &["log-level"],
    ..Usage::NO_FLAGS
};

pub async fn monitor(argv: &[String]) -> i32 {
    let f = or_exit!(parse(&MONITOR, argv));
    let client = or_exit!(connect(&f).await);
    let mut logs = or_exit!(
        client.monitor(f.value("log-level").unwrap_or("INFO")).await,
        "Error starting monitor"
    );
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

const RTT: Usage = Usage {
    text: "
Usage: gossip rtt [options] node1 [node2]

  Estimates the round trip time between two nodes from the agent's network
  coordinates (Vivaldi, updated by every probe). Without node2, the second
  node is the agent's own. Node names as `members` shows them, not
  addresses.

Options:
",
    ..Usage::NO_FLAGS
};

pub async fn rtt(argv: &[String]) -> i32 {
    let f = or_exit!(parse(&RTT, argv));
    if f.args.is_empty() || f.args.len() > 2 {
        eprintln!("One or two node names must be specified\n\n{}", RTT.help());
        return 1;
    }
    let client = or_exit!(connect(&f).await);
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
