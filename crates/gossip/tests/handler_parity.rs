//! The same handler script under a real `serf agent` 0.9.4 and under
//! `gossip agent`, in one cluster: both must see the same environment
//! variables and the same stdin for the same events.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::cli::GossipAgent;
use testkit::{eventually_blocking_explained, temp_dir, SerfAgent, DEADLINE, SERF};

/// One handler run: the SERF_* environment and what came on stdin.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    env: BTreeMap<String, String>,
    stdin: String,
}

/// Writes the handler as a script file: its text has `=` in it, which
/// `-event-handler` would take as the filter separator.
fn script(dir: &Path, out: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("{}.sh", out.file_name().unwrap().to_string_lossy()));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n{{ env | grep '^SERF_' | sort; echo ---; cat; echo ===; }} >> {}\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn runs(path: &Path) -> Vec<Run> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Only whole runs: the text after the last `===` is a run still being
    // written (its stdin may not be there yet).
    let mut chunks: Vec<&str> = text.split("===\n").collect();
    chunks.pop();
    chunks
        .into_iter()
        .filter(|c| c.contains("---\n"))
        .map(|chunk| {
            let (env, stdin) = chunk.split_once("---\n").unwrap();
            Run {
                env: env
                    .lines()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                stdin: stdin.to_string(),
            }
        })
        .collect()
}

fn wait_for(what: &str, path: &Path, pred: impl Fn(&[Run]) -> bool) -> Vec<Run> {
    eventually_blocking_explained(
        what,
        DEADLINE,
        || format!("runs so far: {:#?}", runs(path)),
        || Some(runs(path)).filter(|r| pred(r)),
    )
}

fn find<'a>(runs: &'a [Run], event: &str, stdin_has: &str) -> Option<&'a Run> {
    runs.iter().find(|r| {
        r.env.get("SERF_EVENT").map(String::as_str) == Some(event) && r.stdin.contains(stdin_has)
    })
}

/// Waits for `whose` handler (writing to `path`) to have run for `event`
/// with `stdin_has` on its stdin; that run.
fn wait_run(whose: &str, path: &Path, event: &str, stdin_has: &str) -> Run {
    let what = format!("{whose} {event} run with {stdin_has:?}");
    let runs = wait_for(&what, path, |r| find(r, event, stdin_has).is_some());
    find(&runs, event, stdin_has).unwrap().clone()
}

#[test]
fn serf_and_gossip_handlers_see_the_same_interface() {
    let dir = temp_dir("handler-parity");
    let dir = dir.path();
    let serf_out: PathBuf = dir.join("serf.runs");
    let ours_out: PathBuf = dir.join("ours.runs");
    let s = SerfAgent::builder("s-node")
        .tag("role", "lb")
        .event_handler(&script(dir, &serf_out))
        .start_blocking();
    let g = GossipAgent::start(
        "g-node",
        dir,
        &[
            "-tag".into(),
            "role=web".into(),
            format!("-join={}", s.bind),
            format!("-event-handler={}", script(dir, &ours_out)),
        ],
    );

    // member-join: each side reports the other with the same line format.
    let tj = wait_run("serf's", &serf_out, "member-join", "g-node\t");
    let oj = wait_run("our", &ours_out, "member-join", "s-node\t");
    assert!(
        tj.stdin
            .contains(&format!("g-node\t{}\tweb\trole=web\n", g.bind.ip())),
        "{tj:?}"
    );
    assert!(
        oj.stdin
            .contains(&format!("s-node\t{}\tlb\trole=lb\n", s.bind.ip())),
        "{oj:?}"
    );
    let keys = |r: &Run| r.env.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&tj), keys(&oj));
    assert_eq!(oj.env["SERF_SELF_NAME"], "g-node");
    assert_eq!(oj.env["SERF_SELF_ROLE"], "web");
    assert_eq!(oj.env["SERF_TAG_ROLE"], "web");

    // A user event from serf's CLI: same variables, same LTime, same stdin.
    let o = Command::new(SERF)
        .args([
            "event",
            &format!("-rpc-addr={}", s.rpc),
            "deploy",
            "v1 payload",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let tu = wait_run("serf's", &serf_out, "user", "");
    let ou = wait_run("our", &ours_out, "user", "");
    assert_eq!(keys(&tu), keys(&ou));
    assert_eq!(tu.stdin, ou.stdin);
    assert_eq!(ou.stdin, "v1 payload\n");
    assert_eq!(tu.env["SERF_USER_EVENT"], ou.env["SERF_USER_EVENT"]);
    assert_eq!(tu.env["SERF_USER_LTIME"], ou.env["SERF_USER_LTIME"]);
}
