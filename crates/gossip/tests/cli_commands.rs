//! The `gossip` client commands against a real `serf agent` 0.9.4, compared
//! with what the real `serf` CLI prints for the same agent.

use std::process::{Command, Output};

use testkit::{eventually_blocking, SerfAgent, DEADLINE, SERF};

const GOSSIP: &str = env!("CARGO_BIN_EXE_gossip");

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("SERF_RPC_ADDR")
        .env_remove("SERF_RPC_AUTH")
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"))
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn members_output_matches_serf_byte_for_byte() {
    let a = SerfAgent::builder("cli-a")
        .tag("role", "lb")
        .start_blocking();
    let b = SerfAgent::builder("cli-bee-long")
        .tag("role", "backend")
        .tag("zone", "z1")
        .start_blocking();
    let rpc = format!("-rpc-addr={}", a.rpc);
    let o = run(GOSSIP, &["join", &rpc, &b.bind.to_string()]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        out(&o),
        "Successfully joined cluster by contacting 1 nodes.\n"
    );

    // JSON sorts tags, so both print the same bytes; serf lists members in
    // Go map order, so compare one member at a time.
    for name in ["cli-a", "cli-bee-long"] {
        let filter = format!("-name={name}");
        let ours = run(GOSSIP, &["members", &rpc, &filter, "-format=json"]);
        let theirs = run(SERF, &["members", &rpc, &filter, "-format=json"]);
        assert!(ours.status.success(), "{ours:?}");
        assert_eq!(out(&ours), out(&theirs));
    }
    let all = run(GOSSIP, &["members", &rpc, "-format=json"]);
    let v: serde_json::Value = serde_json::from_slice(&all.stdout).unwrap();
    assert_eq!(v["members"].as_array().unwrap().len(), 2, "{all:?}");

    // Text: serf prints tags in Go map order, so compare with one tag only.
    let ours = run(GOSSIP, &["members", &rpc, "--tag", "role=lb", "-detailed"]);
    let theirs = run(SERF, &["members", &rpc, "-tag", "role=lb", "-detailed"]);
    assert_eq!(out(&ours), out(&theirs));
    let ours = run(GOSSIP, &["members", &rpc, "-status=alive", "-name=cli-a"]);
    assert_eq!(out(&ours), format!("cli-a  {}  alive  role=lb\n", a.bind));
    let none = run(
        GOSSIP,
        &["members", &rpc, "-name=nobody", "-format", "json"],
    );
    assert_eq!(
        out(&none),
        out(&run(
            SERF,
            &["members", &rpc, "-name=nobody", "-format", "json"]
        ))
    );
}

