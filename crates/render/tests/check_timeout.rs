//! A validation command that never finishes (a wedged `haproxy -c`) is
//! killed after the check timeout: `write_atomic` (the reconciler's and
//! `--out`'s writer) returns an error that names the command and says it
//! timed out, distinct from a validator's refusal; the old file stays, no
//! temp file is left behind, and the validator is killed and reaped.
//!
//! Only an outer deadline far above the check timeout is asserted, never
//! how long the timeout is.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use render::output::{write_atomic, CheckCommand, OutputError};
use wait_timeout::ChildExt;

/// Far above the check timeout: hitting it means "hangs".
const OUTER: Duration = Duration::from_secs(60);

/// A validator that records its pid in `pidfile`, then sleeps far past
/// [`OUTER`] (`exec`: the recorded pid is the process `render` started).
fn sleeper(pidfile: &Path) -> String {
    format!(
        "sh -c 'echo $$ > {}; exec sleep 600' {{}}",
        pidfile.display()
    )
}

fn kill_recorded(pidfile: &Path) {
    if let Some(pid) = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn a_check_that_never_finishes_times_out_and_keeps_the_old_file() {
    let out_dir = tempfile::tempdir().unwrap();
    let aux = tempfile::tempdir().unwrap();
    let target = out_dir.path().join("haproxy.cfg");
    std::fs::write(&target, "old").unwrap();
    let pidfile = aux.path().join("pid");
    let check = CheckCommand::parse(&sleeper(&pidfile)).unwrap();

    let (tx, rx) = std::sync::mpsc::channel();
    let t = target.clone();
    std::thread::spawn(move || {
        let _ = tx.send(write_atomic(&t, b"new", Some(&check)));
    });
    let res = match rx.recv_timeout(OUTER) {
        Ok(r) => r,
        Err(_) => {
            kill_recorded(&pidfile);
            panic!("write_atomic with a never-ending check: still running after {OUTER:?}");
        }
    };
    let err = res.expect_err("a check that never finishes must not pass");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        !err.is_rejection(),
        "a timeout is not the validator's verdict: {err:?}"
    );
    assert!(msg.contains("sleep 600"), "names the command: {msg}");
    assert!(msg.contains("timed out"), "says it timed out: {msg}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
    let left: Vec<_> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["haproxy.cfg"], "no temp file left");

    // The validator was killed and reaped: its pid is gone (a zombie would
    // still accept signal 0).
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    if alive {
        kill_recorded(&pidfile);
    }
    assert!(!alive, "the validator (pid {pid}) is still there");
}

#[test]
fn a_refusal_is_told_apart_from_a_timeout() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("haproxy.cfg");
    let err = write_atomic(&target, b"x", Some(&CheckCommand::parse("false").unwrap()))
        .expect_err("`false` refuses");
    assert!(
        matches!(err, OutputError::CheckFailed { .. }) && err.is_rejection(),
        "{err:?}"
    );
}

/// The one-shot CLI (`render --out ... --check ...`): exit status 1 and one
/// message naming the command, the old file untouched.
#[test]
fn oneshot_out_with_a_never_ending_check_fails_with_status_1() {
    let out_dir = tempfile::tempdir().unwrap();
    let aux = tempfile::tempdir().unwrap();
    let target = out_dir.path().join("out.cfg");
    std::fs::write(&target, "old").unwrap();
    let pidfile = aux.path().join("pid");
    let mut child = Command::new(env!("CARGO_BIN_EXE_render"))
        .arg("--name")
        .arg("x")
        .arg("--out")
        .arg(&target)
        .arg("--check")
        .arg(sleeper(&pidfile))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"new {{ name }}\n").unwrap();
    }
    let status = match child.wait_timeout(OUTER).unwrap() {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            kill_recorded(&pidfile);
            panic!("render --check with a never-ending check: still running after {OUTER:?}");
        }
    };
    let mut stderr = String::new();
    {
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
    }
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("sleep 600") && stderr.contains("timed out"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 1);
}
