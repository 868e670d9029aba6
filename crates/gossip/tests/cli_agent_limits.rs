//! `gossip agent` refusing what serf 0.9.4 refuses, with serf's words:
//! unusable snapshot paths, keyring files and tags, and serf's size
//! limits on events, queries and responses, side by side with a real
//! `serf agent`.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::cli::{poll, serf, serf_stdout, GossipAgent, GOSSIP};
use testkit::{eventually_blocking_explained, temp_dir, ChildGuard, SerfAgent, DEADLINE};

#[test]
fn tag_flags_conflict_with_an_existing_tags_file() {
    let dir = temp_dir("cli-agent-tagsconflict");
    let dir = dir.path();
    let tags_file = dir.join("tags.json");
    std::fs::write(&tags_file, r#"{"role": "web"}"#).unwrap();
    let o = Command::new(GOSSIP)
        .args(["agent", "-node=x", "-tag=role=db"])
        .arg(format!("-tags-file={}", tags_file.display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("Tags config not allowed while using tag files"),
        "{o:?}"
    );
}

/// Runs `gossip agent ARGS` that must refuse to start: its output, once it
/// exited (a regression that starts the agent fails at the deadline instead
/// of hanging).
fn refused_start(args: &[String]) -> Output {
    let mut child = ChildGuard::spawn(
        &format!("gossip agent with {args:?} (it must refuse to start)"),
        Command::new(GOSSIP)
            .args([
                "agent",
                "-node=x",
                "-bind=127.0.0.1:0",
                "-rpc-addr=127.0.0.1:0",
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let o = child.output_blocking(DEADLINE);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {o:?}");
    // Nothing happened before the refusal: no member event was logged.
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("member-join"),
        "{o:?}"
    );
    o
}

#[test]
fn a_snapshot_path_that_cannot_be_opened_stops_the_start() {
    let dir = temp_dir("cli-agent-badsnapshot");
    let dir = dir.path();
    // A directory where the snapshot file should be.
    let snapshot = dir.join("snapshot");
    std::fs::create_dir_all(&snapshot).unwrap();
    let o = refused_start(&[format!("-snapshot={}", snapshot.display())]);
    let want = format!("cannot open the snapshot file {}", snapshot.display());
    assert!(String::from_utf8_lossy(&o.stderr).contains(&want), "{o:?}");
}

#[test]
fn a_keyring_file_without_usable_keys_stops_the_start() {
    // Before, each of these started an agent gossiping in plain text whose
    // banner said `Encrypted: true`. serf 0.8 refuses all of them too.
    let dir = temp_dir("cli-agent-badkeyring");
    let dir = dir.path();
    let key = "QHOYjmYlxSCBhdfiolhtDQ==";
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let missing = dir.join("missing.json").display().to_string();
    let not_json = file("not-json", "QHOYjmYlxSCBhdfiolhtDQ==\n");
    let empty = file("empty.json", "[]");
    let bad_key = file("bad-key.json", &format!("[\"{key}\", \"not base64!\"]"));
    let short = file("short.json", "[\"c2hvcnQ=\"]");
    let good = file("good.json", &format!("[\"{key}\"]"));
    let cases: [(Vec<String>, String); 6] = [
        (
            vec![format!("-keyring-file={missing}")],
            format!("cannot read keyring file {missing}"),
        ),
        (
            vec![format!("-keyring-file={not_json}")],
            format!("keyring file {not_json} is not a JSON list of keys"),
        ),
        (
            vec![format!("-keyring-file={empty}")],
            format!("no keys present in keyring file {empty}"),
        ),
        (
            vec![format!("-keyring-file={bad_key}")],
            format!("bad key #2 in keyring file {bad_key}"),
        ),
        (
            vec![format!("-keyring-file={short}")],
            "encryption key must be 16, 24 or 32 bytes, got 5".into(),
        ),
        (
            vec![format!("-keyring-file={good}"), format!("-encrypt={key}")],
            "Encryption key not allowed while using a keyring".into(),
        ),
    ];
    for (args, want) in cases {
        let o = refused_start(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&want), "{args:?}: want {want:?} in {err}");
        assert!(!err.contains("not base64!"), "a key is echoed: {err}");
    }
}

/// Serf's size limits, side by side with the real serf: the same refusals
/// through either agent's RPC (user event, query, a handler's response),
/// the config keys that widen them, and the 9 KiB ceiling at start.
#[test]
fn size_limits_match_serf_and_follow_its_config_keys() {
    let dir = temp_dir("cli-agent-limits");
    let dir = dir.path();
    // A query handler answering 1500 bytes; a user-event handler recording
    // the size of the payload it got.
    let answer = dir.join("answer.sh");
    std::fs::write(&answer, "#!/bin/sh\nhead -c 1500 /dev/zero | tr '\\0' b\n").unwrap();
    let got = dir.join("serf-got");
    let record = dir.join("record.sh");
    std::fs::write(
        &record,
        format!(
            "#!/bin/sh\nwc -c > {}.tmp && mv {0}.tmp {0}\n",
            got.display()
        ),
    )
    .unwrap();
    for f in [&answer, &record] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let big_query = format!("query:big={}", answer.display());
    let s = SerfAgent::builder("l-serf")
        .event_handler(&big_query)
        .event_handler(&format!("user:big={}", record.display()))
        .start_blocking();
    let ours = GossipAgent::start(
        "l-ours",
        dir,
        &[
            format!("-join={}", s.bind),
            "-event-handler".into(),
            big_query.clone(),
        ],
    );
    let wide_cfg = dir.join("wide.json");
    std::fs::write(
        &wide_cfg,
        r#"{"user_event_size_limit": 2048, "query_response_size_limit": 2048}"#,
    )
    .unwrap();
    let wide = GossipAgent::start(
        "l-wide",
        dir,
        &[
            format!("-join={}", s.bind),
            format!("-config-file={}", wide_cfg.display()),
            "-event-handler".into(),
            big_query.clone(),
        ],
    );
    let logs = || format!("{}\n{}\nserf:\n{}", ours.logs(), wide.logs(), s.log_text());
    poll("three members alive", logs, || {
        let out = serf_stdout(&["members", &format!("-rpc-addr={}", s.rpc), "-status=alive"]);
        (out.lines().count() == 3).then_some(())
    });

    let a = |n: usize| "a".repeat(n);
    for (args, want) in [
        (
            vec!["event".to_string(), "big".into(), a(600)],
            "Error sending event: user event exceeds configured limit of 512 bytes before encoding",
        ),
        (
            vec!["event".to_string(), "big".into(), a(490)],
            "Error sending event: encoded user event exceeds configured limit of 512 bytes after encoding",
        ),
        (
            vec!["query".to_string(), "-timeout=1s".into(), "big".into(), a(1100)],
            "Error sending query: query exceeds limit of 1024 bytes",
        ),
    ] {
        for rpc in [s.rpc, ours.rpc] {
            let mut argv = vec![args[0].clone(), format!("-rpc-addr={rpc}")];
            argv.extend(args[1..].iter().cloned());
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let o = serf(&argv);
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{rpc}: {argv:?} accepted: {text}");
            assert!(text.contains(want), "{rpc}: {:?}: {text}", args[0]);
        }
    }

    // 1500-byte answers: serf and l-ours refuse to send them (1024), l-wide
    // sends its own (2048).
    let o = serf(&[
        "query",
        &format!("-rpc-addr={}", ours.rpc),
        "-timeout=3s",
        "big",
    ]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("Total Acks: 3"), "{text}\n{}", logs());
    assert!(text.contains("Total Responses: 1"), "{text}\n{}", logs());
    assert!(
        text.contains(&format!("Response from 'l-wide': {}", "b".repeat(1500))),
        "{text}"
    );
    poll("l-ours to log the refused response", logs, || {
        ours.logs()
            .contains("Failed to respond to query 'big': response exceeds limit of 1024 bytes")
            .then_some(())
    });

    // l-wide sends a 1500-byte event (too big for a gossip packet: it
    // travels by push-pull, every 30 s); serf's handler receives it whole.
    let o = serf(&[
        "event",
        &format!("-rpc-addr={}", wide.rpc),
        "big",
        &"e".repeat(1500),
    ]);
    assert!(o.status.success(), "{o:?}");
    eventually_blocking_explained(
        "serf's handler to get the 1500-byte event",
        Duration::from_secs(75),
        || {
            let n = std::fs::read_to_string(&got).unwrap_or_default();
            format!("serf's handler got {n:?} bytes\n{}", logs())
        },
        || {
            let n = std::fs::read_to_string(&got).unwrap_or_default();
            // serf's handler gets the payload plus the newline serf appends.
            (n.trim() == "1501").then_some(())
        },
    );

    // The ceiling is Serf's: 9216 bytes.
    let too_wide = dir.join("too-wide.json");
    std::fs::write(&too_wide, r#"{"user_event_size_limit": 10000}"#).unwrap();
    let o = refused_start(&[format!("-config-file={}", too_wide.display())]);
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("user event size limit 10000 exceeds limit of 9216 bytes"),
        "{o:?}"
    );
}

/// Tags must fit memberlist's 512 bytes of node meta: too many stop the
/// start, and a change through RPC that would not fit is refused with the
/// tags left as they were — serf 0.8's messages, checked side by side.
#[test]
fn tags_that_do_not_fit_are_refused_as_by_serf() {
    let big = format!("big={}", "a".repeat(600));
    let o = refused_start(&["-tag".into(), big.clone()]);
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("Encoded length of tags exceeds limit of 512 bytes"),
        "{o:?}"
    );

    let ours = GossipAgent::start_in_temp("bt-ours", &["-tag".into(), "role=web".into()]);
    let r = format!("-rpc-addr={}", ours.rpc);
    let o = serf(&["tags", &r, "-set", &big]);
    let err = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("Error setting tags: Encoded length of tags exceeds limit of 512 bytes"),
        "{err}"
    );
    let members = serf_stdout(&["members", &r]);
    assert!(
        members.contains("role=web") && !members.contains("big="),
        "{members}"
    );
    // A change that fits still goes through.
    assert!(serf(&["tags", &r, "-set", "zone=z1"]).status.success());
    let members = serf_stdout(&["members", &r]);
    assert!(members.contains("zone=z1"), "{members}");
}