#[test]
fn event_tags_info_query_and_leave_through_our_cli() {
    let mut a = SerfAgent::builder("cli-ev")
        .tag("role", "lb")
        .start_blocking();
    let rpc = format!("--rpc-addr={}", a.rpc);

    let o = run(GOSSIP, &["event", &rpc, "deploy", "v1"]);
    assert_eq!(
        out(&o),
        "Event 'deploy' dispatched! Coalescing enabled: true\n"
    );
    let o = run(GOSSIP, &["event", &rpc, "-coalesce=false", "deploy"]);
    assert_eq!(
        out(&o),
        "Event 'deploy' dispatched! Coalescing enabled: false\n"
    );

    let o = run(
        GOSSIP,
        &["tags", &rpc, "-set", "color=blue", "--delete", "role"],
    );
    assert_eq!(out(&o), "Successfully updated agent tags\n");
    let o = run(SERF, &["members", &rpc.replacen("--", "-", 1)]);
    assert!(out(&o).trim_end().ends_with("alive  color=blue"), "{o:?}");

    let o = run(GOSSIP, &["info", &rpc]);
    let text = out(&o);
    assert!(text.starts_with("agent:\n\tname = cli-ev\n"), "{text}");
    assert!(
        text.contains("\nserf:\n") && text.contains("\tmembers = 1\n"),
        "{text}"
    );
    let ours = run(GOSSIP, &["info", &rpc, "-format=json"]);
    let v: serde_json::Value = serde_json::from_slice(&ours.stdout).unwrap();
    assert_eq!(v["agent"]["name"], "cli-ev");

    let o = run(GOSSIP, &["query", &rpc, "-timeout=2s", "ping", "x"]);
    assert_eq!(
        out(&o),
        "Query 'ping' dispatched\nAck from 'cli-ev'\nTotal Acks: 1\nTotal Responses: 0\n"
    );
    let o = run(
        GOSSIP,
        &["query", &rpc, "-timeout=1s", "-format=json", "ping"],
    );
    assert_eq!(
        out(&o),
        "{\n  \"Acks\": [\n    \"cli-ev\"\n  ],\n  \"Responses\": {}\n}\n"
    );
    let o = run(GOSSIP, &["reachability", &rpc]);
    assert_eq!(
        out(&o),
        "Total members: 1, live members: 1\nStarting reachability test...\nSuccessfully contacted all live nodes\n"
    );
    // rtt with one name: the second is the agent's own node; same line as
    // serf's own CLI (a lone node's distance to itself is its two heights).
    let o = run(GOSSIP, &["rtt", &rpc, "cli-ev"]);
    assert_eq!(
        out(&o),
        out(&run(SERF, &["rtt", &rpc.replacen("--", "-", 1), "cli-ev"]))
    );
    assert_eq!(out(&o), "Estimated cli-ev <-> cli-ev rtt: 0.020 ms\n");

    // SERF_RPC_ADDR is honoured when no flag is given.
    let o = Command::new(GOSSIP)
        .args(["members"])
        .env("SERF_RPC_ADDR", a.rpc.to_string())
        .output()
        .unwrap();
    assert!(out(&o).starts_with("cli-ev "), "{o:?}");

    let o = run(GOSSIP, &["leave", &rpc]);
    assert_eq!(out(&o), "Graceful leave complete\n");
    eventually_blocking("serf agent exit after leave", DEADLINE, || {
        a.exited().then_some(())
    });
}

#[test]
fn errors_are_one_clear_line() {
    let port = testkit::free_port();
    let o = run(GOSSIP, &["members", &format!("-rpc-addr=127.0.0.1:{port}")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).starts_with("Error connecting to Serf agent"),
        "{o:?}"
    );
    assert!(err(&o).contains(&format!("127.0.0.1:{port}")), "{o:?}");

    let o = run(GOSSIP, &["members", "-bogus"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).starts_with("flag provided but not defined: -bogus"),
        "{o:?}"
    );
    let o = run(GOSSIP, &["members", "-format=xml"]);
    assert!(err(&o).contains("\"xml\""), "{o:?}");
    let o = run(GOSSIP, &["event"]);
    assert!(
        err(&o).starts_with("An event name must be specified."),
        "{o:?}"
    );
    let o = run(GOSSIP, &["query", "-timeout=soon", "q"]);
    assert!(err(&o).contains("soon"), "{o:?}");
    let o = run(GOSSIP, &["frobnicate"]);
    assert!(err(&o).contains("frobnicate"), "{o:?}");
    let o = run(GOSSIP, &["agent", "-node=x", "-bind=not-an-ip"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("not-an-ip"), "{o:?}");
}

#[test]
fn keygen_and_version() {
    use base64::Engine as _;
    let o = run(GOSSIP, &["keygen"]);
    let key = out(&o);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .expect("base64 key");
    assert_eq!(bytes.len(), 32);
    assert_ne!(key, out(&run(GOSSIP, &["keygen"])));
    let o = run(GOSSIP, &["version"]);
    assert!(
        out(&o).contains("Agent Protocol: 5 (Understands back to: 2)"),
        "{o:?}"
    );
}
